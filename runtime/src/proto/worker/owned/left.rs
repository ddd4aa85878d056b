//! Values of owned tasks left where they were made (Ray leaves a task's results on the node
//! it ran on, and leases the tasks that read them there). A value too large to come back
//! inside its task's end stays in the store of the node of the worker that ran it (which
//! keeps it for this owner: [`ToNode::KeptFor`]); the owner books where it is ([`Afar`]), and:
//!
//! - a plain task that reads it does not wait for it: its lease ask names that node
//!   ([`ToNode::Lease`]'s `near`), whose pool the owner's node asks first; a lease there takes
//!   the tasks whose values are there before others ([`Worker::next_for`]), and its worker
//!   reads the value from its own node's store; a worker leased anywhere else is told where
//!   the value is ([`Execute::pull_from`]), and its node pulls it from there and keeps the
//!   copy until the owner drops the object;
//! - an actor's call that reads it is pushed to the actor's worker naming where it is
//!   ([`Execute::pull_from`]), as a plain task leased elsewhere, and the actor's node pulls it
//!   from there (or reads it in place, on that node); while the pull is under way the actor
//!   holds the caller's later calls behind it. A value that cannot be pulled there runs its
//!   task again and the call goes back to the front of the lane: the calls pushed after it
//!   have run by then, so after such a loss the caller's calls ran out of their order (as a
//!   retried call does);
//! - the owner pulls it into its own node's store ([`ToNode::Fetch`]) only when it needs the
//!   value itself: read by its running task (`get`, `wait`), asked of it by a borrower, an
//!   argument of a call to another job's actor (which carries values), or handed to the node
//!   with a reference that leaves this worker; the node it was left on drops its copy once it
//!   is here;
//! - the task that made it is kept ([`Left`]) with its runs counted until its values left
//!   elsewhere are here or dropped: one that cannot be pulled (its node died) runs the task
//!   again while its retries last and the objects its arguments name are still held here
//!   (Ray's lineage reconstruction: the arguments' holds went at the end as for any task, so
//!   that a chain of tasks does not keep every value before it alive); else it fails, naming
//!   the node and why;
//! - once nothing here holds any of a task's values left elsewhere, the nodes holding them
//!   drop them ([`ToNode::DropCopies`]), and the copies other nodes pulled of them.
//!
//! [`ToNode::KeptFor`]: prism_transport::ToNode::KeptFor
//! [`Execute::pull_from`]: prism_transport::Execute::pull_from

use std::collections::BTreeMap;

use prism_graph::{ObjectId, TaskError, TaskId, TaskSpec};
use prism_transport::{ArchivedValue, HandedTask, OwnedPhase, ToNode};

use super::{Task, calls, open_shared};
use crate::proto::owner::Slot;
use crate::proto::worker::Worker;
use crate::store::ObjectBytes;

/// How far into a shape's queue a lease looks for a task whose arguments are on its node.
const SCAN: usize = 64;

/// A value of an owned task left in the store of the node it ran on.
#[derive(Debug)]
pub(super) struct Afar {
    /// Its archived length.
    pub(super) len: u64,
    /// The peer address of that node.
    pub(super) at: String,
    /// Being pulled into this node's store ([`ToNode::Fetch`]).
    pub(super) pulling: bool,
}

/// An owned task that ended leaving values on other nodes: what runs it again should one be
/// lost before it is read.
#[derive(Debug)]
pub(super) struct Left {
    pub(super) spec: TaskSpec,
    /// Its runs so far, as [`Task`] counts them.
    attempts: u32,
    runs: u32,
}

