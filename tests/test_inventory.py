"""The inventory: pure decisions from host facts, as tables; and discover() on fake hosts."""

import pytest

from edgeagent.discovery.devicetree import DeviceTree, DtNode
from edgeagent.discovery.fdt import parse_fdt
from edgeagent.discovery.inventory import (
    JETPACK_BY_L4T, NVIDIA_IGPUS, HostFacts, UsbNode, build_inventory, effective_status,
    jetpack_for, parse_l4t_release, parse_meminfo_total, soc_from_soc0)
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from tests.conftest import all_dtbs, dtb_path
from tests.fdtblob import build_fdt
from tests.peers.hosts import NV_TEGRA_RELEASE, make_host

NANO = "tegra210-p3450-0000.dtb"
TX2NX = "tegra186-p3509-0000+p3636-0001.dtb"
XAVIER = "tegra194-p2972-0000.dtb"
ORIN = "tegra234-p3768-0000+p3767-0005.dtb"
RPI4 = "bcm2711-rpi-4-b.dtb"


def tree_of(name):
    with open(dtb_path(name), "rb") as f:
        return parse_fdt(f.read(), name)


def inventory_of(name, **facts):
    return build_inventory(HostFacts(tree=tree_of(name), **facts))


# dtb -> soc, tegra, (gpu path, status, vendor, family, compute capability) | None, accelerators
REAL_BOARDS = {
    NANO: ("tegra210", True, ("/gpu@57000000", "okay", "nvidia", "maxwell", "5.3"),
           ["vic"]),
    TX2NX: ("tegra186", True, ("/gpu@17000000", "okay", "nvidia", "pascal", "6.2"),
            ["nvdec", "nvenc", "nvjpg", "vic"]),
    XAVIER: ("tegra194", True, ("/bus@0/gpu@17000000", "okay", "nvidia", "volta", "7.2"),
             ["nvdec", "nvdec", "nvenc", "nvenc", "nvjpg", "vic"]),
    ORIN: ("tegra234", True, None, ["vic"]),      # no GPU node; Orin Nano has no NVENC
    RPI4: ("bcm2711", False, ("/scb/gpu@7ec00000", "okay", "brcm", None, None), []),
    "imx8mq-phanbell.dtb": ("imx8mq", False,
                            ("/soc@0/gpu@38000000", "okay", "vivante", None, None), []),
    "rk3588-rock-5b.dtb": ("rk3588", False, ("/gpu@fb000000", "okay", "rockchip", None, None),
                           []),
    "meson-g12b-odroid-n2-plus.dtb": ("g12b", False,
                                      ("/soc/gpu@ffe40000", "okay", "amlogic", None, None), []),
    "k3-am625-beagleplay.dtb": ("am625", False,
                                ("/bus@f0000/gpu@fd00000", "okay", "ti", None, None), []),
}


def test_every_fixture_has_a_row():
    assert sorted(REAL_BOARDS) == all_dtbs()


@pytest.mark.parametrize("name", sorted(REAL_BOARDS))
def test_real_boards(name):
    soc, tegra, gpu, kinds = REAL_BOARDS[name]
    inv = inventory_of(name)
    assert (inv.soc, inv.is_tegra) == (soc, tegra)
    assert inv.board_model == tree_of(name).root.string("model")
    assert inv.board_compatible == tree_of(name).root.compatible
    if gpu is None:
        assert inv.gpu is None
    else:
        g = inv.gpu
        assert (g.path, g.status, g.vendor, g.family, g.compute_capability) == gpu
        assert g.usable and g.source == "devicetree"
        assert g.is_nvidia == (gpu[2] == "nvidia")
    assert [a.kind for a in inv.accelerators] == kinds
    for a in inv.accelerators:
        assert inv.tree.get(a.path).enabled and a.device is None
    assert (inv.l4t, inv.jetpack, inv.memory_bytes, inv.problems) == (None, None, None, ())


