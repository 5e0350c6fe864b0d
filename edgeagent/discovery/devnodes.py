"""Pure: the one table of device nodes edgeagent looks for under /dev, and what each means.

Discovery (the GPU's nodes, NVDLA engines a mainline tree does not show, PCIe Edge TPUs), the
device plugin's health probe and built-in profiles, and doctor's messages all read it here.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional

# nvgpu (JetPack 4-6): /dev/nvhost-*-gpu, /dev/nvgpu/igpu0/*; OpenRM (JetPack 7, Thor):
# /dev/nvidia0, /dev/nvidiactl, /dev/nvidia-uvm; /dev/nvmap is the Tegra memory allocator.
GPU_GLOBS = ("/dev/nvhost-*", "/dev/nvgpu/igpu*/*", "/dev/nvidia*", "/dev/nvmap")
GPU_NODE = re.compile(r"^/dev/(nvhost-(ctrl-)?gpu|nvhost-as-gpu|nvhost-prof-gpu|nvhost-dbg-gpu|"
                      r"nvhost-tsg-gpu|nvhost-sched-gpu|nvgpu/igpu\d+/.*|nvidia\d+|nvidiactl|"
                      r"nvidia-uvm|nvidia-uvm-tools|nvmap)$")
GPU_NODES_TEXT = "/dev/nvhost-*gpu*, /dev/nvgpu/igpu0/*, /dev/nvidia0 on Thor"

# NVDLA engine nodes. JetPack 4 and 5 (nvhost) expose /dev/nvhost-nvdla<N> and
# /dev/nvhost-ctrl-nvdla<N> (L4T r32/r35 l4t.csv lists both); JetPack 6 (r36, nvidia-oot) only
# /dev/nvhost-ctrl-nvdla<N> (its devices.csv lists no nvhost-nvdla<N>). /dev/nvdla<N> is what
# some non-L4T kernels name the engine. One engine per index N, whatever nodes it has; the
# order is the preference when one node has to stand for the engine.
NVDLA_PREFIXES = ("nvhost-nvdla", "nvhost-ctrl-nvdla", "nvdla")
NVDLA_GLOBS = tuple("/dev/%s*" % p for p in NVDLA_PREFIXES)
NVDLA_NODE = re.compile(r"^/dev/(?:%s)(\d+)$" % "|".join(NVDLA_PREFIXES))   # group 1: N
# Shared nodes the DLA runtime also opens: nvmap allocates its buffers; host1x-fence (JetPack 6)
# carries its sync points. Given with every engine when they exist.
NVDLA_SUPPORT_NODES = ("/dev/nvmap", "/dev/host1x-fence")

# PCIe Coral Edge TPU: the gasket/apex driver creates /dev/apex_<N> (google-coral/libedgetpu).
EDGETPU_GLOBS = ("/dev/apex_*",)
APEX_NODE = re.compile(r"^/dev/apex_(\d+)$")

# Everything the full scan lists under /dev.
DEV_GLOBS = tuple(dict.fromkeys(GPU_GLOBS + NVDLA_GLOBS + EDGETPU_GLOBS))


def gpu_nodes(paths: Iterable[str]) -> List[str]:
    """The GPU driver's nodes among ``paths``, in the given order."""
    return [p for p in paths if GPU_NODE.match(p)]


def nvdla_engines(paths: Iterable[str]) -> Dict[int, List[str]]:
    """Engine index -> its nodes among ``paths``, in preference order."""
    engines: Dict[int, List[str]] = {}
    for p in paths:
        m = NVDLA_NODE.match(p)
        if m:
            engines.setdefault(int(m.group(1)), []).append(p)
    rank = {prefix: i for i, prefix in enumerate(NVDLA_PREFIXES)}
    for nodes in engines.values():
        nodes.sort(key=lambda p: rank[p[len("/dev/"):].rstrip("0123456789")])
    return engines


def nvdla_device(index: int, paths: Iterable[str]) -> Optional[str]:
    """The node that stands for engine ``index`` (the first of NVDLA_PREFIXES that exists)."""
    nodes = nvdla_engines(paths).get(index)
    return nodes[0] if nodes else None


def apex_nodes(paths: Iterable[str]) -> List[str]:
    return [p for p in paths if APEX_NODE.match(p)]
