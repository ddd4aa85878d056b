//! The node's books of actors: each actor holds a worker of its own (a pinned lease) for its
//! lifetime. Calls are queued per actor in submission order and sent once their arguments are
//! ready, so calls from one caller run in the order they were made. A dead actor's process is
//! restarted (constructor re-run from the arguments it was first created with) up to
//! `max_restarts`; calls in flight are retried up to `max_task_retries`; after that, every call
//! fails with `ActorDied`.

use std::collections::VecDeque;
use std::task::{Poll, Waker};
use std::time::Instant;

use prism_graph::{ActorId, ObjectId, Resources, TaskError, TaskId, TaskSpec, TaskState};
use prism_transport::{
    ActorConfig, ActorPlace, ActorReach, ActorState, ActorStatus, Answer, Execute, Refusal,
    ToWorker,
};

use super::{Action, State, Unclaimed, foreign};
use crate::proto::nodes::node_of;
use crate::proto::scheduler::{Admission, Placement, WorkerId};

/// Where an actor is in its life.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Life {
    /// Its constructor has not finished (first start or a restart).
    Starting,
    /// Ready for calls.
    Alive,
    /// Gone for good; calls fail with this reason.
    Dead(String),
}

#[derive(Debug)]
pub(super) struct ActorRecord {
    pub(super) class: String,
    /// Its name and namespace, if it has a name.
    name: Option<super::ActorName>,
    pub(super) life: Life,
    pub(super) worker: Option<WorkerId>,
    demand: Resources,
    /// The resolved constructor call, kept for restarts.
    creation: Option<Execute>,
    restarts: u32,
    max_restarts: u32,
    max_task_retries: u32,
    /// Calls submitted and not yet sent, in submission order.
    queue: VecDeque<TaskId>,
    /// Calls sent to the worker, in order.
    inflight: VecDeque<TaskId>,
    /// Live handles (`RawActor`s) in the driver.
    handles: u32,
    killed: bool,
    /// Workers that push their calls to the actor themselves ([`ToNode::WhereActor`]): told
    /// where it is whenever that changes.
    ///
    /// [`ToNode::WhereActor`]: prism_transport::ToNode::WhereActor
    callers: Vec<WorkerId>,
    /// Its name is claimed at the cluster's head (released there when it dies).
    claimed: bool,
    /// It lives without handles until it is killed ([`ActorConfig::detached`]).
    detached: bool,
}

/// A named actor's creation waiting for the head to grant its name (see
/// [`State::with_names_at_head`]): nothing runs for it until then.
#[derive(Debug)]
pub(crate) struct Claiming {
    spec: TaskSpec,
    failed: Option<TaskError>,
    /// The worker that asked and the object it waits in (`None`: the driver's API).
    asker: Option<(WorkerId, ObjectId)>,
    /// The driver's API waits to be woken.
    wakers: Vec<Waker>,
    /// A name another job's actor has is that actor (found at the head), not an error.
    get_if_exists: bool,
}

impl State {
    /// Records a new actor (or, with `get_if_exists`, finds the named one).
    pub(crate) fn create_actor(
        &mut self,
        spec: prism_graph::TaskSpec,
        failed: Option<TaskError>,
        setup: ActorConfig,
    ) -> Result<ActorId, super::ActorName> {
        let named =
            (setup.name.as_deref()).map(|name| self.actor_name(name, setup.namespace.as_deref()));
        if let Some(name) = &named
            && let Some(&existing) = self.names.get(name)
        {
            if setup.get_if_exists {
                if let Some(actor) = self.actors.get_mut(&existing) {
                    actor.handles += 1;
                }
                return Ok(existing);
            }
            return Err(name.clone());
        }
        let id = ActorId(spec.task_id);
        if let Some(name) = &named {
            self.names.insert(name.clone(), id);
        }
        let claim = self.names_at_head.then_some(named.clone()).flatten();
        self.actors.insert(
            id,
            ActorRecord {
                class: setup.class,
                name: named,
                life: Life::Starting,
                worker: None,
                demand: spec.resources.clone(),
                creation: None,
                restarts: 0,
                max_restarts: setup.max_restarts,
                max_task_retries: setup.max_task_retries,
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                handles: 1,
                killed: false,
                callers: Vec::new(),
                claimed: false,
                detached: setup.detached,
            },
        );
        if let Some(name) = claim {
            let claiming = Claiming {
                spec,
                failed,
                asker: None,
                wakers: Vec::new(),
                get_if_exists: setup.get_if_exists,
            };
            self.claiming.insert(id, claiming);
            let class = self.actors[&id].class.clone();
            (self.actions).push_back(Action::ClaimName {
                actor: id,
                name,
                class,
            });
            return Ok(id);
        }
        self.creations.insert(spec.task_id, id);
        self.submit(spec, None, failed);
        Ok(id)
    }

