#!/usr/bin/env python3
"""The peer of bench/scale1000.py: N bare `shoal-web` processes started directly (host
network, one port each, no Shoal), and the time until all of them answer HTTP.

Usage: bench/bare1000.py --count 1000 [--web target/release/shoal-web]
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from scale1000 import http_ok  # noqa: E402


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--web", default="target/release/shoal-web")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--base-port", type=int, default=31000)
    args = ap.parse_args()
    procs = []
    prober0 = time.process_time()
    t0 = time.perf_counter()
    try:
        for i in range(args.count):
            env = {"PATH": os.environ.get("PATH", ""), "PORT": str(args.base_port + i), "SHOAL_INSTANCE_ID": str(i)}
            procs.append(subprocess.Popen([args.web], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        spawned = time.perf_counter() - t0
        answered = set()
        while len(answered) < args.count and time.perf_counter() - t0 < 120:
            sem = asyncio.Semaphore(200)

            async def check(i):
                async with sem:
                    if await http_ok(f"127.0.0.1:{args.base_port + i}", f"instance {i}"):
                        answered.add(i)

            await asyncio.gather(*(check(i) for i in range(args.count) if i not in answered))
        elapsed = time.perf_counter() - t0
        print(json.dumps({
            "count": args.count,
            "answering": len(answered),
            "seconds_to_spawn": round(spawned, 2),
            "seconds_until_all_answer": round(elapsed, 2),
            "prober_cpu_seconds": round(time.process_time() - prober0, 2),
        }))
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    asyncio.run(main())
