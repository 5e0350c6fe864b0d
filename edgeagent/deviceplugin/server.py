"""The DevicePlugin gRPC service of one resource (grpclib + the generated betterproto code),
and the state it serves: the latest device list, fanned out to every ListAndWatch stream."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Dict, List, Optional, Set, Tuple

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.server import Server

from edgeagent.deviceplugin import allocate as alloc
from edgeagent.deviceplugin.model import Resource
from edgeagent.deviceplugin.proto import v1beta1 as api
from edgeagent.discovery.runtimefacts import RuntimeFacts

log = logging.getLogger(__name__)

DeviceList = Tuple[Tuple[str, str], ...]     # (id, health) pairs: what ListAndWatch sends


def device_list(resource: Resource) -> DeviceList:
    return tuple((d.id, d.health) for d in resource.devices)


class Watcher:
    """One ListAndWatch stream's mailbox: holds only the newest list (a slow reader skips
    intermediate lists, never the last one). Created inside the stream's coroutine."""

    def __init__(self, devices: DeviceList) -> None:
        self._latest = devices
        self._event = asyncio.Event()
        self._event.set()

    def push(self, devices: DeviceList) -> None:
        self._latest = devices
        self._event.set()

    async def next(self) -> DeviceList:
        await self._event.wait()
        self._event.clear()
        return self._latest


class ResourceState:
    """Everything the service of one resource answers from. Updated by the health loop; read by
    the RPC handlers without any I/O. Outlives socket re-creations."""

    def __init__(self, resource: Resource, strategy: Optional[alloc.Strategy] = None,
                 facts: Optional[RuntimeFacts] = None) -> None:
        self.resource = resource
        self.strategy = strategy
        self.facts = facts or RuntimeFacts()
        self.watchers: Set[Watcher] = set()
        self.registered = False
        self.registrations = 0
        self.allocations = {"ok": 0, "error": 0}
        self.socket_path: Optional[str] = None     # real path while serving
        # Encoded ContainerAllocateResponse by physical units: betterproto needs ~15 ms to
        # build and encode a device-specs answer with a few hundred mounts, so Allocate answers
        # from here (pre-filled by the health loop) instead of encoding on the kubelet's time.
        self._encoded: Dict[Tuple[str, ...], bytes] = {}

    @property
    def name(self) -> str:
        return self.resource.name

    def update(self, resource: Resource, strategy: Optional[alloc.Strategy],
               facts: RuntimeFacts) -> bool:
        """Take new values; push the device list to every open stream when it changed.
        True when it did."""
        changed = device_list(resource) != device_list(self.resource)
        if resource != self.resource or strategy != self.strategy or facts != self.facts:
            self._encoded = {}
        self.resource = resource
        self.strategy = strategy
        self.facts = facts
        if changed:
            devices = device_list(resource)
            for w in list(self.watchers):
                w.push(devices)
        return changed


    def encoded_container(self, units: Tuple[str, ...]) -> bytes:
        """The encoded ContainerAllocateResponse for ``units`` (validated by the caller);
        AllocationError when the strategy cannot serve them."""
        cache = self._encoded
        data = cache.get(units)
        if data is None:
            strategy = self.strategy or alloc.Strategy("device-specs", "no strategy yet")
            plan = alloc.plan_units(self.resource, list(units), strategy, self.facts)
            data = bytes(_to_proto(plan))
            if len(cache) >= 256:
                cache.clear()
            cache[units] = data
        return data

    def prewarm(self) -> None:
        """Encode the answer for each healthy unit alone (what a kubelet asks for nearly
        always). Blocking CPU work: run it off the event loop."""
        for unit in self.resource.units:
            if unit.healthy:
                try:
                    self.encoded_container((unit.id,))
                except alloc.AllocationError:
                    pass


