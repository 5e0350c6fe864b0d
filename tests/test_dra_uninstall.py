"""`edgeagent uninstall` removes this node's ResourceSlices (best effort) against the test API
server, threaded, since the command runs its own event loop."""

import os

import pytest

from edgeagent.cli import main
from edgeagent.dra.slices import slice_body
from edgeagent.dra.model import DraDevice
from tests.peers.hosts import make_root, write
from tests.peers.kubeapi import ThreadedKubeApi

DLA = DraDevice("dla-0", "dla", True, "", ("edgeagent.io/dla=0",), {}, {})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ThreadedKubeApi(str(tmp_path_factory.mktemp("api")), nodes=["jetson-1", "jetson-2"])
    yield s
    s.close()


def run(board, capsys, *extra):
    with pytest.raises(SystemExit) as e:
        main(["--root", str(board), "uninstall", "--keep-labels", "--node-name", "jetson-1"]
             + list(extra))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def dra_board(tmp_path, mode="dra"):
    board = make_root(tmp_path)
    write(board, "/etc/edgeagent/config.toml", 'gpu_mode = "%s"\n' % mode)
    return board


def test_removes_only_this_nodes_slices(server, tmp_path, capsys):
    api = server.api
    for node, name in (("jetson-1", None), ("jetson-1", "renamed"), ("jetson-2", None)):
        body = slice_body(node, [DLA], 1, False)
        if name:
            body["metadata"]["name"] = name
        api.put_slice(body)
    board = dra_board(tmp_path)
    kubeconfig = api.write_kubeconfig("system:node:jetson-1")
    code, out, err = run(board, capsys, "--kubeconfig", kubeconfig)
    assert (code, err) == (0, "")
    assert "removed 2 ResourceSlices of Node jetson-1 (driver edgeagent.io)" in out
    assert api.slices_of("jetson-1") == [] and len(api.slices_of("jetson-2")) == 1
    code, out, _ = run(board, capsys, "--kubeconfig", kubeconfig)
    assert code == 0 and "Node jetson-1: no ResourceSlices of driver edgeagent.io" in out


@pytest.mark.parametrize("mode,code", [("dra", 1), ("device-plugin", 0)])
def test_unreachable_api_is_one_clear_line(tmp_path, capsys, mode, code):
    dead = ThreadedKubeApi(str(tmp_path / "dead"))
    kubeconfig = dead.api.write_kubeconfig("system:node:jetson-1")
    dead.close()
    board = dra_board(tmp_path, mode)
    got, out, err = run(board, capsys, "--kubeconfig", kubeconfig)
    assert got == code, out + err
    line = next(line for line in out.splitlines() if "ResourceSlices of Node" in line)
    assert line.startswith("error:" if mode == "dra" else "note:")
    assert "kubectl delete resourceslices --field-selector spec.nodeName=jetson-1," \
           "spec.driver=edgeagent.io" in line
    assert not os.path.exists(os.path.join(str(board), "usr/local/lib/edgeagent"))


def test_no_credentials(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, out, err = run(dra_board(tmp_path, "device-plugin"), capsys)
    assert code == 0, err
    assert "note: this node's ResourceSlices were not checked: no usable credentials" in out


def test_removes_the_plugins_files_in_the_kubelets_folders(server, tmp_path, capsys):
    board = dra_board(tmp_path)
    write(board, "/var/lib/kubelet/plugins_registry/edgeagent.io-reg.sock", "")
    write(board, "/var/lib/kubelet/plugins_registry/other.example.com-reg.sock", "")
    write(board, "/var/lib/kubelet/plugins/edgeagent.io/checkpoint.json", "{}")
    write(board, "/var/lib/kubelet/plugins/other.example.com/dra.sock", "")
    kubeconfig = server.api.write_kubeconfig("system:node:jetson-1")
    code, out, _ = run(board, capsys, "--kubeconfig", kubeconfig)
    assert code == 0
    assert "removed /var/lib/kubelet/plugins_registry/edgeagent.io-reg.sock (DRA plugin)" in out
    assert "removed /var/lib/kubelet/plugins/edgeagent.io (DRA plugin)" in out
    left = sorted(os.listdir(os.path.join(str(board), "var/lib/kubelet/plugins_registry")))
    assert left == ["other.example.com-reg.sock"]
    assert os.listdir(os.path.join(str(board), "var/lib/kubelet/plugins")) == ["other.example.com"]
