//! A node daemon's side of the jobs it hosts. A driver that joins the cluster connects to every
//! node ([`Purpose::Job`]); the node fetches the job's binary by content hash from the driver
//! (once, then from its cache), makes the job a shared-memory store, starts worker processes
//! from the binary when asked (each with a private link it inherits), relays each worker's link
//! to the driver on a QUIC stream of its own, pulls objects its workers need into the job's store ([`ToHost::Fetch`], one transfer per
//! object however many ask), and serves the job's objects to other hosts
//! ([`Purpose::Objects`]). When the driver's connection ends, the job's workers are killed and
//! its store is removed. The node holds a lease on the job ([`crate::proto::lease`]): cut off
//! from the driver for a whole lease, it closes the job's connection, which ends the job here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prism_transport::quic;
use prism_transport::tls::Identity;
use prism_transport::transfer::{self, ObjectSource};
use prism_transport::{
    ArchivedHostEvent, ArchivedToNode, ArchivedToPeer, FrameDecoder, FromHost, FromLogs, HostEvent,
    HostHello, JobEvents, NodeUsage, PeerFrame, PeerLease, PullKey, PullStats, Purpose, Secret,
    ToHost, ToLogs, ToNode, ToPeer, ToWorker, encode_payload,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};

use super::object_manager::{Peers, StoreSource, map_file};
use super::worker_pool;
use crate::process::{self, ENV_JOB_FINGERPRINT, ENV_NODE_NAME, ProcessHandle, StoreLimits};
use crate::proto::host::{
    Action, ConnId, Ending, Event, FileWork, Hosting as Core, JobStart, ReqId, Request,
};
use crate::proto::relay::{self, Route};
use crate::store;

/// Largest request a driver may send.
const MAX_REQUEST: usize = 16 << 20;

/// The jobs a node daemon hosts: the IO around [`crate::proto::host::Hosting`], which decides.
#[derive(Debug)]
pub(crate) struct Hosting {
    /// The node's name (workers learn it).
    name: String,
    /// The address the node listens on (workers bind their own endpoints there).
    host: std::net::IpAddr,
    /// Where job binaries are cached, by content hash.
    binaries: PathBuf,
    core: Mutex<Core<SocketAddr, Arc<JobFiles>>>,
    /// Connections for pulls.
    peers: Peers,
    /// The cached binaries this daemon checked against their hash, with their file's identity
    /// then (a file changed since is checked again): hashing a binary of tens of MiB for
    /// every job that starts cost each join a fraction of a second per node.
    verified: Mutex<HashMap<[u8; 32], FileStamp>>,
    /// The drivers' connections, by the number the core knows them by.
    connections: Mutex<HashMap<ConnId, quinn::Connection>>,
    /// Requests waiting for their answers.
    replies: Mutex<HashMap<ReqId, oneshot::Sender<FromHost>>>,
    next_request: AtomicU64,
    /// The jobs' worker processes, by connection and number.
    processes: Mutex<HashMap<(ConnId, u64), Arc<ProcessHandle>>>,
    /// Frames for the jobs' workers from their other workers here (see [`relay_worker`]).
    links: Mutex<HashMap<(ConnId, u64), WorkerInbox>>,
    /// Frames for the jobs' drivers the node sends as if a worker had (a lease ask it took
    /// and could not grant), each after what that worker sent before.
    ups: Mutex<HashMap<(ConnId, u64), WorkerInbox>>,
    /// Workers of the jobs on other nodes that pushed tasks to workers here (owners with a
    /// lease on one), by job connection and number: where their nodes serve peers, for the
    /// ends and hand-backs going back.
    afar: Mutex<HashMap<(ConnId, u64), SocketAddr>>,
    /// The names of the nodes whose daemons passed frames to workers here, by address (for
    /// the node a task leased there ran on, in the task events).
    peer_names: Mutex<HashMap<SocketAddr, String>>,
    /// Frames for workers on other nodes, by node address and job: each stream's sender.
    to_peers: Mutex<HashMap<(SocketAddr, String), WorkerInbox>>,
    /// Wakes the lease timer: the core's next timeout may have come nearer.
    timer: Arc<Notify>,
    /// Frames passed between workers of different nodes, both ways ([`NodeUsage::relayed`]).
    relayed: AtomicU64,
}

/// Whole frames for one worker's link, from the job's other workers on this node.
type WorkerInbox = mpsc::UnboundedSender<Vec<u8>>;

/// What the node made to run a job: its executable and object store.
#[derive(Debug)]
struct JobFiles {
    name: String,
    /// The job's binary here (cached under its hash, once the node has it).
    exe: PathBuf,
    binary: [u8; 32],
    store: PathBuf,
    limits: StoreLimits,
    /// The job's content fingerprint (from its binary's hash).
    fingerprint: u64,
    /// Segments of the job's freed objects kept for its next pulls and large results here:
    /// a pull into fresh shared memory spent more on the kernel's page allocation than on
    /// the transfer (1 GiB: 0.74 GB/s into new pages, 2.0 into reused ones). A quarter of the
    /// store's capacity at most; a pool that took nothing for [`super::POOL_IDLE`] is freed
    /// (looked at with each lease renewal, at the latest a second after), and all of it with
    /// the job's store.
    pool: Mutex<store::SegmentPool>,
}

/// What a peer's objects connection serves: the job's store and binary here as they are at
/// each request. A job hosted here again (the driver counted this node lost, and it came back
/// without a restart) has a new store: a source that kept the one of the connection's start
/// answered "not here" for everything made since, so each rebuild placed here was lost again
/// (charged to its task's retries, as the node was never lost).
struct JobSource {
    hosting: Weak<Hosting>,
    job: String,
}

impl ObjectSource for JobSource {
    fn bytes(&self, key: &PullKey) -> Option<bytes::Bytes> {
        let hosting = self.hosting.upgrade()?;
        let (store, exe) = {
            let core = hosting.core.lock();
            let files = core.setup(&self.job)?;
            let exe = core
                .has_binary(&self.job)
                .then(|| (files.binary, files.exe.clone()));
            (files.store.clone(), exe)
        };
        // A node that has the job's binary serves it to the nodes that fetch it next, as the
        // driver does (so a job's start on many nodes spreads like a broadcast).
        let binary = match key {
            PullKey::Binary(_) => exe.and_then(|(hash, exe)| Some((hash, map_file(&exe).ok()?))),
            PullKey::Object(_) => None,
        };
        let store = Some(store);
        StoreSource { store, binary }.bytes(key)
    }
}

