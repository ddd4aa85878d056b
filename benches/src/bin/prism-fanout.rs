//! Nested fan-out on a cluster (issue 20): `--parents` tasks, spread over the nodes by the custom
//! resources `r1..=r<nodes>`, each submit `--children` no-op children and wait for all of them.
//! Reports the children per second from the parents' submission to the last parent's answer,
//! and how many messages the driver received from workers per child: the driver's share of
//! work that other processes submit (issue 20 asks for none).
//!
//! With `--child-bytes B` each child returns B bytes, which its parent reads and checks: on a
//! cluster the children that spill to other nodes send their values back to the parent's.
//! With `--arg-bytes B` each parent makes one value of B bytes and passes it to each of its
//! children, which read it: children on other nodes need it there.
//! With `--actor-calls` each parent calls an actor of its own `--children` times instead, the
//! actor on the next node (on the head's with one node): calls between nodes, made by tasks.
//!
//! With `--return-refs` each parent returns its children's references at once (Ray's
//! `return [child.remote(i) for i in ...]`) and the driver reads them; `--child-ms` makes
//! each child sleep that long. Reports when the parents' answers came and when the last
//! child's value was read. With `--reader-on-node` a task on node 1 submits the parents and
//! reads the values instead of the driver (`--parents-near`: the parents run on node 1 too,
//! `--parents-far`: on node 2, so that their workers lend the references across nodes).
//!
//! With `--chain` a task on node 1 has `--children` values of `--arg-bytes` bytes made on
//! node 2, one after another, and each read by a task placed by no resource: it runs where
//! its argument was left (node 2) when its lease is asked there first, else on node 1 after
//! a pull. Reports each trial's rounds (median and slowest) and where the readers ran. With
//! `--chain-actor` the readers are calls to an actor on node 2 instead.
//!
//! With `--driver-sync --cross-job` another job serves an actor by name, which the driver and
//! one of its tasks call too (calls across jobs).
//!
//! With `--driver-sync --detached` the driver makes a detached actor on node 1 each trial
//! (the first one starts the head's host of this binary's detached actors), times its
//! creation, its first answer and `--children` calls one at a time, and kills it (timing
//! the kill's answer, which its host's driver gives on the head's order, and its death).
//!
//! `bash benches/fanout-bench.sh [N=3] [--parents 10] [--children 10000] [--trials 3]` starts a
//! head and N nodes on 127.0.0.x and passes `--address` and `--token`; without them it runs on
//! an embedded local cluster, its parents placed by no resource.

use std::time::Instant;

use clap::Parser;
use prism::{ActorHandle, actor, remote};

#[derive(Debug, Parser)]
struct Args {
    /// Nodes the parents spread over (node i carries the custom resource `r<i>`); 0: no
    /// placement (an embedded cluster).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Parent tasks.
    #[arg(long, default_value_t = 10)]
    parents: u32,
    /// Children each parent submits.
    #[arg(long, default_value_t = 10_000)]
    children: u32,
    /// Timed fan-outs.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Bytes each child returns (0: a number): values that large move from the node a child
    /// ran on to its parent's.
    #[arg(long, default_value_t = 0)]
    child_bytes: u64,
    /// Bytes of one value each parent makes and passes to all its children, which read it
    /// (0: none); not with `--child-bytes`.
    #[arg(long, default_value_t = 0)]
    arg_bytes: u64,
    /// With `--child-bytes` or `--arg-bytes`: the children run only where this custom
    /// resource is (`r0`: on the head's node, away from their parents).
    #[arg(long)]
    child_resource: Option<String>,
    /// Each parent calls an actor on another node instead of submitting children.
    #[arg(long)]
    actor_calls: bool,
    /// With `--actor-calls`: each call waits for its answer before the next (a worker's
    /// remote round trip), and the 50th and 99th percentiles are reported.
    #[arg(long)]
    sync_calls: bool,
    /// The driver's own round trips instead: `--children` tasks on node 1 (anywhere with
    /// `--nodes 0`) and as many calls to an actor there, each waited for; the 50th and 99th
    /// percentiles are reported.
    #[arg(long)]
    driver_sync: bool,
    /// With `--driver-sync` on a cluster: another job (this program run again) serves a named
    /// actor on node 1, and the driver and a task on node 1 call it too, one call at a time
    /// (calls to another job's actor, found by name at the head).
    #[arg(long)]
    cross_job: bool,
    /// With `--driver-sync` on a cluster: time detached actors instead (made through the
    /// head, by a job of its own), one per trial.
    #[arg(long)]
    detached: bool,
    /// Each parent returns its children's references without waiting for them, and the
    /// driver reads their values.
    #[arg(long)]
    return_refs: bool,
    /// With `--return-refs`: a task on node 1 submits the parents and reads the children's
    /// values, not the driver (the references go from worker to worker).
    #[arg(long)]
    reader_on_node: bool,
    /// With `--reader-on-node`: the parents run on the reader's node (node 1), not wherever
    /// the reader's node places them.
    #[arg(long)]
    parents_near: bool,
    /// With `--reader-on-node`: the parents run on node 2 (the references cross between
    /// nodes: the parents' workers lend them to the reader's there).
    #[arg(long, conflicts_with = "parents_near")]
    parents_far: bool,
    /// A chain of values made on node 2 and read by tasks placed by no resource (see the
    /// module's docs); `--children` rounds of `--arg-bytes` bytes.
    #[arg(long)]
    chain: bool,
    /// With `--chain`: the readers are calls to an actor on node 2, where the values are
    /// made (Ray's parameter server reading gradients).
    #[arg(long, requires = "chain")]
    chain_actor: bool,
    /// With `--return-refs`: how long each child sleeps, in milliseconds.
    #[arg(long, default_value_t = 0)]
    child_ms: u64,
    /// Where to join.
    #[command(flatten)]
    join: prism_benches::Join,
}

