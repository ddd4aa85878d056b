#!/usr/bin/env bash
# One object read on many nodes over loopback (issue 20's broadcast): a head and N node daemons
# (cluster.sh), node i carrying the custom resource r<i>; prism-broadcast as the driver puts
# the object and times one reader task per node.
#
#   cargo build --release -p prism --bin prism -p prism-benches --bin prism-broadcast
#   bash benches/broadcast-bench.sh [N=3] [prism-broadcast args...]
set -euo pipefail
n=${1:-3}
shift || true
source "$(dirname "$0")/cluster.sh"
drive_nodes prism-broadcast "$n" "$@"
