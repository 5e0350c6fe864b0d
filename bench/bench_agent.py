"""The whole agent's budget table (issue 6), from one command.

Runs the one-file build (dist/edgeagent.pyz or $EDGEAGENT_PYZ) the way a node runs it: `run` with
every component on, on a fixture Jetson (tests/peers/hosts.py: a real devicetree, L4T release, GPU
device nodes, tegrastats replaying real lines at 1 Hz), registered with a grpcio kubelet and
labelling its Node on the HTTPS test API server, all shipped defaults except the labels' start-up
jitter (0, so the steady window starts sooner). Then:

- start to READY=1 with a warm shiv cache and a cold one (fresh SHIV_ROOT each run);
- Allocate p50/p99: raw grpcio calls on the agent's own socket, as the kubelet makes them;
- over ``--duration`` seconds with one scrape of /metrics per second: steady RSS and peak RSS
  (VmHWM), CPU seconds per minute, scrape p50/p99, and the API requests the agent made;
- parse cost per tegrastats line (bench/bench_exporter.py's parse benchmark, warm memos);
- API requests per node per hour at the default drift check (bench/bench_labels.py's steady
  state, measured at a 1 s drift check and scaled to 600 s + jitter);
- where Debian's prometheus-node-exporter is installed: its RSS and scrape latency, and ratios.

    python bench/bench_agent.py [--duration 60] [--pyz dist/edgeagent.pyz] [--board nano]

Needs the test dependencies (grpcio, trustme, aiohttp) in the Python running it; the agent runs
on `python3` (the pyz's own #! line). Exit status 1 when a budget is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
TICKS = os.sysconf("SC_CLK_TCK")

from tests.tools import free_port, wait_until  # noqa: E402

BUDGET_RSS_MIB = 48.0
BUDGET_CPU_S_PER_MIN = 0.3
BUDGET_READY_WARM_S = 1.0
BUDGET_ALLOCATE_P99_MS = 5.0     # bench_deviceplugin.py's
BUDGET_SCRAPE_P99_MS = 10.0      # bench_exporter.py's
BUDGET_PARSE_US = 30.0           # bench_exporter.py's

CONFIG = """\
[metrics]
address = "127.0.0.1:%d"

