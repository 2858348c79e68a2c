#!/usr/bin/env python3
"""Autoscale reaction benchmark (issue 4): from the moment CPU load starts on a 1-instance
set behind a load balancer to the moment a new instance answers through the balancer,
with a 1 s evaluation interval, 1 s grains and a 2 s window.

Usage: bench/autoscale.py --shoal target/release/shoal --runs 5
Starts its own `shoal serve` on a free port in a temporary data directory and stops it.
Each run: a fresh set `webN` (capacity 1, max 2) in its own balancer (probe every 1 s,
2 failures), rule `Percentage CPU > 50 avg 2s` → out 1; load = 2 clients calling
`/work?ms=200` through the balancer; the clock stops when `GET /` through the balancer
answers `instance 1`. Prints one JSON line per run and a summary (progress on stderr).
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
import threading
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except Exception:
        return None, ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="shoal-bench-autoscale-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SHOAL_LOG="warn", SHOAL_ENDPOINT=endpoint,
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    server = subprocess.Popen(
        [args.shoal, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{data}/d",
         "--stop-grace-seconds", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(f"{data}/serve.log", "w"),
    )
    run = lambda *a: subprocess.run([args.shoal, *a], env=env, check=True, stdout=subprocess.DEVNULL)
    results = []
    try:
        for _ in range(200):
            if get(f"{endpoint}/healthz")[0] == 200:
                break
            time.sleep(0.05)
        run("group", "create", "--name", "bench", "--location", "local")
        run("image", "create", "-g", "bench", "--gallery", "apps", "--name", "web", "--version", "1.0.0",
            "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080")
        for n in range(args.runs):
            name, lb, front = f"web{n}", f"lb{n}", free_port()
            run("network", "lb", "create", "-g", "bench", "-n", lb, "--backend-pool-name", "pool")
            run("network", "lb", "probe", "create", "-g", "bench", "--lb-name", lb, "-n", "http",
                "--protocol", "Http", "--port", "8080", "--path", "/health", "--interval", "1", "--threshold", "2")
            run("network", "lb", "rule", "create", "-g", "bench", "--lb-name", lb, "-n", "web", "--protocol", "Tcp",
                "--frontend-port", str(front), "--backend-port", "8080", "--probe-name", "http")
            run("vmss", "create", "-g", "bench", "-n", name, "--image", "apps/web:1.0.0", "--instance-count", "1",
                "--vm-sku", "Shoal_1vCPU_512MB", "--lb", lb, "--backend-pool-name", "pool")
            url = f"http://127.0.0.1:{front}"
            while "instance 0" not in get(f"{url}/")[1]:
                time.sleep(0.1)
            auto = f"{name}-auto"
            run("monitor", "autoscale", "create", "-g", "bench", "--resource", name, "-n", auto,
                "--min-count", "1", "--max-count", "2", "--count", "1", "--evaluation-interval", "1s")
            run("monitor", "autoscale", "rule", "create", "-g", "bench", "--autoscale-name", auto,
                "--condition", "Percentage CPU > 50 avg 2s", "--timegrain", "avg 1s", "--scale", "out", "1",
                "--cooldown", "1m")
            time.sleep(2)  # the setting is in place and idle metrics flow

            stop = threading.Event()

            def load():
                while not stop.is_set():
                    get(f"{url}/work?ms=200", timeout=10)

            t0 = time.perf_counter()
            workers = [threading.Thread(target=load) for _ in range(2)]
            for w in workers:
                w.start()
            elapsed = None
            while time.perf_counter() - t0 < args.timeout:
                if "instance 1" in get(f"{url}/", timeout=2)[1]:
                    elapsed = time.perf_counter() - t0
                    break
                time.sleep(0.05)
            stop.set()
            for w in workers:
                w.join()
            hist = subprocess.run([args.shoal, "monitor", "autoscale", "history", "-g", "bench", "-n", auto],
                                  env=env, capture_output=True, text=True).stdout
            scaled_at = next((e["time"] for e in json.loads(hist or "{}").get("value", [])
                              if e.get("outcome") == "ScaleOut"), None)
            r = {"run": n, "seconds_load_to_new_instance_serving": round(elapsed, 2) if elapsed else None,
                 "scale_out_recorded_at": scaled_at}
            results.append(r)
            print(json.dumps(r))
            print(f"run {n}: {r['seconds_load_to_new_instance_serving']} s", file=sys.stderr)
            run("vmss", "delete", "-g", "bench", "-n", name)
        done = sorted(r["seconds_load_to_new_instance_serving"] for r in results
                      if r["seconds_load_to_new_instance_serving"] is not None)
        print(json.dumps({
            "runs": len(results), "reached": len(done),
            "median_s": round(statistics.median(done), 2) if done else None,
            "min_s": done[0] if done else None, "max_s": done[-1] if done else None,
        }))
    finally:
        server.terminate()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
