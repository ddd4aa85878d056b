//! The cases live in `tests/pass` and `tests/fail`; `tests/ui.rs` runs them with trybuild.
