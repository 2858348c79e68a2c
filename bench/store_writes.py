#!/usr/bin/env python3
"""API write latency and throughput by store (issue 13): the same `shoal serve` on its
embedded redb store, on a one-member etcd and on a three-member etcd (all on this
machine), each sent N resource-group PUTs (tags changed each time) from C client threads.

Usage: bench/store_writes.py --shoal target/release/shoal [--writes 2000] [--clients 4]
Starts etcd and the servers itself (etcd from scripts/install-etcd.sh), signs in with
each server's owner credential, and prints one JSON line per store (progress on stderr).
"""
import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

SUB = "00000000-0000-0000-0000-000000000000"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def start_etcd(work, members):
    """`members` etcd processes on loopback: (processes, client endpoints)."""
    ports = [(free_port(), free_port()) for _ in range(members)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
    procs, endpoints = [], []
    for i, (client, peer) in enumerate(ports):
        procs.append(subprocess.Popen(
            ["etcd", "--name", f"m{i}", "--data-dir", f"{work}/etcd-{members}-{i}",
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", cluster, "--initial-cluster-state", "new"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        endpoints.append(f"127.0.0.1:{client}")
    for e in endpoints:
        wait_http(f"http://{e}/health")
    return procs, endpoints


def token(data, port):
    c = json.load(open(f"{data}/credentials/owner.json"))
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": c["appId"],
                                   "client_secret": c["password"],
                                   "scope": "https://management.azure.com/.default"}).encode()
    url = f"http://127.0.0.1:{port}/{c['tenant']}/oauth2/v2.0/token"
    return json.load(urllib.request.urlopen(url, form))["access_token"]


def run(shoal, work, label, store_args, writes, clients):
    port = free_port()
    data = f"{work}/data-{label}"
    server = subprocess.Popen([shoal, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                               "--network", "host-ports", *store_args],
                              stdout=subprocess.DEVNULL, stderr=open(f"{work}/{label}.log", "w"))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        bearer = token(data, port)
        latencies, errors, lock = [], [0], threading.Lock()
        codes, samples = {}, {}

        def client(k):
            for i in range(k, writes, clients):
                body = json.dumps({"location": "local", "tags": {"n": str(i)}}).encode()
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/subscriptions/{SUB}/resourcegroups/bench{i % 50}?api-version=2024-07-01",
                    data=body, method="PUT",
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"})
                t = time.perf_counter()
                try:
                    urllib.request.urlopen(req, timeout=30).read()
                    ok = True
                except urllib.error.HTTPError as e:
                    ok = False
                    with lock:
                        codes[e.code] = codes.get(e.code, 0) + 1
                        if e.code >= 500 and e.code not in samples:
                            samples[e.code] = e.read().decode()[:300]
                except Exception as e:  # noqa: BLE001 - counted by kind
                    ok = False
                    with lock:
                        kind = type(e).__name__
                        codes[kind] = codes.get(kind, 0) + 1
                        samples.setdefault(kind, str(e)[:300])
                dt = time.perf_counter() - t
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        latencies.sort()
        pct = lambda q: round(latencies[int((len(latencies) - 1) * q)] * 1000, 1) if latencies else None
        return {"store": label, "writes": len(latencies), "errors": errors[0], "error_codes": codes,
                "error_samples": samples,
                "writes_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.5), "p99_ms": pct(0.99)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    if not shutil.which("etcd"):
        raise SystemExit("etcd is not installed: run scripts/install-etcd.sh")
    work = tempfile.mkdtemp(prefix="shoal-store-bench-")
    try:
        print(json.dumps(run(a.shoal, work, "redb", [], a.writes, a.clients)), flush=True)
        for members in (1, 3):
            procs, endpoints = start_etcd(work, members)
            try:
                url = "etcd://" + ",".join(endpoints)
                print(json.dumps(run(a.shoal, work, f"etcd-{members}", ["--store", url], a.writes, a.clients)),
                      flush=True)
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
