"""Pure: who else labels ``nvidia.com/gpu.*`` on this Node, and what edgeagent does about it.

NVIDIA's GPU feature discovery (GFD) never patches a Node itself: it hands its labels to Node
Feature Discovery (NFD), through a feature file or a ``NodeFeature`` object
(``nfd.k8s-sigs.io/v1alpha1``, named ``nvidia-features-for-<node>``, labelled
``nfd.node.kubernetes.io/node-name=<node>``), and nfd-master writes them, listing every label
it manages in the Node's ``nfd.node.kubernetes.io/feature-labels`` annotation (names in its own
``feature.node.kubernetes.io`` namespace without their prefix, others in full; with nfd-master's
``-instance X`` the key is ``nfd.node.kubernetes.io/X.feature-labels``). nfd-master overwrites
what it lists and removes what it stops listing. Three kinds of evidence that another labeller
does the GPU labels here:

- NFD's annotation lists ``nvidia.com/gpu.*`` keys (NFD manages them);
- a NodeFeature object for this Node carries ``nvidia.com/gpu.*`` labels (NFD will apply them);
- labels only GFD makes are on the Node (``nvidia.com/gfd.timestamp``, ``nvidia.com/cuda.*``
  driver and runtime versions): edgeagent never sets those.

A lone ``nvidia.com/gpu.*`` label without such evidence is an administrator's: ownership rules
already leave it alone (``Plan.foreign``), and edgeagent still sets the others.

What edgeagent does (``labels.nvidia_gpu_labels_owner``; ``decide`` below):

- ``defer`` (default): with evidence, the whole ``nvidia.com/gpu.*`` family is GFD's. GFD
  describes one GPU with all of them; half from each tool could disagree (replicas and product
  from two sharing configurations), and a key GFD lacks today (memory when NVML has no answer)
  it may set tomorrow. edgeagent writes none, removes none. It keeps in its ownership annotation
  only the keys that still carry its own value and that no labeller claims, so that once GFD is
  gone it takes the family back without claiming a value it did not set.
- ``own``: edgeagent writes the family even where GFD/NFD label, after a WARNING. It overwrites
  a foreign value only where an automated labeller made it provably (NFD's annotation lists the
  key, or a NodeFeature carries it): nfd-master or GFD will make it again, so nothing a person
  typed is lost. A hand-set value (no such evidence) is still never claimed.
- ``off`` (``labels.nvidia_gpu_labels = false``): none are desired. edgeagent removes the ones it
  owns, except those NFD lists as its own: removing them would delete GFD's label; it only lets
  go of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Set, Tuple

from edgeagent.labels.compute import NVIDIA_GPU_KEYS

NFD_ANNOTATION_PREFIX = "nfd.node.kubernetes.io/"
FEATURE_LABELS = "feature-labels"
NFD_DEFAULT_NS = "feature.node.kubernetes.io/"
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"
NODEFEATURE_API = "nfd.k8s-sigs.io/v1alpha1"
GPU_PREFIX = "nvidia.com/gpu."
# Labels GFD derives from the CUDA driver and its own run: nobody types these by hand.
GFD_ONLY = ("nvidia.com/gfd.timestamp", "nvidia.com/cuda.driver", "nvidia.com/cuda.runtime")
# gpu-operator's switches an administrator sets (gpu.deploy.operands=false keeps the operator
# off a node): they say nothing about who labels the GPU.
OPERATOR_SWITCHES = ("nvidia.com/gpu.deploy.", "nvidia.com/gpu.workload.config")

MODES = ("defer", "own", "off")
# What a NodeFeature lookup said. Only "found" can show a claim; the others are "unknown" as far
# as deciding goes, and are reported as they are.
NF_FOUND, NF_NONE, NF_FORBIDDEN, NF_ABSENT, NF_ERROR, NF_SKIPPED = (
    "found", "none", "forbidden", "absent", "error", "not asked")
# The most keys a parsed annotation or NodeFeature contributes: the input is another tool's
# data (an annotation may hold 256 KiB); GFD makes about 30 labels.
MAX_KEYS = 512


def is_gpu_labeller_key(key: str) -> bool:
    """A key that shows which tool labels the GPU: ``nvidia.com/gpu.*`` (not the operator's
    switches) or one only GFD makes."""
    if key.startswith(GFD_ONLY):
        return True
    return key.startswith(GPU_PREFIX) and not key.startswith(OPERATOR_SWITCHES)


def is_nfd_labels_annotation(key: str) -> bool:
    if not key.startswith(NFD_ANNOTATION_PREFIX):
        return False
    name = key[len(NFD_ANNOTATION_PREFIX):]
    return name == FEATURE_LABELS or name.endswith("." + FEATURE_LABELS)


def parse_nfd_labels(value: Any) -> List[str]:
    """The label keys an NFD feature-labels annotation lists, namespaced as on the Node."""
    if not isinstance(value, str):
        return []
    keys: Set[str] = set()
    for name in value.split(",", MAX_KEYS)[:MAX_KEYS]:
        name = name.strip()
        if name:
            keys.add(name if "/" in name else NFD_DEFAULT_NS + name)
    return sorted(keys)


@dataclass(frozen=True)
class NodeFeatures:
    """The NodeFeature objects for this Node that carry GPU labels: ``objects`` maps
    ``namespace/name`` to those keys. ``state`` is how the lookup went (NF_*), ``detail`` why."""

    state: str
    objects: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    detail: str = ""


NOT_ASKED = NodeFeatures(NF_SKIPPED)


def _str_map(value: Any) -> Dict[str, Any]:
    return {k: v for k, v in value.items() if isinstance(k, str)} if isinstance(value, Mapping) \
        else {}


def nodefeatures_for(items: Any, node_name: str) -> NodeFeatures:
    """The answer of a NodeFeature list (its ``items``) reduced to this Node's GPU claims. An
    object counts only when its ``nfd.node.kubernetes.io/node-name`` label names the Node (the
    server may ignore the label selector); anything malformed is skipped."""
    if not isinstance(items, list):
        return NodeFeatures(NF_ERROR, detail="the NodeFeature list has no items")
    found: List[Tuple[str, Tuple[str, ...]]] = []
    for item in items[:MAX_KEYS]:
        meta = _str_map(_str_map(item).get("metadata"))
        if _str_map(meta.get("labels")).get(NODE_NAME_LABEL) != node_name:
            continue
        labels = _str_map(_str_map(_str_map(item).get("spec")).get("labels"))
        keys = sorted(k for k in list(labels)[:MAX_KEYS] if is_gpu_labeller_key(k))
        if keys:
            where = "%s/%s" % (meta.get("namespace") or "?", meta.get("name") or "?")
            found.append((where, tuple(keys)))
    return NodeFeatures(NF_FOUND if found else NF_NONE, tuple(sorted(found)))


@dataclass(frozen=True)
class Evidence:
    """One sign that another tool labels the GPU: ``kind`` is nfd-annotation, nodefeature or
    gfd-label; ``where`` the annotation, object or label; ``keys`` what it shows."""

    kind: str
    where: str
    keys: Tuple[str, ...]

    def describe(self, shown: int = 4) -> str:
        keys = ", ".join(self.keys[:shown]) + (
            " and %d more" % (len(self.keys) - shown) if len(self.keys) > shown else "")
        if self.kind == "nfd-annotation":
            return "NFD manages %s (annotation %s)" % (keys, self.where)
        if self.kind == "nodefeature":
            return "NodeFeature %s carries %s" % (self.where, keys)
        return "GFD's %s is on the Node" % keys


@dataclass(frozen=True)
class Contest:
    """Who else labels ``nvidia.com/gpu.*`` on this Node (empty ``evidence``: nobody seen)."""

    evidence: Tuple[Evidence, ...] = ()
    nodefeatures: NodeFeatures = NOT_ASKED

    @property
    def present(self) -> bool:
        return bool(self.evidence)

    @property
    def managed(self) -> FrozenSet[str]:
        """Keys an automated labeller provably makes (NFD lists them or a NodeFeature has
        them): the only foreign values ``own`` overwrites and uninstall leaves alone."""
        return frozenset(k for e in self.evidence if e.kind != "gfd-label" for k in e.keys)

    def describe(self, shown: int = 3) -> str:
        text = "; ".join(e.describe() for e in self.evidence[:shown])
        if len(self.evidence) > shown:
            text += "; and %d more" % (len(self.evidence) - shown)
        return text

    @property
    def signature(self) -> Tuple[Tuple[str, str, Tuple[str, ...]], ...]:
        """What a change of situation means for the log: the evidence, not the values."""
        return tuple((e.kind, e.where, e.keys) for e in self.evidence)


def detect(labels: Mapping[str, str], annotations: Mapping[str, str],
           nodefeatures: NodeFeatures = NOT_ASKED) -> Contest:
    """The evidence on a Node (its labels and annotations) and in its NodeFeature objects."""
    evidence: List[Evidence] = []
    for key in sorted(annotations):
        if is_nfd_labels_annotation(key):
            keys = tuple(k for k in parse_nfd_labels(annotations[key]) if is_gpu_labeller_key(k))
            if keys:
                evidence.append(Evidence("nfd-annotation", key, keys))
    for where, keys in nodefeatures.objects:
        evidence.append(Evidence("nodefeature", where, keys))
    gfd = tuple(sorted(k for k in labels if k.startswith(GFD_ONLY)))
    if gfd:
        evidence.append(Evidence("gfd-label", "labels", gfd))
    return Contest(tuple(evidence), nodefeatures)


@dataclass(frozen=True)
class GpuDecision:
    """What to do with the ``nvidia.com/gpu.*`` keys. ``hold``: neither written nor removed;
    ``keep``: held keys that stay in the ownership annotation; ``take``: keys with a foreign
    value edgeagent overwrites and owns from now on."""

    hold: FrozenSet[str] = frozenset()
    keep: FrozenSet[str] = frozenset()
    take: FrozenSet[str] = frozenset()


def decide(contest: Contest, mode: str, desired: Mapping[str, str], current: Mapping[str, str],
           owned: Iterable[str]) -> GpuDecision:
    """The decision for one reconcile (see the module docstring): ``desired`` the computed
    labels, ``current`` the Node's, ``owned`` the keys edgeagent may own by its annotation."""
    if mode not in MODES:
        raise ValueError("nvidia_gpu_labels_owner must be one of %s, not %r" % (MODES, mode))
    owned_gpu = {k for k in owned if k in NVIDIA_GPU_KEYS}
    managed = contest.managed
    if mode == "off":
        return GpuDecision(hold=frozenset(owned_gpu & managed))
    if not contest.present:
        return GpuDecision()
    if mode == "own":
        return GpuDecision(take=frozenset(
            k for k in desired if k in NVIDIA_GPU_KEYS and k in current and k not in owned_gpu
            and k in managed))
    family = owned_gpu | {k for k in desired if k in NVIDIA_GPU_KEYS}
    keep = frozenset(k for k in owned_gpu if k in current and k not in managed
                     and (k not in desired or current[k] == desired[k]))
    return GpuDecision(hold=frozenset(family), keep=keep)


