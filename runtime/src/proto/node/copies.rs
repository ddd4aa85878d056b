//! The node's books of a joined cluster: placing tasks on nodes, knowing which nodes' stores
//! hold which objects, holding frames for a worker until the objects they name are in its
//! node's store (one fetch per object and node, however many tasks wait), fetching remote
//! objects for readers in the driver, dropping nodes' copies when the owner frees an object,
//! and losing a node.

use std::time::Instant;

use prism_graph::{IdMap, IdSet, ObjectId, Resources, TaskId, TaskKind};
use prism_transport::{ObjectValue, ToWorker, Value, encode_frame};

use super::{Action, DRIVER_OWNER, HeldFrame, HostRequest, NODE_OWNER, State};
use crate::proto::nodes::{NodeIdx, Nodes, node_of};
use crate::proto::owner::{Rebuilt, Slot};
use crate::proto::scheduler::WorkerId;
use crate::store::ObjectBytes;

/// What still waits on a node for a lost object being rebuilt, once its plain tasks were taken
/// back (see `State::take_back_held`), in the order of what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Left {
    /// Nothing.
    Nothing,
    /// Frames that may wait for the rebuilt copy.
    Waiting,
    /// An actor's creation, which must not wait.
    Creation,
}

/// The objects a message for a worker reads from its node's store.
fn shared_values(msg: &ToWorker) -> Vec<(ObjectId, u64)> {
    let mut out = Vec::new();
    let mut add = |value: &Value| {
        if let Value::Shared { id, len } = value {
            out.push((*id, *len));
        }
    };
    match msg {
        ToWorker::Execute(batch) => batch.iter().flat_map(|e| &e.args).for_each(&mut add),
        ToWorker::Nested { exec, .. } => exec.args.iter().for_each(&mut add),
        ToWorker::Objects(objects) => {
            for (_, value) in objects {
                if let ObjectValue::Ready(value) = value {
                    add(value);
                }
            }
        }
        _ => {}
    }
    out
}

/// Whether a live node's store holds `id` (for closures that borrow these two fields beside
/// the owner; [`State::live_copy`] says which node).
pub(super) fn on_live_node(
    locations: &IdMap<ObjectId, Vec<NodeIdx>>,
    nodes: &Nodes,
    id: ObjectId,
) -> bool {
    locations
        .get(&id)
        .is_some_and(|at| at.iter().any(|&n| nodes.get(n).is_some_and(|e| e.alive)))
}

/// How many nodes may pull one object from one holder at once. The others wait for a copy to
/// land and pull from it: an object read on many nodes spreads as a tree (each copy serving
/// the next), so its time grows with the logarithm of the node count instead of queueing every
/// pull at the origin's link.
pub(super) const PULLS_PER_HOLDER: usize = 2;

/// The most tasks one node's death may make the job run again to rebuild a result whose only
/// copy it holds (see [`State::guard_lineage`]).
pub(super) const MAX_EXPOSURE: u32 = 8;

/// A rebuildable task's results, made on `node`, and what they were made from (see
/// [`State::guard_lineage`]).
pub(super) struct Made {
    node: NodeIdx,
    results: Vec<ObjectId>,
    inputs: Vec<ObjectId>,
}

impl State {
    /// What [`State::guard_lineage`] needs of `task`, which just ran on `node` and returned
    /// `values`, when its lineage can be kept (a normal task with retries, a result in a
    /// node's store) in a joined cluster.
    pub(super) fn lineage_made(
        &self,
        task: TaskId,
        node: NodeIdx,
        values: &[Slot],
    ) -> Option<Made> {
        self.cluster?;
        if !values.iter().any(|v| matches!(v, Slot::Remote(_))) {
            return None;
        }
        let spec = &self.owner.task(task)?.spec;
        if spec.kind != prism_graph::TaskKind::Normal || spec.max_retries == 0 {
            return None;
        }
        Some(Made {
            node,
            results: spec.return_ids().collect(),
            inputs: spec.dependencies().collect(),
        })
    }

