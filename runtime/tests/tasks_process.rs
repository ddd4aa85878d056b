//! Process hygiene: worker processes never outlive their driver, whether it returns without
//! calling shutdown, panics, or is killed with SIGINT, SIGTERM or SIGKILL; on SIGINT and
//! SIGTERM it also removes its shared-memory session before it exits, and what a SIGKILLed
//! driver leaves (its session, its spill directory) the next driver removes. The test binary runs
//! itself as the driver under test (`PRISM_TEST_DRIVER=<mode>`) and watches that driver's
//! workers. Last, a worker's prints reach its driver's terminal, labelled.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Case, alive, children_of, ensure, eventually};
use libtest_mimic::Failed;
use prism::remote;

const MODE_ENV: &str = "PRISM_TEST_DRIVER";

#[remote]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Says something on each of its worker's streams.
#[remote]
fn shout(what: String) -> u32 {
    println!("said {what}");
    eprintln!("warned {what}");
    std::process::id()
}

/// The child driver: start a cluster, keep its workers busy, say "ready", then end as `mode`
/// (or, `print`: run one task that prints and stop).
fn child_driver(mode: &str) -> ! {
    if mode == "print" {
        prism::init_with(prism::Config::new().num_cpus(1.0)).expect("child cluster");
        let pid = shout::remote("hello".to_string())
            .get_blocking()
            .expect("shout");
        println!("the worker was {pid}");
        // The same line from four tasks: shown once, then counted.
        let chorus: Vec<_> = (0..4)
            .map(|_| shout::remote("in chorus".to_string()))
            .collect();
        prism::get_all_blocking(&chorus).expect("chorus");
        prism::shutdown();
        std::process::exit(0);
    }
    let mut config = prism::Config::new().num_cpus(2.0);
    if mode == "spill" {
        config = config.object_store_memory(16 << 20);
    }
    prism::init_with(config).expect("child cluster");
    // Objects beyond the store's 16 MiB: the oldest are spilled to disk.
    let _spilled: Vec<_> = (0..4)
        .filter(|_| mode == "spill")
        .map(|i| prism::put(vec![i as u8; 8 << 20]).expect("put"))
        .collect();
    // Make sure both workers are up, then keep them busy.
    prism::get_all_blocking(&[nap::remote(1), nap::remote(1)]).expect("warm-up");
    let _busy: Vec<_> = (0..4).map(|_| nap::remote(60_000)).collect();
    // An object in shared memory (8 MiB), which a signal must not leave behind.
    let _large = prism::put(vec![7u8; 8 << 20]).expect("put");
    println!("ready");
    std::thread::sleep(Duration::from_millis(100));
    match mode {
        "exit" => std::process::exit(0),
        "panic" => panic!("the driver panics on purpose"),
        _ => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
    }
}

/// Starts this binary as a driver in `mode` and reads the first line it says.
fn spawn_driver(mode: &str) -> Result<(std::process::Child, String), Failed> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .ok_or_else(|| "no stdout".to_string())
        .and_then(|out| {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = read {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.into());
    }
    Ok((child, line))
}

fn run_case(mode: &str, signal: Option<i32>) -> Result<(), Failed> {
    let (mut child, line) = spawn_driver(mode)?;
    let driver = child.id();
    let result = (|| {
        ensure(line.trim() == "ready", format!("driver said {line:?}"))?;
        let workers = children_of(driver);
        ensure(
            workers.len() >= 2,
            format!("driver {driver} has workers {workers:?}"),
        )?;
        if let Some(sig) = signal {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(driver as libc::pid_t, sig);
            }
        }
        let sessions = sessions_of(driver);
        ensure(
            !sessions.is_empty(),
            format!("driver {driver} has no session in /dev/shm"),
        )?;
        let status = child.wait()?;
        let gone = eventually(10, || workers.iter().all(|&w| !alive(w)));
        let left: Vec<u32> = workers.iter().copied().filter(|&w| alive(w)).collect();
        ensure(
            gone,
            format!("workers outlived the driver ({mode}): {left:?}"),
        )?;
        if let Some(sig @ (libc::SIGINT | libc::SIGTERM)) = signal {
            ensure(
                status.code() == Some(128 + sig),
                format!("the driver ended with {status} on signal {sig}"),
            )?;
            let left = sessions_of(driver);
            ensure(
                left.is_empty(),
                format!("signal {sig} left the session behind: {left:?}"),
            )?;
        }
        Ok(())
    })();
    // A case that kills the driver outright leaves its session to the next driver's sweep;
    // this test sweeps it itself.
    for dir in sessions_of(driver) {
        let _ = std::fs::remove_dir_all(dir);
    }
    // Clean up whatever the case left, whatever happened.
    let _ = child.kill();
    let _ = child.wait();
    for w in children_of(driver) {
        // SAFETY: kill(2) on a process we started (through the child driver).
        unsafe {
            libc::kill(w as libc::pid_t, libc::SIGKILL);
        }
    }
    reap_orphans();
    result
}

