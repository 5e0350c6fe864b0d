"""InventoryFeed: discovery publishes, components wait for a change."""

import asyncio

from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.inventory import HostFacts, build_inventory

A = build_inventory(HostFacts(meminfo="MemTotal: 1000 kB\n"))
B = build_inventory(HostFacts(meminfo="MemTotal: 2000 kB\n"))


def test_publish_reports_only_changes():
    feed = InventoryFeed(A)
    assert feed.current is A
    assert feed.publish(build_inventory(HostFacts(meminfo="MemTotal: 1000 kB\n"))) is False
    assert feed.current is A                       # an equal value does not replace it
    assert feed.publish(B) is True and feed.current is B


def test_changed_from_returns_at_once_when_already_different():
    async def main():
        return await asyncio.wait_for(InventoryFeed(B).changed_from(A), 5)

    assert asyncio.run(main()) is B


def test_every_waiter_wakes_on_a_change():
    async def main():
        feed = InventoryFeed(A)
        waiters = [asyncio.ensure_future(feed.changed_from(A)) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        feed.publish(A)                            # no change: nobody wakes
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)
        feed.publish(B)
        results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
        # and a second change wakes a new waiter too
        again = asyncio.ensure_future(feed.changed_from(B))
        await asyncio.sleep(0.01)
        feed.publish(A)
        return results, await asyncio.wait_for(again, 5)

    results, again = asyncio.run(main())
    assert results == [B, B, B] and again is A


def test_a_cancelled_waiter_leaves_the_feed_usable():
    async def main():
        feed = InventoryFeed(A)
        first = asyncio.ensure_future(feed.changed_from(A))
        await asyncio.sleep(0.01)
        first.cancel()
        second = asyncio.ensure_future(feed.changed_from(A))
        await asyncio.sleep(0.01)
        feed.publish(B)
        return await asyncio.wait_for(second, 5)

    assert asyncio.run(main()) is B
