"""Import aiohttp without what the agent never uses (I/O-free but for the import itself).

1. The CA bundle. aiohttp's ``connector`` module builds two SSL contexts when it is imported
   (aiohttp 3.10+, ``_SSL_CONTEXT_VERIFIED`` and ``_SSL_CONTEXT_UNVERIFIED``), and both load
   every certificate of the system's CA bundle: ``create_default_context()`` through
   ``load_default_certs`` and the unverified one through ``set_default_verify_paths`` (OpenSSL
   3 reads the default file at once). The agent never uses either: the kube client connects
   with its own context holding the cluster's CA (edgeagent/kube/tls.py) and the metrics server
   speaks plain HTTP. While aiohttp's modules run, those two loading methods only record the
   call and make the context a :class:`DeferredCertsContext`, which does the loading (in the
   same order, on the same context) the first time it wraps a connection or is asked about its
   certificates. Behaviour is unchanged, also for a caller that passes ``ssl=True`` to aiohttp;
   only the cost moves to first use (a blocking read of a few ms, once).
2. libstdc++. frozenlist's compiled extension is C++ (frozenlist 1.4+), so importing it maps and
   initialises the C++ runtime; aiohttp uses FrozenList only for its signal lists (aiosignal),
   built at start-up and never on a request's path. ``FROZENLIST_NO_EXTENSIONS`` is set while
   aiohttp is imported, so frozenlist picks its pure-Python FrozenList (same class, same tests
   upstream), then the environment is restored (tegrastats and other children never see it).

Measured on Debian 12 x86-64 (144 CAs, Python 3.11, OpenSSL 3.0), bench/bench_footprint.py:
the two contexts held 1.9 to 3.3 MiB resident (less when our own TLS context already made
OpenSSL load its decoders) and libstdc++ 1.1 MiB, of a 47 MiB agent.
:func:`import_aiohttp` does nothing when aiohttp is already imported.
"""

from __future__ import annotations

import importlib
import os
import ssl
import sys
import threading
from types import ModuleType
from typing import Any, Callable, List, Tuple

_IMPORT_LOCK = threading.Lock()
FROZENLIST_NO_EXTENSIONS = "FROZENLIST_NO_EXTENSIONS"  # read by frozenlist/__init__.py


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
    """``import aiohttp`` without the CA bundle and libstdc++ (see above). Call it before the
    first ``import aiohttp`` anywhere in the process (later imports get the cached module)."""
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
        no_ext = os.environ.get(FROZENLIST_NO_EXTENSIONS)
        os.environ[FROZENLIST_NO_EXTENSIONS] = "1"
        try:
            return importlib.import_module("aiohttp")
        finally:
            cls.load_default_certs = own_load  # type: ignore[assignment]
            del cls.set_default_verify_paths  # inherited from _ssl._SSLContext again
            if no_ext is None:
                del os.environ[FROZENLIST_NO_EXTENSIONS]
            else:
                os.environ[FROZENLIST_NO_EXTENSIONS] = no_ext
