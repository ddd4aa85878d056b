//! A node daemon's side of the jobs it hosts. A driver that joins the cluster connects to every
//! node ([`Purpose::Job`]); the node fetches the job's binary by content hash from the driver
//! (once, then from its cache), makes the job a shared-memory store, starts worker processes
//! from the binary when asked (each with a private link it inherits), relays each worker's link
//! to the driver on a QUIC stream of its own, pulls objects its workers need into the job's store ([`ToHost::Fetch`], one transfer per
//! object however many ask), and serves the job's objects to other hosts
//! ([`Purpose::Objects`]). When the driver's connection ends, the job's workers are killed and
//! its store is removed. The node holds a lease on the job ([`crate::proto::lease`]): cut off
//! from the driver for a whole lease, it closes the job's connection, which ends the job here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prism_graph::ObjectId;
use prism_transport::quic;
use prism_transport::tls::Identity;
use prism_transport::transfer;
use prism_transport::{
    ArchivedHostEvent, FrameDecoder, FromHost, FromLogs, HostEvent, HostHello, NodeUsage, PullKey,
    PullStats, Purpose, ToHost, ToLogs,
};
use tokio::sync::watch;

use super::object_manager::{Peers, StoreSource};
use super::worker_pool;
use crate::process::{self, ENV_JOB_FINGERPRINT, ENV_NODE_NAME, ProcessHandle, StoreLimits};
use crate::proto::lease::{self, Lease};
use crate::store;

/// How a fetch in progress reports its end to those who wait for it.
type FetchWatch = watch::Receiver<Option<Result<(), String>>>;

/// Largest request a driver may send.
const MAX_REQUEST: usize = 16 << 20;

