"""Run the device-plugin component on its own thread and event loop against a fake host root
(tests/peers/hosts.py builds it), so tests can drive it with blocking grpcio calls."""

import asyncio
import os
import threading
from typing import Any, Dict, Optional

from edgeagent.config import load_config
from edgeagent.deviceplugin.component import DevicePluginComponent
from edgeagent.deviceplugin.plugin import socket_name
from edgeagent.discovery.scan import discover
from edgeagent.discovery.feed import InventoryFeed
from edgeagent.hostpaths import HostRoot
from tests.peers.hosts import PLUGIN_DIR

class AgentThread:
    """The component under test. ``overrides`` are config keys (dotted)."""

    def __init__(self, root: str, overrides: Optional[Dict[str, Any]] = None,
                 inventory=None, poll_interval: float = 0.05) -> None:
        from prometheus_client import CollectorRegistry

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
        self.started = threading.Event()
        self.error: Optional[BaseException] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.task: Optional[asyncio.Task] = None
        self.thread: Optional[threading.Thread] = None

    def socket(self, resource: str) -> str:
        return os.path.join(self.directory, socket_name(resource))

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.component.run(self.started.set))
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # surfaced by start()/stop()
            self.error = e
            self.started.set()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self, timeout: float = 10.0) -> "AgentThread":
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        if not self.started.wait(timeout):
            raise AssertionError("the component never called started()")
        if self.error is not None:
            raise self.error
        return self

    def publish(self, inventory) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.feed.publish, inventory)

    def stop(self, timeout: float = 5.0) -> None:
        if self.thread is None or not self.thread.is_alive():
            return
        assert self.loop is not None and self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("the component did not stop within %.1fs" % timeout)
        if self.error is not None:
            raise self.error

    def metrics(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
