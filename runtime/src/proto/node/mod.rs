//! The node's logic without IO: the owner's books of the driver's tasks and objects, the
//! schedulers of the nodes it runs them on, actors and placement groups, and (in a joined
//! cluster) where objects' copies are. It is one state machine: the shell feeds it events
//! ([`State::handle`], plus the commands of the driver's API) and then carries out what it
//! decided, in order ([`State::poll_action`]): frames to write to workers, workers to start or
//! kill, object files to spill, restore or free, requests to other nodes. Nothing here reads
//! a clock, touches a file or a socket, or spawns; so it runs unchanged under the shell of the
//! driver's node and under the deterministic simulator.

mod actors;
mod binaries;
mod copies;
pub(crate) mod detached;
pub(crate) mod foreign;
mod groups;
mod leases;
mod report;
mod requests;
mod stores;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_graph::{
    ActorId, IdMap, IdSet, ObjectId, PlacementStrategy, Resources, TaskError, TaskId, TaskKind,
    TaskSpec, TaskState,
};
use prism_transport::{
    ActorConfig, ArchivedOutcome, ArchivedToNode, ArchivedValue, ObjectValue, Refusal, ToHost,
    ToWorker, encode_frame,
};

use crate::proto::held_for::HeldFor;
use crate::proto::nodes::{NodeIdx, Nodes, node_of};
use crate::proto::owner::{FreedFile, Owner, Slot};
use crate::proto::scheduler::{Action as Schedule, Admission, Placement, WorkerId};
use crate::store::{ObjectBytes, Segment};

pub(crate) use crate::proto::owner::DRIVER_OWNER;
/// The owner number of tasks the node makes itself (actor restarts).
pub(crate) const NODE_OWNER: u64 = u64::MAX;

/// How often a task runs again because an argument was not in its node's store (each time it
/// is fetched again or rebuilt) before it fails with that error.
const MISSING_RETRIES: u32 = 10;

/// How many workers may die before their handshake, in a row, before queued work fails.
pub(crate) const MAX_STARTUP_FAILURES: u32 = 3;

/// What the node decided must happen, for its shell to carry out in the order given.
#[derive(Debug)]
pub(crate) enum Action {
    /// Write these encoded frames to the worker's link.
    Send { worker: WorkerId, frames: Vec<u8> },
    /// Start worker process `worker` on `node` (answer: [`Event::WorkerSpawned`] or
    /// [`Event::WorkerExited`]).
    StartWorker {
        node: NodeIdx,
        worker: WorkerId,
        /// Where the node fetches the job's binary if it lacks it: a node that has it, or
        /// (`None`) the driver.
        binary_from: Option<NodeIdx>,
    },
    /// Kill the worker's process (its exit comes back as [`Event::WorkerExited`]).
    KillWorker { worker: WorkerId },
    /// The worker's link is over: close its writer.
    CloseLink { worker: WorkerId },
    /// The worker is gone for good: drop what the shell keeps for it.
    Forget { worker: WorkerId },
    /// Write the object's bytes to a spill file and unlink its segment (answer on failure:
    /// [`Event::SpillFailed`]).
    Spill { id: ObjectId, segment: Arc<Segment> },
    /// Unmap pooled segments until `room` bytes of the store are free.
    ShrinkPool { room: u64 },
    /// Read a spilled object of `len` bytes back into shared memory (answer:
    /// [`Event::Restored`], before anything after this action is done).
    Restore { id: ObjectId, len: u64 },
    /// Pool or remove the files of a freed object.
    Free(FreedFile),
    /// Worker `owner` died: remove the segments of its objects from this process's store,
    /// but for `keep`, which the node owns now.
    DropOwnedBy {
        owner: WorkerId,
        keep: Vec<ObjectId>,
    },
    /// Ask another node of the cluster (answers: [`Event::WorkerSpawned`] or
    /// [`Event::WorkerExited`] to a spawn, [`Event::NodeFetched`] to a fetch).
    Host { node: NodeIdx, request: HostRequest },
    /// Pull `id` from `from`'s store into this process's store for readers here (answer:
    /// [`Event::Localized`] or [`Event::PullFailed`]).
    FetchHere {
        id: ObjectId,
        len: u64,
        from: NodeIdx,
    },
    /// Give up on a node: close the job's connection to it.
    DropNode { node: NodeIdx, reason: String },
    /// The books shrank: give freed memory back to the system.
    ReturnFreeMemory,
    /// Claim `name` for `actor` of class `class` at the cluster's head (answer:
    /// [`Event::NameClaimed`]).
    ClaimName {
        actor: ActorId,
        name: ActorName,
        class: String,
    },
    /// `actor` died: its claim on `name` at the head goes (no answer expected).
    ReleaseName { actor: ActorId, name: ActorName },
    /// Ask the head which actor of any job has `name` (answer: [`Event::NameFound`]).
    FindName { find: u64, name: ActorName },
    /// Follow job `job`'s actor `actor`, this job's `alias`, in the head's directory (answers:
    /// [`Event::ForeignChanged`], until it is dead or [`Action::UnwatchActor`]).
    WatchActor {
        alias: ActorId,
        job: String,
        actor: ActorId,
    },
    /// Stop following another job's actor `alias`.
    UnwatchActor { alias: ActorId },
    /// Send `frames` (the driver's calls) to another job's worker at `endpoint`, on a link of
    /// the driver's endpoint (answers: [`Event::ForeignFrames`], [`Event::ForeignLinkLost`]).
    SendForeign { endpoint: String, frames: Vec<u8> },
    /// Have the head make a detached actor (answer: [`Event::DetachedMade`] for `find`).
    CreateDetached {
        find: u64,
        spec: Box<TaskSpec>,
        setup: Box<prism_transport::ActorConfig>,
    },
    /// Have the head kill job `job`'s actor `actor` (another job's: its driver kills it;
    /// answer: [`Event::ForeignKilled`] for `kill`).
    KillForeign {
        kill: u64,
        job: String,
        actor: ActorId,
    },
}

/// A request to a node of the cluster, and what its answer means.
#[derive(Debug)]
pub(crate) enum HostRequest {
    /// Start worker `worker` (answer: its pid or why not), the node fetching the job's binary
    /// from `binary_from` (a node that has it; `None`: the driver) if it lacks it.
    Spawn {
        worker: WorkerId,
        binary_from: Option<NodeIdx>,
    },
    /// Kill worker `worker` (no answer expected).
    Kill { worker: WorkerId },
    /// Fetch `id` of `len` bytes from `from` (another node; `None`: this process's store).
    Fetch {
        id: ObjectId,
        len: u64,
        from: Option<NodeIdx>,
    },
    /// Drop the node's copies of freed objects (no answer expected).
    Free(Vec<ObjectId>),
    /// Drop the node's copies of live objects, never reusing their segments: a worker there
    /// may still read them (no answer expected).
    Drop(Vec<ObjectId>),
    /// Worker `owner` died: remove the segments of its objects from the node's store, but
    /// for `keep`, which the driver owns now (no answer expected).
    DropOwnedBy {
        owner: WorkerId,
        keep: Vec<ObjectId>,
    },
    /// Node `lost` is gone: close the connections to it, so that pulls from it fail now
    /// instead of after QUIC's idle timeout (no answer expected).
    ForgetPeer { lost: NodeIdx },
    /// The node drained: stop the job's processes there (answer: done, or why not; see
    /// [`Event::NodeDraining`]).
    EndJob,
    /// Move these objects (of these lengths) from the node's shared memory to its disk
    /// (answer: done, or why not: then [`Event::NodeSpillFailed`]).
    Spill(Vec<(ObjectId, u64)>),
    /// Bring `id` (`len` bytes) back from the node's disk into its shared memory (answered as
    /// a fetch: [`Event::NodeFetched`]).
    Restore { id: ObjectId, len: u64 },
    /// Grant the job `shape` of the node's resources (answer, once granted:
    /// [`Event::Granted`]; or [`Event::GrantRefused`]).
    Grant { shape: Resources },
    /// Take back `resources` the node granted (no answer expected).
    Return { resources: Resources },
    /// The node may lease workers of its own, numbered in `numbers`, at most `max_workers`,
    /// to the job's worker owners there (see [`crate::proto::pool`]; answer: done, or why
    /// not).
    Pool {
        numbers: std::ops::Range<WorkerId>,
        max_workers: usize,
        /// The most of each resource any other node of the job has.
        elsewhere: Resources,
    },
    /// The job's other nodes the node's pool may pass the asks it has no room for on to
    /// (see [`crate::proto::spill`]): (peer address, resources in total) that joined, and the
    /// addresses of those that left (answer: done).
    Peers {
        joined: Vec<(String, Resources)>,
        left: Vec<String>,
    },
    /// Lend the driver a worker of the node's pool for its own tasks (answer, once it runs:
    /// [`Event::NodeLent`]; or [`Event::NodeLendFailed`]); `beyond_cap`: start one past the
    /// pool's cap at once.
    LeaseWorker { beyond_cap: bool },
    /// Idle worker `worker` goes to the node's pool (no answer expected).
    ReturnWorker { worker: WorkerId },
    /// Worker `worker`, lent by the node's pool, holds an actor now: it leaves the pool (no
    /// answer expected).
    KeepWorker { worker: WorkerId },
}

impl HostRequest {
    /// The wire form, given the addresses of the nodes' and the driver's object servers.
    pub(crate) fn to_wire(&self, address: impl Fn(Option<NodeIdx>) -> String) -> ToHost {
        match self {
            HostRequest::Spawn {
                worker,
                binary_from,
            } => ToHost::Spawn {
                worker: *worker,
                binary_from: binary_from.map(|n| address(Some(n))),
            },
            HostRequest::Kill { worker } => ToHost::Kill { worker: *worker },
            HostRequest::Fetch { id, len, from } => ToHost::Fetch {
                id: *id,
                len: *len,
                from: address(*from),
            },
            HostRequest::Free(ids) => ToHost::Free(ids.clone()),
            HostRequest::Drop(ids) => ToHost::Drop(ids.clone()),
            HostRequest::DropOwnedBy { owner, keep } => ToHost::DropOwnedBy {
                owner: *owner,
                keep: keep.clone(),
            },
            HostRequest::ForgetPeer { lost } => ToHost::ForgetPeer {
                at: address(Some(*lost)),
            },
            HostRequest::EndJob => ToHost::EndJob,
            HostRequest::Spill(objects) => ToHost::Spill(objects.clone()),
            HostRequest::Restore { id, len } => ToHost::Restore { id: *id, len: *len },
            HostRequest::Grant { shape } => ToHost::Grant {
                shape: shape.clone(),
            },
            HostRequest::Return { resources } => ToHost::Return {
                resources: resources.clone(),
            },
            HostRequest::Pool {
                numbers,
                max_workers,
                elsewhere,
            } => ToHost::Pool {
                first: numbers.start,
                end: numbers.end,
                max_workers: u32::try_from(*max_workers).unwrap_or(u32::MAX),
                elsewhere: elsewhere.clone(),
            },
            HostRequest::Peers { joined, left } => ToHost::Peers {
                joined: joined.clone(),
                left: left.clone(),
            },
            HostRequest::LeaseWorker { beyond_cap } => ToHost::LeaseWorker {
                beyond_cap: *beyond_cap,
            },
            HostRequest::ReturnWorker { worker } => ToHost::ReturnWorker { worker: *worker },
            HostRequest::KeepWorker { worker } => ToHost::KeepWorker { worker: *worker },
        }
    }
}

