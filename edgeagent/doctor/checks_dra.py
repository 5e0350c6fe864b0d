"""Doctor checks of Dynamic Resource Allocation (``gpu_mode = "dra"``): the kubelet and the API
server speak ``resource.k8s.io/v1``, the container runtime resolves CDI devices, the agent's CDI
specs define the IDs its claims hand out, the plugin's two sockets are served, this node's
ResourceSlices are published, and nothing else also serves ``nvidia.com/gpu`` here.

Whether the agent's CDI spec is valid and its names unique across /etc/cdi and /var/run/cdi is
checks_runtime's (``cdi.edgeagent-spec``, ``runtime.cdi-duplicates``); ``dra.cdi-ids`` only
says whether the IDs a prepared claim returns resolve. Every check needs ``gpu_mode = "dra"``
and is skipped, with the reason, otherwise.

The decisions are pure functions of what was read (``kubelet_result``, ``api_result``,
``slices_result``, ``conflict_result``); the network part is one async check, bounded like
checks_kube's, because every step needs the Node or the client of the one before.
"""

from __future__ import annotations

import re
import stat
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from edgeagent.deviceplugin.sockets import connect_problem
from edgeagent.doctor.model import FAIL, PASS, SKIP, WARN, CheckResult, DoctorContext

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.discovery.runtimefacts import RuntimeConfig

KUBELET_VERSION = "dra.kubelet-version"
API_VERSION = "dra.api-version"
RUNTIME_CDI = "dra.runtime-cdi"
CDI_IDS = "dra.cdi-ids"
SOCKETS = "dra.sockets"
SLICES = "dra.slices"
GPU_CONFLICT = "dra.gpu-conflict"
NETWORK = [KUBELET_VERSION, API_VERSION, SLICES, GPU_CONFLICT]

NETWORK_BUDGET = 2.5    # seconds for all requests together; the runner allows a check 3 s
GROUP = "resource.k8s.io"
GPU_RESOURCE = "nvidia.com/gpu"
# GPU feature discovery stamps every node it labels; it comes with NVIDIA's device plugin
# (the GPU operator or the nvidia-device-plugin chart deploy both).
GFD_LABEL = "nvidia.com/gfd.timestamp"
UPGRADE = ("upgrade the cluster to Kubernetes 1.34 or later (DRA is GA there: resource.k8s.io/v1 "
           "on by default), or set gpu_mode = \"device-plugin\"")


def _not_dra(ctx: DoctorContext) -> Optional[str]:
    if ctx.config.options.gpu_mode == "dra":
        return None
    return ("gpu_mode = \"%s\": the GPU and NVDLA engines go through the device plugin, not DRA "
            "(set gpu_mode = \"dra\" or run with --gpu-mode dra to use it)"
            % ctx.config.options.gpu_mode)


# --- pure decisions ------------------------------------------------------------------------------
# They read objects the API server sent: any field may be missing or of another type.

