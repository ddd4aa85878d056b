//! The nodes a core schedules onto, each with its own local scheduler: the embedded node of a
//! local cluster, or the nodes of a cluster the driver joined. A task goes to the node it is
//! submitted from when that node can start it now; otherwise (or when its large arguments sit
//! elsewhere) to the node that fits it best: resources first, then queue length, then bytes of
//! its arguments already there (bottom-up scheduling, as in the Ray paper). Workers are numbered
//! by node (`node << 32`), so a worker's number tells its node.

use prism_graph::{IdSet, Resources, TaskId};

use crate::proto::scheduler::{Action, Admission, Placement, Removed, Scheduler, WorkerId};

/// A node's index in [`Nodes`].
pub(crate) type NodeIdx = usize;

/// Bits of a worker's number below its node's index (so a node may start 4 billion workers
/// over a job's life).
const NODE_SHIFT: u32 = 32;

/// The most nodes a core numbers over a job's life: every join counts, a node restarted
/// under its name too (a node killed every 3 s for a century stays below it).
pub(crate) const MAX_NODES: usize = u32::MAX as usize;

/// One node: its name, its scheduler and whether it still counts.
#[derive(Debug)]
pub(crate) struct NodeEntry {
    pub(crate) name: String,
    pub(crate) sched: Scheduler,
    pub(crate) alive: bool,
    /// It is leaving (`prism stop`, `prism drain`): it takes no new work and finishes or
    /// hands back what it has.
    pub(crate) draining: bool,
    /// Its scheduler changed since it last scheduled.
    dirty: bool,
    /// Its scheduler's load, as of its last change (placement reads every node's per task).
    load: std::cell::Cell<Option<f64>>,
}

impl NodeEntry {
    /// Whether new work may go there: it counts and is not leaving.
    pub(crate) fn takes_work(&self) -> bool {
        self.alive && !self.draining
    }

    fn load(&self) -> f64 {
        match self.load.get() {
            Some(load) => load,
            None => {
                let load = self.sched.load();
                self.load.set(Some(load));
                load
            }
        }
    }
}

/// The core's nodes.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    list: Vec<NodeEntry>,
    /// The nodes whose schedulers changed since they last scheduled: only they can decide
    /// anything new, so a settle costs the nodes an event touched, not the whole cluster.
    dirty: Vec<NodeIdx>,
}

/// The node a worker runs on.
pub(crate) fn node_of(worker: WorkerId) -> NodeIdx {
    (worker >> NODE_SHIFT) as NodeIdx
}

/// The numbers node `idx`'s daemon gives the workers it starts for leases of its own (see
/// [`crate::proto::pool`]): the upper half of the node's numbers, which the driver's own
/// numbering (from the bottom) never reaches.
pub(crate) fn pool_numbers(idx: NodeIdx) -> std::ops::Range<WorkerId> {
    let base = (idx as WorkerId) << NODE_SHIFT;
    let half = 1 << (NODE_SHIFT - 1);
    base + half..base + 2 * half
}

impl Nodes {
    /// Adds a node of `total` resources; returns its index.
    pub(crate) fn add(
        &mut self,
        name: String,
        total: Resources,
        max_inflight: usize,
        soft_limit: usize,
        max_workers: usize,
    ) -> NodeIdx {
        let idx = self.list.len();
        let base = (idx as WorkerId) << NODE_SHIFT;
        self.list.push(NodeEntry {
            name,
            sched: Scheduler::numbered(total, max_inflight, soft_limit, max_workers, base),
            alive: true,
            draining: false,
            dirty: false,
            load: std::cell::Cell::new(None),
        });
        self.touch(idx);
        idx
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn get(&self, idx: NodeIdx) -> Option<&NodeEntry> {
        self.list.get(idx)
    }

    /// How busy node `idx` is (see [`Scheduler::load`]; 0 for an unknown node).
    pub(crate) fn load_of(&self, idx: NodeIdx) -> f64 {
        self.list.get(idx).map_or(0.0, |n| n.load())
    }

    /// Where a task that no node taking work could ever fit waits: with a node that takes
    /// work (it keeps the task as infeasible until the cluster grows), else with a lost one
    /// (a node that joins takes it, see [`Nodes::take_infeasible`]); never with a draining
    /// node, which would start it.
    pub(crate) fn parking(&self) -> NodeIdx {
        (self.list.iter().position(NodeEntry::takes_work))
            .or_else(|| self.list.iter().position(|n| !n.alive))
            .unwrap_or(0)
    }

    /// The live nodes.
    pub(crate) fn live(&self) -> impl Iterator<Item = NodeIdx> + '_ {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alive)
            .map(|(idx, _)| idx)
    }

