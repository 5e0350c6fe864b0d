"""Kubernetes name syntax (pure): shared by config validation and label computation."""

from __future__ import annotations

import re

MAX_PREFIX = 253
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_subdomain(s: str) -> bool:
    """A label key's prefix, and any Kubernetes DNS subdomain (RFC 1123, lower case)."""
    return len(s) <= MAX_PREFIX and _DNS_SUBDOMAIN.fullmatch(s) is not None
