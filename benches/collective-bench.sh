#!/usr/bin/env bash
# Collectives across nodes on loopback (issue 22): a head on 127.0.0.1 and N-1 node daemons on
# 127.0.0.2..., each with a session directory of its own (as on separate hosts) and a custom
# resource m<i> that places member i there; then prism-collective as the driver, one member
# per host (QUIC links between every neighbour). Every daemon is stopped at the end.
#
#   cargo build --release -p prism --bin prism -p prism-benches --bin prism-collective
#   bash benches/collective-bench.sh [N=3] [prism-collective args...]
set -euo pipefail
n=${1:-3}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
prism=$root/target/release/prism
bench=$root/target/release/prism-collective
work=$(mktemp -d /tmp/prism-collective-XXXXXX)
cleanup() {
  for dir in "$work"/*/; do PRISM_SESSION_DIR=$dir "$prism" stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
PRISM_SESSION_DIR=$work/head "$prism" start --head --host 127.0.0.1 --port 0 --num-cpus 1 \
  --resources m0=1 --dashboard-port 0 >/dev/null
addr=$(cat "$work/head/address")
token=$(cat "$work/head/token")
for i in $(seq 1 $((n - 1))); do
  PRISM_SESSION_DIR=$work/n$i "$prism" start --address "$addr" --token "$token" \
    --host "127.0.0.$((i + 1))" --num-cpus 1 --resources "m$i=1" --name "n$i" >/dev/null
done
"$bench" --members "$n" --address "$addr" --token "$token" "$@"