/// Something that happened to the node.
// An event lives only for the call that hands it over: its size costs nothing, a box would.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event<'a> {
    /// The driver submitted a task (`failed`: it could not even be built).
    Submit {
        spec: TaskSpec,
        failed: Option<TaskError>,
    },
    /// A worker's process started with this pid.
    WorkerSpawned { worker: WorkerId, pid: u32 },
    /// Node `node`'s daemon started worker `worker` (pid `pid`) for a lease of its own; its
    /// link follows (refused unless the number is one the node was given).
    NodeStartedWorker {
        node: NodeIdx,
        worker: WorkerId,
        pid: u32,
    },
    /// Node `node`'s pool lent the driver worker `worker` (pid `pid`) for its own tasks
    /// ([`HostRequest::LeaseWorker`]).
    NodeLent {
        node: NodeIdx,
        worker: WorkerId,
        pid: u32,
    },
    /// Node `node`'s pool could not lend the driver a worker, and why.
    NodeLendFailed { node: NodeIdx, reason: String },
    /// A worker said hello on its link.
    WorkerConnected {
        worker: WorkerId,
        /// The direct endpoint its hello named, if any.
        direct: Option<String>,
    },
    /// Messages a worker sent, in order; `mapped` holds the shared-memory segments the shell
    /// mapped for the shared values they name (embedded node only).
    Messages {
        worker: WorkerId,
        messages: &'a [&'a ArchivedToNode],
        mapped: &'a mut IdMap<ObjectId, std::io::Result<ObjectBytes>>,
    },
    /// A worker's link reached its end.
    WorkerEof { worker: WorkerId },
    /// A worker's process ended (or could not be started), for `reason`.
    WorkerExited { worker: WorkerId, reason: String },
    /// The driver cancels the task making `id`.
    Cancel { id: ObjectId, force: bool },
    /// A spilled object is back in shared memory, or why not.
    Restored {
        id: ObjectId,
        restored: Result<ObjectBytes, String>,
    },
    /// Spilling failed; the object stays in shared memory.
    SpillFailed {
        id: ObjectId,
        segment: Arc<Segment>,
        reason: String,
    },
    /// A node's answer to [`HostRequest::Fetch`] (`Err`: why it failed).
    NodeFetched {
        node: NodeIdx,
        id: ObjectId,
        result: Result<(), String>,
    },
    /// A node could not spill objects (see [`HostRequest::Spill`]), for `reason`.
    NodeSpillFailed {
        node: NodeIdx,
        ids: Vec<ObjectId>,
        reason: String,
    },
    /// Node `node` granted `shape` ([`HostRequest::Grant`]).
    Granted { node: NodeIdx, shape: Resources },
    /// Node `node` refused to grant `shape`, for `reason`.
    GrantRefused {
        node: NodeIdx,
        shape: Resources,
        reason: String,
    },
    /// Node `node` asks for the grants the job does not use (others wait for them), and for
    /// what it holds beyond `keep` as its tasks end.
    Reclaim { node: NodeIdx, keep: Resources },
    /// A pull into this process's store arrived.
    Localized { id: ObjectId, bytes: ObjectBytes },
    /// A pull into this process's store from `from` failed.
    PullFailed {
        id: ObjectId,
        from: NodeIdx,
        reason: String,
    },
    /// The connection to a node ended: its workers are dead and its copies gone. A node
    /// that cannot reach the driver stops the job's processes on its own once its lease runs
    /// out ([`crate::proto::lease`]); until `lease_end` they may still run there, so no
    /// actor of the node starts a new incarnation before then.
    NodeLost {
        node: NodeIdx,
        reason: String,
        lease_end: Instant,
    },
    /// A node is leaving (`prism stop`, `prism drain`): it takes no new work, its queued and
    /// pipelined tasks move to other nodes, and once it runs no task the job's processes there
    /// are stopped ([`HostRequest::EndJob`]; then [`Event::NodeLost`] follows). Tasks that die
    /// with it run again elsewhere without counting against their retries.
    NodeDraining { node: NodeIdx, reason: String },
    /// A second went by: idle workers beyond the CPUs are stopped, stalls are broken.
    Tick,
    /// The head's word on `actor`'s name ([`Action::ClaimName`]).
    NameClaimed {
        actor: ActorId,
        outcome: Result<(), Unclaimed>,
    },
    /// The head's answer to lookup `find` ([`Action::FindName`]): the actor that has the
    /// name (`None`: none), or why it could not be asked.
    NameFound {
        find: u64,
        outcome: Result<Option<foreign::Found>, String>,
    },
    /// The head's answer to the detached creation `find` ([`Action::CreateDetached`]): the
    /// actor made, or why not.
    DetachedMade {
        find: u64,
        outcome: Result<foreign::Found, Refusal>,
    },
    /// The head's answer to kill `kill` of another job's actor ([`Action::KillForeign`]):
    /// killed, or why not.
    ForeignKilled {
        kill: u64,
        outcome: Result<(), String>,
    },
    /// Another job's actor `alias` as the head's directory has it now ([`Action::WatchActor`]).
    ForeignChanged {
        alias: ActorId,
        status: Option<prism_transport::ActorStatus>,
    },
    /// What another job's worker at `endpoint` sent the driver ([`Action::SendForeign`]).
    ForeignFrames {
        endpoint: String,
        msgs: Vec<ToWorker>,
    },
    /// The driver's link to another job's worker at `endpoint` broke, for `reason`.
    ForeignLinkLost { endpoint: String, reason: String },
}

/// Why the head did not grant a name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Unclaimed {
    /// Another job's live actor holds it.
    Held { job: String },
    /// The head did not answer (why).
    Unanswered(String),
}

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// A link claims a worker this node did not start or already counts as ended.
    #[error("worker {0} was not started by this node or already ended")]
    UnknownWorker(WorkerId),
    /// The hello of a worker that ended before it came.
    #[error("worker {0} ended before its hello came")]
    EndedUnheard(WorkerId),
    /// A worker said hello twice.
    #[error("worker {0} already said hello")]
    SecondHello(WorkerId),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// A node's daemon claims a worker outside the numbers it was given for its own.
    #[error("node {node} claims worker {worker}, which is not one of its own numbers")]
    NotNodes { node: NodeIdx, worker: WorkerId },
}

/// An actor's name in a namespace: taken (by a creation that did not ask for the existing
/// actor), or not found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ActorName {
    /// The namespace.
    pub(crate) namespace: String,
    /// The name.
    pub(crate) name: String,
}

/// A worker process's life as the node sees it.
#[derive(Debug, Default)]
struct WorkerLife {
    pid: Option<u32>,
    connected: bool,
    eof: bool,
    exit: Option<String>,
    /// The node asked it to exit: its end is expected, not a failure.
    retiring: bool,
    /// It may run tasks again if it stays (it hosted no actor).
    reusable: bool,
    /// Its node's pool holds it (started there for leases of its own, or given back by the
    /// driver): the daemon stops it when it idles and tells the owners of its leases when it
    /// dies (see [`crate::proto::pool`]). Not while lent to the driver.
    pooled: bool,
    /// Lent to the driver by its node's pool: the driver's scheduler runs tasks on it until
    /// it gives it back.
    lent: bool,
    /// Its node's relay said the node started it (once).
    relayed: bool,
    /// The actors it holds handles to (released when it ends).
    actors: IdSet<ActorId>,
    /// Handles held for it on other workers' word (released when it ends).
    actors_held_for: HeldFor<ActorId>,
    /// Its direct endpoint, as its hello named it: callers on other nodes reach the actor it
    /// runs there.
    direct: Option<String>,
    /// Workers that watch it ([`ToNode::WatchWorker`]): told when it is gone.
    watchers: Vec<WorkerId>,
}

/// Frames for a worker on another node held back until the objects they name are in that
/// node's store, in order: a frame goes once it and every frame before it may.
#[derive(Debug, Default)]
struct Held {
    frames: VecDeque<HeldFrame>,
}

/// One held frame: the objects it waits for, how many tasks it hands over (the task, when it
/// is one task to run), its bytes.
#[derive(Debug)]
struct HeldFrame {
    waiting: IdSet<ObjectId>,
    tasks: usize,
    task: Option<TaskId>,
    bytes: Vec<u8>,
}

/// The node's state (see the module's doc).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) owner: Owner,
    pub(crate) nodes: Nodes,
    /// In a joined cluster: the node on the driver's host, if there is one (`None` with no
    /// cluster: everything runs on node 0, this host).
    cluster: Option<Option<NodeIdx>>,
    /// Every node prestarts its workers, not only this host's (see [`State::prestarts`]).
    prestart_everywhere: bool,
    /// Nodes whose stores hold a copy of an object (joined cluster).
    locations: IdMap<ObjectId, Vec<NodeIdx>>,
    /// For a task's result whose only copy is on one node: how many tasks would run again
    /// if that node died (see [`State::guard_lineage`]).
    exposure: IdMap<ObjectId, u32>,
    /// Results given a second copy for that reason (kept at two while nodes are lost).
    guarded: IdSet<ObjectId>,
    /// Objects whose copy on a node the job counts alive could not be read, with that node:
    /// a rebuild this charges is given back if the node turns out lost (see
    /// [`State::object_lost`]).
    unread_on: IdMap<ObjectId, NodeIdx>,
    /// Tasks whose rebuild was charged because a node the job counted alive could not be
    /// read, by that node: given back when it is lost.
    charged_on: IdMap<NodeIdx, Vec<TaskId>>,
    /// What those stores hold, against their capacity (joined cluster), and the nodes whose
    /// stores went over it in this step.
    stores: stores::NodeStores,
    crowded: Vec<NodeIdx>,
    /// Fetches of objects into nodes' stores in progress, with the node they pull from (none:
    /// this process's store).
    node_fetches: IdMap<(ObjectId, NodeIdx), (Option<NodeIdx>, u64)>,
    /// How many of those pull each object from each holder (none: this process).
    serving: IdMap<(ObjectId, Option<NodeIdx>), usize>,
    /// Nodes waiting to fetch an object until a holder has room among its readers (see
    /// [`copies::PULLS_PER_HOLDER`]), or until a lost object's rebuilt copy lands, with its
    /// length.
    awaiting_holder: IdMap<ObjectId, Vec<(NodeIdx, u64)>>,
    /// Pulls into this process's store in flight, with the node each pulls from (failed at
    /// once when that node is lost: the pull's own connection may take QUIC's idle timeout
    /// to end, or its answer may never come).
    pulling_here: IdMap<ObjectId, NodeIdx>,
    held: IdMap<WorkerId, Held>,
    workers: IdMap<WorkerId, WorkerLife>,
    outbox: IdMap<WorkerId, Vec<u8>>,
    actions: VecDeque<Action>,
    /// Workers that died before their handshake, in a row.
    startup_failures: u32,
    /// Surplus idle workers, with the time they were first seen so.
    retire_candidates: Vec<(WorkerId, Instant)>,
    actors: IdMap<ActorId, actors::ActorRecord>,
    /// Placement groups made by the driver, by number.
    groups: IdMap<u64, crate::proto::placement::Group>,
    next_group: u64,
    /// Named actors, by namespace and name.
    names: IdMap<ActorName, ActorId>,
    /// The job's namespace: where names go that name none.
    namespace: String,
    /// Names are claimed at the cluster's head before their actors are created.
    names_at_head: bool,
    /// Detached actors are made by the cluster's head (see [`detached`]).
    detached_at_head: bool,
    /// Named actors' creations waiting for the head's word on their names.
    claiming: IdMap<ActorId, actors::Claiming>,
    /// The head's word on the names of the driver's own creations that were not granted,
    /// until its API reads it: refused, or (`Ok`, with `get_if_exists`) another job's
    /// actor's, found by the lookup of that number.
    unclaimed: IdMap<ActorId, Result<u64, Refusal>>,
    /// A named actor's place or life changed: the cluster's directory hears it now (callers
    /// in other jobs follow it there), not at the next tick.
    publish_due: bool,
    /// Other jobs' actors this job found, by its alias for each, and the aliases by job and
    /// id (see [`foreign`]).
    foreign: IdMap<ActorId, foreign::ForeignActor>,
    foreign_ids: HashMap<(String, ActorId), ActorId>,
    next_foreign: u64,
    /// Lookups at the head under way, and the answers of the driver's own until its API
    /// reads them.
    findings: IdMap<u64, foreign::Finding>,
    found: IdMap<u64, Result<(ActorId, String), Refusal>>,
    next_find: u64,
    /// Kills of other jobs' actors at the head under way (numbered as lookups), and the
    /// answers of the driver's own until its API reads them.
    killings: IdMap<u64, foreign::Killing>,
    killed: IdMap<u64, Result<(), Refusal>>,
    /// Actor creation attempts (first starts and restarts) by task.
    creations: IdMap<TaskId, ActorId>,
    /// Retired workers that still owe work ([`ToNode::Owes`]): asked to exit again with the
    /// next tick.
    owing_retired: IdSet<WorkerId>,
    /// Actors whose queues may have calls ready to send.
    actors_to_pump: IdSet<ActorId>,
    /// Counter of the node's own task ids (actor restarts).
    internal_seq: u64,
    /// When each lost node's lease from the driver ends (its processes are stopped by then).
    lease_ends: IdMap<NodeIdx, Instant>,
    /// Actor restarts waiting for the lease of the node where the last incarnation ran, by
    /// the time they may start.
    fenced_restarts: Vec<(Instant, TaskId)>,
    /// The time of the event being handled.
    now: Option<Instant>,
    /// Tasks asked back from workers' pipelines, to place again when they come back.
    recalling: IdSet<TaskId>,
    /// When work was last moved to nodes with room.
    rebalanced: Option<Instant>,
    /// Nodes draining that still run tasks for the job.
    draining: Vec<NodeIdx>,
    shutting_down: bool,
    /// In a cluster, whether each node's daemon grants its resources to the job (off only in
    /// the simulator, to show two drivers over-committing a node without grants).
    grants: bool,
    /// Messages received from worker processes, on this host or relayed from other nodes.
    worker_messages: u64,
    /// Leases asked for by worker owners, by key (see [`leases`]).
    leases: IdMap<TaskId, leases::Lease>,
    /// Whether workers may own their plain tasks (see [`State::lets_workers_own`]).
    worker_owners: bool,
    /// What each node's daemon was last told of the job's other nodes, for the leases it
    /// grants from its own workers ([`HostRequest::Pool`]).
    pools_told: IdMap<NodeIdx, Resources>,
    /// The other nodes each node's pool was told it may pass asks on to
    /// ([`HostRequest::Peers`]), and whether they changed since ([`State::tell_peers`]).
    peers_told: IdMap<NodeIdx, BTreeMap<NodeIdx, String>>,
    peers_changed: bool,
    /// Where each node's daemon serves its peers (joined cluster): a lease on a worker of
    /// another node than its owner's names it, and that node's daemon passes the owner's
    /// frames on to it.
    peer_addresses: HashMap<NodeIdx, String>,
    /// Where the cluster's nodes get the job's binary (joined cluster).
    binaries: binaries::Spread,
    /// Whether the driver borrows the workers for its tasks from the nodes' pools (see
    /// [`State::with_borrowed_workers`]).
    borrows: bool,
    /// Worker numbers reserved in each node's scheduler for borrows not yet answered.
    borrowing: IdMap<NodeIdx, VecDeque<WorkerId>>,
    /// Idle workers to give back to their node's pool once idle for [`IDLE_TICK`], and since
    /// when they idle.
    return_candidates: Vec<(WorkerId, Instant)>,
    /// The last workers that ended before their hello came (at most [`ENDED_UNHEARD`]): a
    /// hello of theirs still on its way (on the worker's link, not the daemon's) is late, not
    /// a stranger's.
    ended_unheard: VecDeque<WorkerId>,
    /// Tasks workers own and handed over before they ended ([`ToNode::HandOver`]), by the
    /// worker whose word ends them: they fail with `OwnerDied` if it dies first.
    handed: IdMap<WorkerId, IdSet<TaskId>>,
}