impl Hosting {
    /// The jobs of node `name` of `total` resources, with binaries cached in `session`,
    /// pulling objects through `endpoint` as `identity`; keeps the leases' time from now on.
    pub(crate) fn new(
        name: String,
        total: prism_graph::Resources,
        session: &Path,
        identity: Identity,
        endpoint: quinn::Endpoint,
    ) -> Arc<Hosting> {
        let host = endpoint
            .local_addr()
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
        let hosting = Arc::new(Hosting {
            name: name.clone(),
            host,
            binaries: session.join("binaries"),
            core: Mutex::new(Core::new(name.clone(), total).with_direct_links()),
            peers: Peers::new(name, endpoint, identity),
            verified: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(0),
            processes: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            ups: Mutex::new(HashMap::new()),
            afar: Mutex::new(HashMap::new()),
            peer_names: Mutex::new(HashMap::new()),
            to_peers: Mutex::new(HashMap::new()),
            timer: Arc::new(Notify::new()),
            relayed: AtomicU64::new(0),
        });
        tokio::spawn(keep_time(Arc::downgrade(&hosting)));
        hosting
    }

    /// The node is leaving: it starts no new job (the ones it hosts go on until their drivers
    /// let them go, see [`ToHost::EndJob`]).
    pub(crate) fn start_draining(&self) {
        self.core.lock().start_draining();
    }

    /// Whether it hosts no job.
    pub(crate) fn idle(&self) -> bool {
        self.core.lock().idle()
    }

    /// Objects this node pulled from other hosts since it started.
    pub(crate) fn pulled(&self) -> PullStats {
        self.core.lock().pulled()
    }

    /// The reports for the head of the tasks the jobs' workers here own, where they changed
    /// (see [`Core::task_reports`]).
    pub(crate) fn task_reports(&self) -> Vec<JobEvents> {
        let clock = super::unix_clock();
        // Asked only for a worker of another node (rare); nothing locks these before the core.
        let name_of = |conn, worker, granted_at: Option<&str>| {
            let at = match granted_at.and_then(|at| at.parse::<SocketAddr>().ok()) {
                Some(at) => at,
                None => *self.afar.lock().get(&(conn, worker))?,
            };
            self.peer_names.lock().get(&at).cloned()
        };
        self.core.lock().task_reports(&clock, name_of)
    }

    /// The head is new or restarted: the next reports of task events carry everything again.
    pub(crate) fn report_all_again(&self) {
        self.core.lock().report_all_again();
    }

    /// What the hosted jobs hold here: their workers, and the bytes of their object files in
    /// the stores and the spill directories.
    pub(crate) fn usage(&self) -> NodeUsage {
        let (workers, stores): (usize, Vec<PathBuf>) = {
            let core = self.core.lock();
            let stores = core.setups().map(|f| f.store.clone()).collect();
            (core.workers(), stores)
        };
        let mut usage = NodeUsage {
            workers: workers as u32,
            relayed: self.relayed.load(Ordering::Relaxed),
            ..NodeUsage::default()
        };
        for store in stores {
            usage.store_bytes += files_bytes(&store);
            usage.spilled_bytes += files_bytes(&store::spill_dir_for(&store));
        }
        usage
    }

    /// Ends every job (the daemon stops): their workers are killed and their stores removed.
    pub(crate) fn end_all(self: &Arc<Self>) {
        let actions = {
            let mut core = self.core.lock();
            core.end_all();
            drain_unlinking(&self.name, &mut core)
        };
        self.perform(actions);
    }

    /// Serves a member connection whose hello declared a job or objects purpose.
    pub(crate) async fn serve(self: Arc<Self>, connection: quinn::Connection, hello: HostHello) {
        match hello.purpose {
            Purpose::Job(job) => self.serve_job(connection, job, hello.name).await,
            Purpose::Objects(job) => {
                let hosting = Arc::downgrade(&self);
                let source = Arc::new(JobSource { hosting, job });
                transfer::serve_pulls(connection, source).await;
            }
            Purpose::Logs => serve_logs(connection).await,
            Purpose::Workers(job) => {
                let peer = connection.remote_address();
                // Kept after the connection ends: the tasks that ran there are reported later.
                self.peer_names.lock().insert(peer, hello.name.clone());
                self.serve_peer_frames(connection, job).await;
            }
            Purpose::Control => quic::close_for(
                &connection,
                quic::codes::REFUSED,
                "this node is not the head; send control requests to the head",
            ),
        }
    }

