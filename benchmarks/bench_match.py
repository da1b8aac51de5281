"""Benchmark BoxOrganMatcher.match against its own overlap call and a naive numpy matcher.

On the synthetic phantom (``make_phantom``, 128 x 256 x 256 by default, 64 x 128 x 128
with ``--quick``), with a fixed seed, warm-up and the median / min / max over repeats:

* ``overlap``: the single ``box_mask_overlap`` call the matcher makes (a lower bound);
* ``match``: the whole matcher (scores, candidates, tie rule, adjacency distances);
* ``naive``: per box, ``(crop == label).sum()`` for every label present, plus
  ``np.bincount`` of the whole volume for the organ sizes (what one writes first).

Cases: the phantom's 10 lesions as 3D boxes and as 2D key-slice boxes, and N = 100
random 3D boxes in the body (many of them in fat, exercising the distance path).
Prints one JSON object; ``--quick`` runs a smaller phantom and fewer repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

import numpy as np
from _timing import timeit


def _naive(boxes: np.ndarray, vol: np.ndarray, slices: np.ndarray | None) -> list[tuple[int, float]]:
    areas = np.bincount(vol.ravel())
    labels = np.flatnonzero(areas[1:]) + 1
    out = []
    for i, b in enumerate(boxes):
        if slices is None:
            x1, y1, z1, x2, y2, z2 = (int(v) for v in b)
            crop = vol[z1:z2, y1:y2, x1:x2]
        else:
            x1, y1, x2, y2 = (int(v) for v in b)
            crop = vol[int(slices[i]), y1:y2, x1:x2]
        best = (0, 0.0)
        for label in labels:
            inter = int((crop == label).sum())
            if inter and inter / crop.size > best[1]:
                best = (int(label), inter / crop.size)
        out.append(best)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small phantom, few repeats (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)

    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.geometry import box_mask_overlap
    from medcurric.testing import make_phantom

    shape = (64, 128, 128) if args.quick else (128, 256, 256)
    repeats = args.repeats or (3 if args.quick else 15)
    ph = make_phantom(seed=0, shape=shape)
    vol = ph.labels
    rng = np.random.default_rng(0)
    d, h, w = vol.shape
    lo = rng.uniform([w * 0.1, h * 0.2, 0], [w * 0.8, h * 0.7, d * 0.9], size=(100, 3))
    size = rng.uniform([4, 4, 2], [w * 0.15, h * 0.15, d * 0.1], size=(100, 3))
    hi = np.minimum(lo + size, [w, h, d])
    random_boxes = np.floor(np.concatenate([lo, hi], axis=1))

    matcher = BoxOrganMatcher(ph.class_map)
    cases = {
        "lesions_3d": (ph.lesion_boxes, None),
        "lesions_2d": (ph.key_slice_boxes, ph.key_slices),
        "random_3d_n100": (random_boxes, None),
    }
    results: dict[str, Any] = {}
    for name, (boxes, slices) in cases.items():
        def run_overlap(boxes: np.ndarray = boxes, slices: np.ndarray | None = slices) -> Any:
            return box_mask_overlap(boxes, vol, slice_index=slices)

        def run_match(boxes: np.ndarray = boxes, slices: np.ndarray | None = slices) -> Any:
            return matcher.match(boxes, vol, slice_index=slices, spacing=ph.spacing)

        def run_naive(boxes: np.ndarray = boxes, slices: np.ndarray | None = slices) -> Any:
            return _naive(boxes, vol, slices)

        o, m, n = (timeit(f, repeats) for f in (run_overlap, run_match, run_naive))
        matches = run_match()
        results[name] = {
            "n_boxes": len(boxes),
            "overlap": o,
            "match": m,
            "naive": n,
            "match_over_overlap": m["median_ms"] / o["median_ms"],
            "naive_over_match": n["median_ms"] / m["median_ms"],
            # the machine may be shared: minima are the least disturbed estimate
            "match_over_overlap_min": m["min_ms"] / o["min_ms"],
            "naive_over_match_min": n["min_ms"] / m["min_ms"],
            "outcomes": {k: sum(x.outcome == k for x in matches) for k in ("inside", "adjacent", "unmatched")},
        }
    out = {
        "benchmark": "match",
        "quick": bool(args.quick),
        "phantom_shape": list(shape),
        "spacing_mm": list(ph.spacing),
        "cases": results,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
