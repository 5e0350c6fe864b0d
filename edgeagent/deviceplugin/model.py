"""Pure: which extended resources this node advertises, with which devices in which health.

The inventory, the config and a few host facts (which /dev nodes exist, the GPU's live devicetree
status, USB devices) go in; immutable :class:`Resource` values come out. The I/O that gathers the
facts lives in ``edgeagent/discovery/scan.py``; this module never touches the host.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from edgeagent.config import DevicePluginOptions, ResourceConfig
from edgeagent.discovery.devnodes import APEX_NODE as _APEX_NODE
from edgeagent.discovery.devnodes import EDGETPU_GLOBS, NVDLA_GLOBS, NVDLA_SUPPORT_NODES
from edgeagent.discovery.devnodes import NVDLA_NODE as _NVDLA_NODE
from edgeagent.discovery.facts import HostFacts, ScanPlan, UsbNode

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.discovery.inventory import Inventory

__all__ = ["HostFacts", "ScanPlan", "UsbNode"]   # the host-reading layer's types, re-exported

HEALTHY = "Healthy"        # the kubelet's constants (pluginapi.Healthy / pluginapi.Unhealthy)
UNHEALTHY = "Unhealthy"

GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
DLA_RESOURCE = "nvidia.com/dla"
EDGETPU_RESOURCE = "google.com/edgetpu"

MAX_DEVICE_ID = 63  # the kubelet's limit on Device.ID


@dataclass(frozen=True)
class Unit:
    """A physical device: what a container gets, and whether it works."""

    id: str
    paths: Tuple[str, ...]           # host device nodes a container needs
    healthy: bool
    reason: str = ""                 # why not healthy, for logs


@dataclass(frozen=True)
class Device:
    """One advertised device: a unit, or one time-slicing replica of it."""

    id: str
    unit: str
    healthy: bool

    @property
    def health(self) -> str:
        return HEALTHY if self.healthy else UNHEALTHY


@dataclass(frozen=True)
class Resource:
    name: str
    kind: str                        # gpu, nvdla, edgetpu, config
    units: Tuple[Unit, ...]
    replicas: int = 1                # advertised devices per unit
    max_per_container: int = 0       # 0: no limit beyond the device count
    gpu: bool = False                # Allocate goes through the GPU strategies

    # Resources are immutable and read on every Allocate and GetPreferredAllocation: with
    # sharing.replicas = 1024, building the device list each time cost about 1 ms.
    @cached_property
    def devices(self) -> Tuple[Device, ...]:
        out: List[Device] = []
        for u in self.units:
            if self.replicas == 1:
                out.append(Device(u.id, u.id, u.healthy))
            else:
                out.extend(Device(replica_id(u.id, k), u.id, u.healthy)
                           for k in range(1, self.replicas + 1))
        return tuple(out)

    @cached_property
    def _device_map(self) -> Dict[str, Device]:
        return {d.id: d for d in self.devices}

    def device_map(self) -> Dict[str, Device]:
        """Advertised devices by id (shared: do not modify)."""
        return self._device_map

    def unit(self, unit_id: str) -> Optional[Unit]:
        for u in self.units:
            if u.id == unit_id:
                return u
        return None

    def health_counts(self) -> Dict[str, int]:
        counts = {HEALTHY: 0, UNHEALTHY: 0}
        for d in self.devices:
            counts[d.health] += 1
        return counts


def replica_id(unit_id: str, k: int) -> str:
    """NVIDIA's time-slicing naming: replica k (1-based) of GPU 0 is ``0::k``."""
    return "%s::%d" % (unit_id, k)


_DIGIT_RUNS = re.compile(r"([0-9]+)")


