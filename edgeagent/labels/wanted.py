"""The labels this node should carry, with the problems of dropped labels logged: what
`discover` and `labels` print. (Here, not in invocation.py: invocation is imported by the
labels command, so importing labels from it would tie the two into a cycle.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import LabelsOptions
    from edgeagent.discovery.inventory import Inventory


def inventory_labels(inventory: "Inventory", options: "LabelsOptions") -> Dict[str, str]:
    """The labels this node should carry; a label dropped as invalid is logged as a warning."""
    from edgeagent.labels.compute import compute_labels

    result = compute_labels(inventory, options)
    for problem in result.problems:
        logging.getLogger("edgeagent.labels").warning("%s", problem)
    return result.labels
