"""A stand-in for NVIDIA's tegrastats, installed as <root>/usr/bin/tegrastats by the fixture host.

It prints real tegrastats lines (recorded on real boards, tests/fixtures/tegrastats) at the
``--interval`` cadence, flushing each line as the real tool does when piped. The test drives it
through files in ``<root>/run/e2e-tegrastats/``:

- ``lines.json``  the lines to replay, in order, cycling;
- ``starts``      one line appended per start, so a test can count restarts from outside;
- ``garbage``     when present, the next line printed is its content (then the file is removed),
                  so a test can make the tool print garbage exactly once;
- ``flood``       when present at start, its number is lines per second to print, ignoring
                  ``--interval``: a broken tool flooding its reader (10,000 lines/s in the tests).

The real tool prints its first line after one interval, not at once (L4T's tegrastats sleeps
before sampling), so the replay does too. Unknown arguments (``--logfile``, ``--verbose``) are
accepted and ignored.
"""

import json
import os
import sys
import time


def control_dir() -> str:
    # <root>/usr/bin/tegrastats -> <root>/run/e2e-tegrastats
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "run", "e2e-tegrastats")


def interval_seconds(argv) -> float:
    for i, arg in enumerate(argv):
        if arg == "--interval" and i + 1 < len(argv):
            return max(0.01, int(argv[i + 1]) / 1000.0)
        if arg.startswith("--interval="):
            return max(0.01, int(arg.split("=", 1)[1]) / 1000.0)
    return 1.0


def main() -> int:
    ctl = control_dir()
    if "--stop" in sys.argv:  # `tegrastats --stop` stops a background run: nothing to stop here
        return 0
    with open(os.path.join(ctl, "lines.json")) as f:
        lines = json.load(f)
    with open(os.path.join(ctl, "starts"), "a") as f:
        f.write("%d\n" % os.getpid())
    interval = interval_seconds(sys.argv[1:])
    garbage = os.path.join(ctl, "garbage")
    try:
        with open(os.path.join(ctl, "flood")) as f:
            return flood(lines, int(f.read()))
    except FileNotFoundError:
        pass
    i = 0
    try:
        while True:
            time.sleep(interval)
            line = lines[i % len(lines)]
            i += 1
            try:
                with open(garbage) as f:
                    line = f.read().rstrip("\n")
                os.unlink(garbage)
            except FileNotFoundError:
                pass
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


def flood(lines, per_second: int) -> int:
    """Print ``per_second`` lines a second, in batches every 10 ms, until the pipe closes."""
    batch = max(1, per_second // 100)
    out = sys.stdout
    due = time.monotonic()
    i = 0
    try:
        while True:
            for _ in range(batch):
                out.write(lines[i % len(lines)] + "\n")
                i += 1
            out.flush()
            due += 0.01
            time.sleep(max(0.0, due - time.monotonic()))
    except (BrokenPipeError, KeyboardInterrupt):
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