    pub(crate) fn name(&self, idx: NodeIdx) -> &str {
        self.list.get(idx).map_or("?", |n| n.name.as_str())
    }

    /// Notes that node `idx`'s scheduler changes (it schedules at the next settle).
    fn touch(&mut self, idx: NodeIdx) {
        let Some(node) = self.list.get_mut(idx) else {
            return;
        };
        node.load.set(None);
        if !node.dirty {
            node.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Node `idx`'s scheduler, to change.
    fn at(&mut self, idx: NodeIdx) -> &mut Scheduler {
        self.touch(idx);
        &mut self.list[idx].sched
    }

    /// The scheduler of `worker`'s node, to change.
    fn sched(&mut self, worker: WorkerId) -> Option<&mut Scheduler> {
        let idx = node_of(worker);
        self.touch(idx);
        self.list.get_mut(idx).map(|n| &mut n.sched)
    }

    /// The task `worker` runs now (see [`Scheduler::running_task`]).
    pub(crate) fn running_task(&self, worker: WorkerId) -> Option<TaskId> {
        self.list.get(node_of(worker))?.sched.running_task(worker)
    }

    /// The whole cluster's resources (live nodes that are not leaving).
    pub(crate) fn total(&self) -> Resources {
        self.sum(|s| s.total())
    }

    /// What is free on the live nodes that are not leaving.
    pub(crate) fn available(&self) -> Resources {
        self.sum(|s| s.available())
    }

    fn sum(&self, part: impl Fn(&Scheduler) -> &Resources) -> Resources {
        let mut all = Resources::default();
        for node in self.list.iter().filter(|n| n.takes_work()) {
            all.add(part(&node.sched));
        }
        all
    }

    /// Chooses the node for a task demanding `demand`, submitted from `home` (if it runs on a
    /// node), where `bytes_on` says how many bytes of its arguments each node holds. `None`
    /// when no live node could ever fit it.
    pub(crate) fn choose(
        &self,
        demand: &Resources,
        home: Option<NodeIdx>,
        bytes_on: impl Fn(NodeIdx) -> u64,
    ) -> Option<NodeIdx> {
        let fits =
            |i: NodeIdx| self.list[i].takes_work() && demand.fits_in(self.list[i].sched.total());
        // Whether the node could start it now: free resources and a queue shorter than its CPUs.
        let can_start = |i: NodeIdx| {
            let node = &self.list[i];
            node.sched.can_start(demand) && node.load() < 1.0
        };
        let nodes = (0..self.list.len()).filter(|&i| fits(i));
        if let Some(home) = home.filter(|&h| h < self.list.len() && fits(h))
            && can_start(home)
            && nodes.clone().all(|i| bytes_on(home) >= bytes_on(i))
        {
            return Some(home);
        }
        // The best: one that can start it now, then the least loaded, then the most bytes of
        // its arguments (each node's key computed once; the first of equals).
        let mut best: Option<((bool, f64, u64), NodeIdx)> = None;
        for i in nodes {
            let key = (!can_start(i), self.list[i].load(), bytes_on(i));
            let better = match &best {
                None => true,
                Some((b, _)) => key
                    .0
                    .cmp(&b.0)
                    .then(key.1.total_cmp(&b.1))
                    .then(b.2.cmp(&key.2))
                    .is_lt(),
            };
            if better {
                best = Some((key, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Node `idx` is shared by its daemon among several jobs: its scheduler leases only what
    /// the daemon grants (see [`Scheduler::gated`]).
    pub(crate) fn gate(&mut self, idx: NodeIdx) {
        self.at(idx).gated();
    }

    /// Node `idx` counts whole for this job (see [`Nodes::gate`]).
    pub(crate) fn ungate(&mut self, idx: NodeIdx) {
        self.at(idx).ungated();
    }

    /// Node `idx` granted `shape`.
    pub(crate) fn granted(&mut self, idx: NodeIdx, shape: &Resources) {
        if idx < self.list.len() {
            self.at(idx).granted(shape);
        }
    }

    /// Node `idx` refused to grant `shape`.
    pub(crate) fn refused(&mut self, idx: NodeIdx, shape: &Resources) {
        if idx < self.list.len() {
            self.at(idx).refused(shape);
        }
    }

    /// Node `idx` asks for the grants this job does not use, and for those beyond `keep`.
    pub(crate) fn reclaim(&mut self, idx: NodeIdx, keep: Resources) {
        if idx < self.list.len() {
            self.at(idx).reclaim(keep);
        }
    }

    /// The live nodes' grants at the idle tick (see [`Scheduler::tick_grants`]); a node that
    /// refused an ask, or that the job shrank on, schedules again (it may be asked again now).
    /// Returns what each node gets back.
    pub(crate) fn tick_grants(&mut self) -> Vec<(NodeIdx, Resources)> {
        let mut all = Vec::new();
        let mut again = Vec::new();
        for (i, node) in self.list.iter_mut().enumerate().filter(|(_, n)| n.alive) {
            let (back, refused) = node.sched.tick_grants();
            all.extend(back.map(|b| (i, b)));
            if refused {
                again.push(i);
            }
        }
        for i in again {
            self.touch(i);
        }
        all
    }

    /// Submits a ready task to node `idx`.
    pub(crate) fn submit(&mut self, idx: NodeIdx, task: TaskId, demand: Resources) -> Admission {
        self.at(idx).submit(task, demand)
    }

    /// Submits to node `idx` a task only an idle worker may take (an owner's lease ask).
    pub(crate) fn submit_exclusive(
        &mut self,
        idx: NodeIdx,
        task: TaskId,
        demand: Resources,
    ) -> Admission {
        self.at(idx).submit_exclusive(task, demand)
    }

    /// Submits an actor creation to node `idx`.
    pub(crate) fn submit_pinned(
        &mut self,
        idx: NodeIdx,
        task: TaskId,
        demand: Resources,
    ) -> Admission {
        self.at(idx).submit_pinned(task, demand)
    }

    pub(crate) fn worker_starting(&mut self, idx: NodeIdx) -> WorkerId {
        self.at(idx).worker_starting()
    }

    /// Worker `worker` of node `idx`'s pool takes the place of the start reserved as
    /// `starting` there (see [`Scheduler::adopt`]).
    pub(crate) fn adopt(
        &mut self,
        idx: NodeIdx,
        starting: WorkerId,
        worker: WorkerId,
        ready: bool,
    ) {
        self.at(idx).adopt(starting, worker, ready);
    }

    /// The idle workers of node `idx`.
    pub(crate) fn idle_workers(&self, idx: NodeIdx) -> Vec<WorkerId> {
        self.get(idx)
            .map_or_else(Vec::new, |n| n.sched.idle_workers().collect())
    }

    pub(crate) fn worker_ready(&mut self, worker: WorkerId) {
        if let Some(s) = self.sched(worker) {
            s.worker_ready(worker);
        }
    }

    pub(crate) fn task_done(&mut self, worker: WorkerId, task: TaskId) {
        if let Some(s) = self.sched(worker) {
            s.task_done(worker, task);
        }
    }

    pub(crate) fn worker_blocked(
        &mut self,
        worker: WorkerId,
        depth: u32,
        returned: &[TaskId],
        awaiting: &[TaskId],
    ) {
        if let Some(s) = self.sched(worker) {
            s.worker_blocked(worker, depth, returned, awaiting);
        }
    }

    pub(crate) fn worker_unblocked(&mut self, worker: WorkerId, depth: u32) {
        if let Some(s) = self.sched(worker) {
            s.worker_unblocked(worker, depth);
        }
    }

    pub(crate) fn bounced(&mut self, worker: WorkerId, tasks: &[TaskId]) {
        if let Some(s) = self.sched(worker) {
            s.bounced(worker, tasks);
        }
    }

    pub(crate) fn remove_worker(&mut self, worker: WorkerId) -> Removed {
        self.sched(worker)
            .map(|s| s.remove_worker(worker))
            .unwrap_or_default()
    }

    /// The node whose scheduler holds `task`, and where there.
    pub(crate) fn locate(&self, task: TaskId) -> Option<(NodeIdx, Placement)> {
        self.list
            .iter()
            .enumerate()
            .map(|(idx, n)| (idx, n.sched.locate(task)))
            .find(|(_, at)| *at != Placement::Absent)
    }

    pub(crate) fn locate_for_cancel(&mut self, task: TaskId) -> Placement {
        for idx in 0..self.list.len() {
            match self.list[idx].sched.locate_for_cancel(task) {
                Placement::Absent => continue,
                found => {
                    self.touch(idx);
                    return found;
                }
            }
        }
        Placement::Absent
    }

    /// Reserves a placement group's bundle on node `idx` (see [`Scheduler::reserve`]).
    pub(crate) fn reserve(&mut self, idx: NodeIdx, bundle: &Resources, named: &Resources) {
        self.at(idx).reserve(bundle, named);
    }

    /// Ends a bundle's reservation on node `idx` (see [`Scheduler::unreserve`]).
    pub(crate) fn unreserve(
        &mut self,
        idx: NodeIdx,
        bundle: &Resources,
        named: &Resources,
        marker: &str,
    ) -> (Vec<TaskId>, Vec<WorkerId>) {
        self.at(idx).unreserve(bundle, named, marker)
    }

    /// Empties the queues of every node (or of one) and returns what was in them.
    pub(crate) fn drain_queued(&mut self, only: Option<NodeIdx>) -> Vec<TaskId> {
        let mut all = Vec::new();
        for idx in 0..self.list.len() {
            if only.is_none_or(|o| o == idx) {
                all.extend(self.at(idx).drain_queued());
            }
        }
        all
    }

    /// Node `idx` is leaving: it takes no new work. False if it already was (or is gone).
    pub(crate) fn start_draining(&mut self, idx: NodeIdx) -> bool {
        match self.list.get_mut(idx) {
            Some(node) if node.alive && !node.draining => {
                node.draining = true;
                self.touch(idx);
                true
            }
            _ => false,
        }
    }

    /// Whether node `idx` is leaving and has no task left to run (actors aside).
    pub(crate) fn drained(&self, idx: NodeIdx) -> bool {
        self.list
            .get(idx)
            .is_some_and(|n| n.alive && n.draining && !n.sched.runs_tasks())
    }

    /// Node `idx`'s workers with tasks sent to them that are not blocked in `get`, with how
    /// many.
    pub(crate) fn working(&self, idx: NodeIdx) -> impl Iterator<Item = (WorkerId, usize)> + '_ {
        self.list
            .get(idx)
            .into_iter()
            .flat_map(|n| n.sched.working())
    }

    /// The tasks waiting in node `idx`'s workers' pipelines (not started), by worker.
    pub(crate) fn pipelined_on(&self, idx: NodeIdx) -> Vec<(WorkerId, Vec<TaskId>)> {
        self.list.get(idx).map_or_else(Vec::new, |n| {
            n.sched
                .pipelined()
                .into_iter()
                .map(|(worker, _, tasks)| (worker, tasks))
                .collect()
        })
    }

    /// A node is gone: it takes no more work.
    pub(crate) fn mark_dead(&mut self, idx: NodeIdx) {
        if let Some(node) = self.list.get_mut(idx) {
            node.alive = false;
        }
    }

    /// Whether a scheduler changed since the nodes last scheduled.
    pub(crate) fn changed(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// What the live nodes' schedulers decide now, with the node it concerns (in the order of
    /// the nodes). Only nodes whose schedulers changed since their last turn are asked.
    pub(crate) fn schedule(&mut self) -> Vec<(NodeIdx, Action)> {
        let mut all = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        for &i in &dirty {
            let node = &mut self.list[i];
            node.dirty = false;
            node.load.set(None);
            if node.alive {
                all.extend(node.sched.schedule().into_iter().map(|a| (i, a)));
            }
        }
        // Keep the list's memory for the next settle.
        dirty.clear();
        self.dirty = dirty;
        all
    }

    /// What waits for resources on every node, by demand shape (see [`Scheduler::pending`]).
    pub(crate) fn pending(&self) -> Vec<(Resources, u32, bool)> {
        let mut all: Vec<(Resources, u32, bool)> = Vec::new();
        for node in &self.list {
            for (demand, count, infeasible) in node.sched.pending() {
                match all
                    .iter_mut()
                    .find(|(d, _, i)| *d == demand && *i == infeasible)
                {
                    Some(entry) => entry.1 += count,
                    None => all.push((demand, count, infeasible)),
                }
            }
        }
        all
    }

    /// What the job holds on each live node that it uses at all.
    pub(crate) fn used(&self) -> Vec<(NodeIdx, Resources)> {
        let mut all = Vec::new();
        for (i, node) in self.list.iter().enumerate().filter(|(_, n)| n.alive) {
            let mut used = node.sched.total().clone();
            used.subtract(node.sched.available());
            if used.iter().next().is_some() {
                all.push((i, used));
            }
        }
        all
    }

    /// The live nodes stalled at the cap on workers (see [`Scheduler::stalled`]).
    pub(crate) fn stalled(&mut self) -> Vec<NodeIdx> {
        let stalled: Vec<NodeIdx> = (0..self.list.len())
            .filter(|&i| self.list[i].alive && self.list[i].sched.stalled())
            .collect();
        for &idx in &stalled {
            self.touch(idx);
        }
        stalled
    }

    /// Queued tasks to move: those of live nodes that cannot start them now, as many as
    /// the other live nodes could start at once, and actor creations waiting where another
    /// node has room (spillback of queued work, for a node whose resources went to actors or
    /// whose workers are slow). The caller places them again.
    pub(crate) fn steal(&mut self, recalling: &IdSet<TaskId>) -> Stolen {
        let live: Vec<NodeIdx> = (0..self.list.len())
            .filter(|&i| self.list[i].takes_work())
            .collect();
        // Nothing can move while every node is busy (each node's load is cached).
        if !live.iter().any(|&i| self.list[i].load() < 1.0) {
            return Stolen::default();
        }
        let mut stuck = Vec::new();
        let mut pinned = Vec::new();
        for &idx in &live {
            let sched = &self.list[idx].sched;
            stuck.extend(sched.stuck().into_iter().map(|(s, n)| (idx, s, n)));
            pinned.extend(sched.stuck_pinned().into_iter().map(|(t, d)| (idx, t, d)));
        }
        let pipelined: Vec<(NodeIdx, WorkerId, Resources, Vec<TaskId>)> = live
            .iter()
            .flat_map(|&idx| {
                let sched = &self.list[idx].sched;
                sched
                    .pipelined()
                    .into_iter()
                    .map(move |(w, s, t)| (idx, w, s, t))
            })
            .collect();
        if stuck.is_empty() && pinned.is_empty() && pipelined.is_empty() {
            return Stolen::default();
        }
        // Room for each shape over the whole cluster, computed once per shape and used up
        // by what moves.
        let mut room = Room::default();
        let mut moved = Vec::new();
        for (idx, shape, waiting) in stuck {
            let take = waiting.min(room.elsewhere(&self.list, &live, idx, &shape));
            if take > 0 {
                let taken = self.at(idx).take_queued(&shape, take);
                room.use_up(&shape, taken.len());
                moved.extend(taken);
            }
        }
        for (idx, task, demand) in pinned {
            if room.elsewhere(&self.list, &live, idx, &demand) > 0 && self.at(idx).take_pinned(task)
            {
                room.use_up(&demand, 1);
                moved.push(task);
            }
        }
        // Then tasks waiting in busy workers' pipelines, the last sent first.
        let mut recall = Vec::new();
        for (idx, worker, shape, waiting) in pipelined {
            let waiting: Vec<TaskId> = waiting
                .into_iter()
                .filter(|t| !recalling.contains(t))
                .collect();
            let take = waiting
                .len()
                .min(room.elsewhere(&self.list, &live, idx, &shape));
            if take > 0 {
                room.use_up(&shape, take);
                recall.push((worker, waiting[waiting.len() - take..].to_vec()));
            }
        }
        Stolen { moved, recall }
    }

    /// Workers handed back tasks they were asked to return (see [`Nodes::steal`]).
    pub(crate) fn recalled(&mut self, worker: WorkerId, tasks: &[TaskId]) {
        if let Some(sched) = self.sched(worker) {
            sched.recalled(worker, tasks);
        }
    }

    /// Takes the tasks to place again now that the cluster grew: those no live node could
    /// run, and whatever a lost node still holds (work placed while no node was alive, which
    /// can only be left with a dead one; a false alarm on the head can make every node count
    /// dead at once).
    pub(crate) fn take_infeasible(&mut self) -> Vec<TaskId> {
        let mut tasks = Vec::new();
        for idx in 0..self.list.len() {
            let node = &mut self.list[idx];
            if !node.alive {
                tasks.extend(node.sched.drain_queued());
            } else if node.sched.has_infeasible() {
                tasks.extend(self.at(idx).take_infeasible());
            }
        }
        tasks
    }

    /// Compacts every node's scheduler (see [`Scheduler::compact`]).
    pub(crate) fn compact(&mut self) -> bool {
        self.list
            .iter_mut()
            .fold(false, |freed, n| n.sched.compact() | freed)
    }

    pub(crate) fn surplus_idle_workers(&self) -> Vec<WorkerId> {
        self.list
            .iter()
            .flat_map(|n| n.sched.surplus_idle_workers())
            .collect()
    }
}

/// What [`Nodes::steal`] found to move.
#[derive(Debug, Default)]
pub(crate) struct Stolen {
    /// Queued tasks and actor creations taken off their nodes, to place again.
    pub(crate) moved: Vec<TaskId>,
    /// Tasks to ask workers to hand back from their pipelines, by worker.
    pub(crate) recall: Vec<(WorkerId, Vec<TaskId>)>,
}

/// How many more tasks of each shape the live nodes could start at once, for
/// [`Nodes::steal`].
#[derive(Default)]
struct Room(Vec<(Resources, usize)>);

impl Room {
    /// Room for `shape` on the live nodes but `idx`.
    fn elsewhere(
        &mut self,
        list: &[NodeEntry],
        live: &[NodeIdx],
        idx: NodeIdx,
        shape: &Resources,
    ) -> usize {
        let total = match self.0.iter().find(|(s, _)| s == shape) {
            Some((_, n)) => *n,
            None => {
                let n = live.iter().map(|&j| list[j].sched.room_for(shape)).sum();
                self.0.push((shape.clone(), n));
                n
            }
        };
        total.saturating_sub(list[idx].sched.room_for(shape))
    }

    /// `count` tasks of `shape` moved into the room.
    fn use_up(&mut self, shape: &Resources, count: usize) {
        if let Some((_, n)) = self.0.iter_mut().find(|(s, _)| s == shape) {
            *n = n.saturating_sub(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: f64, custom: Option<(&str, f64)>) -> Resources {
        let mut r = Resources::default();
        r.set("CPU", cpu).unwrap();
        if let Some((name, amount)) = custom {
            r.set(name, amount).unwrap();
        }
        r
    }

    #[test]
    fn tasks_stay_home_until_it_is_full_then_spread_and_follow_custom_resources() {
        let mut nodes = Nodes::default();
        let a = nodes.add("a".into(), res(2.0, None), 4, 2, 8);
        let b = nodes.add("b".into(), res(2.0, Some(("tpu", 1.0))), 4, 2, 8);
        assert_eq!(node_of(nodes.worker_starting(b)), b);
        let one = res(1.0, None);
        let mut placed = Vec::new();
        for seq in 0..6 {
            let node = nodes.choose(&one, Some(a), |_| 0).unwrap();
            nodes.submit(node, TaskId::new(0, seq), one.clone());
            placed.push(node);
        }
        assert_eq!(&placed[..2], &[a, a], "home first while it can start them");
        assert!(placed.contains(&b), "then the other node: {placed:?}");
        assert_eq!(
            nodes.choose(&res(1.0, Some(("tpu", 1.0))), Some(a), |_| 0),
            Some(b),
            "a custom resource only b has"
        );
        assert_eq!(nodes.choose(&res(3.0, None), Some(a), |_| 0), None);
        // Arguments already on b pull an otherwise equal choice there.
        let mut fresh = Nodes::default();
        let a = fresh.add("a".into(), res(2.0, None), 4, 2, 8);
        let b = fresh.add("b".into(), res(2.0, None), 4, 2, 8);
        assert_eq!(
            fresh.choose(&one, Some(a), |i| if i == b { 1 << 20 } else { 0 }),
            Some(b)
        );
        fresh.mark_dead(b);
        assert_eq!(
            fresh.choose(&one, Some(b), |_| 0),
            Some(a),
            "dead nodes take nothing"
        );
    }

    #[test]
    fn queued_work_moves_off_a_node_that_lost_its_room_as_far_as_the_others_have_it() {
        let mut nodes = Nodes::default();
        let a = nodes.add("a".into(), res(2.0, None), 4, 2, 8);
        let b = nodes.add("b".into(), res(2.0, None), 4, 2, 8);
        let c = nodes.add("c".into(), res(2.0, None), 4, 2, 8);
        let one = res(1.0, None);
        for seq in 0..5 {
            nodes.submit(a, TaskId::new(0, seq), one.clone());
        }
        let none = IdSet::default();
        assert!(
            nodes.steal(&none).moved.is_empty(),
            "a can start them itself"
        );
        // Its CPUs go elsewhere (an actor, a placement group); b has room for two, c none.
        nodes.reserve(a, &res(2.0, None), &Resources::default());
        nodes.reserve(c, &res(2.0, None), &Resources::default());
        let moved = nodes.steal(&none).moved;
        assert_eq!(
            moved,
            vec![TaskId::new(0, 3), TaskId::new(0, 4)],
            "the last queued, as many as b can start"
        );
        for task in moved {
            nodes.submit(b, task, one.clone());
        }
        assert!(
            nodes.steal(&none).moved.is_empty(),
            "no room left elsewhere"
        );
        assert!(
            nodes
                .get(a)
                .is_some_and(|n| n.sched.stuck() == vec![(one, 3)])
        );
    }
}
