"""Command line: `edgeagent [--root DIR] [--config FILE] [--log-level LEVEL] COMMAND`.

Operator errors (bad flags, config, files) print one line and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from edgeagent import __version__
from edgeagent.errors import OperatorError
from edgeagent.invocation import (Invocation, UsageError, add_kube_arguments, discover_inventory,
                                  inventory_labels)

# command -> ("module", "add_arguments function", "main function", help). Modules are imported
# to build the parser, so they keep their own heavy imports inside their main functions.
COMMANDS: List[Tuple[str, str, str, str, str]] = [
    ("version", "edgeagent.cli", "_no_arguments", "cmd_version",
     "print version, Python version and platform"),
    ("discover", "edgeagent.cli", "_discover_arguments", "cmd_discover",
     "print the hardware inventory"),
    ("run", "edgeagent.cli", "_run_arguments", "cmd_run", "run the agent"),
    ("install", "edgeagent.install", "add_install_arguments", "cmd_install",
     "install and start the systemd service (sudo ./edgeagent.pyz install)"),
    ("uninstall", "edgeagent.install", "add_uninstall_arguments", "cmd_uninstall",
     "stop and remove the systemd service"),
    ("doctor", "edgeagent.doctor.command", "add_arguments", "main",
     "check this node and say how to fix what is wrong"),
    ("tegrastats", "edgeagent.tegrastats.command", "add_arguments", "main",
     "parse a tegrastats log (or stdin) into one JSON object per line"),
    ("labels", "edgeagent.labels.command", "add_arguments", "main",
     "print (or remove) the labels of this node"),
]

# argparse dest -> config key: these flags override the config file and environment.
FLAG_KEYS: Dict[str, str] = {
    "log_level": "log_level",
    "log_format": "log_format",
    "kubeconfig": "kubeconfig",
    "node_name": "node_name",
    "dry_run": "dry_run",
    "disable": "disable",
    "metrics_address": "metrics.address",
    "tegrastats": "tegrastats.path",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        sys.exit(2)


def _add_global(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # The same options on the main parser and on every command, so they may come either side of
    # the command; on commands they default to SUPPRESS so they never undo an earlier value.
    d = argparse.SUPPRESS if suppress else None
    parser.add_argument("--root", metavar="DIR", default=d,
                        help="prefix of every host path (default /; env EDGEAGENT_ROOT)")
    parser.add_argument("--config", metavar="FILE", default=d,
                        help="TOML config (default <root>/etc/edgeagent/config.toml if present)")
    parser.add_argument("--log-level", metavar="LEVEL", default=d,
                        help="debug, info, warning or error")
    parser.add_argument("--log-format", metavar="FORMAT", default=d, help="text or json")


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _discover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fdt", metavar="FILE", help="read this raw DTB instead of the host tree")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="run on the built-in demo host (a Jetson AGX Xavier) on any machine")
    parser.add_argument("--disable", metavar="COMPONENT[,COMPONENT]",
                        help="components not to run: device-plugin, labels, metrics")
    parser.add_argument("--dry-run", action="store_true", default=None,
                        help="log the node patch instead of sending it")
    parser.add_argument("--metrics-address", metavar="HOST:PORT", help="where to serve /metrics")
    parser.add_argument("--tegrastats", metavar="PATH", help="tegrastats binary (host path)")
    add_kube_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeagent",
                     description="Kubernetes GPU node agent for Jetson and devicetree boards.")
    _add_global(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module, add_func, main_func, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_global(p, suppress=True)
        mod = sys.modules[__name__] if module == __name__ else importlib.import_module(module)
        getattr(mod, add_func)(p)
        p.set_defaults(_module=module, _main=main_func)
    return parser


Cli = Invocation  # the name the commands knew


def _resolve_root(args: argparse.Namespace) -> Tuple[str, bool]:
    root = args.root or os.environ.get("EDGEAGENT_ROOT")
    if not root:
        return "/", False
    if not os.path.isdir(root):
        where = "--root" if args.root else "environment EDGEAGENT_ROOT:"
        raise UsageError("%s %s: no such directory" % (where, root))
    return root, True


def load_cli(args: argparse.Namespace) -> Cli:
    from edgeagent.config import DEFAULT_CONFIG_PATH, load_config
    from edgeagent.hostpaths import HostRoot

    root_dir, root_given = _resolve_root(args)
    root = HostRoot(root_dir)
    path = args.config or os.environ.get("EDGEAGENT_CONFIG")
    if path is None and os.path.isfile(root.resolve(DEFAULT_CONFIG_PATH)):
        path = root.resolve(DEFAULT_CONFIG_PATH)
    flags = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
    if flags.get("dry_run") is False:
        flags["dry_run"] = None  # store_true's False means "not given"
    config = load_config(path, flags=flags)
    return Cli(args, root, config, root_given)


# --- commands owned by the foundation ---------------------------------------------------------

def cmd_version(cli: Cli) -> int:
    print("edgeagent %s" % __version__)
    print("python %s (%s)" % (platform.python_version(), platform.python_implementation()))
    print("platform %s %s" % (platform.system().lower(), platform.machine()))
    return 0


def cmd_discover(cli: Cli) -> int:
    inventory = discover_inventory(cli.root, cli.args.fdt)
    labels = inventory_labels(inventory, cli.config)
    if cli.args.json:
        doc = inventory.to_json()
        doc["labels"] = labels
        print(json.dumps(doc, indent=2, sort_keys=False))
        return 0
    print(render_inventory(inventory, labels))
    return 0


def render_inventory(inv, labels: Dict[str, str]) -> str:
    """The inventory for people: aligned "Field: value" lines."""
    rows: List[Tuple[str, str]] = []
    if not inv.has_devicetree:
        rows.append(("Devicetree", "none (not a devicetree host%s)" % (
            "" if not inv.devicetree_error else ": " + inv.devicetree_error)))
    else:
        rows.append(("Devicetree", inv.devicetree_source))
    rows.append(("Board", inv.board_model or "unknown"))
    if inv.board_compatible:
        rows.append(("Compatible", " ".join(inv.board_compatible)))
    rows.append(("SoC", (inv.soc or "unknown") + (" (NVIDIA Tegra)" if inv.is_tegra else "")))
    if inv.is_tegra or inv.l4t:
        rows.append(("L4T", "%s (JetPack %s)" % (inv.l4t or "not found", inv.jetpack or "unknown")))
    if inv.memory_bytes:
        rows.append(("Memory", "%.1f GiB" % (inv.memory_bytes / 2 ** 30)))
    if inv.gpu is None:
        rows.append(("GPU", "none found"))
    else:
        g = inv.gpu
        text = "%s %s, %s" % (g.path, " ".join(g.compatible), g.status)
        if g.family:
            text += ", %s, compute capability %s" % (g.family, g.compute_capability)
        rows.append(("GPU", text))
    if inv.accelerators:
        for i, a in enumerate(inv.accelerators):
            rows.append(("Accelerators" if i == 0 else "", "%s %s%s" % (
                a.kind, a.path, " (%s)" % a.device if a.device and a.device != a.path else "")))
    else:
        rows.append(("Accelerators", "none found"))
    for p in inv.problems:
        rows.append(("Problem", p))
    for i, (k, v) in enumerate(sorted(labels.items())):
        rows.append(("Labels" if i == 0 else "", "%s=%s" % (k, v)))
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(("%s:" % k if k else "").ljust(width + 1) + " " + v for k, v in rows)


def cmd_run(cli: Cli) -> int:
    import logging
    import shutil

    from edgeagent.app import (describe_inventory, materialize_demo_host, run_agent,
                               run_until_complete_bounded)
    from edgeagent.hostpaths import HostRoot

    log = logging.getLogger("edgeagent")
    demo_dir = None
    if cli.args.demo:
        if cli.root_given:
            log.warning("--demo replaces --root %s with the built-in demo host", cli.root.root)
        demo_dir = materialize_demo_host()
        cli.root = HostRoot(demo_dir)
        log.info("demo host at %s (a Jetson AGX Xavier with JetPack 5)", demo_dir)
    try:
        inventory = discover_inventory(cli.root)
        log.info("inventory: %s", describe_inventory(inventory))
        return run_until_complete_bounded(run_agent(cli.root, cli.config, inventory,
                                                    demo=cli.args.demo))
    finally:
        if demo_dir:
            shutil.rmtree(demo_dir, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the console script and of ``python -m edgeagent``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cli = load_cli(args)
        from edgeagent.logs import setup_logging

        setup_logging(cli.config.options.log_level, cli.config.options.log_format)
        module = sys.modules[__name__] if args._module == __name__ else importlib.import_module(
            args._module)
        code = getattr(module, args._main)(cli)
    except OperatorError as e:
        sys.stderr.write("edgeagent: error: %s\n" % str(e).replace("\n", " "))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `edgeagent discover | head`
        sys.exit(0)
    sys.exit(code or 0)
