"""Benchmark medcurric.geometry kernels against naive and library baselines (one process).

Measures, with a fixed seed, warm-up and the median / min / max over repeats:

1. ``overlap_3d``: 3D boxes on a 512x512x300 uint8 volume with 100 labels
   (organs as Voronoi regions inside an ellipsoidal body), N = 1, 10, 100 boxes of
   10-120 voxels per side, against the naive per-label loop
   ``[(crop == l).sum() for l in range(L)]`` and ``np.bincount`` per crop.
2. ``histogram``: whole-volume organ sizes (``label_histogram``) against one read
   of the volume (``vol.max()``), ``np.bincount`` and OpenCV ``calcHist``, on the
   realistic volume and on iid noise (the worst case).
3. ``overlap_2d``: 2D boxes on a 512x512 map with 20 labels, N = 1..1000, both
   strategies (per-box crops, summed-area tables) and the automatic choice.
4. ``box_iou``: N = M = 1000 and 10000 float32 against filling the output array
   and torchvision's broadcasting formulation (written here with torch/numpy).

Compilation (numba, cached on disk) is timed separately as each kernel's first
call (``--cold`` points numba at an empty cache to time a real compile).
Prints one JSON object. ``--quick`` runs small sizes for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import cpu_model, timeit


def make_volume(shape: tuple[int, int, int], labels: int, seed: int = 0) -> np.ndarray:
    """Organs as Voronoi cells (labels 1..labels-1) inside an ellipsoidal body; 0 outside."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    low = tuple(max(4, s // 8) for s in shape)
    radii = np.array(low) * np.array([0.5, 0.42, 0.47])
    centre = np.array(low) / 2
    seeds = []
    while len(seeds) < labels - 1:  # seeds inside the body so that every label appears
        p = rng.uniform(0, 1, size=3) * np.array(low)
        if (((p - centre) / radii) ** 2).sum() < 0.8:
            seeds.append(p)
    grid = np.stack(np.meshgrid(*[np.arange(s) + 0.5 for s in low], indexing="ij"), -1).reshape(
        -1, 3
    )
    _, idx = cKDTree(np.array(seeds)).query(grid)
    lab = (idx + 1).astype(np.uint8).reshape(low)
    lab[((((grid - centre) / radii) ** 2).sum(1) > 1).reshape(low)] = 0
    # nearest-neighbour upsampling by a non-integer factor: organ borders fall anywhere
    zoom = [s / lo for s, lo in zip(shape, low, strict=True)]
    out = ndimage.zoom(lab, zoom, order=0, grid_mode=True, mode="nearest")
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def make_plane(shape: tuple[int, int], labels: int, seed: int = 0) -> np.ndarray:
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, 1, size=(labels, 2)) * np.array(shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) + 0.5 for s in shape], indexing="ij"), -1).reshape(
        -1, 2
    )
    _, idx = cKDTree(seeds).query(grid)
    return idx.astype(np.uint8).reshape(shape)


def random_boxes(
    rng: np.random.Generator, n: int, sizes_xyz: tuple[int, ...], lo: int, hi: int
) -> np.ndarray:
    k = len(sizes_xyz)
    size = rng.integers(lo, hi + 1, size=(n, k))
    size = np.minimum(size, np.array(sizes_xyz))
    start = rng.integers(0, np.array(sizes_xyz) - size + 1)
    return np.concatenate([start, start + size], axis=1).astype(np.float64)


def naive_overlap(boxes: np.ndarray, lab: np.ndarray, num_labels: int) -> np.ndarray:
    out = np.zeros((len(boxes), num_labels), dtype=np.int64)
    k = lab.ndim
    for n, b in enumerate(boxes.astype(int)):
        crop = lab[tuple(slice(b[k - 1 - a], b[2 * k - 1 - a]) for a in range(k))]
        out[n] = [(crop == label).sum() for label in range(num_labels)]
    return out


def bincount_overlap(boxes: np.ndarray, lab: np.ndarray, num_labels: int) -> np.ndarray:
    out = np.zeros((len(boxes), num_labels), dtype=np.int64)
    k = lab.ndim
    for n, b in enumerate(boxes.astype(int)):
        crop = lab[tuple(slice(b[k - 1 - a], b[2 * k - 1 - a]) for a in range(k))]
        out[n] = np.bincount(crop.ravel(), minlength=num_labels)[:num_labels]
    return out


