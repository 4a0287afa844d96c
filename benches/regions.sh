#!/usr/bin/env bash
# One node holding many regions against the same node holding one (issue 15, item 4):
#   1. fresh node, one region: PUT and GET at 64 connections;
#   2. the node filled under a tiny --region-max-size until it has split into many regions
#      (KEYS puts of 100-byte values), then restarted with the default size, so the loads below split
#      nothing: time to /ready, idle CPU once its regions hibernate, PUT and GET at 64 connections.
# Prints one line per measurement. It stops exactly the servers it started and removes their data.
#
# Usage (from the repository root, after `cargo build --release`): benches/regions.sh
# Knobs: BIN ADDR DATA KEYS FILL_SIZE SECS IDLE_SECS SPLIT_WAIT
set -euo pipefail
BIN=${BIN:-target/release/fekv}
ADDR=${ADDR:-127.0.0.1:3170}
DATA=${DATA:-/tmp/regions-data}
KEYS=${KEYS:-300000}
FILL_SIZE=${FILL_SIZE:-2KiB}
SECS=${SECS:-10s}
IDLE_SECS=${IDLE_SECS:-20}
SERVER_PID=

stop() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; SERVER_PID=; }
trap 'stop; rm -rf "$DATA"' EXIT
start() { "$BIN" --data-dir "$DATA" --http-addr "$ADDR" --log-level warn "$@" & SERVER_PID=$!; }
wait_ready() { # prints the seconds until /ready answers 200
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 2400); do
    curl -sf "http://$ADDR/ready" >/dev/null && { echo "$(date +%s.%N) - $t0" | bc; return; }
    sleep 0.05
  done
  echo "server on $ADDR not ready" >&2; exit 1
}
# shellcheck source=benches/settle.sh
. "$(dirname "$0")/settle.sh"
regions() { regions_on "$ADDR"; }
metric() { curl -sf "http://$ADDR/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
idle_cpu() { # % of one core over IDLE_SECS, once the hibernated count stops growing
  local last=-1 now
  for _ in $(seq 120); do
    now=$(metric fekv_raftstore_hibernated_regions); [ "$now" = "$last" ] && break; last=$now; sleep 1
  done
  local a; a=$(cpu_ticks); sleep "$IDLE_SECS"; local b; b=$(cpu_ticks)
  echo "idle_cpu_pct $(echo "scale=1; ($b - $a) * 100 / $(getconf CLK_TCK) / $IDLE_SECS" | bc) hibernated $now"
}
load() { # name flags...
  local name=$1; shift
  local visits0 rounds0; visits0=$(metric fekv_raftstore_peers_per_round_sum); rounds0=$(metric fekv_raftstore_rounds_total)
  "$BIN" bench --endpoints "http://$ADDR" --server-pid "$SERVER_PID" --json -c 64 -d "$SECS" "$@" |
    jq -r --arg name "$name" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
      '"\($name) req_s \(.throughput_rps|floor) p99_ms \(.latency_ms.p99) errors \(.requests - .successes - .misses) server_cpu_us_per_req \(.server.cpu_us_per_request // 0 | floor) loadavg_before \($load)"'
  echo "  $name: $(echo "scale=1; ($(metric fekv_raftstore_peers_per_round_sum) - $visits0) / ($(metric fekv_raftstore_rounds_total) - $rounds0)" | bc) peers visited per round"
}

rm -rf "$DATA"
start; wait_ready >/dev/null
load put_1_region --workload put --keys "$KEYS"
load get_1_region --workload get --keys "$KEYS" --prefill
stop; rm -rf "$DATA"

start --region-max-size "$FILL_SIZE"; wait_ready >/dev/null
t0=$(date +%s)
"$BIN" bench --endpoints "http://$ADDR" -c 64 -n "$KEYS" --workload put --keys "$KEYS" --json >/dev/null
filled_after=$(( $(date +%s) - t0 ))
# Let the splits the fill started run out before restarting with the default size, which splits nothing.
settle_splits "$ADDR" "${SPLIT_WAIT:-300}"
echo "filled $KEYS puts in $filled_after s; $(regions) regions $(( $(date +%s) - t0 )) s after the fill began"
stop
start; echo "restart_to_ready_s $(wait_ready) regions $(regions)"
idle_cpu
load put_many_regions --workload put --keys "$KEYS"
load get_many_regions --workload get --keys "$KEYS"
