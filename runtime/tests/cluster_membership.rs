//! Membership at the default timing (no test overrides of the heartbeat or the node
//! timeout): a head on 127.0.0.1 and nodes `a` (127.0.0.2) and `b` (127.0.0.3), each with a
//! resource of its name, and a driver joined to them. The driver's view of the cluster
//! (`prism::cluster_resources`) must lose a node within 3 s of its death: SIGKILLed, frozen
//! (SIGSTOP), and killed again after the head itself was killed and started again. A node
//! started again under its name is accepted at once and used by the running job. Nodes `a`
//! and `b` frozen together are lost to the job and host it again once they thaw: what `b`
//! makes then, `a` reads (over the connection it kept). Then nodes
//! `c` and `d` (127.0.0.4-5) run a job's tasks when `c` is stopped (`prism stop` on its host)
//! and `d` drained (`prism drain d` from the head's host): each leaves within 2 s, and every
//! task ends with its value although none may be retried. Last a node's store (64 MiB, the
//! driver's setting) gets three times its size in objects: it spills to its disk, stays near
//! its capacity, and restores each object a task reads. Then the head's directory: a child job
//! that ends, one whose driver is SIGKILLed (counted failed) and this one, each with a named
//! actor and a placement group, are all listed by `prism list` as they are, and still after the
//! head is killed and started again; this job's later changes reach the restarted head. Every
//! daemon is stopped when the run ends.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Host, all_stopped, children, eventually, running, signal};
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};

/// How soon a death must be known (the bound; the default timeout is 2 s).
const DETECTED_WITHIN: Duration = Duration::from_secs(3);

/// Whether the driver counts a live node with `resource`.
fn has(resource: &str) -> bool {
    prism::cluster_resources().is_ok_and(|all| all.get(resource).is_some_and(|&n| n > 0.0))
}

