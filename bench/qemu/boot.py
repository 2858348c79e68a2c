#!/usr/bin/env python3
"""VM boot benchmark (issue 6): time from create to the first HTTP answer of a VM through
Shoal, against the bare `qemu-system-x86_64` command line booting the same image (same
kernel, initrd, overlay disk, machine, size, network and fw_cfg) on the same machine, in
one run, alternating so both see the same host load. Also the host memory (RSS of the
QEMU process) of an idle VM, and the accelerator used.

Usage: bench/qemu/boot.py [--shoal target/release/shoal] [--runs 5] [--accel auto]
Builds the tiny VM with images/build-tiny-vm.sh, starts its own `shoal serve` on a free
port in a temporary data directory, stops it at the end. Prints a Markdown table and one
JSON line of results (progress on stderr).

"Through Shoal" is: PUT of a 1-instance scale set -> the instance's address appears in
the API -> `GET /` on that address answers 200. The bare run is: spawn QEMU -> `GET /`
on its forwarded port answers 200. Both poll with a fresh connection every 20 ms.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SUB = "00000000-0000-0000-0000-000000000000"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def api(endpoint, method, path, body=None):
    sep = "&" if "?" in path else "?"
    req = urllib.request.Request(
        f"{endpoint}{path}{sep}api-version=2024-07-01",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def http_ok(addr):
    """One GET / on a fresh connection; True on a 200 answer."""
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.3) as s:
            s.settimeout(0.3)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
            return _status_200(s)
    except OSError:
        return False


def _status_200(s):
    data = b""
    while len(data) < 12:
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    return data.startswith(b"HTTP/1.") and data[9:12] == b"200"


def wait_http(addr, deadline):
    while time.monotonic() < deadline:
        if http_ok(addr):
            return time.monotonic()
        time.sleep(0.02)
    raise SystemExit(f"no HTTP answer from {addr}")


def started_at(pid):
    """When `pid` started, on the clock of time.monotonic() (both count from boot)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bare_args(img, overlay, port, kvm, vcpus=1, memory_mb=512, instance_id="0"):
    """The command line Shoal's QEMU driver builds (crates/shoal-agent/src/driver/qemu/args.rs)."""
    a = ["-machine", f"q35,accel={'kvm' if kvm else 'tcg'}"]
    if kvm:
        a += ["-cpu", "host"]
    a += ["-smp", str(vcpus), "-m", f"{memory_mb}M", "-nodefaults", "-no-user-config", "-display", "none",
          "-serial", "stdio", "-qmp", "unix:qmp.sock,server=on,wait=off",
          "-kernel", f"{img}/kernel", "-initrd", f"{img}/initrd",
          "-append", f"console=ttyS0 shoal.instance_id={instance_id} shoal.port=8080",
          "-drive", f"file={overlay},if=none,id=disk0,format=qcow2,discard=unmap",
          "-device", "virtio-blk-pci,drive=disk0",
          "-netdev", f"user,id=net0,hostname=bare,hostfwd=tcp:127.0.0.1:{port}-:8080",
          "-device", "virtio-net-pci,netdev=net0",
          "-fw_cfg", f"name=opt/shoal/instance_id,string={instance_id}",
          "-fw_cfg", "name=opt/shoal/hostname,string=bare",
          "-fw_cfg", "name=opt/shoal/metadata_endpoint,string=http://10.0.2.2:1/i/bare"]
    return a


def bare_run(img, work, kvm, idle_s):
    """Boots the image with bare QEMU; returns (seconds to first answer, idle RSS KiB)."""
    d = tempfile.mkdtemp(dir=work)
    overlay = os.path.join(d, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", f"{img}/disk.img", overlay],
                   check=True)
    port = free_port()
    t0 = time.monotonic()
    p = subprocess.Popen(["qemu-system-x86_64"] + bare_args(img, overlay, port, kvm), cwd=d,
                         stdout=open(os.path.join(d, "console.log"), "wb"), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    try:
        t1 = wait_http(f"127.0.0.1:{port}", t0 + 120)
        time.sleep(idle_s)
        rss = rss_kb(p.pid)
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)
    return t1 - t0, rss


def vmss_path(rg, name):
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"


