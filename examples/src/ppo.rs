//! Proximal Policy Optimization (Schulman et al. 2017) as the Ray paper ran it: rollout-worker
//! actors, each stepping several environments, return sample batches (with GAE already
//! computed, as RLlib's workers post-process) through the object store; a learner actor, which
//! may ask for `num_gpus`, runs minibatch Adam epochs of the clipped surrogate and value loss and
//! hands back new weights, which the driver broadcasts with one `put`.
//!
//! The policy is a tanh MLP: logits for discrete actions, or the mean of a Gaussian with a
//! state-independent log standard deviation for continuous ones; the value function is a
//! separate MLP of the same shape.

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use prism::{ActorHandle, ObjectRef, actor};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use crate::envs::{Action, ActionSpace, Env, EnvName, Rng};
use crate::filter::{RunningStat, Standardize};
use crate::nn::{Adam, Mlp, Scratch};
use crate::report::IterationLog;

const LOG_2PI: f32 = 1.837_877_1;

/// Everything a run of PPO is configured by (each is a flag of the `ppo` example).
#[derive(Debug, Clone, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PpoConfig {
    /// The environment.
    pub env: EnvName,
    /// Rollout-worker actors (each holds one CPU).
    pub workers: usize,
    /// Environments each worker steps.
    pub envs_per_worker: usize,
    /// Steps per environment per iteration (the horizon T).
    pub horizon: usize,
    /// Discount.
    pub gamma: f32,
    /// GAE's lambda.
    pub lambda: f32,
    /// Adam's step size.
    pub lr: f32,
    /// Epochs over each batch.
    pub epochs: usize,
    /// Minibatch size.
    pub minibatch: usize,
    /// Clipping range epsilon.
    pub clip: f32,
    /// Hidden layer widths of the policy and value networks.
    pub hidden: Vec<usize>,
    /// Logical GPUs the learner asks for.
    pub learner_gpus: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// The most iterations.
    pub max_iters: usize,
    /// Mean return of the last 100 episodes that ends training.
    pub target: Option<f64>,
}

impl PpoConfig {
    /// The defaults for `env`: the paper's (T 2048 steps per iteration in all, 10 epochs,
    /// minibatches of 64, lr 3e-4, gamma 0.99, lambda 0.95, clip 0.2, 64x64 tanh). Pendulum
    /// takes gamma 0.9 and lr 1e-3 (as the common tuned settings; its reward is dense and
    /// short-horizon).
    pub fn new(env: EnvName, workers: usize) -> Self {
        let workers = workers.max(1);
        let base = PpoConfig {
            env,
            workers,
            envs_per_worker: 4,
            horizon: 2048 / (4 * workers),
            gamma: 0.99,
            lambda: 0.95,
            lr: 3e-4,
            epochs: 10,
            minibatch: 64,
            clip: 0.2,
            hidden: vec![64, 64],
            learner_gpus: 0.0,
            seed: 0,
            max_iters: 300,
            target: Some(solved_at(env)),
        };
        match env {
            EnvName::Cartpole => base,
            EnvName::Pendulum => PpoConfig {
                gamma: 0.9,
                lr: 1e-3,
                max_iters: 500,
                ..base
            },
            // The paper's MuJoCo setting: one million steps.
            EnvName::Hopper | EnvName::Humanoid => PpoConfig {
                max_iters: 489,
                ..base
            },
        }
    }

    fn policy(&self) -> Mlp {
        Mlp::new(
            self.env.obs_dim(),
            &self.hidden,
            self.env.action_space().policy_outputs(),
        )
    }

    fn value(&self) -> Mlp {
        Mlp::new(self.env.obs_dim(), &self.hidden, 1)
    }

    /// Where each part lives in the flat parameter vector: policy, log std, value.
    fn layout(&self) -> Layout {
        let policy = self.policy().num_params();
        let log_std = match self.env.action_space() {
            ActionSpace::Discrete(_) => 0,
            ActionSpace::Continuous { dim, .. } => dim,
        };
        Layout {
            policy,
            log_std,
            value: self.value().num_params(),
        }
    }
}

/// The mean return of the last 100 episodes that counts as solved: 475 for CartPole-v1, -300
/// for Pendulum-v1, Gymnasium's 3,800 for Hopper-v5, 6,000 for Humanoid-v5.
pub fn solved_at(env: EnvName) -> f64 {
    match env {
        EnvName::Cartpole => 475.0,
        EnvName::Pendulum => -300.0,
        EnvName::Hopper => 3800.0,
        EnvName::Humanoid => 6000.0,
    }
}

