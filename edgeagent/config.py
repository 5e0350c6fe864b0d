"""Configuration: one schema, four sources (defaults < TOML file < EDGEAGENT_* env < flags).

Every option any component reads is declared in ``SCHEMA`` so that unknown keys, bad values and
their source are reported the same way: one line naming the file (or variable), key and problem.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgeagent.errors import ConfigError, file_problem
from edgeagent.k8snames import is_dns_subdomain

DEFAULT_CONFIG_PATH = "/etc/edgeagent/config.toml"
COMPONENTS = ("device-plugin", "dra", "labels", "metrics")
# Prometheus' exporter port registry (its wiki, "Default port allocations") has had no free port
# in 9100-9999 since 2023, 9745 included; new exporters get ports outside that range. 19745 is in
# no allocation we could find and below Linux's ephemeral range (32768+). See README "Metrics".
DEFAULT_METRICS_PORT = 19745
# The longest config file read: the documented example is 6 KiB; a cap keeps `--config /dev/zero`
# or a runaway file from eating memory before the TOML parser says a word.
MAX_CONFIG_BYTES = 1 << 20
# Numbers come from operators, environment variables and flags: ASCII digits only (str.isdigit()
# and int() also take '²', '١٢' and fullwidth digits), and few enough of them that no conversion
# reaches Python's int/str digit limit (3.11+ raises ValueError past 4300 digits).
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}\Z")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})"
                         r"(?:[eE][+-]?[0-9]{1,3})?\Z")
_PORT_TEXT = re.compile(r"[0-9]{1,5}\Z")


class _Invalid(ValueError):
    pass


# --- value parsers: take a TOML value (or an env/flag string) and return the typed value -------

def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid("must be a string, got %s" % _show(v))
    return v


def _opt_str(v: Any) -> Optional[str]:
    if v is None or v == "":
        return None
    return _str(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise _Invalid("must be true or false, got %s" % _show(v))


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise _Invalid("must be an integer, got %s" % _show(v))
        if isinstance(v, str):
            if not _INT_TEXT.match(v.strip()):
                raise _Invalid("must be an integer, got %s" % _show(v))
            v = int(v.strip(), 10)
        if not isinstance(v, int):
            raise _Invalid("must be an integer, got %s" % _show(v))
        if not lo <= v <= hi:
            raise _Invalid("must be between %d and %d, got %s" % (lo, hi, _show(v)))
        return v

    return parse


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        if isinstance(v, bool):
            raise _Invalid("must be a number, got %s" % _show(v))
        if isinstance(v, str):
            if not _FLOAT_TEXT.match(v.strip()):  # no "nan", "inf", "1_0" or non-ASCII digits
                raise _Invalid("must be a number, got %s" % _show(v))
            v = float(v.strip())
        if not isinstance(v, (int, float)) or v != v:
            raise _Invalid("must be a number, got %s" % _show(v))
        if not lo <= v <= hi:
            raise _Invalid("must be between %g and %g, got %s" % (lo, hi, _show(v)))
        return float(v)

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = _str(v).strip().lower()
        if s not in choices:
            raise _Invalid("must be one of %s, got %s" % (", ".join(choices), _show(v)))
        return s

    return parse


def _str_list(v: Any) -> Tuple[str, ...]:
    if isinstance(v, str):
        return tuple(p.strip() for p in v.split(",") if p.strip())
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid("must be a list of strings, got %s" % _show(v))
    return tuple(v)


def _components(v: Any) -> Tuple[str, ...]:
    names = _str_list(v)
    for n in names:
        if n not in COMPONENTS:
            raise _Invalid("unknown component %r (components: %s)" % (n, ", ".join(COMPONENTS)))
    return names


def _address(v: Any) -> Tuple[str, int]:
    s = _str(v).strip()
    host, sep, port = s.rpartition(":")
    if not sep or not _PORT_TEXT.match(port) or not 0 < int(port) < 65536:
        raise _Invalid("must be HOST:PORT with a port from 1 to 65535, got %s" % _show(v))
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _abs_path(v: Any) -> str:
    s = _str(v)
    if not s.startswith("/"):
        raise _Invalid("must be an absolute path, got %s" % _show(v))
    return s


def _opt_path(v: Any) -> Optional[str]:
    if v is None or v == "":
        return None
    return _str(v)


# NodeRestriction (kubernetes/plugin/pkg/admission/noderestriction): a kubelet identity may not
# set labels under these namespaces, except a short allow-list we do not need.
_RESTRICTED_LABEL_DOMAINS = ("kubernetes.io", "k8s.io")


def label_prefix_problem(prefix: str) -> Optional[str]:
    """Why ``prefix`` (``domain/``) cannot be used for node labels, or None when it can."""
    if not prefix.endswith("/"):
        return "must end with '/', like 'edgeagent.io/'"
    domain = prefix[:-1]
    if not is_dns_subdomain(domain):
        return "%r is not a DNS subdomain (lowercase letters, digits, '-' and '.')" % domain
    if domain.startswith("node-restriction.kubernetes.io"):
        return "node-restriction.kubernetes.io/ labels may only be set by administrators"
    if domain in ("node.kubernetes.io", "kubelet.kubernetes.io"):
        # NodeRestriction lets kubelets set these two, but they belong to Kubernetes itself.
        return "%s/ labels are reserved for Kubernetes itself" % domain
    for restricted in _RESTRICTED_LABEL_DOMAINS:
        if domain == restricted or domain.endswith("." + restricted):
            return "the NodeRestriction admission plugin forbids nodes to set %s labels" % restricted
    return None


def _label_prefix(v: Any) -> str:
    s = _str(v).strip()
    problem = label_prefix_problem(s)
    if problem:
        raise _Invalid(problem)
    return s


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


def _namespace(v: Any) -> str:
    s = _str(v).strip()
    if not _DNS_LABEL.match(s):
        raise _Invalid("must be a namespace name (at most 63 lowercase letters, digits and '-'), "
                       "got %s" % _show(v))
    return s


# --- device-plugin resources ([[device_plugin.resources]] tables) ------------------------------

_RESOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
                            r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_USB_ID = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")


@dataclass(frozen=True)
class ResourceConfig:
    """One operator-defined extended resource: devices matched by path globs and/or USB ids."""

    name: str
    paths: Tuple[str, ...] = ()
    usb_ids: Tuple[str, ...] = ()
    pods_per_device: int = 1


def _resources(v: Any) -> Tuple[ResourceConfig, ...]:
    if not isinstance(v, list):
        raise _Invalid("must be an array of tables ([[device_plugin.resources]])")
    out: List[ResourceConfig] = []
    seen = set()
    for i, entry in enumerate(v):
        where = "[%d]" % i
        if not isinstance(entry, dict):
            raise _Invalid("%s: must be a table" % where)
        unknown = set(entry) - {"name", "paths", "usb_ids", "pods_per_device"}
        if unknown:
            raise _Invalid("%s: unknown key %s" % (where, ", ".join(sorted(unknown))))
        name = entry.get("name")
        if not isinstance(name, str) or not _RESOURCE_NAME.match(name) or len(name) > 253:
            raise _Invalid("%s.name: must be a resource name like 'example.com/device', got %s"
                           % (where, _show(name)))
        if name in seen:
            raise _Invalid("%s.name: %s is defined twice" % (where, name))
        seen.add(name)
        try:
            paths = _str_list(entry.get("paths", []))
            usb = _str_list(entry.get("usb_ids", []))
            per = _int(1, 1000)(entry.get("pods_per_device", 1))
        except _Invalid as e:
            raise _Invalid("%s: %s" % (where, e)) from None
        for p in paths:
            if not p.startswith("/dev/"):
                raise _Invalid("%s.paths: %r must be a glob under /dev/" % (where, p))
        for u in usb:
            if not _USB_ID.match(u):
                raise _Invalid("%s.usb_ids: %r must be vendor:product in hex, like '1a6e:089a'"
                               % (where, u))
        if not paths and not usb:
            raise _Invalid("%s: needs paths or usb_ids" % where)
        out.append(ResourceConfig(name, paths, tuple(u.lower() for u in usb), per))
    return tuple(out)


# --- the schema ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    key: str                      # dotted: "metrics.address"; top-level keys have no dot
    parse: Callable[[Any], Any]
    default: Any
    help: str
    env: bool = True              # settable through EDGEAGENT_<KEY>

    @property
    def env_name(self) -> str:
        return "EDGEAGENT_" + re.sub(r"[^A-Za-z0-9]", "_", self.key).upper()


SCHEMA: Tuple[Option, ...] = (
    Option("log_level", _choice("debug", "info", "warning", "error"), "info", "log verbosity"),
    Option("log_format", _choice("text", "json"), "text", "text (journald-friendly) or json"),
    Option("node_name", _opt_str, None,
           "this node's name; default NODE_NAME, else the lowercased hostname"),
    Option("kubeconfig", _opt_path, None,
           "kubeconfig file; default the kubelet's own, then in-cluster"),
    Option("dry_run", _bool, False, "log the node patch instead of sending it"),
    Option("disable", _components, (),
           "components not to run: device-plugin, dra, labels, metrics"),
    Option("gpu_mode", _choice("device-plugin", "dra"), "device-plugin",
           "how pods get the GPU and the NVDLA engines: the device plugin (nvidia.com/gpu, "
           "nvidia.com/dla) or Dynamic Resource Allocation (ResourceSlices of edgeagent.io); "
           "never both"),
    Option("kube.timeout_seconds", _float(0.5, 120), 10.0, "timeout of one API request"),
    Option("discovery.rescan_seconds", _float(5, 86400), 60.0,
           "how often the host is re-scanned for a changed inventory"),
    Option("device_plugin.directory", _abs_path, "/var/lib/kubelet/device-plugins",
           "the kubelet's device-plugin directory (host path)"),
    Option("device_plugin.device_list_strategy", _choice("auto", "envvar", "cdi", "device-specs"),
           "auto", "how Allocate passes the GPU to containers"),
    Option("device_plugin.health_interval_seconds", _float(0.1, 5.0), 2.0,
           "how often device health is re-checked"),
    Option("device_plugin.builtin_profiles", _bool, True,
           "advertise NVDLA engines and Coral Edge TPUs when found"),
    Option("device_plugin.resources", _resources, (), "operator-defined resources", env=False),
    Option("dra.plugins_directory", _abs_path, "/var/lib/kubelet/plugins",
           "the kubelet's plugin directory: the DRA socket and checkpoint go in <dir>/edgeagent.io"),
    Option("dra.registry_directory", _abs_path, "/var/lib/kubelet/plugins_registry",
           "the kubelet's plugin-watcher directory, where the registration socket goes"),
    Option("dra.gpu_sharing", _choice("consumable", "exclusive"), "consumable",
           "consumable: pods share the GPU by memory (DRAConsumableCapacity, where the API "
           "server supports it; exclusive otherwise); exclusive: one claim at a time"),
    Option("sharing.replicas", _int(1, 1024), 1, "time-slicing replicas of the GPU (1: no sharing)"),
    Option("sharing.rename_by_default", _bool, False,
           "advertise shared GPUs as nvidia.com/gpu.shared"),
    Option("sharing.fail_requests_greater_than_one", _bool, False,
           "refuse requests for more than one GPU replica"),
    Option("labels.prefix", _label_prefix, "edgeagent.io/", "prefix of edgeagent's own labels"),
    Option("labels.nvidia_gpu_labels", _bool, True,
           "set nvidia.com/gpu.* labels (switch off where GPU feature discovery runs)"),
    Option("labels.nvidia_gpu_labels_owner", _choice("defer", "own"), "defer",
           "where GFD/NFD also label nvidia.com/gpu.*: defer to them, or own the labels"),
    Option("labels.publish", _choice("node", "nodefeature"), "node",
           "patch the labels onto the Node, or publish them as an NFD NodeFeature object"),
    Option("labels.nodefeature_namespace", _namespace, "node-feature-discovery",
           "namespace of the NodeFeature object (labels.publish = nodefeature)"),
    Option("labels.devicetree_labels", _bool, True, "set beta.devicetree.org/* labels"),
    Option("labels.extra_nodes", _str_list, (),
           "devicetree node paths whose compatibles also become labels"),
    Option("labels.drift_check_seconds", _float(10, 86400), 600.0,
           "how often the Node is re-read to repair drift"),
    Option("labels.startup_jitter_seconds", _float(0, 3600), 20.0,
           "random delay before the first label patch, so a fleet does not start at once"),
    Option("metrics.address", _address, ("0.0.0.0", DEFAULT_METRICS_PORT),
           "HOST:PORT of /metrics and /healthz"),
    Option("tegrastats.path", _abs_path, "/usr/bin/tegrastats", "tegrastats binary (host path)"),
    Option("tegrastats.interval_ms", _int(100, 60000), 1000, "tegrastats --interval"),
)
OPTIONS: Dict[str, Option] = {o.key: o for o in SCHEMA}


# --- typed options: what components receive ---------------------------------------------------
# Each component gets its own frozen section (grpclib's Configuration is the model), built once
# here; no module outside this one reads an option by its dotted string key.

@dataclass(frozen=True)
class KubeOptions:
    """How to reach the API server as this node."""

    node_name: Optional[str]
    node_name_source: str          # where node_name came from: "default", "command line", a file
    kubeconfig: Optional[str]
    timeout_seconds: float
    dry_run: bool


@dataclass(frozen=True)
class SharingOptions:
    """Time-slicing of the GPU: the device plugin advertises it, the labels state it."""

    replicas: int
    rename_by_default: bool
    fail_requests_greater_than_one: bool


@dataclass(frozen=True)
class DiscoveryOptions:
    rescan_seconds: float


@dataclass(frozen=True)
class DevicePluginOptions:
    directory: str                 # host path, not yet under --root
    device_list_strategy: str
    health_interval_seconds: float
    builtin_profiles: bool
    resources: Tuple[ResourceConfig, ...]
    sharing: SharingOptions
    gpu_mode: str = "device-plugin"  # "dra": the GPU and NVDLA engines are DRA's, not ours


@dataclass(frozen=True)
class DraOptions:
    """The DRA kubelet plugin and the node's ResourceSlices (gpu_mode = "dra")."""

    plugins_directory: str         # host paths, not yet under --root
    registry_directory: str
    gpu_sharing: str               # "consumable" or "exclusive"
    health_interval_seconds: float  # the device plugin's: one health cadence for both modes


