#!/usr/bin/env python3
"""Multi-host benchmarks (issue 10), on three network-namespace hosts joined by a bridge
(as tests/e2e/multihost.rs builds them; needs root, `ip` and `nft`):

1. failover: a set of 6 instances in zones 1, 2, 3 behind a balancer on host a, a steady
   client (one new connection per request); host b's link is cut. Measured: time until
   the set is back to 6 running instances on a and c that all answer through the
   balancer, and the client's failed requests (with when they started, relative to the
   cut). Run with the server's timeouts as given (--heartbeat/--not-ready/--down).
2. scale: 0 -> N instances (default 1000) of examples/web spread over the three hosts;
   time until every one answers HTTP at its own address (from the root namespace, routed
   over the bridge), with the API's GET p50/p99 meanwhile.

Usage: bench/hosts.py --shoal target/release/shoal [--count 1000]
       [--heartbeat 2 --not-ready 10 --down 30]
Prints one JSON line of results (progress on stderr).
"""
import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from scale1000 import http_ok

NET = "172.31.251"
SUB = "00000000-0000-0000-0000-000000000000"
TAG = f"{os.getpid() & 0xffff:04x}"
BRIDGE = f"shbb{TAG}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True)


def subnet(i):
    """Host i's instance range: a /22 (1021 addresses), room for the scale phase."""
    return f"10.201.{4 * i}.0/22"


def remove_instance_namespaces():
    """Stopped instances keep their namespace (as a stopped VM its address); the bench's
    hosts are gone for good, so theirs go too (bind mounts named after the address)."""
    for name in os.listdir("/run/shoal/netns") if os.path.isdir("/run/shoal/netns") else []:
        if name.startswith("shoal-0ac9"):  # 10.201.x.x
            path = f"/run/shoal/netns/{name}"
            subprocess.run(["umount", "-l", path], capture_output=True)
            try:
                os.remove(path)
            except OSError:
                pass


def netns(i):
    return f"shoal-bench-{TAG}-{i}"


def link(i):
    return f"shb{TAG}{i}"


def fabric_up():
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{NET}.254/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")
    for i in (1, 2, 3):
        ip("netns", "add", netns(i))
        ip("link", "add", link(i), "type", "veth", "peer", "name", "eth0", "netns", netns(i))
        ip("link", "set", link(i), "master", BRIDGE, "up")
        ip("-n", netns(i), "addr", "add", f"{NET}.{i}/24", "dev", "eth0")
        ip("-n", netns(i), "link", "set", "eth0", "up")
        ip("-n", netns(i), "link", "set", "lo", "up")
        # The bench itself (root namespace) reaches each host's instances over the bridge.
        ip("route", "replace", subnet(i), "via", f"{NET}.{i}")


def fabric_down():
    for i in (1, 2, 3):
        ip("route", "del", subnet(i), check=False)
        ip("link", "del", link(i), check=False)
        ip("netns", "del", netns(i), check=False)
    ip("link", "del", BRIDGE, check=False)


