//! The head's and the nodes' daemons: what `prism start` runs in the background. The head
//! creates the cluster's CA and join token, serves the control store over mutual-TLS QUIC, keeps
//! its node table across restarts, and serves the dashboard; a node daemon joins the head,
//! heartbeats, and hosts drivers' jobs (see [`crate::node::host`]). The command line parses the
//! options and calls [`daemon`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod detached;
mod orders;

use prism_transport::quic::{self, Accepted, QuicError};
use prism_transport::tls::{ClusterAuthority, Identity, JoinToken};
use prism_transport::{FromControl, HostHello, Purpose, ToControl};

use crate::node::host::Hosting;
use crate::proto::control::{self, ControlStore, Saved};
use crate::session::{
    announce, forget_daemon, given_token, head_and_token, now_nanos, open_session, session_dir,
    write_private,
};

/// What a daemon is started with (from `prism start`'s options).
#[derive(Debug, Clone)]
pub(crate) struct DaemonOptions {
    /// Run the head (else a node that joins `address`).
    pub(crate) head: bool,
    /// The head's address, for a node.
    pub(crate) address: Option<String>,
    /// The join token, if given on the command line or in the environment.
    pub(crate) token: Option<String>,
    /// A file holding the join token.
    pub(crate) token_file: Option<PathBuf>,
    /// The IP address to listen on.
    pub(crate) host: std::net::IpAddr,
    /// The UDP port to listen on (the head's default is 6380; nodes take any).
    pub(crate) port: Option<u16>,
    /// Logical CPUs of this node (default: the host's cores).
    pub(crate) num_cpus: Option<f64>,
    /// Logical GPUs of this node.
    pub(crate) num_gpus: f64,
    /// Custom resources.
    pub(crate) resources: BTreeMap<String, f64>,
    /// This node's name.
    pub(crate) name: Option<String>,
    /// The head's dashboard address.
    pub(crate) dashboard_host: std::net::IpAddr,
    /// Serve the dashboard on a non-loopback address over plain HTTP anyway.
    pub(crate) insecure_dashboard: bool,
    /// The dashboard's TCP port (0: any free one).
    pub(crate) dashboard_port: u16,
}

fn total_resources(args: &DaemonOptions) -> Vec<(String, f64)> {
    let cpus = args
        .num_cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let mut all = vec![
        ("CPU".to_string(), cpus),
        ("GPU".to_string(), args.num_gpus),
    ];
    all.extend(args.resources.iter().map(|(k, v)| (k.clone(), *v)));
    all
}

/// The node's resources as its daemon grants them to jobs (see [`crate::proto::grants`]).
fn granted_resources(args: &DaemonOptions) -> Result<prism_graph::Resources, String> {
    let mut total = prism_graph::Resources::default();
    for (name, amount) in total_resources(args) {
        total
            .set(&name, amount)
            .map_err(|e| format!("resource {name}: {e}"))?;
    }
    Ok(total)
}

fn millis_env(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// How often a node tells the head it is alive (`PRISM_HEARTBEAT_MS`).
fn heartbeat_interval() -> Duration {
    millis_env("PRISM_HEARTBEAT_MS", control::HEARTBEAT.as_millis() as u64)
}

/// How long the head waits for a node's heartbeat before it counts the node dead
/// (`PRISM_NODE_TIMEOUT_MS`).
fn node_timeout() -> Duration {
    millis_env(
        "PRISM_NODE_TIMEOUT_MS",
        control::NODE_TIMEOUT.as_millis() as u64,
    )
}

pub(crate) async fn daemon(args: DaemonOptions) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let dir = open_session()?;
    let slot: StopSlot = Arc::default();
    let drain_asked = slot.lock().drain_asked.clone();
    let is_head = args.head;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let run = async {
        if args.head {
            head(args, &dir, &slot).await
        } else {
            node(args, &dir, &slot).await
        }
    };
    let result = tokio::select! {
        result = run => result,
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        _ = drain_asked.notified() => Ok(()),
    };
    // Stopping (asked, or failed): a node drains first (see [`drain`]); then the jobs'
    // workers go, their stores and this record too, and a node leaves the head's table
    // (drivers learn it at once).
    let stopping = std::mem::take(&mut *slot.lock());
    if let (false, Some(hosting), Some(membership)) =
        (is_head, &stopping.hosting, &stopping.membership)
    {
        drain(hosting, membership).await;
    }
    if let Some(detached) = stopping.detached {
        detached.stop_all().await;
    }
    if let Some(hosting) = stopping.hosting {
        hosting.end_all();
    }
    if let Some(membership) = stopping.membership {
        let (node, leave) = (
            membership.id,
            ToControl::Leave {
                node: membership.id,
            },
        );
        match membership.link.ask(&leave, HEAD_PATIENCE).await {
            Ok(FromControl::Ack) => tracing::info!(node, "left the cluster"),
            Ok(other) => tracing::warn!(node, "the head did not let the node leave: {other:?}"),
            Err(e) => tracing::warn!(node, "cannot tell the head the node leaves: {e}"),
        }
    }
    forget_daemon(&dir.join("daemons"), std::process::id());
    tracing::info!("the daemon stops");
    result
}

