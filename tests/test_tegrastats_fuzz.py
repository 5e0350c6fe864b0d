"""Fuzzing the tegrastats input path (hypothesis): the parser and the line splitter, each input
bounded in time (hypothesis' per-example deadline) and in memory (tracemalloc's peak).

Inputs are built to hurt: real lines mutated, tokens repeated up to the line cap (long CPU and
GPC lists, thousands of sensors and rails), Unicode digits and letters, and byte streams with
over-long lines cut at random places.
"""

from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeagent.tegrastats.lines import LineSplitter
from edgeagent.tegrastats.parser import MAX_LINE_CHARS, parse_line
from tests.test_tegrastats_parser import LINES, _check_sample, mutated_lines
from tests.costbound import within_memory

# Measured on the 2-CPU build machine: the worst line under the cap (16 KiB of CPU entries)
# parses in ~17 ms with a peak of ~0.6 MiB. The bounds leave room for a loaded machine and
# tracemalloc's own slowdown, and still catch anything quadratic.
DEADLINE = timedelta(milliseconds=750)
PEAK_BYTES = 4 << 20

_UNICODE_DIGITS = "\u0661\u0662\uff11\uff12\u00b9\u00b2\u09e7\u0967\u2460\U0001d7ce"
_ATOMS = st.sampled_from([
    "RAM", "SWAP", "IRAM", "CPU", "cpu", "EMC_FREQ", "GR3D_FREQ", "GR3D2_FREQ", "MTS", "fg",
    "bg", "EDP", "limit", "(lfb", "(cached", "off", "[", "]", ",", "@", "%", "/", "MB", "kB",
    "mW", "C", "-256", "NC", "VDD_IN", "NVENC0_FREQ", "x", "0", "1", "99", "100", "2133",
    "18446744073709551616", "9" * 19, "1e5", "inf", "nan", "-", ".", "..", " ", "\t",
] + list(_UNICODE_DIGITS))


@st.composite
def hostile_lines(draw):
    """A token pattern repeated up to (and a little past) the parser's cap."""
    pattern = "".join(draw(st.lists(_ATOMS, min_size=1, max_size=8)))
    if not pattern.strip():
        pattern += "1"
    size = draw(st.one_of(st.integers(0, 512),
                          st.integers(MAX_LINE_CHARS - 512, MAX_LINE_CHARS + 64)))
    prefix = draw(st.sampled_from(["", "RAM 1/2MB ", "CPU [", "GR3D_FREQ 5%@[", "VDD_IN "]))
    return (prefix + pattern * (size // len(pattern) + 1))[:size]


def bounded(fn, *args):
    return within_memory(lambda: fn(*args), PEAK_BYTES)


@settings(max_examples=150, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_lines())
@example(("CPU [" + "5%@100," * 3000)[:MAX_LINE_CHARS])          # the slowest we know
@example(" ".join("VDD_%d 1/2" % i for i in range(2000))[:MAX_LINE_CHARS])
@example(("GR3D_FREQ 5%@[" + "100," * 5000)[:MAX_LINE_CHARS - 1] + "]")
@example("RAM " + "1" * (MAX_LINE_CHARS - 8) + "/2MB")
@example("x" * (MAX_LINE_CHARS + 1))
def test_hostile_lines_parse_in_bounded_time_and_memory(line):
    sample = bounded(parse_line, line)
    if len(line) > MAX_LINE_CHARS:
        assert sample.empty and sample.unknown == ()
    else:
        _check_sample(sample, line)


@settings(max_examples=150, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_lines(), st.lists(st.sampled_from(_UNICODE_DIGITS), min_size=1, max_size=3),
       st.data())
def test_unicode_digits_never_become_numbers(line, digits, data):
    # put non-ASCII digits where real digits were: the field gives no value, never a number
    chars = list(line)
    positions = [i for i, c in enumerate(chars) if c in "0123456789"]
    for digit in digits:
        if positions:
            chars[data.draw(st.sampled_from(positions))] = digit
    mutated = "".join(chars)
    sample = bounded(parse_line, mutated)
    _check_sample(sample, mutated)
    for value in (sample.ram_used_bytes, sample.ram_total_bytes, sample.swap_used_bytes,
                  sample.emc_frequency_hz, sample.gpu_utilization):
        assert value is None or str(value).isascii()
    for token in sample.unknown:
        assert token in mutated or token.startswith("CPU[")


@settings(max_examples=100, deadline=DEADLINE)
@given(st.sampled_from(LINES), st.binary(max_size=64))
def test_a_real_line_survives_any_bytes_around_it(line, junk):
    # decoded as the runner does: bad UTF-8 becomes U+FFFD, never an exception
    text = (junk + b" " + line.encode() + b" " + junk).decode("utf-8", "replace")
    _check_sample(bounded(parse_line, text), text)


def reference_split(stream, limit):
    """What the splitter must return: every newline-ended line of at most `limit` bytes."""
    parts = stream.split(b"\n")
    complete, rest = parts[:-1], parts[-1]
    kept = [p for p in complete if len(p) <= limit]
    tail = [rest] if rest and len(rest) <= limit else []
    too_long = sum(1 for p in complete if len(p) > limit) + (1 if len(rest) > limit else 0)
    return kept, tail, too_long


@settings(max_examples=200, deadline=DEADLINE)
@given(st.lists(st.one_of(st.binary(max_size=40), st.just(b"\n"),
                          st.integers(1, 300).map(lambda n: b"x" * n)), max_size=30),
       st.lists(st.integers(1, 97), min_size=1, max_size=20), st.integers(1, 64))
def test_the_splitter_agrees_with_a_plain_split_for_any_chunking(pieces, cuts, limit):
    stream = b"".join(pieces)
    chunks, i, k = [], 0, 0
    while i < len(stream):
        step = cuts[k % len(cuts)]
        chunks.append(stream[i:i + step])
        i, k = i + step, k + 1
    splitter = LineSplitter(limit)
    lines = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
        assert len(splitter._partial) <= limit
    assert (lines, splitter.finish(), splitter.too_long) == reference_split(stream, limit)


@settings(max_examples=30, deadline=DEADLINE)
@given(st.integers(1, 64), st.integers(1 << 16, 1 << 20))
def test_the_splitter_holds_no_more_than_its_limit_of_a_huge_line(limit_kib, size):
    splitter = LineSplitter(limit_kib * 1024)
    chunk = b"y" * 65536

    def feed_all():
        for _ in range(size // len(chunk) + 1):
            assert splitter.feed(chunk) == []
        return splitter.feed(b"\nok\n")

    assert bounded(feed_all) == [b"ok"] and splitter.too_long == 1
