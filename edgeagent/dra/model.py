"""Pure: the devices this node offers through DRA, as one value both sides of the plugin use
(the ResourceSlices it publishes, the CDI IDs NodePrepareResources answers, the health it
streams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Tuple, Union

AttributeValue = Union[bool, int, str]


@dataclass(frozen=True)
class Attribute:
    """One typed ResourceSlice attribute: ``kind`` is the v1 DeviceAttribute field that holds
    it (bool, int, string or version: a semantic version without a leading "v")."""

    kind: str
    value: AttributeValue


@dataclass(frozen=True)
class DraDevice:
    """One device of the node's pool."""

    name: str                          # "gpu-0", "dla-0" (edgeagent.dra.names)
    kind: str                          # "gpu" or "dla"
    healthy: bool
    reason: str                        # why it is unhealthy ("" when healthy)
    cdi_ids: Tuple[str, ...]           # what NodePrepareResources answers for it
    attributes: Mapping[str, Attribute]  # unqualified names: the driver's domain
    capacity: Mapping[str, str]        # name -> quantity ("7620Mi")
    shareable: bool = False            # allowMultipleAllocations (consumable capacity)
