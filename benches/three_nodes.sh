# Sourced by the cluster benchmarks (cluster_idle.sh, growth.sh): starts placement and three nodes on
# loopback and waits until every node is ready. Uses the caller's BIN and appends to its PIDS array.
#
# start_three_nodes DIR PLACEMENT_ADDR HTTP_PREFIX RAFT_PREFIX REGION_MAX_SIZE
#   node i serves HTTP on 127.0.0.1:<HTTP_PREFIX>i and raft on 127.0.0.1:<RAFT_PREFIX>i; the nodes'
#   base URLs are left in ENDPOINTS (comma-separated), logs and data under DIR.
start_three_nodes() {
  local dir=$1 placement=$2 http=$3 raft=$4 size=$5 i
  "$BIN" placement --addr "$placement" --data-dir "$dir/placement" --replicas 3 > "$dir/placement.log" 2>&1 &
  PIDS+=($!)
  ENDPOINTS=
  for i in 1 2 3; do
    "$BIN" serve --placement "$placement" --http-addr "127.0.0.1:$http$i" --raft-addr "127.0.0.1:$raft$i" \
      --data-dir "$dir/node-$i" --region-max-size "$size" --log-level warn > "$dir/node-$i.log" 2>&1 &
    PIDS+=($!)
    ENDPOINTS+="${ENDPOINTS:+,}http://127.0.0.1:$http$i"
  done
  for i in 1 2 3; do
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$http$i/ready" >/dev/null && break; sleep 0.1; done
  done
}
