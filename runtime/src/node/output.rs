//! Workers' standard output and error, shown at the driver as Ray shows them: each line after
//! a label of what printed it, `(module::function pid=1234 node=n2)`. Whoever starts a worker
//! (the driver's embedded node, a cluster's node daemon) gives it pipes for both streams and
//! reads them, and tells it to label its lines ([`ENV_LABEL_OUTPUT`]: the worker reads its own
//! output through a pipe of its own and writes each line after the name of the function it
//! runs, see `worker::output`); a daemon sends what it reads to the job's driver over the
//! job's connection, one stream per pipe, so that a worker's lines stay in order.
//! `PRISM_LOG_TO_DRIVER=0` turns it off: workers then write where their starter writes, as
//! before, unlabelled. The driver shows a line printed by many workers once, then counts the
//! repeats (`[repeated 7x across cluster]`, see [`crate::proto::logs`]); `PRISM_DEDUP_LOGS=0`
//! shows every line. Whoever reads a worker's pipes also keeps what it wrote in the session
//! directory ([`logs_dir`]), which `prism logs` shows.

use std::io::Write;
use std::process::{Command, Stdio};

use prism_transport::{FromLogs, ToLogs};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Set to `0`: workers' output is not brought to the driver.
pub(crate) const ENV_LOG_TO_DRIVER: &str = "PRISM_LOG_TO_DRIVER";

/// Set to `0`: workers' repeated lines are not deduplicated at the driver (see
/// [`crate::proto::logs`]).
pub(crate) const ENV_DEDUP_LOGS: &str = "PRISM_DEDUP_LOGS";

/// Set (to `1`) for a worker whose output its starter reads: it labels each line.
pub(crate) const ENV_LABEL_OUTPUT: &str = "PRISM_LABEL_OUTPUT";

/// The most text one batch carries (a longer line is cut in pieces).
const BATCH: usize = 16 << 10;

/// Whether workers' output goes to the driver (see [`ENV_LOG_TO_DRIVER`]).
pub(crate) fn to_driver() -> bool {
    crate::config::env_switch(ENV_LOG_TO_DRIVER)
}

/// Whether workers' repeated lines are deduplicated (see [`ENV_DEDUP_LOGS`]).
pub(crate) fn dedup() -> bool {
    crate::config::env_switch(ENV_DEDUP_LOGS)
}

/// Has the worker `cmd` starts write its output and errors, labelled, to pipes its starter
/// reads, when output goes to the driver.
pub(crate) fn capture(cmd: &mut Command) {
    if to_driver() {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env(ENV_LABEL_OUTPUT, "1");
    }
}

/// One of a worker's pipes, read asynchronously.
pub(crate) type Pipe = Box<dyn AsyncRead + Unpin + Send>;

/// A started worker's piped output and errors, each with whether it is the errors (none when
/// they were not piped, see [`capture`]); call it inside the async runtime that reads them.
pub(crate) fn pipes(child: &mut std::process::Child) -> Vec<(bool, Pipe)> {
    let mut pipes: Vec<(bool, Pipe)> = Vec::new();
    if let Some(Ok(out)) = child
        .stdout
        .take()
        .map(tokio::process::ChildStdout::from_std)
    {
        pipes.push((false, Box::new(out)));
    }
    if let Some(Ok(err)) = child
        .stderr
        .take()
        .map(tokio::process::ChildStderr::from_std)
    {
        pipes.push((true, Box::new(err)));
    }
    pipes
}

/// The next whole lines `reader` holds, at most [`BATCH`] bytes of them (what a worker wrote
/// at once comes in one batch); `None` once the pipe ended. A last line without its newline
/// comes when the pipe ends.
pub(crate) async fn next_batch<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Option<String> {
    let mut batch = Vec::new();
    loop {
        let room = (BATCH - batch.len().min(BATCH - 1)) as u64;
        match (&mut *reader)
            .take(room)
            .read_until(b'\n', &mut batch)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if batch.len() >= BATCH || reader.buffer().is_empty() {
            break;
        }
    }
    (!batch.is_empty()).then(|| String::from_utf8_lossy(&batch).into_owned())
}

/// How many output pipes are read, so that a stopping driver can wait for its workers' last
/// lines.
#[derive(Debug, Default)]
pub(crate) struct Open(std::sync::Arc<std::sync::atomic::AtomicUsize>);

