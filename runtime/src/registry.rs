//! The registry of remote functions: `#[remote]` submits one [`RemoteFunction`] per function
//! through `inventory`, keyed by `module_path!()::name` and a hash of its signature; a worker
//! looks calls up here and runs them, turning panics and bad values into [`TaskError`]s.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::task::{Context, Poll};

use prism_graph::{TaskError, TaskId, TaskKind};
use prism_transport::Execute;
use rkyv::util::AlignedVec;

use crate::generator::{ItemSink, Stream};
use crate::store::ObjectBytes;
use crate::value::Remotable;

/// A remote function as registered by `#[remote]`.
#[derive(Debug)]
pub struct RemoteFunction {
    /// `module_path!()::name`.
    pub name: &'static str,
    /// A hash of the signature.
    pub hash: u64,
    /// Decodes the arguments, calls the function, encodes the return values.
    pub invoke: fn(&Invocation<'_>) -> Result<Vec<AlignedVec>, TaskError>,
}

inventory::collect!(RemoteFunction);

/// The state of an actor inside its worker.
pub type ActorState = Box<dyn std::any::Any + Send>;

/// The state of an actor whose calls run concurrently: `&self` methods under the read lock,
/// `&mut self` methods under the write lock.
pub type SharedActor = std::sync::Arc<parking_lot::RwLock<Box<dyn std::any::Any + Send + Sync>>>;

/// Makes an actor's state shareable between threads (generated code, for `Sync` types).
pub fn share_actor<T: std::any::Any + Send + Sync>(
    state: ActorState,
) -> Result<SharedActor, ActorState> {
    let value = state.downcast::<T>()?;
    let boxed: Box<dyn std::any::Any + Send + Sync> = value;
    Ok(std::sync::Arc::new(parking_lot::RwLock::new(boxed)))
}

/// Runs `f` on the shared state of an actor of type `T`, read-locked (a `&self` method).
pub fn read_actor<T: 'static, R>(
    shared: &SharedActor,
    call: &Invocation<'_>,
    f: impl FnOnce(&T) -> R,
) -> Result<R, TaskError> {
    let guard = shared.read();
    let this = guard
        .downcast_ref::<T>()
        .ok_or_else(|| call.wrong_state())?;
    Ok(f(this))
}

/// Runs `f` on the shared state of an actor of type `T`, write-locked (a `&mut self` method).
pub fn write_actor<T: 'static, R>(
    shared: &SharedActor,
    call: &Invocation<'_>,
    f: impl FnOnce(&mut T) -> R,
) -> Result<R, TaskError> {
    let mut guard = shared.write();
    let this = guard
        .downcast_mut::<T>()
        .ok_or_else(|| call.wrong_state())?;
    Ok(f(this))
}

/// The state of an async actor (one with an `async` method): its calls run on one event loop,
/// `&self` methods under the read lock and `&mut self` methods under the write lock, each held
/// across the method's awaits.
pub type AsyncActor = std::rc::Rc<tokio::sync::RwLock<ActorState>>;

/// What a call gives back: its encoded return values, the references each contains, and the
/// actors whose handles each contains (shorter when the last values contain none).
pub type Returned = (
    Vec<AlignedVec>,
    Vec<Vec<prism_graph::ObjectId>>,
    Vec<Vec<prism_graph::ActorId>>,
);

/// One call of an async actor's method, as its event loop runs it.
pub type AsyncCall = Pin<Box<dyn Future<Output = Result<Returned, TaskError>>>>;

/// A call's data, owned by the call's future (an async method keeps its arguments, and views
/// into them, across its awaits).
pub struct CallData {
    task: TaskId,
    function: String,
    args: Vec<ObjectBytes>,
    /// Where a generator's items go, and how many to skip.
    sink: Option<(Arc<dyn ItemSink>, u32)>,
    /// See [`Escape`].
    escape: Option<SharedEscape>,
}

impl std::fmt::Debug for CallData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallData({} {})", self.task, self.function)
    }
}

impl CallData {
    /// The invocation the generated code decodes the arguments from.
    pub fn invocation(&self) -> Invocation<'_> {
        Invocation {
            task: self.task,
            function: &self.function,
            args: &self.args,
            nested: Default::default(),
            actors: Default::default(),
            sink: self
                .sink
                .as_ref()
                .map(|(sink, skip)| (&**sink as &dyn ItemSink, *skip)),
            escape: self.escape.as_deref(),
        }
    }
}

