"""The agent's memory beside node_exporter's, in one run (issue 15: steady RSS at most 2.0x).

1. Debian's ``prometheus-node-exporter`` on a loopback port with its default collectors, scraped
   once a second for ``--seconds``; then its VmRSS (/proc/PID/status) and PSS (smaps_rollup).
2. The one-file build (dist/edgeagent.pyz or $EDGEAGENT_PYZ) running ``run`` the way systemd runs
   it (with the unit's Environment= lines, e.g. MALLOC_ARENA_MAX) on a fixture Jetson Nano
   (tests/peers/hosts.py: real devicetree, GPU device nodes, tegrastats replaying real lines at
   1 Hz), registered with the grpcio kubelet (tests/peers/kubelet.py) and labelling its Node on
   the HTTPS test API server (tests/peers/kubeapi.py), so every component does its real work;
   /metrics scraped once a second for ``--seconds``; then the same figures.
3. The same agent with one component alone (``--disable`` the others), and with none
   (discovery only), so the table shows where the memory goes.

Only the agent's own process is measured (not its tegrastats child: on a Jetson that is NVIDIA's
binary, here a Python replay). Each agent starts on a warm shiv cache, as after `install`.

    python bench/bench_footprint.py [--seconds 60] [--pyz dist/edgeagent.pyz] [--no-unit-env]
                                    [--only all,none,...] [--imports]

``--imports`` adds where the memory of imports goes: one fresh interpreter (the pyz's unpacked
site-packages on its path) imports what `run` imports, step by step in the agent's order, and
the table shows the VmRSS and modules each step adds.
Exit status 1 when the agent is over 2.0x node_exporter's RSS, 2 when a peer is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests.tools import free_port, wait_until  # noqa: E402

GOAL_RATIO = 2.0
NODE_EXPORTER = "prometheus-node-exporter"
UNIT = os.path.join(REPO, "edgeagent", "systemd", "edgeagent.service")
COMPONENTS = ("device-plugin", "labels", "metrics")
# name -> components disabled
RUNS: Dict[str, Tuple[str, ...]] = {
    "all": (),
    "device-plugin": ("labels", "metrics"),
    "labels": ("device-plugin", "metrics"),
    "metrics": ("device-plugin", "labels"),
    "none": COMPONENTS,
}
CONFIG = """\
[metrics]
address = "127.0.0.1:%d"

[labels]
startup_jitter_seconds = 0
"""
# The agent's imports in the order `run` with every component loads them, one fresh interpreter
# importing step after step: what each step adds on top of the ones before.
IMPORT_STEPS = (
    # packaging/pyz_main.py: a warm start no longer runs shiv's _bootstrap (compileall, hashlib
    # = OpenSSL's libcrypto, zipfile, json, shutil, subprocess: 7.8 MiB and 68 modules here)
    ("the pyz's own __main__.py (warm shiv cache)", "os,site", ""),
    ("CLI, config, logging", "edgeagent.cli,edgeagent.agent_command,edgeagent.config,"
     "edgeagent.logs", ""),
    ("asyncio, ssl (OpenSSL)", "asyncio,ssl", ""),
    ("app and discovery", "edgeagent.app,edgeagent.discovery.scan,edgeagent.daemonexecutor", ""),
    ("prometheus_client (the registry)", "prometheus_client", ""),
    ("tegrastats runner and collectors", "edgeagent.metrics.component,"
     "edgeagent.metrics.collector,edgeagent.tegrastats.runner", ""),
    ("aiohttp (client and server) and the metrics server",
     "aiohttp.web_server,aiohttp.web_response,edgeagent.metrics.server",
     "from edgeagent.lightaiohttp import import_aiohttp; import_aiohttp()"),
    ("kube client, YAML, labels", "edgeagent.kube.client,edgeagent.kube.tls,yaml,"
     "edgeagent.labels.component", ""),
    ("device plugin and its CDI specs: grpclib, h2, betterproto", "edgeagent.cdi.component,"
     "edgeagent.deviceplugin.component,edgeagent.deviceplugin.server",
     "from edgeagent.deviceplugin.lightimports import prepare_betterproto; "
     "prepare_betterproto()"),
)


# --- reading a process ------------------------------------------------------------------------

def memory(pid: int) -> Dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile (MiB) and Threads from /proc/PID/status; Pss (MiB) from
    /proc/PID/smaps_rollup (Linux 4.14+)."""
    out: Dict[str, float] = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024.0
            elif key == "Threads":
                out[key] = int(value)
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1]) / 1024.0
    except OSError:
        out["Pss"] = float("nan")
    return out


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def serving(url: str) -> bool:
    try:
        scrape(url)
        return True
    except OSError:
        return False


