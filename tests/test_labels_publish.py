"""labels.publish = "nodefeature": the labels as edgeagent's NFD NodeFeature object, which
nfd-master applies. Pure planning, then the reconciler against the test API server's
NodeFeature API under RBAC, and the command's uninstall."""

import asyncio
import logging
import random

import pytest
from prometheus_client import CollectorRegistry

from edgeagent.backoff import Backoff
from edgeagent.config import load_config
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from edgeagent.kube.client import CredentialCache, KubeClient
from edgeagent.kube.credentials import load_kubeconfig
from edgeagent.labels.compute import NVIDIA_GPU_KEYS, compute_labels
from edgeagent.labels.contest import NF_FOUND, NodeFeatures
from edgeagent.labels.metrics import LabelMetrics
from edgeagent.labels.publish import nodefeature_name, others, plan_handover, plan_nodefeature
from edgeagent.labels.reconciler import Reconciler
from tests.conftest import dtb_path
from tests.peers.kubeapi import KubeApiServer, ThreadedKubeApi
from tests.test_labels_peace import reconciles
from tests.tools import arun

NS = "node-feature-discovery"
ANN = "edgeagent.io/owned-labels"
NODE_NAME = "nfd.node.kubernetes.io/node-name"
LABELS = {"edgeagent.io/board": "nano", "nvidia.com/gpu.product": "NVIDIA-Tegra-X1"}


# --- pure --------------------------------------------------------------------------------------

def test_nodefeature_name_is_bounded_and_stable():
    assert nodefeature_name("jetson-1") == "edgeagent-features-for-jetson-1"
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    assert len(nodefeature_name(long_a)) <= 253
    assert nodefeature_name(long_a) != nodefeature_name(long_b)
    assert nodefeature_name(long_a) == nodefeature_name(long_a)


def test_plan_nodefeature_creates_then_leaves_then_replaces_keeping_what_others_set():
    body = plan_nodefeature(None, "jetson-1", NS, LABELS)
    assert body["metadata"] == {"name": "edgeagent-features-for-jetson-1", "namespace": NS,
                                "labels": {NODE_NAME: "jetson-1"}}
    assert body["spec"]["labels"] == LABELS and "resourceVersion" not in body["metadata"]
    existing = dict(body, metadata=dict(body["metadata"], resourceVersion="42",
                                        annotations={"team": "x"},
                                        labels={NODE_NAME: "jetson-1", "app": "edge"}))
    assert plan_nodefeature(existing, "jetson-1", NS, LABELS) is None
    again = plan_nodefeature(existing, "jetson-1", NS, {"edgeagent.io/board": "orin"})
    assert again["metadata"]["resourceVersion"] == "42"
    assert again["metadata"]["annotations"] == {"team": "x"}
    assert again["metadata"]["labels"] == {NODE_NAME: "jetson-1", "app": "edge"}
    assert again["spec"]["labels"] == {"edgeagent.io/board": "orin"}
    # someone pointed it at another node: put it back
    moved = dict(existing, metadata=dict(existing["metadata"], labels={NODE_NAME: "jetson-9"}))
    assert plan_nodefeature(moved, "jetson-1", NS, LABELS)["metadata"]["labels"] == {
        NODE_NAME: "jetson-1"}


def test_others_drops_only_edgeagents_own_object():
    found = NodeFeatures(NF_FOUND, (("%s/edgeagent-features-for-n" % NS, ("nvidia.com/gpu.x",)),
                                    ("gpu-operator/nvidia-features-for-n", ("nvidia.com/gpu.x",))))
    assert [o[0] for o in others(found, NS, "n").objects] == [
        "gpu-operator/nvidia-features-for-n"]


def test_handover_removes_stale_owned_labels_and_the_annotation_only():
    node = {"metadata": {"resourceVersion": "5", "labels": dict(
        LABELS, **{"edgeagent.io/old": "1", "team": "t"}),
        "annotations": {ANN: "edgeagent.io/board,edgeagent.io/old,nvidia.com/gpu.product"}}}
    plan = plan_handover(node, LABELS, "edgeagent.io/")
    assert plan.patch == {"metadata": {"resourceVersion": "5",
                                       "labels": {"edgeagent.io/old": None},
                                       "annotations": {ANN: None}}}
    assert plan_handover({"metadata": {"labels": LABELS}}, LABELS, "edgeagent.io/").patch is None


# --- against the test API server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    return discover(HostRoot(str(tmp_path_factory.mktemp("r"))),
                    dtb_path("tegra210-p3450-0000.dtb"))


def make(api, inventory, metrics=None):
    options = load_config(env={"EDGEAGENT_LABELS_PUBLISH": "nodefeature"}).options.labels
    path = api.write_kubeconfig()
    client = KubeClient(CredentialCache(lambda: load_kubeconfig(path)), timeout=2.0)
    rec = Reconciler(feed=InventoryFeed(inventory),
                     compute=lambda inv: compute_labels(inv, options), prefix="edgeagent.io/",
                     node_name=lambda: "jetson-1", client=client,
                     metrics=metrics or LabelMetrics(CollectorRegistry()), drift_seconds=0.05,
                     rng=random.Random(1), publish=options.publish,
                     nodefeature_namespace=options.nodefeature_namespace)
    for kind in rec.backoffs:
        rec.backoffs[kind] = Backoff(base=0.02, cap=0.05, rng=random.Random(2))
    return rec, client


