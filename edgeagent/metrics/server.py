"""The HTTP side of the metrics component: ``/metrics``, ``/healthz``, ``/``, on the agent's loop.

aiohttp's AppRunner + TCPSite (never ``web.run_app``, which owns the loop and signals). A scrape
renders the registry from state already in memory: it never waits on tegrastats or the API server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable, Dict, Optional, Tuple

log = logging.getLogger(__name__)

STOP_TIMEOUT = 1.0
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

    def __init__(self, registry: Any, host: str, port: int,
                 health: Callable[[], Tuple[bool, Dict[str, Any]]]) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.health = health
        self._runner: Any = None

    def make_app(self) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        return app

    async def start(self) -> None:
        """Listen; OSError (address in use, no such address) propagates to the supervisor."""
        from aiohttp import web

        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await _bounded(runner.cleanup())
            raise OSError(e.errno, "cannot listen on %s:%d: %s" % (
                self.host, self.port, e.strerror or e)) from None
        self._runner = runner
        log.info("serving /metrics and /healthz on http://%s:%d/", self.host, self.bound_port)

    @property
    def bound_port(self) -> Optional[int]:
        """The port actually listened on (useful with port 0)."""
        if self._runner is None:
            return None
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return None

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await _bounded(runner.cleanup())

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: Any) -> Any:
        from aiohttp import web

        ok, summary = self.health()
        return web.Response(status=200 if ok else 503,
                            text=json.dumps(summary, indent=2, sort_keys=True) + "\n",
                            content_type="application/json")

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        from edgeagent import __version__

        return web.Response(text=_INDEX % {"version": __version__}, content_type="text/html")


async def _bounded(coro: Any, timeout: float = STOP_TIMEOUT) -> None:
    try:
        await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        log.warning("HTTP server did not stop within %.1fs", timeout)
