//! The protocol between a node and its workers: the handshake ([`Hello`]), what a node tells a
//! worker ([`ToWorker`]) and what a worker tells its node ([`ToNode`]).

use prism_graph::{
    ActorId, Amount, ObjectId, PlacementStrategy, Resources, TaskError, TaskId, TaskKind, TaskSpec,
};

use crate::frame::Message;

/// The protocol version; a peer with another version is refused at the handshake. Version 5:
/// rkyv archives with 64-bit relative pointers (objects past 4 GiB), and the store's capacity
/// in [`ToHost::StartJob`]; 6: missing arguments; 7: a node's lease on a job
/// ([`HostEvent::Renew`]); 11: 64-bit worker numbers, run times; 12: run times inside
/// [`ToNode::Done`] (no frame of their own); 16: nodes grant their resources to jobs
/// ([`ToHost::Grant`]); 17: workers make and find actors and placement groups
/// ([`ToNode::CreateActor`], [`Answer`]), and objects hold the actors whose handles they
/// contain; 18: a spawn names the node to fetch the job's binary from
/// ([`ToHost::Spawn`]'s `binary_from`); 19: workers own the plain tasks they submit
/// ([`ToWorker::OwnTasks`], [`ToNode::Lease`], [`ToNode::Forward`]); 20: leases on other
/// nodes' workers, their frames passed between the two nodes' daemons ([`Purpose::Workers`],
/// [`PeerFrame`]); 21: the tasks workers own are reported by their node to the head
/// ([`ToControl::NodeEvents`], [`ToHost::StartJob`]'s `task_events`, the parent a
/// submission names in [`OwnedPhase::Submitted`]); holds taken for a worker are counted apart
/// from its own and ended by it ([`ToNode::ReleaseHeld`]); 22: a node leases workers of its
/// own to the job's worker owners ([`ToHost::Pool`], [`HostEvent::Relay`]'s `started`); 23:
/// the driver borrows the workers for its own tasks from that pool and gives them back
/// ([`ToHost::LeaseWorker`], [`ToHost::ReturnWorker`], [`ToHost::KeepWorker`],
/// [`FromHost::Lent`]); 24: the nodes' pools lease workers to one another's owners
/// ([`ToPeer::Lease`], [`PeerLease`]), knowing the job's other nodes ([`ToHost::Peers`]);
/// 25: large values move between the nodes of an owner and of its leased workers by pulls,
/// not inside frames: a result stays in the store of the node it was made on until the
/// owner's node pulls it, an argument is pulled by the leased worker's node and kept there
/// until its owner frees it ([`ToNode::Fetch`], [`ToWorker::Fetched`], [`ToNode::KeptFor`],
/// [`ToNode::DropCopies`], [`PeerLease::Drop`]); 26: a worker pushes its calls to an actor
/// to the actor's worker itself ([`ToNode::WhereActor`], [`ToWorker::ActorAt`]); 27: a task
/// says the CPUs it holds ([`Execute::cpu`], [`ToNode::Blocked`]'s `cpu`), so that a node
/// gives them back while it blocks without its driver hearing of it; a node asks an idle
/// worker to exit rather than killing it ([`ToWorker::ExitIfIdle`], [`ToNode::Owes`]); 28:
/// a node's pool tells the nodes that asked it what room it has for their asks
/// ([`PeerLease::Room`]), and they pass an ask there at once rather than after a wait; an
/// ask names a node to fetch the job's binary from ([`PeerLease::Ask`]'s `binary_from`); a
/// pushed task's run is numbered and its end names it ([`Execute::run`], [`TaskEnd::run`]);
/// 32: actors' names are per namespace ([`ActorConfig::namespace`],
/// [`ToNode::LookupActor`]'s `namespace`, [`Refusal`]'s names); 33: a joined job claims its
/// actors' names at the head ([`ToControl::ClaimName`], [`ToControl::ReleaseName`]), and a
/// refusal names the job that holds the name ([`Refusal::NameTaken`]'s `holder`,
/// [`Refusal::NameUnanswered`]); other jobs' actors are found at the head and called directly
/// ([`ToControl::FindName`], [`ToControl::WatchActor`], [`ToWorker::ActorAt`]'s `foreign`);
/// 34: detached actors, made and killed through the head ([`ActorConfig::detached`],
/// [`ToControl::CreateDetached`], [`ToControl::KillActor`], [`HeadOrder`]); 35: a
/// worker hands an owned task whose result is not known yet to the node instead of waiting
/// for it ([`ToNode::HandOver`]; its end follows as a [`ToNode::Done`]; `OwnerDied`); 36:
/// any job's actor killed through the head, by its driver on the head's order
/// ([`ToControl::KillActor`], formerly `KillDetached`; [`ToControl::KillNamed`],
/// [`ToControl::TakeOrders`], [`ToNode::KillForeign`], [`Refusal::NotKilled`]); 37: a
/// worker lends the objects it owns that a task pushed to it returns to a worker on its node
/// (the borrower protocol: [`ToWorker::Returned`]'s `lent`, [`ToWorker::Loans`],
/// [`ToNode::WatchWorker`], [`ToWorker::WorkerGone`]); 38: and to a worker on another node,
/// whose node pulls the values it reads from the lender's and keeps them till the lender
/// drops them; the two nodes watch each other's worker ([`ToNode::WatchWorker`]'s `at`,
/// [`PeerLease::Watch`]); 39: a worker's large results stay on the node that made them until
/// read, and the tasks that read them are leased there first ([`ToNode::Lease`]'s `near`,
/// [`Execute::pull_from`]); 40: that node holds such an ask a while for room
/// ([`PeerLease::Ask`]'s `near`); 41: the segments a dead worker owned on its node go, but for
/// those the driver took over ([`ToHost::DropOwnedBy`]); 42: a value pulled to its owner's
/// node is no more kept where it was made, but for a reader's copy there
/// ([`PeerLease::Taken`]).
pub const PROTOCOL_VERSION: u32 = 42;

/// How many awaited tasks a worker names when it blocks ([`ToNode::Blocked`]).
pub const MAX_AWAITING: usize = 4096;

/// The first message of a worker: who it is and what it was built from.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// Fingerprint of the sender's binary.
    pub fingerprint: u64,
    /// The worker number the node gave the process when it started it.
    pub worker: u64,
    /// The process id.
    pub pid: u32,
    /// Where the worker's direct endpoint takes links from owners on other nodes
    /// ([`crate::direct`]), when it has one (a node daemon's worker in a joined cluster).
    pub direct: Option<String>,
}

/// A secret carried in a message (a private key): never printed.
#[derive(Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::fmt::Debug for ArchivedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The first frame on a direct link ([`crate::direct`]), from the side that connected: the
/// owner whose frames follow, and its job (a worker takes links of its own job alone).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DirectHello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The job.
    pub job: String,
    /// The worker that connected (the owner of the tasks it pushes).
    pub owner: u64,
    /// Where its node serves its peers (where its objects are pulled from).
    pub node: String,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: peer speaks {peer}, this side speaks {ours}")]
    Protocol {
        /// The peer's version.
        peer: u32,
        /// Ours.
        ours: u32,
    },
    /// The peer runs another build of the job's binary.
    #[error(
        "binary fingerprint mismatch: peer {peer:016x}, this side {ours:016x}; the worker runs another build of the program"
    )]
    Fingerprint {
        /// The peer's fingerprint.
        peer: u64,
        /// Ours.
        ours: u64,
    },
    /// The first frame was not a hello.
    #[error("expected a hello as the first message")]
    NotHello,
}

impl ArchivedHello {
    /// Checks the peer's protocol version and binary fingerprint against ours.
    pub fn check(&self, fingerprint: u64) -> Result<(), HandshakeError> {
        let peer = self.protocol.to_native();
        if peer != PROTOCOL_VERSION {
            return Err(HandshakeError::Protocol {
                peer,
                ours: PROTOCOL_VERSION,
            });
        }
        let peer = self.fingerprint.to_native();
        if peer != fingerprint {
            return Err(HandshakeError::Fingerprint {
                peer,
                ours: fingerprint,
            });
        }
        Ok(())
    }
}

/// A value on the wire: its archived bytes inline, or the length of the shared-memory segment
/// that holds them on this node (named by the object's id).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Value {
    /// The archived bytes.
    Inline(Vec<u8>),
    /// In the node's shared-memory store.
    Shared {
        /// The object whose segment holds the bytes.
        id: ObjectId,
        /// The segment's length in bytes.
        len: u64,
    },
}