/// A child: no work.
#[remote]
fn child(i: u64) -> u64 {
    i
}

/// A parent: submits `children` children and waits for them all; answers their sum and where
/// it ran (a child that fails fails the parent, naming it).
#[remote(num_cpus = 0)]
fn parent(children: u64) -> (u64, String) {
    let refs: Vec<_> = (0..children).map(child::remote).collect();
    let values = prism::get_all_blocking(&refs).unwrap_or_else(|e| panic!("a child failed: {e}"));
    (
        values.into_iter().sum(),
        prism::node_name().unwrap_or_default(),
    )
}

/// A child that sleeps `ms` first (none for 0).
#[remote]
fn napping_child(i: u64, ms: u64) -> u64 {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    i
}

/// `--return-refs`: submits `children` children and returns their references at once, with
/// where it ran.
#[remote(num_cpus = 0)]
fn parent_returning(children: u64, ms: u64) -> (Vec<prism::ObjectRef<u64>>, String) {
    let refs = (0..children)
        .map(|i| napping_child::remote(i, ms))
        .collect();
    (refs, prism::node_name().unwrap_or_default())
}

/// `--return-refs --reader-on-node`: submits `parents` parents returning their children's
/// references (on node `on` if not 0) and reads every value: their sum, and how many parents
/// ran on the reader's node.
#[remote(num_cpus = 0)]
fn reads_returned(parents: u64, children: u64, ms: u64, on: u32) -> (u64, u64) {
    let refs: Vec<_> = (0..parents)
        .map(|_| match on {
            0 => parent_returning::remote(children, ms),
            n => {
                (parent_returning::options().resources(&format!("r{n}"), 0.01)).remote(children, ms)
            }
        })
        .collect();
    let answers = prism::get_all_blocking(&refs).unwrap_or_else(|e| panic!("a parent: {e}"));
    let here = prism::node_name().unwrap_or_default();
    let sum = (answers.iter())
        .map(|(refs, _)| prism::get_all_blocking(refs).unwrap_or_else(|e| panic!("a child: {e}")))
        .map(|values| values.into_iter().sum::<u64>())
        .sum();
    let near = answers.iter().filter(|(_, node)| *node == here).count();
    (sum, near as u64)
}

/// `--chain`: `bytes` bytes of `byte`.
#[remote]
fn made(byte: u8, bytes: u64) -> Vec<u8> {
    vec![byte; bytes as usize]
}

/// `--chain`: the sum of `data`, and where it ran.
#[remote]
fn summed(data: Vec<u8>) -> (u64, String) {
    let sum = data.iter().map(|&b| u64::from(b)).sum();
    (sum, prism::node_name().unwrap_or_default())
}

/// `--chain-actor`: sums what it is given.
#[actor]
struct Summer;

