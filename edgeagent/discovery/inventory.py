"""Pure: host facts (a devicetree plus a few files, see facts.HostFacts) in, an immutable
Inventory out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from edgeagent.discovery.devicetree import DeviceTree, DtNode
from edgeagent.discovery.devnodes import apex_nodes, gpu_nodes, nvdla_device, nvdla_engines
from edgeagent.discovery.facts import HostFacts, UsbNode

__all__ = ["Accelerator", "Gpu", "HostFacts", "Inventory", "UsbNode", "build_inventory"]


@dataclass(frozen=True)
class Gpu:
    path: str
    compatible: Tuple[str, ...]
    status: str
    vendor: Optional[str]
    family: Optional[str]                    # NVIDIA architecture: maxwell, pascal, ...
    compute_capability: Optional[str]        # CUDA compute capability, "8.7"
    device_nodes: Tuple[str, ...] = ()       # /dev nodes the driver exposes, found on the host
    source: str = "devicetree"               # "devicetree" or "soc" (no node; known Tegra SoC)

    @property
    def usable(self) -> bool:
        return self.status == "okay"

    @property
    def is_nvidia(self) -> bool:
        return self.vendor == "nvidia"


@dataclass(frozen=True)
class Accelerator:
    kind: str                                # nvdla, pva, nvenc, nvdec, nvjpg, vic, ofa, npu, edgetpu
    path: str                                # devicetree path, /dev node or sysfs USB path
    compatible: Tuple[str, ...] = ()
    device: Optional[str] = None             # the /dev node a container needs, when known


@dataclass(frozen=True)
class Inventory:
    board_model: Optional[str]
    board_compatible: Tuple[str, ...]
    soc: Optional[str]
    is_tegra: bool
    l4t: Optional[str]
    jetpack: Optional[str]
    memory_bytes: Optional[int]
    gpu: Optional[Gpu]
    accelerators: Tuple[Accelerator, ...]
    devicetree_source: Optional[str]
    devicetree_error: Optional[str] = None
    problems: Tuple[str, ...] = ()
    tree: Optional[DeviceTree] = field(default=None, compare=False, repr=False)

    @property
    def has_devicetree(self) -> bool:
        return self.devicetree_source is not None

    def accelerator_count(self, kind: str) -> int:
        return sum(1 for a in self.accelerators if a.kind == kind)

    def to_json(self) -> Dict[str, Any]:
        """The stable JSON shape of `discover --json` (without "labels", which the CLI adds)."""
        gpu = None
        if self.gpu is not None:
            gpu = {
                "path": self.gpu.path,
                "compatible": list(self.gpu.compatible),
                "status": self.gpu.status,
                "vendor": self.gpu.vendor,
                "family": self.gpu.family,
                "compute_capability": self.gpu.compute_capability,
                "device_nodes": list(self.gpu.device_nodes),
                "source": self.gpu.source,
            }
        return {
            "board": {"model": self.board_model, "compatible": list(self.board_compatible)},
            "soc": self.soc,
            "tegra": self.is_tegra,
            "l4t": self.l4t,
            "jetpack": self.jetpack,
            "memory_bytes": self.memory_bytes,
            "gpu": gpu,
            "accelerators": [
                {"kind": a.kind, "path": a.path, "compatible": list(a.compatible),
                 "device": a.device}
                for a in self.accelerators
            ],
            "devicetree": {"source": self.devicetree_source, "error": self.devicetree_error},
            "problems": list(self.problems),
        }


# --- tables ---------------------------------------------------------------------------------------

# NVIDIA integrated GPUs: devicetree compatible -> (architecture, CUDA compute capability, SoC).
# Sources: CUDA programming guide's compute-capability table; the L4T/mainline tegra*.dtsi files.
NVIDIA_IGPUS: Dict[str, Tuple[str, str, str]] = {
    "nvidia,gk20a": ("kepler", "3.2", "tegra124"),
    "nvidia,gm20b": ("maxwell", "5.3", "tegra210"),
    "nvidia,gp10b": ("pascal", "6.2", "tegra186"),
    "nvidia,gv11b": ("volta", "7.2", "tegra194"),
    "nvidia,ga10b": ("ampere", "8.7", "tegra234"),
    # Thor: CUDA 13 renumbered Thor's sm_101 to sm_110; JetPack 7 ships CUDA 13.
    "nvidia,gb10b": ("blackwell", "11.0", "tegra264"),
}
_IGPU_BY_SOC = {soc: compat for compat, (_, _, soc) in NVIDIA_IGPUS.items()}

# /sys/devices/soc0/soc_id on Tegra kernels is the chip id (tegra_get_chip_id()).
TEGRA_CHIP_IDS = {"64": "tegra124", "33": "tegra210", "24": "tegra186", "25": "tegra194",
                  "35": "tegra234", "38": "tegra264"}
# Kernels with the Arm SMCCC SoC-id driver (drivers/firmware/smccc/soc_id.c) may register it as
# soc0 instead: family "jep106:036b" (NVIDIA's JEP106 code), soc_id "jep106:036b:0234" on Orin
# (seen in Orin boot logs; Grace reports 0241). The id is the chip number, so Thor's is taken as
# 0264. Only Jetson SoCs new enough for that driver are mapped; Grace is NVIDIA but no Jetson.
NVIDIA_JEP106 = "jep106:036b"
JEP106_TEGRA_IDS = {"0194": "tegra194", "0234": "tegra234", "0264": "tegra264"}

# L4T release -> JetPack, from NVIDIA's JetPack archive. Unlisted releases give null, not a guess.
JETPACK_BY_L4T = {
    "32.1.0": "4.2", "32.2.0": "4.2.1", "32.2.1": "4.2.2", "32.2.3": "4.2.3", "32.3.1": "4.3",
    "32.4.2": "4.4 DP", "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1",
    "32.5.2": "4.5.1", "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3",
    "32.7.4": "4.6.4", "32.7.5": "4.6.5", "32.7.6": "4.6.6",
    "34.1.0": "5.0 DP", "34.1.1": "5.0.1 DP", "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1",
    "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "35.6.2": "5.1.5",  # a BSP-only security update inside JetPack 5.1.5 (jetpack-nixos pins it)
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "38.2.0": "7.0", "38.2.1": "7.0", "38.4.0": "7.1",
}

# Devicetree node compatibles of accelerators, by kind (matched on the part after the comma).
_ACCEL_PATTERNS = (
    ("nvdla", re.compile(r"^nvidia,tegra\d+-nvdla")),
    ("pva", re.compile(r"^nvidia,tegra\d+-pva")),
    ("nvenc", re.compile(r"^nvidia,tegra\d+-(nvenc|msenc)$")),
    ("nvdec", re.compile(r"^nvidia,tegra\d+-nvdec$")),
    ("nvjpg", re.compile(r"^nvidia,tegra\d+-nvjpg$")),
    ("vic", re.compile(r"^nvidia,tegra\d+-vic$")),
    ("ofa", re.compile(r"^nvidia,tegra\d+-ofa$")),
    ("npu", re.compile(r"^rockchip,rk\d+-rknn|^amlogic,.*npu|^verisilicon,")),
)
# Coral Edge TPU on USB: before its firmware is loaded it enumerates as 1a6e:089a (Global
# Unichip), after as 18d1:9302 (Google); see google-coral/libedgetpu's udev rules.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}

# Display pipelines that sit in nodes named "gpu" but run no shaders.
_DISPLAY_ONLY = {"brcm,bcm2835-vc4", "brcm,bcm2711-vc5", "brcm,bcm2712-vc6"}

_SOC_RE = re.compile(r"^nvidia,(tegra\d+)$")


# --- derivations ----------------------------------------------------------------------------------

def parse_l4t_release(text: Optional[str]) -> Optional[str]:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``35.4.1``; None when absent or unreadable."""
    if not text:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return "%s.%s.%s" % (m.group(1), m.group(2), m.group(3) or "0")


