"""Doctor's DRA checks (checks_dra): the pure decisions as tables, then each check on a fake
Jetson host (tests/peers/hosts.py) with real unix sockets, real runtime configs and the HTTPS
test API server, extended here with resource.k8s.io discovery and a ResourceSlice list under
the Node authorizer's rule (a node lists only slices selected by its own spec.nodeName)."""

import asyncio
import json
import os
import socket
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.config import load_config
from edgeagent.deviceplugin.sockets import reachable
from edgeagent.doctor import checks_dra as cd
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN
from edgeagent.doctor.runner import build_context, default_check_modules, run_checks
from edgeagent.hostpaths import HostRoot
from tests.costbound import within_memory
from tests.peers import kubeapi
from tests.peers.hosts import FIXTURES, XAVIER_GPU_NODES, make_root, write

DLA_NODES = ("nvhost-nvdla0", "nvhost-nvdla1", "nvhost-ctrl-nvdla0", "nvhost-ctrl-nvdla1")
REG = "/var/lib/kubelet/plugins_registry/edgeagent.io-reg.sock"
DRA = "/var/lib/kubelet/plugins/edgeagent.io/dra.sock"
ETC_CONTAINERD = "/etc/containerd/config.toml"
K3S_GEN = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
K3S_TMPL = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl"
K3S_LOG = "/var/lib/rancher/k3s/agent/containerd/containerd.log"
K3S_UNIT = "/etc/systemd/system/k3s-agent.service"


def fixture(name):
    with open(os.path.join(FIXTURES, "runtime", name)) as f:
        return f.read()


@pytest.fixture
def host(tmp_path):
    return str(make_root(tmp_path, dev=XAVIER_GPU_NODES + DLA_NODES))


def ctx(host, **overrides):
    overrides.setdefault("gpu_mode", "dra")
    return build_context(HostRoot(host), load_config(None, env={}).replace(**overrides),
                         timeout=0.5)


def test_registered_after_the_kube_checks():
    modules = default_check_modules()
    assert modules.index("edgeagent.doctor.checks_dra") == \
        modules.index("edgeagent.doctor.checks_kube") + 1


# --- pure decisions ------------------------------------------------------------------------------

@pytest.mark.parametrize("version,status", [
    ("v1.34.1", PASS), ("v1.35.0+k3s1", PASS), ("v2.0.0", PASS),
    ("v1.33.4+k3s1", WARN), ("v1.32.0", FAIL),
    ("v1.31.9", FAIL), ("v1.26.0-eks-1", FAIL),
    ("", WARN), (None, WARN), ("latest", WARN),
])
def test_kubelet_versions(version, status):
    node = {"status": {"nodeInfo": {"kubeletVersion": version}}}
    r = cd.kubelet_result(node)
    assert r.check == "dra.kubelet-version" and r.status == status
    if status == WARN and version and version.startswith("v1.3"):
        assert "DynamicResourceAllocation" in r.fix and "1.34" in r.fix


def test_kubelet_version_of_a_node_without_status():
    assert cd.kubelet_result({}).status == WARN


@pytest.mark.parametrize("versions,status", [
    (None, FAIL), ([], FAIL), (["v1beta1"], FAIL), (["v1beta2", "v1beta1"], WARN),
    (["v1", "v1beta2", "v1beta1"], PASS), (["v1"], PASS),
])
def test_api_versions(versions, status):
    group = None if versions is None else {
        "kind": "APIGroup", "name": "resource.k8s.io",
        "versions": [{"groupVersion": "resource.k8s.io/" + v, "version": v} for v in versions]}
    r = cd.api_result(group)
    assert r.status == status and (status == PASS or "1.34" in r.fix)


def a_slice(node, devices, name="x"):
    return {"metadata": {"name": name}, "spec": {
        "driver": "edgeagent.io", "nodeName": node, "pool": {
            "name": node, "generation": 1, "resourceSliceCount": 1},
        "devices": [{"name": d} for d in devices]}}


def test_slices_decisions():
    expected = ["gpu-0", "dla-0", "dla-1"]
    full = cd.slices_result("n", [a_slice("n", expected)], expected)
    assert full.status == PASS and "1 ResourceSlice of edgeagent.io for Node n: gpu-0, dla-0, " \
        "dla-1" in full.detail
    split = cd.slices_result("n", [a_slice("n", ["gpu-0"]), a_slice("n", ["dla-0", "dla-1"])],
                             expected)
    assert split.status == PASS and "2 ResourceSlices" in split.detail
    missing = cd.slices_result("n", [a_slice("n", ["gpu-0"])], expected)
    assert missing.status == WARN and "missing dla-0, dla-1" in missing.detail
    extra = cd.slices_result("n", [a_slice("n", ["gpu-0", "dla-0", "dla-1", "dla-2"])],
                             expected)
    assert extra.status == WARN and "dla-2 no longer on this host" in extra.detail
    none = cd.slices_result("n", [], expected)
    assert none.status == FAIL and "gpu-0, dla-0, dla-1" in none.detail
    assert "systemctl start edgeagent" in none.fix
    assert cd.slices_result("n", [], []).status == SKIP