#[actor]
impl Summer {
    fn new() -> Self {
        Summer
    }

    /// The sum of `data`, and where it ran.
    fn sum(&mut self, data: Vec<u8>) -> (u64, String) {
        let sum = data.iter().map(|&b| u64::from(b)).sum();
        (sum, prism::node_name().unwrap_or_default())
    }
}

/// `--chain`: `rounds` values of `bytes` bytes made where resource `maker` is, one after
/// another, each read by a task placed by no resource (`actor`: by a call to an actor where
/// `maker` is): where each reader ran, and each round's time in milliseconds (a reader that
/// summed wrong fails it).
#[remote(num_cpus = 0)]
fn chain(rounds: u64, bytes: u64, maker: String, actor: bool) -> (Vec<String>, Vec<f64>) {
    let summer = actor.then(|| {
        Summer::options()
            .num_cpus(0.0)
            .resources(&maker, 0.01)
            .remote()
    });
    let mut nodes = Vec::new();
    let mut took = Vec::new();
    for round in 0..rounds {
        let start = Instant::now();
        let byte = (round % 251) as u8;
        let data = made::options().resources(&maker, 0.01).remote(byte, bytes);
        let read = match &summer {
            Some(summer) => summer.sum(&data),
            None => summed::remote(&data),
        };
        let (sum, node) = read
            .get_blocking()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(sum, u64::from(byte) * bytes, "round {round} on {node}");
        took.push(start.elapsed().as_secs_f64() * 1e3);
        nodes.push(node);
    }
    (nodes, took)
}

/// `--chain`: each trial, a task on node 1 runs the rounds (values made on node 2).
fn chain_trials(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 2, "--chain needs 2 nodes");
    let (rounds, bytes) = (u64::from(args.children), args.arg_bytes.max(1));
    for trial in 0..args.trials {
        let start = Instant::now();
        let (nodes, mut took) = chain::options()
            .resources("r1", 0.01)
            .remote(rounds, bytes, "r2".to_string(), args.chain_actor)
            .get_blocking()?;
        let secs = start.elapsed().as_secs_f64();
        took.sort_by(f64::total_cmp);
        let mut ran = std::collections::BTreeMap::<String, u32>::new();
        for node in nodes {
            *ran.entry(node).or_default() += 1;
        }
        println!(
            "trial {trial}: {rounds} rounds of {bytes} bytes in {secs:.3} s: round median {:.1} ms, slowest {:.1} ms; readers ran on {ran:?}",
            took[took.len() / 2],
            took[took.len() - 1],
        );
    }
    Ok(())
}

/// `--return-refs`: each trial, the parents return their children's references and the
/// driver reads every value (or, with `--reader-on-node`, a task on node 1 does).
fn returned_refs_trials(args: &Args) -> anyhow::Result<()> {
    let children = u64::from(args.children);
    let total = u64::from(args.parents) * children;
    for _ in 0..args.trials {
        let before = prism::worker_messages_received()?;
        let start = Instant::now();
        if args.reader_on_node {
            anyhow::ensure!(args.nodes > 0, "--reader-on-node needs a cluster");
            anyhow::ensure!(
                args.nodes > 1 || !args.parents_far,
                "--parents-far needs 2 nodes"
            );
            let on = match (args.parents_near, args.parents_far) {
                (true, _) => 1,
                (_, true) => 2,
                _ => 0,
            };
            let (sum, near) = (reads_returned::options().resources("r1", 0.01))
                .remote(u64::from(args.parents), children, args.child_ms, on)
                .get_blocking()?;
            let secs = start.elapsed().as_secs_f64();
            let expected = u64::from(args.parents) * (children * children.saturating_sub(1) / 2);
            anyhow::ensure!(sum == expected, "the children's values summed {sum}");
            let messages = prism::worker_messages_received()? - before;
            println!(
                "{} parents ({near} on the reader's node) returning {} children's references \
                 ({} ms each) to a reader on node 1 of {} nodes: all read after {secs:.3} s \
                 ({:.0} children/s), {:.2} driver messages per child",
                args.parents,
                children,
                args.child_ms,
                args.nodes,
                total as f64 / secs,
                messages as f64 / total as f64,
            );
            continue;
        }
        let parents: Vec<_> = (0..args.parents)
            .map(|p| match args.nodes {
                0 => parent_returning::remote(children, args.child_ms),
                n => parent_returning::options()
                    .resources(&format!("r{}", p % n + 1), 0.01)
                    .remote(children, args.child_ms),
            })
            .collect();
        let answers = prism::get_all_blocking(&parents)?;
        let answered = start.elapsed().as_secs_f64();
        let mut sum = 0;
        for (refs, _) in &answers {
            sum += prism::get_all_blocking(refs)?.into_iter().sum::<u64>();
        }
        let secs = start.elapsed().as_secs_f64();
        let expected = u64::from(args.parents) * (children * children.saturating_sub(1) / 2);
        anyhow::ensure!(sum == expected, "the children's values summed {sum}");
        let messages = prism::worker_messages_received()? - before;
        println!(
            "{} parents returning {} children's references ({} ms each) on {} nodes: the \
             parents answered after {:.3} s, the last value read after {secs:.3} s \
             ({:.0} children/s), {:.2} driver messages per child",
            args.parents,
            children,
            args.child_ms,
            args.nodes,
            answered,
            total as f64 / secs,
            messages as f64 / total as f64,
        );
    }
    prism::shutdown();
    Ok(())
}

