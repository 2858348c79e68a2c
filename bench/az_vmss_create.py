#!/usr/bin/env python3
"""`az vmss create` with its defaults (issue 15): time from the command starting to every
instance answering through the load balancer the command made.

Starts its own `shoal serve` (https, so the real az signs in), publishes examples/web
under the URN az resolves `Ubuntu2204` to, signs az in as the owner, then runs

    az vmss create -g RG -n web --image Ubuntu2204 --instance-count N ...

(Flexible set, new virtual network, public IP, load balancer, NSG, NAT rule, one template
deployment) and polls the public IP's port 80 until N distinct instances have answered.
Needs root (port 80 on the public IP) and azure-cli (scripts/azure-sdk.sh makes .venv-az).

Usage: bench/az_vmss_create.py --shoal target/release/shoal [--az .venv-az/bin/az] [--count 10]
Prints one JSON line of results (progress on stderr).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--az", default=".venv-az/bin/az")
    ap.add_argument("--count", type=int, default=10)
    args = ap.parse_args()
    shoal = os.path.abspath(args.shoal)
    work = tempfile.mkdtemp(prefix="shoal-bench-az.")
    data = f"{work}/data"
    port, tls = free_port(), free_port()
    server = subprocess.Popen(
        [shoal, "serve", "--listen", f"127.0.0.1:{port}", "--tls-listen", f"127.0.0.1:{tls}",
         "--data-dir", data, "--network", "host-ports", "--stop-grace-seconds", "2"],
        stdout=open(f"{work}/serve.log", "w"), stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        env = {**os.environ, "SHOAL_DATA_DIR": data}

        def sh(*a):
            subprocess.run([shoal, "--endpoint", f"http://127.0.0.1:{port}", *a], env=env, check=True, capture_output=True)

        sh("group", "create", "--name", "images", "--location", "local")
        sh("image", "create", "-g", "images", "--gallery", "apps", "--name", "web", "--version", "1.0.0",
           "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080")
        sh("image", "publish", "-g", "images", "--gallery", "apps", "--name", "web", "--version", "1.0.0",
           "--urn", "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:1.0.0")
        owner = json.load(open(f"{data}/credentials/owner.json"))
        azenv = {**os.environ, "AZURE_CONFIG_DIR": f"{work}/az", "AZURE_CORE_COLLECT_TELEMETRY": "false",
                 "AZURE_CORE_INSTANCE_DISCOVERY": "false", "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
                 "REQUESTS_CA_BUNDLE": f"{data}/tls/cert.pem", "NO_PROXY": "127.0.0.1,localhost"}

        def az(*a):
            p = subprocess.run([args.az, *a, "-o", "json"], env=azenv, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"az {' '.join(a)} failed:\n{p.stderr}")
            return json.loads(p.stdout) if p.stdout.strip() else None

        az("cloud", "register", "--name", "shoal", "--endpoint-resource-manager", f"https://127.0.0.1:{tls}/")
        az("cloud", "set", "--name", "shoal")
        az("login", "--service-principal", "-u", owner["appId"], "-p", owner["password"], "--tenant", owner["tenant"])
        az("group", "create", "-n", "shop", "-l", "local")
        log(f"az vmss create ({args.count} instances, defaults) ...")
        t0 = time.monotonic()
        az("vmss", "create", "-g", "shop", "-n", "web", "--image", "Ubuntu2204", "--admin-username", "shoal",
           "--admin-password", "Shoal-pass-1234!", "--instance-count", str(args.count), "--vm-sku", "Shoal_1vCPU_512MB")
        returned = time.monotonic() - t0
        ip = az("network", "public-ip", "show", "-g", "shop", "-n", "webLBPublicIP")["ipAddress"]
        seen = set()
        while len(seen) < args.count:
            try:
                with urllib.request.urlopen(f"http://{ip}:80/", timeout=2) as r:
                    seen.add(r.read().decode().strip())
            except OSError:
                time.sleep(0.05)
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"only {len(seen)} of {args.count} answered in 10 minutes")
        answering = time.monotonic() - t0
        log(f"az returned after {returned:.1f} s; all {args.count} answering through {ip}:80 after {answering:.1f} s")
        print(json.dumps({"count": args.count, "az_returned_s": round(returned, 2), "all_answering_s": round(answering, 2)}))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