def test_slice_devices_ignores_garbage():
    items = [None, {"spec": None}, {"spec": {"devices": "x"}},
             {"spec": {"devices": [None, {"name": 3}, {"name": "gpu-0"}, {"name": "gpu-0"}]}}]
    assert cd.slice_devices(items) == ["gpu-0"]


def test_conflict_decisions():
    node = kubeapi.realistic_node("n", "1")
    assert cd.conflict_result([], node).status == PASS
    assert cd.conflict_result([], None).status == PASS
    r = cd.conflict_result(["/var/lib/kubelet/device-plugins/nvidia-gpu.sock"], None)
    assert r.status == WARN and "nvidia-gpu.sock" in r.detail and "device-plugin" in r.fix
    node["status"]["allocatable"]["nvidia.com/gpu"] = "1"
    r = cd.conflict_result([], node)
    assert r.status == WARN and "allocatable nvidia.com/gpu: 1" in r.detail
    node["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    node["metadata"]["labels"]["nvidia.com/gfd.timestamp"] = "1733000000"
    r = cd.conflict_result([], node)
    assert r.status == WARN and "GPU feature discovery" in r.detail


@pytest.mark.parametrize("text,minor", [("v1.34.1+k3s1", (1, 34)), ("1.32", (1, 32)),
                                        ("v1", None), ("", None), ("vx.y", None)])
def test_parse_minor(text, minor):
    assert cd.parse_minor(text) == minor


# --- device-plugin mode: every check says why it does not apply --------------------------------

def test_device_plugin_mode_skips_everything_with_the_reason(host):
    c = ctx(host, gpu_mode="device-plugin")
    results = asyncio.run(run_checks(c, sources=[lambda: cd]))
    assert {r.check for r in results} == {
        "dra.sockets", "dra.runtime-cdi", "dra.cdi-ids", "dra.kubelet-version",
        "dra.api-version", "dra.slices", "dra.gpu-conflict"}
    assert all(r.status == SKIP and 'gpu_mode = "device-plugin"' in r.detail for r in results)


# --- sockets -------------------------------------------------------------------------------------

def listen(host, host_path):
    real = os.path.join(host, host_path.lstrip("/"))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with reachable(real) as p:   # tmp_path is deeper than sun_path allows
        s.bind(p)
    s.listen(4)
    return s


def test_sockets_served_pass(host):
    served = [listen(host, REG), listen(host, DRA)]
    try:
        r = cd.check_sockets(ctx(host))
    finally:
        for s in served:
            s.close()
    assert r.status == PASS and REG in r.detail and DRA in r.detail


def test_sockets_missing_or_stale_fail(host):
    os.makedirs(os.path.join(host, "var/lib/kubelet/plugins_registry"))
    r = cd.check_sockets(ctx(host))
    assert r.status == FAIL and "%s is missing; %s is missing" % (REG, DRA) == r.detail
    stale = listen(host, DRA)
    stale.close()   # the file stays: a stopped agent's socket
    served = listen(host, REG)
    try:
        r = cd.check_sockets(ctx(host))
    finally:
        served.close()
    assert r.status == FAIL and "%s refuses connections" % DRA in r.detail
    assert "%s accepts connections" % REG in r.detail


def test_sockets_without_the_kubelets_registry(host):
    r = cd.check_sockets(ctx(host))
    assert r.status == FAIL and "plugins_registry does not exist" in r.detail
    assert "registry_directory" in r.fix


def test_sockets_follow_the_configured_directories(host):
    served = [listen(host, "/data/kubelet/plugins_registry/edgeagent.io-reg.sock"),
              listen(host, "/data/kubelet/plugins/edgeagent.io/dra.sock")]
    try:
        r = cd.check_sockets(ctx(host, **{
            "dra.registry_directory": "/data/kubelet/plugins_registry",
            "dra.plugins_directory": "/data/kubelet/plugins"}))
    finally:
        for s in served:
            s.close()
    assert r.status == PASS and "/data/kubelet/plugins/edgeagent.io/dra.sock" in r.detail


# --- the container runtime's CDI -----------------------------------------------------------------

def dpkg(host, package, version):
    write(host, "/var/lib/dpkg/status",
          "Package: %s\nStatus: install ok installed\nVersion: %s\n\n" % (package, version))


def k3s(host, generated, containerd):
    write(host, K3S_UNIT, fixture("k3s-agent.service") + "\n")
    write(host, K3S_GEN, fixture(generated))
    write(host, K3S_LOG, 'time="2025-03-01T10:00:00Z" level=info msg="starting containerd" '
          'revision=abc version=%s\n' % containerd)


def test_containerd_1_7_default_fails_with_the_setting_to_change(host):
    dpkg(host, "containerd", "1.7.12-0ubuntu2~22.04.1")
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))
    c = ctx(host)
    r = cd.check_runtime_cdi(c)
    assert r.status == FAIL and "enable_cdi = false in %s:" % ETC_CONTAINERD in r.detail
    assert r.fix == ('set enable_cdi = true under [plugins."io.containerd.grpc.v1.cri"] in '
                     '/etc/containerd/config.toml and sudo systemctl restart containerd')
    # checks_runtime's thread plans this file's --fix edits; a second planner would race it
    assert "fix.edits" not in c.facts


