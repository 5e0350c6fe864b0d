"""``json.loads`` for text from outside the agent, with its nesting bounded first.

CPython's C decoder recurses once per nested array or object. Deep input ends in RecursionError
on current Pythons, but on Python 3.8 (JetPack 5's) a document nested past the recursion limit
can end the process instead: "Fatal Python error: Cannot recover from stack overflow" (found by
the fuzz tests, with the limit raised as hypothesis raises it). API server bodies, the
kubelet's checkpoint, runtime configs and CDI specs are read through :func:`loads`, which
refuses a document nested deeper than :data:`MAX_DEPTH` with a ValueError, as a malformed one.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# Kubernetes objects nest about 15 levels, CDI specs and runtime configs fewer; far below the
# recursion limit whatever the caller's own depth.
MAX_DEPTH = 200
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class TooDeep(ValueError):
    """The document nests deeper than allowed (a ValueError, as json's own errors are)."""


def nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, brackets inside strings aside."""
    brackets = _STRING.sub("", text).encode("utf-8", "replace").translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def loads(text: str, **kwargs: Any) -> Any:
    """``json.loads(text, **kwargs)``; :class:`TooDeep` past :data:`MAX_DEPTH` levels."""
    # Counting is C-speed; the walk over the brackets only when there are enough to matter.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        depth = nesting(text)
        if depth > MAX_DEPTH:
            raise TooDeep("JSON nested too deep: %d levels (at most %d)" % (depth, MAX_DEPTH))
    return json.loads(text, **kwargs)