    /// Keeps a lost node from costing a long chain of rebuilds. Placement by locality runs a
    /// task where its inputs are, so a chain of results (a subtree of a reduction) often
    /// lives on one node alone, and that node's death makes the job run the whole chain
    /// again, one level after another. Each result whose only copy is on its node counts the
    /// tasks its loss would run again (itself, and those of its inputs that have no copy on
    /// another node); past [`MAX_EXPOSURE`], another node fetches a copy, which starts the
    /// count anew, and such a result is kept at two copies while nodes are lost
    /// ([`State::guard_again`]). In a tree reduction that is about one level in four (the
    /// simulator's 100 nodes under a node killed every 3 s: see BENCHMARKS.md).
    pub(super) fn guard_lineage(&mut self, made: Made) {
        let Made {
            node,
            results,
            inputs,
        } = made;
        let inherited: u32 = inputs
            .iter()
            .filter(|&&id| !self.owner.stored_here(id) && self.live_copy(id, Some(node)).is_none())
            .map(|id| self.exposure.get(id).copied().unwrap_or(1))
            .fold(0, u32::saturating_add);
        for id in results {
            let only_here = self.locations.get(&id).is_some_and(|at| at == &[node]);
            let Some(len) = self.owner.stored_len(id).filter(|_| only_here) else {
                continue;
            };
            let exposure = inherited.saturating_add(1);
            if exposure <= MAX_EXPOSURE {
                self.exposure.insert(id, exposure);
                continue;
            }
            match self.second_home(node) {
                Some(other) => {
                    tracing::debug!(object = %id, exposure, "a second copy guards a long lineage");
                    self.fetch_to_node(other, id, len);
                    self.exposure.insert(id, 1);
                    self.guarded.insert(id);
                }
                None => {
                    self.exposure.insert(id, exposure);
                }
            }
        }
    }

    /// The node for a second copy of what `but` holds: the least loaded other live node
    /// that takes work.
    fn second_home(&self, but: NodeIdx) -> Option<NodeIdx> {
        self.nodes
            .live()
            .filter(|&n| n != but && self.nodes.get(n).is_some_and(|e| e.takes_work()))
            .min_by(|&a, &b| self.nodes.load_of(a).total_cmp(&self.nodes.load_of(b)))
    }

    /// A node was lost: results that [`State::guard_lineage`] gave a second copy and that are
    /// down to one (none being fetched) get another, so that the next loss costs no chain.
    fn guard_again(&mut self) {
        let fetching: IdSet<ObjectId> = self.node_fetches.keys().map(|(id, _)| *id).collect();
        let mut again = Vec::new();
        for &id in self.guarded.iter().filter(|id| !fetching.contains(id)) {
            // Down to one copy: a holder, and no other.
            if let Some(only) = self.live_copy(id, None)
                && self.live_copy(id, Some(only)).is_none()
            {
                again.push((id, only));
            }
        }
        for (id, only) in again {
            if let (Some(len), Some(other)) = (self.owner.stored_len(id), self.second_home(only)) {
                self.fetch_to_node(other, id, len);
            }
        }
    }

    /// The node a ready task (or actor creation) should go to.
    pub(super) fn place(&self, task: TaskId, demand: &Resources) -> NodeIdx {
        let Some(home) = self.cluster else {
            return 0;
        };
        let submitter = task.owner;
        let home = if submitter != DRIVER_OWNER && submitter != NODE_OWNER {
            Some(node_of(submitter))
        } else {
            home
        };
        // Bytes of its arguments on each node that holds any (few), summed once: placement
        // asks for every node.
        let mut held: Vec<(NodeIdx, u64)> = Vec::new();
        if let Some(record) = self.owner.task(task) {
            for id in record.spec.dependencies() {
                let (Some(len), Some(at)) = (self.owner.stored_len(id), self.locations.get(&id))
                else {
                    continue;
                };
                for &node in at {
                    match held.iter_mut().find(|(n, _)| *n == node) {
                        Some((_, bytes)) => *bytes += len,
                        None => held.push((node, len)),
                    }
                }
            }
        }
        let bytes_on = |node: NodeIdx| -> u64 {
            held.iter()
                .find(|(n, _)| *n == node)
                .map_or(0, |(_, bytes)| *bytes)
        };
        (self.nodes.choose(demand, home, bytes_on)).unwrap_or_else(|| self.nodes.parking())
    }

