"""Whole-agent figures (issue 6): RSS, CPU per minute, time to READY=1, scrape latency.

Runs the one-file build (dist/edgeagent.pyz or $EDGEAGENT_PYZ) as `run --demo`: every component
on, tegrastats replayed at 1 Hz, one scrape of /metrics per second. Prints a table.

    python bench/bench_agent.py [--duration 60] [--pyz dist/edgeagent.pyz]

Where Debian's prometheus-node-exporter is installed it is measured in the same run (RSS and
scrape latency) and the ratios printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, key: str) -> float:
    """A /proc/<pid>/status field in MiB (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q / 100.0 * (len(values) - 1))))]


def start_agent(pyz: str, port: int, shiv_root: str, notify_path: str):
    env = dict(os.environ, SHIV_ROOT=shiv_root, NOTIFY_SOCKET=notify_path)
    cmd = [sys.executable, pyz, "run", "--demo", "--metrics-address", "127.0.0.1:%d" % port,
           "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def time_to_ready(pyz: str, shiv_root: str, timeout: float = 30.0) -> float:
    """Seconds from spawn to READY=1 on a real notify socket; the agent is stopped after."""
    d = tempfile.mkdtemp()
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(timeout)
    t0 = time.perf_counter()
    proc = start_agent(pyz, free_port(), shiv_root, path)
    try:
        while True:
            data = sock.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                return time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


def scrape(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as r:
        r.read()
    return (time.perf_counter() - t0) * 1000.0


def steady_run(pyz: str, shiv_root: str, duration: float):
    port = free_port()
    d = tempfile.mkdtemp()
    proc = start_agent(pyz, port, shiv_root, os.path.join(d, "none"))
    url = "http://127.0.0.1:%d/metrics" % port
    deadline = time.time() + 30
    while True:
        try:
            body = urllib.request.urlopen(url, timeout=2).read().decode()
            if "jetson_ram_used_bytes" in body:
                break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("agent did not serve tegrastats metrics: %s"
                             % proc.stderr.read().decode()[-2000:])
        time.sleep(0.2)
    cpu0, t0 = cpu_seconds(proc.pid), time.time()
    latencies = []
    while time.time() - t0 < duration:
        latencies.append(scrape(url))
        time.sleep(max(0.0, 1.0 - (time.time() - t0) % 1.0))
    cpu = (cpu_seconds(proc.pid) - cpu0) / (time.time() - t0) * 60.0
    rss, hwm = proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)
    return rss, hwm, cpu, latencies


def node_exporter(duration: float):
    exe = shutil.which("prometheus-node-exporter")
    if not exe:
        return None
    port = free_port()
    proc = subprocess.Popen([exe, "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d/metrics" % port
    time.sleep(1.0)
    latencies = []
    t0 = time.time()
    while time.time() - t0 < min(duration, 20):
        latencies.append(scrape(url))
        time.sleep(1.0)
    rss = proc_status(proc.pid, "VmRSS")
    proc.terminate()
    proc.wait(10)
    return rss, latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pyz", default=os.environ.get("EDGEAGENT_PYZ",
                                                    os.path.join(REPO, "dist", "edgeagent.pyz")))
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--ready-runs", type=int, default=5)
    args = ap.parse_args()
    if not os.path.exists(args.pyz):
        raise SystemExit("no %s: run ./build.sh first" % args.pyz)
    shiv_root = tempfile.mkdtemp(prefix="bench-shiv-")
    rows = []
    cold = []
    for _ in range(max(1, args.ready_runs // 2)):
        fresh = tempfile.mkdtemp(prefix="bench-shiv-cold-")
        cold.append(time_to_ready(args.pyz, fresh))
        shutil.rmtree(fresh, ignore_errors=True)
    time_to_ready(args.pyz, shiv_root)  # fill the warm cache
    warm = [time_to_ready(args.pyz, shiv_root) for _ in range(args.ready_runs)]
    rss, hwm, cpu, lat = steady_run(args.pyz, shiv_root, args.duration)
    rows += [
        ("start to READY=1, warm shiv cache (median)", "%.3f s" % statistics.median(warm), "< 1 s"),
        ("start to READY=1, cold shiv cache (median)", "%.3f s" % statistics.median(cold), ""),
        ("steady RSS after %ds" % args.duration, "%.1f MiB" % rss, "< 48 MiB"),
        ("peak RSS (VmHWM)", "%.1f MiB" % hwm, ""),
        ("CPU per minute (tegrastats 1 Hz, 1 scrape/s)", "%.3f s" % cpu, "< 0.3 s"),
        ("scrape latency p50", "%.2f ms" % pct(lat, 50), ""),
        ("scrape latency p99", "%.2f ms" % pct(lat, 99), "< 10 ms"),
    ]
    ne = node_exporter(args.duration)
    if ne:
        ne_rss, ne_lat = ne
        rows += [
            ("node-exporter RSS", "%.1f MiB (ratio %.2f)" % (ne_rss, rss / ne_rss), ""),
            ("node-exporter scrape p50", "%.2f ms (ratio %.2f)" % (
                pct(ne_lat, 50), pct(lat, 50) / pct(ne_lat, 50)), ""),
        ]
    shutil.rmtree(shiv_root, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print("%-*s  %-24s %s" % (width, "measure", "value", "budget"))
    for name, value, budget in rows:
        print("%-*s  %-24s %s" % (width, name, value, budget))


if __name__ == "__main__":
    main()
