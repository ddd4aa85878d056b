//! Leases for worker owners: a worker that owns its plain tasks
//! ([`ToWorker::OwnTasks`]) asks its node for a worker of a resource shape; the ask queues in
//! the node's scheduler like a task of that shape (keyed by an id of the owner's that none
//! of its tasks has), and is granted where the scheduler would dispatch that task, or nest it
//! on the blocked owner that names the key as awaited. The node then
//! relays the frames the owner and the leased worker send each other
//! ([`ToNode::Forward`]) and tells the owner when the leased worker dies; it keeps none of
//! the tasks.
//!
//! [`ToNode::Forward`]: prism_transport::ToNode::Forward

use prism_graph::{Resources, TaskId};
use prism_transport::{OwnedEvent, ToWorker};

use super::State;
use crate::proto::nodes::{NodeIdx, node_of};
use crate::proto::scheduler::{Admission, WorkerId};

/// One lease asked for by a worker owner.
#[derive(Debug)]
pub(super) struct Lease {
    /// The worker that asked.
    owner: WorkerId,
    /// The worker it was granted on, once granted.
    worker: Option<WorkerId>,
    /// The resources of each of its tasks.
    shape: Resources,
}

impl State {
    /// Whether workers may own their plain tasks: the frames they send each other pass
    /// through their node (this one for its own workers, a node daemon for its), which relays
    /// them ([`crate::proto::relay`]).
    pub(super) fn lets_workers_own(&self) -> bool {
        self.worker_owners
    }

    /// Worker `owner` asks for a lease on a worker of `shape`, keyed `key`.
    pub(super) fn ask_lease(&mut self, owner: WorkerId, key: TaskId, shape: Resources) {
        let refused = if !self.lets_workers_own() {
            Some("this node does not lease workers to owners")
        } else if key.owner != owner {
            Some("the key is not the asking worker's")
        } else if self.leases.contains_key(&key) {
            Some("a lease under this key is open already")
        } else {
            None
        };
        if let Some(why) = refused {
            tracing::warn!(worker = owner, lease = %key, "a lease ask is refused: {why}");
            let reason = format!("lease {key} refused: {why}");
            self.encode_to(owner, &ToWorker::LeaseEnded { key, reason });
            return;
        }
        self.leases.insert(
            key,
            Lease {
                owner,
                worker: None,
                shape: shape.clone(),
            },
        );
        // On the owner's node while it has room (or nothing else is reachable), else at once
        // on the node with the most room: spillback at the ask, not at the next rebalance.
        let home = node_of(owner);
        let node = match self.room_for_lease(home, &shape) {
            0 => self.lease_node(home, &shape).unwrap_or(home),
            _ => home,
        };
        if self.nodes.submit_exclusive(node, key, shape.clone()) == Admission::Infeasible {
            tracing::warn!(
                worker = owner, lease = %key,
                "a lease for {shape} waits: the node has {} in total",
                self.nodes.total()
            );
        }
    }

    /// Node `node`'s daemon serves its peers at `address` (a joined cluster's node): leases
    /// may be granted on its workers to owners on other nodes.
    pub(crate) fn set_peer_address(&mut self, node: NodeIdx, address: String) {
        self.peer_addresses.insert(node, address);
        self.peers_changed = true;
    }

    /// Lease ask `key` was taken out of its node's queue (to move to a node with room, or as
    /// its node drains, joined or was lost): it queues on the node with the most room for its
    /// shape among those whose daemons can be reached (its owner's first on a tie), to be
    /// granted there. Where no other node can be (an embedded node, a simulated cluster
    /// without addresses) its owner hands a share of its tasks to this node instead
    /// ([`State::spill_lease`], `sharers` owners sharing the room).
    pub(super) fn place_lease(&mut self, key: TaskId, sharers: usize) {
        let Some(lease) = self.leases.get(&key) else {
            return;
        };
        let home = node_of(lease.owner);
        let shape = lease.shape.clone();
        match self.lease_node(home, &shape) {
            Some(node) => {
                if self.nodes.submit_exclusive(node, key, shape.clone()) == Admission::Infeasible {
                    let on = self.nodes.name(node);
                    tracing::warn!(lease = %key, "a lease for {shape} waits on {on}: it has too little");
                }
            }
            None => self.spill_lease(key, sharers),
        }
    }

