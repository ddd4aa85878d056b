//! A node daemon's side of the jobs it hosts, without IO: which connection owns each job (only
//! a job's own driver may steer it), the node's lease on each job, refusing new jobs while the
//! node drains, the job's binary (fetched when the job first starts a worker here, not when it
//! joins: a node that runs none of the job's work never moves it), the job's workers, one
//! pull per object however many of the job's requests ask for it, and the node's resources
//! granted to the jobs' drivers ([`crate::proto::grants`]). The daemon's shell (`node::host`) reads the driver's requests off QUIC streams,
//! fetches binaries, makes stores, starts and kills processes, moves objects and files, and
//! feeds what happened back as [`Event`]s; the simulator runs this same code for its nodes.
//!
//! `P` names a peer the node pulls from (a socket address in the daemon, a node's number in
//! the simulator); `S` is what the shell made for a job it runs here (its executable and store
//! in the daemon), handed back with every action on the job.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use prism_graph::{ActorId, Amount, ObjectId, Resources, TaskId};
use prism_transport::{
    ArchivedToNode, FromHost, HostEvent, JobEvents, JobSummary, MAX_AWAITING, OwnedEvent,
    PeerLease, PullStats, ToNode, ToWorker,
};

use crate::proto::events::{TaskEvents, UnixClock};
use crate::proto::grants::{Answer, Grants};
use crate::proto::lease::{self, Lease};
use crate::proto::nodes::{self, NodeIdx};
use crate::proto::pool::{self, Asked, Decided, Lend, Pool, StartedFor};
use crate::proto::relay::Kind;
use crate::proto::spill::{self, Grant, Held, Next, Room, Spill, Told};

/// A connection of a driver to this node (the shell's number for it).
pub(crate) type ConnId = u64;

/// One request on a connection (the shell's number for it, unique on the node).
pub(crate) type ReqId = u64;

/// What a job asks of the node to run here ([`transport::ToHost::StartJob`] as data).
///
/// [`transport::ToHost::StartJob`]: prism_transport::ToHost::StartJob
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobStart<P> {
    /// SHA-256 of the job's executable.
    pub(crate) binary: [u8; 32],
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Where the driver serves the binary.
    pub(crate) from: P,
    /// Values at least this large go to the job's shared-memory store.
    pub(crate) inline_threshold: u64,
    /// The store's capacity in bytes.
    pub(crate) store_capacity: u64,
    /// How long the node's lease on the job runs after the driver's last renewal.
    pub(crate) lease: Duration,
    /// How many records of the tasks the job's workers here own the node keeps for the
    /// head (0: none).
    pub(crate) task_events: usize,
}

/// A driver's request to the node (the wire's [`prism_transport::ToHost`], addresses parsed).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request<P> {
    /// Prepare to run the job (its binary and store).
    StartJob(JobStart<P>),
    /// Start a worker process numbered `worker`, fetching the job's binary first from
    /// `binary_from` (another node that has it; none: the driver) if the node lacks it.
    Spawn { worker: u64, binary_from: Option<P> },
    /// Kill worker `worker`.
    Kill { worker: u64 },
    /// Make sure the job's store here holds `id` (`len` bytes), pulling it from `from`.
    Fetch { id: ObjectId, len: u64, from: P },
    /// Drop the node's copies of these freed objects.
    Free(Vec<ObjectId>),
    /// Drop the node's copies of these live objects (their segments are not reused).
    Drop(Vec<ObjectId>),
    /// Worker `owner` died: drop the segments of its objects but for `keep` (sorted), which
    /// the driver took over.
    DropOwnedBy { owner: u64, keep: Vec<ObjectId> },
    /// Peer `at` is gone: close the connections to it.
    ForgetPeer { at: P },
    /// The node drained for the job: stop its processes and drop its store here.
    EndJob,
    /// Move these objects (id, length) to the node's disk.
    Spill(Vec<(ObjectId, u64)>),
    /// Bring a spilled object back into the job's store.
    Restore { id: ObjectId, len: u64 },
    /// Grant the job `shape` of the node's resources (see [`crate::proto::grants`]).
    Grant { shape: Resources },
    /// The job gives back `resources` it was granted.
    Return { resources: Resources },
    /// The node may lease workers of its own, numbered from `first` to before `end`, at most
    /// `max_workers`, to the job's worker owners (see [`crate::proto::pool`]).
    Pool {
        first: u64,
        end: u64,
        max_workers: usize,
        /// The most of each resource any other node of the job has (see
        /// [`Pool::set_elsewhere`]).
        elsewhere: Resources,
    },
    /// Lend the driver a worker of the job's pool for its own tasks (see [`Pool::lend`]);
    /// `beyond_cap`: start one past the pool's cap at once.
    LeaseWorker { beyond_cap: bool },
    /// The driver gives idle worker `worker` to the job's pool.
    ReturnWorker { worker: u64 },
    /// Worker `worker` the pool lent the driver holds an actor: it leaves the pool.
    KeepWorker { worker: u64 },
    /// The job's other nodes its pool may pass asks on to changed (see
    /// [`crate::proto::spill`]): (peer address, resources in total) that joined, and the
    /// addresses of those that left.
    Peers {
        joined: Vec<(String, Resources)>,
        left: Vec<String>,
    },
}

/// Work on a job's files the shell does for a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FileWork {
    /// Unlink these objects from the store and the spill directory; `pool`: their segments
    /// may be reused (the objects were freed), else they go (a live object's copy, which a
    /// worker here may still map).
    Free { ids: Vec<ObjectId>, pool: bool },
    /// Unlink the segments of the objects worker `owner` owned (it died), but for `keep`
    /// (sorted).
    DropOwnedBy { owner: u64, keep: Vec<ObjectId> },
    /// Spill these objects (id, length) from the store to the disk.
    Spill(Vec<(ObjectId, u64)>),
    /// Restore this object from the disk.
    Restore { id: ObjectId, len: u64 },
}

/// Why a job ends on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Its driver's connection closed.
    DriverLeft,
    /// Its driver let the draining node go ([`Request::EndJob`]).
    Drained,
    /// No renewal of the node's lease for a whole lease.
    LeaseEnded,
    /// The daemon stops.
    DaemonStops,
    /// Its preparation was refused (the node drains, or the job is hosted already): only the
    /// files made for it go.
    Refused,
    /// The node could not get the job's binary.
    NoBinary,
}

/// Something that happened, for the books.
#[derive(Debug)]
pub(crate) enum Event<P, S> {
    /// A driver connected for job `job`.
    Connected { conn: ConnId, job: String },
    /// A request arrived on `conn`.
    Request {
        conn: ConnId,
        req: ReqId,
        request: Request<P>,
    },
    /// The shell prepared job `job` for request `req` ([`Action::Prepare`]); `cached`: the
    /// job's binary is here already.
    Prepared {
        conn: ConnId,
        req: ReqId,
        job: String,
        result: Result<S, String>,
        cached: bool,
    },
    /// The job on `conn` has its binary here now, or cannot get it ([`Action::FetchBinary`]).
    BinaryFetched {
        conn: ConnId,
        result: Result<(), String>,
    },
    /// The shell started worker `worker` of the job on `conn` ([`Action::Spawn`]).
    Spawned {
        conn: ConnId,
        req: ReqId,
        worker: u64,
        result: Result<u32, String>,
    },
    /// The shell started worker `worker` of the job on `conn` for a lease of the node's own
    /// ([`Action::Start`]): its pid, or why it could not.
    Started {
        conn: ConnId,
        worker: u64,
        result: Result<u32, String>,
    },
    /// A worker process of the job on `conn` ended, and how.
    WorkerExited {
        conn: ConnId,
        worker: u64,
        reason: String,
    },
    /// A pull for the job on `conn` ([`Action::Pull`]) ended; `Ok(true)`: the bytes came
    /// over the network (`Ok(false)`: the store held the object already).
    Pulled {
        conn: ConnId,
        id: ObjectId,
        len: u64,
        result: Result<bool, String>,
    },
    /// The shell did the work of request `req` ([`Action::Files`], [`Action::ForgetPeer`]).
    Performed {
        conn: ConnId,
        req: ReqId,
        result: Result<(), String>,
    },
    /// The driver answered renewal `seq` of the lease on its connection's job.
    Renewed { conn: ConnId, seq: u64 },
    /// The connection closed.
    Closed { conn: ConnId },
    /// Node `from` (its daemon's peer address) sent `message` for job `job`'s pool here (see
    /// [`crate::proto::spill`]); `source`: where that node serves the job's binary;
    /// `binary_from`: where the node an ask names serves it (its `binary_from`, as the shell
    /// reads the address), if it names one.
    Peer {
        job: String,
        from: String,
        source: P,
        binary_from: Option<P>,
        message: PeerLease,
    },
    /// Owner `owner` of job `job` is on node `node` (a peer address): frames of its for
    /// workers here come from there. That node speaks for it as its pool's asks do (a lease
    /// the driver granted here to an owner there brings no ask).
    OwnerAt {
        job: String,
        owner: u64,
        node: String,
    },
}

/// What the shell must do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<P, S> {
    /// Answer request `req` on `conn`.
    Reply {
        conn: ConnId,
        req: ReqId,
        reply: FromHost,
    },
    /// Make the job's store and see whether its binary is cached (checked against its hash);
    /// then [`Event::Prepared`].
    Prepare {
        conn: ConnId,
        req: ReqId,
        job: String,
        start: JobStart<P>,
    },
    /// Pull the job's binary from `from` (the driver, `start.from`, or a node that has it)
    /// and check it; then [`Event::BinaryFetched`].
    FetchBinary {
        conn: ConnId,
        job: String,
        start: JobStart<P>,
        from: P,
    },
    /// Start worker `worker` of the job; then [`Event::Spawned`].
    Spawn {
        conn: ConnId,
        req: ReqId,
        worker: u64,
        setup: S,
    },
    /// Start worker `worker` of the job for a lease of the node's own; then
    /// [`Event::Started`].
    Start { conn: ConnId, worker: u64, setup: S },
    /// Kill worker `worker` of the job on `conn` (its exit comes as [`Event::WorkerExited`]).
    Kill { conn: ConnId, worker: u64 },
    /// Write `message` to worker `worker` of the job on `conn`, on its link.
    Write {
        conn: ConnId,
        worker: u64,
        message: Box<ToWorker>,
    },
    /// Remove these objects' segments from the job's store (copies of other nodes' owners'
    /// objects that their owners dropped); `pool`: no worker here maps them (values made
    /// here, pulled by their owners' nodes), so the segments may be reused. Nothing waits
    /// for it.
    Unlink {
        /// The job's connection.
        conn: ConnId,
        setup: S,
        ids: Vec<ObjectId>,
        pool: bool,
    },
    /// Send `message` to the job's driver as if worker `worker` had (an ask the node took
    /// and could not grant), after what the worker sent before the node decided.
    Up {
        conn: ConnId,
        worker: u64,
        message: Box<ToNode>,
    },
    /// Pull `id` (`len` bytes) from `from` into the job's store unless it is there; then
    /// [`Event::Pulled`].
    Pull {
        conn: ConnId,
        job: String,
        id: ObjectId,
        len: u64,
        from: P,
        setup: S,
    },
    /// Do `work` on the job's files; then [`Event::Performed`].
    Files {
        conn: ConnId,
        req: ReqId,
        setup: S,
        work: FileWork,
    },
    /// Close the connections to peer `at`; then [`Event::Performed`].
    ForgetPeer { conn: ConnId, req: ReqId, at: P },
    /// The job ended here: kill these workers of it and remove what was made for it.
    EndJob {
        conn: ConnId,
        job: String,
        why: Ending,
        workers: Vec<u64>,
        setup: S,
    },
    /// Tell the job's driver on `conn`.
    Tell { conn: ConnId, event: HostEvent },
    /// Send `message` to job `job`'s pool on node `to` (its daemon's peer address).
    Peer {
        job: String,
        to: String,
        message: PeerLease,
    },
    /// Close connection `conn`, saying why.
    Close {
        conn: ConnId,
        why: Ending,
        reason: String,
    },
}

/// A job the node runs.
#[derive(Debug)]
struct Job<P, S> {
    /// The driver's connection, the only one that may steer the job.
    conn: ConnId,
    setup: S,
    /// Its worker processes and their pids.
    workers: HashMap<u64, u32>,
    /// The job's number for this node, as its workers' numbers carry it (known once one
    /// started): a worker numbered for it ran here, and the tasks it ran are reported as this
    /// node's even after it exited (a record is named when it is reported).
    idx: Option<NodeIdx>,
    lease: Lease,
    binary: Binary<P>,
    /// The task events of the tasks the job's workers here own, for the head.
    events: OwnedReports,
    /// The node's own workers for the leases of the job's worker owners, once the driver
    /// allowed them ([`Request::Pool`]).
    pool: Option<Pool>,
    /// The asks the pool passed on to the job's other nodes, the leases they granted to its
    /// owners, and the other nodes' owners it leased to.
    spill: Spill,
    /// Copies of other nodes' owners' objects pulled here as arguments of tasks they pushed
    /// to workers here, by owner: they go when the owner drops them, dies or leaves.
    copies: HashMap<u64, HashSet<ObjectId>>,
    /// Owners on other nodes this node heard are gone (dead, or their node left): a copy
    /// or a value for one of them that comes after that goes at once.
    owners_gone: HashSet<u64>,
    /// Owners on other nodes whose nodes were asked to say when they go ([`PeerLease::Watch`])
    /// for what this node keeps for them.
    watched_owners: HashSet<u64>,
    /// Values tasks of other nodes' owners left here for their nodes to pull, by owner
    /// ([`prism_transport::ToNode::KeptFor`]): they go once pulled, or the owner is gone.
    kept: HashMap<u64, HashSet<ObjectId>>,
    /// Asks other nodes' owners made here first, near their tasks' arguments, that this
    /// node's pool had no room for: held for room to come back until each is due, then
    /// refused ([`PeerLease::Ask`]'s `near`).
    near_held: Vec<NearHeld>,
    /// Owners on other nodes whose frames came here, and their nodes ([`Event::OwnerAt`]).
    owner_nodes: HashMap<u64, String>,
    /// The other nodes this node's workers sent frames to (pushes to workers leased there,
    /// by the driver's grant or another pool's) or were leased workers by (whose values
    /// those nodes may keep for them after the lease ended), by worker: told when the worker
    /// dies.
    sent_to: HashMap<u64, HashSet<String>>,
    /// The actors each worker holds handles to (its `HoldActors` and `ReleaseActors`, on their
    /// way to the driver): an idle one still owes them calls, and its pool keeps it.
    handles: HashMap<u64, HashSet<ActorId>>,
    /// The other nodes whose pools asked this one, and the room each thinks it has: what it
    /// was last told ([`PeerLease::Room`]) less the asks it sent since, as it counts them.
    told: BTreeMap<String, Told>,
    /// Workers whose hello came, and the direct endpoint each named (`None`: it has none).
    hellos: HashMap<u64, Option<String>>,
    /// Grants to owners on other nodes waiting for their worker's hello (see
    /// [`Hosting::grant_afar`]): (owner's node, owner, lease key) by worker.
    unsaid: HashMap<u64, Vec<(String, u64, TaskId)>>,
    /// The nodes (peer addresses) of other nodes' workers leased to owners here, as their
    /// grants said: the task events name where those workers' tasks ran (their ends come
    /// on direct links, past the relays that otherwise tell).
    leased_at: HashMap<u64, String>,
    /// Workers watched by workers here (lenders and borrowers of objects:
    /// [`prism_transport::ToNode::WatchWorker`]), here or on other nodes, and their watchers:
    /// told when it is gone.
    watchers: HashMap<u64, Vec<u64>>,
}

/// Whether idle worker `worker` still owes work its pool does not see: tasks it owns on
/// other nodes' leases (`spill`), or calls to actors whose handles it holds (`handles`: each
/// call holds its actor's handle till it ends). Its pool keeps it.
fn owes_work(spill: &Spill, handles: &HashMap<u64, HashSet<ActorId>>, worker: u64) -> bool {
    spill.owns_work(worker) || handles.contains_key(&worker)
}

impl<P, S> Job<P, S> {
    /// Its worker `worker` runs here as process `pid` (its number says the job's number for
    /// this node).
    fn started(&mut self, worker: u64, pid: u32) {
        self.workers.insert(worker, pid);
        self.idx = Some(nodes::node_of(worker));
    }

    /// Worker `watcher` watches worker `watched` (once however often it asks): true when it
    /// is the first to.
    fn watch(&mut self, watched: u64, watcher: u64) -> bool {
        let watchers = self.watchers.entry(watched).or_default();
        let first = watchers.is_empty();
        if !watchers.contains(&watcher) {
            watchers.push(watcher);
        }
        first
    }

    /// See [`owes_work`].
    fn owes_work(&self, worker: u64) -> bool {
        owes_work(&self.spill, &self.handles, worker)
    }

    /// The node of owner `owner` on another node, as its pool's asks or its frames said.
    fn owner_node(&self, owner: u64) -> Option<&str> {
        (self.spill.owner_at(owner)).or_else(|| self.owner_nodes.get(&owner).map(String::as_str))
    }
}

/// The task events of the tasks a job's workers on this node own, and what the head was told.
#[derive(Debug)]
struct OwnedReports {
    events: TaskEvents,
    /// The summary last reported (none: none yet, or the head is to hear it all again).
    reported: Option<JobSummary>,
}

impl OwnedReports {
    fn new(capacity: usize) -> Self {
        let mut events = TaskEvents::new(capacity);
        events.report_to_head();
        OwnedReports {
            events,
            reported: None,
        }
    }

    /// Job `job`'s report, times by `clock` and each worker's node named by `node_name`: the
    /// records that changed since the last and the counts, if either changed.
    fn report(
        &mut self,
        job: &str,
        clock: &UnixClock,
        node_name: impl Fn(u64) -> String,
    ) -> Option<JobEvents> {
        if !self.events.on() {
            return None;
        }
        let tasks = self.events.changed_records(clock, node_name);
        let summary = JobSummary {
            job: job.to_string(),
            tasks: self.events.counts(),
            objects: Vec::new(),
            times: self.events.times().to_vec(),
        };
        let unchanged = match &self.reported {
            Some(last) => *last == summary,
            None => summary.tasks.is_empty(),
        };
        if tasks.is_empty() && unchanged {
            return None;
        }
        self.reported = Some(summary.clone());
        Some(JobEvents { tasks, summary })
    }

    /// The head is to hear everything again.
    fn all_again(&mut self) {
        self.events.all_changed();
        self.reported = None;
    }
}

/// A job that ended here with task events not reported yet: its name, connection, its number
/// for this node (see `Job::idx`), and the events.
/// A job that ended here: its name, connection, node index, the nodes of the workers other
/// nodes leased to its owners, and its last task events.
type EndedReports = (
    String,
    ConnId,
    Option<NodeIdx>,
    HashMap<u64, String>,
    OwnedReports,
);

/// Where a job's binary is on the node.
#[derive(Debug)]
enum Binary<P> {
    /// Here, checked.
    Ready,
    /// Not fetched yet: what the job said of it.
    Missing(JobStart<P>),
    /// Being fetched; these requests wait for it. `from_peer`: from another node, so that a
    /// failure fetches it from the driver before the job gives up.
    Fetching {
        start: JobStart<P>,
        from_peer: bool,
        waiting: Vec<(ReqId, Waiter)>,
    },
}

/// A request that waits for the job's binary.
#[derive(Debug, Clone)]
enum Waiter {
    /// A spawn of this worker.
    Spawn(u64),
    /// A borrow of the driver's ([`Request::LeaseWorker`]).
    Lend { beyond_cap: bool },
    /// Owner `owner` of node `from` asks for a lease of `shape` keyed `key`.
    Afar {
        owner: u64,
        key: TaskId,
        shape: Resources,
        from: String,
        near: bool,
    },
}

/// Reads a peer address a worker's frame names (see [`Hosting::take_up`]).
pub(crate) type PeerOf<'a, P> = &'a dyn Fn(&str) -> Option<P>;

/// How long a node holds an ask made there first, near its task's arguments, for room to
/// come back before it refuses it (about what a 64 MiB pull takes here, which the refusal
/// would cost).
const NEAR_HOLD: Duration = Duration::from_millis(50);

/// An ask held near its task's arguments ([`Job::near_held`]).
#[derive(Debug)]
struct NearHeld {
    owner: u64,
    key: TaskId,
    shape: Resources,
    /// The asking node's peer address.
    from: String,
    /// When it is refused if still held.
    until: Instant,
}

/// A pull in progress and the requests waiting for it.
#[derive(Debug, Default)]
struct Pull {
    waiting: Vec<(ConnId, ReqId)>,
    /// Workers of the job waiting for it ([`prism_transport::ToNode::Fetch`]).
    workers: Vec<u64>,
    /// The node that made the object for an owner here (its peer address): once the bytes
    /// are here its copy goes ([`PeerLease::Drop`]).
    made_at: Option<String>,
    /// The owner on another node whose argument this is: the copy is its to drop.
    copy_for: Option<u64>,
}

/// The jobs a node hosts (see the module's docs).
#[derive(Debug)]
pub(crate) struct Hosting<P, S> {
    /// The node's name, for errors.
    name: String,
    /// Open driver connections and the job each was opened for.
    connections: HashMap<ConnId, String>,
    jobs: HashMap<String, Job<P, S>>,
    /// Starts being prepared: their connection, job and what the job asked.
    preparing: HashMap<ReqId, (ConnId, String, JobStart<P>)>,
    /// Pulls in progress by (job's connection, object): a pull for a job that ended answers
    /// no later incarnation of it.
    pulls: HashMap<(ConnId, ObjectId), Pull>,
    /// Frees and drops of a job's copies under way (their requests, with the job's
    /// connection and the objects).
    freeing: HashMap<ReqId, (ConnId, Vec<ObjectId>)>,
    /// Fetches asked after a free or drop of the same object that is still under way: they
    /// start once it is done (else the free could remove the copy the fetch brought, or the
    /// fetch find the copy the free is about to remove).
    after_free: Vec<(ConnId, ReqId, Request<P>)>,
    /// Objects pulled from other hosts so far.
    pulled: PullStats,
    /// The node's resources, shared out among the jobs' drivers.
    grants: Grants,
    /// The node leaves: it takes no new job.
    draining: bool,
    /// The time of the last event or timeout (what the room told is paced by).
    now: Option<Instant>,
    /// Jobs that ended here, their last task events for the head's next report.
    ended_reports: Vec<EndedReports>,
    /// The jobs' workers have direct endpoints (the shell gives each the node's identity):
    /// a grant to an owner on another node waits for its worker's hello, which names it.
    direct_links: bool,
    actions: VecDeque<Action<P, S>>,
}

impl<P: Clone, S: Clone> Hosting<P, S> {
    /// A node named `name` of `total` resources, hosting nothing.
    pub(crate) fn new(name: String, total: Resources) -> Self {
        Hosting {
            name,
            grants: Grants::new(total),
            connections: HashMap::new(),
            jobs: HashMap::new(),
            preparing: HashMap::new(),
            pulls: HashMap::new(),
            freeing: HashMap::new(),
            after_free: Vec::new(),
            pulled: PullStats::default(),
            draining: false,
            now: None,
            ended_reports: Vec::new(),
            direct_links: false,
            actions: VecDeque::new(),
        }
    }

