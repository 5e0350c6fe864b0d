"""The one I/O step of discovery: read everything it needs from the host root into HostFacts.

Each probe fails alone (recorded in ``HostFacts.errors``); a missing file is simply absent.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError
from edgeagent.discovery.dirtree import read_dir_tree
from edgeagent.discovery.fdt import MAX_BLOB_BYTES, parse_fdt
from edgeagent.discovery.inventory import HostFacts, Inventory, UsbDevice, build_inventory
from edgeagent.hostpaths import HostRoot

TREE_DIRS = ("/proc/device-tree", "/sys/firmware/devicetree/base")
TREE_BLOB = "/sys/firmware/fdt"
# /dev entries discovery and the device plugin care about; globbing all of /dev is cheap enough
# (a few hundred entries) but these keep the facts small.
DEV_GLOBS = ("/dev/nvhost-*", "/dev/nvgpu/igpu*/*", "/dev/nvidia*", "/dev/nvmap",
             "/dev/apex_*", "/dev/nvdla*")


def read_fdt_file(path: str, source: Optional[str] = None) -> DeviceTree:
    """Read and parse a blob file, bounded in size; DeviceTreeError on any failure."""
    source = source or path
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_BLOB_BYTES + 1)
    except OSError as e:
        raise DeviceTreeError("%s: %s" % (source, e.strerror or e)) from None
    return parse_fdt(blob, source)


def read_devicetree(root: HostRoot) -> Tuple[Optional[DeviceTree], Optional[str]]:
    """The host's tree: directory form first, then the raw blob. (None, None) without any tree
    (an x86 server); (None, error) when a tree exists but none of its forms could be read."""
    errors: List[str] = []
    for host_path in TREE_DIRS:
        real = root.path(host_path)
        if os.path.islink(real) and os.readlink(real).startswith("/"):
            # /proc/device-tree is an absolute link to /sys/firmware/devicetree/base: under
            # --root it must lead into the root, not to this machine's own tree.
            real = root.path(os.path.normpath(os.readlink(real)))
        if os.path.isdir(real):
            try:
                return read_dir_tree(real, host_path), None
            except DeviceTreeError as e:
                errors.append(str(e))
    if os.path.exists(root.path(TREE_BLOB)):
        try:
            return read_fdt_file(root.path(TREE_BLOB), TREE_BLOB), None
        except DeviceTreeError as e:
            errors.append(str(e))
    return None, ("; ".join(errors) or None)


def _read_optional(root: HostRoot, host_path: str, errors: List[str],
                   limit: int = 1 << 16) -> Optional[str]:
    try:
        return root.read_text(host_path, limit)
    except FileNotFoundError:
        return None
    except OSError as e:
        errors.append("%s: %s" % (host_path, e.strerror or e))
        return None


def _usb_devices(root: HostRoot, errors: List[str]) -> Tuple[UsbDevice, ...]:
    out = []
    for path in root.glob("/sys/bus/usb/devices/*/idVendor"):
        base = path.rsplit("/", 1)[0]
        vendor = _read_optional(root, path, errors, 16)
        product = _read_optional(root, base + "/idProduct", errors, 16)
        if vendor and product:
            out.append(UsbDevice(base, vendor.strip().lower(), product.strip().lower()))
    return tuple(out)


def scan_host(root: HostRoot, fdt_file: Optional[str] = None) -> HostFacts:
    """Read every host fact discovery needs. ``fdt_file`` (a real path) replaces the host tree."""
    errors: List[str] = []
    if fdt_file is not None:
        tree, tree_error = read_fdt_file(fdt_file), None
    else:
        tree, tree_error = read_devicetree(root)
    dev_nodes: List[str] = []
    for pattern in DEV_GLOBS:
        dev_nodes.extend(root.glob(pattern))
    return HostFacts(
        tree=tree,
        tree_error=tree_error,
        nv_tegra_release=_read_optional(root, "/etc/nv_tegra_release", errors),
        meminfo=_read_optional(root, "/proc/meminfo", errors),
        soc0_family=_read_optional(root, "/sys/devices/soc0/family", errors, 256),
        soc0_soc_id=_read_optional(root, "/sys/devices/soc0/soc_id", errors, 256),
        soc0_machine=_read_optional(root, "/sys/devices/soc0/machine", errors, 256),
        dev_nodes=tuple(sorted(set(dev_nodes))),
        usb_devices=_usb_devices(root, errors),
        errors=tuple(errors),
    )


def discover(root: HostRoot, fdt_file: Optional[str] = None) -> Inventory:
    """scan_host + build_inventory; raises DeviceTreeError when a tree exists but is unreadable."""
    facts = scan_host(root, fdt_file)
    if facts.tree is None and facts.tree_error:
        raise DeviceTreeError(facts.tree_error)
    return build_inventory(facts)
