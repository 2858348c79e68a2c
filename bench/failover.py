#!/usr/bin/env python3
"""Leader failover time (issue 13): two `shoal server`s on a three-member etcd on this
machine; the leader is `kill -9`ed and two times are measured, R times (a fresh pair of
servers each time): until the other reports itself leader (`GET
/shoal/v1/server/status`), and until its control plane's first write is in the store (the
activity-log event each term begins with, written through the term's fenced store).

Usage: cd bench && python3 failover.py --shoal ../target/release/shoal [--runs 5]
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

from store_writes import free_port, start_etcd, token, wait_http

SUB = "00000000-0000-0000-0000-000000000000"


def server(shoal, work, name, url):
    port = free_port()
    proc = subprocess.Popen(
        [shoal, "server", "--name", name, "--store", url, "--listen", f"127.0.0.1:{port}",
         "--data-dir", f"{work}/{name}-{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port


def led(port, name, bearer):
    """Whether the activity log has the event of `name`'s term beginning."""
    url = (f"http://127.0.0.1:{port}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/"
           "management/values?api-version=2015-04-01")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"})
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            events = json.load(r).get("value", [])
    except Exception:
        return False
    return any(e["operationName"]["value"] == "Shoal.Infrastructure/servers/lead/action"
               and e.get("caller") == name for e in events)


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
    times, firsts = [], []
    try:
        for run in range(a.runs):
            first, p1 = server(a.shoal, work, f"a{run}", url)
            deadline = time.time() + 30
            while leader(p1) != f"a{run}" and time.time() < deadline:
                time.sleep(0.05)
            second, p2 = server(a.shoal, work, f"b{run}", url)
            bearer = token(f"{work}/b{run}-{p2}", p2)
            first.kill()
            killed = time.perf_counter()
            while leader(p2) != f"b{run}":
                if time.perf_counter() - killed > 60:
                    raise SystemExit("no new leader within 60 s")
                time.sleep(0.02)
            took = time.perf_counter() - killed
            while not led(p2, f"b{run}", bearer):
                if time.perf_counter() - killed > 60:
                    raise SystemExit("no first write of the new leader within 60 s")
                time.sleep(0.02)
            first_write = time.perf_counter() - killed
            times.append(took)
            firsts.append(first_write)
            print(json.dumps({"run": run + 1, "failover_s": round(took, 2),
                              "first_write_s": round(first_write, 2)}), flush=True)
            first.wait()
            second.kill()
            second.wait()
        print(json.dumps({"runs": len(times), "median_s": round(statistics.median(times), 2),
                          "max_s": round(max(times), 2),
                          "first_write_median_s": round(statistics.median(firsts), 2)}), flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