/// How long a stopping node waits for the head to answer (a loaded head may take over a
/// second; a node that gives up is listed dead until the head's timeout instead of leaving).
const HEAD_PATIENCE: Duration = Duration::from_secs(2);

/// What a daemon's shutdown path undoes: the jobs it hosts, and a node's membership; and how
/// the head asks the node to stop (`prism drain`).
#[derive(Default)]
struct Stopping {
    hosting: Option<Arc<Hosting>>,
    /// The head's hosts of detached actors.
    detached: Option<Arc<detached::DetachedHosts>>,
    membership: Option<Membership>,
    drain_asked: Arc<tokio::sync::Notify>,
}

/// A node's membership: its way to the head, its number and name there, and its resources
/// (for the heartbeats it goes on sending while it drains).
struct Membership {
    link: HeadLink,
    id: u32,
    name: String,
    resources: Vec<(String, f64)>,
}

/// A node's way to the head: the connection it registered on, and what it takes to connect
/// again. A stopping node must reach the head even when that connection just ended (a
/// heartbeat answered late makes the node drop it and register again; a stop in that window
/// would otherwise leave the node listed, dead, instead of gone).
#[derive(Clone)]
struct HeadLink {
    client: quinn::Endpoint,
    head: SocketAddr,
    identity: Identity,
    name: String,
    connection: Arc<parking_lot::Mutex<quinn::Connection>>,
}

/// Why a stopping node's request did not reach the head.
#[derive(Debug, thiserror::Error)]
enum HeadAskError {
    /// No answer within the node's patience.
    #[error("the head at {head} did not answer within {} ms", patience.as_millis())]
    NoAnswer {
        /// The head's address.
        head: SocketAddr,
        /// How long the node waited.
        patience: Duration,
    },
    /// The connection failed, and so did connecting again.
    #[error("{asked} (and connecting again: {again})")]
    Unreachable {
        /// Why the request failed.
        asked: String,
        /// Why the new connection failed.
        again: String,
    },
}

impl HeadLink {
    /// Connects to the head as the member `name`.
    async fn connect(
        client: quinn::Endpoint,
        head: SocketAddr,
        identity: Identity,
        name: String,
    ) -> Result<HeadLink, String> {
        let connection = connect_member(&client, head, &identity, &name).await?;
        Ok(HeadLink {
            client,
            head,
            identity,
            name,
            connection: Arc::new(parking_lot::Mutex::new(connection)),
        })
    }

    /// The connection in use.
    fn connection(&self) -> quinn::Connection {
        self.connection.lock().clone()
    }

    /// Asks `request`; when the connection fails, connects again once and asks over the new
    /// one; all within `patience`.
    async fn ask(
        &self,
        request: &ToControl,
        patience: Duration,
    ) -> Result<FromControl, HeadAskError> {
        let no_answer = || HeadAskError::NoAnswer {
            head: self.head,
            patience,
        };
        let again = async {
            let asked = match ask(&self.connection(), request).await {
                Ok(answer) => return Ok(answer),
                Err(asked) => asked,
            };
            tracing::debug!(head = %self.head, "asking the head again on a new connection: {asked}");
            let fresh = connect_member(&self.client, self.head, &self.identity, &self.name)
                .await
                .map_err(|again| HeadAskError::Unreachable {
                    asked: asked.to_string(),
                    again,
                })?;
            *self.connection.lock() = fresh.clone();
            ask(&fresh, request)
                .await
                .map_err(|e| HeadAskError::Unreachable {
                    asked: asked.to_string(),
                    again: e.to_string(),
                })
        };
        tokio::time::timeout(patience, again)
            .await
            .unwrap_or_else(|_| Err(no_answer()))
    }
}

