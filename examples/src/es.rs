//! Evolution Strategies (Salimans et al. 2017) as the Ray paper ran it: a table of Gaussian
//! noise is made once by a task and shared through the object store; worker actors map it
//! without copying, evaluate antithetic pairs of perturbations of the policy and send back
//! only the noise indices, the returns, the episode lengths and what their observation filter
//! saw; the driver ranks the returns, forms the gradient estimate from the same table and
//! takes an Adam step with weight decay. Hyperparameters default to RLlib's ES.

use std::time::Instant;

use prism::{ActorHandle, ArchivedRef, ObjectRef, actor, remote};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, StandardNormal};

use crate::envs::{Action, ActionSpace, EnvName, Rng};
use crate::filter::{RunningStat, Standardize};
use crate::nn::{Adam, Mlp, Scratch};
use crate::report::IterationLog;

/// Everything a run of ES is configured by (each is a flag of the `es` example).
#[derive(Debug, Clone, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EsConfig {
    /// The environment.
    pub env: EnvName,
    /// Worker actors (each holds one CPU).
    pub workers: usize,
    /// Antithetic pairs of perturbations per iteration.
    pub pairs: usize,
    /// Standard deviation of the perturbations.
    pub sigma: f32,
    /// Adam's step size.
    pub lr: f32,
    /// Weight decay.
    pub l2: f32,
    /// Hidden layer widths of the tanh MLP policy.
    pub hidden: Vec<usize>,
    /// Entries in the shared noise table.
    pub noise_size: usize,
    /// Seed of the noise table, the initial policy and every episode.
    pub seed: u64,
    /// The most iterations to run.
    pub max_iters: usize,
    /// Unperturbed episodes per iteration, to follow the policy's own return.
    pub eval_per_iter: usize,
    /// Episodes of the final evaluation that decides "solved".
    pub solve_episodes: usize,
    /// The mean return over `solve_episodes` that counts as solved; the run stops there.
    pub target: Option<f64>,
}

impl EsConfig {
    /// The defaults for `env` on `workers` workers. CartPole takes RLlib's ES defaults (sigma
    /// 0.02, lr 0.01, l2 0.005, a 64x64 policy). Pendulum, whose returns hinge on a swing-up
    /// that a decayed policy never finds, takes no weight decay, sigma 0.1, lr 0.03, a 16x16
    /// policy and 100 pairs (with RLlib's values it stays near -1,000 for 300 iterations).
    pub fn new(env: EnvName, workers: usize) -> Self {
        let base = EsConfig {
            env,
            workers,
            pairs: 50,
            sigma: 0.02,
            lr: 0.01,
            l2: 0.005,
            hidden: vec![64, 64],
            noise_size: 1 << 25,
            seed: 0,
            max_iters: 300,
            eval_per_iter: 4,
            solve_episodes: 100,
            target: Some(solved_at(env)),
        };
        match env {
            EnvName::Cartpole => base,
            EnvName::Pendulum => EsConfig {
                pairs: 100,
                sigma: 0.1,
                lr: 0.03,
                l2: 0.0,
                hidden: vec![16, 16],
                max_iters: 600,
                ..base
            },
            // RLlib's defaults, as the ES paper's MuJoCo runs; episodes last up to 1000 steps.
            EnvName::Hopper | EnvName::Humanoid => EsConfig {
                max_iters: 500,
                ..base
            },
        }
    }

    /// The policy network.
    pub fn mlp(&self) -> Mlp {
        Mlp::new(
            self.env.obs_dim(),
            &self.hidden,
            self.env.action_space().policy_outputs(),
        )
    }
}

/// The mean return that counts as solved: 475 for CartPole-v1 and 3,800 for Hopper-v5
/// (Gymnasium's thresholds), -250 for Pendulum-v1, 6,000 for Humanoid-v5 (the ES paper's).
pub fn solved_at(env: EnvName) -> f64 {
    match env {
        EnvName::Cartpole => 475.0,
        EnvName::Pendulum => -250.0,
        EnvName::Hopper => 3800.0,
        EnvName::Humanoid => 6000.0,
    }
}

