"""I/O: NodePrepareResources and NodeUnprepareResources, whatever the gRPC version.

A claim prepared before (same uid, in the checkpoint) is answered from memory without any API
call: the kubelet calls NodePrepareResources again for every claim of every pod after its own
or the agent's restart, and a pod's claims are prepared before each of its containers start.
Otherwise the claim is read from the API server (through the injected reader), its devices of
our driver in this node's pool become CDI IDs, and the claim is recorded in the checkpoint
before the answer goes out. Errors are per claim: one claim's outage never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, Optional,
                    Sequence, Tuple)

from edgeagent.dra.checkpoint import CheckpointStore, PreparedClaim, PreparedDevice
from edgeagent.dra.claims import ClaimError, ClaimRef, devices_to_prepare
from edgeagent.dra.model import DraDevice
from edgeagent.dra.names import DRIVER

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.dra.metrics import DraMetrics

log = logging.getLogger(__name__)

ClaimReader = Callable[[str, str], Awaitable[Any]]     # (namespace, name) -> claim JSON


@dataclass(frozen=True)
class ClaimResult:
    """What NodePrepareResources answers for one claim: its devices, or an error."""

    devices: Tuple[PreparedDevice, ...] = ()
    error: str = ""


def describe_read_error(ref: ClaimRef, error: BaseException) -> str:
    """One line for a failed claim read, saying what to do."""
    from edgeagent.kube.errors import KubeError

    if isinstance(error, asyncio.TimeoutError):
        return ("reading claim %s from the API server timed out; the kubelet retries" % ref)
    if isinstance(error, KubeError):
        if error.status == 404:
            return ("claim %s is not in the API server (deleted?); the kubelet retries while "
                    "the pod exists" % ref)
        if error.status in (401, 403):
            return ("the API server refused to let this node read claim %s (%s): the Node "
                    "authorizer allows it only for pods bound to this node; check the node's "
                    "credentials and that the DRA feature is enabled" % (ref, error))
        if error.retryable:
            return ("cannot read claim %s from the API server (%s); the kubelet retries"
                    % (ref, error))
        return "reading claim %s failed: %s" % (ref, error)
    return "reading claim %s failed: %s" % (ref, error)


class Preparer:
    """Prepares and unprepares claims. ``devices`` is the node's current DraDevice set
    (``update_devices``); ``node_name`` gives the pool name; ``reader`` reads a claim."""

    def __init__(self, store: CheckpointStore, reader: ClaimReader,
                 node_name: Callable[[], str], metrics: Optional["DraMetrics"] = None,
                 read_timeout: float = 30.0) -> None:
        self.store = store
        self.reader = reader
        self.node_name = node_name
        self.metrics = metrics
        self.read_timeout = read_timeout   # under the kubelet's 45 s per call
        self.devices: Dict[str, DraDevice] = {}
        self.claims: Dict[str, PreparedClaim] = {}
        self._inflight: Dict[str, "asyncio.Future[ClaimResult]"] = {}
        self._save_lock: Optional[asyncio.Lock] = None

    def update_devices(self, devices: Iterable[DraDevice]) -> None:
        self.devices = {d.name: d for d in devices}

    async def load(self) -> None:
        """Read the checkpoint (in a worker thread)."""
        loop = asyncio.get_event_loop()
        self.claims = await loop.run_in_executor(None, self.store.load)
        if self.claims:
            log.info("%d prepared claim(s) in the checkpoint", len(self.claims))
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.prepared.set(len(self.claims))

    async def _save(self) -> None:
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        async with self._save_lock:
            # The snapshot is taken inside the lock: a write that waited carries every claim
            # recorded meanwhile, and the file never goes back to an older state.
            snapshot = dict(self.claims)
            loop = asyncio.get_event_loop()
            await loop.run_in_executor(None, self.store.save, snapshot)

    # --- prepare ----------------------------------------------------------------------------

    async def prepare(self, refs: Sequence[ClaimRef]) -> Dict[str, ClaimResult]:
        """The answer for each claim, by uid."""
        loop = asyncio.get_event_loop()
        start = loop.time()
        out: Dict[str, ClaimResult] = {}
        cold = []
        for ref in refs:
            done = self.claims.get(ref.uid)
            if done is not None:
                out[ref.uid] = ClaimResult(done.devices)
            else:
                cold.append(ref)
        if cold:
            results = await asyncio.gather(*(self._prepare_once(r) for r in cold))
            for ref, result in zip(cold, results):
                out[ref.uid] = result
        if self.metrics is not None:
            errors = sum(1 for r in out.values() if r.error)
            if errors:
                self.metrics.prepares.labels(result="error").inc(errors)
            if len(out) - errors:
                self.metrics.prepares.labels(result="ok").inc(len(out) - errors)
            self.metrics.prepare_seconds.observe(loop.time() - start)
        return out

    async def _prepare_once(self, ref: ClaimRef) -> ClaimResult:
        # Two calls for one claim (the kubelet retrying after its timeout while the first still
        # waits for the API server) share one piece of work.
        task = self._inflight.get(ref.uid)
        if task is None:
            task = asyncio.ensure_future(self._prepare_cold(ref))
            self._inflight[ref.uid] = task
            task.add_done_callback(lambda _t, uid=ref.uid: self._inflight.pop(uid, None))
        return await asyncio.shield(task)

    async def _prepare_cold(self, ref: ClaimRef) -> ClaimResult:
        done = self.claims.get(ref.uid)
        if done is not None:
            return ClaimResult(done.devices)
        loop = asyncio.get_event_loop()
        try:
            pool = await loop.run_in_executor(None, self.node_name)
        except Exception as e:
            return self._refused(ref, "this node's name is unknown (%s); set node_name in the "
                                      "agent's config" % e)
        try:
            claim = await asyncio.wait_for(self.reader(ref.namespace, ref.name),
                                           self.read_timeout)
        except Exception as e:   # the kube client's errors and whatever a reader may raise
            return self._refused(ref, describe_read_error(ref, e))
        devices = self.devices
        try:
            allocated = devices_to_prepare(claim, ref, DRIVER, pool, devices)
        except ClaimError as e:
            return self._refused(ref, str(e))
        prepared = tuple(PreparedDevice(a.requests, a.pool, a.device,
                                        tuple(devices[a.device].cdi_ids), a.share_id)
                         for a in allocated)
        self.claims[ref.uid] = PreparedClaim(ref.namespace, ref.name, ref.uid, prepared)
        try:
            await self._save()
        except OSError as e:
            self.claims.pop(ref.uid, None)
            return self._refused(ref, "cannot record claim %s in the checkpoint %s: %s"
                                 % (ref, self.store.path, e.strerror or e))
        self._gauge()
        log.info("prepared claim %s (uid %s): %s", ref, ref.uid,
                 ", ".join(d.device for d in prepared) or "no devices of %s" % DRIVER)
        return ClaimResult(prepared)

    @staticmethod
    def _refused(ref: ClaimRef, message: str) -> ClaimResult:
        log.warning("NodePrepareResources %s: %s", ref, message)
        return ClaimResult(error=message)

    # --- unprepare --------------------------------------------------------------------------

    async def unprepare(self, refs: Sequence[ClaimRef]) -> Dict[str, str]:
        """The error for each claim ("" when done), by uid. An unknown claim is done: the
        kubelet unprepares claims it is not sure about, after restarts."""
        out: Dict[str, str] = {}
        removed = {}
        for ref in refs:
            task = self._inflight.get(ref.uid)
            if task is not None:          # let a prepare in flight finish first
                await asyncio.shield(task)
            claim = self.claims.pop(ref.uid, None)
            if claim is not None:
                removed[ref.uid] = claim
            out[ref.uid] = ""
        if removed:
            try:
                await self._save()
            except OSError as e:
                # Kept prepared: the kubelet calls again, and nothing of ours leaks meanwhile.
                self.claims.update(removed)
                message = "cannot record the change in the checkpoint %s: %s" % (
                    self.store.path, e.strerror or e)
                for uid in removed:
                    out[uid] = message
            else:
                for claim in removed.values():
                    log.info("unprepared claim %s/%s (uid %s)", claim.namespace, claim.name,
                             claim.uid)
            self._gauge()
        if self.metrics is not None:
            errors = sum(1 for e in out.values() if e)
            if errors:
                self.metrics.unprepares.labels(result="error").inc(errors)
            if len(out) - errors:
                self.metrics.unprepares.labels(result="ok").inc(len(out) - errors)
        return out

    async def close(self) -> None:
        """Cancel prepares still waiting (at shutdown), bounded."""
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

