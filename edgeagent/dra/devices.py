"""Pure: the node's DRA devices (the GPU and each NVDLA engine) from the inventory and the
device health the device plugin's scan computes, with the attributes of the shared contract
(``device.attributes["edgeagent.io"].<name>``).

An attribute whose value is unknown is left out, never sent empty or as "0.0.0": a CEL selector
on a missing attribute fails to match, while a made-up value would match wrongly.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

from edgeagent.cdi.spec import dla_device_id, gpu_device_id
from edgeagent.dra.model import Attribute, DraDevice
from edgeagent.dra.names import GPU_DEVICE, dla_device

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.deviceplugin.model import Resource, Unit
    from edgeagent.discovery.inventory import Inventory

MIB = 1024 * 1024
# resource.k8s.io: DeviceAttributeMaxValueLength (string and version values).
MAX_VALUE_LENGTH = 64
DLA_PRODUCT = "NVDLA"

# "36.4.3", "6.2", "5.0 DP" (JetPack's developer previews, semver pre-releases "5.0.0-dp").
# Each part at most 9 digits: a version attribute is validated as semver, whose parts are
# integers, and nothing on a Jetson numbers past that.
_VERSION = re.compile(r"([0-9]{1,9})(?:\.([0-9]{1,9}))?(?:\.([0-9]{1,9}))?( DP)?")
_DLA_UNIT = re.compile(r"(?:nvdla)?([0-9]{1,9})")


def semver(text: Optional[str]) -> Optional[str]:
    """A release as a semantic version (missing parts are 0); None when it is none."""
    if not text:
        return None
    m = _VERSION.fullmatch(text.strip())
    if m is None:
        return None
    core = ".".join(str(int(part or "0")) for part in m.group(1, 2, 3))
    return core + "-dp" if m.group(4) else core


def _text(value: Optional[str]) -> Optional[str]:
    if not value:
        return None
    # The API server counts bytes (Go's len), not characters.
    value = " ".join(value.split()).encode("utf-8")[:MAX_VALUE_LENGTH]
    return value.decode("utf-8", "ignore").strip() or None


def gpu_product(inventory: "Inventory") -> Optional[str]:
    """What the ``nvidia.com/gpu.product`` label says (without time-slicing's -SHARED)."""
    from edgeagent.labels.compute import CUDA_DEVICE_NAMES
    from edgeagent.labels.sanitize import sanitize_value

    gpu = inventory.gpu
    if gpu is None:
        return None
    name = next((CUDA_DEVICE_NAMES[c] for c in gpu.compatible if c in CUDA_DEVICE_NAMES), None)
    # GFD's sanitise(), as nvidia_gpu_labels() applies it.
    return sanitize_value(" ".join(name.split())) if name else None


def common_attributes(inventory: Optional["Inventory"]) -> Dict[str, Attribute]:
    """What every device of the node shares: SoC, board, L4T/JetPack, unified memory."""
    out: Dict[str, Attribute] = {}
    if inventory is None:
        return out
    for name, value in (("soc", _text(inventory.soc)), ("board", _text(inventory.board_model))):
        if value:
            out[name] = Attribute("string", value)
    for name, release in (("l4tVersion", inventory.l4t), ("jetpackVersion", inventory.jetpack)):
        version = semver(release)
        if version:
            out[name] = Attribute("version", version)
    if inventory.is_tegra:
        out["unifiedMemory"] = Attribute("bool", True)
    return out


def gpu_attributes(inventory: Optional["Inventory"]) -> Dict[str, Attribute]:
    out = {"type": Attribute("string", "gpu")}
    out.update(common_attributes(inventory))
    gpu = getattr(inventory, "gpu", None)
    if inventory is None or gpu is None:
        return out
    product = _text(gpu_product(inventory))
    if product:
        out["productName"] = Attribute("string", product)
    family = _text(gpu.family)
    if family:
        out["architecture"] = Attribute("string", family[:1].upper() + family[1:])
    cc = semver(gpu.compute_capability)
    if cc:
        out["computeCapability"] = Attribute("version", cc)
    return out


def dla_engine(unit_id: str) -> Optional[int]:
    """The engine number of an NVDLA unit ("nvdla1" or "1"); None for anything else."""
    m = _DLA_UNIT.fullmatch(unit_id)
    return int(m.group(1)) if m else None


def _gpu_device(inventory: Optional["Inventory"], unit: "Unit",
                gpu_sharing: str) -> DraDevice:
    capacity: Dict[str, str] = {}
    memory = getattr(inventory, "memory_bytes", None)
    if memory and memory >= MIB:
        capacity["memory"] = "%dMi" % (memory // MIB)
    return DraDevice(name=GPU_DEVICE, kind="gpu", healthy=unit.healthy,
                     reason="" if unit.healthy else unit.reason or "unhealthy",
                     cdi_ids=(gpu_device_id(),), attributes=gpu_attributes(inventory),
                     capacity=capacity,
                     shareable=gpu_sharing == "consumable" and "memory" in capacity)


def _dla_device(inventory: Optional["Inventory"], engine: int, unit: "Unit") -> DraDevice:
    attributes = {"type": Attribute("string", "dla"),
                  "productName": Attribute("string", DLA_PRODUCT)}
    attributes.update(common_attributes(inventory))
    attributes["dlaEngine"] = Attribute("int", engine)
    return DraDevice(name=dla_device(engine), kind="dla", healthy=unit.healthy,
                     reason="" if unit.healthy else unit.reason or "unhealthy",
                     cdi_ids=(dla_device_id(engine),), attributes=attributes, capacity={})


def build_devices(inventory: Optional["Inventory"], resources: Mapping[str, "Resource"],
                  gpu_sharing: str) -> Tuple[DraDevice, ...]:
    """The GPU (Resource kind "gpu", unit "0") and each NVDLA engine (kind "nvdla") as
    DraDevices, unhealthy ones included (with their reason), sorted: the GPU, then the DLAs by
    engine. ``gpu_sharing`` "consumable" makes the GPU shareable (when its memory is known:
    consumable capacity needs a capacity to consume)."""
    gpu: Optional[DraDevice] = None
    dlas: Dict[int, DraDevice] = {}
    for resource in resources.values():
        if resource.kind == "gpu" and gpu is None:
            unit = resource.unit("0")
            if unit is not None:
                gpu = _gpu_device(inventory, unit, gpu_sharing)
        elif resource.kind == "nvdla":
            for unit in resource.units:
                engine = dla_engine(unit.id)
                if engine is not None and engine not in dlas:
                    dlas[engine] = _dla_device(inventory, engine, unit)
    out: List[DraDevice] = [gpu] if gpu is not None else []
    out.extend(dlas[n] for n in sorted(dlas))
    return tuple(out)
