"""Doctor checks of the device plugin against fixture roots that make each PASS, WARN, FAIL."""

import json
import os
import shutil

import pytest

from edgeagent.config import load_config
from edgeagent.deviceplugin.plugin import socket_name
from edgeagent.deviceplugin.sockets import bind_unix
from edgeagent.doctor import checks_plugin as cp
from edgeagent.doctor.model import DoctorContext
from edgeagent.doctor.runner import default_check_modules
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import PLUGIN_DIR, write
from tests.peers.hosts import short_root as make_root
from tests.test_deviceplugin_runtimefacts import CONTAINERD_V2, K3S, NVIDIA_CTK_YAML

CSV = "/etc/nvidia-container-runtime/host-files-for-container.d/l4t.csv"


@pytest.fixture
def root():
    path = make_root()
    socks = []
    yield path, socks
    for s in socks:
        s.close()
    shutil.rmtree(path, ignore_errors=True)


def ctx(path, **overrides):
    config = load_config(None, env={}).replace(**overrides)
    return DoctorContext(root=HostRoot(path), config=config, timeout=0.5)


def listen(root_and_socks, host_path):
    path, socks = root_and_socks
    s = bind_unix(os.path.join(path, host_path.lstrip("/")))
    s.listen(4)
    socks.append(s)
    return s


def stale(root_and_socks, host_path):
    path, socks = root_and_socks
    s = bind_unix(os.path.join(path, host_path.lstrip("/")))
    s.close()                      # the file stays; nobody listens


def one(result):
    return result if not isinstance(result, list) else result[0]


def test_registered_in_the_doctor_registry():
    assert "edgeagent.doctor.checks_plugin" in default_check_modules()
    assert len(cp.CHECKS) == 7


# --- kubelet socket --------------------------------------------------------------------------

def test_kubelet_socket_pass(root):
    listen(root, PLUGIN_DIR + "/kubelet.sock")
    r = cp.check_kubelet_socket(ctx(root[0]))
    assert r.status == "PASS" and "accepts connections" in r.detail


def test_kubelet_socket_warn_when_missing(root):
    r = cp.check_kubelet_socket(ctx(root[0]))
    assert r.status == "WARN" and "not running" in r.detail and r.fix


@pytest.mark.parametrize("how, words", [
    ("no-dir", "does not exist"), ("file", "is not a socket"), ("stale", "refuses connections")])
def test_kubelet_socket_fail(root, how, words):
    sock = PLUGIN_DIR + "/kubelet.sock"
    if how == "no-dir":
        shutil.rmtree(os.path.join(root[0], PLUGIN_DIR.lstrip("/")))
    elif how == "file":
        write(root[0], sock, "")
    else:
        stale(root, sock)
    r = cp.check_kubelet_socket(ctx(root[0]))
    assert r.status == "FAIL" and words in r.detail and r.fix


# --- our registration ------------------------------------------------------------------------

GPU_SOCK = PLUGIN_DIR + "/" + socket_name("nvidia.com/gpu")
DLA_SOCK = PLUGIN_DIR + "/" + socket_name("nvidia.com/dla")


def checkpoint(path, resources):
    write(path, PLUGIN_DIR + "/kubelet_internal_checkpoint", json.dumps(
        {"Data": {"PodDeviceEntries": None, "RegisteredDevices": {r: ["0"] for r in resources}},
         "Checksum": 1}))


def test_registered_pass(root):
    listen(root, GPU_SOCK)
    listen(root, DLA_SOCK)
    checkpoint(root[0], ["nvidia.com/gpu", "nvidia.com/dla"])
    r = cp.check_plugin_registered(ctx(root[0]))
    assert r.status == "PASS" and "registered in the kubelet's checkpoint" in r.detail


