//! `prism logs`: the workers' logs this host keeps in its session directory (what each worker
//! wrote to its standard output and error, labelled; see `node::output`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::node::output::logs_dir;

/// How often `--follow` looks for more.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Args)]
pub(super) struct LogsArgs {
    /// Only the workers of this node (its name; `local` for the workers of a program that
    /// runs its own cluster).
    #[arg(long)]
    node: Option<String>,
    /// Only this worker process: show its log (without it, the logs are listed).
    #[arg(long)]
    pid: Option<u32>,
    /// Show the logs, then what the workers write next, until interrupted.
    #[arg(long)]
    follow: bool,
}

/// A worker's log file, by its name (`NODE-PID.out` or `.err`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Log {
    node: String,
    pid: u32,
    stream: String,
    path: PathBuf,
}

fn parse(path: PathBuf) -> Option<Log> {
    let name = path.file_name()?.to_str()?;
    let (stem, stream) = name.rsplit_once('.')?;
    let (node, pid) = stem.rsplit_once('-')?;
    let stream = match stream {
        "out" | "err" => stream.to_string(),
        _ => return None,
    };
    Some(Log {
        node: node.to_string(),
        pid: pid.parse().ok()?,
        stream,
        path,
    })
}

/// The logs `args` names, by node, pid and stream.
fn chosen(args: &LogsArgs) -> Vec<Log> {
    let mut logs: Vec<Log> = std::fs::read_dir(logs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| parse(e.path()))
        .filter(|l| args.node.as_ref().is_none_or(|n| *n == l.node))
        .filter(|l| args.pid.is_none_or(|p| p == l.pid))
        .collect();
    logs.sort();
    logs
}

/// `prism logs`.
pub(super) fn logs(args: &LogsArgs) -> Result<(), String> {
    let logs = chosen(args);
    if logs.is_empty() {
        return Err(format!(
            "no worker log{}{} in {}",
            args.node
                .as_ref()
                .map_or(String::new(), |n| format!(" of node {n}")),
            args.pid.map_or(String::new(), |p| format!(" of pid {p}")),
            logs_dir().display()
        ));
    }
    if args.pid.is_none() && !args.follow {
        println!(
            "{:<16} {:>8} {:<6} {:>10}",
            "NODE", "PID", "STREAM", "BYTES"
        );
        for log in &logs {
            let bytes = std::fs::metadata(&log.path).map_or(0, |m| m.len());
            println!(
                "{:<16} {:>8} {:<6} {:>10}",
                log.node, log.pid, log.stream, bytes
            );
        }
        println!("(show one with --pid PID; --follow shows what comes next)");
        return Ok(());
    }
    let mut read: Vec<u64> = vec![0; logs.len()];
    let mut out = std::io::stdout().lock();
    loop {
        for (log, at) in logs.iter().zip(read.iter_mut()) {
            let mut file = match std::fs::File::open(&log.path) {
                Ok(file) => file,
                Err(_) => continue, // removed meanwhile
            };
            let mut more = Vec::new();
            if file.seek(SeekFrom::Start(*at)).is_ok() && file.read_to_end(&mut more).is_ok() {
                *at += more.len() as u64;
                out.write_all(&more)
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("cannot write: {e}"))?;
            }
        }
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_read_back() {
        let name = crate::node::output::log_name("n-2/x", 41, true);
        assert_eq!(name, "n-2_x-41.err");
        let log = parse(PathBuf::from(format!("/logs/{name}"))).expect("a log");
        assert_eq!(
            (log.node.as_str(), log.pid, log.stream.as_str()),
            ("n-2_x", 41, "err")
        );
        assert!(parse(PathBuf::from("/logs/n-41.txt")).is_none());
        assert!(parse(PathBuf::from("/logs/n.out")).is_none());
    }
}
