#!/usr/bin/env bash
# How long a driver takes to join a cluster of N nodes on loopback (issue 20's "driver join"):
# a head on 127.0.0.1 and N node daemons on 127.0.0.2..., each with a session directory of its
# own (as on separate hosts), then `prism-microbench --startup-probe` (join, one task, leave)
# as the driver, timed RUNS times: the first run's nodes fetch the driver's binary, later runs
# find it in their cache. Every daemon is stopped at the end.
#
#   cargo build --release -p prism --bin prism -p prism-benches --bin prism-microbench
#   bash benches/join-bench.sh 80 [RUNS] [DRIVER]
set -euo pipefail
n=${1:?the number of nodes}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
prism=$root/target/release/prism
driver=${3:-$root/target/release/prism-microbench}
work=$(mktemp -d /tmp/prism-join-XXXXXX)
cleanup() {
  for dir in "$work"/*/; do PRISM_SESSION_DIR=$dir "$prism" stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
PRISM_SESSION_DIR=$work/head "$prism" start --head --host 127.0.0.1 --port 0 --num-cpus 1 \
  --dashboard-port 0 >/dev/null
addr=$(cat "$work/head/address")
token=$(cat "$work/head/token")
for i in $(seq 1 "$n"); do
  PRISM_SESSION_DIR=$work/n$i "$prism" start --address "$addr" --token "$token" \
    --host "127.0.$((i / 250)).$((i % 250 + 2))" --num-cpus 1 --name "n$i" >/dev/null
done
echo "head and $n nodes up"
for run in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  PRISM_ADDRESS=$addr PRISM_TOKEN=$token "$driver" --startup-probe >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "run $run: join + 1 task + leave with $n nodes: $(echo "$end - $start" | bc) s"
done
