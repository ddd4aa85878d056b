//! A worker's side of its link to its node, without IO: the tasks it was sent and not run yet,
//! the values it asked for, the references it holds, whether its running task is blocked in
//! `get` (and what it waits for), and the frames it owes the node. The worker process
//! (`worker/`) reads and writes the socket, maps segments, reads the clock and runs functions;
//! the simulator's workers run this same code.

use std::collections::VecDeque;
use std::sync::Arc;

use prism_graph::{
    ActorId, Amount, IdMap, IdSet, ObjectId, PlacementStrategy, Resources, TaskError, TaskId,
    TaskKind, TaskSpec,
};
use prism_transport::{
    ActorConfig, Answer, ArchivedObjectValue, ArchivedToWorker, ArchivedValue, Execute, Hello,
    MAX_AWAITING, Outcome, RunTimes, TaskEnd, ToNode, ToWorker, Value, encode_frame,
};

use crate::proto::node::DRIVER_OWNER;
use crate::proto::nodes::node_of;
use crate::proto::owner::{Known, Slot};
use crate::store::ObjectBytes;

mod direct;
pub(crate) mod foreign;
mod loans;
mod owned;
mod pulls;

pub(crate) use direct::{DirectTo, Refused as DirectRefused};

/// Why a worker stops taking messages.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The node let it go.
    Shutdown,
    /// The link broke or carried something it cannot read (why).
    Lost(String),
}

/// A task that ended, and how its time went (none for one cancelled before it ran).
#[derive(Debug)]
pub(crate) struct Ended {
    /// The task.
    pub(crate) task: TaskId,
    /// Its values or its error.
    pub(crate) outcome: Outcome,
    /// When its run's phases ended.
    pub(crate) timing: Option<Timing>,
}

/// When a task's run began, finished resolving its arguments, returned, and had its results
/// stored, in microseconds of the host's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) start: u64,
    pub(crate) fetched: u64,
    pub(crate) ran: u64,
    pub(crate) end: u64,
}

impl Timing {
    /// The wire form, for a message written at `sent`.
    fn wire(self, sent: u64) -> RunTimes {
        RunTimes {
            args_us: self.fetched.saturating_sub(self.start),
            run_us: self.ran.saturating_sub(self.fetched),
            store_us: self.end.saturating_sub(self.ran),
            ago_us: sent.saturating_sub(self.end),
        }
    }
}

/// What a blocked task's wait turned up.
#[derive(Debug)]
pub(crate) enum Wake {
    /// Enough values are known.
    Done,
    /// A task it waits for, to run on top of it.
    Run(Execute),
    /// Neither yet: the shell waits for the next message.
    Wait,
}

/// What the return values of a running task hold, held until its end is queued.
#[derive(Debug, Default)]
struct Returning {
    objects: Vec<ObjectId>,
    actors: Vec<ActorId>,
}

/// The worker's books (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Worker {
    /// Encoded frames for the node, not written yet.
    out: Vec<u8>,
    queue: VecDeque<Execute>,
    done: Vec<Ended>,
    /// Whether the node keeps task events (else run times are not sent).
    timed: bool,
    /// Values of objects this worker asked for.
    cache: IdMap<ObjectId, Slot>,
    requested: IdSet<ObjectId>,
    /// This worker's references to objects it created (submits, puts): count and function.
    refs: IdMap<ObjectId, (u32, Arc<str>)>,
    released: Vec<ObjectId>,
    /// References and actor handles inside the return values of tasks running here, held
    /// from their encoding until each task's end is queued: the value holding them is
    /// dropped first, and a release sent ahead of the end (the pump may send at any time)
    /// would let the node free an object, or stop an actor, that the end's value refers to.
    returning: IdMap<TaskId, Returning>,
    /// Handles to actors this worker holds, counted (the node learns of the first and the
    /// last).
    actors: IdMap<ActorId, u32>,
    released_actors: Vec<ActorId>,
    /// Releases of what ended tasks' values held, sent only after those ends: another
    /// hold's early flush of [`Worker::released`] must not take them ahead of the ends.
    released_at_end: Vec<ObjectId>,
    /// The same for actor handles.
    released_actors_at_end: Vec<ActorId>,
    /// The innermost running task waits in `get`.
    blocked: bool,
    /// How many tasks run on top of the one the worker was sent (each waited for by the one
    /// below it, which is blocked).
    depth: u32,
    /// While blocked: the tasks whose results the innermost task waits for.
    awaiting: IdSet<TaskId>,
    /// A task the node sent to run on top of the blocked one ([`ToWorker::Nested`]).
    ///
    /// [`ToWorker::Nested`]: prism_transport::ToWorker::Nested
    nested: Option<Execute>,
    /// Objects whose values arrived while blocked, for the wait's [`Tally`].
    arrived: Vec<ObjectId>,
    /// Streaming generators sent here to run: how many of their items the consumer took.
    streams: IdMap<TaskId, u32>,
    /// Tasks other workers own, pushed here to run, and which of their runs each is
    /// ([`Execute::run`]): their ends go to their owners, naming the run.
    pushed: IdMap<TaskId, u32>,
    /// The host's clock as the shell last read it, before each message (for how fast owned
    /// tasks end, and the times of their changes).
    now_us: u64,
    /// The tasks this worker owns.
    owned: owned::Owned,
    /// Objects it lent other workers, and those they lent it.
    loans: loans::Loans,
    /// Pushed tasks waiting for their arguments to be pulled from their owners' nodes.
    arg_pulls: pulls::ArgPulls,
    /// Frames on direct links, and the lease that lets pushes come that way.
    direct: direct::Direct,
    /// The tasks running here, the innermost (or, for an actor running calls at once, the
    /// latest) last: a task submitted now is its child. With the CPUs each holds.
    running: Vec<(TaskId, Amount)>,
    /// The CPUs the actor living here holds ([`Execute::cpu`] of its creation): what one of
    /// its calls holds while it runs, as its driver counts it.
    actor_cpu: Amount,
    /// The actor this worker hosts, once its creation ran here.
    hosted: Option<ActorId>,
}

impl Worker {
    /// A worker's books; `timed`: whether to send run times; `me`: its owner number.
    pub(crate) fn new(timed: bool, me: u64) -> Worker {
        Worker {
            out: Vec::new(),
            queue: VecDeque::new(),
            done: Vec::new(),
            timed,
            cache: IdMap::default(),
            requested: IdSet::default(),
            refs: IdMap::default(),
            released: Vec::new(),
            returning: IdMap::default(),
            actors: IdMap::default(),
            released_actors: Vec::new(),
            released_at_end: Vec::new(),
            released_actors_at_end: Vec::new(),
            blocked: false,
            depth: 0,
            awaiting: IdSet::default(),
            nested: None,
            arrived: Vec::new(),
            streams: IdMap::default(),
            pushed: IdMap::default(),
            now_us: 0,
            owned: owned::Owned::new(me),
            loans: loans::Loans::default(),
            arg_pulls: pulls::ArgPulls::default(),
            direct: direct::Direct::default(),
            running: Vec::new(),
            actor_cpu: Amount::ZERO,
            hosted: None,
        }
    }

    /// Whether the node keeps task events (then the shell tells the time with
    /// [`Worker::set_now`] before each step, not only before each message).
    pub(crate) fn timed(&self) -> bool {
        self.timed
    }