    /// Where a lease of `shape` for an owner on node `home` goes: the node with the most room
    /// for it among the home and the nodes whose daemons can be reached, the home on a tie;
    /// `None` when no other node can be reached.
    fn lease_node(&self, home: NodeIdx, shape: &Resources) -> Option<NodeIdx> {
        let reachable = |idx: NodeIdx| idx == home || self.peer_addresses.contains_key(&idx);
        if !(0..self.nodes.len()).any(|idx| idx != home && reachable(idx)) {
            return None;
        }
        (0..self.nodes.len())
            .filter(|&idx| reachable(idx))
            .map(|idx| (self.room_for_lease(idx, shape), idx == home, idx))
            .max()
            .map(|(_, _, idx)| idx)
    }

    /// How many tasks of `shape` node `idx` could start now (none when it takes no work).
    fn room_for_lease(&self, idx: NodeIdx, shape: &Resources) -> usize {
        (self.nodes.get(idx))
            .filter(|node| node.takes_work())
            .map_or(0, |node| node.sched.room_for(shape))
    }

    /// Lease ask `key`'s owner hands the tasks it was for to this node, which places them
    /// (no other node's daemon can be reached to lease a worker there). The room is shared
    /// among `sharers` owners spilling at once.
    fn spill_lease(&mut self, key: TaskId, sharers: usize) {
        let Some(lease) = self.leases.remove(&key) else {
            return;
        };
        let home = node_of(lease.owner);
        let room: usize = (0..self.nodes.len())
            .filter(|&idx| idx != home)
            .filter_map(|idx| self.nodes.get(idx))
            .filter(|node| node.takes_work())
            .map(|node| node.sched.room_for(&lease.shape))
            .sum::<usize>()
            / sharers.max(1);
        let home = self
            .nodes
            .get(home)
            .map_or(1, |node| fits(node.sched.total(), &lease.shape));
        let (room, home) = (clamp(room.max(1)), clamp(home.max(1)));
        self.encode_to(lease.owner, &ToWorker::Spill { key, room, home });
    }

    /// Lease ask `key` can never be granted (why): its owner hears, and fails the tasks it
    /// was for.
    pub(super) fn refuse_lease(&mut self, key: TaskId, reason: String) {
        if let Some(lease) = self.leases.remove(&key) {
            self.encode_to(lease.owner, &ToWorker::LeaseEnded { key, reason });
        }
    }

    /// The scheduler placed lease `key` on `worker` (to run "its" task there, or on top of
    /// the blocked owner): the owner hears. False when `key` is no lease.
    pub(super) fn grant_lease(&mut self, worker: WorkerId, key: TaskId) -> bool {
        let Some(lease) = self.leases.get_mut(&key) else {
            return false;
        };
        lease.worker = Some(worker);
        let owner = lease.owner;
        let at = (node_of(worker) != node_of(owner))
            .then(|| self.peer_addresses.get(&node_of(worker)).cloned())
            .flatten();
        // The driver's grants keep to the relays (their workers' endpoints are the nodes').
        let direct = None;
        self.encode_to(
            owner,
            &ToWorker::Leased {
                key,
                worker,
                at,
                direct,
            },
        );
        true
    }

    /// Worker `owner` cancels a task it pushed under lease `key` by force: the leased worker
    /// is killed (its owner hears of the lease's end as of any death; a worker leased to
    /// itself is not killed).
    pub(super) fn kill_leased(&mut self, owner: WorkerId, key: TaskId) {
        let leased = self.leases.get(&key).filter(|l| l.owner == owner);
        let Some(worker) = leased.and_then(|l| l.worker).filter(|&w| w != owner) else {
            return;
        };
        tracing::info!(lease = %key, worker, "force-cancel kills the leased worker");
        self.kill_worker(worker);
    }

    /// Worker `owner` gives lease `key` back (or withdraws its ask).
    pub(super) fn end_lease(&mut self, owner: WorkerId, key: TaskId) {
        if self.leases.get(&key).is_none_or(|l| l.owner != owner) {
            return;
        }
        if let Some(lease) = self.leases.remove(&key) {
            self.drop_lease(key, lease);
        }
    }

