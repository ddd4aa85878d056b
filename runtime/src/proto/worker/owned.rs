//! The plain tasks a worker owns (DESIGN.md §3-4, the NSDI'21 ownership paper): once its node
//! says so ([`ToWorker::OwnTasks`]), a worker keeps the specs and results of the plain tasks it
//! submits, asks its node for leases on workers of each task's resource shape
//! ([`ToNode::Lease`]), and pushes its tasks to the leased workers itself
//! ([`ToWorker::Push`], relayed by the node in a [`ToNode::Forward`]); their ends come back
//! the same way ([`ToWorker::Returned`]). The node grants leases and relays frames; it keeps
//! none of the tasks.
//!
//! Which tasks: plain calls without a placement group or a stream, and calls to actors (pushed
//! to the actor's worker in the order they are made: [`calls`]); actors' creations,
//! generators and tasks in groups go to the node as before. A reference to an
//! owned object that leaves the worker (inside a value, a put or another task's arguments) is
//! handed to the node first ([`Worker::promote`]): its value goes to the node, which owns it
//! from then on (its lineage stays here). A value too large to come back inside its task's
//! end stays on the node that made it, and the tasks that read it are leased there ([`left`]).
//!
//! [`ToWorker::OwnTasks`]: prism_transport::ToWorker::OwnTasks
//! [`ToWorker::Push`]: prism_transport::ToWorker::Push
//! [`ToWorker::Returned`]: prism_transport::ToWorker::Returned

use std::collections::VecDeque;
use std::sync::Arc;

use prism_graph::{Arg, IdMap, IdSet, ObjectId, Resources, TaskError, TaskId, TaskKind, TaskSpec};
use prism_transport::{
    ArchivedTaskEnd, ArchivedValue, Execute, HandedTask, Outcome, OwnedEvent, OwnedPhase, RunTimes,
    ToNode, ToWorker, Value,
};

use super::{Ended, Worker};
use crate::proto::owner::Slot;
use crate::store::ObjectBytes;

mod calls;
mod left;

/// How many tasks a new lease's worker is sent ahead of their ends: few, so that slow tasks
/// spread over the leases (a deep pipeline down the first would leave the others idle)...
const PIPELINE_START: usize = 2;
/// ...doubled while its ends come less than [`SHORT_TASK_US`] apart (tasks shorter than the
/// trip back through the node would leave it idle), up to this many (a lease is a worker of
/// the owner's own, one per worker: this is how short tasks keep it busy), and halved again
/// while they come more than [`LONG_TASK_US`] apart.
pub(crate) const PIPELINE_MAX: usize = 16;
/// See [`PIPELINE_MAX`]: at most 16 such tasks wait behind one another (1.6 ms).
const SHORT_TASK_US: u64 = 100;
/// See [`PIPELINE_MAX`].
const LONG_TASK_US: u64 = 1_000;

/// The most lease asks of one shape an owner has waiting at once (Ray's owners: 10 per
/// scheduling class).
const MAX_ASKS: usize = 16;

/// Changes of owned tasks go to the node in batches of up to this many (about 64 bytes
/// each)...
const EVENTS_BATCH: usize = 16_384;
/// ...or at least this often (microseconds) while owned tasks are under way, and at once
/// when none is left: a fan-out's events are a message a second (Ray's workers report theirs
/// each second too), not one per task. (Batches of 1,024 or 20 ms were 35-40 of the driver's
/// messages for 10,000 children.)
const EVENTS_EVERY_US: u64 = 1_000_000;

/// Where an owned task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Waiting for this many of its arguments.
    Waiting(usize),
    /// In its shape's queue.
    Queued,
    /// Pushed to the worker of lease `key`.
    Pushed(TaskId),
    /// Running here, on top of this worker's blocked task.
    Here,
    /// An actor's call, pushed to the actor's worker.
    Called(prism_graph::ActorId),
}

#[derive(Debug)]
struct Task {
    spec: TaskSpec,
    at: At,
    /// Runs started so far, as its retries count them (a push that never started, handed
    /// back or behind a lease that ended, does not count).
    attempts: u32,
    /// Pushes so far, each numbered (`Execute::run`): never taken back, so that an end names
    /// the one push it answers (a push counted out of `attempts` may have run after all, its
    /// end on its way across a partition).
    runs: u32,
}

/// The tasks of one resource shape waiting for a worker, and the leases serving them.
#[derive(Debug)]
struct Shape {
    resources: Resources,
    queue: VecDeque<TaskId>,
    /// The keys of the leases asked for and not granted yet (and of the lease on this worker
    /// itself while it runs under one: see `Owned::here`).
    asked: Vec<TaskId>,
}

#[derive(Debug)]
struct Lease {
    shape: usize,
    worker: u64,
    /// The peer address of the leased worker's node when it is not this worker's: the
    /// pushes name it, and carry their arguments' values (the worker there cannot map this
    /// node's shared memory).
    at: Option<String>,
    /// The leased worker's direct endpoint, when it has one: the frames for it go there
    /// ([`super::DirectTo::Endpoint`]), not through the nodes' relays.
    direct: Option<String>,
    inflight: VecDeque<TaskId>,
    /// How many tasks its worker is sent ahead of their ends (see [`PIPELINE_START`]).
    depth: usize,
    /// When its last end came, by the host's clock.
    last_end_us: Option<u64>,
    /// Its worker handed tasks back (it blocked): nothing more is pushed, and the lease goes
    /// back once what it still runs has ended (until then its loss is still reported).
    closed: bool,
}

/// A value an owned task made: what it refers to, for when it is handed to the node.
#[derive(Debug, Clone)]
struct Made {
    nested: Vec<ObjectId>,
    actors: Vec<prism_graph::ActorId>,
    /// The node holds what it refers to for this worker (the task ran on another worker,
    /// which asked it to: [`ToNode::HoldFor`]), until [`ToNode::ReleaseHeld`]; else this
    /// worker counts them among its own references.
    held: bool,
    /// References to objects the worker that ran the task owns and lent this one (see
    /// `loans`), apart from `nested`: each is one of this worker's references.
    lent: Vec<ObjectId>,
}

/// A worker's books of the tasks it owns (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Owned {
    /// Whether the node lets this worker own its tasks.
    enabled: bool,
    /// This worker's owner number (its tasks' ids carry it).
    me: u64,
    tasks: IdMap<TaskId, Task>,
    /// Owned tasks waiting for an object, by the object.
    waiting_on: IdMap<ObjectId, Vec<TaskId>>,
    shapes: Vec<Shape>,
    leases: IdMap<TaskId, Lease>,
    /// A lease on this worker itself (granted while it is blocked): its key and shape.
    here: Option<(TaskId, usize)>,
    /// Values of owned tasks, kept for a hand-over to the node.
    made: IdMap<ObjectId, Made>,
    /// Owned objects handed to the node: it owns them now.
    promoted: IdSet<ObjectId>,
    /// Owned tasks handed to the node before they ended ([`ToNode::HandOver`]): their ends
    /// go to it once known here.
    handed: IdSet<TaskId>,
    /// Owned objects in shared memory whose last reference went: their segments are for the
    /// shell to remove.
    unlinked: Vec<ObjectId>,
    /// Changes of owned tasks not sent to the node yet (kept only when the node records
    /// task events).
    events: Vec<OwnedEvent>,
    /// When changes were last sent, by the host's clock.
    events_sent_us: u64,
    /// Owned objects this worker waits for the values of (asked for again of the node if
    /// their tasks go there).
    wanted: IdSet<ObjectId>,
    /// Owned tasks cancelled after they were pushed (the worker drops them unless started; a
    /// forced cancel of a started one kills the worker): should the lease end first, they
    /// fail as cancelled rather than run again.
    cancelled: IdSet<TaskId>,
    /// Lease keys handed out so far (keys count down from the top of this worker's ids, so
    /// they never meet its tasks').
    lease_seq: u64,
    /// Values of owned tasks that ran on another node, too large to come back inside their
    /// ends, left in that node's store (see [`left`]): where each is.
    afar: IdMap<ObjectId, left::Afar>,
    /// The owned tasks that ended leaving values on other nodes, kept to run again should
    /// one be lost before it is read (see [`left`]).
    left: IdMap<TaskId, left::Left>,
    /// Owned objects whose values are in this node's store (their segments go with them,
    /// unless handed to the node).
    segments: IdSet<ObjectId>,
    /// Owned objects in shared memory that other nodes pulled copies of (arguments of tasks
    /// pushed to workers leased there, objects lent to workers there), and those nodes' peer
    /// addresses: the copies go when the object does ([`ToNode::DropCopies`]).
    copies_at: IdMap<ObjectId, Vec<String>>,
    /// The calls this worker makes to each actor.
    lanes: IdMap<prism_graph::ActorId, calls::Lane>,
    /// Actors with calls to push with the next frames written.
    lanes_due: Vec<prism_graph::ActorId>,
}

impl Owned {
    /// Books for the worker whose owner number is `me`, owning nothing until the node says.
    pub(crate) fn new(me: u64) -> Self {
        Owned {
            me,
            ..Owned::default()
        }
    }

    /// This worker's owner number.
    pub(super) fn me(&self) -> u64 {
        self.me
    }

    /// Whether the node lets this worker own its tasks.
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `id` is an object this worker owns and has not handed to the node.
    pub(crate) fn owns(&self, id: ObjectId) -> bool {
        self.enabled
            && id.task.owner == self.me
            && !self.promoted.contains(&id)
            && (self.tasks.contains_key(&id.task) || self.made.contains_key(&id))
    }

    /// Whether owned `task` was handed to the node and its end not sent yet.
    pub(crate) fn handed(&self, task: TaskId) -> bool {
        self.handed.contains(&task)
    }

    /// This worker waits for the value of owned object `id`.
    pub(crate) fn want(&mut self, id: ObjectId) {
        self.wanted.insert(id);
    }

    /// The shape whose asks include lease `key`.
    fn asking(&self, key: TaskId) -> Option<usize> {
        self.shapes.iter().position(|s| s.asked.contains(&key))
    }

    /// Whether owned tasks are under way (waiting, queued, pushed or running here), or ends
    /// of handed-over ones are still owed to the node.
    pub(crate) fn under_way(&self) -> bool {
        !self.tasks.is_empty() || !self.handed.is_empty()
    }

    /// Whether changes of owned tasks wait to be sent.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    fn shape_of(&mut self, resources: &Resources) -> usize {
        if let Some(at) = self.shapes.iter().position(|s| &s.resources == resources) {
            return at;
        }
        self.shapes.push(Shape {
            resources: resources.clone(),
            queue: VecDeque::new(),
            asked: Vec::new(),
        });
        self.shapes.len() - 1
    }
}

/// Whether a task of this spec can be owned by the worker that submits it.
fn ownable(spec: &TaskSpec) -> bool {
    matches!(spec.kind, TaskKind::Normal | TaskKind::ActorCall(_))
        && spec.stream.is_none()
        && crate::proto::placement::group_of(&spec.resources).is_none()
}

impl Worker {
    /// The node lets this worker own the plain tasks it submits.
    pub(super) fn own_tasks(&mut self) {
        self.owned.enabled = true;
    }

    /// Whether this worker owns `id` (and has not handed it to the node).
    pub(crate) fn owns(&self, id: ObjectId) -> bool {
        self.owned.owns(id)
    }

    /// Notes a change of owned `task` for the node's task events (when it keeps them).
    fn note(&mut self, task: TaskId, phase: impl FnOnce() -> OwnedPhase) {
        if self.timed {
            self.owned.events.push(OwnedEvent {
                task,
                at_us: self.now_us,
                phase: phase(),
            });
        }
    }

    /// Sends the changes of owned tasks at `now_us` if they are due: many wait, or a while
    /// passed since the last were sent, or no owned task is left to report on, or a task
    /// this worker ran ended (its children's changes go before its end).
    pub(super) fn send_owned_events(&mut self, now_us: u64) {
        let due = self.owned.events.len() >= EVENTS_BATCH
            || self.owned.tasks.is_empty()
            || !self.done.is_empty()
            || now_us.saturating_sub(self.owned.events_sent_us) >= EVENTS_EVERY_US;
        if due {
            self.owned.events_sent_us = now_us;
            let events = std::mem::take(&mut self.owned.events);
            self.send(&ToNode::Owned {
                sent_us: now_us,
                events,
            });
        }
    }

    /// Takes `spec` as a task this worker owns, if it may: true when it did.
    pub(super) fn try_own(&self, spec: &TaskSpec) -> bool {
        self.owned.enabled
            && ownable(spec)
            && calls::actor_of(&spec.kind).is_none_or(|actor| self.calls_itself(actor))
    }

