"""The DRA driver against a kubelet made with grpcio (tests/peers/drakubelet.py): the plugin
watcher finds the registration socket, the DRA socket serves Prepare/Unprepare and the health
stream, over real unix sockets, through kubelet and agent restarts and API outages."""

import os
import shutil
import socket
import stat
import time

import grpc
import pytest

from edgeagent.kube.errors import KubeError, KubeNetworkError
from tests.draharness import DRIVER, ENDPOINT, NODE, Claims, DraAgent, claim
from edgeagent.dra.model import DraDevice
from edgeagent.dra.server import HealthState
from tests.peers.drakubelet import (DraKubelet, dra_v1beta1, dra_v1beta1_grpc, health_v1alpha1,
                                   health_v1alpha1_grpc)
from tests.peers.hosts import short_root
from tests.tools import wait_until

REG_SOCKET = "/var/lib/kubelet/plugins_registry/edgeagent.io-reg.sock"
CHECKPOINT = "/var/lib/kubelet/plugins/edgeagent.io/checkpoint.json"
ALL_HEALTHY = {(NODE, "gpu-0"): "HEALTHY", (NODE, "dla-0"): "HEALTHY",
               (NODE, "dla-1"): "HEALTHY"}


@pytest.fixture
def root():
    path = short_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(root, cleanup, claims=None):
    claims = claims if claims is not None else Claims()
    kubelet = DraKubelet(root).start()
    cleanup.append(kubelet)
    agent = DraAgent(root, claims)
    cleanup.append(agent)
    agent.start()
    return agent, kubelet, claims


def health(message):
    return {k: v[0] for k, v in message.items()}


def test_registers_serves_both_versions_and_prepares_once(root, cleanup):
    agent, kubelet, claims = run(root, cleanup)
    plugin = kubelet.wait_plugin(DRIVER)
    assert plugin.service == "v1.DRAPlugin"             # the newest offered
    assert plugin.endpoint == ENDPOINT                  # the host path, without --root
    for host_path in (ENDPOINT, REG_SOCKET):
        mode = os.stat(agent.path(host_path)).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    wait_until(lambda: agent.component.registration.registered, what="registration notified")
    assert agent.component.problem() is None
    first = plugin.health.wait_for(lambda m: health(m) == ALL_HEALTHY)
    assert plugin.health.version == "v1"
    _, _, updated, timeout = first[(NODE, "gpu-0")]
    assert abs(updated - time.time()) < 5 and timeout >= 30

    claims.put(claim("ml", "gpu", "uid-1", ("gpu", "gpu-0"), ("dla", "dla-1")))
    answer = kubelet.prepare(DRIVER, [("ml", "gpu", "uid-1")])["uid-1"]
    assert answer.error == ""
    assert [(list(d.request_names), d.pool_name, d.device_name, list(d.cdi_device_ids))
            for d in answer.devices] == [
        (["gpu"], NODE, "gpu-0", ["edgeagent.io/gpu=0"]),
        (["dla"], NODE, "dla-1", ["edgeagent.io/dla=1"])]
    assert not answer.devices[0].HasField("share_id")
    again = kubelet.prepare(DRIVER, [("ml", "gpu", "uid-1")])["uid-1"]
    assert again == answer and claims.reads == [("ml", "gpu")]   # no second API call

    # the v1beta1 service answers the same from the same state (no share_id there)
    channel = grpc.insecure_channel("unix:" + agent.path(ENDPOINT))
    try:
        stub = dra_v1beta1_grpc.DRAPluginStub(channel)
        old = stub.NodePrepareResources(dra_v1beta1.NodePrepareResourcesRequest(claims=[
            dra_v1beta1.Claim(namespace="ml", name="gpu", uid="uid-1")]), timeout=5)
        assert [d.device_name for d in old.claims["uid-1"].devices] == ["gpu-0", "dla-1"]
        # the kubelets of 1.34 read health through v1alpha1
        stream = health_v1alpha1_grpc.DRAResourceHealthStub(channel).NodeWatchResources(
            health_v1alpha1.NodeWatchResourcesRequest(), timeout=5)
        got = next(stream)
        assert sorted((d.device.device_name, d.health) for d in got.devices) == [
            ("dla-0", health_v1alpha1.HEALTHY), ("dla-1", health_v1alpha1.HEALTHY),
            ("gpu-0", health_v1alpha1.HEALTHY)]
        stream.cancel()
    finally:
        channel.close()

    assert kubelet.unprepare(DRIVER, [("ml", "gpu", "uid-1"), ("ml", "gone", "uid-9")]) == {
        "uid-1": "", "uid-9": ""}                      # an unknown claim is done
    text = agent.metrics()
    assert 'edgeagent_dra_prepares_total{result="ok"} 3.0' in text
    assert 'edgeagent_dra_unprepares_total{result="ok"} 2.0' in text
    assert "edgeagent_dra_prepared_claims 0.0" in text
    assert "edgeagent_dra_node_prepare_seconds_count 3.0" in text
    assert agent.published[-1][0].name == "dla-0"       # the publisher got the devices


