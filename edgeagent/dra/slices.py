"""Pure: the node's ResourceSlice (``resource.k8s.io/v1``, or v1beta2 which has the same device
shape) from its DraDevices, and the plan that brings the API server's slices of this node and
driver to it (create, update or delete).

One slice holds the whole pool: the pool is named after the node, ``resourceSliceCount`` is 1
and ``generation`` goes up on every change of the devices (the scheduler uses only the slices of
a pool's highest generation). The slice's name is fixed (``<node>-edgeagent.io``): after a
restart the agent finds and updates its slice instead of piling up new ones.

An unhealthy device leaves the slice: the scheduler then places no new claim on it, on every
server. The alternative, a NoSchedule device taint, needs the DRADeviceTaints feature gate
(alpha in 1.33 and 1.34, off by default); without it the API server drops ``taints`` silently
and the broken device would stay allocatable. Pods already running with the device learn of
its health from the kubelet (the DRA health stream), not from the slice.

Where the API server has DRAConsumableCapacity off (before 1.34, or the alpha gate not
enabled) it drops ``allowMultipleAllocations`` and ``requestPolicy`` without an error:
:func:`consumable_dropped` sees that in the object it returns, and the publisher then builds the
exclusive form, which the server keeps as sent, instead of updating forever.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgeagent.dra.model import Attribute, DraDevice
from edgeagent.dra.names import DRIVER

GROUP = "resource.k8s.io"
# Newest first. v1 (1.34+) and v1beta2 (1.33) write devices the same way; v1beta1 (1.32)
# wraps each device in ``basic:`` and has neither allowMultipleAllocations nor the v1 claim
# status the kubelet side reads: it is not spoken (the agent reports that it needs 1.33+).
SLICE_VERSIONS = ("v1", "v1beta2")
KIND = "ResourceSlice"
MAX_DEVICES = 128           # ResourceSliceMaxDevices
MAX_NAME = 253              # a DNS subdomain
MAX_GENERATION = 2 ** 62
# Consumable GPU memory: what a claim that names no amount takes, and the least it may take
# (a CUDA context alone costs a couple of hundred MiB on Orin).
SHARE_DEFAULT_MI = 1024
SHARE_MIN_MI = 256

_QUANTITY = re.compile(r"([0-9]{1,18})(Ki|Mi|Gi|Ti|Pi|Ei)?")
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def slice_name(node: str) -> str:
    """``<node>-edgeagent.io``, lower case; a node name so long that the result would pass
    253 characters is cut, with a hash of the whole name to keep it unique."""
    suffix = "-" + DRIVER
    base = node.lower()
    if len(base) + len(suffix) > MAX_NAME:
        digest = hashlib.sha1(node.encode("utf-8")).hexdigest()[:10]
        base = base[:MAX_NAME - len(suffix) - len(digest) - 1].rstrip(".-") + "-" + digest
    return base + suffix


def canonical_quantity(text: str) -> str:
    """An integer quantity with a binary suffix in the API server's canonical form ("1024Mi" is
    stored as "1Gi"): the slice is compared with what the server returns."""
    m = _QUANTITY.fullmatch(text)
    if m is None:
        return text
    value = int(m.group(1)) * 1024 ** _BINARY.index(m.group(2) or "")
    if value == 0:
        return "0"
    step = 0
    while step < len(_BINARY) - 1 and value % 1024 == 0:
        value //= 1024
        step += 1
    return "%d%s" % (value, _BINARY[step])


def mebibytes(text: str) -> Optional[int]:
    m = _QUANTITY.fullmatch(text)
    if m is None or m.group(2) is None:
        return None
    return int(m.group(1)) * 1024 ** _BINARY.index(m.group(2)) // (1024 * 1024)


def attribute_json(attribute: Attribute) -> Dict[str, Any]:
    """``{"string": "gpu"}``, ``{"version": "8.7.0"}``, ``{"bool": true}``, ``{"int": 1}``."""
    return {attribute.kind: attribute.value}


def device_json(device: DraDevice, consumable: bool) -> Dict[str, Any]:
    """One v1 Device. ``consumable``: a shareable device is allocated to many claims, each
    taking some of its memory (allowMultipleAllocations + a requestPolicy)."""
    capacity: Dict[str, Any] = {name: {"value": canonical_quantity(q)}
                                for name, q in sorted(device.capacity.items())}
    out: Dict[str, Any] = {"name": device.name,
                           "attributes": {name: attribute_json(a)
                                          for name, a in sorted(device.attributes.items())}}
    memory = mebibytes(device.capacity.get("memory", ""))
    if consumable and device.shareable and memory:
        low = min(SHARE_MIN_MI, memory)
        capacity["memory"]["requestPolicy"] = {
            "default": canonical_quantity("%dMi" % max(low, min(SHARE_DEFAULT_MI, memory))),
            "validRange": {"min": canonical_quantity("%dMi" % low),
                           "max": canonical_quantity("%dMi" % memory)}}
        out["allowMultipleAllocations"] = True
    if capacity:
        out["capacity"] = capacity
    return out


def published(devices: Sequence[DraDevice]) -> List[DraDevice]:
    """The devices the slice offers: the healthy ones (see the module's docstring)."""
    return [d for d in devices if d.healthy][:MAX_DEVICES]


def slice_devices(devices: Sequence[DraDevice], consumable: bool) -> List[Dict[str, Any]]:
    return [device_json(d, consumable) for d in published(devices)]


def slice_body(node: str, devices: Sequence[DraDevice], generation: int, consumable: bool,
               version: str = "v1", resource_version: str = "") -> Dict[str, Any]:
    """The whole ResourceSlice object (with ``resourceVersion`` for a replace)."""
    metadata: Dict[str, Any] = {"name": slice_name(node)}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "%s/%s" % (GROUP, version), "kind": KIND, "metadata": metadata,
            "spec": {"driver": DRIVER, "nodeName": node,
                     "pool": {"name": node, "generation": generation,
                              "resourceSliceCount": 1},
                     "devices": slice_devices(devices, consumable)}}