@dataclass(frozen=True)
class LabelsOptions:
    prefix: str
    nvidia_gpu_labels: bool
    nvidia_gpu_labels_owner: str   # "defer" or "own": see labels/contest.py
    publish: str                   # "node" (patch it) or "nodefeature" (NFD applies them)
    nodefeature_namespace: str
    devicetree_labels: bool
    extra_nodes: Tuple[str, ...]
    drift_check_seconds: float
    startup_jitter_seconds: float
    sharing: SharingOptions        # nvidia.com/gpu.replicas and .shared state the plugin's choice


@dataclass(frozen=True)
class MetricsOptions:
    address: Tuple[str, int]


@dataclass(frozen=True)
class TegrastatsOptions:
    path: str                      # host path, not yet under --root
    interval_ms: int


@dataclass(frozen=True)
class Options:
    """Every validated option, one typed section per component."""

    log_level: str
    log_format: str
    disable: Tuple[str, ...]
    gpu_mode: str                  # "device-plugin" or "dra"
    kube: KubeOptions
    discovery: DiscoveryOptions
    device_plugin: DevicePluginOptions
    labels: LabelsOptions
    metrics: MetricsOptions
    tegrastats: TegrastatsOptions
    dra: DraOptions

    def enabled(self, component: str) -> bool:
        return component not in self.disable

    @property
    def serves_dra(self) -> bool:
        """The DRA kubelet plugin runs: gpu_mode = dra and "dra" not disabled."""
        return self.gpu_mode == "dra" and self.enabled("dra")

    @property
    def writes_cdi_specs(self) -> bool:
        """The agent keeps its own CDI specs: the device plugin or DRA hands their IDs out."""
        return self.enabled("device-plugin") or self.serves_dra