/// How long until `check` holds (looked at every 10 ms), if within `limit`.
fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A daemon's pids and its children's (the job's workers).
fn with_children(daemons: Vec<i32>) -> Vec<i32> {
    let kids: Vec<i32> = daemons.iter().flat_map(|&pid| children(pid)).collect();
    daemons.into_iter().chain(kids).collect()
}

struct Cluster {
    head: Host,
    addr: String,
    token: String,
    a: Host,
    b: Host,
    c: Host,
    d: Host,
}

impl Cluster {
    fn start_node(&self, name: &str) {
        let (host, ip, resource) = match name {
            "a" => (&self.a, "127.0.0.2", "a=1"),
            "b" => (&self.b, "127.0.0.3", "b=1"),
            "c" => (&self.c, "127.0.0.4", "pool=2"),
            _ => (&self.d, "127.0.0.5", "pool=2"),
        };
        let cpus = if resource == "pool=2" { "2" } else { "1" };
        let extra = ["--num-cpus", cpus, "--resources", resource, "--name", name];
        host.join(&self.addr, &self.token, ip, &extra);
    }

    /// SIGKILLs node `a` (its daemon and workers) and checks the driver lost it in time.
    fn kill_a(&self, when: &str) -> Result<Duration, Failed> {
        let pids = with_children(self.a.daemons());
        ensure(!pids.is_empty(), "a's daemon is recorded")?;
        signal(&pids, libc::SIGKILL)?;
        lost_within("a", &format!("SIGKILLed {when}"))
    }
}

/// Waits for the driver to lose the node with `resource`; fails after [`DETECTED_WITHIN`].
fn lost_within(resource: &str, how: &str) -> Result<Duration, Failed> {
    let took = time_until(Duration::from_secs(15), || !has(resource));
    eprintln!("node {resource} {how}: the driver knew in {took:?}");
    match took {
        Some(took) if took < DETECTED_WITHIN => Ok(took),
        Some(took) => Err(format!("node {resource} {how}: known only after {took:?}").into()),
        None => Err(format!("node {resource} {how}: still counted after 15 s").into()),
    }
}

fn deaths_are_known_within_three_seconds(cluster: &Cluster) -> Result<(), Failed> {
    ensure(
        eventually(20, || has("a") && has("b")),
        format!(
            "the driver counts both nodes: {:?}",
            prism::cluster_resources()
        ),
    )?;
    // A task on each node: the job runs there.
    for node in ["a", "b"] {
        let at = where_am_i::options().resources(node, 1.0).remote();
        ensure(at.get_blocking()? == node, format!("a task ran on {node}"))?;
    }

    cluster.kill_a("")?;

    // Started again under its name: accepted at once (`prism start` succeeds while the old
    // record has not timed out yet, or just has), and the job uses it.
    let restarted = Instant::now();
    cluster.start_node("a");
    let back = time_until(Duration::from_secs(15), || has("a"));
    eprintln!(
        "node a started again: `prism start` took {:?}, the driver used it after {back:?}",
        restarted.elapsed()
    );
    ensure(back.is_some(), "the driver uses the restarted node")?;
    let at = where_am_i::options().resources("a", 1.0).remote();
    ensure(at.get_blocking()? == "a", "a task ran on the restarted a")?;

    // Frozen: no heartbeat, no answer, connections open.
    let frozen = with_children(cluster.b.daemons());
    signal(&frozen, libc::SIGSTOP)?;
    let stopped = eventually(5, || all_stopped(&frozen));
    let detected = lost_within("b", "frozen (SIGSTOP)");
    signal(&frozen, libc::SIGCONT)?;
    ensure(stopped, "every thread of b stopped")?;
    detected?;

    // The head dies and comes back on its address; the driver subscribes to it again and a
    // later death is known as fast.
    ensure(
        eventually(15, || has("a") && has("b")),
        "the driver counts b again once it thawed",
    )?;
    nodes_lost_together_serve_what_they_make_after(cluster)?;
    let extra = ["--name", "head", "--num-cpus", "1"];
    cluster.head.restart_head(&cluster.addr, &extra)?;
    // Long enough for the driver to hear the old head's silence and subscribe again, and for
    // the nodes to reach the new head; meanwhile the driver keeps both nodes (the restarted
    // head waits for their heartbeats rather than counting them dead).
    let kept = time_until(Duration::from_secs(5), || !has("a") || !has("b"));
    ensure(
        kept.is_none(),
        format!("the driver lost a node {kept:?} after the head's restart"),
    )?;
    cluster.kill_a("after the head's restart")?;
    Ok(())
}

/// Sleeps `ms`; says where it ran.
#[prism::remote]
fn stint(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    prism::node_name().unwrap_or_default()
}

/// `count` stints of `ms` on the `pool` nodes, none retried after a failure.
fn stints(count: usize, ms: u64) -> Vec<prism::ObjectRef<String>> {
    (0..count)
        .map(|_| {
            stint::options()
                .resources("pool", 1.0)
                .max_retries(0)
                .remote(ms)
        })
        .collect()
}

/// The `pool` CPUs the driver counts.
fn pool() -> f64 {
    prism::cluster_resources().map_or(0.0, |all| all.get("pool").copied().unwrap_or(0.0))
}

fn stopped_and_drained_nodes_hand_their_work_back(cluster: &Cluster) -> Result<(), Failed> {
    cluster.start_node("c");
    cluster.start_node("d");
    ensure(
        eventually(20, || pool() == 4.0),
        "the driver counts c and d",
    )?;

    // A node fetches the job's binary when it first starts a worker: both run a task first.
    let warm = prism::get_all_blocking(&stints(4, 300))?;
    ensure(
        warm.iter().any(|n| n == "c") && warm.iter().any(|n| n == "d"),
        format!("both nodes took work: {warm:?}"),
    )?;

    // `prism stop` on c's host while c runs two of a job's tasks (they end within its drain
    // grace) and more wait.
    let work = stints(8, 1_000);
    std::thread::sleep(Duration::from_millis(700));
    let stopping = Instant::now();
    let daemons = cluster.c.daemons();
    cluster.c.ok(&["stop"]);
    let stop_took = stopping.elapsed();
    let left = time_until(Duration::from_secs(10), || pool() == 2.0).map(|t| t + stop_took);
    eprintln!("node c stopped: `prism stop` took {stop_took:?}; the driver lost it after {left:?}");
    ensure(
        left.is_some_and(|t| t < Duration::from_secs(2)),
        format!("c left within 2 s of prism stop: {left:?}"),
    )?;
    ensure(
        daemons.iter().all(|&pid| !running(pid)),
        "c's daemon exited",
    )?;
    let ran = prism::get_all_blocking(&work)?;
    ensure(
        ran.iter().any(|n| n == "c") && ran.iter().any(|n| n == "d"),
        format!("the work ran on both nodes, none lost: {ran:?}"),
    )?;

    // `prism drain d` from the head's host, with c back, while d runs two tasks longer than
    // its grace (1 s after the drain begins, 700 ms into them): they are ended there and run
    // again on c.
    cluster.start_node("c");
    ensure(eventually(20, || pool() == 4.0), "c is back")?;
    let work = stints(4, 2_500);
    std::thread::sleep(Duration::from_millis(700));
    let daemons = cluster.d.daemons();
    let draining = Instant::now();
    let said = cluster.head.ok(&["drain", "d"]);
    let drain_took = draining.elapsed();
    eprintln!("prism drain d: {} ({drain_took:?})", said.trim());
    ensure(
        said.contains("drained and left") && drain_took < Duration::from_secs(2),
        format!("d left within 2 s of prism drain: {said} after {drain_took:?}"),
    )?;
    ensure(
        eventually(5, || daemons.iter().all(|&pid| !running(pid))),
        "d's daemon exited",
    )?;
    let ran = prism::get_all_blocking(&work)?;
    ensure(
        ran.iter().all(|n| n == "c"),
        format!("the work ended on c, none lost: {ran:?}"),
    )?;
    let refused = cluster.head.prism(&["drain", "head"]);
    ensure(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("head's own node"),
        "the head's own node is not drained",
    )?;
    Ok(())
}

/// `mib` MiB of bytes made from `seed`, and the seed (a small value to wait for: waiting for
/// the blob itself would pull it to the driver).
#[prism::remote(num_returns = 2)]
fn blob(mib: u64, seed: u64) -> (Vec<u8>, u64) {
    let len = (mib << 20) as usize;
    (
        (0..len).map(|i| (i as u64 * 31 + seed) as u8).collect(),
        seed,
    )
}

/// Where the blob is read, and its checksum.
#[prism::remote]
fn checksum(blob: Vec<u8>) -> (String, u64) {
    let sum = blob.iter().map(|&b| u64::from(b)).sum();
    (prism::node_name().unwrap_or_default(), sum)
}

fn expected_checksum(mib: u64, seed: u64) -> u64 {
    let len = mib << 20;
    (0..len).map(|i| u64::from((i * 31 + seed) as u8)).sum()
}

/// Bytes of the files in the directories of `dir` named `prism-PID-..` (ending in `suffix`).
fn bytes_of(dir: &std::path::Path, pid: i32, suffix: &str) -> u64 {
    let prefix = format!("prism-{pid}-");
    let dirs = std::fs::read_dir(dir).into_iter().flatten().flatten();
    dirs.filter(|d| {
        let name = d.file_name().to_string_lossy().into_owned();
        name.starts_with(&prefix) && name.ends_with(suffix)
    })
    .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
    .filter_map(|f| f.metadata().ok())
    .map(|m| m.len())
    .sum()
}

/// The most bytes a node's job store (in shared memory) and its spill directory (on disk)
/// held while watched (every 10 ms).
struct Watch {
    watching: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl Watch {
    /// Watches the stores of the daemon `pid`.
    fn start(pid: i32) -> Watch {
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let on = watching.clone();
        let thread = std::thread::spawn(move || {
            let (mut shm, mut disk) = (0u64, 0u64);
            while on.load(std::sync::atomic::Ordering::SeqCst) {
                shm = shm.max(bytes_of(std::path::Path::new("/dev/shm"), pid, ""));
                disk = disk.max(bytes_of(&std::env::temp_dir(), pid, ".spill"));
                std::thread::sleep(Duration::from_millis(10));
            }
            (shm, disk)
        });
        Watch { watching, thread }
    }

    /// The most bytes in shared memory and on disk.
    fn stop(self) -> (u64, u64) {
        self.watching
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the watcher")
    }
}

/// The driver's (and so every node's) object store, in MiB.
const STORE_MIB: u64 = 64;

fn a_full_node_spills_to_disk_and_restores_what_tasks_read(
    cluster: &Cluster,
) -> Result<(), Failed> {
    if pool() < 2.0 {
        cluster.start_node("c");
    }
    ensure(eventually(20, || pool() >= 2.0), "a pool node runs")?;
    let node = if cluster.c.daemons().is_empty() {
        &cluster.d
    } else {
        &cluster.c
    };
    let pid = node.daemons()[0];
    // Three times the store in 8 MiB objects, all held, then each read by a task there;
    // the node's job store (shared memory) and spill directory (disk) watched meanwhile.
    let (count, mib) = (3 * STORE_MIB / 8, 8);
    let making = Watch::start(pid);
    let (blobs, made): (Vec<_>, Vec<_>) = (0..count)
        .map(|seed| blob::options().resources("pool", 1.0).remote(mib, seed))
        .unzip();
    prism::get_all_blocking(&made)?;
    let (made_shm, made_disk) = making.stop();
    let reading = Watch::start(pid);
    let sums: Vec<_> = blobs
        .iter()
        .map(|b| checksum::options().resources("pool", 1.0).remote(b))
        .collect();
    let sums = prism::get_all_blocking(&sums)?;
    let (read_shm, read_disk) = reading.stop();
    eprintln!(
        "{count} x {mib} MiB on a node with a {STORE_MIB} MiB store: at most {} MiB in shared memory and {} MiB spilled while they were made, {} and {} MiB while they were read",
        made_shm >> 20,
        made_disk >> 20,
        read_shm >> 20,
        read_disk >> 20
    );
    for (seed, (_, sum)) in sums.iter().enumerate() {
        ensure(
            *sum == expected_checksum(mib, seed as u64),
            format!("blob {seed} read back whole"),
        )?;
    }
    // Over the store by at most what its two CPUs' tasks write before the driver hears.
    let bound = (STORE_MIB + 3 * mib) << 20;
    for (phase, shm) in [("made", made_shm), ("read", read_shm)] {
        ensure(
            shm <= bound,
            format!(
                "the node's store stayed near its capacity while they were {phase}: {shm} bytes"
            ),
        )?;
    }
    ensure(made_disk > 0, "the node spilled to its disk")?;
    Ok(())
}

/// A MiB of `seed`s: large enough to stay in its node's store and be pulled by a reader.
#[prism::remote]
fn mib(seed: u8) -> Vec<u8> {
    vec![seed; 1 << 20]
}

/// Where a value was read, its length and its first byte.
#[prism::remote]
fn read_mib(value: Vec<u8>) -> (String, usize, u8) {
    let first = value.first().copied().unwrap_or_default();
    (prism::node_name().unwrap_or_default(), value.len(), first)
}

/// A MiB made on `from` and read on `to`, with no retry or rebuild to hide a failed pull.
fn made_on_read_on(from: &str, to: &str, seed: u8) -> Result<(), Failed> {
    let value = mib::options()
        .resources(from, 1.0)
        .max_retries(0)
        .remote(seed);
    let read = read_mib::options().resources(to, 1.0).max_retries(0);
    let (at, len, first) = read.remote(&value).get_blocking()?;
    ensure(
        (at.as_str(), len, first) == (to, 1 << 20, seed),
        format!("a MiB made on {from} was read on {at} as {len} bytes of {first}"),
    )
}

/// Nodes `a` and `b` frozen together are both lost to the job (neither hears from the driver
/// that the other was lost) and host it again once they thaw, each with a new store: `a`'s
/// pulls from `b` over the connection it kept must find what `b` makes now (they found the
/// old store and "not here", and every rebuild placed on `b` was lost again).
fn nodes_lost_together_serve_what_they_make_after(cluster: &Cluster) -> Result<(), Failed> {
    made_on_read_on("b", "a", 1)?;
    let frozen = with_children([cluster.a.daemons(), cluster.b.daemons()].concat());
    signal(&frozen, libc::SIGSTOP)?;
    let lost = time_until(Duration::from_secs(15), || !has("a") && !has("b"));
    signal(&frozen, libc::SIGCONT)?;
    ensure(lost.is_some(), "the driver lost a and b frozen together")?;
    ensure(
        eventually(15, || has("a") && has("b")),
        "the driver counts a and b again once they thawed",
    )?;
    made_on_read_on("b", "a", 2)
}

/// The node this task runs on.
#[prism::remote]
fn where_am_i() -> String {
    prism::node_name().unwrap_or_default()
}

/// An actor that holds a number (a named one shows in the head's directory).
#[prism::actor]
struct Keeper {
    kept: u64,
}

#[prism::actor]
impl Keeper {
    fn new(kept: u64) -> Self {
        Keeper { kept }
    }

    fn kept(&self) -> u64 {
        self.kept
    }

    fn set(&mut self, kept: u64) {
        self.kept = kept;
    }
}

/// Makes actor `name` and a placement group, calls the actor: what a child job does.
fn keep(name: &str) -> Result<(prism::ActorHandle<Keeper>, prism::PlacementGroup), Failed> {
    let keeper = Keeper::options().name(name).remote(7);
    ensure(keeper.kept().get_blocking()? == 7, "the keeper answers")?;
    let group = prism::placement_group(
        vec![prism::Bundle::new().cpus(0.25)],
        prism::PlacementStrategy::Pack,
    )?;
    ensure(
        group.wait_blocking(Duration::from_secs(20))?,
        "the group is placed",
    )?;
    Ok((keeper, group))
}

/// Prints where it runs, on its worker's standard output.
#[prism::remote]
fn announce() -> String {
    let node = prism::node_name().unwrap_or_default();
    println!("hello from {node}");
    format!("{node} {}", std::process::id())
}

/// In a child this test started as a job of its own (`PRISM_TEST_DIRECTORY_JOB`): makes an
/// actor and a group, then ends (`ends`) or says `ready` and waits to be killed (`hangs`).
fn be_a_child_job() {
    let Ok(how) = std::env::var("PRISM_TEST_DIRECTORY_JOB") else {
        return;
    };
    prism::init().expect("the child job joins the cluster");
    let kept = keep(&format!("{how}-keeper"));
    if let Err(e) = &kept {
        eprintln!("child job: {e:?}");
        std::process::exit(1);
    }
    if how == "ends" {
        let said = announce::remote().get_blocking().expect("announce");
        println!("announced by {said}");
    }
    if how == "hangs" {
        println!("ready");
        std::thread::sleep(Duration::from_secs(600));
    }
    drop(kept);
    prism::shutdown();
    std::process::exit(0);
}

/// A child job of this test (see [`be_a_child_job`]).
fn child_job(cluster: &Cluster, how: &str) -> std::process::Command {
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test's path"));
    child
        .env("PRISM_TEST_DIRECTORY_JOB", how)
        .env("PRISM_ADDRESS", &cluster.addr)
        .env("PRISM_TOKEN", &cluster.token)
        .stdout(std::process::Stdio::piped());
    child
}

/// What `prism list WHAT --format json` and `extra` flags print.
fn listed(cluster: &Cluster, what: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["list", what, "--format", "json"];
    args.extend_from_slice(extra);
    let out = cluster.head.ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("prism {args:?}: {e}: {out}"))
}

/// The head's jobs.
fn jobs(cluster: &Cluster) -> Vec<serde_json::Value> {
    listed(cluster, "jobs", &[])
}

/// The job of driver `pid` in `jobs`.
fn job_of(jobs: &[serde_json::Value], pid: u32) -> Option<&serde_json::Value> {
    jobs.iter().find(|j| j["info"]["pid"] == pid)
}

/// Job `job`'s state, its actors' (name, state) and its groups' states, as JSON text.
fn summary(job: &serde_json::Value) -> (String, Vec<(String, String)>, Vec<String>) {
    let actors = job["actors"].as_array().into_iter().flatten();
    let actors = actors.map(|a| (a["name"].to_string(), a["state"].to_string()));
    let groups = job["groups"].as_array().into_iter().flatten();
    let groups = groups.map(|g| g["state"].to_string());
    (job["state"].to_string(), actors.collect(), groups.collect())
}

fn the_head_keeps_jobs_actors_and_groups_across_its_restart(
    cluster: &Cluster,
) -> Result<(), Failed> {
    use std::io::BufRead;
    // A job that ends, one whose driver is killed, and this one, each with a named actor and
    // a placement group.
    let ended = child_job(cluster, "ends").spawn()?;
    let ended_pid = ended.id();
    let out = ended.wait_with_output()?;
    ensure(out.status.success(), "the child job that ends ran")?;
    // Its task's print came to its terminal from the node, labelled.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let by = stdout.lines().find_map(|l| l.strip_prefix("announced by "));
    let (node, pid) = by.and_then(|b| b.split_once(' ')).unwrap_or(("?", "?"));
    let line = format!("(cluster_membership::announce pid={pid} node={node}) hello from {node}");
    ensure(
        stdout.lines().any(|l| l == line),
        format!("the child's terminal shows {line:?}: {stdout:?}"),
    )?;
    // The node keeps the worker's log; `prism logs` on its host shows it.
    let host = match node {
        "a" => &cluster.a,
        "b" => &cluster.b,
        "c" => &cluster.c,
        "d" => &cluster.d,
        _ => &cluster.head,
    };
    let shown = host.prism(&["logs", "--node", node, "--pid", pid]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    ensure(
        shown.lines().any(|l| l == line),
        format!("prism logs on {node}'s host shows {line:?}: {shown:?}"),
    )?;
    // And from another host, over the network (the node serves its logs to members).
    let elsewhere = if std::ptr::eq(host, &cluster.head) {
        &cluster.a
    } else {
        &cluster.head
    };
    let args = [
        "logs",
        "--node",
        node,
        "--pid",
        pid,
        "--address",
        &cluster.addr,
        "--token",
        &cluster.token,
    ];
    let out = elsewhere.prism(&args);
    let shown = String::from_utf8_lossy(&out.stdout);
    ensure(
        shown.lines().any(|l| l == line),
        format!(
            "prism logs from another host shows {line:?}: {shown:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )?;
    let mut hanging = child_job(cluster, "hangs").spawn()?;
    let mut said = String::new();
    let stdout = hanging.stdout.take().expect("piped");
    std::io::BufReader::new(stdout).read_line(&mut said)?;
    ensure(
        said.trim() == "ready",
        format!("the hanging job is ready: {said:?}"),
    )?;
    let (resident, _group) = keep("resident")?;
    let killed = Instant::now();
    hanging.kill()?;
    hanging.wait()?;

    let (hanging_pid, me) = (hanging.id(), std::process::id());
    let dead_ended = "{\"Dead\":\"its job ended\"}";
    let expected_ended = (
        "\"Finished\"".to_string(),
        vec![("\"ends-keeper\"".to_string(), dead_ended.to_string())],
        vec!["\"Removed\"".to_string()],
    );
    let mut seen = Vec::new();
    let failed_after = time_until(Duration::from_secs(15), || {
        seen = jobs(cluster);
        job_of(&seen, hanging_pid).is_some_and(|j| j["state"].get("Failed").is_some())
    });
    eprintln!("a killed driver's job counted failed {failed_after:?} after the kill");
    ensure(
        failed_after.is_some() && killed.elapsed() < Duration::from_secs(10),
        format!("the killed driver's job failed within 10 s: {seen:?}"),
    )?;
    let mine = job_of(&seen, me).map(summary);
    ensure(
        mine.as_ref().is_some_and(|(state, actors, groups)| {
            state == "\"Running\""
                && actors == &[("\"resident\"".into(), "\"Alive\"".into())]
                && groups == &["\"Created\""]
        }),
        format!("this job runs with its actor alive and its group made: {mine:?}"),
    )?;
    let ended_job = job_of(&seen, ended_pid).map(summary);
    ensure(
        ended_job.as_ref() == Some(&expected_ended),
        format!("the child job finished, its actor and group ended: {ended_job:?}"),
    )?;

    // A detached actor, its state changed, on node b (the head's node restarts with the
    // head, and its workers with it; node a is gone when the earlier cases ran).
    let detached = |name: &str| {
        Keeper::options()
            .name(name)
            .namespace("svc")
            .resources("b", 0.01)
            .lifetime(prism::Lifetime::Detached)
            .try_remote(7)
    };
    let lasting = detached("lasting")?;
    lasting.set(42).get_blocking()?;
    drop(lasting);

    // The head dies and comes back: it still knows every job, the ended ones too.
    let extra = ["--name", "head", "--num-cpus", "1"];
    cluster.head.restart_head(&cluster.addr, &extra)?;
    // The detached actor lives on, its state kept, and the restarted head's next detached
    // actor goes to the same host (the one job of detached actors).
    // (A request on the connection to the dead head goes unanswered; the next reconnects.)
    let mut found = Err("not asked".to_string());
    eventually(10, || {
        found = prism::get_actor_in::<Keeper>("lasting", "svc").map_err(|e| e.to_string());
        found.is_ok()
    });
    let lasting = found?;
    ensure(
        lasting.kept().get_blocking()? == 42,
        "the detached actor outlives the head's restart with its state",
    )?;
    let later = detached("later")?;
    ensure(
        later.kept().get_blocking()? == 7,
        "a detached actor is made after the head's restart",
    )?;
    let hosts: Vec<String> = (jobs(cluster).iter())
        .filter(|j| {
            j["job"]
                .as_str()
                .is_some_and(|n| n.starts_with("detached-"))
        })
        .map(|j| format!("{} {}", j["job"], j["state"]))
        .collect();
    ensure(
        hosts.len() == 1 && hosts[0].contains("Running"),
        format!("one host of detached actors, running: {hosts:?}"),
    )?;
    prism::kill(&lasting)?;
    prism::kill(&later)?;
    let after = jobs(cluster);
    let ended_job = job_of(&after, ended_pid).map(summary);
    ensure(
        ended_job.as_ref() == Some(&expected_ended),
        format!("the restarted head knows the ended job: {ended_job:?}"),
    )?;
    let hung = job_of(&after, hanging_pid).map(summary);
    ensure(
        hung.as_ref().is_some_and(|(state, actors, _)| {
            state.contains("Failed") && actors.iter().all(|(_, a)| a.contains("Dead"))
        }),
        format!("the restarted head knows the failed job: {hung:?}"),
    )?;
    ensure(
        job_of(&after, me).is_some(),
        "the restarted head knows this job",
    )?;
    // This job's task events reach the restarted head again (its board started empty).
    let name = job_of(&after, me)
        .map(|j| j["job"].to_string())
        .unwrap_or_default();
    let mut counted = String::new();
    let reported = eventually(10, || {
        counted = cluster.head.ok(&["summary", "tasks", "--format", "json"]);
        counted.contains(&format!("\"job\": {name}"))
    });
    ensure(
        reported,
        format!("the restarted head counts {name}'s tasks: {counted}"),
    )?;

    // This job takes the restarted head's orders: `prism kill` of a named actor of it made
    // since (the resident died with the head's node).
    let named = listed(cluster, "actors", &["--filter", "name=resident"]);
    let namespace = (named.first())
        .and_then(|actor| actor["namespace"].as_str())
        .ok_or(format!("the resident's namespace is listed: {named:?}"))?
        .to_string();
    let since = Keeper::options()
        .name("since")
        .resources("b", 0.01)
        .remote(3);
    ensure(since.kept().get_blocking()? == 3, "the new actor answers")?;
    let out = (cluster.head).prism(&["kill", "since", "--namespace", &namespace]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure(
        out.status.success() && said.contains("Killed actor"),
        format!("prism kill after the head's restart: {said}"),
    )?;
    ensure(
        eventually(10, || since.kept().get_blocking().is_err()),
        "the actor killed with prism kill answers no more",
    )?;
    // This job's changes reach the restarted head.
    prism::kill(&resident)?;
    let mut last = None;
    let shown = eventually(10, || {
        last = job_of(&jobs(cluster), me).map(summary);
        last.as_ref()
            .is_some_and(|(_, actors, _)| actors.iter().all(|(_, a)| a.contains("Dead")))
    });
    ensure(shown, format!("the killed actor shows dead: {last:?}"))?;
    let table = cluster.head.ok(&["list", "actors"]);
    ensure(
        table
            .lines()
            .any(|l| l.contains("resident") && l.contains("DEAD")),
        format!("prism list actors shows it:\n{table}"),
    )?;
    let filters = ["--filter", "name=resident", "--filter", "state=dead"];
    let found = listed(cluster, "actors", &filters);
    ensure(
        found.len() == 1 && found[0]["name"] == "resident",
        format!("filtered to the dead resident: {found:?}"),
    )?;
    let nodes = listed(
        cluster,
        "nodes",
        &["--filter", "state=alive", "--limit", "1"],
    );
    ensure(
        nodes.len() == 1 && nodes[0]["alive"] == true,
        format!("one live node: {nodes:?}"),
    )?;
    let table = cluster.head.ok(&["list", "jobs"]);
    ensure(
        table.lines().filter(|l| l.contains("FINISHED")).count() >= 1
            && table
                .lines()
                .any(|l| l.contains("FAILED") && l.contains("not heard")),
        format!("prism list jobs shows them:\n{table}"),
    )?;
    Ok(())
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let mut args = Arguments::from_args();
    be_a_child_job();
    let head = Host::with_default_timing("membership-head");
    head.start_head(&["--num-cpus", "1", "--name", "head", "--port", "0"]);
    let (addr, token) = (head.file("address"), head.file("token"));
    let cluster = std::sync::Arc::new(Cluster {
        head,
        addr: addr.clone(),
        token: token.clone(),
        a: Host::with_default_timing("membership-a"),
        b: Host::with_default_timing("membership-b"),
        c: Host::with_default_timing("membership-c"),
        d: Host::with_default_timing("membership-d"),
    });
    cluster.start_node("a");
    cluster.start_node("b");
    let config = prism::Config::new()
        .address(addr)
        .token(token)
        .object_store_memory(STORE_MIB << 20);
    prism::init_with(config).expect("join the cluster");

    // One at a time: both change the cluster the other uses.
    args.test_threads = Some(1);
    let (first, second, third) = (cluster.clone(), cluster.clone(), cluster.clone());
    let fourth = cluster.clone();
    let trials = vec![
        Trial::test("deaths_are_known_within_three_seconds", move || {
            deaths_are_known_within_three_seconds(&first)
        }),
        Trial::test(
            "stopped_and_drained_nodes_hand_their_work_back",
            move || stopped_and_drained_nodes_hand_their_work_back(&second),
        ),
        Trial::test(
            "a_full_node_spills_to_disk_and_restores_what_tasks_read",
            move || a_full_node_spills_to_disk_and_restores_what_tasks_read(&third),
        ),
        Trial::test(
            "the_head_keeps_jobs_actors_and_groups_across_its_restart",
            move || the_head_keeps_jobs_actors_and_groups_across_its_restart(&fourth),
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    prism::shutdown();
    if let Ok(Cluster {
        head, a, b, c, d, ..
    }) = std::sync::Arc::try_unwrap(cluster)
    {
        common::cluster::stop_all(vec![head, a, b, c, d]);
    }
    conclusion.exit()
}
