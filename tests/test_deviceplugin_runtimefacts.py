"""Parsers of CDI specs, L4T CSV lists and runtime configs; reading them from a host root."""

import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.discovery.runtimefacts import (RuntimeFactsCache, SpecError, parse_cdi_spec,
                                                 parse_csv, parse_docker_daemon_json,
                                                 parse_runtime_toml, read_runtime_facts)
from edgeagent.hostpaths import HostRoot
from tests.costbound import bounded
from tests.peers.hosts import short_root as make_root
from tests.peers.hosts import write

# The shape `nvidia-ctk cdi generate --mode=csv` writes on a Jetson (trimmed).
NVIDIA_CTK_YAML = """---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - path: /dev/nvhost-ctrl-gpu
  hooks:
  - args:
    - nvidia-ctk
    - hook
    - update-ldcache
    hookName: createContainer
    path: /usr/bin/nvidia-ctk
  mounts:
  - containerPath: /usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1
    hostPath: /usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1
    options:
    - ro
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvhost-gpu
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvhost-gpu
  name: all
kind: nvidia.com/gpu
"""


@pytest.mark.parametrize("text, kind, devices", [
    (NVIDIA_CTK_YAML, "nvidia.com/gpu", ("0", "all")),
    ("cdiVersion: '0.6.0'\nkind: nvidia.com/gpu\ndevices:\n  - name: 'all'  # every GPU\n"
     "    containerEdits:\n      env:\n      - name: not-a-device\n", "nvidia.com/gpu", ("all",)),
    ('{"cdiVersion": "0.5.0", "kind": "vendor.com/tpu", "devices": [{"name": "a"}, '
     '{"name": "b"}]}', "vendor.com/tpu", ("a", "b")),
    # Any YAML another tool may write: flow style, quoting, explicit document markers.
    ("kind: nvidia.com/gpu\ndevices: [{name: x}, {name: \"0\"}]\n...\n", "nvidia.com/gpu",
     ("x", "0")),
])
def test_cdi_specs(text, kind, devices):
    spec = parse_cdi_spec(text, "/etc/cdi/x")
    assert (spec.kind, spec.devices) == (kind, devices)
    assert spec.qualified(devices[0]) == "%s=%s" % (kind, devices[0])


@pytest.mark.parametrize("text, words", [
    ("cdiVersion: 0.5.0\ndevices:\n- name: x\n", "no valid kind"),
    ("kind: nvidia.com/gpu\n", "no devices list"),
    ("kind: nvidia.com/gpu\ndevices:\n- containerEdits: {}\n", "devices without names"),
    ("kind: nvidia.com/gpu\ndevices:\n\t- name: x\n", "invalid YAML"),
    ("{\"kind\": \"nvidia.com/gpu\", ", "invalid JSON"),
    ("just words\n", "not a CDI spec"),
    ("kind: nvidia.com/gpu\ndevices: [&a {name: x}, *a]\n", "aliases (*a) are not accepted"),
    ("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "aliases (*a) are not accepted"),
    ("kind: nvidia.com/gpu\ndevices: " + "[" * 100 + "]" * 100 + "\n",
     "nested more than 64 levels deep"),
    ("[" * 100000 + "\n", "nest"),   # libyaml stops it first (its own depth limit)
    ("{\"kind\": " + "[" * 100000 + "]" * 100000 + "}", "nested too deep"),
    ("kind: nvidia.com/gpu\n---\nkind: x\n", "expected a single document"),
    ("# nothing but a comment\n", "0 YAML documents"),
    ("kind: nvidia.com/gpu\ndevices:\n- name: x\n  bad: [\n", "invalid YAML"),
])
def test_bad_cdi_specs(text, words):
    with pytest.raises(SpecError) as e:
        parse_cdi_spec(text, "/etc/cdi/bad.yaml")
    assert words in str(e.value) and "/etc/cdi/bad.yaml" in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_uses_the_c_loader_where_the_wheel_has_it():
    import yaml

    from edgeagent.safeyaml import BASE_LOADER

    assert BASE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


def test_a_device_named_0_stays_a_name():
    # nvidia-ctk may write `name: 0`; YAML 1.1 would make it the integer 0 (no device name).
    spec = parse_cdi_spec("cdiVersion: 0.6\nkind: nvidia.com/gpu\ndevices:\n- name: 0\n")
    assert spec.devices == ("0",) and spec.version == "0.6"


YAML_PIECES = ["kind: nvidia.com/gpu\n", "devices:\n", "- name: x\n", "  name: '0'\n", "[", "]",
               "{", "}", "&a ", "*a", "!!python/object:os.system ", "---\n", "\t", ": ", ", ",
               "'", '"', "#", "\n", "- ", "  ", "? ", "| \n", "\x00", "\ufeff", "9" * 50,
               "containerEdits:\n", "  deviceNodes:\n", "  - path: /dev/nvidia-uvm\n",
               "  mounts:\n", "  - hostPath: /usr/lib/libcuda.so.1.1\n", "  hooks:\n",
               "  - args: [nvidia-cdi-hook, --host-driver-version=570.1]\n"]


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=80).map("".join)
       | st.text(max_size=400))
