//! The borrower protocol between workers (NSDI'21 §4.2; docs/ownership.md's "Borrowers").
//!
//! A worker that owns an object keeps it when a reference to it leaves in the value of a task
//! pushed to it by another worker (the task's owner): it *lends* the object to that worker
//! ([`ToWorker::Returned`]'s `lent`, one loan per reference), counting each loan as one of its
//! own references, so the object lives until every loan is given back. The borrower asks the
//! lender for the value and gives its loans back when it lets go of the object
//! ([`ToWorker::Loans`], on their direct link or relayed by the nodes), and neither goes to
//! the driver: before this, every such object was handed to the driver ([`ToNode::HandOver`]),
//! which then served and counted it.
//!
//! A borrower on another node than its lender's (one whose direct link named its node, so
//! that the lender knows where it is) reads a value in shared memory from the lender's node:
//! its own node pulls it ([`ToNode::Fetch`]) and keeps the copy until the lender drops the
//! object ([`ToNode::DropCopies`]) or dies. Its words go to the lender on the lender's direct
//! endpoint or through its node, both kept from the lease that brought the loans.
//!
//! Each side watches the other ([`ToNode::WatchWorker`], through the other's node when that is
//! another): a borrower whose lender dies fails what it still waits for with `OwnerDied`
//! (values it has stay readable), and a lender whose borrower dies takes back that
//! borrower's loans.
//!
//! A loan does not travel further: a reference the borrower passes on (in a value, or in a
//! task it submits) makes the object the node's first (the borrower asks the lender to hand
//! it over, and to have the node hold it for the borrower in place of the loans, as it holds
//! what pushed tasks return: [`ToNode::HoldFor`]); whoever gets the reference asks the node,
//! which awaits the hand-over if the reference outran it (see `proto::owner::awaited`).
//!
//! [`ToWorker::Returned`]: prism_transport::ToWorker::Returned
//! [`ToWorker::Loans`]: prism_transport::ToWorker::Loans
//! [`ToNode::HandOver`]: prism_transport::ToNode::HandOver
//! [`ToNode::Fetch`]: prism_transport::ToNode::Fetch
//! [`ToNode::DropCopies`]: prism_transport::ToNode::DropCopies
//! [`ToNode::WatchWorker`]: prism_transport::ToNode::WatchWorker
//! [`ToNode::HoldFor`]: prism_transport::ToNode::HoldFor

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prism_graph::{IdMap, IdSet, ObjectId, TaskError, TaskId};
use prism_transport::{ObjectValue, ToNode, ToWorker};

use super::Worker;
use super::owned::open_shared;
use crate::proto::node::{DRIVER_OWNER, NODE_OWNER};
use crate::proto::owner::Slot;
use crate::store::ObjectBytes;

/// A worker's loans, both ways.
#[derive(Debug, Default)]
pub(crate) struct Loans {
    /// Objects this worker owns that it lent: each borrower's count of loans.
    lent: IdMap<ObjectId, HashMap<u64, u32>>,
    /// Loans made in the values of tasks running here, until their ends go.
    lending: IdMap<TaskId, Vec<ObjectId>>,
    /// Borrowers waiting for values of objects lent them that are not known here yet.
    askers: IdMap<ObjectId, Vec<u64>>,
    /// Objects other workers lent this one: how many loans of each it received (the lender
    /// is the object's owner, whose number its id carries).
    borrowed: IdMap<ObjectId, u32>,
    /// Borrowed objects handed to the node on this worker's word: the node holds each for
    /// this worker, which lets go with [`ToNode::ReleaseHeld`].
    held_for: IdSet<ObjectId>,
    /// What this worker has still to tell each lender, sent with the next frames.
    words: HashMap<u64, Word>,
    /// Values for borrowers, sent with the next frames (one frame for each borrower).
    answers: HashMap<u64, Vec<(ObjectId, ObjectValue)>>,
    /// Workers this one watches (lenders and borrowers).
    watched: HashSet<u64>,
    /// Watched workers that are gone, and what the node saw of them.
    gone: HashMap<u64, String>,
    /// Lenders on other nodes, and how to reach each.
    lenders: HashMap<u64, Lender>,
    /// Borrowed values in another node's store that this node pulls here (their lengths).
    fetching: IdMap<ObjectId, u64>,
    /// Objects asked of lenders on other nodes, until their answers come: a value in shared
    /// memory that such a lender answers is in its node's store (one the node answers, for
    /// an object passed on meanwhile, is in this node's).
    asked_afar: IdSet<ObjectId>,
}

/// A lender on another node: where this worker's words for it go, after the lease that
/// brought the loans too.
#[derive(Debug, Clone)]
struct Lender {
    /// The peer address of its node.
    at: String,
    /// Its direct endpoint, when it has one.
    direct: Option<String>,
}

