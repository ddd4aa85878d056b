//! The RL workloads learn: short ES and PPO runs on a fixed seed, on a local cluster whose
//! workers are this test binary, must end clearly better than they began.

use libtest_mimic::{Arguments, Failed, Trial};
use prism_examples::envs::EnvName;
use prism_examples::es::{EsCluster, EsConfig};
use prism_examples::ppo::{self, PpoConfig};
use prism_examples::report::IterationLog;

/// Mean of `f` over `entries`.
fn mean_of(entries: &[IterationLog], f: impl Fn(&IterationLog) -> f64) -> f64 {
    entries.iter().map(f).sum::<f64>() / entries.len().max(1) as f64
}

/// Checks that the last `k` iterations beat the first `k` by `margin`.
fn improved(log: &[IterationLog], k: usize, margin: f64) -> Result<(), Failed> {
    let first = mean_of(&log[..k], |e| e.mean_train_return);
    let last = mean_of(&log[log.len() - k..], |e| e.mean_train_return);
    if last >= first + margin {
        eprintln!("  learned: first {k} iterations {first:.1}, last {k} {last:.1}");
        Ok(())
    } else {
        let curve: Vec<i64> = log.iter().map(|e| e.mean_train_return as i64).collect();
        Err(format!(
            "no clear learning: first {k} iterations {first:.1}, last {last:.1}: {curve:?}"
        )
        .into())
    }
}

fn es_learns_cartpole() -> Result<(), Failed> {
    let mut config = EsConfig::new(EnvName::Cartpole, 2);
    config.pairs = 16;
    config.sigma = 0.1;
    config.lr = 0.03;
    config.hidden = vec![16];
    config.noise_size = 1 << 20;
    config.seed = 7;
    config.max_iters = 12;
    config.target = None;
    config.solve_episodes = 0;
    let cluster = EsCluster::start(&config)?;
    let outcome = cluster.train(|_| {})?;
    improved(&outcome.log, 3, 100.0)
}

fn es_learns_pendulum() -> Result<(), Failed> {
    let mut config = EsConfig::new(EnvName::Pendulum, 2);
    config.noise_size = 1 << 20;
    config.seed = 3;
    config.max_iters = 60;
    config.target = None;
    config.solve_episodes = 0;
    let cluster = EsCluster::start(&config)?;
    let outcome = cluster.train(|_| {})?;
    improved(&outcome.log, 5, 100.0)
}

fn ppo_learns_cartpole() -> Result<(), Failed> {
    let mut config = PpoConfig::new(EnvName::Cartpole, 2);
    config.seed = 5;
    config.max_iters = 10;
    config.target = None;
    let outcome = ppo::train(&config, |_| {})?;
    improved(&outcome.log, 2, 60.0)
}

fn ppo_learns_pendulum() -> Result<(), Failed> {
    let mut config = PpoConfig::new(EnvName::Pendulum, 2);
    config.seed = 5;
    config.max_iters = 20;
    config.target = None;
    let outcome = ppo::train(&config, |_| {})?;
    improved(&outcome.log, 3, 200.0)
}

fn main() {
    prism::init_with(prism::Config::new().num_cpus(2.0)).expect("start the local cluster");
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let tests = vec![
        Trial::test("es_learns_cartpole", es_learns_cartpole),
        Trial::test("es_learns_pendulum", es_learns_pendulum),
        Trial::test("ppo_learns_cartpole", ppo_learns_cartpole),
        Trial::test("ppo_learns_pendulum", ppo_learns_pendulum),
    ];
    let conclusion = libtest_mimic::run(&args, tests);
    prism::shutdown();
    conclusion.exit()
}
