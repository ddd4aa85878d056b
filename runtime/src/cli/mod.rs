//! The `prism` command: start and stop the daemons of a cluster and show its state.
//!
//! `prism start --head` runs the head's daemon in the background: it creates the cluster's CA
//! and join token, serves the control store over mutual-TLS QUIC, and writes the address and
//! token to the session directory (`$PRISM_SESSION_DIR`, default `/tmp/prism/session_latest`).
//! `prism start --address HOST:PORT --token T` joins a node daemon to it; `prism status` shows
//! the nodes, their resources and health; `prism stop` stops the daemons this host started (a
//! node drains first), `prism drain NODE` has a node of the cluster drain and stop, `prism kill
//! NAME --namespace NS` kills the actor of that name, whichever job made it. The
//! daemons themselves are in [`crate::daemon`]: this module parses options and calls them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

mod list;
mod logs;
mod tasks;
use prism_transport::quic;
use prism_transport::{FromControl, NodeStatus, PendingDemand, ToControl};

use crate::daemon::{DaemonOptions, ask, connect_to_head, daemon};
use crate::session::{forget_daemon, given_token, head_and_token, open_session, session_dir};

/// The `prism` command line.
#[derive(Debug, Parser)]
#[command(
    name = "prism",
    version,
    about = "Start, inspect and stop a Prism cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the head (`--head`) or join a node to a cluster (`--address`, `--token`).
    Start(StartArgs),
    /// Show the cluster's nodes, their resources and health.
    Status(ClientArgs),
    /// Stop the daemons started on this host (this session directory); a node drains first:
    /// its running tasks finish or move to other nodes within a second.
    Stop,
    /// Have a node of the cluster drain and stop, as `prism stop` on its host would.
    Drain(DrainArgs),
    /// List the cluster's jobs, actors or placement groups (running and ended), as the head
    /// keeps them; or the tasks or objects of the Prism programs running on this host.
    List(list::ListArgs),
    /// Count the tasks (by function and state) or the objects (by function) of the Prism
    /// programs running on this host.
    Summary(list::SummaryArgs),
    /// Show one task of a Prism program running on this host: its state changes and runs.
    Get(list::GetArgs),
    /// Write the timeline of a Prism program running on this host (Chrome trace JSON).
    Timeline(tasks::TimelineArgs),
    /// List or show the logs of this host's workers (what they wrote, labelled).
    Logs(logs::LogsArgs),
    /// Kill the actor of a name, whichever job made it (Ray's `ray.kill`): its job's driver
    /// kills it, and it is not restarted.
    Kill(KillArgs),
    /// Run a daemon in the foreground (what `start` runs in the background).
    #[command(hide = true)]
    Daemon(StartArgs),
}

#[derive(Debug, Clone, Args)]
struct StartArgs {
    /// Start the head: the control store, the cluster's CA and join token.
    #[arg(long)]
    head: bool,
    /// The head's address, to join a node.
    #[arg(long, env = "PRISM_ADDRESS")]
    address: Option<String>,
    /// The join token the head printed (prefer `--token-file` or `PRISM_TOKEN`: a flag's value
    /// shows in `ps`).
    #[arg(long, env = "PRISM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token (the head writes one: `token` in its session directory).
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// The UDP port to listen on (the head's default is 6380; nodes take any).
    #[arg(long)]
    port: Option<u16>,
    /// Logical CPUs of this node (default: the host's cores).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// Logical GPUs of this node.
    #[arg(long, default_value_t = 0.0)]
    num_gpus: f64,
    /// Custom resources, as `name=amount,name=amount`.
    #[arg(long, value_parser = parse_resources, default_value = "")]
    resources: Resources,
    /// This node's name (default: node-HOST-PID).
    #[arg(long)]
    name: Option<String>,
    /// The head's dashboard address (HTTP; it asks for the join token). Loopback only, unless
    /// `--insecure-dashboard`: HTTP carries the token in the clear.
    #[arg(long, default_value = "127.0.0.1")]
    dashboard_host: std::net::IpAddr,
    /// Serve the dashboard on a non-loopback address over plain HTTP anyway (anyone on the
    /// path can read the token a browser sends).
    #[arg(long)]
    insecure_dashboard: bool,
    /// The dashboard's TCP port (0: any free one).
    #[arg(long, default_value_t = 8265)]
    dashboard_port: u16,
}

