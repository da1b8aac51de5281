"""Compiled (numba, nopython, cached) kernels behind :mod:`medcurric.geometry`.

Everything here is private: the public functions in ``boxes.py`` and ``overlap.py``
validate their inputs, choose a strategy and call these kernels on contiguous
numpy arrays. Kernels never allocate their outputs unless stated, never raise,
and report a bad label value through their return value instead (numba's
nopython mode cannot raise library exceptions with useful messages).

Integer pixel ranges are half-open and already clipped to the array:
``ranges[n] = (z0, z1, y0, y1, x0, x1)``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__: list[str] = []

_REP8 = np.uint64(0x0101010101010101)
_REP16 = np.uint64(0x0001000100010001)
_M8 = np.uint64(0xFF)
_M16 = np.uint64(0xFFFF)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE = np.uint64(1)
#: De Bruijn sequence B(2, 6): the top 6 bits of ``2**i * _DEBRUIJN`` differ for every i < 64,
#: so a table maps them back to i (see ``lowest_set_bit``).
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_INDEX = np.zeros(64, dtype=np.int64)
_DEBRUIJN_INDEX[[((1 << i) * 0x03F79D71B4CB0A89 % 2**64) >> 58 for i in range(64)]] = np.arange(64)


# ---------------------------------------------------------------------------
# Whole-array histograms
# ---------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def hist_u8_words(words: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - jit
    """Add the byte histogram of ``words`` (uint64 view of uint8 data) into ``counts[256]``.

    Label maps are long runs of one label: a word whose 8 bytes are equal to the
    current run's label extends the run in a register, four words at a time; a
    uniform word of another label starts a new run; a mixed word is counted byte
    by byte into four interleaved count rows (breaking store-to-load chains).
    """
    n = words.shape[0]
    lanes = np.zeros((4, 256), dtype=np.int64)
    cur = np.uint64(0)  # the current run's word (8 copies of its label)
    run = 0
    i = 0
    while i + 4 <= n:
        w0 = words[i]
        w1 = words[i + 1]
        w2 = words[i + 2]
        w3 = words[i + 3]
        if ((w0 ^ cur) | (w1 ^ cur) | (w2 ^ cur) | (w3 ^ cur)) == 0:
            run += 32
            i += 4
            continue
        for k in range(4):
            w = words[i + k]
            if w == cur:
                run += 8
                continue
            b = w & _M8
            if w == b * _REP8:
                counts[cur & _M8] += run
                cur = w
                run = 8
            else:
                lanes[0, w & _M8] += 1
                lanes[1, (w >> np.uint64(8)) & _M8] += 1
                lanes[2, (w >> np.uint64(16)) & _M8] += 1
                lanes[3, (w >> np.uint64(24)) & _M8] += 1
                lanes[0, (w >> np.uint64(32)) & _M8] += 1
                lanes[1, (w >> np.uint64(40)) & _M8] += 1
                lanes[2, (w >> np.uint64(48)) & _M8] += 1
                lanes[3, w >> np.uint64(56)] += 1
        i += 4
    while i < n:
        w = words[i]
        if w == cur:
            run += 8
        else:
            for s in range(8):
                lanes[s & 3, (w >> np.uint64(8 * s)) & _M8] += 1
        i += 1
    counts[cur & _M8] += run
    for r in range(4):
        for b in range(256):
            counts[b] += lanes[r, b]


@nb.njit(cache=True, nogil=True)
def hist_u16_words(words: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - jit
    """Add the histogram of ``words`` (uint64 view of uint16 data) into ``counts[65536]``."""
    n = words.shape[0]
    lanes = np.zeros((2, 65536), dtype=np.int64)
    cur = np.uint64(0)
    run = 0
    i = 0
    while i + 4 <= n:
        w0 = words[i]
        w1 = words[i + 1]
        w2 = words[i + 2]
        w3 = words[i + 3]
        if ((w0 ^ cur) | (w1 ^ cur) | (w2 ^ cur) | (w3 ^ cur)) == 0:
            run += 16
            i += 4
            continue
        for k in range(4):
            w = words[i + k]
            if w == cur:
                run += 4
                continue
            b = w & _M16
            if w == b * _REP16:
                counts[cur & _M16] += run
                cur = w
                run = 4
            else:
                lanes[0, w & _M16] += 1
                lanes[1, (w >> np.uint64(16)) & _M16] += 1
                lanes[0, (w >> np.uint64(32)) & _M16] += 1
                lanes[1, w >> np.uint64(48)] += 1
        i += 4
    while i < n:
        w = words[i]
        if w == cur:
            run += 4
        else:
            for s in range(4):
                lanes[s & 1, (w >> np.uint64(16 * s)) & _M16] += 1
        i += 1
    counts[cur & _M16] += run
    for r in range(2):
        for b in range(65536):
            counts[b] += lanes[r, b]


@nb.njit(cache=True, nogil=True)
def hist_small(values: np.ndarray, counts: np.ndarray) -> None:  # pragma: no cover - jit
    """Add the histogram of a short 1D unsigned array into ``counts`` (no bound checks)."""
    for i in range(values.shape[0]):
        counts[values[i]] += 1


@nb.njit(cache=True, nogil=True)
def hist_runs(values: np.ndarray, counts: np.ndarray) -> np.int64:  # pragma: no cover - jit
    """Run-length histogram of a 1D integer array into ``counts`` with bound checks.

    Returns:
        ``-1`` on success, else the index of the first value outside ``[0, len(counts))``.
    """
    nbins = counts.shape[0]
    n = values.shape[0]
    if n == 0:
        return np.int64(-1)
    cur = values[0]
    if cur < 0 or cur >= nbins:
        return np.int64(0)
    run = 0
    for i in range(n):
        v = values[i]
        if v == cur:
            run += 1
        else:
            if v < 0 or v >= nbins:
                return np.int64(i)
            counts[cur] += run
            cur = v
            run = 1
    counts[cur] += run
    return np.int64(-1)


# ---------------------------------------------------------------------------
# Per-box overlap with a label map
# ---------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True)
def box_label_counts(
    vol: np.ndarray, ranges: np.ndarray, out: np.ndarray
) -> np.int64:  # pragma: no cover - jit
    """Per-box label histograms of a ``[D, H, W]`` label volume.

    One pass over each box's contiguous x-rows, counting runs of equal labels in
    a register (label maps are piecewise constant along rows).

    Args:
        vol: C-contiguous ``[D, H, W]`` integer label volume.
        ranges: int64 ``[N, 6]`` half-open voxel ranges ``(z0, z1, y0, y1, x0, x1)``.
        out: int64 ``[N, B]`` zero-filled counts; labels must lie in ``[0, B)``.

    Returns:
        ``-1`` on success, else the flat index into ``vol`` of a label outside ``[0, B)``.
    """
    nbins = out.shape[1]
    height = vol.shape[1]
    width = vol.shape[2]
    for n in range(ranges.shape[0]):
        z0 = ranges[n, 0]
        z1 = ranges[n, 1]
        y0 = ranges[n, 2]
        y1 = ranges[n, 3]
        x0 = ranges[n, 4]
        x1 = ranges[n, 5]
        if x1 <= x0 or y1 <= y0 or z1 <= z0:
            continue
        cur = vol[z0, y0, x0]
        if cur < 0 or cur >= nbins:
            return np.int64((z0 * height + y0) * width + x0)
        run = 0
        for z in range(z0, z1):
            for y in range(y0, y1):
                row = vol[z, y]
                for x in range(x0, x1):
                    v = row[x]
                    if v == cur:
                        run += 1
                    else:
                        if v < 0 or v >= nbins:
                            return np.int64((z * height + y) * width + x)
                        out[n, cur] += run
                        cur = v
                        run = 1
        out[n, cur] += run
    return np.int64(-1)


@nb.njit(cache=True, nogil=True, inline="always")
def lowest_set_bit(x):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Index (0-63) of the lowest set bit of a nonzero uint64 (its trailing-zero count).

    ``x & -x`` keeps that bit alone; a de Bruijn multiply moves a unique 6-bit pattern
    to the top, which a table maps back to the index. Also used by ``anatomy._bounds``.
    """
    return _DEBRUIJN_INDEX[((x & (~x + _ONE)) * _DEBRUIJN) >> np.uint64(58)]


