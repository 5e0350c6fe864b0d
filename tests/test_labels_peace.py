"""Peace with GPU feature discovery and NFD, against the chunking test API server: GFD's labels
applied by nfd-master (the server's nfd_master_sync), NodeFeature objects under real RBAC, the
"own" setting, and GFD leaving."""

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
from edgeagent.labels.contest import mode_for
from edgeagent.labels.metrics import LabelMetrics
from edgeagent.labels.reconciler import Reconciler
from tests.conftest import dtb_path
from tests.peers.kubeapi import KubeApiServer
from tests.tools import arun, until

ANN = "edgeagent.io/owned-labels"
NFD = "nfd.node.kubernetes.io/feature-labels"
LOGGER = "edgeagent.labels.reconciler"
# What GFD puts in its NodeFeature on a Jetson Nano (k8s-device-plugin's GFD, Tegra mode).
GFD = {"nvidia.com/gfd.timestamp": "1733300000", "nvidia.com/cuda.driver.major": "10",
       "nvidia.com/cuda.driver.minor": "2", "nvidia.com/gpu.count": "1",
       "nvidia.com/gpu.product": "NVIDIA-Tegra-X1", "nvidia.com/gpu.family": "maxwell",
       "nvidia.com/gpu.compute.major": "5", "nvidia.com/gpu.compute.minor": "3",
       "nvidia.com/gpu.machine": "Jetson-Nano-by-GFD", "nvidia.com/gpu.replicas": "1",
       "nvidia.com/gpu.sharing-strategy": "none", "nvidia.com/gpu.mode": "compute"}


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    return discover(HostRoot(str(tmp_path_factory.mktemp("r"))),
                    dtb_path("tegra210-p3450-0000.dtb"))


def desired(nano, **env):
    return compute_labels(nano, load_config(env=env).options.labels).labels


def make(api, inventory, owner="defer", registry=None, **env):
    env = dict(env, EDGEAGENT_LABELS_NVIDIA_GPU_LABELS_OWNER=owner)
    options = load_config(env=env).options.labels
    path = api.write_kubeconfig()
    client = KubeClient(CredentialCache(lambda: load_kubeconfig(path)), timeout=2.0)
    rec = Reconciler(feed=InventoryFeed(inventory),
                     compute=lambda inv: compute_labels(inv, options), prefix="edgeagent.io/",
                     node_name=lambda: "jetson-1", client=client,
                     metrics=LabelMetrics(registry or CollectorRegistry()), drift_seconds=0.05,
                     rng=random.Random(1),
                     gpu_owner=mode_for(options.nvidia_gpu_labels, options.nvidia_gpu_labels_owner))
    for kind in rec.backoffs:
        rec.backoffs[kind] = Backoff(base=0.02, cap=0.05, rng=random.Random(2))
    return rec, client


async def reconciles(rec, client, count):
    """Run the loop until ``count`` more reconciles are done."""
    target = rec.reconciles + count
    task = asyncio.ensure_future(rec.run())
    try:
        await until(lambda: rec.reconciles > target, what="%d reconciles" % count)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def gfd_applied(api):
    """GFD's NodeFeature for jetson-1, applied by nfd-master as on a real cluster."""
    api.add_nodefeature("jetson-1", GFD)
    api.nfd_master_sync("jetson-1")


def gpu(labels):
    return {k: v for k, v in labels.items() if k.startswith("nvidia.com/")}


def messages(caplog, text):
    return [r for r in caplog.records if r.name == LOGGER and text in r.getMessage()]


def test_gfd_labels_are_left_alone_and_the_rest_applied(tmp_path, nano, caplog):
    registry = CollectorRegistry()

    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            gfd_applied(api)
            before = gpu(api.labels("jetson-1"))
            rec, client = make(api, nano, registry=registry)
            await reconciles(rec, client, 5)
            labels = api.labels("jetson-1")
            assert gpu(labels) == before == GFD              # untouched, none added
            mine = desired(nano)
            for key, value in mine.items():
                if key not in NVIDIA_GPU_KEYS:
                    assert labels[key] == value, key          # the agent's other labels
            owned = api.annotations("jetson-1")[ANN].split(",")
            assert not [k for k in owned if k.startswith("nvidia.com/")]
            # The node may not list NodeFeature objects (403): asked once, not every reconcile.
            nf = api.requests_by("GET", "/nodefeatures")
            assert [r.status for r in nf] == [403]
            assert len(api.requests_by("PATCH")) == 1

    with caplog.at_level(logging.INFO, logger=LOGGER):
        arun(scenario())
    deferring = messages(caplog, "defers to them")
    assert len(deferring) == 1                               # once, not every reconcile
    assert "NFD manages nvidia.com/cuda.driver.major" in deferring[0].getMessage()
    assert len(messages(caplog, "may not list NodeFeature objects")) == 1
    deferred = registry.get_sample_value("edgeagent_labels_deferred")
    assert deferred == len([k for k in desired(nano) if k in NVIDIA_GPU_KEYS])