def writer_role(api, namespace=NS):
    api.grant("system:nodes", ["get", "create", "update"], namespace=namespace)


def desired(nano):
    return compute_labels(nano, load_config(env={}).options.labels).labels


def test_without_rbac_the_node_is_not_patched_and_the_problem_says_what_to_grant(tmp_path,
                                                                                 nano, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            rec, client = make(api, nano)
            await reconciles(rec, client, 3)
            assert rec.state == "nodefeature-forbidden"
            assert "create, get and update on nodefeatures" in rec.problem()
            assert not api.requests_by("PATCH") and not api.nodefeatures

    with caplog.at_level(logging.WARNING, logger="edgeagent.labels.reconciler"):
        arun(scenario())
    assert len([r for r in caplog.records if "nodefeature-forbidden" in r.getMessage()]) == 1


def test_publishes_once_then_nfd_master_applies_and_nothing_more_is_written(tmp_path, nano):
    registry = CollectorRegistry()
    metrics = LabelMetrics(registry)

    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            writer_role(api)
            rec, client = make(api, nano, metrics)
            await reconciles(rec, client, 2)
            obj = api.nodefeatures[(NS, "edgeagent-features-for-jetson-1")]
            assert obj["spec"]["labels"] == desired(nano)      # GPU labels included
            assert obj["metadata"]["labels"] == {NODE_NAME: "jetson-1"}
            api.nfd_master_sync("jetson-1")
            rec, client = make(api, nano, metrics)
            await reconciles(rec, client, 3)
            # NFD's annotation now lists edgeagent's own GPU labels: no deferring to itself.
            assert rec.state == "ok"
            assert len(api.requests_by("POST", "/nodefeatures")) == 1
            assert not api.requests_by("PUT") and not api.requests_by("PATCH")
            labels = api.labels("jetson-1")
            for key, value in desired(nano).items():
                assert labels[key] == value
        assert registry.get_sample_value("edgeagent_labels_deferred") == 0

    arun(scenario())


def test_a_node_labelled_before_is_handed_over(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            api.edit_node("jetson-1", {"metadata": {
                "labels": {"edgeagent.io/board": "old", "edgeagent.io/retired": "1"},
                "annotations": {ANN: "edgeagent.io/board,edgeagent.io/retired"}}})
            writer_role(api)
            rec, client = make(api, nano)
            await reconciles(rec, client, 2)
            labels = api.labels("jetson-1")
            assert "edgeagent.io/retired" not in labels           # no longer computed: gone
            assert labels["edgeagent.io/board"] == "old"          # nfd-master's to set now
            assert ANN not in api.annotations("jetson-1")
            api.nfd_master_sync("jetson-1")
            assert api.labels("jetson-1")["edgeagent.io/board"] == desired(nano)[
                "edgeagent.io/board"]

    arun(scenario())


def test_gfd_nodefeature_means_no_gpu_labels_in_edgeagents(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            writer_role(api)
            api.grant("system:nodes", ["list"])
            api.add_nodefeature("jetson-1", {"nvidia.com/gpu.product": "NVIDIA-Tegra-X1",
                                             "nvidia.com/gfd.timestamp": "1"})
            rec, client = make(api, nano)
            await reconciles(rec, client, 2)
            mine = api.nodefeatures[(NS, "edgeagent-features-for-jetson-1")]["spec"]["labels"]
            assert not set(mine) & NVIDIA_GPU_KEYS
            assert mine["edgeagent.io/board"] == desired(nano)["edgeagent.io/board"]

    arun(scenario())


def test_a_concurrent_update_is_a_409_then_read_again(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            writer_role(api)
            api.add_nodefeature("jetson-1", {"edgeagent.io/board": "stale"}, namespace=NS,
                                name="edgeagent-features-for-jetson-1")
            api.inject(409, method="PUT", count=2)
            rec, client = make(api, nano)
            await reconciles(rec, client, 2)
            assert [r.status for r in api.requests_by("PUT")] == [409, 409, 200]
            assert api.nodefeatures[(NS, "edgeagent-features-for-jetson-1")]["spec"][
                "labels"] == desired(nano)

    arun(scenario())


def test_remove_deletes_the_nodefeature(tmp_path, capsys):
    from edgeagent.app import DEMO_PACKAGE_DIR
    from edgeagent.cli import main

    server = ThreadedKubeApi(str(tmp_path / "api"), nodefeature_api=True)
    try:
        api = server.api
        writer_role(api)
        api.grant("system:nodes", ["delete"], namespace=NS)
        base = ["--root", DEMO_PACKAGE_DIR, "labels", "--kubeconfig", api.write_kubeconfig(),
                "--node-name", "jetson-1"]
        env = {"EDGEAGENT_LABELS_PUBLISH": "nodefeature"}
        for argv in (["--apply"], ["--remove"]):
            with pytest.MonkeyPatch.context() as m:
                for k, v in env.items():
                    m.setenv(k, v)
                with pytest.raises(SystemExit) as e:
                    main(base + argv)
            assert e.value.code == 0
            out = capsys.readouterr().out
            if argv == ["--apply"]:
                assert "Wrote NodeFeature %s/edgeagent-features-for-jetson-1" % NS in out
                assert (NS, "edgeagent-features-for-jetson-1") in api.nodefeatures
        assert "deleted (nfd-master removes its labels)" in out
        assert not api.nodefeatures
    finally:
        server.close()
