//! The worker's direct endpoint and its links to workers on other hosts
//! ([`prism_transport::direct`]): an owner's pushes to the workers leased to it there, and
//! their ends back, without the nodes' relays (DESIGN.md §4). The books say which frames go
//! where ([`DirectTo`]); this keeps one link per leased worker's endpoint (its first frame a
//! [`DirectHello`] naming the job and this worker), takes the links owners open here, and
//! hands what arrives to the books. The endpoint is driven by whichever of the worker's
//! threads waits: the task's thread while it spins or sleeps, the pump while a task runs, an
//! actor's reader.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use prism_transport::direct::{Endpoint, Event, LinkId};
use prism_transport::{ArchivedToWorker, DirectHello, FrameReader, PROTOCOL_VERSION, ToWorker};

use crate::proto::node::DRIVER_OWNER;
use crate::proto::worker::DirectRefused as Refused;
use crate::proto::worker::{DirectTo, Stop, Worker, foreign};
use crate::store::ObjectBytes;

/// How long a worker waits for its node's first frame (its endpoint's identity).
const FIRST_FRAME: Duration = Duration::from_secs(10);

/// A worker's direct endpoint and links (see the module's docs).
#[derive(Debug)]
pub(super) struct DirectLinks {
    endpoint: Endpoint,
    job: String,
    /// Where this worker's node serves its peers (named in the hellos it sends).
    node: String,
    me: u64,
    /// Links this worker opened, by the endpoint they go to, and back.
    to: HashMap<String, LinkId>,
    opened: HashMap<LinkId, String>,
    /// Links owners opened here: the owner of each, once its hello came.
    accepted: HashMap<LinkId, Option<u64>>,
    /// The link of each owner whose hello came.
    owners: HashMap<u64, LinkId>,
    /// Callers of other jobs: the alias each has here, and its number in its job (see
    /// [`crate::proto::worker::foreign`]).
    foreign: HashMap<u64, u64>,
    /// How many callers of other jobs were aliased.
    aliased: u64,
    events: Vec<Event>,
}

