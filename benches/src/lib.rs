//! Prism's benchmarks. `prism-microbench` mirrors Ray's `ray microbenchmark`; the criterion
//! benches in `benches/` time the hot paths underneath.

use std::time::{Duration, Instant};

/// One benchmark's result: iterations per second over several trials.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    /// Ray's name for the benchmark.
    pub name: String,
    /// Mean of the trials, per second.
    pub mean: f64,
    /// Standard deviation of the trials.
    pub sd: f64,
    /// The trials, per second.
    pub trials: Vec<f64>,
}

impl Measurement {
    /// The mean and standard deviation of `trials`, under `name`.
    pub fn of(name: &str, trials: Vec<f64>) -> Measurement {
        let mean = trials.iter().sum::<f64>() / trials.len() as f64;
        let var = trials.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / trials.len() as f64;
        Measurement {
            name: name.to_string(),
            mean,
            sd: var.sqrt(),
            trials,
        }
    }

    /// The line Ray prints: `NAME per second MEAN +- SD`.
    pub fn ray_line(&self) -> String {
        format!(
            "{} per second {:.2} +- {:.2}",
            self.name, self.mean, self.sd
        )
    }
}

/// Runs `f` (which performs `multiplier` operations per call) for a warm-up, then `trials`
/// timed trials of about `trial` each, as Ray's `timeit` does.
pub fn timeit(
    name: &str,
    multiplier: u64,
    trials: usize,
    trial: Duration,
    mut f: impl FnMut(),
) -> Measurement {
    let warm_up = Instant::now();
    while warm_up.elapsed() < trial / 2 {
        f();
    }
    let mut rates = Vec::with_capacity(trials);
    for _ in 0..trials {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < trial {
            f();
            calls += 1;
        }
        rates.push((calls * multiplier) as f64 / start.elapsed().as_secs_f64());
    }
    Measurement::of(name, rates)
}

/// Where a cluster benchmark's driver joins: `--address` and `--token`, as the benchmark's
/// script passes them (optional only because the job's worker processes, started from the
/// same executable, get no arguments).
#[derive(Debug, clap::Args)]
pub struct Join {
    /// Join the cluster at this address.
    #[arg(long)]
    pub address: Option<String>,
    /// The cluster's token.
    #[arg(long)]
    pub token: Option<String>,
}

impl Join {
    /// Whether the benchmark joins a cluster (else it runs on an embedded one).
    pub fn joins(&self) -> bool {
        self.address.is_some()
    }

    /// Starts Prism: joined to the cluster, or an embedded one without an address.
    pub fn init(&self) -> prism::Result<()> {
        let mut config = prism::Config::new();
        if let (Some(address), Some(token)) = (&self.address, &self.token) {
            config = config.address(address.clone()).token(token.clone());
        }
        prism::init_with(config)
    }
}
