//! Actors of other jobs (step 5 of docs/ownership.md): a name this job's table lacks is asked
//! of the head ([`Action::FindName`]), which answers the job, id and class of the live actor
//! that has it in that namespace, whatever its job. Ids are per job, so this job knows such
//! an actor by an alias of its own ([`FOREIGN_ACTORS`] and a number): its handles, its
//! callers' lanes and its calls name the alias, and the calls name the actor's own id on
//! their way to it. The head's directory says where the actor runs; this job watches its
//! entry there ([`Action::WatchActor`]) and tells the workers that call it
//! ([`ToWorker::ActorAt`] with `foreign`), which push their calls to the actor's worker's
//! endpoint themselves, as to this job's own actors; the driver pushes its own calls there on
//! a link of its endpoint ([`Action::SendForeign`]), their values inline.
//!
//! A handle to another job's actor does not keep it alive (a named actor lives until it is
//! killed or its job ends, as in Ray); nor can it kill it.

use std::collections::VecDeque;
use std::task::{Poll, Waker};

use prism_graph::{ActorId, ObjectId, TaskError, TaskId, TaskKind, TaskState};
use prism_transport::{
    ActorPlace, ActorState, ActorStatus, Answer, Outcome, Refusal, TaskEnd, ToWorker, Value,
};

use super::{Action, ActorName, State};
use crate::proto::owner::Slot;
use crate::proto::scheduler::WorkerId;
use crate::store::ObjectBytes;

/// The owner number of this job's aliases for other jobs' actors (no process of a job has
/// it: see [`crate::proto::worker::foreign::FOREIGN`]).
pub(crate) const FOREIGN_ACTORS: u64 = crate::proto::worker::foreign::FOREIGN;

/// What the head answered of a name: the actor of another job (or of this one) that has it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    /// Its job.
    pub(crate) job: String,
    /// Its id in its job.
    pub(crate) actor: ActorId,
    /// Its class.
    pub(crate) class: String,
    /// Its directory entry, if its job listed it yet.
    pub(crate) status: Option<ActorStatus>,
}

/// Another job's actor this job found.
#[derive(Debug)]
pub(super) struct ForeignActor {
    job: String,
    /// Its id in its job.
    id: ActorId,
    class: String,
    /// Its directory entry, as the head last said.
    status: Option<ActorStatus>,
    /// Live handles in this job's processes.
    handles: u32,
    /// Workers that push their calls to it themselves.
    callers: Vec<WorkerId>,
    /// The driver's own calls not sent yet, and those sent and not ended, in order.
    queue: VecDeque<TaskId>,
    inflight: VecDeque<TaskId>,
}

/// A lookup at the head under way (or a detached creation there).
#[derive(Debug)]
pub(super) struct Finding {
    name: ActorName,
    /// The worker that asked and the object it waits in (`None`: the driver's API).
    asker: Option<(WorkerId, ObjectId)>,
    wakers: Vec<Waker>,
}

/// A kill of another job's actor at the head under way.
#[derive(Debug)]
pub(super) struct Killing {
    job: String,
    actor: ActorId,
    killer: Killer,
}

/// Who waits for a kill of another job's actor.
#[derive(Debug)]
pub(super) enum Killer {
    /// The driver's API (woken when the head's word comes).
    Api(Vec<Waker>),
    /// A worker, answered in this object.
    Worker(ObjectId),
    /// Nobody.
    Nobody,
}

/// Whether `actor` is this job's alias for another job's actor.
pub(crate) fn is_foreign(actor: ActorId) -> bool {
    actor.0.owner == FOREIGN_ACTORS
}

impl State {
    /// Asks the head which actor has `name` (this job's table has none): the number the
    /// answer comes under ([`State::poll_find`]).
    pub(crate) fn find_actor(&mut self, name: ActorName) -> u64 {
        self.find(name, None)
    }

    /// Worker `worker` looks up `name`, which this job's table lacks: asked of the head,
    /// answered in object `answer` (promised to the worker first).
    pub(super) fn worker_finds(&mut self, worker: WorkerId, name: ActorName, answer: ObjectId) {
        if self.owner.promise(answer, Some(worker)) {
            self.find(name, Some((worker, answer)));
        }
    }

    pub(super) fn find(&mut self, name: ActorName, asker: Option<(WorkerId, ObjectId)>) -> u64 {
        let find = self.await_head(name.clone(), asker);
        self.actions.push_back(Action::FindName { find, name });
        find
    }