    async fn serve_job(
        self: Arc<Self>,
        connection: quinn::Connection,
        job: String,
        driver: String,
    ) {
        let peer = connection.remote_address();
        let conn = connection.stable_id() as ConnId;
        tracing::info!(%job, %driver, %peer, "a driver connected");
        self.connections.lock().insert(conn, connection.clone());
        self.feed(Event::Connected { conn, job });
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let request = match quic::read_request::<ToHost>(&mut recv, peer, MAX_REQUEST).await {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(e) => {
                    quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                    break;
                }
            };
            let (tx, rx) = oneshot::channel();
            match parse(request) {
                Ok(request) => {
                    let req = self.next_request.fetch_add(1, Ordering::Relaxed);
                    self.replies.lock().insert(req, tx);
                    self.feed(Event::Request { conn, req, request });
                }
                Err(e) => {
                    let _ = tx.send(FromHost::Error(e));
                }
            }
            tokio::spawn(async move {
                let reply = rx.await.unwrap_or_else(|_| {
                    FromHost::Error("the node dropped the request unanswered".into())
                });
                if quic::send_frame(&mut send, &reply).await.is_ok() {
                    let _ = send.finish();
                }
            });
        }
        self.feed(Event::Closed { conn });
        self.connections.lock().remove(&conn);
        self.afar.lock().retain(|(of, _), _| *of != conn);
    }

    /// Takes the frames another node's daemon passes to job `job`'s workers here (an owner
    /// there pushing to the worker it leased here, or a worker there returning the ends of
    /// an owner's tasks here), each checked as a worker's forward is.
    async fn serve_peer_frames(self: Arc<Self>, connection: quinn::Connection, job: String) {
        let peer = connection.remote_address();
        while let Ok(mut recv) = connection.accept_uni().await {
            let hosting = self.clone();
            let (job, connection) = (job.clone(), connection.clone());
            tokio::spawn(async move {
                let mut decoder = FrameDecoder::new(prism_transport::DEFAULT_MAX_FRAME);
                loop {
                    let frame = match quic::recv_frame(&mut recv, &mut decoder, peer).await {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return,
                        Err(e) => {
                            quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                            return;
                        }
                    };
                    let passed = match frame.access::<ToPeer>() {
                        Ok(ArchivedToPeer::Frame(passed)) => passed,
                        Ok(ArchivedToPeer::Lease(message)) => {
                            let message =
                                rkyv::deserialize::<PeerLease, rkyv::rancor::Error>(message);
                            let Ok(message) = message else {
                                quic::close_for(
                                    &connection,
                                    quic::codes::BAD_FRAME,
                                    "a bad lease message",
                                );
                                return;
                            };
                            hosting.from_peer(&job, peer, message);
                            continue;
                        }
                        Err(e) => {
                            quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                            return;
                        }
                    };
                    let (from, to) = (passed.from.to_native(), passed.to.to_native());
                    hosting.relayed.fetch_add(1, Ordering::Relaxed);
                    let kind = match relay::check(&passed.frame) {
                        Ok(kind) => kind,
                        Err(reason) => {
                            tracing::error!(%peer, %job, worker = to, "a frame from another node is refused: {reason}");
                            continue;
                        }
                    };
                    let taken = {
                        let core = hosting.core.lock();
                        let conn = core.conn_of(&job);
                        conn.map(|c| (c, core.takes_from_peer(&job, kind, from, to)))
                    };
                    let Some((conn, takes)) = taken else {
                        tracing::debug!(%peer, %job, "a frame for a job not hosted here is dropped");
                        continue;
                    };
                    if !takes {
                        tracing::debug!(%peer, %job, owner = from, worker = to, "a push for a worker not leased to its owner is dropped (its lease ended)");
                        continue;
                    }
                    hosting.owner_at((conn, &job), from, peer);
                    if !hosting.pass_here(conn, to, &passed.frame) {
                        tracing::debug!(
                            worker = to,
                            "a frame for a worker that is gone is dropped"
                        );
                    }
                }
            });
        }
    }

    /// Hands `frame` to worker `to` of the job on `conn` here; false when it is not here.
    fn pass_here(&self, conn: ConnId, to: u64, frame: &[u8]) -> bool {
        (self.links.lock().get(&(conn, to))).is_some_and(|link| link.send(frame.to_vec()).is_ok())
    }

    /// Passes worker `from`'s `frame` for worker `to` of job `job` (on `conn`) on: to that
    /// worker here, to the node `at` names, or (an end or a hand-back for an owner whose
    /// tasks came from another node) to that owner's node.
    fn pass_on(
        self: &Arc<Self>,
        conn: ConnId,
        job: &str,
        from: u64,
        to: u64,
        at: Option<&str>,
        frame: &[u8],
    ) {
        let node = match at {
            Some(at) => match at.parse::<SocketAddr>() {
                Ok(node) => node,
                Err(e) => {
                    tracing::error!(%job, worker = from, "a frame names a bad node address {at:?}: {e}");
                    return;
                }
            },
            None if self.pass_here(conn, to, frame) => return,
            None => match self.afar.lock().get(&(conn, to)) {
                Some(node) => *node,
                None => {
                    tracing::debug!(worker = to, "a frame for a worker that is gone is dropped");
                    return;
                }
            },
        };
        let passed = ToPeer::Frame(PeerFrame {
            from,
            to,
            frame: frame.to_vec(),
        });
        self.relayed.fetch_add(1, Ordering::Relaxed);
        self.send_peer(node, job, &passed);
    }

    /// Another node's pool of job `job` sent `message` (from `peer`, its daemon): an owner
    /// there that asks is one whose workers' ends go back there.
    fn from_peer(self: &Arc<Self>, job: &str, peer: SocketAddr, message: PeerLease) {
        if let PeerLease::Ask { owner, .. } = &message {
            // The core's lock goes before `owner_at` takes it again.
            let conn = self.core.lock().conn_of(job);
            if let Some(conn) = conn {
                self.owner_at((conn, job), *owner, peer);
            }
        }
        let binary_from = match &message {
            PeerLease::Ask {
                binary_from: Some(at),
                ..
            } => at.parse::<SocketAddr>().ok(),
            _ => None,
        };
        self.feed(Event::Peer {
            job: job.to_string(),
            from: peer.to_string(),
            source: peer,
            binary_from,
            message,
        });
    }

    /// Worker `owner` of job `job` (on `conn`) is on the node whose daemon is `peer`: the
    /// ends of its tasks go there, and the core hears of it when it is news.
    fn owner_at(self: &Arc<Self>, (conn, job): (ConnId, &str), owner: u64, peer: SocketAddr) {
        let before = self.afar.lock().insert((conn, owner), peer);
        if before != Some(peer) {
            self.feed(Event::OwnerAt {
                job: job.to_string(),
                owner,
                node: peer.to_string(),
            });
        }
    }

    /// Sends `message` to node `node`'s daemon on the stream for job `job`.
    fn send_peer(self: &Arc<Self>, node: SocketAddr, job: &str, message: &ToPeer) {
        let mut bytes = Vec::new();
        if let Err(e) = prism_transport::encode_frame(message, &mut bytes) {
            tracing::error!(%job, %node, "cannot encode a message for another node: {e}");
            return;
        }
        let key = (node, job.to_string());
        let mut to_peers = self.to_peers.lock();
        if let Some(stream) = to_peers.get(&key) {
            // A stream that ended gives the frame back for a new one.
            match stream.send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => bytes = back,
            }
        }
        let (frames, outbox) = mpsc::unbounded_channel();
        let _ = frames.send(bytes);
        to_peers.insert(key.clone(), frames);
        drop(to_peers);
        let hosting = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Err(e) = send_to_peer(&hosting, node, &key.1, outbox).await {
                tracing::warn!(%node, job = key.1, "frames for workers there are lost: {e}");
            }
            if let Some(hosting) = hosting.upgrade() {
                hosting.to_peers.lock().remove(&key);
            }
        });
    }

    /// Hands `event` to the core and carries out what it decides.
    fn feed(self: &Arc<Self>, event: Event<SocketAddr, Arc<JobFiles>>) {
        self.decide(|core| core.handle(event, Instant::now()));
    }

    /// Runs `decide` on the core and carries out what it decided.
    fn decide<R>(
        self: &Arc<Self>,
        decide: impl FnOnce(&mut Core<SocketAddr, Arc<JobFiles>>) -> R,
    ) -> R {
        let (decided, actions, sooner) = {
            let mut core = self.core.lock();
            let before = core.poll_timeout();
            let decided = decide(&mut core);
            let after = core.poll_timeout();
            let sooner = after.is_some_and(|a| before.is_none_or(|b| a < b));
            (decided, drain_unlinking(&self.name, &mut core), sooner)
        };
        if sooner {
            self.timer.notify_one();
        }
        self.perform(actions);
        decided
    }

    fn perform(self: &Arc<Self>, actions: Vec<Action<SocketAddr, Arc<JobFiles>>>) {
        for action in actions {
            self.act(action);
        }
    }

    fn act(self: &Arc<Self>, action: Action<SocketAddr, Arc<JobFiles>>) {
        match action {
            Action::Peer { job, to, message } => match to.parse::<SocketAddr>() {
                Ok(node) => self.send_peer(node, &job, &ToPeer::Lease(message)),
                Err(e) => {
                    tracing::error!(%job, "a lease message names a bad node address {to:?}: {e}")
                }
            },
            Action::Reply { req, reply, .. } => {
                if let Some(tx) = self.replies.lock().remove(&req) {
                    let _ = tx.send(reply);
                }
            }
            Action::Prepare {
                conn,
                req,
                job,
                start,
            } => {
                let hosting = self.clone();
                tokio::spawn(async move {
                    let cached = hosting.cached(start.binary).await.is_some();
                    let result = hosting.prepare(&job, &start);
                    hosting.feed(Event::Prepared {
                        conn,
                        req,
                        job,
                        result,
                        cached,
                    });
                });
            }
            Action::FetchBinary {
                conn,
                job,
                start,
                from,
            } => {
                let hosting = self.clone();
                tokio::spawn(async move {
                    let fetched = hosting.binary(&job, start.binary, start.size, from);
                    let result = fetched.await.map(|_| ());
                    hosting.feed(Event::BinaryFetched { conn, result });
                });
            }
            Action::Spawn {
                conn,
                req,
                worker,
                setup,
            } => {
                let result = self.spawn(conn, &setup, worker, false);
                self.feed(Event::Spawned {
                    conn,
                    req,
                    worker,
                    result,
                });
            }
            Action::Start {
                conn,
                worker,
                setup,
            } => {
                // On one of the runtime's threads, which live as long as the daemon: the
                // worker dies with the thread that starts it (PDEATHSIG), and this may run on
                // a thread that ends soon (the waiter of a worker that died).
                let hosting = self.clone();
                tokio::spawn(async move {
                    let result = hosting.spawn(conn, &setup, worker, true);
                    hosting.feed(Event::Started {
                        conn,
                        worker,
                        result,
                    });
                });
            }
            Action::Up {
                conn,
                worker,
                message,
            } => {
                let mut frame = Vec::new();
                let sent = match prism_transport::encode_frame(&*message, &mut frame) {
                    Ok(()) => (self.ups.lock().get(&(conn, worker)))
                        .is_some_and(|up| up.send(frame).is_ok()),
                    Err(e) => {
                        tracing::error!(worker, "cannot encode a frame for the driver: {e}");
                        true
                    }
                };
                if !sent {
                    tracing::debug!(
                        worker,
                        "a frame for the driver from a worker that is gone is dropped"
                    );
                }
            }
            Action::Write {
                conn,
                worker,
                message,
            } => {
                let mut frame = Vec::new();
                match prism_transport::encode_frame(&*message, &mut frame) {
                    Ok(()) if self.pass_here(conn, worker, &frame) => {}
                    Ok(()) => {
                        tracing::debug!(worker, "a message for a worker that is gone is dropped")
                    }
                    Err(e) => tracing::error!(worker, "cannot encode a message for a worker: {e}"),
                }
            }
            Action::Kill { conn, worker } => {
                if let Some(process) = self.processes.lock().get(&(conn, worker)) {
                    process.kill();
                }
            }
            Action::Pull {
                conn,
                job,
                id,
                len,
                from,
                setup,
            } => {
                let hosting = self.clone();
                tokio::spawn(async move {
                    let path = store::segment_path(&setup.store, id);
                    let result = match std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
                        true => Ok(false),
                        false => hosting
                            .peers
                            .pull_to_store(&job, from, &setup.store, id, len)
                            .await
                            .map(|()| true),
                    };
                    hosting.feed(Event::Pulled {
                        conn,
                        id,
                        len,
                        result,
                    });
                });
            }
            // Done while the core was locked (`drain_unlinking`); any other way here, now.
            Action::Unlink {
                setup, ids, pool, ..
            } => remove_copies(&self.name, &setup, ids, pool),
            Action::Files {
                conn,
                req,
                setup,
                work,
            } => {
                let (hosting, name) = (self.clone(), self.name.clone());
                // Copies of many megabytes: off the async threads, which beat to the head.
                tokio::task::spawn_blocking(move || {
                    let result = file_work(&name, &setup, work);
                    hosting.feed(Event::Performed { conn, req, result });
                });
            }
            Action::ForgetPeer { conn, req, at } => {
                let hosting = self.clone();
                tokio::spawn(async move {
                    hosting.peers.forget(at).await;
                    let result = Ok(());
                    hosting.feed(Event::Performed { conn, req, result });
                });
            }
            Action::EndJob {
                conn,
                job,
                why,
                workers,
                setup,
            } => {
                {
                    let mut processes = self.processes.lock();
                    for worker in workers {
                        if let Some(process) = processes.remove(&(conn, worker)) {
                            process.kill();
                        }
                    }
                }
                let _ = std::fs::remove_dir_all(&setup.store);
                let _ = std::fs::remove_dir_all(store::spill_dir_for(&setup.store));
                match why {
                    Ending::DriverLeft => {
                        tracing::info!(%job, "the driver left; its workers are stopped")
                    }
                    Ending::Drained => tracing::info!(
                        %job,
                        "the job left this draining node; its workers are stopped"
                    ),
                    Ending::LeaseEnded => tracing::warn!(
                        %job,
                        "no lease renewal from the driver: the job's workers are stopped"
                    ),
                    Ending::NoBinary => tracing::warn!(
                        %job,
                        "the job's binary could not be fetched: the job left this node"
                    ),
                    Ending::DaemonStops | Ending::Refused => {}
                }
            }
            Action::Tell { conn, event } => {
                let Some(connection) = self.connections.lock().get(&conn).cloned() else {
                    return;
                };
                let hosting = self.clone();
                tokio::spawn(async move {
                    if let HostEvent::Renew { seq } = event {
                        if ask_renewal(&connection, seq).await {
                            hosting.feed(Event::Renewed { conn, seq });
                        }
                    } else if let Ok(mut send) = connection.open_uni().await
                        && quic::send_frame(&mut send, &event).await.is_ok()
                    {
                        let _ = send.finish();
                    }
                });
            }
            Action::Close { conn, why, reason } => {
                tracing::warn!("{reason}");
                let code = match why {
                    Ending::LeaseEnded => quic::codes::LEASE_ENDED,
                    _ => quic::codes::REFUSED,
                };
                if let Some(connection) = self.connections.lock().get(&conn) {
                    quic::close_for(connection, code, &reason);
                }
            }
        }
    }

    /// Makes the job's object store; its executable is the cached binary of its hash (there
    /// now, or fetched before its first worker starts).
    fn prepare(&self, job: &str, start: &JobStart<SocketAddr>) -> Result<Arc<JobFiles>, String> {
        let exe = self.binaries.join(prism_transport::tls::hex(&start.binary));
        let store = store::create_session_dir()
            .map_err(|e| format!("cannot create the job's object store: {e}"))?;
        Ok(Arc::new(JobFiles {
            name: job.to_string(),
            exe,
            binary: start.binary,
            store,
            limits: StoreLimits {
                inline_threshold: start.inline_threshold,
                capacity: start.store_capacity,
            },
            fingerprint: crate::process::content_fingerprint(&start.binary),
            pool: Mutex::new(store::SegmentPool::new(start.store_capacity / 4)),
        }))
    }

    /// The cached binary of hash `hash`, if there is one with that content (checked once while
    /// the file stays the same).
    async fn cached(&self, hash: [u8; 32]) -> Option<PathBuf> {
        let path = self.binaries.join(prism_transport::tls::hex(&hash));
        let stamp = FileStamp::of(&path)?;
        if self.verified.lock().get(&hash) == Some(&stamp) {
            return Some(path);
        }
        let read = path.clone();
        let checked = tokio::task::spawn_blocking(move || {
            std::fs::read(&read).is_ok_and(|bytes| transfer::content_hash(&bytes) == hash)
        });
        if checked.await.unwrap_or(false) {
            self.verified.lock().insert(hash, stamp);
            return Some(path);
        }
        tracing::warn!(path = %path.display(), "a cached job binary does not match its hash; fetching it again");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// The executable of SHA-256 `hash`: from the cache, or pulled from the driver of job
    /// `job` at `from` and checked (a node's job runs it, as do the head's hosts of detached
    /// actors).
    pub(crate) async fn binary(
        &self,
        job: &str,
        hash: [u8; 32],
        size: u64,
        from: SocketAddr,
    ) -> Result<PathBuf, String> {
        let path = self.binaries.join(prism_transport::tls::hex(&hash));
        crate::files::private_dir_all(&self.binaries)
            .map_err(|e| format!("cannot use the binary cache: {e}"))?;
        // A cached copy runs only if it still has the content its name promises.
        if let Some(path) = self.cached(hash).await {
            return Ok(path);
        }
        let started = std::time::Instant::now();
        let connection = self.peers.get(from, job).await.map_err(|e| e.to_string())?;
        let linked = started.elapsed();
        let mut bytes = vec![0u8; size as usize];
        transfer::pull(&connection, &PullKey::Binary(hash), &mut bytes)
            .await
            .map_err(|e| format!("cannot fetch the job's binary from {from}: {e}"))?;
        let pulled = started.elapsed();
        // Named per fetch: two fetches of one binary at once (a job's and the head's host of
        // its detached actors, say) each write their own, and the second rename replaces the
        // first's file with the same bytes.
        static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let fetch = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("part{}-{fetch}", std::process::id()));
        let cached = path.clone();
        let stored = tokio::task::spawn_blocking(move || {
            if transfer::content_hash(&bytes) != hash {
                return Err(format!(
                    "the job's binary from {from} does not match its hash {}",
                    prism_transport::tls::hex(&hash[..8])
                ));
            }
            write_executable(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, &cached))
                .map_err(|e| format!("cannot cache the job's binary at {}: {e}", cached.display()))
        });
        stored
            .await
            .map_err(|e| format!("cannot check the job's binary: {e}"))??;
        if let Some(stamp) = FileStamp::of(&path) {
            self.verified.lock().insert(hash, stamp);
        }
        // Where a fetch's time goes (the connection, the pull, the check and write).
        let (link_ms, pull_ms) = (linked.as_millis(), (pulled - linked).as_millis());
        let store_ms = (started.elapsed() - pulled).as_millis();
        tracing::info!(%job, path = %path.display(), size, %from, link_ms, pull_ms, store_ms, "cached a job binary");
        Ok(path)
    }
}

