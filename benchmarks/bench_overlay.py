"""Benchmark StageOverlay drawing against VIP-LLaVA's PIL RGBA compositing (one process).

64 images of 336 x 336 x 3 uint8, one prompt each (rectangles and ellipses
alternating), random boxes of 16-160 px, random VIP-LLaVA styles (line width 2-8 px,
alpha 96-255, nine colours); every method draws the same boxes with the same styles.

Methods (all timed per batch of 64 images; fixed seed, warm-up, median / min / max
over repeats):

* ``pil_rgba_composite``: VIP-LLaVA's way, per image: a transparent RGBA layer,
  ``ImageDraw.rectangle/ellipse`` with an RGBA outline, ``Image.alpha_composite``,
  back to RGB (from PIL images prepared beforehand, to PIL images).
* ``pil_draw_opaque``: ``ImageDraw`` straight on the RGB images (no alpha), for context.
* ``cv2_opaque``: ``cv2.rectangle`` / ``cv2.ellipse`` in place, no alpha, for context.
* ``copy_numpy`` / ``copy_torch``: a plain copy of the batch (the floor of any
  method that returns new images).
* ``blend_only_floor``: the blending alone, in place: the same pixels that ours
  changes, blended with the library's own span kernel and prefetching, from
  per-byte opacities computed beforehand (no coverage, no geometry). A floor for
  any in-place kernel built this way, to read ``target_speedup`` against; its output
  is checked against ours (``blend_only_floor_bytes_equal``).
* ``ours_*``: :func:`medcurric.overlay.draw_overlay`, alpha-blended and anti-aliased,
  on the numpy ``[B, H, W, 3]`` batch and the torch ``[B, 3, H, W]`` uint8 batch,
  in place and as a copy; ``ours_torch_ops_*`` forces the pure-torch rasteriser
  (the one that runs on CUDA) on the CPU.

Prints one JSON object. ``--quick`` uses few repeats for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _timing import cpu_model, ms_stats, round_robin, timeit


def _workload(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    from medcurric.overlay import RandomStyle

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    wh = rng.uniform(16, 160, size=(n, 2))
    xy = rng.uniform(0, 1, size=(n, 2)) * (size - wh)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    policy = RandomStyle(shapes=("rectangle", "ellipse"))
    styles = [
        s.__class__(**{**s.to_dict(), "shape": ("rectangle", "ellipse")[i % 2]})
        for i, s in enumerate(policy.sample_many(n, rng))
    ]
    return images, boxes, styles


def _pil_params(boxes: np.ndarray, styles: list[Any], size: int) -> list[tuple[Any, ...]]:
    """VIP-LLaVA's drawing arguments (integer width, 0-255 alpha) for the same strokes.

    PIL strokes run inwards from the given outline box, ours are centred on a line
    half a width outside the lesion box: the outline box is grown by one width so
    both draw the same pixels (up to anti-aliasing).
    """
    out = []
    for b, s in zip(boxes, styles, strict=True):
        lw = max(round(s.width * size / 336), 1)
        rgba = (*s.rgb, round(s.alpha * 255))
        c = (b[:2] + b[2:]) / 2
        half = (b[2:] - b[:2]) / 2 * (s.scale if s.shape.value == "ellipse" else 1.0) + lw
        lo, hi = c - half, c + half - 1  # PIL's outline box is inclusive
        out.append(
            (s.shape.value, [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])], rgba, lw)
        )
    return out


def _floor_runs(
    boxes: np.ndarray, styles: list[Any], size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs ``[n, 5]`` (image, row, first x, pixels, offset), per-byte opacities and colours.

    The runs are the pixels the library's coverage (torch formulas, float64) gives a
    non-zero 8-bit opacity, row by row; opacities and colours are uint8 per byte,
    laid out as the library's uint8 span kernels read them.
    """
    from medcurric.overlay import _raster, draw

    packed = draw._pack(styles)
    prims = _raster.outlines(boxes, packed, draw._RECT_CODE, draw._ELLIPSE_CODE, (size, size))
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    cov = _raster._coverage_torch(
        torch.as_tensor(prims[:, 0]),
        centres.view(1, 1, -1),
        centres.view(1, -1, 1),
        {_raster.BOX, _raster.ELLIPSE},
    ).numpy()
    ai = np.floor(cov * packed[:, 7, None, None] * 255.0 + 0.5).astype(np.int64)
    on = np.pad(ai > 0, ((0, 0), (0, 0), (1, 1))).reshape(-1, size + 2)
    edges = np.diff(on.astype(np.int8), axis=1)
    row_s, x_s = np.nonzero(edges == 1)
    _, x_e = np.nonzero(edges == -1)
    n = x_e - x_s
    offsets = 3 * np.concatenate([[0], np.cumsum(n)[:-1]])
    runs = np.stack([row_s // size, row_s % size, x_s, n, offsets], axis=1).astype(np.int64)
    flat_ai = ai.reshape(-1, size)
    ab = np.concatenate(
        [flat_ai[r, x : x + k] for r, x, k in zip(row_s, x_s, n, strict=True)]
    ).repeat(3)
    colours = np.tile(packed[:, 4:7], (1, size)).astype(np.uint8)
    return runs, ab.astype(np.uint8), colours


def _floor_kernel() -> Callable[..., None]:
    """The blend-only replay: the library's span blend and prefetch over precomputed runs."""
    import numba

    from medcurric.overlay._raster import _mix_span, _prefetch_px

    ahead = 16  # runs; the library's kernels look 8 rows (about 16 spans) ahead

    @numba.njit(nogil=True, error_model="numpy")
    def replay(img, flat, runs, ab, colours):  # type: ignore[no-untyped-def]
        h, w = img.shape[1], img.shape[2]
        for i in range(runs.shape[0]):
            if i + ahead < runs.shape[0]:
                r = runs[i + ahead]
                _prefetch_px(img, r[0], r[1], r[2], r[2] + r[3])
            b, y, x, n, off = runs[i, 0], runs[i, 1], runs[i, 2], runs[i, 3], runs[i, 4]
            _mix_span(flat, ((b * h + y) * w + x) * 3, ab, off, colours[b], 0, 3 * n)

    return replay  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 40)
    torch.set_num_threads(1)

    from PIL import Image, ImageDraw

    from medcurric.overlay import draw_overlay

    images, boxes, styles = _workload(args.images, args.size, args.seed)
    pil_images = [Image.fromarray(im) for im in images]
    params = _pil_params(boxes, styles, args.size)

    def pil_rgba() -> list[Any]:
        out = []
        for img, (shape, coords, rgba, lw) in zip(pil_images, params, strict=True):
            layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
            draw = ImageDraw.Draw(layer)
            if shape == "ellipse":
                draw.ellipse(coords, outline=rgba, width=lw)
            else:
                draw.rectangle(coords, outline=rgba, width=lw)
            out.append(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))
        return out

    opaque_images = [im.copy() for im in pil_images]

    def pil_opaque() -> None:
        for img, (shape, coords, rgba, lw) in zip(opaque_images, params, strict=True):
            draw = ImageDraw.Draw(img)
            if shape == "ellipse":
                draw.ellipse(coords, outline=rgba[:3], width=lw)
            else:
                draw.rectangle(coords, outline=rgba[:3], width=lw)

    runs, floor_ab, floor_colours = _floor_runs(boxes, styles, args.size)
    replay = _floor_kernel()
    floor_np = images.copy()
    floor_flat = floor_np.reshape(-1)

    def blend_only_floor() -> None:
        replay(floor_np, floor_flat, runs, floor_ab, floor_colours)

    batch_np = images.copy()
    batch_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    work_np = batch_np.copy()
    work_t = batch_t.clone()
    fns: dict[str, Callable[[], Any]] = {
        "pil_rgba_composite": pil_rgba,
        "pil_draw_opaque": pil_opaque,
    }
    try:
        import cv2

        cv_images = images.copy()
        ib = boxes.round().astype(int)

        def cv2_opaque() -> None:
            for img, b, (shape, _, rgba, lw) in zip(cv_images, ib, params, strict=True):
                if shape == "ellipse":
                    c = (int((b[0] + b[2]) // 2), int((b[1] + b[3]) // 2))
                    axes = (int((b[2] - b[0]) // 2), int((b[3] - b[1]) // 2))
                    cv2.ellipse(img, c, axes, 0, 0, 360, rgba[:3], lw)
                else:
                    cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), rgba[:3], lw)

        fns["cv2_opaque"] = cv2_opaque
    except ImportError:  # pragma: no cover - optional baseline
        pass
    fns.update(
        {
            "copy_numpy": lambda: batch_np.copy(),
            "copy_torch": lambda: batch_t.clone(),
            "blend_only_floor": blend_only_floor,
            "ours_numpy_inplace": lambda: draw_overlay(work_np, boxes, styles, inplace=True),
            "ours_numpy_copy": lambda: draw_overlay(batch_np, boxes, styles),
            "ours_torch_uint8_inplace": lambda: draw_overlay(work_t, boxes, styles, inplace=True),
            "ours_torch_uint8_copy": lambda: draw_overlay(batch_t, boxes, styles),
        }
    )
    results: dict[str, Any]
    seconds = round_robin(fns, repeats, warmup=2)
    results = {k: ms_stats(v) for k, v in seconds.items()}
    raw = {k: [1e3 * t for t in v] for k, v in seconds.items()}
    results.setdefault("cv2_opaque", None)
    results["ours_torch_ops_inplace"] = timeit(
        lambda: draw_overlay(work_t, boxes, styles, inplace=True, backend="torch"),
        1 if args.quick else max(3, repeats // 4),
        warmup=1,
    )

    # same pixels? compare ours with the PIL composite on fully covered stroke pixels
    ours = draw_overlay(batch_np, boxes, styles)
    pil = np.stack([np.asarray(im) for im in pil_rgba()])
    changed_ours = (ours != images).any(-1)
    changed_pil = (pil != images).any(-1)
    agreement = float(
        (changed_ours & changed_pil).sum() / max((changed_ours | changed_pil).sum(), 1)
    )

    # the floor blends the same bytes as ours (up to coverage rounding, float32 vs 64)
    floor_once = images.copy()
    replay(floor_once, floor_once.reshape(-1), runs, floor_ab, floor_colours)
    floor_equal = float((floor_once == ours).mean())

    # paired: each repeat timed PIL and ours back to back; the median of the ratios
    pil_times = raw["pil_rgba_composite"]
    speedups = {
        k: statistics.median(p / max(o, 1e-9) for p, o in zip(pil_times, v, strict=True))
        for k, v in raw.items()
        if k.startswith("ours_") or k == "blend_only_floor"
    }
    speedups["ours_torch_ops_inplace"] = (
        results["pil_rgba_composite"]["median_ms"] / results["ours_torch_ops_inplace"]["median_ms"]
    )
    out = {
        "meta": {
            "quick": args.quick,
            "images": args.images,
            "size": args.size,
            "shapes": ["rectangle", "ellipse"],
            "seed": args.seed,
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
        },
        "results": results,
        "speedup_vs_pil_rgba": speedups,
        "target_speedup": 30.0,
        "meets_target_inplace": speedups.get("ours_numpy_inplace", 0.0) >= 30.0,
        "meets_target_copy": speedups.get("ours_numpy_copy", 0.0) >= 30.0,
        "stroke_pixel_iou_vs_pil": agreement,
        "blend_only_floor_bytes_equal": floor_equal,
        "blend_only_floor_runs": int(runs.shape[0]),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
