//! Frames between workers on direct links ([`prism_transport::direct`]) instead of the
//! nodes' relays: an owner's pushes (and cancels) to a worker a node of another host leased
//! it with an endpoint, and that worker's ends and hand-backs back on the owner's link. The
//! books say where each frame goes ([`DirectTo`]); the shell keeps the links.
//!
//! A worker of a node's pool runs pushes that come this way only from the owner its node
//! lent it to ([`ToWorker::Lent`]), as the node did when it relayed them: a push that
//! arrives late (its lease ended, say across a partition) must not run on a CPU the node
//! lent again. The node's word and the owner's first push travel different paths and may
//! cross, so a push from an owner it is not lent to waits here for that word, up to
//! [`HELD_PUSH_US`], and is dropped after.
//!
//! [`ToWorker::Lent`]: prism_transport::ToWorker::Lent

use prism_graph::IdSet;
use prism_transport::{ArchivedToWorker, Frame, ToWorker};

use super::{Stop, Worker};
use crate::store::ObjectBytes;

/// How long a push from an owner this worker is not lent to waits for its node's word
/// (microseconds of the host's clock).
pub(crate) const HELD_PUSH_US: u64 = 2_000_000;

/// Where a frame for another worker goes, when not through the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum DirectTo {
    /// The direct endpoint of a worker leased to this one (one link per endpoint).
    Endpoint(String),
    /// An owner whose pushes came on a link it opened: back on that link.
    Owner(u64),
}

/// A worker's side of its direct links (see the module's docs).
#[derive(Debug, Default)]
pub(super) struct Direct {
    /// Frames to send, by destination, in order.
    out: Vec<(DirectTo, Vec<u8>)>,
    /// Owners whose pushes came on a link of theirs.
    owners: IdSet<u64>,
    /// The owner this worker's node lent it to, among those whose pushes come this way.
    lent: Option<u64>,
    /// Pushes from owners it was not lent to when they came: (owner, when, the frame).
    held: Vec<(u64, u64, Frame)>,
    /// This worker has an endpoint: it links to its leased workers' endpoints itself.
    linking: bool,
    /// Pushes that waited for the node's word, and pushes dropped, since last asked.
    counts: (u64, u64),
}

/// What a frame on a direct link was refused for (the link is closed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Not a frame of the kinds workers may send one another.
    #[error("a direct link carried {0}, which no worker may send another")]
    Kind(&'static str),
    /// It could not be read.
    #[error("a direct link carried an unreadable frame: {0}")]
    Frame(String),
}

impl Worker {
    /// Appends `frame` for `to`.
    pub(super) fn send_direct(&mut self, to: DirectTo, frame: Vec<u8>) {
        match self.direct.out.last_mut() {
            Some((last, bytes)) if *last == to => bytes.extend_from_slice(&frame),
            _ => self.direct.out.push((to, frame)),
        }
    }

    /// The frames for direct links since the last call, by destination in order.
    pub(crate) fn take_direct(&mut self) -> Vec<(DirectTo, Vec<u8>)> {
        std::mem::take(&mut self.direct.out)
    }

    /// Owner `owner`, of the node serving its peers at `node`, opened a direct link here: its
    /// ends go back on it, and this worker's node hears where to pull its arguments from.
    pub(crate) fn direct_from(&mut self, owner: u64, node: &str) {
        if self.direct.owners.insert(owner) {
            let node = node.to_string();
            self.send(&prism_transport::ToNode::OwnerAt { owner, node });
        }
    }

    /// This worker has a direct endpoint of its own: it sends its frames for leased workers
    /// with endpoints on links to them (else through the nodes).
    pub(crate) fn set_linking(&mut self) {
        self.direct.linking = true;
    }

    /// Whether frames for leased workers with endpoints go to them directly.
    pub(super) fn links_directly(&self) -> bool {
        self.direct.linking
    }

    /// Whether frames for owner `owner` go back on its direct link.
    pub(super) fn answers_direct(&self, owner: u64) -> bool {
        self.direct.owners.contains(&owner)
    }

    /// Owner `owner`'s direct link closed: what would go back on it goes through the node.
    pub(crate) fn direct_closed(&mut self, owner: u64) {
        self.direct.owners.remove(&owner);
    }