    /// The host's clock now, in microseconds.
    pub(crate) fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
    }

    /// The first frame: who this worker is.
    pub(crate) fn hello(&mut self, hello: Hello) {
        self.send(&ToNode::Hello(hello));
    }

    fn send(&mut self, msg: &ToNode) {
        if self.goes_on_driver_link(crate::proto::driver_link::lane_of(msg)) {
            let mut frame = Vec::new();
            match encode_frame(msg, &mut frame) {
                Ok(()) => self.send_direct(DirectTo::Owner(DRIVER_OWNER), frame),
                Err(e) => tracing::error!("cannot encode a message for the driver: {e}"),
            }
            return;
        }
        if let Err(e) = encode_frame(msg, &mut self.out) {
            tracing::error!("cannot encode a message for the node: {e}");
        }
    }

    /// A task this process submits (with the error it already failed with, if any).
    pub(crate) fn submit(&mut self, spec: TaskSpec, failed: Option<TaskError>) {
        let name: Arc<str> = Arc::from(spec.function.as_str());
        for id in spec.return_ids() {
            self.refs.insert(id, (1, name.clone()));
        }
        if failed.is_none() && self.try_own(&spec) {
            return self.own(spec);
        }
        self.send(&ToNode::Submit { spec, failed });
    }

    /// An object this process put, stored as `stored`, holding references to `nested` and
    /// handles to `actors`.
    pub(crate) fn put(
        &mut self,
        id: ObjectId,
        stored: ObjectBytes,
        nested: Vec<ObjectId>,
        actors: Vec<ActorId>,
    ) {
        self.refs.insert(id, (1, Arc::from("put")));
        self.send(&ToNode::Put {
            id,
            value: stored.to_wire(id),
            nested,
            actors,
        });
        self.cache.insert(id, Slot::Ready(stored));
    }

    /// A reference read from a value (an argument, an object): counted locally; the node
    /// learns of this worker's hold once.
    pub(crate) fn borrow(&mut self, id: ObjectId) {
        let owned = self.owns(id);
        match self.refs.get_mut(&id) {
            Some((count, _)) => *count += 1,
            None if owned => {
                // Owned here: the node does not know it.
                self.refs.insert(id, (1, Arc::from("owned")));
            }
            None => {
                self.refs.insert(id, (1, Arc::from("borrowed")));
                // A release of the same object not sent yet goes first, or the node would
                // take it for the end of this new hold; one waiting for an end is taken back.
                self.send_releases();
                if !self.take_back_release(id) {
                    self.send(&ToNode::Hold(vec![id]));
                }
            }
        }
    }

    /// Takes back a release of `id` not sent yet, if there is one: the node still counts
    /// this worker's hold, which goes on (a new hold sent after that release would be taken
    /// for its end).
    pub(super) fn take_back_release(&mut self, id: ObjectId) -> bool {
        take_back([&mut self.released_at_end, &mut self.released], id)
    }

    /// [`Worker::take_back_release`] for a handle to `actor`.
    pub(super) fn take_back_actor_release(&mut self, actor: ActorId) -> bool {
        take_back(
            [&mut self.released_actors_at_end, &mut self.released_actors],
            actor,
        )
    }

    /// Sends the releases of objects and actor handles not sent yet, ahead of a message
    /// that counts a new hold.
    fn send_releases(&mut self) {
        if !self.released.is_empty() {
            let released = std::mem::take(&mut self.released);
            self.send(&ToNode::Release(released));
        }
        if !self.released_actors.is_empty() {
            let released = std::mem::take(&mut self.released_actors);
            self.send(&ToNode::ReleaseActors(released));
        }
    }

    /// Creates an actor from its creation task `spec`, answered in a fresh object `answer`
    /// when it is named (the node may find the name taken, or an actor to reuse). An
    /// unnamed actor's id is known now, and this worker holds its handle.
    pub(crate) fn create_actor(
        &mut self,
        spec: TaskSpec,
        failed: Option<TaskError>,
        config: ActorConfig,
        answer: Option<ObjectId>,
    ) -> ActorId {
        let actor = ActorId(spec.task_id);
        if let Some(answer) = answer {
            self.expect_answer(answer);
        }
        // The node owns the actor: what its arguments are or refer to goes to it first.
        let escaping = self.escaping(&spec);
        self.hand_over(&escaping);
        self.send_releases();
        let named = answer.is_some();
        self.send(&ToNode::CreateActor {
            spec,
            failed,
            config,
            answer,
        });
        if !named {
            self.adopt_actor(actor);
        }
        actor
    }

    /// Asks the node for the actor named `name` in `namespace` (the job's when `None`),
    /// answered in a fresh object `answer`.
    pub(crate) fn lookup_actor(
        &mut self,
        name: String,
        namespace: Option<String>,
        answer: ObjectId,
    ) {
        self.expect_answer(answer);
        self.send_releases();
        self.send(&ToNode::LookupActor {
            name,
            namespace,
            answer,
        });
    }

    /// A handle to `actor` the node counted for this worker already (it created or found
    /// the actor for it): counted here without telling the node.
    pub(crate) fn adopt_actor(&mut self, actor: ActorId) {
        *self.actors.entry(actor).or_insert(0) += 1;
    }

    /// Kills the actor's process.
    pub(crate) fn kill_actor(&mut self, actor: ActorId) {
        self.send(&ToNode::KillActor(actor));
    }

    /// Kills another job's actor (this job's alias for it) through the head, answered in a
    /// fresh object `answer`.
    pub(crate) fn kill_foreign(&mut self, actor: ActorId, answer: ObjectId) {
        self.send(&ToNode::KillForeign { actor, answer });
    }

    /// Makes a placement group, its number answered in a fresh object `answer`.
    pub(crate) fn create_group(
        &mut self,
        bundles: Vec<Resources>,
        strategy: PlacementStrategy,
        answer: ObjectId,
    ) {
        self.expect_answer(answer);
        self.send(&ToNode::CreateGroup {
            bundles,
            strategy,
            answer,
        });
    }

    /// Asks to hear in a fresh object `answer` once placement group `group` is reserved.
    pub(crate) fn group_ready(&mut self, group: u64, answer: ObjectId) {
        self.expect_answer(answer);
        self.send(&ToNode::GroupReady { group, answer });
    }

    /// Removes placement group `group`.
    pub(crate) fn remove_group(&mut self, group: u64) {
        self.send(&ToNode::RemoveGroup(group));
    }

    /// This worker holds object `answer`, which the node makes as its answer to a request:
    /// released like any other once read.
    fn expect_answer(&mut self, answer: ObjectId) {
        self.refs.insert(answer, (1, Arc::from("<answer>")));
    }

    /// A reference dropped; the node hears of the last one with the next frames.
    pub(crate) fn release(&mut self, id: ObjectId) {
        self.let_go(id, false);
    }

    /// A reference dropped (`at_end`: one an ended task's value held, whose release goes
    /// only after that end).
    fn let_go(&mut self, id: ObjectId, at_end: bool) {
        if let Some((count, _)) = self.refs.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                let owned = self.release_owned(id);
                self.refs.remove(&id);
                self.cache.remove(&id);
                self.requested.remove(&id);
                if !owned && !self.give_back(id) {
                    match at_end {
                        true => self.released_at_end.push(id),
                        false => self.released.push(id),
                    }
                    // A value this worker's task made and handed to the node: what it
                    // refers to was held here while it was kept.
                    self.drop_made(id);
                }
            }
        }
    }

    /// A handle to `actor` made here (read from a value, or cloned): counted locally; the
    /// node learns of this worker's hold once, before the task it came with ends.
    pub(crate) fn actor_borrow(&mut self, actor: ActorId) {
        let count = self.actors.entry(actor).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.send_releases();
            if !self.take_back_actor_release(actor) {
                self.send(&ToNode::HoldActors(vec![actor]));
            }
        }
    }

    /// A handle to `actor` dropped; the node hears of the last one with the next frames.
    pub(crate) fn actor_release(&mut self, actor: ActorId) {
        self.actor_let_go(actor, false);
    }

    /// A handle to `actor` dropped (`at_end`: as in [`Worker::let_go`]).
    fn actor_let_go(&mut self, actor: ActorId, at_end: bool) {
        if let Some(count) = self.actors.get_mut(&actor) {
            *count -= 1;
            if *count == 0 {
                self.actors.remove(&actor);
                match at_end {
                    true => self.released_actors_at_end.push(actor),
                    false => self.released_actors.push(actor),
                }
            }
        }
    }

    /// The function that makes `id`, for a reference this process holds.
    pub(crate) fn function_of(&self, id: ObjectId) -> Option<Arc<str>> {
        self.refs.get(&id).map(|(_, f)| f.clone())
    }

    /// Asks the node to cancel the task making `id`.
    pub(crate) fn cancel(&mut self, id: ObjectId, force: bool) {
        if self.owns(id) && self.cancel_owned(id.task, force) {
            return;
        }
        self.send(&ToNode::Cancel { id, force });
    }

    /// A task ended here: reported with the next frames.
    pub(crate) fn ended(&mut self, ended: Ended) {
        if !self.streams.is_empty() {
            self.streams.remove(&ended.task);
        }
        let task = ended.task;
        self.stopped(task);
        self.done.push(ended);
        self.release_returned(task);
    }

    /// Running task `task` encoded a return value holding references to `objects` and
    /// handles to `actors`: held until its end is queued (see `Worker::returning`).
    pub(crate) fn hold_returned(&mut self, task: TaskId, objects: &[ObjectId], actors: &[ActorId]) {
        for &id in objects {
            self.borrow(id);
        }
        if let Some(owner) = self.lends_to(task) {
            self.lend(task, owner, objects);
        }
        for &actor in actors {
            self.actor_borrow(actor);
        }
        let held = self.returning.entry(task).or_default();
        held.objects.extend_from_slice(objects);
        held.actors.extend_from_slice(actors);
    }

    /// Task `task`'s end is queued: the references and handles its values hold are let go
    /// here.
    fn release_returned(&mut self, task: TaskId) {
        if self.returning.is_empty() {
            return;
        }
        let held = self.returning.remove(&task).unwrap_or_default();
        for id in held.objects {
            self.let_go(id, true);
        }
        for actor in held.actors {
            self.actor_let_go(actor, true);
        }
    }

    /// Generator `task` running here made item `index` (stored as `value`, referring to
    /// `nested` and holding handles to `actors`): sent at once, so the consumer has it while
    /// the generator goes on.
    pub(crate) fn yielded(
        &mut self,
        task: TaskId,
        index: u32,
        value: Value,
        nested: Vec<ObjectId>,
        actors: Vec<ActorId>,
    ) {
        self.send(&ToNode::Yield {
            task,
            index,
            value,
            nested,
            actors,
        });
    }

    /// Whether generator `task`, having made item `index`, must wait before it makes the
    /// next: `window` of its items are not taken yet.
    pub(crate) fn stream_paused(&self, task: TaskId, index: u32, window: u32) -> bool {
        let consumed = self.streams.get(&task).copied().unwrap_or(u32::MAX);
        window > 0 && index >= consumed.saturating_add(window)
    }

    /// This process takes item `index` of its stream of generator `task` (made by
    /// `function`): it holds the item's reference now, as the node counts it.
    pub(crate) fn stream_next(&mut self, task: TaskId, index: u32, function: Arc<str>) {
        let id = ObjectId::new(task, index);
        match self.refs.get_mut(&id) {
            Some((count, _)) => *count += 1,
            None => {
                self.refs.insert(id, (1, function));
            }
        }
        self.send(&ToNode::StreamNext { task, index });
    }

    /// Whether the node or this worker's own tasks wait on this worker while its running
    /// task works on: frames not written yet, or owned tasks under way (their grants and
    /// ends must be read as they come).
    pub(crate) fn under_way(&self) -> bool {
        !self.out.is_empty() || self.owned.under_way()
    }

    /// Whether this worker still owes work: a task runs or waits here, or tasks it owns are
    /// under way (their ends come to it). One that does not may exit when its node asks.
    fn owes_work(&self) -> bool {
        !self.running.is_empty()
            || !self.queue.is_empty()
            || self.arg_pulls.holds_any()
            || self.owned.under_way()
            || self.loans.lends()
    }

    /// Whether ended tasks wait to be reported.
    pub(crate) fn has_ended(&self) -> bool {
        !self.done.is_empty()
    }

    /// The next task sent to run here, if any.
    pub(crate) fn next_task(&mut self) -> Option<Execute> {
        let next = self.queue.pop_front();
        if let Some(exec) = &next {
            self.runs(exec);
        }
        next
    }

    /// `exec` starts running here, holding its CPUs: a call of the actor living here holds
    /// the actor's (named by the actor's creation).
    fn runs(&mut self, exec: &Execute) {
        let cpu = match exec.kind {
            TaskKind::ActorCreation { actor, .. } => {
                self.actor_cpu = exec.cpu;
                self.hosted = Some(actor);
                exec.cpu
            }
            TaskKind::ActorCall(_) => self.actor_cpu,
            TaskKind::Normal => exec.cpu,
        };
        self.running.push((exec.task, cpu));
    }

    /// The actor this worker hosts, once its creation ran here.
    pub(crate) fn hosted_actor(&self) -> Option<ActorId> {
        self.hosted
    }

    /// Task `task` stopped running here.
    fn stopped(&mut self, task: TaskId) {
        if let Some(at) = self.running.iter().rposition(|&(t, _)| t == task) {
            self.running.remove(at);
        }
    }

    /// The task running here that what is submitted now comes from, if one runs.
    pub(super) fn running_task(&self) -> Option<TaskId> {
        self.running.last().map(|&(task, _)| task)
    }

    /// Asks the node for the values of `ids` not known or asked for yet.
    pub(crate) fn request(&mut self, ids: &[ObjectId]) {
        let mut missing: Vec<ObjectId> = Vec::new();
        for &id in ids {
            if self.cache.contains_key(&id) {
                continue;
            }
            if self.owns(id) {
                // Known here once its task ends (asked of the node if the task goes there), or
                // once pulled here if the task left it on another node.
                self.owned.want(id);
                self.pull_left(id);
            } else if self.ask_lender(id) {
                // Asked of its owner, another worker.
            } else if self.requested.insert(id) {
                missing.push(id);
            }
        }
        if !missing.is_empty() {
            self.send(&ToNode::Get { ids: missing });
        }
    }

    /// Records in `known` the values of `ids` that are known.
    pub(crate) fn learn<K: Known + ?Sized>(&self, ids: &[ObjectId], known: &mut K) {
        for (i, id) in ids.iter().enumerate() {
            if let Some(slot) = self.cache.get(id) {
                known.learn(i, slot);
            }
        }
    }

    /// Whether `need` of `ids` are known. When all are needed, `cursor` (the first not known
    /// yet) only moves forward, so a wait checks each id once however many frames it takes.
    pub(crate) fn enough(&self, ids: &[ObjectId], need: usize, cursor: &mut usize) -> bool {
        if need >= ids.len() {
            while ids
                .get(*cursor)
                .is_some_and(|id| self.cache.contains_key(id))
            {
                *cursor += 1;
            }
            return *cursor >= ids.len();
        }
        ids.iter().filter(|id| self.cache.contains_key(id)).count() >= need
    }

    /// Puts what this worker owes the node into its frames (`clock` gives the time of
    /// sending, read only when run times go out) and hands them out to write.
    pub(crate) fn transmit(&mut self, clock: impl FnOnce() -> u64) -> &mut Vec<u8> {
        // The clock is read at most once, and only when times go out.
        let mut clock = Some(clock);
        let mut now = 0;
        let mut stamp = move || {
            if let Some(clock) = clock.take() {
                now = clock();
            }
            now
        };
        self.push_calls();
        self.expire_held();
        self.send_loan_words();
        if !self.pushed.is_empty() && !self.done.is_empty() {
            let sent_us = if self.timed { stamp() } else { 0 };
            self.return_pushed(sent_us);
        }
        if self.owned.has_events() {
            let now_us = stamp();
            self.send_owned_events(now_us);
        }
        if !self.done.is_empty() {
            let done = std::mem::take(&mut self.done);
            let timed = self.timed && done.iter().any(|e| e.timing.is_some());
            let sent_us = if timed { stamp() } else { 0 };
            let ended = done
                .into_iter()
                .map(|e| TaskEnd {
                    task: e.task,
                    outcome: e.outcome,
                    times: e.timing.filter(|_| timed).map(|t| t.wire(sent_us)),
                    run: 0,
                })
                .collect();
            self.send(&ToNode::Done { sent_us, ended });
        }
        // The ends are out (above, or in `return_pushed`): what their values held may go.
        self.released.append(&mut self.released_at_end);
        (self.released_actors).append(&mut self.released_actors_at_end);
        self.send_releases();
        &mut self.out
    }

    /// Whether owner `owner` is on another node than this worker.
    fn elsewhere(&self, owner: u64) -> bool {
        node_of(owner) != node_of(self.owned.me())
    }

    /// Sends the ends of tasks pushed here to their owners, with run times stamped at
    /// `sent_us` (0: none).
    fn return_pushed(&mut self, sent_us: u64) {
        let mut ends = Vec::new();
        let mut failed = Vec::new();
        let pushed = &mut self.pushed;
        self.done.retain_mut(|e| {
            let Some(run) = pushed.remove(&e.task) else {
                return true;
            };
            let outcome = Outcome::Failed(TaskError::Cancelled {
                task: e.task,
                function: String::new(),
            });
            if matches!(e.outcome, Outcome::Failed(_)) {
                failed.push(e.task);
            }
            ends.push(TaskEnd {
                task: e.task,
                outcome: std::mem::replace(&mut e.outcome, outcome),
                times: e.timing.filter(|_| sent_us > 0).map(|t| t.wire(sent_us)),
                run,
            });
            false
        });
        // What this worker lent in values that did not go (a later one failed): the loans end.
        for task in failed {
            self.unlend(task);
        }
        for (owner, ends) in by_owner(ends, |e| e.task) {
            // What their values hold stays alive for the owner: lent it by this worker
            // (objects of its own, on the owner's node), or held for it by the node, before
            // the end leaves, and before this worker's own holds go (after the end).
            let (mut ids, mut actors, mut lent) = (Vec::new(), Vec::new(), Vec::new());
            for end in &ends {
                if let Outcome::Returned {
                    nested,
                    actors: handles,
                    ..
                } = &end.outcome
                {
                    let loans = self.lent_in(end.task);
                    ids.extend(loans.without(nested.iter().flatten().copied()));
                    lent.extend(loans.into_ids());
                    actors.extend(handles.iter().flatten());
                }
            }
            // Values an owner on another node pulls from this node's store: kept for it.
            if self.elsewhere(owner) {
                let kept: Vec<ObjectId> = (ends.iter())
                    .filter_map(|end| match &end.outcome {
                        Outcome::Returned { values, .. } => Some(values),
                        Outcome::Failed(_) => None,
                    })
                    .flatten()
                    .filter_map(|value| match value {
                        prism_transport::Value::Shared { id, .. } => Some(*id),
                        prism_transport::Value::Inline(_) => None,
                    })
                    .collect();
                if !kept.is_empty() {
                    self.send(&ToNode::KeptFor { ids: kept });
                }
            }
            // One hold per reference: the owner lets go of each value's own.
            if !ids.is_empty() || !actors.is_empty() {
                self.send(&ToNode::HoldFor {
                    holder: owner,
                    ids,
                    actors,
                });
            }
            let returned = ToWorker::Returned {
                sent_us,
                ends,
                lent,
            };
            self.forward(owner, None, &returned);
        }
    }

    /// Hands tasks pushed here back to their owners unrun.
    fn hand_back(&mut self, tasks: Vec<TaskId>) {
        for task in &tasks {
            self.pushed.remove(task);
        }
        for (owner, tasks) in by_owner(tasks, |t| *t) {
            self.forward(owner, None, &ToWorker::Handback(tasks));
        }
    }

    /// Handles one message from the node; `open` gives the bytes of a value the node sent
    /// (mapping a shared one).
    pub(crate) fn handle(
        &mut self,
        msg: &ArchivedToWorker,
        open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<(), Stop> {
        match msg {
            ArchivedToWorker::Execute(tasks) => {
                let mut bounced = Vec::new();
                for task in tasks.iter() {
                    // Sent before the node learned that the running task blocked: the node
                    // runs it elsewhere. (An actor's calls wait here for their turn.)
                    if (self.blocked || self.depth > 0)
                        && matches!(task.kind, prism_graph::ArchivedTaskKind::Normal)
                    {
                        bounced.push(task.task.to_native());
                        continue;
                    }
                    let exec = decode(task)?;
                    if let Some(run) = exec.stream {
                        self.streams.insert(exec.task, run.consumed);
                    }
                    self.queue.push_back(exec);
                }
                if !bounced.is_empty() {
                    self.send(&ToNode::Bounced(bounced));
                }
            }
            ArchivedToWorker::Push(tasks) => {
                let mut bounced = Vec::new();
                for task in tasks.iter() {
                    let id = task.task.to_native();
                    // A blocked worker runs nothing new; an actor's calls wait for their turn.
                    if (self.blocked || self.depth > 0)
                        && matches!(task.kind, prism_graph::ArchivedTaskKind::Normal)
                    {
                        bounced.push(id);
                        continue;
                    }
                    self.pushed.insert(id, task.run.to_native());
                    let exec = decode(task)?;
                    self.queue_pushed(exec);
                }
                if !bounced.is_empty() {
                    self.hand_back(bounced);
                }
            }
            ArchivedToWorker::OwnTasks => self.own_tasks(),
            ArchivedToWorker::Leased {
                key,
                worker,
                at,
                direct,
            } => {
                let at = at.as_ref().map(|a| a.to_string());
                let direct = direct.as_ref().map(|a| a.to_string());
                self.leased(key.to_native(), worker.to_native(), (at, direct));
            }
            ArchivedToWorker::Lent { owner } => {
                let owner = owner.as_ref().map(|o| o.to_native());
                self.lent(owner, open)?;
            }
            // The shell's (its direct endpoint), read before the books start.
            ArchivedToWorker::Endpoint { .. } => {}
            ArchivedToWorker::Switch { from } => self.driver_switched(from.as_str(), open)?,
            ArchivedToWorker::LeaseEnded { key, reason } => {
                self.lease_ended(key.to_native(), reason.as_str());
            }
            ArchivedToWorker::Spill { key, room, home } => {
                self.spill(key.to_native(), room.to_native(), home.to_native());
            }
            ArchivedToWorker::Returned {
                sent_us,
                ends,
                lent,
            } => {
                let lent: IdSet<ObjectId> = lent.iter().map(|id| id.to_native()).collect();
                self.returned(sent_us.to_native(), (true, &lent), ends.iter(), open)?;
            }
            ArchivedToWorker::Loans {
                from,
                ask,
                release,
                promote,
            } => {
                self.loans_word(
                    from.to_native(),
                    ask.iter().map(|id| id.to_native()),
                    release.iter().map(|e| (e.0.to_native(), e.1.to_native())),
                    promote.iter().map(|e| (e.0.to_native(), e.1.to_native())),
                );
            }
            ArchivedToWorker::WorkerGone { worker, reason } => {
                self.worker_gone(worker.to_native(), reason.as_str());
            }
            ArchivedToWorker::Fetched { id, error } => {
                let (id, error) = (id.to_native(), error.as_ref().map(|e| e.as_str()));
                // One pull serves every use of the object here.
                let argument = self.arg_fetched(id, error);
                let borrowed = self.borrowed_fetched(id, error, open);
                if !argument && !borrowed {
                    self.fetched(id, error, open);
                }
            }
            ArchivedToWorker::ActorAt {
                actor,
                class,
                max_task_retries,
                place,
                foreign,
            } => {
                let place =
                    rkyv::deserialize::<prism_transport::ActorPlace, rkyv::rancor::Error>(place)
                        .map_err(|e| Stop::Lost(format!("undecodable actor place: {e}")))?;
                let (actor, retries) = (actor.to_native(), max_task_retries.to_native());
                let foreign = foreign.as_ref().map(|a| ActorId(a.0.to_native()));
                self.actor_at(actor, class.to_string(), retries, place, foreign);
            }
            ArchivedToWorker::Handback(tasks) => {
                self.handed_back(tasks.iter().map(|t| t.to_native()));
            }
            ArchivedToWorker::Nested { exec, depth } => {
                let task = exec.task.to_native();
                let wanted = self.blocked
                    && self.nested.is_none()
                    && depth.to_native() == self.depth
                    && self.awaiting.contains(&task);
                if !wanted {
                    // It resumed (or waits for something else) meanwhile.
                    self.send(&ToNode::Bounced(vec![task]));
                    return Ok(());
                }
                let exec = decode(exec)?;
                if let Some(run) = exec.stream {
                    self.streams.insert(exec.task, run.consumed);
                }
                self.nested = Some(exec);
            }
            ArchivedToWorker::Objects(objects) => {
                for entry in objects.iter() {
                    let (id, value) = (entry.0.to_native(), &entry.1);
                    if !self.requested.remove(&id) {
                        continue; // released meanwhile
                    }
                    // Lent by a worker of another node: in that node's store.
                    if let ArchivedObjectValue::Ready(ArchivedValue::Shared { len, .. }) = value
                        && self.pull_borrowed(id, len.to_native())
                    {
                        continue;
                    }
                    let slot = match value {
                        ArchivedObjectValue::Ready(value) => match open(value) {
                            Ok(bytes) => Slot::Ready(bytes),
                            Err(e) => Slot::Failed(TaskError::InvalidValue {
                                task: id.task,
                                function: String::from("<get>"),
                                what: format!("object {id}"),
                                reason: format!("cannot map its shared-memory segment: {e}"),
                            }),
                        },
                        ArchivedObjectValue::Failed(e) => {
                            match rkyv::deserialize::<TaskError, rkyv::rancor::Error>(e) {
                                Ok(e) => Slot::Failed(e),
                                Err(e) => {
                                    return Err(Stop::Lost(format!("undecodable error: {e}")));
                                }
                            }
                        }
                    };
                    self.cache.insert(id, slot);
                    if self.blocked {
                        self.arrived.push(id);
                    }
                    self.known(id);
                }
            }
            ArchivedToWorker::CancelHanded { task, force } => {
                let task = task.to_native();
                if self.owned.handed(task) {
                    self.cancel_owned(task, *force);
                }
            }
            ArchivedToWorker::Cancel { task } => {
                let task = task.to_native();
                let queued = self.queue.iter().position(|t| t.task == task);
                if let Some(exec) = queued
                    .and_then(|pos| self.queue.remove(pos))
                    .or_else(|| self.take_held(task))
                {
                    let cancelled = TaskError::Cancelled {
                        task,
                        function: exec.function,
                    };
                    self.done.push(Ended {
                        task,
                        outcome: Outcome::Failed(cancelled),
                        timing: None,
                    });
                }
            }
            ArchivedToWorker::Recall { tasks } => {
                let mut returned = Vec::new();
                for task in tasks.iter() {
                    let task = task.to_native();
                    if let Some(pos) = self.queue.iter().position(|t| t.task == task) {
                        self.queue.remove(pos);
                        returned.push(task);
                    }
                }
                if !returned.is_empty() {
                    self.send(&ToNode::Bounced(returned));
                }
            }
            ArchivedToWorker::StreamAck { task, consumed } => {
                if let Some(known) = self.streams.get_mut(&task.to_native()) {
                    *known = (*known).max(consumed.to_native());
                }
            }
            ArchivedToWorker::Shutdown => return Err(Stop::Shutdown),
            ArchivedToWorker::ExitIfIdle => {
                if !self.owes_work() {
                    return Err(Stop::Shutdown);
                }
                self.send(&ToNode::Owes);
            }
            ArchivedToWorker::Welcome => {}
        }
        Ok(())
    }

    /// The tasks making those of `ids` not known yet (as many as the node takes), when the
    /// worker may still run tasks on top of the blocked one (below `max_depth`).
    pub(crate) fn missing_tasks(&self, ids: &[ObjectId], max_depth: u32) -> IdSet<TaskId> {
        if self.depth >= max_depth {
            return IdSet::default();
        }
        let mut awaiting: IdSet<TaskId> = ids
            .iter()
            // Neither this worker's own tasks nor those making objects lent to it (their
            // owners, other workers, run them): the node can run none of them here.
            .filter(|id| {
                !self.cache.contains_key(id) && !self.owns(**id) && !self.loans.borrows(**id)
            })
            .map(|id| id.task)
            .take(MAX_AWAITING)
            .collect();
        // Owned tasks waiting for a lease: the asks' keys, which the node may grant to this
        // worker itself.
        awaiting.extend(self.awaited_asks(ids));
        awaiting
    }

    /// The innermost running task blocks in `get`, waiting for `awaiting`: the node gets its
    /// CPU back and the tasks queued here that it can run elsewhere.
    pub(crate) fn block(&mut self, awaiting: IdSet<TaskId>) {
        let mut returned = Vec::new();
        if self.depth == 0 {
            // An actor's calls stay: they run here, in order, after this one.
            self.queue.retain(|t| {
                let normal = t.kind == TaskKind::Normal;
                if normal {
                    returned.push(t.task);
                }
                !normal
            });
        }
        if !self.pushed.is_empty() {
            // Those waiting for their arguments go back too.
            returned.extend(self.take_held_for_args());
            let (pushed, node): (Vec<TaskId>, Vec<TaskId>) = returned
                .into_iter()
                .partition(|t| self.pushed.contains_key(t));
            returned = node;
            if !pushed.is_empty() {
                self.hand_back(pushed);
            }
        }
        self.blocked = true;
        self.send(&ToNode::Blocked {
            depth: self.depth,
            returned,
            awaiting: awaiting.iter().copied().collect(),
            cpu: self.running.last().map_or(Amount::ZERO, |&(_, cpu)| cpu),
        });
        self.awaiting = awaiting;
    }

    /// Where a blocked wait for `need` of `ids` stands, `tally` carrying its count between
    /// messages.
    pub(crate) fn wake(&mut self, ids: &[ObjectId], need: usize, tally: &mut Tally) -> Wake {
        if tally.enough(self, ids, need) {
            return Wake::Done;
        }
        match self.nested.take() {
            Some(exec) => Wake::Run(exec),
            None => match self.next_here() {
                Some(exec) => Wake::Run(exec),
                None => Wake::Wait,
            },
        }
    }

    /// A task the blocked one waits for starts on top of it: what the blocked one awaited,
    /// to hand back to [`Worker::nested_ended`].
    pub(crate) fn nest(&mut self, exec: &Execute) -> IdSet<TaskId> {
        self.runs(exec);
        self.blocked = false;
        self.depth += 1;
        std::mem::take(&mut self.awaiting)
    }

    /// The task run on top of the blocked one ended (`ended`); the blocked one waits on for
    /// `awaiting`, with a fresh count of what it has.
    pub(crate) fn nested_ended(
        &mut self,
        ended: Ended,
        awaiting: IdSet<TaskId>,
        open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) {
        self.depth -= 1;
        self.blocked = true;
        self.awaiting = awaiting;
        // What arrived meanwhile went to the nested task's waits.
        self.arrived.clear();
        let task = ended.task;
        self.stopped(task);
        if self.owns_task(task) {
            self.ended_here(ended, open);
        } else {
            self.done.push(ended);
        }
        self.release_returned(task);
    }

    /// The innermost task resumes.
    pub(crate) fn unblock(&mut self) {
        self.blocked = false;
        self.awaiting.clear();
        self.arrived.clear();
        if let Some(exec) = self.nested.take() {
            self.send(&ToNode::Bounced(vec![exec.task]));
        }
        self.end_here();
        self.send(&ToNode::Unblocked { depth: self.depth });
    }
}

