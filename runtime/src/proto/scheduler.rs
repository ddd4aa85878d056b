//! The node's local scheduler as a sans-IO state machine: tasks whose inputs are ready come in,
//! worker leases and dispatches go out. A worker leased for one resource shape is reused for
//! further tasks of that shape and, once no new lease can be granted, receives tasks pipelined
//! up to a depth. A worker blocked in `get` gives its CPUs back and hands back what it had queued,
//! so nested tasks cannot deadlock a full node. Worker processes for tasks are capped; at the cap
//! a blocked worker runs the tasks it waits for itself, on top of the blocked one, when their
//! resources are free (see [`Scheduler::nest`]), so deep and recursive nesting needs no new
//! process per level.

use std::collections::VecDeque;

use prism_graph::{Amount, IdMap, IdSet, Resources, TaskId};

/// How far down a shape's queue pipelining looks past tasks that cannot go to any busy worker
/// (a lease ask whose owner holds those workers' leases, a task whose submitter is the only
/// one): enough that other owners' asks do not wait behind one, few enough to cost nothing.
const PIPELINE_LOOKAHEAD: usize = 8;

/// A worker's number on this node (also its owner number).
pub(crate) type WorkerId = u64;

/// What the scheduler asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send these tasks, in order, to the worker.
    Dispatch {
        worker: WorkerId,
        tasks: Vec<TaskId>,
    },
    /// Run this task on the worker, on top of its task blocked at `depth`, which waits for it.
    Nest {
        worker: WorkerId,
        task: TaskId,
        depth: u32,
    },
    /// Start one more worker process.
    StartWorker,
    /// Ask the node's daemon to grant these resources (a gated node, see
    /// [`Scheduler::gated`]); the answer comes to [`Scheduler::granted`] or
    /// [`Scheduler::refused`].
    Ask(Resources),
    /// Give these granted resources back to the node's daemon: they go unused.
    Return(Resources),
}

/// What a removed worker leaves behind.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Removed {
    /// The task it had started.
    pub(crate) started: Option<TaskId>,
    /// The tasks it ran on top of a blocked one.
    pub(crate) nested: Vec<TaskId>,
    /// The tasks queued on it, not started, which went back to the node's queue.
    pub(crate) requeued: Vec<TaskId>,
}

/// Where a task was found when asked to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Waiting in the node's queue (removed from it when found for a cancel).
    Queued,
    /// Sent to a worker; `started` when it is the task the worker runs now.
    OnWorker { worker: WorkerId, started: bool },
    /// Unknown to the scheduler.
    Absent,
}

/// What a submitted demand means for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Queued.
    Queued,
    /// Larger than the node's total: it waits (a node may grow later) and should be reported.
    Infeasible,
}

/// One task running on a worker: what it holds and whether it waits in `get`.
#[derive(Debug, Default)]
struct Frame {
    demand: Resources,
    blocked: bool,
    /// While blocked: the tasks whose results it waits for (which may run on top of it).
    awaiting: IdSet<TaskId>,
}

#[derive(Debug)]
enum WorkerState {
    Starting,
    Idle,
    Leased {
        /// The lease: its demand, and whether the running task of `inflight` is blocked.
        base: Frame,
        inflight: VecDeque<TaskId>,
        /// Held by an actor for its lifetime: never shared, never returned when idle.
        pinned: bool,
        /// Tasks run on top of the blocked base task, innermost last; each waited for by the
        /// one below it.
        nested: Vec<(TaskId, Frame)>,
    },
}

impl WorkerState {
    /// A leased worker whose innermost running task waits in `get`.
    fn blocked(&self) -> bool {
        match self {
            WorkerState::Leased { base, nested, .. } => {
                nested.last().map_or(base.blocked, |(_, f)| f.blocked)
            }
            _ => false,
        }
    }

    fn pinned(&self) -> bool {
        matches!(self, WorkerState::Leased { pinned: true, .. })
    }

    /// The running task at `depth` (0: the lease's own).
    fn frame_mut(&mut self, depth: u32) -> Option<&mut Frame> {
        match self {
            WorkerState::Leased { base, nested, .. } => match depth {
                0 => Some(base),
                d => nested.get_mut(d as usize - 1).map(|(_, f)| f),
            },
            _ => None,
        }
    }
}

/// What a node's daemon granted this scheduler, when the daemon shares its node out among the
/// drivers of several jobs (see [`crate::proto::grants`]): a lease starts only on resources
/// the node granted. Only the node's own kinds of resources are granted; the names a
/// placement group's bundle adds are the group's (the bundle itself was granted).
#[derive(Debug, Default)]
struct Gate {
    /// The node's own resources: their kinds are what grants count.
    kinds: Resources,
    granted: Resources,
    /// Asked for and not answered yet.
    asked: Resources,
    /// The node refused an ask: none until the next tick.
    refused: bool,
    /// The node wants back what goes unused (see [`Scheduler::reclaim`]).
    reclaim: bool,
    /// A worker blocked in `get`: what goes unused with nothing queued goes back at the next
    /// scheduling rather than at the idle tick, so that the node can lease the CPU to
    /// another owner of the job (a blocked parent's children, see `proto::pool`).
    blocked_back: bool,
    /// While other jobs wait: the job's fair share of the node, which its leases shrink to
    /// as their tasks end (until the next tick; the node says it again while jobs wait).
    keep: Option<Resources>,
    /// At the last tick, granted resources went unused with nothing queued: given back if
    /// still so at the next.
    spare_seen: bool,
    /// Placement group bundles reserved here before the node granted them: their names
    /// count in the node's total but become free only once the grant covers them.
    ungranted_bundles: Vec<Resources>,
}

impl Gate {
    /// What the leases may use: the grant, within the fair share while shrinking to it.
    fn limit(&self) -> Resources {
        match &self.keep {
            Some(keep) => crate::proto::grants::least(&self.granted, keep),
            None => self.granted.clone(),
        }
    }

