#!/usr/bin/env bash
# The Azure SDK compatibility suite (tests/azure-sdk): the official Python SDKs, pinned in
# tests/azure-sdk/requirements.txt, against a fresh `shoal serve`.
#
# - creates ./.venv from the pinned requirements (again only when they change);
# - builds `shoal` and the example workload;
# - starts `shoal serve` on free loopback ports (http, and https with the self-signed
#   certificate Shoal makes in its data directory) with its own temporary data directory;
# - runs pytest (extra arguments go to pytest, e.g. `-k rolling -x`); without extra
#   arguments also the real `az` CLI suite (tests/az-cli, azure-cli pinned in ./.venv-az)
#   against the same server; then stops the server;
# - without extra arguments, runs schemathesis over the server's /openapi.json against a
#   second fresh server (bounded, fixed seed).
# SHOAL_AZ_ONLY=1 ./scripts/azure-sdk.sh -k create runs only the az CLI suite, with the
# extra arguments going to its pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQ=tests/azure-sdk/requirements.txt
CONSTRAINTS=tests/azure-sdk/constraints.txt
PY=${PYTHON:-python3}

step() { printf '\n==> %s\n' "$*"; }

step "python environment ($VENV, pinned by $REQ)"
stamp="$VENV/.requirements.sha256"
if [ ! -x "$VENV/bin/python" ] || ! sha256sum --status -c "$stamp" 2>/dev/null; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" -c "$CONSTRAINTS"
  sha256sum "$REQ" "$CONSTRAINTS" >"$stamp"
fi

# The az CLI suite's own virtualenv: azure-cli pins older SDKs than the SDK suite.
AZ_VENV=.venv-az
AZ_REQ=tests/az-cli/requirements.txt
AZ_CONSTRAINTS=tests/az-cli/constraints.txt
if [ "$#" = 0 ] || [ "${SHOAL_AZ_ONLY:-0}" = 1 ]; then
  step "az CLI environment ($AZ_VENV, pinned by $AZ_REQ)"
  az_stamp="$AZ_VENV/.requirements.sha256"
  if [ ! -x "$AZ_VENV/bin/az" ] || ! sha256sum --status -c "$az_stamp" 2>/dev/null; then
    "$PY" -m venv "$AZ_VENV"
    "$AZ_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$AZ_REQ" -c "$AZ_CONSTRAINTS"
    sha256sum "$AZ_REQ" "$AZ_CONSTRAINTS" >"$az_stamp"
  fi
fi

# The server and its instances are on loopback: never send that through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

