"""Fake host roots for discovery tests: a real DTB in one of its forms, plus the few files
discovery reads (/etc/nv_tegra_release, /proc/meminfo, /sys/devices/soc0/*, /dev nodes)."""

import os
import shutil
from typing import Dict, Iterable, Optional

from edgeagent.discovery.dirtree import write_dir_tree
from edgeagent.discovery.fdt import parse_fdt
from tests.conftest import dtb_path

NV_TEGRA_RELEASE = {
    "R32.7.1": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
               "DATE: Sat Feb 19 17:05:08 UTC 2022\n",
    "R35.4.1": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
               "DATE: Tue Aug  1 19:57:35 UTC 2023\n# KERNEL_VARIANT: oot\n"
               "TARGET_USERSPACE_LIB_DIR=nvidia\n"
               "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
    "R36.3.0": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
               "DATE: Mon May  6 17:34:21 UTC 2024\n# KERNEL_VARIANT: oot\n"
               "TARGET_USERSPACE_LIB_DIR=nvidia\n"
               "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n",
}

MEMINFO_8G = ("MemTotal:        7765304 kB\nMemFree:         5120344 kB\n"
              "MemAvailable:    6403720 kB\nBuffers:           52424 kB\n")


def write(root: str, host_path: str, content, mode: str = "w") -> str:
    real = os.path.join(root, host_path.lstrip("/"))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, mode if isinstance(content, str) else "wb") as f:
        f.write(content)
    return real


def write_kernel_dir_tree(tree, directory: str) -> None:
    """The directory form as the kernel shows it: write_dir_tree plus a ``name`` property in
    every node (the unit name without its address; empty for the root)."""
    write_dir_tree(tree, directory)
    for node in tree.walk():
        if "name" not in node.props:
            write(directory, os.path.join(node.path, "name"),
                  node.name.split("@")[0].encode() + b"\0")


def put_tree(root: str, dtb: str, form: str) -> None:
    """Put a real DTB on the host as /sys/firmware/fdt ("blob"), /proc/device-tree ("proc") or
    /sys/firmware/devicetree/base with /proc/device-tree linking to it, as on a real host
    ("sys")."""
    if form == "blob":
        os.makedirs(os.path.join(root, "sys/firmware"), exist_ok=True)
        shutil.copyfile(dtb_path(dtb), os.path.join(root, "sys/firmware/fdt"))
        return
    with open(dtb_path(dtb), "rb") as f:
        tree = parse_fdt(f.read(), dtb)
    if form == "proc":
        write_kernel_dir_tree(tree, os.path.join(root, "proc/device-tree"))
    elif form == "sys":
        write_kernel_dir_tree(tree, os.path.join(root, "sys/firmware/devicetree/base"))
        os.makedirs(os.path.join(root, "proc"), exist_ok=True)
        os.symlink("/sys/firmware/devicetree/base", os.path.join(root, "proc/device-tree"))
    else:
        raise ValueError(form)


def make_host(root: str, dtb: Optional[str] = None, form: str = "blob",
              release: Optional[str] = None, meminfo: Optional[str] = MEMINFO_8G,
              soc0: Optional[Dict[str, str]] = None, dev: Iterable[str] = (),
              usb: Iterable[tuple] = ()) -> str:
    """A whole fake host under ``root``; returns ``root``."""
    os.makedirs(root, exist_ok=True)
    if dtb:
        put_tree(root, dtb, form)
    if release is not None:
        write(root, "/etc/nv_tegra_release", NV_TEGRA_RELEASE.get(release, release))
    if meminfo is not None:
        write(root, "/proc/meminfo", meminfo)
    for key, value in (soc0 or {}).items():
        write(root, "/sys/devices/soc0/" + key, value + "\n")
    for node in dev:
        write(root, node, "")
    for i, (vendor, product) in enumerate(usb):
        write(root, "/sys/bus/usb/devices/2-%d/idVendor" % (i + 1), vendor + "\n")
        write(root, "/sys/bus/usb/devices/2-%d/idProduct" % (i + 1), product + "\n")
    return root
