//! The driver's direct endpoint in a joined cluster ([`prism_transport::direct`]): a link to
//! each worker it sends frames to, beside that worker's link through its node, so that the
//! driver's tasks and their ends pass no relay (DESIGN.md §4; the two ways and their order:
//! [`crate::proto::driver_link`]). The link is opened with the first frame the driver sends
//! the worker; the worker's frames on it are read by whichever thread gets there first: one
//! that spins in `get` ([`DriverLinks::poll`]) or this module's thread, which sleeps on the
//! socket and keeps the links' timers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prism_transport::direct::{DirectError, Endpoint, Event, LinkId};
use prism_transport::tls::Identity;
use prism_transport::{DirectHello, Frame, PROTOCOL_VERSION};

use super::Core;
use crate::proto::driver_link::Way;
use crate::proto::node::DRIVER_OWNER;
use crate::proto::scheduler::WorkerId;

/// How long the links' thread sleeps at most between looks at whether the driver is gone.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// How long the links' thread leaves the socket to the threads that spin on it before it
/// looks again: a thread that stops spinning because its answer came does not wake it (a
/// driver's round trips would each cost a thread wake), so frames that come while no thread
/// waits, within this long of a wait's end, are read up to this late.
const SPIN_LINGER: Duration = Duration::from_millis(1);

/// The driver's direct endpoint and the workers its links go to.
#[derive(Debug)]
pub(crate) struct DriverLinks {
    endpoint: Endpoint,
    job: String,
    /// The driver's peer address (named in the links' hellos).
    node: String,
    /// The worker at the other end of each link.
    workers: Mutex<HashMap<LinkId, WorkerId>>,
    /// Links to other jobs' workers (whose actors the driver calls), by the endpoint each
    /// goes to, and back.
    foreign: Mutex<(HashMap<String, LinkId>, HashMap<LinkId, String>)>,
    /// What one drive of the endpoint brought, handled before anyone drives again (so that
    /// a link's frames are handled in the order they came).
    reading: Mutex<Vec<Event>>,
    /// Sends of a burst, not sent yet (see [`DriverLinks::send`]).
    burst: Mutex<Burst>,
    /// Wakes the links' thread to send a burst, or to read the socket again.
    wake: std::os::fd::OwnedFd,
    /// Who reads the socket: threads that spin on it, or the links' thread.
    spinners: Spinners,
}

/// Who reads the driver's endpoint's socket: the threads that spin on it while they wait for
/// an answer ([`DriverLinks::spinning`]), or else the links' thread, which sleeps on it. A
/// thread that sleeps on a socket is woken by every datagram, also one that another thread
/// reads first: while a thread spins, and for [`SPIN_LINGER`] after one's answer came, the
/// links' thread sleeps off the socket, so that an answer wakes no other thread.
#[derive(Debug)]
struct Spinners {
    /// Threads spinning now.
    count: AtomicUsize,
    /// When a thread last stopped spinning because its answer came, in microseconds after
    /// `epoch` (0: none since the last one that parked).
    answered_at: AtomicU64,
    epoch: Instant,
    /// The links' thread sleeps on the socket: a thread that begins to spin wakes it once,
    /// to leave the socket to the spinner.
    listening: AtomicBool,
}

impl Spinners {
    fn new(epoch: Instant) -> Self {
        Spinners {
            count: AtomicUsize::new(0),
            answered_at: AtomicU64::new(0),
            epoch,
            listening: AtomicBool::new(false),
        }
    }

    /// A thread begins to spin: true when the links' thread listens on the socket and must be
    /// woken to leave it. (The links' thread goes quiet either because it sees the count or
    /// because it is woken: SeqCst on both sides, so one of the two happens.)
    fn begin(&self) -> bool {
        self.count.fetch_add(1, Ordering::SeqCst) == 0 && self.listening.load(Ordering::SeqCst)
    }

    /// A spinning thread's answer came at `now`.
    fn answered(&self, now: Instant) {
        let at = now.saturating_duration_since(self.epoch).as_micros() as u64;
        self.answered_at.store(at.max(1), Ordering::SeqCst);
        self.count.fetch_sub(1, Ordering::SeqCst);
    }