    /// A stale report's results (a run the owner does not count) left copies in `node`'s store
    /// that nobody frees: they go, unless the run the owner counts put its copy there too or
    /// one is being fetched there.
    pub(super) fn drop_stale_copies(
        &mut self,
        node: NodeIdx,
        outcome: &prism_transport::ArchivedOutcome,
    ) {
        let prism_transport::ArchivedOutcome::Returned { values, .. } = outcome else {
            return;
        };
        if self.cluster.is_none() || !self.nodes.get(node).is_some_and(|n| n.alive) {
            return;
        }
        let orphans: Vec<ObjectId> = (values.iter())
            .filter_map(|value| match value {
                prism_transport::ArchivedValue::Shared { id, .. } => Some(id.to_native()),
                _ => None,
            })
            .filter(|&id| {
                let counted = self.locations.get(&id).is_some_and(|at| at.contains(&node));
                !counted && !self.node_fetches.contains_key(&(id, node))
            })
            .collect();
        if !orphans.is_empty() {
            // Live objects (the counted run's copies are elsewhere): their segments here are
            // not reused.
            let request = HostRequest::Drop(orphans);
            self.actions.push_back(Action::Host { node, request });
        }
    }

    /// A value a worker sent: in a joined cluster a shared one stays in its node's store; on
    /// the embedded node the shell mapped it (`mapped`).
    pub(super) fn value_from(
        &mut self,
        worker: WorkerId,
        value: &prism_transport::ArchivedValue,
        mapped: &mut prism_graph::IdMap<ObjectId, std::io::Result<ObjectBytes>>,
    ) -> std::io::Result<Slot> {
        match value {
            prism_transport::ArchivedValue::Shared { id, len } => {
                let id = id.to_native();
                if self.cluster.is_some() {
                    let len = len.to_native();
                    self.add_location(id, node_of(worker), len);
                    return Ok(Slot::Remote(len));
                }
                mapped
                    .remove(&id)
                    .unwrap_or_else(|| {
                        Err(std::io::Error::other(format!(
                            "{id} was not mapped by the node"
                        )))
                    })
                    .map(Slot::Ready)
            }
            prism_transport::ArchivedValue::Inline(bytes) => {
                Ok(Slot::Ready(ObjectBytes::inline(bytes)))
            }
        }
    }

    /// `node`'s store holds `id` (`len` bytes) in shared memory: made, fetched or restored
    /// there. Copies leave a store over its capacity.
    fn add_location(&mut self, id: ObjectId, node: NodeIdx, len: u64) {
        self.unread_on.remove(&id);
        let at = self.locations.entry(id).or_default();
        if !at.contains(&node) {
            at.push(node);
        }
        match self.stores.spilled(node, id) {
            true => self.stores.set_spilled(node, id, false),
            false => self.stores.add(node, id, len),
        }
        self.grew(node);
        // A new holder (a rebuilt copy, or one with room).
        self.wake_awaiting(id);
    }

    /// The nodes that waited for a holder of `id` try again: a live one fetches it, and on
    /// one that holds it now what waited goes on.
    fn wake_awaiting(&mut self, id: ObjectId) {
        for (waiting, len) in self.awaiting_holder.remove(&id).unwrap_or_default() {
            if self
                .locations
                .get(&id)
                .is_some_and(|at| at.contains(&waiting))
            {
                self.fetch_settled(waiting, id);
            } else if self.nodes.get(waiting).is_some_and(|e| e.alive) {
                self.fetch_to_node(waiting, id, len);
            }
        }
    }

    /// The objects `msg` names that are not in `node`'s shared memory.
    fn missing_on(&self, node: NodeIdx, msg: &ToWorker) -> Vec<(ObjectId, u64)> {
        let mut missing = shared_values(msg);
        missing.retain(|(id, _)| {
            !self.locations.get(id).is_some_and(|l| l.contains(&node))
                || self.stores.spilled(node, *id)
        });
        missing
    }

