#!/usr/bin/env bash
# The restart-after-kill-9 loop at full size: 20 rounds, each a 0 -> 200 scale-out that
# `shoal serve` (the release build) is SIGKILLed in the middle of and restarted at once,
# without waiting for the old process to be reaped. Every restart must start and converge
# to exactly one process per instance. CI runs the same test with 20 x 50 (debug build).
#
#   bench/kill_restart.sh                      # 20 x 200
#   ROUNDS=5 INSTANCES=500 bench/kill_restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p shoal -p shoal-web
SHOAL_E2E_BIN="$PWD/target/release/shoal" \
SHOAL_KILL_LOOP_INSTANCES="${INSTANCES:-200}" \
SHOAL_KILL_LOOP_ROUNDS="${ROUNDS:-20}" \
  cargo test -q -p shoal --test e2e -- --exact \
  restart::kill_9_during_scale_out_then_immediate_restart_always_starts_and_converges --nocapture 2>&1 |
  grep -E "^round|test result|panicked|exited" 
