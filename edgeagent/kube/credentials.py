"""Where the agent's API credentials come from, first found wins:

1. ``--kubeconfig FILE`` / config ``kubeconfig`` (a path on this machine, used as given);
2. the kubelet's own kubeconfig, k3s agent ``/var/lib/rancher/k3s/agent/kubelet.kubeconfig`` then
   kubeadm ``/etc/kubernetes/kubelet.conf`` (host paths: under ``--root``, and so are the
   absolute paths inside them);
3. in-cluster: ``KUBERNETES_SERVICE_HOST``/``_PORT`` and the service account's token and CA.

Supported kubeconfig fields: cluster ``server``, ``certificate-authority(-data)``,
``insecure-skip-tls-verify``, ``tls-server-name``; user ``client-certificate(-data)``,
``client-key(-data)``, ``token``, ``tokenFile``. Relative paths are relative to the kubeconfig's
folder (as in client-go). Reusing the kubelet's node identity means NodeRestriction lets the agent
modify only its own Node.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from edgeagent.errors import file_problem
from edgeagent.kube.errors import CredentialsError, NoCredentials

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.hostpaths import HostRoot

K3S_KUBELET_KUBECONFIG = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig"
KUBEADM_KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
KUBELET_KUBECONFIGS = (K3S_KUBELET_KUBECONFIG, KUBEADM_KUBELET_KUBECONFIG)
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_RUN_AS_ROOT = " (run as root?)"  # the kubelet's credentials are readable by root only


@dataclass(frozen=True)
class Credentials:
    """Everything needed to talk to one API server as one identity. Paths are real paths."""

    server: str
    source: str                               # for messages: "kubeconfig /etc/kubernetes/..."
    ca_file: Optional[str] = None
    ca_data: Optional[bytes] = None
    cert_file: Optional[str] = None
    cert_data: Optional[bytes] = None
    key_file: Optional[str] = None
    key_data: Optional[bytes] = None
    token: Optional[str] = None
    token_file: Optional[str] = None
    insecure: bool = False
    tls_server_name: Optional[str] = None
    files: Tuple[str, ...] = ()               # whose change means: read everything again
    kubelet_identity: bool = False            # the kubelet's own kubeconfig

    @property
    def auth(self) -> str:
        if self.cert_file or self.cert_data:
            return "client certificate"
        if self.token or self.token_file:
            return "bearer token"
        return "anonymous"

    def describe(self) -> str:
        return "%s (%s, server %s)" % (self.source, self.auth, self.server)


def file_fingerprint(paths: Tuple[str, ...]) -> Tuple[object, ...]:
    """Identity and age of each file: rotation (a new kubelet-client-current.pem symlink target,
    a refreshed token) changes it."""
    out: List[object] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((p, None))
    return tuple(out)


MAX_FILE = 1 << 20   # a kubeconfig, token, certificate or key larger than this is not one


def read_capped(path: str, limit: int = MAX_FILE) -> bytes:
    """A regular file's bytes (symlinks followed), at most ``limit``: OSError otherwise, with a
    message that says why (a FIFO or device would block or never end; a larger file is not what
    it claims to be)."""
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, "larger than %d KiB" % (limit >> 10))
    return data


def read_credential_file(path: str, what: str, where: str) -> bytes:
    """A token, certificate or key file; CredentialsError (one line, naming ``what``) when it
    cannot be read."""
    try:
        return read_capped(path)
    except OSError as e:
        problem = _file_problem(e)
        raise CredentialsError("%s: %s %s: %s" % (where, what, path, problem)) from None


def _file_problem(e: OSError) -> str:
    import errno

    if e.errno in (errno.EINVAL, errno.EFBIG) and e.strerror:
        return e.strerror
    return file_problem(e, permission_hint=_RUN_AS_ROOT)


def _show(value: object, quoted: bool = False) -> str:
    """A value from the file, safe for a one-line message: short, printable."""
    text = value if isinstance(value, str) and not quoted else repr(value)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_url(server: str) -> bool:
    from urllib.parse import urlsplit

    if any(c.isspace() or not c.isprintable() for c in server):
        return False
    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return bool(parts.hostname)


def token_problem(token: str) -> Optional[str]:
    """Why ``token`` cannot go into an Authorization header, or None."""
    # A line break or NUL would end the header (aiohttp refuses to send it at all).
    if not all(32 <= ord(c) < 127 for c in token):
        return "holds control or non-ASCII characters (not a bearer token)"
    return None


def _named(entries: object, name: str, kind: str, where: str) -> Mapping[str, Any]:
    if not isinstance(entries, list):
        raise CredentialsError("%s: %s is missing or not a list" % (where, kind))
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            body = entry.get(kind[:-1])
            if not isinstance(body, Mapping):
                raise CredentialsError("%s: %s[%s].%s is missing" % (where, kind, name, kind[:-1]))
            return body
    raise CredentialsError("%s: no %s named %r" % (where, kind[:-1], name))


def _b64(value: object, field_name: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise CredentialsError("%s: %s must be a base64 string" % (where, field_name))
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError("%s: %s is not valid base64" % (where, field_name)) from None


def parse_kubeconfig(doc: object, where: str, resolve: Callable[[str], str]) -> Credentials:
    """Credentials from a parsed kubeconfig. ``resolve(path)`` maps a path written in the file to
    a real path. Raises CredentialsError naming the file and field."""
    if not isinstance(doc, Mapping):
        raise CredentialsError("%s: not a kubeconfig (expected a mapping)" % where)
    contexts = doc.get("contexts") if isinstance(doc.get("contexts"), list) else []
    current = doc.get("current-context")
    if not current:
        names = [c.get("name") for c in contexts if isinstance(c, Mapping)]
        if len(names) != 1:
            raise CredentialsError("%s: no current-context set" % where)
        current = names[0]
    context = _named(contexts, current, "contexts", where)
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not cluster_name:
        raise CredentialsError("%s: context %s names no cluster" % (where, _show(current, True)))
    cluster = _named(doc.get("clusters"), cluster_name, "clusters", where)
    user: Mapping[str, Any] = {}
    if user_name:
        user = _named(doc.get("users"), user_name, "users", where)
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise CredentialsError("%s: users[%s].%s is not supported; use a client certificate "
                                   "or a token" % (where, user_name, unsupported))
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise CredentialsError("%s: clusters[%s].server must be an https:// URL, got %s"
                               % (where, _show(cluster_name), _show(server, True)))
    if not _valid_url(server):
        raise CredentialsError("%s: clusters[%s].server %s is not a valid URL"
                               % (where, _show(cluster_name), _show(server, True)))
    files: List[str] = []
    values: Dict[str, Any] = {}

    def path_field(body: Mapping[str, Any], key: str, owner: str) -> Optional[str]:
        value = body.get(key)
        if not value:
            return None
        if not isinstance(value, str):
            raise CredentialsError("%s: %s.%s must be a path" % (where, owner, key))
        real = resolve(value)
        if not os.path.isfile(real):
            raise CredentialsError("%s: %s.%s %s: no such file" % (where, owner, key,
                                                                    _show(value)))
        files.append(real)
        return real

    cl = "clusters[%s]" % _show(cluster_name)
    us = "users[%s]" % _show(user_name)
    if cluster.get("certificate-authority-data"):
        values["ca_data"] = _b64(cluster["certificate-authority-data"],
                                 cl + ".certificate-authority-data", where)
    else:
        values["ca_file"] = path_field(cluster, "certificate-authority", cl)
    if user.get("client-certificate-data"):
        values["cert_data"] = _b64(user["client-certificate-data"],
                                   us + ".client-certificate-data", where)
    else:
        values["cert_file"] = path_field(user, "client-certificate", us)
    if user.get("client-key-data"):
        values["key_data"] = _b64(user["client-key-data"], us + ".client-key-data", where)
    else:
        values["key_file"] = path_field(user, "client-key", us)
    has_cert = values.get("cert_data") or values.get("cert_file")
    has_key = values.get("key_data") or values.get("key_file")
    if bool(has_cert) != bool(has_key):
        raise CredentialsError("%s: %s has a client certificate without its key (or the other "
                               "way round)" % (where, us))
    token = user.get("token")
    if token is not None and not isinstance(token, str):
        raise CredentialsError("%s: %s.token must be a string" % (where, us))
    if token and token_problem(token):
        raise CredentialsError("%s: %s.token %s" % (where, us, token_problem(token)))
    values["token"] = token or None
    values["token_file"] = path_field(user, "tokenFile", us)
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise CredentialsError("%s: %s.insecure-skip-tls-verify must be true or false"
                               % (where, cl))
    tls_name = cluster.get("tls-server-name")
    return Credentials(server=server.rstrip("/"), source=where, insecure=insecure,
                       tls_server_name=tls_name if isinstance(tls_name, str) else None,
                       files=tuple(files), **values)


def load_kubeconfig(path: str, where: Optional[str] = None, root: Optional["HostRoot"] = None,
                    kubelet_identity: bool = False) -> Credentials:
    """Read a kubeconfig at real path ``path``. With ``root`` (a HostRoot) the absolute paths
    inside are host paths under that root."""
    from edgeagent.safeyaml import YamlError, loads

    where = where or "kubeconfig %s" % path
    try:
        raw = read_capped(path)
    except OSError as e:
        raise CredentialsError("%s: %s" % (where, _file_problem(e))) from None
    try:
        doc = loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CredentialsError("%s: not UTF-8 text" % where) from None
    except YamlError as e:
        raise CredentialsError("%s: %s" % (where, e)) from None
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p: str) -> str:
        if not os.path.isabs(p):
            return os.path.normpath(os.path.join(base, p))
        return root.resolve(p) if root is not None else p

    creds = parse_kubeconfig(doc, where, resolve)
    return Credentials(**dict(vars(creds), files=(os.path.abspath(path),) + creds.files,
                              kubelet_identity=kubelet_identity))


def in_cluster(root: "HostRoot", env: Mapping[str, str]) -> Optional[Credentials]:
    """The service account's credentials when running in a pod; None outside one."""
    host = env.get("KUBERNETES_SERVICE_HOST")
    port = env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    where = "in-cluster service account"
    token_file = root.resolve(SERVICEACCOUNT_DIR + "/token")
    ca_file = root.resolve(SERVICEACCOUNT_DIR + "/ca.crt")
    for p, what in ((token_file, "token"), (ca_file, "CA")):
        if not os.path.isfile(p):
            raise CredentialsError("%s: %s %s: no such file" % (where, what, p))
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host  # IPv6 service address
    server = "https://%s:%s" % (host, port)
    if not _valid_url(server):
        raise CredentialsError("%s: KUBERNETES_SERVICE_HOST/_PORT make no valid URL: %s"
                               % (where, _show(server, True)))
    return Credentials(server=server, source=where, ca_file=ca_file,
                       token_file=token_file, files=(token_file, ca_file))


