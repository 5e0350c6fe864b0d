"""Load for the benchmarks: processes spinning on a core each, as `./build.sh test` keeps both
cores of the build machine busy. Bounded: each child ends itself after ``seconds`` even if the
benchmark dies without killing it."""

import subprocess
import sys

_SPIN = "import time\nend = time.monotonic() + %f\nwhile time.monotonic() < end: pass\n"


class Busy:
    """``with Busy(2):`` two spinning processes for the block (none with 0)."""

    def __init__(self, n: int, seconds: float = 600.0) -> None:
        self.n, self.seconds, self.procs = n, seconds, []

    def __enter__(self) -> "Busy":
        self.procs = [subprocess.Popen([sys.executable, "-c", _SPIN % self.seconds])
                      for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
