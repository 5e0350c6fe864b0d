"""Unix socket helpers: bind with mode 0600, identify a socket file, and reach sockets whose
path is longer than sun_path allows (a deep ``--root``)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
from typing import Iterator, NamedTuple, Optional

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SUN_PATH = 107


def socket_name(resource_name: str) -> str:
    """``nvidia.com/gpu`` -> ``edgeagent-nvidia.com-gpu.sock`` (a file name in the kubelet's
    directory, unique per resource). Here, not in plugin.py, so that doctor can name the
    sockets without importing grpclib and betterproto."""
    return "edgeagent-%s.sock" % re.sub(r"[^A-Za-z0-9_.-]", "-", resource_name)


class FileIdentity(NamedTuple):
    inode: int
    ctime_ns: int
    is_socket: bool


def identity(path: str) -> Optional[FileIdentity]:
    """Who a file is: a re-created file differs in inode or ctime (an inode number may be reused
    at once, its ctime not). None when the path does not exist; any other failure (ENOMEM,
    EIO, EACCES) raises OSError, since it says nothing about the file being gone."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return FileIdentity(st.st_ino, st.st_ctime_ns, stat.S_ISSOCK(st.st_mode))


def same_file(a: Optional[FileIdentity], b: Optional[FileIdentity]) -> bool:
    return a is not None and b is not None and (a.inode, a.ctime_ns) == (b.inode, b.ctime_ns)


@contextlib.contextmanager
def reachable(path: str) -> Iterator[str]:
    """A path for bind()/connect() that names ``path``: itself when short enough, else
    ``/proc/self/fd/N/<name>`` through a descriptor of its directory (Linux resolves it like the
    real path). Use the yielded path only inside the ``with`` block."""
    if len(path.encode()) <= MAX_SUN_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_PATH", 0)
    fd = os.open(directory, flags)
    try:
        short = "/proc/self/fd/%d/%s" % (fd, name)
        if len(short.encode()) > MAX_SUN_PATH:
            raise OSError("socket name too long: %s" % path)
        yield short
    finally:
        os.close(fd)


def accepts(path: str) -> bool:
    """Whether something listens on the unix socket ``path`` (never blocks: a unix connect
    is answered at once, EAGAIN when the listener's backlog is full)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        with reachable(path) as p:
            s.connect(p)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except BlockingIOError:
        return True
    finally:
        s.close()
    return True


def connect_problem(path: str, timeout: float) -> Optional[str]:
    """None when the unix socket at ``path`` accepts a connection within ``timeout``, else
    why not (for doctor's lines)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with reachable(path) as p:
            s.connect(p)
        return None
    except OSError as e:
        return e.strerror or str(e)
    finally:
        s.close()


def bind_unix(path: str) -> socket.socket:
    """A listening-ready unix stream socket bound at ``path``, mode 0600: only root (the
    kubelet) may connect. A stale socket file there is removed; one that somebody still serves
    is not (OSError EADDRINUSE): a second agent on the host would otherwise take the socket
    from the first, and the first take it back after its next check, forever."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError("%s exists and is not a socket" % path)
        if accepts(path):
            raise OSError(errno.EADDRINUSE, "served by another process (another edgeagent "
                          "on this host?)")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable(path) as p:
            sock.bind(p)
        # The kubelet's directory is root-only (0750 or stricter), so the moment between bind
        # and chmod exposes nothing.
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_if_same(path: str, ident: Optional[FileIdentity]) -> bool:
    """Unlink ``path`` when it is still the file ``ident`` names (never someone else's)."""
    try:
        if not same_file(identity(path), ident):
            return False
        os.unlink(path)
    except OSError:
        return False
    return True
