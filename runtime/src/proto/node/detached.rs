//! Detached actors (Ray's `lifetime="detached"`, step 5's piece 4 in docs/ownership.md): an
//! actor that outlives the job that made it. Embedded, or in the job that hosts them, it is
//! an actor of this job's own that no dropped handle stops (it lives until it is killed or
//! its job ends). A joined driver has the cluster's head make it instead
//! ([`Action::CreateDetached`]): the head has a process of its own, a driver of the job
//! [`DETACHED_JOB`]`-<binary>` that runs this program's binary, make it there, and this job
//! knows it as another job's actor from then on (an alias, see [`super::foreign`]), as does
//! any job that finds it by name. Killing it goes through the head too
//! ([`Action::KillForeign`]).

use prism_graph::{Arg, ObjectId, TaskError, TaskSpec};
use prism_transport::{ActorConfig, Answer, Refusal};

use super::foreign::Found;
use super::{Action, ActorName, State};
use crate::proto::scheduler::WorkerId;

/// The most bytes a detached actor's constructor's arguments may have in all (they travel to
/// the head inside one request, whose limit is twice this).
pub(crate) const DETACHED_ARGS_MAX: usize = 8 << 20;

/// The prefix of the name of a job that hosts detached actors (the rest names its binary).
pub(crate) const DETACHED_JOB: &str = "detached";

/// The name of the job that hosts the detached actors of the binary of SHA-256 `hash`.
pub(crate) fn detached_job(hash: &[u8; 32]) -> String {
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DETACHED_JOB}-{hex}")
}

impl State {
    /// Has the cluster's head make detached actors (a joined driver that does not host them
    /// itself).
    pub(crate) fn with_detached_at_head(mut self, at_head: bool) -> Self {
        self.detached_at_head = at_head;
        self
    }

    /// Whether detached actors are made by the cluster's head.
    pub(crate) fn detached_at_head(&self) -> bool {
        self.detached_at_head
    }

    /// Asks the head to make a detached actor for the driver's API (`asker` `None`) or for
    /// worker `asker` (answered in its object): the number its answer comes under
    /// ([`State::poll_find`]); refused at once when its constructor's arguments are not all
    /// values (a reference cannot outlive this job) or could not be made.
    pub(crate) fn create_detached(
        &mut self,
        spec: TaskSpec,
        failed: Option<TaskError>,
        setup: ActorConfig,
        asker: Option<(WorkerId, ObjectId)>,
    ) -> Result<u64, Refusal> {
        let refuse = |reason: String| Refusal::Detached {
            class: setup.class.clone(),
            reason,
        };
        if let Some(error) = failed {
            return Err(refuse(error.to_string()));
        }
        if spec.args.iter().any(|arg| matches!(arg, Arg::Ref(_)))
            || !spec.inlined_refs.is_empty()
            || !spec.inlined_actors.is_empty()
        {
            return Err(refuse(
                "its constructor's arguments must be values: an object reference or actor \
                 handle inside one cannot outlive the job that made it"
                    .to_string(),
            ));
        }
        let bytes: usize = (spec.args.iter())
            .map(|arg| match arg {
                Arg::Value(bytes) => bytes.len(),
                Arg::Ref(_) => 0,
            })
            .sum();
        if bytes > DETACHED_ARGS_MAX {
            return Err(refuse(format!(
                "its constructor's arguments are {bytes} bytes archived; at most {DETACHED_ARGS_MAX} \
                 go to the head with it"
            )));
        }
        let name = match &setup.name {
            Some(name) => self.actor_name(name, setup.namespace.as_deref()),
            None => ActorName {
                namespace: String::new(),
                name: String::new(),
            },
        };
        let mut setup = setup;
        // The head's answer names the namespace: resolved here, in the job's.
        if setup.name.is_some() {
            setup.namespace = Some(name.namespace.clone());
        }
        let find = self.await_head(name, asker);
        let (spec, setup) = (Box::new(spec), Box::new(setup));
        (self.actions).push_back(Action::CreateDetached { find, spec, setup });
        Ok(find)
    }

    /// Worker `worker` makes a detached actor, answered in object `answer`.
    pub(super) fn worker_creates_detached(
        &mut self,
        worker: WorkerId,
        spec: TaskSpec,
        failed: Option<TaskError>,
        setup: ActorConfig,
        answer: ObjectId,
    ) {
        if !self.owner.promise(answer, Some(worker)) {
            return;
        }
        if let Err(refusal) = self.create_detached(spec, failed, setup, Some((worker, answer))) {
            self.fulfil_answer(answer, &Answer::Refused(refusal));
        }
    }

    /// The head's answer to detached creation `find`: the actor made (this job's alias for
    /// it, a handle counted for the asker), or why not.
    pub(super) fn detached_made(&mut self, find: u64, outcome: Result<Found, Refusal>) {
        let Some(finding) = self.findings.remove(&find) else {
            return;
        };
        let result = outcome.map(|found| self.adopt_foreign(found));
        self.answer_finding(find, finding, result);
    }
}
