"""The metrics side of the one-file build under hostile peers (issue 11), on a fixture Nano:

- 1,100 slow clients (one header line every few seconds) and 50 idle ones on the metrics port,
  with systemd's default open-file limit (soft 1024): a scraper keeps succeeding all along, the
  agent's file descriptors stay well under the limit, and the log stays small and free of
  tracebacks;
- tegrastats flooding 10,000 lines a second: SIGTERM ends the agent within 2 s, exit 0, with
  nothing in the log ("Event loop is closed" tracebacks before) and no child left, every time.

Loopback only; each test is bounded in clients and seconds.
"""

import asyncio
import os
import resource
import time
from contextlib import contextmanager

import pytest

from tests.e2e.agent import TRACEBACK, AgentProcess, http_get, pyz_path
from tests.tools import free_port, wait_until

# The pyz and the package run under the system's python3, whatever runs the tests.
pytestmark = pytest.mark.artifact

SLOW_CLIENTS = 1100
IDLE_CLIENTS = 50
ATTACK_SECONDS = 12.0
SCRAPE_EVERY = 0.5
SYSTEMD_SOFT_NOFILE = 1024     # systemd's default LimitNOFILE soft limit (1024:524288)


@contextmanager
def soft_nofile(limit):
    """Children started inside inherit this soft open-file limit (the hard one is unchanged)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def metrics_agent(host, port, shiv_root):
    return AgentProcess(host.root, ["--disable", "device-plugin,labels",
                                    "--metrics-address", "127.0.0.1:%d" % port],
                        shiv_root=shiv_root)


def metric(port, name):
    status, body = http_get("http://127.0.0.1:%d/metrics" % port, timeout=5)
    assert status == 200
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


class Attack:
    """Slow and idle clients that come back whenever the server drops them, and a scraper."""

    def __init__(self, port, agent_pid):
        self.port = port
        self.agent_pid = agent_pid
        self.scrapes = []          # (ok, seconds, detail)
        self.connections = 0
        self.dropped = 0
        self.max_fds = 0

    async def _connect(self):
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)

    async def slow(self, i, until):
        while time.monotonic() < until:
            writer = None
            try:
                reader, writer = await self._connect()
                self.connections += 1
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: attack\r\n")
                n = 0
                while time.monotonic() < until:
                    # one header line every 2-4 s (spread so they do not come in lockstep)
                    try:
                        data = await asyncio.wait_for(reader.read(1024), 2.0 + (i + n) % 3)
                        if not data:
                            break                       # the server closed it
                    except asyncio.TimeoutError:
                        pass
                    writer.write(b"X-Slow-%d: %d\r\n" % (n, i))
                    await writer.drain()
                    n += 1
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            self.dropped += 1
            await asyncio.sleep(1.0)                     # and back again

    async def idle(self, until):
        while time.monotonic() < until:
            writer = None
            try:
                reader, writer = await self._connect()
                self.connections += 1
                await asyncio.wait_for(reader.read(1024), max(0.1, until - time.monotonic()))
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(1.0)

    async def scraper(self, until):
        while time.monotonic() < until:
            began = time.monotonic()
            writer = None
            try:
                reader, writer = await self._connect()
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n"
                             b"Connection: close\r\n\r\n")
                body = await asyncio.wait_for(reader.read(), 5)
                ok = body.startswith(b"HTTP/1.1 200") and b"jetson_tegrastats_lines_total" in body
                self.scrapes.append((ok, time.monotonic() - began, body[:80]))
            except (OSError, asyncio.TimeoutError) as e:
                self.scrapes.append((False, time.monotonic() - began, repr(e)))
            finally:
                if writer is not None:
                    writer.close()
            self.max_fds = max(self.max_fds, open_fds(self.agent_pid))
            await asyncio.sleep(max(0.0, SCRAPE_EVERY - (time.monotonic() - began)))

    async def run(self, seconds):
        until = time.monotonic() + seconds
        tasks = [asyncio.ensure_future(self.scraper(until))]
        tasks += [asyncio.ensure_future(self.idle(until)) for _ in range(IDLE_CLIENTS)]
        for i in range(SLOW_CLIENTS):
            tasks.append(asyncio.ensure_future(self.slow(i, until)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)   # ramp up: the first scrapes run meanwhile
        await asyncio.wait(tasks, timeout=seconds + 15)
        for task in tasks:
            task.cancel()


def test_slow_and_idle_clients_do_not_stop_scrapes(host, shiv_root):
    pyz_path()
    port = free_port()
    agent = metrics_agent(host, port, shiv_root)
    try:
        with soft_nofile(SYSTEMD_SOFT_NOFILE):
            agent.start()
        agent.wait_ready()
        wait_until(lambda: metric(port, "jetson_tegrastats_up") == 1, 20, "tegrastats metrics")
        attack = Attack(port, agent.proc.pid)
        asyncio.run(attack.run(ATTACK_SECONDS))
        failed = [s for s in attack.scrapes if not s[0]]
        assert not failed, "%d of %d scrapes failed: %s\n%s" % (
            len(failed), len(attack.scrapes), failed[:5], agent.log()[-3000:])
        assert len(attack.scrapes) >= ATTACK_SECONDS / SCRAPE_EVERY / 2
        slowest = max(s[1] for s in attack.scrapes)
        assert slowest < 2.0, "a scrape took %.2fs" % slowest
        # the attack really came, and was pushed out again and again
        assert attack.connections > SLOW_CLIENTS + IDLE_CLIENTS and attack.dropped > SLOW_CLIENTS
        assert attack.max_fds < SYSTEMD_SOFT_NOFILE // 2, attack.max_fds
        assert agent.alive()
        status, body = http_get("http://127.0.0.1:%d/healthz" % port)
        assert status == 200, body
        log = agent.log()
        assert TRACEBACK not in log, log[-4000:]
        assert len(log) < 20000, "%d bytes of log in %.0fs:\n%s" % (len(log), ATTACK_SECONDS,
                                                                   log[-3000:])
        code, took = agent.terminate()
        assert code == 0 and took < 2.0
    finally:
        agent.cleanup()


def test_sigterm_under_a_tegrastats_flood_is_clean_every_time(host, shiv_root):
    pyz_path()
    with open(os.path.join(host.ctl, "flood"), "w") as f:
        f.write("10000")
    port = free_port()
    for round_ in range(3):
        agent = metrics_agent(host, port, shiv_root)
        try:
            agent.start()
            agent.wait_ready()
            # a few seconds of flood: tens of thousands of lines read
            wait_until(lambda: (metric(port, "jetson_tegrastats_lines_total") or 0) > 20000,
                       20, "the flood to be read")
            assert metric(port, "jetson_tegrastats_up") == 1
            child = host.tegrastats_pid(agent.proc.pid)
            assert child is not None
            code, took = agent.terminate()
            log = agent.log()
            assert code == 0, log[-3000:]
            assert took < 2.0, "round %d: SIGTERM took %.2fs\n%s" % (round_, took, log[-3000:])
            assert TRACEBACK not in log and "Event loop is closed" not in log, log[-4000:]
            assert not os.path.exists("/proc/%d" % child) or \
                open("/proc/%d/stat" % child).read().split(") ")[1][0] == "Z", \
                "tegrastats outlived the agent"
        finally:
            agent.cleanup()