[labels]
startup_jitter_seconds = 0
"""


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
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, not the children's


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q / 100.0 * (len(values) - 1))))]


def scrape(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as r:
        r.read()
    return (time.perf_counter() - t0) * 1000.0


class Node:
    """A fixture host with its kubelet and API server, and the agent on it."""

    def __init__(self, board: str) -> None:
        from tests.peers.hosts import PLUGIN_DIR, FixtureHost
        from tests.e2e.peers import ApiServerThread
        from tests.peers.kubelet import FakeKubelet

        self.host = FixtureHost(board)
        self.port = free_port()
        self.host.write("/etc/edgeagent/config.toml", CONFIG % self.port)
        self.api = ApiServerThread(nodes=["jetson-1"]).start()
        self.kubeconfig = self.api.write_kubeconfig("system:node:jetson-1")
        self.kubelet = FakeKubelet(self.host.path(PLUGIN_DIR)).start()
        self.metrics_url = "http://127.0.0.1:%d/metrics" % self.port

    def agent(self, shiv_root: str):
        from tests.e2e.agent import AgentProcess

        return AgentProcess(self.host.root, ["--kubeconfig", self.kubeconfig],
                            shiv_root=shiv_root, log_level="warning")

    def close(self) -> None:
        self.kubelet.stop()
        self.api.close()
        self.host.cleanup()


def time_to_ready(node: Node, shiv_root: str) -> float:
    agent = node.agent(shiv_root).start()
    try:
        return agent.wait_ready(timeout=60)
    finally:
        agent.terminate()
        agent.cleanup()


def allocate_latencies(node: Node, device: str, calls: int):
    from edgeagent.deviceplugin.plugin import socket_name
    from edgeagent.deviceplugin.proto import v1beta1 as api
    from tests.peers.kubelet import PluginClient

    client = PluginClient(os.path.join(node.kubelet.directory, socket_name("nvidia.com/gpu")))
    try:
        assert client.allocate([device]).container_responses, "no answer"
        # Time the wire and the agent, not this client: send and receive raw bytes.
        raw = client.channel.unary_unary("/v1beta1.DevicePlugin/Allocate",
                                         request_serializer=None, response_deserializer=None)
        request = bytes(api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=[device])]))
        for _ in range(50):
            raw(request, timeout=5)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            raw(request, timeout=5)
            times.append((time.perf_counter() - t0) * 1000.0)
        return times
    finally:
        client.close()


def steady_run(node: Node, shiv_root: str, duration: float, allocate_calls: int):
    agent = node.agent(shiv_root).start()
    try:
        agent.wait_ready(timeout=60)
        proc = agent.proc
        devices = node.kubelet.watch("nvidia.com/gpu", timeout=30).wait_for(
            lambda d: bool(d) and all(h == "Healthy" for _, h in d), timeout=30)
        wait_until(lambda: "edgeagent.io/owned-labels" in node.api.annotations("jetson-1"), 60,
                   "the Node's labels")

        def tegrastats_up() -> bool:
            try:
                with urllib.request.urlopen(node.metrics_url, timeout=2) as r:
                    return b"jetson_tegrastats_up 1.0" in r.read()
            except OSError:
                return False

        wait_until(tegrastats_up, 30, "tegrastats metrics")
        allocate = allocate_latencies(node, devices[0][0], allocate_calls)
        records0 = len(node.api.records())
        cpu0, t0 = cpu_seconds(proc.pid), time.time()
        latencies = []
        while time.time() - t0 < duration:
            latencies.append(scrape(node.metrics_url))
            time.sleep(max(0.0, 1.0 - (time.time() - t0) % 1.0))
        elapsed = time.time() - t0
        cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed * 60.0
        rss, hwm = proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
        requests = len(node.api.records()) - records0
        code, stop_s = agent.terminate()
        log = agent.all_logs()
        if code != 0 or "Traceback" in log:
            raise SystemExit("bench: the agent exited %s; log:\n%s" % (code, log[-3000:]))
        return {"rss": rss, "hwm": hwm, "cpu": cpu, "scrape": latencies,
                "allocate": allocate, "requests": requests, "seconds": elapsed,
                "stop": stop_s}
    finally:
        agent.cleanup()


def parse_cost():
    """µs per tegrastats line, warm memos (bench_exporter.py's figure)."""
    try:
        import bench_exporter
    except ImportError:  # the exporter's bench is not here: measure the same way, in short
        from tests.peers.hosts import fixture_tegrastats_lines
        from edgeagent.tegrastats.parser import parse_line

        lines = fixture_tegrastats_lines(("",))
        for line in lines:
            parse_line(line)
        best = min(_timed(lambda: [parse_line(x) for x in lines]) for _ in range(200))
        return best / len(lines) * 1e6, len(lines)
    result = bench_exporter.bench_parse()
    return result["warm_us"], result["lines"]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def api_requests_per_hour():
    """API requests per node per hour at the default drift check (bench_labels.py's steady
    state: 10 agents whose labels are right, drift check every second for 10 s, scaled)."""
    import bench_labels
    from edgeagent.app import DEMO_PACKAGE_DIR
    from edgeagent.config import load_config
    from edgeagent.discovery.scan import discover
    from edgeagent.hostpaths import HostRoot
    from edgeagent.labels.compute import compute_labels

    labels = compute_labels(discover(HostRoot(DEMO_PACKAGE_DIR)),
                            load_config(env={}).options.labels)
    result = asyncio.run(bench_labels.steady(labels, 10, 1.0, 10.0))
    return result["per_hour"], result["per_check"]


def node_exporter(duration: float):
    exe = shutil.which("prometheus-node-exporter")
    if not exe:
        return None
    port = free_port()
    proc = subprocess.Popen([exe, "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d/metrics" % port
    try:
        def serving() -> bool:
            try:
                scrape(url)
                return True
            except OSError:
                return False

        wait_until(serving, 20, "node-exporter")
        latencies = []
        t0 = time.time()
        while time.time() - t0 < min(duration, 20):
            latencies.append(scrape(url))
            time.sleep(1.0)
        return proc_status(proc.pid, "VmRSS"), latencies
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pyz", default=os.environ.get("EDGEAGENT_PYZ",
                                                    os.path.join(REPO, "dist", "edgeagent.pyz")))
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--ready-runs", type=int, default=5)
    ap.add_argument("--allocate-calls", type=int, default=1000)
    ap.add_argument("--board", default="nano", help="fixture board: nano or agx-xavier")
    ap.add_argument("--load", type=int, default=0,
                    help="busy processes spinning during the steady window (2: both cores)")
    args = ap.parse_args()
    if not os.path.exists(args.pyz):
        raise SystemExit("no %s: run ./build.sh first" % args.pyz)
    os.environ["EDGEAGENT_PYZ"] = os.path.abspath(args.pyz)

    rows = []
    over = []

    def row(name, value, budget="", ok=True):
        rows.append((name, value, budget))
        if not ok:
            over.append(name)

    shiv_root = tempfile.mkdtemp(prefix="bench-shiv-")
    node = Node(args.board)
    try:
        cold = []
        for _ in range(max(1, args.ready_runs // 2)):
            fresh = tempfile.mkdtemp(prefix="bench-shiv-cold-")
            cold.append(time_to_ready(node, fresh))
            shutil.rmtree(fresh, ignore_errors=True)
        time_to_ready(node, shiv_root)  # fill the warm cache
        warm = [time_to_ready(node, shiv_root) for _ in range(args.ready_runs)]
        from bench.loadgen import Busy

        with Busy(args.load):
            s = steady_run(node, shiv_root, args.duration, args.allocate_calls)
    finally:
        node.close()
        shutil.rmtree(shiv_root, ignore_errors=True)
    parse_us, parse_lines = parse_cost()
    per_hour, per_check = api_requests_per_hour()

    row("start to READY=1, warm shiv cache (median of %d)" % len(warm),
        "%.3f s" % statistics.median(warm), "< %g s" % BUDGET_READY_WARM_S,
        statistics.median(warm) < BUDGET_READY_WARM_S)
    row("start to READY=1, cold shiv cache (median of %d)" % len(cold),
        "%.3f s" % statistics.median(cold))
    row("steady RSS after %ds" % s["seconds"], "%.1f MiB" % s["rss"], "< %g MiB" % BUDGET_RSS_MIB,
        s["rss"] < BUDGET_RSS_MIB)
    row("peak RSS (VmHWM)", "%.1f MiB" % s["hwm"])
    row("CPU per minute (tegrastats 1 Hz, 1 scrape/s)", "%.3f s" % s["cpu"],
        "< %g s" % BUDGET_CPU_S_PER_MIN, s["cpu"] < BUDGET_CPU_S_PER_MIN)
    row("Allocate p50 (%d calls)" % len(s["allocate"]), "%.2f ms" % pct(s["allocate"], 50))
    row("Allocate p99", "%.2f ms" % pct(s["allocate"], 99), "< %g ms" % BUDGET_ALLOCATE_P99_MS,
        pct(s["allocate"], 99) < BUDGET_ALLOCATE_P99_MS)
    row("scrape p50 (%d scrapes)" % len(s["scrape"]), "%.2f ms" % pct(s["scrape"], 50))
    row("scrape p99", "%.2f ms" % pct(s["scrape"], 99), "< %g ms" % BUDGET_SCRAPE_P99_MS,
        pct(s["scrape"], 99) < BUDGET_SCRAPE_P99_MS)
    row("parse per tegrastats line (%d real lines)" % parse_lines, "%.1f us" % parse_us,
        "< %g us" % BUDGET_PARSE_US, parse_us < BUDGET_PARSE_US)
    row("API requests per hour, steady (600 s drift check)",
        "%.1f (%.2f per check)" % (per_hour, per_check))
    row("API requests in the %ds steady window" % s["seconds"], "%d" % s["requests"])
    row("SIGTERM to exit", "%.2f s" % s["stop"], "< 2 s", s["stop"] < 2.0)
    ne = node_exporter(args.duration)
    if ne:
        ne_rss, ne_lat = ne
        row("node-exporter RSS", "%.1f MiB (ratio %.2f)" % (ne_rss, s["rss"] / ne_rss))
        row("node-exporter scrape p50", "%.2f ms (ratio %.2f)" % (
            pct(ne_lat, 50), pct(s["scrape"], 50) / pct(ne_lat, 50)))

    import platform

    print("edgeagent on %s, Python %s (agent: %s), fixture board %s" % (
        platform.machine(), platform.python_version(),
        subprocess.run(["python3", "--version"], stdout=subprocess.PIPE,
                       universal_newlines=True).stdout.strip(), args.board))
    width = max(len(r[0]) for r in rows)
    print("| %-*s | %-24s | %s |" % (width, "measure", "value", "budget"))
    print("|%s|%s|%s|" % ("-" * (width + 2), "-" * 26, "-" * 10))
    for name, value, budget in rows:
        print("| %-*s | %-24s | %-8s |" % (width, name, value, budget))
    print("over budget: %s" % ", ".join(over) if over else "within budget")
    return 1 if over else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:  # a wait that timed out: one line, not a traceback
        sys.exit("bench: %s" % e)
