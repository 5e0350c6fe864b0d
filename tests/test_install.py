"""`edgeagent install` / `uninstall` under --root: the files they write, keep and remove."""

import os
import stat
import subprocess
import sys

import pytest

from edgeagent.cli import main
from edgeagent.errors import OperatorError
from edgeagent.hostpaths import HostRoot
from edgeagent.install.command import install, uninstall, want_label_removal
from edgeagent.install.layout import (CACHE_DIR, COMMAND_PATH, CONFIG_PATH, PYZ_PATH, UNIT_PATH,
                                      WANTS_LINK, example_config, installed_paths, parse_unit,
                                      render_unit, unit_environment, unit_template)
from edgeagent.install.pyz import find_pyz, shiv_build_id, stale_builds
from tests.peers.hosts import fake_pyz, make_root, write


def p(root, host_path):
    return os.path.join(str(root), host_path.lstrip("/"))


@pytest.fixture
def board(tmp_path):
    root = make_root(tmp_path)
    write(root, "/usr/bin/python3", "#!/bin/sh\n", 0o755)
    return root


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_install_writes_everything_and_enables_offline(board, tmp_path, capsys):
    pyz = fake_pyz(tmp_path / "edgeagent.pyz")
    code, out, err = run_cli(["--root", str(board), "install", "--pyz", pyz], capsys)
    assert (code, err) == (0, "")
    with open(p(board, PYZ_PATH), "rb") as a, open(pyz, "rb") as b:
        assert a.read() == b.read()
    assert stat.S_IMODE(os.stat(p(board, PYZ_PATH)).st_mode) == 0o755
    with open(p(board, UNIT_PATH)) as f:
        unit = f.read()
    # under --root the interpreter defaults to the target's /usr/bin/python3
    assert "\nExecStart=/usr/bin/python3 /usr/local/lib/edgeagent/edgeagent.pyz run\n" in unit
    assert os.readlink(p(board, WANTS_LINK)) == UNIT_PATH
    with open(p(board, CONFIG_PATH)) as f:
        assert f.read() == example_config()
    with open(p(board, COMMAND_PATH)) as f:
        wrapper = f.read()
    assert wrapper.startswith("#!/bin/sh\n")
    assert 'exec /usr/bin/python3 /usr/local/lib/edgeagent/edgeagent.pyz "$@"' in wrapper
    assert "installed %s" % PYZ_PATH in out and "wrote %s" % UNIT_PATH in out
    assert "systemctl not run (--root" in out


def test_wrapper_script_runs(board, tmp_path):
    # The command wrapper is real sh: run it with a stand-in interpreter that prints its argv.
    install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/usr/bin/python3",
            lambda line: None)
    with open(p(board, COMMAND_PATH)) as f:
        script = f.read().replace("/usr/bin/python3", "echo")
    proc = subprocess.run(["sh", "-c", script, "edgeagent", "doctor", "--json"],
                          stdout=subprocess.PIPE, universal_newlines=True,
                          env={"PATH": os.environ["PATH"]})
    assert proc.stdout.strip() == "%s doctor --json" % PYZ_PATH


def test_install_keeps_an_existing_config_and_is_idempotent(board, tmp_path):
    write(board, CONFIG_PATH, "log_level = \"debug\"\n")
    pyz = fake_pyz(tmp_path / "edgeagent.pyz")
    lines = []
    assert install(HostRoot(str(board)), pyz, "/usr/bin/python3", lines.append) == 0
    with open(p(board, CONFIG_PATH)) as f:
        assert f.read() == "log_level = \"debug\"\n"
    assert "kept %s" % CONFIG_PATH in lines
    again = []
    assert install(HostRoot(str(board)), pyz, "/usr/bin/python3", again.append) == 0
    assert any(line.startswith("kept %s (unchanged" % PYZ_PATH) for line in again)
    assert "kept %s (unchanged)" % UNIT_PATH in again
    assert "kept %s (enabled)" % WANTS_LINK in again


def test_install_upgrades_the_pyz_and_rewrites_the_unit(board, tmp_path):
    install(HostRoot(str(board)), fake_pyz(tmp_path / "a.pyz", "aaa"), "/usr/bin/python3",
            lambda line: None)
    write(board, "/usr/bin/python3.10", "#!/bin/sh\n", 0o755)
    lines = []
    install(HostRoot(str(board)), fake_pyz(tmp_path / "b.pyz", "bbb"), "/usr/bin/python3.10",
            lines.append)
    assert shiv_build_id(p(board, PYZ_PATH)) == "bbb"
    assert any(line.startswith("updated %s" % UNIT_PATH) for line in lines)
    python, pyz = installed_paths(parse_unit(open(p(board, UNIT_PATH)).read()))
    assert (python, pyz) == ("/usr/bin/python3.10", PYZ_PATH)


