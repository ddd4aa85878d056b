//! Arguments a task pushed here brings from an owner on another node: a value in that
//! owner's node's shared memory travels as its name only, and this worker asks its node to
//! pull it ([`ToNode::Fetch`] without an address: from the owner's node, which its node
//! knows from the frames). A value an earlier task left in a third node's store (or, for an
//! owner on this node, in any other node's) is named with that node
//! ([`Execute::pull_from`]), and pulled from there. The task waits here, outside the queue,
//! until every such argument is in this node's store; one that cannot be had fails it,
//! naming why and from where. The node keeps the copy until the owner drops the object.
//!
//! [`Execute::pull_from`]: prism_transport::Execute::pull_from
//!
//! [`ToNode::Fetch`]: prism_transport::ToNode::Fetch

use std::collections::VecDeque;

use prism_graph::{IdMap, ObjectId, TaskError, TaskId, TaskKind};
use prism_transport::{Execute, Outcome, ToNode, Value};

use super::{Ended, Worker};

/// Pushed tasks waiting for their arguments' pulls.
#[derive(Debug, Default)]
pub(super) struct ArgPulls {
    /// Objects asked for, and the tasks waiting for each (once per argument).
    wanted: IdMap<ObjectId, Vec<TaskId>>,
    /// The tasks waiting, and how many of their arguments each still waits for.
    held: IdMap<TaskId, (Execute, usize)>,
    /// Actors' calls held here, by owner, in the order they came: a call runs only after
    /// those its owner made before it, so one waiting for a pull holds those behind it.
    calls: IdMap<u64, VecDeque<TaskId>>,
}

impl ArgPulls {
    /// Whether a pushed task waits here for its arguments.
    pub(super) fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }
}

impl Worker {
    /// `exec`, pushed here by its owner: queued, or held until the arguments its owner's
    /// node has in shared memory are pulled here (only when that node is another).
    pub(super) fn queue_pushed(&mut self, exec: Execute) {
        // Named with the node that has it (a value an earlier task left there), or else in
        // the owner's node's store.
        let from = |id: &ObjectId| {
            (exec.pull_from.iter())
                .find(|(arg, _)| arg == id)
                .map(|(_, at)| at.clone())
        };
        let elsewhere = self.elsewhere(exec.task.owner);
        let missing: Vec<(ObjectId, u64, Option<String>)> = (exec.args.iter())
            .filter_map(|arg| match arg {
                Value::Shared { id, len } => match from(id) {
                    Some(at) => Some((*id, *len, Some(at))),
                    None => elsewhere.then_some((*id, *len, None)),
                },
                Value::Inline(_) => None,
            })
            .collect();
        let owner = exec.task.owner;
        let call = matches!(exec.kind, TaskKind::ActorCall(_));
        let behind = call
            && self
                .arg_pulls
                .calls
                .get(&owner)
                .is_some_and(|q| !q.is_empty());
        if missing.is_empty() && !behind {
            self.queue.push_back(exec);
            return;
        }
        if call {
            self.arg_pulls
                .calls
                .entry(owner)
                .or_default()
                .push_back(exec.task);
        }
        for (id, len, from) in &missing {
            let waiting = self.arg_pulls.wanted.entry(*id).or_default();
            let first = waiting.is_empty();
            waiting.push(exec.task);
            if first {
                let (id, len, from) = (*id, *len, from.clone());
                self.send(&ToNode::Fetch { id, len, from });
            }
        }
        let task = exec.task;
        self.arg_pulls.held.insert(task, (exec, missing.len()));
    }

    /// The node pulled `id` here, or could not (`error`): the tasks it was the last missing
    /// argument of are queued, and those waiting for it fail if it cannot be had. False when
    /// no task here waits for it (it is no argument's).
    pub(super) fn arg_fetched(&mut self, id: ObjectId, error: Option<&str>) -> bool {
        let Some(tasks) = self.arg_pulls.wanted.remove(&id) else {
            return false;
        };
        for task in tasks {
            let Some((_, left)) = self.arg_pulls.held.get_mut(&task) else {
                continue; // failed, handed back or cancelled meanwhile
            };
            *left -= 1;
            if error.is_none() && *left > 0 {
                continue;
            }
            if error.is_none() && self.in_order(task) {
                // Queued once the calls made before it are.
                self.release_calls(task.owner);
                continue;
            }
            let Some((exec, _)) = self.arg_pulls.held.remove(&task) else {
                continue;
            };
            match error {
                None => self.queue.push_back(exec),
                Some(e) => {
                    let from = (exec.pull_from.iter().find(|(arg, _)| *arg == id)).map_or_else(
                        || String::from("its owner's node"),
                        |(_, at)| format!("node {at}, where an earlier task left it"),
                    );
                    self.done.push(Ended {
                        task,
                        outcome: Outcome::Failed(TaskError::ObjectUnavailable {
                            object: id,
                            function: String::from("<argument>"),
                            reason: format!(
                                "the node of the worker leased to run task {task} ({}) could \
                                 not pull it from {from}: {e}",
                                exec.function
                            ),
                        }),
                        timing: None,
                    })
                }
            }
            if self.in_order(task) {
                self.out_of_order(task);
            }
        }
        true
    }