/// Makes the shared noise table: `count` standard normal samples from `seed`.
#[remote]
pub fn create_noise(count: u64, seed: u64) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

/// What one batch of work returns: per pair, the noise index and the two returns and lengths;
/// the unperturbed episodes; what the observation filter saw.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Rollouts {
    /// Where each pair's perturbation starts in the noise table.
    pub noise_indices: Vec<u64>,
    /// Returns of (theta + sigma eps, theta - sigma eps) for each pair.
    pub returns: Vec<[f64; 2]>,
    /// Episode lengths of each pair.
    pub lengths: Vec<[u32; 2]>,
    /// Returns of the unperturbed episodes.
    pub eval_returns: Vec<f64>,
    /// Observations seen in the perturbed episodes.
    pub seen: RunningStat,
    /// Every environment step taken.
    pub steps: u64,
}

/// Runs the policy in the environment: the part of a worker that does not depend on Prism, so
/// that the same code can be timed bare.
#[derive(Debug)]
pub struct Evaluator {
    env: EnvName,
    mlp: Mlp,
    sigma: f32,
    scratch: Scratch,
    obs: Vec<f32>,
    perturbed: Vec<f32>,
}

impl Evaluator {
    /// An evaluator for `config`'s environment and policy.
    pub fn new(config: &EsConfig) -> Self {
        Evaluator {
            env: config.env,
            mlp: config.mlp(),
            sigma: config.sigma,
            scratch: Scratch::default(),
            obs: Vec::new(),
            perturbed: Vec::new(),
        }
    }

    /// One episode with `params`; returns (return, length). Records observations in `seen`.
    pub fn episode(
        &mut self,
        params: &[f32],
        filter: &Standardize,
        rng: &mut Rng,
        mut seen: Option<&mut RunningStat>,
    ) -> (f64, u32) {
        let mut env = self.env.make(rng);
        let mut obs = env.obs();
        let (mut total, mut length) = (0.0, 0u32);
        loop {
            if let Some(stat) = seen.as_deref_mut() {
                stat.push(&obs);
            }
            filter.apply(&obs, &mut self.obs);
            let out = self.mlp.forward(params, &self.obs, &mut self.scratch);
            let step = match self.env.action_space() {
                ActionSpace::Discrete(_) => env.step(Action::Discrete(argmax(out))),
                ActionSpace::Continuous { low, high, .. } => {
                    let clipped: Vec<f32> = out
                        .iter()
                        .map(|a| a.clamp(low as f32, high as f32))
                        .collect();
                    env.step(Action::Continuous(&clipped))
                }
            };
            total += step.reward;
            length += 1;
            if step.terminated || step.truncated {
                return (total, length);
            }
            obs = step.obs;
        }
    }

