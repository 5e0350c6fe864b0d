"""How this node's container runtime can give a container the GPU: CDI specs, NVIDIA runtime
configuration (Docker, containerd, k3s/RKE2, CRI-O) and the L4T CSV file lists; and, for
doctor's runtime traps, who runs the containers (ClusterFacts: k3s's unit flags, config.yaml,
templates and containerd log, the kubelet's flags and config, cri-dockerd, containerd's dpkg
version, boot time, nvidia-cdi-refresh).

Part of the host-reading layer (discovery/). Parsers are pure (text in, values out); CDI specs
are YAML or JSON written by nvidia-ctk, read with PyYAML's safe loader. :class:`RuntimeFactsCache`
does the reading, re-parsing only files whose size or mtime changed; the device plugin refreshes
it from its health loop so that Allocate only ever reads the cached value.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from edgeagent import safejson
from edgeagent.hostpaths import HostRoot

GPU_CDI_KIND = "nvidia.com/gpu"
# The kinds of the spec the agent writes itself (edgeagent/cdi): never nvidia-ctk's kind, so no
# qualified name can be defined by both.
OWN_CDI_KINDS = ("edgeagent.io/gpu", "edgeagent.io/dla")
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_PATTERNS = ("*.yaml", "*.yml", "*.json")
CSV_DIR = "/etc/nvidia-container-runtime/host-files-for-container.d"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
# containerd's own config and drop-ins (nvidia-ctk runtime configure writes conf.d/99-nvidia.toml
# on toolkit 1.17+), and the configs k3s and RKE2 generate for their embedded containerd
# (config.toml: version 2 for containerd 1.7, version 3 for containerd 2).
CONTAINERD_CONFIGS = (
    ("containerd", "/etc/containerd/config.toml"),
    ("containerd", "/etc/containerd/conf.d/*.toml"),
    ("k3s", "/var/lib/rancher/k3s/agent/etc/containerd/config*.toml"),
    ("rke2", "/var/lib/rancher/rke2/agent/etc/containerd/config*.toml"),
    ("cri-o", "/etc/crio/crio.conf"),
    ("cri-o", "/etc/crio/crio.conf.d/*.conf"),
)
MAX_FILE_BYTES = 1 << 20


class SpecError(ValueError):
    """A config or spec file that cannot be understood; the message names the problem."""


# --- CDI specs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CdiSpec:
    path: str                  # host path
    kind: str                  # vendor.com/class
    version: Optional[str]
    devices: Tuple[str, ...]   # device names: "0", "all", a UUID...
    # What the spec hands a container, common and per-device edits together: how doctor tells
    # a csv-mode spec from an nvml-mode one (see spec_mode).
    device_nodes: Tuple[str, ...] = ()   # deviceNodes[].path
    host_paths: Tuple[str, ...] = ()     # mounts[].hostPath
    hook_args: Tuple[str, ...] = ()      # every hooks[].args word

    def qualified(self, name: str) -> str:
        return "%s=%s" % (self.kind, name)


def load_yaml(text: str, path: str) -> Any:
    """One YAML document through the agent's one bounded YAML reader (edgeagent.safeyaml:
    aliases, deep nesting and odd tags refused before anything is built); SpecError in one
    line for anything wrong."""
    from edgeagent.safeyaml import YamlError, loads  # imported when a YAML spec exists

    try:
        doc = loads(text)
    except YamlError as e:
        raise SpecError("%s: invalid YAML: %s" % (path, e)) from None
    if doc is None:
        raise SpecError("%s: 0 YAML documents, expected one CDI spec" % path)
    return doc


def parse_cdi_spec(text: str, path: str = "<spec>") -> CdiSpec:
    """A CDI spec's kind, version and device names, from JSON or YAML (as nvidia-ctk writes
    it). Raises SpecError, in one line, for anything else."""
    if text.lstrip().startswith("{"):
        try:
            doc = safejson.loads(text)
        except ValueError as e:
            raise SpecError("%s: invalid JSON: %s" % (path, e)) from None
        except RecursionError:
            raise SpecError("%s: JSON nested too deep" % path) from None
    else:
        doc = load_yaml(text, path)
    if not isinstance(doc, dict):
        raise SpecError("%s: not a CDI spec (top level is not a mapping)" % path)
    kind = doc.get("kind")
    devices = doc.get("devices")
    if not isinstance(devices, list):
        raise SpecError("%s: no devices list" % path)
    names = [d.get("name") for d in devices if isinstance(d, dict)]
    version = doc.get("cdiVersion")
    if not isinstance(kind, str) or not re.match(r"^[A-Za-z0-9][-A-Za-z0-9.]*/[-A-Za-z0-9_.]+$",
                                                 kind):
        raise SpecError("%s: no valid kind (vendor.com/class), got %r" % (path, _short(kind)))
    if not names or not all(isinstance(n, str) and n for n in names):
        raise SpecError("%s: devices without names" % path)
    edits = [doc.get("containerEdits")] + [d.get("containerEdits") for d in devices
                                           if isinstance(d, dict)]
    nodes: List[str] = []
    mounts: List[str] = []
    hooks: List[str] = []
    for e in edits:
        if not isinstance(e, dict):
            continue
        nodes.extend(_strings(e.get("deviceNodes"), "path"))
        mounts.extend(_strings(e.get("mounts"), "hostPath"))
        for hook in e.get("hooks") if isinstance(e.get("hooks"), list) else ():
            args = hook.get("args") if isinstance(hook, dict) else None
            if isinstance(args, list):
                hooks.extend(a for a in args if isinstance(a, str))
    return CdiSpec(path, kind, version if isinstance(version, str) else None, tuple(names),
                   tuple(dict.fromkeys(nodes)), tuple(dict.fromkeys(mounts)), tuple(hooks))


def _strings(items: Any, key: str) -> List[str]:
    if not isinstance(items, list):
        return []
    return [i[key] for i in items if isinstance(i, dict) and isinstance(i.get(key), str)]


# A spec generated in csv mode lists what L4T's CSV files name: nvgpu's nodes, the Tegra
# library directories, libcuda.so.1.1 (Jetson's libcuda is always .1.1), and its cuda-compat
# hook takes --host-cuda-version. One generated in nvml mode lists what NVML reports: the
# desktop driver's libnvidia-ml and libcuda.so.<driver version>, /dev/nvidia-uvm, and its hook
# takes --host-driver-version (nvidia-container-toolkit pkg/nvcdi lib-nvml.go / lib-csv.go).
_CSV_MARKS = ("/dev/nvhost-", "/dev/nvmap", "/dev/nvgpu/", "/tegra/", "libcuda.so.1.1",
              "--host-cuda-version=", "--csv-filename")
_NVML_MARKS = ("/dev/nvidia-uvm", "--host-driver-version=", "/dev/nvidia-modeset")
_NVML_LIBCUDA = re.compile(r"libcuda\.so\.\d{3,}\.\d+")


def spec_mode(spec: CdiSpec, csv_paths: Iterable[str] = ()) -> str:
    """"csv", "nvml" or "unknown": which `nvidia-ctk cdi generate --mode` wrote ``spec``.
    ``csv_paths`` are the host paths this host's L4T CSV files list: a spec that hands out any
    of them was made from them."""
    words = spec.device_nodes + spec.host_paths + spec.hook_args
    listed = set(csv_paths)
    if any(w in listed for w in spec.device_nodes + spec.host_paths) or \
            any(m in w for w in words for m in _CSV_MARKS):
        return "csv"
    if any(m in w for w in words for m in _NVML_MARKS) or \
            any(_NVML_LIBCUDA.search(w) for w in spec.host_paths):
        return "nvml"
    return "unknown"


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 60 else text[:57] + "..."


# --- the L4T CSV files ---------------------------------------------------------------------------

CSV_KINDS = ("dev", "lib", "sym", "dir")


def parse_csv(text: str, path: str = "<csv>") -> Tuple[List[Tuple[str, str]], List[str]]:
    """``kind, /path`` lines of a host-files-for-container.d file -> (entries, problems)."""
    entries: List[Tuple[str, str]] = []
    problems: List[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, sep, target = (p.strip() for p in line.partition(","))
        if not sep or kind not in CSV_KINDS or not target.startswith("/"):
            problems.append("%s:%d: expected 'dev|lib|sym|dir, /absolute/path', got %r"
                            % (path, lineno, line[:60]))
            continue
        entries.append((kind, target))
    return entries, problems


@dataclass(frozen=True)
class DeviceNodeFact:
    """A device node as the host has it: what a CDI deviceNodes entry states about it."""

    path: str          # host path (a link's own path, as the container will see it)
    type: str          # "c" or "b"
    major: int
    minor: int
    mode: int          # permission bits
    uid: int
    gid: int


def read_device_node(root: HostRoot, host_path: str) -> Optional[DeviceNodeFact]:
    """The node at ``host_path`` (links followed inside the root, as udev's
    /dev/nvgpu/igpu0 links are), or None when absent or not a character/block device (a fake
    host's regular file must never reach a runtime as a device)."""
    try:
        st = root.stat(host_path)
    except (OSError, ValueError):
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return DeviceNodeFact(host_path, kind, os.major(st.st_rdev), os.minor(st.st_rdev),
                          stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def resolve_host_link(root: HostRoot, host_path: str) -> Optional[str]:
    """The host path a ``sym`` entry finally points at (links resolved inside the root), or
    None when it dangles or leaves nothing to mount."""
    try:
        # HostRoot("/") leaves links to the kernel: realpath does what _walk does elsewhere.
        real = os.path.realpath(host_path) if root.root == "/" else root.resolve(host_path)
    except (OSError, ValueError):
        return None
    if not os.path.exists(real):
        return None
    if root.root == "/":
        return real
    rel = os.path.relpath(real, root.root)
    return "/" if rel == "." else "/" + rel


# --- runtime configs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RuntimeConfig:
    engine: str                # docker, containerd, k3s, rke2, cri-o
    path: str
    nvidia_runtimes: Tuple[str, ...]   # runtime names that run nvidia-container-runtime
    default: Optional[str]             # the default runtime's name, when set
    # containerd only (None when the file does not say): the config's ``version`` (2 is
    # containerd 1.x's layout, 3 containerd 2.x's), the CRI plugin's ``enable_cdi`` and the
    # default runtime's ``SystemdCgroup`` (CRI-O: cgroup_manager == "systemd").
    version: Optional[int] = None
    enable_cdi: Optional[bool] = None
    systemd_cgroup: Optional[bool] = None
    header: str = ""                   # the first line when it is a comment (k3s: "generated")

    @property
    def nvidia_default(self) -> bool:
        return self.default is not None and self.default in self.nvidia_runtimes


def _is_nvidia_runtime(name: str, table: Any) -> bool:
    if name.startswith("nvidia"):
        return True
    text = json.dumps(table) if isinstance(table, (dict, list)) else str(table)
    return "nvidia-container-runtime" in text


def parse_docker_daemon_json(text: str, path: str = DOCKER_DAEMON_JSON) -> RuntimeConfig:
    try:
        doc = safejson.loads(text) if text.strip() else {}
    except ValueError as e:
        raise SpecError("%s: invalid JSON: %s" % (path, e)) from None
    except RecursionError:
        raise SpecError("%s: JSON nested too deep" % path) from None
    if not isinstance(doc, dict):
        raise SpecError("%s: top level is not an object" % path)
    runtimes = doc.get("runtimes") or {}
    if not isinstance(runtimes, dict):
        raise SpecError("%s: runtimes is not an object" % path)
    nvidia = tuple(sorted(n for n, t in runtimes.items() if _is_nvidia_runtime(n, t)))
    default = doc.get("default-runtime")
    return RuntimeConfig("docker", path, nvidia, default if isinstance(default, str) else None)


def _walk_tables(table: Dict[str, Any]) -> Iterable[Tuple[str, Any]]:
    # Iterative: a TOML file of 2,000 nested tables must not exhaust the stack.
    stack = [iter(table.items())]
    while stack:
        for key, value in stack[-1]:
            yield key, value
            if isinstance(value, dict):
                stack.append(iter(value.items()))
                break
        else:
            stack.pop()


def runtime_config_from_toml(doc: Dict[str, Any], engine: str, path: str) -> RuntimeConfig:
    """NVIDIA runtimes in a containerd (v1/v2/v3 layouts) or CRI-O config: any ``runtimes``
    table's entries that are named nvidia* or run nvidia-container-runtime; the default is
    ``default_runtime_name`` (containerd) or ``default_runtime`` (CRI-O)."""
    nvidia: List[str] = []
    default = None
    for key, value in _walk_tables(doc):
        if key == "runtimes" and isinstance(value, dict):
            nvidia.extend(n for n, t in value.items() if _is_nvidia_runtime(n, t))
        elif key in ("default_runtime_name", "default_runtime") and isinstance(value, str):
            default = value
    version = doc.get("version")
    cri = cri_plugin_table(doc)
    enable_cdi = cri.get("enable_cdi") if isinstance(cri.get("enable_cdi"), bool) else None
    systemd = None
    if engine == "cri-o":
        crio = doc.get("crio") if isinstance(doc.get("crio"), dict) else {}
        runtime = crio.get("runtime") if isinstance(crio.get("runtime"), dict) else {}
        manager = runtime.get("cgroup_manager")
        systemd = (manager == "systemd") if isinstance(manager, str) else None
    else:
        options = _dig(cri, "containerd", "runtimes", default or "runc", "options")
        value = options.get("SystemdCgroup")
        systemd = value if isinstance(value, bool) else None
    return RuntimeConfig(engine, path, tuple(sorted(set(nvidia))), default,
                         version if isinstance(version, int) and not isinstance(version, bool)
                         else None, enable_cdi, systemd)


# The CRI plugin's table in each config layout: version 3 (containerd 2.x) moved the runtime
# part to io.containerd.cri.v1.runtime; version 2 is io.containerd.grpc.v1.cri; version 1 "cri".
CRI_TABLES = {3: "io.containerd.cri.v1.runtime", 2: "io.containerd.grpc.v1.cri", 1: "cri"}


def cri_plugin_table(doc: Dict[str, Any]) -> Dict[str, Any]:
    """The CRI plugin's table of a parsed containerd config ({} when absent)."""
    version = doc.get("version")
    names = [CRI_TABLES[version]] if version in CRI_TABLES else list(CRI_TABLES.values())
    for name in names:
        table = _dig(doc, "plugins", name)
        if table:
            return table
    return {}


def _dig(doc: Any, *keys: str) -> Dict[str, Any]:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc if isinstance(doc, dict) else {}


def parse_runtime_toml(text: str, engine: str, path: str) -> RuntimeConfig:
    doc = load_toml(text, path)
    rc = runtime_config_from_toml(doc, engine, path)
    first = text.lstrip("\n").split("\n", 1)[0].strip()
    return replace(rc, header=first[:200]) if first.startswith("#") else rc


def load_toml(text: str, path: str) -> Dict[str, Any]:
    """A TOML document (tomllib, or tomli before Python 3.11); SpecError in one line."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError("%s: invalid TOML: %s" % (path, e)) from None
    except RecursionError:
        raise SpecError("%s: TOML nested too deep" % path) from None


# --- everything together -------------------------------------------------------------------------

@dataclass(frozen=True)
class RuntimeFacts:
    cdi_specs: Tuple[CdiSpec, ...] = ()         # parsed specs of kind nvidia.com/gpu
    runtimes: Tuple[RuntimeConfig, ...] = ()    # configs that parsed
    csv_files: Tuple[str, ...] = ()
    csv_devices: Tuple[str, ...] = ()           # existing host device nodes from dev lines
    csv_mounts: Tuple[str, ...] = ()            # existing host paths from lib/sym/dir lines
    csv_missing: int = 0                        # CSV entries not present on this host
    problems: Tuple[str, ...] = ()              # files that could not be read or parsed
    # The agent's own specs (kinds OWN_CDI_KINDS), and every existing CSV entry with its kind
    # ("dev" globs expanded): what edgeagent/cdi builds its spec from.
    own_specs: Tuple[CdiSpec, ...] = ()
    csv_entries: Tuple[Tuple[str, str], ...] = ()

    def gpu_spec(self) -> Optional[CdiSpec]:
        """The nvidia.com/gpu spec naming a device "0" or "all" (the ones we pass); specs in
        /var/run/cdi first, since CDI gives that directory priority over /etc/cdi."""
        for spec in reversed(self.cdi_specs):
            if "0" in spec.devices or "all" in spec.devices:
                return spec
        return None

    def own_spec(self, kind: str) -> Optional[CdiSpec]:
        """The agent's own spec of ``kind`` (edgeagent.io/gpu or edgeagent.io/dla), if written."""
        return next((s for s in reversed(self.own_specs) if s.kind == kind), None)

    def cdi_runtime(self) -> Optional[RuntimeConfig]:
        """A CRI runtime config known to have CDI on: containerd with ``enable_cdi = true``, a
        version 3 config (containerd 2.x, CDI on unless switched off), or CRI-O (CDI always
        on since 1.23). Docker is left out: the kubelet's CDI devices never reach it."""
        for r in self.runtimes:
            if r.engine == "cri-o":
                return r
            if r.engine in ("containerd", "k3s", "rke2") and (
                    r.enable_cdi is True or (r.version == 3 and r.enable_cdi is not False)):
                return r
        return None

    def nvidia_runtime(self) -> Optional[RuntimeConfig]:
        """A config that registers an NVIDIA runtime, preferring one that makes it the default."""
        found = [r for r in self.runtimes if r.nvidia_runtimes]
        found.sort(key=lambda r: not r.nvidia_default)
        return found[0] if found else None


def _read(root: HostRoot, host_path: str) -> str:
    data = root.read_bytes(host_path, MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SpecError("%s: over %d bytes" % (host_path, MAX_FILE_BYTES))
    return data.decode("utf-8", "replace")


def cdi_spec_files(root: HostRoot) -> List[str]:
    files: List[str] = []
    for d in CDI_DIRS:
        for pattern in CDI_PATTERNS:
            files.extend(root.glob(d + "/" + pattern))
    return files


def runtime_config_files(root: HostRoot) -> List[Tuple[str, str]]:
    out = []
    if root.isfile(DOCKER_DAEMON_JSON):
        out.append(("docker", DOCKER_DAEMON_JSON))
    for engine, pattern in CONTAINERD_CONFIGS:
        out.extend((engine, p) for p in root.glob(pattern) if root.isfile(p))
    return out


def csv_files(root: HostRoot) -> List[str]:
    return root.glob(CSV_DIR + "/*.csv")


def read_runtime_facts(root: HostRoot) -> RuntimeFacts:
    """Read and parse every file that decides how the GPU reaches containers (blocking I/O)."""
    problems: List[str] = []
    specs: List[CdiSpec] = []
    own: List[CdiSpec] = []
    for path in cdi_spec_files(root):
        try:
            spec = parse_cdi_spec(_read(root, path), path)
        except SpecError as e:
            problems.append(str(e))
            continue
        except OSError as e:
            problems.append("%s: %s" % (path, e.strerror or e))
            continue
        if spec.kind == GPU_CDI_KIND:
            specs.append(spec)
        elif spec.kind in OWN_CDI_KINDS:
            own.append(spec)
    runtimes: List[RuntimeConfig] = []
    for engine, path in runtime_config_files(root):
        try:
            text = _read(root, path)
            if engine == "docker":
                runtimes.append(parse_docker_daemon_json(text, path))
            else:
                runtimes.append(parse_runtime_toml(text, engine, path))
        except SpecError as e:
            problems.append(str(e))
        except OSError as e:
            problems.append("%s: %s" % (path, e.strerror or e))
    files = csv_files(root)
    present, missing = read_csv_entries(root, files, problems)
    devices = [p for k, p in present if k == "dev"]
    mounts = [p for k, p in present if k != "dev"]
    return RuntimeFacts(
        cdi_specs=tuple(specs), runtimes=tuple(runtimes), csv_files=tuple(files),
        csv_devices=tuple(dict.fromkeys(devices)), csv_mounts=tuple(dict.fromkeys(mounts)),
        csv_missing=missing, problems=tuple(problems), own_specs=tuple(own),
        csv_entries=tuple(present),
    )


def read_csv_entries(root: HostRoot, files: Optional[List[str]] = None,
                     problems: Optional[List[str]] = None) -> Tuple[List[Tuple[str, str]], int]:
    """(kind, host path) of every CSV entry present on this host, ``dev`` globs expanded,
    each once, in file order; and how many entries are absent. Unreadable files and bad lines
    go to ``problems``."""
    problems = [] if problems is None else problems
    present: List[Tuple[str, str]] = []
    missing = 0
    for path in csv_files(root) if files is None else files:
        try:
            entries, bad = parse_csv(_read(root, path), path)
        except SpecError as e:
            problems.append(str(e))
            continue
        except OSError as e:
            problems.append("%s: %s" % (path, e.strerror or e))
            continue
        problems.extend(bad)
        for kind, target in entries:
            if kind == "dev":
                found = root.glob(target) if any(c in target for c in "*?[") else (
                    [target] if root.exists(target) else [])
                present.extend((kind, p) for p in found)
                missing += 0 if found else 1
            elif root.exists(target):
                present.append((kind, target))
            else:
                missing += 1
    return list(dict.fromkeys(present)), missing


class RuntimeFactsCache:
    """The latest RuntimeFacts; ``refresh`` re-reads only when a watched file changed (size,
    mtime, or a file added/removed), or every ``max_age`` seconds for the CSV targets."""

    def __init__(self, root: HostRoot, max_age: float = 30.0) -> None:
        self.root = root
        self.max_age = max_age
        self.current = RuntimeFacts()
        self._signature: Optional[Tuple] = None
        self._read_at = 0.0

    def _signature_now(self) -> Tuple:
        paths = cdi_spec_files(self.root) + [p for _, p in runtime_config_files(self.root)]
        paths += csv_files(self.root)
        sig = []
        for p in paths:
            try:
                st = self.root.stat(p)
            except OSError:
                continue
            sig.append((p, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def refresh(self, now: Optional[float] = None) -> bool:
        """Blocking; True when the facts were re-read."""
        now = time.monotonic() if now is None else now
        sig = self._signature_now()
        if sig == self._signature and now - self._read_at < self.max_age:
            return False
        self.current = read_runtime_facts(self.root)
        self._signature = sig
        self._read_at = now
        return True


# --- the cluster around the runtime: k3s, the kubelet, cri-dockerd, boot -------------------------
# Doctor's traps (checks_runtime) need to know who runs containers and with which flags. Every
# value comes from a file: systemd units, k3s's config.yaml, kubeadm's flag files, dpkg's status.

SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system",
                     "/usr/lib/systemd/system")
K3S_CONFIG = "/etc/rancher/k3s/config.yaml"
K3S_CONFIG_D = "/etc/rancher/k3s/config.yaml.d/*.yaml"
K3S_DATA_DIR = "/var/lib/rancher/k3s"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
# kubeadm writes its flags to kubeadm-flags.env; operators add theirs to /etc/default/kubelet
# (Debian packages of kubelet read both through the 10-kubeadm.conf drop-in).
KUBELET_FLAG_FILES = (("/var/lib/kubelet/kubeadm-flags.env", "KUBELET_KUBEADM_ARGS"),
                      ("/etc/default/kubelet", "KUBELET_EXTRA_ARGS"))
KUBELET_ROOT_DIR = "/var/lib/kubelet"
DPKG_STATUS = "/var/lib/dpkg/status"
CONTAINERD_PACKAGES = ("containerd", "containerd.io")
CDI_REFRESH_UNIT = "nvidia-cdi-refresh.service"
CDI_REFRESH_ENV = "/etc/nvidia-container-toolkit/nvidia-cdi-refresh.env"
CDI_REFRESH_OUTPUT = "/var/run/cdi/nvidia.yaml"   # the unit's NVIDIA_CTK_CDI_OUTPUT_FILE_PATH
CRI_DOCKERD_SOCKET = "cri-dockerd.sock"


@dataclass(frozen=True)
class Setting:
    """One value and where it was read: ``source`` is ``path`` or ``path:line``."""

    value: Any
    source: str


@dataclass(frozen=True)
class ClusterFacts:
    k3s_unit: Optional[str] = None          # "k3s" or "k3s-agent", when its unit file exists
    k3s_unit_path: Optional[str] = None
    k3s_args: Tuple[str, ...] = ()           # the unit's ExecStart words after the binary
    k3s_config: Dict[str, Setting] = field(default_factory=dict)   # config.yaml (+ .d) keys
    k3s_data_dir: str = K3S_DATA_DIR
    k3s_templates: Tuple[Tuple[str, str], ...] = ()   # (path, text) of config*.toml.tmpl
    k3s_containerd_version: Optional[Setting] = None  # "v2.0.4-k3s2", from containerd.log
    kubelet_config: Dict[str, Setting] = field(default_factory=dict)  # /var/lib/kubelet/config
    kubelet_flags: Dict[str, Setting] = field(default_factory=dict)   # --flag=value from env files
    cri_dockerd: Optional[str] = None        # evidence that kubelet talks to Docker via cri-dockerd
    containerd_package: Optional[Tuple[str, str]] = None   # (dpkg package, version)
    boot_time: Optional[float] = None        # epoch seconds, /proc/stat btime
    cdi_refresh_unit: Optional[str] = None   # path of nvidia-cdi-refresh.service
    cdi_refresh_output: str = CDI_REFRESH_OUTPUT
    problems: Tuple[str, ...] = ()

    def k3s_option(self, name: str) -> Optional[Setting]:
        """A k3s flag's value: the unit's command line wins over config.yaml, as in k3s
        (flags given twice: the last)."""
        found = flag_values(self.k3s_args, name)
        if found:
            return Setting(found[-1], "%s ExecStart" % self.k3s_unit_path)
        return self.k3s_config.get(name)

    def k3s_kubelet_args(self) -> Dict[str, Setting]:
        """``--kubelet-arg name=value`` of the unit and config.yaml (k3s appends both)."""
        out: Dict[str, Setting] = {}
        setting = self.k3s_config.get("kubelet-arg")
        if setting is not None:
            values = setting.value if isinstance(setting.value, list) else [setting.value]
            for v in values:
                if isinstance(v, str) and "=" in v:
                    k, _, val = v.lstrip("-").partition("=")
                    out[k] = Setting(val, setting.source)
        for v in flag_values(self.k3s_args, "kubelet-arg"):
            if "=" in v:
                k, _, val = v.lstrip("-").partition("=")
                out[k] = Setting(val, "%s ExecStart" % self.k3s_unit_path)
        return out

    def kubelet_setting(self, flag: str, config_key: str) -> Optional[Setting]:
        """The kubelet's ``--flag`` (k3s kubelet-arg, kubeadm's flag files) over its config
        file's ``config_key``, as the kubelet itself ranks them."""
        if self.k3s_unit is not None:
            found = self.k3s_kubelet_args().get(flag)
            if found is not None:
                return found
        return self.kubelet_flags.get(flag) or self.kubelet_config.get(config_key)


def flag_values(args: Iterable[str], name: str) -> List[str]:
    """Values of ``--name value`` / ``--name=value`` in a command line (``true`` for a bare
    boolean flag followed by another flag or nothing)."""
    out: List[str] = []
    words = list(args)
    for i, w in enumerate(words):
        if w == "--" + name:
            nxt = words[i + 1] if i + 1 < len(words) else None
            out.append("true" if nxt is None or nxt.startswith("-") else nxt)
        elif w.startswith("--%s=" % name):
            out.append(w.split("=", 1)[1])
    return out


def parse_exec_start(text: str) -> List[str]:
    """The words of a unit's (last) ExecStart=, continuation lines joined, quotes removed, the
    binary itself dropped (k3s's installer writes one word per line: ``'--docker' \\``)."""
    import shlex

    joined = re.sub(r"\\\n", " ", text)
    words: List[str] = []
    for line in joined.splitlines():
        m = re.match(r"\s*ExecStart\s*=\s*[-@:+!]*(.*)$", line)
        if m:
            try:
                words = shlex.split(m.group(1), comments=False)
            except ValueError:
                words = m.group(1).split()
    return words[1:]


def parse_env_assignments(text: str) -> Dict[str, str]:
    """``NAME=value`` / ``NAME="value"`` lines of an environment file (kubeadm-flags.env,
    /etc/default/kubelet, nvidia-cdi-refresh.env)."""
    import shlex

    out: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value]
        out[name.strip()] = " ".join(words)
    return out


def parse_flags(args: str, source: str) -> Dict[str, Setting]:
    """``--name=value`` and ``--name value`` words of a flag string."""
    import shlex

    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    out: Dict[str, Setting] = {}
    for i, w in enumerate(words):
        if not w.startswith("--"):
            continue
        name, eq, value = w[2:].partition("=")
        if not eq:
            nxt = words[i + 1] if i + 1 < len(words) else ""
            value = nxt if nxt and not nxt.startswith("-") else "true"
        out[name] = Setting(value, source)
    return out


def parse_yaml_mapping(text: str, path: str) -> Dict[str, Setting]:
    """The top-level keys of a YAML mapping (k3s config.yaml, a kubelet config), each with the
    ``path:line`` it is on. An empty file is an empty mapping."""
    doc = load_yaml(text, path) if text.strip() and not _only_comments(text) else {}
    if not isinstance(doc, dict):
        raise SpecError("%s: top level is not a mapping" % path)
    lines = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"""^["']?([A-Za-z0-9_.-]+)["']?\s*:""", line)
        if m and m.group(1) not in lines:
            lines[m.group(1)] = n
    return {str(k): Setting(v, "%s:%d" % (path, lines[str(k)]) if str(k) in lines else path)
            for k, v in doc.items()}


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines())


def dpkg_package_version(lines: Iterable[str], names: Iterable[str]
                         ) -> Optional[Tuple[str, str]]:
    """(package, version) of the first of ``names`` installed per dpkg's status file lines."""
    wanted = set(names)
    package = version = status = None
    found: Dict[str, str] = {}
    for raw in itertools.chain(lines, [""]):   # streamed: the file is MBs
        line = raw.rstrip("\n")
        if not line:
            if package in wanted and version and status and status.endswith(" installed"):
                found[package] = version
            package = version = status = None
        elif line.startswith("Package: "):
            package = line[9:].strip()
        elif line.startswith("Version: "):
            version = line[9:].strip()
        elif line.startswith("Status: "):
            status = line[8:].strip()
    for name in names:
        if name in found:
            return name, found[name]
    return None


_STARTING = re.compile(r'msg="starting containerd".*?\bversion=([^\s"]+)')


def containerd_log_version(text: str) -> Optional[Tuple[str, int]]:
    """(version, line number) of the last "starting containerd" line of a containerd log (k3s
    keeps its embedded containerd's in <data-dir>/agent/containerd/containerd.log)."""
    found = None
    for n, line in enumerate(text.splitlines(), 1):
        m = _STARTING.search(line)
        if m:
            found = (m.group(1).strip('"'), n)
    return found


def parse_btime(text: str) -> Optional[float]:
    """Boot time (epoch seconds) from /proc/stat's ``btime`` line."""
    m = re.search(r"^btime\s+(\d+)\s*$", text, re.M)
    return float(m.group(1)) if m else None


def find_unit(root: HostRoot, name: str) -> Optional[str]:
    """The host path of a systemd unit file (the first unit directory that has it)."""
    for d in SYSTEMD_UNIT_DIRS:
        p = d + "/" + name
        if root.isfile(p):
            return p
    return None


def _read_lines_bounded(root: HostRoot, host_path: str, limit: int = 64 << 20) -> Iterable[str]:
    # dpkg's status file is several MB on a JetPack rootfs: stream it, never hold it whole.
    fd = root.open(host_path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", host_path)
        rest = b""
        seen = 0
        while seen < limit:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            seen += len(chunk)
            rest += chunk
            *complete, rest = rest.split(b"\n")
            for line in complete:
                yield line.decode("utf-8", "replace")
        if rest:
            yield rest.decode("utf-8", "replace")
    finally:
        os.close(fd)


def _tail(root: HostRoot, host_path: str, size: int) -> Optional[str]:
    # The log grows for as long as k3s runs: only its end says which containerd runs now.
    try:
        fd = root.open(host_path)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        end = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, max(0, end - size), os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)[-size:].decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_cluster_facts(root: HostRoot) -> ClusterFacts:
    """Read what decides how the node runs containers (blocking I/O); files that cannot be read
    or parsed are named in ``problems``, never raised."""
    problems: List[str] = []

    def text_of(path: str) -> Optional[str]:
        if not root.isfile(path):
            return None
        try:
            return _read(root, path)
        except (SpecError, OSError) as e:
            problems.append(str(e) if isinstance(e, SpecError)
                            else "%s: %s" % (path, e.strerror or e))
            return None

    def mapping(path: str) -> Dict[str, Setting]:
        text = text_of(path)
        if text is None:
            return {}
        try:
            return parse_yaml_mapping(text, path)
        except SpecError as e:
            problems.append(str(e))
            return {}

    k3s_unit = k3s_path = None
    k3s_args: List[str] = []
    for unit in ("k3s-agent", "k3s"):
        path = find_unit(root, unit + ".service")
        if path is not None:
            k3s_unit, k3s_path = unit, path
            k3s_args = parse_exec_start(text_of(path) or "")
            break
    k3s_config: Dict[str, Setting] = {}
    templates: List[Tuple[str, str]] = []
    k3s_containerd: Optional[Setting] = None
    data_dir = K3S_DATA_DIR
    if k3s_unit is not None or root.exists(K3S_CONFIG):
        k3s_config.update(mapping(K3S_CONFIG))
        for path in root.glob(K3S_CONFIG_D):
            k3s_config.update(mapping(path))
        given = flag_values(k3s_args, "data-dir") or [
            s.value for s in [k3s_config.get("data-dir")] if s is not None and
            isinstance(s.value, str)]
        data_dir = given[-1].rstrip("/") if given else K3S_DATA_DIR
        for path in root.glob(data_dir + "/agent/etc/containerd/config*.toml.tmpl"):
            text = text_of(path)
            if text is not None:
                templates.append((path, text))
        log = data_dir + "/agent/containerd/containerd.log"
        tail = _tail(root, log, 1 << 20)
        found = containerd_log_version(tail) if tail else None
        if found is not None:
            k3s_containerd = Setting(found[0], log)
    kubelet_config = mapping(KUBELET_CONFIG)
    flags: Dict[str, Setting] = {}
    for path, variable in KUBELET_FLAG_FILES:
        text = text_of(path)
        if text is not None:
            value = parse_env_assignments(text).get(variable)
            if value:
                flags.update(parse_flags(value, path))
    cri_dockerd = None
    endpoint = flags.get("container-runtime-endpoint")
    if endpoint is not None and CRI_DOCKERD_SOCKET in str(endpoint.value):
        cri_dockerd = "%s: --container-runtime-endpoint=%s" % (endpoint.source, endpoint.value)
    else:
        for unit in ("cri-docker.service", "cri-docker.socket"):
            path = find_unit(root, unit)
            if path is not None:
                cri_dockerd = "%s exists" % path
                break
    package = None
    if root.isfile(DPKG_STATUS):
        try:
            package = dpkg_package_version(_read_lines_bounded(root, DPKG_STATUS),
                                           CONTAINERD_PACKAGES)
        except OSError as e:
            problems.append("%s: %s" % (DPKG_STATUS, e.strerror or e))
    boot = None
    stat_text = text_of("/proc/stat")
    if stat_text is not None:
        boot = parse_btime(stat_text)
    refresh_unit = find_unit(root, CDI_REFRESH_UNIT)
    output = CDI_REFRESH_OUTPUT
    env_text = text_of(CDI_REFRESH_ENV)
    if env_text is not None:
        output = parse_env_assignments(env_text).get("NVIDIA_CTK_CDI_OUTPUT_FILE_PATH") or output
    return ClusterFacts(
        k3s_unit=k3s_unit, k3s_unit_path=k3s_path, k3s_args=tuple(k3s_args),
        k3s_config=k3s_config, k3s_data_dir=data_dir, k3s_templates=tuple(templates),
        k3s_containerd_version=k3s_containerd,
        kubelet_config=kubelet_config, kubelet_flags=flags, cri_dockerd=cri_dockerd,
        containerd_package=package, boot_time=boot, cdi_refresh_unit=refresh_unit,
        cdi_refresh_output=output, problems=tuple(problems))