/// A node that stops drains first: it starts no new job, has the head mark it draining (so
/// that drivers give it no new work, take back what it has not started, and let it go once
/// it runs nothing of theirs, see [`prism_transport::ToHost::EndJob`]), and waits for that up
/// to `PRISM_DRAIN_MS` (default [`control::DRAIN_GRACE`]). What still runs then is ended, and
/// runs again elsewhere.
async fn drain(hosting: &Hosting, membership: &Membership) {
    let started = Instant::now();
    hosting.start_draining();
    let node = membership.id;
    let ask_drain = ToControl::Drain {
        name: membership.name.clone(),
    };
    match membership.link.ask(&ask_drain, HEAD_PATIENCE).await {
        Ok(FromControl::Ack) => tracing::info!(node, "draining"),
        Ok(other) => tracing::warn!(node, "the head did not mark the node draining: {other:?}"),
        Err(e) => tracing::warn!(node, "cannot tell the head the node drains: {e}"),
    }
    let grace = millis_env("PRISM_DRAIN_MS", control::DRAIN_GRACE.as_millis() as u64);
    // The node beats on while it drains (its main loop ended with the stop), so that a grace
    // longer than the node timeout does not make it count dead.
    let mut beat = tokio::time::interval(heartbeat_interval());
    while !hosting.idle() && started.elapsed() < grace {
        tokio::select! {
            _ = beat.tick() => {
                let heartbeat = ToControl::Heartbeat {
                    node,
                    available: membership.resources.clone(),
                    pulled: hosting.pulled(),
                    usage: hosting.usage(),
                };
                let connection = membership.link.connection();
                tokio::spawn(async move { ask(&connection, &heartbeat).await });
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    match hosting.idle() {
        true => tracing::info!(
            node,
            "every job let the node go after {:?}",
            started.elapsed()
        ),
        false => tracing::warn!(
            node,
            "jobs still ran tasks here after {} ms: they are ended (their tasks run again elsewhere)",
            grace.as_millis()
        ),
    }
}

/// Where a daemon leaves what [`Stopping`] undoes.
type StopSlot = Arc<parking_lot::Mutex<Stopping>>;

/// The cluster this session directory already holds (a restarted head), if any: its CA,
/// token and saved node table.
fn recover_cluster(dir: &Path) -> Result<Option<(ClusterAuthority, JoinToken, Saved)>, String> {
    let read = |file: &str| std::fs::read_to_string(dir.join(file));
    let (Ok(cluster), Ok(cert), Ok(key), Ok(token)) = (
        read("cluster"),
        read("ca.pem"),
        read("ca-key.pem"),
        read("token"),
    ) else {
        return Ok(None);
    };
    let ca = ClusterAuthority::from_pem(cluster.trim(), &cert, &key)
        .map_err(|e| format!("cannot recover the cluster in {}: {e}", dir.display()))?;
    let token: JoinToken = token
        .parse()
        .map_err(|e: prism_transport::tls::TlsError| e.to_string())?;
    let saved = match read(CONTROL_FILE) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("cannot read {}: {e}", dir.join(CONTROL_FILE).display()))?,
        Err(_) => Saved::default(),
    };
    Ok(Some((ca, token, saved)))
}

/// The head's read-only token for `/metrics` (`metrics-token` in the session directory, made
/// once: 32 random bytes in hex).
fn metrics_token(dir: &Path) -> Result<String, String> {
    let path = dir.join("metrics-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let bytes =
        crate::rng::os_bytes::<32>().map_err(|e| format!("cannot draw a metrics token: {e}"))?;
    let token = prism_transport::tls::hex(&bytes);
    write_private(&path, &token)?;
    Ok(token)
}

/// The saved node table and directory of jobs in the session directory.
const CONTROL_FILE: &str = "control.json";

/// The head's control store, its saved copy and its subscribers: whatever changes the store
/// goes through [`Control::with`], which saves the node table and jobs and wakes the subscribers of
/// a new membership version.
struct Control {
    store: Arc<parking_lot::Mutex<ControlStore>>,
    dir: PathBuf,
    version: tokio::sync::watch::Sender<u64>,
    /// The directory of jobs' version (see [`ControlStore::directory_version`]).
    directory: tokio::sync::watch::Sender<u64>,
    /// The name of the head's own node (it stops with the head, never drains).
    head: String,
}

impl Control {
    fn new(store: ControlStore, dir: &Path, head: &str) -> Arc<Control> {
        let (version, _) = tokio::sync::watch::channel(store.version());
        let (directory, _) = tokio::sync::watch::channel(store.directory_version());
        Arc::new(Control {
            store: Arc::new(parking_lot::Mutex::new(store)),
            dir: dir.to_path_buf(),
            version,
            directory,
            head: head.to_string(),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut ControlStore) -> R) -> R {
        let (result, version, directory) = {
            let mut store = self.store.lock();
            let result = f(&mut store);
            save(&self.dir, &mut store);
            (result, store.version(), store.directory_version())
        };
        self.version
            .send_if_modified(|seen| std::mem::replace(seen, version) != version);
        self.directory
            .send_if_modified(|seen| std::mem::replace(seen, directory) != directory);
        result
    }
}

fn save(dir: &Path, control: &mut ControlStore) {
    if !control.changed() {
        return;
    }
    let path = dir.join(CONTROL_FILE);
    let text = serde_json::to_string_pretty(&control.snapshot()).unwrap_or_default();
    if let Err(e) = write_private(&path, &text) {
        tracing::error!("cannot save the node table and jobs: {e}");
    }
}

async fn head(args: DaemonOptions, dir: &Path, slot: &StopSlot) -> Result<(), String> {
    let timeout = node_timeout();
    let epoch = boot_id();
    let (ca, token, control) = match recover_cluster(dir)? {
        Some((ca, token, saved)) => {
            tracing::info!(
                nodes = saved.nodes.len(),
                jobs = saved.jobs.len(),
                "recovering the cluster from {}",
                dir.display()
            );
            (
                ca,
                token,
                ControlStore::recover(
                    timeout,
                    epoch,
                    saved,
                    Instant::now(),
                    control::reconnect_grace(heartbeat_interval()),
                ),
            )
        }
        None => {
            let cluster = format!("{:x}", now_nanos());
            let ca = ClusterAuthority::create(&cluster).map_err(|e| e.to_string())?;
            let token = JoinToken::generate(ca.certificate());
            let (ca_pem, key_pem) = ca.to_pem();
            write_private(&dir.join("ca.pem"), &ca_pem)?;
            write_private(&dir.join("ca-key.pem"), &key_pem)?;
            write_private(&dir.join("token"), &token.to_string())?;
            write_private(&dir.join("cluster"), &cluster)?;
            (ca, token, ControlStore::new(timeout, epoch))
        }
    };
    let ca = Arc::new(ca);
    let identity = ca.issue("head").map_err(|e| e.to_string())?;
    let bind = SocketAddr::new(args.host, args.port.unwrap_or(6380));
    let endpoint = quic::server_endpoint(bind, &identity).map_err(|e| e.to_string())?;
    let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
    write_private(&dir.join("address"), &addr.to_string())?;

    let name = args.name.clone().unwrap_or_else(|| "head".to_string());
    let control = Control::new(control, dir, &name);
    let register = ToControl::Register {
        name: name.clone(),
        addr: addr.to_string(),
        resources: total_resources(&args),
        boot: boot_id(),
    };
    let own = control.with(|store| store.handle(register, Instant::now()));
    let FromControl::Registered(own_id) = own else {
        return Err(format!("the head cannot register itself: {own:?}"));
    };
    let checks = control.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(control::SILENCE_CHECK);
        loop {
            tick.tick().await;
            checks.with(|store| store.check(Instant::now()));
        }
    });
    let total = total_resources(&args);
    let grants = granted_resources(&args)?;
    let hosting = Hosting::new(
        name.clone(),
        grants,
        dir,
        identity,
        quinn::Endpoint::clone(&endpoint),
    );
    slot.lock().hosting = Some(hosting.clone());
    let orders = Arc::new(orders::JobOrders::default());
    let detached = Arc::new(detached::DetachedHosts::new(
        addr,
        token.to_string(),
        hosting.clone(),
        dir.to_path_buf(),
        orders.clone(),
    ));
    slot.lock().detached = Some(detached.clone());
    // The head's own node beats, and reports its workers' task events, in-process.
    let (beats, beating, own_name) = (control.clone(), hosting.clone(), name.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat_interval());
        loop {
            tick.tick().await;
            let beat = ToControl::Heartbeat {
                node: own_id,
                available: total.clone(),
                pulled: beating.pulled(),
                usage: beating.usage(),
            };
            let reports = beating.task_reports();
            beats.with(|store| {
                store.handle(beat, Instant::now());
                for report in reports {
                    if let FromControl::Error(e) = store.node_events(&own_name, report) {
                        tracing::debug!("the head did not take the node's task events: {e}");
                    }
                }
            });
        }
    });
    if !args.dashboard_host.is_loopback() && !args.insecure_dashboard {
        return Err(format!(
            "the dashboard on {} would take the join token over plain HTTP: keep it on \
             loopback (reach it through an SSH tunnel) or pass --insecure-dashboard",
            args.dashboard_host
        ));
    }
    if args.insecure_dashboard {
        tracing::warn!(host = %args.dashboard_host, "the dashboard is served over plain HTTP");
    }
    let metrics_token = metrics_token(dir)?;
    let dashboard_addr = SocketAddr::new(args.dashboard_host, args.dashboard_port);
    let listener = tokio::net::TcpListener::bind(dashboard_addr)
        .await
        .map_err(|e| format!("cannot open the dashboard on {dashboard_addr}: {e}"))?;
    let dashboard_addr = listener.local_addr().map_err(|e| e.to_string())?;
    write_private(&dir.join("dashboard"), &format!("http://{dashboard_addr}"))?;
    let (dash_control, dash_token) = (control.store.clone(), token.to_string());
    tokio::spawn(async move {
        let served = crate::dashboard::serve(listener, dash_control, dash_token, metrics_token);
        if let Err(e) = served.await {
            tracing::error!("the dashboard stopped: {e}");
        }
    });
    tracing::info!(%addr, "head ready");
    announce(&format!(
        "Started the Prism head at {addr} (session {}).\nJoin token: {token}\n\
         Dashboard: http://{dashboard_addr}/?token={token} (or send the token as a Bearer token)\n\
         To add a node: prism start --address {addr} --token {token}\n",
        dir.display()
    ))?;
    while let Some(accepted) = quic::accept(&endpoint).await {
        let (ca, token, control) = (ca.clone(), token.clone(), control.clone());
        let (hosting, name, detached) = (hosting.clone(), name.clone(), detached.clone());
        let orders = orders.clone();
        tokio::spawn(async move {
            match accepted {
                Accepted::Joiner(connection) => {
                    if let Err(e) = quic::serve_join(connection, &token, &ca).await {
                        tracing::warn!("a join failed: {e}");
                    }
                }
                Accepted::Member(connection) => {
                    let peer = connection.remote_address();
                    match quic::welcome(&connection, &name, None).await {
                        Ok(hello) if hello.purpose == Purpose::Control => {
                            let head = Head {
                                control,
                                detached,
                                orders,
                            };
                            serve_member(connection, hello, head).await;
                        }
                        Ok(hello) => hosting.serve(connection, hello).await,
                        Err(e) => tracing::warn!(%peer, "refused a member: {e}"),
                    }
                }
            }
        });
    }
    Ok(())
}

