"""The host-reading layer (I/O): everything edgeagent reads about the hardware, through the one
HostRoot, into HostFacts. Two entry points: ``scan_host`` (the full scan discovery re-runs every
minute) and ``probe_host`` (the device plugin's fast health probe, which reads only what its
ScanPlan names). Container-runtime facts are the third source (runtimefacts.py).

Each read fails alone. A path that is absent (ENOENT, ENOTDIR) is absent; a read that failed for
another reason (EACCES, EMFILE, ENFILE, EIO) is recorded as such (``HostFacts.errors`` /
``HostFacts.unknown``) and never taken as "absent": 1,100 slow clients once exhausted the file
descriptors and a failed stat was read as "the DLA is gone".
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from edgeagent.discovery.devicetree import DeviceTree, DeviceTreeError
from edgeagent.discovery.devnodes import DEV_GLOBS
from edgeagent.discovery.dirtree import read_dir_tree
from edgeagent.discovery.facts import HostFacts, ScanPlan, UsbNode
from edgeagent.discovery.fdt import MAX_BLOB_BYTES, parse_fdt
from edgeagent.discovery.inventory import Inventory, build_inventory
from edgeagent.hostpaths import HostRoot, is_absent

log = logging.getLogger(__name__)

TREE_DIRS = ("/proc/device-tree", "/sys/firmware/devicetree/base")
TREE_BLOB = "/sys/firmware/fdt"
USB_DEVICES = "/sys/bus/usb/devices"


# --- the devicetree ---------------------------------------------------------------------------

def read_fdt_file(path: str, source: Optional[str] = None) -> DeviceTree:
    """Read and parse a blob file named by the operator (``discover --fdt``), bounded in size;
    DeviceTreeError on any failure."""
    source = source or path
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_BLOB_BYTES + 1)
    except OSError as e:
        raise DeviceTreeError("%s: %s" % (source, e.strerror or e)) from None
    return parse_fdt(blob, source)


def read_devicetree(root: HostRoot) -> Tuple[Optional[DeviceTree], Optional[str]]:
    """The host's tree: directory form first, then the raw blob. (None, None) without any tree
    (an x86 server); (None, error) when a tree exists but none of its forms could be read.
    /proc/device-tree is an absolute link to /sys/firmware/devicetree/base on a real host:
    resolved inside the root like every link, never to this machine's own tree."""
    errors: List[str] = []
    for host_path in TREE_DIRS:
        if root.isdir(host_path):
            try:
                return read_dir_tree(root.resolve(host_path), host_path), None
            except (DeviceTreeError, OSError) as e:
                errors.append(str(e))
    if root.lexists(TREE_BLOB):
        try:
            blob = root.read_bytes(TREE_BLOB, MAX_BLOB_BYTES + 1)
            return parse_fdt(blob, TREE_BLOB), None
        except OSError as e:
            errors.append("%s: %s" % (TREE_BLOB, e.strerror or e))
        except DeviceTreeError as e:
            errors.append(str(e))
    return None, ("; ".join(errors) or None)


def read_node_status(root: HostRoot, node_path: str) -> Optional[str]:
    """The live ``status`` of a devicetree node from the directory form of the tree ("okay"
    when the node has none, as the devicetree spec says); "absent" when the tree is there but
    the node is not; None when no directory form exists (a raw blob only: use the inventory)
    or when it could not be checked."""
    for tree in TREE_DIRS:
        try:
            root.stat(tree)
        except OSError as e:
            if is_absent(e):
                continue
            return None
        node = tree + ("" if node_path == "/" else node_path)
        try:
            root.stat(node)
        except OSError as e:
            return "absent" if is_absent(e) else None
        try:
            raw = root.read_bytes(node + "/status", 64)
        except OSError as e:
            return "okay" if is_absent(e) else None
        return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip() or "okay"
    return None


# --- small files and USB ----------------------------------------------------------------------

def _read_optional(root: HostRoot, host_path: str, errors: List[str],
                   limit: int = 1 << 16) -> Optional[str]:
    try:
        return root.read_text(host_path, limit)
    except OSError as e:
        if not is_absent(e):
            errors.append("%s: %s" % (host_path, e.strerror or e))
        return None


