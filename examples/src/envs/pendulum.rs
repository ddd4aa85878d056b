//! Pendulum-v1 as Gymnasium defines it: torque clipped to +-2, dt = 0.05, g = 10, speed
//! clipped to +-8, reward -(angle^2 + 0.1 * speed^2 + 0.001 * torque^2), never terminated,
//! truncated at 200 steps. Observations are (cos theta, sin theta, theta_dot).

use super::{Rng, Step, f32_obs};

const MAX_SPEED: f64 = 8.0;
const MAX_TORQUE: f32 = 2.0;
/// The largest torque, either way.
pub const MAX_TORQUE_F64: f64 = MAX_TORQUE as f64;
const DT: f64 = 0.05;
const G: f64 = 10.0;
const M: f64 = 1.0;
const L: f64 = 1.0;
/// Gymnasium's `max_episode_steps` for Pendulum-v1.
pub const MAX_STEPS: u32 = 200;

/// The pendulum.
#[derive(Debug, Clone)]
pub struct Pendulum {
    theta: f64,
    theta_dot: f64,
    steps: u32,
}

fn angle_normalize(x: f64) -> f64 {
    (x + std::f64::consts::PI).rem_euclid(2.0 * std::f64::consts::PI) - std::f64::consts::PI
}

impl Pendulum {
    /// Observation size: cos theta, sin theta, theta_dot.
    pub const OBS: usize = 3;

    /// A new episode: theta uniform in [-pi, pi), theta_dot in [-1, 1) (as Gymnasium's reset).
    pub fn new(rng: &mut Rng) -> Self {
        Self::from_state([
            rng.uniform(-std::f64::consts::PI, std::f64::consts::PI),
            rng.uniform(-1.0, 1.0),
        ])
    }

    /// A new episode from an exact internal state (theta, theta_dot).
    pub fn from_state(state: [f64; 2]) -> Self {
        Pendulum {
            theta: state[0],
            theta_dot: state[1],
            steps: 0,
        }
    }

    /// The current observation.
    pub fn obs(&self) -> Vec<f64> {
        f32_obs(&[self.theta.cos(), self.theta.sin(), self.theta_dot])
    }

    /// Applies a torque (clipped to +-2; computed in f32 where Gymnasium does).
    pub fn step(&mut self, torque: f64) -> Step {
        let u = (torque as f32).clamp(-MAX_TORQUE, MAX_TORQUE);
        let (th, thdot) = (self.theta, self.theta_dot);
        let costs =
            angle_normalize(th).powi(2) + 0.1 * thdot * thdot + f64::from(0.001f32 * (u * u));
        let torque_term = f64::from(3.0f32 / (M * L * L) as f32 * u);
        let new_thdot = (thdot + (3.0 * G / (2.0 * L) * th.sin() + torque_term) * DT)
            .clamp(-MAX_SPEED, MAX_SPEED);
        self.theta = th + new_thdot * DT;
        self.theta_dot = new_thdot;
        self.steps += 1;
        Step {
            obs: self.obs(),
            reward: -costs,
            terminated: false,
            truncated: self.steps >= MAX_STEPS,
        }
    }
}
