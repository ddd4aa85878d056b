//! The worker process: started by its node from the program's own executable, it connects back,
//! says hello, and runs the tasks it is sent on its main thread, one after another. The same
//! thread pumps the connection: between tasks it reads what arrived without blocking (so a
//! cancel lands before the task starts), and a task blocked in `get` keeps pumping while it
//! waits, handing its queued tasks back to the node and bouncing new ones, so nested tasks
//! cannot deadlock. Results are batched into one write while more tasks are queued. What a task
//! submits while it works on without waiting leaves within a bounded delay ([`pump`]). The books
//! behind all this (queue, values, references, blocking) are [`proto::worker`]'s; this module
//! is their shell: the socket, the spinning, the segments, the clock and the running.
//!
//! [`proto::worker`]: crate::proto::worker

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prism_graph::{ActorId, ObjectId, PlacementStrategy, Resources, TaskError, TaskId, TaskSpec};
use prism_transport::{
    ActorConfig, Answer, ArchivedActorPlace, ArchivedToWorker, Execute, Frame, FrameError,
    FrameReader, Hello, Outcome, PROTOCOL_VERSION, ToWorker, Value,
};
use rkyv::util::AlignedVec;

use crate::generator::ItemSink;
use crate::process::{
    ENV_INLINE_THRESHOLD, ENV_ROLE, ENV_STORE_CAPACITY, ENV_STORE_DIR, ENV_WORKER, fingerprint,
};
use crate::proto::owner::Known;
use crate::proto::worker::{Ended, Stop, Tally, Timing, Wake, Worker, answer_of};
use crate::registry;
use crate::store::{self, ObjectBytes, Segment};
use crate::{Error, Result};

mod links;
mod output;
mod pump;

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
    /// Wakes the pump (see [`pump`]).
    doorbell: pump::Doorbell,
}

#[derive(Debug)]
struct Inner {
    /// The connection's reading side; taken by the reader thread of a concurrent actor.
    reader: Option<FrameReader<UnixStream>>,
    writer: UnixStream,
    /// The books.
    core: Worker,
    /// Futures on an async actor's event loop waiting for a call or a value: woken after
    /// each message from the node.
    wakers: Vec<Waker>,
    /// The node's directory of shared-memory segments.
    store_dir: std::path::PathBuf,
    /// The pump's doorbell rang and the pump has not flushed since.
    pump_rung: bool,
    /// Since when ends wait for the next flush (see [`Inner::next_task`]).
    ends_held: Option<Instant>,
    /// The direct endpoint and its links, for a worker a node daemon started.
    direct: Option<links::DirectLinks>,
}

impl WorkerClient {
    /// Drives the direct endpoint from a thread that does not hold the books (an actor's
    /// reader): what arrived is handled, what it answered sent, and waiters woken. `Err`
    /// when the worker must exit.
    fn pump_direct(&self) -> std::result::Result<bool, Stop> {
        let mut inner = self.inner.lock();
        let handled = inner.pump_direct()?;
        if !handled {
            return Ok(false);
        }
        inner
            .flush()
            .map_err(|e| Stop::Lost(format!("the link to the node broke: {e}")))?;
        let wakers = std::mem::take(&mut inner.wakers);
        drop(inner);
        self.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
        Ok(true)
    }

