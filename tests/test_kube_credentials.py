"""Kubeconfig reading (PyYAML, bounded), the credentials order, node names."""

import base64
import os
import subprocess

import pytest
import trustme

from edgeagent.config import load_config
from edgeagent.hostpaths import HostRoot
from edgeagent.kube.certinfo import node_name_from_cert, subject_cn
from edgeagent.kube.credentials import find_credentials, load_kubeconfig
from edgeagent.kube.errors import CredentialsError, NoCredentials
from edgeagent.safeyaml import YamlError, loads
from edgeagent.kube.nodename import resolve_node_name
from edgeagent.kube.tls import make_ssl_context
from tests.tools import require_tool

K3S_KUBELET = """\
apiVersion: v1
clusters:
- cluster:
    server: https://127.0.0.1:6443
    certificate-authority: /var/lib/rancher/k3s/agent/server-ca.crt
  name: local
contexts:
- context:
    cluster: local
    namespace: default
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {}
users:
- name: user
  user:
    client-certificate: /var/lib/rancher/k3s/agent/client-kubelet.crt
    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key
"""

KUBEADM_KUBELET = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: https://10.0.0.1:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:jetson-7
  name: system:node:jetson-7@kubernetes
current-context: system:node:jetson-7@kubernetes
kind: Config
preferences: {{}}
users:
- name: system:node:jetson-7
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
"""


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def k3s_root(tmp_path, ca, node="jetson-3"):
    root = tmp_path / "root"
    agent = root / "var/lib/rancher/k3s/agent"
    write(str(agent / "kubelet.kubeconfig"), K3S_KUBELET)
    ca.cert_pem.write_to_path(str(agent / "server-ca.crt"))
    cert = ca.issue_cert("x.invalid", common_name="system:node:" + node)
    cert.cert_chain_pems[0].write_to_path(str(agent / "client-kubelet.crt"))
    cert.private_key_pem.write_to_path(str(agent / "client-kubelet.key"))
    return HostRoot(str(root))


def kubeadm_root(tmp_path, ca, node="jetson-7"):
    root = tmp_path / "root"
    data = base64.b64encode(ca.cert_pem.bytes()).decode()
    write(str(root / "etc/kubernetes/kubelet.conf"), KUBEADM_KUBELET.format(ca=data))
    cert = ca.issue_cert("x.invalid", common_name="system:node:" + node)
    pem = cert.private_key_and_cert_chain_pem.bytes()
    path = root / "var/lib/kubelet/pki/kubelet-client-current.pem"
    os.makedirs(str(path.parent))
    path.write_bytes(pem)
    return HostRoot(str(root))


# --- YAML (PyYAML's safe loader, bounded) ----------------------------------------------------

def test_yaml_k3s_kubeconfig():
    doc = loads(K3S_KUBELET)
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert doc["users"][0]["user"]["client-key"].endswith("client-kubelet.key")
    assert doc["preferences"] == {}


def test_yaml_scalars_are_text_booleans_or_null():
    doc = loads("a: 'it''s'\nb: 0x1F\nc: 12345\nd: 1.5\ne: 2024-01-01\nf: true\ng: ~\n"
                "h: |\n  line1\n  line2\n")
    assert doc == {"a": "it's", "b": "0x1F", "c": "12345", "d": "1.5", "e": "2024-01-01",
                   "f": True, "g": None, "h": "line1\nline2\n"}
    assert loads('{"json": [1, 2]}') == {"json": ["1", "2"]}
    assert loads("") is None


@pytest.mark.parametrize("text,message", [
    ("a: &x [1]\nb: *x\n", "line 2: aliases (*x) are not accepted"),
    ("a: 1\n---\nb: 2\n", "line 2: expected a single document"),
    ("a: 'open\n", "line 2: "),
    ("a: !!binary aGk=\n", "line 1: tag tag:yaml.org,2002:binary is not accepted"),
    ("a: !!python/object:os.system x\n", "is not accepted"),
    ("a: !!int 1\n", "is not accepted"),
    ("x: " + "[" * 65 + "]" * 65 + "\n", "line 1: nested more than 64 levels deep"),
    ("".join("%sk%d:\n" % (" " * i, i) for i in range(1500)), "nested more than 64 levels"),
    ("[" + "a," * 20001 + "]", "more than 20000 values"),
])
def test_yaml_hazards_are_one_line_errors(text, message):
    with pytest.raises(YamlError) as e:
        loads(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_kubectl_written_kubeconfig(tmp_path):
    kubectl = require_tool("kubectl")
    path = str(tmp_path / "kc")

    def k(*args):
        subprocess.run([kubectl, "config", "--kubeconfig", path] + list(args), check=True,
                       stdout=subprocess.DEVNULL)

    ca_file = str(tmp_path / "ca.crt")
    write(ca_file, "x")
    key = str(tmp_path / "c.pem")
    write(key, "x")
    k("set-cluster", "c1", "--server=https://[::1]:6443", "--certificate-authority=" + ca_file)
    k("set-credentials", "system:node:n1", "--client-certificate=" + key, "--client-key=" + key)
    k("set-credentials", "other", "--token=abc:def#x y")
    k("set-context", "ctx", "--cluster=c1", "--user=system:node:n1", "--namespace=default")
    k("use-context", "ctx")
    creds = load_kubeconfig(path)
    assert creds.server == "https://[::1]:6443"
    assert creds.ca_file == ca_file and creds.cert_file == key
    users = {u["name"]: u["user"] for u in loads(open(path).read())["users"]}
    assert users["other"]["token"] == "abc:def#x y"


# --- credentials --------------------------------------------------------------------------

def test_k3s_kubelet_kubeconfig_under_root(tmp_path, ca):
    root = k3s_root(tmp_path, ca)
    creds = find_credentials(root, None, env={})
    assert creds.kubelet_identity
    assert creds.source == "kubeconfig /var/lib/rancher/k3s/agent/kubelet.kubeconfig"
    assert creds.cert_file == root.path("/var/lib/rancher/k3s/agent/client-kubelet.crt")
    assert creds.ca_file == root.path("/var/lib/rancher/k3s/agent/server-ca.crt")
    assert len(creds.files) == 4
    ctx, token = make_ssl_context(creds)
    assert ctx is not None and token is None


def test_kubeadm_kubelet_conf_with_rotating_pem(tmp_path, ca):
    root = kubeadm_root(tmp_path, ca)
    creds = find_credentials(root, None, env={})
    assert creds.ca_data == ca.cert_pem.bytes()
    assert creds.cert_file == creds.key_file
    make_ssl_context(creds)
    config = load_config(env={})
    assert resolve_node_name(config.options.kube, root, creds, env={}) == (
        "jetson-7", "client certificate")


def test_order_explicit_then_k3s_then_kubeadm_then_in_cluster(tmp_path, ca):
    root = k3s_root(tmp_path, ca)
    kubeadm_root(tmp_path, ca)
    assert "k3s" in find_credentials(root, None, env={}).source
    os.remove(root.path("/var/lib/rancher/k3s/agent/kubelet.kubeconfig"))
    assert "kubelet.conf" in find_credentials(root, None, env={}).source
    os.remove(root.path("/etc/kubernetes/kubelet.conf"))
    sa = root.path("/var/run/secrets/kubernetes.io/serviceaccount")
    write(sa + "/token", "sa-token\n")
    ca.cert_pem.write_to_path(sa + "/ca.crt")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = find_credentials(root, None, env=env)
    assert creds.server == "https://[fd00::1]:443" and creds.source.startswith("in-cluster")
    assert make_ssl_context(creds)[1] == "sa-token"
    for bad in ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "99999"},
                {"KUBERNETES_SERVICE_HOST": "a b\n", "KUBERNETES_SERVICE_PORT": "443"}):
        with pytest.raises(CredentialsError, match="make no valid URL") as e:
            find_credentials(root, None, env=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(NoCredentials):
        find_credentials(root, None, env={})
    explicit = write(str(tmp_path / "explicit.yaml"), K3S_KUBELET.replace(
        "/var/lib/rancher/k3s/agent/", root.path("/var/lib/rancher/k3s/agent/") + "/"))
    write(root.path("/var/lib/rancher/k3s/agent/kubelet.kubeconfig"), K3S_KUBELET)
    assert find_credentials(root, explicit, env=env).source == "kubeconfig " + explicit


def test_missing_file_is_one_line_operator_error(tmp_path, ca, capsys):
    root = k3s_root(tmp_path, ca)
    os.remove(root.path("/var/lib/rancher/k3s/agent/client-kubelet.key"))
    with pytest.raises(CredentialsError) as e:
        find_credentials(root, None, env={})
    assert "users[user].client-key /var/lib/rancher/k3s/agent/client-kubelet.key: no such file" \
        in str(e.value)
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    with pytest.raises(CredentialsError, match="no such file"):
        find_credentials(root, str(tmp_path / "nope.yaml"), env={})

    from edgeagent.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["--root", root.root, "labels", "--node-name", "x"])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "client-kubelet.key: no such file" in err


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t.replace("https://127.0.0.1:6443", "ftp://x"), "must be an https:// URL"),
    (lambda t: t.replace("current-context: Default", "current-context: Nope"),
     "no context named 'Nope'"),
    (lambda t: t.replace("    client-key: /var/lib/rancher/k3s/agent/client-kubelet.key\n", ""),
     "without its key"),
    (lambda t: t + "    exec:\n      command: aws\n", "exec is not supported"),
    (lambda t: t.replace("cluster: local", "cluster: other"), "no cluster named 'other'"),
    (lambda t: "a: &anchor 1\nb: *anchor\n", "line 2: aliases"),
    (lambda t: t.replace("https://127.0.0.1:6443", "https://127.0.0.1:99999"),
     "is not a valid URL"),
    (lambda t: t.replace("client-certificate: /var",
                         "token: \"a\\nb\"\n    client-certificate: /var"),
     "token holds control"),
])
def test_bad_kubeconfigs(tmp_path, ca, mutate, message):
    root = k3s_root(tmp_path, ca)
    path = root.path("/var/lib/rancher/k3s/agent/kubelet.kubeconfig")
    write(path, mutate(K3S_KUBELET))
    with pytest.raises(CredentialsError, match=message):
        find_credentials(root, None, env={})


def test_unusable_certificate_is_an_operator_error(tmp_path, ca):
    root = k3s_root(tmp_path, ca)
    write(root.path("/var/lib/rancher/k3s/agent/client-kubelet.key"), "not a key")
    creds = find_credentials(root, None, env={})
    with pytest.raises(CredentialsError, match="client certificate or key unusable"):
        make_ssl_context(creds)


def test_relative_paths_are_relative_to_the_kubeconfig(tmp_path, ca):
    folder = tmp_path / "cfg"
    ca.cert_pem.write_to_path(str(folder.mkdir() or folder / "ca.crt"))
    write(str(folder / "tok"), "t0k\n")
    path = write(str(folder / "config"), """\
