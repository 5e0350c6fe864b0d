"""I/O: the gRPC services on the DRA socket (grpclib + the generated betterproto code).

``dra.v1.DRAPlugin`` and ``dra.v1beta1.DRAPlugin`` are adaptors over one Preparer (the kubelet
picks the newest version GetInfo offers; v1beta1 has no share_id). ``DRAResourceHealth`` of
``dra-health/v1alpha1`` and ``dra-health/v1`` stream the device health list: all of it when a
stream opens, again on every change, and again before the kubelet's health timeout runs out
(the kubelet takes a device whose last_updated_time is older than
health_check_timeout_seconds as Unknown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import ModuleType
from typing import Any, AsyncIterator, List, Optional, Sequence, Set, Tuple

from edgeagent.deviceplugin.server import PluginServer
from edgeagent.dra.claims import ClaimRef
from edgeagent.dra.model import DraDevice
from edgeagent.dra.prepare import Preparer
from edgeagent.dra.proto import v1 as healthv1
from edgeagent.dra.proto import v1alpha1 as healthv1alpha1
from edgeagent.dra.proto.k8s.io.kubelet.pkg.apis.dra import v1 as drav1
from edgeagent.dra.proto.k8s.io.kubelet.pkg.apis.dra import v1beta1 as drav1beta1

log = logging.getLogger(__name__)

__all__ = ["DraServer", "HealthState", "PluginServer"]

# (device name, healthy, reason): what a change is.
HealthEntry = Tuple[str, bool, str]


class HealthReport:
    """One health list as it was checked: the pool, the entries and when."""

    __slots__ = ("pool", "entries", "checked", "timeout")

    def __init__(self, pool: str, entries: Tuple[HealthEntry, ...], checked: int,
                 timeout: int) -> None:
        self.pool = pool
        self.entries = entries
        self.checked = checked       # unix seconds
        self.timeout = timeout

    def message(self, module: ModuleType) -> Any:
        """The NodeWatchResourcesResponse of ``module`` (healthv1 or healthv1alpha1)."""
        return module.NodeWatchResourcesResponse(devices=[
            module.DeviceHealth(
                device=module.DeviceIdentifier(pool_name=self.pool, device_name=name),
                health=module.HealthStatus.HEALTHY if healthy else module.HealthStatus.UNHEALTHY,
                last_updated_time=self.checked, health_check_timeout_seconds=self.timeout,
                message=reason)
            for name, healthy, reason in self.entries])


class HealthWatcher:
    """One stream's mailbox: only the newest report (a slow reader skips, never loses the
    last). Created inside the stream's coroutine."""

    def __init__(self, report: Optional[HealthReport]) -> None:
        self._latest = report
        self._event = asyncio.Event()
        if report is not None:
            self._event.set()

    def push(self, report: HealthReport) -> None:
        self._latest = report
        self._event.set()

    async def next(self) -> HealthReport:
        while True:
            await self._event.wait()
            self._event.clear()
            if self._latest is not None:
                return self._latest


class HealthState:
    """The device health every NodeWatchResources stream sends. ``timeout`` is the
    health_check_timeout_seconds we promise; a report is re-sent when half of it has passed."""

    def __init__(self, timeout: int) -> None:
        self.timeout = timeout
        self.report: Optional[HealthReport] = None
        self.watchers: Set[HealthWatcher] = set()
        self._sent_at = 0.0

    def update(self, pool: str, devices: Sequence[DraDevice],
               now: Optional[float] = None) -> bool:
        """Take the latest check; push it to every stream when the health changed or the last
        push is getting old. True when pushed."""
        now = time.time() if now is None else now
        entries = tuple((d.name, d.healthy, d.reason) for d in devices)
        old = self.report
        changed = old is None or old.entries != entries or old.pool != pool
        stale = now - self._sent_at >= self.timeout / 2.0
        if not (changed or stale):
            return False
        report = HealthReport(pool, entries, int(now), self.timeout)
        self.report = report
        self._sent_at = now
        for w in list(self.watchers):
            w.push(report)
        return True


def _refs(claims: Sequence[object]) -> List[ClaimRef]:
    return [ClaimRef(c.namespace, c.name, c.uid) for c in claims]  # type: ignore[attr-defined]