def test_install_leaves_a_foreign_command_alone(board, tmp_path):
    write(board, COMMAND_PATH, "#!/bin/sh\necho mine\n", 0o755)
    lines = []
    install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/usr/bin/python3", lines.append)
    assert open(p(board, COMMAND_PATH)).read() == "#!/bin/sh\necho mine\n"
    assert any("left %s alone" % COMMAND_PATH in line for line in lines)


def test_install_refuses_a_masked_unit(board, tmp_path):
    os.makedirs(os.path.dirname(p(board, UNIT_PATH)), exist_ok=True)
    os.symlink("/dev/null", p(board, UNIT_PATH))
    with pytest.raises(OperatorError, match="masked"):
        install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/usr/bin/python3",
                lambda line: None)


def test_install_refuses_when_not_run_from_a_pyz(board, capsys):
    code, out, err = run_cli(["--root", str(board), "install"], capsys)
    assert code == 2
    assert err.startswith("edgeagent: error: install: edgeagent is not running from its .pyz")
    assert "--pyz FILE" in err and err.count("\n") == 1


@pytest.mark.parametrize("make,words", [
    (lambda d: str(d / "missing.pyz"), "no such file"),
    (lambda d: write(d, "/not-a-zip.pyz", "hello"), "not an edgeagent .pyz"),
])
def test_install_refuses_a_bad_pyz(tmp_path, make, words):
    with pytest.raises(OperatorError, match=words):
        find_pyz(make(tmp_path))


def test_find_pyz_takes_the_running_zipapp(tmp_path):
    pyz = fake_pyz(tmp_path / "edgeagent.pyz")
    assert find_pyz(None, argv0=pyz) == pyz
    with pytest.raises(OperatorError):
        find_pyz(None, argv0=sys.argv[0])


def test_install_refuses_paths_systemd_would_misread(board, tmp_path):
    write(board, "/opt/my python/bin/python3", "", 0o755)
    with pytest.raises(OperatorError, match="cannot go into a unit file"):
        install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/opt/my python/bin/python3",
                lambda line: None)
    write(board, "/root/.pyenv/versions/3.11.7/bin/python3", "", 0o755)
    with pytest.raises(OperatorError, match="ProtectHome"):
        install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"),
                "/root/.pyenv/versions/3.11.7/bin/python3", lambda line: None)
    os.makedirs(p(board, "/usr/local/bin"))
    os.symlink("/root/.pyenv/versions/3.11.7/bin/python3", p(board, "/usr/local/bin/python3"))
    with pytest.raises(OperatorError, match="ProtectHome"):  # a link into a home counts too
        install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/usr/local/bin/python3",
                lambda line: None)
    with pytest.raises(OperatorError, match="not found under --root"):
        install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/usr/bin/python9",
                lambda line: None)


class FakeSystemctl:
    def __init__(self, active=False, fail=None):
        self.active = active
        self.fail = fail
        self.calls = []

    def __call__(self, *args, timeout=60.0):
        self.calls.append(" ".join(args))
        if self.fail and self.fail in " ".join(args):
            return False, "Job for edgeagent.service failed"
        return True, ""

    def is_active(self):
        return self.active


def _host_install(board, tmp_path, systemctl, prewarm_ok=True, build_id="new"):
    calls = []

    def prewarm(python, pyz, cache):
        calls.append((python, pyz, cache))
        os.makedirs(os.path.join(cache, "edgeagent.pyz_" + build_id), exist_ok=True)
        return prewarm_ok, "edgeagent 0.1.0" if prewarm_ok else "SyntaxError: future feature"

    lines = []
    code = install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz", build_id),
                   "/usr/bin/python3", lines.append, systemctl=systemctl, prewarm_run=prewarm)
    return code, lines, calls


def test_host_install_enables_and_starts(board, tmp_path):
    os.makedirs(p(board, CACHE_DIR + "/edgeagent.pyz_old"))
    write(board, CACHE_DIR + "/.edgeagent.pyz_old_lock")
    sc = FakeSystemctl(active=False)
    code, lines, calls = _host_install(board, tmp_path, sc)
    assert code == 0
    assert calls == [("/usr/bin/python3", PYZ_PATH, p(board, CACHE_DIR))]
    assert sc.calls == ["daemon-reload", "enable --now edgeagent.service"]
    assert "systemctl enable --now edgeagent.service" in lines
    assert sorted(os.listdir(p(board, CACHE_DIR))) == ["edgeagent.pyz_new"]  # old build pruned
    assert not os.path.exists(p(board, WANTS_LINK))  # systemctl enable makes it, not us


