#!/usr/bin/env bash
# Shoal's load-balancer data plane against HAProxy, side by side, same machine, same
# backends (3 × examples/web), same load generator (wrk). Prints a Markdown table and
# writes it to bench/lb/last-run.md.
#
#   bench/lb/run.sh                      # 15 s per run, 50 connections, 2 wrk threads
#   DURATION=5s bench/lb/run.sh          # quicker
#
# Runs: straight to one backend (the ceiling); L7 HTTP/1.1 keep-alive through HAProxy
# (nbthread 1 and its default) and through Shoal (1 and 2 tokio workers); L4 through
# HAProxy `mode tcp` and Shoal's TCP listener, with keep-alive and with a new connection
# per request.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-15s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-2}
BASE=${BASE_PORT:-19100}
B1=$((BASE + 1)); B2=$((BASE + 2)); B3=$((BASE + 3))
FRONT=$((BASE + 50))

if ! command -v haproxy >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy wrk >/dev/null
fi

cargo build -q --release -p shoal-web
cargo build -q --release -p shoal-lb --example lb-bench
WEB=target/release/shoal-web
LB=target/release/examples/lb-bench

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

for i in 1 2 3; do
  PORT=$((BASE + i)) SHOAL_INSTANCE_ID=$i "$WEB" >/dev/null &
  pids+=($!)
  wait_port $((BASE + i))
done

# haproxy_config MODE NBTHREAD(empty = HAProxy's default: one per core)
haproxy_config() {
  local mode=$1 threads=$2
  {
    echo "global"
    echo "    maxconn 4000"
    [ -n "$threads" ] && echo "    nbthread $threads"
    echo "defaults"
    echo "    mode $mode"
    echo "    timeout connect 5s"
    echo "    timeout client 60s"
    echo "    timeout server 60s"
    [ "$mode" = http ] && echo "    option http-keep-alive"
    echo "frontend fe"
    echo "    bind 127.0.0.1:$FRONT"
    echo "    default_backend be"
    echo "backend be"
    echo "    balance roundrobin"
    echo "    option httpchk GET /health"
    for p in $B1 $B2 $B3; do echo "    server s$p 127.0.0.1:$p check inter 1s"; done
  } >"$work/haproxy.cfg"
}

proxy_pid=""
start_haproxy() {
  haproxy_config "$1" "$2"
  haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 &
  proxy_pid=$!
  wait_port $FRONT
  sleep 1.5 # first health checks
}
start_shoal() {
  "$LB" --mode "$1" --threads "$2" --listen 127.0.0.1:$FRONT 127.0.0.1:$B1 127.0.0.1:$B2 127.0.0.1:$B3 >/dev/null &
  proxy_pid=$!
  wait_port $FRONT
  sleep 1.5 # first probes
}
stop_proxy() {
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=""
  sleep 0.5
}

rows=()
# measure NAME PORT [wrk args…]
measure() {
  local name=$1 port=$2
  shift 2
  wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port/" >"$work/wrk.txt" 2>&1
  local rps p50 p99 xfer errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
  xfer=$(awk '/^Transfer\/sec:/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  errors=$(awk '/Socket errors|Non-2xx/ {sub(/^ +/, ""); printf "%s; ", $0}' "$work/wrk.txt")
  rows+=("| $name | ${rps:-?} | ${p50:-?} | ${p99:-?} | ${xfer:-?} | ${errors:-none} |")
  echo "${rows[-1]}" >&2
}

measure "direct to one backend (ceiling)" $B1

start_haproxy http 1;   measure "L7 HAProxy http, nbthread 1" $FRONT; stop_proxy
start_shoal http 1;     measure "L7 Shoal http, 1 worker" $FRONT; stop_proxy
start_haproxy http "";  measure "L7 HAProxy http, default threads" $FRONT; stop_proxy
start_shoal http 2;     measure "L7 Shoal http, 2 workers" $FRONT; stop_proxy

start_haproxy tcp 1;    measure "L4 HAProxy tcp, nbthread 1, keep-alive" $FRONT
                        measure "L4 HAProxy tcp, nbthread 1, new conn/request" $FRONT -H "Connection: close"; stop_proxy
start_shoal tcp 1;      measure "L4 Shoal tcp, 1 worker, keep-alive" $FRONT
                        measure "L4 Shoal tcp, 1 worker, new conn/request" $FRONT -H "Connection: close"; stop_proxy
start_haproxy tcp "";   measure "L4 HAProxy tcp, default threads, keep-alive" $FRONT
                        measure "L4 HAProxy tcp, default threads, new conn/request" $FRONT -H "Connection: close"; stop_proxy
start_shoal tcp 2;      measure "L4 Shoal tcp, 2 workers, keep-alive" $FRONT
                        measure "L4 Shoal tcp, 2 workers, new conn/request" $FRONT -H "Connection: close"; stop_proxy

{
  echo "Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'), $(uname -r)"
  echo "HAProxy: $(haproxy -v | head -1)"
  echo "wrk: wrk -t$WRK_THREADS -c$CONNS -d$DURATION --latency, backends: 3 × shoal-web"
  echo
  echo "| run | req/s | p50 | p99 | transfer/s | errors |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee bench/lb/last-run.md
