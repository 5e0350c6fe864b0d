"""Doctor's container-runtime traps (checks_runtime), each on a fake Jetson host holding the real
config files of tests/fixtures/runtime: the PASS, the trap, and the SKIP where it cannot apply."""

import os
import time

import pytest

from edgeagent.config import load_config
from edgeagent.doctor import checks_runtime as cr
from edgeagent.doctor.runner import build_context, default_check_modules
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import FIXTURES, RPI4, make_root, write

RUNTIME = os.path.join(FIXTURES, "runtime")
K3S_GEN = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
K3S_TMPL = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl"
K3S_TMPL_V3 = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl"
K3S_LOG = "/var/lib/rancher/k3s/agent/containerd/containerd.log"
K3S_UNIT = "/etc/systemd/system/k3s-agent.service"
ETC_CONTAINERD = "/etc/containerd/config.toml"
DAEMON_JSON = "/etc/docker/daemon.json"
CSV = "/etc/nvidia-container-runtime/host-files-for-container.d/l4t.csv"


def fixture(name):
    with open(os.path.join(RUNTIME, name)) as f:
        return f.read()


def log_line(version):
    return ('time="2025-03-01T10:00:00.123456789Z" level=info msg="starting containerd" '
            'revision=%s version=%s\n' % ("a" * 40, version))


@pytest.fixture
def host(tmp_path):
    return str(make_root(tmp_path))


def k3s(host, flags=(), generated="k3s-containerd1.7-config.toml", containerd="v1.7.23-k3s2"):
    unit = fixture("k3s-agent.service") + "".join("\t'%s' \\\n" % f for f in flags) + "\n"
    write(host, K3S_UNIT, unit)
    if generated:
        write(host, K3S_GEN, fixture(generated))
    if containerd:
        write(host, K3S_LOG, log_line(containerd))


def kubeadm(host, cgroup_driver="systemd", extra_args=None):
    text = fixture("kubelet-config-kubeadm.yaml")
    if cgroup_driver is None:
        text = text.replace("cgroupDriver: systemd\n", "")
    else:
        text = text.replace("cgroupDriver: systemd", "cgroupDriver: " + cgroup_driver)
    write(host, "/var/lib/kubelet/config.yaml", text)
    write(host, "/var/lib/kubelet/kubeadm-flags.env", fixture("kubeadm-flags.env"))
    if extra_args:
        write(host, "/etc/default/kubelet", 'KUBELET_EXTRA_ARGS="%s"\n' % extra_args)


def ctx(host, **overrides):
    config = load_config(None, env={}).replace(**overrides)
    return build_context(HostRoot(host), config, timeout=0.5)


def run(check, host, **overrides):
    c = ctx(host, **overrides)
    result = check(c)
    return result, c


def edits(c):
    return c.facts.get("fix.edits", [])


def test_registered_after_the_plugin_checks():
    modules = default_check_modules()
    assert modules.index("edgeagent.doctor.checks_runtime") == \
        modules.index("edgeagent.doctor.checks_plugin") + 1
    assert [f.__name__ for f in cr.CHECKS] == [
        "check_k3s_config_path", "check_k3s_default_runtime", "check_k3s_template_version",
        "check_containerd_cdi", "check_cdi_spec_mode", "check_cdi_duplicates",
        "check_cdi_refresh_race", "check_cgroup_driver", "check_docker_default_runtime",
        "check_kubelet_root_dir", "check_edgeagent_spec"]


def test_a_bare_host_skips_every_trap(host):
    c = ctx(host)
    results = [r for check in cr.CHECKS for r in [check(c)]]
    assert [r.status for r in results] == ["SKIP"] * 11, results
    assert [r.check for r in results] == [
        "runtime.k3s-config-path", "runtime.k3s-default-runtime", "runtime.k3s-template-version",
        "runtime.containerd-cdi", "runtime.cdi-spec-mode", "runtime.cdi-duplicates",
        "runtime.cdi-refresh-race", "runtime.cgroup-driver", "runtime.docker-default-runtime",
        "kubelet.root-dir", "cdi.edgeagent-spec"]
    assert edits(c) == []


