//! PPO on Prism, the Ray paper's second RL workload: rollout-worker actors each step several
//! environments and return sample batches through the object store; a learner actor (which may
//! ask for logical GPUs) runs minibatch Adam epochs of the clipped surrogate and sends back new
//! weights, broadcast to the workers with one `put`. Learns CartPole-v1 or Pendulum-v1; shows a
//! progress bar; writes a JSON log and a learning curve (PNG, SVG) to `--out`.
//!
//! Run: `cargo run --release --example ppo -- --env cartpole` (see `--help`).

use std::time::Instant;

use clap::Parser;
use prism_examples::ppo::{self, PpoConfig};
use prism_examples::report::{self, CommonArgs, Progress};

/// Proximal Policy Optimization (Schulman et al. 2017) on Prism.
///
/// Unset hyperparameters take the paper's values (2048 steps per iteration, 10 epochs,
/// minibatches of 64, lr 3e-4, gamma 0.99, lambda 0.95, clip 0.2, 64x64 tanh networks);
/// Pendulum takes gamma 0.9 and lr 1e-3.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Environments per worker.
    #[arg(long)]
    envs_per_worker: Option<usize>,
    /// Steps per environment per iteration.
    #[arg(long)]
    horizon: Option<usize>,
    /// Discount.
    #[arg(long)]
    gamma: Option<f32>,
    /// GAE's lambda.
    #[arg(long)]
    lambda: Option<f32>,
    /// Adam's step size.
    #[arg(long)]
    lr: Option<f32>,
    /// Epochs per batch.
    #[arg(long)]
    epochs: Option<usize>,
    /// Minibatch size.
    #[arg(long)]
    minibatch: Option<usize>,
    /// Clipping range.
    #[arg(long)]
    clip: Option<f32>,
    /// Logical GPUs the learner asks for (the node is given as many).
    #[arg(long, default_value_t = 0.0)]
    learner_gpus: f64,
}

fn main() -> anyhow::Result<()> {
    // A worker process (started from this executable, without arguments) parses the defaults
    // and turns into a worker inside `init_with`.
    let process_start = Instant::now();
    let args = Args::parse();
    args.common.env.available().map_err(anyhow::Error::msg)?;
    let mut cluster = prism::Config::new();
    if args.learner_gpus > 0.0 {
        cluster = cluster.num_gpus(args.learner_gpus.ceil());
    }
    prism::init_with(cluster)?;
    let result = run(&args, process_start);
    prism::shutdown();
    result
}

fn run(args: &Args, process_start: Instant) -> anyhow::Result<()> {
    let common = &args.common;
    let mut config = PpoConfig::new(common.env, common.workers()?);
    config.envs_per_worker = args.envs_per_worker.unwrap_or(config.envs_per_worker);
    config.horizon = args
        .horizon
        .unwrap_or(2048 / (config.envs_per_worker * config.workers).max(1));
    config.gamma = args.gamma.unwrap_or(config.gamma);
    config.lambda = args.lambda.unwrap_or(config.lambda);
    config.lr = args.lr.unwrap_or(config.lr);
    config.epochs = args.epochs.unwrap_or(config.epochs);
    config.minibatch = args.minibatch.unwrap_or(config.minibatch);
    config.clip = args.clip.unwrap_or(config.clip);
    config.hidden = common.hidden.clone().unwrap_or(config.hidden);
    config.learner_gpus = args.learner_gpus;
    config.seed = common.seed;
    config.max_iters = common.max_iters.unwrap_or(config.max_iters);
    let target = common.target.unwrap_or(ppo::solved_at(common.env));
    config.target = (!common.no_stop).then_some(target);

    let mut progress = Progress::new(config.max_iters);
    let outcome = ppo::train(&config, |entry| progress.update(entry))?;
    progress.finish();

    println!(
        "PPO on {:?}: {} workers x {} envs x {} steps per iteration, {}x{} minibatches of {}",
        common.env,
        config.workers,
        config.envs_per_worker,
        config.horizon,
        config.epochs,
        (config.workers * config.envs_per_worker * config.horizon).div_ceil(config.minibatch),
        config.minibatch
    );
    println!(
        "training {:.2} s, {} iterations, {} env steps ({})",
        outcome.wall_s,
        outcome.log.len(),
        outcome.steps,
        report::steps_per_s(outcome.steps as f64 / outcome.wall_s.max(1e-9))
    );
    match outcome.solved_at_iter {
        Some(iter) => println!(
            "SOLVED after {iter} iterations: mean return of the last 100 episodes {:.1} >= {target}",
            outcome.final_mean_return
        ),
        None => println!(
            "not solved: mean return of the last 100 episodes {:.1} (target {target})",
            outcome.final_mean_return
        ),
    }
    let out = common.out_dir("ppo");
    let title = format!(
        "PPO on {:?} (Prism, {} workers)",
        common.env, config.workers
    );
    let summary = serde_json::json!({
        "config": config,
        "train_s": outcome.wall_s,
        "steps": outcome.steps,
        "final_mean_return": outcome.final_mean_return,
        "solved_at_iter": outcome.solved_at_iter,
        "process_s": process_start.elapsed().as_secs_f64(),
    });
    for f in report::write_outputs(&out, &title, Some(target), &outcome.log, &summary)? {
        println!("wrote {}", f.display());
    }
    println!(
        "wall time of the whole process: {:.3} s",
        process_start.elapsed().as_secs_f64()
    );
    Ok(())
}
