"""Command line: `edgeagent [--root DIR] [--config FILE] [--log-level LEVEL] COMMAND`.

Operator errors (bad flags, config, files) print one line and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

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
}

Main = Callable[[Invocation], int]


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


def _commands() -> Sequence[Tuple[str, str, Callable[[argparse.ArgumentParser], None], Main]]:
    """(name, help, add_arguments, main) of every command, in help order. Command modules keep
    their heavy imports inside their main functions: all of them are imported to build the
    parser."""
    from edgeagent import agent_command, discover_command, version_command
    from edgeagent.doctor import command as doctor_command
    from edgeagent.install import command as install_command
    from edgeagent.labels import command as labels_command
    from edgeagent.tegrastats import command as tegrastats_command

    return [
        ("version", "print version, Python version and platform",
         version_command.add_arguments, version_command.main),
        ("discover", "print the hardware inventory",
         discover_command.add_arguments, discover_command.main),
        ("run", "run the agent", agent_command.add_arguments, agent_command.main),
        ("install", "install and start the systemd service (sudo ./edgeagent.pyz install)",
         install_command.add_install_arguments, install_command.install_main),
        ("uninstall", "stop and remove the systemd service",
         install_command.add_uninstall_arguments, install_command.uninstall_main),
        ("doctor", "check this node and say how to fix what is wrong",
         doctor_command.add_arguments, doctor_command.main),
        ("tegrastats", "parse a tegrastats log (or stdin) into one JSON object per line",
         tegrastats_command.add_arguments, tegrastats_command.main),
        ("labels", "print (or remove) the labels of this node",
         labels_command.add_arguments, labels_command.main),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeagent",
                     description="Kubernetes GPU node agent for Jetson and devicetree boards.")
    _add_global(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, help_text, add_arguments, main_func in _commands():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_global(p, suppress=True)
        add_arguments(p)
        p.set_defaults(_main=main_func)
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
        parser = build_parser()
        args = parser.parse_args(argv)
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