    /// Whether `task` is an actor's call held in its owner's order.
    fn in_order(&self, task: TaskId) -> bool {
        (self.arg_pulls.calls.get(&task.owner)).is_some_and(|q| q.contains(&task))
    }

    /// Held call `task` leaves its owner's order (failed or cancelled): those behind it may
    /// go.
    fn out_of_order(&mut self, task: TaskId) {
        if let Some(order) = self.arg_pulls.calls.get_mut(&task.owner) {
            order.retain(|t| *t != task);
        }
        self.release_calls(task.owner);
    }

    /// Queues the calls of `owner` at the front of its order whose arguments are all here.
    fn release_calls(&mut self, owner: u64) {
        let Some(order) = self.arg_pulls.calls.get_mut(&owner) else {
            return;
        };
        while let Some(&task) = order.front() {
            match self.arg_pulls.held.get(&task) {
                Some((_, 0)) => {
                    order.pop_front();
                    if let Some((exec, _)) = self.arg_pulls.held.remove(&task) {
                        self.queue.push_back(exec);
                    }
                }
                Some(_) => break,
                None => {
                    order.pop_front();
                }
            }
        }
        if order.is_empty() {
            self.arg_pulls.calls.remove(&owner);
        }
    }

    /// The tasks waiting for their arguments, taken out (the worker blocked: they go back to
    /// their owners).
    /// The tasks waiting for their arguments, taken out (the worker blocked: they go back to
    /// their owners). An actor's calls stay: they run here, after the blocked one.
    pub(super) fn take_held_for_args(&mut self) -> Vec<TaskId> {
        let taken: Vec<TaskId> = (self.arg_pulls.held.iter())
            .filter(|(_, (exec, _))| exec.kind == TaskKind::Normal)
            .map(|(task, _)| *task)
            .collect();
        for task in &taken {
            self.arg_pulls.held.remove(task);
        }
        for waiting in self.arg_pulls.wanted.values_mut() {
            waiting.retain(|t| !taken.contains(t));
        }
        taken
    }

    /// Task `task`, if it waits for its arguments here, taken out (cancelled).
    pub(super) fn take_held(&mut self, task: TaskId) -> Option<Execute> {
        let exec = self.arg_pulls.held.remove(&task).map(|(exec, _)| exec)?;
        if self.in_order(task) {
            self.out_of_order(task);
        }
        Some(exec)
    }
}

#[cfg(test)]
mod tests {
    use prism_graph::{IdSet, TaskKind};
    use prism_transport::{ToWorker, Value};

    use super::super::tests::receive;
    use super::*;
    use crate::proto::nodes::node_of;

    /// An owner on node 1; this worker is on node 0.
    const OWNER: u64 = (1 << 32) + 5;

    fn pushed(seq: u64, args: Vec<Value>) -> Execute {
        Execute {
            task: TaskId::new(OWNER, seq),
            function: "tests::child".into(),
            fn_hash: 0,
            args,
            num_returns: 1,
            kind: TaskKind::Normal,
            stream: None,
            cpu: prism_graph::Amount::ZERO,
            run: 0,
            pull_from: Vec::new(),
        }
    }

    /// What the worker would write to its node now, decoded.
    fn sent(worker: &mut Worker) -> Vec<ToNode> {
        let out = std::mem::take(worker.transmit(|| 1_000));
        let mut decoder = prism_transport::FrameDecoder::new(1 << 20);
        decoder.extend(&out);
        std::iter::from_fn(|| decoder.next_frame().unwrap())
            .map(|f| {
                rkyv::deserialize::<ToNode, rkyv::rancor::Error>(f.access::<ToNode>().unwrap())
            })
            .map(Result::unwrap)
            .collect()
    }

