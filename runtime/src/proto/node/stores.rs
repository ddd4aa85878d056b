//! What each node's store of a joined cluster holds, as the driver counts it: the bytes of the
//! copies in shared memory against the store's capacity (the job's, as on the driver's own
//! store), and which copies the node spilled to its disk. A node over its capacity lets the
//! least recently used copies that no waiting or running task needs go: a copy of an object
//! held elsewhere too is dropped, the last copy is spilled ([`HostRequest::Spill`]). A spilled
//! copy still serves pulls (from the disk), and is restored ([`HostRequest::Restore`]) before
//! a task on its node reads it. Fetches and restores into a node are admitted while they fit,
//! so that a node does not take in more than its store holds because many tasks sent to it
//! at once read objects it does not have in memory; a full node takes one at a time when
//! none of its workers can go on meanwhile (else a task that ends lets copies go first).

use std::collections::VecDeque;

use prism_graph::{IdMap, ObjectId};

use super::{Action, HostRequest, State};
use crate::proto::nodes::NodeIdx;

/// The copies in each node's store.
#[derive(Debug, Default)]
pub(super) struct NodeStores {
    stores: Vec<NodeStore>,
}

#[derive(Debug, Default)]
struct NodeStore {
    /// Bytes in shared memory.
    bytes: u64,
    copies: IdMap<ObjectId, Copy>,
    /// Bytes being fetched or restored into it.
    incoming: u64,
    /// Fetches and restores waiting for room, in the order asked.
    waiting: VecDeque<(ObjectId, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Copy {
    len: u64,
    spilled: bool,
}

impl NodeStores {
    fn at(&mut self, node: NodeIdx) -> &mut NodeStore {
        if self.stores.len() <= node {
            self.stores.resize_with(node + 1, NodeStore::default);
        }
        &mut self.stores[node]
    }

    /// A copy of `id` (`len` bytes) is in `node`'s shared memory.
    pub(super) fn add(&mut self, node: NodeIdx, id: ObjectId, len: u64) {
        let store = self.at(node);
        if let std::collections::hash_map::Entry::Vacant(entry) = store.copies.entry(id) {
            entry.insert(Copy {
                len,
                spilled: false,
            });
            store.bytes += len;
        }
    }

    /// `node`'s copy of `id` is gone.
    pub(super) fn remove(&mut self, node: NodeIdx, id: ObjectId) {
        let store = self.at(node);
        if let Some(copy) = store.copies.remove(&id)
            && !copy.spilled
        {
            store.bytes = store.bytes.saturating_sub(copy.len);
        }
    }

    /// `node` is gone with its copies.
    pub(super) fn clear(&mut self, node: NodeIdx) {
        *self.at(node) = NodeStore::default();
    }

    /// Whether `node`'s copy of `id` is on its disk.
    pub(super) fn spilled(&self, node: NodeIdx, id: ObjectId) -> bool {
        self.stores
            .get(node)
            .and_then(|s| s.copies.get(&id))
            .is_some_and(|c| c.spilled)
    }

    /// `node`'s copy of `id` goes to its disk (`true`) or back to shared memory.
    pub(super) fn set_spilled(&mut self, node: NodeIdx, id: ObjectId, spilled: bool) {
        let store = self.at(node);
        let Some(copy) = store.copies.get_mut(&id) else {
            return;
        };
        if copy.spilled != spilled {
            copy.spilled = spilled;
            match spilled {
                true => store.bytes = store.bytes.saturating_sub(copy.len),
                false => store.bytes += copy.len,
            }
        }
    }

    /// Whether `len` more bytes fit in `node`'s store with what is on its way, and whether
    /// nothing is on its way.
    fn room(&self, node: NodeIdx, len: u64, capacity: u64) -> (bool, bool) {
        self.stores.get(node).map_or((true, true), |s| {
            (s.bytes + s.incoming + len <= capacity, s.incoming == 0)
        })
    }

    /// `len` bytes start coming into `node`'s store (`true`) or arrived or failed.
    pub(super) fn incoming(&mut self, node: NodeIdx, len: u64, starting: bool) {
        let store = self.at(node);
        match starting {
            true => store.incoming += len,
            false => store.incoming = store.incoming.saturating_sub(len),
        }
    }

    /// `id` (`len` bytes) waits for room in `node`'s store.
    pub(super) fn wait(&mut self, node: NodeIdx, id: ObjectId, len: u64) {
        let store = self.at(node);
        if !store.waiting.iter().any(|(w, _)| *w == id) {
            store.waiting.push_back((id, len));
        }
    }

    /// The size of the next object waiting for room in `node`'s store.
    fn next_waiting(&self, node: NodeIdx) -> Option<u64> {
        self.stores.get(node)?.waiting.front().map(|&(_, len)| len)
    }

    fn pop_waiting(&mut self, node: NodeIdx) -> Option<(ObjectId, u64)> {
        self.stores.get_mut(node)?.waiting.pop_front()
    }

    /// The nodes with objects waiting for room.
    fn with_waiting(&self) -> Vec<NodeIdx> {
        (0..self.stores.len())
            .filter(|&n| !self.stores[n].waiting.is_empty())
            .collect()
    }

    /// Bytes in shared memory.
    pub(super) fn bytes(&self, node: NodeIdx) -> u64 {
        self.stores.get(node).map_or(0, |s| s.bytes)
    }

    /// The copies in `node`'s shared memory, with their lengths.
    fn in_memory(&self, node: NodeIdx) -> impl Iterator<Item = (ObjectId, u64)> + '_ {
        self.stores.get(node).into_iter().flat_map(|s| {
            s.copies
                .iter()
                .filter(|(_, c)| !c.spilled)
                .map(|(id, c)| (*id, c.len))
        })
    }
}

impl State {
    /// Notes that `node`'s store grew: it makes room at the end of the step, once the
    /// objects freed meanwhile are gone (see [`State::make_room_on_nodes`]).
    pub(super) fn grew(&mut self, node: NodeIdx) {
        if self.stores.bytes(node) > self.owner.capacity && !self.crowded.contains(&node) {
            self.crowded.push(node);
        }
    }