@pytest.mark.parametrize("socks, listed, words", [
    ((GPU_SOCK,), None, "no socket for nvidia.com/dla"),
    ((GPU_SOCK, DLA_SOCK, PLUGIN_DIR + "/nvidia-gpu.sock"), None, "NVIDIA's k8s-device-plugin"),
    ((GPU_SOCK, DLA_SOCK), ["nvidia.com/gpu"], "checkpoint lists no nvidia.com/dla"),
])
def test_registered_warn(root, socks, listed, words):
    for s in socks:
        listen(root, s)
    if listed is not None:
        checkpoint(root[0], listed)
    r = cp.check_plugin_registered(ctx(root[0]))
    assert r.status == "WARN" and words in r.detail and r.fix


@pytest.mark.parametrize("stale_socks, words", [
    ((), "no socket for nvidia.com/dla, nvidia.com/gpu"),
    ((GPU_SOCK,), "stale socket for nvidia.com/gpu"),
])
def test_registered_fail(root, stale_socks, words):
    for s in stale_socks:
        stale(root, s)
    r = cp.check_plugin_registered(ctx(root[0]))
    assert r.status == "FAIL" and words in r.detail and "systemctl start edgeagent" in r.fix


def test_registered_skip_without_hardware():
    bare = make_root(demo=False)
    try:
        assert cp.check_plugin_registered(ctx(bare)).status == "SKIP"
    finally:
        shutil.rmtree(bare)


# --- container runtime -----------------------------------------------------------------------

DAEMON = "/etc/docker/daemon.json"


@pytest.mark.parametrize("files, status, words", [
    ({DAEMON: '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}, '
              '"default-runtime": "nvidia"}'}, "PASS", "default-runtime is 'nvidia'"),
    ({DAEMON: '{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}'}, "WARN",
     "the default is 'runc'"),
    ({DAEMON: '{"log-driver": "journald"}'}, "WARN", "registers no NVIDIA runtime"),
    ({DAEMON: '{"log-driver": "journald"}', "/etc/cdi/nvidia.yaml": NVIDIA_CTK_YAML}, "PASS",
     "not needed with a CDI spec"),
    ({DAEMON: '{"runtimes": '}, "FAIL", "invalid JSON"),
    ({}, "SKIP", "not present"),
])
def test_docker_runtime(root, files, status, words):
    for p, text in files.items():
        write(root[0], p, text)
    r = cp.check_docker_runtime(ctx(root[0]))
    assert r.status == status and words in r.detail
    assert bool(r.fix) == (status in ("WARN", "FAIL"))


K3S_PATH = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"


@pytest.mark.parametrize("files, statuses, words", [
    ({"/etc/containerd/config.toml": CONTAINERD_V2}, ["PASS"], "is NVIDIA's"),
    ({K3S_PATH: K3S}, ["WARN"], "runtimeClassName: nvidia"),
    ({"/etc/containerd/config.toml": "version = 2\n"}, ["WARN"], "no NVIDIA runtime"),
    ({"/etc/containerd/config.toml": "[plugins\n", K3S_PATH: K3S}, ["FAIL", "WARN"],
     "invalid TOML"),
    ({}, ["SKIP"], "no containerd"),
])
def test_containerd_runtime(root, files, statuses, words):
    for p, text in files.items():
        write(root[0], p, text)
    results = cp.check_containerd_runtime(ctx(root[0]))
    assert [r.status for r in results] == statuses
    assert words in results[0].detail


@pytest.mark.parametrize("files, overrides, status, words", [
    ({"/etc/cdi/nvidia.yaml": NVIDIA_CTK_YAML}, {}, "PASS", "nvidia.com/gpu=0, nvidia.com/gpu=all"),
    ({"/var/run/cdi/nvidia.json": '{"kind": "nvidia.com/gpu", "devices": [{"name": "GPU-1"}]}'},
     {}, "FAIL", "not 0 or all"),
    ({"/etc/cdi/nvidia.yaml": "kind: nvidia.com/gpu\n"}, {}, "FAIL", "no devices list"),
    ({"/etc/cdi/nvidia.yaml": NVIDIA_CTK_YAML, "/etc/cdi/old.yaml": "kind: x/y\n"}, {}, "WARN",
     "but /etc/cdi/old.yaml: no devices list"),
    ({"/etc/cdi/nvidia.yaml": NVIDIA_CTK_YAML, "/var/run/cdi/nvidia.yaml": NVIDIA_CTK_YAML}, {},
     "WARN", "2 specs define nvidia.com/gpu"),
    ({}, {"device_plugin.device_list_strategy": "cdi"}, "FAIL", "device_list_strategy is cdi"),
    ({}, {}, "SKIP", "does not need one"),
])
def test_cdi_spec(root, files, overrides, status, words):
    for p, text in files.items():
        write(root[0], p, text)
    r = cp.check_cdi_spec(ctx(root[0], **overrides))
    assert r.status == status and words in r.detail


