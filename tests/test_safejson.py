"""safejson: JSON from outside the agent with its nesting bounded before CPython's recursive
decoder sees it (Python 3.8 can end the process on deep input instead of raising)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.safejson import MAX_DEPTH, TooDeep, loads, nesting
from tests.costbound import bounded

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text, depth", [
    ("", 0), ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4),
    ('["[[[[", "]]"]', 1),                  # brackets inside strings do not count
    ('["\\"[[[", {"k\\\\": [[]]}]', 4),    # nor after escaped quotes and backslashes
    ("[" * 300, 300),                       # not JSON: still measured
])
def test_nesting(text, depth):
    assert nesting(text) == depth


def test_loads_is_json_loads_within_the_bound():
    doc = {"a": [[[{"b": "[[[" * 400}]], 1, None, True], "n": 2 ** 70}
    text = json.dumps(doc)
    assert loads(text) == json.loads(text) == doc
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(deep) == json.loads(deep)
    assert loads("7", parse_int=str) == "7"


@pytest.mark.parametrize("text", [
    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    "[" * 100000,
    '{"a":' * 50000,
    "[{\"x\": " * 20000 + "1" + "}]" * 20000,
])
def test_too_deep_is_a_value_error_with_one_line(text):
    with pytest.raises(TooDeep) as e:
        loads(text)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_deep_input_under_a_raised_recursion_limit_is_refused_not_fatal():
    # What the fuzz tests hit on Python 3.8: "Fatal Python error: Cannot recover from stack
    # overflow" from json.loads, with the recursion limit raised as hypothesis raises it. In a
    # child, so that a regression ends the child, not the suite.
    code = textwrap.dedent("""
        import sys
        sys.setrecursionlimit(3000)
        from edgeagent.safejson import TooDeep, loads
        def deep(n):
            if n:
                return deep(n - 1)
            for text in ("[" * 100000, '[{"a":' * 50000, '{"a":[' * 50000):
                try:
                    loads(text)
                except TooDeep:
                    print("refused")
        deep(900)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["refused"] * 3, out.stdout[-2000:]


JSONISH = st.text(alphabet='[]{}",:\\ab01 \n', max_size=2000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSONISH, st.builds(lambda n, s: s * n, st.integers(0, 20000),
                                    st.sampled_from(["[", "{\"a\":", "[{\"b\":", "\"[", "\\\""]))))
def test_any_text_is_parsed_or_refused_within_bounds(text):
    result = bounded(lambda: loads(text), 1.0, 8 << 20, (ValueError,))
    if not isinstance(result, ValueError):
        assert result == json.loads(text)
