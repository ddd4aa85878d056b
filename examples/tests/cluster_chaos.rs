//! Chaos on a real cluster: a head on 127.0.0.1 and nodes `n1`..`n3` on 127.0.0.2-4, each a
//! daemon of its own. The job is a tree reduction of 2,047 tasks (1,024 leaves of 1.6 MB each,
//! summed pairwise) beside an actor workload (actors on the nodes, restarted
//! when their node dies, called until the reduction ends). It runs once calm, then under
//! chaos: every 3 s one node (in turn) is killed with SIGKILL (its daemon and every process it
//! started) and started again under its name 1 s later. Both runs must give the right sum and
//! every actor call its right answer; the chaos run must see actor restarts. The wall times of
//! both are printed; `PRISM_CHAOS_RUNS` (default 1) repeats the pair for BENCHMARKS.md.
//!
//! It lives in the examples' crate, whose code is optimised even in test builds: the job's
//! own work (filling, decoding and summing 3.3 GB of vectors) runs at the speed a user's
//! release build would, while the runtime and daemons are the test build's. This binary
//! doubles as the `prism` command (with `PRISM_TEST_AS_CLI`) and as the job's workers.

#[path = "../../runtime/tests/common/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster::Host;
use libtest_mimic::{Arguments, Failed, Trial};
use prism::{ObjectRef, actor, remote};

/// Leaves of the reduction (2 x LEAVES - 1 tasks in all).
const LEAVES: u32 = 1_024;
/// Floats in a leaf: 1.6 MB.
const LEAF_LEN: usize = 400_000;
/// Retries of each reduction task (`PRISM_CHAOS_RETRIES` sets another): the 5. A
/// rebuild that a node's death explains is not charged to them (see `proto::owner`'s
/// `Lineage`): with a node killed every 3 s, a leaf is lost with the sums above it at nearly
/// every kill, and when every rebuild was charged a budget of 10 ran out in about 1 run of
/// 10 (and one of 3 in every run).
const RETRIES: u32 = 5;

fn retries() -> u32 {
    std::env::var("PRISM_CHAOS_RETRIES")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RETRIES)
}
/// Actors beside the reduction.
const ACTORS: u64 = 3;
/// Time between kills, and from a kill to the node's restart.
const KILL_EVERY: Duration = Duration::from_secs(3);
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// The nodes killed in turn: name and address.
const NODES: [(&str, &str); 3] = [
    ("n1", "127.0.0.2"),
    ("n2", "127.0.0.3"),
    ("n3", "127.0.0.4"),
];

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(what.into().into()) }
}

/// Element `j` of leaf `i`: small integers, so every sum is exact in `f32`.
fn element(i: u32, j: usize) -> f32 {
    ((i as usize * 7 + j) % 13) as f32
}

#[remote]
fn leaf(i: u32) -> Vec<f32> {
    (0..LEAF_LEN).map(|j| element(i, j)).collect()
}

/// The element-wise sum of two partial sums; `level` and `index` place it in the tree. An
/// input of the wrong length (a store that handed out a half-written object read as an empty
/// vector) panics, naming where.
#[remote]
fn combine(a: Vec<f32>, b: Vec<f32>, level: u32, index: u32) -> Vec<f32> {
    assert!(
        a.len() == LEAF_LEN && b.len() == LEAF_LEN,
        "combine {index} of level {level} on {:?} (pid {}): inputs of {} and {} floats",
        prism::node_name(),
        std::process::id(),
        a.len(),
        b.len()
    );
    for (input, values, at) in [("a", &a, 2 * index), ("b", &b, 2 * index + 1)] {
        if let Some(j) = first_wrong_sample(values, level - 1, at) {
            panic!(
                "combine {index} of level {level} on {:?} (pid {}): input {input} (partial sum \
                 {at} of level {}) is wrong at element {j}: {} where {} was expected",
                prism::node_name(),
                std::process::id(),
                level - 1,
                values[j],
                partial_sum(level - 1, at, j)
            );
        }
    }
    a.iter().zip(&b).map(|(x, y)| x + y).collect()
}

/// Every how many elements a combine checks its inputs: a wrong value is caught where it
/// first enters the tree (naming the node), at a cost of a few thousand additions per task.
const SAMPLE_EVERY: usize = 997;

