//! The owner: the process that submitted a task keeps its spec, the state of its return
//! objects, the values of small objects, and their reference counts, with the dependency
//! bookkeeping delegated to a `prism-graph` DAG. Readers (futures, blocked workers) are woken
//! here when an object becomes ready or fails.
//!
//! In the embedded single-node cluster the driver's owner also keeps the books for tasks that
//! workers submit (nested tasks): the worker's references are counted as one hold per worker.

pub(crate) mod awaited;
mod forgotten;
pub(crate) mod memory;
mod stream;

use std::sync::Arc;
use std::task::{Poll, Waker};

use prism_graph::{
    ActorId, Arg, IdMap, IdSet, ObjectId, Readiness, TaskError, TaskGraph, TaskId, TaskKind,
    TaskSpec, TaskState,
};
use prism_transport::Value;

use crate::proto::events::{self, TaskEvents, TaskPhase};
use crate::proto::held_for::HeldFor;
use crate::proto::scheduler::WorkerId;
use crate::proto::shrink;
pub(crate) use forgotten::Releaser;

/// Whether object `id`, not known, may still be (see [`Owner::awaitable`]): of a worker's task, or
/// of a task of the driver's among `tasks`, and not freed lately.
fn awaitable(
    tasks: &IdMap<TaskId, TaskRecord>,
    forgotten: &forgotten::Forgotten,
    id: ObjectId,
) -> bool {
    (id.task.owner != DRIVER_OWNER || tasks.contains_key(&id.task)) && forgotten.why(id).is_none()
}

/// The driver's owner number (a task id names its owner: see [`TaskId::new`]).
pub(crate) const DRIVER_OWNER: u64 = 0;

/// Why an object the owner has no record of (not even a recent free) is unknown.
const NEVER_KNOWN: &str =
    "the object is unknown to its owner (freed long ago, or from another cluster)";
use crate::store::{ObjectBytes, Segment};

/// What a reader has learned of a list of objects so far: their values (for `get`) or only
/// whether each is done (for `wait`, which must not copy values it does not return).
pub(crate) trait Known {
    /// Whether object `i` of the list is known to be done.
    fn has(&self, i: usize) -> bool;
    /// Object `i` is done with `slot` (never [`Slot::Pending`]).
    fn learn(&mut self, i: usize, slot: &Slot);
}

impl Known for [Option<Slot>] {
    fn has(&self, i: usize) -> bool {
        self[i].is_some()
    }
    fn learn(&mut self, i: usize, slot: &Slot) {
        self[i] = Some(slot.clone());
    }
}

impl Known for [bool] {
    fn has(&self, i: usize) -> bool {
        self[i]
    }
    fn learn(&mut self, i: usize, _slot: &Slot) {
        self[i] = true;
    }
}

/// The value side of an object.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Pending,
    Ready(ObjectBytes),
    /// Moved to disk to make room (its length); read paths restore it first, so only the
    /// owner ever sees this state.
    Spilled(u64),
    /// Being read back from disk into shared memory (its length): the shell restores it
    /// before it does anything decided later, so workers may be told of it already.
    Restoring(u64),
    /// Ready in the store of another node of the cluster (its length): a read in this process
    /// fetches it first ([`Owner::wanted_here`]).
    Remote(u64),
    Failed(TaskError),
}

impl Slot {
    /// The state API's name of where the value is (`PENDING`, `IN_MEMORY`, `SPILLED`,
    /// `REMOTE`, `FAILED`), its size once known, and why it failed.
    pub(crate) fn describe(&self) -> (&'static str, Option<u64>, Option<String>) {
        match self {
            Slot::Pending => ("PENDING", None, None),
            Slot::Ready(bytes) => ("IN_MEMORY", Some(bytes.len() as u64), None),
            Slot::Spilled(len) | Slot::Restoring(len) => ("SPILLED", Some(*len), None),
            Slot::Remote(len) => ("REMOTE", Some(*len), None),
            Slot::Failed(e) => ("FAILED", None, Some(e.to_string())),
        }
    }
}

#[derive(Debug)]
struct ObjectEntry {
    slot: Slot,
    /// The function that makes it (`put` for puts), for messages.
    function: Arc<str>,
    /// Live handles: the driver's `ObjectRef`s plus one per worker holding it.
    refs: u32,
    waiters: Vec<Waker>,
    worker_waiters: Vec<WorkerId>,
    /// Objects whose references this object's value contains: held while it lives.
    contains: Vec<ObjectId>,
    /// Actors whose handles its value contains: held while it lives (see
    /// [`Owner::contain_actors`]).
    actors: Vec<ActorId>,
    /// When it was last read or made (the owner's tick), for spilling the least recently used.
    last_use: u64,
}

impl ObjectEntry {
    /// A new object with one reference (its creator's).
    fn new(slot: Slot, function: Arc<str>) -> Self {
        ObjectEntry {
            slot,
            function,
            refs: 1,
            waiters: Vec::new(),
            worker_waiters: Vec::new(),
            contains: Vec::new(),
            actors: Vec::new(),
            last_use: 0,
        }
    }
}

/// What the owner remembers of a task until it ends.
#[derive(Debug)]
pub(crate) struct TaskRecord {
    pub(crate) spec: TaskSpec,
    /// How many workers died running it.
    pub(crate) deaths: u32,
    /// Panics retried so far (with `retry_exceptions`).
    pub(crate) panics: u32,
    /// Runs again because an argument was missing from its worker's node.
    pub(crate) missing: u32,
    /// A forced cancel killed its worker: do not retry.
    pub(crate) force_cancelled: bool,
    /// The demand exceeds the node: the message to give a waiting reader.
    pub(crate) infeasible: Option<String>,
    /// The worker it was sent to.
    pub(crate) worker: Option<WorkerId>,
    /// When it was last sent ([`Owner::stamp`]'s order).
    sent_at: u64,
}

impl TaskRecord {
    /// A task about to be scheduled for the first time (or again, to rebuild its results).
    fn new(spec: TaskSpec) -> Self {
        TaskRecord {
            spec,
            deaths: 0,
            panics: 0,
            missing: 0,
            force_cancelled: false,
            infeasible: None,
            worker: None,
            sent_at: 0,
        }
    }

    /// The message that hands this task, with its resolved arguments, to a worker.
    pub(crate) fn execute(&self, args: Vec<Value>) -> prism_transport::Execute {
        prism_transport::Execute {
            task: self.spec.task_id,
            function: self.spec.function.clone(),
            fn_hash: self.spec.fn_hash,
            args,
            num_returns: self.spec.num_returns,
            kind: self.spec.kind,
            stream: None,
            cpu: self.spec.resources.cpu,
            run: 0,
            pull_from: Vec::new(),
        }
    }
}

/// What the owner keeps of a finished task whose results live in other nodes' stores, to run it
/// again if every copy of one is lost (lineage reconstruction). Its inputs stay held meanwhile.
///
/// Rebuilds are charged to the task's `max_retries` only when no node was lost since its
/// results were made: a loss that a node's death explains is the cluster's failure, not the
/// task's, and each such rebuild follows a node loss of its own, so they cannot loop. (Ray
/// charges every rebuild, and its authors count that a flaw, ray-project/ray#17379: under a
/// node killed every 3 s a leaf of a tree reduction is lost with the sums above it at nearly
/// every kill, and a budget of 10 ran out in about 1 run of 10; see BENCHMARKS.md.) Losses
/// no node's death explains (a copy that could not be read from a live node) are charged; the
/// node's books give the charge back ([`Owner::refund_rebuild`]) when the node that could not
/// be read turns out lost after all (a killed node is counted lost only when the control store
/// misses its heartbeats, and a pull from it fails before that).
#[derive(Debug)]
struct Lineage {
    spec: TaskSpec,
    /// Times it ran again to rebuild lost outputs while no node was lost: at most
    /// `spec.max_retries`.
    rebuilds: u32,
    /// Times it ran again in all.
    runs_again: u32,
    /// [`Owner::nodes_lost`] when its latest results were made.
    made_after_losses: u64,
    /// When its latest results were made ([`Owner::stamp`]'s order).
    made_at: u64,
}

/// Tasks [`Owner::rebuild`] opened again.
#[derive(Debug, Default)]
pub(crate) struct Rebuilt {
    /// Tasks that can run now, inputs first.
    pub(crate) ready: Vec<TaskId>,
    /// Tasks that were ready and now wait for a rebuilt input: out of the queues until then.
    pub(crate) held_back: Vec<TaskId>,
    /// The objects whose rebuild was charged to their task's `max_retries` (no node was lost
    /// since they were made).
    pub(crate) charged: Vec<ObjectId>,
}

