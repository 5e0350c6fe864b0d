"""The doctor's runner and command: time bounds, crashes as FAIL lines, output and exit code."""

import json
import os
import subprocess
import sys
import time


from edgeagent.config import load_config
from edgeagent.doctor import command
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult
from edgeagent.doctor.runner import DEFAULT_SOURCES, default_check_modules
from edgeagent.hostpaths import HostRoot
from tests import doctor_fake_checks, doctor_fake_hanging, doctor_fake_slow
from tests.conftest import REPO
from tests.peers.hosts import make_root


def collect(root, modules, **limits):
    return command.collect(HostRoot(str(root)), load_config(None, env={}), modules, **limits)


def source(module):
    return lambda: module


def _no_such_module():
    import tests.no_such_module  # noqa: F401


def test_checks_run_in_order_and_failures_become_lines(tmp_path):
    results = collect(make_root(tmp_path), [source(doctor_fake_checks)])
    assert [r.check for r in results] == ["plain", "async one", "async two", "raises",
                                          "returns garbage", "exits"]
    assert results[0].status == PASS
    assert results[1].detail == "saw plain=True"  # facts flow to later checks of a module
    assert results[2].detail == "multi line" and results[2].fix == "fix it"  # one line each
    assert results[3].status == FAIL
    assert results[3].detail == ("check raised PermissionError: [Errno 13] Permission denied: "
                                 "'/sys/kernel/debug'")
    assert results[4].status == FAIL and "returned str" in results[4].detail
    assert results[5].status == FAIL and "SystemExit" in results[5].detail


def test_hanging_checks_are_cut_off(tmp_path):
    started = time.monotonic()
    try:
        results = collect(make_root(tmp_path), [source(doctor_fake_hanging)],
                          check_timeout=0.3, deadline=3.0)
    finally:
        doctor_fake_checks.RELEASE.set()
    assert time.monotonic() - started < 4.5  # the 5 s promise, with the machine's slack
    assert [(r.check, r.status) for r in results] == [
        ("stuck thread", FAIL), ("stuck async", FAIL), ("stubborn", FAIL)]
    assert all("did not finish within 0.3s" in r.detail for r in results)


def test_the_deadline_skips_what_is_left(tmp_path):
    results = collect(make_root(tmp_path), [source(doctor_fake_slow)], deadline=0.45)
    assert [r.status for r in results][-1] == SKIP
    assert "time budget" in results[-1].detail
    assert all(r.status != FAIL or "did not finish" in r.detail for r in results)


def test_a_module_that_does_not_load_is_a_fail_line(tmp_path):
    results = collect(make_root(tmp_path), [_no_such_module, source(doctor_fake_slow)])
    assert results[0].status == FAIL and "cannot load no_such_module" in results[0].detail
    assert "No module named 'tests.no_such_module'" in results[0].detail
    assert results[1].check == "slow"


def test_the_doctor_runs_every_check_module_host_first():
    assert default_check_modules() == ["edgeagent.doctor.checks_host",
                                       "edgeagent.doctor.checks_plugin",
                                       "edgeagent.doctor.checks_runtime",
                                       "edgeagent.doctor.checks_kube",
                                       "edgeagent.doctor.checks_dra",
                                       "edgeagent.doctor.checks_metrics"]


def test_host_checks_come_first_in_the_report(tmp_path):
    results = collect(make_root(tmp_path), DEFAULT_SOURCES[:1])
    assert results[0].check == "devicetree"


def test_render_text_and_exit_code():
    results = [CheckResult("devicetree", PASS, "Jetson"),
               CheckResult("service enabled", WARN, "not enabled", "sudo systemctl enable x"),
               CheckResult("gpu", SKIP, "none")]
    assert command.render_text(results).splitlines() == [
        "PASS  devicetree       Jetson",
        "WARN  service enabled  not enabled",
        "      fix: sudo systemctl enable x",
        "SKIP  gpu              none",
        "1 passed, 1 warnings, 0 failed, 1 skipped",
    ]
    assert command.exit_code(results) == 0
    assert command.exit_code(results + [CheckResult("x", FAIL, "y", "z")]) == 1


def _doctor(args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=REPO, **(env_extra or {}))
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run([sys.executable, "-m", "edgeagent"] + args, cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def test_doctor_json_end_to_end(tmp_path):
    root = make_root(tmp_path)
    proc = _doctor(["--root", str(root), "doctor", "--json",
                    "--kubeconfig", str(tmp_path / "missing"), "--node-name", "jetson-1"])
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert isinstance(doc, list) and doc
    for item in doc:
        assert list(item) == ["check", "status", "detail", "fix"]
        assert item["status"] in ("PASS", "WARN", "FAIL", "SKIP")
        assert (item["fix"] != "") == (item["status"] in ("WARN", "FAIL"))
    statuses = {item["check"]: item["status"] for item in doc}
    assert statuses["devicetree"] == "PASS" and statuses["service unit"] == "FAIL"
    assert proc.returncode == 1


def test_doctor_text_end_to_end_with_a_broken_tree(tmp_path):
    root = make_root(tmp_path)
    (root / "sys/firmware/fdt").write_bytes(b"\xd0\x0d\xfe\xed" + b"\0" * 60)
    proc = _doctor(["doctor", "--root", str(root)])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("FAIL  devicetree")
    assert lines[1].startswith("      fix: ")
    assert proc.returncode == 1


def test_doctor_exits_0_when_nothing_failed(tmp_path):
    root = make_root(tmp_path)
    proc = _doctor(["--root", str(root), "install", "--pyz", _fake(tmp_path),
                    "--python", "/usr/bin/python3.12"], )
    assert proc.returncode == 2 and "not found under --root" in proc.stderr  # no interpreter yet
    (root / "usr/bin/python3.12").write_text("#!/bin/sh\n")
    proc = _doctor(["--root", str(root), "install", "--pyz", _fake(tmp_path),
                    "--python", "/usr/bin/python3.12"])
    assert proc.returncode == 0, proc.stderr
    host = collect(root, DEFAULT_SOURCES[:1])
    assert [r for r in host if r.status == FAIL] == []
    assert command.exit_code(host) == 0
    # the command's exit code follows its FAIL lines (other areas' checks may fail here: a
    # fixture root has no cluster)
    proc = _doctor(["--root", str(root), "doctor"])
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert proc.returncode == (1 if failed else 0), proc.stdout


def _fake(tmp_path):
    from tests.peers.hosts import fake_pyz

    path = tmp_path / "edgeagent.pyz"
    if not path.exists():
        fake_pyz(path)
    return str(path)
