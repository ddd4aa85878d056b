//! The worker pool's IO shell: a spawner thread that starts worker processes from the
//! program's own executable, each with a private link it inherits (see [`crate::process`]:
//! there is no socket anyone else could connect to), a waiter thread per process that reports
//! its exit, and per link the handshake and the reader task (the link's sides are in
//! [`super::link`]). A worker counts as dead once both its link closed and its exit was seen,
//! so every frame it sent before dying is processed first.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use prism_transport::{ArchivedToNode, AsyncFrameReader, HandshakeError, ToNode};
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::Core;
use super::link::{self, LinkReader, LinkWriter, write_loop};
use crate::process;
use crate::proto::scheduler::WorkerId;
use crate::{Error, Result};

/// The largest hello a worker may send (it is a few dozen bytes).
pub(crate) const MAX_HELLO: usize = 4 << 10;

/// How long a started worker has to say hello before its link is dropped.
pub(crate) const HELLO_DEADLINE: Duration = Duration::from_secs(60);

pub(crate) fn start(core: &Arc<Core>, spawn_rx: std::sync::mpsc::Receiver<WorkerId>) -> Result<()> {
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
                spawn_worker(&core, worker, &exe);
            }
        })
        .map_err(|e| Error::Startup(format!("spawner thread: {e}")))?;
    Ok(())
}

fn spawn_worker(core: &Arc<Core>, worker: WorkerId, exe: &std::path::Path) {
    let limits = process::StoreLimits {
        inline_threshold: core.config().inline_threshold_bytes() as u64,
        capacity: core.config().object_store_bytes(),
    };
    let mut cmd = process::worker_command(exe, worker, core.store_dir(), limits);
    super::output::capture(&mut cmd);
    let linked = match process::spawn_linked(&mut cmd, Some(std::process::id())) {
        Ok(linked) => linked,
        Err(e) => {
            return core.worker_exited(worker, format!("cannot start {}: {e}", exe.display()));
        }
    };
    let process::Linked {
        mut child,
        handle,
        link,
    } = linked;
    let pid = handle.pid();
    core.worker_spawned(worker, pid, Some(Arc::new(handle)));
    tracing::debug!(worker, pid, "worker started");
    show_output(core, &mut child);
    let served = link.set_nonblocking(true).and_then(|()| {
        let _guard = core.handle().enter();
        UnixStream::from_std(link)
    });
    match served {
        Ok(stream) => {
            core.handle().spawn(serve(core.clone(), stream, worker));
        }
        Err(e) => tracing::error!(worker, "cannot serve a worker's link: {e}"),
    }
    let waiter_core = Arc::downgrade(core);
    let store_dir = core.store_dir().to_path_buf();
    let spawned = std::thread::Builder::new()
        .name(format!("prism-wait-{worker}"))
        .spawn(move || {
            let reason = match child.wait() {
                Ok(status) => describe_exit(status),
                Err(e) => format!("cannot wait for the process: {e}"),
            };
            crate::store::discard_fillings_of(&store_dir, pid);
            if let Some(core) = waiter_core.upgrade() {
                core.worker_exited(worker, reason);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(worker, "cannot start a waiter thread: {e}");
    }
}

/// Prints what a worker writes to its piped output and errors at this driver (see
/// [`super::output`]), until its pipes end.
fn show_output(core: &Arc<Core>, child: &mut std::process::Child) {
    let _guard = core.handle().enter();
    let weak = Arc::downgrade(core);
    let pipes = super::output::pipes(child);
    if pipes.is_empty() {
        return;
    }
    let mut logs = super::output::open_logs("local", child.id());
    for (stderr, pipe) in pipes {
        let reading = core.output_open().count();
        let log = logs[usize::from(stderr)].take();
        tokio::spawn(print_output(weak.clone(), stderr, pipe, log, reading));
    }
}

async fn print_output(
    core: std::sync::Weak<Core>,
    stderr: bool,
    pipe: impl tokio::io::AsyncRead + Unpin,
    mut log: Option<std::fs::File>,
    _reading: super::output::Reading,
) {
    let mut reader = tokio::io::BufReader::new(pipe);
    while let Some(text) = super::output::next_batch(&mut reader).await {
        super::output::keep(&mut log, &text);
        // Read to the end even when the driver stops: a closed pipe would fail the worker's
        // next print.
        if let Some(core) = core.upgrade() {
            core.worker_output(stderr, &text);
        }
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

/// Serves the link of worker `worker`: the handshake, then reading until it ends. The hello
/// must come within [`HELLO_DEADLINE`], fit in [`MAX_HELLO`] bytes and name `worker`. After the
/// handshake the connection leaves tokio's own polling: it is read through a registration for
/// readability only (a connection polled for writability too would wake the node's thread each
/// time the worker drains what it was sent), and written directly (see [`LinkWriter`]).
pub(crate) async fn serve(core: Arc<Core>, stream: UnixStream, worker: WorkerId) {
    let mut reader = AsyncFrameReader::new(stream, MAX_HELLO);
    let said = tokio::time::timeout(HELLO_DEADLINE, handshake(&mut reader, worker)).await;
    let (refused, endpoint) = match said {
        Ok(Ok(endpoint)) => (None, endpoint),
        Ok(Err(reason)) => (Some(reason), None),
        Err(_) => (Some(format!("no hello within {HELLO_DEADLINE:?}")), None),
    };
    if let Some(reason) = refused {
        if core.stopping() {
            // Killed as the node stops, before it could say hello.
            tracing::debug!(worker, "a worker's link ended as the node stops: {reason}");
        } else {
            tracing::error!(worker, "refused a worker's link: {reason}");
        }
        return;
    }
    let (stream, mut decoder) = reader.into_parts();
    decoder.set_max_frame(core.config().max_frame());
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
    if !core.worker_connected((worker, endpoint), writer.clone()) {
        return;
    }
    tokio::spawn(write_loop(writer));
    let reader = Arc::new(LinkReader::new(worker, polled, decoder));
    core.links().add(reader.clone());
    reader.run(&core, read).await;
    core.links().remove(worker);
    core.worker_eof(worker);
}

/// Reads and checks worker `worker`'s hello: the direct endpoint it names, if any.
async fn handshake(
    reader: &mut AsyncFrameReader<UnixStream>,
    worker: WorkerId,
) -> std::result::Result<Option<String>, String> {
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
        .check(crate::process::fingerprint())
        .map_err(|e| format!("worker {}: {e}", hello.worker))?;
    if hello.worker != worker {
        return Err(format!(
            "the hello names worker {}, the link was made for worker {worker}",
            hello.worker
        ));
    }
    Ok(hello.direct.as_ref().map(|d| d.to_string()))
}