/// What a parent calls with `--actor-calls`.
#[actor]
struct Echo;

#[actor]
impl Echo {
    fn new() -> Self {
        Echo
    }

    fn echo(&self, i: u64) -> u64 {
        i
    }
}

/// A parent that calls `echo` `calls` times and waits for all the answers: their sum and
/// where it ran.
#[remote(num_cpus = 0)]
fn caller(echo: ActorHandle<Echo>, calls: u64) -> (u64, String) {
    let refs: Vec<_> = (0..calls).map(|i| echo.echo(i)).collect();
    let values = prism::get_all_blocking(&refs).unwrap_or_else(|e| panic!("a call failed: {e}"));
    (
        values.into_iter().sum(),
        prism::node_name().unwrap_or_default(),
    )
}

/// A parent that calls `echo` `calls` times, each after the last answered: the answers' sum,
/// where it ran, and the 50th and 99th percentiles of the calls' round trips (nanoseconds).
#[remote(num_cpus = 0)]
fn sync_caller(echo: ActorHandle<Echo>, calls: u64) -> (u64, String, u64, u64) {
    let mut sum = 0;
    let each: Vec<u64> = (0..calls)
        .map(|i| {
            let start = Instant::now();
            sum += (echo.echo(i).get_blocking()).unwrap_or_else(|e| panic!("a call failed: {e}"));
            start.elapsed().as_nanos() as u64
        })
        .collect();
    let (p50, p99) = percentiles(each);
    (sum, prism::node_name().unwrap_or_default(), p50, p99)
}

/// A child that returns `bytes` bytes of `i`.
#[remote]
fn child_of_bytes(i: u64, bytes: u64) -> Vec<u8> {
    vec![i as u8; bytes as usize]
}

/// `bytes` bytes of 7: a value in shared memory that its caller owns.
#[remote]
fn blob(bytes: u64) -> Vec<u8> {
    vec![7; bytes as usize]
}

/// A child that reads `data`: its length (checked).
#[remote]
fn child_reads(data: Vec<u8>) -> u64 {
    assert!(data.iter().all(|&b| b == 7), "the argument is wrong");
    data.len() as u64
}

/// A parent of children that each read one value of `bytes` bytes it made: the bytes they
/// read, and where it ran.
#[remote(num_cpus = 0)]
fn parent_sharing(children: u64, bytes: u64, resource: Option<String>) -> (u64, String) {
    let data = blob::remote(bytes);
    let refs: Vec<_> = (0..children)
        .map(|_| match &resource {
            None => child_reads::remote(&data),
            Some(name) => child_reads::options().resources(name, 0.01).remote(&data),
        })
        .collect();
    let read = prism::get_all_blocking(&refs).unwrap_or_else(|e| panic!("a child failed: {e}"));
    (
        read.into_iter().sum(),
        prism::node_name().unwrap_or_default(),
    )
}

