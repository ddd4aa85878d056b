//! Elastic data-parallel training on a real cluster that loses a node: `data_parallel` runs
//! three trainers spread over a head (127.0.0.1) and nodes alpha (127.0.0.2) and beta
//! (127.0.0.3); once training is under way the test SIGKILLs beta's daemon (its workers die
//! with it), and the run must re-form with the two survivors from its last checkpoint and still
//! reach the target loss. Every daemon is stopped when the test ends.

#[path = "common/built.rs"]
mod built;
#[path = "../../runtime/tests/common/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cluster::Host;

fn main() {
    cluster::be_the_cli();
    let head = Host::new("training-head");
    head.start_head(&["--num-cpus", "1", "--port", "0", "--name", "head"]);
    let (addr, token) = (head.file("address"), head.file("token"));
    let alpha = Host::new("training-alpha");
    alpha.join(
        &addr,
        &token,
        "127.0.0.2",
        &["--num-cpus", "1", "--name", "alpha"],
    );
    let beta = Host::new("training-beta");
    beta.join(
        &addr,
        &token,
        "127.0.0.3",
        &["--num-cpus", "1", "--name", "beta"],
    );

    let example = built::example("data_parallel");
    assert!(
        example.exists(),
        "{} is not built (cargo test builds examples)",
        example.display()
    );
    let mut child = Command::new(&example)
        .args(["--trainers", "3", "--target", "0.002", "--epochs", "400"])
        .env("PRISM_ADDRESS", &addr)
        .env("PRISM_TOKEN", &token)
        .env_remove("PRISM_TEST_AS_CLI")
        .env_remove("PRISM_TEST_PROGRAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().expect("piped");
    let mut out = String::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("the example's output");
        out.push_str(&line);
        out.push('\n');
        // Two epochs done by three trainers: beta's node goes.
        if !killed && line.split_whitespace().take(2).eq(["2", "3"]) {
            let daemons = beta.daemons();
            cluster::signal(&daemons, libc::SIGKILL).expect("kill beta's daemon");
            cluster::remove_stores_of(&daemons);
            out.push_str("(test: beta killed)\n");
            killed = true;
        }
    }
    let status = child.wait().expect("the example ends");
    drop((beta, alpha, head));
    let wanted = [
        "3 trainers on [",
        "\"beta\"",
        "(test: beta killed)",
        "is gone",
        "re-formed: 2 trainers",
        "reached validation loss",
    ];
    let missing: Vec<&&str> = wanted.iter().filter(|w| !out.contains(**w)).collect();
    assert!(
        status.success() && missing.is_empty(),
        "{status}; missing {missing:?} in:\n{out}"
    );
    println!("a run that lost a node re-formed and reached its target:\n{out}");
}
