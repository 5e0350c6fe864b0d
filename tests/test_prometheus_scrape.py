"""A real Prometheus (Debian package `prometheus`) scrapes a running `edgeagent run --demo`, and its
query API shows the target up and the Jetson series."""

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO
from tests.peers.prometheus import Prometheus
from tests.tools import free_port, require_tool

DEADLINE_SECONDS = 45


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
    agent_port = free_port()
    agent_log = open(str(tmp_path / "agent.log"), "wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "run", "--demo", "--disable", "device-plugin,labels",
         "--metrics-address", "127.0.0.1:%d" % agent_port],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=agent_log,
        stderr=subprocess.STDOUT)
    prom = Prometheus(prometheus, target="127.0.0.1:%d" % agent_port).start()
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
            "degraded": 'edgeagent_component_degraded{job="edgeagent",component="metrics"} == 0',
        }
        while time.monotonic() < deadline and len(found) < len(wanted):
            assert agent.poll() is None, "agent exited: %s" % open(agent_log.name).read()
            prom.check_running()
            for key, promql in wanted.items():
                if key in found:
                    continue
                try:
                    result = prom.query(promql)
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
        prom.stop()
        code = stop(agent, "agent")
        agent_log.close()
    assert code == 0, open(str(tmp_path / "agent.log")).read()
