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
use super::nodes::{NodeIdx, node_of};
use super::object_store::{ObjectBytes, Segment};
use super::scheduler::WorkerId;
use super::{Core, DRIVER_OWNER, NODE_OWNER, State, worker_pool};
use crate::owner::Slot;

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
                Ok(FromHost::Spawned(pid)) => core.worker_spawned(worker, pid),
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

    /// Pulls `id` from `from` into the driver's store for its readers.
    fn fetch_here(
        &self,
        id: ObjectId,
        len: u64,
        from: std::net::SocketAddr,
        store: std::path::PathBuf,
    ) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let pulled = joined
                .peers
                .pull_to_store(&joined.job, from, &store, id, len)
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
                Err(reason) => state.owner.unavailable(id, reason),
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
        ObjectBytes::from_wire(&self.owner.store_dir, value).map(Slot::Ready)
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

    /// Asks `node` to fetch `id` from a host that has it, once.
    fn fetch_to_node(&mut self, node: NodeIdx, id: ObjectId, len: u64) {
        let Some(remote) = &self.remote else { return };
        if !self.node_fetches.insert((id, node)) {
            return;
        }
        let holder = self
            .locations
            .get(&id)
            .and_then(|at| {
                at.iter()
                    .find(|&&n| n != node && self.nodes.get(n).is_some_and(|e| e.alive))
            })
            .map(|&n| remote.joined.nodes[n].addr)
            .or_else(|| {
                self.owner
                    .stored_here(id)
                    .then_some(remote.joined.objects_at)
            });
        match holder {
            Some(from) => remote.fetch_to_node(node, id, len, from.to_string()),
            None => {
                let reason = format!("no live host holds {id}");
                tracing::error!(object = %id, node = self.nodes.name(node), "{reason}");
                self.node_fetches.remove(&(id, node));
                self.fetch_settled(node, id);
            }
        }
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
        for (id, len) in wanted {
            let holder = self.locations.get(&id).and_then(|at| {
                at.iter()
                    .find(|&&n| self.nodes.get(n).is_some_and(|e| e.alive))
            });
            match holder {
                Some(&node) => remote.fetch_here(
                    id,
                    len,
                    remote.joined.nodes[node].addr,
                    self.owner.store_dir.clone(),
                ),
                None => self
                    .owner
                    .unavailable(id, "no live node holds a copy (its node was lost)".into()),
            }
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
        tokio::spawn(worker_pool::serve(self, theirs));
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
        state.node_fetches.retain(|&(_, n)| n != node);
        for task in state.nodes.drain_queued(Some(node)) {
            state.enqueue(task);
        }
        state.settle();
    }

    /// A node's fetch of `id` ended.
    fn node_fetched(&self, node: NodeIdx, id: ObjectId, result: Result<(), String>) {
        let mut state = self.state.lock();
        state.node_fetches.remove(&(id, node));
        match result {
            Ok(()) if state.owner.knows(id) => state.add_location(id, node),
            Ok(()) => {
                // Freed while it travelled: drop the copy.
                if let Some(remote) = &state.remote {
                    remote.free(node, vec![id]);
                }
            }
            Err(reason) => {
                tracing::error!(object = %id, node = state.nodes.name(node), "a fetch failed: {reason}");
            }
        }
        state.fetch_settled(node, id);
        state.settle();
    }
}