/// What a borrower tells a lender ([`ToWorker::Loans`]).
#[derive(Debug, Default)]
struct Word {
    ask: Vec<ObjectId>,
    release: Vec<(ObjectId, u32)>,
    promote: Vec<(ObjectId, u32)>,
}

impl Loans {
    /// Whether this worker lends anything (it stays while it does: its borrowers' reads and
    /// releases come to it).
    pub(super) fn lends(&self) -> bool {
        !self.lent.is_empty()
    }

    /// Whether `id` is an object lent to this worker.
    pub(super) fn borrows(&self, id: ObjectId) -> bool {
        !self.borrowed.is_empty() && self.borrowed.contains_key(&id)
    }
}

impl Worker {
    /// Whether the owned objects that task `task`, running here, returns are lent to its
    /// owner rather than handed to the node: the task was pushed here by a worker of this
    /// job, on this node or on one whose address its direct link named.
    pub(crate) fn lends_to(&self, task: TaskId) -> Option<u64> {
        let owner = task.owner;
        let worker = owner != DRIVER_OWNER
            && owner != NODE_OWNER
            && !super::foreign::is_foreign(owner)
            && owner != self.owned.me();
        (worker && self.owned.enabled() && self.pushed.contains_key(&task))
            .then_some(owner)
            .filter(|&owner| !self.elsewhere(owner) || self.owner_node(owner).is_some())
    }

    /// The peer address of the node of owner `owner`, a borrower, when that is not this
    /// worker's (as its direct link's hello named it).
    fn node_afar(&self, owner: u64) -> Option<String> {
        (self.elsewhere(owner))
            .then(|| self.owner_node(owner).map(str::to_string))
            .flatten()
    }

    /// Running task `task` encodes a return value referring to `ids`, which go before the
    /// task's end: lent to its owner if it lends to it ([`Worker::lends_to`]: the objects
    /// this worker owns stay its own; those lent to it go to the node through their owners),
    /// handed to the node otherwise ([`Worker::hand_over`]).
    pub(crate) fn hand_over_returned(&mut self, task: TaskId, ids: &[ObjectId]) {
        match self.lends_to(task) {
            Some(_) => self.promote_loans(ids),
            None => {
                self.hand_over(ids);
            }
        }
    }

    /// Running task `task` encoded a value holding references to `ids` for worker `owner`
    /// (which lends to it: [`Worker::lends_to`]): those to objects this worker owns are lent
    /// to it, each loan held as a reference of this worker's own until the owner gives it
    /// back; the end names them ([`Worker::lent_in`]).
    pub(super) fn lend(&mut self, task: TaskId, owner: u64, ids: &[ObjectId]) {
        let lent: Vec<ObjectId> = ids.iter().copied().filter(|&id| self.owns(id)).collect();
        if lent.is_empty() {
            return;
        }
        // A borrower on another node reads them from this node's store: its node pulls each
        // one and keeps the copy until this worker drops the object.
        let afar = self.node_afar(owner);
        for &id in &lent {
            self.count_ref(id, "lent");
            let count = self.loans.lent.entry(id).or_default();
            *count.entry(owner).or_default() += 1;
            if let Some(node) = &afar {
                self.may_copy(id, node);
            }
        }
        self.loans.lending.entry(task).or_default().extend(lent);
        self.watch(owner, afar);
    }

    /// The loans made in the values of task `task`, whose end goes now.
    pub(super) fn lent_in(&mut self, task: TaskId) -> LentIn {
        if self.loans.lending.is_empty() {
            return LentIn(Vec::new());
        }
        LentIn(self.loans.lending.remove(&task).unwrap_or_default())
    }

    /// Task `task` failed after its values lent objects: its owner never gets those loans.
    pub(super) fn unlend(&mut self, task: TaskId) {
        let lent = self.lent_in(task).0;
        for id in lent {
            self.end_loans(id, task.owner, 1);
        }
    }

    /// A loan of `id` came (in an owned task's end): counted as one reference here, given
    /// back to its owner with the last. A lender on another node is the worker leased to
    /// this one there (the loans come in the ends of the tasks it ran): where it is, and its
    /// endpoint, are kept for the words that go after the lease.
    pub(super) fn take_loan(&mut self, id: ObjectId) {
        *self.loans.borrowed.entry(id).or_default() += 1;
        self.count_ref(id, "borrowed");
        let lender = id.task.owner;
        if self.elsewhere(lender) && !self.loans.lenders.contains_key(&lender) {
            match self.leased_at(lender) {
                Some((at, direct)) => {
                    self.loans.lenders.insert(lender, Lender { at, direct });
                }
                None => tracing::warn!(
                    %id,
                    lender,
                    "a loan from a worker of another node not leased here: its words go through this node"
                ),
            }
        }
        let at = self.loans.lenders.get(&lender).map(|l| l.at.clone());
        self.watch(lender, at);
    }

    /// The direct endpoint of lender `to` on another node, when it has one.
    pub(super) fn lender_endpoint(&self, to: u64) -> Option<String> {
        if self.loans.lenders.is_empty() {
            return None;
        }
        (self.loans.lenders.get(&to)).and_then(|lender| lender.direct.clone())
    }

