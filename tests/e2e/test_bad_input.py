"""Operator errors against the one-file build: one clear line on stderr, exit 2, no traceback,
and the agent never starts serving."""

import json
import os
import re

import pytest

from tests.e2e.agent import TRACEBACK, run_pyz

# The pyz and the package run under the system's python3, whatever runs the tests.
pytestmark = pytest.mark.artifact

LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) +\S+: ")


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert TRACEBACK not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edgeagent: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], "want one error line, got:\n%s" % (
        result.stderr)
    # Anything before it is the agent's ordinary log of what it did so far (`run` logs the
    # inventory before its components check their settings), one record per line.
    for line in lines[:-1]:
        assert LOG_RECORD.match(line), "not a log record: %r" % line
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def write_config(host, text):
    return host.write("/etc/edgeagent/config.toml", text)


@pytest.mark.parametrize("toml, needles", [
    ("[sharing]\nreplicas = 0\n", ["sharing.replicas", "between 1 and 1024", "got 0"]),
    ('[metrics]\naddress = "everywhere"\n', ["metrics.address", "HOST:PORT"]),
    ('[tegrastats]\ninterval_ms = "fast"\n', ["tegrastats.interval_ms", "integer"]),
    ('[device_plugin]\ndirectory = "relative/dir"\n', ["device_plugin.directory", "absolute"]),
    ('[labels]\nprefix = "kubernetes.io/"\n', ["labels.prefix", "NodeRestriction"]),
    ('disable = ["gpu"]\n', ["disable", "unknown component 'gpu'"]),
    ("[sharing]\nreplica = 2\n", ["unknown key 'sharing.replica'"]),
    ("[sharing\nreplicas = 2\n", ["invalid TOML"]),
])
def test_bad_config_file(host, shiv_root, toml, needles):
    path = write_config(host, toml)
    result = run_pyz(["--root", host.root, "run"], shiv_root=shiv_root)
    assert_one_line_error(result, path, *needles)


def test_bad_environment_value(host, shiv_root):
    result = run_pyz(["--root", host.root, "run"], env={"EDGEAGENT_SHARING_REPLICAS": "many"},
                     shiv_root=shiv_root)
    assert_one_line_error(result, "EDGEAGENT_SHARING_REPLICAS", "sharing.replicas", "'many'")


def test_bad_flag_value(host, shiv_root):
    result = run_pyz(["--root", host.root, "run", "--metrics-address", "127.0.0.1:99999"],
                     shiv_root=shiv_root)
    assert_one_line_error(result, "command line", "metrics.address")


def test_missing_root(tmp_path, shiv_root):
    missing = str(tmp_path / "no-such-host")
    for args in (["--root", missing, "run"], ["run", "--root", missing],
                 ["--root", missing, "discover"]):
        result = run_pyz(args, shiv_root=shiv_root)
        assert_one_line_error(result, missing, "no such directory")
    result = run_pyz(["run"], env={"EDGEAGENT_ROOT": missing}, shiv_root=shiv_root)
    assert_one_line_error(result, missing)


@pytest.mark.parametrize("size", [20, 200, 4096])
def test_truncated_dtb(host, shiv_root, size):
    host.truncate_dtb(size)
    for command in (["run"], ["discover", "--json"]):
        result = run_pyz(["--root", host.root] + command, shiv_root=shiv_root)
        assert_one_line_error(result, "devicetree")
        assert result.stdout == "", result.stdout


def kubeconfig(host, **cluster_user):
    cluster = {"server": "https://127.0.0.1:6443",
               "certificate-authority": cluster_user.pop("ca", host.path("/etc/k8s/ca.crt"))}
    user = cluster_user
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "k", "cluster": cluster}],
           "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
           "users": [{"name": "u", "user": user}]}
    return host.write("/etc/k8s/kubeconfig", json.dumps(doc))


def test_kubeconfig_missing(host, shiv_root):
    missing = host.path("/etc/k8s/no-such-kubeconfig")
    result = run_pyz(["--root", host.root, "run", "--kubeconfig", missing,
                      "--node-name", "jetson-1"], shiv_root=shiv_root, timeout=30)
    assert_one_line_error(result, missing)


@pytest.mark.parametrize("missing", ["ca", "client-certificate", "client-key"])
def test_kubeconfig_names_a_missing_file(host, shiv_root, missing):
    files = {name: host.write("/etc/k8s/%s.pem" % name, "-----BEGIN CERTIFICATE-----\n")
             for name in ("ca", "client-certificate", "client-key")}
    gone = files[missing]
    os.unlink(gone)
    path = kubeconfig(host, ca=files["ca"], **{
        "client-certificate": files["client-certificate"], "client-key": files["client-key"]})
    result = run_pyz(["--root", host.root, "run", "--kubeconfig", path,
                      "--node-name", "jetson-1"], shiv_root=shiv_root, timeout=30)
    assert_one_line_error(result, gone, "no such file")


# --- hostile config and flags (issue 11): each once ended in a traceback ---------------------

@pytest.mark.parametrize("toml, needles", [
    ("sharing.replicas = %s\n" % ("9" * 5000), ["digits"]),
    (".".join(["k"] * 1500) + " = 1\n", []),
    ("[%s]\nx = 1\n" % ".".join(["a"] * 2000), []),
    ("x = %s%s\n" % ("[" * 2000, "]" * 2000), []),
], ids=["5000-digit-int", "1500-nested-keys", "2000-deep-table", "2000-nested-arrays"])
def test_hostile_config_file(host, shiv_root, toml, needles):
    path = write_config(host, toml)
    result = run_pyz(["--root", host.root, "run"], shiv_root=shiv_root)
    assert_one_line_error(result, path, *needles)


def test_config_that_is_not_a_regular_file(host, shiv_root, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):
        result = run_pyz(["--root", host.root, "--config", path, "run"], shiv_root=shiv_root,
                         timeout=30)
        assert_one_line_error(result, path, "not a regular file")


@pytest.mark.parametrize("port", ["²", "١٢", "８０"])
def test_non_ascii_port(host, shiv_root, port):
    result = run_pyz(["--root", host.root, "run", "--metrics-address", "127.0.0.1:" + port],
                     shiv_root=shiv_root)
    assert_one_line_error(result, "metrics.address", "HOST:PORT")
