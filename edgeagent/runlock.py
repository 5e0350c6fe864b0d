"""One agent per host: an exclusive ``flock`` on ``<root>/run/edgeagent/lock``, held for the life
of the process (the kernel drops it when the process dies, however it dies). Two agents would
otherwise take each other's device-plugin socket forever."""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Optional

from edgeagent.errors import OperatorError

LOCK_PATH = "/run/edgeagent/lock"          # RuntimeDirectory=edgeagent in the unit


class AlreadyRunning(OperatorError):
    pass


class RunLock:
    """The single-instance lock. ``acquire`` raises AlreadyRunning (one line, exit 2) when
    another process holds it; returns False when it cannot be taken at all (a read-only or
    root-owned /run for an unprivileged run): the caller decides whether that matters."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None
        self.problem: Optional[str] = None
        self.no_run_dir = False    # <root>/run is missing: a fake or image root, not a host

    def acquire(self) -> bool:
        run_dir = os.path.dirname(self.path)
        try:
            # Only the last level is made: a --root without run/ (a read-only or packaged tree)
            # is not written into; on a host /run exists and the unit makes /run/edgeagent.
            if not os.path.isdir(run_dir):
                self.no_run_dir = not os.path.isdir(os.path.dirname(run_dir))
                os.mkdir(run_dir, 0o755)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            self.problem = "%s: %s" % (self.path, e.strerror or e)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunning(
                    "another edgeagent%s is running on this host (it holds %s); stop it first "
                    "(sudo systemctl stop edgeagent)" % (
                        " (pid %s)" % holder if holder else "", self.path)) from None
            self.problem = "%s: %s" % (self.path, e.strerror or e)
            return False
        # The holder's pid, for the next one's error line; the lock is the flock, not this text.
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> Optional[str]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isascii() and text.isdigit() else None
