"""`python -m edgeagent` as a subprocess: exit codes, one-line errors, the discover JSON contract."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, dtb_path
from tests.peers.hosts import make_host, write

XAVIER = "tegra194-p2972-0000.dtb"
ORIN = "tegra234-p3768-0000+p3767-0005.dtb"
RPI4 = "bcm2711-rpi-4-b.dtb"
XAVIER_DEV = ["/dev/nvhost-gpu", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-as-gpu", "/dev/nvmap",
              "/dev/nvhost-nvdla0", "/dev/nvhost-nvdla1"]


def run(*args, env=None, cwd=None, timeout=60):
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("EDGEAGENT_") and k != "NOTIFY_SOCKET"}
    full_env["PYTHONPATH"] = REPO
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgeagent"] + list(args), env=full_env,
                          cwd=cwd or REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgeagent: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def assert_usage_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: ")
    for word in words:
        assert word in result.stderr


def discover_json(*args, **kwargs):
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def check_contract(doc):
    """The keys `discover --json` promises (issue 8), with their types."""
    assert isinstance(doc["board"]["model"], (str, type(None)))
    assert isinstance(doc["board"]["compatible"], list)
    assert all(isinstance(c, str) for c in doc["board"]["compatible"])
    for key in ("soc", "l4t", "jetpack"):
        assert isinstance(doc[key], (str, type(None))), key
    assert isinstance(doc["memory_bytes"], (int, type(None)))
    gpu = doc["gpu"]
    if gpu is not None:
        assert isinstance(gpu["path"], str) and isinstance(gpu["status"], str)
        assert isinstance(gpu["compatible"], list)
        assert isinstance(gpu["family"], (str, type(None)))
        assert isinstance(gpu["compute_capability"], (str, type(None)))
    assert isinstance(doc["accelerators"], list)
    for a in doc["accelerators"]:
        assert isinstance(a["kind"], str) and isinstance(a["path"], str)
    assert isinstance(doc["labels"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["labels"].items())


# --- version ------------------------------------------------------------------------------------

def test_version():
    from edgeagent import __version__
    result = run("version")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "edgeagent %s" % __version__
    assert lines[1].startswith("python %d.%d." % sys.version_info[:2])
    assert lines[2].startswith("platform linux ")


def test_help_exits_0():
    result = run("--help")
    assert result.returncode == 0
    for name in ("version", "discover", "run", "--root", "--config", "--log-level"):
        assert name in result.stdout


# --- discover -----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["blob", "proc", "sys"])
def test_discover_json_on_a_fake_xavier(tmp_path, form):
    root = make_host(str(tmp_path), XAVIER, form=form, release="R35.4.1", dev=XAVIER_DEV)
    doc = discover_json("--root", root, "discover", "--json")
    check_contract(doc)
    assert doc["board"] == {"model": "NVIDIA Jetson AGX Xavier Developer Kit",
                            "compatible": ["nvidia,p2972-0000", "nvidia,tegra194"]}
    assert (doc["soc"], doc["l4t"], doc["jetpack"]) == ("tegra194", "35.4.1", "5.1.2")
    assert doc["memory_bytes"] == 7765304 * 1024
    gpu = doc["gpu"]
    assert (gpu["path"], gpu["compatible"], gpu["status"], gpu["family"],
            gpu["compute_capability"]) == ("/bus@0/gpu@17000000", ["nvidia,gv11b"], "okay",
                                           "volta", "7.2")
    kinds = sorted(a["kind"] for a in doc["accelerators"])
    assert kinds == ["nvdec", "nvdec", "nvdla", "nvdla", "nvenc", "nvenc", "nvjpg", "vic"]
    assert {"path": "/dev/nvhost-nvdla0", "kind": "nvdla"}.items() <= doc["accelerators"][
        [a["kind"] for a in doc["accelerators"]].index("nvdla")].items()
    labels = doc["labels"]
    assert labels["beta.devicetree.org/nvidia-tegra194"] == "1"
    assert labels["beta.devicetree.org/nvidia-gv11b"] == "1"
    assert labels["nvidia.com/gpu.family"] == "volta"
    assert labels["edgeagent.io/jetpack"] == "5.1.2"


def test_discover_text(tmp_path):
    root = make_host(str(tmp_path), ORIN, form="proc", release="R36.3.0",
                     dev=["/dev/nvgpu/igpu0/ctrl", "/dev/nvhost-gpu", "/dev/nvmap"])
    result = run("discover", "--root", root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Board:" in out and "NVIDIA Jetson Orin Nano Developer Kit" in out
    assert "tegra234 (NVIDIA Tegra)" in out
    assert "36.3.0 (JetPack 6.0)" in out
    assert "ampere, compute capability 8.7" in out
    assert "Devicetree:" in out and "/proc/device-tree" in out


def test_discover_fdt_file():
    doc = discover_json("discover", "--fdt", dtb_path(RPI4), "--json", "--root", REPO)
    check_contract(doc)
    assert doc["soc"] == "bcm2711"
    assert doc["gpu"]["path"] == "/scb/gpu@7ec00000"
    assert doc["gpu"]["family"] is None and doc["gpu"]["compute_capability"] is None
    assert doc["l4t"] is None and doc["memory_bytes"] is None   # REPO has no /proc/meminfo


def test_fdt_overrides_the_host_tree(tmp_path):
    root = make_host(str(tmp_path), XAVIER, form="proc")
    doc = discover_json("--root", root, "discover", "--json", "--fdt", dtb_path(RPI4))
    assert doc["soc"] == "bcm2711"


def test_x86_like_root_is_not_an_error(tmp_path):
    root = make_host(str(tmp_path))
    doc = discover_json("discover", "--json", "--root", root)
    check_contract(doc)
    assert doc["board"] == {"model": None, "compatible": []}
    assert (doc["soc"], doc["gpu"], doc["accelerators"]) == (None, None, [])
    result = run("discover", "--root", root)
    assert result.returncode == 0 and "not a devicetree host" in result.stdout


# --- global options on either side of the command ---------------------------------------------

@pytest.mark.parametrize("order", ["before", "after", "split"])
def test_global_options_before_and_after_the_command(tmp_path, order):
    root = make_host(str(tmp_path), ORIN, release="R36.3.0")
    config = write(str(tmp_path), "/cfg.toml", 'log_level = "debug"\n')
    g = ["--root", root, "--config", config, "--log-level", "warning"]
    args = {"before": g + ["discover", "--json"],
            "after": ["discover", "--json"] + g,
            "split": g[:2] + ["discover"] + g[2:] + ["--json"]}[order]
    doc = discover_json(*args)
    assert doc["soc"] == "tegra234" and doc["l4t"] == "36.3.0"


def test_option_after_the_command_wins(tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    orin = make_host(str(tmp_path / "orin"), ORIN)
    assert discover_json("--root", empty, "discover", "--json", "--root", orin)["soc"] == \
        "tegra234"
    # and the command's SUPPRESS default does not undo a value given before it
    assert discover_json("--root", orin, "discover", "--json")["soc"] == "tegra234"


def test_root_from_the_environment(tmp_path):
    root = make_host(str(tmp_path), ORIN)
    assert discover_json("discover", "--json", env={"EDGEAGENT_ROOT": root})["soc"] == "tegra234"


def test_default_config_under_the_root(tmp_path):
    root = make_host(str(tmp_path), ORIN)
    write(root, "/etc/edgeagent/config.toml", "[sharing]\nreplicas = 0\n")
    result = run("--root", root, "discover")
    assert_one_line_error(result, "config file %s/etc/edgeagent/config.toml" % root,
                          "sharing.replicas", "must be between 1 and 1024")


# --- operator errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    ([], ["required: COMMAND"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (["version", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    (["--frobnicate", "version"], ["unrecognized arguments: --frobnicate"]),
    (["discover", "--fdt"], ["expected one argument"]),
    (["run", "--disable"], ["expected one argument"]),
    (["discover", "--json=yes"], ["ignored explicit argument"]),
])
def test_usage_errors(args, words):
    assert_usage_error(run(*args), *words)


def test_bad_config_file(tmp_path):
    config = write(str(tmp_path), "/c.toml", "[metrics]\naddress = 'nowhere'\n")
    assert_one_line_error(run("--config", config, "version"), "config file %s" % config,
                          "metrics.address", "must be HOST:PORT")
    bad_toml = write(str(tmp_path), "/bad.toml", "[metrics\n")
    assert_one_line_error(run("version", "--config", bad_toml), "invalid TOML")
    assert_one_line_error(run("version", "--config", str(tmp_path / "none.toml")), "not found")
    unknown = write(str(tmp_path), "/u.toml", "colour = 'blue'\n")
    assert_one_line_error(run("version", "--config", unknown), "unknown key 'colour'")


def test_bad_environment_and_flag_values():
    assert_one_line_error(run("version", env={"EDGEAGENT_SHARING_REPLICAS": "many"}),
                          "environment EDGEAGENT_SHARING_REPLICAS", "sharing.replicas")
    assert_one_line_error(run("--log-level", "loud", "version"), "command line", "log_level")
    assert_one_line_error(run("run", "--disable", "gpu"), "unknown component 'gpu'")
    assert_one_line_error(run("run", "--metrics-address", "x"), "metrics.address")


def test_missing_root(tmp_path):
    missing = str(tmp_path / "missing")
    assert_one_line_error(run("--root", missing, "discover"), "--root %s: no such directory"
                          % missing)
    assert_one_line_error(run("discover", env={"EDGEAGENT_ROOT": missing}),
                          "EDGEAGENT_ROOT", "no such directory")


def test_truncated_dtb_with_fdt(tmp_path):
    with open(dtb_path(XAVIER), "rb") as f:
        blob = f.read()
    cut = write(str(tmp_path), "/cut.dtb", blob[:5000])
    assert_one_line_error(run("discover", "--fdt", cut), "devicetree: %s: truncated" % cut)
    assert_one_line_error(run("discover", "--fdt", str(tmp_path / "none.dtb")), "no such file")
    junk = write(str(tmp_path), "/junk.dtb", "not a blob at all, clearly" * 3)
    assert_one_line_error(run("discover", "--json", "--fdt", junk), "not a flattened devicetree")


def test_truncated_host_blob(tmp_path):
    with open(dtb_path(XAVIER), "rb") as f:
        blob = f.read()
    root = make_host(str(tmp_path))
    write(root, "/sys/firmware/fdt", blob[:len(blob) // 2])
    assert_one_line_error(run("--root", root, "discover", "--json"),
                          "devicetree: /sys/firmware/fdt: truncated")
    assert_one_line_error(run("--root", root, "run"), "devicetree: /sys/firmware/fdt")


def test_broken_pipe_is_not_a_traceback(tmp_path):
    root = make_host(str(tmp_path), XAVIER)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "edgeagent", "--root", root, "discover",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()                 # the reader went away (`| head -0`)
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert "Traceback" not in err


# --- the catch-all: an internal error is one line too --------------------------------------------

CRASH = """
import sys
from edgeagent import version_command

