//! The shell's side of a joined cluster: carrying the node's requests to the other nodes'
//! daemons (start and kill workers, fetch and drop copies of objects), pulling objects into
//! the driver's store for its readers, serving worker links relayed by the nodes, and telling
//! the node of answers and of lost nodes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use prism_graph::{ActorId, ObjectId, TaskSpec};
use prism_transport::{ActorConfig, ActorStatus, FromHost, GroupStatus, ToHost};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::cluster::Joined;
use super::{Core, worker_pool};
use crate::proto::node::{ActorName, Event, HostRequest};
use crate::proto::nodes::{NodeIdx, node_of};
use crate::proto::scheduler::WorkerId;
use crate::store::{ObjectBytes, Segment};

/// A node's answer to a request that is done or fails: the failure's reason.
fn done(answer: Result<FromHost, String>) -> Result<(), String> {
    match answer {
        Ok(FromHost::Done) => Ok(()),
        Ok(FromHost::Error(reason)) | Err(reason) => Err(reason),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
    }
}

/// How the core reaches the nodes of the cluster it joined.
#[derive(Debug)]
pub(super) struct Remote {
    joined: Arc<Joined>,
    handle: tokio::runtime::Handle,
    core: Weak<Core>,
    /// Per node, the requests in the order the core made them: one task sends them one after
    /// another, so that the node reads them in that order (a drop of a copy, then a fetch of
    /// the same object, must not arrive the other way round).
    senders: parking_lot::Mutex<HashMap<NodeIdx, mpsc::UnboundedSender<Ordered>>>,
    /// The watches of other jobs' actors at the head, by this job's alias for each.
    watches: parking_lot::Mutex<HashMap<ActorId, tokio::task::JoinHandle<()>>>,
}

