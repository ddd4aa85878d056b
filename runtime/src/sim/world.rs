//! The simulated world: one event queue ordered by (simulated time, sequence), the driver's
//! node and the head as the real protocol core, and everything else (node daemons, workers,
//! links) as small models.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant};

use prism_graph::{
    ActorId, Arg, IdMap, IdSet, ObjectId, Resources, TaskError, TaskId, TaskKind, TaskSpec,
};
use prism_transport::{
    ActorStatus, ArchivedToWorker, DEFAULT_MAX_FRAME, Frame, FrameDecoder, FromControl,
    GroupStatus, Outcome, PullStats, ToControl, ToNode, ToWorker, Value,
};

use super::{Config, NESTED_PARENTS, Report, Workload};
use crate::proto::control::{
    self, ControlStore, HEAD_ANSWER, HEAD_SILENCE, Members, SILENCE_CHECK,
};
use crate::proto::directory::Publisher;
use crate::proto::driver_link::{Lane, Merge, Way, lane_of_archived};
use crate::proto::host::{
    self, Action as HostAction, ConnId, Ending, Event as HostEvent, FileWork, JobStart, ReqId,
};
use crate::proto::lease;
use crate::proto::node::{Action, DRIVER_OWNER, Event, HostRequest, State, soft_limit_of};
use crate::proto::nodes::{NodeIdx, Nodes, node_of};

/// A host of the simulated cluster (its index in `World::hosts`; the job numbers the nodes it
/// uses with `NodeIdx`, a host that joins again gets a new one).
type HostIdx = usize;

/// A node daemon's books of the jobs it hosts: the real daemon's, with the peers it pulls from
/// named by host (`None`: the driver) and nothing made for a job (no files here).
type HostCore = host::Hosting<Option<HostIdx>, ()>;

/// A driver of the simulated cluster, and its job (their index in `World::jobs`).
type JobIdx = usize;

/// A worker process: its job's number for it, which only that job's numbering makes unique.
type Wid = (JobIdx, WorkerId);

/// The number of job `j`'s connection `epoch` to a node (unique on the node).
fn conn_id(j: JobIdx, epoch: u64) -> ConnId {
    (epoch << 16) | j as u64
}

/// The job whose connection is `conn`.
fn job_of(conn: ConnId) -> JobIdx {
    (conn & 0xffff) as JobIdx
}

/// The resources a node's daemon says it has (and grants to jobs): its CPUs, or what it
/// claims ([`Config::advertised_cpus`]); for [`Workload::Pipeline`], as many [`READ`] slots.
fn advertised(config: &Config) -> Resources {
    let told = config.advertised_cpus.unwrap_or(config.cpus);
    let mut resources = Resources::cpus(f64::from(told)).expect("a whole number of CPUs");
    if config.workload == Workload::Pipeline {
        resources
            .set(READ, f64::from(told))
            .expect("a whole number of slots");
    }
    resources
}

/// The custom resource the readers of [`Workload::Pipeline`] take besides their CPU, one each
/// (every node has one per CPU): a shape of their own, leased apart from the tasks that make
/// the values they read.
const READ: &str = "sim_read";

/// A node daemon's books, named `name`: its pool's workers have direct endpoints when the
/// simulation says so ([`Config::direct`]).
fn new_host_core(name: String, config: &Config) -> HostCore {
    let core = HostCore::new(name, advertised(config));
    match direct_links(config) {
        true => core.with_direct_links(),
        false => core,
    }
}

/// Whether workers talk to the workers leased to them on other nodes over direct links.
fn direct_links(config: &Config) -> bool {
    config.direct && config.pools && config.owners
}

/// The direct endpoint of simulated worker `worker`, as its hello names it.
fn endpoint_of(worker: Wid) -> String {
    format!("sim-endpoint:{}:{}", worker.0, worker.1)
}

/// The worker whose endpoint is `endpoint` ([`endpoint_of`]).
fn worker_at(endpoint: &str) -> Option<Wid> {
    let rest = endpoint.strip_prefix("sim-endpoint:")?;
    let (job, worker) = rest.split_once(':')?;
    Some((job.parse().ok()?, worker.parse().ok()?))
}

/// The driver's direct endpoint, as its links' hellos and its word through the nodes name it.
const DRIVER_ENDPOINT: &str = "sim-endpoint:driver";

/// A node's lease when leases are off ([`super::Config::fencing`]): longer than any run.
const NO_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);
/// A frame one worker sends another through their node's daemon: two Unix-socket hops and
/// the daemon's read of the frame.
const LOCAL_RELAY: Duration = Duration::from_micros(20);
use crate::proto::owner::Slot;
use crate::proto::relay::{Kind, Route};
use crate::proto::scheduler::WorkerId;
use crate::proto::worker::{DirectTo, Ended as RunEnd, Stop, Worker};
use crate::rng::Rng;
use crate::store::ObjectBytes;

/// Values at least this large live in a node's store; smaller ones travel inline (as a real
/// worker decides).
const INLINE_LIMIT: u64 = 100 << 10;

/// How long a worker process takes from its spawn to its hello.
const WORKER_START: Duration = Duration::from_millis(20);

/// How often the driver's node ticks and reads the head's node table.
const TICK: Duration = Duration::from_secs(1);

/// How often the simulated driver looks whether its objects are done.
const PROBE: Duration = Duration::from_millis(50);

/// How long the world runs on after the driver released everything, before the stores must
/// be empty.
const QUIESCE: Duration = Duration::from_secs(5);

/// How long a draining node waits for its jobs to let it go before it ends them.
/// Messages of at least this many bytes queue for their sender's link (see `World::arrival`).
const BULK: u64 = 64 << 10;
const DRAIN_GRACE: Duration = crate::proto::control::DRAIN_GRACE;

/// Durations drawn from a run's random source.
trait Between {
    /// Uniform in `[from, to)`.
    fn between(&mut self, from: Duration, to: Duration) -> Duration;
}

impl Between for Rng {
    fn between(&mut self, from: Duration, to: Duration) -> Duration {
        let span = to.saturating_sub(from).as_nanos() as u64;
        from + Duration::from_nanos(self.below(span))
    }
}

/// An end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    Driver(JobIdx),
    Head,
    Node(NodeIdx),
}

/// The peer address a simulated host's daemon is known by (the driver's leases on other
/// nodes name it; the simulated daemons route by the worker's node instead).
fn peer_address(host: HostIdx) -> String {
    format!("sim-host-{host}")
}

/// The simulated host a peer address names (see [`peer_address`]).
fn host_of_address(address: &str) -> Option<HostIdx> {
    address.strip_prefix("sim-host-")?.parse().ok()
}

/// The simulated host a worker's frame names by its peer address, as the daemon reads it
/// (the pulls of its arguments and values).
fn peer_of(address: &str) -> Option<Option<HostIdx>> {
    host_of_address(address).map(Some)
}

/// A fault, injected at its time.
#[derive(Debug, Clone)]
enum Fault {
    KillNode {
        node: NodeIdx,
        restart_after: Duration,
    },
    KillWorker {
        node: NodeIdx,
    },
    Impair {
        node: NodeIdx,
        how: Impairment,
        lasting: Duration,
    },
    KillHead {
        restart_after: Duration,
    },
    /// `prism stop` on a node: it drains, leaves, and is started again later.
    DrainNode {
        node: NodeIdx,
        restart_after: Duration,
    },
}

/// How a fault impairs a node for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impairment {
    /// Nothing reaches it or leaves it (held until it heals, or dropped with its connection).
    Partition,
    /// Its processes stop (as SIGSTOP): no heartbeats, no progress.
    Freeze,
    /// Its links carry a tenth of their bandwidth.
    Slow,
}

impl Impairment {
    fn verb(self) -> &'static str {
        match self {
            Impairment::Partition => "partition",
            Impairment::Freeze => "freeze",
            Impairment::Slow => "slow tenfold the links of",
        }
    }
}

/// What arrives at the driver's node.
#[derive(Debug)]
enum AtDriver {
    Spawned {
        worker: WorkerId,
        pid: u32,
    },
    Exited {
        worker: WorkerId,
        reason: String,
    },
    Hello {
        worker: WorkerId,
    },
    Frames {
        worker: WorkerId,
        frames: Vec<u8>,
        /// Through the worker's node, or on the driver's direct link.
        way: Way,
    },
    Eof {
        worker: WorkerId,
    },
    Fetched {
        node: NodeIdx,
        id: ObjectId,
        result: Result<(), String>,
    },
    Pulled {
        id: ObjectId,
        len: u64,
        from: NodeIdx,
        ok: bool,
    },
    /// What changed in the node table (the driver's subscription).
    Members(prism_transport::MemberUpdate),
    /// The node stopped the job's processes: its lease ran out.
    Fenced {
        node: NodeIdx,
    },
    /// The draining node stopped the job's processes, as the driver asked.
    JobEnded {
        node: NodeIdx,
    },
    /// The head's answer to the job's directory update `seq` (or, not taken, the driver's
    /// timeout for it).
    JobAnswer {
        seq: u64,
        taken: bool,
    },
    /// The node granted the job `shape` of its resources (or refused: `Err`).
    Granted {
        node: NodeIdx,
        shape: Resources,
        result: Result<(), String>,
    },
    /// The node asks for the grants the job does not use.
    Reclaim {
        node: NodeIdx,
        keep: Resources,
    },
    /// The node's pool lent the driver a worker (or could not: `Err`).
    Lent {
        node: NodeIdx,
        lent: Result<(WorkerId, u32), String>,
    },
    /// The node relays the link of a worker it started for its pool: its hello follows.
    Relayed {
        worker: WorkerId,
        pid: u32,
    },
}

/// A scheduled happening.
#[derive(Debug)]
enum What {
    /// A message reaches the driver over `via`'s connection (of that epoch), or from the head.
    Driver {
        job: JobIdx,
        via: Option<(NodeIdx, u64)>,
        what: AtDriver,
    },
    /// The node's daemon gets a request of the job's connection of `epoch`.
    Host {
        job: JobIdx,
        node: NodeIdx,
        epoch: u64,
        request: HostRequest,
    },
    /// Another node's daemon's lease message reaches the daemon of `node` (of incarnation
    /// `life`) for job `job`.
    Peer {
        node: HostIdx,
        life: u64,
        job: JobIdx,
        from: HostIdx,
        message: prism_transport::PeerLease,
    },
    /// Frames reach a worker (relayed by its node, on the job's connection of `epoch`);
    /// `from`: the worker of another node that sent them and their kind (its daemon checks
    /// them again).
    Worker {
        worker: Wid,
        epoch: u64,
        frames: Vec<u8>,
        from: Option<(u64, Kind)>,
    },
    /// A worker process finished starting.
    WorkerUp { worker: Wid },
    /// Frames reach `worker` (while its node's view of its job is still `epoch`) on a direct
    /// link: one opened by owner `Some(owner)` (its pushes), or (`None`) one `worker` opened
    /// to a worker leased to it (the ends back).
    Direct {
        worker: Wid,
        epoch: u64,
        frames: Vec<u8>,
        from: Option<u64>,
    },
    /// A task's run ends (if the worker's run number is still `run`); `creation`: it is an
    /// actor's constructor.
    TaskEnd {
        worker: Wid,
        task: TaskId,
        run: u64,
        creation: bool,
    },
    /// A node's fetch ends (`stalled`: at the idle timeout, unless the driver's word that
    /// its peer is gone ended it first).
    FetchEnd {
        /// The job's connection the pull is for (its store on the node).
        conn: ConnId,
        node: NodeIdx,
        life: u64,
        id: ObjectId,
        len: u64,
        from: Option<NodeIdx>,
        stalled: bool,
        /// When the fetch began.
        since: Duration,
    },
    /// A request reaches the head.
    Head { from: Place, request: ToControl },
    /// A node's heartbeat timer.
    Beat { node: NodeIdx, life: u64 },
    /// The driver's node ticks (and subscribes to the node table again if the head went
    /// silent).
    Tick(JobIdx),
    /// The head looks for silent nodes and tells its subscriber what changed.
    HeadTick,
    /// The simulated driver looks at its objects.
    Probe(JobIdx),
    /// A fault strikes.
    Fault(Fault),
    /// The chaos plan's `turn`-th kill (see [`super::Chaos`]).
    Chaos { turn: usize },
    /// A killed node's daemon starts again.
    NodeUp { node: NodeIdx },
    /// The killed head starts again.
    HeadUp,
    /// The driver takes the next event of its backlog.
    DriverTurn(JobIdx),
    /// The job's connection to a node closes if nothing came through for the idle timeout.
    IdleCheck {
        job: JobIdx,
        node: NodeIdx,
        epoch: u64,
    },
    /// A host's daemon (incarnation `life`) looks at its leases: asks for renewals, or stops
    /// a job's processes once its lease ran out.
    LeaseTimer { node: HostIdx, life: u64 },
    /// A node's pull of a job's binary (for the job's connection `conn`) ends.
    BinaryFetched {
        node: HostIdx,
        life: u64,
        conn: ConnId,
        /// Whether the source gave it.
        result: Result<(), String>,
    },
    /// A restore from a node's disk ends (request `req` of the job's connection `conn`).
    Restored {
        node: HostIdx,
        life: u64,
        conn: ConnId,
        req: ReqId,
        id: ObjectId,
    },
    /// The driver had a host that joined (daemon incarnation `life`) start the job.
    Joined {
        job: JobIdx,
        node: HostIdx,
        life: u64,
    },
    /// A node's renewal ask reaches the driver (answered at once, off the driver's thread).
    Renew {
        job: JobIdx,
        node: NodeIdx,
        epoch: u64,
        seq: u64,
    },
    /// The driver's answer to a renewal reaches the node.
    Granted {
        job: JobIdx,
        node: NodeIdx,
        epoch: u64,
        seq: u64,
    },
    /// A frozen or cut-off node runs or reaches the others again (before anything that
    /// waited for it).
    Resume { node: NodeIdx },
    /// A draining node's grace is over: it ends its jobs and leaves (if still draining, in
    /// incarnation `life`), to start again after `restart_after`.
    DrainEnd {
        node: HostIdx,
        life: u64,
        restart_after: Duration,
    },
}

