"""The merge-patch planner (pure): ownership, precondition, minimal changes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.labels.compute import is_own_key
from edgeagent.labels.plan import parse_owned, plan_labels, plan_removal
from tests.peers.kubeapi import merge_patch

P = "edgeagent.io/"
ANN = "edgeagent.io/owned-labels"


def node(labels=None, owned=None, rv="7", annotations=None):
    ann = dict(annotations or {})
    if owned is not None:
        ann[ANN] = ",".join(owned)
    return {"metadata": {"name": "n", "resourceVersion": rv, "labels": dict(labels or {}),
                         "annotations": ann}}


def test_first_patch_sets_labels_and_claims_them():
    plan = plan_labels(node({"kubernetes.io/hostname": "n"}),
                       {"edgeagent.io/y": "2", "beta.devicetree.org/x": "1"}, P)
    assert plan.patch == {"metadata": {
        "resourceVersion": "7",
        "labels": {"beta.devicetree.org/x": "1", "edgeagent.io/y": "2"},
        "annotations": {ANN: "beta.devicetree.org/x,edgeagent.io/y"}}}
    assert plan.owned == ("beta.devicetree.org/x", "edgeagent.io/y")
    with pytest.raises(ValueError, match="team"):   # never computed: a caller's bug
        plan_labels(node({}), {"team": "x"}, P)


def test_no_patch_when_nothing_changed():
    n = node({"edgeagent.io/y": "2"}, owned=["edgeagent.io/y"])
    assert plan_labels(n, {"edgeagent.io/y": "2"}, P).patch is None


def test_changed_value_and_stale_owned_label():
    n = node({"edgeagent.io/y": "2", "edgeagent.io/old": "1", "other.io/keep": "z"},
             owned=["edgeagent.io/old", "edgeagent.io/y"])
    plan = plan_labels(n, {"edgeagent.io/y": "3"}, P)
    assert plan.patch["metadata"]["labels"] == {"edgeagent.io/old": None, "edgeagent.io/y": "3"}
    assert plan.patch["metadata"]["annotations"] == {ANN: "edgeagent.io/y"}
    assert plan.removed == ("edgeagent.io/old",)


def test_labels_not_owned_are_never_touched_whatever_their_prefix():
    # Someone else (an admin, GFD, the devicetree labeller) set these keys first.
    n = node({"nvidia.com/gpu.product": "Custom", "edgeagent.io/board": "mine-not"}, owned=[])
    plan = plan_labels(n, {"nvidia.com/gpu.product": "Orin", "edgeagent.io/board": "X",
                           "edgeagent.io/soc": "t"}, P)
    assert plan.patch["metadata"]["labels"] == {"edgeagent.io/soc": "t"}
    assert plan.foreign == ("edgeagent.io/board", "nvidia.com/gpu.product")
    assert plan.owned == ("edgeagent.io/soc",)


def test_owned_label_removed_by_someone_is_restored():
    n = node({}, owned=["edgeagent.io/y"])
    plan = plan_labels(n, {"edgeagent.io/y": "2"}, P)
    assert plan.patch["metadata"]["labels"] == {"edgeagent.io/y": "2"}
    assert "annotations" not in plan.patch["metadata"]


def test_nothing_desired_removes_the_annotation():
    n = node({"edgeagent.io/y": "2"}, owned=["edgeagent.io/y"])
    plan = plan_labels(n, {}, P)
    assert plan.patch["metadata"] == {"resourceVersion": "7", "labels": {"edgeagent.io/y": None},
                                      "annotations": {ANN: None}}
    assert plan_labels(node({}), {}, P).patch is None


def test_removal_removes_exactly_the_owned_labels():
    n = node({"edgeagent.io/y": "2", "beta.devicetree.org/z": "3", "kubernetes.io/hostname": "n"},
             owned=["edgeagent.io/y", "edgeagent.io/gone"])
    plan = plan_removal(n, P)
    assert plan.patch == {"metadata": {"resourceVersion": "7", "labels": {"edgeagent.io/y": None},
                                       "annotations": {ANN: None}}}
    assert plan_removal(node({"edgeagent.io/y": "1"}), P).patch is None


def test_garbage_in_the_annotation_is_ignored():
    assert parse_owned("edgeagent.io/x, ,bad key,beta.devicetree.org/y,edgeagent.io/x") == [
        "beta.devicetree.org/y", "edgeagent.io/x"]
    assert parse_owned(None) == []


def test_odd_node_objects_and_no_node_at_all():
    plan = plan_labels({"metadata": {}}, {"edgeagent.io/x": "1"}, P)
    assert plan.patch == {"metadata": {"labels": {"edgeagent.io/x": "1"},
                                       "annotations": {ANN: "edgeagent.io/x"}}}
    assert plan_labels({"metadata": {"labels": None}}, {}, P).patch is None
    # Something that is no Node (an empty or unparsed read) is never planned against.
    for not_a_node in ({}, {"metadata": None}, {"kind": "Status"}, [], None):
        with pytest.raises(ValueError):
            plan_labels(not_a_node, {"edgeagent.io/x": "1"}, P)
        with pytest.raises(ValueError):
            plan_removal(not_a_node, P)


HOSTILE = ["kubernetes.io/hostname", "topology.kubernetes.io/zone", "team",
           "nvidia.com/gpu.mode", "nvidia.com/cuda.driver.major", "example.com/anything"]


def test_a_hand_edited_annotation_claims_nothing_outside_the_own_families():
    current = {"kubernetes.io/hostname": "n", "topology.kubernetes.io/zone": "z1", "team": "ml",
               "nvidia.com/gpu.mode": "compute", "nvidia.com/cuda.driver.major": "540",
               "example.com/anything": "x", "edgeagent.io/old": "1"}
    n = node(current, owned=HOSTILE + ["edgeagent.io/old"])
    plan = plan_labels(n, {"edgeagent.io/board": "b"}, P)
    assert plan.patch["metadata"]["labels"] == {"edgeagent.io/board": "b",
                                                "edgeagent.io/old": None}
    assert plan.patch["metadata"]["annotations"] == {ANN: "edgeagent.io/board"}
    assert plan.ignored == tuple(sorted(HOSTILE))
    removal = plan_removal(n, P)
    assert removal.patch["metadata"]["labels"] == {"edgeagent.io/old": None}
    assert removal.removed == ("edgeagent.io/old",) and removal.ignored == tuple(sorted(HOSTILE))


def test_own_families():
    for key in ("edgeagent.io/board", "beta.devicetree.org/nvidia-jetson-nano",
                "nvidia.com/gpu.product", "nvidia.com/gpu.compute.major"):
        assert is_own_key(key, P), key
    for key in HOSTILE + ["nvidia.com/gpu.product.extra", "edgeagent.iox/board",
                          "beta.devicetree.org.evil/x"]:
        assert not is_own_key(key, P), key


KEYS = st.sampled_from(["edgeagent.io/x", "edgeagent.io/y", "beta.devicetree.org/z",
                        "nvidia.com/gpu.count", "nvidia.com/gpu.mode", "plain", "a.io/x"])
OWN_KEYS = st.sampled_from(["edgeagent.io/x", "edgeagent.io/y", "beta.devicetree.org/z",
                            "nvidia.com/gpu.count"])
VALS = st.sampled_from(["1", "2", "v"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALS), st.lists(KEYS), st.dictionaries(OWN_KEYS, VALS))
def test_patch_converges_and_respects_ownership(current, owned, desired):
    n = node(current, owned=sorted(set(owned)))
    plan = plan_labels(n, desired, P)
    # merged the way the test API server merges it (its own RFC 7386 implementation)
    after = merge_patch(n, plan.patch) if plan.patch else n
    labels = after["metadata"]["labels"]
    # Only keys of edgeagent's own families count as owned, whatever the annotation lists.
    owned_before = {k for k in owned if is_own_key(k, P)}
    for key, value in current.items():
        if key not in owned_before:                # not ours: untouched
            assert labels.get(key) == value
    for key, value in desired.items():
        if key not in current or key in owned_before:
            assert labels.get(key) == value        # ours: as desired
    for key in owned_before - set(desired):
        assert key not in labels                   # ours, no longer wanted: gone
    # A second round has nothing to do.
    assert plan_labels(after, desired, P).patch is None
