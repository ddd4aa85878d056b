//! Calls to actors a worker owns (Ray's direct actor calls): the worker keeps a call's spec
//! and results like those of its plain tasks, learns from the node where the actor runs
//! ([`ToNode::WhereActor`], answered and updated with [`ToWorker::ActorAt`]) and pushes the
//! calls to the actor's worker itself, in the order they were made, through its node's relay
//! ([`ToWorker::Push`]); their ends come back to it ([`ToWorker::Returned`]). The driver,
//! which keeps the actor (its creation, restarts and handles), is on none of the calls' paths.
//!
//! A call waiting for its arguments holds the calls made after it, as the node's own queue of
//! an actor's calls does. While the actor restarts, the calls pushed to it and not ended run
//! again once it is alive (while `max_task_retries` lasts) or fail naming the death; when it is
//! gone for good every call fails with its reason. A call holds its actor's handle until it
//! ends, so the actor outlives the calls in flight.
//!
//! [`ToNode::WhereActor`]: prism_transport::ToNode::WhereActor
//! [`ToWorker::ActorAt`]: prism_transport::ToWorker::ActorAt
//! [`ToWorker::Push`]: prism_transport::ToWorker::Push
//! [`ToWorker::Returned`]: prism_transport::ToWorker::Returned

use std::collections::VecDeque;

use prism_graph::{ActorId, TaskError, TaskId, TaskKind};
use prism_transport::{ActorPlace, OwnedPhase, ToNode, ToWorker};

use super::{At, Worker};

/// The most calls one push carries (the rest follow in the next).
const PUSH_BATCH: usize = 1_024;

/// The calls this worker makes to one actor.
#[derive(Debug)]
pub(super) struct Lane {
    /// Where the actor is, as the node last said (`None`: asked, not answered yet).
    place: Option<ActorPlace>,
    class: String,
    max_task_retries: u32,
    /// Calls not pushed yet, in the order they were made (some may wait for arguments).
    queue: VecDeque<TaskId>,
    /// Calls pushed to the actor's worker and not ended, in order.
    inflight: VecDeque<TaskId>,
    /// The actor's id in its own job, when that is another job (`actor` is this job's alias
    /// for it): its calls name that id, go to its worker's endpoint only, and carry their
    /// arguments' values.
    foreign: Option<ActorId>,
}

impl Lane {
    /// The actor's worker and its node's peer address, while it is alive and reachable.
    pub(super) fn target(&self) -> Option<(u64, Option<String>)> {
        match &self.place {
            Some(ActorPlace::Alive { worker, at, .. }) => Some((*worker, at.clone())),
            _ => None,
        }
    }

    /// The direct endpoint of the actor's worker `worker`, while it is alive there (never
    /// for another job's actor, whose worker's number is of its job).
    pub(super) fn endpoint_of(&self, worker: u64) -> Option<&str> {
        if self.foreign.is_some() {
            return None;
        }
        match &self.place {
            Some(ActorPlace::Alive {
                worker: w,
                direct: Some(direct),
                ..
            }) if *w == worker => Some(direct),
            _ => None,
        }
    }
}

/// The actor `spec` calls, when it is an actor's call.
pub(super) fn actor_of(kind: &TaskKind) -> Option<ActorId> {
    match kind {
        TaskKind::ActorCall(actor) => Some(*actor),
        _ => None,
    }
}

impl Worker {
    /// Whether this worker pushes its calls to `actor` itself: not when the node said the
    /// actor is out of its node's reach (and no call of its waits here).
    pub(super) fn calls_itself(&self, actor: ActorId) -> bool {
        match self.owned.lanes.get(&actor) {
            Some(lane) => {
                !matches!(lane.place, Some(ActorPlace::Unreachable))
                    || !lane.queue.is_empty()
                    || !lane.inflight.is_empty()
            }
            None => true,
        }
    }

