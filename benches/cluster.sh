# Sourced by the cluster benchmarks: a head on 127.0.0.1 and node daemons on 127.0.0.2...,
# each with a session directory of its own (as on separate hosts), stopped and removed when the
# script exits. Host i (the head is 0) carries the custom resource `<prefix><i>=1`, which places
# work there.
#
#   source "$(dirname "$0")/cluster.sh"
#   start_cluster NODES PREFIX     # sets $addr and $token; NODES daemons besides the head
#   drive_nodes BIN NODES ARGS...  # start_cluster NODES r, then BIN --nodes NODES as the driver
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prism=$root/target/release/prism
work=$(mktemp -d /tmp/prism-bench-XXXXXX)
cleanup() {
  for dir in "$work"/*/; do PRISM_SESSION_DIR=$dir "$prism" stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_cluster() {
  local nodes=$1 prefix=$2
  PRISM_SESSION_DIR=$work/head "$prism" start --head --host 127.0.0.1 --port 0 --num-cpus 1 \
    --resources "${prefix}0=1" --dashboard-port 0 >/dev/null
  addr=$(cat "$work/head/address")
  token=$(cat "$work/head/token")
  for i in $(seq 1 "$nodes"); do
    PRISM_SESSION_DIR=$work/n$i "$prism" start --address "$addr" --token "$token" \
      --host "127.0.$((i / 250)).$((i % 250 + 1))" --num-cpus 1 --resources "$prefix$i=1" \
      --name "n$i" >/dev/null
  done
}

# Starts NODES daemons whose custom resources are r1..rNODES (and r0 on the head), then runs
# the release benchmark BIN as their driver with --nodes NODES, --address and --token before
# the remaining arguments.
drive_nodes() {
  local bin=$1 nodes=$2
  shift 2
  start_cluster "$nodes" r
  "$root/target/release/$bin" --nodes "$nodes" --address "$addr" --token "$token" "$@"
}
