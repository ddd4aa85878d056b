//! A node's lease on the job, with real processes: a head on 127.0.0.1 and nodes on
//! 127.0.0.2 and 127.0.0.3 with one `slot` each. An actor holding a slot runs on one of them;
//! the test freezes that node (its daemon and the job's workers there, SIGSTOP) for longer
//! than the head's node timeout. The driver counts the node lost at once but starts the actor
//! again on the other node only once the frozen node's lease ended (`PRISM_LEASE_MS`), so the
//! two incarnations never run at once; the call in flight is retried there. When the frozen
//! node runs again it stops the job's processes at once (its lease ran out and the job's
//! connection is gone). Every daemon is stopped when the run ends.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::cluster::{Host, all_stopped, children, eventually, running, signal};
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use prism::actor;

/// The driver's lease length for this test.
const LEASE_MS: u64 = 4_000;

/// Milliseconds since the Unix epoch (comparable across the test's processes).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[actor]
struct Marked {
    born_ms: u64,
    calls: u64,
}

#[actor]
impl Marked {
    fn new() -> Self {
        Marked {
            born_ms: unix_ms(),
            calls: 0,
        }
    }

    /// Where this incarnation runs: node, pid, when it was made, and how many calls it had.
    fn whereabouts(&mut self) -> (String, u32, u64, u64) {
        self.calls += 1;
        let node = std::env::var("PRISM_NODE_NAME").unwrap_or_default();
        (node, std::process::id(), self.born_ms, self.calls)
    }
}

/// `daemons`: each node's name and daemon pids.
fn a_frozen_node_s_actor_starts_again_only_after_its_lease(
    daemons: &[(&str, Vec<i32>)],
) -> Result<(), Failed> {
    let actor = Marked::options()
        .resources("slot", 1.0)
        .max_restarts(1)
        .max_task_retries(1)
        .remote();
    let (first_node, first_pid, _, _) = actor.whereabouts().get_blocking()?;
    let (_, frozen) = daemons
        .iter()
        .find(|(name, _)| *name == first_node)
        .ok_or_else(|| format!("the actor runs on an unknown node {first_node:?}"))?;
    ensure(!frozen.is_empty(), "the node's daemon is recorded")?;
    // Freeze the node: its daemon and every process it started.
    let mut stopped: Vec<i32> = frozen.clone();
    for &daemon in frozen {
        stopped.extend(children(daemon));
    }
    ensure(
        stopped.contains(&(first_pid as i32)),
        "the actor's process is the daemon's child",
    )?;
    // The node last renewed its lease at most a renewal period (1 s) before this.
    let frozen_at = unix_ms();
    signal(&stopped, libc::SIGSTOP)?;
    ensure(
        eventually(5, || all_stopped(&stopped)),
        "every thread of the node's processes stops",
    )?;
    let call = actor.whereabouts();
    let answer = call.get_blocking();
    let answered_at = unix_ms();
    signal(&stopped, libc::SIGCONT)?;
    let (node, pid, born_ms, calls) = answer?;
    ensure(
        node != first_node && pid != first_pid && calls == 1,
        format!("the call ran on a new incarnation elsewhere: {node} pid {pid}, call {calls}"),
    )?;
    // The new incarnation waited for the frozen node's lease to end.
    let earliest = frozen_at + LEASE_MS - 1_000;
    ensure(
        born_ms >= earliest,
        format!(
            "the new incarnation was made {} ms after the freeze, before the lease ended (>= {} ms)",
            born_ms.saturating_sub(frozen_at),
            LEASE_MS - 1_000
        ),
    )?;
    // Running again, the node stops the job's processes there.
    ensure(
        eventually(10, || !running(first_pid as i32)),
        "the old incarnation's process ends once its node runs again",
    )?;
    eprintln!(
        "the actor answered from {node} {} ms after its node froze (made after {} ms; lease {LEASE_MS} ms)",
        answered_at - frozen_at,
        born_ms - frozen_at
    );
    Ok(())
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let args = Arguments::from_args();
    // SAFETY: set before any thread of this process starts (the runtime starts below).
    unsafe { std::env::set_var("PRISM_LEASE_MS", LEASE_MS.to_string()) };
    let (head, addr, token) = common::cluster::head("leases-head", "1");
    let mut nodes = Vec::new();
    for (name, ip) in [("north", "127.0.0.2"), ("south", "127.0.0.3")] {
        let host = Host::new(&format!("leases-{name}"));
        let extra = ["--num-cpus", "2", "--resources", "slot=1", "--name", name];
        host.join(&addr, &token, ip, &extra);
        nodes.push((name, host));
    }
    let config = prism::Config::new()
        .address(addr.clone())
        .token(token.clone());
    prism::init_with(config).expect("join the cluster");

    let daemons: Vec<(&str, Vec<i32>)> = nodes.iter().map(|(n, h)| (*n, h.daemons())).collect();
    let trial = Trial::test(
        "a_frozen_node_s_actor_starts_again_only_after_its_lease",
        move || a_frozen_node_s_actor_starts_again_only_after_its_lease(&daemons),
    );
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    prism::shutdown();
    drop((nodes, head));
    conclusion.exit()
}
