"""The reconcile loop: keep the agent's own Node carrying the computed labels.

One reconcile is GET Node -> plan -> (maybe) one merge patch with the resourceVersion
precondition; a 409 re-reads and plans again. The loop then sleeps until the next drift check
(``labels.drift_check_seconds`` plus up to 25% jitter) or until the inventory changes. Failures
back off: 429/5xx/network with full jitter capped at 5 minutes and at least Retry-After; 401/403
and credential problems more slowly. Each kind of trouble is logged once when it begins and once
when it ends, never once per retry.

Where GPU feature discovery or NFD also label ``nvidia.com/gpu.*`` (``contest.py``), each
reconcile first lists the Node's NodeFeature objects (an answer of 403/404 is "unknown" and asked
again only hourly), and the situation is logged once, and again when it changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from edgeagent.backoff import Backoff
from edgeagent.kube.errors import (CredentialsError, KubeError, KubeResponseError,
                                   classify_write_error)
from edgeagent.labels.contest import NF_ABSENT, NF_FORBIDDEN, NOT_ASKED, NodeFeatures, \
    unknown_reason
from edgeagent.labels.nodefeatures import NodeFeatureForbidden, publish_labels, \
    read_nodefeatures
from edgeagent.labels.plan import Plan, plan_labels

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.discovery.inventory import Inventory
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.kube.client import KubeClient
    from edgeagent.labels.compute import LabelSet
    from edgeagent.labels.metrics import LabelMetrics

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
RETRY_AFTER_LIMIT = 3600.0
DRIFT_JITTER = 0.25
# A 403 or 404 for NodeFeature objects lasts until someone grants RBAC or installs NFD: asking
# every drift check would double the agent's requests for nothing.
NODEFEATURE_RECHECK_SECONDS = 3600.0


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
    if isinstance(error, NodeFeatureForbidden):
        return "nodefeature-forbidden", "auth"
    if isinstance(error, KubeError) and not isinstance(error, KubeResponseError) and \
            error.status == 404:
        return "node-not-found", "slow"
    return classify_write_error(error)


# What each kind of trouble means for the operator: the one table for `run` and `labels`.
STATE_HINTS = {
    "no-credentials": "labels wait for credentials",
    "unauthorized": "the API server rejects the credentials (expired or revoked certificate?)",
    "forbidden": "this identity may not read or modify that Node (the Node authorizer and "
                 "NodeRestriction let a node read and modify only its own Node: check "
                 "--node-name)",
    "node-not-found": "no such Node yet (the kubelet registers it) or a wrong --node-name",
    "tls-error": "the API server's certificate does not verify against the cluster CA",
    "bad-response": "the API server's answer could not be read; nothing was written",
    "throttled": "the API server asks to slow down",
    "unreachable": "the API server is unreachable or failing",
    "rejected": "the API server rejected the patch",
    "conflict": "the Node keeps changing under us",
    "nodefeature-forbidden": "labels.publish = \"nodefeature\" needs create, get and update on "
                             "nodefeatures (nfd.k8s-sigs.io) in labels.nodefeature_namespace "
                             "for this identity (a Role bound to it), or set labels.publish = "
                             "\"node\"",
}

# States in which the labels component cannot do its job until someone acts (its problem()).
NEEDS_OPERATOR = ("no-credentials", "unauthorized", "forbidden", "tls-error",
                  "nodefeature-forbidden")


def explain(error: BaseException) -> str:
    """The error with what it means for the operator, on one line."""
    hint = STATE_HINTS.get(classify(error)[0], "")
    return ("%s (%s)" % (error, hint) if hint else str(error)).replace("\n", " ")


def warn_ignored(plan: Plan, prefix: str, shown: int = 10) -> None:
    """One warning for annotation entries that are not edgeagent's (a hand edit); the list is
    the Node's data, so only its first few keys are shown."""
    keys = ", ".join(plan.ignored[:shown])
    if len(plan.ignored) > shown:
        keys += " and %d more" % (len(plan.ignored) - shown)
    log.warning("the %sowned-labels annotation lists keys edgeagent never owns (not its own "
                "labels): ignored, left untouched: %s", prefix, keys)


