//! Hyperparameter tuning on Prism: `prism::tune` searches PPO's learning rate, clipping range,
//! epochs and minibatch size for CartPole-v1. Each trial is an actor holding one CPU that
//! samples its own environments and learns in-process, one PPO iteration per step. ASHA stops
//! trials that learn slowly and gives their CPU to the next; the same search without early
//! stopping (random search, FIFO) runs with the same configurations and budget, so the time to
//! the first solved trial (mean return of the last 100 episodes >= 475) can be compared.
//! Then Evolution Strategies on Pendulum-v1 with Population Based Training: a population of
//! ES trials (sigma, learning rate, pairs) sharing one noise table in the object store, the
//! laggards taking over the leaders' policies with perturbed hyperparameters every 10
//! iterations, against the same population without PBT. Writes each search's JSON log and
//! plot (the metric per trial against time) to `--out`.
//!
//! Run: `cargo run --release --example tune_ppo` (see `--help`).

use std::collections::VecDeque;
use std::time::Duration;

use clap::Parser;
use prism::ObjectRef;
use prism::tune::{Asha, Config, Domain, Fifo, Metrics, Mode, Pbt, Space, Tuner};
use prism_examples::envs::EnvName;
use prism_examples::envs::Rng as EnvRng;
use prism_examples::es::{self, EsConfig, Evaluator};
use prism_examples::filter::RunningStat;
use prism_examples::nn::Adam;
use prism_examples::ppo::{Optimizer, PpoConfig, Sampler, Weights, solved_at};
use rand::SeedableRng;

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
    /// ES on Pendulum: the population's size (0 skips it).
    #[arg(long, default_value_t = 4)]
    es_population: usize,
    /// ES on Pendulum: the most iterations per trial.
    #[arg(long, default_value_t = 300)]
    es_max_iters: u32,
    /// Which PPO searches: `asha`, `fifo` or `both`.
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

/// The metrics of an iteration whose episodes returned `returns`: `iteration_return`, their
/// mean, and `mean_return`, the mean of the last 100 episodes (kept in `recent`), held below
/// `target` until there are 100 (solved counts only over a full window).
fn returns_metrics(recent: &mut VecDeque<f64>, returns: &[f64], target: f64) -> Metrics {
    for &r in returns {
        recent.push_back(r);
        if recent.len() > 100 {
            recent.pop_front();
        }
    }
    let latest = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
    let mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
    let windowed = if recent.len() >= 100 {
        mean
    } else {
        mean.min(target - 1.0)
    };
    Metrics::new()
        .with("mean_return", windowed)
        .with("iteration_return", latest)
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
        returns_metrics(
            &mut self.recent,
            &report.episode_returns,
            solved_at(EnvName::Cartpole),
        )
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

prism::trainable!(PpoTrial, step = train, save = save, restore = load);

/// One ES trial on Pendulum-v1: its policy, Adam and observation filter, evaluating its
/// perturbations in-process against the noise table all trials share (mapped, not copied).
#[prism::actor]
struct EsTrial {
    noise: prism::ArchivedRef<Vec<f32>>,
    config: EsConfig,
    evaluator: Evaluator,
    theta: Vec<f32>,
    adam: Adam,
    stat: RunningStat,
    seeds: EnvRng,
    /// Returns of the last 100 unperturbed episodes.
    recent: VecDeque<f64>,
}

fn es_config(config: &Config) -> EsConfig {
    let mut es = EsConfig::new(EnvName::Pendulum, 1);
    es.sigma = config.f64("sigma") as f32;
    es.lr = config.f64("lr") as f32;
    es.pairs = config.i64("pairs") as usize;
    es.seed = config.i64("seed") as u64;
    es
}

#[prism::actor]
impl EsTrial {
    fn new(noise: ObjectRef<Vec<f32>>, config: Config) -> Self {
        let es = es_config(&config);
        let mut init = rand::rngs::SmallRng::seed_from_u64(es.seed ^ 0x5eed);
        let theta = es.mlp().init(&mut init, 0.01);
        EsTrial {
            noise: prism::get_archived_blocking(&noise).expect("the shared noise table"),
            evaluator: Evaluator::new(&es),
            adam: Adam::new(theta.len(), es.lr),
            theta,
            stat: RunningStat::new(EnvName::Pendulum.obs_dim()),
            seeds: EnvRng::new(es.seed.wrapping_mul(0x9e37_79b9) ^ 0xe5),
            config: es,
            recent: VecDeque::new(),
        }
    }

    /// One ES iteration: `pairs` antithetic pairs and 4 unperturbed episodes, one Adam step.
    fn train(&mut self) -> Metrics {
        let seed = self.seeds.next_u64();
        let (pairs, evals) = (self.config.pairs, self.config.eval_per_iter);
        let rollouts =
            self.evaluator
                .rollouts(&self.noise, &self.theta, &self.stat, pairs, evals, seed);
        self.stat.merge(&rollouts.seen);
        let grad = es::gradient(
            &self.noise,
            &self.theta,
            std::slice::from_ref(&rollouts),
            self.config.l2,
        );
        self.adam.step(&mut self.theta, &grad);
        returns_metrics(
            &mut self.recent,
            &rollouts.eval_returns,
            es::solved_at(EnvName::Pendulum),
        )
    }

    /// The policy, the observation filter and the returns of its last 100 episodes, archived.
    fn save(&self) -> Vec<u8> {
        let recent: Vec<f64> = self.recent.iter().copied().collect();
        let state = (self.theta.clone(), self.stat.clone(), recent);
        prism::rkyv::to_bytes::<prism::rkyv::rancor::Error>(&state)
            .expect("policy archive")
            .to_vec()
    }

    /// Another trial's policy (with its filter and its episodes' returns), with new
    /// hyperparameters and fresh Adam moments.
    fn load(&mut self, checkpoint: Vec<u8>, config: Config) {
        type State = (Vec<f32>, RunningStat, Vec<f64>);
        let mut aligned = prism::rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&checkpoint);
        let (theta, stat, recent) =
            prism::rkyv::from_bytes::<State, prism::rkyv::rancor::Error>(&aligned)
                .expect("a checkpoint of this example's ES policy");
        let seed = self.config.seed;
        self.config = EsConfig {
            seed,
            ..es_config(&config)
        };
        self.evaluator = Evaluator::new(&self.config);
        self.adam = Adam::new(theta.len(), self.config.lr);
        self.theta = theta;
        self.stat = stat;
        self.recent = recent.into();
    }
}

