#!/usr/bin/env bash
# Two builds of fekv on the same load, alternating (A B A B ...), one node. With FILL_SIZE set, the
# data directory is filled once (KEYS PUTs of random keys under --region-max-size FILL_SIZE, splits
# left to settle) by build A, and every run starts on a fresh copy of it, so both builds see the
# same regions; without it every run starts empty (one region). Each run: PUT at 64 connections,
# then LOADS (default "put_c64"; also put_c1, get_c64) for SECS each. Prints one line per load.
# It stops exactly the servers it started and removes their data.
#
# Usage (from the repository root): benches/ab.sh A_BIN B_BIN
# Knobs: ROUNDS ADDR DATA KEYS FILL_SIZE SECS LOADS
set -euo pipefail
A=$1 B=$2
ROUNDS=${ROUNDS:-3}
ADDR=${ADDR:-127.0.0.1:3172}
DATA=${DATA:-/tmp/fekv-ab}
KEYS=${KEYS:-300000}
FILL_SIZE=${FILL_SIZE:-}
SECS=${SECS:-8s}
LOADS=${LOADS:-put_c64}
PID=

stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=; }
trap 'stop; rm -rf "$DATA"' EXIT
start() { # bin dir flags...
  local bin=$1 dir=$2; shift 2
  "$bin" --data-dir "$dir" --http-addr "$ADDR" --log-level warn "$@" & PID=$!
  for _ in $(seq 600); do curl -sf "http://$ADDR/ready" >/dev/null && return; sleep 0.05; done
  echo "server on $ADDR not ready" >&2; exit 1
}
# shellcheck source=benches/settle.sh
. "$(dirname "$0")/settle.sh"
regions() { regions_on "$ADDR"; }

rm -rf "$DATA"; mkdir -p "$DATA"
if [ -n "$FILL_SIZE" ]; then
  start "$A" "$DATA/filled" --region-max-size "$FILL_SIZE"
  "$A" bench --endpoints "http://$ADDR" -c 64 -n "$KEYS" --workload put --keys "$KEYS" --json >/dev/null
  settle_splits "$ADDR" 300
  echo "filled: $(regions) regions"
  stop
fi
for round in $(seq "$ROUNDS"); do
  for which in A B; do
    bin=$A; [ "$which" = B ] && bin=$B
    rm -rf "$DATA/run"
    if [ -n "$FILL_SIZE" ]; then cp -r "$DATA/filled" "$DATA/run"; fi
    start "$bin" "$DATA/run"
    for load in $LOADS; do
      case $load in
        put_c64) flags=(-c 64 --workload put) ;;
        put_c1) flags=(-c 1 --workload put) ;;
        # An empty directory has nothing to read: fill the keys first, or every GET is a miss.
        get_c64) flags=(-c 64 --workload get); [ -z "$FILL_SIZE" ] && flags+=(--prefill) ;;
        *) echo "unknown load $load" >&2; exit 1 ;;
      esac
      "$bin" bench --endpoints "http://$ADDR" --server-pid "$PID" --json -d "$SECS" --keys "$KEYS" "${flags[@]}" |
        jq -r --arg w "$which" --arg r "$round" --arg l "$load" \
          '"round \($r) \($w) \($l) req_s \(.throughput_rps|floor) p99_ms \(.latency_ms.p99) server_cpu_us_per_req \(.server.cpu_us_per_request // 0 | floor)"'
    done
    stop
  done
done