    /// Makes room on the nodes whose stores grew over their capacity, then starts the
    /// fetches and restores that fit now.
    pub(super) fn make_room_on_nodes(&mut self) {
        for node in std::mem::take(&mut self.crowded) {
            if self.nodes.get(node).is_some_and(|n| n.alive) {
                self.make_room_on(node);
            }
        }
        for node in self.stores.with_waiting() {
            while let Some(len) = self.stores.next_waiting(node)
                && self.admits(node, len)
                && let Some((id, len)) = self.stores.pop_waiting(node)
            {
                match self.owner.knows(id) {
                    true => self.fetch_to_node(node, id, len),
                    // Freed meanwhile: whatever waited for it goes on.
                    false => self.fetch_settled(node, id),
                }
            }
        }
    }

    /// Whether `len` more bytes may come into `node`'s store now: they fit with what is on its
    /// way, or nothing is on its way and none of its workers has a task it can run (so that a
    /// full node still makes progress; a task that ends lets copies go).
    pub(super) fn admits(&self, node: NodeIdx, len: u64) -> bool {
        match self.stores.room(node, len, self.owner.capacity) {
            (true, _) => true,
            (false, false) => false,
            (false, true) => !self
                .nodes
                .working(node)
                .any(|(worker, tasks)| tasks > self.held_tasks(worker)),
        }
    }

    /// Lets copies on `node` go until its store is within the capacity (never a copy that a
    /// task waiting or running needs, nor one being fetched): another node's or this process's
    /// copy makes one needless, else it is spilled.
    fn make_room_on(&mut self, node: NodeIdx) {
        let capacity = self.owner.capacity;
        if self.stores.bytes(node) <= capacity {
            return;
        }
        let mut victims: Vec<(u64, ObjectId, u64)> = self
            .stores
            .in_memory(node)
            .filter(|&(id, _)| !self.node_fetches.contains_key(&(id, node)))
            .filter_map(|(id, len)| match self.owner.use_of(id) {
                Some((last_use, false)) => Some((last_use, id, len)),
                _ => None,
            })
            .collect();
        victims.sort_unstable();
        let mut spill = Vec::new();
        for (_, id, len) in victims {
            if self.stores.bytes(node) <= capacity {
                break;
            }
            let elsewhere = self.owner.stored_here(id) || self.live_copy(id, Some(node)).is_some();
            if elsewhere {
                self.forget_copy(id, node);
            } else {
                self.stores.set_spilled(node, id, true);
                spill.push((id, len));
            }
        }
        if self.stores.bytes(node) > capacity {
            tracing::warn!(
                node = self.nodes.name(node),
                bytes = self.stores.bytes(node),
                capacity,
                "a node's object store is over capacity and nothing more can leave it"
            );
        }
        if !spill.is_empty() {
            tracing::debug!(
                node = self.nodes.name(node),
                objects = spill.len(),
                "spilling on a node"
            );
            let request = HostRequest::Spill(spill);
            self.actions.push_back(Action::Host { node, request });
        }
    }

    /// A node could not spill `ids` (for `reason`): they stay in its shared memory.
    pub(super) fn node_spill_failed(&mut self, node: NodeIdx, ids: Vec<ObjectId>, reason: &str) {
        tracing::error!(
            node = self.nodes.name(node),
            "cannot spill on the node: {reason}"
        );
        for id in ids {
            self.stores.set_spilled(node, id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_graph::TaskId;

    fn id(n: u64) -> ObjectId {
        ObjectId::new(TaskId::new(0, n), 0)
    }

    #[test]
    fn bytes_count_copies_in_shared_memory_once() {
        let mut stores = NodeStores::default();
        stores.add(2, id(1), 100);
        stores.add(2, id(1), 100);
        stores.add(2, id(2), 50);
        assert_eq!(stores.bytes(2), 150);
        stores.set_spilled(2, id(1), true);
        stores.set_spilled(2, id(1), true);
        assert!(stores.spilled(2, id(1)));
        assert_eq!(stores.bytes(2), 50, "a spilled copy is on disk");
        stores.remove(2, id(1));
        assert_eq!(
            stores.bytes(2),
            50,
            "freeing a spilled copy frees no memory"
        );
        stores.set_spilled(2, id(2), true);
        stores.set_spilled(2, id(2), false);
        assert_eq!(stores.bytes(2), 50, "restored");
        stores.clear(2);
        assert_eq!(stores.bytes(2), 0);
        assert_eq!(stores.bytes(7), 0);
    }
}