    /// Whether `actor`'s name waits for the head's word; the answer goes to `worker` in
    /// object `answer` once it comes (then the worker holds a handle, if it was granted).
    pub(super) fn claim_answers(
        &mut self,
        actor: ActorId,
        worker: WorkerId,
        answer: ObjectId,
    ) -> bool {
        match self.claiming.get_mut(&actor) {
            Some(claim) => {
                claim.asker = Some((worker, answer));
                true
            }
            None => false,
        }
    }

    /// Whether the name of the driver's creation of `actor` was granted (`Ok(None)`), is
    /// another job's actor's (`Ok(Some(find))`, with `get_if_exists`: the lookup `find`
    /// answers it, see [`State::poll_find`]) or refused; pending while the head's word has
    /// not come.
    pub(crate) fn poll_claim(
        &mut self,
        actor: ActorId,
        waker: &Waker,
    ) -> Poll<Result<Option<u64>, Refusal>> {
        if let Some(claim) = self.claiming.get_mut(&actor) {
            if !claim.wakers.iter().any(|w| w.will_wake(waker)) {
                claim.wakers.push(waker.clone());
            }
            return Poll::Pending;
        }
        Poll::Ready(self.unclaimed.remove(&actor).transpose())
    }

    /// The head's word on `actor`'s name: granted, the creation goes on; refused, the actor
    /// never was (or, if someone found it by name meanwhile, it is dead, with the reason).
    pub(super) fn name_claimed(&mut self, actor: ActorId, outcome: Result<(), Unclaimed>) {
        let Some(claim) = self.claiming.remove(&actor) else {
            return;
        };
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        let Some(name) = record.name.clone() else {
            return;
        };
        let reply = match outcome {
            Ok(()) => {
                record.claimed = true;
                if matches!(record.life, Life::Dead(_)) {
                    // Killed while its name was claimed: the claim goes again.
                    self.actions.push_back(Action::ReleaseName { actor, name });
                } else {
                    self.creations.insert(claim.spec.task_id, actor);
                    self.submit(claim.spec, None, claim.failed);
                }
                Ok(())
            }
            Err(why) => {
                let refusal = match why {
                    Unclaimed::Held { job } => Refusal::NameTaken {
                        name: name.name.clone(),
                        namespace: name.namespace.clone(),
                        holder: Some(job),
                    },
                    Unclaimed::Unanswered(reason) => Refusal::NameUnanswered {
                        name: name.name.clone(),
                        namespace: name.namespace.clone(),
                        reason,
                    },
                };
                // The creator holds no handle: the actor was never made.
                record.handles = record.handles.saturating_sub(1);
                let unheld = record.handles == 0;
                self.stop_actor(
                    actor,
                    crate::Error::from_refusal(refusal.clone()).to_string(),
                );
                if unheld {
                    self.actors.remove(&actor);
                }
                if claim.get_if_exists && matches!(refusal, Refusal::NameTaken { .. }) {
                    // Another job's actor has the name: that one is the answer.
                    let find = self.find(name, claim.asker);
                    if claim.asker.is_none() {
                        self.unclaimed.insert(actor, Ok(find));
                        claim.wakers.into_iter().for_each(Waker::wake);
                    }
                    return;
                }
                Err(refusal)
            }
        };
        match claim.asker {
            Some((worker, answer)) => {
                let class = (self.actors.get(&actor)).map_or_else(String::new, |r| r.class.clone());
                let reply = match reply {
                    Ok(()) if self.workers.contains_key(&worker) => {
                        self.counted_for(worker, actor);
                        Answer::Actor { actor, class }
                    }
                    Ok(()) => {
                        // The worker is gone: it holds no handle.
                        self.actor_release(actor);
                        return;
                    }
                    Err(refusal) => Answer::Refused(refusal),
                };
                self.fulfil_answer(answer, &reply);
            }
            None => {
                if let Err(refusal) = reply {
                    self.unclaimed.insert(actor, Err(refusal));
                }
                claim.wakers.into_iter().for_each(Waker::wake);
            }
        }
    }