prism::trainable!(EsTrial, step = train, save = save, restore = load);

/// ES on Pendulum: the population with PBT, then without (the same configurations).
fn tune_es(args: &Args, summaries: &mut Vec<Summary>) -> anyhow::Result<()> {
    let noise = es::create_noise::remote(1 << 22, args.seed);
    let space = Space::new()
        .add("sigma", Domain::log_uniform(0.02, 0.3))
        .add("lr", Domain::log_uniform(0.003, 0.1))
        .add("pairs", Domain::choice([25i64, 50]))
        .add("seed", Domain::int_range(0, 1_000_000));
    for name in ["pbt", "fifo"] {
        let tuner = Tuner::new(space.clone())
            .metric("iteration_return", Mode::Max)
            .samples(args.es_population)
            .max_concurrent(args.es_population)
            .max_iterations(args.es_max_iters)
            .stop_when("mean_return", es::solved_at(EnvName::Pendulum))
            .seed(args.seed)
            .log_dir(format!("{}/es-{name}", args.out));
        let tuner = match name {
            "pbt" => tuner.scheduler(Pbt::new(10)),
            _ => tuner.scheduler(Fifo),
        };
        // The whole population runs at once: half a CPU each on a 2-CPU host.
        let results = tuner.run(|config| {
            EsTrial::options()
                .num_cpus(0.5)
                .remote(noise.clone(), config.clone())
        })?;
        println!("\nES on Pendulum-v1:\n{results}\n");
        summaries.push(Summary::of(&results, "ES"));
    }
    Ok(())
}

/// One search's line in the final comparison.
struct Summary {
    name: String,
    first: Option<Duration>,
    all: Duration,
    iterations: u64,
    solved: usize,
}

impl Summary {
    fn of(results: &prism::tune::Results, task: &str) -> Self {
        Summary {
            name: format!("{task} {}", results.scheduler),
            first: results.first_solved().map(|(_, at)| at),
            all: results.elapsed,
            iterations: results.total_iterations(),
            solved: results
                .trials
                .iter()
                .filter(|t| t.solved_at.is_some())
                .count(),
        }
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
    let mut summaries: Vec<Summary> = Vec::new();
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
        println!("\nPPO on CartPole-v1:\n{results}\n");
        summaries.push(Summary::of(&results, "PPO"));
    }
    if args.es_population > 0 {
        tune_es(&args, &mut summaries)?;
    }
    println!("search      first solved   whole search   iterations   trials solved");
    for s in summaries {
        let first = s.first.map_or_else(
            || "never".to_string(),
            |d| format!("{:.1} s", d.as_secs_f64()),
        );
        println!(
            "{:<10} {first:>13}   {:>10.1} s   {:>10}   {:>13}",
            s.name,
            s.all.as_secs_f64(),
            s.iterations,
            s.solved
        );
    }
    prism::shutdown();
    Ok(())
}