/// Serves the node's endpoint: jobs and pulls of their objects (control requests go to the
/// head; joins too).
async fn serve_node_endpoint(endpoint: quic::Server, name: String, hosting: Arc<Hosting>) {
    while let Some(accepted) = quic::accept(&endpoint).await {
        let (hosting, name) = (hosting.clone(), name.clone());
        tokio::spawn(async move {
            match accepted {
                Accepted::Joiner(connection) => quic::close_for(
                    &connection,
                    quic::codes::REFUSED,
                    "this is a node, not the head: join at the head",
                ),
                Accepted::Member(connection) => {
                    let peer = connection.remote_address();
                    match quic::welcome(&connection, &name, None).await {
                        Ok(hello) => hosting.serve(connection, hello).await,
                        Err(e) => tracing::warn!(%peer, "refused a member: {e}"),
                    }
                }
            }
        });
    }
}

/// What the head serves its members' control requests from.
struct Head {
    control: Arc<Control>,
    detached: Arc<detached::DetachedHosts>,
    orders: Arc<orders::JobOrders>,
}

/// The largest control request the head reads (a driver's report of its task events is
/// the largest: see [`crate::proto::events::REPORT_MAX_BYTES`]).
const MAX_CONTROL_REQUEST: usize = 16 << 20;

