//! `prism-microbench`: Ray's `ray microbenchmark` suite on Prism, with Ray's names, payloads
//! and output (`NAME per second MEAN +- SD`). Filter by name with arguments (as Ray's
//! `TESTS_TO_RUN`); `--json` prints the results as JSON too.
//!
//! Run: `cargo run --release -p prism-benches --bin prism-microbench [-- FILTER...] [--json]`

use std::time::Duration;

use clap::Parser;
use prism::{ActorHandle, ObjectRef, actor, remote};
use prism_benches::{Measurement, timeit};

/// Ray's `small_value`: a task that does nothing and returns a small value.
#[remote]
fn small_value() -> u8 {
    0
}

/// Items per stream in the streaming cases (issue 22): small ones, and 10 MiB ones.
const STREAM_ITEMS: u64 = 10_000;
const BIG_ITEMS: u64 = 10;
const BIG_ITEM: usize = 10 << 20;

/// A streaming generator of `n` small values.
#[remote]
fn stream_small(n: u64) -> prism::Stream<u64> {
    prism::Stream::new(0..n)
}

/// The same workload as one task's listed returns: `STREAM_ITEMS` references at once.
#[remote(num_returns = 10000)]
fn listed_small() -> Vec<u64> {
    (0..STREAM_ITEMS).collect()
}

/// A streaming generator of `n` items of 10 MiB.
#[remote]
fn stream_big(n: u64) -> prism::Stream<Vec<u8>> {
    prism::Stream::new((0..n).map(|i| vec![i as u8; BIG_ITEM]))
}

/// The same workload as one task's listed returns.
#[remote(num_returns = 10)]
fn listed_big() -> Vec<Vec<u8>> {
    (0..BIG_ITEMS).map(|i| vec![i as u8; BIG_ITEM]).collect()
}

/// Ray's `Actor` with `small_value`.
#[actor]
struct Client {
    calls: u64,
}

#[actor]
impl Client {
    fn new() -> Self {
        Client { calls: 0 }
    }

    fn small_value(&mut self) -> u8 {
        self.calls += 1;
        0
    }

    fn small_value_arg(&mut self, _x: u64) -> u8 {
        self.calls += 1;
        0
    }

    /// A `&self` method: runs side by side on a concurrent actor.
    fn small_value_shared(&self) -> u8 {
        0
    }
}

/// Ray's `AsyncActor`: async methods, so its calls run on one event loop, 1,000 at once by
/// default (as Ray's).
#[actor]
struct AsyncClient;

#[actor]
impl AsyncClient {
    fn new() -> Self {
        AsyncClient
    }

    async fn small_value(&self) -> u8 {
        0
    }

    /// Waits 10 ms on the actor's event loop (the 1,000 calls of 10 ms).
    async fn sleep_10ms(&self) -> u8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        0
    }
}

/// Reads one element of a large argument through its zero-copy view.
#[remote]
fn read_view(values: &prism::Archived<Vec<u8>>) -> u8 {
    values[values.len() / 2]
}

/// A client task of the n:n benchmarks: `calls` async calls to its actor, then gather.
#[remote(num_cpus = 0)]
fn call_actor(actor: ActorHandle<Client>, calls: u64, with_arg: bool) -> u64 {
    let refs: Vec<ObjectRef<u8>> = (0..calls)
        .map(|i| {
            if with_arg {
                actor.small_value_arg(i)
            } else {
                actor.small_value()
            }
        })
        .collect();
    prism::get_all_blocking(&refs).expect("calls").len() as u64
}

/// A client task of "multi client tasks async": submits and gathers `n` no-op tasks.
#[remote(num_cpus = 0)]
fn submit_tasks(n: u64) -> u64 {
    let refs: Vec<ObjectRef<u8>> = (0..n).map(|_| small_value::remote()).collect();
    prism::get_all_blocking(&refs).expect("tasks").len() as u64
}

/// This host's clock in microseconds (the wall clock: one for every process of the host).
fn host_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// When it started, by the host's clock.
#[remote]
fn started_at() -> u64 {
    host_clock_us()
}