    /// The objects the worker asks its node to pull from their owners' nodes.
    fn fetches(worker: &mut Worker) -> Vec<ObjectId> {
        (sent(worker).into_iter())
            .filter_map(|m| match m {
                ToNode::Fetch { id, from: None, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_pushed_task_waits_for_its_shared_arguments_to_be_pulled_from_its_owner_s_node() {
        assert_eq!(node_of(OWNER), 1);
        let mut w = Worker::new(false, 9);
        let (a, b) = (
            ObjectId::new(TaskId::new(OWNER, 100), 0),
            ObjectId::new(TaskId::new(OWNER, 101), 0),
        );
        let shared = |id| Value::Shared { id, len: 1 << 20 };
        // Task 1 needs a and b, task 2 only a, task 3 nothing in shared memory.
        let tasks = vec![
            pushed(1, vec![shared(a), shared(b)]),
            pushed(2, vec![shared(a), Value::Inline(vec![1])]),
            pushed(3, vec![Value::Inline(vec![2])]),
        ];
        receive(&mut w, &ToWorker::Push(tasks)).unwrap();
        assert_eq!(
            fetches(&mut w),
            [a, b],
            "one pull an object, from the owner's node"
        );
        assert_eq!(w.next_task().map(|t| t.task.seq), Some(3));
        assert!(
            w.next_task().is_none(),
            "the others wait for their arguments"
        );
        let fetched = |id, error: Option<&str>| ToWorker::Fetched {
            id,
            error: error.map(String::from),
        };
        receive(&mut w, &fetched(a, None)).unwrap();
        assert_eq!(w.next_task().map(|t| t.task.seq), Some(2));
        assert!(w.next_task().is_none(), "task 1 still waits for b");
        // b cannot be had: task 1 fails, naming it and why.
        receive(&mut w, &fetched(b, Some("owner's node gone"))).unwrap();
        assert!(w.next_task().is_none());
        let failed = w.done.pop().expect("task 1 ended");
        assert_eq!(failed.task, TaskId::new(OWNER, 1));
        match failed.outcome {
            Outcome::Failed(TaskError::ObjectUnavailable { object, reason, .. }) => {
                assert_eq!(object, b);
                assert!(reason.contains("owner's node gone"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_actor_s_calls_from_an_owner_elsewhere_run_in_order_around_their_pulls_and_a_block() {
        let mut w = Worker::new(false, 9);
        let a = ObjectId::new(TaskId::new(OWNER, 100), 0);
        let call = |seq, args| Execute {
            kind: TaskKind::ActorCall(prism_graph::ActorId(TaskId::new(0, 1))),
            ..pushed(seq, args)
        };
        // Call 1 needs a pulled; call 2, with nothing to pull, waits behind it.
        let calls = vec![
            call(
                1,
                vec![Value::Shared {
                    id: a,
                    len: 1 << 20,
                }],
            ),
            call(2, Vec::new()),
        ];
        receive(&mut w, &ToWorker::Push(calls)).unwrap();
        assert_eq!(fetches(&mut w), [a]);
        assert!(w.next_task().is_none(), "call 2 waits behind call 1");
        // The actor's running call blocks: the held calls stay, and a new one queues
        // rather than going back to its owner.
        w.block(IdSet::default());
        receive(&mut w, &ToWorker::Push(vec![call(3, Vec::new())])).unwrap();
        let sent = sent(&mut w);
        let handed_back = sent.iter().any(|m| matches!(m, ToNode::Forward { .. }));
        assert!(!handed_back, "no call went back to its owner: {sent:?}");
        let fetched = ToWorker::Fetched { id: a, error: None };
        receive(&mut w, &fetched).unwrap();
        let order: Vec<u64> = std::iter::from_fn(|| w.next_task())
            .map(|t| t.task.seq)
            .collect();
        assert_eq!(order, [1, 2, 3], "in the order they were made");
    }

    #[test]
    fn a_value_in_shared_memory_made_for_an_owner_elsewhere_is_kept_for_its_node() {
        let mut w = Worker::new(false, 9);
        receive(&mut w, &ToWorker::Push(vec![pushed(1, Vec::new())])).unwrap();
        let run = w.next_task().unwrap();
        let id = ObjectId::new(run.task, 0);
        w.ended(Ended {
            task: run.task,
            outcome: Outcome::Returned {
                values: vec![Value::Shared { id, len: 1 << 20 }],
                nested: vec![Vec::new()],
                actors: vec![Vec::new()],
            },
            timing: None,
        });
        let sent = sent(&mut w);
        let kept = sent
            .iter()
            .position(|m| *m == ToNode::KeptFor { ids: vec![id] });
        let end = sent
            .iter()
            .position(|m| matches!(m, ToNode::Forward { to: OWNER, .. }));
        assert!(
            matches!((kept, end), (Some(k), Some(e)) if k < e),
            "kept before the end goes: {sent:?}"
        );
    }

    #[test]
    fn a_worker_that_blocks_hands_back_the_tasks_waiting_for_their_arguments() {
        let mut w = Worker::new(false, 9);
        let a = ObjectId::new(TaskId::new(OWNER, 100), 0);
        let shared = Value::Shared {
            id: a,
            len: 1 << 20,
        };
        receive(&mut w, &ToWorker::Push(vec![pushed(1, vec![shared])])).unwrap();
        assert_eq!(fetches(&mut w), [a]);
        w.block(IdSet::default());
        assert!(w.arg_pulls.held.is_empty(), "handed back to its owner");
        // The pull's answer comes later: nothing runs.
        let fetched = ToWorker::Fetched { id: a, error: None };
        receive(&mut w, &fetched).unwrap();
        assert!(w.next_task().is_none());
    }
}
