"""Doctor checks of the container-runtime traps Jetson fleets under k3s and kubeadm keep hitting
(issue 14): each says which file and line (or value) it read, and how to fix it. Fixes that are
one value in a config file are also offered to ``doctor --fix`` (``ctx.facts["fix.edits"]``).

Reads go through discovery/runtimefacts (the host-reading layer); the decisions are small pure
functions of what it returns, so the tests drive them with real config files.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult, DoctorContext

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.discovery.runtimefacts import ClusterFacts, RuntimeConfig, RuntimeFacts
    from edgeagent.doctor.fix import FileEdit

K3S_CONFIG_PATH = "runtime.k3s-config-path"
K3S_DEFAULT_RUNTIME = "runtime.k3s-default-runtime"
K3S_TEMPLATE_VERSION = "runtime.k3s-template-version"
CONTAINERD_CDI = "runtime.containerd-cdi"
CDI_SPEC_MODE = "runtime.cdi-spec-mode"
CDI_DUPLICATES = "runtime.cdi-duplicates"
CDI_REFRESH_RACE = "runtime.cdi-refresh-race"
EDGEAGENT_SPEC = "cdi.edgeagent-spec"
CGROUP_DRIVER = "runtime.cgroup-driver"
DOCKER_DEFAULT_RUNTIME = "runtime.docker-default-runtime"
KUBELET_ROOT_DIR = "kubelet.root-dir"

ETC_CONTAINERD = "/etc/containerd/config.toml"
# nvidia-cdi-refresh runs after every boot; give it this long before calling a missing spec a
# race (its unit restarts on failure every second, at most 5 times in 10 s).
BOOT_GRACE_SECONDS = 120.0
NVIDIA_SMI = ("/usr/bin/nvidia-smi", "/usr/sbin/nvidia-smi")
FIX_HINT = "`sudo edgeagent doctor --fix` makes this edit"


# --- shared facts --------------------------------------------------------------------------------

def runtime_facts(ctx: DoctorContext) -> "RuntimeFacts":
    if "runtime.facts" not in ctx.facts:
        from edgeagent.discovery.runtimefacts import read_runtime_facts

        ctx.facts["runtime.facts"] = read_runtime_facts(ctx.root)
    return ctx.facts["runtime.facts"]


def cluster_facts(ctx: DoctorContext) -> "ClusterFacts":
    if "runtime.cluster" not in ctx.facts:
        from edgeagent.discovery.runtimefacts import read_cluster_facts

        ctx.facts["runtime.cluster"] = read_cluster_facts(ctx.root)
    return ctx.facts["runtime.cluster"]


def _gpu(ctx: DoctorContext):  # -> Optional[Gpu]
    gpu = getattr(ctx.inventory, "gpu", None)
    return gpu if gpu is not None and gpu.is_nvidia and gpu.usable else None


def _offer(ctx: DoctorContext, edit: "FileEdit") -> str:
    ctx.facts.setdefault("fix.edits", []).append(edit)
    return FIX_HINT


def line_of(ctx: DoctorContext, path: str, pattern: str) -> str:
    """``path:N`` of the first line matching ``pattern`` (``path`` when none or unreadable)."""
    try:
        text = ctx.root.read_text(path)
    except (OSError, ValueError):
        return path
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(pattern, line) and not line.lstrip().startswith("#"):
            return "%s:%d" % (path, n)
    return path


def _read(ctx: DoctorContext, path: str) -> Optional[str]:
    """The whole text of a config file; None when unreadable, not UTF-8 or over 1 MiB (an edit
    planned from a cut-off or mis-decoded text would lose the rest)."""
    from edgeagent.discovery.runtimefacts import MAX_FILE_BYTES

    try:
        data = ctx.root.read_bytes(path, MAX_FILE_BYTES + 1)
    except (OSError, ValueError):
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:   # an edit would rewrite the bytes it cannot decode
        return None


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def k3s_uses_docker(cluster: "ClusterFacts") -> bool:
    setting = cluster.k3s_option("docker")
    return setting is not None and _truthy(setting.value)


def k3s_external_runtime(cluster: "ClusterFacts") -> Optional[str]:
    setting = cluster.k3s_option("container-runtime-endpoint")
    return str(setting.value) if setting is not None and setting.value else None


def k3s_configs(ctx: DoctorContext) -> List["RuntimeConfig"]:
    """The containerd configs k3s generated under its data dir (config.toml: version 2 with
    containerd 1.7, version 3 with containerd 2)."""
    from edgeagent.discovery.runtimefacts import SpecError, parse_runtime_toml

    cluster = cluster_facts(ctx)
    directory = cluster.k3s_data_dir + "/agent/etc/containerd/"
    found = [r for r in runtime_facts(ctx).runtimes if r.path.startswith(directory)
             and not r.path.endswith(".tmpl")]
    if not found and cluster.k3s_data_dir != "/var/lib/rancher/k3s":
        for path in ctx.root.glob(directory + "config*.toml"):   # a --data-dir of its own
            text = _read(ctx, path)
            try:
                found.append(parse_runtime_toml(text or "", "k3s", path))
            except SpecError:
                continue
    return found


def k3s_config_in_use(ctx: DoctorContext) -> Optional["RuntimeConfig"]:
    # k3s writes config.toml whichever template it rendered (version 3 with containerd 2).
    found = k3s_configs(ctx)
    main = [r for r in found if r.path.endswith("/config.toml")]
    return (main or found or [None])[0]


def _k3s_service(ctx: DoctorContext) -> str:
    return cluster_facts(ctx).k3s_unit or "k3s"


def _has_k3s(ctx: DoctorContext) -> bool:
    return cluster_facts(ctx).k3s_unit is not None or bool(k3s_configs(ctx))


def _etc_containerd(ctx: DoctorContext) -> Optional["RuntimeConfig"]:
    return next((r for r in runtime_facts(ctx).runtimes if r.path == ETC_CONTAINERD), None)


def problem_line(ctx: DoctorContext, path: str) -> Optional[str]:
    facts = runtime_facts(ctx)
    return next((p for p in facts.problems + cluster_facts(ctx).problems if p.startswith(path)),
                None)


def _uses_cdi(ctx: DoctorContext) -> Tuple[bool, str]:
    """Whether the device plugin hands the GPU out through a CDI spec for nvidia.com/gpu."""
    if runtime_facts(ctx).gpu_spec() is not None:
        return True, "%s exists" % runtime_facts(ctx).gpu_spec().path
    strategy = ctx.config.options.device_plugin.device_list_strategy
    return strategy == "cdi", "device_list_strategy = %s" % strategy


def _runtime_needs_cdi(ctx: DoctorContext) -> Tuple[bool, str]:
    """Whether the runtime must resolve CDI devices: the device plugin's cdi strategy, or DRA
    (NodePrepareResources answers the agent's CDI device IDs)."""
    if ctx.config.options.gpu_mode == "dra":
        return True, "gpu_mode = dra: prepared claims are CDI device IDs"
    return _uses_cdi(ctx)


# --- 1. k3s reads its own containerd config ------------------------------------------------------

def check_k3s_config_path(ctx: DoctorContext) -> CheckResult:
    cluster = cluster_facts(ctx)
    if not _has_k3s(ctx):
        return CheckResult(K3S_CONFIG_PATH, SKIP, "no k3s on this node")
    if k3s_uses_docker(cluster):
        return CheckResult(K3S_CONFIG_PATH, SKIP, "k3s runs pods through Docker (--docker)")
    external = k3s_external_runtime(cluster)
    if external:
        return CheckResult(K3S_CONFIG_PATH, SKIP, "k3s uses the runtime at %s "
                           "(container-runtime-endpoint), not its own containerd" % external)
    k3s = k3s_config_in_use(ctx)
    etc = _etc_containerd(ctx)
    etc_nvidia = etc is not None and (bool(etc.nvidia_runtimes) or etc.enable_cdi is True)
    where = cluster.k3s_data_dir + "/agent/etc/containerd/"
    if k3s is None:
        problem = problem_line(ctx, where)
        if problem:
            return CheckResult(K3S_CONFIG_PATH, FAIL, problem,
                               "fix the template it was generated from and restart %s"
                               % _k3s_service(ctx))
        return CheckResult(K3S_CONFIG_PATH, WARN, "k3s has generated no containerd config in "
                           "%s yet" % where, "start it: sudo systemctl start %s"
                           % _k3s_service(ctx))
    if etc_nvidia and not k3s.nvidia_runtimes:
        evidence = line_of(ctx, ETC_CONTAINERD, r"nvidia|enable_cdi")
        return CheckResult(
            K3S_CONFIG_PATH, FAIL, "the NVIDIA runtime is configured in %s, which k3s never "
            "reads: k3s runs its own containerd from %s, which registers no NVIDIA runtime"
            % (evidence, k3s.path),
            "k3s adds the nvidia runtime to its own config when it finds nvidia-container-runtime "
            "at start: install nvidia-container-toolkit and sudo systemctl restart %s; put other "
            "containerd settings in %s (config-v3.toml.tmpl for containerd 2), never in %s"
            % (_k3s_service(ctx), where + "config.toml.tmpl", ETC_CONTAINERD))
    if k3s.nvidia_runtimes:
        return CheckResult(K3S_CONFIG_PATH, PASS, "k3s's containerd reads %s, which registers "
                           "%s" % (line_of(ctx, k3s.path, r"runtimes\.[\"']?nvidia"),
                                   ", ".join(k3s.nvidia_runtimes)))
    return CheckResult(K3S_CONFIG_PATH, PASS, "k3s's containerd reads %s (no NVIDIA runtime "
                       "configured elsewhere either)" % k3s.path)


# --- 2. the nvidia runtime is registered, not the default ----------------------------------------

def check_k3s_default_runtime(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import K3S_CONFIG

    cluster = cluster_facts(ctx)
    if not _has_k3s(ctx):
        return CheckResult(K3S_DEFAULT_RUNTIME, SKIP, "no k3s on this node")
    if _gpu(ctx) is None:
        return CheckResult(K3S_DEFAULT_RUNTIME, SKIP, "no usable NVIDIA GPU on this host")
    if k3s_uses_docker(cluster) or k3s_external_runtime(cluster):
        return CheckResult(K3S_DEFAULT_RUNTIME, SKIP, "k3s does not run its own containerd")
    k3s = k3s_config_in_use(ctx)
    if k3s is None or not k3s.nvidia_runtimes:
        return CheckResult(K3S_DEFAULT_RUNTIME, SKIP, "k3s registered no NVIDIA runtime (see "
                           "%s)" % K3S_CONFIG_PATH)
    flag = cluster.k3s_option("default-runtime")
    if k3s.nvidia_default:
        return CheckResult(K3S_DEFAULT_RUNTIME, PASS, "default_runtime_name = %r in %s%s" % (
            k3s.default, k3s.path, " (from default-runtime in %s)" % flag.source if flag else ""))
    uses_cdi, why = _runtime_needs_cdi(ctx)
    if uses_cdi:
        return CheckResult(K3S_DEFAULT_RUNTIME, PASS, "%s is registered, not the default; not "
                           "needed: the GPU reaches pods through CDI (%s)"
                           % (k3s.nvidia_runtimes[0], why))
    detail = ("k3s registers %s (RuntimeClass %s) in %s, but the default runtime is %r: pods "
              "without runtimeClassName: %s get no GPU libraries"
              % (", ".join(k3s.nvidia_runtimes), k3s.nvidia_runtimes[0], k3s.path,
                 k3s.default or "runc", k3s.nvidia_runtimes[0]))
    manual = ("set default-runtime: nvidia in %s and sudo systemctl restart %s, or give GPU "
              "pods runtimeClassName: nvidia" % (
                  flag.source.rsplit(":", 1)[0] if flag is not None else K3S_CONFIG,
                  _k3s_service(ctx)))
    if flag is not None and flag.source.endswith("ExecStart"):
        return CheckResult(K3S_DEFAULT_RUNTIME, WARN, detail + "; %s sets --default-runtime %s"
                           % (flag.source, flag.value),
                           "change --default-runtime to nvidia in %s, then sudo systemctl "
                           "daemon-reload && sudo systemctl restart %s" % (
                               cluster.k3s_unit_path, _k3s_service(ctx)))
    # k3s merges config.yaml.d/*.yaml over config.yaml: edit the file the value comes from.
    target = flag.source.rsplit(":", 1)[0] if flag is not None else K3S_CONFIG
    hint = _plan_yaml(ctx, K3S_DEFAULT_RUNTIME, target, "default-runtime", "nvidia",
                      _k3s_service(ctx), "make nvidia k3s's default runtime")
    return CheckResult(K3S_DEFAULT_RUNTIME, WARN, detail,
                       manual + ("; " + hint if hint else ""))


# --- 3. containerd 2 (k3s 1.31+) reads version 3 templates ---------------------------------------

_VERSION_LINE = re.compile(r"^\s*version\s*=\s*(\d+)", re.M)


def template_version(text: str) -> Optional[int]:
    """The config version a k3s template declares, or implies by its CRI table names."""
    m = _VERSION_LINE.search(text)
    if m:
        return int(m.group(1))
    if "io.containerd.cri.v1." in text:
        return 3
    if "io.containerd.grpc.v1.cri" in text:
        return 2
    return None


def k3s_containerd_major(ctx: DoctorContext) -> Tuple[Optional[int], str]:
    """The major version of k3s's embedded containerd and the evidence: the version its log
    last started with, else the layout of the config k3s generated (its built-in v3 template
    is used only with containerd 2)."""
    cluster = cluster_facts(ctx)
    logged = cluster.k3s_containerd_version
    if logged is not None:
        m = re.match(r"v?(\d+)\.", str(logged.value))
        if m:
            return int(m.group(1)), "%s says containerd %s" % (logged.source, logged.value)
    for rc in k3s_configs(ctx):
        if rc.version == 3 or "config-v3.toml.tmpl" in rc.header:
            return 2, "k3s generated a version 3 config (%s)" % rc.path
    return None, "no containerd.log and no version 3 config"


def check_k3s_template_version(ctx: DoctorContext) -> CheckResult:
    cluster = cluster_facts(ctx)
    if not _has_k3s(ctx):
        return CheckResult(K3S_TEMPLATE_VERSION, SKIP, "no k3s on this node")
    if not cluster.k3s_templates:
        return CheckResult(K3S_TEMPLATE_VERSION, SKIP, "no config.toml.tmpl: k3s uses its "
                           "built-in template")
    major, evidence = k3s_containerd_major(ctx)
    if major is None:
        return CheckResult(K3S_TEMPLATE_VERSION, SKIP, "cannot tell which containerd k3s runs "
                           "(%s)" % evidence)
    templates = dict(cluster.k3s_templates)
    v3 = next((p for p in templates if p.endswith("/config-v3.toml.tmpl")), None)
    v2 = next((p for p in templates if p.endswith("/config.toml.tmpl")), None)
    # k3s with containerd 2 renders config-v3.toml.tmpl when it exists, else config.toml.tmpl;
    # with containerd 1.7 only config.toml.tmpl (k3s pkg/agent/containerd/config.go).
    used = (v3 or v2) if major >= 2 else v2
    if used is None:
        return CheckResult(K3S_TEMPLATE_VERSION, PASS, "%s is not read by containerd %d.x "
                           "(%s)" % (", ".join(templates), major, evidence))
    want = 3 if major >= 2 else 2
    version = template_version(templates[used])
    if version is not None and version != want:
        line = line_of(ctx, used, r"^\s*version\s*=|io\.containerd\.|plugins\.")
        target = used.rsplit("/", 1)[0] + ("/config-v3.toml.tmpl" if want == 3
                                           else "/config.toml.tmpl")
        return CheckResult(
            K3S_TEMPLATE_VERSION, FAIL, "k3s runs containerd %d.x (%s), but renders its config "
            "from %s, a version %d template (%s): containerd %d.x needs version %d, and the "
            "node stops running pods" % (major, evidence, used, version, line, major, want),
            "move it aside (sudo mv %s %s.v%d) and write what you still need as %s, version %d: "
            "start from {{ template \"base\" . }} and use the %s tables; then sudo systemctl "
            "restart %s" % (used, used, version, target, want,
                            "'io.containerd.cri.v1.runtime'" if want == 3
                            else "\"io.containerd.grpc.v1.cri\"", _k3s_service(ctx)))
    return CheckResult(K3S_TEMPLATE_VERSION, PASS, "%s is a version %s template for containerd "
                       "%d.x (%s)" % (used, version if version is not None else "(unstated)",
                                      major, evidence))


# --- 4. containerd 1.7 has CDI off by default ----------------------------------------------------

def containerd_major(rc: "RuntimeConfig", package: Optional[Tuple[str, str]]
                     ) -> Tuple[Optional[int], str]:
    """The system containerd's major version and the evidence: dpkg's package version, else the
    config's layout (version 3 is containerd 2's; version 2 is read by both)."""
    if package is not None:
        m = re.match(r"(?:\d+:)?(\d+)\.(\d+)", package[1])
        if m:
            return int(m.group(1)), "dpkg: %s %s" % package
    if rc.version == 3:
        return 2, "%s is a version 3 config" % rc.path
    return None, "%s is version %s and dpkg lists no containerd package" % (rc.path, rc.version)


def check_containerd_cdi(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import CRI_TABLES

    if _gpu(ctx) is None:
        return CheckResult(CONTAINERD_CDI, SKIP, "no usable NVIDIA GPU on this host")
    uses_cdi, why = _runtime_needs_cdi(ctx)
    if not uses_cdi:
        return CheckResult(CONTAINERD_CDI, SKIP, "CDI is not used (no nvidia.com/gpu spec, %s)"
                           % why)
    cluster = cluster_facts(ctx)
    if _has_k3s(ctx) and not k3s_uses_docker(cluster) and not k3s_external_runtime(cluster):
        rc = k3s_config_in_use(ctx)
    else:
        rc = _etc_containerd(ctx)
    if rc is None:
        return CheckResult(CONTAINERD_CDI, SKIP, "no containerd config in use")
    if rc.engine == "k3s":
        major, evidence = k3s_containerd_major(ctx)
    else:
        major, evidence = containerd_major(rc, cluster.containerd_package)
    table = CRI_TABLES.get(rc.version or 2, CRI_TABLES[2])
    if rc.enable_cdi is True:
        return CheckResult(CONTAINERD_CDI, PASS, "enable_cdi = true in %s" % line_of(
            ctx, rc.path, r"enable_cdi"))
    if rc.enable_cdi is False:
        detail = "enable_cdi = false in %s: containerd ignores CDI devices (%s)" % (
            line_of(ctx, rc.path, r"enable_cdi"), why)
    elif major is not None and major >= 2:
        return CheckResult(CONTAINERD_CDI, PASS, "containerd 2.x has CDI on by default (%s)"
                           % evidence)
    elif major is None:
        return CheckResult(CONTAINERD_CDI, WARN, "%s does not set enable_cdi and the containerd "
                           "version is unknown (%s): 1.7 has CDI off by default" % (
                               rc.path, evidence),
                           "set enable_cdi = true under [plugins.\"%s\"] in %s" % (table,
                                                                                 rc.path))
    else:
        detail = ("containerd %s has CDI off unless enable_cdi = true, and %s does not set it "
                  "(%s): pods get no GPU from the CDI spec (%s)" % (
                      "1.x", rc.path, evidence, why))
    if rc.engine == "k3s":
        return CheckResult(CONTAINERD_CDI, FAIL, detail,
                           "k3s regenerates %s on every start: copy it to config.toml.tmpl "
                           "beside it, add enable_cdi = true and cdi_spec_dirs = [\"/etc/cdi\", "
                           "\"/var/run/cdi\"] under [plugins.\"%s\"], and sudo systemctl restart "
                           "%s" % (rc.path, table, _k3s_service(ctx)))
    hint = _plan_toml(ctx, CONTAINERD_CDI, rc.path, ("plugins", table), "enable_cdi", True,
                      "containerd", "switch CDI on in containerd")
    return CheckResult(CONTAINERD_CDI, FAIL, detail,
                       "set enable_cdi = true under [plugins.\"%s\"] in %s and sudo systemctl "
                       "restart containerd%s" % (table, rc.path, "; " + hint if hint else ""))


# --- 5. the spec was generated in nvml mode ------------------------------------------------------

def check_cdi_spec_mode(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import spec_mode

    if _gpu(ctx) is None:
        return CheckResult(CDI_SPEC_MODE, SKIP, "no usable NVIDIA GPU on this host")
    facts = runtime_facts(ctx)
    if not facts.cdi_specs:
        if ctx.config.options.gpu_mode == "dra":
            return CheckResult(CDI_SPEC_MODE, SKIP, "no nvidia-ctk spec for nvidia.com/gpu, "
                               "and none needed: with gpu_mode = dra pods get the agent's own "
                               "specs")
        uses_cdi, why = _uses_cdi(ctx)
        own = facts.own_spec("edgeagent.io/gpu")
        if uses_cdi and own is not None:
            return CheckResult(CDI_SPEC_MODE, SKIP, "no nvidia-ctk spec for nvidia.com/gpu: the "
                               "cdi strategy uses the agent's own %s" % own.path)
        if uses_cdi:
            return CheckResult(CDI_SPEC_MODE, FAIL, "no CDI spec for nvidia.com/gpu in /etc/cdi "
                               "or /var/run/cdi, but %s" % why,
                               "sudo nvidia-ctk cdi generate --mode=csv "
                               "--output=/etc/cdi/nvidia.yaml")
        return CheckResult(CDI_SPEC_MODE, SKIP, "no CDI spec for nvidia.com/gpu")
    listed = facts.csv_devices + facts.csv_mounts
    modes = [(s, spec_mode(s, listed)) for s in facts.cdi_specs]
    nvml = [s for s, m in modes if m == "nvml"]
    if nvml:
        s = nvml[0]
        marks = [w for w in s.device_nodes + s.host_paths if "nvidia-uvm" in w
                 or "libnvidia-ml" in w or re.search(r"libcuda\.so\.\d{3,}", w)]
        return CheckResult(
            CDI_SPEC_MODE, FAIL, "%s was generated in nvml mode (it hands out %s), which does "
            "not match a Jetson's integrated GPU: its device nodes and libraries come from "
            "L4T's CSV files" % (s.path, ", ".join(marks[:2]) or "the desktop driver's files"),
            "sudo nvidia-ctk cdi generate --mode=csv --output=%s" % s.path)
    unknown = [s.path for s, m in modes if m == "unknown"]
    csv = [s.path for s, m in modes if m == "csv"]
    if csv:
        return CheckResult(CDI_SPEC_MODE, PASS, "csv mode: %s%s" % (
            ", ".join(csv), "; %s made otherwise (no csv or nvml marks)" % ", ".join(unknown)
            if unknown else ""))
    return CheckResult(CDI_SPEC_MODE, SKIP, "%s: neither csv nor nvml mode marks (made by "
                       "another tool?)" % ", ".join(unknown))


# --- 6. one qualified device name in two specs ---------------------------------------------------

def cdi_conflicts(specs: Sequence) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """(same_dir, across_dirs): qualified names defined by more than one spec file. CDI's cache
    (container-device-interface pkg/cdi/cache.go, resolveConflict) drops both definitions when
    the specs have the same priority (the same directory), and lets /var/run/cdi win over
    /etc/cdi silently."""
    from edgeagent.discovery.runtimefacts import CDI_DIRS

    by_name: Dict[str, List[str]] = {}
    for spec in specs:
        for name in spec.devices:
            by_name.setdefault(spec.qualified(name), []).append(spec.path)
    same: Dict[str, List[str]] = {}
    across: Dict[str, List[str]] = {}
    for name, paths in by_name.items():
        if len(paths) < 2:
            continue
        dirs = [next((d for d in CDI_DIRS if p.startswith(d + "/")), "") for p in paths]
        if len(set(dirs)) < len(dirs):
            same[name] = paths
        else:
            across[name] = paths
    return same, across


def check_cdi_duplicates(ctx: DoctorContext) -> CheckResult:
    facts = runtime_facts(ctx)
    # The agent's own specs too (edgeagent.io/gpu, edgeagent.io/dla): a copy of one left in
    # /etc/cdi or a second writer would cancel or shadow its names just the same.
    specs = facts.cdi_specs + facts.own_specs
    if len(specs) < 2:
        return CheckResult(CDI_DUPLICATES, SKIP if not specs else PASS,
                           "1 spec (%s)" % specs[0].kind if specs
                           else "no CDI spec for nvidia.com/gpu")
    same, across = cdi_conflicts(specs)
    if same:
        name, paths = sorted(same.items())[0]
        return CheckResult(CDI_DUPLICATES, FAIL, "%s is defined by %s in the same directory: "
                           "the runtime drops both (\"conflicting device\"), so pods asking for "
                           "it fail%s" % (name, " and ".join(paths),
                                          " (%d names in all)" % len(same) if len(same) > 1
                                          else ""),
                           "keep one: sudo rm %s (or regenerate it with --output=%s)" % (
                               paths[0], paths[-1]))
    if across:
        name, paths = sorted(across.items())[0]
        loser = [p for p in paths if p.startswith("/etc/cdi/")]
        return CheckResult(CDI_DUPLICATES, WARN, "%s is defined by %s: the /var/run/cdi one "
                           "wins and %s is ignored for it" % (name, " and ".join(paths),
                                                              ", ".join(loser) or paths[0]),
                           "keep one, so the spec that is used is the one you edit: sudo rm %s"
                           % (loser[0] if loser else paths[0]))
    return CheckResult(CDI_DUPLICATES, PASS, "%d specs, no device name defined twice"
                       % len(specs))


# --- 6b. the agent's own spec -------------------------------------------------------------------

def spec_state(expected: Optional[bytes], actual: Optional[bytes]) -> str:
    """"ok", "missing", "stale" (differs from what the host gives now), "orphan" (the host has
    nothing for it), "absent" (neither): the agent's spec file against what it would write."""
    if expected is None:
        return "absent" if actual is None else "orphan"
    if actual is None:
        return "missing"
    return "ok" if actual == expected else "stale"


def check_edgeagent_spec(ctx: DoctorContext) -> CheckResult:
    """The agent's own CDI specs exist, parse, say what the host has now, and no other spec
    defines their names."""
    from edgeagent.cdi import spec as cdispec
    from edgeagent.cdi.component import read_cdi_facts
    from edgeagent.discovery.runtimefacts import SpecError, parse_cdi_spec

    if not ctx.config.options.writes_cdi_specs:
        return CheckResult(EDGEAGENT_SPEC, SKIP, "the device plugin is disabled and gpu_mode "
                           "is not dra: the agent writes no CDI spec")
    wanted = cdispec.build_specs(read_cdi_facts(ctx.root))
    found: List[str] = []
    for path, doc in sorted(wanted.items()):
        expected = cdispec.render(doc) if doc is not None else None
        try:
            actual: Optional[bytes] = ctx.root.read_bytes(path, 4 << 20)
        except (OSError, ValueError):
            actual = None
        state = spec_state(expected, actual)
        if state == "absent":
            continue
        if state == "missing":
            return CheckResult(EDGEAGENT_SPEC, WARN, "%s is not written: the agent writes it "
                               "within seconds of starting; pods of the cdi strategy fail "
                               "meanwhile" % path,
                               "sudo systemctl start edgeagent (journalctl -u edgeagent says "
                               "why it cannot write %s)" % cdispec.SPEC_DIR)
        try:
            parsed = parse_cdi_spec(actual.decode("utf-8", "replace") if actual else "", path)
        except SpecError as e:
            return CheckResult(EDGEAGENT_SPEC, FAIL, "%s: the runtime refuses it" % e,
                               "sudo rm %s; the agent writes it again" % path)
        if state == "orphan":
            return CheckResult(EDGEAGENT_SPEC, WARN, "%s (%s) names devices this host no longer "
                               "has" % (path, parsed.kind),
                               "the running agent removes it; if none runs: sudo rm %s" % path)
        if state == "stale":
            return CheckResult(EDGEAGENT_SPEC, WARN, "%s differs from the host's device nodes "
                               "and L4T CSV files now (a driver reload or a package upgrade); "
                               "the running agent rewrites it" % path,
                               "sudo systemctl restart edgeagent if it stays so")
        found.append("%s: %s" % (path, ", ".join(parsed.qualified(d) for d in parsed.devices)))
    if not found:
        return CheckResult(EDGEAGENT_SPEC, SKIP, "no GPU or NVDLA device node on this host: "
                           "the agent writes no CDI spec")
    facts = runtime_facts(ctx)
    same, across = cdi_conflicts(facts.cdi_specs + facts.own_specs)
    mine = {n: p for n, p in list(same.items()) + list(across.items())
            if n.split("=", 1)[0] in (cdispec.GPU_KIND, cdispec.DLA_KIND)}
    if mine:
        name, paths = sorted(mine.items())[0]
        others = [p for p in paths if p not in cdispec.SPEC_PATHS]
        return CheckResult(EDGEAGENT_SPEC, FAIL, "%s is also defined by %s: the runtime drops "
                           "or shadows the agent's definition" % (name, ", ".join(others)),
                           "sudo rm %s (only the agent writes edgeagent.io kinds)"
                           % " ".join(others))
    return CheckResult(EDGEAGENT_SPEC, PASS, "; ".join(found))


# --- 7. nvidia-cdi-refresh raced the driver at boot ----------------------------------------------

def refresh_race(output_state: str, spec_mtime: Optional[float], boot_time: Optional[float],
                 driver_mtime: Optional[float]) -> Optional[str]:
    """Why the refresh's output looks raced, or None. ``output_state`` is "missing", "empty",
    "broken" or "ok"; a spec written before this boot, or before the driver's device node was
    created, was generated without the driver."""
    if output_state in ("missing", "empty", "broken"):
        return {"missing": "is missing", "empty": "is empty",
                "broken": "lists no devices"}[output_state]
    if spec_mtime is not None and boot_time is not None and spec_mtime < boot_time:
        return "was written before this boot (%s) and not since" % _stamp(spec_mtime)
    if spec_mtime is not None and driver_mtime is not None and spec_mtime < driver_mtime:
        return "was written at %s, before the GPU's device node appeared (%s)" % (
            _stamp(spec_mtime), _stamp(driver_mtime))
    return None


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def check_cdi_refresh_race(ctx: DoctorContext) -> CheckResult:
    cluster = cluster_facts(ctx)
    if cluster.cdi_refresh_unit is None:
        return CheckResult(CDI_REFRESH_RACE, SKIP, "nvidia-cdi-refresh.service is not installed")
    gpu = _gpu(ctx)
    if gpu is None or not gpu.device_nodes:
        return CheckResult(CDI_REFRESH_RACE, SKIP, "no NVIDIA GPU device nodes on this host")
    if not any(ctx.root.exists(p) for p in NVIDIA_SMI):
        return CheckResult(CDI_REFRESH_RACE, SKIP, "%s never runs here: its ConditionPathExists "
                           "wants nvidia-smi, which this L4T does not have" %
                           cluster.cdi_refresh_unit)
    now = time.time()
    if cluster.boot_time is not None and now - cluster.boot_time < BOOT_GRACE_SECONDS:
        return CheckResult(CDI_REFRESH_RACE, SKIP, "booted %.0fs ago: nvidia-cdi-refresh may "
                           "still be running" % (now - cluster.boot_time))
    out = cluster.cdi_refresh_output
    driver_mtime = None
    for node in gpu.device_nodes:
        try:
            driver_mtime = max(driver_mtime or 0.0, ctx.root.stat(node).st_mtime)
        except OSError:
            continue
    try:
        st = ctx.root.stat(out)
    except OSError:
        state, mtime = "missing", None
    else:
        mtime = st.st_mtime
        state = "empty" if st.st_size == 0 else "ok"
        if state == "ok" and not any(s.path == out for s in runtime_facts(ctx).cdi_specs):
            state = "broken"
    why = refresh_race(state, mtime, cluster.boot_time, driver_mtime)
    boot = " (booted %s)" % _stamp(cluster.boot_time) if cluster.boot_time else ""
    if why is None:
        return CheckResult(CDI_REFRESH_RACE, PASS, "%s written %s%s, after the driver's device "
                           "nodes" % (out, _stamp(mtime or 0.0), boot))
    return CheckResult(
        CDI_REFRESH_RACE, FAIL, "%s %s%s while the driver's nodes (%s) exist and %s is installed: "
        "nvidia-cdi-refresh ran before the driver was ready, or failed" % (
            out, why, boot, gpu.device_nodes[0], cluster.cdi_refresh_unit),
        "sudo systemctl restart nvidia-cdi-refresh.service (it regenerates %s); if it recurs, "
        "order it after the driver: sudo systemctl edit nvidia-cdi-refresh.service, [Unit] "
        "After=systemd-modules-load.service" % out)


# --- 8. SystemdCgroup vs the kubelet's cgroupDriver ----------------------------------------------

def check_cgroup_driver(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import CRI_TABLES

    cluster = cluster_facts(ctx)
    k3s = _has_k3s(ctx)
    kubelet = cluster.kubelet_setting("cgroup-driver", "cgroupDriver")
    if not k3s and not cluster.kubelet_config and not cluster.kubelet_flags:
        return CheckResult(CGROUP_DRIVER, SKIP, "no kubelet configuration (k3s or kubeadm) found")
    if cluster.cri_dockerd or (k3s and k3s_uses_docker(cluster)):
        return CheckResult(CGROUP_DRIVER, SKIP, "the kubelet runs pods through Docker")
    if k3s and not k3s_external_runtime(cluster):
        rc = k3s_config_in_use(ctx)
        if kubelet is None:
            return CheckResult(CGROUP_DRIVER, PASS, "k3s sets the kubelet's cgroup driver to "
                               "match its containerd%s" % (" (SystemdCgroup = %s in %s)" % (
                                   str(rc.systemd_cgroup).lower(), rc.path)
                                   if rc is not None and rc.systemd_cgroup is not None else ""))
    else:
        rc = _etc_containerd(ctx) or next((r for r in runtime_facts(ctx).runtimes
                                           if r.engine == "cri-o"), None)
    if rc is None:
        problem = problem_line(ctx, ETC_CONTAINERD)
        if problem:
            return CheckResult(CGROUP_DRIVER, FAIL, problem, "fix the syntax of %s"
                               % ETC_CONTAINERD)
        endpoint = cluster.kubelet_flags.get("container-runtime-endpoint")
        if k3s or endpoint is None or "containerd" not in str(endpoint.value):
            return CheckResult(CGROUP_DRIVER, SKIP, "no containerd or CRI-O config to compare")
        # No config file: containerd runs on its built-in defaults, SystemdCgroup = false.
        driver = str(kubelet.value) if kubelet is not None else "cgroupfs"
        if driver == "cgroupfs":
            return CheckResult(CGROUP_DRIVER, PASS, "both use cgroupfs (no %s: containerd's "
                               "defaults)" % ETC_CONTAINERD)
        return CheckResult(CGROUP_DRIVER, FAIL, "the kubelet's cgroup driver is systemd (%s) but "
                           "containerd has no %s and its default is SystemdCgroup = false"
                           % (kubelet.source, ETC_CONTAINERD),
                           "containerd config default | sudo tee %s, set SystemdCgroup = true in "
                           "it, and sudo systemctl restart containerd" % ETC_CONTAINERD)
    driver = str(kubelet.value) if kubelet is not None else "cgroupfs"
    source = kubelet.source if kubelet is not None else "the kubelet's default (no cgroupDriver)"
    if rc.engine == "cri-o":
        runtime = "systemd" if rc.systemd_cgroup is not False else "cgroupfs"
        where = "cgroup_manager in %s" % rc.path
    else:
        runtime = "systemd" if rc.systemd_cgroup else "cgroupfs"
        where = ("SystemdCgroup = %s in %s" % (str(rc.systemd_cgroup).lower(), line_of(
            ctx, rc.path, r"SystemdCgroup")) if rc.systemd_cgroup is not None
            else "no SystemdCgroup (so false) in %s" % rc.path)
    if runtime == driver:
        return CheckResult(CGROUP_DRIVER, PASS, "both use %s (%s; cgroupDriver from %s)" % (
            driver, where, source))
    detail = ("the kubelet's cgroup driver is %s (%s) but the runtime uses %s (%s): pods fail "
              "to start or get killed" % (driver, source, runtime, where))
    if rc.engine == "k3s":
        return CheckResult(CGROUP_DRIVER, FAIL, detail, "remove the cgroup-driver kubelet-arg "
                           "(k3s then matches them) and sudo systemctl restart %s"
                           % _k3s_service(ctx))
    if rc.engine != "containerd" or rc.path != ETC_CONTAINERD:
        return CheckResult(CGROUP_DRIVER, FAIL, detail, "make them agree: set the runtime's "
                           "cgroup driver to %s in %s and restart it" % (driver, rc.path))
    table = CRI_TABLES.get(rc.version or 2, CRI_TABLES[2])
    runtime_name = rc.default or "runc"
    hint = _plan_toml(ctx, CGROUP_DRIVER, rc.path, ("plugins", table, "containerd", "runtimes",
                                                    runtime_name, "options"),
                      "SystemdCgroup", driver == "systemd", "containerd",
                      "make containerd's cgroup driver the kubelet's")
    return CheckResult(CGROUP_DRIVER, FAIL, detail,
                       "set SystemdCgroup = %s under [plugins.\"%s\".containerd.runtimes.%s."
                       "options] in %s and sudo systemctl restart containerd%s" % (
                           str(driver == "systemd").lower(), table, runtime_name, rc.path,
                           "; " + hint if hint else ""))


# --- 9. Docker's default-runtime vs the cluster's runtime ----------------------------------------

def check_docker_default_runtime(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import DOCKER_DAEMON_JSON

    cluster = cluster_facts(ctx)
    if not ctx.root.isfile(DOCKER_DAEMON_JSON):
        return CheckResult(DOCKER_DEFAULT_RUNTIME, SKIP, "%s not present" % DOCKER_DAEMON_JSON)
    if _gpu(ctx) is None:
        return CheckResult(DOCKER_DEFAULT_RUNTIME, SKIP, "no usable NVIDIA GPU on this host")
    problem = problem_line(ctx, DOCKER_DAEMON_JSON)
    docker = next((r for r in runtime_facts(ctx).runtimes if r.engine == "docker"), None)
    if docker is None:
        return CheckResult(DOCKER_DEFAULT_RUNTIME, FAIL, problem or "%s unreadable"
                           % DOCKER_DAEMON_JSON,
                           "fix the JSON in %s and sudo systemctl restart docker"
                           % DOCKER_DAEMON_JSON)
    via = None
    if _has_k3s(ctx) and k3s_uses_docker(cluster):
        via = "k3s --docker (%s)" % cluster.k3s_option("docker").source
    elif cluster.cri_dockerd:
        via = "cri-dockerd (%s)" % cluster.cri_dockerd
    default = "default-runtime %r" % docker.default if docker.default else \
        "no default-runtime (runc)"
    evidence = line_of(ctx, DOCKER_DAEMON_JSON, r'"default-runtime"') if docker.default \
        else DOCKER_DAEMON_JSON
    if via is None:
        if not _has_k3s(ctx) and not cluster.kubelet_config and not cluster.kubelet_flags:
            return CheckResult(DOCKER_DEFAULT_RUNTIME, SKIP, "no kubelet on this node: Docker "
                               "is not the cluster's runtime")
        if docker.nvidia_default:
            cluster_rt = k3s_config_in_use(ctx) if _has_k3s(ctx) else _etc_containerd(ctx)
            if (cluster_rt is None or not cluster_rt.nvidia_runtimes) and \
                    runtime_facts(ctx).gpu_spec() is None:
                return CheckResult(
                    DOCKER_DEFAULT_RUNTIME, WARN, "%s in %s, but the cluster runs pods through "
                    "containerd%s, which has no NVIDIA runtime and no CDI spec: Docker's "
                    "setting does not reach pods" % (
                        default, evidence, " (%s)" % cluster_rt.path if cluster_rt else ""),
                    "configure containerd instead (k3s: install nvidia-container-toolkit and "
                    "restart k3s; kubeadm: sudo nvidia-ctk runtime configure "
                    "--runtime=containerd --set-as-default), or join with k3s --docker / "
                    "cri-dockerd")
        return CheckResult(DOCKER_DEFAULT_RUNTIME, PASS, "%s; the cluster does not run pods "
                           "through Docker" % default)
    if docker.nvidia_default:
        return CheckResult(DOCKER_DEFAULT_RUNTIME, PASS, "%s in %s, and the cluster runs pods "
                           "through Docker via %s" % (default, evidence, via))
    detail = ("the cluster runs pods through Docker via %s, which cannot choose a runtime per "
              "pod, and %s has %s: GPU pods get plain runc" % (via, DOCKER_DAEMON_JSON, default))
    if not docker.nvidia_runtimes:
        return CheckResult(DOCKER_DEFAULT_RUNTIME, FAIL, detail + " (no NVIDIA runtime "
                           "registered)", "sudo nvidia-ctk runtime configure --runtime=docker "
                           "--set-as-default && sudo systemctl restart docker")
    hint = _plan_json(ctx, DOCKER_DEFAULT_RUNTIME, DOCKER_DAEMON_JSON, "default-runtime",
                      docker.nvidia_runtimes[0], "docker",
                      "make %s Docker's default runtime" % docker.nvidia_runtimes[0])
    return CheckResult(DOCKER_DEFAULT_RUNTIME, FAIL, detail,
                       "set \"default-runtime\": \"%s\" in %s and sudo systemctl restart docker%s"
                       % (docker.nvidia_runtimes[0], DOCKER_DAEMON_JSON,
                          "; " + hint if hint else ""))


# --- 10. the kubelet's --root-dir vs the plugin directory ----------------------------------------

def check_kubelet_root_dir(ctx: DoctorContext) -> CheckResult:
    from edgeagent.config import DEFAULT_CONFIG_PATH
    from edgeagent.discovery.runtimefacts import KUBELET_ROOT_DIR as DEFAULT_ROOT_DIR

    cluster = cluster_facts(ctx)
    if not _has_k3s(ctx) and not cluster.kubelet_config and not cluster.kubelet_flags \
            and not ctx.root.isdir(DEFAULT_ROOT_DIR):
        return CheckResult(KUBELET_ROOT_DIR, SKIP, "no kubelet on this node")
    setting = cluster.kubelet_setting("root-dir", "")
    root_dir = str(setting.value).rstrip("/") if setting is not None else DEFAULT_ROOT_DIR
    source = "--root-dir in %s" % setting.source if setting is not None else "the default"
    want = root_dir + "/device-plugins"
    have = ctx.config.options.device_plugin.directory.rstrip("/")
    if have == want:
        return CheckResult(KUBELET_ROOT_DIR, PASS, "the kubelet's root dir is %s (%s); the "
                           "plugin uses %s" % (root_dir, source, have))
    detail = ("the kubelet's root dir is %s (%s), so it serves device plugins in %s, but "
              "device_plugin.directory is %s (%s): the kubelet never sees edgeagent's devices"
              % (root_dir, source, want, have,
                 ctx.config.sources.get("device_plugin.directory", "default")))
    origin = ctx.config.sources.get("device_plugin.directory", "default")
    path_used = ctx.config.path
    config_file = DEFAULT_CONFIG_PATH
    if origin not in ("default",) and (path_used is None or origin != path_used):
        return CheckResult(KUBELET_ROOT_DIR, FAIL, detail, "set device_plugin.directory = \"%s\" "
                           "where it is set now (%s) and restart edgeagent" % (want, origin))
    if path_used is not None and os.path.realpath(path_used) != \
            os.path.realpath(ctx.root.resolve(config_file)):
        return CheckResult(KUBELET_ROOT_DIR, FAIL, detail, "set directory = \"%s\" under "
                           "[device_plugin] in %s and restart edgeagent" % (want, path_used))
    hint = _plan_toml(ctx, KUBELET_ROOT_DIR, config_file, ("device_plugin",), "directory", want,
                      "edgeagent", "point the device plugin at the kubelet's directory")
    return CheckResult(KUBELET_ROOT_DIR, FAIL, detail,
                       "set directory = \"%s\" under [device_plugin] in %s and sudo "
                       "systemctl restart edgeagent%s" % (want, config_file,
                                                          "; " + hint if hint else ""))


# --- planning the --fix edits (pure, via edgeagent.doctor.fix) -----------------------------------

def _plan(ctx: DoctorContext, check: str, path: str, service: str, why: str,
          edit_text) -> Optional[str]:
    """Offer the edit ``edit_text`` (old text -> new text) of ``path`` to --fix. Two checks that
    edit one file make one edit (the second applied to the first's result), so the diff shown is
    the file's whole change and the file is written once."""
    from edgeagent.doctor.fix import FileEdit, FixError

    edits = ctx.facts.setdefault("fix.edits", [])
    prior = next((e for e in edits if e.path == path), None)
    exists = ctx.root.lexists(path)
    old = prior.new if prior is not None else (_read(ctx, path) if exists else "")
    if old is None:
        return None
    try:
        new = edit_text(old)
    except FixError as e:
        ctx.facts.setdefault("fix.refused", []).append((check, str(e)))
        return None
    if new == old:
        return None
    if prior is not None:
        edits[edits.index(prior)] = FileEdit(prior.check + ", " + check, path, prior.old, new,
                                             service, prior.why + "; " + why, prior.create)
        return FIX_HINT
    return _offer(ctx, FileEdit(check, path, old, new, service, why, create=not exists))


def _plan_toml(ctx, check, path, table, key, value, service, why) -> Optional[str]:
    from edgeagent.doctor.fix import set_toml_key

    return _plan(ctx, check, path, service, why,
                 lambda text: set_toml_key(text, table, key, value, path))


def _plan_json(ctx, check, path, key, value, service, why) -> Optional[str]:
    from edgeagent.doctor.fix import set_json_key

    return _plan(ctx, check, path, service, why,
                 lambda text: set_json_key(text, key, value, path))


def _plan_yaml(ctx, check, path, key, value, service, why) -> Optional[str]:
    from edgeagent.doctor.fix import set_yaml_key

    return _plan(ctx, check, path, service, why,
                 lambda text: set_yaml_key(text, key, value, path))


CHECKS = [check_k3s_config_path, check_k3s_default_runtime, check_k3s_template_version,
          check_containerd_cdi, check_cdi_spec_mode, check_cdi_duplicates, check_cdi_refresh_race,
          check_cgroup_driver, check_docker_default_runtime, check_kubelet_root_dir,
          check_edgeagent_spec]
