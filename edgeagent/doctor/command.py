"""`edgeagent doctor [--json]`: every check, one line of evidence each, a fix for WARN/FAIL.

Exit 0 when nothing failed, 1 otherwise. Uses the same root, config, --kubeconfig and
--node-name as `run`, so it checks what the service uses.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, Sequence

from edgeagent.doctor.model import FAIL, PASS, SKIP, STATUSES, WARN, CheckResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgeagent.invocation import add_kube_arguments

    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"check", "status", "detail", "fix"}')
    add_kube_arguments(parser)


def render_text(results: List[CheckResult]) -> str:
    """``STATUS  name  detail`` lines, names aligned, and ``      fix: ...`` under WARN/FAIL,
    then a one-line summary."""
    width = max([len(r.check) for r in results] + [4])
    lines = []
    for r in results:
        lines.append(("%-4s  %-*s  %s" % (r.status, width, r.check, r.detail)).rstrip())
        if r.status in (WARN, FAIL) and r.fix:
            lines.append("      fix: %s" % r.fix)
    counts: Dict[str, int] = {s: 0 for s in STATUSES}
    for r in results:
        counts[r.status] += 1
    lines.append("%d passed, %d warnings, %d failed, %d skipped" % (
        counts[PASS], counts[WARN], counts[FAIL], counts[SKIP]))
    return "\n".join(lines)


def render_json(results: List[CheckResult]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)


def exit_code(results: List[CheckResult]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def collect(root: Any, config: Any, modules: Optional[Sequence[str]] = None,
            **limits: float) -> List[CheckResult]:
    """Build the context (discovery included) and run every registered check (or those of
    ``modules``); ``limits`` are run_checks' deadline and check_timeout."""
    import asyncio

    from edgeagent.doctor.runner import build_context, run_checks

    ctx = build_context(root, config)
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run_checks(ctx, modules, **limits))
    finally:
        _close_loop(loop)


def _close_loop(loop: Any) -> None:
    # Not asyncio.run(): its shutdown waits for every task to finish cancelling, and a check
    # that ignores cancellation would then hold the report past its time bound.
    import asyncio

    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=0.3))
    for task in pending:
        if not task.done():
            task._log_destroy_pending = False  # abandoned on purpose; no "destroyed" warning
    loop.close()


def main(cli: Any) -> int:
    results = collect(cli.root, cli.config)
    print(render_json(results) if cli.args.json else render_text(results))
    return exit_code(results)
