"""Reads the devicetree in its directory form (/proc/device-tree, /sys/firmware/devicetree/base).

I/O. The walk goes by directory fd (scandir on an fd, openat with O_NOFOLLOW), so no link inside
the tree is ever followed, whatever it points at, and the same bounds as the blob parser hold
(nodes, properties, names and paths; here also the bytes read in total).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Dict, List

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError, DtNode, child_path
from edgeagent.discovery.fdt import MAX_BLOB_BYTES, MAX_DEPTH, TreeBudget

MAX_PROPERTY_BYTES = 1 << 20
# All properties together: no more than the largest blob we accept.
MAX_TREE_BYTES = MAX_BLOB_BYTES
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def read_dir_tree(directory: str, source: str) -> DeviceTree:
    """Read a directory tree: folders are nodes, files are properties (raw bytes).

    ``directory`` is a real path, already resolved inside the host root (HostRoot.resolve);
    links below it are not nodes and not properties."""

    def fail(why: str) -> DeviceTreeError:
        return DeviceTreeError("%s: %s" % (source, why))

    budget = TreeBudget(fail)
    total = [0]

    def read_value(dir_fd: int, name: str, path: str) -> bytes:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            raise fail("cannot read %s: %s" % (path, e.strerror)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise fail("%s is not a regular file" % path)
            chunks = []
            size = 0
            while size <= MAX_PROPERTY_BYTES:
                chunk = os.read(fd, MAX_PROPERTY_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as e:
            raise fail("cannot read %s: %s" % (path, e.strerror)) from None
        finally:
            os.close(fd)
        if size > MAX_PROPERTY_BYTES:
            raise fail("property %s is over %d bytes" % (path, MAX_PROPERTY_BYTES))
        total[0] += size
        if total[0] > MAX_TREE_BYTES:
            raise fail("properties over %d bytes in total" % MAX_TREE_BYTES)
        return b"".join(chunks)

    def read(fd: int, name: str, path: str, depth: int) -> DtNode:
        if depth > MAX_DEPTH:
            raise fail("nodes nested deeper than %d" % MAX_DEPTH)
        budget.node(path)
        props: Dict[str, bytes] = {}
        children: List[DtNode] = []
        try:
            with os.scandir(fd) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as e:
            raise fail("cannot list %s: %s" % (path, e.strerror)) from None
        for entry in entries:
            # The kernel's own links (/proc/device-tree itself is one) are followed only for the
            # top folder, by the caller; inside the tree, a link is not a node.
            here = child_path(path, entry.name)
            if entry.is_dir(follow_symlinks=False):
                try:
                    child_fd = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    raise fail("cannot list %s: %s" % (here, e.strerror)) from None
                try:
                    children.append(read(child_fd, entry.name, here, depth + 1))
                finally:
                    os.close(child_fd)
            elif entry.is_file(follow_symlinks=False):
                budget.prop()
                budget.name(entry.name)
                props[entry.name] = read_value(fd, entry.name, here)
        # The kernel adds a "name" property to every node of the directory form, the root's
        # being empty (drivers/of/fdt.c, populate_properties); blobs (v17) carry none, so drop
        # it to give both forms the same model.
        if props.get("name") == name.split("@")[0].encode() + b"\0":
            del props["name"]
        return DtNode(name if path != "/" else "", path, props, tuple(children))

    try:
        top = os.open(directory, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise fail("not a directory") from None
        raise fail("cannot open: %s" % e.strerror) from None
    try:
        root = read(top, "", "/", 0)
    finally:
        os.close(top)
    if not root.props and not root.children:
        # A mount point left empty (a masked /sys/firmware) is no tree; let the next form try.
        raise fail("empty directory")
    return DeviceTree(root, source)