/// How a task ended on its worker.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Outcome {
    /// The return values, one per return object.
    Returned {
        /// The values.
        values: Vec<Value>,
        /// For each value, the objects whose references it contains (they live as long as it).
        nested: Vec<Vec<ObjectId>>,
        /// For each value, the actors whose handles it contains (they live as long as it);
        /// shorter than `values` when the values past its end contain none.
        actors: Vec<Vec<ActorId>>,
    },
    /// The task failed.
    Failed(TaskError),
}

/// The value of an object as a node hands it to a worker.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ObjectValue {
    /// The value.
    Ready(Value),
    /// The task making it failed.
    Failed(TaskError),
}

/// A task handed to a worker, its reference arguments already resolved to values.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Execute {
    /// The task.
    pub task: TaskId,
    /// The registry key of the function.
    pub function: String,
    /// The signature hash the caller expects.
    pub fn_hash: u64,
    /// The argument values, in order.
    pub args: Vec<Value>,
    /// How many return objects the caller expects.
    pub num_returns: u32,
    /// A function call, an actor's creation or a method call.
    pub kind: TaskKind,
    /// For a streaming generator: how this run yields its items.
    pub stream: Option<StreamRun>,
    /// The CPUs the task holds while it runs (none for an actor's calls: the actor holds
    /// its own), named again when it blocks ([`ToNode::Blocked`]).
    pub cpu: Amount,
    /// Which run of the task this is, as the worker that owns it counts them (0: its owner
    /// does not count them, as the driver): the run's end names it again
    /// ([`TaskEnd::run`]), so that the owner knows an end of an earlier run from the one it
    /// waits for.
    pub run: u32,
    /// Arguments in shared memory ([`Value::Shared`]) that are not in the store of the owner's
    /// node but of another's (a value a task left where it ran), and the peer address of
    /// that node: the worker's node pulls each from there ([`ToNode::Fetch`]) and keeps the
    /// copy until the owner drops the object. Empty for the driver's tasks.
    pub pull_from: Vec<(ObjectId, String)>,
}

/// How a run of a streaming generator yields its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StreamRun {
    /// At most this many items made and not taken by the consumer (0: no limit): the run
    /// pauses after an item that reaches it until [`ToWorker::StreamAck`] says more were taken.
    pub window: u32,
    /// Items an earlier run already delivered: made again but not sent (a retry).
    pub skip: u32,
    /// Items the consumer has taken so far.
    pub consumed: u32,
}

/// What a node tells a worker.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToWorker {
    /// The handshake was accepted.
    Welcome,
    /// The first frame a node daemon in a joined cluster sends a worker it started, before
    /// the worker's [`Hello`]: the node's identity under the cluster's CA, for the worker's
    /// direct endpoint ([`crate::direct`], bound on the node's address), and the job's name
    /// (links of other jobs are refused).
    Endpoint {
        /// The node's identity as PEM ([`crate::tls::Identity::to_pem`]).
        identity: Secret,
        /// The job.
        job: String,
        /// Where the node serves its peers (the owners this worker links to pull from there).
        node: String,
    },
    /// Whom this worker of the node's pool is leased to now, among owners on other nodes
    /// whose pushes come over direct links (`None`: nobody): it runs their pushes only under
    /// such a lease, as the node did when it relayed them.
    Lent {
        /// The owner (`None`: the lease ended).
        owner: Option<u64>,
    },
    /// From the driver, through the node: the driver's frames come on its direct link from
    /// now on, a link it opened from its endpoint at `from` (the worker takes frames on a link
    /// that claims to be the driver's only from there). Frames that came on that link before
    /// this wait for it; the worker's own frames for the driver may take that link too
    /// ([`ToNode::Switch`]).
    Switch {
        /// The driver's direct endpoint.
        from: String,
    },
    /// Run these tasks, in order.
    Execute(Vec<Execute>),
    /// Run this task on top of the task blocked in `get` at `depth`, which waits for its
    /// result. A worker no longer blocked there, or not waiting for this task, hands it back
    /// with [`ToNode::Bounced`].
    Nested {
        /// The task.
        exec: Execute,
        /// The depth of the blocked task it runs on (0: the worker's own task).
        depth: u32,
    },
    /// Values of objects the worker asked for with [`ToNode::Get`], or (from another worker,
    /// relayed) with [`ToWorker::Loans`]' `ask`.
    Objects(Vec<(ObjectId, ObjectValue)>),
    /// Borrower to owner (another worker of the job on its node, relayed): about objects the
    /// owner lent it ([`ToWorker::Returned`]'s `lent`). Each count is of the loans of that
    /// object the borrower received.
    Loans {
        /// The borrower's owner number.
        from: u64,
        /// Send their values ([`ToWorker::Objects`]), now or once known.
        ask: Vec<ObjectId>,
        /// The borrower is done with them.
        release: Vec<(ObjectId, u32)>,
        /// A reference to them leaves the borrower: hand them to the node, and have it hold
        /// each for the borrower ([`ToNode::HoldFor`]) in place of the loans, which end.
        promote: Vec<(ObjectId, u32)>,
    },
    /// Worker `worker` of the job, which this one watches ([`ToNode::WatchWorker`]), is gone
    /// (or was never known to the node).
    WorkerGone {
        /// The worker.
        worker: u64,
        /// What the node saw of it.
        reason: String,
    },
    /// Drop this task if it has not started.
    Cancel {
        /// The task.
        task: TaskId,
    },
    /// Cancel a task this worker handed over to the node ([`ToNode::HandOver`]) as its own.
    CancelHanded {
        /// The task.
        task: TaskId,
        /// Kill the worker running it.
        force: bool,
    },
    /// Hand these tasks back with [`ToNode::Bounced`] if they have not started (queued work
    /// moves to a node with room).
    Recall {
        /// The tasks.
        tasks: Vec<TaskId>,
    },
    /// The consumer of a streaming generator's items has taken `consumed` of them (the run
    /// may go on to `consumed + window`; `u32::MAX`: the consumer is gone, run freely).
    StreamAck {
        /// The generator task.
        task: TaskId,
        /// Items taken.
        consumed: u32,
    },
    /// Exit now.
    Shutdown,
    /// The node would stop this idle worker: exit unless it still owes work (tasks it owns
    /// are under way, whose ends come to it), else say so ([`ToNode::Owes`]) and stay. Ray's
    /// raylet asks an idle worker the same before it stops it.
    ExitIfIdle,
    /// From now on this worker owns the plain tasks it submits: it keeps their specs and
    /// results, asks the node for leases ([`ToNode::Lease`]) and pushes the tasks to the
    /// leased workers itself ([`ToNode::Forward`]).
    OwnTasks,
    /// The lease asked for as `key` is granted: `worker` runs the owner's tasks of the lease's
    /// shape until it is given back ([`ToNode::Unlease`]). When `worker` is the owner itself
    /// (it is blocked and no other worker can be had), it runs them on top of its blocked task.
    Leased {
        /// The lease's key.
        key: TaskId,
        /// The leased worker.
        worker: u64,
        /// Where the leased worker's node serves its peers, when it is not the owner's node:
        /// the owner's frames for it name it ([`ToNode::Forward`]'s `at`), and values are
        /// pulled from there.
        at: Option<String>,
        /// The leased worker's direct endpoint, when it is on another node and has one: the
        /// owner's frames for it go there on a link of its own ([`crate::direct`]) instead.
        direct: Option<String>,
    },
    /// The lease `key` ended without being given back (its worker died or was lost): the
    /// tasks pushed to it that did not come back did not finish.
    LeaseEnded {
        /// The lease's key.
        key: TaskId,
        /// Why.
        reason: String,
    },
    /// Run these tasks, in order: pushed by their owner (the worker whose number their ids
    /// carry) under a lease on this worker. Their ends go back to the owner
    /// ([`ToWorker::Returned`]); a blocked worker hands them back ([`ToWorker::Handback`]).
    Push(Vec<Execute>),
    /// The lease asked for as `key` waits: the owner's node has no room for its shape while
    /// other nodes have room for `room` such tasks, and the owner's runs `home` at once. The
    /// owner hands the node its share of its queued tasks of the shape (`room / (room +
    /// home)` of them, the last queued; [`ToNode::Submit`]), which places them where there
    /// is room (until owners push to workers on other nodes themselves), and asks again for
    /// the rest.
    Spill {
        /// The ask's key.
        key: TaskId,
        /// How many such tasks the other nodes could start now.
        room: u32,
        /// How many such tasks the owner's node runs at once.
        home: u32,
    },
    /// Tasks this worker owns ended on the worker they were pushed to.
    Returned {
        /// When the worker that ran them wrote this, by its host's monotonic clock (0 without
        /// run times).
        sent_us: u64,
        /// The ends.
        ends: Vec<TaskEnd>,
        /// The references inside the ends' values to objects the worker that ran them owns
        /// and lends this one, once per reference (the rest the node holds for this worker:
        /// [`ToNode::HoldFor`]). The borrower asks the owner for their values and tells it
        /// when it lets go ([`ToWorker::Loans`]).
        lent: Vec<ObjectId>,
    },
    /// Tasks this worker owns were handed back unrun by the worker they were pushed to (it
    /// blocked, or was asked to give them back).
    Handback(Vec<TaskId>),
    /// The node pulled object `id` into its store ([`ToNode::Fetch`]), or could not (`error`
    /// says why).
    Fetched {
        /// The object.
        id: ObjectId,
        /// Why it is not here, when it is not.
        error: Option<String>,
    },
    /// Where actor `actor` runs, as the worker asked ([`ToNode::WhereActor`]) and again each
    /// time that changes: the worker pushes its calls to the actor's worker itself.
    ActorAt {
        /// The actor.
        actor: ActorId,
        /// Its class, for the errors of its calls.
        class: String,
        /// How many times a call in flight when the actor's process dies runs again.
        max_task_retries: u32,
        /// Where it is.
        place: ActorPlace,
        /// Its id in its own job, when that is another job than the worker's (`actor` is
        /// then this job's alias for it): the calls name that id, and carry their
        /// arguments' values (the actor's worker cannot read this job's objects).
        foreign: Option<ActorId>,
    },
}

