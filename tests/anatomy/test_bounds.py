"""label_bounds_3d (word-at-a-time label extents) against a brute-force argwhere reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.anatomy._bounds import _bounds, label_bounds_3d

DTYPES = (np.uint8, np.uint16, np.int32, np.int64, np.bool_)


def _reference(a: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full((n, 3), -1, dtype=np.int64)
    hi = np.full((n, 3), -1, dtype=np.int64)
    for v in range(1, n):
        idx = np.argwhere(a == v)
        if len(idx):
            lo[v], hi[v] = idx.min(axis=0), idx.max(axis=0)
    return lo, hi


@st.composite
def _label_maps(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    top = 2 if dtype == np.bool_ else 6
    shape = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 4)),
        8 * draw(st.integers(1, 4)) + draw(st.sampled_from([0, 0, 0, 3])),
    )
    a = np.zeros(shape, dtype=np.int64)
    # runs that fill whole words, start/end mid-word and touch each other
    for _ in range(draw(st.integers(0, 6))):
        z, y, x = (draw(st.integers(0, s - 1)) for s in shape)
        a[z : z + draw(st.integers(1, 2)), y : y + draw(st.integers(1, 3)),
          x : x + draw(st.integers(1, 24))] = draw(st.integers(0, top - 1))
    if draw(st.booleans()):  # scattered single voxels
        for _ in range(draw(st.integers(1, 5))):
            a[tuple(draw(st.integers(0, s - 1)) for s in shape)] = draw(st.integers(0, top - 1))
    return a.astype(dtype)


@settings(max_examples=300, deadline=None)
@given(_label_maps())
def test_bounds_match_brute_force(a: np.ndarray) -> None:
    n = 6
    lo, hi = label_bounds_3d(a, n)
    ref_lo, ref_hi = _reference(a.astype(np.int64), n)
    np.testing.assert_array_equal(lo, ref_lo)
    np.testing.assert_array_equal(hi, ref_hi)


def test_word_path_equals_scalar_path_on_noise_and_blocks() -> None:
    rng = np.random.default_rng(3)
    for a in (
        rng.integers(0, 4, (4, 5, 64)).astype(np.uint8),  # words rarely uniform
        np.repeat(rng.integers(0, 4, (4, 5, 8)), 8, axis=2).astype(np.uint8),  # all uniform
        np.repeat(rng.integers(0, 4, (3, 4, 6)), 4, axis=2).astype(np.uint16),
    ):
        assert a.flags.c_contiguous
        lo, hi = label_bounds_3d(a, 4)
        s_lo, s_hi = _bounds(a, 4)
        s_lo[s_hi[:, 0] < 0] = -1
        np.testing.assert_array_equal(lo, s_lo)
        np.testing.assert_array_equal(hi, s_hi)
        np.testing.assert_array_equal(lo, _reference(a.astype(np.int64), 4)[0])


def _reference_present(a: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the values present only (for wide label ranges)."""
    lo = np.full((n, 3), -1, dtype=np.int64)
    hi = np.full((n, 3), -1, dtype=np.int64)
    for v in np.unique(a):
        if v:
            idx = np.argwhere(a == v)
            lo[int(v)], hi[int(v)] = idx.min(axis=0), idx.max(axis=0)
    return lo, hi


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(
        [
            (np.uint8, (0, 1, 127, 128, 254, 255)),  # high bits set in every lane position
            (np.uint16, (0, 1, 255, 256, 32768, 65535)),
            (np.int32, (0, 1, 2**31 - 1)),
        ]
    ),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 1.0),
)
def test_mixed_words_with_large_labels_match_brute_force(
    spec: tuple[type, tuple[int, ...]], seed: int, p_zero: float
) -> None:
    dtype, values = spec
    rng = np.random.default_rng(seed)
    a = rng.choice(np.array(values[1:], dtype=np.int64), size=(2, 3, 24))
    a[rng.random(a.shape) < p_zero] = 0
    a = a.astype(dtype)
    n = int(a.max()) + 1 if dtype != np.int32 else 0
    if dtype == np.int32:  # keep the table small: relabel to ranks, same layout
        ranks = np.searchsorted(np.array(values), a)
        a, n = ranks.astype(np.int32), len(values)
    lo, hi = label_bounds_3d(a, n)
    ref_lo, ref_hi = _reference_present(a, n)
    np.testing.assert_array_equal(lo, ref_lo)
    np.testing.assert_array_equal(hi, ref_hi)


def test_sparse_rows_one_voxel_anywhere_in_a_row() -> None:
    """Rows of zeros are skipped whole: a lone voxel in the first or last word still counts."""
    rng = np.random.default_rng(11)
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        a = np.zeros((3, 7, 64), dtype=dtype)
        per_word = 8 // a.itemsize
        for k, x in enumerate((0, per_word - 1, 64 - per_word, 63, 30)):
            a[k % 3, k + 1, x] = k + 1
        a[2, 6, rng.integers(0, 64)] = 6
        lo, hi = label_bounds_3d(a, 7)
        ref_lo, ref_hi = _reference(a.astype(np.int64), 7)
        np.testing.assert_array_equal(lo, ref_lo)
        np.testing.assert_array_equal(hi, ref_hi)
