//! The errors a Prism user sees. Task failures carry a [`TaskError`] that names the task and its
//! function; everything else names what was asked and why it could not be done.

use std::time::Duration;

pub use prism_graph::TaskError;

/// Prism's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a Prism call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task that makes the object failed (or a task it depends on did).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The object was not ready in time.
    #[error("timed out after {waited:?} waiting for object {object} of task {task_desc}: {state}")]
    Timeout {
        /// The object waited for.
        object: String,
        /// The task that makes it, with its function.
        task_desc: String,
        /// How long the caller waited.
        waited: Duration,
        /// Where the task is: queued, running, or infeasible with its demand and the node's
        /// resources.
        state: String,
    },
    /// An API call before [`init`](crate::init).
    #[error("Prism is not initialized: call prism::init() or use #[prism::main] first")]
    NotInitialized,
    /// [`init`](crate::init) called twice.
    #[error("Prism is already initialized in this process")]
    AlreadyInitialized,
    /// The configuration cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A value could not be archived.
    #[error("cannot archive {what}: {reason}")]
    Encode {
        /// What was being archived.
        what: String,
        /// rkyv's error.
        reason: String,
    },
    /// An argument of an API call is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The shared-memory store cannot hold the object.
    #[error(
        "object store full: object {object} needs {size} bytes, {used} of {capacity} bytes are in use"
    )]
    ObjectStoreFull {
        /// The object.
        object: String,
        /// Its size.
        size: u64,
        /// Bytes in use.
        used: u64,
        /// The store's capacity.
        capacity: u64,
    },
    /// The object is larger than the whole shared-memory store.
    #[error(
        "object {object} needs {size} bytes, more than the object store's capacity of {capacity} bytes"
    )]
    ObjectTooLarge {
        /// The object.
        object: String,
        /// Its size.
        size: u64,
        /// The store's capacity.
        capacity: u64,
    },
    /// No actor has this name in this namespace.
    #[error("no actor is named {name:?} in namespace {namespace:?}")]
    ActorNotFound {
        /// The name.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// The named actor is of another class than asked for.
    #[error("actor {name:?} is a {found}, not a {expected}")]
    ActorTypeMismatch {
        /// The name.
        name: String,
        /// The class asked for.
        expected: String,
        /// The class it has.
        found: String,
    },
    /// Another actor already has this name in this namespace.
    #[error("an actor named {name:?} already exists in namespace {namespace:?} {}", held_by(.holder))]
    ActorNameTaken {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
        /// The job whose actor has it (`None`: this job).
        holder: Option<String>,
    },
    /// The cluster's head, which keeps names unique across its jobs and knows which actor of
    /// which job has one, could not be asked about this name (to claim it, or find it).
    #[error(
        "the cluster's head could not be asked about the actor name {name:?} in namespace {namespace:?}: {reason}"
    )]
    ActorNameUnanswered {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
        /// Why (the head did not answer).
        reason: String,
    },
    /// A detached actor (one that outlives its creator's job) could not be made.
    #[error("cannot make detached actor {class}: {reason}")]
    DetachedActor {
        /// Its class.
        class: String,
        /// Why.
        reason: String,
    },
    /// Another job's actor could not be killed (its job is gone, or did not answer).
    #[error("cannot kill actor {actor} of job {job}: {reason}")]
    ActorNotKilled {
        /// The actor's job.
        job: String,
        /// The actor, as its job numbers it.
        actor: String,
        /// Why.
        reason: String,
    },
    /// The object is unknown to its owner (freed long ago, or never made by this cluster).
    #[error("object {0} is unknown to its owner (freed long ago, or from another cluster)")]
    UnknownObject(String),
    /// The object was freed before this read: every reference to it had gone.
    #[error("object {object} was freed before this read ({why})")]
    Freed {
        /// The object.
        object: String,
        /// Whose release let its last reference go.
        why: String,
    },
    /// The local cluster could not be started.
    #[error("cannot start the local cluster: {0}")]
    Startup(String),
    /// A worker process lost its connection to its node.
    #[error("lost the connection to the node: {0}")]
    Disconnected(String),
    /// The cluster's head could not answer what was asked of it (what, and why).
    #[error("the cluster's head: {0}")]
    Head(String),
}

impl Error {
    /// Whether a task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Error::Task(TaskError::Panicked { .. }))
    }

    /// Whether a worker died running the task (after its retries).
    pub fn is_worker_died(&self) -> bool {
        matches!(self, Error::Task(TaskError::WorkerDied { .. }))
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Task(TaskError::Cancelled { .. }))
    }

    /// Whether the call's actor is dead.
    pub fn is_actor_died(&self) -> bool {
        matches!(self, Error::Task(TaskError::ActorDied { .. }))
    }

    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The error a node's refusal of a worker's request stands for.
    pub(crate) fn from_refusal(refusal: prism_transport::Refusal) -> Error {
        use prism_transport::Refusal;
        match refusal {
            Refusal::NameTaken {
                name,
                namespace,
                holder,
            } => Error::ActorNameTaken {
                name,
                namespace,
                holder,
            },
            Refusal::NameUnanswered {
                name,
                namespace,
                reason,
            } => Error::ActorNameUnanswered {
                name,
                namespace,
                reason,
            },
            Refusal::NoSuchActor { name, namespace } => Error::ActorNotFound { name, namespace },
            Refusal::GroupGone(reason) => Error::InvalidArgument(reason),
            Refusal::Detached { class, reason } => Error::DetachedActor { class, reason },
            Refusal::NotKilled { job, actor, reason } => Error::ActorNotKilled {
                job,
                actor: actor.to_string(),
                reason,
            },
        }
    }

    /// The task error, if this is one.
    pub fn task_error(&self) -> Option<&TaskError> {
        match self {
            Error::Task(e) => Some(e),
            _ => None,
        }
    }
}

/// Who holds a taken actor name, for [`Error::ActorNameTaken`].
fn held_by(holder: &Option<String>) -> String {
    match holder {
        None => "(use get_if_exists to share it)".to_string(),
        Some(job) => format!("(held by job {job}: names are unique per namespace across jobs)"),
    }
}