def _options(v: Mapping[str, Any], sources: Mapping[str, str]) -> Options:
    sharing = SharingOptions(
        replicas=v["sharing.replicas"], rename_by_default=v["sharing.rename_by_default"],
        fail_requests_greater_than_one=v["sharing.fail_requests_greater_than_one"])
    return Options(
        log_level=v["log_level"], log_format=v["log_format"], disable=tuple(v["disable"]),
        gpu_mode=v["gpu_mode"],
        kube=KubeOptions(node_name=v["node_name"],
                         node_name_source=sources.get("node_name", "default"),
                         kubeconfig=v["kubeconfig"], timeout_seconds=v["kube.timeout_seconds"],
                         dry_run=v["dry_run"]),
        discovery=DiscoveryOptions(rescan_seconds=v["discovery.rescan_seconds"]),
        device_plugin=DevicePluginOptions(
            directory=v["device_plugin.directory"],
            device_list_strategy=v["device_plugin.device_list_strategy"],
            health_interval_seconds=v["device_plugin.health_interval_seconds"],
            builtin_profiles=v["device_plugin.builtin_profiles"],
            resources=tuple(v["device_plugin.resources"]), sharing=sharing,
            gpu_mode=v["gpu_mode"]),
        labels=LabelsOptions(
            prefix=v["labels.prefix"], nvidia_gpu_labels=v["labels.nvidia_gpu_labels"],
            nvidia_gpu_labels_owner=v["labels.nvidia_gpu_labels_owner"],
            publish=v["labels.publish"], nodefeature_namespace=v["labels.nodefeature_namespace"],
            devicetree_labels=v["labels.devicetree_labels"],
            extra_nodes=tuple(v["labels.extra_nodes"]),
            drift_check_seconds=v["labels.drift_check_seconds"],
            startup_jitter_seconds=v["labels.startup_jitter_seconds"], sharing=sharing),
        metrics=MetricsOptions(address=v["metrics.address"]),
        tegrastats=TegrastatsOptions(path=v["tegrastats.path"],
                                     interval_ms=v["tegrastats.interval_ms"]),
        dra=DraOptions(plugins_directory=v["dra.plugins_directory"],
                       registry_directory=v["dra.registry_directory"],
                       gpu_sharing=v["dra.gpu_sharing"],
                       health_interval_seconds=v["device_plugin.health_interval_seconds"]),
    )


