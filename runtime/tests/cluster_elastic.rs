//! Nodes that join while a job runs: a head on 127.0.0.1 without the `pool` resource and a
//! node `first` (127.0.0.2) with one. The driver queues more work than `first` can run; a node
//! `second` (127.0.0.3) started meanwhile is asked to host the job and takes queued and new
//! tasks. Then `second` is killed (SIGKILL) and started again under its name at once: the head
//! takes it back without waiting for its record to time out, and the job uses the new daemon.
//! Last the head is killed and started again: the driver connects to it again and, when
//! `second` is killed while it runs a task, learns it from the restarted head (the task runs
//! again on `first`) instead of waiting for QUIC's idle timeout. Every daemon is stopped when
//! the run ends.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::Host;
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use prism::{ObjectRef, remote};

/// Milliseconds since the Unix epoch (comparable across the test's processes).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sleeps `ms`, then says where and when it ended.
#[remote]
fn stint(ms: u64) -> (String, u64) {
    std::thread::sleep(Duration::from_millis(ms));
    (prism::node_name().unwrap_or_default(), unix_ms())
}

fn stints(count: usize, ms: u64) -> Vec<ObjectRef<(String, u64)>> {
    (0..count)
        .map(|_| {
            stint::options()
                .resources("pool", 1.0)
                .max_retries(3)
                .remote(ms)
        })
        .collect()
}

struct Cluster {
    head: Host,
    addr: String,
    token: String,
    second: Host,
}

impl Cluster {
    fn start_second(&self) -> u64 {
        let extra = [
            "--num-cpus",
            "2",
            "--resources",
            "pool=2",
            "--name",
            "second",
        ];
        self.second
            .join(&self.addr, &self.token, "127.0.0.3", &extra);
        unix_ms()
    }
}

fn a_node_that_joins_takes_queued_and_new_work(cluster: &Cluster) -> Result<(), Failed> {
    // Work for 10 s on `first` alone: more than its worker's pipeline holds (16 tasks), so
    // most of it waits in the node's queue.
    let queued = stints(100, 100);
    std::thread::sleep(Duration::from_millis(500));
    let joined_at = cluster.start_second();
    let ended = prism::get_all_blocking(&queued)?;
    let on_second: Vec<u64> = ended
        .iter()
        .filter(|(node, _)| node == "second")
        .map(|(_, at)| *at)
        .collect();
    ensure(
        !on_second.is_empty(),
        format!(
            "queued tasks ran on the node that joined: {:?}",
            ended.iter().map(|e| &e.0).collect::<Vec<_>>()
        ),
    )?;
    let first_end = on_second.iter().min().copied().unwrap_or(joined_at);
    eprintln!(
        "{} of 100 queued tasks ran on the node that joined; its first (100 ms) ended {} ms after `prism start` returned",
        on_second.len(),
        first_end.saturating_sub(joined_at)
    );
    // Same-name restart: killed, started again at once, and used again.
    let pids = cluster.second.daemons();
    ensure(!pids.is_empty(), "second's daemon is recorded")?;
    for &pid in &pids {
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let restarted = Instant::now();
    cluster.start_second();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let batch = prism::get_all_blocking(&stints(6, 200))?;
        if batch.iter().any(|(node, _)| node == "second") {
            break;
        }
        ensure(
            Instant::now() < deadline,
            "the restarted node was never used again",
        )?;
    }
    eprintln!(
        "the restarted node ran tasks again {:?} after its restart",
        restarted.elapsed()
    );
    // The head dies and comes back on its address.
    cluster
        .head
        .restart_head(&cluster.addr, &["--name", "head"])?;
    // A task on `second` when it dies runs again on `first`.
    std::thread::sleep(Duration::from_millis(2_000));
    let running: Vec<_> = stints(3, 3_000);
    std::thread::sleep(Duration::from_millis(500));
    for &pid in &cluster.second.daemons() {
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let killed = Instant::now();
    let ended = prism::get_all_blocking(&running)?;
    let after = killed.elapsed();
    ensure(
        ended.iter().all(|(node, _)| node == "first"),
        format!("after the kill every task ended on first: {ended:?}"),
    )?;
    // Three 3 s tasks in a row on `first`'s one slot, once the loss is known: well before
    // QUIC's idle timeout (30 s) would have told.
    ensure(
        after < Duration::from_secs(20),
        format!("the kill after the head's restart went unnoticed for {after:?}"),
    )?;
    eprintln!(
        "after a head restart, a node's kill cost the job {after:?} (three 3 s tasks on one slot)"
    );
    Ok(())
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let args = Arguments::from_args();
    let (head, addr, token) = common::cluster::head("elastic-head", "1");
    let first = Host::new("elastic-first");
    let extra = [
        "--num-cpus",
        "1",
        "--resources",
        "pool=1",
        "--name",
        "first",
    ];
    first.join(&addr, &token, "127.0.0.2", &extra);
    let config = prism::Config::new()
        .address(addr.clone())
        .token(token.clone());
    prism::init_with(config).expect("join the cluster");

    let cluster = std::sync::Arc::new(Cluster {
        head,
        addr,
        token,
        second: Host::new("elastic-second"),
    });
    let shared = cluster.clone();
    let trial = Trial::test("a_node_that_joins_takes_queued_and_new_work", move || {
        a_node_that_joins_takes_queued_and_new_work(&shared)
    });
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    prism::shutdown();
    drop((cluster, first));
    conclusion.exit()
}