    /// The same node whose workers get direct endpoints (see [`Hosting::grant_afar`]).
    pub(crate) fn with_direct_links(mut self) -> Self {
        self.direct_links = true;
        self
    }

    /// What the shell must do next.
    pub(crate) fn poll_action(&mut self) -> Option<Action<P, S>> {
        if self.actions.is_empty() {
            self.tell_rooms();
        }
        self.actions.pop_front()
    }

    /// Tells the nodes that asked each job's pool the room it has now, where that is news to
    /// them ([`Room::news_to`], see [`crate::proto::spill`]): once all else decided is done,
    /// so that one word covers a whole step's changes.
    fn tell_rooms(&mut self) {
        let Some(now) = self.now else {
            return;
        };
        let mut names: Vec<&String> = (self.jobs.iter())
            .filter(|(_, j)| !j.told.is_empty())
            .map(|(name, _)| name)
            .collect();
        if names.is_empty() {
            return;
        }
        names.sort();
        let names: Vec<String> = names.into_iter().cloned().collect();
        for name in names {
            let job = self.jobs.get_mut(&name).expect("listed");
            let can_start = matches!(job.binary, Binary::Ready);
            let room = match (&job.pool, self.draining) {
                (Some(pool), false) => pool.room(self.grants.room(), can_start),
                _ => Room::default(),
            };
            for (to, told) in &mut job.told {
                let Some(Room { free, workers }) = told.tell(&room, now) else {
                    continue;
                };
                self.actions.push_back(Action::Peer {
                    job: name.clone(),
                    to: to.clone(),
                    message: PeerLease::Room { free, workers },
                });
            }
        }
    }

    /// Whether a frame of `kind` that owner `owner` of another node passes may reach worker
    /// `worker` of job `job`: ends, hand-backs and cancels do; a push only under a lease this
    /// node's pool granted that owner ([`Pool::takes_push`]). A push the pool would not take
    /// is dropped (its owner's lease ended: it hears that, or its node left the job).
    pub(crate) fn takes_from_peer(&self, job: &str, kind: Kind, owner: u64, worker: u64) -> bool {
        let pool = self.jobs.get(job).and_then(|j| j.pool.as_ref());
        kind == Kind::Other || pool.is_none_or(|pool| pool.takes_push(owner, worker))
    }

    /// Offers the asks waiting in the pool of the job on `conn` to the other nodes thought
    /// to have room for them, at `now` (see [`crate::proto::spill`]).
    fn offer_waiting(&mut self, conn: ConnId, now: Instant) {
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        let Some(pool) = &mut job.pool else {
            return;
        };
        let mut offered = Vec::new();
        for (owner, key, shape) in pool.to_offer() {
            let Some(to) = job.spill.offer((owner, key, &shape), now) else {
                continue;
            };
            pool.send_away(key);
            let ask = job.spill.ask_to(&to, (owner, key, shape));
            offered.push((to, ask));
        }
        for (to, message) in offered {
            tracing::debug!(node = %to, ?message, "a lease ask is offered to another node with room");
            self.peer_send(conn, to, message);
        }
    }

    /// The node leaves: it starts no new job (the ones it hosts go on until their drivers let
    /// them go).
    pub(crate) fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Whether it hosts no job.
    pub(crate) fn idle(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether job `job` runs here.
    pub(crate) fn hosts(&self, job: &str) -> bool {
        self.jobs.contains_key(job)
    }

    /// The connection of job `job`'s driver, if it runs here.
    pub(crate) fn conn_of(&self, job: &str) -> Option<ConnId> {
        self.jobs.get(job).map(|j| j.conn)
    }

    /// What the shell made for job `job`, if it runs here.
    pub(crate) fn setup(&self, job: &str) -> Option<&S> {
        self.jobs.get(job).map(|j| &j.setup)
    }

    /// Whether job `job` has its binary here (checked; it may serve it to other nodes).
    pub(crate) fn has_binary(&self, job: &str) -> bool {
        self.jobs
            .get(job)
            .is_some_and(|j| matches!(j.binary, Binary::Ready))
    }

    /// What the shell made for each job here.
    pub(crate) fn setups(&self) -> impl Iterator<Item = &S> {
        self.jobs.values().map(|j| &j.setup)
    }

    /// Worker processes of all jobs.
    pub(crate) fn workers(&self) -> usize {
        self.jobs.values().map(|j| j.workers.len()).sum()
    }

    /// Objects this node pulled from other hosts so far.
    pub(crate) fn pulled(&self) -> PullStats {
        self.pulled
    }

    /// When [`Hosting::handle_timeout`] is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let leases = self.jobs.values().map(|j| j.lease.next_wake());
        let idle =
            (self.jobs.values()).filter_map(|j| j.pool.as_ref()?.next_due(&|w| j.owes_work(w)));
        let unanswered = self.jobs.values().filter_map(|j| j.spill.next_due());
        let rooms = (self.jobs.values()).flat_map(|j| j.told.values().filter_map(Told::due));
        let held = (self.jobs.values()).flat_map(|j| j.near_held.iter().map(|h| h.until));
        (leases
            .chain(idle)
            .chain(unanswered)
            .chain(rooms)
            .chain(held))
        .chain(self.grants.next_reclaim())
        .min()
    }

