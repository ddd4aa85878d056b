//! The head's detached actors (Ray's GCS-made detached actors; step 5's piece 4 in
//! docs/ownership.md): an actor that outlives its creator's job needs a process of a job that
//! does not end with the creator's, running the creator's binary (which holds its class).
//! The head starts one such process per binary: the binary fetched from the creator by
//! content hash, run in the `detached` role, told on its input (which only the two hold) to
//! join the cluster as job `detached-<binary>`. That job's driver makes, restarts and kills
//! the detached actors (its names claimed and its directory published like any job's) as the
//! head orders on a stream it opens ([`ToControl::HostDetached`]). It does not die with the
//! head: after a head's restart it opens its stream again, and the restarted head waits for
//! it rather than start another; a stopping head tells it to leave.
//!
//! [`ToControl::HostDetached`]: prism_transport::ToControl::HostDetached

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prism_transport::quic;
use prism_transport::{DetachedCreation, FromControl, HeadOrder, JobState, OrderOutcome, Refusal};
use tokio::sync::Notify;

use super::Control;
use super::orders::{JobOrders, Link};
use crate::node::host::Hosting;
use crate::process::{self, ProcessHandle};
use crate::proto::node::detached::detached_job;

/// How long a new host may take to join the cluster and open its stream.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a restarted head waits for a host its directory lists as running to come back
/// before it starts another.
const COME_BACK: Duration = Duration::from_secs(10);

/// How long a stopping head waits for its hosts to leave the cluster.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The hosts of detached actors, one per binary.
pub(super) struct DetachedHosts {
    /// The head's address and join token (what a host joins with).
    head: String,
    token: String,
    hosting: Arc<Hosting>,
    /// Where each host's output goes.
    dir: PathBuf,
    /// Every job's stream of orders (a host's is one of them).
    orders: Arc<JobOrders>,
    /// The hosts whose streams are open, by binary.
    links: parking_lot::Mutex<HashMap<[u8; 32], Arc<Link>>>,
    /// A host opened its stream (or a started one exited: its waiter thread says so).
    changed: Arc<Notify>,
    /// One start at a time.
    starting: tokio::sync::Mutex<()>,
    /// The hosts this head started (they do not die with it; it stops them when it stops).
    started: parking_lot::Mutex<Vec<Arc<ProcessHandle>>>,
}

