"""Load for the benchmarks: processes spinning on a core each, as `./build.sh test` keeps both
cores of the build machine busy. Bounded: each child ends itself after ``seconds`` even if the
benchmark dies without killing it. Also the unit's scheduling (``Nice=``), which the benches give
the agent's process as systemd would."""

import os
import re
import subprocess
import sys
from typing import Callable

_SPIN = "import time\nend = time.monotonic() + %f\nwhile time.monotonic() < end: pass\n"


class Busy:
    """``with Busy(2):`` two spinning processes for the block (none with 0)."""

    def __init__(self, n: int, seconds: float = 600.0) -> None:
        self.n, self.seconds, self.procs = n, seconds, []

    def __enter__(self) -> "Busy":
        # at the default priority, as the test suite runs, whatever this process's niceness
        self.procs = [subprocess.Popen([sys.executable, "-c", _SPIN % self.seconds],
                                       preexec_fn=at_nice(0))
                      for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "systemd", "edgeagent.service")


def unit_nice() -> int:
    """Nice= of the shipped unit (0 when it sets none): the benches run the agent at it."""
    with open(UNIT) as f:
        m = re.search(r"^Nice=(-?\d+)\s*$", f.read(), re.M)
    return int(m.group(1)) if m else 0


def at_nice(value: int) -> Callable[[], None]:
    """A Popen ``preexec_fn`` that gives the child niceness ``value``, as systemd's Nice= does
    (absolute, not added to this process's). A negative value needs root: without it Popen
    fails (PermissionError) rather than measure another set-up."""
    def apply() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    return apply
