"""The one bounded loop runner (`run` and `doctor`): results, bounded clean-up, no second report
of an abandoned task."""

import asyncio
import gc
import logging
import subprocess
import sys
import time

from edgeagent.looprunner import run_bounded
from tests.conftest import REPO

PATIENCE = 20.0


def test_process_level_cleanup_is_bounded_too(caplog):
    # asyncio.run() would wait for this task forever; run_bounded does not.
    state = {}

    async def main():
        async def stuck():
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    state["cancelled"] = state.get("cancelled", 0) + 1

        state["task"] = asyncio.ensure_future(stuck())
        await asyncio.sleep(0)
        return 7

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert run_bounded(main(), grace=0.1) == 7
    assert time.monotonic() - started < PATIENCE
    assert state["cancelled"] >= 1 and not state["task"].done()
    said = [r.getMessage() for r in caplog.records]
    assert any("1 task(s) still running at exit" in m and "stuck" in m for m in said), said
    # Said once: collecting the abandoned task must not report it again.
    caplog.clear()
    del state["task"]
    gc.collect()
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]


def test_returns_the_value_and_closes_the_loop():
    async def main():
        await asyncio.sleep(0)
        return asyncio.get_event_loop()

    loop = run_bounded(main())
    assert loop.is_closed()


def test_exceptions_of_main_come_through():
    async def main():
        raise LookupError("boom")

    try:
        run_bounded(main())
    except LookupError as e:
        assert str(e) == "boom"
    else:
        raise AssertionError("no exception")


def test_an_abandoned_task_is_not_reported_again_even_at_interpreter_exit():
    # The interpreter's own teardown collects whatever is left: a fresh process shows whether
    # asyncio then logs "Task was destroyed but it is pending!" for the task named at exit.
    code = """
import asyncio, logging, sys
logging.basicConfig(stream=sys.stderr)
from edgeagent.looprunner import run_bounded

async def stuck():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

async def main():
    asyncio.ensure_future(stuck())
    await asyncio.sleep(0)
    return 3

sys.exit(run_bounded(main(), grace=0.05))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=PATIENCE)
    assert proc.returncode == 3, proc.stderr
    assert "still running at exit" in proc.stderr
    assert "destroyed" not in proc.stderr, proc.stderr


def test_a_control_without_run_bounded_is_reported():
    # The check above can fail: the same task abandoned by hand is reported by asyncio.
    code = """
import asyncio, gc, logging, sys
logging.basicConfig(stream=sys.stderr)

async def stuck():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

loop = asyncio.new_event_loop()
async def main():
    asyncio.ensure_future(stuck())
    await asyncio.sleep(0)
loop.run_until_complete(main())
for t in asyncio.all_tasks(loop):
    t.cancel()
loop.run_until_complete(asyncio.sleep(0.01))
loop.close()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=PATIENCE)
    assert "Task was destroyed but it is pending" in proc.stderr, proc.stderr


def test_sigterm_budget_with_the_default_policy_and_stubborn_components():
    # The whole stop, from the stop event to run_bounded's return, with the production policy
    # and components that refuse to stop: under the 2 s SIGTERM contract.
    from edgeagent.sdnotify import Notifier
    from edgeagent.supervisor import Component, Supervisor

    class Stubborn(Component):
        def __init__(self, name):
            self.name = name

        async def run(self, started):
            started()
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue          # ignores cancellation for ever

    class SlowCleanup(Component):
        name = "slow-cleanup"

        async def run(self, started):
            started()
            try:
                await asyncio.sleep(3600)
            finally:
                # a blocking close in the default executor that takes far too long
                await asyncio.get_event_loop().run_in_executor(None, time.sleep, 0.05)
                await asyncio.sleep(30)

    times = {}

    async def main():
        stop = asyncio.Event()
        supervisor = Supervisor([Stubborn("a"), SlowCleanup(), Stubborn("b")], Notifier({}))
        task = asyncio.ensure_future(supervisor.run(stop))
        await asyncio.sleep(0.2)
        times["stop"] = time.monotonic()
        stop.set()
        return await task

    assert run_bounded(main()) == 0
    elapsed = time.monotonic() - times["stop"]
    assert 1.0 < elapsed < 2.0, elapsed     # 1.0: the stubborn ones were really waited for
