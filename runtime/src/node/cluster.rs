//! A driver joined to a running cluster (`PRISM_ADDRESS` or [`Config::address`]): instead of
//! starting a node of its own, it joins with the token (getting a certificate from the head),
//! asks the head for the live nodes and has each of them host the job: the node fetches the
//! driver's binary by content hash and runs the job's workers, whose links it relays to the
//! driver over mutual-TLS QUIC. The driver's core schedules onto those nodes as onto its own;
//! its endpoint serves the binary and the objects in the driver's store.
//!
//! [`Config::address`]: crate::Config::address

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use prism_graph::{ActorId, Resources, TaskSpec};
use prism_transport::quic::{self, Accepted};
use prism_transport::transfer;
use prism_transport::{
    ActorConfig, DetachedCreation, HeadOrder, OrderOutcome, OrderReply, Refusal,
};
use prism_transport::{ActorStatus, GroupStatus, JobInfo, JobUpdate};
use prism_transport::{ArchivedHostEvent, FromHost, HostEvent, HostHello, Purpose, ToControl};
use prism_transport::{
    FromControl, JobEvents, JobSummary, NodeStatus, NodeUse, PendingDemand, TaskInfo, TaskQuery,
    ToHost,
};

use super::Core;
use super::object_manager::{Peers, StoreSource, map_file};
use crate::config::Config;
use crate::proto::control::{self, HEAD_ANSWER, Members, ORDER_ANSWER};
use crate::proto::directory::Publisher;
use crate::proto::lease;
use crate::proto::node::foreign::Found;
use crate::proto::node::{ActorName, Unclaimed};
use crate::proto::nodes::node_of;
use crate::{Error, Result};

/// Largest answer a node or the head may send.
const MAX_ANSWER: usize = 16 << 20;

/// How long after a node refused to host the job it is asked again.
const ASK_AGAIN: Duration = Duration::from_secs(10);

/// How long the head may take to make a detached actor: it may fetch the binary, start the
/// process that hosts the binary's detached actors and wait for its join first.
const DETACHED_ANSWER: Duration = Duration::from_secs(60);

/// The pause before subscribing again once a subscription ended.
const RESUBSCRIBE: Duration = Duration::from_millis(200);

/// Why the driver could not ask the head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// The connection ended and connecting again failed.
    #[error("the head's connection ended ({ended}) and cannot be made again: {error}")]
    Reconnect {
        ended: quinn::ConnectionError,
        error: quic::QuicError,
    },
    /// The connection ended and the head does not answer a new one.
    #[error(
        "the head's connection ended ({ended}) and the head does not answer within {} ms",
        HEAD_ANSWER.as_millis()
    )]
    Unreachable { ended: quinn::ConnectionError },
    /// The head did not answer a request in time (its connection is then closed).
    #[error("the head did not answer in time ({} ms)", .0.as_millis())]
    Slow(Duration),
    /// The request or its answer failed.
    #[error(transparent)]
    Quic(#[from] quic::QuicError),
    /// The head answered with an error, or not with what was asked.
    #[error("the head refused: {0}")]
    Refused(String),
}

/// A node hosting the job.
#[derive(Debug)]
pub(crate) struct RemoteNode {
    pub(crate) name: String,
    /// Its QUIC endpoint (where its objects are served).
    pub(crate) addr: SocketAddr,
    pub(crate) total: Resources,
    /// Its daemon's start identity (a restarted daemon is another node for the job).
    boot: u64,
    connection: quinn::Connection,
    /// When the driver last received the node's ask to renew its lease on the job (or its
    /// answer to starting the job).
    renewed: Arc<parking_lot::Mutex<Instant>>,
    /// Its index and the core, once the core counts it (its streams are served from the
    /// moment it hosts the job).
    attached: Attached,
    /// The job gave up on it.
    lost: AtomicBool,
}

/// A node's index in the core and the core, once set.
type Attached = Arc<OnceLock<(usize, Weak<Core>)>>;

/// What a node needs to host the job, kept for the nodes that join later.
#[derive(Debug)]
struct Hosting {
    /// The start request (binary, where it is served, store limits, lease).
    start: ToHost,
    /// The job's content fingerprint (workers must match it).
    fingerprint: u64,
    lease: Duration,
}

/// How many nodes a joining driver asks to host its job at once. With 64, a first join of 80
/// nodes on 2 cores had 38 refusals (their pulls of the binary could not connect to the busy
/// driver within 2 s) and a cached one took 1.5 s; with 16, none and 0.8 s (BENCHMARKS.md).
const JOIN_AT_ONCE: usize = 16;

/// The driver's membership in a cluster.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The job's name: unique in the cluster.
    pub(crate) job: String,
    /// Where the driver serves its binary and objects.
    pub(crate) objects_at: SocketAddr,
    /// The nodes hosting the job, in the core's order (nodes that join are added at the end;
    /// lost ones stay, marked).
    nodes: parking_lot::RwLock<Vec<Arc<RemoteNode>>>,
    pub(crate) peers: Peers,
    /// The node on the driver's host, where its tasks go first.
    pub(crate) home: Option<usize>,
    /// The connection to the head's control store (made again when the head restarted).
    control: parking_lot::Mutex<quinn::Connection>,
    /// The head's address.
    head: SocketAddr,
    /// Whether the last report said something was waiting or in use.
    reported: std::sync::atomic::AtomicBool,
    /// The job's task events: a report is on its way (the next waits for its answer), and
    /// the summary the head has.
    events_sending: AtomicBool,
    events_sent: parking_lot::Mutex<Option<JobSummary>>,
    /// The control connection was made again (a restarted head, whose board is empty): the
    /// next report carries every record the table keeps.
    head_renewed: AtomicBool,
    /// What the head was told of the job's actors and placement groups.
    directory: Arc<parking_lot::Mutex<Publisher>>,
    /// The directory as it was when an update could not go (one was in flight): sent once
    /// that one is answered.
    unpublished: parking_lot::Mutex<Option<(Vec<ActorStatus>, Vec<GroupStatus>)>>,
    /// What a node that joins needs to host the job.
    hosting: Hosting,
    /// Nodes being asked to host the job now, and daemons that could not (asked again after
    /// [`ASK_AGAIN`]) with when, by address and boot.
    adding: parking_lot::Mutex<HashSet<(String, u64)>>,
    refused: parking_lot::Mutex<HashMap<(String, u64), Instant>>,
}

