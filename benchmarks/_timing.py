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


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; milliseconds per call.

    Returns:
        ``median_ms``, ``min_ms``, ``max_ms`` and ``repeats``.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": repeats,
    }


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
