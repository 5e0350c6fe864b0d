"""The per-shape plans of `edgeagent tegrastats` give the slow path's JSON text, byte for byte.

The slow path (``json.dumps(parse_line(line).to_json())``) is the reference. The dangerous inputs
for a plan are the lines that share a shape's key (the line without its digits) with a line the
plan was built from but must not be read the same way: digits that make a value invalid, names
that differ only in digits, a sensor that goes off. Those are drawn here from the real lines.
"""

import json
import random
from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeagent.tegrastats import lineplans
from edgeagent.tegrastats.lineplans import LineEncoder, build_plan
from edgeagent.tegrastats.parser import MAX_LINE_CHARS, parse_line
from tests.costbound import within_memory
from tests.test_tegrastats_fuzz import hostile_lines
from tests.test_tegrastats_parser import LINES, mutated_lines

DEADLINE = timedelta(milliseconds=750)
PEAK_BYTES = 4 << 20
# Real lines whose shape the builder refuses: none today. A new fixture line that is refused
# fails the first test: plan it, or count it here and say why.
UNPLANNED = 0


def slow(line):
    return json.dumps(parse_line(line).to_json())


def taught(*lines):
    """An encoder that has seen each line twice: the plans of their shapes are built."""
    encoder = LineEncoder()
    for line in lines:
        assert encoder.encode(line) == slow(line)
        assert encoder.encode(line) == slow(line)
    return encoder


def test_every_real_line_is_planned_and_gives_the_slow_text():
    encoder = taught(*LINES)
    planned = encoder.planned
    for line in LINES:
        assert encoder.encode(line) == slow(line)
    assert encoder.planned - planned == len(LINES) - UNPLANNED


def test_a_shape_is_planned_on_its_second_line_only():
    line = LINES[-1]
    encoder = LineEncoder()
    encoder.encode(line)
    encoder.encode(line)
    assert encoder.planned == 0           # first sight: slow; second: slow, and the plan built
    encoder.encode(line)
    assert encoder.planned == 1


def test_junk_builds_no_plan_and_the_tables_stay_bounded():
    encoder = LineEncoder()
    for k in range(1000):
        encoder.encode("RAM %s/2MB junk%s" % ("x" * (k % 300), "y" * (k // 300)))
    assert encoder.planned == 0
    assert len(encoder._plans) <= 64 and len(encoder._seen) <= 64


def test_a_plan_refuses_what_shares_its_key_but_reads_otherwise():
    base = ("RAM 2462/3964MB (lfb 2x4MB) SWAP 0/1982MB (cached 0MB) CPU [1%@102,off,2%@204] "
            "EMC_FREQ 0%@2133 GR3D_FREQ 9%@[305,305] NVENC 40%@115 NVDEC off CV0@45.5C "
            "CV1@46C CV2@-10.5C cpu@48.2C/50.1C VDD_IN 3410mW/3410mW/3500mW NC 0/0 VDD_CPU 12/13")
    encoder = taught(base)
    same_key = [
        base.replace("CV1@46C", "CV0@46C"),              # a sensor named twice: first kept
        base.replace("CV2@-10.5C", "CV2@-256.5C"),       # off: not listed
        base.replace("CV2@-10.5C", "CV2@-100.5C"),
        base.replace("9%@[305", "999%@[305"),            # load over 100 %: unknown
        base.replace("40%@115", "400%@115"),
        base.replace("NVENC 40%", "NVENC0 40%"),         # another engine name
        base.replace("R", "R1", 1),                      # "R1AM" has RAM's key
        base.replace("GR3D_FREQ", "GR3D2_FREQ"),         # DRIVE OS' per-GPC field
        base.replace("2462/3964MB", "2462/39641111111111111111111MB"),   # over 18 digits
        base.replace("@2133", "@"),
        base.replace("3410mW/3410mW", "3410mW/mW"),
        base.replace("(lfb 2x4MB)", "(lfb x4MB)"),
        base.replace("1%@102", "1%@"),
        base.replace(" NVDEC off", " NVDEC o1ff"),
        base.replace("NC 0/0", "NC1 0/0"),
        base.replace("VDD_CPU 12/13", "VDD_CPU0 12/13"),
    ]
    for line in same_key:
        assert line.encode().translate(None, b"0123456789") == \
            base.encode().translate(None, b"0123456789"), line
        assert encoder.encode(line) == slow(line), line
    # and the base line is still planned after them
    planned = encoder.planned
    assert encoder.encode(base) == slow(base) and encoder.planned == planned + 1


@st.composite
def redigited(draw):
    """A real line with some of its digits changed, added or removed: the same key."""
    line = draw(st.sampled_from(LINES))
    rnd = random.Random(draw(st.integers(0, 2 ** 32)))
    out = []
    for ch in line:
        if ch.isdigit() and rnd.random() < 0.3:
            size = rnd.choice([0, 1, 1, 2, 5])
            out.append("".join(rnd.choice("0123456789") for _ in range(size)))
        else:
            out.append(ch)
    return line, "".join(out)


@settings(max_examples=300, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(redigited())
def test_lines_with_other_digits_give_the_slow_text(pair):
    line, other = pair
    encoder = taught(line)
    assert within_memory(lambda: encoder.encode(other), PEAK_BYTES) == slow(other)


@settings(max_examples=300, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_lines())
def test_mutated_lines_give_the_slow_text_seen_once_twice_and_thrice(line):
    encoder = taught(*LINES)
    for _ in range(3):
        assert within_memory(lambda: encoder.encode(line), PEAK_BYTES) == slow(line)


@settings(max_examples=100, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_lines())
@example(" ".join("VDD_%d 1/2" % i for i in range(2000))[:MAX_LINE_CHARS])   # never planned
@example(" ".join("NVENC%d off" % i for i in range(200)))                   # planned, big
@example("x" * (MAX_LINE_CHARS + 1))
def test_hostile_lines_are_bounded_and_give_the_slow_text(line):
    encoder = LineEncoder()
    for _ in range(3):
        assert within_memory(lambda: encoder.encode(line), PEAK_BYTES) == slow(line)


def test_the_plan_of_a_line_with_many_tokens_is_not_built():
    line = " ".join("VDD_%d 1/2" % i for i in range(200))
    assert len(line.split()) > 256 and build_plan(line.split()) is not None
    encoder = taught(line)
    encoder.encode(line)
    assert encoder.planned == 0 and encoder._plans[
        line.encode().translate(None, b"0123456789")] is lineplans._refuse
