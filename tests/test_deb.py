"""The Debian package (`./build.sh deb`): built once per session from a real pyz build, checked
by lintian, installed, upgraded, removed and purged by the real dpkg in throwaway roots.

dpkg runs with ``--root`` and ``--force-script-chrootless`` (the root holds no shell or Perl to
chroot into; the maintainer scripts then get DPKG_ROOT, as in a bootstrap of an image) and
``--force-depends`` (no python3 in the root). Nothing else is forced. That the service is
started and restarted when systemd runs is checked by running the package's own maintainer
scripts in a private mount namespace where /run/systemd/system exists, with recorders in place
of deb-systemd-helper, deb-systemd-invoke and systemctl.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from edgeagent.config import load_config
from edgeagent.doctor import checks_host
from edgeagent.doctor.model import PASS
from edgeagent.doctor.runner import build_context
from edgeagent.hostpaths import HostRoot
from edgeagent.install.layout import (PACKAGE_COMMAND_PATH, PACKAGE_PYZ_PATH, PACKAGE_UNIT_PATH,
                                      example_config, package_unit)
from edgeagent.install.pyz import shiv_build_id
from tests.tools import require_tool

# The pyz and the package run under the system's python3, whatever runs the tests.
pytestmark = pytest.mark.artifact

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_SH = os.path.join(REPO, "build.sh")
CONFIG = "/etc/edgeagent/config.toml"
WANTS = "/etc/systemd/system/multi-user.target.wants/edgeagent.service"
UNIT = "edgeagent.service"

# Warnings lintian may give, each with the reason it is accepted. Anything else fails the test.
ACCEPTED_LINTIAN = {
    # The package is not uploaded to Debian: there is no ITP bug to close.
    "initial-upload-closes-no-bugs",
    # `edgeagent --help` and the README are its documentation; no man page is written.
    "no-manual-page",
    # A --python 3.8 build runs under python3.8 (#!/usr/bin/env python3.8, Depends: python3.8):
    # its C extensions are for 3.8 and JetPack 4's python3 is 3.6.
    "unusual-interpreter",
}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EDGEAGENT_", "DPKG_")) and k not in ("PYTHONPATH", "NODE_NAME")}
    env.update(extra)
    return env


def run(argv, env=None, check=True, timeout=120):
    proc = subprocess.run(argv, env=env or clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s: exit %d\n%s\n%s" % (" ".join(argv), proc.returncode,
                                                       proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


# --- the builds ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def debs(tmp_path_factory):
    """(first, second, pyz): the package ./build.sh deb made (it builds the pyz), and a second
    one with a higher revision packed from the same pyz, for the upgrade."""
    require_tool("dpkg-deb")
    folder = tmp_path_factory.mktemp("debs")
    first = str(folder / "first.deb")
    run([BUILD_SH, "deb", "-o", first], timeout=900)
    unpacked = str(folder / "unpacked")
    run(["dpkg-deb", "-x", first, unpacked])
    pyz = os.path.join(unpacked, PACKAGE_PYZ_PATH.lstrip("/"))
    second = str(folder / "second.deb")
    run([BUILD_SH, "deb", "--pyz", pyz, "--revision", "2", "-o", second])
    return first, second, pyz


@pytest.fixture()
def deb(debs):
    return debs[0]


def field(deb, name):
    return run(["dpkg-deb", "-f", deb, name]).stdout.strip()


def python3_minor():
    out = run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout
    return out.strip()


def test_control_fields(deb):
    from edgeagent import __version__

    assert field(deb, "Package") == "edgeagent"
    assert field(deb, "Version") == __version__ + "-1"
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert field(deb, "Architecture") == arch
    # a default build runs under python3, which must be the minor version its C extensions are for
    minor = python3_minor()
    nxt = "%s.%d" % (minor.split(".")[0], int(minor.split(".")[1]) + 1)
    assert field(deb, "Depends") == "python3 (>= %s~), python3 (<< %s)" % (minor, nxt)
    size = int(field(deb, "Installed-Size"))
    assert 1000 < size < 50000, size


def test_contents_owners_and_modes(deb):
    listing = run(["dpkg-deb", "-c", deb]).stdout.splitlines()
    files = {}
    for line in listing:
        mode, owner, _, _, _, path = line.split(None, 5)
        assert owner == "root/root", line
        files[path[1:].rstrip("/") or "/"] = mode
    regular = {p: m for p, m in files.items() if not m.startswith("d")}
    assert regular == {
        CONFIG: "-rw-r--r--",
        PACKAGE_UNIT_PATH: "-rw-r--r--",
        PACKAGE_COMMAND_PATH: "-rwxr-xr-x",
        PACKAGE_PYZ_PATH: "-rwxr-xr-x",
        "/usr/share/doc/edgeagent/changelog.Debian.gz": "-rw-r--r--",
        "/usr/share/doc/edgeagent/copyright": "-rw-r--r--",
    }
    assert all(m == "drwxr-xr-x" for p, m in files.items() if m.startswith("d"))
    assert not any(p.startswith("/usr/local") for p in files)


def test_control_archive(deb, tmp_path):
    control = str(tmp_path / "DEBIAN")
    data = str(tmp_path / "data")
    run(["dpkg-deb", "-e", deb, control])
    run(["dpkg-deb", "-x", deb, data])
    with open(os.path.join(control, "conffiles")) as f:
        assert f.read() == CONFIG + "\n"
    with open(os.path.join(control, "md5sums")) as f:
        sums = dict(reversed(line.split("  ", 1)) for line in f.read().splitlines())
    sums = {k.strip(): v for k, v in sums.items()}
    # every file but the conffile (dpkg keeps conffile sums in its status), each one right
    assert sorted(sums) == sorted(p.lstrip("/") for p in (
        PACKAGE_UNIT_PATH, PACKAGE_COMMAND_PATH, PACKAGE_PYZ_PATH,
        "/usr/share/doc/edgeagent/changelog.Debian.gz", "/usr/share/doc/edgeagent/copyright"))
    for path, digest in sums.items():
        with open(os.path.join(data, path), "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == digest, path
    for name in ("postinst", "prerm", "postrm"):
        path = os.path.join(control, name)
        assert os.stat(path).st_mode & 0o777 == 0o755
        with open(path) as f:
            text = f.read()
        assert not re.search(r"@[A-Z_]+@", text), name     # every placeholder filled in
        run(["sh", "-n", path])
    # the unit is the one template, with the package's paths; the config is the documented one
    with open(os.path.join(data, PACKAGE_UNIT_PATH.lstrip("/"))) as f:
        unit = f.read()
    assert unit == package_unit("/usr/bin/python3")
    assert "ExecStart=/usr/bin/python3 /usr/lib/edgeagent/edgeagent.pyz run\n" in unit
    with open(os.path.join(data, CONFIG.lstrip("/"))) as f:
        assert f.read() == example_config()


def lintian_warnings(deb):
    """The warning tags lintian gives ``deb``; fails on any error."""
    lintian = require_tool("lintian")
    proc = run([lintian, "--pedantic", "--no-tag-display-limit", deb], check=False,
               timeout=300)
    tags = [line for line in proc.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, proc.stdout
    return {t.split()[2] for t in tags if t.startswith("W: ")}


def test_lintian_finds_no_errors(deb):
    assert lintian_warnings(deb) <= ACCEPTED_LINTIAN


@pytest.mark.timeout(900)
def test_a_package_for_jetpack_4_and_5(tmp_path):
    """--platform linux-aarch64 --python 3.8: arm64, and python3.8 everywhere it runs."""
    from tests.test_build import python_38

    if python_38() is None:
        pytest.skip("no Python 3.8 (pyenv install 3.8) to resolve a 3.8 target with")
    out = str(tmp_path / "jetson.deb")
    run([BUILD_SH, "deb", "--platform", "linux-aarch64", "--python", "3.8", "-o", out],
        timeout=800)
    assert field(out, "Architecture") == "arm64"
    assert field(out, "Depends") == "python3.8"
    data = str(tmp_path / "data")
    run(["dpkg-deb", "-x", out, data])
    with open(os.path.join(data, PACKAGE_UNIT_PATH.lstrip("/"))) as f:
        assert f.read() == package_unit("/usr/bin/python3.8")
    with open(os.path.join(data, PACKAGE_COMMAND_PATH.lstrip("/"))) as f:
        assert "exec /usr/bin/python3.8 %s" % PACKAGE_PYZ_PATH in f.read()
    control = str(tmp_path / "DEBIAN")
    run(["dpkg-deb", "-e", out, control])
    with open(os.path.join(control, "prerm")) as f:
        assert "PYTHON=/usr/bin/python3.8\n" in f.read()
    assert lintian_warnings(out) <= ACCEPTED_LINTIAN


def test_reproducible(debs, tmp_path):
    _, _, pyz = debs
    outs = [str(tmp_path / "a.deb"), str(tmp_path / "b.deb")]
    for out in outs:
        run([BUILD_SH, "deb", "--pyz", pyz, "-o", out])
    with open(outs[0], "rb") as a, open(outs[1], "rb") as b:
        assert a.read() == b.read(), "two packages of the same pyz differ"


def test_build_sh_deb_refuses_what_is_not_a_pyz(tmp_path):
    bogus = tmp_path / "edgeagent.pyz"
    bogus.write_bytes(b"#!/usr/bin/env python3\nnot a zip\n")
    proc = run([BUILD_SH, "deb", "--pyz", str(bogus), "-o", str(tmp_path / "x.deb")],
               check=False)
    assert proc.returncode == 2
    assert "not an edgeagent .pyz" in proc.stderr
    assert not (tmp_path / "x.deb").exists()
    proc = run([BUILD_SH, "deb", "--frobnicate"], check=False)
    assert proc.returncode == 2 and "unknown argument --frobnicate" in proc.stderr


def test_build_sh_deb_refuses_a_bad_revision(debs, tmp_path):
    proc = run([BUILD_SH, "deb", "--pyz", debs[2], "--revision", "1 2", "-o",
                str(tmp_path / "x.deb")], check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "build.sh: --revision '1 2': not a Debian revision"
    assert not (tmp_path / "x.deb").exists()


# --- dpkg in a throwaway root --------------------------------------------------------------------

class Root:
    """A throwaway root with an empty dpkg database."""

    def __init__(self, path):
        require_tool("dpkg")
        self.path = str(path)
        admin = os.path.join(self.path, "var/lib/dpkg")
        for sub in ("info", "updates", "triggers"):
            os.makedirs(os.path.join(admin, sub), exist_ok=True)
        for name in ("status", "available"):
            open(os.path.join(admin, name), "a").close()

    def real(self, host_path):
        return os.path.join(self.path, host_path.lstrip("/"))

    def dpkg(self, *args, env=None, check=True):
        force = ["--force-script-chrootless", "--force-depends"]
        if os.geteuid() != 0:
            force.append("--force-not-root")
        return run(["dpkg", "--root", self.path] + force + list(args), env=env, check=check)

    def status(self):
        proc = run(["dpkg", "--root", self.path, "-s", "edgeagent"], check=False)
        if proc.returncode != 0:
            return None, None
        fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines()
                      if ": " in line and not line.startswith(" "))
        return fields.get("Status"), fields.get("Version")

    def files(self):
        """Every path under the root outside dpkg's own database."""
        out = set()
        for folder, dirs, names in os.walk(self.path):
            rel = "/" if folder == self.path else "/" + os.path.relpath(folder, self.path)
            out.update(os.path.join(rel, name) for name in dirs + names)
        return {p for p in out if not p.startswith("/var/lib/dpkg")}


