#!/usr/bin/env python3
"""Listing benchmark: how long `GET .../virtualMachines` (every page, as `az vmss
list-instances` reads it) takes for a set of N running instances, and the server CPU
per listing. Starts its own `shoal serve` (host ports) and stops it.

Usage: bench/list1000.py --shoal target/release/shoal --count 1000 --rounds 20
Prints one JSON line of results (and progress on stderr).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import scale1000
from store_writes import token


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--expand", action="store_true", help="list with $expand=instanceView")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="shoal-list-")
    port = scale1000.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SHOAL_LOG="warn", SHOAL_ENDPOINT=endpoint, SHOAL_DATA_DIR=f"{data}/d")
    server = subprocess.Popen(
        [args.shoal, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{data}/d",
         "--network", "host-ports", "--stop-grace-seconds", "2",
         "--capacity-vcpus", str(max(args.count, 32)),
         "--capacity-memory-mb", str(max(args.count, 32) * 128)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(f"{data}/serve.log", "w"),
    )
    api = scale1000.api
    try:
        for _ in range(200):
            try:
                api(endpoint, "GET", "/healthz")
                break
            except Exception:
                time.sleep(0.05)
        scale1000.TOKEN = token(f"{data}/d", port)
        run = lambda *a: subprocess.run([args.shoal, *a], env=env, check=True, stdout=subprocess.DEVNULL)
        run("group", "create", "--name", "bench", "--location", "local")
        run("image", "create", "-g", "bench", "--gallery", "apps", "--name", "web", "--version", "1.0.0",
            "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080")
        run("vmss", "create", "-g", "bench", "-n", "web", "--image", "apps/web:1.0.0", "--instance-count",
            str(args.count), "--vm-sku", "Shoal_1vCPU_128MB")
        vmss = f"/subscriptions/{scale1000.SUB}/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/web"
        query = "?$expand=instanceView" if args.expand else ""

        def listing():
            items, page = [], api(endpoint, "GET", f"{vmss}/virtualMachines{query}")
            items += page["value"]
            while page.get("nextLink"):
                page = scale1000.get_link(page["nextLink"])
                items += page["value"]
            return items

        while True:
            items = listing()
            running = sum(1 for i in items if i["properties"]["shoal"]["state"] == "running")
            print(f"{running}/{args.count} running", file=sys.stderr)
            if running == args.count:
                break
            time.sleep(1)
        time.sleep(2)
        times, cpu = [], []
        for _ in range(args.rounds):
            c0 = scale1000.cpu_seconds(server.pid)
            t = time.perf_counter()
            assert len(listing()) == args.count
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((scale1000.cpu_seconds(server.pid) - c0) * 1000)
        print(json.dumps({
            "count": args.count,
            "expand": args.expand,
            "listing_ms_median": round(statistics.median(times), 1),
            "listing_ms_min": round(min(times), 1),
            "server_cpu_ms_per_listing": round(statistics.mean(cpu), 1),
        }))
        api(endpoint, "PATCH", vmss, {"sku": {"capacity": 0}})
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < 120 and api(endpoint, "GET", f"{vmss}/virtualMachines")["value"]:
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
