"""Pure data: what the host-reading layer (scan.py) read, and what the next health probe must
read. One ``HostFacts`` for both the full scan and the fast probe: each fills the fields it
read and leaves the others empty."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, FrozenSet, Mapping, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.discovery.devicetree import DeviceTree


@dataclass(frozen=True)
class UsbNode:
    """A USB device in sysfs (/sys/bus/usb/devices/<port>)."""

    port: str          # sysfs name, "2-1.3": stable for a physical port across re-plugs
    vendor: str        # 4 lowercase hex digits
    product: str
    devnode: Optional[str] = None   # /dev/bus/usb/BBB/DDD, None when busnum/devnum are unreadable

    @property
    def path(self) -> str:
        return "/sys/bus/usb/devices/" + self.port


@dataclass(frozen=True)
class HostFacts:
    """Raw facts read from the host in one I/O step; everything downstream is pure."""

    # the full scan (discovery)
    tree: Optional["DeviceTree"] = None
    tree_error: Optional[str] = None
    nv_tegra_release: Optional[str] = None
    meminfo: Optional[str] = None
    soc0_family: Optional[str] = None
    soc0_soc_id: Optional[str] = None
    soc0_machine: Optional[str] = None
    dev_nodes: Tuple[str, ...] = ()          # host paths under /dev that match devnodes.DEV_GLOBS
    usb: Tuple[UsbNode, ...] = ()
    errors: Tuple[str, ...] = ()             # probes that failed; the others still count
    # the health probe (a ScanPlan's paths and globs)
    existing: FrozenSet[str] = frozenset()   # host paths that exist
    # Paths (and glob patterns) that could not be checked: a stat or listing failed with
    # something other than "absent" (EMFILE, ENFILE, EACCES, EIO). Not evidence of absence.
    unknown: FrozenSet[str] = frozenset()
    globs: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)  # pattern -> matches
    gpu_status: Optional[str] = None    # live devicetree status; None: not readable, use inventory


@dataclass(frozen=True)
class ScanPlan:
    """What the next health probe must look at (pure output of the device plugin's model)."""

    paths: Tuple[str, ...]
    globs: Tuple[str, ...]
    gpu_node: Optional[str]        # devicetree path of the GPU whose status to re-read
    usb: bool