def test_install_into_a_root_without_systemd(deb, tmp_path):
    root = Root(tmp_path / "root")
    proc = root.dpkg("-i", deb)
    assert "Setting up edgeagent" in proc.stdout
    assert root.status() == ("install ok installed", field(deb, "Version"))
    for path, mode in ((PACKAGE_PYZ_PATH, 0o755), (PACKAGE_COMMAND_PATH, 0o755),
                       (PACKAGE_UNIT_PATH, 0o644), (CONFIG, 0o644)):
        st = os.stat(root.real(path))
        assert st.st_mode & 0o7777 == mode, path
        assert (st.st_uid, st.st_gid) == (0, 0) or os.geteuid() != 0, path
    # postinst enabled the unit as debhelper's snippet does (deb-systemd-helper: a wants link and
    # its state for purge) and started nothing: no systemd runs for this root
    assert os.readlink(root.real(WANTS)) == PACKAGE_UNIT_PATH
    assert os.path.exists(root.real("/var/lib/systemd/deb-systemd-helper-enabled/%s.dsh-also"
                                    % UNIT))
    # dpkg's own record of the files: all of them intact
    assert run(["dpkg", "--root", root.path, "--verify", "edgeagent"]).stdout == ""
    # the command runs the packaged pyz with the packaged Python
    with open(root.real(PACKAGE_COMMAND_PATH)) as f:
        assert f.read().splitlines()[-1] == 'exec /usr/bin/python3 %s "$@"' % PACKAGE_PYZ_PATH


