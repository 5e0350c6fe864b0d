"""The ``labels`` component of ``edgeagent run``: reconciles the own Node's labels forever."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, List

from edgeagent.supervisor import Component

log = logging.getLogger(__name__)


def credential_loader(root: Any, config: Any, env: Any = None) -> Callable[[], Any]:
    """A function that finds the credentials (again) each time it is called."""
    from edgeagent.kube.credentials import find_credentials

    explicit = config["kubeconfig"]
    return lambda: find_credentials(root, explicit, os.environ if env is None else env)


def make_client(root: Any, config: Any, registry: Any = None) -> Any:
    """A KubeClient for this host's credentials (loaded lazily, on the first request)."""
    from edgeagent.kube.client import CredentialCache, KubeClient, KubeMetrics

    return KubeClient(CredentialCache(credential_loader(root, config)),
                      timeout=config["kube.timeout_seconds"],
                      metrics=KubeMetrics.for_registry(registry))


def node_name_function(root: Any, config: Any, client: Any) -> Callable[[], str]:
    from edgeagent.kube.nodename import resolve_node_name

    def name() -> str:
        creds = client.credentials.get() if client is not None else None
        return resolve_node_name(config, root, creds)[0]

    return name


class LabelsComponent(Component):
    name = "labels"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        from edgeagent.labels.metrics import LabelMetrics

        self.metrics = LabelMetrics(ctx.registry) if ctx.registry is not None else None

    async def run(self, started: Callable[[], None]) -> None:
        from edgeagent.labels.compute import compute_labels
        from edgeagent.labels.reconciler import Reconciler

        ctx = self.ctx
        config = ctx.config
        # Demo: no API server at all; the loop logs the patch against an empty Node.
        client = None if ctx.demo else make_client(ctx.root, config, ctx.registry)
        try:
            reconciler = Reconciler(
                feed=ctx.inventory,
                compute=lambda inv: compute_labels(inv, config),
                prefix=config["labels.prefix"],
                node_name=node_name_function(ctx.root, config, client),
                client=client,
                metrics=self.metrics,
                dry_run=ctx.dry_run,
                drift_seconds=config["labels.drift_check_seconds"],
                startup_jitter=0.0 if (ctx.demo or ctx.dry_run) else
                config["labels.startup_jitter_seconds"],
            )
            await reconciler.run(started)
        finally:
            if client is not None:
                await client.close()


def build(ctx: Any) -> List[Component]:
    """Factory for app.COMPONENT_FACTORIES. An explicitly given kubeconfig that cannot be used is
    an operator error now (exit 2); the kubelet's own may appear later, so it is retried."""
    if ctx.config["kubeconfig"] and not ctx.demo:
        from edgeagent.kube.credentials import find_credentials
        from edgeagent.kube.tls import make_ssl_context

        make_ssl_context(find_credentials(ctx.root, ctx.config["kubeconfig"]))
    return [LabelsComponent(ctx)]
