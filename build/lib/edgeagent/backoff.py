"""Capped exponential backoff with full jitter (the AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random
from typing import Optional


class Backoff:
    """Delay sequence for retries: ``random(0, min(cap, base * 2**n))`` when jittered.

    ``reset()`` after a success. Jitter keeps a fleet that failed together from retrying together.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 300.0,
        jitter: bool = True,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.cap, self.base * (2 ** min(self.attempt, 62)))

    def next(self) -> float:
        """Return the next delay in seconds and advance."""
        ceiling = self.ceiling()
        self.attempt += 1
        return self._rng.uniform(0, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        self.attempt = 0
