//! The head's detached actors (Ray's GCS-made detached actors; step 5's piece 4 in
//! docs/ownership.md): an actor that outlives its creator's job needs a process of a job that
//! does not end with the creator's, running the creator's binary (which holds its class).
//! The head starts one such process per binary, as its own child (it dies with the head):
//! the binary fetched from the creator by content hash, run in the `detached` role, told on
//! a link only the two hold to join the cluster as job `detached-<binary>`; that job's driver
//! makes, restarts and kills the detached actors (its names claimed and its directory
//! published like any job's), and answers the head's orders on the link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prism_graph::ActorId;
use prism_transport::{
    AsyncFrameReader, DetachedCreation, DetachedOrder, DetachedOutcome, DetachedReply, FromControl,
    Refusal,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::oneshot;

use super::Control;
use crate::node::host::Hosting;
use crate::process::{self, ProcessHandle};
use crate::proto::node::detached::detached_job;

/// How long a new host may take to join the cluster.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a host may take to answer an order (a creation waits for its name's claim).
const ORDER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping head waits for a host to leave the cluster and exit.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Largest frame a host may send.
const MAX_REPLY: usize = 1 << 20;

/// The processes that host detached actors, one per binary.
pub(super) struct DetachedHosts {
    /// The head's address and join token (what a host joins with).
    head: String,
    token: String,
    hosting: Arc<Hosting>,
    /// Where each host's output goes.
    dir: PathBuf,
    hosts: tokio::sync::Mutex<HashMap<[u8; 32], Arc<Host>>>,
}

/// A process hosting one binary's detached actors.
struct Host {
    job: String,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Orders sent and not answered, by number.
    pending: parking_lot::Mutex<HashMap<u64, oneshot::Sender<DetachedOutcome>>>,
    next: AtomicU64,
    /// Its link is open (a closed one is the process's end).
    alive: AtomicBool,
    process: ProcessHandle,
}

impl DetachedHosts {
    pub(super) fn new(
        head: SocketAddr,
        token: String,
        hosting: Arc<Hosting>,
        dir: PathBuf,
    ) -> Self {
        DetachedHosts {
            head: head.to_string(),
            token,
            hosting,
            dir,
            hosts: tokio::sync::Mutex::new(HashMap::new()),
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
        let host = match self.host_for(creator, binary, size, &binary_from).await {
            Ok(host) => host,
            Err(reason) => return FromControl::Error(reason),
        };
        let class = setup.class.clone();
        let spec = Box::new(spec);
        let order = |order| DetachedOrder::Create { order, spec, setup };
        match host.order(order).await {
            Ok(DetachedOutcome::Created(actor)) => {
                let status = control.with(|store| store.actor_status(&host.job, actor));
                tracing::info!(job = host.job, actor = %actor, class, creator, "made a detached actor");
                FromControl::Found {
                    job: host.job.clone(),
                    actor,
                    class,
                    status,
                }
            }
            Ok(DetachedOutcome::Refused(Refusal::NameTaken { holder, .. })) => {
                FromControl::NameHeld {
                    job: holder.unwrap_or_else(|| host.job.clone()),
                }
            }
            Ok(DetachedOutcome::Refused(refusal)) => {
                FromControl::Error(crate::Error::from_refusal(refusal).to_string())
            }
            Ok(DetachedOutcome::Failed(reason)) => FromControl::Error(reason),
            Ok(other) => FromControl::Error(format!("the host answered {other:?}")),
            Err(reason) => FromControl::Error(reason),
        }
    }

    /// Kills detached actor `actor` of job `job`: the answer to a
    /// [`prism_transport::ToControl::KillDetached`].
    pub(super) async fn kill(&self, job: &str, actor: ActorId) -> FromControl {
        let host = (self.hosts.lock().await.values())
            .find(|host| host.job == job && host.alive.load(Ordering::SeqCst))
            .cloned();
        let Some(host) = host else {
            return FromControl::Error(format!(
                "job {job} hosts no detached actors here (only the head's detached jobs' actors are killed through it)"
            ));
        };
        match host
            .order(|order| DetachedOrder::Kill { order, actor })
            .await
        {
            Ok(DetachedOutcome::Killed) => FromControl::Ack,
            Ok(other) => FromControl::Error(format!("{job} answered {other:?}")),
            Err(reason) => FromControl::Error(reason),
        }
    }

    /// Stops every host: its link closes, so it leaves the cluster (its actors die with its
    /// job) and exits; one still running after [`STOP_GRACE`] is killed.
    pub(super) async fn stop_all(&self) {
        let hosts: Vec<Arc<Host>> = self.hosts.lock().await.drain().map(|(_, h)| h).collect();
        for host in &hosts {
            let _ = host.writer.lock().await.shutdown().await;
        }
        for host in hosts {
            let waited = tokio::task::spawn_blocking(move || {
                if !host.process.wait_exit(STOP_GRACE) {
                    tracing::warn!(
                        job = host.job,
                        "the host of detached actors did not stop in time: killed"
                    );
                    host.process.kill();
                }
            });
            let _ = waited.await;
        }
    }

    /// The live host of binary `binary`, started now if there is none.
    async fn host_for(
        &self,
        creator: &str,
        binary: [u8; 32],
        size: u64,
        from: &str,
    ) -> Result<Arc<Host>, String> {
        let mut hosts = self.hosts.lock().await;
        if let Some(host) = hosts.get(&binary)
            && host.alive.load(Ordering::SeqCst)
        {
            return Ok(host.clone());
        }
        let from: SocketAddr = (from.parse())
            .map_err(|e| format!("the creator's address {from:?} is not an address: {e}"))?;
        let exe = self.hosting.binary(creator, binary, size, from).await?;
        let host = self.start(&exe, detached_job(&binary)).await?;
        hosts.insert(binary, host.clone());
        Ok(host)
    }

    /// Starts the host of the binary at `exe` as job `job` and waits for its join.
    async fn start(&self, exe: &std::path::Path, job: String) -> Result<Arc<Host>, String> {
        let log = self.dir.join(format!("{job}.log"));
        let output = (crate::files::private_options().append(true).create(true))
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.env(process::ENV_ROLE, process::DETACHED_ROLE)
            .stdin(std::process::Stdio::null())
            .stdout(output)
            .stderr(errors);
        // On a thread of the runtime (which lives as long as the head): the host dies with
        // the thread that started it.
        let process::Linked {
            mut child,
            handle,
            link,
        } = process::spawn_linked(&mut cmd, None)
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        std::thread::Builder::new()
            .name(format!("prism-wait-{job}"))
            .spawn(move || {
                let status = child.wait();
                tracing::info!("a detached actors' host exited: {status:?}");
            })
            .map_err(|e| format!("cannot start a waiter thread: {e}"))?;
        let fail = |handle: &ProcessHandle, reason: String| {
            handle.kill();
            Err(format!(
                "the host of detached actors ({job}) did not start: {reason}"
            ))
        };
        if let Err(e) = link.set_nonblocking(true) {
            return fail(&handle, e.to_string());
        }
        let link = match tokio::net::UnixStream::from_std(link) {
            Ok(link) => link,
            Err(e) => return fail(&handle, e.to_string()),
        };
        let (read, mut write) = link.into_split();
        let start = DetachedOrder::Start {
            head: self.head.clone(),
            token: self.token.clone(),
            job: job.clone(),
        };
        let mut frame = Vec::new();
        if let Err(e) = prism_transport::encode_frame(&start, &mut frame) {
            return fail(&handle, e.to_string());
        }
        if let Err(e) = write.write_all(&frame).await {
            return fail(&handle, e.to_string());
        }
        let mut replies = AsyncFrameReader::new(read, MAX_REPLY);
        let ready = tokio::time::timeout(START_TIMEOUT, replies.read_frame()).await;
        match ready.map(|r| r.map(|f| f.map(|f| decode(&f)))) {
            Ok(Ok(Some(Ok(DetachedReply {
                outcome: DetachedOutcome::Ready,
                ..
            })))) => {}
            Ok(Ok(Some(Ok(DetachedReply {
                outcome: DetachedOutcome::Failed(reason),
                ..
            })))) => return fail(&handle, reason),
            Ok(Ok(Some(Ok(other)))) => return fail(&handle, format!("it answered {other:?}")),
            Ok(Ok(Some(Err(e)))) => return fail(&handle, e),
            Ok(Err(e)) => return fail(&handle, e.to_string()),
            Ok(Ok(None)) => return fail(&handle, format!("it exited (see {})", log.display())),
            Err(_) => return fail(&handle, format!("no word in {} s", START_TIMEOUT.as_secs())),
        }
        tracing::info!(job, pid = handle.pid(), "started a host of detached actors");
        let host = Arc::new(Host {
            job,
            writer: tokio::sync::Mutex::new(write),
            pending: parking_lot::Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            process: handle,
        });
        tokio::spawn(read_replies(host.clone(), replies));
        Ok(host)
    }
}

fn decode(frame: &prism_transport::Frame) -> Result<DetachedReply, String> {
    let archived = frame.access::<DetachedReply>().map_err(|e| e.to_string())?;
    rkyv::deserialize::<DetachedReply, rkyv::rancor::Error>(archived).map_err(|e| e.to_string())
}

/// Hands the host's answers to the orders waiting for them, until its link ends (then every
/// order still waiting fails, and the host is counted gone).
async fn read_replies(
    host: Arc<Host>,
    mut replies: AsyncFrameReader<tokio::net::unix::OwnedReadHalf>,
) {
    let why = loop {
        match replies.read_frame().await {
            Ok(Some(frame)) => match decode(&frame) {
                Ok(reply) => {
                    if let Some(waiter) = host.pending.lock().remove(&reply.order) {
                        let _ = waiter.send(reply.outcome);
                    }
                }
                Err(e) => {
                    // Its orders can no longer be answered: it goes.
                    host.process.kill();
                    break format!("it sent a malformed answer: {e}");
                }
            },
            // It closes the link as it exits (after it left the cluster).
            Ok(None) => break "its link closed".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    tracing::info!(job = host.job, "the host of detached actors is gone: {why}");
    host.alive.store(false, Ordering::SeqCst);
    host.pending.lock().clear();
}

impl Host {
    /// Sends the order `make` numbers and waits for its answer.
    async fn order(
        &self,
        make: impl FnOnce(u64) -> DetachedOrder,
    ) -> Result<DetachedOutcome, String> {
        let number = self.next.fetch_add(1, Ordering::SeqCst);
        let mut frame = Vec::new();
        prism_transport::encode_frame(&make(number), &mut frame).map_err(|e| e.to_string())?;
        let (tell, answer) = oneshot::channel();
        self.pending.lock().insert(number, tell);
        let gone = || format!("the host of detached actors ({}) is gone", self.job);
        if self.writer.lock().await.write_all(&frame).await.is_err() {
            self.pending.lock().remove(&number);
            return Err(gone());
        }
        match tokio::time::timeout(ORDER_TIMEOUT, answer).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                self.pending.lock().remove(&number);
                Err(format!(
                    "the host of detached actors ({}) did not answer within {} s",
                    self.job,
                    ORDER_TIMEOUT.as_secs()
                ))
            }
        }
    }
}
