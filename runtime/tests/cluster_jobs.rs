//! A driver joined to a real cluster on loopback: a head on 127.0.0.1 and nodes on 127.0.0.2
//! and 127.0.0.3, each with its own CPUs and a custom resource. The test binary is the driver
//! and, fetched by the nodes by its hash, the job's workers there (and, run again, a second
//! job sharing the nodes). Every daemon is stopped when the run ends.

mod common;

use common::cluster::Host;
use common::{Case, ensure};
use libtest_mimic::{Arguments, Failed, Trial};
use prism::{ObjectRef, Stream, actor, remote};

#[remote]
fn traced_on_alpha(i: u32) -> u32 {
    i * 2
}

#[remote]
fn fails_on_purpose() -> u32 {
    panic!("fails on purpose")
}

#[remote]
fn where_am_i() -> String {
    prism::node_name().unwrap_or_else(|| "<driver>".into())
}

#[remote(resources(alpha = 1))]
fn on_alpha() -> String {
    prism::node_name().unwrap_or_default()
}

#[remote]
fn make_blob(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The blob's length, a checksum, and where it was read.
#[remote]
fn digest(blob: Vec<u8>) -> (u64, u64, String) {
    let sum = blob.iter().enumerate().fold(0u64, |acc, (i, b)| {
        acc.wrapping_add((i as u64 + 1) * *b as u64)
    });
    (
        blob.len() as u64,
        sum,
        prism::node_name().unwrap_or_default(),
    )
}

fn expected_digest(len: u64, seed: u8) -> (u64, u64) {
    let sum = (0..len).fold(0u64, |acc, i| {
        let b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        acc.wrapping_add((i + 1) * b as u64)
    });
    (len, sum)
}

/// `n` items of `len` bytes, item `i` filled with `i`, made where the `alpha` resource is.
#[remote(resources(alpha = 1), backpressure = 2)]
fn alpha_blocks(n: u32, len: u32) -> Stream<(String, Vec<u8>)> {
    let node = prism::node_name().unwrap_or_default();
    Stream::new((0..n).map(move |i| (node.clone(), vec![i as u8; len as usize])))
}

#[remote(resources(alpha = 1))]
fn alpha_counts(n: u64) -> Stream<u64> {
    Stream::new(0..n)
}

/// Reads a stream it starts, on a node with `alpha`: the sum of its items.
#[remote(resources(alpha = 1))]
fn sum_of_alpha_counts(n: u64) -> u64 {
    alpha_counts::remote(n)
        .into_iter()
        .map(|item| item.and_then(|r| r.get_blocking()).expect("an item"))
        .sum()
}

#[actor]
struct Tally {
    count: u64,
}

#[actor]
impl Tally {
    fn new(start: u64) -> Self {
        Tally { count: start }
    }

    fn add(&mut self, n: u64) -> u64 {
        self.count += n;
        self.count
    }

    fn node(&self) -> String {
        prism::node_name().unwrap_or_default()
    }

    fn echo(&self, blob: Vec<u8>) -> Vec<u8> {
        blob
    }
}

/// On node alpha: creates the actor named `name` where `beta` is (node beta) and adds 5 to
/// it: where this task ran, where the actor lives, and its count.
#[remote(resources(alpha = 1))]
fn name_a_tally_on_beta(name: String) -> (String, String, u64) {
    let tally = Tally::options()
        .name(&name)
        .resources("beta", 1.0)
        .remote(100);
    let count = tally.add(5).get_blocking().expect("the tally answers");
    let lives = tally.node().get_blocking().expect("the tally's node");
    (prism::node_name().unwrap_or_default(), lives, count)
}

/// On node alpha: finds the actor named `name` and kills it.
#[remote(resources(alpha = 1))]
fn kill_the_tally(name: String) -> Result<(), String> {
    let tally = prism::get_actor::<Tally>(&name).map_err(|e| e.to_string())?;
    prism::kill(&tally).map_err(|e| e.to_string())
}

/// On node beta: makes a group of one bundle (a CPU and an `alpha`), runs `on_alpha` in it and removes
/// it: where that ran.
#[remote(resources(beta = 0.25))]
fn use_an_alpha_group() -> Result<String, String> {
    let bundle = prism::Bundle::new().cpus(1.0).resource("alpha", 1.0);
    let group = prism::placement_group(vec![bundle], prism::PlacementStrategy::Pack)
        .map_err(|e| e.to_string())?;
    let ready = group
        .wait_blocking(std::time::Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if !ready {
        return Err("the group was not reserved in 60 s".into());
    }
    let ran = on_alpha::options()
        .placement(&group, 0)
        .remote()
        .get_blocking()
        .map_err(|e| e.to_string());
    prism::remove_placement_group(&group).map_err(|e| e.to_string())?;
    ran
}

/// Holds every `alpha` of node alpha for a while, with a marker file in `dir`: true if the
/// marker was there already (another such task ran on the node at the same time).
#[remote(resources(alpha = 4))]
fn hold_all_of_alpha(dir: String) -> bool {
    let marker = std::path::Path::new(&dir).join("busy");
    let alone = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok();
    std::thread::sleep(std::time::Duration::from_millis(200));
    if alone {
        let _ = std::fs::remove_file(&marker);
    }
    !alone
}

/// Makes the actor named `name` in `namespace`: "made", or why not.
#[remote]
fn claim_in(name: String, namespace: String) -> String {
    match Tally::options()
        .name(&name)
        .namespace(&namespace)
        .try_remote(0)
    {
        Ok(_) => "made".into(),
        Err(e) => e.to_string(),
    }
}

/// Finds the actor named `name` in `namespace` (of any job), adds `n` to it and echoes a
/// 2 MiB blob through it: its count, or why not.
#[remote]
fn call_in(name: String, namespace: String, n: u64) -> Result<u64, String> {
    let tally = prism::get_actor_in::<Tally>(&name, &namespace).map_err(|e| e.to_string())?;
    let count = tally.add(n).get_blocking().map_err(|e| e.to_string())?;
    let blob = vec![7u8; 2 << 20];
    let echoed = tally
        .echo(blob.clone())
        .get_blocking()
        .map_err(|e| e.to_string())?;
    if echoed != blob {
        return Err(format!("the echo came back as {} bytes", echoed.len()));
    }
    Ok(count)
}

/// The environment variable that makes this test's binary a job that names actors where the
/// first job holds a name (see [`be_a_naming_job`]).
const NAMING_JOB: &str = "PRISM_TEST_NAMING_JOB";

/// Run as another job on the cluster (by [`names_are_unique_across_the_jobs_of_a_namespace`]):
/// tries the name the first job holds, from the driver and from a task, and again after the
/// first job's word that it killed its actor; prints what happened, a line each.
fn be_a_naming_job() {
    if std::env::var(NAMING_JOB).is_err() {
        return;
    }
    prism::init().expect("the naming job joins the cluster");
    let taken = Tally::options()
        .name("shared")
        .namespace("svc")
        .try_remote(0);
    match taken {
        Err(prism::Error::ActorNameTaken {
            holder: Some(job), ..
        }) => println!("taken by {job}"),
        other => println!("not taken: {:?}", other.map(|t| t.id())),
    }
    let other = Tally::options()
        .name("shared")
        .namespace("mine")
        .try_remote(0);
    println!(
        "other namespace: {}",
        other.map_or_else(|e| e.to_string(), |_| "made".into())
    );
    let from_task = claim_in::remote("shared".to_string(), "svc".to_string()).get_blocking();
    println!(
        "from a task: {}",
        from_task.unwrap_or_else(|e| e.to_string())
    );
    // The first job's actor, found and called by a task of this job, then by its driver.
    let called = call_in::remote("shared".to_string(), "svc".to_string(), 10).get_blocking();
    let called = called.map_err(|e| e.to_string()).and_then(|count| count);
    println!("a task calls it: {called:?}");
    let theirs = prism::get_actor_in::<Tally>("shared", "svc");
    let by_driver = (theirs.as_ref().map_err(|e| e.to_string())).and_then(|tally| {
        let count = tally.add(100).get_blocking().map_err(|e| e.to_string())?;
        let blob: Vec<u8> = (0..(3u32 << 20)).map(|i| i as u8).collect();
        let echoed = tally
            .echo(blob.clone())
            .get_blocking()
            .map_err(|e| e.to_string())?;
        Ok((count, echoed == blob))
    });
    println!("the driver calls it: {by_driver:?}");
    let shared = (Tally::options().name("shared").namespace("svc"))
        .get_if_exists(true)
        .try_remote(0)
        .map_err(|e| e.to_string())
        .and_then(|tally| tally.add(0).get_blocking().map_err(|e| e.to_string()));
    println!("get_if_exists: {shared:?}");
    println!("waiting");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // Its calls fail once it is dead.
    if let Ok(tally) = &theirs {
        let start = std::time::Instant::now();
        let died = loop {
            match tally.add(1).get_blocking() {
                Err(e) if e.is_actor_died() => break format!("died: {e}"),
                Err(e) => break format!("failed otherwise: {e}"),
                Ok(_) if start.elapsed() > std::time::Duration::from_secs(10) => {
                    break "still answers".to_string();
                }
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        println!("its calls once killed: {died}");
    }
    drop(theirs);
    // The first job's actor died: its name goes at the head as its driver learns of it.
    let start = std::time::Instant::now();
    let made = loop {
        match Tally::options()
            .name("shared")
            .namespace("svc")
            .try_remote(7)
        {
            Ok(tally) => break tally.add(1).get_blocking().map(|n| n.to_string()),
            Err(e) if start.elapsed() > std::time::Duration::from_secs(10) => break Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    match made {
        Ok(n) => println!("after the kill: {n} in {} ms", start.elapsed().as_millis()),
        Err(e) => println!("after the kill: {e}"),
    }
    prism::shutdown();
    std::process::exit(0);
}

fn names_are_unique_across_the_jobs_of_a_namespace(addr: &str, token: &str) -> Result<(), Failed> {
    let mine = Tally::options()
        .name("shared")
        .namespace("svc")
        .try_remote(1)?;
    ensure(
        mine.add(1).get_blocking()? == 2,
        "the first job's actor answers",
    )?;
    let (mut other, mut lines) = another_job(NAMING_JOB, "1", addr, token)?;
    let mut said = lines_until(&mut lines, "waiting")?;
    let killed = prism::kill(&mine);
    {
        use std::io::Write;
        let mut stdin = other.stdin.take().ok_or("the naming job's input")?;
        let _ = writeln!(stdin, "killed");
    }
    for line in lines {
        said.push(line?);
    }
    let status = other.wait()?;
    killed?;
    ensure(
        status.success(),
        format!("the naming job ended well: {said:?}"),
    )?;
    let line = |prefix: &str| said.iter().find(|l| l.starts_with(prefix)).cloned();
    ensure(
        line("taken by ").is_some_and(|l| l.len() > "taken by ".len()),
        format!("the other job's driver is refused, told which job holds the name: {said:?}"),
    )?;
    ensure(
        line("other namespace: ").as_deref() == Some("other namespace: made"),
        format!("the name is free in another namespace: {said:?}"),
    )?;
    ensure(
        line("from a task: ").is_some_and(|l| l.contains("held by job")),
        format!("the other job's task is refused too: {said:?}"),
    )?;
    ensure(
        line("a task calls it: ").as_deref() == Some("a task calls it: Ok(12)"),
        format!("a task of the other job finds and calls the actor: {said:?}"),
    )?;
    ensure(
        line("the driver calls it: ").as_deref() == Some("the driver calls it: Ok((112, true))"),
        format!("the other job's driver finds and calls the actor: {said:?}"),
    )?;
    ensure(
        line("get_if_exists: ").as_deref() == Some("get_if_exists: Ok(112)"),
        format!("get_if_exists in the other job gives the actor that has the name: {said:?}"),
    )?;
    ensure(
        line("its calls once killed: died").is_some(),
        format!("the other job's calls fail once the actor is killed: {said:?}"),
    )?;
    ensure(
        line("after the kill: 8 in ").is_some(),
        format!("the name is free once its actor is killed: {said:?}"),
    )
}

/// Finds the actor named `name` in namespace `svc` (another job's) and kills it: how it
/// went.
#[remote]
fn kill_in_svc(name: String) -> Result<(), String> {
    let tally = prism::get_actor_in::<Tally>(&name, "svc").map_err(|e| e.to_string())?;
    prism::kill(&tally).map_err(|e| e.to_string())
}

/// The environment variable that makes this test's binary a job that kills another job's
/// actors (see [`be_a_killing_job`]): the name of the first.
const KILLING_JOB: &str = "PRISM_TEST_KILLING_JOB";

/// Run as another job on the cluster (by
/// [`another_job_or_the_command_line_kills_a_job_s_actor`]): a task of it kills the actor
/// named `$KILLING_JOB` in namespace `svc`, its driver the one named `$KILLING_JOB-2`; prints
/// how each went.
fn be_a_killing_job() {
    let Ok(name) = std::env::var(KILLING_JOB) else {
        return;
    };
    prism::init().expect("the killing job joins the cluster");
    let by_task = kill_in_svc::remote(name.clone()).get_blocking();
    let by_task = by_task.map_err(|e| e.to_string()).and_then(|killed| killed);
    println!("by a task: {by_task:?}");
    let by_driver = prism::get_actor_in::<Tally>(&format!("{name}-2"), "svc")
        .and_then(|tally| prism::kill(&tally))
        .map_err(|e| e.to_string());
    println!("by the driver: {by_driver:?}");
    prism::shutdown();
    std::process::exit(0);
}

/// Calls to `tally` fail with its death within 10 s and still do after (it was not
/// restarted, though its options allow restarts).
fn stays_dead(tally: &prism::ActorHandle<Tally>, what: &str) -> Result<(), Failed> {
    let start = std::time::Instant::now();
    loop {
        match tally.add(1).get_blocking() {
            Err(e) if e.is_actor_died() => break,
            Err(e) => return Err(format!("{what}: its call failed otherwise: {e}").into()),
            Ok(_) if start.elapsed() > std::time::Duration::from_secs(10) => {
                return Err(format!("{what}: it still answers").into());
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    match tally.add(1).get_blocking() {
        Err(e) if e.is_actor_died() => Ok(()),
        other => Err(format!("{what}: a call after its death: {other:?}").into()),
    }
}

fn another_job_or_the_command_line_kills_a_job_s_actor(
    addr: &str,
    token: &str,
    head_dir: &std::path::Path,
) -> Result<(), Failed> {
    // Each may restart after a crash: a kill must not restart it.
    let make = |name: &str| {
        Tally::options()
            .name(name)
            .namespace("svc")
            .max_restarts(5)
            .try_remote(0)
    };
    let (by_task, by_driver, by_cli) = (make("prey")?, make("prey-2")?, make("prey-cli")?);
    for tally in [&by_task, &by_driver, &by_cli] {
        ensure(tally.add(1).get_blocking()? == 1, "each actor answers")?;
    }
    let (mut other, lines) = another_job(KILLING_JOB, "prey", addr, token)?;
    let said = lines.collect::<Result<Vec<String>, _>>()?;
    let status = other.wait()?;
    ensure(
        status.success(),
        format!("the killing job ended well: {said:?}"),
    )?;
    ensure(
        said.iter().any(|l| l == "by a task: Ok(())"),
        format!("a task of the other job killed the actor: {said:?}"),
    )?;
    ensure(
        said.iter().any(|l| l == "by the driver: Ok(())"),
        format!("the other job's driver killed the actor: {said:?}"),
    )?;
    stays_dead(&by_task, "killed by another job's task")?;
    stays_dead(&by_driver, "killed by another job's driver")?;
    let out = cli(head_dir, &["kill", "prey-cli", "--namespace", "svc"])?;
    ensure(
        out.contains("Killed actor \"prey-cli\""),
        format!("prism kill says it killed the actor: {out}"),
    )?;
    stays_dead(&by_cli, "killed with prism kill")?;
    // A name no actor holds (a killed actor's is released): the command says so.
    let start = std::time::Instant::now();
    let out = loop {
        let out = cli(head_dir, &["kill", "prey", "--namespace", "svc"])?;
        if !out.contains("Killed") || start.elapsed() > std::time::Duration::from_secs(10) {
            break out;
        }
    };
    ensure(
        out.contains("no actor is named \"prey\" in namespace \"svc\""),
        format!("prism kill of a name no actor holds: {out}"),
    )
}

/// Makes the detached actor named `name` in namespace `svc` (the Tally, from 50) and adds 5
/// to it: its count, or why not.
#[remote]
fn make_detached(name: String) -> Result<u64, String> {
    let tally = Tally::options()
        .name(&name)
        .namespace("svc")
        .lifetime(prism::Lifetime::Detached)
        .try_remote(50)
        .map_err(|e| e.to_string())?;
    tally.add(5).get_blocking().map_err(|e| e.to_string())
}

/// The environment variable that makes this test's binary a job that makes detached actors
/// and ends (see [`be_a_detaching_job`]).
const DETACHING_JOB: &str = "PRISM_TEST_DETACHING_JOB";

/// Run as another job on the cluster (by [`a_detached_actor_outlives_its_job`]): makes a
/// detached actor from its driver and one from a task, calls both, and ends.
fn be_a_detaching_job() {
    if std::env::var(DETACHING_JOB).is_err() {
        return;
    }
    prism::init().expect("the detaching job joins the cluster");
    let started = std::time::Instant::now();
    let made = Tally::options()
        .name("kept")
        .namespace("svc")
        .lifetime(prism::Lifetime::Detached)
        .try_remote(prism::put(10u64).expect("a put"));
    println!("made in {} ms", started.elapsed().as_millis());
    let count = (made.as_ref().map_err(|e| e.to_string()))
        .and_then(|tally| tally.add(5).get_blocking().map_err(|e| e.to_string()));
    println!("the driver's: {count:?}");
    let by_task = make_detached::remote("kept-by-a-task".to_string()).get_blocking();
    let by_task = by_task.map_err(|e| e.to_string()).and_then(|count| count);
    println!("a task's: {by_task:?}");
    prism::shutdown();
    std::process::exit(0);
}

fn a_detached_actor_outlives_its_job(addr: &str, token: &str) -> Result<(), Failed> {
    let (mut other, lines) = another_job(DETACHING_JOB, "1", addr, token)?;
    let said: Vec<String> = lines.collect::<Result<_, _>>()?;
    let status = other.wait()?;
    ensure(
        status.success(),
        format!("the detaching job ended well: {said:?}"),
    )?;
    let line = |prefix: &str| said.iter().find(|l| l.starts_with(prefix)).cloned();
    ensure(
        line("the driver's: ").as_deref() == Some("the driver's: Ok(15)"),
        format!("the job's driver makes and calls a detached actor: {said:?}"),
    )?;
    ensure(
        line("a task's: ").as_deref() == Some("a task's: Ok(55)"),
        format!("the job's task makes and calls a detached actor: {said:?}"),
    )?;
    // The job has ended: its detached actors live on, their state kept.
    let kept = prism::get_actor_in::<Tally>("kept", "svc")?;
    ensure(
        kept.add(1).get_blocking()? == 16,
        "the driver's detached actor outlives its job, its count kept",
    )?;
    let by_task = prism::get_actor_in::<Tally>("kept-by-a-task", "svc")?;
    ensure(
        by_task.add(1).get_blocking()? == 56,
        "the task's detached actor outlives its job, its count kept",
    )?;
    // The name is the detached job's: taken for others, found with get_if_exists.
    let again = Tally::options()
        .name("kept")
        .namespace("svc")
        .lifetime(prism::Lifetime::Detached)
        .try_remote(0);
    ensure(
        matches!(&again, Err(prism::Error::ActorNameTaken { holder: Some(job), .. }) if job.starts_with("detached-")),
        format!(
            "the name is held by the detached actors' job: {:?}",
            again.map(|a| a.id())
        ),
    )?;
    let existing = Tally::options()
        .name("kept")
        .namespace("svc")
        .lifetime(prism::Lifetime::Detached)
        .get_if_exists(true)
        .try_remote(0)?;
    ensure(
        existing.add(1).get_blocking()? == 17,
        "get_if_exists gives the detached actor",
    )?;
    // Killed from this job, it dies and its name is free again.
    prism::kill(&kept)?;
    let start = std::time::Instant::now();
    let died = loop {
        match kept.add(1).get_blocking() {
            Err(e) if e.is_actor_died() => break Ok(()),
            Err(e) => break Err(format!("failed otherwise: {e}")),
            Ok(_) if start.elapsed() > std::time::Duration::from_secs(10) => {
                break Err("it still answers 10 s after the kill".to_string());
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    ensure(
        died.is_ok(),
        format!("the killed detached actor's calls fail: {died:?}"),
    )?;
    let start = std::time::Instant::now();
    let mine = loop {
        match Tally::options().name("kept").namespace("svc").try_remote(1) {
            Ok(tally) => break tally,
            Err(e) if start.elapsed() > std::time::Duration::from_secs(10) => return Err(e.into()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    ensure(
        mine.add(1).get_blocking()? == 2,
        "the name is free once the detached actor is killed",
    )?;
    prism::kill(&mine)?;
    prism::kill(&by_task)?;
    Ok(())
}

/// The environment variable that makes this test's binary a second job (see
/// [`be_a_second_job`]): the directory of the marker.
const SECOND_JOB: &str = "PRISM_TEST_SECOND_JOB";

/// How many tasks holding all of alpha each of the two jobs runs.
const HOLDS: usize = 5;

/// Run as a second job on the cluster (by [`two_jobs_share_a_node_and_never_over_commit_it`]):
/// runs its tasks holding all of alpha and prints how many overlapped another.
fn be_a_second_job() {
    let Ok(dir) = std::env::var(SECOND_JOB) else {
        return;
    };
    prism::init().expect("the second job joins the cluster");
    let refs: Vec<ObjectRef<bool>> = (0..HOLDS)
        .map(|_| hold_all_of_alpha::remote(dir.clone()))
        .collect();
    // The first job submits its own once these run.
    let _ = prism::get_blocking(&refs[0]);
    println!("running");
    let overlaps = match prism::get_all_blocking(&refs) {
        Ok(seen) => seen.iter().filter(|o| **o).count().to_string(),
        Err(e) => format!("failed: {e}"),
    };
    println!("overlaps {overlaps}");
    prism::shutdown();
    std::process::exit(0);
}

/// What another job prints, line by line.
type Said = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// Runs this test's binary as another job on the cluster at `addr`, told what to do by
/// `var` = `value`: the process (its input piped) and its output.
fn another_job(
    var: &str,
    value: &str,
    addr: &str,
    token: &str,
) -> Result<(std::process::Child, Said), Failed> {
    let mut job = std::process::Command::new(std::env::current_exe()?)
        .env(var, value)
        .env("PRISM_ADDRESS", addr)
        .env("PRISM_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let out = job.stdout.take().ok_or("the other job's output")?;
    Ok((job, std::io::BufRead::lines(std::io::BufReader::new(out))))
}

/// The lines another job said up to and with `marker` (all, if it never says it).
fn lines_until(lines: &mut Said, marker: &str) -> Result<Vec<String>, Failed> {
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        let end = line == marker;
        said.push(line);
        if end {
            break;
        }
    }
    Ok(said)
}

fn two_jobs_share_a_node_and_never_over_commit_it(addr: &str, token: &str) -> Result<(), Failed> {
    // Each job's driver counts alpha's `alpha` whole; alpha's daemon grants it to one job
    // at a time, so no two of these tasks run there at once.
    let dir = std::env::temp_dir().join(format!("prism-two-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.to_string_lossy().into_owned();
    let (mut second, mut lines) = another_job(SECOND_JOB, &path, addr, token)?;
    // Once the second job's tasks run on alpha, this job's want alpha too.
    let mut said = lines_until(&mut lines, "running")?;
    let refs: Vec<ObjectRef<bool>> = (0..HOLDS)
        .map(|_| hold_all_of_alpha::remote(path.clone()))
        .collect();
    let ours = prism::get_all_blocking(&refs);
    for line in lines {
        said.push(line?);
    }
    let status = second.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (ours, status) = (ours?, status?);
    ensure(
        status.success(),
        format!("the second job ended well: {said:?}"),
    )?;
    let overlaps = ours.iter().filter(|o| **o).count();
    ensure(
        overlaps == 0 && said.iter().any(|l| l == "overlaps 0"),
        format!("no task overlapped another on alpha: ours {overlaps}, the second job's {said:?}"),
    )
}

fn custom_resources_keep_tasks_on_their_node() -> Result<(), Failed> {
    let refs: Vec<ObjectRef<String>> = (0..40).map(|_| on_alpha::remote()).collect();
    let names = prism::get_all_blocking(&refs)?;
    ensure(
        names.iter().all(|n| n == "alpha"),
        format!("tasks needing `alpha` ran on {names:?}"),
    )?;
    let beta: Vec<ObjectRef<String>> = (0..10)
        .map(|_| where_am_i::options().resources("beta", 1.0).remote())
        .collect();
    let names = prism::get_all_blocking(&beta)?;
    ensure(
        names.iter().all(|n| n == "beta"),
        format!("tasks needing `beta` ran on {names:?}"),
    )
}

/// The head's node (on the driver's host) starts its workers with the join and fetches the
/// job's binary from the driver; alpha and beta fetch it with their first work. The driver
/// serves two fetches at once and a node that has the binary is asked first: whichever of
/// alpha and beta starts second gets it from the head's node or the other one (a tree, as a
/// broadcast object spreads, not one copy per node out of the driver).
fn a_node_gets_the_job_s_binary_from_a_node_that_has_it(
    nodes: &[std::path::PathBuf],
    daemons: &[String],
) -> Result<(), Failed> {
    let on_alpha = on_alpha::remote();
    let on_beta = where_am_i::options().resources("beta", 1.0).remote();
    ensure(on_alpha.get_blocking()? == "alpha", "ran on alpha")?;
    ensure(on_beta.get_blocking()? == "beta", "ran on beta")?;
    let fetched: Vec<String> = nodes
        .iter()
        .flat_map(|dir| {
            let logs = common::cluster::logs_in(dir);
            let lines = logs.lines().filter(|l| l.contains("cached a job binary"));
            lines.map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    // The address whole, not as the start of a longer port.
    let names = |line: &str, at: &str| {
        line.match_indices(at).any(|(i, _)| {
            let next = line[i + at.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_digit())
        })
    };
    ensure(
        fetched.iter().any(|l| daemons.iter().any(|d| names(l, d))),
        format!("no node fetched the binary from a node ({daemons:?}): {fetched:#?}"),
    )
}

fn a_fan_out_of_ten_thousand_uses_every_node() -> Result<(), Failed> {
    let refs: Vec<ObjectRef<String>> = (0..10_000).map(|_| where_am_i::remote()).collect();
    let names = prism::get_all_blocking(&refs)?;
    ensure(names.len() == 10_000, "every task answered")?;
    let mut seen: Vec<&str> = names.iter().map(String::as_str).collect();
    seen.sort_unstable();
    seen.dedup();
    ensure(
        seen == ["alpha", "beta", "head"],
        format!("the fan-out ran on {seen:?}"),
    )
}

fn an_actor_on_a_remote_node_keeps_its_state(head_dir: &std::path::Path) -> Result<(), Failed> {
    // Half a `beta`: no other test asks for a fraction, so the half in use is the actor's.
    let tally = Tally::options().resources("beta", 0.5).remote(10);
    let mut last = 0;
    for i in 1..=100 {
        last = tally.add(i).get_blocking()?;
    }
    ensure(last == 10 + 5050, format!("the tally ends at {last}"))?;
    let node = tally.node().get_blocking()?;
    ensure(node == "beta", format!("the actor lives on {node}"))?;
    let mut said = String::new();
    let shown = common::eventually(15, || {
        said = status(head_dir).unwrap_or_default();
        said.lines()
            .any(|l| l.contains(" beta ") && (l.contains("beta 0.5/2") || l.contains("beta 1.5/2")))
    });
    ensure(
        shown,
        format!("prism status shows the actor's half of beta in use:\n{said}"),
    )
}

fn a_task_on_one_node_makes_an_actor_on_another_that_all_find() -> Result<(), Failed> {
    let made = name_a_tally_on_beta::remote("tally-from-alpha".to_string()).get_blocking()?;
    ensure(
        made == ("alpha".to_string(), "beta".to_string(), 105),
        format!("made on alpha, lives on beta, counted: {made:?}"),
    )?;
    let found = prism::get_actor::<Tally>("tally-from-alpha")?;
    ensure(found.add(1).get_blocking()? == 106, "the driver finds it")?;
    let killed = kill_the_tally::remote("tally-from-alpha".to_string()).get_blocking()?;
    ensure(
        killed.is_ok(),
        format!("a task on alpha kills it: {killed:?}"),
    )?;
    ensure(
        common::eventually(15, || {
            prism::get_actor::<Tally>("tally-from-alpha").is_err()
        }),
        "the killed actor's name is free again",
    )?;
    let ran = use_an_alpha_group::remote().get_blocking()?;
    ensure(
        ran.as_deref() == Ok("alpha"),
        format!("a task on beta makes a group on alpha: {ran:?}"),
    )
}

fn a_large_object_made_on_one_node_is_read_on_another(
    head_dir: &std::path::Path,
) -> Result<(), Failed> {
    const LEN: u64 = 100 << 20;
    let blob = make_blob::options().resources("alpha", 1.0).remote(LEN, 7);
    // Several readers on beta at once: one transfer into beta's store serves them all.
    let readers: Vec<_> = (0..3)
        .map(|_| {
            digest::options()
                .resources("beta", 1.0)
                .remote(blob.clone())
        })
        .collect();
    let want = expected_digest(LEN, 7);
    for reader in readers {
        let (len, sum, node) = reader.get_blocking()?;
        ensure(node == "beta", format!("the reader ran on {node}"))?;
        ensure(
            (len, sum) == want,
            format!("beta read {len} bytes, sum {sum}; want {want:?}"),
        )?;
    }
    // One transfer into beta served the three readers (beta pulls nothing else in this run).
    let mut said = String::new();
    let once = common::eventually(15, || {
        said = status(head_dir).unwrap_or_default();
        said.lines()
            .any(|l| l.contains(" beta ") && l.contains("pulled 1 object, 100.0 MiB"))
    });
    ensure(once, format!("beta pulled the blob once:\n{said}"))?;
    // The driver reads it too (pulled into its own store).
    let bytes = prism::get_archived_blocking(&blob)?;
    ensure(bytes.len() as u64 == LEN, "the driver reads every byte")?;
    ensure(
        bytes
            .iter()
            .enumerate()
            .take(1 << 16)
            .all(|(i, b)| *b == (i as u8).wrapping_mul(31).wrapping_add(7)),
        "the driver reads the right bytes",
    )?;
    // And an object the driver put travels to a node.
    let local = prism::put((0..(1u32 << 20)).map(|i| i as u8).collect::<Vec<u8>>())?;
    let (len, _, node) = digest::options()
        .resources("alpha", 1.0)
        .remote(local)
        .get_blocking()?;
    ensure(
        len == 1 << 20 && node == "alpha",
        format!("alpha read {len} bytes of the driver's object on {node}"),
    )
}

fn a_stream_made_on_a_node_reaches_the_driver_and_a_task() -> Result<(), Failed> {
    const LEN: u32 = 1 << 20;
    let mut count = 0;
    for (i, item) in alpha_blocks::remote(6, LEN).into_iter().enumerate() {
        let (node, bytes) = item?.get_blocking()?;
        ensure(node == "alpha", format!("item {i} was made on {node}"))?;
        ensure(
            bytes.len() == LEN as usize && bytes.iter().all(|&b| b == i as u8),
            format!("item {i} holds its bytes"),
        )?;
        count += 1;
    }
    ensure(count == 6, format!("{count} items of 6"))?;
    let want: u64 = (0..2_000).sum();
    let got = sum_of_alpha_counts::remote(2_000).get_blocking()?;
    ensure(
        got == want,
        format!("a task on alpha summed its stream to {got}"),
    )
}

fn a_strict_spread_group_puts_each_bundle_on_its_own_node() -> Result<(), Failed> {
    let group = prism::placement_group(
        vec![prism::Bundle::new().cpus(1.0); 3],
        prism::PlacementStrategy::StrictSpread,
    )?;
    ensure(
        group.wait_blocking(std::time::Duration::from_secs(30))?,
        "three bundles on three nodes",
    )?;
    let names: Vec<ObjectRef<String>> = (0..3)
        .map(|i| where_am_i::options().placement(&group, i).remote())
        .collect();
    let mut names = prism::get_all_blocking(&names)?;
    prism::remove_placement_group(&group)?;
    names.sort_unstable();
    ensure(
        names == ["alpha", "beta", "head"],
        format!("the bundles' tasks ran on {names:?}"),
    )
}

fn intruders_are_refused_while_a_job_runs(
    head_dir: &std::path::Path,
    daemons: &[String],
) -> Result<(), Failed> {
    let refs: Vec<ObjectRef<String>> = (0..2_000).map(|_| where_am_i::remote()).collect();
    // A wrong token (another cluster's: a fresh head's), and garbage datagrams at every daemon.
    let stranger = Host::new("jobs-stranger");
    stranger.start_head(&["--num-cpus", "1", "--port", "0"]);
    let out = std::process::Command::new(common::cluster::program())
        .args(["status", "--token", &stranger.file("token")])
        .env("PRISM_SESSION_DIR", head_dir)
        .env_remove("PRISM_ADDRESS")
        .env_remove("PRISM_TOKEN")
        .output()?;
    drop(stranger);
    ensure(
        !out.status.success(),
        format!(
            "a wrong token is refused: {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    )?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    for addr in daemons {
        for i in 0..500u32 {
            let junk: Vec<u8> = (0..1200u32)
                .map(|j| (i.wrapping_mul(7919) ^ j) as u8)
                .collect();
            let _ = socket.send_to(&junk, addr);
        }
    }
    for addr in daemons {
        let reason = connect_without_certificate(&head_dir.join("token"), addr)?;
        ensure(
            reason.contains("a client certificate from the cluster's CA is required"),
            format!("a client without a certificate at {addr} was told: {reason}"),
        )?;
    }
    let names = prism::get_all_blocking(&refs)?;
    ensure(names.len() == 2_000, "the job finished")
}

/// Dials `addr` on the cluster protocol with the right token but no certificate; returns why
/// the daemon closed the connection.
fn connect_without_certificate(token: &std::path::Path, addr: &str) -> Result<String, Failed> {
    use prism_transport::{quic, tls};
    let token: tls::JoinToken = std::fs::read_to_string(token)?.trim().parse()?;
    let addr: std::net::SocketAddr = addr.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tls = token.client_config(quic::CLUSTER_ALPN)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let endpoint = quic::client_endpoint("127.0.0.1:0".parse()?)?;
        let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        let connecting = endpoint.connect_with(config, addr, tls::CLUSTER_SERVER_NAME)?;
        let reason = match connecting.await {
            Ok(connection) => connection.closed().await.to_string(),
            Err(e) => e.to_string(),
        };
        Ok::<_, Failed>(reason)
    })
}

/// `prism status` as the head's host sees it.
fn status(head_dir: &std::path::Path) -> Result<String, Failed> {
    cli(head_dir, &["status"])
}

/// What `prism ARGS` prints on the head's host (its errors too, after).
fn cli(head_dir: &std::path::Path, args: &[&str]) -> Result<String, Failed> {
    let out = std::process::Command::new(common::cluster::program())
        .args(args)
        .env("PRISM_SESSION_DIR", head_dir)
        .env("PRISM_TEST_AS_CLI", "1")
        .env_remove("PRISM_ADDRESS")
        .env_remove("PRISM_TOKEN")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The driver reports its tasks to the head: `prism list|summary|get` on the head's host, the
/// dashboard's tasks pages and JSON, and `/metrics` show them.
fn the_head_shows_the_jobs_tasks(head_dir: &std::path::Path) -> Result<(), Failed> {
    let refs: Vec<ObjectRef<u32>> = (0..20)
        .map(|i| traced_on_alpha::options().resources("alpha", 1.0).remote(i))
        .collect();
    ensure(
        prism::get_all_blocking(&refs)?.iter().sum::<u32>() == 380,
        "the sum",
    )?;
    let failed = fails_on_purpose::remote().get_blocking();
    ensure(failed.is_err(), "the task fails")?;
    // The summary names the function in full and counts its 20 runs.
    let mut summary = String::new();
    let counted = common::eventually(15, || {
        summary = cli(head_dir, &["summary", "tasks", "--format", "json"]).unwrap_or_default();
        summary.contains("traced_on_alpha") && summary.contains("\"FINISHED\": 20")
    });
    ensure(counted, format!("prism summary tasks:\n{summary}"))?;
    let summaries: serde_json::Value = serde_json::from_str(&summary)?;
    let traced = summaries
        .as_array()
        .and_then(|all| {
            all.iter().find(|s| {
                s["function"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("traced_on_alpha"))
            })
        })
        .ok_or("the summary of traced_on_alpha")?;
    let function = traced["function"].as_str().unwrap_or_default().to_string();
    let job = traced["job"].as_str().unwrap_or_default().to_string();
    // Each task with its node (records may follow the counts by a report or two, behind
    // the other cases' tasks); the failed one with its error.
    let filter = format!("function={function}");
    let mut listed = String::new();
    common::eventually(15, || {
        let args = ["list", "tasks", "--filter", &filter, "--format", "json"];
        listed = cli(head_dir, &args).unwrap_or_default();
        let parsed = serde_json::from_str::<serde_json::Value>(&listed);
        parsed.is_ok_and(|tasks| tasks.as_array().is_some_and(|t| t.len() == 20))
    });
    let tasks: serde_json::Value =
        serde_json::from_str(&listed).map_err(|e| format!("{e}: {listed}"))?;
    let tasks = tasks.as_array().ok_or("an array")?;
    ensure(
        tasks.len() == 20
            && tasks.iter().all(|t| {
                t["state"] == "FINISHED" && t["node"] == "alpha" && t["job"] == job.as_str()
            }),
        listed.clone(),
    )?;
    let mut failed = String::new();
    let listed = common::eventually(15, || {
        failed = cli(head_dir, &["list", "tasks", "--filter", "state=failed"]).unwrap_or_default();
        failed.contains("fails_on_purpose")
    });
    ensure(
        listed && failed.starts_with("TASK_ID") && failed.contains("fails on purpose"),
        failed.clone(),
    )?;
    let id = tasks[0]["task_id"].as_str().ok_or("an id")?;
    let got = cli(head_dir, &["get", "task", id])?;
    let got: serde_json::Value = serde_json::from_str(&got).map_err(|e| format!("{e}: {got}"))?;
    ensure(
        got["runs"][0]["node"] == "alpha"
            && got["runs"][0]["run_us"].is_u64()
            && got["events"].as_array().is_some_and(|e| e.len() >= 4),
        format!("{got}"),
    )?;
    // Actors and objects counted at the head: an actor of this case and a put it holds.
    let tally = Tally::remote(1);
    tally.add(1).get_blocking()?;
    let held = prism::put_ref(&vec![3u8; 5000])?;
    let mut counted = String::new();
    let seen = common::eventually(15, || {
        let actors = cli(head_dir, &["summary", "actors"]).unwrap_or_default();
        let objects = cli(head_dir, &["summary", "objects"]).unwrap_or_default();
        counted = format!("{actors}\n{objects}");
        actors
            .lines()
            .any(|l| l.contains("Tally") && l.contains("ALIVE"))
            && objects
                .lines()
                .any(|l| l.starts_with("put ") && l.contains("IN_MEMORY"))
    });
    ensure(seen, format!("prism summary actors, objects:\n{counted}"))?;
    // Each object of a driver on a cluster, from the driver's host (by its pid).
    let me = std::process::id().to_string();
    let out = std::process::Command::new(common::cluster::program())
        .args(["list", "objects", "--pid", &me, "--format", "json"])
        .env("PRISM_TEST_AS_CLI", "1")
        .output()?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let objects: serde_json::Value =
        serde_json::from_str(&listed).map_err(|e| format!("{e}: {listed}"))?;
    let put_listed = objects.as_array().is_some_and(|all| {
        all.iter()
            .any(|o| o["function"] == "put" && o["size_bytes"].as_u64() >= Some(5000))
    });
    ensure(put_listed, listed.to_string())?;
    drop((tally, held));
    // The job's timeline from the head's records: a slice per run, named by its function.
    let trace_path = head_dir.join("timeline.json");
    let wrote = cli(
        head_dir,
        &["timeline", "--output", trace_path.to_str().ok_or("a path")?],
    )?;
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace_path)?)?;
    let runs = trace["traceEvents"].as_array().map_or(0, |events| {
        let named = |e: &&serde_json::Value| e["name"] == function.as_str() && e["ph"] == "X";
        events.iter().filter(named).count()
    });
    ensure(runs == 20, format!("{runs} slices of {function}: {wrote}"))?;
    // The dashboard: its pages and JSON, with the token as a header or (a browser's) cookie.
    let dashboard = std::fs::read_to_string(head_dir.join("dashboard"))?;
    let token = std::fs::read_to_string(head_dir.join("token"))?;
    let (token, dashboard) = (token.trim(), dashboard.trim());
    let page_url = format!("{dashboard}/tasks?function={function}");
    let (code, page) = common::cluster::http_get(&page_url, Some(token));
    ensure(
        code == 200 && page.contains("FINISHED 20") && page.contains("/task?job="),
        format!("{code} {page}"),
    )?;
    let api = format!("{dashboard}/api/tasks?function={function}&limit=5");
    let (code, body) = common::cluster::http_get(&api, Some(token));
    let answer: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
    ensure(
        answer["matched"] == 20 && answer["tasks"].as_array().map(Vec::len) == Some(5),
        body.clone(),
    )?;
    let (code, metrics) = common::cluster::http_get(&format!("{dashboard}/metrics"), Some(token));
    let labels = format!("job=\"{job}\",function=\"{function}\"");
    for line in [
        format!("prism_tasks{{{labels},state=\"FINISHED\"}} 20"),
        format!("prism_task_run_seconds_count{{{labels}}} 20"),
        format!("prism_task_schedule_seconds_bucket{{{labels},le=\"+Inf\"}} 20"),
    ] {
        ensure(
            code == 200 && metrics.contains(&line),
            format!("{line} in\n{metrics}"),
        )?;
    }
    ensure(
        metrics.contains("prism_workers{node=\"alpha\"}"),
        metrics.clone(),
    )?;
    // A browser logs in with ?token=: the cookie is set and the token leaves the address.
    let login = format!("{dashboard}/tasks?state=FINISHED&token={token}");
    let (code, head, _) = common::cluster::http(&login, &[]);
    ensure(
        code == 303
            && head.contains("location: /tasks?state=FINISHED")
            && head.contains(&format!(
                "set-cookie: prism_token={token}; Path=/; Max-Age=28800; HttpOnly; SameSite=Strict"
            )),
        format!("{code} {head}"),
    )?;
    let cookie = format!("Cookie: prism_token={token}");
    let (code, _, page) =
        common::cluster::http(&format!("{dashboard}/tasks?state=FINISHED"), &[cookie]);
    ensure(
        code == 200 && page.contains("traced_on_alpha"),
        format!("{code} {page}"),
    )?;
    let wrong = format!("{dashboard}/tasks?token=prism1-wrong");
    let (code, head, _) = common::cluster::http(&wrong, &[]);
    ensure(
        code == 401 && !head.contains("set-cookie"),
        format!("{code} {head}"),
    )
}

fn a_task_that_fits_nowhere_shows_as_pending_demand(
    head_dir: &std::path::Path,
) -> Result<(), Failed> {
    let stuck = where_am_i::options().resources("gamma", 2.0).remote();
    let mut last = String::new();
    let shown = common::eventually(15, || {
        last = status(head_dir).unwrap_or_default();
        last.contains("gamma: 2") && last.contains("infeasible")
    });
    prism::cancel(&stuck)?;
    ensure(shown, format!("prism status says:\n{last}"))?;
    let cleared = common::eventually(15, || {
        last = status(head_dir).unwrap_or_default();
        last.contains("Pending demands: none")
    });
    ensure(
        cleared,
        format!("after the cancel, prism status says:\n{last}"),
    )
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let args = Arguments::from_args();
    be_a_second_job();
    be_a_naming_job();
    be_a_detaching_job();
    be_a_killing_job();
    let (head, addr, token) = common::cluster::head("jobs-head", "2");
    let alpha = Host::new("jobs-alpha");
    let alpha_said = alpha.join(
        &addr,
        &token,
        "127.0.0.2",
        &[
            "--num-cpus",
            "2",
            "--resources",
            "alpha=4",
            "--name",
            "alpha",
        ],
    );
    let beta = Host::new("jobs-beta");
    let beta_said = beta.join(
        &addr,
        &token,
        "127.0.0.3",
        &["--num-cpus", "1", "--resources", "beta=2", "--name", "beta"],
    );
    let mut daemons: Vec<String> = vec![addr.clone()];
    for started in [&alpha_said, &beta_said] {
        if let Some(at) = started
            .split(" at ")
            .nth(1)
            .and_then(|r| r.split(',').next())
        {
            daemons.push(at.to_string());
        }
    }
    let config = prism::Config::new()
        .address(addr.clone())
        .token(token.clone());
    prism::init_with(config).expect("join the cluster");

    let cases: [Case; 5] = [
        (
            "a_task_on_one_node_makes_an_actor_on_another_that_all_find",
            a_task_on_one_node_makes_an_actor_on_another_that_all_find,
        ),
        (
            "a_stream_made_on_a_node_reaches_the_driver_and_a_task",
            a_stream_made_on_a_node_reaches_the_driver_and_a_task,
        ),
        (
            "a_strict_spread_group_puts_each_bundle_on_its_own_node",
            a_strict_spread_group_puts_each_bundle_on_its_own_node,
        ),
        (
            "custom_resources_keep_tasks_on_their_node",
            custom_resources_keep_tasks_on_their_node,
        ),
        (
            "a_fan_out_of_ten_thousand_uses_every_node",
            a_fan_out_of_ten_thousand_uses_every_node,
        ),
    ];
    let mut trials: Vec<Trial> = cases
        .into_iter()
        .map(|(name, body)| Trial::test(name, body))
        .collect();
    // Cases that read `prism status` on the head's host.
    type StatusCase = (&'static str, fn(&std::path::Path) -> Result<(), Failed>);
    let with_status: [StatusCase; 4] = [
        (
            "the_head_shows_the_jobs_tasks",
            the_head_shows_the_jobs_tasks,
        ),
        (
            "an_actor_on_a_remote_node_keeps_its_state",
            an_actor_on_a_remote_node_keeps_its_state,
        ),
        (
            "a_large_object_made_on_one_node_is_read_on_another",
            a_large_object_made_on_one_node_is_read_on_another,
        ),
        (
            "a_task_that_fits_nowhere_shows_as_pending_demand",
            a_task_that_fits_nowhere_shows_as_pending_demand,
        ),
    ];
    for (name, body) in with_status {
        let dir = head.dir.clone();
        trials.push(Trial::test(name, move || body(&dir)));
    }
    let (at, key) = (addr.clone(), token.clone());
    trials.push(Trial::test(
        "names_are_unique_across_the_jobs_of_a_namespace",
        move || names_are_unique_across_the_jobs_of_a_namespace(&at, &key),
    ));
    let (at, key, head_dir) = (addr.clone(), token.clone(), head.dir.clone());
    trials.push(Trial::test(
        "another_job_or_the_command_line_kills_a_job_s_actor",
        move || another_job_or_the_command_line_kills_a_job_s_actor(&at, &key, &head_dir),
    ));
    let (at, key) = (addr.clone(), token.clone());
    trials.push(Trial::test(
        "a_detached_actor_outlives_its_job",
        move || a_detached_actor_outlives_its_job(&at, &key),
    ));
    let (at, key) = (addr.clone(), token.clone());
    trials.push(Trial::test(
        "two_jobs_share_a_node_and_never_over_commit_it",
        move || two_jobs_share_a_node_and_never_over_commit_it(&at, &key),
    ));
    let (nodes, sources) = ([alpha.dir.clone(), beta.dir.clone()], daemons.clone());
    trials.push(Trial::test(
        "a_node_gets_the_job_s_binary_from_a_node_that_has_it",
        move || a_node_gets_the_job_s_binary_from_a_node_that_has_it(&nodes, &sources),
    ));
    let head_dir = head.dir.clone();
    trials.push(Trial::test(
        "intruders_are_refused_while_a_job_runs",
        move || intruders_are_refused_while_a_job_runs(&head_dir, &daemons),
    ));
    let conclusion = libtest_mimic::run(&args, trials);
    prism::shutdown();
    drop((alpha, beta, head));
    conclusion.exit()
}
