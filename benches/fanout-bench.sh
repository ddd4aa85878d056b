#!/usr/bin/env bash
# Nested fan-out over loopback nodes (issue 20): a head and N node daemons (cluster.sh), node i
# carrying the custom resource r<i>; prism-fanout as the driver spreads its parents over the
# nodes by those resources and times their children.
#
#   cargo build --release -p prism --bin prism -p prism-benches --bin prism-fanout
#   bash benches/fanout-bench.sh [N=3] [prism-fanout args...]
set -euo pipefail
n=${1:-3}
shift || true
source "$(dirname "$0")/cluster.sh"
drive_nodes prism-fanout "$n" "$@"