def steady_window(pid_alive, url: Optional[str], seconds: float) -> int:
    """One scrape a second (none without ``url``) for ``seconds``; returns the scrapes made."""
    t0 = time.time()
    scrapes = 0
    while time.time() - t0 < seconds:
        if not pid_alive():
            raise SystemExit("bench: the process under test exited during the window")
        if url:
            scrape(url)
            scrapes += 1
        time.sleep(max(0.0, 1.0 - (time.time() - t0) % 1.0))
    return scrapes


def unit_environment() -> Dict[str, str]:
    """Environment= of the shipped unit, except SHIV_ROOT (the bench has its own cache)."""
    env: Dict[str, str] = {}
    with open(UNIT) as f:
        for line in f:
            m = re.match(r"Environment=(\S+?)=(\S*)\s*$", line.strip())
            if m and m.group(1) != "SHIV_ROOT":
                env[m.group(1)] = m.group(2)
    return env


def agent_python() -> str:
    """$EDGEAGENT_PYZ_PYTHON, else the unit's ExecStart= interpreter (/usr/bin/python3) when it
    is the same minor version as python3 on PATH (the pyz's compiled wheels need that one), else
    python3 on PATH. The unit's interpreter is what a host runs; a pyenv or virtualenv python3
    may carry .pth files that import more at start-up than the host's does."""
    given = os.environ.get("EDGEAGENT_PYZ_PYTHON")
    if given:
        return given
    path_python = shutil.which("python3") or "python3"
    with open(UNIT) as f:
        m = re.search(r"^ExecStart=(\S+)", f.read(), re.M)
    unit_python = m.group(1) if m else ""
    if unit_python and os.access(unit_python, os.X_OK):
        version = [subprocess.run([p, "-c", "import sys; print(sys.version_info[:2])"],
                                  stdout=subprocess.PIPE, universal_newlines=True).stdout
                   for p in (unit_python, path_python)]
        if version[0] == version[1]:
            return unit_python
    return path_python


# --- the peers ------------------------------------------------------------------------------------

