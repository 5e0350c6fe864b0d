"""The edgeagent .pyz being installed: is it one (a shiv zipapp holding edgeagent), its build
id, and the unpacked builds it leaves in the cache. Pure apart from reading the zip and the
cache directory."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from typing import List, Optional

from edgeagent.errors import OperatorError

MAX_ENVIRONMENT_BYTES = 64 * 1024


def shiv_build_id(path: str) -> Optional[str]:
    """The build id of a shiv pyz (its dependencies unpack to ``<name>_<build id>``), or None
    when ``path`` is not a shiv zipapp holding edgeagent."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "environment.json" not in names or \
                    "site-packages/edgeagent/__init__.py" not in names:
                return None
            # shiv writes a few hundred bytes; a hostile zip could declare gigabytes
            if z.getinfo("environment.json").file_size > MAX_ENVIRONMENT_BYTES:
                return None
            env = json.loads(z.read("environment.json").decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, RecursionError):
        return None
    build_id = env.get("build_id") if isinstance(env, dict) else None
    return str(build_id) if build_id else None


def find_pyz(given: Optional[str], argv0: Optional[str] = None) -> str:
    """The pyz to install: ``--pyz FILE``, else the zipapp this process runs from."""
    if given:
        if not os.path.isfile(given):
            raise OperatorError("--pyz %s: no such file" % given)
        if shiv_build_id(given) is None:
            raise OperatorError("--pyz %s: not an edgeagent .pyz (build one with ./build.sh)"
                                % given)
        return os.path.abspath(given)
    argv0 = sys.argv[0] if argv0 is None else argv0
    if argv0 and os.path.isfile(argv0) and shiv_build_id(argv0) is not None:
        return os.path.abspath(argv0)
    raise OperatorError("install: edgeagent is not running from its .pyz (%s); run "
                        "`sudo ./edgeagent.pyz install`, or pass --pyz FILE" % (argv0 or "?"))


def stale_builds(cache_dir: str, pyz_name: str, keep_build_id: Optional[str]) -> List[str]:
    """Unpacked builds in the cache other than ``keep_build_id`` (names of dirs and locks)."""
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return []
    keep = {"%s_%s" % (pyz_name, keep_build_id), ".%s_%s_lock" % (pyz_name, keep_build_id)}
    prefixes = (pyz_name + "_", "." + pyz_name + "_")
    return sorted(n for n in names if n.startswith(prefixes) and n not in keep)
