//! The worker process: started by its node from the program's own executable, it connects back,
//! says hello, and runs the tasks it is sent on its main thread, one after another. The same
//! thread pumps the connection: between tasks it reads what arrived without blocking (so a
//! cancel lands before the task starts), and a task blocked in `get` keeps pumping while it
//! waits, handing its queued tasks back to the node and bouncing new ones, so nested tasks
//! cannot deadlock. Results are batched into one write while more tasks are queued.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prism_graph::TaskKind;
use prism_graph::{IdMap, IdSet, ObjectId, TaskError, TaskId, TaskSpec};
use prism_transport::{
    ArchivedObjectValue, ArchivedToWorker, Execute, Frame, FrameError, FrameReader, Hello,
    MAX_AWAITING, Outcome, PROTOCOL_VERSION, RunTimes, ToNode, ToWorker, Value, encode_frame,
};
use rkyv::util::AlignedVec;

use crate::process::{
    ENV_INLINE_THRESHOLD, ENV_ROLE, ENV_SESSION_DIR, ENV_STORE_CAPACITY, ENV_WORKER, fingerprint,
};
use crate::proto::owner::{Known, Slot};
use crate::registry;
use crate::store::{self, ObjectBytes, Segment};
use crate::{Error, Result};

mod output;

/// How long a worker whose queue ran dry keeps reading before it blocks (see
/// [`Inner::await_input`]).
const IDLE_SPIN: Duration = Duration::from_micros(100);

/// Whether this process was started as a worker.
pub(crate) fn is_worker_process() -> bool {
    std::env::var_os(ENV_ROLE).is_some_and(|v| v == "worker")
}

/// The worker's side of its connection and its local books.
#[derive(Debug)]
pub(crate) struct WorkerClient {
    inner: Mutex<Inner>,
    owner: u64,
    seq: AtomicU64,
    /// The node's directory of shared-memory segments.
    store_dir: std::path::PathBuf,
    /// Values of at least this many bytes go to shared memory.
    threshold: usize,
    /// The store's capacity: no value larger than this can be stored.
    capacity: u64,
    /// Signalled when the reader thread of a concurrent actor delivered something (calls,
    /// object values).
    changed: parking_lot::Condvar,
    /// What this worker can run.
    registry: registry::Registry,
    /// Mappings of recent argument segments.
    segments: Mutex<SegmentCache>,
}

#[derive(Debug)]
struct Inner {
    /// The connection's reading side; taken by the reader thread of a concurrent actor.
    reader: Option<FrameReader<UnixStream>>,
    writer: UnixStream,
    out: Vec<u8>,
    queue: VecDeque<Execute>,
    done: Vec<Ended>,
    /// Whether the node keeps task events (else run times are not sent).
    timed: bool,
    /// Values of objects this worker asked for.
    cache: IdMap<ObjectId, Slot>,
    requested: IdSet<ObjectId>,
    /// This worker's references to objects it created (submits, puts): count and function.
    refs: IdMap<ObjectId, (u32, Arc<str>)>,
    released: Vec<ObjectId>,
    /// The innermost running task waits in `get`.
    blocked: bool,
    /// How many tasks run on top of the one the worker was sent (each waited for by the one
    /// below it, which is blocked).
    depth: u32,
    /// While blocked: the tasks whose results the innermost task waits for.
    awaiting: IdSet<TaskId>,
    /// A task the node sent to run on top of the blocked one ([`ToWorker::Nested`]).
    nested: Option<Execute>,
    /// Objects whose values arrived while blocked, for the wait's [`Tally`].
    arrived: Vec<ObjectId>,
    /// Futures on an async actor's event loop waiting for a call or a value: woken after
    /// each message from the node.
    wakers: Vec<Waker>,
    /// The node's directory of shared-memory segments.
    store_dir: std::path::PathBuf,
}

/// How far a blocked wait for `need` of its ids has come, kept between frames so that each
/// frame costs only what it delivered, not a recount of every id.
enum Tally {
    /// Every id is needed: the first not known yet.
    All(usize),
    /// Some are: how many positions are known, and each unknown id with its positions' count.
    Some {
        count: usize,
        unknown: IdMap<ObjectId, usize>,
    },
}

impl Tally {
    fn new(cache: &IdMap<ObjectId, Slot>, ids: &[ObjectId], need: usize) -> Self {
        if need >= ids.len() {
            return Tally::All(0);
        }
        let mut count = 0;
        let mut unknown: IdMap<ObjectId, usize> = IdMap::default();
        for id in ids {
            if cache.contains_key(id) {
                count += 1;
            } else {
                *unknown.entry(*id).or_default() += 1;
            }
        }
        Tally::Some { count, unknown }
    }

    /// Whether `need` of `ids` are known, taking in what arrived since the last look.
    fn enough(&mut self, inner: &mut Inner, ids: &[ObjectId], need: usize) -> bool {
        match self {
            Tally::All(cursor) => {
                inner.arrived.clear();
                inner.enough(ids, need, cursor)
            }
            Tally::Some { count, unknown } => {
                for id in inner.arrived.drain(..) {
                    if let Some(positions) = unknown.remove(&id) {
                        *count += positions;
                    }
                }
                *count >= need
            }
        }
    }
}

