//! `prism-microbench`: Ray's `ray microbenchmark` suite on Prism, with Ray's names, payloads
//! and output (`NAME per second MEAN +- SD`). Filter by name with arguments (as Ray's
//! `TESTS_TO_RUN`); `--json` prints the results as JSON too.
//!
//! Run: `cargo run --release -p prism-benches --bin prism-microbench [-- FILTER...] [--json]`

use std::time::Duration;

use clap::Parser;
use prism::{ObjectRef, remote};
use prism_benches::{Measurement, timeit};

/// Ray's `small_value`: a task that does nothing and returns a small value.
#[remote]
fn small_value() -> u8 {
    0
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
}

type Bench = (&'static str, u64, Box<dyn FnMut()>);

fn benches() -> Vec<Bench> {
    let value = prism::put(0u64).expect("put");
    vec![
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
    ]
}

#[prism::main]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trial = Duration::from_secs_f64(args.trial_secs);
    let mut results: Vec<Measurement> = Vec::new();
    for (name, multiplier, mut f) in benches() {
        if !args.filters.is_empty() && !args.filters.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        let m = timeit(name, multiplier, args.trials, trial, &mut f);
        println!("{}", m.ray_line());
        results.push(m);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
