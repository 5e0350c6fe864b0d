"""Regenerate the committed betterproto code from ``protos/``.

Two targets: the device-plugin API (``protos/api.proto`` -> ``edgeagent/deviceplugin/proto``)
and the kubelet's DRA, DRA-health and plugin-registration APIs (``protos/dra``,
``protos/dra-health``, ``protos/pluginregistration`` -> ``edgeagent/dra/proto``).
``python -m edgeagent.genprotos [--out DIR]`` (what ``./build.sh protos`` runs) uses
grpcio-tools' bundled protoc with betterproto's plugin; both come with the ``dev`` extra. The
output depends on the formatter versions betterproto runs (black, isort), so pyproject pins them;
tests regenerate into a temporary directory and fail when the committed code differs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROTO_DIR = os.path.join(REPO, "protos")
# target -> (proto files under protos/, the package folder the code goes to)
TARGETS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "deviceplugin": (("api.proto",), os.path.join(HERE, "deviceplugin", "proto")),
    "dra": (("dra/v1/api.proto", "dra/v1beta1/api.proto", "dra-health/v1/api.proto",
             "dra-health/v1alpha1/api.proto", "pluginregistration/v1/api.proto"),
            os.path.join(HERE, "dra", "proto")),
}


class GenerateError(Exception):
    pass


def _plugin_script(folder: str) -> str:
    # protoc runs plugins as executables; this one runs betterproto's plugin on this interpreter
    # (the console script protoc-gen-python_betterproto may belong to another environment).
    path = os.path.join(folder, "protoc-gen-python_betterproto")
    with open(path, "w") as f:
        f.write("#!%s\nfrom betterproto.plugin.main import main\nmain()\n" % sys.executable)
    os.chmod(path, stat.S_IRWXU)
    return path


def generate(target: str, out_dir: str) -> List[str]:
    """Generate ``target``'s code into ``out_dir`` (created, emptied first); return the files
    written."""
    proto_files, _ = TARGETS[target]
    # Imported only to fail early and clearly: protoc and the plugin run in subprocesses.
    # betterproto.plugin.compiler imports black, isort and jinja2 (SystemExit when missing).
    try:
        for module in ("grpc_tools.protoc", "betterproto.plugin.compiler"):
            importlib.import_module(module)
    except (ImportError, SystemExit) as e:
        raise GenerateError("needs the dev extra (pip install -e '.[dev]'): %s" % e) from None
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    work = tempfile.mkdtemp(prefix="edgeagent-protoc-")
    try:
        plugin = _plugin_script(work)
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR,
               "--plugin=protoc-gen-python_betterproto=%s" % plugin,
               "--python_betterproto_out=%s" % out_dir]
        cmd += [os.path.join(PROTO_DIR, p) for p in proto_files]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        if proc.returncode != 0:
            raise GenerateError("protoc failed: %s" % (proc.stderr.strip() or proc.returncode))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sorted(read_tree(out_dir))


def read_tree(folder: str) -> Dict[str, str]:
    """Relative path -> text of every .py file under ``folder`` (caches ignored)."""
    out: Dict[str, str] = {}
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(base, name)
                with open(path) as f:
                    out[os.path.relpath(path, folder)] = f.read()
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeagent.genprotos",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="DIR",
                        help="write under DIR/<target> instead of the package folders")
    args = parser.parse_args(argv)
    for target, (_, folder) in sorted(TARGETS.items()):
        out = os.path.join(args.out, target) if args.out else folder
        try:
            files = generate(target, out)
        except GenerateError as e:
            sys.stderr.write("genprotos: %s\n" % e)
            return 2
        for name in files:
            print(os.path.join(out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
