"""Hostile config and flags: every problem is one ConfigError line (exit 2), in bounded time and
memory; files must be regular files read under a size cap; numbers are ASCII digits only."""

import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.cli import build_parser, load_cli
from edgeagent.config import MAX_CONFIG_BYTES, SCHEMA, load_config
from edgeagent.errors import ConfigError, OperatorError
from tests.conftest import REPO
from tests.costbound import within_memory

# Per input: hypothesis' deadline bounds the time, tracemalloc's peak the memory.
DEADLINE_MS = 500
PEAK_BYTES = 8 * MAX_CONFIG_BYTES


def one_line_error(func, *args, **kwargs):
    with pytest.raises(OperatorError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 2000, message
    assert info.value.exit_code == 2
    return message


def bounded(func):
    """Run ``func()``; fail when it allocates more than PEAK_BYTES at its peak."""
    return within_memory(func, PEAK_BYTES)


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


# --- the inputs that once ended in a traceback ------------------------------------------------

def test_a_5000_digit_integer(tmp_path):
    message = one_line_error(load_config, write(tmp_path, "sharing.replicas = %s\n" % ("9" * 5000)),
                             env={})
    assert "c.toml" in message


def test_a_5000_digit_integer_in_the_environment():
    message = one_line_error(load_config, env={"EDGEAGENT_SHARING_REPLICAS": "9" * 5000})
    assert "must be an integer" in message and len(message) < 300


def test_1500_nested_keys(tmp_path):
    message = one_line_error(load_config, write(tmp_path, ".".join(["k"] * 1500) + " = 1\n"),
                             env={})
    # tomllib (3.11+) builds the tables iteratively; tomli 2.x (3.8-3.10) recurses
    assert "unknown key 'k.k'" in message or "nested too deeply" in message


def test_a_2000_deep_table(tmp_path):
    message = one_line_error(load_config, write(tmp_path, "[%s]\nx = 1\n" % ".".join(["a"] * 2000)),
                             env={})
    assert "unknown key 'a.a'" in message or "nested too deeply" in message


def test_2000_nested_arrays(tmp_path):
    message = one_line_error(load_config, write(tmp_path, "x = %s%s\n" % ("[" * 2000, "]" * 2000)),
                             env={})
    assert "nested too deeply" in message or "invalid TOML" in message


def test_dev_zero_is_not_read():
    assert "not a regular file" in one_line_error(load_config, "/dev/zero", env={})


def test_a_fifo_does_not_hang(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        message=one_line_error(load_config, fifo, env={})), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "load_config hangs on a FIFO"
    assert "not a regular file" in result["message"]


def test_a_file_over_the_cap(tmp_path):
    path = write(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "too big" in one_line_error(load_config, path, env={})


def test_a_directory(tmp_path):
    assert "is a directory" in one_line_error(load_config, str(tmp_path), env={})


def test_an_embedded_nul_in_the_path():
    assert "not a valid path" in one_line_error(load_config, "/etc/x\0y", env={})


@pytest.mark.parametrize("port", ["²", "١٢", "８０", "80\u0660", "+80", " 80", "0x50", "1_0",
                                  "99999", "0", "080808"])
def test_ports_are_ascii_digits(port):
    message = one_line_error(load_config, env={}, flags={"metrics.address": "127.0.0.1:" + port})
    assert "HOST:PORT" in message


@pytest.mark.parametrize("key,value", [
    ("sharing.replicas", "١٢"), ("sharing.replicas", "１２"), ("sharing.replicas", "1_2"),
    ("sharing.replicas", "²"), ("tegrastats.interval_ms", "1e3"),
    ("kube.timeout_seconds", "٣"), ("kube.timeout_seconds", "nan"), ("kube.timeout_seconds", "inf"),
    ("kube.timeout_seconds", "1_0"), ("kube.timeout_seconds", "1" * 400),
])
def test_numbers_are_ascii_digits(key, value):
    one_line_error(load_config, env={}, flags={key: value})


def test_plain_numbers_still_work():
    config = load_config(env={}, flags={"sharing.replicas": " 12 ", "kube.timeout_seconds": "2.5",
                                        "metrics.address": "[::1]:9100"})
    assert config.options.device_plugin.sharing.replicas == 12
    assert config.options.kube.timeout_seconds == 2.5
    assert config.options.metrics.address == ("::1", 9100)


def test_the_cli_says_one_line_for_each(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    deep = write(tmp_path, "[%s]\nx = 1\n" % ".".join(["a"] * 2000), "deep.toml")
    big = write(tmp_path, "sharing.replicas = %s\n" % ("9" * 5000), "big.toml")
    for argv in (["--config", "/dev/zero", "version"], ["--config", fifo, "version"],
                 ["--config", deep, "version"], ["--config", big, "version"],
                 ["run", "--metrics-address", "127.0.0.1:²"]):
        proc = subprocess.run([sys.executable, "-m", "edgeagent"] + argv, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=REPO))
        assert proc.returncode == 2, (argv, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeagent: error: "), (argv, proc.stderr)


@pytest.mark.parametrize("make", ["fifo", "devzero", "dangling"])
def test_a_default_config_that_is_not_a_regular_file_is_reported(tmp_path, make):
    etc = tmp_path / "etc/edgeagent"
    etc.mkdir(parents=True)
    target = str(etc / "config.toml")
    if make == "fifo":
        os.mkfifo(target)
    else:
        os.symlink("/dev/zero" if make == "devzero" else str(tmp_path / "gone"), target)
    args = build_parser().parse_args(["--root", str(tmp_path), "version"])
    message = one_line_error(load_cli, args)
    if make == "fifo":
        assert target in message and "not a regular file" in message
    else:
        # Links resolve inside --root (hostpaths): the host's /dev/zero is never read; the
        # message names the file the link leads to under the root, which is not there.
        assert message.startswith("config file %s/" % tmp_path) and "not found" in message


# --- fuzz ------------------------------------------------------------------------------------

KEYS = [o.key for o in SCHEMA]
# TOML-ish text: fragments of real syntax, keys of the schema and noise, so that the parser
# gets far into the document as well as failing early.
FRAGMENTS = st.sampled_from(["[", "]", "[[", "]]", "=", ".", '"', "'", "\n", " ", "{", "}", ",",
                             "#", "true", "1", "1e999", "-0", "٣", "²", "\x00", "\\u0000",
                             "9" * 5000] + KEYS + ["device_plugin", "labels", "sharing"])
TOML_TEXT = st.one_of(st.lists(FRAGMENTS, max_size=300).map("".join),
                      st.text(max_size=2000), st.binary(max_size=2000).map(
                          lambda b: b.decode("utf-8", "replace")))


@settings(max_examples=300, deadline=DEADLINE_MS,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=TOML_TEXT)
def test_fuzz_config_files(tmp_path, text):
    path = write(tmp_path, text.encode("utf-8", "surrogatepass"))

    def load():
        try:
            config = load_config(path, env={})
        except ConfigError as e:
            assert "\n" not in str(e) and len(str(e)) < 2000
            return None
        return config.options       # valid: the typed options were built

    bounded(load)


@settings(max_examples=300, deadline=DEADLINE_MS)
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(
    st.text(max_size=200), st.sampled_from(["9" * 5000, "١٢", "1e999", "nan", "-1", "0.1"]))),
    max_size=5))