    /// The part of `resources` the node grants (its own kinds).
    fn base(&self, resources: &Resources) -> Resources {
        Resources {
            cpu: resources.cpu,
            gpu: resources.gpu,
            custom: (resources.custom.iter())
                .filter(|(name, _)| self.kinds.get(name) != Amount::ZERO)
                .cloned()
                .collect(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    total: Resources,
    available: Resources,
    /// CPU handed to unblocked workers beyond what was available (repaid on release).
    cpu_debt: u64,
    queues: IdMap<Resources, VecDeque<TaskId>>,
    /// Shapes in the order they first had work, for fairness between shapes.
    shapes: Vec<Resources>,
    demands: IdMap<TaskId, Resources>,
    infeasible: Vec<TaskId>,
    /// Actor creations waiting for a worker of their own, in order.
    pinned_queue: VecDeque<TaskId>,
    /// Owners' lease asks and leases (keyed by their owner's worker number): an ask is never
    /// pipelined behind its owner's own task, nor onto a worker leased to its owner already.
    exclusive: IdSet<TaskId>,
    workers: IdMap<WorkerId, WorkerState>,
    /// Tasks a blocked worker waits for, with that worker: run on top of it when queued.
    awaited_by: IdMap<TaskId, WorkerId>,
    /// Queued tasks that a blocked worker waits for, by that worker, oldest first (checked
    /// when scheduling).
    nestable: IdMap<WorkerId, VecDeque<TaskId>>,
    /// What `nestable` holds (each task once).
    nestable_set: IdSet<TaskId>,
    next_worker: WorkerId,
    max_inflight: usize,
    soft_limit: usize,
    max_workers: usize,
    /// Whether the last idle tick found the node stalled (see [`Scheduler::stalled`]).
    stalled_seen: bool,
    /// What the node's daemon granted, if it shares the node among jobs.
    gate: Option<Gate>,
}

impl Scheduler {
    /// A scheduler for a node of `total` resources, pipelining up to `max_inflight` tasks to a
    /// worker, keeping about `soft_limit` unblocked workers and at most `max_workers` processes
    /// for tasks.
    #[cfg(test)]
    pub(crate) fn new(
        total: Resources,
        max_inflight: usize,
        soft_limit: usize,
        max_workers: usize,
    ) -> Self {
        Self::numbered(total, max_inflight, soft_limit, max_workers, 0)
    }

    /// Like [`Scheduler::new`], numbering its workers from `base + 1` (so the workers of
    /// several nodes never share a number).
    pub(crate) fn numbered(
        total: Resources,
        max_inflight: usize,
        soft_limit: usize,
        max_workers: usize,
        base: WorkerId,
    ) -> Self {
        Scheduler {
            available: total.clone(),
            total,
            cpu_debt: 0,
            queues: IdMap::default(),
            shapes: Vec::new(),
            demands: IdMap::default(),
            infeasible: Vec::new(),
            pinned_queue: VecDeque::new(),
            exclusive: IdSet::default(),
            workers: IdMap::default(),
            awaited_by: IdMap::default(),
            nestable: IdMap::default(),
            nestable_set: IdSet::default(),
            next_worker: base + 1,
            max_inflight: max_inflight.max(1),
            soft_limit: soft_limit.max(1),
            max_workers: max_workers.max(1),
            stalled_seen: false,
            gate: None,
        }
    }

    /// The most worker processes for tasks it keeps (beyond which blocked workers run what
    /// they wait for themselves).
    pub(crate) fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// The node is shared by its daemon among several jobs' drivers: this scheduler starts a
    /// lease only on resources the daemon granted ([`Action::Ask`]), and gives back what goes
    /// unused ([`Action::Return`]).
    pub(crate) fn gated(&mut self) {
        self.gate = Some(Gate {
            kinds: self.total.clone(),
            ..Gate::default()
        });
    }

    /// The node counts whole for this scheduler (see [`Scheduler::gated`]).
    pub(crate) fn ungated(&mut self) {
        self.gate = None;
    }

    /// The node's own resources that leases, nested tasks and reservations use now (a
    /// blocked task's CPU excepted); with `debt`, the CPU unblocked tasks took beyond it too.
    fn used(&self, gate: &Gate, debt: bool) -> Resources {
        let mut used = gate.base(&self.total);
        used.subtract(&gate.base(&self.available));
        if debt {
            used.cpu.0 += self.cpu_debt;
        }
        used
    }

    /// What the node granted and nothing uses (everything, for a node not gated).
    fn headroom(&self) -> Option<Resources> {
        let gate = self.gate.as_ref()?;
        let mut room = gate.limit();
        room.subtract(&self.used(gate, true));
        Some(room)
    }

    /// Whether a lease (or a nested task) of `demand` may start now: its resources are free
    /// and, on a gated node, granted.
    fn can_lease(&self, demand: &Resources) -> bool {
        demand.fits_in(&self.available)
            && self.gate.as_ref().is_none_or(|gate| {
                let room = self.headroom().unwrap_or_default();
                gate.base(demand).fits_in(&room)
            })
    }

    /// Whether a task of `demand` could start here soon: its resources are free and, on a
    /// gated node, granted or not waited for (an ask that waits means other jobs hold the
    /// node).
    pub(crate) fn can_start(&self, demand: &Resources) -> bool {
        self.can_lease(demand)
            || (demand.fits_in(&self.available)
                && self
                    .gate
                    .as_ref()
                    .is_some_and(|g| g.asked.iter().next().is_none()))
    }

    /// The node granted `shape`, asked for by [`Action::Ask`]. Bundles reserved before
    /// their grant become usable once the grant covers what is reserved.
    pub(crate) fn granted(&mut self, shape: &Resources) {
        let Some(gate) = &mut self.gate else {
            return;
        };
        gate.asked.subtract(shape);
        gate.granted.add(shape);
        if gate.ungranted_bundles.is_empty() {
            return;
        }
        let gate = self.gate.as_ref().expect("gated");
        if self.used(gate, false).fits_in(&gate.granted) {
            let bundles = std::mem::take(&mut self.gate.as_mut().expect("gated").ungranted_bundles);
            for named in bundles {
                self.available.add(&named);
            }
        }
    }

    /// The node refused to grant `shape`: no more asks until the next tick.
    pub(crate) fn refused(&mut self, shape: &Resources) {
        if let Some(gate) = &mut self.gate {
            gate.asked.subtract(shape);
            gate.refused = true;
        }
    }

    /// The node asks for what goes unused, because other jobs wait: everything granted that
    /// no lease uses goes back at the next scheduling, even while tasks here wait for more
    /// (so that no two jobs each hold part of what the other waits for), and what is still
    /// needed is asked for again, behind the jobs that waited.
    ///
    /// Beyond its fair share `keep`, the job stops sending tasks down its leases' pipelines
    /// and starts no lease, so that leases end until what it holds fits `keep`.
    pub(crate) fn reclaim(&mut self, keep: Resources) {
        if let Some(gate) = &mut self.gate {
            gate.reclaim = true;
            gate.keep = (!gate.granted.fits_in(&keep)).then_some(keep);
        }
    }

    /// Whether a lease of `shape` waits only for the node's grant (asked for at this
    /// scheduling's end): the node has room for it by this job's count, the node did not
    /// refuse, and the job is not shrinking to its fair share.
    fn awaits_grant(&self, shape: &Resources) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|g| !g.refused && g.keep.is_none() && shape.fits_in(&self.available))
    }

    /// Whether the job holds more of the node than its fair share while other jobs wait.
    fn shrinking(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.keep.is_some())
    }

    /// Whether tasks or actor creations wait in the queues.
    fn queued(&self) -> bool {
        self.queues.values().any(|q| !q.is_empty()) || !self.pinned_queue.is_empty()
    }

    /// Granted resources that nothing uses.
    fn unused(&self) -> Option<Resources> {
        let gate = self.gate.as_ref()?;
        let mut unused = gate.granted.clone();
        unused.subtract(&self.used(gate, true));
        let any = unused.iter().next().is_some();
        any.then_some(unused)
    }

    /// Granted resources that nothing uses, if nothing is queued here.
    fn spare(&self) -> Option<Resources> {
        self.unused().filter(|_| !self.queued())
    }

    /// Gives back `spare` (what an [`Action::Return`] carries).
    fn give_back_grant(&mut self, spare: Resources) -> Resources {
        if let Some(gate) = &mut self.gate {
            gate.granted.subtract(&spare);
            gate.spare_seen = false;
        }
        spare
    }

    /// The idle tick of a gated node: grants unused with nothing queued at two ticks in a row
    /// go back (kept between, so that a program that submits one task at a time does not
    /// ask for each), and asks may follow a refusal or a fair share again (true when one had
    /// stopped them: the node should schedule again). Returns what to give back.
    pub(crate) fn tick_grants(&mut self) -> (Option<Resources>, bool) {
        let spare = self.spare();
        let Some(gate) = &mut self.gate else {
            return (None, false);
        };
        let refused = std::mem::take(&mut gate.refused) | gate.keep.take().is_some();
        let back = match spare {
            Some(spare) if gate.spare_seen => Some(self.give_back_grant(spare)),
            Some(_) => {
                gate.spare_seen = true;
                None
            }
            None => {
                gate.spare_seen = false;
                None
            }
        };
        (back, refused)
    }

    /// The asks a gated node needs now: for a reservation's resources not granted yet, then
    /// for as many queued tasks and actor creations as the node's free resources fit, beyond
    /// what is granted and unused or asked for already. None while the node refused, or while
    /// the job shrinks to its fair share (what it got it would give back at once).
    fn asks(&mut self, actions: &mut Vec<Action>) {
        let Some(gate) = &self.gate else {
            return;
        };
        if gate.refused || gate.keep.is_some() {
            return;
        }
        let mut asks = Vec::new();
        // Held by reservations beyond what was granted or asked.
        let mut deficit = self.used(gate, false);
        deficit.subtract(&gate.granted);
        deficit.subtract(&gate.asked);
        if deficit.iter().next().is_some() {
            asks.push(deficit);
        }
        let mut room = self.headroom().unwrap_or_default();
        room.add(&gate.asked);
        let mut left = self.available.clone();
        let pinned = (self.pinned_queue.iter())
            .filter_map(|t| Some((self.demands.get(t)?, 1)))
            .collect::<Vec<_>>();
        let queued =
            (self.shapes.iter()).filter_map(|shape| Some((shape, self.queues.get(shape)?.len())));
        for (demand, count) in pinned.into_iter().chain(queued) {
            let base = gate.base(demand);
            if base.iter().next().is_none() {
                continue; // nothing the node grants (a group's task, or no demand at all)
            }
            for _ in 0..count {
                if !demand.fits_in(&left) {
                    break;
                }
                left.subtract(demand);
                // Ask for what the granted and asked resources do not cover.
                let mut missing = base.clone();
                missing.subtract(&room);
                if missing.iter().next().is_some() {
                    room.add(&missing);
                    asks.push(missing);
                }
                room.subtract(&base);
            }
        }
        let gate = self.gate.as_mut().expect("checked");
        for ask in asks {
            gate.asked.add(&ask);
            actions.push(Action::Ask(ask));
        }
    }

    pub(crate) fn total(&self) -> &Resources {
        &self.total
    }

    pub(crate) fn available(&self) -> &Resources {
        &self.available
    }

    /// How busy the node is: tasks queued or sent to workers, and the CPUs actors hold, per
    /// CPU (for choosing a node).
    pub(crate) fn load(&self) -> f64 {
        let queued: usize = self.queues.values().map(VecDeque::len).sum::<usize>()
            + self.pinned_queue.len()
            + self.infeasible.len();
        let mut running = 0.0;
        for worker in self.workers.values() {
            if let WorkerState::Leased {
                base,
                inflight,
                pinned,
                nested,
            } = worker
            {
                running += (inflight.len() + nested.len()) as f64;
                if *pinned && inflight.is_empty() {
                    running += base.demand.cpu.as_f64();
                }
            }
        }
        (queued as f64 + running) / self.total.cpu.as_f64().max(1.0)
    }