    /// Evaluates `pairs` antithetic pairs drawn from `noise` around `theta`, and `evals`
    /// unperturbed episodes, all seeded from `seed`.
    pub fn rollouts(
        &mut self,
        noise: &[prism::Archived<f32>],
        theta: &[f32],
        stat: &RunningStat,
        pairs: usize,
        evals: usize,
        seed: u64,
    ) -> Rollouts {
        let filter = Standardize::new(stat);
        let mut rng = Rng::new(seed);
        let mut seen = RunningStat::new(self.env.obs_dim());
        let dim = theta.len();
        let span = (noise.len() - dim + 1) as u64;
        let mut out = Rollouts {
            noise_indices: Vec::with_capacity(pairs),
            returns: Vec::with_capacity(pairs),
            lengths: Vec::with_capacity(pairs),
            eval_returns: Vec::with_capacity(evals),
            seen: RunningStat::new(0),
            steps: 0,
        };
        for _ in 0..pairs {
            let index = rng.next_u64() % span;
            let eps = &noise[index as usize..index as usize + dim];
            // Both members of a pair start from the same state (common random numbers): their
            // difference then measures the perturbation, not the luck of the reset.
            let episode_seed = rng.next_u64();
            let mut pair = [(0.0, 0); 2];
            for (sign, result) in [1.0f32, -1.0].into_iter().zip(&mut pair) {
                let scale = sign * self.sigma;
                let mut perturbed = std::mem::take(&mut self.perturbed);
                perturbed.clear();
                perturbed.extend(
                    theta
                        .iter()
                        .zip(eps)
                        .map(|(t, e)| t + scale * e.to_native()),
                );
                let mut episode_rng = Rng::new(episode_seed);
                *result = self.episode(&perturbed, &filter, &mut episode_rng, Some(&mut seen));
                self.perturbed = perturbed;
            }
            out.noise_indices.push(index);
            out.returns.push([pair[0].0, pair[1].0]);
            out.lengths.push([pair[0].1, pair[1].1]);
            out.steps += u64::from(pair[0].1 + pair[1].1);
        }
        for _ in 0..evals {
            let mut episode_rng = Rng::new(rng.next_u64());
            let (ret, len) = self.episode(theta, &filter, &mut episode_rng, None);
            out.eval_returns.push(ret);
            out.steps += u64::from(len);
        }
        out.seen = seen;
        out
    }
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// An ES worker: the shared noise table, mapped, and an [`Evaluator`].
#[actor]
#[derive(Debug)]
pub struct EsWorker {
    noise: ArchivedRef<Vec<f32>>,
    evaluator: Evaluator,
}

#[actor]
impl EsWorker {
    /// Maps the noise table (no copy) and builds the policy for `config`.
    pub fn new(noise: ObjectRef<Vec<f32>>, config: EsConfig) -> Self {
        let noise = prism::get_archived_blocking(&noise).expect("the shared noise table");
        EsWorker {
            noise,
            evaluator: Evaluator::new(&config),
        }
    }

    /// See [`Evaluator::rollouts`].
    pub fn rollouts(
        &mut self,
        theta: Vec<f32>,
        stat: RunningStat,
        pairs: u64,
        evals: u64,
        seed: u64,
    ) -> Rollouts {
        self.evaluator.rollouts(
            &self.noise,
            &theta,
            &stat,
            pairs as usize,
            evals as usize,
            seed,
        )
    }

    /// Returns of `episodes` unperturbed episodes.
    pub fn evaluate(
        &mut self,
        theta: Vec<f32>,
        stat: RunningStat,
        episodes: u64,
        seed: u64,
    ) -> Vec<f64> {
        self.evaluator
            .rollouts(&self.noise, &theta, &stat, 0, episodes as usize, seed)
            .eval_returns
    }
}

/// The ES gradient (to descend, weight decay `l2` included) from the rollouts of one
/// iteration around `theta`: each antithetic pair's centered-rank difference times its noise.
pub fn gradient(
    noise: &[prism::Archived<f32>],
    theta: &[f32],
    rollouts: &[Rollouts],
    l2: f32,
) -> Vec<f32> {
    let returns: Vec<f64> = rollouts
        .iter()
        .flat_map(|r| r.returns.iter().flatten().copied())
        .collect();
    let ranks = centered_ranks(&returns);
    let mut grad = vec![0.0f32; theta.len()];
    let indices = rollouts.iter().flat_map(|r| r.noise_indices.iter());
    for (pair, &index) in indices.enumerate() {
        let weight = (ranks[2 * pair] - ranks[2 * pair + 1]) as f32;
        let eps = &noise[index as usize..index as usize + theta.len()];
        grad.iter_mut()
            .zip(eps)
            .for_each(|(g, e)| *g += weight * e.to_native());
    }
    let scale = 1.0 / returns.len().max(1) as f32;
    for (g, t) in grad.iter_mut().zip(theta) {
        *g = -*g * scale + l2 * t;
    }
    grad
}

/// Centered ranks in [-0.5, 0.5] of every return (ties broken by position).
pub fn centered_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let top = (values.len().max(2) - 1) as f64;
    for (rank, &i) in order.iter().enumerate() {
        ranks[i] = rank as f64 / top - 0.5;
    }
    ranks
}

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EsOutcome {
    /// One entry per iteration.
    pub log: Vec<IterationLog>,
    /// The mean return of the last evaluation over `solve_episodes` episodes, if one ran.
    pub final_eval: Option<f64>,
    /// The iteration after which the target was reached.
    pub solved_at_iter: Option<usize>,
    /// Seconds from the start of [`train`] to its end.
    pub wall_s: f64,
    /// Seconds spent making the noise table and starting the workers.
    pub setup_s: f64,
    /// Environment steps taken in all.
    pub steps: u64,
    /// The policy's final parameters.
    pub theta: Vec<f32>,
    /// The final observation statistics.
    #[serde(skip)]
    pub stat: RunningStat,
}

