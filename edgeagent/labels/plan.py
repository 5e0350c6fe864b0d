"""Pure: the JSON merge patch (RFC 7386) that moves a Node's labels to the desired ones.

Ownership: the annotation ``<prefix>owned-labels`` lists (comma-separated, sorted) the label keys
edgeagent set. It is data anybody can edit, so it is a guard, not a wish list: a key counts as
owned only when it is listed there *and* is one edgeagent computes (``compute.is_own_key``: its
prefix, ``beta.devicetree.org/``, its own ``nvidia.com/gpu.*`` names). Anything else listed
(``kubernetes.io/hostname``, ``team``, a GFD label...) is reported in ``Plan.ignored`` and never
changed or removed. A desired key that is already on the Node but not owned (set by an
administrator, GPU feature discovery or the devicetree labeller) is left alone and not claimed,
so uninstalling never deletes a label someone else put there.

Where GPU feature discovery or NFD also label ``nvidia.com/gpu.*``, ``labels/contest.py``
decides which of those keys are held (neither written nor removed), kept in the annotation, or
taken over; ``plan_labels`` applies that decision and ``plan_removal`` never removes a key NFD
lists as its own.

The patch carries ``metadata.resourceVersion``: the API server then applies it only to the
version that was read and answers 409 Conflict otherwise (optimistic concurrency). A Node
without ``metadata`` is no Node: planning against it raises ValueError rather than treating it
as empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from edgeagent.labels.compute import is_own_key
from edgeagent.labels.contest import NOT_ASKED, Contest, NodeFeatures, decide, node_contest
from edgeagent.labels.sanitize import is_valid_key

OWNED_ANNOTATION = "owned-labels"


def owned_annotation_key(prefix: str) -> str:
    return prefix + OWNED_ANNOTATION


def parse_owned(value: Optional[str]) -> List[str]:
    """The annotation's keys; anything that is not a label key (hand edits) is ignored."""
    if not value or not isinstance(value, str):
        return []
    return sorted({k.strip() for k in value.split(",") if k.strip() and is_valid_key(k.strip())})


def split_owned(listed: Iterable[str], prefix: str) -> Tuple[List[str], List[str]]:
    """(keys edgeagent may own, keys it ignores) of an ownership annotation's list."""
    owned, ignored = [], []
    for key in listed:
        (owned if is_own_key(key, prefix) else ignored).append(key)
    return owned, ignored


def format_owned(keys: Iterable[str]) -> str:
    return ",".join(sorted(keys))


@dataclass(frozen=True)
class Plan:
    """What a reconcile would do. ``patch`` is None when the Node already matches."""

    patch: Optional[Dict[str, Any]]
    set_labels: Dict[str, str] = field(default_factory=dict)
    removed: Tuple[str, ...] = ()
    owned: Tuple[str, ...] = ()            # the ownership list after the patch
    foreign: Tuple[str, ...] = ()          # desired keys left alone: someone else owns them
    ignored: Tuple[str, ...] = ()          # listed in the annotation but not edgeagent's to own
    deferred: Tuple[str, ...] = ()         # nvidia.com/gpu.* keys left to GFD/NFD: not touched
    taken: Tuple[str, ...] = ()            # foreign values GFD/NFD made, overwritten ("own")
    contest: Contest = Contest()           # who else labels nvidia.com/gpu.* here

    @property
    def changed(self) -> bool:
        return self.patch is not None


