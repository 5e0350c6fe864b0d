"""The HTTP server: /metrics (text and OpenMetrics), /healthz (200/503), /, and a scrape that does
not wait on a hung tegrastats."""

import asyncio
import json
import time

from prometheus_client import CollectorRegistry

from edgeagent.metrics.collector import TegrastatsCollector
from edgeagent.metrics.component import health_summary
from edgeagent.metrics.server import MetricsServer
from edgeagent.supervisor import ComponentStatus
from edgeagent.tegrastats.runner import TegrastatsState

LINE = ("RAM 936/3964MB (lfb 366x4MB) SWAP 0/4096MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [10%@102,3%@102,0%@102,0%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@24C "
        "CPU@27.5C PMIC@50C GPU@28C AO@29.5C thermal@28C POM_5V_IN 920/920 POM_5V_GPU 0/0")


async def with_server(registry, health, scenario):
    import aiohttp

    server = MetricsServer(registry, "127.0.0.1", 0, health)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            return await scenario(session, "http://127.0.0.1:%d" % server.bound_port)
    finally:
        await server.stop()


def make_registry(line=LINE):
    state = TegrastatsState("/usr/bin/tegrastats", 1.0)
    state.present = True
    state.accept_read([line.encode()])
    registry = CollectorRegistry()
    registry.register(TegrastatsCollector(state))
    return registry, state


def test_metrics_text_and_openmetrics():
    registry, _ = make_registry()

    async def scenario(session, base):
        async with session.get(base + "/metrics") as r:
            text_type, text = r.headers["Content-Type"], await r.text()
            assert r.status == 200
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        async with session.get(base + "/metrics", headers={"Accept": accept}) as r:
            om_type, om = r.headers["Content-Type"], await r.text()
        return text_type, text, om_type, om

    text_type, text, om_type, om = asyncio.run(with_server(registry, lambda: (True, {}), scenario))
    assert text_type.startswith("text/plain; version=0.0.4")
    assert "jetson_ram_used_bytes 9.81467136e+08" in text and "# EOF" not in text
    assert om_type.startswith("application/openmetrics-text; version=1.0.0")
    assert om.endswith("# EOF\n") and "jetson_tegrastats_lines_total 1.0" in om


def test_healthz_200_when_all_up_503_otherwise_and_index_page():
    registry, state = make_registry()
    status = {"discovery": ComponentStatus("discovery", up=True, state="up"),
              "metrics": ComponentStatus("metrics", up=True, state="up")}

    async def scenario(session, base):
        out = []
        async with session.get(base + "/healthz") as r:
            out.append((r.status, json.loads(await r.text())))
        status["labels"] = ComponentStatus("labels", up=False, state="backoff", failures=2,
                                           last_error="ClientError: 403")
        async with session.get(base + "/healthz") as r:
            out.append((r.status, json.loads(await r.text())))
        async with session.get(base + "/") as r:
            out.append((r.status, r.headers["Content-Type"], await r.text()))
        async with session.get(base + "/nope") as r:
            out.append(r.status)
        return out

    ok, bad, index, missing = asyncio.run(
        with_server(registry, lambda: health_summary(status, state), scenario))
    assert ok[0] == 200 and ok[1]["status"] == "ok" and ok[1]["service"] == "edgeagent"
    assert ok[1]["tegrastats"]["up"] is True and ok[1]["tegrastats"]["lines"] == 1
    assert bad[0] == 503 and bad[1]["status"] == "degraded"
    assert bad[1]["components"]["labels"] == {"up": False, "state": "backoff", "restarts": 0,
                                              "failures": 2, "last_error": "ClientError: 403",
                                              "degraded": True, "problem": None}
    assert bad[1]["components"]["metrics"]["degraded"] is False
    assert index[0] == 200 and index[1].startswith("text/html")
    assert 'href="metrics"' in index[2] and 'href="healthz"' in index[2]
    assert missing == 404


def test_a_running_component_with_a_problem_is_degraded_and_503():
    # up, but without credentials: the supervisor's snapshot carries the component's own word
    from edgeagent.supervisor import Component, Supervisor

    class NoCredentials(Component):
        name = "labels"

        def problem(self):
            return "no kubeconfig: nothing to label with"

    class Fine(Component):
        name = "metrics"

    supervisor = Supervisor([NoCredentials(), Fine()])
    for st in supervisor._status.values():
        st.up, st.started, st.state = True, True, "up"
    ok, doc = health_summary(supervisor.status())
    assert not ok and doc["status"] == "degraded"
    assert doc["components"]["labels"]["problem"] == "no kubeconfig: nothing to label with"
    assert doc["components"]["labels"]["degraded"] is True and doc["components"]["labels"]["up"]
    assert doc["components"]["metrics"]["degraded"] is False
    # crash-looping: waiting to restart, or out of budget
    for state in ("backoff", "failed"):
        ok, doc = health_summary({"metrics": ComponentStatus("metrics", up=False, state=state)})
        assert not ok and doc["components"]["metrics"]["degraded"] is True


def test_health_summary_with_no_components_is_not_healthy():
    ok, doc = health_summary({})
    assert not ok and doc["status"] == "degraded" and "tegrastats" not in doc


