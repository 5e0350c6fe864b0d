"""I/O: read the NodeFeature objects of a Node (NFD's API) into ``contest.NodeFeatures``.

A node's own identity may not list them (no RBAC grants nodes the nfd.k8s-sigs.io group): 403,
and 404 where NFD's CRDs are not installed, are "unknown", never an error that stops labelling;
so is any other failure (the Node's GET that follows reports the API server's state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from edgeagent.kube.errors import KubeError
from edgeagent.labels.contest import NF_ABSENT, NF_ERROR, NF_FORBIDDEN, NodeFeatures, \
    nodefeatures_for

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.kube.client import KubeClient


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