async def patch_node_labels(client: "KubeClient", name: str,
                            make_plan: Callable[[Dict[str, Any]], Plan], send: bool = True,
                            on_conflict: Callable[[], None] = lambda: None
                            ) -> Tuple[Plan, Dict[str, Any], bool]:
    """One single pass: GET the Node, plan against it, PATCH (with the resourceVersion
    precondition) unless there is nothing to do or ``send`` is False; a 409 reads again, up to
    MAX_CONFLICT_RETRIES times. Returns (plan, the Node read, whether the patch was sent). An
    unreadable Node raises (KubeResponseError): nothing is ever planned against an empty one."""
    for _ in range(MAX_CONFLICT_RETRIES):
        node = await client.get_node(name)
        plan = make_plan(node)
        if plan.patch is None or not send:
            return plan, node, False
        try:
            await client.patch_node(name, plan.patch)
        except KubeError as e:
            if e.status != 409:
                raise
            on_conflict()
            log.debug("Node %s changed since read; reading again", name)
            continue
        return plan, node, True
    raise KubeError("Node %s changed %d times while patching; try again"
                    % (name, MAX_CONFLICT_RETRIES), status=409, reason="Conflict")


class Reconciler:
    """Reconciles one Node. ``client`` is a KubeClient (None in demo mode: no API server)."""

    def __init__(self, *, feed: "InventoryFeed", compute: Callable[["Inventory"], "LabelSet"],
                 prefix: str, node_name: Callable[[], str],
                 client: Optional["KubeClient"] = None,
                 metrics: Optional["LabelMetrics"] = None,
                 dry_run: bool = False, drift_seconds: float = 600.0,
                 startup_jitter: float = 0.0, rng: Optional[random.Random] = None,
                 gpu_owner: str = "defer", publish: str = "node",
                 nodefeature_namespace: str = "node-feature-discovery",
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self.gpu_owner = gpu_owner      # defer, own or off (labels.nvidia_gpu_labels = false)
        self.publish = publish          # node: patch the Node; nodefeature: NFD applies them
        self.nodefeature_namespace = nodefeature_namespace
        self.clock = clock
        self.state = "starting"
        self.backoffs = {
            "transient": Backoff(base=1.0, cap=300.0, rng=self.rng),
            "auth": Backoff(base=30.0, cap=900.0, rng=self.rng),
            "slow": Backoff(base=10.0, cap=600.0, rng=self.rng),
        }
        self._problems: Tuple[str, ...] = ()
        self._ignored: Tuple[str, ...] = ()
        self._last_dry_patch: Optional[str] = None
        self._node_name: Optional[str] = None
        self._nodefeatures: Tuple[NodeFeatures, float] = (NOT_ASKED, 0.0)
        self._contest_seen: Optional[Tuple[Tuple[str, str, Tuple[str, ...]], ...]] = None
        self.reconciles = 0

    # --- one reconcile --------------------------------------------------------------------

    def _desired(self, inventory: "Inventory") -> Dict[str, str]:
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
            self.metrics.deferred.set(len(plan.deferred))
            self.metrics.last_success.set(time.time())

    def _log_dry(self, name: str, plan: Plan, against: str) -> None:
        text = patch_text(plan.patch)
        if text != self._last_dry_patch:
            log.info("dry run: would patch Node %s (%s) with %s", name, against, text)
            self._last_dry_patch = text

    async def _read_nodefeatures(self, name: str) -> NodeFeatures:
        """This Node's NodeFeature claims; a 403/404 is reused for an hour (see above)."""
        if self.gpu_owner == "off" or self.client is None:
            return NOT_ASKED
        last, when = self._nodefeatures
        if last.state in (NF_FORBIDDEN, NF_ABSENT) and \
                self.clock() - when < NODEFEATURE_RECHECK_SECONDS:
            return last
        found = await read_nodefeatures(self.client, name)
        if found.state != last.state:
            reason = unknown_reason(found)
            if reason:
                log.info("NodeFeature objects of Node %s: %s; GFD and NFD are still seen in the "
                         "Node's labels and NFD's annotation", name, reason)
            elif last.state != NOT_ASKED.state:
                log.info("NodeFeature objects of Node %s can be read again", name)
        self._nodefeatures = (found, self.clock())
        return found

    def _report_contest(self, plan: Plan) -> None:
        """Log who else labels nvidia.com/gpu.* once, and again when that changes."""
        contest = plan.contest
        seen = contest.signature
        if seen == self._contest_seen:
            return
        first = self._contest_seen is None
        self._contest_seen = seen
        if not contest.present:
            if not first:
                log.info("no other labeller of nvidia.com/gpu.* on this Node any more: edgeagent "
                         "labels them again (a value it did not set stays untouched)")
            return
        if self.gpu_owner == "own":
            log.warning("GPU feature discovery / NFD also label nvidia.com/gpu.* on this Node "
                        "(%s); labels.nvidia_gpu_labels_owner = \"own\": edgeagent writes them "
                        "anyway%s, and the two will rewrite each other's values: stop GFD on "
                        "this node or set it to \"defer\"", contest.describe(),
                        ", overwriting " + ", ".join(plan.taken) if plan.taken else "")
        elif self.gpu_owner == "defer":
            log.info("GPU feature discovery / NFD label nvidia.com/gpu.* on this Node (%s): "
                     "edgeagent defers to them and neither writes nor removes those labels "
                     "(labels.nvidia_gpu_labels_owner = \"defer\")", contest.describe())

    async def reconcile_once(self, labels: Dict[str, str]) -> str:
        """GET, plan, PATCH (409: again). Returns applied, unchanged or dry_run."""
        name = self._name()
        if self.client is None:  # demo: no API server; plan against an empty Node
            plan = plan_labels({"metadata": {"name": name}}, labels, self.prefix,
                               self.gpu_owner)
            self._log_dry(name, plan, "demo: against an empty Node")
            self._count("dry_run")
            return "dry_run"
        nodefeatures = await self._read_nodefeatures(name)
        if self.publish == "nodefeature":
            return await self._publish_once(name, labels, nodefeatures)
        plan, node, sent = await patch_node_labels(
            self.client, name,
            lambda node: plan_labels(node, labels, self.prefix, self.gpu_owner, nodefeatures),
            send=not self.dry_run, on_conflict=lambda: self._count("conflict"))
        self._report_contest(plan)
        if plan.ignored != self._ignored:
            if set(plan.ignored) - set(self._ignored):
                warn_ignored(plan, self.prefix)
            self._ignored = plan.ignored
        if plan.foreign:
            log.debug("left alone (set by someone else): %s", ", ".join(plan.foreign))
        if not plan.changed:
            self._count("unchanged")
            self._success(plan)
            return "unchanged"
        if not sent:
            self._log_dry(name, plan, "resourceVersion %s" % (
                node["metadata"].get("resourceVersion")))
            self._count("dry_run")
            return "dry_run"
        self._count("applied")
        self._success(plan)
        log.info("Node %s labels: %s", name, describe_plan(plan))
        return "applied"

    async def _publish_once(self, name: str, labels: Dict[str, str],
                            nodefeatures: NodeFeatures) -> str:
        """``labels.publish = "nodefeature"``: write edgeagent's NodeFeature, not the Node."""
        assert self.client is not None
        done = await publish_labels(self.client, name, self.nodefeature_namespace, labels,
                                    self.prefix, self.gpu_owner, nodefeatures,
                                    send=not self.dry_run,
                                    on_conflict=lambda: self._count("conflict"))
        self._report_contest(done.plan)
        where = "%s/%s" % (done.namespace, done.name)
        if done.body is None and done.plan.patch is None:
            self._count("unchanged")
            self._success(done.plan)
            return "unchanged"
        if self.dry_run:
            text = patch_text({"nodefeature": done.body, "node": done.plan.patch})
            if text != self._last_dry_patch:
                log.info("dry run: would write NodeFeature %s and patch Node %s with %s", where,
                         name, text)
                self._last_dry_patch = text
            self._count("dry_run")
            return "dry_run"
        self._count("applied")
        self._success(done.plan)
        if done.written:
            log.info("NodeFeature %s: published %d labels for nfd-master to apply to Node %s",
                     where, len(done.body["spec"]["labels"]) if done.body else 0, name)
        if done.plan.patch is not None:
            log.info("Node %s: handed its labels over to nfd-master (removed: %s; ownership "
                     "annotation dropped)", name, ", ".join(done.plan.removed) or "none")
        return "applied"

    def problem(self) -> Optional[str]:
        """Why labelling cannot go on until someone acts (no or rejected credentials, a
        forbidden or unverifiable API server), or None."""
        if self.state in NEEDS_OPERATOR:
            return "node labels: %s: %s" % (self.state, STATE_HINTS[self.state])
        return None

    # --- the loop ---------------------------------------------------------------------------

    def _enter(self, state: str, error: Optional[BaseException] = None) -> None:
        if state == self.state:
            return
        previous, self.state = self.state, state
        if state == "ok":
            if previous not in ("starting", "ok"):
                log.info("Node labels reconciled again (was: %s)", previous)
            return
        hint = STATE_HINTS.get(state, "")
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

    async def _wait(self, delay: float, inventory: "Inventory") -> "Inventory":
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
                    self._log_dry(name, plan_labels({"metadata": {}}, labels, self.prefix,
                                                    self.gpu_owner),
                                  "API server unavailable: against an empty Node")
                delay = self._delay_after(e, kind)
                log.debug("retrying node labels in %.1fs", delay)
            else:
                self._enter("ok")
                for backoff in self.backoffs.values():
                    backoff.reset()
                delay = self.drift_delay() if self.client is not None else 1e9
            inventory = await self._wait(delay, inventory)
