"""`doctor --fix`: the one-value edits (pure, on the real config files of tests/fixtures/runtime),
the applier (backup, atomic write, mode kept, refusal when the file changed) and the command
(diffs first, confirmation, --yes, --restart through the root's own systemctl)."""

import io
import json
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.discovery.runtimefacts import load_toml
from edgeagent.doctor.command import FixSession
from edgeagent.doctor.fix import (FileEdit, FixApplier, FixError, ServiceRunner, backup_name,
                                  set_json_key, set_toml_key, set_yaml_key)
from edgeagent.hostpaths import HostRoot
from tests.costbound import bounded
from tests.peers.hosts import make_root, write
from tests.test_doctor_runtime import ETC_CONTAINERD, fixture, kubeadm

CRI = ("plugins", "io.containerd.grpc.v1.cri")


# --- TOML ----------------------------------------------------------------------------------------

def test_toml_value_replaced_on_its_line_everything_else_kept():
    text = fixture("containerd-1.7-default.toml")
    new = set_toml_key(text, CRI, "enable_cdi", True, ETC_CONTAINERD)
    assert new == text.replace("    enable_cdi = false\n", "    enable_cdi = true\n")


def test_toml_key_added_under_its_table_with_the_tables_indent():
    text = fixture("k3s-containerd1.7-config.toml")
    new = set_toml_key(text, CRI, "enable_cdi", True, "/x")
    assert new == text.replace('[plugins."io.containerd.grpc.v1.cri"]\n',
                               '[plugins."io.containerd.grpc.v1.cri"]\n  enable_cdi = true\n')


def test_toml_table_appended_when_missing_and_single_quoted_headers_are_found():
    text = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  x = 1\n"
    new = set_toml_key(text, ("plugins", "io.containerd.cri.v1.runtime"), "enable_cdi", True, "/x")
    assert new == text + '\n[plugins."io.containerd.cri.v1.runtime"]\n  enable_cdi = true\n'
    new2 = set_toml_key(text, ("plugins", "io.containerd.cri.v1.runtime", "containerd"),
                        "default_runtime_name", "nvidia", "/x")
    assert "default_runtime_name = \"nvidia\"\n  x = 1" in new2


def test_toml_string_values_and_an_empty_file():
    assert set_toml_key("", ("device_plugin",), "directory", "/d/device-plugins", "/c") == \
        '[device_plugin]\n  directory = "/d/device-plugins"\n'


OPTIONS = CRI + ("containerd", "runtimes", "runc", "options")


@pytest.mark.parametrize("text, table, words", [
    ("[plugins\n", CRI, "invalid TOML"),
    # A dotted key already defines the table: adding [..options] would define it again.
    ('[plugins."io.containerd.grpc.v1.cri"]\n  containerd.runtimes.runc.options.SystemdCgroup'
     ' = false\n', OPTIONS, "edit it by hand"),
    # A header inside a multi-line string is not a header.
    ('a = """\n[plugins."io.containerd.grpc.v1.cri"]\n"""\n', CRI, "edit it by hand"),
    # The table is an inline table.
    ('plugins = { "io.containerd.grpc.v1.cri" = { enable_cdi = false } }\n', CRI,
     "edit it by hand"),
])
def test_toml_edits_that_cannot_be_made_safely_are_refused(text, table, words):
    with pytest.raises(FixError) as e:
        set_toml_key(text, table, "SystemdCgroup" if table == OPTIONS else "enable_cdi", True,
                     "/etc/containerd/config.toml")
    assert words in str(e.value) and "\n" not in str(e.value)


TOML_PIECES = ['[plugins."io.containerd.grpc.v1.cri"]\n', "[plugins]\n", "enable_cdi = false\n",
               "enable_cdi = true\n", "  x = 1\n", "'''\n", '"""\n', "# c\n", "[[a]]\n",
               "a.b = 1\n", "[", "]", "=", "\n", '"', "'", "plugins.x = {}\n", "\t", "\\",
               'enable_cdi = """\nfalse\n"""\n', "\ufeff"]


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOML_PIECES), max_size=40).map("".join) | st.text(max_size=300))
def test_fuzzed_toml_edit_is_exact_or_refused_within_bounds(text):
    result = bounded(lambda: set_toml_key(text, CRI, "enable_cdi", True, "/c.toml"), 2.0,
                     8 << 20, (FixError,))
    if isinstance(result, FixError):
        assert "\n" not in str(result) and str(result).startswith("/c.toml")
        return
    doc = load_toml(result, "/c.toml")
    assert doc["plugins"]["io.containerd.grpc.v1.cri"]["enable_cdi"] is True
    # Nothing else moved: the edit is one line changed or added (or one table appended).
    old, new = text.splitlines(), result.splitlines()
    assert len(new) - len(old) in (0, 1, 2, 3)