/// What a blocked task's wait turned up.
enum Wake {
    /// Enough values are known, or the deadline passed.
    Done,
    /// A task it waits for, to run on top of it.
    Run(Execute),
}

/// What a pump step found that ends the worker.
enum Stop {
    Shutdown,
    Lost(String),
}

impl WorkerClient {
    pub(crate) fn next_task_id(&self) -> TaskId {
        TaskId::new(self.owner, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn submit(&self, spec: TaskSpec, failed: Option<TaskError>) {
        let mut inner = self.inner.lock();
        let name: Arc<str> = Arc::from(spec.function.as_str());
        for id in spec.return_ids() {
            inner.refs.insert(id, (1, name.clone()));
        }
        inner.send(&ToNode::Submit { spec, failed });
    }

    /// Where this worker writes large values, from which size, and the store's capacity.
    pub(crate) fn store_params(&self) -> (&std::path::Path, usize, u64) {
        (&self.store_dir, self.threshold, self.capacity)
    }

    /// A task's arguments: inline values, and mappings of the segments of large ones.
    fn args_for(&self, exec: &Execute) -> std::result::Result<Vec<ObjectBytes>, TaskError> {
        let mut segments = self.segments.lock();
        segments.forget_freed(&self.store_dir);
        resolve_args(&self.store_dir, &mut segments, exec)
    }

    pub(crate) fn put(&self, id: ObjectId, stored: ObjectBytes, nested: Vec<ObjectId>) {
        let mut inner = self.inner.lock();
        inner.refs.insert(id, (1, Arc::from("put")));
        inner.send(&ToNode::Put {
            id,
            value: stored.to_wire(id),
            nested,
        });
        inner.cache.insert(id, Slot::Ready(stored));
    }

    /// A reference read from a value (an argument, an object): counted locally; the node
    /// learns of this worker's hold once.
    pub(crate) fn borrow(&self, id: ObjectId) {
        let mut inner = self.inner.lock();
        match inner.refs.get_mut(&id) {
            Some((count, _)) => *count += 1,
            None => {
                inner.refs.insert(id, (1, Arc::from("borrowed")));
                inner.send(&ToNode::Hold(vec![id]));
            }
        }
    }

    pub(crate) fn release(&self, id: ObjectId) {
        let mut inner = self.inner.lock();
        if let Some((count, _)) = inner.refs.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                inner.refs.remove(&id);
                inner.cache.remove(&id);
                inner.requested.remove(&id);
                inner.released.push(id);
            }
        }
    }

    pub(crate) fn function_of(&self, id: ObjectId) -> Option<Arc<str>> {
        self.inner.lock().refs.get(&id).map(|(_, f)| f.clone())
    }

    pub(crate) fn cancel(&self, id: ObjectId, force: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.send(&ToNode::Cancel { id, force });
        inner
            .flush()
            .map_err(|e| Error::Disconnected(e.to_string()))
    }