/// Where an actor is, for the workers that call it ([`ToWorker::ActorAt`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ActorPlace {
    /// Running on `worker`, of the node serving its peers at `at` when that is not the
    /// caller's node: calls go there, in the order they are made ([`ToWorker::Push`]).
    Alive {
        /// The actor's worker.
        worker: u64,
        /// Its node's peer address, when it is another node than the caller's.
        at: Option<String>,
        /// The worker's direct endpoint, when it is on another node and has one: the calls go
        /// there on a link of the caller's ([`crate::direct`]).
        direct: Option<String>,
    },
    /// Its process died and it restarts: the calls pushed to it and not ended run again (up
    /// to `max_task_retries`) once it is alive again, or fail.
    Restarting {
        /// How its process ended.
        reason: String,
    },
    /// Gone for good: its calls fail naming this reason.
    Dead(String),
    /// On a node the caller's node cannot reach: the calls go to the job's node, which
    /// sends them on ([`ToNode::Submit`]).
    Unreachable,
}

/// What a worker tells its node.
// Messages are built once and archived at once; the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToNode {
    /// The handshake.
    Hello(Hello),
    /// Tasks that ended, in the order they ended.
    Done {
        /// When the worker wrote this, in microseconds by its host's monotonic clock (the
        /// node lines the worker's run times up with its own clock by it; 0 without times).
        sent_us: u64,
        /// The tasks.
        ended: Vec<TaskEnd>,
    },
    /// Tasks this worker owns, whose results are not known yet, go to the node, which owns
    /// them from now on (a reference to a result leaves this worker): the node counts each as
    /// running on this worker, its return values held by it, and this worker sends its end
    /// in a [`ToNode::Done`] once it knows it. Should this worker die first, the tasks fail
    /// with `OwnerDied`.
    HandOver(Vec<HandedTask>),
    /// Submit a task owned by this worker's process (a nested task); `failed` when the call
    /// could not even be built (bad options, an argument that cannot be archived).
    Submit {
        /// The task.
        spec: TaskSpec,
        /// Why it fails without running.
        failed: Option<TaskError>,
    },
    /// Store a value made by `put` in the worker.
    Put {
        /// Its id.
        id: ObjectId,
        /// Its value (a shared segment the worker wrote, or inline bytes).
        value: Value,
        /// The objects whose references it contains.
        nested: Vec<ObjectId>,
        /// The actors whose handles it contains.
        actors: Vec<ActorId>,
    },
    /// Send these objects' values when they are ready.
    Get {
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// The running task waits in `get`: give its CPU back. Tasks the worker had queued and will
    /// not run are handed back.
    Blocked {
        /// Which of the worker's running tasks blocked: 0 is the task it was sent, each task
        /// it runs on top of a blocked one ([`ToWorker::Nested`]) one more.
        depth: u32,
        /// Queued tasks handed back.
        returned: Vec<TaskId>,
        /// The tasks whose results it waits for (at most [`MAX_AWAITING`]): the node may run
        /// them on this worker, on top of the blocked task.
        awaiting: Vec<TaskId>,
        /// The CPUs the blocked task holds ([`Execute::cpu`]), which its node may lend out
        /// while it waits.
        cpu: Amount,
    },
    /// The running task at `depth` resumes.
    Unblocked {
        /// As in [`ToNode::Blocked`].
        depth: u32,
    },
    /// The answer to [`ToWorker::ExitIfIdle`] of a worker that still owes work: it stays.
    Owes,
    /// Tell this worker ([`ToWorker::WorkerGone`]) when worker `worker` of the job exits (at
    /// once if it is not running): a borrower watches its lender, a lender its borrowers. For
    /// the node, which asks the watched worker's node when that is another
    /// ([`PeerLease::Watch`]).
    WatchWorker {
        /// The worker watched.
        worker: u64,
        /// The peer address of the watched worker's node when it is not this worker's
        /// (`None`: this node's, or one the node cannot reach, whose workers the driver
        /// watches).
        at: Option<String>,
    },
    /// For the driver, from a worker it linked to directly ([`ToWorker::Switch`]): the
    /// worker's frames for the driver come the other way from now on (through the node after
    /// this frame came on the direct link, on the direct link after it came through the
    /// node). The driver takes frames on the new way only after this one, so their order is
    /// the order they were sent in.
    Switch,
    /// Owner `owner` (a worker of another node) opened a direct link to this worker: its node
    /// serves its peers at `node`, where arguments it pushes by name are pulled from (what
    /// the node learns from the frames it relays when pushes come that way).
    OwnerAt {
        /// The owner.
        owner: u64,
        /// Its node's peer address.
        node: String,
    },
    /// Tasks received while blocked, handed back unrun.
    Bounced(Vec<TaskId>),
    /// The worker dropped its last reference to these objects.
    Release(Vec<ObjectId>),
    /// The worker holds references to these objects it did not create (read from a value).
    Hold(Vec<ObjectId>),
    /// Worker `holder`, the owner of a task that ran here, holds these objects and actor
    /// handles from now on: those inside the task's values, whose end goes to it next. Sent
    /// before the end and before this worker's own releases of them, so that they stay alive
    /// between. Each one listed is one hold, counted apart from `holder`'s own, which it
    /// ends with [`ToNode::ReleaseHeld`].
    HoldFor {
        /// The task's owner.
        holder: u64,
        /// The objects its values refer to, once per reference.
        ids: Vec<ObjectId>,
        /// The actors whose handles its values hold, once per handle.
        actors: Vec<ActorId>,
    },
    /// The worker lets go of holds another worker took for it ([`ToNode::HoldFor`]): one
    /// each per id listed. A release may reach the node before the hold it ends (the two
    /// come on different links); the hold then ends as it comes.
    ReleaseHeld {
        /// The objects.
        ids: Vec<ObjectId>,
        /// The actors.
        actors: Vec<ActorId>,
    },
    /// The worker holds handles to these actors (read from a value): they live while it does.
    HoldActors(Vec<ActorId>),
    /// The worker dropped its last handle to these actors.
    ReleaseActors(Vec<ActorId>),
    /// A streaming generator this worker runs made item `index` (object `(task, index)`).
    Yield {
        /// The generator task.
        task: TaskId,
        /// The item's number, from 1.
        index: u32,
        /// Its value.
        value: Value,
        /// The objects whose references it contains.
        nested: Vec<ObjectId>,
        /// The actors whose handles it contains.
        actors: Vec<ActorId>,
    },
    /// This worker takes item `index` of a stream it consumes (a generator it submitted): it
    /// holds the item's reference from now on, whether the item exists yet or not. (A stream
    /// is dropped when its end object, the generator's return object, is released.)
    StreamNext {
        /// The generator task.
        task: TaskId,
        /// The item's number, from 1.
        index: u32,
    },
    /// Cancel a task this worker submitted.
    Cancel {
        /// A return object of the task.
        id: ObjectId,
        /// Kill the worker running it.
        force: bool,
    },
    /// Create an actor (`spec` is its creation task, `failed` as in [`ToNode::Submit`]). A
    /// named one is answered in object `answer` ([`Answer::Actor`], or the name is taken);
    /// the worker holds a handle to the actor from now on.
    CreateActor {
        /// The creation task.
        spec: TaskSpec,
        /// Why it fails without running.
        failed: Option<TaskError>,
        /// The actor's class, name and restart policy.
        config: ActorConfig,
        /// The object to answer in (a named actor's creation).
        answer: Option<ObjectId>,
    },
    /// Find the actor named `name`: answered in object `answer` ([`Answer::Actor`], the
    /// worker holding a handle to it from then on, or [`Refusal::NoSuchActor`]).
    LookupActor {
        /// The actor's name.
        name: String,
        /// The namespace it is named in (`None`: its job's).
        namespace: Option<String>,
        /// The object to answer in.
        answer: ObjectId,
    },
    /// Kill this actor's process; it is not restarted.
    KillActor(ActorId),
    /// Kill another job's actor (this job's alias for it) through the head, which has its
    /// driver kill it: answered in object `answer` ([`Answer::Ready`] once killed, else
    /// [`Answer::Refused`] with [`Refusal::NotKilled`]).
    KillForeign {
        /// The alias.
        actor: ActorId,
        /// The object to answer in.
        answer: ObjectId,
    },
    /// Make a placement group: its number is answered in object `answer` ([`Answer::Group`]).
    CreateGroup {
        /// Each bundle's resources.
        bundles: Vec<Resources>,
        /// How the bundles spread over nodes.
        strategy: PlacementStrategy,
        /// The object to answer in.
        answer: ObjectId,
    },
    /// Answer in object `answer` once placement group `group` is reserved ([`Answer::Ready`],
    /// or [`Refusal::GroupGone`] when it was removed).
    GroupReady {
        /// The group's number.
        group: u64,
        /// The object to answer in.
        answer: ObjectId,
    },
    /// Remove placement group `group`.
    RemoveGroup(u64),
    /// Asks for a lease on a worker of `shape` on this node, for tasks this worker owns (see
    /// [`ToWorker::OwnTasks`]); answered with [`ToWorker::Leased`].
    Lease {
        /// The lease's key: an id of the owner's that no task of its has (a blocked owner
        /// that names it as awaited may be leased itself).
        key: TaskId,
        /// The resources each task of the lease holds.
        shape: Resources,
        /// The peer address of the node whose store holds the most of the arguments the
        /// lease is first for, when that is another node: the ask goes there first (Ray's
        /// leasing by locality), and is decided here if that node refuses it.
        near: Option<String>,
    },
    /// What happened to tasks this worker owns, for the node's task events (sent only when
    /// the node keeps them, in batches).
    Owned {
        /// When this was written, by the host's monotonic clock.
        sent_us: u64,
        /// The events, in order.
        events: Vec<OwnedEvent>,
    },
    /// Gives lease `key` back (or withdraws the ask, if it was not granted yet).
    Unlease {
        /// The lease's key.
        key: TaskId,
    },
    /// Kill the worker of lease `key`: a task pushed to it is cancelled by force while it
    /// runs (the owner hears [`ToWorker::LeaseEnded`] once the worker is gone).
    KillLeased {
        /// The lease's key.
        key: TaskId,
    },
    /// Pull object `id` (`len` bytes) into this node's store; answered with
    /// [`ToWorker::Fetched`].
    Fetch {
        /// The object.
        id: ObjectId,
        /// Its archived length.
        len: u64,
        /// `Some`: the node whose daemon serves its peers at this address has it: a value
        /// a task this worker owns left there (it ran on a worker leased there), which that
        /// node drops once this node has it ([`PeerLease::Drop`]); or, for an object of
        /// another owner, an argument of a task pushed here ([`Execute::pull_from`]), kept
        /// here until its owner drops it. `None`: an argument of a task pushed here by an
        /// owner on another node, pulled from that owner's node and kept here until the owner
        /// drops it.
        from: Option<String>,
    },
    /// Values of tasks pushed here by owners on other nodes, left in this node's store for
    /// the owners' nodes to pull (each id carries its owner's number): they go when the
    /// owner's node says so ([`PeerLease::Drop`]), or the owner dies or leaves.
    KeptFor {
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// The worker freed these objects of its own, whose copies the node at `at` (a peer
    /// address) pulled for tasks the worker pushed there: they go ([`PeerLease::Drop`]).
    DropCopies {
        /// The node holding the copies.
        at: String,
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// Where does actor `actor` run? Answered with [`ToWorker::ActorAt`] once it is alive (or
    /// gone), and again whenever that changes: the worker then pushes its calls to it.
    WhereActor {
        /// The actor.
        actor: ActorId,
    },
    /// A frame for another worker of the job on this node (tasks pushed to a leased worker,
    /// the ends of tasks for their owner), relayed by the node as it is.
    Forward {
        /// The worker it is for.
        to: u64,
        /// Its node's peer address when it is on another node (the owner's lease said so:
        /// [`ToWorker::Leased`]); `None`: this node, or the node the worker's tasks came from.
        at: Option<String>,
        /// One whole [`ToWorker`] frame: [`ToWorker::Execute`], [`ToWorker::Returned`],
        /// [`ToWorker::Handback`] or [`ToWorker::Cancel`].
        frame: Vec<u8>,
    },
}

/// One change of a task a worker owns ([`ToNode::Owned`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OwnedEvent {
    /// The task.
    pub task: TaskId,
    /// When, by the host's monotonic clock.
    pub at_us: u64,
    /// What happened.
    pub phase: OwnedPhase,
}

/// What happened to a task a worker owns.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OwnedPhase {
    /// Submitted (by the worker's running task): it waits for its arguments, or (`ready`) for
    /// a worker.
    Submitted {
        /// Its function.
        function: String,
        /// Whether its arguments are known.
        ready: bool,
        /// The task the worker ran when it submitted it (none: not known).
        parent: Option<TaskId>,
        /// The actor it calls, when it is an actor's call.
        actor: Option<ActorId>,
    },
    /// Its arguments are known: it waits for a worker.
    Ready,
    /// Pushed to `worker`.
    Sent {
        /// The leased worker.
        worker: u64,
    },
    /// It ran on `worker`: started at `start_us` by the host's monotonic clock.
    Ran {
        /// The worker that ran it.
        worker: u64,
        /// When the run started.
        start_us: u64,
        /// How the run spent its time.
        times: RunTimes,
    },
    /// It returned its values.
    Finished,
    /// It failed (why); it may still run again ([`OwnedPhase::Again`]).
    Failed(String),
    /// It runs again (a retry): it waits for a worker.
    Again,
}