def read_usb(root: HostRoot, errors: List[str]) -> Tuple[Tuple[UsbNode, ...], Set[str]]:
    """USB devices with their /dev/bus/usb node (from busnum/devnum), and the sysfs or /dev
    paths that could not be checked."""
    unknown: Set[str] = set()
    nodes: List[UsbNode] = []
    try:
        found = root.glob(USB_DEVICES + "/*/idVendor", strict=True)
    except OSError as e:
        errors.append("%s: %s" % (USB_DEVICES, e.strerror or e))
        return (), {USB_DEVICES}
    for vendor_file in found:
        base = vendor_file.rsplit("/", 1)[0]
        before = len(errors)
        vendor = _read_optional(root, base + "/idVendor", errors, 16)
        product = _read_optional(root, base + "/idProduct", errors, 16)
        busnum = _read_optional(root, base + "/busnum", errors, 16)
        devnum = _read_optional(root, base + "/devnum", errors, 16)
        if len(errors) > before:
            unknown.add(base)
        vendor, product = (vendor or "").strip().lower(), (product or "").strip().lower()
        if not vendor or not product:
            continue
        devnode = None
        busnum, devnum = (busnum or "").strip(), (devnum or "").strip()
        if _ascii_digits(busnum) and _ascii_digits(devnum):
            devnode = "/dev/bus/usb/%03d/%03d" % (int(busnum), int(devnum))
        nodes.append(UsbNode(base.rsplit("/", 1)[-1], vendor, product, devnode))
    return tuple(nodes), unknown


def _ascii_digits(text: str) -> bool:
    # str.isdigit() is true for "١٢" and fullwidth digits too; sysfs numbers are ASCII.
    return 0 < len(text) <= 6 and all("0" <= c <= "9" for c in text)


# --- the full scan ----------------------------------------------------------------------------

def scan_host(root: HostRoot, fdt_file: Optional[str] = None) -> HostFacts:
    """Read every host fact discovery needs. ``fdt_file`` (a real path) replaces the host tree."""
    errors: List[str] = []
    if fdt_file is not None:
        tree, tree_error = read_fdt_file(fdt_file), None
    else:
        tree, tree_error = read_devicetree(root)
    dev_nodes: List[str] = []
    for pattern in DEV_GLOBS:
        try:
            dev_nodes.extend(root.glob(pattern, strict=True))
        except OSError as e:
            errors.append("%s: %s" % (pattern, e.strerror or e))
    usb, _ = read_usb(root, errors)
    return HostFacts(
        tree=tree,
        tree_error=tree_error,
        nv_tegra_release=_read_optional(root, "/etc/nv_tegra_release", errors),
        meminfo=_read_optional(root, "/proc/meminfo", errors),
        soc0_family=_read_optional(root, "/sys/devices/soc0/family", errors, 256),
        soc0_soc_id=_read_optional(root, "/sys/devices/soc0/soc_id", errors, 256),
        soc0_machine=_read_optional(root, "/sys/devices/soc0/machine", errors, 256),
        dev_nodes=tuple(sorted(set(dev_nodes))),
        usb=usb,
        errors=tuple(dict.fromkeys(errors)),
    )


def discover(root: HostRoot, fdt_file: Optional[str] = None) -> Inventory:
    """scan_host + build_inventory; raises DeviceTreeError when a tree exists but is unreadable."""
    facts = scan_host(root, fdt_file)
    if facts.tree is None and facts.tree_error:
        raise DeviceTreeError(facts.tree_error)
    return build_inventory(facts)


# --- the fast health probe --------------------------------------------------------------------