/// How many workers that ended before their hello the driver remembers.
const ENDED_UNHEARD: usize = 256;

/// Calls `each` with every value a worker's message hands over (returns and puts), so that
/// the shell can map the shared ones before the node reads the message.
pub(crate) fn shared_values(msg: &ArchivedToNode, mut each: impl FnMut(&ArchivedValue)) {
    match msg {
        ArchivedToNode::Done { ended, .. } => {
            for entry in ended.iter() {
                if let ArchivedOutcome::Returned { values, .. } = &entry.outcome {
                    values.iter().for_each(&mut each);
                }
            }
        }
        ArchivedToNode::Put { value, .. } | ArchivedToNode::Yield { value, .. } => each(value),
        _ => {}
    }
}

/// How many unblocked workers a node of `total` resources keeps: one per CPU.
pub(crate) fn soft_limit_of(total: &Resources) -> usize {
    total.cpu.as_f64().ceil().max(1.0) as usize
}

/// How often a cluster's work moves to nodes with room (at most).
pub(crate) const REBALANCE_EVERY: Duration = Duration::from_millis(100);

/// How long a worker beyond the node's CPUs may stay idle before it is stopped.
pub(crate) const IDLE_TICK: Duration = Duration::from_secs(1);

impl State {
    /// A node scheduling onto `nodes`, whose owner keeps a store of `capacity` bytes;
    /// `cluster`: in a joined cluster, the node on the driver's host if there is one.
    pub(crate) fn new(mut nodes: Nodes, capacity: u64, cluster: Option<Option<NodeIdx>>) -> Self {
        if cluster.is_some() {
            // Each node's daemon shares it among the jobs it hosts.
            for idx in 0..nodes.len() {
                nodes.gate(idx);
            }
        }
        State {
            owner: Owner::new(capacity),
            nodes,
            cluster,
            prestart_everywhere: false,
            locations: IdMap::default(),
            exposure: IdMap::default(),
            guarded: IdSet::default(),
            unread_on: IdMap::default(),
            charged_on: IdMap::default(),
            stores: stores::NodeStores::default(),
            crowded: Vec::new(),
            node_fetches: IdMap::default(),
            serving: IdMap::default(),
            awaiting_holder: IdMap::default(),
            pulling_here: IdMap::default(),
            held: IdMap::default(),
            workers: IdMap::default(),
            outbox: IdMap::default(),
            actions: VecDeque::new(),
            startup_failures: 0,
            retire_candidates: Vec::new(),
            actors: IdMap::default(),
            groups: IdMap::default(),
            next_group: 0,
            names: IdMap::default(),
            namespace: String::new(),
            names_at_head: false,
            detached_at_head: false,
            claiming: IdMap::default(),
            unclaimed: IdMap::default(),
            publish_due: false,
            foreign: IdMap::default(),
            foreign_ids: HashMap::new(),
            next_foreign: 0,
            findings: IdMap::default(),
            found: IdMap::default(),
            next_find: 0,
            killings: IdMap::default(),
            killed: IdMap::default(),
            creations: IdMap::default(),
            owing_retired: IdSet::default(),
            actors_to_pump: IdSet::default(),
            internal_seq: 0,
            lease_ends: IdMap::default(),
            fenced_restarts: Vec::new(),
            now: None,
            recalling: IdSet::default(),
            rebalanced: None,
            draining: Vec::new(),
            shutting_down: false,
            grants: cluster.is_some(),
            worker_messages: 0,
            binaries: binaries::Spread::default(),
            leases: IdMap::default(),
            worker_owners: true,
            pools_told: IdMap::default(),
            peers_told: IdMap::default(),
            peers_changed: false,
            peer_addresses: HashMap::new(),
            borrows: false,
            borrowing: IdMap::default(),
            return_candidates: Vec::new(),
            ended_unheard: VecDeque::new(),
            handed: IdMap::default(),
        }
    }

    /// Whether, in a joined cluster whose workers own their tasks, the driver borrows the
    /// workers for its own tasks from each node's pool (one pool of processes per node,
    /// under one cap) rather than starting its own; actors' workers it keeps for good. A
    /// node whose daemon lacks the job's binary still gets workers started at the driver's
    /// word (which fetch it), given to its pool once idle.
    pub(crate) fn with_borrowed_workers(mut self, borrows: bool) -> Self {
        self.borrows = borrows;
        self
    }

    /// Whether workers may own their plain tasks (else the node owns everything they
    /// submit, as before worker owners: `PRISM_WORKER_OWNERS=0`).
    pub(crate) fn with_worker_owners(mut self, owners: bool) -> Self {
        self.worker_owners = owners;
        self.tell_pools();
        self
    }

    /// Names actors in `namespace` when their creation or lookup names none.
    pub(crate) fn with_namespace(mut self, namespace: String) -> Self {
        self.namespace = namespace;
        self
    }

    /// Whether a named actor's place or life changed since the last call (publish the
    /// directory now).
    pub(crate) fn take_publish_due(&mut self) -> bool {
        std::mem::take(&mut self.publish_due)
    }

    /// The job's namespace.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `name` in `namespace`, or in the job's when that is `None`.
    pub(crate) fn actor_name(&self, name: &str, namespace: Option<&str>) -> ActorName {
        ActorName {
            namespace: namespace.unwrap_or(&self.namespace).to_string(),
            name: name.to_string(),
        }
    }

    /// Claims actors' names at the cluster's head before creating them (a joined driver:
    /// names are unique per namespace across the cluster's jobs, see [`Action::ClaimName`]).
    pub(crate) fn with_names_at_head(mut self, at_head: bool) -> Self {
        self.names_at_head = at_head;
        self
    }

    /// Keeps task events of at most `capacity` tasks (0: none); `report` them to a head (see
    /// [`State::report_events`]).
    pub(crate) fn with_task_events(mut self, capacity: usize, report: bool) -> Self {
        self.owner.events = crate::proto::events::TaskEvents::new(capacity);
        if report {
            self.owner.events.report_to_head();
        }
        self
    }

    /// Starts the workers the CPUs can use right away, so the first tasks do not wait.
    pub(crate) fn start(&mut self) {
        for idx in 0..self.nodes.len() {
            let Some(node) = self.nodes.get(idx) else {
                continue;
            };
            if self.prestarts(idx) {
                for _ in 0..soft_limit_of(node.sched.total()) {
                    self.start_worker(idx);
                }
            }
        }
        self.settle();
    }

    /// Whether node `idx` starts its workers before work comes: this host's node does (the
    /// first tasks do not wait for a process); another host's starts them for its first work,
    /// so that a node the job never uses never fetches the job's binary (unless every node
    /// prestarts, see [`State::prestarting_everywhere`]).
    fn prestarts(&self, idx: NodeIdx) -> bool {
        match self.cluster {
            None => true,
            Some(local) => self.prestart_everywhere || local == Some(idx),
        }
    }

    /// The nodes' daemons grant nothing: the job counts every node whole, whatever other
    /// jobs run there (as before grants; the simulator's `--no-grants`).
    pub(crate) fn without_grants(mut self) -> Self {
        self.grants = false;
        for idx in 0..self.nodes.len() {
            self.nodes.ungate(idx);
        }
        self
    }

    /// Every node starts its workers before work comes (as this host's node does).
    #[cfg(test)]
    pub(crate) fn prestarting_everywhere(mut self) -> Self {
        self.prestart_everywhere = true;
        self
    }

    /// A node joined the cluster while the job runs: it takes queued and new work from now
    /// on (queued tasks move to it at the next tick, those no node could run are placed
    /// again), its workers start with its first work. Returns its index, or `None` when the driver already
    /// numbers as many nodes as it can.
    pub(crate) fn join_node(
        &mut self,
        name: String,
        total: Resources,
        max_inflight: usize,
        max_workers: usize,
    ) -> Option<NodeIdx> {
        if self.nodes.len() >= crate::proto::nodes::MAX_NODES {
            return None;
        }
        let soft = soft_limit_of(&total);
        tracing::info!(node = name, resources = %total, "a node joined the job");
        let idx = self.nodes.add(name, total, max_inflight, soft, max_workers);
        if self.grants {
            self.nodes.gate(idx);
        }
        self.tell_pools();
        if self.prestarts(idx) {
            for _ in 0..soft {
                self.start_worker(idx);
            }
        }
        for task in self.nodes.take_infeasible() {
            if let Some(record) = self.owner.task_mut(task) {
                record.infeasible = None;
            }
            self.enqueue(task);
        }
        self.settle();
        Some(idx)
    }

