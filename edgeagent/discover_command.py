"""`edgeagent discover [--fdt FILE] [--json]`: print the hardware inventory and its labels.

Top-level, not in discovery/: it joins discovery and labels (labels import discovery's types),
and a command inside either package would tie the two into an import cycle."""

from __future__ import annotations

import argparse
import json
from typing import Dict, List, Tuple

from edgeagent.invocation import Invocation, discover_inventory
from edgeagent.labels.wanted import inventory_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fdt", metavar="FILE", help="read this raw DTB instead of the host tree")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def main(inv: Invocation) -> int:
    inventory = discover_inventory(inv.root, inv.args.fdt)
    labels = inventory_labels(inventory, inv.config.options.labels)
    if inv.args.json:
        doc = inventory.to_json()
        doc["labels"] = labels
        print(json.dumps(doc, indent=2, sort_keys=False))
        return 0
    print(render_inventory(inventory, labels))
    return 0


def render_inventory(inv, labels: Dict[str, str]) -> str:
    """The inventory for people: aligned "Field: value" lines."""
    rows: List[Tuple[str, str]] = []
    if not inv.has_devicetree:
        rows.append(("Devicetree", "none (not a devicetree host%s)" % (
            "" if not inv.devicetree_error else ": " + inv.devicetree_error)))
    else:
        rows.append(("Devicetree", inv.devicetree_source))
    rows.append(("Board", inv.board_model or "unknown"))
    if inv.board_compatible:
        rows.append(("Compatible", " ".join(inv.board_compatible)))
    rows.append(("SoC", (inv.soc or "unknown") + (" (NVIDIA Tegra)" if inv.is_tegra else "")))
    if inv.is_tegra or inv.l4t:
        rows.append(("L4T", "%s (JetPack %s)" % (inv.l4t or "not found", inv.jetpack or "unknown")))
    if inv.memory_bytes:
        rows.append(("Memory", "%.1f GiB" % (inv.memory_bytes / 2 ** 30)))
    if inv.gpu is None:
        rows.append(("GPU", "none found"))
    else:
        g = inv.gpu
        text = "%s %s, %s" % (g.path, " ".join(g.compatible), g.status)
        if g.family:
            text += ", %s, compute capability %s" % (g.family, g.compute_capability)
        rows.append(("GPU", text))
    if inv.accelerators:
        for i, a in enumerate(inv.accelerators):
            rows.append(("Accelerators" if i == 0 else "", "%s %s%s" % (
                a.kind, a.path, " (%s)" % a.device if a.device and a.device != a.path else "")))
    else:
        rows.append(("Accelerators", "none found"))
    for p in inv.problems:
        rows.append(("Problem", p))
    for i, (k, v) in enumerate(sorted(labels.items())):
        rows.append(("Labels" if i == 0 else "", "%s=%s" % (k, v)))
    width = max(len(k) for k, _ in rows) + 1
    return "\n".join(("%s:" % k if k else "").ljust(width + 1) + " " + v for k, v in rows)
