"""The tegrastats runner against real child processes: replay, crash, hang, SIGTERM-proof, absent.

Each test runs its own event loop (asyncio.run) and checks that no child (or grandchild) it
started is left behind, dead or alive.
"""

import asyncio
import os
import stat
import sys
import time

import pytest

from edgeagent.backoff import Backoff
from edgeagent.config import TegrastatsOptions
from edgeagent.hostpaths import HostRoot
from edgeagent.tegrastats import replay, runner
from edgeagent.tegrastats.runner import TegrastatsRunner, TegrastatsState

HOST_PATH = "/usr/bin/tegrastats"
LINE = ("RAM 1446/3957MB (lfb 458x4MB) IRAM 0/252kB(lfb 252kB) CPU [17%@1428,11%@1428,21%@1428,"
        "12%@1428] EMC_FREQ 2%@1600 GR3D_FREQ 0%@76 APE 25 PLL@20.5C CPU@24.5C PMIC@100C GPU@21C "
        "AO@29.5C thermal@22.25C POM_5V_IN 2830/1483 POM_5V_GPU 41/31 POM_5V_CPU 943/206")


def script(tmp_path, body, name=HOST_PATH):
    """An executable shell script at <tmp_path><name>; returns the HostRoot."""
    path = str(tmp_path) + name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return HostRoot(str(tmp_path))


def alive(pid):
    """True while pid exists (a zombie counts: it was not reaped)."""
    return os.path.exists("/proc/%d" % pid)


def running(pid):
    """True while pid runs (a zombie re-parented to init is init's to reap, not ours)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def our_children(pids):
    """Record the pids of this process's children (the runner's tegrastats); always True."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid() and int(entry) not in pids:
                pids.append(int(entry))
    return True


async def run_until(component, predicate, timeout=10.0):
    task = asyncio.ensure_future(component.run(lambda: None))
    deadline = time.monotonic() + timeout
    try:
        while not predicate():
            assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
            assert time.monotonic() < deadline, "condition not reached in %.0fs" % timeout
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3.0)
        assert done, "runner did not stop within 3 s"


def make(root, interval_ms=100, **kw):
    state = TegrastatsState(HOST_PATH, interval_ms / 1000.0)
    comp = TegrastatsRunner(root, TegrastatsOptions(HOST_PATH, interval_ms), state,
                            backoff=Backoff(base=0.01, cap=0.05, jitter=False), **kw)
    return state, comp


def test_replays_lines_into_the_state_and_stops_its_child(tmp_path):
    path = str(tmp_path) + HOST_PATH
    replay.write_script(path, [LINE], python=sys.executable)
    state, comp = make(HostRoot(str(tmp_path)))
    pids = []
    asyncio.run(run_until(comp, lambda: our_children(pids) and state.lines >= 2))
    assert state.present is True and state.running is False
    sample = state.fresh_sample()
    assert sample is not None and sample.ram_total_bytes == 3957 << 20
    assert state.parse_errors == 0 and state.restarts == 0
    assert pids and not any(alive(pid) for pid in pids)


def test_a_child_that_exits_is_restarted_with_backoff(tmp_path):
    root = script(tmp_path, 'echo "%s"\necho "tegrastats: oops" >&2\nexit 3\n' % LINE)
    state, comp = make(root)
    asyncio.run(run_until(comp, lambda: state.restarts >= 3))
    assert state.lines >= 3
    assert "exited with status 3" in state.last_error and "oops" in state.last_error


def test_a_hung_child_is_killed_and_restarted(tmp_path):
    # prints one line, then nothing: after 5 intervals (0.5 s) it is replaced
    root = script(tmp_path, 'echo "%s"\nexec sleep 30\n' % LINE)
    state, comp = make(root)
    pids = []
    asyncio.run(run_until(comp, lambda: our_children(pids) and state.restarts >= 1))
    assert "printed no line" in state.last_error
    assert pids and not any(alive(pid) for pid in pids)


