# Sourced by benches/regions.sh and benches/ab.sh (defines functions, runs nothing).

# How many regions the node at ADDR holds.
regions_on() { curl -sf "http://$1/status" | jq '.regions | length'; }

# settle_splits ADDR MAX_SECS: a region halves at most once per split check, so the splits a fill
# started go on after it ends. Waits until the node's region count has been still for 5 s, at most
# MAX_SECS seconds.
settle_splits() {
  local addr=$1 max=$2 last=-1 still=0 now
  for _ in $(seq "$max"); do
    now=$(regions_on "$addr")
    if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
    [ "$still" -ge 5 ] && return
    last=$now
    sleep 1
  done
}