def test_host_install_restarts_a_running_service(board, tmp_path):
    sc = FakeSystemctl(active=True)
    code, lines, _ = _host_install(board, tmp_path, sc)
    assert code == 0
    assert sc.calls == ["daemon-reload", "enable edgeagent.service", "restart edgeagent.service"]
    assert lines[-1].startswith("edgeagent is restarted")


def test_host_install_stops_when_the_interpreter_cannot_run_it(board, tmp_path):
    sc = FakeSystemctl()
    code, lines, _ = _host_install(board, tmp_path, sc, prewarm_ok=False)
    assert code == 1 and sc.calls == []
    assert any("does not start: SyntaxError" in line for line in lines)


def test_host_install_reports_a_failed_start(board, tmp_path):
    sc = FakeSystemctl(fail="enable")
    code, lines, _ = _host_install(board, tmp_path, sc)
    assert code == 1
    assert any("failed: Job for edgeagent.service failed" in line for line in lines)
    assert any("journalctl -u edgeagent" in line for line in lines)


def test_stale_builds():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name in ("edgeagent.pyz_a", "edgeagent.pyz_b", ".edgeagent.pyz_a_lock",
                     ".edgeagent.pyz_b_lock", "other"):
            os.mkdir(os.path.join(d, name))
        assert stale_builds(d, "edgeagent.pyz", "b") == [".edgeagent.pyz_a_lock",
                                                          "edgeagent.pyz_a"]


# --- uninstall -----------------------------------------------------------------------------------

def _installed(board, tmp_path):
    install(HostRoot(str(board)), fake_pyz(tmp_path / "e.pyz"), "/usr/bin/python3",
            lambda line: None)
    os.makedirs(p(board, CACHE_DIR + "/edgeagent.pyz_x/site-packages"))


def test_uninstall_removes_files_but_keeps_the_config(board, tmp_path):
    _installed(board, tmp_path)
    lines = []
    assert uninstall(HostRoot(str(board)), lines.append) == 0
    for gone in (PYZ_PATH, UNIT_PATH, WANTS_LINK, COMMAND_PATH, CACHE_DIR,
                 os.path.dirname(PYZ_PATH)):
        assert not os.path.lexists(p(board, gone)), gone
    assert os.path.exists(p(board, CONFIG_PATH))
    assert "kept %s (--purge removes it)" % CONFIG_PATH in lines


def test_uninstall_purge_and_dropins(board, tmp_path):
    _installed(board, tmp_path)
    write(board, UNIT_PATH + ".d/override.conf", "[Service]\n")
    write(board, "/etc/edgeagent/kubeconfig", "apiVersion: v1\n")
    lines = []
    assert uninstall(HostRoot(str(board)), lines.append, purge=True) == 0
    assert not os.path.exists(p(board, CONFIG_PATH))
    assert not os.path.exists(p(board, UNIT_PATH + ".d"))
    assert os.path.exists(p(board, "/etc/edgeagent/kubeconfig"))  # not ours
    assert "kept /etc/edgeagent: it holds other files" in lines


def test_uninstall_with_systemd_stops_first_then_labels_then_files(board, tmp_path):
    _installed(board, tmp_path)
    order = []
    sc = FakeSystemctl()

    def labels():
        order.append(("labels", os.path.exists(p(board, PYZ_PATH)), list(sc.calls)))
        return True

    assert uninstall(HostRoot(str(board)), lambda line: None, sc, labels=labels) == 0
    assert order == [("labels", True, ["disable --now edgeagent.service"])]
    assert sc.calls == ["disable --now edgeagent.service", "daemon-reload",
                        "reset-failed edgeagent.service"]


def test_uninstall_reports_a_failed_label_removal(board, tmp_path):
    _installed(board, tmp_path)
    assert uninstall(HostRoot(str(board)), lambda line: None, labels=lambda: False) == 1
    assert not os.path.exists(p(board, PYZ_PATH))  # the rest still happened


def test_uninstall_when_nothing_is_installed(board):
    lines = []
    assert uninstall(HostRoot(str(board)), lines.append) == 0
    assert lines[-1].startswith("edgeagent was not installed")