# --- 1. k3s reads its own config -----------------------------------------------------------------

def test_nvidia_runtime_in_the_file_k3s_does_not_read(host):
    k3s(host, generated=None)
    write(host, K3S_GEN, fixture("k3s-containerd1.7-config.toml").split(
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia"]')[0])
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml").replace(
        'default_runtime_name = "runc"', 'default_runtime_name = "nvidia"') +
        '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
        '  runtime_type = "io.containerd.runc.v2"\n')
    r, _ = run(cr.check_k3s_config_path, host)
    assert r.status == "FAIL", r
    assert "/etc/containerd/config.toml:" in r.detail and K3S_GEN in r.detail
    assert "nvidia-container-toolkit" in r.fix and "config.toml.tmpl" in r.fix


def test_k3s_config_path_pass_and_skips(host):
    k3s(host)
    r, _ = run(cr.check_k3s_config_path, host)
    assert r.status == "PASS" and "nvidia" in r.detail and K3S_GEN + ":" in r.detail
    k3s(host, flags=["--docker"])
    assert run(cr.check_k3s_config_path, host)[0].status == "SKIP"


def test_k3s_that_never_started_is_a_warning(host):
    k3s(host, generated=None)
    r, _ = run(cr.check_k3s_config_path, host)
    assert r.status == "WARN" and "systemctl start k3s-agent" in r.fix


# --- 2. registered, not the default --------------------------------------------------------------

def test_nvidia_registered_not_default_offers_the_config_yaml_edit(host):
    k3s(host)
    write(host, "/etc/rancher/k3s/config.yaml", fixture("k3s-config.yaml"))
    r, c = run(cr.check_k3s_default_runtime, host)
    assert r.status == "WARN" and "runtimeClassName: nvidia" in r.detail
    assert "doctor --fix" in r.fix
    (edit,) = edits(c)
    assert edit.path == "/etc/rancher/k3s/config.yaml" and edit.service == "k3s-agent"
    assert edit.new == fixture("k3s-config.yaml") + 'default-runtime: "nvidia"\n'


def test_default_runtime_set_by_the_unit_flag_is_not_edited_in_config_yaml(host):
    k3s(host, flags=["--default-runtime", "runc"])
    r, c = run(cr.check_k3s_default_runtime, host)
    assert r.status == "WARN" and "ExecStart sets --default-runtime runc" in r.detail
    assert K3S_UNIT in r.fix and edits(c) == []


