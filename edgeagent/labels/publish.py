"""Pure: the labels as an NFD ``NodeFeature`` object (``labels.publish = "nodefeature"``).

Where Node Feature Discovery is the cluster's labeller, edgeagent can hand its labels to
nfd-master the way GPU feature discovery does: one ``nfd.k8s-sigs.io/v1alpha1`` NodeFeature per
node, ``edgeagent-features-for-<node>``, labelled ``nfd.node.kubernetes.io/node-name=<node>``,
its labels in ``spec.labels``. nfd-master writes them to the Node, lists them in its
``feature-labels`` annotation and removes them when they leave the object (or the object goes).

This module decides the object to write (None: the one there is right) and, when a Node still
carries labels edgeagent patched before (``publish = "node"`` earlier), the Node patch that hands
them over: owned labels no longer wanted go, the wanted ones stay for nfd-master to take over,
and the ownership annotation goes.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Dict, Mapping, Optional

from edgeagent.labels.contest import NODE_NAME_LABEL, NODEFEATURE_API, NodeFeatures
from edgeagent.labels.plan import Plan, build_patch, node_labels, node_listed, \
    owned_annotation_key, split_owned

NAME_PREFIX = "edgeagent-features-for-"
MAX_NAME = 253


def nodefeature_name(node: str) -> str:
    """``edgeagent-features-for-<node>``; a name over 253 characters keeps its first part and
    the first 8 hex digits of the node name's SHA-256 (stable, distinct)."""
    name = NAME_PREFIX + node
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(node.encode("utf-8")).hexdigest()[:8]
    return name[:MAX_NAME - 9].rstrip("-.") + "-" + digest


def plan_nodefeature(existing: Optional[Mapping[str, Any]], node: str, namespace: str,
                     labels: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    """The object to create (``existing`` None) or to replace (carrying its resourceVersion, so a
    concurrent writer gets a 409), or None when ``existing`` already says it. Fields others may
    have set (annotations, ownerReferences, other labels, ``spec.features``) are kept."""
    name = nodefeature_name(node)
    if existing is None:
        return {"apiVersion": NODEFEATURE_API, "kind": "NodeFeature",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {NODE_NAME_LABEL: node}},
                "spec": {"features": {"flags": {}, "attributes": {}, "instances": {}},
                         "labels": dict(sorted(labels.items()))}}
    meta = existing.get("metadata") if isinstance(existing.get("metadata"), Mapping) else {}
    spec = existing.get("spec") if isinstance(existing.get("spec"), Mapping) else {}
    own_labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    if own_labels.get(NODE_NAME_LABEL) == node and spec.get("labels") == dict(labels):
        return None
    body = copy.deepcopy(dict(existing))
    body["apiVersion"], body["kind"] = NODEFEATURE_API, "NodeFeature"
    new_meta = dict(meta)
    new_meta.update(name=name, namespace=namespace,
                    labels=dict(own_labels, **{NODE_NAME_LABEL: node}))
    body["metadata"] = new_meta
    new_spec = dict(spec)
    new_spec["labels"] = dict(sorted(labels.items()))
    new_spec.setdefault("features", {"flags": {}, "attributes": {}, "instances": {}})
    body["spec"] = new_spec
    return body


def others(nodefeatures: NodeFeatures, namespace: str, node: str) -> NodeFeatures:
    """The NodeFeature claims of everybody but edgeagent's own object: publishing through NFD,
    edgeagent must not defer to itself."""
    mine = "%s/%s" % (namespace, nodefeature_name(node))
    return NodeFeatures(nodefeatures.state,
                        tuple(o for o in nodefeatures.objects if o[0] != mine),
                        nodefeatures.detail)


def plan_handover(node: Mapping[str, Any], published: Mapping[str, str], prefix: str) -> Plan:
    """The Node patch that hands the labels edgeagent patched itself over to nfd-master: owned
    labels not published are removed, published ones stay, the ownership annotation goes."""
    current = node_labels(node)
    owned, ignored = split_owned(node_listed(node, prefix), prefix)
    removed = [k for k in owned if k in current and k not in published]
    patch = build_patch(node, {k: None for k in removed}, owned_annotation_key(prefix), None)
    return Plan(patch=patch, removed=tuple(removed), ignored=tuple(ignored))
