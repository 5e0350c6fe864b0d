"""Pure tables for Allocate and GetPreferredAllocation decisions, plus a property test."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.deviceplugin.allocate import (AllocationError, ContainerPlan, DevicePlan,
                                             MountPlan, Strategy, choose_strategy,
                                             plan_allocate, plan_container,
                                             preferred_allocation)
from edgeagent.deviceplugin.model import Resource, Unit
from edgeagent.discovery.runtimefacts import CdiSpec, RuntimeConfig, RuntimeFacts

GPU_NODES = ("/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap")


def gpu(replicas=1, healthy=True, limit=0, name="nvidia.com/gpu"):
    return Resource(name, "gpu", (Unit("0", GPU_NODES, healthy, "" if healthy else "broken"),),
                    replicas=replicas, max_per_container=limit, gpu=True)


SPEC = CdiSpec("/etc/cdi/nvidia.yaml", "nvidia.com/gpu", "0.5.0", ("0", "all"))
SPEC_ALL = CdiSpec("/var/run/cdi/nvidia.yaml", "nvidia.com/gpu", "0.5.0", ("all",))
SPEC_UUID = CdiSpec("/etc/cdi/x.json", "nvidia.com/gpu", "0.6.0", ("GPU-1234",))
DOCKER_DEFAULT = RuntimeConfig("docker", "/etc/docker/daemon.json", ("nvidia",), "nvidia")
K3S_CLASS = RuntimeConfig("k3s", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
                          ("nvidia", "nvidia-experimental"), None)
CSV = dict(csv_files=("/etc/nvidia-container-runtime/host-files-for-container.d/l4t.csv",),
           csv_devices=("/dev/nvhost-ctrl-gpu", "/dev/nvmap", "/dev/nvhost-vic"),
           csv_mounts=("/usr/lib/libcuda.so.1.1", "/usr/lib/aarch64-linux-gnu/tegra"))


@pytest.mark.parametrize("configured, facts, name, words", [
    ("auto", RuntimeFacts(cdi_specs=(SPEC,), runtimes=(DOCKER_DEFAULT,)), "cdi",
     "CDI spec for nvidia.com/gpu exists (/etc/cdi/nvidia.yaml)"),
    ("auto", RuntimeFacts(cdi_specs=(SPEC_UUID,), runtimes=(DOCKER_DEFAULT,)), "envvar",
     "docker makes the NVIDIA runtime the default"),
    ("auto", RuntimeFacts(runtimes=(K3S_CLASS,)), "envvar", "runtimeClassName: nvidia"),
    ("auto", RuntimeFacts(runtimes=(K3S_CLASS, DOCKER_DEFAULT)), "envvar", "docker makes"),
    ("auto", RuntimeFacts(**CSV), "device-specs", "no NVIDIA runtime configured"),
    ("envvar", RuntimeFacts(), "envvar", "in the config"),
    ("cdi", RuntimeFacts(), "cdi", "in the config"),
    ("device-specs", RuntimeFacts(cdi_specs=(SPEC,)), "device-specs", "in the config"),
])
def test_choose_strategy(configured, facts, name, words):
    s = choose_strategy(configured, facts)
    assert s.name == name and words in s.why


ENVVAR = Strategy("envvar", "")
CDI = Strategy("cdi", "")
SPECS = Strategy("device-specs", "")


@pytest.mark.parametrize("resource, ids, strategy, facts, expect", [
    (gpu(), ["0"], ENVVAR, RuntimeFacts(),
     ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "all"})),
    (gpu(replicas=4), ["0::3"], ENVVAR, RuntimeFacts(),
     ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "all"})),
    (gpu(), ["0"], CDI, RuntimeFacts(cdi_specs=(SPEC,)),
     ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "void"},
                   annotations={"cdi.k8s.io/edgeagent_nvidia.com_gpu": "nvidia.com/gpu=0"},
                   cdi_devices=("nvidia.com/gpu=0",))),
    (gpu(replicas=2, name="nvidia.com/gpu.shared"), ["0::2"], CDI,
     RuntimeFacts(cdi_specs=(SPEC_ALL,)),
     ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "void"},
                   annotations={"cdi.k8s.io/edgeagent_nvidia.com_gpu.shared":
                                "nvidia.com/gpu=all"},
                   cdi_devices=("nvidia.com/gpu=all",))),
    (gpu(), ["0"], SPECS, RuntimeFacts(**CSV),
     ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "void"},
                   mounts=(MountPlan("/usr/lib/libcuda.so.1.1", "/usr/lib/libcuda.so.1.1"),
                           MountPlan("/usr/lib/aarch64-linux-gnu/tegra",
                                     "/usr/lib/aarch64-linux-gnu/tegra")),
                   devices=tuple(DevicePlan(p, p) for p in (
                       "/dev/nvhost-ctrl-gpu", "/dev/nvmap", "/dev/nvhost-vic",
                       "/dev/nvhost-gpu")))),
    (gpu(), ["0"], SPECS, RuntimeFacts(),
     ContainerPlan(envs={"NVIDIA_VISIBLE_DEVICES": "void"},
                   devices=tuple(DevicePlan(p, p) for p in GPU_NODES))),
    (Resource("nvidia.com/dla", "nvdla", (Unit("nvdla0", ("/dev/nvhost-nvdla0", "/dev/nvmap"),
                                               True),
                                          Unit("nvdla1", ("/dev/nvhost-nvdla1", "/dev/nvmap"),
                                               True))),
     ["nvdla1", "nvdla0"], CDI, RuntimeFacts(cdi_specs=(SPEC,)),
     ContainerPlan(devices=(DevicePlan("/dev/nvhost-nvdla1", "/dev/nvhost-nvdla1"),
                            DevicePlan("/dev/nvmap", "/dev/nvmap"),
                            DevicePlan("/dev/nvhost-nvdla0", "/dev/nvhost-nvdla0")))),
])
def test_plan_container(resource, ids, strategy, facts, expect):
    assert plan_container(resource, ids, strategy, facts) == expect


@pytest.mark.parametrize("resource, requests, strategy, facts, code, words", [
    (gpu(), [["1"]], ENVVAR, RuntimeFacts(), "INVALID_ARGUMENT",
     "unknown device '1' (this node advertises 0)"),
    (gpu(replicas=12), [["0::13"]], ENVVAR, RuntimeFacts(), "INVALID_ARGUMENT",
     "0::1, 0::2, 0::3, 0::4, 0::5, ... 0::12 (12 devices)"),
    (gpu(), [[]], ENVVAR, RuntimeFacts(), "INVALID_ARGUMENT", "empty device list"),
    (gpu(), [], ENVVAR, RuntimeFacts(), "INVALID_ARGUMENT", "without container requests"),
    (gpu(replicas=2), [["0::1", "0::1"]], ENVVAR, RuntimeFacts(), "INVALID_ARGUMENT",
     "requested twice"),
    (gpu(replicas=4, limit=1), [["0::1"], ["0::2", "0::3"]], ENVVAR, RuntimeFacts(),
     "INVALID_ARGUMENT", "may ask for at most 1; request nvidia.com/gpu: 1"),
    (gpu(healthy=False), [["0"]], ENVVAR, RuntimeFacts(), "FAILED_PRECONDITION",
     "is Unhealthy (broken)"),
    (gpu(), [["0"]], CDI, RuntimeFacts(), "FAILED_PRECONDITION",
     "nvidia-ctk cdi generate --mode=csv"),
    (gpu(), [["0"]], CDI, RuntimeFacts(cdi_specs=(SPEC_UUID,)), "FAILED_PRECONDITION",
     "naming device 0 or all"),
])
def test_refusals_say_what_to_do(resource, requests, strategy, facts, code, words):
    with pytest.raises(AllocationError) as e:
        plan_allocate(resource, requests, strategy, facts)
    assert e.value.code == code
    assert words in str(e.value)


def test_a_multi_gpu_request_names_indices_when_not_all():
    res = Resource("nvidia.com/gpu", "gpu", (Unit("0", ("/dev/nvidia0",), True),
                                             Unit("1", ("/dev/nvidia1",), True)), gpu=True)
    assert plan_container(res, ["1"], ENVVAR, RuntimeFacts()).envs == {
        "NVIDIA_VISIBLE_DEVICES": "1"}
    assert plan_container(res, ["1", "0"], ENVVAR, RuntimeFacts()).envs == {
        "NVIDIA_VISIBLE_DEVICES": "all"}
    spec = CdiSpec("/etc/cdi/n.yaml", "nvidia.com/gpu", None, ("0", "1", "all"))
    assert plan_container(res, ["1", "0"], CDI, RuntimeFacts(cdi_specs=(spec,))).cdi_devices \
        == ("nvidia.com/gpu=0", "nvidia.com/gpu=1")


def two_tpus(per=2, healthy=(True, True)):
    return Resource("google.com/edgetpu", "edgetpu",
                    (Unit("apex_0", ("/dev/apex_0",), healthy[0]),
                     Unit("apex_1", ("/dev/apex_1",), healthy[1])), replicas=per)


@pytest.mark.parametrize("resource, available, must, size, expect", [
    (gpu(replicas=4), ["0::4", "0::2", "0::3"], [], 1, ["0::2"]),
    (gpu(replicas=4), ["0::4", "0::2", "0::3"], ["0::4"], 2, ["0::4", "0::2"]),
    (gpu(replicas=4), ["0::1"], [], 3, ["0::1"]),                    # not enough: all we have
    (two_tpus(), ["apex_0::1", "apex_0::2", "apex_1::1", "apex_1::2"], [], 2,
     ["apex_0::1", "apex_1::1"]),                                     # spread over hardware
    (two_tpus(), ["apex_0::2", "apex_1::1", "apex_1::2"], [], 1, ["apex_1::1"]),  # least used
    (two_tpus(), ["apex_0::1", "apex_0::2", "apex_1::1", "apex_1::2"], ["apex_1::2"], 2,
     ["apex_1::2", "apex_0::1"]),
    (two_tpus(healthy=(True, False)), ["apex_0::1", "apex_1::1", "apex_1::2"], [], 2,
     ["apex_0::1"]),                                                  # never an Unhealthy one
    (two_tpus(), ["nope", "apex_0::1"], [], 2, ["apex_0::1"]),
])
def test_preferred_allocation(resource, available, must, size, expect):
    assert preferred_allocation(resource, available, must, size) == expect


@settings(max_examples=60, deadline=None)
@given(units=st.integers(1, 4), replicas=st.integers(1, 4), data=st.data())
def test_preferred_allocation_properties(units, replicas, data):
    res = Resource("example.com/x", "config",
                   tuple(Unit("u%d" % i, ("/dev/u%d" % i,), True) for i in range(units)),
                   replicas=replicas)
    all_ids = [d.id for d in res.devices]
    available = data.draw(st.lists(st.sampled_from(all_ids), unique=True))
    must = data.draw(st.lists(st.sampled_from(available), unique=True)) if available else []
    size = data.draw(st.integers(len(must), len(all_ids) + 1))
    got = preferred_allocation(res, available, must, size)
    assert got[:len(must)] == must
    assert len(got) == len(set(got)) == min(size, len(available))
    assert set(got) <= set(available)
    # spread: no unit gets a second device while another available unit has none chosen
    chosen_units = [res.device_map()[d].unit for d in got[len(must):]]
    counts = {}
    for d in must:
        counts[res.device_map()[d].unit] = counts.get(res.device_map()[d].unit, 0) + 1
    for u in chosen_units:
        counts[u] = counts.get(u, 0) + 1
    free_units = {res.device_map()[d].unit for d in available if d not in got}
    if chosen_units:
        top = max(counts[u] for u in chosen_units)
        assert all(counts.get(u, 0) >= top - 1 for u in free_units)