def test_default_runtime_pass(host):
    k3s(host, flags=["--default-runtime=nvidia"], generated=None)
    write(host, K3S_GEN, fixture("k3s-containerd1.7-config.toml").replace(
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n',
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n  default_runtime_name = "nvidia"\n'))
    r, _ = run(cr.check_k3s_default_runtime, host)
    assert r.status == "PASS" and "from default-runtime in %s ExecStart" % K3S_UNIT in r.detail


def test_default_runtime_does_not_matter_with_cdi(host):
    k3s(host)
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    r, _ = run(cr.check_k3s_default_runtime, host)
    assert r.status == "PASS" and "CDI" in r.detail


# --- 3. template version -------------------------------------------------------------------------

V2_TEMPLATE = ('{{ template "base" . }}\n\n[plugins."io.containerd.grpc.v1.cri"]\n'
               '  enable_cdi = true\n')
V3_TEMPLATE = ("{{ template \"base\" . }}\n\n[plugins.'io.containerd.cri.v1.runtime']\n"
               "  enable_cdi = true\n")


def test_v2_template_on_containerd_2_fails(host):
    k3s(host, generated="k3s-containerd2-config.toml", containerd="v2.0.4-k3s2")
    write(host, K3S_TMPL, "version = 2\n" + V2_TEMPLATE)
    r, _ = run(cr.check_k3s_template_version, host)
    assert r.status == "FAIL", r
    assert "containerd 2.x" in r.detail and K3S_LOG in r.detail and K3S_TMPL + ":1" in r.detail
    assert "config-v3.toml.tmpl" in r.fix and "sudo mv %s" % K3S_TMPL in r.fix


def test_v3_template_beside_the_old_one_passes(host):
    k3s(host, generated="k3s-containerd2-config.toml", containerd="v2.0.4-k3s2")
    write(host, K3S_TMPL, "version = 2\n" + V2_TEMPLATE)
    write(host, K3S_TMPL_V3, V3_TEMPLATE)
    r, _ = run(cr.check_k3s_template_version, host)
    assert r.status == "PASS" and K3S_TMPL_V3 in r.detail


def test_v3_template_on_containerd_1_7_fails_and_unknown_containerd_skips(host):
    k3s(host)
    write(host, K3S_TMPL, V3_TEMPLATE)
    r, _ = run(cr.check_k3s_template_version, host)
    assert r.status == "FAIL" and "version 3 template" in r.detail
    os.remove(os.path.join(host, K3S_LOG.lstrip("/")))
    r, _ = run(cr.check_k3s_template_version, host)
    assert r.status == "SKIP" and "cannot tell" in r.detail


def test_containerd_2_known_from_the_generated_header_without_a_log(host):
    k3s(host, generated="k3s-containerd2-config.toml", containerd=None)
    write(host, K3S_TMPL, V2_TEMPLATE)
    r, _ = run(cr.check_k3s_template_version, host)
    assert r.status == "FAIL" and "version 3 config" in r.detail


# --- 4. containerd CDI ---------------------------------------------------------------------------

def dpkg(host, package, version):
    write(host, "/var/lib/dpkg/status",
          "Package: adduser\nStatus: install ok installed\nVersion: 3.118ubuntu2\n\n"
          "Package: %s\nStatus: install ok installed\nPriority: optional\nVersion: %s\n"
          "Description: daemon\n to run containers\n\n" % (package, version))


def test_containerd_1_7_without_enable_cdi_offers_the_edit(host):
    dpkg(host, "containerd", "1.7.12-0ubuntu2~22.04.1")
    kubeadm(host)
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    r, c = run(cr.check_containerd_cdi, host)
    assert r.status == "FAIL" and "enable_cdi = false in %s:" % ETC_CONTAINERD in r.detail
    (edit,) = edits(c)
    assert edit.service == "containerd"
    assert "-    enable_cdi = false\n+    enable_cdi = true\n" in edit.diff()


def test_dra_mode_needs_enable_cdi_without_any_nvidia_spec(host):
    # DRA hands containers the agent's own CDI IDs: containerd must resolve CDI even where no
    # nvidia-ctk spec exists, and no such spec is asked for.
    dpkg(host, "containerd", "1.7.12-0ubuntu2~22.04.1")
    kubeadm(host)
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))
    r, c = run(cr.check_containerd_cdi, host, gpu_mode="dra")
    assert r.status == "FAIL" and "enable_cdi = false in %s:" % ETC_CONTAINERD in r.detail
    assert len(edits(c)) == 1
    r, _ = run(cr.check_containerd_cdi, host)
    assert r.status == "SKIP"
    r, _ = run(cr.check_cdi_spec_mode, host, gpu_mode="dra")
    assert r.status == "SKIP" and "agent's own specs" in r.detail


def test_containerd_2_has_cdi_on(host):
    dpkg(host, "containerd.io", "2.0.2-1")
    kubeadm(host)
    write(host, ETC_CONTAINERD, fixture("containerd-2.0-default.toml"))
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    r, _ = run(cr.check_containerd_cdi, host)
    assert r.status == "PASS" and "enable_cdi = true" in r.detail


def test_k3s_containerd_1_7_cdi_fix_is_a_template(host):
    k3s(host)
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    r, c = run(cr.check_containerd_cdi, host)
    assert r.status == "FAIL" and "containerd 1.x" in r.detail
    assert "config.toml.tmpl" in r.fix and edits(c) == []


def test_containerd_cdi_skips_without_cdi(host):
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))
    r, _ = run(cr.check_containerd_cdi, host)
    assert r.status == "SKIP" and "not used" in r.detail


# --- 5. spec mode --------------------------------------------------------------------------------

