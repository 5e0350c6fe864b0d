"""Helpers the tests and the benchmarks share: real peer tools, free ports, polling.

Missing peer tools (promtool, prometheus, systemd-analyze, kubectl) skip their tests on a
developer machine, but fail them in CI (EDGEAGENT_REQUIRE_TOOLS=1, set by ./build.sh test when
CI=true): a peer test must not silently stop running.
"""

import asyncio
import os
import shutil
import socket
import time
from typing import Callable


def require_tool(name: str) -> str:
    import pytest  # here, so that the benchmarks can use this module without pytest

    path = shutil.which(name)
    if path:
        return path
    message = "%s is not installed (Debian package; ./build.sh test installs it as root)" % name
    if os.environ.get("EDGEAGENT_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers the tests start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something true, and return that; after ``timeout``
    seconds fail naming ``what``. Nothing in the tests sleeps a fixed time instead."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def arun(coro, timeout: float = 60):
    """Run one coroutine to completion on a fresh loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition"
                ) -> None:
    """The event-loop twin of ``wait_until``: poll ``cond`` without blocking the loop."""
    loop = asyncio.get_event_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.01)


class ComponentThread:
    """Runs ``self.component`` (a supervisor Component, set by the subclass) on its own thread
    and event loop, so blocking peers (grpcio kubelets) can drive it. ``start`` waits for the
    component's started(); an error it ended with is raised by ``start`` and ``stop``."""

    component = None   # set by the subclass's __init__

    def __init__(self) -> None:
        import threading

        self.started = threading.Event()
        self.error = None
        self.loop = None
        self.task = None
        self.thread = None
        self.registry = None

    # The benches set this: run_agent asks for it on its loop's thread (edgeagent/schedslice.py)
    short_slice = False

    def _main(self) -> None:
        if self.short_slice:
            from edgeagent.schedslice import request_short_slice

            request_short_slice()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.component.run(self.started.set))
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # surfaced by start()/stop()
            self.error = e
            self.started.set()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self, timeout: float = 10.0) -> "ComponentThread":
        """Run the component (again, as the supervisor restarts one, after ``stop``)."""
        import threading

        self.started.clear()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        if not self.started.wait(timeout):
            raise AssertionError("the component never called started()")
        if self.error is not None:
            raise self.error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.thread is None or not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("the component did not stop within %.1fs" % timeout)
        if self.error is not None:
            raise self.error

    def metrics(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
