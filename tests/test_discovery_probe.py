"""The fast health probe: "absent" and "could not check" are different answers (issue 11: with
the file descriptors exhausted, DLA devices were flipped Unhealthy as "gone")."""

import logging
import os
import resource

import pytest

from edgeagent.deviceplugin.model import DLA_RESOURCE, build_resources, scan_plan
from tests.test_deviceplugin_model import Options
from edgeagent.discovery.facts import ScanPlan
from edgeagent.discovery.scan import RateLimitedLog, discover, probe_host
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import XAVIER, make_host

DLA_NODES = ["/dev/nvhost-nvdla0", "/dev/nvhost-nvdla1", "/dev/nvhost-ctrl-nvdla0",
             "/dev/nvhost-ctrl-nvdla1", "/dev/nvmap"]


class exhausted_fds:
    """Really run out of file descriptors, as 1,100 slow clients did: lower the soft limit and
    fill it, then give everything back."""

    def __enter__(self):
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, self.limits[1]))
        self.fds = []
        while True:
            try:
                self.fds.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                return self

    def __exit__(self, *exc):
        for fd in self.fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)


@pytest.fixture
def jetson(tmp_path):
    return HostRoot(make_host(str(tmp_path), XAVIER, release="R35.4.1", dev=DLA_NODES))


def test_the_probe_tells_absent_from_unknown(jetson):
    plan = ScanPlan(paths=("/dev/nvmap", "/dev/gone"), globs=("/dev/nvhost-nvdla*",),
                    gpu_node=None, usb=True)
    facts = probe_host(jetson, plan)
    assert facts.existing == {"/dev/nvmap", "/dev/nvhost-nvdla0", "/dev/nvhost-nvdla1"}
    assert facts.unknown == frozenset()
    with exhausted_fds():
        starved = probe_host(jetson, plan, RateLimitedLog(logging.getLogger("t")))
    assert "/dev/nvhost-nvdla*" in starved.unknown          # the listing needed an fd
    assert "/dev/nvhost-nvdla*" not in starved.globs
    assert "/dev/gone" not in starved.unknown                # stat needs none: still absent


def test_exhausted_fds_never_make_a_dla_unhealthy(jetson, caplog):
    inventory = discover(jetson)
    options = Options()
    first = build_resources(inventory, probe_host(jetson, scan_plan(inventory, options, {})),
                            options)
    assert [u.healthy for u in first[DLA_RESOURCE].units] == [True, True]
    with exhausted_fds(), caplog.at_level(logging.WARNING):
        plan = scan_plan(inventory, options, first)
        facts = probe_host(jetson, plan)
        second = build_resources(inventory, facts, options, first)
    assert second[DLA_RESOURCE].units == first[DLA_RESOURCE].units
    assert "cannot check /dev/nvhost-nvdla*" in caplog.text
    assert "keeping its previous health" in caplog.text
    # A node that really disappears still makes its engine Unhealthy.
    os.unlink(jetson.path("/dev/nvhost-nvdla1"))
    os.unlink(jetson.path("/dev/nvhost-ctrl-nvdla1"))
    third = build_resources(inventory, probe_host(jetson, scan_plan(inventory, options, second)),
                            options, second)
    assert [(u.id, u.healthy) for u in third[DLA_RESOURCE].units] == [("nvdla0", True),
                                                                      ("nvdla1", False)]
    assert "is gone" in third[DLA_RESOURCE].units[1].reason


def test_repeated_failures_are_logged_once_per_interval(caplog):
    limited = RateLimitedLog(logging.getLogger("edgeagent.test"), interval=300)
    with caplog.at_level(logging.WARNING):
        assert limited.warning("k", "cannot check x", now=0.0)
        assert not any(limited.warning("k", "cannot check x", now=t) for t in range(1, 299))
        assert limited.warning("other", "cannot check y", now=1.0)
        assert limited.warning("k", "cannot check x", now=301.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["cannot check x", "cannot check y",
                     "cannot check x (298 more like it held back)"]


def test_a_gpu_node_that_could_not_be_checked_keeps_the_gpu_health(jetson):
    from edgeagent.deviceplugin.model import GPU_RESOURCE
    from edgeagent.discovery.facts import HostFacts

    gpu_nodes = ["/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvmap"]
    for node in gpu_nodes[:2]:
        open(jetson.path(node), "w").close()
    inventory = discover(jetson)
    assert sorted(inventory.gpu.device_nodes) == sorted(gpu_nodes)
    options = Options()
    healthy = build_resources(inventory, HostFacts(existing=frozenset(gpu_nodes)), options)
    assert healthy[GPU_RESOURCE].units[0].healthy
    unchecked = HostFacts(existing=frozenset(gpu_nodes[1:]), unknown=frozenset(gpu_nodes[:1]))
    kept = build_resources(inventory, unchecked, options, healthy)
    assert kept[GPU_RESOURCE].units[0].healthy
    gone = build_resources(inventory, HostFacts(existing=frozenset(gpu_nodes[1:])), options,
                           healthy)
    assert not gone[GPU_RESOURCE].units[0].healthy
    assert "/dev/nvhost-ctrl-gpu is missing" in gone[GPU_RESOURCE].units[0].reason
