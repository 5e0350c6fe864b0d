"""Pure: Allocate and GetPreferredAllocation decisions.

Takes the advertised :class:`~edgeagent.deviceplugin.model.Resource`, the cached
:class:`~edgeagent.discovery.runtimefacts.RuntimeFacts` and the kubelet's request; returns
plain :class:`ContainerPlan` values (the server turns them into protobuf messages) or raises
:class:`AllocationError` with a message an operator can act on. No I/O, so Allocate can never
block pod admission on a slow disk.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from edgeagent.cdi.spec import DLA_KIND, GPU_KIND, GPU_SPEC_PATH
from edgeagent.deviceplugin.model import Resource, natural_key, sorted_ids
from edgeagent.discovery.runtimefacts import CDI_DIRS, GPU_CDI_KIND, RuntimeFacts

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
# "void" tells nvidia-container-runtime to inject nothing: with the cdi and device-specs
# strategies the devices come from us, and CUDA images bake NVIDIA_VISIBLE_DEVICES=all in.
VOID = "void"
STRATEGIES = ("envvar", "cdi", "device-specs")
CDI_ANNOTATION_PREFIX = "cdi.k8s.io/"
DEVICE_PERMISSIONS = "rw"


class AllocationError(Exception):
    """A request the plugin refuses; ``code`` is a grpclib Status name."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MountPlan:
    container_path: str
    host_path: str
    read_only: bool = True


@dataclass(frozen=True)
class DevicePlan:
    container_path: str
    host_path: str
    permissions: str = DEVICE_PERMISSIONS


@dataclass(frozen=True)
class ContainerPlan:
    envs: Dict[str, str] = field(default_factory=dict)
    mounts: Tuple[MountPlan, ...] = ()
    devices: Tuple[DevicePlan, ...] = ()
    annotations: Dict[str, str] = field(default_factory=dict)
    cdi_devices: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Strategy:
    name: str          # envvar, cdi, device-specs
    why: str


def choose_strategy(configured: str, facts: RuntimeFacts) -> Strategy:
    """``auto``: cdi when a CDI spec for nvidia.com/gpu names "0" or "all", else envvar when an
    NVIDIA runtime is configured, else cdi with the agent's own edgeagent.io/gpu spec when it
    exists and the CRI runtime is known to have CDI on, else device-specs. Any other value is
    taken as given.

    The agent's spec only ever replaces device-specs (the answer for hosts with neither an
    nvidia-ctk spec nor an NVIDIA runtime), and only where containerd/CRI-O will read it: a
    working envvar or nvidia-ctk setup is never switched by the agent's own spec appearing."""
    if configured != "auto":
        return Strategy(configured, "device_list_strategy = %s in the config" % configured)
    spec = facts.gpu_spec()
    if spec is not None:
        return Strategy("cdi", "a CDI spec for %s exists (%s)" % (GPU_CDI_KIND, spec.path))
    runtime = facts.nvidia_runtime()
    if runtime is not None:
        if runtime.nvidia_default:
            why = "%s makes the NVIDIA runtime the default (%s)" % (runtime.engine, runtime.path)
        else:
            why = ("%s registers the NVIDIA runtime %r but does not make it the default (%s): "
                   "GPU pods need runtimeClassName: %s" % (
                       runtime.engine, runtime.nvidia_runtimes[0], runtime.path,
                       runtime.nvidia_runtimes[0]))
        return Strategy("envvar", why)
    own = facts.own_spec(GPU_KIND)
    cdi_runtime = facts.cdi_runtime()
    if own is not None and cdi_runtime is not None:
        return Strategy("cdi", "no NVIDIA runtime; %s has CDI on (%s) and the agent's own "
                        "spec %s exists" % (cdi_runtime.engine, cdi_runtime.path, own.path))
    return Strategy("device-specs", "no CDI spec for %s in %s and no NVIDIA runtime configured"
                    % (GPU_CDI_KIND, " or ".join(CDI_DIRS)))


def _ranges(ids: Sequence[str], limit: int = 6) -> str:
    ids = sorted_ids(ids)
    if len(ids) <= limit:
        return ", ".join(ids) or "none"
    return "%s, ... %s (%d devices)" % (", ".join(ids[:limit - 1]), ids[-1], len(ids))


