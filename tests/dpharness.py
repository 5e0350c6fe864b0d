"""Run the device-plugin component on its own thread and event loop against a fake host root
(tests/peers/hosts.py builds it), so tests can drive it with blocking grpcio calls."""

import os
from typing import Any, Dict, Optional

from edgeagent.config import load_config
from edgeagent.deviceplugin.component import DevicePluginComponent
from edgeagent.deviceplugin.plugin import socket_name
from edgeagent.discovery.scan import discover
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import PLUGIN_DIR
from tests.tools import ComponentThread


class AgentThread(ComponentThread):
    """The component under test. ``overrides`` are config keys (dotted)."""

    def __init__(self, root: str, overrides: Optional[Dict[str, Any]] = None,
                 inventory=None, poll_interval: float = 0.05) -> None:
        from prometheus_client import CollectorRegistry

        super().__init__()
        self.root_dir = root
        self.root = HostRoot(root)
        values = {"device_plugin.health_interval_seconds": 0.1}
        values.update(overrides or {})
        self.config = load_config(None, env={}).replace(**values)
        self.inventory = inventory if inventory is not None else discover(self.root)
        self.feed = InventoryFeed(self.inventory)
        self.registry = CollectorRegistry(auto_describe=True)
        self.component = DevicePluginComponent(self.root, self.config.options.device_plugin,
                                               self.feed, self.registry,
                                               poll_interval=poll_interval)
        self.directory = os.path.join(root, PLUGIN_DIR.lstrip("/"))

    def socket(self, resource: str) -> str:
        return os.path.join(self.directory, socket_name(resource))

    def publish(self, inventory) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.feed.publish, inventory)
