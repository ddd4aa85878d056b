//! The deterministic cluster simulator: the driver's and the head's real protocol core against
//! simulated nodes, workers and network, with seeded faults and invariants checked after every
//! step. The same arguments print the same output (stdout) byte for byte; real-time costs go
//! to stderr.
//!
//! `cargo run --release -p prism-benches --bin prism-sim -- --nodes 10 --tasks 2000 --faults --seed 7`
//! `... -- --seeds 1..200 --nodes 10 --faults` sweeps seeds and stops at the first violation.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Parser, ValueEnum};
use prism::sim::{Config, Workload};

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator with the same layout; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract holds.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocated() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shape {
    /// Independent tasks with small results, all read by the driver.
    Fanout,
    /// A binary tree reduction over large objects.
    Tree,
    /// One large object read by every other task, across the nodes.
    Broadcast,
    /// 10 tasks each submit a tenth of the tasks from their workers and wait for them.
    Nested,
    /// As nested, the children in pairs: one makes a large object, the other reads it.
    Pipeline,
}

#[derive(Debug, Parser)]
#[command(about = "Prism's deterministic cluster simulator")]
struct Args {
    /// Nodes of the simulated cluster.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Drivers sharing the cluster, each running the workload as a job of its own.
    #[arg(long, default_value_t = 1)]
    drivers: usize,
    /// CPUs per node.
    #[arg(long, default_value_t = 16)]
    cpus: u32,
    /// CPUs each node tells the drivers it has (more than `--cpus`: a lying node, which the
    /// over-commit check catches; `--cpus` divided by `--drivers`: nodes shared out between
    /// the jobs).
    #[arg(long)]
    advertised_cpus: Option<u32>,
    /// Tasks each driver submits.
    #[arg(long, default_value_t = 2_000)]
    tasks: usize,
    /// The work's shape.
    #[arg(long, value_enum, default_value_t = Shape::Tree)]
    workload: Shape,
    /// Actors the driver creates besides the tasks (restarted whenever their process dies).
    #[arg(long, default_value_t = 0)]
    actors: usize,
    /// Calls on each actor.
    #[arg(long, default_value_t = 20)]
    calls: usize,
    /// With `--workload nested` and `--actors`: the parents call the driver's actors in turn
    /// (calls their workers own) instead of submitting plain children.
    #[arg(long)]
    parents_call: bool,
    /// Length of a node's lease on the job in milliseconds (a node cut off for longer stops
    /// the job's processes).
    #[arg(long, default_value_t = 5_000)]
    lease_ms: u64,
    /// No leases: a node cut off keeps the job's processes until it sees the job's connection
    /// closed, and the driver starts a lost node's actors again at once (as before leases:
    /// shows the incarnation check catching two at once).
    #[arg(long)]
    no_fencing: bool,
    /// No grants: every driver counts every node whole, whatever other jobs run there (as
    /// before the nodes granted their resources: shows the CPU check catching two drivers
    /// over-committing a node).
    #[arg(long)]
    no_grants: bool,
    /// The driver owns every task (as before worker owners): a nested parent's children go
    /// through the driver instead of worker to worker through their node.
    #[arg(long)]
    driver_owns: bool,
    /// No pools at the nodes: the driver grants every worker owner's lease and starts the
    /// workers for its own tasks (as before the daemons leased workers themselves).
    #[arg(long)]
    no_pools: bool,
    /// No direct links between workers: pushes to workers leased on other nodes and their
    /// ends go through both nodes' relays (as before session 43).
    #[arg(long)]
    no_direct: bool,
    /// How often each node tells the head it is alive, in milliseconds (default: the daemons').
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// How long the head waits for a heartbeat before it counts a node dead, in milliseconds
    /// (default: the daemons').
    #[arg(long)]
    node_timeout_ms: Option<u64>,
    /// Inject faults (killed, frozen and partitioned nodes, killed workers and head, slow links).
    #[arg(long)]
    faults: bool,
    /// Kill a node in turn every this many milliseconds while the work runs (nodes 1..N-1;
    /// node 0 stays, as the chaos test's head node does).
    #[arg(long)]
    chaos_every_ms: Option<u64>,
    /// Milliseconds from a chaos kill to the node's restart.
    #[arg(long, default_value_t = 1_000)]
    chaos_restart_ms: u64,
    /// The seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run every seed of this range (`A..B`, B excluded), one summary line each; stops at the
    /// first violation.
    #[arg(long)]
    seeds: Option<String>,
    /// Mean task run time in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    task_ms: f64,
    /// Size of a large object in bytes (the tree's values).
    #[arg(long, default_value_t = 1_600_000)]
    large: u64,
    /// Capacity of each node's object store in MiB (a node over it spills to its disk;
    /// default: unbounded).
    #[arg(long)]
    store_mib: Option<u64>,
    /// Size of the job's binary in MiB, which every node pulls from the driver before it
    /// starts a worker of the job.
    #[arg(long, default_value_t = 20)]
    binary_mib: u64,
    /// One-way network latency in microseconds.
    #[arg(long, default_value_t = 100)]
    latency_us: u64,
    /// The driver's processor time per event in microseconds (it is one thread; 0: free).
    #[arg(long, default_value_t = 10.0)]
    driver_us: f64,
    /// Retries of a task whose worker died (and rebuilds of its lost objects that no node loss explains).
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// Check the invariants after every this many steps.
    #[arg(long, default_value_t = 1)]
    check_every: u64,
    /// Simulated seconds after which unfinished tasks count as lost.
    #[arg(long, default_value_t = 3_600.0)]
    time_limit: f64,
}

