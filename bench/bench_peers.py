#!/usr/bin/env python3
"""`edgeagent tegrastats FILE` against jetson-stats' parser, whole processes, same file, same run.

    python bench/bench_peers.py [--pyz dist/edgeagent.pyz] [--lines 20000] [--runs 5]
                                [--python PATH ...]

The peer: jetson-stats 7.2.x, downloaded at run time into a temporary folder
(``pip download --no-deps jetson-stats==7.2.*``, unpacked there, never committed; it is pure
Python). jtop 7.2 no longer runs tegrastats itself, but keeps its parser: ``jtop/core/
tegrastats.py``'s ``Tegrastats._decode`` composes ``tegra_parse``'s DATE, VALS, MTS, RAM, SWAP,
IRAM, CPUS, TEMPS and WATTS into one stats dict per line, and its reader thread reads a line with
``readline()`` and ``decode("utf-8")``. The peer process here does exactly that for every line of
the file and prints each dict with ``json.dumps``. Only ``jtop.core.tegrastats`` and what it
imports are loaded (not ``jtop/__init__``, which starts the whole client): the peer's start-up is
counted at its cheapest.

The log: 20,000 lines cycling every real line of tests/fixtures/tegrastats/*.jsonl (47 lines, TX1
to Thor), and a second log, board after board (each real line 425 times in a row), with the last
digit of every number changed (seeded), so that values differ from line to line as on a real board
and memos of whole values miss. Each process runs ``--runs`` times after one warm-up (the pyz's
shiv cache is warm); the best time is reported. Goal: edgeagent at least 5x faster than the peer on
the real lines. Exit status 1 when it is not, on any interpreter.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GOAL_RATIO = 5.0

PEER_SCRIPT = r'''
import json, os, sys, types
# jtop/__init__ imports the whole client (jtop.jtop, its service, psutil...): load only the
# parser's modules, as packages without their __init__
src = sys.argv[1]
for name, path in (("jtop", os.path.join(src, "jtop")),
                   ("jtop.core", os.path.join(src, "jtop", "core"))):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from jtop.core.tegrastats import Tegrastats

decode = object.__new__(Tegrastats)._decode      # uses no state: the callback is not needed
dumps, write = json.dumps, sys.stdout.write
failed = 0
with open(sys.argv[2], "rb") as f:
    for line in iter(f.readline, b""):
        try:
            stats = decode(line.decode("utf-8"))
        except Exception:          # jtop's reader thread stops on the first; count them instead
            failed += 1
            continue
        write(dumps(stats) + "\n")
sys.stderr.write("failed %d\n" % failed)
'''


def fixture_lines():
    lines = []
    folder = os.path.join(REPO, "tests", "fixtures", "tegrastats")
    for name in ("lines.jsonl", "more_lines.jsonl"):
        with open(os.path.join(folder, name)) as f:
            lines += [json.loads(x)["line"] for x in f if x.strip()]
    return lines


def write_logs(folder, count):
    real = fixture_lines()
    rnd = random.Random(15)
    plain = os.path.join(folder, "real.log")
    varied = os.path.join(folder, "varied.log")
    with open(plain, "w") as f:
        for line in itertools.islice(itertools.cycle(real), count):
            f.write(line + "\n")

    def jitter(m):
        # the last digit of a number, as a board's readings move; not a sensor's -256 (off), and
        # no load over 100 %: a real board prints neither change
        text, line, end = m.group(), m.string, m.end()
        new = text[:-1] + rnd.choice("0123456789")
        if line[m.start() - 1:m.start()] == "-" or line[end:end + 1] == "%" and int(new) > 100:
            return text
        return new

    with open(varied, "w") as f:
        # board after board, as 47 boards' logs end to end: a board prints its own shape
        for k in range(count):
            line = real[k * len(real) // count]
            # numbers, not the digits of names (GR3D, CV0, VDD_1V8)
            f.write(re.sub(r"(?<![A-Za-z_0-9])[0-9]+", jitter, line) + "\n")
    return len(real), plain, varied


def fetch_peer(folder, python):
    """jetson-stats 7.2.x unpacked under folder; its version."""
    subprocess.run([python, "-m", "pip", "download", "--quiet", "--no-deps", "-d", folder,
                    "jetson-stats==7.2.*"], check=True, timeout=300)
    for wheel in glob.glob(os.path.join(folder, "jetson_stats-*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(os.path.join(folder, "peer"))
        return os.path.join(folder, "peer"), os.path.basename(wheel).split("-")[1]
    for sdist in glob.glob(os.path.join(folder, "jetson_stats-*.tar.gz")):
        with tarfile.open(sdist) as t:
            t.extractall(os.path.join(folder, "sdist"))
        top = glob.glob(os.path.join(folder, "sdist", "jetson_stats-*"))[0]
        return top, os.path.basename(top).split("-")[1]
    raise SystemExit("pip downloaded no jetson-stats 7.2.x")


def best_time(argv, out_path, runs):
    """Best wall time of ``runs`` runs (after a warm-up); the output of the last one."""
    best = float("inf")
    for k in range(runs + 1):
        with open(out_path, "wb") as out:
            began = time.perf_counter()
            result = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, timeout=600)
            elapsed = time.perf_counter() - began
        if result.returncode != 0:
            raise SystemExit("%s failed: %s" % (" ".join(argv), result.stderr.decode()[-500:]))
        if k:
            best = min(best, elapsed)
    return best


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def version_of(python):
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          stdout=subprocess.PIPE, check=True).stdout.decode().strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pyz", default=os.environ.get("EDGEAGENT_PYZ",
                                                    os.path.join(REPO, "dist", "edgeagent.pyz")))
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--python", action="append",
                    help="interpreter to run both with (repeatable; default: this one, and "
                         "/usr/bin/python3 when it is the same Python version)")
    args = ap.parse_args()
    if not os.path.isfile(args.pyz):
        raise SystemExit("no %s: ./build.sh first (or --pyz)" % args.pyz)
    pythons = args.python or [sys.executable]
    system = "/usr/bin/python3"
    if not args.python and os.path.exists(system) and \
            version_of(system).rsplit(".", 1)[0] == platform.python_version().rsplit(".", 1)[0] \
            and os.path.realpath(system) != os.path.realpath(sys.executable):
        pythons.append(system)

    folder = tempfile.mkdtemp(prefix="eabench-peers-")
    rows, ok = [], True
    try:
        shapes, real_log, varied_log = write_logs(folder, args.lines)
        peer_src, peer_version = fetch_peer(folder, sys.executable)
        script = os.path.join(folder, "jtop_peer.py")
        with open(script, "w") as f:
            f.write(PEER_SCRIPT)
        print("edgeagent tegrastats vs jetson-stats %s, %d lines (%d real lines cycled), "
              "best of %d, on %s %s, %d CPUs"
              % (peer_version, args.lines, shapes, args.runs, platform.system(),
                 platform.machine(), os.cpu_count() or 0))
        for python in pythons:
            name = "Python %s (%s)" % (version_of(python), python)
            for label, log in (("real lines", real_log), ("values varied", varied_log)):
                ours_out = os.path.join(folder, "ours.jsonl")
                peer_out = os.path.join(folder, "peer.jsonl")
                ours = best_time([python, args.pyz, "tegrastats", log], ours_out, args.runs)
                peer = best_time([python, script, peer_src, log], peer_out, args.runs)
                n_ours, n_peer = count_lines(ours_out), count_lines(peer_out)
                ratio = peer / ours
                passed = ratio >= GOAL_RATIO if label == "real lines" else None
                ok = ok and passed is not False
                rows.append((name, label, ours, peer, ratio, n_ours, n_peer, passed))
            start = best_time([python, args.pyz, "tegrastats", os.devnull], os.devnull, args.runs)
            rows.append((name, "start-up only (empty file)", start, None, None, 0, 0, None))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("%-50s %-27s %10s %10s %7s %s" % ("interpreter", "log", "edgeagent", "jtop", "ratio",
                                            "goal >= %.0fx" % GOAL_RATIO))
    for name, label, ours, peer, ratio, n_ours, n_peer, passed in rows:
        print("%-50s %-27s %9.3fs %10s %7s %s" % (
            name, label, ours, "" if peer is None else "%.3fs" % peer,
            "" if ratio is None else "%.1fx" % ratio,
            "" if passed is None else ("PASS" if passed else "FAIL")))
        if peer is not None:
            print("%-50s %-27s %7.1f us/line %5.1f us/line  (%d and %d JSON lines out)" % (
                "", "", ours / args.lines * 1e6, peer / args.lines * 1e6, n_ours, n_peer))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