/// What the node needs to know of an actor besides its creation task.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ActorConfig {
    /// The actor's class (its type's path).
    pub class: String,
    /// Its name, if it has one (then it can be looked up, and lives without handles).
    pub name: Option<String>,
    /// The namespace its name is in (`None`: its job's).
    pub namespace: Option<String>,
    /// With a name that is taken: find that actor instead of failing.
    pub get_if_exists: bool,
    /// How often its process is restarted after it died.
    pub max_restarts: u32,
    /// How often a call in flight when it died is retried after a restart.
    pub max_task_retries: u32,
    /// It outlives its creator's job (Ray's `lifetime="detached"`): it lives, with or
    /// without handles, until it is killed or its cluster stops.
    pub detached: bool,
}

/// The value of the object a worker's request is answered in ([`ToNode::LookupActor`] and
/// the others that name an `answer`).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Answer {
    /// The actor created or found, and its class.
    Actor {
        /// The actor.
        actor: ActorId,
        /// Its class.
        class: String,
    },
    /// The placement group made: its number.
    Group(u64),
    /// Done: the placement group is reserved, the actor killed.
    Ready,
    /// The request failed.
    Refused(Refusal),
}

/// Why a worker's request failed ([`Answer::Refused`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Refusal {
    /// Another live actor has this name in this namespace.
    NameTaken {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
        /// The job whose actor has it (`None`: the asker's own job).
        holder: Option<String>,
    },
    /// The cluster's head could not be asked about the name (to claim it, or find it).
    NameUnanswered {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// No live actor has this name in this namespace.
    NoSuchActor {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// The placement group was removed (why).
    GroupGone(String),
    /// A detached actor could not be made.
    Detached {
        /// Its class.
        class: String,
        /// Why.
        reason: String,
    },
    /// Another job's actor could not be killed.
    NotKilled {
        /// The actor's job.
        job: String,
        /// The actor, as its job numbers it.
        actor: ActorId,
        /// Why.
        reason: String,
    },
}

/// A task a worker owns, handed to the node before it ended ([`ToNode::HandOver`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HandedTask {
    /// The task.
    pub task: TaskId,
    /// Its function.
    pub function: String,
    /// How many values it returns.
    pub num_returns: u32,
}

