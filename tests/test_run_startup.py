"""`edgeagent run` at its edges: a signal during start-up ends it cleanly, and a second agent on
the same host refuses to start (the lock under <root>/run/edgeagent)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edgeagent.app import materialize_demo_host
from tests.conftest import REPO
from tests.tools import free_port

PATIENCE = 90.0
STOP_LIMIT = 2.0


def spawn(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEAGENT_", "NOTIFY_"))}
    env.update({"PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"})
    return subprocess.Popen([sys.executable, "-m", "edgeagent"] + list(args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            universal_newlines=True)


def read_until(proc, text, patience=PATIENCE):
    seen = []
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError("no %r:\n%s" % (text, "".join(seen)))


@pytest.fixture
def root():
    path = materialize_demo_host()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_args(root):
    return ["--root", root, "run", "--disable", "labels", "--metrics-address",
            "127.0.0.1:%d" % free_port()]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_stops_it_cleanly(root, sig):
    # "demo host at" is logged once the stop handlers are in place and before discovery and
    # the components: the signal lands in the middle of start-up.
    proc = spawn("run", "--demo", "--metrics-address", "127.0.0.1:%d" % free_port())
    try:
        before = read_until(proc, "demo host at")
        proc.send_signal(sig)
        sent = time.monotonic()
        rest = proc.communicate(timeout=30)[1]
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = before + rest
    assert proc.returncode == 0, log
    assert elapsed < STOP_LIMIT, "%.2fs\n%s" % (elapsed, log)
    assert "Traceback" not in log and "Event loop is closed" not in log, log
    assert "ready:" not in log, log        # it did not go on to start the components


@pytest.mark.timeout(300)
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.6, 1.0])
def test_sigterm_at_any_moment_of_start_up_is_a_clean_stop(root, delay):
    # SIGTERM is how systemd stops the agent. Before the interpreter runs edgeagent's code its
    # default action ends the process (-SIGTERM: systemd counts that as a clean stop, and
    # nothing is printed); from the CLI's first line on, the agent exits 0. (SIGINT in the
    # interpreter's own first milliseconds, inside runpy or shiv's bootstrap, raises
    # KeyboardInterrupt before any edgeagent code can catch it: Python's, not ours.)
    proc = spawn(*run_args(root))
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        log = proc.communicate(timeout=30)[1]
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), (proc.returncode, log)
    assert "Traceback" not in log and "Event loop is closed" not in log, log
    assert elapsed < STOP_LIMIT, "%.2fs\n%s" % (elapsed, log)


@pytest.mark.timeout(200)
def test_a_second_agent_on_the_same_host_refuses_to_start(root):
    first = spawn(*run_args(root))
    try:
        read_until(first, "ready:")
        second = spawn(*run_args(root))
        err = second.communicate(timeout=60)[1]
        assert second.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeagent: error: another edgeagent "
                                                       "(pid %d) is running" % first.pid), err
        assert os.path.join(root, "run/edgeagent/lock") in lines[0]
        assert first.poll() is None           # the first one is untouched
        assert os.path.exists(os.path.join(root, "var/lib/kubelet/device-plugins"))
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
        assert first.returncode == 0
        # The lock went with the process: a new agent starts.
        third = spawn(*run_args(root))
        read_until(third, "ready:")
        third.send_signal(signal.SIGTERM)
        third.communicate(timeout=30)
        assert third.returncode == 0
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