/// A request for a node, and where its answer goes.
type Ordered = (ToHost, oneshot::Sender<Result<FromHost, String>>);

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
            senders: parking_lot::Mutex::new(HashMap::new()),
            watches: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The sender of `node`'s requests, started with the first.
    fn sender(&self, node: NodeIdx) -> mpsc::UnboundedSender<Ordered> {
        let mut senders = self.senders.lock();
        if let Some(sender) = senders.get(&node)
            && !sender.is_closed()
        {
            return sender.clone();
        }
        let (sender, mut requests) = mpsc::unbounded_channel::<Ordered>();
        let joined = self.joined.clone();
        self.handle.spawn(async move {
            while let Some((request, answer)) = requests.recv().await {
                match joined.send_request(node, &request).await {
                    Ok(reading) => {
                        tokio::spawn(async move {
                            let _ = answer.send(reading.await);
                        });
                    }
                    Err(e) => {
                        let _ = answer.send(Err(e));
                    }
                }
            }
        });
        senders.insert(node, sender.clone());
        sender
    }

    /// Sends `request` to `node`; `then` gets the core and the answer (an error as text).
    fn request(
        &self,
        node: NodeIdx,
        request: prism_transport::ToHost,
        then: impl FnOnce(&Core, Result<FromHost, String>) + Send + 'static,
    ) {
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, answer))) = self.sender(node).send((request, answer))
        {
            let _ = answer.send(Err(format!("no sender of requests to node {node}")));
        }
        let core = self.core.clone();
        self.handle.spawn(async move {
            let answer = (answered.await)
                .unwrap_or_else(|_| Err("the request was dropped unanswered".to_string()));
            if let Some(core) = core.upgrade() {
                then(&core, answer);
            }
        });
    }

    pub(super) fn spawn_worker(
        &self,
        node: NodeIdx,
        worker: WorkerId,
        binary_from: Option<NodeIdx>,
    ) {
        let request = HostRequest::Spawn {
            worker,
            binary_from,
        };
        self.host(node, request);
    }

    pub(super) fn kill_worker(&self, worker: WorkerId) {
        self.host(node_of(worker), HostRequest::Kill { worker });
    }

    /// Sends the node's `request` to `node` and tells the node its answer.
    pub(super) fn host(&self, node: NodeIdx, request: HostRequest) {
        let joined = &self.joined;
        let wire = request.to_wire(|from| {
            from.and_then(|n| joined.addr_of(n))
                .unwrap_or(joined.objects_at)
                .to_string()
        });
        match request {
            HostRequest::Spawn { worker, .. } => {
                self.request(node, wire, move |core, answer| match answer {
                    Ok(FromHost::Spawned(pid)) => core.worker_spawned(worker, pid, None),
                    Ok(FromHost::Error(reason)) | Err(reason) => core.worker_exited(worker, reason),
                    Ok(other) => core.worker_exited(worker, format!("unexpected answer {other:?}")),
                })
            }
            HostRequest::Spill(objects) => self.request(node, wire, move |core, answer| {
                if let Err(reason) = done(answer) {
                    let ids = objects.iter().map(|&(id, _)| id).collect();
                    core.event(Event::NodeSpillFailed { node, ids, reason });
                }
            }),
            HostRequest::Fetch { id, .. } | HostRequest::Restore { id, .. } => {
                self.request(node, wire, move |core, answer| {
                    let result = done(answer);
                    core.event(Event::NodeFetched { node, id, result });
                })
            }
            HostRequest::EndJob => {
                let joined = self.joined.clone();
                self.request(node, wire, move |core, answer| match done(answer) {
                    Ok(()) => {
                        let why = "it drained and stopped the job's processes";
                        core.node_lost(node, why.to_string(), std::time::Instant::now());
                    }
                    Err(reason) => {
                        let why =
                            format!("it drained, but could not stop the job's processes: {reason}");
                        core.node_lost(node, why, joined.lease_end(node));
                    }
                })
            }
            HostRequest::Grant { shape } => {
                self.request(node, wire, move |core, answer| match answer {
                    Ok(FromHost::Granted) => core.event(Event::Granted { node, shape }),
                    Ok(FromHost::Error(reason)) | Err(reason) => core.event(Event::GrantRefused {
                        node,
                        shape,
                        reason,
                    }),
                    Ok(other) => core.event(Event::GrantRefused {
                        node,
                        shape,
                        reason: format!("unexpected answer {other:?}"),
                    }),
                })
            }
            HostRequest::Pool { .. } => self.request(node, wire, move |_, answer| {
                if let Err(reason) = done(answer) {
                    tracing::warn!(node, "the node leases no workers of its own: {reason}");
                }
            }),
            HostRequest::Peers { .. } => self.request(node, wire, move |_, answer| {
                if let Err(reason) = done(answer) {
                    tracing::warn!(node, "the node passes no lease asks on: {reason}");
                }
            }),
            HostRequest::LeaseWorker { .. } => {
                self.request(node, wire, move |core, answer| match answer {
                    Ok(FromHost::Lent { worker, pid }) => {
                        core.event(Event::NodeLent { node, worker, pid })
                    }
                    Ok(FromHost::Error(reason)) | Err(reason) => {
                        core.event(Event::NodeLendFailed { node, reason })
                    }
                    Ok(other) => core.event(Event::NodeLendFailed {
                        node,
                        reason: format!("unexpected answer {other:?}"),
                    }),
                })
            }
            HostRequest::Kill { .. }
            | HostRequest::ReturnWorker { .. }
            | HostRequest::KeepWorker { .. }
            | HostRequest::Free(_)
            | HostRequest::Drop(_)
            | HostRequest::DropOwnedBy { .. }
            | HostRequest::ForgetPeer { .. }
            | HostRequest::Return { .. } => self.request(node, wire, |_, _| {}),
        }
    }

    /// Claims `name` for `actor` at the head and tells the node its word.
    pub(super) fn claim_name(&self, actor: ActorId, name: ActorName, class: String) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let outcome = joined.claim_name(&name, actor, class).await;
            if let Some(core) = core.upgrade() {
                core.event(Event::NameClaimed { actor, outcome });
            }
        });
    }

    /// Asks the head which actor has `name` and tells the node its answer to lookup `find`.
    pub(super) fn find_name(&self, find: u64, name: ActorName) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let outcome = joined.find_name(&name).await;
            if let Some(core) = core.upgrade() {
                core.event(Event::NameFound { find, outcome });
            }
        });
    }

    /// Has the head make a detached actor and tells the node its answer to `find`.
    pub(super) fn create_detached(&self, find: u64, spec: Box<TaskSpec>, setup: Box<ActorConfig>) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let outcome = joined.create_detached(*spec, *setup).await;
            if let Some(core) = core.upgrade() {
                core.event(Event::DetachedMade { find, outcome });
            }
        });
    }

    /// Has the head kill job `job`'s actor `actor`; its word comes as an
    /// [`Event::ForeignKilled`] for `kill`.
    pub(super) fn kill_foreign(&self, kill: u64, job: String, actor: ActorId) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let outcome = (joined.kill_foreign(&job, actor).await).map_err(|e| e.to_string());
            if let Some(core) = core.upgrade() {
                core.event(Event::ForeignKilled { kill, outcome });
            }
        });
    }

    /// Follows job `job`'s actor `actor`, this job's `alias`, at the head.
    pub(super) fn watch_actor(&self, alias: ActorId, job: String, actor: ActorId) {
        let watch = (self.joined.clone()).watch_actor(alias, job, actor, self.core.clone());
        let task = self.handle.spawn(watch);
        if let Some(old) = self.watches.lock().insert(alias, task) {
            old.abort();
        }
    }

    /// Stops following another job's actor `alias`.
    pub(super) fn unwatch_actor(&self, alias: ActorId) {
        if let Some(task) = self.watches.lock().remove(&alias) {
            task.abort();
        }
    }

    /// Tells the head's directory of the job's `actors` and `groups` now.
    pub(super) fn publish(&self, actors: Vec<ActorStatus>, groups: Vec<GroupStatus>) {
        let _guard = self.handle.enter();
        self.joined.publish(actors, groups);
    }

    /// Releases `actor`'s claim on `name` at the head.
    pub(super) fn release_name(&self, actor: ActorId, name: ActorName) {
        let joined = self.joined.clone();
        self.handle
            .spawn(async move { joined.release_name(&name, actor).await });
    }

    /// Gives up on a node: its connection is closed.
    pub(super) fn drop_node(&self, node: NodeIdx, reason: &str) {
        let _guard = self.handle.enter();
        self.joined.drop_node(node, reason);
    }

    /// Pulls `id` from node `from` into the driver's store for its readers.
    pub(super) fn fetch_here(
        &self,
        id: ObjectId,
        len: u64,
        from: NodeIdx,
        store: std::path::PathBuf,
    ) {
        let (joined, core) = (self.joined.clone(), self.core.clone());
        self.handle.spawn(async move {
            let pulled = match joined.addr_of(from) {
                Some(addr) => {
                    joined
                        .peers
                        .pull_to_store(&joined.job, addr, &store, id, len)
                        .await
                }
                None => Err(format!("no node {from}")),
            };
            let pulled = pulled.and_then(|()| {
                Segment::open(&store, id, len)
                    .map(|s| ObjectBytes::Shared(Arc::new(s)))
                    .map_err(|e| format!("cannot map {id} after its pull: {e}"))
            });
            let Some(core) = core.upgrade() else { return };
            core.event(match pulled {
                Ok(bytes) => Event::Localized { id, bytes },
                Err(reason) => Event::PullFailed { id, from, reason },
            });
        });
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

    /// Node `node`'s daemon started worker `worker` (pid `pid`) for a lease of its own.
    pub(super) fn node_started_worker(
        &self,
        node: NodeIdx,
        worker: WorkerId,
        pid: u32,
    ) -> Result<(), crate::proto::node::Refused> {
        (self.state.lock()).event(Event::NodeStartedWorker { node, worker, pid })
    }

    /// A worker process on another node ended.
    pub(super) fn worker_gone_remote(&self, worker: WorkerId, reason: String) {
        self.worker_exited(worker, reason);
    }

    /// A node joined the cluster and hosts the job now: the core counts it (its index) and
    /// starts its workers. `None` when the core numbers as many nodes as it can.
    pub(super) fn node_joined(
        &self,
        joined: &Joined,
        node: Arc<super::cluster::RemoteNode>,
    ) -> Option<NodeIdx> {
        let mut shell = self.state.lock();
        let max_workers = self.config.max_workers_for(node.total.cpu.as_f64());
        let idx = shell.node.join_node(
            node.name.clone(),
            node.total.clone(),
            self.config.max_inflight(),
            max_workers,
        )?;
        shell.node.set_peer_address(idx, node.addr.to_string());
        let pushed = joined.push_node(node);
        debug_assert_eq!(idx, pushed, "the core and the cluster number nodes alike");
        shell.act();
        Some(idx)
    }

    /// The connection to a node ended: its workers are dead, its queue moves elsewhere, and its
    /// copies of objects are gone; what may still run there stops by `lease_end`.
    pub(super) fn node_lost(&self, node: NodeIdx, reason: String, lease_end: std::time::Instant) {
        self.event(Event::NodeLost {
            node,
            reason,
            lease_end,
        });
    }

    /// Node `node` asks for the grants the job does not use (see [`Event::Reclaim`]).
    pub(super) fn node_reclaims(&self, node: NodeIdx, keep: prism_graph::Resources) {
        self.event(Event::Reclaim { node, keep });
    }

    /// Node `node` is leaving (see [`Event::NodeDraining`]).
    pub(super) fn node_draining(&self, node: NodeIdx, reason: String) {
        self.event(Event::NodeDraining { node, reason });
    }

    /// Hands `event` to the node and carries out what it decided.
    pub(super) fn event(&self, event: Event<'_>) {
        let _ = self.state.lock().event(event);
    }
}
