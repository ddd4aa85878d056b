//! The task specification: everything a worker needs to run one call of a remote function, and
//! everything the owner needs to run it again.

use crate::{ActorId, ObjectId, Resources, TaskId};

/// One argument of a task: a value archived inline, or a reference to an object that must be
/// ready (and is resolved by the owner) before the task runs.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Arg {
    /// The rkyv bytes of the value.
    Value(Vec<u8>),
    /// An object that must be ready first.
    Ref(ObjectId),
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum TaskKind {
    /// Call a remote function.
    Normal,
    /// Run an actor's constructor on a worker of its own (`function` is the actor's class).
    ActorCreation {
        /// The actor.
        actor: ActorId,
        /// How many of its calls may run at once (1: one after another, in order).
        max_concurrency: u32,
    },
    /// Call a method of the actor (`function` is `Class::method`).
    ActorCall(ActorId),
}

/// One call of a remote function.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TaskSpec {
    /// The task's id; its return objects are `ObjectId::new(task_id, i)`.
    pub task_id: TaskId,
    /// The registry key of the function: `module_path!()::name`.
    pub function: String,
    /// A hash of the function's signature, so a worker built from other code refuses the call.
    pub fn_hash: u64,
    /// The arguments in order.
    pub args: Vec<Arg>,
    /// How many objects the task returns.
    pub num_returns: u32,
    /// The resources the task holds while it runs.
    pub resources: Resources,
    /// How often the task is re-run after its worker dies.
    pub max_retries: u32,
    /// Whether a panic is retried too (within `max_retries`).
    pub retry_exceptions: bool,
    /// A function call, an actor's creation, or an actor method call.
    pub kind: TaskKind,
    /// References inside the argument values (an `ObjectRef` passed inside a `Vec`, say): the
    /// owner keeps their objects alive until the task ends, as the submitter may drop its own
    /// handles at once (Ray's inlined references).
    pub inlined_refs: Vec<ObjectId>,
    /// Actor handles inside the argument values: the actors' owner counts them as held until
    /// the task ends, as the submitter may drop its own handles at once; a worker that keeps a
    /// handle past its task says so itself (the borrower protocol, for actors).
    pub inlined_actors: Vec<ActorId>,
    /// A streaming generator: `Some(n)` when the task yields its items one at a time as
    /// objects `(task, 1)`, `(task, 2)`, ... (its one return object, index 0, holds their count
    /// once it ends), pausing while `n` items it made are not yet taken (0: no limit).
    pub stream: Option<u32>,
}

impl TaskSpec {
    /// A call of `function` with `args` and one return object, on no resources, run once
    /// (no retries), with no references or handles inside its arguments: the base that
    /// callers change field by field (`TaskSpec { max_retries: 3, ..TaskSpec::call(..) }`).
    pub fn call(task_id: TaskId, function: impl Into<String>, args: Vec<Arg>) -> TaskSpec {
        TaskSpec {
            task_id,
            function: function.into(),
            fn_hash: 0,
            args,
            num_returns: 1,
            resources: Resources::default(),
            max_retries: 0,
            retry_exceptions: false,
            kind: TaskKind::Normal,
            inlined_refs: Vec::new(),
            inlined_actors: Vec::new(),
            stream: None,
        }
    }

    /// The objects this task waits for, in argument order (repeats included).
    pub fn dependencies(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.args.iter().filter_map(|arg| match arg {
            Arg::Ref(id) => Some(*id),
            Arg::Value(_) => None,
        })
    }

    /// The ids of the objects the task returns.
    pub fn return_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        (0..self.num_returns).map(|i| ObjectId::new(self.task_id, i))
    }
}
