"""Forget the tegrastats parser's memos, so tests and bench/bench_exporter.py see its cold cost
and check that memoised results equal fresh ones. Test-only: the agent never clears them (they
are bounded and clear themselves when full)."""

from edgeagent.tegrastats import parser


def clear_memos() -> None:
    for memo in parser._MEMOS:
        memo.clear()
    for core, cores in zip(parser._OFFLINE, parser._CORES):
        cores.clear()
        cores["off"] = core