/// Takes every action the core decided.
fn drain<P: Clone, S: Clone>(core: &mut Core<P, S>) -> Vec<Action<P, S>> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

/// Removes `ids` from the store of job `setup` on node `node` (`pool`: their segments may be
/// reused).
fn remove_copies(node: &str, setup: &JobFiles, ids: Vec<prism_graph::ObjectId>, pool: bool) {
    if let Err(e) = file_work(node, setup, FileWork::Free { ids, pool }) {
        tracing::warn!("cannot remove copies another node pulled: {e}");
    }
}

/// The core's actions for the shell to carry out once its lock is released, but for the
/// removals of copies, done here while the caller holds the lock: another thread's decision
/// taken after one (a pull of the same object, whose copy the pull would find still there
/// and answer "already here" to a reader that then finds it gone) is carried out after it.
/// An unlink costs microseconds on tmpfs.
fn drain_unlinking(
    node: &str,
    core: &mut Core<SocketAddr, Arc<JobFiles>>,
) -> Vec<Action<SocketAddr, Arc<JobFiles>>> {
    let mut rest = Vec::new();
    for action in drain(core) {
        match action {
            Action::Unlink {
                setup, ids, pool, ..
            } => remove_copies(node, &setup, ids, pool),
            other => rest.push(other),
        }
    }
    rest
}