/// The jobs a node daemon hosts.
#[derive(Debug)]
pub(crate) struct Hosting {
    /// The node's name (workers learn it).
    name: String,
    /// The address the node listens on (workers bind their own endpoints there).
    host: std::net::IpAddr,
    /// Where job binaries are cached, by content hash.
    binaries: PathBuf,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Connections for pulls.
    peers: Peers,
    /// Pulls in progress, so concurrent fetches of one object make one transfer.
    fetching: Mutex<HashMap<(String, ObjectId), FetchWatch>>,
    /// The cached binaries this daemon checked against their hash, with their file's identity
    /// then (a file changed since is checked again): hashing a binary of tens of MiB for
    /// every job that starts cost each join a fraction of a second per node.
    verified: Mutex<HashMap<[u8; 32], FileStamp>>,
    /// Objects pulled from other hosts so far (reported with the heartbeat).
    pulled: Mutex<PullStats>,
    /// The node is leaving: it starts no new job.
    draining: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Job {
    name: String,
    exe: PathBuf,
    store: PathBuf,
    limits: StoreLimits,
    /// The job's content fingerprint (from its binary's hash).
    fingerprint: u64,
    driver: quinn::Connection,
    workers: Mutex<HashMap<u64, Arc<ProcessHandle>>>,
    /// Set when the driver went: late spawns are refused.
    ended: std::sync::atomic::AtomicBool,
}

impl Hosting {
    pub(crate) fn new(
        name: String,
        session: &Path,
        identity: Identity,
        endpoint: quinn::Endpoint,
    ) -> Arc<Hosting> {
        let host = endpoint
            .local_addr()
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
        Arc::new(Hosting {
            name: name.clone(),
            host,
            binaries: session.join("binaries"),
            jobs: Mutex::new(HashMap::new()),
            peers: Peers::new(name.clone(), endpoint, identity),
            fetching: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            pulled: Mutex::new(PullStats::default()),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The node is leaving: it starts no new job (the ones it hosts go on until their drivers
    /// let them go, see [`ToHost::EndJob`]).
    pub(crate) fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Refuses a new job once the node drains.
    fn open_for_jobs(&self) -> Result<(), String> {
        match self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(format!(
                "node {} is draining: it takes no new job",
                self.name
            )),
            false => Ok(()),
        }
    }

    /// Whether it hosts no job.
    pub(crate) fn idle(&self) -> bool {
        self.jobs.lock().is_empty()
    }

    /// Objects this node pulled from other hosts since it started.
    pub(crate) fn pulled(&self) -> PullStats {
        *self.pulled.lock()
    }

    /// What the hosted jobs hold here: their workers, and the bytes of their object files in
    /// the stores and the spill directories.
    pub(crate) fn usage(&self) -> NodeUsage {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().values().cloned().collect();
        let mut usage = NodeUsage::default();
        for job in jobs {
            usage.workers += job.workers.lock().len() as u32;
            usage.store_bytes += files_bytes(&job.store);
            usage.spilled_bytes += files_bytes(&store::spill_dir_for(&job.store));
        }
        usage
    }

    /// Serves a member connection whose hello declared a job or objects purpose.
    pub(crate) async fn serve(self: Arc<Self>, connection: quinn::Connection, hello: HostHello) {
        match hello.purpose {
            Purpose::Job(job) => self.serve_job(connection, job, hello.name).await,
            Purpose::Objects(job) => {
                let store = self.jobs.lock().get(&job).map(|j| j.store.clone());
                let source = Arc::new(StoreSource {
                    store,
                    binary: None,
                });
                transfer::serve_pulls(connection, source).await;
            }
            Purpose::Logs => serve_logs(connection).await,
            Purpose::Control => quic::close_for(
                &connection,
                quic::codes::REFUSED,
                "this node is not the head; send control requests to the head",
            ),
        }
    }

    async fn serve_job(
        self: Arc<Self>,
        connection: quinn::Connection,
        job: String,
        driver: String,
    ) {
        let peer = connection.remote_address();
        tracing::info!(%job, %driver, %peer, "a driver connected");
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let request = match quic::read_request::<ToHost>(&mut recv, peer, MAX_REQUEST).await {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(e) => {
                    quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                    break;
                }
            };
            let (hosting, connection, job) = (self.clone(), connection.clone(), job.clone());
            tokio::spawn(async move {
                let reply = match hosting.handle(&connection, &job, request).await {
                    Ok(reply) => reply,
                    Err(reason) => FromHost::Error(reason),
                };
                if quic::send_frame(&mut send, &reply).await.is_ok() {
                    let _ = send.finish();
                }
            });
        }
        self.end_job(&job, &connection);
        tracing::info!(%job, %driver, "the driver left; its workers are stopped");
    }

    async fn handle(
        self: &Arc<Self>,
        connection: &quinn::Connection,
        job: &str,
        request: ToHost,
    ) -> Result<FromHost, String> {
        match request {
            ToHost::StartJob {
                binary,
                size,
                objects_at,
                inline_threshold,
                store_capacity,
                lease_ms,
            } => {
                self.open_for_jobs()?;
                let exe = self.binary(job, binary, size, &objects_at).await?;
                let fingerprint = crate::process::content_fingerprint(&binary);
                let limits = StoreLimits {
                    inline_threshold,
                    capacity: store_capacity,
                };
                let lease = lease::at_least_shortest(Duration::from_millis(lease_ms));
                self.start_job(connection, job, exe, limits, fingerprint, lease)?;
                Ok(FromHost::Done)
            }
            ToHost::Spawn { worker } => {
                let job = self.job(job, connection)?;
                let pid = spawn((&self.name, self.host), &job, worker)?;
                Ok(FromHost::Spawned(pid))
            }
            ToHost::Kill { worker } => {
                let job = self.job(job, connection)?;
                if let Some(process) = job.workers.lock().get(&worker) {
                    process.kill();
                }
                Ok(FromHost::Done)
            }
            ToHost::Fetch { id, len, from } => {
                let job = self.job(job, connection)?;
                self.fetch(&job, id, len, &from).await?;
                Ok(FromHost::Done)
            }
            ToHost::Free(ids) => {
                let job = self.job(job, connection)?;
                let files = job.files();
                for id in ids {
                    store::unlink(&job.store, id);
                    files.free_spilled(id);
                }
                Ok(FromHost::Done)
            }
            ToHost::Spill(objects) => {
                let job = self.job(job, connection)?;
                let name = self.name.clone();
                // Copies of many megabytes: off the async threads, which beat to the head.
                off_the_runtime(move || {
                    let files = job.files();
                    let mut failed = Vec::new();
                    for (id, len) in objects {
                        let spilled = store::Segment::open(&job.store, id, len)
                            .and_then(|segment| files.spill(id, &segment));
                        if let Err(e) = spilled {
                            failed.push(format!("{id}: {e}"));
                        }
                    }
                    match failed.is_empty() {
                        true => Ok(FromHost::Done),
                        false => Err(format!(
                            "node {name} cannot spill to {}: {}",
                            files.spill_dir.display(),
                            failed.join("; ")
                        )),
                    }
                })
                .await
            }
            ToHost::Restore { id, len } => {
                let job = self.job(job, connection)?;
                let name = self.name.clone();
                off_the_runtime(move || {
                    job.files()
                        .restore(id, len)
                        .map(|_| FromHost::Done)
                        .map_err(|e| format!("node {name}: object {id}: {e}"))
                })
                .await
            }
            ToHost::EndJob => {
                self.job(job, connection)?;
                self.end_job(job, connection);
                tracing::info!(%job, "the job left this draining node; its workers are stopped");
                Ok(FromHost::Done)
            }
            ToHost::ForgetPeer { at } => {
                self.job(job, connection)?;
                let addr = at
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("bad peer address {at:?}: {e}"))?;
                self.peers.forget(addr).await;
                Ok(FromHost::Done)
            }
        }
    }

    /// The job `connection` started (only its own driver's connection may steer a job).
    fn job(&self, job: &str, connection: &quinn::Connection) -> Result<Arc<Job>, String> {
        self.jobs
            .lock()
            .get(job)
            .filter(|j| j.driver.stable_id() == connection.stable_id())
            .cloned()
            .ok_or_else(|| format!("node {} hosts no job {job} for this connection", self.name))
    }

    /// The job's executable: from the cache, or pulled from the driver and checked.
    async fn binary(
        &self,
        job: &str,
        hash: [u8; 32],
        size: u64,
        objects_at: &str,
    ) -> Result<PathBuf, String> {
        let path = self.binaries.join(prism_transport::tls::hex(&hash));
        crate::files::private_dir_all(&self.binaries)
            .map_err(|e| format!("cannot use the binary cache: {e}"))?;
        // A cached copy runs only if it still has the content its name promises (checked
        // once while the file stays the same).
        if let Some(stamp) = FileStamp::of(&path) {
            if self.verified.lock().get(&hash) == Some(&stamp) {
                return Ok(path);
            }
            let read = path.clone();
            let checked = tokio::task::spawn_blocking(move || {
                std::fs::read(&read).is_ok_and(|bytes| transfer::content_hash(&bytes) == hash)
            });
            if checked.await.unwrap_or(false) {
                self.verified.lock().insert(hash, stamp);
                return Ok(path);
            }
            tracing::warn!(path = %path.display(), "a cached job binary does not match its hash; fetching it again");
            let _ = std::fs::remove_file(&path);
        }
        let from: SocketAddr = objects_at
            .parse()
            .map_err(|e| format!("bad driver address {objects_at:?}: {e}"))?;
        let connection = self.peers.get(from, job).await.map_err(|e| e.to_string())?;
        let mut bytes = vec![0u8; size as usize];
        transfer::pull(&connection, &PullKey::Binary(hash), &mut bytes)
            .await
            .map_err(|e| format!("cannot fetch the job's binary from {from}: {e}"))?;
        let tmp = path.with_extension(format!("part{}", std::process::id()));
        let cached = path.clone();
        let stored = tokio::task::spawn_blocking(move || {
            if transfer::content_hash(&bytes) != hash {
                return Err(format!(
                    "the job's binary from {from} does not match its hash {}",
                    prism_transport::tls::hex(&hash[..8])
                ));
            }
            write_executable(&tmp, &bytes)
                .and_then(|()| std::fs::rename(&tmp, &cached))
                .map_err(|e| format!("cannot cache the job's binary at {}: {e}", cached.display()))
        });
        stored
            .await
            .map_err(|e| format!("cannot check the job's binary: {e}"))??;
        if let Some(stamp) = FileStamp::of(&path) {
            self.verified.lock().insert(hash, stamp);
        }
        tracing::info!(%job, path = %path.display(), size, "cached a job binary");
        Ok(path)
    }

    fn start_job(
        self: &Arc<Self>,
        connection: &quinn::Connection,
        job: &str,
        exe: PathBuf,
        limits: StoreLimits,
        fingerprint: u64,
        lease: Duration,
    ) -> Result<(), String> {
        self.open_for_jobs()?;
        if let Some(running) = self.jobs.lock().get(job) {
            return if running.driver.stable_id() == connection.stable_id() {
                Ok(())
            } else {
                Err(format!(
                    "node {} already hosts a job named {job} for another connection",
                    self.name
                ))
            };
        }
        let store = store::create_session_dir()
            .map_err(|e| format!("cannot create the job's object store: {e}"))?;
        let record = Arc::new(Job {
            name: job.to_string(),
            exe,
            store,
            limits,
            fingerprint,
            driver: connection.clone(),
            workers: Mutex::new(HashMap::new()),
            ended: std::sync::atomic::AtomicBool::new(false),
        });
        self.jobs.lock().insert(job.to_string(), record);
        tokio::spawn(hold_lease(connection.clone(), job.to_string(), lease));
        Ok(())
    }

    /// Ends every job (the daemon stops): their workers are killed and their stores removed.
    pub(crate) fn end_all(&self) {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().drain().map(|(_, job)| job).collect();
        for job in jobs {
            job.end();
        }
        self.fetching.lock().clear();
    }

    /// Ends the job if `connection` is the one that started it.
    fn end_job(&self, job: &str, connection: &quinn::Connection) {
        let Some(job) = ({
            let mut jobs = self.jobs.lock();
            let own = jobs
                .get(job)
                .is_some_and(|j| j.driver.stable_id() == connection.stable_id());
            if own { jobs.remove(job) } else { None }
        }) else {
            return;
        };
        job.end();
        self.fetching
            .lock()
            .retain(|(name, _), _| name != &job.name);
    }

    /// Makes sure the job's store holds `id`, pulling it from `from` once however many ask.
    async fn fetch(
        &self,
        job: &Arc<Job>,
        id: ObjectId,
        len: u64,
        from: &str,
    ) -> Result<(), String> {
        let path = store::segment_path(&job.store, id);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
            return Ok(());
        }
        let key = (job.name.clone(), id);
        let (mut wait, lead) = {
            let mut fetching = self.fetching.lock();
            match fetching.get(&key) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    fetching.insert(key.clone(), rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(tx) = lead {
            let result = match from.parse::<SocketAddr>() {
                Ok(addr) => {
                    self.peers
                        .pull_to_store(&job.name, addr, &job.store, id, len)
                        .await
                }
                Err(e) => Err(format!("bad holder address {from:?}: {e}")),
            };
            self.fetching.lock().remove(&key);
            if result.is_ok() {
                let mut pulled = self.pulled.lock();
                pulled.objects += 1;
                pulled.bytes += len;
            }
            let _ = tx.send(Some(result.clone()));
            return result;
        }
        let outcome = wait
            .wait_for(Option::is_some)
            .await
            .map_err(|_| format!("the pull of {id} was abandoned"))?
            .clone();
        outcome.unwrap_or_else(|| Err(format!("the pull of {id} was abandoned")))
    }
}

/// Holds the node's lease on `job`: asks the driver for a renewal every
/// [`lease::RENEW_EVERY`] and, once a whole lease went by without an answer, closes the job's
/// connection, which ends the job here (its workers are killed, its store removed) before the
/// driver starts its actors anywhere else.
async fn hold_lease(connection: quinn::Connection, job: String, length: Duration) {
    let lease = Arc::new(Mutex::new(Lease::new(
        Instant::now(),
        length,
        lease::RENEW_EVERY,
    )));
    loop {
        let now = Instant::now();
        let (expired, due, wake) = {
            let mut lease = lease.lock();
            let expired = lease.expired(now);
            let due = if expired { None } else { lease.due(now) };
            (expired, due, lease.next_wake())
        };
        if expired {
            let reason = format!(
                "no lease renewal from the driver for {} ms: the node stopped the job's workers",
                length.as_millis()
            );
            tracing::warn!(%job, "{reason}");
            quic::close_for(&connection, quic::codes::LEASE_ENDED, &reason);
            return;
        }
        if let Some(seq) = due {
            tokio::spawn(ask_renewal(connection.clone(), seq, lease.clone()));
        }
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            _ = connection.closed() => return,
        }
    }
}

/// Asks the driver to renew the lease (ask number `seq`) and records its answer.
async fn ask_renewal(connection: quinn::Connection, seq: u64, lease: Arc<Mutex<Lease>>) {
    let Ok((mut send, mut recv)) = connection.open_bi().await else {
        return;
    };
    if quic::send_frame(&mut send, &HostEvent::Renew { seq })
        .await
        .is_err()
    {
        return;
    }
    let _ = send.finish();
    let mut decoder = FrameDecoder::new(1 << 10);
    let peer = connection.remote_address();
    if let Ok(Some(frame)) = quic::recv_frame(&mut recv, &mut decoder, peer).await
        && let Ok(ArchivedHostEvent::Renew { seq: answered }) = frame.access::<HostEvent>()
        && answered.to_native() == seq
    {
        lease.lock().granted(seq);
    }
}

/// Which file a path names and how it was last written: its device, inode, length and
/// modification time (a file replaced or rewritten has another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path`, if there is one.
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// Answers reads of the workers' logs kept on this host (`prism logs --node` from another
/// host), one request per stream, until the reader goes.
async fn serve_logs(connection: quinn::Connection) {
    let peer = connection.remote_address();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let request = match quic::read_request::<ToLogs>(&mut recv, peer, 1 << 16).await {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                return;
            }
        };
        let answered = tokio::task::spawn_blocking(move || super::output::answer_logs(request));
        let reply = answered
            .await
            .unwrap_or_else(|e| FromLogs::Error(format!("the read failed: {e}")));
        if quic::send_frame(&mut send, &reply).await.is_err() {
            break;
        }
        let _ = send.finish();
    }
}

