"""Doctor's Kubernetes checks on fixture roots (a kubelet that joined the test API server)."""

import asyncio
import socket
import time

import pytest

from edgeagent.config import load_config
from edgeagent.doctor.checks_kube import CHECKS, clock_result
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, DoctorContext
from edgeagent.doctor.runner import default_check_modules
from edgeagent.hostpaths import HostRoot
from tests.peers.kubeapi import ThreadedKubeApi


@pytest.fixture
def server(tmp_path):
    s = ThreadedKubeApi(str(tmp_path / "api"), nodes=["jetson-1"])
    yield s
    s.close()


def doctor(root, timeout=1.5, **config):
    ctx = DoctorContext(root=HostRoot(str(root)), config=load_config(env={}).replace(**config),
                        timeout=timeout)
    results = []
    for check in CHECKS:
        out = asyncio.run(check(ctx))
        results.extend(out if isinstance(out, list) else [out])
    return {r.check: r for r in results}


def statuses(results):
    return {k: r.status for k, r in results.items()}


def test_registered():
    assert "edgeagent.doctor.checks_kube" in default_check_modules()


@pytest.mark.parametrize("flavor,ca", [("kubeadm", "data"), ("k3s", "file")])
def test_healthy_kubelet_node_passes_everything(server, tmp_path, flavor, ca):
    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root), "jetson-1", flavor=flavor, ca=ca)
    results = doctor(root)
    assert statuses(results) == {"kube.credentials": PASS, "kube.reachable": PASS,
                                 "kube.tls": PASS, "kube.clock": PASS, "kube.node": PASS,
                                 "kube.patch": PASS, "labels.gpu-labels-owner": PASS}
    assert "client certificate" in results["kube.node"].detail


def test_no_credentials_fails_with_a_fix(tmp_path):
    (tmp_path / "root").mkdir()
    results = doctor(tmp_path / "root")
    assert results["kube.credentials"].status == FAIL and results["kube.credentials"].fix
    assert {r.status for k, r in results.items() if k != "kube.credentials"} == {SKIP}


def test_broken_kubeconfig_fails(server, tmp_path):
    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root))
    (root / "var/lib/kubelet/pki/kubelet-client-current.pem").unlink()
    results = doctor(root)
    assert results["kube.credentials"].status == FAIL
    assert "kubelet-client-current.pem: no such file" in results["kube.credentials"].detail


def test_node_missing_under_this_name(server, tmp_path):
    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root), "jetson-9")
    results = doctor(root)
    assert results["kube.reachable"].status == PASS
    assert results["kube.node"].status == FAIL and "--node-name" in results["kube.node"].fix
    assert results["kube.patch"].status == SKIP


def test_identity_without_patch_permission(server, tmp_path):
    root = tmp_path / "root"
    server.api.grants["viewer"] = {"get"}
    server.api.write_kubelet_root(str(root), user="viewer")
    results = doctor(root, node_name="jetson-1")
    assert results["kube.node"].status == PASS
    assert results["kube.patch"].status == FAIL


def test_insecure_and_clock_skew_warn_or_fail(server, tmp_path):
    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root), ca="insecure")
    server.api.clock_offset = 30
    results = doctor(root)
    assert results["kube.credentials"].status == WARN
    assert results["kube.tls"].status == WARN
    assert results["kube.clock"].status == WARN and "behind" in results["kube.clock"].detail
    server.api.clock_offset = -600
    assert doctor(root)["kube.clock"].status == FAIL


def test_wrong_ca_fails_tls(server, tmp_path):
    import trustme

    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root), ca="file")
    trustme.CA().cert_pem.write_to_path(str(root / "etc/kubernetes/pki/ca.crt"))
    results = doctor(root)
    assert statuses(results)["kube.tls"] == FAIL
    assert results["kube.reachable"].status == PASS
    assert results["kube.node"].status == SKIP


def test_dead_api_server_is_reported_quickly(server, tmp_path):
    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root))
    server.close()
    server.close = lambda: None
    start = time.monotonic()
    results = doctor(root)
    assert time.monotonic() - start < 5
    assert results["kube.reachable"].status == FAIL
    assert results["kube.node"].status == SKIP


