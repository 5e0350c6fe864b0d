"""The labels component under the supervisor: its problem() makes the agent degraded while it
has no credentials, and its metrics are registered once however often it restarts."""

import asyncio

from prometheus_client import CollectorRegistry

from edgeagent.app import AgentContext
from edgeagent.config import load_config
from edgeagent.discovery.scan import discover
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.hostpaths import HostRoot
from edgeagent.labels.component import build
from edgeagent.supervisor import Supervisor
from tests.conftest import dtb_path


def test_no_credentials_is_a_problem_and_metrics_are_built_once(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    root = HostRoot(str(tmp_path))
    inventory = discover(root, dtb_path("tegra210-p3450-0000.dtb"))
    registry = CollectorRegistry()
    config = load_config(env={}).replace(**{"labels.startup_jitter_seconds": 0})
    ctx = AgentContext(root=root, config=config, inventory=InventoryFeed(inventory),
                       registry=registry, status=lambda: {})
    [component] = build(ctx)

    async def scenario():
        supervisor = Supervisor([component])
        stop = asyncio.Event()
        task = asyncio.ensure_future(supervisor.run(stop))
        try:
            end = asyncio.get_event_loop().time() + 10
            while not supervisor.status()["labels"].degraded:
                assert asyncio.get_event_loop().time() < end, supervisor.status()
                await asyncio.sleep(0.02)
            status = supervisor.status()["labels"]
            assert status.state == "up" and "no-credentials" in status.problem
            # A restart (here: a second run) builds no second set of metrics.
            second = asyncio.ensure_future(component.run(lambda: None))
            await asyncio.sleep(0.1)
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert registry.get_sample_value("edgeagent_kube_requests_total",
                                     {"method": "GET", "code": "200"}) is None
    names = {m.name for m in registry.collect()}
    assert {"edgeagent_kube_requests", "edgeagent_labels_patches"} <= names