/// A task that ended on a worker.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TaskEnd {
    /// The task.
    pub task: TaskId,
    /// Its values or its error.
    pub outcome: Outcome,
    /// How its run spent its time (none: the node keeps no task events, or the task was
    /// cancelled before it ran).
    pub times: Option<RunTimes>,
    /// The run that ended ([`Execute::run`]; 0 where the owner does not count them).
    pub run: u32,
}

/// How a task's run spent its time, as its worker measured it, in microseconds; `ago` is how
/// long before the message was written ([`ToNode::Done`]'s `sent_us`) the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RunTimes {
    /// Mapping or copying its arguments.
    pub args_us: u64,
    /// Running the function or method.
    pub run_us: u64,
    /// Storing its results.
    pub store_us: u64,
    /// Since the end of the run.
    pub ago_us: u64,
}

impl Message for ToWorker {
    const NAME: &'static str = "ToWorker";
}

impl Message for DirectHello {
    const NAME: &'static str = "DirectHello";
}

impl Message for ToNode {
    const NAME: &'static str = "ToNode";
}

/// The first message on a connection between hosts, after mutual TLS: who the sender is and
/// what it speaks.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HostHello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The sender's name (a node's or a driver's), for logs and errors.
    pub name: String,
    /// For job traffic: the fingerprint of the job's binary, which the receiver must run.
    pub job_fingerprint: Option<u64>,
    /// The platform the sender's binaries are built for ([`platform`]).
    pub platform: String,
    /// What the connection is for.
    pub purpose: Purpose,
}

impl HostHello {
    /// The hello of `name` for `purpose`, speaking this build's protocol on this platform;
    /// `job_fingerprint` for job traffic.
    pub fn new(name: impl Into<String>, purpose: Purpose, job_fingerprint: Option<u64>) -> Self {
        HostHello {
            protocol: PROTOCOL_VERSION,
            name: name.into(),
            job_fingerprint,
            platform: platform(),
            purpose,
        }
    }
}

/// What a connection between hosts carries, as its [`HostHello`] declares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Purpose {
    /// Control requests to the head: nodes registering and beating, the CLI.
    Control,
    /// A driver asks the node to host its job (named here): [`ToHost`] requests one per
    /// stream; the node opens streams back for [`HostEvent`]s.
    Job(String),
    /// Pulls of the named job's objects and binary ([`crate::transfer`]).
    Objects(String),
    /// Reads of the workers' logs the node keeps ([`ToLogs`] requests, one per stream).
    Logs,
    /// Frames between the named job's workers on the two nodes and between its two pools
    /// ([`ToPeer`]s on one unidirectional stream per connection): an owner's pushes to the
    /// worker it leased on the other node, that worker's ends and hand-backs back to it, and
    /// the lease asks one node passes on to the other.
    Workers(String),
}

/// What one node's daemon sends another's for a job both host ([`Purpose::Workers`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToPeer {
    /// A worker's frame for a worker of the same job there.
    Frame(PeerFrame),
    /// Between the two nodes' pools of the job: a lease ask one passes on, and what follows.
    Lease(PeerLease),
}

/// A lease between two nodes' pools of a job ([`ToPeer::Lease`]): the pool of the owner's
/// node passes on an ask it has no room for to another node of the job (spillback between
/// daemons, without the driver), which grants it on a worker of its own now or refuses it.
/// Every message but [`PeerLease::Room`] names the owner (a worker on the asking node).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerLease {
    /// Granting node to a node that asked it: what it could grant that node's owners now
    /// (sent whenever it changes, and after each refusal), so that asks come at once while
    /// it has room and not while it has none (the view of other nodes' room that a raylet
    /// keeps, here only of the nodes an ask may go to).
    Room {
        /// The resources free for leases.
        free: Resources,
        /// How many more workers it could lease (idle ones, and those it may start).
        workers: u32,
    },
    /// Asking node to granting node: lease a worker of `shape`.
    Ask {
        /// The worker that asks (on the asking node).
        owner: u64,
        /// The lease's key.
        key: TaskId,
        /// The resources the lease holds.
        shape: Resources,
        /// A node that has the job's binary (one whose workers run this node's leases), for
        /// the granting node to fetch it from if it lacks it; `None`: the asking node. So a
        /// job's binary spreads over the nodes its asks reach as a tree, not one copy each
        /// out of the asking node.
        binary_from: Option<String>,
        /// Asked here first because this node's store holds the most of its task's
        /// arguments ([`ToNode::Lease`]'s `near`): with no room now, this node holds it a
        /// while for room to come back before it refuses (a refusal costs their pull).
        near: bool,
    },
    /// Granting node to asking node: the lease is granted on `worker`.
    Granted {
        /// The owner.
        owner: u64,
        /// The lease's key.
        key: TaskId,
        /// The granting node's worker.
        worker: u64,
        /// The worker's direct endpoint, if it has one ([`ToWorker::Leased`]'s `direct`).
        direct: Option<String>,
    },
    /// Granting node to asking node: no room now, and why.
    Refused {
        /// The owner.
        owner: u64,
        /// The lease's key.
        key: TaskId,
        /// Why.
        reason: String,
    },
    /// Asking node to granting node: the owner gives the lease back (or withdrew its ask).
    Unlease {
        /// The owner.
        owner: u64,
        /// The lease's key.
        key: TaskId,
    },
    /// Asking node to granting node: a task the owner pushed under the lease is cancelled
    /// by force (the leased worker is killed).
    KillLeased {
        /// The owner.
        owner: u64,
        /// The lease's key.
        key: TaskId,
    },
    /// Granting node to asking node: the lease ended (its worker died, or could not start).
    Ended {
        /// The owner.
        owner: u64,
        /// The lease's key.
        key: TaskId,
        /// Why.
        reason: String,
    },
    /// Asking node to granting node: the owner died; the workers leased to it are killed.
    OwnerGone {
        /// The owner.
        owner: u64,
    },
    /// Watching node to the node of worker `worker`: workers there watch it (borrowers of
    /// its objects, or lenders to it: [`ToNode::WatchWorker`]); answered
    /// [`PeerLease::OwnerGone`] when it exits, at once if it is not running.
    Watch {
        /// The worker watched.
        worker: u64,
    },
    /// Owner's node to a node its leases ran tasks on: that node's copies of these objects
    /// of the owner's go (values its tasks left there, or arguments pulled there, which the
    /// owner freed).
    Drop {
        /// The owner.
        owner: u64,
        /// The objects (each one the owner's).
        ids: Vec<ObjectId>,
    },
    /// Owner's node to the node its tasks left these values on: they are pulled to the
    /// owner's node, and that node keeps them no more for the owner; a copy a reader there
    /// took meanwhile (it may be mapping it) stays until the owner drops the object
    /// ([`PeerLease::Drop`]).
    Taken {
        /// The owner.
        owner: u64,
        /// The objects (each one the owner's).
        ids: Vec<ObjectId>,
    },
}

/// A worker's frame one node's daemon passes to another's for a worker of the same job there
/// ([`ToPeer::Frame`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PeerFrame {
    /// The worker on the sending node that sent it (the sending daemon says which).
    pub from: u64,
    /// The worker on the receiving node it is for.
    pub to: u64,
    /// One whole `ToWorker` frame, of the kinds a worker may send another.
    pub frame: Vec<u8>,
}

