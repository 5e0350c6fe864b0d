"""A stand-in for tegrastats that replays a recorded log: ``replay.py --interval MS --log FILE``.

It prints one tegrastats line of the log per interval (its leading timestamp, if any, replaced by
the current time), in a loop, flushing each line, and exits quietly on SIGTERM or a closed pipe -
the way the real tool behaves as the agent's child. Lines tegrastats never prints (a `date` header
some logs start with) are skipped.

``--write PATH [--log FILE]`` writes a self-contained executable script at PATH (this file with the
log's lines embedded), to be run as ``<root>/usr/bin/tegrastats`` by ``run --demo`` and by the
end-to-end tests. Standard library only, Python 3.8+: the written script runs on its own.
"""

import os
import signal
import sys
import time

_EMBEDDED = globals().get("_EMBEDDED_LINES")   # set by --write in front of this source


def tegrastats_lines(text):
    """The lines of a saved log that tegrastats printed (not a `date` header), stripped."""
    return [line.strip() for line in text.splitlines() if "RAM " in line]


def _restamp(line, now):
    parts = line.split(" ", 2)
    if len(parts) == 3 and len(parts[0]) == 10 and parts[0][2] == "-" and parts[1][2:3] == ":":
        return time.strftime("%m-%d-%Y %H:%M:%S", time.localtime(now)) + " " + parts[2]
    return line


def _option(argv, name, default=None):
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
        sys.stderr.write("%s needs a value\n" % name)
        sys.exit(2)
    return default


def default_log():
    """The packaged demo log (a real AGX Xavier JetPack 5 recording, see demo/README.md)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "agx-xavier-jp5.log")


def write_script(path, lines, python=None):
    """Write an executable replay script with ``lines`` embedded at ``path``."""
    source_file = os.path.abspath(__file__)
    if source_file.endswith((".pyc", ".pyo")):
        source_file = source_file[:-1]
    with open(source_file, "r", encoding="utf-8") as f:
        source = f.read()
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("#!%s\n" % (python or sys.executable))
        f.write("# tegrastats stand-in written by edgeagent (edgeagent/tegrastats/replay.py)\n")
        f.write("_EMBEDDED_LINES = %r\n" % (list(lines),))
        f.write(source)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--stop" in argv:
        return 0                     # the real --stop stops every instance; a stand-in has none
    log = _option(argv, "--log")
    if "--write" in argv:
        with open(log or default_log(), "r", encoding="utf-8", errors="replace") as f:
            lines = tegrastats_lines(f.read())
        write_script(_option(argv, "--write"), lines)
        return 0
    if log is not None:
        with open(log, "r", encoding="utf-8", errors="replace") as f:
            lines = tegrastats_lines(f.read())
    elif _EMBEDDED is not None:
        lines = list(_EMBEDDED)
    else:
        with open(default_log(), "r", encoding="utf-8", errors="replace") as f:
            lines = tegrastats_lines(f.read())
    try:
        interval = max(int(_option(argv, "--interval", "1000")), 1) / 1000.0
    except ValueError:
        sys.stderr.write("--interval needs milliseconds\n")
        return 2
    if not lines:
        sys.stderr.write("no tegrastats lines to replay\n")
        return 1
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    out = sys.stdout
    due = time.monotonic()
    try:
        while True:
            for line in lines:
                # tegrastats prints a line after each interval, not at start
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))
                out.write(_restamp(line, time.time()) + "\n")
                out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        sys.stdout = None            # nothing left to flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
