"""doctor's ``cdi.edgeagent-spec`` (and ``runtime.cdi-duplicates`` seeing the agent's spec) on a
fake host with real device nodes (os.mknod: root only)."""

import os
import shutil
import stat

import pytest

from edgeagent.cdi import spec as cdispec
from edgeagent.cdi.component import sync_specs
from edgeagent.config import load_config
from edgeagent.doctor import checks_runtime as cr
from edgeagent.doctor.runner import build_context
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import make_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="os.mknod needs root")


@pytest.fixture
def host(tmp_path):
    root = str(make_root(tmp_path))
    path = os.path.join(root, "dev", "nvhost-ctrl-gpu")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):   # make_root's stand-in (a regular file) becomes a real node
        os.unlink(path)
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(506, 0))
    return root


def check(host, fn=cr.check_edgeagent_spec, **overrides):
    config = load_config(None, env={}).replace(**overrides)
    return fn(build_context(HostRoot(host), config, timeout=0.5))


def spec_path(host, host_path=cdispec.GPU_SPEC_PATH):
    return HostRoot(host).resolve(host_path)


def test_states():
    assert cr.spec_state(None, None) == "absent"
    assert cr.spec_state(None, b"x") == "orphan"
    assert cr.spec_state(b"x", None) == "missing"
    assert cr.spec_state(b"x", b"y") == "stale"
    assert cr.spec_state(b"x", b"x") == "ok"


def test_written_and_current_passes(host):
    sync_specs(HostRoot(host))
    r = check(host)
    assert r.status == "PASS" and r.check == "cdi.edgeagent-spec"
    assert "/var/run/cdi/edgeagent-gpu.json: edgeagent.io/gpu=0, edgeagent.io/gpu=all" in \
        r.detail


def test_missing_is_a_warning_that_names_the_agent(host):
    r = check(host)
    assert r.status == "WARN" and "is not written" in r.detail
    assert "systemctl start edgeagent" in r.fix


def test_stale_after_a_driver_reload(host):
    sync_specs(HostRoot(host))
    node = os.path.join(host, "dev", "nvhost-ctrl-gpu")
    os.unlink(node)
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(506, 9))
    r = check(host)
    assert r.status == "WARN" and "differs from the host" in r.detail


def test_broken_spec_fails(host):
    sync_specs(HostRoot(host))
    with open(spec_path(host), "w") as f:
        f.write('{"cdiVersion": "0.5.0", "kind": "edgeagent.io/gpu", "devices": 3}')
    r = check(host)
    assert r.status == "FAIL" and "no devices list" in r.detail and "sudo rm" in r.fix


def test_orphan_when_the_gpu_is_gone(host):
    sync_specs(HostRoot(host))
    os.unlink(os.path.join(host, "dev", "nvhost-ctrl-gpu"))
    r = check(host)
    assert r.status == "WARN" and "no longer has" in r.detail


def test_a_copy_in_etc_cdi_is_a_duplicate(host):
    sync_specs(HostRoot(host))
    os.makedirs(os.path.join(host, "etc", "cdi"))
    shutil.copy(spec_path(host), os.path.join(host, "etc", "cdi", "copy.json"))
    r = check(host)
    assert r.status == "FAIL" and "edgeagent.io/gpu=0 is also defined by /etc/cdi/copy.json" \
        in r.detail
    assert r.fix == "sudo rm /etc/cdi/copy.json (only the agent writes edgeagent.io kinds)"
    # the runtime check sees the agent's spec too
    d = check(host, cr.check_cdi_duplicates)
    assert d.status == "WARN" and "/var/run/cdi/edgeagent-gpu.json" in d.detail


def test_coexists_with_nvidia_ctks_spec(host):
    sync_specs(HostRoot(host))
    os.makedirs(os.path.join(host, "etc", "cdi"))
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "fixtures", "runtime", "cdi-csv-orin-jp6.yaml"),
                os.path.join(host, "etc", "cdi", "nvidia.yaml"))
    assert check(host).status == "PASS"
    d = check(host, cr.check_cdi_duplicates)
    assert d.status == "PASS" and d.detail == "2 specs, no device name defined twice"


def test_skipped_without_nodes_or_without_the_device_plugin(tmp_path, host):
    assert check(str(make_root(tmp_path / "bare"))).status == "SKIP"
    r = check(host, disable=["device-plugin"])
    assert r.status == "SKIP" and "device plugin is disabled" in r.detail


def test_cdi_strategy_with_only_the_agents_spec_is_not_a_missing_spec(host):
    sync_specs(HostRoot(host))
    r = check(host, cr.check_cdi_spec_mode, **{"device_plugin.device_list_strategy": "cdi"})
    assert r.status == "SKIP" and "uses the agent's own" in r.detail
    # without the agent's spec the same host fails: nothing would serve a cdi pod
    os.unlink(spec_path(host))
    r = check(host, cr.check_cdi_spec_mode, **{"device_plugin.device_list_strategy": "cdi"})
    assert r.status == "FAIL"


def test_plugin_checks_accept_the_agents_spec_for_the_cdi_strategy(host):
    from edgeagent.doctor import checks_plugin as cp

    cdi = {"device_plugin.device_list_strategy": "cdi"}
    assert check(host, cp.check_strategy, **cdi).status == "FAIL"   # nothing to hand out yet
    sync_specs(HostRoot(host))
    r = check(host, cp.check_cdi_spec, **cdi)
    assert r.status == "PASS" and "the agent's own /var/run/cdi/edgeagent-gpu.json" in r.detail
    assert check(host, cp.check_strategy, **cdi).status == "PASS"
