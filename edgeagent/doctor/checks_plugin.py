"""Doctor checks of the device plugin: the kubelet's socket, our registration, and whether the
container runtime can actually hand the GPU to a container."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, List, Optional, Sequence, Set

from edgeagent import safejson
from edgeagent.deviceplugin.sockets import connect_problem
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult, DoctorContext

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import DevicePluginOptions
    from edgeagent.discovery.runtimefacts import RuntimeFacts
    from edgeagent.discovery.inventory import Gpu, Inventory

KUBELET_CHECK = "kubelet device-plugin socket"
REGISTERED_CHECK = "device plugin registered"
DOCKER_CHECK = "Docker NVIDIA runtime"
CONTAINERD_CHECK = "containerd NVIDIA runtime"
CDI_CHECK = "CDI spec for nvidia.com/gpu"
CSV_CHECK = "L4T CSV files"
STRATEGY_CHECK = "GPU device list strategy"
CHECKPOINT = "kubelet_internal_checkpoint"
# A few hundred bytes per pod with devices; anything near this is not a kubelet's checkpoint.
MAX_CHECKPOINT_BYTES = 4 << 20
# NVIDIA's k8s-device-plugin names its socket nvidia-<resource>.sock (nvidia-gpu.sock for
# nvidia.com/gpu, nvidia-gpu.shared.sock when renamed).
RIVAL_SOCKETS = ("nvidia-gpu.sock", "nvidia-gpu.shared.sock")


# --- shared facts (computed once per doctor run, kept in ctx.facts) ------------------------------

def _inventory(ctx: DoctorContext) -> Optional[Inventory]:
    if ctx.inventory is not None:
        return ctx.inventory
    if "deviceplugin.inventory" not in ctx.facts:
        from edgeagent.discovery.devicetree import DeviceTreeError
        from edgeagent.discovery.scan import discover

        try:
            ctx.facts["deviceplugin.inventory"] = discover(ctx.root)
        except DeviceTreeError:
            ctx.facts["deviceplugin.inventory"] = None
    return ctx.facts["deviceplugin.inventory"]


def _runtime(ctx: DoctorContext) -> RuntimeFacts:
    if "deviceplugin.runtime" not in ctx.facts:
        from edgeagent.discovery.runtimefacts import read_runtime_facts

        ctx.facts["deviceplugin.runtime"] = read_runtime_facts(ctx.root)
    return ctx.facts["deviceplugin.runtime"]


def _gpu(ctx: DoctorContext) -> Optional[Gpu]:
    inv = _inventory(ctx)
    gpu = getattr(inv, "gpu", None)
    return gpu if gpu is not None and gpu.is_nvidia and gpu.usable else None


def _options(ctx: DoctorContext) -> DevicePluginOptions:
    return ctx.config.options.device_plugin


def _directory(ctx: DoctorContext) -> str:
    return _options(ctx).directory


# --- the kubelet ---------------------------------------------------------------------------------

def check_kubelet_socket(ctx: DoctorContext) -> CheckResult:
    directory = _directory(ctx)
    real = ctx.root.path(directory)
    if not os.path.isdir(real):
        return CheckResult(
            KUBELET_CHECK, FAIL, "%s does not exist" % directory,
            "start the kubelet (k3s: systemctl start k3s or k3s-agent); if its --root-dir is not "
            "/var/lib/kubelet, set device_plugin.directory to <root-dir>/device-plugins")
    sock = directory.rstrip("/") + "/kubelet.sock"
    try:
        st = os.stat(ctx.root.path(sock))
    except OSError:
        return CheckResult(KUBELET_CHECK, WARN, "%s is missing: the kubelet is not running" % sock,
                           "start the kubelet; edgeagent registers by itself once it is up")
    if not stat.S_ISSOCK(st.st_mode):
        return CheckResult(KUBELET_CHECK, FAIL, "%s is not a socket" % sock,
                           "remove %s and restart the kubelet" % sock)
    why = connect_problem(ctx.root.path(sock), ctx.timeout)
    if why is not None:
        return CheckResult(KUBELET_CHECK, FAIL, "%s refuses connections (%s): a stale socket "
                           "of a stopped kubelet" % (sock, why), "restart the kubelet")
    return CheckResult(KUBELET_CHECK, PASS, "%s accepts connections" % sock)


def parse_checkpoint(data: bytes) -> Optional[Set[str]]:
    """The resource names in the kubelet's ``kubelet_internal_checkpoint`` (JSON: ``{"Data":
    {"RegisteredDevices": {name: [ids]}}}``); None when it is not that shape."""
    try:
        doc = safejson.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(doc, dict):
        return None
    data_part = doc.get("Data") or {}
    registered = data_part.get("RegisteredDevices") or {} if isinstance(data_part, dict) else None
    if not isinstance(registered, dict):
        return None
    return {name for name in registered if isinstance(name, str)}


def _checkpoint_resources(ctx: DoctorContext) -> Optional[Set[str]]:
    path = ctx.root.resolve(_directory(ctx).rstrip("/") + "/" + CHECKPOINT)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CHECKPOINT_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_CHECKPOINT_BYTES:
        return None
    return parse_checkpoint(data)


def check_plugin_registered(ctx: DoctorContext) -> CheckResult:
    from edgeagent.deviceplugin.model import build_resources, plugin_resources, scan_plan
    from edgeagent.discovery.scan import probe_host as scan
    from edgeagent.deviceplugin.sockets import socket_name

    inv = _inventory(ctx)
    if inv is None:
        return CheckResult(REGISTERED_CHECK, SKIP, "no inventory (devicetree unreadable)")
    options = _options(ctx)
    expected = sorted(plugin_resources(build_resources(
        inv, scan(ctx.root, scan_plan(inv, options, {})), options), options))
    if not expected:
        return CheckResult(REGISTERED_CHECK, SKIP, "nothing to advertise on this host" + (
            " (gpu_mode = dra: the GPU and NVDLA engines are DRA's)"
            if options.gpu_mode == "dra" else ""))
    directory = _directory(ctx).rstrip("/")
    missing, stale, serving = [], [], []
    for name in expected:
        real = ctx.root.path(directory + "/" + socket_name(name))
        if not os.path.exists(real):
            missing.append(name)
        elif connect_problem(real, ctx.timeout) is not None:
            stale.append(name)
        else:
            serving.append(name)
    if stale or not serving:
        parts = []
        if missing:
            parts.append("no socket for %s" % ", ".join(missing))
        if stale:
            parts.append("stale socket for %s (refuses connections)" % ", ".join(stale))
        return CheckResult(REGISTERED_CHECK, FAIL, "; ".join(parts) + " in %s" % directory,
                           "start edgeagent (systemctl start edgeagent) and make sure the "
                           "device-plugin component is not disabled")
    known = _checkpoint_resources(ctx)
    unknown = [n for n in serving if known is not None and n not in known]
    rival = [n for n in RIVAL_SOCKETS
             if os.path.exists(ctx.root.path(directory + "/" + n))]
    if rival and "nvidia.com/gpu" in serving:
        return CheckResult(REGISTERED_CHECK, WARN, "serving %s, but %s/%s is NVIDIA's "
                           "k8s-device-plugin, which registers nvidia.com/gpu too: the last to "
                           "register wins, after every kubelet restart" % (
                               ", ".join(serving), directory, rival[0]),
                           "run one of them: remove the nvidia-device-plugin DaemonSet from this "
                           "node, or disable edgeagent's device-plugin component")
    if missing or unknown:
        parts = []
        if missing:
            parts.append("no socket for %s" % ", ".join(missing))
        if unknown:
            parts.append("the kubelet's checkpoint lists no %s yet" % ", ".join(unknown))
        return CheckResult(REGISTERED_CHECK, WARN, "serving %s; %s" % (
            ", ".join(serving), "; ".join(parts)),
            "see `journalctl -u edgeagent` for registration errors; a kubelet restart makes "
            "edgeagent register again")
    return CheckResult(REGISTERED_CHECK, PASS, "serving %s%s" % (
        ", ".join(serving), "" if known is None else "; registered in the kubelet's checkpoint"))


# --- the container runtime -----------------------------------------------------------------------

def _no_gpu() -> str:
    return "no usable NVIDIA GPU on this host"


def _runtime_problems(ctx: DoctorContext, prefixes: Sequence[str]) -> List[str]:
    return [p for p in _runtime(ctx).problems if p.startswith(tuple(prefixes))]


def check_docker_runtime(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import DOCKER_DAEMON_JSON

    if _gpu(ctx) is None:
        return CheckResult(DOCKER_CHECK, SKIP, _no_gpu())
    if not os.path.isfile(ctx.root.path(DOCKER_DAEMON_JSON)):
        return CheckResult(DOCKER_CHECK, SKIP, "%s not present" % DOCKER_DAEMON_JSON)
    bad = _runtime_problems(ctx, [DOCKER_DAEMON_JSON])
    if bad:
        return CheckResult(DOCKER_CHECK, FAIL, bad[0],
                           "fix the JSON in %s and restart Docker" % DOCKER_DAEMON_JSON)
    rc = next(r for r in _runtime(ctx).runtimes if r.engine == "docker")
    fix = ("sudo nvidia-ctk runtime configure --runtime=docker --set-as-default && "
           "sudo systemctl restart docker")
    if rc.nvidia_default:
        return CheckResult(DOCKER_CHECK, PASS, "default-runtime is %r (NVIDIA)" % rc.default)
    if rc.nvidia_runtimes:
        return CheckResult(DOCKER_CHECK, WARN, "runtime %r is registered but the default is %r"
                           % (rc.nvidia_runtimes[0], rc.default or "runc"), fix)
    if _runtime(ctx).gpu_spec() is not None:
        return CheckResult(DOCKER_CHECK, PASS, "no NVIDIA runtime; not needed with a CDI spec")
    return CheckResult(DOCKER_CHECK, WARN, "%s registers no NVIDIA runtime" % DOCKER_DAEMON_JSON,
                       fix)


def check_containerd_runtime(ctx: DoctorContext) -> List[CheckResult]:
    from edgeagent.discovery.runtimefacts import runtime_config_files

    if _gpu(ctx) is None:
        return [CheckResult(CONTAINERD_CHECK, SKIP, _no_gpu())]
    files = [(e, p) for e, p in runtime_config_files(ctx.root) if e != "docker"]
    if not files:
        return [CheckResult(CONTAINERD_CHECK, SKIP, "no containerd, k3s, RKE2 or CRI-O config")]
    facts = _runtime(ctx)
    by_path = {r.path: r for r in facts.runtimes}
    out: List[CheckResult] = []
    for engine, path in files:
        name = "%s (%s)" % (CONTAINERD_CHECK, path)
        rc = by_path.get(path)
        if rc is None:
            problem = next((p for p in facts.problems if p.startswith(path)), "unreadable")
            out.append(CheckResult(name, FAIL, problem,
                                   "fix the syntax of %s and restart %s" % (path, engine)))
            continue
        if engine in ("k3s", "rke2"):
            default_fix = ("set the NVIDIA runtime as default (k3s/RKE2 agent flag "
                           "--default-runtime=nvidia), or give GPU pods runtimeClassName: nvidia "
                           "with a RuntimeClass named nvidia (handler nvidia)")
            add_fix = ("install nvidia-container-toolkit and restart %s: it detects the NVIDIA "
                       "runtime and adds it to this generated config" % engine)
        else:
            default_fix = ("sudo nvidia-ctk runtime configure --runtime=%s --set-as-default "
                           "and restart it, or give GPU pods runtimeClassName: nvidia"
                           % ("crio" if engine == "cri-o" else "containerd"))
            add_fix = default_fix
        if rc.nvidia_default:
            out.append(CheckResult(name, PASS, "the default runtime %r is NVIDIA's" % rc.default))
        elif rc.nvidia_runtimes:
            out.append(CheckResult(name, WARN, "runtime %r is registered but the default is %r: "
                                   "only pods with runtimeClassName: %s get the GPU libraries"
                                   % (rc.nvidia_runtimes[0], rc.default or "runc",
                                      rc.nvidia_runtimes[0]), default_fix))
        elif facts.gpu_spec() is not None:
            out.append(CheckResult(name, PASS, "no NVIDIA runtime; not needed with a CDI spec"))
        else:
            out.append(CheckResult(name, WARN, "no NVIDIA runtime registered", add_fix))
    return out


def check_cdi_spec(ctx: DoctorContext) -> CheckResult:
    from edgeagent.discovery.runtimefacts import CDI_DIRS, cdi_spec_files

    if _gpu(ctx) is None:
        return CheckResult(CDI_CHECK, SKIP, _no_gpu())
    facts = _runtime(ctx)
    generate = "sudo nvidia-ctk cdi generate --mode=csv --output=/etc/cdi/nvidia.yaml"
    broken = [p for p in facts.problems if p.startswith(CDI_DIRS)]
    spec = facts.gpu_spec()
    if broken and spec is None:
        return CheckResult(CDI_CHECK, FAIL, broken[0], "fix or remove it; to regenerate: "
                           + generate)
    if spec is not None:
        detail = "%s defines %s" % (spec.path, ", ".join(spec.qualified(d) for d in spec.devices))
        if broken:
            return CheckResult(CDI_CHECK, WARN, "%s, but %s" % (detail, broken[0]),
                               "fix or remove the broken spec: runtimes log an error for it "
                               "on every container start")
        if len(facts.cdi_specs) > 1:
            # /var/run/cdi outranks /etc/cdi: nvidia-ctk's automatic refresh writes there,
            # hiding a hand-made /etc/cdi/nvidia.yaml (or the other way round).
            return CheckResult(CDI_CHECK, WARN, "%s; %d specs define nvidia.com/gpu (%s): the "
                               "one in /var/run/cdi wins" % (detail, len(facts.cdi_specs), ", ".join(
                                   s.path for s in facts.cdi_specs)),
                               "keep one of them, so the spec that is used is the one you edit")
        return CheckResult(CDI_CHECK, PASS, detail)
    if facts.cdi_specs:
        spec = facts.cdi_specs[0]
        return CheckResult(CDI_CHECK, FAIL, "%s names devices %s but not 0 or all" % (
            spec.path, ", ".join(spec.devices)), "regenerate it: " + generate)
    own = facts.own_spec("edgeagent.io/gpu")
    if own is not None:
        return CheckResult(CDI_CHECK, PASS, "no nvidia-ctk spec; the agent's own %s defines %s"
                           % (own.path, ", ".join(own.qualified(d) for d in own.devices)))
    if _options(ctx).device_list_strategy == "cdi":
        return CheckResult(CDI_CHECK, FAIL, "device_list_strategy is cdi but %s hold no spec "
                           "for nvidia.com/gpu" % " and ".join(CDI_DIRS), generate)
    others = len(cdi_spec_files(ctx.root))
    return CheckResult(CDI_CHECK, SKIP, "none (%d other spec files); the auto strategy does not "
                       "need one" % others)


def check_csv_files(ctx: DoctorContext) -> CheckResult:
    from edgeagent.deviceplugin.allocate import choose_strategy
    from edgeagent.discovery.runtimefacts import CSV_DIR

    if _gpu(ctx) is None:
        return CheckResult(CSV_CHECK, SKIP, _no_gpu())
    facts = _runtime(ctx)
    strategy = choose_strategy(_options(ctx).device_list_strategy, facts)
    if not facts.csv_files:
        if _options(ctx).gpu_mode == "dra":
            return CheckResult(
                CSV_CHECK, FAIL, "no *.csv in %s: the agent's CDI specs, which prepared claims "
                "name, give containers the GPU's device nodes but not the L4T libraries"
                % CSV_DIR, "install the JetPack container packages (sudo apt install "
                "nvidia-container), which ship these files")
        if strategy.name == "cdi":
            return CheckResult(CSV_CHECK, SKIP, "none in %s; not needed with CDI" % CSV_DIR)
        return CheckResult(
            CSV_CHECK, FAIL, "no *.csv in %s: the %s strategy cannot give containers the L4T "
            "libraries" % (CSV_DIR, strategy.name),
            "install the JetPack container packages (sudo apt install nvidia-container), which "
            "ship these files")
    bad = [p for p in facts.problems if p.startswith(CSV_DIR)]
    detail = "%d files: %d device nodes and %d libraries/dirs present, %d entries not on this " \
             "host" % (len(facts.csv_files), len(facts.csv_devices), len(facts.csv_mounts),
                       facts.csv_missing)
    if bad:
        return CheckResult(CSV_CHECK, WARN, "%s; %d malformed lines (first: %s)" % (
            detail, len(bad), bad[0]), "correct the lines to 'dev|lib|sym|dir, /path'")
    if not facts.csv_devices:
        return CheckResult(CSV_CHECK, WARN, detail + "; no listed device node exists",
                           "reinstall the JetPack container packages for this L4T release")
    return CheckResult(CSV_CHECK, PASS, detail)


def check_strategy(ctx: DoctorContext) -> CheckResult:
    from edgeagent.deviceplugin.allocate import choose_strategy

    if _gpu(ctx) is None:
        return CheckResult(STRATEGY_CHECK, SKIP, _no_gpu())
    if _options(ctx).gpu_mode == "dra":
        return CheckResult(STRATEGY_CHECK, SKIP, "gpu_mode = dra: the device plugin does not "
                           "hand out the GPU (prepared claims are CDI device IDs)")
    facts = _runtime(ctx)
    s = choose_strategy(_options(ctx).device_list_strategy, facts)
    if s.name == "cdi" and facts.gpu_spec() is None and \
            facts.own_spec("edgeagent.io/gpu") is None:
        return CheckResult(STRATEGY_CHECK, FAIL, "cdi, but no usable CDI spec: every GPU "
                           "Allocate fails", "generate a spec (sudo nvidia-ctk cdi generate "
                           "--mode=csv --output=/etc/cdi/nvidia.yaml) or set "
                           "device_list_strategy = \"auto\"")
    if s.name == "envvar" and facts.nvidia_runtime() is None:
        return CheckResult(STRATEGY_CHECK, WARN, "envvar, but no NVIDIA runtime is configured: "
                           "containers get the variable and no GPU",
                           "configure the NVIDIA runtime, or set device_list_strategy = "
                           "\"auto\"")
    return CheckResult(STRATEGY_CHECK, PASS, "%s: %s" % (s.name, s.why))


CHECKS = [check_kubelet_socket, check_plugin_registered, check_docker_runtime,
          check_containerd_runtime, check_cdi_spec, check_csv_files, check_strategy]