/// A parent of children that return `bytes` bytes each: the bytes it got (each checked), and
/// where it ran.
#[remote(num_cpus = 0)]
fn parent_of_bytes(children: u64, bytes: u64, resource: Option<String>) -> (u64, String) {
    let refs: Vec<_> = (0..children)
        .map(|i| match &resource {
            None => child_of_bytes::remote(i, bytes),
            Some(name) => child_of_bytes::options()
                .resources(name, 0.01)
                .remote(i, bytes),
        })
        .collect();
    let mut got = 0;
    for (i, r) in refs.iter().enumerate() {
        let value = r
            .get_blocking()
            .unwrap_or_else(|e| panic!("a child failed: {e}"));
        assert!(
            value.iter().all(|&b| b == i as u8),
            "child {i}'s value is wrong"
        );
        got += value.len() as u64;
    }
    (got, prism::node_name().unwrap_or_default())
}

/// `--sync-calls`: each trial, every parent calls its actor one call at a time; the round
/// trips' percentiles as each parent measured them.
fn sync_trials(args: &Args, actors: &[ActorHandle<Echo>], expected: u64) -> anyhow::Result<()> {
    let children = u64::from(args.children);
    for _ in 0..args.trials {
        let parents: Vec<_> = (0..args.parents)
            .map(|p| {
                let actor = actors[p as usize].clone();
                match args.nodes {
                    0 => sync_caller::remote(actor, children),
                    n => sync_caller::options()
                        .resources(&format!("r{}", p % n + 1), 0.01)
                        .remote(actor, children),
                }
            })
            .collect();
        for parent in parents {
            let (sum, node, p50, p99) = parent.get_blocking()?;
            anyhow::ensure!(sum == expected, "a parent on {node} summed {sum}");
            println!(
                "{children} calls, each waited for, from {node} to an actor on another node: \
                 p50 {:.1} us, p99 {:.1} us",
                p50 as f64 / 1e3,
                p99 as f64 / 1e3
            );
        }
    }
    prism::shutdown();
    Ok(())
}

/// The namespace and name of the actor another job serves with `--cross-job`.
const SERVED: (&str, &str) = ("prism-fanout", "echo");

/// The environment variable that makes this program the job that serves [`SERVED`].
const SERVE: &str = "PRISM_FANOUT_SERVE";

/// With [`SERVE`] set: joins as a job of its own, serves the actor [`SERVED`] on node 1 and
/// says so, until its input ends.
fn serve_if_asked(args: &Args) -> anyhow::Result<()> {
    if std::env::var_os(SERVE).is_none() {
        return Ok(());
    }
    args.join.init()?;
    let (namespace, name) = SERVED;
    let echo = Echo::options()
        .name(name)
        .namespace(namespace)
        .num_cpus(0.0)
        .resources("r1", 0.01)
        .try_remote()?;
    echo.echo(0).get_blocking()?;
    println!("serving");
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())?;
    prism::shutdown();
    std::process::exit(0);
}

/// Starts the job that serves [`SERVED`] (see [`serve_if_asked`]) and finds its actor once
/// it is up: the handle, and the job (its input, whose end stops it).
fn another_job_s_echo() -> anyhow::Result<(ActorHandle<Echo>, std::process::Child)> {
    let mut job = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(SERVE, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let out = job
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no output"))?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    anyhow::ensure!(
        lines.next().transpose()?.as_deref() == Some("serving"),
        "the serving job did not start"
    );
    let (namespace, name) = SERVED;
    Ok((prism::get_actor_in::<Echo>(name, namespace)?, job))
}

/// The 50th and 99th percentiles of `each`.
fn percentiles(mut each: Vec<u64>) -> (u64, u64) {
    each.sort_unstable();
    let at = |q: usize| each.get(each.len() * q / 100).copied().unwrap_or(0);
    (at(50), at(99))
}

