"""Doctor host checks against fixture roots that make each one PASS, WARN and FAIL."""

import datetime
import os

import pytest

from edgeagent.config import load_config
from edgeagent.doctor import checks_host as h
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN
from edgeagent.doctor.runner import build_context
from edgeagent.hostpaths import HostRoot
from edgeagent.install.command import install
from edgeagent.install.layout import CACHE_DIR, PYZ_PATH, UNIT_PATH, WANTS_LINK
from tests.peers.hosts import (NANO, ORIN_NANO, RPI4, XAVIER, fake_pyz, make_root, write,
                               write_proc_tree)

TODAY = datetime.date(2026, 1, 15)


def ctx_for(root):
    ctx = build_context(HostRoot(str(root)), load_config(None, env={}))
    ctx.facts["today"] = TODAY
    return ctx


def one(result):
    assert not isinstance(result, list)
    return result


def installed(tmp_path, root, python="/usr/bin/python3.12", build_id="b1"):
    if not os.path.exists(os.path.join(str(root), python.lstrip("/"))):
        write(root, python, "#!/bin/sh\n", 0o755)
    pyz = fake_pyz(tmp_path / ("edgeagent-%s.pyz" % build_id), build_id)
    lines = []
    assert install(HostRoot(str(root)), pyz, python, lines.append, systemctl=None) == 0
    return lines


# --- devicetree ----------------------------------------------------------------------------------

def test_devicetree_pass_on_a_jetson_blob(tmp_path):
    r = one(h.check_devicetree(ctx_for(make_root(tmp_path))))
    assert r.status == PASS
    assert "NVIDIA Jetson AGX Xavier Developer Kit (tegra194, NVIDIA Tegra)" in r.detail
    assert "/sys/firmware/fdt" in r.detail


def test_devicetree_pass_on_a_raspberry_pi(tmp_path):
    r = one(h.check_devicetree(ctx_for(make_root(tmp_path, dtb=RPI4, release=None, dev=()))))
    assert r.status == PASS and "Raspberry Pi 4 Model B" in r.detail


def test_devicetree_warn_without_a_tree(tmp_path):
    r = one(h.check_devicetree(ctx_for(make_root(tmp_path, dtb=None, release=None, dev=()))))
    assert r.status == WARN and "not a devicetree board" in r.detail and r.fix


def test_links_out_of_the_root_reach_no_check(tmp_path):
    outside = tmp_path / "outside"
    write(outside, "/nv_tegra_release", "# R36 (release), REVISION: 4.4, GCID: 1\n")
    root = make_root(tmp_path, release=None)
    os.symlink(str(outside / "nv_tegra_release"), str(root / "etc/nv_tegra_release"))
    r = one(h.check_l4t(ctx_for(root)))
    assert r.status == WARN and "without /etc/nv_tegra_release" in r.detail
    assert "36" not in r.detail


def test_devicetree_warn_when_a_probe_fails(tmp_path):
    root = make_root(tmp_path)
    os.unlink(str(root / "proc/meminfo"))
    (root / "proc/meminfo").mkdir()  # reading it fails the way an unreadable file does
    r = one(h.check_devicetree(ctx_for(root)))
    assert r.status == WARN and "/proc/meminfo" in r.detail and "root" in r.fix


def test_devicetree_warn_when_the_board_is_anonymous(tmp_path):
    root = make_root(tmp_path, dtb=None, release=None, dev=())
    write_proc_tree(root, {"/": {"#address-cells": b"\0\0\0\x02"}, "/cpus": {}})
    r = one(h.check_devicetree(ctx_for(root)))
    assert r.status == WARN and "board not recognised" in r.detail


def test_devicetree_fail_on_a_corrupt_blob(tmp_path):
    root = make_root(tmp_path)
    blob = (root / "sys/firmware/fdt").read_bytes()
    (root / "sys/firmware/fdt").write_bytes(blob[:200])  # truncated
    ctx = ctx_for(root)
    assert ctx.inventory is None and ctx.facts["discovery_error"]
    r = one(h.check_devicetree(ctx))
    assert r.status == FAIL and "cannot read the devicetree" in r.detail
    # the checks that need the inventory say so instead of crashing
    assert h.check_l4t(ctx).status == SKIP and h.check_gpu(ctx).status == SKIP