def test_fuzz_environment_values(pairs):
    env = {}
    for key, value in pairs:
        option = [o for o in SCHEMA if o.key == key][0]
        if option.env:
            env[option.env_name] = value.replace("\0", "")

    def load():
        try:
            load_config(env=env)
        except ConfigError as e:
            assert "\n" not in str(e)

    bounded(load)


FLAG_WORDS = st.sampled_from(
    ["run", "version", "discover", "doctor", "labels", "tegrastats", "install", "uninstall",
     "--root", "--config", "--log-level", "--log-format", "--metrics-address", "--disable",
     "--dry-run", "--tegrastats", "--node-name", "--kubeconfig", "--json", "--demo", "--fdt",
     "debug", "json", "labels,metrics", "127.0.0.1:²", "0.0.0.0:1", ":", "/dev/zero", "/", "-",
     "--", "=", "x" * 300])


@settings(max_examples=300, deadline=DEADLINE_MS)
@given(argv=st.lists(st.one_of(FLAG_WORDS, st.text(max_size=30)), max_size=8))
def test_fuzz_flags(argv):
    argv = [a.replace("\0", "") for a in argv]

    def parse():
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:   # argparse: usage error (2) or --help (0), one line
            assert e.code in (0, 2)
            return
        try:
            load_cli(args)
        except OperatorError as e:
            assert "\n" not in str(e)

    bounded(parse)


def test_the_fuzzers_bounds_can_fail():
    # A control: the memory bound trips on a real allocation, so the fuzz tests above can fail.
    with pytest.raises(AssertionError):
        bounded(lambda: bytearray(PEAK_BYTES + 1))
    started = time.monotonic()
    bounded(lambda: None)
    assert time.monotonic() - started < 1
