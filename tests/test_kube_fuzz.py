"""Fuzzing every reader of outside input in kube/ and labels/: kubeconfigs (and the credential
files they name), client certificates, and Node objects from the API server.

Each input must end in a result or in one-line CredentialsError/YamlError/ValueError, within a
time bound (hypothesis' per-example deadline, plus our own clock) and a memory bound (the
tracemalloc peak while reading it). Alongside the random inputs, the inputs that hung or crashed
the old reader (issue 11) at the size cap: a key line of 100,000 spaces, a 5,000-digit integer,
1,500 nested keys, aliases, a FIFO, /dev/zero.
"""

import json
import os
import string
import time
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeagent.kube.certinfo import subject_cn
from edgeagent.kube.credentials import MAX_FILE, load_kubeconfig
from edgeagent.kube.errors import CredentialsError
from edgeagent.safeyaml import YamlError, loads
from edgeagent.labels.compute import is_own_key
from edgeagent.labels.plan import plan_labels, plan_removal
from tests.costbound import within_memory

SECONDS = 1.5          # per input, well above the worst measured (0.2 s at the node cap)
PEAK = 48 << 20        # tracemalloc peak per input (libyaml's own C buffers are not traced)
FUZZ = settings(max_examples=150, deadline=timedelta(seconds=3), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

VALID = {
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443",
                                           "insecure-skip-tls-verify": True}}],
    "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    "users": [{"name": "u", "user": {"token": "abc"}}],
}
HOSTILE = [
    "key" + " " * 100000 + ": v\n",
    "a: " + "9" * 5000 + "\n",
    "".join("%sk%d:\n" % (" " * (i % 200), i) for i in range(1500)),
    "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n",
    "[" * 5000, "{" * 5000 + "}" * 5000, "- " * 5000 + "x",
    "a: !!python/object/apply:os.system [true]\n", "a: !!binary " + "QUFB" * 1000 + "\n",
    "\x00\x01\x02", "\ufeff" + "a: b\n", "\t" * 1000, "%YAML 1.1\n---\na: b\n",
]


def bounded(fn, *args, errors=(CredentialsError, YamlError)):
    """Run fn(*args) under the time and memory bounds; return its result or the error it
    raised, which must be one of the reader's documented ``errors``, on one line."""
    start = time.perf_counter()
    result = within_memory(lambda: fn(*args), PEAK, errors)
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS, elapsed
    if isinstance(result, errors):
        assert "\n" not in str(result), str(result)[:300]
        assert len(str(result)) < 1200, str(result)[:300]
    return result


def read_kubeconfig(tmp_path, data):
    path = str(tmp_path / "kubeconfig")
    with open(path, "wb") as f:
        f.write(data)
    return bounded(load_kubeconfig, path)


YAMLISH = st.text(alphabet=string.ascii_letters[:6] + string.digits[:3]
                  + " \t\n:-[]{},&*!|>'\"#?%@`\\~." + "\u00e9\x00\x85\u2028", max_size=300)
SCALAR = st.one_of(st.text(max_size=40), st.integers(), st.booleans(), st.none(),
                   st.floats(allow_nan=False), st.lists(st.text(max_size=5), max_size=3))
KUBECONFIG_FIELDS = ["server", "certificate-authority", "certificate-authority-data",
                     "insecure-skip-tls-verify", "tls-server-name", "token", "tokenFile",
                     "client-certificate", "client-key", "client-certificate-data",
                     "client-key-data", "exec", "name", "cluster", "user", "current-context"]


def _mutate(doc, path, value):
    """VALID with the field at ``path`` (a list of keys/indexes) replaced by ``value``."""
    out = json.loads(json.dumps(doc))
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


PATHS = [["current-context"], ["clusters"], ["clusters", 0, "name"],
         ["clusters", 0, "cluster", "server"], ["clusters", 0, "cluster"],
         ["clusters", 0, "cluster", "insecure-skip-tls-verify"],
         ["clusters", 0, "cluster", "tls-server-name"], ["contexts", 0, "context", "user"],
         ["contexts", 0, "context", "cluster"], ["contexts"], ["users", 0, "user", "token"],
         ["users", 0, "user", "tokenFile"], ["users", 0, "user", "client-certificate-data"],
         ["users", 0, "user", "client-key"], ["users", 0, "user"], ["users", 0, "name"]]