/// Answers a member's control requests, one per stream, until it goes; a subscription
/// ([`ToControl::Watch`]) keeps its stream and is served on its own.
async fn serve_member(connection: quinn::Connection, hello: HostHello, head: Head) {
    let Head {
        control,
        detached,
        orders,
    } = head;
    let peer = connection.remote_address();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let request =
            match quic::read_request::<ToControl>(&mut recv, peer, MAX_CONTROL_REQUEST).await {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(e) => {
                    quic::close_for(&connection, quic::codes::BAD_FRAME, &e.to_string());
                    return;
                }
            };
        let reply = match request {
            ToControl::Leave { node } => control.with(|store| store.leave(node, &hello.name)),
            ToControl::NodeEvents(events) => {
                control.with(|store| store.node_events(&hello.name, events))
            }
            ToControl::Drain { name } if name == control.head => FromControl::Error(format!(
                "{name} is the head's own node: it stops with the head (prism stop on its host)"
            )),
            ToControl::Watch { epoch, after } => {
                tokio::spawn(serve_watch(send, control.clone(), epoch, after));
                continue;
            }
            ToControl::Job(update) if update.job != hello.name => FromControl::Error(format!(
                "{} cannot update job {}: only its driver may",
                hello.name, update.job
            )),
            ToControl::ClaimName {
                namespace,
                name,
                actor,
                class,
            } => control.with(|store| {
                let now = Instant::now();
                store.claim_name(&hello.name, &namespace, &name, actor, &class, now)
            }),
            ToControl::WatchActor { job, actor } => {
                tokio::spawn(serve_actor_watch(send, control.clone(), job, actor));
                continue;
            }
            // Answered when made (the binary may be fetched, its host started first).
            ToControl::CreateDetached(creation) => {
                let (control, detached, job) =
                    (control.clone(), detached.clone(), hello.name.clone());
                tokio::spawn(async move {
                    let reply = detached.create(&job, *creation, &control).await;
                    if quic::send_frame(&mut send, &reply).await.is_ok() {
                        let _ = send.finish();
                    }
                });
                continue;
            }
            ToControl::KillActor { job, actor } => orders.kill(&job, actor).await,
            ToControl::KillNamed { namespace, name } => {
                let found =
                    control.with(|store| store.find_name(&namespace, &name, Instant::now()));
                match found {
                    FromControl::Found { job, actor, .. } => orders.kill(&job, actor).await,
                    other => other,
                }
            }
            ToControl::TakeOrders => {
                let (orders, job) = (orders.clone(), hello.name.clone());
                tokio::spawn(async move { orders.serve(job, send, recv, peer).await });
                continue;
            }
            ToControl::HostDetached { binary } => {
                let (detached, job) = (detached.clone(), hello.name.clone());
                tokio::spawn(async move { detached.serve(job, binary, send, recv, peer).await });
                continue;
            }
            ToControl::ReleaseName {
                namespace,
                name,
                actor,
            } => control.with(|store| store.release_name(&hello.name, &namespace, &name, actor)),
            ToControl::Events(events) if events.summary.job != hello.name => {
                FromControl::Error(format!(
                    "{} cannot report the tasks of job {}: only its driver may",
                    hello.name, events.summary.job
                ))
            }
            request => control.with(|store| store.handle(request, Instant::now())),
        };
        if quic::send_frame(&mut send, &reply).await.is_err() {
            break;
        }
        let _ = send.finish();
    }
    tracing::info!(%peer, member = hello.name, "member disconnected");
}

