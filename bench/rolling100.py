#!/usr/bin/env python3
"""Rolling-upgrade benchmark (issue 12): time to roll N instances of examples/web behind
the balancer to a new image version (20 % batches, in place or with maxSurge), and how
many client requests failed meanwhile.

Usage: bench/rolling100.py --shoal target/release/shoal --count 100 [--max-surge]
Starts its own `shoal serve` on a free port in a temporary data directory and stops it.
Four client threads send GETs through the balancer on a new connection each, from before
the model change until the upgrade ends. Prints one JSON line of results (progress on
stderr).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from store_writes import token

SUB = "00000000-0000-0000-0000-000000000000"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# The owner's bearer token, once the server made its credential (see main).
TOKEN = None


def api(endpoint, method, path, body=None):
    sep = "&" if "?" in path else "?"
    req = urllib.request.Request(
        f"{endpoint}{path}{sep}api-version=2024-07-01",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {TOKEN}"} if TOKEN else {})},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def get_ok(frontend):
    try:
        with urllib.request.urlopen(f"http://{frontend}/", timeout=5) as r:
            return r.status == 200
    except Exception:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--max-surge", action="store_true")
    ap.add_argument("--network", default="host-ports", choices=["auto", "namespaces", "host-ports"])
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="shoal-bench-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SHOAL_LOG="warn", SHOAL_ENDPOINT=endpoint, SHOAL_DATA_DIR=f"{data}/d")
    server = subprocess.Popen(
        [args.shoal, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{data}/d",
         "--network", args.network, "--stop-grace-seconds", "2", "--drain-timeout-seconds", "10",
         "--capacity-vcpus", "1000"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(f"{data}/serve.log", "w"),
    )
    try:
        for _ in range(200):
            try:
                api(endpoint, "GET", "/healthz")
                break
            except Exception:
                time.sleep(0.05)
        global TOKEN
        TOKEN = token(f"{data}/d", port)
        run = lambda *a: subprocess.run([args.shoal, *a], env=env, check=True, stdout=subprocess.DEVNULL)
        rg = "bench"
        run("group", "create", "--name", rg, "--location", "local")
        for version in ["1.0.0", "1.0.1"]:
            run("image", "create", "-g", rg, "--gallery", "apps", "--name", "web", "--version", version,
                "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080")
        front = str(free_port())
        run("network", "lb", "create", "-g", rg, "-n", "lb", "--backend-pool-name", "pool")
        run("network", "lb", "probe", "create", "-g", rg, "--lb-name", "lb", "-n", "http", "--protocol",
            "Http", "--port", "8080", "--path", "/health", "--interval", "1", "--threshold", "2")
        run("network", "lb", "rule", "create", "-g", rg, "--lb-name", "lb", "-n", "web", "--protocol", "Tcp",
            "--frontend-port", front, "--backend-port", "8080", "--probe-name", "http")
        frontend = f"127.0.0.1:{front}"
        lb = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/lb"
        gallery = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/apps/images/web/versions"
        vmss = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/web"
        api(endpoint, "PUT", vmss, {
            "location": "local",
            "sku": {"name": "Shoal_1vCPU_128MB", "capacity": args.count},
            "properties": {
                "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": 20, "maxSurge": args.max_surge}},
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": {"id": f"{gallery}/1.0.0"}},
                    "networkProfile": {
                        "healthProbe": {"id": f"{lb}/probes/http"},
                        "networkInterfaceConfigurations": [{"name": "nic", "properties": {"primary": True, "ipConfigurations": [{"name": "ip", "properties": {"loadBalancerBackendAddressPools": [{"id": f"{lb}/backendAddressPools/pool"}]}}]}}],
                    },
                },
            },
        })
        t = time.perf_counter()
        while time.perf_counter() - t < args.timeout:
            items = api(endpoint, "GET", f"{vmss}/virtualMachines?$expand=instanceView")["value"]
            healthy = [i for i in items
                       if (i["properties"].get("instanceView", {}).get("vmHealth") or {}).get("status", {}).get("code") == "HealthState/healthy"]
            if len(healthy) == args.count:
                break
            time.sleep(1)
        print(f"{args.count} healthy after {time.perf_counter() - t:.1f}s", file=sys.stderr)

        counts = {"ok": 0, "failed": 0}
        stop = threading.Event()
        lock = threading.Lock()

        def load():
            while not stop.is_set():
                ok = get_ok(frontend)
                with lock:
                    counts["ok" if ok else "failed"] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for th in threads:
            th.start()
        time.sleep(1)
        t0 = time.perf_counter()
        api(endpoint, "PATCH", vmss, {"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": {"id": f"{gallery}/1.0.1"}}}}})
        latest = {}
        last = 0
        while time.perf_counter() - t0 < args.timeout:
            try:
                latest = api(endpoint, "GET", f"{vmss}/rollingUpgrades/latest")
            except Exception:
                latest = {}
            code = latest.get("properties", {}).get("runningStatus", {}).get("code")
            if code and code not in ("RollingForward", "RollingBack"):
                break
            now = time.perf_counter() - t0
            if now - last > 5:
                p = latest.get("properties", {})
                print(f"{now:6.1f}s {code} {p.get('progress')}", file=sys.stderr)
                last = now
            time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        time.sleep(1)
        stop.set()
        for th in threads:
            th.join()
        p = latest.get("properties", {})
        print(json.dumps({
            "count": args.count,
            "mode": "maxSurge" if args.max_surge else "in place",
            "network": args.network,
            "code": p.get("runningStatus", {}).get("code"),
            "seconds": round(elapsed, 1),
            "batches": p.get("shoal", {}).get("batchesDone"),
            "upgraded": p.get("progress", {}).get("successfulInstanceCount"),
            "requests_ok": counts["ok"],
            "requests_failed": counts["failed"],
        }))
        api(endpoint, "PATCH", vmss, {"sku": {"capacity": 0}})
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < 120:
            if not api(endpoint, "GET", f"{vmss}/virtualMachines")["value"]:
                break
            time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