def _meta(node: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = node.get("metadata") if isinstance(node, Mapping) else None
    if not isinstance(meta, Mapping):
        raise ValueError("not a Node object (no metadata)")
    return meta


def _strmap(value: Any) -> Dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def node_labels(node: Mapping[str, Any]) -> Dict[str, str]:
    return _strmap(_meta(node).get("labels"))


def node_listed(node: Mapping[str, Any], prefix: str) -> List[str]:
    """The keys the Node's ownership annotation lists, trusted or not."""
    return parse_owned(_strmap(_meta(node).get("annotations")).get(owned_annotation_key(prefix)))


def node_owned(node: Mapping[str, Any], prefix: str) -> List[str]:
    """The listed keys edgeagent may own (see the module docstring)."""
    return split_owned(node_listed(node, prefix), prefix)[0]


def build_patch(node: Mapping[str, Any], labels_patch: Dict[str, Optional[str]],
                annotation_key: str, new_owned: Optional[str]) -> Optional[Dict[str, Any]]:
    """The merge patch of ``labels_patch`` and the ownership annotation's new value (None:
    removed), with the Node's resourceVersion; None when nothing changes."""
    annotations = _strmap(_meta(node).get("annotations"))
    annotation_changes: Dict[str, Optional[str]] = {}
    if annotations.get(annotation_key) != new_owned:
        if new_owned is not None or annotation_key in annotations:
            annotation_changes[annotation_key] = new_owned
    if not labels_patch and not annotation_changes:
        return None
    metadata: Dict[str, Any] = {}
    rv = _meta(node).get("resourceVersion")
    if rv:
        metadata["resourceVersion"] = rv
    if labels_patch:
        metadata["labels"] = dict(sorted(labels_patch.items()))
    if annotation_changes:
        metadata["annotations"] = annotation_changes
    return {"metadata": metadata}


def plan_labels(node: Mapping[str, Any], desired: Mapping[str, str], prefix: str,
                gpu_owner: str = "defer", nodefeatures: NodeFeatures = NOT_ASKED) -> Plan:
    """The patch that sets ``desired`` on ``node`` and removes owned labels no longer desired.
    ``desired`` holds only keys of edgeagent's own families (ValueError otherwise).
    ``gpu_owner`` (defer, own, off) and ``nodefeatures`` decide the ``nvidia.com/gpu.*`` keys
    where another tool labels them (``contest.decide``)."""
    strays = [key for key in desired if not is_own_key(key, prefix)]
    if strays:
        raise ValueError("not edgeagent's to set: %s" % ", ".join(sorted(strays)))
    current = node_labels(node)
    owned_list, ignored = split_owned(node_listed(node, prefix), prefix)
    owned = set(owned_list)
    contest = node_contest(node, nodefeatures)
    gpu = decide(contest, gpu_owner, desired, current, owned)
    labels_patch: Dict[str, Optional[str]] = {}
    new_owned = set(gpu.keep)
    foreign = []
    for key, value in desired.items():
        if key in gpu.hold:
            continue
        if key in current and key not in owned and key not in gpu.take:
            foreign.append(key)
            continue
        new_owned.add(key)
        if current.get(key) != value:
            labels_patch[key] = value
    removed = []
    for key in sorted(owned - set(desired) - gpu.hold):
        if key in current:
            labels_patch[key] = None
            removed.append(key)
    annotation_key = owned_annotation_key(prefix)
    patch = build_patch(node, labels_patch, annotation_key,
                   format_owned(new_owned) if new_owned else None)
    return Plan(
        patch=patch,
        set_labels={k: v for k, v in sorted(labels_patch.items()) if v is not None},
        removed=tuple(removed),
        owned=tuple(sorted(new_owned)),
        foreign=tuple(sorted(foreign)),
        ignored=tuple(ignored),
        deferred=tuple(sorted(gpu.hold)),
        taken=tuple(sorted(gpu.take)),
        contest=contest,
    )


def plan_removal(node: Mapping[str, Any], prefix: str) -> Plan:
    """The patch that removes exactly the owned labels and the ownership annotation, except
    keys NFD lists as its own (GFD's label now: removing it would delete theirs)."""
    current = node_labels(node)
    owned, ignored = split_owned(node_listed(node, prefix), prefix)
    nfd = node_contest(node).managed
    removed = [k for k in owned if k in current and k not in nfd]
    patch = build_patch(node, {k: None for k in removed}, owned_annotation_key(prefix), None)
    return Plan(patch=patch, removed=tuple(removed), ignored=tuple(ignored),
                deferred=tuple(k for k in owned if k in nfd))
