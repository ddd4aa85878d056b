#!/usr/bin/env bash
# Collectives across nodes on loopback (issue 22): a head and N-1 node daemons (cluster.sh),
# host i carrying the custom resource m<i> that places member i there; then prism-collective as
# the driver, one member per host (QUIC links between every neighbour).
#
#   cargo build --release -p prism --bin prism -p prism-benches --bin prism-collective
#   bash benches/collective-bench.sh [N=3] [prism-collective args...]
set -euo pipefail
n=${1:-3}
shift || true
source "$(dirname "$0")/cluster.sh"
start_cluster $((n - 1)) m
"$root/target/release/prism-collective" --members "$n" --address "$addr" --token "$token" "$@"
