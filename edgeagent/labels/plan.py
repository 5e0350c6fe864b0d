"""Pure: the JSON merge patch (RFC 7386) that moves a Node's labels to the desired ones.

Ownership: the annotation ``<prefix>owned-labels`` lists (comma-separated, sorted) the label keys
edgeagent set. Only those keys are ever changed or removed. A desired key that is already on the
Node but not owned (set by an administrator, GPU feature discovery or the devicetree labeller)
is left alone and not claimed, so uninstalling never deletes a label someone else put there.

The patch carries ``metadata.resourceVersion``: the API server then applies it only to the
version that was read and answers 409 Conflict otherwise (optimistic concurrency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgeagent.labels.sanitize import is_valid_key

OWNED_ANNOTATION = "owned-labels"


def owned_annotation_key(prefix: str) -> str:
    return prefix + OWNED_ANNOTATION


def parse_owned(value: Optional[str]) -> List[str]:
    """The annotation's keys; anything that is not a label key (hand edits) is ignored."""
    if not value or not isinstance(value, str):
        return []
    return sorted({k.strip() for k in value.split(",") if k.strip() and is_valid_key(k.strip())})


def format_owned(keys) -> str:
    return ",".join(sorted(keys))


@dataclass(frozen=True)
class Plan:
    """What a reconcile would do. ``patch`` is None when the Node already matches."""

    patch: Optional[Dict[str, Any]]
    set_labels: Dict[str, str] = field(default_factory=dict)
    removed: Tuple[str, ...] = ()
    owned: Tuple[str, ...] = ()            # the ownership list after the patch
    foreign: Tuple[str, ...] = ()          # desired keys left alone: someone else owns them

    @property
    def changed(self) -> bool:
        return self.patch is not None


def _meta(node: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = node.get("metadata") if isinstance(node, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def _strmap(value: Any) -> Dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def node_labels(node: Mapping[str, Any]) -> Dict[str, str]:
    return _strmap(_meta(node).get("labels"))


def node_owned(node: Mapping[str, Any], prefix: str) -> List[str]:
    return parse_owned(_strmap(_meta(node).get("annotations")).get(owned_annotation_key(prefix)))


def _build(node: Mapping[str, Any], labels_patch: Dict[str, Optional[str]],
           annotation_key: str, new_owned: Optional[str]) -> Optional[Dict[str, Any]]:
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


def plan_labels(node: Mapping[str, Any], desired: Mapping[str, str], prefix: str) -> Plan:
    """The patch that sets ``desired`` on ``node`` and removes owned labels no longer desired."""
    current = node_labels(node)
    owned = set(node_owned(node, prefix))
    labels_patch: Dict[str, Optional[str]] = {}
    new_owned = set()
    foreign = []
    for key, value in desired.items():
        if key in current and key not in owned:
            foreign.append(key)
            continue
        new_owned.add(key)
        if current.get(key) != value:
            labels_patch[key] = value
    removed = []
    for key in sorted(owned - set(desired)):
        if key in current:
            labels_patch[key] = None
            removed.append(key)
    annotation_key = owned_annotation_key(prefix)
    patch = _build(node, labels_patch, annotation_key,
                   format_owned(new_owned) if new_owned else None)
    return Plan(
        patch=patch,
        set_labels={k: v for k, v in sorted(labels_patch.items()) if v is not None},
        removed=tuple(removed),
        owned=tuple(sorted(new_owned)),
        foreign=tuple(sorted(foreign)),
    )


def plan_removal(node: Mapping[str, Any], prefix: str) -> Plan:
    """The patch that removes exactly the owned labels and the ownership annotation."""
    current = node_labels(node)
    removed = [k for k in node_owned(node, prefix) if k in current]
    patch = _build(node, {k: None for k in removed}, owned_annotation_key(prefix), None)
    return Plan(patch=patch, removed=tuple(removed))