    /// One reference to `id` more here, without a word to anyone (a loan, either way; the
    /// first names what the reference is for the errors of its reads).
    fn count_ref(&mut self, id: ObjectId, what: &str) {
        match self.refs.get_mut(&id) {
            Some((count, _)) => *count += 1,
            None => {
                self.refs.insert(id, (1, Arc::from(what)));
            }
        }
    }

    /// Asks the node to say when worker `worker` (of the node serving its peers at `at`, when
    /// another) exits, once.
    fn watch(&mut self, worker: u64, at: Option<String>) {
        if self.loans.watched.insert(worker) {
            self.send(&ToNode::WatchWorker { worker, at });
        }
    }

    /// Asks the lender of borrowed `id` for its value (or fails it now if the lender is
    /// gone). False when `id` is not borrowed.
    pub(super) fn ask_lender(&mut self, id: ObjectId) -> bool {
        if !self.loans.borrows(id) {
            return false;
        }
        let lender = id.task.owner;
        if let Some(reason) = self.loans.gone.get(&lender).cloned() {
            self.lender_lost(id, &reason);
        } else if self.requested.insert(id) {
            self.loans.words.entry(lender).or_default().ask.push(id);
            if self.loans.lenders.contains_key(&lender) {
                self.loans.asked_afar.insert(id);
            }
        }
        true
    }

    /// The last reference to `id` went: a borrowed object's loans go back to its lender, and
    /// one the node holds for this worker on its word is let go there. False for any other.
    pub(super) fn give_back(&mut self, id: ObjectId) -> bool {
        if self.loans.held_for.remove(&id) {
            self.release_held(vec![id], Vec::new());
            return true;
        }
        let Some(count) = self.loans.borrowed.remove(&id) else {
            return false;
        };
        self.loans.asked_afar.remove(&id);
        let lender = id.task.owner;
        if !self.loans.gone.contains_key(&lender) {
            let word = self.loans.words.entry(lender).or_default();
            word.release.push((id, count));
        }
        true
    }

    /// A reference to borrowed `ids` leaves this worker: each goes to the node first (its
    /// lender hands it over, and has the node hold it for this worker in place of the loans).
    pub(super) fn promote_loans(&mut self, ids: &[ObjectId]) {
        for &id in ids {
            let Some(count) = self.loans.borrowed.remove(&id) else {
                continue;
            };
            let lender = id.task.owner;
            if self.loans.gone.contains_key(&lender) {
                // Its owner died: the node fails it with `OwnerDied` for whoever asks.
                continue;
            }
            self.loans.held_for.insert(id);
            let word = self.loans.words.entry(lender).or_default();
            word.promote.push((id, count));
        }
    }

    /// Sends each borrower the values it waits for, and each lender what this worker has to
    /// tell it.
    pub(super) fn send_loan_words(&mut self) {
        if self.loans.answers.is_empty() && self.loans.words.is_empty() {
            return;
        }
        for (borrower, values) in std::mem::take(&mut self.loans.answers) {
            // Through the nodes to one elsewhere once its link closed.
            let at = self.node_afar(borrower);
            self.forward(borrower, at, &ToWorker::Objects(values));
        }
        let me = self.owned.me();
        for (lender, word) in std::mem::take(&mut self.loans.words) {
            let Word {
                ask,
                release,
                promote,
            } = word;
            let loans = ToWorker::Loans {
                from: me,
                ask,
                release,
                promote,
            };
            let at = self.loans.lenders.get(&lender).map(|l| l.at.clone());
            self.forward(lender, at, &loans);
        }
    }

    /// Borrower `from` says what it does with the loans this worker made it.
    pub(super) fn loans_word(
        &mut self,
        from: u64,
        ask: impl Iterator<Item = ObjectId>,
        release: impl Iterator<Item = (ObjectId, u32)>,
        promote: impl Iterator<Item = (ObjectId, u32)>,
    ) {
        for id in ask {
            match self.cache.get(&id).and_then(|slot| wire(id, slot)) {
                Some(value) => self.answer(from, id, value),
                None if self.refs.contains_key(&id) => {
                    self.loans.askers.entry(id).or_default().push(from);
                    // A value left on another node comes here first.
                    self.pull_left(id);
                }
                None => self.answer(from, id, ObjectValue::Failed(not_lent(id))),
            }
        }
        for (id, count) in promote {
            // Handed over first, so that the node knows it when the hold for the borrower
            // (after it, on the same way) comes.
            self.hand_over(&[id]);
            self.send(&ToNode::HoldFor {
                holder: from,
                ids: vec![id],
                actors: Vec::new(),
            });
            self.end_loans(id, from, count);
        }
        for (id, count) in release {
            self.end_loans(id, from, count);
        }
    }