def validate_request(resource: Resource, ids: Sequence[str]) -> List[str]:
    """The physical unit ids behind ``ids``, in order; AllocationError when the request is
    empty, repeats an id, names an unknown or unhealthy device, or is too large."""
    if not ids:
        raise AllocationError("%s: empty device list in the container request"
                              % resource.name)
    devices = resource.device_map()
    seen = set()
    units: List[str] = []
    for device_id in ids:
        if device_id in seen:
            raise AllocationError("%s: device %r requested twice in one container"
                                  % (resource.name, device_id))
        seen.add(device_id)
        device = devices.get(device_id)
        if device is None:
            raise AllocationError(
                "%s: unknown device %r (this node advertises %s); if the kubelet kept it from "
                "an earlier configuration (sharing.replicas changed?), delete the pod so it is "
                "re-admitted" % (resource.name, device_id, _ranges(list(devices))))
        if not device.healthy:
            unit = resource.unit(device.unit)
            raise AllocationError(
                "%s: device %r is Unhealthy (%s); the pod will be placed once it recovers"
                % (resource.name, device_id, unit.reason if unit else "unknown"),
                "FAILED_PRECONDITION")
        if device.unit not in units:
            units.append(device.unit)
    if resource.max_per_container and len(ids) > resource.max_per_container:
        raise AllocationError(
            "%s: request for %d devices is too large: this node time-slices its GPU "
            "(sharing.replicas = %d) with sharing.fail_requests_greater_than_one = true, so a "
            "container may ask for at most %d; request %s: %d"
            % (resource.name, len(ids), resource.replicas, resource.max_per_container,
               resource.name, resource.max_per_container))
    return units


def _device_specs(paths: Sequence[str]) -> Tuple[DevicePlan, ...]:
    return tuple(DevicePlan(p, p) for p in dict.fromkeys(paths))


def cdi_annotation_key(resource_name: str) -> str:
    # The kubelet passes cdi_devices to the runtime through CRI only from 1.28
    # (DevicePluginCDIDevices); containerd 1.7 and CRI-O also read CDI devices from
    # cdi.k8s.io/<name> annotations, which older kubelets do forward.
    return CDI_ANNOTATION_PREFIX + "edgeagent_" + resource_name.replace("/", "_")


def _gpu_plan(resource: Resource, units: List[str], strategy: Strategy,
              facts: RuntimeFacts) -> ContainerPlan:
    every = len(units) == len(resource.units)
    if strategy.name == "envvar":
        # "all" when the container gets every GPU (always, on a Jetson's single iGPU): CSV-mode
        # nvidia-container-runtime accepts any value but void/none, and the jit-CDI specs of
        # newer toolkits always define "all". Never "tegra", which CDI-based toolkits reject.
        value = "all" if every else ",".join(sorted(units, key=natural_key))
        return ContainerPlan(envs={VISIBLE_DEVICES: value})
    if strategy.name == "cdi":
        # nvidia-ctk's spec when there is one (an operator who made it wants it used), else
        # the one the agent writes itself.
        spec = facts.gpu_spec() or facts.own_spec(GPU_KIND)
        if spec is None:
            raise AllocationError(
                "%s: device_list_strategy is cdi but no CDI spec for %s naming device 0 or all "
                "is in %s, and the agent's own %s is not written yet (it needs the GPU's device "
                "nodes; see `edgeagent doctor`); generate one with `nvidia-ctk cdi generate "
                "--mode=csv --output=/etc/cdi/nvidia.yaml`, or set device_list_strategy = "
                "\"auto\"" % (resource.name, GPU_CDI_KIND, " or ".join(CDI_DIRS), GPU_SPEC_PATH),
                "FAILED_PRECONDITION")
        if all(u in spec.devices for u in units):
            names = tuple(spec.qualified(u) for u in sorted(units, key=natural_key))
        elif every and "all" in spec.devices:
            names = (spec.qualified("all"),)
        else:
            raise AllocationError(
                "%s: the CDI spec %s names devices %s but not %s; regenerate it with "
                "`nvidia-ctk cdi generate --mode=csv --output=%s`"
                % (resource.name, spec.path, ", ".join(spec.devices), ", ".join(units),
                   spec.path), "FAILED_PRECONDITION")
        return ContainerPlan(envs={VISIBLE_DEVICES: VOID},
                             annotations={cdi_annotation_key(resource.name): ",".join(names)},
                             cdi_devices=names)
    # device-specs: the L4T CSV lists say what a GPU container needs on this JetPack; the GPU's
    # own nodes are added in case the lists are missing or stale.
    paths: List[str] = list(facts.csv_devices)
    for u in units:
        unit = resource.unit(u)
        if unit is not None:
            paths.extend(unit.paths)
    mounts = tuple(MountPlan(p, p, True) for p in facts.csv_mounts)
    return ContainerPlan(envs={VISIBLE_DEVICES: VOID}, mounts=mounts,
                         devices=_device_specs(paths))


