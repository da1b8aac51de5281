"""Throughput of the segmentation-error audit (``medcurric audit``), in lesions per second.

DeepLesion-like setting: 2D lesion boxes on key slices of 512 x 512 CT volumes
with TotalSegmentator labels (synthetic phantoms at DeepLesion resolution), the
default grid of 15 perturbations, the default matcher. The baseline, measured in
the same run, is the straightforward audit: perturb the whole label map for every
perturbation and re-match on it. Prints one JSON object.

Usage: python benchmarks/bench_audit.py [--quick] [--lesions N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

from medcurric.anatomy import BoxOrganMatcher
from medcurric.io import LabelMap
from medcurric.review.audit import DEFAULT_PERTURBATIONS, audit_matching, perturb_labels
from medcurric.testing import make_phantom

DEEPLESION_LESIONS = 32_735


def _cases(n_volumes: int, shape: tuple[int, int, int]):
    cases = []
    for seed in range(n_volumes):
        ph = make_phantom(seed=seed, shape=shape)
        cases.append((ph.label_map(), list(ph.key_slice_lesions)))
    return cases


def _naive(cases, matcher) -> int:
    """Perturb the whole volume per perturbation, then match every lesion on it."""
    n = 0
    for lm, lesions in cases:
        boxes = np.array([r.box for r in lesions])
        slices = [r.slice_index for r in lesions]
        matcher.match(boxes, lm, slice_index=slices, clip=True)
        for k, p in enumerate(DEFAULT_PERTURBATIONS):
            direction = np.array([0.0, np.sin(k), np.cos(k)])
            arr = perturb_labels(lm.array, p, spacing=lm.spacing, class_map=lm.class_map, direction=direction)
            matcher.match(boxes, LabelMap(arr, lm.class_map, spacing=lm.spacing), slice_index=slices, clip=True)
        n += len(lesions)
    return n


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--volumes", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    shape = (32, 96, 96) if args.quick else (48, 512, 512)
    n_vol = args.volumes or (1 if args.quick else 4)
    repeats = 1 if args.quick else args.repeats
    cases = _cases(n_vol, shape)
    matcher = BoxOrganMatcher(cases[0][0].class_map)
    audit_matching(cases[:1], matcher, progress=False)  # warm-up (numba compile)
    n_lesions = sum(len(les) for _, les in cases)
    fast, slow = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        audit_matching(cases, matcher, progress=False)
        fast.append(time.perf_counter() - t)
    for _ in range(1):  # the naive audit is slow; one run is enough for the ratio
        t = time.perf_counter()
        _naive(cases, matcher)
        slow.append(time.perf_counter() - t)
    fast_med, slow_med = statistics.median(fast), statistics.median(slow)
    result = {
        "benchmark": "audit",
        "volume_shape": list(shape),
        "volumes": n_vol,
        "lesions": n_lesions,
        "perturbations": len(DEFAULT_PERTURBATIONS),
        "audit_s": {"median": fast_med, "min": min(fast), "max": max(fast), "runs": repeats},
        "naive_s": {"median": slow_med, "runs": len(slow)},
        "lesions_per_s": n_lesions / fast_med,
        "naive_lesions_per_s": n_lesions / slow_med,
        "speedup_vs_naive": slow_med / fast_med,
        "deeplesion_minutes_estimate": DEEPLESION_LESIONS / (n_lesions / fast_med) / 60.0,
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