# --- JSON and YAML -------------------------------------------------------------------------------

def test_json_key_added_after_the_brace_indented_like_the_file():
    text = fixture("docker-daemon-jetpack.json")
    new = set_json_key(text, "default-runtime", "nvidia", "/etc/docker/daemon.json")
    assert new == text.replace('{\n', '{\n    "default-runtime": "nvidia",\n', 1)


@pytest.mark.parametrize("text, expected", [
    ('{"default-runtime": "runc", "runtimes": {}}',
     '{"default-runtime": "nvidia", "runtimes": {}}'),
    ("{}", '{\n    "default-runtime": "nvidia"\n}'),
    ("{\n}\n", '{\n    "default-runtime": "nvidia"\n}\n'),
    ("", '{\n    "default-runtime": "nvidia"\n}\n'),
    ('{"a": 1}', '{\n    "default-runtime": "nvidia", "a": 1}'),
])
def test_json_edits(text, expected):
    assert set_json_key(text, "default-runtime", "nvidia", "/d.json") == expected


@pytest.mark.parametrize("text", ['{"runtimes": ', "[1, 2]",
                                  '{"default-runtime": {"a": 1}}'])
def test_json_refusals(text):
    with pytest.raises(FixError):
        set_json_key(text, "default-runtime", "nvidia", "/d.json")


def test_yaml_key_replaced_or_appended():
    text = fixture("k3s-config.yaml")
    assert set_yaml_key(text + "default-runtime: runc  # was\n", "default-runtime", "nvidia",
                        "/c.yaml") == text + 'default-runtime: "nvidia"\n'
    assert set_yaml_key("docker: true", "default-runtime", "nvidia", "/c.yaml") == \
        'docker: true\ndefault-runtime: "nvidia"\n'


@pytest.mark.parametrize("text", ["default-runtime: |\n  runc\n", "- a\n- b\n", "a: [\n",
                                  "a: &x 1\nb: *x\n"])
def test_yaml_refusals(text):
    with pytest.raises(FixError):
        set_yaml_key(text, "default-runtime", "nvidia", "/c.yaml")


# --- the applier ---------------------------------------------------------------------------------

@pytest.fixture
def host(tmp_path):
    return str(make_root(tmp_path))


def edit_of(host, path, old, new, service="containerd", create=False):
    return FileEdit("runtime.containerd-cdi", path, old, new, service, "switch CDI on", create)


def test_apply_backs_up_and_keeps_the_mode(host):
    old = fixture("containerd-1.7-default.toml")
    real = write(host, ETC_CONTAINERD, old, mode=0o640)
    new = set_toml_key(old, CRI, "enable_cdi", True, ETC_CONTAINERD)
    applied = FixApplier(HostRoot(host), clock=lambda: 1733313600.0).apply(
        edit_of(host, ETC_CONTAINERD, old, new))
    assert applied.ok, applied.detail
    assert applied.backup == ETC_CONTAINERD + ".edgeagent-20241204T120000.bak" == \
        backup_name(ETC_CONTAINERD, 1733313600.0)
    with open(real) as f:
        assert f.read() == new
    with open(os.path.join(host, applied.backup.lstrip("/"))) as f:
        assert f.read() == old
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert [n for n in os.listdir(os.path.dirname(real)) if n.endswith(".tmp")] == []


def test_apply_refuses_a_file_changed_since_it_was_read(host):
    write(host, ETC_CONTAINERD, "version = 2\n# edited meanwhile\n")
    applied = FixApplier(HostRoot(host)).apply(edit_of(host, ETC_CONTAINERD, "version = 2\n",
                                                       "version = 2\nx = 1\n"))
    assert not applied.ok and "changed since doctor read it" in applied.detail
    assert os.listdir(os.path.join(host, "etc/containerd")) == ["config.toml"]