    /// Holds `msg` for `worker` (true) when objects it names are not yet in the worker's
    /// node's store, or when earlier frames are held; asks for the missing ones. A batch of
    /// tasks is held task by task, so that each goes as soon as its own objects are there.
    pub(super) fn hold_for_objects(&mut self, worker: WorkerId, msg: &ToWorker) -> bool {
        let node = node_of(worker);
        let missing = self.missing_on(node, msg);
        if missing.is_empty() && !self.held.contains_key(&worker) {
            return false;
        }
        let parts: Vec<ToWorker> = match msg {
            ToWorker::Execute(batch) if batch.len() > 1 => batch
                .iter()
                .map(|exec| ToWorker::Execute(vec![exec.clone()]))
                .collect(),
            _ => vec![msg.clone()],
        };
        for part in &parts {
            let waiting = self.missing_on(node, part);
            let (tasks, task) = match part {
                ToWorker::Execute(batch) => {
                    let one = (batch.len() == 1).then(|| batch[0].task);
                    (batch.len(), one)
                }
                ToWorker::Nested { .. } => (1, None),
                _ => (0, None),
            };
            let mut bytes = Vec::new();
            if let Err(e) = encode_frame(part, &mut bytes) {
                tracing::error!(worker, "cannot encode a message for the worker: {e}");
            }
            let frame = HeldFrame {
                waiting: waiting.iter().map(|(id, _)| *id).collect(),
                tasks,
                task,
                bytes,
            };
            self.held.entry(worker).or_default().frames.push_back(frame);
        }
        // After the frames are held: a fetch that settles at once (no holder) releases them.
        for &(id, len) in &missing {
            self.fetch_to_node(node, id, len);
        }
        self.release_held(worker);
        true
    }

    /// How many tasks `worker` has in held frames.
    pub(super) fn held_tasks(&self, worker: WorkerId) -> usize {
        self.held
            .get(&worker)
            .map_or(0, |h| h.frames.iter().map(|f| f.tasks).sum())
    }

    /// A live node other than `but` whose store holds `id` (in memory or spilled: it serves
    /// pulls either way).
    pub(super) fn live_copy(&self, id: ObjectId, but: Option<NodeIdx>) -> Option<NodeIdx> {
        self.locations.get(&id).and_then(|at| {
            at.iter()
                .copied()
                .find(|&n| Some(n) != but && self.nodes.get(n).is_some_and(|e| e.alive))
        })
    }

    /// The copy of `id` on `node` cannot be read (its node is lost or the pull failed).
    pub(super) fn forget_copy(&mut self, id: ObjectId, node: NodeIdx) {
        self.copy_gone(id, node);
        // A live node may still hold what could not be read from it (a pull over a stale
        // connection): the job no longer counts that copy, so it goes, or it would stay after
        // the object is freed. The object lives on, and a worker there may be reading this
        // very copy (an argument of a task running there): its segment must not be reused
        // for another object under that reader, so it is dropped, not freed.
        if self.nodes.get(node).is_some_and(|n| n.alive) && self.cluster.is_some() {
            let request = HostRequest::Drop(vec![id]);
            self.actions.push_back(Action::Host { node, request });
            self.unread_on.insert(id, node);
        }
    }

    /// `node`'s copy of `id` is gone (a worker there found no such file): the job stops
    /// counting it. Nothing is asked of the node: a drop sent now could overtake the fetch
    /// that brings the object back and remove the new copy.
    pub(super) fn copy_gone(&mut self, id: ObjectId, node: NodeIdx) {
        if let Some(at) = self.locations.get_mut(&id) {
            at.retain(|&n| n != node);
        }
        self.stores.remove(node, id);
    }

    /// Asks `node` to fetch `id` from a host that has it, once. With no copy left the object
    /// is rebuilt (or fails) and the frames waiting for it go: their worker reports the missing
    /// object and the task waits for the rebuild.
    /// A node whose store is full waits for room first (see [`State::make_room_on_nodes`]).
    /// A node waits for a holder with room when every holder serves [`PULLS_PER_HOLDER`] pulls
    /// of the object already.
    pub(super) fn fetch_to_node(&mut self, node: NodeIdx, id: ObjectId, len: u64) {
        if self.cluster.is_none() || self.fetch_pending(id, node) {
            return;
        }
        let spilled_here = self.stores.spilled(node, id);
        let source = match spilled_here {
            true => Some(Some(node)),
            false => self.least_busy_holder(id, node),
        };
        if let Some(from) = source
            && from != Some(node)
            && self.serving.get(&(id, from)).copied().unwrap_or(0) >= PULLS_PER_HOLDER
        {
            self.awaiting_holder
                .entry(id)
                .or_default()
                .push((node, len));
            return;
        }
        if !self.admits(node, len) {
            self.stores.wait(node, id, len);
            return;
        }
        match source {
            Some(from) => {
                let request = match from == Some(node) {
                    true => HostRequest::Restore { id, len },
                    false => HostRequest::Fetch { id, len, from },
                };
                self.actions.push_back(Action::Host { node, request });
                self.node_fetches.insert((id, node), (from, len));
                if from != Some(node) {
                    *self.serving.entry((id, from)).or_default() += 1;
                }
                self.stores.incoming(node, len, true);
            }
            None => {
                self.object_lost(id, "no live node holds a copy (its node was lost)");
                self.await_rebuild(node, id, len);
            }
        }
    }

