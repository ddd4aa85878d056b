//! Collectives' bandwidth and latency (`prism::collective`), against memcpy in the same run.
//!
//! Each member is an actor that times its own collectives (so the figures are the collective's,
//! not a task's): an allreduce (sum) of `--mb` MB of f32, `--rounds` times, and a 4-byte
//! allreduce `--latency-rounds` times; rank 0 also times a memcpy of the same size alone.
//! Algorithm bandwidth = bytes / time of one allreduce (as nccl-tests' algbw).
//!
//! - One node: `cargo run --release -p prism-benches --bin prism-collective` (an embedded
//!   cluster, `--members` actors on it).
//! - Across nodes: `bash benches/collective-bench.sh` (a head and two nodes on 127.0.0.x, one
//!   member per host, placed by the custom resources `m0`, `m1`, ...), which passes `--address`
//!   and `--token`.

use std::time::Instant;

use clap::Parser;
use prism::collective::{Communicator, Group, Op};
use prism::{ActorHandle, actor};

#[derive(Debug, Parser)]
struct Args {
    /// Members of the group.
    #[arg(long, default_value_t = 2)]
    members: u32,
    /// The allreduce's size in MB (10^6 bytes) of f32.
    #[arg(long, default_value_t = 100)]
    mb: u64,
    /// Timed allreduces (after one warm-up).
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Timed 4-byte allreduces.
    #[arg(long, default_value_t = 20_000)]
    latency_rounds: u32,
    /// Where to join (one member per node, needing resource `m{rank}`).
    #[command(flatten)]
    join: prism_benches::Join,
    /// Print the measurements as JSON too.
    #[arg(long)]
    json: bool,
}

/// A member that times its own collectives.
#[actor]
struct Bencher {
    comm: Communicator,
}

#[actor]
impl Bencher {
    fn new(group: Group, rank: u32) -> Self {
        let comm = group.join(rank).expect("join the group");
        Bencher { comm }
    }

    /// Seconds of each of `rounds` allreduces of `bytes` bytes of f32 (after a warm-up).
    fn allreduce(&mut self, bytes: u64, rounds: u32) -> Vec<f64> {
        let mut buf = vec![1.0f32; bytes as usize / 4];
        let mut times = Vec::new();
        for round in 0..=rounds {
            let start = Instant::now();
            self.comm.allreduce(&mut buf, Op::Sum).expect("allreduce");
            if round > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        let world = self.comm.world_size() as f32;
        assert_eq!(buf[0], world.powi(rounds as i32 + 1), "the sums are right");
        times
    }

    /// Seconds of each of `rounds` allreduces of one f32.
    fn latency(&mut self, rounds: u32) -> Vec<f64> {
        let mut one = [1.0f32];
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                self.comm.allreduce(&mut one, Op::Max).expect("allreduce");
                start.elapsed().as_secs_f64()
            })
            .collect()
    }

    /// Seconds of each of `rounds` copies of `bytes` bytes (after a warm-up).
    fn memcpy(&self, bytes: u64, rounds: u32) -> Vec<f64> {
        let src = vec![1.0f32; bytes as usize / 4];
        let mut dst = vec![0.0f32; bytes as usize / 4];
        let mut times = Vec::new();
        for round in 0..=rounds {
            let start = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            if round > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        times
    }

    fn node(&self) -> String {
        prism::node_name().unwrap_or_else(|| "local".into())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.join.init()?;
    let cluster = args.join.joins();
    let group = Group::create("bench", args.members)?;
    let members: Vec<ActorHandle<Bencher>> = (0..args.members)
        .map(|rank| match cluster {
            true => Bencher::options()
                .resources(&format!("m{rank}"), 1.0)
                .remote(group.clone(), rank),
            false => Bencher::remote(group.clone(), rank),
        })
        .collect();
    let nodes: Vec<String> = members
        .iter()
        .map(|m| m.node().get_blocking())
        .collect::<Result<_, _>>()?;
    let bytes = args.mb * 1_000_000;
    let memcpy = median(members[0].memcpy(bytes, args.rounds).get_blocking()?);
    let runs: Vec<_> = members
        .iter()
        .map(|m| m.allreduce(bytes, args.rounds))
        .collect();
    let mut per_rank = Vec::new();
    for run in runs {
        per_rank.push(run.get_blocking()?);
    }
    // A round ends when its slowest member does.
    let rounds: Vec<f64> = (0..args.rounds as usize)
        .map(|i| per_rank.iter().map(|t| t[i]).fold(0.0, f64::max))
        .collect();
    let allreduce = median(rounds);
    let latencies: Vec<_> = members
        .iter()
        .map(|m| m.latency(args.latency_rounds))
        .collect();
    let latency = latencies[0].get_blocking()?;
    for other in &latencies[1..] {
        other.get_blocking()?;
    }
    let gb = |secs: f64| bytes as f64 / secs / 1e9;
    println!(
        "{} members on {:?}: allreduce of {} MB f32: {:.1} ms, {:.2} GB/s algorithm bandwidth; \
         memcpy {:.1} ms, {:.2} GB/s; ratio {:.2}",
        args.members,
        nodes,
        args.mb,
        allreduce * 1e3,
        gb(allreduce),
        memcpy * 1e3,
        gb(memcpy),
        memcpy / allreduce,
    );
    let (p50, p99) = (
        percentile(latency.clone(), 0.5),
        percentile(latency.clone(), 0.99),
    );
    println!(
        "4-byte allreduce: p50 {:.1} us, p99 {:.1} us ({} rounds)",
        p50 * 1e6,
        p99 * 1e6,
        args.latency_rounds
    );
    if args.json {
        let json = serde_json::json!({
            "members": args.members,
            "nodes": nodes,
            "mb": args.mb,
            "allreduce_s": allreduce,
            "algbw_gbps": gb(allreduce),
            "memcpy_s": memcpy,
            "memcpy_gbps": gb(memcpy),
            "latency_p50_us": p50 * 1e6,
            "latency_p99_us": p99 * 1e6,
        });
        println!("{json}");
    }
    drop((members, group));
    prism::shutdown();
    Ok(())
}