/// An actor class as registered by `#[actor]`: its constructor.
#[derive(Debug)]
pub struct ActorClass {
    /// `module_path!()::Type`.
    pub name: &'static str,
    /// A hash of the constructor's signature.
    pub hash: u64,
    /// Decodes the arguments and runs the constructor.
    pub create: fn(&Invocation<'_>) -> Result<ActorState, TaskError>,
    /// Makes the state shareable for concurrent calls; gives it back when the type is not
    /// `Sync`.
    pub share: fn(ActorState) -> Result<SharedActor, ActorState>,
    /// Whether a method is `async`: the actor's calls then run on one event loop.
    pub is_async: bool,
}

inventory::collect!(ActorClass);

/// A method of an actor class as registered by `#[actor]`.
#[derive(Debug)]
pub struct ActorMethod {
    /// `module_path!()::Type::method`.
    pub name: &'static str,
    /// A hash of the signature.
    pub hash: u64,
    /// Decodes the arguments, calls the method on the state, encodes the return values.
    pub invoke: fn(&mut ActorState, &Invocation<'_>) -> Result<Vec<AlignedVec>, TaskError>,
    /// The same on shared state, taking the read or the write lock as the receiver asks.
    pub invoke_shared: fn(&SharedActor, &Invocation<'_>) -> Result<Vec<AlignedVec>, TaskError>,
    /// For an async actor's methods: the call as a future on the actor's event loop.
    pub invoke_async: Option<fn(AsyncActor, CallData) -> AsyncCall>,
}

inventory::collect!(ActorMethod);

/// The actor a worker holds, if any.
#[derive(Debug, Default)]
pub(crate) enum Actor {
    /// No actor (a worker for tasks).
    #[default]
    None,
    /// Calls run one at a time on the worker's thread.
    Alone(ActorState),
    /// Calls run on this many threads at once.
    Shared(SharedActor, u32),
    /// An async actor: calls run on one event loop, this many at once.
    Async(ActorState, u32),
}

/// Everything a worker can run, by name.
#[derive(Debug)]
pub(crate) struct Registry {
    functions: HashMap<&'static str, &'static RemoteFunction>,
    classes: HashMap<&'static str, &'static ActorClass>,
    methods: HashMap<&'static str, &'static ActorMethod>,
}

/// One call as the generated `invoke` sees it.
pub struct Invocation<'a> {
    task: TaskId,
    function: &'a str,
    args: &'a [ObjectBytes],
    /// For each return value encoded so far, the references it contains.
    nested: std::cell::RefCell<Vec<Vec<prism_graph::ObjectId>>>,
    /// For each return value encoded so far, the actors whose handles it contains (up to the
    /// last that contains any).
    actors: std::cell::RefCell<Vec<Vec<prism_graph::ActorId>>>,
    /// For a streaming generator's run: where its items go, and how many an earlier run
    /// delivered already.
    sink: Option<(&'a dyn ItemSink, u32)>,
    /// Told of the references inside each return value as it is encoded.
    escape: Option<Escape<'a>>,
}

/// Told of the references and actor handles inside a return value as it is encoded, while
/// the value still holds them: the value (and with it maybe their last reference or handle in
/// the worker) goes before the call's end is stored, so a worker hands the objects among them
/// it owns to its node then, and holds them all until the end is queued.
pub(crate) type Escape<'a> = &'a dyn Fn(&crate::value::Nested);

/// An [`Escape`] an async call keeps across its awaits.
pub(crate) type SharedEscape = Arc<dyn Fn(&crate::value::Nested)>;

impl std::fmt::Debug for Invocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Invocation({} {})", self.task, self.function)
    }
}

impl Invocation<'_> {
    /// Checks the number of arguments.
    pub fn expect_args(&self, n: usize) -> Result<(), TaskError> {
        if self.args.len() == n {
            Ok(())
        } else {
            Err(TaskError::InvalidValue {
                task: self.task,
                function: self.function.to_string(),
                what: "the argument list".into(),
                reason: format!("{} arguments sent, the function takes {n}", self.args.len()),
            })
        }
    }

