"""How this node's container runtime can give a container the GPU: CDI specs, NVIDIA runtime
configuration (Docker, containerd, k3s/RKE2, CRI-O) and the L4T CSV file lists.

Part of the host-reading layer (discovery/). Parsers are pure (text in, values out); CDI specs
are YAML or JSON written by nvidia-ctk, read with PyYAML's safe loader. :class:`RuntimeFactsCache` does the reading, re-parsing
only files whose size or mtime changed; the device plugin refreshes it from its health loop so
that Allocate only ever reads the cached value.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from edgeagent.hostpaths import HostRoot

GPU_CDI_KIND = "nvidia.com/gpu"
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_PATTERNS = ("*.yaml", "*.yml", "*.json")
CSV_DIR = "/etc/nvidia-container-runtime/host-files-for-container.d"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
# containerd's own config and drop-ins (nvidia-ctk runtime configure writes conf.d/99-nvidia.toml
# on toolkit 1.17+), and the configs k3s and RKE2 generate for their embedded containerd
# (config.toml for containerd 1.7, config-v3.toml for containerd 2).
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
            doc = json.loads(text)
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
    return CdiSpec(path, kind, version if isinstance(version, str) else None, tuple(names))


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


# --- runtime configs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RuntimeConfig:
    engine: str                # docker, containerd, k3s, rke2, cri-o
    path: str
    nvidia_runtimes: Tuple[str, ...]   # runtime names that run nvidia-container-runtime
    default: Optional[str]             # the default runtime's name, when set

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
        doc = json.loads(text) if text.strip() else {}
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
    return RuntimeConfig(engine, path, tuple(sorted(set(nvidia))), default)


def parse_runtime_toml(text: str, engine: str, path: str) -> RuntimeConfig:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError("%s: invalid TOML: %s" % (path, e)) from None
    except RecursionError:
        raise SpecError("%s: TOML nested too deep" % path) from None
    return runtime_config_from_toml(doc, engine, path)


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

    def gpu_spec(self) -> Optional[CdiSpec]:
        """The nvidia.com/gpu spec naming a device "0" or "all" (the ones we pass); specs in
        /var/run/cdi first, since CDI gives that directory priority over /etc/cdi."""
        for spec in reversed(self.cdi_specs):
            if "0" in spec.devices or "all" in spec.devices:
                return spec
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
    devices: List[str] = []
    mounts: List[str] = []
    missing = 0
    for path in files:
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
                devices.extend(found)
                missing += 0 if found else 1
            elif root.exists(target):
                mounts.append(target)
            else:
                missing += 1
    return RuntimeFacts(
        cdi_specs=tuple(specs), runtimes=tuple(runtimes), csv_files=tuple(files),
        csv_devices=tuple(dict.fromkeys(devices)), csv_mounts=tuple(dict.fromkeys(mounts)),
        csv_missing=missing, problems=tuple(problems),
    )


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