fn config(args: &Args, seed: u64) -> Config {
    let defaults = Config::default();
    let millis = |ms: Option<u64>, default| ms.map_or(default, Duration::from_millis);
    Config {
        heartbeat: millis(args.heartbeat_ms, defaults.heartbeat),
        node_timeout: millis(args.node_timeout_ms, defaults.node_timeout),
        nodes: args.nodes,
        drivers: args.drivers,
        cpus: args.cpus,
        advertised_cpus: args.advertised_cpus,
        tasks: args.tasks,
        workload: match args.workload {
            Shape::Fanout => Workload::FanOut,
            Shape::Broadcast => Workload::Broadcast,
            Shape::Tree => Workload::Tree,
            Shape::Nested => Workload::Nested,
            Shape::Pipeline => Workload::Pipeline,
        },
        actors: args.actors,
        calls: args.calls,
        parents_call: args.parents_call,
        lease: Duration::from_millis(args.lease_ms),
        fencing: !args.no_fencing,
        grants: !args.no_grants,
        owners: !args.driver_owns,
        pools: !args.no_pools,
        direct: !args.no_direct,
        faults: args.faults,
        chaos: args.chaos_every_ms.map(|every| prism::sim::Chaos {
            every: Duration::from_millis(every),
            restart_after: Duration::from_millis(args.chaos_restart_ms),
        }),
        seed,
        latency: Duration::from_micros(args.latency_us),
        task_time: Duration::from_secs_f64(args.task_ms / 1e3),
        large: args.large,
        store_capacity: args
            .store_mib
            .map_or(defaults.store_capacity, |mib| mib << 20),
        binary: args.binary_mib << 20,
        driver_cost: Duration::from_secs_f64(args.driver_us / 1e6),
        max_retries: args.max_retries,
        check_every: args.check_every,
        time_limit: Duration::from_secs_f64(args.time_limit),
        memory_probe: Some(allocated),
        ..defaults
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // The protocol core's own log, on stderr, when asked for (`PRISM_SIM_LOG=debug`).
    if let Ok(filter) = std::env::var("PRISM_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    if args.drivers == 0 || args.drivers > 256 {
        anyhow::bail!("--drivers must be between 1 and 256");
    }
    if args.nodes == 0 || args.nodes > 1023 {
        anyhow::bail!(
            "--nodes must be between 1 and 1023 (the driver numbers workers by node in 10 bits)"
        );
    }
    let seeds = match &args.seeds {
        None => args.seed..args.seed + 1,
        Some(range) => {
            let (a, b) = range
                .split_once("..")
                .ok_or_else(|| anyhow::anyhow!("--seeds takes A..B"))?;
            a.trim().parse()?..b.trim().parse()?
        }
    };
    let sweep = args.seeds.is_some();
    let (mut runs, mut real) = (0u64, Duration::ZERO);
    let mut stdout = std::io::stdout().lock();
    for seed in seeds {
        let config = config(&args, seed);
        let report = if sweep {
            let mut sink = Vec::new();
            let report = prism::sim::run(&config, &mut sink)?;
            if report.violation.is_some() {
                stdout.write_all(&sink)?;
            } else {
                writeln!(stdout, "seed {seed}: {}", report.summary())?;
            }
            report
        } else {
            prism::sim::run(&config, &mut stdout)?
        };
        runs += 1;
        real += report.real;
        eprintln!(
            "seed {seed}: real {:.3} s, of which the protocol core {:.3} s: {:.0} dispatches per real second of the core, {:.0} simulated tasks per real second; allocated {:.0} bytes per live task{}",
            report.real.as_secs_f64(),
            report.real_proto.as_secs_f64(),
            report.dispatched as f64 / report.real_proto.as_secs_f64().max(1e-9),
            report.tasks as f64 / report.real.as_secs_f64().max(1e-9),
            report.bytes_per_task.unwrap_or(0.0),
            report
                .bytes_per_object
                .map_or_else(String::new, |b| format!(", {b:.0} per held object")),
        );
        if report.violation.is_some() {
            return Ok(ExitCode::FAILURE);
        }
    }
    if sweep {
        writeln!(stdout, "{runs} seeds, every invariant held")?;
        eprintln!("{runs} runs in {:.1} s real", real.as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}
