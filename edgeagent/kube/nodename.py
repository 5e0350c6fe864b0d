"""This node's name in the cluster: ``--node-name``/config, ``NODE_NAME``, the kubelet's client
certificate (``CN=system:node:<name>``, right even under ``--hostname-override``), else the
lowercased hostname, as the kubelet derives it (k8s.io/component-helpers GetHostname)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Mapping, Optional, Tuple

from edgeagent.kube.certinfo import node_name_from_cert

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import KubeOptions
    from edgeagent.hostpaths import HostRoot
    from edgeagent.kube.credentials import Credentials


def hostname(root: "HostRoot") -> str:
    """The kernel hostname (under ``--root`` from its /proc, for fixture hosts)."""
    if getattr(root, "root", "/") != "/":
        try:
            text = root.read_text("/proc/sys/kernel/hostname", 256).strip()
            if text:
                return text
        except OSError:
            pass
    return socket.gethostname()


def resolve_node_name(kube: "KubeOptions", root: "HostRoot",
                      creds: Optional["Credentials"] = None,
                      env: Optional[Mapping[str, str]] = None) -> Tuple[str, str]:
    """(name, where it came from)."""
    env = os.environ if env is None else env
    if kube.node_name:
        return kube.node_name.strip(), ("--node-name" if kube.node_name_source == "command line"
                                         else "config node_name")
    if env.get("NODE_NAME", "").strip():
        return env["NODE_NAME"].strip(), "NODE_NAME"
    if creds is not None:
        try:
            from edgeagent.kube.tls import client_cert_pem

            pem = client_cert_pem(creds)
        except Exception:  # an unreadable certificate is reported by the request that uses it
            pem = None
        name = node_name_from_cert(pem) if pem else None
        if name:
            return name, "client certificate"
    return hostname(root).strip().lower(), "hostname"
