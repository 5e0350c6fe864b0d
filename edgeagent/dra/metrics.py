"""The DRA kubelet plugin's metrics. Names are a contract (README, dashboard):
``edgeagent_dra_prepares_total{result}``, ``edgeagent_dra_unprepares_total{result}`` (per claim,
result ok or error), ``edgeagent_dra_prepared_claims`` and ``edgeagent_dra_node_prepare_seconds``
(one NodePrepareResources call)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - types only
    from prometheus_client import CollectorRegistry

RESULTS = ("ok", "error")
# A cached answer takes well under a millisecond; a cold one waits for the API server (the
# kubelet gives up after 45 s by default).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 45.0)


class DraMetrics:
    def __init__(self, registry: "CollectorRegistry") -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.prepares = Counter("edgeagent_dra_prepares", "Claims NodePrepareResources "
                                "answered, by result (ok, error)", ["result"], registry=registry)
        self.unprepares = Counter("edgeagent_dra_unprepares", "Claims NodeUnprepareResources "
                                  "answered, by result (ok, error)", ["result"],
                                  registry=registry)
        self.prepared = Gauge("edgeagent_dra_prepared_claims", "Claims prepared on this node "
                              "(in the checkpoint)", registry=registry)
        self.prepare_seconds = Histogram("edgeagent_dra_node_prepare_seconds",
                                         "Time to answer one NodePrepareResources call",
                                         buckets=BUCKETS, registry=registry)
        for result in RESULTS:
            self.prepares.labels(result=result)
            self.unprepares.labels(result=result)