struct Due {
    at: Duration,
    seq: u64,
    what: What,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A node's daemon and its store.
#[derive(Debug)]
struct Host {
    name: String,
    /// The daemon's process runs.
    alive: bool,
    /// Incarnation of the daemon (a restart makes a new one).
    life: u64,
    /// The daemon's books of the jobs it hosts (a restarted daemon starts with none).
    core: HostCore,
    /// When the daemon's lease timer is due next (`None`: not armed).
    timer_at: Option<Duration>,
    /// What each job has here.
    views: Vec<View>,
    frozen_until: Duration,
    partitioned_until: Duration,
    slow_until: Duration,
    /// Its number at the head.
    head_id: Option<u32>,
    /// Tasks running on it now, of every job.
    running: u32,
    /// It drains, to start again after this long once it left.
    draining: Option<Duration>,
    /// The jobs whose binaries its disk holds (kept across restarts of its daemon).
    binaries: IdSet<JobIdx>,
}

impl Host {
    /// Whether it is frozen or partitioned at `now` (it neither answers nor is reached).
    fn cut_off(&self, now: Duration) -> bool {
        self.frozen_until > now || self.partitioned_until > now
    }
}

/// A node as one job sees it, and what the job has there.
#[derive(Debug)]
struct View {
    /// The job's number for it (its latest, if it joined the job again).
    idx: NodeIdx,
    /// The job's connection to it as the driver sees it: open, and its number (a drop makes
    /// a new one).
    connected: bool,
    epoch: u64,
    /// The job's connection as the daemon sees it: open (its number) until the daemon learns
    /// that it closed.
    daemon_conn: Option<ConnId>,
    /// The daemon incarnation the job last joined (its boot in the head's table).
    joined_life: u64,
    /// The job's store on the node.
    store: IdMap<ObjectId, u64>,
    /// The objects of `store` that are on its disk (spilled): a worker cannot map them.
    spilled: IdSet<ObjectId>,
    /// The object manager's open connections for the job, by peer and the peer's incarnation
    /// then.
    peers: IdMap<HostIdx, u64>,
    /// Pulls over an open connection to a peer that cannot answer: they end at QUIC's idle
    /// timeout, or when the driver says the peer is gone.
    stalled: Vec<Stalled>,
    /// The job's worker processes there.
    workers: Vec<WorkerId>,
}

/// A pull that waits for a peer that cannot answer.
#[derive(Debug, Clone, Copy)]
struct Stalled {
    id: ObjectId,
    len: u64,
    peer: HostIdx,
    since: Duration,
    /// The job's connection it is for.
    conn: ConnId,
}

impl View {
    /// The view of a node the job numbers `idx` and is connected to.
    fn new(idx: NodeIdx) -> Self {
        View {
            idx,
            connected: true,
            epoch: 0,
            daemon_conn: None,
            joined_life: 0,
            store: IdMap::default(),
            spilled: IdSet::default(),
            peers: IdMap::default(),
            stalled: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// Its objects are gone (in memory and spilled).
    fn drop_objects(&mut self) {
        self.store.clear();
        self.spilled.clear();
    }

    /// Takes a stalled pull of `id` from `from` off the list: false when it ended already.
    fn unstall(&mut self, id: ObjectId, from: Option<HostIdx>) -> bool {
        let at = self
            .stalled
            .iter()
            .position(|s| s.id == id && Some(s.peer) == from);
        at.map(|at| self.stalled.swap_remove(at)).is_some()
    }
}

/// A worker process.
#[derive(Debug)]
struct SimWorker {
    alive: bool,
    /// Its books: the real worker's.
    core: Worker,
    current: Option<TaskId>,
    /// Bumped when the worker stops running its task (killed or frozen and resumed).
    run: u64,
    /// Where the running parent of a nested workload is with its children (none: it has
    /// not submitted them).
    children: Option<Children>,
    /// The worker's task numbers (its process's own).
    seq: u64,
    /// Its process id.
    pid: u32,
}

/// A parent's children ([`Workload::Nested`]).
#[derive(Debug)]
enum Children {
    /// Submitted; it waits for them, blocked in `get` (the first not known yet: `cursor`).
    Awaited { ids: Vec<ObjectId>, cursor: usize },
    /// Every value arrived: the parent ends.
    Gathered,
}

/// What a held object ended as, first seen.
#[derive(Debug, Clone, PartialEq)]
enum Ended {
    Value(u64),
    Error(String),
}

/// The simulated driver's program.
struct Driver {
    held: Vec<ObjectId>,
    /// Held objects before this index have ended.
    cursor: usize,
    /// Large results, by task.
    large: IdMap<TaskId, u64>,
    /// Runs started, by task.
    attempts: IdMap<TaskId, u32>,
    /// The parents of a nested workload, and how many tasks each submits.
    parents: IdMap<TaskId, u64>,
    /// Runs of each task that could not start for a missing argument (not counted against
    /// its retries).
    missing: IdMap<TaskId, u32>,
    /// The actors it created.
    actors: Vec<ActorId>,
    /// When it last received each node's lease renewal ask.
    renewed: Vec<Duration>,
    ended: IdMap<ObjectId, Ended>,
    /// Phase: running, reading the results, released everything (at this time).
    reading: bool,
    released_at: Option<Duration>,
    seq: u64,
}

/// What a request to a host was, for its answer.
#[derive(Debug, Clone)]
enum Asked {
    Spawn(WorkerId),
    /// A borrow of a worker of the node's pool.
    Lend,
    Grant(Resources),
    /// A fetch or a restore: answered as a fetch.
    Fetch(ObjectId),
    EndJob,
    /// Nothing waits for the answer.
    Nothing,
}

/// A driver's process: the real protocol core of its node, its program, and what it knows
/// of the cluster.
struct Job {
    name: String,
    node: State,
    driver: Driver,
    /// The driver's subscription at the head, while it lasts: the epoch and version it was
    /// last sent, and when (it ends with the head).
    subscriber: Option<(u64, u64, Duration)>,
    /// The driver's copy of the node table.
    members: Members,
    /// What the driver told the head of its actors and placement groups.
    publisher: Publisher,
    /// The driver's actors and groups as of each complete update not yet answered, by the
    /// update's number: what the head must hold once it takes that update.
    published: VecDeque<(u64, Vec<ActorStatus>, Vec<GroupStatus>)>,
    /// When the head last spoke on the driver's subscription, or when the driver subscribed
    /// (`None`: not yet).
    heard: Option<Duration>,
    /// When the owner was first seen with no task left after the driver released everything.
    quiet_since: Option<Duration>,
    /// The driver's thread is busy until then.
    driver_free: Duration,
    /// What reached the driver while it was busy, in order.
    driver_backlog: VecDeque<What>,
    /// The host of each node the job numbered.
    idx_host: Vec<HostIdx>,
    /// Hosts the driver is asking to host the job.
    joining: Vec<bool>,
    /// The driver's direct links to its workers (with direct links): the reading of each
    /// worker's two ways.
    links: IdMap<WorkerId, Merge<Frame>>,
}

impl Job {
    /// Driver `j` of a run of `config`, its node knowing every host at the start.
    fn new(j: JobIdx, config: &Config) -> Job {
        let mut nodes = Nodes::default();
        let cpus = advertised(config);
        for i in 0..config.nodes {
            let soft = soft_limit_of(&cpus);
            nodes.add(format!("n{i}"), cpus.clone(), 16, soft, 4 * soft);
        }
        let name = match config.drivers {
            1 => "sim".to_string(),
            _ => format!("sim{j}"),
        };
        let mut node = match config.grants {
            true => State::new(nodes, config.store_capacity, Some(None)),
            false => State::new(nodes, config.store_capacity, Some(None)).without_grants(),
        }
        .with_worker_owners(config.owners)
        .with_borrowed_workers(config.owners && config.pools);
        for i in 0..config.nodes {
            node.set_peer_address(i, peer_address(i));
        }
        Job {
            node,
            driver: Driver {
                held: Vec::new(),
                cursor: 0,
                large: IdMap::default(),
                attempts: IdMap::default(),
                parents: IdMap::default(),
                missing: IdMap::default(),
                actors: Vec::new(),
                renewed: vec![Duration::ZERO; config.nodes],
                ended: IdMap::default(),
                reading: false,
                released_at: None,
                seq: 0,
            },
            subscriber: None,
            members: Members::default(),
            publisher: Publisher::new(
                name.clone(),
                prism_transport::JobInfo {
                    driver: format!("driver of {name}"),
                    pid: j as u32,
                    entry: "prism-sim".into(),
                    started_ms: 0,
                },
            ),
            published: VecDeque::new(),
            heard: None,
            quiet_since: None,
            driver_free: Duration::ZERO,
            driver_backlog: VecDeque::new(),
            idx_host: (0..config.nodes).collect(),
            joining: vec![false; config.nodes],
            links: IdMap::default(),
            name,
        }
    }
}

struct World<'a> {
    config: &'a Config,
    out: &'a mut dyn Write,
    rng: Rng,
    now: Duration,
    base: Instant,
    queue: BinaryHeap<Reverse<Due>>,
    seq: u64,
    /// The last arrival on each link, of bulk transfers and of messages (true: bulk), so
    /// that each kind stays in order (as a QUIC stream does).
    links: IdMap<(Place, Place, bool), Duration>,
    /// Until when each place's link out is busy sending bulk transfers.
    egress: IdMap<Place, Duration>,
    jobs: Vec<Job>,
    head: Option<ControlStore>,
    saved_head: crate::proto::control::Saved,
    /// The head's incarnation.
    head_epoch: u64,
    hosts: Vec<Host>,
    workers: IdMap<Wid, SimWorker>,
    decoder: FrameDecoder,
    /// While a node reads a worker's frames: what the node sends the driver for that worker
    /// meanwhile ([`HostAction::Up`]), which goes ahead of the frame it decided on.
    ups_of: Option<(Wid, Vec<u8>)>,
    report: Report,
    /// Objects whose values changed in this step, to check.
    touched: Vec<(JobIdx, ObjectId)>,
    next_pid: u32,
    /// Bytes allocated before the work was submitted (with a memory probe).
    memory_base: Option<usize>,
    /// The workers each actor's incarnations ran in (dead ones included), oldest first.
    incarnations: IdMap<(JobIdx, ActorId), Vec<Wid>>,
    /// Requests to hosts not yet answered, by number.
    asked: IdMap<ReqId, Asked>,
    next_req: ReqId,
}

/// Runs the simulation `config` describes, writing what happens to `out` (deterministic: the
/// same configuration writes the same bytes). The last line sums the run up.
pub fn run(config: &Config, out: &mut dyn Write) -> std::io::Result<Report> {
    let started = Instant::now();
    let base = Instant::now();
    let drivers = config.drivers.max(1);
    let mut world = World {
        config,
        out,
        rng: Rng::new(config.seed),
        now: Duration::ZERO,
        base,
        queue: BinaryHeap::new(),
        seq: 0,
        links: IdMap::default(),
        egress: IdMap::default(),
        jobs: (0..drivers).map(|j| Job::new(j, config)).collect(),
        head: Some(ControlStore::new(config.node_timeout, 1)),
        saved_head: Default::default(),
        head_epoch: 1,
        hosts: (0..config.nodes)
            .map(|i| Host {
                name: format!("n{i}"),
                alive: true,
                life: 0,
                core: new_host_core(format!("n{i}"), config),
                timer_at: None,
                views: (0..drivers).map(|_| View::new(i)).collect(),
                frozen_until: Duration::ZERO,
                partitioned_until: Duration::ZERO,
                slow_until: Duration::ZERO,
                head_id: None,
                running: 0,
                draining: None,
                binaries: IdSet::default(),
            })
            .collect(),
        workers: IdMap::default(),
        decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
        ups_of: None,
        report: Report::default(),
        touched: Vec::new(),
        next_pid: 1000,
        memory_base: None,
        incarnations: IdMap::default(),
        asked: IdMap::default(),
        next_req: 0,
    };
    world.start()?;
    world.main_loop()?;
    world.finish(started)
}

impl World<'_> {
    /// The host a worker runs on.
    fn host_of(&self, (j, worker): Wid) -> HostIdx {
        self.jobs[j].idx_host[node_of(worker)]
    }

    /// The host job `j` numbers `idx`.
    fn host_at(&self, j: JobIdx, idx: NodeIdx) -> HostIdx {
        self.jobs[j].idx_host[idx]
    }

    fn start(&mut self) -> std::io::Result<()> {
        let c = self.config;
        writeln!(
            self.out,
            "prism-sim: {} nodes x {} CPUs, {}{} tasks ({}){}, faults {}{}, seed {}",
            c.nodes,
            c.cpus,
            match self.jobs.len() {
                1 => String::new(),
                n => format!("{n} drivers x "),
            },
            c.tasks,
            match c.workload {
                Workload::FanOut => "fan-out",
                Workload::Tree => "tree reduction",
                Workload::Broadcast => "broadcast",
                Workload::Nested => "nested fan-out",
                Workload::Pipeline => "nested pipeline",
            },
            if c.actors > 0 {
                format!(", {} actors x {} calls", c.actors, c.calls)
            } else {
                String::new()
            },
            if c.faults { "on" } else { "off" },
            match c.chaos {
                Some(chaos) => format!(
                    ", a node killed every {:.1} s and restarted after {:.1} s",
                    chaos.every.as_secs_f64(),
                    chaos.restart_after.as_secs_f64()
                ),
                None => String::new(),
            },
            c.seed
        )?;
        for node in 0..self.hosts.len() {
            self.register(node);
            let first = self.rng.between(Duration::ZERO, c.heartbeat);
            self.at(first, What::Beat { node, life: 0 });
            for j in 0..self.jobs.len() {
                self.start_job_on(j, node);
            }
        }
        for j in 0..self.jobs.len() {
            self.at(Duration::ZERO, What::Tick(j));
            self.at(PROBE, What::Probe(j));
        }
        self.at(SILENCE_CHECK, What::HeadTick);
        if c.faults {
            self.plan_faults();
        }
        if let Some(chaos) = c.chaos {
            self.at(chaos.every, What::Chaos { turn: 0 });
        }
        let before = self.config.memory_probe.map(|probe| probe());
        for j in 0..self.jobs.len() {
            self.proto(j, |node, _| node.start());
            self.submit_work(j);
        }
        if let (Some(probe), Some(before)) = (self.config.memory_probe, before) {
            let grown = probe().saturating_sub(before);
            self.report.bytes_per_task = Some(grown as f64 / self.report.tasks.max(1) as f64);
            self.memory_base = Some(before);
        }
        Ok(())
    }

    /// Schedules the run's faults: about one per two nodes, spread over the time the work
    /// should take, never on node 0 (so that the job always has somewhere to run).
    fn plan_faults(&mut self) {
        let c = self.config;
        let work = c.task_time.as_secs_f64() * c.tasks as f64
            / (c.nodes.max(1) as f64 * f64::from(c.cpus.max(1)));
        let span = Duration::from_secs_f64((2.0 * work).max(0.1));
        let count = (c.nodes / 2).max(2);
        let mut killed = 0;
        for _ in 0..count {
            if c.nodes < 2 {
                break;
            }
            let at = self.rng.between(span / 10, span);
            let node = 1 + self.rng.below(c.nodes as u64 - 1) as NodeIdx;
            let lasting = self
                .rng
                .between(Duration::from_secs(1), Duration::from_secs(15));
            let fault = match self.rng.below(7) {
                // A killed node is lost to the running job: keep at least half.
                0 if killed < (c.nodes - 1) / 2 => {
                    killed += 1;
                    Fault::KillNode {
                        node,
                        restart_after: self
                            .rng
                            .between(Duration::from_secs(2), Duration::from_secs(10)),
                    }
                }
                0 | 1 => Fault::KillWorker { node },
                kind @ 2..=4 => Fault::Impair {
                    node,
                    lasting,
                    how: match kind {
                        2 => Impairment::Partition,
                        3 => Impairment::Freeze,
                        _ => Impairment::Slow,
                    },
                },
                5 => Fault::KillHead {
                    restart_after: self
                        .rng
                        .between(Duration::from_secs(1), Duration::from_secs(5)),
                },
                // A node that leaves is lost to the running job too.
                _ if killed < (c.nodes - 1) / 2 => {
                    killed += 1;
                    Fault::DrainNode {
                        node,
                        restart_after: self
                            .rng
                            .between(Duration::from_secs(2), Duration::from_secs(10)),
                    }
                }
                _ => Fault::KillWorker { node },
            };
            self.at(at, What::Fault(fault));
            self.report.faults += 1;
        }
    }

    /// The driver's program submits its tasks (all at once, as a Ray program does).
    fn submit_work(&mut self, j: JobIdx) {
        let c = self.config;
        match c.workload {
            Workload::FanOut => {
                for _ in 0..c.tasks {
                    let spec = self.spec(j, "sim::work", Vec::new());
                    let id = ObjectId::new(spec.task_id, 0);
                    self.submit(j, spec);
                    self.jobs[j].driver.held.push(id);
                }
            }
            Workload::Tree => {
                let leaves = c.tasks.div_ceil(2).max(1);
                let mut level: Vec<ObjectId> = Vec::with_capacity(leaves);
                for _ in 0..leaves {
                    let spec = self.spec(j, "sim::leaf", Vec::new());
                    self.jobs[j].driver.large.insert(spec.task_id, c.large);
                    level.push(ObjectId::new(spec.task_id, 0));
                    self.submit(j, spec);
                }
                while level.len() > 1 {
                    let mut next = Vec::with_capacity(level.len().div_ceil(2));
                    for pair in level.chunks(2) {
                        if let [a, b] = pair {
                            let spec = self.spec(j, "sim::sum", vec![Arg::Ref(*a), Arg::Ref(*b)]);
                            self.jobs[j].driver.large.insert(spec.task_id, c.large);
                            next.push(ObjectId::new(spec.task_id, 0));
                            self.submit(j, spec);
                            // The program keeps only the root's reference.
                            self.proto(j, |node, _| {
                                node.release(*a);
                                node.release(*b);
                                node.settle();
                            });
                        } else {
                            next.push(pair[0]);
                        }
                    }
                    level = next;
                }
                self.jobs[j].driver.held = level;
            }
            Workload::Nested | Workload::Pipeline => {
                let share = (c.tasks as u64).div_ceil(NESTED_PARENTS as u64);
                for _ in 0..NESTED_PARENTS {
                    let mut spec = self.spec(j, "sim::parent", Vec::new());
                    // As the benchmark's parents: no CPU of their own.
                    spec.resources = Resources::default();
                    let id = ObjectId::new(spec.task_id, 0);
                    self.jobs[j].driver.parents.insert(spec.task_id, share);
                    self.submit(j, spec);
                    self.jobs[j].driver.held.push(id);
                }
            }
            Workload::Broadcast => {
                let spec = self.spec(j, "sim::leaf", Vec::new());
                self.jobs[j].driver.large.insert(spec.task_id, c.large);
                let object = ObjectId::new(spec.task_id, 0);
                self.submit(j, spec);
                for _ in 1..c.tasks.max(2) {
                    let spec = self.spec(j, "sim::work", vec![Arg::Ref(object)]);
                    self.jobs[j]
                        .driver
                        .held
                        .push(ObjectId::new(spec.task_id, 0));
                    self.submit(j, spec);
                }
                // The program keeps only the readers' results.
                self.proto(j, |node, _| {
                    node.release(object);
                    node.settle();
                });
            }
        }
        self.create_actors(j);
    }

