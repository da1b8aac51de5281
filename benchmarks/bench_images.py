"""Cost of the one image path: ``io.load_rgb`` and the data URL a generation backend sends.

For a 512 x 512 DeepLesion-style 16-bit PNG and a 512 x 512 8-bit RGB PNG, times (round
robin, same process) a bare Pillow decode (the floor), ``load_rgb`` (decode + window), the
backend's data URL (``load_rgb`` + PNG re-encode + base64, cache bypassed) and, for the
8-bit file, the former pass-through (file bytes + base64, which also sent the file's
metadata). Prints JSON.

    python benchmarks/bench_images.py [--quick] [--repeats 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import PIL
from _timing import cpu_model, ms_stats, round_robin
from PIL import Image

from medcurric.cot import _imaging
from medcurric.io import load_rgb


def _ct_slice(size: int, rng: np.random.Generator) -> np.ndarray:
    """A body-like HU slice: air, a soft-tissue disc, a brighter organ, noise."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    hu = np.full((size, size), -1000.0)
    hu[xx**2 + yy**2 < 0.16] = 40.0
    hu[(xx - 0.1) ** 2 + (yy + 0.05) ** 2 < 0.01] = 120.0
    return np.rint(hu + rng.normal(0, 15, hu.shape)).astype(np.int32)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    size, repeats = (64, 2) if args.quick else (512, args.repeats)
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="bench-images-"))
    ct = root / "ct.png"
    Image.fromarray((_ct_slice(size, rng) + 32768).astype(np.uint16)).save(ct)
    rgb = root / "rgb.png"
    Image.fromarray(np.repeat(_ct_slice(size, rng).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)).save(rgb)
    window = (-175.0, 275.0)
    uncached = _imaging._data_url_cached.__wrapped__

    def decode(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im)

    fns = {
        "ct_pil_decode": lambda: decode(ct),
        "ct_load_rgb": lambda: load_rgb(ct, window=window),
        "ct_data_url": lambda: uncached(str(ct), 0, 0, window),
        "rgb_pil_decode": lambda: decode(rgb),
        "rgb_load_rgb": lambda: load_rgb(rgb),
        "rgb_data_url": lambda: uncached(str(rgb), 0, 0, None),
        "rgb_pass_through_baseline": lambda: base64.b64encode(rgb.read_bytes()),
    }
    times = round_robin(fns, repeats)
    result: dict[str, object] = {name: ms_stats(t) for name, t in times.items()}
    result.update(
        size=size,
        ct_window_overhead=ms_stats(times["ct_load_rgb"])["median_ms"] / ms_stats(times["ct_pil_decode"])["median_ms"],
        rgb_data_url_vs_pass_through=ms_stats(times["rgb_data_url"])["median_ms"]
        / ms_stats(times["rgb_pass_through_baseline"])["median_ms"],
        cpu=cpu_model(),
        python=platform.python_version(),
        numpy=np.__version__,
        pillow=PIL.__version__,
    )
    for f in (ct, rgb):
        f.unlink()
    root.rmdir()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
