#!/usr/bin/env python3
"""Put edgeagent's own ``__main__.py`` into a pyz shiv built: ``python packaging/pyz_main.py PYZ``.

shiv's ``__main__.py`` runs its ``_bootstrap`` on every start. With the dependencies already
unpacked, that costs a short command more than its own work: ``_bootstrap`` imports compileall,
subprocess, hashlib, shutil, pathlib and zipfile, opens the archive and parses environment.json
(about 20 ms on Debian's Python 3.11 on x86-64, more on a Jetson), then hands over to the entry
point. Ours does what ``_bootstrap`` does when the cache is warm (the same cache folder, the same
``site.addsitedir`` and ``sys.path`` order) with ``os`` and ``site`` only, and hands everything
else to shiv's ``_bootstrap``, which stays in the archive unchanged: the first start (unpack and
byte-compile), and every start that sets a ``SHIV_*`` variable other than ``SHIV_ROOT``.

The archive is rewritten member by member with each member's own ZipInfo (name, date, mode,
compression): the build stays reproducible, and shiv's build id (a hash of site-packages) still
names the cache.
"""

import json
import os
import sys
import zipfile

TEMPLATE = '''\
# -*- coding: utf-8 -*-
# edgeagent's start of this pyz (packaging/pyz_main.py put it in place of shiv's): when the
# dependencies are unpacked already, straight to the entry point without shiv's _bootstrap and
# its imports; anything else (the first start, a SHIV_* override) goes to _bootstrap as before.
import os
import sys

BUILD_ID = %(build_id)r
BUILD_ROOT = %(root)r
ENTRY_MODULE, ENTRY_NAME = %(entry)r
# Variables that change what _bootstrap does, SHIV_ROOT aside (handled here as it does).
OVERRIDES = ("SHIV_INTERPRETER", "SHIV_ENTRY_POINT", "SHIV_MODULE", "SHIV_CONSOLE_SCRIPT",
             "SHIV_FORCE_EXTRACT", "SHIV_PREPEND_PYTHONPATH", "SHIV_EXTEND_PYTHONPATH")


def unpacked_site_packages():
    """_bootstrap's cache_path()/site-packages when it exists and nothing asks for _bootstrap."""
    if any(name in os.environ for name in OVERRIDES):
        return None
    root = os.environ.get("SHIV_ROOT", BUILD_ROOT)
    if root:
        if root.startswith("$"):
            root = os.environ.get(root[1:], root[1:])
        root = os.path.expanduser(root)
    else:
        root = os.path.expanduser("~/.shiv")
    name = os.path.basename(os.path.realpath(sys.argv[0]))
    path = os.path.join(root, "%%s_%%s" %% (name, BUILD_ID), "site-packages")
    return path if os.path.isdir(path) else None


def stem(part):
    # pathlib's Path(part).stem, which _bootstrap uses, without importing pathlib
    base = os.path.basename(os.path.normpath(part)) if part else ""
    dot = base.rfind(".")
    return base[:dot] if 0 < dot < len(base) - 1 else base


def start(site_packages):
    import site

    length = len(sys.path)
    index = next((i for i, part in enumerate(sys.path)
                  if stem(part) in ("site-packages", "dist-packages")), None) or length
    site.addsitedir(site_packages)
    sys.path = sys.path[:index] + sys.path[length:] + sys.path[index:length]
    module = __import__(ENTRY_MODULE, fromlist=[ENTRY_NAME])
    sys.exit(getattr(module, ENTRY_NAME)())


site_packages = unpacked_site_packages()
if site_packages is None:
    import _bootstrap

    _bootstrap.bootstrap()
else:
    start(site_packages)
'''


def main_source(environment):
    """The ``__main__.py`` for a pyz whose environment.json is ``environment`` (a dict)."""
    entry = environment.get("entry_point")
    if not entry or ":" not in entry or environment.get("script") or environment.get("preamble"):
        raise SystemExit("pyz_main: only a module:function entry point without a preamble is "
                         "supported (environment.json: %r)" % entry)
    if environment.get("no_modify") or environment.get("extend_pythonpath") or \
            environment.get("prepend_pythonpath") or environment.get("always_write_cache"):
        raise SystemExit("pyz_main: build the pyz without --no-modify, --extend-pythonpath, "
                         "--prepend-pythonpath and --always-write-cache (the fast start does none)")
    return TEMPLATE % {"build_id": environment["build_id"], "root": environment.get("root"),
                       "entry": tuple(entry.split(":", 1))}


def rewrite(pyz):
    """Replace ``__main__.py`` in ``pyz`` in place, keeping its shebang and every other member."""
    with open(pyz, "rb") as f:
        head = f.readline() if f.read(2) == b"#!" else b""
        if head:
            head = b"#!" + head
    with zipfile.ZipFile(pyz) as old:
        environment = json.loads(old.read("environment.json").decode("utf-8"))
        source = main_source(environment).encode("utf-8")
        tmp = pyz + ".tmp"
        with open(tmp, "wb") as f:
            f.write(head)
            with zipfile.ZipFile(f, "w") as new:
                for info in old.infolist():
                    data = source if info.filename == "__main__.py" else old.read(info)
                    new.writestr(info, data, compress_type=info.compress_type)
    os.chmod(tmp, os.stat(pyz).st_mode & 0o7777)
    os.replace(tmp, pyz)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: pyz_main.py PYZ")
    rewrite(sys.argv[1])
