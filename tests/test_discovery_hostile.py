"""A fake host full of links that point outside it: nothing outside may reach the inventory,
the labels, the device plugin's facts or the logs (issue 11)."""

import logging
import os

import pytest

from edgeagent.discovery.devicetree import DeviceTreeError
from edgeagent.discovery.facts import ScanPlan
from edgeagent.discovery.scan import discover, probe_host
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import MEMINFO_8G, XAVIER, make_host, write

SECRET_MODEL = "SECRET outside board"


@pytest.fixture
def hostile(tmp_path):
    outside = tmp_path / "outside"
    # What the links point at: a whole "other host" with values that must never show up.
    write(outside, "/model", SECRET_MODEL + "\0")
    write(outside, "/nv_tegra_release", "# R99 (release), REVISION: 9.9\n")
    write(outside, "/meminfo", "MemTotal:       99999999 kB\n")
    write(outside, "/dev/nvhost-nvdla7", "")
    write(outside, "/dev/apex_3", "")
    write(outside, "/usb/idVendor", "1a6e\n")
    write(outside, "/usb/idProduct", "089a\n")
    write(outside, "/tree/compatible", b"evil,board\0")
    write(outside, "/tree/gpu/compatible", b"nvidia,gv11b\0")
    root = str(tmp_path / "root")
    make_host(root, meminfo=None)
    up = "../" * 12 + str(outside).lstrip("/")

    def link(host_path, target):
        real = os.path.join(root, host_path.lstrip("/"))
        os.makedirs(os.path.dirname(real), exist_ok=True)
        os.symlink(target, real)

    link("/etc/nv_tegra_release", str(outside / "nv_tegra_release"))   # absolute
    link("/proc/meminfo", up + "/meminfo")                               # relative
    link("/dev/nvhost-nvdla0", str(outside / "dev/nvhost-nvdla7"))
    link("/dev/nvgpu", up + "/dev")
    link("/sys/bus/usb/devices/2-1", str(outside / "usb"))
    link("/sys/devices/soc0", up)
    return root, str(outside), link


def test_a_directory_tree_with_links_out(hostile):
    root, outside, link = hostile
    write(root, "/proc/device-tree/compatible", b"nvidia,p2972-0000\0nvidia,tegra194\0")
    link("/proc/device-tree/model", os.path.join(outside, "model"))         # a property
    link("/proc/device-tree/gpu@0", os.path.join(outside, "tree/gpu"))     # a node
    inv = discover(HostRoot(root))
    text = repr(inv.to_json())
    assert SECRET_MODEL not in text and "99999999" not in text and "R99" not in text
    assert inv.board_model is None and inv.gpu is None
    assert inv.l4t is None and inv.memory_bytes is None
    assert not [a for a in inv.accelerators if a.kind == "edgetpu"]
    assert inv.board_compatible == ("nvidia,p2972-0000", "nvidia,tegra194")


def test_a_device_tree_link_out_of_the_root(hostile):
    root, outside, link = hostile
    link("/proc/device-tree", os.path.join(outside, "tree"))      # the whole tree
    inv = discover(HostRoot(root))
    assert inv.board_compatible == () and inv.gpu is None
    assert "evil" not in repr(inv.to_json())
    link("/sys/firmware/fdt", "/sys/firmware/fdt")                 # a loop, not the host's
    with pytest.raises(DeviceTreeError, match="/sys/firmware/fdt: too many levels"):
        discover(HostRoot(root))


def test_the_health_probe_sees_only_the_root(hostile, caplog):
    root, outside, _ = hostile
    plan = ScanPlan(paths=("/dev/nvhost-nvdla0", "/dev/nvgpu/igpu0/ctrl"),
                    globs=("/dev/nvhost-nvdla*", "/dev/nvgpu/*/*"), gpu_node=None, usb=True)
    with caplog.at_level(logging.DEBUG):
        facts = probe_host(HostRoot(root), plan)
    assert facts.existing == frozenset()
    assert facts.globs == {"/dev/nvhost-nvdla*": (), "/dev/nvgpu/*/*": ()}
    assert facts.usb == ()
    assert outside not in caplog.text


def test_the_real_tree_of_a_copied_host_still_reads(tmp_path):
    # The kernel's own absolute link /proc/device-tree -> /sys/firmware/devicetree/base.
    root = make_host(str(tmp_path), XAVIER, form="sys", meminfo=MEMINFO_8G)
    inv = discover(HostRoot(root))
    assert inv.board_model == "NVIDIA Jetson AGX Xavier Developer Kit"
    assert inv.devicetree_source == "/proc/device-tree"


def test_credentials_and_tegrastats_links_out_of_the_root_are_not_used(tmp_path):
    # Other features resolve their host paths with HostRoot.resolve: a kubelet kubeconfig or
    # a tegrastats that links out of a fake root is as absent as a missing one.
    from edgeagent.kube import credentials

    outside = tmp_path / "outside"
    write(outside, "/kubelet.conf", "apiVersion: v1\nkind: Config\nclusters: []\n")
    root = make_host(str(tmp_path / "root"))
    for host_path in credentials.KUBELET_KUBECONFIGS:
        real = os.path.join(root, host_path.lstrip("/"))
        os.makedirs(os.path.dirname(real), exist_ok=True)
        os.symlink(str(outside / "kubelet.conf"), real)
    host = HostRoot(root)
    assert all(p.startswith(root + "/") for _, p in credentials.candidates(host, None))
    with pytest.raises(credentials.NoCredentials):
        credentials.find_credentials(host, env={})