def _dla_cdi_plan(resource: Resource, units: List[str],
                  facts: RuntimeFacts) -> Optional[ContainerPlan]:
    """edgeagent.io/dla=N for engines nvdlaN, when the agent's DLA spec names them all; None
    (device nodes as before) otherwise: an engine works from its nodes alone, so a missing spec
    is no reason to refuse a pod."""
    spec = facts.own_spec(DLA_KIND)
    if spec is None:
        return None
    engines = [u[len("nvdla"):] for u in sorted(units, key=natural_key)]
    if not all(u.startswith("nvdla") for u in units) or not all(e in spec.devices
                                                                  for e in engines):
        return None
    names = tuple(spec.qualified(e) for e in engines)
    return ContainerPlan(annotations={cdi_annotation_key(resource.name): ",".join(names)},
                         cdi_devices=names)


def plan_units(resource: Resource, units: List[str], strategy: Strategy,
               facts: RuntimeFacts) -> ContainerPlan:
    """What one container needs for the physical units ``units`` (from validate_request):
    replicas of the same units get the same answer, so callers may cache by units."""
    if resource.gpu:
        return _gpu_plan(resource, units, strategy, facts)
    if strategy.name == "cdi" and resource.kind == "nvdla":
        plan = _dla_cdi_plan(resource, units, facts)
        if plan is not None:
            return plan
    paths: List[str] = []
    for u in units:
        unit = resource.unit(u)
        if unit is not None:
            paths.extend(unit.paths)
    return ContainerPlan(devices=_device_specs(paths))


def validate_allocate(resource: Resource,
                      requests: Sequence[Sequence[str]]) -> List[Tuple[str, ...]]:
    """The physical units behind each container request of one Allocate call, in order; the
    first bad request fails the whole call (the kubelet then fails the pod's admission with our
    message)."""
    if not requests:
        raise AllocationError("%s: Allocate without container requests" % resource.name)
    return [tuple(validate_request(resource, ids)) for ids in requests]


def preferred_allocation(resource: Resource, available: Sequence[str],
                         must_include: Sequence[str], size: int) -> List[str]:
    """Spread: ``must_include`` first, then healthy devices on the physical unit this
    container has the fewest of, breaking ties towards the unit with the most free replicas
    (the least loaded), then by id. With one GPU this is simply the lowest free replicas; with
    several units (two Coral TPUs at pods_per_device = 2) pods land on different hardware
    while they can.

    O(n log n) in the request's length: with sharing.replicas = 1024 the kubelet sends up to
    1024 ids, and picking the best of all candidates for every slot took seconds."""
    devices = resource.device_map()
    chosen = list(dict.fromkeys(must_include))
    if size <= len(chosen):
        return chosen
    picked = set(chosen)
    taken: Dict[str, int] = {}
    for d in chosen:
        device = devices.get(d)
        if device is not None:
            taken[device.unit] = taken.get(device.unit, 0) + 1
    free: Dict[str, List[str]] = {}
    for d in dict.fromkeys(available):
        device = devices.get(d)
        if device is not None and device.healthy and d not in picked:
            free.setdefault(device.unit, []).append(d)
    # One heap entry per unit, keyed by what the rule compares; the unit's free ids are sorted
    # once, lowest last, so its best candidate is always ids[-1].
    heap: List[Tuple[int, int, Tuple, str]] = []
    for unit, ids in free.items():
        ids.sort(key=natural_key, reverse=True)
        heap.append((taken.get(unit, 0), -len(ids), natural_key(ids[-1]), unit))
    heapq.heapify(heap)
    while len(chosen) < size and heap:
        count, minus_free, _, unit = heapq.heappop(heap)
        ids = free[unit]
        chosen.append(ids.pop())
        if ids:
            heapq.heappush(heap, (count + 1, minus_free + 1, natural_key(ids[-1]), unit))
    return chosen
