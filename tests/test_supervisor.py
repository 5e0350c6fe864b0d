"""The supervisor and the systemd notify protocol, with a real AF_UNIX datagram socket."""

import asyncio
import os
import shutil
import socket
import tempfile
import time

import pytest

from edgeagent import supervisor as supervisor_module
from edgeagent.backoff import Backoff
from edgeagent.sdnotify import Notifier
from edgeagent.supervisor import Component, RestartPolicy, Supervisor

FAST = RestartPolicy(base=0.001, cap=0.01, budget=50, window=300, stop_timeout=0.5)
# Waits that only end early when the code works; generous so a loaded machine cannot flake.
PATIENCE = 20.0


class NotifySocket:
    """The systemd side of sd_notify: a bound datagram socket collecting messages."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="ea-notify-", dir="/tmp")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "edgeagent-test-%d-%d" % (os.getpid(), id(self))
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self.env_value = os.path.join(self.dir, "notify")
            self.sock.bind(self.env_value)
        self.sock.setblocking(False)
        self.messages = []

    def env(self, **extra):
        return dict({"NOTIFY_SOCKET": self.env_value}, **extra)

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.messages

    def lines(self):
        return [line for m in self.drain() for line in m.split("\n")]

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    s = NotifySocket()
    yield s
    s.close()


async def eventually(predicate, what):
    deadline = time.monotonic() + PATIENCE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("never happened: " + what)
        await asyncio.sleep(0.005)


class Steady(Component):
    def __init__(self, name, log=None, gate=None):
        self.name = name
        self.log = log if log is not None else []
        self.gate = gate
        self.runs = 0

    async def run(self, started):
        self.runs += 1
        if self.gate is not None:
            await self.gate.wait()
        started()
        self.log.append("start " + self.name)
        try:
            await asyncio.sleep(3600)
        finally:
            self.log.append("stop " + self.name)


class Flaky(Component):
    """Fails ``failures`` times, then serves."""

    def __init__(self, name, failures):
        self.name = name
        self.failures = failures
        self.runs = 0

    async def run(self, started):
        self.runs += 1
        if self.runs <= self.failures:
            raise RuntimeError("boom %d" % self.runs)
        started()
        await asyncio.sleep(3600)


class Stubborn(Component):
    """Ignores cancellation until ``release`` is set (a component stuck in cleanup)."""

    name = "stubborn"

    def __init__(self):
        self.release = None
        self.cancelled = False

    async def run(self, started):
        self.release = asyncio.Event()
        started()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    pass
            raise


class Finisher(Component):
    name = "finisher"

    async def run(self, started):
        return None   # nothing to do on this host


def run_async(coro):
    return asyncio.run(coro)


# --- restarts -----------------------------------------------------------------------------------

def test_restart_with_backoff_after_failure(monkeypatch):
    delays = []

    class RecordingBackoff(Backoff):
        def next(self):
            value = super().next()
            delays.append((self.attempt, value))
            return value

    monkeypatch.setattr(supervisor_module, "Backoff", RecordingBackoff)
    flaky = Flaky("flaky", failures=3)
    sup = Supervisor([flaky], policy=FAST)

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: sup.status()["flaky"].up, "flaky up")
        status = sup.status()["flaky"]
        stop.set()
        return status, await asyncio.wait_for(task, PATIENCE)

    status, code = run_async(main())
    assert code == 0
    assert (status.failures, status.restarts, status.state, status.started) == (3, 3, "up", True)
    assert status.last_error == "RuntimeError: boom 3"
    assert flaky.runs == 4
    assert [a for a, _ in delays] == [1, 2, 3]                      # one backoff step each
    assert all(0 <= d <= min(FAST.cap, FAST.base * 2 ** (a - 1)) for a, d in delays)


def test_backoff_grows_caps_and_resets():
    b = Backoff(base=0.5, cap=4.0, jitter=False)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    import random
    j = Backoff(base=1.0, cap=8.0, jitter=True, rng=random.Random(7))
    values = [j.next() for _ in range(200)]
    assert all(0 <= v <= 8.0 for v in values) and len(set(values)) > 100
    huge = Backoff(base=1.0, cap=60.0, jitter=False)
    huge.attempt = 10 ** 6
    assert huge.next() == 60.0


def test_one_failing_component_does_not_stop_the_others():
    log = []
    steady = Steady("steady", log)
    flaky = Flaky("flaky", failures=5)
    sup = Supervisor([steady, flaky], policy=FAST)

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: sup.status()["flaky"].up, "flaky recovered")
        snapshot = sup.status()
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
        return snapshot

    snapshot = run_async(main())
    assert snapshot["steady"].up and snapshot["steady"].restarts == 0
    assert snapshot["flaky"].failures == 5
    assert steady.runs == 1 and log == ["start steady", "stop steady"]


def test_restart_budget_ends_with_exit_1():
    log = []
    steady = Steady("steady", log)
    always = Flaky("always", failures=10 ** 6)
    sup = Supervisor([steady, always],
                     policy=RestartPolicy(base=0.001, cap=0.002, budget=4, window=60,
                                          stop_timeout=0.5))

    async def main():
        return await asyncio.wait_for(sup.run(asyncio.Event()), PATIENCE)

    assert run_async(main()) == 1
    st = sup.status()
    assert st["always"].state == "failed" and st["always"].failures == 4
    assert st["always"].restarts == 3
    assert log == ["start steady", "stop steady"]                    # the others were stopped
    assert st["steady"].state == "stopped"


def test_failures_outside_the_window_do_not_count():
    now = [0.0]
    always = Flaky("always", failures=7)
    sup = Supervisor([always], policy=RestartPolicy(base=0.001, cap=0.001, budget=3, window=10,
                                                    stop_timeout=0.5),
                     clock=lambda: now[0])
    original = always.run

    async def run_and_age(started):
        now[0] += 6.0                    # each failure 6 s after the last: never 3 in 10 s
        await original(started)

    always.run = run_and_age

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: sup.status()["always"].up, "recovered")
        stop.set()
        return await asyncio.wait_for(task, PATIENCE)

    assert run_async(main()) == 0
    assert sup.status()["always"].failures == 7


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="unique"):
        Supervisor([Steady("a"), Steady("a")])


# --- shutdown -----------------------------------------------------------------------------------

def test_stop_shuts_down_in_reverse_order():
    log = []
    sup = Supervisor([Steady("a", log), Steady("b", log), Steady("c", log)], policy=FAST)

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: len(log) == 3, "all started")
        stop.set()
        return await asyncio.wait_for(task, PATIENCE)

    assert run_async(main()) == 0
    assert log[3:] == ["stop c", "stop b", "stop a"]
    assert {s.state for s in sup.status().values()} == {"stopped"}
    assert not any(s.up for s in sup.status().values())


def test_bounded_shutdown_with_a_component_that_ignores_cancellation():
    log = []
    stubborn = Stubborn()
    policy = RestartPolicy(base=0.001, cap=0.01, budget=50, window=300, stop_timeout=0.2)
    sup = Supervisor([Steady("first", log), stubborn], policy=policy)

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: sup.status()["stubborn"].up and log, "started")
        stop.set()
        # The bound is the policy's stop_timeout (0.2 s) plus a little; PATIENCE only keeps a
        # broken supervisor from hanging the test.
        code = await asyncio.wait_for(task, PATIENCE)
        assert stubborn.cancelled and log == ["start first", "stop first"]
        stubborn.release.set()      # let it go, so this event loop can close
        return code

    assert run_async(main()) == 0


# --- READY and sd_notify ------------------------------------------------------------------------

def test_ready_only_after_every_component_started_or_failed(notify_socket):
    log = []
    holder = {}

    async def main():
        holder["gate"] = asyncio.Event()
        slow = Steady("slow", log, gate=holder["gate"])
        fails = Flaky("fails", failures=10 ** 6)
        sup = Supervisor([Steady("fast", log), slow, fails], Notifier(notify_socket.env()),
                         policy=RestartPolicy(base=5.0, cap=5.0, budget=50, stop_timeout=0.5))
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: "start fast" in log and sup.status()["fails"].failures,
                         "fast up, fails failed")
        await asyncio.sleep(0.05)
        before = notify_socket.lines()
        holder["gate"].set()
        await eventually(lambda: "READY=1" in notify_socket.lines(), "READY=1")
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
        return before

    before = run_async(main())
    assert "READY=1" not in before
    assert any(line.startswith("STATUS=") for line in before)
    lines = notify_socket.lines()
    assert lines.count("READY=1") == 1
    ready_message = next(m for m in notify_socket.messages if m.startswith("READY=1"))
    assert "slow up" in ready_message and "fails backoff" in ready_message
    assert lines[-1] == "STOPPING=1" or "STOPPING=1" in lines


def test_ready_counts_a_component_with_nothing_to_do(notify_socket):
    async def main():
        sup = Supervisor([Steady("a"), Finisher()], Notifier(notify_socket.env()), policy=FAST)
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: "READY=1" in notify_socket.lines(), "READY=1")
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
        return sup.status()

    status = run_async(main())
    assert status["finisher"].state == "stopped" and not status["finisher"].started


def test_ready_with_no_components(notify_socket):
    async def main():
        sup = Supervisor([], Notifier(notify_socket.env()), policy=FAST)
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: "READY=1" in notify_socket.lines(), "READY=1")
        stop.set()
        return await asyncio.wait_for(task, PATIENCE)

    assert run_async(main()) == 0


def test_notifier_speaks_the_protocol(notify_socket):
    n = Notifier(notify_socket.env())
    assert n.enabled
    n.ready("all up")
    n.status("2 components")
    n.watchdog()
    n.stopping()
    n.close()
    assert notify_socket.drain() == ["READY=1\nSTATUS=all up", "STATUS=2 components",
                                     "WATCHDOG=1", "STOPPING=1"]


def test_notifier_abstract_socket():
    s = NotifySocket(abstract=True)
    try:
        n = Notifier(s.env())
        n.ready()
        n.close()
        assert s.drain() == ["READY=1"]
    finally:
        s.close()


def test_notifier_without_socket_is_a_no_op(tmp_path):
    n = Notifier({})
    assert not n.enabled and n.watchdog_usec == 0
    n.ready()
    n.stopping()
    n.close()
    # a socket that went away is logged, not raised
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    gone.ready()
    gone.close()


@pytest.mark.parametrize("env, usec", [
    ({"WATCHDOG_USEC": "2000000"}, 2000000),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 2000000),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, 0),     # meant for another process
    ({"WATCHDOG_USEC": "0"}, 0),
    ({"WATCHDOG_USEC": "soon"}, 0),
    ({}, 0),
])
def test_watchdog_settings(env, usec):
    assert Notifier(dict(env, NOTIFY_SOCKET="/nonexistent")).watchdog_usec == usec


def test_watchdog_pings_at_half_the_interval(notify_socket):
    # WATCHDOG_USEC 0.4 s: pings every 0.2 s. Count them over a wall-clock span measured here,
    # and bound them loosely from both sides, so a slow machine cannot make this flake.
    async def main():
        n = Notifier(notify_socket.env(WATCHDOG_USEC="400000"))
        sup = Supervisor([Steady("a")], n, policy=FAST)
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: notify_socket.lines().count("WATCHDOG=1") >= 3, "3 pings")
        started = time.monotonic()
        first = notify_socket.lines().count("WATCHDOG=1")
        await asyncio.sleep(1.0)
        pings = notify_socket.lines().count("WATCHDOG=1") - first
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
        return pings, elapsed

    pings, elapsed = run_async(main())
    # every 0.2 s: about elapsed / 0.2 pings; a full-interval (0.4 s) pinger would send half
    assert pings <= elapsed / 0.2 + 1
    assert pings >= 1
    assert "STOPPING=1" in notify_socket.lines()


def test_no_watchdog_pings_without_watchdog_usec(notify_socket):
    async def main():
        sup = Supervisor([Steady("a")], Notifier(notify_socket.env()), policy=FAST)
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: "READY=1" in notify_socket.lines(), "READY")
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, PATIENCE)

    run_async(main())
    assert "WATCHDOG=1" not in notify_socket.lines()


# --- status() -----------------------------------------------------------------------------------

def test_status_snapshot_is_a_copy():
    sup = Supervisor([Steady("a"), Flaky("b", failures=1)], policy=FAST)
    before = sup.status()
    assert set(before) == {"a", "b"}
    assert (before["a"].name, before["a"].up, before["a"].state, before["a"].restarts) == (
        "a", False, "starting", 0)

    async def main():
        stop = asyncio.Event()
        task = asyncio.ensure_future(sup.run(stop))
        await eventually(lambda: all(s.up for s in sup.status().values()), "all up")
        snapshot = sup.status()
        snapshot["a"].up = False
        snapshot["a"].restarts = 99
        assert sup.status()["a"].up and sup.status()["a"].restarts == 0
        stop.set()
        await asyncio.wait_for(task, PATIENCE)
        return snapshot

    snapshot = run_async(main())
    assert snapshot["b"].failures == 1 and snapshot["b"].last_error == "RuntimeError: boom 1"
    assert before["a"].state == "starting"          # the first snapshot never changed either
