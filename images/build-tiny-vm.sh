#!/usr/bin/env bash
# Builds a tiny test VM image for Shoal's QEMU driver from Debian's packages only:
# the kernel of `linux-image-amd64`, `busybox-static`, and `mke2fs -d` for a small ext4
# root disk. Nothing prebuilt is committed; this script makes it all.
#
#   images/build-tiny-vm.sh OUT_DIR
#
# writes OUT_DIR/kernel (Debian's kernel, uncompressed for a fast PVH boot; the original
# bzImage is OUT_DIR/vmlinuz), OUT_DIR/initrd (gzip'd cpio) and OUT_DIR/disk.img (a 32 MiB
# ext4 file system, as qcow2 when qemu-img is there).
# Use them as:
#   shoal image create … --kind vm --kernel OUT_DIR/kernel --initrd OUT_DIR/initrd \
#         [--disk OUT_DIR/disk.img] --port 8080
#
# The guest's init (in the initrd):
#   - loads the virtio, ext4, fw_cfg and ACPI button modules in dependency order (from
#     the kernel's modules.dep; the Debian kernel has them as modules);
#   - reads its instance id from the kernel command line (`shoal.instance_id=N`) or from
#     fw_cfg (`opt/shoal/instance_id`), its custom data from fw_cfg
#     (`opt/shoal/custom_data`), its port from `shoal.port=P` (default 8080);
#   - brings up eth0 with DHCP, as a cloud guest would, falling back to QEMU's user-network
#     defaults (10.0.2.15/24, gateway 10.0.2.2);
#   - mounts the root disk /dev/vda (if any) on /data;
#   - serves HTTP like examples/web: `GET /` answers `instance N`, `GET /health` answers
#     `ok`, `GET /custom-data` the custom data, and `/cgi-bin/disk?name=F` reads (GET) or
#     writes (POST, body = content, then sync) the file F on the disk, and
#     `/cgi-bin/metadata` the instance metadata fetched from Shoal's agent, and
#     `/cgi-bin/identity` a token of the set's managed identity (endpoint and secret
#     from fw_cfg `opt/shoal/identity_{endpoint,header}`);
#   - powers off cleanly when the ACPI power button is pressed (QMP `system_powerdown`).
# Its console is the first serial port (ttyS0).
#
# Needs: linux-image-amd64, busybox-static, cpio, gzip, xz-utils, e2fsprogs, and
# qemu-utils for a compact disk (see scripts/install-vm-deps.sh). Takes a few seconds.
set -euo pipefail

out=${1:?usage: build-tiny-vm.sh OUT_DIR}
kernel=${SHOAL_VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -n "$kernel" ] && [ -r "$kernel" ] || {
  echo "build-tiny-vm.sh: no kernel in /boot: install linux-image-amd64 (scripts/install-vm-deps.sh)" >&2
  exit 1
}
kver=${kernel##*/vmlinuz-}
moddir=/lib/modules/$kver
[ -r "$moddir/modules.dep" ] || { echo "build-tiny-vm.sh: $moddir/modules.dep is missing" >&2; exit 1; }
busybox=${SHOAL_VM_BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build-tiny-vm.sh: $busybox is missing: install busybox-static" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/initrd
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,data,www/cgi-bin,lib/modules,run}
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done

# Modules the guest needs, with their dependencies first (a post-order walk of
# modules.dep), each loaded once.
wanted="virtio_pci virtio_net virtio_blk virtio_mmio ext4 crc32c_generic qemu_fw_cfg button evdev"
declare -A seen=()
order=()
visit() {
  local name=$1 line path dep
  line=$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n 1 || true)
  [ -n "$line" ] || { echo "build-tiny-vm.sh: module $name is not in $moddir/modules.dep (built in?); skipping" >&2; return 0; }
  path=${line%%:*}
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1
  for dep in ${line#*:}; do
    dep=${dep##*/}
    visit "${dep%%.ko*}"
  done
  order+=("$path")
}
for m in $wanted; do visit "$m"; done
: > "$root/etc/modules"
for path in "${order[@]}"; do
  name=${path##*/}
  case $name in
    *.ko.xz) xz -dc "$moddir/$path" > "$root/lib/modules/${name%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$path" > "$root/lib/modules/${name%.zst}" ;;
    *.ko.gz) gzip -dc "$moddir/$path" > "$root/lib/modules/${name%.gz}" ;;
    *) cp "$moddir/$path" "$root/lib/modules/$name" ;;
  esac
  echo "${name%.ko*}.ko" >> "$root/etc/modules"
done

cat > "$root/init" <<'INIT'
#!/bin/sh
# Shoal tiny VM: see images/build-tiny-vm.sh.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "shoal-tiny: init started"
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done < /etc/modules

