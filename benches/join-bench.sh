#!/usr/bin/env bash
# How long a driver takes to join a cluster of N nodes on loopback (issue 20's "driver join"):
# a head and N node daemons (cluster.sh), then `prism-microbench --startup-probe` (join, one
# task, leave) as the driver, timed RUNS times: the first run's nodes fetch the driver's
# binary, later runs find it in their cache.
#
#   cargo build --release -p prism --bin prism -p prism-benches --bin prism-microbench
#   bash benches/join-bench.sh 80 [RUNS] [DRIVER]
set -euo pipefail
n=${1:?the number of nodes}
runs=${2:-3}
source "$(dirname "$0")/cluster.sh"
driver=${3:-$root/target/release/prism-microbench}
start_cluster "$n" j
echo "head and $n nodes up"
for run in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  PRISM_ADDRESS=$addr PRISM_TOKEN=$token "$driver" --startup-probe >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "run $run: join + 1 task + leave with $n nodes: $(echo "$end - $start" | bc) s"
done
