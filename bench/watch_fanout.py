#!/usr/bin/env python3
"""Watch fan-out (issue 13): runs the `watch_fanout` example (one server core; three
agent-like and two balancer-like followers watching over HTTP; a set of N instances
created) on the in-memory store and on a one- and a three-member etcd on this machine,
R times each. See crates/shoal/examples/watch_fanout.rs for what is measured.

Usage: cd bench && python3 watch_fanout.py --example ../target/release/examples/watch_fanout [--runs 3] [--instances 1000]
Build first: cargo build -p shoal --release --example watch_fanout
Prints the example's JSON line per run (progress on stderr).
"""
import argparse
import shutil
import subprocess
import sys
import tempfile

from store_writes import start_etcd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--example", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--instances", type=int, default=1000)
    a = p.parse_args()
    for members in (0, 1, 3):
        for run in range(a.runs):
            work = tempfile.mkdtemp(prefix="shoal-fanout-")
            procs = []
            try:
                args = [a.example, str(a.instances)]
                if members:
                    procs, endpoints = start_etcd(work, members)
                    args.append("etcd://" + ",".join(endpoints))
                print(f"run {run + 1}, {members or 'no'} etcd member(s)", file=sys.stderr)
                out = subprocess.run(args, capture_output=True, text=True, timeout=600)
                print(out.stdout.strip() or out.stderr.strip()[-500:], flush=True)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait()
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