/// `--driver-sync --detached`: each trial, a detached actor on node 1 is made, called
/// `--children` times one at a time, and killed.
fn detached_trials(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes > 0, "--detached needs a cluster");
    let calls = u64::from(args.children);
    for trial in 0..args.trials {
        let start = Instant::now();
        let echo = Echo::options()
            .name(&format!("detached-{}-{trial}", std::process::id()))
            .namespace(SERVED.0)
            .num_cpus(0.0)
            .resources("r1", 0.01)
            .lifetime(prism::Lifetime::Detached)
            .try_remote()?;
        let made = start.elapsed();
        echo.echo(0).get_blocking()?;
        let answered = start.elapsed();
        let mut each = Vec::with_capacity(calls as usize);
        for i in 0..calls {
            let start = Instant::now();
            anyhow::ensure!(echo.echo(i).get_blocking()? == i, "call {i} answered wrong");
            each.push(start.elapsed().as_nanos() as u64);
        }
        let (p50, p99) = percentiles(each);
        println!(
            "detached actor {trial}: made in {:.1} ms, first answer after {:.1} ms; {calls} \
             calls one at a time: p50 {:.1} us, p99 {:.1} us",
            made.as_secs_f64() * 1e3,
            answered.as_secs_f64() * 1e3,
            p50 as f64 / 1e3,
            p99 as f64 / 1e3
        );
        // Killed by its host's driver on the head's order: the answer, then its death seen.
        let start = Instant::now();
        prism::kill(&echo)?;
        let killed = start.elapsed();
        while echo.echo(0).get_blocking().is_ok() {
            anyhow::ensure!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "detached actor {trial} still answers 10 s after its kill"
            );
        }
        println!(
            "detached actor {trial}: kill answered in {:.1} ms, its calls fail from {:.1} ms",
            killed.as_secs_f64() * 1e3,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    prism::shutdown();
    Ok(())
}

