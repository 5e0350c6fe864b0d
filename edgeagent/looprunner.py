"""The one bounded loop runner: ``asyncio.run`` without its unbounded clean-up. I/O (an event
loop), used by `run` and `doctor`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Dict, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger("edgeagent")

# Tasks given up on at exit, by id. The strong references keep them from being collected while
# pending for the life of the process, so asyncio never reports them a second time ("Task was
# destroyed but it is pending!") after run_bounded already named them; the loop's exception
# handler below recognises them if finalisation collects them anyway.
_ABANDONED: Dict[int, "asyncio.Task[Any]"] = {}


def _task_label(task: "asyncio.Task[Any]") -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or repr(coro)


def abandoned_task_count() -> int:
    return len(_ABANDONED)


def _exception_handler(loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
    task = context.get("task")
    if task is not None and _ABANDONED.get(id(task)) is task:
        return  # reported once when it was abandoned
    loop.default_exception_handler(context)


def run_bounded(main: Awaitable[T], grace: float = 0.2,
                loop: Optional[asyncio.AbstractEventLoop] = None) -> T:
    """Run ``main`` on a fresh event loop and return its result. Unlike ``asyncio.run``, which
    waits for every task it cancels (one task that ignores cancellation would hold SIGTERM's
    exit forever), tasks still running when ``main`` ends get ``grace`` seconds, are then named
    in one warning and abandoned; async generators get ``grace`` seconds too."""
    loop = loop or asyncio.new_event_loop()
    loop.set_exception_handler(_exception_handler)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _finish(loop, grace)
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the default executor down without waiting for its threads


def _finish(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=grace))
        late = [t for t in pending if not t.done()]
        if late:
            log.warning("%d task(s) still running at exit; not waiting for them: %s",
                        len(late), ", ".join(sorted(_task_label(t) for t in late)))
            for task in late:
                _ABANDONED[id(task)] = task
    for task in pending:
        if task.done() and not task.cancelled() and task.exception() is not None:
            # Retrieved here so that asyncio does not log "exception was never retrieved".
            log.debug("task %s ended with %r", _task_label(task), task.exception())
    gens = loop.create_task(loop.shutdown_asyncgens())
    loop.run_until_complete(asyncio.wait([gens], timeout=grace))
    if not gens.done():
        _ABANDONED[id(gens)] = gens
