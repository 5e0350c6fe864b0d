"""The one-file build: the pyz ./build.sh test made, a cross build for a Jetson, build.sh's
argument handling, and Python 3.8 syntax for the whole package."""

import hashlib
import importlib
import json
import os
import pkgutil
import shutil
import struct
import subprocess
import sys
import zipfile

import pytest

import edgeagent
from tests.conftest import REPO
from tests.peers.hosts import make_host

BUILD_SH = os.path.join(REPO, "build.sh")
ELF_MACHINES = {62: "x86-64", 183: "aarch64", 40: "arm"}


def python_38():
    """An interpreter of Python 3.8, found the way build.sh finds one; None when absent."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            prefix = subprocess.run([pyenv, "prefix", "3.8"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, universal_newlines=True,
                                    timeout=30).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            prefix = []
        for p in prefix:
            candidate = os.path.join(p, "bin", "python3.8")
            if os.access(candidate, os.X_OK):
                return candidate
    return shutil.which("python3.8")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEAGENT_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def elf_machines(pyz):
    """Machine of every ELF file (C extension) inside a zipapp, by member name."""
    out = {}
    with zipfile.ZipFile(pyz) as z:
        for name in z.namelist():
            head = z.open(name).read(20)
            if head[:4] == b"\x7fELF":
                out[name] = ELF_MACHINES.get(struct.unpack_from("<H", head, 18)[0], "other")
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- the pyz ./build.sh test built ---------------------------------------------------------------

@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    path = os.environ.get("EDGEAGENT_PYZ")
    if not path:
        pytest.skip("EDGEAGENT_PYZ is not set (./build.sh test builds the pyz and sets it)")
    assert os.path.isfile(path), path
    return path


@pytest.fixture(scope="module")
def shiv_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("shiv"))


def run_pyz(pyz, shiv_root, *args, python=None):
    # Run as an operator would: the file itself, through its shebang (python3 on PATH).
    cmd = ([python, pyz] if python else [pyz]) + list(args)
    return subprocess.run(cmd, env=clean_env(SHIV_ROOT=shiv_root), cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


@pytest.mark.artifact
def test_pyz_shebang_and_layout(pyz):
    with open(pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"
    assert os.access(pyz, os.X_OK)
    with zipfile.ZipFile(pyz) as z:
        names = set(z.namelist())
    assert "site-packages/edgeagent/cli.py" in names
    assert "site-packages/edgeagent/demo/host/sys/firmware/fdt" in names
    assert "site-packages/edgeagent/demo/host/etc/nv_tegra_release" in names
    assert not any(n.startswith("site-packages/edgeagent/") and "__pycache__" in n
                   for n in names)
    assert not any(n.startswith("site-packages/build/") for n in names)


@pytest.mark.artifact
def test_pyz_version(pyz, shiv_root):
    result = run_pyz(pyz, shiv_root, "version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "edgeagent %s" % edgeagent.__version__


@pytest.mark.artifact
def test_pyz_discover_json(pyz, shiv_root, tmp_path):
    root = make_host(str(tmp_path), "tegra194-p2972-0000.dtb", form="sys", release="R35.4.1")
    result = run_pyz(pyz, shiv_root, "discover", "--json", "--root", root)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["soc"], doc["jetpack"], doc["gpu"]["compute_capability"]) == (
        "tegra194", "5.1.2", "7.2")
    # the labels module ships in the pyz too
    assert doc["labels"]["beta.devicetree.org/nvidia-gv11b"] == "1"
    assert doc["labels"]["nvidia.com/gpu.compute.major"] == "7"


@pytest.mark.artifact
def test_pyz_operator_error_is_one_line(pyz, shiv_root, tmp_path):
    result = run_pyz(pyz, shiv_root, "--root", str(tmp_path / "missing"), "discover")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --- build.sh's arguments (fail before any slow step) ---------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--platform", "linux-sparc"], ["unknown platform linux-sparc"]),
    (["--python", "3.99"], ["no Python 3.99 found"]),
    (["--frobnicate"], ["unknown argument --frobnicate"]),
])
def test_build_sh_refuses_bad_arguments(args, words):
    result = subprocess.run([BUILD_SH] + args, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 2, result.stderr
    for word in words:
        assert word in result.stderr


def test_build_sh_help():
    result = subprocess.run([BUILD_SH, "--help"], stdout=subprocess.PIPE,
                            universal_newlines=True, timeout=60)
    assert result.returncode == 0
    assert "--platform linux-aarch64 --python 3.8" in result.stdout


# --- a cross build for a Jetson --------------------------------------------------------------

@pytest.mark.artifact
@pytest.mark.timeout(900)
def test_cross_build_for_aarch64_python38(tmp_path):
    py38 = python_38()
    if py38 is None:
        pytest.skip("no Python 3.8 (pyenv install 3.8) to resolve a 3.8 target with")
    outputs = [str(tmp_path / "a.pyz"), str(tmp_path / "b.pyz")]
    for out in outputs:
        result = subprocess.run(
            [BUILD_SH, "--platform", "linux-aarch64", "--python", "3.8", "-o", out],
            env=clean_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=800)
        assert result.returncode == 0, result.stderr[-3000:]
    a, b = outputs
    with open(a, "rb") as f:
        # a build for a named Python starts with that Python (JetPack 4's python3 is 3.6)
        assert f.readline() == b"#!/usr/bin/env python3.8\n"
    assert sha256(a) == sha256(b), "two builds of the same tree differ: not reproducible"

    machines = elf_machines(a)
    assert machines, "no C extensions at all: aiohttp's C parser is missing"
    assert set(machines.values()) == {"aarch64"}, machines
    names = sorted(machines)
    assert all("cpython-38-aarch64-linux-gnu" in n for n in names), names
    assert any(n.startswith("site-packages/aiohttp/_http_parser.") for n in names), names
    for package in ("multidict", "yarl", "frozenlist"):
        assert any(n.startswith("site-packages/%s/" % package) for n in names), package
    with zipfile.ZipFile(a) as z:
        listing = z.namelist()
    assert any(n.startswith("site-packages/tomli/") for n in listing)   # 3.8's markers

    # Its pure-Python part runs here under 3.8: the commands that import no C extension.
    shiv_root = str(tmp_path / "shiv")
    result = run_pyz(a, shiv_root, "version", python=py38)
    assert result.returncode == 0, result.stderr
    assert "python 3.8." in result.stdout


# --- Python 3.8 syntax and imports --------------------------------------------------------------

def test_whole_package_compiles_with_python38(tmp_path):
    py38 = python_38()
    if py38 is None:
        pytest.skip("no Python 3.8")
    copy = str(tmp_path / "edgeagent")
    shutil.copytree(os.path.join(REPO, "edgeagent"), copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([py38, "-m", "compileall", "-q", copy], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stdout


def test_every_module_imports_on_this_python():
    # Catches 3.9+ library use at import time when this suite runs on 3.8.
    failures = []
    for info in pkgutil.walk_packages(edgeagent.__path__, "edgeagent."):
        try:
            importlib.import_module(info.name)
        except Exception as e:  # noqa: BLE001 - report every module, not just the first
            failures.append("%s: %s: %s" % (info.name, type(e).__name__, e))
    assert failures == []


def test_importing_the_cli_is_light():
    # Start-up time matters: building the parser imports every command module, which must
    # keep its heavy imports inside its main function.
    code = ("import sys, edgeagent.cli; edgeagent.cli.build_parser(); "
            "heavy = [m for m in ('aiohttp', 'grpclib', 'prometheus_client', 'betterproto', "
            "'asyncio') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(PYTHONPATH=REPO),
                            stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.stdout.strip() == "[]"