/// The shared-memory sessions of driver `pid` (`/dev/shm/prism-PID-...`).
fn sessions_of(pid: u32) -> Vec<std::path::PathBuf> {
    entries_of(std::path::Path::new("/dev/shm"), pid)
}

/// The spill directories of driver `pid` (`$TMPDIR/prism-PID-....spill`).
fn spill_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    entries_of(&std::env::temp_dir(), pid)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "spill"))
        .collect()
}

fn entries_of(dir: &std::path::Path, pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("prism-{pid}-");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// This process is a subreaper (see `main`): the dead workers of a dead driver become its
/// children; collect their exit statuses so no zombie is left behind.
fn reap_orphans() {
    let own_workers_parent = std::process::id();
    for pid in children_of(own_workers_parent) {
        if !alive(pid) {
            let mut status = 0;
            // SAFETY: waitpid(2) on a dead child of ours; WNOHANG never blocks.
            unsafe {
                libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
            }
        }
    }
}

fn driver_returns_without_shutdown() -> Result<(), Failed> {
    run_case("exit", None)
}

fn driver_panics() -> Result<(), Failed> {
    run_case("panic", None)
}

fn driver_gets_sigterm() -> Result<(), Failed> {
    run_case("wait", Some(libc::SIGTERM))
}

fn driver_gets_sigint() -> Result<(), Failed> {
    run_case("wait", Some(libc::SIGINT))
}

fn driver_gets_sigkill() -> Result<(), Failed> {
    run_case("wait", Some(libc::SIGKILL))
}

/// A SIGKILLed driver leaves its session and its spill directory; the next driver to start
/// removes both.
fn a_killed_drivers_leftovers_are_swept_by_the_next() -> Result<(), Failed> {
    let exe = std::env::current_exe()?;
    let (mut child, line) = spawn_driver("spill")?;
    let driver = child.id();
    let workers = children_of(driver);
    let _ = child.kill();
    let _ = child.wait();
    let gone = eventually(10, || workers.iter().all(|&w| !alive(w)));
    reap_orphans();
    let left = (sessions_of(driver), spill_dirs_of(driver));
    let result = (|| {
        ensure(line.trim() == "ready", format!("driver said {line:?}"))?;
        ensure(gone, "the killed driver's workers exited")?;
        ensure(
            !left.0.is_empty() && !left.1.is_empty(),
            format!("a SIGKILLed driver leaves its session and spill directory: {left:?}"),
        )?;
        // The next driver starts, and exits at once (leaving its own session to the sweep
        // below).
        let mut next = Command::new(&exe)
            .env(MODE_ENV, "exit")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let status = next.wait()?;
        for path in sessions_of(next.id()) {
            let _ = std::fs::remove_dir_all(path);
        }
        ensure(
            status.success(),
            format!("the next driver ended with {status}"),
        )?;
        reap_orphans();
        let after = (sessions_of(driver), spill_dirs_of(driver));
        ensure(
            after.0.is_empty() && after.1.is_empty(),
            format!("the next driver left the dead one's files: {after:?}"),
        )
    })();
    for path in sessions_of(driver).into_iter().chain(spill_dirs_of(driver)) {
        let _ = std::fs::remove_dir_all(path);
    }
    result
}

/// A worker's prints reach the driver's terminal labelled with the task and the worker's pid
/// (all of them, though the driver stops right after), a line repeated shown once and then
/// counted, and as they are with `PRISM_LOG_TO_DRIVER=0` (every repeat with
/// `PRISM_DEDUP_LOGS=0`); `prism logs` shows what each worker wrote.
fn workers_output_reaches_the_driver_labelled() -> Result<(), Failed> {
    let session = common::temp_path("logs-session");
    let result = output_and_logs(&session);
    let _ = std::fs::remove_dir_all(&session);
    result
}

fn output_and_logs(session: &str) -> Result<(), Failed> {
    let run = |to_driver: &str| {
        Command::new(std::env::current_exe()?)
            .env(MODE_ENV, "print")
            .env("PRISM_LOG_TO_DRIVER", to_driver)
            .env("PRISM_DEDUP_LOGS", to_driver)
            .env("PRISM_SESSION_DIR", session)
            .output()
    };
    let out = run("1")?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure(out.status.success(), format!("the driver ran: {stderr}"))?;
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("the worker was "))
        .unwrap_or("?");
    let label = format!("(tasks_process::shout pid={pid})");
    ensure(
        stdout.lines().any(|l| l == format!("{label} said hello")),
        format!("the task's output, labelled {label}, at the driver: {stdout:?}"),
    )?;
    ensure(
        stderr.lines().any(|l| l == format!("{label} warned hello")),
        format!("the task's errors, labelled {label}, at the driver: {stderr:?}"),
    )?;
    let chorus = |text: &str, line: &str| text.lines().filter(|l| l.ends_with(line)).count();
    let counted = |text: &str, line: &str| {
        text.lines()
            .filter(|l| l.contains(line) && l.ends_with("[repeated 3x across cluster]"))
            .count()
    };
    ensure(
        chorus(&stdout, ") said in chorus") == 1 && counted(&stdout, "said in chorus") == 1,
        format!("a repeated line once, then its count: {stdout:?}"),
    )?;
    ensure(
        chorus(&stderr, ") warned in chorus") == 1 && counted(&stderr, "warned in chorus") == 1,
        format!("a repeated error once, then its count: {stderr:?}"),
    )?;
    // The worker's log keeps every line, and `prism logs` lists and shows it.
    let logs = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_prism"))
            .arg("logs")
            .args(args)
            .env("PRISM_SESSION_DIR", session)
            .output()
    };
    let listed = logs(&[])?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    ensure(
        listed
            .lines()
            .any(|l| l.starts_with("local ") && l.contains(&format!(" {pid} out "))),
        format!("prism logs lists the worker's output: {listed:?}"),
    )?;
    let shown = logs(&["--pid", pid])?;
    let shown = String::from_utf8_lossy(&shown.stdout);
    ensure(
        shown.lines().any(|l| l == format!("{label} said hello"))
            && shown.lines().any(|l| l == format!("{label} warned hello"))
            && shown
                .lines()
                .filter(|l| l.ends_with("said in chorus"))
                .count()
                == 4,
        format!("prism logs --pid {pid} shows all it wrote: {shown:?}"),
    )?;
    // Only this user reads them.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
    };
    let dir = std::path::Path::new(session).join("logs");
    let file = dir.join(format!("local-{pid}.out"));
    ensure(
        mode(dir.clone()) == 0o700 && mode(file.clone()) == 0o600,
        format!("logs 0700, each log 0600: {:o} {:o}", mode(dir), mode(file)),
    )?;
    let none = logs(&["--pid", "1"])?;
    let said = String::from_utf8_lossy(&none.stderr);
    ensure(
        !none.status.success() && said.contains("no worker log of pid 1"),
        said.to_string(),
    )?;
    let out = run("0")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure(
        stdout.lines().any(|l| l == "said hello")
            && stdout.lines().filter(|l| *l == "said in chorus").count() == 4,
        format!("unlabelled and every line when turned off: {stdout:?}"),
    )
}

fn main() {
    if let Ok(mode) = std::env::var(MODE_ENV) {
        child_driver(&mode);
    }
    // Orphaned workers of the drivers under test are re-parented here, not to init.
    // SAFETY: prctl(2) with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
    let cases: &[Case] = &[
        (
            "driver_returns_without_shutdown",
            driver_returns_without_shutdown,
        ),
        ("driver_panics", driver_panics),
        ("driver_gets_sigterm", driver_gets_sigterm),
        ("driver_gets_sigint", driver_gets_sigint),
        ("driver_gets_sigkill", driver_gets_sigkill),
        (
            "a_killed_drivers_leftovers_are_swept_by_the_next",
            a_killed_drivers_leftovers_are_swept_by_the_next,
        ),
        (
            "workers_output_reaches_the_driver_labelled",
            workers_output_reaches_the_driver_labelled,
        ),
    ];
    // One at a time: every driver these tests start sweeps the leftovers of dead drivers, so a
    // driver started by one test would sweep what another test's killed driver must be seen
    // to leave behind.
    common::run_with_threads(prism::Config::new().num_cpus(1.0), cases, Some(1))
}