#[derive(Debug, Clone, Copy)]
struct Layout {
    policy: usize,
    log_std: usize,
    value: usize,
}

impl Layout {
    fn split<'a>(&self, params: &'a [f32]) -> (&'a [f32], &'a [f32], &'a [f32]) {
        let (policy, rest) = params.split_at(self.policy);
        let (log_std, value) = rest.split_at(self.log_std);
        (policy, log_std, value)
    }

    fn len(&self) -> usize {
        self.policy + self.log_std + self.value
    }
}

/// The weights workers sample with: the parameters and the observation statistics.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Weights {
    /// Policy, log standard deviations, value function.
    pub params: Vec<f32>,
    /// Observation statistics to standardise with.
    pub stat: RunningStat,
}

/// A worker's experience of one iteration, ready for the learner.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SampleBatch {
    /// Standardised observations, `steps x obs_dim`.
    pub obs: Vec<f32>,
    /// Actions, `steps x act_dim` (a discrete action's index as one value).
    pub actions: Vec<f32>,
    /// Log-probability of each action under the sampling policy.
    pub logp: Vec<f32>,
    /// GAE advantages.
    pub advantages: Vec<f32>,
    /// Targets of the value function (advantage + value).
    pub value_targets: Vec<f32>,
    /// Returns of the episodes that ended during the iteration.
    pub episode_returns: Vec<f64>,
    /// Raw observations seen.
    pub seen: RunningStat,
}

/// One step of one environment, kept until GAE runs.
#[derive(Debug, Clone, Copy)]
struct Transition {
    reward: f32,
    value: f32,
    /// Value of the next state (0 after termination; the final state's value after truncation).
    next_value: f32,
    /// Whether the episode ended here (GAE does not look past it).
    end: bool,
}

/// Steps several environments with the current policy: the part of a rollout worker that does
/// not depend on Prism.
#[derive(Debug)]
pub struct Sampler {
    config: PpoConfig,
    layout: Layout,
    policy: Mlp,
    value: Mlp,
    envs: Vec<(Env, Vec<f64>, f64)>,
    rng: Rng,
    scratch: Scratch,
    obs: Vec<f32>,
}

impl Sampler {
    /// A sampler whose episodes are seeded from `seed`.
    pub fn new(config: &PpoConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let envs = (0..config.envs_per_worker)
            .map(|_| {
                let env = config.env.make(&mut rng);
                let obs = env.obs();
                (env, obs, 0.0)
            })
            .collect();
        Sampler {
            layout: config.layout(),
            policy: config.policy(),
            value: config.value(),
            config: config.clone(),
            envs,
            rng,
            scratch: Scratch::default(),
            obs: Vec::new(),
        }
    }

    fn value_of(&mut self, value: &[f32], filter: &Standardize, obs: &[f64]) -> f32 {
        filter.apply(obs, &mut self.obs);
        self.value.forward(value, &self.obs, &mut self.scratch)[0]
    }

