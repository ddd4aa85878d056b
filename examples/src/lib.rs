//! Shared code of Prism's examples (run them with `cargo run --release --example NAME`):
//! the environments of the Ray paper's RL workloads, a small MLP with Adam, the observation
//! filter, Evolution Strategies and PPO, and the reports they write.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod envs;
pub mod es;
pub mod filter;
pub mod nn;
pub mod ppo;
pub mod report;