    /// The next thing the shell must do, in the order decided.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Takes in `event`, which happened at `now`, and decides what follows (see
    /// [`State::poll_action`]); an event the node cannot accept is refused and changes nothing.
    pub(crate) fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<(), Refused> {
        self.now = Some(now);
        self.owner.now = Some(now);
        self.start_fenced_restarts(now);
        match event {
            Event::Submit { spec, failed } => self.submit(spec, None, failed),
            Event::WorkerSpawned { worker, pid } => {
                self.workers.entry(worker).or_default().pid = Some(pid);
                if self.shutting_down {
                    // Started as the node stops: nothing for it to do.
                    self.kill_worker(worker);
                }
            }
            Event::NodeStartedWorker { node, worker, pid } => {
                self.node_started_worker(node, worker, pid)?
            }
            Event::NodeLent { node, worker, pid } => self.node_lent(node, worker, pid)?,
            Event::NodeLendFailed { node, reason } => {
                tracing::warn!(node = self.nodes.name(node), "no worker lent: {reason}");
                if let Some(starting) = self.borrowing.get_mut(&node).and_then(VecDeque::pop_front)
                {
                    // A start of the driver's own takes its place.
                    self.nodes.remove_worker(starting);
                    self.spawn_worker(node);
                }
            }
            Event::WorkerConnected { worker, direct } => self.worker_connected(worker, direct)?,
            Event::Messages {
                worker,
                messages,
                mapped,
            } => {
                self.worker_messages += messages.len() as u64;
                for msg in messages {
                    self.on_message(worker, msg, mapped);
                }
            }
            Event::WorkerEof { worker } => {
                if let Some(life) = self.workers.get_mut(&worker) {
                    life.eof = true;
                    self.actions.push_back(Action::CloseLink { worker });
                }
                self.maybe_dead(worker);
            }
            Event::WorkerExited { worker, reason } => {
                let life = self.workers.entry(worker).or_default();
                life.exit = Some(reason);
                if !life.connected {
                    life.eof = true;
                    if self.ended_unheard.len() == ENDED_UNHEARD {
                        self.ended_unheard.pop_front();
                    }
                    self.ended_unheard.push_back(worker);
                }
                self.maybe_dead(worker);
            }
            Event::Cancel { id, force } => self.cancel(id, force),
            Event::Restored { id, restored } => self.owner.restored(id, restored),
            Event::SpillFailed {
                id,
                segment,
                reason,
            } => {
                tracing::error!(object = %id, "cannot spill: {reason}");
                self.owner.unspilled(id, segment);
            }
            Event::NodeFetched { node, id, result } => self.node_fetched(node, id, result),
            Event::NodeSpillFailed { node, ids, reason } => {
                self.node_spill_failed(node, ids, &reason)
            }
            Event::Granted { node, shape } => self.nodes.granted(node, &shape),
            Event::NameClaimed { actor, outcome } => self.name_claimed(actor, outcome),
            Event::NameFound { find, outcome } => self.name_found(find, outcome),
            Event::DetachedMade { find, outcome } => self.detached_made(find, outcome),
            Event::ForeignKilled { kill, outcome } => self.foreign_killed(kill, outcome),
            Event::ForeignChanged { alias, status } => self.foreign_changed(alias, status),
            Event::ForeignFrames { endpoint, msgs } => self.foreign_frames(&endpoint, msgs),
            Event::ForeignLinkLost { endpoint, reason } => {
                self.foreign_link_lost(&endpoint, &reason)
            }
            Event::GrantRefused {
                node,
                shape,
                reason,
            } => {
                tracing::warn!(node = self.nodes.name(node), %shape, "no grant: {reason}");
                self.nodes.refused(node, &shape);
            }
            Event::Reclaim { node, keep } => self.nodes.reclaim(node, keep),
            Event::Localized { id, bytes } => {
                self.pulling_here.remove(&id);
                self.owner.localized(id, bytes);
            }
            Event::PullFailed { id, from, reason } => {
                // A pull already counted failed (its node was lost) ends nothing more.
                if self.pulling_here.get(&id) == Some(&from) {
                    self.pulling_here.remove(&id);
                    self.pull_failed(id, from, &reason);
                }
            }
            Event::NodeLost {
                node,
                reason,
                lease_end,
            } => {
                self.peers_changed = true;
                self.node_lost(node, reason, lease_end);
            }
            Event::NodeDraining { node, reason } => self.node_draining(node, reason),
            Event::Tick => self.tick(now),
        }
        self.release_drained();
        // In a cluster, at most every REBALANCE_EVERY: work moves to nodes with room.
        if self.cluster.is_some() && self.rebalanced.is_none_or(|at| now >= at + REBALANCE_EVERY) {
            self.rebalanced = Some(now);
            self.rebalance();
        }
        self.settle();
        Ok(())
    }

    /// In a joined cluster whose workers own their tasks, each node's daemon is let grant
    /// the leases its workers ask for while it has room, from workers of its own
    /// ([`crate::proto::pool`]), and told again when the most the job's other nodes have
    /// of a resource changed (a node joined).
    fn tell_pools(&mut self) {
        if self.cluster.is_none() || !self.lets_workers_own() {
            return;
        }
        self.peers_changed = true;
        let alive: Vec<NodeIdx> = self.nodes.live().collect();
        let totals: Vec<&Resources> = (alive.iter())
            .filter_map(|&idx| self.nodes.get(idx).map(|n| n.sched.total()))
            .collect();
        let elsewhere_each = crate::proto::pool::most_elsewhere(&totals);
        for (idx, elsewhere) in alive.into_iter().zip(elsewhere_each) {
            let Some(node) = self.nodes.get(idx) else {
                continue;
            };
            if self.pools_told.get(&idx) == Some(&elsewhere) {
                continue;
            }
            self.pools_told.insert(idx, elsewhere.clone());
            let request = HostRequest::Pool {
                numbers: crate::proto::nodes::pool_numbers(idx),
                max_workers: node.sched.max_workers(),
                elsewhere,
            };
            self.actions.push_back(Action::Host { node: idx, request });
        }
    }

    /// Tells each node's pool which of the job's other nodes it may pass the asks it has no
    /// room for on to ([`crate::proto::spill`]): some of the live nodes whose daemons serve
    /// peers ([`crate::proto::spill::peers_of`]); what changed since it was told.
    fn tell_peers(&mut self) {
        self.peers_changed = false;
        if self.cluster.is_none() || !self.lets_workers_own() {
            return;
        }
        let view: Vec<NodeIdx> = (self.nodes.live())
            .filter(|idx| self.peer_addresses.contains_key(idx))
            .collect();
        for (at, &idx) in view.iter().enumerate() {
            let want: BTreeMap<NodeIdx, String> = (crate::proto::spill::peers_of(at, view.len()))
                .into_iter()
                .map(|i| view[i])
                .map(|other| (other, self.peer_addresses[&other].clone()))
                .collect();
            let told = self.peers_told.entry(idx).or_default();
            let joined: Vec<(String, Resources)> = (want.iter())
                .filter(|(other, _)| !told.contains_key(other))
                .filter_map(|(&other, address)| {
                    let total = self.nodes.get(other)?.sched.total().clone();
                    Some((address.clone(), total))
                })
                .collect();
            let left: Vec<String> = (told.iter())
                .filter(|(other, _)| !want.contains_key(other))
                .map(|(_, address)| address.clone())
                .collect();
            if joined.is_empty() && left.is_empty() {
                continue;
            }
            *told = want;
            let request = HostRequest::Peers { joined, left };
            self.actions.push_back(Action::Host { node: idx, request });
        }
        // `view` is in the nodes' order.
        self.peers_told
            .retain(|idx, _| view.binary_search(idx).is_ok());
    }

    /// Node `node`'s daemon started worker `worker` for a lease of its own: the worker is
    /// the job's (its puts, holds and handles count here), not the driver's scheduler's.
    fn node_started_worker(
        &mut self,
        node: NodeIdx,
        worker: WorkerId,
        pid: u32,
    ) -> Result<(), Refused> {
        if self.shutting_down {
            return Err(Refused::Stopping);
        }
        let ours = self.cluster.is_some()
            && self.lets_workers_own()
            && crate::proto::nodes::pool_numbers(node).contains(&worker);
        if !ours {
            return Err(Refused::NotNodes { node, worker });
        }
        match self.workers.get_mut(&worker) {
            // Lent to the driver before its relay came.
            Some(life) if life.lent && !life.relayed => life.relayed = true,
            Some(_) => return Err(Refused::SecondHello(worker)),
            None => {
                let life = WorkerLife {
                    pid: Some(pid),
                    pooled: true,
                    relayed: true,
                    ..WorkerLife::default()
                };
                self.workers.insert(worker, life);
            }
        }
        Ok(())
    }

    /// Whether the driver borrows its workers on `node` from the node's pool: the pool was
    /// opened, and the node has the job's binary or fetches it (else a start of the driver's
    /// own fetches it; borrows wait at the node for the fetch).
    fn borrows_on(&self, node: NodeIdx) -> bool {
        self.borrows
            && self.cluster.is_some()
            && self.lets_workers_own()
            && self.pools_told.contains_key(&node)
            && self.binaries.holds_or_fetches(node)
    }

    /// Node `node`'s pool lent the driver `worker`: it takes the place of the oldest borrow
    /// there in the node's scheduler. A number outside the node's, or of a worker the driver
    /// runs tasks on already, is refused.
    fn node_lent(&mut self, node: NodeIdx, worker: WorkerId, pid: u32) -> Result<(), Refused> {
        if self.shutting_down {
            return Err(Refused::Stopping);
        }
        let starting = self.borrowing.get_mut(&node).and_then(VecDeque::pop_front);
        let refused = if node_of(worker) != node || !self.borrows_on(node) {
            Some(Refused::NotNodes { node, worker })
        } else {
            let life = self.workers.get(&worker);
            let taken = life.is_some_and(|l| l.lent || l.retiring || l.eof || l.exit.is_some());
            taken.then_some(Refused::SecondHello(worker))
        };
        if let Some(refused) = refused {
            tracing::warn!(
                node = self.nodes.name(node),
                worker,
                "a lent worker refused: {refused}"
            );
            if let Some(starting) = starting {
                // A start of the driver's own takes its place.
                self.nodes.remove_worker(starting);
                self.spawn_worker(node);
            }
            return Err(refused);
        }
        let life = self.workers.entry(worker).or_default();
        life.pid = life.pid.or(Some(pid));
        (life.lent, life.pooled) = (true, false);
        let ready = life.connected;
        match starting {
            Some(starting) => self.nodes.adopt(node, starting, worker, ready),
            // Its borrow was dropped meanwhile: it goes back.
            None => self.give_back(worker),
        }
        Ok(())
    }

    /// Gives idle worker `worker` to its node's pool: it leaves the scheduler, its link stays
    /// (its puts and holds still come here).
    fn give_back(&mut self, worker: WorkerId) {
        self.nodes.remove_worker(worker);
        if let Some(life) = self.workers.get_mut(&worker) {
            (life.lent, life.pooled) = (false, true);
        }
        let request = HostRequest::ReturnWorker { worker };
        let node = node_of(worker);
        self.actions.push_back(Action::Host { node, request });
    }

    /// Records a worker's handshake; a link the node has no place for is refused.
    fn worker_connected(
        &mut self,
        worker: WorkerId,
        direct: Option<String>,
    ) -> Result<(), Refused> {
        let stopping = self.shutting_down;
        let Some(life) = self.workers.get_mut(&worker) else {
            return Err(if stopping {
                Refused::Stopping
            } else if self.ended_unheard.contains(&worker) {
                Refused::EndedUnheard(worker)
            } else {
                Refused::UnknownWorker(worker)
            });
        };
        if life.connected {
            return Err(Refused::SecondHello(worker));
        }
        life.connected = true;
        life.direct = direct;
        self.startup_failures = 0;
        self.nodes.worker_ready(worker);
        if self.cluster.is_some() {
            self.binaries.has(node_of(worker));
            self.start_waiting_workers();
        }
        self.encode_to(worker, &ToWorker::Welcome);
        if self.lets_workers_own() {
            self.encode_to(worker, &ToWorker::OwnTasks);
        }
        Ok(())
    }