    /// Lease `key` ends at the scheduler: its worker is free again, or its ask leaves the
    /// queue.
    fn drop_lease(&mut self, key: TaskId, lease: Lease) {
        match lease.worker {
            Some(worker) => self.nodes.task_done(worker, key),
            None => {
                let _ = self.nodes.locate_for_cancel(key);
            }
        }
    }

    /// Worker `gone` is gone: the leases it held end, and the owners of the leases granted
    /// on it hear why. A worker leased to it is killed (as Ray's raylet kills the workers
    /// leased to a dead owner): it may still run, or hold queued, tasks whose ends have
    /// nowhere to go, and only its exit tells when it is free; its lease ends then.
    pub(super) fn leases_of_gone(&mut self, gone: WorkerId, reason: &str) {
        if self.leases.is_empty() {
            return;
        }
        let held: Vec<TaskId> = (self.leases.iter())
            .filter(|(_, l)| l.owner == gone)
            .map(|(k, _)| *k)
            .collect();
        for key in held {
            match self.leases.get(&key).and_then(|l| l.worker) {
                Some(worker) if worker != gone => {
                    tracing::info!(lease = %key, worker, owner = gone, "the owner died: the worker leased to it is killed");
                    self.kill_worker(worker);
                }
                // Granted on itself: it goes with the worker.
                Some(_) => {
                    self.leases.remove(&key);
                }
                // Not granted yet: the ask leaves the queue.
                None => {
                    if let Some(lease) = self.leases.remove(&key) {
                        self.drop_lease(key, lease);
                    }
                }
            }
        }
        let granted: Vec<(TaskId, WorkerId)> = (self.leases.iter())
            .filter(|(_, l)| l.worker == Some(gone))
            .map(|(k, l)| (*k, l.owner))
            .collect();
        for (key, owner) in granted {
            self.leases.remove(&key);
            if self.workers.contains_key(&owner) {
                let reason = format!("leased worker {gone} died: {reason}");
                self.encode_to(owner, &ToWorker::LeaseEnded { key, reason });
            }
        }
    }

    /// Worker `owner` reports what happened to tasks it owns (written at `sent_us` by its
    /// clock): recorded in the task events like the node's own tasks'.
    pub(super) fn owned_events(
        &mut self,
        owner: WorkerId,
        sent_us: u64,
        events: &rkyv::vec::ArchivedVec<rkyv::Archived<OwnedEvent>>,
    ) {
        let Some(now) = self.now else {
            return;
        };
        let running = self.nodes.running_task(owner);
        let workers = &self.workers;
        let pid = |worker: WorkerId| workers.get(&worker).and_then(|l| l.pid);
        (self.owner.events).owned(owner, now, sent_us, events, running, pid);
    }

    /// Whether worker `owner` holds or asked for a lease.
    pub(super) fn holds_leases(&self, owner: WorkerId) -> bool {
        self.leases.values().any(|l| l.owner == owner)
    }

    /// Whether `task` is a lease's key (not a task this node owns).
    pub(super) fn is_lease(&self, task: TaskId) -> bool {
        !self.leases.is_empty() && self.leases.contains_key(&task)
    }

    /// Worker `from` sends `frame` to worker `to` of this node ([`relay::route`] checked
    /// it): relayed as it is.
    ///
    /// [`relay::route`]: crate::proto::relay::route
    pub(super) fn forward(&mut self, from: WorkerId, to: WorkerId, frame: &[u8]) {
        if !self.workers.get(&to).is_some_and(|l| l.connected) {
            // The other worker is gone: what it was sent goes with it (its owner hears of
            // the loss as a lease's end; an owner's results have no one to go to).
            tracing::debug!(
                worker = from,
                to,
                "a frame for a worker that is gone is dropped"
            );
            return;
        }
        self.outbox.entry(to).or_default().extend_from_slice(frame);
    }
}

/// How many tasks of `shape` fit in `total` at once (at most 4,096: a shape of nothing fits
/// any number).
fn fits(total: &Resources, shape: &Resources) -> usize {
    let mut left = total.clone();
    let mut n = 0;
    while n < 4_096 && shape.fits_in(&left) {
        left.subtract(shape);
        n += 1;
    }
    n
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
