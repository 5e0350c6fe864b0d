"""`edgeagent version`: the agent's version, the Python running it and the platform."""

from __future__ import annotations

import argparse
import platform

from edgeagent import __version__
from edgeagent.invocation import Invocation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def main(inv: Invocation) -> int:
    print("edgeagent %s" % __version__)
    print("python %s (%s)" % (platform.python_version(), platform.python_implementation()))
    print("platform %s %s" % (platform.system().lower(), platform.machine()))
    return 0
