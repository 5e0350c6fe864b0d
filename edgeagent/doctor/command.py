"""`edgeagent doctor [--json] [--fix [--yes] [--restart]]`: every check, one line of evidence
each, a fix for WARN/FAIL; with --fix, the fixes that are edits of a config file are applied.

Exit 0 when nothing failed, 1 otherwise. Uses the same root, config, --kubeconfig and
--node-name as `run`, so it checks what the service uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from edgeagent.doctor.model import FAIL, PASS, SKIP, STATUSES, WARN, CheckResult, DoctorContext
from edgeagent.invocation import Invocation, UsageError, add_kube_arguments

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import Config
    from edgeagent.doctor.fix import Applied, FileEdit
    from edgeagent.doctor.runner import CheckSource
    from edgeagent.hostpaths import HostRoot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"check", "status", "detail", "fix"}')
    parser.add_argument("--fix", action="store_true",
                        help="apply the fixes that are edits of a config file: each diff is "
                             "shown first and the old file kept as a timestamped backup")
    parser.add_argument("--yes", action="store_true",
                        help="with --fix: apply without asking (needed without a terminal)")
    parser.add_argument("--restart", action="store_true",
                        help="with --fix: restart the services whose config was edited")
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


def diagnose(root: "HostRoot", config: "Config",
             sources: Optional[Sequence["CheckSource"]] = None,
             **limits: float) -> Tuple[List[CheckResult], DoctorContext]:
    """Build the context (discovery included) and run every check (or those of ``sources``);
    ``limits`` are run_checks' deadline and check_timeout. The context holds what checks left
    for --fix (``facts["fix.edits"]``)."""
    from edgeagent.doctor.runner import build_context, run_checks
    from edgeagent.looprunner import run_bounded

    ctx = build_context(root, config)
    # run_bounded, not asyncio.run: a check that ignores cancellation must not hold the report.
    return run_bounded(run_checks(ctx, sources, **limits)), ctx


def collect(root: "HostRoot", config: "Config", sources: Optional[Sequence["CheckSource"]] = None,
            **limits: float) -> List[CheckResult]:
    """Every check's result (see :func:`diagnose`)."""
    return diagnose(root, config, sources, **limits)[0]


def main(inv: Invocation) -> int:
    args = inv.args
    if (args.yes or args.restart) and not args.fix:
        raise UsageError("--yes and --restart go with --fix")
    results, ctx = diagnose(inv.root, inv.config)
    if not args.fix:
        print(render_json(results) if args.json else render_text(results))
        return exit_code(results)
    return FixSession(inv.root, args.yes, args.restart, args.json).run(results, ctx)


Ask = Callable[[str], bool]


def ask_terminal(question: str) -> bool:
    try:
        answer = input(question + " [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


class FixSession:
    """What `doctor --fix` does after the checks: show each planned edit's diff, confirm it (a
    terminal question, or --yes), apply it, then name (or, with --restart, restart) the services
    that must read the new files. Without a terminal and without --yes nothing is applied: the
    diffs are printed and the command ends as an operator error (exit 2)."""

    def __init__(self, root: "HostRoot", yes: bool, restart: bool, as_json: bool,
                 out: Optional[TextIO] = None, ask: Optional[Ask] = None,
                 interactive: Optional[bool] = None) -> None:
        from edgeagent.doctor.fix import FixApplier, ServiceRunner

        self.root = root
        self.yes = yes
        self.restart = restart
        self.as_json = as_json
        self.out = out or sys.stdout
        self.ask = ask or ask_terminal
        self.interactive = (sys.stdin.isatty() and sys.stdout.isatty()) if interactive is None \
            else interactive
        self.applier = FixApplier(root)
        self.services = ServiceRunner(root)

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def run(self, results: List[CheckResult], ctx: DoctorContext) -> int:
        from edgeagent.doctor.fix import Applied

        edits: List["FileEdit"] = list(ctx.facts.get("fix.edits", []))
        refused: List[Tuple[str, str]] = list(ctx.facts.get("fix.refused", []))
        if not self.as_json:
            self.say(render_text(results))
            self.say()
            for check, why in refused:
                self.say("not editable (%s): %s" % (check, why))
            if not edits:
                self.say("--fix: nothing to edit")
                return exit_code(results)
            self.say("--fix: %d edit%s:" % (len(edits), "" if len(edits) == 1 else "s"))
            for edit in edits:
                self.say("# %s (%s)" % (edit.why, edit.check))
                self.out.write(edit.diff())
        try:
            confirmed = self._confirm(edits, results)
        except UsageError as e:
            if self.as_json:     # the planned edits still reach the caller, none applied
                self._say_json(results, [Applied(x, False, str(e)) for x in edits], refused, [])
            raise
        applied = [self.applier.apply(e) for e in confirmed]
        restarts = self._restarts(applied)
        if self.as_json:
            self._say_json(results, applied, refused, restarts)
        else:
            for a in applied:
                self.say(("edited %s (%s)" if a.ok else "not edited: %s%s") % (
                    a.edit.path if a.ok else "", a.detail))
            for service, ok, detail in restarts:
                self.say(detail)
        return self._exit(results, applied, restarts)

    def _say_json(self, results: List[CheckResult], applied: List["Applied"],
                  refused: List[Tuple[str, str]], restarts: List[Tuple[str, bool, str]]) -> None:
        self.say(json.dumps({
            "checks": [r.to_json() for r in results],
            "fixes": [a.to_json() for a in applied],
            "refused": [{"check": c, "why": w} for c, w in refused],
            "restarts": [{"service": s, "restarted": ok, "detail": d}
                         for s, ok, d in restarts]}, indent=2))

    def _confirm(self, edits: List["FileEdit"], results: List[CheckResult]) -> List["FileEdit"]:
        if not edits or self.yes:
            return edits
        if self.as_json or not self.interactive:
            raise UsageError("--fix: %s; nothing was changed: rerun with --yes to apply %s" % (
                "--json cannot ask for confirmation" if self.as_json
                else "no terminal to confirm the edits above",
                "them" if len(edits) > 1 else "it"))
        return [e for e in edits if self.ask("apply this edit to %s?" % e.path)]

    def _restarts(self, applied: List["Applied"]) -> List[Tuple[str, bool, str]]:
        services: List[str] = []
        for a in applied:
            if a.ok and a.edit.service and a.edit.service not in services:
                services.append(a.edit.service)
        out = []
        for service in services:
            if self.restart:
                ok, detail = self.services.restart(service)
            else:
                ok, detail = False, ("restart %s to read the new config: sudo systemctl restart "
                                     "%s (or rerun with --restart)" % (service, service))
            out.append((service, ok, detail))
        return out

    def _exit(self, results: List[CheckResult], applied: List["Applied"],
              restarts: List[Tuple[str, bool, str]]) -> int:
        if any(not a.ok for a in applied) or (self.restart and any(not ok for _, ok, _ in
                                                                   restarts)):
            return 1
        fixed = set()
        for a in applied:
            fixed.update(c.strip() for c in a.edit.check.split(","))
        return 1 if any(r.status == FAIL and r.check not in fixed for r in results) else 0
