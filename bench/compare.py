#!/usr/bin/env python3
"""Issue 14's comparisons, side by side in one run, written as one table.

    python3 bench/compare.py                  # 3 alternating rounds, 10 s per load run
    python3 bench/compare.py --runs 5 --duration 15s
    python3 bench/compare.py --skip-spawn     # only the balancer comparisons
    SHOAL_LB_KERNEL_FORWARDING=off python3 bench/compare.py --skip-spawn  # L4 copied in user space
    python3 bench/compare.py --skip-lb        # only the 1000-instance comparisons
    python3 bench/compare.py --lb-netns host  # the balancers in this network namespace

What it runs (the peers are started by this script; HAProxy, wrk and openssl are
installed with apt-get when missing):

- Balancer, against HAProxy with as many threads as Shoal has workers (1 and 1; the plain
  L7 case also 2 and 2), the same
  three `shoal-web` backends, the same wrk load (-t2 -c50), HTTP probes on both:
  L7 HTTP/1.1 keep-alive; L4 TCP keep-alive; L4 with a new connection per request;
  L7 over TLS (same certificate) keep-alive; TLS handshakes (a new TLS connection per
  request). Each round runs every pair, HAProxy and Shoal in alternating order. As root,
  the balancers, backends and wrk run in a network namespace of their own (`--lb-netns
  own`, the default), so a firewall on the host weighs on neither: any nat table there
  (Docker's, or the one Shoal's namespaced instances leave for their way out) makes the
  kernel track every loopback connection, a cost per packet (~1 µs per request per proxy
  here) added to both that hides differences between the proxies.
- Spawning: 0 -> 1000 instances answering with host ports and with a network namespace
  each (`bench/scale1000.py`, which also samples API GET latency meanwhile), against 1000
  bare `shoal-web` processes (`bench/bare1000.py`); namespaces twice: made as instances
  start (the default), and taken from a warm pool of 1000 (`--warm-namespaces 1000`,
  filled before the clock starts).

Medians over the rounds go to bench/last-comparison.md (and stdout), each figure with its
goal and whether it was met. Progress goes to stderr.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BASE = 19400
FRONT = BASE + 50


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_tools():
    missing = [t for t in ("haproxy", "wrk", "openssl") if not shutil.which(t)]
    if not missing:
        return
    pkgs = {"haproxy": "haproxy", "wrk": "wrk", "openssl": "openssl"}
    log(f"installing {', '.join(missing)} with apt-get")
    cmd = ["apt-get", "install", "-y", "-qq", *[pkgs[m] for m in missing]]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def build():
    log("building release binaries (shoal, shoal-web, lb-bench)")
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "shoal", "-p", "shoal-web"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "shoal-lb", "--example", "lb-bench"], cwd=ROOT, check=True)


def wait_port(port, timeout=10):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def to_ms(text):
    """wrk's latency ('812.00us', '1.62ms', '1.01s') in ms."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")


def cpu_ticks(pid):
    """User + system clock ticks of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks():
    """Busy clock ticks of the whole machine so far (all but idle and iowait): wrk, the
    backends, the proxy and the kernel's workers (which do L4 kernel forwarding)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def wrk(url, duration, conns, extra=(), proxy_pid=None):
    """One wrk load run; with `proxy_pid`, also the CPU it and the machine spent per
    request (µs): a figure that depends much less than req/s on what else the shared
    cores are doing."""
    hz = os.sysconf("SC_CLK_TCK")
    p0, m0 = (cpu_ticks(proxy_pid) if proxy_pid else 0), machine_ticks()
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{duration}", "--latency", *extra, url],
                         capture_output=True, text=True).stdout
    p1, m1 = (cpu_ticks(proxy_pid) if proxy_pid else 0), machine_ticks()
    rps, p99, errors, requests = 0.0, float("nan"), "", 0
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(parts[1])
        elif len(parts) > 2 and parts[1:3] == ["requests", "in"]:
            requests = int(parts[0])
        elif parts[:1] == ["99%"]:
            p99 = to_ms(parts[1])
        elif "Socket errors" in line or "Non-2xx" in line:
            errors += line.strip() + "; "
    per = lambda ticks: ticks / hz * 1e6 / requests if requests else float("nan")
    return {"rps": rps, "p99": p99, "errors": errors, "proxy_us": per(p1 - p0), "machine_us": per(m1 - m0)}


