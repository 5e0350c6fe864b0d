"""The HTTP side of the metrics component: ``/metrics``, ``/healthz``, ``/``, on the agent's loop.

aiohttp's AppRunner (never ``web.run_app``, which owns the loop and signals) without a TCPSite:
connections are accepted by :class:`~edgeagent.metrics.listener.GuardedListener`, which bounds
them and times out slow and idle clients, and served by aiohttp's low-level ``web.Server``. A
scrape renders the registry from state already in memory: it never waits on tegrastats or the
API server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Awaitable, Callable, Dict, Optional, Tuple

from edgeagent.metrics.listener import IDLE_TIMEOUT, GuardedListener

if TYPE_CHECKING:  # pragma: no cover - types only
    from aiohttp import web
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

STOP_TIMEOUT = 0.5            # of the 1.2 s the supervisor gives all components to stop
SERVICE = "edgeagent"           # /healthz says who answers: `doctor` tells our port from a stranger

_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgeagent</title></head>
<body>
<h1>edgeagent %(version)s</h1>
<p>Kubernetes GPU node agent for NVIDIA Jetson and devicetree boards.</p>
<ul>
<li><a href="metrics">/metrics</a>: Prometheus metrics (OpenMetrics when asked)</li>
<li><a href="healthz">/healthz</a>: health of every component, as JSON</li>
</ul>
</body></html>
"""


class MetricsServer:
    """Serves ``registry`` and a health summary on ``host:port`` (port 0: any free port)."""

    def __init__(self, registry: "CollectorRegistry", host: str, port: int,
                 health: Callable[[], Tuple[bool, Dict[str, object]]],
                 max_connections: Optional[int] = None) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.health = health
        self.max_connections = max_connections
        self._runner: Optional["web.AppRunner"] = None
        self.listener: Optional[GuardedListener] = None

    def make_app(self) -> "web.Application":
        from edgeagent.lightaiohttp import import_aiohttp

        import_aiohttp()  # before aiohttp.web imports the package
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        return app

    async def start(self) -> None:
        """Listen; OSError (address in use, no such address) propagates to the supervisor."""
        from edgeagent.lightaiohttp import import_aiohttp

        import_aiohttp()  # before aiohttp.web imports the package
        from aiohttp import web

        # keepalive_timeout: aiohttp's own idle timer agrees with the listener's
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                               keepalive_timeout=IDLE_TIMEOUT, shutdown_timeout=STOP_TIMEOUT / 2)
        await runner.setup()
        server = runner.server
        assert server is not None       # set by setup()
        listener = GuardedListener(server, self.host, self.port, self.max_connections)
        try:
            await listener.start()
        except OSError as e:
            await _bounded(runner.cleanup())
            raise OSError(e.errno, "cannot listen on %s:%d: %s" % (
                self.host, self.port, e.strerror or e)) from None
        self._runner, self.listener = runner, listener
        log.info("serving /metrics and /healthz on http://%s:%d/ (at most %d connections)",
                 self.host, self.bound_port, listener.max_connections)

    @property
    def bound_port(self) -> Optional[int]:
        """The port actually listened on (useful with port 0)."""
        return self.listener.bound_port if self.listener is not None else None

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop_accepting()
        if runner is not None:
            await _bounded(runner.cleanup())
        if listener is not None:
            await listener.close()

    async def _metrics(self, request: "web.Request") -> "web.Response":
        from aiohttp import web
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: "web.Request") -> "web.Response":
        from aiohttp import web

        ok, summary = self.health()
        return web.Response(status=200 if ok else 503,
                            text=json.dumps(summary, indent=2, sort_keys=True) + "\n",
                            content_type="application/json")

    async def _index(self, request: "web.Request") -> "web.Response":
        from aiohttp import web

        from edgeagent import __version__

        return web.Response(text=_INDEX % {"version": __version__}, content_type="text/html")


async def _bounded(coro: Awaitable[None], timeout: float = STOP_TIMEOUT) -> None:
    try:
        await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        log.warning("HTTP server did not stop within %.1fs", timeout)
