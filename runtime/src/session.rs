//! Where the daemons started on this host keep their files (the session directory: the
//! head's address, the join token, the daemons' records), and reading the head's address and
//! token from there or from what the caller gives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use prism_transport::tls::JoinToken;

/// The session directory of the daemons started on this host: `$PRISM_SESSION_DIR`, else
/// `session_latest` under a root private to this user (`$XDG_RUNTIME_DIR/prism`, or
/// `/tmp/prism-UID` where there is no runtime directory).
pub(crate) fn session_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PRISM_SESSION_DIR") {
        return PathBuf::from(dir);
    }
    session_root().join("session_latest")
}

pub(crate) fn session_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_dir() => runtime.join("prism"),
        _ => std::env::temp_dir().join(format!("prism-{}", crate::files::euid())),
    }
}

fn read_session(file: &str) -> Option<String> {
    std::fs::read_to_string(session_dir().join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether a head's address is given (`address`, from a flag or the environment) or known
/// from the session directory.
pub(crate) fn head_known(address: Option<&str>) -> bool {
    address.is_some() || read_session("address").is_some()
}

/// The head's address and the token, from the flags, the environment or the session directory.
pub(crate) fn head_and_token(
    address: Option<&str>,
    token: Option<&str>,
) -> Result<(SocketAddr, JoinToken), String> {
    let address = address
        .map(str::to_string)
        .or_else(|| read_session("address"))
        .ok_or("no head address: give --address or PRISM_ADDRESS, or start a head here")?;
    let addr = resolve(&address)?;
    let token = token
        .map(str::to_string)
        .or_else(|| read_session("token"))
        .ok_or("no join token: give --token-file, PRISM_TOKEN or --token")?;
    let token: JoinToken = token
        .parse()
        .map_err(|e: prism_transport::tls::TlsError| e.to_string())?;
    Ok((addr, token))
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// The token from `--token`, `PRISM_TOKEN` or `--token-file`, if any was given.
pub(crate) fn given_token(
    token: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, String> {
    match (token, file) {
        (Some(token), _) => Ok(Some(token.to_string())),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("cannot read the token file {}: {e}", file.display())),
        (None, None) => Ok(None),
    }
}

/// Makes the session directory (or checks the one there): it and the default root are 0700,
/// owned by this user and not symlinks; anything else is refused, naming why.
pub(crate) fn open_session() -> Result<PathBuf, String> {
    let dir = session_dir();
    let made = if std::env::var_os("PRISM_SESSION_DIR").is_some() {
        crate::files::private_dir_all(&dir)
    } else {
        crate::files::private_dir(&session_root()).and_then(|()| crate::files::private_dir(&dir))
    };
    made.map_err(|e| format!("cannot use the session directory: {e}"))?;
    Ok(dir)
}

/// Writes `text` to `path` readable by this user alone (a fresh file, renamed into place).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), String> {
    crate::files::replace_private(path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Removes daemon `pid`'s record (what `start` printed and its start time) from `daemons`.
pub(crate) fn forget_daemon(daemons: &Path, pid: u32) {
    let _ = std::fs::remove_file(daemons.join(pid.to_string()));
    let _ = std::fs::remove_file(daemons.join(format!("{pid}.id")));
}

/// Records this daemon as started on this host, with what `start` prints (0600: it holds the
/// join token) and what proves the process is this daemon (see [`stop`]).
pub(crate) fn announce(text: &str) -> Result<(), String> {
    let dir = session_dir().join("daemons");
    crate::files::private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let me = std::process::id();
    let started = crate::process::start_time(me)
        .map_err(|e| format!("cannot read this daemon's start time: {e}"))?;
    write_private(&dir.join(format!("{me}.id")), &started.to_string())?;
    write_private(&dir.join(me.to_string()), text)
}

pub(crate) fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