/// `items` grouped by the owner of the task each is about (its id's owner number), in the
/// order the owners first appear.
fn by_owner<T>(items: Vec<T>, task: impl Fn(&T) -> TaskId) -> Vec<(u64, Vec<T>)> {
    let mut groups: Vec<(u64, Vec<T>)> = Vec::new();
    for item in items {
        let owner = task(&item).owner;
        match groups.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, group)) => group.push(item),
            None => groups.push((owner, vec![item])),
        }
    }
    groups
}

/// The node's answer to a request, from the value of its answer object.
pub(crate) fn answer_of(slot: &Slot) -> Result<Answer, String> {
    match slot {
        Slot::Ready(bytes) => rkyv::from_bytes::<Answer, rkyv::rancor::Error>(bytes.as_slice())
            .map_err(|e| format!("the node's answer is undecodable: {e}")),
        Slot::Failed(e) => Err(e.to_string()),
        _ => Err("the node did not answer".into()),
    }
}

fn decode(task: &prism_transport::ArchivedExecute) -> Result<Execute, Stop> {
    rkyv::deserialize::<Execute, rkyv::rancor::Error>(task)
        .map_err(|e| Stop::Lost(format!("undecodable task: {e}")))
}

/// How far a blocked wait for `need` of its ids has come, kept between frames so that each
/// frame costs only what it delivered, not a recount of every id.
#[derive(Debug)]
pub(crate) enum Tally {
    /// Every id is needed: the first not known yet.
    All(usize),
    /// Some are: how many positions are known, and each unknown id with its positions' count.
    Some {
        count: usize,
        unknown: IdMap<ObjectId, usize>,
    },
}

