//! Workers own the tasks they submit, with real processes: a head on 127.0.0.1 (where the
//! test binary is the driver) and a node `alpha` on 127.0.0.2. A task on alpha submits ten
//! thousand children that only alpha can run: they run on workers alpha's daemon starts and
//! leases to it itself, and their specs, values, ends and leases never reach the driver,
//! which hears only of the parent's own blocking and end; their task events go from alpha's
//! daemon to the head, which lists them with their parent. When alpha
//! is full, its owners are leased workers on the head's node: their pushes and ends pass
//! between the two daemons, small values inside, large ones pulled (a result by the owner's
//! node, whereupon the copy where it was made goes; an argument by the leased worker's
//! node, whose copy goes when the owner lets the value go), and still past the driver. A
//! leased worker that
//! dies mid-run costs its owner a retry, not the job; an owner that dies has the worker
//! leased to it on the other node killed. Nesting deeper than alpha's process cap finishes on
//! the workers alpha's daemon leases (a blocked one runs what it waits for on top), and so does
//! nesting whose tasks spill to the head's node. A task's calls to an actor go straight to the
//! actor's worker, on alpha through alpha's daemon alone, to the head's node between the two
//! daemons, in order and past the driver. Every daemon is stopped when the run ends.

mod common;

use common::cluster::Host;
use common::ensure;
use libtest_mimic::{Arguments, Failed, Trial};
use prism::{ObjectRef, remote};

/// Runs only where there are `slot`s: on alpha (the head's node could take plain tasks).
#[remote(resources(slot = 1))]
fn where_am_i(i: u64) -> (String, u64) {
    (prism::node_name().unwrap_or_default(), i)
}

/// How many of the children `ran` ran on each node (by name), and the sum of their numbers.
fn tally(ran: Vec<(String, u64)>) -> (Vec<(String, u64)>, u64) {
    let mut nodes: Vec<(String, u64)> = Vec::new();
    let mut sum = 0;
    for (node, i) in ran {
        sum += i;
        match nodes.iter_mut().find(|(n, _)| *n == node) {
            Some((_, count)) => *count += 1,
            None => nodes.push((node, 1)),
        }
    }
    nodes.sort();
    (nodes, sum)
}

/// What `run` returned, and how many messages the driver received from workers meanwhile.
fn heard_during<T>(run: impl FnOnce() -> Result<T, Failed>) -> Result<(T, u64), Failed> {
    let before = prism::worker_messages_received()?;
    let out = run()?;
    Ok((out, prism::worker_messages_received()? - before))
}

/// A millisecond's work anywhere.
#[remote]
fn where_plain(i: u64) -> (String, u64) {
    std::thread::sleep(std::time::Duration::from_millis(1));
    (prism::node_name().unwrap_or_default(), i)
}

/// Submits `n` children that any node can run: how many ran on each node, and their sum.
#[remote(resources(alpha = 1))]
fn spread_out(n: u64) -> (Vec<(String, u64)>, u64) {
    let refs: Vec<ObjectRef<(String, u64)>> = (0..n).map(where_plain::remote).collect();
    tally(prism::get_all_blocking(&refs).expect("children succeed"))
}

/// 256 KiB of `byte`: a value in shared memory (above the 100 KiB that go inline), owned by
/// the task that asked for it.
#[remote]
fn blob(byte: u8) -> Vec<u8> {
    vec![byte; 256 << 10]
}

/// A millisecond's work on `data` anywhere: the node it ran on, the sum of `data`, and a
/// value of 200 kB (larger than what goes inline) made of `i`.
#[remote]
fn weigh(data: Vec<u8>, i: u64) -> (String, u64, Vec<u8>) {
    std::thread::sleep(std::time::Duration::from_millis(1));
    let sum = data.iter().map(|&b| u64::from(b)).sum();
    (
        prism::node_name().unwrap_or_default(),
        sum,
        vec![i as u8; 200_000],
    )
}

