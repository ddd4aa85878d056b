//! The worker pool's IO shell: the node's Unix socket (an abstract name, so nothing is left on
//! disk), a spawner thread that starts worker processes from the program's own executable, a
//! waiter thread per process that reports its exit, and per connection the handshake and the
//! reader task (the connection's sides are in [`super::link`]). A worker counts as dead once
//! both its connection closed and its exit was seen, so every frame it sent before dying is
//! processed first.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener as StdUnixListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;

use prism_transport::{ArchivedToNode, AsyncFrameReader, HandshakeError, ToNode};
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::Core;
use super::link::{self, LinkReader, LinkWriter, write_loop};
use super::scheduler::WorkerId;
use crate::{Error, Result};

/// Environment variables that turn a started process into a worker.
pub(crate) const ENV_ROLE: &str = "PRISM_ROLE";
pub(crate) const ENV_SOCKET: &str = "PRISM_NODE_SOCKET";
pub(crate) const ENV_WORKER: &str = "PRISM_WORKER_ID";
pub(crate) const ENV_SESSION_DIR: &str = "PRISM_SESSION_DIR";
pub(crate) const ENV_INLINE_THRESHOLD: &str = "PRISM_INLINE_THRESHOLD";
/// The name of the node a worker runs on (a cluster's node; unset on the embedded node).
pub(crate) const ENV_NODE_NAME: &str = "PRISM_NODE_NAME";
/// The job's content fingerprint, for workers a cluster's node starts (hex).
pub(crate) const ENV_JOB_FINGERPRINT: &str = "PRISM_JOB_FINGERPRINT";

pub(crate) fn bind() -> Result<(StdUnixListener, String)> {
    let name = format!(
        "prism-node-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| Error::Startup(format!("socket name {name}: {e}")))?;
    let listener = StdUnixListener::bind_addr(&addr)
        .map_err(|e| Error::Startup(format!("bind socket @{name}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Startup(format!("socket @{name}: {e}")))?;
    Ok((listener, name))
}

pub(crate) fn start(
    core: &Arc<Core>,
    listener: StdUnixListener,
    socket_name: String,
    spawn_rx: std::sync::mpsc::Receiver<WorkerId>,
) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Startup(format!("cannot find the program's executable: {e}")))?;
    let spawner_core = Arc::downgrade(core);
    std::thread::Builder::new()
        .name("prism-spawner".into())
        .spawn(move || {
            // This thread lives as long as the node, so PDEATHSIG (tied to the thread that
            // forked) fires exactly when the node goes away.
            for worker in spawn_rx {
                let Some(core) = spawner_core.upgrade() else {
                    break;
                };
                spawn_worker(&core, worker, &exe, &socket_name);
            }
        })
        .map_err(|e| Error::Startup(format!("spawner thread: {e}")))?;
    let _guard = core.handle().enter();
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| Error::Startup(format!("socket: {e}")))?;
    let accept_core = core.clone();
    core.handle().spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(accept_core.clone(), stream));
                }
                Err(e) => {
                    tracing::error!("accept on the node socket failed: {e}");
                    break;
                }
            }
        }
    });
    Ok(())
}

fn spawn_worker(core: &Arc<Core>, worker: WorkerId, exe: &std::path::Path, socket: &str) {
    let mut cmd = Command::new(exe);
    cmd.env(ENV_ROLE, "worker")
        .env(ENV_SOCKET, socket)
        .env(ENV_WORKER, worker.to_string())
        .env(ENV_SESSION_DIR, core.store_dir())
        .env(
            ENV_INLINE_THRESHOLD,
            core.config().inline_threshold_bytes().to_string(),
        )
        .stdin(Stdio::null());
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, kill).
    unsafe {
        let parent = std::process::id() as libc::pid_t;
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(mut child) => {
            core.worker_spawned(worker, child.id());
            tracing::debug!(worker, pid = child.id(), "worker started");
            let waiter_core = Arc::downgrade(core);
            let spawned = std::thread::Builder::new()
                .name(format!("prism-wait-{worker}"))
                .spawn(move || {
                    let reason = match child.wait() {
                        Ok(status) => describe_exit(status),
                        Err(e) => format!("cannot wait for the process: {e}"),
                    };
                    if let Some(core) = waiter_core.upgrade() {
                        core.worker_exited(worker, reason);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(worker, "cannot start a waiter thread: {e}");
            }
        }
        Err(e) => core.worker_exited(worker, format!("cannot start {}: {e}", exe.display())),
    }
}

/// A human account of how a process ended.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGKILL => "SIGKILL",
                libc::SIGABRT => "SIGABRT (abort)",
                libc::SIGSEGV => "SIGSEGV (segmentation fault)",
                libc::SIGTERM => "SIGTERM",
                libc::SIGBUS => "SIGBUS",
                _ => "",
            };
            format!("killed by signal {sig} {name}")
                .trim_end()
                .to_string()
        }
        None => format!("ended with {status}"),
    }
}

/// Sends SIGKILL to a worker process.
pub(crate) fn kill(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Serves one worker connection: the handshake, then reading until it ends. After the
/// handshake the connection leaves tokio's own polling: it is read through a registration for
/// readability only (a connection polled for writability too would wake the node's thread each
/// time the worker drains what it was sent), and written directly (see [`LinkWriter`]).
pub(crate) async fn serve(core: Arc<Core>, stream: UnixStream) {
    let max_frame = core.config().max_frame();
    let mut reader = AsyncFrameReader::new(stream, max_frame);
    let worker = match handshake(&mut reader).await {
        Ok(worker) => worker,
        Err(reason) => {
            tracing::error!("refused a worker connection: {reason}");
            return;
        }
    };
    let (stream, decoder) = reader.into_parts();
    let handles = stream.into_std().and_then(|read| {
        read.set_nonblocking(true)?;
        let direct = read.try_clone()?;
        let polled = read.try_clone()?;
        let read = link::register(read, Interest::READABLE)?;
        Ok((read, direct, polled))
    });
    let (read, direct, polled) = match handles {
        Ok(handles) => handles,
        Err(e) => {
            tracing::error!(worker, "cannot set up a worker connection: {e}");
            return;
        }
    };
    let writer = Arc::new(LinkWriter::new(direct));
    if !core.worker_connected(worker, writer.clone()) {
        return;
    }
    tokio::spawn(write_loop(writer));
    let reader = Arc::new(LinkReader::new(worker, polled, decoder));
    core.links().add(reader.clone());
    reader.run(&core, read).await;
    core.links().remove(worker);
    core.worker_eof(worker);
}

async fn handshake(
    reader: &mut AsyncFrameReader<UnixStream>,
) -> std::result::Result<WorkerId, String> {
    let frame = reader
        .read_frame()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before its hello")?;
    let msg = frame.access::<ToNode>().map_err(|e| e.to_string())?;
    let ArchivedToNode::Hello(hello) = msg else {
        return Err(HandshakeError::NotHello.to_string());
    };
    hello
        .check(crate::worker::fingerprint())
        .map_err(|e| format!("worker {}: {e}", hello.worker))?;
    Ok(hello.worker.to_native())
}
