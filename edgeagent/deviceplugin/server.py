"""The DevicePlugin gRPC service of one resource (grpclib + the generated betterproto code),
and the state it serves: the latest device list, fanned out to every ListAndWatch stream.

Answers go out already encoded where betterproto is slow for their size (numbers from
``bench/bench_protobuf.py``, x86-64, Python 3.11, betterproto 2.0.0b7):

- a ListAndWatch list of 1024 devices (``sharing.replicas = 1024``) takes betterproto 65 ms to
  encode: each list is encoded once, off the event loop, and every stream sends those bytes;
- a device-specs ContainerAllocateResponse (200 mounts) takes 8.4 ms to build and encode: the
  health loop encodes it ahead of time, and Allocate wraps the cached bytes as field 1 of
  AllocateResponse by hand (1.1 us; letting betterproto encode the outer message means parsing
  the cached parts back first, 17 ms). tests/test_deviceplugin_proto.py checks the hand-made
  bytes against betterproto's and the kubelet's own messages.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import AsyncIterator, Dict, List, Optional, Sequence, Set, Tuple

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from edgeagent.deviceplugin import allocate as alloc
from edgeagent.deviceplugin.model import Resource
from edgeagent.deviceplugin.proto import v1beta1 as api
from edgeagent.discovery.runtimefacts import RuntimeFacts

log = logging.getLogger(__name__)

DeviceList = Tuple[Tuple[str, str], ...]     # (id, health) pairs: what ListAndWatch sends


def device_list(resource: Resource) -> DeviceList:
    return tuple((d.id, d.health) for d in resource.devices)


class Encoded:
    """An already encoded message; EncodedCodec sends its bytes as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EncodedCodec(ProtoCodec):
    """grpclib's protobuf codec (its public ``codec`` parameter), passing Encoded through."""

    def encode(self, message: object, message_type: object) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return super().encode(message, message_type)


class Listing:
    """One device list and its encoded ListAndWatchResponse."""

    __slots__ = ("devices", "data")

    def __init__(self, devices: DeviceList, data: bytes) -> None:
        self.devices = devices
        self.data = data


def listing_for(resource: Resource, previous: Optional[Listing] = None) -> Listing:
    """The Listing of ``resource``: ``previous`` itself when the list is unchanged (encoding
    1024 devices costs 65 ms, so do it once per change, in a worker thread)."""
    devices = device_list(resource)
    if previous is not None and previous.devices == devices:
        return previous
    message = api.ListAndWatchResponse(devices=[api.Device(id=i, health=h) for i, h in devices])
    return Listing(devices, bytes(message))


class Watcher:
    """One ListAndWatch stream's mailbox: holds only the newest list (a slow reader skips
    intermediate lists, never the last one). Created inside the stream's coroutine."""

    def __init__(self, listing: Listing) -> None:
        self._latest = listing
        self._event = asyncio.Event()
        self._event.set()

    def push(self, listing: Listing) -> None:
        self._latest = listing
        self._event.set()

    async def next(self) -> Listing:
        await self._event.wait()
        self._event.clear()
        return self._latest


def _length_delimited(field: int, data: bytes) -> bytes:
    out = bytearray([(field << 3) | 2])
    n = len(data)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def allocate_response(parts: Sequence[bytes]) -> bytes:
    """An encoded AllocateResponse from encoded ContainerAllocateResponses: the message is
    ``repeated ContainerAllocateResponse container_responses = 1``."""
    return b"".join(_length_delimited(1, p) for p in parts)


def to_proto(plan: alloc.ContainerPlan) -> api.ContainerAllocateResponse:
    return api.ContainerAllocateResponse(
        envs=dict(plan.envs),
        mounts=[api.Mount(container_path=m.container_path, host_path=m.host_path,
                          read_only=m.read_only) for m in plan.mounts],
        devices=[api.DeviceSpec(container_path=d.container_path, host_path=d.host_path,
                                permissions=d.permissions) for d in plan.devices],
        annotations=dict(plan.annotations),
        cdi_devices=[api.CdiDevice(name=n) for n in plan.cdi_devices],
    )


PreferredAsk = Tuple[List[str], List[str], int]    # available, must include, size


def preferred_response(resource: Resource, asks: Sequence[PreferredAsk]) -> bytes:
    """The encoded PreferredAllocationResponse (CPU work: a worker thread runs it)."""
    return bytes(api.PreferredAllocationResponse(container_responses=[
        api.ContainerPreferredAllocationResponse(
            device_i_ds=alloc.preferred_allocation(resource, available, must, size))
        for available, must, size in asks]))


