//! Prism examples live in this folder as `cargo run --release --example NAME`.
