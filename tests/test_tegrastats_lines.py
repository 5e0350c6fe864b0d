"""The line splitter: whole lines out of any chunking, over-long lines dropped whole, bounded."""

import pytest

from edgeagent.tegrastats.lines import LineSplitter


def split_all(chunks, limit=10):
    splitter = LineSplitter(limit)
    out = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out, splitter.finish(), splitter.too_long


def test_lines_across_chunks():
    assert split_all([b"ab", b"c\nde", b"f\n\ngh"]) == ([b"abc", b"def", b""], [b"gh"], 0)


def test_a_line_at_the_limit_is_kept_one_over_is_dropped_whole():
    assert split_all([b"0123456789\n"]) == ([b"0123456789"], [], 0)
    assert split_all([b"0123456789A\nok\n"]) == ([b"ok"], [], 1)


@pytest.mark.parametrize("chunks", [
    [b"x" * 25 + b" GR3D_FREQ 42%\nok\n"],                  # in one read
    [b"x" * 8, b"x" * 8, b"x" * 8, b" GR3D_FREQ 42%\nok\n"],  # spread over reads
    [b"x" * 11, b"\nok\n"],                                  # the newline comes alone
    [b"x" * 5, b"x" * 6, b" 42%", b"\n", b"ok\n"],
])
def test_the_tail_of_an_over_long_line_is_never_a_line(chunks):
    lines, rest, too_long = split_all(chunks)
    assert lines == [b"ok"] and rest == [] and too_long == 1


def test_an_unfinished_over_long_line_at_the_end_is_counted_not_returned():
    assert split_all([b"ok\n", b"y" * 30]) == ([b"ok"], [], 1)


def test_memory_stays_under_the_limit_whatever_comes():
    splitter = LineSplitter(100)
    for _ in range(1000):
        assert splitter.feed(b"z" * 4096) == []
        assert len(splitter._partial) <= 100
    assert splitter.too_long == 1
    assert splitter.feed(b"\nnext\n") == [b"next"]
