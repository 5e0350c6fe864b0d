"""The ResourceSlice publisher against the HTTPS test API server (tests/peers/kubeapi.py): the
Node authorizer's rules for slices, resourceVersion conflicts, outages, and a server with and
without consumable capacity."""

import asyncio
import logging
import random

import pytest
from prometheus_client import CollectorRegistry

from edgeagent.dra.model import Attribute, DraDevice
from edgeagent.dra.publisher import SlicePublisher
from edgeagent.dra.slices import slice_body, slice_name
from edgeagent.kube.client import CredentialCache, KubeClient
from edgeagent.kube.credentials import load_kubeconfig
from edgeagent.kube.errors import KubeError
from tests.peers.kubeapi import KubeApiServer, slice_problems
from tests.tools import arun, until

NODE = "jetson-1"


def client_for(path):
    return KubeClient(CredentialCache(lambda: load_kubeconfig(path)), timeout=5.0)


def gpu(healthy=True, shareable=True, memory="7620Mi"):
    return DraDevice("gpu-0", "gpu", healthy, "" if healthy else "device node /dev/nvgpu missing",
                     ("edgeagent.io/gpu=0",),
                     {"type": Attribute("string", "gpu"),
                      "productName": Attribute("string", "Orin"),
                      "computeCapability": Attribute("version", "8.7.0"),
                      "unifiedMemory": Attribute("bool", True)},
                     {"memory": memory}, shareable)


def dla(n, healthy=True):
    return DraDevice("dla-%d" % n, "dla", healthy, "" if healthy else "gone",
                     ("edgeagent.io/dla=%d" % n,),
                     {"type": Attribute("string", "dla"), "dlaEngine": Attribute("int", n)}, {})


def names(api, node=NODE):
    return [[d["name"] for d in s["spec"].get("devices", [])] for s in api.slices_of(node)]


class Running:
    """A publisher running in the loop for one test."""

    def __init__(self, api, node=NODE, **kw):
        self.client = client_for(api.write_kubeconfig("system:node:" + node))
        self.registry = CollectorRegistry()
        self.publisher = SlicePublisher(self.client, lambda: node, self.registry,
                                        rng=random.Random(1), **kw)
        self.task = None

    async def __aenter__(self):
        self.task = asyncio.ensure_future(self.publisher.run())
        return self.publisher

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


