//! Hyperparameter tuning on Prism: `prism::tune` searches PPO's learning rate, clipping range,
//! epochs and minibatch size for CartPole-v1. Each trial is an actor holding one CPU that
//! samples its own environments and learns in-process, one PPO iteration per step. ASHA stops
//! trials that learn slowly and gives their CPU to the next; the same search without early
//! stopping (random search, FIFO) runs with the same configurations and budget, so the time to
//! the first solved trial (mean return of the last 100 episodes >= 475) can be compared.
//! Writes each search's JSON log and plot (mean return per trial against time) to `--out`.
//!
//! Run: `cargo run --release --example tune_ppo` (see `--help`).

use std::collections::VecDeque;
use std::time::Duration;

use clap::Parser;
use prism::tune::{Asha, Config, Domain, Fifo, Metrics, Mode, Space, Trainable, Tuner};
use prism::{ActorHandle, ObjectRef};
use prism_examples::envs::EnvName;
use prism_examples::ppo::{Optimizer, PpoConfig, Sampler, Weights, solved_at};

/// Tunes PPO on CartPole-v1 with ASHA, then runs the same search without early stopping.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configurations drawn (the same for both searches).
    #[arg(long, default_value_t = 12)]
    samples: usize,
    /// The most PPO iterations per trial.
    #[arg(long, default_value_t = 60)]
    max_iters: u32,
    /// Trials at once (default: the host's cores).
    #[arg(long)]
    concurrent: Option<usize>,
    /// Seed of the configurations drawn and of each trial's environments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// ASHA's first rung: iterations every trial runs before the first comparison.
    #[arg(long, default_value_t = 10)]
    grace: u32,
    /// ASHA's reduction factor: 1 in this many trials goes on at each rung.
    #[arg(long, default_value_t = 2)]
    reduction: u32,
    /// What trials are ranked by: `iteration` (the mean return of the latest iteration's
    /// episodes) or `last100` (the mean of the last 100 episodes, the solve criterion).
    #[arg(long, default_value = "iteration")]
    rank_by: String,
    /// Which searches: `asha`, `fifo` or `both`.
    #[arg(long, default_value = "both")]
    schedulers: String,
    /// Where the logs and plots go.
    #[arg(long, default_value = "target/tune-ppo")]
    out: String,
}

/// One PPO trial: a sampler of 4 CartPole environments and the learner, in one actor.
#[prism::actor]
struct PpoTrial {
    sampler: Sampler,
    optimizer: Optimizer,
    /// Returns of the last 100 episodes.
    recent: VecDeque<f64>,
    steps: u64,
}

fn ppo_config(config: &Config) -> PpoConfig {
    let mut ppo = PpoConfig::new(EnvName::Cartpole, 1);
    ppo.lr = config.f64("lr") as f32;
    ppo.clip = config.f64("clip") as f32;
    ppo.epochs = config.i64("epochs") as usize;
    ppo.minibatch = config.i64("minibatch") as usize;
    ppo.seed = config.i64("seed") as u64;
    ppo
}

#[prism::actor]
impl PpoTrial {
    fn new(config: Config) -> Self {
        let ppo = ppo_config(&config);
        PpoTrial {
            sampler: Sampler::new(&ppo, ppo.seed),
            optimizer: Optimizer::new(&ppo),
            recent: VecDeque::new(),
            steps: 0,
        }
    }

    /// One PPO iteration: 2,048 steps sampled, 10 (or `epochs`) epochs of updates.
    fn train(&mut self) -> Metrics {
        let batch = self.sampler.sample(&self.optimizer.weights());
        let report = self.optimizer.update(&[batch]);
        self.steps += report.steps;
        for &r in &report.episode_returns {
            self.recent.push_back(r);
            if self.recent.len() > 100 {
                self.recent.pop_front();
            }
        }
        let latest =
            report.episode_returns.iter().sum::<f64>() / report.episode_returns.len().max(1) as f64;
        let mean = self.recent.iter().sum::<f64>() / self.recent.len().max(1) as f64;
        // Solved counts only over a full window of 100 episodes.
        let solved_mean = if self.recent.len() >= 100 {
            mean
        } else {
            mean.min(solved_at(EnvName::Cartpole) - 1.0)
        };
        Metrics::new()
            .with("mean_return", solved_mean)
            .with("iteration_return", latest)
            .with("steps", self.steps as f64)
    }

