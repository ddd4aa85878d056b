//! Building and submitting a call: per-call options, arguments given as values or references,
//! and the submission that turns them into a [`TaskSpec`] for the owner.

use prism_graph::{Arg, Resources, TaskError, TaskKind, TaskSpec};

use crate::api::object_ref::{ObjectRef, RawRef};
use crate::api::placement::GroupSlot;
use crate::api::stream::ObjectRefStream;
use crate::context;
use crate::value::Remotable;

/// Options of one call: resources, retries. `#[remote(...)]` sets the defaults; the generated
/// `options()` builder overrides them per call.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// CPUs held while the task runs (default 1).
    pub num_cpus: f64,
    /// GPUs held while the task runs (default 0).
    pub num_gpus: f64,
    /// Custom resources held while the task runs.
    pub resources: Vec<(String, f64)>,
    /// Re-runs after the worker dies (default 3).
    pub max_retries: u32,
    /// Whether panics are retried too, within `max_retries` (default false).
    pub retry_exceptions: bool,
    /// The placement group (and bundle) the task runs in, if any.
    pub placement: Option<GroupSlot>,
    /// For a streaming generator: how many items it makes ahead of its consumer before it
    /// pauses (0, the default: no limit; Ray's `_generator_backpressure_num_objects`).
    pub backpressure: u32,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            num_cpus: 1.0,
            num_gpus: 0.0,
            resources: Vec::new(),
            max_retries: 3,
            retry_exceptions: false,
            placement: None,
            backpressure: 0,
        }
    }
}

impl TaskOptions {
    /// Sets a custom resource demand (replacing an earlier one of the same name).
    pub fn set_resource(&mut self, name: &str, amount: f64) {
        self.resources.retain(|(n, _)| n != name);
        self.resources.push((name.to_string(), amount));
    }

    pub(crate) fn demand(&self) -> Result<Resources, String> {
        placed(
            demand(self.num_cpus, self.num_gpus, &self.resources)?,
            self.placement,
        )
    }
}

/// A resource demand from options' numbers, or what is wrong with them.
pub(crate) fn demand(
    num_cpus: f64,
    num_gpus: f64,
    resources: &[(String, f64)],
) -> Result<Resources, String> {
    let mut r = Resources::default();
    r.set("CPU", num_cpus)
        .map_err(|e| format!("num_cpus: {e}"))?;
    r.set("GPU", num_gpus)
        .map_err(|e| format!("num_gpus: {e}"))?;
    for (name, amount) in resources {
        if name == "CPU" || name == "GPU" {
            return Err(format!(
                "use num_cpus / num_gpus for {name}, not resources()"
            ));
        }
        r.set(name, *amount)
            .map_err(|e| format!("resource {name:?}: {e}"))?;
    }
    Ok(r)
}

/// `base`, or what it becomes inside a placement group.
pub(crate) fn placed(base: Resources, placement: Option<GroupSlot>) -> Result<Resources, String> {
    match placement {
        Some(slot) => slot.demand(&base),
        None => Ok(base),
    }
}

/// An argument on its way into a task.
#[derive(Debug)]
pub enum ArgSlot {
    /// An archived value (or why archiving failed).
    Value(Result<rkyv::util::AlignedVec, String>),
    /// An archived value with references or actor handles inside: their ids (pinned by the
    /// owner until the task ends) and the value itself, whose handles keep them alive until
    /// the task is submitted.
    ValueWithRefs {
        /// The archive.
        bytes: rkyv::util::AlignedVec,
        /// The objects referred to.
        refs: Vec<prism_graph::ObjectId>,
        /// The actors whose handles it holds.
        actors: Vec<prism_graph::ActorId>,
        /// The value, dropped once the task is submitted.
        keep: Box<dyn std::any::Any + Send>,
    },
    /// A reference, kept alive until the task is submitted.
    Ref(RawRef),
}

/// The largest argument (archived) that a call carries by value: a larger one goes through
/// the object store. Below it a copy inside the task's frames costs less than a segment of its
/// own (embedded, 500 tasks of a 200 KB argument took 0.04-0.05 s inline, 0.13-0.16 s through
/// the store; 1 MiB about even; 10 MiB three times faster through the store).
const BY_VALUE_MAX: usize = 8 << 20;

/// Something that can stand where a remote function expects a `T`: a `T`, an `ObjectRef<T>`,
/// or a `&ObjectRef<T>`.
#[diagnostic::on_unimplemented(
    message = "expected `{T}` or `ObjectRef<{T}>` for this argument, found `{Self}`",
    label = "this argument must be a `{T}` or an `ObjectRef<{T}>`"
)]
pub trait IntoArg<T> {
    /// Converts the argument.
    fn into_arg(self) -> ArgSlot;
}

