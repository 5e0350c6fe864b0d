"""Logging: journald priorities without timestamps only when stderr really is the journal."""

import io
import json
import logging
import os
import time

import pytest

from edgeagent.logs import (JournalFormatter, JsonFormatter, TextFormatter, setup_logging,
                            stream_is_journal)


def record(level=logging.WARNING, msg="disk %s", args=("full",), exc=None):
    return logging.LogRecord("edgeagent.x", level, __file__, 1, msg, args, exc)


def journal_env(f):
    st = os.fstat(f.fileno())
    return {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}


def test_stream_is_journal_matches_device_and_inode(tmp_path):
    with open(str(tmp_path / "a"), "w") as a, open(str(tmp_path / "b"), "w") as b:
        assert stream_is_journal(a, journal_env(a))
        # inherited from a service, but this stream goes elsewhere (a pipe, a terminal)
        assert not stream_is_journal(b, journal_env(a))
        assert not stream_is_journal(a, {})
        assert not stream_is_journal(a, {"JOURNAL_STREAM": "garbage"})
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


@pytest.mark.parametrize("level,prio", [(logging.DEBUG, 7), (logging.INFO, 6),
                                        (logging.WARNING, 4), (logging.ERROR, 3),
                                        (logging.CRITICAL, 2), (25, 6), (35, 4)])
def test_journal_priorities(level, prio):
    assert JournalFormatter().format(record(level)) == "<%d>edgeagent.x: disk full" % prio


def test_journal_prefixes_every_traceback_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        text = JournalFormatter().format(record(logging.ERROR, exc=sys.exc_info()))
    lines = text.splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_text_has_timestamps_and_json_is_one_object_a_line():
    assert TextFormatter().format(record())[:4].isdigit()
    line = JsonFormatter().format(record(msg="two\nlines", args=()))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "warning" and doc["msg"] == "two\nlines" and doc["logger"] == "edgeagent.x"
    assert doc["time"].endswith("Z") and isinstance(doc["ts"], float)
    # both say the same instant
    import calendar
    stamp = calendar.timegm(time.strptime(doc["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert "%d.%s" % (stamp, doc["time"][20:23]) == "%.3f" % doc["ts"]
    assert JsonFormatter(journal=True).format(record()).startswith("<4>{")


def test_setup_logging_picks_the_format(tmp_path):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        with open(str(tmp_path / "j"), "w") as f:
            setup_logging("warning", "text", f, journal_env(f))
            assert isinstance(root.handlers[0].formatter, JournalFormatter)
            logging.getLogger("edgeagent.t").info("hidden")
            logging.getLogger("edgeagent.t").warning("shown")
            setup_logging("info", "json", f, journal_env(f))
            assert isinstance(root.handlers[0].formatter, JsonFormatter)
            setup_logging("info", "text", f, {})
            assert isinstance(root.handlers[0].formatter, TextFormatter)
            assert len(root.handlers) == 1
        assert (tmp_path / "j").read_text() == "<4>edgeagent.t: shown\n"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_default_handler_follows_a_swapped_stderr(monkeypatch):
    # A caller that swaps sys.stderr and closes the old one (pytest's capture does exactly
    # that between tests) must not leave logging writing into a closed file.
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr("sys.stderr", first)
        setup_logging("info", "text", env={})
        logging.getLogger("edgeagent.t").warning("one")
        first.close()
        monkeypatch.setattr("sys.stderr", second)
        logging.getLogger("edgeagent.t").warning("two")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out = second.getvalue()
    assert "edgeagent.t: two" in out and "Logging error" not in out


# --- repeated messages ------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _records(filt, clock, items):
    """Feed (advance, logger, level, msg, args) through ``filt``; return what passed, rendered."""
    passed = []
    for advance, name, level, msg, args in items:
        clock.now += advance
        record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
        if filt.filter(record):
            passed.append(record.getMessage())
    return passed


def test_identical_errors_pass_once_a_window_then_say_how_many_were_dropped():
    from edgeagent.logs import RepeatFilter

    clock = Clock()
    filt = RepeatFilter(interval=60, clock=clock)
    flood = [(0.001, "asyncio", logging.ERROR, "accept failed: %s", ("EMFILE",))] * 10000
    assert _records(filt, clock, flood) == ["accept failed: EMFILE"]
    later = [(60, "asyncio", logging.ERROR, "accept failed: %s", ("EMFILE",))]
    assert _records(filt, clock, later) == ["accept failed: EMFILE (repeated 9999 times)"]
    quiet = [(61, "asyncio", logging.ERROR, "accept failed: %s", ("EMFILE",))]
    assert _records(filt, clock, quiet) == ["accept failed: EMFILE"]   # nothing was dropped


def test_different_messages_loggers_and_levels_are_not_merged():
    from edgeagent.logs import RepeatFilter

    clock = Clock()
    filt = RepeatFilter(interval=60, clock=clock)
    items = [(0, "a", logging.ERROR, "x", None), (0, "b", logging.ERROR, "x", None),
             (0, "a", logging.WARNING, "x", None), (0, "a", logging.ERROR, "y", None),
             (0, "a", logging.ERROR, "x", None)]
    assert _records(filt, clock, items) == ["x", "x", "x", "y"]


def test_info_and_debug_are_never_dropped():
    from edgeagent.logs import RepeatFilter

    clock = Clock()
    filt = RepeatFilter(interval=60, clock=clock)
    items = [(0, "a", logging.INFO, "same", None)] * 3 + [(0, "a", logging.DEBUG, "same", None)]
    assert len(_records(filt, clock, items)) == 4


def test_memory_is_bounded_by_distinct_messages():
    from edgeagent.logs import RepeatFilter

    clock = Clock()
    filt = RepeatFilter(interval=60, max_keys=100, clock=clock)
    items = [(0, "a", logging.ERROR, "message %d", (i,)) for i in range(10000)]
    assert len(_records(filt, clock, items)) == 10000
    assert len(filt._seen) == 100


def test_setup_logging_rate_limits_every_logger(tmp_path):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream, env={})
    try:
        for _ in range(1000):
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
            logging.getLogger("edgeagent.metrics").warning("scrape failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines


def test_flush_reports_what_a_stopped_flood_dropped():
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream, env={})
    try:
        from edgeagent.logs import flush_repeated

        for _ in range(50):
            logging.getLogger("edgeagent.kube").error("API server unreachable")
        logging.getLogger("edgeagent.kube").warning("said once")
        flush_repeated()
        flush_repeated()    # nothing new dropped: nothing more to say
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("edgeagent.kube: API server unreachable")
    assert lines[1].endswith("edgeagent.kube: said once")
    assert lines[2].endswith("edgeagent.kube: API server unreachable (repeated 49 times)")
    assert "ERROR" in lines[2]