def test_nfd_annotation_listing_the_product_defers(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:     # no NodeFeature API at all: 404
            api.edit_node("jetson-1", {"metadata": {
                "labels": {"nvidia.com/gpu.product": "NVIDIA-Tegra-X1",
                           "feature.node.kubernetes.io/cpu-cpuid.ASIMD": "true"},
                "annotations": {NFD: "cpu-cpuid.ASIMD,nvidia.com/gpu.product"}}})
            rec, client = make(api, nano)
            await reconciles(rec, client, 3)
            labels = api.labels("jetson-1")
            assert gpu(labels) == {"nvidia.com/gpu.product": "NVIDIA-Tegra-X1"}
            assert labels["edgeagent.io/board"]
            assert [r.status for r in api.requests_by("GET", "/nodefeatures")] == [404]

    arun(scenario())


@pytest.mark.parametrize("grant", ["cluster", "group", None])
def test_a_nodefeature_for_the_node_defers_when_readable(tmp_path, nano, grant, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            # GFD made its NodeFeature; nfd-master has not applied it yet.
            api.add_nodefeature("jetson-1", GFD)
            api.add_nodefeature("jetson-2", GFD)             # another node's: not ours
            if grant == "cluster":
                api.grant("system:node:jetson-1", ["list"])
            elif grant == "group":
                api.grant("system:nodes", ["list"])
            rec, client = make(api, nano)
            await reconciles(rec, client, 3)
            labels = api.labels("jetson-1")
            if grant:
                assert gpu(labels) == {}
                assert {r.status for r in api.requests_by("GET", "/nodefeatures")} == {200}
            else:
                # 403 is "unknown", never an error: labelling goes on, GPU labels included.
                for key in NVIDIA_GPU_KEYS & set(desired(nano)):
                    assert labels[key] == desired(nano)[key]
                assert rec.state == "ok"
            assert labels["edgeagent.io/board"]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        arun(scenario())
    if grant:
        found = messages(caplog, "defers to them")
        assert len(found) == 1
        assert "NodeFeature gpu-operator/nvidia-features-for-jetson-1" in found[0].getMessage()


def test_a_namespaced_grant_does_not_list_across_namespaces(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            api.add_nodefeature("jetson-1", GFD)
            api.grant("system:nodes", ["list"], namespace="gpu-operator")
            rec, client = make(api, nano)
            await reconciles(rec, client, 1)
            assert [r.status for r in api.requests_by("GET", "/nodefeatures")] == [403]

    arun(scenario())


def test_own_overwrites_what_nfd_manages_with_one_warning(tmp_path, nano, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            gfd_applied(api)
            api.edit_node("jetson-1", {"metadata": {"labels": {
                "nvidia.com/gpu.present": "hand-set"}}})    # a person's: never overwritten
            rec, client = make(api, nano, owner="own")
            await reconciles(rec, client, 3)
            labels = api.labels("jetson-1")
            mine = desired(nano)
            owned = api.annotations("jetson-1")[ANN].split(",")
            for key in NVIDIA_GPU_KEYS & set(mine):
                if key == "nvidia.com/gpu.present":
                    assert labels[key] == "hand-set" and key not in owned
                else:
                    assert labels[key] == mine[key] and key in owned, key
            assert labels["nvidia.com/gpu.mode"] == "compute"   # not edgeagent's name
            assert labels["nvidia.com/gfd.timestamp"] == GFD["nvidia.com/gfd.timestamp"]
            # nfd-master's next sync puts GFD's machine back; the next drift check its own.
            api.nfd_master_sync("jetson-1")
            assert api.labels("jetson-1")["nvidia.com/gpu.machine"] == "Jetson-Nano-by-GFD"
            rec2, client2 = make(api, nano, owner="own")
            await reconciles(rec2, client2, 1)
            assert api.labels("jetson-1")["nvidia.com/gpu.machine"] == mine[
                "nvidia.com/gpu.machine"]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        arun(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2                 # one per agent run above, not one per reconcile
    assert "overwriting" in warnings[0].getMessage()
    assert "nvidia.com/gpu.product" in warnings[0].getMessage()


def test_gfd_leaving_gives_the_keys_back_without_claiming_foreign_values(tmp_path, nano, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            # edgeagent labelled first, then GFD arrived.
            rec, client = make(api, nano)
            await reconciles(rec, client, 1)
            mine = desired(nano)
            gfd_applied(api)
            rec, client = make(api, nano)
            task = asyncio.ensure_future(rec.run())
            try:
                await until(lambda: rec.reconciles > 2, what="reconciles with GFD")
                labels = api.labels("jetson-1")
                assert labels["nvidia.com/gpu.machine"] == "Jetson-Nano-by-GFD"
                # present: GFD never set it, so it still carries edgeagent's value: still owned
                assert labels["nvidia.com/gpu.present"] == mine["nvidia.com/gpu.present"]
                owned = api.annotations("jetson-1")[ANN].split(",")
                assert "nvidia.com/gpu.present" in owned
                assert "nvidia.com/gpu.machine" not in owned   # NFD's value now: let go
                # GFD goes: its NodeFeature is deleted, nfd-master removes what it listed;
                # an administrator re-sets one key by hand meanwhile.
                api.delete_nodefeature("gpu-operator", "nvidia-features-for-jetson-1")
                api.nfd_master_sync("jetson-1")
                api.edit_node("jetson-1", {"metadata": {"labels": {
                    "nvidia.com/gpu.family": "set-by-hand"}}})
                seen = rec.reconciles
                await until(lambda: rec.reconciles > seen + 2, what="reconciles after GFD")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await client.close()
            labels = api.labels("jetson-1")
            owned = api.annotations("jetson-1")[ANN].split(",")
            for key in NVIDIA_GPU_KEYS & set(mine):
                if key == "nvidia.com/gpu.family":
                    assert labels[key] == "set-by-hand" and key not in owned
                else:
                    assert labels[key] == mine[key] and key in owned, key
            assert NFD not in api.annotations("jetson-1")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        arun(scenario())
    assert len(messages(caplog, "defers to them")) == 1
    assert len(messages(caplog, "any more")) == 1


def test_switched_off_gpu_labels_let_go_of_what_nfd_lists(tmp_path, nano):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            rec, client = make(api, nano)
            await reconciles(rec, client, 1)
            gfd_applied(api)
            asked = len(api.requests_by("GET", "/nodefeatures"))
            rec, client = make(api, nano, EDGEAGENT_LABELS_NVIDIA_GPU_LABELS="false")
            await reconciles(rec, client, 2)
            labels = api.labels("jetson-1")
            # GFD's labels stay (NFD lists them); edgeagent's gpu.present, which GFD lacks, goes.
            assert gpu(labels) == GFD
            assert not [k for k in api.annotations("jetson-1")[ANN].split(",")
                        if k.startswith("nvidia.com/")]
            assert len(api.requests_by("GET", "/nodefeatures")) == asked   # not asked when off

    arun(scenario())


def test_a_forbidden_nodefeature_list_is_asked_again_only_hourly(tmp_path, nano):
    from edgeagent.labels.reconciler import NODEFEATURE_RECHECK_SECONDS

    async def scenario():
        async with KubeApiServer(str(tmp_path), nodefeature_api=True) as api:
            rec, client = make(api, nano)
            now = [1000.0]
            rec.clock = lambda: now[0]
            await reconciles(rec, client, 3)
            assert len(api.requests_by("GET", "/nodefeatures")) == 1
            now[0] += NODEFEATURE_RECHECK_SECONDS + 1
            api.add_nodefeature("jetson-1", GFD)
            api.grant("system:nodes", ["list"])       # someone bound the role meanwhile
            rec2, client2 = make(api, nano)
            rec2.clock, rec2._nodefeatures = rec.clock, rec._nodefeatures
            await reconciles(rec2, client2, 2)
            statuses = [r.status for r in api.requests_by("GET", "/nodefeatures")]
            assert statuses[0] == 403 and set(statuses[1:]) == {200}
            assert rec2.state == "ok"

    arun(scenario())