def natural_key(text: str) -> Tuple[object, ...]:
    """Sort "0::2" before "0::10", "apex_2" before "apex_10". ASCII digit runs (the odd items of
    the split) compare by value as (length, digits) without int(): a run of thousands of digits
    would exceed Python's int-from-string limit, and \\d would take non-ASCII digits."""
    parts = _DIGIT_RUNS.split(text)
    return tuple((len(p.lstrip("0")), p.lstrip("0")) if i % 2 else p
                 for i, p in enumerate(parts))


def path_device_id(path: str) -> str:
    """A Device.ID from a /dev path: "/dev/ttyUSB0" -> "ttyUSB0", "/dev/bus/x" -> "bus_x"."""
    text = path[len("/dev/"):] if path.startswith("/dev/") else path.lstrip("/")
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "dev"
    if len(text) > MAX_DEVICE_ID:  # keep it unique: a prefix plus a hash of the whole path
        digest = hashlib.sha1(path.encode()).hexdigest()[:10]
        text = text[:MAX_DEVICE_ID - 11] + "-" + digest
    return text


def gpu_resource_name(options: DevicePluginOptions) -> str:
    if options.sharing.replicas > 1 and options.sharing.rename_by_default:
        return SHARED_GPU_RESOURCE
    return GPU_RESOURCE


# --- the scan plan -------------------------------------------------------------------------------

def scan_plan(inventory: Optional[Inventory], options: DevicePluginOptions,
              previous: Mapping[str, Resource]) -> ScanPlan:
    """The paths, globs and devicetree node the next health check reads."""
    paths: List[str] = []
    globs: List[str] = []
    gpu_node = None
    gpu = getattr(inventory, "gpu", None)
    if gpu is not None and gpu.is_nvidia:
        paths.extend(gpu.device_nodes)
        if gpu.source == "devicetree":
            gpu_node = gpu.path
    if options.builtin_profiles:
        globs.extend(NVDLA_GLOBS)
        globs.extend(EDGETPU_GLOBS)
        paths.extend(NVDLA_SUPPORT_NODES)
    want_usb = False
    for rc in options.resources:
        globs.extend(rc.paths)
        want_usb = want_usb or bool(rc.usb_ids)
    for res in previous.values():          # remembered devices: are they still there?
        for u in res.units:
            paths.extend(u.paths)
    return ScanPlan(tuple(sorted(set(paths))), tuple(dict.fromkeys(globs)), gpu_node, want_usb)


# --- resources from facts ------------------------------------------------------------------------

def _gpu_resource(inventory: Optional[Inventory], facts: HostFacts,
                  options: DevicePluginOptions,
                  previous: Optional[Resource]) -> Optional[Resource]:
    gpu = getattr(inventory, "gpu", None)
    if gpu is None or not gpu.is_nvidia:
        return None
    if not gpu.usable and previous is None:
        return None          # never advertised a GPU the devicetree disables
    status = facts.gpu_status if facts.gpu_status is not None else gpu.status
    nodes = tuple(gpu.device_nodes)
    # A node that could not be checked (EMFILE...) is not missing: keep the previous health.
    missing = [p for p in nodes if p not in facts.existing and p not in facts.unknown]
    before = previous.unit("0") if previous is not None else None
    if status != "okay":
        healthy, reason = False, "devicetree node %s has status %r" % (gpu.path, status)
    elif not nodes:
        healthy, reason = False, "the GPU driver exposes no device nodes (is nvgpu loaded?)"
    elif missing:
        healthy, reason = False, "device node %s is missing" % ", ".join(missing)
    elif before is not None and _unchecked(nodes, facts):
        healthy, reason = before.healthy, before.reason
    else:
        healthy, reason = True, ""
    sharing = options.sharing
    return Resource(
        name=gpu_resource_name(options), kind="gpu",
        units=(Unit("0", nodes, healthy, reason),),
        replicas=sharing.replicas,
        max_per_container=1 if (sharing.replicas > 1
                                and sharing.fail_requests_greater_than_one) else 0,
        gpu=True,
    )


