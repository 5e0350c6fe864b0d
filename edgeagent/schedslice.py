"""A short scheduler slice for the thread that runs the agent's event loop.

Linux 6.12+ (EEVDF) lets a SCHED_OTHER thread ask for a shorter slice (``sched_attr``'s
``sched_runtime``, 0.1 to 100 ms); a waking thread with a shorter slice gets an earlier
deadline and may preempt the task running on its core instead of waiting for that task's
slice (about 3 ms) to end. The agent's loop wakes for short pieces of work on the kubelet's
path (Allocate, NodePrepareResources, a scrape): on two cores shared with busy processes,
Allocate's p99 went from 4.1 to 6.6 ms to 2.8 to 4.5 ms (bench/bench_deviceplugin.py --load 2).
The share of CPU does not change (that is the weight, i.e. the nice value, left as it is), so
neighbours lose nothing but an earlier turn for the agent's rare wake-ups.

Best effort: older kernels (JetPack's 5.15 and 6.8) do not report a slice for SCHED_OTHER and
are left alone; a seccomp filter that refuses sched_setattr (an older unit) is reported, never
fatal. ``SCHED_FLAG_RESET_ON_FORK`` keeps the slice to the loop's thread: executor threads and
children (tegrastats) start with the default.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, NamedTuple, Optional, Tuple

SLICE_NS = 100000          # the kernel's shortest (it clamps to 0.1..100 ms)
SCHED_OTHER, SCHED_BATCH = 0, 3
SCHED_FLAG_RESET_ON_FORK = 0x01
# struct sched_attr, its first version (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice,
# priority, runtime, deadline, period.
ATTR = struct.Struct("=IIQiIQQQ")
# (sched_setattr, sched_getattr) by machine; the arm64 and riscv numbers are asm-generic's.
SYSCALLS = {
    "x86_64": (314, 315),
    "aarch64": (274, 275),
    "arm64": (274, 275),
    "riscv64": (274, 275),
    "armv7l": (380, 381),
    "armv8l": (380, 381),
    "i686": (351, 352),
}


class SchedAttr(NamedTuple):
    policy: int
    flags: int
    nice: int
    priority: int
    runtime: int

    def pack(self) -> bytes:
        return ATTR.pack(ATTR.size, self.policy, self.flags, self.nice, self.priority,
                         self.runtime, 0, 0)

    @classmethod
    def unpack(cls, raw: bytes) -> "SchedAttr":
        _size, policy, flags, nice, priority, runtime, _deadline, _period = ATTR.unpack(raw)
        return cls(policy, flags, nice, priority, runtime)


def planned(current: SchedAttr, slice_ns: int = SLICE_NS) -> Tuple[Optional[SchedAttr], str]:
    """The attributes to set for ``slice_ns``, or None and why the thread is left alone.
    Everything but the slice (policy, nice) stays as systemd or the operator set it."""
    if current.policy not in (SCHED_OTHER, SCHED_BATCH):
        return None, "the scheduling policy is %d, not SCHED_OTHER or SCHED_BATCH" % current.policy
    if current.runtime == 0:
        # Before 6.12 sched_getattr reports no slice for a fair thread, and ignores one set.
        return None, "the kernel has no per-thread slices (Linux 6.12+)"
    if current.runtime == slice_ns:
        return None, "already %d ns" % slice_ns
    return current._replace(flags=current.flags | SCHED_FLAG_RESET_ON_FORK,
                            runtime=slice_ns), ""


Syscall = Callable[..., int]


def _libc_syscall() -> Tuple[Optional[Syscall], Callable[[], int], Callable[[int], object]]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall, ctypes.get_errno, ctypes.create_string_buffer


def request_short_slice(slice_ns: int = SLICE_NS,
                        machine: Optional[str] = None) -> Tuple[Optional[int], str]:
    """Ask for ``slice_ns`` for the calling thread. Returns (the slice in force now, or None
    when it is not this module's; what was done or why not)."""
    numbers = SYSCALLS.get(machine or os.uname().machine)
    if numbers is None:
        return None, "no sched_setattr number known for %s" % (machine or os.uname().machine)
    setattr_nr, getattr_nr = numbers
    try:
        syscall, get_errno, buffer = _libc_syscall()
    except (ImportError, OSError) as e:  # a Python built without ctypes, no libc to load
        return None, "cannot call the kernel: %s" % e
    raw = buffer(ATTR.size)
    if syscall(getattr_nr, 0, raw, ATTR.size, 0) != 0:
        return None, "sched_getattr: %s" % os.strerror(get_errno())
    current = SchedAttr.unpack(raw.raw)
    wanted, why = planned(current, slice_ns)
    if wanted is None:
        return (current.runtime if current.runtime == slice_ns else None), why
    if syscall(setattr_nr, 0, buffer(wanted.pack()), 0) != 0:
        return None, "sched_setattr: %s" % os.strerror(get_errno())
    raw = buffer(ATTR.size)
    if syscall(getattr_nr, 0, raw, ATTR.size, 0) != 0:
        return None, "sched_getattr: %s" % os.strerror(get_errno())
    now = SchedAttr.unpack(raw.raw).runtime
    return now, "slice %d ns (was %d ns)" % (now, current.runtime)