def jetpack_for(l4t: Optional[str]) -> Optional[str]:
    return JETPACK_BY_L4T.get(l4t) if l4t else None


def parse_meminfo_total(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def soc_from_compatible(compatible: Tuple[str, ...]) -> Optional[str]:
    """The SoC family: a known Tegra string wins; else the root's last compatible (the SoC by
    devicetree convention, most specific board first)."""
    for c in compatible:
        m = _SOC_RE.match(c)
        if m:
            return m.group(1)
    if compatible:
        return compatible[-1].split(",", 1)[-1] or None
    return None


def effective_status(tree: DeviceTree) -> Dict[str, str]:
    """Node path -> status, where a node under a non-okay ancestor takes that ancestor's status:
    the kernel never creates devices below an unavailable bus (of_platform_bus_create returns
    early when of_device_is_available() is false), so such a node is no usable hardware."""
    out: Dict[str, str] = {}
    stack = [(tree.root, "okay")]
    while stack:
        node, inherited = stack.pop()
        status = node.status if inherited == "okay" else inherited
        out[node.path] = status
        stack.extend((child, status) for child in node.children)
    return out


def soc_from_soc0(soc_id: str) -> Optional[str]:
    """The Tegra SoC from /sys/devices/soc0/soc_id: a Tegra chip id or an SMCCC JEP106 id."""
    value = soc_id.strip().lower()
    if value.startswith(NVIDIA_JEP106 + ":"):
        return JEP106_TEGRA_IDS.get(value[len(NVIDIA_JEP106) + 1:])
    return TEGRA_CHIP_IDS.get(value)


def _gpu_rank(node: DtNode) -> int:
    compat = set(node.compatible)
    if compat & set(NVIDIA_IGPUS):
        return 0
    if compat & _DISPLAY_ONLY:
        return 2
    return 1


def find_gpu_node(tree: DeviceTree) -> Optional[DtNode]:
    """The GPU: a node named ``gpu``/``gpu@...`` with a compatible (or a known NVIDIA iGPU
    compatible anywhere). Known 3D GPUs beat display pipelines; enabled nodes beat disabled."""
    candidates = [
        n for n in tree.walk()
        if n.compatible and (n.name.split("@")[0] == "gpu" or set(n.compatible) & set(NVIDIA_IGPUS))
    ]
    if not candidates:
        return None
    status = effective_status(tree)
    return min(candidates, key=lambda n: (_gpu_rank(n), status[n.path] != "okay"))


def _gpu_dev_nodes(dev_nodes: Tuple[str, ...]) -> Tuple[str, ...]:
    return tuple(gpu_nodes(dev_nodes))


def _vendor(compatible: Tuple[str, ...]) -> Optional[str]:
    for c in compatible:
        if "," in c:
            return c.split(",", 1)[0]
    return None


def build_gpu(tree: Optional[DeviceTree], soc: Optional[str], is_tegra: bool,
              dev_nodes: Tuple[str, ...]) -> Optional[Gpu]:
    node = find_gpu_node(tree) if tree is not None else None
    gpu_devs = _gpu_dev_nodes(dev_nodes)
    if node is not None:
        info = next((NVIDIA_IGPUS[c] for c in node.compatible if c in NVIDIA_IGPUS), None)
        return Gpu(
            path=node.path, compatible=node.compatible,
            status=effective_status(tree)[node.path] if tree is not None else node.status,
            vendor="nvidia" if info else _vendor(node.compatible),
            family=info[0] if info else None, compute_capability=info[1] if info else None,
            device_nodes=gpu_devs if info else (),
        )
    # Mainline trees lack Orin's and Thor's GPU node; the L4T tree and the driver's /dev nodes
    # still make the iGPU real, so a Tegra host with those nodes has a GPU from the SoC table.
    if is_tegra and soc in _IGPU_BY_SOC and gpu_devs:
        compat = _IGPU_BY_SOC[soc]
        family, cc, _ = NVIDIA_IGPUS[compat]
        return Gpu(path=gpu_devs[0], compatible=(compat,), status="okay", vendor="nvidia",
                   family=family, compute_capability=cc, device_nodes=gpu_devs, source="soc")
    return None


def _accel_device(kind: str, index: int, dev_nodes: Tuple[str, ...]) -> Optional[str]:
    return nvdla_device(index, dev_nodes) if kind == "nvdla" else None


def find_accelerators(tree: Optional[DeviceTree], dev_nodes: Tuple[str, ...],
                      usb: Tuple[UsbNode, ...]) -> Tuple[Accelerator, ...]:
    found: List[Accelerator] = []
    seen_engines = set()
    if tree is not None:
        per_kind: Dict[str, int] = {}
        status = effective_status(tree)
        for node in tree.walk():
            if not node.compatible or status[node.path] != "okay":
                continue
            for kind, pattern in _ACCEL_PATTERNS:
                if any(pattern.match(c) for c in node.compatible):
                    index = per_kind.get(kind, 0)
                    per_kind[kind] = index + 1
                    device = _accel_device(kind, index, dev_nodes)
                    if kind == "nvdla":
                        seen_engines.add(index)
                    found.append(Accelerator(kind, node.path, node.compatible, device))
                    break
    # NVDLA engines the tree did not show (a mainline tree) still count when their nodes exist,
    # one per engine whichever of its nodes the kernel made (JetPack 6 has only the ctrl one).
    for index, nodes in sorted(nvdla_engines(dev_nodes).items()):
        if index not in seen_engines:
            found.append(Accelerator("nvdla", nodes[0], (), nodes[0]))
    for dev in apex_nodes(dev_nodes):
        found.append(Accelerator("edgetpu", dev, ("google,coral-pcie",), dev))
    for u in usb:
        if (u.vendor, u.product) in CORAL_USB_IDS:
            found.append(Accelerator("edgetpu", u.path, ("usb:%s:%s" % (u.vendor, u.product),)))
    return tuple(found)


def build_inventory(facts: HostFacts) -> Inventory:
    """Turn raw host facts into the inventory. Pure: no I/O, same facts give the same value."""
    tree = facts.tree
    root = tree.root if tree is not None else None
    compatible = root.compatible if root is not None else ()
    model = root.string("model") if root is not None else None
    if not model and facts.soc0_machine:
        model = facts.soc0_machine.strip() or None
    soc = soc_from_compatible(compatible)
    if soc is None and facts.soc0_soc_id:
        soc = soc_from_soc0(facts.soc0_soc_id)
    l4t = parse_l4t_release(facts.nv_tegra_release)
    is_tegra = bool(
        (soc and soc.startswith("tegra"))
        or l4t
        or (facts.soc0_family and facts.soc0_family.strip().lower() == "tegra")
    )
    problems = list(facts.errors)
    if facts.nv_tegra_release and not l4t:
        problems.append("/etc/nv_tegra_release: no '# R<major> (release), REVISION: x.y' line")
    return Inventory(
        board_model=model,
        board_compatible=compatible,
        soc=soc,
        is_tegra=is_tegra,
        l4t=l4t,
        jetpack=jetpack_for(l4t),
        memory_bytes=parse_meminfo_total(facts.meminfo),
        gpu=build_gpu(tree, soc, is_tegra, facts.dev_nodes),
        accelerators=find_accelerators(tree, facts.dev_nodes, facts.usb),
        devicetree_source=tree.source if tree is not None else None,
        devicetree_error=facts.tree_error,
        problems=tuple(problems),
        tree=tree,
    )