    /// The next call for an async actor's event loop.
    async fn next_call(&self) -> Execute {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.lock();
            match inner.queue.pop_front() {
                Some(exec) => Poll::Ready(exec),
                None => {
                    inner.wakers.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// [`WorkerClient::fetch`] on an async actor's event loop: the call waits as a future, so
    /// the actor's other calls go on meanwhile.
    pub(crate) async fn fetch_async<K: Known + ?Sized>(
        &self,
        ids: &[ObjectId],
        known: &mut K,
        need: usize,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        {
            let mut inner = self.inner.lock();
            inner.request(ids);
            inner
                .flush()
                .map_err(|e| Error::Disconnected(e.to_string()))?;
        }
        let mut cursor = 0;
        let mut timer = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.lock();
            let done = inner.enough(ids, need, &mut cursor)
                || timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
            if !done {
                inner.wakers.push(cx.waker().clone());
                return Poll::Pending;
            }
            inner.learn(ids, known);
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Waits until at least `need` of `ids` have a value (ready or failed) or the deadline
    /// passes; returns the values known, in order.
    pub(crate) fn fetch<K: Known + ?Sized>(
        &self,
        ids: &[ObjectId],
        known: &mut K,
        need: usize,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.request(ids);
        let mut cursor = 0;
        if !inner.enough(ids, need, &mut cursor) {
            if inner.reader.is_some() {
                let lost = |e: FrameError| Error::Disconnected(e.to_string());
                let awaiting = if inner.depth < MAX_NESTING {
                    inner.missing_tasks(ids)
                } else {
                    IdSet::default()
                };
                inner.block(awaiting).map_err(lost)?;
                let mut tally = Tally::new(&inner.cache, ids, need);
                let waited = loop {
                    match inner.wait(ids, need, &mut tally, deadline) {
                        Ok(Wake::Done) => break Ok(()),
                        Ok(Wake::Run(exec)) => {
                            // Run it on top of the blocked task, with the lock released (it
                            // may submit and wait itself), then wait on.
                            let awaiting = std::mem::take(&mut inner.awaiting);
                            inner.blocked = false;
                            inner.depth += 1;
                            drop(inner);
                            let ended = run_task(self, &mut registry::Actor::None, &exec);
                            inner = self.inner.lock();
                            inner.depth -= 1;
                            inner.blocked = true;
                            inner.awaiting = awaiting;
                            // What arrived meanwhile went to the nested task's waits: count
                            // afresh.
                            inner.arrived.clear();
                            tally = Tally::new(&inner.cache, ids, need);
                            inner.done.push(ended);
                            if let Err(e) = inner.flush() {
                                break Err(FrameError::Io(e));
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                let resumed = inner.unblock();
                waited.and(resumed).map_err(lost)?;
            } else {
                // A concurrent actor: the reader thread delivers values; wait for them.
                inner
                    .flush()
                    .map_err(|e| Error::Disconnected(e.to_string()))?;
                while !inner.enough(ids, need, &mut cursor) {
                    match deadline {
                        Some(d) => {
                            if self.changed.wait_until(&mut inner, d).timed_out() {
                                break;
                            }
                        }
                        None => self.changed.wait(&mut inner),
                    }
                }
            }
        }
        inner.learn(ids, known);
        Ok(())
    }
}

impl Inner {
    /// Asks the node for the values of `ids` not known or asked for yet.
    fn request(&mut self, ids: &[ObjectId]) {
        let missing: Vec<ObjectId> = ids
            .iter()
            .copied()
            .filter(|id| !self.cache.contains_key(id) && !self.requested.contains(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            self.requested.extend(missing.iter().copied());
            self.send(&ToNode::Get { ids: missing });
        }
    }

    /// Records in `known` the values of `ids` that are known.
    fn learn<K: Known + ?Sized>(&self, ids: &[ObjectId], known: &mut K) {
        for (i, id) in ids.iter().enumerate() {
            if let Some(slot) = self.cache.get(id) {
                known.learn(i, slot);
            }
        }
    }

    fn send(&mut self, msg: &ToNode) {
        if let Err(e) = encode_frame(msg, &mut self.out) {
            tracing::error!("cannot encode a message for the node: {e}");
        }
    }

    /// Whether `need` of `ids` are known. When all are needed, `cursor` (the first not known
    /// yet) only moves forward, so a wait checks each id once however many frames it takes.
    fn enough(&self, ids: &[ObjectId], need: usize, cursor: &mut usize) -> bool {
        if need >= ids.len() {
            while ids
                .get(*cursor)
                .is_some_and(|id| self.cache.contains_key(id))
            {
                *cursor += 1;
            }
            return *cursor >= ids.len();
        }
        ids.iter().filter(|id| self.cache.contains_key(id)).count() >= need
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.done.is_empty() {
            let done = std::mem::take(&mut self.done);
            if self.timed {
                let sent_us = monotonic_us();
                let runs: Vec<(TaskId, RunTimes)> = done
                    .iter()
                    .filter_map(|e| Some((e.task, e.timing?.wire(sent_us))))
                    .collect();
                if !runs.is_empty() {
                    self.send(&ToNode::Ran { sent_us, runs });
                }
            }
            let done = done.into_iter().map(|e| (e.task, e.outcome)).collect();
            self.send(&ToNode::Done(done));
        }
        if !self.released.is_empty() {
            let released = std::mem::take(&mut self.released);
            self.send(&ToNode::Release(released));
        }
        if !self.out.is_empty() {
            self.writer.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles one message from the node.
    fn handle(&mut self, msg: &ArchivedToWorker) -> std::result::Result<(), Stop> {
        match msg {
            ArchivedToWorker::Execute(tasks) => {
                let mut bounced = Vec::new();
                for task in tasks.iter() {
                    // Sent before the node learned that the running task blocked: the node
                    // runs it elsewhere. (An actor's calls wait here for their turn.)
                    if (self.blocked || self.depth > 0)
                        && matches!(task.kind, prism_graph::ArchivedTaskKind::Normal)
                    {
                        bounced.push(task.task.to_native());
                        continue;
                    }
                    match rkyv::deserialize::<Execute, rkyv::rancor::Error>(task) {
                        Ok(task) => self.queue.push_back(task),
                        Err(e) => return Err(Stop::Lost(format!("undecodable task: {e}"))),
                    }
                }
                if !bounced.is_empty() {
                    self.send(&ToNode::Bounced(bounced));
                }
            }
            ArchivedToWorker::Nested { exec, depth } => {
                let task = exec.task.to_native();
                let wanted = self.blocked
                    && self.nested.is_none()
                    && depth.to_native() == self.depth
                    && self.awaiting.contains(&task);
                if !wanted {
                    // It resumed (or waits for something else) meanwhile.
                    self.send(&ToNode::Bounced(vec![task]));
                    return Ok(());
                }
                match rkyv::deserialize::<Execute, rkyv::rancor::Error>(exec) {
                    Ok(exec) => self.nested = Some(exec),
                    Err(e) => return Err(Stop::Lost(format!("undecodable task: {e}"))),
                }
            }
            ArchivedToWorker::Objects(objects) => {
                for entry in objects.iter() {
                    let (id, value) = (entry.0.to_native(), &entry.1);
                    if !self.requested.remove(&id) {
                        continue; // released meanwhile
                    }
                    let slot = match value {
                        ArchivedObjectValue::Ready(value) => {
                            match ObjectBytes::from_wire(&self.store_dir, value) {
                                Ok(bytes) => Slot::Ready(bytes),
                                Err(e) => Slot::Failed(TaskError::InvalidValue {
                                    task: id.task,
                                    function: String::from("<get>"),
                                    what: format!("object {id}"),
                                    reason: format!("cannot map its shared-memory segment: {e}"),
                                }),
                            }
                        }
                        ArchivedObjectValue::Failed(e) => {
                            match rkyv::deserialize::<TaskError, rkyv::rancor::Error>(e) {
                                Ok(e) => Slot::Failed(e),
                                Err(e) => {
                                    return Err(Stop::Lost(format!("undecodable error: {e}")));
                                }
                            }
                        }
                    };
                    self.cache.insert(id, slot);
                    if self.blocked {
                        self.arrived.push(id);
                    }
                }
            }
            ArchivedToWorker::Cancel { task } => {
                let task = task.to_native();
                if let Some(pos) = self.queue.iter().position(|t| t.task == task)
                    && let Some(exec) = self.queue.remove(pos)
                {
                    let cancelled = TaskError::Cancelled {
                        task,
                        function: exec.function,
                    };
                    self.done.push(Ended {
                        task,
                        outcome: Outcome::Failed(cancelled),
                        timing: None,
                    });
                }
            }
            ArchivedToWorker::Recall { tasks } => {
                let mut returned = Vec::new();
                for task in tasks.iter() {
                    let task = task.to_native();
                    if let Some(pos) = self.queue.iter().position(|t| t.task == task) {
                        self.queue.remove(pos);
                        returned.push(task);
                    }
                }
                if !returned.is_empty() {
                    self.send(&ToNode::Bounced(returned));
                }
            }
            ArchivedToWorker::Shutdown => return Err(Stop::Shutdown),
            ArchivedToWorker::Welcome => {}
        }
        Ok(())
    }

    fn read_frame(&mut self, timeout: Option<Duration>) -> std::result::Result<bool, Stop> {
        let Some(reader) = self.reader.as_mut() else {
            return Err(Stop::Lost("the reader belongs to another thread".into()));
        };
        if let Err(e) = reader.get_ref().set_read_timeout(timeout) {
            return Err(Stop::Lost(e.to_string()));
        }
        match reader.read_frame() {
            Ok(Some(frame)) => {
                let msg = frame
                    .access::<ToWorker>()
                    .map_err(|e| Stop::Lost(e.to_string()))?;
                self.handle(msg)?;
                Ok(true)
            }
            Ok(None) => Err(Stop::Lost("the node closed the connection".into())),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(Stop::Lost(e.to_string())),
        }
    }

    /// Handles every frame already readable, without blocking. True when there was one.
    fn drain(&mut self) -> std::result::Result<bool, Stop> {
        let mut handled = false;
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Ok(handled);
            };
            match poll_now(reader) {
                Ok(Some(frame)) => {
                    let msg = frame
                        .access::<ToWorker>()
                        .map_err(|e| Stop::Lost(e.to_string()))?;
                    self.handle(msg)?;
                    handled = true;
                }
                Ok(None) => return Ok(handled),
                Err(e) => return Err(Stop::Lost(e.to_string())),
            }
        }
    }

    /// The next task to run, pumping the connection (and flushing results) as needed.
    fn next_task(&mut self) -> std::result::Result<Execute, Stop> {
        loop {
            self.drain()?;
            if let Some(task) = self.queue.pop_front() {
                // Results leave before the next task starts: a long task must not hold back
                // the results of the short ones before it.
                if !self.done.is_empty() {
                    self.flush().map_err(|e| Stop::Lost(e.to_string()))?;
                }
                return Ok(task);
            }
            self.flush().map_err(|e| Stop::Lost(e.to_string()))?;
            self.await_input(None)?;
        }
    }

    /// Waits for the node's next message, at most `timeout`: reads without blocking for up to
    /// [`IDLE_SPIN`], yielding the CPU between reads to any other thread that wants it, then
    /// blocks.
    ///
    /// A caller waiting for this worker's answer usually sends the next task within
    /// microseconds, and the values a blocked task waits for often come as quickly; a worker
    /// asleep in a blocking read is woken for each, which on a virtual machine costs more than
    /// a short task (an idle virtual CPU must be woken first). Yielding keeps the spin from
    /// holding the CPU against a thread with work. (Blocking as soon as a yield ran another
    /// thread was tried: it measured worse in every case of the suite.)
    fn await_input(&mut self, timeout: Option<Duration>) -> std::result::Result<(), Stop> {
        let start = Instant::now();
        let spin = timeout.map_or(IDLE_SPIN, |t| t.min(IDLE_SPIN));
        if spin_for(spin, || self.drain().map(|handled| handled.then_some(())))?.is_some() {
            return Ok(());
        }
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        if left.is_some_and(|t| t.is_zero()) {
            return Ok(());
        }
        self.read_frame(left).map(drop)
    }

    /// The tasks making those of `ids` not known yet (as many as the node takes).
    fn missing_tasks(&self, ids: &[ObjectId]) -> IdSet<TaskId> {
        ids.iter()
            .filter(|id| !self.cache.contains_key(id))
            .map(|id| id.task)
            .take(MAX_AWAITING)
            .collect()
    }

    /// The innermost running task blocks in `get`, waiting for `awaiting`: the node gets its
    /// CPU back and the tasks queued here that it can run elsewhere.
    fn block(&mut self, awaiting: IdSet<TaskId>) -> std::result::Result<(), FrameError> {
        let mut returned = Vec::new();
        if self.depth == 0 {
            // An actor's calls stay: they run here, in order, after this one.
            self.queue.retain(|t| {
                let normal = t.kind == TaskKind::Normal;
                if normal {
                    returned.push(t.task);
                }
                !normal
            });
        }
        self.blocked = true;
        self.send(&ToNode::Blocked {
            depth: self.depth,
            returned,
            awaiting: awaiting.iter().copied().collect(),
        });
        self.awaiting = awaiting;
        self.flush()?;
        Ok(())
    }

    /// Waits until `need` of `ids` are known, the deadline passes, or the node sends a task
    /// the blocked one waits for, pumping the connection (and handing back what it bounced).
    fn wait(
        &mut self,
        ids: &[ObjectId],
        need: usize,
        tally: &mut Tally,
        deadline: Option<Instant>,
    ) -> std::result::Result<Wake, FrameError> {
        let lost = |reason: String| FrameError::Io(std::io::Error::other(reason));
        loop {
            if tally.enough(self, ids, need) {
                return Ok(Wake::Done);
            }
            if let Some(exec) = self.nested.take() {
                return Ok(Wake::Run(exec));
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(Wake::Done),
                },
                None => None,
            };
            match self.await_input(timeout) {
                Ok(()) => {}
                Err(Stop::Shutdown) => std::process::exit(0),
                Err(Stop::Lost(reason)) => return Err(lost(reason)),
            }
            // Tasks bounced while blocked go back now, not when the wait ends: the node may
            // have nowhere else to run them.
            self.flush()?;
        }
    }

    /// The innermost task resumes.
    fn unblock(&mut self) -> std::result::Result<(), FrameError> {
        self.blocked = false;
        self.awaiting.clear();
        self.arrived.clear();
        if let Some(exec) = self.nested.take() {
            self.send(&ToNode::Bounced(vec![exec.task]));
        }
        self.send(&ToNode::Unblocked { depth: self.depth });
        self.flush()?;
        Ok(())
    }
}

/// The next frame from the node if one has arrived, without blocking.
fn poll_now(
    reader: &mut FrameReader<UnixStream>,
) -> std::result::Result<Option<Frame>, FrameError> {
    reader.poll_with(|stream, buf| crate::process::recv_now(stream.as_raw_fd(), buf))
}

/// Calls `poll` until it yields something or `spin` has passed, yielding the CPU between
/// calls (see [`Inner::await_input`] for why a worker spins before it sleeps).
fn spin_for<T, E>(
    spin: Duration,
    mut poll: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> std::result::Result<Option<T>, E> {
    let start = Instant::now();
    while start.elapsed() < spin {
        if let Some(found) = poll()? {
            return Ok(Some(found));
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    Ok(None)
}

/// Runs this process as a worker until its node lets it go, then exits, never returning.
/// `connected` gets the client once the link is up, before any task runs (the API makes it this
/// process's context). Tasks run on a thread with a stack of [`WORKER_STACK`] bytes (reserved,
/// touched only as deep as tasks go), since a task blocked in `get` runs the tasks it waits for
/// on top of itself.
pub(crate) fn run(connected: fn(Arc<WorkerClient>)) -> ! {
    let labelled = output::start();
    let work = move || match connect() {
        Ok(client) => {
            connected(client.clone());
            serve(client)
        }
        Err(e) => {
            eprintln!("prism worker: {e}");
            1
        }
    };
    let code = match std::thread::Builder::new()
        .name("prism-worker".into())
        .stack_size(WORKER_STACK)
        .spawn(work)
    {
        Ok(thread) => thread.join().unwrap_or(1),
        Err(e) => {
            tracing::warn!("cannot start the worker thread ({e}): tasks run on the main thread");
            work()
        }
    };
    if let Some(labelled) = labelled {
        labelled.finish();
    }
    std::process::exit(code)
}

/// The stack of a worker's task thread: room for [`MAX_NESTING`] tasks of 256 KiB each (a
/// plain nested task takes about 20 KiB in a debug build).
const WORKER_STACK: usize = 1 << 30;

/// How many tasks a worker runs on top of one another; a task blocked deeper waits for
/// other workers to run what it needs.
const MAX_NESTING: u32 = 4096;

fn connect() -> Result<Arc<WorkerClient>> {
    let worker: u64 = std::env::var(ENV_WORKER)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Startup(format!("{ENV_WORKER} is not a number")))?;
    let store_dir = std::path::PathBuf::from(
        std::env::var_os(ENV_SESSION_DIR)
            .ok_or_else(|| Error::Startup(format!("{ENV_SESSION_DIR} is not set")))?,
    );
    let threshold: usize = std::env::var(ENV_INLINE_THRESHOLD)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Startup(format!("{ENV_INLINE_THRESHOLD} is not a number")))?;
    let capacity: u64 = std::env::var(ENV_STORE_CAPACITY)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Startup(format!("{ENV_STORE_CAPACITY} is not a number")))?;
    let stream = crate::process::inherited_link()
        .map_err(|e| Error::Startup(format!("the link to the node: {e}")))?;
    let writer = stream
        .try_clone()
        .map_err(|e| Error::Startup(e.to_string()))?;
    let mut inner = Inner {
        reader: Some(FrameReader::new(stream, prism_transport::DEFAULT_MAX_FRAME)),
        writer,
        out: Vec::new(),
        queue: VecDeque::new(),
        done: Vec::new(),
        timed: std::env::var(crate::config::ENV_TASK_EVENTS_MAX).map_or(true, |v| v.trim() != "0"),
        cache: IdMap::default(),
        requested: IdSet::default(),
        refs: IdMap::default(),
        released: Vec::new(),
        blocked: false,
        depth: 0,
        awaiting: IdSet::default(),
        nested: None,
        arrived: Vec::new(),
        wakers: Vec::new(),
        store_dir: store_dir.clone(),
    };
    inner.send(&ToNode::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        fingerprint: fingerprint(),
        worker,
        pid: std::process::id(),
    }));
    inner
        .flush()
        .map_err(|e| Error::Startup(format!("hello: {e}")))?;
    let client = Arc::new(WorkerClient {
        inner: Mutex::new(inner),
        owner: worker,
        seq: AtomicU64::new(1),
        store_dir,
        threshold,
        capacity,
        changed: parking_lot::Condvar::new(),
        registry: registry::Registry::load(),
        segments: Mutex::new(SegmentCache::default()),
    });
    Ok(client)
}

fn serve(client: Arc<WorkerClient>) -> i32 {
    let mut actor = registry::Actor::None;
    loop {
        let next = client.inner.lock().next_task();
        let exec = match next {
            Ok(exec) => exec,
            Err(Stop::Shutdown) => {
                let _ = client.inner.lock().flush();
                return 0;
            }
            Err(Stop::Lost(reason)) => {
                tracing::debug!("worker exits: {reason}");
                return 0;
            }
        };
        let ended = run_task(&client, &mut actor, &exec);
        let mut inner = client.inner.lock();
        inner.done.push(ended);
        if let registry::Actor::Shared(shared, threads) = &actor {
            // A concurrent actor was just made: calls run on threads from now on.
            let (shared, threads) = (shared.clone(), *threads);
            drop(inner);
            return serve_concurrent(client, shared, threads);
        }
        if let registry::Actor::Async(..) = actor {
            // An async actor was just made: calls run on its event loop from now on.
            drop(inner);
            let registry::Actor::Async(state, limit) = std::mem::take(&mut actor) else {
                unreachable!("matched above");
            };
            return serve_async(client, state, limit);
        }
    }
}

/// This host's monotonic clock, in microseconds: what the times of runs are measured by
/// (shared by the processes of a host, and never stepped like the wall clock).
fn monotonic_us() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which lives for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// A task that ended, and how its time went (none for one cancelled before it ran).
#[derive(Debug)]
struct Ended {
    task: TaskId,
    outcome: Outcome,
    timing: Option<Timing>,
}

/// When a task's run began, finished resolving its arguments, returned, and had its results
/// stored, by [`monotonic_us`].
#[derive(Debug, Clone, Copy)]
struct Timing {
    start: u64,
    fetched: u64,
    ran: u64,
    end: u64,
}

impl Timing {
    /// The times from `start`, `fetched` and `ran` to now.
    fn since(start: u64, fetched: u64, ran: u64) -> Timing {
        Timing {
            start,
            fetched,
            ran,
            end: monotonic_us(),
        }
    }

    /// The wire form, for a message written at `sent`.
    fn wire(self, sent: u64) -> RunTimes {
        RunTimes {
            args_us: self.fetched.saturating_sub(self.start),
            run_us: self.ran.saturating_sub(self.fetched),
            store_us: self.end.saturating_sub(self.ran),
            ago_us: sent.saturating_sub(self.end),
        }
    }
}

/// Runs one task and stores its results.
fn run_task(client: &WorkerClient, actor: &mut registry::Actor, exec: &Execute) -> Ended {
    let start = monotonic_us();
    let args = client.args_for(exec);
    let fetched = monotonic_us();
    let returned = args.and_then(|args| registry::execute(&client.registry, actor, exec, &args));
    let ran = monotonic_us();
    let outcome = outcome_of(client, exec, returned);
    Ended {
        task: exec.task,
        outcome,
        timing: Some(Timing::since(start, fetched, ran)),
    }
}

/// What a task ended with: its return values stored, or its error.
fn outcome_of(
    client: &WorkerClient,
    exec: &Execute,
    returned: std::result::Result<registry::Returned, TaskError>,
) -> Outcome {
    match returned {
        Ok((values, nested)) => store_returns(client, exec, values, nested),
        Err(error) => Outcome::Failed(error),
    }
}

/// Gives the connection's reading to the caller's thread (a concurrent or async actor's
/// reader), after sending what is buffered; `Err` holds the worker's exit code.
fn take_reader(client: &WorkerClient) -> std::result::Result<FrameReader<UnixStream>, i32> {
    let mut inner = client.inner.lock();
    let reader = inner.reader.take().ok_or(1)?;
    inner.flush().map_err(|_| 0)?;
    Ok(reader)
}

/// The worker of an actor with `max_concurrency` above 1: this thread only reads the
/// connection; `threads` executors run the calls.
fn serve_concurrent(client: Arc<WorkerClient>, shared: registry::SharedActor, threads: u32) -> i32 {
    let reader = match take_reader(&client) {
        Ok(reader) => reader,
        Err(code) => return code,
    };
    for i in 0..threads {
        let client = client.clone();
        let mut actor = registry::Actor::Shared(shared.clone(), threads);
        let spawned = std::thread::Builder::new()
            .name(format!("prism-actor-{i}"))
            .spawn(move || {
                loop {
                    let exec = {
                        let mut inner = client.inner.lock();
                        loop {
                            if let Some(exec) = inner.queue.pop_front() {
                                break exec;
                            }
                            client.changed.wait(&mut inner);
                        }
                    };
                    let ended = run_task(&client, &mut actor, &exec);
                    let mut inner = client.inner.lock();
                    inner.done.push(ended);
                    if inner.flush().is_err() {
                        std::process::exit(0);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start an actor thread: {e}");
            return 1;
        }
    }
    read_loop(&client, reader)
}

/// The reading thread of a concurrent or async actor: handles the node's messages until the
/// link ends, then gives the worker's exit code. Calls go to the queue; whoever waits for a
/// call or a value is woken (threads by the condition variable, futures by their wakers).
fn read_loop(client: &WorkerClient, mut reader: FrameReader<UnixStream>) -> i32 {
    loop {
        let polled = spin_for(IDLE_SPIN, || poll_now(&mut reader));
        let frame = match polled {
            Ok(Some(frame)) => frame,
            Ok(None) => match reader.read_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => return 0,
            },
            Err(_) => return 0,
        };
        let mut inner = client.inner.lock();
        let handled = match frame.access::<ToWorker>() {
            Ok(msg) => inner.handle(msg),
            Err(e) => Err(Stop::Lost(e.to_string())),
        };
        match handled {
            Ok(()) => {
                if inner.flush().is_err() {
                    return 0;
                }
            }
            Err(Stop::Shutdown) => {
                let _ = inner.flush();
                return 0;
            }
            Err(Stop::Lost(reason)) => {
                tracing::debug!("worker exits: {reason}");
                return 0;
            }
        }
        let wakers = std::mem::take(&mut inner.wakers);
        drop(inner);
        client.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }
}

thread_local! {
    /// Set on the thread that runs an async actor's event loop: waits for objects there are
    /// futures, not blocked threads.
    static ON_EVENT_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs an async actor's event loop.
pub(crate) fn on_event_loop() -> bool {
    ON_EVENT_LOOP.with(std::cell::Cell::get)
}

/// The worker of an async actor: this thread reads the connection; the actor's calls run on
/// one event loop thread, at most `limit` at a time, in the order they arrive (each then goes
/// as far as its awaits let it).
fn serve_async(client: Arc<WorkerClient>, state: registry::ActorState, limit: u32) -> i32 {
    let reader = match take_reader(&client) {
        Ok(reader) => reader,
        Err(code) => return code,
    };
    let looping = client.clone();
    let spawned = std::thread::Builder::new()
        .name("prism-actor-loop".into())
        .stack_size(WORKER_STACK)
        .spawn(move || run_event_loop(&looping, state, limit));
    if let Err(e) = spawned {
        tracing::error!("cannot start the actor's event loop: {e}");
        return 1;
    }
    read_loop(&client, reader)
}

fn run_event_loop(client: &Arc<WorkerClient>, state: registry::ActorState, limit: u32) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the actor's event loop: {e}");
            std::process::exit(1);
        }
    };
    ON_EVENT_LOOP.with(|on| on.set(true));
    let calls = tokio::task::LocalSet::new();
    calls.block_on(&runtime, async {
        let actor: registry::AsyncActor = std::rc::Rc::new(tokio::sync::RwLock::new(state));
        let permits = Arc::new(tokio::sync::Semaphore::new(limit as usize));
        // Results go out once per turn of the loop, however many calls ended in it.
        let finished = std::rc::Rc::new(tokio::sync::Notify::new());
        let flusher = (client.clone(), finished.clone());
        tokio::task::spawn_local(async move {
            let (client, finished) = flusher;
            loop {
                finished.notified().await;
                if client.inner.lock().flush().is_err() {
                    std::process::exit(0);
                }
            }
        });
        loop {
            let exec = client.next_call().await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return; // never closed
            };
            let start = monotonic_us();
            let call = client
                .args_for(&exec)
                .and_then(|args| registry::start_async(&client.registry, &actor, &exec, args));
            let fetched = monotonic_us();
            let client = client.clone();
            let finished = finished.clone();
            tokio::task::spawn_local(async move {
                let returned = match call {
                    Ok(call) => call.await,
                    Err(error) => Err(error),
                };
                let ran = monotonic_us();
                let outcome = outcome_of(&client, &exec, returned);
                drop(permit);
                let ended = Ended {
                    task: exec.task,
                    outcome,
                    timing: Some(Timing::since(start, fetched, ran)),
                };
                client.inner.lock().done.push(ended);
                finished.notify_one();
            });
        }
    });
}

/// Mappings of recently used argument segments, so repeated tasks on one large object map it
/// once. Bounded, and never trusted past the file they mapped: once an object is freed its
/// segment may be pooled and refilled with another object's bytes, so every entry whose file
/// is gone or was replaced is dropped before a task runs (see [`SegmentCache::forget_freed`]).
#[derive(Default)]
struct SegmentCache {
    recent: VecDeque<(ObjectId, (u64, u64), ObjectBytes)>,
}

const SEGMENT_CACHE: usize = 8;

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("mapped", &self.recent.len())
            .finish()
    }
}

/// The (device, inode) of `path`, which tells one file under a name from the next.
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl SegmentCache {
    /// Drops the mappings of segments whose object was freed since (its file was removed, or
    /// moved to the pool, or another file has its name now).
    fn forget_freed(&mut self, dir: &std::path::Path) {
        if self.recent.is_empty() {
            return;
        }
        self.recent.retain(|(id, identity, _)| {
            file_identity(&store::segment_path(dir, *id)) == Some(*identity)
        });
    }

    fn get(
        &mut self,
        dir: &std::path::Path,
        id: ObjectId,
        len: u64,
    ) -> std::io::Result<ObjectBytes> {
        if let Some(pos) = self.recent.iter().position(|(i, _, _)| *i == id) {
            let entry = self.recent.remove(pos).expect("position is in range");
            let bytes = entry.2.clone();
            self.recent.push_front(entry);
            return Ok(bytes);
        }
        let path = store::segment_path(dir, id);
        let identity = file_identity(&path);
        let bytes = ObjectBytes::Shared(Arc::new(Segment::open(dir, id, len)?));
        // Kept only if the file mapped is surely the one identified (no rename in between).
        if let Some(identity) = identity
            && file_identity(&path) == Some(identity)
        {
            self.recent.push_front((id, identity, bytes.clone()));
            self.recent.truncate(SEGMENT_CACHE);
        }
        Ok(bytes)
    }
}

/// The task's arguments as aligned bytes: inline values copied once, shared ones mapped.
fn resolve_args(
    dir: &std::path::Path,
    segments: &mut SegmentCache,
    exec: &Execute,
) -> std::result::Result<Vec<ObjectBytes>, TaskError> {
    exec.args
        .iter()
        .enumerate()
        .map(|(i, value)| match value {
            Value::Inline(bytes) => Ok(ObjectBytes::inline(bytes)),
            Value::Shared { id, len } => segments.get(dir, *id, *len).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    TaskError::ArgumentMissing {
                        task: exec.task,
                        function: exec.function.clone(),
                        index: i as u32,
                        object: *id,
                        reason: e.to_string(),
                    }
                } else {
                    TaskError::InvalidValue {
                        task: exec.task,
                        function: exec.function.clone(),
                        what: format!("argument {i} (object {id})"),
                        reason: format!("cannot map its shared-memory segment: {e}"),
                    }
                }
            }),
        })
        .collect()
}