    /// Stops workers that stayed idle beyond the node's CPUs (started while others were
    /// blocked in `get`) for a whole [`IDLE_TICK`], and breaks stalls.
    fn tick(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.owner.expire_awaited(now);
        for worker in std::mem::take(&mut self.owing_retired) {
            if self.workers.contains_key(&worker) {
                self.encode_to(worker, &ToWorker::ExitIfIdle);
            }
        }
        if self.owner.compact() | self.nodes.compact() {
            self.actions.push_back(Action::ReturnFreeMemory);
        }
        self.return_idle(now);
        let mut surplus = self.nodes.surplus_idle_workers();
        // A worker that owns tasks on leases is not idle: its tasks' ends come to it; nor is
        // one that holds actors' handles (its calls to them are under way: each holds its
        // actor's handle till it ends). One of a node with a pool goes back to it instead.
        surplus.retain(|w| {
            !self.holds_leases(*w) && !self.holds_actors(*w) && !self.borrows_on(node_of(*w))
        });
        let seen = std::mem::take(&mut self.retire_candidates);
        for worker in surplus {
            let since = seen
                .iter()
                .find(|(w, _)| *w == worker)
                .map_or(now, |(_, since)| *since);
            if now.saturating_duration_since(since) >= IDLE_TICK {
                tracing::debug!(worker, "stopping an idle worker beyond the node's CPUs");
                self.retire(worker, true);
            } else {
                self.retire_candidates.push((worker, since));
            }
        }
        for (node, resources) in self.nodes.tick_grants() {
            let request = HostRequest::Return { resources };
            self.actions.push_back(Action::Host { node, request });
        }
        for node in self.nodes.stalled() {
            tracing::info!(
                node = self.nodes.name(node),
                "every worker is blocked in get and none can run the queued tasks: starting one beyond max_workers"
            );
            self.start_worker_beyond(node, true);
        }
    }

    /// Gives the workers idle for a whole [`IDLE_TICK`] on nodes with a pool back to it (a
    /// worker that owns tasks on leases is not idle).
    fn return_idle(&mut self, now: Instant) {
        let seen = std::mem::take(&mut self.return_candidates);
        let pooled: Vec<NodeIdx> = (self.nodes.live())
            .filter(|&n| self.borrows_on(n))
            .collect();
        for node in pooled {
            for worker in self.nodes.idle_workers(node) {
                if self.holds_leases(worker) {
                    continue;
                }
                let since = (seen.iter().find(|(w, _)| *w == worker)).map_or(now, |(_, s)| *s);
                if now.saturating_duration_since(since) >= IDLE_TICK {
                    tracing::debug!(worker, "an idle worker goes back to its node's pool");
                    self.give_back(worker);
                } else {
                    self.return_candidates.push((worker, since));
                }
            }
        }
    }

    /// Moves work to nodes with room: queued tasks and actor creations a node cannot start,
    /// then tasks waiting in busy workers' pipelines (asked back; placed again when they
    /// come back).
    fn rebalance(&mut self) {
        if self.shutting_down {
            return;
        }
        let stolen = self.nodes.steal(&self.recalling);
        if !stolen.moved.is_empty() || !stolen.recall.is_empty() {
            tracing::debug!(
                queued = stolen.moved.len(),
                pipelined = stolen.recall.iter().map(|(_, t)| t.len()).sum::<usize>(),
                "work moves to nodes with room"
            );
        }
        // A lease ask among them moves to a node with room (or, where no other node's daemon
        // can be reached, has its owner hand a share of its tasks here: the room elsewhere is
        // shared by every owner whose ask moves now).
        let asks = stolen.moved.iter().filter(|t| self.is_lease(**t)).count();
        for task in stolen.moved {
            if self.is_lease(task) {
                self.place_lease(task, asks);
            } else {
                self.enqueue(task);
            }
        }
        for (worker, tasks) in stolen.recall {
            self.recalling.extend(tasks.iter().copied());
            self.encode_to(worker, &ToWorker::Recall { tasks });
        }
    }

    /// The node stops: workers are asked to exit, those still starting are killed. Returns
    /// the workers whose exit to wait for.
    pub(crate) fn stop(&mut self) -> Vec<WorkerId> {
        self.shutting_down = true;
        let mut bye = Vec::new();
        let _ = encode_frame(&ToWorker::Shutdown, &mut bye);
        let mut kill = Vec::new();
        for (&worker, life) in &self.workers {
            if life.connected && !life.eof {
                let frames = bye.clone();
                self.actions.push_back(Action::Send { worker, frames });
            } else if life.pid.is_some() && life.exit.is_none() {
                // Still starting: it holds nothing to finish.
                kill.push(worker);
            }
        }
        for worker in kill {
            self.kill_worker(worker);
        }
        self.workers
            .iter()
            .filter(|(_, l)| l.exit.is_none() && l.pid.is_some())
            .map(|(&w, _)| w)
            .collect()
    }

    /// Whether the worker's process is still running (as far as the node has heard).
    /// How many messages worker processes sent this node, on this host or relayed from other
    /// nodes: what the job's tasks cost the driver in messages.
    pub(crate) fn worker_messages(&self) -> u64 {
        self.worker_messages
    }

    pub(crate) fn running(&self, worker: WorkerId) -> bool {
        self.workers
            .get(&worker)
            .is_some_and(|l| l.pid.is_some() && l.exit.is_none())
    }

    /// Whether the node is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.shutting_down
    }

    /// Kills a worker that did not exit when asked (the node is stopping).
    pub(crate) fn kill_straggler(&mut self, worker: WorkerId) {
        if self.running(worker) {
            self.kill_worker(worker);
        }
    }

    /// The driver dropped its last reference to `id`.
    pub(crate) fn release(&mut self, id: ObjectId) {
        self.owner
            .release_by(id, crate::proto::owner::Releaser::Driver);
        self.free_files();
        if self.cluster.is_some() {
            // Its copies on other nodes go now, not at the next event: a node that pulls the
            // next object reuses a freed copy's pages only if the free came first.
            self.free_copies();
        }
        self.send_stream_acks();
    }

    /// The driver takes item `index` of its stream of generator `task`.
    pub(crate) fn stream_next(&mut self, task: TaskId, index: u32) {
        self.owner.stream_claim(task, index, None);
    }

    /// Tells generators' producers how many of their items were taken.
    fn send_stream_acks(&mut self) {
        for (task, consumed) in std::mem::take(&mut self.owner.stream_acks) {
            if let Some(worker) = self.owner.task(task).and_then(|r| r.worker) {
                self.encode_to(worker, &ToWorker::StreamAck { task, consumed });
            }
        }
    }
}

impl State {
    /// Spills least recently used shared objects that no queued or running task needs until
    /// `needed` more bytes fit (never `keep`); false when that is impossible. Pooled segments
    /// go first.
    pub(crate) fn make_room(&mut self, needed: u64, keep: Option<ObjectId>) -> bool {
        let room = self
            .owner
            .capacity
            .saturating_sub(self.owner.stored_bytes + needed);
        self.actions.push_back(Action::ShrinkPool { room });
        while self.owner.overflow(needed) > 0 {
            let Some((id, segment)) = self.owner.spill_victim(keep) else {
                return false;
            };
            self.owner.spilled(id);
            self.actions.push_back(Action::Spill { id, segment });
        }
        true
    }

    /// Brings a spilled object of `len` bytes back into shared memory (spilling others if
    /// needed) before it is read: the shell restores it before it does anything asked later.
    pub(crate) fn restore(&mut self, id: ObjectId, len: u64) {
        if !self.make_room(len, Some(id)) {
            tracing::warn!(object = %id, "restoring beyond the store's capacity: nothing else can be spilled");
        }
        self.owner.restoring(id);
        self.actions.push_back(Action::Restore { id, len });
    }

    fn restore_if_spilled(&mut self, id: ObjectId) {
        if let Some(len) = self.owner.spilled_len(id) {
            self.restore(id, len);
        }
    }

    /// The task's arguments as its worker gets them, restoring spilled ones first (unless a
    /// live node of the cluster has a copy: its worker reads that one); `None` when one is
    /// gone or being rebuilt.
    fn args_of(&mut self, task: TaskId) -> Option<Vec<prism_transport::Value>> {
        loop {
            let (locations, nodes) = (&self.locations, &self.nodes);
            let on_a_node = |id: ObjectId| copies::on_live_node(locations, nodes, id);
            match self.owner.resolve_args(task, on_a_node) {
                Ok(args) => return Some(args),
                Err(Some(spilled)) => self.restore_if_spilled(spilled),
                Err(None) => return None,
            }
        }
    }

    /// Has the shell pool or remove the files of the objects the owner freed.
    fn free_files(&mut self) {
        let freed = std::mem::take(&mut self.owner.freed_files);
        self.actions.extend(freed.into_iter().map(Action::Free));
    }
}

impl State {
    /// Takes a worker out of the pool and asks its process to exit once it owes nothing (it
    /// may still run an actor's last calls, or lend objects to other workers: it answers
    /// [`ToNode::Owes`]). One that may run tasks again (`reusable`: not an actor's) then goes
    /// back to the pool, idle, to be asked again when it is surplus; an actor's is asked
    /// again each [`IDLE_TICK`].
    fn retire(&mut self, worker: WorkerId, reusable: bool) {
        self.nodes.remove_worker(worker);
        self.encode_to(worker, &ToWorker::ExitIfIdle);
        if let Some(life) = self.workers.get_mut(&worker) {
            life.retiring = true;
            life.reusable = reusable;
        }
    }

    fn start_worker(&mut self, node: NodeIdx) {
        self.start_worker_beyond(node, false);
    }

    /// Starts a worker on `node`: borrowed from its pool if it has one (`beyond_cap`: past
    /// the pool's cap), else one of the driver's own.
    fn start_worker_beyond(&mut self, node: NodeIdx, beyond_cap: bool) {
        if self.shutting_down {
            return;
        }
        if !self.borrows_on(node) {
            return self.spawn_worker(node);
        }
        let starting = self.nodes.worker_starting(node);
        self.borrowing.entry(node).or_default().push_back(starting);
        let request = HostRequest::LeaseWorker { beyond_cap };
        self.actions.push_back(Action::Host { node, request });
    }

    /// Starts a worker process of the driver's own on `node`.
    fn spawn_worker(&mut self, node: NodeIdx) {
        if self.shutting_down {
            return;
        }
        let worker = self.nodes.worker_starting(node);
        self.workers.insert(worker, WorkerLife::default());
        let binary_from = match self.cluster {
            None => None,
            Some(_) => match self.binaries.start(node, worker) {
                binaries::Start::Now(from) => from,
                // Started once a node or the driver has room to serve it the binary.
                binaries::Start::Wait => return,
            },
        };
        self.actions.push_back(Action::StartWorker {
            node,
            worker,
            binary_from,
        });
    }

    /// Starts the workers that waited for a source of the job's binary with room.
    fn start_waiting_workers(&mut self) {
        for (node, worker, binary_from) in self.binaries.ready() {
            self.actions.push_back(Action::StartWorker {
                node,
                worker,
                binary_from,
            });
        }
    }

    /// Kills a worker's process, on this host or on its node.
    fn kill_worker(&mut self, worker: WorkerId) {
        self.actions.push_back(Action::KillWorker { worker });
    }

    fn next_internal_task(&mut self) -> TaskId {
        self.internal_seq += 1;
        TaskId::new(NODE_OWNER, self.internal_seq)
    }

    fn submit(&mut self, spec: TaskSpec, holder: Option<WorkerId>, failed: Option<TaskError>) {
        let task = spec.task_id;
        let kind = spec.kind;
        // Handles passed inside arguments hold their actors until the task ends.
        for &actor in &spec.inlined_actors {
            self.actor_add_ref(actor);
        }
        let ready = self.owner.submit(spec, holder);
        if let Some(parent) = holder.and_then(|w| self.nodes.running_task(w)) {
            self.owner.events.set_parent(task, parent);
        }
        if let Some(error) = failed {
            self.owner.fail_unscheduled(task, error);
            if let TaskKind::ActorCreation { actor, .. } = kind {
                self.creations.remove(&task);
                self.stop_actor(actor, "its creation could not be submitted".into());
            }
            return;
        }
        if let TaskKind::ActorCall(actor) = kind {
            self.queue_call(actor, task);
        } else if ready {
            self.enqueue(task);
        }
    }

    /// Worker `worker` hands over `task`, a task it owns whose end it does not know yet (a
    /// reference to its result leaves it): the job owns it now, as a task running on that
    /// worker, its values held by it, until the worker sends its end or dies.
    fn handed_over(&mut self, worker: WorkerId, task: TaskId, function: &str, num_returns: u32) {
        if task.owner != worker
            || self.owner.task(task).is_some()
            || !self.workers.contains_key(&worker)
        {
            tracing::warn!(worker, task = %task, "a hand-over of a task not the worker's, known already, or from a worker that is gone: ignored");
            return;
        }
        let spec = TaskSpec {
            num_returns,
            max_retries: 0,
            ..TaskSpec::call(task, function, Vec::new())
        };
        self.owner.submit(spec, Some(worker));
        if let Some(parent) = self.nodes.running_task(worker) {
            self.owner.events.set_parent(task, parent);
        }
        self.owner.started(task, worker);
        self.handed.entry(worker).or_default().insert(task);
    }