def test_containerd_2_passes(host):
    dpkg(host, "containerd.io", "2.0.2-1")
    write(host, ETC_CONTAINERD, fixture("containerd-2.0-default.toml"))
    r = cd.check_runtime_cdi(ctx(host))
    assert r.status == PASS and "enable_cdi = true" in r.detail


def test_containerd_without_a_config_runs_on_its_defaults(host):
    dpkg(host, "containerd", "1.7.12-0ubuntu2~22.04.1")
    r = cd.check_runtime_cdi(ctx(host))
    assert r.status == FAIL and "containerd config default" in r.fix
    dpkg(host, "containerd.io", "2.1.0-1")
    assert cd.check_runtime_cdi(ctx(host)).status == PASS


def test_k3s_with_containerd_1_7_needs_a_template(host):
    k3s(host, "k3s-containerd1.7-config.toml", "v1.7.23-k3s2")
    r = cd.check_runtime_cdi(ctx(host))
    assert r.status == FAIL and "containerd 1.x" in r.detail and "config.toml.tmpl" in r.fix
    write(host, K3S_TMPL, '{{ template "base" . }}\n[plugins."io.containerd.grpc.v1.cri"]\n'
          '  enable_cdi = true\n')
    r = cd.check_runtime_cdi(ctx(host))
    assert r.status == FAIL and K3S_TMPL + " sets it" in r.detail
    assert r.fix == "sudo systemctl restart k3s-agent"


def test_k3s_with_containerd_2_passes(host):
    k3s(host, "k3s-containerd2-config.toml", "v2.0.4-k3s2")
    r = cd.check_runtime_cdi(ctx(host))
    assert r.status == PASS and r.detail.startswith("k3s's containerd 2.x")


def test_crio_and_cri_dockerd(host):
    write(host, "/etc/crio/crio.conf", '[crio.runtime]\ncgroup_manager = "systemd"\n')
    assert cd.check_runtime_cdi(ctx(host)).status == PASS
    write(host, "/var/lib/kubelet/kubeadm-flags.env", 'KUBELET_KUBEADM_ARGS="--container-'
          'runtime-endpoint=unix:///var/run/cri-dockerd.sock"\n')
    r = cd.check_runtime_cdi(ctx(host))
    assert r.status == FAIL and "cri-dockerd passes no CDI devices" in r.detail


def test_no_runtime_at_all_skips(host):
    assert cd.check_runtime_cdi(ctx(host)).status == SKIP


# --- the CDI IDs a claim returns -----------------------------------------------------------------

def own_spec(host, kind, names):
    write(host, "/var/run/cdi/edgeagent-%s.json" % kind.split("/")[1], json.dumps({
        "cdiVersion": "0.6.0", "kind": kind,
        "devices": [{"name": n, "containerEdits": {"deviceNodes": [{"path": "/dev/null"}]}}
                    for n in names]}))


def test_cdi_ids(host):
    r = cd.check_cdi_ids(ctx(host))
    assert r.status == FAIL and "edgeagent.io/gpu=0, edgeagent.io/dla=0, edgeagent.io/dla=1" \
        in r.detail
    own_spec(host, "edgeagent.io/gpu", ["0", "all"])
    r = cd.check_cdi_ids(ctx(host))
    assert r.status == FAIL and "defines edgeagent.io/dla=0, edgeagent.io/dla=1:" in r.detail
    own_spec(host, "edgeagent.io/dla", ["0", "1"])
    r = cd.check_cdi_ids(ctx(host))
    assert r.status == PASS and "cdi.edgeagent-spec" in r.detail


