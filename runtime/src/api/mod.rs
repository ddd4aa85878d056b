//! The user's API: starting and stopping the local cluster, `put`, `get`, `wait`, `cancel` and
//! their blocking twins, and the entry points `#[prism::main]` expands to.

pub(crate) mod actor;
pub(crate) mod call;
mod detached;
pub(crate) mod memory;
pub(crate) mod object_ref;
pub(crate) mod placement;
mod spin;
pub mod state;
pub(crate) mod state_server;
pub(crate) mod stream;

use std::time::Duration;

use prism_graph::ObjectId;

use crate::config::Config;
use crate::context::{self, Context};
use crate::node::Core;
use crate::proto::owner::Slot;
use crate::value::Remotable;
use crate::{Error, Result};
use object_ref::{ArchivedRef, ObjectRef, RawRef, decode};

/// What [`wait`] returns: the references that are done and those that are not, each in the
/// order given.
pub type WaitResult<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// The references [`wait`] splits: a `Vec` is moved into the result (nothing is cloned, as in
/// `pending = wait(pending, 1, None)?.1`); a slice, a `&Vec` or an array reference is cloned.
pub trait IntoRefs<T> {
    /// The references as an owned list.
    fn into_refs(self) -> Vec<ObjectRef<T>>;
}

impl<T> IntoRefs<T> for Vec<ObjectRef<T>> {
    fn into_refs(self) -> Vec<ObjectRef<T>> {
        self
    }
}

impl<T> IntoRefs<T> for &[ObjectRef<T>] {
    fn into_refs(self) -> Vec<ObjectRef<T>> {
        self.to_vec()
    }
}

impl<T> IntoRefs<T> for &Vec<ObjectRef<T>> {
    fn into_refs(self) -> Vec<ObjectRef<T>> {
        self.clone()
    }
}

impl<T, const N: usize> IntoRefs<T> for &[ObjectRef<T>; N] {
    fn into_refs(self) -> Vec<ObjectRef<T>> {
        self.to_vec()
    }
}

impl<T, const N: usize> IntoRefs<T> for [ObjectRef<T>; N] {
    fn into_refs(self) -> Vec<ObjectRef<T>> {
        self.into()
    }
}

/// Starts Prism with the default [`Config`]: an embedded local cluster whose node has the
/// host's cores as CPUs (or `PRISM_NUM_CPUS`).
///
/// In a worker process (started by a node from this program) this enters the worker loop and
/// never returns, so call it first thing in `main`, or use `#[prism::main]`.
pub fn init() -> Result<()> {
    init_with(Config::default())
}

/// Starts Prism with `config`; see [`init`].
pub fn init_with(config: Config) -> Result<()> {
    if let Some(Context::Worker(_)) = context::try_current() {
        return Ok(()); // a task calling init inside a worker: already up
    }
    enter_worker_if_spawned();
    install_tracing();
    if context::is_set() {
        return Err(Error::AlreadyInitialized);
    }
    let core = Core::start(config)?;
    if let Err(e) = context::set_driver(core.clone()) {
        core.shutdown();
        return Err(e);
    }
    core.handle().spawn(stop_on_signal());
    core.handle().spawn(state_server::serve());
    Ok(())
}

/// SIGINT or SIGTERM at the driver: stops its workers and removes its shared-memory session
/// (as [`shutdown`]), then exits with the shell's code for the signal (130 or 143). A
/// second signal while that runs exits at once.
async fn stop_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("cannot watch SIGINT/SIGTERM ({e}): a signal leaves the session");
            return;
        }
    };
    let (name, code) = tokio::select! {
        _ = interrupt.recv() => ("SIGINT", 130),
        _ = terminate.recv() => ("SIGTERM", 143),
    };
    tracing::info!("{name}: stopping the workers and removing the session");
    // Not on this runtime's thread: shutting down stops the runtime.
    std::thread::spawn(move || {
        shutdown();
        std::process::exit(code)
    });
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    std::process::exit(code)
}