def test_nvml_spec_on_a_jetson_fails(host):
    write(host, "/var/run/cdi/nvidia.yaml", fixture("cdi-nvml.yaml"))
    r, _ = run(cr.check_cdi_spec_mode, host)
    assert r.status == "FAIL" and "nvml mode" in r.detail and "/dev/nvidia-uvm" in r.detail
    assert r.fix == "sudo nvidia-ctk cdi generate --mode=csv --output=/var/run/cdi/nvidia.yaml"


@pytest.mark.parametrize("name", ["cdi-csv-orin-jp6.yaml", None])
def test_csv_specs_pass(host, name):
    from tests.test_deviceplugin_runtimefacts import NVIDIA_CTK_YAML

    write(host, "/etc/cdi/nvidia.yaml", fixture(name) if name else NVIDIA_CTK_YAML)
    r, _ = run(cr.check_cdi_spec_mode, host)
    assert r.status == "PASS" and "csv mode: /etc/cdi/nvidia.yaml" == r.detail


def test_a_spec_made_from_this_hosts_csv_files_is_csv_mode(host):
    write(host, CSV, "lib, /usr/lib/aarch64-linux-gnu/libfoo.so\n")
    write(host, "/usr/lib/aarch64-linux-gnu/libfoo.so")
    write(host, "/etc/cdi/x.yaml", "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: "
          "all\ncontainerEdits:\n  mounts:\n  - hostPath: /usr/lib/aarch64-linux-gnu/libfoo.so\n"
          "    containerPath: /usr/lib/aarch64-linux-gnu/libfoo.so\n")
    assert run(cr.check_cdi_spec_mode, host)[0].status == "PASS"


def test_no_spec_with_the_cdi_strategy_fails(host):
    r, _ = run(cr.check_cdi_spec_mode, host, **{"device_plugin.device_list_strategy": "cdi"})
    assert r.status == "FAIL" and "--mode=csv" in r.fix


# --- 6. duplicates -------------------------------------------------------------------------------

def test_same_name_in_one_directory_fails(host):
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    write(host, "/etc/cdi/nvidia-old.json", '{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", '
          '"devices": [{"name": "0", "containerEdits": {}}]}')
    r, _ = run(cr.check_cdi_duplicates, host)
    assert r.status == "FAIL" and "nvidia.com/gpu=0" in r.detail and "drops both" in r.detail


