//! The node's local scheduler as a sans-IO state machine: tasks whose inputs are ready come in,
//! worker leases and dispatches go out. A worker leased for one resource shape is reused for
//! further tasks of that shape and, once no new lease can be granted, receives tasks pipelined
//! up to a depth. A worker blocked in `get` gives its CPUs back and hands back what it had queued,
//! so nested tasks cannot deadlock a full node.

use std::collections::{HashMap, VecDeque};

use prism_graph::{Amount, IdMap, Resources, TaskId};

/// A worker's number on this node (also its owner number).
pub(crate) type WorkerId = u32;

/// What the scheduler asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send these tasks, in order, to the worker.
    Dispatch {
        worker: WorkerId,
        tasks: Vec<TaskId>,
    },
    /// Start one more worker process.
    StartWorker,
}

/// Where a task was found when asked to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Waiting in the node's queue (now removed from it).
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

#[derive(Debug)]
enum WorkerState {
    Starting,
    Idle,
    Leased {
        demand: Resources,
        inflight: VecDeque<TaskId>,
        blocked: bool,
        /// Held by an actor for its lifetime: never shared, never returned when idle.
        pinned: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    total: Resources,
    available: Resources,
    /// CPU handed to unblocked workers beyond what was available (repaid on release).
    cpu_debt: u64,
    queues: HashMap<Resources, VecDeque<TaskId>>,
    /// Shapes in the order they first had work, for fairness between shapes.
    shapes: Vec<Resources>,
    demands: IdMap<TaskId, Resources>,
    infeasible: Vec<TaskId>,
    /// Actor creations waiting for a worker of their own, in order.
    pinned_queue: VecDeque<TaskId>,
    workers: IdMap<WorkerId, WorkerState>,
    next_worker: WorkerId,
    max_inflight: usize,
    soft_limit: usize,
}

impl Scheduler {
    /// A scheduler for a node of `total` resources, pipelining up to `max_inflight` tasks to a
    /// worker and keeping about `soft_limit` unblocked workers.
    #[cfg(test)]
    pub(crate) fn new(total: Resources, max_inflight: usize, soft_limit: usize) -> Self {
        Self::numbered(total, max_inflight, soft_limit, 0)
    }

    /// Like [`Scheduler::new`], numbering its workers from `base + 1` (so the workers of
    /// several nodes never share a number).
    pub(crate) fn numbered(
        total: Resources,
        max_inflight: usize,
        soft_limit: usize,
        base: WorkerId,
    ) -> Self {
        Scheduler {
            available: total.clone(),
            total,
            cpu_debt: 0,
            queues: HashMap::new(),
            shapes: Vec::new(),
            demands: IdMap::default(),
            infeasible: Vec::new(),
            pinned_queue: VecDeque::new(),
            workers: IdMap::default(),
            next_worker: base + 1,
            max_inflight: max_inflight.max(1),
            soft_limit: soft_limit.max(1),
        }
    }

    pub(crate) fn total(&self) -> &Resources {
        &self.total
    }

    pub(crate) fn available(&self) -> &Resources {
        &self.available
    }

    /// How busy the node is: tasks queued or sent to workers, per CPU (for choosing a node).
    pub(crate) fn load(&self) -> f64 {
        let queued: usize = self.queues.values().map(VecDeque::len).sum::<usize>()
            + self.pinned_queue.len()
            + self.infeasible.len();
        let running: usize = self
            .workers
            .values()
            .map(|w| match w {
                WorkerState::Leased { inflight, .. } => inflight.len(),
                _ => 0,
            })
            .sum();
        (queued + running) as f64 / self.total.cpu.as_f64().max(1.0)
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
        let Some(WorkerState::Leased {
            inflight,
            blocked,
            pinned,
            ..
        }) = self.workers.get_mut(&worker)
        else {
            return;
        };
        let Some(pos) = inflight.iter().position(|t| *t == task) else {
            return; // a stale report: the task was handed back and is elsewhere now
        };
        inflight.remove(pos);
        self.demands.remove(&task);
        if inflight.is_empty() && !*blocked && !*pinned {
            self.release_lease(worker);
        }
    }

    fn release_lease(&mut self, worker: WorkerId) {
        if let Some(state) = self.workers.get_mut(&worker)
            && let WorkerState::Leased {
                demand, blocked, ..
            } = std::mem::replace(state, WorkerState::Idle)
        {
            let mut give_back = demand;
            if blocked {
                give_back.cpu = Amount::ZERO;
            }
            self.give_back(&give_back);
        }
    }

