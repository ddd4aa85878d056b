//! Membership at the default timing (no test overrides of the heartbeat or the node
//! timeout): a head on 127.0.0.1 and nodes `a` (127.0.0.2) and `b` (127.0.0.3), each with a
//! resource of its name, and a driver joined to them. The driver's view of the cluster
//! (`prism::cluster_resources`) must lose a node within 3 s of its death: SIGKILLed, frozen
//! (SIGSTOP), and killed again after the head itself was killed and started again. A node
//! started again under its name is accepted at once and used by the running job. Every
//! daemon is stopped when the run ends.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Host, all_stopped, children, eventually, signal};
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};

/// How soon a death must be known (the bound; the default timeout is 2 s).
const DETECTED_WITHIN: Duration = Duration::from_secs(3);

/// Whether the driver counts a live node with `resource`.
fn has(resource: &str) -> bool {
    prism::cluster_resources().is_ok_and(|all| all.get(resource).is_some_and(|&n| n > 0.0))
}

/// How long until `check` holds (looked at every 10 ms), if within `limit`.
fn time_until(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
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
}

impl Cluster {
    fn start_node(&self, name: &str) {
        let (host, ip) = match name {
            "a" => (&self.a, "127.0.0.2"),
            _ => (&self.b, "127.0.0.3"),
        };
        let resource = format!("{name}=1");
        let extra = ["--num-cpus", "1", "--resources", &resource, "--name", name];
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
    let extra = ["--name", "head", "--num-cpus", "1"];
    cluster.head.restart_head(&cluster.addr, &extra)?;
    // Long enough for the driver to hear the old head's silence and subscribe again, and for
    // the nodes to register with the new head.
    std::thread::sleep(Duration::from_secs(5));
    ensure(has("a"), "a is still counted after the head's restart")?;
    cluster.kill_a("after the head's restart")?;
    Ok(())
}

/// The node this task runs on.
#[prism::remote]
fn where_am_i() -> String {
    prism::node_name().unwrap_or_default()
}

fn main() {
    common::cluster::serve_if_worker();
    let head = Host::with_default_timing("membership-head");
    head.start_head(&["--num-cpus", "1", "--name", "head", "--port", "0"]);
    let (addr, token) = (head.file("address"), head.file("token"));
    let cluster = std::sync::Arc::new(Cluster {
        head,
        addr: addr.clone(),
        token: token.clone(),
        a: Host::with_default_timing("membership-a"),
        b: Host::with_default_timing("membership-b"),
    });
    cluster.start_node("a");
    cluster.start_node("b");
    let config = prism::Config::new().address(addr).token(token);
    prism::init_with(config).expect("join the cluster");

    let args = Arguments::from_args();
    let shared = cluster.clone();
    let trial = Trial::test("deaths_are_known_within_three_seconds", move || {
        deaths_are_known_within_three_seconds(&shared)
    });
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    prism::shutdown();
    drop(cluster);
    conclusion.exit()
}