    /// `count` loans of `id` to `borrower` end.
    fn end_loans(&mut self, id: ObjectId, borrower: u64, count: u32) {
        let Some(borrowers) = self.loans.lent.get_mut(&id) else {
            return;
        };
        let Some(had) = borrowers.get_mut(&borrower) else {
            return;
        };
        let count = count.min(*had);
        *had -= count;
        if *had == 0 {
            borrowers.remove(&borrower);
        }
        if borrowers.is_empty() {
            self.loans.lent.remove(&id);
        }
        for _ in 0..count {
            self.release(id);
        }
    }

    /// Whether a borrower asked for owned `id`, whose value is not known here yet.
    pub(super) fn asked_by_borrower(&self, id: ObjectId) -> bool {
        self.loans.askers.contains_key(&id)
    }

    /// Owned `id`'s value is known here: the borrowers that asked for it get it.
    pub(super) fn answer_askers(&mut self, id: ObjectId) {
        if self.loans.askers.is_empty() {
            return;
        }
        let Some(askers) = self.loans.askers.remove(&id) else {
            return;
        };
        let Some(value) = self.cache.get(&id).and_then(|slot| wire(id, slot)) else {
            return;
        };
        for asker in askers {
            self.answer(asker, id, value.clone());
        }
    }

    /// Object `id`'s value goes to borrower `to` with the next frames.
    fn answer(&mut self, to: u64, id: ObjectId, value: ObjectValue) {
        self.loans.answers.entry(to).or_default().push((id, value));
    }

    /// The value of `id` came (`len` bytes in shared memory): when it is borrowed from a
    /// lender on another node, it is in that node's store, and this node pulls it here
    /// ([`ToNode::Fetch`]: the copy stays until the lender drops the object); true then, and
    /// the value is known once [`Worker::borrowed_fetched`].
    pub(super) fn pull_borrowed(&mut self, id: ObjectId, len: u64) -> bool {
        if self.loans.asked_afar.is_empty() || !self.loans.asked_afar.remove(&id) {
            return false;
        }
        if self.loans.fetching.insert(id, len).is_none() {
            self.send(&ToNode::Fetch {
                id,
                len,
                from: None,
            });
        }
        true
    }

    /// The node pulled borrowed `id` here (or could not: `error`); `open` maps it. False when
    /// it was not pulled for a loan.
    pub(super) fn borrowed_fetched(
        &mut self,
        id: ObjectId,
        error: Option<&str>,
        open: &mut dyn FnMut(&prism_transport::ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) -> bool {
        let Some(len) = self.loans.fetching.remove(&id) else {
            return false;
        };
        if !self.refs.contains_key(&id) {
            return true; // let go meanwhile
        }
        let lender = id.task.owner;
        let at = (self.loans.lenders.get(&lender)).map_or("?", |l| l.at.as_str());
        let unavailable = |reason: String| {
            Slot::Failed(TaskError::ObjectUnavailable {
                object: id,
                function: String::from("<borrowed>"),
                reason,
            })
        };
        let slot = match error {
            Some(e) => unavailable(format!(
                "it is lent by worker {lender}, in the store of node {at}, and could not be pulled from there: {e}"
            )),
            None => match open_shared(id, len, open) {
                Ok(bytes) => Slot::Ready(bytes),
                Err(e) => unavailable(format!(
                    "it was pulled from node {at}, its lender's, but its segment cannot be mapped: {e}"
                )),
            },
        };
        self.cache.insert(id, slot);
        if self.blocked {
            self.arrived.push(id);
        }
        self.known(id);
        true
    }

    /// Watched worker `worker` is gone (`reason`): its loans to this worker fail what waits
    /// for them, and what this worker lent it comes back.
    pub(super) fn worker_gone(&mut self, worker: u64, reason: &str) {
        self.loans.gone.insert(worker, reason.to_string());
        self.loans.words.remove(&worker);
        self.loans.answers.remove(&worker);
        // The loans stay booked (their last reference goes nowhere: see `give_back`).
        let lost: Vec<ObjectId> = (self.loans.borrowed.keys())
            .filter(|id| {
                id.task.owner == worker
                    && (self.requested.contains(id) || self.loans.fetching.contains_key(id))
            })
            .copied()
            .collect();
        for id in lost {
            self.lender_lost(id, reason);
        }
        let lent: Vec<(ObjectId, u32)> = (self.loans.lent.iter())
            .filter_map(|(&id, borrowers)| borrowers.get(&worker).map(|&n| (id, n)))
            .collect();
        for (id, count) in lent {
            self.end_loans(id, worker, count);
        }
        for askers in self.loans.askers.values_mut() {
            askers.retain(|&a| a != worker);
        }
        self.loans.askers.retain(|_, askers| !askers.is_empty());
    }

    /// Borrowed `id`'s lender died (`reason`): its value will not come.
    fn lender_lost(&mut self, id: ObjectId, reason: &str) {
        self.requested.remove(&id);
        self.loans.fetching.remove(&id);
        self.loans.asked_afar.remove(&id);
        let lender = id.task.owner;
        let owner = match self.loans.lenders.get(&lender) {
            Some(afar) => format!("worker {lender} (on node {})", afar.at),
            None => format!("worker {lender} (on this worker's node)"),
        };
        let error = TaskError::OwnerDied {
            task: id.task,
            function: self
                .function_of(id)
                .map_or_else(String::new, |f| f.to_string()),
            owner,
            reason: reason.to_string(),
        };
        self.cache.insert(id, Slot::Failed(error));
        if self.blocked {
            self.arrived.push(id);
        }
        self.known(id);
    }
}

/// The loans made in one task's values ([`Worker::lent_in`]).
pub(super) struct LentIn(Vec<ObjectId>);

impl LentIn {
    /// The references among `ids` (the end's) that are not these loans: one taken out per
    /// loan (the node holds those for the owner).
    pub(super) fn without(&self, ids: impl Iterator<Item = ObjectId>) -> Vec<ObjectId> {
        if self.0.is_empty() {
            return ids.collect();
        }
        let mut left = self.0.clone();
        ids.filter(|id| match left.iter().position(|l| l == id) {
            Some(at) => {
                left.swap_remove(at);
                false
            }
            None => true,
        })
        .collect()
    }

