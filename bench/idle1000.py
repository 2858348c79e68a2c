#!/usr/bin/env python3
"""What 1000 idle instances cost the server (agent included) while nothing happens:
`shoal serve` with host ports, a set of COUNT `examples/web` instances, then the server's
CPU over 10 s once every instance runs (metrics sampling and posting, heartbeats,
health and watch traffic).

Usage: python3 bench/idle1000.py [--count 1000] [--shoal target/release/shoal]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import scale1000 as s  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    server, endpoint, data = s.start_server(args.shoal, args.count, "host-ports")
    vmss = f"/subscriptions/{s.SUB}/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    try:
        s.create_web_set(args.shoal, endpoint, data, args.count)
        deadline = time.time() + 300
        while time.time() < deadline:
            items, page = [], s.api(endpoint, "GET", f"{vmss}/virtualMachines")
            items += page["value"]
            while page.get("nextLink"):
                page = s.get_link(page["nextLink"])
                items += page["value"]
            running = sum(1 for i in items if i["properties"]["shoal"].get("powerState") == "running")
            print(f"{running}/{args.count} running", file=sys.stderr)
            if running >= args.count:
                break
            time.sleep(1)
        time.sleep(5)
        c0, t0 = s.cpu_seconds(server.pid), time.time()
        time.sleep(args.seconds)
        share = (s.cpu_seconds(server.pid) - c0) / (time.time() - t0) * 100
        print(f'{{"count": {args.count}, "idle_server_cpu_percent_of_a_core": {share:.1f}}}')
    finally:
        s.api(endpoint, "PATCH", vmss, {"sku": {"capacity": 0}})
        time.sleep(8)
        s.stop_server(server, data)


if __name__ == "__main__":
    main()