    /// A spinning thread stops to sleep: true when it was the last, and the links' thread
    /// must be woken to listen again.
    fn parks(&self) -> bool {
        self.answered_at.store(0, Ordering::SeqCst);
        self.count.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// The links' thread is about to sleep at `now`: how long it leaves the socket to the
    /// spinners, or `None` when it listens (marked so until [`Spinners::slept`]).
    fn quiet_for(&self, now: Instant) -> Option<Duration> {
        self.listening.store(true, Ordering::SeqCst);
        let quiet = if self.count.load(Ordering::SeqCst) > 0 {
            Some(SPIN_LINGER)
        } else {
            match self.answered_at.load(Ordering::SeqCst) {
                0 => None,
                at => {
                    let since = (now.saturating_duration_since(self.epoch))
                        .saturating_sub(Duration::from_micros(at));
                    SPIN_LINGER
                        .checked_sub(since)
                        .filter(|left| !left.is_zero())
                }
            }
        };
        if quiet.is_some() {
            self.listening.store(false, Ordering::SeqCst);
        }
        quiet
    }

    /// The links' thread woke.
    fn slept(&self) {
        self.listening.store(false, Ordering::SeqCst);
    }
}

/// A thread spinning on the driver's endpoint (see [`DriverLinks::spinning`]).
#[derive(Debug)]
pub(crate) struct Spinning {
    links: Arc<DriverLinks>,
    /// It stopped to sleep ([`Spinning::park`]) rather than for an answer.
    parked: bool,
}

impl Spinning {
    /// The thread stops spinning to sleep: the links' thread reads the socket again now.
    pub(crate) fn park(mut self) {
        self.parked = true;
        if self.links.spinners.parks() {
            self.links.wake_thread();
        }
    }
}

impl Drop for Spinning {
    /// The thread's answer came: the links' thread reads the socket again [`SPIN_LINGER`]
    /// after, unless a thread spins again by then (a caller's next round trip).
    fn drop(&mut self) {
        if !self.parked {
            self.links.spinners.answered(Instant::now());
        }
    }
}

/// Sends close together: written to the links by the links' thread in one go (QUIC packs them
/// into a few datagrams), as the writer task does for the Unix links
/// ([`super::link::LinkWriter`]).
#[derive(Debug)]
struct Burst {
    /// Bytes per link, in the order they were sent; links in the order they were first sent to.
    pending: Vec<(LinkId, Vec<u8>)>,
    /// When the last send came, and the count of waits then ([`super::link::waits`]).
    last: (Instant, u64),
}

impl DriverLinks {
    /// An endpoint on `ip` presenting `identity` for job `job`, whose peer address is `node`.
    pub(crate) fn bind(
        ip: IpAddr,
        identity: &Identity,
        (job, node): (String, String),
        max_frame: usize,
    ) -> Result<Self, DirectError> {
        let endpoint = Endpoint::bind(SocketAddr::new(ip, 0), identity, max_frame)?;
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            let reason = std::io::Error::last_os_error().to_string();
            let addr = endpoint.local_addr();
            return Err(DirectError::Bind { addr, reason });
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let wake = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(DriverLinks {
            endpoint,
            job,
            node,
            workers: Mutex::new(HashMap::new()),
            foreign: Mutex::new((HashMap::new(), HashMap::new())),
            reading: Mutex::new(Vec::new()),
            burst: Mutex::new(Burst {
                pending: Vec::new(),
                last: (Instant::now(), super::link::waits()),
            }),
            wake,
            spinners: Spinners::new(Instant::now()),
        })
    }

    /// Marks the calling thread as spinning on the endpoint (it calls [`DriverLinks::poll`])
    /// until the mark is dropped, or [`Spinning::park`]ed before the thread sleeps.
    pub(crate) fn spinning(self: &Arc<Self>) -> Spinning {
        if self.spinners.begin() {
            self.wake_thread();
        }
        Spinning {
            links: self.clone(),
            parked: false,
        }
    }

    /// Where the links come from (what the workers are told through their nodes).
    pub(crate) fn addr(&self) -> String {
        self.endpoint.local_addr().to_string()
    }

    /// Opens a link to worker `worker`'s endpoint at `endpoint`, the driver's hello first.
    pub(crate) fn open(&self, worker: WorkerId, endpoint: &str) -> Result<LinkId, String> {
        let link = self.connect(endpoint)?;
        self.workers.lock().insert(link, worker);
        Ok(link)
    }

    /// A link to `endpoint` with the driver's hello on it.
    fn connect(&self, endpoint: &str) -> Result<LinkId, String> {
        let addr: SocketAddr = endpoint
            .parse()
            .map_err(|e| format!("{endpoint:?} is not an address: {e}"))?;
        let hello = DirectHello {
            protocol: PROTOCOL_VERSION,
            job: self.job.clone(),
            owner: DRIVER_OWNER,
            node: self.node.clone(),
        };
        (self.endpoint.connect_with(addr, &hello)).map_err(|e| e.to_string())
    }

