"""The supervisor: owns every component task, restarts failures, and shuts down in bounded time."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from edgeagent.backoff import Backoff
from edgeagent.sdnotify import Notifier

log = logging.getLogger(__name__)


class Component:
    """What the supervisor runs. ``run`` serves until cancelled and calls ``started()`` once it
    is doing its job (the READY=1 gate). Raising means failure: the supervisor restarts it.
    Cleanup belongs in ``try/finally`` inside ``run``: cancellation is the stop signal."""

    name = "component"

    async def run(self, started: Callable[[], None]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def problem(self) -> Optional[str]:
        """Why this component, though running, cannot do its job (no credentials, say), or
        None. Read on every status snapshot: /healthz reports the agent degraded meanwhile."""
        return None


@dataclass
class ComponentStatus:
    name: str
    up: bool = False
    started: bool = False       # reached started() at least once
    restarts: int = 0
    failures: int = 0
    last_error: Optional[str] = None
    state: str = "starting"     # starting, up, backoff, stopped, failed
    problem: Optional[str] = None   # the component's own word on why it cannot do its job

    @property
    def degraded(self) -> bool:
        """Crash-looping (waiting to restart, or out of its restart budget), or running but
        unable to do its job: what /healthz and the agent's metrics report."""
        return self.state in ("backoff", "failed") or self.problem is not None


@dataclass(frozen=True)
class RestartPolicy:
    base: float = 1.0
    cap: float = 60.0
    # Restart budget: this many failures inside the window ends the process (exit 1) so that
    # systemd restarts the whole agent fresh (mode's idea: a crash loop is not a steady state).
    budget: int = 6
    window: float = 300.0
    # SIGTERM to exit in under 2 s (issue 11): 1.2 s for the components here, then at most
    # 2 x 0.2 s in looprunner.run_bounded for stragglers and async generators.
    stop_timeout: float = 1.2


class Supervisor:
    def __init__(self, components: Sequence[Component], notifier: Optional[Notifier] = None,
                 policy: RestartPolicy = RestartPolicy(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError("component names must be unique: %s" % names)
        self.components = list(components)
        self.notifier = notifier or Notifier({})
        self.policy = policy
        self._clock = clock
        self._status: Dict[str, ComponentStatus] = {c.name: ComponentStatus(c.name)
                                                    for c in components}
        self._failure_times: Dict[str, List[float]] = {c.name: [] for c in components}
        self._ready_sent = False
        self._fatal: Optional[str] = None
        self._wake: Optional[asyncio.Event] = None

    def status(self) -> Mapping[str, ComponentStatus]:
        """A snapshot for health endpoints and metrics (copies: callers cannot change state)."""
        snapshot = {}
        for component in self.components:
            st = ComponentStatus(**vars(self._status[component.name]))
            if st.state in ("up", "starting"):
                try:
                    st.problem = component.problem()
                except Exception as e:  # a status read must never take /healthz down
                    st.problem = "status unknown: %s: %s" % (type(e).__name__, e)
            snapshot[component.name] = st
        return snapshot

    def _summary(self) -> str:
        parts = ["%s %s" % (s.name, s.state) for s in self._status.values()]
        return ", ".join(parts) or "no components"

    def _changed(self) -> None:
        self.notifier.status(self._summary())
        # Settled: doing its job, failed at least once, or finished (nothing to do on this host);
        # waiting for more would keep a finished component from ever letting READY=1 out.
        if not self._ready_sent and all(s.started or s.failures or s.state == "stopped"
                                        for s in self._status.values()):
            self._ready_sent = True
            self.notifier.ready(self._summary())
            log.info("ready: %s", self._summary())

    async def _supervise(self, component: Component) -> None:
        st = self._status[component.name]
        backoff = Backoff(self.policy.base, self.policy.cap, jitter=True)

        def started() -> None:
            if not st.up:
                st.up, st.started, st.state = True, True, "up"
                backoff.reset()
                self._changed()

        while True:
            st.state = "starting"
            try:
                await component.run(started)
            except asyncio.CancelledError:
                st.up, st.state = False, "stopped"
                raise
            except Exception as e:  # a component bug or an unexpected fault: restart it
                st.up = False
                st.failures += 1
                st.last_error = "%s: %s" % (type(e).__name__, e)
                log.error("component %s failed: %s", component.name, st.last_error,
                          exc_info=not isinstance(e, OSError))
                now = self._clock()
                times = [t for t in self._failure_times[component.name]
                         if now - t < self.policy.window] + [now]
                self._failure_times[component.name] = times
                if len(times) >= self.policy.budget:
                    st.state = "failed"
                    self._fatal = ("component %s failed %d times in %ds; exiting so systemd "
                                   "restarts the agent" % (component.name, len(times),
                                                           self.policy.window))
                    self._changed()
                    if self._wake is not None:
                        self._wake.set()
                    return
                delay = backoff.next()
                st.state = "backoff"
                self._changed()
                log.info("restarting %s in %.1fs", component.name, delay)
                await asyncio.sleep(delay)
                st.restarts += 1
                continue
            st.up, st.state = False, "stopped"
            log.info("component %s finished", component.name)
            self._changed()
            return

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_usec / 2e6
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set (exit 0) or a component exhausts its budget (exit 1)."""
        self._wake = asyncio.Event()
        tasks: List[asyncio.Task] = []
        for component in self.components:
            tasks.append(asyncio.ensure_future(self._supervise(component)))
        if not self.components:
            self._changed()
        watchdog = (asyncio.ensure_future(self._watchdog())
                    if self.notifier.watchdog_usec else None)
        stopper = asyncio.ensure_future(stop.wait())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait([stopper, waker], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waker.cancel()
            self.notifier.stopping()
            await self._shutdown(tasks)
            if watchdog is not None:
                watchdog.cancel()
        if self._fatal:
            log.error("%s", self._fatal)
            return 1
        return 0

    async def _shutdown(self, tasks: List[asyncio.Task]) -> None:
        # Reverse start order; each wait bounded (grpclib's wait_closed() can hang forever on
        # Python 3.12+ while a client stays connected, so nothing here waits unbounded).
        deadline = self._clock() + self.policy.stop_timeout
        for component, task in reversed(list(zip(self.components, tasks))):
            if task.done():
                continue
            task.cancel()
            remaining = max(0.05, deadline - self._clock())
            done, _ = await asyncio.wait([task], timeout=remaining)
            if not done:
                log.warning("component %s did not stop within %.1fs", component.name,
                            self.policy.stop_timeout)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.debug("component task ended with %r", task.exception())
