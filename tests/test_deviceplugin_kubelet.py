"""The device plugin against a kubelet made with grpcio: real unix sockets, real HTTP/2, the
kubelet's call-back during Register, restarts, health flips, every Allocate strategy."""

import logging
import os
import shutil
import stat

import grpc
import pytest

from edgeagent.deviceplugin.proto import v1beta1 as api
from tests.dpharness import AgentThread, make_root, write
from tests.fakekubelet import FakeKubelet, PluginClient, Watch, wait_until

GPU = "nvidia.com/gpu"
DLA = "nvidia.com/dla"

CDI_YAML = """---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvmap
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvhost-gpu
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvhost-gpu
  name: all
kind: nvidia.com/gpu
"""

L4T_CSV = """dev, /dev/nvhost-ctrl-gpu
dev, /dev/nvhost-gpu
dev, /dev/nvmap
dev, /dev/not-on-this-board
lib, /usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1
sym, /usr/lib/aarch64-linux-gnu/tegra/libcuda.so
dir, /usr/lib/aarch64-linux-gnu/tegra
lib, /usr/lib/not-installed.so
"""


@pytest.fixture
def root():
    path = make_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cleanup():
    things = []
    yield things
    for thing in reversed(things):
        try:
            thing.stop()
        except Exception:
            pass


def run(root, cleanup, kubelet=True, **overrides):
    k = None
    if kubelet:
        k = FakeKubelet(os.path.join(root, "var/lib/kubelet/device-plugins")).start()
        cleanup.append(k)
    agent = AgentThread(root, overrides)
    cleanup.append(agent)
    agent.start()
    return agent, k


def _by_name(requests):
    return {r.resource_name: r for r in requests}


def test_registers_after_serving_and_answers_the_callback(root, cleanup):
    agent, kubelet = run(root, cleanup)
    reqs = _by_name(kubelet.wait_registrations(2))
    assert set(reqs) == {GPU, DLA}                     # the demo Xavier: iGPU and two NVDLAs
    gpu = reqs[GPU]
    assert gpu.version == "v1beta1"
    assert gpu.endpoint == os.path.basename(agent.socket(GPU))
    assert "/" not in gpu.endpoint
    assert gpu.options.get_preferred_allocation_available is True
    assert gpu.options.pre_start_required is False
    # the kubelet called back during Register, so the socket served before Register
    assert kubelet.callback_options[GPU].get_preferred_allocation_available is True
    mode = os.stat(agent.socket(GPU)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    first = kubelet.watch(GPU).wait_for(lambda d: len(d) == 1)
    assert first == [("0", "Healthy")]
    dla = kubelet.watch(DLA).wait_for(lambda d: len(d) == 2)
    assert dla == [("nvdla0", "Healthy"), ("nvdla1", "Healthy")]
    wait_until(lambda: 'edgeagent_device_plugin_registered{resource="nvidia.com/gpu"} 1.0'
               in agent.metrics(), what="registered metric")
    text = agent.metrics()
    assert 'edgeagent_device_plugin_registrations_total{resource="nvidia.com/gpu"} 1.0' in text
    assert ('edgeagent_device_plugin_devices{health="Healthy",resource="nvidia.com/dla"} 2.0'
            in text)


def test_serves_without_a_kubelet_and_registers_when_it_appears(root, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="edgeagent.deviceplugin")
    agent, _ = run(root, cleanup, kubelet=False)
    assert os.path.exists(agent.socket(GPU))           # started() only once sockets serve
    client = PluginClient(agent.socket(GPU))
    try:
        opts = client.options(api.Empty(), timeout=5)
        assert opts.get_preferred_allocation_available
    finally:
        client.close()
    waiting = [r for r in caplog.records if "waiting for the kubelet" in r.getMessage()]
    assert len(waiting) == 2                           # once per resource, no spam
    assert "kubelet.sock" in waiting[0].getMessage()
    kubelet = FakeKubelet(agent.directory).start()
    cleanup.append(kubelet)
    assert {r.resource_name for r in kubelet.wait_registrations(2)} == {GPU, DLA}


def test_list_and_watch_follows_health_both_ways_on_every_stream(root, cleanup):
    agent, kubelet = run(root, cleanup)
    kubelet.wait_registrations(2)
    streams = [kubelet.watch(GPU)]
    extra = PluginClient(agent.socket(GPU))
    try:
        streams.append(Watch(extra))
        streams.append(Watch(extra))
        for s in streams:
            s.wait_for(lambda d: d == [("0", "Healthy")])
        node = os.path.join(root, "dev/nvhost-gpu")
        os.rename(node, node + ".away")
        for s in streams:
            s.wait_for(lambda d: d == [("0", "Unhealthy")])
        wait_until(lambda: 'health="Unhealthy",resource="nvidia.com/gpu"} 1.0' in agent.metrics(),
                   what="unhealthy metric")
        os.rename(node + ".away", node)
        for s in streams:
            s.wait_for(lambda d: d == [("0", "Healthy")])
        for s in streams[1:]:
            s.cancel()
    finally:
        extra.close()


def test_gpu_health_follows_the_live_devicetree_status(cleanup):
    from edgeagent.discovery.inventory import Gpu, Inventory

    root = make_root(demo=False)
    try:
        for n in ("nvhost-gpu", "nvhost-ctrl-gpu", "nvmap"):
            write(root, "/dev/" + n)
        write(root, "/proc/device-tree/compatible", "nvidia,p3737-0000\0nvidia,tegra234\0")
        status = write(root, "/proc/device-tree/gpu@17000000/status", "okay\0")
        gpu = Gpu("/gpu@17000000", ("nvidia,ga10b",), "okay", "nvidia", "ampere", "8.7",
                  ("/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap"))
        inv = Inventory(None, (), "tegra234", True, None, None, None, gpu, (), "/proc/device-tree")
        kubelet = FakeKubelet(os.path.join(root, "var/lib/kubelet/device-plugins")).start()
        cleanup.append(kubelet)
        agent = AgentThread(root, {"device_plugin.builtin_profiles": False}, inventory=inv)
        cleanup.append(agent)
        agent.start()
        watch = kubelet.watch(GPU)
        watch.wait_for(lambda d: d == [("0", "Healthy")])
        with open(status, "w") as f:
            f.write("disabled\0")
        watch.wait_for(lambda d: d == [("0", "Unhealthy")])
        with open(status, "w") as f:
            f.write("okay\0")
        watch.wait_for(lambda d: d == [("0", "Healthy")])
    finally:
        shutil.rmtree(root, ignore_errors=True)
