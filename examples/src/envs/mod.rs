//! Environments of the Ray paper's RL workloads, with Gymnasium's exact dynamics, rewards,
//! termination and time limits (proved by replaying golden trajectories recorded with
//! Python `gymnasium`, see `examples/goldens/`).

mod cartpole;
#[cfg(feature = "mujoco")]
mod mujoco;
mod pendulum;

pub use cartpole::CartPole;
#[cfg(feature = "mujoco")]
pub use mujoco::{Hopper, Humanoid};
pub use pendulum::Pendulum;

/// The environments by name (the examples' `--env` flag).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum EnvName {
    /// CartPole-v1: 4 observations, 2 discrete actions, at most 500 steps.
    Cartpole,
    /// Pendulum-v1: 3 observations, one torque in [-2, 2], 200 steps.
    Pendulum,
    /// Hopper-v5 (MuJoCo; the `mujoco` feature): 11 observations, 3 torques in [-1, 1],
    /// 1000 steps.
    Hopper,
    /// Humanoid-v5 (MuJoCo; the `mujoco` feature): 348 observations, 17 torques in
    /// [-0.4, 0.4], 1000 steps.
    Humanoid,
}

/// What an agent may do in an environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActionSpace {
    /// One of `n` actions.
    Discrete(usize),
    /// A vector of `dim` values, each in `[low, high]`.
    Continuous {
        /// Number of values.
        dim: usize,
        /// Smallest value of each.
        low: f64,
        /// Largest value of each.
        high: f64,
    },
}

impl ActionSpace {
    /// How many outputs a policy network needs: one logit per discrete action, one mean per
    /// continuous dimension.
    pub fn policy_outputs(self) -> usize {
        match self {
            ActionSpace::Discrete(n) => n,
            ActionSpace::Continuous { dim, .. } => dim,
        }
    }
}

/// An action for [`Env::step`].
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// A discrete action's index.
    Discrete(usize),
    /// Continuous values (clipped to the space's bounds by the environment).
    Continuous(&'a [f32]),
}

/// Observation and action sizes and control range of the MuJoCo environments, known without
/// the `mujoco` feature so that flags and errors can name them.
const HOPPER: (usize, usize, f64) = (11, 3, 1.0);
const HUMANOID: (usize, usize, f64) = (348, 17, 0.4);
/// Gymnasium's `max_episode_steps` for Hopper-v5 and Humanoid-v5.
const MUJOCO_MAX_STEPS: u32 = 1000;

impl EnvName {
    /// Whether this build can run the environment: the MuJoCo ones need the `mujoco` feature.
    pub fn available(self) -> Result<(), String> {
        match self {
            EnvName::Hopper | EnvName::Humanoid if !cfg!(feature = "mujoco") => Err(format!(
                "{self:?} runs on MuJoCo: run scripts/fetch-mujoco.sh, then build with \
                 `--features mujoco` (e.g. cargo run --release -p prism-examples --features \
                 mujoco --example es -- --env {})",
                format!("{self:?}").to_lowercase()
            )),
            _ => Ok(()),
        }
    }

    /// Size of an observation.
    pub fn obs_dim(self) -> usize {
        match self {
            EnvName::Cartpole => CartPole::OBS,
            EnvName::Pendulum => Pendulum::OBS,
            EnvName::Hopper => HOPPER.0,
            EnvName::Humanoid => HUMANOID.0,
        }
    }

    /// The action space.
    pub fn action_space(self) -> ActionSpace {
        match self {
            EnvName::Cartpole => ActionSpace::Discrete(CartPole::ACTIONS),
            EnvName::Pendulum => ActionSpace::Continuous {
                dim: 1,
                low: -pendulum::MAX_TORQUE_F64,
                high: pendulum::MAX_TORQUE_F64,
            },
            EnvName::Hopper => ActionSpace::Continuous {
                dim: HOPPER.1,
                low: -HOPPER.2,
                high: HOPPER.2,
            },
            EnvName::Humanoid => ActionSpace::Continuous {
                dim: HUMANOID.1,
                low: -HUMANOID.2,
                high: HUMANOID.2,
            },
        }
    }