impl Worker {
    /// Owned task `record` ended (its arguments' holds went) leaving values on other nodes,
    /// booked in `afar`: it is kept to run again should one be lost; those this worker waits
    /// for already (read, asked by a borrower, handed to the node) are pulled here, and if
    /// nothing here holds any of them they go.
    pub(super) fn leave(&mut self, record: Task) {
        let task = record.spec.task_id;
        let ids: Vec<ObjectId> = record.spec.return_ids().collect();
        let left = Left {
            spec: record.spec,
            attempts: record.attempts,
            runs: record.runs,
        };
        self.owned.left.insert(task, left);
        let handed = self.owned.handed.contains(&task);
        for id in ids {
            if handed || self.owned.wanted.contains(&id) || self.asked_by_borrower(id) {
                self.pull_left(id);
            }
        }
        self.drop_left(task, None);
    }

    /// Whether owned `task` has argument `object`, a value of this worker's left on another
    /// node. (One pulled here since the task was pushed is not: a failed pull of it fails the
    /// task, as any argument's; that one is bounded by the retries of the task that made
    /// the value, which runs again, where a value that is here would have no bound.)
    pub(super) fn reads_left(&self, task: TaskId, object: ObjectId) -> bool {
        self.owned.afar.contains_key(&object)
            && (self.owned.tasks.get(&task))
                .is_some_and(|r| r.spec.dependencies().any(|id| id == object))
    }

    /// Owned `task` could not run: its argument `object`, left on another node, could not be
    /// pulled where it was to run (`why`). That run does not count; the task runs again once
    /// the object is here or made again (its own task runs again if it may, else the object
    /// fails, and the task with it).
    pub(super) fn arg_lost(&mut self, task: TaskId, object: ObjectId, why: String) {
        let Some(record) = self.owned.tasks.get_mut(&task) else {
            return;
        };
        let Some(afar) = self.owned.afar.remove(&object) else {
            return;
        };
        record.attempts = record.attempts.saturating_sub(1);
        record.at = super::At::Waiting(1);
        if let Some(actor) = calls::actor_of(&record.spec.kind) {
            // Pushed again from the front of its actor's lane, ahead of the calls made after
            // it that have not gone yet (those that went ran before it: see the module's
            // docs).
            self.relane(actor, task);
        }
        self.owned.waiting_on.entry(object).or_default().push(task);
        if afar.pulling {
            // On its way here all the same: what comes settles it.
            self.owned.afar.insert(object, afar);
            return;
        }
        self.lost_left(object.task, (object, afar.at), why);
    }

    /// Owned `task`, to run on this worker itself (on top of its blocked task, which maps
    /// its arguments from this node's store) or to carry its arguments' values to another
    /// job's actor, reads values left on other nodes: they are pulled here first, and it
    /// queues again once they are. False when it reads none.
    pub(super) fn pull_first(&mut self, task: TaskId) -> bool {
        let Some(record) = self.owned.tasks.get_mut(&task) else {
            return false;
        };
        let afar: Vec<ObjectId> = (record.spec.dependencies())
            .filter(|id| self.owned.afar.contains_key(id))
            .collect();
        if afar.is_empty() {
            return false;
        }
        record.at = super::At::Waiting(afar.len());
        for id in afar {
            self.owned.waiting_on.entry(id).or_default().push(task);
            self.pull_left(id);
        }
        true
    }

    /// Pulls owned `id` into this node's store if it was left on another node and is not on
    /// its way already.
    pub(in crate::proto::worker) fn pull_left(&mut self, id: ObjectId) {
        let Some(afar) = self.owned.afar.get_mut(&id).filter(|a| !a.pulling) else {
            return;
        };
        afar.pulling = true;
        let (len, from) = (afar.len, Some(afar.at.clone()));
        self.send(&ToNode::Fetch { id, len, from });
    }