    /// What waits for resources: per demand shape, how many tasks, and whether the node could
    /// never run them (infeasible).
    pub(crate) fn pending(&self) -> Vec<(Resources, u32, bool)> {
        let mut out: Vec<(Resources, u32, bool)> = Vec::new();
        let mut add = |demand: &Resources, infeasible: bool| match out
            .iter_mut()
            .find(|(d, _, i)| d == demand && *i == infeasible)
        {
            Some(entry) => entry.1 += 1,
            None => out.push((demand.clone(), 1, infeasible)),
        };
        for (shape, queue) in &self.queues {
            for _ in queue {
                add(shape, false);
            }
        }
        for task in self.pinned_queue.iter() {
            if let Some(demand) = self.demands.get(task) {
                add(demand, false);
            }
        }
        for task in &self.infeasible {
            if let Some(demand) = self.demands.get(task) {
                add(demand, true);
            }
        }
        out
    }

    /// Reserves a number for a worker process about to be started.
    pub(crate) fn worker_starting(&mut self) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(id, WorkerState::Starting);
        id
    }

    /// A started worker completed its handshake.
    pub(crate) fn worker_ready(&mut self, worker: WorkerId) {
        if let Some(state @ WorkerState::Starting) = self.workers.get_mut(&worker) {
            *state = WorkerState::Idle;
        }
    }

    /// Worker `worker`, lent by the node's pool, takes the place of `starting` (a number
    /// reserved by [`Scheduler::worker_starting`] for the borrow); `ready`: it completed its
    /// handshake already (else it is starting until [`Scheduler::worker_ready`]).
    pub(crate) fn adopt(&mut self, starting: WorkerId, worker: WorkerId, ready: bool) {
        if matches!(self.workers.get(&starting), Some(WorkerState::Starting)) {
            self.workers.remove(&starting);
        }
        let state = match ready {
            true => WorkerState::Idle,
            false => WorkerState::Starting,
        };
        self.workers.insert(worker, state);
    }

    /// The idle workers, for the node's pool to take back.
    pub(crate) fn idle_workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        (self.workers.iter())
            .filter(|(_, w)| matches!(w, WorkerState::Idle))
            .map(|(id, _)| *id)
    }

    /// A task whose inputs are ready.
    pub(crate) fn submit(&mut self, task: TaskId, demand: Resources) -> Admission {
        if !demand.fits_in(&self.total) {
            self.demands.insert(task, demand);
            self.infeasible.push(task);
            return Admission::Infeasible;
        }
        self.enqueue(task, demand, false);
        Admission::Queued
    }

    /// An owner's lease ask, keyed by an id of its owner's (whose worker number it carries):
    /// queued like a task, but never pipelined behind its owner's own task, nor onto a worker
    /// leased to its owner already (that owner pipelines down the lease it has; asking again
    /// after each grant, a long queue's owner gathered 32 leases on 2 CPUs for one fan-out
    /// of 10,000, each a round trip through the node).
    pub(crate) fn submit_exclusive(&mut self, task: TaskId, demand: Resources) -> Admission {
        let admission = self.submit(task, demand);
        self.exclusive.insert(task);
        admission
    }

    /// An actor creation: it needs a worker of its own, leased for the actor's lifetime.
    pub(crate) fn submit_pinned(&mut self, task: TaskId, demand: Resources) -> Admission {
        self.demands.insert(task, demand.clone());
        if !demand.fits_in(&self.total) {
            self.infeasible.push(task);
            return Admission::Infeasible;
        }
        self.pinned_queue.push_back(task);
        Admission::Queued
    }

    fn enqueue(&mut self, task: TaskId, demand: Resources, front: bool) {
        let queue = match self.queues.get_mut(&demand) {
            Some(q) => q,
            None => {
                if !self.shapes.contains(&demand) {
                    self.shapes.push(demand.clone());
                }
                self.queues.entry(demand.clone()).or_default()
            }
        };
        if front {
            queue.push_front(task);
        } else {
            queue.push_back(task);
        }
        self.demands.insert(task, demand);
        if self.awaited_by.contains_key(&task) {
            self.mark_nestable(task);
        }
    }

    /// `task` is awaited by a blocked worker and may be queued: a candidate for [`Self::nest`].
    fn mark_nestable(&mut self, task: TaskId) {
        let Some(&worker) = self.awaited_by.get(&task) else {
            return;
        };
        if self.nestable_set.insert(task) {
            self.nestable.entry(worker).or_default().push_back(task);
        }
    }

    fn requeue(&mut self, tasks: impl DoubleEndedIterator<Item = TaskId>) {
        for task in tasks.rev() {
            if let Some(demand) = self.demands.get(&task).cloned() {
                self.enqueue(task, demand, true);
            }
        }
    }

    /// A worker reported a task as ended (done, failed or dropped after cancel).
    pub(crate) fn task_done(&mut self, worker: WorkerId, task: TaskId) {
        if !self.exclusive.is_empty() {
            self.exclusive.remove(&task);
        }
        if self.end_nested(worker, task) {
            return;
        }
        let Some(WorkerState::Leased {
            base,
            inflight,
            pinned,
            nested,
        }) = self.workers.get_mut(&worker)
        else {
            return;
        };
        let Some(pos) = inflight.iter().position(|t| *t == task) else {
            return; // a stale report: the task was handed back and is elsewhere now
        };
        inflight.remove(pos);
        self.demands.remove(&task);
        if inflight.is_empty() && !base.blocked && nested.is_empty() && !*pinned {
            self.release_lease(worker);
        }
    }

    /// Ends `task` if it runs on top of a blocked task of `worker`: its resources come back.
    fn end_nested(&mut self, worker: WorkerId, task: TaskId) -> bool {
        let Some(WorkerState::Leased { nested, .. }) = self.workers.get_mut(&worker) else {
            return false;
        };
        let Some(pos) = nested.iter().position(|(t, _)| *t == task) else {
            return false;
        };
        // Those above it ended before it (a worker runs them innermost first).
        let ended: Vec<(TaskId, Frame)> = nested.drain(pos..).collect();
        for (task, frame) in ended {
            self.demands.remove(&task);
            self.end_frame(&frame);
        }
        true
    }

    /// A running task's frame is gone: what it holds comes back, and it waits for nothing.
    fn end_frame(&mut self, frame: &Frame) {
        self.forget_awaiting(frame);
        self.give_back(&held_by(frame));
    }

    fn release_lease(&mut self, worker: WorkerId) {
        if let Some(state) = self.workers.get_mut(&worker)
            && let WorkerState::Leased { base, nested, .. } =
                std::mem::replace(state, WorkerState::Idle)
        {
            for (task, frame) in nested {
                self.demands.remove(&task);
                self.end_frame(&frame);
            }
            self.end_frame(&base);
        }
    }

    fn give_back(&mut self, resources: &Resources) {
        let mut resources = resources.clone();
        let repay = self.cpu_debt.min(resources.cpu.0);
        self.cpu_debt -= repay;
        resources.cpu.0 -= repay;
        self.available.add(&resources);
    }

    fn forget_awaiting(&mut self, frame: &Frame) {
        for task in &frame.awaiting {
            self.awaited_by.remove(task);
        }
    }

    /// The worker's running task at `depth` waits in `get` for the results of `awaiting`: its
    /// CPUs go back to the node and the tasks it had queued (`returned`) go back to the queue.
    /// The awaited tasks may now run on top of it.
    pub(crate) fn worker_blocked(
        &mut self,
        worker: WorkerId,
        depth: u32,
        returned: &[TaskId],
        awaiting: &[TaskId],
    ) {
        let Some(state) = self.workers.get_mut(&worker) else {
            return;
        };
        let Some(frame) = state.frame_mut(depth) else {
            return;
        };
        if frame.blocked {
            return;
        }
        frame.blocked = true;
        frame.awaiting = awaiting.iter().copied().collect();
        let cpu = Resources {
            cpu: frame.demand.cpu,
            ..Resources::default()
        };
        if let WorkerState::Leased { inflight, .. } = state {
            inflight.retain(|t| !returned.contains(t));
        }
        self.give_back(&cpu);
        if let Some(gate) = &mut self.gate {
            gate.blocked_back = true;
        }
        self.requeue(returned.iter().copied());
        for &task in awaiting {
            self.awaited_by.insert(task, worker);
            if self.demands.contains_key(&task) {
                self.mark_nestable(task);
            }
        }
    }

    /// The worker's task at `depth` resumes: it takes its CPUs again, even beyond what is
    /// available.
    pub(crate) fn worker_unblocked(&mut self, worker: WorkerId, depth: u32) {
        let Some(frame) = self
            .workers
            .get_mut(&worker)
            .and_then(|w| w.frame_mut(depth))
        else {
            return;
        };
        if !frame.blocked {
            return;
        }
        frame.blocked = false;
        let need = frame.demand.cpu.0;
        let awaiting = std::mem::take(&mut frame.awaiting);
        for task in &awaiting {
            if self.awaited_by.get(task) == Some(&worker) {
                self.awaited_by.remove(task);
            }
        }
        let have = self.available.cpu.0;
        self.available.cpu.0 = have.saturating_sub(need);
        self.cpu_debt += need.saturating_sub(have);
    }

    /// Tasks the worker received while blocked (or, for nested ones, no longer waited for)
    /// and handed back unrun.
    pub(crate) fn bounced(&mut self, worker: WorkerId, tasks: &[TaskId]) {
        for &task in tasks {
            let demand = self.demands.get(&task).cloned();
            if self.end_nested(worker, task)
                && let Some(demand) = demand
            {
                self.demands.insert(task, demand);
            }
        }
        if let Some(WorkerState::Leased { inflight, .. }) = self.workers.get_mut(&worker) {
            inflight.retain(|t| !tasks.contains(t));
        }
        self.requeue(tasks.iter().copied());
    }

    /// The worker process is gone (or stopped). Returns the task it had started, those it ran
    /// on top of it, and those queued on it but not started, which go back to the queue.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) -> Removed {
        let (inflight, nested): (VecDeque<TaskId>, Vec<TaskId>) =
            match self.workers.get_mut(&worker) {
                Some(WorkerState::Leased {
                    inflight, nested, ..
                }) => (
                    std::mem::take(inflight),
                    nested.iter().map(|(t, _)| *t).collect(),
                ),
                Some(_) => Default::default(),
                None => return Removed::default(),
            };
        if matches!(self.workers.get(&worker), Some(WorkerState::Leased { .. })) {
            self.release_lease(worker);
        }
        self.workers.remove(&worker);
        let mut inflight = inflight.into_iter();
        let started = inflight.next();
        let requeued: Vec<TaskId> = inflight.collect();
        self.requeue(requeued.iter().copied());
        Removed {
            started,
            nested,
            requeued,
        }
    }

    /// Sets `bundle` aside for a placement group: it leaves the free resources and comes back as
    /// `named` (the group's own names for it), which only the group's tasks demand. Tasks that
    /// were infeasible may fit the node now.
    pub(crate) fn reserve(&mut self, bundle: &Resources, named: &Resources) {
        self.available.subtract(bundle);
        self.total.add(named);
        // On a node shared among jobs, the bundle's names are free once the node granted it.
        let ungranted = self
            .gate
            .as_ref()
            .is_some_and(|g| !self.used(g, false).fits_in(&g.granted));
        match (&mut self.gate, ungranted) {
            (Some(gate), true) => gate.ungranted_bundles.push(named.clone()),
            _ => self.available.add(named),
        }
        let infeasible = std::mem::take(&mut self.infeasible);
        for task in infeasible {
            let demand = self.demands.remove(&task).unwrap_or_default();
            self.submit(task, demand);
        }
    }

    /// Ends a reservation made by [`Scheduler::reserve`]: `named` goes, `bundle` is free again.
    /// Returns the queued tasks that demanded the group (their `marker`) and the workers leased
    /// for it, which the caller stops; their leases no longer hold anything.
    pub(crate) fn unreserve(
        &mut self,
        bundle: &Resources,
        named: &Resources,
        marker: &str,
    ) -> (Vec<TaskId>, Vec<WorkerId>) {
        let in_group = |demand: &Resources| demand.get(marker) != Amount::ZERO;
        let mut queued = Vec::new();
        for shape in self.shapes.clone() {
            if in_group(&shape)
                && let Some(queue) = self.queues.remove(&shape)
            {
                self.shapes.retain(|s| *s != shape);
                queued.extend(queue);
            }
        }
        let pinned = std::mem::take(&mut self.pinned_queue);
        for task in pinned {
            if self.demands.get(&task).is_some_and(&in_group) {
                queued.push(task);
            } else {
                self.pinned_queue.push_back(task);
            }
        }
        let mut workers = Vec::new();
        for (&worker, state) in &mut self.workers {
            if let WorkerState::Leased {
                base,
                inflight,
                nested,
                ..
            } = state
            {
                if in_group(&base.demand) {
                    // Tasks pipelined behind the running one never start.
                    queued.extend(inflight.drain(inflight.len().min(1)..));
                    base.demand = Resources::default();
                    workers.push(worker);
                } else if nested.iter().any(|(_, f)| in_group(&f.demand)) {
                    workers.push(worker);
                }
                for (_, frame) in nested.iter_mut() {
                    if in_group(&frame.demand) {
                        frame.demand = Resources::default();
                    }
                }
            }
        }
        for task in &queued {
            self.demands.remove(task);
        }
        self.total.subtract(named);
        match self.gate.as_mut().and_then(|g| {
            let at = g.ungranted_bundles.iter().position(|b| b == named)?;
            Some(g.ungranted_bundles.remove(at))
        }) {
            Some(_) => {} // its names never became free
            None => self.available.subtract(named),
        }
        self.available.add(bundle);
        (queued, workers)
    }

    /// The shapes of queued tasks this node cannot start now (its free resources do not fit
    /// them), with how many wait: work other nodes could take.
    pub(crate) fn stuck(&self) -> Vec<(Resources, usize)> {
        self.queues
            .iter()
            .filter(|(shape, queue)| !queue.is_empty() && !self.can_start(shape))
            .map(|(shape, queue)| (shape.clone(), queue.len()))
            .collect()
    }

    /// Whether tasks wait here that this node can never run.
    pub(crate) fn has_infeasible(&self) -> bool {
        !self.infeasible.is_empty()
    }

    /// Takes the tasks this node can never run (to place them elsewhere).
    pub(crate) fn take_infeasible(&mut self) -> Vec<TaskId> {
        let tasks = std::mem::take(&mut self.infeasible);
        self.forget_demands(&tasks);
        tasks
    }

    /// `tasks` left this node: their demands are no longer kept.
    fn forget_demands(&mut self, tasks: &[TaskId]) {
        for task in tasks {
            self.demands.remove(task);
            self.exclusive.remove(task);
        }
    }

    /// The workers with tasks sent to them that are not blocked in `get`, with how many.
    pub(crate) fn working(&self) -> impl Iterator<Item = (WorkerId, usize)> + '_ {
        self.workers
            .iter()
            .filter_map(|(&worker, state)| match state {
                WorkerState::Leased { base, inflight, .. }
                    if !inflight.is_empty() && !base.blocked =>
                {
                    Some((worker, inflight.len()))
                }
                _ => None,
            })
    }

    /// Whether the node has tasks to run: queued, or sent to a worker that is not an actor's.
    pub(crate) fn runs_tasks(&self) -> bool {
        let queued = self.queues.values().any(|q| !q.is_empty()) || !self.pinned_queue.is_empty();
        queued
            || self.workers.values().any(|state| {
                matches!(state, WorkerState::Leased { inflight, nested, pinned: false, .. }
                    if !inflight.is_empty() || !nested.is_empty())
            })
    }

    /// Tasks sent to workers' pipelines that have not started (all but each worker's first),
    /// by worker, with the shape of its lease: work another node could take.
    /// The task `worker` runs now: the innermost of those run on top of a blocked one, else
    /// the first it was sent.
    pub(crate) fn running_task(&self, worker: WorkerId) -> Option<TaskId> {
        match self.workers.get(&worker)? {
            WorkerState::Leased {
                inflight, nested, ..
            } => nested.last().map(|(t, _)| *t).or(inflight.front().copied()),
            _ => None,
        }
    }

    pub(crate) fn pipelined(&self) -> Vec<(WorkerId, Resources, Vec<TaskId>)> {
        let mut out = Vec::new();
        for (&worker, state) in &self.workers {
            if let WorkerState::Leased {
                base,
                inflight,
                pinned: false,
                nested,
            } = state
                && inflight.len() > 1
                && nested.is_empty()
                && !base.blocked
            {
                let waiting = inflight.iter().skip(1).copied().collect();
                out.push((worker, base.demand.clone(), waiting));
            }
        }
        out.sort_by_key(|(worker, _, _)| *worker);
        out
    }

    /// The worker handed back `tasks` it was asked to return: they leave its pipeline and
    /// this node (the caller places them again).
    pub(crate) fn recalled(&mut self, worker: WorkerId, tasks: &[TaskId]) {
        if let Some(WorkerState::Leased { inflight, .. }) = self.workers.get_mut(&worker) {
            inflight.retain(|t| !tasks.contains(t));
        }
        self.forget_demands(tasks);
    }

    /// Actor creations waiting here for resources this node does not have free now.
    pub(crate) fn stuck_pinned(&self) -> Vec<(TaskId, Resources)> {
        let waiting = self.pinned_queue.iter().filter_map(|task| {
            let demand = self.demands.get(task)?;
            (!self.can_start(demand)).then(|| (*task, demand.clone()))
        });
        waiting.collect()
    }

    /// Takes the queued actor creation `task` (to run elsewhere).
    pub(crate) fn take_pinned(&mut self, task: TaskId) -> bool {
        let Some(at) = self.pinned_queue.iter().position(|t| *t == task) else {
            return false;
        };
        self.pinned_queue.remove(at);
        self.demands.remove(&task);
        true
    }

    /// Takes up to `count` of the tasks of `shape` queued last (to run elsewhere).
    pub(crate) fn take_queued(&mut self, shape: &Resources, count: usize) -> Vec<TaskId> {
        let Some(queue) = self.queues.get_mut(shape) else {
            return Vec::new();
        };
        let keep = queue.len().saturating_sub(count);
        let taken: Vec<TaskId> = queue.drain(keep..).collect();
        self.forget_demands(&taken);
        taken
    }

    /// How many more tasks of `shape` this node could start now: as many as its free
    /// resources fit, while its queue stays shorter than its CPUs.
    pub(crate) fn room_for(&self, shape: &Resources) -> usize {
        let cpus = self.total.cpu.as_f64().max(1.0);
        let below = ((1.0 - self.load()) * cpus).floor().max(0.0) as usize;
        let mut free = self.available.clone();
        let mut fits = 0;
        while fits < below && shape.fits_in(&free) {
            free.subtract(shape);
            fits += 1;
        }
        fits
    }

    /// Empties the node's queue (including infeasible tasks) and returns what was in it.
    pub(crate) fn drain_queued(&mut self) -> Vec<TaskId> {
        let mut tasks: Vec<TaskId> = std::mem::take(&mut self.infeasible);
        tasks.extend(std::mem::take(&mut self.pinned_queue));
        for shape in std::mem::take(&mut self.shapes) {
            if let Some(queue) = self.queues.remove(&shape) {
                tasks.extend(queue);
            }
        }
        self.forget_demands(&tasks);
        tasks
    }

    /// Where `task` is (without taking it anywhere).
    pub(crate) fn locate(&self, task: TaskId) -> Placement {
        let Some(demand) = self.demands.get(&task) else {
            return Placement::Absent;
        };
        let queued = self.queues.get(demand).is_some_and(|q| q.contains(&task))
            || self.pinned_queue.contains(&task)
            || self.infeasible.contains(&task);
        if queued {
            return Placement::Queued;
        }
        for (&worker, state) in &self.workers {
            if let WorkerState::Leased {
                inflight, nested, ..
            } = state
            {
                if let Some(pos) = inflight.iter().position(|t| *t == task) {
                    return Placement::OnWorker {
                        worker,
                        started: pos == 0,
                    };
                }
                if nested.iter().any(|(t, _)| *t == task) {
                    return Placement::OnWorker {
                        worker,
                        started: true,
                    };
                }
            }
        }
        Placement::Absent
    }

    /// Takes a task out of the scheduler's hands for cancellation and says where it was.
    pub(crate) fn locate_for_cancel(&mut self, task: TaskId) -> Placement {
        let at = self.locate(task);
        if at == Placement::Queued {
            if let Some(demand) = self.demands.remove(&task)
                && let Some(queue) = self.queues.get_mut(&demand)
            {
                queue.retain(|t| *t != task);
            }
            self.pinned_queue.retain(|t| *t != task);
            self.infeasible.retain(|t| *t != task);
            self.exclusive.remove(&task);
        }
        at
    }

    /// Takes `task` out of its queue (see [`position_from_either_end`]).
    fn unqueue(&mut self, task: TaskId, shape: &Resources) -> bool {
        let Some(queue) = self.queues.get_mut(shape) else {
            return false;
        };
        let Some(pos) = position_from_either_end(queue, task) else {
            return false;
        };
        queue.remove(pos);
        if queue.is_empty() {
            self.queues.remove(shape);
            self.shapes.retain(|s| s != shape);
        }
        true
    }

    /// Runs queued tasks that blocked workers wait for on top of those workers, while their
    /// resources are free and no worker process is coming for them (the cap is reached): the
    /// work a blocked task waits for is done by its own process, depth first, rather than by a
    /// new process per level of nesting. (Below the cap a new worker is started instead: it
    /// takes tasks pipelined, where a blocked worker runs one at a time, a round trip each.) Only tasks the innermost
    /// blocked task waits for run on it, so a worker's stack of tasks follows the program's
    /// own waits and cannot add a cycle.
    ///
    /// A call costs what it places, however many tasks wait: the awaited tasks are kept by
    /// the worker that awaits them, and each worker's are looked at only until one of them
    /// runs on it (a parent that awaits thousands of queued children made each scheduling scan
    /// all of them: a nested fan-out slowed to a crawl).
    fn nest(&mut self, actions: &mut Vec<Action>) {
        let fitting = |s: &Self| -> Vec<Resources> {
            (s.shapes.iter())
                .filter(|shape| s.can_lease(shape))
                .cloned()
                .collect()
        };
        let mut fits = fitting(self);
        if self.nestable.is_empty() || fits.is_empty() {
            return;
        }
        let mut workers: Vec<WorkerId> = self.nestable.keys().copied().collect();
        workers.sort_unstable();
        for worker in workers {
            let Some(mut queue) = self.nestable.remove(&worker) else {
                continue;
            };
            let mut keep = VecDeque::new();
            while let Some(task) = queue.pop_front() {
                match self.nest_one(worker, task, &fits) {
                    Nesting::Placed(depth) => {
                        self.nestable_set.remove(&task);
                        actions.push(Action::Nest {
                            worker,
                            task,
                            depth,
                        });
                        fits = fitting(self);
                        // One per worker and scheduling: the rest waits, in order.
                        keep.extend(queue.drain(..));
                    }
                    Nesting::Later => keep.push_back(task),
                    Nesting::Never => {
                        self.nestable_set.remove(&task);
                    }
                }
            }
            if !keep.is_empty() {
                self.nestable.insert(worker, keep);
            }
            if fits.is_empty() {
                break;
            }
        }
    }

    /// Runs `task`, which `worker` was marked as awaiting, on top of it if it can now (its
    /// shape among those that `fits`).
    fn nest_one(&mut self, worker: WorkerId, task: TaskId, fits: &[Resources]) -> Nesting {
        if self.awaited_by.get(&task) != Some(&worker) {
            return Nesting::Never; // it resumed, or another task awaits it now
        }
        let Some(demand) = self.demands.get(&task) else {
            return Nesting::Never;
        };
        if !fits.contains(demand) {
            return Nesting::Later;
        }
        let shape = demand.clone();
        let depth = match self.workers.get(&worker) {
            Some(WorkerState::Leased { base, nested, .. }) => {
                let top = nested.last().map_or(base, |(_, f)| f);
                if !top.blocked || !top.awaiting.contains(&task) {
                    // A task below the innermost waits for it: its turn comes when the tasks
                    // above end. Otherwise it resumed, or waits for something else.
                    let below = std::iter::once(base)
                        .chain(nested.iter().map(|(_, f)| f))
                        .any(|f| f.blocked && f.awaiting.contains(&task));
                    return if below {
                        Nesting::Later
                    } else {
                        Nesting::Never
                    };
                }
                nested.len() as u32
            }
            _ => return Nesting::Never,
        };
        if !self.unqueue(task, &shape) {
            return Nesting::Never; // on a worker already
        }
        self.available.subtract(&shape);
        if let Some(WorkerState::Leased { nested, .. }) = self.workers.get_mut(&worker) {
            let frame = Frame {
                demand: shape,
                ..Frame::default()
            };
            nested.push((task, frame));
        }
        Nesting::Placed(depth)
    }

    /// Decides what to do now: leases, dispatches and worker starts.
    pub(crate) fn schedule(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut batches: IdMap<WorkerId, Vec<TaskId>> = IdMap::default();
        let mut want_workers = 0usize;
        let starting = self
            .workers
            .values()
            .filter(|w| matches!(w, WorkerState::Starting))
            .count();
        // Actor creations first: each gets an idle worker of its own, or a new one.
        let mut waiting = VecDeque::new();
        while let Some(task) = self.pinned_queue.pop_front() {
            let demand = self.demands.get(&task).cloned().unwrap_or_default();
            if !self.can_lease(&demand) {
                waiting.push_back(task);
                continue;
            }
            match self.idle_worker() {
                Some(worker) => {
                    self.available.subtract(&demand);
                    self.workers.insert(
                        worker,
                        WorkerState::Leased {
                            base: Frame {
                                demand,
                                ..Frame::default()
                            },
                            inflight: VecDeque::from([task]),
                            pinned: true,
                            nested: Vec::new(),
                        },
                    );
                    batches.entry(worker).or_default().push(task);
                }
                None => waiting.push_back(task),
            }
        }
        let unplaced = waiting
            .iter()
            .filter(|t| self.demands.get(t).is_some_and(|d| self.can_lease(d)))
            .count();
        want_workers += unplaced.saturating_sub(starting);
        self.pinned_queue = waiting;
        // Processes for tasks are capped; actors' are not (each actor needs its own).
        let task_room = self.max_workers.saturating_sub(self.task_workers());
        let mut task_workers_wanted = 0usize;
        for shape in self.shapes.clone() {
            while let Some(&task) = self.queues.get(&shape).and_then(VecDeque::front) {
                if self.can_lease(&shape) {
                    if let Some(worker) = self.idle_worker() {
                        self.available.subtract(&shape);
                        self.workers.insert(
                            worker,
                            WorkerState::Leased {
                                base: Frame {
                                    demand: shape.clone(),
                                    ..Frame::default()
                                },
                                inflight: VecDeque::from([task]),
                                pinned: false,
                                nested: Vec::new(),
                            },
                        );
                        self.pop(&shape);
                        batches.entry(worker).or_default().push(task);
                        continue;
                    }
                    // No idle worker: start as many as leases could be granted and wait for
                    // them rather than pile tasks onto busy workers. Demands bound the number
                    // of leases; a demand of nothing at all is bounded by the soft limit.
                    let room = if shape.iter().next().is_none() {
                        self.soft_limit
                            .saturating_sub(self.active_workers() + starting + want_workers)
                    } else {
                        usize::MAX
                    };
                    let queued = self.queues.get(&shape).map_or(0, VecDeque::len);
                    let mut left = self.available.clone();
                    let mut granted = self.headroom();
                    let base = self.gate.as_ref().map(|g| g.base(&shape));
                    let mut leases = 0;
                    while leases < room.min(queued)
                        && shape.fits_in(&left)
                        && granted
                            .as_ref()
                            .is_none_or(|g| base.as_ref().is_some_and(|b| b.fits_in(g)))
                    {
                        left.subtract(&shape);
                        if let (Some(g), Some(b)) = (granted.as_mut(), base.as_ref()) {
                            g.subtract(b);
                        }
                        leases += 1;
                    }
                    let more = leases.saturating_sub(starting + want_workers);
                    let allowed = more.min(task_room.saturating_sub(task_workers_wanted));
                    task_workers_wanted += allowed;
                    want_workers += allowed;
                    if starting + want_workers > 0 {
                        break;
                    }
                } else if self.awaits_grant(&shape) {
                    // The node has room by this job's count: wait for its grant rather than
                    // pile tasks onto busy workers (as for a worker that starts).
                    break;
                }
                // A job shrinking to its fair share lets its leases run dry. Nothing is
                // pipelined behind its own submitter's task (that task may work on without
                // waiting, and never reach it), nor a lease ask onto its owner's lease.
                // One that cannot go yet lets the few behind it pass.
                let pick = (!self.shrinking())
                    .then(|| self.pipeline_pick(&shape))
                    .flatten();
                match pick {
                    Some((at, task, worker)) => {
                        if let Some(WorkerState::Leased { inflight, .. }) =
                            self.workers.get_mut(&worker)
                        {
                            inflight.push_back(task);
                        }
                        self.take_at(&shape, at);
                        batches.entry(worker).or_default().push(task);
                    }
                    None => break,
                }
            }
        }
        if starting + want_workers == 0 {
            // No worker is coming for what is still queued (the cap is reached): blocked
            // workers run what they wait for themselves.
            self.nest(&mut actions);
        }
        for _ in 0..want_workers {
            actions.push(Action::StartWorker);
        }
        if let Some(gate) = &mut self.gate {
            let shrinking = gate.keep.is_some();
            let blocked_back = std::mem::take(&mut gate.blocked_back);
            if (std::mem::take(&mut gate.reclaim) || shrinking)
                && let Some(unused) = self.unused()
            {
                actions.push(Action::Return(self.give_back_grant(unused)));
            } else if blocked_back && let Some(spare) = self.spare() {
                actions.push(Action::Return(self.give_back_grant(spare)));
            }
            if let Some(gate) = &mut self.gate
                && gate.keep.as_ref().is_some_and(|k| gate.granted.fits_in(k))
            {
                gate.keep = None;
            }
            self.asks(&mut actions);
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_by_key(|(w, _)| *w);
        for (worker, tasks) in batches {
            actions.push(Action::Dispatch { worker, tasks });
        }
        actions
    }

    fn pop(&mut self, shape: &Resources) {
        self.take_at(shape, 0);
    }

    /// Takes the task at `at` out of `shape`'s queue.
    fn take_at(&mut self, shape: &Resources, at: usize) {
        if let Some(queue) = self.queues.get_mut(shape) {
            queue.remove(at);
            if queue.is_empty() {
                self.queues.remove(shape);
                self.shapes.retain(|s| s != shape);
            }
        }
    }

    fn active_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| {
                // Blocked workers gave their CPU back; actors' workers are their own.
                !matches!(w, WorkerState::Starting) && !w.blocked() && !w.pinned()
            })
            .count()
    }

    /// Processes for tasks (not held by an actor), starting ones included.
    fn task_workers(&self) -> usize {
        self.workers.values().filter(|w| !w.pinned()).count()
    }

    /// Whether every process for tasks is blocked in `get` (none idle, starting or running).
    fn all_blocked(&self) -> bool {
        self.workers
            .values()
            .filter(|w| !w.pinned())
            .all(WorkerState::blocked)
    }

    /// Called on the node's idle tick: true when, at two ticks in a row, every worker for tasks
    /// is blocked in `get`, none is starting, the cap allows no more, and a queued task could
    /// run on the free resources. The caller then starts one worker beyond the cap, so the cap
    /// cannot deadlock a program whose blocked tasks wait for work none of them can run (a
    /// chain of inputs, say); Ray's limit is soft for the same reason. Two ticks, so that a
    /// blocked task whose values are on their way is not mistaken for a stall.
    pub(crate) fn stalled(&mut self) -> bool {
        let now = self.task_workers() >= self.max_workers
            && self.all_blocked()
            && self.shapes.iter().any(|shape| self.can_lease(shape));
        let due = now && self.stalled_seen;
        self.stalled_seen = now && !due;
        due
    }

    /// Gives back the memory of a burst of queued tasks once they are gone (see
    /// [`crate::proto::shrink`]). Returns whether it freed anything.
    pub(crate) fn compact(&mut self) -> bool {
        // Candidates whose task ended while nothing could run on top.
        let demands = &self.demands;
        for queue in self.nestable.values_mut() {
            queue.retain(|t| demands.contains_key(t));
        }
        self.nestable.retain(|_, queue| !queue.is_empty());
        self.nestable_set.retain(|t| demands.contains_key(t));
        crate::proto::shrink(&mut self.demands)
            | crate::proto::shrink(&mut self.awaited_by)
            | crate::proto::shrink(&mut self.nestable_set)
    }

    /// Idle workers beyond the soft limit, highest numbers first: candidates to stop.
    pub(crate) fn surplus_idle_workers(&self) -> Vec<WorkerId> {
        let mut idle: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| matches!(w, WorkerState::Idle))
            .map(|(id, _)| *id)
            .collect();
        idle.sort_unstable_by(|a, b| b.cmp(a));
        let surplus = self.active_workers().saturating_sub(self.soft_limit);
        idle.truncate(surplus);
        idle
    }

    fn idle_worker(&self) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| matches!(w, WorkerState::Idle))
            .map(|(id, _)| *id)
            .min()
    }

    /// Of the first [`PIPELINE_LOOKAHEAD`] tasks queued for `shape`, the first that a leased
    /// worker can take in its pipeline: its place in the queue, and that worker.
    fn pipeline_pick(&self, shape: &Resources) -> Option<(usize, TaskId, WorkerId)> {
        let queue = self.queues.get(shape)?;
        (queue.iter().take(PIPELINE_LOOKAHEAD).enumerate())
            .find_map(|(at, &task)| Some((at, task, self.least_loaded(shape, task)?)))
    }

    /// The leased worker of `shape` with the fewest tasks in flight, below the depth, where
    /// `task` may be pipelined: not its submitter's own (busy with the task that submitted it),
    /// and, for a lease ask, not one already leased to the same owner (that owner pipelines
    /// down the lease it has).
    fn least_loaded(&self, shape: &Resources, task: TaskId) -> Option<WorkerId> {
        let ask = self.exclusive.contains(&task);
        let leased_to_owner = |inflight: &VecDeque<TaskId>| {
            ask && (inflight.iter()).any(|t| t.owner == task.owner && self.exclusive.contains(t))
        };
        self.workers
            .iter()
            .filter(|(id, _)| **id != task.owner)
            .filter_map(|(id, w)| match w {
                WorkerState::Leased {
                    base,
                    inflight,
                    pinned: false,
                    nested,
                } if !base.blocked
                    && nested.is_empty()
                    && base.demand == *shape
                    && inflight.len() < self.max_inflight
                    && !leased_to_owner(inflight) =>
                {
                    Some((inflight.len(), *id))
                }
                _ => None,
            })
            .min()
            .map(|(_, id)| id)
    }
}

