//! Objects named before their owner's word reached the node. A worker that owns a task
//! hands it to the node before a reference to it leaves the worker ([`ToNode::HandOver`];
//! a `put` likewise), but on its own link, while the reference travels on others: a task's
//! end to its owner on another worker, a push to a leased worker. The reader's ask, or a hold
//! of the reference, can reach the node first (`cluster_owners`'
//! `references_a_task_s_children_return_reach_their_reader_on_another_worker` saw the ask
//! 72 ms ahead of the hand-over). So an object the node does not know, has not freed lately,
//! and that a live process may still make (a worker's, or a task of the driver's it knows)
//! is awaited: asks wait, holds and references are counted, and all of it is the object's
//! once its word comes ([`Awaited::arrived`]). Its owner's death fails the asks with
//! `OwnerDied`; without word for [`AWAIT_LIMIT`] they fail as for an object never known.
//!
//! [`ToNode::HandOver`]: prism_transport::ToNode::HandOver

use std::time::{Duration, Instant};

use prism_graph::{IdMap, ObjectId, TaskId};

use crate::proto::scheduler::WorkerId;

/// How long asks for an object wait for its owner's word (the links' delays are
/// milliseconds; a stalled host's, seconds).
pub(crate) const AWAIT_LIMIT: Duration = Duration::from_secs(10);

/// What was said of one awaited object.
#[derive(Debug)]
struct Entry {
    /// When it was first named (as the node's clock says; unknown until the next
    /// [`Awaited::expired`] when the node had not said).
    since: Option<Instant>,
    /// Workers that asked for it.
    waiters: Vec<WorkerId>,
    /// Workers that hold a reference to it.
    holders: Vec<WorkerId>,
    /// References taken (values that contain it, holds taken for an owner) less those let
    /// go.
    refs: i64,
    /// Tasks submitted with it as an argument, waiting for it to be known.
    tasks: Vec<TaskId>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.waiters.is_empty()
            && self.holders.is_empty()
            && self.refs == 0
            && self.tasks.is_empty()
    }
}

/// What the object that came is given (see [`Awaited::arrived`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Arrived {
    /// Workers to answer.
    pub(crate) waiters: Vec<WorkerId>,
    /// Workers that hold it.
    pub(crate) holders: Vec<WorkerId>,
    /// References taken less those let go.
    pub(crate) refs: i64,
    /// Tasks that take it as an argument.
    pub(crate) tasks: Vec<TaskId>,
}

/// An awaited object that will not come (see [`Awaited::expired`]): whom to fail.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Gone {
    /// Workers that asked for it.
    pub(crate) waiters: Vec<WorkerId>,
    /// Tasks that take it as an argument.
    pub(crate) tasks: Vec<TaskId>,
}

/// The objects awaited, by id.
#[derive(Debug, Default)]
pub(crate) struct Awaited {
    entries: IdMap<ObjectId, Entry>,
}