    /// The node pulled `id`, a value of an owned task left on the node it ran on, into its
    /// store (or could not: `error`); `open` maps its segment. A value that cannot be had
    /// runs its task again if it may (see [`Worker::lost_left`]).
    pub(in crate::proto::worker) fn fetched(
        &mut self,
        id: ObjectId,
        error: Option<&str>,
        open: &mut dyn FnMut(&ArchivedValue) -> std::io::Result<ObjectBytes>,
    ) {
        let Some(Afar { len, at, .. }) = self.owned.afar.remove(&id) else {
            return;
        };
        let task = id.task;
        let slot = match error {
            Some(e) => {
                let why = format!(
                    "it stayed on node {at}, where it ran, and could not be pulled from there: {e}"
                );
                return self.lost_left(task, (id, at), why);
            }
            None => match open_shared(id, len, open) {
                Ok(bytes) => {
                    self.owned.segments.insert(id);
                    Slot::Ready(bytes)
                }
                Err(e) => Slot::Failed(self.unavailable(
                    id,
                    task,
                    format!("it was pulled from node {at} but its segment cannot be mapped: {e}"),
                )),
            },
        };
        self.owned_value(id, slot);
        self.drop_left(task, None);
    }

    /// Value `id` of owned `task`, left on node `at`, cannot be had (`why`): the task runs
    /// again while its retries last, if it is a plain task and the objects and handles its
    /// arguments name are still held here (its values here stay until the new run's replace
    /// them); else the values it left elsewhere fail, naming why. Either way the node is told
    /// to drop them (should it still be there, and the pull have failed for another reason).
    fn lost_left(&mut self, task: TaskId, (id, at): (ObjectId, String), why: String) {
        self.send(&ToNode::DropCopies { at, ids: vec![id] });
        let Some(left) = self.owned.left.remove(&task) else {
            if !self.owned.tasks.contains_key(&task) {
                let error = self.unavailable(id, task, why);
                self.owned_value(id, Slot::Failed(error));
            }
            // Else it runs again already, for another value it lost.
            return;
        };
        let spec = &left.spec;
        // Its other values left there are lost too (their node is gone, most likely), but
        // for those on their way here (they come, or fail, on their own).
        let mut lost = vec![id];
        for other in spec.return_ids().filter(|&other| other != id) {
            if self.owned.afar.get(&other).is_some_and(|a| !a.pulling)
                && let Some(afar) = self.owned.afar.remove(&other)
            {
                let (at, ids) = (afar.at, vec![other]);
                self.send(&ToNode::DropCopies { at, ids });
                lost.push(other);
            }
        }
        let held = (spec.dependencies().chain(spec.inlined_refs.iter().copied()))
            .all(|arg| self.refs.contains_key(&arg))
            && (spec.inlined_actors.iter()).all(|actor| self.actors.contains_key(actor));
        let plain = calls::actor_of(&spec.kind).is_none();
        if plain && held && left.attempts <= spec.max_retries {
            self.note(task, || OwnedPhase::Failed(why));
            self.note(task, || OwnedPhase::Again);
            if self.take_up(left.spec, (left.attempts, left.runs)) == 0 {
                self.ready(task);
            }
            return;
        }
        let why = match (plain, held) {
            (false, _) => format!("{why}; an actor's call is not run again for its values"),
            (true, false) => {
                format!("{why}; its task cannot run again: objects its arguments name are gone")
            }
            (true, true) => format!("{why}; its task ran {} times", left.attempts),
        };
        for id in lost {
            let error = self.unavailable(id, task, why.clone());
            self.owned_value(id, Slot::Failed(error));
        }
    }

    /// The error of owned `id`, a value `task` left on another node, which cannot be had.
    fn unavailable(&self, id: ObjectId, task: TaskId, reason: String) -> TaskError {
        let function = (self.owned.left.get(&task).map(|l| l.spec.function.clone()))
            .or_else(|| self.owned.tasks.get(&task).map(|r| r.spec.function.clone()))
            .unwrap_or_else(|| String::from("<owned>"));
        TaskError::ObjectUnavailable {
            object: id,
            function,
            reason,
        }
    }

