//! Where each node of a joined cluster gets the job's binary from, without IO: a node fetches
//! it when it starts the job's first worker there, from the driver or from a node that has it
//! already, each source serving at most [`SERVES_PER_SOURCE`] fetches at once; a worker start
//! on a node that needs it waits while every source is busy. So a job that starts on many
//! nodes at once spreads its binary as a broadcast does (a tree: each node that has it serves
//! the next ones) instead of sending one copy per node out of the driver. A node has the
//! binary once one of its workers of the job connected; a node that fails to fetch it from
//! another node fetches it from the driver (the daemon's side, `proto::host`).

use std::collections::VecDeque;

use prism_graph::{IdMap, IdSet};

use crate::proto::nodes::NodeIdx;
use crate::proto::scheduler::WorkerId;

/// Fetches of the binary one source (the driver, or a node) serves at once.
pub(super) const SERVES_PER_SOURCE: usize = 2;

/// A source of the binary: a node, or the driver (`None`).
type Source = Option<NodeIdx>;

/// What to do with a worker start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Start it now; its node fetches the binary from this source if it lacks it (`None`:
    /// the driver, or it needs no fetch).
    Now(Source),
    /// Hold it until a source has room (see [`Spread::ready`]).
    Wait,
}

/// The job's binary across the nodes (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct Spread {
    /// Nodes known to have it (one of their workers of the job connected).
    holders: IdSet<NodeIdx>,
    /// Nodes fetching it: from where, and the worker whose start asked for the fetch.
    fetching: IdMap<NodeIdx, (Source, WorkerId)>,
    /// Fetches each source serves now.
    serving: IdMap<Source, usize>,
    /// Worker starts waiting for a source with room, in order.
    waiting: VecDeque<(NodeIdx, WorkerId)>,
}

impl Spread {
    /// Worker `worker` is to start on `node`.
    pub(super) fn start(&mut self, node: NodeIdx, worker: WorkerId) -> Start {
        match self.place(node, worker) {
            Some(source) => Start::Now(source),
            None => {
                self.waiting.push_back((node, worker));
                Start::Wait
            }
        }
    }

    /// The source `worker`'s start on `node` fetches the binary from, if it may start now
    /// (`Some(None)`: the driver, or no fetch needed); the fetch is counted against it.
    fn place(&mut self, node: NodeIdx, worker: WorkerId) -> Option<Source> {
        if self.holders.contains(&node) || self.fetching.contains_key(&node) {
            return Some(None);
        }
        let source = self.source()?;
        self.fetching.insert(node, (source, worker));
        *self.serving.entry(source).or_default() += 1;
        Some(source)
    }

    /// The least busy source with room, nodes before the driver (so the driver's link is
    /// free for the work itself).
    fn source(&self) -> Option<Source> {
        let load = |source: &Source| self.serving.get(source).copied().unwrap_or(0);
        let mut holders: Vec<NodeIdx> = self.holders.iter().copied().collect();
        holders.sort_unstable();
        (holders.into_iter().map(Some))
            .chain(std::iter::once(None))
            .filter(|source| load(source) < SERVES_PER_SOURCE)
            .min_by_key(|source| (load(source), source.is_none()))
    }

    /// Whether `node` is known to have the binary, or fetches it.
    pub(super) fn holds_or_fetches(&self, node: NodeIdx) -> bool {
        self.holders.contains(&node) || self.fetching.contains_key(&node)
    }

    /// A worker of the job connected on `node`: the node has the binary (and may serve it).
    pub(super) fn has(&mut self, node: NodeIdx) {
        self.holders.insert(node);
        self.fetch_over(node);
    }

    /// Worker `worker` of `node` is gone (`connected`: it had connected). If its start was
    /// the one that asked for the node's fetch and it never connected, that fetch is over
    /// (it failed, or the node is lost); a start still waiting is dropped.
    pub(super) fn worker_gone(&mut self, node: NodeIdx, worker: WorkerId, connected: bool) {
        self.waiting.retain(|&(_, w)| w != worker);
        if !connected && self.fetching.get(&node).is_some_and(|&(_, w)| w == worker) {
            self.fetch_over(node);
        }
    }

    /// `node` is lost: it serves and holds nothing any more.
    pub(super) fn node_lost(&mut self, node: NodeIdx) {
        self.holders.remove(&node);
        self.fetch_over(node);
        self.serving.remove(&Some(node));
        self.waiting.retain(|&(n, _)| n != node);
    }

    fn fetch_over(&mut self, node: NodeIdx) {
        if let Some((source, _)) = self.fetching.remove(&node)
            && let Some(count) = self.serving.get_mut(&source)
        {
            *count = count.saturating_sub(1);
        }
    }

    /// The waiting starts that may go now, in order, each with its source.
    pub(super) fn ready(&mut self) -> Vec<(NodeIdx, WorkerId, Source)> {
        let mut ready = Vec::new();
        for (node, worker) in std::mem::take(&mut self.waiting) {
            match self.place(node, worker) {
                Some(source) => ready.push((node, worker, source)),
                None => self.waiting.push_back((node, worker)),
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_spreads_from_each_node_that_has_it() {
        let mut spread = Spread::default();
        // Six nodes start at once: the driver serves two, the others wait.
        let starts: Vec<Start> = (1..=6).map(|n| spread.start(n, 100 + n as u64)).collect();
        assert_eq!(starts[..2], [Start::Now(None), Start::Now(None)]);
        assert!(starts[2..].iter().all(|s| *s == Start::Wait));
        // A second worker on a node that fetches already starts at once and waits there.
        assert_eq!(spread.start(1, 201), Start::Now(None));
        assert!(spread.ready().is_empty(), "every source is busy");
        // Node 1 has it: it serves two, the driver one more.
        spread.has(1);
        let ready = spread.ready();
        assert_eq!(
            ready,
            [(3, 103, Some(1)), (4, 104, Some(1)), (5, 105, None)]
        );
        assert!(spread.waiting.iter().eq(&[(6, 106)]));
        // Node 3's fetch from node 1 fails (its worker dies before connecting).
        spread.worker_gone(3, 103, false);
        assert_eq!(spread.ready(), [(6, 106, Some(1))]);
        // A node that has it needs no fetch.
        assert_eq!(spread.start(1, 202), Start::Now(None));
    }

    #[test]
    fn a_lost_node_serves_no_more_and_its_waiting_starts_go() {
        let mut spread = Spread::default();
        spread.start(1, 11);
        spread.has(1);
        // The least busy source first, a node before the driver when they tie.
        assert_eq!(spread.start(2, 12), Start::Now(Some(1)));
        assert_eq!(spread.start(3, 13), Start::Now(None));
        assert_eq!(spread.start(4, 14), Start::Now(Some(1)));
        assert_eq!(spread.start(5, 15), Start::Now(None));
        assert_eq!(spread.start(6, 16), Start::Wait);
        assert_eq!(spread.start(7, 17), Start::Wait);
        spread.node_lost(7);
        spread.node_lost(1);
        // Node 1 serves no more; the driver's slots are still taken by nodes 3 and 5.
        assert!(spread.ready().is_empty());
        spread.has(4);
        assert_eq!(spread.ready(), [(6, 16, Some(4))]);
        assert!(spread.waiting.is_empty(), "node 7's start went with it");
    }
}