    /// Worker `worker` died: the segments of the objects it owned go from its node's store
    /// (nothing else would remove them before the job ends), but for those it handed over,
    /// which the owner here keeps. Its copies on other nodes go by their nodes' watch.
    fn drop_owned_by(&mut self, worker: WorkerId) {
        let keep = self.owner.objects_of(worker);
        if self.cluster.is_none() {
            self.actions.push_back(Action::DropOwnedBy {
                owner: worker,
                keep,
            });
            return;
        }
        let node = node_of(worker);
        if self.nodes.get(node).is_some_and(|n| n.alive) {
            let request = HostRequest::DropOwnedBy {
                owner: worker,
                keep,
            };
            self.actions.push_back(Action::Host { node, request });
        }
    }

    /// Whether `worker` handed over `task` and has not sent its end yet.
    fn handed_by(&self, worker: WorkerId, task: TaskId) -> bool {
        self.handed.get(&worker).is_some_and(|t| t.contains(&task))
    }

    /// Worker `worker` died: the tasks it handed over and had not ended fail with
    /// `OwnerDied` (`pid`, `reason`: what was seen of it), as do the asks for objects of its
    /// tasks it never handed over.
    fn owner_died(&mut self, worker: WorkerId, pid: Option<u32>, reason: &str) {
        let tasks = self.handed.remove(&worker);
        if tasks.is_none() && !self.owner.awaits_objects() {
            return;
        }
        let node = self.nodes.name(node_of(worker)).to_string();
        let owner = match pid {
            Some(pid) => format!("worker {worker} (pid {pid} on node {node})"),
            None => format!("worker {worker} (on node {node})"),
        };
        self.owner
            .awaited_owner_gone(worker, |id| TaskError::OwnerDied {
                task: id.task,
                function: String::from("<unknown>"),
                owner: owner.clone(),
                reason: reason.to_string(),
            });
        let Some(tasks) = tasks else {
            return;
        };
        let mut tasks: Vec<TaskId> = tasks.into_iter().collect();
        tasks.sort_unstable();
        for task in tasks {
            let Some(record) = self.owner.task(task) else {
                continue;
            };
            let error = TaskError::OwnerDied {
                task,
                function: record.spec.function.clone(),
                owner: owner.clone(),
                reason: reason.to_string(),
            };
            tracing::warn!(task = %task, %error, "a handed-over task's owner died");
            self.owner.fail(task, error);
        }
    }

    fn enqueue(&mut self, task: TaskId) {
        if self.is_lease(task) {
            // Out of its node's queue (the node drains, joined or was lost).
            return self.place_lease(task, 1);
        }
        let Some(record) = self.owner.task(task) else {
            // An actor's restart (the node's own task): it needs a worker of its own again.
            self.enqueue_attempt(task);
            return;
        };
        let demand = record.spec.resources.clone();
        let kind = record.spec.kind;
        if let TaskKind::ActorCall(actor) = kind {
            self.actors_to_pump.insert(actor);
            return;
        }
        match self.parked_for_group(task, &demand) {
            Ok(false) => {}
            Ok(true) => return,
            Err(reason) => return self.unschedulable(task, reason),
        }
        if let TaskKind::ActorCreation { .. } = kind {
            return self.enqueue_creation(task, demand);
        }
        let node = self.place(task, &demand);
        if self.nodes.submit(node, task, demand.clone()) == Admission::Infeasible {
            let message = format!(
                "the task is infeasible: it demands {demand}, the cluster has {} in total",
                self.nodes.total()
            );
            tracing::warn!(task = %self.owner.describe(task), "{message}; it waits until resources appear");
            if let Some(record) = self.owner.task_mut(task) {
                record.infeasible = Some(message);
            }
        }
    }