def test_doctor_sees_the_package_as_installed(deb, tmp_path):
    root = Root(tmp_path / "root")
    root.dpkg("-i", deb)
    # the root's python3, as python3-minimal installs it (doctor reads the version from the name)
    os.symlink("python%s" % python3_minor(), root.real("/usr/bin/python3"))
    open(root.real("/usr/bin/python%s" % python3_minor()), "w").close()
    ctx = build_context(HostRoot(root.path), load_config(None, env={}))
    unit, enabled, _ = checks_host.check_service(ctx)
    assert (unit.status, enabled.status) == (PASS, PASS), (unit, enabled)
    assert unit.detail.endswith("runs /usr/bin/python3 %s" % PACKAGE_PYZ_PATH)
    # an edited unit is noticed, and the fix names the package, not the pyz install
    with open(root.real(PACKAGE_UNIT_PATH), "a") as f:
        f.write("# edited\n")
    ctx = build_context(HostRoot(root.path), load_config(None, env={}))
    unit = checks_host.check_service(ctx)[0]
    assert unit.status != PASS and "apt install --reinstall edgeagent" in unit.fix


def edit_config(root, node="jetson-1"):
    path = root.real(CONFIG)
    with open(path) as f:
        text = f.read()
    assert '#node_name = ""\n' in text
    with open(path, "w") as f:
        f.write(text.replace('#node_name = ""\n', 'node_name = "%s"\n' % node))
    with open(path) as f:
        return f.read()