    /// Decodes argument `index`; `desc` (`b: Vec<f64>`) names it in errors.
    pub fn arg<T: Remotable>(&self, index: usize, desc: &str) -> Result<T, TaskError> {
        T::from_bytes(self.args[index].as_slice()).map_err(|e| self.invalid_arg(index, desc, e))
    }

    /// A zero-copy view of argument `index` (a `&Archived<T>` parameter): validated, borrowed
    /// from the shared-memory segment (or the message) for the duration of the call.
    pub fn arg_archived<T: Remotable>(
        &self,
        index: usize,
        desc: &str,
    ) -> Result<&'_ rkyv::Archived<T>, TaskError> {
        T::access(self.args[index].as_slice()).map_err(|e| self.invalid_arg(index, desc, e))
    }

    fn invalid_arg(&self, index: usize, desc: &str, e: impl std::fmt::Display) -> TaskError {
        TaskError::InvalidValue {
            task: self.task,
            function: self.function.to_string(),
            what: format!("argument {index} ({desc})"),
            reason: e.to_string(),
        }
    }

    /// The error for an actor method whose state is of another type (a registry mix-up).
    pub fn wrong_state(&self) -> TaskError {
        TaskError::InvalidValue {
            task: self.task,
            function: self.function.to_string(),
            what: "the actor's state".into(),
            reason: "the worker holds another actor class".into(),
        }
    }

    /// Turns a constructor's error into the creation's failure.
    pub fn constructor_failed(&self, error: impl std::fmt::Display) -> TaskError {
        TaskError::Panicked {
            task: self.task,
            function: self.function.to_string(),
            message: format!("the constructor returned an error: {error}"),
        }
    }

    /// The values encoded and the references each contains: what the call returns.
    pub fn finish(self, values: Vec<AlignedVec>) -> Returned {
        let mut nested = self.nested.into_inner();
        nested.resize(values.len(), Vec::new());
        (values, nested, self.actors.into_inner())
    }

    /// Runs a streaming generator's items out one at a time (each stored and handed to its
    /// owner as it comes) and encodes their count, the call's one return value.
    pub fn stream<T: Remotable>(&self, items: Stream<T>) -> Result<AlignedVec, TaskError> {
        let Some((sink, skip)) = self.sink else {
            return Err(TaskError::InvalidValue {
                task: self.task,
                function: self.function.to_string(),
                what: "the call".into(),
                reason: "the function makes a stream, and its caller did not ask for one (built from other code?)".into(),
            });
        };
        let fail = |message: String| TaskError::Panicked {
            task: self.task,
            function: self.function.to_string(),
            message: format!("the stream's generator failed: {message}"),
        };
        let count = crate::generator::drive(items, sink, skip, fail)?;
        self.ret(&count, 0)
    }

    /// Encodes return value `index`.
    pub fn ret<T: Remotable>(&self, value: &T, index: usize) -> Result<AlignedVec, TaskError> {
        let (bytes, nested) = crate::value::collect_nested(|| value.to_bytes());
        // While `value` still holds them (it is dropped before the call's end is stored).
        if let Some(escape) = self.escape
            && !(nested.objects.is_empty() && nested.actors.is_empty())
        {
            escape(&nested);
        }
        let mut all = self.nested.borrow_mut();
        if all.len() <= index {
            all.resize(index + 1, Vec::new());
        }
        all[index] = nested.objects;
        let mut actors = self.actors.borrow_mut();
        if !nested.actors.is_empty() || index < actors.len() {
            if actors.len() <= index {
                actors.resize(index + 1, Vec::new());
            }
            actors[index] = nested.actors;
        }
        bytes.map_err(|e| TaskError::InvalidValue {
            task: self.task,
            function: self.function.to_string(),
            what: format!("return value {index} ({})", std::any::type_name::<T>()),
            reason: e.to_string(),
        })
    }
}

impl Registry {
    /// Everything registered in this binary.
    pub(crate) fn load() -> Self {
        Registry {
            functions: inventory::iter::<RemoteFunction>
                .into_iter()
                .map(|f| (f.name, f))
                .collect(),
            classes: inventory::iter::<ActorClass>
                .into_iter()
                .map(|c| (c.name, c))
                .collect(),
            methods: inventory::iter::<ActorMethod>
                .into_iter()
                .map(|m| (m.name, m))
                .collect(),
        }
    }
}