/// Whether Prism is initialized in this process.
pub fn is_initialized() -> bool {
    context::is_set()
}

/// Stops the local cluster: workers exit, pending objects are dropped. A later [`init`] starts
/// a new one. Does nothing in a worker or when not initialized.
pub fn shutdown() {
    if let Some(Context::Worker(_)) = context::try_current() {
        return;
    }
    if let Some(Context::Driver(core)) = context::take() {
        core.shutdown();
        state_server::stop();
    }
}

fn install_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Stores `value` as an immutable object and returns its reference.
pub fn put<T: Remotable>(value: T) -> Result<ObjectRef<T>> {
    put_ref(&value)
}

/// Stores a copy of `*value` as an immutable object (no clone needed first).
pub fn put_ref<T: Remotable>(value: &T) -> Result<ObjectRef<T>> {
    let ctx = context::current()?;
    let id = ObjectId::new(ctx.next_task_id(), 0);
    ctx.put(id, value)?;
    Ok(ObjectRef::from_raw(RawRef::adopt(id)))
}

/// Waits until the object is ready or failed.
async fn fetch_one(id: ObjectId) -> Result<Slot> {
    let mut known = [None];
    context::current()?
        .fetch(&[id], &mut known[..], 1, None)
        .await?;
    let [slot] = known;
    slot.ok_or_else(|| Error::UnknownObject(id.to_string()))
}

/// Waits for the object's value.
pub async fn get<T: Remotable>(r: &ObjectRef<T>) -> Result<T> {
    let id = r.id();
    let slot = fetch_one(id).await?;
    decode(id, slot)
}

/// Waits for the object and returns a zero-copy view of its archived form: no deserialization,
/// and for large objects no copy at all (the view reads the node's shared memory).
pub async fn get_archived<T: Remotable>(r: &ObjectRef<T>) -> Result<ArchivedRef<T>> {
    let slot = fetch_one(r.id()).await?;
    ArchivedRef::new(r.raw().clone(), slot)
}

/// Blocking twin of [`get_archived`].
pub fn get_archived_blocking<T: Remotable>(r: &ObjectRef<T>) -> Result<ArchivedRef<T>> {
    spin::block_on(get_archived(r))
}

/// Waits for the object's value, at most `timeout`. The timeout error says where the task is
/// (queued with its demand, running, or infeasible on this node).
pub async fn get_timeout<T: Remotable>(r: &ObjectRef<T>, timeout: Duration) -> Result<T> {
    let ctx = context::current()?;
    let id = r.id();
    let mut known = [None];
    ctx.fetch(&[id], &mut known[..], 1, Some(timeout)).await?;
    let [slot] = known;
    match slot {
        Some(slot) => decode(id, slot),
        None => Err(timeout_error(&ctx, id, timeout)),
    }
}

fn timeout_error(ctx: &Context, id: ObjectId, waited: Duration) -> Error {
    let (task_desc, state) = match ctx {
        Context::Driver(core) => core.describe_wait(id),
        Context::Worker(_) => (id.task.to_string(), "the object is not ready".to_string()),
    };
    Error::Timeout {
        object: id.to_string(),
        task_desc,
        waited,
        state,
    }
}

/// Waits for every value, in order; the first failure is returned.
pub async fn get_all<T: Remotable>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    let ctx = context::current()?;
    let ids: Vec<ObjectId> = refs.iter().map(ObjectRef::id).collect();
    let mut known: Vec<Option<Slot>> = vec![None; ids.len()];
    ctx.fetch(&ids, &mut known[..], ids.len(), None).await?;
    ids.into_iter()
        .zip(known)
        .map(|(id, slot)| {
            let slot = slot.ok_or_else(|| Error::UnknownObject(id.to_string()))?;
            decode(id, slot)
        })
        .collect()
}