    /// A frame on a direct link: from owner `Some(owner)` on the link it opened here (its
    /// pushes and cancels), or (`None`) on a link this worker opened to a worker leased to it
    /// (that worker's ends and hand-backs). A push of plain tasks from an owner this worker
    /// is not lent to waits (see the module's docs); anything else is refused.
    pub(crate) fn handle_direct(
        &mut self,
        from: Option<u64>,
        frame: Frame,
        open: &mut dyn FnMut(&prism_transport::ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<Result<(), Refused>, Stop> {
        let msg = match frame.access::<ToWorker>() {
            Ok(msg) => msg,
            Err(e) => return Ok(Err(Refused::Frame(e.to_string()))),
        };
        match (msg, from) {
            (ArchivedToWorker::Push(tasks), Some(owner)) => {
                let plain = (tasks.iter())
                    .any(|t| !matches!(t.kind, prism_graph::ArchivedTaskKind::ActorCall(_)));
                if plain && self.direct.lent != Some(owner) {
                    self.direct.counts.0 += 1;
                    tracing::debug!(owner, lent = ?self.direct.lent, "a push waits for its lease's word from the node");
                    self.direct.held.push((owner, self.now_us, frame));
                    return Ok(Ok(()));
                }
            }
            (ArchivedToWorker::Cancel { .. }, Some(_)) => {}
            (ArchivedToWorker::Returned { .. } | ArchivedToWorker::Handback(_), None) => {}
            (ArchivedToWorker::Push(_) | ArchivedToWorker::Cancel { .. }, None) => {
                return Ok(Err(Refused::Kind(
                    "an owner's frame on a leased worker's link",
                )));
            }
            (ArchivedToWorker::Returned { .. } | ArchivedToWorker::Handback(_), Some(_)) => {
                return Ok(Err(Refused::Kind(
                    "a leased worker's frame on an owner's link",
                )));
            }
            (ArchivedToWorker::Execute(_), _) => return Ok(Err(Refused::Kind("an Execute"))),
            _ => return Ok(Err(Refused::Kind("a node's message"))),
        }
        self.handle(msg, open).map(Ok)
    }

    /// The node lent this worker to `owner` (`None`: the lease ended): the pushes of its that
    /// wait here run now; those of others wait on, unless they waited too long.
    pub(super) fn lent(
        &mut self,
        owner: Option<u64>,
        open: &mut dyn FnMut(&prism_transport::ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<(), Stop> {
        self.direct.lent = owner;
        for (from, since, frame) in std::mem::take(&mut self.direct.held) {
            if Some(from) == owner {
                let msg = frame
                    .access::<ToWorker>()
                    .map_err(|e| Stop::Lost(e.to_string()))?;
                self.handle(msg, open)?;
            } else {
                self.direct.held.push((from, since, frame));
            }
        }
        self.expire_held();
        Ok(())
    }

    /// How many pushes waited for their lease's word, and how many were dropped, since the
    /// last call (the simulator's report).
    pub(crate) fn take_push_counts(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.direct.counts)
    }

    /// Drops the pushes that waited too long for their lease's word.
    pub(super) fn expire_held(&mut self) {
        if self.direct.held.is_empty() {
            return;
        }
        let now = self.now_us;
        let before = self.direct.held.len();
        self.direct.held.retain(|&(from, since, _)| {
            let keep = now.saturating_sub(since) < HELD_PUSH_US;
            if !keep {
                tracing::warn!(
                    owner = from,
                    "a push from an owner this worker was not lent to is dropped (its lease ended)"
                );
            }
            keep
        });
        self.direct.counts.1 += (before - self.direct.held.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use prism_graph::{TaskId, TaskKind};
    use prism_transport::{Execute, FrameDecoder, Outcome, ToNode, Value, encode_frame};

    use super::super::Ended;
    use super::super::tests::{receive, sent};
    use super::*;

    /// This worker, on node 0; an owner on node 1, and another.
    const ME: u64 = 3;
    const OWNER: u64 = (1 << 32) + 5;
    const OTHER: u64 = (1 << 32) + 6;

    fn frame(msg: &ToWorker) -> Frame {
        let mut bytes = Vec::new();
        encode_frame(msg, &mut bytes).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(&bytes);
        decoder.next_frame().unwrap().unwrap()
    }

    fn push(owner: u64, seq: u64) -> ToWorker {
        ToWorker::Push(vec![Execute {
            task: TaskId::new(owner, seq),
            function: "tests::child".into(),
            fn_hash: 0,
            args: Vec::new(),
            num_returns: 1,
            kind: TaskKind::Normal,
            stream: None,
            cpu: prism_graph::Amount::ZERO,
            run: 1,
        }])
    }

    /// Hands `msg` to the books as if it came on the direct link `from` opened (`None`: on
    /// one this worker opened).
    fn direct(w: &mut Worker, from: Option<u64>, msg: &ToWorker) -> Result<(), Refused> {
        let mut open = |_: &prism_transport::ArchivedValue| -> std::io::Result<ObjectBytes> {
            Err(std::io::Error::other("no values here"))
        };
        w.handle_direct(from, frame(msg), &mut open).unwrap()
    }

    fn decoded(bytes: &[u8]) -> Vec<ToWorker> {
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(bytes);
        std::iter::from_fn(|| decoder.next_frame().unwrap())
            .map(|f| {
                rkyv::deserialize::<ToWorker, rkyv::rancor::Error>(f.access::<ToWorker>().unwrap())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_direct_push_runs_once_the_node_lends_the_worker_and_its_end_goes_back_on_the_link() {
        let mut w = Worker::new(false, ME);
        w.direct_from(OWNER, "n1:7000");
        // Its node hears where the owner's arguments are pulled from, once.
        w.direct_from(OWNER, "n1:7000");
        let owner_at = ToNode::OwnerAt {
            owner: OWNER,
            node: "n1:7000".into(),
        };
        assert_eq!(sent(&mut w), [owner_at]);
        // The push came before the node's word: it waits.
        direct(&mut w, Some(OWNER), &push(OWNER, 1)).unwrap();
        assert!(w.next_task().is_none(), "not lent yet");
        receive(&mut w, &ToWorker::Lent { owner: Some(OWNER) }).unwrap();
        let exec = w.next_task().expect("run once lent");
        assert_eq!(exec.task, TaskId::new(OWNER, 1));
        w.ended(Ended {
            task: exec.task,
            outcome: Outcome::Returned {
                values: vec![Value::Inline(vec![7])],
                nested: vec![Vec::new()],
                actors: vec![Vec::new()],
            },
            timing: None,
        });
        let to_node = sent(&mut w);
        assert!(
            !to_node.iter().any(|m| matches!(m, ToNode::Forward { .. })),
            "nothing goes through the node: {to_node:?}"
        );
        let out = w.take_direct();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, DirectTo::Owner(OWNER));
        match decoded(&out[0].1).as_slice() {
            [ToWorker::Returned { ends, .. }] => {
                assert_eq!(ends.len(), 1);
                assert_eq!((ends[0].task, ends[0].run), (exec.task, 1));
            }
            other => panic!("the end, back on the link: {other:?}"),
        }
        // Once the owner's link closed, what is left for it goes through the node.
        w.direct_closed(OWNER);
        assert!(!w.answers_direct(OWNER));
    }

    #[test]
    fn a_push_from_an_owner_the_worker_is_not_lent_to_waits_for_the_word_then_is_dropped() {
        let mut w = Worker::new(false, ME);
        receive(&mut w, &ToWorker::Lent { owner: Some(OTHER) }).unwrap();
        w.set_now(1_000);
        direct(&mut w, Some(OWNER), &push(OWNER, 1)).unwrap();
        assert!(w.next_task().is_none(), "lent to another owner");
        // The lease it belonged to ended long ago: the push goes, and a later word that the
        // worker is lent to that owner (a new lease) does not run it.
        w.set_now(1_000 + HELD_PUSH_US);
        let _ = sent(&mut w);
        receive(&mut w, &ToWorker::Lent { owner: Some(OWNER) }).unwrap();
        assert!(w.next_task().is_none(), "the stale push was dropped");
        // A push of the current lease runs at once; one of an actor's calls needs no lease.
        direct(&mut w, Some(OWNER), &push(OWNER, 2)).unwrap();
        assert_eq!(w.next_task().map(|e| e.task), Some(TaskId::new(OWNER, 2)));
    }

    #[test]
    fn a_direct_link_carries_only_what_workers_may_send_one_another() {
        let mut w = Worker::new(false, ME);
        let refused = direct(&mut w, Some(OWNER), &ToWorker::Execute(Vec::new())).unwrap_err();
        assert!(refused.to_string().contains("Execute"), "{refused}");
        let refused = direct(&mut w, Some(OWNER), &ToWorker::Shutdown).unwrap_err();
        assert!(refused.to_string().contains("node's message"), "{refused}");
        // Each side sends its own kinds: no results from an owner, no pushes from a worker
        // leased to this one.
        let end = ToWorker::Handback(vec![TaskId::new(ME, 1)]);
        let refused = direct(&mut w, Some(OWNER), &end).unwrap_err();
        assert!(refused.to_string().contains("owner's link"), "{refused}");
        let refused = direct(&mut w, None, &push(OWNER, 1)).unwrap_err();
        assert!(
            refused.to_string().contains("leased worker's link"),
            "{refused}"
        );
    }
}