def test_apply_creates_a_missing_file_and_writes_through_a_link_inside_the_root(host):
    path = "/etc/edgeagent/config.toml"
    applied = FixApplier(HostRoot(host)).apply(edit_of(host, path, "", "[device_plugin]\n",
                                                       "edgeagent", create=True))
    assert applied.ok and applied.backup is None
    assert stat.S_IMODE(os.stat(os.path.join(host, "etc/edgeagent/config.toml")).st_mode) == 0o644
    write(host, "/srv/containerd.toml", "version = 2\n")
    os.makedirs(os.path.join(host, "etc/containerd"), exist_ok=True)
    os.symlink("/srv/containerd.toml", os.path.join(host, "etc/containerd/config.toml"))
    applied = FixApplier(HostRoot(host)).apply(edit_of(host, ETC_CONTAINERD, "version = 2\n",
                                                       "version = 2\nx = 1\n"))
    assert applied.ok
    with open(os.path.join(host, "srv/containerd.toml")) as f:
        assert f.read() == "version = 2\nx = 1\n"
    assert os.path.islink(os.path.join(host, "etc/containerd/config.toml"))


def fake_systemctl(host, code=0):
    log = os.path.join(host, "systemctl.log")
    write(host, "/usr/bin/systemctl", "#!/bin/sh\necho \"$@\" >> %s\nexit %d\n" % (log, code),
          mode=0o755)
    return log


def test_service_runner_runs_the_roots_systemctl_only(host):
    runner = ServiceRunner(HostRoot(host))
    ok, detail = runner.restart("containerd")
    assert not ok and "no /usr/bin/systemctl under" in detail
    log = fake_systemctl(host)
    assert runner.restart("containerd") == (True, "restarted containerd")
    with open(log) as f:
        assert f.read() == "restart containerd\n"
    fake_systemctl(host, code=5)
    ok, detail = runner.restart("docker")
    assert not ok and "exited 5" in detail


# --- the command ---------------------------------------------------------------------------------

def cgroup_trap(host):
    kubeadm(host)
    return write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))


def cli(host, *args):
    from edgeagent.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--root", host, "doctor"] + list(args))
    return e.value.code


def test_fix_without_a_terminal_prints_the_diff_and_changes_nothing(host, capsys):
    real = cgroup_trap(host)
    before = open(real).read()
    assert cli(host, "--fix") == 2
    out, err = capsys.readouterr()
    assert "FAIL  runtime.cgroup-driver" in out
    assert "+            SystemdCgroup = true" in out and "--- a/etc/containerd/config.toml" in out
    assert err.strip().splitlines()[-1] == ("edgeagent: error: --fix: no terminal to confirm the "
                                            "edits above; nothing was changed: rerun with --yes "
                                            "to apply it")
    assert open(real).read() == before
    assert os.listdir(os.path.dirname(real)) == ["config.toml"]


def test_fix_yes_applies_and_names_the_service_to_restart(host, capsys):
    real = cgroup_trap(host)
    log = fake_systemctl(host)
    cli(host, "--fix", "--yes")
    out, _ = capsys.readouterr()
    assert "SystemdCgroup = true" in open(real).read()
    assert "edited /etc/containerd/config.toml (backup /etc/containerd/config.toml.edgeagent-" \
        in out
    assert "sudo systemctl restart containerd (or rerun with --restart)" in out
    assert not os.path.exists(log)                      # not restarted without --restart


def cli_json(host, capsys, *args):
    code = cli(host, "--json", *args)
    return json.loads(capsys.readouterr().out), code


def test_fix_yes_restart_json(host, capsys):
    cgroup_trap(host)
    log = fake_systemctl(host)
    doc, code = cli_json(host, capsys, "--fix", "--yes", "--restart")
    (fix,) = doc["fixes"]
    assert fix["applied"] and fix["check"] == "runtime.cgroup-driver"
    assert fix["path"] == ETC_CONTAINERD and fix["backup"].startswith(ETC_CONTAINERD + ".")
    assert "+            SystemdCgroup = true" in fix["diff"]
    assert doc["restarts"] == [{"service": "containerd", "restarted": True,
                                "detail": "restarted containerd"}]
    assert open(log).read() == "restart containerd\n"
    assert {c["check"] for c in doc["checks"]} >= {"runtime.cgroup-driver", "kubelet.root-dir"}
    doc, _ = cli_json(host, capsys, "--fix", "--yes")     # nothing left to edit
    assert doc["fixes"] == [] and doc["restarts"] == []


def test_plain_json_output_is_unchanged(host, capsys):
    doc, code = cli_json(host, capsys)
    assert isinstance(doc, list) and set(doc[0]) == {"check", "status", "detail", "fix"}


def test_yes_and_restart_need_fix(host, capsys):
    assert cli(host, "--yes") == 2
    assert "--yes and --restart go with --fix" in capsys.readouterr().err