def test_upgrade_keeps_the_config_and_leaves_one_copy(debs, tmp_path):
    first, second, pyz = debs
    root = Root(tmp_path / "root")
    root.dpkg("-i", first)
    edited = edit_config(root)
    # dependencies two earlier builds unpacked, and the ones of this build
    build = shiv_build_id(pyz)
    cache = root.real("/var/cache/edgeagent")
    for name in ("edgeagent.pyz_0ld", ".edgeagent.pyz_0ld_lock", "edgeagent.pyz_" + build,
                 ".edgeagent.pyz_%s_lock" % build):
        os.makedirs(os.path.join(cache, name))
    before = root.files()

    proc = root.dpkg("-i", second)
    assert "conffile" not in (proc.stdout + proc.stderr).lower()   # no question was asked
    assert root.status() == ("install ok installed", field(second, "Version"))
    with open(root.real(CONFIG)) as f:
        assert f.read() == edited
    # no config.toml.dpkg-new/-dist/-old, no second pyz; older builds' dependencies pruned
    assert root.files() == before - {"/var/cache/edgeagent/edgeagent.pyz_0ld",
                                     "/var/cache/edgeagent/.edgeagent.pyz_0ld_lock"}
    assert sorted(os.listdir(cache)) == sorted([".edgeagent.pyz_%s_lock" % build,
                                                "edgeagent.pyz_" + build])
    assert os.readlink(root.real(WANTS)) == PACKAGE_UNIT_PATH
    # dpkg reports the edit as a changed conffile, nothing else
    verify = run(["dpkg", "--root", root.path, "--verify", "edgeagent"], check=False).stdout
    assert verify.splitlines() == ["??5?????? c %s" % CONFIG]