    /// Keeps `spec`, a task this worker owns: it runs once its arguments are known, on a
    /// worker leased for its shape.
    pub(super) fn own(&mut self, spec: TaskSpec) {
        let task = spec.task_id;
        let (function, parent) = (spec.function.clone(), self.running_task());
        let actor = calls::actor_of(&spec.kind);
        let missing = self.take_up(spec, (0, 0));
        self.note(task, || OwnedPhase::Submitted {
            function,
            ready: missing == 0,
            parent,
            actor,
        });
        if let Some(actor) = actor {
            self.enlane(actor, task);
        }
        if missing == 0 {
            self.ready(task);
        }
    }

    /// Books `spec` as an owned task waiting for its arguments, its runs so far counted
    /// `(attempts, runs)`: its arguments and the references and handles inside them are held
    /// until it ends, and the values not known here are asked for. How many it waits for.
    /// (An argument left on another node is not waited for: it is read there, or pulled by
    /// the node of the worker that runs the task or hosts the actor.)
    fn take_up(&mut self, spec: TaskSpec, (attempts, runs): (u32, u32)) -> usize {
        let task = spec.task_id;
        let deps: Vec<ObjectId> = spec.dependencies().collect();
        for &id in deps.iter().chain(&spec.inlined_refs) {
            self.hold_for_task(id);
        }
        for &actor in &spec.inlined_actors {
            self.actor_borrow(actor);
        }
        let mut missing = 0;
        let mut ask = Vec::new();
        for &id in &deps {
            let afar = self.owned.afar.get(&id);
            if self.cache.contains_key(&id) || afar.is_some_and(|a| !a.pulling) {
                continue;
            }
            missing += 1;
            self.owned.waiting_on.entry(id).or_default().push(task);
            if !self.owned.owns(id) || afar.is_some() {
                ask.push(id);
            }
        }
        let at = At::Waiting(missing);
        let record = Task {
            spec,
            at,
            attempts,
            runs,
        };
        self.owned.tasks.insert(task, record);
        self.request(&ask);
        missing
    }

    /// Counts one more hold on `id` for an owned task (released when it ends).
    fn hold_for_task(&mut self, id: ObjectId) {
        match self.refs.get_mut(&id) {
            Some((count, _)) => *count += 1,
            None => self.borrow(id),
        }
    }

    /// An owned task's arguments are known: it fails with a failed one's error, or queues.
    fn ready(&mut self, task: TaskId) {
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        let failed = record
            .spec
            .dependencies()
            .find_map(|id| match self.cache.get(&id) {
                Some(Slot::Failed(e)) => Some(e.clone()),
                _ => None,
            });
        if let Some(error) = failed {
            return self.owned_failed(task, error);
        }
        if let Some(actor) = calls::actor_of(&record.spec.kind) {
            if let Some(record) = self.owned.tasks.get_mut(&task) {
                record.at = At::Queued;
            }
            return self.pump_lane(actor);
        }
        let shape = self.owned.shape_of(&record.spec.resources.clone());
        if let Some(record) = self.owned.tasks.get_mut(&task) {
            record.at = At::Queued;
        }
        self.owned.shapes[shape].queue.push_back(task);
        self.pump(shape);
    }

    /// Pushes queued tasks of `shape` to its leases, asks for a lease while tasks wait, and
    /// gives back leases (and an ask) it has no tasks for.
    fn pump(&mut self, shape: usize) {
        let keys: Vec<TaskId> = (self.owned.leases.iter())
            .filter(|(_, l)| l.shape == shape)
            .map(|(k, _)| *k)
            .collect();
        // The leases of this shape still held once the idle ones went back.
        let mut leases = keys.len();
        for key in keys {
            let mut batch = Vec::new();
            loop {
                let lease = &self.owned.leases[&key];
                if lease.closed || lease.inflight.len() >= lease.depth {
                    break;
                }
                let Some(task) = self.next_for(shape, key, batch.is_empty()) else {
                    break;
                };
                if let Some(exec) = self.execute_owned(task, At::Pushed(key)) {
                    if let Some(lease) = self.owned.leases.get_mut(&key) {
                        lease.inflight.push_back(task);
                    }
                    batch.push(exec);
                }
            }
            let lease = &self.owned.leases[&key];
            let (worker, at) = (lease.worker, lease.at.clone());
            if !batch.is_empty() {
                self.forward(worker, at, &ToWorker::Push(batch));
            } else if lease.inflight.is_empty() {
                self.owned.leases.remove(&key);
                self.send(&ToNode::Unlease { key });
                leases -= 1;
            }
        }
        let waiting = self.owned.shapes[shape].queue.len();
        if waiting == 0 {
            // Nothing left for more workers: the asks not granted yet are withdrawn.
            let here = self.owned.here.map(|(key, _)| key);
            let asked = std::mem::take(&mut self.owned.shapes[shape].asked);
            for key in asked {
                match Some(key) == here {
                    true => self.owned.shapes[shape].asked.push(key),
                    false => self.send(&ToNode::Unlease { key }),
                }
            }
            return;
        }
        // One more ask than the leases held, so that the leases double with each round of
        // grants (a worker on a node new to the job takes a process start to grant, and one
        // ask at a time capped a fan-out over 1,000 nodes at about one lease per 40 ms per
        // owner), never more than the tasks waiting nor than MAX_ASKS.
        let wanted = waiting.min(leases + 1).min(MAX_ASKS);
        while self.owned.shapes[shape].asked.len() < wanted {
            self.owned.lease_seq += 1;
            let key = TaskId::new(self.owned.me, u64::MAX - self.owned.lease_seq);
            // Each ask is for the next task no ask is for yet, near its arguments.
            let near = self.near(shape, self.owned.shapes[shape].asked.len());
            let queue = &mut self.owned.shapes[shape];
            queue.asked.push(key);
            let resources = queue.resources.clone();
            self.send(&ToNode::Lease {
                key,
                shape: resources,
                near,
            });
        }
    }

    /// The peer address of the node of the lease a task `at` was pushed under, when it is
    /// another node.
    fn lease_node(&self, at: At) -> Option<String> {
        self.pushed_to(at).and_then(|(_, node)| node)
    }

    /// The worker a task `at` was pushed to (a leased one, or an actor's), and its node's
    /// peer address when it is another node.
    fn pushed_to(&self, at: At) -> Option<(u64, Option<String>)> {
        match at {
            At::Pushed(key) => (self.owned.leases.get(&key)).map(|l| (l.worker, l.at.clone())),
            At::Called(actor) => self.owned.lanes.get(&actor).and_then(calls::Lane::target),
            _ => None,
        }
    }

    /// The wire form of owned `task`, now at `at`; none when it failed (an argument is gone).
    fn execute_owned(&mut self, task: TaskId, at: At) -> Option<Execute> {
        let at_node = self.lease_node(at);
        let foreign = self.foreign_target(at);
        let record = self.owned.tasks.get_mut(&task)?;
        if foreign.is_some()
            && (!record.spec.inlined_refs.is_empty() || !record.spec.inlined_actors.is_empty())
        {
            let error = TaskError::InvalidValue {
                task,
                function: record.spec.function.clone(),
                what: String::from("an argument"),
                reason: String::from(
                    "a call to another job's actor carries values only, and this one holds \
                     object references or actor handles (they are of this job)",
                ),
            };
            self.owned_failed(task, error);
            return None;
        }
        let mut args = Vec::with_capacity(record.spec.args.len());
        let mut pull_from = Vec::new();
        for arg in &record.spec.args {
            match arg {
                Arg::Value(bytes) => args.push(Value::Inline(bytes.clone())),
                Arg::Ref(id) => match self.cache.get(id) {
                    // Another job's actor's worker cannot read this job's objects: the
                    // value goes with the call.
                    Some(Slot::Ready(bytes)) if foreign.is_some() => {
                        args.push(Value::Inline(bytes.as_slice().to_vec()))
                    }
                    Some(Slot::Ready(bytes)) => {
                        // A value in shared memory is pulled by the leased worker's node,
                        // which keeps the copy until this worker drops it.
                        if let (ObjectBytes::Shared(_), Some(node)) = (bytes, &at_node) {
                            copied_at(&mut self.owned.copies_at, *id, node);
                        }
                        args.push(bytes.to_wire(*id))
                    }
                    // Left on another node: read there, or pulled from there by the node of
                    // the worker that runs it, which keeps the copy until this one drops it.
                    None if foreign.is_none() && self.owned.afar.contains_key(id) => {
                        let afar = &self.owned.afar[id];
                        let (len, held) = (afar.len, afar.at.clone());
                        match at_node.as_ref() == Some(&held) {
                            // Read in place: the node keeps it for the reader as a copy,
                            // also once this worker pulled it here (dropped with the object).
                            true => copied_at(&mut self.owned.copies_at, *id, &held),
                            false => {
                                pull_from.push((*id, held));
                                if let Some(node) = &at_node {
                                    copied_at(&mut self.owned.copies_at, *id, node);
                                }
                            }
                        }
                        args.push(Value::Shared { id: *id, len })
                    }
                    _ => {
                        let error = TaskError::ObjectUnavailable {
                            object: *id,
                            function: String::from("<argument>"),
                            reason: format!(
                                "its value is not known to the owner of task {task} ({})",
                                record.spec.function
                            ),
                        };
                        self.owned_failed(task, error);
                        return None;
                    }
                },
            }
        }
        record.at = at;
        record.attempts += 1;
        record.runs += 1;
        let function = record.spec.function.clone();
        let (fn_hash, num_returns) = (record.spec.fn_hash, record.spec.num_returns);
        let (kind, cpu, run) = (record.spec.kind, record.spec.resources.cpu, record.runs);
        let kind = foreign.map_or(kind, TaskKind::ActorCall);
        let worker = match at {
            At::Pushed(_) | At::Called(_) => self.pushed_to(at).map_or(0, |(w, _)| w),
            _ => self.owned.me,
        };
        self.note(task, || OwnedPhase::Sent { worker });
        Some(Execute {
            task,
            function,
            fn_hash,
            args,
            num_returns,
            kind,
            stream: None,
            cpu,
            run,
            pull_from,
        })
    }

    /// Appends a frame for worker `to`: on a direct link when it has one (a worker leased
    /// with an endpoint, an owner whose pushes came on one), else through this node (to a
    /// worker of it, or of the node serving its peers at `at`).
    pub(super) fn forward(&mut self, to: u64, at: Option<String>, msg: &ToWorker) {
        let mut frame = Vec::new();
        if let Err(e) = prism_transport::encode_frame(msg, &mut frame) {
            tracing::error!(worker = to, "cannot encode a message for a worker: {e}");
            return;
        }
        let direct = self
            .endpoint_of(to)
            .map(super::DirectTo::Endpoint)
            .or_else(|| (self.answers_direct(to)).then_some(super::DirectTo::Owner(to)));
        match direct {
            Some(route) => self.send_direct(route, frame),
            None => self.send(&ToNode::Forward { to, at, frame }),
        }
    }

    /// Where worker `worker`, leased to this one on another node, is: its node's peer
    /// address, and its direct endpoint if it has one.
    pub(super) fn leased_at(&self, worker: u64) -> Option<(String, Option<String>)> {
        (self.owned.leases.values())
            .find(|lease| lease.worker == worker && lease.at.is_some())
            .and_then(|lease| Some((lease.at.clone()?, lease.direct.clone())))
    }

    /// The direct endpoint of worker `to` (leased to this one, or running an actor it calls),
    /// when this worker links to such endpoints itself: none is looked for otherwise.
    fn endpoint_of(&self, to: u64) -> Option<String> {
        if !self.links_directly() {
            return None;
        }
        let leased = (self.owned.leases.values())
            .find(|lease| lease.worker == to)
            .and_then(|lease| lease.direct.clone());
        leased
            .or_else(|| {
                (self.owned.lanes.values())
                    .find_map(|lane| lane.endpoint_of(to))
                    .map(str::to_string)
            })
            .or_else(|| self.lender_endpoint(to))
    }

    /// The direct link to `endpoint` broke: the leases on it are given up by force (their
    /// workers are killed, and their tasks run again as after any loss of a leased worker),
    /// since what was pushed on it may never have arrived.
    pub(crate) fn direct_lost(&mut self, endpoint: &str) {
        self.foreign_link_lost(endpoint);
        let lost: Vec<TaskId> = (self.owned.leases.iter())
            .filter(|(_, lease)| lease.direct.as_deref() == Some(endpoint))
            .map(|(&key, _)| key)
            .collect();
        for key in lost {
            if let Some(lease) = self.owned.leases.get_mut(&key) {
                lease.closed = true;
            }
            tracing::warn!(lease = %key, %endpoint, "the direct link to a leased worker broke: the lease is given up");
            self.send(&ToNode::KillLeased { key });
        }
    }

