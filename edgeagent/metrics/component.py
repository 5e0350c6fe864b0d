"""The metrics component: the tegrastats runner and the HTTP server, built from the agent context.

``build(ctx)`` registers the tegrastats and agent collectors into ``ctx.registry`` (which the other
components register their own metrics into) and returns two supervised components: ``tegrastats``
(keeps the child running; idle on a host without it) and ``metrics`` (serves the registry).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgeagent.supervisor import Component

log = logging.getLogger(__name__)


def health_summary(status: Mapping[str, Any], tegrastats: Optional[Any] = None
                   ) -> Tuple[bool, Dict[str, Any]]:
    """(healthy, JSON document) for /healthz: healthy when every enabled component is up."""
    from edgeagent import __version__
    from edgeagent.metrics.server import SERVICE

    components = {
        name: {"up": st.up, "state": st.state, "restarts": st.restarts,
               "failures": st.failures, "last_error": st.last_error}
        for name, st in sorted(status.items())
    }
    ok = bool(components) and all(c["up"] for c in components.values())
    doc: Dict[str, Any] = {"service": SERVICE, "version": __version__,
                           "status": "ok" if ok else "degraded", "components": components}
    if tegrastats is not None:
        doc["tegrastats"] = tegrastats.summary()
    return ok, doc


class MetricsComponent(Component):
    """Serves /metrics, /healthz and / until cancelled."""

    name = "metrics"

    def __init__(self, registry: Any, address: Tuple[str, int],
                 health: Callable[[], Tuple[bool, Dict[str, Any]]]) -> None:
        self.registry = registry
        self.address = address
        self.health = health
        self.server: Any = None

    async def run(self, started: Callable[[], None]) -> None:
        from edgeagent.metrics.server import MetricsServer

        host, port = self.address
        self.server = MetricsServer(self.registry, host, port, self.health)
        await self.server.start()
        try:
            started()
            await asyncio.Event().wait()
        finally:
            await self.server.stop()


def install_demo_tegrastats(root: Any, host_path: str) -> Optional[str]:
    """Put the replay stand-in (the packaged AGX Xavier JetPack 5 log) at ``host_path`` under the
    demo root, unless something is already there. Returns the real path written, or None."""
    from edgeagent.tegrastats import replay

    target = root.path(host_path)
    if os.path.exists(target):
        return None
    with open(replay.default_log(), "r", encoding="utf-8") as f:
        lines = replay._tegrastats_lines(f.read())
    replay.write_script(target, lines)
    log.info("demo: %s replays a recorded AGX Xavier tegrastats log", host_path)
    return target


def build(ctx: Any) -> List[Component]:
    """The metrics components; called once by app.build_components."""
    from prometheus_client import ProcessCollector

    from edgeagent.metrics.collector import AgentCollector, TegrastatsCollector
    from edgeagent.tegrastats.runner import TegrastatsRunner, TegrastatsState

    host_path = ctx.config["tegrastats.path"]
    interval_ms = ctx.config["tegrastats.interval_ms"]
    state = TegrastatsState(host_path, interval_ms / 1000.0)
    if ctx.demo:
        install_demo_tegrastats(ctx.root, host_path)
    ctx.registry.register(TegrastatsCollector(state))
    ctx.registry.register(AgentCollector(ctx.inventory, ctx.status))
    # the agent's own memory and CPU (process_*): it runs beside GPU work on 4 GB boards
    ProcessCollector(registry=ctx.registry)

    def health() -> Tuple[bool, Dict[str, Any]]:
        return health_summary(ctx.status(), state)

    return [TegrastatsRunner(ctx.root, state, interval_ms),
            MetricsComponent(ctx.registry, ctx.config["metrics.address"], health)]