    /// Sends the driver's frames to another job's worker at `endpoint` (whose actor it
    /// calls), on the link to it, opened now if there is none.
    pub(crate) fn send_foreign(&self, endpoint: &str, bytes: &[u8]) -> Result<(), String> {
        let link = {
            let mut foreign = self.foreign.lock();
            match foreign.0.get(endpoint) {
                Some(&link) => link,
                None => {
                    let link = self.connect(endpoint)?;
                    foreign.0.insert(endpoint.to_string(), link);
                    foreign.1.insert(link, endpoint.to_string());
                    link
                }
            }
        };
        self.send(link, bytes).map_err(|e| e.to_string())
    }

    /// Sends whole frames on `link`, in order after those sent before. A send that follows
    /// the last within [`BURST_GAP`] with no wait for an answer between is part of a burst:
    /// it is left for the links' thread, woken once per burst, which sends all of it at
    /// once (a datagram per send would cost the driver and the worker a system call and a
    /// decryption each). A later send that is not, or a thread that waits, sends what is
    /// left first.
    ///
    /// [`BURST_GAP`]: super::link::BURST_GAP
    pub(crate) fn send(&self, link: LinkId, bytes: &[u8]) -> Result<(), DirectError> {
        let now = Instant::now();
        let waits = super::link::waits();
        let mut burst = self.burst.lock();
        let (last, waited) = std::mem::replace(&mut burst.last, (now, waits));
        let in_burst = waited == waits && now.duration_since(last) < super::link::BURST_GAP;
        if in_burst {
            if burst.pending.is_empty() {
                self.wake_thread();
            }
            match burst.pending.iter_mut().find(|(l, _)| *l == link) {
                Some((_, pending)) => pending.extend_from_slice(bytes),
                None => burst.pending.push((link, bytes.to_vec())),
            }
            return Ok(());
        }
        // Under the lock: what a burst left goes first, and no other thread's send of it
        // can come between.
        self.send_all(std::mem::take(&mut burst.pending));
        self.endpoint.send(link, bytes)
    }

    /// Sends what bursts left.
    fn flush(&self) {
        let mut burst = self.burst.lock();
        self.send_all(std::mem::take(&mut burst.pending));
    }

    fn send_all(&self, pending: Vec<(LinkId, Vec<u8>)>) {
        for (link, bytes) in pending {
            if let Err(e) = self.endpoint.send(link, &bytes) {
                // Its end is reported by the endpoint; the worker is stopped then.
                tracing::debug!("frames on a direct link that ended: {e}");
            }
        }
    }

    /// Wakes the links' thread (to send a burst).
    fn wake_thread(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to the eventfd this owns.
        let rc = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                8,
            )
        };
        if rc < 0 {
            tracing::debug!(
                "cannot wake the links' thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// Clears the links' thread's wake-up.
    fn woken(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from the eventfd this owns (non-blocking).
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                (&raw mut count).cast::<libc::c_void>(),
                8,
            )
        };
    }

    /// Closes `link` (its worker is gone), telling the worker why.
    pub(crate) fn close(&self, link: LinkId, reason: &str) {
        self.workers.lock().remove(&link);
        self.endpoint.close(link, reason);
    }

    /// Reads what the links brought, unless another thread is reading (for a thread that
    /// spins while it waits): true when frames were handled.
    pub(crate) fn poll(&self, core: &Core) -> bool {
        // A thread that waits wants what it sent out now.
        if !self.burst.lock().pending.is_empty() {
            self.flush();
        }
        let Some(mut events) = self.reading.try_lock() else {
            return false;
        };
        if !self.endpoint.try_drive(&mut events) {
            return false;
        }
        self.handle(core, &mut events)
    }

    /// Reads and handles what the links brought so far, waiting for a thread that reads them
    /// now: before a worker's death is handled, so that frames it sent on its link just before
    /// it died, already at this host, are handled first (through its node, they came before
    /// the word of its death; on the link they race it).
    pub(crate) fn drain(&self, core: &Core) {
        let mut events = self.reading.lock();
        self.endpoint.drive(&mut events);
        self.handle(core, &mut events);
    }

    /// Starts the thread that sleeps on the endpoint and reads what comes while nobody spins,
    /// until the driver is gone. While a thread spins, this one sleeps only on its wake-ups
    /// and the links' timers.
    pub(crate) fn start(self: &Arc<Self>, core: Weak<Core>) -> std::io::Result<()> {
        let links = self.clone();
        std::thread::Builder::new()
            .name("prism-links".into())
            .spawn(move || {
                loop {
                    let wake = links.wake.as_raw_fd();
                    let slept = match links.spinners.quiet_for(Instant::now()) {
                        Some(quiet) => links.endpoint.wait_timers(wake, quiet),
                        None => links.endpoint.wait_also(Some(wake), IDLE_WAIT),
                    };
                    links.spinners.slept();
                    if let Err(e) = slept {
                        tracing::warn!("the driver's direct endpoint cannot be waited on: {e}");
                        std::thread::sleep(IDLE_WAIT);
                    }
                    links.woken();
                    links.flush();
                    let Some(core) = core.upgrade() else { break };
                    let mut events = links.reading.lock();
                    links.endpoint.drive(&mut events);
                    links.handle(&core, &mut events);
                }
            })?;
        Ok(())
    }

