"""Errors of the Kubernetes API client: credentials the operator must fix, and request failures
the callers classify for retries (status, Kubernetes ``reason``, ``Retry-After``)."""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

from edgeagent.errors import OperatorError


class CredentialsError(OperatorError):
    """A kubeconfig or in-cluster setup that cannot be used (one line: what and where)."""


class NoCredentials(CredentialsError):
    """None of the credential sources exists."""


class KubeError(Exception):
    """A request that did not succeed. ``status`` is None for network and TLS failures."""

    def __init__(self, message: str, status: Optional[int] = None, reason: str = "",
                 retry_after: Optional[float] = None,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    @property
    def retryable(self) -> bool:
        """429, 5xx and network errors: worth retrying with backoff."""
        return self.status is None or self.status == 429 or self.status >= 500


class KubeNetworkError(KubeError):
    """Connection refused/reset/dropped, DNS, or timeout."""


class KubeTLSError(KubeNetworkError):
    """The server's certificate did not verify (wrong CA, name, or expired)."""


class KubeResponseError(KubeError):
    """A 2xx answer that cannot be read as what was asked for (not JSON, not a Node, too
    large): the caller must stop, never act on it as if it were empty."""


def classify_write_error(error: BaseException) -> Tuple[str, str]:
    """(state, kind of backoff: "auth", "slow" or "transient") of a failed reconcile against
    the API: what the labels reconciler and the slice publisher share. Each caller first takes
    out the cases only it has (a missing Node, a missing API)."""
    if isinstance(error, CredentialsError):
        return "no-credentials", "slow"
    if isinstance(error, KubeTLSError):
        return "tls-error", "transient"
    if isinstance(error, KubeResponseError):
        return "bad-response", "transient"
    if isinstance(error, KubeError):
        if error.status == 401:
            return "unauthorized", "auth"
        if error.status == 403:
            return "forbidden", "auth"
        if error.status == 409:
            return "conflict", "transient"
        if error.status == 429:
            return "throttled", "transient"
        if error.retryable:
            return "unreachable", "transient"
        return "rejected", "slow"
    return "error", "transient"