# --- L4T -----------------------------------------------------------------------------------------

def test_l4t_pass(tmp_path):
    r = one(h.check_l4t(ctx_for(make_root(tmp_path))))
    assert (r.status, r.detail) == (PASS, "L4T 35.4.1 (JetPack 5.1.2)")


@pytest.mark.parametrize("release,dtb,words", [
    (None, XAVIER, "without /etc/nv_tegra_release"),
    ("# R32 (release), REVISION: 4.3, GCID: 1\n", NANO, "older than JetPack 4.6"),
    ("# R99 (release), REVISION: 1.0, GCID: 1\n", XAVIER, "no JetPack release"),
])
def test_l4t_warn(tmp_path, release, dtb, words):
    r = one(h.check_l4t(ctx_for(make_root(tmp_path, dtb=dtb, release=release))))
    assert r.status == WARN and words in r.detail and r.fix


def test_l4t_fail_on_an_unreadable_release_file(tmp_path):
    r = one(h.check_l4t(ctx_for(make_root(tmp_path, release="garbage\n"))))
    assert r.status == FAIL and "nvidia-l4t-core" in r.fix


def test_l4t_skip_off_jetson(tmp_path):
    r = one(h.check_l4t(ctx_for(make_root(tmp_path, dtb=RPI4, release=None, dev=()))))
    assert r.status == SKIP


# --- GPU -----------------------------------------------------------------------------------------

def test_gpu_pass(tmp_path):
    r = one(h.check_gpu(ctx_for(make_root(tmp_path))))
    assert r.status == PASS
    assert r.detail.startswith("/bus@0/gpu@17000000 nvidia,gv11b okay, volta, compute capability 7.2")


def test_gpu_pass_from_the_soc_table_on_orin(tmp_path):
    root = make_root(tmp_path, dtb=ORIN_NANO, dev=("nvhost-ctrl-gpu", "nvhost-gpu", "nvmap"),
                     release="# R36 (release), REVISION: 4.3, GCID: 1\n")
    r = one(h.check_gpu(ctx_for(root)))
    assert r.status == PASS and "ampere" in r.detail and "SoC table" in r.detail


def test_gpu_fail_without_device_nodes(tmp_path):
    r = one(h.check_gpu(ctx_for(make_root(tmp_path, dev=()))))
    assert r.status == FAIL and "device nodes are missing" in r.detail and "nvgpu" in r.fix


def test_gpu_fail_on_orin_without_driver(tmp_path):
    r = one(h.check_gpu(ctx_for(make_root(tmp_path, dtb=ORIN_NANO, dev=()))))
    assert r.status == FAIL and "no GPU node" in r.detail


def _tree_with_gpu(root, compatible, status):
    write_proc_tree(root, {
        "/": {"model": b"Test Jetson\0", "compatible": b"nvidia,test\0nvidia,tegra194\0"},
        "/gpu@17000000": {"compatible": compatible + b"\0", "status": status + b"\0"},
    })


def test_gpu_fail_when_disabled(tmp_path):
    root = make_root(tmp_path, dtb=None)
    _tree_with_gpu(root, b"nvidia,gv11b", b"disabled")
    r = one(h.check_gpu(ctx_for(root)))
    assert r.status == FAIL and "'disabled'" in r.detail and "okay" in r.fix


def test_gpu_warn_on_an_unknown_nvidia_gpu(tmp_path):
    root = make_root(tmp_path, dtb=None)
    _tree_with_gpu(root, b"nvidia,gz99b", b"okay")
    r = one(h.check_gpu(ctx_for(root)))
    assert r.status == WARN and "does not know" in r.detail


def test_gpu_skip_on_other_boards(tmp_path):
    r = one(h.check_gpu(ctx_for(make_root(tmp_path, dtb=RPI4, release=None, dev=()))))
    assert r.status == SKIP