def test_igpu_table_matches_the_issue():
    assert {c: v[:2] for c, v in NVIDIA_IGPUS.items() if c != "nvidia,gk20a"} == {
        "nvidia,gm20b": ("maxwell", "5.3"), "nvidia,gp10b": ("pascal", "6.2"),
        "nvidia,gv11b": ("volta", "7.2"), "nvidia,ga10b": ("ampere", "8.7"),
        # NVIDIA's CUDA GPUs page: Jetson T5000/T4000 are compute capability 11.0
        "nvidia,gb10b": ("blackwell", "11.0")}


# --- status -------------------------------------------------------------------------------------

def with_props(node, path, **props):
    """A copy of the tree under ``node`` with properties of the node at ``path`` set."""
    new_props = dict(node.props)
    if node.path == path:
        new_props.update({k.replace("_", "-"): v for k, v in props.items()})
    children = tuple(with_props(c, path, **props) for c in node.children)
    return DtNode(node.name, node.path, new_props, children)


def reparse(root):
    return parse_fdt(build_fdt(root), "modified")


def test_disabled_gpu_node_is_not_usable():
    tree = reparse(with_props(tree_of(NANO).root, "/gpu@57000000", status=b"disabled\0"))
    inv = build_inventory(HostFacts(tree=tree))
    assert inv.gpu.path == "/gpu@57000000"
    assert inv.gpu.status == "disabled" and not inv.gpu.usable
    assert inv.to_json()["gpu"]["status"] == "disabled"


def test_ok_is_the_old_spelling_of_okay():
    tree = reparse(with_props(tree_of(NANO).root, "/gpu@57000000", status=b"ok\0"))
    assert build_inventory(HostFacts(tree=tree)).gpu.usable


def test_a_disabled_bus_disables_what_is_below_it():
    tree = reparse(with_props(tree_of(XAVIER).root, "/bus@0", status=b"disabled\0"))
    inv = build_inventory(HostFacts(tree=tree))
    assert inv.gpu.path == "/bus@0/gpu@17000000" and inv.gpu.status == "disabled"
    assert not inv.gpu.usable
    assert inv.accelerators == ()
    status = effective_status(tree)
    assert status["/"] == "okay" and status["/bus@0/host1x@13e00000/vic@15340000"] == "disabled"


def test_enabled_gpu_beats_a_disabled_one_of_the_same_rank():
    root = tree_of(RPI4).root
    tree = reparse(with_props(root, "/scb/gpu@7ec00000", status=b"disabled\0"))
    # the v3d 3D GPU is still the GPU (a display pipeline is no GPU), but not usable
    assert build_inventory(HostFacts(tree=tree)).gpu.path == "/scb/gpu@7ec00000"
    gpu_a = DtNode("gpu@1", "/gpu@1", {"compatible": b"arm,mali-bifrost\0",
                                        "status": b"disabled\0"}, ())
    gpu_b = DtNode("gpu@2", "/gpu@2", {"compatible": b"arm,mali-bifrost\0"}, ())
    board = DtNode("", "/", {"compatible": b"v,board\0v,soc\0"}, (gpu_a, gpu_b))
    assert build_inventory(HostFacts(tree=reparse(board))).gpu.path == "/gpu@2"


def test_disabled_accelerators_are_left_out():
    root = tree_of(TX2NX).root
    tree = reparse(with_props(root, "/host1x@13e00000/nvenc@154c0000", status=b"disabled\0"))
    assert [a.kind for a in build_inventory(HostFacts(tree=tree)).accelerators] == [
        "nvdec", "nvjpg", "vic"]


# --- L4T, JetPack, memory ------------------------------------------------------------------------