def _glob_matches(facts: HostFacts, patterns: Iterable[str]) -> List[str]:
    out: List[str] = []
    for p in patterns:
        out.extend(facts.globs.get(p, ()))
    return sorted(set(out), key=natural_key)


def _nvdla_units(facts: HostFacts) -> Tuple[Unit, ...]:
    engines: Dict[int, List[str]] = {}
    for path in _glob_matches(facts, NVDLA_GLOBS):
        m = _NVDLA_NODE.match(path)
        if m:
            engines.setdefault(int(m.group(1)), []).append(path)
    support = tuple(p for p in NVDLA_SUPPORT_NODES if p in facts.existing)
    return tuple(Unit("nvdla%d" % n, tuple(sorted(engines[n])) + support, True)
                 for n in sorted(engines))


def _edgetpu_units(facts: HostFacts) -> Tuple[Unit, ...]:
    return tuple(Unit(path_device_id(p), (p,), True)
                 for p in _glob_matches(facts, EDGETPU_GLOBS) if _APEX_NODE.match(p))


def _config_units(rc: ResourceConfig, facts: HostFacts) -> Tuple[Unit, ...]:
    units = [Unit(path_device_id(p), (p,), True) for p in _glob_matches(facts, rc.paths)]
    wanted = set(rc.usb_ids)
    for u in facts.usb:
        if "%s:%s" % (u.vendor, u.product) in wanted:
            if u.devnode is None:
                units.append(Unit("usb-" + u.port, (), False, "no device node for USB %s" % u.port))
            else:
                present = u.devnode in facts.existing
                units.append(Unit("usb-" + u.port, (u.devnode,), present,
                                  "" if present else "%s is missing" % u.devnode))
    seen = set()
    out = []
    for unit in units:
        if unit.id not in seen:
            seen.add(unit.id)
            out.append(unit)
    return tuple(out)


def _unchecked(paths: Iterable[str], facts: HostFacts) -> bool:
    """True when the probe could not tell whether ``paths`` exist: one of them could not be
    stat'ed, or a listing failed (EMFILE, EACCES...) and none of them is known to be absent.
    Such a failure says nothing about the device: its previous health stands."""
    paths = set(paths)
    if paths & facts.unknown:
        return True
    return bool(facts.unknown) and paths <= facts.existing


def _remember(current: Resource, previous: Optional[Resource], facts: HostFacts) -> Resource:
    """Keep devices seen before: one whose node vanished stays, Unhealthy, until it returns
    (the kubelet then keeps the capacity and stops placing pods on it; recovery is a health
    flip, not a new device)."""
    if previous is None:
        return current
    now = {u.id: u for u in current.units}
    merged: List[Unit] = []
    for old in previous.units:
        new = now.pop(old.id, None)
        if new is None and _unchecked(old.paths, facts):
            merged.append(old)
            continue
        if new is None:
            gone = [p for p in old.paths if p not in facts.existing]
            merged.append(Unit(old.id, old.paths, False,
                               "device node %s is gone" % ", ".join(gone or old.paths)))
            continue
        if current.kind in ("gpu",):
            merged.append(new)
            continue
        paths = tuple(sorted(set(old.paths) | set(new.paths), key=natural_key))
        missing = [p for p in paths if p not in facts.existing and p not in facts.unknown]
        if not missing and new.healthy and set(paths) & facts.unknown:
            new = Unit(new.id, paths, old.healthy, old.reason)
        elif missing and new.healthy:
            new = Unit(new.id, paths, False, "device node %s is missing" % ", ".join(missing))
        else:
            new = Unit(new.id, paths, new.healthy, new.reason)
        merged.append(new)
    merged.extend(sorted(now.values(), key=lambda u: natural_key(u.id)))  # hot-plugged
    return Resource(current.name, current.kind, tuple(merged), current.replicas,
                    current.max_per_container, current.gpu)