/// How long a node's lease on a job runs after its last renewal (`PRISM_LEASE_MS`, default
/// [`lease::LENGTH`]): a node cut off from the driver for that long stops the job's workers,
/// and the driver starts a lost node's actors elsewhere only after it.
fn lease_length() -> Duration {
    std::env::var("PRISM_LEASE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(lease::LENGTH, |ms| {
            lease::at_least_shortest(Duration::from_millis(ms))
        })
}

fn startup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Startup(format!("{what}: {e}"))
}

/// The address this host uses to reach `peer`.
fn local_ip_towards(peer: SocketAddr) -> Result<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = std::net::UdpSocket::bind(bind).map_err(startup("a local address"))?;
    socket
        .connect(peer)
        .map_err(startup("a route to the head"))?;
    Ok(socket
        .local_addr()
        .map_err(startup("a local address"))?
        .ip())
}

/// Joins the cluster `config` names and has its live nodes host this program's job.
pub(crate) async fn join(config: &Config, address: &str, store: PathBuf) -> Result<Joined> {
    let (head, token) =
        crate::session::head_and_token(Some(address), config.cluster_token().as_deref())
            .map_err(Error::Startup)?;
    let ip = local_ip_towards(head)?;
    let lease = lease_length();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let job = config.detached_host.clone().unwrap_or_else(|| {
        format!(
            "driver-{ip}-{}-{:x}",
            std::process::id(),
            nanos & 0xffff_ffff
        )
    });
    let client = quic::client_endpoint(SocketAddr::new(ip, 0)).map_err(startup("QUIC"))?;
    let identity = quic::join(&client, head, &token, &job)
        .await
        .map_err(|e| Error::Startup(format!("cannot join the cluster at {head}: {e}")))?;
    client.close(quic::codes::DONE, b"joined");
    let endpoint = quic::server_endpoint(SocketAddr::new(ip, 0), &identity)
        .map_err(startup("the driver's endpoint"))?;
    let objects_at = endpoint
        .local_addr()
        .map_err(startup("the driver's endpoint"))?;

    let hello = |purpose, fingerprint| HostHello::new(job.clone(), purpose, fingerprint);
    let (control, _) = quic::connect(&endpoint, head, &identity, &hello(Purpose::Control, None))
        .await
        .map_err(|e| Error::Startup(format!("cannot reach the head at {head}: {e}")))?;
    let table = match quic::ask::<_, FromControl>(&control, &ToControl::Status, MAX_ANSWER).await {
        Ok(FromControl::Status(nodes)) => nodes,
        Ok(other) => return Err(Error::Startup(format!("the head answered {other:?}"))),
        Err(e) => return Err(Error::Startup(format!("cannot read the node table: {e}"))),
    };

    // The running image itself, not the file its path names now: a node's binary cache
    // replaces a file with a fresh copy of the same bytes while a process started from the
    // first runs (a host of detached actors, whose own join then found no file at its path).
    let exe = std::path::Path::new("/proc/self/exe");
    let bytes = map_file(exe).map_err(startup("the program's executable"))?;
    let hash = transfer::content_hash(&bytes);
    crate::process::use_content_fingerprint(crate::process::content_fingerprint(&hash));
    let size = bytes.len() as u64;
    let binary = (hash, bytes);
    // Serve the binary before asking nodes to fetch it.
    let peers = Peers::new(job.clone(), quinn::Endpoint::clone(&endpoint), identity);
    tokio::spawn(serve_driver_endpoint(
        endpoint,
        job.clone(),
        Arc::new(StoreSource {
            store: Some(store),
            binary: Some(binary),
        }),
    ));
    let hosting = Hosting {
        start: ToHost::StartJob {
            binary: hash,
            size,
            objects_at: objects_at.to_string(),
            inline_threshold: config.inline_threshold_bytes() as u64,
            store_capacity: config.object_store_bytes(),
            lease_ms: lease.as_millis() as u64,
            task_events: config.task_events_capacity() as u64,
        },
        fingerprint: crate::process::fingerprint(),
        lease,
    };
    let mut nodes = Vec::new();
    let mut refusals = Vec::new();
    let mut refused = HashMap::new();
    // Every live node at once (a join took 0.4 s per node one after another: 31 s for 80),
    // answers kept in the table's order.
    let live: Vec<NodeStatus> = table
        .into_iter()
        .filter(|n| n.alive)
        .take(crate::proto::nodes::MAX_NODES)
        .collect();
    let asked = live
        .iter()
        .map(|status| host_job(&peers, &job, &hosting, status));
    let answers: Vec<_> = futures::stream::iter(asked)
        .buffered(JOIN_AT_ONCE)
        .collect()
        .await;
    for (status, answer) in live.into_iter().zip(answers) {
        match answer {
            Ok(node) => nodes.push(Arc::new(node)),
            Err(reason) => {
                tracing::warn!(node = status.name, "a node cannot host the job: {reason}");
                refusals.push(format!("{} at {}: {reason}", status.name, status.addr));
                refused.insert((status.addr, status.boot), Instant::now());
            }
        }
    }
    if nodes.is_empty() {
        return Err(Error::Startup(format!(
            "no node of the cluster at {head} can host the job: {}",
            if refusals.is_empty() {
                "the cluster has no live node".to_string()
            } else {
                refusals.join("; ")
            }
        )));
    }
    tracing::info!(job, nodes = nodes.len(), %head, "joined the cluster");
    let home = nodes.iter().position(|n| n.addr.ip() == ip);
    let info = JobInfo {
        driver: ip.to_string(),
        pid: std::process::id(),
        entry: command_line(),
        started_ms: unix_ms(),
    };
    Ok(Joined {
        directory: Arc::new(parking_lot::Mutex::new(Publisher::new(job.clone(), info))),
        unpublished: parking_lot::Mutex::new(None),
        job,
        objects_at,
        nodes: parking_lot::RwLock::new(nodes),
        peers,
        home,
        control: parking_lot::Mutex::new(control),
        head,
        reported: std::sync::atomic::AtomicBool::new(false),
        events_sending: AtomicBool::new(false),
        events_sent: parking_lot::Mutex::new(None),
        head_renewed: AtomicBool::new(false),
        hosting,
        adding: parking_lot::Mutex::new(HashSet::new()),
        refused: parking_lot::Mutex::new(refused),
    })
}