    /// `horizon` steps of every environment with `weights`.
    pub fn sample(&mut self, weights: &Weights) -> SampleBatch {
        let (policy, log_std, value) = self.layout.split(&weights.params);
        let filter = Standardize::new(&weights.stat);
        let space = self.config.env.action_space();
        let act_dim = match space {
            ActionSpace::Discrete(_) => 1,
            ActionSpace::Continuous { dim, .. } => dim,
        };
        let steps = self.config.horizon * self.envs.len();
        let obs_dim = self.config.env.obs_dim();
        let mut batch = SampleBatch {
            obs: Vec::with_capacity(steps * obs_dim),
            actions: Vec::with_capacity(steps * act_dim),
            logp: Vec::with_capacity(steps),
            advantages: Vec::new(),
            value_targets: Vec::new(),
            episode_returns: Vec::new(),
            seen: RunningStat::new(obs_dim),
        };
        // Per environment, its transitions in order; then GAE per environment.
        let mut trajectories: Vec<Vec<Transition>> = vec![Vec::new(); self.envs.len()];
        let mut order = Vec::with_capacity(steps);
        let mut action = vec![0.0f32; act_dim];
        for _ in 0..self.config.horizon {
            for (e, trajectory) in trajectories.iter_mut().enumerate() {
                let raw = self.envs[e].1.clone();
                batch.seen.push(&raw);
                let v = self.value_of(value, &filter, &raw);
                batch.obs.extend_from_slice(&self.obs);
                let out = self.policy.forward(policy, &self.obs, &mut self.scratch);
                let (step, logp) = match space {
                    ActionSpace::Discrete(_) => {
                        let (a, logp) = sample_categorical(out, &mut self.rng);
                        action[0] = a as f32;
                        (self.envs[e].0.step(Action::Discrete(a)), logp)
                    }
                    ActionSpace::Continuous { low, high, .. } => {
                        let mut logp = 0.0;
                        for (i, a) in action.iter_mut().enumerate() {
                            let std = log_std[i].exp();
                            let noise = self.rng.normal() as f32;
                            *a = out[i] + std * noise;
                            logp += -0.5 * noise * noise - log_std[i] - 0.5 * LOG_2PI;
                        }
                        let clipped: Vec<f32> = action
                            .iter()
                            .map(|a| a.clamp(low as f32, high as f32))
                            .collect();
                        (self.envs[e].0.step(Action::Continuous(&clipped)), logp)
                    }
                };
                batch.actions.extend_from_slice(&action);
                batch.logp.push(logp);
                self.envs[e].2 += step.reward;
                let end = step.terminated || step.truncated;
                let next_value = if step.terminated {
                    0.0
                } else if step.truncated {
                    self.value_of(value, &filter, &step.obs)
                } else {
                    f32::NAN // filled in from the next step's value below
                };
                trajectory.push(Transition {
                    reward: step.reward as f32,
                    value: v,
                    next_value,
                    end,
                });
                order.push((e, trajectory.len() - 1));
                if end {
                    batch.episode_returns.push(self.envs[e].2);
                    let env = self.config.env.make(&mut self.rng);
                    self.envs[e] = (env.clone(), env.obs(), 0.0);
                } else {
                    self.envs[e].1 = step.obs;
                }
            }
        }
        // Bootstrap each unfinished trajectory from the value of where it stands.
        for (e, traj) in trajectories.iter_mut().enumerate() {
            let raw = self.envs[e].1.clone();
            let bootstrap = self.value_of(value, &filter, &raw);
            for t in 0..traj.len() {
                if traj[t].next_value.is_nan() {
                    traj[t].next_value = traj.get(t + 1).map_or(bootstrap, |n| n.value);
                }
            }
        }
        let (gamma, lambda) = (self.config.gamma, self.config.lambda);
        let advantages: Vec<Vec<f32>> = trajectories
            .iter()
            .map(|traj| {
                let mut adv = vec![0.0f32; traj.len()];
                let mut running = 0.0;
                for t in (0..traj.len()).rev() {
                    let tr = traj[t];
                    if tr.end {
                        running = 0.0;
                    }
                    let delta = tr.reward + gamma * tr.next_value - tr.value;
                    running = delta + gamma * lambda * running;
                    adv[t] = running;
                }
                adv
            })
            .collect();
        for (e, t) in order {
            let a = advantages[e][t];
            batch.advantages.push(a);
            batch.value_targets.push(a + trajectories[e][t].value);
        }
        batch
    }
}

/// Samples from the softmax of `logits`; returns the action and its log-probability.
fn sample_categorical(logits: &[f32], rng: &mut Rng) -> (usize, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let log_z = max + sum.ln();
    let mut u = rng.uniform(0.0, 1.0) as f32 * sum;
    for (i, l) in logits.iter().enumerate() {
        u -= (l - max).exp();
        if u <= 0.0 {
            return (i, l - log_z);
        }
    }
    let last = logits.len() - 1;
    (last, logits[last] - log_z)
}

/// A rollout worker.
#[actor]
#[derive(Debug)]
pub struct PpoWorker {
    sampler: Sampler,
}

#[actor]
impl PpoWorker {
    /// A worker whose environments are seeded from `seed`.
    pub fn new(config: PpoConfig, seed: u64) -> Self {
        PpoWorker {
            sampler: Sampler::new(&config, seed),
        }
    }

    /// One iteration's experience with `weights`.
    pub fn sample(&mut self, weights: Weights) -> SampleBatch {
        self.sampler.sample(&weights)
    }
}

