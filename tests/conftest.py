import gc
import json
import logging
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures")
DTB_DIR = os.path.join(FIXTURES, "dtb")

if REPO not in sys.path:
    sys.path.insert(0, REPO)


def dtb_path(name: str) -> str:
    return os.path.join(DTB_DIR, name)


def all_dtbs():
    return sorted(f for f in os.listdir(DTB_DIR) if f.endswith(".dtb"))


def tegrastats_fixture_lines():
    with open(os.path.join(FIXTURES, "tegrastats", "lines.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def fixtures_dir():
    return FIXTURES


# --- abandoned asyncio tasks ---------------------------------------------------------------------
# A task left pending when its loop closes is reported ("Task was destroyed but it is pending!")
# whenever the garbage collector gets to it, which is during some later, unrelated test, where
# it lands in that test's captured stderr. Collect those reports for the whole session and fail
# the run at its end, naming the task, so a leak is a deterministic failure, not a flaky one.

class _AbandonedTasks(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.reports = []

    def emit(self, record):
        message = record.getMessage()
        if "Task was destroyed but it is pending" in message:
            self.reports.append(message.replace("\n", " "))


_ABANDONED = _AbandonedTasks()


def pytest_configure(config):
    logging.getLogger("asyncio").addHandler(_ABANDONED)


def pytest_sessionfinish(session, exitstatus):
    gc.collect()
    if _ABANDONED.reports and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    for report in _ABANDONED.reports:
        terminalreporter.write_line("abandoned asyncio task: " + report[:400], red=True)


@pytest.fixture
def cleanup():
    """Things a test started (AgentThread, FakeKubelet...), stopped in reverse order after it."""
    things = []
    yield things
    for thing in reversed(things):
        try:
            thing.stop()
        except Exception:
            pass