    fn give_back(&mut self, resources: &Resources) {
        let mut resources = resources.clone();
        let repay = self.cpu_debt.min(resources.cpu.0);
        self.cpu_debt -= repay;
        resources.cpu.0 -= repay;
        self.available.add(&resources);
    }

    /// The worker's running task waits in `get`: its CPUs go back to the node and the tasks it
    /// had queued (`returned`) go back to the queue.
    pub(crate) fn worker_blocked(&mut self, worker: WorkerId, returned: &[TaskId]) {
        let Some(WorkerState::Leased {
            demand,
            inflight,
            blocked,
            ..
        }) = self.workers.get_mut(&worker)
        else {
            return;
        };
        if *blocked {
            return;
        }
        *blocked = true;
        inflight.retain(|t| !returned.contains(t));
        let cpu = Resources {
            cpu: demand.cpu,
            ..Resources::default()
        };
        self.give_back(&cpu);
        self.requeue(returned.iter().copied());
    }

    /// The worker's task resumes: it takes its CPUs again, even beyond what is available.
    pub(crate) fn worker_unblocked(&mut self, worker: WorkerId) {
        let Some(WorkerState::Leased {
            demand, blocked, ..
        }) = self.workers.get_mut(&worker)
        else {
            return;
        };
        if !*blocked {
            return;
        }
        *blocked = false;
        let need = demand.cpu.0;
        let have = self.available.cpu.0;
        self.available.cpu.0 = have.saturating_sub(need);
        self.cpu_debt += need.saturating_sub(have);
    }

    /// Tasks the worker received while blocked and handed back unrun.
    pub(crate) fn bounced(&mut self, worker: WorkerId, tasks: &[TaskId]) {
        if let Some(WorkerState::Leased { inflight, .. }) = self.workers.get_mut(&worker) {
            inflight.retain(|t| !tasks.contains(t));
        }
        self.requeue(tasks.iter().copied());
    }

    /// The worker process is gone (or stopped). Returns the task it had started, if any; the
    /// tasks it had queued but not started go back to the queue.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) -> Option<TaskId> {
        let inflight = match self.workers.get_mut(&worker) {
            Some(WorkerState::Leased { inflight, .. }) => std::mem::take(inflight),
            Some(_) => VecDeque::new(),
            None => return None,
        };
        if matches!(self.workers.get(&worker), Some(WorkerState::Leased { .. })) {
            self.release_lease(worker);
        }
        self.workers.remove(&worker);
        let mut inflight = inflight.into_iter();
        let started = inflight.next();
        self.requeue(inflight.collect::<Vec<_>>().into_iter());
        started
    }