    /// Hands the frames in `events` to the core, a link's run of frames at a time, and tells
    /// it of links that ended. True when frames were handled.
    fn handle(&self, core: &Core, events: &mut Vec<Event>) -> bool {
        let mut handled = false;
        let mut run: Option<(WorkerId, Vec<Frame>)> = None;
        for event in events.drain(..) {
            match event {
                Event::Frame(link, frame) => {
                    let Some(worker) = self.workers.lock().get(&link).copied() else {
                        // (The lock is let go before the core is called: an `if let`
                        // scrutinee's guard lives through its block.)
                        let endpoint = self.foreign.lock().1.get(&link).cloned();
                        if let Some(endpoint) = endpoint {
                            handled = true;
                            core.foreign_frames(endpoint, vec![frame]);
                        }
                        continue;
                    };
                    handled = true;
                    match &mut run {
                        Some((w, frames)) if *w == worker => frames.push(frame),
                        _ => {
                            if let Some((w, frames)) = run.replace((worker, vec![frame])) {
                                deliver(core, w, frames);
                            }
                        }
                    }
                }
                Event::Closed { link, peer, reason } => {
                    if let Some((w, frames)) = run.take() {
                        deliver(core, w, frames);
                    }
                    // Not under the lock: the core closes the link, which takes it again.
                    let worker = self.workers.lock().remove(&link);
                    if let Some(worker) = worker {
                        core.driver_link_lost(worker, format!("its link to {peer}: {reason}"));
                    }
                    let foreign = {
                        let mut foreign = self.foreign.lock();
                        let endpoint = foreign.1.remove(&link);
                        if let Some(endpoint) = &endpoint {
                            foreign.0.remove(endpoint);
                        }
                        endpoint
                    };
                    if let Some(endpoint) = foreign {
                        core.foreign_link_lost(endpoint, reason.to_string());
                    }
                }
                Event::Accepted { link, peer } => {
                    tracing::warn!(%peer, "the driver's endpoint takes no links: closed");
                    self.endpoint
                        .close(link, "the driver's endpoint takes no links");
                }
                Event::Connected(_) => {}
            }
        }
        if let Some((w, frames)) = run {
            deliver(core, w, frames);
        }
        handled
    }
}

/// Hands worker `worker`'s frames from its link to the core; one it cannot read ends the
/// link (the core stops the worker).
fn deliver(core: &Core, worker: WorkerId, frames: Vec<Frame>) {
    if let Err(reason) = core.frames_from(worker, Way::Link, frames) {
        tracing::error!(worker, "a bad frame on the driver's direct link: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_links_thread_leaves_the_socket_while_a_thread_spins_and_a_while_after() {
        let epoch = Instant::now();
        let at = |us: u64| epoch + Duration::from_micros(us);
        let spinners = Spinners::new(epoch);
        // Nobody spun yet: the links' thread listens (until it wakes), and a thread that
        // begins to spin meanwhile wakes it.
        assert_eq!(spinners.quiet_for(at(10)), None);
        assert!(spinners.begin(), "a spinner wakes the listening thread");
        spinners.slept();
        assert_eq!(spinners.quiet_for(at(20)), Some(SPIN_LINGER));
        assert!(!spinners.begin(), "a second spinner finds it quiet already");
        // Answers came: quiet until SPIN_LINGER after the last.
        spinners.answered(at(100));
        spinners.answered(at(300));
        assert_eq!(
            spinners.quiet_for(at(500)),
            Some(SPIN_LINGER - Duration::from_micros(200))
        );
        let after = at(300) + SPIN_LINGER;
        assert_eq!(spinners.quiet_for(after), None, "it listens again");
        // A spinner that gives up wakes it to listen at once.
        assert!(spinners.begin(), "it was listening");
        assert!(spinners.parks(), "the last spinner to park wakes it");
        assert_eq!(spinners.quiet_for(after), None);
        // Two spinners: only the last to park wakes it.
        spinners.slept();
        assert!(!spinners.begin() && !spinners.begin());
        assert!(!spinners.parks());
        assert!(spinners.parks());
    }
}
