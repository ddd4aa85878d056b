//! CartPole-v1 as Gymnasium defines it: Euler integration with tau = 0.02, a force of +-10 N,
//! termination when |x| > 2.4 or |theta| > 12 degrees, reward 1 per step (the terminal step
//! included), truncation at 500 steps.

use super::{Rng, Step, f32_obs};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
const LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_LIMIT: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_LIMIT: f64 = 2.4;
/// Gymnasium's `max_episode_steps` for CartPole-v1.
pub const MAX_STEPS: u32 = 500;

/// The cart and its pole.
#[derive(Debug, Clone)]
pub struct CartPole {
    state: [f64; 4],
    steps: u32,
}

impl CartPole {
    /// Observation size: x, x_dot, theta, theta_dot.
    pub const OBS: usize = 4;
    /// Number of discrete actions: push left (0) or right (1).
    pub const ACTIONS: usize = 2;

    /// A new episode, every state variable uniform in [-0.05, 0.05) (as Gymnasium's reset).
    pub fn new(rng: &mut Rng) -> Self {
        Self::from_state([
            rng.uniform(-0.05, 0.05),
            rng.uniform(-0.05, 0.05),
            rng.uniform(-0.05, 0.05),
            rng.uniform(-0.05, 0.05),
        ])
    }

    /// A new episode from an exact internal state.
    pub fn from_state(state: [f64; 4]) -> Self {
        CartPole { state, steps: 0 }
    }

    /// The current observation.
    pub fn obs(&self) -> Vec<f64> {
        f32_obs(&self.state)
    }

    /// Applies action 0 (left) or 1 (right).
    pub fn step(&mut self, action: usize) -> Step {
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { FORCE } else { -FORCE };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
        self.steps += 1;
        let [x, _, theta, _] = self.state;
        let terminated =
            !(-X_LIMIT..=X_LIMIT).contains(&x) || !(-THETA_LIMIT..=THETA_LIMIT).contains(&theta);
        Step {
            obs: self.obs(),
            reward: 1.0,
            terminated,
            truncated: self.steps >= MAX_STEPS,
        }
    }
}
