//! With the `mujoco` feature: the binaries find `libmujoco.so` through their rpath, and the
//! environments find the model files, both where `scripts/fetch-mujoco.sh` puts them.

fn main() {
    println!("cargo::rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    println!("cargo::rerun-if-env-changed=PRISM_MUJOCO_ASSETS");
    if std::env::var_os("CARGO_FEATURE_MUJOCO").is_none() {
        return;
    }
    if let Ok(lib) = std::env::var("MUJOCO_DYNAMIC_LINK_DIR") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{lib}");
    }
    let assets = std::env::var("PRISM_MUJOCO_ASSETS").unwrap_or_else(|_| {
        let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        format!("{manifest}/../.mujoco/assets")
    });
    println!("cargo::rustc-env=PRISM_MUJOCO_ASSETS={assets}");
}