/// A started ES cluster: the noise table and the workers.
#[derive(Debug)]
pub struct EsCluster {
    config: EsConfig,
    noise: ArchivedRef<Vec<f32>>,
    workers: Vec<ActorHandle<EsWorker>>,
}

impl EsCluster {
    /// Makes the noise table (by a task, into the object store) and starts the workers, each
    /// holding one CPU.
    pub fn start(config: &EsConfig) -> prism::Result<Self> {
        let table = create_noise::remote(config.noise_size as u64, config.seed);
        let workers: Vec<ActorHandle<EsWorker>> = (0..config.workers)
            .map(|_| {
                EsWorker::options()
                    .num_cpus(1.0)
                    .remote(table.clone(), config.clone())
            })
            .collect();
        let noise = prism::get_archived_blocking(&table)?;
        Ok(EsCluster {
            config: config.clone(),
            noise,
            workers,
        })
    }

    /// The workers.
    pub fn workers(&self) -> &[ActorHandle<EsWorker>] {
        &self.workers
    }

    /// The mapped noise table.
    pub fn noise(&self) -> &[prism::Archived<f32>] {
        &self.noise
    }

    /// `total` split as evenly as possible over the workers.
    fn shares(&self, total: usize) -> impl Iterator<Item = (usize, &ActorHandle<EsWorker>)> {
        let n = self.workers.len();
        self.workers
            .iter()
            .enumerate()
            .map(move |(i, w)| (total / n + usize::from(i < total % n), w))
    }

    /// Mean return of `episodes` unperturbed episodes, spread over the workers.
    pub fn evaluate(
        &self,
        theta: &[f32],
        stat: &RunningStat,
        episodes: usize,
        seed: u64,
    ) -> prism::Result<f64> {
        let theta = prism::put_ref(&theta.to_vec())?;
        let stat = prism::put_ref(stat)?;
        let calls: Vec<ObjectRef<Vec<f64>>> = self
            .shares(episodes)
            .enumerate()
            .map(|(i, (n, w))| w.evaluate(&theta, &stat, n as u64, seed ^ (i as u64 + 1)))
            .collect();
        let returns: Vec<f64> = prism::get_all_blocking(&calls)?.concat();
        Ok(mean(&returns))
    }