def shoal_run(endpoint, rg, name, idle_s):
    """Creates a 1-VM scale set; returns (seconds to first answer, idle RSS KiB, view,
    seconds from the PUT until QEMU was spawned)."""
    image = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/vms/images/tiny/versions/1.0.0"
    body = {"location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 1},
            "properties": {"upgradePolicy": {"mode": "Manual"},
                           "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}}
    t0 = time.monotonic()
    api(endpoint, "PUT", vmss_path(rg, name), body)
    addr = None
    while addr is None:
        if time.monotonic() > t0 + 120:
            raise SystemExit("no address within 120 s")
        insts = api(endpoint, "GET", vmss_path(rg, name) + "/virtualMachines")["value"]
        for i in insts:
            addr = (i.get("properties", {}).get("shoal") or {}).get("address")
        if addr is None:
            time.sleep(0.02)
    t1 = wait_http(addr, t0 + 120)
    time.sleep(idle_s)
    inst = api(endpoint, "GET", vmss_path(rg, name) + "/virtualMachines")["value"][0]
    shoal = inst["properties"]["shoal"]
    rss = rss_kb(shoal["pid"])
    spawned = started_at(shoal["pid"]) - t0
    api(endpoint, "DELETE", vmss_path(rg, name))
    while True:
        try:
            api(endpoint, "GET", vmss_path(rg, name))
        except urllib.error.HTTPError as e:
            if e.code == 404:
                break
        time.sleep(0.1)
    return t1 - t0, rss, shoal, spawned


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default=os.path.join(ROOT, "target/release/shoal"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--accel", default="auto")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading RSS")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="shoal-bench-qemu-")
    img = os.path.join(work, "img")
    subprocess.run(["bash", os.path.join(ROOT, "images/build-tiny-vm.sh"), img], check=True,
                   stderr=subprocess.DEVNULL)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data = os.path.join(work, "data")
    serve = subprocess.Popen([args.shoal, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                              "--accel", args.accel],
                             stdout=open(os.path.join(work, "serve.log"), "wb"), stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        env = dict(os.environ, SHOAL_ENDPOINT=endpoint)
        cli = lambda *a: subprocess.run([args.shoal, *a], env=env, check=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        cli("group", "create", "--name", "bench", "--location", "local")
        cli("image", "create", "-g", "bench", "--gallery", "vms", "--name", "tiny", "--version", "1.0.0",
            "--kind", "vm", "--kernel", f"{img}/kernel", "--initrd", f"{img}/initrd", "--disk",
            f"{img}/disk.img", "--port", "8080")
        # A warm-up VM: fetches the bundle into the agent's cache and settles the
        # accelerator (a KVM probe may take seconds) so neither is counted below.
        _, _, view, _ = shoal_run(endpoint, "bench", "warmup", 0)
        kvm = "KVM" in (view.get("limits") or "") and "TCG" not in (view.get("limits") or "")
        log(f"accelerator: {view.get('limits')}")
        bare, via_shoal = [], []
        for i in range(args.runs):
            b = bare_run(img, work, kvm, args.idle)
            s = shoal_run(endpoint, "bench", f"vm{i}", args.idle)
            log(f"run {i + 1}: bare {b[0]:.2f} s ({b[1] // 1024} MiB), shoal {s[0]:.2f} s ({s[1] // 1024} MiB, QEMU spawned after {s[3] * 1000:.0f} ms)")
            bare.append(b)
            via_shoal.append(s)
    finally:
        serve.terminate()
        serve.wait()
        shutil.rmtree(work, ignore_errors=True)

    med = lambda xs: statistics.median(xs)
    bt, st = med([b[0] for b in bare]), med([s[0] for s in via_shoal])
    bm, sm = med([b[1] for b in bare]), med([s[1] for s in via_shoal])
    load = os.getloadavg()
    result = {
        "accel": "kvm" if kvm else "tcg", "accel_why": view.get("limits"), "runs": args.runs,
        "bare_first_answer_s": round(bt, 2), "shoal_first_answer_s": round(st, 2), "ratio": round(st / bt, 3),
        "bare_runs_s": [round(b[0], 2) for b in bare], "shoal_runs_s": [round(s[0], 2) for s in via_shoal],
        "ratio_of_minimums": round(min(s[0] for s in via_shoal) / min(b[0] for b in bare), 3),
        "shoal_put_to_qemu_spawn_ms": round(med([s[3] for s in via_shoal]) * 1000),
        "idle_rss_mib_bare": round(bm / 1024, 1), "idle_rss_mib_shoal": round(sm / 1024, 1),
        "size": "Shoal_1vCPU_512MB", "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load],
    }
    print(f"| accelerator | bare QEMU → first answer (median of {args.runs}) | through Shoal | ratio (medians / minimums) | PUT → QEMU spawned | idle VM RSS (bare / Shoal) |")
    print("|---|---|---|---|---|---|")
    print(f"| {result['accel'].upper()} | {bt:.2f} s | {st:.2f} s | {st / bt:.2f}× / {result['ratio_of_minimums']:.2f}× "
          f"| {result['shoal_put_to_qemu_spawn_ms']} ms | {bm / 1024:.0f} MiB / {sm / 1024:.0f} MiB |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