/// The bytes of the files in `dir` (none: nothing).
fn files_bytes(dir: &Path) -> u64 {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

impl Job {
    /// Refuses further spawns, kills the job's workers and removes its store.
    fn end(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        for process in self.workers.lock().values() {
            process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
        let _ = std::fs::remove_dir_all(store::spill_dir_for(&self.store));
    }

    /// The job's object files on this node: its store and its spill directory (no pool: the
    /// workers write the segments, the node only moves them).
    fn files(&self) -> store::ObjectFiles {
        store::ObjectFiles::new(self.store.clone(), 0)
    }
}

/// Sends what worker `worker` writes to one of its pipes to the job's driver, in order on a
/// stream of its own (and keeps it in the worker's `log`), until the pipe ends (and reads to the end whatever happens to the
/// driver: a closed pipe would fail the worker's next print).
async fn relay_output(
    driver: quinn::Connection,
    worker: u64,
    stderr: bool,
    pipe: impl tokio::io::AsyncRead + Unpin,
    mut log: Option<std::fs::File>,
) {
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut stream: Option<Option<quinn::SendStream>> = None;
    while let Some(text) = super::output::next_batch(&mut reader).await {
        super::output::keep(&mut log, &text);
        if stream.is_none() {
            stream = Some(driver.open_uni().await.ok());
        }
        if let Some(Some(send)) = stream.as_mut() {
            let event = HostEvent::Output {
                worker,
                stderr,
                text,
            };
            if quic::send_frame(send, &event).await.is_err() {
                stream = Some(None);
            }
        }
    }
    if let Some(Some(mut send)) = stream {
        let _ = send.finish();
    }
}

/// Runs file work of `work` on the blocking pool, so that it holds no async thread.
async fn off_the_runtime(
    work: impl FnOnce() -> Result<FromHost, String> + Send + 'static,
) -> Result<FromHost, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the file work ended abnormally: {e}"))?
}

/// Writes a new executable only this user can read or run.
fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    crate::files::private_options()
        .mode(0o700)
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(bytes)
}

