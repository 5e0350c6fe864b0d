"""The device-plugin component: a health loop that decides what to advertise, and one
ResourcePlugin (socket + registration) per resource."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple

from edgeagent.config import DevicePluginOptions
from edgeagent.deviceplugin import allocate as alloc
from edgeagent.discovery.scan import ProbeWatch, until_due_or_changed
from edgeagent.discovery.scan import probe_host as scan
from edgeagent.deviceplugin.model import (GPU_RESOURCE, SHARED_GPU_RESOURCE, Resource,
                                          build_resources, describe_units, health_changes,
                                          plugin_resources, scan_plan)
from edgeagent.discovery.runtimefacts import RuntimeFacts, RuntimeFactsCache
from edgeagent.supervisor import Component

if TYPE_CHECKING:  # pragma: no cover - types only; grpclib is imported once the loop runs
    from prometheus_client import CollectorRegistry

    from edgeagent.app import AgentContext
    from edgeagent.deviceplugin.plugin import ResourcePlugin
    from edgeagent.deviceplugin.server import Listing, ResourceState
    from edgeagent.discovery.inventory import Inventory
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.hostpaths import HostRoot

log = logging.getLogger(__name__)

# Between full checks a ProbeWatch of the last check's plan (the directories holding the device
# nodes, the GPU's devicetree status) is read this often on the loop, and a change starts a full
# check at once: a device that goes or comes reaches every ListAndWatch stream within a second,
# not up to a whole interval later (issue 15: 1.2 s to Unhealthy, 2.0 s back with the default
# 2 s). A watch read is a few stat calls, ~6 us; probing (0.19 ms) and a worker-thread hop each
# time doubled the plugin's idle CPU (bench/bench_deviceplugin.py).
PROBE_INTERVAL = 0.5


class DevicePluginComponent(Component):
    """Re-checks device health every ``device_plugin.health_interval_seconds``; serves and
    registers every resource found; pushes changes to the kubelet's ListAndWatch streams."""

    name = "device-plugin"

    def __init__(self, root: HostRoot, options: DevicePluginOptions, feed: InventoryFeed,
                 registry: CollectorRegistry, poll_interval: float = 0.5) -> None:
        self.root = root
        self.feed = feed
        self.options = options
        self.directory = root.path(options.directory)
        self.interval = float(options.health_interval_seconds)
        self.poll_interval = poll_interval
        self.probe_interval = min(PROBE_INTERVAL, self.interval)
        self._watch: Optional[ProbeWatch] = None      # of the last full check's plan
        self.runtime = RuntimeFactsCache(root)
        self.states: Dict[str, ResourceState] = {}
        self.plugins: Dict[str, Tuple[ResourcePlugin, asyncio.Task]] = {}
        self.strategy: Optional[alloc.Strategy] = None
        self._problems: Tuple[str, ...] = ()
        for rc in options.resources:
            if rc.name in (GPU_RESOURCE, SHARED_GPU_RESOURCE):
                log.warning("[[device_plugin.resources]] %s is ignored: the GPU's resource name "
                            "is not configurable", rc.name)
        from edgeagent.deviceplugin.metrics import DevicePluginCollector

        registry.register(DevicePluginCollector(lambda: dict(self.states)))

    def problem(self) -> Optional[str]:
        """The first resource that cannot register or serve, and why."""
        for name, (plugin, _) in sorted(self.plugins.items()):
            if plugin.problem is not None:
                return "%s: %s" % (name, plugin.problem)
        return None

    # --- the blocking part, in a worker thread ----------------------------------------------

    def check(self, inventory: Inventory, previous: Mapping[str, Resource]) -> Tuple[
            Dict[str, Resource], RuntimeFacts]:
        plan = scan_plan(inventory, self.options, previous)
        try:
            self._watch = ProbeWatch(self.root, plan)   # before the probe: see ProbeWatch
        except OSError:                                 # a link loop: the interval only
            self._watch = None
        facts = scan(self.root, plan)
        resources = plugin_resources(
            build_resources(inventory, facts, self.options, previous), self.options)
        if any(r.gpu for r in resources.values()):
            self.runtime.refresh()
        return resources, self.runtime.current

    def listings(self, resources: Mapping[str, Resource]) -> Dict[str, Listing]:
        """The encoded device list of each resource, reusing unchanged ones."""
        from edgeagent.deviceplugin.server import listing_for

        out: Dict[str, Listing] = {}
        for name, resource in resources.items():
            state = self.states.get(name)
            out[name] = listing_for(resource, state.listing if state is not None else None)
        return out

    # --- the loop ---------------------------------------------------------------------------

    def _note_runtime(self, facts: RuntimeFacts) -> None:
        strategy = alloc.choose_strategy(self.options.device_list_strategy, facts)
        if strategy != self.strategy:
            self.strategy = strategy
            log.info("GPU containers get the %s strategy: %s", strategy.name, strategy.why)
            if strategy.name == "cdi" and facts.gpu_spec() is None and \
                    facts.own_spec("edgeagent.io/gpu") is None:
                log.warning("device_list_strategy is cdi but no CDI spec for nvidia.com/gpu "
                            "exists: GPU pods will fail until one does (nvidia-ctk cdi generate "
                            "--mode=csv --output=/etc/cdi/nvidia.yaml)")
            if strategy.name == "envvar" and facts.nvidia_runtime() is None:
                log.warning("device_list_strategy is envvar but no NVIDIA runtime is configured "
                            "in Docker, containerd, k3s or CRI-O: GPU pods will not see the GPU")
        if facts.problems != self._problems:
            self._problems = facts.problems
            for p in facts.problems:
                log.warning("container runtime facts: %s", p)

    def _apply(self, resources: Mapping[str, Resource], facts: RuntimeFacts,
               listings: Mapping[str, Listing]) -> None:
        from edgeagent.deviceplugin.plugin import ResourcePlugin
        from edgeagent.deviceplugin.server import ResourceState

        if any(r.gpu for r in resources.values()):
            self._note_runtime(facts)
        for name, resource in resources.items():
            strategy = self.strategy if resource.gpu or resource.kind == "nvdla" else None
            state = self.states.get(name)
            before = state.resource if state is not None else None
            if state is None:
                state = ResourceState(resource, strategy, facts, listings[name])
                self.states[name] = state
                log.info("%s: advertising %s", name, describe_units(resource))
            else:
                state.update(resource, strategy, facts, listings[name])
                for healthy, line in health_changes(before, resource):
                    log.log(logging.INFO if healthy else logging.WARNING, "%s", line)
            if name not in self.plugins:
                plugin = ResourcePlugin(state, self.directory, poll_interval=self.poll_interval)
                self.plugins[name] = (plugin, asyncio.ensure_future(plugin.run()))

    def _prewarm(self) -> None:
        for state in list(self.states.values()):
            state.prewarm()

    def _check_tasks(self) -> None:
        for name, (_, task) in list(self.plugins.items()):
            if task.done():
                del self.plugins[name]
                exc = task.exception() if not task.cancelled() else None
                raise RuntimeError("the %s plugin stopped: %s" % (name, exc or "cancelled"))

    async def run(self, started: Callable[[], None]) -> None:
        from edgeagent.deviceplugin.lightimports import prepare_betterproto

        prepare_betterproto()   # before server and plugin import betterproto (see there)
        loop = asyncio.get_event_loop()
        sent = False
        try:
            while True:
                previous = {n: s.resource for n, s in self.states.items()}
                resources, facts = await loop.run_in_executor(
                    None, self.check, self.feed.current, previous)
                listings = await loop.run_in_executor(None, self.listings, resources)
                self._apply(resources, facts, listings)
                self._check_tasks()
                await loop.run_in_executor(None, self._prewarm)
                if not sent:
                    waits = [asyncio.ensure_future(p.ready.wait())
                             for p, _ in self.plugins.values()]
                    if waits:
                        await asyncio.wait(waits, timeout=self.interval)
                        for w in waits:
                            w.cancel()
                    if all(p.ready.is_set() for p, _ in self.plugins.values()):
                        sent = True
                        if not self.plugins and self.options.gpu_mode == "dra":
                            log.info("no devices for the device plugin: with gpu_mode = dra "
                                     "the GPU and NVDLA engines are DRA's, and no Edge TPU or "
                                     "[[device_plugin.resources]] device was found")
                        elif not self.plugins:
                            log.info("no devices to advertise (no usable NVIDIA GPU, NVDLA or "
                                     "Edge TPU, and no [[device_plugin.resources]] found)")
                        started()
                        continue
                await until_due_or_changed(self.interval, self.probe_interval,
                                           lambda: self._watch)
        finally:
            await self._stop_plugins()


    async def _stop_plugins(self) -> None:
        tasks = [t for _, t in self.plugins.values()]
        self.plugins.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.2)


def build(ctx: AgentContext) -> List[Component]:
    """The device-plugin component (one, whatever the hardware: resources may appear later)."""
    return [DevicePluginComponent(ctx.root, ctx.config.options.device_plugin, ctx.inventory,
                                  ctx.registry)]