def test_the_sample_goes_stale_after_three_intervals(tmp_path):
    clock = [100.0]
    state = TegrastatsState(HOST_PATH, 1.0, clock=lambda: clock[0])
    state.accept_read([LINE.encode()])
    assert state.fresh_sample() is not None
    clock[0] += 2.9
    assert state.fresh_sample() is not None
    clock[0] += 0.2
    assert state.fresh_sample() is None
    assert state.summary()["up"] is False and state.sample is not None


def test_a_child_that_ignores_sigterm_is_killed_with_its_group(tmp_path):
    # traps TERM and starts a grandchild: stopping must take both, within bounded time
    root = script(tmp_path, 'trap "" TERM\nsleep 30 &\necho $! > %s/grandchild\n'
                            'while true; do echo "%s"; sleep 0.05; done\n' % (tmp_path, LINE))
    state, comp = make(root)
    pids = []
    began = time.monotonic()
    asyncio.run(run_until(comp, lambda: our_children(pids) and state.lines >= 2))
    assert time.monotonic() - began < 8
    with open(os.path.join(str(tmp_path), "grandchild")) as f:
        grandchild = int(f.read())
    deadline = time.monotonic() + 2       # SIGKILL is delivered asynchronously
    while running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(grandchild)
    assert pids and not any(alive(pid) for pid in pids)