def test_fuzzed_cdi_specs_parse_or_fail_in_one_line_within_bounds(text):
    result = bounded(lambda: parse_cdi_spec(text, "/etc/cdi/fuzz.yaml"), 2.0, 16 << 20,
                     (SpecError,))
    if isinstance(result, SpecError):
        assert str(result).startswith("/etc/cdi/fuzz.yaml") and "\n" not in str(result)
    else:
        from edgeagent.discovery.runtimefacts import spec_mode

        assert result.devices and all(isinstance(n, str) for n in result.devices)
        assert all(isinstance(w, str) for w in result.device_nodes + result.host_paths
                   + result.hook_args)
        assert spec_mode(result) in ("csv", "nvml", "unknown")


def test_csv_lines():
    entries, problems = parse_csv("# comment\ndev, /dev/nvmap\n\nlib,/usr/lib/a.so\n"
                                  "sym, /usr/lib/b.so\ndir, /lib/firmware\nbogus line\n"
                                  "dev, relative/path\n", "/x.csv")
    assert entries == [("dev", "/dev/nvmap"), ("lib", "/usr/lib/a.so"), ("sym", "/usr/lib/b.so"),
                       ("dir", "/lib/firmware")]
    assert [p.split(":")[1] for p in problems] == ["7", "8"]


@pytest.mark.parametrize("text, runtimes, default, nvidia_default", [
    ('{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}, '
     '"default-runtime": "nvidia"}', ("nvidia",), "nvidia", True),
    ('{"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}}', ("nvidia",),
     None, False),
    ('{"runtimes": {"gpu": {"path": "/usr/bin/nvidia-container-runtime"}}, '
     '"default-runtime": "gpu"}', ("gpu",), "gpu", True),
    ('{"log-driver": "json-file"}', (), None, False),
    ("", (), None, False),
])
def test_docker_daemon_json(text, runtimes, default, nvidia_default):
    rc = parse_docker_daemon_json(text)
    assert (rc.nvidia_runtimes, rc.default, rc.nvidia_default) == (runtimes, default,
                                                                  nvidia_default)


def test_docker_daemon_json_invalid():
    with pytest.raises(SpecError, match="invalid JSON"):
        parse_docker_daemon_json('{"runtimes": ')


CONTAINERD_V2 = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "nvidia"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
  BinaryName = "/usr/bin/nvidia-container-runtime"
"""
CONTAINERD_V3 = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gpu]
  runtime_type = 'io.containerd.runc.v2'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gpu.options]
  BinaryName = '/usr/local/nvidia/toolkit/nvidia-container-runtime'
"""
K3S = """[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia"]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia".options]
  BinaryName = "/usr/bin/nvidia-container-runtime"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia-experimental"]
  runtime_type = "io.containerd.runc.v2"
"""
CRIO = """[crio.runtime]
default_runtime = "nvidia"
[crio.runtime.runtimes.nvidia]
runtime_path = "/usr/bin/nvidia-container-runtime"
"""


@pytest.mark.parametrize("text, engine, runtimes, nvidia_default", [
    (CONTAINERD_V2, "containerd", ("nvidia",), True),
    (CONTAINERD_V3, "containerd", ("gpu",), False),
    (K3S, "k3s", ("nvidia", "nvidia-experimental"), False),
    (CRIO, "cri-o", ("nvidia",), True),
    ("version = 2\n", "containerd", (), False),
])
def test_runtime_tomls(text, engine, runtimes, nvidia_default):
    rc = parse_runtime_toml(text, engine, "/etc/x.toml")
    assert (rc.nvidia_runtimes, rc.nvidia_default) == (runtimes, nvidia_default)