    /// The clock reached `now`: ask for lease renewals that are due, and end the jobs whose
    /// lease ran out (closing their connections, so that their drivers see it).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.reclaim(now);
        self.pools_due(now);
        self.near_due(now);
        let mut expired = Vec::new();
        let mut names: Vec<String> = self.jobs.keys().cloned().collect();
        names.sort();
        for name in names {
            let job = self.jobs.get_mut(&name).expect("listed");
            if job.lease.expired(now) {
                expired.push(name);
            } else if let Some(seq) = job.lease.due(now) {
                let event = HostEvent::Renew { seq };
                let conn = job.conn;
                self.actions.push_back(Action::Tell { conn, event });
            }
        }
        for name in expired {
            let Some(job) = self.end(&name, Ending::LeaseEnded) else {
                continue;
            };
            let reason = format!(
                "no lease renewal from the driver for {} ms: node {} stopped the job's workers",
                job.lease_ms, self.name
            );
            self.actions.push_back(Action::Close {
                conn: job.conn,
                why: Ending::LeaseEnded,
                reason,
            });
        }
    }

    /// Worker `worker` of job `job` reports what happened to the tasks it owns, in a message
    /// written at `sent_us` by the host's clock and read at `now`: kept for the head (nothing
    /// when the job does not run here or keeps no task events).
    pub(crate) fn owned_events(
        &mut self,
        job: &str,
        worker: u64,
        sent_us: u64,
        events: &rkyv::vec::ArchivedVec<rkyv::Archived<OwnedEvent>>,
        now: Instant,
    ) {
        let Some(job) = self.jobs.get_mut(job) else {
            return;
        };
        let workers = &job.workers;
        let pid = |w: u64| workers.get(&w).copied();
        (job.events.events).owned(worker, now, sent_us, events, None, pid);
    }

    /// The reports for the head of the tasks each job's workers here own, times by `clock`:
    /// the records that changed since the last report and the counts, for each job where
    /// either changed. A worker of another node (a lease there) is named by `elsewhere`
    /// (given the job's connection, the worker, and the peer address of its node when a grant
    /// said it), if it can be.
    pub(crate) fn task_reports(
        &mut self,
        clock: &UnixClock,
        elsewhere: impl Fn(ConnId, u64, Option<&str>) -> Option<String>,
    ) -> Vec<JobEvents> {
        let name = &self.name;
        // This node, for the job's workers here; else the node `elsewhere` says.
        let node_name = |conn: ConnId, here: bool, w: u64, at: Option<&str>| match here {
            true => name.clone(),
            false => elsewhere(conn, w, at).unwrap_or_else(|| format!("the node of worker {w}")),
        };
        let mut reports = Vec::new();
        for (job, record) in &mut self.jobs {
            let (conn, idx, leased_at) = (record.conn, record.idx, &record.leased_at);
            let named = |w| {
                let at = leased_at.get(&w).map(String::as_str);
                node_name(conn, idx == Some(nodes::node_of(w)), w, at)
            };
            reports.extend(record.events.report(job, clock, named));
        }
        // Jobs that ended here: their last records, once.
        for (job, conn, idx, leased_at, mut events) in std::mem::take(&mut self.ended_reports) {
            let named = |w| {
                let at = leased_at.get(&w).map(String::as_str);
                node_name(conn, idx == Some(nodes::node_of(w)), w, at)
            };
            reports.extend(events.report(&job, clock, named));
        }
        reports.sort_by(|a, b| a.summary.job.cmp(&b.summary.job));
        reports
    }

    /// The head is new (or restarted, its board empty): the next reports carry every record
    /// and every job's counts again.
    pub(crate) fn report_all_again(&mut self) {
        for job in self.jobs.values_mut() {
            job.events.all_again();
        }
        for (_, _, _, _, events) in &mut self.ended_reports {
            events.all_again();
        }
    }

    /// Frame `msg` that worker `worker` of job `job` (on `conn`) sent up its link at `now`:
    /// true when the node takes it (the task events of the tasks the worker owns, for the
    /// head; lease asks and give-backs its pool grants), false when it goes on to the driver
    /// (the node notes a worker's blocking and resuming on the way). `peer_of` reads a peer
    /// address a frame names.
    pub(crate) fn take_up(
        &mut self,
        (job, conn): (&str, ConnId),
        worker: u64,
        msg: &ArchivedToNode,
        (now, peer_of): (Instant, PeerOf<'_, P>),
    ) -> bool {
        let taken = self.take_frame((job, conn), worker, msg, (now, peer_of));
        if !taken && !matches!(msg, ArchivedToNode::Forward { .. }) {
            // The driver hears a block the node held before anything else the worker sends
            // it (a frame for another worker is not for the driver).
            self.release_block(conn, worker);
        }
        taken
    }

    /// [`Hosting::take_up`] but for the block the node held from the driver.
    fn take_frame(
        &mut self,
        (job, conn): (&str, ConnId),
        worker: u64,
        msg: &ArchivedToNode,
        (now, peer_of): (Instant, PeerOf<'_, P>),
    ) -> bool {
        let at = (job, conn);
        match msg {
            ArchivedToNode::Owned { sent_us, events } => {
                // For the head, not the driver (the worker's tasks are not the driver's).
                self.owned_events(job, worker, sent_us.to_native(), events, now);
                true
            }
            ArchivedToNode::Lease { key, shape, near } => {
                let Ok(shape) = rkyv::deserialize::<Resources, rkyv::rancor::Error>(shape) else {
                    // The driver says what is wrong with it.
                    return false;
                };
                let ask = (worker, key.to_native());
                if let Some(near) = near.as_ref()
                    && self.ask_near(at, ask, &shape, (near.as_str(), now))
                {
                    return true;
                }
                self.lease_ask(at, ask, &shape, now)
            }
            ArchivedToNode::Unlease { key } => self.unlease(at, worker, key.to_native(), now),
            ArchivedToNode::KillLeased { key } => self.kill_leased(at, worker, key.to_native()),
            ArchivedToNode::Blocked {
                depth,
                returned,
                awaiting,
                cpu,
            } => {
                let depth = depth.to_native();
                // Only its own tasks: the driver has none of them to run, here or on top of it.
                let own = returned.is_empty()
                    && awaiting.len() < MAX_AWAITING
                    && awaiting.iter().all(|t| t.owner == worker);
                if depth == 0 && own {
                    let awaiting = awaiting.iter().map(|t| t.to_native()).collect();
                    let block = (Amount(cpu.0.to_native()), awaiting);
                    if self.hold_block(conn, worker, block) {
                        return true;
                    }
                }
                self.worker_blocked(at, worker, depth, true);
                false
            }
            ArchivedToNode::Unblocked { depth } => {
                let depth = depth.to_native();
                if depth == 0 && self.resume_held(conn, worker) {
                    return true;
                }
                self.worker_blocked(at, worker, depth, false);
                false
            }
            ArchivedToNode::Fetch { id, len, from } => {
                let (id, from) = (id.to_native(), from.as_ref().map(|f| f.as_str()));
                // An argument comes from its owner's node.
                let node = match from {
                    Some(at) => Some(at),
                    None => (self.jobs.get(job)).and_then(|j| j.owner_node(id.task.owner)),
                };
                let source = node.and_then(peer_of);
                self.worker_fetch(at, worker, (id, len.to_native()), (from, source));
                true
            }
            ArchivedToNode::Forward { at: node, .. } => {
                // Passed on by the shell; the node it goes to hears of the sender's death.
                if let Some(node) = node.as_ref()
                    && let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn)
                {
                    let nodes = record.sent_to.entry(worker).or_default();
                    if !nodes.contains(node.as_str()) {
                        nodes.insert(node.to_string());
                    }
                }
                false
            }
            ArchivedToNode::HoldActors(actors) | ArchivedToNode::ReleaseActors(actors) => {
                // For the driver; the pool keeps a worker that holds handles.
                let hold = matches!(msg, ArchivedToNode::HoldActors(_));
                if let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) {
                    let held = record.handles.entry(worker).or_default();
                    for actor in actors.iter().map(|a| a.to_native()) {
                        match hold {
                            true => held.insert(actor),
                            false => held.remove(&actor),
                        };
                    }
                    if held.is_empty() {
                        record.handles.remove(&worker);
                    }
                }
                false
            }
            // The pool's answer, or the driver's (which asked a worker it borrowed to exit).
            ArchivedToNode::Owes => self.owes(conn, worker, now),
            ArchivedToNode::WatchWorker {
                worker: watched,
                at: node,
            } => {
                let node = node.as_ref().map(|n| n.as_str());
                self.watch_worker(at, worker, (watched.to_native(), node))
            }
            ArchivedToNode::OwnerAt { owner, node } => {
                // Where the arguments of a direct link's pushes are pulled from.
                if let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) {
                    (record.owner_nodes).insert(owner.to_native(), node.to_string());
                }
                true
            }
            ArchivedToNode::Hello(hello) => {
                // For the driver too, which checks it.
                let direct = hello.direct.as_ref().map(|d| d.to_string());
                self.worker_hello(at, worker, direct);
                false
            }
            ArchivedToNode::KeptFor { ids } => {
                if let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) {
                    let (gone, kept): (Vec<ObjectId>, Vec<ObjectId>) = (ids.iter())
                        .map(|id| id.to_native())
                        .partition(|id| record.owners_gone.contains(&id.task.owner));
                    let mut owners = Vec::new();
                    for id in kept {
                        let owner = id.task.owner;
                        record.kept.entry(owner).or_default().insert(id);
                        if !owners.contains(&owner) {
                            owners.push(owner);
                        }
                    }
                    // Made for an owner already gone (its leased worker ended a task before
                    // its kill): nobody will read it.
                    self.unlink(conn, gone, true);
                    for owner in owners {
                        self.watch_owner(conn, owner);
                    }
                }
                true
            }
            ArchivedToNode::DropCopies { at: node, ids } => {
                let ids = (ids.iter().map(|id| id.to_native()))
                    .filter(|id| id.task.owner == worker)
                    .collect();
                let (job, to) = (job.to_string(), node.to_string());
                let message = PeerLease::Drop { owner: worker, ids };
                self.actions.push_back(Action::Peer { job, to, message });
                true
            }
            _ => false,
        }
    }

    /// Worker `worker` of job `job` (on `conn`) asks for object `id` (`len` bytes) to be
    /// pulled here ([`prism_transport::ToNode::Fetch`]) from `source`: a value of a task of
    /// its that ran on the node at `from` (whose copy goes once it is here), or an argument
    /// of a task pushed to it (another owner's object), from the node at `from` or, with
    /// `from` `None`, from the node of the object's owner (a copy kept here until the owner
    /// drops it). One pull however many ask; answered [`ToWorker::Fetched`]. An object
    /// already here is not pulled again.
    fn worker_fetch(
        &mut self,
        (job, conn): (&str, ConnId),
        worker: u64,
        (id, len): (ObjectId, u64),
        (from, source): (Option<&str>, Option<P>),
    ) {
        let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) else {
            return;
        };
        let owner = id.task.owner;
        let copied = |r: &Job<P, S>| r.copies.get(&owner).is_some_and(|ids| ids.contains(&id));
        if owner != worker && (take(&mut record.kept, owner, &id) || copied(record)) {
            // Made here for its owner, and read here as an argument (its task was leased
            // near it): nothing to pull, and a copy for the owner to drop like any other
            // (removed, never pooled: the reader maps it).
            record.copies.entry(owner).or_default().insert(id);
            let message = Box::new(ToWorker::Fetched { id, error: None });
            self.actions.push_back(Action::Write {
                conn,
                worker,
                message,
            });
            return;
        }
        let setup = record.setup.clone();
        let Some(source) = source else {
            let error = Some(match from {
                Some(from) => format!("{from:?} is not the address of a node"),
                None => format!(
                    "node {} does not know the node of {id}'s owner (worker {})",
                    self.name, id.task.owner
                ),
            });
            let message = Box::new(ToWorker::Fetched { id, error });
            self.actions.push_back(Action::Write {
                conn,
                worker,
                message,
            });
            return;
        };
        // An owner on this node removes the copies here of its objects itself.
        let local = record.workers.contains_key(&owner);
        let pull = self.pulls.entry((conn, id)).or_default();
        pull.workers.push(worker);
        match from {
            // The owner's own value, which moves here.
            Some(from) if owner == worker => pull.made_at = Some(from.to_string()),
            // An argument, wherever it comes from: a copy, for its owner to drop.
            _ if !local => pull.copy_for = Some(owner),
            _ => {}
        }
        if pull.workers.len() + pull.waiting.len() > 1 {
            return;
        }
        self.actions.push_back(Action::Pull {
            conn,
            job: job.to_string(),
            id,
            len,
            from: source,
            setup,
        });
    }

    /// Worker `owner` of job `job` (on `conn`) asks at `now` for a lease of `shape` keyed
    /// `key` ([`prism_transport::ToNode::Lease`]): true when the node takes it, to grant from
    /// its own workers (see [`crate::proto::pool`]); false when the ask is the driver's to
    /// place.
    pub(crate) fn lease_ask(
        &mut self,
        (job, conn): (&str, ConnId),
        (owner, key): (u64, TaskId),
        shape: &Resources,
        now: Instant,
    ) -> bool {
        if self.draining {
            // Its driver places the job's work elsewhere.
            return false;
        }
        let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) else {
            return false;
        };
        let can_start = matches!(record.binary, Binary::Ready);
        let Some(pool) = &mut record.pool else {
            return false;
        };
        let client = pool::pool_client(conn);
        let asked = pool.ask(
            (&mut self.grants, client),
            (owner, key, shape),
            can_start,
            now,
        );
        let decided = Decided {
            owner,
            key,
            shape: shape.clone(),
            asked,
        };
        let setup = record.setup.clone();
        match asked {
            Asked::Forward => false,
            Asked::Waits => {
                self.offer_waiting(conn, now);
                true
            }
            _ => {
                self.carry_out(conn, &setup, decided);
                true
            }
        }
    }

    /// Worker `owner` of job `job` (on `conn`) asks at `now` for a lease of `shape` keyed
    /// `key` near its task's arguments, on the node at `near`: true when the ask goes to that
    /// node's pool first (see [`Spill::offer_near`]; refused there, it is this node's to
    /// decide), false when it is decided as any other.
    fn ask_near(
        &mut self,
        (job, conn): (&str, ConnId),
        (owner, key): (u64, TaskId),
        shape: &Resources,
        (near, now): (&str, Instant),
    ) -> bool {
        let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) else {
            return false;
        };
        if self.draining || record.pool.is_none() {
            return false;
        }
        if !record.spill.offer_near(near, (owner, key, shape), now) {
            return false;
        }
        let mut ask = record.spill.ask_to(near, (owner, key, shape.clone()));
        if let PeerLease::Ask { near, .. } = &mut ask {
            *near = true;
        }
        tracing::debug!(owner, lease = %key, node = %near, "a lease ask goes first to the node near its arguments");
        self.peer_send(conn, near.to_string(), ask);
        true
    }

    /// Does what the pool of the job on `conn` decided for an ask.
    fn carry_out(&mut self, conn: ConnId, setup: &S, decided: Decided) {
        tracing::debug!(owner = decided.owner, lease = %decided.key, shape = %decided.shape, asked = ?decided.asked, "a lease ask of the node's pool");
        let Decided {
            owner,
            key,
            shape,
            asked,
        } = decided;
        match asked {
            Asked::Waits => {}
            Asked::Granted { worker } => self.tell_leased(conn, owner, key, worker),
            Asked::Start { worker } => self.actions.push_back(Action::Start {
                conn,
                worker,
                setup: setup.clone(),
            }),
            Asked::Forward => self.up(
                conn,
                owner,
                ToNode::Lease {
                    key,
                    shape,
                    near: None,
                },
            ),
        }
    }

    /// Does what the pool of the job on `conn` decided for the driver's borrow `ticket`
    /// (the request's number): the driver hears of an idle worker now, of a new one once it
    /// runs.
    fn carry_out_lend(&mut self, conn: ConnId, setup: &S, ticket: ReqId, lend: Lend) {
        tracing::debug!(?lend, "the driver borrows a worker of the node's pool");
        let reply = match lend {
            Lend::Waits => return,
            Lend::Start { worker } => {
                let setup = setup.clone();
                return self.actions.push_back(Action::Start {
                    conn,
                    worker,
                    setup,
                });
            }
            Lend::Idle { worker } => {
                let pid = self
                    .job_of_mut(conn)
                    .and_then(|(_, j)| j.workers.get(&worker));
                match pid {
                    Some(&pid) => FromHost::Lent { worker, pid },
                    None => FromHost::Error(format!("node {} lost worker {worker}", self.name)),
                }
            }
        };
        self.reply(conn, ticket, reply);
    }

    /// Resources or workers came free: the drivers' borrows waiting in the jobs' pools get
    /// the workers first (their tasks hold their resources already), then the asks waiting
    /// that fit now are granted, after the drivers' own waiting asks (which [`Grants`]
    /// serves first).
    fn retry_pools(&mut self) {
        self.answer_granted();
        let mut decided = Vec::new();
        let mut lent = Vec::new();
        for job in self.jobs.values_mut() {
            let can_start = matches!(job.binary, Binary::Ready);
            let Some(pool) = &mut job.pool else {
                continue;
            };
            for (ticket, lend) in pool.lend_waiting() {
                lent.push((job.conn, job.setup.clone(), ticket, lend));
            }
            let client = pool::pool_client(job.conn);
            for one in pool.retry((&mut self.grants, client), can_start) {
                decided.push((job.conn, job.setup.clone(), one));
            }
        }
        for (conn, setup, ticket, lend) in lent {
            self.carry_out_lend(conn, &setup, ticket, lend);
        }
        for (conn, setup, one) in decided {
            self.carry_out(conn, &setup, one);
        }
        self.retry_near();
    }

    /// Worker `owner` of job `job` gives lease `key` back, or withdraws its ask: true when
    /// the lease was the node's (else it is the driver's).
    pub(crate) fn unlease(
        &mut self,
        (job, conn): (&str, ConnId),
        owner: u64,
        key: TaskId,
        now: Instant,
    ) -> bool {
        let Some((pool, grants)) = self.pool_of(job, conn) else {
            return false;
        };
        let client = pool::pool_client(conn);
        let pooled = pool.unlease((grants, client), (owner, key), now);
        let Some((_, job)) = self.job_of_mut(conn) else {
            return pooled;
        };
        // An ask waiting here may be offered to another node meanwhile: withdrawn there too.
        let held = job.spill.give_back(owner, key);
        if let Some(Held::At(to)) = &held {
            self.peer_send(conn, to.clone(), PeerLease::Unlease { owner, key });
        }
        if pooled {
            self.retry_pools();
        }
        pooled || held.is_some()
    }

    /// Worker `owner` of job `job` has a task it pushed under lease `key` cancelled by
    /// force: true when the lease is the node's (its worker is killed, unless it is the
    /// owner itself).
    pub(crate) fn kill_leased(
        &mut self,
        (job, conn): (&str, ConnId),
        owner: u64,
        key: TaskId,
    ) -> bool {
        let Some((pool, _)) = self.pool_of(job, conn) else {
            return false;
        };
        let Some(worker) = pool.leased_worker(owner, key) else {
            let afar = (self.job_of_mut(conn))
                .and_then(|(_, j)| Some(j.spill.lease_at(owner, key)?.to_string()));
            let Some(to) = afar else {
                return false;
            };
            self.peer_send(conn, to, PeerLease::KillLeased { owner, key });
            return true;
        };
        if worker != owner {
            tracing::info!(%job, lease = %key, worker, "force-cancel kills the leased worker");
            self.actions.push_back(Action::Kill { conn, worker });
        }
        true
    }

    /// Worker `worker` of job `job` blocked in `get` (`blocked`) or resumed its task at
    /// `depth`: a worker of the node's own gives its lease's CPU back meanwhile.
    pub(crate) fn worker_blocked(
        &mut self,
        (job, conn): (&str, ConnId),
        worker: u64,
        depth: u32,
        blocked: bool,
    ) {
        if depth != 0 {
            return;
        }
        let Some((pool, grants)) = self.pool_of(job, conn) else {
            return;
        };
        pool.blocked((grants, pool::pool_client(conn)), worker, blocked);
        if blocked {
            self.retry_pools();
        }
    }

    /// Worker `worker` of the job on `conn`, asked to exit while idle, still owes work: it is
    /// the pool's idle worker again from `now`, asked again once it idles long enough. False
    /// when the pool did not ask it (the driver did, retiring a worker it borrowed: its ask is
    /// answered to it, which asks again).
    fn owes(&mut self, conn: ConnId, worker: u64, now: Instant) -> bool {
        let Some((pool, _)) = self.pool_on(conn) else {
            return false;
        };
        if !pool.stays(worker, now) {
            return false;
        }
        tracing::debug!(worker, "an idle worker that still owes work stays");
        self.retry_pools();
        true
    }

    /// Worker `worker` of the job on `conn`, lent to its driver, blocks in `get` holding
    /// `block.0` CPUs and waiting only for its own tasks (`block.1`): true when the node
    /// keeps the block from the driver ([`Pool::hold_block`]) and lends the CPU to the
    /// asks that wait.
    fn hold_block(&mut self, conn: ConnId, worker: u64, block: (Amount, Vec<TaskId>)) -> bool {
        let Some((pool, grants)) = self.pool_on(conn) else {
            return false;
        };
        let held = pool.hold_block((grants, pool::pool_client(conn)), worker, block);
        if held {
            self.retry_pools();
        }
        held
    }

    /// Worker `worker` of the job on `conn`, lent to its driver, resumes: true when the
    /// node held its block (the driver hears of neither).
    fn resume_held(&mut self, conn: ConnId, worker: u64) -> bool {
        let Some((pool, grants)) = self.pool_on(conn) else {
            return false;
        };
        pool.resume_held((grants, pool::pool_client(conn)), worker)
    }

    /// The block of worker `worker` (of the job on `conn`) the node held goes to the
    /// driver now, ahead of what the worker sends next ([`Pool::release_block`]).
    fn release_block(&mut self, conn: ConnId, worker: u64) {
        let Some((pool, grants)) = self.pool_on(conn) else {
            return;
        };
        let Some(held) = pool.release_block((grants, pool::pool_client(conn)), worker) else {
            return;
        };
        let blocked = ToNode::Blocked {
            depth: 0,
            returned: Vec::new(),
            awaiting: held.awaiting,
            cpu: held.cpu,
        };
        self.push_up(conn, worker, blocked);
    }

    /// Sends `message` to the driver of the job on `conn` as if worker `worker` had, after
    /// a block of the worker's the node held.
    fn up(&mut self, conn: ConnId, worker: u64, message: ToNode) {
        self.release_block(conn, worker);
        self.push_up(conn, worker, message);
    }

    /// Queues `message` for the driver of the job on `conn` as if worker `worker` had sent it.
    fn push_up(&mut self, conn: ConnId, worker: u64, message: ToNode) {
        let message = Box::new(message);
        self.actions.push_back(Action::Up {
            conn,
            worker,
            message,
        });
    }

    /// Job `job`'s pool and the node's grants, if the job on `conn` has a pool.
    fn pool_of(&mut self, job: &str, conn: ConnId) -> Option<(&mut Pool, &mut Grants)> {
        let record = self.jobs.get_mut(job).filter(|j| j.conn == conn)?;
        Some((record.pool.as_mut()?, &mut self.grants))
    }

    /// The pool of the job on `conn` and the node's grants, if it has a pool.
    fn pool_on(&mut self, conn: ConnId) -> Option<(&mut Pool, &mut Grants)> {
        let record = self.jobs.values_mut().find(|j| j.conn == conn)?;
        Some((record.pool.as_mut()?, &mut self.grants))
    }

    /// The owner of lease `key` hears it was granted on `worker`, a worker of this node.
    fn tell_leased(&mut self, conn: ConnId, owner: u64, key: TaskId, worker: u64) {
        let afar =
            (self.job_of_mut(conn)).and_then(|(_, j)| Some(j.spill.owner_at(owner)?.to_string()));
        if let Some(to) = afar {
            return self.grant_afar(conn, to, (owner, key, worker));
        }
        self.write_leased(conn, owner, (key, worker, None, None));
    }

    /// Tells owner `owner` on the node at `to` (its daemon's peer address) that lease `key`
    /// is granted on `worker`, naming the worker's direct endpoint when its hello named one;
    /// the worker then hears whom it is lent to ([`ToWorker::Lent`]), before the grant leaves,
    /// since the owner's pushes come straight to it. When the node's workers have endpoints
    /// and this one has not said hello yet (it starts), the grant waits for its hello.
    fn grant_afar(&mut self, conn: ConnId, to: String, (owner, key, worker): (u64, TaskId, u64)) {
        let direct_links = self.direct_links;
        let Some((_, record)) = self.job_of_mut(conn) else {
            return;
        };
        let direct = match record.hellos.get(&worker) {
            Some(direct) => direct.clone(),
            None if direct_links => {
                let unsaid = record.unsaid.entry(worker).or_default();
                unsaid.push((to, owner, key));
                return;
            }
            None => None,
        };
        if direct.is_some() {
            self.write_lent(conn, worker, Some(owner));
        }
        let granted = PeerLease::Granted {
            owner,
            key,
            worker,
            direct,
        };
        self.peer_send(conn, to, granted);
    }

    /// Tells worker `worker` of the job on `conn` whose pushes to run from its direct link
    /// (`None`: nobody's).
    fn write_lent(&mut self, conn: ConnId, worker: u64, owner: Option<u64>) {
        let message = Box::new(ToWorker::Lent { owner });
        self.actions.push_back(Action::Write {
            conn,
            worker,
            message,
        });
    }

    /// Worker `worker` of job `job` (on `conn`) said hello, naming its direct endpoint if it
    /// has one: the grants that waited for it go out.
    fn worker_hello(&mut self, (job, conn): (&str, ConnId), worker: u64, direct: Option<String>) {
        let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) else {
            return;
        };
        record.hellos.insert(worker, direct);
        for (to, owner, key) in record.unsaid.remove(&worker).unwrap_or_default() {
            self.grant_afar(conn, to, (owner, key, worker));
        }
    }

    /// Writes to owner `owner` of the job on `conn` that lease `key` is on `worker`, of the
    /// node at `at` (`None`: this one), whose direct endpoint is `direct` (if it has one).
    fn write_leased(
        &mut self,
        conn: ConnId,
        owner: u64,
        (key, worker, at, direct): (TaskId, u64, Option<String>, Option<String>),
    ) {
        let message = Box::new(ToWorker::Leased {
            key,
            worker,
            at,
            direct,
        });
        self.actions.push_back(Action::Write {
            conn,
            worker: owner,
            message,
        });
    }

    /// Worker `worker` of the job on `conn` was started for a lease of the node's own, or
    /// could not be.
    fn pool_started(&mut self, conn: ConnId, worker: u64, result: Result<u32, String>) {
        let Some((name, record)) = self.job_of_mut(conn) else {
            if result.is_ok() {
                // The job ended while the process started: it goes too.
                self.actions.push_back(Action::Kill { conn, worker });
            }
            return;
        };
        let (name, ok) = (name.clone(), result.is_ok());
        if let Ok(pid) = &result {
            record.started(worker, *pid);
        }
        let Some((pool, grants)) = self.pool_on(conn) else {
            return;
        };
        let started = pool.started((grants, pool::pool_client(conn)), worker, ok);
        match (started, result) {
            (Some(StartedFor::Driver { ticket, .. }), Ok(pid)) => {
                self.reply(conn, ticket, FromHost::Lent { worker, pid });
            }
            (Some(StartedFor::Driver { ticket, .. }), Err(e)) => {
                let error = format!("node {} could not start a worker: {e}", self.name);
                self.reply(conn, ticket, FromHost::Error(error));
            }
            (
                Some(StartedFor::Lease {
                    owner,
                    key,
                    stands: true,
                }),
                _,
            ) => {
                // It owns its tasks from the start (the driver says so too, once it hears
                // the worker's hello).
                let message = Box::new(ToWorker::OwnTasks);
                self.actions.push_back(Action::Write {
                    conn,
                    worker,
                    message,
                });
                self.tell_leased(conn, owner, key, worker);
            }
            (Some(StartedFor::Lease { owner, key, .. }), Err(e)) => {
                tracing::warn!(job = %name, worker, "a worker for a lease could not start: {e}");
                let reason = format!("node {} could not start a worker: {e}", self.name);
                self.tell_ended(conn, (owner, key), reason);
                self.retry_pools();
            }
            _ => {}
        }
    }

    /// Worker `watcher` of job `job` (on `conn`) watches worker `watched`
    /// ([`prism_transport::ToNode::WatchWorker`]), of the node serving its peers at `node`
    /// when another: told when it exits, or at once if it does not run here. A worker of
    /// another node is watched by that node for this one ([`PeerLease::Watch`]), which also
    /// pulls from there the objects it owns that this node's workers read; the driver
    /// watches one of a node not named. True when the node takes the frame.
    fn watch_worker(
        &mut self,
        (job, conn): (&str, ConnId),
        watcher: u64,
        (watched, node): (u64, Option<&str>),
    ) -> bool {
        let Some(record) = self.jobs.get_mut(job).filter(|j| j.conn == conn) else {
            return true;
        };
        if record.idx.is_some_and(|idx| idx != nodes::node_of(watched)) {
            let Some(node) = node else {
                return false;
            };
            if record.watch(watched, watcher) {
                // That node speaks for it from now on (its death, the copies of its objects).
                (record.owner_nodes).insert(watched, node.to_string());
                let message = PeerLease::Watch { worker: watched };
                self.peer_send(conn, node.to_string(), message);
            }
            return true;
        }
        if record.workers.contains_key(&watched) {
            record.watch(watched, watcher);
            return true;
        }
        let reason = format!("worker {watched} does not run on node {}", self.name);
        self.tell_gone(conn, watcher, watched, reason);
        true
    }

    /// Tells worker `watcher` (of the job on `conn`) that worker `gone` is gone (`reason`).
    fn tell_gone(&mut self, conn: ConnId, watcher: u64, gone: u64, reason: String) {
        let message = Box::new(ToWorker::WorkerGone {
            worker: gone,
            reason,
        });
        self.actions.push_back(Action::Write {
            conn,
            worker: watcher,
            message,
        });
    }

    /// Worker `worker` of the job on `conn` is gone (`reason`, which names where it ran):
    /// the workers watching it hear.
    fn tell_watchers(&mut self, conn: ConnId, worker: u64, reason: &str) {
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        let watchers = job.watchers.remove(&worker).unwrap_or_default();
        for list in job.watchers.values_mut() {
            list.retain(|&w| w != worker);
        }
        for watcher in watchers {
            self.tell_gone(conn, watcher, worker, reason.to_string());
        }
    }

    /// Worker `worker` of the job on `conn` exited: a lease of the node's own on it ends (its
    /// owner hears), its asks leave, and the workers leased to it are killed.
    fn pool_worker_exited(&mut self, conn: ConnId, worker: u64, reason: &str) {
        if let Some((_, job)) = self.job_of_mut(conn) {
            // What it leased or asked for on other nodes, and the copies kept there for it,
            // go: each node it leased from or sent frames to hears of it once.
            job.handles.remove(&worker);
            let mut told = job.spill.owner_gone(worker);
            for node in job.sent_to.remove(&worker).unwrap_or_default() {
                if !told.contains(&node) {
                    told.push(node);
                }
            }
            for to in told {
                self.peer_send(conn, to, PeerLease::OwnerGone { owner: worker });
            }
        }
        let Some((pool, grants)) = self.pool_on(conn) else {
            return;
        };
        let exit = pool.exited((grants, pool::pool_client(conn)), worker);
        for (owner, key) in exit.ended {
            let reason = format!("leased worker {worker} died: {reason}");
            self.tell_ended(conn, (owner, key), reason);
        }
        for leased in exit.kill {
            tracing::info!(
                owner = worker,
                worker = leased,
                "the owner died: the worker leased to it is killed"
            );
            self.actions.push_back(Action::Kill {
                conn,
                worker: leased,
            });
        }
        self.retry_pools();
    }

    /// The pools' idle workers that idled long enough stop, and their asks that waited long
    /// enough are passed on to other nodes (to the drivers where a pool knows none).
    fn pools_due(&mut self, now: Instant) {
        let mut forward = Vec::new();
        let mut lent = Vec::new();
        for job in self.jobs.values_mut() {
            let Some(pool) = &mut job.pool else {
                continue;
            };
            let (spill, handles) = (&job.spill, &job.handles);
            let due = pool.due(now, &|w| owes_work(spill, handles, w));
            for (ticket, lend) in due.lend {
                lent.push((job.conn, job.setup.clone(), ticket, lend));
            }
            for worker in due.stop {
                // It exits unless it owes work the node does not see (tasks leased to it by
                // the driver, say), and then says so and idles on (`Hosting::owes`).
                let (conn, message) = (job.conn, Box::new(ToWorker::ExitIfIdle));
                self.actions.push_back(Action::Write {
                    conn,
                    worker,
                    message,
                });
            }
            forward.extend(
                due.forward
                    .into_iter()
                    .map(|d| (job.conn, job.setup.clone(), d)),
            );
        }
        for (conn, setup, ticket, lend) in lent {
            self.carry_out_lend(conn, &setup, ticket, lend);
        }
        for (conn, setup, one) in forward {
            self.pass_on(conn, &setup, one, now);
        }
        let mut late = Vec::new();
        for job in self.jobs.values_mut() {
            let conn = job.conn;
            late.extend(job.spill.unanswered(now).into_iter().map(|l| (conn, l)));
        }
        for (conn, (owner, key, shape, next)) in late {
            tracing::debug!(owner, lease = %key, "a lease ask passed to another node was not answered");
            self.pass_next(conn, (owner, key, shape), next, now);
        }
    }

    /// An ask the job's pool on `conn` waited with and cannot grant: to another node of the
    /// job whose pool may (see [`crate::proto::spill`]), or to the driver when none is.
    fn pass_on(&mut self, conn: ConnId, setup: &S, decided: Decided, now: Instant) {
        if decided.asked == Asked::Forward
            && let Some((_, job)) = self.job_of_mut(conn)
        {
            let ask = (decided.owner, decided.key, &decided.shape);
            if let Some(to) = job.spill.pass(ask, now) {
                let ask = (decided.owner, decided.key, decided.shape);
                return self.pass_next(conn, ask, Next::Peer(to), now);
            }
            if let Some(pool) = &mut job.pool {
                // No other node of the job's is known here: the driver places it.
                pool.leaves(decided.key);
            }
        }
        self.carry_out(conn, setup, decided);
    }

    /// Sends owner `owner`'s ask `key` for `shape` where `next` says, at `now`.
    fn pass_next(
        &mut self,
        conn: ConnId,
        (owner, key, shape): (u64, TaskId, Resources),
        next: Next,
        now: Instant,
    ) {
        let to = match next {
            Next::Peer(to) => to,
            Next::Ask => {
                let Some(job) = self.connection_job(conn) else {
                    return;
                };
                if !self.lease_ask((&job, conn), (owner, key), &shape, now) {
                    // The driver places it.
                    let near = None;
                    self.up(conn, owner, ToNode::Lease { key, shape, near });
                }
                return;
            }
            Next::Home => {
                if let Some((pool, _)) = self.pool_on(conn) {
                    pool.come_home(key, now);
                }
                return self.retry_pools();
            }
        };
        tracing::debug!(owner, lease = %key, node = %to, "a lease ask goes on to another node");
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        let ask = job.spill.ask_to(&to, (owner, key, shape));
        self.peer_send(conn, to, ask);
    }

    /// Sends `message` to the job's pool on node `to`, for the job on `conn`.
    fn peer_send(&mut self, conn: ConnId, to: String, message: PeerLease) {
        if let Some(job) = self.connection_job(conn) {
            self.actions.push_back(Action::Peer { job, to, message });
        }
    }

    /// Owner `owner` of the job on `conn` hears that lease `key` ended: here on its link,
    /// or through its node when it is another node's.
    fn tell_ended(&mut self, conn: ConnId, (owner, key): (u64, TaskId), reason: String) {
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        if let Some(at) = job.spill.owner_at(owner) {
            let (to, message) = (at.to_string(), PeerLease::Ended { owner, key, reason });
            return self.peer_send(conn, to, message);
        }
        let message = Box::new(ToWorker::LeaseEnded { key, reason });
        self.actions.push_back(Action::Write {
            conn,
            worker: owner,
            message,
        });
    }

    /// Nodes left the job on `conn`: the leases there end for their owners here, the asks
    /// waiting there go on, and the workers leased here to owners there are killed.
    fn nodes_left(&mut self, conn: ConnId, left: spill::Left, now: Instant) {
        for (owner, key, at) in left.ended {
            let reason = format!("node {at}, where its worker was leased, left the job");
            self.tell_ended(conn, (owner, key), reason);
        }
        for (owner, key, shape, next) in left.again {
            self.pass_next(conn, (owner, key, shape), next, now);
        }
        for owner in left.owners {
            self.owner_afar_gone(conn, owner);
        }
    }

    /// This node keeps something for owner `owner` of the job on `conn` (a copy of its
    /// object, a value made here for it): unless the owner runs here, its node is asked once
    /// to say when it goes ([`PeerLease::Watch`]), so that what is kept goes with it. (The
    /// owner's node tells the nodes it leased from and those its relayed frames went to
    /// anyway; its direct links pass no daemon, and an actor's node pulls the arguments of
    /// the owner's calls.)
    fn watch_owner(&mut self, conn: ConnId, owner: u64) {
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        let here = job.idx == Some(nodes::node_of(owner));
        if here || job.owners_gone.contains(&owner) || job.watched_owners.contains(&owner) {
            return;
        }
        let Some(node) = job.owner_node(owner).map(str::to_string) else {
            return;
        };
        job.watched_owners.insert(owner);
        self.peer_send(conn, node, PeerLease::Watch { worker: owner });
    }

    /// Removes `ids` from the store of the job on `conn`; `pool`: no reader maps them, and
    /// their segments may be reused.
    fn unlink(&mut self, conn: ConnId, ids: Vec<ObjectId>, pool: bool) {
        if ids.is_empty() {
            return;
        }
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        let setup = job.setup.clone();
        let unlink = Action::Unlink {
            conn,
            setup,
            ids,
            pool,
        };
        self.actions.push_back(unlink);
    }

    /// Owner `owner` on another node died or its node left: the workers leased to it here
    /// are killed, its asks here leave, the copies of its objects here go, and the workers
    /// here watching it hear.
    fn owner_afar_gone(&mut self, conn: ConnId, owner: u64) {
        self.drop_near(conn, owner, None);
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        job.spill.forget_owner(owner);
        job.owners_gone.insert(owner);
        job.watched_owners.remove(&owner);
        let node = job.owner_nodes.remove(&owner);
        let node = node.map_or_else(|| String::from("another node"), |n| format!("node {n}"));
        let reason =
            format!("worker {owner} on {node} is gone, as that node or the job's view of it says");
        self.tell_watchers(conn, owner, &reason);
        let Some((_, job)) = self.job_of_mut(conn) else {
            return;
        };
        let (copies, kept) = (job.copies.remove(&owner), job.kept.remove(&owner));
        for (ids, pool) in [(copies, false), (kept, true)] {
            let ids = ids.map_or_else(Vec::new, |ids| ids.into_iter().collect());
            self.unlink(conn, ids, pool);
        }
        let Some((pool, grants)) = self.pool_on(conn) else {
            return;
        };
        let exit = pool.exited((grants, pool::pool_client(conn)), owner);
        for worker in exit.kill {
            tracing::info!(
                owner,
                worker,
                "an owner on another node is gone: the worker leased to it is killed"
            );
            self.actions.push_back(Action::Kill { conn, worker });
        }
        self.retry_pools();
    }

    /// Node `from`'s pool of job `job` sent `message` (see [`crate::proto::spill`]).
    fn peer(&mut self, job: String, (from, source): (String, P), message: PeerLease, now: Instant) {
        let Some(conn) = self.jobs.get(&job).map(|j| j.conn) else {
            if let PeerLease::Ask { owner, key, .. } = message {
                let reason = format!("node {} does not host job {job}", self.name);
                let message = PeerLease::Refused { owner, key, reason };
                self.actions.push_back(Action::Peer {
                    job,
                    to: from,
                    message,
                });
            }
            return;
        };
        if let PeerLease::Unlease { owner, .. }
        | PeerLease::KillLeased { owner, .. }
        | PeerLease::OwnerGone { owner }
        | PeerLease::Drop { owner, .. }
        | PeerLease::Taken { owner, .. } = &message
        {
            let at = self.jobs.get(&job).and_then(|j| j.owner_node(*owner));
            if at != Some(from.as_str()) {
                // Only the owner's node speaks for it.
                match message {
                    PeerLease::Drop { .. } | PeerLease::Taken { .. } => {
                        tracing::debug!(%job, owner, node = %from, "copies pulled by a node this one does not know as the owner's stay")
                    }
                    _ => {
                        tracing::warn!(%job, owner, node = %from, ?message, "a lease message for an owner of another node is ignored")
                    }
                }
                return;
            }
        }
        match message {
            PeerLease::Ask {
                owner,
                key,
                shape,
                near,
                ..
            } => self.ask_afar(conn, (owner, key, shape, near), (from, Some(source))),
            PeerLease::Granted {
                owner,
                key,
                worker,
                direct,
            } => {
                let Some((_, record)) = self.job_of_mut(conn) else {
                    return;
                };
                match record.spill.granted(owner, key, &from) {
                    Grant::Tell { at } => {
                        record.leased_at.insert(worker, at.clone());
                        // It may keep the values its worker makes for the owner past the
                        // lease: it hears of the owner's death.
                        record.sent_to.entry(owner).or_default().insert(at.clone());
                        if let Some(pool) = &mut record.pool {
                            // Offered there while it waited here.
                            pool.leaves(key);
                        }
                        self.write_leased(conn, owner, (key, worker, Some(at), direct))
                    }
                    Grant::GiveBack => {
                        self.peer_send(conn, from, PeerLease::Unlease { owner, key })
                    }
                }
            }
            PeerLease::Refused { owner, key, reason } => {
                tracing::debug!(owner, lease = %key, node = %from, "another node refused a lease ask: {reason}");
                self.ask_refused(conn, key, now);
            }
            PeerLease::Room { free, workers } => {
                if let Some((_, record)) = self.job_of_mut(conn) {
                    record.spill.room(&from, Room { free, workers });
                }
                self.offer_waiting(conn, now);
            }
            PeerLease::Unlease { owner, key } => {
                if self.drop_near(conn, owner, Some(key)) {
                    // Withdrawn while it waited here: nothing was granted.
                    return;
                }
                let Some((pool, grants)) = self.pool_on(conn) else {
                    return;
                };
                let worker = pool.leased_worker(owner, key);
                if !pool.unlease((grants, pool::pool_client(conn)), (owner, key), now) {
                    return;
                }
                // Its worker runs no more pushes of the owner's (told before the pool lends
                // it again), when they came to its endpoint.
                let linked = |(_, job): (&String, &mut Job<P, S>), w| {
                    job.hellos.get(&w).is_some_and(Option::is_some)
                };
                if let Some(worker) = worker
                    && self.job_of_mut(conn).is_some_and(|j| linked(j, worker))
                {
                    self.write_lent(conn, worker, None);
                }
                self.retry_pools();
            }
            PeerLease::KillLeased { owner, key } => {
                if self.drop_near(conn, owner, Some(key)) {
                    return;
                }
                let Some((pool, _)) = self.pool_on(conn) else {
                    return;
                };
                if let Some(worker) = pool.leased_worker(owner, key) {
                    tracing::info!(%job, lease = %key, worker, "force-cancel from another node kills the leased worker");
                    self.actions.push_back(Action::Kill { conn, worker });
                }
            }
            PeerLease::Ended { owner, key, reason } => {
                let Some((_, record)) = self.job_of_mut(conn) else {
                    return;
                };
                if record.spill.ended(owner, key) {
                    self.tell_ended(conn, (owner, key), reason);
                } else {
                    // Its worker could not start there: as refused.
                    self.ask_refused(conn, key, now);
                }
            }
            PeerLease::OwnerGone { owner } => self.owner_afar_gone(conn, owner),
            PeerLease::Watch { worker } => {
                // Told when it exits, as the nodes it sent frames to are.
                let Some((_, job)) = self.job_of_mut(conn) else {
                    return;
                };
                let running = job.idx.is_some_and(|idx| idx == nodes::node_of(worker))
                    && job.workers.contains_key(&worker);
                match running {
                    true => {
                        job.sent_to.entry(worker).or_default().insert(from);
                    }
                    false => self.peer_send(conn, from, PeerLease::OwnerGone { owner: worker }),
                }
            }
            PeerLease::Taken { owner, ids } => {
                // Kept no more; a reader's copy here stays (it may be mapping it) until the
                // owner drops the object.
                let Some(job) = self.jobs.get_mut(&job) else {
                    return;
                };
                let conn = job.conn;
                let copies = job.copies.get(&owner);
                let taken: Vec<ObjectId> = (ids.into_iter())
                    .filter(|id| id.task.owner == owner && !copies.is_some_and(|c| c.contains(id)))
                    .collect();
                for id in &taken {
                    take(&mut job.kept, owner, id);
                }
                self.unlink(conn, taken, true);
            }
            PeerLease::Drop { owner, mut ids } => {
                // Only the owner's own objects.
                ids.retain(|id| id.task.owner == owner);
                if let Some(job) = self.jobs.get_mut(&job)
                    && !ids.is_empty()
                {
                    // Arguments pulled here may still be mapped by the workers that ran
                    // their tasks; values made here were for their owners alone.
                    let (copies, made): (Vec<ObjectId>, Vec<ObjectId>) = ids
                        .into_iter()
                        .partition(|id| take(&mut job.copies, owner, id));
                    // A value made here may have been read here as an argument too: a copy
                    // then (mapped, perhaps), and no more kept.
                    for id in copies.iter().chain(&made) {
                        take(&mut job.kept, owner, id);
                    }
                    let conn = job.conn;
                    for (ids, pool) in [(copies, false), (made, true)] {
                        self.unlink(conn, ids, pool);
                    }
                }
            }
        }
    }

    /// `waiter` (a request's number, 0 for none, and what it waits to do) waits for the job's
    /// binary on `conn`: a fetch from `source` (a node that has it; `None`: the driver) starts
    /// unless one is under way.
    fn fetch_binary_for(&mut self, conn: ConnId, waiter: (ReqId, Waiter), source: Option<P>) {
        let Some((name, job)) = self.job_of_mut(conn) else {
            return;
        };
        let name = name.clone();
        match &mut job.binary {
            Binary::Ready => {}
            Binary::Fetching { waiting, .. } => waiting.push(waiter),
            Binary::Missing(start) => {
                let start = start.clone();
                let from_peer = source.is_some();
                let from = source.unwrap_or_else(|| start.from.clone());
                job.binary = Binary::Fetching {
                    start: start.clone(),
                    from_peer,
                    waiting: vec![waiter],
                };
                self.actions.push_back(Action::FetchBinary {
                    conn,
                    job: name,
                    start,
                    from,
                });
            }
        }
    }

    /// Another node refused (or could not serve) ask `key` of the job on `conn`: it goes on.
    fn ask_refused(&mut self, conn: ConnId, key: TaskId, now: Instant) {
        let Some((_, record)) = self.job_of_mut(conn) else {
            return;
        };
        if let Some((owner, key, shape, next)) = record.spill.refused(key, now) {
            let home = next == Next::Home;
            self.pass_next(conn, (owner, key, shape), next, now);
            if home {
                // Another node may have room for it.
                self.offer_waiting(conn, now);
            }
        }
    }

    /// Owner `owner` of node `from` asks the pool of the job on `conn` for a lease: granted
    /// now (on an idle worker, or one that starts) or refused; an ask `near` its task's
    /// arguments here is held a while for room to come back ([`NEAR_HOLD`]) before it is
    /// refused. A node without the job's binary fetches it from `source` (the asking node;
    /// `None` once it came) and decides then.
    fn ask_afar(
        &mut self,
        conn: ConnId,
        (owner, key, shape, near): (u64, TaskId, Resources, bool),
        (from, source): (String, Option<P>),
    ) {
        let name = self.name.clone();
        let draining = self.draining;
        let Some(record) = self.jobs.values_mut().find(|j| j.conn == conn) else {
            return;
        };
        let can_start = matches!(record.binary, Binary::Ready);
        // The job's binary is fetched only for an ask this node could grant once it has it:
        // one it has no room for is refused now, not after the fetch (95 MB took 1.4-1.9 s,
        // which the asking owner's tasks waited out before they went to another node).
        let could = (record.pool.as_ref())
            .is_some_and(|pool| pool.room(self.grants.room(), true).fits(&shape));
        if !draining && could && !can_start {
            let waiter = Waiter::Afar {
                owner,
                key,
                shape,
                from,
                near,
            };
            return self.fetch_binary_for(conn, (0, waiter), source);
        }
        // It hears of this pool's room from now on; it counts this ask off what it thinks.
        record.told.entry(from.clone()).or_default().asked(&shape);
        let asked = match (&mut record.pool, draining) {
            (Some(pool), false) => pool.ask_afar(
                (&mut self.grants, pool::pool_client(conn)),
                (owner, key, &shape),
                can_start,
            ),
            _ => Asked::Forward,
        };
        let pooled = record.pool.is_some();
        if self.afar_granted(conn, (owner, key, &from), asked) {
            return;
        }
        let hold = near && !draining && pooled && shape.fits_in(self.grants.total());
        if let (true, Some(now), Some((_, record))) = (hold, self.now, self.job_of_mut(conn)) {
            let until = now + NEAR_HOLD;
            let held = NearHeld {
                owner,
                key,
                shape,
                from,
                until,
            };
            tracing::debug!(owner, lease = %key, node = %held.from, "a lease ask near its arguments waits here for room");
            record.near_held.push(held);
            return;
        }
        self.refuse_afar(
            conn,
            (owner, key, from),
            format!("node {name} has no room for {shape} now"),
        );
    }

    /// What the pool of the job on `conn` decided for owner `owner`'s ask `key` from node
    /// `from`: a grant goes back there (once its worker runs, when one starts). False when
    /// it was not granted.
    fn afar_granted(
        &mut self,
        conn: ConnId,
        (owner, key, from): (u64, TaskId, &str),
        asked: Asked,
    ) -> bool {
        let granted = match asked {
            Asked::Granted { worker } => Some(worker),
            Asked::Start { worker } => {
                let Some((_, record)) = self.job_of_mut(conn) else {
                    return false;
                };
                // The grant goes to the owner's node once the worker runs.
                let setup = record.setup.clone();
                self.actions.push_back(Action::Start {
                    conn,
                    worker,
                    setup,
                });
                None
            }
            Asked::Forward | Asked::Waits => return false,
        };
        if let Some((_, record)) = self.job_of_mut(conn) {
            record.spill.took(owner, from);
        }
        if let Some(worker) = granted {
            self.grant_afar(conn, from.to_string(), (owner, key, worker));
        }
        true
    }

    /// Refuses owner `owner`'s ask `key` from node `from` for `reason`; the room this node
    /// has now follows.
    fn refuse_afar(
        &mut self,
        conn: ConnId,
        (owner, key, from): (u64, TaskId, String),
        reason: String,
    ) {
        if let Some((_, record)) = self.job_of_mut(conn) {
            record.told.entry(from.clone()).or_default().refused();
        }
        self.peer_send(conn, from, PeerLease::Refused { owner, key, reason });
    }

    /// Grants the asks held near their arguments that the pools have room for now, in the
    /// order they came (after the pools' own waiting asks, which [`Pool::ask_afar`] never
    /// goes ahead of).
    fn retry_near(&mut self) {
        if self.draining {
            // It grants nothing new: the held asks are refused when due.
            return;
        }
        let conns: Vec<ConnId> = (self.jobs.values())
            .filter(|j| !j.near_held.is_empty())
            .map(|j| j.conn)
            .collect();
        for conn in conns {
            let Some((_, record)) = self.job_of_mut(conn) else {
                continue;
            };
            let held = std::mem::take(&mut record.near_held);
            let mut kept = Vec::new();
            for one in held {
                let Some(record) = self.jobs.values_mut().find(|j| j.conn == conn) else {
                    break;
                };
                let can_start = matches!(record.binary, Binary::Ready);
                let asked = match &mut record.pool {
                    Some(pool) => pool.ask_afar(
                        (&mut self.grants, pool::pool_client(conn)),
                        (one.owner, one.key, &one.shape),
                        can_start,
                    ),
                    None => Asked::Forward,
                };
                if !self.afar_granted(conn, (one.owner, one.key, &one.from), asked) {
                    kept.push(one);
                }
            }
            if let Some((_, record)) = self.job_of_mut(conn) {
                kept.append(&mut record.near_held);
                record.near_held = kept;
            }
        }
    }

    /// Refuses the asks held near their arguments that are due at `now`.
    fn near_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        for job in self.jobs.values_mut() {
            let (late, held) = std::mem::take(&mut job.near_held)
                .into_iter()
                .partition(|h| h.until <= now);
            job.near_held = held;
            due.extend(late.into_iter().map(|h: NearHeld| (job.conn, h)));
        }
        for (conn, held) in due {
            let reason = format!(
                "node {} had no room for {} within {} ms",
                self.name,
                held.shape,
                NEAR_HOLD.as_millis()
            );
            self.refuse_afar(conn, (held.owner, held.key, held.from), reason);
        }
    }

    /// Drops the asks held near their arguments of owner `owner` (`key`: that ask only),
    /// withdrawn or gone: true when any was.
    fn drop_near(&mut self, conn: ConnId, owner: u64, key: Option<TaskId>) -> bool {
        let Some((_, record)) = self.job_of_mut(conn) else {
            return false;
        };
        let before = record.near_held.len();
        (record.near_held).retain(|h| h.owner != owner || key.is_some_and(|k| k != h.key));
        record.near_held.len() != before
    }

    /// Ends every job (the daemon stops).
    pub(crate) fn end_all(&mut self) {
        let mut names: Vec<String> = self.jobs.keys().cloned().collect();
        names.sort();
        for name in names {
            self.end(&name, Ending::DaemonStops);
        }
    }

    /// Takes in what happened at `now`.
    pub(crate) fn handle(&mut self, event: Event<P, S>, now: Instant) {
        self.now = Some(now);
        match event {
            Event::Connected { conn, job } => {
                self.connections.insert(conn, job);
            }
            Event::Request { conn, req, request } => self.request(conn, req, request, now),
            Event::Prepared {
                conn,
                req,
                job,
                result,
                cached,
            } => self.prepared(conn, req, job, result, cached, now),
            Event::BinaryFetched { conn, result } => self.binary_fetched(conn, result, now),
            Event::Spawned {
                conn,
                req,
                worker,
                result,
            } => {
                let reply = match (result, self.job_of_mut(conn)) {
                    (Ok(pid), Some((_, job))) => {
                        job.started(worker, pid);
                        FromHost::Spawned(pid)
                    }
                    (Ok(_), None) => {
                        // The job ended while the process started: it goes too.
                        self.actions.push_back(Action::Kill { conn, worker });
                        FromHost::Error(format!("the job ended on node {}", self.name))
                    }
                    (Err(e), _) => FromHost::Error(e),
                };
                self.reply(conn, req, reply);
            }
            Event::WorkerExited {
                conn,
                worker,
                reason,
            } => {
                if let Some((_, job)) = self.job_of_mut(conn) {
                    job.workers.remove(&worker);
                    job.hellos.remove(&worker);
                    job.unsaid.remove(&worker);
                }
                let exited = format!("worker {worker} exited on node {}: {reason}", self.name);
                self.tell_watchers(conn, worker, &exited);
                self.pool_worker_exited(conn, worker, &reason);
                let event = HostEvent::WorkerExited { worker, reason };
                self.actions.push_back(Action::Tell { conn, event });
            }
            Event::Started {
                conn,
                worker,
                result,
            } => self.pool_started(conn, worker, result),
            Event::Pulled {
                conn,
                id,
                len,
                result,
            } => {
                let Some(pull) = self.pulls.remove(&(conn, id)) else {
                    return;
                };
                if result == Ok(true) {
                    self.pulled.objects += 1;
                    self.pulled.bytes += len;
                }
                // Pulled for a worker of this node that owns it, and died meanwhile: its
                // objects here went with it ([`Request::DropOwnedBy`]), this one too.
                let orphan = result == Ok(true)
                    && pull.waiting.is_empty()
                    && pull.copy_for.is_none()
                    && self.job_of_mut(conn).is_some_and(|(_, job)| {
                        let owner = id.task.owner;
                        job.idx == Some(nodes::node_of(owner)) && !job.workers.contains_key(&owner)
                    });
                let reply = match &result {
                    Ok(_) => FromHost::Done,
                    Err(e) => FromHost::Error(e.clone()),
                };
                for (conn, req) in pull.waiting {
                    self.reply(conn, req, reply.clone());
                }
                for worker in pull.workers {
                    let error = result.as_ref().err().cloned();
                    let message = Box::new(ToWorker::Fetched { id, error });
                    let write = Action::Write {
                        conn,
                        worker,
                        message,
                    };
                    self.actions.push_back(write);
                }
                if let (Ok(_), Some(owner)) = (&result, pull.copy_for)
                    && let Some((_, job)) = self.job_of_mut(conn)
                {
                    match job.owners_gone.contains(&owner) {
                        // Its owner went while it was pulled: nobody drops it later.
                        true => self.unlink(conn, vec![id], false),
                        false => {
                            job.copies.entry(owner).or_default().insert(id);
                            self.watch_owner(conn, owner);
                        }
                    }
                }
                if orphan {
                    self.unlink(conn, vec![id], false);
                }
                if let (Ok(_), Some(to), Some(job)) =
                    (&result, pull.made_at, self.connections.get(&conn))
                {
                    let (owner, ids) = (id.task.owner, vec![id]);
                    self.actions.push_back(Action::Peer {
                        job: job.clone(),
                        to,
                        message: PeerLease::Taken { owner, ids },
                    });
                }
            }
            Event::Performed { conn, req, result } => {
                let reply = result.map_or_else(FromHost::Error, |()| FromHost::Done);
                self.reply(conn, req, reply);
                if self.freeing.remove(&req).is_some() && !self.after_free.is_empty() {
                    // In the order they came: each waits again behind a free still under way.
                    for (conn, req, fetch) in std::mem::take(&mut self.after_free) {
                        self.request(conn, req, fetch, now);
                    }
                }
            }
            Event::Peer {
                job,
                from,
                source,
                binary_from,
                message,
            } => self.peer(job, (from, binary_from.unwrap_or(source)), message, now),
            Event::OwnerAt { job, owner, node } => {
                if let Some(job) = self.jobs.get_mut(&job) {
                    job.owner_nodes.insert(owner, node);
                }
            }
            Event::Renewed { conn, seq } => {
                if let Some((_, job)) = self.job_of_mut(conn) {
                    job.lease.granted(seq);
                }
            }
            Event::Closed { conn } => {
                self.connections.remove(&conn);
                if let Some((name, _)) = self.job_of_mut(conn) {
                    let name = name.clone();
                    self.end(&name, Ending::DriverLeft);
                }
            }
        }
    }

    fn request(&mut self, conn: ConnId, req: ReqId, request: Request<P>, now: Instant) {
        if let Request::StartJob(start) = request {
            return self.start(conn, req, start);
        }
        if self.job_of_mut(conn).is_none() {
            let job = self.connection_job(conn).unwrap_or_default();
            let error = format!("node {} hosts no job {job} for this connection", self.name);
            return self.reply(conn, req, FromHost::Error(error));
        }
        let (name, job) = self.job_of_mut(conn).expect("checked");
        let (name, setup) = (name.clone(), job.setup.clone());
        let work = |work| Action::Files {
            conn,
            req,
            setup: setup.clone(),
            work,
        };
        let action = match request {
            Request::StartJob(_) => unreachable!("handled above"),
            Request::Spawn {
                worker,
                binary_from,
            } => {
                if !matches!(job.binary, Binary::Ready) {
                    let waiter = (req, Waiter::Spawn(worker));
                    return self.fetch_binary_for(conn, waiter, binary_from);
                }
                Action::Spawn {
                    conn,
                    req,
                    worker,
                    setup,
                }
            }
            Request::Kill { worker } => {
                let known = job.workers.contains_key(&worker);
                self.reply(conn, req, FromHost::Done);
                match known {
                    true => Action::Kill { conn, worker },
                    false => return,
                }
            }
            Request::Fetch { id, .. }
                if (self.freeing.values()).any(|(c, ids)| *c == conn && ids.contains(&id)) =>
            {
                self.after_free.push((conn, req, request));
                return;
            }
            Request::Fetch { id, len, from } => {
                let key = (conn, id);
                if let Some(pull) = self.pulls.get_mut(&key) {
                    pull.waiting.push((conn, req));
                    return;
                }
                let waiting = vec![(conn, req)];
                let pull = Pull {
                    waiting,
                    ..Pull::default()
                };
                self.pulls.insert(key, pull);
                Action::Pull {
                    conn,
                    job: name,
                    id,
                    len,
                    from,
                    setup,
                }
            }
            Request::Free(ids) => {
                self.freeing.insert(req, (conn, ids.clone()));
                work(FileWork::Free { ids, pool: true })
            }
            Request::Drop(ids) => {
                self.freeing.insert(req, (conn, ids.clone()));
                work(FileWork::Free { ids, pool: false })
            }
            Request::DropOwnedBy { owner, mut keep } => {
                keep.sort_unstable();
                work(FileWork::DropOwnedBy { owner, keep })
            }
            Request::Spill(objects) => work(FileWork::Spill(objects)),
            Request::Restore { id, len } => work(FileWork::Restore { id, len }),
            Request::ForgetPeer { at } => Action::ForgetPeer { conn, req, at },
            Request::EndJob => {
                self.end(&name, Ending::Drained);
                self.reply(conn, req, FromHost::Done);
                return;
            }
            Request::Grant { shape } => {
                match self.grants.ask(conn, req, shape) {
                    Answer::Granted => self.reply(conn, req, FromHost::Granted),
                    Answer::Waiting => self.reclaim(now),
                    Answer::Never(why) => {
                        let error = format!("node {} cannot grant the job: {why}", self.name);
                        self.reply(conn, req, FromHost::Error(error));
                    }
                }
                return;
            }
            Request::Return { resources } => {
                self.grants.give_back(conn, &resources);
                self.reply(conn, req, FromHost::Done);
                self.retry_pools();
                return;
            }
            Request::Pool {
                first,
                end,
                max_workers,
                elsewhere,
            } => {
                let keep = crate::proto::node::soft_limit_of(self.grants.total());
                let (_, job) = self.job_of_mut(conn).expect("checked");
                let refused = match (first < end, &mut job.pool) {
                    (false, _) => Some("an empty range of numbers"),
                    (true, Some(pool)) if !pool.numbered(first, end) => {
                        Some("the job has one of other numbers")
                    }
                    (true, Some(pool)) => {
                        pool.set_elsewhere(elsewhere, now);
                        None
                    }
                    (true, None) => {
                        let pool = Pool::new(first..end, max_workers, elsewhere);
                        job.pool = Some(pool.keeping_idle(keep));
                        None
                    }
                };

                let reply = refused.map_or(FromHost::Done, |why| {
                    FromHost::Error(format!("node {}: no pool of workers: {why}", self.name))
                });
                self.reply(conn, req, reply);
                return;
            }
            Request::Peers { joined, left } => {
                let (_, job) = self.job_of_mut(conn).expect("checked");
                let mut gone = job.spill.peers_changed(joined, &left, now);
                // The owners whose frames came from those nodes are gone too.
                for (&owner, node) in &job.owner_nodes {
                    if left.contains(node) && !gone.owners.contains(&owner) {
                        gone.owners.push(owner);
                    }
                }
                self.reply(conn, req, FromHost::Done);
                self.nodes_left(conn, gone, now);
                return;
            }
            Request::LeaseWorker { beyond_cap } => {
                let (_, job) = self.job_of_mut(conn).expect("checked");
                let lend = match (&mut job.pool, &mut job.binary) {
                    (None, _) => Err("the job has no pool of workers here"),
                    (Some(pool), Binary::Ready) => Ok(pool.lend(req, beyond_cap, now)),
                    // Lent once the binary is here (a spawn of the driver's fetches it).
                    (Some(_), Binary::Fetching { waiting, .. }) => {
                        return waiting.push((req, Waiter::Lend { beyond_cap }));
                    }
                    (Some(_), Binary::Missing(_)) => Err("the job's binary is not here yet"),
                };
                match lend {
                    Ok(lend) => self.carry_out_lend(conn, &setup, req, lend),
                    Err(why) => {
                        let error = format!("node {} lends no worker: {why}", self.name);
                        self.reply(conn, req, FromHost::Error(error));
                    }
                }
                return;
            }
            Request::KeepWorker { worker } => {
                if let Some((pool, grants)) = self.pool_on(conn) {
                    pool.keep((grants, pool::pool_client(conn)), worker);
                }
                self.reply(conn, req, FromHost::Done);
                self.retry_pools();
                return;
            }
            Request::ReturnWorker { worker } => {
                let (_, job) = self.job_of_mut(conn).expect("checked");
                let known = job.workers.contains_key(&worker);
                let taken = match &mut job.pool {
                    Some(pool) if known => pool.take_back(worker, now),
                    _ => false,
                };
                if !taken {
                    // Not the job's, or leased: the driver's word changes nothing.
                    tracing::warn!(job = %name, worker, "a worker given back that the pool cannot take");
                }
                self.reply(conn, req, FromHost::Done);
                self.retry_pools();
                return;
            }
        };
        self.actions.push_back(action);
    }

    /// A driver asks the node to run its job.
    fn start(&mut self, conn: ConnId, req: ReqId, start: JobStart<P>) {
        let job = match self.connection_job(conn) {
            Some(job) => job,
            None => {
                let error = format!("node {} knows no job for this connection", self.name);
                return self.reply(conn, req, FromHost::Error(error));
            }
        };
        if let Err(e) = self.open_for(&job, conn) {
            return self.reply(conn, req, FromHost::Error(e));
        }
        if self.jobs.contains_key(&job) {
            return self.reply(conn, req, FromHost::Done);
        }
        self.preparing
            .insert(req, (conn, job.clone(), start.clone()));
        self.actions.push_back(Action::Prepare {
            conn,
            req,
            job,
            start,
        });
    }

    /// The shell prepared (or failed to prepare) a job: it runs here unless the node began
    /// to drain or another connection started it meanwhile.
    fn prepared(
        &mut self,
        conn: ConnId,
        req: ReqId,
        job: String,
        result: Result<S, String>,
        cached: bool,
        now: Instant,
    ) {
        let Some((_, _, start)) = self.preparing.remove(&req) else {
            return;
        };
        let length = lease::at_least_shortest(start.lease);
        let events = OwnedReports::new(start.task_events);
        let setup = match result {
            Ok(setup) => setup,
            Err(e) => return self.reply(conn, req, FromHost::Error(e)),
        };
        let refused = match self.open_for(&job, conn) {
            Err(e) => Some(e),
            // Started twice on one connection: the first stands.
            Ok(()) if self.jobs.contains_key(&job) => None,
            Ok(()) => {
                let lease = Lease::new(now, length, lease::RENEW_EVERY);
                let workers = HashMap::new();
                let binary = match cached {
                    true => Binary::Ready,
                    false => Binary::Missing(start),
                };
                let record = Job {
                    conn,
                    setup,
                    workers,
                    idx: None,
                    lease,
                    binary,
                    events,
                    pool: None,
                    spill: Spill::default(),
                    copies: HashMap::new(),
                    owners_gone: HashSet::new(),
                    watched_owners: HashSet::new(),
                    kept: HashMap::new(),
                    near_held: Vec::new(),
                    owner_nodes: HashMap::new(),
                    sent_to: HashMap::new(),
                    handles: HashMap::new(),
                    told: BTreeMap::new(),
                    hellos: HashMap::new(),
                    unsaid: HashMap::new(),
                    leased_at: HashMap::new(),
                    watchers: HashMap::new(),
                };
                self.jobs.insert(job, record);
                // The first renewal is asked for at once.
                self.handle_timeout(now);
                return self.reply(conn, req, FromHost::Done);
            }
        };
        self.actions.push_back(Action::EndJob {
            conn,
            job,
            why: Ending::Refused,
            workers: Vec::new(),
            setup,
        });
        let reply = refused.map_or(FromHost::Done, FromHost::Error);
        self.reply(conn, req, reply);
    }

    /// The job on `conn` got its binary (its waiting workers start) or cannot: then it ends
    /// here and its connection closes, so that its driver counts the node lost (and asks it
    /// again later) rather than its workers as broken.
    fn binary_fetched(&mut self, conn: ConnId, result: Result<(), String>, now: Instant) {
        let Some((name, job)) = self.job_of_mut(conn) else {
            return;
        };
        let (start, from_peer, waiting) = match std::mem::replace(&mut job.binary, Binary::Ready) {
            Binary::Fetching {
                start,
                from_peer,
                waiting,
            } => (start, from_peer, waiting),
            other => {
                job.binary = other;
                return;
            }
        };
        let (name, setup) = (name.clone(), job.setup.clone());
        if let (Err(e), true) = (&result, from_peer) {
            // The node that had it could not give it: the driver can.
            tracing::info!(job = %name, "the job's binary could not come from another node ({e}): fetching it from the driver");
            let from = start.from.clone();
            job.binary = Binary::Fetching {
                start: start.clone(),
                from_peer: false,
                waiting,
            };
            let job = name;
            self.actions.push_back(Action::FetchBinary {
                conn,
                job,
                start,
                from,
            });
            return;
        }
        match result {
            Ok(()) => {
                for (req, waiter) in waiting {
                    let setup = setup.clone();
                    let beyond_cap = match waiter {
                        Waiter::Afar {
                            owner,
                            key,
                            shape,
                            from,
                            near,
                        } => {
                            self.ask_afar(conn, (owner, key, shape, near), (from, None));
                            continue;
                        }
                        Waiter::Spawn(worker) => {
                            self.actions.push_back(Action::Spawn {
                                conn,
                                req,
                                worker,
                                setup,
                            });
                            continue;
                        }
                        Waiter::Lend { beyond_cap } => beyond_cap,
                    };
                    let lend = match self.pool_on(conn) {
                        Some((pool, _)) => pool.lend(req, beyond_cap, now),
                        None => continue,
                    };
                    self.carry_out_lend(conn, &setup, req, lend);
                }
            }
            Err(e) => {
                let reason = format!("node {} cannot get the job's binary: {e}", self.name);
                for (req, waiter) in waiting {
                    if let Waiter::Afar {
                        owner, key, from, ..
                    } = waiter
                    {
                        let reason = reason.clone();
                        self.peer_send(conn, from, PeerLease::Refused { owner, key, reason });
                        continue;
                    }
                    self.reply(conn, req, FromHost::Error(reason.clone()));
                }
                self.end(&name, Ending::NoBinary);
                let why = Ending::NoBinary;
                self.actions.push_back(Action::Close { conn, why, reason });
            }
        }
    }

    /// Refuses job `job` on `conn` when the node drains or another connection runs it.
    fn open_for(&self, job: &str, conn: ConnId) -> Result<(), String> {
        if !self.connections.contains_key(&conn) {
            // Its driver left while the job was being prepared: nothing would renew its lease.
            return Err(format!(
                "node {}: the connection for job {job} closed while it was prepared",
                self.name
            ));
        }
        if self.draining {
            return Err(format!(
                "node {} is draining: it takes no new job",
                self.name
            ));
        }
        match self.jobs.get(job) {
            Some(running) if running.conn != conn => Err(format!(
                "node {} already hosts a job named {job} for another connection",
                self.name
            )),
            _ => Ok(()),
        }
    }

    /// The job connection `conn` was opened for.
    fn connection_job(&self, conn: ConnId) -> Option<String> {
        self.connections.get(&conn).cloned()
    }

    /// The job `conn` runs, by name.
    fn job_of_mut(&mut self, conn: ConnId) -> Option<(&String, &mut Job<P, S>)> {
        self.jobs.iter_mut().find(|(_, j)| j.conn == conn)
    }

    /// Ends job `name` here: its workers are to be killed and its files removed; requests
    /// waiting for its pulls fail.
    fn end(&mut self, name: &str, why: Ending) -> Option<Ended> {
        let job = self.jobs.remove(name)?;
        self.grants.forget(job.conn);
        self.grants.forget(pool::pool_client(job.conn));
        self.retry_pools();
        let mut workers: Vec<u64> = job.workers.into_keys().collect();
        workers.sort_unstable();
        if job.events.events.on() {
            // What its workers' tasks did last still goes to the head, with the next reports.
            let ended = (
                name.to_string(),
                job.conn,
                job.idx,
                job.leased_at,
                job.events,
            );
            self.ended_reports.push(ended);
        }
        let mut waiting = Vec::new();
        self.pulls.retain(|(of, _), pull| {
            let keep = *of != job.conn;
            if !keep {
                waiting.append(&mut pull.waiting);
            }
            keep
        });
        for (conn, req) in waiting {
            let error = format!("the job ended on node {}", self.name);
            self.reply(conn, req, FromHost::Error(error));
        }
        self.actions.push_back(Action::EndJob {
            conn: job.conn,
            job: name.to_string(),
            why,
            workers,
            setup: job.setup,
        });
        Some(Ended {
            conn: job.conn,
            lease_ms: job.lease.length().as_millis(),
        })
    }

    /// Answers the asks granted since the last answer.
    fn answer_granted(&mut self) {
        for (conn, req) in self.grants.take_granted() {
            self.reply(conn, req, FromHost::Granted);
        }
    }

    /// Asks the jobs that hold grants for what they do not use, while asks wait.
    fn reclaim(&mut self, now: Instant) {
        let (conns, keep) = self.grants.reclaim(now);
        for conn in conns {
            let event = HostEvent::Reclaim { keep: keep.clone() };
            self.actions.push_back(Action::Tell { conn, event });
        }
    }

    fn reply(&mut self, conn: ConnId, req: ReqId, reply: FromHost) {
        self.actions.push_back(Action::Reply { conn, req, reply });
    }
}

