"""The agent: the only module that knows every component. Builds them from config and runs the
supervisor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional

from edgeagent.config import Config
from edgeagent.discovery.component import DiscoveryComponent, describe_inventory  # noqa: F401
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.inventory import Inventory
from edgeagent.hostpaths import HostRoot
from edgeagent.sdnotify import Notifier
from edgeagent.supervisor import Component, ComponentStatus, Supervisor

log = logging.getLogger("edgeagent")

# Component name -> "module:function" building it; imported only when enabled, so a host that
# disables a component never pays for its imports. Each factory takes an AgentContext and
# returns a list of Components (empty when the host has nothing for it to do).
COMPONENT_FACTORIES: Dict[str, str] = {
    "device-plugin": "edgeagent.deviceplugin.component:build",
    "metrics": "edgeagent.metrics.component:build",
    "labels": "edgeagent.labels.component:build",
}

DEMO_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "host")


@dataclass
class AgentContext:
    """What a component factory may use. Components share nothing else."""

    root: HostRoot
    config: Config
    inventory: InventoryFeed
    registry: Any                                   # prometheus_client.CollectorRegistry
    status: Callable[[], Mapping[str, ComponentStatus]]
    demo: bool = False
    dry_run: bool = False


def materialize_demo_host() -> str:
    """Copy the packaged demo host (a real Jetson devicetree, L4T release, device nodes) into a
    fresh temporary root: sockets and state can then be written there on any machine."""
    target = tempfile.mkdtemp(prefix="edgeagent-demo-")
    shutil.copytree(DEMO_PACKAGE_DIR, target, dirs_exist_ok=True)  # dirs_exist_ok: 3.8+
    for folder in ("var/lib/kubelet/device-plugins", "run", "tmp"):
        os.makedirs(os.path.join(target, folder), exist_ok=True)
    return target


def build_components(ctx: AgentContext, disabled: List[str]) -> List[Component]:
    components: List[Component] = [DiscoveryComponent(
        ctx.root, ctx.inventory, ctx.config.options.discovery)]
    for name, target in COMPONENT_FACTORIES.items():
        if name in disabled:
            log.info("component %s disabled", name)
            continue
        module_name, func = target.split(":")
        factory = getattr(importlib.import_module(module_name), func)
        components.extend(factory(ctx))
    return components


def _task_label(task: "asyncio.Task[object]") -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or repr(coro)


def run_until_complete_bounded(main: Awaitable[int], grace: float = 0.3) -> int:
    """``asyncio.run(main)`` without its unbounded clean-up: asyncio.run waits for every task
    it cancels, so one task that ignores cancellation would hold SIGTERM's exit forever. Here
    tasks still running when ``main`` returns get ``grace`` seconds, then are abandoned."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=grace))
                late = [t for t in pending if not t.done()]
                if late:
                    log.warning("%d task(s) still running at exit; not waiting for them: %s",
                                len(late), ", ".join(sorted(_task_label(t) for t in late)))
                    for task in late:
                        # Said once above; without this each one would be reported again as
                        # "Task was destroyed but it is pending!" whenever it is collected.
                        # Task has the attribute on every supported Python (3.8-3.13).
                        task._log_destroy_pending = False  # type: ignore[attr-defined]
            loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_asyncgens())],
                                                 timeout=grace))
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the default executor down without waiting for its threads


async def run_agent(root: HostRoot, config: Config, inventory: Inventory, demo: bool = False,
                    stop: Optional[asyncio.Event] = None,
                    notifier: Optional[Notifier] = None) -> int:
    """Run every enabled component until ``stop`` is set (SIGTERM/SIGINT when not given)."""
    from prometheus_client import CollectorRegistry

    loop = asyncio.get_event_loop()
    stop = stop or asyncio.Event()
    own_signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            own_signals.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    notifier = notifier or Notifier()
    feed = InventoryFeed(inventory)
    supervisor_ref: List[Supervisor] = []
    ctx = AgentContext(
        root=root, config=config, inventory=feed, registry=CollectorRegistry(auto_describe=True),
        status=lambda: supervisor_ref[0].status() if supervisor_ref else {},
        demo=demo, dry_run=bool(config["dry_run"]) or demo,
    )
    components = build_components(ctx, list(config["disable"]))
    supervisor = Supervisor(components, notifier)
    supervisor_ref.append(supervisor)
    log.info("starting %s", ", ".join(c.name for c in components))
    try:
        return await supervisor.run(stop)
    finally:
        for sig in own_signals:
            loop.remove_signal_handler(sig)
        notifier.close()
        log.info("stopped")
