"""Runs the doctor's checks: every check module (imported in ``_checks_*`` below, in report
order), each check time-bounded.

A check is a plain or ``async`` function ``(ctx) -> CheckResult | List[CheckResult]``. Modules
run concurrently (so one slow area cannot starve the others); the checks of one module run in
order (a check may leave a fact in ``ctx.facts`` for a later one). A check that raises, returns
something else or overruns its bound becomes a FAIL line with the reason, never a traceback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from edgeagent.doctor.model import FAIL, SKIP, CheckResult, DoctorContext

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import Config
    from edgeagent.hostpaths import HostRoot

log = logging.getLogger(__name__)

# The whole doctor must answer in under 5 s even with a dead API server (issue 5). Network steps
# use ctx.timeout (1.5 s: a check may make two); CHECK_TIMEOUT bounds one check and DEADLINE all
# of them, leaving over a second for start-up and discovery on a slow board.
CHECK_TIMEOUT = 3.0
DEADLINE = 3.5

Check = Callable[[DoctorContext], Any]
# Imports a module of checks (one with ``CHECKS = [fn, ...]``) and returns it.
CheckSource = Callable[[], ModuleType]


# The check modules, in report order. Each is imported in its own function so that one that
# fails to import (a broken build) becomes a FAIL line while the others still run.
def _checks_host() -> ModuleType:
    from edgeagent.doctor import checks_host
    return checks_host


def _checks_plugin() -> ModuleType:
    from edgeagent.doctor import checks_plugin
    return checks_plugin


def _checks_runtime() -> ModuleType:
    from edgeagent.doctor import checks_runtime
    return checks_runtime


def _checks_kube() -> ModuleType:
    from edgeagent.doctor import checks_kube
    return checks_kube


def _checks_dra() -> ModuleType:
    from edgeagent.doctor import checks_dra
    return checks_dra


def _checks_metrics() -> ModuleType:
    from edgeagent.doctor import checks_metrics
    return checks_metrics


DEFAULT_SOURCES: Tuple[CheckSource, ...] = (_checks_host, _checks_plugin, _checks_runtime,
                                            _checks_kube, _checks_dra, _checks_metrics)


def default_check_modules() -> List[str]:
    """The names of the modules whose checks `doctor` runs, in report order."""
    return [source().__name__ for source in DEFAULT_SOURCES]


def check_name(func: Check) -> str:
    """The name a check's failure is reported under: its ``check_name`` attribute, else the
    function name without ``check_`` and with spaces."""
    name = getattr(func, "check_name", None)
    if name:
        return str(name)
    base = getattr(func, "__name__", repr(func))
    if base.startswith("check_"):
        base = base[len("check_"):]
    return base.replace("_", " ")


def load_checks(sources: Sequence[CheckSource]
                ) -> List[Tuple[str, List[Check], Optional[CheckResult]]]:
    """(name, checks, problem) for each source; a module that fails to import or has no
    CHECKS list yields a FAIL result instead of checks."""
    out: List[Tuple[str, List[Check], Optional[CheckResult]]] = []
    for source in sources:
        name = getattr(source, "__name__", "checks").lstrip("_")
        try:
            module = source()
            name = module.__name__
            checks = list(getattr(module, "CHECKS"))
        except Exception as e:  # a broken check module must not hide the others
            out.append((name, [], CheckResult(
                "doctor " + name.rsplit(".", 1)[-1], FAIL,
                "cannot load %s: %s: %s" % (name, type(e).__name__, _one_line(str(e))),
                "a broken edgeagent build: reinstall it (sudo ./edgeagent.pyz install)")))
            continue
        out.append((name, checks, None))
    return out


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _normalise(func: Check, value: Any) -> List[CheckResult]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(r, CheckResult) for r in items):
        return [CheckResult(check_name(func), FAIL,
                            "check returned %s, not CheckResult" % type(value).__name__,
                            "a bug in edgeagent's doctor: please report it")]
    return [CheckResult(r.check, r.status, _one_line(r.detail), _one_line(r.fix)) for r in items]


def _crashed(func: Check, e: BaseException) -> List[CheckResult]:
    text = _one_line(str(e)) or "(no message)"
    return [CheckResult(check_name(func), FAIL, "check raised %s: %s" % (type(e).__name__, text),
                        "a bug in edgeagent's doctor or an unexpected host state: "
                        "rerun with --log-level debug and report it")]


def _in_thread(func: Check, ctx: DoctorContext) -> "asyncio.Future[Any]":
    # A daemon thread, not an executor: a plain check stuck in a read of a hung NFS mount or a
    # sysfs file must not keep the process alive after the report (executor threads are joined
    # at exit).
    loop = asyncio.get_event_loop()
    future: "asyncio.Future[Any]" = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def target() -> None:
        try:
            ok, value = True, func(ctx)
        except BaseException as e:  # delivered to the awaiting coroutine
            ok, value = False, e
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the report is out and the loop closed: nobody is waiting
            pass

    threading.Thread(target=target, name="doctor-check", daemon=True).start()
    return future


async def run_check(func: Check, ctx: DoctorContext, timeout: float) -> List[CheckResult]:
    """One check, bounded by ``timeout`` seconds; never raises (but lets cancellation through)."""
    if inspect.iscoroutinefunction(func):
        task: "asyncio.Future[Any]" = asyncio.ensure_future(func(ctx))
    else:
        task = _in_thread(func, ctx)
    try:
        # asyncio.wait, not wait_for: wait_for waits for a timed-out coroutine to finish its
        # cancellation, and a check that lingers in cleanup would hold the whole report.
        done, _ = await asyncio.wait([task], timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait([task], timeout=0.2)  # a short grace for its cleanup
        return [CheckResult(check_name(func), FAIL, "did not finish within %.1fs" % timeout,
                            "something it reads or calls hangs: rerun with --log-level debug")]
    try:
        value = task.result()
    except asyncio.CancelledError:
        return [CheckResult(check_name(func), FAIL, "check was cancelled",
                            "a bug in edgeagent's doctor: please report it")]
    except (Exception, SystemExit) as e:
        log.debug("check %s raised", check_name(func), exc_info=True)
        return _crashed(func, e)
    return _normalise(func, value)


async def _run_module(checks: List[Check], ctx: DoctorContext, deadline: float,
                      check_timeout: float) -> List[CheckResult]:
    results: List[CheckResult] = []
    loop = asyncio.get_event_loop()
    for func in checks:
        remaining = deadline - loop.time()
        if remaining <= 0.05:
            results.append(CheckResult(check_name(func), SKIP,
                                       "not run: the doctor's time budget was used up"))
            continue
        results.extend(await run_check(func, ctx, min(check_timeout, remaining)))
    return results


async def run_checks(ctx: DoctorContext, sources: Optional[Sequence[CheckSource]] = None,
                     deadline: float = DEADLINE,
                     check_timeout: float = CHECK_TIMEOUT) -> List[CheckResult]:
    """Every check of ``sources`` (default: DEFAULT_SOURCES), in their order."""
    loaded = load_checks(DEFAULT_SOURCES if sources is None else sources)
    end = asyncio.get_event_loop().time() + deadline
    tasks = [asyncio.ensure_future(_run_module(checks, ctx, end, check_timeout))
             for _, checks, _ in loaded]
    try:
        per_module = await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    results: List[CheckResult] = []
    for (_, _, problem), found in zip(loaded, per_module):
        if problem is not None:
            results.append(problem)
        results.extend(found)
    return results


def build_context(root: "HostRoot", config: "Config",
                  timeout: Optional[float] = None) -> DoctorContext:
    """The context `doctor` checks: discovery runs here, and its failure is recorded in
    ``facts["discovery_error"]`` (the devicetree check reports it) instead of raising."""
    from edgeagent.discovery.scan import discover

    network = min(1.5, config.options.kube.timeout_seconds) if timeout is None else timeout
    ctx = DoctorContext(root=root, config=config, timeout=network)
    started = time.monotonic()
    try:
        ctx.inventory = discover(root)
    except Exception as e:  # DeviceTreeError, or a discovery bug: either way a FAIL line
        ctx.facts["discovery_error"] = "%s" % e if type(e).__name__ == "DeviceTreeError" \
            else "%s: %s" % (type(e).__name__, e)
    ctx.facts["discovery_seconds"] = time.monotonic() - started
    return ctx
