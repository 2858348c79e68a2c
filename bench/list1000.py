#!/usr/bin/env python3
"""Listing benchmark: how long `GET .../virtualMachines` (every page, as `az vmss
list-instances` reads it) takes for a set of N running instances, and the server CPU
per listing. Starts its own `shoal serve` (host ports) and stops it.

Usage: bench/list1000.py --shoal target/release/shoal --count 1000 --rounds 20
Prints one JSON line of results (and progress on stderr).
"""
import argparse
import json
import statistics
import sys
import time

import scale1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shoal", default="target/release/shoal")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--expand", action="store_true", help="list with $expand=instanceView")
    ap.add_argument("--log", default="warn", help="SHOAL_LOG of the server")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and serve.log")
    args = ap.parse_args()

    server, endpoint, data = scale1000.start_server(args.shoal, args.count, "host-ports", log=args.log)
    api = scale1000.api
    try:
        scale1000.create_web_set(args.shoal, endpoint, data, args.count)
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
    finally:
        scale1000.stop_server(server, data, args.keep)


if __name__ == "__main__":
    main()
