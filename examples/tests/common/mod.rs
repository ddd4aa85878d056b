//! Reading the golden trajectories in `examples/goldens/`.

use prism_examples::envs::Step;
use serde_json::Value;

/// The golden file `examples/goldens/{name}.json`.
pub fn golden(name: &str) -> Value {
    let path = format!("{}/goldens/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("golden file");
    serde_json::from_str(&text).expect("valid JSON")
}

/// A JSON array of numbers.
pub fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// Asserts that `got` is the recorded step `want`: observation and reward values `close`,
/// flags equal; failures name `at`.
pub fn check(at: &str, got: &Step, want: &Value, close: impl Fn(f64, f64) -> bool) {
    let obs = numbers(&want["obs"]);
    assert_eq!(got.obs.len(), obs.len(), "{at}: observation size");
    for (i, (g, w)) in got.obs.iter().zip(&obs).enumerate() {
        assert!(close(*g, *w), "{at} obs[{i}]: {g} vs {w}");
    }
    let reward = want["reward"].as_f64().expect("reward");
    assert!(
        close(got.reward, reward),
        "{at} reward: {} vs {reward}",
        got.reward
    );
    let flag = |name: &str| want[name].as_bool().expect("flag");
    assert_eq!(got.terminated, flag("terminated"), "{at} terminated");
    assert_eq!(got.truncated, flag("truncated"), "{at} truncated");
}