port=8080
id=
for arg in $(cat /proc/cmdline); do
  case $arg in
    shoal.instance_id=*) id=${arg#*=} ;;
    shoal.port=*) port=${arg#*=} ;;
  esac
done
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/shoal
[ -n "$id" ] || id=$(cat "$fw/instance_id/raw" 2>/dev/null)
[ -r "$fw/custom_data/raw" ] && cat "$fw/custom_data/raw" > /www/custom-data
[ -r "$fw/metadata_endpoint/raw" ] && cat "$fw/metadata_endpoint/raw" > /run/metadata-endpoint
[ -r "$fw/identity_endpoint/raw" ] && cat "$fw/identity_endpoint/raw" > /run/identity-endpoint
[ -r "$fw/identity_header/raw" ] && cat "$fw/identity_header/raw" > /run/identity-header
hostname "$(cat "$fw/hostname/raw" 2>/dev/null || echo "shoal-$id")"

ip link set lo up
ip link set eth0 up 2>/dev/null
if ! udhcpc -i eth0 -f -q -n -t 3 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1; then
  echo "shoal-tiny: no DHCP answer; using QEMU user-network defaults"
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
fi

if [ -b /dev/vda ]; then
  mount -t ext4 /dev/vda /data && echo "shoal-tiny: disk mounted on /data"
fi

echo "instance $id" > /www/index.html
echo ok > /www/health
[ -e /www/custom-data ] || : > /www/custom-data
httpd -p "$port" -h /www
echo "shoal-tiny: instance $id serving HTTP on port $port"

# The ACPI power button (QMP system_powerdown) powers off cleanly.
halt_clean() {
  echo "shoal-tiny: powering off"
  sync
  umount /data 2>/dev/null
  busybox poweroff -f
}
for ev in /sys/class/input/event*; do
  [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] || continue
  (head -c 1 "/dev/input/${ev##*/}" >/dev/null && halt_clean) &
done

# PID 1 never exits; it reaps children.
trap halt_clean TERM USR2
while :; do sleep 3600 & wait $!; done
INIT
chmod 755 "$root/init"

cat > "$root/etc/udhcpc.script" <<'DHCP'
#!/bin/sh
# udhcpc hook: apply the lease.
case $1 in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
DHCP
chmod 755 "$root/etc/udhcpc.script"

cat > "$root/www/cgi-bin/disk" <<'CGI'
#!/bin/sh
# GET reads, POST writes (and syncs) the file `name` on the disk mounted on /data.
name=$(echo "$QUERY_STRING" | sed -n 's/^.*name=\([A-Za-z0-9._-]*\).*$/\1/p')
if [ -z "$name" ] || ! grep -q " /data " /proc/mounts; then
  printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno disk or no name\n'
  exit 0
fi
case $REQUEST_METHOD in
  POST)
    head -c "${CONTENT_LENGTH:-0}" > "/data/$name" && sync
    printf 'Content-Type: text/plain\r\n\r\nwritten\n'
    ;;
  *)
    if [ -f "/data/$name" ]; then
      printf 'Content-Type: text/plain\r\n\r\n'; cat "/data/$name"
    else
      printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnot found\n'
    fi
    ;;
esac
CGI
chmod 755 "$root/www/cgi-bin/disk"

cat > "$root/www/cgi-bin/metadata" <<'CGI'
#!/bin/sh
# The instance metadata Shoal's agent serves, fetched from inside the guest.
# busybox's static wget crashes resolving even numeric hosts, so speak HTTP with nc.
url=$(cat /run/metadata-endpoint)   # http://10.0.2.2:PORT/i/KEY
hostport=${url#http://}
hostport=${hostport%%/*}
path=/${url#http://*/}
printf 'Content-Type: application/json\r\n\r\n'
printf 'GET %s/metadata/instance HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" |
  nc -w 5 "${hostport%:*}" "${hostport#*:}" | sed '1,/^\r*$/d'
CGI
chmod 755 "$root/www/cgi-bin/metadata"

cat > "$root/www/cgi-bin/identity" <<'CGI'
#!/bin/sh
# A token of the set's managed identity, asked for as a process instance asks
# (IDENTITY_ENDPOINT + X-IDENTITY-HEADER, both from fw_cfg); the answer's body as is.
url=$(cat /run/identity-endpoint)   # http://10.0.2.2:PORT/i/KEY/metadata/identity/oauth2/token
hostport=${url#http://}
hostport=${hostport%%/*}
path=/${url#http://*/}
printf 'Content-Type: application/json\r\n\r\n'
printf 'GET %s?api-version=2019-08-01&resource=https://management.azure.com/ HTTP/1.0\r\nHost: %s\r\nX-IDENTITY-HEADER: %s\r\n\r\n' \
  "$path" "$hostport" "$(cat /run/identity-header)" |
  nc -w 5 "${hostport%:*}" "${hostport#*:}" | sed '1,/^\r*$/d'
CGI
chmod 755 "$root/www/cgi-bin/identity"

(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1) > "$out/initrd"

# The kernel: Debian ships a bzImage whose xz decompression alone takes ~5 s without
# KVM (TCG), so unless SHOAL_VM_BZIMAGE=1 the uncompressed vmlinux inside it is used:
# QEMU boots it directly through its PVH entry (same kernel, same bytes once running).
cp "$kernel" "$out/vmlinuz"
kind=bzImage
if [ "${SHOAL_VM_BZIMAGE:-0}" != 1 ]; then
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$kernel" | head -n 1 | cut -d: -f1 || true)
  if [ -n "$offset" ]; then
    tail -c +$((offset + 1)) "$kernel" | xz -dcq 2>/dev/null > "$work/vmlinux" || true
  fi
  if [ -s "$work/vmlinux" ] && [ "$(head -c 4 "$work/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    mv "$work/vmlinux" "$out/kernel"
    kind="vmlinux (PVH)"
  fi
fi
[ -e "$out/kernel" ] && [ "$kind" != bzImage ] || cp "$kernel" "$out/kernel"

# The root disk: a small ext4 file system with a marker file.
disk=$work/disk
mkdir -p "$disk"
echo "shoal tiny disk, kernel $kver" > "$disk/README"
rm -f "$out/disk.img" "$work/disk.raw"
mke2fs -q -t ext4 -L shoal-root -d "$disk" "$work/disk.raw" 32M >/dev/null
if command -v qemu-img >/dev/null; then
  qemu-img convert -O qcow2 "$work/disk.raw" "$out/disk.img" # a few hundred KiB, not 32 MiB
else
  mv "$work/disk.raw" "$out/disk.img"
fi
echo "build-tiny-vm.sh: wrote $out/kernel ($kver, $kind), $out/initrd, $out/disk.img" >&2
