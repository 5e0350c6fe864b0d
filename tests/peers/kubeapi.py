"""A local HTTPS server that behaves like the Kubernetes API for Nodes, for tests and benchmarks.

It is as unkind as a real kube-apiserver where the agent could go wrong:

- every answer is sent with chunked transfer encoding, in pieces of about one TCP segment with a
  pause (and a flush) between them, as a real API server streams a 4-6 KiB Node: a client that
  reads the body with one ``resp.content.read(n)`` gets only the first piece;
- Nodes look like real ones (managedFields, status with conditions, addresses, nodeInfo and
  images: over 5 KiB of JSON);
- the Node authorizer of Kubernetes 1.32+ (AuthorizeNodeWithSelectors): a node identity (client
  certificate ``CN=system:node:<name>`` in group ``system:nodes``, or a token the server maps to
  that user) may get, list (with ``fieldSelector=metadata.name=<name>``) and patch only its own
  Node, with the real 403 message; NodeRestriction refuses its kubernetes.io/k8s.io labels.

With ``nodefeature_api=True`` it also serves NFD's NodeFeature objects
(``nfd.k8s-sigs.io/v1alpha1``, namespaced: list across namespaces or in one, with an equality
label selector; get, create, update with resourceVersion preconditions, delete) under RBAC as a
real cluster has it: nothing grants a node identity that group, so it gets the real 403 until
:meth:`grant` binds a role (SelfSubjectAccessReview answers from the same rules); without the API
(NFD not installed) the group's paths answer ``404 page not found`` in plain text, as
kube-apiserver does. :meth:`nfd_master_sync` does what nfd-master does with them: writes their
labels to the Node (overwriting), removes the ones it listed before and no longer wants, and
lists its labels in the ``nfd.node.kubernetes.io/feature-labels`` annotation.

It serves ``resource.k8s.io`` (DRA) as kube-apiserver 1.34 does: discovery of the versions it
is given (v1, v1beta2, v1beta1 by default; a version it does not serve is a plain-text 404);
ResourceSlices in v1 and v1beta2 (create, also with generateName; get; list with a field
selector on spec.nodeName, spec.driver or metadata.name; replace with a resourceVersion
precondition: 409, or 422 without one; delete with preconditions), checked against the v1
validation rules a driver can break (:func:`slice_problems`: names, at most 128 devices, one
value type per attribute, attribute name and value limits, consumable-capacity request
policies) with quantities stored in canonical form; with ``consumable_capacity=False`` (the
DRAConsumableCapacity gate off) ``allowMultipleAllocations`` and ``requestPolicy`` are dropped
without a word. ResourceClaims can be read (get) once :meth:`add_claim` made one with its
allocation and the node its pod is bound to. The Node authorizer's rules for both
(plugin/pkg/auth/authorizer/node/node_authorizer.go, with NodeRestriction): a node creates only
slices whose spec.nodeName is itself, gets, updates and deletes only such slices (a slice that
does not exist is a 403 for it, not a 404: the graph has no edge to it), lists only with its own
spec.nodeName field selector (deletecollection too: how the kubelet wipes a node's slices), and
gets a claim only when a pod bound to it uses the claim.

It also enforces TLS with a CA of its own (trustme), client-certificate and bearer-token
authentication, JSON merge patch semantics (null deletes), ``metadata.resourceVersion``
preconditions (409), label syntax (422), SelfSubjectAccessReview, and a Date header (optionally
skewed). Faults on demand: any status (401/403/429/500...) with Retry-After, and dropped
connections.

In-process::

    async with KubeApiServer(tmpdir, nodes=["jetson-1"]) as api:
        path = api.write_kubeconfig("system:node:jetson-1")

As a subprocess (end-to-end tests; faults through the admin-only /_test/ endpoints)::

    python -m tests.peers.kubeapi --dir DIR [--port N] [--node NAME ...]

prints ``READY <url>`` once serving, and writes DIR/ca.crt, DIR/kubeconfig-<node> (client
certificate of system:node:<node>) and DIR/kubeconfig-admin (bearer token).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import email.utils
import json
import os
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import trustme
from aiohttp import web

ADMIN_TOKEN = "edgeagent-test-admin-token"
# Request storage keys (typed keys where aiohttp has them, to avoid its NotAppKeyWarning).
_USER: Any = web.RequestKey("user", str) if hasattr(web, "RequestKey") else "user"
_GROUPS: Any = web.RequestKey("groups", list) if hasattr(web, "RequestKey") else "groups"
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# NodeRestriction: labels a kubelet may set inside the kubernetes.io/k8s.io namespaces.
_NODE_ALLOWED = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
_NODE_ALLOWED_KEYS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
}


@dataclass
class Fault:
    status: int = 500
    count: int = 1
    method: Optional[str] = None
    path: Optional[str] = None           # substring of the request path
    retry_after: Optional[str] = None
    drop: bool = False                   # close the connection without an answer
    delay: float = 0.0                   # seconds before answering (or dropping)
    body: Optional[str] = None           # answer this text (with ``status``) instead

    def matches(self, request: web.Request) -> bool:
        if self.count <= 0:
            return False
        if self.method and request.method != self.method:
            return False
        return not self.path or self.path in request.path


@dataclass
class Record:
    method: str
    path: str
    status: int
    user: str
    time: float = field(default_factory=time.monotonic)


def _status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def label_problem(key: str, value: Any) -> Optional[str]:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS.fullmatch(prefix)):
        return "invalid label key prefix %r" % key
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        return "invalid label key %r" % key
    if not isinstance(value, str) or (value and (len(value) > 63 or not _NAME.fullmatch(value))):
        return "invalid label value %r" % (value,)
    return None


# --- ResourceSlice rules (k8s.io/kubernetes pkg/apis/resource/validation, v1) ----------------

SLICE_VERSIONS_SERVED = ("v1", "v1beta2")   # v1beta1 slices (basic: wrapper) are not served
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PRE = r"(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"     # semver.org's pre-release part
_SEMVER = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
                     r"(-%s(\.%s)*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?" % (_PRE, _PRE))
_QTY = re.compile(r"([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_QTY_FACTORS = {"": 1, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
                "Pi": 2 ** 50, "Ei": 2 ** 60, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9,
                "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}
MAX_SLICE_DEVICES = 128
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_ATTRIBUTE_VALUE = 64
MAX_ID = 32


def quantity_value(text: Any) -> Optional[int]:
    """An integer quantity (the only kind this server takes) in base units; None if not one."""
    m = _QTY.fullmatch(text) if isinstance(text, str) else None
    return int(m.group(1)) * _QTY_FACTORS[m.group(2) or ""] if m else None


def canonical_quantity(text: str) -> str:
    """kube-apiserver stores a binary-suffixed quantity in its largest exact suffix."""
    m = _QTY.fullmatch(text)
    if not m or (m.group(2) or "Ki")[-1:] != "i":
        return text
    value = quantity_value(text) or 0
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        if value and value % _QTY_FACTORS[suffix] == 0:
            return "%d%s" % (value // _QTY_FACTORS[suffix], suffix)
    return str(value)


def _qualified_name_problem(name: Any) -> Optional[str]:
    if not isinstance(name, str):
        return "not a string"
    domain, sep, ident = name.rpartition("/")
    if sep and (not domain or len(domain) > 63 or not _DNS.fullmatch(domain)):
        return "a domain must be a DNS subdomain of at most 63 characters"
    if not ident or len(ident) > MAX_ID or not _C_IDENTIFIER.fullmatch(ident):
        return "must be a C identifier of at most %d characters" % MAX_ID
    return None


def _attribute_problem(value: Any) -> Optional[str]:
    if not isinstance(value, dict) or len(value) != 1:
        return "exactly one value must be specified"
    (kind, v), = value.items()
    if kind == "bool":
        return None if isinstance(v, bool) else "bool: not a boolean"
    if kind == "int":
        return None if isinstance(v, int) and not isinstance(v, bool) else "int: not an integer"
    if kind in ("string", "version"):
        if not isinstance(v, str) or len(v) > MAX_ATTRIBUTE_VALUE:
            return "%s: must be a string of at most %d bytes" % (kind, MAX_ATTRIBUTE_VALUE)
        if kind == "version" and not _SEMVER.fullmatch(v):
            return "version: must be a semantic version"
        return None
    return "unknown value type %r" % kind


def _policy_problems(where: str, value: int, policy: Any) -> List[str]:
    if not isinstance(policy, dict):
        return ["%s: must be an object" % where]
    out = []
    default = quantity_value(policy.get("default")) if "default" in policy else None
    valid_range = policy.get("validRange")
    if valid_range is not None:
        if not isinstance(valid_range, dict) or quantity_value(valid_range.get("min")) is None:
            return ["%s.validRange.min: Required value" % where]
        low = quantity_value(valid_range["min"]) or 0
        high = quantity_value(valid_range.get("max")) if "max" in valid_range else None
        if default is None:
            out.append("%s.default: Required value" % where)
        if low > value:
            out.append("%s.validRange.min: min is larger than capacity value" % where)
        if default is not None and default < low:
            out.append("%s.validRange.min: default is less than min" % where)
        if high is not None:
            if low > high or high > value:
                out.append("%s.validRange.max: Invalid value" % where)
            if default is not None and default > high:
                out.append("%s.validRange.max: default is more than max" % where)
    return out


def slice_problems(body: Dict[str, Any]) -> List[str]:
    """What kube-apiserver's validation refuses in a v1 ResourceSlice (the rules a node-local
    driver can break), as field errors."""
    out: List[str] = []
    name = body["metadata"].get("name")
    if not isinstance(name, str) or not name or len(name) > 253 or not _DNS.fullmatch(name):
        out.append("metadata.name: Invalid value: %r: a lowercase RFC 1123 subdomain" % (name,))
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return out + ["spec: Required value"]
    driver = spec.get("driver")
    if not isinstance(driver, str) or not driver or len(driver) > 63 or \
            not _DNS.fullmatch(driver):
        out.append("spec.driver: Invalid value: %r" % (driver,))
    pool = spec.get("pool") if isinstance(spec.get("pool"), dict) else {}
    pool_name = pool.get("name")
    if not isinstance(pool_name, str) or not pool_name or len(pool_name) > 253 or \
            not all(_DNS.fullmatch(p) for p in pool_name.split("/")):
        out.append("spec.pool.name: Invalid value: %r" % (pool_name,))
    gen, count = pool.get("generation"), pool.get("resourceSliceCount")
    if not isinstance(gen, int) or isinstance(gen, bool) or not 0 <= gen < 2 ** 63:
        out.append("spec.pool.generation: Invalid value: %r" % (gen,))
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        out.append("spec.pool.resourceSliceCount: Invalid value: %r" % (count,))
    chosen = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
              if spec.get(k) not in (None, False, "")]
    if len(chosen) != 1:
        out.append("spec: Invalid value: exactly one of `nodeName`, `nodeSelector`, "
                   "`allNodes`, `perDeviceNodeSelection` is required")
    node = spec.get("nodeName")
    if node is not None and (not isinstance(node, str) or not _DNS.fullmatch(node)):
        out.append("spec.nodeName: Invalid value: %r" % (node,))
    devices = spec.get("devices") if spec.get("devices") is not None else []
    if not isinstance(devices, list):
        return out + ["spec.devices: must be a list"]
    if len(devices) > MAX_SLICE_DEVICES:
        return out + ["spec.devices: Too many: %d: must have at most %d items"
                      % (len(devices), MAX_SLICE_DEVICES)]
    seen = set()
    for i, device in enumerate(devices):
        where = "spec.devices[%d]" % i
        if not isinstance(device, dict):
            out.append("%s: must be an object" % where)
            continue
        dname = device.get("name")
        if not isinstance(dname, str) or len(dname) > 63 or not _DNS_LABEL.fullmatch(dname):
            out.append("%s.name: Invalid value: %r: a DNS label" % (where, dname))
        elif dname in seen:
            out.append("%s.name: Duplicate value: %r" % (where, dname))
        seen.add(dname)
        attributes = device.get("attributes") or {}
        capacity = device.get("capacity") or {}
        if not isinstance(attributes, dict) or not isinstance(capacity, dict):
            out.append("%s: attributes and capacity must be maps" % where)
            continue
        if len(attributes) + len(capacity) > MAX_ATTRIBUTES_AND_CAPACITIES:
            out.append("%s: Too many: attributes and capacities" % where)
        for key, value in attributes.items():
            problem = _qualified_name_problem(key) or _attribute_problem(value)
            if problem:
                out.append("%s.attributes[%s]: %s" % (where, key, problem))
        multiple = device.get("allowMultipleAllocations") is True
        for key, value in capacity.items():
            problem = _qualified_name_problem(key)
            amount = quantity_value(value.get("value")) if isinstance(value, dict) else None
            if problem or amount is None:
                out.append("%s.capacity[%s]: %s" % (where, key, problem or "value: quantity"))
                continue
            if "requestPolicy" in value:
                if not multiple:
                    out.append("%s.capacity[%s].requestPolicy: Forbidden: "
                               "allowMultipleAllocations must be true" % (where, key))
                else:
                    out.extend(_policy_problems("%s.capacity[%s].requestPolicy" % (where, key),
                                                amount, value["requestPolicy"]))
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _image(name: str, tag: str, size: int) -> Dict[str, Any]:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, name).hex * 2
    return {"names": ["%s@sha256:%s" % (name, digest), "%s:%s" % (name, tag)], "sizeBytes": size}


def realistic_node(name: str, resource_version: str) -> Dict[str, Any]:
    """A Node as a k3s/kubeadm kubelet on a Jetson registers it: managedFields, status with
    conditions, addresses, nodeInfo and images; over 5 KiB of JSON, like the real thing."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cond = [("MemoryPressure", "False", "KubeletHasSufficientMemory",
             "kubelet has sufficient memory available"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID",
             "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
    images = [_image("nvcr.io/nvidia/l4t-jetpack", "r36.4.0", 9876543210),
              _image("nvcr.io/nvidia/l4t-base", "r36.2.0", 765432109),
              _image("docker.io/rancher/mirrored-pause", "3.6", 253243),
              _image("docker.io/rancher/klipper-helm", "v0.9.3-build20241008", 70442215),
              _image("docker.io/rancher/mirrored-coredns-coredns", "1.11.3", 16948420),
              _image("docker.io/rancher/local-path-provisioner", "v0.0.30", 20218716),
              _image("docker.io/rancher/mirrored-metrics-server", "v0.7.2", 19494617),
              _image("registry.k8s.io/kube-proxy", "v1.32.0", 26770000),
              _image("quay.io/prometheus/node-exporter", "v1.8.2", 11320000)]
    kubelet_fields = {"f:metadata": {"f:annotations": {
        ".": {}, "f:node.alpha.kubernetes.io/ttl": {},
        "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
        "f:labels": {".": {}, "f:beta.kubernetes.io/arch": {}, "f:beta.kubernetes.io/os": {},
                     "f:kubernetes.io/arch": {}, "f:kubernetes.io/hostname": {},
                     "f:kubernetes.io/os": {}}}}
    status_fields = {"f:status": {"f:allocatable": {"f:cpu": {}, "f:memory": {}},
                                  "f:capacity": {"f:cpu": {}, "f:memory": {}},
                                  "f:conditions": {"k:{\"type\":\"Ready\"}": {
                                      "f:lastHeartbeatTime": {}, "f:message": {},
                                      "f:reason": {}, "f:status": {}}},
                                  "f:images": {}, "f:nodeInfo": {"f:bootID": {}}}}
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {
            "name": name, "uid": str(uuid.uuid4()), "resourceVersion": resource_version,
            "creationTimestamp": now,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "arm64", "beta.kubernetes.io/arch": "arm64",
                       "beta.kubernetes.io/os": "linux"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            "managedFields": [
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": now,
                 "fieldsType": "FieldsV1", "fieldsV1": kubelet_fields},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": now,
                 "fieldsType": "FieldsV1", "fieldsV1": status_fields, "subresource": "status"},
                {"manager": "kube-controller-manager", "operation": "Update",
                 "apiVersion": "v1", "time": now, "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:podCIDR": {}, "f:podCIDRs": {
                     ".": {}, "v:\"10.42.0.0/24\"": {}}}}},
            ],
        },
        "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"],
                 "providerID": "k3s://%s" % name},
        "status": {
            "capacity": {"cpu": "6", "ephemeral-storage": "59762092Ki", "hugepages-1Gi": "0",
                         "hugepages-2Mi": "0", "hugepages-32Mi": "0", "hugepages-64Ki": "0",
                         "memory": "7802016Ki", "pods": "110"},
            "allocatable": {"cpu": "6", "ephemeral-storage": "58137300965", "hugepages-1Gi": "0",
                            "hugepages-2Mi": "0", "hugepages-32Mi": "0", "hugepages-64Ki": "0",
                            "memory": "7802016Ki", "pods": "110"},
            "conditions": [{"type": t, "status": st, "lastHeartbeatTime": now,
                            "lastTransitionTime": now, "reason": r, "message": m}
                           for t, st, r, m in cond],
            "addresses": [{"type": "InternalIP", "address": "192.0.2.17"},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": uuid.uuid4().hex, "systemUUID": str(uuid.uuid4()),
                         "bootID": str(uuid.uuid4()), "kernelVersion": "5.15.148-tegra",
                         "osImage": "Ubuntu 22.04.5 LTS", "containerRuntimeVersion":
                         "containerd://1.7.23-k3s2", "kubeletVersion": "v1.32.0+k3s1",
                         "kubeProxyVersion": "v1.32.0+k3s1", "operatingSystem": "linux",
                         "architecture": "arm64"},
            "images": images,
        },
    }


