"""The reconcile loop: keep the agent's own Node carrying the computed labels.

One reconcile is GET Node -> plan -> (maybe) one merge patch with the resourceVersion
precondition; a 409 re-reads and plans again. The loop then sleeps until the next drift check
(``labels.drift_check_seconds`` plus up to 25% jitter) or until the inventory changes. Failures
back off: 429/5xx/network with full jitter capped at 5 minutes and at least Retry-After; 401/403
and credential problems more slowly. Each kind of trouble is logged once when it begins and once
when it ends, never once per retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, Callable, Dict, Optional, Tuple

from edgeagent.backoff import Backoff
from edgeagent.kube.errors import CredentialsError, KubeError, KubeTLSError
from edgeagent.labels.plan import Plan, plan_labels

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
RETRY_AFTER_LIMIT = 3600.0
DRIFT_JITTER = 0.25


def patch_text(patch: Optional[Dict[str, Any]]) -> str:
    return json.dumps(patch, sort_keys=True, separators=(",", ":"))


def describe_plan(plan: Plan) -> str:
    parts = []
    if plan.set_labels:
        parts.append("set " + ", ".join("%s=%s" % kv for kv in sorted(plan.set_labels.items())))
    if plan.removed:
        parts.append("remove " + ", ".join(plan.removed))
    if not parts:
        parts.append("update the ownership annotation")
    return "; ".join(parts)


def classify(error: BaseException) -> Tuple[str, str]:
    """(state, kind of backoff) for a failed reconcile."""
    if isinstance(error, CredentialsError):
        return "no-credentials", "slow"
    if isinstance(error, KubeTLSError):
        return "tls-error", "transient"
    if isinstance(error, KubeError):
        if error.status == 401:
            return "unauthorized", "auth"
        if error.status == 403:
            return "forbidden", "auth"
        if error.status == 404:
            return "node-not-found", "slow"
        if error.status == 409:
            return "conflict", "transient"
        if error.status == 429:
            return "throttled", "transient"
        if error.retryable:
            return "unreachable", "transient"
        return "rejected", "slow"
    return "error", "transient"


_STATE_HINTS = {
    "no-credentials": "labels wait for credentials",
    "unauthorized": "the API server rejects the credentials (expired or revoked certificate?)",
    "forbidden": "this identity may not modify the Node (NodeRestriction allows a node only its "
                 "own Node: check --node-name)",
    "node-not-found": "no such Node yet (the kubelet registers it) or a wrong --node-name",
    "tls-error": "the API server's certificate does not verify against the cluster CA",
    "throttled": "the API server asks to slow down",
    "unreachable": "the API server is unreachable or failing",
    "rejected": "the API server rejected the patch",
    "conflict": "the Node keeps changing under us",
}


class Reconciler:
    """Reconciles one Node. ``client`` is a KubeClient (None in demo mode: no API server)."""

    def __init__(self, *, feed: Any, compute: Callable[[Any], Any], prefix: str,
                 node_name: Callable[[], str], client: Any = None, metrics: Any = None,
                 dry_run: bool = False, drift_seconds: float = 600.0,
                 startup_jitter: float = 0.0, rng: Optional[random.Random] = None) -> None:
        self.feed = feed
        self.compute = compute
        self.prefix = prefix
        self.node_name = node_name
        self.client = client
        self.metrics = metrics
        self.dry_run = dry_run or client is None
        self.drift_seconds = drift_seconds
        self.startup_jitter = startup_jitter
        self.rng = rng or random.Random()
        self.state = "starting"
        self.backoffs = {
            "transient": Backoff(base=1.0, cap=300.0, rng=self.rng),
            "auth": Backoff(base=30.0, cap=900.0, rng=self.rng),
            "slow": Backoff(base=10.0, cap=600.0, rng=self.rng),
        }
        self._problems: Tuple[str, ...] = ()
        self._last_dry_patch: Optional[str] = None
        self._node_name: Optional[str] = None
        self.reconciles = 0

    # --- one reconcile --------------------------------------------------------------------

    def _desired(self, inventory: Any) -> Dict[str, str]:
        result = self.compute(inventory)
        if result.problems != self._problems:
            for problem in result.problems:
                if problem not in self._problems:
                    log.warning("%s", problem)
            self._problems = result.problems
        return result.labels

    def _name(self) -> str:
        name = self.node_name()
        if name != self._node_name:
            log.info("labelling Node %s", name)
            self._node_name = name
        return name

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.count(result)

    def _success(self, plan: Plan) -> None:
        if self.metrics is not None:
            self.metrics.owned.set(len(plan.owned))
            self.metrics.last_success.set(time.time())

    def _log_dry(self, name: str, plan: Plan, against: str) -> None:
        text = patch_text(plan.patch)
        if text != self._last_dry_patch:
            log.info("dry run: would patch Node %s (%s) with %s", name, against, text)
            self._last_dry_patch = text

    async def reconcile_once(self, labels: Dict[str, str]) -> str:
        """GET, plan, PATCH (409: again). Returns applied, unchanged or dry_run."""
        name = self._name()
        if self.client is None:  # demo: no API server; plan against an empty Node
            plan = plan_labels({"metadata": {"name": name}}, labels, self.prefix)
            self._log_dry(name, plan, "demo: against an empty Node")
            self._count("dry_run")
            return "dry_run"
        for _ in range(MAX_CONFLICT_RETRIES):
            node = await self.client.get_node(name)
            plan = plan_labels(node, labels, self.prefix)
            if plan.foreign:
                log.debug("left alone (set by someone else): %s", ", ".join(plan.foreign))
            if not plan.changed:
                self._count("unchanged")
                self._success(plan)
                return "unchanged"
            if self.dry_run:
                self._log_dry(name, plan, "resourceVersion %s" % (
                    node.get("metadata", {}).get("resourceVersion")))
                self._count("dry_run")
                return "dry_run"
            try:
                await self.client.patch_node(name, plan.patch)
            except KubeError as e:
                if e.status == 409:
                    self._count("conflict")
                    log.debug("Node %s changed since read; reading again", name)
                    continue
                raise
            self._count("applied")
            self._success(plan)
            log.info("Node %s labels: %s", name, describe_plan(plan))
            return "applied"
        raise KubeError("Node %s changed %d times while patching" % (name, MAX_CONFLICT_RETRIES),
                        status=409, reason="Conflict")

    # --- the loop ---------------------------------------------------------------------------

    def _enter(self, state: str, error: Optional[BaseException] = None) -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        if state == "ok":
            if previous not in ("starting", "ok"):
                log.info("Node labels reconciled again (was: %s)", previous)
            return
        hint = _STATE_HINTS.get(state, "")
        log.warning("node labels: %s: %s%s", state, error, "; " + hint if hint else "")

    def _delay_after(self, error: BaseException, kind: str) -> float:
        delay = self.backoffs[kind].next()
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            delay = max(delay, min(float(retry_after), RETRY_AFTER_LIMIT))
        return delay

    def drift_delay(self) -> float:
        """At least ``drift_seconds`` apart, spread over up to 25% more so a fleet drifts apart."""
        return self.drift_seconds * (1.0 + self.rng.uniform(0.0, DRIFT_JITTER))

    async def _wait(self, delay: float, inventory: Any) -> Any:
        """Sleep ``delay`` seconds or until the inventory changes; return the inventory."""
        waiter = asyncio.ensure_future(self.feed.changed_from(inventory))
        try:
            done, _ = await asyncio.wait([waiter], timeout=delay)
            if done:
                new = waiter.result()
                log.info("inventory changed: labelling again now")
                return new
            return inventory
        finally:
            waiter.cancel()

    async def run(self, started: Callable[[], None] = lambda: None) -> None:
        """Reconcile until cancelled. ``started()`` is called once the loop runs: readiness of
        the agent never waits on the API server."""
        started()
        inventory = self.feed.current
        if self.startup_jitter > 0:
            # A fleet restarting together (a power cut, a rollout) must not stampede.
            inventory = await self._wait(self.rng.uniform(0, self.startup_jitter), inventory)
        while True:
            self.reconciles += 1
            try:
                labels = self._desired(inventory)
                await self.reconcile_once(labels)
            except asyncio.CancelledError:
                raise
            except (KubeError, CredentialsError) as e:
                state, kind = classify(e)
                self._count("error")
                self._enter(state, e)
                if self.dry_run and self._last_dry_patch is None:
                    name = self._node_name or "(name unknown without credentials)"
                    self._log_dry(name, plan_labels({}, labels, self.prefix),
                                  "API server unavailable: against an empty Node")
                delay = self._delay_after(e, kind)
                log.debug("retrying node labels in %.1fs", delay)
            else:
                self._enter("ok")
                for backoff in self.backoffs.values():
                    backoff.reset()
                delay = self.drift_delay() if self.client is not None else 1e9
            inventory = await self._wait(delay, inventory)
