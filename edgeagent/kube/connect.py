"""How a component reaches the API server as this node: a client on the host's credentials
(found again whenever they change) and the node's name. Shared by every component that talks
to the API (labels, DRA)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import KubeOptions
    from edgeagent.hostpaths import HostRoot
    from edgeagent.kube.client import KubeClient, KubeMetrics
    from edgeagent.kube.credentials import Credentials


def credential_loader(root: "HostRoot", kube: "KubeOptions",
                      env: Optional[Mapping[str, str]] = None) -> Callable[[], "Credentials"]:
    """A function that finds the credentials (again) each time it is called."""
    from edgeagent.kube.credentials import find_credentials

    return lambda: find_credentials(root, kube.kubeconfig, os.environ if env is None else env)


def make_client(root: "HostRoot", kube: "KubeOptions",
                metrics: Optional["KubeMetrics"] = None) -> "KubeClient":
    """A KubeClient for this host's credentials (loaded lazily, on the first request)."""
    from edgeagent.kube.client import CredentialCache, KubeClient

    return KubeClient(CredentialCache(credential_loader(root, kube)),
                      timeout=kube.timeout_seconds, metrics=metrics)


def node_name_function(root: "HostRoot", kube: "KubeOptions",
                       client: Optional["KubeClient"]) -> Callable[[], str]:
    from edgeagent.kube.nodename import resolve_node_name

    def name() -> str:
        creds = client.credentials.get() if client is not None else None
        return resolve_node_name(kube, root, creds)[0]

    return name