# --- the service ---------------------------------------------------------------------------------

def by_name(results):
    return {r.check: r for r in results}


def test_service_fail_when_not_installed(tmp_path):
    rs = by_name(h.check_service(ctx_for(make_root(tmp_path))))
    assert rs["service unit"].status == FAIL and "install" in rs["service unit"].fix
    assert rs["service enabled"].status == SKIP and rs["service running"].status == SKIP


def test_service_pass_after_install(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root)
    rs = by_name(h.check_service(ctx_for(root)))
    assert rs["service unit"].status == PASS
    assert "/usr/bin/python3.12 %s" % PYZ_PATH in rs["service unit"].detail
    assert rs["service enabled"].status == PASS and "multi-user.target" in rs["service enabled"].detail
    assert rs["service running"].status == SKIP  # not under --root


def test_service_warn_when_not_enabled_or_edited(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root)
    os.unlink(os.path.join(str(root), WANTS_LINK.lstrip("/")))
    unit = os.path.join(str(root), UNIT_PATH.lstrip("/"))
    with open(unit, "a") as f:
        f.write("Nice=5\n")
    write(root, UNIT_PATH + ".d/override.conf", "[Service]\nNice=5\n")
    rs = by_name(h.check_service(ctx_for(root)))
    assert rs["service enabled"].status == WARN and "enable" in rs["service enabled"].fix
    assert rs["service unit"].status == WARN and "differs" in rs["service unit"].detail
    assert "override.conf" in rs["service unit"].detail


def test_service_fail_when_the_pyz_is_gone_or_masked(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root)
    os.unlink(os.path.join(str(root), PYZ_PATH.lstrip("/")))
    rs = by_name(h.check_service(ctx_for(root)))
    assert rs["service unit"].status == FAIL and "missing" in rs["service unit"].detail
    unit = os.path.join(str(root), UNIT_PATH.lstrip("/"))
    os.unlink(unit)
    os.symlink("/dev/null", unit)
    rs = by_name(h.check_service(ctx_for(root)))
    assert rs["service unit"].status == FAIL and "masked" in rs["service unit"].detail


@pytest.mark.parametrize("props,status,words", [
    ({"ActiveState": "active", "SubState": "running", "NRestarts": "0",
      "StatusText": "discovery up"}, PASS, "active (running); discovery up"),
    ({"ActiveState": "active", "SubState": "running", "NRestarts": "3"}, WARN, "restarted it 3"),
    ({"ActiveState": "activating", "SubState": "start"}, WARN, "activating"),
    ({"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code",
      "NRestarts": "4"}, FAIL, "after result 'exit-code', 4 restarts"),
    ({"ActiveState": "failed", "SubState": "failed"}, FAIL, "failed"),
    ({"ActiveState": "inactive", "SubState": "dead"}, FAIL, "inactive"),
    (None, SKIP, "did not answer"),
])
def test_running_result(props, status, words):
    r = h.running_result(props)
    assert r.status == status and words in r.detail


# --- shiv's cache --------------------------------------------------------------------------------

def test_shiv_cache_pass_before_first_start(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root)
    r = one(h.check_shiv_cache(ctx_for(root)))
    assert r.status == PASS and "will be created" in r.detail and CACHE_DIR in r.detail


def test_shiv_cache_pass_when_unpacked(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root, build_id="b2")
    (root / "var/cache/edgeagent/edgeagent.pyz_b2/site-packages").mkdir(parents=True)
    r = one(h.check_shiv_cache(ctx_for(root)))
    assert r.status == PASS and "dependencies unpacked" in r.detail and "MiB free" in r.detail


def test_shiv_cache_warn_on_old_builds(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root, build_id="b2")
    for old in ("edgeagent.pyz_b2", "edgeagent.pyz_b1", "edgeagent.pyz_b0"):
        (root / "var/cache/edgeagent" / old).mkdir(parents=True)
    r = one(h.check_shiv_cache(ctx_for(root)))
    assert r.status == WARN and "2 older builds" in r.detail
    assert "edgeagent.pyz_b1" in r.fix and "edgeagent.pyz_b2" not in r.fix


