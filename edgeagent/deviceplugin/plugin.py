"""One resource's life with the kubelet: serve its socket, register, and start over when the
kubelet restarts.

Order matters (kubelet devicemanager): the socket must serve before Register is called, since
current kubelets connect back (GetDevicePluginOptions, ListAndWatch) while Register is still in
flight. A kubelet restart removes every socket in the directory and creates a new kubelet.sock;
we notice either (polling both at least once a second), re-create our socket and register again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Dict, Optional

from edgeagent.backoff import Backoff
from edgeagent.deviceplugin import sockets
from edgeagent.deviceplugin.sockets import socket_name
from edgeagent.deviceplugin.server import (DevicePluginService, PluginServer, ResourceState,
                                           stop_server)

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"


class ResourcePlugin:
    """Serves ``state``'s resource on ``<directory>/<socket_name>`` and keeps it registered.

    ``directory`` is a real path (already mapped through HostRoot). ``run`` returns only by
    cancellation; it removes its socket on the way out.
    """

    def __init__(self, state: ResourceState, directory: str, poll_interval: float = 0.5,
                 register_timeout: float = 10.0, backoff: Optional[Backoff] = None,
                 stop_timeout: float = 0.5) -> None:
        self.state = state
        self.directory = directory
        self.endpoint = socket_name(state.name)
        self.socket_path = os.path.join(directory, self.endpoint)
        self.kubelet_socket = os.path.join(directory, KUBELET_SOCKET)
        self.poll_interval = poll_interval
        self.register_timeout = register_timeout
        self.backoff = backoff or Backoff(base=0.2, cap=30.0)
        self.stop_timeout = stop_timeout
        self.ready = asyncio.Event()       # serving, or waiting for the kubelet's directory
        self._server: Optional[PluginServer] = None
        self._socket_id: Optional[sockets.FileIdentity] = None
        self._status: Optional[str] = None
        # Why this resource is not doing its job (registration failing, socket not serving, a
        # socket that cannot be checked); None while it is, or while it only waits for the
        # kubelet (normal at boot).
        self._status_problem: Optional[str] = None
        self._stat_problems: Dict[str, str] = {}     # path -> why it cannot be checked

    # --- logging once per state change ----------------------------------------------------

    def _set_status(self, key: str, message: str, level: int = logging.INFO) -> None:
        self._status_problem = message if level >= logging.WARNING else None
        if key != self._status:
            self._status = key
            log.log(level, "%s: %s", self.state.name, message)

    def _set_registered(self, value: bool) -> None:
        self.state.registered = value
        if value:
            self._status_problem = None

    @property
    def problem(self) -> Optional[str]:
        for message in self._stat_problems.values():
            return message
        return self._status_problem

    def _identity(self, path: str, unknown: Optional[sockets.FileIdentity]
                  ) -> Optional[sockets.FileIdentity]:
        """``path``'s identity; ``unknown`` when stat fails other than with ENOENT. Such a
        failure (ENOMEM, EIO) is not "gone": tearing down a serving socket over it, or
        registering again, is what would take the plugin away from the kubelet."""
        try:
            ident = sockets.identity(path)
        except OSError as e:
            message = "cannot check %s: %s" % (path, e.strerror or e)
            if self._stat_problems.get(path) != message:
                log.warning("%s: %s (not taken as gone)", self.state.name, message)
            self._stat_problems[path] = message
            return unknown
        self._stat_problems.pop(path, None)
        return ident

    # --- serving --------------------------------------------------------------------------

    async def _start_server(self) -> None:
        await self._stop_server()
        server = PluginServer([DevicePluginService(self.state)])
        sock = sockets.bind_unix(self.socket_path)
        try:
            await server.start(sock=sock)
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._socket_id = sockets.identity(self.socket_path)
        self.state.socket_path = self.socket_path

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        self.state.socket_path = None
        await stop_server(server, self.stop_timeout)
        sockets.remove_if_same(self.socket_path, self._socket_id)
        self._socket_id = None

    def _socket_lost(self) -> bool:
        now = self._identity(self.socket_path, self._socket_id)
        return not sockets.same_file(now, self._socket_id)

    # --- registering ----------------------------------------------------------------------

    async def register_once(self) -> Optional[str]:
        """Call Registration.Register on kubelet.sock; None on success, else why not."""
        from grpclib import GRPCError
        from grpclib.client import Channel
        from grpclib.exceptions import StreamTerminatedError

        from edgeagent.deviceplugin.proto import v1beta1 as api

        request = api.RegisterRequest(
            version=API_VERSION, endpoint=self.endpoint, resource_name=self.state.name,
            options=api.DevicePluginOptions(pre_start_required=False,
                                            get_preferred_allocation_available=True))
        try:
            with sockets.reachable(self.kubelet_socket) as path:
                # No keepalive pings (grpclib's client default): grpc-go servers (the kubelet)
                # answer clients that ping more often than their enforcement policy allows
                # with GOAWAY too_many_pings.
                channel = Channel(path=path)
                try:
                    await api.RegistrationStub(channel).register(
                        request, timeout=self.register_timeout)
                finally:
                    channel.close()
        except GRPCError as e:
            return "the kubelet refused: %s (%s)" % (e.message, e.status.name)
        except asyncio.TimeoutError:
            return "no answer within %.0fs" % self.register_timeout
        except (OSError, StreamTerminatedError, ConnectionError) as e:
            return "cannot reach %s: %s" % (self.kubelet_socket,
                                            getattr(e, "strerror", None) or e)
        return None

    # --- the loop -------------------------------------------------------------------------

    async def _sleep_watching(self, delay: float,
                              kubelet_id: Optional[sockets.FileIdentity]) -> str:
        """Sleep up to ``delay``, waking early when our socket is lost ("socket") or
        kubelet.sock changes ("kubelet"); "timeout" otherwise."""
        loop = asyncio.get_event_loop()
        end = loop.time() + delay
        while True:
            if self._socket_lost():
                return "socket"
            if self._identity(self.kubelet_socket, kubelet_id) != kubelet_id:
                return "kubelet"
            remaining = end - loop.time()
            if remaining <= 0:
                return "timeout"
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def _wait_for_directory(self) -> None:
        while not os.path.isdir(self.directory):
            self._set_status("no-dir", "waiting for the kubelet's device-plugin directory %s "
                             "(is the kubelet installed and running?)" % self.directory)
            self.ready.set()
            await asyncio.sleep(self.poll_interval)

    async def _serve_and_register(self) -> None:
        """Serve, then keep registered until our socket is lost (returns: start over)."""
        await self._start_server()
        self.ready.set()
        registered_with = None         # kubelet.sock identity we registered with
        failed_with = None             # kubelet.sock identity the last failure was against
        while True:
            kubelet_id = self._identity(self.kubelet_socket, registered_with)
            if kubelet_id is None:
                self._set_registered(False)
                registered_with = None
                self._set_status("no-kubelet", "serving on %s; waiting for the kubelet to create "
                                 "%s to register there" % (self.socket_path, self.kubelet_socket))
                if await self._sleep_watching(3600, None) == "socket":
                    return
                continue
            if registered_with is not None:
                if kubelet_id == registered_with:
                    if await self._sleep_watching(3600, kubelet_id) == "socket":
                        self._set_registered(False)
                        self._set_status("lost", "our socket %s disappeared (kubelet restart?); "
                                         "re-creating it" % self.socket_path)
                        return
                    continue
                self._set_registered(False)
                registered_with = None
                self._set_status("kubelet-restart", "kubelet.sock was re-created (kubelet "
                                 "restart); registering again")
                if self._socket_lost():
                    return
            if kubelet_id != failed_with:
                self.backoff.reset()
            error = await self.register_once()
            if self._socket_lost():
                # the kubelet wiped the directory while we registered: start over
                return
            if error is None:
                registered_with = kubelet_id
                failed_with = None
                self.backoff.reset()
                self._set_registered(True)
                self.state.registrations += 1
                self._set_status("registered", "registered with the kubelet (endpoint %s)"
                                 % self.endpoint)
                continue
            failed_with = kubelet_id
            delay = self.backoff.next()
            self._set_status("failed:" + error, "registration failed: %s; retrying with "
                             "backoff (up to %.0fs) until it works" % (error, self.backoff.cap),
                             logging.WARNING)
            outcome = await self._sleep_watching(delay, kubelet_id)
            if outcome == "socket":
                return

    async def run(self) -> None:
        try:
            while True:
                await self._wait_for_directory()
                try:
                    await self._serve_and_register()
                except OSError as e:
                    # the directory vanished under us, or bind failed: report once, retry soon.
                    # Ready anyway: one resource that cannot serve must not hold the whole
                    # agent's READY=1 back (the log, the metric and doctor tell the story).
                    self.ready.set()
                    self._set_registered(False)
                    self._set_status("oserror:%s" % e, "cannot serve on %s: %s; retrying"
                                     % (self.socket_path, e.strerror or e), logging.WARNING)
                    await self._stop_server()
                    await asyncio.sleep(self.backoff.next())
        finally:
            self._set_registered(False)
            await asyncio.shield(self._stop_server_bounded())

    async def _stop_server_bounded(self) -> None:
        try:
            await asyncio.wait_for(self._stop_server(), self.stop_timeout + 0.5)
        except asyncio.TimeoutError:
            sockets.remove_if_same(self.socket_path, self._socket_id)
