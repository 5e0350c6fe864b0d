"""A short scheduler slice for the thread that runs the agent's event loop.

Linux 6.12+ (EEVDF) lets a SCHED_OTHER thread ask for a shorter slice (``sched_attr``'s
``sched_runtime``, 0.1 to 100 ms); a waking thread with a shorter slice gets an earlier
deadline and may preempt the task running on its core instead of waiting for that task's
slice (1.4 ms here, up to a few ms) to end. The agent's loop wakes for short pieces of work on
the kubelet's path (Allocate, NodePrepareResources, a scrape): on two cores shared with two
busy processes, Allocate's p99 was over 5 ms in four of six runs without it and 2.8 to 4.7 ms
in eleven runs with it (bench/bench_deviceplugin.py --load 2, Linux 6.18).
The share of CPU does not change (that is the weight, i.e. the nice value, left as it is), so
neighbours lose nothing but an earlier turn for the agent's rare wake-ups.

Best effort: older kernels (JetPack's 5.15 and 6.8) do not report a slice for SCHED_OTHER and
are left alone; a seccomp filter that refuses sched_setattr (an older unit) is reported, never
fatal. ``SCHED_FLAG_RESET_ON_FORK`` keeps the slice to the loop's thread: executor threads and
children (tegrastats) start with the default. The kernel's reset also brings a negative nice
back to 0, so at a negative nice (a ``Nice=-5`` drop-in) the flag is left out and threads and
children inherit the slice with the nice value, as they inherit the nice value today.
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
# (sched_setattr, sched_getattr) by machine (the kernel's) and the process's pointer size: a
# 32-bit userland on a 64-bit kernel calls through the 32-bit table. arm64 and riscv64 use
# asm-generic's numbers.
SYSCALLS = {
    ("x86_64", 64): (314, 315),
    ("x86_64", 32): (351, 352),
    ("i686", 32): (351, 352),
    ("i386", 32): (351, 352),
    ("aarch64", 64): (274, 275),
    ("arm64", 64): (274, 275),
    ("riscv64", 64): (274, 275),
    ("aarch64", 32): (380, 381),
    ("armv8l", 32): (380, 381),
    ("armv7l", 32): (380, 381),
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
    flags = current.flags | SCHED_FLAG_RESET_ON_FORK if current.nice >= 0 else current.flags
    return current._replace(flags=flags, runtime=slice_ns), ""


Syscall = Callable[..., int]


def _libc_syscall() -> Tuple[Syscall, Callable[[], int], Callable[[int], object]]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    raw = libc.syscall
    raw.restype = ctypes.c_long

    def syscall(number: int, *args: object) -> int:
        # syscall(2) is variadic: every integer goes as a long, not ctypes' default int.
        return int(raw(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a
                                                 for a in args)))
    return syscall, ctypes.get_errno, ctypes.create_string_buffer


def request_short_slice(slice_ns: int = SLICE_NS,
                        machine: Optional[str] = None) -> Tuple[Optional[int], str]:
    """Ask for ``slice_ns`` for the calling thread. Returns (the slice in force now, or None
    when it is not this module's; what was done or why not)."""
    machine = machine or os.uname().machine
    bits = struct.calcsize("P") * 8
    numbers = SYSCALLS.get((machine, bits))
    if numbers is None:
        return None, "no sched_setattr number known for %s (%d-bit)" % (machine, bits)
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