impl Awaited {
    /// Whether no object is awaited.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry(&mut self, id: ObjectId, now: Option<Instant>) -> &mut Entry {
        self.entries.entry(id).or_insert_with(|| Entry {
            since: now,
            waiters: Vec::new(),
            holders: Vec::new(),
            refs: 0,
            tasks: Vec::new(),
        })
    }

    /// `worker` asks for `id`.
    pub(crate) fn wait(&mut self, id: ObjectId, worker: WorkerId, now: Option<Instant>) {
        let entry = self.entry(id, now);
        if !entry.waiters.contains(&worker) {
            entry.waiters.push(worker);
        }
    }

    /// `worker` holds a reference to `id`.
    pub(crate) fn hold(&mut self, id: ObjectId, worker: WorkerId, now: Option<Instant>) {
        let entry = self.entry(id, now);
        if !entry.holders.contains(&worker) {
            entry.holders.push(worker);
        }
    }

    /// `worker` lets its hold of `id` go: whether it held it here.
    pub(crate) fn unhold(&mut self, id: ObjectId, worker: WorkerId) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        let before = entry.holders.len();
        entry.holders.retain(|&w| w != worker);
        let held = entry.holders.len() != before;
        self.forget_if_empty(id);
        held
    }

    /// Task `task` takes `id` as an argument.
    pub(crate) fn wait_task(&mut self, id: ObjectId, task: TaskId, now: Option<Instant>) {
        let entry = self.entry(id, now);
        if !entry.tasks.contains(&task) {
            entry.tasks.push(task);
        }
    }

    /// A reference to `id` is taken (a value that contains it, a hold for an owner).
    pub(crate) fn add_ref(&mut self, id: ObjectId, now: Option<Instant>) {
        self.entry(id, now).refs += 1;
    }

    /// A reference to `id` goes: whether it was awaited (and counted).
    pub(crate) fn release(&mut self, id: ObjectId) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        entry.refs -= 1;
        self.forget_if_empty(id);
        true
    }

    fn forget_if_empty(&mut self, id: ObjectId) {
        if self.entries.get(&id).is_some_and(Entry::is_empty) {
            self.entries.remove(&id);
        }
    }

    /// Object `id` is known now: what was said of it meanwhile, if it was awaited.
    pub(crate) fn arrived(&mut self, id: ObjectId) -> Option<Arrived> {
        let entry = self.entries.remove(&id)?;
        Some(Arrived {
            waiters: entry.waiters,
            holders: entry.holders,
            refs: entry.refs,
            tasks: entry.tasks,
        })
    }

    /// The objects awaited for [`AWAIT_LIMIT`] by `now`, no longer awaited, with whom to
    /// fail for each.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(ObjectId, Gone)> {
        for entry in self.entries.values_mut() {
            entry.since.get_or_insert(now);
        }
        self.take(|_, entry| {
            entry
                .since
                .is_some_and(|t| now.saturating_duration_since(t) >= AWAIT_LIMIT)
        })
    }

    /// The objects of tasks worker `owner` owns, no longer awaited (it is gone: they never
    /// come), with whom to fail for each.
    pub(crate) fn owner_gone(&mut self, owner: WorkerId) -> Vec<(ObjectId, Gone)> {
        self.take(|id, _| id.task.owner == owner)
    }

    fn take(&mut self, mut gone: impl FnMut(ObjectId, &Entry) -> bool) -> Vec<(ObjectId, Gone)> {
        let ids: Vec<ObjectId> = (self.entries.iter())
            .filter(|(id, entry)| gone(**id, entry))
            .map(|(id, _)| *id)
            .collect();
        let mut taken: Vec<(ObjectId, Gone)> = (ids.into_iter())
            .filter_map(|id| {
                let entry = self.entries.remove(&id)?;
                let (waiters, tasks) = (entry.waiters, entry.tasks);
                Some((id, Gone { waiters, tasks }))
            })
            .collect();
        taken.sort_unstable_by_key(|(id, _)| *id);
        taken
    }

    /// Worker `worker` is gone: its asks and holds go with it.
    pub(crate) fn worker_gone(&mut self, worker: WorkerId) {
        for entry in self.entries.values_mut() {
            entry.waiters.retain(|&w| w != worker);
            entry.holders.retain(|&w| w != worker);
        }
        self.entries.retain(|_, entry| !entry.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(owner: u64, seq: u64) -> ObjectId {
        ObjectId::new(TaskId::new(owner, seq), 0)
    }

    #[test]
    fn what_is_said_of_an_object_before_it_comes_is_its_once_it_does() {
        let mut awaited = Awaited::default();
        let t0 = Some(Instant::now());
        let (a, b) = (id(7, 1), id(7, 2));
        awaited.wait(a, 3, t0);
        awaited.wait(a, 3, t0);
        awaited.hold(a, 4, t0);
        awaited.add_ref(a, t0);
        awaited.add_ref(a, t0);
        assert!(awaited.release(a));
        assert!(!awaited.release(b), "b was never named");
        awaited.hold(b, 4, t0);
        assert!(awaited.unhold(b, 4));
        assert!(
            awaited.arrived(b).is_none(),
            "held and let go: nothing is left of b"
        );
        awaited.wait_task(b, TaskId::new(0, 9), t0);
        let tasks = awaited.arrived(b).map(|a| a.tasks);
        assert_eq!(tasks, Some(vec![TaskId::new(0, 9)]));
        assert_eq!(
            awaited.arrived(a),
            Some(Arrived {
                waiters: vec![3],
                holders: vec![4],
                refs: 1,
                tasks: Vec::new(),
            })
        );
        assert!(awaited.is_empty());
    }

    #[test]
    fn asks_end_with_their_owner_or_after_the_limit_and_a_gone_worker_s_go() {
        let mut awaited = Awaited::default();
        let t0 = Instant::now();
        awaited.wait(id(7, 1), 3, Some(t0));
        awaited.wait(id(8, 1), 3, Some(t0 + Duration::from_secs(5)));
        awaited.hold(id(9, 1), 5, Some(t0));
        // Named when the node's clock was not known: timed from the next look.
        awaited.wait(id(10, 1), 3, None);
        let asked = |waiters: Vec<WorkerId>| Gone {
            waiters,
            tasks: Vec::new(),
        };
        assert_eq!(awaited.owner_gone(7), vec![(id(7, 1), asked(vec![3]))]);
        awaited.worker_gone(5);
        assert!(awaited.expired(t0 + AWAIT_LIMIT).is_empty());
        assert_eq!(
            awaited.expired(t0 + AWAIT_LIMIT + Duration::from_secs(5)),
            vec![(id(8, 1), asked(vec![3]))]
        );
        assert_eq!(
            awaited.expired(t0 + 2 * AWAIT_LIMIT),
            vec![(id(10, 1), asked(vec![3]))]
        );
        assert!(awaited.is_empty());
    }
}
