"""Timing helpers shared by the benchmark scripts (not part of the library).

The scripts import it as ``_timing``: running ``python benchmarks/bench_x.py`` puts this
folder first on ``sys.path``, and ``tests/benchmarks/conftest.py`` does the same for the
smoke tests.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def round_robin(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    *,
    before: Callable[[], Any] | None = None,
    measure: Callable[[Callable[[], Any]], float] | None = None,
) -> dict[str, list[float]]:
    """Time several functions in turn, each repeat calling every one once, so that
    they all see the same machine load.

    Args:
        fns: Name -> function to time.
        repeats: Timed calls of each function.
        warmup: Untimed rounds first.
        before: Called untimed before every timed call (e.g. ``gc.collect``).
        measure: ``fn -> time`` (default: wall-clock seconds of one call); a CUDA
            script passes one that times with events.

    Returns:
        Name -> the times of its calls, in order.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if before is not None:
                before()
            times[name].append(measure(fn) if measure is not None else _seconds(fn))
    return times


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms_stats(seconds: list[float]) -> dict[str, float]:
    """``median_ms``, ``min_ms``, ``max_ms`` and ``repeats`` of times given in seconds."""
    ms = [1e3 * t for t in seconds]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "repeats": len(ms),
    }


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; milliseconds per call.

    Returns:
        ``median_ms``, ``min_ms``, ``max_ms`` and ``repeats``.
    """
    return ms_stats(round_robin({"fn": fn}, repeats, warmup)["fn"])


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