impl DetachedHosts {
    pub(super) fn new(
        head: SocketAddr,
        token: String,
        hosting: Arc<Hosting>,
        dir: PathBuf,
        orders: Arc<JobOrders>,
    ) -> Self {
        DetachedHosts {
            head: head.to_string(),
            token,
            hosting,
            dir,
            orders,
            links: parking_lot::Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
            starting: tokio::sync::Mutex::new(()),
            started: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Makes the detached actor `creation` asks for, for job `creator`: the answer to its
    /// [`prism_transport::ToControl::CreateDetached`].
    pub(super) async fn create(
        &self,
        creator: &str,
        creation: DetachedCreation,
        control: &Control,
    ) -> FromControl {
        let DetachedCreation {
            binary,
            size,
            binary_from,
            spec,
            mut setup,
        } = creation;
        // `get_if_exists`: an actor of any job with the name is the answer.
        if setup.get_if_exists
            && let Some(name) = &setup.name
        {
            let namespace = setup.namespace.clone().unwrap_or_default();
            let found = control.with(|store| store.find_name(&namespace, name, Instant::now()));
            if let FromControl::Found { .. } = found {
                return found;
            }
        }
        setup.get_if_exists = false;
        let link = match self
            .host_for(creator, binary, size, &binary_from, control)
            .await
        {
            Ok(link) => link,
            Err(reason) => return FromControl::Error(reason),
        };
        let class = setup.class.clone();
        let spec = Box::new(spec);
        let order = |order| HeadOrder::Create { order, spec, setup };
        match link.order(order).await {
            Ok(OrderOutcome::Created(actor)) => {
                let status = control.with(|store| store.actor_status(&link.job, actor));
                tracing::info!(job = link.job, actor = %actor, class, creator, "made a detached actor");
                FromControl::Found {
                    job: link.job.clone(),
                    actor,
                    class,
                    status,
                }
            }
            Ok(OrderOutcome::Refused(Refusal::NameTaken { holder, .. })) => FromControl::NameHeld {
                job: holder.unwrap_or_else(|| link.job.clone()),
            },
            Ok(OrderOutcome::Refused(refusal)) => {
                FromControl::Error(crate::Error::from_refusal(refusal).to_string())
            }
            Ok(OrderOutcome::Failed(reason)) => FromControl::Error(reason),
            Ok(other) => FromControl::Error(format!("the host answered {other:?}")),
            Err(reason) => FromControl::Error(reason),
        }
    }

    /// Takes the stream of job `job`'s driver, which hosts binary `binary`'s detached actors
    /// (a [`prism_transport::ToControl::HostDetached`] on its connection from `peer`), until
    /// it ends.
    pub(super) async fn serve(
        &self,
        job: String,
        binary: [u8; 32],
        mut send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: SocketAddr,
    ) {
        if job != detached_job(&binary) {
            let refusal = FromControl::Error(format!(
                "{job} cannot host detached actors of binary {}: only job {} may",
                prism_transport::tls::hex(&binary[..8]),
                detached_job(&binary)
            ));
            let _ = quic::send_frame(&mut send, &refusal).await;
            return;
        }
        let link = Link::new(job, send);
        if let Some(old) = self.links.lock().insert(binary, link.clone()) {
            old.close();
        }
        self.orders.open(&link);
        tracing::info!(job = link.job, %peer, "a host of detached actors takes orders");
        self.changed.notify_waiters();
        let why = link.serve(recv, peer).await;
        tracing::info!(
            job = link.job,
            "a host of detached actors takes no more orders: {why}"
        );
        self.orders.closed(&link);
        let mut links = self.links.lock();
        if links.get(&binary).is_some_and(|l| Arc::ptr_eq(l, &link)) {
            links.remove(&binary);
        }
    }

    /// Stops every host: it leaves the cluster (its actors die with its job) and exits; one
    /// this head started that still runs after [`STOP_GRACE`] is killed.
    pub(super) async fn stop_all(&self) {
        let links: Vec<Arc<Link>> = self.links.lock().values().cloned().collect();
        for link in &links {
            let _ = link.tell(&FromControl::Order(HeadOrder::Stop)).await;
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for link in &links {
            let _ = tokio::time::timeout_at(deadline, link.closed()).await;
        }
        let started = std::mem::take(&mut *self.started.lock());
        for process in started {
            let waited = tokio::task::spawn_blocking(move || {
                if !process.wait_exit(STOP_GRACE) {
                    tracing::warn!(
                        pid = process.pid(),
                        "a host of detached actors did not stop in time: killed"
                    );
                    process.kill();
                }
            });
            let _ = waited.await;
        }
    }

    /// The open stream of the host of binary `binary`: a host the directory lists as running
    /// (from before this head's restart) is waited for; else one is started now.
    async fn host_for(
        &self,
        creator: &str,
        binary: [u8; 32],
        size: u64,
        from: &str,
        control: &Control,
    ) -> Result<Arc<Link>, String> {
        let _one_at_a_time = self.starting.lock().await;
        if let Some(link) = self.open(&binary) {
            return Ok(link);
        }
        let job = detached_job(&binary);
        let running = control.with(|store| {
            (store.jobs().iter()).any(|j| j.job == job && j.state == JobState::Running)
        });
        if running && let Some(link) = self.wait_for(&binary, COME_BACK, || false).await {
            return Ok(link);
        }
        let from: SocketAddr = (from.parse())
            .map_err(|e| format!("the creator's address {from:?} is not an address: {e}"))?;
        let exe = self.hosting.binary(creator, binary, size, from).await?;
        let exited = self.start(&exe, &job)?;
        let ended = || exited.load(Ordering::SeqCst);
        match self.wait_for(&binary, START_TIMEOUT, ended).await {
            Some(link) => Ok(link),
            None if ended() => Err(format!(
                "the host of detached actors ({job}) exited before it took orders (see {})",
                self.log(&job).display()
            )),
            None => Err(format!(
                "the host of detached actors ({job}) did not take orders within {} s",
                START_TIMEOUT.as_secs()
            )),
        }
    }

    fn open(&self, binary: &[u8; 32]) -> Option<Arc<Link>> {
        (self.links.lock().get(binary))
            .filter(|link| link.alive())
            .cloned()
    }

    /// The host of `binary` once its stream is open, waiting at most `limit` (or until
    /// `given_up`).
    async fn wait_for(
        &self,
        binary: &[u8; 32],
        limit: Duration,
        given_up: impl Fn() -> bool,
    ) -> Option<Arc<Link>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if let Some(link) = self.open(binary) {
                return Some(link);
            }
            if given_up() {
                return None;
            }
            tokio::time::timeout_at(deadline, changed).await.ok()?;
        }
    }

    fn log(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.log"))
    }

    /// Starts the host of the binary at `exe` as job `job`: whether it has exited yet.
    fn start(&self, exe: &std::path::Path, job: &str) -> Result<Arc<AtomicBool>, String> {
        let log = self.log(job);
        let output = (crate::files::private_options().append(true).create(true))
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.env(process::ENV_ROLE, process::DETACHED_ROLE)
            .stdin(std::process::Stdio::piped())
            .stdout(output)
            .stderr(errors);
        // Its own process group: a terminal's Ctrl-C stops the head, which stops it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child =
            (cmd.spawn()).map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let handle = match ProcessHandle::of(&child) {
            Ok(handle) => Arc::new(handle),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot watch the host of detached actors: {e}"));
            }
        };
        // Its first frame, on its input: where to join, with what, as whom.
        let start = HeadOrder::Start {
            head: self.head.clone(),
            token: self.token.clone(),
            job: job.to_string(),
        };
        let mut frame = Vec::new();
        let written = prism_transport::encode_frame(&start, &mut frame)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let input = child.stdin.take().ok_or("no input")?;
                std::io::Write::write_all(&mut &input, &frame).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            handle.kill();
            let _ = child.wait();
            return Err(format!(
                "cannot tell the host of detached actors where to join: {e}"
            ));
        }
        tracing::info!(job, pid = handle.pid(), "started a host of detached actors");
        self.started.lock().push(handle);
        let exited = Arc::new(AtomicBool::new(false));
        let (seen, changed, job) = (exited.clone(), self.changed.clone(), job.to_string());
        std::thread::Builder::new()
            .name(format!("prism-wait-{job}"))
            .spawn(move || {
                let status = child.wait();
                tracing::info!(job, "a host of detached actors exited: {status:?}");
                seen.store(true, Ordering::SeqCst);
                // A start waiting for its stream gives up now, not after its timeout.
                changed.notify_waiters();
            })
            .map_err(|e| format!("cannot start a waiter thread: {e}"))?;
        Ok(exited)
    }
}