    /// The longest episode (the time limit).
    pub fn max_steps(self) -> u32 {
        match self {
            EnvName::Cartpole => cartpole::MAX_STEPS,
            EnvName::Pendulum => pendulum::MAX_STEPS,
            EnvName::Hopper | EnvName::Humanoid => MUJOCO_MAX_STEPS,
        }
    }

    /// A new episode, reset from `rng`. Panics for an environment this build cannot run
    /// (check [`EnvName::available`] first).
    pub fn make(self, rng: &mut Rng) -> Env {
        match self {
            EnvName::Cartpole => Env::CartPole(CartPole::new(rng)),
            EnvName::Pendulum => Env::Pendulum(Pendulum::new(rng)),
            #[cfg(feature = "mujoco")]
            EnvName::Hopper => Env::Hopper(Box::new(Hopper::new(rng))),
            #[cfg(feature = "mujoco")]
            EnvName::Humanoid => Env::Humanoid(Box::new(Humanoid::new(rng))),
            #[cfg(not(feature = "mujoco"))]
            EnvName::Hopper | EnvName::Humanoid => {
                panic!("{}", self.available().expect_err("MuJoCo is off"))
            }
        }
    }
}

/// An episode of one of the environments.
#[derive(Debug, Clone)]
pub enum Env {
    /// CartPole-v1.
    CartPole(CartPole),
    /// Pendulum-v1.
    Pendulum(Pendulum),
    /// Hopper-v5.
    #[cfg(feature = "mujoco")]
    Hopper(Box<Hopper>),
    /// Humanoid-v5.
    #[cfg(feature = "mujoco")]
    Humanoid(Box<Humanoid>),
}

impl Env {
    /// The current observation.
    pub fn obs(&self) -> Vec<f64> {
        match self {
            Env::CartPole(env) => env.obs(),
            Env::Pendulum(env) => env.obs(),
            #[cfg(feature = "mujoco")]
            Env::Hopper(env) => env.obs(),
            #[cfg(feature = "mujoco")]
            Env::Humanoid(env) => env.obs(),
        }
    }

    /// Applies `action`. Panics if the action does not fit the environment's space (a bug in
    /// the caller, not bad input).
    pub fn step(&mut self, action: Action<'_>) -> Step {
        match (self, action) {
            (Env::CartPole(env), Action::Discrete(a)) => env.step(a),
            (Env::Pendulum(env), Action::Continuous(u)) => env.step(f64::from(u[0])),
            #[cfg(feature = "mujoco")]
            (Env::Hopper(env), Action::Continuous(u)) => env.step(&widen(u)),
            #[cfg(feature = "mujoco")]
            (Env::Humanoid(env), Action::Continuous(u)) => env.step(&widen(u)),
            (env, action) => panic!("{action:?} does not fit {env:?}"),
        }
    }
}

/// What one step returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The observation after the step (as Gymnasium's float32 observation, widened).
    pub obs: Vec<f64>,
    /// The step's reward.
    pub reward: f64,
    /// The episode ended inside the environment (the pole fell, the cart left the track).
    pub terminated: bool,
    /// The episode hit the time limit.
    pub truncated: bool,
}

/// SplitMix64: a small seedable generator for initial states and exploration.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }

    /// A standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform(0.0, 1.0).max(f64::MIN_POSITIVE);
        let v = self.uniform(0.0, 1.0);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A policy's f32 action as the f64 controls MuJoCo takes.
#[cfg(feature = "mujoco")]
fn widen(action: &[f32]) -> Vec<f64> {
    action.iter().map(|a| f64::from(*a)).collect()
}

/// Widens a value through f32, as Gymnasium's float32 observations do.
pub(crate) fn f32_obs(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| f64::from(*v as f32)).collect()
}