/// A request for the workers' logs a node keeps (`prism logs --node` from another host).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToLogs {
    /// Which logs there are.
    List,
    /// At most `max` bytes of log `name` from `offset`.
    Read {
        /// The log's file name (`NODE-PID.out` or `.err`), as listed.
        name: String,
        /// Where to start.
        offset: u64,
        /// How much at most.
        max: u32,
    },
}

/// The answer to a [`ToLogs`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FromLogs {
    /// Each log's file name and size in bytes.
    List(Vec<(String, u64)>),
    /// The bytes read (none: nothing more yet).
    Bytes(Vec<u8>),
    /// The request failed, and why.
    Error(String),
}

impl Message for ToLogs {
    const NAME: &'static str = "ToLogs";
}

impl Message for FromLogs {
    const NAME: &'static str = "FromLogs";
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Purpose::Control => write!(f, "control"),
            Purpose::Job(job) => write!(f, "job {job}"),
            Purpose::Objects(job) => write!(f, "objects of job {job}"),
            Purpose::Logs => write!(f, "logs"),
            Purpose::Workers(job) => write!(f, "workers of job {job}"),
        }
    }
}

/// A driver's request to a node that hosts its job, one per stream, answered by a
/// [`FromHost`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToHost {
    /// Prepare to run the job: fetch its binary (by SHA-256, from the driver's objects
    /// endpoint at `objects_at`) unless cached, and make its object store.
    StartJob {
        /// SHA-256 of the job's executable.
        binary: [u8; 32],
        /// Its size in bytes.
        size: u64,
        /// Where the driver serves the binary and its own objects.
        objects_at: String,
        /// Values at least this large go to the shared-memory store.
        inline_threshold: u64,
        /// The store's capacity in bytes: a larger value fails at once in the worker.
        store_capacity: u64,
        /// How long the node's lease on the job runs after the driver's last renewal, in
        /// milliseconds: a node that hears no renewal for that long stops the job's workers.
        lease_ms: u64,
        /// How many records of the tasks the job's workers own the node keeps for the head
        /// (0: none; the workers then send no events of them).
        task_events: u64,
    },
    /// Start a worker process for the job, numbered `worker`.
    Spawn {
        /// The worker's number (the driver's).
        worker: u64,
        /// Where to fetch the job's binary if the node does not have it: another node that
        /// does (its object server's address, which serves the binary too); none: the
        /// driver, as [`ToHost::StartJob`] said. A node that cannot get it from there gets it
        /// from the driver.
        binary_from: Option<String>,
    },
    /// Kill a worker of the job.
    Kill {
        /// The worker's number.
        worker: u64,
    },
    /// Make sure the node's store holds `id` (`len` bytes), pulling it from the host whose
    /// objects endpoint is `from` if not.
    Fetch {
        /// The object.
        id: ObjectId,
        /// Its archived length.
        len: u64,
        /// Where a copy is.
        from: String,
    },
    /// The job no longer needs these objects: drop the node's copies (their segments may be
    /// reused for other objects).
    Free(Vec<ObjectId>),
    /// The job stops counting the node's copies of these live objects (found elsewhere,
    /// evicted for room, or unreadable there): remove them, never reusing their segments,
    /// which the node's workers may still map.
    Drop(Vec<ObjectId>),
    /// Worker `owner` of the job died: remove the segments of the objects it owned from the
    /// node's store, but for `keep` (those it handed to the driver, which owns them now).
    DropOwnedBy {
        /// The dead worker's number (the owner its objects' ids name).
        owner: u64,
        /// Its objects the driver owns now.
        keep: Vec<ObjectId>,
    },
    /// The host whose objects endpoint is `at` is gone: close the connections to it, failing
    /// the pulls from it now.
    ForgetPeer {
        /// Its objects endpoint.
        at: String,
    },
    /// The node drained for the job: stop the job's processes here and drop its store
    /// (answered once they are stopped); the job's connection stays open until the driver
    /// closes it.
    EndJob,
    /// Move these objects (id, length) from the job's store in shared memory to the node's
    /// disk; they are still served to pulls from there.
    Spill(Vec<(ObjectId, u64)>),
    /// Bring a spilled object back into the job's store.
    Restore {
        /// The object.
        id: ObjectId,
        /// Its archived length.
        len: u64,
    },
    /// Grant the job `shape` of the node's resources before the driver starts a lease of
    /// that shape here (answered [`FromHost::Granted`] once they are free: asks are granted
    /// in order).
    Grant {
        /// The resources asked for.
        shape: Resources,
    },
    /// The job gives back `resources` of what it was granted (it no longer uses them).
    Return {
        /// The resources given back.
        resources: Resources,
    },
    /// The node may lease workers of its own to the job's workers that own tasks
    /// ([`ToNode::Lease`] from a worker here, granted by the node without the driver while it
    /// has room), numbering the processes it starts for them from `first`, below `end`, and
    /// keeping at most `max_workers` of them. Sent again when `elsewhere` changes.
    Pool {
        /// The first number of the node's workers.
        first: u64,
        /// The end of their numbers (excluded).
        end: u64,
        /// The most worker processes the node keeps for the job's owners.
        max_workers: u32,
        /// The most of each resource any other node of the job has: an ask the node has no
        /// room for goes on to the driver (which may place it on another node) only if it
        /// fits in this; otherwise it waits here for room.
        elsewhere: Resources,
    },
    /// Lend the driver a worker of the node's pool ([`ToHost::Pool`]) for its own tasks: an
    /// idle one, or one started for it (answer: [`FromHost::Lent`], once the process runs; at
    /// the pool's cap, when a worker comes free or, after a short wait, one started beyond
    /// it). The driver keeps it until it gives it back.
    LeaseWorker {
        /// Start one beyond the cap at once: every worker the driver has is blocked in `get`
        /// and none can run what they wait for.
        beyond_cap: bool,
    },
    /// The job's other nodes whose pools this node's pool may pass asks on to: `joined`
    /// (each daemon's peer address and its resources in total) and those that `left`
    /// (leases there end). The first message names all; later ones what changed.
    Peers {
        /// Nodes that joined: (peer address, resources in total).
        joined: Vec<(String, Resources)>,
        /// Peer addresses of nodes that left.
        left: Vec<String>,
    },
    /// The driver no longer needs this idle worker of the job (lent by the pool, or started
    /// at its [`ToHost::Spawn`]): it joins the node's pool, which leases it or stops it.
    ReturnWorker {
        /// The worker's number.
        worker: u64,
    },
    /// A worker the pool lent the driver holds an actor now: it is the driver's for good and
    /// leaves the pool's count.
    KeepWorker {
        /// The worker's number.
        worker: u64,
    },
}

/// A node's answer to a [`ToHost`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FromHost {
    /// Done.
    Done,
    /// The worker process started, with this process id.
    Spawned(u32),
    /// The resources a [`ToHost::Grant`] asked for are the job's until it gives them back.
    Granted,
    /// The worker a [`ToHost::LeaseWorker`] asked for: its number and process id.
    Lent {
        /// The worker's number.
        worker: u64,
        /// Its process id.
        pid: u32,
    },
    /// The request failed, and why.
    Error(String),
}

/// What a node tells the driver of a job it hosts, each on a stream it opens.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum HostEvent {
    /// A worker's connection: after this frame the stream carries the link of the worker the
    /// node started under this number, byte for byte, both ways.
    Relay {
        /// The worker's number (its hello must name the same).
        worker: u64,
        /// The process id, when the node started the worker for a lease of its own
        /// ([`ToHost::Pool`]) rather than at the driver's [`ToHost::Spawn`].
        started: Option<u32>,
    },
    /// The node asks the driver to renew its lease on the job (on a stream of its own, which
    /// the driver answers with the same frame).
    Renew {
        /// The ask's number.
        seq: u64,
    },
    /// Other jobs wait for the node's resources: give back what the job holds and does not
    /// use (see [`ToHost::Return`]), and what it holds beyond `keep` as its tasks end.
    Reclaim {
        /// The job's fair share of the node (its resources split among the jobs that hold
        /// or wait for them).
        keep: Resources,
    },
    /// A worker process ended, and how.
    WorkerExited {
        /// The worker's number.
        worker: u64,
        /// How it ended.
        reason: String,
    },
    /// Lines a worker wrote to its standard output or error (on a stream of their own, one
    /// per pipe of the worker, so that they stay in order; at most 16 KiB a frame).
    Output {
        /// The worker's number.
        worker: u64,
        /// Written to its standard error (else its output).
        stderr: bool,
        /// The lines.
        text: String,
    },
}

