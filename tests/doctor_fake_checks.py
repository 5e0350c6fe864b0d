"""Check modules the doctor-runner tests hand to the runner (as doctor.runner imports its own)."""

import asyncio
import threading
import time

from edgeagent.doctor.model import FAIL, PASS, WARN, CheckResult

RELEASE = threading.Event()  # the tests set it at the end to free the stuck thread


def check_plain(ctx):
    ctx.facts["plain"] = True
    return CheckResult("plain", PASS, "ran in a thread")


async def check_async(ctx):
    await asyncio.sleep(0)
    return [CheckResult("async one", PASS, "saw plain=%s" % ctx.facts.get("plain")),
            CheckResult("async two", WARN, "multi\nline", "fix\nit")]


def check_raises(ctx):
    raise PermissionError(13, "Permission denied", "/sys/kernel/debug")


def check_returns_garbage(ctx):
    return "ok"


def check_exits(ctx):
    raise SystemExit(3)


CHECKS = [check_plain, check_async, check_raises, check_returns_garbage, check_exits]


def check_stuck_thread(ctx):
    RELEASE.wait(30)
    return CheckResult("stuck thread", PASS, "released")


async def check_stuck_async(ctx):
    await asyncio.sleep(30)


async def check_ignores_cancel(ctx):
    while True:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:  # the misbehaviour under test
            continue


check_ignores_cancel.check_name = "stubborn"

HANGING = [check_stuck_thread, check_stuck_async, check_ignores_cancel]


def check_slow(ctx):
    time.sleep(0.3)
    return CheckResult("slow", PASS, "took 0.3s")


def check_after_slow(ctx):
    return CheckResult("after slow", FAIL, "should not run", "n/a")


SLOW = [check_slow, check_slow, check_after_slow]
