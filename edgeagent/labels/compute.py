"""Pure: inventory + config -> the labels this node should carry.

Three families, each switchable:

- ``beta.devicetree.org/<vendor>-<model>`` = how many of the chosen devicetree nodes carry that
  compatible string, as the devicetree node labeller (adaptant-labs/k8s-dt-node-labeller) counts
  them: the root node, the GPU node, and the nodes named in ``labels.extra_nodes``.
- ``nvidia.com/gpu.*`` with the names and value shapes of NVIDIA's GPU feature discovery
  (k8s-device-plugin internal/lm), so manifests written for GFD select Jetsons unchanged.
- ``<labels.prefix>board|soc|l4t|jetpack|<accelerator kind>.count``: edgeagent's own facts.

Every key and value is checked against label syntax at the end; an invalid one is dropped alone
and reported in ``LabelSet.problems`` (the caller logs them), never failing the rest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from edgeagent.labels.sanitize import compatible_name, key_problem, sanitize_value, value_problem

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import LabelsOptions
    from edgeagent.discovery.devicetree import DeviceTree, DtNode
    from edgeagent.discovery.inventory import Inventory

DEVICETREE_PREFIX = "beta.devicetree.org/"
NVIDIA_PREFIX = "nvidia.com/"

# What CUDA's cuDeviceGetName() reports for each integrated GPU (deviceQuery's "Device 0: ..."
# line on each board); GFD's product label is that name with spaces turned into '-'.
CUDA_DEVICE_NAMES = {
    "nvidia,gk20a": "GK20A",
    "nvidia,gm20b": "NVIDIA Tegra X1",
    "nvidia,gp10b": "NVIDIA Tegra X2",
    "nvidia,gv11b": "Xavier",
    "nvidia,ga10b": "Orin",
    "nvidia,gb10b": "NVIDIA Thor",
}

MIB = 1024 * 1024

# Every name nvidia_gpu_labels() can set: the only nvidia.com/ labels edgeagent may own (GFD's
# other names, cuda.*, mig.*, gpu.mode..., belong to GFD or an administrator).
NVIDIA_GPU_KEYS = frozenset(NVIDIA_PREFIX + "gpu." + name for name in (
    "present", "count", "replicas", "sharing-strategy", "product", "family", "compute.major",
    "compute.minor", "machine", "memory"))


def is_own_key(key: str, prefix: str) -> bool:
    """Whether ``key`` is one edgeagent computes (its families: ``prefix``, the devicetree
    labeller's ``beta.devicetree.org/`` and its own ``nvidia.com/gpu.*`` names): the only keys
    it may ever add, change or remove, whatever the ownership annotation says."""
    return key.startswith(prefix) or key.startswith(DEVICETREE_PREFIX) or key in NVIDIA_GPU_KEYS


@dataclass(frozen=True)
class LabelSet:
    """The desired labels (valid, sorted by key) and why any candidate was dropped."""

    labels: Dict[str, str]
    problems: Tuple[str, ...] = ()


def _select_nodes(tree: "DeviceTree", gpu_path: Optional[str], extra: Sequence[str],
                  problems: List[str]) -> List["DtNode"]:
    """The root, the GPU node, then every node matching an ``extra`` entry, each node once.

    An entry beginning with ``/`` is a full node path; any other entry matches node names, with
    or without the unit address (``gpu`` matches ``gpu@57000000``), as the labeller's ``-n``.
    """
    chosen: "OrderedDict[str, DtNode]" = OrderedDict()
    chosen[tree.root.path] = tree.root
    if gpu_path:
        node = tree.get(gpu_path)
        if node is not None:
            chosen[node.path] = node
    for entry in extra:
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("/"):
            found = [tree.get(entry)] if tree.get(entry) is not None else []
        else:
            found = [n for n in tree.walk()
                     if n.name == entry or n.name.split("@", 1)[0] == entry]
        if not found:
            problems.append("labels.extra_nodes: no devicetree node matches %r" % entry)
        for node in found:
            chosen.setdefault(node.path, node)
    return list(chosen.values())


def devicetree_labels(tree: "DeviceTree", gpu_path: Optional[str] = None,
                      extra_nodes: Sequence[str] = (),
                      problems: Optional[List[str]] = None) -> Dict[str, str]:
    """``beta.devicetree.org/<name>`` -> occurrence count, over the chosen nodes' compatibles."""
    problems = problems if problems is not None else []
    counts: Dict[str, int] = {}
    for node in _select_nodes(tree, gpu_path, extra_nodes, problems):
        for compatible in node.compatible:
            name = compatible_name(compatible)
            if name is None:
                problems.append("compatible %r of %s leaves no label name" % (compatible,
                                                                             node.path))
                continue
            key = DEVICETREE_PREFIX + name
            counts[key] = counts.get(key, 0) + 1
    return {k: str(v) for k, v in counts.items()}


def _gfd_text(text: str) -> Optional[str]:
    # GFD's sanitise(): words joined by '-' (our rule gives the same for model names).
    return sanitize_value(" ".join(text.split()))


def nvidia_gpu_labels(inventory: "Inventory", replicas: int = 1,
                      rename_shared: bool = False) -> Dict[str, str]:
    """GFD's ``nvidia.com/gpu.*`` labels for a usable NVIDIA integrated GPU; {} otherwise.

    Values follow GFD on Tegra: product from the CUDA device name (``-SHARED`` appended when
    time-slicing replicas > 1 and the resource is not renamed), memory = the unified memory
    CUDA reports (MemTotal) in MiB, machine = the board model (GFD reads the DMI product name,
    which devicetree boards lack), sharing-strategy ``time-slicing`` or ``none``.
    """
    gpu = inventory.gpu
    if gpu is None or not gpu.is_nvidia or not gpu.usable:
        return {}
    out: Dict[str, str] = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.replicas": str(replicas),
        "nvidia.com/gpu.sharing-strategy": "time-slicing" if replicas > 1 else "none",
    }
    cuda_name = next((CUDA_DEVICE_NAMES[c] for c in gpu.compatible if c in CUDA_DEVICE_NAMES),
                     None)
    if cuda_name:
        product = _gfd_text(cuda_name)
        if product and replicas > 1 and not rename_shared:
            product += "-SHARED"
        if product:
            out["nvidia.com/gpu.product"] = product
    if gpu.family:
        out["nvidia.com/gpu.family"] = gpu.family
    if gpu.compute_capability and "." in gpu.compute_capability:
        major, minor = gpu.compute_capability.split(".", 1)
        out["nvidia.com/gpu.compute.major"] = major
        out["nvidia.com/gpu.compute.minor"] = minor
    machine = _gfd_text(inventory.board_model) if inventory.board_model else None
    out["nvidia.com/gpu.machine"] = machine or "unknown"
    if inventory.memory_bytes:
        out["nvidia.com/gpu.memory"] = str(inventory.memory_bytes // MIB)
    return out


def own_labels(inventory: "Inventory", prefix: str) -> Dict[str, str]:
    """edgeagent's facts under ``prefix``: board, soc, l4t, jetpack and accelerator counts."""
    out: Dict[str, str] = {}
    for name, fact in (("board", inventory.board_model), ("soc", inventory.soc),
                       ("l4t", inventory.l4t), ("jetpack", inventory.jetpack)):
        if fact:
            value = sanitize_value(fact)
            if value:
                out[prefix + name] = value
    kinds = sorted({a.kind for a in inventory.accelerators})
    for kind in kinds:
        out["%s%s.count" % (prefix, kind)] = str(inventory.accelerator_count(kind))
    return out


def validate(candidates: Iterable[Tuple[str, str]], problems: List[str]) -> Dict[str, str]:
    """Keep the valid (key, value) pairs, sorted by key; report each invalid one alone."""
    out: Dict[str, str] = {}
    for key, value in candidates:
        problem = key_problem(key) or value_problem(value)
        if problem:
            problems.append("label dropped: %s" % problem)
            continue
        out[key] = value
    return dict(sorted(out.items()))


def compute_labels(inventory: "Inventory", options: "LabelsOptions") -> LabelSet:
    """The labels this node should carry, from the inventory and the labels options (whose
    ``sharing`` is the device plugin's time-slicing, which the nvidia.com/gpu.* labels state)."""
    problems: List[str] = []
    candidates: List[Tuple[str, str]] = []
    if options.devicetree_labels and inventory.tree is not None:
        gpu_path = None
        gpu = inventory.gpu
        # A disabled GPU node is not hardware a pod can use: selecting on it would mislead.
        if gpu is not None and gpu.source == "devicetree" and gpu.usable:
            gpu_path = gpu.path
        candidates.extend(devicetree_labels(inventory.tree, gpu_path, options.extra_nodes,
                                            problems).items())
    if options.nvidia_gpu_labels:
        candidates.extend(nvidia_gpu_labels(inventory, options.sharing.replicas,
                                            options.sharing.rename_by_default).items())
    candidates.extend(own_labels(inventory, options.prefix).items())
    return LabelSet(validate(candidates, problems), tuple(problems))
