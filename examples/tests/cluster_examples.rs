//! `quickstart`, `parameter_server` and `data_parallel` run unchanged against a real cluster: a
//! head on 127.0.0.1 and a node on 127.0.0.2, the example pointed at it with `PRISM_ADDRESS` and
//! `PRISM_TOKEN`; `data_parallel` also runs on its own embedded cluster, where a trainer is
//! killed mid-run and the group re-forms. This test binary doubles as the `prism` command (with `PRISM_TEST_AS_CLI`),
//! so the examples crate needs no other binary; every daemon is stopped when it ends.

#[path = "common/built.rs"]
mod built;
#[path = "../../runtime/tests/common/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::process::Command;

use built::example;
use cluster::Host;
use libtest_mimic::{Arguments, Failed, Trial};

/// Runs example `name` with `args`, joined to the cluster at `addr` (embedded when empty).
fn run_example(name: &str, args: &[&str], addr: &str, token: &str) -> Result<String, Failed> {
    let path = example(name);
    if !path.exists() {
        return Err(format!(
            "{} is not built (cargo test builds examples)",
            path.display()
        )
        .into());
    }
    let mut command = Command::new(&path);
    command
        .args(args)
        .env_remove("PRISM_TEST_AS_CLI")
        .env_remove("PRISM_TEST_PROGRAM");
    match addr {
        "" => command
            .env_remove("PRISM_ADDRESS")
            .env_remove("PRISM_TOKEN"),
        _ => command.env("PRISM_ADDRESS", addr).env("PRISM_TOKEN", token),
    };
    let out = command.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{name} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// Checks that `out` says each of `wanted`.
fn expect_lines(out: &str, wanted: &[&str]) -> Result<(), Failed> {
    match wanted.iter().find(|w| !out.contains(*w)) {
        Some(missing) => Err(format!("no {missing:?} in the output:\n{out}").into()),
        None => Ok(()),
    }
}

fn main() {
    cluster::be_the_cli();
    let head = Host::new("examples-head");
    head.start_head(&["--num-cpus", "1", "--port", "0", "--name", "head"]);
    let (addr, token) = (head.file("address"), head.file("token"));
    let node = Host::new("examples-node");
    node.join(
        &addr,
        &token,
        "127.0.0.2",
        &["--num-cpus", "2", "--name", "node"],
    );

    let (a, t) = (addr.clone(), token.clone());
    let quickstart = Trial::test("quickstart_runs_on_the_cluster", move || {
        let out = run_example("quickstart", &[], &a, &t)?;
        if !out.contains("sum = [11.0, 13.0, 15.0, 17.0]")
            || !out.contains("tree reduction of 64 arrays: first = 2016, last = 65952")
        {
            return Err(format!("unexpected output:\n{out}").into());
        }
        Ok(())
    });
    let (a, t) = (addr.clone(), token.clone());
    let parameter_server = Trial::test("parameter_server_runs_on_the_cluster", move || {
        let out = run_example("parameter_server", &["--workers", "3"], &a, &t)?;
        if !out.contains("reached loss") {
            return Err(format!("unexpected output:\n{out}").into());
        }
        Ok(())
    });
    // One trial for both cluster runs: each wants a CPU of the head's one.
    let data_parallel = Trial::test(
        "data_parallel_spreads_grows_and_survives_a_kill",
        move || {
            let args = ["--trainers", "2", "--kill-at", "2", "--target", "0.01"];
            let out = run_example("data_parallel", &args, &addr, &token)?;
            expect_lines(
                &out,
                &[
                    "2 trainers on [",
                    "\"head\"",
                    "\"node\"",
                    "rank 1 is gone",
                    "re-formed: 1 trainers",
                    "reached validation loss",
                ],
            )?;
            let args = ["--trainers", "1", "--target", "0.01"];
            let out = run_example("data_parallel", &args, &addr, &token)?;
            expect_lines(
                &out,
                &[
                    "1 trainers on",
                    "grew: 2 trainers",
                    "reached validation loss",
                ],
            )
        },
    );
    let data_parallel_local =
        Trial::test("data_parallel_survives_a_killed_trainer_locally", || {
            let args = ["--trainers", "3", "--kill-at", "2", "--target", "0.01"];
            let out = run_example("data_parallel", &args, "", "")?;
            expect_lines(
                &out,
                &[
                    "rank 2 is gone",
                    "re-formed: 2 trainers",
                    "reached validation loss",
                ],
            )
        });
    let conclusion = libtest_mimic::run(
        &Arguments::from_args(),
        vec![
            quickstart,
            parameter_server,
            data_parallel,
            data_parallel_local,
        ],
    );
    drop((node, head));
    conclusion.exit()
}
