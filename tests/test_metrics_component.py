"""The metrics component inside the real agent: `run --demo` serves a full /metrics on any machine,
a host without tegrastats serves the agent's own metrics only, and shutdown leaves no child."""

import asyncio
import os
import time

from edgeagent.app import materialize_demo_host, run_agent
from edgeagent.config import DEFAULT_METRICS_PORT, load_config
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from edgeagent.metrics.component import install_demo_tegrastats
from tests.tools import free_port




def children():
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return out


async def agent_scrape(root, demo, port, want, timeout=15.0, interval_ms=200):
    """Run the agent until `want(metrics_text)` holds; return (metrics, healthz status, body)."""
    import aiohttp

    config = load_config(flags={"metrics.address": "127.0.0.1:%d" % port,
                                "disable": "device-plugin,labels"})
    config = config.replace(**{"tegrastats.interval_ms": interval_ms})
    stop = asyncio.Event()
    agent = asyncio.ensure_future(run_agent(HostRoot(root), config, discover(HostRoot(root)),
                                            demo=demo, stop=stop))
    deadline = time.monotonic() + timeout
    text = ""
    try:
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert not agent.done(), agent.result()
                try:
                    async with session.get("http://127.0.0.1:%d/metrics" % port) as r:
                        text = await r.text()
                    if want(text):
                        async with session.get("http://127.0.0.1:%d/healthz" % port) as r:
                            return text, r.status, await r.text()
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("metrics never satisfied the test:\n" + text)
    finally:
        stop.set()
        done, _ = await asyncio.wait([agent], timeout=5)
        assert done, "agent did not stop"
        assert agent.result() == 0


def test_the_default_port():
    assert DEFAULT_METRICS_PORT == 19745


def test_demo_serves_every_tegrastats_family_and_stops_its_child():
    root = materialize_demo_host()
    try:
        port = free_port()
        text, status, health = asyncio.run(agent_scrape(
            root, True, port, lambda t: "jetson_power_watts" in t and
            'edgeagent_component_up{component="metrics"} 1.0' in t))
        assert os.access(os.path.join(root, "usr/bin/tegrastats"), os.X_OK)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    for name in ("jetson_ram_used_bytes", "jetson_swap_total_bytes", "jetson_cpu_frequency_hertz",
                 "jetson_emc_utilization_ratio", "jetson_gpu_frequency_hertz",
                 "jetson_engine_frequency_hertz", "jetson_temperature_celsius",
                 "jetson_power_average_watts", "jetson_tegrastats_up 1.0",
                 "edgeagent_build_info", "process_resident_memory_bytes"):
        assert name in text, name
    assert 'board="NVIDIA Jetson AGX Xavier Developer Kit"' in text and 'jetpack="5.1.2"' in text
    assert status == 200 and '"status": "ok"' in health
    time.sleep(0.1)
    assert children() == [], "a child process outlived the agent"


def test_a_host_without_tegrastats_serves_the_agents_own_metrics_only(tmp_path):
    port = free_port()
    text, status, _ = asyncio.run(agent_scrape(
        str(tmp_path), False, port,
        lambda t: 'edgeagent_component_up{component="tegrastats"} 1.0' in t))
    assert "jetson_" not in text
    assert "edgeagent_node_info" in text and status == 200


def test_install_demo_tegrastats_keeps_an_existing_binary(tmp_path):
    root = HostRoot(str(tmp_path))
    target = install_demo_tegrastats(root, "/usr/bin/tegrastats")
    assert target == str(tmp_path) + "/usr/bin/tegrastats" and os.access(target, os.X_OK)
    assert install_demo_tegrastats(root, "/usr/bin/tegrastats") is None