    /// A number for an answer of the head about an actor (`name`, if it has one) that
    /// `asker` (or the driver's API) waits for, answered by [`State::answer_finding`].
    pub(super) fn await_head(
        &mut self,
        name: ActorName,
        asker: Option<(WorkerId, ObjectId)>,
    ) -> u64 {
        self.next_find += 1;
        let find = self.next_find;
        let finding = Finding {
            name,
            asker,
            wakers: Vec::new(),
        };
        self.findings.insert(find, finding);
        find
    }

    /// The driver's lookup `find`: the alias and class of the actor found (its handle
    /// counted), or why there is none; pending while the head's answer has not come.
    pub(crate) fn poll_find(
        &mut self,
        find: u64,
        waker: &Waker,
    ) -> Poll<Result<(ActorId, String), Refusal>> {
        if let Some(finding) = self.findings.get_mut(&find) {
            if !finding.wakers.iter().any(|w| w.will_wake(waker)) {
                finding.wakers.push(waker.clone());
            }
            return Poll::Pending;
        }
        match self.found.remove(&find) {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Err(Refusal::NoSuchActor {
                name: String::new(),
                namespace: String::new(),
            })),
        }
    }

    /// The head's answer to lookup `find`: the actor that has the name (`None`: none has),
    /// or why it could not answer.
    pub(super) fn name_found(&mut self, find: u64, outcome: Result<Option<Found>, String>) {
        let Some(finding) = self.findings.remove(&find) else {
            return;
        };
        let ActorName { name, namespace } = finding.name.clone();
        let result = match outcome {
            // The name may be this job's own by now (claimed after its table was read).
            Ok(Some(found)) => match self.lookup_actor(&finding.name) {
                Some(own) => Ok(own),
                None => Ok(self.adopt_foreign(found)),
            },
            Ok(None) => Err(Refusal::NoSuchActor { name, namespace }),
            Err(reason) => Err(Refusal::NameUnanswered {
                name,
                namespace,
                reason,
            }),
        };
        self.answer_finding(find, finding, result);
    }

    /// Answers lookup `find`: to the worker that asked (which holds a handle from now on),
    /// or to the driver's API when it polls.
    pub(super) fn answer_finding(
        &mut self,
        find: u64,
        finding: Finding,
        result: Result<(ActorId, String), Refusal>,
    ) {
        match finding.asker {
            Some((worker, answer)) => {
                let reply = match result {
                    Ok((actor, class)) if self.workers.contains_key(&worker) => {
                        self.counted_for(worker, actor);
                        Answer::Actor { actor, class }
                    }
                    Ok((actor, _)) => {
                        self.actor_release(actor);
                        return;
                    }
                    Err(refusal) => Answer::Refused(refusal),
                };
                self.fulfil_answer(answer, &reply);
            }
            None => {
                self.found.insert(find, result);
                finding.wakers.into_iter().for_each(Waker::wake);
            }
        }
    }

    /// The alias of the actor `found` (made now, and watched at the head, if this job had
    /// none for it), counting a new handle; and its class.
    pub(super) fn adopt_foreign(&mut self, found: Found) -> (ActorId, String) {
        let key = (found.job.clone(), found.actor);
        if let Some(&alias) = self.foreign_ids.get(&key)
            && let Some(record) = self.foreign.get_mut(&alias)
        {
            record.handles += 1;
            return (alias, record.class.clone());
        }
        self.next_foreign += 1;
        let alias = ActorId(TaskId::new(FOREIGN_ACTORS, self.next_foreign));
        let record = ForeignActor {
            job: found.job.clone(),
            id: found.actor,
            class: found.class.clone(),
            status: found.status,
            handles: 1,
            callers: Vec::new(),
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
        };
        tracing::debug!(alias = %alias, job = found.job, actor = %found.actor, "found another job's actor");
        self.foreign.insert(alias, record);
        self.foreign_ids.insert(key, alias);
        self.actions.push_back(Action::WatchActor {
            alias,
            job: found.job,
            actor: found.actor,
        });
        (alias, found.class)
    }

    /// The head's word on another job's actor `alias`: its callers hear where it is now,
    /// and the driver's calls in flight to an incarnation that ended go again or fail.
    pub(super) fn foreign_changed(&mut self, alias: ActorId, status: Option<ActorStatus>) {
        let Some(record) = self.foreign.get_mut(&alias) else {
            return;
        };
        let before = record
            .status
            .as_ref()
            .map(|s| (s.restarts, s.reach.clone()));
        record.status = status;
        let after = record
            .status
            .as_ref()
            .map(|s| (s.restarts, s.reach.clone()));
        let restarted = matches!((&before, &after), (Some((b, _)), Some((a, _))) if b < a);
        let callers = record.callers.clone();
        for caller in callers {
            self.tell_foreign(caller, alias, restarted);
        }
        let Some(record) = self.foreign.get(&alias) else {
            return;
        };
        match Self::foreign_place(record) {
            Some(ActorPlace::Dead(reason)) => {
                let calls: Vec<TaskId> = (record.inflight.iter().chain(&record.queue))
                    .copied()
                    .collect();
                for task in calls {
                    self.foreign_call_failed(alias, task, &reason);
                }
            }
            Some(ActorPlace::Restarting { reason }) => {
                self.foreign_calls_lost(
                    alias,
                    &format!("its process died during the call ({reason})"),
                );
            }
            _ if before.is_some() && before != after => {
                // A new incarnation, or a new worker: what went to the old one is lost.
                self.foreign_calls_lost(alias, "it restarted in its job during the call");
            }
            _ => {}
        }
    }

    /// Sends the driver's calls to other jobs' actors that may go: those at the front of each
    /// actor's queue whose arguments are known, their values read here (another job's worker
    /// cannot read this job's objects; one in another node's store is fetched first), to the
    /// actor's worker's endpoint.
    pub(super) fn pump_foreign(&mut self) {
        if self.foreign.is_empty() {
            return;
        }
        // Those no handle holds any more go once their calls ended.
        let unheld: Vec<ActorId> = (self.foreign.iter())
            .filter(|(_, r)| r.handles == 0)
            .map(|(alias, _)| *alias)
            .collect();
        for alias in unheld {
            self.forget_if_unheld(alias);
        }
        let due: Vec<ActorId> = (self.foreign.iter())
            .filter(|(_, r)| !r.queue.is_empty())
            .map(|(alias, _)| *alias)
            .collect();
        for alias in due {
            let record = &self.foreign[&alias];
            let endpoint = match Self::foreign_place(record) {
                Some(ActorPlace::Alive {
                    direct: Some(direct),
                    ..
                }) => direct,
                Some(ActorPlace::Dead(reason)) => {
                    let queued: Vec<TaskId> = record.queue.iter().copied().collect();
                    for task in queued {
                        self.foreign_call_failed(alias, task, &reason);
                    }
                    continue;
                }
                _ => continue,
            };
            let id = record.id;
            let mut batch = Vec::new();
            while let Some(&task) = self.foreign.get(&alias).and_then(|r| r.queue.front()) {
                match self.owner.task_state(task) {
                    Some(TaskState::Ready) => {}
                    None | Some(TaskState::Failed) | Some(TaskState::Finished) => {
                        self.foreign_mut(alias).queue.pop_front();
                        continue;
                    }
                    Some(_) => break,
                }
                let Some(args) = self.values_of(task) else {
                    break;
                };
                let Some(mut exec) = self.owner.execute(task, args) else {
                    break;
                };
                if exec.stream.is_some() {
                    let why = "a streaming method of another job's actor cannot be called (its \
                               items would be objects of that job)";
                    self.foreign_call_failed(alias, task, why);
                    continue;
                }
                exec.kind = TaskKind::ActorCall(id);
                batch.push(exec);
                self.owner.started(task, FOREIGN_ACTORS);
                let record = self.foreign_mut(alias);
                record.queue.pop_front();
                record.inflight.push_back(task);
            }
            if !batch.is_empty() {
                let mut frames = Vec::new();
                match prism_transport::encode_frame(&ToWorker::Push(batch), &mut frames) {
                    Ok(()) => self
                        .actions
                        .push_back(Action::SendForeign { endpoint, frames }),
                    Err(e) => {
                        tracing::error!(actor = %alias, "cannot encode calls of another job's actor: {e}")
                    }
                }
            }
        }
    }

    fn foreign_mut(&mut self, alias: ActorId) -> &mut ForeignActor {
        self.foreign.get_mut(&alias).expect("a known alias")
    }

    /// The values of `task`'s arguments, each inline; none while one is only in another
    /// node's store (fetched here now) or on disk (read back now).
    fn values_of(&mut self, task: TaskId) -> Option<Vec<Value>> {
        let args = self.args_of(task)?;
        let waker = Waker::noop();
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            match arg {
                Value::Inline(bytes) => values.push(Value::Inline(bytes)),
                Value::Shared { id, .. } => match self.owner.poll(id, waker) {
                    Poll::Ready(Some(Slot::Ready(bytes))) => {
                        values.push(Value::Inline(bytes.as_slice().to_vec()))
                    }
                    _ => return None,
                },
            }
        }
        Some(values)
    }

    /// The driver's frames from other jobs' actors' workers at `endpoint`: the ends of its
    /// calls (and calls handed back, to be sent again).
    pub(super) fn foreign_frames(&mut self, endpoint: &str, msgs: Vec<ToWorker>) {
        for msg in msgs {
            match msg {
                ToWorker::Returned { ends, .. } => {
                    for end in ends {
                        self.foreign_ended(end);
                    }
                }
                ToWorker::Handback(tasks) => {
                    for task in tasks.into_iter().rev() {
                        if let Some(alias) = self.take_inflight(task) {
                            self.owner.unstarted(task);
                            self.foreign_mut(alias).queue.push_front(task);
                        }
                    }
                }
                other => tracing::warn!(
                    endpoint,
                    "another job's worker sent the driver {other:?}: ignored"
                ),
            }
        }
    }

    /// Takes `task` out of the calls in flight of the other job's actor it calls: that
    /// actor's alias, or `None` when it is not in flight (an end of a run given up). Ends
    /// come in the order the calls went, so it is found at the front but for a straggler.
    fn take_inflight(&mut self, task: TaskId) -> Option<ActorId> {
        let TaskKind::ActorCall(alias) = self.owner.task(task)?.spec.kind else {
            return None;
        };
        let inflight = &mut self.foreign.get_mut(&alias)?.inflight;
        if inflight.front() == Some(&task) {
            inflight.pop_front();
        } else {
            let at = inflight.iter().position(|t| *t == task)?;
            inflight.remove(at);
        }
        Some(alias)
    }

    /// A call of the driver's to another job's actor ended there.
    fn foreign_ended(&mut self, end: TaskEnd) {
        let task = end.task;
        if self.take_inflight(task).is_none() {
            return; // an end of a run given up (its link broke): the retry answers
        }
        let Some(record) = self.owner.task(task) else {
            return;
        };
        match end.outcome {
            Outcome::Returned { values, .. } => {
                let slots: Option<Vec<Slot>> = (values.iter())
                    .map(|v| match v {
                        Value::Inline(bytes) => Some(Slot::Ready(ObjectBytes::inline(bytes))),
                        Value::Shared { .. } => None,
                    })
                    .collect();
                match slots {
                    Some(slots) if slots.len() == record.spec.num_returns as usize => {
                        let nested = vec![Vec::new(); slots.len()];
                        for ready in self.owner.complete(task, slots, nested) {
                            self.enqueue(ready);
                        }
                    }
                    _ => {
                        let error = TaskError::InvalidValue {
                            task,
                            function: record.spec.function.clone(),
                            what: "return values".into(),
                            reason: format!(
                                "another job's actor answered {} values, not {} inline",
                                values.len(),
                                record.spec.num_returns
                            ),
                        };
                        self.owner.fail(task, error);
                    }
                }
            }
            Outcome::Failed(error) => {
                self.owner.fail(task, error);
            }
        }
    }

    /// The driver's link to the worker at `endpoint` broke (`reason`): its calls in flight
    /// there may never have arrived; each goes again while its retries last, else fails.
    pub(super) fn foreign_link_lost(&mut self, endpoint: &str, reason: &str) {
        let aliases: Vec<ActorId> = (self.foreign.iter())
            .filter(|(_, r)| {
                matches!(Self::foreign_place(r), Some(ActorPlace::Alive { direct: Some(d), .. }) if d == endpoint)
            })
            .map(|(alias, _)| *alias)
            .collect();
        for alias in aliases {
            self.foreign_calls_lost(alias, &format!("the link to its worker broke ({reason})"));
        }
    }

    /// The driver's calls in flight to `alias` were lost (`why`): each goes again (first in
    /// line, in order) while `max_task_retries` lasts, else fails.
    fn foreign_calls_lost(&mut self, alias: ActorId, why: &str) {
        let record = self.foreign_mut(alias);
        let max_task_retries = record.status.as_ref().map_or(0, |s| s.max_task_retries);
        let inflight: Vec<TaskId> = record.inflight.drain(..).collect();
        for task in inflight.into_iter().rev() {
            let Some(call) = self.owner.task_mut(task) else {
                continue;
            };
            call.deaths += 1;
            if call.deaths <= max_task_retries {
                self.owner.unstarted(task);
                self.foreign_mut(alias).queue.push_front(task);
            } else {
                let why = format!(
                    "{why}, and the call's retries (max_task_retries = {max_task_retries}) are spent"
                );
                self.foreign_call_failed(alias, task, &why);
            }
        }
    }

    /// The driver's call `task` of another job's actor `alias` fails: it died (`reason`).
    fn foreign_call_failed(&mut self, alias: ActorId, task: TaskId, reason: &str) {
        let record = self.foreign_mut(alias);
        record.queue.retain(|t| *t != task);
        record.inflight.retain(|t| *t != task);
        let class = record.class.clone();
        let reason = format!("{reason} (it is job {}'s actor {})", record.job, record.id);
        let Some(call) = self.owner.task(task) else {
            return;
        };
        let error = TaskError::ActorDied {
            task,
            function: call.spec.function.clone(),
            actor: alias,
            class,
            reason,
        };
        self.owner.fail(task, error);
    }

    /// Queues the driver's call `task` of another job's actor `alias` (sent as soon as its
    /// arguments are known and the actor is alive). False for an alias this job does not
    /// know.
    pub(super) fn queue_foreign_call(&mut self, alias: ActorId, task: TaskId) -> bool {
        match self.foreign.get_mut(&alias) {
            Some(record) => {
                record.queue.push_back(task);
                true
            }
            None => false,
        }
    }

    /// Where another job's actor is for a caller: none while it starts (its callers wait).
    fn foreign_place(record: &ForeignActor) -> Option<ActorPlace> {
        let status = record.status.as_ref()?;
        Some(match &status.state {
            ActorState::Starting => return None,
            ActorState::Restarting => ActorPlace::Restarting {
                reason: format!("it restarts in its job {}", record.job),
            },
            ActorState::Dead(reason) => ActorPlace::Dead(reason.clone()),
            ActorState::Alive => match &status.reach {
                Some(reach) if reach.direct.is_some() => ActorPlace::Alive {
                    worker: reach.worker,
                    at: Some(reach.at.clone()),
                    direct: reach.direct.clone(),
                },
                _ => ActorPlace::Dead(format!(
                    "its worker in job {} has no direct endpoint: other jobs cannot reach it",
                    record.job
                )),
            },
        })
    }

    /// Tells `caller` where another job's actor `alias` is (a new incarnation, `restarted`,
    /// that the directory showed only as alive again is told as a restart first: the calls
    /// in flight to the old one are lost).
    fn tell_foreign(&mut self, caller: WorkerId, alias: ActorId, restarted: bool) {
        let Some(record) = self.foreign.get(&alias) else {
            return;
        };
        let Some(place) = Self::foreign_place(record) else {
            return;
        };
        let mut places = Vec::new();
        if restarted && matches!(place, ActorPlace::Alive { .. }) {
            let reason = format!("it restarted in its job {}", record.job);
            places.push(ActorPlace::Restarting { reason });
        }
        places.push(place);
        let (class, id) = (record.class.clone(), record.id);
        let max_task_retries = record.status.as_ref().map_or(0, |s| s.max_task_retries);
        for place in places {
            let told = ToWorker::ActorAt {
                actor: alias,
                class: class.clone(),
                max_task_retries,
                place,
                foreign: Some(id),
            };
            self.encode_to(caller, &told);
        }
    }

    /// Worker `worker` pushes its calls to another job's actor `alias` itself: it hears
    /// where the actor is (now, if known) and whenever that changes. False for an alias this
    /// job does not know.
    pub(super) fn where_foreign(&mut self, worker: WorkerId, alias: ActorId) -> bool {
        let Some(record) = self.foreign.get_mut(&alias) else {
            return false;
        };
        if !record.callers.contains(&worker) {
            record.callers.push(worker);
        }
        self.tell_foreign(worker, alias, false);
        true
    }

    /// One more handle to another job's actor `alias`.
    pub(super) fn foreign_add_ref(&mut self, alias: ActorId) {
        if let Some(record) = self.foreign.get_mut(&alias) {
            record.handles += 1;
        }
    }

    /// A handle to another job's actor `alias` went: with the last, this job forgets it and
    /// stops watching it.
    pub(super) fn foreign_release(&mut self, alias: ActorId) {
        let Some(record) = self.foreign.get_mut(&alias) else {
            return;
        };
        record.handles = record.handles.saturating_sub(1);
        self.forget_if_unheld(alias);
    }

    /// The job of another job's actor `alias`, and its id there.
    pub(super) fn foreign_of(&self, alias: ActorId) -> Option<(&str, ActorId)> {
        (self.foreign.get(&alias)).map(|record| (record.job.as_str(), record.id))
    }

    /// The driver's API kills `actor`: this job's own at once (`None`), or another job's
    /// through the head, answered under the number returned ([`State::poll_kill`]).
    pub(crate) fn kill_from_api(&mut self, actor: ActorId) -> Option<u64> {
        if is_foreign(actor) {
            return Some(self.kill_foreign(actor, Killer::Api(Vec::new())));
        }
        self.kill_actor(actor);
        None
    }

    /// Worker `worker` kills another job's actor `alias`, answered in object `answer`
    /// (promised to the worker first).
    pub(super) fn worker_kills_foreign(
        &mut self,
        worker: WorkerId,
        alias: ActorId,
        answer: ObjectId,
    ) {
        if self.owner.promise(answer, Some(worker)) {
            self.kill_foreign(alias, Killer::Worker(answer));
        }
    }

    /// Kills another job's actor `alias`: the head orders its job's driver to, which kills it
    /// without a restart (Ray's `ray.kill` of a handle found by name); its end reaches this
    /// job as any change of its place does (the watch of it says it is dead). The number the
    /// head's word comes under.
    pub(super) fn kill_foreign(&mut self, alias: ActorId, killer: Killer) -> u64 {
        self.next_find += 1;
        let kill = self.next_find;
        match self.foreign_of(alias) {
            Some((job, actor)) => {
                let job = job.to_string();
                let killing = Killing {
                    job: job.clone(),
                    actor,
                    killer,
                };
                self.killings.insert(kill, killing);
                self.actions
                    .push_back(Action::KillForeign { kill, job, actor });
            }
            None => {
                let refusal = Refusal::NotKilled {
                    job: "(unknown to this job)".to_string(),
                    actor: alias,
                    reason: "this job holds no handle to it (any more)".to_string(),
                };
                self.answer_kill(kill, killer, Err(refusal));
            }
        }
        kill
    }

    /// The head's word on kill `kill` of another job's actor.
    pub(super) fn foreign_killed(&mut self, kill: u64, outcome: Result<(), String>) {
        let Some(Killing { job, actor, killer }) = self.killings.remove(&kill) else {
            return;
        };
        let result = outcome.map_err(|reason| Refusal::NotKilled { job, actor, reason });
        self.answer_kill(kill, killer, result);
    }

    fn answer_kill(&mut self, kill: u64, killer: Killer, result: Result<(), Refusal>) {
        match killer {
            Killer::Api(wakers) => {
                self.killed.insert(kill, result);
                wakers.into_iter().for_each(Waker::wake);
            }
            Killer::Worker(answer) => {
                let reply = match result {
                    Ok(()) => Answer::Ready,
                    Err(refusal) => Answer::Refused(refusal),
                };
                self.fulfil_answer(answer, &reply);
            }
            Killer::Nobody => {
                if let Err(refusal) = result {
                    tracing::warn!("another job's actor was not killed: {refusal:?}");
                }
            }
        }
    }

    /// The driver's kill `kill` of another job's actor: done, or why not; pending while the
    /// head's word has not come.
    pub(crate) fn poll_kill(&mut self, kill: u64, waker: &Waker) -> Poll<Result<(), Refusal>> {
        if let Some(Killing {
            killer: Killer::Api(wakers),
            ..
        }) = self.killings.get_mut(&kill)
        {
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
            }
            return Poll::Pending;
        }
        match self.killed.remove(&kill) {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Forgets another job's actor `alias` (and stops watching it) once no handle holds it
    /// and no call of the driver's waits for it.
    fn forget_if_unheld(&mut self, alias: ActorId) {
        let Some(record) = self.foreign.get(&alias) else {
            return;
        };
        if record.handles == 0 && record.queue.is_empty() && record.inflight.is_empty() {
            let record = self.foreign.remove(&alias).expect("found above");
            self.foreign_ids.remove(&(record.job, record.id));
            self.actions.push_back(Action::UnwatchActor { alias });
        }
    }

    /// Worker `worker` is gone: it calls no other job's actor any more.
    pub(super) fn forget_foreign_caller(&mut self, worker: WorkerId) {
        for record in self.foreign.values_mut() {
            record.callers.retain(|&w| w != worker);
        }
    }
}