    /// Owned call `task` to `actor` takes its turn behind the calls made before it (asking
    /// the node where the actor is, the first time), holding the actor's handle till it ends.
    pub(super) fn enlane(&mut self, actor: ActorId, task: TaskId) {
        self.actor_borrow(actor);
        if let Some(lane) = self.owned.lanes.get_mut(&actor) {
            lane.queue.push_back(task);
            return;
        }
        self.owned.lanes.insert(
            actor,
            Lane {
                place: None,
                class: String::new(),
                max_task_retries: 0,
                queue: VecDeque::from([task]),
                inflight: VecDeque::new(),
                foreign: None,
            },
        );
        self.send(&ToNode::WhereActor { actor });
    }

    /// Owned call `task` leaves its actor's lane (it ended, failed or is cancelled).
    pub(super) fn unlane(&mut self, actor: ActorId, task: TaskId) {
        let Some(lane) = self.owned.lanes.get_mut(&actor) else {
            return;
        };
        // Calls end in the order they were pushed, near enough: looked for from the front.
        for calls in [&mut lane.inflight, &mut lane.queue] {
            if let Some(at) = calls.iter().position(|t| *t == task) {
                calls.remove(at);
                return;
            }
        }
    }

    /// Owned call `task` goes back to the front of its actor's lane, to be pushed again.
    pub(super) fn relane(&mut self, actor: ActorId, task: TaskId) {
        if let Some(lane) = self.owned.lanes.get_mut(&actor) {
            lane.inflight.retain(|t| *t != task);
            lane.queue.retain(|t| *t != task);
            lane.queue.push_front(task);
        }
    }

    /// The calls at the front of `actor`'s lane whose arguments are known go to the actor, in
    /// order (a call still waiting holds those behind it): pushed with the next frames this
    /// worker writes, so that a burst of calls goes in one push. They all fail when the actor
    /// is gone, or go to the node when it is out of reach.
    pub(super) fn pump_lane(&mut self, actor: ActorId) {
        let Some(lane) = self.owned.lanes.get(&actor) else {
            return;
        };
        match &lane.place {
            Some(ActorPlace::Alive { .. }) if lane.foreign.is_some() && !self.links_directly() => {
                let reason = "it is another job's, reached only on a direct link, and this \
                              worker has no direct endpoint";
                let calls: Vec<TaskId> =
                    (lane.inflight.iter().chain(&lane.queue)).copied().collect();
                for task in calls {
                    self.call_failed(actor, task, reason);
                }
            }
            Some(ActorPlace::Alive { .. }) => {
                if !self.owned.lanes_due.contains(&actor) {
                    self.owned.lanes_due.push(actor);
                }
            }
            Some(ActorPlace::Dead(reason)) => {
                let reason = reason.clone();
                let calls: Vec<TaskId> =
                    (lane.inflight.iter().chain(&lane.queue)).copied().collect();
                for task in calls {
                    self.call_failed(actor, task, &reason);
                }
            }
            Some(ActorPlace::Unreachable) => {
                while let Some(task) = self.next_call(actor) {
                    // The node holds the actor for the call now (the call's own hold on
                    // the handle goes as it is handed over).
                    self.unlane(actor, task);
                    self.hand_to_node([task]);
                }
            }
            None | Some(ActorPlace::Restarting { .. }) => {}
        }
    }

    /// The call at the front of `actor`'s lane if it may go now (its arguments are known);
    /// none while the front waits for its arguments, or nothing waits. (A call leaves the
    /// lane as it ends or fails, wherever it is: see [`Worker::unlane`].)
    fn next_call(&self, actor: ActorId) -> Option<TaskId> {
        let task = *self.owned.lanes.get(&actor)?.queue.front()?;
        let at = self.owned.tasks.get(&task).map(|r| r.at);
        debug_assert!(at.is_some(), "call {task} ended but is still in line");
        (at == Some(At::Queued)).then_some(task)
    }

