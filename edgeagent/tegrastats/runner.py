"""Runs ``tegrastats --interval MS`` as a child process and keeps its latest parsed line.

The child runs in its own session (process group): on restart or shutdown its pipes are closed
first (a flood of output then stops at once, and a child that ignores SIGTERM dies of SIGPIPE on
its next write), then the whole group gets SIGTERM, then SIGKILL, each wait bounded, and the
runner waits until the loop has seen the child exit: nothing of it is left for a closed loop
("Event loop is closed" at shutdown came from child and pipe callbacks that outlived the loop).
``tegrastats --stop`` is never used: it stops every tegrastats on the host, including ones that
are not ours.

Output is read through a protocol (no ``StreamReader.readline``, whose line limit cuts an
over-long line and hands on its tail as a line): each read is split by
:class:`~edgeagent.tegrastats.lines.LineSplitter`, and only the newest line of a read is parsed.
At one line per interval a read holds one line; a child flooding thousands of lines a second
costs one parse per read, not one per line, and the loop stays free.

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
from typing import TYPE_CHECKING, Callable, Deque, Dict, List, Optional

from edgeagent.backoff import Backoff
from edgeagent.hostpaths import HostRoot
from edgeagent.supervisor import Component
from edgeagent.tegrastats.lines import MAX_LINE_BYTES, LineSplitter
from edgeagent.tegrastats.parser import TegraSample, parse_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import TegrastatsOptions

log = logging.getLogger(__name__)

HANG_INTERVALS = 5             # no line for this many intervals: the child hung, restart it
STALE_INTERVALS = 3            # no line for this many intervals: the sample is too old to serve
STABLE_SECONDS = 60.0          # a child that ran this long resets the restart backoff
ABSENT_RECHECK_SECONDS = 60.0  # a host without tegrastats is re-checked this often (cheap stat)
# Stopping a child waits at most TERM + KILL + DRAIN = 1.0 s: the supervisor gives every
# component 1.2 s in all to stop (SIGTERM must end the agent within 2 s).
TERM_WAIT_SECONDS = 0.5        # for the group to exit after SIGTERM
KILL_WAIT_SECONDS = 0.3        # for the loop to see the exit after SIGKILL
DRAIN_WAIT_SECONDS = 0.2       # for the pipes' last callbacks
STDERR_LINE_BYTES = 1024       # stderr is kept for the log only: its last few short lines

# Why a line read from tegrastats was not turned into a sample (jetson_tegrastats_lines_dropped)
TOO_LONG = "too_long"          # over the line limit: skipped whole, never parsed
UNPARSABLE = "unparsable"      # no field the parser knows (not a tegrastats line)
SUPERSEDED = "superseded"      # a newer line came in the same read: only the newest is parsed
DROP_REASONS = (TOO_LONG, UNPARSABLE, SUPERSEDED)


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
        self.dropped: Dict[str, int] = {reason: 0 for reason in DROP_REASONS}
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

    def accept_read(self, lines: List[bytes], too_long: int = 0) -> bool:
        """The lines one read completed, and how many over-long ones it skipped: all are
        counted, only the newest non-blank one is parsed. True if it gave a sample."""
        self.lines += len(lines) + too_long
        if too_long:
            self.dropped[TOO_LONG] += too_long
        for index in range(len(lines) - 1, -1, -1):
            if lines[index].strip():
                self.dropped[SUPERSEDED] += sum(1 for line in lines[:index] if line.strip())
                return self._parse(lines[index])
        return False

    def _parse(self, raw: bytes) -> bool:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return False
        try:
            sample = parse_line(text)
        except Exception:  # the parser never raises (fuzzed); if it ever does, count, do not die
            log.exception("tegrastats line not parsed: %r", text[:200])
            self.parse_errors += 1
            self.dropped[UNPARSABLE] += 1
            return False
        self.parse_errors += len(sample.unknown)
        if sample.empty:
            self.dropped[UNPARSABLE] += 1
            return False
        self.sample = sample
        self.sample_monotonic = self.clock()
        self.sample_time = time.time()
        return True

    def summary(self) -> Dict[str, object]:
        """For /healthz."""
        return {
            "path": self.host_path,
            "present": self.present,
            "running": self.running,
            "up": self.fresh_sample() is not None,
            "last_sample_age_seconds": self.sample_age(),
            "lines": self.lines,
            "lines_dropped": dict(self.dropped),
            "parse_errors": self.parse_errors,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


def is_runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class TegrastatsChild(asyncio.SubprocessProtocol):
    """One running ``tegrastats --interval MS``: its output goes to ``on_read(lines, too_long)``
    read by read; its last stderr lines are kept for the log. Start with :meth:`spawn`, end with
    :meth:`stop` (always, also after it exited: that is what reaps it and closes the pipes)."""

    def __init__(self, on_read: Callable[[List[bytes], int], None]) -> None:
        loop = asyncio.get_event_loop()
        self.on_read = on_read
        self.stdout = LineSplitter()
        self.stderr = LineSplitter(STDERR_LINE_BYTES)
        self.errors: Deque[str] = deque(maxlen=5)
        self.last_output = time.monotonic()
        self.exited: "asyncio.Future[None]" = loop.create_future()
        self.finished: "asyncio.Future[None]" = loop.create_future()  # exited, pipes closed
        self.transport: Optional[asyncio.SubprocessTransport] = None
        self._stopping = False

    @classmethod
    async def spawn(cls, path: str, interval_ms: int,
                    on_read: Callable[[List[bytes], int], None]) -> "TegrastatsChild":
        """Start the child; OSError when it cannot be started."""
        loop = asyncio.get_event_loop()
        _, child = await loop.subprocess_exec(
            lambda: cls(on_read), path, "--interval", str(interval_ms),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        return child

    # --- asyncio.SubprocessProtocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            before = self.stdout.too_long
            lines = self.stdout.feed(data)
            too_long = self.stdout.too_long - before
            if lines or too_long:
                self.last_output = time.monotonic()
                self.on_read(lines, too_long)
        else:
            for raw in self.stderr.feed(data):
                text = raw.decode("utf-8", "replace").strip()
                if text:
                    self.errors.append(text[:200])

    def pipe_connection_lost(self, fd: int, exc: Optional[Exception]) -> None:
        # The child closed its end (it exited): a last line without a newline still counts.
        # When stop() closed the pipe, what is left is a line cut short by us: dropped.
        if self._stopping:
            return
        if fd == 1:
            lines = self.stdout.finish()
            if lines:
                self.on_read(lines, 0)
        else:
            self.pipe_data_received(fd, b"\n")

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    # --- control ----------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return self.transport.get_pid() if self.transport is not None else None

    @property
    def returncode(self) -> Optional[int]:
        return self.transport.get_returncode() if self.transport is not None else None

    async def wait(self, timeout: float) -> bool:
        """True once the child exited (within ``timeout`` seconds)."""
        if not self.exited.done():
            await asyncio.wait([self.exited], timeout=timeout)
        return self.exited.done()

    def _signal_group(self, sig: int) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            # The child leads its own session: its children get the signal too, even once it
            # has exited itself (the group lives while a member does).
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            if not self.exited.done():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    async def stop(self) -> None:
        """SIGTERM the group and close the pipes, SIGKILL the group if it is still there (each
        wait bounded), and wait until the loop has seen the exit and the pipes closed. Safe to
        call more than once, and after the child exited by itself."""
        transport = self.transport
        if transport is None:
            return
        self._stopping = True
        if not self.exited.done():
            self._signal_group(signal.SIGTERM)
        for fd in (1, 2):
            pipe = transport.get_pipe_transport(fd)
            if pipe is not None:
                pipe.close()          # nothing it prints now matters; a flood stops here
        try:
            if not await self.wait(TERM_WAIT_SECONDS):
                log.warning("tegrastats (pid %s) ignored SIGTERM; killing it", self.pid)
                self._signal_group(signal.SIGKILL)
                if not await self.wait(KILL_WAIT_SECONDS):
                    log.error("tegrastats (pid %s) did not die after SIGKILL", self.pid)
        except asyncio.CancelledError:
            self._signal_group(signal.SIGKILL)   # cancelled again while waiting: no more waiting
            transport.close()
            raise
        # What the child left behind in its group (a helper that ignored SIGTERM with it, or one
        # that outlived a crash) goes too.
        self._signal_group(signal.SIGKILL)
        transport.close()
        if not self.finished.done():
            # the pipes' connection_lost callbacks run on the next loop iterations
            await asyncio.wait([self.finished], timeout=DRAIN_WAIT_SECONDS)


class TegrastatsRunner(Component):
    """Keeps one ``tegrastats --interval MS`` child running and feeds its lines to the state."""

    name = "tegrastats"

    def __init__(self, root: HostRoot, options: "TegrastatsOptions", state: TegrastatsState,
                 backoff: Optional[Backoff] = None,
                 absent_recheck: float = ABSENT_RECHECK_SECONDS) -> None:
        self.root = root
        self.options = options
        self.state = state
        self.backoff = backoff or Backoff(base=1.0, cap=60.0, jitter=True)
        self.absent_recheck = absent_recheck
        self._failing = False
        self._children = 0      # children started so far: every one after the first is a restart

    def problem(self) -> Optional[str]:
        """tegrastats is there but its child keeps failing (no line since it last ended)."""
        if self.state.present and self._failing:
            return "tegrastats %s; restarting" % (self.state.last_error or "failed")
        return None

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
            if not self._failing:
                log.warning("tegrastats %s; restarting (backoff up to %.0fs)", reason,
                            self.backoff.cap)
                self._failing = True
            else:
                log.debug("tegrastats %s; restarting in %.1fs", reason, delay)
            await asyncio.sleep(delay)

    def _on_read(self, lines: List[bytes], too_long: int) -> None:
        if too_long and self.state.dropped[TOO_LONG] == 0:
            log.warning("tegrastats printed a line over %d bytes; skipped (counted in "
                        "jetson_tegrastats_lines_dropped_total)", MAX_LINE_BYTES)
        if self.state.accept_read(lines, too_long) and self._failing:
            log.info("tegrastats running again")
            self._failing = False

    async def _run_child(self, path: str, started: Callable[[], None]) -> str:
        """Run one child until it exits or hangs; return why it ended. Cancellation stops it."""
        state = self.state
        interval_ms = self.options.interval_ms
        try:
            child = await TegrastatsChild.spawn(path, interval_ms, self._on_read)
        except OSError as e:
            started()
            return "could not start: %s" % (e.strerror or e)
        # Counted now that the new child exists (not when the old one ended: a restart that
        # fails to start is no restart).
        if self._children:
            state.restarts += 1
        else:
            log.info("tegrastats started: %s --interval %d (pid %s)", state.host_path,
                     interval_ms, child.pid)
        self._children += 1
        state.running = True
        started()
        hang_after = HANG_INTERVALS * interval_ms / 1000.0
        try:
            while not child.exited.done():
                remaining = child.last_output + hang_after - time.monotonic()
                if remaining <= 0:
                    return "printed no line for %.1fs (%d intervals)" % (hang_after,
                                                                        HANG_INTERVALS)
                await child.wait(remaining)
            # exited: let the pipes drain (stderr says why), bounded
            await asyncio.wait([child.finished], timeout=DRAIN_WAIT_SECONDS)
            code = child.returncode
            detail = "; ".join(child.errors)
            return "exited with status %s%s" % (
                code if code is not None else "unknown", ": " + detail if detail else "")
        finally:
            state.running = False
            await child.stop()
