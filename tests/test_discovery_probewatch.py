"""ProbeWatch: the device plugin's cheap test, between full probes, of whether a probe of the same
plan could read something else."""

import os
import shutil

import pytest

from edgeagent.discovery.facts import ScanPlan
from edgeagent.discovery.scan import ProbeWatch
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import short_root, write

PLAN = ScanPlan(paths=("/dev/nvmap", "/dev/nvgpu/igpu0/ctrl"), globs=("/dev/nvhost-nvdla*",),
                gpu_node="/gpu@17000000", usb=False)


@pytest.fixture
def root():
    path = short_root(demo=False)
    write(path, "/dev/nvmap")
    write(path, "/dev/nvgpu/igpu0/ctrl")
    write(path, "/proc/device-tree/gpu@17000000/status", "okay\0")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fresh(root):
    watch = ProbeWatch(HostRoot(root), PLAN)
    assert not watch.changed()
    return watch


def test_nothing_changes_nothing_is_seen(root):
    watch = fresh(root)
    with open(os.path.join(root, "dev/nvmap"), "w") as f:
        f.write("written, not added or removed")
    assert not watch.changed()


@pytest.mark.parametrize("change", [
    lambda r: os.rename(os.path.join(r, "dev/nvmap"), os.path.join(r, "dev/nvmap.away")),
    lambda r: os.unlink(os.path.join(r, "dev/nvgpu/igpu0/ctrl")),
    lambda r: write(r, "/dev/nvhost-nvdla0"),                          # a glob's new match
    lambda r: shutil.rmtree(os.path.join(r, "dev/nvgpu")),           # the directory itself
    lambda r: write(r, "/proc/device-tree/gpu@17000000/status", "disabled\0"),
    lambda r: os.unlink(os.path.join(r, "proc/device-tree/gpu@17000000/status")),
])
def test_what_a_probe_would_read_otherwise_is_seen(root, change):
    watch = fresh(root)
    change(root)
    assert watch.changed()
    fresh(root)                                     # and a new watch starts from there


def test_a_directory_that_appears_is_seen(root):
    shutil.rmtree(os.path.join(root, "dev/nvgpu"))
    watch = fresh(root)
    write(root, "/dev/nvgpu/igpu0/ctrl")
    assert watch.changed()
