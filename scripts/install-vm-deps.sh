#!/usr/bin/env bash
# Installs what VM instances and their tests need, from Debian's packages: QEMU
# (qemu-system-x86, qemu-utils), a kernel (linux-image-amd64) and busybox-static, from
# which images/build-tiny-vm.sh builds the tiny test VM. Does nothing when they are
# there already; without root or apt-get it says what is missing and carries on (the VM
# tests then say why they skip).
set -euo pipefail

have_all() {
  command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null &&
    [ -x /bin/busybox ] && ls /boot/vmlinuz-* >/dev/null 2>&1
}

if have_all; then
  echo "install-vm-deps: QEMU, qemu-img, busybox and a kernel are installed"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-vm-deps: missing QEMU/busybox/kernel and cannot install them (needs root and apt-get):"
  echo "  apt-get install qemu-system-x86 qemu-utils linux-image-amd64 busybox-static"
  exit 0
fi

pkgs=(qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils e2fsprogs)
# qemu-utils must match qemu-system-x86: a newer qemu-utils (e.g. from backports) that
# is already installed blocks it, so ask for the same version explicitly.
qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
if [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ] &&
  apt-cache madison qemu-utils | awk '{ print $3 }' | grep -qx -- "$qemu_version"; then
  pkgs+=("qemu-utils=$qemu_version")
else
  pkgs+=(qemu-utils)
fi
echo "install-vm-deps: apt-get install ${pkgs[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null ||
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null; }
have_all && echo "install-vm-deps: done"
