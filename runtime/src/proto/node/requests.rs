//! What a worker asks of its job's owner besides running tasks: creating, finding and killing
//! actors, and making, awaiting and removing placement groups, which the driver does through
//! its API. A request that needs an answer names an object; the node promises it to the
//! worker at once and makes its value (an [`Answer`]) when the answer is known, so the worker
//! waits for it as for any other object (blocked in `get`, on an async actor's event loop, or
//! with a timeout).

use prism_graph::{ActorId, ObjectId, PlacementStrategy, Resources, TaskError, TaskSpec};
use prism_transport::{ActorConfig, Answer, Refusal};

use super::{ActorName, State};
use crate::proto::owner::{Owner, Slot};
use crate::proto::placement::{Stage, gone};
use crate::proto::scheduler::WorkerId;
use crate::store::ObjectBytes;

impl State {
    /// `worker` creates an actor (answered in `answer` when named). The worker holds a handle
    /// from now on, as the driver holds the one its `create` returns.
    pub(super) fn worker_creates_actor(
        &mut self,
        worker: WorkerId,
        spec: TaskSpec,
        failed: Option<TaskError>,
        config: ActorConfig,
        answer: Option<ObjectId>,
    ) {
        if config.detached
            && self.detached_at_head
            && let Some(answer) = answer
        {
            return self.worker_creates_detached(worker, spec, failed, config, answer);
        }
        let class = config.class.clone();
        let made = ActorId(spec.task_id);
        let reply = match self.create_actor(spec, failed, config) {
            Ok(actor) => {
                // A name the head is asked for: answered with its word.
                if let Some(answer) = answer
                    && actor == made
                    && self.claim_answers(actor, worker, answer)
                {
                    promise(&mut self.owner, worker, answer);
                    return;
                }
                self.counted_for(worker, actor);
                Answer::Actor { actor, class }
            }
            Err(taken) => Answer::Refused(Refusal::NameTaken {
                name: taken.name,
                namespace: taken.namespace,
                holder: None,
            }),
        };
        if let Some(answer) = answer {
            self.answer(worker, answer, &reply);
        }
    }

    /// `worker` looks up the actor named `name`; it holds a handle to it once found.
    pub(super) fn worker_looks_up(&mut self, worker: WorkerId, name: ActorName, answer: ObjectId) {
        if self.names_at_head && !self.names.contains_key(&name) {
            // Another job's, if any: the head knows.
            return self.worker_finds(worker, name, answer);
        }
        let reply = match self.lookup_actor(&name) {
            Some((actor, class)) => {
                self.counted_for(worker, actor);
                Answer::Actor { actor, class }
            }
            None => Answer::Refused(Refusal::NoSuchActor {
                name: name.name,
                namespace: name.namespace,
            }),
        };
        self.answer(worker, answer, &reply);
    }

    /// `worker` makes a placement group; its number is the answer.
    pub(super) fn worker_makes_group(
        &mut self,
        worker: WorkerId,
        bundles: Vec<Resources>,
        strategy: PlacementStrategy,
        answer: ObjectId,
    ) {
        let group = self.create_group(bundles, strategy);
        self.answer(worker, answer, &Answer::Group(group));
    }

    /// `worker` waits for placement group `group`: answered now if it is placed or gone, else
    /// when it is.
    pub(super) fn worker_awaits_group(&mut self, worker: WorkerId, group: u64, answer: ObjectId) {
        let reply = match self.groups.get_mut(&group) {
            None => Answer::Refused(Refusal::GroupGone(gone(group))),
            Some(g) if matches!(g.stage, Stage::Placed(_)) => Answer::Ready,
            Some(g) => {
                if promise(&mut self.owner, worker, answer) {
                    g.answers.push(answer);
                }
                return;
            }
        };
        self.answer(worker, answer, &reply);
    }

    /// Makes the promised answers of a group's waiters: ready, or gone for `reason`.
    pub(super) fn answer_group(&mut self, answers: Vec<ObjectId>, gone: Option<&str>) {
        if answers.is_empty() {
            return;
        }
        let reply = match gone {
            None => Answer::Ready,
            Some(reason) => Answer::Refused(Refusal::GroupGone(reason.to_string())),
        };
        let slot = answer_slot(&reply);
        for answer in answers {
            self.owner.fulfil(answer, slot.clone());
        }
    }

    /// The node counted a new handle to `actor` for `worker` (its creation or lookup): the
    /// worker's hold releases it when the worker ends. A worker that held the actor already
    /// counts the new handle itself, so the node's count goes back down.
    pub(super) fn counted_for(&mut self, worker: WorkerId, actor: ActorId) {
        let life = self.workers.entry(worker).or_default();
        if !life.actors.insert(actor) {
            self.actor_release(actor);
        }
    }

    /// Answers `worker` in object `answer`.
    fn answer(&mut self, worker: WorkerId, answer: ObjectId, reply: &Answer) {
        if promise(&mut self.owner, worker, answer) {
            self.fulfil_answer(answer, reply);
        }
    }

    /// Answers in object `answer`, promised to its worker before.
    pub(super) fn fulfil_answer(&mut self, answer: ObjectId, reply: &Answer) {
        self.owner.fulfil(answer, answer_slot(reply));
    }
}

/// Promises object `answer` to `worker`. False when it exists already: a bug in that worker
/// (its ids are its own), logged; the object is left alone and the request ignored.
fn promise(owner: &mut Owner, worker: WorkerId, answer: ObjectId) -> bool {
    let promised = owner.promise(answer, Some(worker));
    if !promised {
        tracing::error!(worker, object = %answer, "a worker asked to be answered in an object that exists; request ignored");
    }
    promised
}

/// An answer as an object's value.
fn answer_slot(reply: &Answer) -> Slot {
    match rkyv::to_bytes::<rkyv::rancor::Error>(reply) {
        Ok(bytes) => Slot::Ready(ObjectBytes::inline(&bytes)),
        // Plain data always archives; should it not, the waiting worker learns why.
        Err(e) => Slot::Failed(TaskError::InvalidValue {
            task: prism_graph::TaskId::new(super::NODE_OWNER, 0),
            function: String::from("<answer>"),
            what: String::from("the node's answer"),
            reason: e.to_string(),
        }),
    }
}