/// One pipe being read: counted until dropped.
pub(crate) struct Reading(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Open {
    /// Counts one more pipe while the [`Reading`] lives.
    pub(crate) fn count(&self) -> Reading {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reading(self.0.clone())
    }

    /// Whether any pipe is still read.
    pub(crate) fn any(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How many log files a host keeps, two per worker (the oldest go first).
const KEPT_LOGS: usize = 1000;

/// Where this host's workers' logs are kept: `logs/` in the session directory, a file per
/// worker and stream (`NODE-PID.out`, `NODE-PID.err`), each what the worker wrote there,
/// labelled.
pub(crate) fn logs_dir() -> std::path::PathBuf {
    crate::session::session_dir().join("logs")
}

/// What a log's file name tells: its node (as the name writes it), the worker's pid, and
/// its stream (`out` or `err`); `None` for a name that is not a worker's log.
pub(crate) fn parse_log_name(name: &str) -> Option<(&str, u32, &str)> {
    let (stem, stream) = name.rsplit_once('.')?;
    let (node, pid) = stem.rsplit_once('-')?;
    match stream {
        "out" | "err" => Some((node, pid.parse().ok()?, stream)),
        _ => None,
    }
}

/// The most one read of a log returns to another host.
const LOG_READ_MAX: u32 = 1 << 20;

/// Answers a request for the workers' logs kept here (see [`ToLogs`]): only plain names of
/// the logs directory are read, never through a symbolic link.
pub(crate) fn answer_logs(request: ToLogs) -> FromLogs {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let dir = logs_dir();
    match request {
        ToLogs::List => {
            let entries = std::fs::read_dir(&dir).into_iter().flatten().flatten();
            let mut logs: Vec<(String, u64)> = entries
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    parse_log_name(&name)?;
                    let meta = e.metadata().ok().filter(|m| m.is_file())?;
                    Some((name, meta.len()))
                })
                .collect();
            logs.sort();
            FromLogs::List(logs)
        }
        ToLogs::Read { name, offset, max } => {
            if name.contains('/') || parse_log_name(&name).is_none() {
                return FromLogs::Error(format!("{name:?} is not the name of a worker's log"));
            }
            let path = dir.join(&name);
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            let mut file = match opened {
                Ok(file) => file,
                Err(e) => return FromLogs::Error(format!("cannot open the log {name}: {e}")),
            };
            let mut bytes = Vec::new();
            let read = file.seek(SeekFrom::Start(offset)).and_then(|_| {
                let max = u64::from(max.min(LOG_READ_MAX));
                (&mut file).take(max).read_to_end(&mut bytes)
            });
            match read {
                Ok(_) => FromLogs::Bytes(bytes),
                Err(e) => FromLogs::Error(format!("cannot read the log {name}: {e}")),
            }
        }
    }
}

/// The file name of worker `pid`'s log on node `node` (`stderr`: its errors).
pub(crate) fn log_name(node: &str, pid: u32, stderr: bool) -> String {
    let node: String = node
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                true => c,
                false => '_',
            },
        )
        .collect();
    let stream = if stderr { "err" } else { "out" };
    format!("{node}-{pid}.{stream}")
}

/// Opens new logs for worker `pid` on `node`, its output's and its errors' (0600 in a 0700
/// directory), first removing the oldest logs beyond [`KEPT_LOGS`]; `None` for a log (said in
/// the log) that cannot be opened.
pub(crate) fn open_logs(node: &str, pid: u32) -> [Option<std::fs::File>; 2] {
    let dir = logs_dir();
    let session = crate::session::open_session().map_err(std::io::Error::other);
    if let Err(e) = session.and_then(|_| crate::files::private_dir(&dir)) {
        tracing::warn!(
            pid,
            "cannot keep the worker's logs in {}: {e}",
            dir.display()
        );
        return [None, None];
    }
    forget_old_logs(&dir);
    [false, true].map(|stderr| {
        let path = dir.join(log_name(node, pid, stderr));
        let _ = std::fs::remove_file(&path); // a pid used again
        let opened = crate::files::private_options()
            .append(true)
            .create_new(true)
            .open(&path);
        match opened {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(pid, "cannot keep the worker's log {}: {e}", path.display());
                None
            }
        }
    })
}

fn forget_old_logs(dir: &std::path::Path) {
    let mut logs: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    // Room for the two about to be opened.
    if logs.len() + 2 <= KEPT_LOGS {
        return;
    }
    logs.sort();
    for (_, path) in &logs[..logs.len() + 2 - KEPT_LOGS] {
        let _ = std::fs::remove_file(path);
    }
}

/// Appends `text` to a worker's log, if it has one (a full disk loses lines, not the job).
pub(crate) fn keep(log: &mut Option<std::fs::File>, text: &str) {
    if let Some(file) = log
        && file.write_all(text.as_bytes()).is_err()
    {
        *log = None;
    }
}

/// Writes `text` (a worker's lines) to this process's standard error (`stderr`) or output.
pub(crate) fn print(stderr: bool, text: &str) {
    // A closed terminal loses the lines; the job goes on.
    let _ = match stderr {
        true => std::io::stderr().lock().write_all(text.as_bytes()),
        false => std::io::stdout().lock().write_all(text.as_bytes()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_hold_whole_lines_and_long_lines_are_cut() {
        let long = "x".repeat(BATCH + 10);
        let text = format!("one\ntwo\n{long}\nlast");
        let mut reader = BufReader::new(text.as_bytes());
        let mut got = Vec::new();
        while let Some(batch) = next_batch(&mut reader).await {
            got.push(batch);
        }
        assert_eq!(got.concat(), text, "nothing lost or added");
        assert!(got.iter().all(|b| b.len() <= BATCH));
        assert!(got[0].starts_with("one\ntwo\nxxx") && got[0].len() == BATCH);
        assert_eq!(got.len(), 2);
        assert!(got[1].ends_with("x\nlast"));
    }
}