def test_cdi_ids_without_devices(tmp_path):
    host = str(make_root(tmp_path, dev=()))
    assert cd.check_cdi_ids(ctx(host)).status == SKIP


# --- the cluster: the test API server with resource.k8s.io ---------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = kubeapi.ThreadedKubeApi(str(tmp_path_factory.mktemp("api")),
                                nodes=["jetson-1", "jetson-2"])
    yield s
    s.close()


@pytest.fixture
def api(server):
    a = server.api
    a.resource_versions = ("v1", "v1beta2", "v1beta1")
    a.slices.clear()
    a.put_slice(a_slice("jetson-1", ["gpu-0", "dla-0", "dla-1"], "jetson-1-edgeagent.io-x"))
    a.put_slice(a_slice("jetson-2", ["gpu-0"], "jetson-2-edgeagent.io-y"))
    a.faults.clear()
    for name in ("jetson-1", "jetson-2"):
        a.nodes[name] = kubeapi.realistic_node(name, str(a.resource_version))
        a.edit_node(name, {"status": {"nodeInfo": {"kubeletVersion": "v1.34.2"}}})
    return a


def cluster(host, **overrides):
    results = asyncio.run(cd.check_cluster(ctx(host, **overrides)))
    return {r.check: r for r in results}


def statuses(results):
    return {k: r.status for k, r in results.items()}


def test_cluster_healthy(api, host):
    api.write_kubelet_root(host, "jetson-1")
    results = cluster(host)
    assert statuses(results) == {"dra.kubelet-version": PASS, "dra.api-version": PASS,
                                 "dra.slices": PASS, "dra.gpu-conflict": PASS}
    assert "Node jetson-1: gpu-0, dla-0, dla-1" in results["dra.slices"].detail
    listed = api.requests_by("GET", "/resourceslices")[-1]
    assert listed.status == 200 and listed.user == "system:node:jetson-1"


def test_cluster_without_slices_for_this_node(api, host):
    del api.slices["jetson-1-edgeagent.io-x"]
    api.write_kubelet_root(host, "jetson-1", flavor="k3s")
    r = cluster(host)["dra.slices"]
    assert r.status == FAIL and "no ResourceSlice of edgeagent.io for Node jetson-1" in r.detail


def test_cluster_of_an_old_control_plane(api, host):
    api.resource_versions = ("v1beta1",)
    api.edit_node("jetson-1", {"status": {"nodeInfo": {"kubeletVersion": "v1.33.1+k3s1"}}})
    api.write_kubelet_root(host, "jetson-1")
    results = cluster(host)
    assert statuses(results) == {"dra.kubelet-version": WARN, "dra.api-version": FAIL,
                                 "dra.slices": SKIP, "dra.gpu-conflict": PASS}
    api.resource_versions = ()
    assert "serves no resource.k8s.io" in cluster(host)["dra.api-version"].detail


def test_cluster_with_nvidias_device_plugin_too(api, host):
    api.edit_node("jetson-1", {"status": {"allocatable": {"nvidia.com/gpu": "1"}}})
    write(host, "/var/lib/kubelet/device-plugins/nvidia-gpu.sock", "")
    api.write_kubelet_root(host, "jetson-1")
    r = cluster(host)["dra.gpu-conflict"]
    assert r.status == WARN and "nvidia-gpu.sock" in r.detail
    assert "allocatable nvidia.com/gpu: 1" in r.detail


def test_cluster_as_another_nodes_identity(api, host):
    # A kubeconfig of jetson-2 on this host: its Node is not this one's to read or list for.
    api.write_kubelet_root(host, "jetson-2")
    results = cluster(host, node_name="jetson-1")
    assert results["dra.kubelet-version"].status == SKIP
    assert results["dra.slices"].status == FAIL and "403" in results["dra.slices"].detail


def test_cluster_without_credentials(host):
    results = cluster(host)
    assert {r.status for k, r in results.items() if k != "dra.gpu-conflict"} == {SKIP}
    assert "kube.credentials" in results["dra.slices"].detail
    assert results["dra.gpu-conflict"].status == PASS


def test_a_dead_api_server_costs_one_budget(api, host):
    api.write_kubelet_root(host, "jetson-1")
    api.inject(count=3, drop=True, delay=0.8)   # longer than a step (ctx timeout 0.5 s)
    c = ctx(host)
    start = time.monotonic()
    results = {r.check: r for r in asyncio.run(run_checks(c, sources=[lambda: cd]))}
    assert time.monotonic() - start < 2.0
    assert [results[n].status for n in cd.NETWORK] == [SKIP, SKIP, SKIP, PASS]
    assert "no answer within 0.5s" in results["dra.api-version"].detail


