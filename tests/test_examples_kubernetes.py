"""examples/kubernetes: the manifests are valid Kubernetes objects and ask for what they say.

Validation works offline with kubectl alone (`kubectl apply --dry-run=client` needs an API
server for discovery, even with --validate=false): `kubectl label --local` reads each file as
kubectl does (YAML, several documents) into plain JSON, and `kubectl set env --local` decodes
every object with a pod template into the real Go types of the API (k8s.io/api), the same
decoding the API server does. A field of the wrong type fails that decoding, and an unknown
field (a typo like `nodeSelektor`) is silently dropped by it - so every field of the file must
still be there after the round trip. Then the checks this kit cares about: GPU requests,
node selectors on our labels, time-slicing, and the CUDA source compiling with a real nvcc.
"""

import json
import os
import re
import subprocess

import pytest

from tests.conftest import REPO
from tests.tools import require_tool

EXAMPLES = os.path.join(REPO, "examples", "kubernetes")
CHECK_LABEL = "edgeagent.io/kit-check"
CHECK_ENV = "EDGEAGENT_KIT_CHECK"
GPU = "nvidia.com/gpu"
FAMILIES = {"maxwell", "pascal", "volta", "ampere", "blackwell"}
# Kubernetes label syntax (apimachinery validation.IsQualifiedName / IsValidLabelValue)
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       + _NAME + "$")
LABEL_VALUE = re.compile(r"^(" + _NAME + ")?$")


def kubectl(*args, stdin=None):
    tool = require_tool("kubectl")
    env = dict(os.environ, KUBECONFIG=os.devnull)   # never talk to a real cluster
    return subprocess.run([tool] + list(args), input=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=60)


def json_stream(text):
    decoder = json.JSONDecoder()
    objects, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return objects
        obj, pos = decoder.raw_decode(text, pos)
        objects.append(obj)


def manifest_files():
    return sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".yaml"))


def read_objects(name):
    """The objects of one file, as kubectl reads them (our check label removed again)."""
    result = kubectl("label", "--local", "-f", os.path.join(EXAMPLES, name), "-o", "json",
                     CHECK_LABEL + "=1")
    assert result.returncode == 0, result.stderr
    objects = json_stream(result.stdout)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        del labels[CHECK_LABEL]
        if not labels:
            del obj["metadata"]["labels"]
    return objects


def typed_round_trip(obj):
    """The object decoded into the API's Go types and encoded again, or kubectl's error."""
    result = kubectl("set", "env", "--local", "-f", "-", "-o", "json", CHECK_ENV + "=1",
                     stdin=json.dumps(obj))
    return result.returncode, result.stdout, result.stderr


def leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaf_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaf_paths(item, prefix + (i,))
    else:
        yield prefix


def lookup(value, path):
    for key in path:
        value = value[key]
    return value