step "build shoal and the example workload"
cargo build --quiet -p shoal
cargo build --quiet --release -p shoal-web
BIN=$PWD/target/debug/shoal

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-azure-sdk.XXXXXX")
server_pid=
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}
cleanup() {
  status=$?
  stop_server
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

# start_server DATA_DIR PORT [FLAGS...]: a fresh `shoal serve`, waited for until it answers.
start_server() {
  local data=$1 port=$2
  shift 2
  # Azure's examples make sets of large sizes (ten Standard_D8s_v5, …) one after another;
  # their instances are small processes, so the host's size budget is set high enough
  # for them not to wait for each other's teardown.
  "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$data" \
    --network host-ports --stop-grace-seconds 2 \
    --capacity-vcpus 4096 --capacity-memory-mb 33554432 "$@" >"$work/serve.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { echo "shoal serve exited early"; return 1; }
    sleep 0.2
  done
  curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" >/dev/null
}

port=$(free_port)
tls_port=$(free_port)
while [ "$tls_port" = "$port" ]; do tls_port=$(free_port); done

step "start shoal serve on 127.0.0.1:$port (https on $tls_port), data in $work/data"
# Small capacities only (2-core machines): the server refuses anything above 10.
start_server "$work/data" "$port" --tls-listen "127.0.0.1:$tls_port" --max-capacity 10

# az_suite [PYTEST ARGS...]: the real az CLI suite against the running server.
az_suite() {
  AZURE_CORE_COLLECT_TELEMETRY=false \
  SHOAL_SDK_ENDPOINT="http://127.0.0.1:$port" \
  SHOAL_SDK_TLS_ENDPOINT="https://127.0.0.1:$tls_port" \
  SHOAL_SDK_DATA_DIR="$work/data" \
  SHOAL_SDK_BIN="$BIN" \
  SHOAL_AZ_BIN="$PWD/$AZ_VENV/bin/az" \
    "$AZ_VENV/bin/python" -m pytest tests/az-cli -ra -p no:cacheprovider "$@"
}
if [ "${SHOAL_AZ_ONLY:-0}" = 1 ]; then
  step "pytest tests/az-cli only (SHOAL_AZ_ONLY=1)"
  az_suite "$@"
  stop_server
  exit 0
fi
step "pytest tests/azure-sdk"
SHOAL_SDK_ENDPOINT="http://127.0.0.1:$port" \
SHOAL_SDK_TLS_ENDPOINT="https://127.0.0.1:$tls_port" \
SHOAL_SDK_TLS_CERT="$work/data/tls/cert.pem" \
SHOAL_SDK_DATA_DIR="$work/data" \
SHOAL_SDK_BIN="$BIN" \
  "$VENV/bin/python" -m pytest tests/azure-sdk -ra -p no:cacheprovider "$@"
if [ "$#" = 0 ]; then
  step "pytest tests/az-cli (the real az CLI, signed in to the same server)"
  az_suite
fi
stop_server

if [ "$#" != 0 ]; then
  exit 0 # pytest arguments select tests: skip the fuzz run
fi

step "schemathesis over /openapi.json (fresh server, capacity capped at 3)"
# Bounded: 10 examples per operation and phase, one worker, a fixed seed (SHOAL_FUZZ_SEED
# picks another). Checks: no 5xx, responses as documented, every error in ARM shape, no
# Retry-After on a 4xx. The agent protocol (internal, streaming) is documented, not fuzzed.
fuzz_port=$(free_port)
start_server "$work/fuzz" "$fuzz_port" --max-capacity 3
# A token of the fuzz server's Owner (its credentials/owner.json, exchanged at its token
# endpoint): every fuzzed request is authenticated, so the fuzzer reaches the handlers.
token=$("$VENV/bin/python" - "$work/fuzz" "$fuzz_port" <<'PY'
import json, sys, urllib.parse, urllib.request
data, port = sys.argv[1], sys.argv[2]
c = json.load(open(f"{data}/credentials/owner.json"))
form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": c["appId"],
                               "client_secret": c["password"],
                               "scope": "https://management.azure.com/.default"}).encode()
url = f"http://127.0.0.1:{port}/{c['tenant']}/oauth2/v2.0/token"
print(json.load(urllib.request.urlopen(url, form))["access_token"])
PY
)
curl -fsS -X PUT -H 'content-type: application/json' -H "Authorization: Bearer $token" -d '{"location":"local"}' \
  "http://127.0.0.1:$fuzz_port/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/fuzz?api-version=2024-07-01" >/dev/null
PYTHONPATH=tests/azure-sdk SCHEMATHESIS_HOOKS=schemathesis_hooks \
  "$VENV/bin/schemathesis" --config-file tests/azure-sdk/schemathesis.toml run \
  "http://127.0.0.1:$fuzz_port/openapi.json" --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,arm_error_shape,no_retry_after_on_client_errors \
  --exclude-tag "Agent protocol" --exclude-tag "Token authority" --exclude-operation-id instanceLogs_get \
  --phases examples,coverage,fuzzing,stateful --max-examples 10 --workers 1 \
  --seed "${SHOAL_FUZZ_SEED:-1}" --generation-database none --request-timeout 10 --no-color \
  | tee "$work/schemathesis.log"
stop_server
# One plain closing line, as the other runners print.
cases=$(sed -n 's/^ *\([0-9][0-9]*\) generated, \1 passed.*/\1/p' "$work/schemathesis.log" | tail -n 1)
echo "schemathesis: ${cases:-0} passed, 0 failed"
