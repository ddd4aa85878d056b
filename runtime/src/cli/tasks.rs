//! What the running drivers of this host tell of their tasks (`prism list tasks`, `prism
//! summary tasks`, `prism timeline`; on a cluster these ask the head instead): each driver answers on its socket in the session
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
    /// Where to write the trace (default: prism-timeline-PID.json, or -JOB.json, here).
    #[arg(long)]
    output: Option<PathBuf>,
    /// On a cluster: the job whose timeline to draw (needed when the head has tasks of
    /// several).
    #[arg(long)]
    job: Option<String>,
    #[command(flatten)]
    client: super::ClientArgs,
    #[command(flatten)]
    drivers: DriverArgs,
}

/// How many of a job's newest tasks a timeline from the head draws at most.
const TIMELINE_TASKS: u32 = 50_000;

/// `prism timeline`: a job's timeline from the head's task records (on a cluster), else each
/// driver's of this host, to a file (Chrome trace JSON).
pub(super) async fn timeline(args: &TimelineArgs) -> Result<(), String> {
    let traces = if super::list::use_head(&args.client, &args.drivers) {
        vec![head_timeline(args).await?]
    } else {
        let answers = ask_drivers(&args.drivers, "timeline")?;
        let traces = answers.into_iter().map(|(pid, trace)| {
            let path = PathBuf::from(format!("prism-timeline-{pid}.json"));
            (format!("driver {pid}"), path, trace)
        });
        traces.collect()
    };
    if traces.len() > 1 && args.output.is_some() {
        let names: Vec<&str> = traces.iter().map(|(n, _, _)| n.as_str()).collect();
        return Err(format!(
            "{} drivers run here ({}): name one with --pid",
            traces.len(),
            names.join(", ")
        ));
    }
    for (name, path, trace) in traces {
        let path = args.output.clone().unwrap_or(path);
        let events = trace["traceEvents"].as_array().map_or(0, Vec::len);
        std::fs::write(&path, trace.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!(
            "Wrote the timeline of {name} ({events} trace events) to {}: open it in https://ui.perfetto.dev or chrome://tracing.",
            path.display()
        );
    }
    Ok(())
}

/// The timeline of one job from the head's task records: its name, default file and trace.
async fn head_timeline(args: &TimelineArgs) -> Result<(String, PathBuf, Value), String> {
    let query = prism_transport::TaskQuery {
        job: args.job.clone(),
        limit: TIMELINE_TASKS,
        ..Default::default()
    };
    let request = prism_transport::ToControl::Tasks(query);
    let tasks = match super::list::head_answer(&args.client, request).await? {
        prism_transport::FromControl::Tasks { tasks, .. } => tasks,
        other => return Err(format!("unexpected answer to a list of tasks: {other:?}")),
    };
    let mut jobs: Vec<&str> = tasks.iter().map(|t| t.job.as_str()).collect();
    jobs.dedup();
    let job = match jobs.as_slice() {
        [] => return Err("the head has no task records (of that job)".into()),
        [job] => job.to_string(),
        _ => {
            return Err(format!(
                "the head has tasks of {} jobs ({}): name one with --job",
                jobs.len(),
                jobs.join(", ")
            ));
        }
    };
    let infos: Vec<prism_transport::TaskInfo> = tasks.into_iter().map(|t| t.task).collect();
    let trace = crate::api::state::trace(&infos);
    let path = PathBuf::from(format!("prism-timeline-{job}.json"));
    Ok((format!("job {job}"), path, trace))
}