    /// `node` needs `id`, of which no copy is left: while its task runs again, what waits for
    /// it there stays held, and is fetched once the new copy lands ([`Self::add_location`]);
    /// sent now, each task would only find its argument missing and come back (chaos runs
    /// did so 50-140 times after every node they lost). An object that cannot be rebuilt
    /// lets it go at once: its worker reports the argument missing.
    fn await_rebuild(&mut self, node: NodeIdx, id: ObjectId, len: u64) {
        if !self.owner.pending(id) {
            return self.fetch_settled(node, id);
        }
        match self.take_back_held(node, id) {
            Left::Nothing => {}
            Left::Waiting => {
                let at = self.awaiting_holder.entry(id).or_default();
                if !at.iter().any(|&(n, _)| n == node) {
                    at.push((node, len));
                }
            }
            Left::Creation => self.fetch_settled(node, id),
        }
    }

    /// Takes the plain tasks held for `id` on `node`'s workers back from them, to run once it
    /// is rebuilt: held, each would keep its worker and CPU from the rebuild (on a node of one
    /// CPU it would never run). Says what else waits for it there: calls of actors (whose
    /// workers are theirs anyway) and tasks to run on top of a blocked worker (which holds no
    /// CPU) may wait; an actor's creation holds a CPU, and goes as before (its worker reports
    /// the argument missing).
    fn take_back_held(&mut self, node: NodeIdx, id: ObjectId) -> Left {
        let mut taken = Vec::new();
        let mut left = Left::Nothing;
        for (&worker, held) in self.held.iter_mut() {
            if node_of(worker) != node {
                continue;
            }
            held.frames.retain(|frame| {
                if !frame.waiting.contains(&id) {
                    return true;
                }
                let kind = frame
                    .task
                    .map(|task| (task, self.owner.task(task).map(|r| r.spec.kind)));
                match kind {
                    Some((task, Some(TaskKind::Normal))) => {
                        taken.push((worker, task));
                        return false;
                    }
                    Some((_, Some(TaskKind::ActorCall(_)))) | None => {
                        left = left.max(Left::Waiting);
                    }
                    Some(_) => left = Left::Creation,
                }
                true
            });
        }
        for &(worker, task) in &taken {
            self.nodes.task_done(worker, task);
            if self.owner.unstarted(task) {
                self.enqueue(task);
            }
        }
        for (worker, _) in taken {
            self.release_held(worker);
        }
        left
    }

    /// Whether `node` fetches `id` now or waits for a holder with room to.
    fn fetch_pending(&self, id: ObjectId, node: NodeIdx) -> bool {
        self.node_fetches.contains_key(&(id, node))
            || (self.awaiting_holder.get(&id)).is_some_and(|w| w.iter().any(|&(n, _)| n == node))
    }

    /// The holder of `id` (a live node but `node`, or this process: `Some(None)`) that serves
    /// the fewest pulls of it now; the earliest copy among equals.
    fn least_busy_holder(&self, id: ObjectId, node: NodeIdx) -> Option<Option<NodeIdx>> {
        let nodes = self.locations.get(&id).into_iter().flatten().copied();
        let live = nodes.filter(|&n| n != node && self.nodes.get(n).is_some_and(|e| e.alive));
        let here = self.owner.stored_here(id).then_some(None);
        (live.map(Some).chain(here)).min_by_key(|&from| self.serving.get(&(id, from)).copied())
    }

    /// A fetch of `id` that pulled from `from` ended (or will never end): its holder serves
    /// one pull fewer, and the nodes waiting for a holder with room try again.
    fn fetch_ended(&mut self, id: ObjectId, from: Option<NodeIdx>, node: NodeIdx) {
        if from != Some(node)
            && let Some(count) = self.serving.get_mut(&(id, from))
        {
            *count -= 1;
            if *count == 0 {
                self.serving.remove(&(id, from));
            }
        }
        self.wake_awaiting(id);
    }