    /// Lease `key` is granted on `worker` (of the node at `at`, when not this worker's; at
    /// its direct endpoint `direct`, if it has one).
    pub(super) fn leased(
        &mut self,
        key: TaskId,
        worker: u64,
        (at, direct): (Option<String>, Option<String>),
    ) {
        let shape = self.owned.asking(key);
        let Some(shape) = shape else {
            // Withdrawn meanwhile (its tasks went elsewhere).
            self.send(&ToNode::Unlease { key });
            return;
        };
        if worker == self.owned.me && self.blocked && self.owned.here.is_none() {
            // The node leased this worker itself while it is blocked (no other could be had):
            // it runs the tasks on top of its blocked one. (Leased while idle, it is pushed
            // its tasks like any other worker.)
            self.owned.here = Some((key, shape));
            return;
        }
        self.owned.shapes[shape].asked.retain(|&k| k != key);
        self.owned.leases.insert(
            key,
            Lease {
                shape,
                worker,
                at,
                direct,
                inflight: VecDeque::new(),
                depth: PIPELINE_START,
                last_end_us: None,
                closed: false,
            },
        );
        self.pump(shape);
    }

    /// The next owned task to run here on top of the blocked task, under a lease on this
    /// worker itself; the lease goes back when none is left (nor any being pulled here for).
    pub(super) fn next_here(&mut self) -> Option<Execute> {
        let (_, shape) = self.owned.here?;
        let mut pulling = false;
        while let Some(task) = self.owned.shapes[shape].queue.pop_front() {
            if !self.owned.afar.is_empty() && self.pull_first(task) {
                // Kept for it, which queues again once its values are here.
                pulling = true;
                continue;
            }
            if let Some(exec) = self.execute_owned(task, At::Here) {
                return Some(exec);
            }
        }
        if !pulling {
            self.end_here();
        }
        None
    }

    /// Gives back the lease on this worker itself.
    pub(super) fn end_here(&mut self) {
        if let Some((key, shape)) = self.owned.here.take() {
            self.owned.shapes[shape].asked.retain(|&k| k != key);
            self.send(&ToNode::Unlease { key });
            self.pump(shape);
        }
    }

    /// Owned tasks ended on the workers they were pushed to (or here); `held`: the node holds
    /// what their values refer to for this worker, but for `lent` (objects the worker that ran
    /// them lent this one); `open` maps a value's segment.
    pub(super) fn returned<'a>(
        &mut self,
        sent_us: u64,
        (held, lent): (bool, &IdSet<ObjectId>),
        ends: impl Iterator<Item = &'a ArchivedTaskEnd>,
        open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<(), super::Stop> {
        let undecodable =
            |e: rkyv::rancor::Error| super::Stop::Lost(format!("undecodable task end: {e}"));
        for end in ends {
            let task = end.task.to_native();
            let run = end.run.to_native();
            let stale = self.earlier_run(task, run);
            // A value too large to travel inside the end stayed on the node of the lease it
            // ran under.
            let afar = (self.owned.tasks.get(&task)).and_then(|r| self.lease_node(r.at));
            if let Some(times) = end.times.as_ref().filter(|_| !stale) {
                let times = rkyv::deserialize::<RunTimes, rkyv::rancor::Error>(times)
                    .map_err(undecodable)?;
                self.note_ran(task, sent_us, times);
            }
            // The values are mapped from the archive, not copied out of it first.
            let ending = match &end.outcome {
                prism_transport::ArchivedOutcome::Returned {
                    values,
                    nested,
                    actors,
                } => {
                    let nested: Vec<Vec<ObjectId>> =
                        rkyv::deserialize::<_, rkyv::rancor::Error>(nested).map_err(undecodable)?;
                    let (nested, lent) = match lent.is_empty() {
                        true => (nested, Vec::new()),
                        false => nested
                            .into_iter()
                            .map(|ids| ids.into_iter().partition(|id| !lent.contains(id)))
                            .unzip(),
                    };
                    Ending::Returned {
                        values: (values.iter())
                            .map(|value| match (value, &afar) {
                                (ArchivedValue::Shared { len, .. }, Some(at)) => Got::Afar {
                                    len: len.to_native(),
                                    at: at.clone(),
                                },
                                _ => Got::Here(
                                    open(value),
                                    matches!(value, ArchivedValue::Shared { .. }),
                                ),
                            })
                            .collect(),
                        nested,
                        lent,
                        actors: rkyv::deserialize::<_, rkyv::rancor::Error>(actors)
                            .map_err(undecodable)?,
                    }
                }
                prism_transport::ArchivedOutcome::Failed(error) => Ending::Failed(
                    rkyv::deserialize::<TaskError, rkyv::rancor::Error>(error)
                        .map_err(undecodable)?,
                ),
            };
            self.owned_ended((task, stale), ending, held);
        }
        Ok(())
    }

    /// Whether an end of run `run` of owned `task` is of an earlier run than the one pushed
    /// last (0: a run not counted, as one here on top of this worker).
    fn earlier_run(&self, task: TaskId, run: u32) -> bool {
        (self.owned.tasks.get(&task)).is_some_and(|r| {
            run != 0 && run != r.runs && matches!(r.at, At::Pushed(_) | At::Called(_))
        })
    }

    /// Notes how owned `task` ran, its times as written at `sent_us` by the host's clock.
    fn note_ran(&mut self, task: TaskId, sent_us: u64, times: RunTimes) {
        let (worker, afar) = match self.owned.tasks.get(&task).map(|r| r.at) {
            Some(at @ (At::Pushed(_) | At::Called(_))) => self
                .pushed_to(at)
                .map_or((0, false), |(w, at)| (w, at.is_some())),
            Some(_) => (self.owned.me, false),
            None => return,
        };
        let took = [times.run_us, times.store_us, times.ago_us]
            .into_iter()
            .fold(times.args_us, u64::saturating_add);
        // A worker on another node wrote `sent_us` by its host's clock, which this host's
        // does not share: the end's arrival here stands in for it (early by the time in
        // transit), so that the run is on this host's clock like the owner's other times.
        let sent = if afar { self.now_us } else { sent_us };
        self.note(task, || OwnedPhase::Ran {
            worker,
            start_us: sent.saturating_sub(took),
            times,
        });
    }

    /// Whether `task` is one this worker owns and has not seen end.
    pub(super) fn owns_task(&self, task: TaskId) -> bool {
        self.owned.tasks.contains_key(&task)
    }

    /// An owned task ran here, on top of the blocked task; the lease on this worker goes
    /// back once it no longer waits.
    pub(super) fn ended_here(
        &mut self,
        ended: Ended,
        open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) {
        if let Some(timing) = ended.timing {
            self.note_ran(ended.task, timing.end, timing.wire(timing.end));
        }
        // Run here, on top of this worker: no other run's end can be taken for it.
        let end = prism_transport::TaskEnd {
            task: ended.task,
            outcome: ended.outcome,
            times: None,
            run: 0,
        };
        // Read back as the wire form, so that its values are mapped as any other end's.
        match rkyv::to_bytes::<rkyv::rancor::Error>(&end) {
            Ok(bytes) => match rkyv::access::<ArchivedTaskEnd, rkyv::rancor::Error>(&bytes) {
                Ok(archived) => {
                    let none = IdSet::default();
                    let _ = self.returned(0, (false, &none), std::iter::once(archived), open);
                }
                Err(e) => tracing::error!(task = %end.task, "cannot read a task's end: {e}"),
            },
            Err(e) => tracing::error!(task = %end.task, "cannot encode a task's end: {e}"),
        }
        if !self.blocked {
            self.end_here();
        }
    }

    /// Owned `task` ended (`stale`: an earlier run of it, see [`Worker::earlier_run`]);
    /// `held`: what its values refer to is held for this worker by the node (it ran on
    /// another worker).
    fn owned_ended(&mut self, (task, stale): (TaskId, bool), ending: Ending, held: bool) {
        if !stale && !self.owned.cancelled.is_empty() {
            // It ended (cancelled by its worker, or before its cancel arrived).
            self.owned.cancelled.remove(&task);
        }
        // Ended already (cancelled, or a lease lost it and it ran again), or `stale`: the end
        // of an earlier run (under a lease that ended, on its way meanwhile), while the run
        // this owner waits for ends on its own and its worker stays leased until then. What
        // the node holds for this end's values goes.
        let Some(record) = self.owned.tasks.get(&task).filter(|_| !stale) else {
            if stale {
                tracing::debug!(%task, "the end of an earlier run of an owned task is dropped");
            }
            if let Ending::Returned {
                nested,
                actors,
                lent,
                ..
            } = ending
            {
                if held {
                    self.release_held(nested.concat(), actors.concat());
                }
                // Given back at once.
                for id in lent.concat() {
                    self.take_loan(id);
                    self.release(id);
                }
            }
            return;
        };
        let lease = match record.at {
            At::Pushed(key) => Some(key),
            _ => None,
        };
        // A call's end leaves its actor's lane wherever the call is: it may come after the
        // word of the actor's restart put the call back in line.
        if let Some(actor) = calls::actor_of(&record.spec.kind) {
            self.unlane(actor, task);
        }
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        if let Some(key) = lease
            && let Some(l) = self.owned.leases.get_mut(&key)
        {
            l.inflight.retain(|t| *t != task);
            let now = self.now_us;
            if let Some(last) = l.last_end_us {
                let gap = now.saturating_sub(last);
                if gap < SHORT_TASK_US {
                    l.depth = (l.depth * 2).min(PIPELINE_MAX);
                } else if gap > LONG_TASK_US {
                    l.depth = (l.depth / 2).max(PIPELINE_START);
                }
            }
            l.last_end_us = Some(now);
        }
        // Values left on other nodes, whose readers go on once this end's lease is settled:
        // given back first if it runs nothing more, so that a reader leased near the value
        // finds the room it held there.
        let mut left_now = Vec::new();
        match ending {
            Ending::Returned {
                values,
                nested,
                actors,
                lent,
            } => {
                let function: Arc<str> = Arc::from(record.spec.function.as_str());
                let ids: Vec<ObjectId> = record.spec.return_ids().collect();
                let mut afar_values = 0;
                for (i, (id, value)) in ids.into_iter().zip(values).enumerate() {
                    let made = Made {
                        nested: nested.get(i).cloned().unwrap_or_default(),
                        actors: actors.get(i).cloned().unwrap_or_default(),
                        held,
                        lent: lent.get(i).cloned().unwrap_or_default(),
                    };
                    for &id in &made.lent {
                        self.take_loan(id);
                    }
                    if !held {
                        self.hold_made(&made);
                    }
                    // A run again replaces what the last run's value held (taken anew for
                    // this one first).
                    if let Some(last) = self.owned.made.insert(id, made) {
                        self.let_go_of(last);
                    }
                    let slot = match value {
                        Got::Here(Ok(bytes), shared) => {
                            if shared {
                                self.owned.segments.insert(id);
                            }
                            Slot::Ready(bytes)
                        }
                        Got::Here(Err(e), _) => Slot::Failed(TaskError::InvalidValue {
                            task,
                            function: function.to_string(),
                            what: format!("return value {i}"),
                            reason: format!("cannot map its shared-memory segment: {e}"),
                        }),
                        Got::Afar { len, at } => {
                            // Left there: read where it is, pulled here when needed.
                            let afar = left::Afar {
                                len,
                                at,
                                pulling: false,
                            };
                            self.owned.afar.insert(id, afar);
                            left_now.push(id);
                            afar_values += 1;
                            continue;
                        }
                    };
                    self.owned_value(id, slot);
                }
                self.note(task, || OwnedPhase::Finished);
                let record = self.finish_owned(task);
                if let Some(record) = record.filter(|_| afar_values > 0) {
                    self.leave(record);
                }
            }
            Ending::Failed(TaskError::ObjectUnavailable { object, reason, .. })
                if self.reads_left(task, object) =>
            {
                self.arg_lost(task, object, reason);
            }
            Ending::Failed(error) => {
                let retry = matches!(error, TaskError::Panicked { .. })
                    && record.spec.retry_exceptions
                    && record.attempts <= record.spec.max_retries;
                if retry {
                    let actor = calls::actor_of(&record.spec.kind);
                    self.note(task, || OwnedPhase::Failed(error.to_string()));
                    self.note(task, || OwnedPhase::Again);
                    self.requeue(task);
                    if let Some(actor) = actor {
                        self.pump_lane(actor);
                    }
                } else {
                    self.owned_failed(task, error);
                }
            }
        }
        if let Some(key) = lease
            && let Some(shape) = self.owned.leases.get(&key).map(|l| l.shape)
        {
            self.pump(shape);
        }
        for id in left_now {
            // The tasks waiting for it go on: they read it where it is.
            self.known(id);
        }
    }

    /// Object `id` of an owned task is known now: kept while referenced (a segment nobody
    /// holds goes), and the tasks waiting for it move on.
    fn owned_value(&mut self, id: ObjectId, slot: Slot) {
        self.owned.wanted.remove(&id);
        if !self.refs.contains_key(&id) {
            if self.owned.segments.remove(&id) {
                self.unlink_owned(id);
            }
            self.drop_made(id);
        } else {
            self.cache.insert(id, slot);
            if self.blocked {
                self.arrived.push(id);
            }
            self.answer_askers(id);
        }
        if self.owned.handed.contains(&id.task) {
            self.end_handed(id.task);
        }
        self.known(id);
    }

