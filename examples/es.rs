//! Evolution Strategies on Prism, the Ray paper's first RL workload: a shared noise table in
//! the object store, worker actors evaluating antithetic perturbations, the driver ranking
//! returns and stepping with Adam. Learns CartPole-v1 or Pendulum-v1; shows a progress bar;
//! writes a JSON log and a learning curve (PNG, SVG) to `--out`.
//!
//! Run: `cargo run --release --example es -- --env cartpole` (every hyperparameter is a flag;
//! see `--help`).

use std::time::Instant;

use clap::Parser;
use prism_examples::es::{EsCluster, EsConfig};
use prism_examples::report::{self, CommonArgs, Progress};

/// Evolution Strategies (Salimans et al. 2017) on Prism.
///
/// Unset hyperparameters take the environment's defaults: RLlib's ES defaults for CartPole
/// (50 pairs, sigma 0.02, lr 0.01, l2 0.005, hidden 64,64, 300 iterations); for Pendulum 100
/// pairs, sigma 0.1, lr 0.03, l2 0, hidden 16,16, 600 iterations.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Antithetic pairs per iteration.
    #[arg(long)]
    pairs: Option<usize>,
    /// Standard deviation of the perturbations.
    #[arg(long)]
    sigma: Option<f32>,
    /// Adam's step size.
    #[arg(long)]
    lr: Option<f32>,
    /// Weight decay.
    #[arg(long)]
    l2: Option<f32>,
    /// Entries of the shared noise table.
    #[arg(long, default_value_t = 1 << 25)]
    noise_size: usize,
    /// Unperturbed episodes per iteration (the curve's "policy" line).
    #[arg(long, default_value_t = 4)]
    eval_per_iter: usize,
    /// Episodes of the evaluation that decides "solved".
    #[arg(long, default_value_t = 100)]
    solve_episodes: usize,
    /// Afterwards, measure the framework's overhead over this many batches per worker
    /// (0: skip).
    #[arg(long, default_value_t = 0)]
    overhead_batches: usize,
    /// Write the run's timeline (Chrome trace JSON, for Perfetto or chrome://tracing) here.
    #[arg(long, value_name = "FILE")]
    timeline: Option<std::path::PathBuf>,
}

#[prism::main]
fn main() -> anyhow::Result<()> {
    let process_start = Instant::now();
    let args = Args::parse();
    let common = &args.common;
    common.env.available().map_err(anyhow::Error::msg)?;
    let cpus = report::cluster_cpus()?;
    let mut config = EsConfig::new(common.env, common.workers()?);
    config.pairs = args.pairs.unwrap_or(config.pairs);
    config.sigma = args.sigma.unwrap_or(config.sigma);
    config.lr = args.lr.unwrap_or(config.lr);
    config.l2 = args.l2.unwrap_or(config.l2);
    config.hidden = common.hidden.clone().unwrap_or(config.hidden);
    config.noise_size = args.noise_size;
    config.seed = common.seed;
    config.max_iters = common.max_iters.unwrap_or(config.max_iters);
    config.eval_per_iter = args.eval_per_iter;
    config.solve_episodes = args.solve_episodes;
    let target = common
        .target
        .unwrap_or(prism_examples::es::solved_at(common.env));
    config.target = (!common.no_stop).then_some(target);

    let setup = Instant::now();
    let cluster = EsCluster::start(&config)?;
    let setup_s = setup.elapsed().as_secs_f64();
    let mut progress = Progress::new(config.max_iters);
    let mut outcome = cluster.train(|entry| progress.update(entry))?;
    progress.finish();
    outcome.setup_s = setup_s;

    let last = outcome.log.last();
    println!(
        "ES on {:?}: {} workers, {} pairs/iter, policy {:?}, {} parameters",
        common.env,
        config.workers,
        config.pairs,
        config.mlp().sizes(),
        outcome.theta.len()
    );
    println!(
        "noise table ({} MiB) and workers ready in {:.3} s; training {:.3} s, {} iterations, {} env steps ({})",
        (config.noise_size * 4) >> 20,
        setup_s,
        outcome.wall_s,
        outcome.log.len(),
        outcome.steps,
        report::steps_per_s(outcome.steps as f64 / outcome.wall_s.max(1e-9)),
    );
    if let Some(entry) = last {
        println!("last iteration: mean return {:.1}", entry.mean_return);
    }
    match (outcome.solved_at_iter, outcome.final_eval) {
        (Some(iter), Some(eval)) => println!(
            "SOLVED after {iter} iterations: mean return {eval:.1} >= {target} over {} evaluation episodes",
            config.solve_episodes
        ),
        (None, Some(eval)) => println!(
            "not solved: mean return {eval:.1} (target {target}) over {} evaluation episodes",
            config.solve_episodes
        ),
        _ => {}
    }

    let overhead = if args.overhead_batches > 0 {
        let o = cluster.overhead(&outcome.theta, &outcome.stat, args.overhead_batches, cpus)?;
        println!(
            "throughput: bare loop {} on one thread; Prism {} on {} workers; {:.1}% of bare x {} CPUs",
            report::steps_per_s(o.bare_steps_per_s),
            report::steps_per_s(o.prism_steps_per_s),
            config.workers,
            o.efficiency * 100.0,
            o.cpus
        );
        Some(o)
    } else {
        None
    };

    if let Some(path) = &args.timeline {
        prism::timeline(path)?;
        println!("wrote the timeline to {}", path.display());
    }

    let out = common.out_dir("es");
    let title = format!("ES on {:?} (Prism, {} workers)", common.env, config.workers);
    let summary = serde_json::json!({
        "config": config,
        "setup_s": setup_s,
        "train_s": outcome.wall_s,
        "steps": outcome.steps,
        "final_eval": outcome.final_eval,
        "solved_at_iter": outcome.solved_at_iter,
        "overhead": overhead,
        "process_s": process_start.elapsed().as_secs_f64(),
    });
    let files = report::write_outputs(&out, &title, Some(target), &outcome.log, &summary)?;
    for f in files {
        println!("wrote {}", f.display());
    }
    println!(
        "wall time of the whole process: {:.3} s",
        process_start.elapsed().as_secs_f64()
    );
    Ok(())
}