class Proxies:
    """Starts HAProxy or Shoal's lb-bench on FRONT in one of the compared modes."""

    def __init__(self, work, backends):
        self.work, self.backends, self.proc = work, backends, None
        pem = os.path.join(work, "both.pem")
        self.cert, self.key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=bench.local", "-days", "2", "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True)
        with open(pem, "w") as f:
            f.write(open(self.cert).read() + open(self.key).read())
        self.pem = pem

    def haproxy(self, mode, threads):
        tls = mode == "https"
        cfg = ["global", "    maxconn 4000", f"    nbthread {threads}", "defaults",
               f"    mode {'tcp' if mode == 'tcp' else 'http'}", "    timeout connect 5s",
               "    timeout client 60s", "    timeout server 60s"]
        if mode != "tcp":
            cfg.append("    option http-keep-alive")
        bind = f"    bind 127.0.0.1:{FRONT}" + (f" ssl crt {self.pem} alpn http/1.1" if tls else "")
        cfg += ["frontend fe", bind, "    default_backend be", "backend be", "    balance roundrobin",
                "    option httpchk GET /health"]
        cfg += [f"    server s{p} 127.0.0.1:{p} check inter 1s" for p in self.backends]
        path = os.path.join(self.work, "haproxy.cfg")
        with open(path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def shoal(self, mode, threads):
        cmd = [os.path.join(ROOT, "target/release/examples/lb-bench"), "--mode", mode, "--threads", str(threads),
               "--listen", f"127.0.0.1:{FRONT}"]
        if mode == "https":
            cmd += ["--cert", self.cert, "--key", self.key]
        cmd += [f"127.0.0.1:{p}" for p in self.backends]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, who, mode, threads):
        (self.haproxy if who == "HAProxy" else self.shoal)(mode, threads)
        wait_port(FRONT)
        time.sleep(1.2)  # first health checks

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None
            time.sleep(0.3)


# (key, description, proxy mode, scheme, extra wrk args, threads on each side)
LB_CASES = [
    ("l7", "L7 HTTP/1.1 req/s, keep-alive", "http", "http", (), 1),
    ("l4", "L4 TCP req/s, keep-alive", "tcp", "http", (), 1),
    ("l4_new", "L4 TCP req/s, new connection per request", "tcp", "http", ("-H", "Connection: close"), 1),
    ("tls", "L7 HTTPS req/s, keep-alive", "https", "https", (), 1),
    ("tls_hs", "TLS handshakes/s (new TLS connection per request)", "https", "https", ("-H", "Connection: close"), 1),
    ("l7_2", "L7 HTTP/1.1 req/s, keep-alive", "http", "http", (), 2),
]


