//! The core's side of a joined cluster: placing tasks on nodes, starting and killing workers
//! there, knowing which nodes' stores hold which objects, holding frames for a worker until the
//! objects they name are in its node's store (one fetch per object and node, however many
//! tasks wait), fetching remote objects for readers in the driver, and dropping nodes' copies
//! when the owner frees an object.

use std::sync::{Arc, Weak};

use prism_graph::{ObjectId, Resources, TaskId};
use prism_transport::{FromHost, ObjectValue, ToHost, ToWorker, Value, encode_frame};
use tokio::io::AsyncWriteExt;

use super::cluster::Joined;
use super::{Core, DRIVER_OWNER, NODE_OWNER, State, worker_pool};
use crate::owner::{Rebuilt, Slot};
use crate::proto::nodes::{NodeIdx, node_of};
use crate::proto::scheduler::WorkerId;
use crate::store::{ObjectBytes, Segment};

/// How the core reaches the nodes of the cluster it joined.
#[derive(Debug)]
pub(super) struct Remote {
    joined: Arc<Joined>,
    handle: tokio::runtime::Handle,
    core: Weak<Core>,
}

impl Remote {
    pub(super) fn new(
        joined: Arc<Joined>,
        handle: tokio::runtime::Handle,
        core: Weak<Core>,
    ) -> Self {
        Remote {
            joined,
            handle,
            core,
        }
    }

    /// The node on the driver's host, if the cluster has one.
    pub(super) fn home(&self) -> Option<NodeIdx> {
        self.joined.home
    }

    /// Sends `request` to `node`; `then` gets the core and the answer (an error as text).
    fn request(
        &self,
        node: NodeIdx,
        request: ToHost,
        then: impl FnOnce(&Core, Result<FromHost, String>) + Send + 'static,
    ) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let answer = joined.request(node, request).await;
            if let Some(core) = core.upgrade() {
                then(&core, answer);
            }
        });
    }

    pub(super) fn spawn_worker(&self, node: NodeIdx, worker: WorkerId) {
        self.request(
            node,
            ToHost::Spawn { worker },
            move |core, answer| match answer {
                Ok(FromHost::Spawned(pid)) => core.worker_spawned(worker, pid, None),
                Ok(FromHost::Error(reason)) | Err(reason) => core.worker_exited(worker, reason),
                Ok(other) => core.worker_exited(worker, format!("unexpected answer {other:?}")),
            },
        );
    }

    pub(super) fn kill_worker(&self, worker: WorkerId) {
        self.request(node_of(worker), ToHost::Kill { worker }, |_, _| {});
    }

    fn fetch_to_node(&self, node: NodeIdx, id: ObjectId, len: u64, from: String) {
        let request = ToHost::Fetch { id, len, from };
        self.request(node, request, move |core, answer| {
            let result = match answer {
                Ok(FromHost::Done) => Ok(()),
                Ok(FromHost::Error(reason)) | Err(reason) => Err(reason),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
            };
            core.node_fetched(node, id, result);
        });
    }

    fn free(&self, node: NodeIdx, ids: Vec<ObjectId>) {
        self.request(node, ToHost::Free(ids), |_, _| {});
    }

    /// Pulls `id` from node `from` into the driver's store for its readers.
    fn fetch_here(&self, id: ObjectId, len: u64, from: NodeIdx, store: std::path::PathBuf) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let addr = joined.nodes[from].addr;
            let pulled = joined
                .peers
                .pull_to_store(&joined.job, addr, &store, id, len)
                .await
                .and_then(|()| {
                    Segment::open(&store, id, len)
                        .map(|s| ObjectBytes::Shared(Arc::new(s)))
                        .map_err(|e| format!("cannot map {id} after its pull: {e}"))
                });
            let Some(core) = core.upgrade() else { return };
            let mut state = core.state.lock();
            match pulled {
                Ok(bytes) => state.owner.localized(id, bytes),
                Err(reason) => {
                    tracing::warn!(object = %id, node = state.nodes.name(from), "a pull failed: {reason}");
                    state.forget_copy(id, from);
                    // Readers here ask again: another copy, or a rebuild.
                    state.owner.fetch_failed(id);
                    state.settle();
                }
            }
        });
    }
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

impl State {
    /// The node a ready task (or actor creation) should go to.
    pub(super) fn place(&self, task: TaskId, demand: &Resources) -> NodeIdx {
        let Some(remote) = &self.remote else {
            return 0;
        };
        let submitter = task.owner;
        let home = if submitter != DRIVER_OWNER && submitter != NODE_OWNER {
            Some(node_of(submitter))
        } else {
            remote.joined.home
        };
        let args: Vec<(ObjectId, u64)> = self
            .owner
            .task(task)
            .map(|r| {
                r.spec
                    .dependencies()
                    .filter_map(|id| self.owner.stored_len(id).map(|len| (id, len)))
                    .collect()
            })
            .unwrap_or_default();
        let bytes_on = |node: NodeIdx| -> u64 {
            args.iter()
                .filter(|(id, _)| self.locations.get(id).is_some_and(|l| l.contains(&node)))
                .map(|(_, len)| len)
                .sum()
        };
        self.nodes.choose(demand, home, bytes_on).unwrap_or(0)
    }