/// How long a stopping driver waits for the head to take its job's last update (a live head
/// answers within milliseconds; a dead one must not hold the driver's exit up).
const LAST_WORD: Duration = Duration::from_millis(500);

/// Runs `work` on `handle`'s runtime and waits for it at most `limit`, on a channel rather
/// than with `block_on` (which panics when a program stops Prism from inside an async runtime
/// of its own); work still going on after the limit is left to the runtime.
fn run_for_at_most(
    handle: &tokio::runtime::Handle,
    limit: Duration,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (done, wait) = std::sync::mpsc::channel();
    handle.spawn(async move {
        work.await;
        let _ = done.send(());
    });
    let _ = wait.recv_timeout(limit);
}

/// The driver's command line as `prism list jobs` shows it (its first 256 characters).
fn command_line() -> String {
    let line = std::env::args().collect::<Vec<_>>().join(" ");
    line.chars().take(256).collect()
}

/// The wall clock in milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    (crate::session::now_nanos() / 1_000_000) as u64
}

/// Has the node `status` describes host the job: connects with the job's hello, asks it to
/// start the job (it fetches the binary unless cached) and serves its streams from then on.
async fn host_job(
    peers: &Peers,
    job: &str,
    hosting: &Hosting,
    status: &NodeStatus,
) -> std::result::Result<RemoteNode, String> {
    let addr: SocketAddr = status
        .addr
        .parse()
        .map_err(|e| format!("bad address {:?}: {e}", status.addr))?;
    let hello = HostHello::new(
        job.to_string(),
        Purpose::Job(job.to_string()),
        Some(hosting.fingerprint),
    );
    let (connection, _) = quic::connect(peers.endpoint(), addr, peers.identity(), &hello)
        .await
        .map_err(|e| e.to_string())?;
    match quic::ask::<_, FromHost>(&connection, &hosting.start, MAX_ANSWER).await {
        Ok(FromHost::Done) => {}
        Ok(other) => return Err(describe(other)),
        Err(e) => return Err(e.to_string()),
    }
    let mut total = Resources::default();
    for (name, amount) in &status.total {
        total
            .set(name, *amount)
            .map_err(|e| format!("resource {name}: {e}"))?;
    }
    let renewed = Arc::new(parking_lot::Mutex::new(Instant::now()));
    let attached: Attached = Arc::new(OnceLock::new());
    tokio::spawn(serve_streams(NodeStreams {
        connection: connection.clone(),
        renewed: renewed.clone(),
        attached: attached.clone(),
        lease: hosting.lease,
    }));
    Ok(RemoteNode {
        name: status.name.clone(),
        addr,
        total,
        boot: status.boot,
        connection,
        renewed,
        attached,
        lost: AtomicBool::new(false),
    })
}

fn describe(reply: FromHost) -> String {
    match reply {
        FromHost::Error(reason) => reason,
        other => format!("unexpected answer {other:?}"),
    }
}

/// Serves pulls of the driver's binary and objects to the job's nodes; refuses everything else.
async fn serve_driver_endpoint(endpoint: quic::Server, job: String, source: Arc<StoreSource>) {
    while let Some(accepted) = quic::accept(&endpoint).await {
        let Accepted::Member(connection) = accepted else {
            continue;
        };
        let (job, source) = (job.clone(), source.clone());
        tokio::spawn(async move {
            let Ok(hello) = quic::welcome(&connection, &job, None).await else {
                return;
            };
            match hello.purpose {
                Purpose::Objects(of) if of == job => {
                    transfer::serve_pulls(connection, source).await;
                }
                other => quic::close_for(
                    &connection,
                    quic::codes::REFUSED,
                    &format!("the driver of {job} serves only its objects, not {other}"),
                ),
            }
        });
    }
}

impl Joined {
    /// Tells the control store what the job's tasks wait for and what they hold on each node
    /// (shown by `prism status`): each tick while there is something to say, and once more when
    /// there stops being anything.
    pub(crate) fn report(
        self: &Arc<Self>,
        pending: Vec<(Resources, u32, bool)>,
        used: Vec<(usize, Resources)>,
    ) {
        use std::sync::atomic::Ordering;
        let busy = !pending.is_empty() || !used.is_empty();
        if !busy && !self.reported.swap(false, Ordering::SeqCst) {
            return;
        }
        self.reported.store(busy, Ordering::SeqCst);
        let request = ToControl::Report {
            job: self.job.clone(),
            pending: pending
                .into_iter()
                .map(|(demand, count, infeasible)| PendingDemand {
                    job: self.job.clone(),
                    demand: demand.to_string(),
                    count,
                    infeasible,
                })
                .collect(),
            used: used
                .into_iter()
                .filter_map(|(idx, used)| {
                    Some(NodeUse {
                        addr: self.node(idx)?.addr.to_string(),
                        used: used
                            .iter()
                            .map(|(name, amount)| (name.to_string(), amount.as_f64()))
                            .collect(),
                    })
                })
                .collect(),
        };
        let joined = self.clone();
        tokio::spawn(async move {
            if let Err(e) = joined.ask_head(&request).await {
                tracing::debug!("cannot report the job's demand and use: {e}");
            }
        });
    }

