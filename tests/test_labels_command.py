"""`edgeagent labels` against the test API server (threaded, since the command runs its own
event loop), and the test server as a subprocess with kubectl as a real client."""

import json
import os
import subprocess
import sys
import threading

import pytest

from edgeagent.app import DEMO_PACKAGE_DIR
from edgeagent.cli import build_parser, load_cli, main
from edgeagent.labels.command import remove_owned_labels
from tests.conftest import REPO
from tests.peers.kubeapi import ThreadedKubeApi
from tests.tools import require_tool

ANN = "edgeagent.io/owned-labels"


@pytest.fixture
def server(tmp_path):
    s = ThreadedKubeApi(str(tmp_path / "api"), nodes=["jetson-1", "jetson-2"])
    yield s
    s.close()


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def base(server):
    return ["--root", DEMO_PACKAGE_DIR, "labels", "--kubeconfig",
            server.api.write_kubeconfig(), "--node-name", "jetson-1"]


def test_prints_labels_and_the_patch_without_writing(server, capsys):
    code, out, err = run_cli(base(server) + ["--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["node"] == "jetson-1" and doc["applied"] is False
    assert doc["labels"]["edgeagent.io/nvdla.count"] == "2"
    assert doc["patch"]["metadata"]["labels"] == doc["labels"]
    assert doc["patch"]["metadata"]["resourceVersion"]
    assert not server.api.requests_by("PATCH")
    code, out, _ = run_cli(base(server), capsys)
    assert code == 0
    assert "  nvidia.com/gpu.product=Xavier" in out and "Would patch Node jetson-1" in out


def test_apply_then_nothing_to_do_then_remove(server, capsys):
    api = server.api
    api.edit_node("jetson-1", {"metadata": {"labels": {"team.io/keep": "yes"}}})
    code, out, _ = run_cli(base(server) + ["--apply"], capsys)
    assert code == 0 and "Patched Node jetson-1" in out
    assert api.labels("jetson-1")["nvidia.com/gpu.family"] == "volta"
    code, out, _ = run_cli(base(server), capsys)
    assert "already carries them: no patch needed" in out
    code, out, _ = run_cli(base(server) + ["--remove"], capsys)
    assert code == 0 and "removed 22 labels" in out
    labels = api.labels("jetson-1")
    assert not [k for k in labels if k.startswith(("nvidia.com/", "edgeagent.io/",
                                                   "beta.devicetree.org/"))]
    assert labels["team.io/keep"] == "yes" and labels["kubernetes.io/hostname"] == "jetson-1"
    assert ANN not in api.annotations("jetson-1")
    code, out, _ = run_cli(base(server) + ["--remove"], capsys)
    assert code == 0 and "no labels owned by edgeagent" in out


def test_forbidden_node_is_one_line_exit_1(server, capsys):
    argv = base(server)
    argv[argv.index("jetson-1")] = "jetson-2"
    code, out, err = run_cli(argv + ["--apply"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "403" in err and "--node-name" in err
    assert "only its own Node" in err     # the Node authorizer's own words (1.32+)
    server.api.edit_node("jetson-2", {"metadata": {"labels": {"edgeagent.io/b": "1"},
                                                   "annotations": {ANN: "edgeagent.io/b"}}})
    code, _, err = run_cli(argv + ["--remove"], capsys)
    assert code == 1 and "403" in err and err.count("\n") == 1
    assert server.api.labels("jetson-2")["edgeagent.io/b"] == "1"
    assert not server.api.requests_by("PATCH")


def test_an_unreadable_node_stops_remove_and_apply(server, capsys):
    api = server.api
    api.edit_node("jetson-1", {"metadata": {"labels": {"edgeagent.io/board": "x"},
                                            "annotations": {ANN: "edgeagent.io/board"}}})
    for flag in ("--remove", "--apply"):
        api.inject(200, body="{\"kind\": \"Node\", \"metad", method="GET",
                       path="/api/v1/nodes/")
        code, out, err = run_cli(base(server) + [flag], capsys)
        assert code == 1 and err.count("\n") == 1
        assert "not JSON" in err and "nothing was written" in err
    assert not api.requests_by("PATCH")
    assert api.labels("jetson-1")["edgeagent.io/board"] == "x"


def test_remove_owned_labels_for_uninstall(server, tmp_path, capsys):
    args = build_parser().parse_args(base(server))
    assert remove_owned_labels(load_cli(args)) == 0
    args = build_parser().parse_args(["labels", "--kubeconfig", str(tmp_path / "missing")])
    assert remove_owned_labels(load_cli(args)) == 2
    assert "no such file" in capsys.readouterr().err


def test_unreachable_api_server_is_exit_1(server, capsys):
    argv = base(server)
    server.close()
    code, out, err = run_cli(argv, capsys)
    assert code == 1 and "Labels this node should carry" in out and err.count("\n") == 1
    server.close = lambda: None


def test_subprocess_server_with_kubectl_and_the_agent(tmp_path):
    kubectl = require_tool("kubectl")
    folder = str(tmp_path / "srv")
    proc = subprocess.Popen([sys.executable, "-m", "tests.peers.kubeapi", "--dir", folder,
                             "--node", "jetson-1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY https://127.0.0.1:"), proc.stderr.read()
        env = dict(os.environ, PYTHONPATH=REPO)
        subprocess.run([sys.executable, "-m", "edgeagent", "--root", DEMO_PACKAGE_DIR, "labels",
                        "--apply", "--kubeconfig", os.path.join(folder, "kubeconfig-jetson-1")],
                       check=True, env=env, stdout=subprocess.DEVNULL, timeout=60)
        out = subprocess.run([kubectl, "--kubeconfig", os.path.join(folder, "kubeconfig-admin"),
                              "get", "node", "jetson-1", "-o", "json"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        node = json.loads(out)
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "Xavier"
        assert "edgeagent.io/board" in node["metadata"]["annotations"][ANN]
        # kubectl as the node identity: NodeRestriction forbids kubernetes.io labels.
        res = subprocess.run([kubectl, "--kubeconfig", os.path.join(folder, "kubeconfig-jetson-1"),
                              "label", "node", "jetson-1", "kubernetes.io/role=x"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and "Forbidden" in res.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_agent_run_labels_its_node_and_stops_cleanly(server):
    import signal
    import time

    api = server.api
    env = dict(os.environ, PYTHONPATH=REPO, EDGEAGENT_LABELS_STARTUP_JITTER_SECONDS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "--root", DEMO_PACKAGE_DIR, "run", "--disable",
         "device-plugin,metrics", "--kubeconfig", api.write_kubeconfig(), "--node-name",
         "jetson-1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    # The API server changes the Node before the agent has read the whole (chunked) answer:
    # wait for the agent's own word that it is done, not for the Node.
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 60
        while not any("Node jetson-1 labels: set" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < end, "".join(lines)
            time.sleep(0.05)
        assert api.labels("jetson-1")["edgeagent.io/nvdla.count"] == "2"
        assert ANN in api.annotations("jetson-1")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    assert proc.returncode == 0, "".join(lines)
    assert len(api.requests_by("PATCH")) == 1


HOSTILE_KUBECONFIGS = {
    "spaces": "key" + " " * 100000 + ": v\n",
    "digits": "apiVersion: " + "9" * 5000 + "\n",
    "nested": "".join("%sk%d:\n" % (" " * (i % 100), i) for i in range(1500)),
    "aliases": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_KUBECONFIGS))
def test_a_hostile_kubeconfig_is_one_line_exit_2(tmp_path, kind):
    import time

    path = tmp_path / "kubeconfig"
    path.write_text(HOSTILE_KUBECONFIGS[kind])
    env = dict(os.environ, PYTHONPATH=REPO)
    for command in (["labels"], ["run", "--disable", "device-plugin,metrics"]):
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "edgeagent", "--root", DEMO_PACKAGE_DIR]
                             + command + ["--kubeconfig", str(path)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines[-1].startswith("edgeagent: error: kubeconfig %s: " % path), res.stderr
        assert "Traceback" not in res.stderr
        assert time.monotonic() - start < 15


def test_a_hostile_kubelet_kubeconfig_leaves_run_responsive(tmp_path):
    """The kubelet's kubeconfig is found, not given: run keeps going (it may be fixed), says
    once what is wrong, and stops at SIGTERM at once."""
    import shutil
    import signal
    import time

    root = tmp_path / "root"
    shutil.copytree(DEMO_PACKAGE_DIR, str(root))
    conf = root / "etc/kubernetes/kubelet.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(HOSTILE_KUBECONFIGS["spaces"])
    env = dict(os.environ, PYTHONPATH=REPO, EDGEAGENT_LABELS_STARTUP_JITTER_SECONDS="0")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeagent", "--root", str(root), "run",
                             "--disable", "device-plugin,metrics"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        end = time.monotonic() + 30
        while time.monotonic() < end:
            line = proc.stdout.readline()
            lines.append(line)
            if "no-credentials" in line:
                break
        assert "line 1: mapping values are not allowed" in lines[-1], "".join(lines)
    finally:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0 and time.monotonic() - start < 2, out
    assert "Traceback" not in "".join(lines) + out


def test_beside_gfd_the_command_shows_and_keeps_the_deferral(server, capsys):
    api = server.api
    # edgeagent labelled first; then GFD came, and nfd-master applied its NodeFeature.
    assert run_cli(base(server) + ["--apply"], capsys)[0] == 0
    api.add_nodefeature("jetson-1", {"nvidia.com/gfd.timestamp": "1733300000",
                                     "nvidia.com/gpu.product": "Xavier-by-GFD"})
    api.nfd_master_sync("jetson-1")
    code, out, err = run_cli(base(server) + ["--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert "nvidia.com/gpu.product" in doc["deferred"] and doc["taken"] == []
    assert "nvidia.com/gpu.product" not in doc["owned"]
    code, out, _ = run_cli(base(server) + ["--apply"], capsys)
    assert "NFD manages nvidia.com/gfd.timestamp, nvidia.com/gpu.product" in out
    assert "Left to them" in out
    assert api.labels("jetson-1")["nvidia.com/gpu.product"] == "Xavier-by-GFD"
    # uninstall: GFD's label stays, the rest of edgeagent's goes.
    code, out, _ = run_cli(base(server) + ["--remove"], capsys)
    assert code == 0
    labels = api.labels("jetson-1")
    assert labels["nvidia.com/gpu.product"] == "Xavier-by-GFD"
    assert "nvidia.com/gpu.family" not in labels and "edgeagent.io/board" not in labels
