"""The doctor's data: a check result, and what every check may look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover - types only
    from edgeagent.config import Config, Options
    from edgeagent.discovery.inventory import Inventory
    from edgeagent.hostpaths import HostRoot

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
STATUSES = (PASS, WARN, FAIL, SKIP)


@dataclass(frozen=True)
class CheckResult:
    """One line of the report. ``detail`` is the evidence; ``fix`` is required for WARN/FAIL."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError("status must be one of %s" % (STATUSES,))
        if self.status in (WARN, FAIL) and not self.fix:
            raise ValueError("a %s result needs a fix: %s" % (self.status, self.check))

    def to_json(self) -> Dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail,
                "fix": self.fix}


@dataclass
class DoctorContext:
    """What checks read: the same host root and config as `run`, plus a shared scratch dict
    where one check may leave a fact for later ones (e.g. the API client it built)."""

    root: "HostRoot"
    config: "Config"              # checks read ``options``; reports may name ``config.sources``
    inventory: Optional["Inventory"] = None
    timeout: float = 1.5          # per network step; the whole doctor must finish in < 5 s
    facts: Dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> "Options":
        return self.config.options
