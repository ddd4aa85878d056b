//! The two sides of the node's connection to one worker.
//!
//! Writing: frames go out straight from the thread that produced them with a non-blocking
//! send; only what the socket does not take at once goes to a writer task.
//!
//! Reading: the connection's reader task reads what arrives and hands whole frames to the node.
//! A driver thread blocked in `get` may do the same while it spins (see [`LinkPoll`]): on a
//! virtual machine, waking the reader task's sleeping thread costs more than a short task, so a
//! result the spinning caller reads itself comes back tens of microseconds sooner. Reads are
//! serialized by a lock that is held until the frames are handled, so frames are handled in the
//! order they were sent whoever reads them.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prism_graph::IdMap;
use prism_transport::{Frame, FrameDecoder};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Core;
use crate::proto::scheduler::WorkerId;

/// The node's sending side of one worker connection. Everything after a frame the socket did
/// not take at once queues behind it, so order is kept and a slow worker never blocks the node.
#[derive(Debug)]
pub(crate) struct LinkWriter {
    direct: StdUnixStream,
    backlog: Mutex<Backlog>,
    wake: tokio::sync::Notify,
}

#[derive(Debug)]
struct Backlog {
    bytes: Vec<u8>,
    /// The writer task owns the stream's tail: direct writes must queue.
    busy: bool,
    closed: bool,
    /// When the last direct write happened: sends closer together than [`BURST_GAP`] are a
    /// burst, better batched by the writer task into few system calls...
    last_direct: std::time::Instant,
    /// ...unless a caller began to wait in between (the value of [`WAITS`] at that write): a
    /// send that follows a wait is the next step of a round trip, and batching it would add a
    /// thread's wake-up to every round trip that is quicker than the gap.
    waits: u64,
}

/// Sends this close together go through the writer task, which batches them.
pub(crate) const BURST_GAP: std::time::Duration = std::time::Duration::from_micros(20);

/// How many times a thread of this process began waiting for an answer (see
/// [`caller_waits`]).
static WAITS: AtomicU64 = AtomicU64::new(0);

/// Notes that a thread of this process is about to wait for the answer to what it sent: the
/// next send to a worker is not part of a burst.
pub(crate) fn caller_waits() {
    WAITS.fetch_add(1, Ordering::Relaxed);
}

/// How many times a thread of this process began waiting (see [`caller_waits`]).
pub(crate) fn waits() -> u64 {
    WAITS.load(Ordering::Relaxed)
}

