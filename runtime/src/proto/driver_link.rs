//! A driver's direct link with a worker on another host, beside the worker's link through its
//! node (without IO). A node daemon relays each of its workers' links to the job's driver and
//! reads what passes up: some frames are the node's own (lease asks, task events), some it
//! must see on their way (a worker's blocking, whose CPU it may lend out while the driver
//! never hears of it; the actor handles a worker holds). The driver opens a direct link to
//! each worker it sends frames to (DESIGN.md §4: owner-to-worker traffic between hosts goes
//! over direct links, not through a relay) and tells the worker so through the node
//! ([`ToWorker::Switch`]); from then on:
//!
//! - the driver's frames for the worker take the link, and the worker takes those that came
//!   on it only after that word (they may overtake it);
//! - the worker's frames for the driver take whichever way their [`Lane`] allows: those the
//!   node must see go through it, the rest on the link unless a task of the worker is
//!   blocked (the node may hold that block, and must then see what the worker sends the
//!   driver before the driver does). Each change of way is marked on the old way
//!   ([`ToNode::Switch`]), and the driver takes frames from the new way only after the mark
//!   ([`Merge`]), so it reads them in the order they were sent.
//!
//! [`ToWorker::Switch`]: prism_transport::ToWorker::Switch
//! [`ToNode::Switch`]: prism_transport::ToNode::Switch

use std::collections::VecDeque;

use prism_transport::{ArchivedToNode, ToNode};

/// Which way a worker's frame for its node or driver may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The node's own (it takes it, or passes it on in its own time: a lease ask it cannot
    /// grant): always through the node, and not ordered with the driver's frames.
    Node,
    /// The driver's, but the node must see it on its way: through the node, in order.
    Relayed,
    /// The driver's alone: either way, in order.
    Either,
    /// The mark of a change of way.
    Switch,
}

/// The lane of a message a worker sends.
pub(crate) fn lane_of(msg: &ToNode) -> Lane {
    match msg {
        ToNode::Switch => Lane::Switch,
        ToNode::Hello(_)
        | ToNode::Blocked { .. }
        | ToNode::Unblocked { .. }
        | ToNode::HoldActors(_)
        | ToNode::ReleaseActors(_) => Lane::Relayed,
        ToNode::Owes
        | ToNode::WatchWorker { .. }
        | ToNode::OwnerAt { .. }
        | ToNode::Lease { .. }
        | ToNode::Unlease { .. }
        | ToNode::KillLeased { .. }
        | ToNode::Owned { .. }
        | ToNode::Fetch { .. }
        | ToNode::KeptFor { .. }
        | ToNode::DropCopies { .. }
        | ToNode::Forward { .. } => Lane::Node,
        ToNode::Done { .. }
        | ToNode::HandOver { .. }
        | ToNode::Submit { .. }
        | ToNode::Put { .. }
        | ToNode::Get { .. }
        | ToNode::Bounced(_)
        | ToNode::Release(_)
        | ToNode::Hold(_)
        | ToNode::HoldFor { .. }
        | ToNode::ReleaseHeld { .. }
        | ToNode::Yield { .. }
        | ToNode::StreamNext { .. }
        | ToNode::Cancel { .. }
        | ToNode::CreateActor { .. }
        | ToNode::LookupActor { .. }
        | ToNode::KillActor(_)
        | ToNode::KillForeign { .. }
        | ToNode::CreateGroup { .. }
        | ToNode::GroupReady { .. }
        | ToNode::RemoveGroup(_)
        | ToNode::WhereActor { .. } => Lane::Either,
    }
}

/// The lane of a message as it arrives (see [`lane_of`]).
pub(crate) fn lane_of_archived(msg: &ArchivedToNode) -> Lane {
    match msg {
        ArchivedToNode::Switch => Lane::Switch,
        ArchivedToNode::Hello(_)
        | ArchivedToNode::Blocked { .. }
        | ArchivedToNode::Unblocked { .. }
        | ArchivedToNode::HoldActors(_)
        | ArchivedToNode::ReleaseActors(_) => Lane::Relayed,
        ArchivedToNode::Owes
        | ArchivedToNode::WatchWorker { .. }
        | ArchivedToNode::OwnerAt { .. }
        | ArchivedToNode::Lease { .. }
        | ArchivedToNode::Unlease { .. }
        | ArchivedToNode::KillLeased { .. }
        | ArchivedToNode::Owned { .. }
        | ArchivedToNode::Fetch { .. }
        | ArchivedToNode::KeptFor { .. }
        | ArchivedToNode::DropCopies { .. }
        | ArchivedToNode::Forward { .. } => Lane::Node,
        _ => Lane::Either,
    }
}

/// A way a worker's frames reach the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// Through the worker's node.
    Node,
    /// On the direct link.
    Link,
}

impl Way {
    fn other(self) -> Way {
        match self {
            Way::Node => Way::Link,
            Way::Link => Way::Node,
        }
    }
}

/// Frames a merge holds at most for the way it does not read now: a worker that sends more
/// on a way it never switched to is broken (its link is dropped).
pub(crate) const MAX_HELD: usize = 1 << 16;

/// The driver's reading of one worker's two ways (see the module's docs): frames of the way
/// the worker sends on now are taken as they come, those of the other wait for the mark that
/// ends this way's turn. The node's own frames ([`Lane::Node`]) are taken at once, whichever
/// way.
#[derive(Debug)]
pub(crate) struct Merge<F> {
    on: Way,
    /// Frames of the other way, in order, with their lanes.
    held: VecDeque<(Lane, F)>,
}