def _dict(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


def parse_minor(version: str) -> Optional[Tuple[int, int]]:
    """(1, 34) from "v1.34.1+k3s1"; None when it is no Kubernetes version."""
    m = _VERSION.match(version.strip()) if isinstance(version, str) else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def kubelet_result(node: Dict[str, Any]) -> CheckResult:
    """Does the kubelet that registered ``node`` load DRA plugins? From its nodeInfo."""
    version = _dict(_dict(_dict(node).get("status")).get("nodeInfo")).get("kubeletVersion")
    minor = parse_minor(version) if isinstance(version, str) else None
    if minor is None:
        return CheckResult(KUBELET_VERSION, WARN, "the Node states no kubelet version "
                           "(status.nodeInfo.kubeletVersion = %.40r)" % (version,),
                           "check that the kubelet runs and posts its status: "
                           "kubectl get node -o wide")
    if minor >= (1, 34):
        return CheckResult(KUBELET_VERSION, PASS, "kubelet %s: DRA is GA (v1.DRAPlugin)"
                           % version)
    if minor >= (1, 33):
        return CheckResult(KUBELET_VERSION, WARN, "kubelet %s: DRA is beta there, off unless "
                           "the DynamicResourceAllocation feature gate is on (kubelet, API "
                           "server, scheduler, controller manager) and resource.k8s.io/v1beta2 "
                           "is enabled; the agent serves v1beta1.DRAPlugin to it and writes "
                           "v1beta2 slices" % version,
                           UPGRADE + "; or turn on the DynamicResourceAllocation feature gate "
                           "and --runtime-config=resource.k8s.io/v1beta2=true")
    return CheckResult(KUBELET_VERSION, FAIL, "kubelet %s: the agent publishes ResourceSlices "
                       "in resource.k8s.io/v1 or v1beta2 (Kubernetes 1.33+), not in the "
                       "v1beta1 of 1.32 and earlier" % version, UPGRADE)


def api_result(group: Optional[Dict[str, Any]]) -> CheckResult:
    """Does the API server serve resource.k8s.io/v1? ``group`` is its discovery document
    (GET /apis/resource.k8s.io), None when the group is not served at all (404)."""
    if group is None:
        return CheckResult(API_VERSION, FAIL, "the API server serves no resource.k8s.io API: "
                           "ResourceSlices cannot be published", UPGRADE)
    listed = _dict(group).get("versions")
    versions = [v["version"] for v in listed if isinstance(v, dict)
                and isinstance(v.get("version"), str)] if isinstance(listed, list) else []
    if "v1" in versions:
        return CheckResult(API_VERSION, PASS, "the API server serves resource.k8s.io/v1 (%s)"
                           % ", ".join(versions))
    if "v1beta2" in versions:
        # Kubernetes 1.33: the publisher writes v1beta2 slices (the same device shape as v1).
        return CheckResult(API_VERSION, WARN, "the API server serves resource.k8s.io %s but not "
                           "v1: edgeagent publishes v1beta2 ResourceSlices (Kubernetes 1.33, "
                           "DRA beta)" % ", ".join(versions), UPGRADE)
    return CheckResult(API_VERSION, FAIL, "the API server serves resource.k8s.io %s but neither "
                       "v1 nor v1beta2: edgeagent cannot publish its ResourceSlices"
                       % (", ".join(versions) or "without versions"), UPGRADE)


def slice_devices(items: Sequence[Any]) -> List[str]:
    """The device names of a ResourceSliceList's items, in their order, once each."""
    names: List[str] = []
    for item in items:
        spec = item.get("spec") if isinstance(item, dict) else None
        devices = spec.get("devices") if isinstance(spec, dict) else None
        for d in devices if isinstance(devices, list) else ():
            name = d.get("name") if isinstance(d, dict) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


def slices_result(node: str, items: Sequence[Any], expected: Sequence[str]) -> CheckResult:
    """This node's edgeagent.io ResourceSlices against the devices the host has."""
    names = slice_devices(items)
    if not items:
        if not expected:
            return CheckResult(SLICES, SKIP, "no GPU or NVDLA engine on this host and no "
                               "ResourceSlice of edgeagent.io for Node %s" % node)
        return CheckResult(SLICES, FAIL, "no ResourceSlice of edgeagent.io for Node %s: the "
                           "scheduler cannot allocate %s" % (node, ", ".join(expected)),
                           "start edgeagent (sudo systemctl start edgeagent) with gpu_mode = "
                           "\"dra\"; journalctl -u edgeagent says why it cannot publish")
    detail = "%d ResourceSlice%s of edgeagent.io for Node %s: %s" % (
        len(items), "" if len(items) == 1 else "s", node, ", ".join(names) or "no devices")
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing:
        return CheckResult(SLICES, WARN, "%s; missing %s, which this host has" % (
            detail, ", ".join(missing)), "the agent republishes within seconds of a change; if "
                           "it stays so: sudo systemctl restart edgeagent")
    if extra:
        return CheckResult(SLICES, WARN, "%s; %s no longer on this host" % (
            detail, ", ".join(extra)), "the running agent removes them; if none runs, "
                           "`sudo edgeagent uninstall` removes this node's slices")
    return CheckResult(SLICES, PASS, detail)


def conflict_result(sockets: Sequence[str], node: Optional[Dict[str, Any]]) -> CheckResult:
    """gpu_mode = dra while something else serves nvidia.com/gpu here: ``sockets`` are the
    device-plugin sockets found that register it, ``node`` the Node (None: unknown)."""
    evidence = ["%s (a device plugin for %s)" % (s, GPU_RESOURCE) for s in sockets]
    if node is not None:
        status = _dict(_dict(node).get("status"))
        count = _dict(status.get("allocatable")).get(GPU_RESOURCE) or \
            _dict(status.get("capacity")).get(GPU_RESOURCE)
        if count not in (None, "0", 0):
            evidence.append("Node allocatable %s: %s (a device plugin registered it with the "
                            "kubelet)" % (GPU_RESOURCE, str(count)[:20]))
        if GFD_LABEL in _dict(_dict(_dict(node).get("metadata")).get("labels")):
            evidence.append("label %s (GPU feature discovery, deployed with NVIDIA's device "
                            "plugin)" % GFD_LABEL)
    if evidence:
        return CheckResult(GPU_CONFLICT, WARN, "gpu_mode = \"dra\", but %s: pods asking for "
                           "%s get the device plugin's GPU, outside the claims DRA accounts for"
                           % ("; ".join(evidence), GPU_RESOURCE),
                           "serve the GPU one way: keep NVIDIA's device plugin and GPU feature "
                           "discovery off this node (their DaemonSets' nodeSelector or "
                           "affinity), or set gpu_mode = \"device-plugin\"")
    where = "no device-plugin socket for %s%s" % (
        GPU_RESOURCE, "" if node is None else ", none in the Node's allocatable")
    return CheckResult(GPU_CONFLICT, PASS, "%s: DRA alone serves the GPU" % where)


# --- host reads ----------------------------------------------------------------------------------

def expected_devices(ctx: DoctorContext, healthy_only: bool = False) -> List[str]:
    """The device names this host's pool should hold: gpu-0 and dla-N, from the same scan and
    resources the device plugin and the DRA driver use (an unhealthy device is published too,
    marked by its health; ``healthy_only``: only the ones a claim can be prepared with)."""
    from edgeagent.deviceplugin.model import build_resources, scan_plan
    from edgeagent.discovery.scan import probe_host
    from edgeagent.dra.names import GPU_DEVICE, dla_device

    if ctx.inventory is None:
        return []
    options = ctx.config.options.device_plugin
    resources = build_resources(ctx.inventory, probe_host(ctx.root, scan_plan(
        ctx.inventory, options, {})), options)
    names: List[str] = []
    for r in resources.values():
        units = [u for u in r.units if u.healthy or not healthy_only]
        if r.kind == "gpu" and units:
            names.append(GPU_DEVICE)
        elif r.kind == "nvdla":
            for u in units:
                m = re.match(r"nvdla(\d+)$", u.id)
                if m:
                    names.append(dla_device(int(m.group(1))))
    return sorted(names, key=lambda n: (not n.startswith("gpu"), len(n), n))


def rival_sockets(ctx: DoctorContext) -> List[str]:
    """Device-plugin sockets that register nvidia.com/gpu with the kubelet: NVIDIA's, or the
    agent's own of device-plugin mode when something still serves it."""
    from edgeagent.deviceplugin.sockets import socket_name
    from edgeagent.doctor.checks_plugin import RIVAL_SOCKETS

    directory = ctx.config.options.device_plugin.directory.rstrip("/")
    found = [directory + "/" + n for n in RIVAL_SOCKETS
             if ctx.root.lexists(directory + "/" + n)]
    own = directory + "/" + socket_name(GPU_RESOURCE)
    # A socket file of our own outlives a crash; only one that answers is served by someone.
    if ctx.root.lexists(own) and connect_problem(ctx.root.path(own), ctx.timeout) is None:
        found.append(own)
    return found


# --- checks --------------------------------------------------------------------------------------

def check_sockets(ctx: DoctorContext) -> CheckResult:
    """The registration socket (the kubelet's plugin watcher finds it) and the DRA socket (the
    kubelet dials it for NodePrepareResources) exist and accept connections."""
    from edgeagent.dra.names import dra_socket, registration_socket

    why = _not_dra(ctx)
    if why is not None:
        return CheckResult(SOCKETS, SKIP, why)
    dra = ctx.config.options.dra
    registry = dra.registry_directory.rstrip("/")
    if not ctx.root.isdir(registry):
        return CheckResult(SOCKETS, FAIL, "%s does not exist: no kubelet watches for plugins "
                           "there" % registry,
                           "start the kubelet; if its --root-dir is not /var/lib/kubelet, set "
                           "registry_directory = \"<root-dir>/plugins_registry\" and "
                           "plugins_directory = \"<root-dir>/plugins\" under [dra]")
    bad: List[str] = []
    good: List[str] = []
    for path in (registration_socket(dra.registry_directory),
                 dra_socket(dra.plugins_directory)):
        try:
            st = ctx.root.stat(path)
        except OSError:
            bad.append("%s is missing" % path)
            continue
        if not stat.S_ISSOCK(st.st_mode):
            bad.append("%s is not a socket" % path)
            continue
        problem = connect_problem(ctx.root.path(path), ctx.timeout)
        if problem is not None:
            bad.append("%s refuses connections (%s): left by a stopped agent" % (path, problem))
        else:
            good.append(path)
    if bad:
        return CheckResult(SOCKETS, FAIL, "; ".join(bad) + ("; %s accepts connections"
                                                            % good[0] if good else ""),
                           "start edgeagent with gpu_mode = \"dra\" (sudo systemctl restart "
                           "edgeagent); journalctl -u edgeagent says why a socket is not served")
    return CheckResult(SOCKETS, PASS, "%s and %s accept connections" % tuple(good))


def check_cdi_ids(ctx: DoctorContext) -> CheckResult:
    """The CDI IDs a prepared claim returns (edgeagent.io/gpu=0, edgeagent.io/dla=N) are defined
    by a spec the runtime reads; without one the container fails to start."""
    from edgeagent.cdi.spec import dla_device_id, gpu_device_id
    from edgeagent.doctor import checks_runtime as cr
    from edgeagent.dra.names import GPU_DEVICE

    why = _not_dra(ctx)
    if why is not None:
        return CheckResult(CDI_IDS, SKIP, why)
    devices = expected_devices(ctx, healthy_only=True)
    if not devices:
        return CheckResult(CDI_IDS, SKIP, "no healthy GPU or NVDLA engine on this host: no "
                           "claim can be prepared")
    ids = [gpu_device_id() if d == GPU_DEVICE else dla_device_id(int(d.split("-", 1)[1]))
           for d in devices]
    defined = {s.qualified(n): s.path for s in cr.runtime_facts(ctx).own_specs for n in s.devices}
    missing = [i for i in ids if i not in defined]
    if missing:
        return CheckResult(CDI_IDS, FAIL, "no CDI spec in /etc/cdi or /var/run/cdi defines %s: "
                           "containers of a prepared claim fail to start (\"unresolvable CDI "
                           "devices\")" % ", ".join(missing),
                           "start edgeagent (it writes its specs to /var/run/cdi first); see "
                           "cdi.edgeagent-spec")
    return CheckResult(CDI_IDS, PASS, "%s defined (%s); validity and duplicates: "
                       "cdi.edgeagent-spec, runtime.cdi-duplicates" % (
                           ", ".join(ids), ", ".join(sorted(set(defined[i] for i in ids)))))


def _runtime_config_result(rc: "RuntimeConfig", major: Optional[int], evidence: str,
                           where: str) -> Tuple[str, str]:
    """(status, detail) of one containerd config's CDI switch. Pure."""
    if rc.enable_cdi is True:
        return PASS, "enable_cdi = true in %s" % where
    if rc.enable_cdi is False:
        return FAIL, "enable_cdi = false in %s: containerd ignores the CDI devices of DRA " \
                     "claims" % where
    if major is not None and major >= 2:
        return PASS, "containerd 2.x has CDI on by default (%s)" % evidence
    if major is None:
        return WARN, "%s does not set enable_cdi and the containerd version is unknown (%s): " \
                     "1.7 has CDI off by default" % (rc.path, evidence)
    return FAIL, "containerd 1.x has CDI off unless enable_cdi = true, and %s does not set it " \
                 "(%s): DRA claims' CDI devices never reach containers" % (rc.path, evidence)


def check_runtime_cdi(ctx: DoctorContext) -> CheckResult:
    """The runtime the kubelet uses resolves CDI devices: DRA hands containers nothing else."""
    from edgeagent.discovery.runtimefacts import CRI_TABLES
    from edgeagent.doctor import checks_runtime as cr

    why = _not_dra(ctx)
    if why is not None:
        return CheckResult(RUNTIME_CDI, SKIP, why)
    # checks_runtime's readers and their per-run cache: one read of the runtime configs.
    cluster = cr.cluster_facts(ctx)
    facts = cr.runtime_facts(ctx)
    k3s_here = cluster.k3s_unit is not None or bool(cr.k3s_configs(ctx))
    if cluster.cri_dockerd or (k3s_here and cr.k3s_uses_docker(cluster)):
        return CheckResult(RUNTIME_CDI, FAIL, "the kubelet runs pods through Docker (%s), and "
                           "cri-dockerd passes no CDI devices: DRA claims give containers "
                           "nothing" % (cluster.cri_dockerd or "k3s --docker"),
                           "run pods through containerd (k3s without --docker; kubeadm with "
                           "containerd's socket) or set gpu_mode = \"device-plugin\"")
    if k3s_here and not cr.k3s_external_runtime(cluster):
        rc = cr.k3s_config_in_use(ctx)
        if rc is None:
            return CheckResult(RUNTIME_CDI, WARN, "k3s has generated no containerd config yet",
                               "sudo systemctl start %s" % (cluster.k3s_unit or "k3s"))
        major, evidence = cr.k3s_containerd_major(ctx)
        table = CRI_TABLES.get(rc.version or 2, CRI_TABLES[2])
        status, detail = _runtime_config_result(rc, major, evidence, cr.line_of(
            ctx, rc.path, r"enable_cdi"))
        if status == PASS:
            return CheckResult(RUNTIME_CDI, PASS, "k3s's " + detail)
        templated = [p for p, text in cluster.k3s_templates
                     if re.search(r"^\s*enable_cdi\s*=\s*true", text, re.M)]
        if templated:
            return CheckResult(RUNTIME_CDI, FAIL, "%s; %s sets it, but k3s has not rendered it "
                               "since" % (detail, templated[0]),
                               "sudo systemctl restart %s" % (cluster.k3s_unit or "k3s"))
        return CheckResult(RUNTIME_CDI, status, detail,
                           "k3s regenerates %s on every start: copy it to %s beside it, add "
                           "enable_cdi = true and cdi_spec_dirs = [\"/etc/cdi\", "
                           "\"/var/run/cdi\"] under [plugins.\"%s\"], and sudo systemctl "
                           "restart %s" % (rc.path, "config-v3.toml.tmpl" if rc.version == 3
                                           else "config.toml.tmpl", table,
                                           cluster.k3s_unit or "k3s"))
    crio = next((r for r in facts.runtimes if r.engine == "cri-o"), None)
    etc = next((r for r in facts.runtimes if r.path == cr.ETC_CONTAINERD), None)
    if etc is None and crio is not None:
        return CheckResult(RUNTIME_CDI, PASS, "CRI-O (%s) resolves CDI devices by default"
                           % crio.path)
    if etc is None:
        problem = cr.problem_line(ctx, cr.ETC_CONTAINERD)
        if problem:
            return CheckResult(RUNTIME_CDI, FAIL, problem, "fix the syntax of %s"
                               % cr.ETC_CONTAINERD)
        if cluster.containerd_package is None:
            return CheckResult(RUNTIME_CDI, SKIP, "no containerd, k3s or CRI-O found to check")
        major, evidence = cr.containerd_major(
            # containerd without a config runs on its built-in defaults
            _no_config(cr.ETC_CONTAINERD), cluster.containerd_package)
        if major is not None and major >= 2:
            return CheckResult(RUNTIME_CDI, PASS, "containerd 2.x has CDI on by default (%s; no "
                               "%s)" % (evidence, cr.ETC_CONTAINERD))
        return CheckResult(RUNTIME_CDI, FAIL, "no %s, and containerd 1.x's defaults leave CDI "
                           "off (%s)" % (cr.ETC_CONTAINERD, evidence),
                           "containerd config default | sudo tee %s, set enable_cdi = true "
                           "under [plugins.\"%s\"], and sudo systemctl restart containerd"
                           % (cr.ETC_CONTAINERD, CRI_TABLES[2]))
    major, evidence = cr.containerd_major(etc, cluster.containerd_package)
    status, detail = _runtime_config_result(etc, major, evidence, cr.line_of(
        ctx, etc.path, r"enable_cdi"))
    if status == PASS:
        return CheckResult(RUNTIME_CDI, PASS, detail)
    table = CRI_TABLES.get(etc.version or 2, CRI_TABLES[2])
    # No --fix edit from here: checks_runtime plans the edits of this file (enable_cdi in
    # runtime.containerd-cdi, SystemdCgroup) in its own thread, and two modules planning one
    # file concurrently would make two edits of it, the second refused as "changed since".
    return CheckResult(RUNTIME_CDI, status, detail,
                       "set enable_cdi = true under [plugins.\"%s\"] in %s and sudo systemctl "
                       "restart containerd" % (table, etc.path))


def _no_config(path: str) -> "RuntimeConfig":
    from edgeagent.discovery.runtimefacts import RuntimeConfig

    return RuntimeConfig("containerd", path, (), None)


async def check_cluster(ctx: DoctorContext) -> List[CheckResult]:
    """The kubelet's version (from its Node), resource.k8s.io/v1 discovery, this node's
    ResourceSlices, and who else serves nvidia.com/gpu: one bounded pass over the API."""
    from edgeagent.kube.client import CredentialCache, KubeClient
    from edgeagent.kube.credentials import find_credentials
    from edgeagent.kube.errors import CredentialsError, KubeError
    from edgeagent.kube.nodename import resolve_node_name
    from edgeagent.kube.tls import make_ssl_context

    why = _not_dra(ctx)
    if why is not None:
        return [CheckResult(n, SKIP, why) for n in NETWORK]
    options = ctx.config.options
    rivals = rival_sockets(ctx)
    try:
        creds = find_credentials(ctx.root, options.kube.kubeconfig)
        make_ssl_context(creds)
    except CredentialsError as e:   # NoCredentials too: kube.credentials says what to do
        return [CheckResult(n, SKIP, "no API credentials (see kube.credentials): %s" % e)
                for n in NETWORK[:-1]] + [conflict_result(rivals, None)]
    name, _ = resolve_node_name(options.kube, ctx.root, creds)
    timeout = float(ctx.timeout)
    deadline = time.monotonic() + max(NETWORK_BUDGET, timeout)

    def step() -> float:
        return max(0.05, min(timeout, deadline - time.monotonic()))

    results: List[CheckResult] = []
    node: Optional[Dict[str, Any]] = None
    async with KubeClient(CredentialCache(lambda: creds), timeout=timeout) as client:
        try:
            node = await client.get_node(name, timeout=step())
            results.append(kubelet_result(node))
        except KubeError as e:
            results.append(CheckResult(KUBELET_VERSION, SKIP, "Node %s not readable (see "
                                       "kube.node): %s" % (name, e)))
        try:
            resp = await client.request("GET", "/apis/" + GROUP, timeout=step())
            group = resp.body if isinstance(resp.body, dict) else {}
            results.append(api_result(group))
        except KubeError as e:
            if e.status == 404:
                results.append(api_result(None))
            else:
                results.append(CheckResult(API_VERSION, SKIP, "discovery of %s failed (see "
                                           "kube.reachable): %s" % (GROUP, e)))
        if results[-1].status in (PASS, WARN):
            # the version the publisher writes in: v1, or v1beta2 (PASS or WARN above)
            version = "v1" if results[-1].status == PASS else "v1beta2"
            results.append(await _slices(ctx, client, name, step(), version))
        else:
            results.append(CheckResult(SLICES, SKIP, "no resource.k8s.io version the agent "
                                       "writes slices in is known to be served (see %s)"
                                       % API_VERSION))
    results.append(conflict_result(rivals, node))
    return results


async def _slices(ctx: DoctorContext, client: Any, node: str, timeout: float,
                  version: str = "v1") -> CheckResult:
    from edgeagent.dra.names import DRIVER
    from edgeagent.kube.errors import KubeError

    selector = quote("spec.nodeName=%s,spec.driver=%s" % (node, DRIVER), safe="")
    try:
        resp = await client.request("GET", "/apis/%s/%s/resourceslices?fieldSelector=%s"
                                    % (GROUP, version, selector), timeout=timeout)
    except KubeError as e:
        if e.status == 403:
            return CheckResult(SLICES, FAIL, "this identity may not list Node %s's "
                               "ResourceSlices: %s" % (node, e),
                               "use the kubelet's own credentials: the Node authorizer lets a "
                               "node list and write the ResourceSlices of its own nodeName")
        return CheckResult(SLICES, SKIP, "listing ResourceSlices failed: %s" % e)
    items = resp.body.get("items") if isinstance(resp.body, dict) else None
    if not isinstance(items, list):
        return CheckResult(SLICES, SKIP, "the ResourceSlice list is not a list")
    # The field selector is the server's to apply; a server that ignores it must not make
    # another node's or driver's slices count here.
    mine = [i for i in items if isinstance(i, dict) and isinstance(i.get("spec"), dict)
            and i["spec"].get("nodeName") == node and i["spec"].get("driver") == DRIVER]
    return slices_result(node, mine, expected_devices(ctx))


CHECKS = [check_sockets, check_runtime_cdi, check_cdi_ids, check_cluster]