/// The code `exec` names in `table` (of `what`, for errors), its signature checked against the
/// caller's.
fn lookup<T>(
    table: &HashMap<&'static str, &'static T>,
    exec: &Execute,
    what: &str,
    hash: impl Fn(&T) -> u64,
    name: impl Fn(&'static T) -> &'static &'static str,
) -> Result<&'static T, TaskError> {
    let found: &'static T = table
        .get(exec.function.as_str())
        .ok_or_else(|| unknown(exec, what, table.len()))?;
    if hash(found) != exec.fn_hash {
        return Err(signature_differs(exec, hash(found)));
    }
    RUNNING.store(
        std::ptr::from_ref(name(found)).cast_mut(),
        Ordering::Relaxed,
    );
    Ok(found)
}

/// The actor method `exec` calls (see [`lookup`]).
fn lookup_method(registry: &Registry, exec: &Execute) -> Result<&'static ActorMethod, TaskError> {
    lookup(
        &registry.methods,
        exec,
        "actor methods",
        |m| m.hash,
        |m| &m.name,
    )
}

/// The name of the function, constructor or method this process last started (a worker's
/// output is labelled with it): the `name` field of a registered entry, which lives as long
/// as the program (`inventory` entries are statics).
static RUNNING: AtomicPtr<&'static str> = AtomicPtr::new(std::ptr::null_mut());

/// What this process runs now, or ran last (see [`RUNNING`]).
pub(crate) fn running() -> Option<&'static str> {
    let name = RUNNING.load(Ordering::Relaxed);
    // SAFETY: RUNNING only ever holds null or a pointer made from a `&'static &'static str`
    // (the `name` field of a `'static` registry entry, see `lookup`): valid, never written
    // through, for the whole run.
    (!name.is_null()).then(|| unsafe { *name })
}

fn unknown(exec: &Execute, what: &str, count: usize) -> TaskError {
    TaskError::UnknownFunction {
        task: exec.task,
        function: exec.function.clone(),
        detail: format!(
            "{count} {what} are registered in {}",
            std::env::current_exe()
                .map_or_else(|_| "this binary".into(), |p| p.display().to_string())
        ),
    }
}

fn signature_differs(exec: &Execute, ours: u64) -> TaskError {
    TaskError::UnknownFunction {
        task: exec.task,
        function: exec.function.clone(),
        detail: format!(
            "its signature differs: the caller expects hash {:016x}, the worker has {ours:016x}",
            exec.fn_hash
        ),
    }
}

/// Runs one task with its resolved arguments: a function call, an actor's constructor (which
/// fills `actor`) or a method call on `actor`. Looks the code up, checks its signature, catches
/// a panic, and checks the number of return values.
pub(crate) fn execute(
    registry: &Registry,
    actor: &mut Actor,
    exec: &Execute,
    args: &[ObjectBytes],
    sink: Option<&dyn ItemSink>,
    escape: Option<Escape<'_>>,
) -> Result<Returned, TaskError> {
    let _span =
        tracing::debug_span!("task", task = %exec.task, function = %exec.function).entered();
    let call = Invocation {
        task: exec.task,
        function: &exec.function,
        args,
        nested: Default::default(),
        actors: Default::default(),
        sink: sink.zip(exec.stream.map(|run| run.skip)),
        escape,
    };
    let values = match exec.kind {
        TaskKind::Normal => {
            let function = lookup(
                &registry.functions,
                exec,
                "remote functions",
                |f| f.hash,
                |f| &f.name,
            )?;
            guard(&call, |call| (function.invoke)(call))?
        }
        TaskKind::ActorCreation { .. } => {
            let class = lookup(
                &registry.classes,
                exec,
                "actor classes",
                |c| c.hash,
                |c| &c.name,
            )?;
            let state = guard(&call, |call| (class.create)(call))?;
            *actor = match exec.kind {
                TaskKind::ActorCreation {
                    max_concurrency, ..
                } if class.is_async => Actor::Async(state, max_concurrency.max(1)),
                TaskKind::ActorCreation {
                    max_concurrency, ..
                } if max_concurrency > 1 => match (class.share)(state) {
                    Ok(shared) => Actor::Shared(shared, max_concurrency),
                    Err(_) => {
                        return Err(TaskError::InvalidOptions {
                            task: exec.task,
                            function: exec.function.clone(),
                            reason: format!(
                                "max_concurrency = {max_concurrency} runs calls on several threads, so the actor type must be Sync, and {} is not",
                                exec.function
                            ),
                        });
                    }
                },
                _ => Actor::Alone(state),
            };
            Vec::new()
        }
        TaskKind::ActorCall(_) => {
            let method = lookup_method(registry, exec)?;
            match actor {
                Actor::Alone(state) => guard(&call, |call| (method.invoke)(state, call))?,
                Actor::Shared(shared, _) => {
                    guard(&call, |call| (method.invoke_shared)(shared, call))?
                }
                Actor::Async(..) | Actor::None => {
                    return Err(TaskError::InvalidValue {
                        task: exec.task,
                        function: exec.function.clone(),
                        what: "the actor's state".into(),
                        reason: "this worker holds no actor".into(),
                    });
                }
            }
        }
    };
    check_count(
        exec.task,
        &exec.function,
        exec.num_returns,
        call.finish(values),
    )
}