/// Return values go back inline when small, else into shared-memory segments of their own.
fn store_returns(
    client: &WorkerClient,
    exec: &Execute,
    values: Vec<AlignedVec>,
    nested: Vec<Vec<ObjectId>>,
) -> Outcome {
    let mut out = Vec::with_capacity(values.len());
    for (i, bytes) in values.into_iter().enumerate() {
        let id = ObjectId::new(exec.task, i as u32);
        if bytes.len() < client.threshold {
            out.push(Value::Inline(bytes.to_vec()));
            continue;
        }
        if bytes.len() as u64 > client.capacity {
            return Outcome::Failed(TaskError::InvalidValue {
                task: exec.task,
                function: exec.function.clone(),
                what: format!("return value {i}"),
                reason: format!(
                    "its {} bytes exceed the object store's capacity of {} bytes",
                    bytes.len(),
                    client.capacity
                ),
            });
        }
        let fill = |buf: &mut [u8]| {
            buf.copy_from_slice(&bytes);
            Ok::<_, std::convert::Infallible>(bytes.len())
        };
        store::take_pooled(&client.store_dir, id, bytes.len() as u64);
        match Segment::create_with(&client.store_dir, id, bytes.len(), fill) {
            Ok(_) => out.push(Value::Shared {
                id,
                len: bytes.len() as u64,
            }),
            Err(e) => {
                return Outcome::Failed(TaskError::InvalidValue {
                    task: exec.task,
                    function: exec.function.clone(),
                    what: format!("return value {i}"),
                    reason: format!("cannot write it to shared memory: {e}"),
                });
            }
        }
    }
    Outcome::Returned {
        values: out,
        nested,
    }
}