    /// Pushes the calls due to go (see [`Worker::pump_lane`]), one push per actor.
    pub(in crate::proto::worker) fn push_calls(&mut self) {
        for actor in std::mem::take(&mut self.owned.lanes_due) {
            let Some((worker, at)) = self.owned.lanes.get(&actor).and_then(Lane::target) else {
                continue;
            };
            let foreign = self
                .owned
                .lanes
                .get(&actor)
                .is_some_and(|l| l.foreign.is_some());
            let mut batch = Vec::new();
            while let Some(task) = self.next_call(actor) {
                if foreign && self.pull_first(task) {
                    // Another job's actor reads no store of this job's: the values go with
                    // the call, once here (the calls behind it wait).
                    break;
                }
                let lane = self.owned.lanes.get_mut(&actor).expect("it has a call");
                lane.queue.pop_front();
                lane.inflight.push_back(task);
                match self.execute_owned(task, At::Called(actor)) {
                    Some(exec) => batch.push(exec),
                    None => continue, // failed (an argument is gone)
                }
                if batch.len() == PUSH_BATCH {
                    let full = std::mem::take(&mut batch);
                    self.forward_to_lane(actor, worker, at.clone(), &ToWorker::Push(full));
                }
            }
            if !batch.is_empty() {
                self.forward_to_lane(actor, worker, at, &ToWorker::Push(batch));
            }
        }
    }

    /// Sends `msg` to `actor`'s worker (`worker`, of the node at `at`): to its endpoint when
    /// the actor is another job's (none: it cannot be reached), else as to any worker.
    fn forward_to_lane(&mut self, actor: ActorId, worker: u64, at: Option<String>, msg: &ToWorker) {
        let Some(lane) = self.owned.lanes.get(&actor) else {
            return;
        };
        if lane.foreign.is_none() {
            return self.forward(worker, at, msg);
        }
        let endpoint = match &lane.place {
            Some(ActorPlace::Alive {
                direct: Some(direct),
                ..
            }) => direct.clone(),
            _ => return,
        };
        let mut frame = Vec::new();
        match prism_transport::encode_frame(msg, &mut frame) {
            Ok(()) => self.send_direct(super::super::DirectTo::Endpoint(endpoint), frame),
            Err(e) => {
                tracing::error!(actor = %actor, "cannot encode a call to another job's actor: {e}")
            }
        }
    }

    /// The id that owned call `task`'s push names its actor by, and whether its arguments
    /// must go as values: another job's actor's own id (see [`Lane::foreign`]).
    pub(super) fn foreign_target(&self, at: At) -> Option<ActorId> {
        match at {
            At::Called(actor) => self.owned.lanes.get(&actor)?.foreign,
            _ => None,
        }
    }

    /// The direct link to `endpoint` broke: the calls in flight to another job's actor there
    /// may never have arrived; each is pushed again on a new link while its retries last,
    /// else fails.
    pub(super) fn foreign_link_lost(&mut self, endpoint: &str) {
        let lanes: Vec<ActorId> = (self.owned.lanes.iter())
            .filter(|(_, lane)| {
                lane.foreign.is_some()
                    && matches!(&lane.place, Some(ActorPlace::Alive { direct: Some(d), .. }) if d == endpoint)
            })
            .map(|(actor, _)| *actor)
            .collect();
        for actor in lanes {
            let Some(lane) = self.owned.lanes.get_mut(&actor) else {
                continue;
            };
            let max_task_retries = lane.max_task_retries;
            let inflight: Vec<TaskId> = lane.inflight.drain(..).collect();
            let why = format!(
                "the link to its worker at {endpoint} broke during the call, and the call's \
                 retries (max_task_retries = {max_task_retries}) are spent"
            );
            self.retry_or_fail(actor, inflight, max_task_retries, &why);
            self.pump_lane(actor);
        }
    }

    /// Calls `inflight` to `actor` that died with its process or link: each goes again (in
    /// the order they were made, ahead of those not pushed yet) while its retries last, else
    /// fails for `why`.
    fn retry_or_fail(
        &mut self,
        actor: ActorId,
        inflight: Vec<TaskId>,
        max_task_retries: u32,
        why: &str,
    ) {
        for task in inflight.into_iter().rev() {
            let Some(record) = self.owned.tasks.get(&task) else {
                continue;
            };
            if record.attempts <= max_task_retries && !self.owned.cancelled.contains(&task) {
                self.note(task, || OwnedPhase::Again);
                self.requeue(task);
            } else {
                self.call_failed(actor, task, why);
            }
        }
    }