def test_a_terminal_answer_decides_each_edit(host):
    from edgeagent.doctor.command import diagnose
    from edgeagent.config import load_config

    real = cgroup_trap(host)
    results, ctx = diagnose(HostRoot(host), load_config(None, env={}))
    asked = []
    out = io.StringIO()
    session = FixSession(HostRoot(host), yes=False, restart=False, as_json=False, out=out,
                         ask=lambda q: asked.append(q) or False, interactive=True)
    assert session.run(results, ctx) == 1
    assert asked == ["apply this edit to /etc/containerd/config.toml?"]
    assert "SystemdCgroup = true" not in open(real).read()
    session.ask = lambda q: True
    session.run(results, ctx)
    assert "SystemdCgroup = true" in open(real).read()


JSON_PIECES = ['{', '}', '"default-runtime"', '"runtimes"', ': ', '"nvidia"', ', ', '\n    ',
               '[', ']', 'null', 'true', '1e5', '"\\u0000"', '"a\\"b"', '\ufeff', '{}']
YAML_PIECES = ["default-runtime: runc\n", "default-runtime:\n", "  - a\n", "docker: true\n",
               "kubelet-arg:\n", "- x\n", "'default-runtime': 1\n", "# c\n", "|\n", "&a ", "*a",
               "---\n", "\t", ": ", "{", "}", "\n", "\"default-runtime\": x\n"]


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(JSON_PIECES), max_size=40).map("".join) | st.text(max_size=300),
       st.lists(st.sampled_from(YAML_PIECES), max_size=30).map("".join) | st.text(max_size=300))
def test_fuzzed_json_and_yaml_edits_are_exact_or_refused_within_bounds(json_text, yaml_text):
    from edgeagent.safeyaml import loads

    result = bounded(lambda: set_json_key(json_text, "default-runtime", "nvidia", "/d.json"),
                     2.0, 8 << 20, (FixError,))
    if not isinstance(result, FixError):
        doc = json.loads(result)
        assert doc["default-runtime"] == "nvidia"
        assert {k: v for k, v in doc.items() if k != "default-runtime"} == {
            k: v for k, v in (json.loads(json_text) if json_text.strip() else {}).items()
            if k != "default-runtime"}
    else:
        assert "\n" not in str(result)
    result = bounded(lambda: set_yaml_key(yaml_text, "default-runtime", "nvidia", "/c.yaml"),
                     2.0, 8 << 20, (FixError,))
    if not isinstance(result, FixError):
        assert loads(result)["default-runtime"] == "nvidia"
        assert len(result.splitlines()) - len(yaml_text.splitlines()) in (0, 1)
    else:
        assert "\n" not in str(result)


def test_a_config_file_that_is_not_utf8_is_never_planned_for_an_edit(host):
    from edgeagent.config import load_config
    from edgeagent.doctor.command import diagnose

    kubeadm(host)
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml").encode() +
          b"# caf\xe9 (latin-1)\n")
    results, ctx = diagnose(HostRoot(host), load_config(None, env={}))
    assert [r.status for r in results if r.check == "runtime.cgroup-driver"] == ["FAIL"]
    assert [e.path for e in ctx.facts.get("fix.edits", [])] == []


def test_fix_json_without_yes_lists_the_edits_applies_none_and_exits_2(host, capsys):
    real = cgroup_trap(host)
    before = open(real).read()
    assert cli(host, "--json", "--fix") == 2
    out, err = capsys.readouterr()
    (fix,) = json.loads(out)["fixes"]
    assert fix["applied"] is False and "--json cannot ask for confirmation" in fix["error"]
    assert "+            SystemdCgroup = true" in fix["diff"]
    assert "edgeagent: error: --fix: --json cannot ask" in err
    assert open(real).read() == before


def test_a_value_that_cannot_be_set_on_one_line_is_named_not_edited(host, capsys):
    kubeadm(host)
    real = write(host, ETC_CONTAINERD, 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n'
                 '  containerd.runtimes.runc.options.SystemdCgroup = false\n')
    assert cli(host, "--fix", "--yes") == 1
    out, _ = capsys.readouterr()
    assert "FAIL  runtime.cgroup-driver" in out
    assert "not editable (runtime.cgroup-driver): /etc/containerd/config.toml: could not set " \
        'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.SystemdCgroup on ' \
        "one line without changing anything else; edit it by hand" in out
    assert "--fix: nothing to edit" in out
    assert open(real).read().endswith("SystemdCgroup = false\n")