def torchvision_iou_torch(b1: Any, b2: Any) -> Any:
    """torchvision.ops.box_iou's formulation (broadcasting), written with torch."""
    import torch

    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = torch.max(b1[:, None, :2], b2[:, :2])
    rb = torch.min(b1[:, None, 2:], b2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def torchvision_iou_numpy(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = np.maximum(b1[:, None, :2], b2[:, :2])
    rb = np.minimum(b1[:, None, 2:], b2[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def bench_compile() -> dict[str, Any]:
    """First call of each public kernel on tiny inputs: compile or cache load."""
    from medcurric.geometry import box_iou, box_mask_overlap, label_histogram

    tiny = np.zeros((2, 4, 8), dtype=np.uint8)
    calls: dict[str, Callable[[], Any]] = {
        "label_histogram_uint8": lambda: label_histogram(tiny),
        "box_mask_overlap_3d_uint8": lambda: box_mask_overlap([[0, 0, 0, 3, 3, 1]], tiny),
        "box_mask_overlap_2d_uint8_sat": lambda: box_mask_overlap(
            np.tile([[0.0, 0.0, 8.0, 4.0]], (200, 1)), tiny[0]
        ),
        "box_iou_float32": lambda: box_iou(
            np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)
        ),
    }
    out: dict[str, Any] = {}
    for name, fn in calls.items():
        start = time.perf_counter()
        fn()
        out[name + "_s"] = time.perf_counter() - start
    out["numba_cache_dir"] = os.environ.get("NUMBA_CACHE_DIR", "(next to the sources)")
    return out


def bench_overlap_3d(quick: bool, rng: np.random.Generator) -> dict[str, Any]:
    from medcurric.geometry import box_mask_overlap, label_histogram

    shape = (40, 96, 96) if quick else (300, 512, 512)
    labels = 100
    vol = make_volume(shape, labels)
    sizes_xyz = tuple(reversed(shape))
    lo, hi = (4, 30) if quick else (10, 120)
    hist = label_histogram(vol, labels)
    results: dict[str, Any] = {
        "shape_zyx": list(shape),
        "labels": labels,
        "box_side": [lo, hi],
        "runs": {},
    }
    for n in (1, 10) if quick else (1, 10, 100):
        boxes = random_boxes(rng, n, sizes_xyz, lo, hi)
        ref = naive_overlap(boxes, vol, labels)
        got = box_mask_overlap(boxes, vol, num_labels=labels, label_area=hist)
        assert np.array_equal(ref, got.intersection), "kernel disagrees with the naive loop"
        reps_naive = 1 if (n >= 100 and not quick) else 3
        naive = timeit(lambda b=boxes: naive_overlap(b, vol, labels), reps_naive, warmup=0)
        binc = timeit(lambda b=boxes: bincount_overlap(b, vol, labels), 3)
        ours = timeit(
            lambda b=boxes: box_mask_overlap(b, vol, num_labels=labels, label_area=hist), 15
        )
        full = timeit(lambda b=boxes: box_mask_overlap(b, vol, num_labels=labels), 5)
        voxels = int(np.prod(boxes[:, 3:] - boxes[:, :3], axis=1).sum())
        results["runs"][str(n)] = {
            "box_voxels": voxels,
            "naive_per_label_loop": naive,
            "bincount_per_crop": binc,
            "ours_intersection": ours,
            "ours_with_label_area": full,
            "speedup_vs_naive": naive["median_ms"] / ours["median_ms"],
            "speedup_vs_naive_of_min": naive["min_ms"] / ours["min_ms"],
            "speedup_vs_bincount": binc["median_ms"] / ours["median_ms"],
            "speedup_vs_naive_incl_label_area": naive["median_ms"] / full["median_ms"],
        }
    return results


def bench_histogram(quick: bool) -> dict[str, Any]:
    from medcurric.geometry import label_histogram

    shape = (40, 96, 96) if quick else (300, 512, 512)
    reps = 3 if quick else 7
    out: dict[str, Any] = {"shape_zyx": list(shape)}
    realistic = make_volume(shape, 100)
    noise = np.random.default_rng(1).integers(0, 100, size=shape, dtype=np.uint8)
    try:
        import cv2
    except ImportError:  # pragma: no cover - optional baseline
        cv2 = None
    for name, vol in (("realistic", realistic), ("iid_noise", noise)):
        assert np.array_equal(label_histogram(vol, 256), np.bincount(vol.ravel(), minlength=256))
        entry: dict[str, Any] = {
            "read_once_max": timeit(vol.max, reps),
            "ours": timeit(lambda v=vol: label_histogram(v), reps),
            "np_bincount": timeit(
                lambda v=vol: np.bincount(v.ravel(), minlength=256), 1 if not quick else 2
            ),
        }
        if cv2 is not None:
            flat2d = vol.reshape(-1, vol.shape[-1])
            entry["cv2_calcHist"] = timeit(
                lambda f=flat2d: cv2.calcHist([f], [0], None, [256], [0, 256]), 3
            )
        base = entry["read_once_max"]["median_ms"]
        entry["ratio_ours_vs_max"] = entry["ours"]["median_ms"] / base
        entry["ratio_ours_vs_max_of_min"] = (
            entry["ours"]["min_ms"] / entry["read_once_max"]["min_ms"]
        )
        entry["ratio_bincount_vs_max"] = entry["np_bincount"]["median_ms"] / base
        if "cv2_calcHist" in entry:
            entry["ratio_cv2_vs_max"] = entry["cv2_calcHist"]["median_ms"] / base
        out[name] = entry
    return out


def bench_overlap_2d(quick: bool, rng: np.random.Generator) -> dict[str, Any]:
    from medcurric.geometry import box_mask_overlap
    from medcurric.geometry import overlap as ov
    from medcurric.geometry.boxes import _axis_sizes, _pixel_ranges

    shape = (128, 128) if quick else (512, 512)
    labels = 20
    lab = make_plane(shape, labels)
    vol = lab[None]
    lo, hi = (4, 40) if quick else (10, 120)
    out: dict[str, Any] = {
        "shape_yx": list(shape),
        "labels": labels,
        "box_side": [lo, hi],
        "runs": {},
    }
    for n in (1, 10, 100) if quick else (1, 10, 100, 1000):
        boxes = random_boxes(rng, n, tuple(reversed(shape)), lo, hi)
        ranges = ov._kernel_ranges(_pixel_ranges(boxes, _axis_sizes(shape, 2)))
        ref = naive_overlap(boxes, lab, labels)
        assert np.array_equal(ref, box_mask_overlap(boxes, lab, num_labels=labels).intersection)
        crop = timeit(lambda r=ranges: ov._counts_np(vol, r, labels, plane=0, strategy="crop"), 9)
        sat = timeit(lambda r=ranges: ov._counts_np(vol, r, labels, plane=0, strategy="sat"), 9)
        auto = timeit(lambda b=boxes: box_mask_overlap(b, lab, num_labels=labels), 9)
        naive = timeit(lambda b=boxes: naive_overlap(b, lab, labels), 3)
        out["runs"][str(n)] = {
            "naive_per_label_loop": naive,
            "ours_auto": auto,
            "crop_kernel": crop,
            "sat_kernel": sat,
            "auto_picks": "sat" if ov._use_sat(ranges, shape, labels) else "crop",
            "speedup_auto_vs_naive": naive["median_ms"] / auto["median_ms"],
            "speedup_auto_vs_naive_of_min": naive["min_ms"] / auto["min_ms"],
        }
    return out


def _bench_iou_size(n: int, rng: np.random.Generator) -> dict[str, Any]:
    import torch

    from medcurric.geometry import box_iou

    xy = rng.uniform(0, 500, size=(n, 2))
    wh = rng.uniform(1, 60, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    other = boxes[rng.permutation(n)]
    big = n >= 10000
    reps = 3 if big else 15
    tb, to = torch.from_numpy(boxes), torch.from_numpy(other)
    ref = torchvision_iou_torch(tb, to).numpy()
    assert np.allclose(box_iou(boxes, other), ref, atol=1e-5)
    ours = timeit(lambda: box_iou(boxes, other), reps)
    fill = timeit(lambda: np.empty((n, n), dtype=np.float32).fill(0), reps)
    zeros = timeit(lambda: np.zeros((n, n), dtype=np.float32), reps)
    tv_torch = timeit(
        lambda: torchvision_iou_torch(tb, to), 1 if big else 5, warmup=0 if big else 1
    )
    entry: dict[str, Any] = {
        "ours": ours,
        "ours_torch_cpu_tensors": timeit(lambda: box_iou(tb, to), reps),
        "fill_empty": fill,
        "np_zeros_lazy_calloc": zeros,
        "torchvision_formulation_torch": tv_torch,
        "ratio_ours_vs_fill": ours["median_ms"] / fill["median_ms"],
        "ratio_ours_vs_fill_of_min": ours["min_ms"] / fill["min_ms"],
        "ratio_torchvision_vs_fill": tv_torch["median_ms"] / fill["median_ms"],
    }
    if not big:
        tvn = timeit(lambda: torchvision_iou_numpy(boxes, other), 3)
        entry["torchvision_formulation_numpy"] = tvn
        entry["ratio_torchvision_numpy_vs_fill"] = tvn["median_ms"] / fill["median_ms"]
    return entry


def bench_box_iou(quick: bool, rng: np.random.Generator) -> dict[str, Any]:
    sizes = (100, 300) if quick else (1000, 10000)
    return {"dtype": "float32", "runs": {str(n): _bench_iou_size(n, rng) for n in sizes}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="time a real numba compile (empty cache; new process only)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["overlap_3d", "histogram", "overlap_2d", "box_iou"],
        help="run only these parts",
    )
    args = parser.parse_args(argv)
    if args.cold and "numba" not in sys.modules:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="medcurric-numba-")
    import numba
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    parts = args.only or ["overlap_3d", "histogram", "overlap_2d", "box_iou"]
    result: dict[str, Any] = {
        "meta": {
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "quick": args.quick,
            "seed": 0,
        },
        "compile": bench_compile(),
    }
    if "overlap_3d" in parts:
        result["overlap_3d"] = bench_overlap_3d(args.quick, rng)
    if "histogram" in parts:
        result["histogram"] = bench_histogram(args.quick)
    if "overlap_2d" in parts:
        result["overlap_2d"] = bench_overlap_2d(args.quick, rng)
    if "box_iou" in parts:
        result["box_iou"] = bench_box_iou(args.quick, rng)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
