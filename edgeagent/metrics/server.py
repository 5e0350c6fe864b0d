"""The HTTP side of the metrics component: ``/metrics``, ``/healthz``, ``/``, on the agent's loop.

aiohttp's low-level server (``web.Server``, documented as such) behind
:class:`~edgeagent.metrics.listener.GuardedListener`, which accepts the connections, bounds them
and times out slow and idle clients. Three GET paths need no router: :meth:`MetricsServer.
dispatch` answers them, and 404/405 as aiohttp's router does. The server and response modules
are imported without ``aiohttp.web``, which would also load the application, router, file,
WebSocket and runner modules the agent never uses (1 MiB resident; issue 15). Unlike the router,
``Expect:`` is not answered (no interim 100, no 417): the server reads no request body, and
scrapers send none. A scrape renders the registry from state already in memory: it never waits
on tegrastats or the API server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Awaitable, Callable, Dict, Optional, Tuple

from edgeagent.metrics.listener import IDLE_TIMEOUT, GuardedListener

if TYPE_CHECKING:  # pragma: no cover - types only
    from aiohttp.web_request import BaseRequest
    from aiohttp.web_response import Response
    from aiohttp.web_server import Server
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
        self._server: Optional["Server"] = None
        self.listener: Optional[GuardedListener] = None
        self._routes: Dict[str, Callable[["BaseRequest"], Awaitable["Response"]]] = {
            "/metrics": self._metrics, "/healthz": self._healthz, "/": self._index}

    async def start(self) -> None:
        """Listen; OSError (address in use, no such address) propagates to the supervisor."""
        from edgeagent.lightaiohttp import import_aiohttp

        import_aiohttp()  # before any aiohttp module imports the package
        from aiohttp.web_server import Server

        # keepalive_timeout: aiohttp's own idle timer agrees with the listener's
        server = Server(self.dispatch, access_log=None, keepalive_timeout=IDLE_TIMEOUT)
        listener = GuardedListener(server, self.host, self.port, self.max_connections)
        try:
            await listener.start()
        except OSError as e:
            raise OSError(e.errno, "cannot listen on %s:%d: %s" % (
                self.host, self.port, e.strerror or e)) from None
        self._server, self.listener = server, listener
        log.info("serving /metrics and /healthz on http://%s:%d/ (at most %d connections)",
                 self.host, self.bound_port, listener.max_connections)

    @property
    def bound_port(self) -> Optional[int]:
        """The port actually listened on (useful with port 0)."""
        return self.listener.bound_port if self.listener is not None else None

    async def stop(self) -> None:
        server, self._server = self._server, None
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop_accepting()
        if server is not None:
            # What AppRunner.cleanup() does for its server: a request that arrived gets its turn
            # to start (sleep(0)), idle connections close now, one in progress gets until the
            # timeout.
            await asyncio.sleep(0)
            server.pre_shutdown()
            await _bounded(server.shutdown(STOP_TIMEOUT / 2))
        if listener is not None:
            await listener.close()

    async def dispatch(self, request: "BaseRequest") -> "Response":
        """The three paths; anything else as aiohttp's router answers it (404, or 405 with
        Allow), matched on the decoded path without the query, HEAD wherever GET is."""
        handler = self._routes.get(request.path)
        if handler is None:
            return _plain(404, "Not Found")
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "Method Not Allowed", {"Allow": "GET,HEAD"})
        return await handler(request)

    async def _metrics(self, request: "BaseRequest") -> "Response":
        from aiohttp.web_response import Response
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        return Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: "BaseRequest") -> "Response":
        from aiohttp.web_response import Response

        ok, summary = self.health()
        return Response(status=200 if ok else 503,
                        text=json.dumps(summary, indent=2, sort_keys=True) + "\n",
                        content_type="application/json")

    async def _index(self, request: "BaseRequest") -> "Response":
        from aiohttp.web_response import Response

        from edgeagent import __version__

        return Response(text=_INDEX % {"version": __version__}, content_type="text/html")


def _plain(status: int, reason: str, headers: Optional[Dict[str, str]] = None) -> "Response":
    from aiohttp.web_response import Response

    return Response(status=status, body=("%d: %s" % (status, reason)).encode(),
                    headers=dict({"Content-Type": "text/plain; charset=utf-8"}, **(headers or {})))


async def _bounded(coro: Awaitable[None], timeout: float = STOP_TIMEOUT) -> None:
    try:
        await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        log.warning("HTTP server did not stop within %.1fs", timeout)
