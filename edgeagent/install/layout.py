"""Where an installed edgeagent lives, and its systemd unit: the packaged template, rendered for
one interpreter and pyz, and parsed back (for doctor). Pure apart from reading package data."""

from __future__ import annotations

import os
import re
import shlex
from typing import Dict, List, Optional, Tuple

from edgeagent.errors import OperatorError

UNIT_NAME = "edgeagent.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME
# Where systemd looks for system units, most specific first (systemd.unit(5)).
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/lib/systemd/system", "/usr/lib/systemd/system")
WANTED_BY = "multi-user.target"
WANTS_LINK = "/etc/systemd/system/%s.wants/%s" % (WANTED_BY, UNIT_NAME)
PYZ_PATH = "/usr/local/lib/edgeagent/edgeagent.pyz"
COMMAND_PATH = "/usr/local/bin/edgeagent"
CACHE_DIR = "/var/cache/edgeagent"             # CacheDirectory=edgeagent; SHIV_ROOT
CONFIG_PATH = "/etc/edgeagent/config.toml"     # config.DEFAULT_CONFIG_PATH
DEFAULT_PYTHON = "/usr/bin/python3"
# The first line of the command wrapper: uninstall removes only a file that starts with it.
WRAPPER_MARK = "# edgeagent command wrapper, written by `edgeagent install`"

# The Debian package (./build.sh deb, packaging/): the pyz under /usr/lib, not /usr/local, which
# is the administrator's (FHS 4.9; Debian policy 9.1.2 forbids packaged files there). The unit
# under /lib: where packages of every targeted release (Ubuntu 18.04 to 24.04) put theirs and
# every deb-systemd-helper looks; on a merged /usr it is /usr/lib/systemd/system. lintian on
# Debian 12 accepts it (tests/test_deb.py).
PACKAGE_PYZ_PATH = "/usr/lib/edgeagent/edgeagent.pyz"
PACKAGE_UNIT_PATH = "/lib/systemd/system/" + UNIT_NAME
PACKAGE_COMMAND_PATH = "/usr/bin/edgeagent"
PACKAGE_WRAPPER_MARK = "# edgeagent command wrapper, installed by the edgeagent Debian package"
# The template's header says who wrote the file and who rewrites it: true for `install` only.
_INSTALL_HEADER = ("# Written by `edgeagent install`, which sets ExecStart= to the Python that "
                   "ran it.\n# Put local changes in a drop-in (`systemctl edit edgeagent`): "
                   "install rewrites this file.\n")
_PACKAGE_HEADER = ("# Installed by the edgeagent Debian package, whose Depends: names the Python "
                   "in ExecStart=.\n# Put local changes in a drop-in (`systemctl edit "
                   "edgeagent`): an upgrade replaces this file.\n")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA_DIR = os.path.join(_PACKAGE_DIR, "systemd")
# systemd treats these specially inside ExecStart= (quoting, specifiers, variables).
_UNSAFE = re.compile(r"[\s\"'\\%$;]")


# ProtectHome=yes hides these from the service: an interpreter there cannot start it.
HIDDEN_DIRS = ("/home/", "/root/", "/run/user/")


def resolve_in_root(root, host_path: str, limit: int = 40) -> str:
    """``host_path`` with its symlinks followed as the host would, absolute links staying inside
    ``root`` (a HostRoot). Stops at a missing component or after ``limit`` links."""
    parts = [p for p in host_path.split("/") if p]
    done = "/"
    while parts and limit > 0:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = os.path.dirname(done)
            continue
        candidate = os.path.join(done, part)
        real = root.path(candidate)
        if os.path.islink(real):
            limit -= 1
            target = os.readlink(real)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                done = "/"
            continue
        done = candidate
    return os.path.join(done, *parts) if parts else done


def hidden_from_service(root, host_path: str) -> bool:
    """True when ``host_path`` (or what its symlinks lead to) is under a directory the unit's
    ProtectHome= hides (a pyenv or conda Python)."""
    return (host_path.startswith(HIDDEN_DIRS)
            or resolve_in_root(root, host_path).startswith(HIDDEN_DIRS))


def packaged_file(name: str) -> str:
    """The text of a file shipped in edgeagent/systemd/ (the unit, the example config)."""
    with open(os.path.join(_DATA_DIR, name), encoding="utf-8") as f:
        return f.read()


