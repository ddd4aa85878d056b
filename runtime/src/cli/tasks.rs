//! What the running drivers of this host tell of their tasks (`prism list tasks`, `prism
//! summary tasks`, `prism timeline`): each driver answers on its socket in the session
//! directory (see [`crate::api::state_server`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::api::state_server::drivers_dir;

/// How long a driver may take to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Which drivers to ask.
#[derive(Debug, Clone, Args)]
pub(super) struct DriverArgs {
    /// Only the driver with this process id (default: every driver running on this host in
    /// this session directory).
    #[arg(long)]
    pub(super) pid: Option<u32>,
}

/// Asks the drivers `args` names for `request`: each one's pid and answer. A socket no
/// process listens on any more (a driver that was killed) is removed.
pub(super) fn ask_drivers(args: &DriverArgs, request: &str) -> Result<Vec<(u32, Value)>, String> {
    let dir = drivers_dir();
    let mut sockets: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_str()?
                .strip_suffix(".sock")?
                .parse()
                .ok()?;
            Some((name, e.path()))
        })
        .filter(|(pid, _)| args.pid.is_none_or(|p| p == *pid))
        .collect();
    sockets.sort();
    let mut answers = Vec::new();
    for (pid, path) in sockets {
        match ask(&path, request) {
            Ok(answer) => answers.push((pid, answer)),
            Err(Asked::Gone) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(Asked::Failed(why)) => return Err(format!("driver {pid}: {why}")),
        }
    }
    if answers.is_empty() {
        return Err(match args.pid {
            Some(pid) => format!("no running driver {pid} in {}", dir.display()),
            None => format!(
                "no running driver in {} (a Prism program on this host, with the same PRISM_SESSION_DIR)",
                dir.display()
            ),
        });
    }
    Ok(answers)
}

/// Why a driver gave no answer.
enum Asked {
    /// Nothing listens there.
    Gone,
    /// It failed, and why.
    Failed(String),
}

fn ask(path: &std::path::Path, request: &str) -> Result<Value, Asked> {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Asked::Gone),
        Err(e) => return Err(Asked::Failed(format!("cannot connect: {e}"))),
    };
    let failed = |e: std::io::Error| Asked::Failed(e.to_string());
    stream.set_read_timeout(Some(ANSWER_WAIT)).map_err(failed)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(failed)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(failed)?;
    let reply: Value = serde_json::from_str(&line)
        .map_err(|e| Asked::Failed(format!("an answer that is not JSON ({e})")))?;
    match (reply.get("ok"), reply.get("error")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(error)) => Err(Asked::Failed(error.as_str().unwrap_or("?").to_string())),
        _ => Err(Asked::Failed(format!(
            "an answer without ok or error: {line}"
        ))),
    }
}

#[derive(Debug, Clone, Args)]
pub(super) struct TimelineArgs {
    /// Where to write the trace (default: prism-timeline-PID.json here).
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    drivers: DriverArgs,
}

/// `prism timeline`: each driver's timeline to a file (Chrome trace JSON).
pub(super) fn timeline(args: &TimelineArgs) -> Result<(), String> {
    let answers = ask_drivers(&args.drivers, "timeline")?;
    if answers.len() > 1 && args.output.is_some() {
        let pids: Vec<String> = answers.iter().map(|(p, _)| p.to_string()).collect();
        return Err(format!(
            "{} drivers run here ({}): name one with --pid",
            answers.len(),
            pids.join(", ")
        ));
    }
    for (pid, trace) in answers {
        let path = args
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("prism-timeline-{pid}.json")));
        let events = trace["traceEvents"].as_array().map_or(0, Vec::len);
        std::fs::write(&path, trace.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!(
            "Wrote the timeline of driver {pid} ({events} trace events) to {}: open it in https://ui.perfetto.dev or chrome://tracing.",
            path.display()
        );
    }
    Ok(())
}