impl Message for ToHost {
    const NAME: &'static str = "ToHost";
}

impl Message for FromHost {
    const NAME: &'static str = "FromHost";
}

impl Message for HostEvent {
    const NAME: &'static str = "HostEvent";
}

/// This build's platform (architecture and operating system), as [`HostHello`] carries it: a
/// job's binary runs only on hosts of the same platform.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// The answer to a [`HostHello`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum HostReply {
    /// The connection is open for messages; the receiver's name.
    Welcome(String),
    /// Refused, and why (the connection closes after this).
    Refused(String),
}

/// What a host without a certificate sends on the join protocol.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct JoinRequest {
    /// [`PROTOCOL_VERSION`] of the joiner.
    pub protocol: u32,
    /// The join token's secret.
    pub secret: Vec<u8>,
    /// The name the joiner wants its certificate under.
    pub name: String,
}

/// The head's answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum JoinReply {
    /// The joiner's identity (certificate chain, key, CA) as PEM.
    Granted(String),
    /// Refused, and why.
    Refused(String),
}

/// One node as the control store knows it.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeStatus {
    /// The node's number in the cluster.
    pub id: u32,
    /// The node's name.
    pub name: String,
    /// Where the node listens (QUIC).
    pub addr: String,
    /// Its resources by name.
    pub total: Vec<(String, f64)>,
    /// What is free of them: what its heartbeat says, less what jobs report using there.
    pub available: Vec<(String, f64)>,
    /// Whether it has sent a heartbeat within the timeout.
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// Objects its object manager pulled from other hosts, as of its last heartbeat.
    pub pulled: PullStats,
    /// What its jobs hold there, as of its last heartbeat.
    pub usage: NodeUsage,
    /// The registered daemon's [`ToControl::Register`] `boot`: a restarted node has another,
    /// and whatever a job had on the old daemon is gone.
    pub boot: u64,
    /// The node is leaving (see [`ToControl::Drain`]): it takes no new work.
    pub draining: bool,
}

/// What a node's jobs hold there: worker processes and object bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct NodeUsage {
    /// Worker processes of the jobs it hosts.
    pub workers: u32,
    /// Bytes of the objects in its shared-memory stores.
    pub store_bytes: u64,
    /// Bytes of the objects spilled to its disk.
    pub spilled_bytes: u64,
    /// Frames its daemon passed between workers of different nodes since it started (sent
    /// to other nodes' daemons and taken from them): what workers with direct links do not
    /// need it for.
    pub relayed: u64,
}

/// Objects a node pulled from other hosts since it started.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct PullStats {
    /// Completed pulls.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a job uses on one node.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NodeUse {
    /// The node's address (as in [`NodeStatus::addr`]).
    pub addr: String,
    /// Resources its tasks and actors hold there, by name.
    pub used: Vec<(String, f64)>,
}

/// A member's request to the control store (on the head).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ToControl {
    /// A node daemon joins the cluster's node table.
    Register {
        /// The node's name.
        name: String,
        /// Where it listens.
        addr: String,
        /// Its resources by name.
        resources: Vec<(String, f64)>,
        /// Tells this daemon from an earlier one of the node (chosen at its start, the same
        /// when it registers again with a restarted head).
        boot: u64,
    },
    /// A node is alive; what is free on it.
    Heartbeat {
        /// The node's number.
        node: u32,
        /// Its free resources.
        available: Vec<(String, f64)>,
        /// What its object manager pulled so far.
        pulled: PullStats,
        /// What its jobs hold there now.
        usage: NodeUsage,
    },
    /// The node table.
    Status,
    /// What a job waits for and what it uses (replaces what it said before; both empty: it
    /// neither waits nor uses anything).
    Report {
        /// The job.
        job: String,
        /// Its demand that no node has granted yet.
        pending: Vec<PendingDemand>,
        /// What it holds on each node.
        used: Vec<NodeUse>,
    },
    /// Every job's waiting demand.
    Demands,
    /// The node stops (`prism stop`): its record goes at once, so that drivers learn it within
    /// a second rather than after the node timeout. Only the node itself may say so.
    Leave {
        /// The node's number.
        node: u32,
    },
    /// Node `name` is to drain and leave (`prism drain`, or the node itself on `prism stop`):
    /// drivers give it no new work and take back what it has not started, and the node, told
    /// in its next heartbeat's answer, stops once its jobs let it go.
    Drain {
        /// The node's name.
        name: String,
    },
    /// Subscribes to the node table on this stream: the head answers with a
    /// [`FromControl::Members`] at once and another whenever a node joins, leaves, dies or comes
    /// back (and at least every second, so that a silent head is noticed), until the stream
    /// ends. A subscriber that says what it already has (the head's `epoch` and the table's
    /// `version`) gets only what changed since; anything else gets the whole table.
    Watch {
        /// The head incarnation the subscriber's copy comes from (0: none).
        epoch: u64,
        /// The version of the table the subscriber's copy is at.
        after: u64,
    },
    /// What changed in a job's directory (its driver's own connection only).
    Job(crate::JobUpdate),
    /// Every job the control store knows, running and ended.
    Jobs,
    /// A job's task events of the last second (its driver's own connection only).
    Events(crate::JobEvents),
    /// A node's report of the task events of a job's workers there that own tasks: those
    /// tasks' records and their counts and times (a member node's own connection only, for
    /// a job the head knows). The head adds the counts to the driver's summary of the job.
    NodeEvents(crate::JobEvents),
    /// The tasks the head's board keeps that the query asks for.
    Tasks(crate::TaskQuery),
    /// Every job's counts and times, as its driver last reported them.
    Summaries,
    /// The job claims `name` in `namespace` for its actor `actor` (its driver's own
    /// connection only): [`FromControl::Ack`] when it is free (or the job's already), else
    /// [`FromControl::NameHeld`]. Names are unique per namespace across the cluster's jobs, as
    /// in Ray; the claim goes with the actor's death ([`ToControl::ReleaseName`], or the
    /// job's directory showing it dead) or its job's end.
    ClaimName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The actor the name is for.
        actor: ActorId,
        /// Its class.
        class: String,
    },
    /// Which actor has `name` in `namespace`, of any job: [`FromControl::Found`], or
    /// [`FromControl::NotFound`].
    FindName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Subscribes to job `job`'s actor `actor` on this stream: the head answers with a
    /// [`FromControl::ActorChanged`] at once and another whenever its directory entry changes
    /// (and at least every second), until the stream ends or the actor is dead.
    WatchActor {
        /// The actor's job.
        job: String,
        /// The actor.
        actor: ActorId,
    },
    /// The job's actor `actor` died: its claim on `name` in `namespace` goes (nothing if the
    /// claim is another actor's by now).
    ReleaseName {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The actor that held it.
        actor: ActorId,
    },
    /// Make a detached actor (the driver's own connection only): the head has a process of
    /// its own (a driver of the job that hosts the detached actors of this binary) make it,
    /// and answers [`FromControl::Found`] with that job and the actor's id, or
    /// [`FromControl::NameHeld`], or [`FromControl::Error`].
    CreateDetached(Box<DetachedCreation>),
    /// Kill actor `actor` of job `job` (any running job's; Ray's `ray.kill` of a handle
    /// found by name): the head orders the job's driver to ([`HeadOrder::Kill`], on its
    /// [`ToControl::TakeOrders`] or [`ToControl::HostDetached`] stream), and answers
    /// [`FromControl::Ack`] once the driver killed it (it is not restarted), else
    /// [`FromControl::Error`] saying why not.
    KillActor {
        /// The actor's job.
        job: String,
        /// The actor, as its job numbers it.
        actor: ActorId,
    },
    /// Kill the actor named `name` in `namespace` (`prism kill`): as [`ToControl::KillActor`]
    /// of the actor that holds the name; [`FromControl::NotFound`] when none does.
    KillNamed {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// The driver of the job that hosts binary `binary`'s detached actors (its hello names
    /// that job) takes the head's orders on this stream: [`FromControl::Order`]s (and a
    /// [`FromControl::Ack`] each second while there is none), each but
    /// [`HeadOrder::Stop`] answered by a [`OrderReply`] on the stream's other half.
    /// A host whose stream ended (the head restarted) opens it again.
    HostDetached {
        /// The SHA-256 of the binary it runs.
        binary: [u8; 32],
    },
    /// A job's driver (its hello names the job) takes the head's orders to it on this
    /// stream, as a host of detached actors does ([`ToControl::HostDetached`]): today
    /// [`HeadOrder::Kill`] of one of its actors, which another job or `prism kill` asked for.
    TakeOrders,
}

