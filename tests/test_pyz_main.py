"""packaging/pyz_main.py: the pyz's own __main__.py starts the entry point straight from a warm
shiv cache and leaves everything else to shiv's _bootstrap, on a small pyz laid out as shiv lays
one out (shebang, _bootstrap/, environment.json, site-packages/)."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

BUILD_ID = "0123abcd"
SHEBANG = b"#!/usr/bin/env python3\n"
# What shiv's _bootstrap does is not under test: a stand-in that says it ran.
FAKE_BOOTSTRAP = "import sys\ndef bootstrap():\n    print('shiv bootstrap')\n    sys.exit(3)\n"
APP = """import json, os, sys
def main():
    print(json.dumps({"argv": sys.argv[1:], "path": sys.path, "file": __file__}))
    return 7
"""


def _load():
    spec = importlib.util.spec_from_file_location(
        "pyz_main", os.path.join(REPO, "packaging", "pyz_main.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pyz_main = _load()


def make_pyz(path, **environment):
    env = {"build_id": BUILD_ID, "entry_point": "fakeapp.cli:main", "root": None,
           "no_modify": False, "script": None, "preamble": None}
    env.update(environment)
    with open(path, "wb") as f:
        f.write(SHEBANG)
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(zipfile.ZipInfo("__main__.py", (1980, 1, 1, 0, 0, 0)),
                       "import _bootstrap\n_bootstrap.bootstrap()\n")
            z.writestr(zipfile.ZipInfo("_bootstrap/__init__.py", (1980, 1, 1, 0, 0, 0)),
                       FAKE_BOOTSTRAP)
            z.writestr("environment.json", json.dumps(env))
            info = zipfile.ZipInfo("site-packages/fakeapp/cli.py", (2020, 2, 2, 2, 2, 2))
            info.external_attr = 0o100640 << 16
            z.writestr(info, APP, compress_type=zipfile.ZIP_STORED)
    os.chmod(path, 0o755)
    return str(path)


def unpack(root, name="app.pyz"):
    site = os.path.join(str(root), "%s_%s" % (name, BUILD_ID), "site-packages")
    os.makedirs(os.path.join(site, "fakeapp"))
    with open(os.path.join(site, "fakeapp", "cli.py"), "w") as f:
        f.write(APP)
    return site


def run(pyz, **env):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SHIV_") and k != "PYTHONPATH"}
    clean.update(env)
    return subprocess.run([sys.executable, pyz, "tegrastats", "x"], env=clean,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


@pytest.fixture
def pyz(tmp_path):
    path = make_pyz(tmp_path / "app.pyz")
    pyz_main.rewrite(path)
    return path


def test_a_warm_cache_runs_the_entry_point_without_bootstrap(pyz, tmp_path):
    site = unpack(tmp_path / "cache")
    result = run(pyz, SHIV_ROOT=str(tmp_path / "cache"))
    assert result.returncode == 7, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"] == ["tegrastats", "x"]
    assert seen["file"] == os.path.join(site, "fakeapp", "cli.py")
    # before the interpreter's own site-packages, as _bootstrap orders them
    path = seen["path"]
    theirs = [i for i, p in enumerate(path)
              if os.path.basename(p) in ("site-packages", "dist-packages") and p != site]
    assert site in path and all(path.index(site) < i for i in theirs)


def test_a_cold_cache_goes_to_shiv(pyz, tmp_path):
    result = run(pyz, SHIV_ROOT=str(tmp_path / "empty"))
    assert (result.returncode, result.stdout) == (3, "shiv bootstrap\n"), result.stderr


@pytest.mark.parametrize("name", ["SHIV_FORCE_EXTRACT", "SHIV_INTERPRETER", "SHIV_ENTRY_POINT"])
def test_a_shiv_override_goes_to_shiv(pyz, tmp_path, name):
    unpack(tmp_path / "cache")
    result = run(pyz, SHIV_ROOT=str(tmp_path / "cache"), **{name: "1"})
    assert (result.returncode, result.stdout) == (3, "shiv bootstrap\n"), result.stderr


def test_the_cache_is_named_after_the_real_file_and_the_build_root(tmp_path):
    # a symlink to the pyz uses the target's name, as _bootstrap's Path.resolve() does; a root
    # given at build time ("$VAR" or a path) is used when SHIV_ROOT is not set
    real = make_pyz(tmp_path / "app.pyz", root="$APP_CACHE")
    pyz_main.rewrite(real)
    link = tmp_path / "edgeagent"
    link.symlink_to(real)
    unpack(tmp_path / "cache")
    result = run(str(link), APP_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 7, result.stderr


def test_the_rewrite_keeps_every_other_member_and_the_shebang(tmp_path):
    path = make_pyz(tmp_path / "app.pyz")
    with zipfile.ZipFile(path) as z:
        before = {i.filename: (z.read(i), i.date_time, i.external_attr, i.compress_type)
                  for i in z.infolist()}
    pyz_main.rewrite(path)
    with open(path, "rb") as f:
        assert f.readline() == SHEBANG
    assert os.stat(path).st_mode & 0o777 == 0o755
    with zipfile.ZipFile(path) as z:
        after = {i.filename: (z.read(i), i.date_time, i.external_attr, i.compress_type)
                 for i in z.infolist()}
    assert list(after) == list(before)
    assert {k: v for k, v in after.items() if k != "__main__.py"} == \
        {k: v for k, v in before.items() if k != "__main__.py"}
    assert BUILD_ID.encode() in after["__main__.py"][0]
    # twice the same input, the same bytes: the build stays reproducible
    again = make_pyz(tmp_path / "again.pyz")
    pyz_main.rewrite(again)
    with open(path, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("environment", [{"no_modify": True}, {"entry_point": "fakeapp"},
                                         {"script": "tool"}, {"preamble": "pre.py"}])
def test_a_build_the_fast_start_cannot_honour_is_refused(tmp_path, environment):
    path = make_pyz(tmp_path / "app.pyz", **environment)
    with pytest.raises(SystemExit):
        pyz_main.rewrite(path)


@pytest.mark.parametrize("part, stem", [
    ("/usr/lib/python3/dist-packages", "dist-packages"),
    ("/x/site-packages/", "site-packages"), ("/x/site-packages.zip", "site-packages"),
    ("/x/.hidden", ".hidden"), ("", ""), ("/x/a.b.c", "a.b")])
def test_stem_is_pathlibs(part, stem):
    import pathlib

    namespace = {}
    exec(compile(pyz_main.TEMPLATE.split("\nsite_packages = ")[0] % {
        "build_id": "x", "root": None, "entry": ("m", "f")}, "main", "exec"), namespace)
    assert namespace["stem"](part) == stem == pathlib.Path(part).stem
