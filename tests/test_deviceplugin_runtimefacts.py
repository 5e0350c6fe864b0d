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
               "'", '"', "#", "\n", "- ", "  ", "? ", "| \n", "\x00", "\ufeff", "9" * 50]


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
        assert result.devices and all(isinstance(n, str) for n in result.devices)


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
