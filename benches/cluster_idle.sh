#!/usr/bin/env bash
# Idle cost of a 3-node cluster holding many regions (issue 15, item 4): placement and 3 nodes with a
# tiny --region-max-size, FILL of PUTs at 32 connections to split the keyspace, then, once the load has
# stopped and the regions hibernate, the CPU each process uses over IDLE_SECS.
# It stops exactly the processes it started and removes their data.
#
# Usage (from the repository root, after `cargo build --release`): benches/cluster_idle.sh
# Knobs: BIN DIR FILL REGION_SIZE IDLE_SECS
set -euo pipefail
. "$(dirname "$0")/three_nodes.sh"
BIN=${BIN:-target/release/fekv}
DIR=${DIR:-/tmp/cluster-idle}
FILL=${FILL:-90s}
REGION_SIZE=${REGION_SIZE:-2KiB}
IDLE_SECS=${IDLE_SECS:-20}
PLACEMENT=127.0.0.1:3279
PIDS=()

trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$DIR"' EXIT
rm -rf "$DIR"; mkdir -p "$DIR"
start_three_nodes "$DIR" "$PLACEMENT" 318 3190 "$REGION_SIZE"
"$BIN" bench --endpoints "$ENDPOINTS" -c 32 -d "$FILL" --workload put --keys 1000000 --json |
  jq -r '"fill req_s \(.throughput_rps|floor) p99_ms \(.latency_ms.p99) errors \(.requests - .successes - .misses)"'
metric() { curl -sf "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# Wait until no node's hibernated count grows any more.
last=
for _ in $(seq 120); do
  now=$(for i in 1 2 3; do metric "http://127.0.0.1:318$i" fekv_raftstore_hibernated_regions; done | tr '\n' ' ')
  [ "$now" = "$last" ] && break; last=$now; sleep 2
done
for i in 1 2 3; do
  echo "node-$i regions $(curl -sf "http://127.0.0.1:318$i/status" | jq '.regions | length') hibernated $(metric "http://127.0.0.1:318$i" fekv_raftstore_hibernated_regions)"
done
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
declare -A before
for p in "${PIDS[@]}"; do before[$p]=$(ticks "$p"); done
sleep "$IDLE_SECS"
names=(placement node-1 node-2 node-3)
for k in "${!PIDS[@]}"; do
  p=${PIDS[$k]}
  echo "${names[$k]} idle_cpu_pct $(echo "scale=1; ($(ticks "$p") - ${before[$p]}) * 100 / $(getconf CLK_TCK) / $IDLE_SECS" | bc)"
done
echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
