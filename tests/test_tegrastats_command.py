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
