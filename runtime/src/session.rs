//! Where the daemons started on this host keep their files (the session directory: the
//! head's address, the join token, the daemons' records), and reading the head's address and
//! token from there or from what the caller gives.

use std::net::SocketAddr;
use std::path::PathBuf;

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
