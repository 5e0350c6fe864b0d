"""The agent's open-file limit. systemd's default soft limit is 1024 (systemd.exec(5),
LimitNOFILE=): 1,100 slow clients on the metrics port once used every descriptor, and the
kubelet socket, the device health probes and the log went down with it. The unit sets
``LimitNOFILE=8192``; run by hand, the agent raises its soft limit towards that itself."""

from __future__ import annotations

import resource
from typing import Optional, Tuple

# Far above what the bounded servers hold (the metrics server's connection cap, a few gRPC
# streams, tegrastats' pipes), still finite: a descriptor leak ends in EMFILE, not kernel memory.
WANTED_NOFILE = 8192


def planned_soft_limit(soft: int, hard: int, wanted: int = WANTED_NOFILE) -> Optional[int]:
    """The soft limit to set, or None to leave it: raise towards ``wanted`` within ``hard``,
    never lower it."""
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        return ceiling
    return None


def raise_nofile_limit(wanted: int = WANTED_NOFILE) -> Tuple[int, Optional[str]]:
    """Raise RLIMIT_NOFILE's soft limit where the process may. Returns (the soft limit now in
    force, why it could not be raised or None)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = planned_soft_limit(soft, hard, wanted)
    if target is None:
        return soft, None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:  # a seccomp filter (EPERM), a container's policy
        return soft, str(e)
    return target, None