    /// Queues a method call on its actor (or fails it if the actor is dead).
    pub(super) fn queue_call(&mut self, actor: ActorId, task: TaskId) {
        if foreign::is_foreign(actor) {
            if !self.queue_foreign_call(actor, task) {
                let reason = "this job no longer knows the other job's actor it names";
                let error = died(task, &self.owner_function(task), actor, "<unknown>", reason);
                self.owner.fail(task, error);
            }
            return;
        }
        match self.actors.get_mut(&actor) {
            Some(record) => match &record.life {
                Life::Dead(reason) => {
                    let (class, reason) = (record.class.clone(), reason.clone());
                    let error = died(task, &self.owner_function(task), actor, &class, &reason);
                    self.owner.fail(task, error);
                }
                _ => {
                    record.queue.push_back(task);
                    self.actors_to_pump.insert(actor);
                }
            },
            None => {
                let error = died(
                    task,
                    &self.owner_function(task),
                    actor,
                    "<unknown>",
                    "the actor is gone (its handles were dropped, or it was never created here)",
                );
                self.owner.fail(task, error);
            }
        }
    }

    fn owner_function(&self, task: TaskId) -> String {
        self.owner
            .task(task)
            .map(|r| r.spec.function.clone())
            .unwrap_or_default()
    }

    /// Queues an actor's creation (first start or restart) for a worker of its own.
    pub(super) fn enqueue_creation(&mut self, task: TaskId, demand: Resources) {
        let node = self.place(task, &demand);
        if self.nodes.submit_pinned(node, task, demand.clone()) == Admission::Infeasible {
            let message = format!(
                "the actor is infeasible: it demands {demand}, the cluster has {} in total",
                self.nodes.total()
            );
            tracing::warn!(task = %task, "{message}");
            if let Some(record) = self.owner.task_mut(task) {
                record.infeasible = Some(message);
            }
        }
    }

    /// The Execute message of an actor's creation attempt `task` dispatched to `worker`.
    pub(super) fn creation_execute(&mut self, task: TaskId, worker: WorkerId) -> Option<Execute> {
        let actor = *self.creations.get(&task)?;
        let args = match self.owner.task(task) {
            Some(_) => Some(self.args_of(task)?),
            None => None,
        };
        let first = match (self.owner.task(task), args) {
            (Some(record), Some(args)) => Some(Execute {
                task,
                function: record.spec.function.clone(),
                fn_hash: record.spec.fn_hash,
                args,
                num_returns: 0,
                kind: record.spec.kind,
                stream: None,
                cpu: record.spec.resources.cpu,
                run: 0,
                pull_from: Vec::new(),
            }),
            _ => None,
        };
        if first.is_some() {
            self.owner.started(task, worker);
        }
        let record = self.actors.get_mut(&actor)?;
        record.worker = Some(worker);
        if let Some(exec) = first {
            record.creation = Some(exec);
        }
        let mut exec = record.creation.clone()?;
        exec.task = task;
        Some(exec)
    }

    /// A creation attempt ended: the actor is alive, or dead if its constructor failed.
    pub(super) fn creation_done(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        error: Option<TaskError>,
    ) {
        let Some(actor) = self.creations.remove(&task) else {
            return;
        };
        self.nodes.task_done(worker, task);
        if self.owner.task(task).is_some() {
            match &error {
                None => {
                    self.owner.complete(task, Vec::new(), Vec::new());
                }
                Some(e) => {
                    self.owner.fail(task, e.clone());
                }
            }
        }
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        match error {
            None => {
                record.life = Life::Alive;
                self.actors_to_pump.insert(actor);
                self.tell_callers(actor);
            }
            Some(e) => {
                let reason = format!("its constructor failed: {e}");
                self.stop_actor(actor, reason);
            }
        }
    }