/// A merge held more than [`MAX_HELD`] frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_HELD} frames came on the way the worker did not switch to")]
pub(crate) struct Overflow;

impl<F> Default for Merge<F> {
    fn default() -> Self {
        Merge {
            on: Way::Node,
            held: VecDeque::new(),
        }
    }
}

impl<F> Merge<F> {
    /// Takes `frame` of `lane`, which came `way`: the frames due now go to `due`, in the
    /// order the worker sent them (the marks themselves are not passed on).
    pub(crate) fn take(
        &mut self,
        way: Way,
        (lane, frame): (Lane, F),
        due: &mut Vec<F>,
    ) -> Result<(), Overflow> {
        if lane == Lane::Node {
            due.push(frame);
            return Ok(());
        }
        if way != self.on {
            if self.held.len() >= MAX_HELD {
                return Err(Overflow);
            }
            self.held.push_back((lane, frame));
            return Ok(());
        }
        if lane != Lane::Switch {
            due.push(frame);
            return Ok(());
        }
        // This way's turn ends: the other's frames held so far are next, up to its own mark.
        self.on = self.on.other();
        while let Some((lane, frame)) = self.held.pop_front() {
            if lane == Lane::Switch {
                self.on = self.on.other();
                return Ok(());
            }
            due.push(frame);
        }
        Ok(())
    }

    /// The way the worker's frames are read from now.
    #[cfg(test)]
    pub(crate) fn reading(&self) -> Way {
        self.on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(merge: &mut Merge<u32>, way: Way, lane: Lane, frame: u32) -> Vec<u32> {
        let mut due = Vec::new();
        merge.take(way, (lane, frame), &mut due).unwrap();
        due
    }

    #[test]
    fn frames_of_the_new_way_wait_for_the_mark_on_the_old() {
        let mut m = Merge::default();
        assert_eq!(take(&mut m, Way::Node, Lane::Either, 1), [1]);
        // The worker switched to the link; its frames there overtook the mark.
        assert_eq!(take(&mut m, Way::Link, Lane::Either, 3), Vec::<u32>::new());
        assert_eq!(take(&mut m, Way::Node, Lane::Either, 2), [2]);
        assert_eq!(take(&mut m, Way::Node, Lane::Switch, 0), [3]);
        assert_eq!(m.reading(), Way::Link);
        assert_eq!(take(&mut m, Way::Link, Lane::Either, 4), [4]);
    }

    #[test]
    fn a_round_trip_through_the_node_is_read_in_order_even_when_the_link_is_late() {
        let mut m = Merge::default();
        take(&mut m, Way::Node, Lane::Switch, 0);
        // On the link: 1, the mark back to the node, then (later) 4 after another mark.
        // Through the node: 2, 3 (a block), then the mark back to the link.
        assert_eq!(take(&mut m, Way::Node, Lane::Relayed, 2), Vec::<u32>::new());
        assert_eq!(take(&mut m, Way::Node, Lane::Relayed, 3), Vec::<u32>::new());
        assert_eq!(take(&mut m, Way::Node, Lane::Switch, 0), Vec::<u32>::new());
        assert_eq!(take(&mut m, Way::Link, Lane::Either, 1), [1]);
        assert_eq!(take(&mut m, Way::Link, Lane::Switch, 0), [2, 3]);
        assert_eq!(m.reading(), Way::Link);
        assert_eq!(take(&mut m, Way::Link, Lane::Either, 4), [4]);
    }

    #[test]
    fn the_node_s_own_frames_are_taken_whichever_way_is_read() {
        let mut m = Merge::default();
        take(&mut m, Way::Node, Lane::Switch, 0);
        // A lease ask the node passes on in its own time waits for nothing.
        assert_eq!(take(&mut m, Way::Node, Lane::Node, 7), [7]);
        assert_eq!(take(&mut m, Way::Link, Lane::Either, 1), [1]);
    }

    #[test]
    fn a_flood_on_the_way_not_read_is_refused() {
        let mut m = Merge::default();
        let mut due = Vec::new();
        for i in 0..MAX_HELD as u32 {
            m.take(Way::Link, (Lane::Either, i), &mut due).unwrap();
        }
        assert_eq!(
            m.take(Way::Link, (Lane::Either, 0), &mut due),
            Err(Overflow)
        );
        assert!(due.is_empty());
    }

    #[test]
    fn the_lanes_of_a_message_agree_before_and_after_the_wire() {
        let messages = [
            ToNode::Switch,
            ToNode::Unblocked { depth: 0 },
            ToNode::HoldActors(Vec::new()),
            ToNode::Owes,
            ToNode::Unlease {
                key: prism_graph::TaskId::new(3, 1),
            },
            ToNode::Release(Vec::new()),
            ToNode::Done {
                sent_us: 0,
                ended: Vec::new(),
            },
            ToNode::WhereActor {
                actor: prism_graph::ActorId(prism_graph::TaskId::new(0, 9)),
            },
        ];
        for msg in messages {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&msg).unwrap();
            let archived = rkyv::access::<ArchivedToNode, rkyv::rancor::Error>(&bytes).unwrap();
            assert_eq!(lane_of(&msg), lane_of_archived(archived), "{msg:?}");
        }
    }
}
