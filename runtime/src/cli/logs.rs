//! `prism logs`: the workers' logs a host keeps in its session directory (what each worker
//! wrote to its standard output and error, labelled; see `node::output`): this host's, or,
//! for a node named with `--node` whose logs are not here, that node's over the cluster's
//! mutual-TLS QUIC (the node serves them to members: [`Purpose::Logs`]).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use prism_transport::{FromLogs, HostHello, Purpose, ToLogs, quic};

use super::{CliLink, ClientArgs, connect_cli, node_table};
use crate::node::output::{answer_logs, logs_dir, parse_log_name};

/// How often `--follow` looks for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The most one answer from another host may be (a read returns at most 1 MiB).
const MAX_ANSWER: usize = 2 << 20;

#[derive(Debug, Clone, Args)]
pub(super) struct LogsArgs {
    /// Only the workers of this node (its name; `local` for the workers of a program that
    /// runs its own cluster). A node whose logs this host does not keep is asked over the
    /// network (through the head's node table).
    #[arg(long)]
    node: Option<String>,
    /// Only this worker process: show its log (without it, the logs are listed).
    #[arg(long)]
    pid: Option<u32>,
    /// Show the logs, then what the workers write next, until interrupted.
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// A worker's log file, by its name (`NODE-PID.out` or `.err`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Log {
    node: String,
    pid: u32,
    stream: String,
    name: String,
    bytes: u64,
}

/// Where the logs are read.
enum Source {
    /// This host's session directory.
    Here,
    /// Another host's node, over a connection of its own.
    Node {
        name: String,
        link: Box<CliLink>,
        connection: quinn::Connection,
    },
}

impl Source {
    /// Where the logs `args` asks for are: here, unless it names a node whose logs this host
    /// does not keep and a head is known.
    async fn of(args: &LogsArgs) -> Result<Source, String> {
        let Some(node) = &args.node else {
            return Ok(Source::Here);
        };
        let here = match answer_logs(ToLogs::List) {
            FromLogs::List(logs) => logs,
            _ => Vec::new(),
        };
        let kept_here = here
            .iter()
            .any(|(name, _)| parse_log_name(name).is_some_and(|(n, _, _)| n == node));
        if kept_here || !crate::session::head_known(args.client.address.as_deref()) {
            return Ok(Source::Here);
        }
        let link = connect_cli(&args.client, "logs").await?;
        let nodes = node_table(&link.connection).await?;
        let found = nodes.iter().find(|n| n.name == *node).ok_or_else(|| {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "no worker logs of node {node} here, and the cluster has no node {node} (its nodes: {})",
                names.join(", ")
            )
        })?;
        let addr: SocketAddr = found
            .addr
            .parse()
            .map_err(|e| format!("node {node}'s address {:?}: {e}", found.addr))?;
        let hello = HostHello::new(link.name.as_str(), Purpose::Logs, None);
        let (connection, _) = quic::connect(&link.endpoint, addr, &link.identity, &hello)
            .await
            .map_err(|e| format!("cannot reach node {node} at {addr}: {e}"))?;
        Ok(Source::Node {
            name: node.clone(),
            link: Box::new(link),
            connection,
        })
    }

    /// Its answer to `request`.
    async fn ask(&self, request: ToLogs) -> Result<FromLogs, String> {
        match self {
            Source::Here => Ok(answer_logs(request)),
            Source::Node {
                name, connection, ..
            } => quic::ask::<_, FromLogs>(connection, &request, MAX_ANSWER)
                .await
                .map_err(|e| format!("node {name} does not answer: {e}")),
        }
    }

    /// Where it is, for messages.
    fn describe(&self) -> String {
        match self {
            Source::Here => logs_dir().display().to_string(),
            Source::Node { name, .. } => format!("node {name}'s host"),
        }
    }

    /// The logs `args` names, by node, pid and stream.
    async fn chosen(&self, args: &LogsArgs) -> Result<Vec<Log>, String> {
        let listed = match self.ask(ToLogs::List).await? {
            FromLogs::List(listed) => listed,
            FromLogs::Error(e) => return Err(e),
            other => return Err(format!("unexpected answer to a list of logs: {other:?}")),
        };
        let mut logs: Vec<Log> = listed
            .into_iter()
            .filter_map(|(name, bytes)| {
                let (node, pid, stream) = parse_log_name(&name)?;
                Some(Log {
                    node: node.to_string(),
                    pid,
                    stream: stream.to_string(),
                    name: name.clone(),
                    bytes,
                })
            })
            .filter(|l| args.node.as_ref().is_none_or(|n| *n == l.node))
            .filter(|l| args.pid.is_none_or(|p| p == l.pid))
            .collect();
        logs.sort();
        Ok(logs)
    }

    /// What log `name` holds from `offset` on.
    async fn read(&self, name: &str, mut offset: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            let request = ToLogs::Read {
                name: name.to_string(),
                offset,
                max: u32::MAX,
            };
            match self.ask(request).await? {
                FromLogs::Bytes(bytes) if bytes.is_empty() => return Ok(out),
                FromLogs::Bytes(bytes) => {
                    offset += bytes.len() as u64;
                    out.extend(bytes);
                }
                FromLogs::Error(e) => return Err(e),
                other => return Err(format!("unexpected answer to a read of {name}: {other:?}")),
            }
        }
    }

    /// Closes its connections.
    async fn close(self) {
        if let Source::Node {
            link, connection, ..
        } = self
        {
            connection.close(quic::codes::DONE, b"logs read");
            link.connection.close(quic::codes::DONE, b"logs read");
            link.endpoint.wait_idle().await;
        }
    }
}

/// `prism logs`.
pub(super) async fn logs(args: &LogsArgs) -> Result<(), String> {
    let source = Source::of(args).await?;
    let shown = show(&source, args).await;
    source.close().await;
    shown
}

async fn show(source: &Source, args: &LogsArgs) -> Result<(), String> {
    let logs = source.chosen(args).await?;
    if logs.is_empty() {
        return Err(format!(
            "no worker log{}{} in {}",
            args.node
                .as_ref()
                .map_or(String::new(), |n| format!(" of node {n}")),
            args.pid.map_or(String::new(), |p| format!(" of pid {p}")),
            source.describe()
        ));
    }
    if args.pid.is_none() && !args.follow {
        println!(
            "{:<16} {:>8} {:<6} {:>10}",
            "NODE", "PID", "STREAM", "BYTES"
        );
        for log in &logs {
            println!(
                "{:<16} {:>8} {:<6} {:>10}",
                log.node, log.pid, log.stream, log.bytes
            );
        }
        println!("(show one with --pid PID; --follow shows what comes next)");
        return Ok(());
    }
    let mut read: Vec<u64> = vec![0; logs.len()];
    loop {
        for (log, at) in logs.iter().zip(read.iter_mut()) {
            // A log removed meanwhile (the newest 1,000 are kept) has nothing more.
            let Ok(more) = source.read(&log.name, *at).await else {
                continue;
            };
            *at += more.len() as u64;
            let mut out = std::io::stdout().lock();
            out.write_all(&more)
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write: {e}"))?;
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_read_back() {
        let name = crate::node::output::log_name("n-2/x", 41, true);
        assert_eq!(name, "n-2_x-41.err");
        assert_eq!(parse_log_name(&name), Some(("n-2_x", 41, "err")));
        assert!(parse_log_name("n-41.txt").is_none());
        assert!(parse_log_name("n.out").is_none());
    }
}
