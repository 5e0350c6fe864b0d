"""The event loop's short scheduler slice: the plan (pure), and the real kernel in a child."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from edgeagent.schedslice import (ATTR, SCHED_BATCH, SCHED_FLAG_RESET_ON_FORK, SCHED_OTHER,
                                  SLICE_NS, SchedAttr, planned, request_short_slice)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_attr_is_the_kernels_first_version():
    assert ATTR.size == 48  # SCHED_ATTR_SIZE_VER0
    attr = SchedAttr(SCHED_OTHER, 0, -5, 0, 2800000)
    assert SchedAttr.unpack(attr.pack()) == attr
    assert ATTR.unpack(attr.pack())[0] == 48


def test_plan_keeps_policy_and_nice_and_resets_children():
    wanted, _ = planned(SchedAttr(SCHED_BATCH, 0, 7, 0, 2800000))
    assert wanted == SchedAttr(SCHED_BATCH, SCHED_FLAG_RESET_ON_FORK, 7, 0, SLICE_NS)


def test_at_a_negative_nice_children_inherit_rather_than_lose_it():
    # The kernel's reset on fork also brings a negative nice back to 0.
    wanted, _ = planned(SchedAttr(SCHED_OTHER, 0, -5, 0, 2800000))
    assert wanted == SchedAttr(SCHED_OTHER, 0, -5, 0, SLICE_NS)


@pytest.mark.parametrize("attr, why", [
    (SchedAttr(1, 0, 0, 10, 0), "policy is 1"),          # SCHED_FIFO: someone chose it
    (SchedAttr(5, 0, 0, 0, 0), "policy is 5"),           # SCHED_IDLE: leave it idle
    (SchedAttr(6, 0, 0, 0, 1000000), "policy is 6"),     # SCHED_DEADLINE
    (SchedAttr(SCHED_OTHER, 0, 0, 0, 0), "Linux 6.12"),  # before 6.12: no slice reported
    (SchedAttr(SCHED_OTHER, 1, 0, 0, SLICE_NS), "already"),
])
def test_plan_leaves_alone(attr, why):
    wanted, reason = planned(attr)
    assert wanted is None and why in reason


def test_unknown_machine_is_a_reason_not_an_error():
    got = request_short_slice(machine="sparc64")
    assert got[0] is None and got[1].startswith("no sched_setattr number known for sparc64")


CHILD = textwrap.dedent("""
    import json, os, sys, threading
    sys.path.insert(0, %r)
    from edgeagent import schedslice
    syscall, get_errno, buffer = schedslice._libc_syscall()
    def current():
        raw = buffer(schedslice.ATTR.size)
        assert syscall(schedslice.SYSCALLS[os.uname().machine, 64][1], 0, raw, 48, 0) == 0
        return schedslice.SchedAttr.unpack(raw.raw)._asdict()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[1]))
    except PermissionError:   # a negative nice needs CAP_SYS_NICE
        print("null"); sys.exit(0)
    before = current()
    result = schedslice.request_short_slice()
    out = {"before": before, "result": result, "after": current(),
           "again": schedslice.request_short_slice()}
    t = threading.Thread(target=lambda: out.update(thread=current()))
    t.start(); t.join()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, json.dumps(current()).encode()); os._exit(0)
    os.waitpid(pid, 0)
    out["child"] = json.loads(os.read(r, 4096))
    print(json.dumps(out))
""") % REPO


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers")
@pytest.mark.parametrize("nice", [3, -5])
def test_real_kernel_in_a_child_process(nice):
    out = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(nice)], check=True,
                                    stdout=subprocess.PIPE, timeout=60).stdout)
    if out is None:
        pytest.skip("a negative nice needs CAP_SYS_NICE")
    before, after = out["before"], out["after"]
    if before["runtime"] == 0:
        # A kernel before 6.12: nothing set, nothing changed.
        assert out["result"][0] is None and after == before
        return
    assert out["result"][0] == SLICE_NS and after["runtime"] == SLICE_NS
    assert after["nice"] == before["nice"] == nice and after["policy"] == before["policy"]
    for other in (out["thread"], out["child"]):
        assert other["nice"] == nice   # never lost
        if nice >= 0:
            # Only the loop's thread: a new thread and a child start with the default slice.
            assert after["flags"] & SCHED_FLAG_RESET_ON_FORK
            assert other["runtime"] == before["runtime"]
        else:
            # The kernel's reset would also reset the nice value: inherited instead.
            assert not after["flags"] & SCHED_FLAG_RESET_ON_FORK
            assert other["runtime"] == SLICE_NS
    assert out["again"] == [SLICE_NS, "already %d ns" % SLICE_NS]
