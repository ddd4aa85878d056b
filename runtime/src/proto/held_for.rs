//! Holds a node takes for a worker on another worker's word ([`ToNode::HoldFor`]: the
//! objects and actor handles inside the value of a task that ran elsewhere, held for its
//! owner until the owner lets them go with [`ToNode::ReleaseHeld`]). They are counted apart
//! from the worker's own holds, which the worker counts itself and reports only at the first
//! and the last: folded into those, a hold taken while the worker's own release was on its
//! way would end with that release. The hold and its release come on two links (the worker
//! that ran the task sends the first, the owner the second), so a release may come first:
//! the count goes below zero and the hold, when it comes, ends it.
//!
//! [`ToNode::HoldFor`]: prism_transport::ToNode::HoldFor
//! [`ToNode::ReleaseHeld`]: prism_transport::ToNode::ReleaseHeld

use std::collections::HashMap;
use std::hash::Hash;

/// One worker's holds taken for it, counted by key (an object or an actor).
#[derive(Debug)]
pub(crate) struct HeldFor<K> {
    counts: HashMap<K, i32>,
}

impl<K> Default for HeldFor<K> {
    fn default() -> Self {
        HeldFor {
            counts: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Copy> HeldFor<K> {
    /// One hold of `key` more: true when it is the only one now (take a reference for it).
    pub(crate) fn hold(&mut self, key: K) -> bool {
        self.step(key, 1) == 1
    }

    /// One hold of `key` ends: true when it was the last (let its reference go). A release
    /// ahead of its hold is kept for it.
    pub(crate) fn release(&mut self, key: K) -> bool {
        self.step(key, -1) == 0
    }

    fn step(&mut self, key: K, by: i32) -> i32 {
        let count = self.counts.entry(key).or_insert(0);
        *count += by;
        let now = *count;
        if now == 0 {
            self.counts.remove(&key);
        }
        now
    }

    /// The keys held (the worker is gone: each lets go of its reference); releases still
    /// waiting for their holds are dropped.
    pub(crate) fn into_held(self) -> impl Iterator<Item = K> {
        self.counts
            .into_iter()
            .filter(|&(_, count)| count > 0)
            .map(|(key, _)| key)
    }

    /// Whether it holds nothing and waits for no hold.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_from_its_first_hold_to_its_last_release() {
        let mut held = HeldFor::default();
        assert!(held.hold(7), "the first hold takes a reference");
        assert!(!held.hold(7), "the second does not");
        assert!(!held.release(7));
        assert!(held.release(7), "the last release lets it go");
        assert!(held.is_empty());
    }

    #[test]
    fn a_release_ahead_of_its_hold_ends_it_as_it_comes() {
        let mut held = HeldFor::default();
        assert!(!held.release(7), "nothing to let go yet");
        assert!(!held.is_empty(), "the release waits for its hold");
        assert!(!held.hold(7), "the hold ends at once: no reference");
        assert!(held.is_empty());
        // Held once more than released: that one is let go with the worker.
        assert!(!held.release(8));
        held.hold(8);
        held.hold(8);
        held.hold(9);
        let mut left: Vec<u32> = held.into_held().collect();
        left.sort();
        assert_eq!(left, [8, 9]);
    }
}