/// Keeps the leases' time: hands the core its timeouts until the hosting goes.
async fn keep_time(hosting: Weak<Hosting>) {
    loop {
        let Some(strong) = hosting.upgrade() else {
            return;
        };
        let wake = strong.core.lock().poll_timeout();
        let timer = strong.timer.clone();
        let notified = timer.notified();
        let sleep = match wake {
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
            None => tokio::time::sleep(Duration::from_secs(3_600)),
        };
        drop(strong);
        tokio::select! {
            () = sleep => {}
            () = notified => {}
        }
        let Some(strong) = hosting.upgrade() else {
            return;
        };
        let (actions, jobs) = {
            let mut core = strong.core.lock();
            core.handle_timeout(Instant::now());
            let jobs: Vec<Arc<JobFiles>> = core.setups().cloned().collect();
            (drain_unlinking(&strong.name, &mut core), jobs)
        };
        strong.perform(actions);
        // Segments pooled for pulls that stopped coming go back to the machine, even while
        // the job frees nothing more.
        for job in jobs {
            job.pool.lock().expire(&job.store, super::POOL_IDLE);
        }
    }
}

/// A driver's request with its addresses parsed.
fn parse(request: ToHost) -> Result<Request<SocketAddr>, String> {
    let address = |at: &str, what: &str| {
        at.parse::<SocketAddr>()
            .map_err(|e| format!("bad {what} address {at:?}: {e}"))
    };
    Ok(match request {
        ToHost::StartJob {
            binary,
            size,
            objects_at,
            inline_threshold,
            store_capacity,
            lease_ms,
            task_events,
        } => Request::StartJob(JobStart {
            binary,
            size,
            from: address(&objects_at, "driver")?,
            inline_threshold,
            store_capacity,
            lease: Duration::from_millis(lease_ms),
            task_events: usize::try_from(task_events).unwrap_or(usize::MAX),
        }),
        ToHost::Spawn {
            worker,
            binary_from,
        } => Request::Spawn {
            worker,
            binary_from: (binary_from.as_deref())
                .map(|at| address(at, "binary holder"))
                .transpose()?,
        },
        ToHost::Kill { worker } => Request::Kill { worker },
        ToHost::Fetch { id, len, from } => Request::Fetch {
            id,
            len,
            from: address(&from, "holder")?,
        },
        ToHost::Free(ids) => Request::Free(ids),
        ToHost::Drop(ids) => Request::Drop(ids),
        ToHost::DropOwnedBy { owner, keep } => Request::DropOwnedBy { owner, keep },
        ToHost::ForgetPeer { at } => Request::ForgetPeer {
            at: address(&at, "peer")?,
        },
        ToHost::EndJob => Request::EndJob,
        ToHost::Spill(objects) => Request::Spill(objects),
        ToHost::Restore { id, len } => Request::Restore { id, len },
        ToHost::Grant { shape } => Request::Grant { shape },
        ToHost::Return { resources } => Request::Return { resources },
        ToHost::Pool {
            first,
            end,
            max_workers,
            elsewhere,
        } => Request::Pool {
            first,
            end,
            max_workers: max_workers as usize,
            elsewhere,
        },
        ToHost::LeaseWorker { beyond_cap } => Request::LeaseWorker { beyond_cap },
        ToHost::ReturnWorker { worker } => Request::ReturnWorker { worker },
        ToHost::KeepWorker { worker } => Request::KeepWorker { worker },
        ToHost::Peers { joined, left } => Request::Peers { joined, left },
    })
}