    /// The values owned `task` left on other nodes go if nothing here holds any of them
    /// (`going`: one whose last reference goes now), none is being pulled and the task was
    /// not handed to the node: their nodes drop them, and the copies pulled of them
    /// elsewhere (a worker leased on this node may have pulled one here too). The task is
    /// not kept once none is left.
    pub(super) fn drop_left(&mut self, task: TaskId, going: Option<ObjectId>) {
        let Some(left) = self.owned.left.get(&task) else {
            return;
        };
        let ids: Vec<ObjectId> = (left.spec.return_ids())
            .filter(|id| self.owned.afar.contains_key(id))
            .collect();
        let held = ids.iter().any(|&id| {
            (self.refs.contains_key(&id) && Some(id) != going) || self.owned.afar[&id].pulling
        });
        if held || (!ids.is_empty() && self.owned.handed.contains(&task)) {
            return;
        }
        self.owned.left.remove(&task);
        let mut drops: BTreeMap<String, Vec<ObjectId>> = BTreeMap::new();
        for id in ids {
            let Some(afar) = self.owned.afar.remove(&id) else {
                continue;
            };
            self.drop_made(id);
            let copies = self.owned.copies_at.remove(&id).unwrap_or_default();
            for at in std::iter::once(afar.at).chain(copies) {
                let ids = drops.entry(at).or_default();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            self.owned.unlinked.push(id);
        }
        for (at, ids) in drops {
            self.send(&ToNode::DropCopies { at, ids });
        }
    }

    /// Books owned `task`, which ended leaving values on other nodes, as handed to the node
    /// (see [`Worker::hand_over`]): they are pulled here, and its end goes once they are.
    pub(super) fn hand_over_left(&mut self, task: TaskId) -> Option<HandedTask> {
        let handed = self.hand_over_task(task);
        let ids: Vec<ObjectId> = (self.owned.left.get(&task))
            .map(|left| left.spec.return_ids().collect())
            .unwrap_or_default();
        for id in ids {
            self.pull_left(id);
        }
        handed
    }

    /// The node holding the most bytes of the values left on other nodes that the `index`th
    /// task queued for `shape` reads, if it reads any (its lease is asked there first).
    pub(super) fn near(&self, shape: usize, index: usize) -> Option<String> {
        if self.owned.afar.is_empty() {
            return None;
        }
        let task = self.owned.shapes[shape].queue.get(index)?;
        let spec = &self.owned.tasks.get(task)?.spec;
        let mut bytes: BTreeMap<&str, u64> = BTreeMap::new();
        for id in spec.dependencies() {
            if let Some(afar) = self.owned.afar.get(&id) {
                *bytes.entry(afar.at.as_str()).or_default() += afar.len;
            }
        }
        let most = bytes.into_iter().max_by_key(|&(_, len)| len);
        most.map(|(at, _)| at.to_string())
    }

    /// The next task queued for `shape` to push under lease `key`: the first (of the first
    /// [`SCAN`]) that reads values left on the lease's node (and on no other), else the first
    /// that reads none left anywhere; failing both, when the lease runs nothing (`idle`:
    /// nothing in flight nor about to go), the first queued (its worker's node pulls them),
    /// rather than give the lease back.
    pub(super) fn next_for(&mut self, shape: usize, key: TaskId, idle: bool) -> Option<TaskId> {
        if self.owned.afar.is_empty() {
            return self.owned.shapes[shape].queue.pop_front();
        }
        let lease = self.owned.leases.get(&key);
        let node = lease.and_then(|l| l.at.as_deref());
        let idle = idle && lease.is_some_and(|l| l.inflight.is_empty());
        let queue = &self.owned.shapes[shape].queue;
        let scan = || queue.iter().take(SCAN);
        let there = |task: TaskId| self.reads_afar(task) && self.reads_only_at(task, node);
        let at = (node.and_then(|_| scan().position(|&task| there(task))))
            .or_else(|| scan().position(|&task| !self.reads_afar(task)));
        let queue = &mut self.owned.shapes[shape].queue;
        match at {
            Some(at) => queue.remove(at),
            None if idle => queue.pop_front(),
            None => None,
        }
    }

    /// Whether every value left on other nodes that owned `task` reads is on the node at
    /// `node` (`None`: this worker's, where none is).
    fn reads_only_at(&self, task: TaskId, node: Option<&str>) -> bool {
        let Some(record) = self.owned.tasks.get(&task) else {
            return true;
        };
        (record.spec.dependencies())
            .filter_map(|id| self.owned.afar.get(&id))
            .all(|afar| Some(afar.at.as_str()) == node)
    }

    /// Whether owned `task` reads a value left on another node.
    pub(super) fn reads_afar(&self, task: TaskId) -> bool {
        !self.reads_only_at(task, None)
    }
}

#[cfg(test)]
mod tests {
    use prism_graph::{ActorId, Arg, ObjectId, Resources, TaskId, TaskKind, TaskSpec};
    use prism_transport::{ActorPlace, Execute, Outcome, TaskEnd, ToNode, ToWorker, Value};

