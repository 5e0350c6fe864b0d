"""I/O: the listening side of the metrics HTTP server, a small asyncio layer in front of aiohttp.

aiohttp's server bounds neither how many connections it holds nor how long a client may take to
send its request headers (it has only a keep-alive timeout, 3630 s by default in 3.14, that
starts after a response). 1,100 clients sending one header line every few seconds, plus 50
that sent nothing, held every file descriptor under systemd's default limit of 1024: every
scrape failed, and each failed accept() logged a traceback (145 MB in 70 s). So the agent
accepts connections itself and hands each one to aiohttp's documented low-level server (a
protocol factory, ``web.Server``), wrapped in a protocol that watches its progress:

- at most ``max_connections`` at a time, well under the open-file limit. When full, a new
  connection takes the place of another: first the one that has been sending its headers the
  longest (or has sent nothing for a second), then the one idle longest after a response, and
  only then a connection that is new and has not sent anything yet (a scraper whose request is
  still on its way: under a storm of reconnecting slow clients, evicting the oldest pending
  connection alone pushed out scrapers whose request came 0.1 s after their connection), and
  last one whose request already waits unread in the kernel (FIONREAD: the loop, busy with the
  storm, has not read it yet). A connection whose request is being answered is never taken; if
  all are, the new one is closed;
- request headers must be complete within ``header_timeout`` seconds (counted from the
  connection, or from the first byte of the next request on a kept-alive one), else the
  connection is aborted; a connection idle for ``idle_timeout`` after a request is closed;
- accept() errors (EMFILE...) and refusals are logged as one warning line each, never a
  traceback; the process-wide ``logs.RepeatFilter`` turns a flood of them into a line a minute
  with a count (asyncio's own accept loop logged a traceback per failure).

Requests here are GETs without a body: the end of the headers (a blank line) ends a request.
"""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import logging
import socket
import termios
import time
from typing import Callable, Dict, List, Optional, Tuple

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
HEADER_TIMEOUT = 5.0         # seconds for a client to finish its request headers
IDLE_TIMEOUT = 30.0          # a kept-alive connection with no new request is closed after this
BUSY_GRACE = 1.0             # a connection whose request ended this recently is never evicted
SILENT_GRACE = 1.0           # a new connection that sent nothing yet is evicted last this long
SWEEP_INTERVAL = 0.5
ACCEPT_RETRY_SECONDS = 0.1   # after a failed accept() (out of file descriptors, say)
BACKLOG = 128


def connection_cap(soft_nofile_limit: Optional[int] = None) -> int:
    """MAX_CONNECTIONS, or a quarter of the open-file limit when that is lower: the rest is for
    the kubelet socket, the API client, device nodes and tegrastats."""
    if soft_nofile_limit is None:
        try:
            import resource

            soft_nofile_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            soft_nofile_limit = 1024
    if soft_nofile_limit < 0:          # RLIM_INFINITY
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft_nofile_limit // 4))


def _end_of_headers(data: bytes) -> int:
    """The offset just past the last blank line (CRLF CRLF, or bare LF LF) in ``data``, or -1."""
    crlf, lf = data.rfind(b"\n\r\n"), data.rfind(b"\n\n")
    return max(crlf + 3 if crlf >= 0 else -1, lf + 2 if lf >= 0 else -1)


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the progress of its requests watched."""

    def __init__(self, listener: "GuardedListener", inner: asyncio.Protocol) -> None:
        self.listener = listener
        self.inner = inner
        self.transport: Optional[asyncio.Transport] = None
        now = listener.clock()
        self.in_headers = True       # a connection is made to send a request: the clock runs
        self.sent = False            # has it sent any byte of the current request?
        self.phase_start = now       # when the current request (or idleness) began
        self.tail = b""              # the last bytes seen, to find a blank line across reads

    # --- asyncio.Protocol, forwarded ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener._connections[self] = None
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        now = self.listener.clock()
        if not self.in_headers:
            self.in_headers, self.phase_start = True, now
        self.sent = True
        seen = self.tail + data
        end = _end_of_headers(seen)
        if end >= 0:
            # headers done; bytes after them are the next (pipelined) request, already started
            self.in_headers, self.phase_start = end < len(seen), now
        self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.listener._connections.pop(self, None)
        self.inner.connection_lost(exc)

    # --- the guard ------------------------------------------------------------------------------

    def evictable_since(self, now: float) -> Optional[Tuple[int, float]]:
        """(rank, since) when this connection may make room for a new one, else None: rank 0
        for one sending its headers (or silent past SILENT_GRACE), 1 for one idle after a
        response, 2 for a new one that has not sent anything yet, 3 for a new one whose request
        is waiting unread in the kernel."""
        if self.in_headers:
            if self.sent or now - self.phase_start >= SILENT_GRACE:
                return 0, self.phase_start
            # Silent to us, but its request may already be in the kernel's buffer, not yet read
            # because the loop is busy accepting a storm: such a one (a scraper) goes last.
            return (3 if self._unread() else 2), self.phase_start
        if now - self.phase_start >= BUSY_GRACE:
            return 1, self.phase_start
        return None

    def _unread(self) -> int:
        """Bytes the kernel holds for this connection that nobody has read yet (FIONREAD)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return 0
        count = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
        except (OSError, ValueError):  # closed meanwhile: nothing to wait for
            return 0
        return count[0]

    def drop(self) -> None:
        self.listener._connections.pop(self, None)
        if self.transport is not None:
            self.transport.abort()


