//! Collectives across a real cluster on loopback: a head on 127.0.0.1 and nodes alpha
//! (127.0.0.2) and beta (127.0.0.3). A group of two members on alpha and one on beta uses a
//! shared-memory link inside alpha and direct QUIC links between the nodes; a member killed on
//! beta fails the collective at both others within seconds, naming its rank.

mod common;
#[path = "common/member.rs"]
mod member;

use std::time::Duration;

use common::cluster::Host;
use common::{Case, ensure};
use libtest_mimic::{Arguments, Failed, Trial};
use member::{all, input, start_on};

const PLACES: [&str; 3] = ["alpha", "beta", "alpha"];

fn a_group_across_nodes_reduces_over_shared_memory_and_quic() -> Result<(), Failed> {
    let members = start_on("across", &PLACES)?;
    let nodes: Vec<String> = (0..3)
        .map(|r| members[r].node().get_blocking())
        .collect::<Result<_, _>>()?;
    ensure(
        nodes == ["alpha", "beta", "alpha"],
        format!("placed on {nodes:?}"),
    )?;
    let len = 1_000_003;
    let inputs: Vec<Vec<f64>> = (0..3).map(|r| input(r, len)).collect();
    let refs = (0..3)
        .map(|r| members[r].allreduce(inputs[r].clone(), "sum".to_string()))
        .collect();
    let want: Vec<f64> = (0..len)
        .map(|i| inputs.iter().map(|input| input[i]).sum())
        .collect();
    for (rank, got) in all(refs)?.into_iter().enumerate() {
        ensure(got == want, format!("rank {rank}'s sum"))?;
    }
    let refs = (0..3)
        .map(|r| members[r].broadcast(vec![r as f32; 300_000], 1))
        .collect();
    for got in all(refs)? {
        ensure(
            got.iter().all(|&v| v == 1.0),
            "broadcast from beta's member",
        )?;
    }
    let refs = (0..3)
        .map(|r| members[r].allgather(input(r as u32, 1000)))
        .collect();
    let want: Vec<f64> = (0..3).flat_map(|r| input(r, 1000)).collect();
    for got in all(refs)? {
        ensure(got == want, "allgather across nodes")?;
    }
    Ok(())
}

fn a_member_killed_on_another_node_fails_the_collective_everywhere() -> Result<(), Failed> {
    let members = start_on("killed", &PLACES)?;
    let (errors, took) = member::kill_rank_one_during_allreduce(&members, 100_000)?;
    for (r, err) in [0, 2].into_iter().zip(errors) {
        ensure(
            err.contains("rank 1") && err.contains("killed"),
            format!("rank {r} names the group and the dead rank: {err}"),
        )?;
    }
    ensure(
        took < Duration::from_secs(10),
        format!("failed within seconds, not {took:?}"),
    )?;
    Ok(())
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let mut args = Arguments::from_args();
    let (head, addr, token) = common::cluster::head("coll-head", "1");
    let mut nodes = Vec::new();
    for (name, ip, resource) in [
        ("alpha", "127.0.0.2", "alpha=2"),
        ("beta", "127.0.0.3", "beta=1"),
    ] {
        let host = Host::new(&format!("coll-{name}"));
        let args = ["--num-cpus", "1", "--resources", resource, "--name", name];
        host.join(&addr, &token, ip, &args);
        nodes.push(host);
    }
    let config = prism::Config::new().address(addr).token(token);
    prism::init_with(config).expect("join the cluster");
    args.test_threads = Some(1);
    let cases: [Case; 2] = [
        (
            "a_group_across_nodes_reduces_over_shared_memory_and_quic",
            a_group_across_nodes_reduces_over_shared_memory_and_quic,
        ),
        (
            "a_member_killed_on_another_node_fails_the_collective_everywhere",
            a_member_killed_on_another_node_fails_the_collective_everywhere,
        ),
    ];
    let trials = cases
        .into_iter()
        .map(|(name, body)| Trial::test(name, body))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    prism::shutdown();
    drop((nodes, head));
    conclusion.exit()
}