@pytest.mark.parametrize("text, l4t, jetpack", [
    (NV_TEGRA_RELEASE["R32.7.1"], "32.7.1", "4.6.1"),
    (NV_TEGRA_RELEASE["R35.4.1"], "35.4.1", "5.1.2"),
    (NV_TEGRA_RELEASE["R36.3.0"], "36.3.0", "6.0"),
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", "36.4.3",
     "6.2"),
    ("# R36 (release), REVISION: 4.4, GCID: 41062509, BOARD: generic", "36.4.4", "6.2.1"),
    ("# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic", "38.2.0", "7.0"),
    ("# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref", "32.4.4", "4.4.1"),
    ("# R28 (release), REVISION: 2.1, GCID: 11272647, BOARD: t186ref", "28.2.1", None),
    ("# R32 (release), REVISION: 7", "32.7.0", None),
    ("# R99 (release), REVISION: 9.9", "99.9.9", None),
    ("garbage\n", None, None),
    ("", None, None),
    (None, None, None),
])
def test_nv_tegra_release(text, l4t, jetpack):
    assert parse_l4t_release(text) == l4t
    assert jetpack_for(l4t) == jetpack
    inv = build_inventory(HostFacts(nv_tegra_release=text))
    assert (inv.l4t, inv.jetpack, inv.is_tegra) == (l4t, jetpack, l4t is not None)
    has_problem = bool(text) and l4t is None
    assert any("nv_tegra_release" in p for p in inv.problems) == has_problem


def test_jetpack_table_is_well_formed():
    import re
    for l4t, jetpack in JETPACK_BY_L4T.items():
        assert re.match(r"^\d+\.\d+\.\d+$", l4t), l4t
        assert re.match(r"^\d+\.\d+(\.\d+)?( DP)?$", jetpack), jetpack
        assert int(l4t.split(".")[0]) in (32, 34, 35, 36, 38)


@pytest.mark.parametrize("text, total", [
    ("MemTotal:        3956412 kB\nMemFree: 1 kB\n", 3956412 * 1024),
    ("MemFree:         1 kB\nMemTotal:       7765304 kB\n", 7765304 * 1024),
    ("MemFree: 1 kB\n", None),
    ("MemTotal: lots\n", None),
    ("", None),
    (None, None),
])
def test_meminfo(text, total):
    assert parse_meminfo_total(text) == total
    assert build_inventory(HostFacts(meminfo=text)).memory_bytes == total


# --- hosts without a GPU node, soc0 --------------------------------------------------------------

ORIN_DEV_NODES_JP6 = ["/dev/nvgpu/igpu0/ctrl", "/dev/nvgpu/igpu0/as", "/dev/nvhost-ctrl-gpu",
                      "/dev/nvhost-gpu", "/dev/nvmap"]


def test_orin_mainline_tree_with_l4t_and_dev_nodes_has_a_gpu(tmp_path):
    root = make_host(str(tmp_path), ORIN, release="R36.3.0", dev=ORIN_DEV_NODES_JP6)
    inv = discover(HostRoot(root))
    g = inv.gpu
    assert (g.compatible, g.family, g.compute_capability, g.status, g.source) == (
        ("nvidia,ga10b",), "ampere", "8.7", "okay", "soc")
    assert g.usable and g.is_nvidia
    assert set(g.device_nodes) == set(ORIN_DEV_NODES_JP6)
    assert g.path in g.device_nodes
    assert (inv.l4t, inv.jetpack) == ("36.3.0", "6.0")
    assert inv.to_json()["gpu"]["source"] == "soc"


def test_orin_without_gpu_dev_nodes_has_no_gpu(tmp_path):
    root = make_host(str(tmp_path), ORIN, release="R36.3.0", dev=["/dev/nvmap"][:0])
    assert discover(HostRoot(root)).gpu is None


def test_thor_with_openrm_nodes():
    root = DtNode("", "/", {"compatible": b"nvidia,p3971-0080+p3834-0008\0nvidia,tegra264\0",
                            "model": b"NVIDIA Jetson AGX Thor Developer Kit\0"}, ())
    tree = DeviceTree(root, "/proc/device-tree")
    inv = build_inventory(HostFacts(
        tree=tree, nv_tegra_release="# R38 (release), REVISION: 2.0, GCID: 1",
        dev_nodes=("/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl")))
    assert inv.soc == "tegra264" and inv.jetpack == "7.0"
    assert (inv.gpu.family, inv.gpu.compute_capability, inv.gpu.source) == (
        "blackwell", "11.0", "soc")
    assert inv.gpu.path == "/dev/nvidia-uvm" or inv.gpu.path == "/dev/nvidia0"
    assert set(inv.gpu.device_nodes) == {"/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"}