    use crate::proto::worker::{Tally, Wake, Worker};
    use crate::store::ObjectBytes;

    use prism_transport::ArchivedValue;

    use crate::proto::worker::owned::tests::{
        ME, forwarded, grant, lease_key, owner, receive, sent, spec, untimed_end, value_of,
    };

    /// Where the tasks ran and left their values.
    const X: &str = "127.0.0.3:4000";
    /// Another node.
    const Y: &str = "127.0.0.4:4000";
    const LEN: u64 = 4 << 20;

    /// Run `run` of owned `task` ended with `outcome`.
    fn ended(w: &mut Worker, task: TaskId, run: u32, outcome: Outcome) {
        let ends = vec![TaskEnd {
            run,
            ..untimed_end(task, outcome)
        }];
        let lent = Vec::new();
        let returned = ToWorker::Returned {
            sent_us: 0,
            ends,
            lent,
        };
        receive(w, &returned);
    }

    /// `task`'s one value, left in shared memory where it ran.
    fn left_there(task: TaskId) -> Outcome {
        let id = ObjectId::new(task, 0);
        Outcome::Returned {
            values: vec![Value::Shared { id, len: LEN }],
            nested: vec![Vec::new()],
            actors: vec![Vec::new()],
        }
    }

    /// Task `seq` of the owner ended on a worker of node [`X`], leaving its value there.
    fn end_at_x(w: &mut Worker, seq: u64) -> ObjectId {
        let task = TaskId::new(ME, seq);
        ended(w, task, 0, left_there(task));
        ObjectId::new(task, 0)
    }

    /// An owner whose task 1 ran on node [`X`] under a lease (worker 9), which it gave back,
    /// and left its value there.
    fn made_at_x(max_retries: u32) -> (Worker, ObjectId) {
        let mut w = owner();
        w.submit(spec(1, Vec::new(), max_retries), None);
        let key = lease_key(&sent(&mut w));
        grant(&mut w, key, 9, (Some(X.into()), None));
        let id = end_at_x(&mut w, 1);
        let _ = sent(&mut w);
        (w, id)
    }

    fn asks(messages: &[ToNode]) -> Vec<(TaskId, Option<String>)> {
        (messages.iter())
            .filter_map(|m| match m {
                ToNode::Lease { key, near, .. } => Some((*key, near.clone())),
                _ => None,
            })
            .collect()
    }

