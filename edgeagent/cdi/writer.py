"""I/O: write the agent's CDI specs atomically under the host root, and remove them.

A runtime may read a spec at any moment (containerd and CRI-O watch the spec directories with
inotify), so a spec is never seen half-written: temp file in the same directory, fsync, rename,
then fsync of the directory so the rename survives a power cut.
"""

from __future__ import annotations

import errno
import os
from typing import Iterable, List

from edgeagent.atomicfile import write_atomic
from edgeagent.hostpaths import HostRoot

SPEC_MODE = 0o644   # runtimes and `nvidia-ctk cdi list` read it unprivileged


def write_if_changed(root: HostRoot, host_path: str, data: bytes) -> bool:
    """Write ``data`` at ``host_path`` unless the file already holds exactly it; True when
    written. The directory is created (0755) when missing; /var/run is a link to /run on
    every systemd host, resolved inside the root."""
    path = root.resolve(host_path)
    try:
        with open(path, "rb") as f:
            if f.read(len(data) + 1) == data and os.fstat(f.fileno()).st_mode & 0o777 == \
                    SPEC_MODE:
                return False
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
    write_atomic(path, data, SPEC_MODE)
    return True


def remove(root: HostRoot, host_paths: Iterable[str]) -> List[str]:
    """Remove the specs that exist; the host paths removed."""
    removed: List[str] = []
    for host_path in host_paths:
        try:
            os.unlink(root.resolve(host_path))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        removed.append(host_path)
    return removed