    /// Owned call `task` to `actor` fails: the actor died (`reason`).
    fn call_failed(&mut self, actor: ActorId, task: TaskId, reason: &str) {
        let Some(record) = self.owned.tasks.get(&task) else {
            self.unlane(actor, task);
            return;
        };
        let class = (self.owned.lanes.get(&actor)).map_or_else(String::new, |l| l.class.clone());
        let error = match self.owned.cancelled.remove(&task) {
            true => TaskError::Cancelled {
                task,
                function: record.spec.function.clone(),
            },
            false => TaskError::ActorDied {
                task,
                function: record.spec.function.clone(),
                actor,
                class,
                reason: reason.to_string(),
            },
        };
        self.owned_failed(task, error);
    }

    /// The node says where `actor` is now (and, for another job's actor, its id there).
    pub(crate) fn actor_at(
        &mut self,
        actor: ActorId,
        class: String,
        max_task_retries: u32,
        place: ActorPlace,
        foreign: Option<ActorId>,
    ) {
        let Some(lane) = self.owned.lanes.get_mut(&actor) else {
            return;
        };
        lane.class = class;
        lane.max_task_retries = max_task_retries;
        lane.foreign = foreign;
        if let ActorPlace::Restarting { reason } = &place {
            // The calls in flight died with the process.
            let inflight: Vec<TaskId> = lane.inflight.drain(..).collect();
            let why = format!(
                "its process died during the call ({reason}) and the call's retries \
                 (max_task_retries = {max_task_retries}) are spent"
            );
            self.retry_or_fail(actor, inflight, max_task_retries, &why);
        }
        if let Some(lane) = self.owned.lanes.get_mut(&actor) {
            lane.place = Some(place);
        }
        self.pump_lane(actor);
    }

    /// Cancels owned call `task`, pushed to `actor`'s worker: it drops the call unless it
    /// started (a started call runs to its end: actors' calls are not cancelled by force).
    pub(super) fn cancel_call(&mut self, actor: ActorId, task: TaskId) {
        if let Some((worker, at)) = self.owned.lanes.get(&actor).and_then(Lane::target) {
            self.forward_to_lane(actor, worker, at, &ToWorker::Cancel { task });
        }
        self.owned.cancelled.insert(task);
    }
}

#[cfg(test)]
mod tests {
    //! A caller's books stepped by hand: the node's word on the actor and the actor's ends
    //! in, frames out.

    use prism_graph::{Arg, ObjectId, TaskSpec};
    use prism_transport::ObjectValue;

    use super::super::tests::{
        ME, forwarded, owner, pushed, receive, returned, sent, to_worker, value,
    };
    use super::*;
    use crate::proto::owner::Slot;

    const ACTOR: ActorId = ActorId(TaskId { owner: 0, seq: 77 });

    /// Call `seq` of [`ACTOR`] by owner [`ME`].
    fn call(seq: u64, args: Vec<Arg>) -> TaskSpec {
        TaskSpec {
            kind: TaskKind::ActorCall(ACTOR),
            ..TaskSpec::call(TaskId::new(ME, seq), "tests::Counter::inc", args)
        }
    }

    fn place(w: &mut Worker, max_task_retries: u32, place: ActorPlace) {
        let class = "tests::Counter".to_string();
        let at = ToWorker::ActorAt {
            actor: ACTOR,
            class,
            max_task_retries,
            place,
            foreign: None,
        };
        receive(w, &at);
    }

    fn alive(worker: u64) -> ActorPlace {
        let direct = None;
        ActorPlace::Alive {
            worker,
            at: None,
            direct,
        }
    }