class RecordingState(TegrastatsState):
    """Keeps every sample the runner published, not just the latest."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.published = []

    def _parse(self, raw):
        if super()._parse(raw):
            self.published.append(self.sample)
            return True
        return False


def test_an_oversized_line_is_dropped_whole_and_counted(tmp_path):
    # 200 kB of junk that ends like a real line: its tail must never become a sample (a
    # readline with a limit published "GR3D_FREQ 42%" from the end of such a line)
    root = script(tmp_path, 'head -c 200000 /dev/zero | tr "\\0" x\n'
                            'echo " RAM 1/2MB GR3D_FREQ 42%%"\n'
                            'while true; do echo "%s"; sleep 0.05; done\n' % LINE)
    state = RecordingState(HOST_PATH, 0.1)
    comp = TegrastatsRunner(root, TegrastatsOptions(HOST_PATH, 100), state,
                            backoff=Backoff(base=0.01, cap=0.05, jitter=False))
    asyncio.run(run_until(comp, lambda: len(state.published) >= 2))
    assert state.dropped["too_long"] == 1 and state.dropped["unparsable"] == 0
    assert state.published and all(s.gpu_utilization == 0.0 for s in state.published)
    assert state.fresh_sample().cpus and state.lines >= 3


def test_a_host_without_tegrastats_is_reported_once_and_rechecked(tmp_path, caplog):
    root = HostRoot(str(tmp_path))
    state, comp = make(root, absent_recheck=0.05)
    caplog.set_level("INFO")
    started = []

    async def scenario():
        task = asyncio.ensure_future(comp.run(lambda: started.append(1)))
        await asyncio.sleep(0.3)
        assert state.present is False and started and not task.done()
        script(tmp_path, 'while true; do echo "%s"; sleep 0.05; done\n' % LINE)
        deadline = time.monotonic() + 5
        while state.sample is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.wait([task], timeout=3)

    asyncio.run(scenario())
    absent = [r for r in caplog.records if "not found" in r.getMessage()]
    assert len(absent) == 1, "said once, not once per re-check"
    assert any("appeared" in r.getMessage() for r in caplog.records)


def test_a_file_that_cannot_be_executed_is_a_failure_not_absence(tmp_path, caplog):
    path = str(tmp_path) + HOST_PATH
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("#!/nonexistent/interpreter\n")
    os.chmod(path, 0o755)
    state, comp = make(HostRoot(str(tmp_path)))
    caplog.set_level("DEBUG", logger="edgeagent.tegrastats.runner")
    attempts = lambda: sum("could not start" in r.getMessage() for r in caplog.records)  # noqa
    asyncio.run(run_until(comp, lambda: attempts() >= 3))
    assert state.present is True and "could not start" in state.last_error
    # a restart is counted when the new child exists: none of these attempts made one
    assert state.restarts == 0
    assert comp.problem() == "tegrastats %s; restarting" % state.last_error


def test_restarts_count_children_started_after_the_first(tmp_path):
    root = script(tmp_path, 'echo $$ >> %s/starts\necho "%s"\nexit 3\n' % (tmp_path, LINE))
    state, comp = make(root)
    starts = lambda: open(os.path.join(str(tmp_path), "starts")).read().split()  # noqa
    asyncio.run(run_until(comp, lambda: os.path.exists(str(tmp_path) + "/starts")
                          and len(starts()) >= 4 and state.restarts >= 3))
    # every child counted after the first wrote its pid (it existed); at most the last one was
    # stopped before it could write
    assert state.restarts in (len(starts()) - 1, len(starts()))


@pytest.mark.parametrize("interval_ms", [100, 1000])
def test_the_child_gets_the_configured_interval(tmp_path, interval_ms):
    root = script(tmp_path, 'echo "$@" > %s/args\nwhile true; do echo "%s"; sleep 0.05; done\n'
                  % (tmp_path, LINE))
    state, comp = make(root, interval_ms=interval_ms)
    asyncio.run(run_until(comp, lambda: state.sample is not None))
    with open(os.path.join(str(tmp_path), "args")) as f:
        assert f.read().split() == ["--interval", str(interval_ms)]


def test_limits_are_sane():
    assert runner.HANG_INTERVALS == 5 and runner.STALE_INTERVALS == 3
    from edgeagent.supervisor import RestartPolicy

    # stopping a child fits the supervisor's stop budget
    worst = runner.TERM_WAIT_SECONDS + runner.KILL_WAIT_SECONDS + runner.DRAIN_WAIT_SECONDS
    assert worst < RestartPolicy().stop_timeout


FLOOD = '''#!%(python)s
# A tegrastats that floods: 10,000 lines a second (the real one prints one per interval).
import sys, time
line = %(line)r + "\\n"
out = sys.stdout
due = time.monotonic()
while True:
    for _ in range(100):
        out.write(line)
    out.flush()
    due += 0.01
    time.sleep(max(0.0, due - time.monotonic()))
'''


@pytest.mark.parametrize("flood", ["python", "yes"])
def test_a_flooding_child_stops_within_a_second_every_time(tmp_path, flood):
    # Under a flood, SIGTERM used to take 3 s and print "Event loop is closed" tracebacks. Each
    # round runs its own loop to the end (as the agent does at SIGTERM) and must leave nothing:
    # no child, no callback on the closed loop, no unclosed transport.
    import gc
    import warnings

    path = str(tmp_path) + HOST_PATH
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        if flood == "yes":       # as fast as a pipe takes it: far beyond 10k lines/s
            f.write('#!/bin/sh\nexec yes "%s"\n' % LINE)
        else:
            f.write(FLOOD % {"python": sys.executable, "line": LINE})
    os.chmod(path, 0o755)
    for _ in range(3):
        state, comp = make(HostRoot(str(tmp_path)), interval_ms=1000)
        errors, pids = [], []

        async def scenario():
            asyncio.get_event_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
            task = asyncio.ensure_future(comp.run(lambda: None))
            while state.lines < 5000:
                assert not task.done()
                await asyncio.sleep(0.05)
            our_children(pids)
            began = time.monotonic()
            task.cancel()
            await asyncio.wait([task], timeout=3)
            return time.monotonic() - began

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            took = asyncio.run(scenario())
            gc.collect()
        assert took < 1.0, "stopping took %.2fs" % took
        assert errors == [] and [str(w.message) for w in caught] == []
        assert pids and not any(alive(pid) for pid in pids)
        assert state.sample is not None and state.dropped["superseded"] > 0
        assert state.restarts == 0 and state.dropped["too_long"] == 0