    /// The driver's actors and their calls (results held alongside the workload's).
    fn create_actors(&mut self, j: JobIdx) {
        let c = self.config;
        for _ in 0..c.actors {
            let mut spec = self.spec(j, "sim::Actor", Vec::new());
            let actor = ActorId(spec.task_id);
            spec.num_returns = 0;
            spec.kind = TaskKind::ActorCreation {
                actor,
                max_concurrency: 1,
            };
            let setup = prism_transport::ActorConfig {
                class: "sim::Actor".into(),
                name: None,
                namespace: None,
                get_if_exists: false,
                max_restarts: u32::MAX,
                max_task_retries: c.max_retries,
                detached: false,
            };
            self.report.tasks += 1;
            self.jobs[j].driver_free += c.driver_cost;
            self.proto(j, |node, _| {
                node.create_actor(spec, None, setup)
                    .expect("unnamed actors take no name");
                node.settle();
            });
            self.jobs[j].driver.actors.push(actor);
        }
        for _ in 0..c.calls {
            for actor in self.jobs[j].driver.actors.clone() {
                let mut spec = self.spec(j, "sim::Actor::call", Vec::new());
                spec.kind = TaskKind::ActorCall(actor);
                self.jobs[j]
                    .driver
                    .held
                    .push(ObjectId::new(spec.task_id, 0));
                self.submit(j, spec);
            }
        }
    }

    fn spec(&mut self, j: JobIdx, function: &str, args: Vec<Arg>) -> TaskSpec {
        self.jobs[j].driver.seq += 1;
        let task = TaskId::new(DRIVER_OWNER, self.jobs[j].driver.seq);
        one_cpu_task(task, function, args, self.config.max_retries)
    }

    fn submit(&mut self, j: JobIdx, spec: TaskSpec) {
        self.report.tasks += 1;
        self.jobs[j].driver_free += self.config.driver_cost;
        self.proto(j, |node, now| {
            let _ = node.handle(Event::Submit { spec, failed: None }, now);
        });
    }

    /// Runs protocol code at the current time (timed: the real cost of the core), then does
    /// what it decided.
    fn proto<R>(&mut self, j: JobIdx, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = self.base + self.now;
        let started = Instant::now();
        let node = &mut self.jobs[j].node;
        let out = f(node, now);
        let mut actions = Vec::new();
        while let Some(action) = node.poll_action() {
            actions.push(action);
        }
        self.report.real_proto += started.elapsed();
        for action in actions {
            self.perform(j, action);
        }
        out
    }