/// `--driver-sync`: each trial, the driver runs `--children` tasks on node 1 and calls an
/// actor there as often, one at a time: the round trips' percentiles.
fn driver_trials(args: &Args) -> anyhow::Result<()> {
    let calls = u64::from(args.children);
    let echo = match args.nodes {
        0 => Echo::options().num_cpus(0.0).remote(),
        _ => Echo::options().num_cpus(0.0).resources("r1", 0.01).remote(),
    };
    echo.echo(0).get_blocking()?;
    let run = |i: u64| match args.nodes {
        0 => child::remote(i),
        _ => child::options().resources("r1", 0.01).remote(i),
    };
    run(0).get_blocking()?;
    let theirs = match args.cross_job {
        true => Some(another_job_s_echo()?),
        false => None,
    };
    if let Some((echo, _)) = &theirs {
        echo.echo(0).get_blocking()?;
    }
    for _ in 0..args.trials {
        let relayed = prism::worker_messages_relayed()?;
        let mut tasks = Vec::with_capacity(calls as usize);
        let mut actor = Vec::with_capacity(calls as usize);
        // One after the other: a worker that just answered spins a while for its next task,
        // and two of them beside the driver would share two CPUs three ways.
        for i in 0..calls {
            let start = Instant::now();
            anyhow::ensure!(run(i).get_blocking()? == i, "task {i} answered wrong");
            tasks.push(start.elapsed().as_nanos() as u64);
        }
        for i in 0..calls {
            let start = Instant::now();
            anyhow::ensure!(echo.echo(i).get_blocking()? == i, "call {i} answered wrong");
            actor.push(start.elapsed().as_nanos() as u64);
        }
        let us = |(p50, p99): (u64, u64)| (p50 as f64 / 1e3, p99 as f64 / 1e3);
        let ((t50, t99), (a50, a99)) = (us(percentiles(tasks)), us(percentiles(actor)));
        let relayed = prism::worker_messages_relayed()? - relayed;
        println!(
            "the driver's round trips to node {}, {calls} each, one at a time: tasks p50 {t50:.1} \
             us, p99 {t99:.1} us; actor calls p50 {a50:.1} us, p99 {a99:.1} us ({relayed} \
             frames through the relays)",
            args.nodes.min(1)
        );
        if let Some((theirs, _)) = &theirs {
            let mut each = Vec::with_capacity(calls as usize);
            for i in 0..calls {
                let start = Instant::now();
                anyhow::ensure!(
                    theirs.echo(i).get_blocking()? == i,
                    "call {i} answered wrong"
                );
                each.push(start.elapsed().as_nanos() as u64);
            }
            let (p50, p99) = us(percentiles(each));
            // A task on node 1 calls the other job's actor there, then this job's.
            let from_task = |echo: &ActorHandle<Echo>| {
                let caller = sync_caller::options().resources("r1", 0.01);
                let (_, node, t50, t99) = caller.remote(echo.clone(), calls).get_blocking()?;
                anyhow::Ok((node, us((t50, t99))))
            };
            let (node, (t50, t99)) = from_task(theirs)?;
            let (_, (o50, o99)) = from_task(&echo)?;
            println!(
                "calls to another job's actor on node 1, one at a time: from the driver p50 \
                 {p50:.1} us, p99 {p99:.1} us; from a task on {node} p50 {t50:.1} us, p99 \
                 {t99:.1} us (to this job's actor there: p50 {o50:.1} us, p99 {o99:.1} us)"
            );
        }
    }
    if let Some((echo, mut job)) = theirs {
        drop(echo);
        drop(job.stdin.take());
        job.wait()?;
    }
    prism::shutdown();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serve_if_asked(&args)?;
    args.join.init()?;
    if args.driver_sync && args.detached {
        return detached_trials(&args);
    }
    if args.driver_sync {
        return driver_trials(&args);
    }
    if args.return_refs {
        return returned_refs_trials(&args);
    }
    if args.chain {
        return chain_trials(&args);
    }
    let children = u64::from(args.children);
    anyhow::ensure!(
        args.child_bytes == 0 || args.arg_bytes == 0,
        "--child-bytes or --arg-bytes, not both"
    );
    let expected = match args.child_bytes.max(args.arg_bytes) {
        0 => children * children.saturating_sub(1) / 2,
        bytes => children * bytes,
    };
    let total = u64::from(args.parents) * children;
    // One actor per parent, on the node after the parent's (made before the trials).
    let actors: Vec<ActorHandle<Echo>> = match args.actor_calls {
        false => Vec::new(),
        true => (0..args.parents)
            .map(|p| match args.nodes {
                0 => Echo::options().num_cpus(0.0).remote(),
                1 => Echo::options().num_cpus(0.0).resources("r0", 0.01).remote(),
                n => Echo::options()
                    .num_cpus(0.0)
                    .resources(&format!("r{}", (p + 1) % n + 1), 0.01)
                    .remote(),
            })
            .collect(),
    };
    for actor in &actors {
        actor.echo(0).get_blocking()?;
    }
    if args.sync_calls {
        anyhow::ensure!(args.actor_calls, "--sync-calls goes with --actor-calls");
        return sync_trials(&args, &actors, expected);
    }
    for _ in 0..args.trials {
        let before = prism::worker_messages_received()?;
        let start = Instant::now();
        let parents: Vec<_> = (0..args.parents)
            .map(|p| {
                let on = args.child_resource.clone();
                let place = |n: u32| format!("r{}", p % n + 1);
                if let Some(actor) = actors.get(p as usize) {
                    return match args.nodes {
                        0 => caller::remote(actor.clone(), children),
                        n => caller::options()
                            .resources(&place(n), 0.01)
                            .remote(actor.clone(), children),
                    };
                }
                match (args.nodes, args.child_bytes, args.arg_bytes) {
                    (0, 0, 0) => parent::remote(children),
                    (0, 0, bytes) => parent_sharing::remote(children, bytes, on),
                    (0, bytes, _) => parent_of_bytes::remote(children, bytes, on),
                    (n, 0, 0) => parent::options()
                        .resources(&place(n), 0.01)
                        .remote(children),
                    (n, 0, bytes) => parent_sharing::options()
                        .resources(&place(n), 0.01)
                        .remote(children, bytes, on),
                    (n, bytes, _) => parent_of_bytes::options()
                        .resources(&place(n), 0.01)
                        .remote(children, bytes, on),
                }
            })
            .collect();
        let mut nodes = std::collections::BTreeMap::<String, u32>::new();
        for parent in parents {
            let (sum, node) = parent.get_blocking()?;
            anyhow::ensure!(sum == expected, "a parent on {node} summed {sum}");
            *nodes.entry(node).or_default() += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let messages = prism::worker_messages_received()? - before;
        println!(
            "fan-out of {} parents x {} {}{} on {} nodes (parents per node {nodes:?}): \
             {secs:.2} s, {:.0} children/s, {:.2} driver messages per child ({messages} in all)",
            args.parents,
            args.children,
            if args.actor_calls {
                "calls to an actor on another node"
            } else {
                "children"
            },
            match (args.child_bytes, args.arg_bytes) {
                (0, 0) => String::new(),
                (0, bytes) => format!(" reading {bytes} bytes"),
                (bytes, _) => format!(
                    " of {bytes} bytes ({:.2} GB/s)",
                    (total * bytes) as f64 / secs / 1e9
                ),
            },
            args.nodes,
            total as f64 / secs,
            messages as f64 / total as f64,
        );
    }
    prism::shutdown();
    Ok(())
}