def node_exporter(seconds: float) -> Dict[str, float]:
    exe = shutil.which(NODE_EXPORTER)
    if not exe:
        raise SystemExit("bench: %s not found: apt-get install %s (Debian/Ubuntu)"
                         % (NODE_EXPORTER, NODE_EXPORTER))
    port = free_port()
    url = "http://127.0.0.1:%d/metrics" % port
    proc = subprocess.Popen([exe, "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: serving(url), 20, "node_exporter serving")
        n = steady_window(lambda: proc.poll() is None, url, seconds)
        result = memory(proc.pid)
        result["scrapes"] = n
        return result
    finally:
        proc.terminate()
        proc.wait(10)


class Node:
    """A fixture Nano with its kubelet and API server."""

    def __init__(self) -> None:
        from tests.e2e.peers import ApiServerThread
        from tests.peers.hosts import PLUGIN_DIR, FixtureHost
        from tests.peers.kubelet import FakeKubelet

        self.host = FixtureHost("nano")
        self.port = free_port()
        self.host.write("/etc/edgeagent/config.toml", CONFIG % self.port)
        self.api = ApiServerThread(nodes=["jetson-1"]).start()
        self.kubeconfig = self.api.write_kubeconfig("system:node:jetson-1")
        self.kubelet = FakeKubelet(self.host.path(PLUGIN_DIR)).start()
        self.url = "http://127.0.0.1:%d/metrics" % self.port

    def close(self) -> None:
        self.kubelet.stop()
        self.api.close()
        self.host.cleanup()


def agent_run(node: Node, disabled: Tuple[str, ...], env: Dict[str, str], shiv_root: str,
              seconds: float) -> Dict[str, float]:
    """``run`` with ``disabled`` off: wait until each enabled component did its job, then the
    steady window, then the agent's memory."""
    from tests.e2e.agent import AgentProcess

    args = ["--kubeconfig", node.kubeconfig]
    if disabled:
        args += ["--disable", ",".join(disabled)]
    agent = AgentProcess(node.host.root, args, env=env, shiv_root=shiv_root,
                         log_level="warning").start()
    try:
        agent.wait_ready(timeout=60)
        if "device-plugin" not in disabled:
            node.kubelet.watch("nvidia.com/gpu", timeout=30).wait_for(
                lambda d: bool(d) and all(h == "Healthy" for _, h in d), timeout=30)
        if "labels" not in disabled:
            wait_until(lambda: "edgeagent.io/owned-labels" in node.api.annotations("jetson-1"),
                       60, "the Node's labels")
        if "metrics" not in disabled:
            wait_until(lambda: serving(node.url) and b"jetson_tegrastats_up 1.0"
                       in scrape(node.url), 30, "tegrastats metrics")
        url = None if "metrics" in disabled else node.url
        n = steady_window(agent.alive, url, seconds)
        result = memory(agent.proc.pid)
        result["scrapes"] = n
        code, _ = agent.terminate()
        log = agent.all_logs()
        if code != 0 or "Traceback" in log:
            raise SystemExit("bench: the agent exited %s; log:\n%s" % (code, log[-3000:]))
        return result
    finally:
        agent.cleanup()


# --- imports alone -------------------------------------------------------------------------------

def site_packages(shiv_root: str) -> str:
    """The pyz's unpacked site-packages in ``shiv_root`` (filled by a first run)."""
    for name in sorted(os.listdir(shiv_root)):
        candidate = os.path.join(shiv_root, name, "site-packages")
        if os.path.isdir(candidate):
            return candidate
    raise SystemExit("bench: no unpacked site-packages under %s" % shiv_root)


_PROBE = """
import importlib, sys
sys.path.insert(0, %r)
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
out = [(rss(), len(sys.modules))]
for modules, before in %r:
    exec(before)
    for name in modules.split(","):
        importlib.import_module(name)
    out.append((rss(), len(sys.modules)))
import json
print(json.dumps(out))
"""


def import_steps(python: str, path: str, env: Dict[str, str]) -> List[Tuple[str, float, int]]:
    """(step, MiB added, modules added) for IMPORT_STEPS in one fresh interpreter, the bare
    interpreter first; the median of 3 runs."""
    import json

    steps = [(modules, before) for _, modules, before in IMPORT_STEPS]
    runs = []
    for _ in range(3):
        out = subprocess.run([python, "-c", _PROBE % (path, steps)], env=dict(os.environ, **env),
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        runs.append(json.loads(out))
    rows = [("bare interpreter", statistics.median(r[0][0] for r in runs), runs[0][0][1])]
    for i, (name, _, _) in enumerate(IMPORT_STEPS, 1):
        rows.append((name, statistics.median(r[i][0] - r[i - 1][0] for r in runs),
                     runs[0][i][1] - runs[0][i - 1][1]))
    return rows


# --- the table ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pyz", default=os.environ.get("EDGEAGENT_PYZ",
                                                    os.path.join(REPO, "dist", "edgeagent.pyz")))
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="steady window of each run (default 60)")
    ap.add_argument("--only", default=",".join(RUNS),
                    help="agent runs to make, of %s" % ", ".join(RUNS))
    ap.add_argument("--no-unit-env", action="store_true",
                    help="run the agent without the unit's Environment= lines")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="more environment for the agent (e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--imports", action="store_true",
                    help="also the RSS each dependency adds to a fresh interpreter")
    args = ap.parse_args()
    runs = [r for r in args.only.split(",") if r]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        ap.error("unknown run %s (of %s)" % (", ".join(unknown), ", ".join(RUNS)))
    if not os.path.exists(args.pyz):
        raise SystemExit("bench: no %s: run ./build.sh first" % args.pyz)
    os.environ["EDGEAGENT_PYZ"] = os.path.abspath(args.pyz)
    python = agent_python()
    os.environ["EDGEAGENT_PYZ_PYTHON"] = python  # tests/e2e/agent.py starts the pyz with it
    env = {} if args.no_unit_env else unit_environment()
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value

    ne = node_exporter(args.seconds)
    shiv_root = tempfile.mkdtemp(prefix="bench-shiv-")
    results: Dict[str, Dict[str, float]] = {}
    node = Node()
    try:
        # Unpack once: every measured start is a warm one, as on a host after `install`.
        subprocess.run([python, args.pyz, "version"], env=dict(os.environ, SHIV_ROOT=shiv_root),
                       stdout=subprocess.DEVNULL, check=True)
        for name in runs:
            results[name] = agent_run(node, RUNS[name], env, shiv_root, args.seconds)
        imports: List[Tuple[str, float, int]] = []
        if args.imports:
            imports = import_steps(python, site_packages(shiv_root), env)
    finally:
        node.close()
        shutil.rmtree(shiv_root, ignore_errors=True)

    import platform

    print("node_exporter %s vs edgeagent on %s, %s %s, %.0f s steady window, 1 scrape/s, "
          "tegrastats 1 Hz; agent environment: %s" % (
              subprocess.run([shutil.which(NODE_EXPORTER), "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True
                             ).stdout.split()[2],
              platform.machine(), python,
              subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             stdout=subprocess.PIPE, universal_newlines=True).stdout.strip(),
              args.seconds, " ".join("%s=%s" % kv for kv in sorted(env.items())) or "none"))
    print("| process | VmRSS MiB | PSS MiB | anon MiB | file MiB | peak (VmHWM) MiB | threads "
          "| vs node_exporter |")
    print("|---|---|---|---|---|---|---|---|")

    def line(name: str, m: Dict[str, float]) -> None:
        print("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %d | %.2fx |" % (
            name, m["VmRSS"], m["Pss"], m.get("RssAnon", 0), m.get("RssFile", 0), m["VmHWM"],
            m["Threads"], m["VmRSS"] / ne["VmRSS"]))

    line("node_exporter", ne)
    for name in runs:
        label = {"all": "edgeagent, every component", "none": "edgeagent, discovery only"}.get(
            name, "edgeagent, %s alone" % name)
        line(label, results[name])
    if args.imports:
        print()
        print("| imports, in the order `run` loads them (one fresh interpreter) | + VmRSS MiB "
              "| + modules |")
        print("|---|---|---|")
        for name, mib, mods in imports:
            print("| %s | %.1f | %d |" % (name, mib, mods))
        print("| total | %.1f | %d |" % (sum(r[1] for r in imports), sum(r[2] for r in imports)))
    if "all" in results:
        ratio = results["all"]["VmRSS"] / ne["VmRSS"]
        print("every component: %.1f MiB, node_exporter %.1f MiB: %.2fx (goal <= %.1fx)" % (
            results["all"]["VmRSS"], ne["VmRSS"], ratio, GOAL_RATIO))
        return 0 if ratio <= GOAL_RATIO else 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:  # a wait that timed out: one line, not a traceback
        sys.exit("bench: %s" % e)