def test_runtime_toml_invalid():
    with pytest.raises(SpecError, match="invalid TOML"):
        parse_runtime_toml("[plugins\n", "containerd", "/etc/containerd/config.toml")


@pytest.fixture
def root():
    path = make_root(demo=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_read_runtime_facts_from_a_root(root):
    write(root, "/etc/cdi/nvidia.yaml", NVIDIA_CTK_YAML)
    write(root, "/var/run/cdi/tpu.json", '{"kind": "google.com/tpu", "devices": [{"name": "a"}]}')
    write(root, "/etc/cdi/broken.yaml", "kind: nvidia.com/gpu\n")
    write(root, "/var/lib/rancher/k3s/agent/etc/containerd/config.toml", K3S)
    write(root, "/etc/containerd/config.toml", "[broken\n")
    for n in ("dri/card0", "dri/card1", "nvmap"):
        write(root, "/dev/" + n)
    write(root, "/usr/lib/libcuda.so.1.1", "elf")
    os.makedirs(os.path.join(root, "lib/firmware/tegra19x"))
    write(root, "/etc/nvidia-container-runtime/host-files-for-container.d/devices.csv",
          "dev, /dev/dri/card*\ndev, /dev/nvmap\ndev, /dev/nvidia0\n")
    write(root, "/etc/nvidia-container-runtime/host-files-for-container.d/drivers.csv",
          "lib, /usr/lib/libcuda.so.1.1\ndir, /lib/firmware/tegra19x\nsym, /usr/lib/gone.so\n"
          "oops\n")
    facts = read_runtime_facts(HostRoot(root))
    assert [s.path for s in facts.cdi_specs] == ["/etc/cdi/nvidia.yaml"]   # other kinds ignored
    assert facts.gpu_spec().devices == ("0", "all")
    assert facts.csv_devices == ("/dev/dri/card0", "/dev/dri/card1", "/dev/nvmap")
    assert facts.csv_mounts == ("/usr/lib/libcuda.so.1.1", "/lib/firmware/tegra19x")
    assert facts.csv_missing == 2
    (k3s,) = facts.runtimes
    assert k3s.engine == "k3s" and facts.nvidia_runtime() is k3s
    problems = " | ".join(facts.problems)
    assert "/etc/cdi/broken.yaml: no devices list" in problems
    assert "/etc/containerd/config.toml: invalid TOML" in problems
    assert "drivers.csv:4" in problems


def test_an_oversize_spec_is_a_problem_not_a_truncated_read(root):
    write(root, "/etc/cdi/nvidia.yaml", NVIDIA_CTK_YAML + "#" * (1 << 20))
    facts = read_runtime_facts(HostRoot(root))
    assert facts.cdi_specs == ()
    assert "/etc/cdi/nvidia.yaml: over 1048576 bytes" in facts.problems


def test_links_out_of_the_root_are_not_followed(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "nvidia.yaml").write_text(NVIDIA_CTK_YAML)
    (outside / "daemon.json").write_text('{"runtimes": {"nvidia": {}}}')
    os.makedirs(os.path.join(root, "etc/docker"))
    os.symlink(str(outside), os.path.join(root, "etc/cdi"))                       # absolute
    os.symlink("../../../../../../../../" + str(outside).lstrip("/") + "/daemon.json",
               os.path.join(root, "etc/docker/daemon.json"))                     # relative
    facts = read_runtime_facts(HostRoot(root))
    assert facts.cdi_specs == () and facts.runtimes == ()


def test_cache_rereads_only_on_change(root):
    cache = RuntimeFactsCache(HostRoot(root), max_age=3600)
    assert cache.refresh(now=1.0) is True
    assert cache.current.gpu_spec() is None
    assert cache.refresh(now=2.0) is False
    write(root, "/etc/cdi/nvidia.yaml", NVIDIA_CTK_YAML)
    assert cache.refresh(now=3.0) is True
    assert cache.current.gpu_spec() is not None
    write(root, "/etc/cdi/nvidia.yaml", NVIDIA_CTK_YAML.replace("name: all", "name: allx"))
    assert cache.refresh(now=4.0) is True              # same mtime second, other size
    assert cache.refresh(now=4000.0) is True           # max_age: CSV targets re-checked


def test_deeply_nested_runtime_toml_is_walked_without_recursion():
    text = "[" + ".".join("t%d" % i for i in range(3000)) + "]\nx = 1\n" \
           "[plugins.cri.containerd.runtimes.nvidia]\nruntime_type = 'io.containerd.runc.v2'\n"
    try:
        config = parse_runtime_toml(text, "containerd", "/etc/containerd/config.toml")
    except SpecError as e:       # a TOML library that refuses the depth itself: one line
        assert "/etc/containerd/config.toml" in str(e) and "\n" not in str(e)
    else:
        assert config.nvidia_runtimes == ("nvidia",)


# --- what doctor's runtime traps read (issue 14) -------------------------------------------------

RUNTIME_FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runtime")


def runtime_fixture(name):
    with open(os.path.join(RUNTIME_FIXTURES, name)) as f:
        return f.read()


@pytest.mark.parametrize("name, engine, version, enable_cdi, systemd, nvidia, header", [
    ("containerd-1.7-default.toml", "containerd", 2, False, False, (), ""),
    ("containerd-2.0-default.toml", "containerd", 3, True, None, (), ""),
    ("k3s-containerd1.7-config.toml", "k3s", 2, None, True, ("nvidia", "nvidia-experimental"),
     "# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead."),
    ("k3s-containerd2-config.toml", "k3s", 3, None, True, ("nvidia", "nvidia-cdi"),
     "# File generated by k3s. DO NOT EDIT. Use config-v3.toml.tmpl instead."),
])
def test_containerd_config_facts(name, engine, version, enable_cdi, systemd, nvidia, header):
    rc = parse_runtime_toml(runtime_fixture(name), engine, "/x.toml")
    assert (rc.version, rc.enable_cdi, rc.systemd_cgroup, rc.nvidia_runtimes, rc.header) == (
        version, enable_cdi, systemd, nvidia, header)


def test_systemd_cgroup_is_the_default_runtimes_and_crio_cgroup_manager():
    rc = parse_runtime_toml(CONTAINERD_V2 + "  SystemdCgroup = true\n", "containerd", "/x")
    assert rc.default == "nvidia" and rc.systemd_cgroup is True
    crio = parse_runtime_toml(CRIO.replace('default_runtime = "nvidia"\n', 'default_runtime = '
                                           '"nvidia"\ncgroup_manager = "cgroupfs"\n'),
                              "cri-o", "/c")
    assert crio.systemd_cgroup is False


@pytest.mark.parametrize("name, mode", [
    ("cdi-csv-orin-jp6.yaml", "csv"), ("cdi-nvml.yaml", "nvml")])
def test_spec_mode_of_nvidia_ctk_output(name, mode):
    from edgeagent.discovery.runtimefacts import spec_mode

    spec = parse_cdi_spec(runtime_fixture(name), "/etc/cdi/nvidia.yaml")
    assert spec.kind == "nvidia.com/gpu" and spec.version == "0.5.0"
    assert spec_mode(spec) == mode
    assert spec.hook_args[0] == "nvidia-cdi-hook"


def test_spec_mode_old_layout_unknown_and_from_the_hosts_csv_list():
    from edgeagent.discovery.runtimefacts import spec_mode

    assert spec_mode(parse_cdi_spec(NVIDIA_CTK_YAML)) == "csv"
    plain = parse_cdi_spec("kind: nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits:\n"
                           "    mounts:\n    - hostPath: /opt/lib/x.so\n")
    assert plain.host_paths == ("/opt/lib/x.so",)
    assert spec_mode(plain) == "unknown" and spec_mode(plain, ["/opt/lib/x.so"]) == "csv"


def test_exec_start_flags_and_env_files():
    from edgeagent.discovery.runtimefacts import (flag_values, parse_env_assignments,
                                                     parse_exec_start, parse_flags)

    unit = runtime_fixture("k3s-agent.service") + "\t'--docker' \\\n\t'--default-runtime' " \
        "\\\n\t'nvidia' \\\n\t'--kubelet-arg=root-dir=/data/kubelet' \\\n\n"
    args = parse_exec_start(unit)
    assert args == ["agent", "--docker", "--default-runtime", "nvidia",
                    "--kubelet-arg=root-dir=/data/kubelet"]
    assert flag_values(args, "docker") == ["true"]
    assert flag_values(args, "default-runtime") == ["nvidia"]
    assert flag_values(args, "kubelet-arg") == ["root-dir=/data/kubelet"]
    env = parse_env_assignments(runtime_fixture("kubeadm-flags.env") + "# x\nBROKEN\n")
    flags = parse_flags(env["KUBELET_KUBEADM_ARGS"], "/f")
    assert flags["container-runtime-endpoint"].value == "unix:///var/run/containerd/containerd.sock"
    assert parse_flags("--root-dir /x --v=2 --fail-swap-on", "/f")["root-dir"].value == "/x"
    assert parse_flags("--fail-swap-on", "/f")["fail-swap-on"].value == "true"


def test_yaml_mapping_keeps_the_line_of_each_key():
    from edgeagent.discovery.runtimefacts import parse_yaml_mapping

    found = parse_yaml_mapping(runtime_fixture("kubelet-config-kubeadm.yaml"), "/k.yaml")
    assert found["cgroupDriver"].value == "systemd"
    assert found["cgroupDriver"].source == "/k.yaml:15"
    assert parse_yaml_mapping("# only a comment\n", "/c") == {}
    with pytest.raises(SpecError, match="not a mapping"):
        parse_yaml_mapping("- a\n", "/c")


def test_dpkg_status_btime_and_containerd_log():
    from edgeagent.discovery.runtimefacts import (containerd_log_version, dpkg_package_version,
                                                     parse_btime)

    status = ("Package: containerd\nStatus: deinstall ok config-files\nVersion: 1.6.12\n\n"
              "Package: containerd.io\nStatus: install ok installed\nVersion: 1.7.24-1\n")
    assert dpkg_package_version(status.splitlines(), ("containerd", "containerd.io")) == (
        "containerd.io", "1.7.24-1")
    assert parse_btime("cpu  1 2\nbtime 1733313600\n") == 1733313600.0
    assert parse_btime("btime soon\n") is None
    log = ('time="x" level=info msg="starting containerd" revision=a version=v1.7.23-k3s2\n'
           'time="y" level=info msg="loading plugin"\n'
           'time="z" level=info msg="starting containerd" revision=b version=v2.0.4-k3s2\n')
    assert containerd_log_version(log) == ("v2.0.4-k3s2", 3)


def test_read_cluster_facts_from_a_root(root):
    from edgeagent.discovery.runtimefacts import read_cluster_facts

    write(root, "/etc/systemd/system/k3s-agent.service", runtime_fixture("k3s-agent.service")
          + "\t'--data-dir' \\\n\t'/mnt/k3s' \\\n\n")
    write(root, "/etc/rancher/k3s/config.yaml", runtime_fixture("k3s-config.yaml"))
    write(root, "/etc/rancher/k3s/config.yaml.d/10-gpu.yaml", "default-runtime: nvidia\n")
    write(root, "/mnt/k3s/agent/etc/containerd/config-v3.toml.tmpl", "{{ template \"base\" . }}")
    write(root, "/mnt/k3s/agent/containerd/containerd.log",
          "x" * (2 << 20) + '\nmsg="starting containerd" version=v2.0.4-k3s2\n')
    write(root, "/proc/stat", "btime 1733313600\n")
    write(root, "/lib/systemd/system/nvidia-cdi-refresh.service", "[Service]\n")
    write(root, "/etc/systemd/system/cri-docker.socket", "[Socket]\n")
    write(root, "/etc/docker/daemon.json", "{")       # a runtime file: not this reader's problem
    write(root, "/var/lib/kubelet/config.yaml", "cgroupDriver: [\n")
    facts = read_cluster_facts(HostRoot(root))
    assert facts.k3s_unit == "k3s-agent" and facts.k3s_data_dir == "/mnt/k3s"
    assert facts.k3s_option("default-runtime").value == "nvidia"
    assert facts.k3s_option("default-runtime").source == \
        "/etc/rancher/k3s/config.yaml.d/10-gpu.yaml:1"
    assert facts.k3s_kubelet_args()["max-pods"].value == "60"
    assert [p for p, _ in facts.k3s_templates] == [
        "/mnt/k3s/agent/etc/containerd/config-v3.toml.tmpl"]
    assert facts.k3s_containerd_version.value == "v2.0.4-k3s2"
    assert facts.boot_time == 1733313600.0
    assert facts.cdi_refresh_unit == "/lib/systemd/system/nvidia-cdi-refresh.service"
    assert facts.cri_dockerd == "/etc/systemd/system/cri-docker.socket exists"
    assert facts.kubelet_config == {}
    assert len(facts.problems) == 1 and facts.problems[0].startswith(
        "/var/lib/kubelet/config.yaml: invalid YAML")


def test_a_fifo_for_dpkg_status_is_skipped_not_read(root):
    from edgeagent.discovery.runtimefacts import read_cluster_facts

    os.makedirs(os.path.join(root, "var/lib/dpkg"))
    os.mkfifo(os.path.join(root, "var/lib/dpkg/status"))
    facts = read_cluster_facts(HostRoot(root))
    assert facts.containerd_package is None


OUTSIDE_PIECES = ["ExecStart=", "/usr/local/bin/k3s", " \\\n", "'--docker'", '"', "'", "=",
                  "--kubelet-arg", "root-dir=/x", "\n", "#", "KUBELET_KUBEADM_ARGS=", "\t",
                  'msg="starting containerd" ', "version=v2.0.1", "btime 1", "Package: ",
                  "Version: ", "Status: install ok installed", "\x00", "\ufeff", " "]


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(OUTSIDE_PIECES), max_size=60).map("".join)
       | st.text(max_size=400))