def boom(inv):
    raise KeyError("no such thing")

version_command.main = boom
from edgeagent.cli import main
main(sys.argv[1:])
"""


def _crash(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT_")}
    env["PYTHONPATH"] = REPO
    return subprocess.run([sys.executable, "-c", CRASH] + list(args), env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def test_an_internal_error_is_one_line_exit_1():
    result = _crash("version")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "edgeagent: error: internal error: KeyError: 'no such thing' (a bug in edgeagent: rerun "
        "with --log-level debug for the traceback and report it)"]


def test_debug_level_shows_the_traceback():
    result = _crash("--log-level", "debug", "version")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'no such thing'" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("edgeagent: error: internal error: ")


def test_the_commands_are_the_documented_ones():
    from edgeagent.cli import build_parser

    sub = [a for a in build_parser()._actions if a.dest == "command"][0]
    assert list(sub.choices) == ["version", "discover", "run", "install", "uninstall", "doctor",
                                 "tegrastats", "labels"]


def test_a_command_loads_only_its_own_module():
    """`run` does not carry the other commands' code (bench/bench_footprint.py): only the
    command named is imported; --help and an unknown command still see every command."""
    import subprocess
    import sys
    import textwrap

    from edgeagent.cli import COMMANDS, chosen_command

    assert chosen_command(["--root", "/x", "--log-level", "debug", "run", "--demo"]) == "run"
    assert chosen_command(["--root=/x", "doctor"]) == "doctor"
    assert chosen_command(["--help"]) is None
    assert chosen_command(["bogus"]) is None
    code = textwrap.dedent("""
        import sys
        from edgeagent.cli import build_parser
        build_parser(["--log-level", "info", "run"]).parse_args(["--log-level", "info", "run"])
        print(" ".join(sorted(m for m in sys.modules if m.startswith("edgeagent.")
                              and m.endswith(("command", "_command")))))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout.split()
    assert out == ["edgeagent.agent_command"], out
    assert {c[2] for c in COMMANDS} - {"edgeagent.agent_command"}  # there were others to skip