def test_remove_then_purge(deb, tmp_path):
    root = Root(tmp_path / "root")
    root.dpkg("-i", deb)
    edit_config(root)
    os.makedirs(root.real("/var/cache/edgeagent/edgeagent.pyz_x"))
    root.dpkg("-r", "edgeagent")
    assert root.status()[0] == "deinstall ok config-files"
    # the conffile stays (edited), the unpacked dependencies go with the package
    assert os.path.isfile(root.real(CONFIG))
    for path in (PACKAGE_PYZ_PATH, PACKAGE_COMMAND_PATH, PACKAGE_UNIT_PATH,
                 "/var/cache/edgeagent"):
        assert not os.path.lexists(root.real(path)), path

    root.dpkg("--purge", "edgeagent")
    assert root.status() == (None, None)
    # nothing of edgeagent left: no config, no wants link, no deb-systemd-helper state
    leftovers = {p for p in root.files() if not os.path.isdir(root.real(p))}
    assert leftovers == set(), leftovers
    assert not os.path.lexists(root.real("/etc/edgeagent"))


# --- the node labels on purge --------------------------------------------------------------------

OWNED = {"edgeagent.io/model": "jetson-orin-nano", "nvidia.com/gpu.product": "Orin"}
ANNOTATION = "edgeagent.io/owned-labels"


@pytest.fixture()
def api(tmp_path):
    from tests.peers.kubeapi import ThreadedKubeApi

    server = ThreadedKubeApi(str(tmp_path / "api"), nodes=["jetson-1"])
    labels = dict(OWNED, team="blue")
    server.api.edit_node("jetson-1", {"metadata": {"labels": labels, "annotations": {
        ANNOTATION: ",".join(sorted(list(OWNED) + ["team"]))}}})
    yield server.api
    server.close()


def joined_root(deb, tmp_path, api):
    """A root with the package installed on a k3s node that joined ``api``'s cluster."""
    if python3_minor() != run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % "
                                                        "sys.version_info[:2])"]).stdout.strip():
        pytest.skip("the maintainer scripts run /usr/bin/python3, which is not the Python "
                    "this pyz was built for")
    root = Root(tmp_path / "root")
    root.dpkg("-i", deb)
    edit_config(root, "jetson-1")
    api.write_kubelet_root(root.path, node="jetson-1", flavor="k3s")
    return root


def test_purge_leaves_the_labels_unless_asked(deb, tmp_path, api):
    root = joined_root(deb, tmp_path, api)
    before = api.labels("jetson-1")
    assert set(OWNED) <= set(before)
    root.dpkg("--purge", "edgeagent")
    assert root.status() == (None, None)
    assert api.labels("jetson-1") == before
    assert api.requests_by(method="PATCH") == []


def test_purge_with_edgeagent_purge_labels_removes_exactly_the_owned_ones(deb, tmp_path, api):
    root = joined_root(deb, tmp_path, api)
    before = api.labels("jetson-1")
    proc = root.dpkg("--purge", "edgeagent", env=clean_env(EDGEAGENT_PURGE_LABELS="1"))
    assert "removed 2 labels" in proc.stdout, proc.stdout
    assert root.status() == (None, None)
    # `team` was listed in the annotation but is no key edgeagent computes: it stays, as do the
    # kubelet's own labels
    assert api.labels("jetson-1") == {k: v for k, v in before.items() if k not in OWNED}
    assert api.labels("jetson-1")["team"] == "blue"
    assert ANNOTATION not in api.annotations("jetson-1")
    assert not os.path.lexists(root.real("/var/cache/edgeagent"))


def test_a_failed_label_removal_keeps_the_package(deb, tmp_path, api):
    root = joined_root(deb, tmp_path, api)
    api.inject(status=403, count=1000)
    proc = root.dpkg("--purge", "edgeagent", env=clean_env(EDGEAGENT_PURGE_LABELS="1"),
                     check=False)
    assert proc.returncode != 0
    assert "the node labels were not removed" in proc.stderr
    # prerm failed: dpkg ran `postinst abort-remove` and the package is whole again (still
    # selected for purge: the operator's next `apt purge` tries again)
    assert root.status()[0] == "purge ok installed"
    assert "edgeagent: error:" in proc.stderr and "403" in proc.stderr, proc.stderr
    assert os.path.isfile(root.real(PACKAGE_PYZ_PATH))
    assert set(OWNED) <= set(api.labels("jetson-1"))


