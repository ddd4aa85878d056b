//! The environments replay trajectories recorded with Python `gymnasium` (CartPole-v1,
//! Pendulum-v1). Every step, started from Gymnasium's exact float64 state, gives the same
//! observation, reward and flags within 1e-6; and free-running replays from each reset match
//! within 1e-5 for 300 steps (beyond that, last-ulp differences between NumPy's and the C
//! library's sine and cosine grow through CartPole's closed-loop dynamics).

use prism_examples::envs::{CartPole, Pendulum, Step};
use serde_json::Value;

mod common;
use common::{golden, numbers};

/// Steps a free-running replay is compared for.
const FREE_RUN: usize = 300;

fn state<const N: usize>(value: &Value) -> [f64; N] {
    numbers(value).try_into().expect("state size")
}

fn check(env: &str, episode: usize, t: usize, got: &Step, want: &Value, tolerance: f64) {
    let at = format!("{env} episode {episode} step {t}");
    common::check(&at, got, want, |g, w| (g - w).abs() < tolerance);
}

#[test]
fn cartpole_matches_gymnasium() {
    let g = golden("cartpole");
    let mut truncated = 0;
    for (e, episode) in g["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .enumerate()
    {
        let mut free = CartPole::from_state(state(&episode["state0"]));
        for (t, want) in episode["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .enumerate()
        {
            let action = want["action"].as_u64().expect("action") as usize;
            let step = CartPole::from_state(state(&want["state"])).step(action);
            // The time limit counts steps, which a fresh environment has not taken.
            let step = Step {
                truncated: t + 1 >= 500,
                ..step
            };
            check("CartPole-v1", e, t, &step, want, 1e-6);
            truncated += usize::from(step.truncated);
            let step = free.step(action);
            if t < FREE_RUN {
                check("CartPole-v1 (free run)", e, t, &step, want, 1e-5);
            }
        }
    }
    assert!(
        truncated >= 1,
        "the goldens exercise the 500-step time limit"
    );
}

#[test]
fn pendulum_matches_gymnasium() {
    let g = golden("pendulum");
    for (e, episode) in g["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .enumerate()
    {
        let mut free = Pendulum::from_state(state(&episode["state0"]));
        let steps = episode["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 200, "episodes end at the 200-step limit");
        for (t, want) in steps.iter().enumerate() {
            let action = want["action"].as_f64().expect("action");
            let step = Pendulum::from_state(state(&want["state"])).step(action);
            let step = Step {
                truncated: t + 1 >= 200,
                ..step
            };
            check("Pendulum-v1", e, t, &step, want, 1e-6);
            check(
                "Pendulum-v1 (free run)",
                e,
                t,
                &free.step(action),
                want,
                1e-5,
            );
        }
    }
}