    #[test]
    fn calls_of_another_job_s_actor_go_to_its_endpoint_naming_its_own_id_with_values_only() {
        let mut w = owner();
        w.set_linking();
        let theirs = ActorId(TaskId::new(0, 5));
        let endpoint = "10.0.0.9:7001".to_string();
        // An argument that is an object of this job's goes as its value; one holding a
        // reference cannot go.
        let made = ObjectId::new(TaskId::new(0, 3), 0);
        let plain = call(1, vec![Arg::Ref(made)]);
        let holding = TaskSpec {
            inlined_refs: vec![made],
            ..call(2, vec![Arg::Value(vec![0])])
        };
        let ids = [plain.task_id, holding.task_id];
        w.submit(plain, None);
        w.submit(holding, None);
        let _ = sent(&mut w);
        let argument = ObjectValue::Ready(prism_transport::Value::Inline(vec![1, 2]));
        receive(&mut w, &ToWorker::Objects(vec![(made, argument)]));
        let at = ToWorker::ActorAt {
            actor: ACTOR,
            class: "tests::Counter".into(),
            max_task_retries: 1,
            place: ActorPlace::Alive {
                worker: 9,
                at: Some("10.0.0.9:7000".into()),
                direct: Some(endpoint.clone()),
            },
            foreign: Some(theirs),
        };
        receive(&mut w, &at);
        let through_node = sent(&mut w);
        assert!(pushed(&through_node, 9).is_empty(), "{through_node:?}");
        let direct = w.take_direct();
        let calls: Vec<_> = (direct.iter())
            .flat_map(|(to, bytes)| {
                assert_eq!(
                    to,
                    &super::super::super::DirectTo::Endpoint(endpoint.clone())
                );
                to_worker(bytes)
            })
            .flat_map(|m| match m {
                ToWorker::Push(calls) => calls,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].kind, TaskKind::ActorCall(theirs));
        assert_eq!(
            calls[0].args,
            vec![prism_transport::Value::Inline(vec![1, 2])]
        );
        assert!(matches!(
            failure(&w, ids[1]),
            Some(TaskError::InvalidValue { .. })
        ));
        // The link breaks: the call in flight goes again on a new one (one retry).
        w.direct_lost(&endpoint);
        let _ = sent(&mut w);
        let again: usize = (w.take_direct().iter())
            .flat_map(|(_, bytes)| to_worker(bytes))
            .filter(|m| matches!(m, ToWorker::Push(_)))
            .count();
        assert_eq!(again, 1);
    }

    fn failure(w: &Worker, task: TaskId) -> Option<TaskError> {
        match w.cache.get(&ObjectId::new(task, 0)) {
            Some(Slot::Failed(e)) => Some(e.clone()),
            _ => None,
        }
    }

    #[test]
    fn calls_go_to_the_actor_in_order_once_it_is_placed_and_wait_behind_a_call_s_arguments() {
        let mut w = owner();
        let unknown = ObjectId::new(TaskId::new(0, 3), 0);
        let calls = [
            call(1, Vec::new()),
            call(2, vec![Arg::Ref(unknown)]),
            call(3, Vec::new()),
        ];
        let ids: Vec<TaskId> = calls.iter().map(|c| c.task_id).collect();
        for c in calls {
            w.submit(c, None);
        }
        let first = sent(&mut w);
        assert!(
            first.contains(&ToNode::WhereActor { actor: ACTOR }),
            "{first:?}"
        );
        assert!(
            first.contains(&ToNode::HoldActors(vec![ACTOR])),
            "{first:?}"
        );
        assert!(pushed(&first, 9).is_empty(), "nothing before it is placed");
        place(&mut w, 0, alive(9));
        assert_eq!(
            pushed(&sent(&mut w), 9),
            vec![ids[0]],
            "2 waits; 3 behind it"
        );
        let argument = ObjectValue::Ready(prism_transport::Value::Inline(vec![1]));
        receive(&mut w, &ToWorker::Objects(vec![(unknown, argument)]));
        assert_eq!(pushed(&sent(&mut w), 9), vec![ids[1], ids[2]], "one push");
        for (i, &task) in ids.iter().enumerate() {
            receive(&mut w, &returned(task, vec![i as u8]));
        }
        for (i, &task) in ids.iter().enumerate() {
            assert_eq!(value(&w, ObjectId::new(task, 0)), Some(vec![i as u8]));
        }
        // The calls held the handle; it goes once they are all done.
        for &task in &ids {
            w.release(ObjectId::new(task, 0));
        }
        let last = sent(&mut w);
        assert!(
            last.contains(&ToNode::ReleaseActors(vec![ACTOR])),
            "{last:?}"
        );
    }