/// Starts worker `worker` of `job` from the job's binary; a waiter thread tells the driver
/// when it ends.
fn spawn(
    (node, host): (&str, std::net::IpAddr),
    job: &Arc<Job>,
    worker: u64,
) -> Result<u32, String> {
    if job.ended.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(format!("job {} has ended", job.name));
    }
    let mut cmd = process::worker_command(&job.exe, worker, &job.store, job.limits);
    cmd.env(ENV_NODE_NAME, node)
        .env(process::ENV_NODE_HOST, host.to_string())
        .env(ENV_JOB_FINGERPRINT, format!("{:x}", job.fingerprint));
    super::output::capture(&mut cmd);
    // The worker dies with the daemon (and is killed when its job's driver goes).
    let process::Linked {
        mut child,
        handle: process,
        link,
    } = process::spawn_linked(&mut cmd, None)
        .map_err(|e| format!("cannot start {}: {e}", job.exe.display()))?;
    let pid = process.pid();
    job.workers.lock().insert(worker, Arc::new(process));
    relay_worker(job, worker, link);
    let pipes = super::output::pipes(&mut child);
    if !pipes.is_empty() {
        let mut logs = super::output::open_logs(node, pid);
        for (stderr, pipe) in pipes {
            let log = logs[usize::from(stderr)].take();
            tokio::spawn(relay_output(job.driver.clone(), worker, stderr, pipe, log));
        }
    }
    let handle = tokio::runtime::Handle::current();
    let waiter = job.clone();
    let node = node.to_string();
    std::thread::Builder::new()
        .name(format!("prism-wait-{worker}"))
        .spawn(move || {
            let reason = match child.wait() {
                Ok(status) => worker_pool::describe_exit(status),
                Err(e) => format!("cannot wait for the process: {e}"),
            };
            store::discard_fillings_of(&waiter.store, pid);
            waiter.workers.lock().remove(&worker);
            let reason = format!("{reason} (on node {node})");
            let driver = waiter.driver.clone();
            handle.spawn(async move {
                let event = HostEvent::WorkerExited { worker, reason };
                if let Ok(mut send) = driver.open_uni().await
                    && quic::send_frame(&mut send, &event).await.is_ok()
                {
                    let _ = send.finish();
                }
            });
        })
        .map_err(|e| format!("cannot start a waiter thread: {e}"))?;
    Ok(pid)
}

/// Pipes worker `worker`'s link to the job's driver on a QUIC stream of its own, announced by
/// [`HostEvent::Relay`] with the worker's number.
fn relay_worker(job: &Arc<Job>, worker: u64, link: std::os::unix::net::UnixStream) {
    let driver = job.driver.clone();
    let stream = link
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(link));
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            tracing::error!(job = %job.name, worker, "cannot relay a worker's link: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let (mut send, recv) = match driver.open_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(worker, "cannot relay a worker: {e}");
                return;
            }
        };
        if quic::send_frame(&mut send, &HostEvent::Relay { worker })
            .await
            .is_err()
        {
            return;
        }
        let mut quic_side = tokio::io::join(recv, send);
        if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut quic_side).await {
            tracing::debug!(worker, "a worker relay ended: {e}");
        }
    });
}