impl DirectLinks {
    /// Reads the node's first frame on the link (`reader`), the endpoint's identity and the
    /// job's name, and binds the endpoint on the node's address: for worker `me`.
    pub(super) fn open(reader: &mut FrameReader<UnixStream>, me: u64) -> Result<Self, String> {
        let stream = reader.get_ref();
        stream
            .set_read_timeout(Some(FIRST_FRAME))
            .map_err(|e| e.to_string())?;
        let frame = reader.read_frame();
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| e.to_string())?;
        let frame = frame
            .map_err(|e| format!("no first frame from the node: {e}"))?
            .ok_or("the node closed the link before its first frame")?;
        let ArchivedToWorker::Endpoint {
            identity,
            job,
            node,
        } = frame.access::<ToWorker>().map_err(|e| e.to_string())?
        else {
            return Err("the node's first frame is not the endpoint's identity".into());
        };
        let identity = prism_transport::tls::Identity::from_pem(identity.0.as_str())
            .map_err(|e| e.to_string())?;
        let host = std::env::var(crate::process::ENV_NODE_HOST)
            .map_err(|_| format!("{} is not set", crate::process::ENV_NODE_HOST))?;
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|e| format!("{host:?} is not an address: {e}"))?;
        let addr = std::net::SocketAddr::new(ip, 0);
        let endpoint = Endpoint::bind(addr, &identity, prism_transport::DEFAULT_MAX_FRAME)
            .map_err(|e| e.to_string())?;
        Ok(DirectLinks {
            endpoint,
            job: job.to_string(),
            node: node.to_string(),
            me,
            to: HashMap::new(),
            opened: HashMap::new(),
            accepted: HashMap::new(),
            owners: HashMap::new(),
            foreign: HashMap::new(),
            aliased: 0,
            events: Vec::new(),
        })
    }

    /// Where owners on other nodes connect.
    pub(super) fn addr(&self) -> String {
        self.endpoint.local_addr().to_string()
    }

    /// The endpoint's socket, for a thread that waits on it among others.
    pub(super) fn fd(&self) -> RawFd {
        self.endpoint.as_raw_fd()
    }

    /// How long a thread that waits may sleep before the endpoint's timers need it.
    pub(super) fn sleep_at_most(&self) -> Option<Duration> {
        let due = self.endpoint.next_timeout()?;
        Some(due.saturating_duration_since(Instant::now()))
    }

    /// Sends the books' frames for direct links: on the link to each leased worker's endpoint
    /// (opened first, with this worker's hello), or back on an owner's link. A link that
    /// cannot be had is reported to the books as lost.
    pub(super) fn send(&mut self, core: &mut Worker) {
        for (to, bytes) in core.take_direct() {
            let (link, endpoint) = match &to {
                DirectTo::Endpoint(endpoint) => match self.link_to(endpoint) {
                    Ok(link) => (link, Some(endpoint.clone())),
                    Err(e) => {
                        tracing::warn!(%endpoint, "cannot link to a leased worker: {e}");
                        core.direct_lost(endpoint);
                        continue;
                    }
                },
                DirectTo::Owner(owner) => match self.owners.get(owner) {
                    Some(&link) if self.foreign.contains_key(owner) => {
                        let remote = self.foreign[owner];
                        match foreign::outbound(&bytes, remote, *owner) {
                            Ok(bytes) => {
                                if let Err(e) = self.endpoint.send(link, &bytes) {
                                    tracing::debug!(
                                        "another job's caller's frames were not sent: {e}"
                                    );
                                }
                            }
                            Err(e) => tracing::error!(
                                owner,
                                "frames for another job's caller dropped: {e}"
                            ),
                        }
                        continue;
                    }
                    Some(&link) => (link, None),
                    None => {
                        tracing::debug!(
                            owner,
                            "frames for an owner whose direct link closed are dropped"
                        );
                        continue;
                    }
                },
            };
            if let Err(e) = self.endpoint.send(link, &bytes) {
                tracing::debug!("a direct link's frames were not sent: {e}");
                if let Some(endpoint) = endpoint {
                    self.forget_opened(link);
                    core.direct_lost(&endpoint);
                }
            }
        }
    }

    /// The link to `endpoint`, opened now (with this worker's hello) if there is none.
    fn link_to(&mut self, endpoint: &str) -> Result<LinkId, String> {
        if let Some(&link) = self.to.get(endpoint) {
            return Ok(link);
        }
        let addr = endpoint
            .parse()
            .map_err(|e| format!("{endpoint:?} is not an address: {e}"))?;
        let hello = DirectHello {
            protocol: PROTOCOL_VERSION,
            job: self.job.clone(),
            owner: self.me,
            node: self.node.clone(),
        };
        let link = (self.endpoint.connect_with(addr, &hello)).map_err(|e| e.to_string())?;
        self.to.insert(endpoint.to_string(), link);
        self.opened.insert(link, endpoint.to_string());
        Ok(link)
    }

    fn forget_opened(&mut self, link: LinkId) {
        if let Some(endpoint) = self.opened.remove(&link) {
            self.to.remove(&endpoint);
        }
    }

    /// Drives the endpoint (unless another thread does) and hands what arrived to the books;
    /// `open` maps a value's segment. True when frames were handled.
    pub(super) fn pump(
        &mut self,
        core: &mut Worker,
        open: &mut dyn FnMut(&prism_transport::ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<bool, Stop> {
        if !self.endpoint.try_drive(&mut self.events) {
            return Ok(false);
        }
        let mut handled = false;
        for event in std::mem::take(&mut self.events) {
            match event {
                Event::Accepted { link, .. } => {
                    self.accepted.insert(link, None);
                }
                Event::Connected(_) => {}
                Event::Frame(link, frame) => {
                    handled = true;
                    let from = match self.accepted.get(&link) {
                        // An owner's first frame: who it is.
                        Some(None) => {
                            self.hello(core, link, &frame);
                            continue;
                        }
                        Some(Some(owner)) => Some(*owner),
                        // The ends of a worker leased to this one.
                        None => None,
                    };
                    let frame =
                        match from.and_then(|alias| Some((alias, *self.foreign.get(&alias)?))) {
                            // Another job's caller: its ids in its alias's name.
                            Some((alias, remote)) => {
                                match foreign::inbound(&frame, remote, alias, core.hosted_actor())
                                    .and_then(|bytes| reframe(&bytes))
                                {
                                    Ok(frame) => frame,
                                    Err(refused) => {
                                        tracing::warn!(
                                            owner = alias,
                                            "closing another job's link: {refused}"
                                        );
                                        self.endpoint.close(link, &refused.to_string());
                                        self.closed(core, link)?;
                                        continue;
                                    }
                                }
                            }
                            None => frame,
                        };
                    match core.handle_direct(from, frame, open)? {
                        Ok(()) => {}
                        Err(refused) => {
                            tracing::warn!(owner = ?from, "closing a direct link: {refused}");
                            self.endpoint.close(link, &refused.to_string());
                            self.closed(core, link)?;
                        }
                    }
                }
                Event::Closed { link, peer, reason } => {
                    tracing::debug!(%peer, "a direct link closed: {reason}");
                    self.closed(core, link)?;
                }
            }
        }
        Ok(handled)
    }

    /// An owner's hello on `link`: of this job and protocol, or the link closes.
    fn hello(&mut self, core: &mut Worker, link: LinkId, frame: &prism_transport::Frame) {
        let refusal = match frame.access::<DirectHello>() {
            Ok(hello) if hello.protocol.to_native() != PROTOCOL_VERSION => Some(format!(
                "protocol version mismatch: the owner speaks {}, this worker {PROTOCOL_VERSION}",
                hello.protocol.to_native()
            )),
            Ok(hello) if hello.job.as_str() != self.job => match core.hosted_actor() {
                // A caller of another job, for the actor hosted here: aliased.
                Some(_) => {
                    self.aliased += 1;
                    let alias = foreign::alias(self.aliased);
                    self.foreign.insert(alias, hello.owner.to_native());
                    self.owner_linked(alias, link, "another job's caller linked again");
                    core.foreign_from(alias);
                    tracing::debug!(
                        job = hello.job.as_str(),
                        owner = hello.owner.to_native(),
                        alias,
                        "another job's caller linked"
                    );
                    None
                }
                None => Some(format!(
                    "the owner's job is {}, this worker's {}, and it hosts no actor",
                    hello.job.as_str(),
                    self.job
                )),
            },
            Ok(hello) if hello.owner.to_native() == DRIVER_OWNER => {
                // The driver's link: taken once the driver names it through the node.
                let peer = (self.endpoint.peer(link)).map_or_else(String::new, |p| p.to_string());
                match core.driver_linked(&peer) {
                    Ok(()) => {
                        self.owner_linked(DRIVER_OWNER, link, "the driver linked again");
                        None
                    }
                    Err(refused) => Some(refused.to_string()),
                }
            }
            Ok(hello) => {
                let owner = hello.owner.to_native();
                self.owner_linked(owner, link, "the owner linked again");
                core.direct_from(owner, hello.node.as_str());
                None
            }
            Err(e) => Some(format!("a bad hello: {e}")),
        };
        if let Some(reason) = refusal {
            tracing::warn!("refused a direct link: {reason}");
            self.endpoint.close(link, &reason);
            self.accepted.remove(&link);
        }
    }

    /// `link` is `owner`'s now; an earlier link of the same owner is closed (`why`).
    fn owner_linked(&mut self, owner: u64, link: LinkId, why: &str) {
        self.accepted.insert(link, Some(owner));
        if let Some(old) = self.owners.insert(owner, link)
            && old != link
        {
            self.endpoint.close(old, why);
            self.accepted.remove(&old);
        }
    }

    /// `link` ended: an owner's (its ends go through the node from now on), the driver's
    /// (this worker stops: its frames for the driver cannot keep their order), or one this
    /// worker opened (the leases on it are given up).
    fn closed(&mut self, core: &mut Worker, link: LinkId) -> Result<(), Stop> {
        if let Some(owner) = self.accepted.remove(&link).flatten()
            && self.owners.get(&owner) == Some(&link)
        {
            self.owners.remove(&owner);
            self.foreign.remove(&owner);
            if owner == DRIVER_OWNER {
                return core.driver_link_closed();
            }
            core.direct_closed(owner);
        }
        if let Some(endpoint) = self.opened.remove(&link) {
            self.to.remove(&endpoint);
            core.direct_lost(&endpoint);
        }
        Ok(())
    }
}

/// The one frame encoded in `bytes`.
fn reframe(bytes: &[u8]) -> Result<prism_transport::Frame, Refused> {
    let mut decoder = prism_transport::FrameDecoder::new(bytes.len().max(1));
    decoder.extend(bytes);
    match decoder.next_frame() {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(Refused::Frame("a rewritten frame is incomplete".into())),
        Err(e) => Err(Refused::Frame(e.to_string())),
    }
}

/// Waits until `fds` has something to read or `timeout` passes (`None`: no limit).
pub(super) fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) {
    let mut polled: Vec<libc::pollfd> = (fds.iter())
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        // Rounded up: a timer due in 300 us must not turn into a busy loop of 0 ms polls.
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    // SAFETY: `polled` holds `fds.len()` valid pollfds, alive for the call.
    let rc = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            tracing::debug!("a worker's wait failed: {e}");
        }
    }
}