    /// A value a worker sent: in a joined cluster a shared one stays in its node's store.
    pub(super) fn value_from(
        &mut self,
        worker: WorkerId,
        value: &prism_transport::ArchivedValue,
    ) -> std::io::Result<Slot> {
        if self.remote.is_some()
            && let prism_transport::ArchivedValue::Shared { id, len } = value
        {
            self.add_location(id.to_native(), node_of(worker));
            return Ok(Slot::Remote(len.to_native()));
        }
        ObjectBytes::from_wire(&self.files.store_dir, value).map(Slot::Ready)
    }

    fn add_location(&mut self, id: ObjectId, node: NodeIdx) {
        let at = self.locations.entry(id).or_default();
        if !at.contains(&node) {
            at.push(node);
        }
    }

    /// Holds `msg` for `worker` (true) when objects it names are not yet in the worker's
    /// node's store, or when earlier frames are held; asks for the missing ones.
    pub(super) fn hold_for_objects(&mut self, worker: WorkerId, msg: &ToWorker) -> bool {
        let node = node_of(worker);
        let mut missing = shared_values(msg);
        missing.retain(|(id, _)| !self.locations.get(id).is_some_and(|l| l.contains(&node)));
        if missing.is_empty() && !self.held.contains_key(&worker) {
            return false;
        }
        let held = self.held.entry(worker).or_default();
        held.waiting.extend(missing.iter().map(|(id, _)| *id));
        if let Err(e) = encode_frame(msg, &mut held.frames) {
            tracing::error!(worker, "cannot encode a message for the worker: {e}");
        }
        // After the frame is held: a fetch that settles at once (no holder) releases it.
        for &(id, len) in &missing {
            self.fetch_to_node(node, id, len);
        }
        if self.held.get(&worker).is_some_and(|h| h.waiting.is_empty()) {
            self.release_held(worker);
        }
        true
    }

    /// A live node other than `but` whose store holds `id`.
    fn live_copy(&self, id: ObjectId, but: Option<NodeIdx>) -> Option<NodeIdx> {
        self.locations.get(&id).and_then(|at| {
            at.iter()
                .copied()
                .find(|&n| Some(n) != but && self.nodes.get(n).is_some_and(|e| e.alive))
        })
    }

    /// The copy of `id` on `node` cannot be read (its node is lost or the pull failed).
    fn forget_copy(&mut self, id: ObjectId, node: NodeIdx) {
        if let Some(at) = self.locations.get_mut(&id) {
            at.retain(|&n| n != node);
        }
    }

    /// Asks `node` to fetch `id` from a host that has it, once. With no copy left the object
    /// is rebuilt (or fails) and the frames waiting for it go: their worker reports the missing
    /// object and the task waits for the rebuild.
    fn fetch_to_node(&mut self, node: NodeIdx, id: ObjectId, len: u64) {
        if self.remote.is_none() || self.node_fetches.contains_key(&(id, node)) {
            return;
        }
        let source = match self.live_copy(id, Some(node)) {
            Some(n) => Some(Some(n)),
            None => self.owner.stored_here(id).then_some(None),
        };
        match (source, &self.remote) {
            (Some(source), Some(remote)) => {
                let from = source.map_or(remote.joined.objects_at, |n| remote.joined.nodes[n].addr);
                remote.fetch_to_node(node, id, len, from.to_string());
                self.node_fetches.insert((id, node), source);
            }
            _ => {
                self.object_lost(id, "no live node holds a copy (its node was lost)");
                self.fetch_settled(node, id);
            }
        }
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
        let is_lost = |dep: ObjectId| {
            !locations
                .get(&dep)
                .is_some_and(|at| at.iter().any(|&n| nodes.get(n).is_some_and(|e| e.alive)))
        };
        let mut rebuilt = Rebuilt::default();
        self.owner.rebuild(id, &is_lost, reason, &mut rebuilt);
        for task in rebuilt.held_back {
            let _ = self.nodes.locate_for_cancel(task);
        }
        for task in rebuilt.ready {
            tracing::warn!(task = %self.owner.describe(task), object = %id, "rebuilding a lost object: its task runs again");
            self.enqueue(task);
        }
    }

    /// Whether `worker` can be told where `id` is: false when its last copies were lost, and
    /// then the object is rebuilt and the worker waits for it again (or hears of its failure).
    pub(super) fn copy_reachable(&mut self, worker: WorkerId, id: ObjectId) -> bool {
        if self.remote.is_none() || self.owner.stored_here(id) || !self.copy_lost(id) {
            return true;
        }
        self.object_lost(id, "no live node holds a copy (its node was lost)");
        self.restore_if_spilled(id);
        self.owner.subscribe(id, worker);
        false
    }