impl<T: Remotable> IntoArg<T> for T {
    fn into_arg(self) -> ArgSlot {
        let (bytes, nested) = crate::value::collect_nested(|| self.to_bytes());
        // A large value goes by reference, as Ray's do: stored once in shared memory, where
        // the worker that runs the task maps it, rather than copied into the frames that
        // carry the task (which it could outgrow).
        if let Ok(archived) = &bytes
            && archived.len() >= BY_VALUE_MAX
            && let Some(ctx) = context::try_current()
            && archived.len() >= ctx.inline_threshold()
        {
            drop(bytes);
            return match crate::api::put_ref(&self) {
                Ok(stored) => ArgSlot::Ref(stored.into_raw()),
                Err(e) => ArgSlot::Value(Err(format!("it cannot be stored: {e}"))),
            };
        }
        let crate::value::Nested {
            objects: refs,
            actors,
        } = nested;
        match bytes {
            Ok(bytes) if !refs.is_empty() || !actors.is_empty() => ArgSlot::ValueWithRefs {
                bytes,
                refs,
                actors,
                keep: Box::new(self),
            },
            bytes => ArgSlot::Value(bytes.map_err(|e| e.to_string())),
        }
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> ArgSlot {
        ArgSlot::Ref(self.into_raw())
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> ArgSlot {
        ArgSlot::Ref(self.raw().clone())
    }
}

/// Submits a call of the registered function `name` and returns its return references.
///
/// Never fails: a call that cannot be built (bad options, an argument that cannot be archived)
/// becomes a task whose objects hold the error, as a failure at run time would.
///
/// # Panics
///
/// When Prism is not initialized in this process.
pub fn submit(
    name: &'static str,
    hash: u64,
    args: Vec<ArgSlot>,
    options: &TaskOptions,
    num_returns: u32,
) -> Vec<RawRef> {
    function_call(name, hash, options, num_returns, None).submit(&current_for(name), args)
}

/// Submits a call of the registered streaming generator `name` and returns the stream of its
/// items (generated code, which gives it its item type).
///
/// # Panics
///
/// When Prism is not initialized in this process.
pub fn submit_stream(
    name: &'static str,
    hash: u64,
    args: Vec<ArgSlot>,
    options: &TaskOptions,
) -> ObjectRefStream<()> {
    let call = function_call(name, hash, options, 1, Some(options.backpressure));
    let end = call.submit(&current_for(name), args);
    ObjectRefStream::from_end(end.into_iter().next().expect("one end object"))
}

fn current_for(what: &str) -> context::Context {
    match context::current() {
        Ok(ctx) => ctx,
        Err(e) => panic!("cannot call {what}: {e}"),
    }
}

fn function_call(
    name: &'static str,
    hash: u64,
    options: &TaskOptions,
    num_returns: u32,
    stream: Option<u32>,
) -> Call {
    Call {
        name,
        hash,
        demand: options.demand(),
        max_retries: options.max_retries,
        retry_exceptions: options.retry_exceptions,
        num_returns,
        kind: TaskKind::Normal,
        stream,
    }
}

/// The parts of a call other than its arguments.
pub(crate) struct Call {
    pub(crate) name: &'static str,
    pub(crate) hash: u64,
    pub(crate) demand: Result<Resources, String>,
    pub(crate) max_retries: u32,
    pub(crate) retry_exceptions: bool,
    pub(crate) num_returns: u32,
    pub(crate) kind: TaskKind,
    /// A streaming generator's backpressure window (see [`TaskSpec::stream`]).
    pub(crate) stream: Option<u32>,
}

impl Call {
    /// Submits the call in this process's context; returns one reference per return value.
    pub(crate) fn submit(self, ctx: &context::Context, args: Vec<ArgSlot>) -> Vec<RawRef> {
        let (spec, failed, keep_alive) = self.build(ctx.next_task_id(), args);
        let returns: Vec<RawRef> = spec.return_ids().map(RawRef::adopt).collect();
        ctx.submit(spec, failed);
        drop(keep_alive);
        returns
    }

    /// The task spec of this call; `failed` when it cannot run as built. The references
    /// returned last must live until the spec is submitted.
    pub(crate) fn build(
        self,
        task_id: prism_graph::TaskId,
        args: Vec<ArgSlot>,
    ) -> (TaskSpec, Option<TaskError>, KeepAlive) {
        let name = self.name;
        let mut failed = None;
        let mut spec_args = Vec::with_capacity(args.len());
        let mut keep_alive = KeepAlive::default();
        let mut inlined_refs = Vec::new();
        let mut inlined_actors = Vec::new();
        for (i, arg) in args.into_iter().enumerate() {
            match arg {
                ArgSlot::Value(Ok(bytes)) => spec_args.push(Arg::Value(bytes.to_vec())),
                ArgSlot::ValueWithRefs {
                    bytes,
                    refs,
                    actors,
                    keep,
                } => {
                    spec_args.push(Arg::Value(bytes.to_vec()));
                    inlined_refs.extend(refs);
                    inlined_actors.extend(actors);
                    keep_alive.values.push(keep);
                }
                ArgSlot::Value(Err(reason)) => {
                    failed.get_or_insert(TaskError::InvalidValue {
                        task: task_id,
                        function: name.to_string(),
                        what: format!("argument {i}"),
                        reason,
                    });
                }
                ArgSlot::Ref(raw) => {
                    spec_args.push(Arg::Ref(raw.id()));
                    keep_alive.refs.push(raw);
                }
            }
        }
        let resources = match self.demand {
            Ok(r) => r,
            Err(reason) => {
                failed.get_or_insert(TaskError::InvalidOptions {
                    task: task_id,
                    function: name.to_string(),
                    reason,
                });
                Resources::default()
            }
        };
        if failed.is_some() {
            // Its inputs no longer matter: the task fails without waiting for them.
            spec_args.clear();
            inlined_refs.clear();
            inlined_actors.clear();
        }
        let spec = TaskSpec {
            task_id,
            function: name.to_string(),
            fn_hash: self.hash,
            args: spec_args,
            num_returns: self.num_returns,
            resources,
            max_retries: self.max_retries,
            retry_exceptions: self.retry_exceptions,
            kind: self.kind,
            inlined_refs,
            inlined_actors,
            stream: self.stream,
        };
        (spec, failed, keep_alive)
    }
}

/// What must live until a call's spec is submitted: the references passed as arguments and
/// the values holding references.
#[derive(Default)]
pub(crate) struct KeepAlive {
    refs: Vec<RawRef>,
    values: Vec<Box<dyn std::any::Any + Send>>,
}

/// Declares the per-call option builder on a generated `Call` type holding `opts: TaskOptions`.
/// The placement-group methods of the generated option builders (`what`: "task" or "actor").
#[doc(hidden)]
#[macro_export]
macro_rules! __placement_options {
    ($what:literal) => {
        #[doc = concat!("Runs the ", $what, " in bundle `bundle` of a placement group, on what it reserved.")]
        pub fn placement(mut self, group: &$crate::PlacementGroup, bundle: u32) -> Self {
            self.opts.placement = ::core::option::Option::Some($crate::__private::group_slot(
                group,
                ::core::option::Option::Some(bundle),
            ));
            self
        }
        #[doc = concat!("Runs the ", $what, " in any bundle of a placement group, on what it reserved.")]
        pub fn placement_group(mut self, group: &$crate::PlacementGroup) -> Self {
            self.opts.placement = ::core::option::Option::Some($crate::__private::group_slot(
                group,
                ::core::option::Option::None,
            ));
            self
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __options_builder {
    ($call:ident) => {
        impl $call {
            /// CPUs the task holds while it runs.
            pub fn num_cpus(mut self, n: f64) -> Self {
                self.opts.num_cpus = n;
                self
            }
            /// GPUs the task holds while it runs (fractions allowed).
            pub fn num_gpus(mut self, n: f64) -> Self {
                self.opts.num_gpus = n;
                self
            }
            /// A custom resource the task holds while it runs.
            pub fn resources(mut self, name: &str, amount: f64) -> Self {
                self.opts.set_resource(name, amount);
                self
            }
            /// How often the task is re-run after its worker dies (and its lost results
            /// rebuilt when no node's loss explains the loss).
            pub fn max_retries(mut self, n: u32) -> Self {
                self.opts.max_retries = n;
                self
            }
            /// Whether a panic is retried too, within `max_retries`.
            pub fn retry_exceptions(mut self, yes: bool) -> Self {
                self.opts.retry_exceptions = yes;
                self
            }
            /// For a streaming generator: pause it while `n` of its items are not taken by
            /// the stream's reader (0: no limit, the default).
            pub fn backpressure(mut self, n: u32) -> Self {
                self.opts.backpressure = n;
                self
            }
            $crate::__placement_options!("task");
        }
    };
}