    /// Sends the node the end of handed-over `task` once every value of it is known here
    /// (held here since the hand-over), and lets them go.
    fn end_handed(&mut self, task: TaskId) {
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        let ids: Vec<ObjectId> = record.spec.return_ids().collect();
        let mut values = Vec::with_capacity(ids.len());
        let mut failed = None;
        for &id in &ids {
            match self.cache.get(&id) {
                Some(Slot::Ready(bytes)) => values.push(bytes.to_wire(id)),
                Some(Slot::Failed(error)) => {
                    failed.get_or_insert_with(|| error.clone());
                }
                _ => return, // more to come
            }
        }
        self.owned.handed.remove(&task);
        for id in &ids {
            // The node's to remove now.
            self.owned.segments.remove(id);
        }
        let outcome = match failed {
            Some(error) => Outcome::Failed(error),
            None => {
                let (nested, actors) = ids.iter().map(|&id| self.made_for_node(id)).unzip();
                Outcome::Returned {
                    values,
                    nested,
                    actors,
                }
            }
        };
        // With this worker's own ends, in one message; the holds go after them.
        self.done.push(Ended {
            task,
            outcome,
            timing: None,
        });
        for id in ids {
            self.let_go(id, true);
        }
    }

    /// Object `id` is known (its value, or its failure): owned tasks waiting for it move on.
    pub(super) fn known(&mut self, id: ObjectId) {
        let Some(waiting) = self.owned.waiting_on.remove(&id) else {
            return;
        };
        for task in waiting {
            let Some(record) = self.owned.tasks.get_mut(&task) else {
                continue;
            };
            if let At::Waiting(n) = &mut record.at {
                *n -= 1;
                if *n == 0 {
                    self.note(task, || OwnedPhase::Ready);
                    self.ready(task);
                }
            }
        }
    }

    /// An owned task ended for good: the holds its arguments took go. Its record, if it was
    /// owned here.
    fn finish_owned(&mut self, task: TaskId) -> Option<Task> {
        let record = self.owned.tasks.remove(&task)?;
        let spec = &record.spec;
        for id in spec.dependencies().chain(spec.inlined_refs.iter().copied()) {
            self.release(id);
        }
        for &actor in &spec.inlined_actors {
            self.actor_release(actor);
        }
        if let Some(actor) = calls::actor_of(&spec.kind) {
            self.actor_release(actor);
        }
        Some(record)
    }

    /// Owned `task` fails with `error`, and every owned task waiting for it.
    fn owned_failed(&mut self, task: TaskId, error: TaskError) {
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        // Out of its queue or lease first.
        match record.at {
            At::Queued => {
                let resources = record.spec.resources.clone();
                let shape = self.owned.shape_of(&resources);
                self.owned.shapes[shape].queue.retain(|t| *t != task);
            }
            At::Pushed(key) => {
                if let Some(lease) = self.owned.leases.get_mut(&key) {
                    lease.inflight.retain(|t| *t != task);
                }
            }
            At::Waiting(_) | At::Here | At::Called(_) => {}
        }
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        let actor = calls::actor_of(&record.spec.kind);
        if let Some(actor) = actor {
            self.unlane(actor, task);
        }
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        let ids: Vec<ObjectId> = record.spec.return_ids().collect();
        self.note(task, || OwnedPhase::Failed(error.to_string()));
        for id in ids {
            self.owned_value(id, Slot::Failed(error.clone()));
        }
        self.finish_owned(task);
        if let Some(actor) = actor {
            // The calls it held back may go now.
            self.pump_lane(actor);
        }
    }

    /// Owned `task` goes back to the front of its shape's queue, to run again.
    fn requeue(&mut self, task: TaskId) {
        let Some(record) = self.owned.tasks.get_mut(&task) else {
            return;
        };
        record.at = At::Queued;
        if let Some(actor) = calls::actor_of(&record.spec.kind) {
            return self.relane(actor, task);
        }
        let resources = record.spec.resources.clone();
        let shape = self.owned.shape_of(&resources);
        self.owned.shapes[shape].queue.push_front(task);
    }

    /// Pushes what waits behind owned `task` (its shape's queue, or its actor's lane).
    fn pump_for(&mut self, task: TaskId) {
        let Some(record) = self.owned.tasks.get(&task) else {
            return;
        };
        match calls::actor_of(&record.spec.kind) {
            Some(actor) => self.pump_lane(actor),
            None => {
                let shape = self.owned.shape_of(&record.spec.resources.clone());
                self.pump(shape);
            }
        }
    }

    /// The worker of a lease handed these owned tasks back unrun (it blocked): they queue
    /// again, and the lease closes (a blocked worker runs nothing new).
    pub(super) fn handed_back(&mut self, tasks: impl Iterator<Item = TaskId>) {
        let mut shapes = Vec::new();
        for task in tasks {
            let key = match self.owned.tasks.get(&task).map(|r| r.at) {
                Some(At::Pushed(key)) => key,
                Some(At::Called(_)) => {
                    if let Some(record) = self.owned.tasks.get_mut(&task) {
                        record.attempts = record.attempts.saturating_sub(1);
                    }
                    self.requeue(task);
                    self.pump_for(task);
                    continue;
                }
                _ => continue,
            };
            if let Some(lease) = self.owned.leases.get_mut(&key) {
                lease.inflight.retain(|t| *t != task);
                lease.closed = true;
                if !shapes.contains(&lease.shape) {
                    shapes.push(lease.shape);
                }
            }
            if let Some(record) = self.owned.tasks.get_mut(&task) {
                // It did not start: this run does not count.
                record.attempts = record.attempts.saturating_sub(1);
            }
            self.requeue(task);
        }
        for shape in shapes {
            self.pump(shape);
        }
    }

    /// Ask `key` waits on a full node while others have room for `room` tasks of its shape
    /// and this worker's node runs `home` at once: the share of the tasks queued for it that
    /// the room elsewhere could take (the last queued) goes to the node, which owns them from
    /// now on, their arguments' values handed over first (they are known: the tasks were
    /// queued); the ask is made again for the rest.
    pub(super) fn spill(&mut self, key: TaskId, room: u32, home: u32) {
        let Some(shape) = self.owned.asking(key) else {
            return;
        };
        self.owned.shapes[shape].asked.retain(|&k| k != key);
        let queue = &mut self.owned.shapes[shape].queue;
        let (room, home) = (u64::from(room), u64::from(home.max(1)));
        let share = (queue.len() as u64 * room).div_ceil(room + home) as usize;
        let keep = queue.len().saturating_sub(share);
        let spilled: Vec<TaskId> = queue.drain(keep..).collect();
        let (spilled, kept): (Vec<TaskId>, Vec<TaskId>) = (spilled.into_iter())
            .partition(|task| self.owned.afar.is_empty() || !self.reads_afar(*task));
        // Those reading values left on other nodes stay (the node could not read them).
        self.owned.shapes[shape].queue.extend(kept);
        self.hand_to_node(spilled);
        self.pump(shape);
    }

    /// Hands owned `tasks` (out of their queue) to the node, which owns and places them from
    /// now on; the values this worker waits for are asked of it.
    fn hand_to_node(&mut self, tasks: impl IntoIterator<Item = TaskId>) {
        let mut wanted = Vec::new();
        for task in tasks {
            let Some(record) = self.owned.tasks.get(&task) else {
                continue;
            };
            let spec = record.spec.clone();
            let deps: Vec<ObjectId> = spec.dependencies().collect();
            self.promote(&deps);
            let outputs: Vec<ObjectId> = spec.return_ids().collect();
            self.send(&ToNode::Submit { spec, failed: None });
            // The node holds what the task needs now; this worker's holds for it go.
            self.finish_owned(task);
            wanted.extend(
                outputs
                    .into_iter()
                    .filter(|id| self.owned.wanted.remove(id)),
            );
        }
        self.request(&wanted);
    }

    /// Lease `key` ended without being given back: its tasks in flight run again while their
    /// retries last, or fail naming the worker's end.
    pub(super) fn lease_ended(&mut self, key: TaskId, reason: &str) {
        if let Some(shape) = self.owned.asking(key) {
            // The node refused the ask: the tasks waiting for it cannot run.
            self.owned.shapes[shape].asked.retain(|&k| k != key);
            let queued: Vec<TaskId> = self.owned.shapes[shape].queue.drain(..).collect();
            for task in queued {
                let Some(record) = self.owned.tasks.get_mut(&task) else {
                    continue;
                };
                record.at = At::Waiting(0);
                let error = TaskError::Unschedulable {
                    task,
                    function: record.spec.function.clone(),
                    reason: format!("its node refused its owner a worker: {reason}"),
                };
                self.owned_failed(task, error);
            }
            return;
        }
        let Some(lease) = self.owned.leases.remove(&key) else {
            return;
        };
        // A worker runs what it is pushed in order: only the first had started; the others
        // never ran, and their pushes do not count.
        for (i, task) in lease.inflight.into_iter().enumerate().rev() {
            let Some(record) = self.owned.tasks.get_mut(&task) else {
                continue;
            };
            if i > 0 {
                record.attempts = record.attempts.saturating_sub(1);
            }
            if self.owned.cancelled.remove(&task) {
                let function = record.spec.function.clone();
                self.owned_failed(task, TaskError::Cancelled { task, function });
            } else if record.attempts <= record.spec.max_retries {
                self.note(task, || OwnedPhase::Again);
                self.requeue(task);
            } else {
                let error = TaskError::WorkerDied {
                    task,
                    function: record.spec.function.clone(),
                    attempts: record.attempts,
                    reason: reason.to_string(),
                };
                self.owned_failed(task, error);
            }
        }
        self.pump(lease.shape);
    }

    /// Cancels owned `task` if it has not ended: dropped where it waits, asked of the worker
    /// it was pushed to (which drops it unless it started). True when the task is owned here.
    pub(super) fn cancel_owned(&mut self, task: TaskId, force: bool) -> bool {
        let Some(record) = self.owned.tasks.get(&task) else {
            return false;
        };
        let cancelled = TaskError::Cancelled {
            task,
            function: record.spec.function.clone(),
        };
        match record.at {
            At::Waiting(_) | At::Queued => self.owned_failed(task, cancelled),
            At::Pushed(key) => {
                if let Some(lease) = self.owned.leases.get(&key) {
                    let (worker, at) = (lease.worker, lease.at.clone());
                    let running = lease.inflight.front() == Some(&task);
                    // Dropped by the worker unless it started; started, only force stops it.
                    self.forward(worker, at, &ToWorker::Cancel { task });
                    self.owned.cancelled.insert(task);
                    if force && running {
                        self.send(&ToNode::KillLeased { key });
                    }
                }
            }
            At::Called(actor) => self.cancel_call(actor, task),
            // It runs here, on top of the blocked task.
            At::Here => {}
        }
        true
    }

    /// The owned objects `spec` names that must be handed to the node before it is
    /// submitted: the references inside its arguments, and its arguments themselves when the
    /// node is to own it.
    pub(crate) fn escaping(&self, spec: &TaskSpec) -> Vec<ObjectId> {
        let mut ids = self.to_promote(&spec.inlined_refs);
        if !self.try_own(spec) {
            let deps: Vec<ObjectId> = spec.dependencies().collect();
            ids.extend(self.to_promote(&deps));
        }
        ids
    }

    /// The owned objects among `ids` not handed to the node yet, and those lent to this
    /// worker: a reference to them is about to leave this worker, so they go to the node
    /// first ([`Worker::hand_over`]).
    pub(crate) fn to_promote(&self, ids: &[ObjectId]) -> Vec<ObjectId> {
        (ids.iter().copied())
            .filter(|&id| self.owns(id) || self.loans.borrows(id))
            .collect()
    }

    /// Hands owned objects `ids` to the node, which owns them from now on, without waiting
    /// for any: a value known here goes now ([`Worker::promote`]); the task of one not known
    /// yet goes as a task running here ([`ToNode::HandOver`]), its end to follow when it
    /// comes (its values are held here till then). Ray keeps such objects with their owner
    /// and lends them (the borrower protocol); handed over, they outlive this worker, unless
    /// it dies before their task ends (`OwnerDied`), and lose their lineage. True when any
    /// went.
    pub(crate) fn hand_over(&mut self, ids: &[ObjectId]) -> bool {
        // Objects lent to this worker go to the node through their owners.
        self.promote_loans(ids);
        let mut known = Vec::new();
        let mut handed = Vec::new();
        for &id in ids {
            if !self.owns(id) {
                continue;
            }
            match self.cache.get(&id) {
                Some(Slot::Ready(_) | Slot::Failed(_)) => known.push(id),
                // Its end goes once its values left on other nodes are pulled here.
                None if self.owned.afar.contains_key(&id) => {
                    handed.extend(self.hand_over_left(id.task))
                }
                _ => handed.extend(self.hand_over_task(id.task)),
            }
        }
        self.promote(&known);
        let any = !(known.is_empty() && handed.is_empty());
        if !handed.is_empty() {
            self.send(&ToNode::HandOver(handed));
        }
        any
    }

