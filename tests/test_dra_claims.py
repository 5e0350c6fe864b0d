"""Which devices of a ResourceClaim the driver prepares on this node: a table of claims the API
server may return (v1, v1beta1, v1beta2 shapes), and hostile JSON that must end in ClaimError."""

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.dra.claims import AllocatedDevice, ClaimError, ClaimRef, devices_to_prepare
from tests.costbound import bounded, within_memory

NODE = "jetson-1"
KNOWN = ("gpu-0", "dla-0", "dla-1")
REF = ClaimRef("ml", "train", "uid-1")
FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def claim(results, uid="uid-1", api="resource.k8s.io/v1", allocated=True):
    obj = {"apiVersion": api, "kind": "ResourceClaim",
           "metadata": {"namespace": "ml", "name": "train", "uid": uid}, "status": {}}
    if allocated:
        obj["status"]["allocation"] = {"devices": {"results": results}}
    return obj


def result(request, device, driver="edgeagent.io", pool=NODE, **extra):
    return dict({"request": request, "driver": driver, "pool": pool, "device": device}, **extra)


def prepare(obj):
    return devices_to_prepare(obj, REF, "edgeagent.io", NODE, KNOWN)


@pytest.mark.parametrize("api", ["resource.k8s.io/v1", "resource.k8s.io/v1beta1",
                                 "resource.k8s.io/v1beta2"])
def test_our_results_in_order_others_left_to_their_drivers(api):
    obj = claim([result("gpu", "gpu-0"), result("nic", "eth1", driver="net.example.com",
                                                pool="elsewhere"),
                 result("dla/fast", "dla-1", shareID="4f1c-share")], api=api)
    assert prepare(obj) == (AllocatedDevice(("gpu",), NODE, "gpu-0"),
                            AllocatedDevice(("dla",), NODE, "dla-1", "4f1c-share"))


def test_a_claim_without_our_devices_prepares_nothing():
    assert prepare(claim([result("nic", "eth1", driver="net.example.com")])) == ()
    assert prepare(claim([])) == ()


@pytest.mark.parametrize("obj, words", [
    (claim([result("gpu", "gpu-0")], uid="uid-2"), ["re-created", "uid-2", "delete the pod"]),
    (claim([], allocated=False), ["not allocated yet", "retries"]),
    (claim([result("gpu", "gpu-0", pool="jetson-2")]), ["jetson-2", "not to this node"]),
    (claim([result("gpu", "gpu-7")]), ["gpu-7", "does not have", "dla-0, dla-1, gpu-0"]),
    (claim([result("", "gpu-0")]), ["request is missing"]),
    (claim([result("gpu", "gpu-0", shareID=7)]), ["shareID is not a string"]),
    (dict(claim([]), apiVersion="v1"), ["not a ResourceClaim"]),
    ([], ["not an object"]),
    ({"metadata": None}, ["metadata is not an object"]),
    (dict(claim([]), status={"allocation": {"devices": {"results": {}}}}), ["not a list"]),
])
def test_claims_that_cannot_be_prepared_say_why(obj, words):
    with pytest.raises(ClaimError) as e:
        prepare(obj)
    message = str(e.value)
    assert "\n" not in message and "ml/train" in message or "not an object" in message
    for w in words:
        assert w in message


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=40)
KEYS = st.sampled_from(["apiVersion", "metadata", "uid", "status", "allocation", "devices",
                        "results", "request", "driver", "pool", "device", "shareID"])
SHAPED = st.recursive(JSON, lambda inner: st.dictionaries(KEYS, inner, max_size=6)
                      | st.lists(inner, max_size=4), max_leaves=60)


def mutate(base, data):
    """A valid claim with one value somewhere replaced by anything."""
    obj = json.loads(json.dumps(base))
    node = obj
    path = data.draw(st.lists(KEYS, max_size=6))
    for key in path:
        if isinstance(node, dict) and isinstance(node.get(key), (dict, list)):
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[0]
    if isinstance(node, dict):
        node[data.draw(KEYS)] = data.draw(JSON)
    return obj


@FUZZ
@given(st.one_of(JSON, SHAPED))
def test_hostile_json_ends_in_claim_error(obj):
    out = within_memory(lambda: prepare(obj), 4 << 20, (ClaimError,))
    assert isinstance(out, (tuple, ClaimError))


@FUZZ
@given(st.data())
def test_mutated_claims_end_in_devices_or_claim_error(data):
    base = claim([result("gpu", "gpu-0"), result("dla", "dla-0", shareID="s")])
    obj = mutate(base, data)
    out = within_memory(lambda: prepare(obj), 4 << 20, (ClaimError,))
    if isinstance(out, tuple):
        assert all(d.device in KNOWN and d.pool == NODE for d in out)


def test_a_huge_claim_is_bounded():
    obj = claim([result("r%d" % i, "gpu-0") for i in range(20000)])
    out = bounded(lambda: prepare(obj), 2.0, 32 << 20)
    assert len(out) == 20000
    deep = {}
    node = deep
    for _ in range(50000):
        node["status"] = {}
        node = node["status"]
    bounded(lambda: prepare({"metadata": {"uid": "uid-1"}, "status": deep}), 1.0, 8 << 20,
            (ClaimError,))
    nested = []
    for _ in range(100000):
        nested = [nested]
    for obj in ({"metadata": {"uid": nested}}, dict(claim([]), apiVersion=nested),
                claim([result("gpu", "x" * 10 ** 6)]), {"metadata": {"uid": 10 ** 4000}}):
        error = bounded(lambda: prepare(obj), 1.0, 8 << 20, (ClaimError,))
        assert isinstance(error, ClaimError) and len(str(error)) < 600


def test_a_first_available_subrequest_answers_for_its_request():
    # resources.claims[].request in the container names "gpu", the result "gpu/orin": the
    # kubelet keeps only the devices whose request_names hold the container's request.
    (got,) = prepare(claim([result("gpu/orin", "gpu-0")]))
    assert got.requests == ("gpu",) and got.device == "gpu-0"