    fn at(&mut self, at: Duration, what: What) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Reverse(Due { at, seq, what }));
    }

    /// When a message of `bytes` sent now from `from` arrives at `to`: latency, jitter and
    /// transfer time, held while either end is cut off, and never before an earlier one on
    /// the same link.
    fn arrival(&mut self, from: Place, to: Place, bytes: u64) -> Duration {
        let c = self.config;
        let mut bandwidth = c.bandwidth.max(1);
        let mut at = self.now;
        for end in [from, to] {
            if let Place::Node(n) = end {
                let host = &self.hosts[n];
                if host.slow_until > self.now {
                    bandwidth = (bandwidth / 10).max(1);
                }
                at = at.max(host.partitioned_until);
            }
        }
        let jitter = self.rng.below(c.latency.as_nanos() as u64 / 2 + 1);
        let transfer = Duration::from_nanos(
            (u128::from(bytes) * 1_000_000_000 / u128::from(bandwidth)) as u64,
        );
        // The sender's link carries one bulk transfer after another (objects, binaries);
        // small messages go between their packets, as QUIC's streams share a connection.
        match bytes >= BULK {
            true => {
                let out = self.egress.entry(from).or_default();
                at = at.max(*out) + transfer;
                *out = at;
            }
            false => at += transfer,
        }
        at += c.latency + Duration::from_nanos(jitter);
        // In order behind what went before on the same stream: bulk transfers behind bulk
        // transfers, messages behind messages (a message does not wait for a binary or an
        // object sent before it, as QUIC's streams do not).
        let last = self.links.entry((from, to, bytes >= BULK)).or_default();
        at = at.max(*last);
        *last = at;
        at
    }

    fn send(&mut self, from: Place, to: Place, bytes: u64, what: What) {
        let at = self.arrival(from, to, bytes);
        self.at(at, what);
    }

    /// A node sends job `j`'s driver `what` over the job's connection.
    fn tell_driver(&mut self, j: JobIdx, node: HostIdx, bytes: u64, what: AtDriver) {
        let via = Some((node, self.hosts[node].views[j].epoch));
        let what = What::Driver { job: j, via, what };
        self.send(Place::Node(node), Place::Driver(j), bytes, what);
    }

    fn perform(&mut self, j: JobIdx, action: Action) {
        match action {
            Action::Send { worker, frames } => {
                let node = self.host_of((j, worker));
                let epoch = self.hosts[node].views[j].epoch;
                let linked = self.jobs[j].links.contains_key(&worker);
                if !linked && direct_links(self.config) && self.workers.contains_key(&(j, worker)) {
                    // The first frames: the driver links to the worker, and says so through
                    // its node (as `node/direct.rs` does).
                    self.jobs[j].links.insert(worker, Merge::default());
                    let mut word = Vec::new();
                    let switch = ToWorker::Switch {
                        from: DRIVER_ENDPOINT.into(),
                    };
                    prism_transport::encode_frame(&switch, &mut word).expect("a frame");
                    let what = What::Worker {
                        worker: (j, worker),
                        epoch,
                        frames: word,
                        from: None,
                    };
                    self.send(Place::Driver(j), Place::Node(node), 64, what);
                }
                let bytes = frames.len() as u64;
                let what = match self.jobs[j].links.contains_key(&worker) {
                    true => What::Direct {
                        worker: (j, worker),
                        epoch,
                        frames,
                        from: Some(DRIVER_OWNER),
                    },
                    false => What::Worker {
                        worker: (j, worker),
                        epoch,
                        frames,
                        from: None,
                    },
                };
                self.send(Place::Driver(j), Place::Node(node), bytes, what);
            }
            Action::StartWorker {
                node,
                worker,
                binary_from,
            } => {
                let host = self.host_at(j, node);
                let request = HostRequest::Spawn {
                    worker,
                    binary_from,
                };
                self.host_request(j, host, request)
            }
            Action::KillWorker { worker } => {
                let host = self.host_of((j, worker));
                self.host_request(j, host, HostRequest::Kill { worker })
            }
            Action::Host { node, request } => {
                let host = self.host_at(j, node);
                self.host_request(j, host, request)
            }
            Action::FetchHere { id, len, from } => {
                // A pull over the node's connection: the reply carries the bytes.
                let at_host = self.host_at(j, from);
                let view = &self.hosts[at_host].views[j];
                let ok = self.hosts[at_host].alive && view.store.contains_key(&id);
                let via = Some((at_host, view.epoch));
                let what = AtDriver::Pulled { id, len, from, ok };
                let at = if ok {
                    self.arrival(Place::Node(at_host), Place::Driver(j), len)
                } else {
                    self.now + self.config.idle_timeout
                };
                self.at(at, What::Driver { job: j, via, what });
            }
            Action::DropNode { node: idx, .. } => {
                let node = self.host_at(j, idx);
                let view = &mut self.hosts[node].views[j];
                if view.idx != idx {
                    return; // an earlier membership of the host
                }
                view.connected = false;
                view.epoch += 1;
                // The node stops the job's workers once it sees the connection close: now if
                // it is reachable and running, else when it is again (or its lease ran out).
                let host = &self.hosts[node];
                if host.alive && !host.cut_off(self.now) {
                    self.connection_closed(j, node);
                }
            }
            Action::Restore { id, len } => {
                // Nothing is spilled in the simulator (its objects live on the nodes), but a
                // restore is answered as the shell would.
                let bytes = ObjectBytes::inline(&vec![0; len as usize]);
                self.proto(j, |node, now| {
                    let _ = node.handle(
                        Event::Restored {
                            id,
                            restored: Ok(bytes),
                        },
                        now,
                    );
                });
            }
            // The simulated jobs claim no names at a head (their drivers are told
            // `with_names_at_head(false)`); a claim is granted as an embedded driver's is.
            Action::ClaimName { actor, .. } => {
                self.proto(j, |node, now| {
                    let outcome = Ok(());
                    let _ = node.handle(Event::NameClaimed { actor, outcome }, now);
                });
            }
            // Nor do they look names up there: no other job has the name.
            Action::FindName { find, .. } => {
                self.proto(j, |node, now| {
                    let outcome = Ok(None);
                    let _ = node.handle(Event::NameFound { find, outcome }, now);
                });
            }
            // Nor is there a head to make detached actors (the simulated jobs make none).
            Action::CreateDetached { find, setup, .. } => {
                self.proto(j, |node, now| {
                    let outcome = Err(prism_transport::Refusal::Detached {
                        class: setup.class.clone(),
                        reason: "the simulator has no head to make it".to_string(),
                    });
                    let _ = node.handle(Event::DetachedMade { find, outcome }, now);
                });
            }
            // The driver's link to a worker it forgot goes (as `node/mod.rs` closes it).
            Action::Forget { worker } => {
                self.jobs[j].links.remove(&worker);
            }
            Action::CloseLink { .. }
            | Action::Spill { .. }
            | Action::ShrinkPool { .. }
            | Action::Free(_)
            | Action::DropOwnedBy { .. }
            | Action::ReleaseName { .. }
            | Action::WatchActor { .. }
            | Action::UnwatchActor { .. }
            | Action::SendForeign { .. }
            | Action::KillForeign { .. }
            | Action::ReturnFreeMemory => {}
        }
    }

    fn host_request(&mut self, j: JobIdx, node: HostIdx, request: HostRequest) {
        let view = &self.hosts[node].views[j];
        if !view.connected {
            return;
        }
        let epoch = view.epoch;
        let what = What::Host {
            job: j,
            node,
            epoch,
            request,
        };
        self.send(Place::Driver(j), Place::Node(node), 64, what);
    }

    /// Job `j`'s connection to `node` (of the driver's current epoch) reaches its daemon,
    /// which prepares the job (its binary came with the connection, see [`Self::offer_job`]).
    fn start_job_on(&mut self, j: JobIdx, node: HostIdx) {
        let conn = conn_id(j, self.hosts[node].views[j].epoch);
        let lease = match self.config.fencing {
            true => self.config.lease,
            false => NO_LEASE,
        };
        let request = host::Request::StartJob(JobStart {
            binary: [0; 32],
            size: self.config.binary,
            from: None,
            inline_threshold: INLINE_LIMIT,
            store_capacity: self.config.store_capacity,
            lease,
            task_events: 0,
        });
        self.hosts[node].views[j].daemon_conn = Some(conn);
        let job = self.jobs[j].name.clone();
        self.host_core(node, |core, now| {
            core.handle(HostEvent::Connected { conn, job }, now)
        });
        self.ask_host(node, conn, request, Asked::Nothing);
    }

    /// Hands request `request` on connection `conn` to `node`'s daemon.
    fn ask_host(
        &mut self,
        node: HostIdx,
        conn: ConnId,
        request: host::Request<Option<HostIdx>>,
        asked: Asked,
    ) {
        let req = self.next_req;
        self.next_req += 1;
        self.asked.insert(req, asked);
        self.host_core(node, |core, now| {
            core.handle(HostEvent::Request { conn, req, request }, now)
        });
    }

    /// `node`'s daemon learns that job `j`'s connection closed (if it had not yet).
    fn connection_closed(&mut self, j: JobIdx, node: HostIdx) {
        if let Some(conn) = self.hosts[node].views[j].daemon_conn.take() {
            self.host_core(node, |core, now| {
                core.handle(HostEvent::Closed { conn }, now)
            });
        }
    }

    /// Runs `f` on `node`'s daemon's books at the simulated time, then does what they decided
    /// and arms the daemon's lease timer for their next timeout.
    fn host_core(&mut self, node: HostIdx, f: impl FnOnce(&mut HostCore, Instant)) {
        let now = self.base + self.now;
        f(&mut self.hosts[node].core, now);
        while let Some(action) = self.hosts[node].core.poll_action() {
            self.host_act(node, action);
        }
        let host = &mut self.hosts[node];
        let next = host.core.poll_timeout().map(|at| at - self.base);
        if let Some(next) = next
            && host.timer_at.is_none_or(|armed| next < armed)
        {
            host.timer_at = Some(next);
            let life = host.life;
            self.at(next, What::LeaseTimer { node, life });
        }
    }

    /// Starts worker process `worker` on `node`: it says hello after its start-up time.
    /// Returns its pid.
    fn start_process(&mut self, node: HostIdx, worker: Wid) -> u32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        let mut core = Worker::new(false, worker.1);
        if direct_links(self.config) {
            core.set_linking();
        }
        let sim = SimWorker {
            alive: true,
            core,
            current: None,
            run: 0,
            children: None,
            seq: 0,
            pid,
        };
        self.workers.insert(worker, sim);
        self.hosts[node].views[worker.0].workers.push(worker.1);
        let up = self.now + self.rng.between(WORKER_START / 2, WORKER_START * 3 / 2);
        self.at(up, What::WorkerUp { worker });
        pid
    }

    /// Hands `event` to `node`'s daemon's books while their actions are being done (they
    /// join the queue being worked through).
    fn host_event(&mut self, node: HostIdx, event: HostEvent<Option<HostIdx>, ()>) {
        let now = self.base + self.now;
        self.hosts[node].core.handle(event, now);
    }

    /// Does what `node`'s daemon decided (as the daemon's shell does).
    fn host_act(&mut self, node: HostIdx, action: HostAction<Option<HostIdx>, ()>) {
        match action {
            HostAction::Reply { conn, req, reply } => {
                let Some(asked) = self.asked.remove(&req) else {
                    return;
                };
                self.answered(job_of(conn), node, asked, reply);
            }
            HostAction::Peer { job, to, message } => {
                self.report.peer_lease_messages += 1;
                let target = host_of_address(&to);
                let Some(j) = self.jobs.iter().position(|one| one.name == job) else {
                    return;
                };
                let Some(target) = target.filter(|&t| t < self.hosts.len()) else {
                    self.report.violation = Some(format!("a lease message for {to:?}"));
                    return;
                };
                let at =
                    self.arrival(Place::Node(node), Place::Node(target), 128) + 2 * LOCAL_RELAY;
                let life = self.hosts[target].life;
                let what = What::Peer {
                    node: target,
                    life,
                    job: j,
                    from: node,
                    message,
                };
                self.at(at, what);
            }
            HostAction::Start { conn, worker, .. } => {
                let pid = self.start_process(node, (job_of(conn), worker));
                let result = Ok(pid);
                let started = HostEvent::Started {
                    conn,
                    worker,
                    result,
                };
                self.host_event(node, started);
            }
            HostAction::Write {
                conn,
                worker,
                message,
            } => {
                let j = job_of(conn);
                let mut frames = Vec::new();
                prism_transport::encode_frame(&*message, &mut frames).expect("a frame");
                let epoch = self.hosts[node].views[j].epoch;
                let what = What::Worker {
                    worker: (j, worker),
                    epoch,
                    frames,
                    from: None,
                };
                self.at(self.now + LOCAL_RELAY, what);
            }
            HostAction::Up {
                conn,
                worker,
                message,
            } => {
                let mut frames = Vec::new();
                prism_transport::encode_frame(&*message, &mut frames).expect("a frame");
                if let Some((reading, ups)) = &mut self.ups_of
                    && *reading == (job_of(conn), worker)
                {
                    return ups.extend_from_slice(&frames);
                }
                let bytes = frames.len() as u64;
                let up = AtDriver::Frames {
                    worker,
                    frames,
                    way: Way::Node,
                };
                self.tell_driver(job_of(conn), node, bytes, up);
            }
            // The job needs no files here; its binary may be on the node's disk already.
            HostAction::Prepare { conn, req, job, .. } => {
                let cached = self.hosts[node].binaries.contains(&job_of(conn));
                let prepared = HostEvent::Prepared {
                    conn,
                    req,
                    job,
                    result: Ok(()),
                    cached,
                };
                self.host_event(node, prepared);
            }
            HostAction::FetchBinary { conn, from, .. } => {
                // Pulled from the driver, or from a node that has it (which must be up).
                let (j, life) = (job_of(conn), self.hosts[node].life);
                let (source, result) = match from {
                    None => (Some(Place::Driver(j)), Ok(())),
                    Some(peer) if self.hosts[peer].alive => (Some(Place::Node(peer)), Ok(())),
                    Some(peer) => (None, Err(format!("{} is down", self.hosts[peer].name))),
                };
                let at = match source {
                    Some(source) => self.arrival(source, Place::Node(node), self.config.binary),
                    None => self.now,
                };
                let fetched = What::BinaryFetched {
                    node,
                    life,
                    conn,
                    result,
                };
                self.at(at + self.config.latency, fetched);
            }
            HostAction::Spawn {
                conn, req, worker, ..
            } => {
                let pid = self.start_process(node, (job_of(conn), worker));
                let result = Ok(pid);
                let spawned = HostEvent::Spawned {
                    conn,
                    req,
                    worker,
                    result,
                };
                self.host_event(node, spawned);
            }
            HostAction::Kill { conn, worker } => {
                let worker = (job_of(conn), worker);
                self.kill(worker, Some("killed by its node (SIGKILL)".into()));
            }
            HostAction::Pull {
                conn,
                id,
                len,
                from,
                ..
            } => self.pull(conn, node, id, len, from),
            // Copies the owners dropped, and values made here that they pulled or dropped.
            HostAction::Unlink { conn, ids, .. } => {
                let host = &mut self.hosts[node].views[job_of(conn)];
                for id in ids {
                    host.store.remove(&id);
                    host.spilled.remove(&id);
                }
            }
            HostAction::Files {
                conn, req, work, ..
            } => {
                let life = self.hosts[node].life;
                let host = &mut self.hosts[node].views[job_of(conn)];
                match work {
                    FileWork::Free { ids, .. } => {
                        for id in ids {
                            host.store.remove(&id);
                            host.spilled.remove(&id);
                        }
                    }
                    FileWork::DropOwnedBy { owner, keep } => {
                        let gone = |id: &ObjectId| {
                            id.task.owner == owner && keep.binary_search(id).is_err()
                        };
                        host.store.retain(|id, _| !gone(id));
                        host.spilled.retain(|id| !gone(id));
                    }
                    FileWork::Spill(objects) => {
                        for (id, _) in objects {
                            if host.store.contains_key(&id) && host.spilled.insert(id) {
                                self.report.spilled += 1;
                            }
                        }
                    }
                    FileWork::Restore { id, len } => {
                        // Read back from the node's disk at the link's pace.
                        let took =
                            Duration::from_secs_f64(len as f64 / self.config.bandwidth as f64);
                        let restored = What::Restored {
                            node,
                            life,
                            conn,
                            req,
                            id,
                        };
                        self.at(self.now + took, restored);
                        return;
                    }
                }
                let performed = HostEvent::Performed {
                    conn,
                    req,
                    result: Ok(()),
                };
                self.host_event(node, performed);
            }
            HostAction::ForgetPeer { conn, req, at } => {
                if let Some(peer) = at {
                    self.forget_peer(job_of(conn), node, peer);
                }
                let performed = HostEvent::Performed {
                    conn,
                    req,
                    result: Ok(()),
                };
                self.host_event(node, performed);
            }
            HostAction::EndJob {
                conn, why, workers, ..
            } => {
                let j = job_of(conn);
                let said = match why {
                    Ending::Drained => Some("stops the job's processes: the job left it"),
                    Ending::LeaseEnded => Some("stops the job's processes: its lease ran out"),
                    _ => None,
                };
                if let Some(said) = said {
                    let _ = self.say_of(j, node, said);
                }
                for worker in workers {
                    self.kill((j, worker), None);
                }
                self.hosts[node].views[j].drop_objects();
            }
            HostAction::Tell { conn, event } => {
                let j = job_of(conn);
                let view = &self.hosts[node].views[j];
                let open = view.connected && conn_id(j, view.epoch) == conn;
                match event {
                    prism_transport::HostEvent::Renew { seq } => {
                        let renew = What::Renew {
                            job: j,
                            node,
                            epoch: conn >> 16,
                            seq,
                        };
                        self.send(Place::Node(node), Place::Driver(j), 32, renew);
                    }
                    prism_transport::HostEvent::WorkerExited { worker, reason } if open => {
                        self.tell_driver(j, node, 64, AtDriver::Exited { worker, reason });
                        self.tell_driver(j, node, 8, AtDriver::Eof { worker });
                    }
                    prism_transport::HostEvent::Reclaim { keep } if open => {
                        let idx = self.hosts[node].views[j].idx;
                        let reclaim = AtDriver::Reclaim { node: idx, keep };
                        self.tell_driver(j, node, 32, reclaim);
                    }
                    _ => {}
                }
            }
            HostAction::Close { conn, .. } => {
                let j = job_of(conn);
                self.hosts[node].views[j].daemon_conn = None;
                self.tell_driver(j, node, 64, AtDriver::Fenced { node });
            }
        }
    }

    /// `node`'s daemon answered a request job `j`'s driver asked as `asked`.
    fn answered(
        &mut self,
        j: JobIdx,
        node: HostIdx,
        asked: Asked,
        reply: prism_transport::FromHost,
    ) {
        use prism_transport::FromHost;
        match (asked, reply) {
            (Asked::Lend, reply) => {
                let lent = match reply {
                    FromHost::Lent { worker, pid } => Ok((worker, pid)),
                    FromHost::Error(e) => Err(e),
                    other => Err(format!("unexpected answer {other:?}")),
                };
                let idx = self.hosts[node].views[j].idx;
                self.tell_driver(j, node, 64, AtDriver::Lent { node: idx, lent });
            }
            (Asked::Spawn(worker), FromHost::Spawned(pid)) => {
                self.tell_driver(j, node, 64, AtDriver::Spawned { worker, pid });
            }
            (Asked::Spawn(worker), FromHost::Error(reason)) => {
                self.tell_driver(j, node, 64, AtDriver::Exited { worker, reason });
            }
            (Asked::Fetch(id), reply) => {
                let result = match reply {
                    FromHost::Error(e) => Err(e),
                    _ => Ok(()),
                };
                let idx = self.hosts[node].views[j].idx;
                let fetched = AtDriver::Fetched {
                    node: idx,
                    id,
                    result,
                };
                self.tell_driver(j, node, 64, fetched);
            }
            (Asked::Grant(shape), reply) => {
                let result = match reply {
                    FromHost::Granted => Ok(()),
                    FromHost::Error(e) => Err(e),
                    other => Err(format!("unexpected answer {other:?}")),
                };
                let idx = self.hosts[node].views[j].idx;
                let granted = AtDriver::Granted {
                    node: idx,
                    shape,
                    result,
                };
                self.tell_driver(j, node, 64, granted);
            }
            (Asked::EndJob, _) => {
                self.tell_driver(j, node, 64, AtDriver::JobEnded { node });
                let host = &self.hosts[node];
                if let Some(restart_after) = host.draining
                    && host.core.idle()
                {
                    // Its last job let it go: it leaves now.
                    let life = self.hosts[node].life;
                    let end = What::DrainEnd {
                        node,
                        life,
                        restart_after,
                    };
                    self.at(self.now, end);
                }
            }
            _ => {}
        }
    }

    /// The daemon's lease timer: renewals due are asked for, a job whose lease ran out ends.
    fn lease_timer(&mut self, node: HostIdx, life: u64) {
        let host = &mut self.hosts[node];
        if !host.alive || host.life != life {
            return;
        }
        // Its armed time passed (it may fire late: a frozen daemon runs its timers when it
        // thaws).
        if host.timer_at.is_some_and(|at| at <= self.now) {
            host.timer_at = None;
        }
        self.host_core(node, |core, now| core.handle_timeout(now));
    }

    /// The driver asks a live host the job does not use (one that restarted, or came back
    /// after the job lost it) to host the job: it connects, the host pulls the job's binary
    /// and answers ([`What::Joined`]).
    fn offer_job(&mut self, j: JobIdx, node: HostIdx) {
        let host = &self.hosts[node];
        let job = &self.jobs[j];
        let hosting = host.core.hosts(&job.name);
        if !host.alive || host.views[j].connected || hosting || job.joining[node] {
            return;
        }
        self.jobs[j].joining[node] = true;
        let life = host.life;
        // The job's start: its binary comes when the node first starts a worker of it.
        let asked = self.arrival(Place::Driver(j), Place::Node(node), 256);
        let joined = What::Joined { job: j, node, life };
        self.at(asked + self.config.latency, joined);
    }

    /// A host started the job: the driver's core counts it as a new node.
    fn joined(&mut self, j: JobIdx, node: HostIdx, life: u64) -> std::io::Result<()> {
        self.jobs[j].joining[node] = false;
        let host = &self.hosts[node];
        let view = &host.views[j];
        let hosting = host.core.hosts(&self.jobs[j].name);
        if !host.alive || host.life != life || view.connected || hosting {
            return Ok(());
        }
        let cpus = advertised(self.config);
        let soft = soft_limit_of(&cpus);
        let name = host.name.clone();
        // The host is the job's next node (the core numbers nodes in order) and hosts the job
        // before the core asks it for workers.
        let idx = self.jobs[j].idx_host.len();
        let (previous, previous_epoch) = (view.idx, view.epoch);
        self.jobs[j].idx_host.push(node);
        let view = &mut self.hosts[node].views[j];
        view.idx = idx;
        view.connected = true;
        view.epoch += 1;
        view.drop_objects();
        view.joined_life = life;
        self.jobs[j].driver.renewed[node] = self.now;
        self.start_job_on(j, node);
        let counted = self.proto(j, |n, _| {
            let idx = n.join_node(name, cpus, 16, 4 * soft)?;
            n.set_peer_address(idx, peer_address(node));
            Some(idx)
        });
        if counted != Some(idx) {
            // The core numbers no more nodes: the host stays out of the job.
            self.jobs[j].idx_host.pop();
            let view = &mut self.hosts[node].views[j];
            (view.idx, view.epoch, view.connected) = (previous, previous_epoch + 2, false);
            self.connection_closed(j, node);
            return Ok(());
        }
        self.report.joins += 1;
        let joins = format!("joins the job again (as node {idx})");
        self.say_of(j, node, &joins)
    }

    /// Writes what happened to `node` now (for job `j`'s sake, when there are several).
    fn say_of(&mut self, j: JobIdx, node: HostIdx, what: &str) -> std::io::Result<()> {
        let (t, name) = (self.now.as_secs_f64(), &self.hosts[node].name);
        match self.jobs.len() {
            1 => writeln!(self.out, "  t={t:.3}s node {name} {what}"),
            _ => writeln!(
                self.out,
                "  t={t:.3}s node {name} ({}) {what}",
                self.jobs[j].name
            ),
        }
    }

    /// A draining node leaves: it stops the job's processes, tells the head, and its daemon
    /// exits, to start again after `restart_after`.
    fn leave(&mut self, node: HostIdx, restart_after: Duration) -> std::io::Result<()> {
        writeln!(
            self.out,
            "  t={:.3}s node {} leaves the cluster",
            self.now.as_secs_f64(),
            self.hosts[node].name
        )?;
        self.host_core(node, |core, _| core.end_all());
        if let Some(id) = self.hosts[node].head_id {
            let request = ToControl::Leave { node: id };
            let what = What::Head {
                from: Place::Node(node),
                request,
            };
            self.send(Place::Node(node), Place::Head, 64, what);
        }
        self.daemon_exits(node);
        self.hosts[node].draining = None;
        let up = self.now + restart_after;
        self.at(up, What::NodeUp { node });
        Ok(())
    }

    /// Whether a frame sent to `worker` while its node's view of its job was `epoch` still
    /// reaches it (the node lives, and has not lost and rejoined the job meanwhile).
    fn reaches(&self, worker: Wid, epoch: u64) -> bool {
        let host = &self.hosts[self.host_of(worker)];
        host.alive && host.views[worker.0].epoch == epoch
    }

    /// Worker `worker`'s hello passes its node's daemon on its way to the driver: with direct
    /// links, it names the worker's endpoint, and the grants that waited for it go out.
    fn hello_at_daemon(&mut self, node: HostIdx, worker: Wid) {
        let Some(conn) = self.hosts[node].views[worker.0].daemon_conn else {
            return;
        };
        if !direct_links(self.config) {
            return;
        }
        let hello = prism_transport::ToNode::Hello(prism_transport::Hello {
            protocol: prism_transport::PROTOCOL_VERSION,
            fingerprint: 0,
            worker: worker.1,
            pid: self.workers.get(&worker).map_or(0, |w| w.pid),
            direct: Some(endpoint_of(worker)),
        });
        let mut bytes = Vec::new();
        if prism_transport::encode_frame(&hello, &mut bytes).is_err() {
            return;
        }
        let Ok(Some(frame)) = prism_transport::Frame::whole(&bytes, 1 << 20) else {
            return;
        };
        let Ok(msg) = frame.access::<prism_transport::ToNode>() else {
            return;
        };
        let job = self.jobs[worker.0].name.clone();
        self.host_core(node, |core, now| {
            core.take_up((&job, conn), worker.1, msg, (now, &peer_of));
        });
    }

    /// `node`'s daemon exits (its workers went already): it forgets everything.
    fn daemon_exits(&mut self, node: HostIdx) {
        let host = &mut self.hosts[node];
        host.alive = false;
        host.core = new_host_core(host.name.clone(), self.config);
        host.timer_at = None;
        for view in &mut host.views {
            view.daemon_conn = None;
            view.drop_objects();
            view.peers.clear();
            view.stalled.clear();
        }
    }

    /// A frozen or cut-off node is back: it learns that jobs dropped their connections, or
    /// that leases ran out, before anything else; then no actor may run twice.
    fn resume(&mut self, node: HostIdx) -> std::io::Result<()> {
        let host = &self.hosts[node];
        if !host.alive || host.cut_off(self.now) {
            return Ok(());
        }
        for j in 0..self.jobs.len() {
            let view = &self.hosts[node].views[j];
            let dropped = view
                .daemon_conn
                .is_some_and(|conn| !view.connected || conn != conn_id(j, view.epoch));
            if dropped {
                self.connection_closed(j, node);
            }
        }
        self.host_core(node, |core, now| core.handle_timeout(now));
        let here: Vec<(JobIdx, ActorId)> = self
            .incarnations
            .iter()
            .filter(|(_, ran)| {
                ran.iter().any(|w| {
                    self.host_of(*w) == node && self.workers.get(w).is_some_and(|w| w.alive)
                })
            })
            .map(|(actor, _)| *actor)
            .collect();
        for actor in here {
            self.check_incarnations(actor);
        }
        Ok(())
    }

    fn main_loop(&mut self) -> std::io::Result<()> {
        while let Some(Reverse(due)) = self.queue.pop() {
            self.now = due.at;
            if self.now > self.config.time_limit {
                break;
            }
            let Some(what) = self.driver_turn(due.what) else {
                continue;
            };
            self.report.steps += 1;
            self.step(what)?;
            if self.report.violation.is_none()
                && self
                    .report
                    .steps
                    .is_multiple_of(self.config.check_every.max(1))
            {
                self.check();
            }
            if self.report.violation.is_some() {
                break;
            }
            if self.all_quiet() {
                break;
            }
        }
        Ok(())
    }

    /// Whether every driver released everything and the world had time to settle since:
    /// work of other branches still running when a result failed is done, and frees held
    /// back by a frozen or cut-off node arrive once it is back.
    fn all_quiet(&mut self) -> bool {
        let now = self.now;
        let mut settled = Duration::ZERO;
        for job in &mut self.jobs {
            let Some(at) = job.driver.released_at else {
                return false;
            };
            if job.node.owner.task_count() > 0 {
                return false;
            }
            let quiet = *job.quiet_since.get_or_insert(now);
            settled = settled.max(at.max(quiet));
        }
        let back = self
            .hosts
            .iter()
            .map(|h| h.frozen_until.max(h.partitioned_until))
            .fold(settled, Duration::max);
        now >= back + QUIESCE
    }

    /// A driver handles one event at a time: what reaches it while it is busy waits its
    /// turn, in order. Returns what to handle now (`None`: it waits).
    fn driver_turn(&mut self, what: What) -> Option<What> {
        let for_driver = |w: &What| match w {
            What::Driver { job, .. } | What::Tick(job) | What::Probe(job) => Some(*job),
            _ => None,
        };
        let what = match what {
            What::DriverTurn(j) => {
                let job = &mut self.jobs[j];
                let next = job.driver_backlog.pop_front()?;
                if !job.driver_backlog.is_empty() {
                    let at = self.now + self.config.driver_cost;
                    self.at(at, What::DriverTurn(j));
                }
                next
            }
            what => match for_driver(&what) {
                Some(j)
                    if self.jobs[j].driver_free > self.now
                        || !self.jobs[j].driver_backlog.is_empty() =>
                {
                    let job = &mut self.jobs[j];
                    if job.driver_backlog.is_empty() {
                        let at = job.driver_free.max(self.now);
                        self.at(at, What::DriverTurn(j));
                    }
                    self.jobs[j].driver_backlog.push_back(what);
                    return None;
                }
                _ => what,
            },
        };
        if let Some(j) = for_driver(&what) {
            self.jobs[j].driver_free = self.now + self.config.driver_cost;
        }
        Some(what)
    }

    fn step(&mut self, what: What) -> std::io::Result<()> {
        // A frozen node's daemon and workers handle what reaches them once they run again.
        let at_node = match &what {
            What::Host { node, .. }
            | What::Peer { node, .. }
            | What::LeaseTimer { node, .. }
            | What::BinaryFetched { node, .. }
            | What::Joined { node, .. }
            | What::Granted { node, .. } => Some(*node),
            What::Worker { worker, .. } => Some(self.host_of(*worker)),
            _ => None,
        };
        if let Some(node) = at_node
            && self.hosts[node].frozen_until > self.now
        {
            let at = self.hosts[node].frozen_until;
            self.at(at, what);
            return Ok(());
        }
        match what {
            What::Driver { job, via, what } => {
                if let Some((node, epoch)) = via
                    && self.hosts[node].views[job].epoch != epoch
                {
                    return Ok(()); // the job dropped that connection meanwhile
                }
                self.at_driver(job, what)?;
            }
            What::Host {
                job,
                node,
                epoch,
                request,
            } => {
                let host = &self.hosts[node];
                let hosting = host.core.hosts(&self.jobs[job].name);
                if !host.alive || !hosting || host.views[job].epoch != epoch {
                    return Ok(());
                }
                self.at_host(job, node, conn_id(job, epoch), request);
            }
            What::Peer {
                node,
                life,
                job,
                from,
                message,
            } => {
                let host = &self.hosts[node];
                if !host.alive || host.life != life {
                    return Ok(());
                }
                // As the real daemon: an owner that asks is one whose workers' ends go back
                // to its node.
                if let prism_transport::PeerLease::Ask { owner, .. } = &message {
                    let event = HostEvent::OwnerAt {
                        job: self.jobs[job].name.clone(),
                        owner: *owner,
                        node: peer_address(from),
                    };
                    self.host_core(node, |core, now| core.handle(event, now));
                }
                let binary_from = match &message {
                    prism_transport::PeerLease::Ask {
                        binary_from: Some(at),
                        ..
                    } => host_of_address(at).map(Some),
                    _ => None,
                };
                let event = HostEvent::Peer {
                    job: self.jobs[job].name.clone(),
                    from: peer_address(from),
                    source: Some(from),
                    binary_from,
                    message,
                };
                self.host_core(node, |core, now| core.handle(event, now));
            }
            What::Worker {
                worker,
                epoch,
                frames,
                from,
            } => {
                if !self.reaches(worker, epoch) {
                    return Ok(());
                }
                // As the real daemon: a push from another node's owner reaches a worker of
                // the pool only under that owner's lease.
                let host = &self.hosts[self.host_of(worker)];
                let job = &self.jobs[worker.0].name;
                if let Some((owner, kind)) = from
                    && !host.core.takes_from_peer(job, kind, owner, worker.1)
                {
                    self.report.stale_pushes += 1;
                    return Ok(());
                }
                if let Some((owner, _)) = from {
                    // As the real daemon: the owner's node is where its ends go, and whom to
                    // ask about it.
                    let event = HostEvent::OwnerAt {
                        job: job.clone(),
                        owner,
                        node: peer_address(self.host_of((worker.0, owner))),
                    };
                    let node = self.host_of(worker);
                    self.host_core(node, |core, now| core.handle(event, now));
                }
                self.at_worker(worker, &frames, None);
            }
            What::WorkerUp { worker } => {
                let node = self.host_of(worker);
                if self.workers.get(&worker).is_some_and(|w| w.alive) && self.hosts[node].alive {
                    let idx = node_of(worker.1);
                    if crate::proto::nodes::pool_numbers(idx).contains(&worker.1) {
                        // Started by the node for its pool: the driver learns of it from
                        // its relayed link.
                        let pid = self.workers.get(&worker).map_or(0, |w| w.pid);
                        let relayed = AtDriver::Relayed {
                            worker: worker.1,
                            pid,
                        };
                        self.tell_driver(worker.0, node, 64, relayed);
                    }
                    let hello = AtDriver::Hello { worker: worker.1 };
                    self.tell_driver(worker.0, node, 64, hello);
                    self.hello_at_daemon(node, worker);
                }
            }
            What::Direct {
                worker,
                epoch,
                frames,
                from,
            } => {
                if self.reaches(worker, epoch) {
                    self.at_worker(worker, &frames, Some(from));
                }
            }
            What::TaskEnd {
                worker,
                task,
                run,
                creation,
            } => self.task_end(worker, task, run, creation),
            What::FetchEnd {
                conn,
                node,
                life,
                id,
                len,
                from,
                stalled,
                since,
            } => {
                let view = &mut self.hosts[node].views[job_of(conn)];
                let ended_already = stalled && !view.unstall(id, from);
                if !ended_already {
                    let took = self.now.saturating_sub(since);
                    self.report.slowest_fetch = self.report.slowest_fetch.max(took);
                    self.fetch_end(conn, node, life, id, len, from);
                }
            }
            What::Head { from, request } => self.at_head(from, request),
            What::Beat { node, life } => {
                let host = &self.hosts[node];
                if !host.alive || host.life != life {
                    return Ok(());
                }
                if !host.cut_off(self.now) {
                    match host.head_id {
                        Some(id) => {
                            let request = ToControl::Heartbeat {
                                node: id,
                                available: Vec::new(),
                                pulled: PullStats::default(),
                                usage: prism_transport::NodeUsage::default(),
                            };
                            self.send(
                                Place::Node(node),
                                Place::Head,
                                128,
                                What::Head {
                                    from: Place::Node(node),
                                    request,
                                },
                            );
                        }
                        None => self.register(node),
                    }
                }
                let next = self.now + self.config.heartbeat;
                self.at(next, What::Beat { node, life });
            }
            What::Tick(j) => {
                self.proto(j, |node, now| {
                    let _ = node.handle(Event::Tick, now);
                });
                // A head silent for too long is connected to again: subscribe anew (lost while
                // the head is down, and tried again after another silence).
                let job = &mut self.jobs[j];
                let silent = job.heard.is_none_or(|at| self.now >= at + HEAD_SILENCE);
                let driver = Place::Driver(j);
                if silent {
                    job.heard = Some(self.now);
                    let request = job.members.watch();
                    let what = What::Head {
                        from: driver,
                        request,
                    };
                    self.send(driver, Place::Head, 64, what);
                }
                let report = ToControl::Report {
                    job: self.jobs[j].name.clone(),
                    pending: Vec::new(),
                    used: Vec::new(),
                };
                let what = What::Head {
                    from: driver,
                    request: report,
                };
                self.send(driver, Place::Head, 256, what);
                self.publish(j);
                let next = self.now + TICK;
                self.at(next, What::Tick(j));
            }
            What::HeadTick => {
                let now = self.base + self.now;
                if let Some(head) = self.head.as_mut() {
                    head.check(now);
                    self.tell_subscriber(None);
                }
                let next = self.now + SILENCE_CHECK;
                self.at(next, What::HeadTick);
            }
            What::Probe(j) => {
                self.probe(j);
                if self.jobs[j].driver.released_at.is_none() {
                    let next = self.now + PROBE;
                    self.at(next, What::Probe(j));
                }
            }
            What::Fault(fault) => self.fault(fault)?,
            What::Chaos { turn } => self.chaos(turn)?,
            What::DrainEnd {
                node,
                life,
                restart_after,
            } => {
                let host = &self.hosts[node];
                if host.alive && host.life == life && host.draining.is_some() {
                    self.leave(node, restart_after)?;
                }
            }
            What::NodeUp { node } => {
                let host = &mut self.hosts[node];
                host.alive = true;
                host.life += 1;
                host.head_id = None;
                let life = host.life;
                let t = self.now.as_secs_f64();
                writeln!(self.out, "  t={t:.3}s node {} restarted", host.name)?;
                self.register(node);
                let next = self.now + self.config.heartbeat;
                self.at(next, What::Beat { node, life });
            }
            What::HeadUp => {
                let now = self.base + self.now;
                // The saved state stays where it is (a head killed again before it saves
                // anything recovers the same again), as the real head's file does.
                let saved = self.saved_head.clone();
                self.head_epoch += 1;
                let (timeout, epoch) = (self.config.node_timeout, self.head_epoch);
                let grace = control::reconnect_grace(self.config.heartbeat);
                self.head = Some(ControlStore::recover(timeout, epoch, saved, now, grace));
                writeln!(
                    self.out,
                    "  t={:.3}s head restarted",
                    self.now.as_secs_f64()
                )?;
            }
            // Taken from the backlog by the main loop.
            What::DriverTurn(_) => {}
            What::LeaseTimer { node, life } => self.lease_timer(node, life),
            What::BinaryFetched {
                node,
                life,
                conn,
                result,
            } => {
                let host = &mut self.hosts[node];
                if host.alive && host.life == life {
                    if result.is_ok() {
                        host.binaries.insert(job_of(conn));
                    }
                    let fetched = HostEvent::BinaryFetched { conn, result };
                    self.host_core(node, |core, now| core.handle(fetched, now));
                }
            }
            What::Restored {
                node,
                life,
                conn,
                req,
                id,
            } => {
                let host = &mut self.hosts[node];
                if !host.alive || host.life != life {
                    return Ok(());
                }
                let view = &mut host.views[job_of(conn)];
                let restored = view.spilled.remove(&id) && view.store.contains_key(&id);
                self.report.restored += u64::from(restored);
                let result = match restored {
                    true => Ok(()),
                    false => Err(format!("object {id} is not on node {}'s disk", host.name)),
                };
                self.host_core(node, |core, now| {
                    core.handle(HostEvent::Performed { conn, req, result }, now)
                });
            }
            What::Joined { job, node, life } => self.joined(job, node, life)?,
            What::Renew {
                job,
                node,
                epoch,
                seq,
            } => {
                let view = &self.hosts[node].views[job];
                if view.connected && view.epoch == epoch {
                    self.jobs[job].driver.renewed[node] = self.now;
                    let granted = What::Granted {
                        job,
                        node,
                        epoch,
                        seq,
                    };
                    self.send(Place::Driver(job), Place::Node(node), 32, granted);
                }
            }
            What::Granted {
                job,
                node,
                epoch,
                seq,
            } => {
                let host = &self.hosts[node];
                if host.alive && host.views[job].epoch == epoch {
                    let conn = conn_id(job, epoch);
                    let renewed = HostEvent::Renewed { conn, seq };
                    self.host_core(node, |core, now| core.handle(renewed, now));
                }
            }
            What::Resume { node } => self.resume(node)?,
            What::IdleCheck { job, node, epoch } => {
                let host = &self.hosts[node];
                let view = &host.views[job];
                if view.epoch != epoch || !view.connected {
                    return Ok(());
                }
                let hosting = host.core.hosts(&self.jobs[job].name);
                let silent = !host.alive || !hosting || host.cut_off(self.now);
                if silent {
                    let reason = format!(
                        "its connection timed out after {} s without an answer",
                        self.config.idle_timeout.as_secs()
                    );
                    self.node_lost(job, node, reason, false)?;
                }
            }
        }
        Ok(())
    }

    fn register(&mut self, node: NodeIdx) {
        let request = ToControl::Register {
            name: self.hosts[node].name.clone(),
            addr: format!("10.0.{}.{}:7000", node / 250, node % 250),
            resources: vec![("CPU".into(), f64::from(self.config.cpus))],
            boot: self.hosts[node].life,
        };
        self.send(
            Place::Node(node),
            Place::Head,
            256,
            What::Head {
                from: Place::Node(node),
                request,
            },
        );
    }

    fn at_head(&mut self, from: Place, request: ToControl) {
        let now = self.base + self.now;
        let Some(head) = self.head.as_mut() else {
            return; // the head is down: the request is lost
        };
        self.report.control_messages += 1;
        if let (ToControl::Leave { node }, Place::Node(from)) = (&request, from) {
            let _ = head.leave(*node, &self.hosts[from].name);
            if head.changed() {
                self.saved_head = head.snapshot();
            }
            self.tell_subscriber(None);
            return;
        }
        if let (ToControl::Watch { epoch, after }, Place::Driver(j)) = (&request, from) {
            // The subscription's stream: served from this version on.
            self.jobs[j].subscriber = Some((*epoch, *after, self.now));
            self.tell_subscriber(Some(j));
            return;
        }
        let job_update = match &request {
            ToControl::Job(update) => Some(update.seq),
            _ => None,
        };
        let answer = head.handle(request, now);
        if head.changed() {
            self.saved_head = head.snapshot();
        }
        if let (Some(seq), Place::Driver(j)) = (job_update, from) {
            let taken = answer == FromControl::Ack;
            if taken {
                self.directory_agrees(j, seq);
            }
            let what = AtDriver::JobAnswer { seq, taken };
            let what = What::Driver {
                job: j,
                via: None,
                what,
            };
            self.send(Place::Head, Place::Driver(j), 64, what);
        }
        if let (Place::Node(node), FromControl::Registered(id)) = (from, answer) {
            self.hosts[node].head_id = Some(id);
        }
        self.tell_subscriber(None);
    }

    /// The head tells its subscribers what changed since it last did (or that nothing did,
    /// once every keep-alive period; `at_once`: a new subscription, told at once), as the
    /// head's daemon does.
    fn tell_subscriber(&mut self, at_once: Option<JobIdx>) {
        let now = self.base + self.now;
        for j in 0..self.jobs.len() {
            let (Some(head), Some((epoch, after, spoke))) =
                (self.head.as_mut(), self.jobs[j].subscriber)
            else {
                continue;
            };
            let quiet = head.version() == after && self.now < spoke + control::KEEPALIVE;
            if at_once != Some(j) && quiet {
                continue;
            }
            let update = head.updates(epoch, after, now);
            self.jobs[j].subscriber = Some((update.epoch, update.version, self.now));
            let bytes = 64 + 128 * (update.nodes.len() + update.gone.len()) as u64;
            let what = AtDriver::Members(update);
            let what = What::Driver {
                job: j,
                via: None,
                what,
            };
            self.send(Place::Head, Place::Driver(j), bytes, what);
        }
    }

    /// The driver tells the head what changed in its actors and placement groups (each tick,
    /// unless its last update is unanswered; one unanswered for [`HEAD_ANSWER`] counts lost).
    fn publish(&mut self, j: JobIdx) {
        let job = &mut self.jobs[j];
        let (actors, groups) = (job.node.actor_directory(), job.node.group_directory());
        let at_ms = self.now.as_millis() as u64;
        let update = job
            .publisher
            .update(actors.clone(), groups.clone(), at_ms, false);
        let Some(update) = update else {
            return;
        };
        let (seq, entries) = (update.seq, update.actors.len() + update.groups.len());
        if update.complete {
            job.published.push_back((seq, actors, groups));
        }
        let what = What::Head {
            from: Place::Driver(j),
            request: ToControl::Job(update),
        };
        self.send(
            Place::Driver(j),
            Place::Head,
            256 + 64 * entries as u64,
            what,
        );
        let what = AtDriver::JobAnswer { seq, taken: false };
        let what = What::Driver {
            job: j,
            via: None,
            what,
        };
        self.at(self.now + HEAD_ANSWER, what);
    }

    /// The head took the driver's update `seq`: if it was complete, the head's directory of
    /// the job must now hold the driver's actors and groups as they were when the update was
    /// made (each as the driver had it; what the driver no longer kept, ended).
    fn directory_agrees(&mut self, j: JobIdx, seq: u64) {
        let job = &mut self.jobs[j];
        while job.published.front().is_some_and(|(s, ..)| *s < seq) {
            job.published.pop_front();
        }
        let (Some(head), Some((_, actors, groups))) = (
            self.head.as_mut(),
            job.published.front().filter(|(s, ..)| *s == seq),
        ) else {
            return; // not a complete update
        };
        let kept = head.jobs().into_iter().find(|k| k.job == job.name);
        if let Err(disagrees) = kept
            .ok_or_else(|| "it lacks the job".to_string())
            .and_then(|job| same_directory(&job, actors, groups))
        {
            self.report.violation = Some(format!(
                "the head took job {}'s update {seq} but its directory is not the driver's: {disagrees}",
                job.name
            ));
        }
    }

    fn at_driver(&mut self, j: JobIdx, what: AtDriver) -> std::io::Result<()> {
        match what {
            AtDriver::Spawned { worker, pid } => self.proto(j, |node, now| {
                let _ = node.handle(Event::WorkerSpawned { worker, pid }, now);
            }),
            AtDriver::Exited { worker, reason } => self.proto(j, |node, now| {
                let _ = node.handle(Event::WorkerExited { worker, reason }, now);
            }),
            AtDriver::Hello { worker } => {
                self.jobs[j].links.remove(&worker);
                let direct = direct_links(self.config).then(|| endpoint_of((j, worker)));
                self.proto(j, |node, now| {
                    let _ = node.handle(Event::WorkerConnected { worker, direct }, now);
                })
            }
            AtDriver::Lent { node, lent } => self.proto(j, |n, now| {
                let event = match lent {
                    Ok((worker, pid)) => Event::NodeLent { node, worker, pid },
                    Err(reason) => Event::NodeLendFailed { node, reason },
                };
                let _ = n.handle(event, now);
            }),
            AtDriver::Relayed { worker, pid } => self.proto(j, |n, now| {
                let node = node_of(worker);
                let _ = n.handle(Event::NodeStartedWorker { node, worker, pid }, now);
            }),
            AtDriver::Eof { worker } => self.proto(j, |node, now| {
                let _ = node.handle(Event::WorkerEof { worker }, now);
            }),
            AtDriver::Frames {
                worker,
                frames,
                way,
            } => {
                self.decoder.extend(&frames);
                let mut decoded = Vec::new();
                while let Ok(Some(frame)) = self.decoder.next_frame() {
                    decoded.push(frame);
                }
                // The worker's two ways, read in the order it sent on them.
                let decoded = match self.jobs[j].links.get_mut(&worker) {
                    None if way == Way::Link => return Ok(()),
                    None => decoded,
                    Some(merge) => {
                        let mut due = Vec::new();
                        for frame in decoded {
                            let lane = frame
                                .access::<ToNode>()
                                .map_or(Lane::Either, lane_of_archived);
                            if merge.take(way, (lane, frame), &mut due).is_err() {
                                self.report.violation =
                                    Some(format!("worker {worker}'s ways overflowed"));
                            }
                        }
                        due
                    }
                };
                let messages: Vec<&prism_transport::ArchivedToNode> = decoded
                    .iter()
                    .filter_map(|f| f.access::<ToNode>().ok())
                    .collect();
                for msg in &messages {
                    if let prism_transport::ArchivedToNode::Done { ended, .. } = msg {
                        for entry in ended.iter() {
                            let id = ObjectId::new(entry.task.to_native(), 0);
                            self.touched.push((j, id));
                        }
                    }
                }
                let mut mapped = IdMap::default();
                self.proto(j, |node, now| {
                    let messages = Event::Messages {
                        worker,
                        messages: &messages,
                        mapped: &mut mapped,
                    };
                    let _ = node.handle(messages, now);
                });
            }
            AtDriver::Fetched { node, id, result } => self.proto(j, |n, now| {
                let _ = n.handle(Event::NodeFetched { node, id, result }, now);
            }),
            AtDriver::Granted {
                node,
                shape,
                result,
            } => self.proto(j, |n, now| {
                let event = match result {
                    Ok(()) => Event::Granted { node, shape },
                    Err(reason) => Event::GrantRefused {
                        node,
                        shape,
                        reason,
                    },
                };
                let _ = n.handle(event, now);
            }),
            AtDriver::Reclaim { node, keep } => self.proto(j, |n, now| {
                let _ = n.handle(Event::Reclaim { node, keep }, now);
            }),
            AtDriver::Pulled { id, len, from, ok } => {
                let event = if ok {
                    let bytes = ObjectBytes::inline(&vec![0; len as usize]);
                    Event::Localized { id, bytes }
                } else {
                    let name = &self.hosts[self.host_at(j, from)].name;
                    let reason = format!("pull from {name} timed out");
                    Event::PullFailed { id, from, reason }
                };
                self.touched.push((j, id));
                self.proto(j, |n, now| {
                    let _ = n.handle(event, now);
                });
            }
            AtDriver::JobAnswer { seq, taken } => self.jobs[j].publisher.answered(seq, taken),
            AtDriver::JobEnded { node } => {
                if self.hosts[node].views[j].connected {
                    let reason = "it drained and stopped the job's processes".to_string();
                    self.node_lost(j, node, reason, true)?;
                }
            }
            AtDriver::Fenced { node } => {
                if self.hosts[node].views[j].connected {
                    let reason = format!(
                        "it stopped the job's processes: its lease ran out ({} s without a renewal)",
                        self.config.lease.as_secs_f64()
                    );
                    self.node_lost(j, node, reason, true)?;
                }
            }
            AtDriver::Members(update) => {
                let job = &mut self.jobs[j];
                job.heard = Some(self.now);
                job.members.apply(update);
                let table = job.members.table();
                for node in 0..self.hosts.len() {
                    let listed = table.iter().any(|s| s.name == self.hosts[node].name);
                    if !listed && self.hosts[node].views[j].connected {
                        let reason = "the control store no longer lists it".to_string();
                        self.node_lost(j, node, reason, false)?;
                    }
                }
                for status in &table {
                    let Some(node) = self.hosts.iter().position(|h| h.name == status.name) else {
                        continue;
                    };
                    let view = &self.hosts[node].views[j];
                    if status.draining {
                        if view.connected && status.boot == view.joined_life {
                            let (idx, reason) = (view.idx, "it drains".to_string());
                            self.proto(j, |n, now| {
                                let _ = n.handle(Event::NodeDraining { node: idx, reason }, now);
                            });
                        }
                    } else if status.alive && view.connected && status.boot != view.joined_life {
                        let reason = "its daemon was restarted".to_string();
                        self.node_lost(j, node, reason, false)?;
                        self.offer_job(j, node);
                    } else if status.alive {
                        self.offer_job(j, node);
                    } else if view.connected {
                        let reason = format!(
                            "the control store has not heard from it for {} ms",
                            status.last_seen_ms
                        );
                        self.node_lost(j, node, reason, false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The job gives up on a node (the shell calls the node's `NodeLost`); `stopped`: the
    /// node said it stopped the job's processes, else they may run until its lease ends.
    fn node_lost(
        &mut self,
        j: JobIdx,
        node: HostIdx,
        reason: String,
        stopped: bool,
    ) -> std::io::Result<()> {
        let idx = self.hosts[node].views[j].idx;
        let renewed = self.base + self.jobs[j].driver.renewed[node];
        let lease_end = match stopped || !self.config.fencing {
            true => self.base + self.now,
            false => lease::driver_end(renewed, self.config.lease),
        };
        let job = match self.jobs.len() {
            1 => "the job".to_string(),
            _ => format!("job {}", self.jobs[j].name),
        };
        writeln!(
            self.out,
            "  t={:.3}s {job} lost node {}: {reason}",
            self.now.as_secs_f64(),
            self.hosts[node].name
        )?;
        self.proto(j, |n, now| {
            let _ = n.handle(
                Event::NodeLost {
                    node: idx,
                    reason,
                    lease_end,
                },
                now,
            );
        });
        // The node's relayed worker links end with it.
        let view = &mut self.hosts[node].views[j];
        if view.connected {
            view.connected = false;
            view.epoch += 1;
        }
        Ok(())
    }

    /// A request of the job's connection `conn` reaches `node`'s daemon.
    fn at_host(&mut self, j: JobIdx, node: HostIdx, conn: ConnId, request: HostRequest) {
        use host::Request;
        let (request, asked) = match request {
            HostRequest::Spawn {
                worker,
                binary_from,
            } => {
                let binary_from = binary_from.map(|idx| Some(self.host_at(j, idx)));
                let request = Request::Spawn {
                    worker,
                    binary_from,
                };
                (request, Asked::Spawn(worker))
            }
            HostRequest::Kill { worker } => (Request::Kill { worker }, Asked::Nothing),
            HostRequest::Fetch { id, len, from } => {
                let from = from.map(|idx| self.host_at(j, idx));
                (Request::Fetch { id, len, from }, Asked::Fetch(id))
            }
            HostRequest::Free(ids) => (Request::Free(ids), Asked::Nothing),
            HostRequest::Drop(ids) => (Request::Drop(ids), Asked::Nothing),
            HostRequest::DropOwnedBy { owner, keep } => {
                (Request::DropOwnedBy { owner, keep }, Asked::Nothing)
            }
            HostRequest::Spill(objects) => (Request::Spill(objects), Asked::Nothing),
            HostRequest::Restore { id, len } => (Request::Restore { id, len }, Asked::Fetch(id)),
            HostRequest::EndJob => (Request::EndJob, Asked::EndJob),
            HostRequest::Grant { shape } => {
                let request = Request::Grant {
                    shape: shape.clone(),
                };
                (request, Asked::Grant(shape))
            }
            HostRequest::Return { resources } => (Request::Return { resources }, Asked::Nothing),
            HostRequest::Peers { joined, left } => {
                (Request::Peers { joined, left }, Asked::Nothing)
            }
            HostRequest::Pool {
                numbers,
                max_workers,
                elsewhere,
            } => {
                let request = Request::Pool {
                    first: numbers.start,
                    end: numbers.end,
                    max_workers,
                    elsewhere,
                };
                (request, Asked::Nothing)
            }
            HostRequest::LeaseWorker { beyond_cap } => {
                (Request::LeaseWorker { beyond_cap }, Asked::Lend)
            }
            HostRequest::ReturnWorker { worker } => {
                (Request::ReturnWorker { worker }, Asked::Nothing)
            }
            HostRequest::KeepWorker { worker } => (Request::KeepWorker { worker }, Asked::Nothing),
            HostRequest::ForgetPeer { lost } => {
                let at = Some(self.host_at(j, lost));
                (Request::ForgetPeer { at }, Asked::Nothing)
            }
        };
        self.ask_host(node, conn, request, asked);
    }

    /// `node`'s daemon pulls `id` (`len` bytes) from `from` (`None`: the driver).
    fn pull(&mut self, conn: ConnId, node: HostIdx, id: ObjectId, len: u64, from: Option<HostIdx>) {
        let j = job_of(conn);
        let life = self.hosts[node].life;
        let view = &self.hosts[node].views[j];
        if view.store.get(&id) == Some(&len) && !view.spilled.contains(&id) {
            // As the real shell: a segment already here of the length asked is not pulled.
            let pulled = HostEvent::Pulled {
                conn,
                id,
                len,
                result: Ok(false),
            };
            return self.host_event(node, pulled);
        }
        let reachable = match from {
            Some(peer) => {
                let p = &self.hosts[peer];
                p.alive && !p.cut_off(self.now)
            }
            None => true,
        };
        let mut stalled = false;
        let at = if reachable {
            let from_place = from.map_or(Place::Driver(j), Place::Node);
            self.arrival(from_place, Place::Node(node), len) + self.config.latency
        } else {
            // A pull over a connection made before the peer died waits for QUIC's idle
            // timeout (or the driver's word); a new connection gives up after the connect
            // timeout.
            let view = &mut self.hosts[node].views[j];
            match from.filter(|p| view.peers.contains_key(p)) {
                Some(peer) => {
                    stalled = true;
                    let since = self.now;
                    view.stalled.push(Stalled {
                        id,
                        len,
                        peer,
                        since,
                        conn,
                    });
                    self.now + self.config.idle_timeout
                }
                None => self.now + self.config.connect_timeout,
            }
        };
        let end = What::FetchEnd {
            conn,
            node,
            life,
            id,
            len,
            from,
            stalled,
            since: self.now,
        };
        self.at(at, end);
    }

    /// Peer `peer` is gone: `node`'s connection to it closes, and the pulls stalled on it
    /// fail now.
    fn forget_peer(&mut self, j: JobIdx, node: HostIdx, peer: HostIdx) {
        let life = self.hosts[node].life;
        let view = &mut self.hosts[node].views[j];
        view.peers.remove(&peer);
        let (ended, kept): (Vec<Stalled>, Vec<Stalled>) = std::mem::take(&mut view.stalled)
            .into_iter()
            .partition(|s| s.peer == peer);
        view.stalled = kept;
        for s in ended {
            let what = What::FetchEnd {
                conn: s.conn,
                node,
                life,
                id: s.id,
                len: s.len,
                from: Some(s.peer),
                stalled: false,
                since: s.since,
            };
            self.at(self.now, what);
        }
    }

    fn fetch_end(
        &mut self,
        conn: ConnId,
        node: HostIdx,
        life: u64,
        id: ObjectId,
        len: u64,
        from: Option<HostIdx>,
    ) {
        let j = job_of(conn);
        if !self.hosts[node].alive || self.hosts[node].life != life {
            return;
        }
        // The job's store the pull was for went with its connection: nothing to keep.
        let store_gone = self.hosts[node].views[j].daemon_conn != Some(conn);
        let found = match from {
            Some(peer) => {
                let p = &self.hosts[peer];
                let stale = self.hosts[node].views[j]
                    .peers
                    .get(&peer)
                    .is_some_and(|&l| l != p.life);
                p.alive && !stale && p.views[j].store.contains_key(&id)
            }
            // The driver's own store: what it pulled for its readers.
            None => true,
        };
        if let Some(peer) = from {
            // The connection stays open for later pulls (or is dropped when it failed).
            let life = self.hosts[peer].life;
            match found {
                true => self.hosts[node].views[j].peers.insert(peer, life),
                false => self.hosts[node].views[j].peers.remove(&peer),
            };
        }
        let result = if store_gone {
            Err(format!("the store {id} was pulled into is gone"))
        } else if found {
            let new = self.hosts[node].views[j].store.insert(id, len).is_none();
            self.report.pulls += u64::from(new);
            Ok(new)
        } else {
            Err(format!(
                "cannot pull {id} from {}: unreachable or gone",
                from.map_or("the driver".to_string(), |p| self.hosts[p].name.clone())
            ))
        };
        self.host_core(node, |core, now| {
            core.handle(
                HostEvent::Pulled {
                    conn,
                    id,
                    len,
                    result,
                },
                now,
            )
        });
    }

    /// `frames` reach `worker` from its node, or (`direct`) on a direct link (see
    /// [`What::Direct`]).
    fn at_worker(&mut self, worker: Wid, frames: &[u8], direct: Option<Option<u64>>) {
        if !self.workers.get(&worker).is_some_and(|w| w.alive) {
            return;
        }
        self.decoder.extend(frames);
        let mut decoded = Vec::new();
        while let Ok(Some(frame)) = self.decoder.next_frame() {
            decoded.push(frame);
        }
        let mut stop = None;
        // An owner's link names its node (its hello), for the pulls of its arguments.
        let owner_node = match direct {
            Some(Some(owner)) => Some(peer_address(self.host_of((worker.0, owner)))),
            _ => None,
        };
        for frame in decoded {
            let Ok(msg) = frame.access::<prism_transport::ToWorker>() else {
                continue;
            };
            if let ArchivedToWorker::Execute(batch) | ArchivedToWorker::Push(batch) = msg {
                self.report.dispatched += batch.len() as u64;
            }
            let Some(w) = self.workers.get_mut(&worker) else {
                return;
            };
            // Values it asked for are never read here: a simulated task only sleeps.
            w.core.set_now(self.now.as_micros() as u64);
            let mut open = |_: &prism_transport::ArchivedValue| Ok(ObjectBytes::inline(&[]));
            let handled = match direct {
                None => w.core.handle(msg, &mut open),
                Some(from) => {
                    if from == Some(DRIVER_OWNER) {
                        if let Err(refused) = w.core.driver_linked(DRIVER_ENDPOINT) {
                            self.report.violation = Some(format!("{refused}"));
                        }
                    } else if let (Some(owner), Some(node)) = (from, &owner_node) {
                        w.core.direct_from(owner, node);
                    }
                    match w.core.handle_direct(from, frame, &mut open) {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(refused)) => {
                            self.report.violation = Some(format!(
                                "worker {worker:?} refused a direct frame: {refused}"
                            ));
                            Ok(())
                        }
                        Err(stop) => Err(stop),
                    }
                }
            };
            if let Err(e) = handled {
                stop = Some(e);
                break;
            }
        }
        match stop {
            Some(Stop::Shutdown) => self.kill(worker, Some("exited as asked".into())),
            Some(Stop::Lost(reason)) => self.kill(worker, Some(reason)),
            None => {
                self.children_done(worker);
                self.transmit(worker);
                self.start_next(worker);
            }
        }
    }

    /// A parent of the nested workload runs on `worker`: it submits `share` children from
    /// the worker (owned as the worker's tasks are) and blocks in `get` for them, its CPU
    /// given back. No child runs on top of it here (it names none it awaits): the node runs
    /// them on its workers.
    ///
    /// With [`Config::parents_call`] the children are calls to the driver's actors in turn.
    fn spawn_children(&mut self, worker: Wid, share: u64) {
        let max_retries = self.config.max_retries;
        let actors = match self.config.parents_call {
            true => self.jobs[worker.0].driver.actors.clone(),
            false => Vec::new(),
        };
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let mut ids = Vec::with_capacity(share as usize);
        let pipeline = self.config.workload == Workload::Pipeline;
        for i in 0..share {
            w.seq += 1;
            let task = TaskId::new(worker.1, w.seq);
            let actor = actors.get(i as usize % actors.len().max(1)).copied();
            let spec = match actor {
                Some(actor) if !pipeline => TaskSpec {
                    kind: TaskKind::ActorCall(actor),
                    ..TaskSpec::call(task, "sim::Actor::call", Vec::new())
                },
                // Pairs: a large object made wherever there is room, then a task reading it
                // (the parent keeps only the reader's reference), or an actor's call when
                // the parents call actors.
                _ if pipeline && i % 2 == 0 && i + 1 < share => {
                    let large = self.config.large;
                    self.jobs[worker.0].driver.large.insert(task, large);
                    w.core.submit(
                        one_cpu_task(task, "sim::leaf", Vec::new(), max_retries),
                        None,
                    );
                    continue;
                }
                _ if pipeline && i % 2 == 1 => {
                    let made = ObjectId::new(TaskId::new(worker.1, w.seq - 1), 0);
                    let read = match actor {
                        Some(actor) => TaskSpec {
                            kind: TaskKind::ActorCall(actor),
                            ..TaskSpec::call(task, "sim::Actor::call", vec![Arg::Ref(made)])
                        },
                        None => {
                            let mut read =
                                one_cpu_task(task, "sim::sum", vec![Arg::Ref(made)], max_retries);
                            (read.resources.set(READ, 1.0)).expect("a slot");
                            read
                        }
                    };
                    w.core.submit(read, None);
                    w.core.release(made);
                    ids.push(ObjectId::new(task, 0));
                    continue;
                }
                Some(actor) => TaskSpec {
                    kind: TaskKind::ActorCall(actor),
                    ..TaskSpec::call(task, "sim::Actor::call", Vec::new())
                },
                None => one_cpu_task(task, "sim::work", Vec::new(), max_retries),
            };
            ids.push(ObjectId::new(spec.task_id, 0));
            w.core.submit(spec, None);
        }
        w.core.request(&ids);
        w.core.block(IdSet::default());
        w.children = Some(Children::Awaited { ids, cursor: 0 });
        self.report.tasks += share as usize;
        self.transmit(worker);
    }

    /// The parent blocked on `worker` has every child's value: it resumes, lets them go and
    /// ends.
    fn children_done(&mut self, worker: Wid) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let Some(Children::Awaited { ids, cursor }) = &mut w.children else {
            return;
        };
        if !w.core.enough(ids, ids.len(), cursor) {
            return;
        }
        w.core.unblock();
        for &id in ids.iter() {
            w.core.release(id);
        }
        w.children = Some(Children::Gathered);
        let (Some(task), run) = (w.current, w.run) else {
            return;
        };
        self.task_end(worker, task, run, false);
    }

    /// An actor's constructor reached `worker`: a new incarnation, which must be the only
    /// one running.
    fn incarnation_starts(&mut self, actor: (JobIdx, ActorId), worker: Wid) {
        let ran = self.incarnations.entry(actor).or_default();
        ran.retain(|w| self.workers.get(w).is_some_and(|w| w.alive));
        ran.push(worker);
        self.check_incarnations(actor);
    }

    /// No actor runs two incarnations at once (a frozen process does not run).
    fn check_incarnations(&mut self, actor: (JobIdx, ActorId)) {
        let Some(ran) = self.incarnations.get(&actor) else {
            return;
        };
        let running: Vec<Wid> = ran
            .iter()
            .copied()
            .filter(|w| self.workers.get(w).is_some_and(|w| w.alive))
            .filter(|&w| self.hosts[self.host_of(w)].frozen_until <= self.now)
            .collect();
        if let [first, second, ..] = running[..] {
            let describe = |w: Wid| {
                let host = &self.hosts[self.host_of(w)];
                let cut = if host.partitioned_until > self.now {
                    ", partitioned"
                } else {
                    ""
                };
                format!("worker {} on {}{cut}", w.1, host.name)
            };
            self.report.violation = Some(format!(
                "actor {} runs two incarnations at once: {} and {}",
                actor.1,
                describe(first),
                describe(second)
            ));
        }
    }

    fn start_next(&mut self, worker: Wid) {
        let node = self.host_of(worker);
        loop {
            let Some(w) = self.workers.get_mut(&worker) else {
                return;
            };
            if !w.alive || w.current.is_some() {
                return;
            }
            let Some(exec) = w.core.next_task() else {
                return;
            };
            let task = exec.task;
            let j = worker.0;
            *self.jobs[j].driver.attempts.entry(task).or_default() += 1;
            let creation = match exec.kind {
                TaskKind::ActorCreation { actor, .. } => {
                    self.incarnation_starts((j, actor), worker);
                    true
                }
                _ => false,
            };
            let view = &self.hosts[node].views[j];
            let (store, spilled) = (&view.store, &view.spilled);
            let mappable = |id: &ObjectId| store.contains_key(id) && !spilled.contains(id);
            let missing = exec
                .args
                .iter()
                .enumerate()
                .find_map(|(i, value)| match value {
                    Value::Shared { id, .. } if !mappable(id) => Some((i as u32, *id)),
                    _ => None,
                });
            if let Some((index, object)) = missing {
                // As a real worker: the segment is not there to map.
                let error = TaskError::ArgumentMissing {
                    task,
                    function: "sim::sum".into(),
                    index,
                    object,
                    reason: "No such file or directory (os error 2)".into(),
                };
                self.report.missing_arguments += 1;
                *self.jobs[j].driver.missing.entry(task).or_default() += 1;
                self.done(worker, task, Outcome::Failed(error));
                continue;
            }
            let Some(w) = self.workers.get_mut(&worker) else {
                return;
            };
            w.current = Some(task);
            let run = w.run;
            if !self.jobs[j].driver.parents.contains_key(&task) {
                self.hosts[node].running += 1;
            }
            let t = self.config.task_time;
            let end = self.now + self.rng.between(t / 2, t * 3 / 2);
            let end_of = What::TaskEnd {
                worker,
                task,
                run,
                creation,
            };
            self.at(end, end_of);
            return;
        }
    }

    fn task_end(&mut self, worker: Wid, task: TaskId, run: u64, creation: bool) {
        let node = self.host_of(worker);
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        if !w.alive || w.run != run || w.current != Some(task) {
            return;
        }
        let frozen_until = self.hosts[node].frozen_until;
        if frozen_until > self.now {
            // A frozen process makes no progress: it ends that much later.
            let again = What::TaskEnd {
                worker,
                task,
                run,
                creation,
            };
            self.at(frozen_until + (frozen_until - self.now), again);
            return;
        }
        let parent = self.jobs[worker.0].driver.parents.get(&task).copied();
        if let Some(share) = parent.filter(|_| !creation) {
            let Some(w) = self.workers.get_mut(&worker) else {
                return;
            };
            if w.children.take().is_none() {
                // The parent's body: submit its children, then wait for them.
                return self.spawn_children(worker, share);
            }
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.current = None;
        }
        if parent.is_none() {
            self.hosts[node].running -= 1;
        }
        if creation {
            let constructed = Outcome::Returned {
                values: Vec::new(),
                nested: Vec::new(),
                actors: Vec::new(),
            };
            self.done(worker, task, constructed);
            self.start_next(worker);
            return;
        }
        let id = ObjectId::new(task, 0);
        let j = worker.0;
        let value = match self.jobs[j].driver.large.get(&task) {
            Some(&len) if len >= INLINE_LIMIT => {
                self.hosts[node].views[j].store.insert(id, len);
                Value::Shared { id, len }
            }
            Some(&len) => Value::Inline(vec![7; len as usize]),
            None => {
                // Small results name the attempt: a stale report that replaced a later one
                // would change the value the driver sees.
                let attempt = self.jobs[j].driver.attempts.get(&task);
                let attempt = attempt.copied().unwrap_or(0);
                Value::Inline(fingerprint(task, attempt).to_le_bytes().to_vec())
            }
        };
        let outcome = Outcome::Returned {
            values: vec![value],
            nested: vec![Vec::new()],
            actors: Vec::new(),
        };
        self.done(worker, task, outcome);
        self.start_next(worker);
    }

    /// The worker reports a task's end to the driver (through its node).
    fn done(&mut self, worker: Wid, task: TaskId, outcome: Outcome) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.core.ended(RunEnd {
                task,
                outcome,
                timing: None,
            });
        }
        self.transmit(worker);
    }

    /// The worker sends the driver what its books owe it (through its node), and the
    /// workers it has direct links with theirs.
    fn transmit(&mut self, worker: Wid) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        let out = std::mem::take(w.core.transmit(|| 0));
        let direct = w.core.take_direct();
        let (held, dropped) = w.core.take_push_counts();
        let unlinked = w.core.take_unlinked();
        self.report.held_pushes += held;
        self.report.stale_pushes += dropped;
        let host = self.host_of(worker);
        // As the real worker: the segments of its own objects nobody holds go.
        let view = &mut self.hosts[host].views[worker.0];
        for id in unlinked {
            view.store.remove(&id);
            view.spilled.remove(&id);
        }
        for (to, frames) in direct {
            let (target, from) = match to {
                DirectTo::Endpoint(endpoint) => match worker_at(&endpoint) {
                    Some(target) => (target, Some(worker.1)),
                    None => {
                        self.report.violation = Some(format!("no worker at {endpoint}"));
                        continue;
                    }
                },
                DirectTo::Owner(DRIVER_OWNER) => {
                    // On the driver's link: no relay, straight to the driver.
                    let bytes = frames.len() as u64;
                    let way = Way::Link;
                    let what = AtDriver::Frames {
                        worker: worker.1,
                        frames,
                        way,
                    };
                    self.tell_driver(worker.0, host, bytes, what);
                    continue;
                }
                DirectTo::Owner(owner) => ((worker.0, owner), None),
            };
            // Worker to worker over the network: no relay at either end.
            let to_host = self.host_of(target);
            let bytes = frames.len() as u64;
            let at = self.arrival(Place::Node(host), Place::Node(to_host), bytes);
            let epoch = self.hosts[to_host].views[worker.0].epoch;
            let what = What::Direct {
                worker: target,
                epoch,
                frames,
                from,
            };
            self.at(at, what);
        }
        if out.is_empty() {
            return;
        }
        // The node relays what the worker sends another worker of the job there (pushes and
        // ends of owned tasks) and passes the rest to the driver.
        self.decoder.extend(&out);
        let decoded: Vec<_> =
            std::iter::from_fn(|| self.decoder.next_frame().ok().flatten()).collect();
        let conn = self.hosts[host].views[worker.0].daemon_conn;
        let job = self.jobs[worker.0].name.clone();
        let mut frames = Vec::new();
        for frame in &decoded {
            let Ok(msg) = frame.access::<prism_transport::ToNode>() else {
                continue;
            };
            match crate::proto::relay::route(msg) {
                Route::Node => {
                    // The daemon takes what is its own (its pool's leases, as the real one
                    // reads its workers' links); the rest goes on to the driver.
                    let mut taken = false;
                    if let Some(conn) = conn.filter(|_| self.config.pools) {
                        self.ups_of = Some((worker, Vec::new()));
                        self.host_core(host, |core, now| {
                            taken = core.take_up((&job, conn), worker.1, msg, (now, &peer_of));
                        });
                        if let Some((_, ups)) = self.ups_of.take() {
                            frames.extend_from_slice(&ups);
                        }
                    }
                    if !taken {
                        let _ = prism_transport::encode_payload(frame.as_bytes(), &mut frames);
                    }
                }
                // To a worker here after the daemon's relay; to one on another node (a
                // lease there) over the network, after a relay at each end.
                Route::Worker {
                    to, frame, kind, ..
                } => {
                    let target = self.host_of((worker.0, to));
                    let epoch = self.hosts[target].views[worker.0].epoch;
                    let at = match target == host {
                        true => self.now + LOCAL_RELAY,
                        false => {
                            let bytes = frame.len() as u64;
                            self.arrival(Place::Node(host), Place::Node(target), bytes)
                                + 2 * LOCAL_RELAY
                        }
                    };
                    let what = What::Worker {
                        worker: (worker.0, to),
                        epoch,
                        frames: frame.to_vec(),
                        from: (target != host).then_some((worker.1, kind)),
                    };
                    self.at(at, what);
                }
                Route::Refused(reason) => self.report.violation = Some(reason),
            }
        }
        if frames.is_empty() {
            return;
        }
        let bytes = frames.len() as u64;
        let frames = AtDriver::Frames {
            worker: worker.1,
            frames,
            way: Way::Node,
        };
        self.tell_driver(worker.0, host, bytes, frames);
    }

    /// A worker's process ends; its node tells the driver with `reason` (none: its node is
    /// gone and tells nobody).
    fn kill(&mut self, worker: Wid, reason: Option<String>) {
        let node = self.host_of(worker);
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if !w.alive {
            return;
        }
        w.alive = false;
        w.run += 1;
        w.core = Worker::new(false, worker.1);
        w.children = None;
        let parents = &self.jobs[worker.0].driver.parents;
        if w.current.take().is_some_and(|t| !parents.contains_key(&t)) {
            self.hosts[node].running -= 1;
        }
        let view = &mut self.hosts[node].views[worker.0];
        view.workers.retain(|&x| x != worker.1);
        // Its daemon sees it exit and tells the job (not when the daemon itself went).
        if let Some(reason) = reason
            && self.hosts[node].alive
            && let Some(conn) = self.hosts[node].views[worker.0].daemon_conn
        {
            let exited = HostEvent::WorkerExited {
                conn,
                worker: worker.1,
                reason,
            };
            self.host_core(node, |core, now| core.handle(exited, now));
        }
    }

    /// The chaos plan kills its next node, and plans the kill after, until the driver has
    /// read its results.
    fn chaos(&mut self, turn: usize) -> std::io::Result<()> {
        let Some(chaos) = self.config.chaos else {
            return Ok(());
        };
        let done = self.jobs.iter().all(|j| j.driver.released_at.is_some());
        if done || self.hosts.len() < 2 {
            return Ok(());
        }
        let node = 1 + turn % (self.hosts.len() - 1);
        self.report.faults += 1;
        self.fault(Fault::KillNode {
            node,
            restart_after: chaos.restart_after,
        })?;
        self.at(self.now + chaos.every, What::Chaos { turn: turn + 1 });
        Ok(())
    }

    fn fault(&mut self, fault: Fault) -> std::io::Result<()> {
        let t = self.now.as_secs_f64();
        match fault {
            Fault::KillNode {
                node,
                restart_after,
            } => {
                writeln!(
                    self.out,
                    "  t={t:.3}s fault: kill node {} (restart after {:.3}s)",
                    self.hosts[node].name,
                    restart_after.as_secs_f64()
                )?;
                if !self.hosts[node].alive {
                    return Ok(());
                }
                for j in 0..self.jobs.len() {
                    for worker in std::mem::take(&mut self.hosts[node].views[j].workers) {
                        self.kill((j, worker), None);
                    }
                }
                self.daemon_exits(node);
                self.idle_checks(node);
                let up = self.now + restart_after;
                self.at(up, What::NodeUp { node });
            }
            Fault::DrainNode {
                node,
                restart_after,
            } => {
                writeln!(
                    self.out,
                    "  t={t:.3}s fault: stop node {} (it drains; restart after {:.3}s)",
                    self.hosts[node].name,
                    restart_after.as_secs_f64()
                )?;
                let host = &mut self.hosts[node];
                if !host.alive || host.draining.is_some() {
                    return Ok(());
                }
                host.draining = Some(restart_after);
                host.core.start_draining();
                let (life, name) = (host.life, host.name.clone());
                let what = What::Head {
                    from: Place::Node(node),
                    request: ToControl::Drain { name },
                };
                self.send(Place::Node(node), Place::Head, 64, what);
                let end = What::DrainEnd {
                    node,
                    life,
                    restart_after,
                };
                self.at(self.now + DRAIN_GRACE, end);
            }
            Fault::KillWorker { node } => {
                let views = self.hosts[node].views.iter().enumerate();
                let workers: Vec<Wid> = views
                    .flat_map(|(j, view)| view.workers.iter().map(move |&w| (j, w)))
                    .collect();
                if workers.is_empty() {
                    writeln!(
                        self.out,
                        "  t={t:.3}s fault: kill a worker of node {} (it has none)",
                        self.hosts[node].name
                    )?;
                    return Ok(());
                }
                let worker = workers[self.rng.below(workers.len() as u64) as usize];
                writeln!(
                    self.out,
                    "  t={t:.3}s fault: kill worker {} of node {}",
                    worker.1, self.hosts[node].name
                )?;
                self.kill(worker, Some("killed by signal 9 (SIGKILL)".into()));
            }
            Fault::Impair { node, how, lasting } => {
                writeln!(
                    self.out,
                    "  t={t:.3}s fault: {} node {} for {:.3}s",
                    how.verb(),
                    self.hosts[node].name,
                    lasting.as_secs_f64()
                )?;
                let until = self.now + lasting;
                let host = &mut self.hosts[node];
                let field = match how {
                    Impairment::Partition => &mut host.partitioned_until,
                    Impairment::Freeze => &mut host.frozen_until,
                    Impairment::Slow => &mut host.slow_until,
                };
                *field = (*field).max(until);
                if how != Impairment::Slow {
                    // A node that does not answer loses its connections after the idle timeout.
                    self.idle_checks(node);
                    self.at(until, What::Resume { node });
                }
            }
            Fault::KillHead { restart_after } => {
                writeln!(
                    self.out,
                    "  t={t:.3}s fault: kill the head (restart after {:.3}s)",
                    restart_after.as_secs_f64()
                )?;
                if self.head.take().is_some() {
                    for job in &mut self.jobs {
                        job.subscriber = None;
                    }
                    let up = self.now + restart_after;
                    self.at(up, What::HeadUp);
                }
            }
        }
        Ok(())
    }

    /// Every job's connection to `node` closes after the idle timeout unless something comes
    /// through meanwhile.
    fn idle_checks(&mut self, node: HostIdx) {
        let check = self.now + self.config.idle_timeout;
        for job in 0..self.jobs.len() {
            let epoch = self.hosts[node].views[job].epoch;
            self.at(check, What::IdleCheck { job, node, epoch });
        }
    }

    /// The driver's program: once every held object ended it reads them (a remote value is
    /// pulled, a lost one rebuilt), then drops every reference.
    fn probe(&mut self, j: JobIdx) {
        let waker = std::task::Waker::noop();
        while let Some(&id) = self.jobs[j].driver.held.get(self.jobs[j].driver.cursor) {
            let ended = match self.jobs[j].node.owner.peek(id) {
                Some(Slot::Ready(_) | Slot::Failed(_)) => true,
                Some(Slot::Remote(_)) => !self.jobs[j].driver.reading,
                _ => false,
            };
            if !ended {
                break;
            }
            self.jobs[j].driver.cursor += 1;
        }
        if self.jobs[j].driver.cursor < self.jobs[j].driver.held.len() {
            if self.jobs[j].driver.reading {
                // Ask again: a pull that failed or an object being rebuilt.
                let id = self.jobs[j].driver.held[self.jobs[j].driver.cursor];
                self.proto(j, |node, _| {
                    let _ = node.owner.poll(id, waker);
                    node.settle();
                });
            }
            return;
        }
        if !self.jobs[j].driver.reading {
            // Everything ended: now read, which pulls remote values here.
            self.jobs[j].driver.reading = true;
            self.jobs[j].driver.cursor = 0;
            let held = self.jobs[j].driver.held.clone();
            self.proto(j, |node, _| {
                for id in held {
                    let _ = node.owner.poll(id, waker);
                }
                node.settle();
            });
            return;
        }
        // Read: tally and release.
        // (Per held object only when there are many: a tree holds one.)
        if let (Some(probe), Some(base)) = (self.config.memory_probe, self.memory_base)
            && self.jobs[j].driver.held.len() >= 1_000
        {
            let grown = probe().saturating_sub(base);
            let objects = self.jobs[j].driver.held.len();
            self.report.bytes_per_object = Some(grown as f64 / objects as f64);
        }
        let held = std::mem::take(&mut self.jobs[j].driver.held);
        let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
        for &id in &held {
            match self.jobs[j].node.owner.peek(id) {
                Some(Slot::Failed(e)) => *errors.entry(error_kind(e)).or_default() += 1,
                _ => self.report.values += 1,
            }
        }
        for (kind, n) in errors {
            match self.report.errors.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, count)) => *count += n,
                None => self.report.errors.push((kind, n)),
            }
        }
        self.report.errors.sort();
        self.report.sim_time = self.now;
        let actors = std::mem::take(&mut self.jobs[j].driver.actors);
        self.proto(j, |node, _| {
            for id in held {
                node.release(id);
            }
            for actor in actors {
                node.actor_release(actor);
            }
            node.settle();
        });
        self.jobs[j].driver.released_at = Some(self.now);
    }

    /// The invariants that must hold after every step.
    fn check(&mut self) {
        // No node runs more tasks than it has CPUs.
        for host in &self.hosts {
            if host.running > self.config.cpus {
                self.report.violation = Some(format!(
                    "node {} runs {} tasks on {} CPUs",
                    host.name, host.running, self.config.cpus
                ));
                return;
            }
        }
        // An object's value never changes once seen (a retry or a rebuild makes the same).
        for (j, id) in std::mem::take(&mut self.touched) {
            let job = &mut self.jobs[j];
            let ended = match job.node.owner.peek(id) {
                Some(Slot::Ready(bytes)) => Ended::Value(hash_bytes(bytes.as_slice())),
                Some(Slot::Remote(len)) => Ended::Value(*len),
                Some(Slot::Failed(e)) => Ended::Error(e.to_string()),
                _ => continue,
            };
            let pulled = matches!(job.node.owner.peek(id), Some(Slot::Ready(_)))
                && job.driver.large.contains_key(&id.task);
            if pulled {
                continue; // a pulled copy of a remote value: its length was checked
            }
            match job.driver.ended.get(&id) {
                None => {
                    job.driver.ended.insert(id, ended);
                }
                Some(first) if *first == ended => {}
                Some(Ended::Value(_)) if matches!(ended, Ended::Error(_)) => {
                    // A value lost for good later (its rebuilds ran out): the error names it.
                }
                Some(first) => {
                    self.report.violation = Some(format!(
                        "object {id} of job {} ended twice differently: first {first:?}, then {ended:?}",
                        job.name
                    ));
                    return;
                }
            }
        }
    }

    /// Job `j` at the end of the run: every held object ended, every task ended once the
    /// driver dropped every reference, and nothing the job made is left on its nodes.
    fn job_finished(&mut self, j: JobIdx) {
        let job = &self.jobs[j];
        if job.driver.released_at.is_none() {
            let unfinished = job.driver.held.len() - job.driver.cursor.min(job.driver.held.len());
            self.report.sim_time = self.now;
            self.report.unfinished += unfinished;
            if self.report.violation.is_none() {
                let first = job.driver.held[job.driver.cursor.min(job.driver.held.len() - 1)];
                self.report.violation = Some(format!(
                    "{unfinished} held objects of job {} never ended within {} s of simulated time ({})",
                    job.name,
                    self.config.time_limit.as_secs(),
                    self.stuck(j, first)
                ));
            }
        } else if self.report.violation.is_none()
            && let Some(task) = job.node.owner.some_task()
        {
            self.report.violation = Some(format!(
                "{} tasks of job {} never ended after the driver dropped every reference ({})",
                job.node.owner.task_count(),
                job.name,
                self.stuck(j, ObjectId::new(task, 0))
            ));
        } else if self.report.violation.is_none() {
            // Freed objects are freed everywhere: nothing the job made is left in a store of a
            // node it still uses (the values a worker that died owned too).
            let used = |h: &&Host| h.alive && h.views[j].connected && h.core.hosts(&job.name);
            let left: usize = (self.hosts.iter().filter(used))
                .map(|h| h.views[j].store.len())
                .sum();
            if left > 0 {
                let (node, id) = self
                    .hosts
                    .iter()
                    .filter(used)
                    .find_map(|h| {
                        let id = h.views[j].store.keys().next()?;
                        Some((h.name.clone(), *id))
                    })
                    .expect("counted above");
                let known = job.node.owner.explain(id);
                self.report.violation = Some(format!(
                    "{left} objects of job {} stayed in nodes' stores after the driver dropped every reference (e.g. {id} on {node}, {known})",
                    job.name
                ));
            }
        }
    }

    fn finish(mut self, started: Instant) -> std::io::Result<Report> {
        if self.report.violation.is_none() {
            self.check();
        }
        for j in 0..self.jobs.len() {
            self.job_finished(j);
        }
        self.report.driver_messages = self.jobs.iter().map(|j| j.node.worker_messages()).sum();
        self.report.real = started.elapsed();
        self.report.most_runs = (self.jobs.iter())
            .flat_map(|job| {
                let missing = |task| job.driver.missing.get(task).copied().unwrap_or(0);
                (job.driver.attempts.iter()).map(move |(task, runs)| runs - missing(task))
            })
            .max()
            .unwrap_or(0);
        if self.report.slowest_fetch > Duration::ZERO {
            writeln!(
                self.out,
                "  slowest fetch between nodes: {:.3} s; tasks whose argument was missing on their node: {}; most runs of one task: {}",
                self.report.slowest_fetch.as_secs_f64(),
                self.report.missing_arguments,
                self.report.most_runs
            )?;
        }
        if self.report.stale_pushes > 0 || self.report.held_pushes > 0 {
            let (stale, held) = (self.report.stale_pushes, self.report.held_pushes);
            writeln!(
                self.out,
                "  pushes dropped after their lease ended: {stale}; pushes that waited for their lease's word: {held}"
            )?;
        }
        if let Some(v) = &self.report.violation {
            writeln!(self.out, "  invariant violated: {v}")?;
            writeln!(self.out, "  replay: {}", replay(self.config))?;
        }
        writeln!(self.out, "{}", self.report.summary())?;
        Ok(self.report)
    }
}

