"""The whole agent in DRA mode, as a process, between its two real peers: the grpcio kubelet
(tests/peers/drakubelet.py) that finds it through the plugin-registration folder, and the HTTPS
test API server (tests/peers/kubeapi.py) with the Node authorizer's rules for ResourceSlices and
ResourceClaims. One agent per module: the scenarios run in order on it, as a node lives."""

import os
import subprocess

import pytest

from tests.draharness import AgentProcess
from tests.peers.drakubelet import DraKubelet
from tests.peers.hosts import FixtureHost
from tests.peers.kubeapi import ThreadedKubeApi
from tests.tools import require_tool, wait_until

NODE = "jetson-1"
DRIVER = "edgeagent.io"
CHECKPOINT = "/var/lib/kubelet/plugins/edgeagent.io/checkpoint.json"


@pytest.fixture(scope="module")
def node():
    host = FixtureHost("agx-xavier")
    server = ThreadedKubeApi(host.root + "-api")
    api = server.api
    kubeconfig = api.write_kubeconfig("system:node:" + NODE)
    kubelet = DraKubelet(host.root).start()
    agent = AgentProcess(host, kubeconfig).start()
    try:
        yield host, api, kubelet, agent
    finally:
        agent.stop()
        kubelet.stop()
        server.close()
        host.cleanup()


def slice_devices(api):
    out = {}
    for s in api.slices_of(NODE):
        if s["spec"]["driver"] == DRIVER:
            for d in s["spec"].get("devices", []):
                out[d["name"]] = d
    return out


def claim_reads(api, name):
    return [r for r in api.requests_by("GET") if r.path.endswith("/resourceclaims/" + name)]


def prepared_ids(response):
    assert response.error == "", response.error
    return sorted(i for d in response.devices for i in d.cdi_device_ids)


def test_registers_and_publishes_the_pool(node):
    host, api, kubelet, agent = node
    plugin = kubelet.wait_plugin(DRIVER, timeout=30)
    assert plugin.service == "v1.DRAPlugin"
    wait_until(lambda: set(slice_devices(api)) == {"gpu-0", "dla-0", "dla-1"}, 30,
               "the node's slice with the GPU and both NVDLA engines:\n" + agent.text())
    s = api.slices_of(NODE)[0]
    assert s["spec"]["nodeName"] == NODE and s["spec"]["pool"]["name"] == NODE
    gpu = slice_devices(api)["gpu-0"]
    attrs = gpu["attributes"]
    assert attrs["type"] == {"string": "gpu"}
    assert attrs["computeCapability"] == {"version": "7.2.0"}       # Volta, AGX Xavier
    assert attrs["l4tVersion"] == {"version": "35.4.1"}
    assert attrs["unifiedMemory"] == {"bool": True}
    assert "memory" in gpu["capacity"]


def test_prepares_a_claim_of_a_pod_on_this_node_once(node):
    host, api, kubelet, agent = node
    uid = "0b9a1d3e-0001-4000-8000-000000000001"
    api.add_claim("default", "train", NODE, ["gpu-0"], uid=uid)
    got = kubelet.prepare(DRIVER, [("default", "train", uid)])
    assert prepared_ids(got[uid]) == ["edgeagent.io/gpu=0"]
    again = kubelet.prepare(DRIVER, [("default", "train", uid)])
    assert prepared_ids(again[uid]) == ["edgeagent.io/gpu=0"]
    assert len(claim_reads(api, "train")) == 1          # the second answer is the checkpoint's
    checkpoint = open(host.path(CHECKPOINT)).read()
    assert uid in checkpoint


def test_a_claim_of_another_node_and_an_outage_are_that_claims_errors(node):
    host, api, kubelet, agent = node
    other = "0b9a1d3e-0002-4000-8000-000000000002"
    api.add_claim("default", "elsewhere", "jetson-2", ["gpu-0"], uid=other)
    mine = "0b9a1d3e-0003-4000-8000-000000000003"
    api.add_claim("default", "dla-job", NODE, ["dla-1"], request="dla", uid=mine)
    got = kubelet.prepare(DRIVER, [("default", "elsewhere", other), ("default", "dla-job", mine)])
    assert got[other].error and not got[other].devices
    assert prepared_ids(got[mine]) == ["edgeagent.io/dla=1"]

    late = "0b9a1d3e-0004-4000-8000-000000000004"
    api.add_claim("default", "late", NODE, ["gpu-0"], uid=late)
    api.inject(503, count=50, method="GET", path="/resourceclaims/late")
    got = kubelet.prepare(DRIVER, [("default", "late", late)])
    assert got[late].error and not got[late].devices
    api.faults.clear()
    got = kubelet.prepare(DRIVER, [("default", "late", late)])     # the kubelet retries
    assert prepared_ids(got[late]) == ["edgeagent.io/gpu=0"]


def health(message, device="gpu-0"):
    return message.get((NODE, device), ("absent",))[0]


def sample(text, name, **labels):
    want = "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in sorted(labels.items()))) \
        if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def test_metrics_count_the_claims_and_pass_promtool(node):
    host, api, kubelet, agent = node
    text = agent.metrics()
    result = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout.decode()
    text = text.decode()
    assert sample(text, "edgeagent_dra_resource_slices") == 1
    assert sample(text, "edgeagent_dra_prepares_total", result="ok") >= 4
    assert sample(text, "edgeagent_dra_prepares_total", result="error") == 2
    assert sample(text, "edgeagent_dra_prepared_claims") == 3
    assert sample(text, "edgeagent_dra_node_prepare_seconds_count") >= 5


def test_health_reaches_the_stream_and_the_slice(node):
    host, api, kubelet, agent = node
    plugin = kubelet.wait_plugin(DRIVER)
    watch = plugin.health
    host.remove_device("/dev/nvhost-ctrl-gpu")
    try:
        watch.wait_for(lambda h: health(h) == "UNHEALTHY", timeout=5)
        wait_until(lambda: "gpu-0" not in slice_devices(api), 5, "the GPU leaving the slice")
    finally:
        host.restore_device("/dev/nvhost-ctrl-gpu")
    watch.wait_for(lambda h: health(h) == "HEALTHY", timeout=5)
    wait_until(lambda: "gpu-0" in slice_devices(api), 5, "the GPU back in the slice")


def test_kubelet_restart_wipes_slices_and_the_agent_republishes(node):
    host, api, kubelet, agent = node
    before = kubelet.registrations
    kubelet.restart()
    for s in api.slices_of(NODE):         # what a starting kubelet does to its node's slices
        api.slices.pop(s["metadata"]["name"])
    kubelet.wait_plugin(DRIVER, registrations=before + 1, timeout=30)
    wait_until(lambda: set(slice_devices(api)) == {"gpu-0", "dla-0", "dla-1"}, 10,
               "the slice published again after the kubelet's restart")


def test_agent_restart_keeps_prepared_claims(node):
    host, api, kubelet, agent = node
    uid = "0b9a1d3e-0001-4000-8000-000000000001"           # prepared above
    reads = len(claim_reads(api, "train"))
    before = kubelet.registrations
    agent.stop()
    agent.start()
    kubelet.wait_plugin(DRIVER, registrations=before + 1, timeout=60)
    got = kubelet.prepare(DRIVER, [("default", "train", uid)])
    assert prepared_ids(got[uid]) == ["edgeagent.io/gpu=0"]
    assert len(claim_reads(api, "train")) == reads        # from the checkpoint, no API read
    assert kubelet.unprepare(DRIVER, [("default", "train", uid)]) == {uid: ""}
    assert uid not in open(host.path(CHECKPOINT)).read()
    assert "Traceback" not in agent.text()
