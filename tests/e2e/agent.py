"""The one-file build ($EDGEAGENT_PYZ) run as a process, the way systemd runs it.

``AgentProcess`` starts ``edgeagent.pyz --root <fixture host> run ...`` with its own
``NOTIFY_SOCKET`` (a datagram socket the test reads, like systemd's), logs to a file, and can be
stopped with SIGTERM or SIGKILL. Helpers poll with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from tests.tools import wait_until

TRACEBACK = "Traceback (most recent call last)"


def pyz_path() -> str:
    """$EDGEAGENT_PYZ (exported by ./build.sh test): skip without it locally, fail in CI."""
    path = os.environ.get("EDGEAGENT_PYZ")
    if path and os.path.isfile(path):
        return path
    message = ("EDGEAGENT_PYZ is %s: the end-to-end tests run the one-file build "
               "(./build.sh test builds it and sets the variable)"
               % ("unset" if not path else "not a file (%s)" % path))
    if os.environ.get("EDGEAGENT_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


def pyz_python() -> str:
    """The interpreter the pyz was built for: its shebang names ``python3`` on PATH, and its
    compiled wheels (aiohttp, multidict...) only load in that Python's minor version. The test
    Python may be another one (the suite also runs on 3.8)."""
    exe = os.environ.get("EDGEAGENT_PYZ_PYTHON") or shutil.which("python3")
    if not exe:
        pytest.fail("no python3 on PATH to run the pyz with")
    return exe


def run_pyz(args: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 60.0,
            shiv_root: Optional[str] = None) -> subprocess.CompletedProcess:
    """One short command of the pyz (``discover``, ``doctor``...), output captured as text."""
    full_env = dict(os.environ)
    for key in list(full_env):
        if key.startswith("EDGEAGENT_") and key not in ("EDGEAGENT_PYZ",):
            del full_env[key]  # the host's settings must not leak into a test
    full_env.pop("NOTIFY_SOCKET", None)
    if shiv_root:
        full_env["SHIV_ROOT"] = shiv_root
    full_env.update(env or {})
    return subprocess.run([pyz_python(), pyz_path()] + list(args), env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


class AgentProcess:
    """``edgeagent run`` on a fixture host. ``args`` follow ``run``."""

    def __init__(self, root: str, args: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                 shiv_root: Optional[str] = None, log_level: str = "info") -> None:
        self.root = root
        self.args = list(args)
        self.env = dict(env or {})
        self.shiv_root = shiv_root
        self.log_level = log_level
        self.workdir = tempfile.mkdtemp(prefix="eaproc-", dir="/tmp")
        self.log_path = os.path.join(self.workdir, "agent.log")
        self.notify_path = os.path.join(self.workdir, "notify")
        self.proc: Optional[subprocess.Popen] = None
        self.notify: Optional[socket.socket] = None
        self.notifications: List[str] = []
        self.logs: List[str] = []        # the logs of earlier runs (restarts)
        self.started_at = 0.0

    def start(self) -> "AgentProcess":
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        self.notify.bind(self.notify_path)
        self.notify.setblocking(False)
        self.notifications = []
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("EDGEAGENT_") and key != "EDGEAGENT_PYZ":
                del env[key]
        if self.shiv_root:
            env["SHIV_ROOT"] = self.shiv_root
        env["NOTIFY_SOCKET"] = self.notify_path
        env.pop("JOURNAL_STREAM", None)
        env.update(self.env)
        cmd = [pyz_python(), pyz_path(), "--root", self.root, "--log-level", self.log_level,
               "run"] + self.args
        self.log_file = open(self.log_path, "a")
        self.log_offset = self.log_file.tell()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        return self

    # --- observing --------------------------------------------------------------------------

    def _drain_notify(self) -> None:
        if self.notify is None:
            return
        while True:
            try:
                data = self.notify.recv(65536)
            except (BlockingIOError, OSError):
                return
            self.notifications.extend(data.decode("utf-8", "replace").split("\n"))

    def log(self) -> str:
        """This run's log so far."""
        with open(self.log_path, errors="replace") as f:
            f.seek(self.log_offset)
            return f.read()

    def all_logs(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("agent exited with %s; log:\n%s" % (
                self.proc.returncode, self.log()[-4000:]))

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from spawn to READY=1 on the notify socket."""
        def ready() -> bool:
            self._check_alive()
            self._drain_notify()
            return "READY=1" in self.notifications

        wait_until(ready, timeout, "READY=1 from the agent", interval=0.01)
        return time.monotonic() - self.started_at

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        def seen() -> bool:
            self._check_alive()
            return self.log().count(text) >= count

        try:
            wait_until(seen, timeout, "%r in the agent log" % text)
        except AssertionError:
            raise AssertionError("%r not logged %d times in %.0fs; log tail:\n%s" % (
                text, count, timeout, self.log()[-3000:])) from None

    def assert_clean_log(self) -> None:
        """No traceback anywhere in every run's log: faults are logged as one line each."""
        text = self.all_logs()
        assert TRACEBACK not in text, "traceback in the agent log:\n%s" % text[-6000:]

    # --- stopping ---------------------------------------------------------------------------

    def terminate(self, timeout: float = 10.0) -> Tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("agent did not exit within %.0fs of SIGTERM; log:\n%s" % (
                timeout, self.log()[-3000:]))
        elapsed = time.monotonic() - t0
        self._closed()
        return code, elapsed

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._closed()

    def _closed(self) -> None:
        self.log_file.close()
        if self.notify is not None:
            self._drain_notify()
            self.notify.close()
            self.notify = None

    def stop(self) -> None:
        """Best-effort clean-up for fixtures."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(5)
            except AssertionError:
                pass
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def http_get(url: str, timeout: float = 5.0) -> Tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