    /// A node's fetch ended: frames waiting for it may go (on failure, the worker reports the
    /// missing object with its task).
    fn fetch_settled(&mut self, node: NodeIdx, id: ObjectId) {
        let ready: Vec<WorkerId> = self
            .held
            .iter_mut()
            .filter(|(w, _)| node_of(**w) == node)
            .filter_map(|(w, held)| {
                held.waiting.remove(&id);
                held.waiting.is_empty().then_some(*w)
            })
            .collect();
        for worker in ready {
            self.release_held(worker);
        }
    }

    fn release_held(&mut self, worker: WorkerId) {
        if let Some(held) = self.held.remove(&worker) {
            self.outbox.entry(worker).or_default().extend(held.frames);
        }
    }

    /// Copies of freed objects go; remote objects readers here wait for are fetched.
    pub(super) fn settle_remote(&mut self) {
        let Some(remote) = &self.remote else {
            // An embedded node has no copies elsewhere (and keeps the list's capacity).
            self.owner.freed.clear();
            return;
        };
        let freed = std::mem::take(&mut self.owner.freed);
        let wanted = std::mem::take(&mut self.owner.wanted_here);
        if !freed.is_empty() {
            let mut per_node: Vec<Vec<ObjectId>> = vec![Vec::new(); self.nodes.len()];
            for id in freed {
                for node in self.locations.remove(&id).unwrap_or_default() {
                    per_node[node].push(id);
                }
            }
            for (node, ids) in per_node.into_iter().enumerate() {
                if !ids.is_empty() && self.nodes.get(node).is_some_and(|n| n.alive) {
                    remote.free(node, ids);
                }
            }
        }
        let mut lost = Vec::new();
        for (id, len) in wanted {
            match self.live_copy(id, None) {
                Some(node) => remote.fetch_here(id, len, node, self.files.store_dir.clone()),
                None => lost.push(id),
            }
        }
        for id in lost {
            self.object_lost(id, "no live node holds a copy (its node was lost)");
        }
    }
}

impl Core {
    /// A worker's link relayed by its node: served like a local worker's connection.
    pub(super) fn relayed_worker(
        self: Arc<Self>,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        early: Vec<u8>,
        worker: WorkerId,
    ) {
        let (mut ours, theirs) = match tokio::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!("cannot relay a worker's link: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            if ours.write_all(&early).await.is_err() {
                return;
            }
            let mut quic_side = tokio::io::join(recv, send);
            if let Err(e) = tokio::io::copy_bidirectional(&mut ours, &mut quic_side).await {
                tracing::debug!("a relayed worker link ended: {e}");
            }
        });
        tokio::spawn(worker_pool::serve(self, theirs, worker));
    }

    /// A worker process on another node ended.
    pub(super) fn worker_gone_remote(&self, worker: WorkerId, reason: String) {
        self.worker_exited(worker, reason);
    }

    /// The connection to a node ended: its workers are dead, its queue moves elsewhere, and its
    /// copies of objects are gone.
    pub(super) fn node_lost(&self, node: NodeIdx, reason: String) {
        let mut state = self.state.lock();
        if state.shutting_down || !state.nodes.get(node).is_some_and(|n| n.alive) {
            return;
        }
        let name = state.nodes.name(node).to_string();
        tracing::error!(node = name, "lost a node of the cluster: {reason}");
        state.nodes.mark_dead(node);
        if let Some(remote) = &state.remote {
            let _guard = remote.handle.enter();
            remote
                .joined
                .drop_node(node, &format!("the job gave up on the node: {reason}"));
        }
        let workers: Vec<WorkerId> = state
            .links
            .keys()
            .copied()
            .filter(|w| node_of(*w) == node)
            .collect();
        for worker in workers {
            if let Some(link) = state.links.get_mut(&worker) {
                link.exit = Some(format!("its node {name} was lost: {reason}"));
                link.eof = true;
                if let Some(writer) = link.writer.take() {
                    writer.close();
                }
            }
            state.maybe_dead(worker);
        }
        for at in state.locations.values_mut() {
            at.retain(|&n| n != node);
        }
        state.node_fetches.retain(|&(_, n), _| n != node);
        for task in state.nodes.drain_queued(Some(node)) {
            state.enqueue(task);
        }
        state.settle();
    }

    /// A node's fetch of `id` ended.
    fn node_fetched(&self, node: NodeIdx, id: ObjectId, result: Result<(), String>) {
        let mut state = self.state.lock();
        let source = state.node_fetches.remove(&(id, node)).flatten();
        let refetching = match result {
            Ok(()) if state.owner.knows(id) => {
                state.add_location(id, node);
                false
            }
            Ok(()) => {
                // Freed while it travelled: drop the copy.
                if let Some(remote) = &state.remote {
                    remote.free(node, vec![id]);
                }
                false
            }
            Err(reason) => {
                tracing::warn!(object = %id, node = state.nodes.name(node), "a fetch failed: {reason}");
                if let Some(source) = source {
                    state.forget_copy(id, source);
                }
                // From another copy, or after a rebuild.
                match state.owner.stored_len(id) {
                    Some(len) => {
                        state.fetch_to_node(node, id, len);
                        state.node_fetches.contains_key(&(id, node))
                    }
                    None => false,
                }
            }
        };
        if !refetching {
            state.fetch_settled(node, id);
        }
        state.settle();
    }
}
