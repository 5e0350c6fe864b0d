"""The device plugin against a kubelet made with grpcio: real unix sockets, real HTTP/2, the
kubelet's call-back during Register, restarts, health flips, every Allocate strategy."""

import logging
import os
import time
import shutil
import stat

import grpc
import pytest

from tests.dpharness import AgentThread
from tests.peers.hosts import short_root as make_root
from tests.peers.hosts import write
from tests.peers.kubelet import FakeKubelet, PluginClient, Watch
from tests.tools import wait_until

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
        opts = client.options(timeout=5)
        assert opts.get_preferred_allocation_available
    finally:
        client.close()
    waiting = [r for r in caplog.records if "waiting for the kubelet" in r.getMessage()]
    assert len(waiting) == 2                           # once per resource, no spam
    assert agent.component.problem() is None           # waiting for a kubelet is normal
    assert "kubelet.sock" in waiting[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
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


def _runtime_files(root, cdi=False, docker=False, csv=False):
    if cdi:
        write(root, "/etc/cdi/nvidia.yaml", CDI_YAML)
    if docker:
        write(root, "/etc/docker/daemon.json", '{"runtimes": {"nvidia": {"path": '
              '"nvidia-container-runtime", "runtimeArgs": []}}, "default-runtime": "nvidia"}')
    if csv:
        write(root, "/etc/nvidia-container-runtime/host-files-for-container.d/l4t.csv", L4T_CSV)
        write(root, "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1", "elf")
        os.symlink("libcuda.so.1.1", os.path.join(root, "usr/lib/aarch64-linux-gnu/tegra/libcuda.so"))


@pytest.mark.parametrize("strategy, files, expect", [
    ("auto", dict(cdi=True, docker=True, csv=True), "cdi"),
    ("auto", dict(docker=True, csv=True), "envvar"),
    ("auto", dict(csv=True), "device-specs"),
    ("cdi", dict(cdi=True), "cdi"),
    ("envvar", dict(csv=True), "envvar"),
    ("device-specs", dict(cdi=True, docker=True, csv=True), "device-specs"),
])
def test_allocate_strategies(root, cleanup, strategy, files, expect):
    _runtime_files(root, **files)
    agent, kubelet = run(root, cleanup, **{"device_plugin.device_list_strategy": strategy,
                                           "device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    client = kubelet.clients[GPU]
    resp = client.allocate(["0"])
    c = resp.container_responses[0]
    if expect == "cdi":
        assert [d.name for d in c.cdi_devices] == ["nvidia.com/gpu=0"]
        assert dict(c.annotations) == {"cdi.k8s.io/edgeagent_nvidia.com_gpu": "nvidia.com/gpu=0"}
        assert dict(c.envs) == {"NVIDIA_VISIBLE_DEVICES": "void"}
        assert not c.devices and not c.mounts
    elif expect == "envvar":
        assert dict(c.envs) == {"NVIDIA_VISIBLE_DEVICES": "all"}
        assert not c.devices and not c.mounts and not c.cdi_devices
    else:
        assert dict(c.envs) == {"NVIDIA_VISIBLE_DEVICES": "void"}
        hosts = [d.host_path for d in c.devices]
        # the CSV's dev lines that exist here, then the GPU's own nodes; no missing node
        assert hosts[:3] == ["/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap"]
        assert "/dev/not-on-this-board" not in hosts
        assert "/dev/nvhost-as-gpu" in hosts
        assert all(d.container_path == d.host_path and d.permissions == "rw" for d in c.devices)
        mounts = [(m.host_path, m.container_path, m.read_only) for m in c.mounts]
        assert mounts == [
            ("/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1",) * 2 + (True,),
            ("/usr/lib/aarch64-linux-gnu/tegra/libcuda.so",) * 2 + (True,),
            ("/usr/lib/aarch64-linux-gnu/tegra",) * 2 + (True,),
        ]
    assert 'edgeagent_device_plugin_allocations_total{resource="nvidia.com/gpu",result="ok"} 1.0' \
        in agent.metrics()


def test_strategy_follows_files_appearing_later(root, cleanup):
    agent, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    client = kubelet.clients[GPU]
    assert client.allocate(["0"]).container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == "void"
    _runtime_files(root, cdi=True)
    wait_until(lambda: [d.name for d in client.allocate(["0"]).container_responses[0].cdi_devices]
               == ["nvidia.com/gpu=0"], timeout=10, interval=0.05, what="cdi strategy")


def test_forced_cdi_without_a_spec_fails_with_the_fix(root, cleanup):
    agent, kubelet = run(root, cleanup, **{"device_plugin.device_list_strategy": "cdi",
                                           "device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    with pytest.raises(grpc.RpcError) as e:
        kubelet.clients[GPU].allocate(["0"])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nvidia-ctk cdi generate" in e.value.details()
    assert ('edgeagent_device_plugin_allocations_total{resource="nvidia.com/gpu",result="error"} '
            '1.0') in agent.metrics()


def test_time_slicing_replicas_preferred_allocation_and_limits(root, cleanup):
    agent, kubelet = run(root, cleanup, **{
        "sharing.replicas": 4, "sharing.rename_by_default": True,
        "sharing.fail_requests_greater_than_one": True, "device_plugin.builtin_profiles": False,
        "device_plugin.device_list_strategy": "envvar"})
    (req,) = kubelet.wait_registrations(1)
    assert req.resource_name == "nvidia.com/gpu.shared"
    devices = kubelet.watch("nvidia.com/gpu.shared").wait_for(lambda d: len(d) == 4)
    assert [i for i, _ in devices] == ["0::1", "0::2", "0::3", "0::4"]
    client = kubelet.clients["nvidia.com/gpu.shared"]
    assert client.preferred(["0::4", "0::2", "0::3"], [], 1) == ["0::2"]
    assert client.preferred(["0::4", "0::2", "0::3"], ["0::4"], 1) == ["0::4"]
    resp = client.allocate(["0::3"], ["0::1"])          # two containers, one replica each
    assert [c.envs["NVIDIA_VISIBLE_DEVICES"] for c in resp.container_responses] == ["all", "all"]
    with pytest.raises(grpc.RpcError) as e:
        client.allocate(["0::1", "0::2"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1" in e.value.details() and "sharing.replicas" in e.value.details()


@pytest.mark.parametrize("containers, code, words", [
    ([["7"]], "INVALID_ARGUMENT", "unknown device '7'"),
    ([[]], "INVALID_ARGUMENT", "empty device list"),
    ([["0", "0"]], "INVALID_ARGUMENT", "requested twice"),
    ([], "INVALID_ARGUMENT", "without container requests"),
])
def test_bad_allocate_requests(root, cleanup, containers, code, words):
    agent, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    with pytest.raises(grpc.RpcError) as e:
        kubelet.clients[GPU].allocate(*containers)
    assert e.value.code() == getattr(grpc.StatusCode, code)
    assert words in e.value.details()
    # the plugin still serves after refusing
    assert kubelet.clients[GPU].allocate(["0"]).container_responses


def test_unhealthy_device_is_refused_and_prestart_is_a_noop(root, cleanup):
    agent, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    client = kubelet.clients[GPU]
    assert client.prestart(["0"]).SerializeToString() == b""
    os.unlink(os.path.join(root, "dev/nvhost-gpu"))
    kubelet.watch(GPU).wait_for(lambda d: d == [("0", "Unhealthy")])
    with pytest.raises(grpc.RpcError) as e:
        client.allocate(["0"])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "/dev/nvhost-gpu is missing" in e.value.details()


def test_kubelet_restarts_repeatedly(root, cleanup):
    agent, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})

    def registered(n):
        # the kubelet records a Register before answering it: wait for our side too
        reqs = kubelet.wait_registrations(n)
        wait_until(lambda: 'edgeagent_device_plugin_registrations_total{resource="nvidia.com/gpu"}'
                   ' %d.0' % n in agent.metrics(), what="%d registrations counted" % n)
        return reqs

    registered(1)
    for n in range(2, 7):
        kubelet.restart(wipe=True)                     # sockets wiped, new kubelet.sock
        reqs = registered(n)
        assert reqs[-1].resource_name == GPU
        assert os.path.exists(agent.socket(GPU))       # re-created
        kubelet.watch(GPU).wait_for(lambda d: d == [("0", "Healthy")])
        assert kubelet.clients[GPU].allocate(["0"]).container_responses
    kubelet.restart(wipe=False)                        # only kubelet.sock re-created
    registered(7)
    os.unlink(agent.socket(GPU))                       # only our socket removed
    registered(8)
    wait_until(lambda: os.path.exists(agent.socket(GPU)), what="socket re-created")
    assert kubelet.clients[GPU].allocate(["0"]).container_responses


def test_registration_failures_back_off_and_log_once(root, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="edgeagent.deviceplugin")
    kubelet = FakeKubelet(os.path.join(root, "var/lib/kubelet/device-plugins"))
    kubelet.reject = "resource name nvidia.com/gpu is already registered"
    kubelet.start()
    cleanup.append(kubelet)
    agent = AgentThread(root, {"device_plugin.builtin_profiles": False})
    cleanup.append(agent)
    agent.start()
    wait_until(lambda: kubelet.attempts >= 3, timeout=10, what="three failed attempts")
    failures = [r for r in caplog.records if "registration failed" in r.getMessage()]
    assert len(failures) == 1 and "already registered" in failures[0].getMessage()
    assert 'edgeagent_device_plugin_registered{resource="nvidia.com/gpu"} 0.0' in agent.metrics()
    # /healthz reports the agent degraded meanwhile, with the kubelet's reason
    problem = agent.component.problem()
    assert problem.startswith("nvidia.com/gpu: registration failed") and "already" in problem
    kubelet.reject = None
    kubelet.wait_registrations(1, timeout=15)
    wait_until(lambda: any("registered with the kubelet" in r.getMessage()
                           for r in caplog.records), what="registered log")
    wait_until(lambda: agent.component.problem() is None, what="problem cleared")


def test_shutdown_removes_sockets_and_ends_streams(root, cleanup):
    agent, kubelet = run(root, cleanup)
    kubelet.wait_registrations(2)
    watch = kubelet.watch(GPU)
    watch.wait_for(lambda d: len(d) == 1)
    sockets = [agent.socket(GPU), agent.socket(DLA)]
    assert all(os.path.exists(s) for s in sockets)
    agent.stop()
    assert not any(os.path.exists(s) for s in sockets)
    assert os.path.exists(kubelet.socket)              # never touches the kubelet's socket
    assert watch.ended.wait(5)


def test_hot_plugged_devices_and_new_resources(root, cleanup):
    agent, kubelet = run(root, cleanup, **{"device_plugin.resources": [
        {"name": "example.com/serial", "paths": ["/dev/ttyEA*"], "pods_per_device": 2}]})
    kubelet.wait_registrations(3)
    serial = kubelet.watch("example.com/serial")
    assert serial.wait_for(lambda d: True) == []        # registered with no devices yet
    write(root, "/dev/ttyEA0")
    serial.wait_for(lambda d: d == [("ttyEA0::1", "Healthy"), ("ttyEA0::2", "Healthy")])
    os.unlink(os.path.join(root, "dev/ttyEA0"))
    serial.wait_for(lambda d: d == [("ttyEA0::1", "Unhealthy"), ("ttyEA0::2", "Unhealthy")])
    write(root, "/dev/ttyEA0")
    serial.wait_for(lambda d: d == [("ttyEA0::1", "Healthy"), ("ttyEA0::2", "Healthy")])
    resp = kubelet.clients["example.com/serial"].allocate(["ttyEA0::2"])
    (dev,) = resp.container_responses[0].devices
    assert (dev.host_path, dev.container_path, dev.permissions) == ("/dev/ttyEA0",) * 2 + ("rw",)
    write(root, "/dev/apex_0")                          # a Coral Edge TPU shows up
    kubelet.wait_registrations(4)
    tpu = kubelet.watch("google.com/edgetpu").wait_for(lambda d: len(d) == 1)
    assert tpu == [("apex_0", "Healthy")]
    dla = kubelet.clients[DLA].allocate(["nvdla1"]).container_responses[0]
    assert [d.host_path for d in dla.devices] == [
        "/dev/nvhost-ctrl-nvdla1", "/dev/nvhost-nvdla1", "/dev/nvmap"]


def test_waits_for_the_kubelets_directory(root, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="edgeagent.deviceplugin")
    directory = os.path.join(root, "var/lib/kubelet/device-plugins")
    os.rmdir(directory)
    agent, _ = run(root, cleanup, kubelet=False, **{"device_plugin.builtin_profiles": False})
    assert agent.started.is_set()                       # READY is not held back
    os.makedirs(directory)
    wait_until(lambda: os.path.exists(agent.socket(GPU)), what="socket once the dir exists")
    kubelet = FakeKubelet(directory).start()
    cleanup.append(kubelet)
    kubelet.wait_registrations(1)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("device-plugin directory" in m for m in msgs) == 1


def test_a_stopped_server_closes_the_connections_it_accepted():
    """asyncio's Server.close() leaves accepted connections open: a kubelet still connected
    would be answered by a stopped plugin from stale state. stop_server must close them (with
    close_clients() on 3.13+, else through grpclib's _protocol_factory: this fails the day a
    grpclib release stops calling it)."""
    import asyncio
    import tempfile

    from edgeagent.deviceplugin.model import Resource, Unit
    from edgeagent.deviceplugin.server import (DevicePluginService, PluginServer, ResourceState,
                                               stop_server)
    from edgeagent.deviceplugin.sockets import bind_unix

    directory = tempfile.mkdtemp(prefix="eadrop-", dir="/tmp")
    path = os.path.join(directory, "p.sock")
    state = ResourceState(Resource(GPU, "gpu", (Unit("0", (), True),), gpu=True))
    # the HTTP/2 client preface and an empty SETTINGS frame (RFC 9113 3.4)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    async def scenario():
        server = PluginServer([DevicePluginService(state)])
        await server.start(sock=bind_unix(path))
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(preface)
        await writer.drain()
        frame = await asyncio.wait_for(reader.readexactly(9), 5)
        assert frame[3] == 0x4                        # the server's SETTINGS: we are connected
        await stop_server(server, timeout=1.0)
        try:
            await asyncio.wait_for(reader.read(), 3)  # until EOF
        finally:
            writer.close()

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_thousand_replicas_through_the_kubelet(root, cleanup):
    agent, kubelet = run(root, cleanup, **{"sharing.replicas": 1024,
                                           "device_plugin.builtin_profiles": False,
                                           "device_plugin.device_list_strategy": "envvar"})
    kubelet.wait_registrations(1)
    ids = [i for i, _ in kubelet.watch(GPU).wait_for(lambda d: len(d) == 1024)]
    assert ids[:2] == ["0::1", "0::2"] and ids[-1] == "0::1024"
    client = kubelet.clients[GPU]
    assert client.preferred(ids[::-1], [], 1) == ["0::1"]
    assert client.preferred(ids, ["0::1024"], 1024) == ["0::1024"] + ids[:-1]
    assert client.allocate(["0::1000"]).container_responses[0].envs[
        "NVIDIA_VISIBLE_DEVICES"] == "all"


def test_socket_identity_is_none_only_when_the_file_is_gone(tmp_path):
    from edgeagent.deviceplugin.sockets import identity

    assert identity(str(tmp_path / "nothing")) is None                      # ENOENT
    (tmp_path / "file").write_text("")
    assert identity(str(tmp_path / "file" / "below")) is None               # ENOTDIR
    loop = tmp_path / "loop"
    os.symlink(str(loop), str(loop))
    with pytest.raises(OSError) as e:                                       # ELOOP: unknown
        identity(str(loop))
    assert not isinstance(e.value, FileNotFoundError)


def test_a_failed_stat_of_kubelet_sock_is_not_a_kubelet_restart(root, cleanup, caplog):
    """A stat that fails other than with ENOENT (here ELOOP; in the field ENOMEM or EIO) says
    nothing about the kubelet: no re-registration, no socket torn down, one warning."""
    import time

    caplog.set_level(logging.INFO, logger="edgeagent.deviceplugin")
    agent, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    serving = os.stat(agent.socket(GPU)).st_ino
    # A link to itself renamed over the socket: stat gives ELOOP, and never ENOENT in between
    # (an unlink first would leave a moment in which the kubelet really is gone).
    os.symlink(kubelet.socket, kubelet.socket + ".loop")
    os.replace(kubelet.socket + ".loop", kubelet.socket)
    wait_until(lambda: agent.component.problem() is not None, what="problem reported")
    assert "cannot check" in agent.component.problem()
    time.sleep(0.5)                                   # ten polls
    assert len(kubelet.requests) == 1 and kubelet.attempts == 1
    assert os.stat(agent.socket(GPU)).st_ino == serving
    assert 'edgeagent_device_plugin_registered{resource="nvidia.com/gpu"} 1.0' in agent.metrics()
    assert sum("not taken as gone" in r.getMessage() for r in caplog.records) == 1
    os.unlink(kubelet.socket)
    kubelet.restart(wipe=False)                       # a real new kubelet.sock
    kubelet.wait_registrations(2)
    wait_until(lambda: agent.component.problem() is None, what="problem cleared")


@pytest.mark.parametrize("version, name, words", [
    ("v1alpha", "nvidia.com/gpu", "version v1alpha is not supported"),
    ("v1beta1", "gpu", "invalid name"),
    ("v1beta1", "kubernetes.io/gpu", "invalid name"),
    ("v1beta1", "requests.nvidia.com/gpu", "invalid name"),
])
def test_the_test_kubelet_refuses_what_the_kubelet_refuses(root, cleanup, version, name, words):
    """The peer must be as strict as the devicemanager's Register, or a plugin bug it
    accepts would pass here and fail on a node."""
    from tests.peers.kubelet import api as kapi
    from tests.peers.kubelet import api_grpc

    kubelet = FakeKubelet(os.path.join(root, "var/lib/kubelet/device-plugins")).start()
    cleanup.append(kubelet)
    channel = grpc.insecure_channel("unix:" + kubelet.socket)
    try:
        with pytest.raises(grpc.RpcError) as e:
            api_grpc.RegistrationStub(channel).Register(kapi.RegisterRequest(
                version=version, endpoint="x.sock", resource_name=name), timeout=5)
        assert words in e.value.details()
    finally:
        channel.close()
    assert kubelet.requests == []


def test_a_second_agent_does_not_take_the_socket_of_the_first(root, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="edgeagent.deviceplugin")
    first, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    serving = os.stat(first.socket(GPU)).st_ino
    second = AgentThread(root, {"device_plugin.builtin_profiles": False})
    cleanup.append(second)
    second.start()                                     # READY all the same
    wait_until(lambda: second.component.problem() is not None, what="second's problem")
    assert "served by another process" in second.component.problem()
    assert os.stat(first.socket(GPU)).st_ino == serving
    assert len(kubelet.requests) == 1 and first.component.problem() is None
    first.stop()                                       # the first goes: the second takes over
    kubelet.wait_registrations(2, timeout=15)
    wait_until(lambda: second.component.problem() is None, what="second serving")
    assert kubelet.clients[GPU].allocate(["0"]).container_responses


def test_a_refused_request_of_a_thousand_ids_logs_one_short_line(root, cleanup, caplog):
    caplog.set_level(logging.INFO, logger="edgeagent.deviceplugin")
    agent, kubelet = run(root, cleanup, **{"device_plugin.builtin_profiles": False})
    kubelet.wait_registrations(1)
    with pytest.raises(grpc.RpcError) as e:
        kubelet.clients[GPU].allocate(["gpu-%d" % i for i in range(1000)])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(e.value.details()) < 500                 # the answer names the first id only
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and len(refused[0]) < 600, refused


def test_a_device_change_is_pushed_without_waiting_for_the_next_health_interval(root, cleanup):
    # The longest interval the config allows. Each change is made within a second of a full
    # check, so the next one by the clock is at least 4 s away: the streams must see it within
    # 3 s, because the loop's watch of /dev (ProbeWatch) starts a check as soon as the node goes
    # or comes. That check is the next change's "full check", so no flip waits an interval.
    checks = []
    agent = AgentThread(root, {"device_plugin.health_interval_seconds": 5.0})
    check = agent.component.check

    def counted(*args):
        result = check(*args)
        checks.append(time.monotonic())
        return result

    agent.component.check = counted
    kubelet = FakeKubelet(os.path.join(root, "var/lib/kubelet/device-plugins")).start()
    cleanup += [kubelet, agent]
    agent.start()
    kubelet.wait_registrations(2)
    streams = [kubelet.watch(GPU), Watch(PluginClient(agent.socket(GPU)))]
    node = os.path.join(root, "dev/nvhost-gpu")
    away = node + ".away"
    for health, move in (("Unhealthy", (node, away)), ("Healthy", (away, node))):
        for s in streams:
            s.wait_for(lambda d: d == [("0", "Unhealthy" if health == "Healthy" else "Healthy")])
        done = len(checks)
        if time.monotonic() - checks[-1] > 1.0:
            wait_until(lambda: len(checks) > done, timeout=10, what="a full check")
        os.rename(*move)
        for s in streams:
            s.wait_for(lambda d, h=health: d == [("0", h)], timeout=3.0)
    streams[1].cancel()