/// Someone to tell that an object is ready or failed.
#[derive(Debug)]
pub(crate) struct WorkerNotice {
    pub(crate) worker: WorkerId,
    pub(crate) id: ObjectId,
    pub(crate) slot: Slot,
}

#[derive(Debug, Default)]
pub(crate) struct Owner {
    graph: TaskGraph,
    objects: IdMap<ObjectId, ObjectEntry>,
    tasks: IdMap<TaskId, TaskRecord>,
    /// Finished tasks whose remote results can be rebuilt.
    lineage: IdMap<TaskId, Lineage>,
    held_by: IdMap<WorkerId, IdSet<ObjectId>>,
    /// Holds taken for workers on other workers' word ([`HeldFor`]).
    held_for: IdMap<WorkerId, HeldFor<ObjectId>>,
    /// Notices for workers produced by the last calls, drained by the node.
    pub(crate) notices: Vec<WorkerNotice>,
    /// Bytes held in shared-memory segments.
    pub(crate) stored_bytes: u64,
    /// The shared-memory store's capacity in bytes.
    pub(crate) capacity: u64,
    /// Bytes spilled to disk.
    pub(crate) spilled_bytes: u64,
    /// A counter that orders uses, for least-recently-used spilling.
    tick: u64,
    /// Remote objects a reader in this process waits for, to be fetched by the node.
    pub(crate) wanted_here: Vec<(ObjectId, u64)>,
    /// Remote objects already being fetched into this process's store.
    fetching_here: IdSet<ObjectId>,
    /// Objects freed since the node last looked (copies elsewhere can go too).
    pub(crate) freed: Vec<ObjectId>,
    /// The objects freed lately and whose release freed each (for the errors of late reads).
    forgotten: forgotten::Forgotten,
    /// Objects named before they were known here (see [`awaited`]).
    awaited: awaited::Awaited,
    /// Tasks submitted with such objects among their inputs, not in the graph until all
    /// are known: their inputs.
    parked: IdMap<TaskId, Vec<ObjectId>>,
    /// Parked tasks whose inputs came since the last [`Owner::unpark`].
    unpark_due: Vec<TaskId>,
    /// Parked tasks ready now, for the node to queue.
    pub(crate) unparked: Vec<TaskId>,
    /// Actor creations that failed here (an input failed or never came, say) rather than on
    /// a worker: the node ends their actors.
    pub(crate) failed_creations: Vec<(TaskId, TaskError)>,
    /// Nodes the job lost so far (see [`Lineage`]).
    nodes_lost: u64,
    /// Orders sends of tasks and makings of results ([`Owner::remade_since_sent`]).
    stamp: u64,
    /// What freeing objects left for the shell to do with their files, in order.
    pub(crate) freed_files: Vec<FreedFile>,
    /// Actor handles inside the arguments of tasks that no longer need them (ended, and no
    /// lineage keeps them), for the node to release.
    pub(crate) released_actors: Vec<ActorId>,
    /// Every task's state changes (the state API's and the timeline's source).
    pub(crate) events: TaskEvents,
    /// The time of the event the node handles (it sets it), for the task events.
    pub(crate) now: Option<std::time::Instant>,
    /// Streaming generators' books, by task.
    streams: IdMap<TaskId, stream::StreamBook>,
    /// Producers to tell how many of their items were taken (`u32::MAX`: the stream is gone),
    /// drained by the node.
    pub(crate) stream_acks: Vec<(TaskId, u32)>,
}

/// A freed object's file, for the shell to pool or remove (the owner does no IO).
#[derive(Debug)]
pub(crate) enum FreedFile {
    /// A shared-memory segment of `len` bytes: `unused` when no reader anywhere maps it (it
    /// may be pooled for the next put), else it is only unlinked.
    Shared {
        id: ObjectId,
        len: u64,
        unused: Option<Segment>,
    },
    /// A spill file.
    Spilled { id: ObjectId },
}

impl Owner {
    /// An owner of objects in a store of `capacity` bytes.
    pub(crate) fn new(capacity: u64) -> Self {
        Owner {
            capacity,
            events: TaskEvents::new(crate::proto::events::DEFAULT_CAPACITY),
            ..Owner::default()
        }
    }

    /// Records a task event at the time of the event being handled.
    fn record(&mut self, event: impl FnOnce(&mut TaskEvents, std::time::Instant)) {
        if let Some(now) = self.now
            && self.events.on()
        {
            event(&mut self.events, now);
        }
    }

    /// Records that `task` waits again: for a node when `ready`, else for its arguments.
    fn record_pending(&mut self, task: TaskId, ready: bool) {
        let phase = events::pending(ready);
        self.record(|events, now| events.phase(task, phase, now));
    }