/// Element `j` of partial sum `index` of `level` (level 0: the leaves).
fn partial_sum(level: u32, index: u32, j: usize) -> f32 {
    let first = index << level;
    (first..first + (1 << level)).map(|i| element(i, j)).sum()
}

/// The first sampled element of partial sum `index` of `level` that `values` gets wrong.
fn first_wrong_sample(values: &[f32], level: u32, index: u32) -> Option<usize> {
    (0..LEAF_LEN)
        .step_by(SAMPLE_EVERY)
        .chain([LEAF_LEN - 1])
        .find(|&j| values[j] != partial_sum(level, index, j))
}

/// The reduction's root, element by element, computed here.
fn expected_root() -> Vec<f32> {
    (0..LEAF_LEN)
        .map(|j| (0..LEAVES).map(|i| element(i, j)).sum())
        .collect()
}

/// Runs the tree reduction on the cluster and returns its root, or fails after `limit`.
fn reduce(limit: Duration) -> Result<Vec<f32>, Failed> {
    let mut level: Vec<ObjectRef<Vec<f32>>> = (0..LEAVES)
        .map(|i| leaf::options().max_retries(retries()).remote(i))
        .collect();
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        level = level
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                combine::options()
                    .max_retries(retries())
                    .remote(&pair[0], &pair[1], depth, i as u32)
            })
            .collect();
    }
    prism::get_timeout_blocking(&level[0], limit)
        .map_err(|e| format!("the reduction did not end within {limit:?}: {e}").into())
}

#[actor]
struct Squarer {
    offset: u64,
}

#[actor]
impl Squarer {
    fn new(offset: u64) -> Self {
        Squarer { offset }
    }

    /// `x * x + offset`, and the process that answered and its node.
    fn step(&mut self, x: u64) -> (u64, u32, Option<String>) {
        std::thread::sleep(Duration::from_millis(20));
        (x * x + self.offset, std::process::id(), prism::node_name())
    }
}

/// Calls each of `ACTORS` actors (one call each at a time) until `done`: the calls made and
/// the incarnations that answered (process and node, by actor), or the first wrong answer.
fn call_actors(done: &AtomicBool) -> Result<(u64, Incarnations), Failed> {
    let actors: Vec<_> = (0..ACTORS)
        .map(|k| {
            Squarer::options()
                .resources("crew", 1.0)
                .max_restarts(1_000)
                .max_task_retries(1_000)
                .remote(k)
        })
        .collect();
    let mut incarnations = Incarnations::new();
    let mut calls = 0;
    let mut x = 0;
    while !done.load(Ordering::Acquire) {
        let answers: Vec<_> = actors.iter().map(|a| a.step(x)).collect();
        for (k, answer) in answers.into_iter().enumerate() {
            let (value, pid, node) = answer.get_blocking()?;
            ensure(
                value == x * x + k as u64,
                format!("actor {k} answered {value} to {x}"),
            )?;
            incarnations.insert((k, pid), node);
            calls += 1;
        }
        x += 1;
    }
    Ok((calls, incarnations))
}

/// The processes (with their nodes) that answered each actor, by (actor, pid).
type Incarnations = std::collections::BTreeMap<(usize, u32), Option<String>>;

/// The test's cluster: the head and the nodes killed in turn.
struct Cluster {
    _head: Host,
    addr: String,
    token: String,
    nodes: Vec<Host>,
    /// The daemons killed so far (their stores are removed at the end).
    killed: std::sync::Mutex<Vec<i32>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        cluster::stop_all(std::mem::take(&mut self.nodes));
        let killed = std::mem::take(&mut *self.killed.lock().unwrap_or_else(|e| e.into_inner()));
        cluster::remove_stores_of(&killed);
    }
}

impl Cluster {
    fn start(&self, k: usize) {
        let (name, ip) = NODES[k];
        let extra = ["--num-cpus", "2", "--resources", "crew=2", "--name", name];
        self.nodes[k].join(&self.addr, &self.token, ip, &extra);
    }

