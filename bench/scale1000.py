#!/usr/bin/env python3
"""Scale-out benchmark (issue 2): time from `PATCH capacity=N` (from 0) until all N
instances of examples/web answer HTTP, API GET latency (p50/p99) while it happens, and
the peak memory of the `shoal serve` process.

Usage: bench/scale1000.py --shoal target/release/shoal --count 1000 --network namespaces
Starts its own `shoal serve` on a free port in a temporary data directory and stops it.
Prints one JSON line of results (and progress on stderr).
"""
import argparse
import asyncio
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


SAMPLER = r"""
import http.client, json, sys, time, signal
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
host = sys.argv[1].split("//")[1]
conn = http.client.HTTPConnection(host, timeout=30)
auth = {"Authorization": "Bearer " + sys.argv[3]}
while True:
    for name, path, headers in (("set", sys.argv[2], auth), ("healthz", "/healthz", {})):
        t = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
        except Exception:
            conn = http.client.HTTPConnection(host, timeout=30)
            continue
        print(json.dumps({"path": name, "ms": (time.perf_counter() - t) * 1000}), flush=True)
        time.sleep(0.025)
"""


def get_link(url):
    """GET a nextLink (it carries its own api-version) with the bearer token."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"} if TOKEN else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


async def http_ok(addr, want):
    host, port = addr.rsplit(":", 1)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
        writer.write(f"GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
        return data.startswith(b"HTTP/1.1 200") and data.rstrip().endswith(want.encode())
    except Exception:
        return False


def cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (its threads, not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def start_server(shoal, count, network, log="warn", serve_args=()):
    """`shoal serve` on a free port in a fresh data directory, with room for COUNT
    1-vCPU, 128 MB instances (the defaults are 16x the cores and 4x the memory); returns
    (process, endpoint, data directory) once it answers, TOKEN set to the owner's token."""
    global TOKEN
    data = tempfile.mkdtemp(prefix="shoal-bench-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [shoal, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{data}/d",
         "--network", network, "--stop-grace-seconds", "2",
         "--capacity-vcpus", str(max(count, 32)),
         "--capacity-memory-mb", str(max(count, 32) * 128), *serve_args],
        env=server_env(endpoint, data, log), stdout=subprocess.DEVNULL,
        stderr=open(f"{data}/serve.log", "w"),
    )
    for _ in range(200):
        try:
            api(endpoint, "GET", "/healthz")
            break
        except Exception:
            time.sleep(0.05)
    TOKEN = token(f"{data}/d", port)
    return server, endpoint, data


def server_env(endpoint, data, log="warn"):
    return dict(os.environ, SHOAL_LOG=log, SHOAL_ENDPOINT=endpoint, SHOAL_DATA_DIR=f"{data}/d")


def create_web_set(shoal, endpoint, data, count):
    """Group `bench`, image apps/web:1.0.0 (examples/web) and set `web` of COUNT."""
    env = server_env(endpoint, data)
    run = lambda *a: subprocess.run([shoal, *a], env=env, check=True, stdout=subprocess.DEVNULL)
    run("group", "create", "--name", "bench", "--location", "local")
    run("image", "create", "-g", "bench", "--gallery", "apps", "--name", "web", "--version", "1.0.0",
        "--dir", "examples/web", "--command", "./shoal-web", "--port", "8080")
    run("vmss", "create", "-g", "bench", "-n", "web", "--image", "apps/web:1.0.0", "--instance-count",
        str(count), "--vm-sku", "Shoal_1vCPU_128MB")


def stop_server(server, data, keep=False):
    server.terminate()
    try:
        server.wait(120)
    except subprocess.TimeoutExpired:
        server.kill()
    remove_cgroup_parent(f"{data}/d/agent/instances")
    if keep:
        print(f"kept {data} (serve.log)", file=sys.stderr)
    else:
        shutil.rmtree(data, ignore_errors=True)


