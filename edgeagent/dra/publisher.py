"""I/O: keep this node's ResourceSlice on the API server equal to its DRA devices.

``update()`` (synchronous, from the loop) records the wanted devices and wakes ``run()``, which
plans against the slice it last wrote (or, at start, after an error and on every resync, the
listed slices of this node and driver) and sends what the plan says: a health change costs one
PUT. Failures back off (full jitter; at least Retry-After on 429; credentials re-read on 401 by
the client, and more slowly on 401/403), a new ``update()`` retries at once unless the server
asked to wait. Each kind of trouble is logged when it begins and when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgeagent.backoff import Backoff
from edgeagent.dra.names import DRIVER
from edgeagent.dra.slices import SLICE_VERSIONS, consumable_dropped, pick_version, \
    plan_slices, read_slice, slice_name
from edgeagent.kube.errors import (CredentialsError, KubeError, KubeResponseError,
                                   classify_write_error)

if TYPE_CHECKING:  # pragma: no cover - types only
    from prometheus_client import CollectorRegistry

    from edgeagent.dra.model import DraDevice
    from edgeagent.kube.client import KubeClient

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
RETRY_AFTER_LIMIT = 3600.0
# Re-list now and then: a slice deleted behind the agent's back comes back. Every 5 minutes
# (plus jitter) costs a node about 12 GETs an hour; refresh() covers the kubelet's own wipes.
RESYNC_SECONDS = 300.0
RESYNC_JITTER = 0.25
# The kubelet deletes a driver's slices 30 s after its plugin went away (DRAPluginManager's
# wipe grace period) unless the plugin registers again; a check this long after a
# registration catches a wipe that raced with it.
RECHECK_SECONDS = 35.0
RECHECKS = 4          # 35, 70, 140 and 280 s after a registration


class NoSliceApi(KubeError):
    """The server serves no resource.k8s.io version the agent writes slices in."""


STATE_HINTS = {
    "no-credentials": "ResourceSlices wait for credentials",
    "unauthorized": "the API server rejects the credentials (expired or revoked certificate?)",
    "forbidden": "this identity may not write this ResourceSlice: the Node authorizer lets a "
                 "node (system:node:<name>) create, update and delete only slices whose "
                 "spec.nodeName is itself: check --node-name against the Node's name, and that "
                 "the API server runs with --authorization-mode including Node and the "
                 "NodeRestriction admission plugin (or bind a role on resourceslices)",
    "no-api": "the API server serves no resource.k8s.io/v1 or v1beta2: DRA needs Kubernetes "
              "1.33 or later (1.34 for v1); set gpu_mode = \"device-plugin\" on older clusters",
    "tls-error": "the API server's certificate does not verify against the cluster CA",
    "bad-response": "the API server's answer could not be read; nothing was written",
    "throttled": "the API server asks to slow down",
    "unreachable": "the API server is unreachable or failing",
    "rejected": "the API server rejected the ResourceSlice",
    "conflict": "the ResourceSlice keeps changing under us",
}
NEEDS_OPERATOR = ("no-credentials", "unauthorized", "forbidden", "no-api", "tls-error")


def classify(error: BaseException) -> Tuple[str, str]:
    """(state, kind of backoff) for a failed reconcile."""
    if isinstance(error, NoSliceApi):
        return "no-api", "slow"
    return classify_write_error(error)


def explain(error: BaseException) -> str:
    """The error with what it means for the operator, on one line."""
    hint = STATE_HINTS.get(classify(error)[0], "")
    return ("%s (%s)" % (error, hint) if hint else str(error)).replace("\n", " ")


def describe(devices: Sequence["DraDevice"]) -> str:
    shown = ["%s%s" % (d.name, "" if d.healthy else " (unhealthy: %s)" % d.reason)
             for d in devices]
    return ", ".join(shown) or "no devices"


_GAUGES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def slices_gauge(registry: "CollectorRegistry") -> Any:
    """``edgeagent_dra_resource_slices`` of ``registry``, registered once however many
    publishers a registry sees (a component built again after a restart)."""
    gauge = _GAUGES.get(registry)
    if gauge is None:
        from prometheus_client import Gauge

        gauge = _GAUGES[registry] = Gauge(
            "edgeagent_dra_resource_slices", "ResourceSlices this node publishes for the "
            "edgeagent.io driver", registry=registry)
    return gauge


class SlicePublisher:
    """Publishes one node's ResourceSlice of the driver. ``client`` None (no API server) or
    ``dry_run``: logs what it would publish."""

    def __init__(self, client: Optional["KubeClient"], node_name: Callable[[], str],
                 registry: Optional["CollectorRegistry"], dry_run: bool = False,
                 rng: Optional[random.Random] = None,
                 resync_seconds: float = RESYNC_SECONDS,
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.client = client
        self.node_name = node_name
        self.dry_run = dry_run or client is None
        self.rng = rng or random.Random()
        self.resync_seconds = resync_seconds
        self.recheck_seconds = recheck_seconds
        self.state = "starting"
        self.consumable = True          # until the server drops consumable capacity
        self.version: Optional[str] = None
        self.reconciles = 0
        self.backoffs = {
            "transient": Backoff(base=0.5, cap=300.0, rng=self.rng),
            "auth": Backoff(base=30.0, cap=900.0, rng=self.rng),
            "slow": Backoff(base=10.0, cap=600.0, rng=self.rng),
        }
        self._wanted: Optional[Tuple["DraDevice", ...]] = None
        self._dirty = False
        self._wake: Optional[asyncio.Event] = None
        self._last: Optional[Dict[str, Any]] = None   # the slice as the server last returned it
        self._relist = True
        self._rechecks: List[float] = []     # monotonic times of the checks refresh() asked
        self._dry_logged: Optional[str] = None
        self.gauge = slices_gauge(registry) if registry is not None else None

    # --- what the rest of the agent calls ---------------------------------------------------

    def update(self, devices: Sequence["DraDevice"]) -> None:
        """The devices to publish now (cheap: the loop does the work)."""
        self._wanted = tuple(devices)
        self._dirty = True
        if self._wake is not None:
            self._wake.set()

    def refresh(self) -> None:
        """Check the server's slices again now, and again ``recheck_seconds`` later, then twice,
        four and eight times that, whatever the publisher last wrote. For the kubelet plugin's
        (re-)registration: a kubelet that starts deletes every ResourceSlice of its node
        (DRAPluginManager wipes them at start-up, retrying with a doubling backoff while it
        cannot read its Node yet: up to a minute or more late) and the slices of a driver
        whose plugin stayed away for 30 s."""
        self._relist = True
        now = time.monotonic()
        self._rechecks = [now + self.recheck_seconds * 2 ** k for k in range(RECHECKS)]
        if self._wanted is not None:
            self._dirty = True
        if self._wake is not None:
            self._wake.set()

    @property
    def sharing(self) -> str:
        """"consumable" while the server keeps consumable capacity, else "exclusive"."""
        return "consumable" if self.consumable else "exclusive"

    def problem(self) -> Optional[str]:
        """Why slices are not published until someone acts, or None."""
        if self.state in NEEDS_OPERATOR:
            return "DRA ResourceSlices: %s: %s" % (self.state, STATE_HINTS[self.state])
        return None

    async def remove_all(self) -> int:
        """Delete this node's slices of the driver (uninstall); how many were deleted. API
        errors are raised to the caller."""
        assert self.client is not None, "remove_all needs an API server"
        node = self.node_name()
        version = await self._slice_version()
        removed = 0
        for obj in await self.client.list_resource_slices(node, DRIVER, version):
            found = read_slice(obj)
            if found is not None and found.node == node and found.driver == DRIVER:
                if await self.client.delete_resource_slice(found.name, version):
                    removed += 1
        self._last, self._relist = None, True
        self._set_gauge(0)
        return removed

    # --- one reconcile ----------------------------------------------------------------------

    def _set_gauge(self, count: int) -> None:
        if self.gauge is not None:
            self.gauge.set(count)

    async def _slice_version(self) -> str:
        if self.version is None:
            assert self.client is not None
            served = await self.client.resource_versions()
            version = pick_version(served)
            if version is None:
                raise NoSliceApi("the API server serves resource.k8s.io %s, none of %s" % (
                    "/".join(served) or "not at all", "/".join(SLICE_VERSIONS)))
            log.debug("ResourceSlices in resource.k8s.io/%s", version)
            self.version = version
        return self.version

    def _log_dry(self, node: str, devices: Sequence["DraDevice"]) -> None:
        text = describe(devices)
        if text != self._dry_logged:
            log.info("dry run: would publish ResourceSlice %s with %s", slice_name(node), text)
            self._dry_logged = text

    async def reconcile_once(self, devices: Sequence["DraDevice"]) -> str:
        """Bring the server to ``devices``: returns "created", "updated", "unchanged" or
        "dry_run"; API errors raise."""
        node = self.node_name()
        if self.dry_run or self.client is None:
            self._log_dry(node, devices)
            return "dry_run"
        client = self.client
        version = await self._slice_version()
        for _ in range(MAX_CONFLICT_RETRIES):
            cached = not self._relist and self._last is not None
            if cached:
                existing: List[Any] = [self._last]
            else:
                self._relist = False      # before the await: a refresh() meanwhile stands
                existing = await client.list_resource_slices(node, DRIVER, version)
            plan = plan_slices(node, devices, self.consumable, existing, version)
            sent = plan.create or plan.update
            try:
                for name, resource_version in plan.delete:
                    await client.delete_resource_slice(name, version, resource_version)
                    log.info("deleted stale ResourceSlice %s of Node %s", name, node)
                if plan.create is not None:
                    returned = await client.create_resource_slice(plan.create, version)
                elif plan.update is not None:
                    returned = await client.replace_resource_slice(plan.update, version)
                else:
                    returned = None
            except KubeError as e:
                # 409: changed since read (or created by someone else); 404: deleted since. A
                # node gets 403, not 404, for a slice deleted since it was read (the Node
                # authorizer knows no edge to a missing object): only a fresh list tells.
                retry = e.status in (409, 404) or (e.status == 403 and cached)
                if not retry or isinstance(e, KubeResponseError):
                    self._relist = True
                    raise
                self._last, self._relist = None, True
                log.debug("ResourceSlice of Node %s changed under us (%s); listing again",
                          node, e)
                continue
            mine = next((obj for obj in existing
                         if getattr(read_slice(obj), "name", None) == slice_name(node)), None)
            if returned is not None:
                self._last = returned
            elif mine is not None:
                self._last = mine
            if sent is not None and self.consumable and consumable_dropped(sent, returned):
                self.consumable = False
                log.warning("the API server dropped allowMultipleAllocations and the GPU's "
                            "memory requestPolicy from ResourceSlice %s: it does not support "
                            "consumable capacity (the DRAConsumableCapacity feature gate, "
                            "Kubernetes 1.34+); the GPU is published for exclusive use, one "
                            "claim at a time", slice_name(node))
                # What it returned is the exclusive form: the next plan matches it.
            self._set_gauge(1 if self._last is not None else 0)
            if sent is None:
                return "unchanged"
            log.info("%s ResourceSlice %s (generation %d): %s",
                     "created" if plan.create is not None else "updated", slice_name(node),
                     sent["spec"]["pool"]["generation"], describe(devices))
            return "created" if plan.create is not None else "updated"
        raise KubeError("ResourceSlice %s changed %d times while writing it; trying again "
                        "later" % (slice_name(node), MAX_CONFLICT_RETRIES), status=409,
                        reason="Conflict")

    # --- the loop ---------------------------------------------------------------------------

    def _enter(self, state: str, error: Optional[BaseException] = None) -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        if state == "ok":
            if previous not in ("starting", "ok"):
                log.info("ResourceSlices published again (was: %s)", previous)
            return
        hint = STATE_HINTS.get(state, "")
        log.warning("DRA ResourceSlices: %s: %s%s", state, str(error).replace("\n", " "),
                    "; " + hint if hint else "")

    def _delay_after(self, error: BaseException, kind: str) -> Tuple[float, bool]:
        """(seconds, whether the server asked for them: then an update does not cut it)."""
        delay = self.backoffs[kind].next()
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            return max(delay, min(float(retry_after), RETRY_AFTER_LIMIT)), True
        return delay, False

    async def _sleep(self, delay: float, wake_on_update: bool = True) -> bool:
        """Wait ``delay`` seconds or, when ``wake_on_update``, until update(); True when the
        whole delay passed."""
        assert self._wake is not None
        if not wake_on_update:
            await asyncio.sleep(delay)
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except asyncio.TimeoutError:
            return True
        return False

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        """Reconcile until cancelled; API errors never escape. ``started()`` is called at once:
        the agent's readiness never waits on the API server."""
        self._wake = asyncio.Event()
        started()
        while True:
            if not self._dirty:
                await self._wake.wait()
            self._wake.clear()
            self._dirty = False
            devices = self._wanted
            if devices is None:
                continue
            self.reconciles += 1
            try:
                await self.reconcile_once(devices)
            except asyncio.CancelledError:
                raise
            except (KubeError, CredentialsError) as e:
                state, kind = classify(e)
                if state in ("no-api",) or getattr(e, "status", None) == 404:
                    self.version = None       # ask again which versions are served
                self._relist = True
                self._enter(state, e)
                self._dirty = True            # the devices are still to be published
                delay, asked = self._delay_after(e, kind)
                log.debug("retrying the ResourceSlice in %.1fs", delay)
                await self._sleep(delay, wake_on_update=not asked)
                continue
            if not self.dry_run:
                self._enter("ok")
            for backoff in self.backoffs.values():
                backoff.reset()
            if self._dirty:
                continue
            wait = self.resync_seconds * (1.0 + self.rng.uniform(0.0, RESYNC_JITTER))
            if self._rechecks:
                wait = max(0.0, min(wait, self._rechecks[0] - time.monotonic()))
            if await self._sleep(wait):
                now = time.monotonic()
                self._rechecks = [t for t in self._rechecks if t > now]
                self._relist, self._dirty = True, True

