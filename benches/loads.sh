#!/usr/bin/env bash
# The issue's four loads, measured with `fekv bench` against a release node this script starts:
#   put_c1      PUT, 1 connection, 5 s (sequential: one fsync per PUT at best)
#   put_c64     PUT, 64 connections, 10 s (group commit)
#   get_c64     GET, 64 connections, 10 s, key space prefilled
#   mixed90_c64 90% GET / 10% PUT, 64 connections, 10 s
# ROUNDS rounds of the four, one TSV line per load and round in $OUT, then the median of each column.
# Besides the server's CPU (--server-pid), it records the load generator's own CPU per request, since
# both share the machine, and the CPU seconds everything else used meanwhile (other_cpu_s, from
# /proc/stat): a round where that is high was disturbed. It stops exactly the server it started and removes its data directory.
#
# Usage (from the repository root, after `cargo build --release`): benches/loads.sh
# Knobs: BIN ADDR DATA ROUNDS OUT
set -euo pipefail
BIN=${BIN:-target/release/fekv}
ADDR=${ADDR:-127.0.0.1:3100}
DATA=${DATA:-/tmp/lg-data}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/lg-results.tsv}

rm -rf "$DATA"
"$BIN" --data-dir "$DATA" --http-addr "$ADDR" --log-level warn &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
  curl -sf "http://$ADDR/ready" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$ADDR/ready" >/dev/null || { echo "server on $ADDR not ready" >&2; exit 1; }

printf 'round\tload\treq_s\tp50_ms\tp99_ms\tproposals_per_commit\tserver_cpu_us_per_req\tclient_cpu_us_per_req\tloadavg_1m_before\tother_cpu_s\n' > "$OUT"
# CPU ticks spent outside idle and iowait, by every process on the machine.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
run() { # round name flags...
  local round=$1 name=$2; shift 2
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  local busy_before; busy_before=$(busy_ticks)
  /usr/bin/time -f '%U %S' -o /tmp/lg-time.$$ "$BIN" bench --endpoints "http://$ADDR" --server-pid "$SERVER_PID" --json "$@" > /tmp/lg-report.$$
  local busy_s; busy_s=$(( $(busy_ticks) - busy_before ))
  busy_s=$(awk -v t="$busy_s" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')
  local client_cpu; client_cpu=$(awk '{print $1 + $2}' /tmp/lg-time.$$)
  jq -r --arg round "$round" --arg name "$name" --arg load "$load" --argjson cpu "$client_cpu" --argjson busy "$busy_s" \
    '[$round, $name, (.throughput_rps|floor), .latency_ms.p50, .latency_ms.p99,
      (.server.proposals_per_commit // 0 | . * 10 | floor / 10),
      (.server.cpu_us_per_request // 0 | floor), ($cpu * 1e6 / .requests | floor), $load,
      ($busy - $cpu - (.server.cpu_us // 0) / 1e6 | . * 10 | floor / 10)] | @tsv' \
    /tmp/lg-report.$$ | tee -a "$OUT"
  rm -f /tmp/lg-time.$$ /tmp/lg-report.$$
}
for round in $(seq "$ROUNDS"); do
  run "$round" put_c1 --connections 1 --workload put --duration 5s
  run "$round" put_c64 --connections 64 --workload put --duration 10s
  run "$round" get_c64 --connections 64 --workload get --prefill --duration 10s
  run "$round" mixed90_c64 --connections 64 --workload mixed:0.9 --duration 10s
done
echo "medians over $ROUNDS rounds:"
python3 - "$OUT" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cols = ["req_s", "p50_ms", "p99_ms", "proposals_per_commit", "server_cpu_us_per_req", "client_cpu_us_per_req", "loadavg_1m_before", "other_cpu_s"]
print("load\t" + "\t".join(cols))
for load in dict.fromkeys(r["load"] for r in rows):
    mine = [r for r in rows if r["load"] == load]
    print(load + "\t" + "\t".join(f"{statistics.median(float(r[c]) for r in mine):g}" for c in cols))
PY
