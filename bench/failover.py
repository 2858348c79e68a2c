#!/usr/bin/env python3
"""Leader failover time (issue 13): two `shoal server`s on a three-member etcd on this
machine; the leader is `kill -9`ed and the time until the other reports itself leader
(`GET /shoal/v1/server/status`) is measured, R times (a fresh pair of servers each time).

Usage: bench/failover.py --shoal target/release/shoal [--runs 5]
Prints one JSON line per run and a summary (progress on stderr).
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from store_writes import free_port, start_etcd, wait_http


def server(shoal, work, name, url):
    port = free_port()
    proc = subprocess.Popen(
        [shoal, "server", "--name", name, "--store", url, "--listen", f"127.0.0.1:{port}",
         "--data-dir", f"{work}/{name}-{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port


def leader(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/shoal/v1/server/status", timeout=1) as r:
            return json.load(r)["leader"]["name"]
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if not shutil.which("etcd"):
        raise SystemExit("etcd is not installed: run scripts/install-etcd.sh")
    work = tempfile.mkdtemp(prefix="shoal-failover-bench-")
    procs, endpoints = start_etcd(work, 3)
    url = "etcd://" + ",".join(endpoints)
    times = []
    try:
        for run in range(a.runs):
            first, p1 = server(a.shoal, work, f"a{run}", url)
            deadline = time.time() + 30
            while leader(p1) != f"a{run}" and time.time() < deadline:
                time.sleep(0.05)
            second, p2 = server(a.shoal, work, f"b{run}", url)
            first.kill()
            killed = time.perf_counter()
            while leader(p2) != f"b{run}":
                if time.perf_counter() - killed > 60:
                    raise SystemExit("no new leader within 60 s")
                time.sleep(0.02)
            took = time.perf_counter() - killed
            times.append(took)
            print(json.dumps({"run": run + 1, "failover_s": round(took, 2)}), flush=True)
            first.wait()
            second.kill()
            second.wait()
        print(json.dumps({"runs": len(times), "median_s": round(statistics.median(times), 2),
                          "max_s": round(max(times), 2)}), flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
