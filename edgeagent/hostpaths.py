"""The one host-root object: every host path the agent touches goes through it (`--root`).

Under a root other than ``/``, symlinks are resolved the way openat2(RESOLVE_IN_ROOT) would:
an absolute target starts again at the root, ``..`` stops at the root, so no path, whatever
links a fake or copied host holds (``/etc/nv_tegra_release -> /etc/shadow``,
``dev -> ../../../..``), ever leads outside it. Python 3.8 has no openat2, so the walk is done
here with lstat/readlink, component by component; reads then open the resolved path with
O_NOFOLLOW, so a link put in place of the last component after the walk is refused, not
followed. (A directory swapped for a link between the walk and the open is not defended
against: --root trees are copies the operator chose, not a filesystem an attacker races.)
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from typing import List, Optional, Tuple

# Linux gives up after 40 links in one lookup (MAXSYMLINKS); so do we.
MAX_SYMLINKS = 40


def is_absent(error: OSError) -> bool:
    """True when ``error`` says the path does not exist (ENOENT, ENOTDIR), as opposed to a
    failure to check (EACCES, EMFILE, ENFILE, EIO...), which says nothing about the path."""
    return error.errno in (errno.ENOENT, errno.ENOTDIR)


class HostRoot:
    """Maps absolute host paths (``/proc/meminfo``) to paths under the chosen root.

    With root ``/`` it is the identity; tests and ``--demo`` point it at a folder that holds a
    whole fake host.
    """

    __slots__ = ("root",)

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root)

    # --- mapping --------------------------------------------------------------------------

    def path(self, host_path: str) -> str:
        """The real path of ``host_path``, its directories resolved inside the root and its last
        component left as it is (lstat semantics: a link there stays a link, so callers can
        readlink, unlink or replace it). To read a file, use :meth:`open`, :meth:`read_bytes`
        or :meth:`resolve`, which follow the last link too."""
        parts = self._parts(host_path)
        if self.root == "/":
            return "/" + "/".join(parts)
        if not parts:
            return self.root
        parent = self._walk(parts[:-1])
        return os.path.join(parent, parts[-1])

    def resolve(self, host_path: str) -> str:
        """The real path of ``host_path`` with every link, the last one too, resolved inside the
        root. Components that do not exist are kept (so the path can be created)."""
        parts = self._parts(host_path)
        if self.root == "/":
            return "/" + "/".join(parts)
        return self._walk(parts)

    @staticmethod
    def _parts(host_path: str) -> List[str]:
        if not host_path.startswith("/"):
            raise ValueError("host paths are absolute: %r" % host_path)
        # Normalised first, as the host would: "/.." is "/" there, so no path leaves the root.
        return [p for p in os.path.normpath(host_path).split("/") if p]

    def _walk(self, parts: List[str]) -> str:
        """Resolve ``parts`` (components below the root) inside the root; OSError(ELOOP) after
        MAX_SYMLINKS links."""
        done: List[str] = []           # resolved components below the root, none of them a link
        todo = list(reversed(parts))
        links = 0
        missing = False                # once a component is absent, nothing below can be a link
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            real = os.path.join(self.root, *done, part)
            if not missing:
                try:
                    st = os.lstat(real)
                except OSError:
                    # Absent, or not checkable (EACCES...): either way the kernel cannot go
                    # through it either, so the rest is kept literally and the caller's own
                    # open or stat reports the real error.
                    missing = True
                else:
                    if stat.S_ISLNK(st.st_mode):
                        links += 1
                        if links > MAX_SYMLINKS:
                            raise OSError(errno.ELOOP, "too many levels of symbolic links",
                                          os.path.join(self.root, *parts))
                        target = os.readlink(real)
                        if target.startswith("/"):
                            done = []
                        todo.extend(reversed(target.split("/")))
                        continue
            done.append(part)
        return os.path.join(self.root, *done)

    # --- reads ------------------------------------------------------------------------------

    def open(self, host_path: str, flags: int = os.O_RDONLY) -> int:
        """An fd for ``host_path`` resolved inside the root. Non-blocking, so that a FIFO
        planted where a file should be cannot hang the reader."""
        flags |= os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
        if self.root != "/":
            flags |= getattr(os, "O_NOFOLLOW", 0)
        return os.open(self.resolve(host_path), flags)

    def read_bytes(self, host_path: str, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of a regular file (or a /proc, /sys pseudo-file)."""
        fd = self.open(host_path)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", host_path)
            if not stat.S_ISREG(mode):   # a FIFO, socket or device planted for a file
                raise OSError(errno.EINVAL, "not a regular file", host_path)
            chunks = []
            left = limit
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_text(self, host_path: str, limit: int = 1 << 20) -> str:
        return self.read_bytes(host_path, limit).decode("utf-8", "replace")

    def stat(self, host_path: str) -> os.stat_result:
        """stat() inside the root; OSError as os.stat raises it (see :func:`is_absent`)."""
        return os.stat(self.resolve(host_path), follow_symlinks=self.root == "/")

    def lstat(self, host_path: str) -> os.stat_result:
        return os.lstat(self.path(host_path))

    def _mode(self, host_path: str) -> Optional[int]:
        try:
            return self.stat(host_path).st_mode
        except (OSError, ValueError):
            return None

    def exists(self, host_path: str) -> bool:
        """Like os.path.exists: False also when the path could not be checked. Code that must
        tell "absent" from "could not check" uses :meth:`stat` and :func:`is_absent`."""
        return self._mode(host_path) is not None

    def lexists(self, host_path: str) -> bool:
        try:
            self.lstat(host_path)
        except OSError:
            return False
        return True

    def isdir(self, host_path: str) -> bool:
        mode = self._mode(host_path)
        return mode is not None and stat.S_ISDIR(mode)

    def isfile(self, host_path: str) -> bool:
        mode = self._mode(host_path)
        return mode is not None and stat.S_ISREG(mode)

    def islink(self, host_path: str) -> bool:
        try:
            return stat.S_ISLNK(self.lstat(host_path).st_mode)
        except OSError:
            return False

    def readlink(self, host_path: str) -> str:
        return os.readlink(self.path(host_path))

    def listdir(self, host_path: str) -> List[str]:
        """Names in a directory inside the root, sorted."""
        return sorted(os.listdir(self.resolve(host_path)))

    # --- globbing ---------------------------------------------------------------------------

    def glob(self, pattern: str, strict: bool = False) -> List[str]:
        """Host paths matching a host glob pattern, sorted; every directory on the way is
        resolved inside the root. Like glob.glob, a directory that cannot be listed matches
        nothing, unless ``strict``: then a failure other than "absent" raises OSError, so that
        a caller can tell "no such device" from "could not look"."""
        parts = self._parts(pattern)
        found: List[Tuple[str, ...]] = [()]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: List[Tuple[str, ...]] = []
            for prefix in found:
                if not _has_magic(part):
                    nxt.append(prefix + (part,))
                    continue
                try:
                    names = self.listdir("/" + "/".join(prefix))
                except OSError as e:
                    if strict and not is_absent(e):
                        raise
                    continue
                hidden = part.startswith(".")
                nxt.extend(prefix + (n,) for n in fnmatch.filter(names, part)
                           if hidden or not n.startswith("."))
            found = nxt if last else [p for p in nxt if self._dir_or_strict(p, strict)]
        out = []
        for p in found:
            host = "/" + "/".join(p)
            # Unlike glob.glob, a dangling link (or one that leads out of the root, which is
            # the same thing here) matches nothing: it is no device and no file.
            try:
                self.stat(host)
            except OSError as e:
                if strict and not is_absent(e):
                    raise
                continue
            out.append(host)
        return sorted(set(out))

    def _dir_or_strict(self, parts: Tuple[str, ...], strict: bool) -> bool:
        try:
            return stat.S_ISDIR(self.stat("/" + "/".join(parts)).st_mode)
        except OSError as e:
            if strict and not is_absent(e):
                raise
            return False

    def __repr__(self) -> str:
        return "HostRoot(%r)" % self.root


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")
