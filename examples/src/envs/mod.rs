//! Environments of the Ray paper's RL workloads, with Gymnasium's exact dynamics, rewards,
//! termination and time limits (proved by replaying golden trajectories recorded with
//! Python `gymnasium`, see `examples/goldens/`).

mod cartpole;
mod pendulum;

pub use cartpole::CartPole;
pub use pendulum::Pendulum;

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

/// Widens a value through f32, as Gymnasium's float32 observations do.
pub(crate) fn f32_obs(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| f64::from(*v as f32)).collect()
}
