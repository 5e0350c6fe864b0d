"""Pure: the node's DRA devices from the inventory and the device plugin's health, with the
attributes of the contract (prompts' contract-attrs; README)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.config import DevicePluginOptions, SharingOptions
from edgeagent.deviceplugin.model import Resource, Unit, build_resources, scan_plan
from edgeagent.discovery.inventory import Gpu, Inventory
from edgeagent.discovery.scan import discover, probe_host
from edgeagent.dra.devices import build_devices, dla_engine, semver
from edgeagent.dra.model import Attribute
from edgeagent.hostpaths import HostRoot
from edgeagent.labels.compute import nvidia_gpu_labels
from tests.costbound import bounded
from tests.peers.hosts import BOARDS, make_host

ORIN_GPU = Gpu("/bus@0/gpu@17000000", ("nvidia,ga10b",), "okay", "nvidia", "ampere", "8.7",
               ("/dev/nvgpu/igpu0/ctrl",))
ORIN = Inventory("NVIDIA Jetson Orin Nano Developer Kit", (), "tegra234", True, "36.4.3", "6.2",
                 7620 * 1024 * 1024, ORIN_GPU, (), "/sys/firmware/fdt")


def gpu_resource(healthy=True, reason=""):
    return Resource("nvidia.com/gpu", "gpu", (Unit("0", ("/dev/nvgpu/igpu0/ctrl",), healthy,
                                                    reason),), gpu=True)


def dla_resource(*units):
    return Resource("nvidia.com/dla", "nvdla", tuple(units))


def test_orin_gpu_and_dlas_carry_the_contract_attributes():
    devices = build_devices(ORIN, {
        "nvidia.com/dla": dla_resource(Unit("nvdla1", ("/dev/nvhost-nvdla1",), True),
                                       Unit("nvdla0", ("/dev/nvhost-nvdla0",), False, "gone")),
        "nvidia.com/gpu": gpu_resource()}, "consumable")
    assert [d.name for d in devices] == ["gpu-0", "dla-0", "dla-1"]
    gpu, dla0, dla1 = devices
    assert dict(gpu.attributes) == {
        "type": Attribute("string", "gpu"),
        "productName": Attribute("string", "Orin"),
        "architecture": Attribute("string", "Ampere"),
        "computeCapability": Attribute("version", "8.7.0"),
        "soc": Attribute("string", "tegra234"),
        "board": Attribute("string", "NVIDIA Jetson Orin Nano Developer Kit"),
        "l4tVersion": Attribute("version", "36.4.3"),
        "jetpackVersion": Attribute("version", "6.2.0"),
        "unifiedMemory": Attribute("bool", True)}
    # The same product the nvidia.com/gpu.product label names.
    assert gpu.attributes["productName"].value == \
        nvidia_gpu_labels(ORIN)["nvidia.com/gpu.product"]
    assert dict(gpu.capacity) == {"memory": "7620Mi"}
    assert gpu.shareable and gpu.healthy and gpu.cdi_ids == ("edgeagent.io/gpu=0",)
    assert dla0.attributes["dlaEngine"] == Attribute("int", 0)
    assert dla0.attributes["productName"] == Attribute("string", "NVDLA")
    assert dla0.attributes["type"] == Attribute("string", "dla")
    assert "computeCapability" not in dla0.attributes
    assert not dla0.healthy and dla0.reason == "gone"
    assert dla1.healthy and dla1.cdi_ids == ("edgeagent.io/dla=1",)
    assert dla0.capacity == {} and not dla0.shareable


def test_unknown_facts_are_left_out_never_empty():
    bare = Inventory(None, (), None, False, None, None, None,
                     Gpu("/gpu", ("nvidia,unknown",), "okay", "nvidia", None, None), (), None)
    (gpu,) = build_devices(bare, {"g": gpu_resource()}, "consumable")
    assert dict(gpu.attributes) == {"type": Attribute("string", "gpu")}
    assert gpu.capacity == {} and not gpu.shareable     # nothing to consume without memory
    (gpu,) = build_devices(None, {"g": gpu_resource(False, "")}, "exclusive")
    assert not gpu.healthy and gpu.reason == "unhealthy"


def test_exclusive_sharing_and_no_devices():
    (gpu,) = build_devices(ORIN, {"g": gpu_resource()}, "exclusive")
    assert not gpu.shareable
    assert build_devices(ORIN, {}, "consumable") == ()
    other = Resource("google.com/edgetpu", "edgetpu", (Unit("apex_0", ("/dev/apex_0",), True),))
    assert build_devices(ORIN, {"t": other}, "consumable") == ()


@pytest.mark.parametrize("text,expect", [
    ("36.4.3", "36.4.3"), ("6.2", "6.2.0"), ("6", "6.0.0"), ("5.0 DP", "5.0.0-dp"),
    ("4.4 DP", "4.4.0-dp"), ("36.04.0", "36.4.0"), ("8.7", "8.7.0"), ("11.0", "11.0.0"),
    ("", None), (None, None), ("r36", None), ("1.2.3.4", None), ("١٢", None), ("1" * 10, None),
])
def test_semver(text, expect):
    assert semver(text) == expect


@pytest.mark.parametrize("unit,engine", [("nvdla0", 0), ("nvdla12", 12), ("3", 3),
                                         ("nvdla", None), ("dla0", None), ("nvdla-1", None)])
def test_dla_engine(unit, engine):
    assert dla_engine(unit) == engine


def test_from_a_fake_agx_xavier_host(tmp_path):
    """The whole way from a host (a real DTB, /dev nodes, L4T release) to the devices."""
    board = BOARDS["agx-xavier"]
    root = make_host(str(tmp_path), board.dtb, release=board.nv_tegra_release,
                     meminfo="MemTotal:       %d kB\n" % board.mem_total_kb,
                     dev=board.gpu_nodes + board.other_nodes)
    host = HostRoot(root)
    inventory = discover(host)
    options = DevicePluginOptions("/var/lib/kubelet/device-plugins", "auto", 2.0, True, (),
                                  SharingOptions(1, False, False))
    resources = build_resources(inventory, probe_host(host, scan_plan(inventory, options, {})),
                                options)
    devices = build_devices(inventory, resources, "consumable")
    assert [d.name for d in devices] == ["gpu-0", "dla-0", "dla-1"]
    gpu = devices[0]
    assert gpu.attributes["architecture"].value == "Volta"
    assert gpu.attributes["computeCapability"].value == "7.2.0"
    assert gpu.attributes["l4tVersion"].value == "35.4.1"
    assert gpu.attributes["jetpackVersion"].value == "5.1.2"
    assert gpu.capacity["memory"] == "%dMi" % (board.mem_total_kb // 1024)
    assert all(d.healthy for d in devices)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_semver_is_total_and_cheap(text):
    out = bounded(lambda: semver(text), 0.05, 1 << 20)
    assert out is None or (len(out) <= 40 and out.count(".") == 2)


def test_a_long_board_model_is_cut_to_64_bytes_not_characters():
    import dataclasses

    model = "Jetson Ørin " + "é" * 60            # 72 characters, 133 bytes
    inv = dataclasses.replace(ORIN, board_model=model)
    (gpu,) = build_devices(inv, {"nvidia.com/gpu": gpu_resource()}, "consumable")
    board = gpu.attributes["board"].value
    assert len(board.encode("utf-8")) <= 64 and model.startswith(board)
