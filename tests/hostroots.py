"""Fixture host roots for the ops tests: a folder that looks like a board's filesystem."""

import json
import os
import shutil
import zipfile

from tests.conftest import dtb_path

XAVIER = "tegra194-p2972-0000.dtb"
NANO = "tegra210-p3450-0000.dtb"
ORIN_NANO = "tegra234-p3768-0000+p3767-0005.dtb"
RPI4 = "bcm2711-rpi-4-b.dtb"

R35_4_1 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"
XAVIER_GPU_NODES = ("nvhost-ctrl-gpu", "nvhost-gpu", "nvhost-as-gpu", "nvmap")


def write(root, host_path, data=b"", mode=None):
    path = os.path.join(str(root), host_path.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def make_root(tmp_path, dtb=XAVIER, release=R35_4_1, dev=XAVIER_GPU_NODES, name="host"):
    """A board root: the DTB as /sys/firmware/fdt, /etc/nv_tegra_release, /dev nodes (files)."""
    root = tmp_path / name
    root.mkdir()
    if dtb:
        shutil.copy(dtb_path(dtb), write(root, "/sys/firmware/fdt"))
    if release is not None:
        write(root, "/etc/nv_tegra_release", release)
    for node in dev or ():
        write(root, "/dev/" + node)
    write(root, "/proc/meminfo", "MemTotal:       32559412 kB\n")
    for folder in ("var/cache", "etc/systemd/system", "usr/bin"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def write_dir_tree(root, nodes):
    """A /proc/device-tree folder: {"/": {"model": b"..."}, "/gpu@0": {...}}."""
    for path, props in nodes.items():
        folder = os.path.join(str(root), "proc/device-tree", path.strip("/"))
        os.makedirs(folder, exist_ok=True)
        for name, value in props.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(value)


def fake_pyz(path, build_id="0123456789abcdef"):
    """A zip shaped like a shiv build of edgeagent (what install checks), without running."""
    with zipfile.ZipFile(str(path), "w") as z:
        z.writestr("environment.json", json.dumps({"build_id": build_id, "root": None}))
        z.writestr("site-packages/edgeagent/__init__.py", "")
        z.writestr("__main__.py", "raise SystemExit('fake pyz')\n")
    return str(path)