class KubeApiServer:
    """The fake API server. ``nodes`` are created at start; more with :meth:`add_node`."""

    def __init__(self, directory: str, nodes: Any = ("jetson-1",), host: str = "127.0.0.1",
                 port: int = 0, tls: bool = True, nodefeature_api: bool = False,
                 resource_versions: Any = ("v1", "v1beta2", "v1beta1"),
                 consumable_capacity: bool = True) -> None:
        self.directory = directory
        self.nodefeature_api = nodefeature_api
        # resource.k8s.io versions served, preferred first (() : none, as before 1.26).
        self.resource_versions: Tuple[str, ...] = tuple(resource_versions)
        self.consumable_capacity = consumable_capacity   # the DRAConsumableCapacity gate
        self.slices: Dict[str, Dict[str, Any]] = {}
        self.claims: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.claim_nodes: Dict[Tuple[str, str], Optional[str]] = {}
        self.nodefeatures: Dict[Tuple[str, str], Dict[str, Any]] = {}
        # RBAC for nodefeatures: (user or group, verbs, namespace or None for cluster-wide)
        self.rbac: List[Tuple[str, frozenset, Optional[str]]] = []
        self.tls = tls                 # False: plain http:// (bearer tokens only)
        os.makedirs(directory, exist_ok=True)
        self.host = host
        self.port = port
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.ca_path = os.path.join(directory, "ca.crt")
        self.ca.cert_pem.write_to_path(self.ca_path)
        self.nodes: Dict[str, Dict[str, Any]] = {}
        self.tokens: Dict[str, str] = {ADMIN_TOKEN: "admin"}
        self.grants: Dict[str, set] = {"admin": {"*"}}   # non-node users: allowed verbs
        self.revoked_serials: set = set()
        self.faults: List[Fault] = []
        self.records: List[Record] = []
        self.clock_offset = 0.0
        self.max_rps = 0               # >0: answer 429 beyond this many requests per second
        self.answer_delay = 0.0        # seconds before every answer (a far-away server)
        self._second = (0, 0)          # (current whole second, requests in it)
        self.resource_version = 100
        # Answers go out in pieces this big with this pause between them (see the docstring).
        self.piece_bytes = 1400
        self.piece_pause = 0.002
        self._runner: Optional[web.AppRunner] = None
        self._issued = 0
        for name in nodes:
            self.add_node(name)

    # --- set-up ---------------------------------------------------------------------------

    def add_node(self, name: str, labels: Optional[Dict[str, str]] = None,
                 annotations: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        self.resource_version += 1
        node = realistic_node(name, str(self.resource_version))
        node["metadata"]["labels"].update(labels or {})
        node["metadata"]["annotations"].update(annotations or {})
        self.nodes[name] = node
        return node

    def labels(self, name: str) -> Dict[str, str]:
        return dict(self.nodes[name]["metadata"].get("labels") or {})

    def annotations(self, name: str) -> Dict[str, str]:
        return dict(self.nodes[name]["metadata"].get("annotations") or {})

    def edit_node(self, name: str, patch: Dict[str, Any]) -> None:
        """Change a Node as another client would (bumps resourceVersion)."""
        meta = merge_patch(self.nodes[name], patch)
        self.resource_version += 1
        meta["metadata"]["resourceVersion"] = str(self.resource_version)
        self.nodes[name] = meta

    # --- NFD's NodeFeature objects --------------------------------------------------------------

    def grant(self, subject: str, verbs: Any = ("get", "list", "watch"),
              namespace: Optional[str] = None) -> None:
        """Bind a role on nodefeatures to a user or group: cluster-wide (a ClusterRoleBinding)
        or in ``namespace`` (a RoleBinding)."""
        self.rbac.append((subject, frozenset(verbs), namespace))

    def add_nodefeature(self, node: str, labels: Dict[str, str],
                        namespace: str = "gpu-operator", name: Optional[str] = None,
                        node_label: bool = True) -> Dict[str, Any]:
        """A NodeFeature as GFD makes it: ``nvidia-features-for-<node>`` in its namespace,
        labelled with the node's name, its labels in ``spec.labels``."""
        self.resource_version += 1
        name = name or "nvidia-features-for-" + node
        obj = {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature",
               "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                            "resourceVersion": str(self.resource_version),
                            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
                            "labels": {"nfd.node.kubernetes.io/node-name": node}
                            if node_label else {}},
               "spec": {"features": {"flags": {}, "attributes": {}, "instances": {}},
                        "labels": dict(labels)}}
        self.nodefeatures[(namespace, name)] = obj
        return obj

    def delete_nodefeature(self, namespace: str, name: str) -> None:
        del self.nodefeatures[(namespace, name)]

    def nfd_master_sync(self, node: str, annotation: str = "nfd.node.kubernetes.io/feature-labels"
                        ) -> None:
        """What nfd-master does for ``node``: its NodeFeatures' labels onto the Node."""
        wanted: Dict[str, str] = {}
        for obj in self.nodefeatures.values():
            if obj["metadata"].get("labels", {}).get("nfd.node.kubernetes.io/node-name") == node:
                wanted.update(obj["spec"].get("labels") or {})
        meta = self.nodes[node]["metadata"]
        default = "feature.node.kubernetes.io/"
        listed = [n if "/" in n else default + n
                  for n in (meta.get("annotations") or {}).get(annotation, "").split(",") if n]
        labels: Dict[str, Any] = {k: None for k in listed if k not in wanted}
        labels.update(wanted)
        names = sorted(k[len(default):] if k.startswith(default) else k for k in wanted)
        self.edit_node(node, {"metadata": {"labels": labels, "annotations": {
            annotation: ",".join(names) if names else None}}})

    def issue_client_cert(self, user: str, groups: Any = ()) -> Any:
        self._issued += 1
        org = ",".join(groups) if groups else None
        return self.ca.issue_cert("client-%d.invalid" % self._issued, common_name=user,
                                  organization_name=org)

    def revoke_cert_file(self, path: str) -> None:
        """Reject the certificate in ``path`` from now on (401), as after a rotation."""
        self.revoked_serials.add(ssl._ssl._test_decode_cert(path)["serialNumber"])

    def add_token(self, user: str, token: Optional[str] = None) -> str:
        token = token or "tok-" + uuid.uuid4().hex
        self.tokens[token] = user
        return token

    def inject(self, status: int = 500, count: int = 1, method: Optional[str] = None,
               path: Optional[str] = None, retry_after: Optional[Any] = None,
               drop: bool = False, delay: float = 0.0, body: Optional[str] = None) -> Fault:
        fault = Fault(status, count, method, path,
                      None if retry_after is None else str(retry_after), drop, delay, body)
        self.faults.append(fault)
        return fault

    def requests_by(self, method: Optional[str] = None, path: Optional[str] = None) -> List[Record]:
        return [r for r in self.records if (method is None or r.method == method)
                and (path is None or path in r.path)]

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % ("https" if self.tls else "http", host, self.port)

    def write_kubeconfig(self, user: str = "system:node:jetson-1", auth: str = "cert",
                         ca: str = "file", path: Optional[str] = None,
                         groups: Any = None, server: Optional[str] = None) -> str:
        """A kubeconfig for ``user``. auth: cert (files), cert-data, token, token-file, none;
        ca: file, data, insecure, none. Returns its path."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        path = path or os.path.join(self.directory, "kubeconfig-%s-%s" % (safe, auth))
        base = os.path.splitext(path)[0]
        cluster: Dict[str, Any] = {"server": server or self.url}
        if ca == "file":
            cluster["certificate-authority"] = self.ca_path
        elif ca == "data":
            cluster["certificate-authority-data"] = _b64(self.ca.cert_pem.bytes())
        elif ca == "insecure":
            cluster["insecure-skip-tls-verify"] = True
        u: Dict[str, Any] = {}
        if auth in ("cert", "cert-data"):
            if groups is None:
                groups = ["system:nodes"] if user.startswith("system:node:") else []
            cert = self.issue_client_cert(user, groups)
            if auth == "cert":
                cert_path, key_path = base + ".crt", base + ".key"
                cert.cert_chain_pems[0].write_to_path(cert_path)
                cert.private_key_pem.write_to_path(key_path)
                u = {"client-certificate": cert_path, "client-key": key_path}
            else:
                u = {"client-certificate-data": _b64(cert.cert_chain_pems[0].bytes()),
                     "client-key-data": _b64(cert.private_key_pem.bytes())}
        elif auth == "token":
            u = {"token": self.add_token(user)}
        elif auth == "token-file":
            token_path = base + ".token"
            with open(token_path, "w") as f:
                f.write(self.add_token(user) + "\n")
            u = {"tokenFile": token_path}
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
               "clusters": [{"name": "test", "cluster": cluster}],
               "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}],
               "users": [{"name": "u", "user": u}], "preferences": {}}
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
        return path

    def write_kubelet_root(self, root: str, node: str = "jetson-1", flavor: str = "kubeadm",
                           ca: str = "data", user: Optional[str] = None) -> str:
        """Make ``root`` look like a host whose kubelet joined this cluster: kubeadm's
        /etc/kubernetes/kubelet.conf + /var/lib/kubelet/pki/kubelet-client-current.pem, or k3s's
        /var/lib/rancher/k3s/agent/kubelet.kubeconfig with its files (host paths inside, as on
        a real node). Returns the kubeconfig's real path."""
        user = user or "system:node:" + node
        cert = self.issue_client_cert(user, ["system:nodes"] if user.startswith(
            "system:node:") else [])
        if flavor == "kubeadm":
            kc_host = "/etc/kubernetes/kubelet.conf"
            pem_host = "/var/lib/kubelet/pki/kubelet-client-current.pem"
            files = {pem_host: cert.private_key_and_cert_chain_pem.bytes()}
            u = {"client-certificate": pem_host, "client-key": pem_host}
            ca_host = "/etc/kubernetes/pki/ca.crt"
        else:
            agent = "/var/lib/rancher/k3s/agent/"
            kc_host = agent + "kubelet.kubeconfig"
            files = {agent + "client-kubelet.crt": cert.cert_chain_pems[0].bytes(),
                     agent + "client-kubelet.key": cert.private_key_pem.bytes()}
            u = {"client-certificate": agent + "client-kubelet.crt",
                 "client-key": agent + "client-kubelet.key"}
            ca_host = agent + "server-ca.crt"
        cluster: Dict[str, Any] = {"server": self.url}
        if ca == "data":
            cluster["certificate-authority-data"] = _b64(self.ca.cert_pem.bytes())
        elif ca == "file":
            files[ca_host] = self.ca.cert_pem.bytes()
            cluster["certificate-authority"] = ca_host
        elif ca == "insecure":
            cluster["insecure-skip-tls-verify"] = True
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "kubelet",
               "clusters": [{"name": "c", "cluster": cluster}],
               "contexts": [{"name": "kubelet", "context": {"cluster": "c", "user": user}}],
               "users": [{"name": user, "user": u}]}
        files[kc_host] = json.dumps(doc, indent=2).encode()
        for host_path, data in files.items():
            real = os.path.join(root, host_path.lstrip("/"))
            os.makedirs(os.path.dirname(real), exist_ok=True)
            with open(real, "wb") as f:
                f.write(data)
        return os.path.join(root, kc_host.lstrip("/"))

    # --- resource.k8s.io: ResourceSlices and ResourceClaims (DRA) ------------------------------

    def add_claim(self, namespace: str, name: str, node: Optional[str],
                  results: Any = (), pod: str = "", request: str = "gpu",
                  uid: str = "") -> Dict[str, Any]:
        """A ResourceClaim the scheduler allocated and reserved for ``pod`` (made up when not
        given), bound to ``node`` (None: a pod on no node yet): what the Node authorizer's
        graph needs to let that node get the claim. ``results``: dicts (request, driver,
        pool, device, optional shareID/consumedCapacity) or device names of this driver in
        the node's pool. ``uid``: the claim's (the kubelet names it in NodePrepareResources);
        a new one when not given."""
        self.resource_version += 1
        pod = pod or name + "-pod"
        full = []
        for r in results:
            if isinstance(r, str):
                r = {"request": request, "driver": "edgeagent.io", "pool": node or "",
                     "device": r}
            full.append(dict(r))
        claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                 "metadata": {"name": name, "namespace": namespace,
                              "uid": uid or str(uuid.uuid4()),
                              "resourceVersion": str(self.resource_version),
                              "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime())},
                 "spec": {"devices": {"requests": [{"name": request, "exactly": {
                     "deviceClassName": "edgeagent.io-gpu", "allocationMode": "ExactCount",
                     "count": 1}}]}},
                 "status": {"allocation": {"devices": {"results": full}, "nodeSelector": {
                     "nodeSelectorTerms": [{"matchFields": [{
                         "key": "metadata.name", "operator": "In", "values": [node or ""]}]}]}},
                     "reservedFor": [{"resource": "pods", "name": pod,
                                      "uid": str(uuid.uuid4())}]}}
        self.claims[(namespace, name)] = claim
        self.claim_nodes[(namespace, name)] = node
        return claim

    def slices_of(self, node: Optional[str] = None) -> List[Dict[str, Any]]:
        """The stored slices (of ``node``), by name."""
        return [s for _, s in sorted(self.slices.items())
                if node is None or s["spec"].get("nodeName") == node]

    def put_slice(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Store a slice as another client (the admin, a stale agent) would."""
        self.resource_version += 1
        obj = copy.deepcopy(body)
        obj["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=str(self.resource_version),
                               generation=1)
        self.slices[obj["metadata"]["name"]] = obj
        return obj

    def _no_resource_version(self, request: web.Request) -> Optional[web.Response]:
        # kube-apiserver's answer for a version of a group it does not serve.
        if request.match_info["version"] in self.resource_versions and \
                request.match_info["version"] in SLICE_VERSIONS_SERVED:
            return None
        return web.Response(status=404, text="404 page not found\n", content_type="text/plain")

    def _node_of(self, request: web.Request) -> Optional[str]:
        user = request[_USER]
        if user.startswith("system:node:") and "system:nodes" in request[_GROUPS]:
            return user[len("system:node:"):]
        return None

    def _slice_forbidden(self, request: web.Request, verb: str, name: str,
                         why: str) -> web.Response:
        what = 'resourceslices.resource.k8s.io "%s"' % name if name else \
            "resourceslices.resource.k8s.io"
        return _status(403, "Forbidden", '%s is forbidden: User "%s" cannot %s resource '
                       '"resourceslices" in API group "resource.k8s.io" at the cluster scope%s'
                       % (what, request[_USER], verb, ": " + why if why else ""),
                       group="resource.k8s.io", kind="resourceslices",
                       **({"name": name} if name else {}))

    def _slice_allowed(self, request: web.Request, verb: str, name: str) -> Any:
        """None when this identity may ``verb`` the existing slice ``name`` (get, update,
        delete), else the error. Node authorizer: the graph has an edge slice -> node only for
        a slice that exists and names the node, so a node gets 403 (not 404) for a missing
        slice, as on a real cluster."""
        node = self._node_of(request)
        obj = self.slices.get(name)
        if node is None:
            verbs = self.grants.get(request[_USER], set())
            if "*" not in verbs and verb not in verbs:
                return self._slice_forbidden(request, verb, name, "")
            if obj is None:
                return _status(404, "NotFound", 'resourceslices.resource.k8s.io "%s" not found'
                               % name, name=name, group="resource.k8s.io",
                               kind="resourceslices")
            return None
        if obj is None:
            return self._slice_forbidden(request, verb, name, "node '%s' cannot get unknown "
                                         "resourceslice /%s" % (node, name))
        if obj["spec"].get("nodeName") != node:
            return self._slice_forbidden(request, verb, name, "node '%s' cannot get "
                                         "resourceslice /%s, no relationship to this object "
                                         "was found in the node authorizer graph" % (node, name))
        return None

    @staticmethod
    def _field_selector(text: str) -> Any:
        """{field: value} of an equality field selector over the fields kube-apiserver indexes
        for resourceslices; an error response for anything else."""
        out: Dict[str, str] = {}
        for part in [p for p in text.split(",") if p]:
            key, sep, value = part.partition("=")
            if key.endswith("!") or not sep:
                return _status(400, "BadRequest", "this test server knows only equality field "
                               "selectors: %r" % part)
            key = key.rstrip("=")
            value = value.lstrip("=")
            if key not in ("metadata.name", "spec.nodeName", "spec.driver"):
                return _status(400, "BadRequest", 'field label not supported: %s' % key)
            out[key] = value
        return out

    async def _resource_group(self, request: web.Request) -> web.Response:
        if not self.resource_versions:
            return web.Response(status=404, text="404 page not found\n",
                                content_type="text/plain")
        versions = [{"groupVersion": "resource.k8s.io/" + v, "version": v}
                    for v in self.resource_versions]
        return web.json_response({"kind": "APIGroup", "apiVersion": "v1",
                                  "name": "resource.k8s.io", "versions": versions,
                                  "preferredVersion": versions[0]})

    async def _resource_resources(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        if version not in self.resource_versions:
            return web.Response(status=404, text="404 page not found\n",
                                content_type="text/plain")
        resources = [{"name": "resourceclaims", "singularName": "resourceclaim",
                      "namespaced": True, "kind": "ResourceClaim", "verbs": ["get"]}]
        if version in SLICE_VERSIONS_SERVED:
            resources.append({"name": "resourceslices", "singularName": "resourceslice",
                              "namespaced": False, "kind": "ResourceSlice",
                              "verbs": ["create", "delete", "get", "list", "update"]})
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": "resource.k8s.io/" + version,
                                  "resources": resources})

    async def _test_slices(self, request: web.Request) -> web.Response:
        return web.json_response(self.slices_of(request.query.get("node")))

    def _selected_slices(self, request: web.Request, verb: str) -> Any:
        """The slices a list or deletecollection selects, or the answer refusing it: a node
        only with its own spec.nodeName field selector, anyone else with RBAC."""
        missing = self._no_resource_version(request)
        if missing is not None:
            return missing
        selector = self._field_selector(request.query.get("fieldSelector", ""))
        if isinstance(selector, web.Response):
            return selector
        node = self._node_of(request)
        if node is not None and selector.get("spec.nodeName") != node:
            return self._slice_forbidden(request, verb, "", "can only list/watch/"
                                         "deletecollection resourceslices with nodeName field "
                                         "selector")
        if node is None and not ({"*", verb} & self.grants.get(request[_USER], set())):
            return self._slice_forbidden(request, verb, "", "")
        fields = {"metadata.name": lambda s: s["metadata"]["name"],
                  "spec.nodeName": lambda s: s["spec"].get("nodeName", ""),
                  "spec.driver": lambda s: s["spec"].get("driver", "")}
        return [s for s in self.slices_of() if all(fields[k](s) == v for k, v in selector.items())]

    async def _list_slices(self, request: web.Request) -> web.Response:
        selected = self._selected_slices(request, "list")
        if isinstance(selected, web.Response):
            return selected
        items = [self._as_version(s, request) for s in selected]
        return web.json_response({"apiVersion": "resource.k8s.io/" +
                                  request.match_info["version"], "kind": "ResourceSliceList",
                                  "metadata": {"resourceVersion": str(self.resource_version)},
                                  "items": items})

    @staticmethod
    def _as_version(obj: Dict[str, Any], request: web.Request) -> Dict[str, Any]:
        return dict(obj, apiVersion="resource.k8s.io/" + request.match_info["version"])

    async def _get_slice(self, request: web.Request) -> web.Response:
        missing = self._no_resource_version(request)
        if missing is not None:
            return missing
        name = request.match_info["name"]
        denied = self._slice_allowed(request, "get", name)
        if denied is not None:
            return denied
        return web.json_response(self._as_version(self.slices[name], request))

    async def _read_slice_body(self, request: web.Request) -> Any:
        try:
            body = json.loads(await request.text())
        except ValueError as e:
            return _status(400, "BadRequest", "error decoding body: %s" % e)
        version = request.match_info["version"]
        if not isinstance(body, dict) or body.get("kind") != "ResourceSlice" or \
                body.get("apiVersion") != "resource.k8s.io/" + version or \
                not isinstance(body.get("metadata"), dict):
            return _status(400, "BadRequest", "the body is not a resource.k8s.io/%s "
                           "ResourceSlice" % version)
        return body

    def _drop_disabled(self, body: Dict[str, Any]) -> None:
        """What kube-apiserver does with DRAConsumableCapacity off: the fields are dropped on
        write (before validation), without a word."""
        spec = body.get("spec")
        if self.consumable_capacity or not isinstance(spec, dict) or \
                not isinstance(spec.get("devices"), list):
            return
        for device in spec["devices"]:
            if isinstance(device, dict):
                device.pop("allowMultipleAllocations", None)
                for cap in (device.get("capacity") or {}).values():
                    if isinstance(cap, dict):
                        cap.pop("requestPolicy", None)

    def _store_slice(self, body: Dict[str, Any], old: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["apiVersion"] = "resource.k8s.io/v1"
        spec = obj.get("spec") or {}
        for device in spec.get("devices") or []:
            for cap in (device.get("capacity") or {}).values():
                if isinstance(cap, dict):
                    cap["value"] = canonical_quantity(cap["value"])
                    policy = cap.get("requestPolicy") or {}
                    if "default" in policy:
                        policy["default"] = canonical_quantity(policy["default"])
                    for key, q in list((policy.get("validRange") or {}).items()):
                        policy["validRange"][key] = canonical_quantity(q)
        if isinstance(obj.get("spec"), dict) and obj["spec"].get("devices") == []:
            del obj["spec"]["devices"]          # json:"devices,omitempty", as the real one
        self.resource_version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.resource_version)
        if old is None:
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        else:
            meta.update(uid=old["metadata"]["uid"],
                        creationTimestamp=old["metadata"]["creationTimestamp"],
                        generation=old["metadata"]["generation"] + (
                            old.get("spec") != obj.get("spec")))
        self.slices[meta["name"]] = obj
        return obj

    def _invalid_slice(self, name: str, problems: List[str]) -> web.Response:
        return _status(422, "Invalid", 'ResourceSlice.resource.k8s.io "%s" is invalid: %s'
                       % (name, ", ".join(problems)), name=name, group="resource.k8s.io",
                       kind="ResourceSlice")

    async def _create_slice(self, request: web.Request) -> web.Response:
        missing = self._no_resource_version(request)
        if missing is not None:
            return missing
        node = self._node_of(request)
        if node is None and not ({"*", "create"} & self.grants.get(request[_USER], set())):
            return self._slice_forbidden(request, "create", "", "")
        body = await self._read_slice_body(request)
        if isinstance(body, web.Response):
            return body
        meta = body["metadata"]
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") if isinstance(meta.get("name"), str) else ""
        if meta.get("resourceVersion"):
            return self._invalid_slice(name, ["metadata.resourceVersion: Invalid value: "
                                              "resourceVersion should not be set on objects to "
                                              "be created"])
        self._drop_disabled(body)
        problems = slice_problems(body)
        if problems:
            return self._invalid_slice(name, problems)
        if node is not None and body["spec"].get("nodeName") != node:
            # NodeRestriction: the Node authorizer lets any node create; admission checks it.
            return _status(403, "Forbidden", 'resourceslices.resource.k8s.io "%s" is forbidden:'
                           ' node "%s" is not allowed to create resourceslices with '
                           'nodeName "%s"' % (name, node, body["spec"].get("nodeName")))
        if name in self.slices:
            return _status(409, "AlreadyExists", 'resourceslices.resource.k8s.io "%s" already '
                           "exists" % name, name=name, group="resource.k8s.io",
                           kind="resourceslices")
        return web.json_response(self._as_version(self._store_slice(body, None), request),
                                 status=201)

    async def _put_slice(self, request: web.Request) -> web.Response:
        missing = self._no_resource_version(request)
        if missing is not None:
            return missing
        name = request.match_info["name"]
        denied = self._slice_allowed(request, "update", name)
        if denied is not None:
            return denied
        body = await self._read_slice_body(request)
        if isinstance(body, web.Response):
            return body
        if body["metadata"].get("name") != name:
            return _status(400, "BadRequest", "the name of the object (%s) does not match the "
                           "name on the URL (%s)" % (body["metadata"].get("name"), name))
        old = self.slices[name]
        want = body["metadata"].get("resourceVersion")
        if not want:
            return self._invalid_slice(name, ["metadata.resourceVersion: Invalid value: 0x0: "
                                              "must be specified for an update"])
        if want != old["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", 'Operation cannot be fulfilled on resourceslices.'
                           'resource.k8s.io "%s": the object has been modified; please apply '
                           "your changes to the latest version and try again" % name,
                           name=name, group="resource.k8s.io", kind="resourceslices")
        self._drop_disabled(body)
        problems = slice_problems(body)
        if problems:
            return self._invalid_slice(name, problems)
        node = self._node_of(request)
        if node is not None and body["spec"].get("nodeName") != node:
            return _status(403, "Forbidden", 'resourceslices.resource.k8s.io "%s" is forbidden:'
                           ' node "%s" is not allowed to update resourceslices with '
                           'nodeName "%s"' % (name, node, body["spec"].get("nodeName")))
        return web.json_response(self._as_version(self._store_slice(body, old), request))

    async def _delete_slice(self, request: web.Request) -> web.Response:
        missing = self._no_resource_version(request)
        if missing is not None:
            return missing
        name = request.match_info["name"]
        denied = self._slice_allowed(request, "delete", name)
        if denied is not None:
            return denied
        text = await request.text()
        if text:
            try:
                options = json.loads(text)
            except ValueError as e:
                return _status(400, "BadRequest", "error decoding body: %s" % e)
            want = ((options or {}).get("preconditions") or {}).get("resourceVersion")
            if want and want != self.slices[name]["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", 'Operation cannot be fulfilled on resourceslices'
                               '.resource.k8s.io "%s": Precondition failed: ResourceVersion in '
                               "precondition: %s, ResourceVersion in object meta: %s" % (
                                   name, want, self.slices[name]["metadata"]["resourceVersion"]))
        obj = self.slices.pop(name)
        self.resource_version += 1
        return web.json_response(self._as_version(obj, request))

    async def _delete_slices(self, request: web.Request) -> web.Response:
        """deletecollection, as the kubelet wipes a node's slices (at its start, and 30 s after
        a driver's plugin went away): a node only with its own spec.nodeName selector."""
        gone = self._selected_slices(request, "deletecollection")
        if isinstance(gone, web.Response):
            return gone
        for obj in gone:
            del self.slices[obj["metadata"]["name"]]
        self.resource_version += 1
        return web.json_response({"apiVersion": "resource.k8s.io/" +
                                  request.match_info["version"], "kind": "ResourceSliceList",
                                  "metadata": {"resourceVersion": str(self.resource_version)},
                                  "items": [self._as_version(s, request) for s in gone]})

    async def _get_claim(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        if version not in self.resource_versions:
            return web.Response(status=404, text="404 page not found\n",
                                content_type="text/plain")
        ns, name = request.match_info["ns"], request.match_info["name"]
        node = self._node_of(request)
        if node is not None:
            # The graph: claim -> pod -> node, for a pod bound to the node that uses it.
            if self.claim_nodes.get((ns, name)) != node:
                why = "no relationship found between node '%s' and this object" % node
                return _status(403, "Forbidden", 'resourceclaims.resource.k8s.io "%s" is '
                               'forbidden: User "%s" cannot get resource "resourceclaims" in '
                               'API group "resource.k8s.io" in the namespace "%s": %s'
                               % (name, request[_USER], ns, why), name=name,
                               group="resource.k8s.io", kind="resourceclaims")
        elif not ({"*", "get"} & self.grants.get(request[_USER], set())):
            return _status(403, "Forbidden", 'resourceclaims.resource.k8s.io "%s" is forbidden: '
                           'User "%s" cannot get resource "resourceclaims"' % (
                               name, request[_USER]))
        claim = self.claims.get((ns, name))
        if claim is None:
            return _status(404, "NotFound", 'resourceclaims.resource.k8s.io "%s" not found'
                           % name, name=name, group="resource.k8s.io", kind="resourceclaims")
        return web.json_response(dict(claim, apiVersion="resource.k8s.io/" + version))

    async def _test_claims(self, request: web.Request) -> web.Response:
        spec = await request.json()
        return web.json_response(self.add_claim(spec["namespace"], spec["name"],
                                                spec.get("node"), spec.get("results", ()),
                                                spec.get("pod", ""), spec.get("request", "gpu"),
                                                spec.get("uid", "")))

    # --- serving ----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        self.ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_OPTIONAL   # certificate or token: both are accepted
        return ctx

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/apis", self._api_groups)
        app.router.add_get("/api/v1", self._api_resources)
        app.router.add_get("/api/v1/nodes", self._list_nodes)
        app.router.add_get("/api/v1/nodes/{name}", self._get_node)
        app.router.add_patch("/api/v1/nodes/{name}", self._patch_node)
        app.router.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                            self._ssar)
        nf = "/apis/nfd.k8s-sigs.io/v1alpha1"
        app.router.add_get(nf + "/nodefeatures", self._list_nodefeatures)
        app.router.add_get(nf + "/namespaces/{ns}/nodefeatures", self._list_nodefeatures)
        app.router.add_post(nf + "/namespaces/{ns}/nodefeatures", self._create_nodefeature)
        app.router.add_get(nf + "/namespaces/{ns}/nodefeatures/{name}", self._get_nodefeature)
        app.router.add_put(nf + "/namespaces/{ns}/nodefeatures/{name}", self._put_nodefeature)
        app.router.add_delete(nf + "/namespaces/{ns}/nodefeatures/{name}",
                              self._delete_nodefeature)
        rs = "/apis/resource.k8s.io"
        app.router.add_get(rs, self._resource_group)
        app.router.add_get(rs + "/{version}", self._resource_resources)
        app.router.add_get(rs + "/{version}/resourceslices", self._list_slices)
        app.router.add_post(rs + "/{version}/resourceslices", self._create_slice)
        app.router.add_delete(rs + "/{version}/resourceslices", self._delete_slices)
        app.router.add_get(rs + "/{version}/resourceslices/{name}", self._get_slice)
        app.router.add_put(rs + "/{version}/resourceslices/{name}", self._put_slice)
        app.router.add_delete(rs + "/{version}/resourceslices/{name}", self._delete_slice)
        app.router.add_get(rs + "/{version}/namespaces/{ns}/resourceclaims/{name}",
                           self._get_claim)
        app.router.add_post("/_test/claims", self._test_claims)
        app.router.add_get("/_test/slices", self._test_slices)
        app.router.add_post("/_test/faults", self._test_faults)
        app.router.add_get("/_test/requests", self._test_requests)
        app.router.add_post("/_test/nodes", self._test_nodes)
        app.router.add_get("/_test/nodes/{name}", self._test_get_node)
        app.on_response_prepare.append(self._date_header)
        return app

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = email.utils.formatdate(time.time() + self.clock_offset,
                                                          usegmt=True)

    def _identity(self, request: web.Request) -> Tuple[Optional[str], List[str]]:
        """(user, groups); user None for a bad token (401), 'system:anonymous' for none."""
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if cert:
            serial = cert.get("serialNumber")
            if serial in self.revoked_serials:
                return None, []
            subject = dict(x[0] for x in cert.get("subject", ()))
            groups = [g for g in subject.get("organizationName", "").split(",") if g]
            return subject.get("commonName", ""), groups
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = self.tokens.get(header[7:].strip())
            return user, (["system:nodes"] if user and user.startswith("system:node:") else [])
        return "system:anonymous", []

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await self._answer(request, handler)
        if isinstance(resp, web.Response) and not resp.prepared and resp.body is not None \
                and not request.path.startswith("/_test/"):
            return await self._send_in_pieces(request, resp)
        return resp

    async def _send_in_pieces(self, request: web.Request,
                              resp: web.Response) -> web.StreamResponse:
        """``resp`` with chunked transfer encoding, a few writes apart, as a real API server
        streams an object: the client sees the body arrive in several reads."""
        body = bytes(resp.body)
        out = web.StreamResponse(status=resp.status, reason=resp.reason)
        for key, value in resp.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding"):
                out.headers[key] = value
        out.enable_chunked_encoding()
        await out.prepare(request)
        step = max(1, self.piece_bytes)
        try:
            for start in range(0, len(body), step):
                if start:
                    await asyncio.sleep(self.piece_pause)
                await out.write(body[start:start + step])
            await out.write_eof()
        except ConnectionError:
            pass   # the client went away mid-answer (a cancelled reconcile): its business
        return out

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        user = "?"
        status = 0
        if self.answer_delay and not request.path.startswith("/_test/"):
            await asyncio.sleep(self.answer_delay)
        try:
            fault = next((f for f in self.faults if f.matches(request)), None)
            if fault is not None and not request.path.startswith("/_test/"):
                fault.count -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    status = -1
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=500)
                status = fault.status
                if fault.body is not None:
                    return web.Response(status=fault.status, text=fault.body,
                                        content_type="application/json")
                resp = _status(fault.status, _REASONS.get(fault.status, "InternalError"),
                               "injected failure %d" % fault.status)
                if fault.retry_after is not None:
                    resp.headers["Retry-After"] = fault.retry_after
                return resp
            if self.max_rps and not request.path.startswith("/_test/") and \
                    not self._admit():
                # Like API Priority and Fairness when its queues are full.
                status = 429
                resp = _status(429, "TooManyRequests", "too many requests, please try again")
                resp.headers["Retry-After"] = "1"
                return resp
            ident, groups = self._identity(request)
            user = ident or "?"
            if ident is None:
                status = 401
                return _status(401, "Unauthorized", "Unauthorized")
            request[_USER], request[_GROUPS] = ident, groups
            if ident == "system:anonymous" and request.path not in ("/version",):
                status = 403
                return _status(403, "Forbidden", 'forbidden: User "system:anonymous" cannot '
                               'access path "%s"' % request.path)
            if request.path.startswith("/_test/") and ident != "admin":
                status = 403
                return _status(403, "Forbidden", "test control is for the admin user")
            try:
                resp = await handler(request)
            except web.HTTPException as e:
                status = e.status
                raise
            status = resp.status
            return resp
        finally:
            if status != 0 or user != "?":
                self.records.append(Record(request.method, request.path, status, user))

    def _admit(self) -> bool:
        now = int(time.monotonic())
        second, count = self._second
        if second != now:
            second, count = now, 0
        self._second = (second, count + 1)
        return count < self.max_rps

    def _allowed(self, request: web.Request, verb: str, node: str) -> Tuple[bool, str]:
        user = request[_USER]
        if user.startswith("system:node:") and "system:nodes" in request[_GROUPS]:
            own = user[len("system:node:"):]
            # plugin/pkg/auth/authorizer/node: writes are left to NodeRestriction; reads
            # (1.32+, AuthorizeNodeWithSelectors) only of the node's own Node object.
            if verb in ("patch", "update"):
                if node == own:
                    return True, ""
                return False, 'node "%s" is not allowed to modify node "%s"' % (own, node)
            if verb in ("get", "list", "watch") and node == own:
                return True, ""
            return False, ('User "%s" cannot %s resource "nodes" in API group "" at the cluster '
                           "scope: node '%s' cannot read '%s', only its own Node object"
                           % (user, verb, own, node))
        verbs = self.grants.get(user, set())
        if "*" in verbs or verb in verbs:
            return True, ""
        return False, 'User "%s" cannot %s resource "nodes" in API group "" at the cluster ' \
                      'scope' % (user, verb)

    def _node_or_404(self, name: str) -> Any:
        node = self.nodes.get(name)
        if node is None:
            return _status(404, "NotFound", 'nodes "%s" not found' % name, name=name,
                           kind="nodes")
        return node

    def _authorized_node(self, request: web.Request, verb: str, name: str) -> Any:
        """The Node, or the error response: authorization first (a forbidden client must not
        learn whether the Node exists), then 404."""
        ok, why = self._allowed(request, verb, name)
        if not ok:
            return _status(403, "Forbidden", 'nodes "%s" is forbidden: %s' % (name, why))
        return self._node_or_404(name)

    # --- NodeFeature objects (NFD's CRD) --------------------------------------------------------

    def _rbac(self, request: web.Request, verb: str, namespace: Optional[str],
              name: str = "") -> Optional[web.Response]:
        """None when RBAC allows ``verb`` on nodefeatures (in ``namespace``; None: every
        namespace), else the real 403. Node identities get nothing from the Node authorizer
        here: only a binding does."""
        user = request[_USER]
        if self._rbac_allows(user, request[_GROUPS], verb, namespace):
            return None
        scope = 'in the namespace "%s"' % namespace if namespace else "at the cluster scope"
        what = 'nodefeatures.nfd.k8s-sigs.io "%s"' % name if name else \
            "nodefeatures.nfd.k8s-sigs.io"
        return _status(403, "Forbidden", '%s is forbidden: User "%s" cannot %s resource '
                       '"nodefeatures" in API group "nfd.k8s-sigs.io" %s'
                       % (what, user, verb, scope), group="nfd.k8s-sigs.io",
                       kind="nodefeatures", **({"name": name} if name else {}))

    def _rbac_allows(self, user: str, groups: Any, verb: str, namespace: Optional[str]) -> bool:
        if "*" in self.grants.get(user, set()):
            return True
        subjects = {user} | set(groups)
        return any(subject in subjects and verb in verbs and (where is None or where == namespace)
                   for subject, verbs, where in self.rbac)

    def _no_api(self) -> Optional[web.Response]:
        # kube-apiserver's answer for a group it does not serve: plain text, not a Status.
        if self.nodefeature_api:
            return None
        return web.Response(status=404, text="404 page not found\n", content_type="text/plain")

    @staticmethod
    def _selector(text: str) -> Optional[List[Tuple[str, str, str]]]:
        """Equality-based label selector terms (key, op, value); None when not understood."""
        terms = []
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            for op in ("!=", "==", "="):
                if op in part:
                    key, value = part.split(op, 1)
                    terms.append((key.strip(), op, value.strip()))
                    break
            else:
                if not part.replace("/", "").replace(".", "").replace("-", "").replace(
                        "_", "").isalnum():
                    return None
                terms.append((part, "exists", ""))
        return terms

    @staticmethod
    def _matches(obj: Dict[str, Any], terms: List[Tuple[str, str, str]]) -> bool:
        labels = obj["metadata"].get("labels") or {}
        for key, op, value in terms:
            if op == "exists" and key not in labels:
                return False
            if op in ("=", "==") and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
        return True

    async def _list_nodefeatures(self, request: web.Request) -> web.Response:
        missing = self._no_api()
        if missing is not None:
            return missing
        namespace = request.match_info.get("ns")
        denied = self._rbac(request, "list", namespace)
        if denied is not None:
            return denied
        terms = self._selector(request.query.get("labelSelector", ""))
        if terms is None:
            return _status(400, "BadRequest", "unable to parse requirement: %r"
                           % request.query.get("labelSelector"))
        items = [obj for (ns, _), obj in sorted(self.nodefeatures.items())
                 if (namespace is None or ns == namespace) and self._matches(obj, terms)]
        return web.json_response({"apiVersion": "nfd.k8s-sigs.io/v1alpha1",
                                  "kind": "NodeFeatureList",
                                  "metadata": {"resourceVersion": str(self.resource_version)},
                                  "items": items})

    def _nodefeature_or_error(self, request: web.Request, verb: str) -> Any:
        missing = self._no_api()
        if missing is not None:
            return missing
        ns, name = request.match_info["ns"], request.match_info["name"]
        denied = self._rbac(request, verb, ns, name)
        if denied is not None:
            return denied
        obj = self.nodefeatures.get((ns, name))
        if obj is None:
            return _status(404, "NotFound", 'nodefeatures.nfd.k8s-sigs.io "%s" not found' % name,
                           name=name, group="nfd.k8s-sigs.io", kind="nodefeatures")
        return obj

    async def _get_nodefeature(self, request: web.Request) -> web.Response:
        obj = self._nodefeature_or_error(request, "get")
        return obj if isinstance(obj, web.Response) else web.json_response(obj)

    async def _delete_nodefeature(self, request: web.Request) -> web.Response:
        obj = self._nodefeature_or_error(request, "delete")
        if isinstance(obj, web.Response):
            return obj
        del self.nodefeatures[(obj["metadata"]["namespace"], obj["metadata"]["name"])]
        return web.json_response(obj)

    async def _read_nodefeature_body(self, request: web.Request, ns: str) -> Any:
        try:
            body = json.loads(await request.text())
        except ValueError as e:
            return _status(400, "BadRequest", "error decoding body: %s" % e)
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or body.get("kind") != "NodeFeature" or \
                body.get("apiVersion") != "nfd.k8s-sigs.io/v1alpha1":
            return _status(400, "BadRequest", "the body is not an nfd.k8s-sigs.io/v1alpha1 "
                           "NodeFeature")
        name = meta.get("name")
        if not isinstance(name, str) or len(name) > 253 or not _DNS.fullmatch(name):
            return _status(422, "Invalid", "NodeFeature.nfd.k8s-sigs.io %r is invalid: "
                           "metadata.name: a lowercase RFC 1123 subdomain" % (name,))
        if meta.get("namespace", ns) != ns:
            return _status(400, "BadRequest", "the namespace of the object does not match the "
                           "namespace on the request")
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        for key, value in dict(meta.get("labels") or {}, **(spec.get("labels") or {})).items():
            problem = label_problem(key, value)
            if problem:
                return _status(422, "Invalid", "NodeFeature.nfd.k8s-sigs.io %r is invalid: %s"
                               % (name, problem))
        return body

    async def _create_nodefeature(self, request: web.Request) -> web.Response:
        missing = self._no_api()
        if missing is not None:
            return missing
        ns = request.match_info["ns"]
        denied = self._rbac(request, "create", ns)
        if denied is not None:
            return denied
        body = await self._read_nodefeature_body(request, ns)
        if isinstance(body, web.Response):
            return body
        name = body["metadata"]["name"]
        if (ns, name) in self.nodefeatures:
            return _status(409, "AlreadyExists", 'nodefeatures.nfd.k8s-sigs.io "%s" already '
                           "exists" % name, name=name, kind="nodefeatures")
        self.resource_version += 1
        body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()),
                                resourceVersion=str(self.resource_version))
        self.nodefeatures[(ns, name)] = body
        return web.json_response(body, status=201)

    async def _put_nodefeature(self, request: web.Request) -> web.Response:
        obj = self._nodefeature_or_error(request, "update")
        if isinstance(obj, web.Response):
            return obj
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await self._read_nodefeature_body(request, ns)
        if isinstance(body, web.Response):
            return body
        if body["metadata"]["name"] != name:
            return _status(400, "BadRequest", "the name of the object does not match the name "
                           "on the URL")
        if body["metadata"].get("resourceVersion") != obj["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", 'Operation cannot be fulfilled on nodefeatures.'
                           'nfd.k8s-sigs.io "%s": the object has been modified; please apply '
                           "your changes to the latest version and try again" % name)
        self.resource_version += 1
        body["metadata"].update(namespace=ns, uid=obj["metadata"]["uid"],
                                resourceVersion=str(self.resource_version))
        self.nodefeatures[(ns, name)] = body
        return web.json_response(body)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "32", "gitVersion": "v1.32.0-test",
                                  "platform": "linux/amd64"})

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0",
                                       "serverAddress": "%s:%d" % (self.host, self.port)}]})

    async def _api_groups(self, request: web.Request) -> web.Response:
        groups = [{"name": "nfd.k8s-sigs.io", "versions": [
            {"groupVersion": "nfd.k8s-sigs.io/v1alpha1", "version": "v1alpha1"}],
            "preferredVersion": {"groupVersion": "nfd.k8s-sigs.io/v1alpha1",
                                 "version": "v1alpha1"}}] if self.nodefeature_api else []
        if self.resource_versions:
            versions = [{"groupVersion": "resource.k8s.io/" + v, "version": v}
                        for v in self.resource_versions]
            groups.append({"name": "resource.k8s.io", "versions": versions,
                           "preferredVersion": versions[0]})
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def _api_resources(self, request: web.Request) -> web.Response:
        return web.json_response({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [{"name": "nodes", "singularName": "node", "namespaced": False,
                           "kind": "Node", "shortNames": ["no"],
                           "verbs": ["get", "list", "patch", "update", "watch"]}]})

    async def _list_nodes(self, request: web.Request) -> web.Response:
        selector = request.query.get("fieldSelector", "")
        only = selector[len("metadata.name="):] if selector.startswith("metadata.name=") else ""
        ok, why = self._allowed(request, "list", only)
        if not ok:
            return _status(403, "Forbidden", "nodes is forbidden: " + why)
        return web.json_response({"kind": "NodeList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self.resource_version)},
                                  "items": [self.nodes[n] for n in sorted(self.nodes)
                                            if not only or n == only]})

    async def _get_node(self, request: web.Request) -> web.Response:
        node = self._authorized_node(request, "get", request.match_info["name"])
        return node if isinstance(node, web.Response) else web.json_response(node)

    async def _patch_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in ("application/merge-patch+json",
                         "application/strategic-merge-patch+json"):
            return _status(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media "
                           "types include: application/merge-patch+json")
        node = self._authorized_node(request, "patch", name)
        if isinstance(node, web.Response):
            return node
        try:
            patch = json.loads(await request.text())
        except ValueError as e:
            return _status(400, "BadRequest", "error decoding patch: %s" % e)
        if not isinstance(patch, dict):
            return _status(400, "BadRequest", "patch must be a JSON object")
        meta_patch = patch.get("metadata") if isinstance(patch.get("metadata"), dict) else {}
        want_rv = meta_patch.get("resourceVersion")
        if want_rv is not None and want_rv != node["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", 'Operation cannot be fulfilled on nodes "%s": the '
                           'object has been modified; please apply your changes to the latest '
                           'version and try again' % name, name=name, kind="nodes")
        result = merge_patch(node, patch)
        labels = result.get("metadata", {}).get("labels") or {}
        for key, value in labels.items():
            problem = label_problem(key, value)
            if problem:
                return _status(422, "Invalid", 'Node "%s" is invalid: metadata.labels: %s'
                               % (name, problem))
        user = request[_USER]
        if user.startswith("system:node:"):
            changed = {k for k in set(labels) | set(node["metadata"].get("labels") or {})
                       if labels.get(k) != (node["metadata"].get("labels") or {}).get(k)}
            for key in sorted(changed):
                domain = key.rpartition("/")[0]
                restricted = (domain.endswith("kubernetes.io") or domain.endswith("k8s.io"))
                if restricted and key not in _NODE_ALLOWED_KEYS and not key.startswith(
                        _NODE_ALLOWED):
                    return _status(403, "Forbidden", 'is forbidden: node "%s" is not allowed '
                                   'to modify labels: %s' % (user[12:], key))
        self.resource_version += 1
        result["metadata"]["resourceVersion"] = str(self.resource_version)
        result["metadata"]["name"] = name
        self.nodes[name] = result
        return web.json_response(result)

    async def _ssar(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _status(415, "UnsupportedMediaType", "this test server speaks JSON only")
        try:
            review = json.loads(await request.text())
            attrs = review["spec"]["resourceAttributes"]
        except (ValueError, KeyError, TypeError):
            return _status(400, "BadRequest", "spec.resourceAttributes is required")
        allowed = False
        reason = ""
        if attrs.get("resource") == "nodes" and attrs.get("group", "") == "":
            allowed, reason = self._allowed(request, attrs.get("verb", ""), attrs.get("name", ""))
        elif attrs.get("resource") == "nodefeatures" and attrs.get("group") == "nfd.k8s-sigs.io":
            allowed = self._rbac_allows(request[_USER], request[_GROUPS], attrs.get("verb", ""),
                                        attrs.get("namespace") or None)
        review["status"] = {"allowed": allowed, "reason": reason}
        return web.json_response(review, status=201)

    async def _test_faults(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.inject(**spec)
        return web.json_response({"faults": len(self.faults)})

    async def _test_requests(self, request: web.Request) -> web.Response:
        return web.json_response([vars(r) for r in self.records])

    async def _test_nodes(self, request: web.Request) -> web.Response:
        spec = await request.json()
        return web.json_response(self.add_node(spec["name"], spec.get("labels"),
                                               spec.get("annotations")))

    async def _test_get_node(self, request: web.Request) -> web.Response:
        node = self._node_or_404(request.match_info["name"])
        return node if isinstance(node, web.Response) else web.json_response(node)

    async def start(self) -> "KubeApiServer":
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port,
                           ssl_context=self._ssl_context() if self.tls else None, backlog=2048)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), timeout=5)
            self._runner = None

    async def __aenter__(self) -> "KubeApiServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class ThreadedKubeApi:
    """The server on its own event loop in a thread, for tests of synchronous code (CLI
    commands, doctor) that run their own ``asyncio.run``. ``api`` is the KubeApiServer; change
    its state only between requests."""

    def __init__(self, directory: str, nodes: Any = ("jetson-1",), **options: Any) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.api = KubeApiServer(directory, nodes=nodes, **options)
        asyncio.run_coroutine_threadsafe(self.api.start(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 429: "TooManyRequests", 500: "InternalError",
            503: "ServiceUnavailable"}


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


async def _serve(args: argparse.Namespace) -> None:
    server = KubeApiServer(args.dir, nodes=args.node or ["jetson-1"], host=args.host,
                           port=args.port,
                           resource_versions=args.resource_version or ("v1", "v1beta2",
                                                                       "v1beta1"),
                           consumable_capacity=args.consumable_capacity == "on")
    await server.start()
    for name in server.nodes:
        server.write_kubeconfig("system:node:%s" % name,
                                path=os.path.join(args.dir, "kubeconfig-%s" % name))
    admin = os.path.join(args.dir, "kubeconfig-admin")
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "admin",
           "clusters": [{"name": "test", "cluster": {"server": server.url,
                                                     "certificate-authority": server.ca_path}}],
           "contexts": [{"name": "admin", "context": {"cluster": "test", "user": "admin"}}],
           "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}]}
    with open(admin, "w") as f:
        json.dump(doc, f, indent=2)
    print("READY %s" % server.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_event_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.kubeapi",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, help="where to write ca.crt and kubeconfigs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--node", action="append", help="a Node to create (repeatable)")
    parser.add_argument("--resource-version", action="append",
                        help="a resource.k8s.io version to serve, preferred first (repeatable; "
                             "default v1, v1beta2, v1beta1)")
    parser.add_argument("--consumable-capacity", choices=("on", "off"), default="on",
                        help="the DRAConsumableCapacity feature gate (off: its fields are "
                             "dropped from ResourceSlices, as kube-apiserver does)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