/// Does `work` on the files of `job` (node `node`).
fn file_work(node: &str, job: &JobFiles, work: FileWork) -> Result<(), String> {
    let files = store::ObjectFiles::new(job.store.clone(), 0);
    match work {
        FileWork::Free { ids, pool: false } => {
            for id in ids {
                store::unlink(&job.store, id);
                files.free_spilled(id);
            }
            Ok(())
        }
        FileWork::Free { ids, pool: true } => {
            let mut pool = job.pool.lock();
            pool.expire(&job.store, super::POOL_IDLE);
            for id in ids {
                if let Ok(meta) = std::fs::metadata(store::segment_path(&job.store, id)) {
                    pool.recycle(&job.store, id, meta.len(), None);
                }
                files.free_spilled(id);
            }
            Ok(())
        }
        FileWork::DropOwnedBy { owner, keep } => {
            store::unlink_owned_by(&job.store, owner, &keep);
            Ok(())
        }
        FileWork::Spill(objects) => {
            let mut failed = Vec::new();
            for (id, len) in objects {
                let spilled = store::Segment::open(&job.store, id, len)
                    .and_then(|segment| files.spill(id, &segment));
                if let Err(e) = spilled {
                    failed.push(format!("{id}: {e}"));
                }
            }
            match failed.is_empty() {
                true => Ok(()),
                false => Err(format!(
                    "node {node} cannot spill to {}: {}",
                    files.spill_dir.display(),
                    failed.join("; ")
                )),
            }
        }
        FileWork::Restore { id, len } => files
            .restore(id, len)
            .map(|_| ())
            .map_err(|e| format!("node {node}: object {id}: {e}")),
    }
}

