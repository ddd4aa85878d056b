//! The example binaries `cargo test` builds beside the tests.

use std::path::PathBuf;

/// Example `name`'s binary, built beside this test (`cargo test` builds the examples).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    profile.join("examples").join(name)
}
