#!/usr/bin/env bash
# Where the CPU of an L7 keep-alive load goes: the proxy, wrk and the backends, each in
# clock ticks over one wrk run, HAProxy (nbthread 1) and Shoal's lb-bench (1 worker)
# alternating. Per request, the proxy's ticks are what a faster proxy can save; the
# rest is shared by both (bench/RESULTS.md, issue 14 session 16).
#
#   bash bench/lb/cpu_split.sh [ROUNDS] [DURATION]     # defaults: 2 rounds, 8s
# Needs haproxy and wrk (bench/compare.py installs them) and release builds of
# shoal-web and the lb-bench example.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
R=$ROOT/target/release
ROUNDS=${1:-2}
DURATION=${2:-8s}
FRONT=19550
BACKENDS=(19551 19552 19553)
WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for p in "${BACKENDS[@]}"; do
  PORT=$p SHOAL_INSTANCE_ID=$p "$R/shoal-web" >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 0.5
{
  printf 'global\n    nbthread 1\ndefaults\n    mode http\n    option http-keep-alive\n'
  printf '    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
  printf 'frontend fe\n    bind 127.0.0.1:%s\n    default_backend be\nbackend be\n    balance roundrobin\n' "$FRONT"
  for p in "${BACKENDS[@]}"; do printf '    server s%s 127.0.0.1:%s\n' "$p" "$p"; done
} > "$WORK/haproxy.cfg"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
backend_ticks() { local s=0; for p in "${PIDS[@]}"; do s=$((s + $(ticks "$p"))); done; echo "$s"; }

run() {
  local name=$1; shift
  "$@" >/dev/null 2>&1 &
  local proxy=$!
  sleep 1.5
  local b0 p0 w0 w1
  b0=$(backend_ticks); p0=$(ticks "$proxy")
  wrk -t2 -c50 -d"$DURATION" "http://127.0.0.1:$FRONT/" > "$WORK/wrk.out" &
  local wrk=$!
  w0=$(ticks "$wrk")
  # wrk's own ticks are read just before it exits (its /proc entry goes with it).
  local secs=${DURATION%s}
  sleep "$(echo "$secs - 0.3" | bc)"
  w1=$(ticks "$wrk")
  wait "$wrk"
  local p1 b1 reqs
  p1=$(ticks "$proxy"); b1=$(backend_ticks)
  reqs=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  local hz; hz=$(getconf CLK_TCK)
  awk -v n="$name" -v r="$reqs" -v d="$secs" -v p=$((p1 - p0)) -v w=$((w1 - w0)) -v b=$((b1 - b0)) -v hz="$hz" \
    'BEGIN { us = 1e6 / hz / r; printf "%-8s %8.0f req/s   per request: proxy %5.1f µs, backends %5.1f µs, wrk %5.1f µs (wrk: all but its last 0.3 s)\n", n, r / d, p * us, b * us, w * us }'
  sleep 0.5
}

for ((i = 1; i <= ROUNDS; i++)); do
  run HAProxy haproxy -db -f "$WORK/haproxy.cfg"
  run Shoal "$R/examples/lb-bench" --mode http --threads 1 --listen "127.0.0.1:$FRONT" \
    "${BACKENDS[@]/#/127.0.0.1:}"
done
