#!/usr/bin/env bash
# Fetches what the examples' optional `mujoco` feature links and loads, into .mujoco/:
#   .mujoco/lib/libmujoco.so   from the PyPI `mujoco` wheel of the version mujoco-rs binds
#   .mujoco/assets/*.xml       Hopper and Humanoid models from the PyPI `gymnasium` wheel
# Then: cargo run --release -p prism-examples --features mujoco --example es -- --env hopper
# (.cargo/config.toml points MUJOCO_DYNAMIC_LINK_DIR at .mujoco/lib; the examples' build script
# adds it to the binaries' rpath, so no LD_LIBRARY_PATH is needed.)
set -euo pipefail
cd "$(dirname "$0")/.."

# mujoco-rs 7.0.0+mj-3.17.0 binds MuJoCo 3.17.0; the goldens were recorded with gymnasium 1.4.0.
MUJOCO_VERSION=3.17.0
GYMNASIUM_VERSION=1.4.0
OUT=.mujoco

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-aarch64) ;;
  *) echo "fetch-mujoco.sh: only Linux x86_64/aarch64 wheels are handled here" >&2; exit 1 ;;
esac
command -v python3 >/dev/null || { echo "fetch-mujoco.sh: python3 (with pip) is needed" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  "mujoco==$MUJOCO_VERSION" "gymnasium==$GYMNASIUM_VERSION" -d "$tmp"

mkdir -p "$OUT/lib" "$OUT/assets"
python3 - "$tmp" "$OUT" "$MUJOCO_VERSION" <<'PY'
import pathlib, sys, zipfile
tmp, out, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
wheel = next(tmp.glob("mujoco-*.whl"))
with zipfile.ZipFile(wheel) as z:
    lib = f"mujoco/libmujoco.so.{version}"
    (out / "lib" / f"libmujoco.so.{version}").write_bytes(z.read(lib))
gym = next(tmp.glob("gymnasium-*.whl"))
with zipfile.ZipFile(gym) as z:
    for name in ["hopper.xml", "humanoid.xml"]:
        (out / "assets" / name).write_bytes(z.read(f"gymnasium/envs/mujoco/assets/{name}"))
PY
ln -sf "libmujoco.so.$MUJOCO_VERSION" "$OUT/lib/libmujoco.so"
echo "MuJoCo $MUJOCO_VERSION and the Gymnasium $GYMNASIUM_VERSION models are in $OUT/"
