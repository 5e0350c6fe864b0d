"""The agent's CDI specs loaded by a real CDI consumer: podman (Debian's, with the
container-device-interface library vendored) resolves ``--device edgeagent.io/gpu=all`` and
``edgeagent.io/dla=1`` and writes the edits into the container's OCI config.json.

podman 4.3 reads specs only from /etc/cdi and /var/run/cdi (no --cdi-spec-dir), so the test
runs it in a private mount namespace with a temporary directory bound over /etc/cdi: the
machine's own CDI directories are never written. No image is pulled (``--rootfs`` of an empty
folder) and the container is never started: ``podman init`` writes config.json before it asks
the OCI runtime (which a sandbox may refuse: that error is not what is tested).
"""

import json
import os
import stat
import subprocess

import pytest

from edgeagent.cdi import spec as cdispec
from edgeagent.cdi.component import sync_specs
from edgeagent.hostpaths import HostRoot
from tests.tools import require_tool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="podman and os.mknod need root here")

SCRIPT = r"""
set -u
mount --bind "$SPECS" /etc/cdi || exit 97
id=$(podman create --network none $DEVICES --rootfs "$ROOTFS" /bin/true) || exit 98
podman init "$id" >"$OUT.init" 2>&1
dir=$(podman inspect --format '{{.StaticDir}}' "$id")
cp "$dir/config.json" "$OUT" 2>/dev/null
podman rm -f "$id" >/dev/null 2>&1
exit 0
"""


def mknod(root, host_path, major, minor):
    path = os.path.join(root, host_path.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(major, minor))
    os.chmod(path, 0o660)   # mknod's mode is masked by the umask


def podman_config(tmp_path, specs, devices):
    require_tool("podman")
    require_tool("unshare")
    created = not os.path.isdir("/etc/cdi")
    if created:
        os.mkdir("/etc/cdi")          # the mount point only; nothing is written in it
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir(exist_ok=True)
    out = tmp_path / "config.json"
    env = dict(os.environ, SPECS=str(specs), ROOTFS=str(rootfs), OUT=str(out),
               DEVICES=" ".join("--device " + d for d in devices))
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    finally:
        if created:
            os.rmdir("/etc/cdi")
    assert done.returncode == 0, done.stderr
    init = (tmp_path / "config.json.init").read_text()
    return (json.loads(out.read_text()) if out.exists() else None), init


@pytest.fixture
def specs(tmp_path):
    host = tmp_path / "host"
    root = str(host)
    mknod(root, "/dev/nvhost-ctrl-gpu", 506, 0)
    mknod(root, "/dev/nvmap", 10, 61)
    mknod(root, "/dev/nvhost-ctrl-nvdla0", 507, 2)
    mknod(root, "/dev/nvhost-ctrl-nvdla1", 507, 4)
    lib = "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1"
    os.makedirs(os.path.join(root, os.path.dirname(lib).lstrip("/")))
    open(os.path.join(root, lib.lstrip("/")), "w").close()
    os.symlink("libcuda.so.1.1", os.path.join(root, lib.lstrip("/")[:-4]))
    csv = os.path.join(root, "etc/nvidia-container-runtime/host-files-for-container.d")
    os.makedirs(csv)
    with open(os.path.join(csv, "l4t.csv"), "w") as f:
        f.write("dev, /dev/nvhost-ctrl-gpu\ndev, /dev/nvmap\nlib, %s\nsym, %s\n"
                % (lib, lib[:-4]))
    assert sorted(sync_specs(HostRoot(root))) == sorted(cdispec.SPEC_PATHS)
    return HostRoot(root).resolve(cdispec.SPEC_DIR)


def test_podman_injects_the_agents_specs(tmp_path, specs):
    config, init = podman_config(tmp_path, specs, ["edgeagent.io/gpu=all", "edgeagent.io/dla=1"])
    assert config is not None, init
    assert "NVIDIA_VISIBLE_DEVICES=void" in config["process"]["env"]
    devices = {d["path"]: (d["type"], d["major"], d["minor"], d.get("fileMode"))
               for d in config["linux"]["devices"]}
    assert devices == {"/dev/nvhost-ctrl-gpu": ("c", 506, 0, 0o660),
                       "/dev/nvmap": ("c", 10, 61, 0o660),
                       "/dev/nvhost-ctrl-nvdla1": ("c", 507, 4, 0o660)}
    allowed = {(r.get("major"), r.get("minor")) for r in config["linux"]["resources"]["devices"]
               if r.get("allow")}
    assert {(506, 0), (10, 61), (507, 4)} <= allowed
    assert (507, 2) not in allowed          # engine 0 was not asked for
    mounts = {m["destination"]: m for m in config["mounts"]}
    link = mounts["/usr/lib/aarch64-linux-gnu/tegra/libcuda.so"]
    assert link["source"] == "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1.1"
    assert link["options"] == ["ro", "nosuid", "nodev", "bind"]


def test_podman_refuses_a_name_the_agent_did_not_define(tmp_path, specs):
    config, init = podman_config(tmp_path, specs, ["edgeagent.io/gpu=7"])
    assert "unresolvable CDI devices edgeagent.io/gpu=7" in init
