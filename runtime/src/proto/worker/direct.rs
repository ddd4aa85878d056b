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

use prism_graph::{IdMap, IdSet};
use prism_transport::{ArchivedToWorker, Frame, ToNode, ToWorker};

use super::{Stop, Worker};
use crate::proto::driver_link::Lane;
use crate::proto::node::DRIVER_OWNER;
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
    /// The peer address of the node of each owner that linked here (its hello named it),
    /// kept after its link closes: a lender's values for it go there through the nodes.
    owner_nodes: IdMap<u64, String>,
    /// The owner this worker's node lent it to, among those whose pushes come this way.
    lent: Option<u64>,
    /// Pushes from owners it was not lent to when they came: (owner, when, the frame).
    held: Vec<(u64, u64, Frame)>,
    /// This worker has an endpoint: it links to its leased workers' endpoints itself.
    linking: bool,
    /// Pushes that waited for the node's word, and pushes dropped, since last asked.
    counts: (u64, u64),
    /// The driver's direct link (see [`crate::proto::driver_link`]).
    driver: DriverLink,
}

/// This worker's side of its driver's direct link.
#[derive(Debug, Default)]
struct DriverLink {
    /// The driver's endpoint, as its [`ToWorker::Switch`] through the node named it: frames
    /// on a link that claims to be the driver's are taken only from there.
    from: Option<String>,
    /// The endpoint of the link that claims to be the driver's (its hello named owner
    /// [`DRIVER_OWNER`]).
    linked: Option<String>,
    /// Frames on that link that came before the driver's word through the node.
    held: Vec<Frame>,
    /// This worker's frames for the driver go on the link now (else through the node).
    on_link: bool,
}

impl DriverLink {
    /// The link is the driver's, by the driver's own word through the node.
    fn confirmed(&self) -> bool {
        self.from.is_some() && self.from == self.linked
    }
}

/// Frames a link that claims to be the driver's may carry before the driver's word through
/// the node confirms it.
const MAX_HELD_FROM_DRIVER: usize = 1 << 16;