/// Serves a subscription to the node table: what changed since the subscriber's `epoch` and
/// version `after` at once, then each change as it happens, and an empty update every
/// [`control::KEEPALIVE`] while nothing does, until the subscriber goes.
async fn serve_watch(mut send: quinn::SendStream, control: Arc<Control>, epoch: u64, after: u64) {
    let mut changes = control.version.subscribe();
    let (mut epoch, mut after) = (epoch, after);
    loop {
        let update = control.with(|store| store.updates(epoch, after, Instant::now()));
        (epoch, after) = (update.epoch, update.version);
        if quic::send_frame(&mut send, &FromControl::Members(update))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(control::KEEPALIVE) => {}
        }
    }
}

/// Serves a watch of job `job`'s actor `actor`: its directory entry at once, then whenever it
/// changes (and every [`control::KEEPALIVE`] while it does not), until the watcher goes or
/// the entry says the actor is dead.
async fn serve_actor_watch(
    mut send: quinn::SendStream,
    control: Arc<Control>,
    job: String,
    actor: prism_graph::ActorId,
) {
    let mut changes = control.directory.subscribe();
    let mut told = None;
    let mut keepalive = true;
    loop {
        let status = control.with(|store| store.actor_status(&job, actor));
        let dead = matches!(
            status.as_ref().map(|s| &s.state),
            Some(prism_transport::ActorState::Dead(_))
        );
        if keepalive || told.as_ref() != Some(&status) {
            let answer = FromControl::ActorChanged(status.clone());
            if quic::send_frame(&mut send, &answer).await.is_err() {
                return;
            }
            told = Some(status);
        }
        if dead {
            let _ = send.finish();
            return;
        }
        keepalive = tokio::select! {
            changed = changes.changed() => match changed {
                Ok(()) => false,
                Err(_) => return,
            },
            _ = tokio::time::sleep(control::KEEPALIVE) => true,
        };
    }
}