/// Submits a child, then works `work_ms` without calling into the runtime: how long after
/// its submission the child started (microseconds).
#[remote]
fn child_start_while_working(work_ms: u64) -> u64 {
    let submitted = host_clock_us();
    let child = started_at::remote();
    let until = std::time::Instant::now() + Duration::from_millis(work_ms);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    child
        .get_blocking()
        .expect("the child")
        .saturating_sub(submitted)
}

#[derive(Parser, Debug)]
#[command(about = "Ray's microbenchmark suite, on Prism")]
struct Args {
    /// Run only benchmarks whose name contains one of these.
    filters: Vec<String>,
    /// Also print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Timed trials per benchmark.
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Seconds per trial.
    #[arg(long, default_value_t = 1.0)]
    trial_secs: f64,
    /// Internal: run one task and exit (the process the startup benchmark times).
    #[arg(long, hide = true)]
    startup_probe: bool,
    /// Internal: measure the node's memory and print it (a fresh process, so nothing the other
    /// cases made is counted).
    #[arg(long, hide = true)]
    memory_probe: bool,
    /// Run 1,000,000 no-op tasks gathered by one get_all, and report the time and the node's
    /// memory: idle before, at the peak, and after every reference is dropped.
    #[arg(long, num_args = 0..=1, default_missing_value = "1000000", value_name = "TASKS")]
    million: Option<usize>,
    /// Run this many no-op tasks (default 1,000,000) in batches of 10,000 (each gathered and
    /// dropped before the next), and print the node's memory after every 100,000: whether it
    /// stays flat once the task events' table is full (100,000 tasks by default).
    #[arg(long, num_args = 0..=1, default_missing_value = "1000000", value_name = "TASKS")]
    steady: Option<usize>,
}

/// Resident memory of this process and its children (the workers), in bytes.
fn node_rss() -> u64 {
    let me = std::process::id();
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    };
    let mut total = rss(me);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(me) {
                total += rss(pid);
            }
        }
    }
    total
}

/// Startup: fresh processes doing init + one task + shutdown, timed whole.
fn startup(trials: usize) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe()?;
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        let start = std::time::Instant::now();
        let status = std::process::Command::new(&exe)
            .arg("--startup-probe")
            .status()?;
        anyhow::ensure!(status.success(), "the startup probe failed: {status}");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Measurement::of(
        "startup (init + 1 task + shutdown), ms",
        times,
    ))
}

/// How soon a task's child starts while the task works on without waiting (20 ms of work
/// each, 10 per trial): the mean of each trial's median, in microseconds.
fn child_start(trials: usize) -> anyhow::Result<Measurement> {
    child_start_while_working::remote(1).get_blocking()?;
    let mut medians = Vec::with_capacity(trials);
    for _ in 0..trials {
        let mut waits: Vec<u64> = (0..10)
            .map(|_| child_start_while_working::remote(20).get_blocking())
            .collect::<Result<_, _>>()?;
        waits.sort_unstable();
        medians.push(waits[waits.len() / 2] as f64);
    }
    Ok(Measurement::of(
        "child start while its parent computes, us",
        medians,
    ))
}

/// Memory of a fresh node (driver + workers): idle, and at its peak during 10,000 no-op tasks,
/// measured in a process of its own.
fn memory() -> anyhow::Result<(u64, u64)> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .arg("--memory-probe")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the memory probe failed: {}",
        out.status
    );
    let text = String::from_utf8(out.stdout)?;
    let mut bytes = text.split_whitespace().map(str::parse::<u64>);
    match (bytes.next(), bytes.next()) {
        (Some(Ok(idle)), Some(Ok(busy))) => Ok((idle, busy)),
        _ => anyhow::bail!("the memory probe printed {text:?}"),
    }
}

/// The memory probe's measurement, in this process.
fn measure_memory() -> (u64, u64) {
    prism::get_all_blocking(&[small_value::remote(), small_value::remote()]).expect("warm-up");
    let idle = node_rss();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(node_rss());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let refs: Vec<ObjectRef<u8>> = (0..10_000).map(|_| small_value::remote()).collect();
    prism::get_all_blocking(&refs).expect("tasks");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let busy = sampler.join().unwrap_or(0).max(node_rss());
    (idle, busy)
}

