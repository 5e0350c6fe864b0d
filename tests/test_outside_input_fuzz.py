"""Fuzz the other readers of outside input in the core: systemd's environment (NOTIFY_SOCKET,
WATCHDOG_USEC, JOURNAL_STREAM), unit files read back (parse_unit, exec_start,
unit_environment, installed_paths) and a .pyz's environment.json. Each input has a time
(hypothesis deadline) and memory (tracemalloc peak) bound; none may raise."""

import io
import json
import time
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.install.layout import exec_start, installed_paths, parse_unit, unit_environment
from edgeagent.install.pyz import MAX_ENVIRONMENT_BYTES, shiv_build_id
from edgeagent.logs import stream_is_journal
from edgeagent.sdnotify import Notifier
from tests.costbound import within_memory

DEADLINE_MS = 500


bounded = within_memory


NUMBERISH = st.one_of(st.text(max_size=30), st.sampled_from(
    ["²", "١٢", "１２", "9" * 5000, "-1", "0", "30000000", "1_0", " 5", "5\n"]))


@settings(max_examples=300, deadline=DEADLINE_MS)
@given(usec=NUMBERISH, pid=NUMBERISH)
def test_fuzz_watchdog_environment(usec, pid):
    n = bounded(lambda: Notifier({"WATCHDOG_USEC": usec, "WATCHDOG_PID": pid}), 1 << 20)
    assert isinstance(n.watchdog_usec, int) and n.watchdog_usec >= 0
    if n.watchdog_usec:
        assert usec.isascii() and usec.isdigit()


@pytest.mark.parametrize("usec", ["²", "١٢", "１２", "9" * 5000])
def test_non_ascii_or_huge_watchdog_is_ignored(usec):
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_usec == 0


@settings(max_examples=300, deadline=DEADLINE_MS)
@given(value=st.one_of(st.text(max_size=60), st.tuples(NUMBERISH, NUMBERISH).map(":".join)))
def test_fuzz_journal_stream(value):
    assert bounded(lambda: stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": value}),
                   1 << 20) is False


UNIT_PIECES = st.sampled_from(["[Service]", "[Unit]", "ExecStart=", "Environment=", "=", "\\",
                               "\n", " ", "#", ";", '"', "'", "/usr/bin/python3",
                               "/usr/local/lib/edgeagent/edgeagent.pyz", "run", "-", "@",
                               "A=B", "\\\n", "[", "]"])


@settings(max_examples=300, deadline=DEADLINE_MS,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.lists(UNIT_PIECES, max_size=400).map("".join), st.text(max_size=3000)))
def test_fuzz_unit_files(text):
    def read():
        unit = parse_unit(text)
        exec_start(unit)
        unit_environment(unit)
        installed_paths(unit)

    bounded(read, 4 * len(text) + (1 << 20))


def test_long_continued_lines_take_linear_time():
    # 1 MiB of continuation lines: the old reader copied the growing line on every piece.
    text = "[Service]\nExecStart=x" + "a\\\n" * 350000 + "end\n"
    started = time.monotonic()
    unit = parse_unit(text)
    assert time.monotonic() - started < 2.0
    assert unit["Service.ExecStart"][0].startswith("xa a")


def _pyz(tmp_path, environment: bytes, declared_ok=True):
    path = str(tmp_path / "x.pyz")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("site-packages/edgeagent/__init__.py", "")
        z.writestr("environment.json", environment)
    return path


@pytest.mark.parametrize("environment,expected", [
    (json.dumps({"build_id": "abc"}).encode(), "abc"),
    (b"[1, 2]", None),
    (b"[" * 50000 + b"]" * 50000, None),           # nesting: RecursionError, compressed small
    (b" " * (MAX_ENVIRONMENT_BYTES + 1), None),     # over the cap: not read at all
    (b"\xff\xfe", None),
    (json.dumps({"build_id": ""}).encode(), None),
])
def test_environment_json_of_a_hostile_pyz(tmp_path, environment, expected):
    path = _pyz(tmp_path, environment)
    assert bounded(lambda: shiv_build_id(path), 4 << 20) == expected