    /// Kills node `k`'s daemon and every process it started, and forgets its pid.
    fn kill(&self, k: usize) {
        let host = &self.nodes[k];
        for daemon in host.daemons() {
            let mut pids = cluster::children(daemon);
            pids.push(daemon);
            for pid in pids {
                // SAFETY: kill(2) on a daemon this test started or one of its children.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = std::fs::remove_file(host.dir.join("daemons").join(daemon.to_string()));
            if let Ok(mut killed) = self.killed.lock() {
                killed.push(daemon);
            }
        }
    }

    /// Kills a node every `KILL_EVERY` and starts it again `RESTART_AFTER` later, until
    /// `done`: how many kills.
    fn havoc(&self, done: &AtomicBool) -> usize {
        let mut kills = 0;
        let mut last = Instant::now();
        loop {
            let next = last + KILL_EVERY;
            while Instant::now() < next {
                if done.load(Ordering::Acquire) {
                    return kills;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let k = kills % NODES.len();
            last = Instant::now();
            self.kill(k);
            kills += 1;
            std::thread::sleep(RESTART_AFTER);
            self.start(k);
        }
    }
}

/// One run of the job, with chaos or without: its wall time.
fn run(
    cluster: &Cluster,
    chaos: bool,
    limit: Duration,
    expected: &[f32],
) -> Result<Duration, Failed> {
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (root, actors, kills) = std::thread::scope(|s| {
        let actors = s.spawn(|| call_actors(&done));
        let havoc = s.spawn(|| if chaos { cluster.havoc(&done) } else { 0 });
        let root = reduce(limit);
        done.store(true, Ordering::Release);
        let actors = actors.join().expect("the actor thread ends");
        let kills = havoc.join().expect("the chaos thread ends");
        (root, actors, kills)
    });
    let took = started.elapsed();
    let (calls, answered) = actors?;
    let incarnations = answered.len();
    let root = root?;
    ensure(
        root.len() == expected.len(),
        format!("the reduction's root has {} elements", root.len()),
    )?;
    let wrong = root.iter().zip(expected).position(|(a, b)| a != b);
    ensure(
        wrong.is_none(),
        format!("the reduction's root differs at element {wrong:?}"),
    )?;
    if chaos && kills > 0 {
        ensure(
            incarnations > ACTORS as usize,
            format!(
                "{kills} node kills (of {:?}, in turn) restarted no actor; (actor, pid) -> \
                 node: {answered:?}",
                NODES.map(|(name, _)| name)
            ),
        )?;
    }
    eprintln!(
        "{}: {took:.1?}, {kills} node kills, {calls} actor calls answered by {incarnations} incarnations",
        if chaos { "chaos" } else { "calm" }
    );
    Ok(took)
}

fn the_job_survives_a_node_killed_every_three_seconds(cluster: &Cluster) -> Result<(), Failed> {
    let expected = expected_root();
    let runs = std::env::var("PRISM_CHAOS_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1usize);
    for round in 0..runs {
        let calm = run(cluster, false, Duration::from_secs(600), &expected)?;
        // Every node is back before the calm run of the next round. A hang fails the test.
        let chaos = run(cluster, true, calm * 20, &expected)?;
        eprintln!(
            "round {}: chaos took {:.2}x the calm run",
            round + 1,
            chaos.as_secs_f64() / calm.as_secs_f64()
        );
    }
    Ok(())
}

fn main() {
    cluster::serve_if_worker();
    cluster::be_the_cli();
    if std::env::var_os("RUST_LOG").is_none() {
        // Under chaos the driver warns of every rebuild and retry (thousands of lines); the
        // lost nodes (errors) and the test's own lines are what a reader of CI wants.
        // SAFETY: before any thread of this process starts (the runtime starts below).
        unsafe { std::env::set_var("RUST_LOG", "error") };
    }
    let (head, addr, token) = cluster::head("chaos-head", "2");
    let cluster = Arc::new(Cluster {
        _head: head,
        addr,
        token,
        nodes: NODES
            .iter()
            .map(|(name, _)| Host::new(&format!("chaos-{name}")))
            .collect(),
        killed: Default::default(),
    });
    for k in 0..NODES.len() {
        cluster.start(k);
    }
    let config = prism::Config::new()
        .address(cluster.addr.clone())
        .token(cluster.token.clone());
    prism::init_with(config).expect("join the cluster");

    let args = Arguments::from_args();
    let shared = cluster.clone();
    let trial = Trial::test(
        "the_job_survives_a_node_killed_every_three_seconds",
        move || the_job_survives_a_node_killed_every_three_seconds(&shared),
    );
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    prism::shutdown();
    drop(cluster);
    conclusion.exit()
}