# --- the maintainer scripts when systemd runs ----------------------------------------------------

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$RECORD"
case "$(basename "$0") $*" in
  "deb-systemd-helper --quiet was-enabled"*) exit 0 ;;
esac
exit 0
"""


@pytest.fixture()
def scripts(deb, tmp_path):
    """run(script, *args) -> the commands it ran, in a mount namespace where systemd runs."""
    unshare = require_tool("unshare")
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    control = str(tmp_path / "DEBIAN")
    run(["dpkg-deb", "-e", deb, control])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    record = str(tmp_path / "record")

    def run_script(name, *args, systemd=True, dpkg_root=None):
        open(record, "w").close()
        # /run and /var/cache are fresh tmpfs mounts seen only by the script: the host is
        # untouched, whatever systemd state it has
        setup = "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/cache && "
        if systemd:
            setup += "mkdir -p /run/systemd/system && "
        env = clean_env(RECORD=record, PATH="%s:%s" % (bin_dir, os.environ["PATH"]))
        if dpkg_root:
            env["DPKG_ROOT"] = dpkg_root
        run([unshare, "-m", "--propagation", "private", "sh", "-c",
             setup + 'exec "$@"', "sh", os.path.join(control, name)] + list(args), env=env)
        with open(record) as f:
            return f.read().splitlines()

    return run_script


def services(calls):
    return [c for c in calls if not c.startswith("deb-systemd-helper ")]


def test_first_install_enables_and_starts_the_service(scripts):
    calls = scripts("postinst", "configure", "")
    assert "deb-systemd-helper enable %s" % UNIT in calls
    assert services(calls) == [
        "systemctl --system daemon-reload", "deb-systemd-invoke start %s" % UNIT]


def test_upgrade_restarts_once_and_never_stops(scripts):
    # dpkg's order for an upgrade: old prerm upgrade, (unpack), new postinst configure OLD
    assert services(scripts("prerm", "upgrade", "0.1.0-2")) == []
    assert services(scripts("postinst", "configure", "0.1.0-1")) == [
        "systemctl --system daemon-reload", "deb-systemd-invoke restart %s" % UNIT]


def test_remove_stops_the_service(scripts):
    assert services(scripts("prerm", "remove")) == ["deb-systemd-invoke stop %s" % UNIT]
    assert services(scripts("postrm", "remove")) == ["systemctl --system daemon-reload"]
    assert scripts("postrm", "purge") == ["deb-systemd-helper purge %s" % UNIT]


def test_nothing_is_started_without_systemd_or_for_another_root(scripts, tmp_path):
    assert services(scripts("postinst", "configure", "", systemd=False)) == []
    assert services(scripts("prerm", "remove", systemd=False)) == []
    assert services(scripts("postinst", "configure", "", dpkg_root=str(tmp_path))) == []


def test_install_and_uninstall_leave_a_package_to_dpkg(deb, tmp_path):
    root = Root(tmp_path / "root")
    root.dpkg("-i", deb)
    for command in ("install", "uninstall"):
        proc = run([sys.executable, "-m", "edgeagent", "--root", root.path, command],
                   check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("edgeagent: error: %s: edgeagent is installed here by "
                                      "its Debian package" % command)
        assert "apt" in proc.stderr
    # nothing was touched
    assert os.readlink(root.real(WANTS)) == PACKAGE_UNIT_PATH
    assert run(["dpkg", "--root", root.path, "--verify", "edgeagent"]).stdout == ""
    assert not os.path.lexists(root.real("/etc/systemd/system/" + UNIT))


# --- the staging script's reader of a pyz (--pyz FILE may be anything) -----------------------

def stage_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "stage_deb", os.path.join(REPO, "packaging", "stage_deb.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STAGE = stage_module()
ELF_HEADS = [b"\x7fELF\x02\x01\x01" + b"\0" * 11 + m.to_bytes(2, "little")
             for m in (62, 183, 40, 3, 0xFFFF)] + [b"", b"\x7fELF", b"MZ" * 20]


def pyz_bytes(first_line, version_text, extensions, environment, compression):
    import io
    import zipfile

    buf = io.BytesIO()
    buf.write(first_line)
    with zipfile.ZipFile(buf, "a", compression=compression) as z:
        if environment is not None:
            z.writestr("environment.json", environment)
        if version_text is not None:
            z.writestr("site-packages/edgeagent/__init__.py", version_text)
        for name, head in extensions:
            z.writestr("site-packages/%s" % name, head)
    return buf.getvalue()


def test_pyz_facts_of_a_pyz_like_build_sh_makes(tmp_path):
    path = tmp_path / "e.pyz"
    path.write_bytes(pyz_bytes(b"#!/usr/bin/env python3.8\n", '__version__ = "1.2.3"\n',
                               [("aiohttp/_http_parser.cpython-38-aarch64-linux-gnu.so",
                                 ELF_HEADS[1])], '{"build_id": "abc"}', 8))
    assert STAGE.pyz_facts(str(path)) == {"version": "1.2.3", "build_id": "abc",
                                          "python": "3.8", "interpreter": "python3.8",
                                          "arch": "arm64"}
    assert STAGE.python_depends("python3.8", "3.8") == "python3.8"
    assert STAGE.python_depends("python3", "3.12") == "python3 (>= 3.12~), python3 (<< 3.13)"


def test_pyz_facts_refuses_a_pyz_for_another_python(tmp_path):
    path = tmp_path / "e.pyz"
    path.write_bytes(pyz_bytes(b"#!/usr/bin/env python3.10\n", '__version__ = "1"\n',
                               [("y/_q.cpython-38-x86_64-linux-gnu.so", ELF_HEADS[0])],
                               '{"build_id": "abc"}', 0))
    with pytest.raises(STAGE.StageError, match="runs under python3.10 but holds C extensions "
                                               "for Python 3.8"):
        STAGE.pyz_facts(str(path))


def _fuzz_pyz():
    from hypothesis import strategies as st

    names = st.sampled_from(["a/_x.cpython-38-aarch64-linux-gnu.so",
                             "b/_y.cpython-311-x86_64-linux-gnu.so", "c/z.so",
                             "d/_w.cpython-3-x.so"])
    return st.builds(
        pyz_bytes,
        first_line=st.one_of(st.sampled_from([b"#!/usr/bin/env python3\n",
                                              b"#!/usr/bin/env python3.8\n", b"",
                                              b"#!" + b"x" * 100000]),
                             st.binary(max_size=200)),
        version_text=st.one_of(st.none(), st.text(max_size=200),
                               st.sampled_from(['__version__ = "0.1.0"\n', "#" * 200000])),
        extensions=st.lists(st.tuples(names, st.one_of(st.sampled_from(ELF_HEADS),
                                                       st.binary(max_size=40))), max_size=4,
                            unique_by=lambda t: t[0]),
        environment=st.one_of(st.none(), st.sampled_from(['{"build_id": "b1"}', "[]", "{",
                                                          '{"build_id": 0}'])),
        compression=st.sampled_from([0, 8]))


def test_fuzz_pyz_facts(tmp_path):
    """Whatever --pyz names: facts or one StageError, in bounded time and memory."""
    from hypothesis import HealthCheck, given, settings

    from tests.costbound import bounded

    path = str(tmp_path / "fuzz.pyz")

    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=_fuzz_pyz())
    def check(data):
        with open(path, "wb") as f:
            f.write(data)
        result = bounded(lambda: STAGE.pyz_facts(path), 0.5, 4 << 20, (STAGE.StageError,))
        if not isinstance(result, STAGE.StageError):
            assert set(result) == {"version", "build_id", "python", "interpreter", "arch"}
            assert result["arch"] in ("amd64", "arm64", "armhf")

    check()


def test_postinst_warns_when_a_pyz_install_overrides_the_package(deb, tmp_path):
    root = Root(tmp_path / "root")
    os.makedirs(root.real("/etc/systemd/system"))
    from edgeagent.install.layout import PYZ_PATH, render_unit, unit_template

    with open(root.real("/etc/systemd/system/" + UNIT), "w") as f:
        f.write(render_unit(unit_template(), "/usr/bin/python3", PYZ_PATH))
    proc = root.dpkg("-i", deb)
    assert "edgeagent: warning: /etc/systemd/system/edgeagent.service (from " \
           "`edgeagent.pyz install`) overrides this package's unit" in proc.stderr
    assert root.status()[0] == "install ok installed"
