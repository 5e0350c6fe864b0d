"""The agent: the only module that knows every component. Builds the enabled ones from the typed
options and runs the supervisor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional

from edgeagent.config import Config, Options
from edgeagent.discovery.component import DiscoveryComponent
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.inventory import Inventory
from edgeagent.hostpaths import HostRoot
from edgeagent.sdnotify import Notifier
from edgeagent.supervisor import Component, ComponentStatus, Supervisor

log = logging.getLogger("edgeagent")

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

    @property
    def options(self) -> Options:
        """The typed options; a component reads its own section (``ctx.options.labels``)."""
        return self.config.options


def materialize_demo_host() -> str:
    """Copy the packaged demo host (a real Jetson devicetree, L4T release, device nodes) into a
    fresh temporary root: sockets and state can then be written there on any machine."""
    target = tempfile.mkdtemp(prefix="edgeagent-demo-")
    shutil.copytree(DEMO_PACKAGE_DIR, target, dirs_exist_ok=True)  # dirs_exist_ok: 3.8+
    for folder in ("var/lib/kubelet/device-plugins", "run", "tmp"):
        os.makedirs(os.path.join(target, folder), exist_ok=True)
    return target


def build_components(ctx: AgentContext) -> List[Component]:
    """Discovery, then every enabled component. Each feature is imported only when enabled,
    so a host that disables one never pays for its imports. A factory takes the AgentContext
    and returns a list of Components (empty when the host has nothing for it to do)."""
    options = ctx.options
    components: List[Component] = [DiscoveryComponent(
        ctx.root, ctx.inventory, options.discovery)]
    if options.writes_cdi_specs:
        # The agent's own CDI specs (edgeagent.io/gpu, edgeagent.io/dla), started first so the
        # plugin's cdi strategy finds them: it hands them out, NodePrepareResources answers
        # their IDs, and podman/nerdctl users can ask for them by name.
        from edgeagent.cdi.component import build as build_cdi

        components.extend(build_cdi(ctx))
    if options.enabled("device-plugin"):
        from edgeagent.deviceplugin.component import build as build_device_plugin

        components.extend(build_device_plugin(ctx))
    if options.serves_dra:
        from edgeagent.dra.component import build as build_dra

        components.extend(build_dra(ctx))
    if options.enabled("metrics"):
        from edgeagent.metrics.component import build as build_metrics

        components.extend(build_metrics(ctx))
    if options.enabled("labels"):
        from edgeagent.labels.component import build as build_labels

        components.extend(build_labels(ctx))
    for name in options.disable:
        log.info("component %s disabled", name)
    return components


async def run_agent(root: HostRoot, config: Config, inventory: Inventory, demo: bool = False,
                    stop: Optional[asyncio.Event] = None,
                    notifier: Optional[Notifier] = None,
                    early_stop: Callable[[], bool] = lambda: False) -> int:
    """Run every enabled component until ``stop`` is set (SIGTERM/SIGINT when not given).
    ``early_stop`` says whether a stop signal came before the loop's handlers were installed."""
    from prometheus_client import CollectorRegistry

    from edgeagent.daemonexecutor import DaemonExecutor

    loop = asyncio.get_event_loop()
    # Blocking reads (a re-scan, a health probe) run in daemon threads: one stuck in a hung
    # file must not hold the process after SIGTERM.
    loop.set_default_executor(DaemonExecutor())
    from edgeagent.schedslice import request_short_slice

    # This thread runs the loop: the kubelet's calls wait for its wake-ups (see schedslice).
    in_force, what = request_short_slice()
    (log.info if in_force else log.debug)("event loop's scheduler slice: %s", what)
    stop = stop or asyncio.Event()
    own_signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            own_signals.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    if early_stop():
        stop.set()  # asked to stop during start-up: start nothing
    notifier = notifier or Notifier()
    feed = InventoryFeed(inventory)
    supervisor_ref: List[Supervisor] = []
    ctx = AgentContext(
        root=root, config=config, inventory=feed, registry=CollectorRegistry(auto_describe=True),
        status=lambda: supervisor_ref[0].status() if supervisor_ref else {},
        demo=demo, dry_run=config.options.kube.dry_run or demo,
    )
    try:
        if stop.is_set():
            log.info("asked to stop during start-up: starting nothing")
            return 0
        components = build_components(ctx)
        supervisor = Supervisor(components, notifier)
        supervisor_ref.append(supervisor)
        log.info("starting %s", ", ".join(c.name for c in components))
        return await supervisor.run(stop)
    finally:
        for sig in own_signals:
            loop.remove_signal_handler(sig)
        notifier.close()
        log.info("stopped")
