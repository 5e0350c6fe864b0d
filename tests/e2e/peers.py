"""The agent's real peers for the end-to-end tests, each run so a test can break it:

- ``ApiServerThread``: the HTTPS test Kubernetes API (tests/peers/kubeapi.py) on its own thread and
  event loop, stoppable and restartable on the same port with its state (Nodes, CA) kept, as a
  real API server keeps its state in etcd across a restart;
- ``Prometheus``: Debian's prometheus binary scraping the agent's /metrics every second (the
  one launcher, tests/peers/prometheus.py).

The grpcio kubelet is tests/peers/kubelet.py's ``FakeKubelet`` (already thread-based).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from typing import Any, Callable, Dict, List

from tests.peers.prometheus import Prometheus  # noqa: F401 - the e2e tests' peer, shared


class ApiServerThread:
    """``KubeApiServer`` served from a private event loop thread."""

    def __init__(self, nodes=("jetson-1",)) -> None:
        from tests.peers.kubeapi import KubeApiServer

        self.directory = tempfile.mkdtemp(prefix="eaapi-", dir="/tmp")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kubeapi", daemon=True)
        self.thread.start()
        self.server = KubeApiServer(self.directory, nodes=list(nodes))
        self.up = False

    def _call(self, coro, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the server's loop: its state is only touched from there."""
        async def call() -> Any:
            return fn()

        return self._call(call(), timeout)

    def start(self) -> "ApiServerThread":
        self._call(self.server.start())
        self.up = True
        return self

    def stop(self) -> None:
        """Down: the port refuses connections (open ones are closed); state is kept."""
        if self.up:
            self._call(self.server.stop())
            self.up = False

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- state, read and changed on the server's loop -------------------------------------

    def node(self, name: str) -> Dict[str, Any]:
        return self.sync(lambda: json.loads(json.dumps(self.server.nodes[name])))

    def labels(self, name: str) -> Dict[str, str]:
        return self.sync(lambda: self.server.labels(name))

    def annotations(self, name: str) -> Dict[str, str]:
        return self.sync(lambda: self.server.annotations(name))

    def edit_node(self, name: str, patch: Dict[str, Any]) -> None:
        self.sync(lambda: self.server.edit_node(name, patch))

    def inject(self, **fault: Any) -> Any:
        return self.sync(lambda: self.server.inject(**fault))

    def records(self, since: float = 0.0) -> List[Any]:
        """Requests answered since ``since`` (time.monotonic()), oldest first."""
        return self.sync(lambda: [r for r in self.server.records if r.time >= since])

    def write_kubeconfig(self, user: str, **kw: Any) -> str:
        return self.sync(lambda: self.server.write_kubeconfig(user, **kw))
