"""A real Prometheus (Debian's ``prometheus`` binary) for the tests: the one launcher.

``Prometheus(target="127.0.0.1:PORT")`` scrapes one target every second; ``Prometheus(config=...,
files={...})`` runs a config of the test's own (examples/prometheus/prometheus.yml with its
rule file and file_sd targets), written with its files into a private directory that is also
its working directory, so relative paths in the config work. It listens on a free loopback port,
logs to a file (``log_tail()`` for failures), and is stopped with SIGTERM, then SIGKILL.

It shares no code with the agent: queries go through Prometheus' HTTP API with urllib.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional

from tests.tools import free_port, require_tool, wait_until

SCRAPE_CONFIG = """\
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
    """One Prometheus server process. ``exe`` defaults to the ``prometheus`` on PATH (the test
    is skipped, or failed in CI, without it)."""

    def __init__(self, exe: Optional[str] = None, target: Optional[str] = None,
                 config: Optional[str] = None, files: Optional[Dict[str, str]] = None) -> None:
        if (target is None) == (config is None):
            raise ValueError("give a target to scrape or a whole config")
        self.exe = exe or require_tool("prometheus")
        self.config = config if config is not None else SCRAPE_CONFIG % target
        self.files = dict(files or {})
        self.directory = tempfile.mkdtemp(prefix="eaprom-", dir="/tmp")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.directory, "prometheus.log")
        self.proc: Optional[subprocess.Popen] = None
        self._log: Optional[Any] = None

    def start(self) -> "Prometheus":
        for name, text in dict(self.files, **{"prometheus.yml": self.config}).items():
            path = os.path.join(self.directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.exe, "--config.file=prometheus.yml", "--storage.tsdb.path=data",
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            cwd=self.directory, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT)
        return self

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_tail(self, size: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("prometheus exited (%s): %s" % (self.proc.returncode,
                                                                  self.log_tail()))

    def _get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self.check_running()
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        wait_until(ready, timeout, "prometheus to be ready", interval=0.1)

    def query(self, expr: str) -> List[Dict[str, Any]]:
        """An instant query's result list. OSError while Prometheus does not answer;
        AssertionError when it refuses the query."""
        try:
            doc = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        except urllib.error.HTTPError as e:
            raise AssertionError("query %s: %s %s" % (expr, e.code, e.read()[:500]))
        if doc.get("status") != "success":
            raise AssertionError("query %s: %s" % (expr, doc.get("error")))
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
            self.check_running()
            last[0] = self.value(expr)
            return last[0] is not None and predicate(last[0])

        try:
            wait_until(ok, timeout, what, interval=0.25)
        except AssertionError:
            raise AssertionError("%s: %s was %r after %.0fs" % (what, expr, last[0], timeout))
        return last[0]  # type: ignore[return-value]

    def wait_result(self, expr: str, timeout: float, what: str) -> List[Dict[str, Any]]:
        """The first non-empty result of ``expr`` (Prometheus may not answer at first)."""
        def result() -> List[Dict[str, Any]]:
            self.check_running()
            try:
                return self.query(expr)
            except OSError:
                return []

        try:
            return wait_until(result, timeout, what, interval=0.25)  # type: ignore[return-value]
        except AssertionError:
            raise AssertionError("%s: no result for %s after %.0fs; prometheus log:\n%s"
                                 % (what, expr, timeout, self.log_tail()))

    def alerting_rules(self) -> List[Dict[str, Any]]:
        doc = self._get("/api/v1/rules")
        return [rule for group in doc["data"]["groups"] for rule in group["rules"]
                if rule["type"] == "alerting"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.directory, ignore_errors=True)
