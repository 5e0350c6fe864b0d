"""`edgeagent tegrastats [FILE]`: one JSON object per line, from a file or stdin."""

import io
import json
import os
import subprocess
import sys

import pytest

from edgeagent import cli
from edgeagent.tegrastats import replay
from tests.conftest import REPO, tegrastats_fixture_lines

KEYS = ("ram_used_bytes", "ram_total_bytes", "swap_used_bytes", "swap_total_bytes", "cpus",
        "gpu_utilization", "temperatures_celsius", "power_watts", "unknown")


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_the_packaged_demo_log(capsys):
    code, out, err = run(["tegrastats", replay.default_log()], capsys)
    assert code == 0 and err == ""
    docs = [json.loads(line) for line in out.splitlines()]
    assert len(docs) == 42                     # the `date` header line and 41 tegrastats lines
    assert docs[0]["unknown"] == ["pon,", "6", "maj", "2024,", "09:26:28", "UTC"]
    first = docs[1]
    for key in KEYS:
        assert key in first
    assert first["ram_used_bytes"] == 7978 * 2 ** 20 and first["unknown"] == []
    assert first["cpus"][0] == {"index": 0, "online": True, "utilization": 0.29,
                                "frequency_hz": 2264 * 10 ** 6}
    assert first["power_watts"]["GPU"] == {"current": 11.832, "average": 11.832, "max": None}
    assert first["temperatures_celsius"]["tdiode"] == 56.25


def test_stdin_and_dash(capsys, monkeypatch):
    lines = "\n".join(row["line"] for row in tegrastats_fixture_lines()[:3]) + "\n\n"
    code, out, _ = run(["tegrastats"], capsys, lines.encode(), monkeypatch)
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run(["tegrastats", "-"], capsys, lines.encode(), monkeypatch)
    assert code == 0 and [json.loads(x)["unknown"] for x in out.splitlines()] == [[], [], []]


def test_missing_file_is_one_line_and_exit_2(capsys, tmp_path):
    code, out, err = run(["tegrastats", str(tmp_path / "nope.log")], capsys)
    assert code == 2 and out == ""
    assert err == "edgeagent: error: tegrastats log %s: no such file\n" % (tmp_path / "nope.log")
    code, _, err = run(["tegrastats", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "is a directory" in err


def test_bad_bytes_do_not_crash(capsys, tmp_path):
    path = tmp_path / "binary.log"
    path.write_bytes(b"RAM 1/2MB \xff\xfe\x00 CPU [5%@10]\n\x00\x01\x02\n")
    code, out, _ = run(["tegrastats", str(path)], capsys)
    docs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and docs[0]["ram_total_bytes"] == 2 * 2 ** 20 and len(docs) == 2


def test_the_real_cli_in_a_pipe():
    # the console entry point, as an operator runs it: `tegrastats | edgeagent tegrastats`
    line = tegrastats_fixture_lines()[-1]["line"]
    result = subprocess.run([sys.executable, "-m", "edgeagent", "tegrastats"],
                            input=(line + "\n").encode(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, timeout=60,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpu_utilization"] == 0.02


def test_an_over_long_line_is_skipped_whole_and_said_once(capsys, tmp_path):
    line = tegrastats_fixture_lines()[0]["line"]
    path = tmp_path / "long.log"
    # the junk ends like a tegrastats line: its tail must not come out as one
    path.write_bytes(line.encode() + b"\n" + b"x" * 100000 + b" RAM 1/2MB GR3D_FREQ 42%\n"
                     + line.encode())             # the last line has no newline: still read
    code, out, err = run(["tegrastats", str(path)], capsys)
    docs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(docs) == 2 and all(d["unknown"] == [] for d in docs)
    assert 0.42 not in [d["gpu_utilization"] for d in docs]
    assert err == "edgeagent: warning: 1 line(s) over 16384 bytes skipped\n"


def test_a_300_mb_line_costs_no_more_memory_than_a_short_one(tmp_path):
    # A sparse file: 300 MB of NUL bytes without a newline (no disk used), then a real line.
    # The command must stream through it: its peak RSS stays near a Python's own.
    line = tegrastats_fixture_lines()[-1]["line"]
    path = tmp_path / "huge.log"
    with open(str(path), "wb") as f:
        f.truncate(300 << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + line.encode() + b"\n")
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, and a child that
    # Python starts with vfork inherits the test runner's own peak (339 MiB in the suite).
    probe = ("import sys\n"
             "from edgeagent import cli\n"
             "try:\n    cli.main(['tegrastats', sys.argv[1]])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
             "sys.stderr.write('maxrss_kib=%s code=%s\\n' % (hwm[0], code))\n")
    result = subprocess.run([sys.executable, "-c", probe, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, timeout=120,
                            env=dict(os.environ, PYTHONPATH=REPO))
    err = result.stderr.decode()
    assert "1 line(s) over 16384 bytes skipped" in err and "code=0" in err, err
    assert [json.loads(x)["gpu_utilization"] for x in result.stdout.splitlines()] == [0.02]
    maxrss_mib = int(err.split("maxrss_kib=")[1].split()[0]) / 1024
    assert maxrss_mib < 80, "peak RSS %.0f MiB for a 300 MB line" % maxrss_mib


GOLDEN = os.path.join(REPO, "tests", "fixtures", "tegrastats")


def test_output_is_byte_for_byte_the_golden_output(capsys):
    # golden_output.txt is what the command printed before its fast path existed (issue 15),
    # for every real fixture line, the demo log and 188 seeded mutations of the real lines (bad
    # numbers, Unicode digits, out-of-range loads, sensors off, tokens missing, doubled, swapped).
    # Run twice: the second pass goes through the plans the first one learnt.
    with open(os.path.join(GOLDEN, "golden_output.txt"), encoding="utf-8") as f:
        golden = f.read()
    for _ in range(2):
        code, out, err = run(["tegrastats", os.path.join(GOLDEN, "golden_input.log")], capsys)
        assert code == 0 and err == ""
        assert out == golden