def test_a_scrape_does_not_wait_on_a_hung_tegrastats(tmp_path):
    # a real runner whose child printed one line and then hangs: scrapes answer at once
    import os

    from edgeagent.backoff import Backoff
    from edgeagent.config import TegrastatsOptions
    from edgeagent.hostpaths import HostRoot
    from edgeagent.tegrastats.runner import TegrastatsRunner

    path = str(tmp_path) + "/usr/bin/tegrastats"
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('#!/bin/sh\necho "%s"\nexec sleep 30\n' % LINE)
    os.chmod(path, 0o755)
    state = TegrastatsState("/usr/bin/tegrastats", 1.0)
    runner = TegrastatsRunner(HostRoot(str(tmp_path)),
                              TegrastatsOptions("/usr/bin/tegrastats", 1000), state,
                              backoff=Backoff(0.01, 0.05))
    registry = CollectorRegistry()
    registry.register(TegrastatsCollector(state))

    async def scenario(session, base):
        task = asyncio.ensure_future(runner.run(lambda: None))
        try:
            while state.sample is None:
                await asyncio.sleep(0.02)
            worst = 0.0
            for _ in range(20):
                began = time.monotonic()
                async with session.get(base + "/metrics") as r:
                    body = await r.text()
                    assert r.status == 200
                worst = max(worst, time.monotonic() - began)
            return worst, body
        finally:
            task.cancel()
            await asyncio.wait([task], timeout=3)

    worst, body = asyncio.run(with_server(registry, lambda: (True, {}), scenario))
    assert "jetson_tegrastats_up 1.0" in body
    assert worst < 1.0, "a scrape took %.2fs while tegrastats was silent" % worst


def test_address_in_use_is_a_clear_oserror():
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", port, lambda: (True, {}))
    try:
        try:
            asyncio.run(server.start())
        except OSError as e:
            assert "cannot listen on 127.0.0.1:%d" % port in str(e)
        else:
            raise AssertionError("bound a port that is in use")
    finally:
        held.close()


RAW_CASES = [
    # (request line, status, body or None for "any", extra header expected)
    ("GET /nope", 404, b"404: Not Found", None),
    ("GET /metrics/", 404, b"404: Not Found", None),     # no slash folding, as aiohttp's router
    ("GET //metrics", 404, b"404: Not Found", None),
    ("DELETE /nope", 404, b"404: Not Found", None),      # an unknown path wins over the method
    ("POST /metrics", 405, b"405: Method Not Allowed", "Allow: GET,HEAD"),
    ("OPTIONS /", 405, b"405: Method Not Allowed", "Allow: GET,HEAD"),
    ("HEAD /healthz", 200, b"", "Content-Type: application/json; charset=utf-8"),
    ("GET /metrics?x=1", 200, None, "Content-Type: text/plain; version=0.0.4; charset=utf-8"),
    ("GET /%6Detrics", 200, None, "Content-Type: text/plain; version=0.0.4; charset=utf-8"),
    ("GET /", 200, None, "Content-Type: text/html; charset=utf-8"),
]


def test_paths_and_methods_answer_as_aiohttps_router_did():
    # The server dispatches three paths itself (no aiohttp.web router): these are the answers
    # the router gave, recorded from the AppRunner version on aiohttp 3.10 and 3.14.
    registry, _ = make_registry()

    async def scenario():
        server = MetricsServer(registry, "127.0.0.1", 0, lambda: (True, {"status": "ok"}))
        await server.start()
        out = []
        try:
            for line, *_ in RAW_CASES:
                r, w = await asyncio.open_connection("127.0.0.1", server.bound_port)
                w.write(("%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                         % line).encode())
                out.append(await asyncio.wait_for(r.read(), 10))
                w.close()
        finally:
            await server.stop()
        return out

    for (line, status, body, header), raw in zip(RAW_CASES, asyncio.run(scenario())):
        head, _, got_body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 %d " % status), (line, lines[0])
        if body is not None:
            assert got_body == body, (line, got_body)
        else:
            assert got_body, line
        if header is not None:
            assert header in lines, (line, lines)


def test_the_server_leaves_aiohttp_web_unloaded():
    # aiohttp.web would load the application, router, static files, WebSocket and runner
    # modules: 1 MiB resident the agent never uses (issue 15).
    import subprocess
    import sys
    import textwrap

    from tests.conftest import REPO

    code = textwrap.dedent("""
        import asyncio, sys, urllib.request
        from prometheus_client import CollectorRegistry
        from edgeagent.metrics.server import MetricsServer

        async def main():
            server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, {}))
            await server.start()
            url = "http://127.0.0.1:%d/healthz" % server.bound_port
            loop = asyncio.get_running_loop()
            status = await loop.run_in_executor(None, lambda: urllib.request.urlopen(url).status)
            await server.stop()
            return status

        print(asyncio.run(main()), sorted(m for m in sys.modules if m.startswith("aiohttp.web")))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                         universal_newlines=True, timeout=60, check=True).stdout.split(None, 1)
    assert out[0] == "200"
    loaded = eval(out[1])
    assert "aiohttp.web" not in loaded and "aiohttp.web_urldispatcher" not in loaded
    assert "aiohttp.web_fileresponse" not in loaded and "aiohttp.web_ws" not in loaded