    /// The records the head keeps of this job's tasks: those the job's workers own are
    /// reported by their nodes, not by this driver.
    pub(crate) async fn job_tasks(&self) -> std::result::Result<Vec<TaskInfo>, HeadError> {
        let query = TaskQuery {
            job: Some(self.job.clone()),
            ..TaskQuery::default()
        };
        match self.ask_head(&ToControl::Tasks(query)).await? {
            FromControl::Tasks { tasks, .. } => Ok(tasks.into_iter().map(|t| t.task).collect()),
            FromControl::Error(reason) => Err(HeadError::Refused(reason)),
            other => Err(HeadError::Refused(format!(
                "an answer of another kind: {other:?}"
            ))),
        }
    }

    /// Whether the head may be sent the next report of task events (the last one was
    /// answered).
    pub(crate) fn events_wanted(&self) -> bool {
        !self.events_sending.load(Ordering::SeqCst)
    }

    /// Whether the head was connected to again since the last call (then report every
    /// record again: a restarted head's board starts empty).
    pub(crate) fn head_renewed(&self) -> bool {
        let renewed = self.head_renewed.swap(false, Ordering::SeqCst);
        if renewed {
            *self.events_sent.lock() = None;
        }
        renewed
    }

    /// Sends the head `events` (nothing when no record and not the summary changed). Records
    /// a head that does not take are not sent again unless they change again.
    pub(crate) fn send_events(self: &Arc<Self>, events: JobEvents) {
        if events.tasks.is_empty() && self.events_sent.lock().as_ref() == Some(&events.summary) {
            return;
        }
        self.events_sending.store(true, Ordering::SeqCst);
        let joined = self.clone();
        tokio::spawn(async move {
            let summary = events.summary.clone();
            match joined.ask_head(&ToControl::Events(events)).await {
                Ok(FromControl::Ack) => *joined.events_sent.lock() = Some(summary),
                Ok(other) => tracing::debug!("the head did not take the task events: {other:?}"),
                Err(e) => tracing::debug!("cannot report the task events to the head: {e}"),
            }
            joined.events_sending.store(false, Ordering::SeqCst);
        });
    }

    /// Tells the head what changed in the job's actors and placement groups (each tick: it is
    /// also the job's sign of life; and as soon as a named actor changes), after the last
    /// update is answered if it is not yet.
    pub(crate) fn publish(self: &Arc<Self>, actors: Vec<ActorStatus>, groups: Vec<GroupStatus>) {
        let mut publisher = self.directory.lock();
        if publisher.in_flight() {
            *self.unpublished.lock() = Some((actors, groups));
            return;
        }
        let Some(update) = publisher.update(actors, groups, unix_ms(), false) else {
            return;
        };
        drop(publisher);
        let joined = self.clone();
        tokio::spawn(async move { joined.send_update(update).await });
    }

    /// The job's last word to the head: it ended. Waits for the answer at most [`LAST_WORD`]
    /// (a head that does not answer counts the job failed once the driver is silent).
    /// Its last task `events` go first.
    pub(crate) fn end(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
        actors: Vec<ActorStatus>,
        groups: Vec<GroupStatus>,
        events: JobEvents,
    ) {
        let update = self
            .directory
            .lock()
            .update(actors, groups, unix_ms(), true);
        let joined = self.clone();
        run_for_at_most(handle, LAST_WORD, async move {
            if let Err(e) = joined.ask_head(&ToControl::Events(events)).await {
                tracing::debug!("cannot report the last task events to the head: {e}");
            }
            if let Some(update) = update {
                joined.send_update(update).await;
            }
        });
    }

