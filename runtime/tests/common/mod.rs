//! A harness for integration tests with real worker processes: the test binary is also the
//! workers' executable, so `main` starts Prism first (which turns worker processes into
//! workers), then runs the tests with libtest-mimic against one local cluster.

#![allow(dead_code)]

pub mod cluster;

use libtest_mimic::{Arguments, Failed, Trial};

/// A test: its name and body.
pub type Case = (&'static str, fn() -> Result<(), Failed>);

/// Starts the cluster with `config`, runs `cases`, shuts down, exits with the result.
pub fn run(config: prism::Config, cases: &[Case]) -> ! {
    run_with_threads(config, cases, None)
}

/// Like [`run`], with at most `threads` tests at a time.
pub fn run_with_threads(config: prism::Config, cases: &[Case], threads: Option<usize>) -> ! {
    prism::init_with(config).expect("start the local cluster");
    let mut args = Arguments::from_args();
    if threads.is_some() {
        args.test_threads = threads;
    }
    let trials = cases
        .iter()
        .map(|&(name, body)| Trial::test(name, body))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    prism::shutdown();
    conclusion.exit()
}

/// Fails the test with a message unless `cond`.
pub fn ensure(cond: bool, message: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(message.into().into())
    }
}

/// For a task that dies on its first run: whether this is that run (it leaves a mark in
/// `dir` for the runs after it).
pub fn first_run(dir: &str) -> bool {
    std::fs::create_dir(format!("{dir}/first-run")).is_ok()
}

/// Waits until the file at `path` exists, at most 20 s (a task waiting for another's sign).
pub fn wait_for_file(path: &str) {
    let begun = std::time::Instant::now();
    while std::fs::metadata(path).is_err() && begun.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A fresh folder under the system's temp folder (see [`temp_path`]), removed with
/// everything in it when dropped, however the test ends.
pub struct TempDir(pub String);

impl TempDir {
    /// Makes the folder.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let path = temp_path(tag);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh path under the system's temp folder for marker files.
pub fn temp_path(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir()
        .join(format!("prism-test-{tag}-{}-{nanos}", std::process::id()))
        .display()
        .to_string()
}

/// Polls `cond` every 10 ms until it holds or `secs` seconds pass.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cond()
}

/// Pids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The fields after the command name (which may hold spaces) start after ')'.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                found.push(pid);
            }
        }
    }
    found
}

pub fn alive(pid: u32) -> bool {
    // A zombie is dead for our purpose: it holds no resources but its exit status.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        })
        .unwrap_or(false)
}

/// Whether another, unprivileged user (uid 65534) can read `path`: `None` when this test cannot
/// become that user (it does not run as root).
pub fn readable_by_other_user(path: &std::path::Path) -> Option<bool> {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let status = std::process::Command::new("head")
        .args(["-c", "1"])
        .arg(path)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    Some(status.success())
}

/// The permission bits of `path` (0 if it cannot be read), not following a symlink.
pub fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

/// The number on line `field` (`"RssAnon:"`, `"Threads:"`) of this process's
/// `/proc/self/status` (0 if unreadable).
pub fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The anonymous (private) resident memory of this process, in bytes: what a copy would grow.
pub fn rss_anon() -> u64 {
    proc_status("RssAnon:") * 1024
}