impl Tally {
    /// A count of what `worker` knows of `ids` now.
    pub(crate) fn new(worker: &Worker, ids: &[ObjectId], need: usize) -> Self {
        if need >= ids.len() {
            return Tally::All(0);
        }
        let mut count = 0;
        let mut unknown: IdMap<ObjectId, usize> = IdMap::default();
        for id in ids {
            if worker.cache.contains_key(id) {
                count += 1;
            } else {
                *unknown.entry(*id).or_default() += 1;
            }
        }
        Tally::Some { count, unknown }
    }

    /// Whether `need` of `ids` are known, taking in what arrived since the last look.
    fn enough(&mut self, worker: &mut Worker, ids: &[ObjectId], need: usize) -> bool {
        match self {
            Tally::All(cursor) => {
                worker.arrived.clear();
                worker.enough(ids, need, cursor)
            }
            Tally::Some { count, unknown } => {
                for id in worker.arrived.drain(..) {
                    if let Some(positions) = unknown.remove(&id) {
                        *count += positions;
                    }
                }
                *count >= need
            }
        }
    }
}

/// Takes `item` out of the first of `lists` that holds it: whether one did.
fn take_back<T: PartialEq>(lists: [&mut Vec<T>; 2], item: T) -> bool {
    for list in lists {
        if let Some(at) = list.iter().position(|r| *r == item) {
            list.swap_remove(at);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    //! The worker's books stepped by hand: messages in, frames out, no process or socket.

    use prism_graph::{ActorId, TaskKind};
    use prism_transport::{FrameDecoder, ObjectValue, ToWorker, Value};

    use super::*;

    fn task(seq: u64) -> TaskId {
        TaskId::new(7, seq)
    }

    fn exec(seq: u64, kind: TaskKind) -> Execute {
        Execute {
            task: task(seq),
            function: format!("f{seq}"),
            fn_hash: 0,
            args: Vec::new(),
            num_returns: 1,
            kind,
            stream: None,
            cpu: Amount::ZERO,
            run: 0,
            pull_from: Vec::new(),
        }
    }

    fn normal(seq: u64) -> Execute {
        exec(seq, TaskKind::Normal)
    }

    /// Hands `msg` to the books as the node would send it, values given as inline bytes.
    pub(super) fn receive(worker: &mut Worker, msg: &ToWorker) -> Result<(), Stop> {
        receive_with(worker, msg, &mut |value| match value {
            ArchivedValue::Inline(bytes) => Ok(ObjectBytes::inline(bytes)),
            ArchivedValue::Shared { .. } => Err(std::io::Error::other("no such segment")),
        })
    }

    /// As [`receive`], with `open` mapping the values.
    pub(super) fn receive_with(
        worker: &mut Worker,
        msg: &ToWorker,
        open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<(), Stop> {
        let mut frame = Vec::new();
        encode_frame(msg, &mut frame).unwrap();
        let mut decoder = FrameDecoder::new(prism_transport::DEFAULT_MAX_FRAME);
        decoder.extend(&frame);
        let frame = decoder.next_frame().unwrap().unwrap();
        let msg = frame.access::<ToWorker>().unwrap();
        worker.handle(msg, open)
    }

    /// What the books would write now, decoded.
    pub(super) fn sent(worker: &mut Worker) -> Vec<ToNode> {
        let out = std::mem::take(worker.transmit(|| 1_000));
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&out);
        let mut messages = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            let msg = frame.access::<ToNode>().unwrap();
            messages.push(rkyv::deserialize::<ToNode, rkyv::rancor::Error>(msg).unwrap());
        }
        messages
    }

    fn ended(seq: u64, timing: Option<Timing>) -> Ended {
        Ended {
            task: task(seq),
            outcome: Outcome::Returned {
                values: vec![Value::Inline(vec![1])],
                nested: vec![Vec::new()],
                actors: Vec::new(),
            },
            timing,
        }
    }

    #[test]
    fn references_and_handles_inside_a_return_value_are_released_only_after_the_task_s_end() {
        let mut worker = Worker::new(false, 1);
        receive(&mut worker, &ToWorker::Execute(vec![normal(1)])).unwrap();
        let exec = worker.next_task().expect("the task");
        // The task read a reference (its node's object) and made an actor, returns both
        // inside its value, and the value goes before its end is stored.
        let theirs = ObjectId::new(task(7), 0);
        let actor = ActorId(task(8));
        worker.borrow(theirs);
        worker.adopt_actor(actor);
        worker.hold_returned(exec.task, &[theirs], &[actor]);
        worker.release(theirs);
        worker.actor_release(actor);
        let early = sent(&mut worker);
        assert!(
            !early
                .iter()
                .any(|m| matches!(m, ToNode::Release(_) | ToNode::ReleaseActors(_))),
            "the pump sends nothing that would free it or stop the actor: {early:?}"
        );
        worker.ended(ended(1, None));
        // Another call borrows a new reference before the end goes out: the releases that
        // wait for the end do not go out ahead of it with that hold.
        let other = ObjectId::new(task(9), 0);
        worker.borrow(other);
        let messages = sent(&mut worker);
        let at = |wanted: &dyn Fn(&ToNode) -> bool| messages.iter().position(wanted);
        let done = at(&|m| matches!(m, ToNode::Done { .. }));
        let release = at(&|m| *m == ToNode::Release(vec![theirs]));
        let handle = at(&|m| *m == ToNode::ReleaseActors(vec![actor]));
        assert!(
            done.is_some() && release > done && handle > done,
            "the end, then the releases: {messages:?}"
        );
        assert!(messages.contains(&ToNode::Hold(vec![other])));

        // Read again before its release went out, a reference keeps the hold the node counts.
        receive(&mut worker, &ToWorker::Execute(vec![normal(2)])).unwrap();
        let exec = worker.next_task().expect("the second task");
        worker.borrow(theirs);
        assert_eq!(sent(&mut worker), vec![ToNode::Hold(vec![theirs])]);
        worker.hold_returned(exec.task, &[theirs], &[]);
        worker.release(theirs);
        worker.ended(ended(2, None));
        worker.borrow(theirs);
        let messages = sent(&mut worker);
        assert!(
            !messages
                .iter()
                .any(|m| matches!(m, ToNode::Release(_) | ToNode::Hold(_))),
            "neither a release nor a new hold: {messages:?}"
        );
    }

    #[test]
    fn tasks_run_in_order_and_their_ends_go_out_with_their_times() {
        let mut worker = Worker::new(true, 1);
        receive(&mut worker, &ToWorker::Execute(vec![normal(1), normal(2)])).unwrap();
        assert_eq!(worker.next_task().map(|e| e.task), Some(task(1)));
        assert!(sent(&mut worker).is_empty(), "nothing owed yet");
        let timing = Timing {
            start: 100,
            fetched: 110,
            ran: 400,
            end: 420,
        };
        worker.ended(ended(1, Some(timing)));
        assert!(worker.has_ended());
        let messages = sent(&mut worker);
        let [
            ToNode::Done {
                sent_us,
                ended: ends,
            },
        ] = &messages[..]
        else {
            panic!("the end with its times: {messages:?}");
        };
        assert_eq!(*sent_us, 1_000);
        assert_eq!(ends[0].task, task(1));
        let times = ends[0].times.expect("timed");
        assert_eq!(
            (times.args_us, times.run_us, times.store_us, times.ago_us),
            (10, 290, 20, 580)
        );
        assert!(!worker.has_ended());
        assert_eq!(worker.next_task().map(|e| e.task), Some(task(2)));

        // Untimed books send no times, and read no clock.
        let mut untimed = Worker::new(false, 1);
        untimed.ended(ended(3, Some(timing)));
        let out = std::mem::take(untimed.transmit(|| panic!("the clock was read")));
        assert!(!out.is_empty());
        untimed.ended(ended(3, Some(timing)));
        assert!(matches!(
            &sent(&mut untimed)[..],
            [ToNode::Done { sent_us: 0, ended }] if ended[0].times.is_none()
        ));
    }

    #[test]
    fn a_cancelled_queued_task_ends_cancelled_and_a_recalled_one_goes_back() {
        let mut worker = Worker::new(false, 1);
        let batch = vec![normal(1), normal(2), normal(3)];
        receive(&mut worker, &ToWorker::Execute(batch)).unwrap();
        receive(&mut worker, &ToWorker::Cancel { task: task(2) }).unwrap();
        let recall = ToWorker::Recall {
            tasks: vec![task(3), task(9)],
        };
        receive(&mut worker, &recall).unwrap();
        let messages = sent(&mut worker);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(
            messages[0],
            ToNode::Bounced(vec![task(3)]),
            "only what it had"
        );
        let ToNode::Done { ended, .. } = &messages[1] else {
            panic!("the cancelled end: {messages:?}");
        };
        assert!(matches!(
            &ended[..],
            [TaskEnd { task: t, outcome: Outcome::Failed(TaskError::Cancelled { function, .. }), times: None, .. }]
                if *t == task(2) && function == "f2"
        ));
        assert_eq!(worker.next_task().map(|e| e.task), Some(task(1)));
        assert!(worker.next_task().is_none());
        assert!(matches!(
            receive(&mut worker, &ToWorker::Shutdown),
            Err(Stop::Shutdown)
        ));
    }

    #[test]
    fn a_blocked_task_names_the_cpus_it_holds_and_an_actor_s_call_the_actor_s() {
        let blocked_cpu = |worker: &mut Worker| {
            worker.block(IdSet::default());
            match &sent(worker)[..] {
                [ToNode::Blocked { cpu, .. }] => *cpu,
                other => panic!("blocked: {other:?}"),
            }
        };
        let two = Resources::cpus(2.0).unwrap().cpu;
        let mut worker = Worker::new(false, 1);
        let plain = Execute {
            cpu: two,
            ..normal(1)
        };
        receive(&mut worker, &ToWorker::Execute(vec![plain])).unwrap();
        worker.next_task().expect("the task");
        assert_eq!(blocked_cpu(&mut worker), two);
        // An actor's calls hold no CPU of their own: its driver counts the actor's.
        let mut worker = Worker::new(false, 2);
        let creation = TaskKind::ActorCreation {
            actor: ActorId(task(50)),
            max_concurrency: 1,
        };
        let create = Execute {
            cpu: two,
            ..exec(1, creation)
        };
        let call = exec(2, TaskKind::ActorCall(ActorId(task(50))));
        receive(&mut worker, &ToWorker::Execute(vec![create, call])).unwrap();
        let created = worker.next_task().expect("the creation");
        worker.ended(Ended {
            task: created.task,
            outcome: Outcome::Returned {
                values: Vec::new(),
                nested: Vec::new(),
                actors: Vec::new(),
            },
            timing: None,
        });
        let _ = sent(&mut worker);
        worker.next_task().expect("the call");
        assert_eq!(blocked_cpu(&mut worker), two);
    }

    #[test]
    fn a_blocked_worker_hands_back_plain_tasks_keeps_calls_and_runs_what_it_awaits() {
        let mut worker = Worker::new(false, 1);
        let call = exec(2, TaskKind::ActorCall(ActorId(task(50))));
        receive(&mut worker, &ToWorker::Execute(vec![normal(1), call])).unwrap();
        let wanted = ObjectId::new(task(10), 0);
        let ids = [wanted];
        worker.request(&ids);
        worker.request(&ids); // asked once
        let awaiting = worker.missing_tasks(&ids, 8);
        assert_eq!(awaiting.iter().copied().collect::<Vec<_>>(), vec![task(10)]);
        worker.block(awaiting);
        let messages = sent(&mut worker);
        assert_eq!(messages[0], ToNode::Get { ids: vec![wanted] });
        let ToNode::Blocked {
            depth: 0,
            returned,
            awaiting,
            ..
        } = &messages[1]
        else {
            panic!("blocked: {messages:?}");
        };
        assert_eq!((returned, awaiting), (&vec![task(1)], &vec![task(10)]));

        // New plain tasks bounce; a nested task it does not wait for bounces too.
        receive(&mut worker, &ToWorker::Execute(vec![normal(3)])).unwrap();
        let other = ToWorker::Nested {
            exec: normal(11),
            depth: 0,
        };
        receive(&mut worker, &other).unwrap();
        assert_eq!(
            sent(&mut worker),
            vec![
                ToNode::Bounced(vec![task(3)]),
                ToNode::Bounced(vec![task(11)])
            ]
        );

        // The task it waits for runs on top of it; then the value arrives.
        let mut tally = Tally::new(&worker, &ids, 1);
        assert!(matches!(worker.wake(&ids, 1, &mut tally), Wake::Wait));
        let awaited = ToWorker::Nested {
            exec: normal(10),
            depth: 0,
        };
        receive(&mut worker, &awaited).unwrap();
        let Wake::Run(nested) = worker.wake(&ids, 1, &mut tally) else {
            panic!("the awaited task runs here");
        };
        assert_eq!(nested.task, task(10));
        let awaiting = worker.nest(&nested);
        // Above the blocked task a plain task bounces still.
        receive(&mut worker, &ToWorker::Execute(vec![normal(4)])).unwrap();
        worker.nested_ended(ended(10, None), awaiting, &mut |_| {
            Err(std::io::Error::other("no segments here"))
        });
        let value = ObjectValue::Ready(Value::Inline(vec![5]));
        receive(&mut worker, &ToWorker::Objects(vec![(wanted, value)])).unwrap();
        let mut tally = Tally::new(&worker, &ids, 1);
        assert!(matches!(worker.wake(&ids, 1, &mut tally), Wake::Done));
        worker.unblock();
        let messages = sent(&mut worker);
        assert_eq!(messages[0], ToNode::Bounced(vec![task(4)]));
        assert!(matches!(&messages[1], ToNode::Unblocked { depth: 0 }));
        assert!(matches!(&messages[2], ToNode::Done { ended, .. } if ended[0].task == task(10)));
        // The actor's call stayed, to run after the blocked task.
        assert_eq!(worker.next_task().map(|e| e.task), Some(task(2)));
    }

    #[test]
    fn waits_count_what_arrives_and_a_value_that_cannot_be_mapped_is_an_error() {
        let mut worker = Worker::new(false, 1);
        let (a, b) = (ObjectId::new(task(1), 0), ObjectId::new(task(2), 0));
        let ids = [a, b, a];
        worker.request(&ids);
        worker.block(IdSet::default());
        let mut tally = Tally::new(&worker, &ids, 2);
        let shared = ObjectValue::Ready(Value::Shared { id: b, len: 64 });
        receive(&mut worker, &ToWorker::Objects(vec![(b, shared)])).unwrap();
        // One position of three known: not enough for two.
        assert!(matches!(worker.wake(&ids, 2, &mut tally), Wake::Wait));
        let failed = ObjectValue::Failed(TaskError::Cancelled {
            task: task(1),
            function: "f1".into(),
        });
        receive(&mut worker, &ToWorker::Objects(vec![(a, failed)])).unwrap();
        assert!(matches!(worker.wake(&ids, 2, &mut tally), Wake::Done));
        let mut known: Vec<Option<Slot>> = vec![None, None, None];
        worker.learn(&ids, known.as_mut_slice());
        assert!(matches!(
            known[0],
            Some(Slot::Failed(TaskError::Cancelled { .. }))
        ));
        assert!(matches!(
            &known[1],
            Some(Slot::Failed(TaskError::InvalidValue { reason, .. }))
                if reason.contains("no such segment")
        ));
        let mut cursor = 0;
        assert!(worker.enough(&ids, 3, &mut cursor));
    }

    #[test]
    fn actor_handles_are_held_from_the_first_and_released_with_the_last() {
        let mut worker = Worker::new(false, 1);
        let actor = ActorId(task(9));
        worker.actor_borrow(actor);
        worker.actor_borrow(actor);
        worker.actor_release(actor);
        assert_eq!(sent(&mut worker), vec![ToNode::HoldActors(vec![actor])]);
        worker.actor_release(actor);
        assert_eq!(sent(&mut worker), vec![ToNode::ReleaseActors(vec![actor])]);
        worker.actor_release(actor);
        assert!(sent(&mut worker).is_empty(), "a stray release says nothing");
    }

    #[test]
    fn references_are_counted_here_and_the_last_release_goes_out() {
        let mut worker = Worker::new(false, 1);
        let id = ObjectId::new(task(5), 0);
        worker.borrow(id);
        worker.borrow(id);
        assert_eq!(worker.function_of(id).as_deref(), Some("borrowed"));
        worker.release(id);
        assert_eq!(sent(&mut worker), vec![ToNode::Hold(vec![id])]);
        worker.release(id);
        assert_eq!(sent(&mut worker), vec![ToNode::Release(vec![id])]);
        assert!(worker.function_of(id).is_none());
        // A value asked for and released before it arrives is not kept.
        worker.borrow(id);
        worker.request(&[id]);
        worker.release(id);
        let value = ObjectValue::Ready(Value::Inline(vec![1]));
        receive(&mut worker, &ToWorker::Objects(vec![(id, value)])).unwrap();
        let mut cursor = 0;
        assert!(!worker.enough(&[id], 1, &mut cursor), "released meanwhile");
    }

    #[test]
    fn a_generator_pauses_at_its_window_until_the_node_says_items_were_taken() {
        let mut worker = Worker::new(false, 1);
        let run = prism_transport::StreamRun {
            window: 2,
            skip: 0,
            consumed: 1,
        };
        let generator = Execute {
            stream: Some(run),
            cpu: Amount::ZERO,
            ..normal(1)
        };
        receive(&mut worker, &ToWorker::Execute(vec![generator])).unwrap();
        let exec = worker.next_task().expect("the generator");
        worker.yielded(exec.task, 2, Value::Inline(vec![2]), Vec::new(), Vec::new());
        assert!(
            !worker.stream_paused(exec.task, 2, 2),
            "one taken, two made"
        );
        assert!(
            worker.stream_paused(exec.task, 3, 2),
            "one taken, three made"
        );
        let ack = ToWorker::StreamAck {
            task: exec.task,
            consumed: 2,
        };
        receive(&mut worker, &ack).unwrap();
        assert!(!worker.stream_paused(exec.task, 3, 2));
        assert!(
            matches!(
                sent(&mut worker).as_slice(),
                [ToNode::Yield { index: 2, .. }]
            ),
            "the item went out at once"
        );
        worker.ended(ended(1, None));
        assert!(worker.streams.is_empty(), "forgotten when it ends");

        // The consumer's side: taking an item holds it, and its release goes out.
        worker.stream_next(task(9), 1, Arc::from("g"));
        worker.release(ObjectId::new(task(9), 1));
        let messages = sent(&mut worker);
        assert!(matches!(
            messages.as_slice(),
            [ToNode::StreamNext { index: 1, .. }, ToNode::Done { .. }, ToNode::Release(ids)]
                if ids == &[ObjectId::new(task(9), 1)]
        ));
    }

    #[test]
    fn a_release_not_sent_yet_goes_before_a_new_hold_of_the_same_thing() {
        let mut worker = Worker::new(false, 1);
        let id = ObjectId::new(TaskId::new(1, 1), 0);
        let actor = ActorId(TaskId::new(1, 2));
        worker.borrow(id);
        worker.actor_borrow(actor);
        worker.release(id);
        worker.actor_release(actor);
        // Held again before the releases went out: the node must see them in this order,
        // or it would end the new holds.
        worker.borrow(id);
        worker.actor_borrow(actor);
        assert_eq!(
            sent(&mut worker),
            vec![
                ToNode::Hold(vec![id]),
                ToNode::HoldActors(vec![actor]),
                ToNode::Release(vec![id]),
                ToNode::ReleaseActors(vec![actor]),
                ToNode::Hold(vec![id]),
                ToNode::HoldActors(vec![actor]),
            ]
        );
    }

    #[test]
    fn actors_a_worker_makes_or_finds_are_counted_by_the_node_for_it() {
        let mut worker = Worker::new(false, 1);
        let config = |name: Option<&str>| ActorConfig {
            class: "tests::Counter".into(),
            name: name.map(str::to_string),
            namespace: None,
            get_if_exists: false,
            max_restarts: 0,
            max_task_retries: 0,
            detached: false,
        };
        let spec = |seq| TaskSpec {
            num_returns: 0,
            kind: TaskKind::ActorCreation {
                actor: ActorId(task(seq)),
                max_concurrency: 1,
            },
            ..TaskSpec::call(task(seq), "tests::Counter", Vec::new())
        };
        // Unnamed: its id is known now and the worker holds it without a separate hold.
        let actor = worker.create_actor(spec(1), None, config(None), None);
        assert_eq!(actor, ActorId(task(1)));
        let messages = sent(&mut worker);
        assert!(
            matches!(&messages[..], [ToNode::CreateActor { answer: None, .. }]),
            "{messages:?}"
        );
        worker.actor_release(actor);
        assert_eq!(sent(&mut worker), vec![ToNode::ReleaseActors(vec![actor])]);
        // Named: answered in an object the worker holds (and releases once read).
        let answer = ObjectId::new(task(3), 0);
        worker.create_actor(spec(2), None, config(Some("ps")), Some(answer));
        worker.lookup_actor("ps".into(), Some("other".into()), answer);
        assert!(worker.function_of(answer).is_some(), "the answer is held");
        worker.release(answer);
        let messages = sent(&mut worker);
        assert!(
            matches!(
                &messages[..],
                [
                    ToNode::CreateActor { answer: Some(a), .. },
                    ToNode::LookupActor { namespace: Some(n), .. },
                    ToNode::Release(released),
                ] if *a == answer && n == "other" && released == &vec![answer]
            ),
            "{messages:?}"
        );
    }
}
