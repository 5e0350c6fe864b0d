"""Runs ``tegrastats --interval MS`` as a child process and keeps its latest parsed line.

The child runs in its own session (process group): on restart or shutdown the whole group gets
SIGTERM, then SIGKILL, each wait bounded, and the child is always reaped. ``tegrastats --stop`` is
never used: it stops every tegrastats on the host, including ones that are not ours.

If the agent itself is killed with SIGKILL, systemd's control-group kill takes the child with it;
without systemd, the orphan dies on its next write (SIGPIPE: nobody reads its stdout any more).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from typing import Callable, Deque, Optional

from edgeagent.backoff import Backoff
from edgeagent.hostpaths import HostRoot
from edgeagent.supervisor import Component
from edgeagent.tegrastats.parser import TegraSample, parse_line

log = logging.getLogger(__name__)

LINE_LIMIT = 64 * 1024         # a real line is under 1 KiB; more is a broken child
HANG_INTERVALS = 5             # no line for this many intervals: the child hung, restart it
STALE_INTERVALS = 3            # no line for this many intervals: the sample is too old to serve
STABLE_SECONDS = 60.0          # a child that ran this long resets the restart backoff
ABSENT_RECHECK_SECONDS = 60.0  # a host without tegrastats is re-checked this often (cheap stat)
TERM_WAIT_SECONDS = 0.5        # the supervisor gives every component 1.5 s in all to stop


class TegrastatsState:
    """What the runner knows; the collector and /healthz read it without ever waiting on it."""

    def __init__(self, host_path: str, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host_path = host_path
        self.interval_s = interval_s
        self.clock = clock
        self.present: Optional[bool] = None     # None until the first check
        self.running = False
        self.sample: Optional[TegraSample] = None
        self.sample_monotonic: Optional[float] = None
        self.sample_time: Optional[float] = None   # wall clock, for Prometheus
        self.lines = 0
        self.parse_errors = 0
        self.restarts = 0
        self.last_error: Optional[str] = None

    def fresh_sample(self) -> Optional[TegraSample]:
        """The latest sample if it arrived within STALE_INTERVALS intervals, else None."""
        if self.sample is None or self.sample_monotonic is None:
            return None
        if self.clock() - self.sample_monotonic > STALE_INTERVALS * self.interval_s:
            return None
        return self.sample

    def sample_age(self) -> Optional[float]:
        if self.sample_monotonic is None:
            return None
        return max(0.0, self.clock() - self.sample_monotonic)

    def accept(self, raw: bytes) -> None:
        """Count and parse one line of tegrastats output."""
        self.lines += 1
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            sample = parse_line(text)
        except Exception:  # the parser never raises (tested); if it ever does, count, do not die
            log.exception("tegrastats line not parsed: %r", text[:200])
            self.parse_errors += 1
            return
        self.parse_errors += len(sample.unknown)
        if sample.empty:
            return
        self.sample = sample
        self.sample_monotonic = self.clock()
        self.sample_time = time.time()

    def summary(self) -> dict:
        """For /healthz."""
        return {
            "path": self.host_path,
            "present": self.present,
            "running": self.running,
            "up": self.fresh_sample() is not None,
            "last_sample_age_seconds": self.sample_age(),
            "lines": self.lines,
            "parse_errors": self.parse_errors,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


def is_runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class TegrastatsRunner(Component):
    """Keeps one ``tegrastats --interval MS`` child running and feeds its lines to the state."""

    name = "tegrastats"

    def __init__(self, root: HostRoot, state: TegrastatsState, interval_ms: int,
                 backoff: Optional[Backoff] = None,
                 absent_recheck: float = ABSENT_RECHECK_SECONDS) -> None:
        self.root = root
        self.state = state
        self.interval_ms = interval_ms
        self.backoff = backoff or Backoff(base=1.0, cap=60.0, jitter=True)
        self.absent_recheck = absent_recheck
        self._failing = False
        self._started_once = False

    async def run(self, started: Callable[[], None]) -> None:
        state = self.state
        path = self.root.resolve(state.host_path)
        while True:
            if not is_runnable(path):
                if state.present is not False:
                    why = "not executable" if os.path.exists(path) else "not found"
                    log.info("tegrastats %s (%s): serving the agent's own metrics only",
                             why, state.host_path)
                state.present = False
                started()
                await asyncio.sleep(self.absent_recheck)
                continue
            if state.present is False:
                log.info("tegrastats appeared at %s", state.host_path)
            state.present = True
            began = time.monotonic()
            reason = await self._run_child(path, started)
            state.last_error = reason
            if time.monotonic() - began >= STABLE_SECONDS:
                self.backoff.reset()
            delay = self.backoff.next()
            state.restarts += 1
            if not self._failing:
                log.warning("tegrastats %s; restarting (backoff up to %.0fs)", reason,
                            self.backoff.cap)
                self._failing = True
            else:
                log.debug("tegrastats %s; restarting in %.1fs", reason, delay)
            await asyncio.sleep(delay)

    async def _run_child(self, path: str, started: Callable[[], None]) -> str:
        """Run one child until it exits or hangs; return why it ended. Cancellation stops it."""
        state = self.state
        try:
            proc = await asyncio.create_subprocess_exec(
                path, "--interval", str(self.interval_ms),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT)
        except OSError as e:
            started()
            return "could not start: %s" % (e.strerror or e)
        state.running = True
        if not self._started_once:
            log.info("tegrastats started: %s --interval %d (pid %d)", state.host_path,
                     self.interval_ms, proc.pid)
            self._started_once = True
        started()
        errors: Deque[str] = deque(maxlen=5)
        stderr_task = asyncio.ensure_future(_keep_tail(proc.stderr, errors))
        hang_after = HANG_INTERVALS * self.interval_ms / 1000.0
        oversize_logged = False
        try:
            while True:
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), hang_after)
                except asyncio.TimeoutError:
                    return "printed no line for %.1fs (%d intervals)" % (hang_after,
                                                                        HANG_INTERVALS)
                except ValueError:  # a line over LINE_LIMIT: the stream skipped it
                    state.lines += 1
                    state.parse_errors += 1
                    if not oversize_logged:
                        log.warning("tegrastats printed a line over %d bytes; skipped", LINE_LIMIT)
                        oversize_logged = True
                    continue
                if not line:
                    code = await _wait(proc, TERM_WAIT_SECONDS)
                    await asyncio.sleep(0)          # let the stderr reader take the last bytes
                    detail = "; ".join(errors)
                    return "exited with status %s%s" % (
                        code if code is not None else "unknown", ": " + detail if detail else "")
                state.accept(line)
                if self._failing and state.sample is not None:
                    log.info("tegrastats running again")
                    self._failing = False
        finally:
            state.running = False
            await stop_child(proc)
            stderr_task.cancel()


async def _keep_tail(stream: Optional[asyncio.StreamReader], tail: Deque[str]) -> None:
    """Read a child's stderr to the end, keeping its last lines (bounded) for the log."""
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            continue
        if not line:
            return
        text = line.decode("utf-8", "replace").strip()
        if text:
            tail.append(text[:200])


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> Optional[int]:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        return None


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)        # the child leads its own session: take its children too
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


async def stop_child(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL, each wait bounded; the child is reaped (no zombie) either way."""
    try:
        await _end(proc)
    finally:
        # Close the pipes now: left to the garbage collector, Python 3.8 closes them on a loop
        # that may be closed already ("Event loop is closed" at shutdown).
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        if await _wait(proc, TERM_WAIT_SECONDS) is not None:
            return
    except asyncio.CancelledError:
        _signal_group(proc, signal.SIGKILL)   # cancelled again while waiting: no more waiting
        raise
    log.warning("tegrastats (pid %d) ignored SIGTERM; killing it", proc.pid)
    _signal_group(proc, signal.SIGKILL)
    if await _wait(proc, TERM_WAIT_SECONDS) is None:
        log.error("tegrastats (pid %d) did not die after SIGKILL", proc.pid)