    /// Whether no live node and not this process holds `id` while its owner says it is stored
    /// on another node.
    fn copy_lost(&self, id: ObjectId) -> bool {
        self.live_copy(id, None).is_none()
    }

    /// Every reachable copy of `id` is gone: its task runs again from its lineage (readers
    /// wait), or its readers get an error with `reason`.
    pub(super) fn object_lost(&mut self, id: ObjectId, reason: &str) {
        let (locations, nodes) = (&self.locations, &self.nodes);
        let is_lost = |dep: ObjectId| !on_live_node(locations, nodes, dep);
        let mut rebuilt = Rebuilt::default();
        self.owner.rebuild(id, &is_lost, reason, &mut rebuilt);
        // A copy that could not be read from a node counted alive: that node may be dead and
        // not yet counted lost (the control store misses a killed node's heartbeats for a
        // second, and a pull from it fails first). Its loss gives the charge back.
        for &charged in &rebuilt.charged {
            if let Some(node) = self.unread_on.remove(&charged) {
                self.charged_on.entry(node).or_default().push(charged.task);
            }
        }
        for task in rebuilt.held_back {
            let _ = self.nodes.locate_for_cancel(task);
        }
        for task in rebuilt.ready {
            let charged = rebuilt.charged.iter().any(|o| o.task == task);
            tracing::warn!(task = %self.owner.describe(task), object = %id, charged, "rebuilding a lost object: its task runs again");
            self.enqueue(task);
        }
    }

    /// Whether `worker` can be told where `id` is: false when its last copies were lost, and
    /// then the object is rebuilt and the worker waits for it again (or hears of its failure).
    pub(super) fn copy_reachable(&mut self, worker: WorkerId, id: ObjectId) -> bool {
        if self.cluster.is_none() || self.owner.stored_here(id) || !self.copy_lost(id) {
            return true;
        }
        self.object_lost(id, "no live node holds a copy (its node was lost)");
        self.restore_if_spilled(id);
        self.owner.subscribe(id, worker);
        false
    }

    /// A node's fetch ended: frames waiting for it may go (on failure, the worker reports the
    /// missing object with its task).
    pub(super) fn fetch_settled(&mut self, node: NodeIdx, id: ObjectId) {
        let ready: Vec<WorkerId> = self
            .held
            .iter_mut()
            .filter(|(w, _)| node_of(**w) == node)
            .filter_map(|(w, held)| {
                for frame in &mut held.frames {
                    frame.waiting.remove(&id);
                }
                held.frames
                    .front()
                    .is_some_and(|f| f.waiting.is_empty())
                    .then_some(*w)
            })
            .collect();
        for worker in ready {
            self.release_held(worker);
        }
    }

    /// Sends `worker` its held frames that wait for nothing, up to the first that does.
    fn release_held(&mut self, worker: WorkerId) {
        let Some(held) = self.held.get_mut(&worker) else {
            return;
        };
        while held.frames.front().is_some_and(|f| f.waiting.is_empty()) {
            if let Some(frame) = held.frames.pop_front() {
                self.outbox.entry(worker).or_default().extend(frame.bytes);
            }
        }
        if held.frames.is_empty() {
            self.held.remove(&worker);
        }
    }

    /// The copies on other nodes of the objects freed since last asked go: one request per
    /// node.
    pub(super) fn free_copies(&mut self) {
        let freed = std::mem::take(&mut self.owner.freed);
        if freed.is_empty() {
            return;
        }
        // (node, object) pairs, grouped by node in node order.
        let mut copies: Vec<(NodeIdx, ObjectId)> = Vec::new();
        for id in freed {
            self.exposure.remove(&id);
            self.unread_on.remove(&id);
            // Nodes that waited for a holder of it: whatever waited there goes on (as
            // for a node that waited for room).
            for (node, _) in self.awaiting_holder.remove(&id).unwrap_or_default() {
                self.fetch_settled(node, id);
            }
            self.guarded.remove(&id);
            for node in self.locations.remove(&id).unwrap_or_default() {
                self.stores.remove(node, id);
                copies.push((node, id));
            }
        }
        copies.sort_by_key(|&(node, _)| node);
        for group in copies.chunk_by(|a, b| a.0 == b.0) {
            let node = group[0].0;
            if self.nodes.get(node).is_some_and(|n| n.alive) {
                let request = HostRequest::Free(group.iter().map(|&(_, id)| id).collect());
                self.actions.push_back(Action::Host { node, request });
            }
        }
    }