/// The 1 M-task envelope (issue 17): submit and gather 1,000,000 tasks with one get_all; the
/// node's memory idle, at the peak and once every reference is dropped.
fn million(n: usize) {
    prism::get_all_blocking(&[small_value::remote(), small_value::remote()]).expect("warm-up");
    let idle = node_rss();
    let start = std::time::Instant::now();
    let refs: Vec<ObjectRef<u8>> = (0..n).map(|_| small_value::remote()).collect();
    let submitted = start.elapsed();
    let values = prism::get_all_blocking(&refs).expect("tasks");
    let total = start.elapsed();
    assert_eq!(values.len(), n);
    let peak = node_rss();
    drop((refs, values));
    // The owner frees objects as their last reference goes; give it a few idle ticks.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while prism::owned_object_count().expect("count") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let after = node_rss();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{n} tasks: submitted in {:.2} s, gathered in {:.2} s; node RSS (driver and workers) idle {:.0} MiB, peak {:.0} MiB, after drop {:.0} MiB ({:+.0} MiB)",
        submitted.as_secs_f64(),
        total.as_secs_f64(),
        mib(idle),
        mib(peak),
        mib(after),
        mib(after) - mib(idle)
    );
}

/// Bounded memory (issue 21): `n` tasks in batches of 10,000, the node's RSS after every
/// 100,000, and its growth from the first full table (200,000 tasks) to the end.
fn steady(n: usize) {
    const BATCH: usize = 10_000;
    const EVERY: usize = 100_000;
    prism::get_all_blocking(&[small_value::remote(), small_value::remote()]).expect("warm-up");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let idle = node_rss();
    println!("idle: node RSS {:.1} MiB", mib(idle));
    let start = std::time::Instant::now();
    let mut full = None;
    for done in (BATCH..=n).step_by(BATCH) {
        let refs: Vec<ObjectRef<u8>> = (0..BATCH).map(|_| small_value::remote()).collect();
        prism::get_all_blocking(&refs).expect("tasks");
        drop(refs);
        if done % EVERY == 0 {
            let rss = node_rss();
            if done == 2 * EVERY {
                full = Some(rss);
            }
            println!(
                "{done} tasks, {:.1} s: node RSS {:.1} MiB",
                start.elapsed().as_secs_f64(),
                mib(rss)
            );
        }
    }
    if let Some(full) = full {
        let end = node_rss();
        println!(
            "from 200,000 tasks to {n}: {:+.1} MiB (node RSS {:.1} -> {:.1} MiB)",
            mib(end) - mib(full),
            mib(full),
            mib(end)
        );
    }
}