def remove_cgroup_parent(instances):
    """Removes the (by now empty) cgroups the stopped server's instances lived under: the
    agent keeps its parent for the next start of the same data directory, but a
    benchmark's data directory is gone, and every cgroup left behind is one more the
    kernel walks on each instance's CPU quota write in later runs."""
    try:
        parent = open(f"{instances}/.cgroup-parent").read().strip()
    except OSError:
        return
    if not parent or "/" in parent or parent.startswith("."):
        return
    for hierarchy in ("cpu", "cpuacct", "memory", "pids", "unified", ""):
        top = os.path.join("/sys/fs/cgroup", hierarchy, parent)
        for root, dirs, _ in os.walk(top, topdown=False):
            for d in dirs:
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass
        try:
            os.rmdir(top)
        except OSError:
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--network", default="auto", choices=["auto", "namespaces", "host-ports"])
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--log", default="warn", help="SHOAL_LOG of the server (its log is kept with --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and serve.log")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="one more argument for `shoal serve` (repeat it)")
    ap.add_argument("--warm-namespaces", type=int, default=0,
                    help="the agent keeps this many namespaces ready; the clock starts once they are")
    ap.add_argument("--tail-list-every", type=float, default=0.05,
                    help="seconds between listings once 90 %% of the instances have an address")
    args = ap.parse_args()

    serve_args, log = list(args.serve_arg), args.log
    if args.warm_namespaces:
        serve_args += ["--warm-namespaces", str(args.warm_namespaces)]
        log += ",shoal_agent::driver::process::warm=info"
    t_start = time.perf_counter()
    server, endpoint, data = start_server(args.shoal, args.count, args.network, log, serve_args)
    warm_fill = None
    try:
        create_web_set(args.shoal, endpoint, data, 0)
        if args.warm_namespaces:
            deadline = time.perf_counter() + 120
            while "Warm network namespaces ready" not in open(f"{data}/serve.log").read():
                if time.perf_counter() > deadline:
                    raise SystemExit("the warm namespace pool did not fill in 120 s (see serve.log)")
                time.sleep(0.05)
            warm_fill = round(time.perf_counter() - t_start, 2)
            print(f"{args.warm_namespaces} warm namespaces ready {warm_fill} s after the server started",
                  file=sys.stderr)
        vmss = f"/subscriptions/{SUB}/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/web"

        # API latency is sampled by a process of its own (this one is busy probing the
        # instances, and its GIL would add its own delays to what is measured): one
        # keep-alive connection, a GET of the set every 50 ms, and of /healthz (no store
        # read, no authentication) between, to tell queueing from work.
        sampler = subprocess.Popen(
            [sys.executable, "-c", SAMPLER, endpoint, vmss + "?api-version=2024-07-01", TOKEN],
            stdout=open(f"{data}/api-samples.jsonl", "w"))
        answered = set()
        cpu0 = cpu_seconds(server.pid)
        # The prober's own CPU (this process): it shares the two cores with what it measures.
        prober0 = time.process_time()
        t0 = time.perf_counter()
        api(endpoint, "PATCH", vmss, {"sku": {"capacity": args.count}})
        # Wall-clock time of the answer, to line up with the server's log (--keep).
        print(f"PATCH answered after {time.perf_counter() - t0:.3f} s, at "
              f"{time.strftime('%H:%M:%S', time.gmtime())}.{int(time.time() * 1000) % 1000:03d} UTC "
              f"(CLOCK_MONOTONIC {time.clock_gettime(time.CLOCK_MONOTONIC) - (time.perf_counter() - t0):.3f}, "
              f"for `perf record -k CLOCK_MONOTONIC` and `perf report --time`)", file=sys.stderr)
        last_print = 0
        loop = asyncio.get_running_loop()
        # Addresses come from the API; once every instance has one, the probe goes on
        # without listing, as tightly as bench/bare1000.py probes its peer (a fixed pause
        # between rounds would add up to a round's length to the figure).
        addresses = {}
        nonlocal_probes = [0]
        rounds = 0
        last_list = -1.0
        while len(answered) < args.count and time.perf_counter() - t0 < args.timeout:
            now = time.perf_counter() - t0
            # Listing a thousand instances is work for the server too: at most four
            # times a second, and only until every instance has its address; once 90 %
            # have one, every 50 ms, so the last addresses are not found up to 250 ms
            # late (the bare peer's prober knows its addresses from the start).
            pause = 0.25 if len(addresses) < 0.9 * args.count else args.tail_list_every
            if len(addresses) < args.count and now - last_list >= pause:
                last_list = now
                items, path = [], f"{vmss}/virtualMachines"
                page = await loop.run_in_executor(None, api, endpoint, "GET", path)
                items += page["value"]
                while page.get("nextLink"):
                    link = page["nextLink"].replace(endpoint, "")
                    page = await loop.run_in_executor(None, get_link, endpoint + link)
                    items += page["value"]
                for i in items:
                    if i["properties"]["shoal"]["address"]:
                        addresses[i["instanceId"]] = i["properties"]["shoal"]["address"]
                if os.environ.get("BENCH_TRACE"):
                    print(f"listing at {now:.3f}-{time.perf_counter() - t0:.3f}: {len(items)} instances, "
                          f"{len(addresses)} addresses, {len(answered)} answered", file=sys.stderr)
            todo = [(iid, addr) for iid, addr in addresses.items() if iid not in answered]
            sem = asyncio.Semaphore(200)

            async def check(iid, addr):
                nonlocal_probes[0] += 1
                async with sem:
                    if await http_ok(addr, f"instance {iid}"):
                        answered.add(iid)

            await asyncio.gather(*(check(i, a) for i, a in todo))
            rounds += 1
            now = time.perf_counter() - t0
            if now - last_print > 1:
                print(f"{now:6.1f}s {len(answered)}/{args.count} answering", file=sys.stderr)
                last_print = now
            if not todo:
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        print(f"all answering at CLOCK_MONOTONIC {time.clock_gettime(time.CLOCK_MONOTONIC):.3f}", file=sys.stderr)
        # CPU the server spent on the scale-out: less sensitive than the elapsed time to
        # whatever else shares the cores.
        server_cpu = cpu_seconds(server.pid) - cpu0
        prober_cpu = time.process_time() - prober0
        sampler.terminate()
        sampler.wait()
        samples = [json.loads(ln) for ln in open(f"{data}/api-samples.jsonl") if ln.startswith("{")]
        lat = sorted(x["ms"] for x in samples if x["path"] == "set")
        health = sorted(x["ms"] for x in samples if x["path"] == "healthz")
        result = {
            "count": args.count,
            "network": args.network,
            "warm_namespaces": args.warm_namespaces,
            "warm_fill_seconds": warm_fill,
            "answering": len(answered),
            "seconds_until_all_answer": round(elapsed, 2),
            "api_get_p50_ms": round(statistics.median(lat), 1) if lat else None,
            "api_get_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1) if lat else None,
            "api_get_samples": len(lat),
            "healthz_p50_ms": round(statistics.median(health), 1) if health else None,
            "healthz_p99_ms": round(health[int(len(health) * 0.99) - 1], 1) if health else None,
            "server_cpu_seconds": round(server_cpu, 2),
            "prober_cpu_seconds": round(prober_cpu, 2),
            "probes": nonlocal_probes[0], "rounds": rounds,
            "server_peak_rss_mb": round(rss_kb(server.pid) / 1024, 1),
        }
        print(json.dumps(result))
        # Scale back to 0 so the stop is quick.
        api(endpoint, "PATCH", vmss, {"sku": {"capacity": 0}})
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < 120:
            if not api(endpoint, "GET", f"{vmss}/virtualMachines")["value"]:
                break
            time.sleep(0.5)
        # The records go first; wait until the agent has removed the instances too (their
        # namespaces and veths), or the next run starts beside a thousand leftovers.
        instances = f"{data}/d/agent/instances"
        while time.perf_counter() - t1 < 120:
            left = [n for n in os.listdir(instances) if not n.startswith(".")] if os.path.isdir(instances) else []
            if not left:
                break
            time.sleep(0.2)
    finally:
        stop_server(server, data, args.keep)


if __name__ == "__main__":
    asyncio.run(main())
