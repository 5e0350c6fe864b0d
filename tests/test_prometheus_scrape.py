"""A real Prometheus (Debian package `prometheus`) scrapes a running `edgeagent run --demo`, and its
query API shows the target up and the Jetson series."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from tests.conftest import REPO
from tests.tools import require_tool

DEADLINE_SECONDS = 45


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def query(port, promql):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": promql}))
    with urllib.request.urlopen(url, timeout=2) as r:
        doc = json.loads(r.read().decode())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def stop(proc, name):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def test_prometheus_scrapes_the_demo_agent(tmp_path):
    prometheus = require_tool("prometheus")
    agent_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: edgeagent\n    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n" % agent_port)
    agent_log = open(str(tmp_path / "agent.log"), "wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "run", "--demo", "--disable", "device-plugin,labels",
         "--metrics-address", "127.0.0.1:%d" % agent_port],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=agent_log,
        stderr=subprocess.STDOUT)
    prom_log = open(str(tmp_path / "prometheus.log"), "wb")
    prom = subprocess.Popen(
        [prometheus, "--config.file=%s" % config, "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
         "--web.listen-address=127.0.0.1:%d" % prom_port, "--log.level=warn"],
        stdout=prom_log, stderr=subprocess.STDOUT)
    found = {}
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        wanted = {
            "up": 'up{job="edgeagent"} == 1',
            "ram": 'jetson_ram_total_bytes{job="edgeagent"}',
            "tegrastats": 'jetson_tegrastats_up{job="edgeagent"} == 1',
            "cpu": 'jetson_cpu_frequency_hertz{job="edgeagent",cpu="7"}',
            "power": 'jetson_power_watts{job="edgeagent",rail="SYS5V"}',
            "node": 'edgeagent_node_info{job="edgeagent",soc="tegra194"}',
        }
        while time.monotonic() < deadline and len(found) < len(wanted):
            assert agent.poll() is None, "agent exited: %s" % open(agent_log.name).read()
            assert prom.poll() is None, "prometheus exited: %s" % open(prom_log.name).read()
            for key, promql in wanted.items():
                if key in found:
                    continue
                try:
                    result = query(prom_port, promql)
                except OSError:
                    break                       # Prometheus not listening yet
                if result:
                    found[key] = result
            time.sleep(0.5)
        assert set(found) == set(wanted), "missing %s after %ds" % (
            sorted(set(wanted) - set(found)), DEADLINE_SECONDS)
        assert float(found["ram"][0]["value"][1]) == 30991 * 2 ** 20
        assert float(found["cpu"][0]["value"][1]) > 2e9
    finally:
        stop(prom, "prometheus")
        code = stop(agent, "agent")
        agent_log.close()
        prom_log.close()
    assert code == 0, open(str(tmp_path / "agent.log")).read()