    /// Books owned `task`, not ended yet (or ended leaving values on other nodes, which are
    /// pulled here: [`Worker::hand_over_left`]), as handed to the node (see
    /// [`Worker::hand_over`]): what the node is to be told, unless it was handed over already.
    fn hand_over_task(&mut self, task: TaskId) -> Option<HandedTask> {
        let spec = match self.owned.tasks.get(&task) {
            Some(record) => &record.spec,
            None => &self.owned.left.get(&task)?.spec,
        };
        if self.owned.handed.contains(&task) {
            return None;
        }
        let function = spec.function.clone();
        let num_returns = spec.num_returns;
        let ids: Vec<ObjectId> = spec.return_ids().collect();
        // Held here until their end goes to the node, which counts this worker's hold of
        // each from the hand-over on: while owned, a hold is counted here alone.
        for &id in &ids {
            self.borrow(id);
        }
        self.owned.handed.insert(task);
        for &id in &ids {
            self.owned.promoted.insert(id);
        }
        Some(HandedTask {
            task,
            function,
            num_returns,
        })
    }

    /// Hands owned objects `ids` (their values known) to the node, which owns them from now
    /// on: a value as a put, a failure as a task that failed.
    pub(crate) fn promote(&mut self, ids: &[ObjectId]) {
        for &id in ids {
            if !self.owns(id) {
                continue;
            }
            match self.cache.get(&id) {
                Some(Slot::Ready(bytes)) => {
                    let value = bytes.to_wire(id);
                    let (nested, actors) = self.made_for_node(id);
                    self.owned.promoted.insert(id);
                    // The node's to remove now.
                    self.owned.segments.remove(&id);
                    self.send(&ToNode::Put {
                        id,
                        value,
                        nested,
                        actors,
                    });
                }
                Some(Slot::Failed(error)) => {
                    let function = self
                        .refs
                        .get(&id)
                        .map_or_else(|| String::from("<owned>"), |(_, f)| f.to_string());
                    let spec = TaskSpec {
                        num_returns: id.index + 1,
                        ..TaskSpec::call(id.task, function, Vec::new())
                    };
                    for other in spec.return_ids() {
                        self.owned.promoted.insert(other);
                    }
                    self.send(&ToNode::Submit {
                        spec,
                        failed: Some(error.clone()),
                    });
                }
                _ => tracing::error!(object = %id, "an owned object handed over before its value"),
            }
        }
    }

    /// The last reference to `id` went: an owned object is forgotten here (the node never
    /// knew it). False for an object the node owns, whose release it must hear of.
    pub(super) fn release_owned(&mut self, id: ObjectId) -> bool {
        if !self.owns(id) {
            return false;
        }
        if self.owned.segments.remove(&id) {
            self.unlink_owned(id);
        }
        self.drop_made(id);
        self.owned.wanted.remove(&id);
        if self.owned.afar.contains_key(&id) {
            self.drop_left(id.task, Some(id));
        }
        true
    }

    /// The node serving its peers at `node` may pull a copy of owned `id`, which it keeps
    /// until this worker drops the object.
    pub(super) fn may_copy(&mut self, id: ObjectId, node: &str) {
        copied_at(&mut self.owned.copies_at, id, node);
    }

    /// Owned object `id`'s segment goes (the shell removes it), and the copies other nodes
    /// pulled of it.
    fn unlink_owned(&mut self, id: ObjectId) {
        self.owned.unlinked.push(id);
        for at in self.owned.copies_at.remove(&id).unwrap_or_default() {
            self.send(&ToNode::DropCopies { at, ids: vec![id] });
        }
    }

    /// The references and actor handles inside the value of an owned task that ran here came
    /// with its end: the node holds them for this worker already (the running task held
    /// them), so they are counted among its own references without a message, until the
    /// value leaves this worker's books ([`Worker::drop_made`]). A release of one of them not
    /// sent yet (the task's own hold, let go at its end) is taken back: it would end the hold
    /// the value now keeps. (A task that ran on another worker is held for this one apart:
    /// [`Made::held`].)
    fn hold_made(&mut self, made: &Made) {
        for &id in &made.nested {
            match self.refs.get_mut(&id) {
                Some((count, _)) => *count += 1,
                None => {
                    self.refs.insert(id, (1, Arc::from("nested")));
                    self.take_back_release(id);
                }
            }
        }
        for &actor in &made.actors {
            let count = self.actors.entry(actor).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.take_back_actor_release(actor);
            }
        }
    }

    /// Owned object `id`'s value leaves this worker's books (its last reference went): what
    /// it refers to is let go with it.
    pub(super) fn drop_made(&mut self, id: ObjectId) {
        if let Some(made) = self.owned.made.remove(&id) {
            self.let_go_of(made);
        }
    }

    /// What owned object `id`'s value refers to (objects, actor handles), for the node that
    /// is to hold it: the objects lent to this worker among them become the node's first.
    fn made_for_node(&mut self, id: ObjectId) -> (Vec<ObjectId>, Vec<prism_graph::ActorId>) {
        let Some(made) = self.owned.made.get(&id).cloned() else {
            return Default::default();
        };
        self.promote_loans(&made.lent);
        (made.refers_to(), made.actors)
    }

    /// What a value of an owned task held goes.
    fn let_go_of(&mut self, made: Made) {
        for id in made.lent {
            self.release(id);
        }
        if made.held {
            return self.release_held(made.nested, made.actors);
        }
        for inner in made.nested {
            self.release(inner);
        }
        for actor in made.actors {
            self.actor_release(actor);
        }
    }

    /// Lets go of holds the node took for this worker ([`ToNode::ReleaseHeld`]).
    pub(super) fn release_held(&mut self, ids: Vec<ObjectId>, actors: Vec<prism_graph::ActorId>) {
        if !ids.is_empty() || !actors.is_empty() {
            self.send(&ToNode::ReleaseHeld { ids, actors });
        }
    }

    /// Segments of owned objects nobody holds any more, for the shell to remove.
    pub(crate) fn take_unlinked(&mut self) -> Vec<ObjectId> {
        std::mem::take(&mut self.owned.unlinked)
    }

    /// The keys of the lease asks made for the owned objects among `ids` that wait in a
    /// queue: a blocked worker names them as awaited, so that the node may lease it itself
    /// when no other worker can be had.
    pub(super) fn awaited_asks(&self, ids: &[ObjectId]) -> Vec<TaskId> {
        let mut keys = Vec::new();
        for id in ids {
            let Some(record) = self.owned.tasks.get(&id.task) else {
                continue;
            };
            if record.at != At::Queued {
                continue;
            }
            let shape = self
                .owned
                .shapes
                .iter()
                .position(|s| s.resources == record.spec.resources);
            if let Some(key) = shape.and_then(|s| self.owned.shapes[s].asked.first().copied())
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        }
        keys
    }
}

/// How an owned task ended, as its owner takes it in: its values mapped and what each
/// refers to, or its error.
enum Ending {
    Returned {
        values: Vec<Got>,
        nested: Vec<Vec<ObjectId>>,
        /// Per value, its references to objects lent to this worker (not in `nested`).
        lent: Vec<Vec<ObjectId>>,
        actors: Vec<Vec<prism_graph::ActorId>>,
    },
    Failed(TaskError),
}

impl Made {
    /// Every object the value refers to, lent or not.
    fn refers_to(&self) -> Vec<ObjectId> {
        let mut ids = self.nested.clone();
        ids.extend_from_slice(&self.lent);
        ids
    }
}

/// One value of an owned task's end, as its owner takes it in.
enum Got {
    /// Inline, or mapped from this node's store (`true`: a segment there).
    Here(std::io::Result<ObjectBytes>, bool),
    /// Too large to travel inside the end, it stayed on node `at` (a peer address), where
    /// the task ran: this node pulls it.
    Afar { len: u64, at: String },
}

/// Books that the node at `node` may hold a copy of `id`.
fn copied_at(copies_at: &mut IdMap<ObjectId, Vec<String>>, id: ObjectId, node: &str) {
    let nodes = copies_at.entry(id).or_default();
    if !nodes.iter().any(|n| n == node) {
        nodes.push(node.to_string());
    }
}

/// Maps object `id` (`len` bytes), which this node's store holds, with `open`.
pub(super) fn open_shared(
    id: ObjectId,
    len: u64,
    open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
) -> std::io::Result<ObjectBytes> {
    let shared = Value::Shared { id, len };
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&shared).map_err(std::io::Error::other)?;
    let value = rkyv::access::<ArchivedValue, rkyv::rancor::Error>(&archived);
    open(value.map_err(std::io::Error::other)?)
}

#[cfg(test)]
pub(super) mod tests {
    //! An owner's books stepped by hand: the node's and the leased workers' messages in,
    //! frames out.

    use prism_graph::IdSet;
    use prism_transport::{FrameDecoder, ObjectValue, Outcome, TaskEnd};

    use super::super::{Tally, Wake};
    use super::*;

    pub(in crate::proto::worker) const ME: u64 = 5;

    pub(in crate::proto::worker) fn receive(worker: &mut Worker, msg: &ToWorker) {
        super::super::tests::receive(worker, msg).unwrap();
    }

    /// A task's end with one inline value.
    pub(in crate::proto::worker) fn value_of(bytes: Vec<u8>) -> Outcome {
        Outcome::Returned {
            values: vec![Value::Inline(bytes)],
            nested: vec![Vec::new()],
            actors: vec![Vec::new()],
        }
    }

    fn frames(bytes: &[u8]) -> Vec<prism_transport::Frame> {
        let mut decoder = FrameDecoder::new(prism_transport::DEFAULT_MAX_FRAME);
        decoder.extend(bytes);
        std::iter::from_fn(|| decoder.next_frame().unwrap()).collect()
    }

    fn to_node(bytes: &[u8]) -> Vec<ToNode> {
        (frames(bytes).iter())
            .map(|f| {
                rkyv::deserialize::<ToNode, rkyv::rancor::Error>(f.access::<ToNode>().unwrap())
            })
            .map(Result::unwrap)
            .collect()
    }

    pub(in crate::proto::worker) fn to_worker(bytes: &[u8]) -> Vec<ToWorker> {
        (frames(bytes).iter())
            .map(|f| {
                rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(f.access::<ToWorker>().unwrap())
            })
            .map(Result::unwrap)
            .collect()
    }

    /// What the books would write now, decoded, events left out.
    pub(in crate::proto::worker) fn sent(worker: &mut Worker) -> Vec<ToNode> {
        let out = std::mem::take(worker.transmit(|| 1_000));
        to_node(&out)
            .into_iter()
            .filter(|m| !matches!(m, ToNode::Owned { .. }))
            .collect()
    }