def test_non_tegra_host_with_nvidia_nodes_gets_no_soc_gpu():
    inv = inventory_of(RPI4, dev_nodes=("/dev/nvidia0",))
    assert inv.gpu.path == "/scb/gpu@7ec00000"
    assert inv.gpu.device_nodes == ()


@pytest.mark.parametrize("soc0, soc, tegra, model", [
    ({"family": "Tegra", "soc_id": "35", "machine": "NVIDIA Orin Nano Developer Kit"},
     "tegra234", True, "NVIDIA Orin Nano Developer Kit"),
    ({"family": "Tegra", "soc_id": "33"}, "tegra210", True, None),
    ({"family": "Tegra", "soc_id": "99"}, None, True, None),
    ({"family": "tegra"}, None, True, None),
    ({"family": "jep106:036b", "soc_id": "jep106:036b:0234"}, "tegra234", True, None),
    ({"family": "jep106:036b", "soc_id": "jep106:036b:0241"}, None, False, None),  # Grace
    ({"family": "jep106:0426", "soc_id": "jep106:0426:8186"}, None, False, None),
    ({"family": "Freescale i.MX", "soc_id": "i.MX8MQ", "machine": "Board"}, None, False,
     "Board"),
])
def test_soc0_fallbacks_without_a_tree(tmp_path, soc0, soc, tegra, model):
    root = make_host(str(tmp_path), soc0=soc0)
    inv = discover(HostRoot(root))
    assert (inv.soc, inv.is_tegra, inv.board_model) == (soc, tegra, model)
    assert not inv.has_devicetree


def test_soc0_does_not_override_the_tree():
    inv = inventory_of(NANO, soc0_soc_id="35\n", soc0_machine="Other\n")
    assert (inv.soc, inv.board_model) == ("tegra210", "NVIDIA Jetson Nano Developer Kit")
    assert soc_from_soc0(" JEP106:036B:0234\n") == "tegra234"


def test_orin_from_soc0_and_dev_nodes_without_any_tree(tmp_path):
    root = make_host(str(tmp_path), soc0={"family": "Tegra", "soc_id": "35"},
                     dev=ORIN_DEV_NODES_JP6)
    inv = discover(HostRoot(root))
    assert inv.gpu.family == "ampere" and inv.gpu.source == "soc"


# --- accelerators --------------------------------------------------------------------------------

def test_coral_pcie_and_usb(tmp_path):
    root = make_host(str(tmp_path), RPI4, dev=["/dev/apex_0", "/dev/apex_1"],
                     usb=[("1a6e", "089a"), ("18d1", "9302"), ("046d", "c52b")])
    inv = discover(HostRoot(root))
    tpus = [(a.path, a.device) for a in inv.accelerators if a.kind == "edgetpu"]
    assert tpus == [("/dev/apex_0", "/dev/apex_0"), ("/dev/apex_1", "/dev/apex_1"),
                    ("/sys/bus/usb/devices/2-1", None), ("/sys/bus/usb/devices/2-2", None)]
    assert inv.accelerator_count("edgetpu") == 4
    assert [a.kind for a in inv.accelerators] == ["edgetpu"] * 4


def test_usb_ids_are_read_case_insensitively():
    inv = build_inventory(HostFacts(usb=(UsbNode("1-1", "1a6e", "089a"),)))
    assert inv.accelerators[0].kind == "edgetpu"
    assert inv.accelerators[0].path == "/sys/bus/usb/devices/1-1"


def test_nvdla_from_dev_nodes_when_the_tree_has_none(tmp_path):
    root = make_host(str(tmp_path), XAVIER, release="R35.4.1",
                     dev=["/dev/nvhost-nvdla0", "/dev/nvhost-nvdla1", "/dev/nvhost-ctrl-nvdla0",
                          "/dev/nvhost-ctrl-nvdla1"])
    inv = discover(HostRoot(root))
    nvdla = [(a.path, a.device) for a in inv.accelerators if a.kind == "nvdla"]
    assert nvdla == [("/dev/nvhost-nvdla0", "/dev/nvhost-nvdla0"),
                     ("/dev/nvhost-nvdla1", "/dev/nvhost-nvdla1")]