/// What one learner update reports.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct UpdateReport {
    /// The new weights.
    pub weights: Weights,
    /// Returns of the episodes that ended in the batches.
    pub episode_returns: Vec<f64>,
    /// Steps in the batches.
    pub steps: u64,
    /// Mean clipped-surrogate loss of the last epoch.
    pub policy_loss: f32,
    /// Mean value loss of the last epoch.
    pub value_loss: f32,
}

/// The PPO learner: the parameters, Adam, and the minibatch epochs.
#[derive(Debug)]
pub struct Optimizer {
    config: PpoConfig,
    layout: Layout,
    policy: Mlp,
    value: Mlp,
    params: Vec<f32>,
    adam: Adam,
    stat: RunningStat,
    rng: SmallRng,
}

impl Optimizer {
    /// Fresh parameters for `config`.
    pub fn new(config: &PpoConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed ^ 0x99);
        let layout = config.layout();
        let policy = config.policy();
        let value = config.value();
        let mut params = policy.init(&mut rng, 0.01);
        params.extend(std::iter::repeat_n(0.0, layout.log_std));
        params.extend(value.init(&mut rng, 1.0));
        Optimizer {
            adam: Adam::new(layout.len(), config.lr),
            config: config.clone(),
            layout,
            policy,
            value,
            params,
            stat: RunningStat::new(config.env.obs_dim()),
            rng,
        }
    }

    /// The current weights.
    pub fn weights(&self) -> Weights {
        Weights {
            params: self.params.clone(),
            stat: self.stat.clone(),
        }
    }

    /// Continues from `weights` (another learner's: a tuning trial taking over a better
    /// one's state), with fresh Adam moments.
    pub fn load_weights(&mut self, weights: Weights) {
        assert_eq!(
            weights.params.len(),
            self.params.len(),
            "weights of another network"
        );
        self.params = weights.params;
        self.stat = weights.stat;
    }

    /// Epochs of minibatch Adam over `batches`.
    pub fn update(&mut self, batches: &[SampleBatch]) -> UpdateReport {
        let obs_dim = self.config.env.obs_dim();
        let space = self.config.env.action_space();
        let act_dim = match space {
            ActionSpace::Discrete(_) => 1,
            ActionSpace::Continuous { dim, .. } => dim,
        };
        let obs: Vec<f32> = batches.iter().flat_map(|b| b.obs.iter().copied()).collect();
        let actions: Vec<f32> = batches
            .iter()
            .flat_map(|b| b.actions.iter().copied())
            .collect();
        let logp_old: Vec<f32> = batches
            .iter()
            .flat_map(|b| b.logp.iter().copied())
            .collect();
        let targets: Vec<f32> = batches
            .iter()
            .flat_map(|b| b.value_targets.iter().copied())
            .collect();
        let mut adv: Vec<f32> = batches
            .iter()
            .flat_map(|b| b.advantages.iter().copied())
            .collect();
        let n = adv.len();
        let mean = adv.iter().sum::<f32>() / n as f32;
        let std = (adv.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n as f32).sqrt();
        adv.iter_mut().for_each(|a| *a = (*a - mean) / (std + 1e-8));
        let obs = ArrayView2::from_shape((n, obs_dim), &obs[..]).expect("observations");

        let mut index: Vec<usize> = (0..n).collect();
        let (mut policy_loss, mut value_loss) = (0.0, 0.0);
        for _ in 0..self.config.epochs {
            index.shuffle(&mut self.rng);
            let (mut pl_sum, mut vl_sum, mut count) = (0.0, 0.0, 0);
            for chunk in index.chunks(self.config.minibatch) {
                let x = obs.select(ndarray::Axis(0), chunk);
                let (grad, pl, vl) = self.minibatch_grad(
                    x.view(),
                    chunk,
                    &actions,
                    act_dim,
                    &logp_old,
                    &adv,
                    &targets,
                );
                self.adam.step(&mut self.params, &grad);
                pl_sum += pl;
                vl_sum += vl;
                count += 1;
            }
            policy_loss = pl_sum / count as f32;
            value_loss = vl_sum / count as f32;
        }
        for b in batches {
            self.stat.merge(&b.seen);
        }
        UpdateReport {
            weights: self.weights(),
            episode_returns: batches
                .iter()
                .flat_map(|b| b.episode_returns.iter().copied())
                .collect(),
            steps: n as u64,
            policy_loss,
            value_loss,
        }
    }

    /// The gradient of the clipped surrogate plus the value loss on one minibatch, and the two
    /// losses.
    #[allow(clippy::too_many_arguments)]
    fn minibatch_grad(
        &self,
        x: ArrayView2<'_, f32>,
        rows: &[usize],
        actions: &[f32],
        act_dim: usize,
        logp_old: &[f32],
        adv: &[f32],
        targets: &[f32],
    ) -> (Vec<f32>, f32, f32) {
        let (policy, log_std, value) = self.layout.split(&self.params);
        let b = rows.len() as f32;
        let clip = self.config.clip;
        let p_acts = self.policy.forward_batch(policy, x);
        let out = p_acts.output();
        let mut d_out = Array2::<f32>::zeros(out.dim());
        let mut d_log_std = vec![0.0f32; log_std.len()];
        let mut policy_loss = 0.0;
        for (k, &row) in rows.iter().enumerate() {
            let a = &actions[row * act_dim..(row + 1) * act_dim];
            let o = out.row(k);
            // log pi(a|s) and its gradient with respect to the outputs (and log std).
            let logp = match self.config.env.action_space() {
                ActionSpace::Discrete(_) => {
                    let max = o.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let z: f32 = o.iter().map(|l| (l - max).exp()).sum();
                    o[a[0] as usize] - max - z.ln()
                }
                ActionSpace::Continuous { .. } => (0..act_dim)
                    .map(|i| {
                        let s = log_std[i];
                        let u = (a[i] - o[i]) / s.exp();
                        -0.5 * u * u - s - 0.5 * LOG_2PI
                    })
                    .sum(),
            };
            let ratio = (logp - logp_old[row]).exp();
            let clipped = ratio.clamp(1.0 - clip, 1.0 + clip);
            let surrogate = (ratio * adv[row]).min(clipped * adv[row]);
            policy_loss -= surrogate / b;
            // d(-surrogate/b)/d logp, zero where the clipped term is the smaller one.
            let active =
                (adv[row] >= 0.0 && ratio < 1.0 + clip) || (adv[row] < 0.0 && ratio > 1.0 - clip);
            if !active {
                continue;
            }
            let g = -adv[row] * ratio / b;
            match self.config.env.action_space() {
                ActionSpace::Discrete(_) => {
                    let max = o.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let z: f32 = o.iter().map(|l| (l - max).exp()).sum();
                    for (j, l) in o.iter().enumerate() {
                        let onehot = if j == a[0] as usize { 1.0 } else { 0.0 };
                        d_out[[k, j]] += g * (onehot - (l - max).exp() / z);
                    }
                }
                ActionSpace::Continuous { .. } => {
                    for i in 0..act_dim {
                        let var = (2.0 * log_std[i]).exp();
                        let diff = a[i] - o[i];
                        d_out[[k, i]] += g * diff / var;
                        d_log_std[i] += g * (diff * diff / var - 1.0);
                    }
                }
            }
        }
        let mut grad = self.policy.backward(policy, &p_acts, d_out);
        grad.extend_from_slice(&d_log_std);

        let v_acts = self.value.forward_batch(value, x);
        let v = v_acts.output();
        let mut d_v = Array2::<f32>::zeros(v.dim());
        let mut value_loss = 0.0;
        for (k, &row) in rows.iter().enumerate() {
            let err = v[[k, 0]] - targets[row];
            value_loss += 0.5 * err * err / b;
            d_v[[k, 0]] = err / b;
        }
        grad.extend(self.value.backward(value, &v_acts, d_v));
        (grad, policy_loss, value_loss)
    }
}

