"""`edgeagent doctor [--json]`: every check, one line of evidence each, a fix for WARN/FAIL.

Exit 0 when nothing failed, 1 otherwise. Uses the same root, config, --kubeconfig and
--node-name as `run`, so it checks what the service uses.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from edgeagent.doctor.model import FAIL, PASS, SKIP, STATUSES, WARN, CheckResult
from edgeagent.invocation import Invocation, add_kube_arguments

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import Config
    from edgeagent.doctor.runner import CheckSource
    from edgeagent.hostpaths import HostRoot


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def collect(root: "HostRoot", config: "Config", sources: Optional[Sequence["CheckSource"]] = None,
            **limits: float) -> List[CheckResult]:
    """Build the context (discovery included) and run every check (or those of ``sources``);
    ``limits`` are run_checks' deadline and check_timeout."""
    from edgeagent.doctor.runner import build_context, run_checks
    from edgeagent.looprunner import run_bounded

    ctx = build_context(root, config)
    # run_bounded, not asyncio.run: a check that ignores cancellation must not hold the report.
    return run_bounded(run_checks(ctx, sources, **limits))


def main(inv: Invocation) -> int:
    results = collect(inv.root, inv.config)
    print(render_json(results) if inv.args.json else render_text(results))
    return exit_code(results)