    /// Claims `name` for the job's actor `actor` at the head ([`ToControl::ClaimName`]).
    pub(crate) async fn claim_name(
        &self,
        name: &ActorName,
        actor: ActorId,
        class: String,
    ) -> std::result::Result<(), Unclaimed> {
        let claim = ToControl::ClaimName {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            actor,
            class,
        };
        match self.ask_head(&claim).await {
            Ok(FromControl::Ack) => Ok(()),
            Ok(FromControl::NameHeld { job }) => Err(Unclaimed::Held { job }),
            Ok(FromControl::Error(reason)) => Err(Unclaimed::Unanswered(reason)),
            Ok(other) => Err(Unclaimed::Unanswered(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(Unclaimed::Unanswered(e.to_string())),
        }
    }

    /// The job's actor `actor` died: its claim on `name` at the head goes
    /// ([`ToControl::ReleaseName`]; a claim left behind goes once the job's directory shows
    /// the actor dead).
    pub(crate) async fn release_name(&self, name: &ActorName, actor: ActorId) {
        let release = ToControl::ReleaseName {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            actor,
        };
        match self.ask_head(&release).await {
            Ok(FromControl::Ack) => {}
            Ok(other) => {
                tracing::debug!(actor = %actor, "the head did not release the name: {other:?}")
            }
            Err(e) => tracing::debug!(actor = %actor, "cannot release the name at the head: {e}"),
        }
    }

    /// Which actor of any job has `name` at the head ([`ToControl::FindName`]).
    pub(crate) async fn find_name(
        &self,
        name: &ActorName,
    ) -> std::result::Result<Option<Found>, String> {
        let find = ToControl::FindName {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
        };
        match self.ask_head(&find).await {
            Ok(FromControl::Found {
                job,
                actor,
                class,
                status,
            }) => Ok(Some(Found {
                job,
                actor,
                class,
                status,
            })),
            Ok(FromControl::NotFound) => Ok(None),
            Ok(FromControl::Error(reason)) => Err(reason),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Has the head make a detached actor ([`ToControl::CreateDetached`]): the job that
    /// hosts it and its id there, or why not.
    pub(crate) async fn create_detached(
        &self,
        spec: TaskSpec,
        setup: ActorConfig,
    ) -> std::result::Result<Found, Refusal> {
        let refused = |reason: String| Refusal::Detached {
            class: setup.class.clone(),
            reason,
        };
        let ToHost::StartJob {
            binary,
            size,
            objects_at,
            ..
        } = &self.hosting.start
        else {
            return Err(refused("the job was started without a binary".to_string()));
        };
        let creation = DetachedCreation {
            binary: *binary,
            size: *size,
            binary_from: objects_at.clone(),
            spec,
            setup: setup.clone(),
        };
        let request = ToControl::CreateDetached(Box::new(creation));
        match self.ask_head_within(&request, DETACHED_ANSWER).await {
            Ok(FromControl::Found {
                job,
                actor,
                class,
                status,
            }) => Ok(Found {
                job,
                actor,
                class,
                status,
            }),
            Ok(FromControl::NameHeld { job }) => Err(Refusal::NameTaken {
                name: setup.name.clone().unwrap_or_default(),
                namespace: setup.namespace.clone().unwrap_or_default(),
                holder: Some(job),
            }),
            Ok(FromControl::Error(reason)) => Err(refused(reason)),
            Ok(other) => Err(refused(format!("the head answered {other:?}"))),
            Err(e) => Err(refused(e.to_string())),
        }
    }

    /// The head's orders to this job, which hosts its binary's detached actors
    /// ([`ToControl::HostDetached`]).
    pub(crate) async fn detached_orders(&self) -> std::result::Result<Orders, String> {
        let ToHost::StartJob { binary, .. } = &self.hosting.start else {
            return Err("the job was started without a binary".to_string());
        };
        let request = ToControl::HostDetached { binary: *binary };
        Ok(Orders(self.subscribe(&request).await?))
    }

    /// Has the head kill job `job`'s actor `actor` ([`ToControl::KillActor`]): its driver
    /// kills it, or the head says why not.
    pub(crate) async fn kill_foreign(
        &self,
        job: &str,
        actor: ActorId,
    ) -> std::result::Result<(), HeadError> {
        let kill = ToControl::KillActor {
            job: job.to_string(),
            actor,
        };
        match self
            .ask_head_within(&kill, ORDER_ANSWER + HEAD_ANSWER)
            .await
        {
            Ok(FromControl::Ack) => Ok(()),
            Ok(FromControl::Error(reason)) => Err(HeadError::Refused(reason)),
            Ok(other) => Err(HeadError::Refused(format!("it answered {other:?}"))),
            Err(e) => Err(e),
        }
    }

    /// Follows job `job`'s actor `actor` in the head's directory, telling the core of each
    /// change as this job's `alias`, until the actor is dead or the driver stops (a broken
    /// subscription is made again).
    pub(crate) async fn watch_actor(
        self: Arc<Self>,
        alias: ActorId,
        job: String,
        actor: ActorId,
        core: Weak<Core>,
    ) {
        loop {
            let reason = self.watch_actor_once(alias, &job, actor, &core).await;
            match reason {
                None => return,
                Some(reason) => {
                    if core.strong_count() == 0 {
                        return;
                    }
                    tracing::debug!(actor = %actor, job, "the watch of another job's actor ended ({reason}): watching again");
                    tokio::time::sleep(RESUBSCRIBE).await;
                }
            }
        }
    }

    /// One watch of another job's actor; why it ended (`None`: the actor is dead, or the
    /// driver stopped).
    async fn watch_actor_once(
        &self,
        alias: ActorId,
        job: &str,
        actor: ActorId,
        core: &Weak<Core>,
    ) -> Option<String> {
        let watch = ToControl::WatchActor {
            job: job.to_string(),
            actor,
        };
        let mut stream = match self.subscribe(&watch).await {
            Ok(stream) => stream,
            Err(why) => return Some(why),
        };
        loop {
            let status = match stream.next().await {
                Ok(FromControl::ActorChanged(status)) => status,
                Ok(other) => return Some(format!("the head answered a watch with {other:?}")),
                Err(why) => return Some(why),
            };
            let dead = matches!(
                status.as_ref().map(|s| &s.state),
                Some(prism_transport::ActorState::Dead(_))
            );
            let core = core.upgrade()?;
            core.event(crate::proto::node::Event::ForeignChanged { alias, status });
            if dead {
                return None;
            }
        }
    }

    async fn send_update(&self, update: JobUpdate) {
        let seq = update.seq;
        let taken = match self.ask_head(&ToControl::Job(update)).await {
            Ok(FromControl::Ack) => true,
            Ok(other) => {
                tracing::debug!("the head did not take the job's update: {other:?}");
                false
            }
            Err(e) => {
                tracing::debug!("cannot update the job's directory at the head: {e}");
                false
            }
        };
        self.directory.lock().answered(seq, taken);
        let unpublished = self.unpublished.lock().take();
        if let Some((actors, groups)) = unpublished {
            let update = self
                .directory
                .lock()
                .update(actors, groups, unix_ms(), false);
            if let Some(update) = update {
                Box::pin(self.send_update(update)).await;
            }
        }
    }

    /// Leaves the cluster: closing the connections makes every node stop the job's workers.
    /// Waits (at most [`LAST_WORD`]) for the closes to be sent, on the runtime's thread: a
    /// program may stop Prism from inside an async runtime of its own, where `block_on` panics.
    pub(crate) fn leave(&self, handle: &tokio::runtime::Handle) {
        let endpoint = self.peers.endpoint().clone();
        run_for_at_most(handle, LAST_WORD, async move {
            quic::close_endpoint(&endpoint, quic::codes::DONE, b"the driver left").await;
        });
    }

    /// Gives up on node `idx`: closing the job's connection makes it stop the job's workers
    /// there, should it still be running.
    pub(crate) fn drop_node(self: &Arc<Self>, idx: usize, reason: &str) {
        if let Some(node) = self.node(idx) {
            node.lost.store(true, Ordering::SeqCst);
            quic::close_for(&node.connection, quic::codes::DONE, reason);
            let (joined, addr) = (self.clone(), node.addr);
            tokio::spawn(async move { joined.peers.forget(addr).await });
        }
    }

    /// The connection to the head's control store, made again first if it ended (a restarted
    /// head); a head that does not answer within [`HEAD_ANSWER`] is not reached.
    async fn control(&self) -> std::result::Result<quinn::Connection, HeadError> {
        let control = self.control.lock().clone();
        let Some(ended) = control.close_reason() else {
            return Ok(control);
        };
        let hello = HostHello::new(self.job.clone(), Purpose::Control, None);
        let identity = self.peers.identity();
        let connect = quic::connect(self.peers.endpoint(), self.head, identity, &hello);
        let fresh = match tokio::time::timeout(HEAD_ANSWER, connect).await {
            Ok(Ok((fresh, _))) => fresh,
            Ok(Err(error)) => return Err(HeadError::Reconnect { ended, error }),
            Err(_) => return Err(HeadError::Unreachable { ended }),
        };
        tracing::info!(head = %self.head, "connected to the head again");
        *self.control.lock() = fresh.clone();
        self.head_renewed.store(true, Ordering::SeqCst);
        Ok(fresh)
    }

    /// Asks the head's control store (see [`Joined::control`]).
    async fn ask_head(&self, request: &ToControl) -> std::result::Result<FromControl, HeadError> {
        self.ask_head_within(request, HEAD_ANSWER).await
    }

    /// [`Joined::ask_head`], for a request the head may take up to `limit` to answer.
    async fn ask_head_within(
        &self,
        request: &ToControl,
        limit: Duration,
    ) -> std::result::Result<FromControl, HeadError> {
        let control = self.control().await?;
        // A head that died says nothing: a request it does not answer in time ends the
        // connection, and the next one connects again.
        let asked = quic::ask::<_, FromControl>(&control, request, MAX_ANSWER);
        match tokio::time::timeout(limit, asked).await {
            Ok(answer) => Ok(answer?),
            Err(_) => {
                let error = HeadError::Slow(limit);
                quic::close_for(&control, quic::codes::DONE, &error.to_string());
                Err(error)
            }
        }
    }

    /// Until when node `idx` may still run the job's processes on its own: the end of its
    /// lease as the driver counts it (see [`lease::driver_end`]).
    pub(crate) fn lease_end(&self, idx: usize) -> Instant {
        match self.node(idx) {
            Some(node) => lease::driver_end(*node.renewed.lock(), self.hosting.lease),
            None => Instant::now(),
        }
    }

    /// Node `idx` (the core's index).
    pub(crate) fn node(&self, idx: usize) -> Option<Arc<RemoteNode>> {
        self.nodes.read().get(idx).cloned()
    }

    /// Every node that hosted the job so far, in the core's order.
    pub(crate) fn nodes(&self) -> Vec<Arc<RemoteNode>> {
        self.nodes.read().clone()
    }

    /// Where node `idx` serves its objects.
    pub(crate) fn addr_of(&self, idx: usize) -> Option<SocketAddr> {
        self.nodes.read().get(idx).map(|n| n.addr)
    }

    /// Counts a node that joined (after the core did); returns its index.
    pub(crate) fn push_node(&self, node: Arc<RemoteNode>) -> usize {
        let mut nodes = self.nodes.write();
        nodes.push(node);
        nodes.len() - 1
    }

    /// Sends `request` to node `idx` on a stream of its own, and returns (without waiting)
    /// how to read its answer: requests sent one after another reach the node in that order.
    pub(crate) async fn send_request(
        &self,
        idx: usize,
        request: &ToHost,
    ) -> std::result::Result<
        impl std::future::Future<Output = std::result::Result<FromHost, String>> + use<>,
        String,
    > {
        let node = self.node(idx).ok_or_else(|| format!("no node {idx}"))?;
        let (connection, name) = (
            node.connection.clone(),
            format!("node {} at {}", node.name, node.addr),
        );
        match quic::send_request(&connection, request).await {
            Ok(recv) => Ok(async move {
                let peer = connection.remote_address();
                let answer = quic::read_answer::<FromHost>(recv, peer, MAX_ANSWER).await;
                answer.map_err(|e| format!("{name}: {e}"))
            }),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }

    /// Follows the node table for the core: subscribes to the head's membership changes
    /// ([`ToControl::Watch`]) and compares each new copy with the job's nodes. A node the head
    /// counts dead is lost to the job at once, even while its connection still waits out QUIC's
    /// idle timeout (a killed host sends nothing). A head silent for [`control::HEAD_SILENCE`] is
    /// connected to again, and the subscription made anew.
    pub(crate) fn follow_members(self: &Arc<Self>, core: Weak<Core>) {
        let joined = self.clone();
        tokio::spawn(async move {
            let mut members = Members::default();
            loop {
                let reason = joined.watch_members(&mut members, &core).await;
                if core.strong_count() == 0 {
                    return;
                }
                tracing::debug!(
                    "the node table's subscription ended ({reason}): subscribing again"
                );
                tokio::time::sleep(RESUBSCRIBE).await;
            }
        });
    }

    /// Takes the head's orders to this job ([`ToControl::TakeOrders`]) for the core while it
    /// runs: a kill of one of its actors that another job or `prism kill` asked for. A
    /// stream that ends (the head restarted) is opened again.
    pub(crate) fn follow_orders(self: &Arc<Self>, core: Weak<Core>) {
        let joined = self.clone();
        tokio::spawn(async move {
            loop {
                let why = match joined.subscribe(&ToControl::TakeOrders).await {
                    Ok(stream) => obey(Orders(stream), &core).await,
                    Err(why) => why,
                };
                if core.strong_count() == 0 {
                    return;
                }
                tracing::debug!("the head's orders stopped ({why}): asking again");
                tokio::time::sleep(RESUBSCRIBE).await;
            }
        });
    }

    /// One subscription to the node table, until it ends; returns why.
    async fn watch_members(self: &Arc<Self>, members: &mut Members, core: &Weak<Core>) -> String {
        let mut stream = match self.subscribe(&members.watch()).await {
            Ok(stream) => stream,
            Err(why) => return why,
        };
        loop {
            match stream.next().await {
                Ok(FromControl::Members(update)) => members.apply(update),
                Ok(other) => return format!("the head answered a subscription with {other:?}"),
                Err(why) => return why,
            }
            let Some(core) = core.upgrade() else {
                return "the driver stopped".to_string();
            };
            self.follow_membership(&core, &members.table());
        }
    }

    /// A subscription to the head on a stream of its own (`request`: what to follow).
    async fn subscribe(&self, request: &ToControl) -> std::result::Result<HeadStream, String> {
        let control = self.control().await.map_err(|e| e.to_string())?;
        let (mut send, recv) = (control.open_bi().await)
            .map_err(|e| format!("cannot open a stream to the head: {e}"))?;
        quic::send_frame(&mut send, request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(HeadStream {
            peer: control.remote_address(),
            control,
            send,
            recv,
            decoder: prism_transport::FrameDecoder::new(MAX_ANSWER),
        })
    }

    /// Compares the node table with the job's nodes: a node the table counts dead, or whose
    /// daemon was replaced, is lost to the job; a draining one gets no new work; a live node
    /// the job does not use yet (one that joined, or a restarted one) is asked to host it.
    fn follow_membership(self: &Arc<Self>, core: &Arc<Core>, table: &[NodeStatus]) {
        let ours = self.nodes();
        for (idx, node) in ours.iter().enumerate() {
            if node.lost.load(Ordering::SeqCst) {
                continue;
            }
            let addr = node.addr.to_string();
            let reason = match table.iter().find(|s| s.addr == addr) {
                Some(s) if s.boot != node.boot => "its daemon was restarted".to_string(),
                Some(s) if !s.alive => format!(
                    "the control store has not heard from it for {} ms",
                    s.last_seen_ms
                ),
                Some(s) if s.draining => {
                    core.node_draining(idx, "it is stopping (prism stop or prism drain)".into());
                    continue;
                }
                Some(_) => continue,
                None => "the control store no longer lists it".to_string(),
            };
            core.node_lost(idx, reason, self.lease_end(idx));
        }
        for status in table.iter().filter(|s| s.alive && !s.draining) {
            let key = (status.addr.clone(), status.boot);
            let used = ours.iter().any(|n| {
                !n.lost.load(Ordering::SeqCst)
                    && n.boot == status.boot
                    && n.addr.to_string() == status.addr
            });
            // A refusal may pass (the node still ending the job's last run there): asked again
            // after a while.
            let refused_lately = self
                .refused
                .lock()
                .get(&key)
                .is_some_and(|at| at.elapsed() < ASK_AGAIN);
            if used || refused_lately || !self.adding.lock().insert(key) {
                continue;
            }
            let (joined, status, core) = (self.clone(), status.clone(), Arc::downgrade(core));
            tokio::spawn(async move { joined.add_node(status, core).await });
        }
    }

    /// Has a node that joined the cluster host the job, and the core use it.
    async fn add_node(self: Arc<Self>, status: NodeStatus, core: Weak<Core>) {
        let key = (status.addr.clone(), status.boot);
        let hosted = host_job(&self.peers, &self.job, &self.hosting, &status).await;
        let added = match (hosted, core.upgrade()) {
            (Ok(node), Some(core)) => {
                let node = Arc::new(node);
                match core.node_joined(&self, node.clone()) {
                    Some(idx) => {
                        self.watch(idx, Arc::downgrade(&core));
                        Ok(idx)
                    }
                    None => {
                        let why = "the driver cannot number more nodes";
                        quic::close_for(&node.connection, quic::codes::DONE, why);
                        Err(why.to_string())
                    }
                }
            }
            (Ok(node), None) => {
                quic::close_for(&node.connection, quic::codes::DONE, "the driver stopped");
                return;
            }
            (Err(reason), _) => Err(reason),
        };
        match added {
            Ok(idx) => tracing::info!(node = status.name, idx, "a node joined the job"),
            Err(reason) => {
                tracing::warn!(
                    node = status.name,
                    "a node that joined cannot host the job: {reason}"
                );
                self.refused.lock().insert(key.clone(), Instant::now());
            }
        }
        self.adding.lock().remove(&key);
    }

    /// Listens to node `idx` for the core: relayed worker links (served since the join, see
    /// [`serve_streams`]), worker exits and output, and the end of the node.
    pub(crate) fn watch(self: &Arc<Self>, idx: usize, core: Weak<Core>) {
        let Some(node) = self.node(idx) else {
            return;
        };
        let connection = node.connection.clone();
        let _ = node.attached.set((idx, core.clone()));
        if let Some(reason) = connection.close_reason()
            && let Some(core) = core.upgrade()
        {
            core.node_lost(idx, reason.to_string(), self.lease_end(idx));
        }
        tokio::spawn(async move {
            while let Ok(recv) = connection.accept_uni().await {
                // A stream of a worker's output lasts as long as the worker.
                tokio::spawn(node_events(recv, connection.clone(), idx, core.clone()));
            }
        });
    }
}

/// Reads the events on one stream node `idx` opened: a worker's exit, or what a worker of
/// the node printed (frame after frame, until the stream ends).
async fn node_events(
    mut recv: quinn::RecvStream,
    connection: quinn::Connection,
    idx: usize,
    core: Weak<Core>,
) {
    let peer = connection.remote_address();
    let mut decoder = prism_transport::FrameDecoder::new(64 << 10);
    loop {
        let event = match quic::recv_frame(&mut recv, &mut decoder, peer).await {
            Ok(Some(frame)) => quic::decode::<HostEvent>(&frame, peer),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let Some(core) = core.upgrade() else { return };
        match event {
            Ok(HostEvent::WorkerExited { worker, reason }) => {
                core.worker_gone_remote(worker, reason);
            }
            Ok(HostEvent::Reclaim { keep }) => core.node_reclaims(idx, keep),
            Ok(HostEvent::Output {
                worker,
                stderr,
                text,
            }) if node_of(worker) == idx => core.worker_output(stderr, &text),
            Ok(other) => {
                tracing::warn!(%peer, "an event the node may not send here: {other:?}");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, "a bad event from the node: {e}");
                return;
            }
        }
    }
}

/// What a node's stream loop shares with the driver.
struct NodeStreams {
    connection: quinn::Connection,
    renewed: Arc<parking_lot::Mutex<Instant>>,
    attached: Attached,
    lease: Duration,
}

/// Serves the streams node `idx` opens, from the moment it hosts the job: lease renewals
/// (answered at once, so that a long join does not let a lease run out) and relayed worker
/// links (handed to the core, which exists before any worker is started). When the
/// connection ends, the core loses the node.
async fn serve_streams(node: NodeStreams) {
    let NodeStreams {
        connection,
        renewed,
        attached,
        lease,
    } = node;
    let peer = connection.remote_address();
    loop {
        let (mut send, mut recv) = match connection.accept_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                if let Some((idx, core)) = attached.get()
                    && let Some(core) = core.upgrade()
                {
                    let lease_end = lease::driver_end(*renewed.lock(), lease);
                    core.node_lost(*idx, e.to_string(), lease_end);
                }
                return;
            }
        };
        let mut decoder = prism_transport::FrameDecoder::new(1 << 10);
        let first = match quic::recv_frame(&mut recv, &mut decoder, peer).await {
            Ok(Some(frame)) => match frame.access::<HostEvent>() {
                Ok(ArchivedHostEvent::Relay { worker, started }) => {
                    Ok((worker.to_native(), started.as_ref().map(|p| p.to_native())))
                }
                Ok(ArchivedHostEvent::Renew { seq }) => Err(Some(seq.to_native())),
                _ => Err(None),
            },
            _ => Err(None),
        };
        let relayed = match first {
            Ok(worker) => Some(worker),
            Err(Some(seq)) => {
                // Renewed from the moment the ask arrived, answered off the core.
                *renewed.lock() = Instant::now();
                tokio::spawn(async move {
                    if quic::send_frame(&mut send, &HostEvent::Renew { seq })
                        .await
                        .is_ok()
                    {
                        let _ = send.finish();
                    }
                });
                continue;
            }
            Err(None) => None,
        };
        // A node relays only the workers it was asked to start (after the core counts it).
        let Some((idx, core)) = attached.get() else {
            let why = "a worker's relay before the driver started any";
            quic::close_for(&connection, quic::codes::BAD_FRAME, why);
            continue;
        };
        let Some((worker, started)) = relayed.filter(|&(w, _)| node_of(w) == *idx) else {
            let why = "expected the relay of one of this node's workers";
            quic::close_for(&connection, quic::codes::BAD_FRAME, why);
            continue;
        };
        let early = decoder.take_buffered();
        let Some(core) = core.upgrade() else {
            return;
        };
        if let Some(pid) = started
            && let Err(refused) = core.node_started_worker(*idx, worker, pid)
        {
            tracing::error!(
                worker,
                "refused the link of a worker a node started: {refused}"
            );
            continue;
        }
        core.relayed_worker(send, recv, early, worker);
    }
}

/// A subscription to the head's control store on a stream of its own (see
/// [`Joined::subscribe`]): what the head writes on it, answer by answer.
#[derive(Debug)]
struct HeadStream {
    control: quinn::Connection,
    peer: SocketAddr,
    /// Kept open while the subscription lasts (a host of detached actors answers on it).
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: prism_transport::FrameDecoder,
}

/// The head's orders to this job's driver (a host of its binary's detached actors, or any
/// job: [`ToControl::TakeOrders`]), and its answers.
#[derive(Debug)]
pub(crate) struct Orders(HeadStream);

impl Orders {
    /// The head's next order (its keepalives skipped), or why none comes.
    pub(crate) async fn next(&mut self) -> std::result::Result<HeadOrder, String> {
        loop {
            match self.0.next().await? {
                FromControl::Order(order) => return Ok(order),
                FromControl::Ack => {}
                FromControl::Error(reason) => return Err(reason),
                other => return Err(format!("the head sent {other:?} for an order")),
            }
        }
    }

    /// Answers an order.
    pub(crate) async fn reply(&mut self, reply: &OrderReply) -> std::result::Result<(), String> {
        quic::send_frame(&mut self.0.send, reply)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Obeys the head's orders to an ordinary job on `orders` until the stream ends or the
/// driver stops; returns why.
async fn obey(mut orders: Orders, core: &Weak<Core>) -> String {
    loop {
        let order = match orders.next().await {
            Ok(order) => order,
            Err(why) => return why,
        };
        let Some(core) = core.upgrade() else {
            return "the driver stopped".to_string();
        };
        let (order, outcome) = match order {
            HeadOrder::Kill { order, actor } => (order, core.kill_ordered(actor)),
            HeadOrder::Create { order, .. } => (
                order,
                OrderOutcome::Failed("this job hosts no detached actors".to_string()),
            ),
            HeadOrder::Start { .. } | HeadOrder::Stop => continue,
        };
        drop(core);
        if let Err(why) = orders.reply(&OrderReply { order, outcome }).await {
            return why;
        }
    }
}

impl HeadStream {
    /// The head's next answer, or why none comes: it ended the stream, or went silent for
    /// [`control::HEAD_SILENCE`] (its connection is closed then: the next request connects
    /// again).
    async fn next(&mut self) -> std::result::Result<FromControl, String> {
        let heard = tokio::time::timeout(
            control::HEAD_SILENCE,
            quic::recv_frame(&mut self.recv, &mut self.decoder, self.peer),
        );
        let frame = match heard.await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Err("the head ended it".to_string()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                let why = "the head went silent";
                quic::close_for(&self.control, quic::codes::DONE, why);
                return Err(format!(
                    "{why} for {} ms",
                    control::HEAD_SILENCE.as_millis()
                ));
            }
        };
        quic::decode::<FromControl>(&frame, self.peer).map_err(|e| e.to_string())
    }
}