# --- what the API server sends is outside input ----------------------------------------------

FUZZ = settings(max_examples=120, deadline=timedelta(seconds=2), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
PEAK = 4 << 20


def shaped(keys, leaf):
    """Objects with the real field names at each level, and anything at all in their places."""
    out = leaf
    for key in reversed(keys):
        out = st.dictionaries(st.sampled_from([key, "x"]), out | JSON, max_size=2) | JSON
    return out


@FUZZ
@given(shaped(["status", "nodeInfo", "kubeletVersion"], st.text(max_size=30)),
       shaped(["status", "allocatable", "nvidia.com/gpu"], JSON),
       shaped(["metadata", "labels", "nvidia.com/gfd.timestamp"], JSON))
def test_any_node_gives_a_result(version_node, allocatable_node, labels_node):
    for node in (version_node, allocatable_node, labels_node):
        for fn in (lambda: cd.kubelet_result(node), lambda: cd.conflict_result([], node)):
            r = within_memory(fn, PEAK)
            assert r.status in (PASS, WARN, FAIL) and (r.status == PASS or r.fix)


@FUZZ
@given(shaped(["versions"], st.lists(shaped(["version"], st.sampled_from(
    ["v1", "v1beta1", "v1beta2"])), max_size=3)))
def test_any_discovery_document_gives_a_result(group):
    r = within_memory(lambda: cd.api_result(group), PEAK)
    assert r.status in (PASS, WARN, FAIL) and (r.status == PASS or r.fix)


@FUZZ
@given(st.lists(shaped(["spec", "devices"], st.lists(shaped(["name"], st.sampled_from(
    ["gpu-0", "dla-0", "dla-1"])), max_size=3)), max_size=3),
    st.lists(st.sampled_from(["gpu-0", "dla-0", "dla-1"]), unique=True))
def test_any_slice_list_gives_a_result(items, expected):
    names = within_memory(lambda: cd.slice_devices(items), PEAK)
    assert set(names) <= {"gpu-0", "dla-0", "dla-1"} and len(names) == len(set(names))
    r = within_memory(lambda: cd.slices_result("n", items, expected), PEAK)
    assert r.status in (PASS, WARN, FAIL, SKIP)
    if names == expected and items:
        assert r.status == PASS


@FUZZ
@given(st.text(max_size=40) | JSON)
def test_any_version_string_parses_or_not(text):
    minor = within_memory(lambda: cd.parse_minor(text), PEAK)
    assert minor is None or (isinstance(text, str) and text.lstrip().lstrip("v")[:1].isdigit())


def test_the_whole_doctor_in_dra_mode(api, host):
    """Every area together (checks_runtime shares its runtime facts with these): the DRA lines
    come after the cluster's, in their order, and the sockets' FAIL is the agent not running."""
    api.write_kubelet_root(host, "jetson-1")
    write(host, ETC_CONTAINERD, fixture("containerd-2.0-default.toml"))
    dpkg(host, "containerd.io", "2.0.2-1")
    own_spec(host, "edgeagent.io/gpu", ["0", "all"])
    own_spec(host, "edgeagent.io/dla", ["0", "1", "all"])
    os.makedirs(os.path.join(host, "var/lib/kubelet/plugins_registry"))
    results = asyncio.run(run_checks(ctx(host)))
    names = [r.check for r in results]
    dra = [n for n in names if n.startswith("dra.")]
    assert dra == ["dra.sockets", "dra.runtime-cdi", "dra.cdi-ids", "dra.kubelet-version",
                   "dra.api-version", "dra.slices", "dra.gpu-conflict"]
    assert names.index("dra.sockets") > names.index("labels.gpu-labels-owner")
    by = {r.check: r for r in results}
    assert by["dra.sockets"].status == FAIL and "is missing" in by["dra.sockets"].detail
    assert [by[n].status for n in dra[1:]] == [PASS] * 6


def test_cluster_of_a_1_33_control_plane_lists_v1beta2_slices(api, host):
    api.resource_versions = ("v1beta2", "v1beta1")
    api.edit_node("jetson-1", {"status": {"nodeInfo": {"kubeletVersion": "v1.33.4+k3s1"}}})
    api.write_kubelet_root(host, "jetson-1")
    results = cluster(host)
    assert statuses(results) == {"dra.kubelet-version": WARN, "dra.api-version": WARN,
                                 "dra.slices": PASS, "dra.gpu-conflict": PASS}
    assert api.requests_by("GET", "/v1beta2/resourceslices")[-1].status == 200
