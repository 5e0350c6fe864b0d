"""The CDI component: keeps the agent's CDI specs under <root>/var/run/cdi equal to what the host
has, rewriting a spec only when its bytes change.

It re-reads every ``interval`` seconds and whenever discovery publishes a changed inventory (a
driver reload renumbers a node's minor; a CSV package upgrade adds libraries). The specs are
deliberately left in place when the agent stops: a pod's container that restarts while the
agent is down (or restarting) must still find the devices it was admitted with. Only
``edgeagent uninstall`` removes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Dict, List, Optional

from edgeagent.cdi import spec as cdispec
from edgeagent.discovery.devnodes import NVDLA_GLOBS, NVDLA_SUPPORT_NODES, GPU_GLOBS
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.hostpaths import HostRoot
from edgeagent.supervisor import Component

log = logging.getLogger("edgeagent")


def read_cdi_facts(root: HostRoot) -> cdispec.CdiFacts:
    """Everything the specs are built from (blocking I/O, through the discovery layer): the L4T
    CSV entries, what their ``sym`` entries reach, and the real device nodes of the GPU, the
    NVDLA engines and the CSV ``dev`` lines."""
    from edgeagent.discovery.runtimefacts import (read_csv_entries, read_device_node,
                                                  resolve_host_link)

    entries, _ = read_csv_entries(root)
    links = []
    for kind, path in entries:
        if kind == "sym":
            target = resolve_host_link(root, path)
            if target is not None:
                links.append((path, target))
    candidates: List[str] = [p for k, p in entries if k == "dev"]
    for pattern in GPU_GLOBS + NVDLA_GLOBS:
        candidates.extend(root.glob(pattern))
    candidates.extend(cdispec.OPENRM_NODES + NVDLA_SUPPORT_NODES)
    nodes = []
    for path in dict.fromkeys(candidates):
        node = read_device_node(root, path)
        if node is not None:
            nodes.append(node)
    return cdispec.CdiFacts(tuple(entries), tuple(links), tuple(nodes))


def sync_specs(root: HostRoot) -> Dict[str, str]:
    """Build the specs from the host and bring the files in line (blocking). Host path ->
    "written", "removed" for each file that changed."""
    from edgeagent.cdi.writer import remove, write_if_changed

    changed: Dict[str, str] = {}
    for path, doc in cdispec.build_specs(read_cdi_facts(root)).items():
        if doc is None:
            if remove(root, [path]):
                changed[path] = "removed"
        elif write_if_changed(root, path, cdispec.render(doc)):
            changed[path] = "written"
    return changed


class CdiComponent(Component):
    """Writes <root>/var/run/cdi/edgeagent-{gpu,dla}.json and keeps them current."""

    name = "cdi"

    def __init__(self, root: HostRoot, feed: Optional[InventoryFeed],
                 interval: float = 30.0) -> None:
        self.root = root
        self.feed = feed
        self.interval = interval
        self._problem: Optional[str] = None

    def problem(self) -> Optional[str]:
        return self._problem

    async def run(self, started: Callable[[], None]) -> None:
        loop = asyncio.get_event_loop()
        first = True
        while True:
            seen = self.feed.current if self.feed is not None else None
            try:
                changed = await loop.run_in_executor(None, sync_specs, self.root)
            except OSError as e:
                # A read-only or full /run: say so on /healthz and try again next round.
                problem = "cannot write the CDI spec under %s: %s" % (
                    cdispec.SPEC_DIR, e.strerror or e)
                if problem != self._problem:
                    log.warning("%s", problem)
                self._problem = problem
            else:
                if self._problem is not None:
                    log.info("CDI specs are written again")
                self._problem = None
                for path, what in sorted(changed.items()):
                    log.info("CDI spec %s %s", path, what)
            if first:
                started()
                first = False
            await self._wait(seen)

    async def _wait(self, seen) -> None:
        if self.feed is None:
            await asyncio.sleep(self.interval)
            return
        waiter = asyncio.ensure_future(self.feed.changed_from(seen))
        try:
            await asyncio.wait([waiter], timeout=self.interval)
        finally:
            waiter.cancel()


def build(ctx) -> List[Component]:
    """The CDI component for app.py (``ctx``: an AgentContext)."""
    return [CdiComponent(ctx.root, ctx.inventory, min(30.0, ctx.options.discovery.rescan_seconds))]
