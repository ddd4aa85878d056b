//! The shell of the driver's node: it carries out what the node's logic
//! ([`crate::proto::node::State`]) decides and feeds it what happens. On the embedded cluster it
//! starts worker processes on this host and serves their links; in a joined cluster it reaches
//! the nodes' daemons over QUIC. The state sits behind one short-held lock: each event is
//! handed to the node, then its actions (frames to write, workers to start or kill, object
//! files to spill, restore or free, requests to other nodes) are done in order before the
//! lock is let go.

mod cluster;
pub(crate) use cluster::Orders;
mod direct;
pub(crate) mod host;
pub(crate) mod link;
mod object_manager;
pub(crate) mod output;
mod remote;
pub(crate) mod worker_pool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prism_graph::{ActorId, IdMap, ObjectId, Resources, TaskError, TaskId, TaskSpec, TaskState};
use prism_transport::{ArchivedValue, Frame, ToNode};

use crate::config::Config;
use crate::proto::driver_link::{Merge, Way, lane_of_archived};
use crate::proto::logs::Dedup;
use crate::proto::node::{
    Action, DRIVER_OWNER, Event, IDLE_TICK, Refused, State, shared_values, soft_limit_of,
};
use crate::proto::nodes::Nodes;
use crate::proto::owner::{FreedFile, Known, Slot};
use crate::proto::scheduler::WorkerId;
use crate::store::{self, ObjectBytes};
use crate::{Error, Result};

/// What the shell keeps of a worker's link and process.
#[derive(Debug, Default)]
struct LinkIo {
    writer: Option<Arc<link::LinkWriter>>,
    /// Signals the process, when this host started it (through its pidfd).
    process: Option<Arc<crate::process::ProcessHandle>>,
    /// The worker's direct endpoint (a node daemon's worker in a joined cluster).
    endpoint: Option<String>,
    /// The driver's direct link to it, once opened, and the reading of its two ways.
    link: Option<(prism_transport::direct::LinkId, Merge<Frame>)>,
}

/// The node's state and what carries out its decisions: the object files, the worker links
/// and processes, the cluster's connections.
#[derive(Debug)]
struct Shell {
    node: State,
    /// The files behind the objects: segments, their pool, spilled copies.
    files: store::ObjectFiles,
    links: IdMap<WorkerId, LinkIo>,
    /// In a joined cluster: how to reach the nodes.
    remote: Option<remote::Remote>,
    spawn: std::sync::mpsc::Sender<WorkerId>,
    /// Segments mapped for the shared values of the messages being handled.
    mapped: IdMap<ObjectId, std::io::Result<ObjectBytes>>,
    /// In a joined cluster: the driver's direct links to its workers.
    direct: Option<Arc<direct::DriverLinks>>,
}

/// The embedded node and owner.
#[derive(Debug)]
pub(crate) struct Core {
    state: Mutex<Shell>,
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
    /// In a joined cluster: the driver's direct links, for a waiting thread to read.
    direct: Option<Arc<direct::DriverLinks>>,
    /// Frames from workers that came through their nodes (in a joined cluster).
    relayed_in: AtomicU64,
    /// Workers' output pipes still read here (see [`output`]).
    output_open: output::Open,
    /// Workers' repeated lines held back and counted (none: `PRISM_DEDUP_LOGS=0`), and
    /// whether a task shows the counts as their windows end.
    dedup: Option<Mutex<(Dedup, bool)>>,
}

