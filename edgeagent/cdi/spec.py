"""Pure: the CDI specs the agent writes for the GPU and the NVDLA engines (facts in, spec dicts
out), and the CDI device IDs the device plugin (and later the DRA driver) hands to the kubelet.

Two specs, because a CDI spec has exactly one ``kind``: ``edgeagent.io/gpu`` (devices ``0`` and
``all``) and ``edgeagent.io/dla`` (``0``, ``1``, ... and ``all``). Neither kind is nvidia-ctk's
``nvidia.com/gpu``, so no qualified name can be defined twice (the CDI cache drops both copies
of a name defined by two specs in one directory).

Specs are JSON: valid CDI (every runtime's loader reads .json), byte-for-byte reproducible, and
no YAML writer is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edgeagent.discovery.devnodes import NVDLA_NODE, NVDLA_SUPPORT_NODES, gpu_nodes
from edgeagent.discovery.runtimefacts import DeviceNodeFact

# 0.5.0, not the newest: it is the lowest version this content needs (device names starting
# with a digit, "0", came with 0.5.0: container-device-interface's requiresV050), what
# nvidia-ctk's csv mode writes, and what every CDI library from v0.5 on accepts. A library
# refuses a version newer than it knows: Debian 12's podman 4.3 answers "unresolvable CDI
# devices" for the same spec marked 0.6.0 and injects it marked 0.5.0 (tests/test_cdi_podman.py).
CDI_VERSION = "0.5.0"
GPU_KIND = "edgeagent.io/gpu"
DLA_KIND = "edgeagent.io/dla"
SPEC_DIR = "/var/run/cdi"
GPU_SPEC_PATH = SPEC_DIR + "/edgeagent-gpu.json"
DLA_SPEC_PATH = SPEC_DIR + "/edgeagent-dla.json"
SPEC_PATHS = (GPU_SPEC_PATH, DLA_SPEC_PATH)
ALL = "all"
# Read-only, and nothing on them can be a setuid binary or a device node: what nvidia-ctk gives
# its library mounts, with plain "bind" (no submounts under a library or a Tegra folder).
MOUNT_OPTIONS = ("ro", "nosuid", "nodev", "bind")
# The device nodes are ours: the NVIDIA runtime hook, if configured, must add nothing.
ENV = ("NVIDIA_VISIBLE_DEVICES=void",)
# JetPack 7 / Thor (OpenRM): the nodes a CUDA container opens, whether or not a CSV lists them.
OPENRM_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                "/dev/nvidia-modeset")


def gpu_device_id(name: str = "0") -> str:
    """The fully qualified CDI device name of the GPU (``edgeagent.io/gpu=0``)."""
    return "%s=%s" % (GPU_KIND, name)


def dla_device_id(engine: int) -> str:
    """The fully qualified CDI device name of NVDLA engine ``engine`` (``edgeagent.io/dla=1``)."""
    return "%s=%d" % (DLA_KIND, engine)


@dataclass(frozen=True)
class CdiFacts:
    """What the specs are made of, read from the host by :func:`edgeagent.cdi.component`."""

    csv_entries: Tuple[Tuple[str, str], ...] = ()   # (kind, host path) of present CSV entries
    links: Tuple[Tuple[str, str], ...] = ()         # (sym path, the file or folder it reaches)
    nodes: Tuple[DeviceNodeFact, ...] = ()          # every real device node involved


def device_node(node: DeviceNodeFact) -> Dict[str, Any]:
    return {"path": node.path, "type": node.type, "major": node.major, "minor": node.minor,
            "fileMode": node.mode, "permissions": "rw", "uid": node.uid, "gid": node.gid}


def _mount(container_path: str, host_path: str) -> Dict[str, Any]:
    return {"hostPath": host_path, "containerPath": container_path,
            "options": list(MOUNT_OPTIONS)}


def plan_mounts(facts: CdiFacts) -> List[Dict[str, Any]]:
    """``lib`` and ``dir`` entries as read-only binds at their own path; ``sym`` entries as
    binds of the file they reach, at the link's path. nvidia-ctk's csv mode recreates the link
    with its ``nvidia-cdi-hook create-symlinks`` hook instead; we ship no hook binary and need
    none: a library opened by its link name is the same bytes either way."""
    links = dict(facts.links)
    out: List[Dict[str, Any]] = []
    seen = set()
    for kind, path in facts.csv_entries:
        if kind == "dev" or path in seen:
            continue
        if kind == "sym":
            target = links.get(path)
            if target is None:
                continue
            out.append(_mount(path, target))
        else:
            out.append(_mount(path, path))
        seen.add(path)
    return out


def _nodes_by_path(facts: CdiFacts) -> Dict[str, DeviceNodeFact]:
    return {n.path: n for n in facts.nodes}


def gpu_node_paths(facts: CdiFacts) -> List[str]:
    """The GPU's nodes: every CSV ``dev`` entry that is not an NVDLA engine's (nvhost, nvmap,
    the media engines, as the csv mode and our device-specs strategy give them), then the
    driver's own nodes (nvgpu, OpenRM on Thor) in case the CSV lists are missing or stale."""
    known = _nodes_by_path(facts)
    paths = [p for k, p in facts.csv_entries if k == "dev" and not NVDLA_NODE.match(p)]
    paths += gpu_nodes(sorted(known))
    paths += [p for p in OPENRM_NODES if p in known]
    return [p for p in dict.fromkeys(paths) if p in known]


