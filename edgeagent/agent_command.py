"""`edgeagent run [--demo]`: the agent itself, as systemd starts it.

Order matters: stop signals are recorded from the first moment (a SIGTERM during start-up ends
the run cleanly instead of killing it mid-way), then the open-file limit is raised and the
single-instance lock taken, then discovery, then the components until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
from typing import Optional

from edgeagent.invocation import Invocation, add_kube_arguments, discover_inventory

log = logging.getLogger("edgeagent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="run on the built-in demo host (a Jetson AGX Xavier) on any machine")
    parser.add_argument("--disable", metavar="COMPONENT[,COMPONENT]",
                        help="components not to run: device-plugin, dra, labels, metrics")
    parser.add_argument("--dry-run", action="store_true", default=None,
                        help="log the node patch instead of sending it")
    parser.add_argument("--metrics-address", metavar="HOST:PORT", help="where to serve /metrics")
    parser.add_argument("--tegrastats", metavar="PATH", help="tegrastats binary (host path)")
    parser.add_argument("--gpu-mode", choices=("device-plugin", "dra"),
                        help="serve the GPU and NVDLA engines through the device plugin "
                             "(default) or Dynamic Resource Allocation, never both")
    add_kube_arguments(parser)


class EarlyStop:
    """Records SIGTERM/SIGINT until the event loop's own handlers take over (run_agent asks
    ``requested()`` right after installing them, so no signal falls between the two)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.installed = False

    def install(self) -> "EarlyStop":
        if self.installed:
            return self
        self.installed = True
        for sig in self.SIGNALS:
            try:
                signal.signal(sig, self._record)
            except ValueError:  # not the main thread: an embedding program owns signals
                pass
        return self

    def _record(self, signum: int, frame: object) -> None:
        self.received = signum

    def requested(self) -> bool:
        return self.received is not None


# One per process: the CLI installs it as soon as it knows the command is `run`, before loading
# the config; main() below installs it if nobody did (an embedding program, a test).
EARLY_STOP = EarlyStop()


def main(inv: Invocation) -> int:
    from edgeagent.app import materialize_demo_host, run_agent
    from edgeagent.discovery.component import describe_inventory
    from edgeagent.hostpaths import HostRoot
    from edgeagent.looprunner import run_bounded
    from edgeagent.rlimits import raise_nofile_limit
    from edgeagent.runlock import LOCK_PATH, RunLock

    early = EARLY_STOP.install()
    soft, problem = raise_nofile_limit()
    if problem:
        log.warning("open-file limit stays at %d: %s", soft, problem)
    demo_dir = None
    if inv.args.demo:
        if inv.root_given:
            log.warning("--demo replaces --root %s with the built-in demo host", inv.root.root)
        demo_dir = materialize_demo_host()
        inv.root = HostRoot(demo_dir)
        log.info("demo host at %s (a Jetson AGX Xavier with JetPack 5)", demo_dir)
    lock = RunLock(inv.root.path(LOCK_PATH))
    try:
        if not lock.acquire():
            # Without the lock a second agent could take this one's plugin socket; but a run
            # that cannot write /run cannot write the kubelet's directory either. A --root
            # without run/ is a fake or image tree: no host, nothing to say.
            (log.debug if lock.no_run_dir else log.warning)(
                "running without the single-instance lock: %s", lock.problem)
        if early.requested():
            log.info("stopped before start-up finished")
            return 0
        inventory = discover_inventory(inv.root)
        log.info("inventory: %s", describe_inventory(inventory))
        return run_bounded(run_agent(inv.root, inv.config, inventory, demo=inv.args.demo,
                                     early_stop=early.requested))
    finally:
        from edgeagent.logs import flush_repeated

        flush_repeated()  # the count of a flood that stopped, before the process goes
        lock.release()
        if demo_dir:
            shutil.rmtree(demo_dir, ignore_errors=True)
