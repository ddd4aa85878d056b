//! Why a task failed. These errors cross process boundaries (worker to owner), so they are plain
//! archivable data that always name the task and its function.

use crate::{ActorId, TaskId};

/// The failure of one task; every variant names the task and its function.
#[derive(
    Debug, Clone, PartialEq, Eq, thiserror::Error, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[non_exhaustive]
pub enum TaskError {
    /// The function panicked; `message` is the panic payload.
    #[error("task {task} ({function}) panicked: {message}")]
    Panicked {
        /// The failed task.
        task: TaskId,
        /// Its function.
        function: String,
        /// The panic message.
        message: String,
    },
    /// The worker process running the task died and the retry budget is spent.
    #[error("task {task} ({function}) failed: its worker died {attempts} time(s) ({reason})")]
    WorkerDied {
        /// The failed task.
        task: TaskId,
        /// Its function.
        function: String,
        /// How many times the task was started.
        attempts: u32,
        /// What the node saw of the worker's death (exit status or signal).
        reason: String,
    },
    /// The task was cancelled before it finished.
    #[error("task {task} ({function}) was cancelled")]
    Cancelled {
        /// The cancelled task.
        task: TaskId,
        /// Its function.
        function: String,
    },
    /// An argument or a return value failed rkyv validation or has another type than expected.
    #[error("task {task} ({function}): {what} is not a valid value of the expected type: {reason}")]
    InvalidValue {
        /// The task.
        task: TaskId,
        /// Its function.
        function: String,
        /// Which value: `argument 2 (b: Vec<f64>)`, `return value`.
        what: String,
        /// The validation error.
        reason: String,
    },
    /// The call's options cannot be satisfied as written (a negative or non-finite amount).
    #[error("task {task} ({function}) has invalid options: {reason}")]
    InvalidOptions {
        /// The task.
        task: TaskId,
        /// Its function.
        function: String,
        /// What is wrong.
        reason: String,
    },
    /// The actor the method was called on is dead (its process died beyond its restart budget,
    /// it was killed, or its constructor failed).
    #[error("task {task} ({function}) failed: actor {actor} ({class}) is dead: {reason}")]
    ActorDied {
        /// The method call.
        task: TaskId,
        /// The method.
        function: String,
        /// The actor.
        actor: ActorId,
        /// The actor's class.
        class: String,
        /// Why it is dead.
        reason: String,
    },
    /// The object's value exists only on a node that cannot deliver it (lost, unreachable).
    #[error("object {object} (made by {function}) is unavailable: {reason}")]
    ObjectUnavailable {
        /// The object.
        object: crate::ObjectId,
        /// The function that made it (`put` for puts).
        function: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// The task can never be scheduled: the placement group it was to run in was removed.
    #[error("task {task} ({function}) cannot be scheduled: {reason}")]
    Unschedulable {
        /// The task.
        task: TaskId,
        /// Its function.
        function: String,
        /// Why.
        reason: String,
    },
    /// The worker's binary has no function registered under this name (or with this signature).
    #[error("task {task}: the worker binary has no remote function {function} ({detail})")]
    UnknownFunction {
        /// The task.
        task: TaskId,
        /// The function name that was asked for.
        function: String,
        /// What was found instead.
        detail: String,
    },
    /// The worker that owned the task died before it could tell anyone its result: the task
    /// was submitted by a task running on that worker, which passed a reference to its
    /// result on (returned it, put it, passed it to another task) and handed the task to the
    /// job's node, its end to follow (Ray's `OwnerDiedError`).
    #[error(
        "task {task} ({function}) failed: its owner, {owner}, died before the task's end reached the job ({reason})"
    )]
    OwnerDied {
        /// The task.
        task: TaskId,
        /// Its function.
        function: String,
        /// The owner: its worker number, process and node.
        owner: String,
        /// What the node saw of the owner's death.
        reason: String,
    },
    /// An argument's segment is not in the store of the worker's node (its copy there was
    /// lost or never arrived): the node runs the task again once the object is there.
    #[error(
        "task {task} ({function}): argument {index} (object {object}) is not in its node's store: {reason}"
    )]
    ArgumentMissing {
        /// The task.
        task: TaskId,
        /// Its function.
        function: String,
        /// The argument's position.
        index: u32,
        /// The object.
        object: crate::ObjectId,
        /// What the worker saw.
        reason: String,
    },
}

impl TaskError {
    /// The task that failed.
    pub fn task(&self) -> TaskId {
        match self {
            TaskError::Panicked { task, .. }
            | TaskError::WorkerDied { task, .. }
            | TaskError::Cancelled { task, .. }
            | TaskError::InvalidValue { task, .. }
            | TaskError::InvalidOptions { task, .. }
            | TaskError::ActorDied { task, .. }
            | TaskError::Unschedulable { task, .. }
            | TaskError::UnknownFunction { task, .. }
            | TaskError::OwnerDied { task, .. }
            | TaskError::ArgumentMissing { task, .. } => *task,
            TaskError::ObjectUnavailable { object, .. } => object.task,
        }
    }

    /// The function of the task that failed.
    pub fn function(&self) -> &str {
        match self {
            TaskError::Panicked { function, .. }
            | TaskError::WorkerDied { function, .. }
            | TaskError::Cancelled { function, .. }
            | TaskError::InvalidValue { function, .. }
            | TaskError::InvalidOptions { function, .. }
            | TaskError::ActorDied { function, .. }
            | TaskError::Unschedulable { function, .. }
            | TaskError::UnknownFunction { function, .. }
            | TaskError::OwnerDied { function, .. }
            | TaskError::ArgumentMissing { function, .. }
            | TaskError::ObjectUnavailable { function, .. } => function,
        }
    }
}