    fn on_message(
        &mut self,
        worker: WorkerId,
        msg: &ArchivedToNode,
        mapped: &mut IdMap<ObjectId, std::io::Result<ObjectBytes>>,
    ) {
        match msg {
            ArchivedToNode::Done { sent_us, ended } => {
                let sent_us = sent_us.to_native();
                let mut heard = false;
                for entry in ended.iter() {
                    let task = entry.task.to_native();
                    if let Some(times) = entry.times.as_ref() {
                        self.ran(worker, task, sent_us, times, &mut heard);
                    }
                    if !self.recalling.is_empty() {
                        // Started before it was asked back.
                        self.recalling.remove(&task);
                    }
                    self.on_done(worker, task, &entry.outcome, mapped);
                }
            }
            ArchivedToNode::HandOver(tasks) => {
                for handed in tasks.iter() {
                    let (task, returns) = (handed.task.to_native(), handed.num_returns.to_native());
                    self.handed_over(worker, task, &handed.function, returns);
                }
            }
            ArchivedToNode::Submit { spec, failed } => {
                let spec = rkyv::deserialize::<TaskSpec, rkyv::rancor::Error>(spec);
                let failed = rkyv::deserialize::<Option<TaskError>, rkyv::rancor::Error>(failed);
                match (spec, failed) {
                    (Ok(spec), Ok(failed)) => self.submit(spec, Some(worker), failed),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(worker, "undecodable task submission: {e}")
                    }
                }
            }
            ArchivedToNode::Put {
                id,
                value,
                nested,
                actors,
            } => {
                let id = id.to_native();
                self.store_made(worker, id, value, nested, mapped, |owner, slot, nested| {
                    owner.put(id, slot, Some(worker), nested)
                });
                self.hold_actors_in(id, actors);
            }
            ArchivedToNode::Yield {
                task,
                index,
                value,
                nested,
                actors,
            } => {
                let (task, index) = (task.to_native(), index.to_native());
                let id = ObjectId::new(task, index);
                self.store_made(worker, id, value, nested, mapped, |owner, slot, nested| {
                    owner.yielded(task, index, slot, nested)
                });
                self.hold_actors_in(id, actors);
            }
            ArchivedToNode::StreamNext { task, index } => {
                self.owner
                    .stream_claim(task.to_native(), index.to_native(), Some(worker));
            }
            ArchivedToNode::Get { ids } => {
                for id in ids.iter() {
                    self.restore_if_spilled(id.to_native());
                    self.owner.subscribe(id.to_native(), worker);
                }
            }
            ArchivedToNode::Blocked {
                depth,
                returned,
                awaiting,
                ..
            } => {
                let returned: Vec<TaskId> = returned.iter().map(|t| t.to_native()).collect();
                for &task in &returned {
                    self.owner.unstarted(task);
                }
                let awaiting: Vec<TaskId> = awaiting.iter().map(|t| t.to_native()).collect();
                self.nodes
                    .worker_blocked(worker, depth.to_native(), &returned, &awaiting);
            }
            ArchivedToNode::Unblocked { depth } => {
                self.nodes.worker_unblocked(worker, depth.to_native())
            }
            ArchivedToNode::Bounced(tasks) => {
                let tasks: Vec<TaskId> = tasks.iter().map(|t| t.to_native()).collect();
                for &task in &tasks {
                    self.owner.unstarted(task);
                }
                // Tasks asked back go where there is room; others wait on this node.
                let (recalled, bounced): (Vec<TaskId>, Vec<TaskId>) =
                    tasks.into_iter().partition(|t| self.recalling.remove(t));
                self.nodes.bounced(worker, &bounced);
                if !recalled.is_empty() {
                    self.nodes.recalled(worker, &recalled);
                    for task in recalled {
                        self.enqueue(task);
                    }
                }
            }
            ArchivedToNode::Hold(ids) => {
                let ids: Vec<ObjectId> = ids.iter().map(|i| i.to_native()).collect();
                self.owner.worker_holds(worker, &ids);
            }
            ArchivedToNode::HoldFor {
                holder,
                ids,
                actors,
            } => {
                let holder = holder.to_native();
                // For a live worker of this job only (a gone owner's holds would never go).
                let Some(life) = self.workers.get_mut(&holder) else {
                    tracing::debug!(worker, holder, "objects held for an owner that is gone");
                    return;
                };
                let first: Vec<ActorId> = (actors.iter().map(|a| a.to_native()))
                    .filter(|&actor| life.actors_held_for.hold(actor))
                    .collect();
                for actor in first {
                    self.actor_add_ref(actor);
                }
                let ids: Vec<ObjectId> = ids.iter().map(|i| i.to_native()).collect();
                self.owner.hold_for(holder, &ids);
            }
            ArchivedToNode::ReleaseHeld { ids, actors } => {
                let ids: Vec<ObjectId> = ids.iter().map(|i| i.to_native()).collect();
                self.owner.release_held(worker, &ids);
                let Some(life) = self.workers.get_mut(&worker) else {
                    return;
                };
                let last: Vec<ActorId> = (actors.iter().map(|a| a.to_native()))
                    .filter(|&actor| life.actors_held_for.release(actor))
                    .collect();
                for actor in last {
                    self.actor_release(actor);
                }
            }
            ArchivedToNode::Release(ids) => {
                let ids: Vec<ObjectId> = ids.iter().map(|i| i.to_native()).collect();
                self.owner.worker_released(worker, &ids);
            }
            ArchivedToNode::HoldActors(actors) => {
                self.worker_holds_actors(worker, actors.iter().map(|a| a.to_native()));
            }
            ArchivedToNode::ReleaseActors(actors) => {
                for actor in actors.iter().map(|a| a.to_native()) {
                    let held = self.workers.get_mut(&worker);
                    if held.is_some_and(|life| life.actors.remove(&actor)) {
                        self.actor_release(actor);
                    }
                }
            }
            ArchivedToNode::Cancel { id, force } => self.cancel(id.to_native(), *force),
            ArchivedToNode::CreateActor {
                spec,
                failed,
                config,
                answer,
            } => {
                let spec = rkyv::deserialize::<TaskSpec, rkyv::rancor::Error>(spec);
                let failed = rkyv::deserialize::<Option<TaskError>, rkyv::rancor::Error>(failed);
                let config = rkyv::deserialize::<ActorConfig, rkyv::rancor::Error>(config);
                match (spec, failed, config) {
                    (Ok(spec), Ok(failed), Ok(config)) => {
                        let answer = answer.as_ref().map(|a| a.to_native());
                        self.worker_creates_actor(worker, spec, failed, config, answer);
                    }
                    (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                        tracing::error!(worker, "undecodable actor creation: {e}")
                    }
                }
            }
            ArchivedToNode::LookupActor {
                name,
                namespace,
                answer,
            } => {
                let name = self.actor_name(name, namespace.as_ref().map(|n| n.as_str()));
                self.worker_looks_up(worker, name, answer.to_native());
            }
            ArchivedToNode::KillActor(actor) => self.kill_actor(actor.to_native()),
            ArchivedToNode::KillForeign { actor, answer } => {
                self.worker_kills_foreign(worker, actor.to_native(), answer.to_native())
            }
            ArchivedToNode::WhereActor { actor } => {
                let actor = actor.to_native();
                if !self.where_foreign(worker, actor) {
                    self.where_actor(worker, actor);
                }
            }
            ArchivedToNode::CreateGroup {
                bundles,
                strategy,
                answer,
            } => {
                let bundles = rkyv::deserialize::<Vec<Resources>, rkyv::rancor::Error>(bundles);
                let strategy =
                    rkyv::deserialize::<PlacementStrategy, rkyv::rancor::Error>(strategy);
                match (bundles, strategy) {
                    (Ok(bundles), Ok(strategy)) => {
                        self.worker_makes_group(worker, bundles, strategy, answer.to_native());
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(worker, "undecodable placement group: {e}")
                    }
                }
            }
            ArchivedToNode::GroupReady { group, answer } => {
                self.worker_awaits_group(worker, group.to_native(), answer.to_native());
            }
            ArchivedToNode::RemoveGroup(group) => self.remove_group(group.to_native()),
            ArchivedToNode::Lease { key, shape, .. } => {
                match rkyv::deserialize::<Resources, rkyv::rancor::Error>(shape) {
                    Ok(shape) => self.ask_lease(worker, key.to_native(), shape),
                    Err(e) => tracing::error!(worker, "undecodable lease ask: {e}"),
                }
            }
            ArchivedToNode::Unlease { key } => self.end_lease(worker, key.to_native()),
            ArchivedToNode::KillLeased { key } => self.kill_leased(worker, key.to_native()),
            ArchivedToNode::Owned { sent_us, events } => {
                self.owned_events(worker, sent_us.to_native(), events);
            }
            ArchivedToNode::Forward { .. } => match crate::proto::relay::route(msg) {
                crate::proto::relay::Route::Worker { to, frame, .. } => {
                    self.forward(worker, to, frame)
                }
                crate::proto::relay::Route::Refused(reason) => {
                    tracing::error!(worker, "a worker's frame for another is refused: {reason}");
                }
                crate::proto::relay::Route::Node => {}
            },
            ArchivedToNode::Fetch { id, .. } => {
                // A node's daemon pulls for its workers; the driver's workers lease none on
                // other nodes, so no value moves between two nodes for them.
                let id = id.to_native();
                let error = Some(format!("the driver pulls no values for its workers ({id})"));
                self.encode_to(worker, &ToWorker::Fetched { id, error });
            }
            ArchivedToNode::DropCopies { .. } | ArchivedToNode::KeptFor { .. } => {
                tracing::debug!(worker, "copies between nodes are for their daemons to keep");
            }
            ArchivedToNode::WatchWorker {
                worker: watched, ..
            } => {
                // Every worker of the job is the driver's to know, wherever it runs.
                self.watch_worker(worker, watched.to_native());
            }
            ArchivedToNode::Owes => {
                let life = self.workers.get_mut(&worker).filter(|l| l.retiring);
                if let Some(life) = life {
                    if life.reusable {
                        life.retiring = false;
                        self.nodes.adopt(node_of(worker), worker, worker, true);
                    } else {
                        // Asked again with the next tick.
                        self.owing_retired.insert(worker);
                    }
                } else {
                    tracing::debug!(worker, "an answer to its node's ask to exit");
                }
            }
            ArchivedToNode::Hello(_) => {
                tracing::warn!(worker, "second hello ignored");
            }
            ArchivedToNode::OwnerAt { .. } => {
                tracing::debug!(worker, "where a direct link's owner is, for its node");
            }
            // Read by the shell, which takes the frames of a worker's two ways in order.
            ArchivedToNode::Switch => {}
        }
    }

    /// Whether `worker` holds handles to actors (an idle one still owes them its calls).
    fn holds_actors(&self, worker: WorkerId) -> bool {
        self.workers
            .get(&worker)
            .is_some_and(|l| !l.actors.is_empty())
    }

    /// `worker` holds handles to `actors`: each counted once for it, until it lets go or ends.
    fn worker_holds_actors(&mut self, worker: WorkerId, actors: impl Iterator<Item = ActorId>) {
        let life = self.workers.entry(worker).or_default();
        let added: Vec<ActorId> = actors.filter(|actor| life.actors.insert(*actor)).collect();
        for actor in added {
            self.actor_add_ref(actor);
        }
    }

    /// Object `id`'s value contains handles to `actors` (as a worker reported them): they
    /// live while it does.
    fn hold_actors_in(
        &mut self,
        id: ObjectId,
        actors: &rkyv::vec::ArchivedVec<prism_graph::ArchivedActorId>,
    ) {
        if actors.is_empty() {
            return;
        }
        let actors: Vec<ActorId> = actors.iter().map(|a| a.to_native()).collect();
        self.contain_actors(id, &actors);
    }

    /// Object `id`'s value contains handles to `actors`: counted once, released when the
    /// object is freed.
    pub(crate) fn contain_actors(&mut self, id: ObjectId, actors: &[ActorId]) {
        if self.owner.contain_actors(id, actors) {
            for &actor in actors {
                self.actor_add_ref(actor);
            }
        }
    }

    /// A value `worker` made outside a task's end (a put, a generator's item) as object `id`:
    /// mapped (or located), handed to the owner by `keep`, and room made in the store.
    fn store_made(
        &mut self,
        worker: WorkerId,
        id: ObjectId,
        value: &ArchivedValue,
        nested: &rkyv::vec::ArchivedVec<prism_graph::ArchivedObjectId>,
        mapped: &mut IdMap<ObjectId, std::io::Result<ObjectBytes>>,
        keep: impl FnOnce(&mut Owner, Slot, Vec<ObjectId>),
    ) {
        let nested = nested.iter().map(|i| i.to_native()).collect();
        match self.value_from(worker, value, mapped) {
            Ok(slot) => {
                keep(&mut self.owner, slot, nested);
                if !self.make_room(0, None) {
                    tracing::warn!(worker, object = %id, "the object store is over capacity and nothing can be spilled");
                }
            }
            Err(e) => {
                tracing::error!(worker, object = %id, "cannot map an object a worker made: {e}")
            }
        }
    }

    /// `worker` reports how it ran `task` (in a message it wrote at `sent_us` by its clock):
    /// recorded in the task events. `heard`: whether the message's time was taken in already.
    fn ran(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        sent_us: u64,
        times: &prism_transport::ArchivedRunTimes,
        heard: &mut bool,
    ) {
        let (Some(now), true) = (self.now, self.owner.events.on()) else {
            return;
        };
        if !*heard {
            self.owner.events.heard(worker, now, sent_us);
            *heard = true;
        }
        let us = |v: &rkyv::rend::u64_le| v.to_native();
        let (args, run, store) = (us(&times.args_us), us(&times.run_us), us(&times.store_us));
        let took = [run, store, us(&times.ago_us)]
            .into_iter()
            .fold(args, u64::saturating_add);
        let ran = crate::proto::events::Ran {
            worker,
            pid: self.workers.get(&worker).and_then(|l| l.pid),
            start_us: sent_us.saturating_sub(took),
            args_us: args,
            run_us: run,
            store_us: store,
        };
        self.owner.events.ran(task, ran);
    }

    fn on_done(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        outcome: &prism_transport::ArchivedOutcome,
        mapped: &mut IdMap<ObjectId, std::io::Result<ObjectBytes>>,
    ) {
        if self.creations.contains_key(&task) {
            let error = match outcome {
                prism_transport::ArchivedOutcome::Returned { .. } => None,
                prism_transport::ArchivedOutcome::Failed(e) => Some(
                    rkyv::deserialize::<TaskError, rkyv::rancor::Error>(e).unwrap_or_else(|e| {
                        TaskError::InvalidValue {
                            task,
                            function: String::from("<actor constructor>"),
                            what: "the constructor's error".into(),
                            reason: e.to_string(),
                        }
                    }),
                ),
            };
            return self.creation_done(worker, task, error);
        }
        if let Some(TaskKind::ActorCall(actor)) = self.owner.task(task).map(|r| r.spec.kind) {
            self.on_task_done(worker, task, outcome, mapped);
            return self.call_done(actor, task);
        }
        self.on_task_done(worker, task, outcome, mapped);
    }

    fn on_task_done(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        outcome: &prism_transport::ArchivedOutcome,
        mapped: &mut IdMap<ObjectId, std::io::Result<ObjectBytes>>,
    ) {
        // The end of a task its owner handed over: final (the owner ran out its retries).
        let mut handed_end = false;
        if !self.handed.is_empty()
            && let Some(handed) = self.handed.get_mut(&worker)
        {
            handed_end = handed.remove(&task);
            if handed.is_empty() {
                self.handed.remove(&worker);
            }
        }
        self.nodes.task_done(worker, task);
        let stale = self
            .owner
            .task(task)
            .is_none_or(|record| record.worker != Some(worker));
        if stale {
            // A report for a task that was handed back or retried (or has ended meanwhile).
            return self.drop_stale_copies(node_of(worker), outcome);
        }
        let Some(record) = self.owner.task(task) else {
            return;
        };
        match outcome {
            prism_transport::ArchivedOutcome::Returned {
                values,
                nested,
                actors,
            } => {
                if values.len() != record.spec.num_returns as usize {
                    let error = TaskError::InvalidValue {
                        task,
                        function: record.spec.function.clone(),
                        what: "return values".into(),
                        reason: format!(
                            "the worker returned {} values, the caller expects {}",
                            values.len(),
                            record.spec.num_returns
                        ),
                    };
                    self.owner.fail(task, error);
                    return;
                }
                let values: std::io::Result<Vec<Slot>> = values
                    .iter()
                    .map(|v| self.value_from(worker, v, mapped))
                    .collect();
                match values {
                    Ok(values) => {
                        if !self.make_room(0, None) {
                            tracing::warn!(task = %task, "the object store is over capacity and nothing can be spilled");
                        }
                        let nested = nested
                            .iter()
                            .map(|ids| ids.iter().map(|i| i.to_native()).collect())
                            .collect();
                        let made = self.lineage_made(task, node_of(worker), &values);
                        for ready in self.owner.complete(task, values, nested) {
                            self.enqueue(ready);
                        }
                        for (i, held) in actors.iter().enumerate() {
                            self.hold_actors_in(ObjectId::new(task, i as u32), held);
                        }
                        if let Some(made) = made {
                            self.guard_lineage(made);
                        }
                    }
                    Err(e) => {
                        let error = TaskError::InvalidValue {
                            task,
                            function: self
                                .owner
                                .task(task)
                                .map(|r| r.spec.function.clone())
                                .unwrap_or_default(),
                            what: "return values".into(),
                            reason: format!("cannot map the shared-memory segment: {e}"),
                        };
                        self.owner.fail(task, error);
                    }
                }
            }
            prism_transport::ArchivedOutcome::Failed(error) => {
                let error = rkyv::deserialize::<TaskError, rkyv::rancor::Error>(error)
                    .unwrap_or_else(|e| TaskError::InvalidValue {
                        task,
                        function: record.spec.function.clone(),
                        what: "the task's error".into(),
                        reason: e.to_string(),
                    });
                if handed_end {
                    self.owner.fail(task, error);
                    return;
                }
                let retry = matches!(error, TaskError::Panicked { .. })
                    && record.spec.retry_exceptions
                    && record.panics < record.spec.max_retries;
                let missing = match &error {
                    TaskError::ArgumentMissing { object, .. }
                        if record.spec.kind == TaskKind::Normal
                            && record.missing < MISSING_RETRIES =>
                    {
                        Some(*object)
                    }
                    _ => None,
                };
                if let Some(object) = missing {
                    // Its copy there is gone: fetched again from another, or rebuilt. A copy
                    // rebuilt there since the task was sent is not what the worker missed.
                    tracing::warn!(task = %self.owner.describe(task), %error, "an argument is not in its node's store: the task runs again once it is");
                    if !self.owner.remade_since_sent(object, task) {
                        self.copy_gone(object, node_of(worker));
                    }
                    if let Some(record) = self.owner.task_mut(task) {
                        record.missing += 1;
                    }
                    if self.owner.rerun(task) {
                        self.enqueue(task);
                    }
                } else if retry {
                    tracing::warn!(task = %self.owner.describe(task), %error, "retrying after a panic");
                    if let Some(record) = self.owner.task_mut(task) {
                        record.panics += 1;
                    }
                    if self.owner.rerun(task) {
                        self.enqueue(task);
                    }
                } else {
                    self.owner.fail(task, error);
                }
            }
        }
    }

    fn cancel(&mut self, id: ObjectId, force: bool) {
        let task = id.task;
        if self.cancel_creation(task) {
            return;
        }
        let Some(record) = self.owner.task(task) else {
            return; // finished, failed or unknown: nothing to cancel
        };
        let function = record.spec.function.clone();
        let cancelled = TaskError::Cancelled {
            task,
            function: function.clone(),
        };
        if let Some(owner) = record.worker.filter(|w| self.handed_by(*w, task)) {
            // Its owner runs it: it cancels it as its own.
            return self.encode_to(owner, &ToWorker::CancelHanded { task, force });
        }
        match self.owner.task_state(task) {
            Some(TaskState::Waiting) => {
                self.owner.fail(task, cancelled);
            }
            Some(TaskState::Ready) => {
                let _ = self.nodes.locate_for_cancel(task);
                self.owner.fail(task, cancelled);
            }
            Some(TaskState::Running) => match self.nodes.locate_for_cancel(task) {
                Placement::OnWorker {
                    worker,
                    started: false,
                } => {
                    // Queued behind the worker's running task: cancelled now; the worker drops
                    // it before it would start (it reads messages between tasks).
                    self.encode_to(worker, &ToWorker::Cancel { task });
                    self.nodes.task_done(worker, task);
                    self.owner.fail(task, cancelled);
                }
                Placement::OnWorker {
                    worker,
                    started: true,
                } if force => {
                    if let Some(record) = self.owner.task_mut(task) {
                        record.force_cancelled = true;
                    }
                    tracing::info!(task = %task, function, worker, "force-cancel kills the worker");
                    self.kill_worker(worker);
                }
                _ => {
                    tracing::debug!(task = %task, function, "task is running; cancel without force has no effect");
                }
            },
            _ => {}
        }
    }

    /// Worker `watcher` watches worker `watched` ([`ToNode::WatchWorker`]): told when it is
    /// gone, or at once if it is not known.
    fn watch_worker(&mut self, watcher: WorkerId, watched: WorkerId) {
        if let Some(life) = self.workers.get_mut(&watched) {
            if !life.watchers.contains(&watcher) {
                life.watchers.push(watcher);
            }
            return;
        }
        let reason = format!("worker {watched} is not running");
        let gone = ToWorker::WorkerGone {
            worker: watched,
            reason,
        };
        self.encode_to(watcher, &gone);
    }

    fn maybe_dead(&mut self, worker: WorkerId) {
        let Some(life) = self.workers.get(&worker) else {
            return;
        };
        if !(life.eof && life.exit.is_some()) {
            return;
        }
        let link = self.workers.remove(&worker).unwrap_or_default();
        self.actions.push_back(Action::Forget { worker });
        if self.cluster.is_some() {
            self.binaries
                .worker_gone(node_of(worker), worker, link.connected);
            self.start_waiting_workers();
        }
        // The handles it held go with it.
        for actor in link
            .actors
            .into_iter()
            .chain(link.actors_held_for.into_held())
        {
            self.actor_release(actor);
        }
        let reason = link.exit.unwrap_or_default();
        for watcher in link.watchers {
            let reason = format!("worker {worker} exited: {reason}");
            self.encode_to(watcher, &ToWorker::WorkerGone { worker, reason });
        }
        self.outbox.remove(&worker);
        self.held.remove(&worker);
        self.owner_died(worker, link.pid, &reason);
        self.owner.worker_gone(worker);
        if link.connected && !self.shutting_down {
            self.drop_owned_by(worker);
        }
        let removed = self.nodes.remove_worker(worker);
        let (started, nested) = (removed.started, removed.nested);
        self.leases_of_gone(worker, &reason);
        self.forget_caller(worker);
        // Tasks that were queued on it went back to the node's queue: they never started. One
        // whose input is being rebuilt meanwhile leaves the queue and waits for it.
        for task in removed.requeued {
            if !self.is_lease(task) && !self.owner.unstarted(task) {
                let _ = self.nodes.locate_for_cancel(task);
            }
        }
        if self.shutting_down || link.retiring {
            tracing::debug!(worker, %reason, "worker process exited as asked");
            return;
        }
        if link.pooled {
            // Its node stops it once idle, and ends its leases itself; it ran none of the
            // driver's tasks.
            tracing::debug!(worker, %reason, "a worker of its node's own pool exited");
            return;
        }
        let lost_node = !self.nodes.get(node_of(worker)).is_some_and(|n| n.alive);
        // A node that left on purpose is no failure of its tasks.
        let drained = self.nodes.get(node_of(worker)).is_some_and(|n| n.draining);
        if !link.connected && (lost_node || drained) {
            // It died with its node, or its node refused it while letting the job go: not a
            // broken start (the node's tasks go elsewhere).
            tracing::warn!(worker, %reason, "worker process lost with its node before its handshake");
        } else if !link.connected {
            self.startup_failures += 1;
            tracing::error!(worker, %reason, "worker process exited before its handshake");
        } else {
            tracing::warn!(worker, %reason, "worker process died");
        }
        if self.actor_worker_died(worker, &reason) {
            // The actor's books handled its calls and its creation.
        } else if let Some(task) = started {
            self.task_lost(task, &reason, !drained);
        }
        // Tasks it ran on top of a blocked one died with it.
        for task in nested {
            self.task_lost(task, &reason, !drained);
        }
        if self.startup_failures >= MAX_STARTUP_FAILURES {
            self.fail_queued(&reason);
        }
    }

    /// A task died with its worker; `charged`: it counts against its retries (not when its
    /// node left on purpose).
    fn task_lost(&mut self, task: TaskId, reason: &str, charged: bool) {
        let Some(record) = self.owner.task_mut(task) else {
            return;
        };
        let function = record.spec.function.clone();
        if !charged && !record.force_cancelled {
            tracing::info!(task = %task, function, "running again a task of a node that left: {reason}");
            if self.owner.rerun(task) {
                self.enqueue(task);
            }
            return;
        }
        record.deaths += 1;
        if record.force_cancelled {
            self.owner
                .fail(task, TaskError::Cancelled { task, function });
        } else if record.deaths <= record.spec.max_retries {
            tracing::warn!(task = %task, function, attempt = record.deaths + 1, "retrying after worker death");
            if self.owner.rerun(task) {
                self.enqueue(task);
            }
        } else {
            let attempts = record.deaths;
            self.owner.fail(
                task,
                TaskError::WorkerDied {
                    task,
                    function,
                    attempts,
                    reason: reason.to_string(),
                },
            );
        }
    }

    fn fail_queued(&mut self, reason: &str) {
        for task in self.nodes.drain_queued(None) {
            if self.is_lease(task) {
                let reason = format!("worker processes exit before connecting: {reason}");
                self.refuse_lease(task, reason);
                continue;
            }
            let function = self
                .owner
                .task(task)
                .map(|r| r.spec.function.clone())
                .unwrap_or_default();
            self.owner.fail(
                task,
                TaskError::WorkerDied {
                    task,
                    function,
                    attempts: 0,
                    reason: format!(
                        "worker processes exit before connecting to the node: {reason}"
                    ),
                },
            );
        }
    }

    /// Schedules, encodes what became sendable, and hands frames to the writers.
    pub(crate) fn settle(&mut self) {
        if self.peers_changed {
            self.tell_peers();
        }
        // Tasks whose awaited inputs came (an actor's calls go in its own order).
        for task in std::mem::take(&mut self.owner.unparked) {
            let call = (self.owner.task(task))
                .is_some_and(|r| matches!(r.spec.kind, TaskKind::ActorCall(_)));
            if !call {
                self.enqueue(task);
            }
        }
        // Creations that failed before they ran (an input failed, or never came).
        for (task, error) in std::mem::take(&mut self.owner.failed_creations) {
            if let Some(actor) = self.creations.remove(&task) {
                self.stop_actor(actor, format!("its creation failed: {error}"));
            }
        }
        for actor in std::mem::take(&mut self.owner.released_actors) {
            self.actor_release(actor);
        }
        self.free_files();
        self.place_groups();
        self.run_schedulers();
        self.pump_actors();
        self.pump_foreign();
        self.send_stream_acks();
        let mut per_worker: IdMap<WorkerId, Vec<(ObjectId, ObjectValue)>> = IdMap::default();
        // A notice for a lost object rebuilds it and may bring a failure notice: loop.
        while !self.owner.notices.is_empty() {
            for notice in std::mem::take(&mut self.owner.notices) {
                let value = match notice.slot {
                    Slot::Ready(bytes) => ObjectValue::Ready(bytes.to_wire(notice.id)),
                    Slot::Remote(len) | Slot::Restoring(len)
                        if self.copy_reachable(notice.worker, notice.id) =>
                    {
                        ObjectValue::Ready(prism_transport::Value::Shared { id: notice.id, len })
                    }
                    Slot::Failed(e) => ObjectValue::Failed(e),
                    Slot::Remote(_) | Slot::Restoring(_) | Slot::Pending | Slot::Spilled(_) => {
                        continue;
                    }
                };
                per_worker
                    .entry(notice.worker)
                    .or_default()
                    .push((notice.id, value));
            }
        }
        for (worker, objects) in per_worker {
            self.encode_to(worker, &ToWorker::Objects(objects));
        }
        self.settle_remote();
        self.make_room_on_nodes();
        if self.nodes.changed() {
            // Rebuilds of objects lost while read were queued after the nodes scheduled.
            self.run_schedulers();
        }
        let connected = &self.workers;
        let sends = self
            .outbox
            .drain()
            .filter(|(w, _)| connected.get(w).is_some_and(|l| l.connected && !l.eof));
        self.actions
            .extend(sends.map(|(worker, frames)| Action::Send { worker, frames }));
    }

    /// Carries out what the nodes' schedulers decide now.
    fn run_schedulers(&mut self) {
        let startup_broken = self.startup_failures >= MAX_STARTUP_FAILURES;
        for (node, action) in self.nodes.schedule() {
            match action {
                Schedule::StartWorker if !startup_broken => self.start_worker(node),
                Schedule::StartWorker => {}
                Schedule::Dispatch { worker, tasks } => self.dispatch(worker, tasks),
                Schedule::Nest {
                    worker,
                    task,
                    depth,
                } => self.nest(worker, task, depth),
                Schedule::Ask(shape) => {
                    let request = HostRequest::Grant { shape };
                    self.actions.push_back(Action::Host { node, request });
                }
                Schedule::Return(resources) => {
                    let request = HostRequest::Return { resources };
                    self.actions.push_back(Action::Host { node, request });
                }
            }
        }
    }

    fn dispatch(&mut self, worker: WorkerId, tasks: Vec<TaskId>) {
        let mut batch = Vec::with_capacity(tasks.len());
        for task in tasks {
            if self.is_lease(task) {
                self.grant_lease(worker, task);
                continue;
            }
            if self.creations.contains_key(&task) {
                if let Some(life) = self.workers.get_mut(&worker).filter(|l| l.lent) {
                    // The actor's worker is the driver's for good.
                    life.lent = false;
                    let request = HostRequest::KeepWorker { worker };
                    let node = node_of(worker);
                    self.actions.push_back(Action::Host { node, request });
                }
                match self.creation_execute(task, worker) {
                    Some(exec) => batch.push(exec),
                    None => tracing::error!(task = %task, "actor creation without its call"),
                }
                continue;
            }
            let Some(args) = self.args_of(task) else {
                self.not_sent(worker, task);
                continue;
            };
            let Some(exec) = self.owner.execute(task, args) else {
                continue;
            };
            batch.push(exec);
            self.owner.started(task, worker);
        }
        if !batch.is_empty() {
            self.encode_to(worker, &ToWorker::Execute(batch));
        }
    }

    /// `task`, scheduled on `worker`, cannot go: an argument is being rebuilt. It waits for
    /// it out of the worker's hands (and of the owner's count of running tasks).
    fn not_sent(&mut self, worker: WorkerId, task: TaskId) {
        tracing::debug!(task = %task, worker, "a scheduled task waits for a rebuilt argument");
        self.nodes.task_done(worker, task);
        if self.owner.task_state(task) == Some(TaskState::Running) && self.owner.unstarted(task) {
            self.enqueue(task);
        }
    }

    /// Sends `task` to run on top of the worker's task blocked at `depth`.
    fn nest(&mut self, worker: WorkerId, task: TaskId, depth: u32) {
        if self.grant_lease(worker, task) {
            return;
        }
        let Some(args) = self.args_of(task) else {
            self.not_sent(worker, task);
            return;
        };
        let Some(exec) = self.owner.execute(task, args) else {
            self.nodes.task_done(worker, task);
            return;
        };
        self.owner.started(task, worker);
        self.encode_to(worker, &ToWorker::Nested { exec, depth });
    }

    fn encode_to(&mut self, worker: WorkerId, msg: &ToWorker) {
        if self.cluster.is_some() && self.hold_for_objects(worker, msg) {
            return;
        }
        let out = self.outbox.entry(worker).or_default();
        if let Err(e) = encode_frame(msg, out) {
            tracing::error!(worker, "cannot encode a message for the worker: {e}");
        }
    }
}