def run_lb(args, work):
    web = os.path.join(ROOT, "target/release/shoal-web")
    backends = [BASE + i for i in (1, 2, 3)]
    procs = [subprocess.Popen([web], env={"PORT": str(p), "SHOAL_INSTANCE_ID": str(i)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, p in enumerate(backends)]
    for p in backends:
        wait_port(p)
    proxies = Proxies(work, backends)
    results = {(key, who): [] for key, *_ in LB_CASES for who in ("HAProxy", "Shoal")}
    try:
        for r in range(args.runs):
            order = ("HAProxy", "Shoal") if r % 2 == 0 else ("Shoal", "HAProxy")
            for key, desc, mode, scheme, extra, threads in LB_CASES:
                for who in order:
                    proxies.start(who, mode, threads)
                    res = wrk(f"{scheme}://127.0.0.1:{FRONT}/", args.duration, args.conns, extra, proxies.proc.pid)
                    proxies.stop()
                    results[(key, who)].append(res)
                    log(f"round {r + 1}/{args.runs} {desc}: {who} {res['rps']:.0f} req/s, p99 {res['p99']:.2f} ms, "
                        f"CPU per request: proxy {res['proxy_us']:.1f} µs, machine {res['machine_us']:.1f} µs {res['errors']}")
    finally:
        proxies.stop()
        for p in procs:
            p.kill()
    return results


# (name in the table, --network, extra scale1000.py arguments)
SPAWN_CASES = [
    ("host-ports", "host-ports", []),
    ("namespaces", "namespaces", []),
    ("namespaces, warm pool", "namespaces", ["--warm-namespaces", "COUNT"]),
]


def run_lb_in_netns(args):
    """`run_lb` in a network namespace of its own (this script again, inside it)."""
    name = f"shoal-compare-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    out = tempfile.NamedTemporaryFile(prefix="shoal-compare-lb-", suffix=".json", delete=False).name
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        log(f"balancer comparisons in the network namespace {name}")
        cmd = ["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__), "--lb-json", out,
               "--runs", str(args.runs), "--duration", args.duration, "--conns", str(args.conns), "--no-build"]
        subprocess.run(cmd, check=True)
        with open(out) as f:
            return {(key, who): runs for key, who, runs in json.load(f)}
    finally:
        subprocess.run(["ip", "netns", "del", name])
        os.unlink(out)


def run_spawn(args):
    out = {name: [] for name, _, _ in SPAWN_CASES}
    out["bare"] = []
    cases = [c for c in SPAWN_CASES if c[1] == "host-ports" or os.geteuid() == 0]
    for r in range(args.runs):
        log(f"round {r + 1}/{args.runs}: {args.count} bare shoal-web processes")
        res = subprocess.run([sys.executable, "bench/bare1000.py", "--count", str(args.count)], cwd=ROOT,
                             capture_output=True, text=True)
        out["bare"].append(json.loads(res.stdout.strip().splitlines()[-1]))
        for name, net, extra in cases:
            log(f"round {r + 1}/{args.runs}: 0 -> {args.count} instances, {name}")
            extra = [str(args.count) if a == "COUNT" else a for a in extra]
            res = subprocess.run([sys.executable, "bench/scale1000.py", "--count", str(args.count), "--network", net,
                                  *extra], cwd=ROOT, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if not line:
                raise SystemExit(f"scale1000.py failed:\n{res.stderr[-2000:]}")
            out[name].append(json.loads(line[-1]))
            log(f"  {out[name][-1]}")
    return out


def med(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def table(args, lb, spawn):
    rows = ["| figure | Shoal | peer | Shoal / peer | goal | met |", "|---|---|---|---|---|---|"]
    if lb:
        for key, desc, _mode, _scheme, _extra, threads in LB_CASES:
            s, h = lb[(key, "Shoal")], lb[(key, "HAProxy")]
            srps, hrps = med([x["rps"] for x in s]), med([x["rps"] for x in h])
            sp99, hp99 = med([x["p99"] for x in s]), med([x["p99"] for x in h])
            scpu, hcpu = (f"; CPU/req: proxy {med([x['proxy_us'] for x in r]):.1f} µs, machine "
                          f"{med([x['machine_us'] for x in r]):.1f} µs" for r in (s, h))
            ratio = srps / hrps if hrps else float("nan")
            met = "yes" if ratio >= 1.2 and sp99 <= hp99 else "no"
            goal = "≥ 1.2×, p99 ≤ HAProxy's" if key in ("l7", "l4", "tls") else "measured (no goal set)"
            if goal.startswith("measured"):
                met = "—"
            workers = "1 worker" if threads == 1 else f"{threads} workers"
            rows.append(f"| {desc}, {workers} vs nbthread {threads} | {srps:,.0f} (p99 {sp99:.2f} ms{scpu}) | HAProxy "
                        f"{hrps:,.0f} (p99 {hp99:.2f} ms{hcpu}) | {ratio:.2f}× | {goal} | {met} |")
    if spawn:
        bare = med([x["seconds_until_all_answer"] for x in spawn["bare"]])
        for name, net, _ in SPAWN_CASES:
            goal = 2.0 if net == "host-ports" else 3.0
            if not spawn.get(name):
                rows.append(f"| 0 → {args.count} answering, {name} | not run (needs root) | | | ≤ {goal:g} s | — |")
                continue
            s = med([x["seconds_until_all_answer"] for x in spawn[name]])
            runs = ", ".join(f"{x['seconds_until_all_answer']:.2f}" for x in spawn[name])
            fill = [x["warm_fill_seconds"] for x in spawn[name] if x.get("warm_fill_seconds")]
            note = f"; pool filled {med(fill):.2f} s after start" if fill else ""
            rows.append(f"| 0 → {args.count} instances answering, {name} | {s:.2f} s ({runs}{note}) | {args.count} bare "
                        f"processes {bare:.2f} s | {s / bare:.1f}× | ≤ {goal:g} s | {'yes' if s <= goal else 'no'} |")
        p99s = [x["api_get_p99_ms"] for name, _, _ in SPAWN_CASES for x in spawn.get(name, [])]
        p50s = [x["api_get_p50_ms"] for name, _, _ in SPAWN_CASES for x in spawn.get(name, [])]
        p99 = med(p99s)
        rows.append(f"| API GET during those scale-outs (p50 / p99) | {med(p50s):.1f} / {p99:.1f} ms | — | | "
                    f"p99 ≤ 50 ms | {'yes' if p99 <= 50 else 'no'} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", default="10s", help="wrk duration per load run")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--skip-lb", action="store_true")
    ap.add_argument("--skip-spawn", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/last-comparison.md"))
    ap.add_argument("--lb-netns", choices=("own", "host"), default="own" if os.geteuid() == 0 else "host",
                    help="run the balancer comparisons in a network namespace of their own (default as root)")
    ap.add_argument("--lb-json", help=argparse.SUPPRESS)  # inside that namespace: results to this file
    args = ap.parse_args()
    ensure_tools()
    if not args.no_build:
        build()
    load_before = open("/proc/loadavg").read().split()[:3]
    work = tempfile.mkdtemp(prefix="shoal-compare-")
    try:
        if args.lb_json:
            lb = run_lb(args, work)
            with open(args.lb_json, "w") as f:
                json.dump([[key, who, runs] for (key, who), runs in lb.items()], f)
            return
        if args.skip_lb:
            lb = None
        elif args.lb_netns == "own":
            lb = run_lb_in_netns(args)
        else:
            lb = run_lb(args, work)
        spawn = None if args.skip_spawn else run_spawn(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    head = [
        f"Run {time.strftime('%Y-%m-%d %H:%M')} UTC: `python3 bench/compare.py --runs {args.runs} --duration {args.duration}"
        + (" --skip-lb" if args.skip_lb else "") + (" --skip-spawn" if args.skip_spawn else "")
        + (" --lb-netns host" if args.lb_netns == "host" else "") + "`",
        f"Machine: {os.cpu_count()} cores ({cpu}), {os.uname().release}; load average before: {' '.join(load_before)}",
        f"HAProxy: {subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.splitlines()[0]}",
        f"Load: wrk -t2 -c{args.conns} -d{args.duration}; 3 × shoal-web backends; medians of {args.runs} alternating rounds.",
        "Shoal's L4 kernel forwarding: " + ("off (SHOAL_LB_KERNEL_FORWARDING=off)"
                                            if os.environ.get("SHOAL_LB_KERNEL_FORWARDING") in ("off", "0")
                                            else "on (the default, where the balancer may load eBPF)"),
        "Balancers, backends and wrk: " + ("in a network namespace of their own (no firewall rules, no connection "
                                            "tracking)" if args.lb_netns == "own" else "in the host's network namespace"),
        "CPU/req: CPU time per request of the proxy process (its threads) and of the whole machine (wrk, backends,",
        "proxy, kernel workers: L4 kernel forwarding runs in the kernel's workers, not in the proxy process).",
        "",
    ]
    text = "\n".join(head + table(args, lb, spawn)) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
