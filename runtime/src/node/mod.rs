//! The node daemon of the embedded cluster, living in the driver process: it owns the local
//! scheduler, the worker pool and, in this single-node form, the owner's books. All state sits
//! behind one short-held lock and is changed by events (a submit, a frame from a worker, a
//! worker's exit); every event ends in [`State::settle`], which schedules, encodes what must be
//! sent and hands it to the per-worker writer tasks.

mod actors;
mod cluster;
pub(crate) mod host;
pub(crate) mod link;
mod object_manager;
pub(crate) mod placement;
mod remote;
pub(crate) mod worker_pool;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use prism_graph::{
    ActorId, IdMap, IdSet, ObjectId, Resources, TaskError, TaskId, TaskKind, TaskSpec, TaskState,
};
use prism_transport::{ArchivedToNode, Frame, ObjectValue, ToNode, ToWorker, encode_frame};

use crate::config::Config;
use crate::owner::{FreedFile, Known, Owner, Slot};
use crate::proto::nodes::{NodeIdx, Nodes};
use crate::proto::scheduler::{Action, Admission, Placement, WorkerId};
use crate::store::{self, ObjectBytes};
use crate::{Error, Result};
pub(crate) use actors::ActorSetup;

/// The driver's owner number.
pub(crate) const DRIVER_OWNER: u32 = 0;
/// The owner number of tasks the node makes itself (actor restarts).
const NODE_OWNER: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Link {
    writer: Option<Arc<link::LinkWriter>>,
    pid: Option<u32>,
    /// Signals the process, when this host started it (through its pidfd).
    process: Option<Arc<crate::process::ProcessHandle>>,
    connected: bool,
    eof: bool,
    exit: Option<String>,
    /// The node asked it to exit: its end is expected, not a failure.
    retiring: bool,
}

/// Frames for a worker on another node held back until objects they name are in that node's
/// store (in order: everything after a held frame waits too).
#[derive(Debug, Default)]
struct Held {
    waiting: IdSet<ObjectId>,
    frames: Vec<u8>,
}

#[derive(Debug)]
struct State {
    owner: Owner,
    /// The files behind the objects: segments, their pool, spilled copies.
    files: store::ObjectFiles,
    nodes: Nodes,
    /// In a joined cluster: how to reach the nodes.
    remote: Option<remote::Remote>,
    /// Nodes whose stores hold a copy of an object (joined cluster).
    locations: IdMap<ObjectId, Vec<NodeIdx>>,
    /// Fetches of objects into nodes' stores in progress, with the node they pull from (none:
    /// this process's store).
    node_fetches: HashMap<(ObjectId, NodeIdx), Option<NodeIdx>>,
    held: IdMap<WorkerId, Held>,
    links: IdMap<WorkerId, Link>,
    outbox: IdMap<WorkerId, Vec<u8>>,
    spawn: std::sync::mpsc::Sender<WorkerId>,
    /// Workers that died before their handshake, in a row.
    startup_failures: u32,
    /// Surplus idle workers seen at the last tick: stopped if still surplus at the next.
    retire_candidates: Vec<WorkerId>,
    actors: IdMap<ActorId, actors::ActorRecord>,
    /// Placement groups made by the driver, by number.
    groups: HashMap<u64, crate::proto::placement::Group>,
    next_group: u64,
    names: HashMap<String, ActorId>,
    /// Actor creation attempts (first starts and restarts) by task.
    creations: IdMap<TaskId, ActorId>,
    /// Actors whose queues may have calls ready to send.
    actors_to_pump: IdSet<ActorId>,
    /// Counter of the node's own task ids (actor restarts).
    internal_seq: u64,
    shutting_down: bool,
}

/// The embedded node and owner.
#[derive(Debug)]
pub(crate) struct Core {
    state: Mutex<State>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    seq: AtomicU64,
    config: Config,
    /// The session's directory of shared-memory segments.
    store_dir: std::path::PathBuf,
    /// The cluster the driver joined, if it did.
    cluster: Option<Arc<cluster::Joined>>,
    /// The worker connections, for a waiting thread to read.
    links: link::LinkPoll,
}

/// Where a wait for objects stands between polls (see [`Core::poll_objects`]).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// When every id is needed: the first not known yet.
    cursor: usize,
    /// When some are: how many are known, and a waker per pending id that notes its index.
    count: usize,
    wakers: Vec<Option<Waker>>,
    marks: Option<Arc<Marks>>,
}

/// The indices of a wait's ids whose objects completed since its last poll, and the waker of
/// the task that waits.
#[derive(Debug)]
struct Marks {
    noted: Mutex<Vec<usize>>,
    waker: Mutex<Waker>,
}

/// The waker one pending id of a wait gets: it notes the id's index, then wakes the waiter.
struct Mark {
    index: usize,
    marks: Arc<Marks>,
}

impl std::task::Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.marks.noted.lock().push(self.index);
        self.marks.waker.lock().wake_by_ref();
    }
}

/// How many unblocked workers a node of `total` resources keeps: one per CPU.
fn soft_limit_of(total: &Resources) -> usize {
    total.cpu.as_f64().ceil().max(1.0) as usize
}

/// How often the node looks for surplus idle workers; one idle for two ticks is stopped.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Segments pooled for large puts are freed after this long without one.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// How many workers may die before their handshake, in a row, before queued work fails.
const MAX_STARTUP_FAILURES: u32 = 3;