/// Waits until `num_returns` of `refs` are done (ready or failed) or `timeout` passes, and
/// splits them into (done, not done), each in the order given.
pub async fn wait<T>(
    refs: impl IntoRefs<T>,
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<WaitResult<T>> {
    let refs = refs.into_refs();
    if num_returns > refs.len() {
        return Err(Error::InvalidArgument(format!(
            "wait for {num_returns} of {} references",
            refs.len()
        )));
    }
    let ctx = context::current()?;
    let ids: Vec<ObjectId> = refs.iter().map(ObjectRef::id).collect();
    let mut known = vec![false; ids.len()];
    ctx.fetch(&ids, &mut known[..], num_returns, timeout)
        .await?;
    let mut done = Vec::with_capacity(num_returns);
    let mut pending = Vec::with_capacity(refs.len() - num_returns);
    for (r, slot) in refs.into_iter().zip(known) {
        if slot && done.len() < num_returns {
            done.push(r);
        } else {
            pending.push(r);
        }
    }
    Ok((done, pending))
}

/// Cancels the task making the object: a task that has not started never runs and its
/// objects fail with `Cancelled`. A running task keeps running (use [`cancel_force`]).
pub fn cancel<T>(r: &ObjectRef<T>) -> Result<()> {
    context::current()?.cancel(r.id(), false)
}

/// Like [`cancel`], and a running task's worker process is killed (and replaced).
pub fn cancel_force<T>(r: &ObjectRef<T>) -> Result<()> {
    context::current()?.cancel(r.id(), true)
}

/// Blocking twin of [`get`].
pub fn get_blocking<T: Remotable>(r: &ObjectRef<T>) -> Result<T> {
    spin::block_on(get(r))
}

/// Blocking twin of [`get_timeout`].
pub fn get_timeout_blocking<T: Remotable>(r: &ObjectRef<T>, timeout: Duration) -> Result<T> {
    spin::block_on(get_timeout(r, timeout))
}

/// Blocking twin of [`get_all`].
pub fn get_all_blocking<T: Remotable>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    spin::block_on(get_all(refs))
}