    /// Copies of freed objects go; remote objects readers here wait for are fetched.
    pub(super) fn settle_remote(&mut self) {
        if self.cluster.is_none() {
            // An embedded node has no copies elsewhere (and keeps the list's capacity).
            self.owner.freed.clear();
            return;
        }
        self.free_copies();
        self.settle_failed_rebuilds();
        let wanted = std::mem::take(&mut self.owner.wanted_here);
        let mut lost = Vec::new();
        for (id, len) in wanted {
            match self.live_copy(id, None) {
                Some(from) => {
                    self.pulling_here.insert(id, from);
                    self.actions.push_back(Action::FetchHere { id, len, from });
                }
                None => lost.push(id),
            }
        }
        for id in lost {
            self.object_lost(id, "no live node holds a copy (its node was lost)");
        }
    }

    /// Objects nodes waited to fetch until they were rebuilt, whose rebuild failed (or that no
    /// one reads any more): what waited for them goes on (its worker reports the argument
    /// missing, and the task fails in the end).
    fn settle_failed_rebuilds(&mut self) {
        let failed: Vec<ObjectId> = (self.awaiting_holder.keys())
            .copied()
            .filter(|&id| {
                !self.owner.pending(id)
                    && !self.owner.stored_here(id)
                    && self.live_copy(id, None).is_none()
            })
            .collect();
        for id in failed {
            for (node, _) in self.awaiting_holder.remove(&id).unwrap_or_default() {
                self.fetch_settled(node, id);
            }
        }
    }

    /// The connection to a node ended: its workers are dead, its queue moves elsewhere, and its
    /// copies of objects are gone.
    pub(super) fn node_lost(&mut self, node: NodeIdx, reason: String, lease_end: Instant) {
        if self.shutting_down || !self.nodes.get(node).is_some_and(|n| n.alive) {
            return;
        }
        self.lease_ends.insert(node, lease_end);
        let name = self.nodes.name(node).to_string();
        tracing::error!(node = name, "lost a node of the cluster: {reason}");
        self.nodes.mark_dead(node);
        self.binaries.node_lost(node);
        self.borrowing.remove(&node);
        self.owner.node_lost();
        for task in self.charged_on.remove(&node).unwrap_or_default() {
            tracing::debug!(task = %self.owner.describe(task), node = name, "a rebuild charged for a copy that could not be read there is given back: the node was lost");
            self.owner.refund_rebuild(task);
        }
        let reason_out = format!("the job gave up on the node: {reason}");
        self.actions.push_back(Action::DropNode {
            node,
            reason: reason_out,
        });
        let workers: Vec<WorkerId> = self
            .workers
            .keys()
            .copied()
            .filter(|w| node_of(*w) == node)
            .collect();
        for worker in workers {
            if let Some(life) = self.workers.get_mut(&worker) {
                life.exit = Some(format!("its node {name} was lost: {reason}"));
                life.eof = true;
            }
            self.actions.push_back(Action::CloseLink { worker });
            self.maybe_dead(worker);
        }
        for at in self.locations.values_mut() {
            at.retain(|&n| n != node);
        }
        self.stores.clear(node);
        // Pulls from it on other nodes fail now, not after QUIC's idle timeout: one hung pull
        // holds every frame queued behind it for its worker.
        let peers: Vec<NodeIdx> = self.nodes.live().collect();
        for peer in peers {
            let request = HostRequest::ForgetPeer { lost: node };
            self.actions.push_back(Action::Host {
                node: peer,
                request,
            });
        }
        let ended: Vec<(ObjectId, Option<NodeIdx>)> = (self.node_fetches.iter())
            .filter(|&(&(_, n), _)| n == node)
            .map(|(&(id, _), &(from, _))| (id, from))
            .collect();
        self.node_fetches.retain(|&(_, n), _| n != node);
        for waiting in self.awaiting_holder.values_mut() {
            waiting.retain(|&(n, _)| n != node);
        }
        for (id, from) in ended {
            self.fetch_ended(id, from, node);
        }
        // Pulls from it into this process fail now (they move to another copy or a rebuild).
        let mut pulls: Vec<ObjectId> = (self.pulling_here.iter())
            .filter(|&(_, &from)| from == node)
            .map(|(&id, _)| id)
            .collect();
        pulls.sort_unstable();
        for id in pulls {
            self.pulling_here.remove(&id);
            self.pull_failed(id, node, "the node was lost");
        }
        self.guard_again();
        for task in self.nodes.drain_queued(Some(node)) {
            self.enqueue(task);
        }
    }

