//! Hopper-v5 and Humanoid-v5 (the `mujoco` feature) replay episodes recorded with Python
//! `gymnasium` 1.4.0 on MuJoCo 3.17.0: from the recorded state after each seeded reset, every
//! step's observation and reward match within 1e-5 (relative, for the large contact forces in
//! Humanoid's observation) and the termination flags exactly, until the episode ends.
//! Regenerate with `python3 examples/goldens/make_goldens.py --mujoco`.

use prism_examples::envs::{Hopper, Humanoid, Step};

mod common;
use common::{check, golden, numbers};

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

/// Replays every episode of `name` through `make(qpos, qvel)` and `step(env, action)`;
/// returns how many steps were compared.
fn replay<E>(
    name: &str,
    make: impl Fn(&[f64], &[f64]) -> E,
    step: impl Fn(&mut E, &[f64]) -> Step,
) -> usize {
    let g = golden(name);
    let mut compared = 0;
    for (e, episode) in g["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .enumerate()
    {
        let mut env = make(&numbers(&episode["qpos0"]), &numbers(&episode["qvel0"]));
        let steps = episode["steps"].as_array().expect("steps");
        for (t, want) in steps.iter().enumerate() {
            let got = step(&mut env, &numbers(&want["action"]));
            let at = format!("{name} episode {e} step {t}");
            check(&at, &got, want, close);
            compared += 1;
        }
        assert!(
            steps
                .last()
                .is_some_and(|s| s["terminated"].as_bool() == Some(true)),
            "{name} episode {e} exercises termination"
        );
    }
    compared
}

#[test]
fn hopper_matches_gymnasium() {
    let compared = replay("hopper", Hopper::from_state, |env, a| env.step(a));
    assert!(compared > 100, "{compared} steps compared");
}

#[test]
fn humanoid_matches_gymnasium() {
    let compared = replay("humanoid", Humanoid::from_state, |env, a| env.step(a));
    assert!(compared > 40, "{compared} steps compared");
}

#[test]
fn resets_are_seeded_and_noisy() {
    use prism_examples::envs::Rng;
    let a = Hopper::new(&mut Rng::new(7)).obs();
    let b = Hopper::new(&mut Rng::new(7)).obs();
    let c = Hopper::new(&mut Rng::new(8)).obs();
    assert_eq!(a, b, "the same seed gives the same start");
    assert_ne!(a, c, "another seed gives another start");
    assert_eq!(a.len(), Hopper::OBS);
    assert_eq!(Humanoid::new(&mut Rng::new(7)).obs().len(), Humanoid::OBS);
}