/// Whether `job` (the head's) holds `actors` and `groups` as they are, and what it holds
/// besides ended.
fn same_directory(
    job: &prism_transport::JobStatus,
    actors: &[ActorStatus],
    groups: &[GroupStatus],
) -> Result<(), String> {
    use prism_transport::{ActorState, GroupState, JobState};
    if job.state != JobState::Running {
        return Err(format!("it counts the running job {:?}", job.state));
    }
    for kept in &job.actors {
        let ended = matches!(kept.state, ActorState::Dead(_));
        match actors.iter().find(|a| a.id == kept.id) {
            Some(actor) if actor == kept => {}
            None if ended => {}
            driver => return Err(format!("actor {} is {kept:?}, not {driver:?}", kept.id)),
        }
    }
    if let Some(missing) = actors
        .iter()
        .find(|a| !job.actors.iter().any(|k| k.id == a.id))
    {
        return Err(format!("it lacks actor {}", missing.id));
    }
    for kept in &job.groups {
        let ended = kept.state == GroupState::Removed;
        match groups.iter().find(|g| g.id == kept.id) {
            Some(group) if group == kept => {}
            None if ended => {}
            driver => return Err(format!("group {} is {kept:?}, not {driver:?}", kept.id)),
        }
    }
    match groups
        .iter()
        .find(|g| !job.groups.iter().any(|k| k.id == g.id))
    {
        Some(missing) => Err(format!("it lacks group {}", missing.id)),
        None => Ok(()),
    }
}

