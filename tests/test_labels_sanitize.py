"""The label sanitizer: one documented rule, always valid Kubernetes syntax."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.discovery.scan import read_fdt_file
from edgeagent.labels.sanitize import (compatible_name, is_valid_key, is_valid_value, key_problem,
                                       sanitize_name, sanitize_value, value_problem)
from tests.conftest import all_dtbs, dtb_path

DT = "beta.devicetree.org/"


def _all_compatibles():
    found = set()
    for name in all_dtbs():
        tree = read_fdt_file(dtb_path(name))
        for node in tree.walk():
            found.update(node.compatible)
    return sorted(found)


COMPATIBLES = _all_compatibles()


def labeller_name(compatible):
    """What adaptant-labs/k8s-dt-node-labeller's propertyNormalize() produces."""
    parts = compatible.split(",")
    if len(parts) == 1:
        return compatible
    return "%s-%s" % ({"xlnx": "xilinx"}.get(parts[0], parts[0]), parts[1])


def test_every_real_compatible_gives_a_valid_key():
    assert len(COMPATIBLES) > 500
    for c in COMPATIBLES:
        name = compatible_name(c)
        assert name is not None, c
        assert is_valid_key(DT + name), (c, name)


def test_same_name_as_the_devicetree_labeller_whenever_its_name_is_valid():
    same = 0
    for c in COMPATIBLES:
        theirs = labeller_name(c)
        if c.count(",") <= 1 and is_valid_key(DT + theirs):
            assert compatible_name(c) == theirs
            same += 1
    assert same > 500


def test_documented_examples():
    assert compatible_name("nvidia,jetson-nano") == "nvidia-jetson-nano"
    assert compatible_name("nvidia,tegra210") == "nvidia-tegra210"
    assert compatible_name("nvidia,p3737-0000+p3701-0000") == "nvidia-p3737-0000-p3701-0000"
    assert compatible_name("xlnx,zynq-7000") == "xilinx-zynq-7000"
    assert compatible_name("bosch,m_can") == "bosch-m_can"          # '_' is valid: kept
    assert compatible_name("Vendor,Model") == "Vendor-Model"        # uppercase is valid: kept
    assert compatible_name("fsl,imx8mq-vpu,g1") == "fsl-imx8mq-vpu-g1"  # every comma
    assert compatible_name("simple-bus") == "simple-bus"
    assert compatible_name(",,,") is None
    assert sanitize_value("NVIDIA Jetson AGX Orin Developer Kit") == \
        "NVIDIA-Jetson-AGX-Orin-Developer-Kit"
    assert sanitize_value("4.4 DP") == "4.4-DP"


def test_long_names_are_shortened_with_a_stable_hash():
    long_a = "vendor," + "x" * 80 + "a"
    long_b = "vendor," + "x" * 80 + "b"
    a, b = compatible_name(long_a), compatible_name(long_b)
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert re.fullmatch(r"vendor-x+-[0-9a-f]{8}", a)
    assert compatible_name(long_a) == a            # stable
    assert sanitize_name("y" * 63) == "y" * 63     # 63 fits: untouched
    assert len(sanitize_name("y" * 64)) == 63


def test_validators():
    assert key_problem("nvidia.com/gpu.count") is None
    assert key_problem("plain") is None
    assert key_problem("Upper.com/x")                        # prefix must be lowercase
    assert key_problem("a/" + "x" * 64)
    assert key_problem("/x")
    assert key_problem("a/b+c")
    assert key_problem("a/b\n")
    assert value_problem("") is None
    assert value_problem("-x")
    assert value_problem("x" * 64)
    assert value_problem("ok_Value.1") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_random_text_gives_valid_or_nothing(text):
    name = compatible_name(text)
    assert name is None or is_valid_key(DT + name)
    value = sanitize_value(text)
    assert value is None or (is_valid_value(value) and value != "")
    assert compatible_name(text) == name   # deterministic


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(COMPATIBLES), st.text(alphabet=",+/_ABCxyz09.-@ ", max_size=70))
def test_real_compatibles_with_mutations(compatible, extra):
    for text in (compatible + extra, extra + compatible, compatible.upper() + "+" + extra):
        name = compatible_name(text)
        assert name is None or is_valid_key(DT + name)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True))
def test_valid_names_are_left_unchanged(name):
    assert sanitize_name(name) == name