class Config:
    """Validated option values by dotted key, plus where each came from. Components read
    ``options`` (typed sections); the dotted keys are for config's own sources and reports."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str],
                 path: Optional[str] = None) -> None:
        self._values = dict(values)
        self.sources = dict(sources)
        self.path = path
        self.options = _options(self._values, self.sources)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some keys set (``replace(**{"sharing.replicas": 4})``), validated."""
        values = dict(self._values)
        sources = dict(self.sources)
        for key, value in overrides.items():
            values[key] = _parse(key, value, "override")
            sources[key] = "override"
        return Config(values, sources, self.path)

    def as_dict(self) -> Dict[str, Any]:
        """Every value by dotted key: for reports of the whole config and its tests, never for
        a component (those read ``options``)."""
        return dict(self._values)


def _show(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 60:
        return "a %d-bit integer" % v.bit_length()  # repr() of a huge int raises on 3.11+
    if isinstance(v, (dict, list, tuple)) and len(v) > 20:
        return "a %s of %d items" % (type(v).__name__, len(v))
    try:
        text = repr(v)
    except (ValueError, RecursionError):
        return "a %s" % type(v).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(key: str, value: Any, where: str) -> Any:
    option = OPTIONS.get(key)
    if option is None:
        raise ConfigError("%s: unknown key %s" % (where, _show(key)))
    try:
        return option.parse(value)
    except _Invalid as e:
        raise ConfigError("%s: %s: %s" % (where, key, e)) from None


_SECTIONS = {o.key.rsplit(".", 1)[0] for o in SCHEMA if "." in o.key}


def _flatten(table: Mapping[str, Any]) -> Dict[str, Any]:
    """Dotted keys of a parsed TOML document. Only the schema's own sections are descended into
    (one level: no option is deeper), so a hostile file nested 2,000 tables deep costs one step
    and comes out as one unknown key, never a RecursionError."""
    flat: Dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, dict) and k not in OPTIONS:
            # An unknown table is reported by its first dotted key ("foo.x"), deeper ones by a
            # two-part prefix: either way an unknown key, found without recursion.
            for sub, value in v.items():
                flat[k + "." + sub] = value
                if k not in _SECTIONS:
                    break
        else:
            flat[k] = v
    return flat