impl World<'_> {
    /// Where the wait for `id` is stuck: the deepest unfinished task it waits on.
    fn stuck(&self, j: JobIdx, mut id: ObjectId) -> String {
        let owner = &self.jobs[j].node.owner;
        loop {
            let task = id.task;
            let Some(record) = owner.task(task) else {
                return format!(
                    "object {id} is {:?} and its task is not pending",
                    owner.peek(id)
                );
            };
            let waiting = record.spec.dependencies().find(|dep| {
                !matches!(
                    owner.peek(*dep),
                    Some(Slot::Ready(_) | Slot::Remote(_) | Slot::Failed(_))
                )
            });
            match waiting {
                Some(dep) => id = dep,
                None => {
                    let copies: Vec<String> = record
                        .spec
                        .dependencies()
                        .map(|dep| {
                            let on: Vec<&str> = self
                                .hosts
                                .iter()
                                .filter(|h| h.alive && h.views[j].store.contains_key(&dep))
                                .map(|h| h.name.as_str())
                                .collect();
                            format!("{dep} on {on:?}")
                        })
                        .collect();
                    return format!(
                        "task {task} is {:?} on worker {:?}, {}; its arguments: {}",
                        owner.task_state(task),
                        record.worker,
                        match self.jobs[j].node.nodes.locate(task) {
                            Some((node, at)) => format!("held by node {node}'s scheduler ({at:?})"),
                            None => "in no scheduler".to_string(),
                        },
                        copies.join(", ")
                    );
                }
            }
        }
    }
}

