"""Import aiohttp without reading the system's CA bundle until a connection needs it (I/O-free).

aiohttp's ``connector`` module builds two SSL contexts when it is imported (aiohttp 3.10+,
``_SSL_CONTEXT_VERIFIED`` and ``_SSL_CONTEXT_UNVERIFIED``), and both load every certificate of
the system's CA bundle: ``create_default_context()`` through ``load_default_certs`` and the
unverified one through ``set_default_verify_paths`` (OpenSSL 3 reads the default file at once).
The agent never uses either: the kube client connects with its own context holding the
cluster's CA (edgeagent/kube/tls.py) and the metrics server speaks plain HTTP. Measured on
Debian 12 (144 CAs, Python 3.11, OpenSSL 3.0): 3.3 MiB resident for the two, 7 % of the whole
agent's RSS (bench/bench_footprint.py).

:func:`import_aiohttp` imports aiohttp with :class:`DeferredCertsContext` standing in for
``ssl.SSLContext`` while aiohttp's modules run, so those two contexts record the certificate
loading instead of doing it, and do it (in the same order, on the same context) the first time
they are used to wrap a connection or asked about their certificates. Behaviour is unchanged,
including for a caller that passes ``ssl=True`` to aiohttp; only the cost moves to first use
(the read is blocking, a few ms, once). It does nothing when aiohttp is already imported.
"""

from __future__ import annotations

import importlib
import ssl
import sys
import threading
from types import ModuleType
from typing import Any, Callable, List, Tuple

_IMPORT_LOCK = threading.Lock()


class DeferredCertsContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` that loads the default certificates it was asked for on first use
    (aiohttp's contexts become one during :func:`import_aiohttp`)."""

    _pending: List[Tuple[Callable[..., Any], tuple]]

    def _load_pending(self) -> None:
        for call, args in self.__dict__.pop("_pending", None) or ():
            call(self, *args)

    # Everything that uses or reveals the trust store loads what was deferred first.

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_pending()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_pending()
        return super().wrap_bio(*args, **kwargs)

    def get_ca_certs(self, binary_form: bool = False) -> Any:
        self._load_pending()
        return super().get_ca_certs(binary_form)

    def cert_store_stats(self) -> Any:
        self._load_pending()
        return super().cert_store_stats()

    def load_verify_locations(self, *args: Any, **kwargs: Any) -> None:
        self._load_pending()  # in the order the caller asked for
        super().load_verify_locations(*args, **kwargs)

    def load_default_certs(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> None:
        self._load_pending()
        super().load_default_certs(purpose)

    def set_default_verify_paths(self) -> None:
        self._load_pending()
        super().set_default_verify_paths()


def _deferring(real: Callable[..., Any]) -> Callable[..., Any]:
    def defer(self: ssl.SSLContext, *args: Any) -> None:
        self.__dict__.setdefault("_pending", []).append((real, args))
        # Same C layout, one more Python class: isinstance(ctx, ssl.SSLContext) still holds
        # (aiohttp checks it) and the context now loads the pending certificates on first use.
        self.__class__ = DeferredCertsContext
    return defer


def import_aiohttp() -> ModuleType:
    """``import aiohttp``, its import-time SSL contexts deferring their CA loading. Call it
    before the first ``import aiohttp`` anywhere in the process (later imports get the cached
    module)."""
    module = sys.modules.get("aiohttp")
    if module is not None:
        return module
    with _IMPORT_LOCK:
        if "aiohttp" in sys.modules:
            return sys.modules["aiohttp"]
        # Only the two loading methods are swapped, and only while aiohttp's modules run: the
        # class itself stays (aiohttp captures ssl.SSLContext at import for isinstance checks).
        # A context another thread makes meanwhile is deferred the same way: still correct.
        cls = ssl.SSLContext
        own_load = cls.__dict__["load_default_certs"]
        cls.load_default_certs = _deferring(own_load)  # type: ignore[assignment]
        cls.set_default_verify_paths = _deferring(  # type: ignore[assignment]
            ssl.SSLContext.set_default_verify_paths)
        try:
            return importlib.import_module("aiohttp")
        finally:
            cls.load_default_certs = own_load  # type: ignore[assignment]
            del cls.set_default_verify_paths  # inherited from _ssl._SSLContext again
