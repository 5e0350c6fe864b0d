"""`edgeagent tegrastats [FILE]`: what the agent sees in a tegrastats log, one JSON object a line.

FILE is a log written by ``tegrastats --logfile`` (or any saved output); without FILE, or with
``-``, stdin is read, so ``tegrastats | edgeagent tegrastats`` works live. FILE is a path on this
machine, not under ``--root``.

The input is read in bounded chunks, never a line at a time: a line over 16 KiB (a real one is
under 2 KiB) is skipped whole, and the count of skipped lines is said on stderr at the end, so
memory stays bounded whatever the file holds.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, BinaryIO, List

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.invocation import Invocation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="tegrastats log to parse (default: stdin)")


def _open(path: str) -> BinaryIO:
    from edgeagent.errors import OperatorError, file_problem

    try:
        return open(path, "rb")
    except OSError as e:
        raise OperatorError("tegrastats log %s: %s" % (path, file_problem(e))) from None


def main(cli: "Invocation") -> int:
    from edgeagent.tegrastats.lineplans import LineEncoder
    from edgeagent.tegrastats.lines import MAX_LINE_BYTES, READ_CHUNK, LineSplitter

    path = cli.args.file
    stream = sys.stdin.buffer if path in (None, "-") else _open(path)
    out = sys.stdout
    interactive = out.isatty() or path in (None, "-")   # live: show each line as it comes
    # read1: what is there now, up to a chunk (a pipe from a live tegrastats never fills one)
    read = getattr(stream, "read1", stream.read)
    splitter = LineSplitter()
    encode = LineEncoder().encode

    def emit(lines: List[bytes]) -> None:
        # one write per chunk: a write per line cost more than encoding the line
        texts = [encode(text) for text in [raw.decode("utf-8", "replace").strip()
                                           for raw in lines] if text]
        if texts:
            out.write("\n".join(texts) + "\n")
        if interactive and lines:
            out.flush()

    try:
        while True:
            chunk = read(READ_CHUNK)
            if not chunk:
                break
            emit(splitter.feed(chunk))
        emit(splitter.finish())
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if splitter.too_long:
        out.flush()
        sys.stderr.write("edgeagent: warning: %d line(s) over %d bytes skipped\n"
                         % (splitter.too_long, MAX_LINE_BYTES))
    return 0
