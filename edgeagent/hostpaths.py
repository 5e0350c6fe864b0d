"""The one host-root object: every host path the agent touches goes through it (`--root`)."""

from __future__ import annotations

import os
from typing import List


class HostRoot:
    """Maps absolute host paths (``/proc/meminfo``) to paths under the chosen root.

    With root ``/`` it is the identity; tests and ``--demo`` point it at a folder that holds a
    whole fake host.
    """

    __slots__ = ("root",)

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root)

    def path(self, host_path: str) -> str:
        """Return the real path of ``host_path`` (absolute, as seen on the host)."""
        if not host_path.startswith("/"):
            raise ValueError("host paths are absolute: %r" % host_path)
        if self.root == "/":
            return os.path.normpath(host_path)
        # Normalised first, as the host would: "/.." is "/" there, so no path leaves the root.
        return os.path.normpath(self.root + os.path.normpath(host_path))

    def host_path(self, real_path: str) -> str:
        """The inverse of :meth:`path`: how a real path under the root looks on the host."""
        if self.root == "/":
            return real_path
        rel = os.path.relpath(real_path, self.root)
        return "/" + ("" if rel == "." else rel)

    def exists(self, host_path: str) -> bool:
        return os.path.exists(self.path(host_path))

    def read_text(self, host_path: str, limit: int = 1 << 20) -> str:
        with open(self.path(host_path), "rb") as f:
            return f.read(limit).decode("utf-8", "replace")

    def read_bytes(self, host_path: str, limit: int = 1 << 20) -> bytes:
        with open(self.path(host_path), "rb") as f:
            return f.read(limit)

    def glob(self, pattern: str) -> List[str]:
        """Host paths matching a host glob pattern, sorted."""
        import glob as _glob

        if not pattern.startswith("/"):
            raise ValueError("host paths are absolute: %r" % pattern)
        # The root is a literal folder: a "[" in its name must not act as a pattern.
        real = _glob.escape(self.root) + os.path.normpath(pattern) if self.root != "/" else \
            os.path.normpath(pattern)
        return sorted(self.host_path(p) for p in _glob.glob(real))

    def __repr__(self) -> str:
        return "HostRoot(%r)" % self.root
