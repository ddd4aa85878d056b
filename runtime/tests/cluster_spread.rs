//! A full node's owner spreads its children over the cluster at once, with real processes: a
//! head on 127.0.0.1 with no CPU, node alpha on 127.0.0.2 that runs the parents, and nodes
//! beta, gamma and delta on 127.0.0.3-5 that have not run the job. Once alpha has no room,
//! its daemon passes the parent's lease asks to the other nodes at once (they count as free
//! until they say otherwise), and each ask names where that node fetches the job's binary
//! from: alpha, or a node that granted alpha's asks already, in turn, so that the binary
//! spreads as a tree rather than every copy leaving alpha. A first parent's children need
//! beta's own resource: beta alone runs them, fetching the binary from alpha; the next
//! parent's children spread over every node, gamma (the next in turn) fetching the binary
//! from beta. Every daemon is stopped when the run ends.

mod common;

use std::collections::BTreeMap;

use std::path::PathBuf;

use common::cluster::{Host, logs_in};
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use prism::{ObjectRef, remote};

/// Sleeps `ms` and says on which node it ran.
#[remote]
fn where_child(ms: u64) -> String {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    std::env::var("PRISM_NODE_NAME").unwrap_or_default()
}

/// Runs only on beta (its own resource): says on which node it ran.
#[remote(resources(beta = 1))]
fn on_beta() -> String {
    std::env::var("PRISM_NODE_NAME").unwrap_or_default()
}

/// Submits `n` children that only beta runs, from alpha.
#[remote(resources(alpha = 1))]
fn beta_first(n: u64) -> Vec<String> {
    let refs: Vec<ObjectRef<String>> = (0..n).map(|_| on_beta::remote()).collect();
    prism::get_all_blocking(&refs).expect("the children answer")
}

/// Submits `n` children of `ms` each from alpha and counts them by node.
#[remote(resources(alpha = 1))]
fn spread(n: u64, ms: u64) -> BTreeMap<String, u64> {
    let refs: Vec<ObjectRef<String>> = (0..n).map(|_| where_child::remote(ms)).collect();
    let mut nodes = BTreeMap::new();
    for node in prism::get_all_blocking(&refs).expect("the children answer") {
        *nodes.entry(node).or_default() += 1;
    }
    nodes
}

/// The sources the node whose logs are `logs` fetched the job's binary from (the `from` of
/// its "cached a job binary" lines).
fn binary_sources(logs: &str) -> Vec<String> {
    (logs.lines())
        .map(without_colours)
        .filter(|line| line.contains("cached a job binary"))
        .filter_map(|line| {
            let from = line.split("from=").nth(1)?;
            Some(from.split_whitespace().next()?.to_string())
        })
        .collect()
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().take_while(|&c| c != 'm').for_each(drop);
        } else {
            out.push(c);
        }
    }
    out
}

fn children_spread_at_once_and_the_binary_spreads_from_the_nodes_that_have_it(
    fresh: &[(&str, PathBuf)],
) -> Result<(), Failed> {
    let first = beta_first::remote(4).get_blocking()?;
    ensure(
        first.iter().all(|node| node == "beta"),
        format!("beta alone runs what needs its resource: {first:?}"),
    )?;
    let nodes = spread::remote(120, 100).get_blocking()?;
    println!("children by node: {nodes:?}");
    ensure(
        nodes.values().sum::<u64>() == 120,
        format!("every child answered: {nodes:?}"),
    )?;
    for (name, _) in fresh {
        ensure(
            nodes.contains_key(*name),
            format!("children ran on {name}, which had no room asked of it before: {nodes:?}"),
        )?;
    }
    // Each new node fetched the binary once: beta from alpha, gamma from beta (which
    // granted alpha's asks, so has it), delta from alpha again (each source in turn).
    let mut sources = BTreeMap::new();
    for (name, dir) in fresh {
        sources.insert(*name, binary_sources(&logs_in(dir)));
    }
    println!("where each node fetched the job's binary: {sources:?}");
    let ip = |name: &str| {
        let from = sources.get(name).and_then(|f| f.first());
        from.map(|f| f.split(':').next().unwrap_or_default().to_string())
    };
    let fetched_once = sources.values().all(|from| from.len() == 1);
    ensure(
        fetched_once && ip("beta").as_deref() == Some("127.0.0.2"),
        format!("one fetch each, beta's from alpha: {sources:?}"),
    )?;
    ensure(
        ip("gamma").as_deref() == Some("127.0.0.3"),
        format!("gamma fetched the binary from beta, which had it: {sources:?}"),
    )
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let args = Arguments::from_args();
    let (head, addr, token) = common::cluster::head("spread-head", "0");
    let mut hosts = Vec::new();
    let nodes = [
        ("alpha", "127.0.0.2", "alpha=1"),
        ("beta", "127.0.0.3", "beta=1"),
        ("gamma", "127.0.0.4", "gamma=1"),
        ("delta", "127.0.0.5", "delta=1"),
    ];
    for (name, ip, resource) in nodes {
        let host = Host::new(&format!("spread-{name}"));
        let extra = ["--num-cpus", "2", "--resources", resource, "--name", name];
        host.join(&addr, &token, ip, &extra);
        hosts.push((name, host));
    }
    let config = prism::Config::new()
        .address(addr.clone())
        .token(token.clone());
    prism::init_with(config).expect("join the cluster");
    let conclusion = {
        let fresh: Vec<(&str, PathBuf)> = (hosts.iter())
            .filter(|(name, _)| *name != "alpha")
            .map(|(name, host)| (*name, host.dir.clone()))
            .collect();
        let trial = Trial::test(
            "children_spread_at_once_and_the_binary_spreads_from_the_nodes_that_have_it",
            move || {
                children_spread_at_once_and_the_binary_spreads_from_the_nodes_that_have_it(&fresh)
            },
        );
        libtest_mimic::run(&args, vec![trial])
    };
    prism::shutdown();
    common::cluster::stop_all(hosts.into_iter().map(|(_, h)| h).chain([head]).collect());
    conclusion.exit()
}