/// Checks that a call returned as many values as its caller expects.
fn check_count(
    task: TaskId,
    function: &str,
    expected: u32,
    returned: Returned,
) -> Result<Returned, TaskError> {
    if returned.0.len() == expected as usize {
        return Ok(returned);
    }
    Err(TaskError::InvalidValue {
        task,
        function: function.to_string(),
        what: "return values".into(),
        reason: format!(
            "the function returns {} values, the caller expects {expected}",
            returned.0.len(),
        ),
    })
}

/// Starts a call of an async actor's method: looks the method up and checks its signature,
/// then gives the call as a future that owns its arguments, turns a panic into `Panicked` and
/// checks the number of return values.
pub(crate) fn start_async(
    registry: &Registry,
    actor: &AsyncActor,
    exec: &Execute,
    args: Vec<ObjectBytes>,
    sink: Option<Arc<dyn ItemSink>>,
    escape: Option<SharedEscape>,
) -> Result<impl Future<Output = Result<Returned, TaskError>> + use<>, TaskError> {
    let method = lookup_method(registry, exec)?;
    let invoke = method.invoke_async.ok_or_else(|| TaskError::InvalidValue {
        task: exec.task,
        function: exec.function.clone(),
        what: "the actor's state".into(),
        reason: "the method belongs to a class without async methods".into(),
    })?;
    let (task, function, expected) = (exec.task, exec.function.clone(), exec.num_returns);
    let data = CallData {
        task,
        function: function.clone(),
        args,
        sink: sink.zip(exec.stream.map(|run| run.skip)),
        escape,
    };
    let call = match std::panic::catch_unwind(AssertUnwindSafe(|| invoke(actor.clone(), data))) {
        Ok(call) => Guarded::Running(call),
        Err(payload) => Guarded::Panicked(Some(payload)),
    };
    Ok(async move {
        let returned = call.await.map_err(|payload| TaskError::Panicked {
            task,
            function: function.clone(),
            message: panic_message(payload.as_ref()),
        })??;
        check_count(task, &function, expected, returned)
    })
}

/// An async call whose panics, in its start or in any poll, end it with the panic's payload.
enum Guarded {
    Running(AsyncCall),
    Panicked(Option<Box<dyn std::any::Any + Send>>),
}

impl Future for Guarded {
    type Output = std::thread::Result<Result<Returned, TaskError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Guarded::Running(call) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
                    Err(payload) => Poll::Ready(Err(payload)),
                }
            }
            Guarded::Panicked(payload) => {
                Poll::Ready(Err(payload.take().unwrap_or_else(|| Box::new(()))))
            }
        }
    }
}

/// A panic's message (its payload when that is a string).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Calls `body`, turning a panic into `Panicked` with its message.
fn guard<R>(
    call: &Invocation<'_>,
    body: impl FnOnce(&Invocation<'_>) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| body(call))) {
        Ok(result) => result,
        Err(payload) => Err(TaskError::Panicked {
            task: call.task,
            function: call.function.to_string(),
            message: panic_message(payload.as_ref()),
        }),
    }
}
