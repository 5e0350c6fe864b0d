"""The systemd notify protocol (sd_notify(3)): READY=1, STATUS=, WATCHDOG=1, STOPPING=1."""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Mapping, Optional

log = logging.getLogger(__name__)
_USEC = re.compile(r"[0-9]{1,20}\Z")


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``; a no-op when the variable is unset."""

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address
        self._sock: Optional[socket.socket] = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process that must ping; another process (a child) must not.
        mine = not pid or pid == str(os.getpid())
        # ASCII digits, at most 20 of them (a 64-bit usec): str.isdigit() also takes '²'.
        valid = bool(_USEC.match(usec))
        self.watchdog_usec = int(usec) if valid and int(usec) > 0 and mine else 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            log.debug("sd_notify %s failed: %s", lines, e)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *(["STATUS=" + status] if status else []))

    def status(self, text: str) -> None:
        self.notify("STATUS=" + text)

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