def test_silent_api_server_is_bounded_by_the_timeout(server, tmp_path):
    # Accepts TCP connections (the kernel's backlog) but never speaks TLS.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        root = tmp_path / "root"
        server.api.port, real_port = silent.getsockname()[1], server.api.port
        server.api.write_kubelet_root(str(root))
        server.api.port = real_port
        start = time.monotonic()
        results = doctor(root, timeout=1.0)
        assert time.monotonic() - start < 5
        assert results["kube.reachable"].status == FAIL
        assert "no answer within" in results["kube.reachable"].detail
    finally:
        silent.close()


def test_labels_disabled_skips(tmp_path):
    results = doctor(tmp_path, disable=["labels"])
    assert {r.status for r in results.values()} == {SKIP}


def test_clock_result_thresholds():
    assert clock_result(None, 0).status == SKIP
    assert clock_result(1000.0, 1003.0, 0.1).status == PASS
    assert clock_result(1000.0, 1010.0, 0.1).status == WARN
    assert clock_result(1000.0, 900.0, 0.1).status == FAIL


def test_slow_api_server_stays_within_the_network_budget(server, tmp_path):
    from edgeagent.doctor.checks_kube import NETWORK_BUDGET

    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root))
    server.api.inject(delay=1.2, count=10)   # each answer just under ctx.timeout
    start = time.monotonic()
    results = doctor(root)
    assert time.monotonic() - start < NETWORK_BUDGET + 2.0   # < 5 s, with slack for a busy CI
    assert results["kube.reachable"].status == PASS
    # Three 1.2 s answers do not fit the budget: the last step is cut short, not waited for.
    assert results["kube.patch"].status in (SKIP, WARN)
    assert len(results) == 7


def test_a_token_over_plain_http_warns(tmp_path):
    server = ThreadedKubeApi(str(tmp_path / "api"), tls=False)
    try:
        path = server.api.write_kubeconfig(auth="token", ca="none")
        results = doctor(tmp_path, kubeconfig=path, node_name="jetson-1")
        assert results["kube.node"].status == PASS
        assert results["kube.tls"].status == WARN
        assert "bearer token travels in clear text" in results["kube.tls"].detail
    finally:
        server.close()


def test_reading_another_nodes_node_is_forbidden_with_a_fix(server, tmp_path):
    root = tmp_path / "root"
    server.api.write_kubelet_root(str(root), "jetson-1")
    server.api.add_node("jetson-2")
    results = doctor(root, node_name="jetson-2")
    assert results["kube.node"].status == FAIL
    assert "only its own Node" in results["kube.node"].detail
    assert "--node-name" in results["kube.node"].fix


@pytest.mark.parametrize("text", ["key" + " " * 100000 + ": v\n", "a: " + "9" * 5000 + "\n",
                                  "".join("%sk%d:\n" % (" " * (i % 100), i) for i in range(1500)),
                                  "a: &x [1]\nb: *x\n"])
def test_a_hostile_kubeconfig_fails_in_one_line_at_once(tmp_path, text):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    start = time.monotonic()
    results = doctor(tmp_path, kubeconfig=str(path))
    assert time.monotonic() - start < 2
    assert results["kube.credentials"].status == FAIL
    assert "\n" not in results["kube.credentials"].detail
    assert results["kube.credentials"].detail.startswith("kubeconfig %s: " % path)


# --- labels.gpu-labels-owner: who owns nvidia.com/gpu.* where GFD/NFD also run -----------------

NFD = "nfd.node.kubernetes.io/feature-labels"
GFD = {"nvidia.com/gfd.timestamp": "1733300000", "nvidia.com/gpu.product": "Orin",
       "nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.count": "1"}


def gpu_node(labels=None, annotations=None):
    return {"metadata": {"name": "jetson-1", "labels": labels or {},
                         "annotations": annotations or {}}}