    pub(crate) fn next_task_id(&self) -> TaskId {
        TaskId::new(self.owner, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn submit(&self, spec: TaskSpec, failed: Option<TaskError>) {
        let mut inner = self.inner.lock();
        let escaping = inner.core.escaping(&spec);
        inner.core.hand_over(&escaping);
        if inner.core.timed() {
            inner.core.set_now(monotonic_us());
        }
        inner.core.submit(spec, failed);
        self.wake_pump(&mut inner);
    }

    /// Has the pump send what the books owe the node within [`pump::FLUSH_DELAY`] and read
    /// what comes back while the running task works on, when there is any of that.
    fn wake_pump(&self, inner: &mut Inner) {
        if !inner.pump_rung && inner.core.under_way() {
            inner.pump_rung = true;
            self.doorbell.ring();
        }
    }

    /// Hands the objects among `ids` this worker owns to the node, without waiting for their
    /// values (see [`crate::proto::worker::Worker::hand_over`]): a reference to them is about
    /// to leave this process.
    pub(crate) fn promote(&self, ids: &[ObjectId]) {
        let mut inner = self.inner.lock();
        if inner.core.hand_over(ids) {
            self.wake_pump(&mut inner);
        }
    }

    /// Running task `task` encoded a return value holding the references and actor handles
    /// in `nested`, which goes before the task's end is stored: the objects among them this
    /// worker owns go to the node now, and all are held here until the end is queued.
    fn returning(&self, task: TaskId, nested: &crate::value::Nested) {
        let mut inner = self.inner.lock();
        inner.core.hand_over_returned(task, &nested.objects);
        inner
            .core
            .hold_returned(task, &nested.objects, &nested.actors);
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

    pub(crate) fn put(&self, id: ObjectId, stored: ObjectBytes, nested: crate::value::Nested) {
        let crate::value::Nested { objects, actors } = nested;
        let mut inner = self.inner.lock();
        inner.core.hand_over(&objects);
        inner.core.put(id, stored, objects, actors);
    }

    /// A reference read from a value (an argument, an object): counted locally; the node
    /// learns of this worker's hold once.
    pub(crate) fn borrow(&self, id: ObjectId) {
        self.inner.lock().core.borrow(id);
    }

    pub(crate) fn release(&self, id: ObjectId) {
        self.inner.lock().core.release(id);
    }

    /// A handle to `actor` made in this process (see [`Worker::actor_borrow`]).
    ///
    /// [`Worker::actor_borrow`]: crate::proto::worker::Worker::actor_borrow
    pub(crate) fn actor_borrow(&self, actor: ActorId) {
        self.inner.lock().core.actor_borrow(actor);
    }

    /// A handle to `actor` dropped in this process.
    pub(crate) fn actor_release(&self, actor: ActorId) {
        self.inner.lock().core.actor_release(actor);
    }

    pub(crate) fn function_of(&self, id: ObjectId) -> Option<Arc<str>> {
        self.inner.lock().core.function_of(id)
    }

    /// Creates an actor (see [`Worker::create_actor`]); a named one waits for the node's
    /// answer: the actor made or found, or the name taken.
    ///
    /// [`Worker::create_actor`]: crate::proto::worker::Worker::create_actor
    pub(crate) fn create_actor(
        &self,
        spec: TaskSpec,
        failed: Option<TaskError>,
        config: ActorConfig,
    ) -> Result<ActorId> {
        // A named or detached actor's creation is answered (the name may be taken, a
        // detached actor is made elsewhere).
        if config.name.is_none() && !config.detached {
            let mut inner = self.inner.lock();
            let actor = inner.core.create_actor(spec, failed, config, None);
            inner.flush().map_err(disconnected)?;
            return Ok(actor);
        }
        let answer = self.answer_id();
        self.inner
            .lock()
            .core
            .create_actor(spec, failed, config, Some(answer));
        self.actor_answer(answer).map(|(actor, _)| actor)
    }

    /// The actor named `name` in `namespace` (its job's when `None`) and its class; this
    /// worker holds a handle to it.
    pub(crate) fn lookup_actor(
        &self,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<(ActorId, String)> {
        let answer = self.answer_id();
        let namespace = namespace.map(str::to_string);
        self.inner
            .lock()
            .core
            .lookup_actor(name.to_string(), namespace, answer);
        self.actor_answer(answer)
    }

    /// Kills `actor`; another job's is killed by its driver, on the head's order, before
    /// this returns.
    pub(crate) fn kill_actor(&self, actor: ActorId) -> Result<()> {
        if crate::proto::node::foreign::is_foreign(actor) {
            let answer = self.answer_id();
            self.inner.lock().core.kill_foreign(actor, answer);
            return match self.answer(answer)? {
                Answer::Ready => Ok(()),
                Answer::Refused(refusal) => Err(Error::from_refusal(refusal)),
                other => Err(unexpected(other)),
            };
        }
        let mut inner = self.inner.lock();
        inner.core.kill_actor(actor);
        inner.flush().map_err(disconnected)
    }

    /// Makes a placement group; its number once the node made it.
    pub(crate) fn create_group(
        &self,
        bundles: Vec<Resources>,
        strategy: PlacementStrategy,
    ) -> Result<u64> {
        let answer = self.answer_id();
        self.inner
            .lock()
            .core
            .create_group(bundles, strategy, answer);
        match self.answer(answer)? {
            Answer::Group(group) => Ok(group),
            other => Err(unexpected(other)),
        }
    }

    /// Asks to hear once placement group `group` is reserved: the object the node answers in
    /// (see [`answer_of`]), which this worker holds.
    pub(crate) fn group_ready(&self, group: u64) -> Result<ObjectId> {
        let answer = self.answer_id();
        let mut inner = self.inner.lock();
        inner.core.group_ready(group, answer);
        inner.flush().map_err(disconnected)?;
        Ok(answer)
    }

    pub(crate) fn remove_group(&self, group: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.core.remove_group(group);
        inner.flush().map_err(disconnected)
    }

    /// A fresh object for the node to answer a request in.
    fn answer_id(&self) -> ObjectId {
        ObjectId::new(self.next_task_id(), 0)
    }

    /// Waits for the node's answer in object `answer`, then lets the object go.
    fn answer(&self, answer: ObjectId) -> Result<Answer> {
        let mut slots = [None];
        let fetched = self.fetch(&[answer], &mut slots[..], 1, None);
        let [slot] = slots;
        self.take_answer(answer, slot, fetched)?
            .ok_or_else(|| Error::Disconnected("the node did not answer".into()))
    }

    /// The node's answer in object `answer`, as a fetch that ended with `fetched` read it into
    /// `slot` (none: not answered in time); the object goes either way.
    pub(crate) fn take_answer(
        &self,
        answer: ObjectId,
        slot: Option<crate::proto::owner::Slot>,
        fetched: Result<()>,
    ) -> Result<Option<Answer>> {
        self.release(answer);
        fetched?;
        slot.map(|slot| answer_of(&slot).map_err(Error::Disconnected))
            .transpose()
    }

    /// An answer that names an actor (which this worker now holds), or why there is none.
    fn actor_answer(&self, answer: ObjectId) -> Result<(ActorId, String)> {
        match self.answer(answer)? {
            Answer::Actor { actor, class } => {
                self.inner.lock().core.adopt_actor(actor);
                Ok((actor, class))
            }
            Answer::Refused(refusal) => Err(Error::from_refusal(refusal)),
            other => Err(unexpected(other)),
        }
    }

    /// Takes item `index` of this process's stream of generator `task`.
    pub(crate) fn stream_next(&self, task: TaskId, index: u32) {
        let mut inner = self.inner.lock();
        let function = inner
            .core
            .function_of(ObjectId::new(task, 0))
            .unwrap_or_else(|| Arc::from("stream"));
        inner.core.stream_next(task, index, function);
        if let Err(e) = inner.flush() {
            tracing::debug!("cannot ask for a stream's item: {e}");
        }
    }

    pub(crate) fn cancel(&self, id: ObjectId, force: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.core.cancel(id, force);
        inner
            .flush()
            .map_err(|e| Error::Disconnected(e.to_string()))
    }

    /// The next call for an async actor's event loop.
    async fn next_call(&self) -> Execute {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.lock();
            match inner.core.next_task() {
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
            inner.core.request(ids);
            inner
                .flush()
                .map_err(|e| Error::Disconnected(e.to_string()))?;
        }
        let mut cursor = 0;
        let mut timer = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.lock();
            let done = inner.core.enough(ids, need, &mut cursor)
                || timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
            if !done {
                inner.wakers.push(cx.waker().clone());
                return Poll::Pending;
            }
            inner.core.learn(ids, known);
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
        inner.core.request(ids);
        let mut cursor = 0;
        if !inner.core.enough(ids, need, &mut cursor) {
            if inner.reader.is_some() {
                let lost = |e: FrameError| Error::Disconnected(e.to_string());
                let awaiting = inner.core.missing_tasks(ids, MAX_NESTING);
                inner.core.block(awaiting);
                inner.flush().map_err(|e| lost(FrameError::Io(e)))?;
                let mut tally = Tally::new(&inner.core, ids, need);
                let waited = loop {
                    match inner.wait(ids, need, &mut tally, deadline) {
                        Ok(Some(exec)) => {
                            // Run it on top of the blocked task, with the lock released (it
                            // may submit and wait itself), then wait on.
                            let awaiting = inner.core.nest(&exec);
                            drop(inner);
                            let ended = run_task(self, &mut registry::Actor::None, &exec);
                            inner = self.inner.lock();
                            let dir = inner.store_dir.clone();
                            inner.core.nested_ended(ended, awaiting, &mut |value| {
                                ObjectBytes::from_wire(&dir, value)
                            });
                            tally = Tally::new(&inner.core, ids, need);
                            if let Err(e) = inner.flush() {
                                break Err(FrameError::Io(e));
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                inner.core.unblock();
                let resumed = inner.flush().map_err(FrameError::Io);
                waited.and(resumed).map_err(lost)?;
                // The task works on: its own tasks still under way are the pump's to follow.
                self.wake_pump(&mut inner);
            } else {
                // A concurrent actor: the reader thread delivers values; wait for them.
                inner
                    .flush()
                    .map_err(|e| Error::Disconnected(e.to_string()))?;
                while !inner.core.enough(ids, need, &mut cursor) {
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
        inner.core.learn(ids, known);
        Ok(())
    }
}

/// The link to the node broke.
fn disconnected(e: std::io::Error) -> Error {
    Error::Disconnected(e.to_string())
}

/// An answer of another kind than the request's (a node of another build).
pub(crate) fn unexpected(answer: Answer) -> Error {
    Error::Disconnected(format!("the node answered out of turn: {answer:?}"))
}

impl Inner {
    /// Writes what the books owe the node.
    fn flush(&mut self) -> std::io::Result<()> {
        self.ends_held = None;
        for id in self.core.take_unlinked() {
            crate::store::unlink(&self.store_dir, id);
        }
        let out = self.core.transmit(monotonic_us);
        if !out.is_empty() {
            self.writer.write_all(out)?;
            out.clear();
        }
        if let Some(links) = &mut self.direct {
            links.send(&mut self.core);
        }
        Ok(())
    }

    /// Drives the direct endpoint and hands what arrived to the books; true when frames were
    /// handled.
    fn pump_direct(&mut self) -> std::result::Result<bool, Stop> {
        let Some(links) = &mut self.direct else {
            return Ok(false);
        };
        self.core.set_now(monotonic_us());
        let dir = &self.store_dir;
        links.pump(&mut self.core, &mut |value| {
            ObjectBytes::from_wire(dir, value)
        })
    }

    /// The direct endpoint's socket and how long its timers let a thread sleep, for the pump.
    fn direct_wait(&self) -> Option<(std::os::fd::RawFd, Option<Duration>)> {
        let links = self.direct.as_ref()?;
        Some((links.fd(), links.sleep_at_most()))
    }

    /// The sockets a waiting thread sleeps on: the node's link (while this thread reads it)
    /// and the direct endpoint's; and how long it may sleep for the endpoint's timers.
    fn wait_fds(&self) -> (Vec<std::os::fd::RawFd>, Option<Duration>) {
        let mut fds = Vec::with_capacity(2);
        if let Some(reader) = &self.reader {
            fds.push(reader.get_ref().as_raw_fd());
        }
        let mut sleep = None;
        if let Some(links) = &self.direct {
            fds.push(links.fd());
            sleep = links.sleep_at_most();
        }
        (fds, sleep)
    }

    /// Hands one message from the node to the books, mapping the values it carries. Word
    /// that a worker this one sends to directly died (a lease ended, an actor restarts or is
    /// gone) waits until what the direct links brought so far is handled: an end that worker
    /// sent just before it died, already at this host, counts.
    fn handle(&mut self, msg: &ArchivedToWorker) -> std::result::Result<(), Stop> {
        let death = match msg {
            ArchivedToWorker::LeaseEnded { .. } => true,
            ArchivedToWorker::ActorAt { place, .. } => matches!(
                place,
                ArchivedActorPlace::Restarting { .. } | ArchivedActorPlace::Dead(_)
            ),
            _ => false,
        };
        if death {
            self.pump_direct()?;
        }
        self.core.set_now(monotonic_us());
        let dir = &self.store_dir;
        self.core
            .handle(msg, &mut |value| ObjectBytes::from_wire(dir, value))
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

    /// Handles every frame already readable, without blocking (the direct links' too). True
    /// when there was one.
    fn drain(&mut self) -> std::result::Result<bool, Stop> {
        let mut handled = self.pump_direct()?;
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
    fn next_task(&mut self, doorbell: &pump::Doorbell) -> std::result::Result<Execute, Stop> {
        loop {
            self.drain()?;
            if let Some(task) = self.core.next_task() {
                // Results leave before the next task starts: a long task must not hold back
                // the results of the short ones before it. On the driver's direct link, where
                // each write is a datagram the driver decrypts, the ends of tasks that follow
                // one another within ENDS_HELD go together: the pump sends them by then if no
                // later end does.
                if self.core.has_ended() {
                    if self.ends_wait() {
                        if !self.pump_rung {
                            self.pump_rung = true;
                            doorbell.ring();
                        }
                    } else {
                        self.flush().map_err(|e| Stop::Lost(e.to_string()))?;
                    }
                }
                return Ok(task);
            }
            self.flush().map_err(|e| Stop::Lost(e.to_string()))?;
            self.await_input(None)?;
        }
    }

    /// Whether the ends of tasks run so far wait for the next flush: they go on the driver's
    /// link, and the first of them waits for less than [`ENDS_HELD`].
    fn ends_wait(&mut self) -> bool {
        if !self.core.ends_on_driver_link() {
            return false;
        }
        let now = Instant::now();
        now.duration_since(*self.ends_held.get_or_insert(now)) < ENDS_HELD
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
        if self.direct.is_none() {
            return self.read_frame(left).map(drop);
        }
        // Two sockets to wait on: sleep until either has something (or the endpoint's timers
        // are due), then read both.
        let (fds, sleep) = self.wait_fds();
        let sleep = match (left, sleep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        links::wait_readable(&fds, sleep);
        self.drain().map(drop)
    }

    /// Waits until `need` of `ids` are known or the deadline passes (`None`), or the node
    /// sends a task the blocked one waits for (to run on top of it), pumping the connection
    /// (and handing back what it bounced).
    fn wait(
        &mut self,
        ids: &[ObjectId],
        need: usize,
        tally: &mut Tally,
        deadline: Option<Instant>,
    ) -> std::result::Result<Option<Execute>, FrameError> {
        let lost = |reason: String| FrameError::Io(std::io::Error::other(reason));
        loop {
            match self.core.wake(ids, need, tally) {
                Wake::Done => return Ok(None),
                Wake::Run(exec) => return Ok(Some(exec)),
                Wake::Wait => {}
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
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
}

/// How long the ends of tasks that follow one another wait to go together on the driver's
/// direct link (the pump's own delay: [`pump::FLUSH_DELAY`]).
const ENDS_HELD: Duration = pump::FLUSH_DELAY;

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
        std::env::var_os(ENV_STORE_DIR)
            .ok_or_else(|| Error::Startup(format!("{ENV_STORE_DIR} is not set")))?,
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
    let mut reader = FrameReader::new(stream, prism_transport::DEFAULT_MAX_FRAME);
    // A node daemon's worker: its first frame is its direct endpoint's identity. Without an
    // endpoint the worker still works, through the nodes' relays.
    let direct = match std::env::var_os(crate::process::ENV_DIRECT) {
        Some(_) => match links::DirectLinks::open(&mut reader, worker) {
            Ok(links) => Some(links),
            Err(e) => {
                tracing::warn!(
                    worker,
                    "no direct endpoint (frames go through the nodes): {e}"
                );
                None
            }
        },
        None => None,
    };
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        fingerprint: fingerprint(),
        worker,
        pid: std::process::id(),
        direct: direct.as_ref().map(links::DirectLinks::addr),
    };
    // Workers measure run times unless the task events are off (`PRISM_TASK_EVENTS_MAX=0`).
    let timed = crate::config::env_switch(crate::config::ENV_TASK_EVENTS_MAX);
    let mut inner = Inner {
        reader: Some(reader),
        writer,
        core: Worker::new(timed, worker),
        wakers: Vec::new(),
        store_dir: store_dir.clone(),
        pump_rung: false,
        ends_held: None,
        direct,
    };
    if inner.direct.is_some() {
        inner.core.set_linking();
    }
    inner.core.hello(hello);
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
        doorbell: pump::Doorbell::new()
            .map_err(|e| Error::Startup(format!("the pump's doorbell: {e}")))?,
    });
    pump::start(client.clone())
        .map_err(|e| Error::Startup(format!("cannot start the pump: {e}")))?;
    Ok(client)
}

fn serve(client: Arc<WorkerClient>) -> i32 {
    let mut actor = registry::Actor::None;
    loop {
        let next = client.inner.lock().next_task(&client.doorbell);
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
        inner.core.ended(ended);
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

/// The times of a run from `start`, `fetched` and `ran` to now.
fn timing_since(start: u64, fetched: u64, ran: u64) -> Timing {
    Timing {
        start,
        fetched,
        ran,
        end: monotonic_us(),
    }
}

/// Runs one task and stores its results.
fn run_task(client: &WorkerClient, actor: &mut registry::Actor, exec: &Execute) -> Ended {
    let start = monotonic_us();
    let args = client.args_for(exec);
    let fetched = monotonic_us();
    let sink = Sink::new(client, exec);
    let sink = sink.as_ref().map(|s| s as &dyn ItemSink);
    let escape = |nested: &crate::value::Nested| client.returning(exec.task, nested);
    let returned = args.and_then(|args| {
        registry::execute(&client.registry, actor, exec, &args, sink, Some(&escape))
    });
    let ran = monotonic_us();
    let outcome = outcome_of(client, exec, returned);
    Ended {
        task: exec.task,
        outcome,
        timing: Some(timing_since(start, fetched, ran)),
    }
}

/// What a task ended with: its return values stored, or its error.
fn outcome_of(
    client: &WorkerClient,
    exec: &Execute,
    returned: std::result::Result<registry::Returned, TaskError>,
) -> Outcome {
    match returned {
        Ok((values, nested, actors)) => store_returns(client, exec, values, nested, actors),
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
                            if let Some(exec) = inner.core.next_task() {
                                break exec;
                            }
                            client.changed.wait(&mut inner);
                        }
                    };
                    let ended = run_task(&client, &mut actor, &exec);
                    let mut inner = client.inner.lock();
                    inner.core.ended(ended);
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
    let direct = client
        .inner
        .lock()
        .direct
        .as_ref()
        .map(links::DirectLinks::fd);
    loop {
        let polled = spin_for(IDLE_SPIN, || {
            let frame = poll_now(&mut reader)?;
            if frame.is_none() && direct.is_some() {
                // The direct links' frames are handled here, and spinning goes on.
                client
                    .pump_direct()
                    .map_err(|_| FrameError::Io(std::io::ErrorKind::BrokenPipe.into()))?;
            }
            Ok::<_, FrameError>(frame)
        });
        let frame = match polled {
            Ok(Some(frame)) => frame,
            Ok(None) => match direct {
                None => match reader.read_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) | Err(_) => return 0,
                },
                Some(fd) => {
                    let sleep = client.inner.lock().wait_fds().1;
                    links::wait_readable(&[reader.get_ref().as_raw_fd(), fd], sleep);
                    if client.pump_direct().is_err() {
                        return 0;
                    }
                    continue;
                }
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
            let call = client.args_for(&exec).and_then(|args| {
                let sink =
                    Sink::new(client.clone(), &exec).map(|s| Arc::new(s) as Arc<dyn ItemSink>);
                let owner = client.clone();
                let task = exec.task;
                let escape =
                    Arc::new(move |nested: &crate::value::Nested| owner.returning(task, nested));
                registry::start_async(&client.registry, &actor, &exec, args, sink, Some(escape))
            });
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
                    timing: Some(timing_since(start, fetched, ran)),
                };
                client.inner.lock().core.ended(ended);
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
    actors: Vec<Vec<ActorId>>,
) -> Outcome {
    // References to objects this worker owns that leave with the values were handed to the
    // node as each value was encoded (`Invocation::ret`), while the value still held them.
    // A value for an owner on another node that is too large to go inline stays in this
    // node's store too, until the owner's node pulls it (`ToNode::Fetch`).
    // A caller of another job reads values only: they go inline whatever their size, and
    // one holding references or handles (of this job) cannot go.
    let foreign = crate::proto::worker::foreign::is_foreign(exec.task.owner);
    let holds = nested.iter().any(|n| !n.is_empty()) || actors.iter().any(|a| !a.is_empty());
    if foreign && holds {
        return Outcome::Failed(TaskError::InvalidValue {
            task: exec.task,
            function: exec.function.clone(),
            what: "its return value".into(),
            reason: "it holds object references or actor handles, which cannot go to a caller of another job".into(),
        });
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, bytes) in values.into_iter().enumerate() {
        let id = ObjectId::new(exec.task, i as u32);
        let what = || format!("return value {i}");
        if foreign {
            out.push(Value::Inline(bytes.to_vec()));
            continue;
        }
        match store_value(client, id, &exec.function, &bytes, what) {
            Ok(value) => out.push(value),
            Err(error) => return Outcome::Failed(error),
        }
    }
    Outcome::Returned {
        values: out,
        nested,
        actors,
    }
}

/// Stores the value of object `id` (made by `function`): inline when small, else in a
/// shared-memory segment of its own; `what` names it in errors.
fn store_value(
    client: &WorkerClient,
    id: ObjectId,
    function: &str,
    bytes: &[u8],
    what: impl Fn() -> String,
) -> std::result::Result<Value, TaskError> {
    if bytes.len() < client.threshold {
        return Ok(Value::Inline(bytes.to_vec()));
    }
    let fail = |reason: String| TaskError::InvalidValue {
        task: id.task,
        function: function.to_string(),
        what: what(),
        reason,
    };
    if bytes.len() as u64 > client.capacity {
        return Err(fail(format!(
            "its {} bytes exceed the object store's capacity of {} bytes",
            bytes.len(),
            client.capacity
        )));
    }
    let fill = |buf: &mut [u8]| {
        buf.copy_from_slice(bytes);
        Ok::<_, std::convert::Infallible>(bytes.len())
    };
    store::take_pooled(&client.store_dir, id, bytes.len() as u64);
    match Segment::create_with(&client.store_dir, id, bytes.len(), fill) {
        Ok(_) => Ok(Value::Shared {
            id,
            len: bytes.len() as u64,
        }),
        Err(e) => Err(fail(format!("cannot write it to shared memory: {e}"))),
    }
}

/// Where the items of a streaming generator running in this worker go: stored like return
/// values, handed to the node at once, and paused while the consumer is `window` behind.
struct Sink<C> {
    client: C,
    task: TaskId,
    function: String,
    window: u32,
}

impl<C> Sink<C> {
    fn new(client: C, exec: &Execute) -> Option<Self> {
        exec.stream.map(|run| Sink {
            client,
            task: exec.task,
            function: exec.function.clone(),
            window: run.window,
        })
    }
}

impl<C: std::ops::Deref<Target = WorkerClient>> ItemSink for Sink<C> {
    fn item(
        &self,
        index: u32,
        bytes: AlignedVec,
        nested: crate::value::Nested,
    ) -> std::result::Result<(), TaskError> {
        let client = &*self.client;
        // While the item still holds them (see `Context::escaping`).
        client.promote(&nested.objects);
        let id = ObjectId::new(self.task, index);
        let value = store_value(client, id, &self.function, &bytes, || {
            format!("item {index}")
        })?;
        let lost = |reason: String| TaskError::Panicked {
            task: self.task,
            function: self.function.clone(),
            message: format!("the worker lost its node while the stream ran: {reason}"),
        };
        let mut inner = client.inner.lock();
        inner
            .core
            .yielded(self.task, index, value, nested.objects, nested.actors);
        inner.flush().map_err(|e| lost(e.to_string()))?;
        while inner.core.stream_paused(self.task, index, self.window) {
            if inner.reader.is_none() {
                // A concurrent or async actor: its reader thread delivers the word.
                client.changed.wait(&mut inner);
                continue;
            }
            match inner.await_input(None) {
                Ok(()) => {}
                Err(Stop::Shutdown) => std::process::exit(0),
                Err(Stop::Lost(reason)) => return Err(lost(reason)),
            }
            inner.flush().map_err(|e| lost(e.to_string()))?;
        }
        Ok(())
    }
}