/// A detached actor to make ([`ToControl::CreateDetached`]).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DetachedCreation {
    /// The SHA-256 of the creator's binary, which holds the actor's class.
    pub binary: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
    /// Where the head fetches it from if it lacks it (the creator's endpoint).
    pub binary_from: String,
    /// The creation task (its arguments values, no references).
    pub spec: TaskSpec,
    /// The actor's class, name and restart policy.
    pub setup: ActorConfig,
}

/// What the head tells a job's driver on its stream of orders ([`ToControl::TakeOrders`]; a
/// host of a binary's detached actors: [`ToControl::HostDetached`], and the start on the
/// process's input, which only the two hold), each answered with an [`OrderReply`] of its
/// number.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum HeadOrder {
    /// The first frame, on the process's input: join the cluster at `head` with `token` as
    /// job `job`, then take orders ([`ToControl::HostDetached`]).
    Start {
        /// The head's address.
        head: String,
        /// The cluster's join token.
        token: String,
        /// The job's name.
        job: String,
    },
    /// Make an actor ([`OrderOutcome::Created`]).
    Create {
        /// The order's number.
        order: u64,
        /// The creation task.
        spec: Box<TaskSpec>,
        /// The actor's class, name and restart policy.
        setup: ActorConfig,
    },
    /// Kill an actor of the job ([`OrderOutcome::Killed`]: it is not restarted).
    Kill {
        /// The order's number.
        order: u64,
        /// The actor.
        actor: ActorId,
    },
    /// The head stops: leave the cluster (the detached actors die with the job) and exit
    /// (not answered).
    Stop,
}

/// The answer to a [`HeadOrder`].
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OrderReply {
    /// The order's number.
    pub order: u64,
    /// How it went.
    pub outcome: OrderOutcome,
}

/// How a [`HeadOrder`] went.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum OrderOutcome {
    /// The actor was made (its name claimed): its id.
    Created(ActorId),
    /// The actor was told to die.
    Killed,
    /// The order was refused.
    Refused(Refusal),
    /// The order failed (why).
    Failed(String),
}

impl Message for HeadOrder {
    const NAME: &'static str = "HeadOrder";
}

impl Message for OrderReply {
    const NAME: &'static str = "OrderReply";
}

/// Tasks of one shape that wait for resources.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PendingDemand {
    /// The job that submitted them.
    pub job: String,
    /// What each demands, as `{CPU: 1, gpu: 1}`.
    pub demand: String,
    /// How many wait.
    pub count: u32,
    /// No node of the cluster could ever run them (Ray's "infeasible").
    pub infeasible: bool,
}

/// The control store's answer.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FromControl {
    /// The registered node's number.
    Registered(u32),
    /// A heartbeat was recorded.
    Ack,
    /// A heartbeat was recorded, and the node is asked to drain and leave (`prism drain`).
    Drain,
    /// The node table.
    Status(Vec<NodeStatus>),
    /// Every job's waiting demand.
    Demands(Vec<PendingDemand>),
    /// What changed in the node table (the answer to a [`ToControl::Watch`]).
    Members(MemberUpdate),
    /// Every job the control store knows (the answer to [`ToControl::Jobs`]).
    Jobs(Vec<crate::JobStatus>),
    /// The tasks asked for, by job and id (the answer to [`ToControl::Tasks`]).
    Tasks {
        /// The newest of those that match, as many as the query's limit.
        tasks: Vec<crate::JobTask>,
        /// How many match.
        matched: u64,
    },
    /// Every job's counts and times (the answer to [`ToControl::Summaries`]).
    Summaries(Vec<crate::JobSummary>),
    /// The name asked for is held by another job's live actor (the answer to
    /// [`ToControl::ClaimName`]).
    NameHeld {
        /// The job that holds it.
        job: String,
    },
    /// The actor that has the name asked for (the answer to [`ToControl::FindName`]).
    Found {
        /// Its job.
        job: String,
        /// Its id in its job.
        actor: ActorId,
        /// Its class.
        class: String,
        /// Its entry in the directory (none before its job's driver listed it).
        status: Option<crate::ActorStatus>,
    },
    /// No live actor has the name asked for.
    NotFound,
    /// An actor watched with [`ToControl::WatchActor`], as the directory has it now (none:
    /// not listed yet; its job's end or its death is a status that says dead).
    ActorChanged(Option<crate::ActorStatus>),
    /// An order to a job's driver ([`ToControl::TakeOrders`], [`ToControl::HostDetached`]).
    Order(HeadOrder),
    /// The request failed, and why.
    Error(String),
}

/// The node table's changes since a subscriber's version, or the whole of it.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MemberUpdate {
    /// The head's incarnation (a restarted head numbers its versions anew).
    pub epoch: u64,
    /// The table's version once this update is applied.
    pub version: u64,
    /// `nodes` is the whole table: replace the copy (else apply the changes to it).
    pub full: bool,
    /// The nodes that joined or changed (alive, dead, restarted), as they are now.
    pub nodes: Vec<NodeStatus>,
    /// The numbers of the nodes that left the table.
    pub gone: Vec<u32>,
}

impl Message for ToControl {
    const NAME: &'static str = "ToControl";
}

impl Message for FromControl {
    const NAME: &'static str = "FromControl";
}

/// What a pull asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PullKey {
    /// An object's archived bytes.
    Object(ObjectId),
    /// A job's executable, by the SHA-256 of its contents.
    Binary([u8; 32]),
}

impl std::fmt::Display for PullKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullKey::Object(id) => write!(f, "object {id}"),
            PullKey::Binary(hash) => {
                write!(f, "binary ")?;
                hash[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// A request for a range of an object's (or a binary's) bytes: the object manager's pull.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PullRequest {
    /// What is wanted.
    pub key: PullKey,
    /// First byte wanted.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
}

/// The answer to a [`PullRequest`]; with `Sending`, exactly the requested bytes follow on the
/// stream, unframed.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PullReply {
    /// The object's whole length; the range follows.
    Sending(u64),
    /// The object is not here, or the range is outside it, and why.
    Missing(String),
}

impl Message for ToPeer {
    const NAME: &'static str = "ToPeer";
}

impl Message for PullRequest {
    const NAME: &'static str = "PullRequest";
}

impl Message for PullReply {
    const NAME: &'static str = "PullReply";
}

impl Message for HostHello {
    const NAME: &'static str = "HostHello";
}

impl Message for HostReply {
    const NAME: &'static str = "HostReply";
}

impl Message for JoinRequest {
    const NAME: &'static str = "JoinRequest";
}

impl Message for JoinReply {
    const NAME: &'static str = "JoinReply";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameDecoder, encode_frame};

    #[test]
    fn handshake_refuses_other_versions_and_builds() {
        let mut wire = Vec::new();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            fingerprint: 7,
            worker: 1,
            pid: 42,
            direct: None,
        };
        encode_frame(&ToNode::Hello(hello.clone()), &mut wire).unwrap();
        encode_frame(
            &ToNode::Hello(Hello {
                protocol: 99,
                ..hello
            }),
            &mut wire,
        )
        .unwrap();
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&wire);
        let mut results = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            let ArchivedToNode::Hello(h) = frame.access::<ToNode>().unwrap() else {
                panic!("not a hello");
            };
            results.push(h.check(7));
        }
        assert_eq!(results[0], Ok(()));
        assert_eq!(
            results[1],
            Err(HandshakeError::Protocol {
                peer: 99,
                ours: PROTOCOL_VERSION
            })
        );
        let err = HandshakeError::Fingerprint { peer: 1, ours: 2 };
        assert!(err.to_string().contains("another build"));
    }
}
