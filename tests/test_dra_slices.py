"""Pure: the ResourceSlice body and the reconcile plan; checked against the v1 ResourceSlice
rules the test API server enforces (tests/peers/kubeapi.py slice_problems), and fuzzed where it
reads what the API server returns."""

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.dra.model import Attribute, DraDevice
from edgeagent.dra.slices import MAX_DEVICES, canonical_quantity, consumable_dropped, covers, \
    pick_version, plan_slices, read_slice, slice_body, slice_name
from edgeagent.kube.client import served_versions
from tests.costbound import bounded
from tests.peers.kubeapi import canonical_quantity as server_canonical
from tests.peers.kubeapi import slice_problems

NODE = "jetson-1"


def gpu(healthy=True, memory="7620Mi", shareable=True):
    return DraDevice("gpu-0", "gpu", healthy, "", ("edgeagent.io/gpu=0",),
                     {"type": Attribute("string", "gpu"),
                      "computeCapability": Attribute("version", "8.7.0"),
                      "unifiedMemory": Attribute("bool", True)},
                     {"memory": memory} if memory else {}, shareable)


def dla(n, healthy=True):
    return DraDevice("dla-%d" % n, "dla", healthy, "", ("edgeagent.io/dla=%d" % n,),
                     {"type": Attribute("string", "dla"), "dlaEngine": Attribute("int", n)}, {})


def stored(body, rv="10"):
    """What the API server would return for ``body``: with metadata it adds."""
    out = copy.deepcopy(body)
    out["metadata"].update(resourceVersion=rv, uid="u-1", generation=1,
                           creationTimestamp="2026-01-01T00:00:00Z")
    out["spec"].setdefault("perDeviceNodeSelection", None)
    return out


def test_the_body_is_a_valid_v1_slice():
    body = slice_body(NODE, [gpu(), dla(0), dla(1, healthy=False)], 3, True)
    assert slice_problems(body) == []
    assert body["apiVersion"] == "resource.k8s.io/v1" and body["kind"] == "ResourceSlice"
    assert body["metadata"] == {"name": "jetson-1-edgeagent.io"}
    assert body["spec"]["pool"] == {"name": NODE, "generation": 3, "resourceSliceCount": 1}
    assert body["spec"]["nodeName"] == NODE and body["spec"]["driver"] == "edgeagent.io"
    gpu_json, dla_json = body["spec"]["devices"]     # the unhealthy DLA left the slice
    assert gpu_json == {
        "name": "gpu-0",
        "attributes": {"computeCapability": {"version": "8.7.0"}, "type": {"string": "gpu"},
                       "unifiedMemory": {"bool": True}},
        "capacity": {"memory": {"value": "7620Mi", "requestPolicy": {
            "default": "1Gi", "validRange": {"min": "256Mi", "max": "7620Mi"}}}},
        "allowMultipleAllocations": True}
    assert dla_json == {"name": "dla-0", "attributes": {"dlaEngine": {"int": 0},
                                                        "type": {"string": "dla"}}}


@pytest.mark.parametrize("memory,policy", [
    ("100Mi", {"default": "100Mi", "validRange": {"min": "100Mi", "max": "100Mi"}}),
    ("512Mi", {"default": "512Mi", "validRange": {"min": "256Mi", "max": "512Mi"}}),
    ("8Gi", {"default": "1Gi", "validRange": {"min": "256Mi", "max": "8Gi"}}),
])
def test_request_policy_fits_any_memory(memory, policy):
    body = slice_body(NODE, [gpu(memory=memory)], 1, True)
    assert body["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"] == policy
    assert slice_problems(body) == []


def test_exclusive_form_and_no_memory():
    body = slice_body(NODE, [gpu()], 1, False)
    assert body["spec"]["devices"][0]["capacity"] == {"memory": {"value": "7620Mi"}}
    assert "allowMultipleAllocations" not in body["spec"]["devices"][0]
    body = slice_body(NODE, [gpu(memory="")], 1, True)
    assert "capacity" not in body["spec"]["devices"][0]
    assert slice_problems(body) == []


def test_at_most_128_devices():
    body = slice_body(NODE, [dla(n) for n in range(MAX_DEVICES + 5)], 1, True)
    assert len(body["spec"]["devices"]) == MAX_DEVICES
    assert slice_problems(body) == []


@pytest.mark.parametrize("node", ["jetson-1", "Jetson-ABC", "a" * 253, "n." * 120 + "x",
                                  "x" * 240 + ".y"])
