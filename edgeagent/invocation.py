"""What every command receives (the parsed flags, the host root, the loaded config) and the few
helpers commands share. Feature command modules import this, never ``edgeagent.cli``; it
imports no feature at module level and no feature package that imports it back (the import
graph test holds it to that)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from edgeagent.errors import OperatorError

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import Config
    from edgeagent.discovery.inventory import Inventory
    from edgeagent.hostpaths import HostRoot


class UsageError(OperatorError):
    pass


@dataclass
class Invocation:
    """What a command gets: parsed args, the host root and the loaded config."""

    args: argparse.Namespace
    root: "HostRoot"
    config: "Config"
    root_given: bool


def add_kube_arguments(parser: argparse.ArgumentParser) -> None:
    """--kubeconfig and --node-name, shared by run, labels, doctor and uninstall."""
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig to use")
    parser.add_argument("--node-name", metavar="NAME", help="this node's name in the cluster")


def discover_inventory(root: "HostRoot", fdt: Optional[str] = None) -> "Inventory":
    """Scan the host (or read ``fdt``, a raw DTB); a broken devicetree is an operator error."""
    from edgeagent.discovery.devicetree import DeviceTreeError
    from edgeagent.discovery.scan import discover

    if fdt is not None and not os.path.isfile(fdt):
        raise UsageError("--fdt %s: no such file" % fdt)
    try:
        return discover(root, fdt)
    except DeviceTreeError as e:
        raise OperatorError("devicetree: %s" % e) from None
