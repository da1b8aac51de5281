"""The library's torch kernels on one device (CUDA, or the CPU for a smoke run), with baselines.

Times, with CUDA events on a GPU (wall clock on the CPU), in one round robin so every
method sees the same load:

- ``label_histogram`` of a ``D x 512 x 512`` uint8 label map vs one read of the volume
  (``max``) and ``torch.bincount``; target: within 4x of the read.
- ``box_iou`` at ``N = M`` in {1000, 10000} vs filling the ``[N, M]`` output and
  torchvision's formulation (written out here); target: within 3x of the fill.
- ``draw_overlay`` on a ``[B, 3, H, W]`` uint8 batch in place vs one full-image alpha
  blend of the batch (``lerp`` of the whole tensor), the floor of any blend.

Prints one JSON object. ``--device cpu --quick`` is the smoke mode the tests run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _timing import cpu_model, round_robin

from medcurric.geometry import box_iou, label_histogram
from medcurric.overlay import OverlayStyle, draw_overlay


def _measure(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    if device.type != "cuda":

        def wall(fn: Callable[[], Any]) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        return wall

    def events(fn: Callable[[], Any]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3

    return events


def _ms(times: list[float]) -> dict[str, float]:
    ms = sorted(1e3 * t for t in times)
    return {"median": statistics.median(ms), "min": ms[0], "max": ms[-1]}


def _organ_volume(depth: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    """Blocky organs (ellipsoids of 30 labels) in a body: runs like a TotalSegmentator map."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:depth, :size, :size]
    vol = np.zeros((depth, size, size), np.uint8)
    for label in range(1, 31):
        c = rng.uniform([0, 0.2 * size, 0.2 * size], [depth, 0.8 * size, 0.8 * size])
        r = rng.uniform([depth / 8, size / 16, size / 16], [depth / 3, size / 6, size / 6])
        vol[((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1] = label
    return torch.from_numpy(vol).to(device)


def _torchvision_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b - inter)


def _boxes(n: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 900
    wh = torch.rand(n, 2, generator=g) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1).to(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--depth", type=int, default=300, help="label map slices (512 x 512 each)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="box_iou N = M")
    parser.add_argument("--images", type=int, default=64, help="overlay batch size")
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke run)")
    args = parser.parse_args(argv)
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if args.quick:
        args.depth, args.sizes, args.images, args.image_size, args.repeats = 4, [50], 4, 48, 3
    torch.set_num_threads(1)
    measure = _measure(device)
    out: dict[str, Any] = {
        "benchmark": "device_kernels",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }

    vol = _organ_volume(args.depth, 512 if not args.quick else 64, 0, device)
    assert torch.equal(label_histogram(vol).cpu(), torch.bincount(vol.flatten().long(), minlength=31).cpu()[: int(vol.max()) + 1])
    t = round_robin(
        {
            "read_max": lambda: vol.max(),
            "ours": lambda: label_histogram(vol),
            "bincount": lambda: torch.bincount(vol.flatten().long()),
        },
        args.repeats,
        measure=measure,
    )
    hist = {k: _ms(v) for k, v in t.items()}
    ratio = hist["ours"]["median"] / hist["read_max"]["median"]
    out["label_histogram"] = {
        "shape": list(vol.shape),
        "ms": hist,
        "ours_over_read": ratio,
        "bincount_over_read": hist["bincount"]["median"] / hist["read_max"]["median"],
        "target_within_4x_read": ratio <= 4.0,
    }

    out["box_iou"] = {}
    for n in args.sizes:
        a, b = _boxes(n, 1, device), _boxes(n, 2, device)
        torch.testing.assert_close(box_iou(a, b), _torchvision_iou(a, b), rtol=1e-4, atol=1e-6)
        buf = torch.empty(n, n, device=device)
        t = round_robin(
            {
                "fill": lambda buf=buf: buf.fill_(0.0),
                "ours": lambda a=a, b=b: box_iou(a, b),
                "torchvision_formulation": lambda a=a, b=b: _torchvision_iou(a, b),
            },
            args.repeats,
            measure=measure,
        )
        ms = {k: _ms(v) for k, v in t.items()}
        ratio = ms["ours"]["median"] / ms["fill"]["median"]
        out["box_iou"][str(n)] = {"ms": ms, "ours_over_fill": ratio, "target_within_3x_fill": ratio <= 3.0}

    g = torch.Generator().manual_seed(3)
    size = args.image_size
    batch = (torch.rand(args.images, 3, size, size, generator=g) * 255).to(torch.uint8).to(device)
    xy = torch.rand(args.images, 2, generator=g) * size * 0.6
    boxes = torch.cat([xy, xy + size * 0.2], dim=1).to(device)
    styles = [OverlayStyle(shape="rectangle" if i % 2 else "ellipse") for i in range(args.images)]
    work = batch.clone()
    red = torch.tensor([255, 0, 0], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    floor_src = batch.float()
    t = round_robin(
        {
            "ours_inplace": lambda: draw_overlay(work, boxes, styles, inplace=True),
            "full_blend_floor": lambda: floor_src.lerp_(red.expand_as(floor_src), 0.5),
        },
        args.repeats,
        measure=measure,
    )
    ms = {k: _ms(v) for k, v in t.items()}
    out["overlay"] = {
        "batch": [args.images, 3, size, size],
        "ms": ms,
        "ours_over_full_blend": ms["ours_inplace"]["median"] / ms["full_blend_floor"]["median"],
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