def test_want_label_removal():
    never = lambda q: pytest.fail("asked")  # noqa: E731
    assert want_label_removal(True, False, never) is True
    assert want_label_removal(False, True, never) is False
    assert want_label_removal(None, False, never) is False  # no terminal: never prompt
    assert want_label_removal(None, True, lambda q: True) is True


def test_uninstall_command_calls_the_labels_helper(board, tmp_path, capsys, monkeypatch):
    _installed(board, tmp_path)
    seen = []

    def remove_owned_labels(cli):
        seen.append((cli.config.options.kube.node_name, os.path.exists(p(board, PYZ_PATH))))
        return 0

    # The real labels command talks to an API server (tested in test_labels_command); here
    # only the call from uninstall, and its timing (before the pyz is removed), matters.
    monkeypatch.setattr("edgeagent.labels.command.remove_owned_labels", remove_owned_labels)
    code, out, err = run_cli(["--root", str(board), "uninstall", "--remove-labels",
                              "--node-name", "jetson-7"], capsys)
    assert (code, err) == (0, "")
    assert seen == [("jetson-7", True)]
    assert "removed the node labels edgeagent owned" in out


def test_uninstall_command_without_a_terminal_keeps_labels(board, tmp_path, capsys, monkeypatch):
    _installed(board, tmp_path)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    code, out, err = run_cli(["--root", str(board), "uninstall"], capsys)
    assert code == 0
    assert "keeping the node labels" in out and "--remove-labels" in out


# --- the packaged files --------------------------------------------------------------------------

def test_render_unit_replaces_only_execstart():
    template = unit_template()
    rendered = render_unit(template, "/usr/bin/python3.8", PYZ_PATH)
    diff = [(a, b) for a, b in zip(template.splitlines(), rendered.splitlines()) if a != b]
    assert diff == [("ExecStart=/usr/bin/python3 %s run" % PYZ_PATH,
                     "ExecStart=/usr/bin/python3.8 %s run" % PYZ_PATH)]
    assert render_unit(template, "/usr/bin/python3", PYZ_PATH) == template
    assert unit_environment(parse_unit(template)) == {"SHIV_ROOT": CACHE_DIR}


def test_the_systemd_folder_holds_the_packaged_files():
    from tests.conftest import REPO

    for name in ("edgeagent.service", "edgeagent.toml"):
        with open(os.path.join(REPO, "systemd", name)) as f:
            assert f.read() == (unit_template() if name.endswith("service")
                                else example_config())


def test_resolve_in_root_keeps_links_inside_the_root(tmp_path):
    from edgeagent.install.layout import resolve_in_root

    root = HostRoot(str(tmp_path))
    write(tmp_path, "/usr/bin/python3.8", "")
    os.symlink("python3.8", p(tmp_path, "/usr/bin/python3"))
    os.makedirs(p(tmp_path, "/usr/local/bin"))
    os.symlink("/usr/bin/python3", p(tmp_path, "/usr/local/bin/python3"))
    os.symlink("../bin", p(tmp_path, "/usr/local/lib"))
    assert resolve_in_root(root, "/usr/local/bin/python3") == "/usr/bin/python3.8"
    # /usr/local/lib -> ../bin is /usr/bin (relative to the link's folder), then python3.8
    assert resolve_in_root(root, "/usr/local/lib/python3") == "/usr/bin/python3.8"
    assert resolve_in_root(root, "/usr/bin/missing") == "/usr/bin/missing"
    os.symlink("loop", p(tmp_path, "/usr/bin/loop"))
    assert resolve_in_root(root, "/usr/bin/loop")  # gives up instead of spinning


@pytest.mark.artifact
@pytest.mark.skipif(not os.environ.get("EDGEAGENT_PYZ"), reason="EDGEAGENT_PYZ not set "
                    "(./build.sh test sets it)")
def test_the_real_pyz_installs_itself_and_doctor_reads_it(board, tmp_path):
    import json

    pyz = os.environ["EDGEAGENT_PYZ"]
    env = dict(os.environ, SHIV_ROOT=str(tmp_path / "shiv"))
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.run([pyz, "--root", str(board), "install"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert shiv_build_id(p(board, PYZ_PATH)) == shiv_build_id(pyz)
    proc = subprocess.run([pyz, "--root", str(board), "doctor", "--json"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    status = {r["check"]: r["status"] for r in json.loads(proc.stdout)}
    assert status["service unit"] == "PASS" and status["service enabled"] == "PASS"
    assert status["devicetree"] == "PASS" and status["gpu"] == "PASS"
