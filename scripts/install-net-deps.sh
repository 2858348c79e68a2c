#!/usr/bin/env bash
# Installs what multi-host networking and its tests need, from Debian's packages: iproute2
# (`ip`: the tests make network-namespace hosts on a bridge) and nftables (`nft`: the
# agent's outbound NAT for namespaced instances), and curl (the gateway tests' HTTP/2 and
# large-body client). Does nothing when all are there;
# without root or apt-get it says what is missing and carries on (the multi-host test
# then says why it cannot run).
set -euo pipefail

if command -v ip >/dev/null && command -v nft >/dev/null && command -v curl >/dev/null; then
  echo "install-net-deps: ip, nft and curl are installed"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-net-deps: missing ip, nft or curl and cannot install them (needs root and apt-get):"
  echo "  apt-get install iproute2 nftables curl"
  exit 0
fi
pkgs=(iproute2 nftables curl)
echo "install-net-deps: apt-get install ${pkgs[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null ||
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
command -v nft >/dev/null && echo "install-net-deps: done"