/// Sends one request to the control store on its own stream and reads the answer.
pub(crate) async fn ask(
    connection: &quinn::Connection,
    request: &ToControl,
) -> Result<FromControl, QuicError> {
    quic::ask(connection, request, 16 << 20).await
}

/// Connects the CLI to the head as a member: with the certificate cached in the session
/// directory when it belongs to this cluster, else by joining with the token (and caching the
/// certificate it gets).
pub(crate) async fn connect_to_head(
    bind: std::net::IpAddr,
    head: SocketAddr,
    token: &JoinToken,
    name: &str,
) -> Result<(quinn::Endpoint, quinn::Connection, Identity), String> {
    let endpoint = quic::client_endpoint(SocketAddr::new(bind, 0)).map_err(|e| e.to_string())?;
    let cached = session_dir().join("cli.pem");
    let identity = std::fs::read_to_string(&cached)
        .ok()
        .and_then(|pem| Identity::from_pem(&pem).ok())
        .filter(|id| prism_transport::tls::fingerprint(id.ca()) == *token.ca_fingerprint());
    let identity = match identity {
        Some(identity) => identity,
        None => {
            let identity = quic::join(&endpoint, head, token, name)
                .await
                .map_err(|e| format!("cannot join the cluster at {head}: {e}"))?;
            if open_session().is_ok() {
                let _ = write_private(&cached, &identity.to_pem());
            }
            identity
        }
    };
    let connection = connect_member(&endpoint, head, &identity, name).await?;
    Ok((endpoint, connection, identity))
}

async fn node(args: DaemonOptions, dir: &Path, slot: &StopSlot) -> Result<(), String> {
    let token = given_token(args.token.as_deref(), args.token_file.as_deref())?;
    let (head, token) = head_and_token(args.address.as_deref(), token.as_deref())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("node-{}-{}", args.host, std::process::id()));
    let client = quic::client_endpoint(SocketAddr::new(args.host, 0)).map_err(|e| e.to_string())?;
    let identity = quic::join(&client, head, &token, &name)
        .await
        .map_err(|e| format!("cannot join the cluster at {head}: {e}"))?;
    write_private(&dir.join(format!("{name}.pem")), &identity.to_pem())?;
    // The node's own endpoint, where other hosts will reach it.
    let bind = SocketAddr::new(args.host, args.port.unwrap_or(0));
    let endpoint = quic::server_endpoint(bind, &identity).map_err(|e| e.to_string())?;
    let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
    let grants = granted_resources(&args)?;
    let hosting = Hosting::new(
        name.clone(),
        grants,
        dir,
        identity.clone(),
        quinn::Endpoint::clone(&endpoint),
    );
    slot.lock().hosting = Some(hosting.clone());
    tokio::spawn(serve_node_endpoint(endpoint, name.clone(), hosting.clone()));
    let register = ToControl::Register {
        name: name.clone(),
        addr: addr.to_string(),
        resources: total_resources(&args),
        boot: boot_id(),
    };
    // Without the head, keep trying for this long before giving up (a restarting head).
    let patience = millis_env("PRISM_HEAD_RETRY_MS", 60_000);
    let mut announced = false;
    let mut lost_since: Option<Instant> = None;
    loop {
        let link = HeadLink::connect(client.clone(), head, identity.clone(), name.clone()).await;
        let reason = match link {
            Ok(link) => {
                let result = serve_head(&link, &register, &hosting, &mut announced, slot).await;
                lost_since = None;
                result
            }
            Err(e) => e,
        };
        if !announced {
            return Err(reason);
        }
        let since = *lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() > patience {
            return Err(format!(
                "lost the head at {head} for {:.0} s: {reason}",
                since.elapsed().as_secs_f64()
            ));
        }
        tracing::warn!(head = %head, "lost the head, retrying: {reason}");
        tokio::time::sleep(heartbeat_interval()).await;
    }
}