    /// Sends the ready calls at the head of each pumped actor's queue.
    pub(super) fn pump_actors(&mut self) {
        for actor in std::mem::take(&mut self.actors_to_pump) {
            let Some(record) = self.actors.get(&actor) else {
                continue;
            };
            if record.life != Life::Alive {
                continue;
            }
            let Some(worker) = record.worker else {
                continue;
            };
            let mut batch = Vec::new();
            while let Some(&task) = self.actors.get(&actor).and_then(|r| r.queue.front()) {
                match self.owner.task_state(task) {
                    Some(TaskState::Ready) => {}
                    // Failed with an input or cancelled: the owner already answered it.
                    None | Some(TaskState::Failed) | Some(TaskState::Finished) => {
                        self.pop_call(actor);
                        continue;
                    }
                    // The head waits for its arguments; later calls wait behind it.
                    Some(_) => break,
                }
                let Some(exec) = self
                    .args_of(task)
                    .and_then(|args| self.owner.execute(task, args))
                else {
                    break;
                };
                batch.push(exec);
                self.owner.started(task, worker);
                self.pop_call(actor);
                if let Some(record) = self.actors.get_mut(&actor) {
                    record.inflight.push_back(task);
                }
            }
            if !batch.is_empty() {
                self.encode_to(worker, &ToWorker::Execute(batch));
            }
            self.maybe_stop_unreferenced(actor);
        }
    }

    fn pop_call(&mut self, actor: ActorId) {
        if let Some(record) = self.actors.get_mut(&actor) {
            record.queue.pop_front();
        }
    }

    /// A method call ended on the actor's worker.
    pub(super) fn call_done(&mut self, actor: ActorId, task: TaskId) {
        if let Some(record) = self.actors.get_mut(&actor)
            && let Some(pos) = record.inflight.iter().position(|t| *t == task)
        {
            record.inflight.remove(pos);
        }
        self.maybe_stop_unreferenced(actor);
    }

    /// The actor's worker died: restart it, retry or fail its calls.
    pub(super) fn actor_worker_died(&mut self, worker: WorkerId, reason: &str) -> bool {
        let Some((&actor, _)) = self.actors.iter().find(|(_, r)| r.worker == Some(worker)) else {
            return false;
        };
        let record = self.actors.get_mut(&actor).expect("found above");
        record.worker = None;
        // A creation attempt that was running dies with its worker.
        let creating = self.creations_of(actor);
        let mut first = None;
        for task in creating {
            self.creations.remove(&task);
            if self.owner.task(task).is_some() {
                // The first creation: its task stays unfinished in the owner until the actor
                // is up or dead; it is the next attempt (or fails with the actor).
                self.owner.unstarted(task);
                first = Some(task);
            }
        }
        let record = self.actors.get_mut(&actor).expect("found above");
        let restart = !record.killed && record.restarts < record.max_restarts;
        let final_reason = if record.killed {
            "it was killed with prism::kill".to_string()
        } else if record.max_restarts > 0 {
            format!(
                "its process died ({reason}) after {} restart(s) (max_restarts = {})",
                record.restarts, record.max_restarts
            )
        } else {
            format!("its process died ({reason})")
        };
        let inflight: Vec<TaskId> = record.inflight.drain(..).collect();
        let class = record.class.clone();
        let max_task_retries = record.max_task_retries;
        let mut requeue = Vec::new();
        for task in inflight {
            let Some(call) = self.owner.task_mut(task) else {
                continue;
            };
            call.deaths += 1;
            let function = call.spec.function.clone();
            if restart && call.deaths <= max_task_retries {
                self.owner.unstarted(task);
                requeue.push(task);
            } else {
                let why = if restart {
                    format!(
                        "its process died during the call ({reason}) and the call's retries (max_task_retries = {max_task_retries}) are spent"
                    )
                } else {
                    final_reason.clone()
                };
                let error = died(task, &function, actor, &class, &why);
                self.owner.fail(task, error);
            }
        }
        let record = self.actors.get_mut(&actor).expect("found above");
        for task in requeue.into_iter().rev() {
            record.queue.push_front(task);
        }
        if restart {
            record.restarts += 1;
            record.life = Life::Starting;
            let place = ActorPlace::Restarting {
                reason: reason.to_string(),
            };
            self.tell_callers_of(actor, place);
            let record = self.actors.get_mut(&actor).expect("found above");
            let attempt = record.restarts;
            let demand = record.demand.clone();
            tracing::warn!(actor = %actor, class, attempt, "restarting actor after its process died ({reason})");
            let task = first.unwrap_or_else(|| self.next_internal_task());
            self.creations.insert(task, actor);
            // An incarnation on a node the job lost may run until that node's lease ends:
            // the next one starts after that, so that two never run at once.
            let fence = self.lease_ends.get(&node_of(worker)).copied();
            match fence.filter(|&end| self.now.is_some_and(|now| end > now)) {
                Some(end) => {
                    tracing::info!(actor = %actor, "the restart waits for the lost node's lease to end");
                    self.fenced_restarts.push((end, task));
                }
                None => self.enqueue_creation(task, demand),
            }
        } else {
            if let Some(task) = first {
                self.creations.insert(task, actor);
            }
            self.stop_actor(actor, final_reason);
        }
        true
    }