class ResourceState:
    """Everything the service of one resource answers from. Updated by the health loop; read by
    the RPC handlers without any I/O. Outlives socket re-creations."""

    def __init__(self, resource: Resource, strategy: Optional[alloc.Strategy] = None,
                 facts: Optional[RuntimeFacts] = None,
                 listing: Optional[Listing] = None) -> None:
        self.resource = resource
        self.strategy = strategy
        self.facts = facts or RuntimeFacts()
        self.listing = listing or listing_for(resource)
        self.watchers: Set[Watcher] = set()
        self.registered = False
        self.registrations = 0
        self.allocations = {"ok": 0, "error": 0}
        self.socket_path: Optional[str] = None     # real path while serving
        # Encoded ContainerAllocateResponse by physical units, pre-filled by the health loop
        # (see the module docstring for why).
        self._encoded: Dict[Tuple[str, ...], bytes] = {}

    @property
    def name(self) -> str:
        return self.resource.name

    def update(self, resource: Resource, strategy: Optional[alloc.Strategy],
               facts: RuntimeFacts, listing: Optional[Listing] = None) -> bool:
        """Take new values; push the device list to every open stream when it changed.
        True when it did. ``listing``: ``listing_for(resource, self.listing)``, computed off the
        loop by the caller (computed here when not given)."""
        if listing is None:
            listing = listing_for(resource, self.listing)
        changed = listing.devices != self.listing.devices
        if resource != self.resource or strategy != self.strategy or facts != self.facts:
            self._encoded = {}
        self.resource = resource
        self.strategy = strategy
        self.facts = facts
        self.listing = listing
        if changed:
            for w in list(self.watchers):
                w.push(listing)
        return changed

    def encoded_container(self, units: Tuple[str, ...]) -> bytes:
        """The encoded ContainerAllocateResponse for ``units`` (validated by the caller);
        AllocationError when the strategy cannot serve them."""
        cache = self._encoded
        data = cache.get(units)
        if data is None:
            strategy = self.strategy or alloc.Strategy("device-specs", "no strategy yet")
            plan = alloc.plan_units(self.resource, list(units), strategy, self.facts)
            data = bytes(to_proto(plan))
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


def _shorten(text: str, limit: int = 200) -> str:
    # a kubelet may send a thousand ids in one request: the log gets their start
    return text if len(text) <= limit else text[:limit - 20] + "... (%d chars)" % len(text)


class DevicePluginService(api.DevicePluginBase):
    """/v1beta1.DevicePlugin for one resource."""

    def __init__(self, state: ResourceState) -> None:
        self.state = state

    async def get_device_plugin_options(self, empty: api.Empty) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(pre_start_required=False,
                                       get_preferred_allocation_available=True)

    async def list_and_watch(  # type: ignore[override]  # yields Encoded responses
            self, empty: api.Empty) -> AsyncIterator[Encoded]:
        watcher = Watcher(self.state.listing)
        self.state.watchers.add(watcher)
        log.debug("%s: ListAndWatch stream opened (%d open)", self.state.name,
                  len(self.state.watchers))
        try:
            while True:
                listing = await watcher.next()
                yield Encoded(listing.data)
        finally:
            self.state.watchers.discard(watcher)

    async def get_preferred_allocation(  # type: ignore[override]  # returns Encoded
            self, request: api.PreferredAllocationRequest) -> Encoded:
        asks = [(list(c.available_device_i_ds), list(c.must_include_device_i_ds),
                 c.allocation_size) for c in request.container_requests]
        # A worker thread keeps the loop (other streams, /healthz) answering while a request
        # with 1024 replicas is decided and encoded.
        loop = asyncio.get_event_loop()
        data = await loop.run_in_executor(None, preferred_response, self.state.resource, asks)
        return Encoded(data)

    async def allocate(  # type: ignore[override]  # returns Encoded
            self, request: api.AllocateRequest) -> Encoded:
        state = self.state
        requests = [list(c.devices_ids) for c in request.container_requests]
        try:
            units = alloc.validate_allocate(state.resource, requests)
            parts = [state.encoded_container(u) for u in units]
        except alloc.AllocationError as e:
            state.allocations["error"] += 1
            log.warning("Allocate %s refused: %s", _shorten(repr(requests)), e)
            raise GRPCError(getattr(Status, e.code, Status.INVALID_ARGUMENT), str(e)) from None
        state.allocations["ok"] += 1
        log.debug("%s: Allocate %s (%s strategy)", state.name, _shorten(repr(requests)),
                  state.strategy.name if state.strategy else "device")
        return Encoded(allocate_response(parts))

    async def pre_start_container(
            self, request: api.PreStartContainerRequest) -> api.PreStartContainerResponse:
        return api.PreStartContainerResponse()


# asyncio's Server.close() stops accepting but leaves accepted connections open (and, on Python
# 3.12+, wait_closed() waiting for them), so a kubelet still connected would keep an old server
# answering. Python 3.13 added Server.close_clients(); before it, the only way to the
# connections is to record the protocols grpclib's server creates.
CLOSE_CLIENTS = hasattr(getattr(asyncio, "Server", None), "close_clients")


class PluginServer(Server):
    """A grpclib Server that can also drop its open connections at shutdown."""

    def __init__(self, handlers: Sequence[object], codec: Optional[ProtoCodec] = None) -> None:
        super().__init__(handlers, codec=codec or EncodedCodec())
        self._protocols: "weakref.WeakSet[H2Protocol]" = weakref.WeakSet()

    if not CLOSE_CLIENTS:
        # grpclib's _protocol_factory (the same through grpclib 0.4.x) is the one place each
        # connection's protocol passes; tests/test_deviceplugin_kubelet.py fails when it stops
        # being called.
        def _protocol_factory(self) -> H2Protocol:
            protocol = super()._protocol_factory()
            self._protocols.add(protocol)
            return protocol

    def drop_connections(self) -> bool:
        """Close every accepted connection; False when this grpclib gives no way to."""
        if CLOSE_CLIENTS:
            # grpclib keeps the asyncio.Server it started as _server, with no public accessor.
            close_clients = getattr(getattr(self, "_server", None), "close_clients", None)
            if close_clients is None:
                log.debug("cannot reach grpclib's asyncio server: connections stay open")
                return False
            close_clients()
            return True
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)
            if processor is not None:
                try:
                    processor.close("device plugin stopping")
                except Exception:  # a half-closed connection: nothing left to release
                    log.debug("closing a connection failed", exc_info=True)
        return True


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