    /// An owner that made two calls, pushed to the actor alive on worker 9 (retried once
    /// after a restart): the owner and the calls.
    fn two_calls_pushed_to_9() -> (Worker, [TaskId; 2]) {
        let mut w = owner();
        let (a, b) = (call(1, Vec::new()), call(2, Vec::new()));
        let ids = [a.task_id, b.task_id];
        w.submit(a, None);
        w.submit(b, None);
        place(&mut w, 1, alive(9));
        assert_eq!(pushed(&sent(&mut w), 9), ids);
        (w, ids)
    }

    #[test]
    fn calls_in_flight_run_again_on_the_restarted_actor_while_retries_last() {
        let (mut w, ids) = two_calls_pushed_to_9();
        let died = || ActorPlace::Restarting {
            reason: "killed by signal 9".into(),
        };
        place(&mut w, 1, died());
        assert!(pushed(&sent(&mut w), 9).is_empty(), "not to the dead one");
        place(&mut w, 1, alive(10));
        assert_eq!(pushed(&sent(&mut w), 10), ids, "again, in order");
        place(&mut w, 1, died());
        for task in ids {
            match failure(&w, task) {
                Some(TaskError::ActorDied { class, reason, .. }) => {
                    assert_eq!(class, "tests::Counter");
                    assert!(reason.contains("max_task_retries = 1"), "{reason}");
                }
                other => panic!("failed naming the death: {other:?}"),
            }
        }
    }

    #[test]
    fn an_end_that_comes_after_the_word_of_a_restart_takes_its_call_out_of_line() {
        let (mut w, ids) = two_calls_pushed_to_9();
        // The actor's node was cut off, not dead: its ends come after the restart's word.
        let reason = "its node was lost".to_string();
        place(&mut w, 1, ActorPlace::Restarting { reason });
        receive(&mut w, &returned(ids[0], vec![1]));
        let later = call(3, Vec::new());
        let later_id = later.task_id;
        w.submit(later, None);
        place(&mut w, 1, alive(10));
        assert_eq!(
            pushed(&sent(&mut w), 10),
            vec![ids[1], later_id],
            "the ended call is not pushed again; the others go"
        );
        assert_eq!(value(&w, ObjectId::new(ids[0], 0)), Some(vec![1]));
    }

    #[test]
    fn a_dead_actor_fails_the_calls_waiting_in_flight_and_to_come() {
        let mut w = owner();
        let unknown = ObjectId::new(TaskId::new(0, 3), 0);
        let (a, b) = (call(1, Vec::new()), call(2, vec![Arg::Ref(unknown)]));
        let ids = [a.task_id, b.task_id];
        w.submit(a, None);
        w.submit(b, None);
        place(&mut w, 0, alive(9));
        sent(&mut w);
        place(
            &mut w,
            0,
            ActorPlace::Dead("it was killed with prism::kill".into()),
        );
        let later = call(3, Vec::new());
        let later_id = later.task_id;
        w.submit(later, None);
        for task in [ids[0], ids[1], later_id] {
            match failure(&w, task) {
                Some(TaskError::ActorDied { reason, .. }) => {
                    assert!(reason.contains("killed"), "{reason}")
                }
                other => panic!("call {task} fails naming the death: {other:?}"),
            }
        }
        assert!(forwarded(&sent(&mut w), 9).is_empty());
    }

    #[test]
    fn calls_to_an_actor_out_of_the_node_s_reach_go_to_the_node_in_order() {
        let mut w = owner();
        // The caller's own handle.
        w.actor_borrow(ACTOR);
        let (a, b) = (call(1, Vec::new()), call(2, Vec::new()));
        let ids = [a.task_id, b.task_id];
        w.submit(a, None);
        w.submit(b, None);
        place(&mut w, 0, ActorPlace::Unreachable);
        let later = call(3, Vec::new());
        let later_id = later.task_id;
        w.submit(later, None);
        let submitted: Vec<TaskId> = (sent(&mut w).into_iter())
            .filter_map(|m| match m {
                ToNode::Submit { spec, .. } => Some(spec.task_id),
                _ => None,
            })
            .collect();
        assert_eq!(submitted, vec![ids[0], ids[1], later_id]);
        // The owned calls' holds on the handle went as they were handed over (once each):
        // the caller's own is left.
        assert_eq!(w.actors.get(&ACTOR), Some(&1));
    }
}
