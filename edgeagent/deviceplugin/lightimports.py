"""Keep betterproto's import from loading what the device plugin never uses.

betterproto 2.0.0b7's package ``__init__`` imports python-dateutil's parser (used only to read
``Timestamp`` fields in ``Message.from_dict``/``from_json``) and ``betterproto._version`` reads the
version through ``importlib.metadata`` (which brings ``email``, ``csv``, ``zipfile`` path code).
The device-plugin API has no ``Timestamp`` field and the agent never reads
``betterproto.__version__``. Measured with bench/bench_protobuf.py (fresh interpreter importing
the plugin's gRPC modules, x86-64, Python 3.11, median of 5): 28.7 MiB resident and 103 ms
without the stand-ins, 26.0 MiB and 88 ms with them (55 modules fewer). 2.7 MiB matters: the
whole agent runs at 46 MiB against a 48 MiB budget (README "Performance").

:func:`prepare_betterproto` registers two small stand-ins before betterproto is first imported:

- ``betterproto._version`` with ``__version__`` = the exact version pyproject.toml pins
  (tests check the installed distribution is that version);
- ``dateutil.parser`` whose ``isoparse`` (and any other attribute) loads the real
  ``dateutil.parser`` on first use, so behaviour is unchanged if anything ever parses a date.

It does nothing once betterproto or dateutil.parser is imported (their real modules win).
tests/test_deviceplugin_lightimports.py fails when a betterproto release no longer needs these
stand-ins (its import stops loading dateutil's parser or importlib.metadata) or no longer
works with them (another version, another import from dateutil.parser).
"""

from __future__ import annotations

import datetime
import importlib
import sys
import types

# pyproject.toml pins betterproto==2.0.0b7: the generated code is tied to that runtime.
BETTERPROTO_VERSION = "2.0.0b7"
_STAND_IN = "_edgeagent_stand_in"


def _real_dateutil_parser() -> types.ModuleType:
    current = sys.modules.get("dateutil.parser")
    if current is not None and getattr(current, _STAND_IN, False):
        del sys.modules["dateutil.parser"]
    module = importlib.import_module("dateutil.parser")
    # Later `import dateutil.parser` statements get the real module; the stand-in, kept only
    # by whoever imported it already, forwards to it.
    return module


class _LazyDateutilParser(types.ModuleType):
    """Stands in for ``dateutil.parser`` until something really uses it."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            # The import system probes dunders (``from dateutil.parser import isoparse`` asks
            # for ``__path__``): answering them must not load the real module.
            raise AttributeError(name)
        return getattr(_real_dateutil_parser(), name)


def _isoparse(value: str) -> datetime.datetime:
    return _real_dateutil_parser().isoparse(value)


def prepare_betterproto() -> None:
    """Call before the first import of betterproto (the device plugin's generated code)."""
    if "betterproto" in sys.modules:
        return
    if "betterproto._version" not in sys.modules:
        version = types.ModuleType("betterproto._version")
        version.__version__ = BETTERPROTO_VERSION  # type: ignore[attr-defined]
        setattr(version, _STAND_IN, True)
        sys.modules["betterproto._version"] = version
    if "dateutil.parser" not in sys.modules:
        parser = _LazyDateutilParser("dateutil.parser")
        parser.isoparse = _isoparse  # type: ignore[attr-defined]
        setattr(parser, _STAND_IN, True)
        sys.modules["dateutil.parser"] = parser