type Bench = (&'static str, u64, Box<dyn FnMut()>);

/// Ray's large array: 100 Mi int64 = 800 MiB.
const LARGE: usize = 100 * 1024 * 1024;
const LARGE_GB: f64 = (LARGE * 8) as f64 / 1e9;

/// Puts `n` large arrays from a worker (a "multi client put gigabytes" client).
#[remote(num_cpus = 0)]
fn put_large(n: u64) -> u64 {
    let data = vec![0i64; LARGE];
    for _ in 0..n {
        drop(prism::put_ref(&data).expect("put"));
    }
    n
}

/// Placement groups made per round of "placement group create/removal" (Ray's `NUM_PGS`).
const PLACEMENT_GROUPS: u64 = 100;

fn benches() -> Vec<Bench> {
    let value = prism::put(0u64).expect("put");
    // As Ray: one client per CPU for the multi-client cases.
    let clients = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let one = Client::remote();
    // Ray's threaded actor runs calls side by side (max_concurrency 16 there; threads here,
    // so as many as the cores); async actors keep their default, as Ray's.
    let concurrent = Client::options().max_concurrency(clients as u32).remote();
    let async_one = AsyncClient::remote();
    let async_two = AsyncClient::remote();
    let async_sleeper = AsyncClient::remote();
    let two = Client::remote();
    let many: Vec<ActorHandle<Client>> = (0..clients).map(|_| Client::remote()).collect();
    let pairs: Vec<ActorHandle<Client>> = (0..clients).map(|_| Client::remote()).collect();
    let pairs_arg = pairs.clone();
    // Ray's "get object containing 10k refs": an object holding 10,000 references.
    let inner: Vec<ObjectRef<u8>> = (0..10_000).map(|_| prism::put(0u8).expect("put")).collect();
    let container = prism::put(inner).expect("put");
    let kib = vec![7u8; 1024];
    let kib_ref = prism::put_ref(&kib).expect("put");
    let one_mib = prism::put(vec![1u8; 1 << 20]).expect("put");
    let hundred_mib = prism::put(vec![1u8; 100 << 20]).expect("put");
    let big_arg = hundred_mib.clone();
    vec![
        (
            // Ray's case: 100 groups of one tiny bundle (Ray's is {"custom": 0.001}; a tiny
            // CPU bundle here, as the suite's node has no custom resource), each awaited,
            // then all removed.
            "placement group create/removal",
            PLACEMENT_GROUPS,
            Box::new(|| {
                let groups: Vec<prism::PlacementGroup> = (0..PLACEMENT_GROUPS)
                    .map(|_| {
                        let bundle = prism::Bundle::new().cpus(0.001);
                        prism::placement_group(vec![bundle], prism::PlacementStrategy::Pack)
                            .expect("placement group")
                    })
                    .collect();
                for group in &groups {
                    assert!(group.wait_blocking(Duration::from_secs(30)).expect("wait"));
                }
                for group in &groups {
                    prism::remove_placement_group(group).expect("remove");
                }
            }),
        ),
        (
            "single client get calls",
            1,
            Box::new(move || {
                prism::get_blocking(&value).expect("get");
            }),
        ),
        (
            "single client put calls",
            1,
            Box::new(|| {
                prism::put(0u64).expect("put");
            }),
        ),
        (
            "single client put calls 1 KiB",
            1,
            Box::new(move || {
                prism::put_ref(&kib).expect("put");
            }),
        ),
        (
            "single client get calls 1 KiB",
            1,
            Box::new(move || {
                prism::get_blocking(&kib_ref).expect("get");
            }),
        ),
        (
            "single client get object containing 10k refs",
            1,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> = container.get_blocking().expect("get");
                assert_eq!(refs.len(), 10_000);
            }),
        ),
        (
            "single client get_archived 1 MiB object",
            1,
            Box::new(move || {
                let view = prism::get_archived_blocking(&one_mib).expect("view");
                std::hint::black_box(view[view.len() / 2]);
            }),
        ),
        (
            "single client get_archived 100 MiB object",
            1,
            Box::new(move || {
                let view = prism::get_archived_blocking(&hundred_mib).expect("view");
                std::hint::black_box(view[view.len() / 2]);
            }),
        ),
        (
            "single client tasks with a 100 MiB ref arg",
            100,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> =
                    (0..100).map(|_| read_view::remote(&big_arg)).collect();
                prism::get_all_blocking(&refs).expect("tasks");
            }),
        ),
        (
            "single client wait 1k refs",
            1,
            Box::new(|| {
                let mut pending: Vec<ObjectRef<u8>> =
                    (0..1000).map(|_| small_value::remote()).collect();
                while !pending.is_empty() {
                    let (_, rest) = prism::wait_blocking(pending, 1, None).expect("wait");
                    pending = rest;
                }
            }),
        ),
        (
            // Issue 22: a generator's small items, each read as it comes.
            "single client stream items",
            STREAM_ITEMS,
            Box::new(|| {
                for item in stream_small::remote(STREAM_ITEMS) {
                    std::hint::black_box(item.expect("item").get_blocking().expect("get"));
                }
            }),
        ),
        (
            // The same items as one task's listed returns, read with one get_all.
            "single client listed returns",
            STREAM_ITEMS,
            Box::new(|| {
                let refs = listed_small::remote();
                std::hint::black_box(prism::get_all_blocking(&refs).expect("get"));
            }),
        ),
        (
            // 10 MiB items (10.49 MB each: GB/s = items/s x 0.0105), viewed in place.
            "single client stream 10 MiB items",
            BIG_ITEMS,
            Box::new(|| {
                for item in stream_big::remote(BIG_ITEMS) {
                    let view = prism::get_archived_blocking(&item.expect("item")).expect("view");
                    std::hint::black_box(view[view.len() / 2]);
                }
            }),
        ),
        (
            "single client listed 10 MiB returns",
            BIG_ITEMS,
            Box::new(|| {
                for item in listed_big::remote() {
                    let view = prism::get_archived_blocking(&item).expect("view");
                    std::hint::black_box(view[view.len() / 2]);
                }
            }),
        ),
        (
            "single client tasks sync",
            1,
            Box::new(|| {
                small_value::remote().get_blocking().expect("task");
            }),
        ),
        (
            "single client tasks async",
            1000,
            Box::new(|| {
                let refs: Vec<ObjectRef<u8>> = (0..1000).map(|_| small_value::remote()).collect();
                prism::get_all_blocking(&refs).expect("tasks");
            }),
        ),
        (
            // Issue 17's envelope: one get_all of many pending refs costs time linear in them.
            "single client tasks get_all 100k",
            100_000,
            Box::new(|| {
                let refs: Vec<ObjectRef<u8>> =
                    (0..100_000).map(|_| small_value::remote()).collect();
                prism::get_all_blocking(&refs).expect("tasks");
            }),
        ),
        (
            "single client tasks get_all 1M",
            1_000_000,
            Box::new(|| {
                let refs: Vec<ObjectRef<u8>> =
                    (0..1_000_000).map(|_| small_value::remote()).collect();
                prism::get_all_blocking(&refs).expect("tasks");
            }),
        ),
        (
            "multi client tasks async",
            clients * 1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u64>> =
                    (0..clients).map(|_| submit_tasks::remote(1000)).collect();
                prism::get_all_blocking(&refs).expect("clients");
            }),
        ),
        (
            // Issue 20's nested fan-out: 10 parents each submit (and gather) 10,000 children.
            "nested fan-out 10 x 10k tasks",
            100_000,
            Box::new(|| {
                let refs: Vec<ObjectRef<u64>> =
                    (0..10).map(|_| submit_tasks::remote(10_000)).collect();
                prism::get_all_blocking(&refs).expect("parents");
            }),
        ),
        (
            "1:1 actor calls sync",
            1,
            Box::new(move || {
                one.small_value().get_blocking().expect("call");
            }),
        ),
        (
            "1:1 actor calls async",
            1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> = (0..1000).map(|_| two.small_value()).collect();
                prism::get_all_blocking(&refs).expect("calls");
            }),
        ),
        (
            "1:1 actor calls concurrent",
            1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> =
                    (0..1000).map(|_| concurrent.small_value_shared()).collect();
                prism::get_all_blocking(&refs).expect("calls");
            }),
        ),
        (
            "1:1 async-actor calls sync",
            1,
            Box::new(move || {
                async_one.small_value().get_blocking().expect("call");
            }),
        ),
        (
            "1:1 async-actor calls async",
            1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> = (0..1000).map(|_| async_two.small_value()).collect();
                prism::get_all_blocking(&refs).expect("calls");
            }),
        ),
        (
            // Not in Ray's suite: 1,000 calls that each wait 10 ms, side by side on the
            // actor's event loop (1,000 threads in a threaded actor).
            "1:1 async-actor 10 ms calls async",
            1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> =
                    (0..1000).map(|_| async_sleeper.sleep_10ms()).collect();
                prism::get_all_blocking(&refs).expect("calls");
            }),
        ),
        (
            "1:n actor calls async",
            1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u8>> = (0..1000)
                    .map(|i| many[i % many.len()].small_value())
                    .collect();
                prism::get_all_blocking(&refs).expect("calls");
            }),
        ),
        (
            "n:n actor calls async",
            clients * 1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u64>> = pairs
                    .iter()
                    .map(|a| call_actor::remote(a.clone(), 1000, false))
                    .collect();
                prism::get_all_blocking(&refs).expect("clients");
            }),
        ),
        (
            "n:n actor calls with arg async",
            clients * 1000,
            Box::new(move || {
                let refs: Vec<ObjectRef<u64>> = pairs_arg
                    .iter()
                    .map(|a| call_actor::remote(a.clone(), 1000, true))
                    .collect();
                prism::get_all_blocking(&refs).expect("clients");
            }),
        ),
    ]
}