def unit_template() -> str:
    return packaged_file(UNIT_NAME)


def example_config() -> str:
    return packaged_file("edgeagent.toml")


def render_unit(template: str, python: str, pyz: str) -> str:
    """The unit with ``ExecStart=<python> <pyz> run``. Raises OperatorError for a path systemd
    would misread (spaces, quotes, ``%`` specifiers, ``$`` variables)."""
    for what, path in (("python", python), ("pyz", pyz)):
        if not path.startswith("/") or _UNSAFE.search(path):
            raise OperatorError("%s path %r cannot go into a unit file: it must be absolute, "
                                "without spaces, quotes, '%%' or '$'" % (what, path))
    lines = template.splitlines(True)
    hits = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    if len(hits) != 1:
        raise ValueError("the unit template needs exactly one ExecStart= line")
    lines[hits[0]] = "ExecStart=%s %s run\n" % (python, pyz)
    return "".join(lines)


def package_unit(python: str) -> str:
    """The unit the Debian package ships: the same template, ExecStart= running the packaged
    pyz, the header naming the package. ValueError when the template's header changed."""
    text = render_unit(unit_template(), python, PACKAGE_PYZ_PATH)
    if _INSTALL_HEADER not in text:
        raise ValueError("the unit template's header changed: update layout._INSTALL_HEADER")
    return text.replace(_INSTALL_HEADER, _PACKAGE_HEADER, 1)


def wrapper_script(python: str, pyz: str, packaged: bool = False) -> str:
    """/usr/local/bin/edgeagent (or the package's /usr/bin/edgeagent): runs the installed pyz
    with the service's interpreter, sharing the service's unpacked dependencies when this user
    may write them (root)."""
    return "\n".join([
        "#!/bin/sh",
        PACKAGE_WRAPPER_MARK if packaged else WRAPPER_MARK,
        "# (%s removes it). The pyz needs this Python: its C extensions are built for it."
        % ("removing the package" if packaged else "uninstall"),
        'if [ -z "${SHIV_ROOT:-}" ] && [ -w %s ]; then' % CACHE_DIR,
        "  SHIV_ROOT=%s; export SHIV_ROOT" % CACHE_DIR,
        "fi",
        'exec %s %s "$@"' % (python, pyz),
        "",
    ])


def parse_unit(text: str) -> Dict[str, List[str]]:
    """``"Section.Key" -> [values]`` of a unit file (comments, continuations, repeats)."""
    out: Dict[str, List[str]] = {}
    section = ""
    parts: List[str] = []   # a continued line's pieces, joined once at its end: linear time
    for raw in text.splitlines():
        piece = raw.strip()
        if not parts and (not piece or piece[0] in "#;"):
            continue
        if piece.endswith("\\"):
            parts.append(piece[:-1] + " ")
            continue
        parts.append(piece)
        line = "".join(parts)
        parts = []
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault("%s.%s" % (section, key.strip()), []).append(value.strip())
    return out


def exec_start(unit: Dict[str, List[str]]) -> Optional[Tuple[str, ...]]:
    """The argv of the last ExecStart= (prefixes like ``-`` and ``@`` removed), or None."""
    values = [v for v in unit.get("Service.ExecStart", []) if v]
    if not values:
        return None
    try:
        argv = shlex.split(values[-1])
    except ValueError:
        return None
    if argv:
        argv[0] = argv[0].lstrip("-@:+!")
    return tuple(argv) or None


def unit_environment(unit: Dict[str, List[str]]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for value in unit.get("Service.Environment", []):
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        for word in words:
            key, sep, val = word.partition("=")
            if sep:
                env[key] = val
    return env


def installed_paths(unit: Dict[str, List[str]]) -> Tuple[Optional[str], Optional[str]]:
    """(python, pyz) from an installed unit's ``ExecStart=<python> <pyz> run``."""
    argv = exec_start(unit)
    if not argv:
        return None, None
    if len(argv) >= 2 and argv[1].endswith(".pyz"):
        return argv[0], argv[1]
    if argv[0].endswith(".pyz"):  # run by its #! line
        return None, argv[0]
    return argv[0], None