/// The learner actor.
#[actor]
#[derive(Debug)]
pub struct Learner {
    optimizer: Optimizer,
}

#[actor]
impl Learner {
    /// A learner with fresh parameters.
    pub fn new(config: PpoConfig) -> Self {
        Learner {
            optimizer: Optimizer::new(&config),
        }
    }

    /// The current weights.
    pub fn weights(&self) -> Weights {
        self.optimizer.weights()
    }

    /// One update from the workers' batches (read from the object store here).
    pub fn update(&mut self, batches: Vec<ObjectRef<SampleBatch>>) -> UpdateReport {
        let batches = prism::get_all_blocking(&batches).expect("the workers' sample batches");
        self.optimizer.update(&batches)
    }
}

/// How a run ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PpoOutcome {
    /// One entry per iteration.
    pub log: Vec<IterationLog>,
    /// The iteration after which the last 100 episodes reached the target.
    pub solved_at_iter: Option<usize>,
    /// Mean return of the last 100 episodes at the end.
    pub final_mean_return: f64,
    /// Seconds of training.
    pub wall_s: f64,
    /// Environment steps in all.
    pub steps: u64,
}

/// Runs PPO on the cluster; calls `progress` after every iteration.
pub fn train(
    config: &PpoConfig,
    mut progress: impl FnMut(&IterationLog),
) -> prism::Result<PpoOutcome> {
    let start = Instant::now();
    let learner = Learner::options()
        .num_gpus(config.learner_gpus)
        .remote(config.clone());
    let workers: Vec<ActorHandle<PpoWorker>> = (0..config.workers)
        .map(|i| {
            PpoWorker::options()
                .num_cpus(1.0)
                .remote(config.clone(), config.seed.wrapping_mul(1000) + i as u64)
        })
        .collect();
    let mut weights: ObjectRef<Weights> = learner.weights();
    let mut recent: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut outcome = PpoOutcome {
        log: Vec::new(),
        solved_at_iter: None,
        final_mean_return: f64::NAN,
        wall_s: 0.0,
        steps: 0,
    };
    for iter in 1..=config.max_iters {
        let batches: Vec<ObjectRef<SampleBatch>> =
            workers.iter().map(|w| w.sample(&weights)).collect();
        let report = learner.update(batches).get_blocking()?;
        weights = prism::put(report.weights)?;
        outcome.steps += report.steps;
        let episodes = report.episode_returns.len();
        for r in &report.episode_returns {
            recent.push_back(*r);
            if recent.len() > 100 {
                recent.pop_front();
            }
        }
        let recent_mean = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        let entry = IterationLog {
            iter,
            time_s: start.elapsed().as_secs_f64(),
            mean_return: recent_mean,
            mean_train_return: crate::es::mean(&report.episode_returns),
            episodes,
            steps: outcome.steps,
        };
        progress(&entry);
        outcome.log.push(entry);
        outcome.final_mean_return = recent_mean;
        if recent.len() >= 100 && config.target.is_some_and(|t| recent_mean >= t) {
            outcome.solved_at_iter = Some(iter);
            break;
        }
    }
    outcome.wall_s = start.elapsed().as_secs_f64();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient of the PPO loss matches finite differences (discrete and
    /// continuous policies), away from the clipping boundary.
    #[test]
    fn ppo_loss_gradient_matches_finite_differences() {
        for env in [EnvName::Cartpole, EnvName::Pendulum] {
            let mut config = PpoConfig::new(env, 1);
            config.hidden = vec![8];
            config.horizon = 8;
            config.envs_per_worker = 1;
            let mut opt = Optimizer::new(&config);
            // Give the policy some spread so the loss depends on it.
            opt.params
                .iter_mut()
                .enumerate()
                .for_each(|(i, p)| *p += 0.05 * (i as f32).sin());
            let mut sampler = Sampler::new(&config, 1);
            let batch = sampler.sample(&opt.weights());
            let n = batch.logp.len();
            let act_dim = batch.actions.len() / n;
            let obs = ArrayView2::from_shape((n, env.obs_dim()), &batch.obs[..]).unwrap();
            let rows: Vec<usize> = (0..n).collect();
            // Shift the old log-probabilities so ratios sit inside the clip range.
            let logp_old: Vec<f32> = batch.logp.iter().map(|l| l + 0.05).collect();
            let adv: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.7).cos()).collect();
            let eval = |o: &Optimizer| {
                o.minibatch_grad(
                    obs,
                    &rows,
                    &batch.actions,
                    act_dim,
                    &logp_old,
                    &adv,
                    &batch.value_targets,
                )
            };
            let loss = |o: &Optimizer| {
                let (_, pl, vl) = eval(o);
                f64::from(pl) + f64::from(vl)
            };
            let (grad, _, _) = eval(&opt);
            let h = 1e-3;
            for k in (0..opt.params.len()).step_by(3) {
                let saved = opt.params[k];
                opt.params[k] = saved + h;
                let plus = loss(&opt);
                opt.params[k] = saved - h;
                let minus = loss(&opt);
                opt.params[k] = saved;
                let numeric = (plus - minus) / (2.0 * f64::from(h));
                let analytic = f64::from(grad[k]);
                assert!(
                    (numeric - analytic).abs() <= 5e-3 * (1.0 + numeric.abs()),
                    "{env:?} parameter {k}: finite differences {numeric}, analytic {analytic}"
                );
            }
        }
    }
}
