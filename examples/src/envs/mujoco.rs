//! Hopper-v5 and Humanoid-v5 as Gymnasium 1.4 defines them, simulated by MuJoCo 3.17 through
//! `mujoco-rs` (the optional `mujoco` feature; `scripts/fetch-mujoco.sh` fetches the library
//! and the model files).
//!
//! Both follow Gymnasium's `MujocoEnv`: a reset sets `qpos0` and a zero velocity plus uniform
//! noise and runs `mj_forward`; a step writes the action to `ctrl` unclipped (MuJoCo clamps it
//! to the control range, the control cost counts it as given), runs `frame_skip` `mj_step`s
//! and `mj_rnePostConstraint` (for `cfrc_ext`). Observations are float64, as Gymnasium's.

use std::sync::{Arc, OnceLock};

use mujoco_rs::prelude::{MjData, MjModel};

use super::{Rng, Step};

/// A model file, loaded once per process and shared by every episode.
fn model(file: &str, cell: &'static OnceLock<Arc<MjModel>>) -> Arc<MjModel> {
    cell.get_or_init(|| {
        let dir = std::env::var("PRISM_MUJOCO_ASSETS")
            .unwrap_or_else(|_| env!("PRISM_MUJOCO_ASSETS").to_string());
        let path = format!("{dir}/{file}");
        match MjModel::from_xml(&path) {
            Ok(model) => Arc::new(model),
            Err(e) => panic!(
                "cannot load the MuJoCo model {path}: {e:?} (run scripts/fetch-mujoco.sh, or \
                 point PRISM_MUJOCO_ASSETS at a directory holding {file})"
            ),
        }
    })
    .clone()
}

/// One MuJoCo simulation with Gymnasium's stepping.
#[derive(Debug, Clone)]
struct Sim {
    data: MjData<Arc<MjModel>>,
    frame_skip: usize,
    steps: u32,
}

impl Sim {
    /// Reset to `qpos0` and zero velocity, each plus uniform noise in `[-noise, noise)`.
    fn reset(model: Arc<MjModel>, frame_skip: usize, noise: f64, rng: &mut Rng) -> Self {
        let qpos: Vec<f64> = model
            .qpos0()
            .iter()
            .map(|q| q + rng.uniform(-noise, noise))
            .collect();
        let qvel: Vec<f64> = (0..model.ffi().nv)
            .map(|_| rng.uniform(-noise, noise))
            .collect();
        Self::from_state(model, frame_skip, &qpos, &qvel)
    }

    /// Gymnasium's `set_state` after `mj_resetData`.
    fn from_state(model: Arc<MjModel>, frame_skip: usize, qpos: &[f64], qvel: &[f64]) -> Self {
        let mut data = MjData::new(model);
        data.reset();
        data.qpos_mut().copy_from_slice(qpos);
        data.qvel_mut().copy_from_slice(qvel);
        data.forward();
        Sim {
            data,
            frame_skip,
            steps: 0,
        }
    }

    /// The time one step covers.
    fn dt(&self) -> f64 {
        self.data.model().ffi().opt.timestep * self.frame_skip as f64
    }

    /// Writes `action` to `ctrl` and simulates one environment step.
    fn advance(&mut self, action: &[f64]) {
        self.data.ctrl_mut().copy_from_slice(action);
        for _ in 0..self.frame_skip {
            self.data.step();
        }
        self.data.rne_post_constraint();
        self.steps += 1;
    }
}

/// Gymnasium's `max_episode_steps` for both environments.
pub const MAX_STEPS: u32 = 1000;

/// Hopper-v5: a one-legged robot rewarded for hopping forward while it stays healthy.
#[derive(Debug, Clone)]
pub struct Hopper {
    sim: Sim,
}

impl Hopper {
    /// Observation size: qpos without x (5) and qvel clipped to +-10 (6).
    pub const OBS: usize = 11;
    /// Action size (thigh, leg, foot torques).
    pub const ACTIONS: usize = 3;
    /// Control range of every actuator.
    pub const CTRL: f64 = 1.0;
    const FRAME_SKIP: usize = 4;

    fn model() -> Arc<MjModel> {
        static MODEL: OnceLock<Arc<MjModel>> = OnceLock::new();
        model("hopper.xml", &MODEL)
    }

    /// A new episode (reset noise 5e-3).
    pub fn new(rng: &mut Rng) -> Self {
        Hopper {
            sim: Sim::reset(Self::model(), Self::FRAME_SKIP, 5e-3, rng),
        }
    }

    /// A new episode from exact joint positions and velocities.
    pub fn from_state(qpos: &[f64], qvel: &[f64]) -> Self {
        Hopper {
            sim: Sim::from_state(Self::model(), Self::FRAME_SKIP, qpos, qvel),
        }
    }