def test_fuzzed_unit_env_log_and_status_text_parse_within_bounds(text):
    from edgeagent.discovery.runtimefacts import (containerd_log_version, dpkg_package_version,
                                                     parse_btime, parse_env_assignments,
                                                     parse_exec_start, parse_flags,
                                                     parse_yaml_mapping)

    def parse_all():
        args = parse_exec_start(text)
        env = parse_env_assignments(text)
        flags = parse_flags(text, "/f")
        try:
            mapping = parse_yaml_mapping(text, "/y")
        except SpecError as e:
            assert "\n" not in str(e)
            mapping = {}
        return (args, env, flags, mapping, containerd_log_version(text), parse_btime(text),
                dpkg_package_version(text.splitlines(), ("containerd",)))

    args, env, flags, mapping, log, btime, package = bounded(parse_all, 2.0, 16 << 20)
    assert all(isinstance(a, str) for a in args)
    assert all(isinstance(v.value, str) for v in flags.values())


TOML_PIECES = ["version = 2\n", "version = 3\n", '[plugins."io.containerd.grpc.v1.cri"]\n',
               "[plugins.'io.containerd.cri.v1.runtime'.containerd]\n", "enable_cdi = true\n",
               'default_runtime_name = "nvidia"\n',
               "[plugins.cri.containerd.runtimes.runc.options]\n",
               "SystemdCgroup = true\n", "SystemdCgroup = 1\n", "[crio.runtime]\n",
               'cgroup_manager = "systemd"\n', "version = true\n", "[", "]", "=", "\n", "'", '"',
               "# File generated by k3s\n", "a.b.c = {}\n"]


@pytest.mark.timeout(300)
@settings(max_examples=int(os.environ.get("EDGEAGENT_FUZZ_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOML_PIECES), max_size=40).map("".join) | st.text(max_size=300),
       st.sampled_from(["containerd", "k3s", "cri-o"]))
def test_fuzzed_runtime_tomls_give_typed_facts_or_one_line_errors(text, engine):
    result = bounded(lambda: parse_runtime_toml(text, engine, "/c.toml"), 2.0, 16 << 20,
                     (SpecError,))
    if isinstance(result, SpecError):
        assert str(result).startswith("/c.toml") and "\n" not in str(result)
        return
    assert result.version is None or type(result.version) is int
    assert result.enable_cdi in (None, True, False)
    assert result.systemd_cgroup in (None, True, False)
    assert "\n" not in result.header
