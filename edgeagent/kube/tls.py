"""An ssl.SSLContext from Credentials: the cluster CA, the client certificate and key (files or
inline data), or no verification at all for ``insecure-skip-tls-verify`` (logged loudly)."""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
from typing import Optional, Tuple

from edgeagent.kube.credentials import Credentials, read_credential_file, token_problem
from edgeagent.kube.errors import CredentialsError

log = logging.getLogger(__name__)


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    # ssl loads a client certificate only from files: write inline data to a private temporary
    # folder (0700) and remove it at once.
    folder = tempfile.mkdtemp(prefix="edgeagent-tls-")
    try:
        cert_path = os.path.join(folder, "cert.pem")
        key_path = os.path.join(folder, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as e:
        raise CredentialsError("%s: client certificate or key unusable: %s"
                               % (where, e.reason or e)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def client_cert_pem(creds: Credentials) -> Optional[bytes]:
    if creds.cert_data:
        return creds.cert_data
    if creds.cert_file:
        return read_credential_file(creds.cert_file, "client certificate", creds.source)
    return None


def make_ssl_context(creds: Credentials) -> Tuple[Optional[ssl.SSLContext], Optional[str]]:
    """(context, bearer token). The context is None for a plain http:// server."""
    token = creds.token
    if creds.token_file:
        raw = read_credential_file(creds.token_file, "token file", creds.source)
        token = raw.decode("utf-8", "replace").strip()
        if not token:
            raise CredentialsError("%s: token file %s is empty" % (creds.source, creds.token_file))
        if token_problem(token):
            raise CredentialsError("%s: token file %s %s" % (creds.source, creds.token_file,
                                                               token_problem(token)))
    if not creds.server.startswith("https://"):
        return None, token
    # Trust only the cluster CA when one is given (as client-go does); the system's public CAs
    # only when none is. Loading the system store also costs tens of milliseconds per context.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    where = creds.source
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        try:
            if creds.ca_data:
                ctx.load_verify_locations(cadata=creds.ca_data.decode("ascii", "replace"))
            elif creds.ca_file:
                pem = read_credential_file(creds.ca_file, "CA file", where)
                ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (ssl.SSLError, ValueError) as e:
            raise CredentialsError("%s: certificate authority unusable: %s"
                                   % (where, getattr(e, "reason", None) or e)) from None
    cert = client_cert_pem(creds)
    if cert is not None:
        key = creds.key_data if creds.key_data else read_credential_file(
            creds.key_file or "", "client key", where)
        _load_chain(ctx, cert, key, where)
    return ctx, token
