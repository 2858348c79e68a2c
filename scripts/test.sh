#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Needs the Rust toolchain, python3 and the package registries (the Azure SDK suite makes its
# own virtualenv in ./.venv); as root on Debian it also installs QEMU, a kernel and busybox for
# the VM tests (scripts/install-vm-deps.sh), which otherwise skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format check"
cargo fmt --all -- --check

step "build (the e2e tests run the real binaries)"
cargo build --release -p shoal-web
cargo build -p shoal

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
if [ "$(id -u)" != 0 ]; then
  echo "note: not root: instances share the host network and namespace tests skip (they say why)"
fi
./scripts/install-vm-deps.sh # QEMU, a kernel and busybox for the VM tests (tests/e2e/vm.rs)
cargo test --workspace --no-fail-fast

step "Azure SDK compatibility (tests/azure-sdk: the official Python SDKs against a fresh shoal serve)"
./scripts/azure-sdk.sh
