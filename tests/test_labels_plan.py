"""The merge-patch planner (pure): ownership, precondition, minimal changes."""

from hypothesis import given, settings
from hypothesis import strategies as st

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
    plan = plan_labels(node({"kubernetes.io/hostname": "n"}), {"b.io/x": "1", "a.io/y": "2"}, P)
    assert plan.patch == {"metadata": {
        "resourceVersion": "7",
        "labels": {"a.io/y": "2", "b.io/x": "1"},
        "annotations": {ANN: "a.io/y,b.io/x"}}}
    assert plan.owned == ("a.io/y", "b.io/x")


def test_no_patch_when_nothing_changed():
    n = node({"a.io/y": "2"}, owned=["a.io/y"])
    assert plan_labels(n, {"a.io/y": "2"}, P).patch is None


def test_changed_value_and_stale_owned_label():
    n = node({"a.io/y": "2", "a.io/old": "1", "other.io/keep": "z"}, owned=["a.io/old", "a.io/y"])
    plan = plan_labels(n, {"a.io/y": "3"}, P)
    assert plan.patch["metadata"]["labels"] == {"a.io/old": None, "a.io/y": "3"}
    assert plan.patch["metadata"]["annotations"] == {ANN: "a.io/y"}
    assert plan.removed == ("a.io/old",)


def test_labels_not_owned_are_never_touched_whatever_their_prefix():
    # Someone else (an admin, GFD, the devicetree labeller) set these keys first.
    n = node({"nvidia.com/gpu.product": "Custom", "edgeagent.io/board": "mine-not"}, owned=[])
    plan = plan_labels(n, {"nvidia.com/gpu.product": "Orin", "edgeagent.io/board": "X",
                           "edgeagent.io/soc": "t"}, P)
    assert plan.patch["metadata"]["labels"] == {"edgeagent.io/soc": "t"}
    assert plan.foreign == ("edgeagent.io/board", "nvidia.com/gpu.product")
    assert plan.owned == ("edgeagent.io/soc",)


def test_owned_label_removed_by_someone_is_restored():
    n = node({}, owned=["a.io/y"])
    plan = plan_labels(n, {"a.io/y": "2"}, P)
    assert plan.patch["metadata"]["labels"] == {"a.io/y": "2"}
    assert "annotations" not in plan.patch["metadata"]


def test_nothing_desired_removes_the_annotation():
    n = node({"a.io/y": "2"}, owned=["a.io/y"])
    plan = plan_labels(n, {}, P)
    assert plan.patch["metadata"] == {"resourceVersion": "7", "labels": {"a.io/y": None},
                                      "annotations": {ANN: None}}
    assert plan_labels(node({}), {}, P).patch is None


def test_removal_removes_exactly_the_owned_labels():
    n = node({"a.io/y": "2", "b.io/z": "3", "kubernetes.io/hostname": "n"}, owned=["a.io/y",
                                                                                 "gone.io/q"])
    plan = plan_removal(n, P)
    assert plan.patch == {"metadata": {"resourceVersion": "7", "labels": {"a.io/y": None},
                                       "annotations": {ANN: None}}}
    assert plan_removal(node({"a.io/y": "1"}), P).patch is None


def test_garbage_in_the_annotation_is_ignored():
    assert parse_owned("a.io/x, ,bad key,b.io/y,a.io/x") == ["a.io/x", "b.io/y"]
    assert parse_owned(None) == []


def test_empty_or_odd_node_objects():
    plan = plan_labels({}, {"a.io/x": "1"}, P)
    assert plan.patch == {"metadata": {"labels": {"a.io/x": "1"}, "annotations": {ANN: "a.io/x"}}}
    assert plan_labels({"metadata": {"labels": None}}, {}, P).patch is None


KEYS = st.sampled_from(["a.io/x", "a.io/y", "b.io/z", "nvidia.com/gpu.count", "plain"])
VALS = st.sampled_from(["1", "2", "v"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALS), st.lists(KEYS), st.dictionaries(KEYS, VALS))
def test_patch_converges_and_respects_ownership(current, owned, desired):
    n = node(current, owned=sorted(set(owned)))
    plan = plan_labels(n, desired, P)
    # merged the way the test API server merges it (its own RFC 7386 implementation)
    after = merge_patch(n, plan.patch) if plan.patch else n
    labels = after["metadata"]["labels"]
    owned_before = set(owned)
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
