"""Pure tables for Allocate and GetPreferredAllocation decisions, plus a property test."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.deviceplugin.allocate import (AllocationError, ContainerPlan, DevicePlan,
                                             MountPlan, Strategy, choose_strategy, plan_units,
                                             preferred_allocation, validate_allocate,
                                             validate_request)
from edgeagent.deviceplugin.model import Resource, Unit, natural_key
from edgeagent.discovery.runtimefacts import CdiSpec, RuntimeConfig, RuntimeFacts

GPU_NODES = ("/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap")


def plan_container(resource, ids, strategy, facts):
    return plan_units(resource, validate_request(resource, ids), strategy, facts)


def plan_allocate(resource, requests, strategy, facts):
    """What the server answers: every container validated first, then planned."""
    return [plan_units(resource, list(units), strategy, facts)
            for units in validate_allocate(resource, requests)]


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


def spread_by_scanning(resource, available, must_include, size):
    """The rule as first written (best of all candidates for every slot, quadratic): the
    oracle for the heap-based preferred_allocation."""
    devices = resource.device_map()
    chosen = []
    for d in must_include:
        if d not in chosen:
            chosen.append(d)
    if size <= len(chosen):
        return chosen
    candidates = [d for d in dict.fromkeys(available)
                  if d not in chosen and d in devices and devices[d].healthy]
    free, taken = {}, {}
    for d in candidates:
        free[devices[d].unit] = free.get(devices[d].unit, 0) + 1
    for d in chosen:
        if d in devices:
            taken[devices[d].unit] = taken.get(devices[d].unit, 0) + 1
    while len(chosen) < size and candidates:
        best = min(candidates, key=lambda d: (taken.get(devices[d].unit, 0),
                                              -free[devices[d].unit], natural_key(d)))
        candidates.remove(best)
        unit = devices[best].unit
        chosen.append(best)
        taken[unit] = taken.get(unit, 0) + 1
        free[unit] -= 1
    return chosen


@settings(max_examples=150, deadline=None)
@given(units=st.integers(1, 5), replicas=st.integers(1, 6), healthy=st.lists(st.booleans(),
                                                                               min_size=5),
       data=st.data())
def test_preferred_allocation_follows_the_rule_as_first_written(units, replicas, healthy, data):
    res = Resource("example.com/x", "config",
                   tuple(Unit("u%d" % i, ("/dev/u%d" % i,), healthy[i]) for i in range(units)),
                   replicas=replicas)
    all_ids = [d.id for d in res.devices] + ["stranger", "u9::1"]
    available = data.draw(st.lists(st.sampled_from(all_ids)))       # repeats allowed
    must = data.draw(st.lists(st.sampled_from(all_ids), max_size=3))
    size = data.draw(st.integers(0, len(all_ids) + 1))
    assert (preferred_allocation(res, available, must, size)
            == spread_by_scanning(res, available, must, size))


class CountedId(str):
    """A device id whose comparisons and hashing run Python code, so a scan over a list of
    ids (``x in list``, ``list.remove``) shows up in a line count like any Python loop."""

    def __eq__(self, other):
        return str.__eq__(self, other)

    def __ne__(self, other):
        return str.__ne__(self, other)

    def __hash__(self):
        return str.__hash__(self)


def lines_run(fn, *args):
    """Python lines executed by ``fn(*args)``: a measure of work that does not depend on the
    machine's speed or load."""
    import sys

    count = [0]

    def tracer(frame, event, arg):
        if event == "line":
            count[0] += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return count[0]


@pytest.mark.parametrize("units", [1, 4])
def test_preferred_allocation_work_grows_linearly_with_replicas(units):
    """sharing.replicas = 1024 took 1.5-3 s per call and stalled the loop: the work for 1024
    replicas must be about 4x that for 256 (n log n: 4.4x at most here), not 16x."""
    def work(replicas):
        res = Resource("example.com/x", "config",
                       tuple(Unit("u%d" % i, ("/dev/u%d" % i,), True) for i in range(units)),
                       replicas=replicas // units)
        ids = [CountedId(d.id) for d in res.devices]
        must = ids[::97]
        got = []
        n = lines_run(lambda: got.extend(preferred_allocation(res, ids, must, len(ids))))
        assert sorted(got) == sorted(ids)
        return n

    small, large = work(256), work(1024)
    assert large < 5 * small, (small, large)
    assert large < 60 * 1024, large          # a few dozen lines per replica, not hundreds
    # the old rule on the same input does quadratic work: the measure can tell them apart
    res = Resource("example.com/x", "config", (Unit("u0", ("/dev/u0",), True),), replicas=256)
    ids = [CountedId(d.id) for d in res.devices]
    assert lines_run(spread_by_scanning, res, ids, [], 256) > 20 * work(256) / units


def test_validate_allocate():
    res = gpu(replicas=2)
    assert validate_allocate(res, [["0::2"], ["0::1", "0::2"]]) == [("0",), ("0",)]
    with pytest.raises(AllocationError, match="without container requests"):
        validate_allocate(res, [])