impl Core {
    /// Starts the node: its runtime, its socket and its first workers. With an address (in
    /// `config` or `PRISM_ADDRESS`) it joins that cluster instead and schedules onto its nodes.
    pub(crate) fn start(mut config: Config) -> Result<Arc<Core>> {
        crate::process::return_large_frees();
        // Read the host's memory once: every large put checks the capacity.
        config.object_store_memory = Some(config.object_store_bytes());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prism-node")
            .enable_all()
            .build()
            .map_err(|e| Error::Startup(format!("tokio runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let store_dir = store::create_session_dir().map_err(|e| {
            Error::Startup(format!("cannot create the object store's directory: {e}"))
        })?;
        let joined = match config.cluster_address() {
            Some(address) => {
                match runtime.block_on(cluster::join(&config, &address, store_dir.clone())) {
                    Ok(joined) => Some(Arc::new(joined)),
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&store_dir);
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let mut nodes = Nodes::default();
        match &joined {
            None => {
                // Local workers are this very file: its path-based fingerprint.
                crate::process::use_content_fingerprint(0);
                let total = config.node_resources()?;
                let soft_limit = soft_limit_of(&total);
                let max_workers = config.max_workers_for(total.cpu.as_f64());
                nodes.add(
                    "local".into(),
                    total,
                    config.max_inflight(),
                    soft_limit,
                    max_workers,
                );
            }
            Some(joined) => {
                for node in &joined.nodes {
                    let soft_limit = soft_limit_of(&node.total);
                    nodes.add(
                        node.name.clone(),
                        node.total.clone(),
                        config.max_inflight(),
                        soft_limit,
                        config.max_workers_for(node.total.cpu.as_f64()),
                    );
                }
            }
        }
        let (spawn_tx, spawn_rx) = std::sync::mpsc::channel();
        let links = link::LinkPoll::new()
            .map_err(|e| Error::Startup(format!("cannot poll worker connections: {e}")))?;
        let core = Arc::new_cyclic(|me: &Weak<Core>| Core {
            state: Mutex::new(State {
                owner: Owner::new(config.object_store_bytes()),
                files: store::ObjectFiles::new(store_dir.clone(), config.object_store_bytes() / 4),
                nodes,
                remote: joined
                    .as_ref()
                    .map(|j| remote::Remote::new(j.clone(), handle.clone(), me.clone())),
                locations: IdMap::default(),
                node_fetches: HashMap::new(),
                held: IdMap::default(),
                links: IdMap::default(),
                outbox: IdMap::default(),
                spawn: spawn_tx,
                startup_failures: 0,
                retire_candidates: Vec::new(),
                actors: IdMap::default(),
                groups: HashMap::new(),
                next_group: 0,
                names: HashMap::new(),
                creations: IdMap::default(),
                actors_to_pump: IdSet::default(),
                internal_seq: 0,
                shutting_down: false,
            }),
            runtime: Mutex::new(Some(runtime)),
            handle,
            seq: AtomicU64::new(1),
            config,
            store_dir,
            cluster: joined.clone(),
            links,
        });
        if joined.is_none() {
            worker_pool::start(&core, spawn_rx)?;
        }
        if let Some(joined) = &joined {
            let _guard = core.handle.enter();
            for idx in 0..joined.nodes.len() {
                joined.watch(idx, Arc::downgrade(&core));
            }
            joined.watch_health(IDLE_TICK, Arc::downgrade(&core));
        }
        let ticker = Arc::downgrade(&core);
        core.handle.spawn(async move {
            let mut interval = tokio::time::interval(IDLE_TICK);
            loop {
                interval.tick().await;
                match ticker.upgrade() {
                    Some(core) => core.tick(),
                    None => break,
                }
            }
        });
        {
            // Start the workers the CPUs can use right away, so the first tasks do not wait.
            let mut state = core.state.lock();
            for idx in 0..state.nodes.len() {
                let Some(node) = state.nodes.get(idx) else {
                    continue;
                };
                for _ in 0..soft_limit_of(node.sched.total()) {
                    state.start_worker(idx);
                }
            }
            state.settle();
        }
        let (total, _) = core.resources();
        match &core.cluster {
            None => tracing::info!(resources = %total, "local cluster started"),
            Some(j) => {
                tracing::info!(resources = %total, nodes = j.nodes.len(), job = j.job, "joined a cluster")
            }
        }
        Ok(core)
    }

    /// The worker connections.
    fn links(&self) -> &link::LinkPoll {
        &self.links
    }

    /// Reads what workers sent, on the calling thread and without blocking (for a thread that
    /// spins while it waits). True when something was handled.
    pub(crate) fn poll_links(&self) -> bool {
        self.links.poll(self)
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn store_dir(&self) -> &std::path::Path {
        &self.store_dir
    }

    pub(crate) fn next_task_id(&self) -> TaskId {
        TaskId::new(DRIVER_OWNER, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Submits a task owned by the driver (`failed`: it could not even be built).
    pub(crate) fn submit(&self, spec: TaskSpec, failed: Option<TaskError>) {
        let mut state = self.state.lock();
        state.submit(spec, None, failed);
        state.settle();
    }

    /// Makes room for `size` more bytes in the shared-memory store, spilling least recently
    /// used objects to disk; `ObjectStoreFull` when even that cannot make it fit. Returns a
    /// pooled segment of exactly `size` bytes this process still maps, already renamed to
    /// `id`'s segment, when there is one (see [`store::SegmentPool::take_mapped`]).
    pub(crate) fn reserve(&self, id: ObjectId, size: usize) -> Result<Option<memmap2::MmapMut>> {
        let mut state = self.state.lock();
        let mapped = state.files.pool.take_mapped(&self.store_dir, id, size);
        let used = state.owner.stored_bytes;
        let capacity = self.config.object_store_bytes();
        if !state.make_room(size as u64, None) {
            if mapped.is_some() {
                store::unlink(&self.store_dir, id);
            }
            return Err(Error::ObjectStoreFull {
                object: id.to_string(),
                size: size as u64,
                used,
                capacity,
            });
        }
        Ok(mapped)
    }

    /// Records a value made by `put` in the driver, with the objects it refers to.
    pub(crate) fn put(&self, id: ObjectId, bytes: ObjectBytes, nested: Vec<ObjectId>) {
        self.state
            .lock()
            .owner
            .put(id, Slot::Ready(bytes), None, nested);
    }

    /// Polls `ids` under one lock, filling in `known`, until `need` of them are known.
    /// Returns how many are known, or the first id the owner does not know. `progress` carries
    /// what earlier polls of the same wait learned, so that the whole wait costs time linear in
    /// the number of ids however many wake-ups it takes (see [`Progress`]).
    pub(crate) fn poll_objects<K: Known + ?Sized>(
        &self,
        ids: &[ObjectId],
        known: &mut K,
        need: usize,
        progress: &mut Progress,
        waker: &Waker,
    ) -> std::result::Result<usize, ObjectId> {
        let mut state = self.state.lock();
        if need >= ids.len() {
            // Every id is needed: resume at the first not known, stop at the next pending one,
            // whose completion alone wakes the caller.
            while let Some(id) = ids.get(progress.cursor) {
                if !known.has(progress.cursor) {
                    let mut polled = state.owner.poll(*id, waker);
                    if let Poll::Ready(Some(&Slot::Spilled(len))) = polled {
                        state.restore(*id, len);
                        polled = state.owner.poll(*id, waker);
                    }
                    match polled {
                        Poll::Ready(Some(ready)) => known.learn(progress.cursor, ready),
                        Poll::Ready(None) => return Err(*id),
                        Poll::Pending => return Ok(progress.cursor),
                    }
                }
                progress.cursor += 1;
            }
            return Ok(ids.len());
        }
        // Some are needed: the first poll looks at every id and leaves each pending one a
        // waker of its own, which notes its index; later polls look only at those noted.
        let marks = progress.marks.get_or_insert_with(|| {
            Arc::new(Marks {
                noted: Mutex::new(Vec::new()),
                waker: Mutex::new(waker.clone()),
            })
        });
        marks.waker.lock().clone_from(waker);
        let first = progress.wakers.is_empty();
        let look: Vec<usize> = if first {
            progress.wakers = vec![None; ids.len()];
            (0..ids.len()).collect()
        } else {
            std::mem::take(&mut *marks.noted.lock())
        };
        for i in look {
            if known.has(i) {
                if first {
                    progress.count += 1;
                }
                continue;
            }
            let mark = progress.wakers[i].get_or_insert_with(|| {
                Waker::from(Arc::new(Mark {
                    index: i,
                    marks: marks.clone(),
                }))
            });
            let mut polled = state.owner.poll(ids[i], mark);
            if let Poll::Ready(Some(&Slot::Spilled(len))) = polled {
                state.restore(ids[i], len);
                polled = state.owner.poll(ids[i], mark);
            }
            match polled {
                Poll::Ready(Some(ready)) => {
                    known.learn(i, ready);
                    progress.count += 1;
                    if first && progress.count >= need {
                        // Enough already: no waker is left anywhere for the rest.
                        break;
                    }
                }
                Poll::Ready(None) => return Err(ids[i]),
                Poll::Pending => {}
            }
        }
        Ok(progress.count)
    }

    pub(crate) fn function_of(&self, id: ObjectId) -> Option<Arc<str>> {
        self.state.lock().owner.function_of(id)
    }

    pub(crate) fn add_ref(&self, id: ObjectId) {
        self.state.lock().owner.add_ref(id);
    }

    pub(crate) fn release(&self, id: ObjectId) {
        let mut state = self.state.lock();
        state.owner.release(id);
        state.free_files();
    }

    pub(crate) fn cancel(&self, id: ObjectId, force: bool) {
        let mut state = self.state.lock();
        state.cancel(id, force);
        state.settle();
    }

    /// Creates an actor (or finds the named one, with `get_if_exists`).
    pub(crate) fn create_actor(
        &self,
        spec: TaskSpec,
        failed: Option<TaskError>,
        setup: ActorSetup,
    ) -> Result<ActorId> {
        let mut state = self.state.lock();
        let id = state.create_actor(spec, failed, setup)?;
        state.settle();
        Ok(id)
    }

    /// The named actor's id and class (counting a new handle).
    /// Makes a placement group of `bundles` (reserved now, or as soon as they fit).
    pub(crate) fn create_group(
        &self,
        bundles: Vec<Resources>,
        strategy: crate::proto::placement::PlacementStrategy,
    ) -> u64 {
        let mut state = self.state.lock();
        let id = state.create_group(bundles, strategy);
        state.settle();
        id
    }

    /// Removes placement group `id`.
    pub(crate) fn remove_group(&self, id: u64) {
        let mut state = self.state.lock();
        state.remove_group(id);
        state.settle();
    }

    /// Whether placement group `id` is reserved, or why it never will be.
    pub(crate) fn poll_group(&self, id: u64, waker: &Waker) -> Poll<Result<(), String>> {
        self.state.lock().poll_group(id, waker)
    }

    pub(crate) fn lookup_actor(&self, name: &str) -> Option<(ActorId, String)> {
        self.state.lock().lookup_actor(name)
    }

    pub(crate) fn actor_add_ref(&self, id: ActorId) {
        self.state.lock().actor_add_ref(id);
    }

    pub(crate) fn actor_release(&self, id: ActorId) {
        let mut state = self.state.lock();
        state.actor_release(id);
        state.settle();
    }

    pub(crate) fn kill_actor(&self, id: ActorId) {
        let mut state = self.state.lock();
        state.kill_actor(id);
        state.settle();
    }

    /// Where the task making `id` is, for a timeout message.
    pub(crate) fn describe_wait(&self, id: ObjectId) -> (String, String) {
        let state = self.state.lock();
        let task = id.task;
        let desc = state.owner.describe(task);
        let status = match (state.owner.task(task), state.owner.task_state(task)) {
            (Some(r), _) if r.infeasible.is_some() => r.infeasible.clone().unwrap_or_default(),
            (Some(r), Some(TaskState::Ready)) => format!(
                "the task is queued: it demands {}, the cluster has {} available of {}",
                r.spec.resources,
                state.nodes.available(),
                state.nodes.total()
            ),
            (Some(_), Some(TaskState::Waiting)) => "the task waits for its arguments".to_string(),
            (Some(r), Some(TaskState::Running)) => format!(
                "the task is running on worker {}",
                r.worker.map_or_else(|| "?".into(), |w| w.to_string())
            ),
            _ => "the object is not ready".to_string(),
        };
        (desc, status)
    }

    /// The object store's contents.
    pub(crate) fn memory(&self) -> crate::owner::memory::MemoryReport {
        let state = self.state.lock();
        crate::owner::memory::MemoryReport {
            objects: state.owner.report(),
            shared_bytes: state.owner.stored_bytes,
            capacity: self.config.object_store_bytes(),
            spilled_bytes: state.owner.spilled_bytes,
        }
    }

    /// The node's resources: (total, available now).
    pub(crate) fn resources(&self) -> (Resources, Resources) {
        let state = self.state.lock();
        (state.nodes.total(), state.nodes.available())
    }

    /// Number of objects the owner tracks (for tests of reference counting).
    pub(crate) fn object_count(&self) -> usize {
        self.state.lock().owner.object_count()
    }

    /// Stops the workers and the node.
    pub(crate) fn shutdown(&self) {
        let workers: Vec<WorkerId> = {
            let mut state = self.state.lock();
            state.shutting_down = true;
            let mut bye = Vec::new();
            let _ = encode_frame(&ToWorker::Shutdown, &mut bye);
            let mut starting = Vec::new();
            for (&worker, link) in &state.links {
                match (&link.writer, link.pid) {
                    (Some(writer), _) => writer.send(&bye),
                    // Still starting: it holds nothing to finish.
                    (None, Some(_)) if link.exit.is_none() => starting.push(worker),
                    _ => {}
                }
            }
            for worker in starting {
                state.kill_worker(worker);
            }
            state
                .links
                .iter()
                .filter(|(_, l)| l.exit.is_none() && l.pid.is_some())
                .map(|(&w, _)| w)
                .collect()
        };
        // Give workers a moment to exit on their own, then make sure.
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            let alive = self
                .state
                .lock()
                .links
                .values()
                .any(|l| l.pid.is_some() && l.exit.is_none());
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        {
            let mut state = self.state.lock();
            for worker in workers {
                if state.links.get(&worker).is_some_and(|l| l.exit.is_none()) {
                    state.kill_worker(worker);
                }
            }
        }
        if let Some(joined) = &self.cluster {
            // The nodes stop the job's workers when its connections close.
            joined.leave();
        }
        if let Some(runtime) = self.runtime.lock().take() {
            runtime.shutdown_timeout(Duration::from_millis(200));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.store_dir) {
            tracing::warn!("cannot remove the object store's directory: {e}");
        }
        let _ = std::fs::remove_dir_all(store::spill_dir_for(&self.store_dir));
        tracing::info!("local cluster stopped");
    }

    /// Stops workers that stayed idle beyond the node's CPUs (started while others were
    /// blocked in `get`) for a whole tick, and frees a segment pool that went unused.
    fn tick(&self) {
        let mut state = self.state.lock();
        if state.shutting_down {
            return;
        }
        let files = &mut state.files;
        files.pool.expire(&files.store_dir, POOL_IDLE);
        if state.owner.compact() | state.nodes.compact() {
            crate::process::return_free_memory();
        }
        let surplus = state.nodes.surplus_idle_workers();
        let (retire, keep): (Vec<WorkerId>, Vec<WorkerId>) = surplus
            .into_iter()
            .partition(|w| state.retire_candidates.contains(w));
        state.retire_candidates = keep;
        for worker in retire {
            tracing::debug!(worker, "stopping an idle worker beyond the node's CPUs");
            state.retire(worker);
        }
        for node in state.nodes.stalled() {
            tracing::info!(
                node = state.nodes.name(node),
                "every worker is blocked in get and none can run the queued tasks: starting one beyond max_workers"
            );
            state.start_worker(node);
        }
        if let Some(joined) = &self.cluster {
            let _guard = self.handle.enter();
            joined.report(state.nodes.pending(), state.nodes.used());
        }
        state.settle();
    }

    // --- events from the worker pool ---

    /// Whether the node is shutting down.
    fn stopping(&self) -> bool {
        self.state.lock().shutting_down
    }

    fn worker_spawned(
        &self,
        worker: WorkerId,
        pid: u32,
        process: Option<Arc<crate::process::ProcessHandle>>,
    ) {
        let mut state = self.state.lock();
        let link = state.links.entry(worker).or_default();
        link.pid = Some(pid);
        link.process = process;
        if state.shutting_down {
            // Started as the node stops: nothing for it to do.
            state.kill_worker(worker);
        }
    }

    /// Records a worker's handshake; a connection the node has no place for is refused, and
    /// an error only when the node is not stopping (a worker killed as the node stops may
    /// still have said hello).
    fn worker_connected(&self, worker: WorkerId, writer: Arc<link::LinkWriter>) -> bool {
        let mut state = self.state.lock();
        let Some(link) = state.links.get_mut(&worker) else {
            if state.shutting_down {
                tracing::debug!(worker, "a worker connected as the node stops");
            } else {
                tracing::error!(
                    worker,
                    "refused a connection from a worker this node did not start or already counts as ended"
                );
            }
            return false;
        };
        if link.connected {
            tracing::error!(
                worker,
                "refused a second link for a worker that said hello already"
            );
            return false;
        }
        link.writer = Some(writer);
        link.connected = true;
        state.startup_failures = 0;
        state.nodes.worker_ready(worker);
        let mut welcome = Vec::new();
        let _ = encode_frame(&ToWorker::Welcome, &mut welcome);
        state.outbox.entry(worker).or_default().extend(welcome);
        state.settle();
        true
    }

    fn frames(&self, worker: WorkerId, frames: Vec<Frame>) -> std::result::Result<(), String> {
        let mut state = self.state.lock();
        let mut result = Ok(());
        for frame in &frames {
            match frame.access::<ToNode>() {
                Ok(msg) => state.on_message(worker, msg),
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
        }
        state.settle();
        result
    }

    fn worker_eof(&self, worker: WorkerId) {
        let mut state = self.state.lock();
        if let Some(link) = state.links.get_mut(&worker) {
            link.eof = true;
            if let Some(writer) = link.writer.take() {
                writer.close();
            }
        }
        state.maybe_dead(worker);
        state.settle();
    }

    fn worker_exited(&self, worker: WorkerId, reason: String) {
        let mut state = self.state.lock();
        let link = state.links.entry(worker).or_default();
        link.exit = Some(reason);
        if !link.connected {
            link.eof = true;
        }
        state.maybe_dead(worker);
        state.settle();
    }
}

impl State {
    /// Spills least recently used shared objects that no queued or running task needs until
    /// `needed` more bytes fit (never `keep`); false when that is impossible. Pooled segments
    /// go first.
    fn make_room(&mut self, needed: u64, keep: Option<ObjectId>) -> bool {
        let room = self
            .owner
            .capacity
            .saturating_sub(self.owner.stored_bytes + needed);
        let files = &mut self.files;
        files.pool.shrink_to(&files.store_dir, room);
        while self.owner.overflow(needed) > 0 {
            let Some((id, segment)) = self.owner.spill_victim(keep) else {
                return false;
            };
            if let Err(e) = self.files.spill(id, &segment) {
                tracing::error!(object = %id, "cannot spill to {}: {e}", self.files.spill_dir.display());
                return false;
            }
            self.owner.spilled(id);
        }
        true
    }

    /// Brings a spilled object of `len` bytes back into shared memory (spilling others if
    /// needed) before it is read.
    fn restore(&mut self, id: ObjectId, len: u64) {
        if !self.make_room(len, Some(id)) {
            tracing::warn!(object = %id, "restoring beyond the store's capacity: nothing else can be spilled");
        }
        let restored = self.files.restore(id, len);
        self.owner.restored(id, restored);
    }

    fn restore_if_spilled(&mut self, id: ObjectId) {
        if let Some(len) = self.owner.spilled_len(id) {
            self.restore(id, len);
        }
    }

    /// The task's arguments as its worker gets them, restoring spilled ones first; `None`
    /// when one is gone or being rebuilt.
    fn args_of(&mut self, task: TaskId) -> Option<Vec<prism_transport::Value>> {
        loop {
            match self.owner.resolve_args(task) {
                Ok(args) => return Some(args),
                Err(Some(spilled)) => self.restore_if_spilled(spilled),
                Err(None) => return None,
            }
        }
    }

    /// Pools or removes the files of the objects the owner freed.
    fn free_files(&mut self) {
        for freed in std::mem::take(&mut self.owner.freed_files) {
            match freed {
                FreedFile::Shared { id, len, unused } => self.files.free_shared(id, len, unused),
                FreedFile::Spilled { id } => self.files.free_spilled(id),
            }
        }
    }
}

impl State {
    /// Takes a worker out of the pool and asks its process to exit.
    fn retire(&mut self, worker: WorkerId) {
        self.nodes.remove_worker(worker);
        self.encode_to(worker, &ToWorker::Shutdown);
        if let Some(link) = self.links.get_mut(&worker) {
            link.retiring = true;
        }
    }

    fn start_worker(&mut self, node: NodeIdx) {
        if self.shutting_down {
            return;
        }
        let id = self.nodes.worker_starting(node);
        self.links.insert(id, Link::default());
        if let Some(remote) = &self.remote {
            remote.spawn_worker(node, id);
        } else if self.spawn.send(id).is_err() {
            tracing::error!(worker = id, "worker spawner is gone");
        }
    }

    /// Kills a worker's process, on this host or on its node.
    fn kill_worker(&mut self, worker: WorkerId) {
        match &self.remote {
            Some(remote) => remote.kill_worker(worker),
            None => {
                if let Some(process) = self.links.get(&worker).and_then(|l| l.process.as_ref()) {
                    process.kill();
                }
            }
        }
    }

    fn next_internal_task(&mut self) -> TaskId {
        self.internal_seq += 1;
        TaskId::new(NODE_OWNER, self.internal_seq)
    }

    fn submit(&mut self, spec: TaskSpec, holder: Option<WorkerId>, failed: Option<TaskError>) {
        let task = spec.task_id;
        let kind = spec.kind;
        let ready = self.owner.submit(spec, holder);
        if let Some(error) = failed {
            self.owner.fail_unscheduled(task, error);
            if let TaskKind::ActorCreation { actor, .. } = kind {
                self.creations.remove(&task);
                self.stop_actor(actor, "its creation could not be submitted".into());
            }
            return;
        }
        if let TaskKind::ActorCall(actor) = kind {
            self.queue_call(actor, task);
        } else if ready {
            self.enqueue(task);
        }
    }

    fn enqueue(&mut self, task: TaskId) {
        let Some(record) = self.owner.task(task) else {
            return;
        };
        let demand = record.spec.resources.clone();
        let kind = record.spec.kind;
        if let TaskKind::ActorCall(actor) = kind {
            self.actors_to_pump.insert(actor);
            return;
        }
        match self.parked_for_group(task, &demand) {
            Ok(false) => {}
            Ok(true) => return,
            Err(reason) => return self.unschedulable(task, reason),
        }
        if let TaskKind::ActorCreation { .. } = kind {
            return self.enqueue_creation(task, demand);
        }
        let node = self.place(task, &demand);
        if self.nodes.submit(node, task, demand.clone()) == Admission::Infeasible {
            let message = format!(
                "the task is infeasible: it demands {demand}, the cluster has {} in total",
                self.nodes.total()
            );
            tracing::warn!(task = %self.owner.describe(task), "{message}; it waits until resources appear");
            if let Some(record) = self.owner.task_mut(task) {
                record.infeasible = Some(message);
            }
        }
    }

    fn on_message(&mut self, worker: WorkerId, msg: &ArchivedToNode) {
        match msg {
            ArchivedToNode::Done(done) => {
                for entry in done.iter() {
                    self.on_done(worker, entry.0.to_native(), &entry.1);
                }
            }
            ArchivedToNode::Submit { spec, failed } => {
                let spec = rkyv::deserialize::<TaskSpec, rkyv::rancor::Error>(spec);
                let failed = rkyv::deserialize::<Option<TaskError>, rkyv::rancor::Error>(failed);
                match (spec, failed) {
                    (Ok(spec), Ok(failed)) => self.submit(spec, Some(worker), failed),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(worker, "undecodable task submission: {e}")
                    }
                }
            }
            ArchivedToNode::Put { id, value, nested } => {
                let nested = nested.iter().map(|i| i.to_native()).collect();
                match self.value_from(worker, value) {
                    Ok(slot) => {
                        self.owner.put(id.to_native(), slot, Some(worker), nested);
                        if !self.make_room(0, None) {
                            tracing::warn!(worker, object = %id.to_native(), "the object store is over capacity and nothing can be spilled");
                        }
                    }
                    Err(e) => {
                        tracing::error!(worker, object = %id.to_native(), "cannot map a put object: {e}")
                    }
                }
            }
            ArchivedToNode::Get { ids } => {
                for id in ids.iter() {
                    self.restore_if_spilled(id.to_native());
                    self.owner.subscribe(id.to_native(), worker);
                }
            }
            ArchivedToNode::Blocked {
                depth,
                returned,
                awaiting,
            } => {
                let returned: Vec<TaskId> = returned.iter().map(|t| t.to_native()).collect();
                for &task in &returned {
                    self.owner.unstarted(task);
                }
                let awaiting: Vec<TaskId> = awaiting.iter().map(|t| t.to_native()).collect();
                self.nodes
                    .worker_blocked(worker, depth.to_native(), &returned, &awaiting);
            }
            ArchivedToNode::Unblocked { depth } => {
                self.nodes.worker_unblocked(worker, depth.to_native())
            }
            ArchivedToNode::Bounced(tasks) => {
                let tasks: Vec<TaskId> = tasks.iter().map(|t| t.to_native()).collect();
                for &task in &tasks {
                    self.owner.unstarted(task);
                }
                self.nodes.bounced(worker, &tasks);
            }
            ArchivedToNode::Hold(ids) => {
                let ids: Vec<ObjectId> = ids.iter().map(|i| i.to_native()).collect();
                self.owner.worker_holds(worker, &ids);
            }
            ArchivedToNode::Release(ids) => {
                let ids: Vec<ObjectId> = ids.iter().map(|i| i.to_native()).collect();
                self.owner.worker_released(worker, &ids);
            }
            ArchivedToNode::Cancel { id, force } => self.cancel(id.to_native(), *force),
            ArchivedToNode::Hello(_) => {
                tracing::warn!(worker, "second hello ignored");
            }
        }
    }

    fn on_done(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        outcome: &prism_transport::ArchivedOutcome,
    ) {
        if self.creations.contains_key(&task) {
            let error = match outcome {
                prism_transport::ArchivedOutcome::Returned { .. } => None,
                prism_transport::ArchivedOutcome::Failed(e) => Some(
                    rkyv::deserialize::<TaskError, rkyv::rancor::Error>(e).unwrap_or_else(|e| {
                        TaskError::InvalidValue {
                            task,
                            function: String::from("<actor constructor>"),
                            what: "the constructor's error".into(),
                            reason: e.to_string(),
                        }
                    }),
                ),
            };
            return self.creation_done(worker, task, error);
        }
        if let Some(TaskKind::ActorCall(actor)) = self.owner.task(task).map(|r| r.spec.kind) {
            self.on_task_done(worker, task, outcome);
            return self.call_done(actor, task);
        }
        self.on_task_done(worker, task, outcome);
    }

    fn on_task_done(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        outcome: &prism_transport::ArchivedOutcome,
    ) {
        self.nodes.task_done(worker, task);
        let Some(record) = self.owner.task(task) else {
            return;
        };
        if record.worker != Some(worker) {
            return; // a stale report for a task that was handed back or retried
        }
        match outcome {
            prism_transport::ArchivedOutcome::Returned { values, nested } => {
                if values.len() != record.spec.num_returns as usize {
                    let error = TaskError::InvalidValue {
                        task,
                        function: record.spec.function.clone(),
                        what: "return values".into(),
                        reason: format!(
                            "the worker returned {} values, the caller expects {}",
                            values.len(),
                            record.spec.num_returns
                        ),
                    };
                    self.owner.fail(task, error);
                    return;
                }
                let values: std::io::Result<Vec<Slot>> =
                    values.iter().map(|v| self.value_from(worker, v)).collect();
                match values {
                    Ok(values) => {
                        if !self.make_room(0, None) {
                            tracing::warn!(task = %task, "the object store is over capacity and nothing can be spilled");
                        }
                        let nested = nested
                            .iter()
                            .map(|ids| ids.iter().map(|i| i.to_native()).collect())
                            .collect();
                        for ready in self.owner.complete(task, values, nested) {
                            self.enqueue(ready);
                        }
                    }
                    Err(e) => {
                        let error = TaskError::InvalidValue {
                            task,
                            function: self
                                .owner
                                .task(task)
                                .map(|r| r.spec.function.clone())
                                .unwrap_or_default(),
                            what: "return values".into(),
                            reason: format!("cannot map the shared-memory segment: {e}"),
                        };
                        self.owner.fail(task, error);
                    }
                }
            }
            prism_transport::ArchivedOutcome::Failed(error) => {
                let error = rkyv::deserialize::<TaskError, rkyv::rancor::Error>(error)
                    .unwrap_or_else(|e| TaskError::InvalidValue {
                        task,
                        function: record.spec.function.clone(),
                        what: "the task's error".into(),
                        reason: e.to_string(),
                    });
                let retry = matches!(error, TaskError::Panicked { .. })
                    && record.spec.retry_exceptions
                    && record.panics < record.spec.max_retries;
                let lost_argument = matches!(error, TaskError::InvalidValue { .. })
                    && record.spec.kind == TaskKind::Normal
                    && self.owner.waits_for_rebuild(task);
                if lost_argument {
                    tracing::warn!(task = %self.owner.describe(task), %error, "an argument is being rebuilt: the task runs after it");
                    if self.owner.unstarted(task) {
                        self.enqueue(task);
                    }
                } else if retry {
                    tracing::warn!(task = %self.owner.describe(task), %error, "retrying after a panic");
                    if let Some(record) = self.owner.task_mut(task) {
                        record.panics += 1;
                    }
                    if self.owner.unstarted(task) {
                        self.enqueue(task);
                    }
                } else {
                    self.owner.fail(task, error);
                }
            }
        }
    }

    fn cancel(&mut self, id: ObjectId, force: bool) {
        let task = id.task;
        if self.cancel_creation(task) {
            return;
        }
        let Some(record) = self.owner.task(task) else {
            return; // finished, failed or unknown: nothing to cancel
        };
        let function = record.spec.function.clone();
        let cancelled = TaskError::Cancelled {
            task,
            function: function.clone(),
        };
        match self.owner.task_state(task) {
            Some(TaskState::Waiting) => {
                self.owner.fail(task, cancelled);
            }
            Some(TaskState::Ready) => {
                let _ = self.nodes.locate_for_cancel(task);
                self.owner.fail(task, cancelled);
            }
            Some(TaskState::Running) => match self.nodes.locate_for_cancel(task) {
                Placement::OnWorker {
                    worker,
                    started: false,
                } => {
                    // Queued behind the worker's running task: cancelled now; the worker drops
                    // it before it would start (it reads messages between tasks).
                    self.encode_to(worker, &ToWorker::Cancel { task });
                    self.nodes.task_done(worker, task);
                    self.owner.fail(task, cancelled);
                }
                Placement::OnWorker {
                    worker,
                    started: true,
                } if force => {
                    if let Some(record) = self.owner.task_mut(task) {
                        record.force_cancelled = true;
                    }
                    tracing::info!(task = %task, function, worker, "force-cancel kills the worker");
                    self.kill_worker(worker);
                }
                _ => {
                    tracing::debug!(task = %task, function, "task is running; cancel without force has no effect");
                }
            },
            _ => {}
        }
    }

    fn maybe_dead(&mut self, worker: WorkerId) {
        let Some(link) = self.links.get(&worker) else {
            return;
        };
        if !(link.eof && link.exit.is_some()) {
            return;
        }
        let link = self.links.remove(&worker).unwrap_or_default();
        let reason = link.exit.unwrap_or_default();
        self.outbox.remove(&worker);
        self.held.remove(&worker);
        self.owner.worker_gone(worker);
        let (started, nested) = self.nodes.remove_worker(worker);
        // Tasks that were queued on it went back to the node's queue: they never started.
        if self.shutting_down || link.retiring {
            tracing::debug!(worker, %reason, "worker process exited as asked");
            return;
        }
        if !link.connected {
            self.startup_failures += 1;
            tracing::error!(worker, %reason, "worker process exited before its handshake");
        } else {
            tracing::warn!(worker, %reason, "worker process died");
        }
        if self.actor_worker_died(worker, &reason) {
            // The actor's books handled its calls and its creation.
        } else if let Some(task) = started {
            self.task_lost(task, &reason);
        }
        // Tasks it ran on top of a blocked one died with it.
        for task in nested {
            self.task_lost(task, &reason);
        }
        if self.startup_failures >= MAX_STARTUP_FAILURES {
            self.fail_queued(&reason);
        }
    }

    fn task_lost(&mut self, task: TaskId, reason: &str) {
        let Some(record) = self.owner.task_mut(task) else {
            return;
        };
        record.deaths += 1;
        let function = record.spec.function.clone();
        if record.force_cancelled {
            self.owner
                .fail(task, TaskError::Cancelled { task, function });
        } else if record.deaths <= record.spec.max_retries {
            tracing::warn!(task = %task, function, attempt = record.deaths + 1, "retrying after worker death");
            if self.owner.unstarted(task) {
                self.enqueue(task);
            }
        } else {
            let attempts = record.deaths;
            self.owner.fail(
                task,
                TaskError::WorkerDied {
                    task,
                    function,
                    attempts,
                    reason: reason.to_string(),
                },
            );
        }
    }

    fn fail_queued(&mut self, reason: &str) {
        for task in self.nodes.drain_queued(None) {
            let function = self
                .owner
                .task(task)
                .map(|r| r.spec.function.clone())
                .unwrap_or_default();
            self.owner.fail(
                task,
                TaskError::WorkerDied {
                    task,
                    function,
                    attempts: 0,
                    reason: format!(
                        "worker processes exit before connecting to the node: {reason}"
                    ),
                },
            );
        }
    }

    /// Schedules, encodes what became sendable, and hands frames to the writers.
    fn settle(&mut self) {
        self.free_files();
        self.place_groups();
        let startup_broken = self.startup_failures >= MAX_STARTUP_FAILURES;
        for (node, action) in self.nodes.schedule() {
            match action {
                Action::StartWorker if !startup_broken => self.start_worker(node),
                Action::StartWorker => {}
                Action::Dispatch { worker, tasks } => self.dispatch(worker, tasks),
                Action::Nest {
                    worker,
                    task,
                    depth,
                } => self.nest(worker, task, depth),
            }
        }
        self.pump_actors();
        let mut per_worker: HashMap<WorkerId, Vec<(ObjectId, ObjectValue)>> = HashMap::new();
        // A notice for a lost object rebuilds it and may bring a failure notice: loop.
        while !self.owner.notices.is_empty() {
            for notice in std::mem::take(&mut self.owner.notices) {
                let value = match notice.slot {
                    Slot::Ready(bytes) => ObjectValue::Ready(bytes.to_wire(notice.id)),
                    Slot::Remote(len) if self.copy_reachable(notice.worker, notice.id) => {
                        ObjectValue::Ready(prism_transport::Value::Shared { id: notice.id, len })
                    }
                    Slot::Failed(e) => ObjectValue::Failed(e),
                    Slot::Remote(_) | Slot::Pending | Slot::Spilled(_) => continue,
                };
                per_worker
                    .entry(notice.worker)
                    .or_default()
                    .push((notice.id, value));
            }
        }
        for (worker, objects) in per_worker {
            self.encode_to(worker, &ToWorker::Objects(objects));
        }
        self.settle_remote();
        for (worker, bytes) in self.outbox.drain() {
            if let Some(writer) = self.links.get(&worker).and_then(|l| l.writer.as_ref()) {
                writer.send(&bytes);
            }
        }
    }

    fn dispatch(&mut self, worker: WorkerId, tasks: Vec<TaskId>) {
        let mut batch = Vec::with_capacity(tasks.len());
        for task in tasks {
            if self.creations.contains_key(&task) {
                match self.creation_execute(task, worker) {
                    Some(exec) => batch.push(exec),
                    None => tracing::error!(task = %task, "actor creation without its call"),
                }
                continue;
            }
            let Some(args) = self.args_of(task) else {
                // An argument is being rebuilt: the task waits for it out of the worker's hands.
                tracing::debug!(task = %task, "a dispatched task waits for a rebuilt argument");
                self.nodes.task_done(worker, task);
                continue;
            };
            let Some(record) = self.owner.task(task) else {
                continue;
            };
            batch.push(record.execute(args));
            self.owner.started(task, worker);
        }
        if !batch.is_empty() {
            self.encode_to(worker, &ToWorker::Execute(batch));
        }
    }

    /// Sends `task` to run on top of the worker's task blocked at `depth`.
    fn nest(&mut self, worker: WorkerId, task: TaskId, depth: u32) {
        let Some(args) = self.args_of(task) else {
            tracing::debug!(task = %task, "a nested task waits for a rebuilt argument");
            self.nodes.task_done(worker, task);
            return;
        };
        let Some(record) = self.owner.task(task) else {
            self.nodes.task_done(worker, task);
            return;
        };
        let exec = record.execute(args);
        self.owner.started(task, worker);
        self.encode_to(worker, &ToWorker::Nested { exec, depth });
    }

    fn encode_to(&mut self, worker: WorkerId, msg: &ToWorker) {
        if self.remote.is_some() && self.hold_for_objects(worker, msg) {
            return;
        }
        let out = self.outbox.entry(worker).or_default();
        if let Err(e) = encode_frame(msg, out) {
            tracing::error!(worker, "cannot encode a message for the worker: {e}");
        }
    }
}
