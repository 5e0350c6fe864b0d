"""I/O: read the NodeFeature objects of a Node (NFD's API) into ``contest.NodeFeatures``, and
publish the labels as edgeagent's own NodeFeature (``labels.publish = "nodefeature"``).

A node's own identity may not list them (no RBAC grants nodes the nfd.k8s-sigs.io group): 403,
and 404 where NFD's CRDs are not installed, are "unknown", never an error that stops labelling;
so is any other failure (the Node's GET that follows reports the API server's state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from edgeagent.kube.errors import KubeError
from edgeagent.labels.contest import NF_ABSENT, NF_ERROR, NF_FORBIDDEN, NodeFeatures, decide, \
    detect, nodefeatures_for
from edgeagent.labels.plan import Plan, node_labels
from edgeagent.labels.publish import nodefeature_name, others, plan_handover, plan_nodefeature

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.kube.client import KubeClient

# As many tries as the Node's patch gets (reconciler.MAX_CONFLICT_RETRIES, which imports this).
MAX_CONFLICT_RETRIES = 5


async def read_nodefeatures(client: "KubeClient", node: str,
                            timeout: Optional[float] = None) -> NodeFeatures:
    """The GPU claims of ``node``'s NodeFeature objects, or why they are unknown. Credential
    problems propagate (the caller handles them as for any request)."""
    try:
        items = await client.list_node_features(node, timeout=timeout)
    except KubeError as e:
        detail = " ".join(str(e).split())[:300]
        if e.status == 403:
            return NodeFeatures(NF_FORBIDDEN, detail=detail)
        if e.status == 404:
            return NodeFeatures(NF_ABSENT, detail=detail)
        return NodeFeatures(NF_ERROR, detail=detail)
    return nodefeatures_for(items, node)


class NodeFeatureForbidden(KubeError):
    """This identity may not read or write its NodeFeature object (RBAC): an operator must
    grant it, or set labels.publish back to "node"."""


@dataclass(frozen=True)
class Published:
    """One publishing pass: the object as it should be, whether it was written, and the plan of
    the Node (a handover patch, the contest, the keys deferred) for the reconciler's reports."""

    namespace: str
    name: str
    body: Optional[Dict[str, Any]]      # what was (or would be) written; None: already right
    written: bool
    plan: Plan


async def publish_labels(client: "KubeClient", node_name: str, namespace: str,
                         labels: Mapping[str, str], prefix: str, gpu_owner: str,
                         nodefeatures: NodeFeatures, send: bool = True,
                         on_conflict: Callable[[], None] = lambda: None) -> Published:
    """GET the Node (for GFD's labels and labels edgeagent patched before), decide the GPU keys
    (GFD's own NodeFeature counts, edgeagent's does not; NFD's annotation cannot tell the two
    apart, so it is not evidence here), then create or replace the NodeFeature (a 409 reads
    again), then hand the Node's own labels over to nfd-master."""
    node = await client.get_node(node_name)
    contest = detect(node_labels(node), {}, others(nodefeatures, namespace, node_name))
    gpu = decide(contest, gpu_owner, labels, {}, ())
    published = {k: v for k, v in labels.items() if k not in gpu.hold}
    name = nodefeature_name(node_name)
    body: Optional[Dict[str, Any]] = None
    written = False
    try:
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            if attempt == MAX_CONFLICT_RETRIES:
                raise KubeError("NodeFeature %s/%s changed %d times while writing; try again"
                                % (namespace, name, attempt), status=409, reason="Conflict")
            existing = await client.get_nodefeature(namespace, name)
            body = plan_nodefeature(existing, node_name, namespace, published)
            if body is None or not send:
                break
            try:
                await client.write_nodefeature(namespace, body)
            except KubeError as e:
                if e.status != 409:
                    raise
                on_conflict()
                continue
            written = True
            break
    except KubeError as e:
        if e.status == 403:
            raise NodeFeatureForbidden(str(e), status=403, reason=e.reason) from None
        raise
    handover = plan_handover(node, published, prefix)
    if handover.patch is not None and send:
        await client.patch_node(node_name, handover.patch)
    plan = Plan(patch=handover.patch, removed=handover.removed, ignored=handover.ignored,
                deferred=tuple(sorted(gpu.hold)), taken=(), contest=contest)
    return Published(namespace, name, body, written, plan)
