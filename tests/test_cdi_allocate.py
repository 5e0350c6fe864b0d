"""The device plugin with the agent's own CDI specs: which strategy ``auto`` picks, and what the
cdi strategy answers for the GPU and the NVDLA engines (pure tables)."""

import pytest

from edgeagent.deviceplugin.allocate import (AllocationError, ContainerPlan, DevicePlan,
                                             Strategy, choose_strategy, plan_units)
from edgeagent.deviceplugin.model import Resource, Unit
from edgeagent.discovery.runtimefacts import CdiSpec, RuntimeConfig, RuntimeFacts

OWN_GPU = CdiSpec("/var/run/cdi/edgeagent-gpu.json", "edgeagent.io/gpu", "0.5.0", ("0", "all"))
OWN_DLA = CdiSpec("/var/run/cdi/edgeagent-dla.json", "edgeagent.io/dla", "0.5.0",
                  ("0", "1", "all"))
NVIDIA = CdiSpec("/etc/cdi/nvidia.yaml", "nvidia.com/gpu", "0.5.0", ("0", "all"))
CONTAINERD_17_CDI = RuntimeConfig("containerd", "/etc/containerd/config.toml", (), "runc",
                                  version=2, enable_cdi=True)
CONTAINERD_17_OFF = RuntimeConfig("containerd", "/etc/containerd/config.toml", (), "runc",
                                  version=2, enable_cdi=None)
CONTAINERD_2 = RuntimeConfig("containerd", "/etc/containerd/config.toml", (), "runc", version=3)
CONTAINERD_2_OFF = RuntimeConfig("containerd", "/etc/containerd/config.toml", (), "runc",
                                 version=3, enable_cdi=False)
CRIO = RuntimeConfig("cri-o", "/etc/crio/crio.conf", (), "crun")
K3S_NVIDIA = RuntimeConfig("k3s", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
                           ("nvidia",), "nvidia", version=3)
DOCKER = RuntimeConfig("docker", "/etc/docker/daemon.json", (), None)
CDI = Strategy("cdi", "")


def gpu():
    return Resource("nvidia.com/gpu", "gpu", (Unit("0", ("/dev/nvhost-ctrl-gpu",), True),),
                    gpu=True)


def dla():
    return Resource("nvidia.com/dla", "nvdla", (
        Unit("nvdla0", ("/dev/nvhost-ctrl-nvdla0", "/dev/nvmap"), True),
        Unit("nvdla1", ("/dev/nvhost-ctrl-nvdla1", "/dev/nvmap"), True)))


@pytest.mark.parametrize("facts, name, words", [
    # the agent's spec replaces only device-specs, and only where the runtime reads CDI
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(CONTAINERD_17_CDI,)), "cdi",
     "containerd has CDI on (/etc/containerd/config.toml) and the agent's own spec "
     "/var/run/cdi/edgeagent-gpu.json exists"),
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(CONTAINERD_2,)), "cdi", "has CDI on"),
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(CRIO,)), "cdi", "cri-o has CDI on"),
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(CONTAINERD_17_OFF,)), "device-specs", ""),
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(CONTAINERD_2_OFF,)), "device-specs", ""),
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(DOCKER,)), "device-specs", ""),
    (RuntimeFacts(runtimes=(CONTAINERD_2,)), "device-specs", ""),
    # working setups are never switched by the agent's spec appearing
    (RuntimeFacts(own_specs=(OWN_GPU,), runtimes=(K3S_NVIDIA,)), "envvar", "k3s makes"),
    (RuntimeFacts(own_specs=(OWN_GPU,), cdi_specs=(NVIDIA,), runtimes=(CONTAINERD_2,)), "cdi",
     "a CDI spec for nvidia.com/gpu exists (/etc/cdi/nvidia.yaml)"),
])
def test_auto(facts, name, words):
    s = choose_strategy("auto", facts)
    assert s.name == name and words in s.why, s


def test_cdi_uses_the_agents_spec_when_nvidia_ctk_made_none():
    plan = plan_units(gpu(), ["0"], CDI, RuntimeFacts(own_specs=(OWN_GPU,)))
    assert plan == ContainerPlan(
        envs={"NVIDIA_VISIBLE_DEVICES": "void"},
        annotations={"cdi.k8s.io/edgeagent_nvidia.com_gpu": "edgeagent.io/gpu=0"},
        cdi_devices=("edgeagent.io/gpu=0",))


def test_cdi_prefers_nvidia_ctks_spec_an_operator_made():
    plan = plan_units(gpu(), ["0"], CDI, RuntimeFacts(cdi_specs=(NVIDIA,),
                                                      own_specs=(OWN_GPU,)))
    assert plan.cdi_devices == ("nvidia.com/gpu=0",)


def test_cdi_without_any_spec_says_what_to_do():
    with pytest.raises(AllocationError) as e:
        plan_units(gpu(), ["0"], CDI, RuntimeFacts())
    assert e.value.code == "FAILED_PRECONDITION"
    assert "/var/run/cdi/edgeagent-gpu.json is not written yet" in str(e.value)
    assert "edgeagent doctor" in str(e.value)


def test_dla_engines_under_cdi():
    facts = RuntimeFacts(own_specs=(OWN_GPU, OWN_DLA))
    plan = plan_units(dla(), ["nvdla1", "nvdla0"], CDI, facts)
    assert plan.cdi_devices == ("edgeagent.io/dla=0", "edgeagent.io/dla=1")
    assert plan.annotations == {
        "cdi.k8s.io/edgeagent_nvidia.com_dla": "edgeagent.io/dla=0,edgeagent.io/dla=1"}
    assert plan.devices == ()


def test_dla_falls_back_to_its_nodes_without_a_spec_or_outside_cdi():
    nodes = (DevicePlan("/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-ctrl-nvdla0"),
             DevicePlan("/dev/nvmap", "/dev/nvmap"))
    only_engine_1 = CdiSpec(OWN_DLA.path, OWN_DLA.kind, "0.5.0", ("1", "all"))
    for strategy, facts in ((CDI, RuntimeFacts()),
                            (CDI, RuntimeFacts(own_specs=(only_engine_1,))),
                            (Strategy("envvar", ""), RuntimeFacts(own_specs=(OWN_DLA,))),
                            (Strategy("device-specs", ""), RuntimeFacts(own_specs=(OWN_DLA,)))):
        plan = plan_units(dla(), ["nvdla0"], strategy, facts)
        assert plan == ContainerPlan(devices=nodes), (strategy, facts)