    /// Trains; calls `progress` after every iteration.
    pub fn train(&self, mut progress: impl FnMut(&IterationLog)) -> prism::Result<EsOutcome> {
        let start = Instant::now();
        let config = &self.config;
        let mlp = config.mlp();
        let mut init_rng = SmallRng::seed_from_u64(config.seed ^ 0x5eed);
        let mut theta = mlp.init(&mut init_rng, 0.01);
        let mut adam = Adam::new(theta.len(), config.lr);
        let mut stat = RunningStat::new(config.env.obs_dim());
        let mut seeds = Rng::new(config.seed.wrapping_mul(0x9e37_79b9) ^ 0xe5);
        let mut outcome = EsOutcome {
            log: Vec::new(),
            final_eval: None,
            solved_at_iter: None,
            wall_s: 0.0,
            setup_s: 0.0,
            steps: 0,
            theta: Vec::new(),
            stat: RunningStat::new(0),
        };
        for iter in 1..=config.max_iters {
            let theta_ref = prism::put_ref(&theta)?;
            let stat_ref = prism::put_ref(&stat)?;
            let evals: Vec<usize> = self.shares(config.eval_per_iter).map(|s| s.0).collect();
            let calls: Vec<ObjectRef<Rollouts>> = self
                .shares(config.pairs)
                .zip(evals)
                .map(|((pairs, w), evals)| {
                    w.rollouts(
                        &theta_ref,
                        &stat_ref,
                        pairs as u64,
                        evals as u64,
                        seeds.next_u64(),
                    )
                })
                .collect();
            let results = prism::get_all_blocking(&calls)?;

            let mut returns = Vec::new();
            let mut eval_returns = Vec::new();
            let mut steps = 0;
            for r in &results {
                returns.extend(r.returns.iter().flatten().copied());
                eval_returns.extend(&r.eval_returns);
                steps += r.steps;
                stat.merge(&r.seen);
            }
            let grad = gradient(&self.noise, &theta, &results, config.l2);
            adam.step(&mut theta, &grad);
            outcome.steps += steps;

            let entry = IterationLog {
                iter,
                time_s: start.elapsed().as_secs_f64(),
                mean_return: if eval_returns.is_empty() {
                    mean(&returns)
                } else {
                    mean(&eval_returns)
                },
                mean_train_return: mean(&returns),
                episodes: returns.len() + eval_returns.len(),
                steps: outcome.steps,
            };
            progress(&entry);
            let reached = config.target.is_some_and(|t| entry.mean_return >= t);
            outcome.log.push(entry);
            if reached {
                let eval = self.evaluate(&theta, &stat, config.solve_episodes, seeds.next_u64())?;
                outcome.final_eval = Some(eval);
                if config.target.is_some_and(|t| eval >= t) {
                    outcome.solved_at_iter = Some(iter);
                    break;
                }
            }
        }
        if outcome.solved_at_iter.is_none() && config.solve_episodes > 0 {
            let eval = self.evaluate(&theta, &stat, config.solve_episodes, seeds.next_u64())?;
            outcome.final_eval = Some(eval);
        }
        outcome.wall_s = start.elapsed().as_secs_f64();
        outcome.theta = theta;
        outcome.stat = stat;
        Ok(outcome)
    }
}

/// The mean (0 for no values).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Framework overhead: the same batches of rollouts run bare on one thread, then on every
/// worker at once through Prism.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overhead {
    /// Environment steps per second of the bare loop on one thread.
    pub bare_steps_per_s: f64,
    /// Environment steps per second of all workers through Prism.
    pub prism_steps_per_s: f64,
    /// Number of CPUs the ideal is scaled by.
    pub cpus: usize,
    /// `prism_steps_per_s / (bare_steps_per_s * cpus)`.
    pub efficiency: f64,
}

impl EsCluster {
    /// Measures [`Overhead`]: `batches` batches of `config.pairs` pairs with `theta`, timed
    /// bare, then the same batches on each worker concurrently.
    pub fn overhead(
        &self,
        theta: &[f32],
        stat: &RunningStat,
        batches: usize,
        cpus: usize,
    ) -> prism::Result<Overhead> {
        let pairs = self.config.pairs;
        let mut bare = Evaluator::new(&self.config);
        let start = Instant::now();
        let mut bare_steps = 0;
        for b in 0..batches {
            bare_steps += bare
                .rollouts(self.noise(), theta, stat, pairs, 0, b as u64)
                .steps;
        }
        let bare_rate = bare_steps as f64 / start.elapsed().as_secs_f64();

        let theta_ref = prism::put_ref(&theta.to_vec())?;
        let stat_ref = prism::put_ref(stat)?;
        let start = Instant::now();
        let calls: Vec<ObjectRef<Rollouts>> = (0..batches)
            .flat_map(|b| self.workers.iter().map(move |w| (b, w)))
            .map(|(b, w)| w.rollouts(&theta_ref, &stat_ref, pairs as u64, 0, b as u64))
            .collect();
        let steps: u64 = prism::get_all_blocking(&calls)?
            .iter()
            .map(|r| r.steps)
            .sum();
        let prism_rate = steps as f64 / start.elapsed().as_secs_f64();
        Ok(Overhead {
            bare_steps_per_s: bare_rate,
            prism_steps_per_s: prism_rate,
            cpus,
            efficiency: prism_rate / (bare_rate * cpus as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centered_ranks_span_minus_half_to_half() {
        let ranks = centered_ranks(&[3.0, -1.0, 10.0, 0.0]);
        assert_eq!(ranks, vec![2.0 / 3.0 - 0.5, -0.5, 0.5, 1.0 / 3.0 - 0.5]);
    }
}