    /// The objects lent, once per loan.
    pub(super) fn into_ids(self) -> Vec<ObjectId> {
        self.0
    }
}

/// What goes to a borrower for a value known here.
fn wire(id: ObjectId, slot: &Slot) -> Option<ObjectValue> {
    match slot {
        Slot::Ready(bytes) => Some(ObjectValue::Ready(bytes.to_wire(id))),
        Slot::Failed(error) => Some(ObjectValue::Failed(error.clone())),
        _ => None,
    }
}

/// The error for an object asked of this worker that it does not hold (a borrower's ask that
/// came after its own release, which a well-behaved borrower never sends).
fn not_lent(id: ObjectId) -> TaskError {
    TaskError::InvalidValue {
        task: id.task,
        function: String::from("<borrowed>"),
        what: format!("object {id}"),
        reason: String::from("its owner does not hold it (no loan of it is open)"),
    }
}

#[cfg(test)]
mod tests {
    //! A lender and a borrower on one node, stepped by hand: the frames one writes for the
    //! other are handed over as the node would relay them.

    use prism_graph::{Resources, TaskSpec};
    use prism_transport::{Outcome, Value};

    use super::super::Ended;
    use super::super::owned::tests::{
        ME, forwarded, grant, lease, lease_key, owner, receive, sent, spec, to_worker, untimed_end,
        value, value_of,
    };
    use super::super::tests::receive_with;
    use super::*;
    use crate::store::ObjectBytes;
    use prism_transport::ArchivedValue;

    /// The lender's owner number: a worker of the borrower's node.
    const LENDER: u64 = 9;

    /// What the worker that the lender leases runs its own task on.
    const LEASED: u64 = 11;

    /// The lender's own task, whose object it lends.
    fn own_task() -> TaskSpec {
        TaskSpec {
            resources: Resources::cpus(1.0).unwrap(),
            ..TaskSpec::call(TaskId::new(LENDER, 100), "tests::grandchild", Vec::new())
        }
    }

    /// The frames among `messages` for worker `to`, each handed to `worker`.
    fn relay(messages: &[ToNode], to: u64, worker: &mut Worker) -> Vec<ToWorker> {
        let frames = forwarded(messages, to);
        for frame in &frames {
            receive(worker, frame);
        }
        frames
    }

    /// A value holding the one reference to `object`.
    fn holding(object: ObjectId) -> Outcome {
        Outcome::Returned {
            values: vec![Value::Inline(vec![1])],
            nested: vec![vec![object]],
            actors: vec![Vec::new()],
        }
    }

    /// `lender` runs pushed task `run`, whose value holds the one reference to the object of
    /// its own task `own` (submitted now, not run yet): the object, and what the lender
    /// sends once `run` ends.
    fn returns_own_object(
        lender: &mut Worker,
        run: TaskId,
        own: TaskSpec,
    ) -> (ObjectId, Vec<ToNode>) {
        let object = ObjectId::new(own.task_id, 0);
        lender.submit(own, None);
        lender.hand_over_returned(run, &[object]);
        lender.hold_returned(run, &[object], &[]);
        lender.release(object); // the task's own reference
        lender.ended(Ended {
            task: run,
            outcome: holding(object),
            timing: None,
        });
        (object, sent(lender))
    }

