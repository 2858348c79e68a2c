#!/usr/bin/env bash
# The Azure SDK compatibility suite (tests/azure-sdk): the official Python SDKs, pinned in
# tests/azure-sdk/requirements.txt, against a fresh `shoal serve`.
#
# - creates ./.venv from the pinned requirements (again only when they change);
# - builds `shoal` and the example workload;
# - starts `shoal serve` on free loopback ports (http, and https with the self-signed
#   certificate Shoal makes in its data directory) with its own temporary data directory;
# - runs pytest (extra arguments go to pytest, e.g. `-k rolling -x`), then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQ=tests/azure-sdk/requirements.txt
PY=${PYTHON:-python3}

step() { printf '\n==> %s\n' "$*"; }

step "python environment ($VENV, pinned by $REQ)"
stamp="$VENV/.requirements.sha256"
if [ ! -x "$VENV/bin/python" ] || ! sha256sum --status -c "$stamp" 2>/dev/null; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  sha256sum "$REQ" >"$stamp"
fi

step "build shoal and the example workload"
cargo build --quiet -p shoal
cargo build --quiet --release -p shoal-web
BIN=$PWD/target/debug/shoal

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-azure-sdk.XXXXXX")
server_pid=
cleanup() {
  status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$status" != 0 ] && [ -f "$work/serve.log" ]; then
    echo "---- last lines of the server's log ($work/serve.log) ----"
    tail -n 60 "$work/serve.log"
    echo "(kept $work for inspection)"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
tls_port=$(free_port)
while [ "$tls_port" = "$port" ]; do tls_port=$(free_port); done

step "start shoal serve on 127.0.0.1:$port (https on $tls_port), data in $work/data"
# Small capacities only (2-core machines): the server refuses anything above 10.
"$BIN" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --tls-listen "127.0.0.1:$tls_port" \
  --network host-ports --max-capacity 10 --stop-grace-seconds 2 \
  >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { echo "shoal serve exited early"; exit 1; }
  sleep 0.2
done
curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" >/dev/null

step "pytest tests/azure-sdk"
SHOAL_SDK_ENDPOINT="http://127.0.0.1:$port" \
SHOAL_SDK_TLS_ENDPOINT="https://127.0.0.1:$tls_port" \
SHOAL_SDK_TLS_CERT="$work/data/tls/cert.pem" \
SHOAL_SDK_DATA_DIR="$work/data" \
SHOAL_SDK_BIN="$BIN" \
  "$VENV/bin/python" -m pytest tests/azure-sdk -ra -p no:cacheprovider "$@"
