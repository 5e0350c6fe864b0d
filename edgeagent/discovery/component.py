"""The discovery component: re-scans the host every ``discovery.rescan_seconds`` and publishes a
changed inventory on the InventoryFeed (labels and the device plugin follow it)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

from edgeagent.config import DiscoveryOptions
from edgeagent.discovery.devicetree import DeviceTreeError
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.inventory import Inventory
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from edgeagent.supervisor import Component

log = logging.getLogger("edgeagent")


class DiscoveryComponent(Component):
    """Re-scans the host now and then and publishes a changed inventory."""

    name = "discovery"

    def __init__(self, root: HostRoot, feed: InventoryFeed, options: DiscoveryOptions) -> None:
        self.root = root
        self.feed = feed
        self.interval = options.rescan_seconds
        self._problem: Optional[str] = None

    def problem(self) -> Optional[str]:
        return self._problem

    async def run(self, started: Callable[[], None]) -> None:
        loop = asyncio.get_event_loop()
        started()
        while True:
            await asyncio.sleep(self.interval)
            try:
                # Reading the tree is blocking file I/O (tens of ms): keep it off the loop.
                inventory = await loop.run_in_executor(None, discover, self.root)
            except DeviceTreeError as e:
                self._note("re-scan failed, keeping the previous inventory: %s" % e)
                continue
            # A read that failed for another reason than "absent" (EMFILE under a flood of
            # connections, EACCES) is no news about the hardware: keep what we knew.
            new = [p for p in inventory.problems if p not in self.feed.current.problems]
            if new:
                self._note("re-scan could not read %s; keeping the previous inventory"
                           % "; ".join(new))
                continue
            if self._problem is not None:
                log.info("re-scan works again")
                self._problem = None
            if self.feed.publish(inventory):
                log.info("inventory changed: %s", describe_inventory(inventory))

    def _note(self, problem: str) -> None:
        if problem != self._problem:     # once per change, not every minute
            log.warning("%s", problem)
        self._problem = problem


def describe_inventory(inv: Inventory) -> str:
    gpu = "no GPU"
    if inv.gpu is not None:
        gpu = "GPU %s %s (%s)" % (inv.gpu.path, ",".join(inv.gpu.compatible), inv.gpu.status)
    accel = ", ".join(sorted({"%s x%d" % (a.kind, inv.accelerator_count(a.kind))
                              for a in inv.accelerators})) or "none"
    return "board %r, soc %s, L4T %s (JetPack %s), %s, accelerators: %s" % (
        inv.board_model, inv.soc, inv.l4t, inv.jetpack, gpu, accel)