    /// The messages forwarded to `to` among `messages`.
    pub(in crate::proto::worker) fn forwarded(messages: &[ToNode], to: u64) -> Vec<ToWorker> {
        (messages.iter())
            .filter_map(|m| match m {
                ToNode::Forward { to: t, frame, .. } if *t == to => Some(to_worker(frame)),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub(in crate::proto::worker) fn owner() -> Worker {
        let mut worker = Worker::new(false, ME);
        receive(&mut worker, &ToWorker::OwnTasks);
        worker
    }

    pub(in crate::proto::worker) fn spec(seq: u64, args: Vec<Arg>, max_retries: u32) -> TaskSpec {
        TaskSpec {
            resources: Resources::cpus(1.0).unwrap(),
            max_retries,
            ..TaskSpec::call(TaskId::new(ME, seq), "tests::child", args)
        }
    }

    /// An owner that submitted one task (of `max_retries`), pushed to worker 9 under a
    /// lease: the owner, the task's object and the lease's key.
    fn one_leased(max_retries: u32) -> (Worker, ObjectId, TaskId) {
        let mut w = owner();
        let task = spec(1, Vec::new(), max_retries);
        let id = ObjectId::new(task.task_id, 0);
        w.submit(task, None);
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 9);
        (w, id, key)
    }

    /// Task `seq` of owner [`ME`] as pushed to a leased worker.
    fn child(seq: u64) -> Execute {
        Execute {
            task: TaskId::new(ME, seq),
            function: "tests::child".into(),
            fn_hash: 0,
            args: Vec::new(),
            num_returns: 1,
            kind: TaskKind::Normal,
            stream: None,
            cpu: prism_graph::Amount::ZERO,
            run: 0,
            pull_from: Vec::new(),
        }
    }

    pub(in crate::proto::worker) fn returned(task: TaskId, bytes: Vec<u8>) -> ToWorker {
        ToWorker::Returned {
            sent_us: 0,
            ends: vec![untimed_end(task, value_of(bytes))],
            lent: Vec::new(),
        }
    }

    /// `task`'s end with `outcome`, without run times or a run number.
    pub(in crate::proto::worker) fn untimed_end(task: TaskId, outcome: Outcome) -> TaskEnd {
        TaskEnd {
            task,
            outcome,
            times: None,
            run: 0,
        }
    }

    /// The node grants the lease the owner asked for last on worker 9 of the node at `at`.
    fn lease_afar(w: &mut Worker, at: &str) {
        let key = lease_key(&sent(w));
        grant(w, key, 9, (Some(at.to_string()), None));
    }

    /// The node grants lease `key` on `worker`, of the owner's node.
    pub(in crate::proto::worker) fn lease(w: &mut Worker, key: TaskId, worker: u64) {
        grant(w, key, worker, (None, None));
    }

    /// The node grants lease `key` on `worker`, of the node at `at` (`None`: the owner's),
    /// whose direct endpoint is `direct`.
    pub(in crate::proto::worker) fn grant(
        w: &mut Worker,
        key: TaskId,
        worker: u64,
        (at, direct): (Option<String>, Option<String>),
    ) {
        let leased = ToWorker::Leased {
            key,
            worker,
            at,
            direct,
        };
        receive(w, &leased);
    }

    pub(in crate::proto::worker) fn lease_key(messages: &[ToNode]) -> TaskId {
        (messages.iter())
            .find_map(|m| match m {
                ToNode::Lease { key, .. } => Some(*key),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a lease ask: {messages:?}"))
    }

    pub(in crate::proto::worker) fn value(worker: &Worker, id: ObjectId) -> Option<Vec<u8>> {
        match worker.cache.get(&id) {
            Some(Slot::Ready(bytes)) => Some(bytes.as_slice().to_vec()),
            _ => None,
        }
    }

    /// The tasks pushed to `worker` among `messages`.
    pub(in crate::proto::worker) fn pushed(messages: &[ToNode], worker: u64) -> Vec<TaskId> {
        (forwarded(messages, worker).into_iter())
            .flat_map(|m| match m {
                ToWorker::Push(batch) => batch.into_iter().map(|e| e.task).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The node grants the lease asked for last on worker 9 of another node, whose direct
    /// endpoint is [`ENDPOINT`].
    fn lease_direct(w: &mut Worker) -> TaskId {
        let key = lease_key(&sent(w));
        grant(
            w,
            key,
            9,
            (Some("10.0.0.2:7000".into()), Some(ENDPOINT.into())),
        );
        key
    }

    const ENDPOINT: &str = "10.0.0.2:40000";

    #[test]
    fn pushes_to_a_worker_leased_with_an_endpoint_go_on_a_link_and_a_broken_link_ends_the_lease() {
        let mut w = owner();
        w.set_linking();
        w.submit(spec(1, Vec::new(), 0), None);
        let key = lease_direct(&mut w);
        let to_node = sent(&mut w);
        assert!(
            pushed(&to_node, 9).is_empty(),
            "nothing through the node: {to_node:?}"
        );
        let out = w.take_direct();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, super::super::DirectTo::Endpoint(ENDPOINT.into()));
        match to_worker(&out[0].1).as_slice() {
            [ToWorker::Push(batch)] => assert_eq!(batch[0].task, TaskId::new(ME, 1)),
            other => panic!("one push: {other:?}"),
        }
        // What was pushed on a link that broke may never have arrived: the lease is given up
        // by force (its worker killed, its tasks run again once the node says it ended).
        w.direct_lost(ENDPOINT);
        let to_node = sent(&mut w);
        assert!(
            to_node.contains(&ToNode::KillLeased { key }),
            "the lease is given up: {to_node:?}"
        );
        w.submit(spec(2, Vec::new(), 0), None);
        let _ = sent(&mut w);
        assert!(w.take_direct().is_empty(), "nothing more on the lost lease");
    }

    #[test]
    fn an_owner_without_an_endpoint_pushes_through_the_nodes_even_to_a_worker_with_one() {
        let mut w = owner();
        w.submit(spec(1, Vec::new(), 0), None);
        lease_direct(&mut w);
        let to_node = sent(&mut w);
        assert_eq!(pushed(&to_node, 9), vec![TaskId::new(ME, 1)]);
        assert!(w.take_direct().is_empty());
    }

    #[test]
    fn a_lease_s_pipeline_deepens_for_short_tasks_and_stays_shallow_for_long_ones() {
        for (gap_us, deepest) in [(10, PIPELINE_MAX), (50_000, PIPELINE_START)] {
            let mut w = owner();
            for seq in 1..=200 {
                w.submit(spec(seq, Vec::new(), 0), None);
            }
            let key = lease_key(&sent(&mut w));
            lease(&mut w, key, 9);
            let mut inflight: VecDeque<TaskId> = pushed(&sent(&mut w), 9).into();
            assert_eq!(inflight.len(), PIPELINE_START);
            let (mut now, mut most) = (1_000, 0);
            for _ in 0..40 {
                let task = inflight.pop_front().expect("tasks in flight");
                now += gap_us;
                w.set_now(now);
                receive(&mut w, &returned(task, vec![1]));
                inflight.extend(pushed(&sent(&mut w), 9));
                most = most.max(inflight.len());
            }
            assert_eq!(most, deepest, "ends {gap_us} us apart");
        }
    }

    /// The lease asks among `messages`.
    fn asks(messages: &[ToNode]) -> Vec<TaskId> {
        (messages.iter())
            .filter_map(|m| match m {
                ToNode::Lease { key, .. } => Some(*key),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_owner_asks_for_more_leases_as_it_is_granted_them_and_withdraws_what_it_needs_no_more() {
        let mut w = owner();
        for seq in 1..=1_000 {
            w.submit(spec(seq, Vec::new(), 0), None);
        }
        let mut waiting = asks(&sent(&mut w));
        assert_eq!(waiting.len(), 1, "one ask to begin with");
        // Each grant lets one more ask wait than there are leases: they double per round.
        let mut worker = 100;
        let mut rounds = Vec::new();
        while !waiting.is_empty() && rounds.len() < 8 {
            for key in std::mem::take(&mut waiting) {
                worker += 1;
                lease(&mut w, key, worker);
            }
            waiting = asks(&sent(&mut w));
            rounds.push(waiting.len());
        }
        assert_eq!(
            rounds[..4],
            [2, 4, 8, MAX_ASKS],
            "asks waiting after each round"
        );
        assert!(rounds.iter().all(|&n| n <= MAX_ASKS), "{rounds:?}");
        // Once every task is pushed, the asks still waiting are withdrawn.
        let mut w = owner();
        for seq in 1..=5 {
            w.submit(spec(seq, Vec::new(), 0), None);
        }
        let first = asks(&sent(&mut w));
        lease(&mut w, first[0], 9);
        let messages = sent(&mut w);
        let (on_9, more) = (pushed(&messages, 9), asks(&messages));
        assert_eq!(
            (on_9.len(), more.len()),
            (PIPELINE_START, 2),
            "{messages:?}"
        );
        lease(&mut w, more[0], 10);
        let messages = sent(&mut w);
        assert_eq!(pushed(&messages, 10).len(), PIPELINE_START);
        assert!(
            asks(&messages).is_empty(),
            "one task waits, one ask: {messages:?}"
        );
        receive(&mut w, &returned(on_9[0], vec![1]));
        let messages = sent(&mut w);
        assert_eq!(pushed(&messages, 9).len(), 1, "the last task");
        assert!(
            messages.contains(&ToNode::Unlease { key: more[1] }),
            "the ask left is withdrawn: {messages:?}"
        );
    }

    #[test]
    fn an_owner_pushes_its_tasks_to_a_leased_worker_and_keeps_their_values() {
        let mut w = owner();
        let first = spec(1, vec![Arg::Value(vec![1])], 0);
        let task = first.task_id;
        w.submit(first, None);
        let messages = sent(&mut w);
        assert!(
            !messages.iter().any(|m| matches!(m, ToNode::Submit { .. })),
            "the node is not given the task: {messages:?}"
        );
        let key = lease_key(&messages);
        assert_ne!(key, task, "a key no task has");

        // A second task waits for an object of the node's: asked for, then queued.
        let theirs = ObjectId::new(TaskId::new(0, 9), 0);
        w.borrow(theirs);
        let second = spec(2, vec![Arg::Ref(theirs)], 0);
        w.submit(second, None);
        assert!(sent(&mut w).contains(&ToNode::Get { ids: vec![theirs] }));

        lease(&mut w, key, 9);
        let messages = sent(&mut w);
        let pushed = forwarded(&messages, 9);
        let [ToWorker::Push(batch)] = &pushed[..] else {
            panic!("one push: {messages:?}");
        };
        assert_eq!(batch.len(), 1, "the second waits for its argument");
        assert_eq!(
            (batch[0].task, &batch[0].args),
            (task, &vec![Value::Inline(vec![1])])
        );

        let objects = vec![(theirs, ObjectValue::Ready(Value::Inline(vec![3])))];
        receive(&mut w, &ToWorker::Objects(objects));
        let pushed = forwarded(&sent(&mut w), 9);
        let [ToWorker::Push(batch)] = &pushed[..] else {
            panic!("the second goes to the lease: {pushed:?}");
        };
        assert_eq!(
            batch[0].args,
            vec![Value::Inline(vec![3])],
            "its argument resolved here"
        );

        // The ends come back: values kept here, the lease given back once idle.
        let out = ObjectId::new(task, 0);
        assert!(w.owns(out));
        receive(&mut w, &returned(task, vec![42]));
        assert_eq!(value(&w, out), Some(vec![42]));
        assert!(
            !sent(&mut w).contains(&ToNode::Unlease { key }),
            "one still runs"
        );
        receive(&mut w, &returned(TaskId::new(ME, 2), vec![43]));
        assert_eq!(sent(&mut w), vec![ToNode::Unlease { key }]);

        // Dropping an owned object tells the node nothing.
        w.release(out);
        assert!(sent(&mut w).is_empty());
        assert!(!w.owns(out));
    }

    #[test]
    fn an_idle_owner_asked_to_exit_stays_while_its_tasks_are_under_way() {
        use super::super::Stop;
        let ask = |w: &mut Worker| super::super::tests::receive(w, &ToWorker::ExitIfIdle);
        let mut w = owner();
        let first = spec(1, Vec::new(), 0);
        let task = first.task_id;
        w.submit(first, None);
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 9);
        let _ = sent(&mut w);
        // Its task runs on its lease (one the driver may have granted, which its node does
        // not see): it owes the task's end, and says so.
        assert!(ask(&mut w).is_ok());
        assert_eq!(sent(&mut w), vec![ToNode::Owes]);
        receive(&mut w, &returned(task, vec![42]));
        let _ = sent(&mut w);
        assert!(matches!(ask(&mut w), Err(Stop::Shutdown)), "nothing owed");
        // A task queued to run here is owed too.
        let mut idle = Worker::new(false, 6);
        receive(&mut idle, &ToWorker::Execute(vec![child(1)]));
        assert!(ask(&mut idle).is_ok());
        assert_eq!(sent(&mut idle), vec![ToNode::Owes]);
    }

    #[test]
    fn a_pushed_task_cancelled_by_force_has_its_leased_worker_killed_and_fails_cancelled() {
        let mut w = owner();
        let (first, second) = (spec(1, Vec::new(), 3), spec(2, Vec::new(), 3));
        let ids = (
            ObjectId::new(first.task_id, 0),
            ObjectId::new(second.task_id, 0),
        );
        w.submit(first, None);
        w.submit(second, None);
        let (first, second) = ids;
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 9);
        assert_eq!(forwarded(&sent(&mut w), 9).len(), 1, "both in one push");
        // The second (queued behind the first on the leased worker) is only dropped there.
        w.cancel(second, true);
        let messages = sent(&mut w);
        assert!(
            !messages.contains(&ToNode::KillLeased { key }),
            "{messages:?}"
        );
        // The first runs: forced, its worker is killed.
        w.cancel(first, true);
        let messages = sent(&mut w);
        assert!(
            messages.contains(&ToNode::KillLeased { key }),
            "{messages:?}"
        );
        let reason = "leased worker 9 died: killed by signal 9".to_string();
        receive(&mut w, &ToWorker::LeaseEnded { key, reason });
        // Both fail as cancelled: the second, cancelled before it started, does not run
        // again either.
        for id in [first, second] {
            assert!(
                matches!(
                    w.cache.get(&id),
                    Some(Slot::Failed(TaskError::Cancelled { .. }))
                ),
                "{id}: {:?}",
                w.cache.get(&id)
            );
        }
        assert!(sent(&mut w).is_empty(), "no new ask: nothing waits");
    }

    #[test]
    fn a_task_whose_leased_worker_dies_runs_again_then_fails_naming_the_death() {
        let (mut w, id, key) = one_leased(1);
        assert_eq!(forwarded(&sent(&mut w), 9).len(), 1);
        let reason = String::from("leased worker 9 died: killed by signal 9");
        receive(
            &mut w,
            &ToWorker::LeaseEnded {
                key,
                reason: reason.clone(),
            },
        );
        let again = lease_key(&sent(&mut w));
        assert_ne!(again, key);
        receive(
            &mut w,
            &ToWorker::Leased {
                at: None,
                key: again,
                worker: 10,
                direct: None,
            },
        );
        assert_eq!(forwarded(&sent(&mut w), 10).len(), 1, "sent again");
        receive(
            &mut w,
            &ToWorker::LeaseEnded {
                key: again,
                reason: reason.clone(),
            },
        );
        match w.cache.get(&id) {
            Some(Slot::Failed(TaskError::WorkerDied {
                attempts: 2,
                reason: r,
                function,
                ..
            })) => assert_eq!((r, function.as_str()), (&reason, "tests::child")),
            other => panic!("failed naming the death: {other:?}"),
        }
        assert!(sent(&mut w).is_empty(), "no new ask: nothing waits");
    }

    /// The tasks pushed to worker `to` in `messages`, by sequence number, and their runs.
    fn pushed_runs(messages: &[ToNode], to: u64) -> Vec<(u64, u32)> {
        (forwarded(messages, to).into_iter())
            .flat_map(|m| match m {
                ToWorker::Push(batch) => batch.into_iter().map(|e| (e.task.seq, e.run)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The end of run 1 of `id`'s task comes after run 2 was pushed under lease `again`: it is
    /// dropped and the lease, whose worker runs the task still, stays; run 2's end counts.
    fn an_earlier_end_is_dropped_and_the_last_counts(w: &mut Worker, id: ObjectId, again: TaskId) {
        let end = |run, byte| ToWorker::Returned {
            sent_us: 0,
            ends: vec![TaskEnd {
                task: id.task,
                outcome: value_of(vec![byte]),
                times: None,
                run,
            }],
            lent: Vec::new(),
        };
        receive(w, &end(1, 1));
        assert_eq!(value(w, id), None);
        let messages = sent(w);
        assert!(
            !messages.contains(&ToNode::Unlease { key: again }),
            "{messages:?}"
        );
        receive(w, &end(2, 2));
        assert_eq!(value(w, id), Some(vec![2]));
    }

    #[test]
    fn the_end_of_an_earlier_run_is_dropped_and_the_lease_of_the_run_awaited_stays() {
        let (mut w, id, key) = one_leased(3);
        assert_eq!(pushed_runs(&sent(&mut w), 9), [(1, 1)], "its first run");
        // Worker 9's node leaves: the task runs again under a new lease, on worker 10.
        let reason = String::from("node b, where its worker was leased, left the job");
        receive(&mut w, &ToWorker::LeaseEnded { key, reason });
        let again = lease_key(&sent(&mut w));
        lease(&mut w, again, 10);
        assert_eq!(pushed_runs(&sent(&mut w), 10), [(1, 2)], "its second run");
        // The first run's end still comes (it was on its way).
        an_earlier_end_is_dropped_and_the_last_counts(&mut w, id, again);
        assert!(sent(&mut w).contains(&ToNode::Unlease { key: again }));
    }

    #[test]
    fn a_push_not_counted_as_a_try_still_numbers_its_run() {
        let mut w = owner();
        let (first, second) = (spec(1, Vec::new(), 3), spec(2, Vec::new(), 3));
        let id = ObjectId::new(second.task_id, 0);
        w.submit(first, None);
        w.submit(second, None);
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 9);
        assert_eq!(
            pushed_runs(&sent(&mut w), 9),
            [(1, 1), (2, 1)],
            "both pushed"
        );
        // Worker 9's node leaves: only the first in flight counts as tried; both run again
        // under a new lease, each under a new number.
        let reason = String::from("node b, where its worker was leased, left the job");
        receive(&mut w, &ToWorker::LeaseEnded { key, reason });
        let again = lease_key(&sent(&mut w));
        lease(&mut w, again, 10);
        assert_eq!(pushed_runs(&sent(&mut w), 10), [(1, 2), (2, 2)]);
        // The second task ran on worker 9 after all (its end was on its way across a
        // partition).
        an_earlier_end_is_dropped_and_the_last_counts(&mut w, id, again);
    }

    #[test]
    fn an_owned_object_whose_reference_leaves_goes_to_the_node_first() {
        let (mut w, id, _) = one_leased(0);
        receive(&mut w, &returned(id.task, vec![7]));
        let _ = sent(&mut w);
        assert_eq!(w.to_promote(&[id]), vec![id]);
        w.promote(&[id]);
        assert_eq!(
            sent(&mut w),
            vec![ToNode::Put {
                id,
                value: Value::Inline(vec![7]),
                nested: Vec::new(),
                actors: Vec::new(),
            }]
        );
        assert!(!w.owns(id) && w.to_promote(&[id]).is_empty());
        // The node owns it now: it hears of the release.
        w.release(id);
        assert_eq!(sent(&mut w), vec![ToNode::Release(vec![id])]);
    }

    #[test]
    fn an_owned_object_not_known_yet_goes_as_its_task_and_its_end_follows() {
        let (mut w, id, _) = one_leased(0);
        let _ = sent(&mut w);
        // Its reference leaves before its value is known: the task goes to the node at once,
        // not after its end.
        assert_eq!(w.to_promote(&[id]), vec![id]);
        w.hand_over(&[id]);
        let handed = ToNode::HandOver(vec![HandedTask {
            task: id.task,
            function: "tests::child".into(),
            num_returns: 1,
        }]);
        assert_eq!(sent(&mut w), vec![handed]);
        assert!(!w.owns(id) && w.to_promote(&[id]).is_empty());
        // The caller lets its reference go: the value is still held here for the node, and
        // the worker owes the node its end.
        w.release(id);
        assert_eq!(sent(&mut w), Vec::<ToNode>::new());
        assert!(w.owes_work());
        // The end comes: it goes to the node as the task's end, and the hold ends after it.
        receive(&mut w, &returned(id.task, vec![7]));
        let messages = sent(&mut w);
        let outcome = Outcome::Returned {
            values: vec![Value::Inline(vec![7])],
            nested: vec![Vec::new()],
            actors: vec![Vec::new()],
        };
        let end = ToNode::Done {
            sent_us: 0,
            ended: vec![untimed_end(id.task, outcome)],
        };
        let at = |m: &ToNode| messages.iter().position(|x| x == m);
        let (done, released) = (at(&end), at(&ToNode::Release(vec![id])));
        assert!(
            done.is_some() && released.is_some() && done < released,
            "{messages:?}"
        );
        assert!(!w.owes_work());
    }

    #[test]
    fn a_handed_over_task_not_started_is_cancelled_at_the_node_s_word() {
        let mut w = owner();
        let task = spec(1, Vec::new(), 0);
        let id = ObjectId::new(task.task_id, 0);
        // Queued: no lease yet.
        w.submit(task, None);
        w.hand_over(&[id]);
        let _ = sent(&mut w);
        let cancel = ToWorker::CancelHanded {
            task: id.task,
            force: false,
        };
        receive(&mut w, &cancel);
        let failed = sent(&mut w).into_iter().any(|m| {
            matches!(&m, ToNode::Done { ended, .. }
                if matches!(&ended[..], [e] if e.task == id.task
                    && matches!(e.outcome, Outcome::Failed(TaskError::Cancelled { .. }))))
        });
        assert!(failed, "its end says it was cancelled");
        assert!(!w.owes_work());
    }

    #[test]
    fn a_forced_cancel_of_a_handed_over_task_that_runs_kills_its_leased_worker() {
        let (mut w, id, key) = one_leased(0);
        w.hand_over(&[id]);
        let _ = sent(&mut w);
        let cancel = ToWorker::CancelHanded {
            task: id.task,
            force: true,
        };
        receive(&mut w, &cancel);
        assert!(sent(&mut w).contains(&ToNode::KillLeased { key }));
    }

    #[test]
    fn a_handed_over_task_that_fails_sends_its_failure() {
        let (mut w, id, _) = one_leased(0);
        w.hand_over(&[id]);
        let _ = sent(&mut w);
        let error = TaskError::Panicked {
            task: id.task,
            function: "tests::child".into(),
            message: "boom".into(),
        };
        let ended = ToWorker::Returned {
            sent_us: 0,
            ends: vec![untimed_end(id.task, Outcome::Failed(error.clone()))],
            lent: Vec::new(),
        };
        receive(&mut w, &ended);
        let failed = ToNode::Done {
            sent_us: 0,
            ended: vec![untimed_end(id.task, Outcome::Failed(error))],
        };
        assert!(sent(&mut w).contains(&failed));
    }

    #[test]
    fn a_blocked_owner_leased_itself_runs_its_queued_tasks_on_top_of_the_wait() {
        let mut w = owner();
        let task = spec(1, Vec::new(), 0);
        let id = ObjectId::new(task.task_id, 0);
        w.submit(task, None);
        let ids = [id];
        w.request(&ids);
        let awaiting = w.missing_tasks(&ids, 8);
        let messages = sent(&mut w);
        let key = lease_key(&messages);
        assert_eq!(
            awaiting,
            IdSet::from_iter([key]),
            "it names the ask as awaited"
        );
        w.block(awaiting);
        let _ = sent(&mut w);
        let mut tally = Tally::new(&w, &ids, 1);
        assert!(matches!(w.wake(&ids, 1, &mut tally), Wake::Wait));
        lease(&mut w, key, ME);
        let Wake::Run(exec) = w.wake(&ids, 1, &mut tally) else {
            panic!("it runs its own task");
        };
        assert_eq!(exec.task, id.task);
        let awaiting = w.nest(&exec);
        let ended = Ended {
            task: id.task,
            outcome: value_of(vec![5]),
            timing: None,
        };
        w.nested_ended(ended, awaiting, &mut |value| match value {
            ArchivedValue::Inline(bytes) => Ok(ObjectBytes::inline(bytes)),
            ArchivedValue::Shared { .. } => Err(std::io::Error::other("no segments")),
        });
        assert!(matches!(w.wake(&ids, 1, &mut tally), Wake::Done));
        assert_eq!(value(&w, id), Some(vec![5]));
        w.unblock();
        let messages = sent(&mut w);
        assert!(messages.contains(&ToNode::Unlease { key }), "{messages:?}");
        assert!(
            !messages.iter().any(|m| matches!(m, ToNode::Done { .. })),
            "its end stays here: {messages:?}"
        );
    }

    #[test]
    fn tasks_a_blocked_worker_hands_back_queue_again_for_another_lease() {
        let mut w = owner();
        w.submit(spec(1, Vec::new(), 0), None);
        w.submit(spec(2, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 9);
        let pushed = forwarded(&sent(&mut w), 9);
        assert!(matches!(&pushed[..], [ToWorker::Push(b)] if b.len() == 2));
        // The first blocks on the leased worker; the second comes back unrun.
        let second = TaskId::new(ME, 2);
        receive(&mut w, &ToWorker::Handback(vec![second]));
        let messages = sent(&mut w);
        let again = lease_key(&messages);
        assert!(
            forwarded(&messages, 9).is_empty(),
            "nothing more to a blocked worker"
        );
        assert!(
            !messages.contains(&ToNode::Unlease { key }),
            "the first still runs there"
        );
        receive(&mut w, &returned(TaskId::new(ME, 1), vec![1]));
        assert_eq!(sent(&mut w), vec![ToNode::Unlease { key }]);
        receive(
            &mut w,
            &ToWorker::Leased {
                at: None,
                key: again,
                worker: 10,
                direct: None,
            },
        );
        let pushed = forwarded(&sent(&mut w), 10);
        assert!(matches!(&pushed[..], [ToWorker::Push(b)] if b[0].task == second));
    }

    #[test]
    fn a_lease_on_another_node_carries_small_arguments_and_names_shared_ones_for_a_pull() {
        let dir = crate::store::create_session_dir().unwrap();
        let mut w = owner();
        let at = "127.0.0.3:4000".to_string();
        // Two tasks run on a lease of this node: one value comes back inline, the other in
        // this node's shared memory.
        w.submit(spec(1, Vec::new(), 0), None);
        w.submit(spec(2, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 7);
        let _ = sent(&mut w);
        let (small, large) = (TaskId::new(ME, 1), TaskId::new(ME, 2));
        receive(&mut w, &returned(small, vec![5; 100]));
        let (small, large) = (ObjectId::new(small, 0), ObjectId::new(large, 0));
        let len = 300 << 10;
        let fill = |buf: &mut [u8]| {
            buf.fill(6);
            Ok::<_, std::convert::Infallible>(buf.len())
        };
        crate::store::Segment::create_with(&dir, large, len, fill).unwrap();
        let outcome = Outcome::Returned {
            values: vec![Value::Shared {
                id: large,
                len: len as u64,
            }],
            nested: vec![Vec::new()],
            actors: vec![Vec::new()],
        };
        let ends = vec![TaskEnd {
            task: large.task,
            outcome,
            times: None,
            run: 0,
        }];
        let mut open = |value: &ArchivedValue| ObjectBytes::from_wire(&dir, value);
        let ended = ToWorker::Returned {
            sent_us: 0,
            ends,
            lent: Vec::new(),
        };
        super::super::tests::receive_with(&mut w, &ended, &mut open).unwrap();
        assert_eq!(value(&w, large).map(|v| v.len()), Some(len));
        // Tasks of each go to a worker leased on another node: the small value inside the
        // push, the shared one by its name, for that node to pull.
        w.submit(spec(3, vec![Arg::Ref(small)], 0), None);
        w.submit(spec(4, vec![Arg::Ref(large)], 0), None);
        lease_afar(&mut w, &at);
        let messages = sent(&mut w);
        let pushes = forwarded(&messages, 9);
        let args: Vec<&Value> = (pushes.iter())
            .flat_map(|m| match m {
                ToWorker::Push(tasks) => tasks.iter().flat_map(|t| &t.args).collect(),
                _ => Vec::new(),
            })
            .collect();
        let shared = Value::Shared {
            id: large,
            len: len as u64,
        };
        assert!(
            matches!(args[..], [Value::Inline(bytes), s] if bytes.len() == 100 && *s == shared),
            "{args:?}"
        );
        assert!(
            !messages.iter().any(|m| matches!(m, ToNode::Submit { .. })),
            "nothing goes to the node: {messages:?}"
        );
        // Both end; the owner lets the shared value go: the other node's copy goes with it.
        for task in [TaskId::new(ME, 3), TaskId::new(ME, 4)] {
            receive(&mut w, &returned(task, vec![1]));
        }
        w.release(large);
        let dropped: Vec<ToNode> = (sent(&mut w).into_iter())
            .filter(|m| matches!(m, ToNode::DropCopies { .. }))
            .collect();
        let ids = vec![large];
        assert_eq!(dropped, [ToNode::DropCopies { at, ids }]);
        assert_eq!(w.take_unlinked(), [large], "and the segment here");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_large_value_left_on_the_leased_worker_s_node_is_known_once_pulled_here_when_read() {
        let mut w = owner();
        let at = "127.0.0.3:4000".to_string();
        w.submit(spec(1, Vec::new(), 0), None);
        w.submit(spec(2, Vec::new(), 0), None);
        w.submit(spec(3, Vec::new(), 1), None);
        lease_afar(&mut w, &at);
        let _ = sent(&mut w);
        // All ran there, and left their values in that node's store.
        let (one, two, three) = (TaskId::new(ME, 1), TaskId::new(ME, 2), TaskId::new(ME, 3));
        let len = 300 << 20;
        for task in [one, two, three] {
            let id = ObjectId::new(task, 0);
            let outcome = Outcome::Returned {
                values: vec![Value::Shared { id, len }],
                nested: vec![Vec::new()],
                actors: vec![Vec::new()],
            };
            let ends = vec![TaskEnd {
                task,
                outcome,
                times: None,
                run: 0,
            }];
            receive(
                &mut w,
                &ToWorker::Returned {
                    sent_us: 0,
                    ends,
                    lent: Vec::new(),
                },
            );
        }
        let (one, two, three) = (
            ObjectId::new(one, 0),
            ObjectId::new(two, 0),
            ObjectId::new(three, 0),
        );
        let fetch = |id| ToNode::Fetch {
            id,
            len,
            from: Some(at.clone()),
        };
        let fetches = |w: &mut Worker| -> Vec<ToNode> {
            (sent(w).into_iter())
                .filter(|m| matches!(m, ToNode::Fetch { .. }))
                .collect()
        };
        assert_eq!(fetches(&mut w), [], "left there until read");
        // Read (a `get` of each): the node pulls them here, once.
        w.request(&[one, two, three]);
        w.request(&[one]);
        assert_eq!(
            fetches(&mut w),
            [fetch(one), fetch(two), fetch(three)],
            "the node pulls them here"
        );
        assert_eq!(value(&w, one), None, "not known before it is here");
        // The first lands: mapped from this node's store.
        let mut open = |value: &ArchivedValue| match value {
            ArchivedValue::Shared { id, .. } if id.to_native() == one => {
                Ok(ObjectBytes::inline(&[7; 3]))
            }
            _ => Err(std::io::Error::other("no such segment")),
        };
        let fetched = ToWorker::Fetched {
            id: one,
            error: None,
        };
        super::super::tests::receive_with(&mut w, &fetched, &mut open).unwrap();
        assert_eq!(value(&w, one), Some(vec![7; 3]));
        // The other cannot be had (its node is gone): it fails, naming the node and why.
        let error = Some("connection lost".to_string());
        receive(&mut w, &ToWorker::Fetched { id: two, error });
        match w.cache.get(&two) {
            Some(Slot::Failed(TaskError::ObjectUnavailable { reason, .. })) => {
                assert!(
                    reason.contains(&at) && reason.contains("connection lost"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // The third has a retry left: it runs again rather than fail.
        let error = Some("connection lost".to_string());
        receive(&mut w, &ToWorker::Fetched { id: three, error });
        assert_eq!(value(&w, three), None, "not failed");
        // Its lease went back once nothing was left to push: it asks for one again.
        let messages = sent(&mut w);
        assert_eq!(asks(&messages).len(), 1, "{messages:?}");
        let key = lease_key(&messages);
        lease(&mut w, key, 7);
        assert_eq!(pushed(&sent(&mut w), 7), [three.task], "and runs again");
    }

    #[test]
    fn a_full_node_has_the_owner_hand_its_share_of_the_queue_to_the_node() {
        let mut w = owner();
        for seq in 1..=9 {
            w.submit(spec(seq, Vec::new(), 0), None);
        }
        let ids: Vec<ObjectId> = (1..=9)
            .map(|s| ObjectId::new(TaskId::new(ME, s), 0))
            .collect();
        w.request(&ids);
        let key = lease_key(&sent(&mut w));
        // Room for 2 elsewhere, 1 at home: two thirds of the queue (6, the last) go.
        receive(
            &mut w,
            &ToWorker::Spill {
                key,
                room: 2,
                home: 1,
            },
        );
        let messages = sent(&mut w);
        let submitted: Vec<u64> = (messages.iter())
            .filter_map(|m| match m {
                ToNode::Submit { spec, failed: None } => Some(spec.task_id.seq),
                _ => None,
            })
            .collect();
        assert_eq!(submitted, vec![4, 5, 6, 7, 8, 9]);
        assert!(
            messages.contains(&ToNode::Get {
                ids: ids[3..].to_vec()
            }),
            "their values are asked of the node, as the worker waits for them: {messages:?}"
        );
        assert_ne!(lease_key(&messages), key, "asked again for the rest");
        assert!(w.owns(ids[2]) && !w.owns(ids[3]));
    }

    #[test]
    fn what_a_pushed_task_s_value_refers_to_is_held_for_its_owner_until_it_lets_go() {
        // The worker that runs it: a value referring to an object and an actor.
        let mut runner = Worker::new(false, 9);
        let task = TaskId::new(ME, 1);
        let (object, actor) = (
            ObjectId::new(TaskId::new(9, 4), 0),
            prism_graph::ActorId(task),
        );
        receive(&mut runner, &ToWorker::Push(vec![child(1)]));
        let run = runner.next_task().unwrap();
        runner.borrow(object);
        runner.adopt_actor(actor);
        runner.hold_returned(run.task, &[object], &[actor]);
        runner.release(object);
        runner.actor_release(actor);
        let outcome = Outcome::Returned {
            values: vec![Value::Inline(vec![1])],
            nested: vec![vec![object]],
            actors: vec![vec![actor]],
        };
        runner.ended(Ended {
            task,
            outcome: outcome.clone(),
            timing: None,
        });
        let messages = sent(&mut runner);
        let at = |wanted: &dyn Fn(&ToNode) -> bool| messages.iter().position(wanted);
        let held = at(&|m| {
            *m == ToNode::HoldFor {
                holder: ME,
                ids: vec![object],
                actors: vec![actor],
            }
        });
        let end = at(&|m| matches!(m, ToNode::Forward { to: ME, .. }));
        let released = at(&|m| *m == ToNode::Release(vec![object]));
        assert!(
            held.is_some() && held < end && end < released,
            "held for the owner, the end, then the runner's own release: {messages:?}"
        );

        // The owner's books: the node holds them for it, apart from its own holds, until it
        // lets go of the value.
        let mut w = owner();
        w.submit(spec(1, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut w));
        lease(&mut w, key, 9);
        let _ = sent(&mut w);
        let result = ObjectId::new(task, 0);
        // The owner had read the object itself and let it go: its release ends its own hold
        // only.
        w.borrow(object);
        assert_eq!(sent(&mut w), vec![ToNode::Hold(vec![object])]);
        w.release(object);
        let end = TaskEnd {
            task,
            outcome: outcome.clone(),
            times: None,
            run: 0,
        };
        let ended = ToWorker::Returned {
            sent_us: 0,
            ends: vec![end.clone()],
            lent: Vec::new(),
        };
        receive(&mut w, &ended);
        let messages = sent(&mut w);
        assert!(
            !messages.iter().any(|m| matches!(
                m,
                ToNode::Hold(_) | ToNode::HoldActors(_) | ToNode::ReleaseHeld { .. }
            )),
            "the node holds them for the owner already: {messages:?}"
        );
        w.release(result);
        let messages = sent(&mut w);
        let release_held = ToNode::ReleaseHeld {
            ids: vec![object],
            actors: vec![actor],
        };
        assert!(
            messages.contains(&release_held)
                && !messages.contains(&ToNode::ReleaseActors(vec![actor])),
            "let go with the value: {messages:?}"
        );
        // An end that comes again (its task ended already) lets go of what it brought.
        receive(&mut w, &ended);
        assert!(
            sent(&mut w).contains(&release_held),
            "a second end's holds go at once"
        );
    }

    #[test]
    fn a_run_on_another_node_is_timed_by_this_host_s_clock() {
        let mut w = Worker::new(true, ME);
        receive(&mut w, &ToWorker::OwnTasks);
        w.set_now(5_000);
        w.submit(spec(1, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut w));
        let at = Some("127.0.0.3:4000".to_string());
        let direct = None;
        receive(
            &mut w,
            &ToWorker::Leased {
                key,
                worker: 9,
                at,
                direct,
            },
        );
        let _ = sent(&mut w);
        // Its end comes at 10 ms by this host's clock, written at the other host's 2 hours.
        w.set_now(10_000);
        let end = TaskEnd {
            task: TaskId::new(ME, 1),
            outcome: value_of(vec![1]),
            times: Some(RunTimes {
                args_us: 10,
                run_us: 100,
                store_us: 10,
                ago_us: 30,
            }),
            run: 0,
        };
        let ends = vec![end];
        receive(
            &mut w,
            &ToWorker::Returned {
                sent_us: 7_200_000_000,
                ends,
                lent: Vec::new(),
            },
        );
        let out = std::mem::take(w.transmit(|| 10_000));
        let started = (to_node(&out).into_iter())
            .flat_map(|m| match m {
                ToNode::Owned { events, .. } => events,
                _ => Vec::new(),
            })
            .find_map(|e| match e.phase {
                OwnedPhase::Ran { start_us, .. } => Some(start_us),
                _ => None,
            });
        assert_eq!(started, Some(10_000 - 150), "150 us before its end came");
    }

    #[test]
    fn a_pushed_worker_returns_ends_to_their_owners_and_hands_back_when_blocked() {
        let mut w = Worker::new(false, 9);
        receive(&mut w, &ToWorker::Push(vec![child(1), child(2)]));
        let run = w.next_task().unwrap();
        w.ended(Ended {
            task: run.task,
            outcome: value_of(vec![1]),
            timing: None,
        });
        let messages = sent(&mut w);
        assert!(
            !messages.iter().any(|m| matches!(m, ToNode::Done { .. })),
            "nothing for the node: {messages:?}"
        );
        assert_eq!(forwarded(&messages, ME), vec![returned(run.task, vec![1])]);
        // The next blocks before the queued one runs: it goes back to its owner.
        let _ = w.next_task().unwrap();
        receive(&mut w, &ToWorker::Push(vec![child(3)]));
        w.block(IdSet::default());
        let messages = sent(&mut w);
        assert_eq!(
            forwarded(&messages, ME),
            vec![ToWorker::Handback(vec![TaskId::new(ME, 3)])]
        );
    }
}
