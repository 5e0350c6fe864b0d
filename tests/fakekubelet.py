"""A kubelet for device-plugin tests and benchmarks, built on grpcio (never grpclib): serves
/v1beta1.Registration on a real kubelet.sock and, like the kubelet's devicemanager, connects
back to the plugin during Register (GetDevicePluginOptions, then a ListAndWatch stream).

Messages cross the wire as bytes made and read by the generated betterproto classes, through
grpcio's generic handlers; the transport (HTTP/2, unix sockets) is grpcio's own.
"""

import os
import threading
import time
from concurrent import futures
from typing import Callable, Dict, List, Optional, Tuple

import grpc

from edgeagent.deviceplugin.proto import v1beta1 as api

DeviceList = List[Tuple[str, str]]


def _ser(message) -> bytes:
    return bytes(message)


def _de(cls) -> Callable[[bytes], object]:
    return lambda data: cls().parse(data)


class PluginClient:
    """grpcio client of one plugin socket."""

    def __init__(self, socket_path: str) -> None:
        self.path = socket_path
        self.channel = grpc.insecure_channel("unix:" + socket_path)
        m = "/v1beta1.DevicePlugin/"
        self.options = self.channel.unary_unary(m + "GetDevicePluginOptions", _ser,
                                                _de(api.DevicePluginOptions))
        self.allocate_rpc = self.channel.unary_unary(m + "Allocate", _ser,
                                                     _de(api.AllocateResponse))
        self.preferred_rpc = self.channel.unary_unary(m + "GetPreferredAllocation", _ser,
                                                      _de(api.PreferredAllocationResponse))
        self.prestart_rpc = self.channel.unary_unary(m + "PreStartContainer", _ser,
                                                     _de(api.PreStartContainerResponse))
        self.list_and_watch = self.channel.unary_stream(m + "ListAndWatch", _ser,
                                                        _de(api.ListAndWatchResponse))

    def allocate(self, *containers: List[str], timeout: float = 5.0) -> api.AllocateResponse:
        req = api.AllocateRequest(container_requests=[
            api.ContainerAllocateRequest(devices_ids=list(ids)) for ids in containers])
        return self.allocate_rpc(req, timeout=timeout)

    def preferred(self, available: List[str], must: List[str], size: int,
                  timeout: float = 5.0) -> List[str]:
        req = api.PreferredAllocationRequest(container_requests=[
            api.ContainerPreferredAllocationRequest(available_device_i_ds=available,
                                                    must_include_device_i_ds=must,
                                                    allocation_size=size)])
        return list(self.preferred_rpc(req, timeout=timeout).container_responses[0].device_i_ds)

    def close(self) -> None:
        self.channel.close()


class Watch:
    """A ListAndWatch stream read on its own thread, every list kept."""

    def __init__(self, client: PluginClient) -> None:
        self.lists: List[DeviceList] = []
        self.error: Optional[BaseException] = None
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._call = client.list_and_watch(api.Empty())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self._call:
                with self._cond:
                    self.lists.append([(d.id, d.health) for d in resp.devices])
                    self._cond.notify_all()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def latest(self) -> Optional[DeviceList]:
        with self._cond:
            return self.lists[-1] if self.lists else None

    def wait_for(self, predicate: Callable[[DeviceList], bool], timeout: float = 10.0) -> DeviceList:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.lists and predicate(self.lists[-1]):
                    return self.lists[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended.is_set():
                    raise AssertionError("ListAndWatch never matched; lists: %r, error: %r"
                                         % (self.lists[-3:], self.error))
                self._cond.wait(remaining)

    def cancel(self) -> None:
        self._call.cancel()
        self._thread.join(2)


class FakeKubelet:
    """Registration server on ``<directory>/kubelet.sock``.

    ``reject`` makes Register fail (INVALID_ARGUMENT) while set; ``callback`` makes Register
    connect back to the plugin before it answers, as current kubelets do.
    """

    def __init__(self, directory: str, callback: bool = True) -> None:
        self.directory = directory
        self.socket = os.path.join(directory, "kubelet.sock")
        self.callback = callback
        self.reject: Optional[str] = None
        self.requests: List[api.RegisterRequest] = []
        self.attempts = 0
        self.callback_options: Dict[str, api.DevicePluginOptions] = {}
        self.watches: Dict[str, Watch] = {}
        self.clients: Dict[str, PluginClient] = {}
        self.register_times: List[float] = []
        self._cond = threading.Condition()
        self._server: Optional[grpc.Server] = None

    def _register(self, request: api.RegisterRequest, context) -> api.Empty:
        with self._cond:
            self.attempts += 1
        if self.reject:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.reject)
        if self.callback:
            path = os.path.join(self.directory, request.endpoint)
            client = PluginClient(path)
            # The real kubelet dials and asks for the options before Register returns.
            options = client.options(api.Empty(), timeout=5)
            watch = Watch(client)
            with self._cond:
                old = self.watches.pop(request.resource_name, None)
                old_client = self.clients.pop(request.resource_name, None)
                self.callback_options[request.resource_name] = options
                self.watches[request.resource_name] = watch
                self.clients[request.resource_name] = client
            if old is not None:
                old.cancel()
            if old_client is not None:
                old_client.close()
        with self._cond:
            self.requests.append(request)
            self.register_times.append(time.monotonic())
            self._cond.notify_all()
        return api.Empty()

    def start(self) -> "FakeKubelet":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler("v1beta1.Registration", {
            "Register": grpc.unary_unary_rpc_method_handler(
                self._register, request_deserializer=_de(api.RegisterRequest),
                response_serializer=_ser),
        })
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port("unix:" + self.socket)
        server.start()
        self._server = server
        return self

    def stop(self, remove_socket: bool = True) -> None:
        with self._cond:
            watches = list(self.watches.values())
            clients = list(self.clients.values())
            self.watches.clear()
            self.clients.clear()
        for w in watches:
            w.cancel()
        for c in clients:
            c.close()
        if self._server is not None:
            self._server.stop(0).wait(5)
            self._server = None
        if remove_socket and os.path.exists(self.socket):
            os.unlink(self.socket)

    def restart(self, wipe: bool = True) -> None:
        """Like a kubelet restart: stop, remove every socket in the directory (the devicemanager
        does so at start), serve a new kubelet.sock."""
        self.stop()
        if wipe:
            for name in os.listdir(self.directory):
                os.unlink(os.path.join(self.directory, name))
        self.start()

    def wait_registrations(self, count: int, timeout: float = 10.0) -> List[api.RegisterRequest]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("%d registrations after %.1fs, wanted %d: %r" % (
                        len(self.requests), timeout, count,
                        [r.resource_name for r in self.requests]))
                self._cond.wait(remaining)
            return list(self.requests)

    def watch(self, resource: str, timeout: float = 10.0) -> Watch:
        deadline = time.monotonic() + timeout
        with self._cond:
            while resource not in self.watches:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no ListAndWatch stream for %s" % resource)
                self._cond.wait(remaining)
            return self.watches[resource]