impl From<StartArgs> for DaemonOptions {
    fn from(args: StartArgs) -> Self {
        DaemonOptions {
            head: args.head,
            address: args.address,
            token: args.token,
            token_file: args.token_file,
            host: args.host,
            port: args.port,
            num_cpus: args.num_cpus,
            num_gpus: args.num_gpus,
            resources: args.resources,
            name: args.name,
            dashboard_host: args.dashboard_host,
            insecure_dashboard: args.insecure_dashboard,
            dashboard_port: args.dashboard_port,
        }
    }
}

#[derive(Debug, Clone, Args)]
struct ClientArgs {
    /// The head's address (default: the session directory's).
    #[arg(long, env = "PRISM_ADDRESS")]
    address: Option<String>,
    /// The join token (default: the session directory's).
    #[arg(long, env = "PRISM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct DrainArgs {
    /// The node's name.
    node: String,
    /// Return once the node is marked draining, without waiting for it to leave.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
struct KillArgs {
    /// The actor's name.
    name: String,
    /// The namespace of its name (`prism list actors` shows each actor's).
    #[arg(long, env = "PRISM_NAMESPACE")]
    namespace: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Why `prism kill` killed nothing.
#[derive(Debug, thiserror::Error)]
enum KillError {
    /// The head could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The request or its answer was lost.
    #[error("cannot ask the head: {0}")]
    Ask(String),
    /// No actor holds the name.
    #[error("no actor is named {name:?} in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    /// The head or the actor's job said why not.
    #[error("cannot kill {name:?} (namespace {namespace:?}): {reason}")]
    Refused {
        name: String,
        namespace: String,
        reason: String,
    },
}

/// Kills the actor of a name through the head, which orders its job's driver to.
async fn kill(args: &KillArgs) -> Result<(), KillError> {
    let CliLink {
        endpoint,
        connection,
        ..
    } = connect_cli(&args.client, "kill")
        .await
        .map_err(KillError::Connect)?;
    let (name, namespace) = (args.name.clone(), args.namespace.clone());
    let request = ToControl::KillNamed {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let answer = ask(&connection, &request).await;
    connection.close(quic::codes::DONE, b"kill done");
    endpoint.wait_idle().await;
    match answer.map_err(|e| KillError::Ask(e.to_string()))? {
        FromControl::Ack => {
            println!("Killed actor {name:?} (namespace {namespace:?}).");
            Ok(())
        }
        FromControl::NotFound => Err(KillError::NotFound { name, namespace }),
        FromControl::Error(reason) => Err(KillError::Refused {
            name,
            namespace,
            reason,
        }),
        other => Err(KillError::Refused {
            name,
            namespace,
            reason: format!("the head answered {other:?}"),
        }),
    }
}

type Resources = BTreeMap<String, f64>;

fn parse_resources(text: &str) -> Result<Resources, String> {
    let mut out = Resources::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, amount) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not name=amount"))?;
        let amount: f64 = amount
            .trim()
            .parse()
            .map_err(|_| format!("{amount:?} is not a number (in {pair:?})"))?;
        if !amount.is_finite() || amount < 0.0 {
            return Err(format!("{name} = {amount} is not a non-negative amount"));
        }
        out.insert(name.trim().to_string(), amount);
    }
    Ok(out)
}

/// Runs the `prism` command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(args) => start(&args),
        Command::Status(args) => runtime().and_then(|rt| rt.block_on(status(&args))),
        Command::Stop => stop(),
        Command::Drain(args) => runtime().and_then(|rt| rt.block_on(drain(&args))),
        Command::List(args) => runtime().and_then(|rt| rt.block_on(list::list(&args))),
        Command::Summary(args) => runtime().and_then(|rt| rt.block_on(list::summary(&args))),
        Command::Get(args) => runtime().and_then(|rt| rt.block_on(list::get(&args))),
        Command::Timeline(args) => runtime().and_then(|rt| rt.block_on(tasks::timeline(&args))),
        Command::Logs(args) => runtime().and_then(|rt| rt.block_on(logs::logs(&args))),
        Command::Kill(args) => {
            runtime().and_then(|rt| rt.block_on(kill(&args)).map_err(|e| e.to_string()))
        }
        Command::Daemon(args) => {
            init_logging();
            runtime().and_then(|rt| rt.block_on(daemon(args.into())))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prism: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Starts the daemon in the background and waits until it is ready (or failed).
fn start(args: &StartArgs) -> Result<(), String> {
    if !args.head && args.address.is_none() {
        return Err(
            "give --head to start a cluster, or --address (and --token) to join one".into(),
        );
    }
    let dir = open_session()?;
    let logs = dir.join("logs");
    crate::files::private_dir(&logs)
        .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let log_path = logs.join(format!(
        "{}-{}.log",
        if args.head { "head" } else { "node" },
        std::process::id()
    ));
    let log = crate::files::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut command = std::process::Command::new(exe);
    // The token reaches the daemon through its environment (readable by this user alone),
    // never its command line (which `ps` shows everyone).
    command
        .arg("daemon")
        .args(without_token(std::env::args_os().skip(2)));
    if let Some(token) = given_token(args.token.as_deref(), args.token_file.as_deref())? {
        command.env("PRISM_TOKEN", token);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves the terminal's session so that
    // closing the shell does not stop the daemon.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let ready = dir.join("daemons").join(child.id().to_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && !text.is_empty()
        {
            print!("{text}");
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = log.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            return Err(format!(
                "the daemon exited ({status}) before it was ready:\n{}",
                last.join("\n")
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "the daemon was not ready within 30 s; see {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command line without `--token T` / `--token=T` / `--token-file F` (the daemon gets the
/// token by its environment).
fn without_token(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if text == "--token" || text == "--token-file" {
            skip_value = true;
        } else if !text.starts_with("--token=") && !text.starts_with("--token-file=") {
            kept.push(arg);
        }
    }
    kept
}

/// The command's connection to the head.
struct CliLink {
    /// The head's address.
    head: SocketAddr,
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    /// The command's certificate of the cluster (to reach other members too).
    identity: prism_transport::tls::Identity,
    /// The name it goes by.
    name: String,
}

/// Connects the command to the head `args` name, as a member named after `what` and this
/// process.
async fn connect_cli(args: &ClientArgs, what: &str) -> Result<CliLink, String> {
    let token = given_token(args.token.as_deref(), args.token_file.as_deref())?;
    let (head, token) = head_and_token(args.address.as_deref(), token.as_deref())?;
    let bind: std::net::IpAddr = if head.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let name = format!("{what}-{}", std::process::id());
    let (endpoint, connection, identity) = connect_to_head(bind, head, &token, &name).await?;
    Ok(CliLink {
        head,
        endpoint,
        connection,
        identity,
        name,
    })
}

/// The node table.
async fn node_table(connection: &quinn::Connection) -> Result<Vec<NodeStatus>, String> {
    match ask(connection, &ToControl::Status)
        .await
        .map_err(|e| e.to_string())?
    {
        FromControl::Status(nodes) => Ok(nodes),
        other => Err(format!("unexpected answer to a status request: {other:?}")),
    }
}

/// How long `prism drain` waits for the node to leave.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Marks the node draining at the head and, unless told not to, waits until it left.
async fn drain(args: &DrainArgs) -> Result<(), String> {
    let CliLink {
        head,
        endpoint,
        connection,
        ..
    } = connect_cli(&args.client, "drain").await?;
    let started = Instant::now();
    let request = ToControl::Drain {
        name: args.node.clone(),
    };
    match ask(&connection, &request)
        .await
        .map_err(|e| e.to_string())?
    {
        FromControl::Ack => {}
        FromControl::Error(reason) => return Err(format!("cannot drain {}: {reason}", args.node)),
        other => return Err(format!("unexpected answer to a drain: {other:?}")),
    }
    let mut left = args.no_wait;
    while !left && started.elapsed() < DRAIN_WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = !node_table(&connection)
            .await?
            .iter()
            .any(|n| n.name == args.node);
    }
    connection.close(quic::codes::DONE, b"drain done");
    endpoint.wait_idle().await;
    match (args.no_wait, left) {
        (true, _) => println!("Node {} drains (cluster at {head}).", args.node),
        (false, true) => println!(
            "Node {} drained and left the cluster in {:.1} s.",
            args.node,
            started.elapsed().as_secs_f64()
        ),
        (false, false) => {
            return Err(format!(
                "node {} was marked draining but is still in the cluster after {} s",
                args.node,
                DRAIN_WAIT.as_secs()
            ));
        }
    }
    Ok(())
}

async fn status(args: &ClientArgs) -> Result<(), String> {
    let CliLink {
        head,
        endpoint,
        connection,
        ..
    } = connect_cli(args, "status").await?;
    let nodes = node_table(&connection).await?;
    let demands = match ask(&connection, &ToControl::Demands)
        .await
        .map_err(|e| e.to_string())?
    {
        FromControl::Demands(demands) => demands,
        other => return Err(format!("unexpected answer to a demand request: {other:?}")),
    };
    connection.close(quic::codes::DONE, b"status done");
    endpoint.wait_idle().await;
    print!("{}", render_status(head, &nodes, &demands));
    Ok(())
}

fn render_status(head: SocketAddr, nodes: &[NodeStatus], demands: &[PendingDemand]) -> String {
    let alive = nodes.iter().filter(|n| n.alive).count();
    let mut out = format!(
        "Cluster at {head}: {alive} of {} nodes alive\n",
        nodes.len()
    );
    out.push_str(
        "NODE  NAME                     ADDRESS                STATE  RESOURCES (used/total); PULLED\n",
    );
    for n in nodes {
        let resources = crate::proto::control::usage_line(n, str::to_string);
        let state = if n.alive && n.draining {
            "DRAINING".to_string()
        } else if n.alive {
            "ALIVE".to_string()
        } else {
            format!(
                "DEAD (last seen {:.1} s ago)",
                n.last_seen_ms as f64 / 1000.0
            )
        };
        out.push_str(&format!(
            "{:<5} {:<24} {:<22} {:<6} {}; pulled {}\n",
            n.id,
            n.name,
            n.addr,
            state,
            resources,
            crate::proto::control::pulled_line(&n.pulled)
        ));
    }
    if demands.is_empty() {
        out.push_str("Pending demands: none\n");
    } else {
        out.push_str("Pending demands:\n");
        for d in demands {
            let note = if d.infeasible {
                " (infeasible: no node has these resources)"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} x {} from {}{note}\n",
                d.demand, d.count, d.job
            ));
        }
    }
    out
}

/// Stops the daemons recorded in this host's session directory: only processes that are
/// still the daemons recorded there (same start time, owned by this user), each through a
/// pidfd, first with SIGTERM (the daemon stops its jobs' workers, removes their stores and
/// its record) and with SIGKILL if it is still there after five seconds.
/// How long `prism stop` lets a daemon stop before it kills it: a node's drain (up to 2 s to
/// reach the head, [`crate::proto::control::DRAIN_GRACE`] for its tasks) and its leave (2 s
/// more) fit with room to spare on a loaded machine.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn stop() -> Result<(), String> {
    let dir = session_dir().join("daemons");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("No Prism daemons recorded in {}.", dir.display());
        return Ok(());
    };
    let mut stopped = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let recorded = std::fs::read_to_string(dir.join(format!("{pid}.id")))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        match recorded.map(|started| crate::process::ProcessHandle::verified(pid, started)) {
            Some(Ok(Some(daemon))) => {
                if let Err(e) = daemon.stop(STOP_GRACE) {
                    eprintln!("prism: cannot stop daemon {pid}: {e}");
                    continue;
                }
                stopped += 1;
            }
            Some(Ok(None)) => {}
            Some(Err(e)) => {
                eprintln!("prism: not stopping pid {pid}: {e}");
                continue;
            }
            None => eprintln!("prism: pid {pid} has no start-time record; not signalled"),
        }
        forget_daemon(&dir, pid);
    }
    println!("Stopped {stopped} Prism daemon(s).");
    Ok(())
}
