#!/usr/bin/env python3
"""Benchmark of the tegrastats exporter: parse cost per line and /metrics scrape latency.

    python bench/bench_exporter.py [--scrapes N] [--load 2]

Parse: every real fixture line (tests/fixtures/tegrastats/*.jsonl), best of many passes, in three
regimes - steady state (the line shapes seen before: the parser's memos are warm, as on a board
that prints the same fields every second), cold (memos cleared before every line) and a stream
(the 41-line demo log in order, from cold memos: a freshly started agent). The budget applies to
the first; the others show the spread.

Flood: the tegrastats runner in this process reading a child that prints 10,000 lines a second
for a few seconds; the agent's CPU time (the child's not included) per second, and how many lines
were read and how many parsed (one per read: the newest).

Scrape: `edgeagent run --demo` in a child process (the real registry: tegrastats, agent and
process collectors) and N sequential keep-alive GETs of /metrics; p50 and p99 latency.
Budgets: parse < 30 us/line, scrape p99 < 10 ms. Exit status 1 when a budget is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from edgeagent.tegrastats import parser  # noqa: E402
from edgeagent.tegrastats.replay import default_log  # noqa: E402
from tests.parser_memos import clear_memos  # noqa: E402
from bench.loadgen import Busy  # noqa: E402
from tests.tools import free_port  # noqa: E402

PARSE_BUDGET_US = 30.0
SCRAPE_P99_BUDGET_MS = 10.0


def fixture_lines():
    lines = []
    folder = os.path.join(REPO, "tests", "fixtures", "tegrastats")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                lines += [json.loads(x)["line"] for x in f if x.strip()]
    return lines


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def bench_parse():
    lines = fixture_lines()
    with open(default_log()) as f:
        stream = [x for x in f.read().splitlines() if "RAM " in x]
    parse = parser.parse_line

    def warm():
        for line in lines:
            parse(line)

    def cold():
        for line in lines:
            clear_memos()
            parse(line)

    def replay():
        clear_memos()
        for line in stream:
            parse(line)

    warm()
    return {
        "lines": len(lines),
        "stream_lines": len(stream),
        "warm_us": best_of(warm, 300) / len(lines) * 1e6,
        "cold_us": best_of(cold, 100) / len(lines) * 1e6,
        "stream_us": best_of(replay, 100) / len(stream) * 1e6,
    }


FLOOD_SCRIPT = """#!%(python)s
import sys, time
line = %(line)r + "\\n"
due = time.monotonic()
while True:
    sys.stdout.write(line * 100)
    sys.stdout.flush()
    due += 0.01
    time.sleep(max(0.0, due - time.monotonic()))
"""


def bench_flood(seconds=5.0):
    import asyncio
    import shutil
    import tempfile

    from edgeagent.config import TegrastatsOptions
    from edgeagent.hostpaths import HostRoot
    from edgeagent.tegrastats.runner import TegrastatsRunner, TegrastatsState

    root = tempfile.mkdtemp(prefix="eabench-")
    try:
        path = os.path.join(root, "usr", "bin", "tegrastats")
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            f.write(FLOOD_SCRIPT % {"python": sys.executable, "line": fixture_lines()[0]})
        os.chmod(path, 0o755)
        state = TegrastatsState("/usr/bin/tegrastats", 1.0)
        parsed = []
        parse = state._parse

        def counting(raw):
            parsed.append(1)
            return parse(raw)

        state._parse = counting
        runner = TegrastatsRunner(HostRoot(root), TegrastatsOptions("/usr/bin/tegrastats", 1000),
                                  state)

        async def run():
            task = asyncio.ensure_future(runner.run(lambda: None))
            while state.lines == 0:
                await asyncio.sleep(0.01)
            cpu, began, lines = time.process_time(), time.monotonic(), state.lines
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu, time.monotonic() - began
            lines = state.lines - lines
            task.cancel()
            await asyncio.wait([task], timeout=3)
            return cpu / wall, lines / wall, len(parsed) / max(1, state.lines)

        cpu_share, rate, parsed_share = asyncio.run(run())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"cpu_percent": cpu_share * 100, "lines_per_s": rate,
            "parsed_percent": parsed_share * 100}


def bench_scrape(scrapes):
    port = free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "edgeagent", "--log-level", "warning", "run", "--demo",
         "--disable", "device-plugin,labels", "--metrics-address", "127.0.0.1:%d" % port],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        body = b""
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                if b"jetson_tegrastats_up 1.0" in body:
                    break
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("the demo agent never served tegrastats metrics")
        latencies = []
        for _ in range(scrapes):
            began = time.perf_counter()
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - began)
            assert response.status == 200
        conn.close()
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    latencies.sort()
    return {
        "scrapes": scrapes,
        "bytes": len(body),
        "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "max_ms": latencies[-1] * 1e3,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scrapes", type=int, default=500)
    ap.add_argument("--load", type=int, default=0,
                    help="busy processes spinning meanwhile (2: both cores, as the test suite)")
    args = ap.parse_args()
    with Busy(args.load):
        p = bench_parse()
        fl = bench_flood()
        s = bench_scrape(args.scrapes)
    rows = [
        ("parse, %d fixture lines, steady state" % p["lines"], "%.1f us/line" % p["warm_us"],
         "< %.0f us" % PARSE_BUDGET_US, p["warm_us"] < PARSE_BUDGET_US),
        ("parse, %d fixture lines, cold memos" % p["lines"], "%.1f us/line" % p["cold_us"], "",
         None),
        ("parse, demo log in order (%d lines, cold start)" % p["stream_lines"],
         "%.1f us/line" % p["stream_us"], "", None),
        ("runner under a flood (%.0f lines/s): agent CPU" % fl["lines_per_s"],
         "%.1f %%" % fl["cpu_percent"], "", None),
        ("runner under a flood: lines parsed", "%.1f %%" % fl["parsed_percent"], "", None),
        ("scrape /metrics p50 (%d scrapes, %d series, %d B)" % (s["scrapes"], s["series"],
                                                                  s["bytes"]),
         "%.2f ms" % s["p50_ms"], "", None),
        ("scrape /metrics p99", "%.2f ms" % s["p99_ms"], "< %.0f ms" % SCRAPE_P99_BUDGET_MS,
         s["p99_ms"] < SCRAPE_P99_BUDGET_MS),
        ("scrape /metrics max", "%.2f ms" % s["max_ms"], "", None),
    ]
    print("edgeagent exporter benchmark: Python %s on %s %s, %d CPUs, %d busy processes" % (
        platform.python_version(), platform.system(), platform.machine(), os.cpu_count() or 0,
        args.load))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %14s  %9s  %s" % (width, "measure", "value", "budget", "result"))
    for name, value, budget, ok in rows:
        print("%-*s  %14s  %9s  %s" % (width, name, value, budget,
                                        "" if ok is None else ("PASS" if ok else "FAIL")))
    return 0 if all(r[3] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