def test_kubelet_restart_and_a_deleted_socket_register_again(root, cleanup):
    agent, kubelet, claims = run(root, cleanup)
    kubelet.wait_plugin(DRIVER)
    claims.put(claim("ml", "c", "uid-1", ("gpu", "gpu-0")))
    assert kubelet.prepare(DRIVER, [("ml", "c", "uid-1")])["uid-1"].error == ""

    kubelet.restart()
    plugin = kubelet.wait_plugin(DRIVER, registrations=2)
    plugin.health.wait_for(lambda m: health(m) == ALL_HEALTHY)
    claims.outage = KubeNetworkError("connection refused")
    assert kubelet.prepare(DRIVER, [("ml", "c", "uid-1")])["uid-1"].error == ""  # cached

    os.unlink(agent.path(REG_SOCKET))                  # somebody removes it
    kubelet.wait_plugin(DRIVER, registrations=3)
    assert agent.component.problem() is None
    os.unlink(agent.path(ENDPOINT))                    # and the DRA socket
    wait_until(lambda: os.path.exists(agent.path(ENDPOINT)), what="DRA socket re-created")
    wait_until(lambda: kubelet.prepare(DRIVER, [("ml", "c", "uid-1")], timeout=2)[
        "uid-1"].error == "", what="prepare through the new socket")


def test_a_second_agent_on_the_host_leaves_the_first_ones_sockets_alone(root, cleanup):
    agent, kubelet, claims = run(root, cleanup)
    kubelet.wait_plugin(DRIVER)
    second = DraAgent(root, claims)
    cleanup.append(second)
    second.start()
    assert "served by another process" in second.component.problem()
    claims.put(claim("ml", "c", "uid-1", ("gpu", "gpu-0")))
    assert kubelet.prepare(DRIVER, [("ml", "c", "uid-1")])["uid-1"].error == ""
    assert kubelet.registrations == 1


def test_agent_restart_keeps_prepared_claims_in_the_checkpoint(root, cleanup):
    agent, kubelet, claims = run(root, cleanup)
    kubelet.wait_plugin(DRIVER)
    claims.put(claim("ml", "c", "uid-1", ("gpu", "gpu-0")))
    first = kubelet.prepare(DRIVER, [("ml", "c", "uid-1")])["uid-1"]
    agent.stop()
    assert not os.path.exists(agent.path(ENDPOINT))    # removed on the way out
    kubelet.wait_gone(DRIVER)
    claims.outage = KubeNetworkError("API server down")
    for host_path in (ENDPOINT, REG_SOCKET):           # left by a killed agent: nobody serves
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(agent.path(host_path))
        stale.close()
    second = DraAgent(root, claims)
    cleanup.append(second)
    second.start()
    kubelet.wait_plugin(DRIVER, registrations=2)
    assert kubelet.prepare(DRIVER, [("ml", "c", "uid-1")])["uid-1"] == first
    assert claims.reads == [("ml", "c")]
    assert "edgeagent_dra_prepared_claims 1.0" in second.metrics()
    assert kubelet.unprepare(DRIVER, [("ml", "c", "uid-1")]) == {"uid-1": ""}
    with open(second.path(CHECKPOINT)) as f:
        assert '"claims": []' in f.read()


def test_a_component_restarted_by_the_supervisor_prepares_new_claims(root, cleanup):
    agent, kubelet, claims = run(root, cleanup)
    kubelet.wait_plugin(DRIVER)
    agent.stop()
    agent.start()                                      # the same object, run() again
    kubelet.wait_plugin(DRIVER, registrations=2)
    claims.put(claim("ml", "c", "uid-1", ("gpu", "gpu-0")))
    assert kubelet.prepare(DRIVER, [("ml", "c", "uid-1")])["uid-1"].error == ""


