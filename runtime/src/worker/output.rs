//! A worker whose starter reads its output (`PRISM_LABEL_OUTPUT`, see `node::output`) labels
//! each line it writes as Ray does: `(module::function pid=1234 node=n2) the line`, with the
//! function, constructor or method it runs or last ran ([`crate::registry::running`]). Its
//! standard output and error become pipes of its own, each read by a thread that writes the
//! labelled lines to the starter's pipe; the task path pays one relaxed store per task.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::ENV_NODE_NAME;

/// Set (to `1`) by the starter for a worker whose output it reads.
const ENV_LABEL_OUTPUT: &str = "PRISM_LABEL_OUTPUT";

/// How long a worker that exits waits for its last lines to be passed on.
const LAST_LINES: Duration = Duration::from_millis(200);

/// The threads that label this worker's output; [`Labelled::finish`] passes on the last lines.
#[derive(Debug)]
pub(crate) struct Labelled {
    done: Vec<mpsc::Receiver<()>>,
}

/// Labels this process's output and errors, if its starter asked (call it before any other
/// thread starts); `None` when it did not, or the pipes cannot be made (output is then left
/// as it is).
pub(crate) fn start() -> Option<Labelled> {
    if std::env::var(ENV_LABEL_OUTPUT).ok()? != "1" {
        return None;
    }
    let mut tail = format!("pid={}", std::process::id());
    if let Ok(node) = std::env::var(ENV_NODE_NAME) {
        tail.push_str(&format!(" node={node}"));
    }
    let mut done = Vec::new();
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        match relabel(fd, tail.clone()) {
            Ok(finished) => done.push(finished),
            Err(e) => tracing::warn!("cannot label the worker's output (fd {fd}): {e}"),
        }
    }
    Some(Labelled { done })
}

/// Makes `fd` a pipe whose lines a thread writes, labelled, to what `fd` was.
fn relabel(fd: i32, tail: String) -> std::io::Result<mpsc::Receiver<()>> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor this process holds makes a new one.
    let starter = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if starter < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `starter` was just made and is owned by nothing else.
    let starter = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(starter) });
    let mut ends = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both ends were just made and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // SAFETY: dup2 makes `fd` refer to the pipe's write end (without close-on-exec: a
    // program the task starts writes there too); `write` itself is closed when dropped.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&write), fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(write);
    let (finished, done) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("prism-output-{fd}"))
        .stack_size(64 << 10)
        .spawn(move || {
            pass_on(std::fs::File::from(read), starter, &tail);
            let _ = finished.send(());
        })?;
    Ok(done)
}

/// Copies `from` to `to` line by line, each after its label, until `from` ends.
fn pass_on(mut from: std::fs::File, mut to: std::fs::File, tail: &str) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        let ended = n == 0;
        pending.extend_from_slice(&buf[..n]);
        let whole = match pending.iter().rposition(|&b| b == b'\n') {
            Some(last) => last + 1,
            // A line longer than the buffer goes in pieces; a last line without its newline
            // goes when the pipe ends.
            None if ended || pending.len() >= buf.len() => pending.len(),
            None => 0,
        };
        if whole > 0 {
            let label = match crate::registry::running() {
                Some(name) => format!("({name} {tail}) "),
                None => format!("({tail}) "),
            };
            let mut out = Vec::with_capacity(whole + 64);
            for line in pending[..whole].split_inclusive(|&b| b == b'\n') {
                out.extend_from_slice(label.as_bytes());
                out.extend_from_slice(line);
                if line.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
            pending.drain(..whole);
            // The starter gone: the lines are lost, and reading goes on so that the worker's
            // prints do not fail.
            let _ = to.write_all(&out);
        }
        if ended {
            return;
        }
    }
}

impl Labelled {
    /// Passes on what is left before the process exits: ends the pipes (standard output and
    /// error go to /dev/null from now on) and waits a moment for the threads.
    pub(crate) fn finish(self) {
        let _ = std::io::stdout().flush();
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
        if let Ok(null) = &null {
            let null = std::os::fd::AsRawFd::as_raw_fd(null);
            for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                // SAFETY: dup2 onto a standard descriptor this process holds; the pipe's write
                // end it referred to closes, so its reader sees the end.
                unsafe { libc::dup2(null, fd) };
            }
        }
        for done in self.done {
            let _ = done.recv_timeout(LAST_LINES);
        }
    }
}
