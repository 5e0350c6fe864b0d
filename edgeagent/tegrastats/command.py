"""`edgeagent tegrastats [FILE]`: what the agent sees in a tegrastats log, one JSON object a line.

FILE is a log written by ``tegrastats --logfile`` (or any saved output); without FILE, or with
``-``, stdin is read, so ``tegrastats | edgeagent tegrastats`` works live. FILE is a path on this
machine, not under ``--root``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="tegrastats log to parse (default: stdin)")


def _open(path: str) -> BinaryIO:
    from edgeagent.errors import OperatorError, file_problem

    try:
        return open(path, "rb")
    except OSError as e:
        raise OperatorError("tegrastats log %s: %s" % (path, file_problem(e))) from None


def main(cli: Any) -> int:
    import json

    from edgeagent.tegrastats.parser import parse_line

    path = cli.args.file
    stream = sys.stdin.buffer if path in (None, "-") else _open(path)
    out = sys.stdout
    interactive = out.isatty() or path in (None, "-")   # live: show each line as it comes
    try:
        for raw in stream:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            out.write(json.dumps(parse_line(text).to_json()) + "\n")
            if interactive:
                out.flush()
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return 0