impl LinkWriter {
    /// A writer sending through `direct` (a non-blocking handle of the connection) and, for
    /// what does not fit, through the task [`write_loop`] runs.
    pub(crate) fn new(direct: StdUnixStream) -> Self {
        LinkWriter {
            direct,
            backlog: Mutex::new(Backlog {
                bytes: Vec::new(),
                busy: false,
                closed: false,
                last_direct: std::time::Instant::now(),
                waits: WAITS.load(Ordering::Relaxed),
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Sends bytes, in order with everything sent before.
    pub(crate) fn send(&self, bytes: &[u8]) {
        let mut backlog = self.backlog.lock();
        if backlog.closed {
            return;
        }
        if backlog.busy {
            backlog.bytes.extend_from_slice(bytes);
            return;
        }
        let now = std::time::Instant::now();
        let waits = WAITS.load(Ordering::Relaxed);
        if waits == backlog.waits && now.duration_since(backlog.last_direct) < BURST_GAP {
            backlog.bytes.extend_from_slice(bytes);
            backlog.busy = true;
            self.wake.notify_one();
            return;
        }
        backlog.last_direct = now;
        backlog.waits = waits;
        let written = match (&self.direct).write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                tracing::debug!("write to worker failed: {e}");
                backlog.closed = true;
                return;
            }
        };
        if written < bytes.len() {
            backlog.bytes.extend_from_slice(&bytes[written..]);
            backlog.busy = true;
            self.wake.notify_one();
        }
    }

    /// Stops the writer task; later sends are dropped.
    pub(crate) fn close(&self) {
        self.backlog.lock().closed = true;
        self.wake.notify_one();
    }
}

/// The writer task: sends what [`LinkWriter::send`] left, waiting for room when the socket is
/// full.
pub(crate) async fn write_loop(writer: Arc<LinkWriter>) {
    loop {
        writer.wake.notified().await;
        loop {
            let chunk = {
                let mut backlog = writer.backlog.lock();
                if backlog.closed {
                    return;
                }
                if backlog.bytes.is_empty() {
                    backlog.busy = false;
                    break;
                }
                std::mem::take(&mut backlog.bytes)
            };
            if let Err(e) = write_all(&writer.direct, &chunk).await {
                tracing::debug!("write to worker failed: {e}");
                writer.backlog.lock().closed = true;
                return;
            }
        }
    }
}

/// Writes all of `bytes` to a non-blocking socket. The socket is registered for writability
/// only while it is full, so a worker draining its input wakes nobody otherwise.
async fn write_all(stream: &StdUnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    let mut room: Option<AsyncFd<StdUnixStream>> = None;
    while !bytes.is_empty() {
        match (&*stream).write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = match room.take() {
                    Some(fd) => fd,
                    None => register(stream.try_clone()?, Interest::WRITABLE)?,
                };
                fd.writable().await?.clear_ready();
                room = Some(fd);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Registers a socket with tokio's reactor for `interest` only.
pub(crate) fn register(
    stream: StdUnixStream,
    interest: Interest,
) -> std::io::Result<AsyncFd<StdUnixStream>> {
    // SAFETY: the stream owns its descriptor, which stays open and unchanged until the
    // stream is dropped with the `AsyncFd`.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest)? })
}

/// The node's receiving side of one worker connection.
#[derive(Debug)]
pub(crate) struct LinkReader {
    worker: WorkerId,
    /// A non-blocking handle of the connection for readers outside the reader task.
    direct: StdUnixStream,
    inbound: Mutex<Inbound>,
}

#[derive(Debug)]
struct Inbound {
    decoder: FrameDecoder,
    /// Why the connection is done (end of stream or a bad frame); the reader task stops.
    ended: Option<String>,
}

/// What one turn of reading did.
struct Pumped {
    /// Frames were handed to the node.
    handled: bool,
    /// The socket had nothing more when the turn ended.
    drained: bool,
}

/// What ended a connection while reading it.
enum End {
    /// The worker closed it.
    Closed,
    /// Reading failed (the worker's death is reported with its exit status by its waiter).
    Io(std::io::Error),
    /// A frame was malformed; the connection is out of sync.
    Bad(String),
}

impl LinkReader {
    /// A reader of `worker`'s connection, continuing from what `decoder` already holds.
    pub(crate) fn new(worker: WorkerId, direct: StdUnixStream, decoder: FrameDecoder) -> Self {
        LinkReader {
            worker,
            direct,
            inbound: Mutex::new(Inbound {
                decoder,
                ended: None,
            }),
        }
    }

    /// The reader task: reads whenever the connection is readable, until it ends. Frames the
    /// worker sent before closing are handled before this returns.
    pub(crate) async fn run(&self, core: &Core, read: AsyncFd<StdUnixStream>) {
        let fd = read.as_raw_fd();
        loop {
            let mut ready = match read.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::debug!(worker = self.worker, "connection to worker lost: {e}");
                    return;
                }
            };
            let mut inbound = self.inbound.lock();
            if inbound.ended.is_some() {
                return;
            }
            match self.pump(core, &mut inbound, |buf| crate::process::recv_now(fd, buf)) {
                // Cleared only if no readiness event came after `ready` was taken (tokio keeps
                // count), so a frame arriving after the last read is not missed.
                Ok(pumped) if pumped.drained => ready.clear_ready(),
                Ok(_) => {}
                Err(end) => {
                    self.end(&mut inbound, end);
                    return;
                }
            }
        }
    }

    /// Reads what has arrived, if no other thread is reading, without blocking. True when
    /// frames were handled.
    fn poll(&self, core: &Core) -> bool {
        let Some(mut inbound) = self.inbound.try_lock() else {
            return false;
        };
        if inbound.ended.is_some() {
            return false;
        }
        let fd = self.direct.as_raw_fd();
        match self.pump(core, &mut inbound, |buf| crate::process::recv_now(fd, buf)) {
            Ok(pumped) => pumped.handled,
            Err(end) => {
                self.end(&mut inbound, end);
                // Wake the reader task so that it sees the end and reports it.
                let _ = self.direct.shutdown(std::net::Shutdown::Both);
                false
            }
        }
    }

    /// Reads until the socket has nothing more (or [`MAX_READS`] times), then hands the whole
    /// frames to the node (still holding `inbound`, so no later frame can overtake them).
    ///
    /// A read that returns less than it asked for emptied the socket: a stream socket hands
    /// over everything queued up to the length asked, so no further read is spent to learn it.
    fn pump(
        &self,
        core: &Core,
        inbound: &mut Inbound,
        mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    ) -> Result<Pumped, End> {
        let mut closed = false;
        let mut drained = false;
        for _ in 0..MAX_READS {
            let mut short = false;
            let filled = inbound.decoder.fill_with(|buf| {
                let want = buf.len();
                let got = read(buf)?;
                short = got < want;
                Ok(got)
            });
            match filled {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) if short => {
                    drained = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
        let mut frames: Vec<Frame> = Vec::new();
        let mut bad = None;
        loop {
            match inbound.decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    bad = Some(format!("bad frame: {e}"));
                    break;
                }
            }
        }
        let handled = !frames.is_empty();
        if handled && let Err(reason) = core.frames(self.worker, frames) {
            return Err(End::Bad(format!("malformed message: {reason}")));
        }
        if let Some(reason) = bad {
            return Err(End::Bad(reason));
        }
        if closed {
            if let Err(e) = inbound.decoder.finish() {
                return Err(End::Bad(format!("{e}")));
            }
            return Err(End::Closed);
        }
        Ok(Pumped { handled, drained })
    }

    fn end(&self, inbound: &mut Inbound, end: End) {
        let reason = match end {
            End::Closed => "closed".to_string(),
            End::Io(e) => {
                tracing::debug!(worker = self.worker, "connection to worker lost: {e}");
                e.to_string()
            }
            End::Bad(reason) => {
                tracing::error!(
                    worker = self.worker,
                    "{reason}; closing the worker's connection"
                );
                reason
            }
        };
        inbound.ended = Some(reason);
    }
}

/// Reads per turn of a reader: a worker that keeps sending is read in turns, each handled
/// before the next.
const MAX_READS: usize = 16;

/// The node's worker connections, for a thread that polls them while it waits: one epoll set
/// (level-triggered, separate from tokio's) tells which have something to read in one call.
#[derive(Debug)]
pub(crate) struct LinkPoll {
    epoll: OwnedFd,
    links: Mutex<IdMap<WorkerId, Arc<LinkReader>>>,
}

/// At most this many ready connections are read per poll.
const POLL_EVENTS: usize = 16;

impl LinkPoll {
    /// An empty set.
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(LinkPoll {
            epoll,
            links: Mutex::new(IdMap::default()),
        })
    }

    /// Adds a connection to the set.
    pub(crate) fn add(&self, link: Arc<LinkReader>) {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: link.worker,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                link.direct.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(
                worker = link.worker,
                "worker link not polled by waiters: {e}"
            );
            return;
        }
        self.links.lock().insert(link.worker, link);
    }

    /// Removes a connection from the set.
    pub(crate) fn remove(&self, worker: WorkerId) {
        let Some(link) = self.links.lock().remove(&worker) else {
            return;
        };
        // SAFETY: both descriptors are open (`link` holds its handle).
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                link.direct.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Reads every connection that has something, without blocking; frames go to `core`.
    /// True when frames were handled.
    pub(crate) fn poll(&self, core: &Core) -> bool {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; POLL_EVENTS];
        // SAFETY: `events` has room for POLL_EVENTS entries; the epoll descriptor is open.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                POLL_EVENTS as i32,
                0,
            )
        };
        let mut handled = false;
        for event in events.iter().take(n.max(0) as usize) {
            let worker: WorkerId = event.u64;
            let link = self.links.lock().get(&worker).cloned();
            if let Some(link) = link {
                handled |= link.poll(core);
            }
        }
        handled
    }
}
