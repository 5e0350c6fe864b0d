"""The single-instance lock, in process: flock semantics, the holder's pid in the message."""

import os
import subprocess
import sys

import pytest

from edgeagent.runlock import AlreadyRunning, RunLock
from tests.conftest import REPO


def test_held_lock_refuses_a_second_holder(tmp_path):
    (tmp_path / "run").mkdir()
    path = str(tmp_path / "run/edgeagent/lock")
    code = ("import sys, time; from edgeagent.runlock import RunLock; l = RunLock(sys.argv[1]); "
            "assert l.acquire(); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, path], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              universal_newlines=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning) as info:
            RunLock(path).acquire()
        message = str(info.value)
        assert "pid %d" % holder.pid in message and path in message and "\n" not in message
        assert info.value.exit_code == 2
    finally:
        holder.stdin.close()
        holder.wait(10)
    lock = RunLock(path)          # the holder exited: the kernel dropped its lock
    assert lock.acquire()
    with open(path) as f:
        assert f.read().strip() == str(os.getpid())
    lock.release()


def test_a_root_without_run_is_not_written_into(tmp_path):
    lock = RunLock(str(tmp_path / "run/edgeagent/lock"))
    assert lock.acquire() is False and "run/edgeagent" in lock.problem
    assert not (tmp_path / "run").exists()


def test_a_symlinked_lock_is_not_followed(tmp_path):
    (tmp_path / "run/edgeagent").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.symlink(str(target), str(tmp_path / "run/edgeagent/lock"))
    lock = RunLock(str(tmp_path / "run/edgeagent/lock"))
    assert lock.acquire() is False
    assert target.read_text() == "keep"