class RateLimitedLog:
    """Logs a message once per ``interval`` seconds per key, saying how many were held back:
    a probe that fails every two seconds must not write a line every two seconds."""

    def __init__(self, logger: logging.Logger, interval: float = 300.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: Dict[str, Tuple[float, int]] = {}
        self._lock = threading.Lock()        # probes run in worker threads

    def warning(self, key: str, message: str, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval:
                self._last[key] = (last[0], last[1] + 1)
                return False
            held = last[1] if last is not None else 0
            self._last[key] = (now, 0)
            if len(self._last) > 1024:       # keys are paths and errnos: keep the map small
                self._last = {key: self._last[key]}
        self.logger.warning("%s%s", message, " (%d more like it held back)" % held if held else "")
        return True


PROBE_LOG = RateLimitedLog(log)


def probe_host(root: HostRoot, plan: ScanPlan,
               problems: RateLimitedLog = PROBE_LOG) -> HostFacts:
    """Read what ``plan`` asks for: which paths exist, what the globs match, USB devices, the
    GPU's devicetree status. A path that could not be checked goes to ``unknown`` (and is
    logged, rate-limited), never to "absent"."""
    existing: List[str] = []
    unknown: Set[str] = set()

    def note(host_path: str, error: OSError) -> None:
        unknown.add(host_path)
        why = error.strerror or str(error)
        problems.warning("%s:%s" % (host_path, error.errno),
                         "cannot check %s (%s): keeping its previous health" % (host_path, why))

    for p in plan.paths:
        try:
            root.stat(p)
        except OSError as e:
            if not is_absent(e):
                note(p, e)
            continue
        existing.append(p)
    globs: Dict[str, Tuple[str, ...]] = {}
    for pattern in plan.globs:
        try:
            matches = tuple(root.glob(pattern, strict=True))
        except OSError as e:
            note(pattern, e)
            continue
        globs[pattern] = matches
        existing.extend(matches)
    usb: Tuple[UsbNode, ...] = ()
    if plan.usb:
        errors: List[str] = []
        usb, usb_unknown = read_usb(root, errors)
        for u in usb:
            if u.devnode is None:
                continue
            try:
                root.stat(u.devnode)
            except OSError as e:
                if not is_absent(e):
                    note(u.devnode, e)
                continue
            existing.append(u.devnode)
        for path in usb_unknown:
            unknown.add(path)
            problems.warning(path, "cannot read USB device %s: %s" % (path, "; ".join(errors)))
    status = read_node_status(root, plan.gpu_node) if plan.gpu_node else None
    return HostFacts(existing=frozenset(existing), unknown=frozenset(unknown), globs=globs,
                     gpu_status=status, usb=usb)


class ProbeWatch:
    """A cheap test of whether :func:`probe_host` of ``plan`` could now read something else.

    What a probe reads changes in a few places only: a device node added, removed or renamed
    changes the identity or mtime of the directory that holds it (devtmpfs, like any POSIX file
    system, updates a directory's mtime on every entry change), USB devices appear under
    ``/dev/bus/usb`` and ``USB_DEVICES``, and the GPU's status is one small file. The watch stats
    those directories and reads that file: a few system calls, about 6 us of CPU against 0.19 ms
    for a probe, so the device plugin can run it on its loop twice a second and probe only on a
    change. The directories are resolved inside the root once, when the watch is made; the full
    probe, still run every health interval, is the authority for anything this misses (a link
    swapped on the way to /dev, two changes that cancel out).

    Make the watch before the probe it guards: a change between the two is then seen as one.
    """

    __slots__ = ("_dirs", "_files", "_seen")

    def __init__(self, root: HostRoot, plan: ScanPlan) -> None:
        dirs: Set[str] = set()
        for path in plan.paths:
            dirs.add(path.rsplit("/", 1)[0] or "/")
        for pattern in plan.globs:
            # the longest directory prefix without a wildcard: a pattern's matches live below it
            head = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
            dirs.add(head.rsplit("/", 1)[0] or "/")
        files: List[str] = []
        if plan.usb:
            dirs.update(("/dev/bus/usb", USB_DEVICES))
            try:
                dirs.update(root.glob("/dev/bus/usb/*"))
            except OSError:
                pass
        if plan.gpu_node:
            for tree in TREE_DIRS:
                node = tree + ("" if plan.gpu_node == "/" else plan.gpu_node)
                dirs.add(node)
                files.append(node + "/status")
        self._dirs = tuple(sorted(root.resolve(d) for d in dirs))
        self._files = tuple(root.resolve(f) for f in files)
        self._seen = self._read()

    def _read(self) -> Tuple[object, ...]:
        out: List[object] = []
        for path in self._dirs:
            try:
                st = os.stat(path)
            except OSError as e:
                out.append(e.errno)
            else:
                out.append((st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        for path in self._files:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                out.append(e.errno)
                continue
            try:
                out.append(os.read(fd, 64))
            except OSError as e:
                out.append(e.errno)
            finally:
                os.close(fd)
        return tuple(out)

    def changed(self) -> bool:
        """True when anything watched differs from when the watch was made."""
        return self._read() != self._seen


async def until_due_or_changed(interval: float, probe_interval: float,
                               watch: Callable[[], Optional[ProbeWatch]]) -> None:
    """Sleep until the next full health check is due (``interval`` from now), or until the
    last check's watch (``watch()``, read again each time: the check replaces it) sees a
    change, looking every ``probe_interval``. The health loops of the device plugin and of DRA
    run it between their checks."""
    loop = asyncio.get_event_loop()
    due = loop.time() + interval
    while True:
        left = due - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(probe_interval, left))
        current = watch()
        if loop.time() < due and current is not None and current.changed():
            return