    /// The current observation.
    pub fn obs(&self) -> Vec<f64> {
        let data = &self.sim.data;
        let mut obs = data.qpos()[1..].to_vec();
        obs.extend(data.qvel().iter().map(|v| v.clamp(-10.0, 10.0)));
        obs
    }

    /// z in (0.7, inf), the torso angle in (-0.2, 0.2), and every other joint position and
    /// velocity in (-100, 100).
    fn healthy(&self) -> bool {
        let (qpos, qvel) = (self.sim.data.qpos(), self.sim.data.qvel());
        let state_ok = qpos[2..]
            .iter()
            .chain(qvel)
            .all(|v| -100.0 < *v && *v < 100.0);
        state_ok && qpos[1] > 0.7 && -0.2 < qpos[2] && qpos[2] < 0.2
    }

    /// Applies torques: reward = forward velocity + 1 while healthy - 1e-3 |action|^2.
    pub fn step(&mut self, action: &[f64]) -> Step {
        let before = self.sim.data.qpos()[0];
        self.sim.advance(action);
        let velocity = (self.sim.data.qpos()[0] - before) / self.sim.dt();
        let healthy = self.healthy();
        let ctrl_cost = 1e-3 * action.iter().map(|a| a * a).sum::<f64>();
        Step {
            obs: self.obs(),
            reward: velocity + if healthy { 1.0 } else { 0.0 } - ctrl_cost,
            terminated: !healthy,
            truncated: self.sim.steps >= MAX_STEPS,
        }
    }
}

/// Humanoid-v5: a 3D biped rewarded for walking forward without falling.
#[derive(Debug, Clone)]
pub struct Humanoid {
    sim: Sim,
}

impl Humanoid {
    /// Observation size: qpos without x, y (22), qvel (23), cinert (13 x 10), cvel (13 x 6),
    /// qfrc_actuator without the free joint (17), cfrc_ext (13 x 6).
    pub const OBS: usize = 348;
    /// Action size (one per actuator).
    pub const ACTIONS: usize = 17;
    /// Control range of every actuator.
    pub const CTRL: f64 = 0.4;
    const FRAME_SKIP: usize = 5;

    fn model() -> Arc<MjModel> {
        static MODEL: OnceLock<Arc<MjModel>> = OnceLock::new();
        model("humanoid.xml", &MODEL)
    }

    /// A new episode (reset noise 1e-2).
    pub fn new(rng: &mut Rng) -> Self {
        Humanoid {
            sim: Sim::reset(Self::model(), Self::FRAME_SKIP, 1e-2, rng),
        }
    }

    /// A new episode from exact joint positions and velocities.
    pub fn from_state(qpos: &[f64], qvel: &[f64]) -> Self {
        Humanoid {
            sim: Sim::from_state(Self::model(), Self::FRAME_SKIP, qpos, qvel),
        }
    }

    /// The current observation.
    pub fn obs(&self) -> Vec<f64> {
        let data = &self.sim.data;
        let mut obs = Vec::with_capacity(Self::OBS);
        obs.extend_from_slice(&data.qpos()[2..]);
        obs.extend_from_slice(data.qvel());
        obs.extend(data.cinert()[1..].iter().flatten());
        obs.extend(data.cvel()[1..].iter().flatten());
        obs.extend_from_slice(&data.qfrc_actuator()[6..]);
        obs.extend(data.cfrc_ext()[1..].iter().flatten());
        obs
    }

    /// The x, y of the centre of mass (from the bodies' `xipos`, as Gymnasium's).
    fn mass_center(&self) -> [f64; 2] {
        let model = self.sim.data.model();
        let (mut x, mut y, mut total) = (0.0, 0.0, 0.0);
        for (mass, pos) in model.body_mass().iter().zip(self.sim.data.xipos()) {
            x += mass * pos[0];
            y += mass * pos[1];
            total += mass;
        }
        [x / total, y / total]
    }

    /// Applies torques: reward = 1.25 x-velocity of the centre of mass + 5 while healthy
    /// (1 < z < 2) - 0.1 |ctrl|^2 - min(5e-7 |cfrc_ext|^2, 10).
    pub fn step(&mut self, action: &[f64]) -> Step {
        let before = self.mass_center()[0];
        self.sim.advance(action);
        let velocity = (self.mass_center()[0] - before) / self.sim.dt();
        let z = self.sim.data.qpos()[2];
        let healthy = 1.0 < z && z < 2.0;
        let ctrl_cost = 0.1 * self.sim.data.ctrl().iter().map(|a| a * a).sum::<f64>();
        let contact: f64 = self
            .sim
            .data
            .cfrc_ext()
            .iter()
            .flatten()
            .map(|f| f * f)
            .sum();
        let contact_cost = (5e-7 * contact).min(10.0);
        Step {
            obs: self.obs(),
            reward: 1.25 * velocity + if healthy { 5.0 } else { 0.0 } - ctrl_cost - contact_cost,
            terminated: !healthy,
            truncated: self.sim.steps >= MAX_STEPS,
        }
    }
}