def read_config_text(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the config file ``path``: a regular file (never a FIFO, a device or
    /dev/zero) of at most ``limit`` bytes. Raises ConfigError with one line."""
    where = "config file %s" % _show_path(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:  # ELOOP, EIO, ENAMETOOLONG too: still an operator's problem, one line
        raise ConfigError("%s: %s" % (where, file_problem(e, missing="not found"))) from None
    except ValueError:  # an embedded NUL byte
        raise ConfigError("%s: not a valid path" % where) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError("%s: is a directory" % where)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("%s: not a regular file" % where)
        if st.st_size > limit:
            raise ConfigError("%s: too big (%d bytes; at most %d)" % (where, st.st_size, limit))
        chunks: List[bytes] = []
        size = 0
        while True:  # counted, not trusted to st_size: a file may grow while it is read
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ConfigError("%s: too big (more than %d bytes)" % (where, limit))
        return b"".join(chunks)
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise ConfigError("%s: is a directory" % where) from None
        raise ConfigError("%s: %s" % (where, file_problem(e))) from None
    finally:
        os.close(fd)


def _show_path(path: str) -> str:
    return path if len(path) <= 200 else path[:197] + "..."


def parse_toml(data: bytes, where: str) -> Dict[str, Any]:
    """A TOML document; any problem (syntax, encoding, nesting, a number too long for Python's
    int/str limit) is one ConfigError line naming ``where``."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("%s: not UTF-8 text" % where) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: invalid TOML: %s" % (where, _one_line(str(e)))) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError("%s: invalid TOML: nested too deeply" % where) from None
    except ValueError as e:
        if "digits" in str(e):  # int()'s digit limit on 3.11+, raised from inside tomllib
            raise ConfigError("%s: a number has too many digits" % where) from None
        raise ConfigError("%s: invalid TOML: %s" % (where, _one_line(str(e)))) from None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_toml(path: str) -> Dict[str, Any]:
    return parse_toml(read_config_text(path), "config file %s" % _show_path(path))


def load_config(
    path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    flags: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Build the config from defaults, ``path`` (a TOML file), ``env`` and ``flags``.

    ``flags`` maps dotted keys to values given on the command line (None means not given).
    Raises :class:`ConfigError` with one line naming the source, key and problem.
    """
    values: Dict[str, Any] = {o.key: o.default for o in SCHEMA}
    sources: Dict[str, str] = {o.key: "default" for o in SCHEMA}
    if path is not None:
        for key, raw in _flatten(_read_toml(path)).items():
            values[key] = _parse(key, raw, "config file %s" % _show_path(path))
            sources[key] = path
    env = os.environ if env is None else env
    for option in SCHEMA:
        if option.env and option.env_name in env:
            values[option.key] = _parse(option.key, env[option.env_name],
                                        "environment %s" % option.env_name)
            sources[option.key] = option.env_name
    for key, raw in (flags or {}).items():
        if raw is not None:
            values[key] = _parse(key, raw, "command line")
            sources[key] = "command line"
    return Config(values, sources, path)