clusters: [{name: c, cluster: {server: "https://h:1", certificate-authority: ca.crt}}]
""".replace("[{name: c, cluster: {server: \"https://h:1\", certificate-authority: ca.crt}}]",
            "\n- name: c\n  cluster:\n    server: https://h:1\n    certificate-authority: ca.crt")
        + "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
        + "users:\n- name: u\n  user:\n    tokenFile: tok\n")
    creds = load_kubeconfig(path)
    assert creds.ca_file == str(folder / "ca.crt")
    assert make_ssl_context(creds)[1] == "t0k"


def test_node_name_order(tmp_path, ca):
    root = k3s_root(tmp_path, ca, node="from-cert")
    creds = find_credentials(root, None, env={})
    write(root.path("/proc/sys/kernel/hostname"), "Jetson-Host\n")
    cfg = load_config(env={}).options.kube
    given = load_config(env={}).replace(node_name="given").options.kube
    assert resolve_node_name(given, root, creds, env={"NODE_NAME": "e"}) == (
        "given", "config node_name")
    assert resolve_node_name(cfg, root, creds, env={"NODE_NAME": "from-env"}) == (
        "from-env", "NODE_NAME")
    assert resolve_node_name(cfg, root, creds, env={}) == ("from-cert", "client certificate")
    assert resolve_node_name(cfg, root, None, env={}) == ("jetson-host", "hostname")


def test_certificate_common_name(ca):
    cert = ca.issue_cert("a.invalid", common_name="system:node:edge-9",
                         organization_name="system:nodes")
    pem = cert.cert_chain_pems[0].bytes()
    assert subject_cn(pem) == "system:node:edge-9"
    assert node_name_from_cert(pem) == "edge-9"
    assert node_name_from_cert(ca.issue_cert("b.invalid", common_name="admin")
                               .cert_chain_pems[0].bytes()) is None
    assert subject_cn(b"garbage") is None
    assert subject_cn(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----") is None
