"""The ``labels`` component of ``edgeagent run``: reconciles the own Node's labels forever."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, List, Optional

from edgeagent.supervisor import Component

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.app import AgentContext
    from edgeagent.config import KubeOptions, LabelsOptions
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.hostpaths import HostRoot
    from edgeagent.kube.client import KubeClient, KubeMetrics
    from edgeagent.labels.metrics import LabelMetrics
    from edgeagent.labels.reconciler import Reconciler

log = logging.getLogger(__name__)


class LabelsComponent(Component):
    """Owns one Reconciler per run: its state says whether labelling is possible at all."""

    name = "labels"

    def __init__(self, root: "HostRoot", feed: "InventoryFeed", labels: "LabelsOptions",
                 kube: "KubeOptions", demo: bool = False, dry_run: bool = False,
                 metrics: Optional["LabelMetrics"] = None,
                 kube_metrics: Optional["KubeMetrics"] = None) -> None:
        self.root = root
        self.feed = feed
        self.labels = labels
        self.kube = kube
        self.demo = demo
        self.dry_run = dry_run
        self.metrics = metrics
        self.kube_metrics = kube_metrics
        self.reconciler: Optional["Reconciler"] = None

    def problem(self) -> Optional[str]:
        return self.reconciler.problem() if self.reconciler is not None else None

    async def run(self, started: Callable[[], None]) -> None:
        from edgeagent.kube.connect import make_client, node_name_function
        from edgeagent.labels.compute import compute_labels
        from edgeagent.labels.contest import mode_for
        from edgeagent.labels.reconciler import Reconciler

        options = self.labels
        # Demo: no API server at all; the loop logs the patch against an empty Node.
        client = None if self.demo else make_client(self.root, self.kube, self.kube_metrics)
        try:
            self.reconciler = Reconciler(
                feed=self.feed,
                compute=lambda inv: compute_labels(inv, options),
                prefix=options.prefix,
                node_name=node_name_function(self.root, self.kube, client),
                client=client,
                metrics=self.metrics,
                dry_run=self.dry_run,
                drift_seconds=options.drift_check_seconds,
                startup_jitter=0.0 if (self.demo or self.dry_run) else
                options.startup_jitter_seconds,
                gpu_owner=mode_for(options.nvidia_gpu_labels, options.nvidia_gpu_labels_owner),
                publish=options.publish, nodefeature_namespace=options.nodefeature_namespace,
            )
            await self.reconciler.run(started)
        finally:
            if client is not None:
                await client.close()


def build(ctx: "AgentContext") -> List[Component]:
    """Called once by app.build_components. An explicitly given kubeconfig that cannot be used is
    an operator error now (exit 2); the kubelet's own may appear later, so it is retried. The
    metrics are registered here, once per registry, not on every restart of the component."""
    options = ctx.config.options
    if options.kube.kubeconfig and not ctx.demo:
        from edgeagent.kube.credentials import find_credentials
        from edgeagent.kube.tls import make_ssl_context

        make_ssl_context(find_credentials(ctx.root, options.kube.kubeconfig))
    metrics = kube_metrics = None
    if ctx.registry is not None:
        from edgeagent.kube.client import KubeMetrics
        from edgeagent.labels.metrics import LabelMetrics

        metrics, kube_metrics = LabelMetrics(ctx.registry), KubeMetrics.of(ctx.registry)
    return [LabelsComponent(ctx.root, ctx.inventory, options.labels, options.kube,
                            demo=ctx.demo, dry_run=ctx.dry_run, metrics=metrics,
                            kube_metrics=kube_metrics)]