    /// A borrower ([`owner`]) whose task, pushed to [`LENDER`], returned a reference to an
    /// object of the lender's own task, not run yet: the borrower, the lender, the
    /// borrower's result and the lent object.
    fn lent() -> (Worker, Worker, ObjectId, ObjectId) {
        let mut borrower = owner();
        borrower.submit(spec(1, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut borrower));
        lease(&mut borrower, key, LENDER);
        let pushes = sent(&mut borrower);
        let result = ObjectId::new(TaskId::new(ME, 1), 0);

        let mut lender = Worker::new(false, LENDER);
        receive(&mut lender, &ToWorker::OwnTasks);
        relay(&pushes, LENDER, &mut lender);
        let run = lender.next_task().expect("the pushed task");
        let (object, out) = returns_own_object(&mut lender, run.task, own_task());
        assert!(
            !out.iter().any(|m| matches!(
                m,
                ToNode::HandOver(_) | ToNode::HoldFor { .. } | ToNode::Put { .. }
            )),
            "nothing of the lent object goes to the node: {out:?}"
        );
        assert!(
            out.contains(&ToNode::WatchWorker {
                worker: ME,
                at: None
            }),
            "{out:?}"
        );
        let ends = relay(&out, ME, &mut borrower);
        assert!(
            matches!(&ends[..], [ToWorker::Returned { lent, .. }] if *lent == vec![object]),
            "the end names the loan: {ends:?}"
        );
        assert!(lender.owns(object) && lender.owes_work());
        // The lender's task runs on a worker it leases.
        let key = lease_key(&out);
        lease(&mut lender, key, LEASED);
        let _ = sent(&mut lender);
        (borrower, lender, result, object)
    }

    #[test]
    fn a_borrower_reads_a_lent_object_from_its_owner_and_gives_the_loan_back() {
        let (mut borrower, mut lender, result, object) = lent();
        let out = sent(&mut borrower);
        assert!(
            out.contains(&ToNode::WatchWorker {
                worker: LENDER,
                at: None
            }) && !out
                .iter()
                .any(|m| matches!(m, ToNode::Hold(_) | ToNode::Get { .. })),
            "the borrower holds the loan without a word to the node: {out:?}"
        );
        // Asked of the lender, which answers once its task ends.
        borrower.request(&[object]);
        let out = sent(&mut borrower);
        assert!(
            !out.iter().any(|m| matches!(m, ToNode::Get { .. })),
            "{out:?}"
        );
        let asks = relay(&out, LENDER, &mut lender);
        assert!(
            matches!(&asks[..], [ToWorker::Loans { from: ME, ask, .. }] if *ask == vec![object]),
            "{asks:?}"
        );
        assert!(
            forwarded(&sent(&mut lender), ME).is_empty(),
            "not known yet"
        );
        let end = ToWorker::Returned {
            sent_us: 0,
            ends: vec![untimed_end(object.task, value_of(vec![7]))],
            lent: Vec::new(),
        };
        receive(&mut lender, &end);
        let answers = relay(&sent(&mut lender), ME, &mut borrower);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(value(&borrower, object), Some(vec![7]));

        // The borrower lets go of its result, whose value held the loan: given back to the
        // lender, not released at the node.
        borrower.release(result);
        let out = sent(&mut borrower);
        assert!(
            !out.iter().any(|m| matches!(
                m,
                ToNode::Release(_) | ToNode::ReleaseHeld { .. } | ToNode::Hold(_)
            )),
            "{out:?}"
        );
        let words = relay(&out, LENDER, &mut lender);
        assert!(
            matches!(&words[..], [ToWorker::Loans { release, .. }] if *release == vec![(object, 1)]),
            "{words:?}"
        );
        assert!(
            !lender.owns(object),
            "the last loan back, the object is gone"
        );
        assert!(!lender.loans.lends() && !lender.owes_work());
    }

    #[test]
    fn a_lent_reference_passed_on_goes_to_the_node_through_its_owner() {
        let (mut borrower, mut lender, result, object) = lent();
        let _ = sent(&mut borrower);
        // The borrower hands the object on (as in a task's arguments).
        borrower.hand_over(&[object]);
        let out = sent(&mut borrower);
        let words = relay(&out, LENDER, &mut lender);
        assert!(
            matches!(&words[..], [ToWorker::Loans { promote, .. }] if *promote == vec![(object, 1)]),
            "{words:?}"
        );
        let out = sent(&mut lender);
        let handed = out.iter().position(|m| matches!(m, ToNode::HandOver(_)));
        let held = out.iter().position(|m| {
            *m == ToNode::HoldFor {
                holder: ME,
                ids: vec![object],
                actors: Vec::new(),
            }
        });
        assert!(
            handed.is_some() && held > handed,
            "handed to the node, then held there for the borrower: {out:?}"
        );
        assert!(!lender.owns(object) && !lender.loans.lends());
        // Its later reads go to the node, and its last reference lets go of the node's hold.
        borrower.request(&[object]);
        assert_eq!(sent(&mut borrower), vec![ToNode::Get { ids: vec![object] }]);
        borrower.release(result);
        let out = sent(&mut borrower);
        assert!(
            out.contains(&ToNode::ReleaseHeld {
                ids: vec![object],
                actors: Vec::new()
            }),
            "{out:?}"
        );
    }