/// Takes `id` out of `owner`'s set in `sets`: whether it was there.
fn take(sets: &mut HashMap<u64, HashSet<ObjectId>>, owner: u64, id: &ObjectId) -> bool {
    let Some(set) = sets.get_mut(&owner) else {
        return false;
    };
    let had = set.remove(id);
    if set.is_empty() {
        sets.remove(&owner);
    }
    had
}

/// A job that ended: its connection and lease.
struct Ended {
    conn: ConnId,
    lease_ms: u128,
}

#[cfg(test)]
mod tests {
    use super::*;

    type Node = Hosting<u32, &'static str>;

    const S: Duration = Duration::from_secs(1);

    fn start(lease: Duration) -> Request<u32> {
        start_keeping(lease, 0)
    }

    /// A job start whose node keeps `task_events` records of the tasks its workers own.
    fn start_keeping(lease: Duration, task_events: usize) -> Request<u32> {
        Request::StartJob(JobStart {
            binary: [7; 32],
            size: 100,
            from: 0,
            inline_threshold: 1024,
            store_capacity: 1 << 20,
            lease,
            task_events,
        })
    }

    fn actions(node: &mut Node) -> Vec<Action<u32, &'static str>> {
        std::iter::from_fn(|| node.poll_action()).collect()
    }

    /// Request `request` arrives on `conn` as number `req` at `now`.
    fn ask(node: &mut Node, conn: ConnId, req: ReqId, request: Request<u32>, now: Instant) {
        node.handle(Event::Request { conn, req, request }, now);
    }

    fn reply(conn: ConnId, req: ReqId, reply: FromHost) -> Action<u32, &'static str> {
        Action::Reply { conn, req, reply }
    }

    /// The preparation of job `job` (request 0 on connection 1) ended: its store is "files".
    fn prepared_on_1(job: &str) -> Event<u32, &'static str> {
        Event::Prepared {
            conn: 1,
            req: 0,
            job: job.into(),
            result: Ok("files"),
            cached: true,
        }
    }

    /// Job `job` on connection 1 is refused: its store goes.
    fn refused_on_1(job: &str) -> Action<u32, &'static str> {
        Action::EndJob {
            conn: 1,
            job: job.into(),
            why: Ending::Refused,
            workers: Vec::new(),
            setup: "files",
        }
    }

    /// Node "n" with job "j" running for connection 1 (its store "files"), started at `t0`.
    fn hosting_a_job(t0: Instant) -> Node {
        hosting_a_job_keeping(t0, 0)
    }

    /// A node hosting job `j` (on connection 1), keeping `task_events` records of the tasks
    /// the job's workers own.
    fn hosting_a_job_keeping(t0: Instant, task_events: usize) -> Node {
        let mut node = Node::new("n".into(), Resources::cpus(4.0).unwrap());
        let job = "j".to_string();
        node.handle(Event::Connected { conn: 1, job }, t0);
        let request = start_keeping(5 * S, task_events);
        ask(&mut node, 1, 0, request, t0);
        let prepare = actions(&mut node);
        assert!(
            matches!(&prepare[..], [Action::Prepare { conn: 1, req: 0, job, start }] if job == "j" && start.binary == [7; 32]),
            "{prepare:?}"
        );
        let prepared = prepared_on_1("j");
        node.handle(prepared, t0);
        let renew = HostEvent::Renew { seq: 0 };
        let done = vec![
            Action::Tell {
                conn: 1,
                event: renew,
            },
            reply(1, 0, FromHost::Done),
        ];
        assert_eq!(actions(&mut node), done);
        node
    }

    #[test]
    fn a_job_prepared_after_its_connection_closed_is_not_kept() {
        let t0 = Instant::now();
        let mut node = Node::new("n".into(), Resources::cpus(4.0).unwrap());
        let job = "j".to_string();
        node.handle(Event::Connected { conn: 1, job }, t0);
        ask(&mut node, 1, 0, start(5 * S), t0);
        assert_eq!(actions(&mut node).len(), 1, "the job is being prepared");
        node.handle(Event::Closed { conn: 1 }, t0);
        let prepared = prepared_on_1("j");
        node.handle(prepared, t0);
        let closed = "node n: the connection for job j closed while it was prepared";
        let expected = vec![
            refused_on_1("j"),
            reply(1, 0, FromHost::Error(closed.into())),
        ];
        assert_eq!(actions(&mut node), expected, "its store goes at once");
        assert!(node.idle(), "no job is left for a lease to end later");
    }

    /// The driver of job `j` starts worker 3 (request 1), which starts with pid 4242.
    fn spawn_worker_3(node: &mut Node, t0: Instant) {
        let spawn = Request::Spawn {
            worker: 3,
            binary_from: None,
        };
        ask(node, 1, 1, spawn, t0);
        let expected = Action::Spawn {
            conn: 1,
            req: 1,
            worker: 3,
            setup: "files",
        };
        assert_eq!(actions(node), vec![expected]);
        let spawned = Event::Spawned {
            conn: 1,
            req: 1,
            worker: 3,
            result: Ok(4242),
        };
        node.handle(spawned, t0);
        assert_eq!(actions(node), vec![reply(1, 1, FromHost::Spawned(4242))]);
        assert_eq!(node.workers(), 1);
    }

    /// Worker 3 reports `events` of the tasks it owns, written at 1 ms by its clock.
    fn owned(node: &mut Node, events: Vec<OwnedEvent>, now: Instant) {
        let mut frame = Vec::new();
        let msg = prism_transport::ToNode::Owned {
            sent_us: 1_000,
            events,
        };
        prism_transport::encode_frame(&msg, &mut frame).unwrap();
        let mut decoder = prism_transport::FrameDecoder::new(1 << 20);
        decoder.extend(&frame);
        let frame = decoder.next_frame().unwrap().unwrap();
        let prism_transport::ArchivedToNode::Owned { sent_us, events } =
            frame.access::<prism_transport::ToNode>().unwrap()
        else {
            unreachable!("an owned frame");
        };
        node.owned_events("j", 3, sent_us.to_native(), events, now);
    }

    #[test]
    fn the_tasks_a_worker_owns_are_reported_for_the_head_as_they_change() {
        use prism_graph::TaskId;
        use prism_transport::{OwnedPhase, RunTimes, TaskPhase};
        let t0 = Instant::now();
        let mut node = hosting_a_job_keeping(t0, 100);
        spawn_worker_3(&mut node, t0);
        let (parent, here, afar) = (TaskId::new(0, 1), TaskId::new(3, 1), TaskId::new(3, 2));
        // A worker of the job's node 1 (this node is its node 0).
        let beta_worker = nodes::pool_numbers(1).start;
        let event = |task, at_us, phase| OwnedEvent { task, at_us, phase };
        let submitted = |parent| OwnedPhase::Submitted {
            function: "f".into(),
            ready: true,
            parent,
            actor: None,
        };
        let times = RunTimes {
            args_us: 1,
            run_us: 20,
            store_us: 2,
            ago_us: 0,
        };
        owned(
            &mut node,
            vec![
                event(here, 100, submitted(Some(parent))),
                event(here, 110, OwnedPhase::Sent { worker: 3 }),
                event(
                    here,
                    150,
                    OwnedPhase::Ran {
                        worker: 3,
                        start_us: 120,
                        times,
                    },
                ),
                event(here, 160, OwnedPhase::Finished),
                event(afar, 200, submitted(None)),
                event(
                    afar,
                    210,
                    OwnedPhase::Sent {
                        worker: beta_worker,
                    },
                ),
            ],
            t0,
        );
        let clock = UnixClock {
            now: t0,
            unix_us: 1_000_000_000,
        };
        let beta = |conn: ConnId, worker: u64, _: Option<&str>| {
            (conn == 1 && worker == beta_worker).then(|| "beta".into())
        };
        let reports = node.task_reports(&clock, beta);
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.summary.job, "j");
        let mut tasks = report.tasks.clone();
        tasks.sort_by_key(|t| t.task_id);
        let [done, sent] = &tasks[..] else {
            panic!("two records: {tasks:?}");
        };
        assert_eq!((done.task_id, done.state), (here, TaskPhase::Finished));
        assert_eq!(done.parent, Some(parent), "the parent the worker named");
        assert_eq!(done.node.as_deref(), Some("n"), "its worker is this node's");
        assert_eq!(done.runs[0].pid, Some(4242));
        let states: Vec<TaskPhase> = done.events.iter().map(|e| e.state).collect();
        let stamps: Vec<u64> = done.events.iter().map(|e| e.at_us).collect();
        assert!(
            stamps.windows(2).all(|t| t[0] <= t[1]) && states.last() == Some(&TaskPhase::Finished),
            "its changes in the order they happened, on one clock: {:?}",
            done.events
        );
        assert_eq!(done.runs[0].run_us, 20);
        assert_eq!((sent.task_id, sent.parent), (afar, None));
        assert_eq!(sent.node.as_deref(), Some("beta"), "leased on another node");
        let finished = (report.summary.tasks.iter())
            .find(|c| c.state == TaskPhase::Finished)
            .map(|c| (c.function.as_str(), c.count));
        assert_eq!(finished, Some(("f", 1)));

        // Nothing changed: nothing to report.
        assert!(node.task_reports(&clock, beta).is_empty());
        // A run on another worker of this host, reported in a message that took longer to
        // come: its times are read on the owner's clock, so it ran before it finished.
        let late = TaskId::new(3, 3);
        let ran_on_5 = OwnedPhase::Ran {
            worker: 5,
            start_us: 200,
            times,
        };
        let took_longer = vec![
            event(late, 190, submitted(None)),
            event(late, 300, ran_on_5),
            event(late, 300, OwnedPhase::Finished),
        ];
        owned(&mut node, took_longer, t0 + Duration::from_millis(5));
        let reported = node.task_reports(&clock, beta);
        let late = &reported[0].tasks[0];
        let at = |state| {
            (late.events.iter())
                .find(|e| e.state == state)
                .map(|e| e.at_us)
        };
        assert!(
            at(TaskPhase::Running) <= at(TaskPhase::Finished),
            "{:?}",
            late.events
        );
        owned(
            &mut node,
            vec![event(afar, 300, OwnedPhase::Finished)],
            t0 + S,
        );
        let again = node.task_reports(&clock, beta);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].tasks.len(), 1, "only the record that changed");
        // A head that restarted hears everything again, the tasks of a worker of this node
        // that exited meanwhile named with this node still.
        let reason = "exited".to_string();
        let (conn, worker) = (1, 3);
        node.handle(
            Event::WorkerExited {
                conn,
                worker,
                reason,
            },
            t0 + S,
        );
        acted(&mut node);
        node.report_all_again();
        let all = node.task_reports(&clock, beta);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].tasks.len(), 3);
        let done = all[0].tasks.iter().find(|t| t.task_id == here);
        assert_eq!(done.and_then(|t| t.node.as_deref()), Some("n"));
        // The job ends here before its next report: its last records still go, once.
        owned(&mut node, vec![event(here, 400, OwnedPhase::Again)], t0 + S);
        node.handle(Event::Closed { conn: 1 }, t0 + S);
        assert!(node.idle());
        let last = node.task_reports(&clock, beta);
        assert_eq!(last.len(), 1, "{last:?}");
        assert_eq!(last[0].tasks.len(), 1);
        assert_eq!(
            last[0].tasks[0].node.as_deref(),
            Some("n"),
            "its worker was here"
        );
        assert!(node.task_reports(&clock, beta).is_empty(), "once");
        // Another job's frames and a job that keeps no records report nothing.
        let mut quiet = hosting_a_job(t0);
        spawn_worker_3(&mut quiet, t0);
        owned(&mut quiet, vec![event(here, 100, submitted(None))], t0);
        assert!(quiet.task_reports(&clock, beta).is_empty());
    }

    #[test]
    fn a_job_s_owners_are_leased_workers_of_the_node_s_own_and_what_it_cannot_grant_goes_on() {
        use crate::proto::pool::{ASK_WAITS, IDLE_FOR};
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        spawn_worker_3(&mut node, t0);
        let (at, cpus) = (("j", 1), |n| Resources::cpus(n).unwrap());
        let key = |seq| TaskId::new(3, seq);
        let leased = |k, worker| Action::Write {
            conn: 1,
            worker: 3,
            message: Box::new(ToWorker::Leased {
                key: k,
                worker,
                at: None,
                direct: None,
            }),
        };
        // Until the driver lets it, every ask is the driver's.
        assert!(!node.lease_ask(at, (3, key(1)), &cpus(1.0), t0));
        // The driver holds 2 of the 4 CPUs; its other nodes have 1 CPU each.
        ask(&mut node, 1, 2, Request::Grant { shape: cpus(2.0) }, t0);
        assert_eq!(actions(&mut node), [reply(1, 2, FromHost::Granted)]);
        let pool = Request::Pool {
            first: 100,
            end: 200,
            max_workers: 8,
            elsewhere: cpus(1.0),
        };
        ask(&mut node, 1, 3, pool, t0);
        assert_eq!(actions(&mut node), [reply(1, 3, FromHost::Done)]);
        // Two leases on workers the node starts, which own their tasks from the start.
        for (seq, worker) in [(1, 100), (2, 101)] {
            assert!(node.lease_ask(at, (3, key(seq)), &cpus(1.0), t0));
            let start = Action::Start {
                conn: 1,
                worker,
                setup: "files",
            };
            assert_eq!(actions(&mut node), [start]);
            let result = Ok(5000 + worker as u32);
            node.handle(
                Event::Started {
                    conn: 1,
                    worker,
                    result,
                },
                t0,
            );
            let own = Action::Write {
                conn: 1,
                worker,
                message: Box::new(ToWorker::OwnTasks),
            };
            assert_eq!(actions(&mut node), [own, leased(key(seq), worker)]);
        }
        // The node is full: an ask another node could run goes to the driver after its wait;
        // one no other node could run waits here for room.
        assert!(node.lease_ask(at, (3, key(3)), &cpus(1.0), t0));
        assert!(node.lease_ask(at, (3, key(4)), &cpus(2.0), t0));
        assert!(actions(&mut node).is_empty());
        node.handle_timeout(t0 + ASK_WAITS);
        let on = Action::Up {
            conn: 1,
            worker: 3,
            message: Box::new(ToNode::Lease {
                key: key(3),
                shape: cpus(1.0),
                near: None,
            }),
        };
        let sent: Vec<_> = (actions(&mut node).into_iter())
            .filter(|a| !matches!(a, Action::Tell { .. }))
            .collect();
        assert_eq!(sent, [on]);
        // A leased worker blocks and the driver gives a CPU back: the wider ask fits now.
        node.worker_blocked(at, 100, 0, true);
        assert!(actions(&mut node).is_empty());
        ask(
            &mut node,
            1,
            4,
            Request::Return {
                resources: cpus(1.0),
            },
            t0,
        );
        let start = Action::Start {
            conn: 1,
            worker: 102,
            setup: "files",
        };
        assert_eq!(actions(&mut node), [reply(1, 4, FromHost::Done), start]);
        // A lease given back is the node's business alone; another's is the driver's.
        assert!(node.unlease(at, 3, key(2), t0));
        assert!(!node.unlease(at, 3, TaskId::new(3, 99), t0));
        assert!(!node.kill_leased(at, 3, key(2)));
        // A leased worker dies: its owner hears from the node.
        let exited = |worker| Event::WorkerExited {
            conn: 1,
            worker,
            reason: "killed".into(),
        };
        node.handle(exited(100), t0);
        let ended = Action::Write {
            conn: 1,
            worker: 3,
            message: Box::new(ToWorker::LeaseEnded {
                key: key(1),
                reason: "leased worker 100 died: killed".into(),
            }),
        };
        let told = Action::Tell {
            conn: 1,
            event: HostEvent::WorkerExited {
                worker: 100,
                reason: "killed".into(),
            },
        };
        assert_eq!(actions(&mut node), [ended, told]);
        // The owner dies: the worker still starting for it is killed; the idle one stays,
        // however long it idles (the node keeps as many idle workers as it has CPUs).
        node.handle(exited(3), t0);
        let dead = actions(&mut node);
        assert_eq!(
            dead[0],
            Action::Kill {
                conn: 1,
                worker: 102
            },
            "{dead:?}"
        );
        node.handle_timeout(t0 + 10 * IDLE_FOR);
        let stopped: Vec<_> = (actions(&mut node).into_iter())
            .filter(|a| matches!(a, Action::Kill { .. }))
            .collect();
        assert_eq!(stopped, [], "the idle worker is kept");
        // A draining node takes no ask.
        node.start_draining();
        assert!(!node.lease_ask(at, (3, key(5)), &cpus(1.0), t0));
    }

    /// Node `node` hosting job "j" lets its pool number workers from `first` and pass asks
    /// on to `peers` (each of 4 CPUs); its driver holds `held` of its 4 CPUs.
    fn pooled(node: &mut Node, first: u64, peers: &[&str], held: f64, t0: Instant) {
        let cpus = |n| Resources::cpus(n).unwrap();
        ask(node, 1, 2, Request::Grant { shape: cpus(held) }, t0);
        ask(
            node,
            1,
            3,
            Request::Pool {
                first,
                end: first + 100,
                max_workers: 8,
                elsewhere: cpus(4.0),
            },
            t0,
        );
        let joined = peers.iter().map(|p| (p.to_string(), cpus(4.0))).collect();
        ask(
            node,
            1,
            4,
            Request::Peers {
                joined,
                left: Vec::new(),
            },
            t0,
        );
        let answered = [
            reply(1, 2, FromHost::Granted),
            reply(1, 3, FromHost::Done),
            reply(1, 4, FromHost::Done),
        ];
        assert_eq!(actions(node), answered);
    }

    /// What `node` does next, without its reports to the driver.
    fn acted(node: &mut Node) -> Vec<Action<u32, &'static str>> {
        (actions(node).into_iter())
            .filter(|a| !matches!(a, Action::Tell { .. }))
            .collect()
    }

    fn to_peer(to: &str, message: PeerLease) -> Action<u32, &'static str> {
        let (job, to) = ("j".to_string(), to.to_string());
        Action::Peer { job, to, message }
    }

    fn from_peer(from: &str, message: PeerLease) -> Event<u32, &'static str> {
        let (job, from) = ("j".to_string(), from.to_string());
        let source = 9;
        Event::Peer {
            job,
            from,
            source,
            binary_from: None,
            message,
        }
    }

    /// Two daemons of job "j", "a" and "b", each with a pool told of the other: a runs
    /// worker 3, and the driver holds all of a's CPUs, none of b's.
    fn two_daemons(t0: Instant) -> (Node, Node) {
        let (mut a, mut b) = (hosting_a_job(t0), hosting_a_job(t0));
        spawn_worker_3(&mut a, t0);
        pooled(&mut a, 100, &["b"], 4.0, t0);
        pooled(&mut b, 200, &["a"], 0.0, t0);
        (a, b)
    }

    #[test]
    fn a_grant_to_an_owner_afar_names_the_worker_s_endpoint_and_the_worker_hears_whose_it_is() {
        let t0 = Instant::now();
        let (mut a, mut b) = two_daemons(t0);
        b.direct_links = true;
        let (at, cpu) = (("j", 1), Resources::cpus(1.0).unwrap());
        let key = TaskId::new(3, 1);
        assert!(a.lease_ask(at, (3, key), &cpu, t0));
        let ask = ask_of(key, &cpu);
        assert_eq!(acted(&mut a), [to_peer("b", ask.clone())]);
        b.handle(from_peer("a", ask), t0);
        let _ = acted(&mut b);
        let started = Event::Started {
            conn: 1,
            worker: 200,
            result: Ok(5200),
        };
        b.handle(started, t0);
        let own = Action::Write {
            conn: 1,
            worker: 200,
            message: Box::new(ToWorker::OwnTasks),
        };
        // The grant waits for the worker's hello, which names its endpoint.
        assert_eq!(acted(&mut b), [own]);
        let hello = ToNode::Hello(prism_transport::Hello {
            protocol: prism_transport::PROTOCOL_VERSION,
            fingerprint: 1,
            worker: 200,
            pid: 5200,
            direct: Some("b:40000".into()),
        });
        assert!(
            !from_worker(&mut b, 200, &hello, &|_| None),
            "on to the driver"
        );
        let lent = |owner| Action::Write {
            conn: 1,
            worker: 200,
            message: Box::new(ToWorker::Lent { owner }),
        };
        let granted = PeerLease::Granted {
            owner: 3,
            key,
            worker: 200,
            direct: Some("b:40000".into()),
        };
        // The worker hears whose pushes to run before the grant leaves.
        assert_eq!(
            acted(&mut b),
            [lent(Some(3)), to_peer("a", granted.clone())]
        );
        a.handle(from_peer("b", granted), t0);
        let leased = Action::Write {
            conn: 1,
            worker: 3,
            message: Box::new(ToWorker::Leased {
                key,
                worker: 200,
                at: Some("b".into()),
                direct: Some("b:40000".into()),
            }),
        };
        assert_eq!(acted(&mut a), [leased]);
        // Given back, the worker runs no more of the owner's pushes.
        assert!(a.unlease(at, 3, key, t0));
        let unlease = PeerLease::Unlease { owner: 3, key };
        assert_eq!(acted(&mut a), [to_peer("b", unlease.clone())]);
        b.handle(from_peer("a", unlease), t0);
        assert_eq!(acted(&mut b).first(), Some(&lent(None)));
        // b may keep values its worker made for the owner past the lease: it hears of the
        // owner's death all the same.
        let told = worker_3_dies(&mut a, t0);
        assert_eq!(told, [to_peer("b", PeerLease::OwnerGone { owner: 3 })]);
    }

    /// Worker 3 of `node` is killed: what its node tells the other nodes.
    fn worker_3_dies(node: &mut Node, t0: Instant) -> Vec<Action<u32, &'static str>> {
        let exited = Event::WorkerExited {
            conn: 1,
            worker: 3,
            reason: "killed".into(),
        };
        node.handle(exited, t0);
        (acted(node).into_iter())
            .filter(|a| matches!(a, Action::Peer { .. }))
            .collect()
    }

    #[test]
    fn an_ask_near_its_arguments_goes_to_their_node_first_and_is_decided_at_home_if_refused_there()
    {
        let t0 = Instant::now();
        // a has room; b's CPUs are all the driver's.
        let (mut a, mut b) = owner_3_asking_near(t0, 4.0);
        let cpu = Resources::cpus(1.0).unwrap();
        let near = |seq, at: &str| ToNode::Lease {
            key: TaskId::new(3, seq),
            shape: cpu.clone(),
            near: Some(at.into()),
        };
        // Near b (its task's arguments are there): asked of b before a's own pool.
        assert!(from_worker(&mut a, 3, &near(1, "b"), &|_| None));
        let ask = near_ask(TaskId::new(3, 1), &cpu);
        assert_eq!(acted(&mut a), [to_peer("b", ask.clone())]);
        // b has no room: it holds the ask a while for room to come back, then refuses it;
        // the ask is a's own to decide, which starts a worker for it.
        b.handle(from_peer("a", ask), t0);
        let refusals = |actions: Vec<Action<u32, &'static str>>| {
            (actions.into_iter())
                .filter(|a| {
                    matches!(
                        a,
                        Action::Peer {
                            message: PeerLease::Refused { .. },
                            ..
                        }
                    )
                })
                .count()
        };
        assert_eq!(refusals(acted(&mut b)), 0, "held");
        assert_eq!(b.poll_timeout(), Some(t0 + NEAR_HOLD));
        b.handle_timeout(t0 + NEAR_HOLD);
        let refused = (acted(&mut b).into_iter())
            .find_map(|action| match action {
                Action::Peer {
                    message: message @ PeerLease::Refused { .. },
                    ..
                } => Some(message),
                _ => None,
            })
            .expect("refused");
        a.handle(from_peer("b", refused), t0);
        let start = Action::Start {
            conn: 1,
            worker: 100,
            setup: "files",
        };
        assert_eq!(acted(&mut a), [start]);
        // Near b again, which refused the last: asked of b first all the same (its room may
        // have come back since it spoke).
        assert!(from_worker(&mut a, 3, &near(2, "b"), &|_| None));
        let ask = near_ask(TaskId::new(3, 2), &cpu);
        assert_eq!(acted(&mut a), [to_peer("b", ask.clone())]);
        // Held at b, and withdrawn by its owner meanwhile: b never answers it. (b's shell
        // learns the owner's node from each ask that comes.)
        let owner_at = Event::OwnerAt {
            job: "j".into(),
            owner: 3,
            node: "a".into(),
        };
        b.handle(owner_at, t0);
        b.handle(from_peer("a", ask), t0);
        let unlease = PeerLease::Unlease {
            owner: 3,
            key: TaskId::new(3, 2),
        };
        b.handle(from_peer("a", unlease), t0);
        b.handle_timeout(t0 + NEAR_HOLD);
        assert_eq!(refusals(acted(&mut b)), 0, "withdrawn");
        // Near a node that is not the job's: decided at home at once.
        assert!(from_worker(&mut a, 3, &near(3, "c"), &|_| None));
        assert!(!(acted(&mut a).iter()).any(|action| matches!(action, Action::Peer { .. })));
    }

    #[test]
    fn an_ask_held_near_its_arguments_is_granted_when_room_comes_back() {
        let t0 = Instant::now();
        // b has one CPU free; owner 3 on a asks near b twice.
        let (_, mut b) = owner_3_asking_near(t0, 3.0);
        let cpu = Resources::cpus(1.0).unwrap();
        let (one, two) = (TaskId::new(3, 1), TaskId::new(3, 2));
        b.handle(from_peer("a", near_ask(one, &cpu)), t0);
        let start = Action::Start {
            conn: 1,
            worker: 200,
            setup: "files",
        };
        assert!(acted(&mut b).contains(&start), "the first takes the CPU");
        worker_200_runs(&mut b, t0);
        let _ = acted(&mut b);
        b.handle(from_peer("a", near_ask(two, &cpu)), t0);
        let granted_two = |actions: &[Action<u32, &'static str>]| {
            actions.iter().any(|a| {
                matches!(a, Action::Peer { message: PeerLease::Granted { key, .. }, .. } if *key == two)
            })
        };
        assert!(!granted_two(&acted(&mut b)), "held: no room");
        // The first lease goes back: the held ask has its room, on the idle worker.
        b.handle(
            from_peer("a", PeerLease::Unlease { owner: 3, key: one }),
            t0,
        );
        assert!(
            granted_two(&acted(&mut b)),
            "granted once the room came back"
        );
        b.handle_timeout(t0 + NEAR_HOLD);
        let refused = (acted(&mut b).iter()).any(|a| {
            matches!(
                a,
                Action::Peer {
                    message: PeerLease::Refused { .. },
                    ..
                }
            )
        });
        assert!(!refused, "granted, not refused too");
    }

    /// The node's worker 200 (pid 5200) started and runs.
    fn worker_200_runs(node: &mut Node, t0: Instant) {
        let started = Event::Started {
            conn: 1,
            worker: 200,
            result: Ok(5200),
        };
        node.handle(started, t0);
    }

    /// Daemons "a" (running owner 3, its CPUs free) and "b" (the driver holding `held` of its
    /// 4 CPUs), each with a pool told of the other.
    fn owner_3_asking_near(t0: Instant, held: f64) -> (Node, Node) {
        let (mut a, mut b) = (hosting_a_job(t0), hosting_a_job(t0));
        spawn_worker_3(&mut a, t0);
        pooled(&mut a, 100, &["b"], 0.0, t0);
        pooled(&mut b, 200, &["a"], held, t0);
        (a, b)
    }

    /// Owner 3's ask `key` for `shape`, made first of the node near its task's arguments.
    fn near_ask(key: TaskId, shape: &Resources) -> PeerLease {
        match ask_of(key, shape) {
            PeerLease::Ask {
                owner,
                key,
                shape,
                binary_from,
                ..
            } => PeerLease::Ask {
                owner,
                key,
                shape,
                binary_from,
                near: true,
            },
            other => other,
        }
    }

    /// Owner 3's ask `key` for `shape` as passed to another node (which needs no binary).
    fn ask_of(key: TaskId, shape: &Resources) -> PeerLease {
        PeerLease::Ask {
            owner: 3,
            key,
            shape: shape.clone(),
            binary_from: None,
            near: false,
        }
    }

    #[test]
    fn a_full_node_passes_an_ask_on_to_another_node_s_pool_which_grants_it_without_the_driver() {
        use crate::proto::pool::ASK_WAITS;
        let t0 = Instant::now();
        let (mut a, mut b) = two_daemons(t0);
        let (at, cpu) = (("j", 1), Resources::cpus(1.0).unwrap());
        let key = |seq| TaskId::new(3, seq);
        let ask_of = |seq| PeerLease::Ask {
            owner: 3,
            key: key(seq),
            shape: cpu.clone(),
            binary_from: None,
            near: false,
        };
        // a has no room: the ask goes on to b at once (not heard from yet, b is thought to
        // have its CPUs free), not to the driver.
        assert!(a.lease_ask(at, (3, key(1)), &cpu, t0));
        assert_eq!(acted(&mut a), [to_peer("b", ask_of(1))]);
        // b starts a worker for it, and says so once it runs; a hears what room b has left
        // (from now on, whenever it changes).
        b.handle(from_peer("a", ask_of(1)), t0);
        let start = Action::Start {
            conn: 1,
            worker: 200,
            setup: "files",
        };
        let room = |free: f64, workers| PeerLease::Room {
            free: Resources::cpus(free).unwrap(),
            workers,
        };
        assert_eq!(acted(&mut b), [start, to_peer("a", room(3.0, 7))]);
        a.handle(from_peer("b", room(3.0, 7)), t0);
        assert_eq!(acted(&mut a), []);
        worker_200_runs(&mut b, t0);
        let own = Action::Write {
            conn: 1,
            worker: 200,
            message: Box::new(ToWorker::OwnTasks),
        };
        let granted = |seq| PeerLease::Granted {
            owner: 3,
            key: key(seq),
            worker: 200,
            direct: None,
        };
        assert_eq!(acted(&mut b), [own, to_peer("a", granted(1))]);
        // The owner hears of its lease on b's worker, and gives it back there.
        a.handle(from_peer("b", granted(1)), t0);
        let leased = |seq| Action::Write {
            conn: 1,
            worker: 3,
            message: Box::new(ToWorker::Leased {
                key: key(seq),
                worker: 200,
                at: Some("b".into()),
                direct: None,
            }),
        };
        assert_eq!(acted(&mut a), [leased(1)]);
        assert!(a.unlease(at, 3, key(1), t0));
        assert_eq!(
            acted(&mut a),
            [to_peer(
                "b",
                PeerLease::Unlease {
                    owner: 3,
                    key: key(1)
                }
            )]
        );
        b.handle(
            from_peer(
                "a",
                PeerLease::Unlease {
                    owner: 3,
                    key: key(1),
                },
            ),
            t0,
        );
        // The room that came back is news to a, told no sooner than the pace allows.
        assert_eq!(acted(&mut b), []);
        assert_eq!(b.poll_timeout(), Some(t0 + spill::ROOM_PACE));
        b.handle_timeout(t0 + spill::ROOM_PACE);
        assert_eq!(acted(&mut b), [to_peer("a", room(4.0, 8))]);
        a.handle(from_peer("b", room(4.0, 8)), t0);
        // The next ask goes to b at once, which said it has room (it keeps its place at a
        // meanwhile), and is granted on b's idle worker; a force-cancel kills it there.
        assert!(a.lease_ask(at, (3, key(2)), &cpu, t0));
        assert_eq!(acted(&mut a), [to_peer("b", ask_of(2))]);
        b.handle(from_peer("a", ask_of(2)), t0);
        // a counted the ask off what it thought b has: b's room is no news to it.
        assert_eq!(acted(&mut b), [to_peer("a", granted(2))]);
        a.handle(from_peer("b", granted(2)), t0);
        assert_eq!(acted(&mut a), [leased(2)]);
        // Granted there, it waits at a no more.
        a.handle_timeout(t0 + ASK_WAITS);
        assert_eq!(acted(&mut a), []);
        assert!(a.kill_leased(at, 3, key(2)));
        let kill = PeerLease::KillLeased {
            owner: 3,
            key: key(2),
        };
        assert_eq!(acted(&mut a), [to_peer("b", kill.clone())]);
        b.handle(from_peer("a", kill), t0);
        assert_eq!(
            acted(&mut b),
            [Action::Kill {
                conn: 1,
                worker: 200
            }]
        );
        // Its death ends the lease, and the owner hears it through a.
        let exited = |worker| Event::WorkerExited {
            conn: 1,
            worker,
            reason: "killed".into(),
        };
        // (After the pace: b tells a of the CPU that came back at once.)
        b.handle(exited(200), t0 + 2 * spill::ROOM_PACE);
        let reason = "leased worker 200 died: killed".to_string();
        let ended = PeerLease::Ended {
            owner: 3,
            key: key(2),
            reason: reason.clone(),
        };
        assert_eq!(
            acted(&mut b),
            [to_peer("a", ended.clone()), to_peer("a", room(4.0, 8))]
        );
        a.handle(from_peer("b", ended), t0);
        let message = Box::new(ToWorker::LeaseEnded {
            key: key(2),
            reason,
        });
        assert_eq!(
            acted(&mut a),
            [Action::Write {
                conn: 1,
                worker: 3,
                message
            }]
        );
        // The next ask goes to b at once too (a still thinks it has room, less the last
        // ask): refused, it is back in its place at a, and b is thought full.
        let refused = |seq| {
            let reason = "no room".to_string();
            let (owner, key) = (3, key(seq));
            from_peer("b", PeerLease::Refused { owner, key, reason })
        };
        assert!(a.lease_ask(at, (3, key(3)), &cpu, t0));
        assert_eq!(acted(&mut a), [to_peer("b", ask_of(3))]);
        a.handle(refused(3), t0);
        assert_eq!(acted(&mut a), []);
        // After its wait it goes on in turn; refused again, with no other node left, it is
        // back in its place at a (not at the driver), and goes on again after twice the wait.
        let t1 = t0 + ASK_WAITS;
        a.handle_timeout(t1);
        assert_eq!(acted(&mut a), [to_peer("b", ask_of(3))]);
        a.handle(refused(3), t1);
        assert_eq!(acted(&mut a), []);
        a.handle_timeout(t1 + ASK_WAITS);
        assert_eq!(acted(&mut a), []);
        a.handle_timeout(t1 + 2 * ASK_WAITS);
        assert_eq!(acted(&mut a), [to_peer("b", ask_of(3))]);
        // The owner dies with a lease on b: b hears, and kills the worker leased to it.
        assert!(a.lease_ask(at, (3, key(4)), &cpu, t0));
        a.handle_timeout(t1 + 3 * ASK_WAITS);
        assert_eq!(acted(&mut a), [to_peer("b", ask_of(4))]);
        b.handle(from_peer("a", ask_of(4)), t0);
        let start = Action::Start {
            conn: 1,
            worker: 201,
            setup: "files",
        };
        assert_eq!(acted(&mut b), [start]);
        a.handle(exited(3), t0);
        assert_eq!(
            acted(&mut a),
            [to_peer("b", PeerLease::OwnerGone { owner: 3 })]
        );
        // Only the owner's node speaks for it: another node's word changes nothing.
        b.handle(from_peer("c", PeerLease::OwnerGone { owner: 3 }), t0);
        let kill = PeerLease::KillLeased {
            owner: 3,
            key: key(4),
        };
        b.handle(from_peer("c", kill), t0);
        assert_eq!(acted(&mut b), []);
        b.handle(from_peer("a", PeerLease::OwnerGone { owner: 3 }), t0);
        assert_eq!(
            acted(&mut b),
            [Action::Kill {
                conn: 1,
                worker: 201
            }]
        );
        // A node that does not host the job refuses what is asked of it.
        let mut c = hosting_a_job(t0);
        let other = Event::Peer {
            job: "x".into(),
            from: "a".into(),
            source: 9,
            binary_from: None,
            message: ask_of(5),
        };
        c.handle(other, t0);
        let refused = actions(&mut c);
        assert!(
            matches!(&refused[..], [Action::Peer { job, message: PeerLease::Refused { .. }, .. }] if job == "x"),
            "{refused:?}"
        );
    }

    /// When node "b" leaves the job, the lease there ends for its owner on "a", and the
    /// worker "b"'s owner leased on "a" is killed.
    #[test]
    fn a_node_that_leaves_the_job_ends_the_leases_between_it_and_the_others() {
        use crate::proto::pool::ASK_WAITS;
        let t0 = Instant::now();
        let mut a = hosting_a_job(t0);
        spawn_worker_3(&mut a, t0);
        pooled(&mut a, 100, &["b"], 4.0, t0);
        let (at, cpu) = (("j", 1), Resources::cpus(1.0).unwrap());
        assert!(a.lease_ask(at, (3, TaskId::new(3, 1)), &cpu, t0));
        a.handle_timeout(t0 + ASK_WAITS);
        acted(&mut a);
        let granted = PeerLease::Granted {
            owner: 3,
            key: TaskId::new(3, 1),
            worker: 250,
            direct: None,
        };
        a.handle(from_peer("b", granted), t0);
        acted(&mut a);
        // An owner on b asks a, which has an idle worker once the driver gives a CPU back.
        ask(
            &mut a,
            1,
            5,
            Request::Return {
                resources: cpu.clone(),
            },
            t0,
        );
        acted(&mut a);
        let theirs = PeerLease::Ask {
            owner: 260,
            key: TaskId::new(260, 1),
            shape: cpu.clone(),
            binary_from: None,
            near: false,
        };
        a.handle(from_peer("b", theirs), t0);
        let room = PeerLease::Room {
            free: Resources::default(),
            workers: 7,
        };
        assert_eq!(
            acted(&mut a),
            [
                Action::Start {
                    conn: 1,
                    worker: 100,
                    setup: "files"
                },
                to_peer("b", room)
            ]
        );
        a.handle(
            Event::Started {
                conn: 1,
                worker: 100,
                result: Ok(5100),
            },
            t0,
        );
        acted(&mut a);
        ask(
            &mut a,
            1,
            6,
            Request::Peers {
                joined: Vec::new(),
                left: vec!["b".into()],
            },
            t0,
        );
        let message = Box::new(ToWorker::LeaseEnded {
            key: TaskId::new(3, 1),
            reason: "node b, where its worker was leased, left the job".into(),
        });
        let expected = [
            reply(1, 6, FromHost::Done),
            Action::Write {
                conn: 1,
                worker: 3,
                message,
            },
            Action::Kill {
                conn: 1,
                worker: 100,
            },
        ];
        assert_eq!(acted(&mut a), expected);
    }

    #[test]
    fn only_its_own_connection_steers_a_job_and_its_end_stops_its_workers() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        spawn_worker_3(&mut node, t0);

        // Another driver's connection for the same job name: refused, and it steers nothing.
        let job = "j".to_string();
        node.handle(Event::Connected { conn: 2, job }, t0);
        ask(&mut node, 2, 2, start(5 * S), t0);
        let refused = "node n already hosts a job named j for another connection";
        assert_eq!(
            actions(&mut node),
            vec![reply(2, 2, FromHost::Error(refused.into()))]
        );
        ask(&mut node, 2, 3, Request::Kill { worker: 3 }, t0);
        let stranger = "node n hosts no job j for this connection";
        assert_eq!(
            actions(&mut node),
            vec![reply(2, 3, FromHost::Error(stranger.into()))]
        );
        node.handle(Event::Closed { conn: 2 }, t0);
        assert!(
            actions(&mut node).is_empty(),
            "a stranger's end ends nothing"
        );

        // The driver's connection closes: the job ends with its workers.
        node.handle(Event::Closed { conn: 1 }, t0);
        let end = Action::EndJob {
            conn: 1,
            job: "j".into(),
            why: Ending::DriverLeft,
            workers: vec![3],
            setup: "files",
        };
        assert_eq!(actions(&mut node), vec![end]);
        assert!(node.idle());
        // Its worker's exit still reaches the driver (a closed connection drops it).
        let exited = Event::WorkerExited {
            conn: 1,
            worker: 3,
            reason: "killed".into(),
        };
        node.handle(exited, t0);
        let told = HostEvent::WorkerExited {
            worker: 3,
            reason: "killed".into(),
        };
        assert_eq!(
            actions(&mut node),
            vec![Action::Tell {
                conn: 1,
                event: told
            }]
        );
    }

    /// The pull of `id` (64 bytes, from peer 5) for job `j` on connection 1.
    fn pull_of(id: ObjectId) -> Action<u32, &'static str> {
        Action::Pull {
            conn: 1,
            job: "j".into(),
            id,
            len: 64,
            from: 5,
            setup: "files",
        }
    }

    #[test]
    fn a_fetch_after_a_drop_of_the_same_object_waits_for_the_drop() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        let id = ObjectId::new(prism_graph::TaskId::new(1, 9), 0);
        let other = ObjectId::new(prism_graph::TaskId::new(1, 10), 0);
        ask(&mut node, 1, 1, Request::Drop(vec![id]), t0);
        let drop = Action::Files {
            conn: 1,
            req: 1,
            setup: "files",
            work: FileWork::Free {
                ids: vec![id],
                pool: false,
            },
        };
        assert_eq!(actions(&mut node), vec![drop]);
        // The drop's work is under way: a fetch of the object waits; one of another goes.
        let fetch = |id| Request::Fetch {
            id,
            len: 64,
            from: 5,
        };
        ask(&mut node, 1, 2, fetch(id), t0);
        ask(&mut node, 1, 3, fetch(other), t0);
        assert_eq!(actions(&mut node), vec![pull_of(other)]);
        let performed = Event::Performed {
            conn: 1,
            req: 1,
            result: Ok(()),
        };
        node.handle(performed, t0);
        assert_eq!(
            actions(&mut node),
            vec![reply(1, 1, FromHost::Done), pull_of(id)],
            "the fetch starts once the drop is done"
        );
    }

    #[test]
    fn many_fetches_of_one_object_make_one_pull() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        let id = ObjectId::new(prism_graph::TaskId::new(1, 9), 0);
        for req in 1..=3 {
            let request = Request::Fetch {
                id,
                len: 64,
                from: 5,
            };
            ask(&mut node, 1, req, request, t0);
        }
        assert_eq!(
            actions(&mut node),
            vec![pull_of(id)],
            "one pull for three asks"
        );
        let pulled = Event::Pulled {
            conn: 1,
            id,
            len: 64,
            result: Ok(true),
        };
        node.handle(pulled, t0);
        let answers: Vec<_> = (1..=3).map(|req| reply(1, req, FromHost::Done)).collect();
        assert_eq!(actions(&mut node), answers);
        assert_eq!((node.pulled().objects, node.pulled().bytes), (1, 64));

        // The object was there already: answered, not counted as pulled.
        let request = Request::Fetch {
            id,
            len: 64,
            from: 5,
        };
        ask(&mut node, 1, 4, request, t0);
        assert_eq!(actions(&mut node).len(), 1);
        let there = Event::Pulled {
            conn: 1,
            id,
            len: 64,
            result: Ok(false),
        };
        node.handle(there, t0);
        assert_eq!(actions(&mut node), vec![reply(1, 4, FromHost::Done)]);
        assert_eq!(node.pulled().objects, 1);

        // A pull that waits when the job ends fails its askers; its late end changes nothing.
        let request = Request::Fetch {
            id,
            len: 64,
            from: 6,
        };
        ask(&mut node, 1, 5, request, t0);
        assert_eq!(actions(&mut node).len(), 1);
        ask(&mut node, 1, 6, Request::EndJob, t0);
        let ended = actions(&mut node);
        let failed = reply(1, 5, FromHost::Error("the job ended on node n".into()));
        assert_eq!(ended[0], failed);
        assert!(matches!(
            ended[1],
            Action::EndJob {
                why: Ending::Drained,
                ..
            }
        ));
        assert_eq!(ended[2], reply(1, 6, FromHost::Done));
        let late = Event::Pulled {
            conn: 1,
            id,
            len: 64,
            result: Ok(true),
        };
        node.handle(late, t0);
        assert!(actions(&mut node).is_empty());
        assert_eq!(node.pulled().objects, 1);
    }

    #[test]
    fn a_draining_node_takes_no_new_job_even_one_it_was_preparing() {
        let t0 = Instant::now();
        let mut node = Node::new("n".into(), Resources::cpus(4.0).unwrap());
        node.handle(
            Event::Connected {
                conn: 1,
                job: "a".into(),
            },
            t0,
        );
        ask(&mut node, 1, 0, start(5 * S), t0);
        assert_eq!(actions(&mut node).len(), 1, "preparing");
        node.start_draining();
        let prepared = prepared_on_1("a");
        node.handle(prepared, t0);
        let refused = "node n is draining: it takes no new job";
        let expected = vec![
            refused_on_1("a"),
            reply(1, 0, FromHost::Error(refused.into())),
        ];
        assert_eq!(actions(&mut node), expected, "what was made for it goes");
        assert!(node.idle());
        ask(&mut node, 1, 1, start(5 * S), t0);
        assert_eq!(
            actions(&mut node),
            vec![reply(1, 1, FromHost::Error(refused.into()))]
        );
    }

    #[test]
    fn a_job_whose_lease_runs_out_ends_and_its_connection_closes() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        assert_eq!(node.poll_timeout(), Some(t0 + S));
        // Renewals are asked every second; answered ones keep the job.
        for k in 1..=6u32 {
            node.handle_timeout(t0 + k * S);
            let renew = HostEvent::Renew { seq: u64::from(k) };
            assert_eq!(
                actions(&mut node),
                vec![Action::Tell {
                    conn: 1,
                    event: renew
                }]
            );
            node.handle(
                Event::Renewed {
                    conn: 1,
                    seq: u64::from(k),
                },
                t0 + k * S,
            );
        }
        // No answer from 7 s on: the lease runs out 5 s after the last answered ask (6 s).
        for k in 7..=10u32 {
            node.handle_timeout(t0 + k * S);
            assert_eq!(actions(&mut node).len(), 1, "asks again at {k} s");
        }
        node.handle_timeout(t0 + 11 * S);
        let ended = actions(&mut node);
        assert!(
            matches!(
                &ended[0],
                Action::EndJob {
                    why: Ending::LeaseEnded,
                    ..
                }
            ),
            "{ended:?}"
        );
        let reason =
            "no lease renewal from the driver for 5000 ms: node n stopped the job's workers";
        assert_eq!(
            ended[1],
            Action::Close {
                conn: 1,
                why: Ending::LeaseEnded,
                reason: reason.into()
            }
        );
        assert_eq!(node.poll_timeout(), None);
    }

    #[test]
    fn a_process_started_for_a_job_that_ended_meanwhile_is_killed() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        let spawn = Request::Spawn {
            worker: 8,
            binary_from: None,
        };
        ask(&mut node, 1, 1, spawn, t0);
        assert_eq!(actions(&mut node).len(), 1);
        node.handle(Event::Closed { conn: 1 }, t0);
        assert_eq!(actions(&mut node).len(), 1, "the job ends");
        let spawned = Event::Spawned {
            conn: 1,
            req: 1,
            worker: 8,
            result: Ok(77),
        };
        node.handle(spawned, t0);
        let expected = vec![
            Action::Kill { conn: 1, worker: 8 },
            reply(1, 1, FromHost::Error("the job ended on node n".into())),
        ];
        assert_eq!(actions(&mut node), expected);
    }
    /// A node that took job `job` on connection `conn` and prepared it, its binary not here
    /// (what it did so far taken).
    fn prepared_without_binary(conn: ConnId, job: &str, t0: Instant) -> Node {
        let mut node = Node::new("n".into(), Resources::cpus(4.0).unwrap());
        let connected = Event::Connected {
            conn,
            job: job.into(),
        };
        node.handle(connected, t0);
        ask(&mut node, conn, 0, start(5 * S), t0);
        actions(&mut node);
        let prepared = Event::Prepared {
            conn,
            req: 0,
            job: job.into(),
            result: Ok("files"),
            cached: false,
        };
        node.handle(prepared, t0);
        actions(&mut node);
        node
    }

    /// Worker `worker` of job "j" sends `msg` up its link: whether the node takes it.
    fn from_worker(node: &mut Node, worker: u64, msg: &ToNode, peer_of: PeerOf<'_, u32>) -> bool {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(msg).unwrap();
        let msg = rkyv::access::<ArchivedToNode, rkyv::rancor::Error>(&bytes).unwrap();
        node.take_up(("j", 1), worker, msg, (Instant::now(), peer_of))
    }

    /// The driver lets the node lease workers numbered 100 to 199 (at most 8) to the job's
    /// owners (request `req`); the job has no other node.
    fn open_pool(node: &mut Node, req: ReqId, t0: Instant) {
        let pool = Request::Pool {
            first: 100,
            end: 200,
            max_workers: 8,
            elsewhere: Resources::default(),
        };
        ask(node, 1, req, pool, t0);
    }

    #[test]
    fn an_idle_worker_beyond_the_node_s_cpus_is_asked_to_exit_and_stays_while_it_owes_work() {
        use crate::proto::pool::IDLE_FOR;
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        spawn_worker_3(&mut node, t0);
        open_pool(&mut node, 2, t0);
        let _ = actions(&mut node);
        // Five leases of no resources on workers the pool starts, all given back: one idle
        // worker more than the node's 4 CPUs.
        let none = Resources::default();
        let key = |seq| TaskId::new(3, u64::MAX - seq);
        for seq in 0..5u64 {
            assert!(node.lease_ask(("j", 1), (3, key(seq)), &none, t0));
            let _ = actions(&mut node);
            let started = Event::Started {
                conn: 1,
                worker: 100 + seq,
                result: Ok(5100 + seq as u32),
            };
            node.handle(started, t0);
        }
        for seq in 0..5u64 {
            assert!(node.unlease(("j", 1), 3, key(seq), t0));
        }
        let _ = actions(&mut node);
        // After a second idle the one beyond is asked to exit, not killed: it may owe work
        // the node does not see (its own tasks on leases the driver granted elsewhere).
        let exit_asks = |node: &mut Node| -> Vec<u64> {
            (actions(node).into_iter())
                .filter_map(|a| match a {
                    Action::Write {
                        worker, message, ..
                    } if *message == ToWorker::ExitIfIdle => Some(worker),
                    Action::Kill { worker, .. } => panic!("worker {worker} killed"),
                    _ => None,
                })
                .collect()
        };
        node.handle_timeout(t0 + IDLE_FOR);
        let asked = exit_asks(&mut node);
        assert_eq!(asked.len(), 1, "{asked:?}");
        // It owes work: it stays, idle again from its answer, so another is the longest
        // idle and is asked next.
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&ToNode::Owes).unwrap();
        let owes = rkyv::access::<ArchivedToNode, rkyv::rancor::Error>(&bytes).unwrap();
        let peer_of: PeerOf<'_, u32> = &|_: &str| None;
        assert!(node.take_up(("j", 1), asked[0], owes, (t0 + IDLE_FOR, peer_of)));
        node.handle_timeout(t0 + IDLE_FOR + IDLE_FOR / 2);
        let next = exit_asks(&mut node);
        assert!(
            next.len() == 1 && next[0] != asked[0],
            "{next:?} after {asked:?}"
        );
        // A worker the pool did not ask answers the driver, which did (it retires the workers
        // it borrowed so, and asks again while they owe): the frame goes on to it.
        assert!(!node.take_up(("j", 1), 3, owes, (t0 + IDLE_FOR, peer_of)));
        assert!(!node.jobs["j"].pool.as_ref().is_some_and(|p| p.has(3)));
    }

    #[test]
    fn the_driver_s_task_waiting_for_its_own_children_blocks_at_the_node_alone() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        let cpus = |n| Resources::cpus(n).unwrap();
        // The driver holds all 4 CPUs and runs a task of one on a worker of the pool.
        ask(&mut node, 1, 1, Request::Grant { shape: cpus(4.0) }, t0);
        open_pool(&mut node, 2, t0);
        ask(
            &mut node,
            1,
            3,
            Request::LeaseWorker { beyond_cap: false },
            t0,
        );
        let _ = actions(&mut node);
        let started = Event::Started {
            conn: 1,
            worker: 100,
            result: Ok(5100),
        };
        node.handle(started, t0);
        let lent = FromHost::Lent {
            worker: 100,
            pid: 5100,
        };
        assert!(actions(&mut node).contains(&reply(1, 3, lent)));
        // Its child's lease waits: no CPU is free.
        let child = TaskId::new(100, u64::MAX);
        assert!(node.lease_ask(("j", 1), (100, child), &cpus(1.0), t0));
        assert_eq!(actions(&mut node), []);
        // The task blocks waiting for the child: the node takes it, and leases the child the
        // task's CPU on a worker it starts.
        let none = &|_: &str| None;
        let blocked = ToNode::Blocked {
            depth: 0,
            returned: Vec::new(),
            awaiting: vec![child],
            cpu: cpus(1.0).cpu,
        };
        assert!(from_worker(&mut node, 100, &blocked, none));
        let start = Action::Start {
            conn: 1,
            worker: 101,
            setup: "files",
        };
        assert_eq!(actions(&mut node), [start]);
        // Its resumption stops at the node too: the driver hears of neither.
        let resumed = ToNode::Unblocked { depth: 0 };
        assert!(from_worker(&mut node, 100, &resumed, none));
        assert_eq!(actions(&mut node), []);
        // Blocked again, it pushes a task to a worker leased to it (not the driver's
        // business), then sends the driver something: the block goes ahead of that, and so
        // does its resumption.
        assert!(from_worker(&mut node, 100, &blocked, none));
        let _ = actions(&mut node);
        let push = ToNode::Forward {
            to: 101,
            at: None,
            frame: Vec::new(),
        };
        assert!(!from_worker(&mut node, 100, &push, none));
        assert_eq!(actions(&mut node), []);
        let get = ToNode::Get {
            ids: vec![ObjectId::new(TaskId::new(0, 9), 0)],
        };
        assert!(!from_worker(&mut node, 100, &get, none));
        let up = Action::Up {
            conn: 1,
            worker: 100,
            message: Box::new(blocked),
        };
        assert_eq!(actions(&mut node), [up]);
        assert!(!from_worker(&mut node, 100, &resumed, none));
        // Waiting for a task of the driver's (which the driver may run on top of it), or
        // handing tasks back, it blocks at the driver.
        for (returned, awaiting) in [(vec![], vec![TaskId::new(0, 5)]), (vec![child], vec![])] {
            let theirs = ToNode::Blocked {
                depth: 0,
                returned,
                awaiting,
                cpu: cpus(1.0).cpu,
            };
            assert!(!from_worker(&mut node, 100, &theirs, none));
            assert!(!from_worker(&mut node, 100, &resumed, none));
        }
        assert_eq!(actions(&mut node), []);
    }

    #[test]
    fn a_worker_holding_actors_handles_owes_work_until_it_lets_them_go_or_exits() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        spawn_worker_3(&mut node, t0);
        let (a, b) = (ActorId(TaskId::new(0, 7)), ActorId(TaskId::new(0, 8)));
        let owes = |node: &Node| node.jobs["j"].owes_work(3);
        assert!(!owes(&node));
        // Its calls hold the handles; the messages still go to the driver.
        let none = &|_: &str| None;
        assert!(!from_worker(
            &mut node,
            3,
            &ToNode::HoldActors(vec![a, b]),
            none
        ));
        assert!(
            owes(&node),
            "an idle worker with calls to actors under way is kept"
        );
        assert!(!from_worker(
            &mut node,
            3,
            &ToNode::ReleaseActors(vec![a]),
            none
        ));
        assert!(owes(&node));
        assert!(!from_worker(
            &mut node,
            3,
            &ToNode::ReleaseActors(vec![b]),
            none
        ));
        assert!(!owes(&node), "no handle left: it may stop when idle");
        assert!(!from_worker(
            &mut node,
            3,
            &ToNode::HoldActors(vec![a]),
            none
        ));
        let exited = Event::WorkerExited {
            conn: 1,
            worker: 3,
            reason: "killed".into(),
        };
        node.handle(exited, t0);
        assert!(!owes(&node), "forgotten with the worker");
    }

    #[test]
    fn a_worker_watching_another_of_its_node_hears_when_it_exits_or_at_once_if_it_is_not_there() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        spawn_worker_3(&mut node, t0);
        let none = &|_: &str| None;
        let watch = |worker| ToNode::WatchWorker { worker, at: None };
        let gone = |actions: &[Action<u32, &'static str>], watched: u64| {
            actions.iter().any(|a| {
                matches!(a, Action::Write { conn: 1, worker: 5, message }
                    if matches!(**message, ToWorker::WorkerGone { worker, .. } if worker == watched))
            })
        };
        // Worker 5 lent worker 3 something: it hears nothing while 3 runs.
        assert!(from_worker(&mut node, 5, &watch(3), none));
        assert!(acted(&mut node).is_empty());
        // A worker the node does not run: at once.
        assert!(from_worker(&mut node, 5, &watch(9), none));
        assert!(gone(&acted(&mut node), 9));
        // Another node's worker is the driver's to watch.
        assert!(!from_worker(&mut node, 5, &watch((1 << 32) + 3), none));
        let exited = Event::WorkerExited {
            conn: 1,
            worker: 3,
            reason: "killed".into(),
        };
        node.handle(exited, t0);
        assert!(gone(&acted(&mut node), 3), "told of 3's exit");
    }

    #[test]
    fn a_worker_watching_one_of_another_node_hears_through_that_node_when_it_exits() {
        let t0 = Instant::now();
        let (mut a, mut b) = two_daemons(t0);
        // b is node 1, and runs worker `far`.
        b.jobs.get_mut("j").unwrap().idx = Some(1);
        let far = (1 << 32) + 3;
        let spawn = Request::Spawn {
            worker: far,
            binary_from: None,
        };
        ask(&mut b, 1, 1, spawn, t0);
        let spawned = Event::Spawned {
            conn: 1,
            req: 1,
            worker: far,
            result: Ok(4243),
        };
        b.handle(spawned, t0);
        let _ = acted(&mut b);
        let none = &|_: &str| None;
        // Worker 3 on a borrows from `far`, on b: a asks b once, whoever watches.
        let watch = |worker| ToNode::WatchWorker {
            worker,
            at: Some("b".to_string()),
        };
        assert!(from_worker(&mut a, 3, &watch(far), none));
        assert_eq!(
            acted(&mut a),
            [to_peer("b", PeerLease::Watch { worker: far })]
        );
        assert!(from_worker(&mut a, 3, &watch(far), none));
        assert!(acted(&mut a).is_empty(), "asked once");
        b.handle(from_peer("a", PeerLease::Watch { worker: far }), t0);
        assert!(acted(&mut b).is_empty(), "it runs: nothing yet");
        // One b does not run: at once.
        let other = far + 1;
        b.handle(from_peer("a", PeerLease::Watch { worker: other }), t0);
        assert_eq!(
            acted(&mut b),
            [to_peer("a", PeerLease::OwnerGone { owner: other })]
        );
        let exited = Event::WorkerExited {
            conn: 1,
            worker: far,
            reason: "killed".into(),
        };
        b.handle(exited, t0);
        let told = to_peer("a", PeerLease::OwnerGone { owner: far });
        assert!(acted(&mut b).contains(&told), "b tells a");
        a.handle(from_peer("b", PeerLease::OwnerGone { owner: far }), t0);
        let heard = acted(&mut a).into_iter().any(|action| {
            matches!(action, Action::Write { conn: 1, worker: 3, message }
                if matches!(&*message, ToWorker::WorkerGone { worker, reason }
                    if *worker == far && reason.contains("node b")))
        });
        assert!(heard, "worker 3 hears, naming the node");
        // Another node than b does not speak for `far`.
        assert!(from_worker(&mut a, 3, &watch(far), none));
        let _ = acted(&mut a);
        a.handle(from_peer("c", PeerLease::OwnerGone { owner: far }), t0);
        assert!(acted(&mut a).is_empty());
    }

    /// [`two_daemons`], where owner 3 on a asked b for a lease: b knows it as a's.
    fn owner_3_of_a_leased_on_b(t0: Instant) -> (Node, Node) {
        let (a, mut b) = two_daemons(t0);
        let ask = PeerLease::Ask {
            owner: 3,
            key: TaskId::new(3, u64::MAX),
            shape: Resources::cpus(1.0).unwrap(),
            binary_from: None,
            near: false,
        };
        b.handle(from_peer("a", ask), t0);
        let _ = acted(&mut b);
        (a, b)
    }

    #[test]
    fn a_value_left_on_another_node_is_pulled_for_its_owner_and_dropped_there() {
        let t0 = Instant::now();
        let (mut a, mut b) = owner_3_of_a_leased_on_b(t0);
        // Two of its tasks ran there and left values too large for their ends; the owner
        // asks a to pull them, twice for one of them.
        let (one, two) = (
            ObjectId::new(TaskId::new(3, 1), 0),
            ObjectId::new(TaskId::new(3, 2), 0),
        );
        let peer_of = |at: &str| (at == "b").then_some(5);
        for id in [one, one, two] {
            let from = Some("b".to_string());
            let fetch = ToNode::Fetch { id, len: 64, from };
            assert!(from_worker(&mut a, 3, &fetch, &peer_of), "the node's to do");
        }
        assert_eq!(
            acted(&mut a),
            [pull_of(one), pull_of(two)],
            "one pull an object"
        );
        // The first lands: the owner hears it (once an ask) and b drops its copy.
        a.handle(
            Event::Pulled {
                conn: 1,
                id: one,
                len: 64,
                result: Ok(true),
            },
            t0,
        );
        let fetched = |id, error| Action::Write {
            conn: 1,
            worker: 3,
            message: Box::new(ToWorker::Fetched { id, error }),
        };
        let pulled = PeerLease::Taken {
            owner: 3,
            ids: vec![one],
        };
        assert_eq!(
            acted(&mut a),
            [
                fetched(one, None),
                fetched(one, None),
                to_peer("b", pulled.clone())
            ]
        );
        // Only the owner's node speaks for its values.
        b.handle(from_peer("c", pulled.clone()), t0);
        assert_eq!(acted(&mut b), []);
        b.handle(from_peer("a", pulled), t0);
        let unlink = Action::Unlink {
            setup: "files",
            ids: vec![one],
            pool: true,
            conn: 1,
        };
        assert_eq!(acted(&mut b), [unlink]);
        // The second cannot be had: the owner hears why, and nothing is dropped.
        let error = "cannot reach b".to_string();
        a.handle(
            Event::Pulled {
                conn: 1,
                id: two,
                len: 64,
                result: Err(error.clone()),
            },
            t0,
        );
        assert_eq!(acted(&mut a), [fetched(two, Some(error))]);
        // An address that is no node's is answered at once.
        let from = Some("nowhere".to_string());
        let fetch = ToNode::Fetch {
            id: two,
            len: 64,
            from,
        };
        assert!(from_worker(&mut a, 3, &fetch, &peer_of));
        let Some(Action::Write { message, .. }) = acted(&mut a).pop() else {
            panic!("an answer");
        };
        assert!(
            matches!(*message, ToWorker::Fetched { error: Some(ref e), .. } if e.contains("nowhere")),
            "{message:?}"
        );
    }

    #[test]
    fn what_comes_for_an_owner_after_it_is_gone_goes_at_once() {
        let t0 = Instant::now();
        let (mut a, mut b) = owner_3_of_a_leased_on_b(t0);
        let unlink = |id, pool| Action::Unlink {
            setup: "files",
            ids: vec![id],
            pool,
            conn: 1,
        };
        // Owner 3 has a pull a value of its left on b; it dies before the pull lands, after
        // the driver had its segments here removed (nothing would remove this one).
        let left = ObjectId::new(TaskId::new(3, 1), 0);
        let b_at = |at: &str| (at == "b").then_some(5);
        let fetch = ToNode::Fetch {
            id: left,
            len: 64,
            from: Some("b".into()),
        };
        assert!(from_worker(&mut a, 3, &fetch, &b_at));
        assert_eq!(acted(&mut a), [pull_of(left)]);
        worker_3_dies(&mut a, t0);
        let pulled = |id| Event::Pulled {
            conn: 1,
            id,
            len: 64,
            result: Ok(true),
        };
        a.handle(pulled(left), t0);
        let done = acted(&mut a);
        assert!(done.contains(&unlink(left, false)), "{done:?}");
        // b pulls an argument of the owner's for worker 200, and hears the owner is gone
        // before it lands: the copy goes once here, as does a value made for the owner
        // after its death's word.
        let arg = ObjectId::new(TaskId::new(3, 2), 0);
        let a_at = |at: &str| (at == "a").then_some(5);
        let fetch = ToNode::Fetch {
            id: arg,
            len: 64,
            from: None,
        };
        assert!(from_worker(&mut b, 200, &fetch, &a_at));
        assert_eq!(acted(&mut b), [pull_of(arg)]);
        b.handle(from_peer("a", PeerLease::OwnerGone { owner: 3 }), t0);
        let _ = acted(&mut b);
        b.handle(pulled(arg), t0);
        let done = acted(&mut b);
        assert!(done.contains(&unlink(arg, false)), "{done:?}");
        let made = ObjectId::new(TaskId::new(3, 9), 0);
        let kept = ToNode::KeptFor { ids: vec![made] };
        assert!(from_worker(&mut b, 200, &kept, &a_at));
        assert_eq!(acted(&mut b), [unlink(made, true)]);
    }

    #[test]
    fn an_argument_pulled_for_another_node_s_owner_stays_until_the_owner_drops_it_or_goes() {
        let t0 = Instant::now();
        // Owner 3 on a pushes b's worker 200 tasks whose arguments are in a's shared memory:
        // 200 asks b to pull them from the owner's node.
        let (mut a, mut b) = owner_3_of_a_leased_on_b(t0);
        let (one, two) = (
            ObjectId::new(TaskId::new(3, 1), 0),
            ObjectId::new(TaskId::new(3, 2), 0),
        );
        let owner_node = |at: &str| (at == "a").then_some(5);
        for id in [one, two] {
            let fetch = ToNode::Fetch {
                id,
                len: 64,
                from: None,
            };
            assert!(from_worker(&mut b, 200, &fetch, &owner_node));
            assert_eq!(acted(&mut b), [pull_of(id)]);
            let pulled = Event::Pulled {
                conn: 1,
                id,
                len: 64,
                result: Ok(true),
            };
            b.handle(pulled, t0);
            // The worker hears it; a keeps its own (no word goes back), and is asked once to
            // say when the owner goes.
            let fetched = Action::Write {
                conn: 1,
                worker: 200,
                message: Box::new(ToWorker::Fetched { id, error: None }),
            };
            let watch = to_peer("a", PeerLease::Watch { worker: 3 });
            match id == one {
                true => assert_eq!(acted(&mut b), [fetched, watch]),
                false => assert_eq!(acted(&mut b), [fetched]),
            }
        }
        // The owner frees one: its node passes the word on to b, which removes the copy
        // (not into the pool: a worker may still map it).
        let drop = ToNode::DropCopies {
            at: "b".into(),
            ids: vec![one, ObjectId::new(TaskId::new(4, 1), 0)],
        };
        assert!(from_worker(&mut a, 3, &drop, &owner_node));
        let word = PeerLease::Drop {
            owner: 3,
            ids: vec![one],
        };
        assert_eq!(acted(&mut a), [to_peer("b", word.clone())], "only its own");
        b.handle(from_peer("a", word), t0);
        let unlink = |id| Action::Unlink {
            setup: "files",
            ids: vec![id],
            pool: false,
            conn: 1,
        };
        assert_eq!(acted(&mut b), [unlink(one)]);
        // A value a task of its left here for a's pull is kept for it.
        let made = ObjectId::new(TaskId::new(3, 9), 0);
        let kept = ToNode::KeptFor { ids: vec![made] };
        assert!(from_worker(&mut b, 200, &kept, &owner_node));
        // The owner dies: the other copy goes too, and that value (into the pool: no
        // worker here maps it).
        b.handle(from_peer("a", PeerLease::OwnerGone { owner: 3 }), t0);
        let unlinked: Vec<_> = (acted(&mut b).into_iter())
            .filter(|a| matches!(a, Action::Unlink { .. }))
            .collect();
        let made = Action::Unlink {
            setup: "files",
            ids: vec![made],
            pool: true,
            conn: 1,
        };
        assert_eq!(unlinked, [unlink(two), made]);
    }

    #[test]
    fn a_value_made_here_read_here_as_an_argument_is_not_pulled_even_from_an_owner_unknown() {
        let t0 = Instant::now();
        let (_, mut b) = owner_3_of_a_leased_on_b(t0);
        // A task of owner 3's left its value here; another task reading it is leased here
        // (near it). b knows no node for owner 7, whose value it keeps too.
        let nowhere = |_: &str| None;
        for owner in [3, 7] {
            let made = ObjectId::new(TaskId::new(owner, 9), 0);
            let kept = ToNode::KeptFor { ids: vec![made] };
            assert!(from_worker(&mut b, 201, &kept, &nowhere));
            // Its owner's node, if known, is to say when the owner goes.
            let watch = (owner == 3).then(|| to_peer("a", PeerLease::Watch { worker: 3 }));
            assert_eq!(acted(&mut b), Vec::from_iter(watch));
            let fetch = ToNode::Fetch {
                id: made,
                len: 64,
                from: None,
            };
            assert!(from_worker(&mut b, 200, &fetch, &nowhere));
            let fetched = || Action::Write {
                conn: 1,
                worker: 200,
                message: Box::new(ToWorker::Fetched {
                    id: made,
                    error: None,
                }),
            };
            assert_eq!(acted(&mut b), [fetched()], "owner {owner}: read in place");
            // And by the next reader (a copy now).
            assert!(from_worker(&mut b, 200, &fetch, &nowhere));
            assert_eq!(
                acted(&mut b),
                [fetched()],
                "owner {owner}: read in place again"
            );
        }
        // A copy now (a worker may map it): its owner's pull of it leaves it (it was read
        // here), and it is removed, not pooled, when owner 3 drops it.
        let made = ObjectId::new(TaskId::new(3, 9), 0);
        let taken = PeerLease::Taken {
            owner: 3,
            ids: vec![made],
        };
        b.handle(from_peer("a", taken), t0);
        assert_eq!(acted(&mut b), [], "the reader's copy stays");
        let word = PeerLease::Drop {
            owner: 3,
            ids: vec![made],
        };
        b.handle(from_peer("a", word), t0);
        let unlink = Action::Unlink {
            conn: 1,
            setup: "files",
            ids: vec![made],
            pool: false,
        };
        assert_eq!(acted(&mut b), [unlink]);
    }

    #[test]
    fn an_owner_known_by_its_frames_speaks_for_its_copies_and_they_go_when_its_node_leaves() {
        let t0 = Instant::now();
        // Owner 7 on a was leased b's worker 200 by the driver (no ask came from a): b knows
        // its node from its frames only.
        let (_, mut b) = two_daemons(t0);
        let owner = |node: &str| Event::OwnerAt {
            job: "j".into(),
            owner: 7,
            node: node.into(),
        };
        b.handle(owner("a"), t0);
        let (made, lent) = (
            ObjectId::new(TaskId::new(7, 1), 0),
            ObjectId::new(TaskId::new(7, 2), 0),
        );
        let owner_node = |at: &str| (at == "a").then_some(5);
        let fetch = ToNode::Fetch {
            id: lent,
            len: 64,
            from: None,
        };
        assert!(from_worker(&mut b, 200, &fetch, &owner_node));
        let pulled = Event::Pulled {
            conn: 1,
            id: lent,
            len: 64,
            result: Ok(true),
        };
        b.handle(pulled, t0);
        let _ = acted(&mut b);
        // A value made here for it, pulled by its node: only that node's word counts.
        let drop = PeerLease::Drop {
            owner: 7,
            ids: vec![made],
        };
        b.handle(from_peer("c", drop.clone()), t0);
        assert_eq!(acted(&mut b), []);
        b.handle(from_peer("a", drop), t0);
        let unlink = |id, pool| Action::Unlink {
            setup: "files",
            ids: vec![id],
            pool,
            conn: 1,
        };
        assert_eq!(acted(&mut b), [unlink(made, true)]);
        // Its node leaves the job: the argument's copy goes.
        let left = Request::Peers {
            joined: Vec::new(),
            left: vec!["a".into()],
        };
        ask(&mut b, 1, 9, left, t0);
        let unlinked: Vec<_> = (acted(&mut b).into_iter())
            .filter(|a| matches!(a, Action::Unlink { .. }))
            .collect();
        assert_eq!(unlinked, [unlink(lent, false)]);
    }

    #[test]
    fn an_owner_s_death_is_told_to_every_node_it_sent_frames_to() {
        let t0 = Instant::now();
        let (mut a, _) = two_daemons(t0);
        // Worker 3 pushes to workers leased on b and c (the driver granted those leases:
        // a's pool knows nothing of them), twice to b.
        let none = |_: &str| None;
        for node in ["b", "c", "b"] {
            let push = ToNode::Forward {
                to: 200,
                at: Some(node.to_string()),
                frame: Vec::new(),
            };
            assert!(
                !from_worker(&mut a, 3, &push, &none),
                "the shell passes it on"
            );
        }
        let mut told = worker_3_dies(&mut a, t0);
        let gone = PeerLease::OwnerGone { owner: 3 };
        let mut expected = [to_peer("b", gone.clone()), to_peer("c", gone)];
        let key = |a: &Action<u32, &'static str>| format!("{a:?}");
        told.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(told, expected, "once each");
    }

    #[test]
    fn a_node_without_the_job_s_binary_refuses_an_ask_it_has_no_room_for_without_fetching_it() {
        let t0 = Instant::now();
        // The driver holds all four CPUs: an ask of one is refused at once, not after the
        // binary's fetch.
        let mut b = prepared_without_binary(1, "j", t0);
        pooled(&mut b, 200, &["a"], 4.0, t0);
        let ask = PeerLease::Ask {
            owner: 3,
            key: TaskId::new(3, 1),
            shape: Resources::cpus(1.0).unwrap(),
            binary_from: None,
            near: false,
        };
        b.handle(from_peer("a", ask), t0);
        let acted = acted(&mut b);
        assert!(
            matches!(&acted[..], [
                Action::Peer { to, message: PeerLease::Refused { owner: 3, .. }, .. },
                Action::Peer { message: PeerLease::Room { workers: 0, .. }, .. },
            ] if to == "a"),
            "refused at once, with the room it has (none): {acted:?}"
        );
    }

    #[test]
    fn a_node_without_the_job_s_binary_fetches_it_from_the_asking_node_then_grants() {
        let t0 = Instant::now();
        let mut b = prepared_without_binary(1, "j", t0);
        pooled(&mut b, 200, &["a"], 0.0, t0);
        let cpu = Resources::cpus(1.0).unwrap();
        let ask_of = |seq| PeerLease::Ask {
            owner: 3,
            key: TaskId::new(3, seq),
            shape: cpu.clone(),
            binary_from: None,
            near: false,
        };
        // An ask that names another node to fetch the binary from has it fetched there.
        let mut d = prepared_without_binary(1, "j", t0);
        pooled(&mut d, 400, &["a"], 0.0, t0);
        let (job, from, source) = ("j".to_string(), "a".to_string(), 9);
        let message = PeerLease::Ask {
            owner: 3,
            key: TaskId::new(3, 9),
            shape: cpu.clone(),
            binary_from: Some("c".into()),
            near: false,
        };
        let binary_from = Some(11);
        d.handle(
            Event::Peer {
                job,
                from,
                source,
                binary_from,
                message,
            },
            t0,
        );
        let fetch = acted(&mut d);
        assert!(
            matches!(
                &fetch[..],
                [Action::FetchBinary {
                    conn: 1,
                    from: 11,
                    ..
                }]
            ),
            "{fetch:?}"
        );
        // Two asks come while the binary is missing: one fetch, from the asking node (9).
        b.handle(from_peer("a", ask_of(1)), t0);
        b.handle(from_peer("a", ask_of(2)), t0);
        let fetch = acted(&mut b);
        assert!(
            matches!(
                &fetch[..],
                [Action::FetchBinary {
                    conn: 1,
                    from: 9,
                    ..
                }]
            ),
            "{fetch:?}"
        );
        // Once it is here, both are decided: two workers start.
        let fetched = Event::BinaryFetched {
            conn: 1,
            result: Ok(()),
        };
        b.handle(fetched, t0);
        let start = |worker| Action::Start {
            conn: 1,
            worker,
            setup: "files",
        };
        let room = PeerLease::Room {
            free: Resources::cpus(2.0).unwrap(),
            workers: 6,
        };
        assert_eq!(acted(&mut b), [start(200), start(201), to_peer("a", room)]);
        // A node that cannot get it refuses, after trying the driver too.
        let mut c = prepared_without_binary(1, "j", t0);
        pooled(&mut c, 300, &["a"], 0.0, t0);
        c.handle(from_peer("a", ask_of(3)), t0);
        acted(&mut c);
        let failed = || Event::BinaryFetched {
            conn: 1,
            result: Err("gone".into()),
        };
        c.handle(failed(), t0);
        let again = acted(&mut c);
        assert!(
            matches!(
                &again[..],
                [Action::FetchBinary {
                    conn: 1,
                    from: 0,
                    ..
                }]
            ),
            "{again:?}"
        );
        c.handle(failed(), t0);
        let refused = acted(&mut c);
        assert!(
            matches!(
                &refused[0],
                Action::Peer {
                    message: PeerLease::Refused { owner: 3, .. },
                    ..
                }
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_binary_another_node_cannot_give_comes_from_the_driver() {
        let t0 = Instant::now();
        let mut node = prepared_without_binary(1, "j", t0);
        assert!(!node.has_binary("j"));
        let spawn = Request::Spawn {
            worker: 10,
            binary_from: Some(4),
        };
        ask(&mut node, 1, 1, spawn, t0);
        let fetch = actions(&mut node);
        assert!(
            matches!(&fetch[..], [Action::FetchBinary { from: 4, .. }]),
            "from the node the driver named: {fetch:?}"
        );
        let failed = Event::BinaryFetched {
            conn: 1,
            result: Err("node 4 is gone".into()),
        };
        node.handle(failed, t0);
        let fetch = actions(&mut node);
        assert!(
            matches!(&fetch[..], [Action::FetchBinary { from: 0, .. }]),
            "then from the driver: {fetch:?}"
        );
        let fetched = Event::BinaryFetched {
            conn: 1,
            result: Ok(()),
        };
        node.handle(fetched, t0);
        assert!(matches!(
            &actions(&mut node)[..],
            [Action::Spawn { worker: 10, .. }]
        ));
        assert!(node.has_binary("j"), "and serves it to the next nodes");
    }

    #[test]
    fn a_job_s_binary_is_fetched_once_when_its_first_worker_starts() {
        let t0 = Instant::now();
        let mut node = Node::new("n".into(), Resources::cpus(4.0).unwrap());
        node.handle(
            Event::Connected {
                conn: 1,
                job: "j".into(),
            },
            t0,
        );
        ask(&mut node, 1, 0, start(5 * S), t0);
        actions(&mut node);
        let prepared = Event::Prepared {
            conn: 1,
            req: 0,
            job: "j".into(),
            result: Ok("files"),
            cached: false,
        };
        node.handle(prepared, t0);
        assert_eq!(actions(&mut node).len(), 2, "joined without the binary");
        for (req, worker) in [(1, 10), (2, 11)] {
            let binary_from = None;
            let spawn = Request::Spawn {
                worker,
                binary_from,
            };
            ask(&mut node, 1, req, spawn, t0);
        }
        let fetch = actions(&mut node);
        assert!(
            matches!(&fetch[..], [Action::FetchBinary { conn: 1, start, .. }] if start.binary == [7; 32]),
            "one fetch for two workers: {fetch:?}"
        );
        node.handle(
            Event::BinaryFetched {
                conn: 1,
                result: Ok(()),
            },
            t0,
        );
        let spawns = actions(&mut node);
        assert!(
            matches!(
                &spawns[..],
                [
                    Action::Spawn {
                        req: 1,
                        worker: 10,
                        ..
                    },
                    Action::Spawn {
                        req: 2,
                        worker: 11,
                        ..
                    }
                ]
            ),
            "{spawns:?}"
        );
        let spawn = Request::Spawn {
            worker: 12,
            binary_from: None,
        };
        ask(&mut node, 1, 3, spawn, t0);
        assert!(matches!(
            &actions(&mut node)[..],
            [Action::Spawn { worker: 12, .. }]
        ));

        // A node that cannot get the binary lets the job go and closes its connection.
        let mut node = prepared_without_binary(2, "k", t0);
        let spawn = Request::Spawn {
            worker: 20,
            binary_from: None,
        };
        ask(&mut node, 2, 1, spawn, t0);
        actions(&mut node);
        let failed = Err("unreachable".to_string());
        node.handle(
            Event::BinaryFetched {
                conn: 2,
                result: failed,
            },
            t0,
        );
        let ended = actions(&mut node);
        let reason = "node n cannot get the job's binary: unreachable";
        assert_eq!(ended[0], reply(2, 1, FromHost::Error(reason.into())));
        assert!(matches!(
            ended[1],
            Action::EndJob {
                why: Ending::NoBinary,
                ..
            }
        ));
        let close = Action::Close {
            conn: 2,
            why: Ending::NoBinary,
            reason: reason.into(),
        };
        assert_eq!(ended[2], close);
        assert!(node.idle());
    }

    #[test]
    fn two_jobs_on_one_node_are_kept_apart() {
        let t0 = Instant::now();
        let mut node = hosting_a_job(t0);
        node.handle(
            Event::Connected {
                conn: 2,
                job: "k".into(),
            },
            t0,
        );
        ask(&mut node, 2, 1, start(5 * S), t0);
        assert_eq!(actions(&mut node).len(), 1, "preparing");
        let prepared = Event::Prepared {
            conn: 2,
            req: 1,
            job: "k".into(),
            result: Ok("other"),
            cached: true,
        };
        node.handle(prepared, t0);
        assert_eq!(actions(&mut node).len(), 2, "a renewal ask and the answer");
        assert!(node.hosts("j") && node.hosts("k"));
        // One object fetched by both jobs: a pull each, into each job's store.
        let id = ObjectId::new(prism_graph::TaskId::new(1, 1), 0);
        for (conn, req) in [(1, 10), (2, 11)] {
            let request = Request::Fetch {
                id,
                len: 8,
                from: 3,
            };
            ask(&mut node, conn, req, request, t0);
        }
        let pulls = actions(&mut node);
        assert!(
            matches!(
                &pulls[..],
                [
                    Action::Pull {
                        conn: 1,
                        setup: "files",
                        ..
                    },
                    Action::Pull {
                        conn: 2,
                        setup: "other",
                        ..
                    }
                ]
            ),
            "{pulls:?}"
        );
        // Job k's driver leaves: job j runs on, and k's late pull answers nobody.
        node.handle(Event::Closed { conn: 2 }, t0);
        let ended = actions(&mut node);
        assert!(
            matches!(
                &ended[..],
                [
                    Action::Reply {
                        conn: 2,
                        req: 11,
                        ..
                    },
                    Action::EndJob { conn: 2, .. }
                ]
            ),
            "{ended:?}"
        );
        assert!(node.hosts("j") && !node.hosts("k"));
        let late = Event::Pulled {
            conn: 2,
            id,
            len: 8,
            result: Ok(true),
        };
        node.handle(late, t0);
        assert!(actions(&mut node).is_empty());
        let pulled = Event::Pulled {
            conn: 1,
            id,
            len: 8,
            result: Ok(true),
        };
        node.handle(pulled, t0);
        assert_eq!(actions(&mut node), vec![reply(1, 10, FromHost::Done)]);
    }
}