def build_resources(inventory: Optional[Inventory], facts: HostFacts,
                    options: DevicePluginOptions,
                    previous: Optional[Mapping[str, Resource]] = None) -> Dict[str, Resource]:
    """Every resource to advertise, by name. Resources advertised before stay (their vanished
    devices Unhealthy): a plugin that disappears makes the kubelet drop capacity only after
    its grace period, while an Unhealthy device is taken out of scheduling at once."""
    previous = previous or {}
    out: Dict[str, Resource] = {}
    gpu_name = gpu_resource_name(options)
    gpu = _gpu_resource(inventory, facts, options, previous.get(gpu_name))
    if gpu is not None:
        out[gpu.name] = gpu
    for rc in options.resources:
        if rc.name in (GPU_RESOURCE, SHARED_GPU_RESOURCE):
            continue           # the GPU's names are not configurable (the component warns)
        out[rc.name] = Resource(rc.name, "config", _config_units(rc, facts),
                                replicas=rc.pods_per_device)
    if options.builtin_profiles:
        accel = {a.kind for a in getattr(inventory, "accelerators", ())
                 if a.kind != "edgetpu" or (a.device or a.path).startswith("/dev/apex_")}
        nvdla = _nvdla_units(facts)
        if DLA_RESOURCE not in out and (nvdla or "nvdla" in accel or DLA_RESOURCE in previous):
            out[DLA_RESOURCE] = Resource(DLA_RESOURCE, "nvdla", nvdla)
        tpu = _edgetpu_units(facts)
        if EDGETPU_RESOURCE not in out and (tpu or "edgetpu" in accel
                                            or EDGETPU_RESOURCE in previous):
            out[EDGETPU_RESOURCE] = Resource(EDGETPU_RESOURCE, "edgetpu", tpu)
    for name, old in previous.items():
        if name not in out:     # its hardware vanished from the inventory: all Unhealthy
            out[name] = Resource(old.name, old.kind, tuple(
                Unit(u.id, u.paths, False, "no longer found") for u in old.units),
                old.replicas, old.max_per_container, old.gpu)
    return {name: _remember(res, previous.get(name), facts) for name, res in out.items()}


# With gpu_mode = "dra" these kinds are served by DRA (ResourceSlices of edgeagent.io), and the
# device plugin must not advertise them too: the kubelet and the scheduler refuse one resource
# name from both (DeviceClass extendedResourceName nvidia.com/gpu).
DRA_KINDS = ("gpu", "nvdla")


def plugin_resources(resources: Mapping[str, Resource],
                     options: DevicePluginOptions) -> Dict[str, Resource]:
    """The resources the device plugin advertises: all of them, but the DRA kinds when
    ``gpu_mode`` is dra."""
    if options.gpu_mode != "dra":
        return dict(resources)
    return {n: r for n, r in resources.items() if r.kind not in DRA_KINDS}


def describe_units(resource: Resource) -> str:
    """"0 (Healthy), 1 (Unhealthy: why)" for logs."""
    parts = []
    for u in resource.units:
        parts.append("%s (%s%s)" % (u.id, HEALTHY if u.healthy else UNHEALTHY,
                                   "" if u.healthy else ": " + u.reason))
    return ", ".join(parts) or "no devices"


def health_changes(before: Optional[Resource], after: Resource) -> List[Tuple[bool, str]]:
    """(healthy now, log line) for units whose health or presence changed."""
    old = {u.id: u for u in before.units} if before is not None else {}
    lines = []
    for u in after.units:
        prev = old.get(u.id)
        state = HEALTHY if u.healthy else UNHEALTHY + ": " + u.reason
        if prev is None:
            lines.append((u.healthy, "%s: device %s found (%s)" % (after.name, u.id, state)))
        elif prev.healthy != u.healthy:
            lines.append((u.healthy, "%s: device %s is %s" % (after.name, u.id, state)))
    return lines


def sorted_ids(ids: Sequence[str]) -> List[str]:
    return sorted(ids, key=natural_key)