/// Where `task` is in `queue`, looked for from both ends at once: a task a blocked worker
/// waits for was queued last when the worker had just submitted it, and is near the front
/// once the queue ahead of it ran (a search from one end only made each nested run of a large
/// fan-out cost the whole queue).
fn position_from_either_end(queue: &VecDeque<TaskId>, task: TaskId) -> Option<usize> {
    let len = queue.len();
    (0..len.div_ceil(2)).find_map(|i| {
        let back = len - 1 - i;
        if queue[back] == task {
            Some(back)
        } else {
            (queue[i] == task).then_some(i)
        }
    })
}

/// What became of an awaited task [`Scheduler::nest`] looked at.
enum Nesting {
    /// It runs on top of its worker, at this depth.
    Placed(u32),
    /// Not now: its shape does not fit, or a task below the innermost awaits it.
    Later,
    /// Not any more: it resumed, ended, runs elsewhere or is awaited by no one.
    Never,
}

/// What a running task holds of the node's resources: a blocked one gave its CPUs back.
fn held_by(frame: &Frame) -> Resources {
    let mut held = frame.demand.clone();
    if frame.blocked {
        held.cpu = Amount::ZERO;
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_found_from_either_end_of_its_queue() {
        let queue: VecDeque<TaskId> = (1..=5).map(t).collect();
        for (seq, at) in [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)] {
            assert_eq!(position_from_either_end(&queue, t(seq)), Some(at));
        }
        assert_eq!(position_from_either_end(&queue, t(9)), None);
        assert_eq!(position_from_either_end(&VecDeque::new(), t(1)), None);
    }

    fn t(seq: u64) -> TaskId {
        TaskId::new(0, seq)
    }

    fn cpus(n: f64) -> Resources {
        Resources::cpus(n).expect("valid")
    }

    /// A node of `n` CPUs with `n` workers up and idle.
    fn node(n: usize, depth: usize) -> (Scheduler, Vec<WorkerId>) {
        let mut s = Scheduler::new(cpus(n as f64), depth, n, 4 * n);
        let workers: Vec<WorkerId> = (0..n).map(|_| s.worker_starting()).collect();
        for &w in &workers {
            s.worker_ready(w);
        }
        (s, workers)
    }

    /// A node of `n` CPUs with `n` workers up and idle, and no room for more processes.
    fn full_node(n: usize) -> (Scheduler, Vec<WorkerId>) {
        let mut s = Scheduler::new(cpus(n as f64), 4, n, n);
        let workers: Vec<WorkerId> = (0..n).map(|_| s.worker_starting()).collect();
        for &w in &workers {
            s.worker_ready(w);
        }
        (s, workers)
    }

    fn dispatched(actions: &[Action]) -> Vec<(WorkerId, Vec<TaskId>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch { worker, tasks } => Some((*worker, tasks.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn leases_first_then_pipelines_evenly_up_to_the_depth() {
        let (mut s, w) = node(2, 2);
        for i in 0..6 {
            assert_eq!(s.submit(t(i), cpus(1.0)), Admission::Queued);
        }
        let actions = s.schedule();
        assert_eq!(
            dispatched(&actions),
            vec![(w[0], vec![t(0), t(2)]), (w[1], vec![t(1), t(3)])],
            "one lease per CPU, then round robin up to depth 2"
        );
        assert_eq!(s.available().cpu, Amount::ZERO);
        // Two remain queued until a slot frees.
        s.task_done(w[0], t(0));
        assert_eq!(dispatched(&s.schedule()), vec![(w[0], vec![t(4)])]);
    }

    #[test]
    fn nothing_is_pipelined_behind_its_own_submitters_task() {
        // Both CPUs leased, w[0] running its parent task: the children it submits go down
        // w[1]'s pipeline only (w[0] may work on without waiting, and never reach them).
        let (mut s, w) = node(2, 4);
        s.submit(t(1), cpus(1.0));
        s.submit(t(2), cpus(1.0));
        s.schedule();
        let child = |seq| TaskId::new(w[0], seq);
        for i in 0..4 {
            s.submit(child(i), cpus(1.0));
        }
        assert_eq!(
            dispatched(&s.schedule()),
            vec![(w[1], vec![child(0), child(1), child(2)])],
            "up to the depth, on the other worker only"
        );
        assert_eq!(
            s.pending(),
            vec![(cpus(1.0), 1, false)],
            "the fourth waits for room"
        );
    }

    #[test]
    fn an_owner_gets_one_lease_per_worker() {
        // A task on `a` owns its children: its first ask leases the other worker, `b`; its
        // second is not pipelined onto `b` (it pipelines down the lease it has) nor behind
        // its own task, but waits for a worker (here `b` again, once given back).
        let (mut s, _) = node(2, 4);
        s.submit(t(1), cpus(1.0));
        let sent = dispatched(&s.schedule());
        let a = sent[0].0;
        let first = TaskId::new(a, u64::MAX - 1);
        s.submit_exclusive(first, cpus(1.0));
        let sent = dispatched(&s.schedule());
        assert_eq!(sent.len(), 1, "{sent:?}");
        let b = sent[0].0;
        assert_ne!(a, b);
        let second = TaskId::new(a, u64::MAX - 2);
        s.submit_exclusive(second, cpus(1.0));
        assert_eq!(
            dispatched(&s.schedule()),
            Vec::new(),
            "the second ask waits"
        );
        // Another owner's ask may be pipelined meanwhile.
        let theirs = TaskId::new(a + 100, u64::MAX - 1);
        s.submit_exclusive(theirs, cpus(1.0));
        let sent = dispatched(&s.schedule());
        assert!(
            sent.iter().any(|(_, tasks)| tasks == &vec![theirs]),
            "{sent:?}"
        );
        s.task_done(b, first);
        assert_eq!(dispatched(&s.schedule()), vec![(b, vec![second])]);
    }

    #[test]
    fn a_lease_is_returned_when_its_worker_runs_dry() {
        let (mut s, w) = node(1, 4);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        s.task_done(w[0], t(1));
        assert_eq!(s.available(), &cpus(1.0));
        // A different shape can now lease the same worker.
        let mut half = cpus(0.5);
        half.set("GPU", 0.0).expect("valid");
        s.submit(t(2), half.clone());
        assert_eq!(dispatched(&s.schedule()), vec![(w[0], vec![t(2)])]);
        assert_eq!(s.available(), &cpus(0.5));
    }

    #[test]
    fn workers_are_started_for_leases_and_nothing_is_piled_on_meanwhile() {
        let mut s = Scheduler::new(cpus(2.0), 8, 2, 8);
        for i in 0..4 {
            s.submit(t(i), cpus(1.0));
        }
        let actions = s.schedule();
        assert_eq!(actions, vec![Action::StartWorker, Action::StartWorker]);
        let a = s.worker_starting();
        let b = s.worker_starting();
        s.worker_ready(a);
        // One worker is up, one still starting: lease the first, do not pipeline yet.
        assert_eq!(dispatched(&s.schedule()), vec![(a, vec![t(0)])]);
        s.worker_ready(b);
        assert_eq!(
            dispatched(&s.schedule()),
            vec![(a, vec![t(2)]), (b, vec![t(1), t(3)])]
        );
    }

    #[test]
    fn a_blocked_worker_gives_back_its_cpu_and_queue_and_repays_on_unblock() {
        let (mut s, w) = node(1, 4);
        for i in 0..3 {
            s.submit(t(i), cpus(1.0));
        }
        assert_eq!(
            dispatched(&s.schedule()),
            vec![(w[0], vec![t(0), t(1), t(2)])]
        );
        // t0 blocks in get; t1 and t2 come back.
        s.worker_blocked(w[0], 0, &[t(1), t(2)], &[]);
        assert_eq!(s.available(), &cpus(1.0));
        assert_eq!(
            s.schedule(),
            vec![Action::StartWorker],
            "a new worker for the freed CPU"
        );
        let w2 = s.worker_starting();
        s.worker_ready(w2);
        assert_eq!(dispatched(&s.schedule()), vec![(w2, vec![t(1), t(2)])]);
        // t0 resumes while w2 holds the CPU: oversubscribed, repaid when a lease ends.
        s.worker_unblocked(w[0], 0);
        assert_eq!(s.available().cpu, Amount::ZERO);
        s.task_done(w2, t(1));
        s.task_done(w2, t(2));
        assert_eq!(
            s.available().cpu,
            Amount::ZERO,
            "the first release repays the debt"
        );
        s.task_done(w[0], t(0));
        assert_eq!(s.available(), &cpus(1.0));
    }

    #[test]
    fn a_dead_worker_returns_its_started_task_and_requeues_the_rest() {
        let (mut s, w) = node(1, 4);
        for i in 0..3 {
            s.submit(t(i), cpus(1.0));
        }
        s.schedule();
        let removed = s.remove_worker(w[0]);
        assert_eq!((removed.started, removed.nested), (Some(t(0)), vec![]));
        assert_eq!(removed.requeued, vec![t(1), t(2)]);
        assert_eq!(s.available(), &cpus(1.0));
        // t0 is the caller's to retry; t1 and t2 are queued again, in order.
        s.submit(t(0), cpus(1.0));
        assert_eq!(s.schedule(), vec![Action::StartWorker]);
        let w2 = s.worker_starting();
        s.worker_ready(w2);
        assert_eq!(
            dispatched(&s.schedule()),
            vec![(w2, vec![t(1), t(2), t(0)])]
        );
    }

    #[test]
    fn infeasible_demands_wait_and_cancel_finds_tasks_where_they_are() {
        let (mut s, w) = node(1, 4);
        assert_eq!(s.submit(t(9), cpus(4.0)), Admission::Infeasible);
        s.submit(t(1), cpus(1.0));
        s.submit(t(2), cpus(1.0));
        s.submit(t(3), cpus(1.0));
        let mut tpu = Resources::default();
        tpu.set("tpu", 1.0).expect("valid");
        assert_eq!(s.submit(t(4), tpu), Admission::Infeasible);
        s.schedule();
        assert_eq!(
            s.locate_for_cancel(t(1)),
            Placement::OnWorker {
                worker: w[0],
                started: true
            }
        );
        assert_eq!(
            s.locate_for_cancel(t(2)),
            Placement::OnWorker {
                worker: w[0],
                started: false
            }
        );
        assert_eq!(s.locate_for_cancel(t(9)), Placement::Queued);
        assert_eq!(s.locate_for_cancel(t(9)), Placement::Absent);
        assert_eq!(s.drain_queued(), vec![t(4)]);
    }

    #[test]
    fn idle_workers_beyond_the_soft_limit_are_surplus() {
        let (mut s, w) = node(1, 4);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        s.worker_blocked(w[0], 0, &[], &[]);
        let extra: Vec<WorkerId> = (0..3).map(|_| s.worker_starting()).collect();
        for &e in &extra {
            s.worker_ready(e);
        }
        assert_eq!(
            s.surplus_idle_workers(),
            vec![extra[2], extra[1]],
            "one may stay"
        );
        s.worker_unblocked(w[0], 0);
        assert_eq!(
            s.surplus_idle_workers(),
            extra.iter().rev().copied().collect::<Vec<_>>()
        );
    }

    #[test]
    fn empty_demands_are_bounded_by_the_soft_limit() {
        let (mut s, w) = node(2, 100);
        for i in 0..10 {
            s.submit(t(i), Resources::default());
        }
        let d = dispatched(&s.schedule());
        assert_eq!(d.len(), 2, "no new workers beyond the two: {d:?}");
        assert_eq!(d.iter().map(|(_, ts)| ts.len()).sum::<usize>(), 10);
        assert!(d.iter().all(|(worker, _)| w.contains(worker)));
    }

    fn nests(actions: &[Action]) -> Vec<(WorkerId, TaskId, u32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Nest {
                    worker,
                    task,
                    depth,
                } => Some((*worker, *task, *depth)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn below_the_cap_a_new_worker_takes_what_a_blocked_one_waits_for() {
        let (mut s, w) = node(1, 4);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        s.submit(t(2), cpus(1.0));
        s.worker_blocked(w[0], 0, &[], &[t(2)]);
        assert_eq!(s.schedule(), vec![Action::StartWorker]);
        let w2 = s.worker_starting();
        assert!(
            s.schedule().is_empty(),
            "nothing runs on top while one starts"
        );
        s.worker_ready(w2);
        assert_eq!(dispatched(&s.schedule()), vec![(w2, vec![t(2)])]);
    }

    #[test]
    fn a_blocked_worker_runs_the_tasks_it_waits_for_on_top_depth_first() {
        let (mut s, w) = full_node(1);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        // t1 submits t2 and t3 and waits for both.
        s.submit(t(2), cpus(1.0));
        s.submit(t(3), cpus(1.0));
        s.worker_blocked(w[0], 0, &[], &[t(2), t(3)]);
        let actions = s.schedule();
        assert_eq!(nests(&actions), vec![(w[0], t(2), 0)], "one at a time");
        assert!(!actions.contains(&Action::StartWorker), "{actions:?}");
        assert_eq!(
            s.available().cpu,
            Amount::ZERO,
            "the nested task holds the CPU"
        );
        // t2 blocks on t4 (its child): t4 runs on top of it, then t3 after t2 ends.
        s.submit(t(4), cpus(1.0));
        s.worker_blocked(w[0], 1, &[], &[t(4)]);
        assert_eq!(nests(&s.schedule()), vec![(w[0], t(4), 1)]);
        s.task_done(w[0], t(4));
        assert!(
            nests(&s.schedule()).is_empty(),
            "t2 is still blocked on top"
        );
        s.worker_unblocked(w[0], 1);
        s.task_done(w[0], t(2));
        assert_eq!(nests(&s.schedule()), vec![(w[0], t(3), 0)]);
        s.task_done(w[0], t(3));
        s.worker_unblocked(w[0], 0);
        s.task_done(w[0], t(1));
        assert_eq!(s.available(), &cpus(1.0), "every lease repaid");
        assert_eq!(s.load(), 0.0);
    }

    #[test]
    fn a_nested_task_handed_back_is_queued_again_and_its_resources_return() {
        let (mut s, w) = full_node(1);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        s.submit(t(2), cpus(1.0));
        s.worker_blocked(w[0], 0, &[], &[t(2)]);
        assert_eq!(nests(&s.schedule()), vec![(w[0], t(2), 0)]);
        // The worker resumed before t2 arrived: it bounces t2.
        s.worker_unblocked(w[0], 0);
        s.bounced(w[0], &[t(2)]);
        assert_eq!(s.available().cpu, Amount::ZERO, "t1 runs again");
        assert_eq!(s.locate_for_cancel(t(2)), Placement::Queued);
    }

    #[test]
    fn only_what_the_innermost_blocked_task_waits_for_runs_on_it() {
        let (mut s, w) = full_node(2);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        s.submit(t(9), cpus(1.0)); // not awaited by t1
        s.worker_blocked(w[0], 0, &[], &[t(2)]);
        let actions = s.schedule();
        assert!(nests(&actions).is_empty());
        assert_eq!(dispatched(&actions), vec![(w[1], vec![t(9)])]);
    }

    #[test]
    fn task_workers_are_capped_and_the_cap_cannot_deadlock() {
        // 1 CPU, at most 2 processes for tasks.
        let mut s = Scheduler::new(cpus(1.0), 4, 1, 2);
        let a = s.worker_starting();
        s.worker_ready(a);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        // t1 blocks on t2, which waits on an input: nothing it could run yet. A task of the
        // driver takes the CPU on a second worker.
        s.worker_blocked(a, 0, &[], &[t(2)]);
        s.submit(t(5), cpus(1.0));
        assert_eq!(s.schedule(), vec![Action::StartWorker]);
        let b = s.worker_starting();
        s.worker_ready(b);
        s.schedule();
        s.worker_blocked(b, 0, &[], &[t(6)]);
        // At the cap, both blocked; t7 is queued, awaited by neither: no new process at once
        // (their values may be on the way), but one when the stall lasts two idle ticks.
        s.submit(t(7), cpus(1.0));
        assert!(!s.schedule().contains(&Action::StartWorker));
        assert!(!s.stalled(), "the first tick only notes it");
        assert!(s.stalled(), "the second starts one beyond the cap");
        assert!(!s.stalled(), "then notes again");
        let c = s.worker_starting();
        assert!(!s.stalled(), "not while one starts");
        s.submit(t(8), cpus(1.0));
        assert!(!s.schedule().contains(&Action::StartWorker));
        s.worker_ready(c);
        assert_eq!(dispatched(&s.schedule()), vec![(c, vec![t(7), t(8)])]);
        // An actor's worker is not capped.
        s.submit_pinned(t(20), Resources::default());
        assert_eq!(s.schedule(), vec![Action::StartWorker]);
    }

    #[test]
    fn a_dead_worker_returns_its_nested_tasks_too() {
        let (mut s, w) = full_node(1);
        s.submit(t(1), cpus(1.0));
        s.schedule();
        s.submit(t(2), cpus(1.0));
        s.worker_blocked(w[0], 0, &[], &[t(2)]);
        s.schedule();
        let removed = s.remove_worker(w[0]);
        assert_eq!((removed.started, removed.nested), (Some(t(1)), vec![t(2)]));
        assert_eq!(s.available(), &cpus(1.0));
    }
}
