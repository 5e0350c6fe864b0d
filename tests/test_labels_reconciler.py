"""The reconcile loop against the local HTTPS API server: writes only what changed, backs off,
logs state changes once, follows the inventory."""

import asyncio
import dataclasses
import logging
import random

import pytest
from prometheus_client import CollectorRegistry

from edgeagent.backoff import Backoff
from edgeagent.config import load_config
from edgeagent.discovery.scan import discover
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.hostpaths import HostRoot
from edgeagent.kube.client import CredentialCache, KubeClient
from edgeagent.kube.credentials import load_kubeconfig
from edgeagent.kube.errors import CredentialsError, KubeError, KubeNetworkError
from edgeagent.labels.compute import compute_labels
from edgeagent.labels.metrics import LabelMetrics
from edgeagent.labels.reconciler import Reconciler, classify
from tests.conftest import dtb_path
from tests.peers.kubeapi import KubeApiServer
from tests.tools import arun, until

ANN = "edgeagent.io/owned-labels"


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    return discover(HostRoot(str(tmp_path_factory.mktemp("r"))),
                    dtb_path("tegra210-p3450-0000.dtb"))


def make(api_or_path, inventory, node="jetson-1", drift=0.1, dry_run=False, registry=None,
         config=None):
    config = config or load_config(env={})
    path = api_or_path.write_kubeconfig() if isinstance(api_or_path, KubeApiServer) \
        else api_or_path
    loader = (lambda: load_kubeconfig(path)) if path else _no_creds
    client = KubeClient(CredentialCache(loader), timeout=2.0)
    feed = InventoryFeed(inventory)
    metrics = LabelMetrics(registry or CollectorRegistry())
    rec = Reconciler(feed=feed, compute=lambda inv: compute_labels(inv, config.options.labels),
                     prefix="edgeagent.io/", node_name=lambda: node, client=client,
                     metrics=metrics, dry_run=dry_run, drift_seconds=drift,
                     rng=random.Random(1))
    for kind in rec.backoffs:
        rec.backoffs[kind] = Backoff(base=0.02, cap=0.05, rng=random.Random(2))
    return rec, feed, client


def _no_creds():
    raise CredentialsError("no Kubernetes credentials: test")


async def running(rec, client, body):
    started = []
    task = asyncio.ensure_future(rec.run(lambda: started.append(1)))
    try:
        await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert started == [1]


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels or None) or 0


def test_labels_applied_once_then_only_drift_reads(tmp_path, nano):
    registry = CollectorRegistry()

    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            rec, _, client = make(api, nano, registry=registry)
            desired = compute_labels(nano, load_config(env={}).options.labels).labels

            async def body():
                await until(lambda: len(api.requests_by("GET", "/api/v1/nodes/")) >= 5,
                            what="drift checks")
            await running(rec, client, body)
            labels = api.labels("jetson-1")
            for k, v in desired.items():
                assert labels[k] == v
            assert api.annotations("jetson-1")[ANN] == ",".join(sorted(desired))
            assert len(api.requests_by("PATCH")) == 1       # no write when nothing changed
        assert sample(registry, "edgeagent_labels_patches_total", result="applied") == 1
        assert sample(registry, "edgeagent_labels_patches_total", result="unchanged") >= 3
        assert sample(registry, "edgeagent_labels_owned") == len(desired)
        assert sample(registry, "edgeagent_labels_last_success_timestamp_seconds") > 0

    arun(scenario())