/// Submits `n` children of a large argument it owns, each returning a large value: the
/// nodes they ran on, or what a child got or gave wrong.
#[remote(resources(alpha = 1))]
fn spread_large(n: u64) -> Result<Vec<String>, String> {
    let data = blob::remote(3);
    let refs: Vec<_> = (0..n).map(|i| weigh::remote(&data, i)).collect();
    let ran = prism::get_all_blocking(&refs).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for (i, (node, sum, made)) in ran.into_iter().enumerate() {
        if sum != 3 * (256 << 10) {
            return Err(format!("child {i} on {node} summed its argument to {sum}"));
        }
        if made.len() != 200_000 || made.iter().any(|&b| b != i as u8) {
            return Err(format!("child {i} on {node} returned a wrong value"));
        }
        nodes.push(node);
    }
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// 130 MiB of `byte`, made only on the head's node: more than an end between two nodes
/// carried inside it (128 MiB), so it stays in that node's store until its owner's node
/// pulls it.
#[remote(resources(far = 1))]
fn far_blob(byte: u8) -> Vec<u8> {
    vec![byte; 130 << 20]
}

/// On alpha: reads a child's value made on the head's node. Its length, whether every byte
/// is right, and the name its segment had there.
#[remote(resources(alpha = 1))]
fn read_far(byte: u8) -> (u64, bool, String) {
    let made = far_blob::remote(byte);
    let id = made.id();
    let segment = format!("{:x}.{}.{}", id.task.owner, id.task.seq, id.index);
    let value = made.get_blocking().expect("the child's value");
    (
        value.len() as u64,
        value.iter().all(|&b| b == byte),
        segment,
    )
}

/// `mib` MiB of `byte` (a value in shared memory, owned by the task that asked for it).
#[remote]
fn blob_of(byte: u8, mib: usize) -> Vec<u8> {
    vec![byte; mib << 20]
}

/// On the head's node only: the sum of `data`.
#[remote(resources(far = 1))]
fn far_sum(data: Vec<u8>) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

/// Writes the name of `data`'s segment to `dir/file`: aside, then renamed, so the test never
/// reads a file made but not yet written.
fn write_segment_name(dir: &str, file: &str, data: &ObjectRef<Vec<u8>>) {
    let id = data.id();
    let segment = format!("{:x}.{}.{}", id.task.owner, id.task.seq, id.index);
    let part = format!("{dir}/{file}.part");
    std::fs::write(&part, segment).expect("write the segment's name");
    std::fs::rename(part, format!("{dir}/{file}")).expect("name the segment's file");
}

/// Writes the name of `data`'s segment to `dir/segment`, and holds it until `dir/go` exists
/// (up to 60 s).
fn name_and_hold(dir: &str, data: &ObjectRef<Vec<u8>>) {
    write_segment_name(dir, "segment", data);
    let go = std::path::PathBuf::from(format!("{dir}/go"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// On alpha: passes a value it owns to a child on the head's node; writes the value's
/// segment name to `dir/segment`, and holds the value until `dir/go` exists. The child's sum.
#[remote(resources(alpha = 1))]
fn lend_far(dir: String) -> u64 {
    let data = blob_of::remote(2, 20);
    let sum = far_sum::remote(&data)
        .get_blocking()
        .expect("the child's sum");
    name_and_hold(&dir, &data);
    sum
}

/// Whether a file named `name` is in a store of daemon `pid` (not its pool of freed
/// segments).
fn in_store_of(pid: i32, name: &str) -> bool {
    fn walk(dir: &std::path::Path, name: &str) -> bool {
        (std::fs::read_dir(dir).into_iter().flatten().flatten()).any(|entry| {
            let path = entry.path();
            match path.is_dir() {
                true => entry.file_name() != "pool" && walk(&path, name),
                false => entry.file_name() == name,
            }
        })
    }
    (std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten())
    .any(|entry| {
        let dir = entry.file_name().to_string_lossy().into_owned();
        dir.starts_with(&format!("prism-{pid}-")) && walk(&entry.path(), name)
    })
}

/// `mib` MiB of `byte`, made on the head's node only.
#[remote(resources(far = 1))]
fn far_blob_of(byte: u8, mib: usize) -> Vec<u8> {
    vec![byte; mib << 20]
}

/// Any node: where it ran, and the sum of `data`.
#[remote]
fn sum_where(data: Vec<u8>) -> (String, u64) {
    let node = prism::node_name().unwrap_or_default();
    (node, data.iter().map(|&b| u64::from(b)).sum())
}

/// `mib` MiB of `byte`, made on alpha only.
#[remote(resources(slot = 1))]
fn alpha_blob_of(byte: u8, mib: usize) -> Vec<u8> {
    vec![byte; mib << 20]
}

/// Values a worker keeps past the task that made them (a cache of its own).
static KEPT: std::sync::Mutex<Vec<ObjectRef<Vec<u8>>>> = std::sync::Mutex::new(Vec::new());

/// On alpha: has two 4 MiB values made on alpha, keeps one past its end (`KEPT`) and
/// returns the other (which the driver takes over); writes their segments' names to
/// `dir/kept` and `dir/handed`. Its worker's pid, and the returned value.
#[remote(resources(alpha = 1), max_retries = 0)]
fn keeps_one_and_returns_one(dir: String) -> (u32, ObjectRef<Vec<u8>>) {
    let (kept, handed) = (alpha_blob_of::remote(5, 4), alpha_blob_of::remote(6, 4));
    for (file, value) in [("kept", &kept), ("handed", &handed)] {
        value.get_blocking().expect("the value is made");
        write_segment_name(&dir, file, value);
    }
    KEPT.lock().expect("no holder panicked").push(kept);
    (std::process::id(), handed)
}

/// Only on alpha: where it ran, and the sum of `data`.
#[remote(resources(slot = 1))]
fn sum_on_alpha(data: Vec<u8>) -> (String, u64) {
    let node = prism::node_name().unwrap_or_default();
    (node, data.iter().map(|&b| u64::from(b)).sum())
}

/// On alpha: has 20 MiB made on the head's node (left there, too large for the end) and
/// read by a task any node could run (`on_alpha`: only alpha); writes the value's segment
/// name to `dir/segment` and holds the value until `dir/go` exists. Where the reader ran,
/// and its sum.
#[remote(resources(alpha = 1))]
fn reads_where_made(dir: String, on_alpha: bool) -> (String, u64) {
    let data = far_blob_of::remote(3, 20);
    let read = match on_alpha {
        true => sum_on_alpha::remote(&data),
        false => sum_where::remote(&data),
    };
    let read = read.get_blocking().expect("the reader's sum");
    name_and_hold(&dir, &data);
    read
}

/// `mib` MiB of `byte`, made on the head's node only, beside an actor holding half its `far`.
#[remote(resources(far = 0.5))]
fn far_half_blob_of(byte: u8, mib: usize) -> Vec<u8> {
    vec![byte; mib << 20]
}

/// On alpha: has 20 MiB made on the head's node (left there) read by a call to an actor it
/// made there; writes the value's segment name to `dir/segment` and holds the value until
/// `dir/go` exists. Where the actor ran, and what it counted.
#[remote(resources(alpha = 1))]
fn an_actor_reads_where_made(dir: String) -> (String, u64) {
    let data = far_half_blob_of::remote(4, 20);
    let tally = Tally::options()
        .num_cpus(0.0)
        .resources("far", 0.5)
        .remote();
    let (count, node) = tally
        .count(&data)
        .get_blocking()
        .expect("the actor's count");
    name_and_hold(&dir, &data);
    (node, count)
}

/// Dies (as if killed) the first time it runs for `marker`, then returns `i`.
#[remote(max_retries = 2)]
fn dies_once(marker: String, i: u64) -> u64 {
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        std::process::abort();
    }
    i
}

/// Submits `n` children of which the one for `marker` kills its worker once.
#[remote(resources(alpha = 1))]
fn survives_a_dead_leased_worker(marker: String, n: u64) -> u64 {
    let refs: Vec<ObjectRef<u64>> = (0..n)
        .map(|i| dies_once::remote(format!("{marker}.{}", i % 50), i))
        .collect();
    prism::get_all_blocking(&refs)
        .expect("the children outlive their worker")
        .iter()
        .sum()
}

/// Writes its node's name to `started`, sleeps `ms`, then makes `finished`.
#[remote]
fn slow_somewhere(started: String, finished: String, ms: u64) -> u64 {
    let _ = std::fs::write(started, prism::node_name().unwrap_or_default());
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = std::fs::write(finished, b"");
    ms
}

/// Takes all of alpha (so its child is leased a worker on the head's node); the first run
/// dies once that child runs, the run after says so.
#[remote(num_cpus = 2, resources(alpha = 1), max_retries = 1)]
fn dies_while_its_child_runs_elsewhere(dir: String) -> String {
    if !common::first_run(&dir) {
        return "run again".into();
    }
    let started = format!("{dir}/child-started");
    let _child = slow_somewhere::remote(started.clone(), format!("{dir}/child-finished"), 2_000);
    common::wait_for_file(&started);
    std::process::abort();
}

/// An actor that lives where it is placed (the head's node, by `far`).
#[prism::actor]
struct Tally {
    value: u64,
}

#[prism::actor]
impl Tally {
    fn new() -> Self {
        Tally { value: 0 }
    }

    fn inc(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    /// Counts `bytes` in; returns the new count and the node.
    fn count(&mut self, bytes: Vec<u8>) -> (u64, String) {
        self.value += bytes.len() as u64;
        (self.value, prism::node_name().unwrap_or_default())
    }

    /// Counts `bytes` in; returns as many bytes of the new count's low byte, and the node.
    fn weigh(&mut self, bytes: Vec<u8>) -> (u64, Vec<u8>, String) {
        self.value += bytes.len() as u64;
        let node = prism::node_name().unwrap_or_default();
        (self.value, vec![self.value as u8; bytes.len()], node)
    }
}

/// An actor that submits tasks and waits for them.
#[prism::actor]
struct Spawner;

#[prism::actor]
impl Spawner {
    fn new() -> Self {
        Spawner
    }

    /// Submits `n` children that only alpha can run and gathers them: how many ran on each
    /// node, and their sum.
    fn fan(&mut self, n: u64) -> (Vec<(String, u64)>, u64) {
        let refs: Vec<ObjectRef<(String, u64)>> = (0..n).map(where_am_i::remote).collect();
        tally(prism::get_all_blocking(&refs).expect("children succeed"))
    }
}

fn an_actor_holding_a_node_s_cpus_lends_them_to_its_children_while_it_waits() -> Result<(), Failed>
{
    // Both of alpha's CPUs are the actor's: its children run there only on them, lent while
    // the call waits for them (by its node, which keeps the call's blocking from the driver).
    let spawner = Spawner::options()
        .num_cpus(2.0)
        .resources("slot", 0.5)
        .remote();
    let (nodes, sum) = spawner.fan(200).get_blocking()?;
    ensure(sum == (0..200u64).sum::<u64>(), "every child answered")?;
    ensure(
        nodes == [("alpha".to_string(), 200)],
        format!("the children ran on alpha: {nodes:?}"),
    )?;
    prism::kill(&spawner)?;
    Ok(())
}

/// On alpha: calls the actor `n` times without waiting, then gathers the values (which must
/// count up from `from`); then passes it 2 MiB and takes 2 MiB back. Where it ran, where the
/// actor ran, or what went wrong.
#[remote(resources(alpha = 1))]
fn call_from_alpha(
    tally: prism::ActorHandle<Tally>,
    n: u64,
    from: u64,
) -> Result<(String, String), String> {
    let calls: Vec<ObjectRef<u64>> = (0..n).map(|_| tally.inc()).collect();
    let values = prism::get_all_blocking(&calls).map_err(|e| e.to_string())?;
    if let Some(i) = (0..values.len()).find(|&i| values[i] != from + i as u64) {
        return Err(format!("call {i} returned {} (out of order)", values[i]));
    }
    let big = vec![5u8; 2 << 20];
    let (count, back, node) = tally.weigh(big).get_blocking().map_err(|e| e.to_string())?;
    let expected = from + n - 1 + (2 << 20);
    if count != expected || back.len() != 2 << 20 || back.iter().any(|&b| b != expected as u8) {
        return Err(format!(
            "the large call counted {count}, returned {} bytes",
            back.len()
        ));
    }
    Ok((prism::node_name().unwrap_or_default(), node))
}

/// On alpha: calls the actor `n` times and gathers the values (counting up from 1), and says
/// where the actor ran.
#[remote(resources(alpha = 1))]
fn call_near(tally: prism::ActorHandle<Tally>, n: u64) -> Result<String, String> {
    let calls: Vec<ObjectRef<u64>> = (0..n).map(|_| tally.inc()).collect();
    let values = prism::get_all_blocking(&calls).map_err(|e| e.to_string())?;
    if values != (1..=n).collect::<Vec<u64>>() {
        return Err("the calls ran out of order".into());
    }
    let (_, _, node) = tally
        .weigh(Vec::new())
        .get_blocking()
        .map_err(|e| e.to_string())?;
    Ok(node)
}

fn a_task_on_a_node_calls_an_actor_on_another_straight_and_off_the_driver(
    head: &Host,
) -> Result<(), Failed> {
    // An actor on alpha too: its calls from alpha pass through alpha's daemon alone.
    let near = Tally::options().resources("slot", 0.5).remote();
    let (ran, heard) = heard_during(|| Ok(call_near::remote(near, 1_000).get_blocking()?))?;
    let node = ran.map_err(|e| format!("the calls on alpha: {e}"))?;
    ensure(node == "alpha", format!("the near actor ran on {node}"))?;
    println!("driver messages for 1,001 calls within alpha: {heard}");
    ensure(
        heard <= 8,
        format!("the driver heard {heard} messages for 1,001 calls within alpha"),
    )?;
    let tally = Tally::options().resources("far", 0.5).remote();
    ensure(tally.inc().get_blocking()? == 1, "the actor answers")?;
    let before = relayed_frames(head, std::time::Instant::now())?;
    let (ran, heard) =
        heard_during(|| Ok(call_from_alpha::remote(tally.clone(), 5_000, 2).get_blocking()?))?;
    // The calls (one with a value in alpha's shared memory, pulled by the head's node) and
    // their ends went on a direct link between the caller and the actor's worker.
    let after = relayed_frames(head, std::time::Instant::now())?;
    ensure(
        before == after,
        format!("the daemons relayed the calls: before {before:?}, after {after:?}"),
    )?;
    let (caller, actor) = ran.map_err(|e| format!("the task's calls: {e}"))?;
    ensure(
        caller == "alpha" && actor == "head",
        format!("the caller ran on {caller}, the actor on {actor}"),
    )?;
    println!("driver messages for 5,001 calls from alpha to the head's node: {heard}");
    // The task's own end, where the actor is, its handle (its blocking in `get`, waiting
    // for its own calls, stays at alpha's daemon).
    ensure(
        heard <= 7,
        format!("the driver heard {heard} messages for a task's 5,001 actor calls"),
    )?;
    ensure(
        tally.inc().get_blocking()? == 5_002 + (2 << 20),
        "the driver's own call comes after the task's",
    )
}

/// The frames each node's daemon passed between workers of different nodes, as the head
/// lists them once every node has spoken since `since`.
fn relayed_frames(head: &Host, since: std::time::Instant) -> Result<Vec<(String, u64)>, Failed> {
    let mut nodes = serde_json::Value::Null;
    let fresh = common::eventually(15, || {
        nodes = cli_json(head, &["list", "nodes"]).unwrap_or_default();
        let ago = since.elapsed().as_millis() as u64;
        (nodes.as_array()).is_some_and(|all| {
            !all.is_empty() && all.iter().all(|n| n["last_seen_ms"].as_u64() < Some(ago))
        })
    });
    ensure(fresh, format!("every node spoke since the mark: {nodes}"))?;
    let all = nodes.as_array().ok_or("a list of nodes")?;
    Ok((all.iter())
        .map(|n| {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            (name, n["relayed_frames"].as_u64().unwrap_or(u64::MAX))
        })
        .collect())
}

fn ten_thousand_children_of_a_task_on_a_node_stay_off_the_driver(
    head: &Host,
) -> Result<(), Failed> {
    // Issue 20's measure: a task on node B (alpha) submits 10,000 children that run on B and
    // C (the head's node, which alpha's daemon passes lease asks to once alpha is full).
    let before = relayed_frames(head, std::time::Instant::now())?;
    let ((nodes, sum), heard) = heard_during(|| Ok(spread_out::remote(10_000).get_blocking()?))?;
    // The owner on alpha pushed the head's share over direct links to the workers leased
    // there, and their ends came back the same way: no daemon passed them on.
    let after = relayed_frames(head, std::time::Instant::now())?;
    println!("frames the daemons relayed between nodes: before {before:?}, after {after:?}");
    ensure(
        before == after,
        format!("the daemons relayed frames between nodes: before {before:?}, after {after:?}"),
    )?;
    println!("the driver heard {heard} messages for 10,000 children ({nodes:?})");
    ensure(sum == (0..10_000u64).sum::<u64>(), "every child answered")?;
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    ensure(
        names == ["alpha", "head"],
        format!("the children ran on their owner's node and the head's: {nodes:?}"),
    )?;
    // Driver-owned, the children cost two messages each (20,000): a submit and an end.
    // Owned by their parent and leased workers by alpha's daemon and the head's, they cost
    // the driver nothing: it hears the parent's end alone (the parent is the driver's task).
    // Before session 40 they ran on alpha alone here (the lease asks alpha's daemon passed on
    // after a wait, refused, went to the driver). Before
    // alpha's daemon kept the parent's blocking in `get` (it waits for its own children
    // only), its blocking and resumption came too (3); before the daemon leased workers
    // itself, the parent's lease asks and give-backs (13); before task events went to the
    // head, 17.
    ensure(
        heard <= 1,
        format!("the driver heard {heard} messages for 10,000 children"),
    )
}

fn a_full_node_s_owner_leases_a_worker_on_another_node() -> Result<(), Failed> {
    // Two seconds of work for alpha's two CPUs while the head's CPU idles: once alpha has no
    // room, alpha's daemon passes the owner's lease asks on to the head's daemon at once (it
    // said it has room, or was not heard from yet), which grants them on workers there (what
    // it refuses waits at alpha, in its place, not at the driver); alpha's
    // daemon passes the owner's pushes to the head's daemon, and the ends come back the same
    // way, past the driver.
    let ((nodes, sum), heard) = heard_during(|| Ok(spread_out::remote(2_000).get_blocking()?))?;
    println!("the driver heard {heard} messages for 2,000 children ({nodes:?})");
    ensure(sum == (0..2_000u64).sum::<u64>(), "every child answered")?;
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    ensure(
        names == ["alpha", "head"],
        format!("the children ran on {nodes:?}"),
    )?;
    // Handed to the driver instead (the spillback before leases on other nodes), each child
    // the head ran cost it two messages; the asks the head's daemon refused went to it too
    // until session 40 (11 messages). What it hears now: the parent's end (1 in each of
    // three runs; its blocking, were it passed on, would be two more).
    ensure(
        heard <= 3,
        format!("the driver heard {heard} messages for 2,000 children ({nodes:?})"),
    )
}

fn large_values_cross_to_a_worker_leased_on_another_node_and_back() -> Result<(), Failed> {
    // The owner's argument is in alpha's shared memory and each child's value in the store of
    // the node that ran it: a push to the head's node carries the argument, and the end
    // coming back carries the value.
    let nodes = spread_large::remote(400).get_blocking()??;
    ensure(
        nodes == ["alpha", "head"],
        format!("the children ran on {nodes:?}"),
    )
}

fn a_value_too_large_for_an_end_stays_where_it_ran_until_its_owner_s_node_pulls_it(
    head: &Host,
) -> Result<(), Failed> {
    let (len, right, segment) = read_far::remote(7).get_blocking()?;
    ensure(
        len == 130 << 20 && right,
        format!("the owner read {len} bytes, right: {right}"),
    )?;
    // Pulled, the copy on the head's node goes.
    gone_from_stores(&head.daemons(), &segment)
}

/// Waits up to 10 s for segment `name` to leave the stores of daemons `pids`.
fn gone_from_stores(pids: &[i32], name: &str) -> Result<(), Failed> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|&pid| in_store_of(pid, name)) {
        ensure(
            std::time::Instant::now() < deadline,
            format!("segment {name} is still in the store of a daemon of {pids:?}"),
        )?;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// The segment name an owner writes to `dir/segment`, once it does (up to 60 s).
fn segment_named_in(dir: &str) -> Result<String, Failed> {
    let named = std::path::PathBuf::from(format!("{dir}/segment"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !named.exists() {
        ensure(
            std::time::Instant::now() < deadline,
            "the owner never said its value's name",
        )?;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(std::fs::read_to_string(&named)?)
}

fn an_argument_in_shared_memory_is_pulled_by_the_leased_worker_s_node_and_dropped_with_it(
    head: &Host,
) -> Result<(), Failed> {
    let dir = common::TempDir::new("owners-lend")?;
    let sum = lend_far::remote(dir.0.clone());
    let segment = segment_named_in(&dir.0)?;
    // The head's node pulled a copy of the argument, and keeps it while its owner holds it.
    let pids = head.daemons();
    let copied = pids.iter().any(|&pid| in_store_of(pid, &segment));
    std::fs::write(format!("{}/go", dir.0), "")?;
    ensure(
        sum.get_blocking()? == 2 * (20 << 20),
        "the child summed its argument wrong",
    )?;
    ensure(copied, format!("no copy of {segment} on the head's node"))?;
    // The owner's task ended and let the value go: the copy goes too.
    gone_from_stores(&pids, &segment)
}

fn a_value_left_where_it_was_made_is_read_there_by_a_task_leased_near_it(
    head: &Host,
    alpha: &Host,
) -> Result<(), Failed> {
    let dir = common::TempDir::new("owners-near")?;
    let read = reads_where_made::remote(dir.0.clone(), false);
    let segment = segment_named_in(&dir.0)?;
    // Read, and still held by its owner on alpha: in the head's node's store, never pulled
    // to alpha's (alpha had a CPU free for the reader, which its owner's node would have
    // used first).
    let (heads, alphas) = (head.daemons(), alpha.daemons());
    let there = heads.iter().any(|&pid| in_store_of(pid, &segment));
    let here = alphas.iter().any(|&pid| in_store_of(pid, &segment));
    std::fs::write(format!("{}/go", dir.0), "")?;
    let (node, sum) = read.get_blocking()?;
    ensure(sum == 3 * (20 << 20), format!("the reader summed {sum}"))?;
    ensure(
        node == "head",
        format!("the reader ran on {node}, not where its argument was made"),
    )?;
    ensure(
        there,
        format!("{segment} is not in the head's node's store"),
    )?;
    ensure(!here, format!("{segment} was pulled to alpha's store"))?;
    // Let go by its owner unread there: the head's node drops it.
    gone_from_stores(&heads, &segment)?;

    // A reader that only alpha runs: leased on its owner's node, whose daemon pulls the value
    // straight from the head's node (the push names it) and keeps the copy while the owner
    // holds the value.
    let dir = common::TempDir::new("owners-near-alpha")?;
    let read = reads_where_made::remote(dir.0.clone(), true);
    let segment = segment_named_in(&dir.0)?;
    let there = heads.iter().any(|&pid| in_store_of(pid, &segment));
    let here = alphas.iter().any(|&pid| in_store_of(pid, &segment));
    std::fs::write(format!("{}/go", dir.0), "")?;
    let (node, sum) = read.get_blocking()?;
    ensure(
        (node.as_str(), sum) == ("alpha", 3 * (20 << 20)),
        format!("the reader on {node} summed {sum}"),
    )?;
    ensure(
        there && here,
        format!("{segment} on the head's node: {there}, alpha: {here}"),
    )?;
    // Let go: both copies go.
    let both: Vec<i32> = heads.iter().chain(&alphas).copied().collect();
    gone_from_stores(&both, &segment)?;

    // Read by a call to an actor on the head's node: in place there, never pulled to alpha.
    let dir = common::TempDir::new("owners-near-actor")?;
    let read = an_actor_reads_where_made::remote(dir.0.clone());
    let segment = segment_named_in(&dir.0)?;
    let there = heads.iter().any(|&pid| in_store_of(pid, &segment));
    let here = alphas.iter().any(|&pid| in_store_of(pid, &segment));
    std::fs::write(format!("{}/go", dir.0), "")?;
    let (node, count) = read.get_blocking()?;
    ensure(
        (node.as_str(), count) == ("head", 20 << 20),
        format!("the actor on {node} counted {count}"),
    )?;
    ensure(
        there && !here,
        format!("{segment} on the head's node: {there}, alpha: {here}"),
    )?;
    gone_from_stores(&heads, &segment)
}

fn a_dead_worker_s_values_on_its_node_go_with_it_but_not_those_the_driver_took_over(
    alpha: &Host,
) -> Result<(), Failed> {
    let dir = common::TempDir::new("owners-dead")?;
    let (pid, handed) = keeps_one_and_returns_one::remote(dir.0.clone()).get_blocking()?;
    let read = |file: &str| std::fs::read_to_string(format!("{}/{file}", dir.0));
    let (kept, given) = (read("kept")?, read("handed")?);
    let alphas = alpha.daemons();
    let there = |name: &str| alphas.iter().any(|&pid| in_store_of(pid, name));
    ensure(
        there(&kept) && there(&given),
        format!("{kept} and {given} are not both in alpha's store"),
    )?;
    let pid = i32::try_from(pid)?;
    // SAFETY: kill(2) of the worker process that said this is its pid: a child of alpha's
    // daemon, started for this job, idle since its task ended.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Nothing else would remove what it kept before the job ends.
    gone_from_stores(&alphas, &kept)
        .map_err(|e| format!("{e:?}; alpha's daemon logged:\n{}", alpha.logs()))?;
    ensure(
        there(&given),
        format!("{given}, which the driver took over, went with its maker's worker"),
    )?;
    ensure(
        handed.get_blocking()? == vec![6u8; 4 << 20],
        "the value the driver took over reads wrong",
    )?;
    drop(handed);
    gone_from_stores(&alphas, &given)
}

fn a_leased_worker_that_dies_costs_its_owner_a_retry() -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("prism-owners-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let marker = dir.join("died").display().to_string();
    let sum = survives_a_dead_leased_worker::remote(marker.clone(), 200).get_blocking();
    let died = (0..50)
        .filter(|i| std::path::Path::new(&format!("{marker}.{i}")).exists())
        .count();
    std::fs::remove_dir_all(&dir)?;
    let sum = sum?;
    ensure(sum == (0..200u64).sum::<u64>(), format!("the sum is {sum}"))?;
    ensure(
        died == 50,
        format!("{died} of 50 children killed their worker once"),
    )
}

/// A millisecond's work anywhere, returning the node it ran on and a reference to a value it
/// put there: the reference inside its value is held for its owner until the owner lets go.
#[remote]
fn put_and_return(i: u64) -> (String, ObjectRef<u64>) {
    std::thread::sleep(std::time::Duration::from_millis(1));
    let made = prism::put_ref(&(i * 3)).expect("a put");
    (prism::node_name().unwrap_or_default(), made)
}

/// Submits `n` children that put values and return references to them, reads every one, and
/// drops them: where the children ran, and the sum of the values.
#[remote(resources(alpha = 1))]
fn reads_what_children_put(n: u64) -> (Vec<String>, u64) {
    let refs: Vec<_> = (0..n).map(put_and_return::remote).collect();
    let ran = prism::get_all_blocking(&refs).expect("children succeed");
    let mut nodes: Vec<String> = ran.iter().map(|(node, _)| node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let made: Vec<ObjectRef<u64>> = ran.into_iter().map(|(_, made)| made).collect();
    let sum = prism::get_all_blocking(&made).expect("the values the children put");
    (nodes, sum.iter().sum())
}

/// On alpha: puts a value and returns a reference to it (the put reaches the driver before
/// the end that names it, though the two may take different ways).
#[remote(resources(slot = 1))]
fn put_on_alpha(i: u64) -> (String, ObjectRef<u64>) {
    let made = prism::put_ref(&(i * 3)).expect("a put");
    (prism::node_name().unwrap_or_default(), made)
}

fn the_driver_s_own_tasks_on_a_node_take_its_direct_links_in_order() -> Result<(), Failed> {
    let before = prism::worker_messages_relayed()?;
    // One at a time (the round trip), then many at once.
    for i in 0..300 {
        let (node, j) = where_am_i::remote(i).get_blocking()?;
        ensure(node == "alpha" && j == i, format!("task {i}: {node}, {j}"))?;
    }
    let refs: Vec<_> = (0..2_000).map(where_am_i::remote).collect();
    let (nodes, sum) = tally(prism::get_all_blocking(&refs)?);
    ensure(sum == (0..2_000u64).sum::<u64>(), "every task answered")?;
    ensure(
        nodes.len() == 1 && nodes[0].0 == "alpha",
        format!("{nodes:?}"),
    )?;
    // A put and the end naming it, in order.
    for i in 0..50 {
        let (node, made) = put_on_alpha::remote(i).get_blocking()?;
        ensure(node == "alpha", format!("the put ran on {node}"))?;
        ensure(made.get_blocking()? == i * 3, "the value put on alpha")?;
    }
    // A task that waits for its own children: its blocking goes through alpha's daemon, which
    // lends its CPU meanwhile, and its end follows on the link.
    let (_, sum) = spread_out::remote(200).get_blocking()?;
    ensure(sum == (0..200u64).sum::<u64>(), "every child answered")?;
    // Calls to an actor on alpha, in order.
    let counter = Tally::options().resources("slot", 0.5).remote();
    for i in 1..=300 {
        ensure(
            counter.inc().get_blocking()? == i,
            format!("call {i} out of order"),
        )?;
    }
    // Many at once: the driver sends them in bursts, the actor its ends in batches.
    let calls: Vec<ObjectRef<u64>> = (0..2_000).map(|_| counter.inc()).collect();
    let values = prism::get_all_blocking(&calls)?;
    ensure(
        values == (301..=2_300).collect::<Vec<u64>>(),
        "calls sent at once ran in order",
    )?;
    let (_, _, node) = counter.weigh(Vec::new()).get_blocking()?;
    ensure(node == "alpha", format!("the actor ran on {node}"))?;
    prism::kill(&counter)?;
    // Through the relays: each worker's hello and the marks of its changes of way (thousands
    // of frames without the links: PRISM_DRIVER_LINKS=0).
    let relayed = prism::worker_messages_relayed()? - before;
    println!("frames relayed to the driver for 2,350 tasks and 2,301 calls on alpha: {relayed}");
    ensure(
        relayed < 100,
        format!("{relayed} frames came through the relays"),
    )
}

/// Sleeps `ms`, makes the file `marker`, and returns `mib` MiB of `byte` (0: one byte).
#[remote]
fn slow_blob(marker: String, ms: u64, byte: u8, mib: usize) -> Vec<u8> {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    std::fs::write(&marker, b"").expect("make the marker");
    vec![byte; (mib << 20).max(1)]
}

/// On alpha: returns the reference to its slow child at once; with `exit`, its process
/// exits 300 ms later, before the child ends.
#[remote(resources(alpha = 1))]
fn hands_over_its_child(marker: String, ms: u64, mib: usize, exit: bool) -> ObjectRef<Vec<u8>> {
    let child = slow_blob::remote(marker, ms, 7, mib);
    if exit {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::process::exit(3)
        });
    }
    child
}

/// `i` times three, after `us` microseconds.
#[remote]
fn tripled_after(i: u64, us: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_micros(us));
    i * 3
}

/// Returns the reference to its child (which its worker owns and hands over) and one inside
/// a value it puts.
#[remote]
fn returns_its_child(i: u64, us: u64) -> (ObjectRef<u64>, ObjectRef<ObjectRef<u64>>) {
    let child = tripled_after::remote(i, us);
    let boxed = prism::put_ref(&tripled_after::remote(i + 1, us)).expect("a put");
    (child, boxed)
}

/// An actor made from a value.
#[prism::actor]
struct Started {
    value: u64,
}

#[prism::actor]
impl Started {
    fn new(value: u64) -> Self {
        Started { value }
    }

    fn value(&self) -> u64 {
        self.value
    }
}

/// On alpha: submits `n` parents that return their children's references, reads every
/// child through them as each parent's value comes (every tenth first through an actor made
/// from it, whose creation goes to the driver), and sums them (or says which failed).
#[remote(resources(alpha = 1))]
fn reads_its_grandchildren(n: u64, us: u64) -> Result<u64, String> {
    let parents: Vec<_> = (0..n).map(|i| returns_its_child::remote(i, us)).collect();
    let mut sum = 0;
    for (i, parent) in parents.into_iter().enumerate() {
        let (child, boxed) = parent
            .get_blocking()
            .map_err(|e| format!("parent {i}: {e}"))?;
        if i % 10 == 0 {
            let started = Started::remote(&child);
            let value = started.value().get_blocking();
            let value = value.map_err(|e| format!("actor {i}: {e}"))?;
            if value != i as u64 * 3 {
                return Err(format!("actor {i} was made from {value}"));
            }
        }
        sum += child
            .get_blocking()
            .map_err(|e| format!("child {i}: {e}"))?;
        let inner = boxed.get_blocking().map_err(|e| format!("box {i}: {e}"))?;
        sum += inner
            .get_blocking()
            .map_err(|e| format!("boxed child {i}: {e}"))?;
    }
    Ok(sum)
}

/// Returns the references to `n` children, which its worker owns: it lends them to the task's
/// owner when that is a worker of its node.
#[remote(num_cpus = 0)]
fn lends_children(n: u64) -> Vec<ObjectRef<u64>> {
    (0..n).map(|i| tripled_after::remote(i, 0)).collect()
}

/// On alpha: reads the children of `parents` parents, which run on alpha too, through the
/// references they return (their workers lend them), and sums them.
#[remote(resources(alpha = 1))]
fn reads_lent_children(parents: u64, n: u64) -> Result<u64, String> {
    let lists: Vec<_> = (0..parents)
        .map(|_| lends_children::options().resources("slot", 0.01).remote(n))
        .collect();
    let mut sum = 0;
    for (i, list) in prism::get_all_blocking(&lists)
        .map_err(|e| format!("a parent: {e}"))?
        .iter()
        .enumerate()
    {
        let values = prism::get_all_blocking(list).map_err(|e| format!("parent {i}: {e}"))?;
        sum += values.iter().sum::<u64>();
    }
    Ok(sum)
}

fn references_lent_between_workers_of_a_node_stay_off_the_driver() -> Result<(), Failed> {
    // The borrower protocol on one node (issue 20): the parents' workers own the children and
    // lend them to the reader's worker, which asks them for the values and gives the loans
    // back. Before, each child was handed to the driver, which the reader asked, held and
    // released it at: 1.1-1.2 driver messages per child (prism-fanout --reader-on-node).
    let (parents, n) = (10, 1_000);
    let (sum, heard) =
        heard_during(|| Ok(reads_lent_children::remote(parents, n).get_blocking()??))?;
    println!(
        "the driver heard {heard} messages for {} lent children",
        parents * n
    );
    let expected = parents * (0..n).map(|i| i * 3).sum::<u64>();
    ensure(sum == expected, format!("the sum is {sum}, not {expected}"))?;
    ensure(
        heard <= 40,
        format!(
            "the driver heard {heard} messages for {} lent children",
            parents * n
        ),
    )
}

/// On the head's node: `kib` KiB of `i`'s low byte (inline when small, in the head's store
/// when large), after `ms` milliseconds.
#[remote(num_cpus = 0, resources(far = 0.001))]
fn far_bytes(i: u64, kib: usize, ms: u64) -> Vec<u8> {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    vec![i as u8; (kib << 10).max(8)]
}

/// On the head's node: the references to `n` children there, which its worker owns and lends
/// to the task's owner, a worker on alpha; with `exit`, the process exits 300 ms later (the
/// children take 3 s then).
#[remote(num_cpus = 0, resources(far = 0.01))]
fn lends_from_afar(n: u64, kib: usize, exit: bool) -> Vec<ObjectRef<Vec<u8>>> {
    let ms = if exit { 3_000 } else { 0 };
    let children = (0..n).map(|i| far_bytes::remote(i, kib, ms)).collect();
    if exit {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::process::exit(3)
        });
    }
    children
}

/// On alpha: reads the children of `parents` parents on the head's node through the
/// references they return (lent by the parents' workers), checks each, and says how many
/// bytes it read, the segment of the last child, and whether alpha's store had a copy of it.
#[remote(resources(alpha = 1))]
fn reads_lent_from_afar(parents: u64, n: u64, kib: usize) -> Result<(usize, String, bool), String> {
    let lists: Vec<_> = (0..parents)
        .map(|_| lends_from_afar::remote(n, kib, false))
        .collect();
    let lists = prism::get_all_blocking(&lists).map_err(|e| format!("a parent: {e}"))?;
    let (mut read, mut last) = (0, None);
    for (p, list) in lists.iter().enumerate() {
        let values = prism::get_all_blocking(list).map_err(|e| format!("parent {p}: {e}"))?;
        for (i, value) in values.iter().enumerate() {
            if value.len() != (kib << 10).max(8) || value.iter().any(|&b| b != i as u8) {
                return Err(format!("child {i} of parent {p} read wrong"));
            }
            read += value.len();
        }
        last = list.last().map(|r| r.id());
    }
    let id = last.ok_or("no child")?;
    let segment = format!("{:x}.{}.{}", id.task.owner, id.task.seq, id.index);
    let daemon = std::os::unix::process::parent_id() as i32;
    Ok((read, segment.clone(), in_store_of(daemon, &segment)))
}

/// On alpha: reads the child a parent on the head's node lends it after the parent's process
/// died (the child was not done): the error it gets.
#[remote(resources(alpha = 1))]
fn reads_from_a_dead_lender() -> String {
    let list = lends_from_afar::remote(1, 0, true)
        .get_blocking()
        .expect("the parent's value");
    std::thread::sleep(std::time::Duration::from_millis(600));
    match list[0].get_blocking() {
        Ok(value) => format!("read {} bytes", value.len()),
        Err(e) => e.to_string(),
    }
}

fn references_lent_across_nodes_are_read_from_the_lender_s_node_and_stay_off_the_driver(
    head: &Host,
    alpha: &Host,
) -> Result<(), Failed> {
    // The borrower protocol between nodes (issue 20): the parents' workers on the head's
    // node lend their children to the reader's worker on alpha, which asks them directly;
    // a large value is pulled by alpha's daemon from the head's store and dropped there
    // when its lender lets go. Before, each child was handed to the driver.
    let (parents, n) = (4, 250);
    let ((read, _, _), heard) =
        heard_during(|| Ok(reads_lent_from_afar::remote(parents, n, 0).get_blocking()??))?;
    println!(
        "the driver heard {heard} messages for {} children lent across nodes",
        parents * n
    );
    ensure(
        read == (parents * n) as usize * 8,
        format!("read {read} bytes"),
    )?;
    ensure(
        heard <= 40,
        format!(
            "the driver heard {heard} messages for {} lent children",
            parents * n
        ),
    )?;
    let kib = 512;
    let (read, segment, copied) = reads_lent_from_afar::remote(2, 3, kib).get_blocking()??;
    ensure(read == 6 * (kib << 10), format!("read {read} bytes"))?;
    ensure(copied, format!("alpha's store had no copy of {segment}"))?;
    let mut pids = head.daemons();
    pids.extend(alpha.daemons());
    gone_from_stores(&pids, &segment)?;
    // A lender that dies before its child ends: the reader hears who died, not a hang.
    let said = reads_from_a_dead_lender::remote().get_blocking()?;
    println!("a dead lender's borrower: {said}");
    ensure(
        said.contains("owner") && said.contains("died") && said.contains("127.0.0.1"),
        format!("the reader got {said:?}"),
    )
}

fn references_a_task_s_children_return_reach_their_reader_on_another_worker() -> Result<(), Failed>
{
    // The parents' workers hand the children over to the driver on their own links while
    // the reader asks for them on its: in whatever order the driver hears the two, each
    // child is read.
    let n = 300;
    for us in [0, 200] {
        let sum = reads_its_grandchildren::remote(n, us).get_blocking()??;
        let expected: u64 = (0..n).map(|i| i * 3 + (i + 1) * 3).sum();
        ensure(sum == expected, format!("the sum is {sum}, not {expected}"))?;
    }
    Ok(())
}

fn a_task_on_a_node_returns_its_running_child_at_once_and_its_death_fails_it_with_owner_died()
-> Result<(), Failed> {
    let marker = common::temp_path("handed-on-alpha");
    let exists = |m: &str| std::path::Path::new(m).exists();
    // Small and large values (the large one stays in the store of the node where it ends).
    for mib in [0, 4] {
        let parent = hands_over_its_child::remote(marker.clone(), 2_000, mib, false);
        let child = parent.get_blocking()?;
        ensure(
            !exists(&marker),
            "the parent's value came only after its child ended",
        )?;
        let value = child.get_blocking()?;
        let _ = std::fs::remove_file(&marker);
        ensure(
            value.len() == (mib << 20).max(1) && value.iter().all(|&b| b == 7),
            format!("the child's value has {} bytes", value.len()),
        )?;
    }
    let parent = hands_over_its_child::remote(marker.clone(), 5_000, 0, true);
    let orphan = parent.get_blocking()?.get_blocking();
    let _ = std::fs::remove_file(&marker);
    match orphan {
        Err(prism::Error::Task(prism::TaskError::OwnerDied { owner, .. }))
            if owner.contains("on node alpha") =>
        {
            Ok(())
        }
        other => Err(format!("expected OwnerDied naming alpha's worker, got {other:?}").into()),
    }
}

fn references_children_return_from_another_node_live_until_their_owner_lets_go()
-> Result<(), Failed> {
    // Alpha's owner is leased workers on the head's node too once alpha is full: what those
    // children return is held for the owner through the head's daemon while their ends come
    // back through alpha's; the owner lets go through alpha's. In whatever order the node
    // hears the two, every value is read and none is left behind.
    let base = prism::owned_object_count()?;
    let n = 2_000;
    let (nodes, sum) = reads_what_children_put::remote(n).get_blocking()?;
    ensure(
        sum == (0..n).map(|i| i * 3).sum::<u64>(),
        format!("the sum is {sum}"),
    )?;
    ensure(
        nodes == ["alpha", "head"],
        format!("the children ran on {nodes:?}"),
    )?;
    let freed = common::eventually(10, || prism::owned_object_count().ok() == Some(base));
    ensure(
        freed,
        format!(
            "{} objects the children put are left",
            prism::owned_object_count()? - base
        ),
    )
}

/// A child its parent's worker owns, recorded by alpha's daemon for the head.
#[remote(resources(slot = 1))]
fn listed_child(i: u64) -> u64 {
    i
}

/// Submits `n` listed children and sums them.
#[remote(resources(alpha = 1))]
fn lists_children(n: u64) -> u64 {
    let refs: Vec<ObjectRef<u64>> = (0..n).map(listed_child::remote).collect();
    prism::get_all_blocking(&refs)
        .expect("children succeed")
        .iter()
        .sum()
}

/// The JSON `prism ARGS --format json` prints on `head`'s host.
fn cli_json(head: &Host, args: &[&str]) -> Option<serde_json::Value> {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    serde_json::from_slice(&head.prism(&args).stdout).ok()
}

fn the_head_lists_the_tasks_a_worker_owns_with_their_parent(head: &Host) -> Result<(), Failed> {
    // The children's events go from their owner to alpha's daemon, which reports them to the
    // head beside its heartbeats: the driver never hears of them, yet `prism list tasks` on
    // the head's host and the driver's own `prism::state` list them.
    let n = 300;
    let sum = lists_children::remote(n).get_blocking()?;
    ensure(sum == (0..n).sum::<u64>(), format!("the sum is {sum}"))?;
    let mut summary = serde_json::Value::Null;
    let finished = |summary: &serde_json::Value, name: &str, count: u64| {
        summary.as_array().is_some_and(|all| {
            all.iter().any(|s| {
                s["function"].as_str().is_some_and(|f| f.ends_with(name))
                    && s["states"]["FINISHED"] == count
            })
        })
    };
    // The children as alpha's daemon reported them, their parent as the driver did.
    let counted = common::eventually(15, || {
        summary = cli_json(head, &["summary", "tasks"]).unwrap_or_default();
        finished(&summary, "listed_child", n) && finished(&summary, "lists_children", 1)
    });
    ensure(counted, format!("prism summary tasks: {summary}"))?;
    let function = |name: &str| {
        (summary.as_array().into_iter().flatten())
            .filter_map(|s| s["function"].as_str())
            .find(|f| f.ends_with(name))
            .map(str::to_string)
    };
    let child = function("listed_child").ok_or("the child's function")?;
    let parent_fn =
        function("lists_children").ok_or_else(|| format!("the parent's function: {summary}"))?;
    let list = |function: &str| {
        let filter = format!("function={function}");
        let args = ["list", "tasks", "--filter", &filter, "--limit", "3000"];
        cli_json(head, &args).unwrap_or_default()
    };
    let mut children = serde_json::Value::Null;
    common::eventually(15, || {
        children = list(&child);
        children.as_array().is_some_and(|c| c.len() == n as usize)
    });
    let parents = list(&parent_fn);
    let parent = parents[0]["task_id"].clone();
    let children = children.as_array().ok_or("a list of children")?;
    ensure(
        children.len() == n as usize
            && children
                .iter()
                .all(|c| c["state"] == "FINISHED" && c["node"] == "alpha" && c["parent"] == parent),
        format!(
            "{} children of {parent}, the first {:?}",
            children.len(),
            children.first()
        ),
    )?;
    // The children an owner on alpha was leased workers for on the head's node (an earlier
    // case) are listed with the node they ran on, as alpha's daemon learned it from the
    // daemon that passed their ends back.
    if let Some(plain) = function("where_plain") {
        let ran: Vec<String> = (list(&plain).as_array().into_iter().flatten())
            .filter_map(|t| t["node"].as_str().map(str::to_string))
            .collect();
        ensure(
            ran.iter().any(|n| n == "head")
                && ran.iter().any(|n| n == "alpha")
                && ran.iter().all(|n| n == "head" || n == "alpha"),
            format!("where the spilled children ran, as the head lists them: {ran:?}"),
        )?;
    }
    // The driver's own state API adds the head's records to its own.
    let driver_sees = (prism::state::list_tasks()?.iter())
        .filter(|t| t.function == child && t.state == prism::state::TaskPhase::Finished)
        .count();
    ensure(
        driver_sees == n as usize,
        format!("prism::state::list_tasks() lists {driver_sees} of the {n} children"),
    )?;
    let summed = (prism::state::summarize_tasks()?.iter())
        .find(|s| s.function == child)
        .and_then(|s| s.states.get(&prism::state::TaskPhase::Finished).copied());
    ensure(
        summed == Some(n),
        format!("prism::state::summarize_tasks() counts {summed:?} finished children"),
    )
}

fn a_dead_owner_s_child_on_another_node_is_stopped_with_it() -> Result<(), Failed> {
    // The owner dies on alpha while its child runs on a worker leased on the head's node:
    // the child's end has nowhere to go, and the worker is killed there.
    let dir = std::env::temp_dir().join(format!("prism-dead-owner-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let said =
        dies_while_its_child_runs_elsewhere::remote(dir.display().to_string()).get_blocking();
    let ran_on = std::fs::read_to_string(dir.join("child-started")).unwrap_or_default();
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let finished = dir.join("child-finished").exists();
    std::fs::remove_dir_all(&dir)?;
    ensure(said? == "run again", "the parent runs again")?;
    ensure(ran_on == "head", format!("the child ran on {ran_on:?}"))?;
    ensure(!finished, "the orphaned child ran to its end")
}

/// Fibonacci of `n`, each step's two children submitted by `child`, waited for together.
fn fib_with(n: u64, child: fn(u64) -> ObjectRef<u64>) -> u64 {
    if n < 2 {
        return n;
    }
    let children = [child(n - 1), child(n - 2)];
    prism::get_all_blocking(&children)
        .expect("children succeed")
        .iter()
        .sum()
}

/// Fibonacci as nested tasks that only alpha can run, each waiting for its two children:
/// deeper than alpha's CPUs and its cap on processes, on workers alpha's daemon leases. (A
/// blocked task gives back its CPU, not its other resources: a thousandth of a slot each
/// leaves room for every task of the tree.)
#[remote(resources(slot = 0.001))]
fn fib_on_alpha(n: u64) -> u64 {
    fib_with(n, fib_on_alpha::remote)
}

/// Fibonacci as nested tasks any node can run.
#[remote]
fn fib_anywhere(n: u64) -> u64 {
    fib_with(n, fib_anywhere::remote)
}

/// The same nesting on tasks both nodes can run, started on alpha: what alpha's daemon
/// cannot lease goes on to the driver, which places it on either node.
#[remote(resources(alpha = 1))]
fn fib_from_alpha(n: u64) -> u64 {
    fib_with(n, fib_anywhere::remote)
}

fn nesting_that_spills_between_nodes_finishes() -> Result<(), Failed> {
    let started = std::time::Instant::now();
    let value = fib_from_alpha::remote(14).get_blocking()?;
    println!("fib(14) from alpha on both nodes: {:?}", started.elapsed());
    ensure(value == 377, format!("fib(14) = {value}"))
}

/// How many of the job's worker processes run on this worker's node now: its daemon's
/// children that have not exited (the daemon starts every worker of the job there, and hosts
/// no other job here).
fn workers_here() -> usize {
    // A process's state and parent follow its name in /proc/<pid>/stat; an exited one not
    // yet reaped is a zombie (`Z`).
    let parent_of = |stat: String| {
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        let parent = fields.next()?.parse::<u32>().ok()?;
        (state != "Z" && state != "X").then_some(parent)
    };
    let daemon = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(parent_of);
    let processes = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    processes
        .filter(|p| (p.file_name().to_str()).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|p| {
            let stat = std::fs::read_to_string(p.path().join("stat")).ok();
            daemon.is_some() && stat.and_then(parent_of) == daemon
        })
        .count()
}

/// Waits a while on alpha and says the most worker processes of the job it saw there. It
/// holds no CPU: only the node's cap on processes bounds how many run at once.
#[remote(num_cpus = 0, resources(slot = 0.001))]
fn count_workers_a_while() -> usize {
    let before = workers_here();
    std::thread::sleep(std::time::Duration::from_millis(100));
    before.max(workers_here())
}

/// Waits on alpha for `children` counters it owns (giving its CPU back meanwhile, which lets
/// the driver start the next parent) and returns the most workers any of them saw.
#[remote(resources(slot = 0.001))]
fn parent_of_counters(children: usize) -> usize {
    let counters: Vec<ObjectRef<usize>> = (0..children)
        .map(|_| count_workers_a_while::remote())
        .collect();
    let counts = prism::get_all_blocking(&counters).expect("the counters succeed");
    counts.into_iter().fold(workers_here(), usize::max)
}

/// The driver's tasks and the tasks its workers own on alpha run on one pool of processes,
/// alpha's daemon's, under alpha's cap (4 per CPU): the driver borrows its workers from the
/// pool instead of starting its own beside it (which let the two reach twice the cap).
fn the_driver_s_tasks_and_its_owners_share_one_pool_under_the_node_s_cap() -> Result<(), Failed> {
    let cap = 8;
    let parents: Vec<ObjectRef<usize>> = (0..cap).map(|_| parent_of_counters::remote(4)).collect();
    let most = prism::get_all_blocking(&parents)?
        .into_iter()
        .max()
        .unwrap_or(0);
    println!("at most {most} worker processes on alpha at once (its cap: {cap})");
    // One more: the worker the driver started itself to bring the job's binary to alpha,
    // which joins the pool once idle (16 when the driver started its own beside the pool).
    ensure(
        most <= cap + 1,
        format!("{most} worker processes ran on alpha at once, over its cap of {cap}"),
    )
}

fn nesting_deeper_than_a_node_s_cap_finishes_on_its_leased_workers() -> Result<(), Failed> {
    let started = std::time::Instant::now();
    let value = fib_on_alpha::remote(14).get_blocking()?;
    println!(
        "fib(14) as 1,219 nested tasks on alpha: {:?}",
        started.elapsed()
    );
    ensure(value == 377, format!("fib(14) = {value}"))
}

fn main() {
    common::cluster::serve_if_worker();
    // Before any daemon starts: bad arguments end the process, which would leave them.
    let mut args = Arguments::from_args();
    // The head's node alone has `far`.
    let head = Host::new("owners-head");
    head.start_head(&[
        "--num-cpus",
        "1",
        "--resources",
        "far=1",
        "--name",
        "head",
        "--port",
        "0",
    ]);
    let (addr, token) = (head.file("address"), head.file("token"));
    let alpha = Host::new("owners-alpha");
    alpha.join(
        &addr,
        &token,
        "127.0.0.2",
        &[
            "--num-cpus",
            "2",
            "--resources",
            "alpha=1,slot=2",
            "--name",
            "alpha",
        ],
    );
    let config = prism::Config::new()
        .address(addr.clone())
        .token(token.clone());
    prism::init_with(config).expect("join the cluster");
    let head = std::sync::Arc::new(head);
    let alpha = std::sync::Arc::new(alpha);
    let (alpha_lent, alpha_near, head_near) = (alpha.clone(), alpha.clone(), head.clone());
    let alpha_dead = alpha.clone();
    let (head_host, head_store, head_copies) = (head.clone(), head.clone(), head.clone());
    let (head_relays, head_calls, head_lent) = (head.clone(), head.clone(), head.clone());
    // The first case counts the driver's messages: nothing else may run meanwhile.
    args.test_threads = Some(1);
    let trials = vec![
        Trial::test(
            "ten_thousand_children_of_a_task_on_a_node_stay_off_the_driver",
            move || ten_thousand_children_of_a_task_on_a_node_stay_off_the_driver(&head_relays),
        ),
        Trial::test(
            "a_task_on_a_node_calls_an_actor_on_another_straight_and_off_the_driver",
            move || {
                a_task_on_a_node_calls_an_actor_on_another_straight_and_off_the_driver(&head_calls)
            },
        ),
        Trial::test(
            "the_driver_s_own_tasks_on_a_node_take_its_direct_links_in_order",
            the_driver_s_own_tasks_on_a_node_take_its_direct_links_in_order,
        ),
        Trial::test(
            "large_values_cross_to_a_worker_leased_on_another_node_and_back",
            large_values_cross_to_a_worker_leased_on_another_node_and_back,
        ),
        Trial::test(
            "a_value_too_large_for_an_end_stays_where_it_ran_until_its_owner_s_node_pulls_it",
            move || {
                a_value_too_large_for_an_end_stays_where_it_ran_until_its_owner_s_node_pulls_it(
                    &head_store,
                )
            },
        ),
        Trial::test(
            "an_argument_in_shared_memory_is_pulled_by_the_leased_worker_s_node_and_dropped_with_it",
            move || {
                an_argument_in_shared_memory_is_pulled_by_the_leased_worker_s_node_and_dropped_with_it(
                    &head_copies,
                )
            },
        ),
        Trial::test(
            "a_value_left_where_it_was_made_is_read_there_by_a_task_leased_near_it",
            move || {
                a_value_left_where_it_was_made_is_read_there_by_a_task_leased_near_it(
                    &head_near,
                    &alpha_near,
                )
            },
        ),
        Trial::test(
            "a_dead_worker_s_values_on_its_node_go_with_it_but_not_those_the_driver_took_over",
            move || {
                a_dead_worker_s_values_on_its_node_go_with_it_but_not_those_the_driver_took_over(
                    &alpha_dead,
                )
            },
        ),
        Trial::test(
            "a_leased_worker_that_dies_costs_its_owner_a_retry",
            a_leased_worker_that_dies_costs_its_owner_a_retry,
        ),
        Trial::test(
            "a_full_node_s_owner_leases_a_worker_on_another_node",
            a_full_node_s_owner_leases_a_worker_on_another_node,
        ),
        Trial::test(
            "an_actor_holding_a_node_s_cpus_lends_them_to_its_children_while_it_waits",
            an_actor_holding_a_node_s_cpus_lends_them_to_its_children_while_it_waits,
        ),
        Trial::test(
            "a_dead_owner_s_child_on_another_node_is_stopped_with_it",
            a_dead_owner_s_child_on_another_node_is_stopped_with_it,
        ),
        Trial::test(
            "a_task_on_a_node_returns_its_running_child_at_once_and_its_death_fails_it_with_owner_died",
            a_task_on_a_node_returns_its_running_child_at_once_and_its_death_fails_it_with_owner_died,
        ),
        Trial::test(
            "references_lent_between_workers_of_a_node_stay_off_the_driver",
            references_lent_between_workers_of_a_node_stay_off_the_driver,
        ),
        Trial::test(
            "references_lent_across_nodes_are_read_from_the_lender_s_node_and_stay_off_the_driver",
            move || {
                references_lent_across_nodes_are_read_from_the_lender_s_node_and_stay_off_the_driver(
                    &head_lent,
                    &alpha_lent,
                )
            },
        ),
        Trial::test(
            "references_a_task_s_children_return_reach_their_reader_on_another_worker",
            references_a_task_s_children_return_reach_their_reader_on_another_worker,
        ),
        Trial::test(
            "references_children_return_from_another_node_live_until_their_owner_lets_go",
            references_children_return_from_another_node_live_until_their_owner_lets_go,
        ),
        Trial::test(
            "nesting_deeper_than_a_node_s_cap_finishes_on_its_leased_workers",
            nesting_deeper_than_a_node_s_cap_finishes_on_its_leased_workers,
        ),
        Trial::test(
            "nesting_that_spills_between_nodes_finishes",
            nesting_that_spills_between_nodes_finishes,
        ),
        Trial::test(
            "the_driver_s_tasks_and_its_owners_share_one_pool_under_the_node_s_cap",
            the_driver_s_tasks_and_its_owners_share_one_pool_under_the_node_s_cap,
        ),
        Trial::test(
            "the_head_lists_the_tasks_a_worker_owns_with_their_parent",
            move || the_head_lists_the_tasks_a_worker_owns_with_their_parent(&head_host),
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    prism::shutdown();
    drop((alpha, head));
    conclusion.exit();
}