class Encoded:
    """An already encoded message; EncodedCodec sends its bytes as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EncodedCodec(ProtoCodec):
    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return super().encode(message, message_type)


def _length_delimited(field: int, data: bytes) -> bytes:
    out = bytearray([(field << 3) | 2])
    n = len(data)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def _to_proto(plan: alloc.ContainerPlan) -> api.ContainerAllocateResponse:
    return api.ContainerAllocateResponse(
        envs=dict(plan.envs),
        mounts=[api.Mount(container_path=m.container_path, host_path=m.host_path,
                          read_only=m.read_only) for m in plan.mounts],
        devices=[api.DeviceSpec(container_path=d.container_path, host_path=d.host_path,
                                permissions=d.permissions) for d in plan.devices],
        annotations=dict(plan.annotations),
        cdi_devices=[api.CdiDevice(name=n) for n in plan.cdi_devices],
    )


class DevicePluginService(api.DevicePluginBase):
    """/v1beta1.DevicePlugin for one resource."""

    def __init__(self, state: ResourceState) -> None:
        self.state = state

    async def get_device_plugin_options(self, empty: api.Empty) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=False,
                                       get_preferred_allocation_available=True)

    async def list_and_watch(self, empty: api.Empty):  # type: ignore[override]
        watcher = Watcher(device_list(self.state.resource))
        self.state.watchers.add(watcher)
        log.debug("%s: ListAndWatch stream opened (%d open)", self.state.name,
                  len(self.state.watchers))
        try:
            while True:
                devices = await watcher.next()
                yield api.ListAndWatchResponse(
                    devices=[api.Device(id=i, health=h) for i, h in devices])
        finally:
            self.state.watchers.discard(watcher)

    async def get_preferred_allocation(
            self, request: api.PreferredAllocationRequest) -> api.PreferredAllocationResponse:
        resource = self.state.resource
        answers = []
        for c in request.container_requests:
            ids = alloc.preferred_allocation(resource, c.available_device_i_ds,
                                             c.must_include_device_i_ds, c.allocation_size)
            answers.append(api.ContainerPreferredAllocationResponse(device_i_ds=ids))
        return api.PreferredAllocationResponse(container_responses=answers)

    async def allocate(self, request: api.AllocateRequest) -> api.AllocateResponse:
        state = self.state
        requests = [list(c.devices_ids) for c in request.container_requests]
        try:
            if not requests:
                raise alloc.AllocationError("%s: Allocate without container requests"
                                            % state.name)
            resource = state.resource
            parts = [state.encoded_container(tuple(alloc.validate_request(resource, ids)))
                     for ids in requests]
        except alloc.AllocationError as e:
            state.allocations["error"] += 1
            log.warning("Allocate %s refused: %s", requests, e)
            raise GRPCError(getattr(Status, e.code, Status.INVALID_ARGUMENT), str(e)) from None
        state.allocations["ok"] += 1
        log.debug("%s: Allocate %s (%s strategy)", state.name, requests,
                  state.strategy.name if state.strategy else "device")
        # AllocateResponse is `repeated ContainerAllocateResponse container_responses = 1`
        return Encoded(b"".join(_length_delimited(1, p) for p in parts))  # type: ignore

    async def pre_start_container(
            self, request: api.PreStartContainerRequest) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()


class PluginServer(Server):
    """A grpclib Server that can also drop its open connections at shutdown: asyncio's
    Server.close() stops accepting but leaves accepted connections (and, on Python 3.12+,
    wait_closed() waiting for them), so a kubelet still connected would keep this server alive.
    Relies on grpclib's _protocol_factory (stable across grpclib 0.4.x)."""

    def __init__(self, handlers: List[Any], **kwargs: Any) -> None:
        kwargs.setdefault("codec", EncodedCodec())
        super().__init__(handlers, **kwargs)
        self._protocols: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def _protocol_factory(self):  # type: ignore[override]
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def drop_connections(self) -> None:
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)
            if processor is not None:
                try:
                    processor.close("device plugin stopping")
                except Exception:  # a half-closed connection: nothing left to release
                    log.debug("closing a connection failed", exc_info=True)


async def stop_server(server: Optional[PluginServer], timeout: float = 1.0) -> None:
    """Close ``server`` and its connections; wait at most ``timeout`` for handlers to finish."""
    if server is None:
        return
    try:
        server.close()
    except RuntimeError:  # never started
        return
    server.drop_connections()
    waiter = asyncio.ensure_future(server.wait_closed())
    try:
        done, _ = await asyncio.wait([waiter], timeout=timeout)
        if not done:
            log.debug("server handlers still closing after %.1fs; not waiting longer", timeout)
    finally:
        waiter.cancel()