def test_foreign_labels_untouched_and_stale_owned_removed(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.edit_node("jetson-1", {"metadata": {
                "labels": {"nvidia.com/gpu.product": "set-by-gfd", "team.io/owner": "ops",
                           "edgeagent.io/old-fact": "x"},
                "annotations": {ANN: "edgeagent.io/old-fact"}}})
            rec, _, client = make(api, nano)

            async def body():
                await until(lambda: api.requests_by("PATCH"), what="a patch")
            await running(rec, client, body)
            labels = api.labels("jetson-1")
            assert labels["nvidia.com/gpu.product"] == "set-by-gfd"
            assert labels["team.io/owner"] == "ops"
            assert "edgeagent.io/old-fact" not in labels
            assert "nvidia.com/gpu.product" not in api.annotations("jetson-1")[ANN]

    arun(scenario())


def test_conflict_reads_again(tmp_path, nano):
    registry = CollectorRegistry()

    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            rec, _, client = make(api, nano, registry=registry)
            api.inject(409, method="PATCH", count=2)
            result = await rec.reconcile_once(rec._desired(nano))
            await client.close()
            assert result == "applied"
            assert [r.method for r in api.records if "/nodes/" in r.path] == [
                "GET", "PATCH", "GET", "PATCH", "GET", "PATCH"]
        assert sample(registry, "edgeagent_labels_patches_total", result="conflict") == 2

    arun(scenario())


def test_real_concurrent_change_is_a_409_then_retried(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            rec, _, client = make(api, nano)
            original = client.patch_node
            calls = []

            async def racing_patch(name, patch):
                if not calls:   # someone else writes between our GET and PATCH
                    api.edit_node(name, {"metadata": {"labels": {"team.io/x": "1"}}})
                calls.append(1)
                return await original(name, patch)

            client.patch_node = racing_patch
            assert await rec.reconcile_once(rec._desired(nano)) == "applied"
            await client.close()
            assert [r.status for r in api.requests_by("PATCH")] == [409, 200]
            assert api.labels("jetson-1")["team.io/x"] == "1"

    arun(scenario())


def test_inventory_change_relabels_at_once(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            rec, feed, client = make(api, nano, drift=3600)

            async def body():
                await until(lambda: api.requests_by("PATCH"), what="first patch")
                feed.publish(dataclasses.replace(nano, l4t="32.7.1", jetpack="4.6.1"))
                await until(lambda: api.labels("jetson-1").get("edgeagent.io/jetpack") ==
                            "4.6.1", timeout=5, what="re-label")
            await running(rec, client, body)
            assert len(api.requests_by("PATCH")) == 2

    arun(scenario())


def test_forbidden_is_logged_once_and_retried(tmp_path, nano, caplog):
    registry = CollectorRegistry()

    async def scenario():
        async with KubeApiServer(str(tmp_path), nodes=["jetson-1", "jetson-2"]) as api:
            rec, _, client = make(api, nano, node="jetson-2", registry=registry)

            async def body():
                await until(lambda: len(api.requests_by("GET", "/api/v1/nodes/")) >= 3,
                            what="retries")
            await running(rec, client, body)
            # The Node authorizer (1.32+) refuses even the read: nothing is ever sent.
            assert {r.status for r in api.requests_by("GET", "/api/v1/nodes/")} == {403}
            assert not api.requests_by("PATCH")
            assert rec.state == "forbidden"
            assert "forbidden" in rec.problem()

    with caplog.at_level(logging.INFO, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "forbidden" in warnings[0].getMessage()
    assert "only its own Node" in warnings[0].getMessage()
    assert "--node-name" in warnings[0].getMessage()
    assert sample(registry, "edgeagent_labels_patches_total", result="error") >= 2


def test_server_errors_back_off_then_recover(tmp_path, nano, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            rec, _, client = make(api, nano)
            api.inject(500, count=2, path="/api/v1/nodes/")
            api.inject(drop=True, count=4, path="/api/v1/nodes/")
            api.inject(429, count=1, retry_after=0, path="/api/v1/nodes/")

            async def body():
                await until(lambda: api.requests_by("PATCH"), what="the patch")
                await until(lambda: rec.state == "ok", what="ok state")
            await running(rec, client, body)

    with caplog.at_level(logging.INFO, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert any("reconciled again" in m for m in messages)


def test_missing_credentials_and_missing_node(tmp_path, nano, caplog):
    async def scenario():
        rec, _, client = make(None, nano)

        async def body():
            await until(lambda: rec.reconciles >= 3, what="retries")
        await running(rec, client, body)
        assert rec.state == "no-credentials"
        async with KubeApiServer(str(tmp_path), nodes=[]) as api:
            rec, _, client = make(api, nano)

            async def body2():
                await until(lambda: rec.reconciles >= 2, what="retries")
            await running(rec, client, body2)
            assert rec.state == "node-not-found"

    with caplog.at_level(logging.WARNING, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    assert len([r for r in caplog.records if r.name == "edgeagent.labels.reconciler"]) == 2


def test_dry_run_reads_but_never_writes(tmp_path, nano, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            rec, _, client = make(api, nano, dry_run=True)

            async def body():
                await until(lambda: len(api.requests_by("GET", "/api/v1/nodes/")) >= 3,
                            what="reads")
            await running(rec, client, body)
            assert not api.requests_by("PATCH")

    with caplog.at_level(logging.INFO, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    dry = [r.getMessage() for r in caplog.records if "dry run" in r.getMessage()]
    assert len(dry) == 1 and "nvidia.com/gpu.product" in dry[0]


def test_retry_after_is_honoured_and_classification():
    rec = Reconciler(feed=None, compute=None, prefix="p/", node_name=lambda: "n",
                     client=object(), rng=random.Random(3))
    e = KubeError("slow down", status=429, retry_after=42)
    for _ in range(5):
        assert rec._delay_after(e, "transient") >= 42
    capped = [rec._delay_after(KubeNetworkError("x"), "transient") for _ in range(40)]
    assert max(capped) <= 300
    assert classify(KubeError("", status=401)) == ("unauthorized", "auth")
    assert classify(KubeError("", status=503)) == ("unreachable", "transient")
    assert classify(KubeError("", status=422)) == ("rejected", "slow")
    assert classify(CredentialsError("x")) == ("no-credentials", "slow")
    drift = [rec.drift_delay() for _ in range(100)]
    assert min(drift) >= 600 and max(drift) <= 750


def test_agent_demo_logs_the_patch_without_an_api_server(caplog):
    from edgeagent.app import DEMO_PACKAGE_DIR, run_agent

    async def scenario():
        stop = asyncio.Event()
        root = HostRoot(DEMO_PACKAGE_DIR)
        config = load_config(env={}).replace(disable=["device-plugin", "metrics"])
        task = asyncio.ensure_future(run_agent(root, config, discover(root), demo=True,
                                               stop=stop))
        await until(lambda: any("dry run" in r.getMessage() for r in caplog.records),
                    what="dry-run log")
        stop.set()
        assert await task == 0

    with caplog.at_level(logging.INFO):
        arun(scenario())
    line = next(r.getMessage() for r in caplog.records if "dry run" in r.getMessage())
    assert "against an empty Node" in line and "edgeagent.io/nvdla.count" in line


def test_explicit_bad_kubeconfig_fails_the_build(tmp_path):
    from edgeagent.labels.component import build

    class Ctx:
        config = load_config(env={}).replace(kubeconfig=str(tmp_path / "missing"))
        root = HostRoot(str(tmp_path))
        demo = False
        registry = None

    with pytest.raises(CredentialsError, match="no such file"):
        build(Ctx())


def test_dry_run_without_credentials_still_shows_the_patch(nano, caplog):
    async def scenario():
        rec, _, client = make(None, nano, dry_run=True)
        rec.node_name = _no_creds   # naming the node needs the credentials too

        async def body():
            await until(lambda: rec.reconciles >= 2, what="retries")
        await running(rec, client, body)
        assert rec.state == "no-credentials"

    with caplog.at_level(logging.INFO, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    dry = [r.getMessage() for r in caplog.records if "dry run" in r.getMessage()]
    assert len(dry) == 1 and "against an empty Node" in dry[0]


# --- ownership is a guard: against the chunking test API server --------------------------------

HOSTILE = {"kubernetes.io/hostname": "jetson-1", "topology.kubernetes.io/zone": "rack-3",
           "team": "vision", "nvidia.com/gpu.mode": "compute",
           "nvidia.com/cuda.driver.major": "540"}


def test_a_hostile_annotation_deletes_nothing_run(tmp_path, nano, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.edit_node("jetson-1", {"metadata": {
                "labels": dict(HOSTILE, **{"edgeagent.io/stale": "1"}),
                "annotations": {ANN: ",".join(sorted(HOSTILE) + ["edgeagent.io/stale"])}}})
            rec, _, client = make(api, nano)

            async def body():
                await until(lambda: len(api.requests_by("GET", "/api/v1/nodes/")) >= 4,
                            what="drift checks")
            await running(rec, client, body)
            labels = api.labels("jetson-1")
            for key, value in HOSTILE.items():
                assert labels[key] == value, key
            assert "edgeagent.io/stale" not in labels       # its own, no longer computed: gone
            owned = api.annotations("jetson-1")[ANN].split(",")
            assert not set(owned) & set(HOSTILE)
            assert len(api.requests_by("PATCH")) == 1

    with caplog.at_level(logging.WARNING, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    warnings = [r.getMessage() for r in caplog.records if "owned-labels" in r.getMessage()]
    assert len(warnings) == 1                                # once, not every reconcile
    assert all(key in warnings[0] for key in HOSTILE)


def test_a_hostile_annotation_deletes_nothing_labels_remove(tmp_path, capsys):
    from edgeagent.app import DEMO_PACKAGE_DIR
    from edgeagent.cli import main
    from tests.peers.kubeapi import ThreadedKubeApi

    server = ThreadedKubeApi(str(tmp_path / "api"))
    try:
        api = server.api
        api.edit_node("jetson-1", {"metadata": {
            "labels": dict(HOSTILE, **{"edgeagent.io/board": "x"}),
            "annotations": {ANN: ",".join(sorted(HOSTILE) + ["edgeagent.io/board"])}}})
        with pytest.raises(SystemExit) as e:
            main(["--root", DEMO_PACKAGE_DIR, "labels", "--remove", "--kubeconfig",
                  api.write_kubeconfig(), "--node-name", "jetson-1"])
        assert e.value.code == 0
        out = capsys.readouterr()
        assert "removed 1 label (edgeagent.io/board)" in out.out
        labels = api.labels("jetson-1")
        for key, value in HOSTILE.items():
            assert labels[key] == value, key
        assert "edgeagent.io/board" not in labels and ANN not in api.annotations("jetson-1")
    finally:
        server.close()


def test_an_administrators_gpu_product_is_neither_overwritten_nor_claimed(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.edit_node("jetson-1", {"metadata": {"labels": {
                "nvidia.com/gpu.product": "Custom-Product"}}})
            rec, _, client = make(api, nano)

            async def body():
                await until(lambda: len(api.requests_by("GET", "/api/v1/nodes/")) >= 3,
                            what="drift checks")
            await running(rec, client, body)
            assert api.labels("jetson-1")["nvidia.com/gpu.product"] == "Custom-Product"
            owned = api.annotations("jetson-1")[ANN].split(",")
            assert "nvidia.com/gpu.product" not in owned
            assert "nvidia.com/gpu.family" in owned             # the rest is labelled
            patch = api.requests_by("PATCH")
            assert len(patch) == 1

    arun(scenario())


@pytest.mark.parametrize("body", ["", "{trunc", '{"kind": "Status"}'])
def test_an_unreadable_node_stops_the_write(tmp_path, nano, body):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.edit_node("jetson-1", {"metadata": {
                "labels": {"edgeagent.io/board": "x"}, "annotations": {ANN: "edgeagent.io/board"}}})
            rec, _, client = make(api, nano)
            api.inject(200, body=body, method="GET", count=3,
                       path="/api/v1/nodes/")

            async def body_():
                await until(lambda: api.requests_by("PATCH"), what="the patch after recovery")
            await running(rec, client, body_)
            patches = api.requests_by("PATCH")
            gets = api.requests_by("GET", "/api/v1/nodes/")
            assert len(gets) >= 4 and gets[0].time < patches[0].time
            # Never planned against "{}": the first PATCH came after a real read.
            assert len([g for g in gets if g.time < patches[0].time]) == 4

    arun(scenario())


def test_problem_while_there_are_no_credentials(nano):
    async def scenario():
        rec, _, client = make(None, nano)
        assert rec.problem() is None

        async def body():
            await until(lambda: rec.state == "no-credentials", what="no credentials")
        await running(rec, client, body)
        assert "no-credentials" in rec.problem()

    arun(scenario())


def test_the_ignored_keys_warning_stays_short(caplog):
    from edgeagent.labels.plan import plan_labels
    from edgeagent.labels.reconciler import warn_ignored

    keys = ["team.example/k%d" % i for i in range(5000)]
    node = {"metadata": {"annotations": {ANN: ",".join(keys)}}}
    with caplog.at_level(logging.WARNING):
        warn_ignored(plan_labels(node, {}, "edgeagent.io/"), "edgeagent.io/")
    [message] = [r.getMessage() for r in caplog.records]
    assert message.endswith("and 4990 more") and len(message) < 600