@pytest.mark.parametrize("env,node,nodefeatures,status,words", [
    ({}, gpu_node(), "none", PASS, ["edgeagent owns", "neither"]),
    ({}, gpu_node(), "forbidden", PASS, ["edgeagent owns", "403"]),
    ({}, gpu_node(), "absent", PASS, ["edgeagent owns", "404"]),
    ({}, gpu_node(GFD, {NFD: ",".join(GFD)}), "forbidden", PASS,
     ["defers", 'labels.nvidia_gpu_labels_owner = "defer"', "NFD manages"]),
    ({}, gpu_node(), "found", PASS,
     ["defers", "NodeFeature gpu-operator/nvidia-features-for-jetson-1"]),
    ({"EDGEAGENT_LABELS_NVIDIA_GPU_LABELS_OWNER": "own"}, gpu_node(GFD, {NFD: ",".join(GFD)}),
     "none", WARN, ["overwriting nvidia.com/gpu.count, nvidia.com/gpu.family, "
                    "nvidia.com/gpu.product", '"own"']),
    ({"EDGEAGENT_LABELS_NVIDIA_GPU_LABELS": "false"}, gpu_node(GFD), "none", PASS,
     ["labels.nvidia_gpu_labels = false", "GFD's nvidia.com/gfd.timestamp"]),
    # an administrator's one GPU label is no labeller
    ({}, gpu_node({"nvidia.com/gpu.product": "Custom"}), "none", PASS, ["edgeagent owns"]),
])
def test_gpu_owner_result(env, node, nodefeatures, status, words):
    from edgeagent.doctor.checks_kube import gpu_owner_result
    from edgeagent.labels.contest import NodeFeatures

    objects = (("gpu-operator/nvidia-features-for-jetson-1", ("nvidia.com/gpu.product",)),) \
        if nodefeatures == "found" else ()
    result = gpu_owner_result(node, load_config(env=env).options.labels,
                              NodeFeatures(nodefeatures, objects))
    assert result.check == "labels.gpu-labels-owner" and result.status == status
    for word in words:
        assert word in result.detail, word
    if status == WARN:
        assert "defer" in result.fix


def test_doctor_sees_gfd_through_a_readable_nodefeature(tmp_path):
    server = ThreadedKubeApi(str(tmp_path / "api"), nodefeature_api=True)
    try:
        api = server.api
        root = tmp_path / "root"
        api.write_kubelet_root(str(root))
        assert doctor(root)["labels.gpu-labels-owner"].status == PASS
        assert "403" in doctor(root)["labels.gpu-labels-owner"].detail
        api.add_nodefeature("jetson-1", GFD)
        api.grant("system:nodes", ["list"])
        result = doctor(root)["labels.gpu-labels-owner"]
        assert result.status == PASS and "defers" in result.detail
        assert "nvidia-features-for-jetson-1" in result.detail
        api.nfd_master_sync("jetson-1")
        result = doctor(root, **{"labels.nvidia_gpu_labels_owner": "own"})[
            "labels.gpu-labels-owner"]
        assert result.status == WARN and "overwriting" in result.detail
    finally:
        server.close()


def test_publishing_as_nodefeature_asks_for_the_nodefeature_rbac(tmp_path):
    server = ThreadedKubeApi(str(tmp_path / "api"), nodefeature_api=True)
    try:
        api = server.api
        root = tmp_path / "root"
        api.write_kubelet_root(str(root))
        publish = {"labels.publish": "nodefeature"}
        result = doctor(root, **publish)["kube.patch"]
        assert result.status == FAIL and "get/create/update" in result.detail
        assert "node-feature-discovery" in result.fix
        api.grant("system:nodes", ["get", "create", "update"], namespace="elsewhere")
        assert doctor(root, **publish)["kube.patch"].status == FAIL
        api.grant("system:nodes", ["get", "create", "update"],
                  namespace="node-feature-discovery")
        results = doctor(root, **publish)
        assert results["kube.patch"].status == PASS
        assert results["labels.gpu-labels-owner"].status == SKIP
    finally:
        server.close()
