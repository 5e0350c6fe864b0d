"""Run a parser on one input under a time and memory bound (for fuzz and hostile-input tests).

``bounded``: two runs of the same (deterministic) call: one timed with time.perf_counter,
untraced, since tracemalloc slows allocation-heavy code 10-40x; one under tracemalloc, whose peak
sees every bytes, str and dict the parser builds. ``within_memory``: one traced run, for tests
whose time bound is hypothesis' per-example deadline.
"""

import time
import tracemalloc
from typing import Any, Callable, Tuple, Type


def bounded(fn: Callable[[], Any], seconds: float, peak_bytes: int,
            expected: Tuple[Type[BaseException], ...] = ()) -> Any:
    """Call ``fn``; return its result, or the exception it raised when that is one of
    ``expected``. AssertionError when it took longer than ``seconds`` or its allocations
    peaked over ``peak_bytes``."""
    start = time.perf_counter()
    try:
        result = fn()
    except expected as e:
        result = e
    elapsed = time.perf_counter() - start
    assert elapsed <= seconds, "took %.2fs, over the %.2fs bound" % (elapsed, seconds)
    # A fresh trace: Python 3.8 has no tracemalloc.reset_peak().
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    tracemalloc.start()
    try:
        fn()
    except expected:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= peak_bytes, "allocated %.1f MiB at peak, over the %.1f MiB bound" % (
        peak / 2 ** 20, peak_bytes / 2 ** 20)
    return result


def within_memory(fn: Callable[[], Any], peak_bytes: int,
                  expected: Tuple[Type[BaseException], ...] = ()) -> Any:
    """Call ``fn`` once under tracemalloc; return its result, or the exception it raised when
    that is one of ``expected``. AssertionError when its allocations peaked over
    ``peak_bytes``."""
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    tracemalloc.start()
    try:
        try:
            result = fn()
        except expected as e:
            result = e
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= peak_bytes, "allocated %.1f MiB at peak, over the %.1f MiB bound" % (
        peak / 2 ** 20, peak_bytes / 2 ** 20)
    return result