def node_contest(node: Mapping[str, Any], nodefeatures: NodeFeatures = NOT_ASKED) -> Contest:
    """``detect`` on a Node object (missing or malformed parts read as empty)."""
    meta = _str_map(_str_map(node).get("metadata"))
    labels = {k: v for k, v in _str_map(meta.get("labels")).items() if isinstance(v, str)}
    annotations = {k: v for k, v in _str_map(meta.get("annotations")).items()
                   if isinstance(v, str)}
    return detect(labels, annotations, nodefeatures)


def mode_for(nvidia_gpu_labels: bool, owner: str) -> str:
    """The decision mode from the two options."""
    return owner if nvidia_gpu_labels else "off"


def unknown_reason(nodefeatures: NodeFeatures) -> Optional[str]:
    """Why the NodeFeature objects could not be seen, for the log and doctor (None: seen)."""
    if nodefeatures.state == NF_FORBIDDEN:
        return ("this identity may not list NodeFeature objects (403; a node's own identity "
                "never may): a NodeFeature NFD has not applied yet goes unseen")
    if nodefeatures.state == NF_ABSENT:
        return "the cluster serves no NodeFeature API (404: NFD's CRDs are not installed)"
    if nodefeatures.state == NF_SKIPPED and nodefeatures.detail:
        return "not read: %s" % nodefeatures.detail
    if nodefeatures.state == NF_ERROR:
        return "the NodeFeature objects could not be read: %s" % (nodefeatures.detail or "?")
    return None
