//! A node killed under a running job: a head on 127.0.0.1 without the `pool` resource, and
//! nodes `doomed` (127.0.0.2) and `spare` (127.0.0.3) that have it. The test kills `doomed`'s
//! daemon (and with it its workers) with SIGKILL while tasks run there and while objects it
//! made are still referenced: the running tasks are retried on `spare`, objects whose only copy
//! was on `doomed` are rebuilt from their lineage when read, and an object without lineage is
//! an error that names it. A task on `spare` that owns children leased on `doomed` (its
//! daemon passed their asks on to `doomed`'s, past the driver) sees them end with the node
//! and retried, and gets every value. Every daemon is stopped when the run ends.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Host, running};
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use prism::{ObjectRef, remote};

const BLOB: u64 = 4 << 20;

/// A blob, and the node that made it.
#[remote(num_returns = 2)]
fn make_marked(len: u64, seed: u8) -> (Vec<u8>, String) {
    let blob = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    (blob, prism::node_name().unwrap_or_default())
}

/// The blob's length, a checksum, and where it was read.
#[remote]
fn digest(blob: Vec<u8>) -> (u64, u64, String) {
    (
        blob.len() as u64,
        checksum(&blob),
        prism::node_name().unwrap_or_default(),
    )
}

fn checksum(blob: &[u8]) -> u64 {
    blob.iter().enumerate().fold(0u64, |acc, (i, b)| {
        acc.wrapping_add((i as u64 + 1) * *b as u64)
    })
}

fn expected(seed: u8) -> (u64, u64) {
    let blob: Vec<u8> = (0..BLOB)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    (BLOB, checksum(&blob))
}

/// Sleeps `ms`, then says where it ran.
#[remote]
fn slow(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    prism::node_name().unwrap_or_default()
}

/// Marks its start in `dir` (its number, node and process), sleeps `ms`, and says where it
/// ran. Only the nodes with `lease` run it.
#[remote(num_cpus = 0, resources(lease = 1), max_retries = 2)]
fn leased_child(dir: String, i: u64, ms: u64) -> (u64, String) {
    let node = prism::node_name().unwrap_or_default();
    let _ = std::fs::write(format!("{dir}/{i}-{node}-{}", std::process::id()), b"");
    std::thread::sleep(Duration::from_millis(ms));
    (i, node)
}

/// On `spare` (the only node with `owner`): owns three children that need `lease`, of which
/// `spare` has room for one at a time and `doomed` for two (its daemon is asked by
/// `spare`'s).
#[remote(num_cpus = 0, resources(owner = 1))]
fn owns_three(dir: String, ms: u64) -> Vec<(u64, String)> {
    let refs: Vec<ObjectRef<(u64, String)>> = (0..3)
        .map(|i| leased_child::remote(dir.clone(), i, ms))
        .collect();
    prism::get_all_blocking(&refs).expect("the children outlive the node they ran on")
}

