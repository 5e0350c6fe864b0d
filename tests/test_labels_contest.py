"""Who else labels nvidia.com/gpu.* and what edgeagent does about it: table tests of the pure
decision (labels/contest.py) and of the plan it shapes, and the parsers of other tools' data
fuzzed under a time and memory bound."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.labels.contest import NF_ERROR, NF_FOUND, NF_NONE, NOT_ASKED, Contest, \
    Evidence, NodeFeatures, decide, detect, node_contest, nodefeatures_for, parse_nfd_labels
from edgeagent.labels.plan import plan_labels, plan_removal
from tests.costbound import bounded

P = "edgeagent.io/"
ANN = P + "owned-labels"
NFD = "nfd.node.kubernetes.io/feature-labels"
PRODUCT, FAMILY, MEMORY = ("nvidia.com/gpu.product", "nvidia.com/gpu.family",
                           "nvidia.com/gpu.memory")
DESIRED = {PRODUCT: "Orin", FAMILY: "ampere", MEMORY: "7619", P + "board": "agx"}
# What nfd-master leaves on a Node where GFD runs (names in its own namespace unprefixed).
GFD_NFD_ANNOTATION = ("cpu-cpuid.ASIMD,kernel-version.full,nvidia.com/cuda.driver.major,"
                      "nvidia.com/gfd.timestamp,nvidia.com/gpu.count,nvidia.com/gpu.family,"
                      "nvidia.com/gpu.product,pci-10de.present")


def test_nfd_annotation_names_are_namespaced_as_on_the_node():
    assert parse_nfd_labels("cpu-cpuid.ASIMD, nvidia.com/gpu.product,,pci-10de.present") == [
        "feature.node.kubernetes.io/cpu-cpuid.ASIMD", "feature.node.kubernetes.io/pci-10de.present",
        "nvidia.com/gpu.product"]
    for nothing in ("", None, 7, ["nvidia.com/gpu.product"]):
        assert parse_nfd_labels(nothing) == []


@pytest.mark.parametrize("labels,annotations,nodefeatures,kinds,managed", [
    # nobody: an empty Node, the plain NFD labels of a CPU, an administrator's one GPU label
    ({}, {}, NOT_ASKED, [], set()),
    ({"feature.node.kubernetes.io/cpu-cpuid.ASIMD": "true"},
     {NFD: "cpu-cpuid.ASIMD,pci-10de.present"}, NOT_ASKED, [], set()),
    ({PRODUCT: "Custom"}, {}, NOT_ASKED, [], set()),
    # gpu-operator's switch is an administrator's, not a labeller
    ({"nvidia.com/gpu.deploy.operands": "false"}, {}, NOT_ASKED, [], set()),
    ({}, {NFD: "nvidia.com/gpu.deploy.operands"}, NOT_ASKED, [], set()),
    # NFD's annotation (also of an nfd-master run with -instance) lists GPU keys
    ({}, {NFD: GFD_NFD_ANNOTATION}, NOT_ASKED, ["nfd-annotation"],
     {"nvidia.com/cuda.driver.major", "nvidia.com/gfd.timestamp", "nvidia.com/gpu.count",
      FAMILY, PRODUCT}),
    ({}, {"nfd.node.kubernetes.io/edge.feature-labels": "nvidia.com/gpu.product"}, NOT_ASKED,
     ["nfd-annotation"], {PRODUCT}),
    ({}, {"nfd.node.kubernetes.io/feature-labelsx": "nvidia.com/gpu.product",
          "other.io/feature-labels": "nvidia.com/gpu.product"}, NOT_ASKED, [], set()),
    # GFD's own labels on the Node
    ({"nvidia.com/gfd.timestamp": "1733300000", PRODUCT: "Orin"}, {}, NOT_ASKED, ["gfd-label"],
     set()),
    # a NodeFeature with GPU labels
    ({}, {}, NodeFeatures(NF_FOUND, (("gpu-operator/nvidia-features-for-n", (PRODUCT,)),)),
     ["nodefeature"], {PRODUCT}),
])
def test_detect(labels, annotations, nodefeatures, kinds, managed):
    contest = detect(labels, annotations, nodefeatures)
    assert [e.kind for e in contest.evidence] == kinds
    assert contest.present == bool(kinds)
    assert contest.managed == managed


NFD_PRODUCT = Contest((Evidence("nfd-annotation", NFD, (PRODUCT,)),))
GFD_LABEL = Contest((Evidence("gfd-label", "labels", ("nvidia.com/gfd.timestamp",)),))
NOBODY = Contest()


@pytest.mark.parametrize("contest,mode,current,owned,hold,keep,take", [
    # nobody else: nothing to decide, whatever the mode
    (NOBODY, "defer", {}, set(), set(), set(), set()),
    (NOBODY, "own", {PRODUCT: "x"}, set(), set(), set(), set()),
    # defer: the whole family is held; edgeagent's own untouched value stays owned, a value NFD
    # manages or someone changed is let go
    (GFD_LABEL, "defer", {}, set(), {PRODUCT, FAMILY, MEMORY}, set(), set()),
    (GFD_LABEL, "defer", {PRODUCT: "Orin", FAMILY: "volta", MEMORY: "7619"},
     {PRODUCT, FAMILY, MEMORY}, {PRODUCT, FAMILY, MEMORY}, {PRODUCT, MEMORY}, set()),
    (NFD_PRODUCT, "defer", {PRODUCT: "Orin", MEMORY: "7619"}, {PRODUCT, MEMORY},
     {PRODUCT, FAMILY, MEMORY}, {MEMORY}, set()),
    # an owned key no longer computed is held too (never removed), and kept while it is there
    (GFD_LABEL, "defer", {"nvidia.com/gpu.count": "1"}, {"nvidia.com/gpu.count"},
     {PRODUCT, FAMILY, MEMORY, "nvidia.com/gpu.count"}, {"nvidia.com/gpu.count"}, set()),
    # own: overwrite only what NFD provably manages; a GFD label NFD does not list, never
    (NFD_PRODUCT, "own", {PRODUCT: "Orin-GFD"}, set(), set(), set(), {PRODUCT}),
    (NFD_PRODUCT, "own", {PRODUCT: "Orin-GFD"}, {PRODUCT}, set(), set(), set()),
    (GFD_LABEL, "own", {PRODUCT: "Orin-GFD"}, set(), set(), set(), set()),
    # off (nvidia_gpu_labels = false): let go of what NFD lists, remove the rest as before
    (NFD_PRODUCT, "off", {PRODUCT: "Orin", MEMORY: "1"}, {PRODUCT, MEMORY}, {PRODUCT}, set(),
     set()),
    (NOBODY, "off", {PRODUCT: "Orin"}, {PRODUCT}, set(), set(), set()),
])
def test_decide(contest, mode, current, owned, hold, keep, take):
    desired = {} if mode == "off" else DESIRED
    decision = decide(contest, mode, desired, current, owned)
    assert (set(decision.hold), set(decision.keep), set(decision.take)) == (hold, keep, take)


def test_decide_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="nvidia_gpu_labels_owner"):
        decide(NOBODY, "share", {}, {}, set())


def node(labels, owned=(), annotations=None):
    ann = dict(annotations or {})
    if owned:
        ann[ANN] = ",".join(sorted(owned))
    return {"metadata": {"name": "n", "resourceVersion": "7", "labels": labels,
                         "annotations": ann}}


GFD_NODE_LABELS = {"nvidia.com/gfd.timestamp": "1733300000", PRODUCT: "Orin",
                   FAMILY: "ampere", "nvidia.com/gpu.count": "1",
                   "nvidia.com/cuda.driver.major": "12"}


def test_plan_defer_leaves_gfd_labels_and_writes_the_rest():
    n = node(GFD_NODE_LABELS, annotations={NFD: GFD_NFD_ANNOTATION})
    plan = plan_labels(n, DESIRED, P)
    assert plan.patch["metadata"]["labels"] == {P + "board": "agx"}
    assert plan.patch["metadata"]["annotations"] == {ANN: P + "board"}
    assert plan.deferred == (FAMILY, MEMORY, PRODUCT) and plan.foreign == ()
    assert plan.contest.present


def test_plan_defer_takes_nothing_and_removes_nothing_it_owned():
    # edgeagent labelled first; then GFD came and NFD overwrote the product.
    n = node({PRODUCT: "Orin-by-GFD", FAMILY: "ampere", MEMORY: "7619", P + "board": "agx",
              "nvidia.com/gfd.timestamp": "1"},
             owned=[PRODUCT, FAMILY, MEMORY, P + "board"],
             annotations={NFD: "nvidia.com/gfd.timestamp,nvidia.com/gpu.product"})
    plan = plan_labels(n, DESIRED, P)
    assert "labels" not in plan.patch["metadata"]
    # The product's value is NFD's now: let go; the others still carry edgeagent's values.
    assert plan.owned == (P + "board", FAMILY, MEMORY)
    assert plan.removed == ()


def test_plan_own_overwrites_what_nfd_manages_but_never_a_hand_set_value():
    n = node({PRODUCT: "Orin-by-GFD", FAMILY: "hand-set", "nvidia.com/gfd.timestamp": "1"},
             annotations={NFD: "nvidia.com/gfd.timestamp,nvidia.com/gpu.product"})
    plan = plan_labels(n, DESIRED, P, gpu_owner="own")
    assert plan.patch["metadata"]["labels"] == {PRODUCT: "Orin", MEMORY: "7619",
                                                P + "board": "agx"}
    assert plan.taken == (PRODUCT,) and plan.foreign == (FAMILY,)
    assert PRODUCT in plan.owned and FAMILY not in plan.owned


def test_plan_without_anybody_else_is_as_before():
    n = node({PRODUCT: "Custom"})
    plan = plan_labels(n, DESIRED, P)
    assert plan.foreign == (PRODUCT,) and plan.deferred == ()
    assert plan.patch["metadata"]["labels"] == {FAMILY: "ampere", MEMORY: "7619",
                                                P + "board": "agx"}


def test_removal_leaves_what_nfd_lists():
    n = node({PRODUCT: "Orin", MEMORY: "7619", P + "board": "agx"},
             owned=[PRODUCT, MEMORY, P + "board"], annotations={NFD: "nvidia.com/gpu.product"})
    plan = plan_removal(n, P)
    assert plan.patch["metadata"]["labels"] == {MEMORY: None, P + "board": None}
    assert plan.deferred == (PRODUCT,)
    assert plan.patch["metadata"]["annotations"] == {ANN: None}


def nodefeature(node_name, labels, name="nvidia-features-for-n", ns="gpu-operator"):
    return {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"nfd.node.kubernetes.io/node-name": node_name}},
            "spec": {"features": {}, "labels": labels}}


def test_nodefeatures_for_keeps_this_nodes_gpu_claims():
    items = [nodefeature("n", {PRODUCT: "Orin", "nvidia.com/gfd.timestamp": "1"}),
             nodefeature("n", {"feature.node.kubernetes.io/cpu-cpuid.ASIMD": "true"},
                         name="n", ns="node-feature-discovery"),
             nodefeature("other", {PRODUCT: "Xavier"}, name="nvidia-features-for-other"),
             "junk", {"metadata": None}, {"metadata": {"labels": []}}]
    found = nodefeatures_for(items, "n")
    assert found.state == NF_FOUND
    assert found.objects == (("gpu-operator/nvidia-features-for-n",
                              ("nvidia.com/gfd.timestamp", PRODUCT)),)
    assert nodefeatures_for(items[1:3], "n").state == NF_NONE
    assert nodefeatures_for({"items": []}, "n").state == NF_ERROR


def test_node_contest_reads_a_malformed_node_as_empty():
    for bad in ({}, {"metadata": None}, {"metadata": {"labels": [1], "annotations": "x"}}, [],
                {"metadata": {"annotations": {NFD: 7}}}):
        assert not node_contest(bad).present


# --- the parsers of other tools' data, fuzzed under a bound ------------------------------------

TEXT = st.text(alphabet=st.sampled_from(list("nvidia.com/gpu.product,feature-x ") + ["\u00e9"]),
               max_size=300)


@settings(max_examples=300, deadline=200)
@given(TEXT)
def test_fuzz_nfd_annotation(text):
    keys = parse_nfd_labels(text)
    assert keys == sorted(set(keys)) and all("/" in k and "," not in k for k in keys)


def json_values():
    return st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                        lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.sampled_from(
                            ["metadata", "labels", "spec", "name", "namespace",
                             "nfd.node.kubernetes.io/node-name", PRODUCT]), children,
                            max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=500)
@given(st.lists(json_values(), max_size=6))
def test_fuzz_nodefeature_list(items):
    found = nodefeatures_for(items, "n")
    assert found.state in (NF_FOUND, NF_NONE)


def test_huge_inputs_stay_within_bounds():
    # An annotation may be 256 KiB, a list answer 4 MiB (the client's cap): both parse fast, in
    # bounded memory, and keep at most MAX_KEYS keys.
    annotation = ",".join("nvidia.com/gpu.k%d" % i for i in range(20000))[:256 * 1024]
    keys = bounded(lambda: parse_nfd_labels(annotation), 0.5, 2 << 20)
    assert len(keys) <= 512
    items = [nodefeature("n", {"nvidia.com/gpu.k%d" % j: "1" for j in range(100)},
                         name="o%d" % i) for i in range(600)]
    found = bounded(lambda: nodefeatures_for(items, "n"), 1.0, 8 << 20)
    assert len(found.objects) == 512
    contest = bounded(lambda: detect({}, {NFD: annotation}, found), 1.0, 8 << 20)
    assert len(contest.describe()) < 1000


@pytest.mark.parametrize("env,message", [
    ({"EDGEAGENT_LABELS_NVIDIA_GPU_LABELS_OWNER": "share"}, "must be one of defer, own"),
    ({"EDGEAGENT_LABELS_PUBLISH": "both"}, "must be one of node, nodefeature"),
    ({"EDGEAGENT_LABELS_NODEFEATURE_NAMESPACE": "NFD_ns"}, "must be a namespace name"),
    ({"EDGEAGENT_LABELS_NODEFEATURE_NAMESPACE": "a" * 64}, "must be a namespace name"),
])
def test_the_new_options_refuse_bad_values_in_one_line(env, message):
    from edgeagent.config import load_config
    from edgeagent.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as e:
        load_config(env=env)
    assert "\n" not in str(e.value)


def test_the_new_options_defaults():
    from edgeagent.config import load_config

    labels = load_config(env={}).options.labels
    assert (labels.nvidia_gpu_labels_owner, labels.publish, labels.nodefeature_namespace) == (
        "defer", "node", "node-feature-discovery")
