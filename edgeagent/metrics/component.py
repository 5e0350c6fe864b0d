"""The metrics component: the tegrastats runner and the HTTP server, built from the agent context.

``build(ctx)`` registers the tegrastats and agent collectors into ``ctx.registry`` (which the other
components register their own metrics into) and returns two supervised components: ``tegrastats``
(keeps the child running; idle on a host without it) and ``metrics`` (serves the registry).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple

from edgeagent.supervisor import Component, ComponentStatus

if TYPE_CHECKING:  # pragma: no cover - types only
    from prometheus_client import CollectorRegistry

    from edgeagent.app import AgentContext
    from edgeagent.config import MetricsOptions, TegrastatsOptions
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.hostpaths import HostRoot
    from edgeagent.tegrastats.runner import TegrastatsState

log = logging.getLogger(__name__)

Health = Callable[[], Tuple[bool, Dict[str, object]]]


def health_summary(status: Mapping[str, ComponentStatus],
                   tegrastats: Optional["TegrastatsState"] = None
                   ) -> Tuple[bool, Dict[str, object]]:
    """(healthy, JSON document) for /healthz: healthy when every enabled component is up and
    none is degraded (crash-looping, out of its restart budget, or saying it has a problem)."""
    from edgeagent import __version__
    from edgeagent.metrics.server import SERVICE

    components = {
        name: {"up": st.up, "state": st.state, "restarts": st.restarts,
               "failures": st.failures, "last_error": st.last_error,
               "degraded": st.degraded, "problem": st.problem}
        for name, st in sorted(status.items())
    }
    ok = bool(components) and all(c["up"] and not c["degraded"] for c in components.values())
    doc: Dict[str, object] = {"service": SERVICE, "version": __version__,
                              "status": "ok" if ok else "degraded", "components": components}
    if tegrastats is not None:
        doc["tegrastats"] = tegrastats.summary()
    return ok, doc


class MetricsComponent(Component):
    """Serves /metrics, /healthz and / until cancelled."""

    name = "metrics"

    def __init__(self, options: "MetricsOptions", registry: "CollectorRegistry",
                 health: Health) -> None:
        self.options = options
        self.registry = registry
        self.health = health
        self.server: Optional[object] = None

    async def run(self, started: Callable[[], None]) -> None:
        from edgeagent.metrics.server import MetricsServer

        host, port = self.options.address
        server = self.server = MetricsServer(self.registry, host, port, self.health)
        await server.start()
        try:
            started()
            await asyncio.Event().wait()
        finally:
            await server.stop()


def install_demo_tegrastats(root: "HostRoot", host_path: str) -> Optional[str]:
    """Put the replay stand-in (the packaged AGX Xavier JetPack 5 log) at ``host_path`` under the
    demo root, unless something is already there. Returns the real path written, or None."""
    from edgeagent.tegrastats import replay

    target = root.path(host_path)
    if os.path.exists(target):
        return None
    with open(replay.default_log(), "r", encoding="utf-8") as f:
        lines = replay.tegrastats_lines(f.read())
    replay.write_script(target, lines)
    log.info("demo: %s replays a recorded AGX Xavier tegrastats log", host_path)
    return target


def build_metrics(root: "HostRoot", metrics: "MetricsOptions", tegrastats: "TegrastatsOptions",
                  registry: "CollectorRegistry", inventory: "InventoryFeed",
                  status: Callable[[], Mapping[str, ComponentStatus]],
                  demo: bool = False) -> List[Component]:
    """The tegrastats runner and the HTTP server, their collectors registered in ``registry``."""
    from prometheus_client import ProcessCollector

    from edgeagent.metrics.collector import AgentCollector, TegrastatsCollector
    from edgeagent.tegrastats.runner import TegrastatsRunner, TegrastatsState

    state = TegrastatsState(tegrastats.path, tegrastats.interval_ms / 1000.0)
    if demo:
        install_demo_tegrastats(root, tegrastats.path)
    registry.register(TegrastatsCollector(state))
    registry.register(AgentCollector(inventory, status))
    # the agent's own memory and CPU (process_*): it runs beside GPU work on 4 GB boards
    ProcessCollector(registry=registry)

    def health() -> Tuple[bool, Dict[str, object]]:
        return health_summary(status(), state)

    return [TegrastatsRunner(root, tegrastats, state),
            MetricsComponent(metrics, registry, health)]


def build(ctx: "AgentContext") -> List[Component]:
    """The metrics components; called once by app.build_components."""
    options = ctx.config.options
    return build_metrics(ctx.root, options.metrics, options.tegrastats, ctx.registry,
                         ctx.inventory, ctx.status, demo=ctx.demo)