/// Where the children of [`owns_three`] started, from their marks in `dir`.
fn started_on(dir: &str) -> Vec<String> {
    let mut nodes: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            (entries.flatten())
                .filter_map(|e| Some(e.file_name().to_str()?.split('-').nth(1)?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes
}

/// A blob's seed, the blob, and the node that made it.
type Marked = (u8, ObjectRef<Vec<u8>>, String);

/// Blobs made by tasks needing `pool`, with where each was made; `retries` as given.
fn blobs(count: u8, retries: u32) -> Result<Vec<Marked>, Failed> {
    let made: Vec<_> = (0..count)
        .map(|seed| {
            let (blob, node) = make_marked::options()
                .resources("pool", 1.0)
                .max_retries(retries)
                .remote(BLOB, seed);
            (seed, blob, node)
        })
        .collect();
    made.into_iter()
        .map(|(seed, blob, node)| Ok((seed, blob, node.get_blocking()?)))
        .collect()
}

/// `pids`: the daemon of `doomed`.
fn a_killed_node_s_tasks_rerun_and_its_objects_are_rebuilt(pids: &[i32]) -> Result<(), Failed> {
    // Objects made on both pool nodes; some only on `doomed`.
    let made = blobs(6, 3)?;
    let lost: Vec<_> = made.iter().filter(|(_, _, at)| at == "doomed").collect();
    ensure(
        !lost.is_empty() && lost.len() < made.len(),
        format!(
            "blobs spread over both pool nodes: {:?}",
            made.iter().map(|m| &m.2).collect::<Vec<_>>()
        ),
    )?;
    // An object without lineage (its task has no retries) made on `doomed`.
    let mut fragile = None;
    for _ in 0..5 {
        fragile = blobs(4, 0)?.into_iter().find(|(_, _, at)| at == "doomed");
        if fragile.is_some() {
            break;
        }
    }
    let Some((_, fragile, _)) = fragile else {
        return Err("no task without retries ran on doomed".into());
    };
    // Tasks running on both nodes when `doomed` dies.
    let running_tasks: Vec<ObjectRef<String>> = (0..4)
        .map(|_| slow::options().resources("pool", 1.0).remote(3_000))
        .collect();
    // And children of a task on `spare` leased workers on `doomed` by `spare`'s daemon.
    let dir = common::TempDir::new("owned-children")?;
    let marks = dir.0.clone();
    let owned = owns_three::remote(marks.clone(), 3_000);
    let submitted = Instant::now();
    let on_doomed = |marks: &str| started_on(marks).iter().any(|n| n == "doomed");
    while !on_doomed(&marks) && submitted.elapsed() < Duration::from_millis(2_500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1_000).saturating_sub(submitted.elapsed()));
    let before = started_on(&marks);
    // One runs on spare; the others (one each on doomed's two leased workers, or the third
    // pipelined behind one of the first two) wait for their turn.
    ensure(
        before.contains(&"doomed".to_string()) && before.contains(&"spare".to_string()),
        format!("the owner's children started on {before:?} before the kill"),
    )?;
    ensure(!pids.is_empty(), "doomed's daemon is recorded")?;
    for &pid in pids {
        // SAFETY: the pid of a daemon this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let killed = Instant::now();

    let names = prism::get_all_blocking(&running_tasks)?;
    ensure(
        names.iter().all(|n| n == "spare"),
        format!("after the kill the slow tasks finished on {names:?}"),
    )?;
    let children = owned.get_blocking()?;
    ensure(
        children
            == [
                (0, "spare".into()),
                (1, "spare".into()),
                (2, "spare".into()),
            ],
        format!("the owner's children ended as {children:?}"),
    )?;
    let after = started_on(&marks);
    ensure(
        after.iter().filter(|n| *n == "spare").count() == 3,
        format!("the children lost with doomed ran again on spare: {after:?}"),
    )?;
    // Read lost objects on a live node, and in the driver.
    for (seed, blob, _) in &lost {
        let (len, sum, at) = digest::options()
            .resources("pool", 1.0)
            .remote(blob.clone())
            .get_blocking()?;
        ensure(
            (len, sum) == expected(*seed) && at == "spare",
            format!("blob {seed} rebuilt and read on {at}: {len} bytes, sum {sum}"),
        )?;
    }
    let (seed, blob, _) = lost[0];
    let bytes = prism::get_archived_blocking(blob)?;
    ensure(
        (bytes.len() as u64, checksum(&bytes)) == expected(*seed),
        "the driver reads a rebuilt blob",
    )?;
    // Objects that never were on `doomed` are still there, untouched.
    for (seed, blob, at) in made.iter().filter(|(_, _, at)| at != "doomed") {
        let (len, sum, _) = digest::remote(blob.clone()).get_blocking()?;
        ensure(
            (len, sum) == expected(*seed),
            format!("blob {seed} made on {at} is intact"),
        )?;
    }
    let error = prism::get_blocking(&fragile)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure(
        error.contains("make_marked")
            && error.contains("no live node holds a copy")
            && error.contains("max_retries = 0"),
        format!("an object without lineage reads as: {error:?}"),
    )?;
    ensure(
        pids.iter().all(|&pid| !running(pid)),
        "the killed daemon is gone",
    )?;
    eprintln!(
        "recovered {} lost blobs and 4 running tasks {:?} after the kill",
        lost.len(),
        killed.elapsed()
    );
    Ok(())
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let args = Arguments::from_args();
    let (head, addr, token) = common::cluster::head("failures-head", "1");
    let doomed = Host::new("failures-doomed");
    doomed.join(
        &addr,
        &token,
        "127.0.0.2",
        &[
            "--num-cpus",
            "2",
            "--resources",
            "pool=2,lease=2",
            "--name",
            "doomed",
        ],
    );
    let spare = Host::new("failures-spare");
    spare.join(
        &addr,
        &token,
        "127.0.0.3",
        &[
            "--num-cpus",
            "2",
            "--resources",
            "pool=2,lease=1,owner=1",
            "--name",
            "spare",
        ],
    );
    let config = prism::Config::new()
        .address(addr.clone())
        .token(token.clone());
    prism::init_with(config).expect("join the cluster");

    let pids = doomed.daemons();
    let trial = Trial::test(
        "a_killed_node_s_tasks_rerun_and_its_objects_are_rebuilt",
        move || a_killed_node_s_tasks_rerun_and_its_objects_are_rebuilt(&pids),
    );
    let conclusion = libtest_mimic::run(&args, vec![trial]);
    prism::shutdown();
    drop((doomed, spare, head));
    conclusion.exit()
}