    /// Starts the actor restarts whose lost node's lease has ended by `now`.
    pub(super) fn start_fenced_restarts(&mut self, now: Instant) {
        if self.fenced_restarts.is_empty() {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.fenced_restarts)
            .into_iter()
            .partition(|&(end, _)| end <= now);
        self.fenced_restarts = waiting;
        for (_, task) in due {
            self.enqueue_attempt(task);
        }
    }

    /// Queues creation attempt `task` of the actor it makes for a worker of its own (nothing
    /// if the actor was stopped or killed meanwhile: the attempt is no longer a creation).
    pub(super) fn enqueue_attempt(&mut self, task: TaskId) {
        let actor = self.creations.get(&task).and_then(|a| self.actors.get(a));
        if let Some(demand) = actor.map(|record| record.demand.clone()) {
            self.enqueue_creation(task, demand);
        }
    }

    /// Ends an actor for good: fails what is queued, stops its worker, frees its name.
    pub(super) fn stop_actor(&mut self, actor: ActorId, reason: String) {
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        if let Life::Dead(_) = record.life {
            return;
        }
        record.life = Life::Dead(reason.clone());
        let class = record.class.clone();
        let queued: Vec<TaskId> = record
            .queue
            .drain(..)
            .chain(record.inflight.drain(..))
            .collect();
        let worker = record.worker.take();
        // The record keeps its name for the cluster's directory; the name is free again.
        let name = record.name.clone();
        if record.claimed
            && let Some(name) = name.clone()
        {
            self.actions.push_back(Action::ReleaseName { actor, name });
        }
        for task in queued {
            let function = self.owner_function(task);
            self.owner
                .fail(task, died(task, &function, actor, &class, &reason));
        }
        // A creation still waiting for a worker will not be needed.
        let creating = self.creations_of(actor);
        for task in creating {
            self.creations.remove(&task);
            let _ = self.nodes.locate_for_cancel(task);
            if self.owner.task(task).is_some() {
                let function = self.owner_function(task);
                self.owner
                    .fail(task, died(task, &function, actor, &class, &reason));
            }
        }
        if let Some(worker) = worker {
            self.retire(worker, false);
        }
        if let Some(name) = name
            && self.names.get(&name) == Some(&actor)
        {
            self.names.remove(&name);
        }
        self.tell_callers_of(actor, ActorPlace::Dead(reason.clone()));
        tracing::info!(actor = %actor, class, "actor stopped: {reason}");
    }