    fn touch(&mut self, id: ObjectId) {
        self.tick += 1;
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.last_use = self.tick;
        }
    }

    /// Bytes that must leave shared memory before `needed` more fit (0 when they fit).
    pub(crate) fn overflow(&self, needed: u64) -> u64 {
        (self.stored_bytes + needed).saturating_sub(self.capacity)
    }

    /// The least recently used shared object that no queued or running task needs (never
    /// `keep`), with its segment: the next to spill when the store is full.
    pub(crate) fn spill_victim(&self, keep: Option<ObjectId>) -> Option<(ObjectId, Arc<Segment>)> {
        self.objects
            .iter()
            .filter(|(id, e)| {
                Some(**id) != keep
                    && matches!(e.slot, Slot::Ready(ObjectBytes::Shared(_)))
                    && !self.graph.has_pending_consumers(**id)
            })
            .min_by_key(|(_, e)| e.last_use)
            .and_then(|(id, e)| match &e.slot {
                Slot::Ready(ObjectBytes::Shared(segment)) => Some((*id, segment.clone())),
                _ => None,
            })
    }

    /// The shell wrote the object's bytes to disk and unlinked its segment (readers that map it
    /// keep their view).
    pub(crate) fn spilled(&mut self, id: ObjectId) {
        let Some(entry) = self.objects.get_mut(&id) else {
            return;
        };
        let Slot::Ready(ObjectBytes::Shared(segment)) = &entry.slot else {
            return;
        };
        let len = segment.bytes().len() as u64;
        entry.slot = Slot::Spilled(len);
        self.stored_bytes = self.stored_bytes.saturating_sub(len);
        self.spilled_bytes += len;
    }

    /// The size of the object if it is spilled: the shell must restore it before it is read.
    pub(crate) fn spilled_len(&self, id: ObjectId) -> Option<u64> {
        match self.objects.get(&id).map(|e| &e.slot) {
            Some(&Slot::Spilled(len)) => Some(len),
            _ => None,
        }
    }

    /// The shell is told to read a spilled object back into shared memory: it counts as
    /// stored again.
    pub(crate) fn restoring(&mut self, id: ObjectId) {
        let Some(len) = self.spilled_len(id) else {
            return;
        };
        self.spilled_bytes = self.spilled_bytes.saturating_sub(len);
        self.stored_bytes += len;
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.slot = Slot::Restoring(len);
        }
    }

    /// The shell read a spilled object back into shared memory (or failed to, for `reason`).
    pub(crate) fn restored(&mut self, id: ObjectId, restored: Result<ObjectBytes, String>) {
        let Some(&Slot::Restoring(len)) = self.objects.get(&id).map(|e| &e.slot) else {
            return;
        };
        let slot = match restored {
            Ok(bytes) => Slot::Ready(bytes),
            Err(reason) => {
                self.stored_bytes = self.stored_bytes.saturating_sub(len);
                Slot::Failed(TaskError::InvalidValue {
                    task: id.task,
                    function: self
                        .function_of(id)
                        .map_or_else(String::new, |f| f.to_string()),
                    what: format!("object {id}"),
                    reason,
                })
            }
        };
        self.set_slot(id, slot);
    }

    /// The shell could not spill the object: it stays in shared memory.
    pub(crate) fn unspilled(&mut self, id: ObjectId, segment: Arc<Segment>) {
        let Some(len) = self.spilled_len(id) else {
            return;
        };
        self.spilled_bytes = self.spilled_bytes.saturating_sub(len);
        self.stored_bytes += len;
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.slot = Slot::Ready(ObjectBytes::Shared(segment));
        }
    }

    /// The message that hands `task`, with its resolved arguments, to a worker.
    pub(crate) fn execute(
        &mut self,
        task: TaskId,
        args: Vec<Value>,
    ) -> Option<prism_transport::Execute> {
        let mut exec = self.tasks.get(&task)?.execute(args);
        exec.stream = self.stream_run(task);
        Some(exec)
    }

    pub(crate) fn task(&self, id: TaskId) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    pub(crate) fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskRecord> {
        self.tasks.get_mut(&id)
    }

    pub(crate) fn task_state(&self, id: TaskId) -> Option<TaskState> {
        self.graph.task_state(id)
    }

    /// What the owner knows of every object, for `prism::memory()`.
    pub(crate) fn report(&self) -> Vec<self::memory::ObjectInfo> {
        use self::memory::{Location, ObjectInfo};
        let mut out: Vec<ObjectInfo> = self
            .objects
            .iter()
            .map(|(id, e)| {
                let (location, size) = match &e.slot {
                    Slot::Pending => (Location::Pending, 0),
                    Slot::Failed(_) => (Location::Failed, 0),
                    Slot::Ready(ObjectBytes::Inline(b)) => (Location::Inline, b.len() as u64),
                    Slot::Ready(ObjectBytes::Shared(s)) => {
                        (Location::SharedMemory, s.bytes().len() as u64)
                    }
                    Slot::Spilled(len) => (Location::Spilled, *len),
                    Slot::Restoring(len) => (Location::SharedMemory, *len),
                    Slot::Remote(len) => (Location::Remote, *len),
                };
                ObjectInfo {
                    id: *id,
                    size,
                    location,
                    function: e.function.to_string(),
                    owner: id.task.owner,
                    refs: e.refs,
                }
            })
            .collect();
        out.sort_by_key(|o| o.id);
        out
    }

    /// Every object this owner tracks, for the state API: id, the function that makes it,
    /// its slot and its live references, in no particular order.
    pub(crate) fn objects(&self) -> impl Iterator<Item = (ObjectId, &str, &Slot, u32)> {
        self.objects
            .iter()
            .map(|(id, e)| (*id, &*e.function, &e.slot, e.refs))
    }

    /// Number of objects the owner tracks.
    pub(crate) fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Number of tasks that have not ended (waiting, queued, running or being rebuilt).
    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// A task that has not ended, if any.
    pub(crate) fn some_task(&self) -> Option<TaskId> {
        self.tasks.keys().min().copied()
    }

    /// Gives back the memory of a burst of tasks once they are gone (the graph's vacant slots,
    /// tables at their largest capacity). Returns whether it freed anything worth handing back
    /// to the operating system.
    pub(crate) fn compact(&mut self) -> bool {
        let mut freed = self.graph.compact();
        freed |= shrink(&mut self.objects);
        freed |= shrink(&mut self.tasks);
        freed |= shrink(&mut self.lineage);
        freed |= shrink(&mut self.fetching_here);
        if self.freed.capacity() >= 4096 && self.freed.is_empty() {
            self.freed = Vec::new();
            freed = true;
        }
        for held in self.held_by.values_mut() {
            freed |= shrink(held);
        }
        freed
    }

    fn hold(&mut self, id: ObjectId, holder: Option<WorkerId>) {
        if let Some(worker) = holder {
            self.held_by.entry(worker).or_default().insert(id);
        }
    }

    /// Records a task; its return objects start with one reference, the submitter's. Returns
    /// whether it can be scheduled now. A task whose input already failed fails at once.
    pub(crate) fn submit(&mut self, spec: TaskSpec, holder: Option<WorkerId>) -> bool {
        let task = spec.task_id;
        let deps: Vec<ObjectId> = spec.dependencies().collect();
        let name: Arc<str> = Arc::from(spec.function.as_str());
        for id in spec.return_ids() {
            self.insert_object(id, ObjectEntry::new(Slot::Pending, name.clone()));
            self.hold(id, holder);
        }
        for id in &spec.inlined_refs {
            self.add_ref(*id);
        }
        if let Some(window) = spec.stream {
            self.open_stream(task, window);
        }
        let function = spec.function.clone();
        let (num_returns, kind) = (spec.num_returns, spec.kind);
        self.tasks.insert(task, TaskRecord::new(spec));
        let added = self.graph.add_task(task, &deps, num_returns);
        let ready = matches!(added, Ok(Readiness::Ready));
        self.record(|events, now| events.submitted(task, &name, kind, ready, now));
        let ready = self.added(task, &deps, num_returns, added, function);
        self.unpark();
        ready
    }

    /// Task `task` (of function `function`, `num_returns` values, inputs `deps`) was added
    /// to the graph as `added` says: whether it can be scheduled now. One whose input already
    /// failed fails; one with an input not known here that may still come waits for it (see
    /// [`awaited`]); else one with an input not known fails, naming it.
    fn added(
        &mut self,
        task: TaskId,
        deps: &[ObjectId],
        num_returns: u32,
        added: Result<Readiness, prism_graph::GraphError>,
        function: String,
    ) -> bool {
        match added {
            Ok(Readiness::Ready) => true,
            Ok(Readiness::Waiting) => false,
            Ok(Readiness::Failed(input)) => {
                self.fail_with_input(task, input);
                false
            }
            Err(e) => {
                let unknown: Vec<ObjectId> = (deps.iter().copied())
                    .filter(|d| !self.objects.contains_key(d))
                    .collect();
                let may_come = |d: &ObjectId| awaitable(&self.tasks, &self.forgotten, *d);
                if !unknown.is_empty() && unknown.iter().all(may_come) {
                    for &id in &unknown {
                        self.awaited.wait_task(id, task, self.now);
                    }
                    self.parked.insert(task, deps.to_vec());
                    return false;
                }
                // An input the owner no longer (or never) knew: fail the task, naming it.
                let missing = deps.iter().find(|d| !self.objects.contains_key(d));
                let (what, reason) = match missing {
                    Some(&id) => (id.to_string(), self.unknown_reason(id)),
                    None => (e.to_string(), NEVER_KNOWN.into()),
                };
                self.graph
                    .add_task(task, &[], num_returns)
                    .expect("a fresh task id without inputs always fits");
                self.fail(
                    task,
                    TaskError::InvalidValue {
                        task,
                        function,
                        what: format!("argument object {what}"),
                        reason,
                    },
                );
                false
            }
        }
    }

    /// Fails a task that was never scheduled (bad options or arguments).
    pub(crate) fn fail_unscheduled(&mut self, task: TaskId, error: TaskError) {
        self.fail(task, error);
    }

    /// Stores an object made by `put`.
    pub(crate) fn put(
        &mut self,
        id: ObjectId,
        slot: Slot,
        holder: Option<WorkerId>,
        nested: Vec<ObjectId>,
    ) {
        let _ = self.graph.add_ready_object(id);
        self.account(&slot);
        self.insert_object(id, ObjectEntry::new(slot, Arc::from("put")));
        self.hold(id, holder);
        self.set_contains(id, nested);
        self.touch(id);
        self.unpark();
    }

    /// The value of `id` contains handles to `actors`: they live at least as long as it.
    /// True when the caller must count them as held (once per object: a value made again
    /// after a loss holds the same handles).
    pub(crate) fn contain_actors(&mut self, id: ObjectId, actors: &[ActorId]) -> bool {
        match self.objects.get_mut(&id) {
            Some(entry) if entry.actors.is_empty() && !actors.is_empty() => {
                entry.actors = actors.to_vec();
                true
            }
            _ => false,
        }
    }

    /// Records object `id`, held by `holder`, whose value the node makes later with
    /// [`Owner::fulfil`]: the answer to a worker's request (see
    /// [`prism_transport::Answer`]). Until then it is pending, and it stays until made even
    /// when its holder lets it go. False (and nothing changes) when `id` is taken.
    pub(crate) fn promise(&mut self, id: ObjectId, holder: Option<WorkerId>) -> bool {
        if self.objects.contains_key(&id) {
            return false;
        }
        // Not in the graph: no task can take an answer as its argument.
        self.objects
            .insert(id, ObjectEntry::new(Slot::Pending, Arc::from("answer")));
        self.hold(id, holder);
        true
    }

    /// Makes the value of a promised object (inline bytes or a failure): its readers are told,
    /// and it is freed at once when nobody holds it any more.
    pub(crate) fn fulfil(&mut self, id: ObjectId, slot: Slot) {
        if self
            .objects
            .get(&id)
            .is_some_and(|e| matches!(e.slot, Slot::Pending))
        {
            self.set_slot(id, slot);
        }
    }

    /// The value of `id` refers to `nested`: they live at least as long as it.
    ///
    /// Each must be known here: a worker hands what it owns to its node before a reference
    /// leaves it. One that is not (a bug, or a value from another cluster) is named in an error
    /// and not counted, so that the container's end does not release a hold it never took.
    fn set_contains(&mut self, id: ObjectId, mut nested: Vec<ObjectId>) {
        if nested.is_empty() {
            return;
        }
        let now = self.now;
        nested.retain(|&inner| match self.objects.get_mut(&inner) {
            Some(entry) => {
                entry.refs += 1;
                true
            }
            None if awaitable(&self.tasks, &self.forgotten, inner) => {
                self.awaited.add_ref(inner, now);
                true
            }
            None => {
                let why = self.unknown_reason(inner);
                tracing::error!(object = %id, inner = %inner, "a value refers to an object its owner does not know: {why}");
                false
            }
        });
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.contains = nested;
        }
    }

    fn account(&mut self, slot: &Slot) {
        if let Slot::Ready(bytes @ ObjectBytes::Shared(_)) = slot {
            self.stored_bytes += bytes.len() as u64;
        }
    }

    /// A remote object's bytes arrived in this process's store.
    pub(crate) fn localized(&mut self, id: ObjectId, bytes: ObjectBytes) {
        self.fetching_here.remove(&id);
        if matches!(
            self.objects.get(&id).map(|e| &e.slot),
            Some(Slot::Remote(_))
        ) {
            let slot = Slot::Ready(bytes);
            self.account(&slot);
            self.set_slot(id, slot);
        }
    }

    /// A fetch of a remote object into this process failed: its readers ask again (another
    /// copy, or a rebuild when none is left).
    pub(crate) fn fetch_failed(&mut self, id: ObjectId) {
        if let Some(&Slot::Remote(len)) = self.objects.get(&id).map(|e| &e.slot) {
            self.wanted_here.push((id, len));
        } else {
            self.fetching_here.remove(&id);
        }
    }

    /// A remote object could not be fetched (or rebuilt), for `reason`: readers here get an
    /// error that names it and the function that made it, and so do the tasks that read it.
    pub(crate) fn unavailable(&mut self, id: ObjectId, reason: String) {
        self.fetching_here.remove(&id);
        let Some(entry) = self.objects.get(&id) else {
            return;
        };
        if matches!(entry.slot, Slot::Remote(_)) {
            let error = TaskError::ObjectUnavailable {
                object: id,
                function: entry.function.to_string(),
                reason,
            };
            // Tasks that read it cannot run: they fail with its error, and theirs downstream.
            for consumer in self.graph.pending_consumers(id) {
                self.fail(consumer, error.clone());
            }
            self.set_slot(id, Slot::Failed(error));
        }
    }

    /// The resolved arguments of a ready task, in order, for the worker: small values inline,
    /// large ones by their shared-memory segment.
    /// `Err(Some(id))`: argument `id` is spilled, and the shell must restore it first;
    /// `Err(None)`: the task or an argument is gone. A spilled argument that `elsewhere` says
    /// another store holds (a node of a cluster) is named by its segment there instead.
    pub(crate) fn resolve_args(
        &mut self,
        task: TaskId,
        elsewhere: impl Fn(ObjectId) -> bool,
    ) -> Result<Vec<Value>, Option<ObjectId>> {
        let refs: Vec<ObjectId> = self
            .tasks
            .get(&task)
            .ok_or(None)?
            .spec
            .dependencies()
            .collect();
        for id in refs {
            self.touch(id);
        }
        let record = self.tasks.get(&task).ok_or(None)?;
        record
            .spec
            .args
            .iter()
            .map(|arg| match arg {
                Arg::Value(bytes) => Ok(Value::Inline(bytes.clone())),
                Arg::Ref(id) => match self.objects.get(id).map(|e| &e.slot) {
                    Some(Slot::Ready(bytes)) => Ok(bytes.to_wire(*id)),
                    Some(Slot::Remote(len) | Slot::Restoring(len)) => {
                        Ok(Value::Shared { id: *id, len: *len })
                    }
                    Some(Slot::Spilled(len)) if elsewhere(*id) => {
                        Ok(Value::Shared { id: *id, len: *len })
                    }
                    Some(Slot::Spilled(_)) => Err(Some(*id)),
                    _ => Err(None),
                },
            })
            .collect()
    }

    /// Marks a task as sent to a worker.
    pub(crate) fn started(&mut self, task: TaskId, worker: WorkerId) {
        self.stamp += 1;
        if let Some(record) = self.tasks.get_mut(&task) {
            record.worker = Some(worker);
            record.sent_at = self.stamp;
        }
        let _ = self.graph.start_task(task);
        self.record(|events, now| events.sent(task, worker, now));
    }

    /// Takes back a task whose attempt ended without a result (its worker died, it panicked
    /// and may retry, an argument went missing): its next attempt. True when it can be
    /// scheduled now (see [`Owner::unstarted`]).
    pub(crate) fn rerun(&mut self, task: TaskId) -> bool {
        self.record(|events, now| events.again(task, TaskPhase::PendingArgs, now));
        self.unstarted(task)
    }

    /// Takes back a task that was sent to a worker (retry or hand-back). True when it can be
    /// scheduled now; false when it waits for an input being rebuilt, or failed with one.
    pub(crate) fn unstarted(&mut self, task: TaskId) -> bool {
        if let Some(record) = self.tasks.get_mut(&task) {
            record.worker = None;
        }
        let readiness = self.graph.retry_task(task);
        self.record_pending(task, matches!(readiness, Ok(Readiness::Ready)));
        match readiness {
            Ok(Readiness::Ready) => true,
            Ok(Readiness::Waiting) | Err(_) => false,
            Ok(Readiness::Failed(input)) => {
                self.fail_with_input(task, input);
                false
            }
        }
    }

    /// Fails `task` with the error of its failed input.
    fn fail_with_input(&mut self, task: TaskId, input: ObjectId) {
        let error = match self.objects.get(&input).map(|e| &e.slot) {
            Some(Slot::Failed(e)) => e.clone(),
            _ => unreachable!("the graph says {input} failed"),
        };
        self.fail(task, error);
    }

    /// A task returned its values. Returns the tasks that became ready.
    pub(crate) fn complete(
        &mut self,
        task: TaskId,
        values: Vec<Slot>,
        nested: Vec<Vec<ObjectId>>,
    ) -> Vec<TaskId> {
        let Some(record) = self.tasks.remove(&task) else {
            return Vec::new();
        };
        let ready = match self.graph.complete_task(task) {
            Ok(ready) => ready,
            Err(_) => return Vec::new(),
        };
        self.record(|events, now| {
            events.finished(task, now);
            for &next in &ready {
                events.phase(next, TaskPhase::PendingNode, now);
            }
        });
        let returns: Vec<ObjectId> = record.spec.return_ids().collect();
        let keep_lineage = record.spec.kind == TaskKind::Normal
            && record.spec.max_retries > 0
            && values.iter().any(|v| matches!(v, Slot::Remote(_)));
        self.stamp += 1;
        if let Some(lineage) = self.lineage.get_mut(&task) {
            lineage.made_after_losses = self.nodes_lost;
            lineage.made_at = self.stamp;
        } else if keep_lineage {
            // Its inputs stay held while its results can be asked to be rebuilt.
            for dep in record.spec.dependencies() {
                self.add_ref(dep);
            }
            let lineage = Lineage {
                spec: record.spec,
                rebuilds: 0,
                runs_again: 0,
                made_after_losses: self.nodes_lost,
                made_at: self.stamp,
            };
            self.lineage.insert(task, lineage);
        } else {
            self.end_task(&record.spec);
        }
        let mut nested = nested.into_iter();
        for (id, slot) in returns.into_iter().zip(values) {
            self.account(&slot);
            self.set_contains(id, nested.next().unwrap_or_default());
            self.set_slot(id, slot);
            self.touch(id);
        }
        self.stream_ended(task, None);
        ready
    }

    /// A task ended: its inputs are released unless its lineage holds them.
    fn end_task(&mut self, spec: &TaskSpec) {
        if !self.lineage.contains_key(&spec.task_id) {
            self.release_inputs(spec);
        }
    }

    /// The job lost a node: objects made before it may be rebuilt without charge (see
    /// [`Lineage`]).
    pub(crate) fn node_lost(&mut self) {
        self.nodes_lost += 1;
    }

    /// Whether object `id` was made again (rebuilt) after `task` was last sent: a worker's
    /// word that `task` did not find it then says nothing of the copy made since.
    pub(crate) fn remade_since_sent(&self, id: ObjectId, task: TaskId) -> bool {
        let (Some(lineage), Some(record)) = (self.lineage.get(&id.task), self.tasks.get(&task))
        else {
            return false;
        };
        // A task is sent only once its inputs were made: a later making is a rebuild.
        lineage.made_at > record.sent_at
    }

    /// A rebuild of `task` charged to its `max_retries` followed a node's loss after all (see
    /// [`Lineage`]): the charge is given back.
    pub(crate) fn refund_rebuild(&mut self, task: TaskId) {
        if let Some(lineage) = self.lineage.get_mut(&task) {
            lineage.rebuilds = lineage.rebuilds.saturating_sub(1);
        }
    }

    /// Every copy of `id` is gone (`is_lost` says which other objects share that fate): its
    /// task runs again when the owner kept its lineage and its retries allow, after the tasks
    /// of its lost inputs, and readers wait for the new value. Otherwise readers get
    /// [`TaskError::ObjectUnavailable`] with `reason`.
    pub(crate) fn rebuild(
        &mut self,
        id: ObjectId,
        is_lost: &dyn Fn(ObjectId) -> bool,
        reason: &str,
        out: &mut Rebuilt,
    ) {
        if !matches!(
            self.objects.get(&id).map(|e| &e.slot),
            Some(Slot::Remote(_))
        ) {
            return; // gone, already being rebuilt, or here after all
        }
        let task = id.task;
        let Some(lineage) = self.lineage.get_mut(&task) else {
            let why = if self.function_of(id).as_deref() == Some("put") {
                "it was made by put, which has no task to run again"
            } else {
                "its task cannot run again (an actor call, or max_retries = 0)"
            };
            return self.unavailable(id, format!("{reason}; {why}"));
        };
        let node_lost_since = self.nodes_lost > lineage.made_after_losses;
        if !node_lost_since {
            if lineage.rebuilds >= lineage.spec.max_retries {
                let why = format!(
                    "{reason}; no node was lost since it was made, and it was rebuilt {} time(s) so already (max_retries = {}; {} rebuild(s) in all)",
                    lineage.rebuilds, lineage.spec.max_retries, lineage.runs_again
                );
                return self.unavailable(id, why);
            }
            lineage.rebuilds += 1;
            out.charged.push(id);
        }
        lineage.runs_again += 1;
        let spec = lineage.spec.clone();
        for dep in spec.dependencies() {
            if is_lost(dep) {
                self.rebuild(dep, is_lost, reason, out);
            }
        }
        let Ok((readiness, held_back)) = self.graph.reopen_task(task) else {
            return self.unavailable(id, format!("{reason}; its task is no longer known"));
        };
        for out_id in spec.return_ids() {
            self.fetching_here.remove(&out_id);
            if let Some(entry) = self.objects.get_mut(&out_id) {
                entry.slot = Slot::Pending;
            }
        }
        self.tasks.insert(task, TaskRecord::new(spec));
        let ready = matches!(readiness, Readiness::Ready);
        self.record(|events, now| {
            events.again(task, events::pending(ready), now);
            for &waits in &held_back {
                events.phase(waits, TaskPhase::PendingArgs, now);
            }
        });
        out.held_back.extend(held_back);
        // An input whose own rebuild was impossible fails the task with its error.
        let unavailable_input = self.tasks[&task].spec.dependencies().find_map(|dep| {
            match self.objects.get(&dep).map(|e| &e.slot) {
                Some(Slot::Failed(error)) => Some(error.clone()),
                _ => None,
            }
        });
        match (unavailable_input, readiness) {
            (Some(error), _) => {
                self.fail(task, error);
            }
            (None, Readiness::Ready) => out.ready.push(task),
            (None, Readiness::Waiting) => {}
            (None, Readiness::Failed(input)) => self.fail_with_input(task, input),
        }
    }

    /// A task failed for good: its outputs and every task downstream fail with `error`.
    pub(crate) fn fail(&mut self, task: TaskId, error: TaskError) -> Vec<TaskId> {
        let downstream = match self.graph.fail_task(task) {
            Ok(downstream) => downstream,
            Err(_) => return Vec::new(),
        };
        self.finish_failed(task, error.clone());
        for &t in &downstream {
            self.finish_failed(t, error.clone());
        }
        downstream
    }

    fn finish_failed(&mut self, task: TaskId, error: TaskError) {
        self.record(|events, now| events.failed(task, || error.to_string(), now));
        if let Some(record) = self.tasks.remove(&task) {
            if matches!(record.spec.kind, TaskKind::ActorCreation { .. }) {
                self.failed_creations.push((task, error.clone()));
            }
            self.end_task(&record.spec);
            for id in record.spec.return_ids() {
                self.set_slot(id, Slot::Failed(error.clone()));
            }
            self.stream_ended(task, Some(&error));
        }
    }

    fn set_slot(&mut self, id: ObjectId, slot: Slot) {
        let Some(entry) = self.objects.get_mut(&id) else {
            return;
        };
        for waker in entry.waiters.drain(..) {
            waker.wake();
        }
        for worker in entry.worker_waiters.drain(..) {
            self.notices.push(WorkerNotice {
                worker,
                id,
                slot: slot.clone(),
            });
        }
        entry.slot = slot;
        if entry.refs == 0 {
            self.try_free(id, Releaser::Earlier);
        }
    }

    fn release_inputs(&mut self, spec: &TaskSpec) {
        for id in &spec.inlined_refs {
            self.release(*id);
        }
        self.released_actors.extend(&spec.inlined_actors);
        for dep in spec.dependencies() {
            if self.objects.get(&dep).is_some_and(|e| e.refs == 0) {
                self.try_free(dep, Releaser::Owner);
            }
        }
    }

    /// Polls an object for a reader in this process.
    pub(crate) fn poll(&mut self, id: ObjectId, waker: &Waker) -> Poll<Option<&Slot>> {
        let Some(entry) = self.objects.get_mut(&id) else {
            return Poll::Ready(None);
        };
        if let Slot::Pending | Slot::Remote(_) | Slot::Restoring(_) = entry.slot {
            if !entry.waiters.iter().any(|w| w.will_wake(waker)) {
                entry.waiters.push(waker.clone());
            }
            if let Slot::Remote(len) = entry.slot
                && self.fetching_here.insert(id)
            {
                self.wanted_here.push((id, len));
            }
            return Poll::Pending;
        }
        self.tick += 1;
        entry.last_use = self.tick;
        Poll::Ready(Some(&entry.slot))
    }

    /// When `id` was last used (higher: later) and whether a task that waits or runs still
    /// needs it: what a full store lets go first.
    pub(crate) fn use_of(&self, id: ObjectId) -> Option<(u64, bool)> {
        let entry = self.objects.get(&id)?;
        Some((entry.last_use, self.graph.has_pending_consumers(id)))
    }

    /// Whether `id`'s value is still to come (its task queued or running: a lost object's
    /// rebuild, for an object that was made before).
    pub(crate) fn pending(&self, id: ObjectId) -> bool {
        matches!(self.objects.get(&id).map(|e| &e.slot), Some(Slot::Pending))
    }

    /// Whether the owner still tracks `id`.
    pub(crate) fn knows(&self, id: ObjectId) -> bool {
        self.objects.contains_key(&id)
    }

    /// The length of an object that lives in a store (here or on another node).
    pub(crate) fn stored_len(&self, id: ObjectId) -> Option<u64> {
        match self.objects.get(&id).map(|e| &e.slot)? {
            Slot::Ready(bytes @ ObjectBytes::Shared(_)) => Some(bytes.len() as u64),
            Slot::Remote(len) | Slot::Spilled(len) | Slot::Restoring(len) => Some(*len),
            _ => None,
        }
    }

    /// Whether this process's store holds the object's segment.
    pub(crate) fn stored_here(&self, id: ObjectId) -> bool {
        matches!(
            self.objects.get(&id).map(|e| &e.slot),
            Some(Slot::Ready(ObjectBytes::Shared(_)) | Slot::Restoring(_))
        )
    }

    /// The function that makes the object.
    pub(crate) fn function_of(&self, id: ObjectId) -> Option<Arc<str>> {
        self.objects.get(&id).map(|e| e.function.clone())
    }

    /// Why the owner still keeps `id`: its references, value, lineage and consumers (for
    /// diagnostics).
    pub(crate) fn explain(&self, id: ObjectId) -> String {
        let Some(entry) = self.objects.get(&id) else {
            return format!("{id} is not kept");
        };
        let holders: Vec<TaskId> = self
            .lineage
            .iter()
            .filter(|(_, l)| l.spec.dependencies().any(|d| d == id))
            .map(|(t, _)| *t)
            .collect();
        format!(
            "{id}: {} reference(s), {:?}, lineage of its task kept: {}, kept as input by the lineage of {holders:?}, consumers pending: {}, its task: {:?}",
            entry.refs,
            entry.slot,
            self.lineage.contains_key(&id.task),
            self.graph.has_pending_consumers(id),
            self.task_state(id.task),
        )
    }

    /// The object's value as it stands (without counting a read).
    pub(crate) fn peek(&self, id: ObjectId) -> Option<&Slot> {
        self.objects.get(&id).map(|e| &e.slot)
    }

    /// A worker wants the object: a notice now if it is done, or when it is.
    pub(crate) fn subscribe(&mut self, id: ObjectId, worker: WorkerId) {
        self.touch(id);
        match self.objects.get_mut(&id) {
            None if awaitable(&self.tasks, &self.forgotten, id) => {
                self.awaited.wait(id, worker, self.now)
            }
            None => self.notices.push(WorkerNotice {
                worker,
                id,
                slot: Slot::Failed(TaskError::InvalidValue {
                    task: id.task,
                    function: String::from("<unknown>"),
                    what: format!("object {id}"),
                    reason: self.unknown_reason(id),
                }),
            }),
            Some(entry) => match &entry.slot {
                Slot::Pending => entry.worker_waiters.push(worker),
                slot => self.notices.push(WorkerNotice {
                    worker,
                    id,
                    slot: slot.clone(),
                }),
            },
        }
    }

    /// Whether `id`, not known here, may still be: not freed lately, and either a worker's
    /// (its hand-over or put may be on its way) or of a task of the driver's it knows (a
    /// `put` of the worker that runs it); see [`awaited`].
    fn awaitable(&self, id: ObjectId) -> bool {
        !self.objects.contains_key(&id) && awaitable(&self.tasks, &self.forgotten, id)
    }

    /// Stores a new object: what was said of it while it was awaited is its now.
    fn insert_object(&mut self, id: ObjectId, entry: ObjectEntry) {
        self.objects.insert(id, entry);
        if self.awaited.is_empty() {
            return;
        }
        let Some(arrived) = self.awaited.arrived(id) else {
            return;
        };
        let mut refs = arrived.refs;
        for worker in arrived.holders {
            if self.held_by.entry(worker).or_default().insert(id) {
                refs += 1;
            }
        }
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.refs = (i64::from(entry.refs) + refs).clamp(0, i64::from(u32::MAX)) as u32;
        }
        for worker in arrived.waiters {
            self.subscribe(id, worker);
        }
        self.unpark_due.extend(arrived.tasks);
    }

    /// Tasks waiting for inputs that came (see [`Owner::insert_object`]) go into the graph
    /// once all have: those ready now are for the node to queue ([`Owner::unparked`]).
    fn unpark(&mut self) {
        if self.unpark_due.is_empty() {
            return;
        }
        for task in std::mem::take(&mut self.unpark_due) {
            let Some(deps) = self.parked.get(&task) else {
                continue;
            };
            if deps.iter().any(|d| !self.objects.contains_key(d)) {
                continue;
            }
            let deps = self.parked.remove(&task).unwrap_or_default();
            let Some(record) = self.tasks.get(&task) else {
                continue;
            };
            let (num_returns, function) = (record.spec.num_returns, record.spec.function.clone());
            let added = self.graph.add_task(task, &deps, num_returns);
            if self.added(task, &deps, num_returns, added, function) {
                self.unparked.push(task);
            }
        }
    }

    /// A task waiting for an input that will not come (`error`) fails.
    fn fail_parked(&mut self, task: TaskId, error: &TaskError) {
        if self.parked.remove(&task).is_none() {
            return;
        }
        let Some(num_returns) = self.tasks.get(&task).map(|r| r.spec.num_returns) else {
            return;
        };
        self.graph
            .add_task(task, &[], num_returns)
            .expect("a fresh task id without inputs always fits");
        self.fail(task, error.clone());
    }

    /// Whether objects are awaited (see [`awaited`]).
    pub(crate) fn awaits_objects(&self) -> bool {
        !self.awaited.is_empty()
    }

    /// Objects awaited for [`awaited::AWAIT_LIMIT`]: their asks fail, as for an object
    /// never known.
    pub(crate) fn expire_awaited(&mut self, now: std::time::Instant) {
        if self.awaited.is_empty() {
            return;
        }
        for (id, gone) in self.awaited.expired(now) {
            let reason = format!(
                "no word of it reached the job within {} s of the first read (it was never made, or its maker's word was lost)",
                awaited::AWAIT_LIMIT.as_secs()
            );
            tracing::warn!(object = %id, "{reason}");
            let error = TaskError::InvalidValue {
                task: id.task,
                function: String::from("<unknown>"),
                what: format!("object {id}"),
                reason,
            };
            self.fail_awaited(id, gone, &error);
        }
    }

    /// Worker `owner` is gone: the objects of its tasks awaited here never come; their asks
    /// fail with `error(id)`.
    pub(crate) fn awaited_owner_gone(
        &mut self,
        owner: WorkerId,
        error: impl Fn(ObjectId) -> TaskError,
    ) {
        if self.awaited.is_empty() {
            return;
        }
        for (id, gone) in self.awaited.owner_gone(owner) {
            self.fail_awaited(id, gone, &error(id));
        }
    }

    fn fail_awaited(&mut self, id: ObjectId, gone: awaited::Gone, error: &TaskError) {
        for task in gone.tasks {
            self.fail_parked(task, error);
        }
        for worker in gone.waiters {
            self.notices.push(WorkerNotice {
                worker,
                id,
                slot: Slot::Failed(error.clone()),
            });
        }
    }

    pub(crate) fn add_ref(&mut self, id: ObjectId) {
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.refs += 1;
        }
    }

    /// The owner lets a reference to `id` go (see [`Owner::release_by`]).
    pub(crate) fn release(&mut self, id: ObjectId) {
        self.release_by(id, Releaser::Owner);
    }

    /// `by` released a reference to `id`: the object goes with its last one.
    pub(crate) fn release_by(&mut self, id: ObjectId, by: Releaser) {
        if !self.awaited.is_empty() && !self.objects.contains_key(&id) {
            self.awaited.release(id);
        }
        if let Some(entry) = self.objects.get_mut(&id) {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                if self.is_stream_end(id) {
                    self.stream_dropped(id.task);
                }
                self.try_free(id, by);
            }
        }
    }

    /// Why `id` is not known here: freed lately (by whose release), or never seen.
    pub(crate) fn why_unknown(&self, id: ObjectId) -> Option<Releaser> {
        self.forgotten.why(id)
    }

    /// [`Owner::why_unknown`] in words.
    fn unknown_reason(&self, id: ObjectId) -> String {
        match self.why_unknown(id) {
            Some(by) => format!("the object was freed before this read ({by})"),
            None => NEVER_KNOWN.into(),
        }
    }

    /// A worker dropped its hold on objects.
    pub(crate) fn worker_released(&mut self, worker: WorkerId, ids: &[ObjectId]) {
        if !self.awaited.is_empty() {
            for &id in ids {
                self.awaited.unhold(id, worker);
            }
        }
        let Some(held) = self.held_by.get_mut(&worker) else {
            return;
        };
        let dropped: Vec<ObjectId> = ids.iter().copied().filter(|id| held.remove(id)).collect();
        for id in dropped {
            self.release_by(id, Releaser::Worker(worker));
        }
    }

    /// A worker read references to objects it did not create: it holds them until it says
    /// otherwise (or dies).
    pub(crate) fn worker_holds(&mut self, worker: WorkerId, ids: &[ObjectId]) {
        for &id in ids {
            if !self.objects.contains_key(&id) {
                if self.awaitable(id) {
                    self.awaited.hold(id, worker, self.now);
                }
                continue;
            }
            if self.held_by.entry(worker).or_default().insert(id) {
                self.add_ref(id);
            }
        }
    }

    /// Another worker holds these objects for `worker` (the values of a task it owns, which
    /// ran there): one hold each, counted apart from `worker`'s own (see [`HeldFor`]).
    pub(crate) fn hold_for(&mut self, worker: WorkerId, ids: &[ObjectId]) {
        let held = self.held_for.entry(worker).or_default();
        let first: Vec<ObjectId> = ids.iter().copied().filter(|&id| held.hold(id)).collect();
        for id in first {
            if self.objects.contains_key(&id) {
                self.add_ref(id);
            } else if self.awaitable(id) {
                self.awaited.add_ref(id, self.now);
            } else {
                tracing::debug!(worker, object = %id, "a hold taken for a worker names an object already freed");
            }
        }
    }

    /// `worker` lets go of holds taken for it ([`Owner::hold_for`]).
    pub(crate) fn release_held(&mut self, worker: WorkerId, ids: &[ObjectId]) {
        let held = self.held_for.entry(worker).or_default();
        let last: Vec<ObjectId> = ids.iter().copied().filter(|&id| held.release(id)).collect();
        if held.is_empty() {
            self.held_for.remove(&worker);
        }
        for id in last {
            self.release_by(id, Releaser::Worker(worker));
        }
    }

    /// A worker is gone: drop its holds and its subscriptions.
    pub(crate) fn worker_gone(&mut self, worker: WorkerId) {
        self.awaited.worker_gone(worker);
        if let Some(held) = self.held_by.remove(&worker) {
            for id in held {
                self.release_by(id, Releaser::WorkerGone(worker));
            }
        }
        if let Some(held) = self.held_for.remove(&worker) {
            for id in held.into_held() {
                self.release_by(id, Releaser::WorkerGone(worker));
            }
        }
        for entry in self.objects.values_mut() {
            entry.worker_waiters.retain(|w| *w != worker);
        }
        self.notices.retain(|n| n.worker != worker);
    }

    /// The objects known here whose ids name `owner` as the owner of their task: the ones a
    /// worker handed over (its puts, its tasks' results), which this owner keeps now.
    pub(crate) fn objects_of(&self, owner: WorkerId) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = (self.objects.keys())
            .filter(|id| id.task.owner == owner)
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    fn try_free(&mut self, id: ObjectId, by: Releaser) {
        let Some(entry) = self.objects.get(&id) else {
            return;
        };
        if entry.refs > 0
            || matches!(entry.slot, Slot::Pending)
            || self.graph.has_pending_consumers(id)
        {
            return;
        }
        let Some(entry) = self.objects.remove(&id) else {
            return;
        };
        match entry.slot {
            Slot::Ready(ObjectBytes::Shared(segment)) => {
                let len = segment.bytes().len() as u64;
                self.stored_bytes = self.stored_bytes.saturating_sub(len);
                // Nobody in this process maps it when this is the last handle.
                let unused = Arc::try_unwrap(segment).ok();
                self.freed_files.push(FreedFile::Shared { id, len, unused });
            }
            Slot::Restoring(len) => {
                self.stored_bytes = self.stored_bytes.saturating_sub(len);
                let unused = None;
                self.freed_files.push(FreedFile::Shared { id, len, unused });
            }
            Slot::Spilled(len) => {
                self.spilled_bytes = self.spilled_bytes.saturating_sub(len);
                self.freed_files.push(FreedFile::Spilled { id });
            }
            _ => {}
        }
        self.fetching_here.remove(&id);
        self.freed.push(id);
        self.forgotten.freed(id, by);
        let _ = self.graph.remove_object(id);
        if let Some(lineage) = self.lineage.get(&id.task)
            && lineage
                .spec
                .return_ids()
                .all(|out| !self.objects.contains_key(&out))
        {
            // Nothing can ask for a rebuild any more: its inputs go.
            let lineage = self.lineage.remove(&id.task).expect("looked up above");
            for dep in lineage.spec.dependencies() {
                self.release(dep);
            }
            self.release_inputs(&lineage.spec);
        }
        // What its value referred to no longer needs to live for it.
        for inner in entry.contains {
            self.release_by(inner, Releaser::Container(id));
        }
        self.released_actors.extend(entry.actors);
    }

    /// A description of a task for messages: `0.5 (quickstart::add)`.
    pub(crate) fn describe(&self, task: TaskId) -> String {
        match self.tasks.get(&task) {
            Some(r) => format!("{task} ({})", r.spec.function),
            None => task.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seq: u64, args: Vec<Arg>) -> TaskSpec {
        TaskSpec::call(TaskId::new(0, seq), format!("tests::f{seq}"), args)
    }

    fn inline() -> Slot {
        Slot::Ready(ObjectBytes::Inline(Arc::new(rkyv::util::AlignedVec::new())))
    }

    fn out(seq: u64) -> ObjectId {
        ObjectId::new(TaskId::new(0, seq), 0)
    }

    #[test]
    fn a_read_after_the_free_names_the_release_that_freed_it() {
        let mut owner = Owner::default();
        let reason_for = |owner: &mut Owner, id: ObjectId| {
            owner.subscribe(id, 9);
            match owner.notices.pop().map(|n| n.slot) {
                Some(Slot::Failed(TaskError::InvalidValue { reason, .. })) => reason,
                other => panic!("a failure for the late read, not {other:?}"),
            }
        };
        // A put held by worker 3 alone, released by it; a task's value the driver dropped.
        owner.put(out(1), inline(), Some(3), Vec::new());
        owner.worker_released(3, &[out(1)]);
        owner.submit(spec(2, vec![]), None);
        owner.started(TaskId::new(0, 2), 1);
        owner.complete(TaskId::new(0, 2), vec![inline()], vec![]);
        owner.release_by(out(2), Releaser::Driver);
        // A container whose value refers to a put: freed with it.
        owner.put(out(3), inline(), None, Vec::new());
        owner.put(out(4), inline(), None, vec![out(3)]);
        owner.release(out(3));
        owner.release_by(out(4), Releaser::Driver);
        let reasons: Vec<String> = (1..=4)
            .map(|seq| reason_for(&mut owner, out(seq)))
            .collect();
        assert!(
            reasons[0].contains("worker 3 released its last hold"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("the driver dropped its last handle"),
            "{reasons:?}"
        );
        assert!(
            reasons[2].contains("object 0.4/0, whose value referred to it"),
            "{reasons:?}"
        );
        assert!(reasons[3].contains("the driver"), "{reasons:?}");
        assert!(
            reason_for(&mut owner, out(5)).contains("freed long ago, or from another cluster"),
            "an object never seen says so"
        );
    }

    #[test]
    fn a_value_referring_to_an_unknown_object_takes_no_hold_on_it() {
        // Its free must not let go of the hold the object's own holder takes later.
        let mut owner = Owner::default();
        owner.put(out(6), inline(), None, vec![out(7)]);
        owner.put(out(7), inline(), Some(3), Vec::new());
        owner.release_by(out(6), Releaser::Driver);
        assert!(owner.peek(out(7)).is_some(), "worker 3 still holds it");
    }

    #[test]
    fn objects_live_while_referenced_or_needed_and_are_freed_after() {
        let mut owner = Owner::default();
        assert!(owner.submit(spec(1, vec![]), None));
        assert!(!owner.submit(spec(2, vec![Arg::Ref(out(1))]), None));
        owner.release(out(1)); // the driver dropped its ref; task 2 still needs it
        owner.started(TaskId::new(0, 1), 1);
        assert_eq!(
            owner.complete(TaskId::new(0, 1), vec![inline()], vec![]),
            vec![TaskId::new(0, 2)]
        );
        assert!(matches!(owner.peek(out(1)), Some(Slot::Ready(_))));
        assert_eq!(
            owner
                .resolve_args(TaskId::new(0, 2), |_| false)
                .unwrap()
                .len(),
            1
        );
        owner.started(TaskId::new(0, 2), 1);
        owner.complete(TaskId::new(0, 2), vec![inline()], vec![]);
        assert!(
            owner.peek(out(1)).is_none(),
            "freed once its consumer ended"
        );
        assert_eq!(owner.object_count(), 1);
        owner.release(out(2));
        assert_eq!(owner.object_count(), 0);
    }

    fn retried(seq: u64, args: Vec<Arg>) -> TaskSpec {
        TaskSpec {
            max_retries: 1,
            ..spec(seq, args)
        }
    }

    fn run(owner: &mut Owner, seq: u64, slot: Slot) -> Vec<TaskId> {
        owner.started(TaskId::new(0, seq), 1);
        owner.complete(TaskId::new(0, seq), vec![slot], vec![])
    }

    #[test]
    fn a_loss_that_a_node_loss_explains_is_rebuilt_without_charge() {
        let mut owner = Owner::default();
        owner.submit(retried(1, vec![]), None);
        owner.submit(retried(2, vec![Arg::Ref(out(1))]), None);
        run(&mut owner, 1, Slot::Remote(10));
        run(&mut owner, 2, Slot::Remote(20));
        owner.release(out(1));
        // Lost with a node five times over: 1 then 2 run again each time, beyond their
        // budget of one.
        for _ in 0..5 {
            owner.node_lost();
            let mut rebuilt = Rebuilt::default();
            owner.rebuild(out(2), &|_| true, "its node was lost", &mut rebuilt);
            assert_eq!(rebuilt.ready, vec![TaskId::new(0, 1)]);
            run(&mut owner, 1, Slot::Remote(10));
            run(&mut owner, 2, Slot::Remote(20));
        }
        // Lost with no node lost since it was made: charged, once.
        let mut rebuilt = Rebuilt::default();
        owner.rebuild(out(2), &|_| false, "a pull failed", &mut rebuilt);
        assert_eq!(rebuilt.ready, vec![TaskId::new(0, 2)]);
        run(&mut owner, 2, Slot::Remote(20));
        owner.rebuild(out(2), &|_| false, "a pull failed", &mut rebuilt);
        assert!(matches!(owner.peek(out(2)),
            Some(Slot::Failed(TaskError::ObjectUnavailable { reason, .. }))
                if reason.contains("rebuilt 1 time(s) so already (max_retries = 1; 6 rebuild(s) in all)")));
    }

    /// Task 1 (retried) made its value elsewhere; task 2, taking it, was sent to worker 1.
    fn input_made_and_consumer_sent() -> Owner {
        let mut owner = Owner::default();
        owner.submit(retried(1, vec![]), None);
        owner.submit(spec(2, vec![Arg::Ref(out(1))]), None);
        run(&mut owner, 1, Slot::Remote(10));
        owner.started(TaskId::new(0, 2), 1);
        owner
    }

    #[test]
    fn a_task_sent_before_its_input_was_rebuilt_knows_the_input_was_made_again() {
        let mut owner = input_made_and_consumer_sent();
        assert!(!owner.remade_since_sent(out(1), TaskId::new(0, 2)));
        // The input is lost and made again while task 2 runs: a report of task 2's that it
        // did not find the input is older than the new copy.
        owner.node_lost();
        let mut rebuilt = Rebuilt::default();
        owner.rebuild(out(1), &|_| true, "its node was lost", &mut rebuilt);
        run(&mut owner, 1, Slot::Remote(10));
        assert!(owner.remade_since_sent(out(1), TaskId::new(0, 2)));
        // Sent again after that, it would have found it.
        owner.started(TaskId::new(0, 2), 1);
        assert!(!owner.remade_since_sent(out(1), TaskId::new(0, 2)));
    }

    #[test]
    fn lost_remote_objects_are_rebuilt_from_their_lineage_inputs_first() {
        let mut owner = Owner::default();
        // 1 -> 2 -> 3, each result stored on another node; 3 is not retried.
        owner.submit(retried(1, vec![]), None);
        owner.submit(retried(2, vec![Arg::Ref(out(1))]), None);
        owner.submit(spec(3, vec![Arg::Ref(out(2))]), None);
        run(&mut owner, 1, Slot::Remote(10));
        run(&mut owner, 2, Slot::Remote(20));
        run(&mut owner, 3, Slot::Remote(30));
        owner.release(out(1));
        assert!(
            matches!(owner.peek(out(1)), Some(Slot::Remote(10))),
            "the lineage of 2 holds its input"
        );
        // A consumer of 2 that is ready when 2 is lost waits again.
        owner.submit(spec(4, vec![Arg::Ref(out(2))]), None);

        let mut rebuilt = Rebuilt::default();
        owner.rebuild(out(2), &|_| true, "its node was lost", &mut rebuilt);
        assert_eq!(
            rebuilt.ready,
            vec![TaskId::new(0, 1)],
            "the input runs first"
        );
        assert_eq!(rebuilt.held_back, vec![TaskId::new(0, 4)]);
        assert!(matches!(owner.peek(out(2)), Some(Slot::Pending)));
        assert_eq!(
            run(&mut owner, 1, Slot::Remote(10)),
            vec![TaskId::new(0, 2)]
        );
        assert_eq!(
            run(&mut owner, 2, Slot::Remote(20)),
            vec![TaskId::new(0, 4)]
        );
        assert!(matches!(owner.peek(out(2)), Some(Slot::Remote(20))));

        // With no node lost, the budget is max_retries; a task without retries has no
        // lineage.
        let mut again = Rebuilt::default();
        owner.rebuild(out(2), &|_| false, "lost again", &mut again);
        assert!(again.ready.is_empty());
        assert!(matches!(owner.peek(out(2)),
            Some(Slot::Failed(TaskError::ObjectUnavailable { reason, .. }))
                if reason.contains("no node was lost since it was made, and it was rebuilt 1 time(s) so already (max_retries = 1; 1 rebuild(s) in all)")));
        owner.rebuild(out(3), &|_| false, "lost", &mut again);
        assert!(matches!(owner.peek(out(3)),
            Some(Slot::Failed(TaskError::ObjectUnavailable { function, reason, .. }))
                if function == "tests::f3" && reason.contains("max_retries = 0")));

        // Dropping the last result lets the lineage, and the input it held, go.
        run(&mut owner, 4, inline());
        for seq in [2, 3, 4] {
            owner.release(out(seq));
        }
        assert_eq!(owner.object_count(), 0);
        assert!(owner.lineage.is_empty());
    }

    #[test]
    fn a_task_whose_argument_is_rebuilt_waits_for_it() {
        let mut owner = input_made_and_consumer_sent();
        let mut rebuilt = Rebuilt::default();
        owner.rebuild(out(1), &|_| true, "lost", &mut rebuilt);
        // Task 2 was on its way to a worker, which could not find its argument.
        assert!(matches!(owner.peek(out(1)), Some(Slot::Pending)));
        assert!(!owner.unstarted(TaskId::new(0, 2)), "it waits");
        assert_eq!(
            run(&mut owner, 1, Slot::Remote(10)),
            vec![TaskId::new(0, 2)]
        );
    }

    #[test]
    fn failures_reach_downstream_objects_and_subscribed_workers() {
        let mut owner = Owner::default();
        owner.submit(spec(1, vec![]), None);
        owner.submit(spec(2, vec![Arg::Ref(out(1))]), Some(3));
        owner.subscribe(out(2), 3);
        let error = TaskError::Panicked {
            task: TaskId::new(0, 1),
            function: "tests::f1".into(),
            message: "boom".into(),
        };
        assert_eq!(
            owner.fail(TaskId::new(0, 1), error.clone()),
            vec![TaskId::new(0, 2)]
        );
        assert!(matches!(owner.peek(out(2)), Some(Slot::Failed(e)) if *e == error));
        assert_eq!(owner.notices.len(), 1);
        owner.worker_gone(3);
        assert!(
            owner.peek(out(2)).is_none(),
            "the worker's hold went with it"
        );
    }

    /// The owner decides what to spill and records what its shell did; no file is touched
    /// here but the segments the test makes.
    #[test]
    fn spilling_restoring_and_freeing_are_decided_here_and_done_by_the_shell() {
        const MIB: usize = 1 << 20;
        let dir = std::env::temp_dir().join(format!("prism-owner-test-{}", std::process::id()));
        crate::files::private_dir(&dir).unwrap();
        let shared = |seq: u64| {
            let segment = Segment::create_with(&dir, out(seq), MIB, |buf| {
                buf.fill(seq as u8);
                Ok::<_, std::convert::Infallible>(buf.len())
            })
            .unwrap();
            Slot::Ready(ObjectBytes::Shared(Arc::new(segment)))
        };
        let mut owner = Owner::new(3 * MIB as u64);
        for seq in 1..=3 {
            owner.put(out(seq), shared(seq), None, Vec::new());
        }
        assert_eq!(owner.overflow(0), 0);
        assert_eq!(
            owner.overflow(MIB as u64),
            MIB as u64,
            "a fourth MiB does not fit"
        );
        // The least recently used goes first.
        owner.subscribe(out(1), 7);
        owner.notices.clear();
        let (victim, segment) = owner.spill_victim(None).unwrap();
        assert_eq!(victim, out(2));
        assert_eq!(segment.bytes()[0], 2);
        assert_eq!(owner.spill_victim(Some(out(2))).unwrap().0, out(3));
        owner.spilled(out(2));
        assert_eq!(
            (owner.stored_bytes, owner.spilled_bytes),
            (2 * MIB as u64, MIB as u64)
        );
        assert_eq!(owner.spilled_len(out(2)), Some(MIB as u64));
        // A restore counts the object as stored at once (the shell restores it before
        // anything decided later); a failed one fails the object, naming it and why.
        owner.restoring(out(2));
        assert_eq!(
            (owner.stored_bytes, owner.spilled_bytes),
            (3 * MIB as u64, 0)
        );
        owner.restored(out(2), Err("the disk is gone".into()));
        match owner.peek(out(2)) {
            Some(Slot::Failed(e)) => assert!(e.to_string().contains("the disk is gone"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(
            (owner.stored_bytes, owner.spilled_bytes),
            (2 * MIB as u64, 0)
        );
        // A spilled object freed leaves its spill file to the shell; a shared one its segment,
        // unused once this was the last handle.
        owner.spilled(out(3));
        owner.release(out(3));
        owner.release(out(1));
        let freed: Vec<String> = owner
            .freed_files
            .drain(..)
            .map(|f| match f {
                FreedFile::Spilled { id } => format!("spilled {id}"),
                FreedFile::Shared { id, len, unused } => {
                    format!("shared {id} {len} {}", unused.is_some())
                }
            })
            .collect();
        assert_eq!(
            freed,
            vec![
                format!("spilled {}", out(3)),
                format!("shared {} {MIB} true", out(1))
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