class DraV1Service(drav1.DraPluginBase):
    def __init__(self, preparer: Preparer) -> None:
        self.preparer = preparer

    async def node_prepare_resources(
            self, request: drav1.NodePrepareResourcesRequest
    ) -> drav1.NodePrepareResourcesResponse:
        results = await self.preparer.prepare(_refs(request.claims))
        return drav1.NodePrepareResourcesResponse(claims={
            uid: drav1.NodePrepareResourceResponse(
                devices=[drav1.Device(request_names=list(d.requests), pool_name=d.pool,
                                      device_name=d.device, cdi_device_ids=list(d.cdi_ids),
                                      share_id=d.share_id)
                         for d in r.devices], error=r.error)
            for uid, r in results.items()})

    async def node_unprepare_resources(
            self, request: drav1.NodeUnprepareResourcesRequest
    ) -> drav1.NodeUnprepareResourcesResponse:
        errors = await self.preparer.unprepare(_refs(request.claims))
        return drav1.NodeUnprepareResourcesResponse(claims={
            uid: drav1.NodeUnprepareResourceResponse(error=e) for uid, e in errors.items()})


class DraV1beta1Service(drav1beta1.DraPluginBase):
    def __init__(self, preparer: Preparer) -> None:
        self.preparer = preparer

    async def node_prepare_resources(
            self, request: drav1beta1.NodePrepareResourcesRequest
    ) -> drav1beta1.NodePrepareResourcesResponse:
        results = await self.preparer.prepare(_refs(request.claims))
        return drav1beta1.NodePrepareResourcesResponse(claims={
            uid: drav1beta1.NodePrepareResourceResponse(
                devices=[drav1beta1.Device(request_names=list(d.requests), pool_name=d.pool,
                                           device_name=d.device,
                                           cdi_device_ids=list(d.cdi_ids))
                         for d in r.devices], error=r.error)
            for uid, r in results.items()})

    async def node_unprepare_resources(
            self, request: drav1beta1.NodeUnprepareResourcesRequest
    ) -> drav1beta1.NodeUnprepareResourcesResponse:
        errors = await self.preparer.unprepare(_refs(request.claims))
        return drav1beta1.NodeUnprepareResourcesResponse(claims={
            uid: drav1beta1.NodeUnprepareResourceResponse(error=e)
            for uid, e in errors.items()})


async def _watch(state: HealthState, module: ModuleType) -> AsyncIterator[Any]:
    watcher = HealthWatcher(state.report)
    state.watchers.add(watcher)
    log.debug("NodeWatchResources stream opened (%d open)", len(state.watchers))
    try:
        while True:
            report = await watcher.next()
            yield report.message(module)
    finally:
        state.watchers.discard(watcher)


class HealthV1Service(healthv1.DraResourceHealthBase):
    def __init__(self, state: HealthState) -> None:
        self.state = state

    async def node_watch_resources(  # type: ignore[override]
            self, request: healthv1.NodeWatchResourcesRequest
    ) -> AsyncIterator[healthv1.NodeWatchResourcesResponse]:
        async for message in _watch(self.state, healthv1):
            yield message  # type: ignore[misc]


class HealthV1alpha1Service(healthv1alpha1.DraResourceHealthBase):
    def __init__(self, state: HealthState) -> None:
        self.state = state

    async def node_watch_resources(  # type: ignore[override]
            self, request: healthv1alpha1.NodeWatchResourcesRequest
    ) -> AsyncIterator[healthv1alpha1.NodeWatchResourcesResponse]:
        async for message in _watch(self.state, healthv1alpha1):
            yield message  # type: ignore[misc]


def dra_services(preparer: Preparer, health: HealthState) -> List[object]:
    """Every service the DRA socket serves."""
    return [DraV1Service(preparer), DraV1beta1Service(preparer), HealthV1Service(health),
            HealthV1alpha1Service(health)]


class DraServer(PluginServer):
    """The DRA socket's server (PluginServer: it can drop connections at shutdown)."""

    def __init__(self, preparer: Preparer, health: HealthState) -> None:
        super().__init__(dra_services(preparer, health))