/// What a frame on a direct link was refused for (the link is closed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Not a frame of the kinds workers may send one another.
    #[error("a direct link carried {0}, which no worker may send another")]
    Kind(&'static str),
    /// It could not be read.
    #[error("a direct link carried an unreadable frame: {0}")]
    Frame(String),
    /// A link that claims to be the driver's comes from another endpoint than the one the
    /// driver named through the node.
    #[error("a link from {linked} claims to be the driver's, whose endpoint is {from}")]
    NotTheDriver {
        /// The link's endpoint.
        linked: String,
        /// The driver's.
        from: String,
    },
    /// A link that claims to be the driver's sent too much before the driver's word.
    #[error(
        "a link that claims to be the driver's sent more than {MAX_HELD_FROM_DRIVER} frames unconfirmed"
    )]
    Unconfirmed,
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
            self.direct.owner_nodes.insert(owner, node.clone());
            self.send(&prism_transport::ToNode::OwnerAt { owner, node });
        }
    }

    /// A caller of another job, aliased `alias` here (see [`super::foreign`]), linked: its
    /// ends go back on its link (nothing of it goes through the node, which knows it not).
    pub(crate) fn foreign_from(&mut self, alias: u64) {
        self.direct.owners.insert(alias);
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

    /// The peer address of owner `owner`'s node, as its direct link's hello named it.
    pub(super) fn owner_node(&self, owner: u64) -> Option<&str> {
        self.direct.owner_nodes.get(&owner).map(String::as_str)
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
        if from == Some(DRIVER_OWNER) {
            // The driver's frames, as through the node, once the node confirmed the link.
            if self.direct.driver.confirmed() {
                return self.handle(msg, open).map(Ok);
            }
            if self.direct.driver.held.len() >= MAX_HELD_FROM_DRIVER {
                return Ok(Err(Refused::Unconfirmed));
            }
            self.direct.driver.held.push(frame);
            return Ok(Ok(()));
        }
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
            // A borrower's word and its lender's answer, either way on a link between them.
            (ArchivedToWorker::Loans { .. } | ArchivedToWorker::Objects(_), _) => {}
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

    /// A link whose hello names the driver came from endpoint `linked`: refused if the
    /// driver named another through the node; its frames wait for that word otherwise.
    pub(crate) fn driver_linked(&mut self, linked: &str) -> Result<(), Refused> {
        let driver = &mut self.direct.driver;
        if let Some(from) = &driver.from
            && from != linked
        {
            return Err(Refused::NotTheDriver {
                linked: linked.to_string(),
                from: from.clone(),
            });
        }
        if driver.linked.as_deref() != Some(linked) {
            driver.held.clear();
            driver.on_link = false;
        }
        driver.linked = Some(linked.to_string());
        Ok(())
    }

    /// The driver's word through the node ([`ToWorker::Switch`]): its frames come on its link
    /// from endpoint `from` now. Those that came on it already are taken now, if the link
    /// is from there.
    pub(super) fn driver_switched(
        &mut self,
        from: &str,
        open: &mut dyn FnMut(&prism_transport::ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> Result<(), Stop> {
        let driver = &mut self.direct.driver;
        driver.from = Some(from.to_string());
        if !driver.confirmed() {
            // A stranger's link, or none yet: its frames are dropped as it is refused.
            driver.held.clear();
            return Ok(());
        }
        for frame in std::mem::take(&mut driver.held) {
            let msg = frame
                .access::<ToWorker>()
                .map_err(|e| Stop::Lost(format!("the driver's link carried a bad frame: {e}")))?;
            self.handle(msg, open)?;
        }
        Ok(())
    }

    /// The driver's link closed: this worker cannot reach its driver in order any more.
    pub(crate) fn driver_link_closed(&mut self) -> Result<(), Stop> {
        let driver = &mut self.direct.driver;
        if !driver.confirmed() {
            driver.linked = None;
            driver.held.clear();
            return Ok(());
        }
        Err(Stop::Lost("the driver's direct link closed".into()))
    }

    /// Which way a message of `lane` for the node or driver goes now: true for the driver's
    /// link. A change of way is marked on the old one first (see
    /// [`crate::proto::driver_link`]).
    pub(super) fn goes_on_driver_link(&mut self, lane: Lane) -> bool {
        let pinned = self.blocked || self.depth > 0;
        let driver = &mut self.direct.driver;
        let linkable = driver.confirmed();
        match lane {
            Lane::Node => false,
            Lane::Relayed | Lane::Switch => {
                if driver.on_link {
                    driver.on_link = false;
                    self.send_switch(true);
                }
                false
            }
            Lane::Either => {
                if !driver.on_link && linkable && !pinned {
                    self.send_switch(false);
                    self.direct.driver.on_link = true;
                }
                self.direct.driver.on_link
            }
        }
    }

    /// Whether this worker's frames for the driver go on its direct link now.
    pub(crate) fn ends_on_driver_link(&self) -> bool {
        self.direct.driver.on_link
    }

    /// Marks a change of way on the old one: on the driver's link (`on_link`) or through the
    /// node.
    fn send_switch(&mut self, on_link: bool) {
        let mut frame = Vec::new();
        if let Err(e) = prism_transport::encode_frame(&ToNode::Switch, &mut frame) {
            tracing::error!("cannot encode a switch of ways: {e}");
            return;
        }
        match on_link {
            true => self.send_direct(DirectTo::Owner(DRIVER_OWNER), frame),
            false => self.out.extend_from_slice(&frame),
        }
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
            pull_from: Vec::new(),
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

    fn decoded_for_driver(bytes: &[u8]) -> Vec<ToNode> {
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.extend(bytes);
        std::iter::from_fn(|| decoder.next_frame().unwrap())
            .map(|f| {
                rkyv::deserialize::<ToNode, rkyv::rancor::Error>(f.access::<ToNode>().unwrap())
                    .unwrap()
            })
            .collect()
    }

    /// What the books send on the driver's link now.
    fn on_driver_link(w: &mut Worker) -> Vec<ToNode> {
        let mut messages = Vec::new();
        for (to, bytes) in w.take_direct() {
            assert_eq!(to, DirectTo::Owner(DRIVER_OWNER));
            messages.extend(decoded_for_driver(&bytes));
        }
        messages
    }

    fn driver_task(seq: u64) -> ToWorker {
        let ToWorker::Push(mut tasks) = push(DRIVER_OWNER, seq) else {
            unreachable!()
        };
        tasks[0].run = 0;
        ToWorker::Execute(tasks)
    }

    fn returned(task: TaskId) -> Ended {
        Ended {
            task,
            outcome: Outcome::Returned {
                values: vec![Value::Inline(vec![7])],
                nested: vec![Vec::new()],
                actors: vec![Vec::new()],
            },
            timing: None,
        }
    }

    #[test]
    fn the_driver_s_frames_wait_for_its_word_and_the_worker_s_change_ways_with_a_mark() {
        const DRIVER_AT: &str = "10.0.0.1:9000";
        let mut w = Worker::new(false, ME);
        w.driver_linked(DRIVER_AT).unwrap();
        // The driver's task came on its link before its word through the node: it waits.
        direct(&mut w, Some(DRIVER_OWNER), &driver_task(1)).unwrap();
        assert!(w.next_task().is_none(), "not confirmed yet");
        let word = ToWorker::Switch {
            from: DRIVER_AT.into(),
        };
        receive(&mut w, &word).unwrap();
        let exec = w.next_task().expect("taken once the driver's word came");
        w.ended(returned(exec.task));
        // The end goes on the link, after a mark through the node.
        assert_eq!(sent(&mut w), [ToNode::Switch]);
        match on_driver_link(&mut w).as_slice() {
            [ToNode::Done { ended, .. }] => assert_eq!(ended[0].task, exec.task),
            other => panic!("the end on the link: {other:?}"),
        }
        // The node's own messages go through it without a mark.
        w.direct_from(OWNER, "n1:7000");
        assert!(on_driver_link(&mut w).is_empty());
        // Blocking goes through the node (it may hold the block), after a mark on the link,
        // and so does what the blocked task asks of the driver.
        direct(&mut w, Some(DRIVER_OWNER), &driver_task(2)).unwrap();
        let exec = w.next_task().expect("the next task");
        w.block(IdSet::default());
        let wanted = prism_graph::ObjectId::new(TaskId::new(DRIVER_OWNER, 50), 0);
        w.request(&[wanted]);
        assert_eq!(on_driver_link(&mut w), [ToNode::Switch]);
        let through_node = sent(&mut w);
        assert!(
            matches!(
                through_node.as_slice(),
                [
                    ToNode::OwnerAt { .. },
                    ToNode::Blocked { .. },
                    ToNode::Get { .. }
                ]
            ),
            "{through_node:?}"
        );
        w.unblock();
        w.ended(returned(exec.task));
        // Resumed: its end takes the link again, after a mark through the node.
        assert_eq!(
            sent(&mut w),
            [ToNode::Unblocked { depth: 0 }, ToNode::Switch]
        );
        assert!(matches!(
            on_driver_link(&mut w).as_slice(),
            [ToNode::Done { .. }]
        ));
    }

    #[test]
    fn a_link_that_claims_to_be_the_driver_s_from_elsewhere_is_refused_and_its_frames_dropped() {
        let mut w = Worker::new(false, ME);
        w.driver_linked("10.0.0.9:4000").unwrap();
        direct(&mut w, Some(DRIVER_OWNER), &driver_task(1)).unwrap();
        let word = ToWorker::Switch {
            from: "10.0.0.1:9000".into(),
        };
        receive(&mut w, &word).unwrap();
        assert!(w.next_task().is_none(), "a stranger's task never runs");
        assert!(matches!(
            w.driver_linked("10.0.0.9:4000"),
            Err(Refused::NotTheDriver { .. })
        ));
        w.ended(returned(TaskId::new(DRIVER_OWNER, 7)));
        // Nothing of the worker's goes to the stranger.
        assert!(on_driver_link(&mut w).is_empty());
        // The stranger's link closing does not stop the worker; the driver's would.
        assert!(w.driver_link_closed().is_ok());
        w.driver_linked("10.0.0.1:9000").unwrap();
        assert!(w.driver_link_closed().is_err());
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