/// A lookup of an actor by name from the driver (see [`Core::lookup_actor`]).
#[derive(Debug)]
pub(crate) enum Lookup {
    /// This job's actor: its id and class (a handle counted).
    Here(ActorId, String),
    /// Not this job's: the head is asked, answered under this number ([`Core::poll_find`]).
    Asked(u64),
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

/// How long a stopping driver waits for its workers' last output to be printed.
const OUTPUT_DRAIN: Duration = Duration::from_millis(300);

/// Segments pooled for large puts are freed after this long without one.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(10);

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
                for node in joined.nodes() {
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
        let mut node = State::new(
            nodes,
            config.object_store_bytes(),
            joined.as_ref().map(|j| j.home),
        )
        .with_namespace(config.job_namespace())
        .with_names_at_head(joined.is_some())
        .with_detached_at_head(joined.is_some() && config.detached_host.is_none())
        .with_task_events(config.task_events_capacity(), joined.is_some())
        .with_worker_owners(crate::config::env_switch(crate::config::ENV_WORKER_OWNERS))
        .with_borrowed_workers(
            joined.is_some() && crate::config::env_switch(crate::config::ENV_BORROW_WORKERS),
        );
        if let Some(joined) = &joined {
            for (idx, remote) in joined.nodes().iter().enumerate() {
                node.set_peer_address(idx, remote.addr.to_string());
            }
        }
        let direct = match &joined {
            Some(joined) if crate::config::env_switch(crate::config::ENV_DRIVER_LINKS) => {
                let bound = direct::DriverLinks::bind(
                    joined.objects_at.ip(),
                    joined.peers.identity(),
                    (joined.job.clone(), joined.objects_at.to_string()),
                    config.max_frame(),
                );
                match bound {
                    Ok(links) => Some(Arc::new(links)),
                    Err(e) => {
                        tracing::warn!(
                            "no direct links to workers (frames go through the nodes): {e}"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let core = Arc::new_cyclic(|me: &Weak<Core>| Core {
            state: Mutex::new(Shell {
                node,
                files: store::ObjectFiles::new(store_dir.clone(), config.object_store_bytes() / 4),
                links: IdMap::default(),
                remote: joined
                    .as_ref()
                    .map(|j| remote::Remote::new(j.clone(), handle.clone(), me.clone())),
                spawn: spawn_tx,
                mapped: IdMap::default(),
                direct: direct.clone(),
            }),
            runtime: Mutex::new(Some(runtime)),
            handle,
            seq: AtomicU64::new(1),
            config,
            store_dir,
            cluster: joined.clone(),
            links,
            direct: direct.clone(),
            relayed_in: AtomicU64::new(0),
            output_open: output::Open::default(),
            dedup: output::dedup().then(|| Mutex::new((Dedup::default(), false))),
        });
        if joined.is_none() {
            worker_pool::start(&core, spawn_rx)?;
        }
        if let Some(direct) = &direct {
            direct
                .start(Arc::downgrade(&core))
                .map_err(|e| Error::Startup(format!("the direct links' thread: {e}")))?;
        }
        if let Some(joined) = &joined {
            let _guard = core.handle.enter();
            for idx in 0..joined.nodes().len() {
                joined.watch(idx, Arc::downgrade(&core));
            }
            joined.follow_members(Arc::downgrade(&core));
            if core.config.detached_host.is_none() {
                // A host of detached actors takes its orders on a stream of its own.
                joined.follow_orders(Arc::downgrade(&core));
            }
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
            let mut shell = core.state.lock();
            shell.node.start();
            shell.act();
        }
        let (total, _) = core.resources();
        match &core.cluster {
            None => tracing::info!(resources = %total, "local cluster started"),
            Some(j) => {
                tracing::info!(resources = %total, nodes = j.nodes().len(), job = j.job, "joined a cluster")
            }
        }
        Ok(core)
    }

    /// The worker connections.
    fn links(&self) -> &link::LinkPoll {
        &self.links
    }

    /// Whether this driver joined a cluster (its workers are on other hosts).
    pub(crate) fn is_joined(&self) -> bool {
        self.cluster.is_some()
    }

    /// The job's namespace ([`crate::Config::namespace`]).
    pub(crate) fn namespace(&self) -> String {
        self.state.lock().node.namespace().to_string()
    }

    /// Marks the calling thread as spinning on [`Core::poll_links`] (a joined driver's direct
    /// links then leave their socket to it; see [`direct::DriverLinks::spinning`]).
    pub(crate) fn spinning(&self) -> Option<direct::Spinning> {
        self.direct.as_ref().map(|d| d.spinning())
    }

    /// Reads what workers sent, on the calling thread and without blocking (for a thread that
    /// spins while it waits). True when something was handled.
    pub(crate) fn poll_links(&self) -> bool {
        let linked = self.direct.as_ref().is_some_and(|d| d.poll(self));
        self.links.poll(self) | linked
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
        let _ = self.state.lock().event(Event::Submit { spec, failed });
    }

    /// Makes room for `size` more bytes in the shared-memory store, spilling least recently
    /// used objects to disk; `ObjectStoreFull` when even that cannot make it fit. Returns a
    /// pooled segment of exactly `size` bytes this process still maps, already renamed to its
    /// filling path of `id`, when there is one (see [`store::SegmentPool::take_mapped`]).
    pub(crate) fn reserve(&self, id: ObjectId, size: usize) -> Result<Option<memmap2::MmapMut>> {
        let mut shell = self.state.lock();
        let mapped = shell.files.pool.take_mapped(&self.store_dir, id, size);
        let used = shell.node.owner.stored_bytes;
        let capacity = self.config.object_store_bytes();
        let room = shell.node.make_room(size as u64, None);
        shell.act();
        // A spill that failed leaves the store as full as it was.
        if !room || shell.node.owner.overflow(size as u64) > 0 {
            if mapped.is_some() {
                store::discard_filling(&self.store_dir, id);
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
    pub(crate) fn put(&self, id: ObjectId, bytes: ObjectBytes, nested: crate::value::Nested) {
        let mut shell = self.state.lock();
        let node = &mut shell.node;
        node.owner.put(id, Slot::Ready(bytes), None, nested.objects);
        if !nested.actors.is_empty() {
            node.contain_actors(id, &nested.actors);
        }
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
        let mut shell = self.state.lock();
        let state = &mut *shell;
        if need >= ids.len() {
            // Every id is needed: resume at the first not known, stop at the next pending one,
            // whose completion alone wakes the caller.
            while let Some(id) = ids.get(progress.cursor) {
                if !known.has(progress.cursor) {
                    let mut polled = state.node.owner.poll(*id, waker);
                    if let Poll::Ready(Some(&Slot::Spilled(len))) = polled {
                        state.restore(*id, len);
                        polled = state.node.owner.poll(*id, waker);
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
            let mut polled = state.node.owner.poll(ids[i], mark);
            if let Poll::Ready(Some(&Slot::Spilled(len))) = polled {
                state.restore(ids[i], len);
                polled = state.node.owner.poll(ids[i], mark);
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
        self.state.lock().node.owner.function_of(id)
    }

    /// The error for a read of `id`, which the owner does not know: freed lately (and by
    /// whose release), or never known.
    pub(crate) fn unknown_object(&self, id: ObjectId) -> crate::Error {
        match self.state.lock().node.owner.why_unknown(id) {
            Some(by) => crate::Error::Freed {
                object: id.to_string(),
                why: by.to_string(),
            },
            None => crate::Error::UnknownObject(id.to_string()),
        }
    }

    pub(crate) fn add_ref(&self, id: ObjectId) {
        self.state.lock().node.owner.add_ref(id);
    }

    /// The driver dropped its last reference to `id`: freed files go at once; nothing else
    /// needs deciding (a release is on the hot path of `put` and `get`, so it does not settle).
    pub(crate) fn release(&self, id: ObjectId) {
        let mut shell = self.state.lock();
        shell.node.release(id);
        shell.act();
    }

    /// The driver takes item `index` of its stream of generator `task`.
    pub(crate) fn stream_next(&self, task: TaskId, index: u32) {
        self.state.lock().run(|node| node.stream_next(task, index));
    }

    pub(crate) fn cancel(&self, id: ObjectId, force: bool) {
        let _ = self.state.lock().event(Event::Cancel { id, force });
    }

    /// Creates an actor (or finds the named one, with `get_if_exists`).
    pub(crate) fn create_actor(
        &self,
        spec: TaskSpec,
        failed: Option<TaskError>,
        setup: prism_transport::ActorConfig,
    ) -> Result<ActorId> {
        self.state
            .lock()
            .run(|node| node.create_actor(spec, failed, setup))
            .map_err(|taken| Error::ActorNameTaken {
                name: taken.name,
                namespace: taken.namespace,
                holder: None,
            })
    }

    /// The head's orders to this job, which hosts its binary's detached actors (a joined
    /// driver only).
    pub(crate) async fn detached_orders(&self) -> std::result::Result<Orders, String> {
        match &self.cluster {
            Some(joined) => joined.detached_orders().await,
            None => Err("this driver is not joined to a cluster".to_string()),
        }
    }

    /// Whether detached actors are made by the cluster's head (a joined driver that does not
    /// host them itself).
    pub(crate) fn detached_at_head(&self) -> bool {
        self.state.lock().node.detached_at_head()
    }

    /// Has the cluster's head make a detached actor: the lookup its answer comes under
    /// ([`Core::poll_find`]).
    pub(crate) fn create_detached(
        &self,
        spec: TaskSpec,
        failed: Option<TaskError>,
        setup: prism_transport::ActorConfig,
    ) -> Result<u64> {
        self.state
            .lock()
            .run(|node| node.create_detached(spec, failed, setup, None))
            .map_err(Error::from_refusal)
    }

    /// Whether the head granted the name of the driver's new actor `actor` (pending while
    /// its word has not come; ready at once for an actor whose name it was not asked for);
    /// `Some(find)`: another job's actor has it, and lookup `find` answers which
    /// (`get_if_exists`).
    pub(crate) fn poll_claim(&self, actor: ActorId, waker: &Waker) -> Poll<Result<Option<u64>>> {
        (self.state.lock().node.poll_claim(actor, waker)).map(|r| r.map_err(Error::from_refusal))
    }

    /// The named actor's id and class (counting a new handle).
    /// Makes a placement group of `bundles` (reserved now, or as soon as they fit).
    pub(crate) fn create_group(
        &self,
        bundles: Vec<Resources>,
        strategy: crate::proto::placement::PlacementStrategy,
    ) -> u64 {
        self.state
            .lock()
            .run(|node| node.create_group(bundles, strategy))
    }

    /// Removes placement group `id`.
    pub(crate) fn remove_group(&self, id: u64) {
        self.state.lock().run(|node| node.remove_group(id));
    }

    /// Whether placement group `id` is reserved, or why it never will be.
    pub(crate) fn poll_group(&self, id: u64, waker: &Waker) -> Poll<Result<(), String>> {
        self.state.lock().node.poll_group(id, waker)
    }

    /// The actor named `name` in `namespace` (the job's when `None`) and its class, counting
    /// a new handle.
    pub(crate) fn lookup_actor(&self, name: &str, namespace: Option<&str>) -> Result<Lookup> {
        let mut shell = self.state.lock();
        let name = shell.node.actor_name(name, namespace);
        if let Some((id, class)) = shell.node.lookup_actor(&name) {
            return Ok(Lookup::Here(id, class));
        }
        if self.cluster.is_some() {
            return Ok(Lookup::Asked(shell.run(|node| node.find_actor(name))));
        }
        Err(Error::ActorNotFound {
            name: name.name,
            namespace: name.namespace,
        })
    }

    /// The answer to the driver's lookup `find` at the head (see [`Lookup::Asked`]).
    pub(crate) fn poll_find(&self, find: u64, waker: &Waker) -> Poll<Result<(ActorId, String)>> {
        (self.state.lock().node.poll_find(find, waker)).map(|r| r.map_err(Error::from_refusal))
    }

    pub(crate) fn actor_add_ref(&self, id: ActorId) {
        self.state.lock().node.actor_add_ref(id);
    }

    pub(crate) fn actor_release(&self, id: ActorId) {
        self.state.lock().run(|node| node.actor_release(id));
    }

    /// Kills actor `id`: this job's at once (`None`), another job's through the head, whose
    /// word comes under the number returned ([`Core::poll_kill`]).
    pub(crate) fn kill_actor(&self, id: ActorId) -> Option<u64> {
        self.state.lock().run(|node| node.kill_from_api(id))
    }

    /// The head's word on the driver's kill `kill` of another job's actor (see
    /// [`Core::kill_actor`]).
    pub(crate) fn poll_kill(&self, kill: u64, waker: &Waker) -> Poll<Result<()>> {
        (self.state.lock().node.poll_kill(kill, waker)).map(|r| r.map_err(Error::from_refusal))
    }

    /// Kills this job's actor `id` on the head's order ([`prism_transport::HeadOrder::Kill`]):
    /// how it went.
    pub(crate) fn kill_ordered(&self, id: ActorId) -> prism_transport::OrderOutcome {
        match self.state.lock().run(|node| node.kill_ordered(id)) {
            Ok(()) => prism_transport::OrderOutcome::Killed,
            Err(why) => prism_transport::OrderOutcome::Failed(why),
        }
    }

    /// Where the task making `id` is, for a timeout message.
    pub(crate) fn describe_wait(&self, id: ObjectId) -> (String, String) {
        let shell = self.state.lock();
        let state = &shell.node;
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
    pub(crate) fn memory(&self) -> crate::proto::owner::memory::MemoryReport {
        let state = &self.state.lock().node;
        crate::proto::owner::memory::MemoryReport {
            objects: state.owner.report(),
            shared_bytes: state.owner.stored_bytes,
            capacity: self.config.object_store_bytes(),
            spilled_bytes: state.owner.spilled_bytes,
        }
    }

    /// Runs `f` on the node's state (for the state API).
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().node)
    }

    /// In a joined cluster, the records the head keeps of this job's tasks (the tasks the
    /// job's workers own are recorded by their nodes for the head, not here); `None`
    /// embedded.
    pub(crate) fn head_tasks(&self) -> Option<crate::Result<Vec<prism_transport::TaskInfo>>> {
        let joined = self.cluster.as_ref()?.clone();
        // Asked on the node's runtime, which drives the head's connection, and waited for
        // here: the caller may be inside a runtime of its own, which cannot block on one.
        let (answer, asked) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = answer.send(joined.job_tasks().await);
        });
        let asked = asked
            .recv()
            .map_err(|_| crate::Error::Head("the node stopped before the head answered".into()))
            .and_then(|asked| {
                asked.map_err(|e| crate::Error::Head(format!("cannot list the job's tasks: {e}")))
            });
        Some(asked)
    }

    /// The node's resources: (total, available now).
    pub(crate) fn resources(&self) -> (Resources, Resources) {
        let state = &self.state.lock().node;
        (state.nodes.total(), state.nodes.available())
    }

    /// The names of the nodes that take work.
    pub(crate) fn node_names(&self) -> Vec<String> {
        let state = &self.state.lock().node;
        (0..state.nodes.len())
            .filter_map(|idx| state.nodes.get(idx))
            .filter(|node| node.takes_work())
            .map(|node| node.name.clone())
            .collect()
    }

    /// Number of objects the owner tracks (for tests of reference counting).
    pub(crate) fn object_count(&self) -> usize {
        self.state.lock().node.owner.object_count()
    }

    /// How many messages this node received from workers (see [`State::worker_messages`]).
    pub(crate) fn worker_messages(&self) -> u64 {
        self.state.lock().node.worker_messages()
    }

    /// How many frames from workers came through their nodes' relays.
    pub(crate) fn relayed_messages(&self) -> u64 {
        self.relayed_in.load(Ordering::Relaxed)
    }

    /// Stops the workers and the node.
    pub(crate) fn shutdown(&self) {
        let workers = self.state.lock().run(State::stop);
        // Give workers a moment to exit on their own, then make sure.
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            let node = &self.state.lock().node;
            if !workers.iter().any(|&w| node.running(w)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.state.lock().run(|node| {
            for worker in workers {
                node.kill_straggler(worker);
            }
        });
        // What the workers printed last is read before the readers stop with the runtime.
        let deadline = std::time::Instant::now() + OUTPUT_DRAIN;
        while self.output_open.any() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(dedup) = &self.dedup {
            for (stderr, text) in dedup.lock().0.flush() {
                output::print(stderr, &text);
            }
        }
        if let Some(joined) = &self.cluster {
            let (actors, groups, events) = {
                let node = &mut self.state.lock().node;
                let events = node.report_events(&joined.job, &unix_clock());
                (node.actor_directory(), node.group_directory(), events)
            };
            joined.end(&self.handle, actors, groups, events);
            // The nodes stop the job's workers when its connections close.
            joined.leave(&self.handle);
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

    /// Once a second: frees a segment pool that went unused, lets the node retire idle
    /// workers and break stalls, and reports the load to the cluster.
    fn tick(&self) {
        let mut shell = self.state.lock();
        if shell.node.stopping() {
            return;
        }
        let files = &mut shell.files;
        files.pool.expire(&files.store_dir, POOL_IDLE);
        let _ = shell.event(Event::Tick);
        if let Some(joined) = &self.cluster {
            let _guard = self.handle.enter();
            joined.report(shell.node.nodes.pending(), shell.node.nodes.used());
            joined.publish(shell.node.actor_directory(), shell.node.group_directory());
            if joined.events_wanted() {
                if joined.head_renewed() {
                    shell.node.owner.events.all_changed();
                }
                let events = shell.node.report_events(&joined.job, &unix_clock());
                joined.send_events(events);
            }
        }
    }

    // --- events from the worker pool ---

    /// Whether the node is shutting down.
    fn stopping(&self) -> bool {
        self.state.lock().node.stopping()
    }

    fn worker_spawned(
        &self,
        worker: WorkerId,
        pid: u32,
        process: Option<Arc<crate::process::ProcessHandle>>,
    ) {
        let mut shell = self.state.lock();
        shell.links.entry(worker).or_default().process = process;
        let _ = shell.event(Event::WorkerSpawned { worker, pid });
    }

    /// Records a worker's handshake; a connection the node has no place for is refused, and
    /// an error only when the node is not stopping (a worker killed as the node stops may
    /// still have said hello).
    fn worker_connected(
        &self,
        (worker, direct): (WorkerId, Option<String>),
        writer: Arc<link::LinkWriter>,
    ) -> bool {
        let mut shell = self.state.lock();
        let connected = Event::WorkerConnected {
            worker,
            direct: direct.clone(),
        };
        let refused = match shell.node.handle(connected, Instant::now()) {
            Ok(()) => {
                let io = shell.links.entry(worker).or_default();
                io.writer = Some(writer);
                io.endpoint = direct;
                None
            }
            Err(refused) => Some(refused),
        };
        shell.act();
        match refused {
            None => true,
            Some(Refused::Stopping) => {
                tracing::debug!(worker, "a worker connected as the node stops");
                false
            }
            Some(refused @ Refused::EndedUnheard(_)) => {
                tracing::debug!(worker, "a late hello: {refused}");
                false
            }
            Some(refused) => {
                tracing::error!(worker, "refused a worker's connection: {refused}");
                false
            }
        }
    }

    fn frames(&self, worker: WorkerId, frames: Vec<Frame>) -> std::result::Result<(), String> {
        self.frames_from(worker, Way::Node, frames)
    }

    /// Worker `worker`'s frames that came `way`: handled in the order the worker sent them
    /// (see [`crate::proto::driver_link`]) when the driver linked to it directly. An error
    /// names a frame that cannot be read (the link it came on is dropped).
    fn frames_from(
        &self,
        worker: WorkerId,
        way: Way,
        frames: Vec<Frame>,
    ) -> std::result::Result<(), String> {
        if self.cluster.is_none() {
            // Embedded: one way, no relays.
            return self.handle_frames(worker, frames);
        }
        if way == Way::Node {
            (self.relayed_in).fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
        let mut shell = self.state.lock();
        let Some((_, merge)) = shell.links.get_mut(&worker).and_then(|l| l.link.as_mut()) else {
            drop(shell);
            if way == Way::Link {
                // The link was dropped meanwhile (the worker is being stopped).
                return Ok(());
            }
            return self.handle_frames(worker, frames);
        };
        let mut due = Vec::with_capacity(frames.len());
        let mut bad = None;
        for frame in frames {
            let lane = match frame.access::<ToNode>() {
                Ok(msg) => lane_of_archived(msg),
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            };
            if let Err(overflow) = merge.take(way, (lane, frame), &mut due) {
                bad = Some(overflow.to_string());
                break;
            }
        }
        // Handled before the lock is let go: frames the other way brings come after these.
        let (messages, _) = read_messages(&due);
        shell.messages(worker, &messages);
        drop(shell);
        match bad {
            Some(reason) => {
                self.driver_link_lost(worker, format!("a bad frame: {reason}"));
                Err(reason)
            }
            None => Ok(()),
        }
    }

    /// The driver's direct link to worker `worker` ended (`why`) or broke the order of its
    /// frames: the worker's frames for the driver can no longer be read in order, so it is
    /// stopped (its tasks run again as after any worker's death).
    /// Frames from another job's worker at `endpoint` on the driver's link to it.
    fn foreign_frames(&self, endpoint: String, frames: Vec<Frame>) {
        let mut msgs = Vec::with_capacity(frames.len());
        for frame in &frames {
            let decoded = (frame.access::<prism_transport::ToWorker>())
                .map_err(|e| e.to_string())
                .and_then(|msg| {
                    rkyv::deserialize::<prism_transport::ToWorker, rkyv::rancor::Error>(msg)
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok(msg) => msgs.push(msg),
                Err(e) => tracing::warn!(%endpoint, "another job's worker sent a bad frame: {e}"),
            }
        }
        self.event(Event::ForeignFrames { endpoint, msgs });
    }

    /// The driver's link to another job's worker at `endpoint` broke.
    fn foreign_link_lost(&self, endpoint: String, reason: String) {
        self.event(Event::ForeignLinkLost { endpoint, reason });
    }

    fn driver_link_lost(&self, worker: WorkerId, why: String) {
        let mut shell = self.state.lock();
        let Some(io) = shell.links.get_mut(&worker) else {
            return;
        };
        let Some((link, _)) = io.link.take() else {
            return;
        };
        io.endpoint = None;
        if let Some(direct) = &shell.direct {
            direct.close(link, "the driver lost the worker's frames' order");
        }
        if shell.node.stopping() {
            return;
        }
        tracing::warn!(
            worker,
            "the driver's direct link to the worker ended: {why}; the worker is stopped"
        );
        if let Some(remote) = &shell.remote {
            remote.kill_worker(worker);
        }
    }

    /// Hands worker `worker`'s frames, in order, to the node.
    fn handle_frames(
        &self,
        worker: WorkerId,
        frames: Vec<Frame>,
    ) -> std::result::Result<(), String> {
        if frames.is_empty() {
            return Ok(());
        }
        let (messages, result) = read_messages(&frames);
        let mut shell = self.state.lock();
        shell.messages(worker, &messages);
        result
    }

    fn worker_eof(&self, worker: WorkerId) {
        self.drain_direct();
        let _ = self.state.lock().event(Event::WorkerEof { worker });
    }

    /// Handles what the driver's direct links brought so far (see
    /// [`direct::DriverLinks::drain`]): called before a worker's end is.
    fn drain_direct(&self) {
        if let Some(direct) = &self.direct {
            direct.drain(self);
        }
    }

    /// The count of workers' output pipes read here (see [`Core::shutdown`]).
    pub(crate) fn output_open(&self) -> &output::Open {
        &self.output_open
    }

    /// Prints `text`, which a worker wrote to its standard error (`stderr`) or output (each
    /// line labelled by the worker, see [`output`]).
    pub(crate) fn worker_output(self: &Arc<Self>, stderr: bool, text: &str) {
        if !output::to_driver() {
            return;
        }
        let Some(dedup) = &self.dedup else {
            output::print(stderr, text);
            return;
        };
        let mut now = String::new();
        let start_ticker = {
            let mut held = dedup.lock();
            held.0.lines(stderr, text, Instant::now(), &mut now);
            let start = held.0.holds() && !held.1;
            held.1 |= start;
            start
        };
        output::print(stderr, &now);
        if start_ticker {
            let core = Arc::downgrade(self);
            self.handle.spawn(show_repeats(core));
        }
    }

    fn worker_exited(&self, worker: WorkerId, reason: String) {
        self.drain_direct();
        let _ = self
            .state
            .lock()
            .event(Event::WorkerExited { worker, reason });
    }
}

/// Shows the counts of workers' repeated lines as their windows end, every second while any
/// are held (see [`Dedup`]).
async fn show_repeats(core: Weak<Core>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(core) = core.upgrade() else {
            return;
        };
        let Some(dedup) = &core.dedup else {
            return;
        };
        let (due, goes_on) = {
            let mut held = dedup.lock();
            let due = held.0.due(Instant::now());
            // Once nothing is held this task ends; the next line held starts another.
            held.1 = held.0.holds();
            (due, held.1)
        };
        for (stderr, text) in due {
            output::print(stderr, &text);
        }
        if !goes_on {
            return;
        }
    }
}

impl Shell {
    /// Hands `event` to the node and carries out what it decided.
    fn event(&mut self, event: Event<'_>) -> std::result::Result<(), Refused> {
        let handled = self.node.handle(event, Instant::now());
        self.act();
        handled
    }

    /// Runs a command of the driver's API on the node, settles it, and carries out what the
    /// node decided.
    fn run<R>(&mut self, command: impl FnOnce(&mut State) -> R) -> R {
        let out = command(&mut self.node);
        self.node.settle();
        self.act();
        out
    }

    /// Brings a spilled object back before it is read.
    fn restore(&mut self, id: ObjectId, len: u64) {
        self.node.restore(id, len);
        self.act();
    }

    /// Carries out the node's decisions, in order; tells the cluster's directory of a named
    /// actor's change at once.
    fn act(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.perform(action);
        }
        if self.node.take_publish_due()
            && let Some(remote) = &self.remote
        {
            remote.publish(self.node.actor_directory(), self.node.group_directory());
        }
    }

    /// Hands worker `worker`'s messages to the node and carries out what it decided.
    fn messages(&mut self, worker: WorkerId, messages: &[&prism_transport::ArchivedToNode]) {
        if messages.is_empty() {
            return;
        }
        if self.remote.is_none() {
            let dir = &self.files.store_dir;
            for msg in messages {
                shared_values(msg, |value| {
                    if let ArchivedValue::Shared { id, .. } = value {
                        let bytes = ObjectBytes::from_wire(dir, value);
                        self.mapped.insert(id.to_native(), bytes);
                    }
                });
            }
        }
        let messages = Event::Messages {
            worker,
            messages,
            mapped: &mut self.mapped,
        };
        let _ = self.node.handle(messages, Instant::now());
        self.mapped.clear();
        self.act();
    }

    /// Writes `frames` to worker `worker`: on the driver's direct link to it, opened with the
    /// first frames (the worker told through its node first, [`ToWorker::Switch`]), or
    /// through its node.
    ///
    /// [`ToWorker::Switch`]: prism_transport::ToWorker::Switch
    fn send_to(&mut self, worker: WorkerId, frames: &[u8]) {
        let Some(io) = self.links.get_mut(&worker) else {
            return;
        };
        let Some(writer) = io.writer.as_ref() else {
            return;
        };
        let Some(direct) = &self.direct else {
            return writer.send(frames);
        };
        if io.link.is_none()
            && let Some(endpoint) = io.endpoint.take()
        {
            match direct.open(worker, &endpoint) {
                Ok(link) => {
                    let switch = prism_transport::ToWorker::Switch {
                        from: direct.addr(),
                    };
                    let mut frame = Vec::new();
                    match prism_transport::encode_frame(&switch, &mut frame) {
                        Ok(()) => {
                            writer.send(&frame);
                            io.link = Some((link, Merge::default()));
                        }
                        Err(e) => {
                            tracing::error!("cannot encode the driver's switch of ways: {e}");
                            direct.close(link, "the driver cannot say it links");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(worker, %endpoint, "no direct link to the worker (frames go through its node): {e}");
                }
            }
        }
        let Some((link, _)) = &io.link else {
            return writer.send(frames);
        };
        if let Err(e) = direct.send(*link, frames) {
            // The link's end is reported by the endpoint; the worker is stopped then.
            tracing::debug!(
                worker,
                "frames for a worker on a direct link that ended: {e}"
            );
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Send { worker, frames } => self.send_to(worker, &frames),
            Action::StartWorker {
                node,
                worker,
                binary_from,
            } => match &self.remote {
                Some(remote) => remote.spawn_worker(node, worker, binary_from),
                None => {
                    if self.spawn.send(worker).is_err() {
                        tracing::error!(worker, "worker spawner is gone");
                    }
                }
            },
            Action::KillWorker { worker } => match &self.remote {
                Some(remote) => remote.kill_worker(worker),
                None => {
                    if let Some(process) = self.links.get(&worker).and_then(|l| l.process.as_ref())
                    {
                        process.kill();
                    }
                }
            },
            Action::CloseLink { worker } => {
                let link = self.links.get_mut(&worker);
                if let Some(writer) = link.and_then(|l| l.writer.take()) {
                    writer.close();
                }
            }
            Action::Forget { worker } => {
                let link = self.links.remove(&worker).and_then(|l| l.link);
                if let (Some((link, _)), Some(direct)) = (link, &self.direct) {
                    direct.close(link, "the worker is gone");
                }
            }
            Action::Spill { id, segment } => {
                if let Err(e) = self.files.spill(id, &segment) {
                    let reason = format!("{}: {e}", self.files.spill_dir.display());
                    let event = Event::SpillFailed {
                        id,
                        segment,
                        reason,
                    };
                    let _ = self.node.handle(event, Instant::now());
                }
            }
            Action::ShrinkPool { room } => {
                let files = &mut self.files;
                files.pool.shrink_to(&files.store_dir, room);
            }
            Action::Restore { id, len } => {
                let restored = self.files.restore(id, len);
                let _ = self
                    .node
                    .handle(Event::Restored { id, restored }, Instant::now());
            }
            Action::Free(FreedFile::Shared { id, len, unused }) => {
                self.files.free_shared(id, len, unused)
            }
            Action::Free(FreedFile::Spilled { id }) => self.files.free_spilled(id),
            Action::DropOwnedBy { owner, keep } => {
                crate::store::unlink_owned_by(&self.files.store_dir, owner, &keep);
            }
            Action::Host { node, request } => {
                if let Some(remote) = &self.remote {
                    remote.host(node, request);
                }
            }
            Action::FetchHere { id, len, from } => {
                if let Some(remote) = &self.remote {
                    remote.fetch_here(id, len, from, self.files.store_dir.clone());
                }
            }
            Action::DropNode { node, reason } => {
                if let Some(remote) = &self.remote {
                    remote.drop_node(node, &reason);
                }
            }
            Action::ReturnFreeMemory => crate::process::return_free_memory(),
            Action::ClaimName { actor, name, class } => match &self.remote {
                Some(remote) => remote.claim_name(actor, name, class),
                None => {
                    let event = Event::NameClaimed {
                        actor,
                        outcome: Ok(()),
                    };
                    let _ = self.node.handle(event, Instant::now());
                }
            },
            Action::ReleaseName { actor, name } => {
                if let Some(remote) = &self.remote {
                    remote.release_name(actor, name);
                }
            }
            Action::FindName { find, name } => match &self.remote {
                Some(remote) => remote.find_name(find, name),
                None => {
                    let outcome = Ok(None);
                    let _ = (self.node).handle(Event::NameFound { find, outcome }, Instant::now());
                }
            },
            Action::CreateDetached { find, spec, setup } => match &self.remote {
                Some(remote) => remote.create_detached(find, spec, setup),
                None => {
                    let outcome = Err(prism_transport::Refusal::Detached {
                        class: setup.class.clone(),
                        reason: "this driver is not joined to a cluster".to_string(),
                    });
                    let _ =
                        (self.node).handle(Event::DetachedMade { find, outcome }, Instant::now());
                }
            },
            Action::KillForeign { kill, job, actor } => match &self.remote {
                Some(remote) => remote.kill_foreign(kill, job, actor),
                None => {
                    let outcome = Err("this driver is not joined to a cluster".to_string());
                    let _ =
                        (self.node).handle(Event::ForeignKilled { kill, outcome }, Instant::now());
                }
            },
            Action::WatchActor { alias, job, actor } => {
                if let Some(remote) = &self.remote {
                    remote.watch_actor(alias, job, actor);
                }
            }
            Action::UnwatchActor { alias } => {
                if let Some(remote) = &self.remote {
                    remote.unwatch_actor(alias);
                }
            }
            Action::SendForeign { endpoint, frames } => {
                let sent = match &self.direct {
                    Some(direct) => direct.send_foreign(&endpoint, &frames),
                    None => Err("the driver has no direct endpoint (PRISM_DRIVER_LINKS=0)".into()),
                };
                if let Err(reason) = sent {
                    let event = Event::ForeignLinkLost { endpoint, reason };
                    let _ = self.node.handle(event, Instant::now());
                }
            }
        }
    }
}

/// The messages in `frames`, up to the first that cannot be read (whose error follows).
fn read_messages(
    frames: &[Frame],
) -> (
    Vec<&prism_transport::ArchivedToNode>,
    std::result::Result<(), String>,
) {
    let mut messages = Vec::with_capacity(frames.len());
    for frame in frames {
        match frame.access::<ToNode>() {
            Ok(msg) => messages.push(msg),
            Err(e) => return (messages, Err(e.to_string())),
        }
    }
    (messages, Ok(()))
}

/// The clocks read now, to stamp task events in Unix time.
pub(crate) fn unix_clock() -> crate::proto::events::UnixClock {
    crate::proto::events::UnixClock {
        now: Instant::now(),
        unix_us: (crate::session::now_nanos() / 1_000) as u64,
    }
}