@nb.njit(cache=True, nogil=True, inline="always")
def _feed_u8(w, lo, hi, cur, run, counts):  # type: ignore[no-untyped-def]  # pragma: no cover - jit
    """Feed bytes ``lo..hi-1`` of the little-endian word ``w`` into a run-length state.

    Jumps from one label change to the next (the lowest nonzero byte of ``w`` XOR
    the current label repeated); returns the new ``(cur, run)``.
    """
    mask = (_ONES >> np.uint64(8 * (8 - hi))) & (_ONES << np.uint64(8 * lo))
    x = (w ^ (np.uint64(cur) * _REP8)) & mask
    pos = lo
    while x != 0:
        k = lowest_set_bit(x) >> 3
        run += k - pos
        counts[cur] += run
        cur = np.int64((w >> np.uint64(8 * k)) & _M8)
        run = 0
        pos = k
        x = (w ^ (np.uint64(cur) * _REP8)) & mask & (_ONES << np.uint64(8 * k))
    run += hi - pos
    return cur, run


@nb.njit(cache=True, nogil=True)
def box_label_counts_u8(
    words: np.ndarray, shape: np.ndarray, ranges: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - jit
    """Per-box label histograms of a uint8 ``[D, H, W]`` volume read as machine words.

    Each box row ``[x0, x1)`` is read eight labels at a time: a word equal to the
    current label repeated extends the run, a word with label changes is split at
    each change. Labels are bytes, so ``out`` has 256 columns and needs no checks.

    Args:
        words: uint64 view of the C-contiguous uint8 volume (size a multiple of 8,
            8-byte aligned).
        shape: int64 ``(D, H, W)``.
        ranges: int64 ``[N, 6]`` half-open ranges ``(z0, z1, y0, y1, x0, x1)``.
        out: int64 ``[N, 256]`` zero-filled counts.
    """
    height = shape[1]
    width = shape[2]
    for n in range(ranges.shape[0]):
        z0 = ranges[n, 0]
        z1 = ranges[n, 1]
        y0 = ranges[n, 2]
        y1 = ranges[n, 3]
        x0 = ranges[n, 4]
        x1 = ranges[n, 5]
        if z1 <= z0 or y1 <= y0 or x1 <= x0:
            continue
        cnt = out[n]
        cur = np.int64(0)
        run = np.int64(0)
        for z in range(z0, z1):
            for y in range(y0, y1):
                p = (z * height + y) * width + x0
                q = p + (x1 - x0)
                wp = p >> 3  # the row covers words wp..wq, its ends in part
                wq = (q - 1) >> 3
                if wp == wq:
                    cur, run = _feed_u8(words[wp], p & 7, q - (wp << 3), cur, run, cnt)
                    continue
                cur, run = _feed_u8(words[wp], p & 7, 8, cur, run, cnt)
                pat = np.uint64(cur) * _REP8
                for i in range(wp + 1, wq):
                    w = words[i]
                    if w == pat:
                        run += 8
                    else:
                        cur, run = _feed_u8(w, 0, 8, cur, run, cnt)
                        pat = np.uint64(cur) * _REP8
                cur, run = _feed_u8(words[wq], 0, q - (wq << 3), cur, run, cnt)
        cnt[cur] += run


@nb.njit(cache=True, nogil=True)
def label_sat(plane: np.ndarray, nbins: int) -> np.ndarray:  # pragma: no cover - jit
    """Per-label summed-area tables of a ``[H, W]`` label plane, laid out ``[H + 1, W + 1, L]``.

    ``sat[y, x, l]`` counts the pixels of label ``l`` in ``plane[:y, :x]``. Labels
    must already be known to lie in ``[0, nbins)``.
    """
    height, width = plane.shape
    sat = np.zeros((height + 1, width + 1, nbins), dtype=np.int32)
    row = np.zeros(nbins, dtype=np.int32)
    for y in range(height):
        row[:] = 0
        for x in range(width):
            row[plane[y, x]] += 1
            above = sat[y, x + 1]
            here = sat[y + 1, x + 1]
            for k in range(nbins):
                here[k] = above[k] + row[k]
    return sat


@nb.njit(cache=True, nogil=True)
def sat_lookup(
    sat: np.ndarray, ranges: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - jit
    """Box counts from summed-area tables: four lookups per (box, label)."""
    nbins = sat.shape[2]
    for n in range(ranges.shape[0]):
        y0 = ranges[n, 2]
        y1 = ranges[n, 3]
        x0 = ranges[n, 4]
        x1 = ranges[n, 5]
        if y1 <= y0 or x1 <= x0 or ranges[n, 1] <= ranges[n, 0]:
            continue
        a = sat[y1, x1]
        b = sat[y0, x1]
        c = sat[y1, x0]
        d = sat[y0, x0]
        for k in range(nbins):
            out[n, k] = np.int64(a[k]) - b[k] - c[k] + d[k]


@nb.njit(cache=True, nogil=True)
def box_mask_counts(
    masks: np.ndarray, ranges: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - jit
    """Per-box, per-channel counts of nonzero voxels in a ``[L, D, H, W]`` uint8 mask stack."""
    for c in range(masks.shape[0]):
        for n in range(ranges.shape[0]):
            s = 0
            for z in range(ranges[n, 0], ranges[n, 1]):
                for y in range(ranges[n, 2], ranges[n, 3]):
                    row = masks[c, z, y]
                    for x in range(ranges[n, 4], ranges[n, 5]):
                        s += row[x] != 0
            out[n, c] = s


# ---------------------------------------------------------------------------
# Box-box IoU
# ---------------------------------------------------------------------------


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def iou_2d(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, zero: float, tiny: float
) -> None:  # pragma: no cover - jit
    """IoU of ``[4, N]`` and ``[4, M]`` coordinate rows (SoA) into ``out[N, M]``.

    ``zero`` and ``tiny`` (the smallest normal number) come typed as ``out``'s dtype
    so that float32 work stays float32. The inner loop is branch-free and
    vectorises; two rows of ``out`` are filled per pass over ``b`` so that each
    loaded coordinate serves two boxes. ``inter / (union + tiny)`` is exact
    except for unions below ~1e-31 and gives 0 (not NaN) for two empty boxes.
    """
    bx1 = b[0]
    by1 = b[1]
    bx2 = b[2]
    by2 = b[3]
    m = bx1.shape[0]
    barea = np.empty(m, dtype=out.dtype)
    for j in range(m):
        barea[j] = (bx2[j] - bx1[j]) * (by2[j] - by1[j])
    n = a.shape[1]
    i = 0
    while i + 2 <= n:
        ax1 = a[0, i]
        ay1 = a[1, i]
        ax2 = a[2, i]
        ay2 = a[3, i]
        cx1 = a[0, i + 1]
        cy1 = a[1, i + 1]
        cx2 = a[2, i + 1]
        cy2 = a[3, i + 1]
        aarea = (ax2 - ax1) * (ay2 - ay1)
        carea = (cx2 - cx1) * (cy2 - cy1)
        row0 = out[i]
        row1 = out[i + 1]
        for j in range(m):
            u1 = bx1[j]
            v1 = by1[j]
            u2 = bx2[j]
            v2 = by2[j]
            ba = barea[j]
            inter0 = max(min(ax2, u2) - max(ax1, u1), zero) * max(min(ay2, v2) - max(ay1, v1), zero)
            row0[j] = inter0 / (aarea + ba - inter0 + tiny)
            inter1 = max(min(cx2, u2) - max(cx1, u1), zero) * max(min(cy2, v2) - max(cy1, v1), zero)
            row1[j] = inter1 / (carea + ba - inter1 + tiny)
        i += 2
    if i < n:
        ax1 = a[0, i]
        ay1 = a[1, i]
        ax2 = a[2, i]
        ay2 = a[3, i]
        aarea = (ax2 - ax1) * (ay2 - ay1)
        row0 = out[i]
        for j in range(m):
            inter0 = max(min(ax2, bx2[j]) - max(ax1, bx1[j]), zero) * max(
                min(ay2, by2[j]) - max(ay1, by1[j]), zero
            )
            row0[j] = inter0 / (aarea + barea[j] - inter0 + tiny)


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def iou_3d(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, zero: float, tiny: float
) -> None:  # pragma: no cover - jit
    """IoU of ``[6, N]`` and ``[6, M]`` coordinate rows (SoA) into ``out[N, M]``."""
    bx1 = b[0]
    by1 = b[1]
    bz1 = b[2]
    bx2 = b[3]
    by2 = b[4]
    bz2 = b[5]
    m = bx1.shape[0]
    bvol = np.empty(m, dtype=out.dtype)
    for j in range(m):
        bvol[j] = (bx2[j] - bx1[j]) * (by2[j] - by1[j]) * (bz2[j] - bz1[j])
    for i in range(a.shape[1]):
        ax1 = a[0, i]
        ay1 = a[1, i]
        az1 = a[2, i]
        ax2 = a[3, i]
        ay2 = a[4, i]
        az2 = a[5, i]
        avol = (ax2 - ax1) * (ay2 - ay1) * (az2 - az1)
        row = out[i]
        for j in range(m):
            iw = max(min(ax2, bx2[j]) - max(ax1, bx1[j]), zero)
            ih = max(min(ay2, by2[j]) - max(ay1, by1[j]), zero)
            idp = max(min(az2, bz2[j]) - max(az1, bz1[j]), zero)
            inter = iw * ih * idp
            row[j] = inter / max(avol + bvol[j] - inter, tiny)
