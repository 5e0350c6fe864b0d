"""I/O: replace a file so that no reader and no power cut ever sees half of it."""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable


def write_atomic(path: str, data: bytes, mode: int, dir_mode: int = 0o755,
                 prefix: str = ".edgeagent-") -> None:
    """Write ``data`` to ``path`` with ``mode`` (see :func:`replace_atomic`)."""
    replace_atomic(path, lambda f: f.write(data), mode, dir_mode, prefix)


def replace_atomic(path: str, fill: Callable[[BinaryIO], object], mode: int,
                   dir_mode: int = 0o755, prefix: str = ".edgeagent-") -> None:
    """Replace ``path`` with what ``fill(f)`` writes, with ``mode``: a temp file in the same
    directory (named ``*.tmp``, so nothing scanning for specs or checkpoints picks it up),
    fsync, rename, then fsync of the directory so the rename survives a power cut. The
    directory is created with ``dir_mode`` when missing. A process that has the old file open
    keeps reading it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=dir_mode, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Best effort: some filesystems refuse to open or fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