    /// Worker `worker` will push its calls to `actor` itself: it hears where the actor is
    /// now if it is alive or gone (else once it is), and whenever that changes.
    pub(super) fn where_actor(&mut self, worker: WorkerId, actor: ActorId) {
        let Some(record) = self.actors.get_mut(&actor) else {
            let reason =
                "the actor is gone (its handles were dropped, or it was never created here)";
            let told = ToWorker::ActorAt {
                actor,
                class: "<unknown>".into(),
                max_task_retries: 0,
                place: ActorPlace::Dead(reason.into()),
                foreign: None,
            };
            return self.encode_to(worker, &told);
        };
        if !record.callers.contains(&worker) {
            record.callers.push(worker);
        }
        let record = &self.actors[&actor];
        let place = match &record.life {
            Life::Starting => return,
            Life::Alive => match self.place_for(record.worker, worker) {
                Some(place) => place,
                None => return,
            },
            Life::Dead(reason) => ActorPlace::Dead(reason.clone()),
        };
        self.tell(worker, actor, place);
    }

    /// Where the actor on `actor_worker` is for worker `caller`: reached through the
    /// caller's node, or named by its node's peer address (`Unreachable` when the driver
    /// knows none).
    fn place_for(&self, actor_worker: Option<WorkerId>, caller: WorkerId) -> Option<ActorPlace> {
        let worker = actor_worker?;
        if node_of(worker) == node_of(caller) {
            let direct = None;
            return Some(ActorPlace::Alive {
                worker,
                at: None,
                direct,
            });
        }
        let direct = (self.workers.get(&worker)).and_then(|life| life.direct.clone());
        Some(match self.peer_addresses.get(&node_of(worker)) {
            Some(at) => ActorPlace::Alive {
                worker,
                at: Some(at.clone()),
                direct,
            },
            None => ActorPlace::Unreachable,
        })
    }

    /// Tells `actor`'s callers where it is now that it is alive.
    fn tell_callers(&mut self, actor: ActorId) {
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        self.publish_due |= record.name.is_some() || record.detached;
        let places: Vec<(WorkerId, ActorPlace)> = (record.callers.iter())
            .filter_map(|&caller| Some((caller, self.place_for(record.worker, caller)?)))
            .collect();
        for (caller, place) in places {
            self.tell(caller, actor, place);
        }
    }

    /// Tells each of `actor`'s callers `place`.
    fn tell_callers_of(&mut self, actor: ActorId, place: ActorPlace) {
        let callers = match self.actors.get(&actor) {
            Some(record) => {
                self.publish_due |= record.name.is_some() || record.detached;
                record.callers.clone()
            }
            None => return,
        };
        for caller in callers {
            self.tell(caller, actor, place.clone());
        }
    }

    /// Tells worker `caller` that `actor` is at `place`.
    fn tell(&mut self, caller: WorkerId, actor: ActorId, place: ActorPlace) {
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        let told = ToWorker::ActorAt {
            actor,
            class: record.class.clone(),
            max_task_retries: record.max_task_retries,
            place,
            foreign: None,
        };
        self.encode_to(caller, &told);
    }

    /// Worker `worker` is gone: it calls no actor any more.
    pub(super) fn forget_caller(&mut self, worker: WorkerId) {
        self.forget_foreign_caller(worker);
        for record in self.actors.values_mut() {
            if !record.callers.is_empty() {
                record.callers.retain(|&w| w != worker);
            }
        }
    }

    /// Kills the actor's process; it is not restarted.
    pub(crate) fn kill_actor(&mut self, actor: ActorId) {
        if foreign::is_foreign(actor) {
            // A worker's `KillActor` of an alias (its kills of them ask with an answer):
            // nobody waits for the head's word.
            self.kill_foreign(actor, foreign::Killer::Nobody);
            return;
        }
        let Some(record) = self.actors.get_mut(&actor) else {
            return;
        };
        record.killed = true;
        match record
            .worker
            .filter(|w| self.workers.get(w).is_some_and(|l| l.pid.is_some()))
        {
            // The death is handled when the worker's exit is seen.
            Some(worker) => self.kill_worker(worker),
            None => self.stop_actor(actor, "it was killed with prism::kill".into()),
        }
    }

    /// Kills this job's actor `actor` as the head orders (another job, or `prism kill`,
    /// asked): why not, when the job has no such actor (any more).
    pub(crate) fn kill_ordered(&mut self, actor: ActorId) -> Result<(), String> {
        if foreign::is_foreign(actor) || !self.actors.contains_key(&actor) {
            return Err(format!(
                "the job has no actor {actor} (it is gone, or never was)"
            ));
        }
        self.kill_actor(actor);
        Ok(())
    }

