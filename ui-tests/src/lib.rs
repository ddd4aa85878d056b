//! The programs in `tests/forms` use every supported form (each a test of its own); `tests/ui.rs`
//! runs the cases in `tests/fail` with trybuild.
