//! Shared code of Prism's examples (run them with `cargo run --release --example NAME`):
//! the environments of the Ray paper's RL workloads.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod envs;