    /// The learner's weights (parameters and observation filter), archived.
    fn save(&self) -> Vec<u8> {
        prism::rkyv::to_bytes::<prism::rkyv::rancor::Error>(&self.optimizer.weights())
            .expect("weights archive")
            .to_vec()
    }

    /// Another trial's weights, with new hyperparameters (for Population Based Training).
    fn load(&mut self, checkpoint: Vec<u8>, config: Config) {
        let mut aligned = prism::rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&checkpoint);
        let weights = prism::rkyv::from_bytes::<Weights, prism::rkyv::rancor::Error>(&aligned)
            .expect("a checkpoint of this example's weights");
        self.optimizer = Optimizer::new(&ppo_config(&config));
        self.optimizer.load_weights(weights);
    }
}

impl Trainable for PpoTrial {
    fn step(handle: &ActorHandle<Self>) -> ObjectRef<Metrics> {
        handle.train()
    }
    fn save(handle: &ActorHandle<Self>) -> ObjectRef<Vec<u8>> {
        handle.save()
    }
    fn restore(
        handle: &ActorHandle<Self>,
        checkpoint: ObjectRef<Vec<u8>>,
        config: Config,
    ) -> ObjectRef<()> {
        handle.load(checkpoint, config)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    prism::init()?;
    let concurrent = args
        .concurrent
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let space = Space::new()
        .add("lr", Domain::log_uniform(1e-5, 3e-3))
        .add("clip", Domain::choice([0.1, 0.2, 0.3]))
        .add("epochs", Domain::int_range(2, 10))
        .add("minibatch", Domain::choice([32i64, 64, 128, 256]))
        .add("seed", Domain::int_range(0, 1_000_000));
    let mut summaries = Vec::new();
    for name in ["asha", "fifo"] {
        if args.schedulers != "both" && args.schedulers != name {
            continue;
        }
        let rank_by = match args.rank_by.as_str() {
            "last100" => "mean_return",
            "iteration" => "iteration_return",
            other => anyhow::bail!("--rank-by takes `iteration` or `last100`, not `{other}`"),
        };
        let tuner = Tuner::new(space.clone())
            .metric(rank_by, Mode::Max)
            .samples(args.samples)
            .max_concurrent(concurrent)
            .max_iterations(args.max_iters)
            .stop_when("mean_return", solved_at(EnvName::Cartpole))
            .seed(args.seed)
            .log_dir(format!("{}/{name}", args.out));
        let tuner = match name {
            // Rungs at 10, 20, 40 iterations by default: half go on at each.
            "asha" => tuner.scheduler(Asha::new(args.max_iters, args.grace, args.reduction)),
            _ => tuner.scheduler(Fifo),
        };
        let results =
            tuner.run(|config| PpoTrial::options().num_cpus(1.0).remote(config.clone()))?;
        println!("\n{results}\n");
        let first = results.first_solved();
        summaries.push((
            results.scheduler,
            first.map(|(_, at)| at),
            results.elapsed,
            results.total_iterations(),
            results
                .trials
                .iter()
                .filter(|t| t.solved_at.is_some())
                .count(),
        ));
    }
    println!("search   first solved   whole search   iterations   trials solved");
    for (name, first, all, iterations, solved) in summaries {
        let first = first.map_or_else(
            || "never".to_string(),
            |d: Duration| format!("{:.1} s", d.as_secs_f64()),
        );
        println!(
            "{name:<8} {first:>12}   {:>10.1} s   {iterations:>10}   {solved:>13}",
            all.as_secs_f64()
        );
    }
    prism::shutdown();
    Ok(())
}