def test_nvdla_engines_of_jetpack_6_have_only_ctrl_nodes(tmp_path):
    # r36's devices.csv lists /dev/nvhost-ctrl-nvdla<N> only: still one engine each, as the
    # device plugin's profile counts them (one table of device nodes for both).
    root = make_host(str(tmp_path), ORIN, release="R36.3.0",
                     dev=["/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-ctrl-nvdla1"])
    inv = discover(HostRoot(root))
    nvdla = [(a.path, a.device) for a in inv.accelerators if a.kind == "nvdla"]
    assert nvdla == [("/dev/nvhost-ctrl-nvdla0", "/dev/nvhost-ctrl-nvdla0"),
                     ("/dev/nvhost-ctrl-nvdla1", "/dev/nvhost-ctrl-nvdla1")]


def test_nvdla_and_pva_nodes_of_an_l4t_tree_use_their_dev_nodes():
    host1x = "/bus@0/host1x@13e00000"
    root = tree_of(XAVIER).root

    def add(node):
        if node.path == host1x:
            extra = (
                DtNode("nvdla0@15880000", host1x + "/nvdla0@15880000",
                       {"compatible": b"nvidia,tegra194-nvdla\0"}, ()),
                DtNode("nvdla1@158c0000", host1x + "/nvdla1@158c0000",
                       {"compatible": b"nvidia,tegra194-nvdla\0"}, ()),
                DtNode("pva0@16000000", host1x + "/pva0@16000000",
                       {"compatible": b"nvidia,tegra194-pva\0"}, ()),
            )
            return DtNode(node.name, node.path, node.props, node.children + extra)
        return DtNode(node.name, node.path, node.props, tuple(add(c) for c in node.children))

    tree = reparse(add(root))
    inv = build_inventory(HostFacts(tree=tree, dev_nodes=("/dev/nvhost-nvdla0",
                                                          "/dev/nvhost-nvdla1")))
    nvdla = [(a.path, a.device) for a in inv.accelerators if a.kind == "nvdla"]
    assert nvdla == [(host1x + "/nvdla0@15880000", "/dev/nvhost-nvdla0"),
                     (host1x + "/nvdla1@158c0000", "/dev/nvhost-nvdla1")]
    assert inv.accelerator_count("pva") == 1


def test_xavier_gpu_collects_its_dev_nodes(tmp_path):
    dev = ["/dev/nvhost-as-gpu", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap",
           "/dev/nvhost-vic"]
    inv = discover(HostRoot(make_host(str(tmp_path), XAVIER, release="R35.4.1", dev=dev)))
    assert inv.gpu.source == "devicetree"
    assert inv.gpu.device_nodes == ("/dev/nvhost-as-gpu", "/dev/nvhost-ctrl-gpu",
                                    "/dev/nvhost-gpu", "/dev/nvmap")


# --- an x86 server -------------------------------------------------------------------------------

def test_x86_host_without_a_tree_is_not_an_error(tmp_path):
    root = make_host(str(tmp_path))
    inv = discover(HostRoot(root))
    assert (inv.board_model, inv.board_compatible, inv.soc, inv.is_tegra, inv.gpu,
            inv.accelerators, inv.devicetree_source, inv.devicetree_error) == (
        None, (), None, False, None, (), None, None)
    assert inv.memory_bytes == 7765304 * 1024
    doc = inv.to_json()
    assert doc["board"] == {"model": None, "compatible": []} and doc["gpu"] is None


def test_inventory_is_immutable_and_compares_by_value(tmp_path):
    a = inventory_of(XAVIER)
    b = inventory_of(XAVIER)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(Exception):
        a.soc = "x"  # type: ignore[misc]
    assert inventory_of(NANO) != a


def test_unreadable_probe_is_a_problem_not_a_failure(tmp_path):
    import os
    root = make_host(str(tmp_path), NANO)
    os.makedirs(os.path.join(root, "etc/nv_tegra_release"))   # a directory: read fails
    inv = discover(HostRoot(root))
    assert inv.soc == "tegra210"
    assert any(p.startswith("/etc/nv_tegra_release:") for p in inv.problems)
