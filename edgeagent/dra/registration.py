"""I/O: how the kubelet finds the DRA plugin, and the life of its two sockets.

The kubelet's plugin watcher (pkg/kubelet/pluginmanager/pluginwatcher) walks
``plugins_registry`` when it starts and then follows it with fsnotify: every socket created
there is dialled, asked GetInfo, validated (type, name, versions) and told the outcome with
NotifyRegistrationStatus; a socket removed there unregisters the plugin. So the agent never
calls the kubelet: it keeps its registration socket served. A kubelet restart finds it again
in its first walk; a socket someone deleted is re-created (polled), and its create event makes
the kubelet register it again. The DRA socket is served before the registration socket, since
the kubelet dials GetInfo's endpoint right after GetInfo.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable, Optional

from edgeagent.backoff import Backoff
from edgeagent.deviceplugin import sockets
from edgeagent.deviceplugin.server import PluginServer, stop_server
from edgeagent.dra.names import DRIVER, PLUGIN_TYPE, SUPPORTED_VERSIONS
from edgeagent.dra.proto import pluginregistration as reg

log = logging.getLogger(__name__)


class RegistrationService(reg.RegistrationBase):
    """pluginregistration.Registration: what the kubelet's plugin watcher asks."""

    def __init__(self, endpoint: str,
                 on_registered: Callable[[], None] = lambda: None) -> None:
        self.endpoint = endpoint       # the DRA socket's host path: the kubelet dials it as is
        # A kubelet that (re)starts wipes the node's ResourceSlices: the publisher looks again.
        self.on_registered = on_registered
        self.registered = False
        self.registrations = 0
        self.refusal: Optional[str] = None

    async def get_info(self, info_request: reg.InfoRequest) -> reg.PluginInfo:
        return reg.PluginInfo(type=PLUGIN_TYPE, name=DRIVER, endpoint=self.endpoint,
                              supported_versions=list(SUPPORTED_VERSIONS))

    async def notify_registration_status(
            self, registration_status: reg.RegistrationStatus) -> reg.RegistrationStatusResponse:
        if registration_status.plugin_registered:
            self.registrations += 1
            if not self.registered or self.refusal is not None:
                log.info("registered with the kubelet as DRA driver %s (endpoint %s)", DRIVER,
                         self.endpoint)
            self.registered = True
            self.refusal = None
            try:
                self.on_registered()
            except Exception:        # never the kubelet's answer's problem
                log.exception("after the registration")
        else:
            self.registered = False
            refusal = registration_status.error or "no reason given"
            if refusal != self.refusal:
                log.warning("the kubelet refused the DRA driver %s: %s", DRIVER, refusal)
            self.refusal = refusal
        return reg.RegistrationStatusResponse()


class ServedSocket:
    """Serves ``make_server()`` on the unix socket ``path`` (a real path, under --root) until
    cancelled: creates the folder, replaces a stale socket (never one somebody serves), and
    re-creates the socket when it is deleted or replaced."""

    def __init__(self, what: str, path: str, make_server: Callable[[], PluginServer],
                 poll_interval: float = 0.5, stop_timeout: float = 0.5,
                 backoff: Optional[Backoff] = None) -> None:
        self.what = what
        self.path = path
        self.make_server = make_server
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout
        self.backoff = backoff or Backoff(base=0.2, cap=30.0)
        self.ready = asyncio.Event()        # serving, or failed once (the problem says why)
        self.serving = asyncio.Event()
        self.problem: Optional[str] = None
        self.creations = 0
        self._server: Optional[PluginServer] = None
        self._id: Optional[sockets.FileIdentity] = None

    async def _start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
        server = self.make_server()
        sock = sockets.bind_unix(self.path)
        try:
            await server.start(sock=sock)
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._id = sockets.identity(self.path)
        self.creations += 1

    async def _stop(self) -> None:
        self.serving.clear()
        server, self._server = self._server, None
        await stop_server(server, self.stop_timeout)
        sockets.remove_if_same(self.path, self._id)
        self._id = None

    def _lost(self) -> bool:
        try:
            now = sockets.identity(self.path)
        except OSError:     # ENOMEM, EIO: says nothing about the socket being gone
            return False
        return not sockets.same_file(now, self._id)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._start()
                except OSError as e:
                    message = "cannot serve the %s on %s: %s" % (self.what, self.path,
                                                                 e.strerror or e)
                    if message != self.problem:
                        log.warning("%s; retrying", message)
                    self.problem = message
                    self.ready.set()
                    await self._stop()
                    await asyncio.sleep(self.backoff.next())
                    continue
                if self.problem is not None or self.creations == 1:
                    log.info("serving the %s on %s", self.what, self.path)
                self.problem = None
                self.backoff.reset()
                self.serving.set()
                self.ready.set()
                while not self._lost():
                    await asyncio.sleep(self.poll_interval)
                log.warning("the %s %s was deleted or replaced; serving it again", self.what,
                            self.path)
                await self._stop()
        finally:
            await asyncio.shield(self._stop_bounded())

    async def _stop_bounded(self) -> None:
        try:
            await asyncio.wait_for(self._stop(), self.stop_timeout + 0.5)
        except asyncio.TimeoutError:
            sockets.remove_if_same(self.path, self._id)