    pub(crate) fn actor_add_ref(&mut self, actor: ActorId) {
        if foreign::is_foreign(actor) {
            return self.foreign_add_ref(actor);
        }
        if let Some(record) = self.actors.get_mut(&actor) {
            record.handles += 1;
        }
    }

    pub(crate) fn actor_release(&mut self, actor: ActorId) {
        if foreign::is_foreign(actor) {
            return self.foreign_release(actor);
        }
        if let Some(record) = self.actors.get_mut(&actor) {
            record.handles = record.handles.saturating_sub(1);
        }
        self.maybe_stop_unreferenced(actor);
    }

    /// An unnamed actor without handles stops once its calls have run.
    fn maybe_stop_unreferenced(&mut self, actor: ActorId) {
        let Some(record) = self.actors.get(&actor) else {
            return;
        };
        let idle = record.queue.is_empty() && record.inflight.is_empty();
        // A named actor lives on without handles (it can be looked up) until it dies, as
        // does a detached one.
        let held_by_name =
            (record.name.is_some() || record.detached) && !matches!(record.life, Life::Dead(_));
        if record.handles == 0 && !held_by_name && idle {
            if record.life != Life::Starting {
                self.stop_actor(actor, "its last handle was dropped".into());
                self.actors.remove(&actor);
            } else {
                // Stop it once its constructor has run (a creation cannot be taken back).
            }
        }
    }

    /// The named actor's id and class, counting a new handle.
    pub(crate) fn lookup_actor(&mut self, name: &super::ActorName) -> Option<(ActorId, String)> {
        let id = *self.names.get(name)?;
        let record = self.actors.get_mut(&id)?;
        if let Life::Dead(_) = record.life {
            return None;
        }
        record.handles += 1;
        Some((id, record.class.clone()))
    }

    /// Whether `task` is an actor's creation attempt; cancel treats it like killing the actor.
    pub(super) fn cancel_creation(&mut self, task: TaskId) -> bool {
        match self.creations.get(&task) {
            Some(&actor) => {
                if self.nodes.locate_for_cancel(task) == Placement::Absent {
                    return true;
                }
                self.stop_actor(actor, "its creation was cancelled".into());
                true
            }
            None => false,
        }
    }
}

impl State {
    /// Every actor the driver keeps, as the cluster's directory shows it.
    pub(crate) fn actor_directory(&self) -> Vec<ActorStatus> {
        self.actors
            .iter()
            .map(|(id, record)| ActorStatus {
                id: *id,
                class: record.class.clone(),
                name: record.name.as_ref().map(|n| n.name.clone()),
                namespace: (record.name.as_ref()).map_or_else(String::new, |n| n.namespace.clone()),
                state: match &record.life {
                    Life::Starting if record.restarts == 0 => ActorState::Starting,
                    Life::Starting => ActorState::Restarting,
                    Life::Alive => ActorState::Alive,
                    Life::Dead(reason) => ActorState::Dead(reason.clone()),
                },
                node: record
                    .worker
                    .and_then(|w| self.nodes.get(node_of(w)))
                    .map_or_else(String::new, |node| node.name.clone()),
                restarts: record.restarts,
                reach: record.worker.and_then(|worker| {
                    Some(ActorReach {
                        worker,
                        at: self.peer_addresses.get(&node_of(worker))?.clone(),
                        direct: self.workers.get(&worker)?.direct.clone(),
                    })
                }),
                max_task_retries: record.max_task_retries,
            })
            .collect()
    }

    /// The actor's creation attempts in flight (its first start or a restart).
    fn creations_of(&self, actor: ActorId) -> Vec<TaskId> {
        self.creations
            .iter()
            .filter(|(_, a)| **a == actor)
            .map(|(t, _)| *t)
            .collect()
    }
}

fn died(task: TaskId, function: &str, actor: ActorId, class: &str, reason: &str) -> TaskError {
    TaskError::ActorDied {
        task,
        function: function.to_string(),
        actor,
        class: class.to_string(),
        reason: reason.to_string(),
    }
}