/// Blocking twin of [`wait`].
pub fn wait_blocking<T>(
    refs: impl IntoRefs<T>,
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<WaitResult<T>> {
    spin::block_on(wait(refs, num_returns, timeout))
}

/// Number of objects the driver's owner tracks right now (values it holds plus pending
/// returns). Useful to check that dropped references free their objects.
pub fn owned_object_count() -> Result<usize> {
    in_driver("the driver's object count", |core| core.object_count())
}

/// How many messages the driver has received from worker processes since `init`: from this
/// host's workers and, relayed by their nodes, from every other node's. Each task the driver
/// owns costs it a few (its result, its worker's wait in `get`, the references it holds), and
/// today so does each task a worker submits, because the driver owns those too. Known in the
/// driver.
pub fn worker_messages_received() -> Result<u64> {
    in_driver("the messages the driver received", |core| {
        core.worker_messages()
    })
}

/// How many of the messages [`worker_messages_received`] counts came through the workers'
/// nodes (a node daemon relays its workers' links to the driver) rather than on the driver's
/// direct links to them: 0 on an embedded cluster. Known in the driver.
pub fn worker_messages_relayed() -> Result<u64> {
    in_driver("the messages relayed to the driver", |core| {
        core.relayed_messages()
    })
}

/// What `known` reads off the driver's node; in a worker, an error saying that `what` is
/// only known in the driver.
fn in_driver<R>(what: &str, known: impl FnOnce(&crate::node::Core) -> R) -> Result<R> {
    match context::current()? {
        Context::Driver(core) => Ok(known(&core)),
        Context::Worker(_) => Err(Error::InvalidArgument(format!(
            "{what} is only known in the driver"
        ))),
    }
}

/// The cluster's total resources by name (`CPU`, `GPU`, custom ones), as Ray's
/// `cluster_resources()`. Known in the driver.
pub fn cluster_resources() -> Result<std::collections::BTreeMap<String, f64>> {
    resources_of(|(total, _)| total)
}

/// The resources free right now by name, as Ray's `available_resources()`. Known in the
/// driver.
pub fn available_resources() -> Result<std::collections::BTreeMap<String, f64>> {
    resources_of(|(_, available)| available)
}

fn resources_of(
    pick: impl FnOnce((prism_graph::Resources, prism_graph::Resources)) -> prism_graph::Resources,
) -> Result<std::collections::BTreeMap<String, f64>> {
    in_driver("the cluster's resources", |core| {
        pick(core.resources())
            .iter()
            .map(|(name, amount)| (name.to_string(), amount.as_f64()))
            .collect()
    })
}

/// The job's namespace ([`Config::namespace`]): where the names of actors go whose creation
/// or lookup names none, as Ray's `get_runtime_context().namespace`. Known in the driver.
pub fn namespace() -> Result<String> {
    in_driver("the job's namespace", |core| core.namespace())
}

/// The names of the nodes this job can run on now (alive and not leaving): the embedded node,
/// or a cluster's nodes, those that joined after the driver included. Known in the driver.
pub fn nodes() -> Result<Vec<String>> {
    in_driver("the cluster's nodes", |core| core.node_names())
}

/// The name of the cluster node this process runs on, as `prism start --name` (or the
/// default `node-HOST-PID`, or `head`) set it: known in the workers a cluster's node started;
/// `None` in a driver and on an embedded local cluster.
pub fn node_name() -> Option<String> {
    std::env::var(crate::process::ENV_NODE_NAME).ok()
}

/// Whether this process is the driver (not a worker).
pub fn is_driver() -> bool {
    !crate::worker::is_worker_process()
}

/// In a process a node started as a worker: run the worker loop and exit; in one the head
/// started to host detached actors, serve the head's orders and exit. Elsewhere: return.
#[doc(hidden)]
pub fn enter_worker_if_spawned() {
    if crate::worker::is_worker_process() && !context::is_set() {
        install_tracing();
        crate::worker::run(context::set_worker);
    }
    if detached::is_detached_host() && !context::is_set() {
        install_tracing();
        detached::run_host();
    }
}

/// The body of an async `#[prism::main]`: init, run the body on Prism's runtime, shut down.
#[doc(hidden)]
pub fn run_main<F: std::future::Future>(body: F) -> F::Output {
    enter_worker_if_spawned();
    if let Err(e) = init() {
        panic!("prism::main could not start Prism: {e}");
    }
    let handle = match context::current() {
        Ok(Context::Driver(core)) => core.handle().clone(),
        _ => unreachable!("init made this process a driver"),
    };
    let output = handle.block_on(body);
    shutdown();
    output
}

/// The body of a sync `#[prism::main]`: init, run, shut down.
#[doc(hidden)]
pub fn run_main_sync<R>(body: impl FnOnce() -> R) -> R {
    enter_worker_if_spawned();
    if let Err(e) = init() {
        panic!("prism::main could not start Prism: {e}");
    }
    let output = body();
    shutdown();
    output
}

/// Runs an async remote function's future to completion on the worker's thread.
#[doc(hidden)]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok();
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        return nested_block_on(future);
    }
    RUNTIME.with(|rt| match rt {
        Some(rt) => rt.block_on(future),
        None => futures::executor::block_on(future),
    })
}

/// [`block_on`] for a task that runs on top of a blocked async task (a worker blocked in `get`
/// runs the tasks it waits for on top of itself): this thread is inside the outer task's
/// runtime, which can be neither re-entered nor nested in another executor that checks, so the
/// future is polled by the spinning executor of the blocking API, with a one-thread runtime
/// entered for its timers and IO. It runs outside tokio's cooperative budget: the outer task's
/// budget would run out after a hundred-odd nested awaits, and the wake tokio defers until the
/// outer task yields would never come.
fn nested_block_on<F: std::future::Future>(future: F) -> F::Output {
    static NESTED: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    let runtime = NESTED.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prism-nested")
            .enable_all()
            .build()
            .ok()
    });
    let _entered = runtime.as_ref().map(|rt| rt.enter());
    spin::block_on(tokio::task::unconstrained(future))
}