    /// Node `node` is leaving (see [`super::Event::NodeDraining`]).
    pub(super) fn node_draining(&mut self, node: NodeIdx, reason: String) {
        if self.shutting_down || !self.nodes.start_draining(node) {
            return;
        }
        let name = self.nodes.name(node).to_string();
        tracing::info!(node = name, "a node drains: {reason}");
        for task in self.nodes.drain_queued(Some(node)) {
            self.enqueue(task);
        }
        for (worker, tasks) in self.nodes.pipelined_on(node) {
            let tasks: Vec<TaskId> = tasks
                .into_iter()
                .filter(|&t| self.recalling.insert(t))
                .collect();
            if !tasks.is_empty() {
                self.encode_to(worker, &ToWorker::Recall { tasks });
            }
        }
        self.draining.push(node);
    }

    /// Stops the job's processes on the draining nodes that run no task any more.
    pub(super) fn release_drained(&mut self) {
        if self.draining.is_empty() {
            return;
        }
        // Lost nodes leave the list; drained ones leave it to be let go.
        let (nodes, mut done) = (&self.nodes, Vec::new());
        self.draining.retain(|&n| match nodes.drained(n) {
            true => {
                done.push(n);
                false
            }
            false => nodes.get(n).is_some_and(|e| e.alive),
        });
        for node in done {
            tracing::info!(
                node = self.nodes.name(node),
                "a draining node runs no task: the job leaves it"
            );
            let request = HostRequest::EndJob;
            self.actions.push_back(Action::Host { node, request });
        }
    }

    /// A node's fetch of `id` ended.
    pub(super) fn node_fetched(&mut self, node: NodeIdx, id: ObjectId, result: Result<(), String>) {
        let tracked = self.node_fetches.remove(&(id, node));
        let (source, len) = tracked.unwrap_or_default();
        self.stores.incoming(node, len, false);
        let refetching = match result {
            Ok(()) if self.owner.knows(id) => {
                let len = self.owner.stored_len(id).unwrap_or(0);
                self.add_location(id, node, len);
                false
            }
            Ok(()) => {
                // Freed while it travelled: drop the copy.
                let request = HostRequest::Free(vec![id]);
                self.actions.push_back(Action::Host { node, request });
                false
            }
            Err(reason) => {
                tracing::warn!(object = %id, node = self.nodes.name(node), "a fetch failed: {reason}");
                if let Some(source) = source {
                    self.forget_copy(id, source);
                }
                // From another copy, or after a rebuild; not to a node that is gone (what
                // waited for the object there moves with the node's loss).
                let alive = self.nodes.get(node).is_some_and(|n| n.alive);
                match self.owner.stored_len(id).filter(|_| alive) {
                    Some(len) => {
                        self.fetch_to_node(node, id, len);
                        self.fetch_pending(id, node)
                    }
                    // Lost already and being rebuilt (another fetch found no copy first).
                    None if alive && self.owner.pending(id) => {
                        self.await_rebuild(node, id, len);
                        true
                    }
                    None => false,
                }
            }
        };
        if !refetching {
            self.fetch_settled(node, id);
        }
        if tracked.is_some() {
            self.fetch_ended(id, source, node);
        }
    }

    /// A pull of `id` into this process's store from `from` failed.
    pub(super) fn pull_failed(&mut self, id: ObjectId, from: NodeIdx, reason: &str) {
        tracing::warn!(object = %id, node = self.nodes.name(from), "a pull failed: {reason}");
        self.forget_copy(id, from);
        // Readers here ask again: another copy, or a rebuild.
        self.owner.fetch_failed(id);
    }
}
