"""Shared hypothesis strategies (append new ones; keep existing names stable).

pytest runs in importlib import mode, so ``tests/`` is not on ``sys.path`` by
default. A test module imports this file with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    from strategies import boxes_in_image
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "boxes_in_image",
    "float_boxes",
    "label_maps",
]

# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


@st.composite
def boxes_in_image(
    draw: st.DrawFn,
    image_shape: tuple[int, ...],
    *,
    min_boxes: int = 0,
    max_boxes: int = 6,
    integer: bool = False,
) -> np.ndarray:
    """xyxy boxes inside ``image_shape`` ((H, W) -> [N, 4], (D, H, W) -> [N, 6]), float64.

    Corners are fractional (quarter pixels, so centre-rule ties occur) unless
    ``integer``; zero-size boxes happen.
    """
    sizes = list(reversed(image_shape))  # x, y(, z)
    n = draw(st.integers(min_boxes, max_boxes))
    step = 1.0 if integer else 0.25
    rows = []
    for _ in range(n):
        lo, hi = [], []
        for s in sizes:
            ticks = int(s / step)
            a = draw(st.integers(0, ticks)) * step
            b = draw(st.integers(0, ticks)) * step
            lo.append(min(a, b))
            hi.append(max(a, b))
        rows.append(lo + hi)
    return np.asarray(rows, dtype=np.float64).reshape(n, 2 * len(sizes))


@st.composite
def float_boxes(
    draw: st.DrawFn, *, dims: int = 2, min_boxes: int = 0, max_boxes: int = 8, span: float = 50.0
) -> np.ndarray:
    """Arbitrary valid (finite, non-inverted) xyxy boxes, possibly negative or zero-size."""
    n = draw(st.integers(min_boxes, max_boxes))
    coord = st.floats(-span, span, allow_nan=False, allow_infinity=False, width=32)
    size = st.one_of(st.just(0.0), st.floats(0, span, allow_nan=False, width=32))
    rows = []
    for _ in range(n):
        lo = [draw(coord) for _ in range(dims)]
        ext = [draw(size) for _ in range(dims)]
        rows.append(lo + [a + e for a, e in zip(lo, ext, strict=True)])
    return np.asarray(rows, dtype=np.float64).reshape(n, 2 * dims)


@st.composite
def label_maps(
    draw: st.DrawFn,
    *,
    ndim: int = 2,
    max_side: int = 12,
    max_label: int = 5,
    dtype: type | np.dtype = np.uint8,
) -> np.ndarray:
    """Small label maps made of a few axis-aligned blocks (runs) plus some noise pixels."""
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype=np.int64)
    for _ in range(draw(st.integers(0, 4))):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a, s + 1)) for a, s in zip(lo, shape, strict=True)]
        lab[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = rng.integers(
            0, max_label + 1
        )
    if draw(st.booleans()):
        noise = rng.random(shape) < 0.2
        lab[noise] = rng.integers(0, max_label + 1, size=int(noise.sum()))
    return lab.astype(dtype)
