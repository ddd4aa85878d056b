//! A running driver answers the `prism` command of this host (`prism list tasks`, `prism
//! summary tasks`, `prism timeline`): it listens on a Unix socket in the session directory
//! (`drivers/PID.sock`, in the 0700 directory, 0600 itself), takes one request line per
//! connection from a process of this same user (checked by the socket's peer credentials), and
//! answers with one line of JSON: `{"ok": ...}` or `{"error": "..."}`.

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::session::{open_session, session_dir};

/// The longest request line read.
const MAX_REQUEST: u64 = 4096;

/// Where the drivers of this session listen.
pub(crate) fn drivers_dir() -> PathBuf {
    session_dir().join("drivers")
}

/// Where the driver `pid` listens.
fn socket_path(pid: u32) -> PathBuf {
    drivers_dir().join(format!("{pid}.sock"))
}

/// Listens until the process ends (a driver that cannot says why in its log and goes on).
pub(crate) async fn serve() {
    let path = socket_path(std::process::id());
    let listener = match listen(&path) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(
                "the driver does not answer prism list tasks/timeline: cannot listen on {}: {e}",
                path.display()
            );
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream));
            }
            Err(e) => {
                tracing::warn!("the driver's state socket fails: {e}");
                return;
            }
        }
    }
}

fn listen(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    open_session().map_err(std::io::Error::other)?;
    let dir = drivers_dir();
    crate::files::private_dir(&dir)?;
    sweep(&dir);
    // A socket left by an earlier process with this pid.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the sockets of drivers whose process is gone (killed, or ended without
/// `shutdown`).
fn sweep(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_suffix(".sock"));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
            && crate::files::process_gone(pid)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Stops answering: removes this driver's socket (at shutdown).
pub(crate) fn stop() {
    let _ = std::fs::remove_file(socket_path(std::process::id()));
}

async fn answer(stream: UnixStream) {
    let me = crate::files::euid();
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == me => {}
        Ok(peer) => {
            tracing::warn!(
                uid = peer.uid(),
                "refused a state request from another user"
            );
            return;
        }
        Err(e) => {
            tracing::warn!("refused a state request whose sender is unknown: {e}");
            return;
        }
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let reply = match request(line.trim()) {
        Ok(value) => json!({ "ok": value }),
        Err(error) => json!({ "error": error }),
    };
    let mut text = reply.to_string();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// The answer to one request.
fn request(line: &str) -> Result<Value, String> {
    fn value<T: serde::Serialize>(answer: crate::Result<T>) -> Result<Value, String> {
        serde_json::to_value(answer.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }
    match line {
        "tasks" => value(super::state::list_tasks()),
        "summary tasks" => value(super::state::summarize_tasks()),
        "timeline" => value(super::state::timeline_json()),
        "objects" => value(super::state::list_objects()),
        "actors" => value(super::state::list_actors()),
        "summary objects" => value(super::state::summarize_objects()),
        other => match other.strip_prefix("task ") {
            Some(id) => {
                let task = id.trim().parse().map_err(|e| format!("{e}"))?;
                value(super::state::get_task(task))
            }
            None => Err(format!(
                "unknown request {other:?} (this driver answers: tasks, task ID, summary tasks, timeline, objects, summary objects, actors)"
            )),
        },
    }
}