def test_same_name_across_directories_warns_that_var_run_wins(host):
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    write(host, "/var/run/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    r, _ = run(cr.check_cdi_duplicates, host)
    assert r.status == "WARN" and "/etc/cdi/nvidia.yaml is ignored" in r.detail
    assert r.fix.endswith("sudo rm /etc/cdi/nvidia.yaml")


def test_one_spec_passes(host):
    write(host, "/etc/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    assert run(cr.check_cdi_duplicates, host)[0].status == "PASS"


# --- 7. refresh race -----------------------------------------------------------------------------

def refresh_host(host, booted_ago=3600.0):
    write(host, "/lib/systemd/system/nvidia-cdi-refresh.service", "[Service]\nType=oneshot\n")
    write(host, "/usr/bin/nvidia-smi", "#!/bin/sh\n", mode=0o755)
    write(host, "/proc/stat", "cpu  1 2 3 4\nbtime %d\nprocesses 10\n"
          % int(time.time() - booted_ago))


def test_refresh_spec_missing_after_boot_fails(host):
    refresh_host(host)
    r, _ = run(cr.check_cdi_refresh_race, host)
    assert r.status == "FAIL" and "/var/run/cdi/nvidia.yaml is missing" in r.detail
    assert "driver's nodes (/dev/nvhost-" in r.detail and "restart nvidia-cdi-refresh" in r.fix


def test_refresh_spec_empty_or_written_before_the_driver_fails(host):
    refresh_host(host)
    spec = write(host, "/var/run/cdi/nvidia.yaml", "")
    r, _ = run(cr.check_cdi_refresh_race, host)
    assert r.status == "FAIL" and "is empty" in r.detail
    write(host, "/var/run/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    node = os.path.join(host, "dev/nvhost-ctrl-gpu")
    os.utime(spec, (time.time() - 600, time.time() - 600))
    os.utime(node, (time.time() - 60, time.time() - 60))
    r, _ = run(cr.check_cdi_refresh_race, host)
    assert r.status == "FAIL" and "before the GPU's device node appeared" in r.detail
    os.utime(spec, (time.time() - 7200, time.time() - 7200))
    r, _ = run(cr.check_cdi_refresh_race, host)
    assert r.status == "FAIL" and "before this boot" in r.detail


def test_refresh_spec_written_after_the_driver_passes(host):
    refresh_host(host)
    node = os.path.join(host, "dev/nvhost-ctrl-gpu")
    os.utime(node, (time.time() - 3000, time.time() - 3000))
    write(host, "/var/run/cdi/nvidia.yaml", fixture("cdi-csv-orin-jp6.yaml"))
    assert run(cr.check_cdi_refresh_race, host)[0].status == "PASS"


def test_refresh_output_path_from_its_env_file(host):
    refresh_host(host)
    write(host, "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env",
          "# comment\nNVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/etc/cdi/nvidia.yaml\n")
    r, _ = run(cr.check_cdi_refresh_race, host)
    assert r.status == "FAIL" and r.detail.startswith("/etc/cdi/nvidia.yaml is missing")


@pytest.mark.parametrize("how, words", [
    ("no-unit", "not installed"), ("just-booted", "may still be running"),
    ("no-smi", "never runs here")])
def test_refresh_race_skips(host, how, words):
    refresh_host(host, booted_ago=30.0 if how == "just-booted" else 3600.0)
    if how == "no-unit":
        os.remove(os.path.join(host, "lib/systemd/system/nvidia-cdi-refresh.service"))
    if how == "no-smi":
        os.remove(os.path.join(host, "usr/bin/nvidia-smi"))
    r, _ = run(cr.check_cdi_refresh_race, host)
    assert r.status == "SKIP" and words in r.detail


# --- 8. cgroup driver ----------------------------------------------------------------------------

def test_kubeadm_systemd_vs_containerd_default_offers_the_edit(host):
    kubeadm(host)
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))
    r, c = run(cr.check_cgroup_driver, host)
    assert r.status == "FAIL" and "/var/lib/kubelet/config.yaml:" in r.detail
    assert "SystemdCgroup = false in %s:" % ETC_CONTAINERD in r.detail
    (edit,) = edits(c)
    assert "-            SystemdCgroup = false\n+            SystemdCgroup = true\n" in edit.diff()


def test_containerd_2_default_has_no_systemd_cgroup_line_so_one_is_added(host):
    kubeadm(host)
    write(host, ETC_CONTAINERD, fixture("containerd-2.0-default.toml"))
    r, c = run(cr.check_cgroup_driver, host)
    assert r.status == "FAIL"
    (edit,) = edits(c)
    assert "             ShimCgroup = ''\n+            SystemdCgroup = true\n" not in edit.diff()
    assert "+            SystemdCgroup = true\n" in edit.diff()


def test_cgroup_driver_agrees(host):
    kubeadm(host, cgroup_driver=None)            # the kubelet's default: cgroupfs
    write(host, ETC_CONTAINERD, fixture("containerd-1.7-default.toml"))
    r, _ = run(cr.check_cgroup_driver, host)
    assert r.status == "PASS" and "cgroupfs" in r.detail


def test_k3s_cgroup_driver_kubelet_arg_against_its_config(host):
    k3s(host)
    assert run(cr.check_cgroup_driver, host)[0].status == "PASS"
    k3s(host, flags=["--kubelet-arg", "cgroup-driver=cgroupfs"])
    r, _ = run(cr.check_cgroup_driver, host)
    assert r.status == "FAIL" and "cgroup-driver" in r.fix


# --- 9. Docker -----------------------------------------------------------------------------------

def test_k3s_docker_with_the_jetpack_daemon_json_offers_the_default(host):
    k3s(host, flags=["--docker"], generated=None)
    write(host, DAEMON_JSON, fixture("docker-daemon-jetpack.json"))
    r, c = run(cr.check_docker_default_runtime, host)
    assert r.status == "FAIL" and "k3s --docker" in r.detail and "plain runc" in r.detail
    (edit,) = edits(c)
    assert edit.service == "docker" and edit.new.startswith(
        '{\n    "default-runtime": "nvidia",\n    "runtimes": {')


def test_cri_dockerd_with_nvidia_default_passes(host):
    kubeadm(host)
    write(host, "/var/lib/kubelet/kubeadm-flags.env", 'KUBELET_KUBEADM_ARGS="--container-'
          'runtime-endpoint=unix:///var/run/cri-dockerd.sock"\n')
    write(host, DAEMON_JSON, fixture("docker-daemon-nvidia-ctk-default.json"))
    r, _ = run(cr.check_docker_default_runtime, host)
    assert r.status == "PASS" and "cri-dockerd" in r.detail


def test_docker_configured_but_the_cluster_runs_containerd(host):
    k3s(host, generated=None)
    write(host, K3S_GEN, fixture("k3s-containerd1.7-config.toml").split(
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia"]')[0])
    write(host, DAEMON_JSON, fixture("docker-daemon-nvidia-ctk-default.json"))
    r, _ = run(cr.check_docker_default_runtime, host)
    assert r.status == "WARN" and "does not reach pods" in r.detail


# --- 10. root dir --------------------------------------------------------------------------------

def test_kubelet_root_dir_differs_offers_the_edgeagent_config_edit(host):
    kubeadm(host, extra_args="--root-dir=/data/kubelet --v=2")
    r, c = run(cr.check_kubelet_root_dir, host)
    assert r.status == "FAIL" and "/data/kubelet/device-plugins" in r.detail
    assert "--root-dir in /etc/default/kubelet" in r.detail
    (edit,) = edits(c)
    assert edit.create and edit.path == "/etc/edgeagent/config.toml"
    assert edit.new.strip() == '[device_plugin]\n  directory = "/data/kubelet/device-plugins"'


def test_k3s_root_dir_from_config_yaml_and_pass(host):
    k3s(host)
    assert run(cr.check_kubelet_root_dir, host)[0].status == "PASS"
    write(host, "/etc/rancher/k3s/config.yaml", fixture("k3s-config.yaml") +
          '  - "root-dir=/mnt/ssd/kubelet"\n')
    r, _ = run(cr.check_kubelet_root_dir, host)
    assert r.status == "FAIL" and "/etc/rancher/k3s/config.yaml:" in r.detail
    r, _ = run(cr.check_kubelet_root_dir, host,
               **{"device_plugin.directory": "/mnt/ssd/kubelet/device-plugins"})
    assert r.status == "PASS"


def test_kubeadm_containerd_without_a_config_file_runs_on_its_defaults(host):
    kubeadm(host)
    r, c = run(cr.check_cgroup_driver, host)
    assert r.status == "FAIL" and "no /etc/containerd/config.toml" in r.detail
    assert "containerd config default" in r.fix and edits(c) == []
    kubeadm(host, cgroup_driver="cgroupfs")
    assert run(cr.check_cgroup_driver, host)[0].status == "PASS"


def test_default_runtime_set_in_a_drop_in_is_edited_there(host):
    k3s(host)
    write(host, "/etc/rancher/k3s/config.yaml", fixture("k3s-config.yaml"))
    write(host, "/etc/rancher/k3s/config.yaml.d/50-gpu.yaml", "default-runtime: runc\n")
    r, c = run(cr.check_k3s_default_runtime, host)
    assert r.status == "WARN"
    (edit,) = edits(c)
    assert edit.path == "/etc/rancher/k3s/config.yaml.d/50-gpu.yaml"
    assert edit.new == 'default-runtime: "nvidia"\n'


def test_docker_check_skips_without_a_gpu(tmp_path):
    host = str(make_root(tmp_path, dtb=RPI4, release=None, dev=()))
    k3s(host, flags=["--docker"], generated=None)
    write(host, DAEMON_JSON, fixture("docker-daemon-jetpack.json"))
    r, _ = run(cr.check_docker_default_runtime, host)
    assert r.status == "SKIP" and "GPU" in r.detail
