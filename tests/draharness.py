"""Run the DRA component on its own thread and event loop against a fake host root, so tests
and benchmarks can drive it with the blocking grpcio kubelet (tests/peers/drakubelet.py).

The API server is a ``Claims`` table the injected reader answers from (a claim's JSON, or one
of the kube client's own errors to raise); the devices come from ``devices_of`` below, a
mapping of the health Resources written here, independent of the slice publisher's."""

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edgeagent.cdi.spec import dla_device_id, gpu_device_id
from edgeagent.config import load_config
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.scan import discover
from edgeagent.dra.component import DraComponent
from edgeagent.dra.model import DraDevice
from edgeagent.hostpaths import HostRoot
from tests.tools import ComponentThread, free_port

NODE = "jetson-1"
DRIVER = "edgeagent.io"
ENDPOINT = "/var/lib/kubelet/plugins/edgeagent.io/dra.sock"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def devices_of(inventory: Any, resources: Mapping[str, Any]) -> Tuple[DraDevice, ...]:
    out: List[DraDevice] = []
    for resource in resources.values():
        for unit in resource.units:
            if resource.kind == "gpu":
                out.append(DraDevice("gpu-0", "gpu", unit.healthy, unit.reason,
                                     (gpu_device_id(),), {}, {}))
            elif resource.kind == "nvdla":
                n = int(unit.id.replace("nvdla", ""))
                out.append(DraDevice("dla-%d" % n, "dla", unit.healthy, unit.reason,
                                     (dla_device_id(n),), {}, {}))
    return tuple(sorted(out, key=lambda d: d.name))


def claim(namespace: str, name: str, uid: str, *results: Tuple[str, str],
          driver: str = DRIVER, pool: str = NODE) -> Dict[str, Any]:
    """A resource.k8s.io/v1 ResourceClaim allocated to (request, device) pairs."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": namespace, "name": name, "uid": uid},
            "spec": {"devices": {"requests": [{"name": r} for r, _ in results]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": r, "driver": driver, "pool": pool, "device": d}
                for r, d in results]}}}}


class Claims:
    """What the reader answers: (namespace, name) -> claim JSON or an exception to raise.
    ``outage`` (an exception) is raised for every read while set."""

    def __init__(self) -> None:
        self.table: Dict[Tuple[str, str], Any] = {}
        self.outage: Optional[BaseException] = None
        self.reads: List[Tuple[str, str]] = []
        self.delay = 0.0

    def put(self, obj: Dict[str, Any]) -> None:
        m = obj["metadata"]
        self.table[(m["namespace"], m["name"])] = obj

    async def read(self, namespace: str, name: str) -> Any:
        from edgeagent.kube.errors import KubeError

        self.reads.append((namespace, name))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.outage is not None:
            raise self.outage
        found = self.table.get((namespace, name))
        if found is None:
            raise KubeError("GET ResourceClaim %s/%s: 404 NotFound" % (namespace, name), 404,
                            "NotFound")
        if isinstance(found, BaseException):
            raise found
        return found


class DraAgent(ComponentThread):
    """The DRA component under test on ``root`` (a host root with the demo Xavier)."""

    def __init__(self, root: str, claims: Claims, overrides: Optional[Dict[str, Any]] = None,
                 poll_interval: float = 0.05) -> None:
        from prometheus_client import CollectorRegistry

        super().__init__()
        self.root_dir = root
        self.root = HostRoot(root)
        values = {"device_plugin.health_interval_seconds": 0.1, "gpu_mode": "dra"}
        values.update(overrides or {})
        self.config = load_config(None, env={}).replace(**values)
        self.feed = InventoryFeed(discover(self.root))
        self.registry = CollectorRegistry(auto_describe=True)
        self.claims = claims
        self.published: List[Tuple[DraDevice, ...]] = []
        options = self.config.options
        self.component = DraComponent(self.root, options.dra, options.device_plugin, self.feed,
                                      self.registry, devices_of, self.published.append,
                                      claims.read, lambda: NODE, poll_interval=poll_interval)

    def path(self, host_path: str) -> str:
        return os.path.join(self.root_dir, host_path.lstrip("/"))


class AgentProcess:
    """``edgeagent run --gpu-mode dra`` as a process on a fixture host, with a kubeconfig of
    the node (labels off); its log in ``<root>/agent.log``."""

    def __init__(self, host, kubeconfig):
        self.host = host
        self.kubeconfig = kubeconfig
        self.proc = None
        self.log_path = os.path.join(host.root, "agent.log")

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT_")}
        env.update(PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        self.log = open(self.log_path, "a")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeagent", "--root", self.host.root, "run",
             "--gpu-mode", "dra", "--kubeconfig", self.kubeconfig, "--node-name", NODE,
             "--disable", "labels", "--metrics-address", "127.0.0.1:%d" % self.port],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        return self

    def metrics(self):
        url = "http://127.0.0.1:%d/metrics" % self.port
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def text(self):
        with open(self.log_path) as f:
            return f.read()
