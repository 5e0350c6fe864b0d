"""InventoryFeed: the latest inventory, and a way for components to wait until it changes."""

from __future__ import annotations

import asyncio
from typing import Optional

from edgeagent.discovery.inventory import Inventory


class InventoryFeed:
    """Discovery publishes; components read ``current`` or await ``changed_from``."""

    def __init__(self, initial: Inventory) -> None:
        self._current = initial
        self._changed: Optional[asyncio.Event] = None  # made inside the loop on first wait

    @property
    def current(self) -> Inventory:
        return self._current

    def publish(self, inventory: Inventory) -> bool:
        """Set a new inventory; True (and waiters woken) when it differs from the current one."""
        if inventory == self._current:
            return False
        self._current = inventory
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return True

    async def changed_from(self, seen: Inventory) -> Inventory:
        """Return the current inventory as soon as it is not ``seen``."""
        while self._current == seen:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
        return self._current