def test_per_claim_errors_leave_the_other_claims_prepared(root, cleanup):
    agent, kubelet, claims = run(root, cleanup)
    kubelet.wait_plugin(DRIVER)
    claims.put(claim("ml", "ok", "uid-ok", ("gpu", "gpu-0")))
    claims.put(claim("ml", "elsewhere", "uid-x", ("gpu", "gpu-0"), pool="other-node"))
    claims.put(claim("ml", "recreated", "uid-new", ("gpu", "gpu-0")))
    claims.table[("ml", "forbidden")] = KubeError("GET: 403 Forbidden", 403, "Forbidden")
    answers = kubelet.prepare(DRIVER, [("ml", "ok", "uid-ok"), ("ml", "elsewhere", "uid-x"),
                                       ("ml", "recreated", "uid-old"),
                                       ("ml", "forbidden", "uid-f"), ("ml", "absent", "uid-a")])
    assert answers["uid-ok"].error == "" and len(answers["uid-ok"].devices) == 1
    assert "other-node" in answers["uid-x"].error and "not to this node" in answers[
        "uid-x"].error
    assert "re-created" in answers["uid-old"].error
    assert "Node authorizer" in answers["uid-f"].error
    assert "not in the API server" in answers["uid-a"].error
    claims.outage = KubeNetworkError("GET: connection reset")
    down = kubelet.prepare(DRIVER, [("ml", "new", "uid-n"), ("ml", "ok", "uid-ok")])
    assert "kubelet retries" in down["uid-n"].error and down["uid-ok"].error == ""
    assert 'edgeagent_dra_prepares_total{result="error"} 5.0' in agent.metrics()


def test_health_flip_reaches_the_stream_within_a_second_both_ways(root, cleanup):
    agent, kubelet, _ = run(root, cleanup)
    plugin = kubelet.wait_plugin(DRIVER)
    plugin.health.wait_for(lambda m: health(m) == ALL_HEALTHY)
    node = os.path.join(root, "dev/nvhost-gpu")
    os.rename(node, node + ".away")
    start = time.monotonic()
    down = plugin.health.wait_for(lambda m: health(m)[(NODE, "gpu-0")] == "UNHEALTHY", 1.0)
    assert time.monotonic() - start < 1.0
    assert down[(NODE, "gpu-0")][1]                      # the reason, as the message
    assert health(down)[(NODE, "dla-0")] == "HEALTHY"
    os.rename(node + ".away", node)
    plugin.health.wait_for(lambda m: health(m) == ALL_HEALTHY, 1.0)


@pytest.mark.parametrize("mode, disable, names", [
    ("dra", [], ["discovery", "cdi", "device-plugin", "dra"]),
    ("dra", ["device-plugin"], ["discovery", "cdi", "dra"]),
    ("dra", ["dra"], ["discovery", "cdi", "device-plugin"]),
    ("dra", ["dra", "device-plugin"], ["discovery"]),
    ("device-plugin", [], ["discovery", "cdi", "device-plugin"]),
])
def test_the_agent_builds_the_dra_component_in_dra_mode(root, mode, disable, names):
    from prometheus_client import CollectorRegistry

    from edgeagent.app import AgentContext, build_components
    from edgeagent.config import load_config
    from edgeagent.discovery.feed import InventoryFeed
    from edgeagent.discovery.scan import discover
    from edgeagent.hostpaths import HostRoot

    host = HostRoot(root)
    config = load_config(None, env={}).replace(
        gpu_mode=mode, disable=disable + ["metrics", "labels"])
    ctx = AgentContext(root=host, config=config, inventory=InventoryFeed(discover(host)),
                       registry=CollectorRegistry(), status=dict, demo=True, dry_run=True)
    assert [c.name for c in build_components(ctx)] == names


def _device(name, healthy=True, reason=""):
    return DraDevice(name, "gpu", healthy, reason, (), {}, {})


def test_the_health_list_is_sent_on_change_and_before_the_kubelets_timeout():
    state = HealthState(timeout=30)
    assert state.update(NODE, [_device("gpu-0")], now=1000.0)
    assert not state.update(NODE, [_device("gpu-0")], now=1010.0)     # nothing new
    assert state.update(NODE, [_device("gpu-0", False, "gone")], now=1011.0)
    assert state.report.entries == (("gpu-0", False, "gone"),)
    assert not state.update(NODE, [_device("gpu-0", False, "gone")], now=1025.0)
    assert state.update(NODE, [_device("gpu-0", False, "gone")], now=1026.0)   # 15 s: again
    assert state.report.checked == 1026 and state.report.timeout == 30


def test_a_kubelet_that_refused_registers_once_the_cause_is_gone(root, cleanup):
    kubelet = DraKubelet(root, refuse="DRA is not enabled").start()
    cleanup.append(kubelet)
    agent = DraAgent(root, Claims())
    cleanup.append(agent)
    agent.start()
    wait_until(agent.component.problem, what="problem")
    kubelet.refuse = None                              # the next try of its reconciler
    kubelet.wait_plugin(DRIVER)
    wait_until(lambda: agent.component.problem() is None, what="problem cleared")