def has_path(value, path):
    try:
        lookup(value, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def pod_spec(obj):
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def all_objects():
    return {name: read_objects(name) for name in manifest_files()}


@pytest.fixture(scope="module")
def objects():
    return all_objects()


def by_kind(objects, kind):
    return [(name, o) for name, objs in objects.items() for o in objs if o["kind"] == kind]


def test_the_examples_are_there():
    assert set(manifest_files()) == {"gpu-device-query.yaml", "board-nodeselector.yaml",
                                     "gpu-family-nodeselector.yaml",
                                     "time-sliced-deployment.yaml"}


@pytest.mark.parametrize("name", manifest_files())
def test_manifest_decodes_into_the_api_types_without_losing_a_field(name):
    for obj in read_objects(name):
        code, out, err = typed_round_trip(obj)
        if obj["kind"] in ("Pod", "Deployment"):
            assert code == 0, "%s %s: %s" % (name, obj["kind"], err)
            typed = json_stream(out)[0]
            lost = [p for p in leaf_paths(obj) if not has_path(typed, p)]
            assert lost == [], "%s: fields unknown to %s/%s: %s" % (
                name, obj["apiVersion"], obj["kind"], lost)
        else:
            # decoded fine; only `set env` itself does not apply to a ConfigMap
            assert "unable to decode" not in err, err
            assert "does not have a pod template" in err, err


def test_the_typed_check_catches_typos_and_wrong_types():
    pod = read_objects("board-nodeselector.yaml")[0]
    typo = json.loads(json.dumps(pod))
    typo["spec"]["nodeSelektor"] = typo["spec"].pop("nodeSelector")
    code, out, _ = typed_round_trip(typo)
    assert code == 0 and "nodeSelektor" not in out          # dropped, so the test above fails
    wrong = json.loads(json.dumps(read_objects("time-sliced-deployment.yaml")[0]))
    wrong["spec"]["replicas"] = "four"
    code, _, err = typed_round_trip(wrong)
    assert code != 0 and "replicas" in err


def test_every_object_is_labelled_and_named(objects):
    for name, objs in objects.items():
        for obj in objs:
            meta = obj["metadata"]
            assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", meta["name"]), name
            assert meta["labels"]["app.kubernetes.io/part-of"] == "edgeagent-examples", name


def test_node_selectors_are_valid_labels(objects):
    for name, objs in objects.items():
        for obj in objs:
            if obj["kind"] == "ConfigMap":
                continue
            for key, value in pod_spec(obj).get("nodeSelector", {}).items():
                assert LABEL_KEY.match(key) and len(key.split("/")[-1]) <= 63, (name, key)
                assert isinstance(value, str) and LABEL_VALUE.match(value), (name, value)


def gpu_limit(container):
    return container.get("resources", {}).get("limits", {}).get(GPU)


def test_gpu_pods_ask_for_one_gpu_unprivileged(objects):
    gpu_pods = 0
    for name, objs in objects.items():
        for obj in objs:
            if obj["kind"] == "ConfigMap":
                continue
            spec = pod_spec(obj)
            for container in spec["containers"]:
                sc = container.get("securityContext", {})
                assert not sc.get("privileged"), (name, "the device plugin gives the GPU")
                if gpu_limit(container) is not None:
                    gpu_pods += 1
                    assert int(gpu_limit(container)) == 1, name
                    # CUDA that matches the board: L4T images, or SBSA CUDA on Thor
                    assert container["image"].startswith(("nvcr.io/nvidia/l4t-jetpack:r",
                                                          "nvcr.io/nvidia/cuda:")), name
    assert gpu_pods == 3


def test_the_device_query_pod(objects):
    (_, pod), = [(n, o) for n, o in by_kind(objects, "Pod")
                 if o["metadata"]["name"] == "cuda-device-query"]
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert gpu_limit(container) is not None
    assert "device_query" in " ".join(container["command"] + container["args"])


def test_configmaps_that_pods_mount_exist(objects):
    configmaps = {o["metadata"]["name"] for _, o in by_kind(objects, "ConfigMap")}
    for name, objs in objects.items():
        for obj in objs:
            if obj["kind"] == "ConfigMap":
                continue
            for volume in pod_spec(obj).get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in configmaps, name


def test_board_family_pod_selects_a_devicetree_label(objects):
    (_, pod), = [(n, o) for n, o in by_kind(objects, "Pod")
                 if n == "board-nodeselector.yaml"]
    selector = pod["spec"]["nodeSelector"]
    assert list(selector) == ["beta.devicetree.org/nvidia-tegra234"]
    assert selector["beta.devicetree.org/nvidia-tegra234"] == "1"


def test_gpu_family_pod_selects_gfd_labels(objects):
    (_, pod), = [(n, o) for n, o in by_kind(objects, "Pod")
                 if n == "gpu-family-nodeselector.yaml"]
    selector = pod["spec"]["nodeSelector"]
    assert selector["nvidia.com/gpu.family"] in FAMILIES
    assert selector["nvidia.com/gpu.present"] == "true"
    assert gpu_limit(pod["spec"]["containers"][0]) is not None


def test_time_sliced_deployment(objects):
    (_, deployment), = by_kind(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] > 1
    template = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.sharing-strategy": "time-slicing"}
    for container in template["spec"]["containers"]:
        assert int(gpu_limit(container)) == 1


def test_device_query_source_compiles_with_nvcc(objects, tmp_path):
    """The CUDA program in the ConfigMap builds with a real nvcc (CUDA 13 here: the newest API,
    where long-deprecated cudaDeviceProp fields are gone). There is no GPU to run it on."""
    nvcc = require_tool("nvcc")
    (_, configmap), = by_kind(objects, "ConfigMap")
    source = tmp_path / "device_query.cu"
    source.write_text(configmap["data"]["device_query.cu"])
    result = subprocess.run([nvcc, "-o", str(tmp_path / "device_query"), str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "warning" not in result.stdout.lower(), result.stdout
    assert (tmp_path / "device_query").exists()