def test_shiv_cache_fail_when_not_a_directory(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root)
    write(root, CACHE_DIR, "oops")
    r = one(h.check_shiv_cache(ctx_for(root)))
    assert r.status == FAIL and "not a directory" in r.detail


def test_shiv_cache_skip_when_not_installed_under_root(tmp_path):
    assert one(h.check_shiv_cache(ctx_for(make_root(tmp_path)))).status == SKIP


def test_cache_verdict_covers_write_errors_and_space():
    args = dict(path="/var/cache/edgeagent", exists=True, is_dir=True, write_error=None,
                free_bytes=10 * 2 ** 20, stale=[], unpacked=False, parent=None, parent_ok=False,
                source="the unit's SHIV_ROOT")
    assert h.cache_verdict(**args).status == WARN
    assert h.cache_verdict(**dict(args, unpacked=True)).status == PASS
    r = h.cache_verdict(**dict(args, write_error="Read-only file system"))
    assert r.status == FAIL and "Read-only" in r.detail
    r = h.cache_verdict(**dict(args, exists=False, is_dir=False, parent="/var", parent_ok=False))
    assert r.status == FAIL


# --- Python --------------------------------------------------------------------------------------

def test_python_pass(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root, python="/usr/bin/python3.12")
    r = one(h.check_python(ctx_for(root)))
    assert r.status == PASS and "Python 3.12" in r.detail


def test_python_warn_on_jetpack5_python_via_symlink(tmp_path):
    root = make_root(tmp_path)
    write(root, "/usr/bin/python3.8", "#!/bin/sh\n", 0o755)
    os.symlink("python3.8", str(root / "usr/bin/python3"))
    installed(tmp_path, root, python="/usr/bin/python3")
    r = one(h.check_python(ctx_for(root)))
    assert r.status == WARN and "Python 3.8" in r.detail
    assert "the one JetPack 5.1.2 ships" in r.detail and "end of life" in r.detail


def test_python_fail_on_jetpack4_python(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root, python="/usr/bin/python3.6")
    r = one(h.check_python(ctx_for(root)))
    assert r.status == FAIL and "JetPack 4 ships 3.6" in r.detail and "python3.8" in r.fix


def test_python_fail_when_the_interpreter_is_gone(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root, python="/usr/bin/python3.11")
    os.unlink(str(root / "usr/bin/python3.11"))
    r = one(h.check_python(ctx_for(root)))
    assert r.status == FAIL and "missing" in r.detail


def test_python_verdict_dates():
    assert h.python_verdict((3, 10), "/usr/bin/python3", "x", datetime.date(2026, 10, 30)).status == PASS
    assert h.python_verdict((3, 10), "/usr/bin/python3", "x", datetime.date(2026, 10, 31)).status == WARN
    assert h.python_verdict(None, "/opt/py", "x", TODAY).status == WARN


def test_python_on_the_real_root_reports_this_interpreter():
    ctx = build_context(HostRoot("/"), load_config(None, env={}))
    ctx.facts["today"] = TODAY
    ctx.facts["host.unit"] = (None, None, {})  # as if not installed, whatever this machine has
    r = one(h.check_python(ctx))
    assert r.status in (PASS, WARN)
    assert "running doctor" in r.detail


def test_service_fail_when_its_python_is_in_a_home(tmp_path):
    root = make_root(tmp_path)
    installed(tmp_path, root)
    unit = os.path.join(str(root), UNIT_PATH.lstrip("/"))
    text = open(unit).read().replace("ExecStart=/usr/bin/python3.12",
                                     "ExecStart=/root/.pyenv/versions/3.11.7/bin/python3")
    open(unit, "w").write(text)
    write(root, "/root/.pyenv/versions/3.11.7/bin/python3", "", 0o755)
    rs = by_name(h.check_service(ctx_for(root)))
    assert rs["service unit"].status == FAIL and "ProtectHome" in rs["service unit"].detail
