#!/usr/bin/env bash
# Growth (issue 15's target): a 3-node cluster splitting under a 64-connection PUT load against the
# same load on a cluster that splits nothing. Each round starts placement and 3 nodes afresh, runs
# `fekv bench` for DUR, and prints its throughput, p99, errors and the regions it ended with; the two
# shapes alternate for ROUNDS rounds. It stops exactly the processes it started and removes their data.
#
# Usage (from the repository root, after `cargo build --release`): benches/growth.sh
# Knobs: BIN DIR DUR ROUNDS SPLIT_SIZE KEYS
set -euo pipefail
. "$(dirname "$0")/three_nodes.sh"
BIN=${BIN:-target/release/fekv}
DIR=${DIR:-/tmp/fekv-growth}
DUR=${DUR:-20s}
ROUNDS=${ROUNDS:-2}
SPLIT_SIZE=${SPLIT_SIZE:-16KiB}
KEYS=${KEYS:-1000000}
PLACEMENT=127.0.0.1:3379
PIDS=()

stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap 'stop_all; rm -rf "$DIR"' EXIT

run() { # name region-max-size
  local name=$1 size=$2
  rm -rf "$DIR"; mkdir -p "$DIR"
  start_three_nodes "$DIR" "$PLACEMENT" 338 3390 "$size"
  # The first region is replicated to all three before the load starts.
  for _ in $(seq 600); do
    [ "$(curl -sf "http://127.0.0.1:3381/status" | jq '[.regions[] | select(.peers | length == 3)] | length')" -ge 1 ] && break
    sleep 0.1
  done
  # A run with errors exits 1 after its report (--max-error-rate): the report is what counts here.
  "$BIN" bench --endpoints "$ENDPOINTS" -c 64 -d "$DUR" --workload put --keys "$KEYS" --json > "$DIR/bench.json" || true
  jq -r --arg name "$name" '"\($name) req_s \(.throughput_rps|floor) p99_ms \(.latency_ms.p99) errors \(.requests - .successes - .misses) (5xx \(.server_errors // 0), timeouts \(.timeouts // 0), first: \(.first_error // "none"))"' "$DIR/bench.json" |
    tr '\n' ' '
  echo "regions $(curl -sf "http://127.0.0.1:3381/status" | jq '.regions | length') (on node 1)"
  stop_all
}

for round in $(seq "$ROUNDS"); do
  run "one_region_$round" 1GiB
  run "splitting_$round" "$SPLIT_SIZE"
done
