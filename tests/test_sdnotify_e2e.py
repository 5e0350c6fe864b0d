"""The notify protocol end to end, with this test as the service manager: the real agent
(`run --demo`, or the built pyz when EDGEAGENT_PYZ is set) sends READY=1 once discovery ran and
the components started, pings WATCHDOG=1 from its event loop at half WATCHDOG_USEC, and says
STOPPING=1 before it exits 0 on SIGTERM - what the unit's Type=notify and WatchdogSec= expect."""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from edgeagent.sdnotify import Notifier
from tests.conftest import REPO

WATCHDOG_USEC = 400000  # pings every 0.2 s


def _commands():
    yield pytest.param([sys.executable, "-m", "edgeagent"], id="module")
    pyz = os.environ.get("EDGEAGENT_PYZ")
    # by its #! line: the pyz holds C extensions for the Python that built it, not this one
    yield pytest.param([pyz] if pyz else None, id="pyz",
                       marks=[pytest.mark.skipif(not pyz, reason="EDGEAGENT_PYZ not set "
                                                 "(./build.sh test sets it)"),
                              pytest.mark.artifact])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Manager:
    """The service manager's end of $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.path = path
        self.messages = []

    def wait_for(self, line, timeout, count=1, proc=None):
        deadline = time.monotonic() + timeout
        while sum(1 for m in self.messages if line in m) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r within %ss; got %r" % (line, timeout, self.messages))
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the agent exited %s before %r: %s" % (
                    proc.returncode, line, proc.stderr.read().decode()[-2000:]))
            self.sock.settimeout(min(left, 0.5))
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                continue
        return self.messages

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("command", list(_commands()))
def test_ready_watchdog_and_stopping(tmp_path, command):
    manager = Manager(str(tmp_path / "notify"))
    env = dict(os.environ, PYTHONPATH=REPO, NOTIFY_SOCKET=manager.path,
               WATCHDOG_USEC=str(WATCHDOG_USEC), SHIV_ROOT=str(tmp_path / "shiv"),
               EDGEAGENT_METRICS_ADDRESS="127.0.0.1:%d" % _free_port())
    env.pop("JOURNAL_STREAM", None)
    # systemd sets WATCHDOG_PID to the main process: `exec` keeps the shell's pid for Python.
    script = 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec %s run --demo' % " ".join(
        shlex.quote(c) for c in command)
    proc = subprocess.Popen(["sh", "-c", script], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        messages = manager.wait_for("READY=1", 60, proc=proc)
        ready_at = len(messages)
        manager.wait_for("WATCHDOG=1", 30, count=sum(
            1 for m in messages[:ready_at] if "WATCHDOG=1" in m) + 2)
        assert any(line.startswith("STATUS=") and "discovery up" in line
                   for m in messages for line in m)
        proc.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1", 30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.close()
    err = proc.stderr.read().decode()
    assert "Traceback" not in err


def test_watchdog_only_for_the_named_process():
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000"}).watchdog_usec == 1000
    mine = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": mine}).watchdog_usec == 1000
    # a child (tegrastats, a shell) inherits the variables but is not the one systemd watches
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_usec == 0
    assert Notifier({"WATCHDOG_USEC": "x"}).watchdog_usec == 0
