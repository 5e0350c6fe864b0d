"""Stage the edgeagent Debian package's tree from a built pyz; build.sh's `deb` command runs
this, then `dpkg-deb --build --root-owner-group` on the tree.

Written in Python rather than debhelper or a shell script: the unit and the command wrapper come
from edgeagent/install/layout.py (one unit template for both ways of installing), and what the
package depends on is read from the pyz itself, so a package can never name another Python than
the one its C extensions were built for.

Usage: python packaging/stage_deb.py --pyz FILE --tree DIR [--revision N] [--epoch SECONDS]
Prints the .deb's file name (edgeagent_<version>_<arch>.deb) on stdout.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import zipfile
import zlib
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from edgeagent.install.layout import (CONFIG_PATH, PACKAGE_COMMAND_PATH,  # noqa: E402
                                      PACKAGE_PYZ_PATH, PACKAGE_UNIT_PATH, example_config,
                                      package_unit, wrapper_script)
from edgeagent.install.pyz import shiv_build_id  # noqa: E402

PACKAGE = "edgeagent"
MAINTAINER = "edgeagent maintainers <edgeagent@lists.example.org>"
# ELF e_machine of the pyz's C extensions -> Debian architecture (the --platform of build.sh).
DEB_ARCH = {62: "amd64", 183: "arm64", 40: "armhf"}
_EXTENSION = re.compile(r"^site-packages/.*\.cpython-3(\d+)-[^/]*\.so$")
_VERSION = re.compile(r'^__version__ = "([0-9][0-9A-Za-z.+~]*)"$', re.M)


class StageError(Exception):
    pass


# --- what the pyz is ----------------------------------------------------------------------------

# Bounds for what is read from the pyz (a file given with --pyz may be anything).
MAX_FIRST_LINE = 200
MAX_INIT_BYTES = 64 * 1024


def pyz_facts(pyz: str) -> Dict[str, str]:
    """version, build_id, python (X.Y), interpreter (the #! line's command) and arch of a pyz.
    StageError for anything that is not a pyz ./build.sh made."""
    build_id = shiv_build_id(pyz)
    if build_id is None:
        raise StageError("%s: not an edgeagent .pyz (build one with ./build.sh)" % pyz)
    try:
        with open(pyz, "rb") as f:
            first = f.readline(MAX_FIRST_LINE).decode("ascii", "replace").strip()
        with zipfile.ZipFile(pyz) as z:
            version, minors, machines = _read_members(z)
    except (OSError, KeyError, ValueError, EOFError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as e:
        raise StageError("%s: unreadable pyz: %s" % (pyz, e)) from None
    m = re.match(r"^#!/usr/bin/env (python3(?:\.\d+)?)$", first)
    if not m:
        raise StageError("%s: unexpected #! line %r" % (pyz, first[:80]))
    interpreter = m.group(1)
    if version is None:
        raise StageError("%s: no __version__ in edgeagent/__init__.py" % pyz)
    if len(minors) != 1 or len(machines) != 1:
        raise StageError("%s: C extensions for Pythons %s, machines %s: expected one of each"
                         % (pyz, sorted(minors), sorted(machines)))
    python = "3.%s" % minors.pop()
    machine = machines.pop()
    if machine not in DEB_ARCH:
        raise StageError("%s: C extensions for ELF machine %d, no Debian architecture known"
                         % (pyz, machine))
    if interpreter != "python3" and interpreter != "python" + python:
        raise StageError("%s: runs under %s but holds C extensions for Python %s"
                         % (pyz, interpreter, python))
    return {"version": version, "build_id": build_id, "python": python,
            "interpreter": interpreter, "arch": DEB_ARCH[machine]}


def _read_members(z: zipfile.ZipFile) -> Tuple[Optional[str], set, set]:
    init = z.getinfo("site-packages/edgeagent/__init__.py")
    if init.file_size > MAX_INIT_BYTES:
        raise ValueError("edgeagent/__init__.py is %d bytes" % init.file_size)
    with z.open(init) as f:
        m = _VERSION.search(f.read(MAX_INIT_BYTES).decode("utf-8"))
    minors, machines = set(), set()
    for name in z.namelist():
        ext = _EXTENSION.match(name)
        if ext:
            minors.add(ext.group(1))
            with z.open(name) as f:
                head = f.read(20)
            if len(head) == 20 and head[:4] == b"\x7fELF":
                order = "little" if head[5] == 1 else "big"
                machines.add(int.from_bytes(head[18:20], order))
            else:
                raise ValueError("%s is no ELF file" % name)
    return (m.group(1) if m else None), minors, machines


def python_depends(interpreter: str, python: str) -> str:
    """Depends: for the Python the pyz runs under. A pyz holds C extensions for one Python
    minor version: a `--python X.Y` build runs under pythonX.Y (JetPack 4's python3 is 3.6, so a
    3.8 build depends on the python3.8 package); a default build runs under python3, which must
    then be exactly the minor version it was built with (as Debian's own C extensions say it)."""
    if interpreter != "python3":
        return interpreter
    major, minor = python.split(".")
    return "python3 (>= %s~), python3 (<< %s.%d)" % (python, major, int(minor) + 1)


# --- the files ----------------------------------------------------------------------------------

def control(facts: Dict[str, str], version: str, installed_kib: int) -> str:
    return "".join([
        "Package: %s\n" % PACKAGE,
        "Version: %s\n" % version,
        "Architecture: %s\n" % facts["arch"],
        "Maintainer: %s\n" % MAINTAINER,
        "Installed-Size: %d\n" % installed_kib,
        "Depends: %s\n" % python_depends(facts["interpreter"], facts["python"]),
        "Section: admin\n",
        "Priority: optional\n",
        "Description: Kubernetes GPU node agent for NVIDIA Jetson boards\n",
        " edgeagent turns an NVIDIA Jetson (or another devicetree board) into a\n",
        " Kubernetes GPU node in one process: a kubelet device plugin, node labels\n",
        " from the devicetree, a tegrastats Prometheus exporter and a doctor command.\n",
        " .\n",
        " This package holds the one-file build (a shiv zipapp for Python %s), its\n" % (
            facts["python"]),
        " systemd service and its configuration file.\n",
    ])


def copyright_file(epoch: int) -> str:
    return COPYRIGHT % time.gmtime(epoch).tm_year


COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edgeagent
Comment: The pyz bundles edgeagent's Python dependencies (aiohttp, grpclib, betterproto,
 prometheus-client, PyYAML and theirs) under their own licenses (Apache-2.0, MIT, BSD).

Files: *
Copyright: %d edgeagent contributors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
"""


def changelog(version: str, epoch: int) -> str:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    return ("%s (%s) unstable; urgency=medium\n\n"
            "  * edgeagent %s, packaged from its pyz by ./build.sh deb.\n\n"
            " -- %s  %s\n" % (PACKAGE, version, version.split("-")[0], MAINTAINER, date))


def gzip_bytes(data: bytes, epoch: int) -> bytes:
    """gzip -9n: no name, a fixed time, so the package is reproducible."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=epoch) as g:
        g.write(data)
    return buf.getvalue()


def maintainer_script(name: str, facts: Dict[str, str]) -> str:
    with open(os.path.join(HERE, "deb", name), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("@BUILD_ID@", facts["build_id"])
    text = text.replace("@PYTHON@", "/usr/bin/" + facts["interpreter"])
    if re.search(r"@[A-Z_]+@", text):
        raise StageError("packaging/deb/%s: a placeholder was left unfilled" % name)
    return text


# --- the tree -----------------------------------------------------------------------------------

def stage(pyz: str, tree: str, revision: str, epoch: int) -> str:
    """Write the package tree into ``tree`` (emptied first); return the .deb's file name."""
    facts = pyz_facts(pyz)
    if not re.match(r"^[0-9][0-9A-Za-z.+~]*$", revision):
        raise StageError("--revision %r: not a Debian revision" % revision)
    version = "%s-%s" % (facts["version"], revision)
    if os.path.exists(tree):
        shutil.rmtree(tree)
    python = "/usr/bin/" + facts["interpreter"]
    files: List[Tuple[str, bytes, int]] = [
        (PACKAGE_PYZ_PATH, _read(pyz), 0o755),
        (PACKAGE_COMMAND_PATH, wrapper_script(python, PACKAGE_PYZ_PATH, packaged=True).encode(),
         0o755),
        (PACKAGE_UNIT_PATH, package_unit(python).encode(), 0o644),
        (CONFIG_PATH, example_config().encode(), 0o644),
        ("/usr/share/doc/%s/copyright" % PACKAGE, copyright_file(epoch).encode(), 0o644),
        ("/usr/share/doc/%s/changelog.Debian.gz" % PACKAGE,
         gzip_bytes(changelog(version, epoch).encode(), epoch), 0o644),
    ]
    for path, data, mode in files:
        _write(tree, path, data, mode)
    md5sums = "".join("%s  %s\n" % (hashlib.md5(data).hexdigest(), path.lstrip("/"))
                      for path, data, _ in sorted(files) if not path.startswith("/etc/"))
    installed_kib = sum((len(data) + 1023) // 1024 for _, data, _ in files)
    debian = [("control", control(facts, version, installed_kib), 0o644),
              ("conffiles", CONFIG_PATH + "\n", 0o644),
              ("md5sums", md5sums, 0o644)]
    debian += [(name, maintainer_script(name, facts), 0o755)
               for name in ("postinst", "prerm", "postrm")]
    for name, text, mode in debian:
        _write(tree, "/DEBIAN/" + name, text.encode(), mode)
    for folder, dirs, names in os.walk(tree):
        os.chmod(folder, 0o755)
        for name in names:
            os.utime(os.path.join(folder, name), (epoch, epoch))
    for folder, _, _ in os.walk(tree, topdown=False):
        os.utime(folder, (epoch, epoch))
    return "%s_%s_%s.deb" % (PACKAGE, version, facts["arch"])


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(tree: str, path: str, data: bytes, mode: int) -> None:
    real = os.path.join(tree, path.lstrip("/"))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, "wb") as f:
        f.write(data)
    os.chmod(real, mode)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", required=True)
    parser.add_argument("--tree", required=True)
    parser.add_argument("--revision", default="1")
    parser.add_argument("--epoch", type=int,
                        default=int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")))
    args = parser.parse_args(argv)
    try:
        print(stage(args.pyz, args.tree, args.revision, args.epoch))
    except (StageError, OSError) as e:
        sys.stderr.write("build.sh: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