def candidates(root: "HostRoot", explicit: Optional[str]) -> List[Tuple[str, str]]:
    """(description, real path) of the kubeconfigs tried, in order."""
    if explicit:
        return [("--kubeconfig", explicit)]
    return [("kubelet kubeconfig", root.resolve(p)) for p in KUBELET_KUBECONFIGS]


def find_credentials(root: "HostRoot", explicit: Optional[str] = None,
                     env: Optional[Mapping[str, str]] = None) -> Credentials:
    """The first credentials found (see the module docstring). A source that exists but is
    broken raises CredentialsError rather than falling through to the next one."""
    env = os.environ if env is None else env
    if explicit:
        if not os.path.exists(explicit):
            raise CredentialsError("kubeconfig %s: no such file" % explicit)
        return load_kubeconfig(explicit)
    for host_path in KUBELET_KUBECONFIGS:
        real = root.resolve(host_path)
        if os.path.isfile(real):
            return load_kubeconfig(real, "kubeconfig %s" % host_path, root=root,
                                   kubelet_identity=True)
    found = in_cluster(root, env)
    if found is not None:
        return found
    raise NoCredentials(
        "no Kubernetes credentials: none of %s exists and not in a cluster (give --kubeconfig)"
        % ", ".join(KUBELET_KUBECONFIGS))