def pick_version(served: Sequence[str]) -> Optional[str]:
    """The newest slice version the server serves that the agent speaks; None for none."""
    return next((v for v in SLICE_VERSIONS if v in served), None)


# --- what the API server holds ----------------------------------------------------------------

@dataclass(frozen=True)
class ExistingSlice:
    """The fields of a listed ResourceSlice the plan reads (anything else is ignored)."""

    name: str
    resource_version: str
    node: str
    driver: str
    pool: str
    generation: int
    devices: Any                    # as the server returned them


def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_slice(obj: Any) -> Optional[ExistingSlice]:
    """A listed ResourceSlice, or None when it has no name (nothing can be done with it)."""
    meta, spec = _dict(_dict(obj).get("metadata")), _dict(_dict(obj).get("spec"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    pool = _dict(spec.get("pool"))
    generation = pool.get("generation")
    # int64 on the server: a value near its end could not be bumped (a hand-made slice).
    if not isinstance(generation, int) or isinstance(generation, bool) or \
            not 0 <= generation < MAX_GENERATION:
        generation = 0

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    return ExistingSlice(name=name, resource_version=text(meta.get("resourceVersion")),
                         node=text(spec.get("nodeName")), driver=text(spec.get("driver")),
                         pool=text(pool.get("name")), generation=generation,
                         devices=spec.get("devices"))


def covers(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` (from the server) holds everything of ``wanted``: fields the server
    adds (defaults of newer versions) do not count as a difference, a missing or changed one
    does. Iterative: a hostile answer nested thousands deep must not overflow the stack."""
    stack = [(actual, wanted)]
    while stack:
        a, w = stack.pop()
        if isinstance(w, dict):
            if not isinstance(a, dict):
                return False
            for key, value in w.items():
                if key not in a:
                    return False
                stack.append((a[key], value))
        elif isinstance(w, list):
            if not isinstance(a, list) or len(a) != len(w):
                return False
            stack.extend(zip(a, w))
        elif type(a) is not type(w) or a != w:
            return False
    return True


def consumable_dropped(sent: Dict[str, Any], returned: Any) -> bool:
    """True when a device sent with ``allowMultipleAllocations`` came back without it: the API
    server does not know consumable capacity (DRAConsumableCapacity off)."""
    wanted = {d["name"] for d in sent["spec"]["devices"] if d.get("allowMultipleAllocations")}
    if not wanted:
        return False
    devices = _dict(_dict(returned).get("spec")).get("devices")
    kept = {d.get("name") for d in devices if isinstance(d, dict)
            and d.get("allowMultipleAllocations") is True} if isinstance(devices, list) else set()
    return bool(wanted - kept)


@dataclass(frozen=True)
class SlicePlan:
    """What to send: at most one create or one update (a full replace with the
    resourceVersion), and (name, resourceVersion) of the stale slices to delete."""

    create: Optional[Dict[str, Any]] = None
    update: Optional[Dict[str, Any]] = None
    delete: Tuple[Tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return self.create is None and self.update is None and not self.delete


def plan_slices(node: str, devices: Sequence[DraDevice], consumable: bool,
                existing: Sequence[Any], version: str = "v1") -> SlicePlan:
    """Existing slices (the list of this node's slices of the driver) against the wanted
    one. Only slices whose spec names this node and driver are touched, whatever the list
    returned; every other one of them (another name: a renamed node, a slice someone
    created) is deleted."""
    name = slice_name(node)
    mine: Optional[ExistingSlice] = None
    stale: List[ExistingSlice] = []
    top = 0
    for obj in existing:
        found = read_slice(obj)
        if found is None or found.node != node or found.driver != DRIVER:
            continue
        if found.pool == node:
            top = max(top, found.generation)
        if found.name == name and mine is None:
            mine = found
        else:
            stale.append(found)
    delete = tuple((s.name, s.resource_version) for s in stale)
    wanted = slice_devices(devices, consumable)
    # Unchanged devices keep their generation, unless a stale slice of the pool has a higher
    # one: the scheduler would use that slice's devices until it is gone.
    # A slice without devices comes back without the key (omitempty): no devices, not a change.
    if mine is not None and mine.pool == node and covers(mine.devices or [], wanted) and \
            mine.generation == top:
        return SlicePlan(delete=delete)
    body = slice_body(node, devices, top + 1, consumable, version,
                      mine.resource_version if mine is not None else "")
    if mine is None:
        return SlicePlan(create=body, delete=delete)
    return SlicePlan(update=body, delete=delete)
