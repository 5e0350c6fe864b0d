"""The device plugin's host I/O for health checks: run a model.ScanPlan, return HostFacts.

Blocking (stat, glob, a few small reads); the component runs it in a worker thread.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from edgeagent.deviceplugin.model import HostFacts, ScanPlan, UsbNode
from edgeagent.discovery.scan import TREE_DIRS
from edgeagent.hostpaths import HostRoot


def read_node_status(root: HostRoot, node_path: str) -> Optional[str]:
    """The live ``status`` of a devicetree node from the directory form of the tree ("okay"
    when the node has none, as the devicetree spec says); "absent" when the tree is there but
    the node is not; None when no directory form exists (a raw blob only: use the inventory)."""
    for tree in TREE_DIRS:
        base = root.path(tree)
        if not os.path.isdir(base):
            continue
        node = root.path(tree + ("" if node_path == "/" else node_path))
        if not os.path.isdir(node):
            return "absent"
        try:
            with open(os.path.join(node, "status"), "rb") as f:
                raw = f.read(64)
        except FileNotFoundError:
            return "okay"
        except OSError:
            return None
        return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip() or "okay"
    return None


def _read_small(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None


def read_usb(root: HostRoot) -> Tuple[Tuple[UsbNode, ...], List[str]]:
    """USB devices with their /dev/bus/usb node (from busnum/devnum), and the nodes that exist."""
    nodes: List[UsbNode] = []
    existing: List[str] = []
    for vendor_file in root.glob("/sys/bus/usb/devices/*/idVendor"):
        base = vendor_file.rsplit("/", 1)[0]
        real = root.path(base)
        vendor = _read_small(os.path.join(real, "idVendor"))
        product = _read_small(os.path.join(real, "idProduct"))
        if not vendor or not product:
            continue
        busnum = _read_small(os.path.join(real, "busnum"))
        devnum = _read_small(os.path.join(real, "devnum"))
        devnode = None
        if busnum and devnum and busnum.isdigit() and devnum.isdigit():
            devnode = "/dev/bus/usb/%03d/%03d" % (int(busnum), int(devnum))
            if os.path.exists(root.path(devnode)):
                existing.append(devnode)
        nodes.append(UsbNode(base.rsplit("/", 1)[-1], vendor.lower(), product.lower(), devnode))
    return tuple(nodes), existing


def scan(root: HostRoot, plan: ScanPlan) -> HostFacts:
    """Read what ``plan`` asks for."""
    existing = [p for p in plan.paths if os.path.exists(root.path(p))]
    globs: Dict[str, Tuple[str, ...]] = {}
    for pattern in plan.globs:
        matches = tuple(root.glob(pattern))
        globs[pattern] = matches
        existing.extend(matches)
    usb: Tuple[UsbNode, ...] = ()
    if plan.usb:
        usb, usb_existing = read_usb(root)
        existing.extend(usb_existing)
    status = read_node_status(root, plan.gpu_node) if plan.gpu_node else None
    return HostFacts(existing=frozenset(existing), globs=globs, gpu_status=status, usb=usb)
