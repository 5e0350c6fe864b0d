"""The run loop's default executor: results and errors come back, and a stuck worker never holds
the process's exit (a ThreadPoolExecutor would)."""

import asyncio
import subprocess
import sys
import time

from edgeagent.daemonexecutor import DaemonExecutor
from tests.conftest import REPO


def test_results_and_exceptions_through_run_in_executor():
    async def main():
        loop = asyncio.get_event_loop()
        loop.set_default_executor(DaemonExecutor(max_workers=2))
        values = await asyncio.gather(*[loop.run_in_executor(None, pow, 2, i) for i in range(20)])
        try:
            await loop.run_in_executor(None, int, "x")
        except ValueError:
            return values
        raise AssertionError("no exception")

    assert asyncio.run(main()) == [2 ** i for i in range(20)]


def test_workers_are_bounded():
    ex = DaemonExecutor(max_workers=3)
    futures = [ex.submit(time.sleep, 0.05) for _ in range(30)]
    for f in futures:
        f.result(5)
    assert len(ex._workers) <= 3
    ex.shutdown()


STUCK = """
import asyncio, sys, threading, time
%s
async def main():
    loop = asyncio.get_event_loop()
    %s
    loop.run_in_executor(None, time.sleep, 5)   # a read of a hung file, say
    await asyncio.sleep(0.1)
asyncio.run(main())
"""


def _exit_time(setup_import, setup):
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", STUCK % (setup_import, setup)], cwd=REPO, timeout=120,
                   check=True)
    return time.monotonic() - started


def test_a_stuck_worker_does_not_hold_the_exit():
    assert _exit_time("from edgeagent.daemonexecutor import DaemonExecutor",
                      "loop.set_default_executor(DaemonExecutor())") < 4


def test_control_the_default_executor_would_hold_it():
    assert _exit_time("", "pass") >= 5