    /// Sets `bundle` aside for a placement group: it leaves the free resources and comes back as
    /// `named` (the group's own names for it), which only the group's tasks demand. Tasks that
    /// were infeasible may fit the node now.
    pub(crate) fn reserve(&mut self, bundle: &Resources, named: &Resources) {
        self.available.subtract(bundle);
        self.total.add(named);
        self.available.add(named);
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
                demand, inflight, ..
            } = state
                && in_group(demand)
            {
                // Tasks pipelined behind the running one never start.
                queued.extend(inflight.drain(inflight.len().min(1)..));
                *demand = Resources::default();
                workers.push(worker);
            }
        }
        for task in &queued {
            self.demands.remove(task);
        }
        self.total.subtract(named);
        self.available.subtract(named);
        self.available.add(bundle);
        (queued, workers)
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
        for task in &tasks {
            self.demands.remove(task);
        }
        tasks
    }

    /// Takes a task out of the scheduler's hands for cancellation and says where it was.
    pub(crate) fn locate_for_cancel(&mut self, task: TaskId) -> Placement {
        let Some(demand) = self.demands.get(&task) else {
            return Placement::Absent;
        };
        if let Some(queue) = self.queues.get_mut(demand)
            && let Some(pos) = queue.iter().position(|t| *t == task)
        {
            queue.remove(pos);
            self.demands.remove(&task);
            return Placement::Queued;
        }
        if let Some(pos) = self.pinned_queue.iter().position(|t| *t == task) {
            self.pinned_queue.remove(pos);
            self.demands.remove(&task);
            return Placement::Queued;
        }
        if let Some(pos) = self.infeasible.iter().position(|t| *t == task) {
            self.infeasible.remove(pos);
            self.demands.remove(&task);
            return Placement::Queued;
        }
        for (&worker, state) in &self.workers {
            if let WorkerState::Leased { inflight, .. } = state
                && let Some(pos) = inflight.iter().position(|t| *t == task)
            {
                return Placement::OnWorker {
                    worker,
                    started: pos == 0,
                };
            }
        }
        Placement::Absent
    }

    /// Decides what to do now: leases, dispatches and worker starts.
    pub(crate) fn schedule(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut batches: HashMap<WorkerId, Vec<TaskId>> = HashMap::new();
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
            if !demand.fits_in(&self.available) {
                waiting.push_back(task);
                continue;
            }
            match self.idle_worker() {
                Some(worker) => {
                    self.available.subtract(&demand);
                    self.workers.insert(
                        worker,
                        WorkerState::Leased {
                            demand,
                            inflight: VecDeque::from([task]),
                            blocked: false,
                            pinned: true,
                        },
                    );
                    batches.entry(worker).or_default().push(task);
                }
                None => waiting.push_back(task),
            }
        }
        let unplaced = waiting
            .iter()
            .filter(|t| {
                self.demands
                    .get(t)
                    .is_some_and(|d| d.fits_in(&self.available))
            })
            .count();
        want_workers += unplaced.saturating_sub(starting);
        self.pinned_queue = waiting;
        for shape in self.shapes.clone() {
            while let Some(&task) = self.queues.get(&shape).and_then(VecDeque::front) {
                let fits = shape.fits_in(&self.available);
                if fits {
                    if let Some(worker) = self.idle_worker() {
                        self.available.subtract(&shape);
                        self.workers.insert(
                            worker,
                            WorkerState::Leased {
                                demand: shape.clone(),
                                inflight: VecDeque::from([task]),
                                blocked: false,
                                pinned: false,
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
                    let mut leases = 0;
                    while leases < room.min(queued) && shape.fits_in(&left) {
                        left.subtract(&shape);
                        leases += 1;
                    }
                    want_workers += leases.saturating_sub(starting + want_workers);
                    if starting + want_workers > 0 {
                        break;
                    }
                }
                match self.least_loaded(&shape) {
                    Some(worker) => {
                        if let Some(WorkerState::Leased { inflight, .. }) =
                            self.workers.get_mut(&worker)
                        {
                            inflight.push_back(task);
                        }
                        self.pop(&shape);
                        batches.entry(worker).or_default().push(task);
                    }
                    None => break,
                }
            }
        }
        for _ in 0..want_workers {
            actions.push(Action::StartWorker);
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_by_key(|(w, _)| *w);
        for (worker, tasks) in batches {
            actions.push(Action::Dispatch { worker, tasks });
        }
        actions
    }

    fn pop(&mut self, shape: &Resources) {
        if let Some(queue) = self.queues.get_mut(shape) {
            queue.pop_front();
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
                !matches!(
                    w,
                    WorkerState::Starting
                        | WorkerState::Leased { blocked: true, .. }
                        | WorkerState::Leased { pinned: true, .. }
                )
            })
            .count()
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

    fn least_loaded(&self, shape: &Resources) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter_map(|(id, w)| match w {
                WorkerState::Leased {
                    demand,
                    inflight,
                    blocked: false,
                    pinned: false,
                } if demand == shape && inflight.len() < self.max_inflight => {
                    Some((inflight.len(), *id))
                }
                _ => None,
            })
            .min()
            .map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64) -> TaskId {
        TaskId::new(0, seq)
    }

    fn cpus(n: f64) -> Resources {
        Resources::cpus(n).expect("valid")
    }

    /// A node of `n` CPUs with `n` workers up and idle.
    fn node(n: usize, depth: usize) -> (Scheduler, Vec<WorkerId>) {
        let mut s = Scheduler::new(cpus(n as f64), depth, n);
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
                Action::StartWorker => None,
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
        let mut s = Scheduler::new(cpus(2.0), 8, 2);
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
        s.worker_blocked(w[0], &[t(1), t(2)]);
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
        s.worker_unblocked(w[0]);
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
        assert_eq!(s.remove_worker(w[0]), Some(t(0)));
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
        s.worker_blocked(w[0], &[]);
        let extra: Vec<WorkerId> = (0..3).map(|_| s.worker_starting()).collect();
        for &e in &extra {
            s.worker_ready(e);
        }
        assert_eq!(
            s.surplus_idle_workers(),
            vec![extra[2], extra[1]],
            "one may stay"
        );
        s.worker_unblocked(w[0]);
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
}