@FUZZ
@given(YAMLISH)
def test_any_yamlish_text(tmp_path_factory, text):
    result = bounded(loads, text)
    if not isinstance(result, Exception):
        read_kubeconfig(tmp_path_factory.mktemp("k"), text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes(tmp_path_factory, data):
    read_kubeconfig(tmp_path_factory.mktemp("k"), data)


@FUZZ
@given(st.sampled_from(PATHS), SCALAR | st.dictionaries(st.sampled_from(KUBECONFIG_FIELDS),
                                                         SCALAR, max_size=4),
       st.booleans())
def test_kubeconfig_with_any_field_replaced(tmp_path_factory, path, value, as_json):
    doc = _mutate(VALID, path, value)
    text = json.dumps(doc) if as_json else yaml.safe_dump(doc)
    result = read_kubeconfig(tmp_path_factory.mktemp("k"), text.encode())
    if not isinstance(result, Exception):
        assert result.server.startswith(("https://", "http://"))


@FUZZ
@given(st.sampled_from(HOSTILE), st.integers(min_value=0, max_value=400))
@example(HOSTILE[0], 0)
def test_hostile_fragments_spliced_into_a_kubeconfig(tmp_path_factory, fragment, at):
    text = yaml.safe_dump(VALID)
    at = min(at, len(text))
    read_kubeconfig(tmp_path_factory.mktemp("k"), (text[:at] + fragment + text[at:]).encode())


@pytest.mark.parametrize("text", HOSTILE + [
    "a: " + "9" * (MAX_FILE - 10), "k: " + "x" * (MAX_FILE - 10),
    "key" + " " * (MAX_FILE - 10) + ": v", "[" * (MAX_FILE - 1),
    "".join("k%d: v\n" % i for i in range(19000)),
    "".join("- {a: b, c: d}\n" for _ in range(MAX_FILE // 16)),
])
def test_the_inputs_that_hung_or_crashed_the_old_reader(tmp_path, text):
    assert len(text) <= MAX_FILE
    result = read_kubeconfig(tmp_path, text.encode())
    assert isinstance(result, CredentialsError), result
    assert str(result).startswith("kubeconfig ")


def test_not_a_regular_file_and_over_the_cap(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)   # no writer: a plain open() for reading would block forever
    assert "not a regular file" in str(bounded(load_kubeconfig, fifo))
    assert "not a regular file" in str(bounded(load_kubeconfig, "/dev/zero"))
    assert "is a directory" in str(bounded(load_kubeconfig, str(tmp_path)))
    big = tmp_path / "big"
    big.write_bytes(b"a: b\n" + b"#" * MAX_FILE)
    assert "larger than 1024 KiB" in str(bounded(load_kubeconfig, str(big)))


@pytest.mark.parametrize("pem", [b"-----BEGIN CERTIFICATE-----" * (MAX_FILE // 27),
                                 b"-----BEGIN CERTIFICATE-----\n" + b"A" * MAX_FILE,
                                 b"-----END CERTIFICATE-----" * (MAX_FILE // 25)])
def test_certificate_files_at_the_cap(pem):
    assert bounded(subject_cn, pem) is None


@FUZZ
@given(st.binary(max_size=600))
def test_certificate_common_name_of_any_bytes(der):
    import base64

    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.b64encode(der) + \
        b"\n-----END CERTIFICATE-----\n"
    result = bounded(subject_cn, pem)
    assert result is None or isinstance(result, str)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=20), children, max_size=4),
                    max_leaves=30)
LABEL_KEYS = st.sampled_from(["edgeagent.io/board", "nvidia.com/gpu.product", "team",
                              "kubernetes.io/hostname", "nvidia.com/gpu.mode",
                              "beta.devicetree.org/nvidia-x", "edgeagent.io/owned-labels"])


@FUZZ
@given(JSON, st.dictionaries(LABEL_KEYS, st.text(max_size=10) | JSON, max_size=5),
       st.lists(LABEL_KEYS | st.text(max_size=30), max_size=6) | JSON)
def test_any_node_object_plans_only_own_keys(meta_extra, labels, annotation):
    node = {"metadata": {"labels": labels, "annotations": {
        "edgeagent.io/owned-labels": ",".join(annotation) if isinstance(annotation, list)
        and all(isinstance(a, str) for a in annotation) else annotation}, "x": meta_extra}}
    desired = {"edgeagent.io/board": "b", "nvidia.com/gpu.product": "Orin"}
    for plan in (bounded(plan_labels, node, desired, "edgeagent.io/", errors=ValueError),
                 bounded(plan_removal, node, "edgeagent.io/", errors=ValueError)):
        assert not isinstance(plan, Exception), plan
        touched = (plan.patch or {}).get("metadata", {}).get("labels", {})
        assert all(is_own_key(k, "edgeagent.io/") for k in touched), touched
    # Anything that is not a Node is refused, never planned against as if it were empty.
    if not (isinstance(meta_extra, dict) and isinstance(meta_extra.get("metadata"), dict)):
        assert isinstance(bounded(plan_labels, meta_extra, desired, "edgeagent.io/",
                                  errors=ValueError), ValueError)


@FUZZ
@given(st.text(max_size=80) | st.sampled_from([
    "12", " 7 ", "\u0661\u0662", "\uff11\uff12", "9" * 5000, "Wed, 21 Oct 2015 07:28:00 GMT",
    "Wed, 99 Foo"]))
def test_response_headers_of_any_text(value):
    from edgeagent.kube.client import header_date, parse_retry_after

    seconds = bounded(parse_retry_after, value, 0.0, errors=())
    assert seconds is None or seconds >= 0
    if seconds is not None:
        assert value.strip().isascii()
    date = bounded(header_date, {"Date": value}, errors=())
    assert date is None or isinstance(date, float)
