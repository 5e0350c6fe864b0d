"""The agent's real peers for the end-to-end tests, each run so a test can break it:

- ``ApiServerThread``: the HTTPS test Kubernetes API (tests/peers/kubeapi.py) on its own thread and
  event loop, stoppable and restartable on the same port with its state (Nodes, CA) kept, as a
  real API server keeps its state in etcd across a restart;
- ``Prometheus``: Debian's prometheus binary scraping the agent's /metrics every second.

The grpcio kubelet is tests/peers/kubelet.py's ``FakeKubelet`` (already thread-based).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
from typing import Any, Callable, Dict, List, Optional

from tests.e2e.agent import http_get
from tests.tools import free_port, wait_until


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


PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: edgeagent
    static_configs:
      - targets: ["%s"]
"""


class Prometheus:
    """A real Prometheus server scraping ``target`` (host:port) every second."""

    def __init__(self, exe: str, target: str) -> None:
        self.exe = exe
        self.target = target
        self.directory = tempfile.mkdtemp(prefix="eaprom-", dir="/tmp")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(self.directory, "prometheus.log")

    def start(self) -> "Prometheus":
        config = os.path.join(self.directory, "prometheus.yml")
        with open(config, "w") as f:
            f.write(PROMETHEUS_CONFIG % self.target)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [self.exe, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(self.directory, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                with open(self.log_path) as f:
                    raise AssertionError("prometheus exited: %s" % f.read()[-2000:])
            try:
                return http_get(self.url + "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, "prometheus to be ready", interval=0.1)

    def query(self, expr: str) -> List[Dict[str, Any]]:
        status, body = http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}))
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise AssertionError("query %s: %s %s" % (expr, status, body[:500]))
        return doc["data"]["result"]

    def value(self, expr: str) -> Optional[float]:
        """The single sample value of ``expr``, or None when it has no result."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_value(self, expr: str, predicate: Callable[[float], bool], timeout: float,
                   what: str) -> float:
        last: List[Optional[float]] = [None]

        def ok() -> bool:
            last[0] = self.value(expr)
            return last[0] is not None and predicate(last[0])

        try:
            wait_until(ok, timeout, what, interval=0.25)
        except AssertionError:
            raise AssertionError("%s: %s was %r after %.0fs" % (what, expr, last[0], timeout))
        return last[0]  # type: ignore[return-value]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)
