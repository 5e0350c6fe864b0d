"""A small Kubernetes API client on plain aiohttp: GET/PATCH a Node, list NFD's NodeFeature
objects of a Node, SelfSubjectAccessReview.

One ``aiohttp.ClientSession`` per client, created on first use inside the running loop; every
request is bounded by ``timeout``. Credentials are re-read when any of their files changes
(the kubelet rotates ``kubelet-client-current.pem``; projected tokens are refreshed) and after a
401, which is then retried once with the fresh credentials.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote

from edgeagent import __version__, safejson
from edgeagent.kube.credentials import Credentials, file_fingerprint
from edgeagent.kube.errors import KubeError, KubeNetworkError, KubeResponseError, KubeTLSError

if TYPE_CHECKING:  # pragma: no cover - types only
    import ssl

    import aiohttp
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "edgeagent/%s" % __version__
MAX_BODY = 4 << 20
RESOURCE_GROUP = "resource.k8s.io"
# resource.k8s.io versions whose ResourceClaim status reads alike, newest first.
CLAIM_VERSIONS = ("v1", "v1beta2", "v1beta1")


class KubeMetrics:
    """``edgeagent_kube_requests_total{method,code}``. A metric registers only once per
    registry: every component that talks to the API takes ``KubeMetrics.of(registry)``."""

    _by_registry: "weakref.WeakKeyDictionary[Any, KubeMetrics]" = weakref.WeakKeyDictionary()

    def __init__(self, registry: "CollectorRegistry") -> None:
        from prometheus_client import Counter

        self.requests = Counter("edgeagent_kube_requests", "Kubernetes API requests by method "
                                "and HTTP status code ('error': no response)",
                                ["method", "code"], registry=registry)

    @classmethod
    def of(cls, registry: "CollectorRegistry") -> "KubeMetrics":
        """The one KubeMetrics of ``registry`` (made on first use)."""
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics


class CredentialCache:
    """Credentials plus their TLS context, loaded again when their files change or on demand."""

    def __init__(self, loader: Callable[[], Credentials]) -> None:
        self._loader = loader
        self.creds: Optional[Credentials] = None
        self.ssl: Optional["ssl.SSLContext"] = None
        self.token: Optional[str] = None
        self._fingerprint: Optional[Tuple[object, ...]] = None
        self.loads = 0

    def get(self) -> Credentials:
        """Current credentials; re-read when a file they came from changed."""
        if self.creds is not None and file_fingerprint(self.creds.files) == self._fingerprint:
            return self.creds
        return self.reload()

    def reload(self) -> Credentials:
        from edgeagent.kube.tls import make_ssl_context

        creds = self._loader()
        fingerprint = file_fingerprint(creds.files)
        ctx, token = make_ssl_context(creds)
        first = self.creds is None
        if creds.insecure and (first or not self.creds.insecure):
            log.warning("INSECURE: %s sets insecure-skip-tls-verify: the API server's identity "
                        "is NOT verified and anyone on the network path can impersonate it",
                        creds.source)
        if token and creds.server.startswith("http://") and first:
            log.warning("INSECURE: %s sends a bearer token to the plain http:// server %s: the "
                        "token travels in clear text and anyone on the network path can read "
                        "and reuse it; use the API server's https:// address", creds.source,
                        creds.server)
        if not first and fingerprint != self._fingerprint:
            log.info("credentials changed on disk; re-read %s", creds.source)
        self.creds, self.ssl, self.token, self._fingerprint = creds, ctx, token, fingerprint
        self.loads += 1
        return creds


@dataclass
class KubeResponse:
    status: int
    body: Any
    headers: Mapping[str, str]

    def server_date(self) -> Optional[float]:
        """The Date header as a Unix time (for clock-skew checks)."""
        return header_date(self.headers)


def header_date(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("Date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        # ASCII digits only: str.isdigit() also takes "١٢" and fullwidth digits.
        return float(value) if value.isascii() else None
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _status_message(status: int, body: Any, text: str) -> Tuple[str, str]:
    if isinstance(body, dict) and body.get("kind") == "Status":
        return str(body.get("message") or body.get("reason") or status), str(body.get("reason")
                                                                              or "")
    snippet = " ".join(text.split())[:200]
    return (snippet or "HTTP %d" % status), ""


def _json_int(digits: str) -> int:
    # Kubernetes integers are int64 (19 digits); int() of millions of digits is quadratic
    # (minutes for a 4 MiB body) where Python has no int_max_str_digits limit (before 3.11 and
    # its 3.8.14+ backport).
    if len(digits) > 40:
        raise ValueError("an integer of %d digits" % len(digits))
    return int(digits)


def served_versions(body: Any) -> Tuple[str, ...]:
    """The versions an APIGroup discovery document lists, its preferred one first."""
    if not isinstance(body, dict):
        return ()
    found: List[str] = []
    preferred = body.get("preferredVersion")
    if isinstance(preferred, dict) and isinstance(preferred.get("version"), str):
        found.append(preferred["version"])
    versions = body.get("versions")
    for entry in versions if isinstance(versions, list) else ():
        version = entry.get("version") if isinstance(entry, dict) else None
        if isinstance(version, str) and version not in found:
            found.append(version)
    return tuple(found)


class BodyTooLarge(Exception):
    pass


async def read_body(stream: "aiohttp.StreamReader", limit: int) -> bytes:
    """The whole body, however many pieces it arrives in (a real API server streams a Node in
    several chunks: one ``read(n)`` returns only what is buffered). Over ``limit`` bytes, counted
    as they arrive, raises BodyTooLarge without keeping more than ``limit`` in memory."""
    pieces: List[bytes] = []
    size = 0
    while True:
        piece = await stream.readany()
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > limit:
            raise BodyTooLarge()
        pieces.append(piece)


def _node_body(resp: KubeResponse, method: str, name: str) -> Dict[str, Any]:
    body = resp.body
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        raise KubeResponseError("%s Node %s: the answer is not a Node object" % (method, name))
    return body


def _object_body(resp: KubeResponse, what: str) -> Dict[str, Any]:
    body = resp.body
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        raise KubeResponseError("%s: the answer is not an object" % what)
    return body


class KubeClient:
    """Requests against one API server, for one identity."""

    def __init__(self, credentials: CredentialCache, timeout: float = 10.0,
                 metrics: Optional[KubeMetrics] = None) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.metrics = metrics
        self._session: Optional["aiohttp.ClientSession"] = None
        self.requests = 0
        self._claim_version: Optional[str] = None   # "" when the server serves none

    async def _get_session(self) -> "aiohttp.ClientSession":
        from edgeagent.lightaiohttp import import_aiohttp

        aiohttp = import_aiohttp()

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                connector=aiohttp.TCPConnector(limit=4, enable_cleanup_closed=True),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            # Bounded: closing must never hold up shutdown.
            try:
                await asyncio.wait_for(self._session.close(), timeout=2.0)
            except asyncio.TimeoutError:
                pass
        self._session = None

    async def __aenter__(self) -> "KubeClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _count(self, method: str, code: str) -> None:
        self.requests += 1
        if self.metrics is not None:
            self.metrics.requests.labels(method=method, code=code).inc()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json",
                      timeout: Optional[float] = None) -> KubeResponse:
        """Send one request; 2xx -> KubeResponse, anything else raises KubeError. ``timeout``
        (seconds) overrides the client's for this request."""
        self.credentials.get()
        try:
            return await self._send(method, path, body, content_type, timeout)
        except KubeError as e:
            if e.status != 401:
                raise
            # Maybe a rotated certificate or token: read the files again and retry once.
            self.credentials.reload()
            return await self._send(method, path, body, content_type, timeout)

    async def _send(self, method: str, path: str, body: Any, content_type: str,
                    timeout: Optional[float] = None) -> KubeResponse:
        from edgeagent.lightaiohttp import import_aiohttp

        aiohttp = import_aiohttp()

        cache = self.credentials
        creds = cache.creds
        assert creds is not None
        session = await self._get_session()
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = content_type
        if cache.token:
            headers["Authorization"] = "Bearer " + cache.token
        kwargs: Dict[str, Any] = {"headers": headers, "data": data}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        if cache.ssl is not None:
            kwargs["ssl"] = cache.ssl
            if creds.tls_server_name:
                kwargs["server_hostname"] = creds.tls_server_name
        url = creds.server + path
        try:
            async with session.request(method, url, **kwargs) as resp:
                status = resp.status
                resp_headers = dict(resp.headers)
                raw = await read_body(resp.content, MAX_BODY)
        except aiohttp.ClientConnectorCertificateError as e:
            self._count(method, "error")
            raise KubeTLSError("TLS verification of %s failed: %s" % (
                creds.server, getattr(e, "certificate_error", e))) from None
        except aiohttp.ClientSSLError as e:
            self._count(method, "error")
            raise KubeTLSError("TLS with %s failed: %s" % (creds.server, e)) from None
        except BodyTooLarge:
            self._count(method, "error")
            raise KubeResponseError("%s %s: the answer is larger than %d bytes" % (
                method, path, MAX_BODY)) from None
        except asyncio.TimeoutError:
            self._count(method, "error")
            raise KubeNetworkError("%s %s: no answer within %gs" % (
                method, creds.server, self.timeout if timeout is None else timeout)) from None
        except (aiohttp.ClientError, OSError) as e:
            self._count(method, "error")
            raise KubeNetworkError("%s %s: %s" % (method, creds.server,
                                                  str(e) or type(e).__name__)) from None
        self._count(method, str(status))
        text = raw.decode("utf-8", "replace")
        try:
            parsed = safejson.loads(text, parse_int=_json_int) if text else None
        except (ValueError, RecursionError):
            parsed = None
            if 200 <= status < 300:
                # A success we cannot read must stop the caller, never pass as "empty".
                raise KubeResponseError("%s %s: %d with a body that is not JSON (%d bytes)" % (
                    method, path, status, len(raw))) from None
        if 200 <= status < 300:
            return KubeResponse(status, parsed, resp_headers)
        message, reason = _status_message(status, parsed, text)
        raise KubeError("%s %s: %d %s" % (method, path, status, message), status=status,
                        reason=reason, retry_after=parse_retry_after(
                            resp_headers.get("Retry-After")), headers=resp_headers)

    # --- the few calls edgeagent makes ---------------------------------------------------

    async def version(self, timeout: Optional[float] = None) -> KubeResponse:
        return await self.request("GET", "/version", timeout=timeout)

    async def get_node(self, name: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The Node object; KubeResponseError when the answer is not a Node."""
        resp = await self.request("GET", "/api/v1/nodes/" + quote(name, safe=""),
                                  timeout=timeout)
        return _node_body(resp, "GET", name)

    async def patch_node(self, name: str, patch: Dict[str, Any]) -> Dict[str, Any]:
        """Send a JSON merge patch; the patched Node."""
        resp = await self.request("PATCH", "/api/v1/nodes/" + quote(name, safe=""), patch,
                                  MERGE_PATCH)
        return _node_body(resp, "PATCH", name)

    async def list_node_features(self, node: str,
                                 timeout: Optional[float] = None) -> List[Any]:
        """The ``items`` of NFD's NodeFeature objects labelled for ``node``, in every namespace
        (``nfd.k8s-sigs.io/v1alpha1``). KubeError 403 when this identity may not list them,
        404 when the cluster has no such API; KubeResponseError when the answer is no list."""
        selector = quote("nfd.node.kubernetes.io/node-name=" + node, safe="")
        resp = await self.request("GET", "/apis/nfd.k8s-sigs.io/v1alpha1/nodefeatures"
                                  "?labelSelector=" + selector, timeout=timeout)
        items = resp.body.get("items") if isinstance(resp.body, dict) else None
        if not isinstance(items, list):
            raise KubeResponseError("GET NodeFeatures of %s: the answer is not a list" % node)
        return items

    def _nodefeature_path(self, namespace: str, name: str = "") -> str:
        path = "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/%s/nodefeatures" % quote(
            namespace, safe="")
        return path + "/" + quote(name, safe="") if name else path

    async def get_nodefeature(self, namespace: str, name: str) -> Optional[Dict[str, Any]]:
        """One NodeFeature object, or None when there is none (404 with a Status: the API is
        served; a plain-text 404, no NFD API at all, raises like any other error)."""
        try:
            resp = await self.request("GET", self._nodefeature_path(namespace, name))
        except KubeError as e:
            if e.status == 404 and e.reason == "NotFound":
                return None
            raise
        return _object_body(resp, "GET NodeFeature %s/%s" % (namespace, name))

    async def write_nodefeature(self, namespace: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Create ``body`` (no resourceVersion) or replace it (PUT with its resourceVersion: a
        concurrent change is a 409)."""
        name = body["metadata"]["name"]
        if body["metadata"].get("resourceVersion"):
            resp = await self.request("PUT", self._nodefeature_path(namespace, name), body)
        else:
            resp = await self.request("POST", self._nodefeature_path(namespace), body)
        return _object_body(resp, "write NodeFeature %s/%s" % (namespace, name))

    async def delete_nodefeature(self, namespace: str, name: str) -> bool:
        """Delete it; False when there was none."""
        try:
            await self.request("DELETE", self._nodefeature_path(namespace, name))
        except KubeError as e:
            if e.status == 404 and e.reason == "NotFound":
                return False
            raise
        return True

    # --- resource.k8s.io (DRA) -------------------------------------------------------------

    async def resource_versions(self, timeout: Optional[float] = None) -> Tuple[str, ...]:
        """The versions of ``resource.k8s.io`` the server serves, its preferred one first; ()
        when it serves none (a 404: Kubernetes before 1.26, or the group switched off)."""
        try:
            resp = await self.request("GET", "/apis/" + RESOURCE_GROUP, timeout=timeout)
        except KubeError as e:
            if e.status == 404:
                return ()
            raise
        return served_versions(resp.body)

    async def _resource_version(self, timeout: Optional[float] = None) -> Optional[str]:
        """The version claims are read in: v1 until the server says it serves only older ones
        (asked once, then remembered)."""
        if self._claim_version is None:
            served = await self.resource_versions(timeout=timeout)
            self._claim_version = next((v for v in CLAIM_VERSIONS if v in served), "")
        return self._claim_version or None

    async def get_resource_claim(self, namespace: str, name: str,
                                 timeout: Optional[float] = None) -> Dict[str, Any]:
        """One ResourceClaim (``resource.k8s.io/v1``; v1beta2 or v1beta1 where the server
        serves no v1: their ``status.allocation`` reads the same). The Node authorizer lets a
        node read the claims of pods bound to it; KubeError 404/403 otherwise."""
        version = self._claim_version or "v1"
        for _ in range(2):
            path = "/apis/%s/%s/namespaces/%s/resourceclaims/%s" % (
                RESOURCE_GROUP, version, quote(namespace, safe=""), quote(name, safe=""))
            try:
                resp = await self.request("GET", path, timeout=timeout)
            except KubeError as e:
                # A version the server does not serve answers a plain-text 404, a missing claim
                # a Status with reason NotFound.
                if e.status != 404 or e.reason or self._claim_version is not None:
                    raise
                served = await self._resource_version(timeout)
                if served is None or served == version:
                    raise
                version = served
                continue
            return _object_body(resp, "GET ResourceClaim %s/%s" % (namespace, name))
        raise KubeResponseError("GET ResourceClaim %s/%s: no served version answers" % (
            namespace, name))

    def _slices_path(self, version: str, name: str = "") -> str:
        path = "/apis/%s/%s/resourceslices" % (RESOURCE_GROUP, quote(version, safe=""))
        return path + "/" + quote(name, safe="") if name else path

    async def list_resource_slices(self, node: str, driver: str, version: str = "v1",
                                   timeout: Optional[float] = None) -> List[Any]:
        """The ``items`` of the ResourceSlices of ``node`` and ``driver``. The field selector
        names the node: the Node authorizer lets a node list slices only that way."""
        selector = quote("spec.nodeName=%s,spec.driver=%s" % (node, driver), safe="")
        resp = await self.request("GET", self._slices_path(version) + "?fieldSelector="
                                  + selector, timeout=timeout)
        items = resp.body.get("items") if isinstance(resp.body, dict) else None
        if not isinstance(items, list):
            raise KubeResponseError("GET ResourceSlices of %s: the answer is not a list" % node)
        return items

    async def create_resource_slice(self, body: Dict[str, Any],
                                    version: str = "v1") -> Dict[str, Any]:
        """POST it; 409 AlreadyExists when the name is taken. The created object."""
        resp = await self.request("POST", self._slices_path(version), body)
        return _object_body(resp, "create ResourceSlice %s" % body["metadata"].get("name"))

    async def replace_resource_slice(self, body: Dict[str, Any],
                                     version: str = "v1") -> Dict[str, Any]:
        """PUT it with its ``metadata.resourceVersion``: a concurrent change is a 409."""
        name = body["metadata"]["name"]
        resp = await self.request("PUT", self._slices_path(version, name), body)
        return _object_body(resp, "replace ResourceSlice %s" % name)

    async def delete_resource_slice(self, name: str, version: str = "v1",
                                    resource_version: str = "") -> bool:
        """Delete it (only if still at ``resource_version`` when given: 409 otherwise); False
        when it was already gone."""
        body = None
        if resource_version:
            body = {"apiVersion": "v1", "kind": "DeleteOptions",
                    "preconditions": {"resourceVersion": resource_version}}
        try:
            await self.request("DELETE", self._slices_path(version, name), body)
        except KubeError as e:
            if e.status == 404 and e.reason == "NotFound":
                return False
            raise
        return True

    async def can_i(self, verb: str, resource: str, name: str = "",
                    subresource: str = "", timeout: Optional[float] = None,
                    group: str = "", namespace: str = "") -> Tuple[bool, str]:
        """SelfSubjectAccessReview: (allowed, reason) for this identity on a resource (of
        ``group``, in ``namespace`` when it is namespaced)."""
        attrs = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attrs["namespace"] = namespace
        if name:
            attrs["name"] = name
        if subresource:
            attrs["subresource"] = subresource
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attrs}}
        resp = await self.request("POST",
                                  "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                  review, timeout=timeout)
        status = resp.body.get("status", {}) if isinstance(resp.body, dict) else {}
        return bool(status.get("allowed")), str(status.get("reason") or "")
