#!/usr/bin/env bash
# Idle cost of many regions (issue 15, item 5): a placement and three nodes on 127.0.0.1 with tiny
# regions, a write load that splits the keyspace into about 10,000 regions, then, once placement's
# region count has been stable for STABLE_S seconds, the CPU each process uses over IDLE_S seconds
# doing nothing for any client (from /proc/PID/stat: utime + stime). One TSV line per process in
# $OUT, with the region count and the load average (other work on the machine shows there).
#
# Usage (from the repository root, after `cargo build --release`): benches/placement_idle.sh
# Knobs: BIN (the fekv binary), DATA, KEYS (distinct keys written once each), REGION_MAX_SIZE,
# VALUE_SIZE, IDLE_S, STABLE_S, OUT, PORT_BASE. It stops exactly the processes it started and
# removes its data directory.
set -euo pipefail
BIN=${BIN:-target/release/fekv}
DATA=${DATA:-/tmp/placement-idle}
KEYS=${KEYS:-76000}
REGION_MAX_SIZE=${REGION_MAX_SIZE:-1KiB}
VALUE_SIZE=${VALUE_SIZE:-100}
IDLE_S=${IDLE_S:-20}
STABLE_S=${STABLE_S:-10}
OUT=${OUT:-/tmp/placement-idle.tsv}
PORT_BASE=${PORT_BASE:-23700}
PLACEMENT=127.0.0.1:$PORT_BASE

rm -rf "$DATA"
mkdir -p "$DATA"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

"$BIN" placement --addr "$PLACEMENT" --data-dir "$DATA/placement" --replicas 3 --log-level warn \
  2> "$DATA/placement.log" &
PIDS+=($!)
ENDPOINTS=()
for i in 1 2 3; do
  http=127.0.0.1:$((PORT_BASE + i))
  "$BIN" serve --placement "$PLACEMENT" --http-addr "$http" --raft-addr "127.0.0.1:$((PORT_BASE + 10 + i))" \
    --data-dir "$DATA/node-$i" --region-max-size "$REGION_MAX_SIZE" --log-level warn 2> "$DATA/node-$i.log" &
  PIDS+=($!)
  ENDPOINTS+=("http://$http")
done
regions() { "$BIN" ctl --placement "$PLACEMENT" -o json region list 2>/dev/null | jq length 2>/dev/null || echo 0; }
replicated() { # every region at 3 caught-up peers with a leader
  "$BIN" ctl --placement "$PLACEMENT" -o json region list 2>/dev/null |
    jq -e 'length > 0 and all(.[]; (.peers | length) == 3 and (.pending_peers | length) == 0 and .leader_store_id != 0)' \
      >/dev/null 2>&1
}
for _ in $(seq 300); do replicated && break; sleep 0.2; done
replicated || { echo "the cluster did not come up (logs in $DATA)" >&2; trap - EXIT; exit 1; }

echo "writing $KEYS keys of $VALUE_SIZE bytes into $REGION_MAX_SIZE regions..." >&2
endpoints=$(IFS=,; echo "${ENDPOINTS[*]}")
"$BIN" bench --endpoints "$endpoints" --connections 32 --workload put --keys "$KEYS" --value-size "$VALUE_SIZE" \
  --prefill --requests 1 --json > "$DATA/bench.json"

# Stable: the same region count, every region replicated, for STABLE_S seconds in a row.
last=-1 since=$SECONDS
while true; do
  now=$(regions)
  if [ "$now" != "$last" ] || ! replicated; then last=$now since=$SECONDS; fi
  [ $((SECONDS - since)) -ge "$STABLE_S" ] && break
  echo "  $now regions" >&2
  sleep 2
done
echo "$last regions, stable for ${STABLE_S}s; measuring ${IDLE_S}s of idle" >&2

ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime + stime, after the comm field
names=(placement node-1 node-2 node-3)
before=()
for pid in "${PIDS[@]}"; do before+=("$(ticks "$pid")"); done
load_before=$(cut -d' ' -f1 /proc/loadavg)
sleep "$IDLE_S"
load_after=$(cut -d' ' -f1 /proc/loadavg)
hz=$(getconf CLK_TCK)
printf 'process\tregions\tcpu_percent\tloadavg_1m_before\tloadavg_1m_after\n' | tee "$OUT"
for i in "${!PIDS[@]}"; do
  used=$(( $(ticks "${PIDS[$i]}") - before[i] ))
  awk -v n="${names[$i]}" -v r="$last" -v t="$used" -v hz="$hz" -v s="$IDLE_S" -v a="$load_before" -v b="$load_after" \
    'BEGIN { printf "%s\t%d\t%.1f\t%s\t%s\n", n, r, 100 * t / hz / s, a, b }' | tee -a "$OUT"
done