/// Asks the driver on `connection` to renew the lease (ask number `seq`): true when it did.
async fn ask_renewal(connection: &quinn::Connection, seq: u64) -> bool {
    let Ok((mut send, mut recv)) = connection.open_bi().await else {
        return false;
    };
    if quic::send_frame(&mut send, &HostEvent::Renew { seq })
        .await
        .is_err()
    {
        return false;
    }
    let _ = send.finish();
    let mut decoder = FrameDecoder::new(1 << 10);
    let peer = connection.remote_address();
    if let Ok(Some(frame)) = quic::recv_frame(&mut recv, &mut decoder, peer).await
        && let Ok(ArchivedHostEvent::Renew { seq: answered }) = frame.access::<HostEvent>()
    {
        return answered.to_native() == seq;
    }
    false
}

/// Which file a path names and how it was last written: its device, inode, length and
/// modification time (a file replaced or rewritten has another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path`, if there is one.
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// Answers reads of the workers' logs kept on this host (`prism logs --node` from another
/// host), one request per stream, until the reader goes.
async fn serve_logs(connection: quinn::Connection) {
    let peer = connection.remote_address();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let request = match quic::read_request::<ToLogs>(&mut recv, peer, 1 << 16).await {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                return;
            }
        };
        let answered = tokio::task::spawn_blocking(move || super::output::answer_logs(request));
        let reply = answered
            .await
            .unwrap_or_else(|e| FromLogs::Error(format!("the read failed: {e}")));
        if quic::send_frame(&mut send, &reply).await.is_err() {
            break;
        }
        let _ = send.finish();
    }
}

/// The bytes of the files in `dir` (none: nothing).
fn files_bytes(dir: &Path) -> u64 {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Sends what worker `worker` writes to one of its pipes to the job's driver, in order on a
/// stream of its own (and keeps it in the worker's `log`), until the pipe ends (and reads to the end whatever happens to the
/// driver: a closed pipe would fail the worker's next print).
async fn relay_output(
    driver: quinn::Connection,
    worker: u64,
    stderr: bool,
    pipe: impl tokio::io::AsyncRead + Unpin,
    mut log: Option<std::fs::File>,
) {
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut stream: Option<Option<quinn::SendStream>> = None;
    while let Some(text) = super::output::next_batch(&mut reader).await {
        super::output::keep(&mut log, &text);
        if stream.is_none() {
            stream = Some(driver.open_uni().await.ok());
        }
        if let Some(Some(send)) = stream.as_mut() {
            let event = HostEvent::Output {
                worker,
                stderr,
                text,
            };
            if quic::send_frame(send, &event).await.is_err() {
                stream = Some(None);
            }
        }
    }
    if let Some(Some(mut send)) = stream {
        let _ = send.finish();
    }
}

/// Writes a new executable only this user can read or run.
fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    crate::files::private_options()
        .mode(0o700)
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(bytes)
}

impl Hosting {
    /// Starts worker `worker` of the job on `conn` from the job's binary (`own`: for a lease
    /// of the node's own, not at the driver's ask); a waiter thread tells the core when it
    /// ends.
    fn spawn(
        self: &Arc<Self>,
        conn: ConnId,
        job: &Arc<JobFiles>,
        worker: u64,
        own: bool,
    ) -> Result<u32, String> {
        let driver = self
            .connections
            .lock()
            .get(&conn)
            .cloned()
            .ok_or_else(|| format!("job {} has ended", job.name))?;
        // Its first frame: the identity of its direct endpoint (the node's), on the link only
        // it and this daemon hold; written before the relay starts, into an empty socket.
        let node = (self.peers.endpoint().local_addr())
            .map_err(|e| format!("this node's address: {e}"))?;
        let endpoint = ToWorker::Endpoint {
            identity: Secret(self.peers.identity().to_pem()),
            job: job.name.clone(),
            node: node.to_string(),
        };
        let mut first = Vec::new();
        prism_transport::encode_frame(&endpoint, &mut first)
            .map_err(|e| format!("cannot encode a worker's first frame: {e}"))?;
        let mut cmd = process::worker_command(&job.exe, worker, &job.store, job.limits);
        cmd.env(ENV_NODE_NAME, &self.name)
            .env(process::ENV_NODE_HOST, self.host.to_string())
            .env(process::ENV_DIRECT, "1")
            .env(ENV_JOB_FINGERPRINT, format!("{:x}", job.fingerprint));
        super::output::capture(&mut cmd);
        // The worker dies with the daemon (and is killed when its job's driver goes).
        let process::Linked {
            mut child,
            handle: process,
            link,
        } = process::spawn_linked(&mut cmd, None)
            .map_err(|e| format!("cannot start {}: {e}", job.exe.display()))?;
        let pid = process.pid();
        if let Err(e) = std::io::Write::write_all(&mut &link, &first) {
            // The process waits for that frame: it goes rather than wait in vain.
            process.kill();
            let _ = child.wait();
            return Err(format!("cannot give worker {worker} its first frame: {e}"));
        }
        self.processes
            .lock()
            .insert((conn, worker), Arc::new(process));
        let started = own.then_some(pid);
        self.relay_worker(&driver, (conn, &job.name), (worker, started), link);
        let pipes = super::output::pipes(&mut child);
        if !pipes.is_empty() {
            let mut logs = super::output::open_logs(&self.name, pid);
            for (stderr, pipe) in pipes {
                let log = logs[usize::from(stderr)].take();
                tokio::spawn(relay_output(driver.clone(), worker, stderr, pipe, log));
            }
        }
        let runtime = tokio::runtime::Handle::current();
        let (hosting, store) = (self.clone(), job.store.clone());
        std::thread::Builder::new()
            .name(format!("prism-wait-{worker}"))
            .spawn(move || {
                let reason = match child.wait() {
                    Ok(status) => worker_pool::describe_exit(status),
                    Err(e) => format!("cannot wait for the process: {e}"),
                };
                store::discard_fillings_of(&store, pid);
                hosting.processes.lock().remove(&(conn, worker));
                let reason = format!("{reason} (on node {})", hosting.name);
                let _entered = runtime.enter();
                hosting.feed(Event::WorkerExited {
                    conn,
                    worker,
                    reason,
                });
            })
            .map_err(|e| format!("cannot start a waiter thread: {e}"))?;
        Ok(pid)
    }
}