    #[test]
    fn a_lender_s_death_fails_what_its_borrower_waits_for_and_a_borrower_s_ends_its_loans() {
        let (mut borrower, mut lender, result, object) = lent();
        let _ = sent(&mut borrower);
        borrower.request(&[object]);
        relay(&sent(&mut borrower), LENDER, &mut lender);
        let gone = ToWorker::WorkerGone {
            worker: LENDER,
            reason: String::from("killed"),
        };
        receive(&mut borrower, &gone);
        match borrower.cache.get(&object) {
            Some(Slot::Failed(TaskError::OwnerDied { owner, reason, .. })) => {
                assert!(
                    owner.contains("worker 9") && reason == "killed",
                    "{owner}: {reason}"
                );
            }
            other => panic!("not failed with OwnerDied: {other:?}"),
        }
        // Its last reference goes nowhere: the lender is gone, the node never knew it.
        borrower.release(result);
        let out = sent(&mut borrower);
        assert!(
            forwarded(&out, LENDER).is_empty()
                && !out
                    .iter()
                    .any(|m| matches!(m, ToNode::Release(ids) if ids.contains(&object))),
            "{out:?}"
        );
        // The lender's borrower dies: its loans end.
        assert!(lender.loans.lends());
        let gone = ToWorker::WorkerGone {
            worker: ME,
            reason: String::from("killed"),
        };
        receive(&mut lender, &gone);
        assert!(!lender.loans.lends() && !lender.refs.contains_key(&object));
    }

    /// A lender on another node than the borrower's ([`ME`], node 0): node 1.
    const AFAR: u64 = (1 << 32) | 9;

    /// The peer addresses of the lender's node and of the borrower's.
    const LENDER_NODE: &str = "127.0.0.3:4000";
    const BORROWER_NODE: &str = "127.0.0.2:4000";

    /// The frames `worker` sends on direct links, each handed to `to`.
    fn direct(worker: &mut Worker, to: &mut Worker) -> Vec<ToWorker> {
        let frames: Vec<ToWorker> = (worker.take_direct().into_iter())
            .flat_map(|(_, bytes)| to_worker(&bytes))
            .collect();
        for frame in &frames {
            receive(to, frame);
        }
        frames
    }