class Api:
    def __init__(self, endpoint, data):
        self.endpoint = endpoint
        c = json.load(open(f"{data}/credentials/owner.json"))
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": c["appId"],
            "client_secret": c["password"], "scope": "https://management.azure.com/.default",
        }).encode()
        url = f"{endpoint}/{c['tenant']}/oauth2/v2.0/token"
        self.token = json.load(urllib.request.urlopen(url, form))["access_token"]

    def call(self, method, path, body=None):
        sep = "&" if "?" in path else "?"
        url = path if path.startswith("http") else f"{self.endpoint}{path}{sep}api-version=2024-11-01"
        req = urllib.request.Request(
            url, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return json.loads(text) if text else None

    def instances(self, rg, name):
        path = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/virtualMachines"
        page = self.call("GET", path)
        items = list(page["value"])
        while page.get("nextLink"):
            page = self.call("GET", page["nextLink"])
            items += page["value"]
        return items


def ask(front):
    """One request through the balancer over a new connection: the instance id or None."""
    try:
        with urllib.request.urlopen(f"http://{front}/", timeout=10) as r:
            body = r.read().decode().strip()
            return int(body.split()[1]) if body.startswith("instance ") else None
    except Exception:
        return None


def running(items, hosts):
    return sum(1 for i in items
               if i["properties"]["shoal"].get("powerState") == "running"
               and i["properties"]["shoal"].get("host") in hosts)


def failover(api, run, front):
    set_path = f"/subscriptions/{SUB}/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    lb_id = f"/subscriptions/{SUB}/resourceGroups/bench/providers/Microsoft.Network/loadBalancers/web-lb"
    api.call("PUT", lb_id, {
        "location": "local",
        "properties": {
            "frontendIPConfigurations": [{"name": "fe", "properties": {"privateIPAddress": f"{NET}.1"}}],
            "backendAddressPools": [{"name": "pool"}],
            "probes": [{"name": "probe", "properties": {"protocol": "Tcp", "port": 8080, "intervalInSeconds": 1, "numberOfProbes": 2}}],
            "loadBalancingRules": [{"name": "rule", "properties": {
                "protocol": "Tcp", "frontendPort": 8000, "backendPort": 8080,
                "frontendIPConfiguration": {"id": f"{lb_id}/frontendIPConfigurations/fe"},
                "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                "probe": {"id": f"{lb_id}/probes/probe"}}}],
        },
    })
    run("vmss", "create", "-g", "bench", "-n", "web", "--image", "apps/web:1.0.0", "--instance-count", "6",
        "--zones", "1", "2", "3", "--lb", "web-lb")
    deadline = time.time() + 120
    while time.time() < deadline:
        if len({ask(front) for _ in range(40)} - {None}) == 6:
            break
        time.sleep(0.5)
    else:
        raise SystemExit("the 6 instances never all answered through the balancer")
    seen = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            t = time.perf_counter()
            seen.append((t, ask(front)))
            time.sleep(0.02)

    th = threading.Thread(target=client)
    th.start()
    time.sleep(2)
    log("cutting host b's link")
    cut = time.perf_counter()
    ip("link", "set", link(2), "down")
    restored = None
    while time.perf_counter() - cut < 300:
        items = api.instances("bench", "web")
        if running(items, {"a", "c"}) == 6 and len({ask(front) for _ in range(40)} - {None}) == 6:
            restored = time.perf_counter() - cut
            break
        time.sleep(0.2)
    time.sleep(2)
    stop.set()
    th.join()
    failed = [t - cut for t, r in seen if r is None]
    ip("link", "set", link(2), "up")
    log(f"restored after {restored:.1f}s; {len(failed)} of {len(seen)} requests failed")
    api.call("DELETE", set_path)
    return {
        "seconds_cut_to_restored": round(restored, 2) if restored else None,
        "requests": len(seen),
        "failed_requests": len(failed),
        "failed_started_within_s_of_cut": [round(min(failed), 2), round(max(failed), 2)] if failed else None,
    }


async def scale(api, run, count):
    run("vmss", "create", "-g", "bench", "-n", "many", "--image", "apps/web:1.0.0", "--instance-count", "0",
        "--zones", "1", "2", "3", "--vm-sku", "Shoal_1vCPU_128MB")
    path = f"/subscriptions/{SUB}/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/many"
    latencies, stop = [], asyncio.Event()
    loop = asyncio.get_running_loop()

    async def measure_api():
        while not stop.is_set():
            t = time.perf_counter()
            await loop.run_in_executor(None, api.call, "GET", path)
            latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.05)

    answered, per_host = set(), {}
    t0 = time.perf_counter()
    api.call("PATCH", path, {"sku": {"capacity": count}})
    task = asyncio.create_task(measure_api())
    last = 0
    while len(answered) < count and time.perf_counter() - t0 < 600:
        items = await loop.run_in_executor(None, api.instances, "bench", "many")
        todo = [(i["instanceId"], i["properties"]["shoal"]["address"], i["properties"]["shoal"].get("host"))
                for i in items if i["instanceId"] not in answered and i["properties"]["shoal"].get("address")]
        sem = asyncio.Semaphore(200)

        async def check(iid, addr, host):
            async with sem:
                if await http_ok(addr, f"instance {iid}"):
                    answered.add(iid)
                    per_host[host] = per_host.get(host, 0) + 1

        await asyncio.gather(*(check(*t) for t in todo))
        now = time.perf_counter() - t0
        if now - last > 2:
            log(f"{now:6.1f}s {len(answered)}/{count} answering {per_host}")
            last = now
        await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    lat = sorted(latencies)
    api.call("PATCH", path, {"sku": {"capacity": 0}})
    return {
        "count": count,
        "answering": len(answered),
        "per_host": per_host,
        "seconds_until_all_answer": round(elapsed, 2),
        "api_get_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "api_get_p99_ms": round(lat[max(int(len(lat) * 0.99) - 1, 0)], 1) if lat else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--heartbeat", default="2")
    ap.add_argument("--not-ready", default="10")
    ap.add_argument("--down", default="30")
    ap.add_argument("--skip-scale", action="store_true")
    args = ap.parse_args()
    shoal = os.path.abspath(args.shoal)
    work = tempfile.mkdtemp(prefix="shoal-hosts-bench-")
    procs = []
    fabric_up()
    try:
        endpoint = f"http://{NET}.1:7070"
        env = dict(os.environ, SHOAL_LOG="warn", SHOAL_ENDPOINT=endpoint, SHOAL_DATA_DIR=f"{work}/a",
                   SHOAL_STOP_GRACE_SECONDS="2")
        room = str(args.count)  # vCPUs of room per host: the scale phase's 1-vCPU instances fit
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", netns(1), shoal, "serve", "--listen", f"{NET}.1:7070",
             "--tls-listen", f"{NET}.1:7443", "--data-dir", f"{work}/a", "--host-name", "a", "--zone", "1",
             "--fault-domain", "0", "--address", f"{NET}.1", "--instance-subnet", subnet(1),
             "--capacity-vcpus", room, "--heartbeat-interval", args.heartbeat,
             "--host-not-ready-after", args.not_ready, "--host-down-after", args.down],
            env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/a.log", "w")))
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        run = lambda *a: subprocess.run([shoal, *a], env=env, check=True, capture_output=True)
        for i, name, zone in ((2, "b", "2"), (3, "c", "3")):
            tok = json.loads(run("host", "join-token", "create").stdout)["token"]
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", netns(i), shoal, "agent", "--servers", f"https://{NET}.1:7443",
                 "--join-token", tok, "--host-name", name, "--zone", zone, "--fault-domain", "0",
                 "--address", f"{NET}.{i}", "--instance-subnet", subnet(i),
                 "--capacity-vcpus", room, "--heartbeat-interval", args.heartbeat,
                 "--data-dir", f"{work}/{name}"],
                env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/{name}.log", "w")))
        deadline = time.time() + 60
        while time.time() < deadline:
            hosts = json.loads(run("host", "list").stdout)
            if sorted(h["name"] for h in hosts if h["properties"]["state"] == "Ready") == ["a", "b", "c"]:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the three hosts never got Ready")
        run("group", "create", "--name", "bench", "--location", "local")
        run("image", "create", "-g", "bench", "--gallery", "apps", "--name", "web", "--version", "1.0.0",
            "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080")
        api = Api(endpoint, f"{work}/a")
        result = {"timeouts_s": {"heartbeat": args.heartbeat, "not_ready": args.not_ready, "down": args.down}}
        result["failover"] = failover(api, run, f"{NET}.1:8000")
        # b comes back before the scale phase, so all three hosts take instances.
        deadline = time.time() + 120
        while time.time() < deadline:
            hosts = json.loads(run("host", "list").stdout)
            if all(h["properties"]["state"] == "Ready" for h in hosts):
                break
            time.sleep(0.5)
        if not args.skip_scale:
            result["scale"] = asyncio.run(scale(api, run, args.count))
        print(json.dumps(result))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
        fabric_down()
        remove_instance_namespaces()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