impl Hosting {
    /// Relays worker `worker`'s link to the job's driver on a QUIC stream of its own,
    /// announced by [`HostEvent::Relay`] with the worker's number, frame by frame: what the
    /// worker sends another worker of the job here (its leased worker, or the owner of the
    /// tasks it ran: [`crate::proto::relay`]) goes straight to that worker's link, and the
    /// driver's frames and the other workers' reach it whole, one after another.
    fn relay_worker(
        self: &Arc<Self>,
        driver: &quinn::Connection,
        (conn, job): (ConnId, &str),
        (worker, started): (u64, Option<u32>),
        link: std::os::unix::net::UnixStream,
    ) {
        let driver = driver.clone();
        let stream = link
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(link));
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!(%job, worker, "cannot relay a worker's link: {e}");
                return;
            }
        };
        let (frames, inbox) = mpsc::unbounded_channel();
        self.links.lock().insert((conn, worker), frames);
        let (up, ups) = mpsc::unbounded_channel();
        self.ups.lock().insert((conn, worker), up);
        let hosting = self.clone();
        let job = job.to_string();
        tokio::spawn(async move {
            let relayed = async {
                let (mut send, recv) = driver.open_bi().await?;
                quic::send_frame(&mut send, &HostEvent::Relay { worker, started })
                    .await
                    .map_err(std::io::Error::other)?;
                let (from_worker, to_worker) = stream.into_split();
                tokio::select! {
                    up = hosting.relay_up((conn, &job, worker), from_worker, ups, send) => up,
                    down = relay_down(recv, inbox, to_worker) => down,
                }
            };
            if let Err(e) = relayed.await {
                tracing::debug!(worker, "a worker relay ended: {e}");
            }
            hosting.links.lock().remove(&(conn, worker));
            hosting.ups.lock().remove(&(conn, worker));
        });
    }

    /// Takes what worker `worker` of job `job` (on `conn`) says that is the node's, not the
    /// driver's: the task events of the tasks it owns (for the head), and its lease asks,
    /// give-backs and forced cancels when the node grants them itself
    /// ([`crate::proto::pool`]). True when the frame stops here; a worker's blocking is seen
    /// and still goes on (the driver schedules the worker's own task).
    fn take_up(
        self: &Arc<Self>,
        conn: ConnId,
        job: &str,
        worker: u64,
        msg: &ArchivedToNode,
    ) -> bool {
        let peer_of = |at: &str| at.parse::<SocketAddr>().ok();
        self.decide(|core| core.take_up((job, conn), worker, msg, (Instant::now(), &peer_of)))
    }

    /// Passes worker `worker`'s frames on: to another worker of the job (here or on another
    /// node), or to the driver.
    async fn relay_up(
        self: &Arc<Self>,
        (conn, job, worker): (ConnId, &str, u64),
        mut from: tokio::net::unix::OwnedReadHalf,
        mut ups: mpsc::UnboundedReceiver<Vec<u8>>,
        mut to: quinn::SendStream,
    ) -> std::io::Result<()> {
        let mut decoder = FrameDecoder::new(prism_transport::DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        loop {
            let n = tokio::select! {
                read = from.read(decoder.spare(64 << 10)) => read?,
                Some(frame) = ups.recv() => {
                    to.write_all(&frame).await?;
                    continue;
                }
            };
            if n == 0 {
                let _ = to.finish();
                return Ok(());
            }
            decoder.advance(n);
            while let Some(frame) = decoder.next_frame().map_err(std::io::Error::other)? {
                let msg = frame.access::<ToNode>().map_err(std::io::Error::other)?;
                if self.take_up(conn, job, worker, msg) {
                    continue;
                }
                match relay::route(msg) {
                    Route::Node => {
                        // What the node decided to send for the worker before this frame
                        // came goes first (a forwarded ask before its give-back).
                        while let Ok(early) = ups.try_recv() {
                            out.extend_from_slice(&early);
                        }
                        encode_payload(frame.as_bytes(), &mut out).map_err(std::io::Error::other)?
                    }
                    Route::Worker { to, at, frame, .. } => {
                        self.pass_on(conn, job, worker, to, at, frame)
                    }
                    Route::Refused(reason) => {
                        tracing::error!("a worker's frame for another is refused: {reason}");
                    }
                }
            }
            if !out.is_empty() {
                to.write_all(&out).await?;
                out.clear();
            }
        }
    }
}

/// Writes the frames in `outbox` (encoded [`PeerFrame`]s) for job `job`'s workers on the node
/// at `node` to a stream of its own there, until the outbox closes or the stream fails.
async fn send_to_peer(
    hosting: &std::sync::Weak<Hosting>,
    node: SocketAddr,
    job: &str,
    mut outbox: mpsc::UnboundedReceiver<Vec<u8>>,
) -> Result<(), String> {
    let connection = {
        let Some(hosting) = hosting.upgrade() else {
            return Ok(());
        };
        let purpose = Purpose::Workers(job.to_string());
        let connect = hosting.peers.get_for(node, purpose);
        connect
            .await
            .map_err(|e| format!("cannot reach the node: {e}"))?
    };
    let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(first) = outbox.recv().await {
        out.extend_from_slice(&first);
        while let Ok(more) = outbox.try_recv() {
            out.extend_from_slice(&more);
        }
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        out.clear();
    }
    let _ = stream.finish();
    Ok(())
}

/// Writes the driver's frames and the other workers' to a worker's link, each whole.
async fn relay_down(
    mut from: quinn::RecvStream,
    mut others: mpsc::UnboundedReceiver<Vec<u8>>,
    mut to: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut decoder = FrameDecoder::new(prism_transport::DEFAULT_MAX_FRAME);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            read = from.read(decoder.spare(64 << 10)) => {
                let Some(n) = read.map_err(std::io::Error::other)? else {
                    return Ok(());
                };
                decoder.advance(n);
                while let Some(frame) = decoder.next_frame().map_err(std::io::Error::other)? {
                    encode_payload(frame.as_bytes(), &mut out).map_err(std::io::Error::other)?;
                }
            }
            Some(frame) = others.recv() => out.extend_from_slice(&frame),
        }
        if !out.is_empty() {
            to.write_all(&out).await?;
            out.clear();
        }
    }
}