/// The command line that replays `config`.
fn replay(c: &Config) -> String {
    let d = Config::default();
    let mut line = format!(
        "prism-sim --nodes {} --cpus {} --tasks {} --workload {}",
        c.nodes,
        c.cpus,
        c.tasks,
        match c.workload {
            Workload::FanOut => "fanout",
            Workload::Tree => "tree",
            Workload::Broadcast => "broadcast",
            Workload::Nested => "nested",
            Workload::Pipeline => "pipeline",
        }
    );
    if c.drivers != d.drivers {
        line.push_str(&format!(" --drivers {}", c.drivers));
    }
    if c.actors > 0 {
        line.push_str(&format!(" --actors {} --calls {}", c.actors, c.calls));
    }
    if c.parents_call {
        line.push_str(" --parents-call");
    }
    if !c.grants {
        line.push_str(" --no-grants");
    }
    if !c.owners {
        line.push_str(" --driver-owns");
    }
    if !c.fencing {
        line.push_str(" --no-fencing");
    }
    if c.lease != d.lease {
        line.push_str(&format!(" --lease-ms {}", c.lease.as_millis()));
    }
    if c.faults {
        line.push_str(" --faults");
    }
    if let Some(n) = c.advertised_cpus {
        line.push_str(&format!(" --advertised-cpus {n}"));
    }
    if c.task_time != d.task_time {
        line.push_str(&format!(" --task-ms {}", c.task_time.as_secs_f64() * 1e3));
    }
    if c.large != d.large {
        line.push_str(&format!(" --large {}", c.large));
    }
    if c.binary != d.binary {
        line.push_str(&format!(" --binary-mib {}", c.binary >> 20));
    }
    if c.latency != d.latency {
        line.push_str(&format!(" --latency-us {}", c.latency.as_micros()));
    }
    if c.driver_cost != d.driver_cost {
        line.push_str(&format!(
            " --driver-us {}",
            c.driver_cost.as_secs_f64() * 1e6
        ));
    }
    if c.max_retries != d.max_retries {
        line.push_str(&format!(" --max-retries {}", c.max_retries));
    }
    if c.check_every != d.check_every {
        line.push_str(&format!(" --check-every {}", c.check_every));
    }
    if c.time_limit != d.time_limit {
        line.push_str(&format!(" --time-limit {}", c.time_limit.as_secs_f64()));
    }
    line.push_str(&format!(" --seed {}", c.seed));
    line
}

/// A simulated task of one CPU and one small result.
fn one_cpu_task(task: TaskId, function: &str, args: Vec<Arg>, max_retries: u32) -> TaskSpec {
    TaskSpec {
        resources: Resources::cpus(1.0).expect("one CPU"),
        max_retries,
        ..TaskSpec::call(task, function, args)
    }
}

fn fingerprint(task: TaskId, attempt: u32) -> u64 {
    let mut rng = Rng::new(task.seq ^ (task.owner << 48) ^ (u64::from(attempt) << 32));
    rng.next_u64()
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The kind of a task error, for the summary.
fn error_kind(error: &TaskError) -> String {
    let text = format!("{error:?}");
    text.split([' ', '{', '('])
        .next()
        .unwrap_or("Error")
        .to_string()
}