def dla_engine_paths(facts: CdiFacts) -> Dict[int, List[str]]:
    """Engine index -> its nodes (nvhost-nvdlaN, nvhost-ctrl-nvdlaN, nvdlaN that exist)."""
    engines: Dict[int, List[str]] = {}
    for path in sorted(_nodes_by_path(facts)):
        m = NVDLA_NODE.match(path)
        if m:
            engines.setdefault(int(m.group(1)), []).append(path)
    return engines


def _spec(kind: str, devices: List[Dict[str, Any]], common: Dict[str, Any]) -> Dict[str, Any]:
    return {"cdiVersion": CDI_VERSION, "kind": kind, "devices": devices,
            "containerEdits": common}


def _common(facts: CdiFacts, nodes: Sequence[str] = ()) -> Dict[str, Any]:
    known = _nodes_by_path(facts)
    edits: Dict[str, Any] = {"env": list(ENV)}
    shared = [device_node(known[p]) for p in nodes if p in known]
    if shared:
        edits["deviceNodes"] = shared
    mounts = plan_mounts(facts)
    if mounts:
        edits["mounts"] = mounts
    return edits


def build_gpu_spec(facts: CdiFacts) -> Optional[Dict[str, Any]]:
    """The ``edgeagent.io/gpu`` spec, or None when the host has no GPU device node (a spec
    without one would hand a container libraries and no GPU)."""
    known = _nodes_by_path(facts)
    paths = gpu_node_paths(facts)
    if not any(p not in NVDLA_SUPPORT_NODES for p in paths):
        return None
    nodes = [device_node(known[p]) for p in paths]
    devices = [{"name": name, "containerEdits": {"deviceNodes": nodes}} for name in ("0", ALL)]
    return _spec(GPU_KIND, devices, _common(facts))


def build_dla_spec(facts: CdiFacts) -> Optional[Dict[str, Any]]:
    """The ``edgeagent.io/dla`` spec (one device per engine, and ``all``), or None without
    engines. nvmap and host1x-fence, which every engine's runtime opens, are common edits."""
    known = _nodes_by_path(facts)
    engines = dla_engine_paths(facts)
    if not engines:
        return None
    devices = [{"name": str(n), "containerEdits": {
        "deviceNodes": [device_node(known[p]) for p in engines[n]]}} for n in sorted(engines)]
    every = [device_node(known[p]) for n in sorted(engines) for p in engines[n]]
    devices.append({"name": ALL, "containerEdits": {"deviceNodes": every}})
    return _spec(DLA_KIND, devices, _common(facts, NVDLA_SUPPORT_NODES))


def build_specs(facts: CdiFacts) -> Dict[str, Optional[Dict[str, Any]]]:
    """Host path -> the spec to write there, or None where no spec belongs (remove it)."""
    return {GPU_SPEC_PATH: build_gpu_spec(facts), DLA_SPEC_PATH: build_dla_spec(facts)}


def render(spec: Dict[str, Any]) -> bytes:
    """The file's bytes: the same facts give the same bytes, so unchanged specs are not
    rewritten (a runtime's CDI cache re-reads a spec directory on every write)."""
    return (json.dumps(spec, indent=2) + "\n").encode("utf-8")