    fn pushes(messages: &[ToNode], to: u64) -> Vec<Execute> {
        (forwarded(messages, to).into_iter())
            .flat_map(|m| match m {
                ToWorker::Push(batch) => batch,
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_value_left_where_it_ran_is_not_pulled_unless_read_and_goes_there_when_let_go() {
        let (mut w, id) = made_at_x(0);
        assert!(w.owns(id));
        assert_eq!(w.cache.get(&id).map(|_| ()), None, "not here");
        // Read: pulled, once.
        w.request(&[id]);
        w.request(&[id]);
        let fetch = ToNode::Fetch {
            id,
            len: LEN,
            from: Some(X.into()),
        };
        let fetches: Vec<ToNode> = (sent(&mut w).into_iter())
            .filter(|m| matches!(m, ToNode::Fetch { .. }))
            .collect();
        assert_eq!(fetches, [fetch]);

        // Another, let go unread: node X drops it; nothing is pulled.
        let (mut w, id) = made_at_x(0);
        w.release(id);
        let messages = sent(&mut w);
        assert!(
            messages.contains(&ToNode::DropCopies {
                at: X.into(),
                ids: vec![id],
            }),
            "{messages:?}"
        );
        assert!(!messages.iter().any(|m| matches!(m, ToNode::Fetch { .. })));
        assert!(!w.owns(id));
        assert_eq!(w.take_unlinked(), [id], "and a copy pulled here, if any");
    }

    #[test]
    fn a_task_reading_a_value_left_on_another_node_is_leased_near_it_and_read_in_place() {
        let (mut w, id) = made_at_x(0);
        w.submit(spec(2, vec![Arg::Ref(id)], 0), None);
        w.submit(spec(3, vec![Arg::Ref(id)], 0), None);
        w.submit(spec(4, Vec::new(), 0), None);
        let messages = sent(&mut w);
        let asked = asks(&messages);
        assert_eq!(
            asked.first().map(|(_, near)| near.as_deref()),
            Some(Some(X)),
            "not waited for: asked near where it is ({messages:?})"
        );
        let key = asked[0].0;
        // Granted there: pushed with its name alone (read from that node's store), the task
        // with no such argument behind them.
        grant(&mut w, key, 7, (Some(X.into()), None));
        let pushed = pushes(&sent(&mut w), 7);
        let tasks: Vec<u64> = pushed.iter().map(|e| e.task.seq).collect();
        assert_eq!(tasks, [2, 3]);
        assert_eq!(pushed[0].args, [Value::Shared { id, len: LEN }]);
        assert_eq!(pushed[0].pull_from, []);

        // Granted on another node, a task is pushed naming where its argument is.
        let (mut w, id) = made_at_x(0);
        w.submit(spec(2, vec![Arg::Ref(id)], 0), None);
        let key = lease_key(&sent(&mut w));
        grant(&mut w, key, 8, (Some(Y.into()), None));
        let pushed = pushes(&sent(&mut w), 8);
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].pull_from, [(id, X.to_string())]);
        // Its copy there goes with the object.
        ended(&mut w, pushed[0].task, pushed[0].run, value_of(vec![1]));
        w.release(id);
        let messages = sent(&mut w);
        for at in [X, Y] {
            let drop = ToNode::DropCopies {
                at: at.into(),
                ids: vec![id],
            };
            assert!(messages.contains(&drop), "{at}: {messages:?}");
        }
    }

    #[test]
    fn an_argument_lost_with_its_node_runs_its_task_again_and_the_reader_after_it() {
        let (mut w, id) = made_at_x(1);
        w.submit(spec(2, vec![Arg::Ref(id)], 0), None);
        let key = lease_key(&sent(&mut w));
        grant(&mut w, key, 8, (Some(Y.into()), None));
        let pushed = pushes(&sent(&mut w), 8);
        // Node X died: node Y could not pull it.
        let reader = pushed[0].task;
        let failed = prism_graph::TaskError::ObjectUnavailable {
            object: id,
            function: "<argument>".into(),
            reason: format!("could not pull it from node {X}: connection lost"),
        };
        ended(&mut w, reader, pushed[0].run, Outcome::Failed(failed));
        // The task that made it runs again first (on the lease still held); the reader waits.
        let pushed = pushes(&sent(&mut w), 8);
        let tasks: Vec<u64> = pushed.iter().map(|e| e.task.seq).collect();
        assert_eq!(tasks, [1]);
        assert_eq!(pushed[0].run, 2, "its second run");
        // It ends on Y this time, leaving its value there: the reader runs there, in place.
        let producer = TaskId::new(ME, 1);
        ended(&mut w, producer, 2, left_there(producer));
        // (The lease went back as the value came: the reader is asked for near it.)
        let messages = sent(&mut w);
        let asked = asks(&messages);
        assert_eq!(asked.len(), 1, "{messages:?}");
        assert_eq!(asked[0].1.as_deref(), Some(Y));
        grant(&mut w, asked[0].0, 8, (Some(Y.into()), None));
        let pushed = pushes(&sent(&mut w), 8);
        let tasks: Vec<TaskId> = pushed.iter().map(|e| e.task).collect();
        assert_eq!(tasks, [reader]);
        assert_eq!(pushed[0].pull_from, [], "read in place on Y");
        assert_eq!(pushed[0].run, 2, "the lost argument's run did not count");
    }

    #[test]
    fn a_task_run_on_its_blocked_owner_pulls_a_value_left_elsewhere_first() {
        let (mut w, id) = made_at_x(0);
        let reader = spec(2, vec![Arg::Ref(id)], 0);
        let read = ObjectId::new(reader.task_id, 0);
        w.submit(reader, None);
        let ids = [read];
        w.request(&ids);
        let awaiting = w.missing_tasks(&ids, 8);
        let key = lease_key(&sent(&mut w));
        w.block(awaiting);
        let _ = sent(&mut w);
        let mut tally = Tally::new(&w, &ids, 1);
        // Leased itself: it maps its arguments from this node's store, so the value comes
        // here before the task runs.
        grant(&mut w, key, ME, (None, None));
        assert!(matches!(w.wake(&ids, 1, &mut tally), Wake::Wait));
        let fetch = ToNode::Fetch {
            id,
            len: LEN,
            from: Some(X.into()),
        };
        assert!(sent(&mut w).contains(&fetch));
        let mut open = |_: &ArchivedValue| Ok(ObjectBytes::inline(&[1]));
        let fetched = ToWorker::Fetched { id, error: None };
        crate::proto::worker::tests::receive_with(&mut w, &fetched, &mut open).unwrap();
        let Wake::Run(exec) = w.wake(&ids, 1, &mut tally) else {
            panic!("it runs the task once the value is here");
        };
        assert_eq!(exec.task, read.task);
    }

    const ACTOR: ActorId = ActorId(TaskId { owner: 0, seq: 77 });

    /// Call `seq` of [`ACTOR`] reading `id`.
    fn call_reading(seq: u64, id: ObjectId) -> TaskSpec {
        TaskSpec {
            kind: TaskKind::ActorCall(ACTOR),
            resources: Resources::default(),
            ..spec(seq, vec![Arg::Ref(id)], 0)
        }
    }

    /// The node's word: [`ACTOR`] runs on worker 9 of the node at `at` (another job's, with
    /// `foreign`, on its direct endpoint).
    fn actor_on(w: &mut Worker, at: &str, foreign: Option<ActorId>) {
        let place = ActorPlace::Alive {
            worker: 9,
            at: Some(at.into()),
            direct: foreign.map(|_| "10.0.0.9:7001".to_string()),
        };
        let word = ToWorker::ActorAt {
            actor: ACTOR,
            class: "tests::Counter".into(),
            max_task_retries: 0,
            place,
            foreign,
        };
        receive(w, &word);
    }

    fn fetches(messages: &[ToNode]) -> usize {
        (messages.iter())
            .filter(|m| matches!(m, ToNode::Fetch { .. }))
            .count()
    }

    #[test]
    fn an_actor_s_call_reading_a_value_left_elsewhere_has_the_actor_s_node_pull_it_from_there() {
        // The actor on node Y pulls it from X; one on X reads it in place. Neither is
        // pulled to the owner's node.
        for (actor_at, pulled_from) in [(Y, Some(X)), (X, None)] {
            let (mut w, id) = made_at_x(0);
            w.submit(call_reading(2, id), None);
            actor_on(&mut w, actor_at, None);
            let messages = sent(&mut w);
            assert_eq!(fetches(&messages), 0, "{messages:?}");
            let pushed = pushes(&messages, 9);
            assert_eq!(pushed.len(), 1, "{messages:?}");
            assert_eq!(pushed[0].args, [Value::Shared { id, len: LEN }]);
            let from: Vec<(ObjectId, String)> = pulled_from
                .map(|at| (id, at.to_string()))
                .into_iter()
                .collect();
            assert_eq!(pushed[0].pull_from, from, "actor on {actor_at}");
        }

        // Lost with node X before Y pulled it: its task runs again, and the call goes again
        // once the value is back (read in place on Y, where it was made this time).
        let (mut w, id) = made_at_x(1);
        w.submit(call_reading(2, id), None);
        actor_on(&mut w, Y, None);
        let call = pushes(&sent(&mut w), 9).remove(0);
        let failed = prism_graph::TaskError::ObjectUnavailable {
            object: id,
            function: "<argument>".into(),
            reason: format!("could not pull it from node {X}: connection lost"),
        };
        ended(&mut w, call.task, call.run, Outcome::Failed(failed));
        let key = lease_key(&sent(&mut w));
        grant(&mut w, key, 8, (Some(Y.into()), None));
        let again = pushes(&sent(&mut w), 8);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].task.seq, again[0].run), (1, 2));
        ended(
            &mut w,
            again[0].task,
            again[0].run,
            left_there(again[0].task),
        );
        let pushed = pushes(&sent(&mut w), 9);
        assert_eq!(pushed.len(), 1);
        assert_eq!((pushed[0].task, pushed[0].run), (call.task, call.run + 1));
        assert_eq!(pushed[0].pull_from, [], "read in place on Y");
    }

    #[test]
    fn a_call_to_another_job_s_actor_carries_a_value_left_elsewhere_pulled_here_first() {
        let (mut w, id) = made_at_x(0);
        w.set_linking();
        let theirs = ActorId(TaskId::new(0, 5));
        w.submit(call_reading(2, id), None);
        w.submit(call_reading(3, id), None);
        actor_on(&mut w, Y, Some(theirs));
        let messages = sent(&mut w);
        assert_eq!(fetches(&messages), 1, "{messages:?}");
        assert!(w.take_direct().is_empty(), "the calls wait for it");
        let mut open = |_: &ArchivedValue| Ok(ObjectBytes::inline(&[1, 2]));
        let fetched = ToWorker::Fetched { id, error: None };
        crate::proto::worker::tests::receive_with(&mut w, &fetched, &mut open).unwrap();
        let _ = sent(&mut w);
        let calls: Vec<Execute> = (w.take_direct().iter())
            .flat_map(|(_, bytes)| crate::proto::worker::owned::tests::to_worker(bytes))
            .flat_map(|m| match m {
                ToWorker::Push(calls) => calls,
                _ => Vec::new(),
            })
            .collect();
        let seqs: Vec<u64> = calls.iter().map(|c| c.task.seq).collect();
        assert_eq!(seqs, [2, 3], "in order");
        assert!(calls.iter().all(|c| c.args == [Value::Inline(vec![1, 2])]));
    }

    #[test]
    fn a_value_lost_whose_task_has_no_retry_left_fails_naming_its_node() {
        let (mut w, id) = made_at_x(0);
        w.request(&[id]);
        let _ = sent(&mut w);
        let error = Some("connection lost".to_string());
        receive(&mut w, &ToWorker::Fetched { id, error });
        match w.cache.get(&id) {
            Some(crate::proto::owner::Slot::Failed(e)) => {
                let e = e.to_string();
                assert!(e.contains(X) && e.contains("connection lost"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
