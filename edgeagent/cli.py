"""Command line: `edgeagent [--root DIR] [--config FILE] [--log-level LEVEL] COMMAND`.

Operator errors (bad flags, config, files) print one line and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

from edgeagent.errors import OperatorError
from edgeagent.invocation import Invocation, UsageError

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
    "gpu_mode": "gpu_mode",
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


# (name, help, module, add_arguments, main) of every command, in help order. Modules are named,
# not imported: a command's module is imported only when that command runs (or for --help),
# so `run` does not carry doctor's, install's... code all day (bench/bench_footprint.py).
COMMANDS: Sequence[Tuple[str, str, str, str, str]] = (
    ("version", "print version, Python version and platform",
     "edgeagent.version_command", "add_arguments", "main"),
    ("discover", "print the hardware inventory",
     "edgeagent.discover_command", "add_arguments", "main"),
    ("run", "run the agent", "edgeagent.agent_command", "add_arguments", "main"),
    ("install", "install and start the systemd service (sudo ./edgeagent.pyz install)",
     "edgeagent.install.command", "add_install_arguments", "install_main"),
    ("uninstall", "stop and remove the systemd service",
     "edgeagent.install.command", "add_uninstall_arguments", "uninstall_main"),
    ("doctor", "check this node and say how to fix what is wrong",
     "edgeagent.doctor.command", "add_arguments", "main"),
    ("tegrastats", "parse a tegrastats log (or stdin) into one JSON object per line",
     "edgeagent.tegrastats.command", "add_arguments", "main"),
    ("labels", "print (or remove) the labels of this node",
     "edgeagent.labels.command", "add_arguments", "main"),
)
# Global options that take a value: the token after them is not the command.
_GLOBAL_VALUES = ("--root", "--config", "--log-level", "--log-format")


def chosen_command(argv: Sequence[str]) -> Optional[str]:
    """The command ``argv`` names (the first word that is not a global option or its value),
    or None when there is none or it is unknown (then every command is loaded, for help and
    for argparse's error message)."""
    names = {c[0] for c in COMMANDS}
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _GLOBAL_VALUES:
            skip = True
        elif token == "--":
            return None
        elif not token.startswith("-"):
            return token if token in names else None
    return None


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the command it names gets its arguments (and its module
    imported): the others are listed with their help, and loaded when named."""
    parser = _Parser(prog="edgeagent",
                     description="Kubernetes GPU node agent for Jetson and devicetree boards.")
    _add_global(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    only = chosen_command(argv) if argv is not None else None
    for name, help_text, module_name, add_name, main_name in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        _add_global(p, suppress=True)
        getattr(module, add_name)(p)
        p.set_defaults(_main=getattr(module, main_name))
    return parser


def _resolve_root(args: argparse.Namespace) -> Tuple[str, bool]:
    root = args.root or os.environ.get("EDGEAGENT_ROOT")
    if not root:
        return "/", False
    if not os.path.isdir(root):
        where = "--root" if args.root else "environment EDGEAGENT_ROOT:"
        raise UsageError("%s %s: no such directory" % (where, root))
    return root, True


def load_cli(args: argparse.Namespace) -> Invocation:
    """The Invocation for parsed ``args``: root, config (file < env < flags)."""
    from edgeagent.config import DEFAULT_CONFIG_PATH, load_config
    from edgeagent.hostpaths import HostRoot

    root_dir, root_given = _resolve_root(args)
    root = HostRoot(root_dir)
    path = args.config or os.environ.get("EDGEAGENT_CONFIG")
    # lexists, not isfile: a default config that is there but not a regular file (a FIFO, a
    # link to /dev/zero or to nothing) is reported, never silently skipped; read inside the root.
    if path is None and os.path.lexists(root.path(DEFAULT_CONFIG_PATH)):
        path = root.resolve(DEFAULT_CONFIG_PATH)
    flags = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
    if flags.get("dry_run") is False:
        flags["dry_run"] = None  # store_true's False means "not given"
    config = load_config(path, flags=flags)
    return Invocation(args, root, config, root_given)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the console script and of ``python -m edgeagent``.

    Exit 2 with one line for an operator error; an unexpected internal error is one line too
    (exit 1), its traceback logged at debug level (``--log-level debug`` shows it)."""
    try:
        words = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(words)
        args = parser.parse_args(words)
        if args.command == "run":
            from edgeagent.agent_command import EARLY_STOP

            EARLY_STOP.install()  # from here a SIGTERM ends start-up cleanly
        invocation = load_cli(args)
        from edgeagent.logs import setup_logging

        setup_logging(invocation.config.options.log_level, invocation.config.options.log_format)
        code = args._main(invocation)
    except OperatorError as e:
        sys.stderr.write("edgeagent: error: %s\n" % _one_line(str(e)))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `edgeagent discover | head`
        _quiet_stdout()
        sys.exit(0)
    except RecursionError:
        sys.stderr.write("edgeagent: error: input nested too deeply\n")
        sys.exit(2)
    except MemoryError:
        sys.stderr.write("edgeagent: error: out of memory\n")
        sys.exit(1)
    except Exception as e:
        logging.getLogger("edgeagent").debug("internal error", exc_info=True)
        sys.stderr.write("edgeagent: error: internal error: %s: %s (a bug in edgeagent: rerun "
                         "with --log-level debug for the traceback and report it)\n"
                         % (type(e).__name__, _one_line(str(e))))
        sys.exit(1)
    sys.exit(code or 0)


def _one_line(text: str, limit: int = 1000) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _quiet_stdout() -> None:
    # The reader went away: point stdout at /dev/null so the interpreter's final flush does not
    # print "Exception ignored ... BrokenPipeError" (the Python docs' SIGPIPE recipe).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
