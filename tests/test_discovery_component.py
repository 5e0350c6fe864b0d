"""The discovery component: re-scans on its interval, publishes changes, and keeps the previous
inventory when a re-scan could not read something it read before."""

import asyncio
import os

from edgeagent.config import DiscoveryOptions, load_config
from edgeagent.discovery.component import DiscoveryComponent, describe_inventory
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.discovery.scan import discover
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import XAVIER, make_host


def test_the_interval_comes_from_the_discovery_options(tmp_path):
    config = load_config(None, env={"EDGEAGENT_DISCOVERY_RESCAN_SECONDS": "15"})
    host = HostRoot(str(tmp_path))
    component = DiscoveryComponent(host, InventoryFeed(discover(host)), config.options.discovery)
    assert component.interval == 15.0


def test_rescan_publishes_changes_and_keeps_the_inventory_on_new_read_errors(tmp_path):
    root = make_host(str(tmp_path), XAVIER, release="R35.4.1", dev=["/dev/nvhost-gpu"])
    host = HostRoot(root)
    feed = InventoryFeed(discover(host))
    component = DiscoveryComponent(host, feed, DiscoveryOptions(rescan_seconds=0.02))
    meminfo = os.path.join(root, "proc/meminfo")

    async def main():
        task = asyncio.ensure_future(component.run(lambda: None))
        try:
            first = feed.current
            os.unlink(meminfo)
            os.mkfifo(meminfo)              # readable by nobody: not "absent", not memory
            await asyncio.sleep(0.3)
            assert feed.current is first and feed.current.memory_bytes is not None
            assert "/proc/meminfo" in component.problem()
            os.unlink(meminfo)              # really gone: that is news
            changed = await asyncio.wait_for(feed.changed_from(first), 5)
            assert changed.memory_bytes is None and component.problem() is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_describe_inventory(tmp_path):
    root = make_host(str(tmp_path), XAVIER, release="R35.4.1",
                     dev=["/dev/nvhost-gpu", "/dev/nvhost-nvdla0", "/dev/nvhost-nvdla1"])
    text = describe_inventory(discover(HostRoot(root)))
    assert text.startswith("board 'NVIDIA Jetson AGX Xavier Developer Kit', soc tegra194, "
                           "L4T 35.4.1 (JetPack 5.1.2)")
    assert "nvdla x2" in text
