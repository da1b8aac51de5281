"""The private numba kernels' bit helper and uint8 word kernel against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.geometry import _kernels


def test_lowest_set_bit_of_every_single_bit() -> None:
    for i in range(64):
        assert _kernels.lowest_set_bit(np.uint64(1 << i)) == i


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**64 - 1))
def test_lowest_set_bit_matches_python_ints(x: int) -> None:
    # (x & -x) isolates the lowest set bit of Python's unbounded ints
    assert _kernels.lowest_set_bit(np.uint64(x)) == (x & -x).bit_length() - 1


def _counts_u8(vol: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    out = np.zeros((ranges.shape[0], 256), dtype=np.int64)
    flat = vol.reshape(-1)
    _kernels.box_label_counts_u8(
        flat.view(np.uint64), np.asarray(vol.shape, dtype=np.int64), ranges, out
    )
    return out


@pytest.mark.parametrize("labels", [(0, 1, 2), (0, 127, 128, 254, 255)])
@pytest.mark.parametrize("noise", [0.0, 0.2, 1.0])
def test_box_label_counts_u8_matches_bincount(labels: tuple[int, ...], noise: float) -> None:
    """Runs of labels with the high bit set, every row start and length across word edges."""
    rng = np.random.default_rng(len(labels))
    choice = np.asarray(labels, dtype=np.uint8)
    vol = np.repeat(rng.choice(choice, size=(3, 5, 8)), 5, axis=2)  # [3, 5, 40]
    flip = rng.random(vol.shape) < noise
    vol[flip] = rng.choice(choice, size=int(flip.sum()))
    rows = [
        (z0, z1, y0, y1, x0, x1)
        for x0 in range(41)
        for x1 in range(x0, min(40, x0 + 20) + 1)
        for z0, z1, y0, y1 in ((0, 3, 0, 5), (1, 2, 2, 4))
    ]
    ranges = np.asarray(rows, dtype=np.int64)
    got = _counts_u8(vol, ranges)
    for n, (z0, z1, y0, y1, x0, x1) in enumerate(rows):
        expect = np.bincount(vol[z0:z1, y0:y1, x0:x1].ravel(), minlength=256)
        np.testing.assert_array_equal(got[n], expect)