/// Connects to the head as a member that already has its certificate.
async fn connect_member(
    client: &quinn::Endpoint,
    head: SocketAddr,
    identity: &Identity,
    name: &str,
) -> Result<quinn::Connection, String> {
    let hello = HostHello::new(name, Purpose::Control, None);
    quic::connect(client, head, identity, &hello)
        .await
        .map(|(connection, _)| connection)
        .map_err(|e| format!("cannot connect to the head at {head}: {e}"))
}

/// Registers with the head and beats until the connection fails; returns why.
async fn serve_head(
    link: &HeadLink,
    register: &ToControl,
    hosting: &Hosting,
    announced: &mut bool,
    slot: &StopSlot,
) -> String {
    let (connection, head) = (&link.connection(), link.head);
    let ToControl::Register {
        name,
        addr,
        resources,
        ..
    } = register
    else {
        unreachable!("a registration");
    };
    let id = match ask(connection, register).await {
        Ok(FromControl::Registered(id)) => id,
        Ok(FromControl::Error(reason)) => return format!("the head refused {name}: {reason}"),
        Ok(other) => return format!("unexpected answer to a registration: {other:?}"),
        Err(e) => return e.to_string(),
    };
    tracing::info!(node = id, %addr, head = %head, "node registered");
    slot.lock().membership = Some(Membership {
        link: link.clone(),
        id,
        name: name.clone(),
        resources: resources.clone(),
    });
    if !*announced {
        if let Err(e) = announce(&format!(
            "Started Prism node {id} ({name}) at {addr}, joined to the head at {head}.\n"
        )) {
            return e;
        }
        *announced = true;
    }
    // A head new to this node (or restarted) hears every task record again.
    hosting.report_all_again();
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tick = tokio::time::interval(heartbeat_interval());
    loop {
        tick.tick().await;
        report_task_events(connection, hosting, &sending);
        let beat = ToControl::Heartbeat {
            node: id,
            available: resources.clone(),
            pulled: hosting.pulled(),
            usage: hosting.usage(),
        };
        // A head that died silently is noticed here, long before QUIC's idle timeout.
        let wait = control::beat_answer_wait(heartbeat_interval());
        match tokio::time::timeout(wait, ask(connection, &beat)).await {
            Ok(Ok(FromControl::Ack)) => {}
            Ok(Ok(FromControl::Drain)) => {
                tracing::info!(node = id, "the head asks the node to drain and stop");
                slot.lock().drain_asked.notify_one();
            }
            Ok(Ok(FromControl::Error(reason))) => {
                return format!("the head forgot this node: {reason}");
            }
            Ok(Ok(other)) => tracing::warn!("the head answered a heartbeat with {other:?}"),
            Ok(Err(e)) => return e.to_string(),
            Err(_) => {
                connection.close(quic::codes::DONE, b"no answer");
                return format!(
                    "no answer to a heartbeat within {:.1} s",
                    wait.as_secs_f64()
                );
            }
        }
    }
}

/// Sends the head the reports of the tasks the jobs' workers here own, where they changed,
/// beside the heartbeats: one after another, and none while the last ones are under way (a
/// later record must not reach the head before an earlier one of the same task). A report
/// the head does not take is logged and not sent again.
fn report_task_events(
    connection: &quinn::Connection,
    hosting: &Hosting,
    sending: &Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    if sending.swap(true, Ordering::SeqCst) {
        return;
    }
    let reports = hosting.task_reports();
    let (connection, sending) = (connection.clone(), sending.clone());
    tokio::spawn(async move {
        for report in reports {
            let job = report.summary.job.clone();
            match ask(&connection, &ToControl::NodeEvents(report)).await {
                Ok(FromControl::Ack) => {}
                Ok(other) => tracing::debug!(%job, "the head did not take task events: {other:?}"),
                Err(e) => tracing::debug!(%job, "cannot report task events to the head: {e}"),
            }
        }
        sending.store(false, Ordering::SeqCst);
    });
}

/// This daemon's start identity for [`ToControl::Register`]: its start time and pid.
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}