    #[test]
    fn a_borrower_on_another_node_pulls_a_lent_value_from_the_lender_s_node_which_drops_its_copy_with_the_object()
     {
        let dir = crate::store::create_session_dir().unwrap();
        let mut open = |value: &ArchivedValue| ObjectBytes::from_wire(&dir, value);
        // The borrower's task runs on a worker leased on node 1, whose pushes go there
        // through the nodes; the lender answers on the borrower's direct link.
        let mut borrower = owner();
        borrower.submit(spec(1, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut borrower));
        grant(&mut borrower, key, AFAR, (Some(LENDER_NODE.into()), None));
        let pushes = sent(&mut borrower);
        let result = ObjectId::new(TaskId::new(ME, 1), 0);
        let mut lender = Worker::new(false, AFAR);
        receive(&mut lender, &ToWorker::OwnTasks);
        lender.direct_from(ME, BORROWER_NODE);
        relay(&pushes, AFAR, &mut lender);
        let run = lender.next_task().expect("the pushed task");
        let own = TaskSpec {
            resources: Resources::cpus(1.0).unwrap(),
            ..TaskSpec::call(TaskId::new(AFAR, 100), "tests::grandchild", Vec::new())
        };
        let (object, out) = returns_own_object(&mut lender, run.task, own);
        let watch = ToNode::WatchWorker {
            worker: ME,
            at: Some(BORROWER_NODE.into()),
        };
        assert!(
            out.contains(&watch),
            "the lender watches the borrower there: {out:?}"
        );
        assert!(
            !out.iter().any(|m| matches!(
                m,
                ToNode::HandOver(_) | ToNode::HoldFor { .. } | ToNode::Put { .. }
            )),
            "lent, not handed to the node: {out:?}"
        );
        let ends = direct(&mut lender, &mut borrower);
        assert!(
            matches!(&ends[..], [ToWorker::Returned { lent, .. }] if *lent == vec![object]),
            "{ends:?}"
        );
        // The lender's own task ran on a worker of its node, and left its value in the store.
        lease(&mut lender, lease_key(&out), (1 << 32) | 11);
        let _ = sent(&mut lender);
        let len = 64 << 10;
        let fill = |buf: &mut [u8]| {
            buf.fill(3);
            Ok::<_, std::convert::Infallible>(buf.len())
        };
        crate::store::Segment::create_with(&dir, object, len, fill).unwrap();
        let shared = Value::Shared {
            id: object,
            len: len as u64,
        };
        let end = ToWorker::Returned {
            sent_us: 0,
            ends: vec![untimed_end(
                object.task,
                Outcome::Returned {
                    values: vec![shared.clone()],
                    nested: vec![Vec::new()],
                    actors: vec![Vec::new()],
                },
            )],
            lent: Vec::new(),
        };
        receive_with(&mut lender, &end, &mut open).unwrap();

        // The borrower watches the lender through the lender's node, and asks it there.
        let out = sent(&mut borrower);
        let watch = ToNode::WatchWorker {
            worker: AFAR,
            at: Some(LENDER_NODE.into()),
        };
        assert!(out.contains(&watch), "{out:?}");
        borrower.request(&[object]);
        let out = sent(&mut borrower);
        assert!(
            out.iter().any(|m| matches!(
                m,
                ToNode::Forward { to: AFAR, at: Some(at), .. } if at == LENDER_NODE
            )),
            "the ask names the lender's node: {out:?}"
        );
        relay(&out, AFAR, &mut lender);
        let _ = sent(&mut lender);
        let answers = direct(&mut lender, &mut borrower);
        assert_eq!(answers.len(), 1, "{answers:?}");
        // The value is in the lender's node's store: this node pulls it from there.
        let out = sent(&mut borrower);
        let fetch = ToNode::Fetch {
            id: object,
            len: len as u64,
            from: None,
        };
        assert_eq!(out, [fetch]);
        assert!(
            value(&borrower, object).is_none(),
            "not known before the pull"
        );
        let fetched = ToWorker::Fetched {
            id: object,
            error: None,
        };
        receive_with(&mut borrower, &fetched, &mut open).unwrap();
        assert_eq!(value(&borrower, object), Some(vec![3; len]));

        // The loan goes back; the lender's last reference goes, and with it the copy the
        // borrower's node pulled.
        borrower.release(result);
        let out = sent(&mut borrower);
        let words = relay(&out, AFAR, &mut lender);
        assert!(
            matches!(&words[..], [ToWorker::Loans { release, .. }] if *release == vec![(object, 1)]),
            "{words:?}"
        );
        let out = sent(&mut lender);
        let drop = ToNode::DropCopies {
            at: BORROWER_NODE.into(),
            ids: vec![object],
        };
        assert!(out.contains(&drop), "{out:?}");
        assert_eq!(lender.take_unlinked(), [object]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A borrower ([`owner`]) that holds one loan of [`AFAR`]'s object, which its task,
    /// pushed to `AFAR` on the lender's node, returned.
    fn borrowing_afar() -> (Worker, ObjectId) {
        let mut borrower = owner();
        borrower.submit(spec(1, Vec::new(), 0), None);
        let key = lease_key(&sent(&mut borrower));
        grant(&mut borrower, key, AFAR, (Some(LENDER_NODE.into()), None));
        let _ = sent(&mut borrower);
        let object = ObjectId::new(TaskId::new(AFAR, 100), 0);
        let end = ToWorker::Returned {
            sent_us: 0,
            ends: vec![untimed_end(TaskId::new(ME, 1), holding(object))],
            lent: vec![object],
        };
        receive(&mut borrower, &end);
        (borrower, object)
    }

    /// `borrower` hears that `object`'s value is in shared memory.
    fn answer_shared(borrower: &mut Worker, object: ObjectId) {
        let shared = Value::Shared { id: object, len: 8 };
        let answer = ToWorker::Objects(vec![(object, ObjectValue::Ready(shared))]);
        receive(borrower, &answer);
    }

    #[test]
    fn a_value_the_node_answers_for_a_loan_passed_on_is_read_here_not_pulled_from_the_lender() {
        let (mut borrower, object) = borrowing_afar();
        // Passed on: the node owns it now, and answers for it (its value is in this node's
        // store by then).
        borrower.hand_over(&[object]);
        let _ = sent(&mut borrower);
        borrower.request(&[object]);
        assert_eq!(sent(&mut borrower), vec![ToNode::Get { ids: vec![object] }]);
        answer_shared(&mut borrower, object);
        let out = sent(&mut borrower);
        assert!(
            !out.iter().any(|m| matches!(m, ToNode::Fetch { .. })),
            "{out:?}"
        );
    }

    #[test]
    fn a_failed_pull_of_a_value_lent_from_another_node_names_the_lender_and_its_node() {
        let (mut borrower, object) = borrowing_afar();
        borrower.request(&[object]);
        let _ = sent(&mut borrower);
        answer_shared(&mut borrower, object);
        assert!(
            sent(&mut borrower)
                .iter()
                .any(|m| matches!(m, ToNode::Fetch { .. }))
        );
        let fetched = ToWorker::Fetched {
            id: object,
            error: Some(String::from("the node is gone")),
        };
        receive(&mut borrower, &fetched);
        match borrower.cache.get(&object) {
            Some(Slot::Failed(TaskError::ObjectUnavailable { reason, .. })) => assert!(
                reason.contains(&format!("worker {AFAR}"))
                    && reason.contains(LENDER_NODE)
                    && reason.contains("the node is gone"),
                "{reason}"
            ),
            other => panic!("not failed: {other:?}"),
        }
    }
}
