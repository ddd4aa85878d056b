//! One large array, many readers, no copies: `put` a 1 GiB `Vec<f32>` once, then 100 tasks each
//! sum it through a `&Archived<Vec<f32>>` view of the node's shared memory. Prints the node's
//! memory (driver + workers, proportional set size so shared pages count once) before and
//! after, and the time per task.
//!
//! Run: `cargo run --release --example shared_array -- [--mib 1024] [--tasks 100]`

use std::time::Instant;

use prism::{Archived, ObjectRef, remote};

/// Sums the array through a zero-copy view; returns the sum and this worker's private memory.
#[remote]
fn sum(values: &Archived<Vec<f32>>) -> (f64, u64) {
    let total = values.iter().map(|v| f64::from(v.to_native())).sum();
    (
        total,
        kib_field(std::process::id(), "status", "RssAnon:") * 1024,
    )
}

/// A `kB` field of /proc/PID/FILE (0 when unreadable).
fn kib_field(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Proportional set size of this process and its children (the workers), in bytes.
fn node_pss() -> u64 {
    let me = std::process::id();
    let mut pids = vec![me];
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
                pids.push(pid);
            }
        }
    }
    pids.iter()
        .map(|&p| kib_field(p, "smaps_rollup", "Pss:") * 1024)
        .sum()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[prism::main]
fn main() -> anyhow::Result<()> {
    let mib = arg("--mib", 1024);
    let tasks = arg("--tasks", 100);
    let n = mib * (1 << 20) / 4;
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let expected: f64 = data.iter().map(|v| f64::from(*v)).sum();

    let start = Instant::now();
    let array = prism::put_ref(&data)?;
    let put = start.elapsed();
    drop(data);
    let before = node_pss();

    let start = Instant::now();
    let calls: Vec<ObjectRef<(f64, u64)>> = (0..tasks).map(|_| sum::remote(&array)).collect();
    let results = prism::get_all_blocking(&calls)?;
    let elapsed = start.elapsed();
    let after = node_pss();

    let mut private_max = 0;
    for (total, private) in results {
        anyhow::ensure!(
            total == expected,
            "a task summed {total}, expected {expected}"
        );
        private_max = private_max.max(private);
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    println!("put of {mib} MiB: {:.2} s", put.as_secs_f64());
    println!(
        "{tasks} tasks read it in {:.2} s ({:.1} ms per task, all reading {:.1} GiB in total)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / tasks as f64,
        gib((mib as u64 * tasks as u64) << 20)
    );
    println!(
        "node memory (PSS, driver + workers): {:.2} GiB before the tasks, {:.2} GiB after",
        gib(before),
        gib(after)
    );
    println!(
        "largest private memory of a worker: {:.1} MiB",
        private_max as f64 / (1 << 20) as f64
    );
    Ok(())
}