@pytest.mark.parametrize("files, status, words", [
    ({CSV: "dev, /dev/nvhost-gpu\ndev, /dev/nvmap\nlib, /usr/lib/gone.so\n"}, "PASS",
     "2 device nodes"),
    ({CSV: "dev, /dev/nvhost-gpu\nnonsense\n"}, "WARN", "1 malformed lines"),
    ({CSV: "dev, /dev/not-here\n"}, "WARN", "no listed device node exists"),
    ({}, "FAIL", "the device-specs strategy cannot"),
    ({"/etc/cdi/nvidia.yaml": NVIDIA_CTK_YAML}, "SKIP", "not needed with CDI"),
])
def test_csv_files(root, files, status, words):
    for p, text in files.items():
        write(root[0], p, text)
    r = cp.check_csv_files(ctx(root[0]))
    assert r.status == status and words in r.detail


@pytest.mark.parametrize("files, strategy, status, words", [
    ({}, "auto", "PASS", "device-specs: no CDI spec"),
    ({"/etc/cdi/nvidia.yaml": NVIDIA_CTK_YAML}, "auto", "PASS", "cdi: a CDI spec"),
    ({}, "envvar", "WARN", "no NVIDIA runtime"),
    ({}, "cdi", "FAIL", "every GPU Allocate fails"),
])
def test_strategy(root, files, strategy, status, words):
    for p, text in files.items():
        write(root[0], p, text)
    r = cp.check_strategy(ctx(root[0], **{"device_plugin.device_list_strategy": strategy}))
    assert r.status == status and words in r.detail


def test_runtime_checks_skip_without_a_gpu():
    bare = make_root(demo=False)
    try:
        c = ctx(bare)
        for check in (cp.check_docker_runtime, cp.check_containerd_runtime, cp.check_cdi_spec,
                      cp.check_csv_files, cp.check_strategy):
            assert one(check(c)).status == "SKIP"
    finally:
        shutil.rmtree(bare)



def test_an_oversized_or_broken_checkpoint_is_unknown_not_a_crash(root):
    listen(root, GPU_SOCK)
    listen(root, DLA_SOCK)
    # larger than any kubelet writes: not read whole, not parsed
    write(root[0], PLUGIN_DIR + "/kubelet_internal_checkpoint",
          '{"Data": {"RegisteredDevices": {"nvidia.com/gpu": ["0"]}}, "x": "%s"}'
          % ("y" * (cp.MAX_CHECKPOINT_BYTES + 1)))
    r = cp.check_plugin_registered(ctx(root[0]))
    assert r.status == "PASS" and "checkpoint" not in r.detail
    write(root[0], PLUGIN_DIR + "/kubelet_internal_checkpoint", "[" * 100000)
    r = cp.check_plugin_registered(ctx(root[0]))
    assert r.status == "PASS" and "checkpoint" not in r.detail


def test_dra_mode_leaves_the_gpu_and_dla_to_dra(root):
    # No socket for either: in dra mode the plugin must not serve them, so nothing is missing.
    c = ctx(root[0], gpu_mode="dra")
    r = cp.check_plugin_registered(c)
    assert r.status == "SKIP" and "DRA's" in r.detail
    r = cp.check_strategy(c)
    assert r.status == "SKIP" and "gpu_mode = dra" in r.detail
    r = cp.check_csv_files(c)
    assert r.status == "FAIL" and "agent's CDI specs" in r.detail and "nvidia-container" in r.fix
