#!/usr/bin/env bash
# Installs what the etcd store backend needs, from Debian's packages: `protoc`
# (protobuf-compiler, and libprotobuf-dev for google/protobuf/*.proto; the etcd-client
# crate compiles etcd's protos at build time, so the workspace does not build without them) and the `etcd` server (etcd-server, 3.4) plus
# `etcdctl` (etcd-client), which the etcd tests start on loopback ports. Does nothing
# when they are there already; runs `apt-get update` only if the install fails without
# it; without root or apt-get it says what is missing and carries on (the build then
# fails naming protoc, and the etcd tests say why they skip).
set -euo pipefail

have_all() {
  command -v protoc >/dev/null && [ -f /usr/include/google/protobuf/descriptor.proto ] &&
    command -v etcd >/dev/null && command -v etcdctl >/dev/null
}

if have_all; then
  echo "install-etcd: protoc, etcd and etcdctl are installed"
  exit 0
fi
pkgs=(protobuf-compiler libprotobuf-dev etcd-server etcd-client)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-etcd: missing protoc/etcd/etcdctl and cannot install them (needs root and apt-get):"
  echo "  apt-get install ${pkgs[*]}"
  exit 0
fi
echo "install-etcd: apt-get install ${pkgs[*]}"
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
}
install || { echo "install-etcd: apt-get update" && apt-get update -q >/dev/null && install; }
# Debian starts the packaged etcd as a service where there is an init system; the tests
# start their own on free ports, so a packaged one on 2379 is harmless but unneeded.
have_all && echo "install-etcd: done ($(etcd --version | head -1), $(protoc --version))"