#[prism::main]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.startup_probe {
        small_value::remote().get_blocking()?;
        return Ok(());
    }
    if args.memory_probe {
        let (idle, busy) = measure_memory();
        println!("{idle} {busy}");
        return Ok(());
    }
    if let Some(n) = args.million {
        million(n);
        return Ok(());
    }
    if let Some(n) = args.steady {
        steady(n);
        return Ok(());
    }
    let trial = Duration::from_secs_f64(args.trial_secs);
    let mut results: Vec<Measurement> = Vec::new();
    let wanted = |name: &str| {
        args.filters.is_empty() || args.filters.iter().any(|p| name.contains(p.as_str()))
    };
    // Large puts are reported in GB/s beside one memcpy of the same size, measured here.
    if wanted("put gigabytes") {
        // Ray's array is `np.zeros`: memory never written, so reading it reads the kernel's
        // zero page. The baseline copies the same kind of array; the written-array pair shows
        // both on memory that holds data.
        let zeros = vec![0i64; LARGE];
        let written = vec![1i64; LARGE];
        let mut target = vec![2i64; LARGE];
        let memcpy = timeit("memcpy gigabytes (baseline)", 1, args.trials, trial, || {
            target.copy_from_slice(&zeros);
            std::hint::black_box(&target);
        });
        let single = timeit("single client put gigabytes", 1, args.trials, trial, || {
            drop(prism::put_ref(&zeros).expect("put"));
        });
        let memcpy_written = timeit(
            "memcpy gigabytes (written array)",
            1,
            args.trials,
            trial,
            || {
                target.copy_from_slice(&written);
                std::hint::black_box(&target);
            },
        );
        let single_written = timeit(
            "single client put gigabytes (written array)",
            1,
            args.trials,
            trial,
            || {
                drop(prism::put_ref(&written).expect("put"));
            },
        );
        drop((zeros, written, target));
        let clients = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
        let multi = timeit(
            "multi client put gigabytes",
            clients * 2,
            args.trials,
            trial,
            || {
                let refs: Vec<ObjectRef<u64>> =
                    (0..clients).map(|_| put_large::remote(2)).collect();
                prism::get_all_blocking(&refs).expect("clients");
            },
        );
        let sized = [
            (memcpy, LARGE_GB),
            (single, LARGE_GB),
            (memcpy_written, LARGE_GB),
            (single_written, LARGE_GB),
            (multi, LARGE_GB),
        ];
        for (m, gb_per_call) in sized {
            let gb = Measurement {
                name: m.name.clone(),
                mean: m.mean * gb_per_call,
                sd: m.sd * gb_per_call,
                trials: m.trials.iter().map(|t| t * gb_per_call).collect(),
            };
            println!("{}", gb.ray_line());
            results.push(gb);
        }
    }
    for (name, multiplier, mut f) in benches() {
        if !wanted(name) {
            continue;
        }
        let m = timeit(name, multiplier, args.trials, trial, &mut f);
        println!("{}", m.ray_line());
        results.push(m);
    }
    if wanted("child start") {
        let m = child_start(args.trials)?;
        println!("{} {:.1} +- {:.1}", m.name, m.mean, m.sd);
        results.push(m);
    }
    if wanted("startup") {
        let m = startup(args.trials)?;
        println!("{} {:.1} +- {:.1}", m.name, m.mean, m.sd);
        results.push(m);
    }
    if wanted("memory") {
        let (idle, busy) = memory()?;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "memory of driver + workers, MiB: idle {:.1}, peak during 10,000 no-op tasks {:.1}",
            mib(idle),
            mib(busy)
        );
        for (name, bytes) in [("memory idle, MiB", idle), ("memory busy, MiB", busy)] {
            results.push(Measurement {
                name: name.into(),
                mean: mib(bytes),
                sd: 0.0,
                trials: vec![mib(bytes)],
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
