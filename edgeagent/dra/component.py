"""The DRA component (gpu_mode = "dra"): a health loop on the device plugin's cadence that turns
the GPU's and NVDLA engines' health into the node's DraDevices, hands every change to the
NodeWatchResources streams, the Preparer and the slice publisher, and serves the kubelet's
DRA and registration sockets."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Mapping, Optional,
                    Tuple)

from edgeagent.config import DevicePluginOptions, DraOptions
from edgeagent.deviceplugin.model import DRA_KINDS, Resource, build_resources, scan_plan
from edgeagent.discovery.scan import ProbeWatch, until_due_or_changed
from edgeagent.discovery.scan import probe_host as scan
from edgeagent.dra import names
from edgeagent.dra.model import DraDevice
from edgeagent.supervisor import Component

if TYPE_CHECKING:  # pragma: no cover - types only
    from prometheus_client import CollectorRegistry

    from edgeagent.app import AgentContext
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.discovery.inventory import Inventory
    from edgeagent.dra.prepare import ClaimReader, Preparer
    from edgeagent.dra.registration import RegistrationService, ServedSocket
    from edgeagent.dra.server import HealthState
    from edgeagent.hostpaths import HostRoot

log = logging.getLogger(__name__)

Devices = Tuple[DraDevice, ...]
DevicesOf = Callable[[Any, Mapping[str, Resource]], Devices]

# Between full checks the last check's ProbeWatch is read this often on the loop (see
# edgeagent/deviceplugin/component.py: a device that goes or comes is seen within a second).
PROBE_INTERVAL = 0.5
# The kubelet takes a device as Unknown when its last report is older than this; the health
# state re-sends the list when half of it has passed (the kubelet's default is 30 s).
MIN_HEALTH_TIMEOUT = 30


def health_timeout(interval: float) -> int:
    return max(MIN_HEALTH_TIMEOUT, int(math.ceil(4 * interval)))


class DraComponent(Component):
    """Re-checks device health every ``dra.health_interval_seconds``; serves the DRA socket
    (NodePrepare/Unprepare, NodeWatchResources) and the registration socket."""

    name = "dra"

    def __init__(self, root: HostRoot, dra: DraOptions, device_plugin: DevicePluginOptions,
                 feed: InventoryFeed, registry: CollectorRegistry, devices_of: DevicesOf,
                 publish: Callable[[Devices], None], reader: ClaimReader,
                 node_name: Callable[[], str], poll_interval: float = 0.5,
                 on_registered: Callable[[], None] = lambda: None) -> None:
        from edgeagent.dra.checkpoint import CheckpointStore
        from edgeagent.dra.metrics import DraMetrics

        self.root = root
        self.options = dra
        self.device_plugin = device_plugin
        self.feed = feed
        self.devices_of = devices_of
        self.publish = publish
        self.reader = reader
        self.node_name = node_name
        self.poll_interval = poll_interval
        self.on_registered = on_registered
        self.interval = float(dra.health_interval_seconds)
        self.probe_interval = min(PROBE_INTERVAL, self.interval)
        self.endpoint = names.dra_socket(dra.plugins_directory)        # host path
        self.dra_socket_path = root.path(self.endpoint)
        self.registration_path = root.path(names.registration_socket(dra.registry_directory))
        self.store = CheckpointStore(root.path(
            names.plugin_folder(dra.plugins_directory) + "/" + names.CHECKPOINT))
        self.metrics = DraMetrics(registry)
        self.resources: Dict[str, Resource] = {}
        self.devices: Optional[Devices] = None
        self.pool = ""
        self.preparer: Optional[Preparer] = None
        self.health: Optional[HealthState] = None
        self.registration: Optional[RegistrationService] = None
        self.sockets: List[Tuple[ServedSocket, asyncio.Task]] = []
        self._watch: Optional[ProbeWatch] = None
        self._pool_problem: Optional[str] = None

    def problem(self) -> Optional[str]:
        for served, _ in self.sockets:
            if served.problem is not None:
                return served.problem
        if self.registration is not None and self.registration.refusal is not None:
            return "the kubelet refused the DRA driver: %s" % self.registration.refusal
        return self._pool_problem

    # --- the blocking part, in a worker thread ----------------------------------------------

    def check(self, inventory: Inventory, previous: Mapping[str, Resource]
              ) -> Tuple[Dict[str, Resource], Devices]:
        plan = scan_plan(inventory, self.device_plugin, previous)
        try:
            self._watch = ProbeWatch(self.root, plan)   # before the probe: see ProbeWatch
        except OSError:
            self._watch = None
        facts = scan(self.root, plan)
        resources = {n: r for n, r in build_resources(inventory, facts, self.device_plugin,
                                                      previous).items()
                     if r.kind in DRA_KINDS}
        return resources, tuple(self.devices_of(inventory, resources))

    def resolve_pool(self) -> None:
        try:
            pool = self.node_name()
        except Exception as e:
            message = "this node's name is unknown (%s): the health stream and claims need " \
                      "it as the pool name; set node_name" % e
            if message != self._pool_problem:
                log.warning("%s", message)
            self._pool_problem = message
            return
        self._pool_problem = None
        self.pool = pool

    # --- the loop ---------------------------------------------------------------------------

    def _apply(self, resources: Dict[str, Resource], devices: Devices) -> None:
        assert self.preparer is not None and self.health is not None
        self.resources = resources
        if devices != self.devices:
            before = {d.name: d for d in self.devices or ()}
            for d in devices:
                old = before.get(d.name)
                if old is None:
                    log.info("DRA device %s (%s): %s", d.name, d.kind,
                             "healthy" if d.healthy else "unhealthy: " + d.reason)
                elif old.healthy != d.healthy:
                    log.log(logging.INFO if d.healthy else logging.WARNING, "DRA device %s: %s",
                            d.name, "healthy again" if d.healthy else "unhealthy: " + d.reason)
            self.devices = devices
            self.preparer.update_devices(devices)
            try:
                self.publish(devices)
            except Exception:     # the publisher's own problem(); never the health loop's end
                log.exception("handing the devices to the slice publisher failed")
        if self.pool:
            self.health.update(self.pool, devices)

    async def _serve(self) -> None:
        from edgeagent.dra.registration import RegistrationService, ServedSocket
        from edgeagent.dra.server import DraServer, PluginServer

        assert self.preparer is not None and self.health is not None
        preparer, health = self.preparer, self.health
        registration = self.registration = RegistrationService(self.endpoint,
                                                               self.on_registered)
        dra = ServedSocket("DRA socket", self.dra_socket_path,
                           lambda: DraServer(preparer, health), poll_interval=self.poll_interval)
        self.sockets.append((dra, asyncio.ensure_future(dra.run())))
        # GetInfo names the DRA socket, which the kubelet dials at once: serve it first.
        await dra.ready.wait()
        reg = ServedSocket("DRA registration socket", self.registration_path,
                           lambda: PluginServer([registration]),
                           poll_interval=self.poll_interval)
        self.sockets.append((reg, asyncio.ensure_future(reg.run())))
        await reg.ready.wait()

    def _check_tasks(self) -> None:
        for served, task in self.sockets:
            if task.done():
                exc = task.exception() if not task.cancelled() else None
                raise RuntimeError("the %s stopped: %s" % (served.what, exc or "cancelled"))

    async def run(self, started: Callable[[], None]) -> None:
        from edgeagent.deviceplugin.lightimports import prepare_betterproto

        prepare_betterproto()   # before the server modules import betterproto (see there)
        from edgeagent.dra.prepare import Preparer
        from edgeagent.dra.server import HealthState

        loop = asyncio.get_event_loop()
        self.preparer = Preparer(self.store, self.reader, self.node_name, self.metrics)
        self.health = HealthState(health_timeout(self.interval))
        self.devices = None     # a restart's new Preparer and streams get the devices again
        try:
            await self.preparer.load()
            sent = False
            while True:
                previous = dict(self.resources)
                resources, devices = await loop.run_in_executor(
                    None, self.check, self.feed.current, previous)
                await loop.run_in_executor(None, self.resolve_pool)
                self._apply(resources, devices)
                if not sent:
                    await self._serve()
                    sent = True
                    started()
                self._check_tasks()
                await until_due_or_changed(self.interval, self.probe_interval,
                                           lambda: self._watch)
        finally:
            await self._stop()


    async def _stop(self) -> None:
        # Reverse start order: the registration socket goes first, so the kubelet stops
        # sending us claims before the DRA socket closes.
        tasks = [t for _, t in reversed(self.sockets)]
        self.sockets = []
        for t in tasks:
            t.cancel()
            await asyncio.wait([t], timeout=1.0)
        if self.preparer is not None:
            await self.preparer.close()


class SlicesComponent(Component):
    """Runs the slice publisher (its own component: its problem, an API outage, is not the
    kubelet plugin's)."""

    name = "dra-slices"

    def __init__(self, run: Callable[[], Awaitable[None]],
                 problem: Callable[[], Optional[str]],
                 close: Callable[[], Awaitable[None]]) -> None:
        self._run = run
        self._problem = problem
        self._close = close

    def problem(self) -> Optional[str]:
        return self._problem()

    async def run(self, started: Callable[[], None]) -> None:
        started()
        try:
            await self._run()
        finally:
            # The shared client's session (a claim read after this opens a new one).
            await self._close()


def build(ctx: AgentContext) -> List[Component]:
    """The DRA kubelet plugin and the publisher of the node's ResourceSlices."""
    from edgeagent.kube.client import KubeMetrics
    from edgeagent.kube.connect import make_client, node_name_function

    options = ctx.options
    sharing = options.dra.gpu_sharing

    def devices_of(inventory: Any, resources: Mapping[str, Resource]) -> Devices:
        from edgeagent.dra.devices import build_devices

        return build_devices(inventory, resources, sharing)

    if ctx.demo:
        # No API server: the pool is the hostname, nothing is published, and a claim's read
        # fails with an error that says why.
        async def no_api(namespace: str, name: str) -> Any:
            raise RuntimeError("the demo has no API server to read claims from")

        def publish_nothing(devices: Devices) -> None:
            return None

        return [DraComponent(ctx.root, options.dra, options.device_plugin, ctx.inventory,
                             ctx.registry, devices_of, publish_nothing, no_api,
                             node_name_function(ctx.root, options.kube, None))]
    from edgeagent.dra.publisher import SlicePublisher

    client = make_client(ctx.root, options.kube, KubeMetrics.of(ctx.registry))
    node_name = node_name_function(ctx.root, options.kube, client)
    publisher = SlicePublisher(client, node_name, ctx.registry, ctx.dry_run)
    return [DraComponent(ctx.root, options.dra, options.device_plugin, ctx.inventory,
                         ctx.registry, devices_of, publisher.update, client.get_resource_claim,
                         node_name, on_registered=publisher.refresh),
            SlicesComponent(publisher.run, publisher.problem, client.close)]
