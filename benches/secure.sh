#!/usr/bin/env bash
# PUT and GET at 64 connections on a 3-node cluster over plain HTTP, then over HTTPS with auth on
# (issue 12): the same release binary, the same `fekv bench` loads, the two clusters in alternating
# order (ABBA) within each round, so machine noise falls on both. The secure cluster has TLS on every
# listener and connection (mutual TLS between nodes and with placement, certificates made here with
# openssl), auth enabled with a root user, and the load authenticates with a bearer token from
# POST /auth/token (a password per request would measure argon2, which is why clients use tokens).
#
# Usage (repository root, after `cargo build --release`): benches/secure.sh
# Knobs: BIN ROUNDS DUR CONNS OUT. Prints one TSV line per (round, cluster, load) and the medians.
set -euo pipefail
export LC_ALL=C
BIN=$(readlink -f "${BIN:-target/release/fekv}")
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10s}
CONNS=${CONNS:-64}
OUT=${OUT:-/tmp/secure-bench.tsv}
WORK=$(mktemp -d /tmp/secure-bench.XXXXXX)
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT

# One CA, one certificate for every process on this machine (127.0.0.1), one for the admin (ctl).
certs() {
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout ca.key -out ca.crt -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  local name
  for name in server admin; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
      -keyout "$name.key" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$name.crt" \
      -extfile <(printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n") 2>/dev/null
  done
  cd - >/dev/null
}

# start_cluster plain|secure: placement + 3 nodes, waits until the one region has 3 replicas.
start_cluster() {
  local mode=$1 dir="$WORK/$1" scheme=http
  rm -rf "$dir"; mkdir -p "$dir"
  local ptls=() ntls=() ctl_tls=()
  if [ "$mode" = secure ]; then
    scheme=https
    ptls=(--cert-file "$WORK/server.crt" --key-file "$WORK/server.key" --trusted-ca-file "$WORK/ca.crt")
    ntls=(--cert-file "$WORK/server.crt" --key-file "$WORK/server.key" --peer-cert-file "$WORK/server.crt"
      --peer-key-file "$WORK/server.key" --peer-trusted-ca-file "$WORK/ca.crt")
    ctl_tls=(--cacert "$WORK/ca.crt" --cert "$WORK/admin.crt" --key "$WORK/admin.key")
  fi
  "$BIN" placement --addr 127.0.0.1:2479 --data-dir "$dir/placement" --log-level warn "${ptls[@]}" \
    2>"$dir/placement.log" &
  PIDS+=($!)
  local i
  for i in 1 2 3; do
    "$BIN" --placement 127.0.0.1:2479 --http-addr "127.0.0.1:330$i" --raft-addr "127.0.0.1:2036$i" \
      --data-dir "$dir/node$i" --log-level warn "${ntls[@]}" 2>"$dir/node$i.log" &
    PIDS+=($!)
  done
  CTL=("$BIN" ctl --placement "$scheme://127.0.0.1:2479" "${ctl_tls[@]}")
  ENDPOINTS="$scheme://127.0.0.1:3301,$scheme://127.0.0.1:3302,$scheme://127.0.0.1:3303"
  BENCH_AUTH=("${ctl_tls[@]:0:2}")
  local t
  for t in $(seq 600); do
    if "${CTL[@]}" -o json region list 2>/dev/null | grep -q '"store_id":3' \
      && ! "${CTL[@]}" -o json region list 2>/dev/null | grep -q '"pending_peers":\[[0-9]'; then
      break
    fi
    sleep 0.1
  done
  if [ "$mode" = secure ]; then
    "${CTL[@]}" user add root --new-password benchpw >/dev/null
    "${CTL[@]}" user grant-role root root >/dev/null
    "${CTL[@]}" auth enable >/dev/null
    # Nodes learn of the switch in a heartbeat: wait until a request without credentials gets 401.
    for t in $(seq 100); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/ca.crt" https://127.0.0.1:3301/fekv/probe)" = 401 ] && break
      sleep 0.1
    done
    local token
    token=$(curl -sf --cacert "$WORK/ca.crt" -u root:benchpw -X POST https://127.0.0.1:3301/auth/token | sed 's/.*"token":"\([^"]*\)".*/\1/')
    BENCH_AUTH+=(--token "$token")
  fi
}

server_pids() { local IFS=,; echo "${PIDS[*]}"; }

run_load() { # round mode load flags...
  local round=$1 mode=$2 load=$3; shift 3
  local report
  report=$("$BIN" bench --endpoints "$ENDPOINTS" "${BENCH_AUTH[@]}" --server-pid "$(server_pids)" \
    -c "$CONNS" -d "$DUR" --keys 1000 --json "$@")
  echo "$report" | jq -r --arg round "$round" --arg mode "$mode" --arg load "$load" \
    '[$round, $mode, $load, (.throughput_rps|floor), .latency_ms.p50, .latency_ms.p99,
      (.server.cpu_us_per_request // 0 | floor), .errors.total] | @tsv' | tee -a "$OUT"
}

certs
printf 'round\tcluster\tload\treq_s\tp50_ms\tp99_ms\tserver_cpu_us_per_req\terrors\n' > "$OUT"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="plain secure"; else order="secure plain"; fi
  for mode in $order; do
    start_cluster "$mode"
    run_load "$round" "$mode" put_c64 --workload put --prefill
    run_load "$round" "$mode" get_c64 --workload get
    stop_all
  done
done
python3 - "$OUT" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = lambda c, l, k: statistics.median(float(r[k]) for r in rows if r["cluster"] == c and r["load"] == l)
print("load\tplain_req_s\tsecure_req_s\tsecure/plain\tplain_p99_ms\tsecure_p99_ms\tplain_cpu_us\tsecure_cpu_us")
for load in ("put_c64", "get_c64"):
    p, s = med("plain", load, "req_s"), med("secure", load, "req_s")
    print(f"{load}\t{p:.0f}\t{s:.0f}\t{s / p:.2f}\t{med('plain', load, 'p99_ms'):.2f}\t{med('secure', load, 'p99_ms'):.2f}"
          f"\t{med('plain', load, 'server_cpu_us_per_req'):.0f}\t{med('secure', load, 'server_cpu_us_per_req'):.0f}")
PY