class GuardedListener:
    """Listens on ``host:port`` and serves each accepted connection with ``protocol_factory``
    (aiohttp's ``web.Server``), bounded as the module says. ``start`` binds (OSError on
    failure); ``close`` stops accepting and aborts what is left."""

    def __init__(self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int,
                 max_connections: Optional[int] = None, header_timeout: float = HEADER_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.protocol_factory = protocol_factory
        self.host = host
        self.port = port
        self.max_connections = max_connections or connection_cap()
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.sockets: List[socket.socket] = []
        self._connections: Dict[_Watched, None] = {}     # insertion-ordered set
        self._tasks: List["asyncio.Future[None]"] = []
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def bound_port(self) -> Optional[int]:
        for sock in self.sockets:
            return int(sock.getsockname()[1])
        return None

    async def start(self) -> None:
        loop = asyncio.get_event_loop()
        infos = await loop.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        seen = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    # as asyncio's create_server: "::" and "0.0.0.0" are separate sockets
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        self._tasks = [asyncio.ensure_future(self._accept(sock)) for sock in self.sockets]
        self._tasks.append(asyncio.ensure_future(self._sweep()))

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_event_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as e:
                name = errno.errorcode.get(e.errno or 0, "error")
                log.warning("metrics: cannot accept connections on %s:%s: %s (%s)", self.host,
                            self.port, e.strerror or e, name)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            if not self._make_room():
                self.refused += 1
                conn.close()
                log.warning("metrics: connection refused: all %d connections are busy",
                            self.max_connections)
                continue
            try:
                await loop.connect_accepted_socket(
                    lambda: _Watched(self, self.protocol_factory()), conn)
            except Exception as e:  # one bad connection must not end the accept loop
                conn.close()
                log.warning("metrics: cannot serve a connection: %s", type(e).__name__)

    def _make_room(self) -> bool:
        """True when a new connection may be served, evicting one if the cap is reached."""
        if len(self._connections) < self.max_connections:
            return True
        now = self.clock()
        victim, best = None, None
        for conn in self._connections:
            rank = conn.evictable_since(now)
            if rank is not None and (best is None or rank < best):
                victim, best = conn, rank
        if victim is None:
            return False
        self.evicted += 1
        victim.drop()
        log.warning("metrics: %d connections open (the cap); closing the slowest to make room",
                    self.max_connections)
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = self.clock()
            for conn in list(self._connections):
                limit = self.header_timeout if conn.in_headers else self.idle_timeout
                if now - conn.phase_start > limit:
                    self.timed_out += conn.in_headers
                    conn.drop()

    def _close_sockets(self) -> None:
        loop = asyncio.get_event_loop()
        for sock in self.sockets:
            # Python 3.8's sock_accept leaves a cancelled accept's reader in the selector: the
            # next socket given this descriptor number would be taken as watched and never be.
            loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []

    def stop_accepting(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self._close_sockets()

    async def close(self) -> None:
        """Stop accepting, abort every connection left, and let their callbacks run."""
        self.stop_accepting()
        for conn in list(self._connections):
            conn.drop()
        await asyncio.sleep(0)