def test_slice_name_is_a_dns_subdomain(node):
    name = slice_name(node)
    assert len(name) <= 253 and name.endswith("-edgeagent.io")
    body = slice_body(node.lower(), [gpu()], 1, True)
    assert slice_problems(body) == []
    if len(node) < 200:
        assert name == node.lower() + "-edgeagent.io"


def test_long_names_stay_unique():
    assert slice_name("a" * 250 + "b") != slice_name("a" * 250 + "c")


@pytest.mark.parametrize("text", ["7620Mi", "1024Mi", "1048576Ki", "8Gi", "0Mi", "1", "3Ti",
                                  "1536Mi", "2048Gi"])
def test_quantities_are_written_as_the_server_stores_them(text):
    assert canonical_quantity(text) == server_canonical(text)


def test_pick_version():
    assert pick_version(("v1", "v1beta2", "v1beta1")) == "v1"
    assert pick_version(("v1beta1", "v1beta2")) == "v1beta2"
    assert pick_version(("v1beta1",)) is None and pick_version(()) is None


# --- the plan -----------------------------------------------------------------------------

def test_plan_create_update_unchanged():
    devices = [gpu(), dla(0)]
    plan = plan_slices(NODE, devices, True, [])
    assert plan.create == slice_body(NODE, devices, 1, True) and plan.update is None
    current = stored(plan.create, rv="10")
    assert plan_slices(NODE, devices, True, [current]).empty
    plan = plan_slices(NODE, [gpu(), dla(0, healthy=False)], True, [current])
    assert plan.create is None and plan.delete == ()
    assert plan.update == slice_body(NODE, [gpu()], 2, True, resource_version="10")


def test_a_slice_without_devices_is_not_rewritten():
    # Every device unhealthy: the server returns the slice without "devices" (omitempty).
    plan = plan_slices(NODE, [], True, [])
    current = stored(plan.create, rv="10")
    current["spec"].pop("devices", None)
    assert plan_slices(NODE, [], True, [current]).empty


def test_plan_deletes_stale_and_outranks_their_generation():
    mine = stored(slice_body(NODE, [gpu()], 2, True), rv="10")
    old = stored(slice_body(NODE, [gpu()], 9, True), rv="11")
    old["metadata"]["name"] = "renamed"
    theirs = stored(slice_body("jetson-2", [gpu()], 1, True), rv="12")   # never touched
    other_driver = stored(slice_body(NODE, [gpu()], 1, True), rv="13")
    other_driver["spec"]["driver"] = "gpu.nvidia.com"
    other_driver["metadata"]["name"] = "x"
    plan = plan_slices(NODE, [gpu()], True, [mine, old, theirs, other_driver, "junk", {}])
    assert plan.delete == (("renamed", "11"),)
    assert plan.update["spec"]["pool"]["generation"] == 10
    plan = plan_slices(NODE, [gpu()], True, [old])
    assert plan.delete == (("renamed", "11"),)
    assert plan.create["spec"]["pool"]["generation"] == 10


def test_plan_tolerates_fields_the_server_adds_but_not_ones_it_drops():
    body = slice_body(NODE, [gpu()], 1, True)
    current = stored(body)
    current["spec"]["devices"][0]["attributes"]["type"]["future"] = None
    current["spec"]["devices"][0]["bindsToNode"] = False
    assert plan_slices(NODE, [gpu()], True, [current]).empty
    dropped = stored(body)
    del dropped["spec"]["devices"][0]["allowMultipleAllocations"]
    del dropped["spec"]["devices"][0]["capacity"]["memory"]["requestPolicy"]
    assert consumable_dropped(body, dropped)
    assert not consumable_dropped(body, stored(body))
    assert not consumable_dropped(slice_body(NODE, [gpu()], 1, False), dropped)
    # Once the publisher knows, the server's form is what it wants: no endless updates.
    assert plan_slices(NODE, [gpu()], False, [dropped]).empty
    assert not plan_slices(NODE, [gpu()], True, [dropped]).empty


def test_covers_types_and_lists():
    assert covers({"a": 1, "b": 2}, {"a": 1})
    assert not covers({"a": True}, {"a": 1})
    assert not covers({"a": 1.0}, {"a": 1})
    assert not covers([1, 2], [1])
    assert not covers({}, {"a": None})
    deep_a, deep_w = [], []
    a, w = deep_a, deep_w
    for _ in range(100000):
        a.append([])
        w.append([])
        a, w = a[0], w[0]
    assert covers(deep_a, deep_w)


