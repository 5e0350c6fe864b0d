"""Reads the devicetree in its directory form (/proc/device-tree, /sys/firmware/devicetree/base)."""

from __future__ import annotations

import os
from typing import Dict, List

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError, DtNode, child_path
from edgeagent.discovery.fdt import MAX_DEPTH, MAX_NODES

MAX_PROPERTY_BYTES = 1 << 20


def read_dir_tree(directory: str, source: str) -> DeviceTree:
    """Read a directory tree: folders are nodes, files are properties (raw bytes)."""
    count = [0]

    def read(real: str, name: str, path: str, depth: int) -> DtNode:
        if depth > MAX_DEPTH:
            raise DeviceTreeError("%s: nodes nested deeper than %d" % (source, MAX_DEPTH))
        count[0] += 1
        if count[0] > MAX_NODES:
            raise DeviceTreeError("%s: more than %d nodes" % (source, MAX_NODES))
        props: Dict[str, bytes] = {}
        children: List[DtNode] = []
        try:
            entries = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError as e:
            raise DeviceTreeError("%s: cannot list %s: %s" % (source, path, e.strerror)) from None
        for entry in entries:
            # The kernel's own links (/proc/device-tree itself is one) are followed only for the
            # top folder; inside the tree, a link is not a node.
            if entry.is_dir(follow_symlinks=False):
                children.append(read(entry.path, entry.name, child_path(path, entry.name),
                                     depth + 1))
            elif entry.is_file(follow_symlinks=False):
                try:
                    with open(entry.path, "rb") as f:
                        value = f.read(MAX_PROPERTY_BYTES + 1)
                except OSError as e:
                    raise DeviceTreeError("%s: cannot read %s: %s"
                                          % (source, child_path(path, entry.name), e.strerror)
                                          ) from None
                if len(value) > MAX_PROPERTY_BYTES:
                    raise DeviceTreeError("%s: property %s is over %d bytes"
                                          % (source, child_path(path, entry.name),
                                             MAX_PROPERTY_BYTES))
                props[entry.name] = value
        # The kernel adds a "name" property to every node of the directory form, the root's
        # being empty (drivers/of/fdt.c, populate_properties); blobs (v17) carry none, so drop
        # it to give both forms the same model.
        if props.get("name") == name.split("@")[0].encode() + b"\0":
            del props["name"]
        return DtNode(name if path != "/" else "", path, props, tuple(children))

    if not os.path.isdir(directory):
        raise DeviceTreeError("%s: not a directory" % source)
    root = read(os.path.realpath(directory), "", "/", 0)
    if not root.props and not root.children:
        # A mount point left empty (a masked /sys/firmware) is no tree; let the next form try.
        raise DeviceTreeError("%s: empty directory" % source)
    return DeviceTree(root, source)


def write_dir_tree(tree: DeviceTree, directory: str) -> None:
    """Write a tree in the directory form (tests and the demo host use it)."""
    for node in tree.walk():
        real = os.path.join(directory, node.path.lstrip("/"))
        os.makedirs(real, exist_ok=True)
        for pname, value in node.props.items():
            with open(os.path.join(real, pname), "wb") as f:
                f.write(value)
