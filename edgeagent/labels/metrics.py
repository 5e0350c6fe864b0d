"""The labels component's metrics (names are a contract: the dashboard uses them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - types only
    from prometheus_client import CollectorRegistry

RESULTS = ("applied", "unchanged", "conflict", "error", "dry_run")


class LabelMetrics:
    def __init__(self, registry: "CollectorRegistry") -> None:
        from prometheus_client import Counter, Gauge

        self.patches = Counter("edgeagent_labels_patches", "Node label reconciles by result: "
                               "applied, unchanged, conflict (409, re-read), error, dry_run",
                               ["result"], registry=registry)
        self.owned = Gauge("edgeagent_labels_owned", "Labels edgeagent owns on its Node",
                           registry=registry)
        self.deferred = Gauge("edgeagent_labels_deferred", "nvidia.com/gpu.* labels edgeagent "
                              "leaves to GPU feature discovery / NFD on its Node",
                              registry=registry)
        self.last_success = Gauge("edgeagent_labels_last_success_timestamp_seconds",
                                  "Unix time the Node's labels were last confirmed or written",
                                  registry=registry)
        for result in RESULTS:
            self.patches.labels(result=result)

    def count(self, result: str) -> None:
        self.patches.labels(result=result).inc()