def test_creates_then_updates_on_health_change_and_hotplug(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            running = Running(api)
            async with running as pub:
                pub.update([gpu(), dla(0)])
                await until(lambda: names(api) == [["gpu-0", "dla-0"]], what="the slice")
                first = api.slices_of(NODE)[0]
                assert first["metadata"]["name"] == "jetson-1-edgeagent.io"
                assert first["spec"]["pool"] == {"name": NODE, "generation": 1,
                                                 "resourceSliceCount": 1}
                assert first["spec"]["devices"][0]["attributes"]["computeCapability"] == {
                    "version": "8.7.0"}
                assert slice_problems(first) == []
                # The server stores the slice before the publisher has read its answer.
                await until(lambda: running.registry.get_sample_value(
                    "edgeagent_dra_resource_slices") == 1, what="the gauge")
                # A second publisher on the same registry (a component built again) shares it.
                SlicePublisher(None, lambda: NODE, running.registry).gauge.set(0)
                assert running.registry.get_sample_value("edgeagent_dra_resource_slices") == 0
                running.publisher.gauge.set(1)
                # The DLA fails: it leaves the slice, the generation goes up.
                puts = len(api.requests_by("PUT"))
                lists = len(api.requests_by("GET", "resourceslices"))
                pub.update([gpu(), dla(0, healthy=False)])
                await until(lambda: names(api) == [["gpu-0"]], what="the DLA leaving")
                assert api.slices_of(NODE)[0]["spec"]["pool"]["generation"] == 2
                # One PUT, planned against the slice last written: no list.
                assert len(api.requests_by("PUT")) == puts + 1
                assert len(api.requests_by("GET", "resourceslices")) == lists
                # Hot-plug: a second DLA appears and the first recovers.
                pub.update([gpu(), dla(0), dla(1)])
                await until(lambda: names(api) == [["gpu-0", "dla-0", "dla-1"]],
                            what="the new DLA")
                assert api.slices_of(NODE)[0]["spec"]["pool"]["generation"] == 3
                # The same devices again: nothing is sent.
                requests = len(api.records)
                pub.update([gpu(), dla(0), dla(1)])
                await asyncio.sleep(0.05)
                assert len(api.records) == requests
                assert pub.state == "ok" and pub.problem() is None

    arun(scenario())


def test_deletes_stale_slices_of_its_node_and_leaves_others(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodes=[NODE, "jetson-2"]) as api:
            stale = slice_body(NODE, [dla(0)], 7, False)
            stale["metadata"]["name"] = "old-name-edgeagent.io"
            api.put_slice(stale)
            other = api.put_slice(slice_body("jetson-2", [dla(0)], 1, False))
            foreign = slice_body(NODE, [dla(0)], 1, False)
            foreign["metadata"]["name"] = "other-driver"
            foreign["spec"]["driver"] = "gpu.nvidia.com"
            api.put_slice(foreign)
            async with Running(api) as pub:
                pub.update([gpu()])
                await until(lambda: "old-name-edgeagent.io" not in api.slices, what="deletion")
                await until(lambda: slice_name(NODE) in api.slices, what="creation")
                # The new slice outranks the stale one's generation.
                assert api.slices[slice_name(NODE)]["spec"]["pool"]["generation"] == 8
                assert other["metadata"]["name"] in api.slices
                assert "other-driver" in api.slices

    arun(scenario())


def test_conflict_and_a_slice_deleted_behind_its_back(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with Running(api) as pub:
                pub.update([gpu(), dla(0)])
                await until(lambda: names(api) == [["gpu-0", "dla-0"]], what="the slice")
                # Someone else changes it: the PUT with the old resourceVersion gets a 409,
                # the publisher lists and writes again.
                name = slice_name(NODE)
                api.slices[name]["metadata"]["resourceVersion"] = "9999"
                pub.update([gpu()])
                await until(lambda: names(api) == [["gpu-0"]], what="the update after a 409")
                assert any(r.status == 409 for r in api.records)
                # Deleted by hand: the node's PUT gets 403 (no graph edge to a missing slice),
                # the publisher lists and creates it again.
                del api.slices[name]
                pub.update([gpu(), dla(0)])
                await until(lambda: names(api) == [["gpu-0", "dla-0"]], what="re-creation")
                assert any(r.status == 403 and r.method == "PUT" for r in api.records)
                await until(lambda: pub.state == "ok", what="ok")

    arun(scenario())


def test_outage_backs_off_and_recovers_with_the_latest_devices(tmp_path, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with Running(api) as pub:
                pub.update([gpu()])
                await until(lambda: names(api) == [["gpu-0"]], what="the slice")
                api.inject(status=503, count=3, path="resourceslices")
                pub.update([gpu(), dla(0)])
                await until(lambda: pub.state == "unreachable", what="the outage")
                pub.update([gpu(), dla(0), dla(1)])     # meanwhile a DLA appears
                await until(lambda: names(api) == [["gpu-0", "dla-0", "dla-1"]], timeout=20,
                            what="recovery")
                await until(lambda: pub.state == "ok", what="ok")
                # 429 with Retry-After: waited for, even when an update comes.
                api.inject(status=429, count=1, path="resourceslices", retry_after=1)
                loop = asyncio.get_event_loop()
                pub.update([gpu()])
                begin = loop.time()
                await until(lambda: pub.state == "throttled", what="the 429")
                pub.update([gpu(), dla(1)])
                await until(lambda: names(api) == [["gpu-0", "dla-1"]], what="after Retry-After")
                assert loop.time() - begin >= 0.9

    with caplog.at_level(logging.INFO, logger="edgeagent.dra.publisher"):
        arun(scenario())
    text = caplog.text
    assert text.count("ResourceSlices: unreachable") == 1   # when it begins, not per retry
    assert "published again (was: unreachable)" in text


def test_another_nodes_slice_is_forbidden(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodes=[NODE, "jetson-2"]) as api:
            theirs = api.put_slice(slice_body("jetson-2", [dla(0)], 1, False))
            async with client_for(api.write_kubeconfig("system:node:" + NODE)) as client:
                for call in (client.list_resource_slices("jetson-2", "edgeagent.io"),
                             client.request("GET", "/apis/resource.k8s.io/v1/resourceslices"),
                             client.create_resource_slice(slice_body("jetson-2", [gpu()], 1,
                                                                     True)),
                             client.replace_resource_slice(dict(theirs)),
                             client.delete_resource_slice(theirs["metadata"]["name"])):
                    with pytest.raises(KubeError) as e:
                        await call
                    assert e.value.status == 403, e.value
                assert api.slices_of("jetson-2") == [theirs]
            # A publisher whose --node-name is wrong: a problem that names the fix.
            client = client_for(api.write_kubeconfig("system:node:" + NODE))
            pub = SlicePublisher(client, lambda: "jetson-2", None, rng=random.Random(1))
            task = asyncio.ensure_future(pub.run())
            pub.update([gpu()])
            await until(lambda: pub.problem() is not None, what="the problem")
            assert "spec.nodeName is itself" in pub.problem()
            assert "--node-name" in pub.problem()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()

    arun(scenario())


@pytest.mark.parametrize("enabled", [True, False])
def test_consumable_capacity_on_and_off(tmp_path, caplog, enabled):
    async def scenario():
        async with KubeApiServer(str(tmp_path), consumable_capacity=enabled) as api:
            async with Running(api) as pub:
                pub.update([gpu(), dla(0)])
                await until(lambda: names(api) == [["gpu-0", "dla-0"]], what="the slice")
                await until(lambda: pub.state == "ok", what="ok")
                device = api.slices_of(NODE)[0]["spec"]["devices"][0]
                if enabled:
                    assert device["allowMultipleAllocations"] is True
                    assert device["capacity"]["memory"]["requestPolicy"] == {
                        "default": "1Gi", "validRange": {"min": "256Mi", "max": "7620Mi"}}
                    assert pub.sharing == "consumable"
                else:
                    assert "allowMultipleAllocations" not in device
                    assert device["capacity"]["memory"] == {"value": "7620Mi"}
                    assert pub.sharing == "exclusive"
                # No fight with the server: a health change is one more PUT, not a loop.
                puts = len(api.requests_by("PUT"))
                pub.update([gpu(), dla(0, healthy=False)])
                await until(lambda: names(api) == [["gpu-0"]], what="the update")
                await asyncio.sleep(0.1)
                assert len(api.requests_by("PUT")) == puts + 1

    with caplog.at_level(logging.WARNING, logger="edgeagent.dra.publisher"):
        arun(scenario())
    assert caplog.text.count("consumable capacity") == (0 if enabled else 1)


@pytest.mark.parametrize("versions,expected", [(("v1beta2", "v1beta1"), "v1beta2"),
                                               (("v1beta1",), None), ((), None)])
def test_older_servers(tmp_path, versions, expected):
    async def scenario():
        async with KubeApiServer(str(tmp_path), resource_versions=versions) as api:
            async with Running(api) as pub:
                pub.update([gpu()])
                if expected:
                    await until(lambda: names(api) == [["gpu-0"]], what="the slice")
                    assert pub.version == expected
                    assert api.requests_by("POST", "/v1beta2/resourceslices")
                else:
                    await until(lambda: pub.problem() is not None, what="the problem")
                    assert "1.33" in pub.problem()
                    assert api.slices == {}

    arun(scenario())


def test_remove_all_and_claims_in_the_served_version(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodes=[NODE, "jetson-2"],
                                 resource_versions=("v1beta2",)) as api:
            stale = slice_body(NODE, [dla(0)], 1, False, "v1beta2")
            stale["metadata"]["name"] = "stale"
            api.put_slice(stale)
            api.put_slice(slice_body("jetson-2", [dla(0)], 1, False, "v1beta2"))
            api.add_claim("default", "mine", NODE, ["gpu-0"], uid="uid-1")
            api.add_claim("default", "theirs", "jetson-2", ["gpu-0"])
            async with Running(api) as pub:
                pub.update([gpu()])
                await until(lambda: slice_name(NODE) in api.slices, what="the slice")
                assert "stale" not in api.slices        # the publisher's own clean-up
                assert await pub.remove_all() == 1
                assert api.slices_of(NODE) == []
                assert len(api.slices_of("jetson-2")) == 1
                claim = await pub.client.get_resource_claim("default", "mine")
                assert claim["status"]["allocation"]["devices"]["results"] == [
                    {"request": "gpu", "driver": "edgeagent.io", "pool": NODE,
                     "device": "gpu-0"}]
                assert claim["metadata"]["uid"] == "uid-1"
                assert claim["apiVersion"] == "resource.k8s.io/v1beta2"
                with pytest.raises(KubeError) as e:
                    await pub.client.get_resource_claim("default", "theirs")
                assert e.value.status == 403 and "no relationship" in str(e.value)
                with pytest.raises(KubeError) as e:
                    await pub.client.get_resource_claim("default", "unknown")
                assert e.value.status == 403

    arun(scenario())


def test_dry_run_and_no_client_log_only(tmp_path, caplog):
    async def scenario():
        pub = SlicePublisher(None, lambda: NODE, CollectorRegistry())
        task = asyncio.ensure_future(pub.run())
        pub.update([gpu(), dla(0, healthy=False)])
        await until(lambda: pub.reconciles >= 1, what="a reconcile")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.INFO, logger="edgeagent.dra.publisher"):
        arun(scenario())
    assert "dry run: would publish ResourceSlice jetson-1-edgeagent.io with gpu-0, dla-0 " \
           "(unhealthy: gone)" in caplog.text


def test_claim_lookup_asks_for_versions_only_when_v1_is_not_served(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.add_claim("ns", "c", NODE, ["gpu-0"])
            async with client_for(api.write_kubeconfig("admin", auth="token")) as client:
                with pytest.raises(KubeError) as e:
                    await client.get_resource_claim("ns", "missing")
                assert e.value.status == 404 and e.value.reason == "NotFound"
                claim = await client.get_resource_claim("ns", "c")
                assert claim["apiVersion"] == "resource.k8s.io/v1"
            assert len(api.requests_by("GET", "/apis/resource.k8s.io/v1/")) == 2
            assert [r.path for r in api.records if r.path == "/apis/resource.k8s.io"] == []
        async with KubeApiServer(str(tmp_path / "old"), resource_versions=("v1beta1",)) as api:
            api.add_claim("ns", "c", NODE, ["gpu-0"])
            async with client_for(api.write_kubeconfig("system:node:" + NODE)) as client:
                claim = await client.get_resource_claim("ns", "c")
                assert claim["apiVersion"] == "resource.k8s.io/v1beta1"
                await client.get_resource_claim("ns", "c")
            # One discovery, then the served version straight away.
            assert len([r for r in api.records if r.path == "/apis/resource.k8s.io"]) == 1
            assert len(api.requests_by("GET", "/v1/namespaces")) == 1

    arun(scenario())


def test_kubectl_sees_the_published_slice_and_can_delete_it(tmp_path):
    """kubectl as a real client of the subprocess server: what the agent published reads back,
    the node identity lists only with its field selector, and the command uninstall prints
    for later works."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.tools import require_tool

    kubectl = require_tool("kubectl")
    folder = str(tmp_path / "srv")
    proc = subprocess.Popen([sys.executable, "-m", "tests.peers.kubeapi", "--dir", folder,
                             "--node", NODE, "--node", "jetson-2"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ctl(who, *args):
        return subprocess.run([kubectl, "--kubeconfig", os.path.join(folder, "kubeconfig-" + who)]
                              + list(args), capture_output=True, text=True, timeout=60)

    try:
        line = proc.stdout.readline()
        assert line.startswith("READY https://127.0.0.1:"), proc.stderr.read()

        async def publish():
            async with client_for(os.path.join(folder, "kubeconfig-" + NODE)) as client:
                pub = SlicePublisher(client, lambda: NODE, None)
                assert await pub.reconcile_once([gpu(), dla(0), dla(1, healthy=False)]) == \
                    "created"

        arun(publish())
        got = json.loads(ctl("admin", "get", "resourceslices", "-o", "json").stdout)
        (obj,) = got["items"]
        assert obj["metadata"]["name"] == "jetson-1-edgeagent.io"
        assert [d["name"] for d in obj["spec"]["devices"]] == ["gpu-0", "dla-0"]
        assert obj["spec"]["devices"][0]["capacity"]["memory"]["value"] == "7620Mi"
        res = ctl(NODE, "get", "resourceslices", "-o", "name")
        assert res.returncode != 0 and "with nodeName field selector" in res.stderr
        res = ctl(NODE, "get", "resourceslices", "-o", "name", "--field-selector",
                  "spec.nodeName=" + NODE)
        assert res.stdout.split() == ["resourceslice.resource.k8s.io/jetson-1-edgeagent.io"]
        res = ctl("admin", "delete", "resourceslices", "--field-selector",
                  "spec.nodeName=%s,spec.driver=edgeagent.io" % NODE)
        assert res.returncode == 0, res.stderr
        assert json.loads(ctl("admin", "get", "resourceslices", "-o", "json").stdout)[
            "items"] == []
    finally:
        proc.terminate()
        proc.wait(10)


def test_refresh_brings_back_what_the_kubelet_wiped(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodes=[NODE, "jetson-2"]) as api:
            api.put_slice(slice_body("jetson-2", [dla(0)], 1, False))
            async with Running(api, recheck_seconds=0.3) as pub:
                pub.update([gpu()])
                await until(lambda: names(api) == [["gpu-0"]], what="the slice")
                # What a starting kubelet does: deletecollection with its node's selector.
                async with client_for(api.write_kubeconfig("system:node:" + NODE)) as kubelet:
                    with pytest.raises(KubeError) as e:      # only its own node's
                        await kubelet.request("DELETE", "/apis/resource.k8s.io/v1/"
                                              "resourceslices")
                    assert e.value.status == 403
                    await kubelet.request("DELETE", "/apis/resource.k8s.io/v1/resourceslices"
                                          "?fieldSelector=spec.nodeName%3D" + NODE)
                assert api.slices_of(NODE) == [] and len(api.slices_of("jetson-2")) == 1
                pub.refresh()            # the plugin registered again
                await until(lambda: names(api) == [["gpu-0"]], timeout=1.0,
                            what="the slice back within a second")
                # A wipe that races with the registration: the re-check finds it, unasked; and
                # a later one too (a kubelet that could not read its Node yet wipes late).
                del api.slices[slice_name(NODE)]
                await until(lambda: names(api) == [["gpu-0"]], timeout=2.0, what="re-check")
                del api.slices[slice_name(NODE)]
                await until(lambda: names(api) == [["gpu-0"]], timeout=3.0,
                            what="the second re-check, twice as late")

    arun(scenario())


def test_a_401_rereads_the_credentials_and_a_lasting_one_is_a_problem(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with Running(api) as pub:
                pub.update([gpu()])
                await until(lambda: names(api) == [["gpu-0"]], what="the slice")
                loads = pub.client.credentials.loads
                api.inject(status=401, count=1, path="resourceslices")
                pub.update([gpu(), dla(1)])
                await until(lambda: names(api) == [["gpu-0", "dla-1"]], what="the update")
                assert pub.client.credentials.loads == loads + 1     # re-read, then retried
                await until(lambda: pub.state == "ok" and pub.problem() is None, what="ok")
                api.inject(status=401, count=2, path="resourceslices")
                pub.update([gpu(), dla(0)])
                await until(lambda: pub.problem() is not None, what="the problem")
                assert "unauthorized" in pub.problem()

    arun(scenario())