# --- fuzz: anything the API server could return -------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
                    st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=5) |
                    st.dictionaries(st.sampled_from(
                        ["metadata", "spec", "name", "resourceVersion", "nodeName", "driver",
                         "pool", "generation", "devices", "allowMultipleAllocations",
                         "versions", "version", "preferredVersion", "items"]) |
                        st.text(max_size=5), inner, max_size=6),
                    max_leaves=30)


def slice_like():
    return st.fixed_dictionaries({
        "metadata": st.fixed_dictionaries({"name": st.sampled_from(
            ["jetson-1-edgeagent.io", "old", ""]) | JSON, "resourceVersion": JSON}),
        "spec": st.fixed_dictionaries({
            "nodeName": st.sampled_from([NODE, "jetson-2"]) | JSON,
            "driver": st.just("edgeagent.io") | JSON,
            "pool": st.fixed_dictionaries({"name": st.just(NODE) | JSON,
                                           "generation": st.integers(-5, 2 ** 70) | JSON}),
            "devices": JSON})}) | JSON


@settings(max_examples=150, deadline=None)
@given(st.lists(slice_like(), max_size=4))
def test_plan_reads_any_listed_objects(existing):
    def run():
        plan = plan_slices(NODE, [gpu(), dla(0)], True, existing)
        sent = plan.create or plan.update
        if sent is not None:
            assert slice_problems(sent) == []
            assert sent["spec"]["pool"]["generation"] >= 1
        for name, rv in plan.delete:
            assert isinstance(name, str) and name and isinstance(rv, str)
        return plan

    bounded(run, 0.5, 4 << 20)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_readers_of_answers_are_total(answer):
    bounded(lambda: (read_slice(answer), served_versions(answer),
                     consumable_dropped(slice_body(NODE, [gpu()], 1, True), answer),
                     covers(answer, json.loads(json.dumps(answer)))), 0.5, 4 << 20)
    assert covers(answer, copy.deepcopy(answer))


# --- the test API server's rules are live: each one refuses what it should ------------------

def _broken(change):
    body = slice_body(NODE, [gpu(), dla(0)], 1, True)
    change(body)
    return slice_problems(body)


def _dev(body, i=0):
    return body["spec"]["devices"][i]


@pytest.mark.parametrize("change,problem", [
    (lambda b: _dev(b, 1).update(name="gpu-0"), "Duplicate value"),
    (lambda b: _dev(b).update(name="GPU_0"), "a DNS label"),
    (lambda b: b["spec"].update(devices=[dict(_dev(b, 1), name="d%d" % i)
                                         for i in range(129)]), "Too many: 129"),
    (lambda b: _dev(b)["attributes"].update(x={"string": "a", "int": 1}),
     "exactly one value"),
    (lambda b: _dev(b)["attributes"].update(x={"int": True}), "not an integer"),
    (lambda b: _dev(b)["attributes"].update(x={"string": "a" * 65}), "at most 64"),
    (lambda b: _dev(b)["attributes"].update(x={"version": "8.7"}), "semantic version"),
    (lambda b: _dev(b)["attributes"].update({"1x": {"bool": True}}), "C identifier"),
    (lambda b: _dev(b)["attributes"].update({"a" * 33: {"bool": True}}), "C identifier"),
    (lambda b: _dev(b)["attributes"].update({"Bad_Domain/x": {"bool": True}}), "domain"),
    (lambda b: _dev(b)["attributes"].update({"a%d" % i: {"int": i} for i in range(40)}),
     "Too many: attributes"),
    (lambda b: _dev(b).pop("allowMultipleAllocations"), "allowMultipleAllocations must be"),
    (lambda b: _dev(b)["capacity"]["memory"]["requestPolicy"]["validRange"].update(
        min="8Gi"), "min is larger than capacity"),
    (lambda b: _dev(b)["capacity"]["memory"]["requestPolicy"].update(default="8Gi"),
     "default is more than max"),
    (lambda b: _dev(b)["capacity"]["memory"].update(value="lots"), "value: quantity"),
    (lambda b: b["spec"]["pool"].update(generation=-1), "spec.pool.generation"),
    (lambda b: b["spec"]["pool"].update(resourceSliceCount=0), "resourceSliceCount"),
    (lambda b: b["spec"].update(allNodes=True), "exactly one of"),
    (lambda b: b["spec"].update(driver="Edgeagent.IO"), "spec.driver"),
    (lambda b: b["metadata"].update(name="x" * 254), "metadata.name"),
])
def test_server_rules_refuse(change, problem):
    problems = _broken(change)
    assert any(problem in p for p in problems), problems
