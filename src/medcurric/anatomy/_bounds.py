"""One-pass per-label bounding indices of a label map (numba)."""

from __future__ import annotations

import numba as nb
import numpy as np

from medcurric.geometry._kernels import lowest_set_bit


@nb.njit(cache=True, nogil=True)
def _bounds(a, n_labels):  # type: ignore[no-untyped-def]
    d0, d1, d2 = a.shape
    lo = np.full((n_labels, 3), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((n_labels, 3), -1, dtype=np.int64)
    for i in range(d0):
        for j in range(d1):
            prev = 0
            for k in range(d2):
                v = a[i, j, k]
                if v != prev:
                    if prev != 0 and k - 1 > hi[prev, 2]:  # a run of prev ended at k - 1
                        hi[prev, 2] = k - 1
                    if v != 0:  # a run of v starts at k
                        if k < lo[v, 2]:
                            lo[v, 2] = k
                        if j < lo[v, 1]:
                            lo[v, 1] = j
                        if j > hi[v, 1]:
                            hi[v, 1] = j
                        if i < lo[v, 0]:
                            lo[v, 0] = i
                        if i > hi[v, 0]:
                            hi[v, 0] = i
                    prev = v
            if prev != 0 and d2 - 1 > hi[prev, 2]:
                hi[prev, 2] = d2 - 1
    return lo, hi


@nb.njit(cache=True, nogil=True)
def _bounds_words(a, words, per_word, n_labels):  # type: ignore[no-untyped-def]
    """Same as ``_bounds`` but a word at a time (``words`` views ``a`` as uint64).

    A row whose words OR to zero (most rows of a label map) is skipped after one
    vectorised pass over it.
    A word of zeros, or a word equal to its first element repeated (one label),
    continues or starts a run without looking at its elements; in a word where
    labels change, only the elements that differ from the one before are visited
    (found with a shifted XOR and the index of its lowest set bit, no per-element
    branch).
    A run's start updates the label's low x and its row (y, z) bounds, its end
    the high x. ``a`` must hold non-negative labels (words are read unsigned).
    """
    d0, d1, d2 = a.shape
    nw = words.shape[2]
    bits = 64 // per_word
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    rep = np.uint64(0)
    for t in range(per_word):
        rep |= np.uint64(1) << np.uint64(t * bits)
    zero = np.uint64(0)
    shift = np.uint64(bits % 64)  # a mixed word has per_word >= 2, so bits < 64 there
    lo = np.full((n_labels, 3), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((n_labels, 3), -1, dtype=np.int64)
    for i in range(d0):
        for j in range(d1):
            # a row of zeros (most rows of a label map) changes nothing: one OR over it
            any_set = zero
            for q in range(nw):
                any_set |= words[i, j, q]
            if any_set == zero:
                continue
            prev = np.int64(0)
            for q in range(nw):
                w = words[i, j, q]
                if w == zero:
                    if prev == 0:
                        continue
                    k = q * per_word  # the run of prev ended at k - 1
                    if k - 1 > hi[prev, 2]:
                        hi[prev, 2] = k - 1
                    prev = np.int64(0)
                    continue
                first = w & mask
                if w == first * rep:  # one label fills the word
                    v = np.int64(first)
                    if v == prev:
                        continue
                    k = q * per_word
                    if prev != 0 and k - 1 > hi[prev, 2]:
                        hi[prev, 2] = k - 1
                    if k < lo[v, 2]:
                        lo[v, 2] = k
                    if j < lo[v, 1]:
                        lo[v, 1] = j
                    if j > hi[v, 1]:
                        hi[v, 1] = j
                    if i < lo[v, 0]:
                        lo[v, 0] = i
                    if i > hi[v, 0]:
                        hi[v, 0] = i
                    prev = v
                    continue
                # A mixed word: visit only the elements whose label differs from the
                # element before (set lanes of w ^ (w shifted by one lane, prev shifted in)).
                base = q * per_word
                diff = w ^ ((w << shift) | np.uint64(prev))
                while diff != zero:
                    lane = np.int64(lowest_set_bit(diff)) // bits
                    at = np.uint64(lane * bits)
                    v = np.int64((w >> at) & mask)
                    k = base + lane
                    if prev != 0 and k - 1 > hi[prev, 2]:
                        hi[prev, 2] = k - 1
                    if v != 0:
                        if k < lo[v, 2]:
                            lo[v, 2] = k
                        if j < lo[v, 1]:
                            lo[v, 1] = j
                        if j > hi[v, 1]:
                            hi[v, 1] = j
                        if i < lo[v, 0]:
                            lo[v, 0] = i
                        if i > hi[v, 0]:
                            hi[v, 0] = i
                    prev = v
                    diff &= ~(mask << at)
            if prev != 0 and d2 - 1 > hi[prev, 2]:
                hi[prev, 2] = d2 - 1
    return lo, hi


def label_bounds_3d(a: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int64 ``[n_labels, 3]``: min/max index of each label along each axis (-1 if absent).

    Examples:
        >>> a = np.zeros((2, 3, 4), np.uint8); a[1, 0:2, 1:3] = 4
        >>> lo, hi = label_bounds_3d(a, 5)
        >>> lo[4].tolist(), hi[4].tolist(), lo[1].tolist()
        ([1, 0, 1], [1, 1, 2], [-1, -1, -1])
    """
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    per_word = 8 // a.dtype.itemsize if a.dtype.itemsize in (1, 2, 4, 8) else 0
    if per_word and a.flags.c_contiguous and a.shape[2] % per_word == 0 and a.size:
        lo, hi = _bounds_words(a, a.view(np.uint64), per_word, int(n_labels))
    else:
        lo, hi = _bounds(a, int(n_labels))
    lo[hi[:, 0] < 0] = -1
    return lo, hi
