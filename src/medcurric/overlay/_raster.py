"""Rasterising visual prompts: primitives, anti-aliased coverage, alpha blending.

Every prompt is a union of *primitives*, each with a half width ``hw``; a pixel
whose centre lies at distance ``d`` from the primitive's centre line is covered by
``clamp(hw - d + 0.5, 0, 1)`` (one pixel of anti-aliasing). The union takes the
maximum coverage, so overlapping strokes are blended once. Kinds:

* ``SEGMENT`` ``(x0, y0, x1, y1)``: a thick line (a capsule); a dot when both ends agree;
* ``BOX`` ``(x1, y1, x2, y2)``: the outline of a rectangle (distance to its boundary);
* ``FRAME`` ``(x1, y1, x2, y2)``: the same outline with square outer corners
  (Chebyshev distance), as a PIL rectangle outline;
* ``ELLIPSE`` ``(cx, cy, rx, ry)``: the outline of an axis-aligned ellipse (a
  first-order distance estimate, exact on the axes).

Two interchangeable back ends draw them:

* ``torch``: pure tensor ops over each prompt's bounding region, batched (any device);
* ``numba``: a plain CPU kernel that visits only the pixels near each stroke (row
  spans), in place on a uint8 / float ``[B, H, W, 3]`` view, in float64. The two
  agree to one grey level (torch computes uint8 images' coverage in float32).

Blending of 8-bit images is integer: ``a = round(255 * alpha * coverage)``,
``out = (img * (255 - a) + colour * a + 127) // 255``; float images in ``[0, 1]`` use
``img + (colour / 255 - img) * alpha * coverage``.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch

SEGMENT, BOX, ELLIPSE, FRAME, NONE = 0, 1, 2, 3, -1
NPARAM = 10  # kind, a0, a1, a2, a3, hw, bx0, by0, bx1, by1

# ----------------------------------------------------------------------------- randomness


def uniforms(seeds: np.ndarray, k: int) -> np.ndarray:
    """Deterministic ``[n, k]`` uniforms in ``[0, 1)`` from integer seeds (splitmix64)."""
    s = np.asarray(seeds, dtype=np.int64).astype(np.uint64)[:, None]
    z = s * np.uint64(0x9E3779B97F4A7C15) + (
        np.arange(1, k + 1, dtype=np.uint64)[None, :] << np.uint64(32)
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


# ----------------------------------------------------------------------------- primitives


def _with_bbox(kind: int, a: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """[n, NPARAM] rows for one primitive per item."""
    n = a.shape[0]
    out = np.empty((n, NPARAM), np.float64)
    out[:, 0] = kind
    out[:, 1:5] = a
    out[:, 5] = hw
    m = hw + 1.0
    if kind == ELLIPSE:
        out[:, 6] = a[:, 0] - a[:, 2] - m
        out[:, 7] = a[:, 1] - a[:, 3] - m
        out[:, 8] = a[:, 0] + a[:, 2] + m
        out[:, 9] = a[:, 1] + a[:, 3] + m
    else:
        out[:, 6] = np.minimum(a[:, 0], a[:, 2]) - m
        out[:, 7] = np.minimum(a[:, 1], a[:, 3]) - m
        out[:, 8] = np.maximum(a[:, 0], a[:, 2]) + m
        out[:, 9] = np.maximum(a[:, 1], a[:, 3]) + m
    return out


def _segments(points: np.ndarray, hw: np.ndarray, closed: bool = False) -> np.ndarray:
    """Polyline ``[n, P, 2]`` -> ``[n, P - 1 (+1), NPARAM]`` segment rows."""
    if closed:
        points = np.concatenate([points, points[:, :1]], axis=1)
    n, p = points.shape[:2]
    a = np.concatenate([points[:, :-1], points[:, 1:]], axis=2).reshape(-1, 4)
    return _with_bbox(SEGMENT, a, np.repeat(hw, p - 1)).reshape(n, p - 1, NPARAM)


def rectangle(
    boxes: np.ndarray, lw: np.ndarray, size: tuple[int, int], inside: np.ndarray | None = None
) -> np.ndarray:
    """Outline just outside the box, kept inside the image; ``[n, 1, NPARAM]``.

    Rows where ``inside`` is true get ViP-LLaVA's outline instead: the box's own outer
    ring ``lw`` pixels wide, square corners (a ``FRAME``).
    """
    h, w = size
    hw = lw / 2
    a = np.stack(
        [
            np.maximum(boxes[:, 0] - hw, hw),
            np.maximum(boxes[:, 1] - hw, hw),
            np.minimum(boxes[:, 2] + hw, w - hw),
            np.minimum(boxes[:, 3] + hw, h - hw),
        ],
        axis=1,
    )
    a[:, 2] = np.maximum(a[:, 2], a[:, 0])
    a[:, 3] = np.maximum(a[:, 3], a[:, 1])
    out = _with_bbox(BOX, a, hw)
    if inside is not None and inside.any():
        b = boxes[inside]
        ring = np.concatenate([b[:, :2] + hw[inside, None], b[:, 2:] - hw[inside, None]], axis=1)
        mid = (b[:, :2] + b[:, 2:]) / 2  # a box thinner than two lines is filled
        ring[:, :2] = np.minimum(ring[:, :2], mid)
        ring[:, 2:] = np.maximum(ring[:, 2:], mid)
        out[inside] = _with_bbox(FRAME, ring, hw[inside])
    return out[:, None]


def ellipse(boxes: np.ndarray, lw: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Ellipse around the box: radii = half sides x scale, plus half the line. ``[n, 1, NPARAM]``."""
    hw = lw / 2
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    r = (boxes[:, 2:] - boxes[:, :2]) / 2 * scale[:, None] + hw[:, None]
    r = np.maximum(r, hw[:, None] + 0.5)
    return _with_bbox(ELLIPSE, np.concatenate([c, r], axis=1), hw)[:, None]


def point(
    boxes: np.ndarray, radius: np.ndarray, seeds: np.ndarray, jitter: np.ndarray
) -> np.ndarray:
    """A filled dot near the box centre (jittered within the central half). ``[n, 1, NPARAM]``."""
    u = uniforms(seeds, 2) - 0.5
    c = (boxes[:, :2] + boxes[:, 2:]) / 2 + u * 0.5 * (boxes[:, 2:] - boxes[:, :2]) * jitter[
        :, None
    ]
    return _with_bbox(SEGMENT, np.concatenate([c, c], axis=1), radius)[:, None]


def arrow(
    boxes: np.ndarray,
    lw: np.ndarray,
    seeds: np.ndarray,
    jitter: np.ndarray,
    size: tuple[int, int],
    s: float,
    inside: np.ndarray | None = None,
) -> np.ndarray:
    """An arrow from outside the box to its edge, inside the image. ``[n, 3, NPARAM]``.

    The direction starts from the upper left (rotated by up to 180 degrees times
    ``jitter``). Of eight directions 45 degrees apart (tried nearest first), the first
    whose tip and tail lie in the image and whose strokes keep clear of the box is
    used; when none does, the one that keeps the most clearance, tail clamped.
    Rows where ``inside`` is true put the tip in the box instead (ViP-LLaVA), halfway
    from the centre to the edge, the shaft leaving the box; the first direction whose
    tail lies in the image is used.
    """
    h, w = size
    n = boxes.shape[0]
    hw = lw / 2
    u = uniforms(seeds, 2)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, 0.5)
    length = np.clip(0.8 * 2 * half.min(axis=1), 28 * s, 60 * s) * (
        1 + 0.4 * jitter * (u[:, 1] - 0.5)
    )
    theta0 = math.radians(225) + jitter * (u[:, 0] - 0.5) * 2 * math.pi
    order = np.array([0, 1, -1, 2, -2, 3, -3, 4]) * (math.pi / 4)
    thetas = theta0[:, None] + order[None, :]  # [n, 8]
    d = np.stack([np.cos(thetas), np.sin(thetas)], axis=-1)  # [n, 8, 2], centre -> tail
    with np.errstate(divide="ignore"):
        reach = np.minimum(
            half[:, None, 0] / np.abs(d[..., 0]), half[:, None, 1] / np.abs(d[..., 1])
        )
    gap = lw[:, None] + 1.0
    tip = c[:, None, :] + d * reach[..., None]
    tip = tip + np.sign(tip - c[:, None, :]) * gap[..., None]  # clear of the box on both axes
    tail = tip + d * length[:, None, None]
    head = np.maximum(0.35 * length, 6 * s + lw)[:, None, None]
    wings = []
    for ang in (math.pi / 6, -math.pi / 6):
        ca, sa = math.cos(ang), math.sin(ang)
        rot = np.stack([d[..., 0] * ca - d[..., 1] * sa, d[..., 0] * sa + d[..., 1] * ca], axis=-1)
        wings.append(tip + rot * head)
    # clearance of each stroke from the box, from points sampled along it
    t = np.linspace(0.0, 1.0, 9)[None, None, :, None]
    samples = np.concatenate(
        [tip[:, :, None] + (end - tip)[:, :, None] * t for end in (tail, *wings)], axis=2
    )  # [n, 8, 27, 2]
    qx = np.abs(samples[..., 0] - c[:, None, None, 0]) - half[:, None, None, 0]
    qy = np.abs(samples[..., 1] - c[:, None, None, 1]) - half[:, None, None, 1]
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    clearance = outside.min(axis=2) - hw[:, None]  # [n, 8]
    margin = hw[:, None] + 1

    def in_bounds(p: np.ndarray) -> np.ndarray:
        return (
            (p[..., 0] >= margin)
            & (p[..., 0] <= w - margin)
            & (p[..., 1] >= margin)
            & (p[..., 1] <= h - margin)
        )

    in_image = in_bounds(tip) & in_bounds(tail)
    ok = in_image & (clearance >= 0.5)
    best = np.argmax(clearance + 1e6 * in_image, axis=1)
    if inside is not None and inside.any():
        # ViP-LLaVA: the head in the box, halfway from the centre to the edge
        tip_in = c[:, None, :] + d * (0.5 * reach[..., None])
        tail_in = c[:, None, :] + d * (reach + length[:, None])[..., None]
        sel = inside[:, None, None]
        wings = [np.where(sel, tip_in + (wing - tip), wing) for wing in wings]
        tip, tail = np.where(sel, tip_in, tip), np.where(sel, tail_in, tail)
        ok = np.where(inside[:, None], in_bounds(tail_in), ok)
        best = np.where(inside, 0, best)
    pick = np.where(ok.any(axis=1), ok.argmax(axis=1), best)
    rows = np.arange(n)
    tip, tail = tip[rows, pick], tail[rows, pick]
    tail = np.stack(
        [np.clip(tail[:, 0], hw + 1, w - hw - 1), np.clip(tail[:, 1], hw + 1, h - hw - 1)], axis=1
    )
    out = np.empty((n, 3, NPARAM))
    out[:, 0] = _with_bbox(SEGMENT, np.concatenate([tip, tail], axis=1), hw)
    for k, wing in enumerate(wings):
        out[:, 1 + k] = _with_bbox(SEGMENT, np.concatenate([tip, wing[rows, pick]], axis=1), hw)
    return out


def triangle(
    boxes: np.ndarray,
    lw: np.ndarray,
    seeds: np.ndarray,
    jitter: np.ndarray,
    inside: np.ndarray | None = None,
) -> np.ndarray:
    """An equilateral triangle around the box (apex up, rotated by jitter). ``[n, 3, NPARAM]``.

    Rows where ``inside`` is true join three points in the box instead (ViP-LLaVA):
    the top middle and the two bottom corners, each moved by up to a quarter of the
    box times ``jitter``, kept half a line inside the box.
    """
    hw = lw / 2
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 + lw[:, None]
    # apex-up equilateral triangle containing the (padded) box, centred on the box
    tan60 = math.sqrt(3.0)
    height = 2 * half[:, 1] + half[:, 0] * tan60
    base_half = height / tan60
    apex = np.stack([np.zeros_like(height), -half[:, 1] - half[:, 0] * tan60], axis=1)
    left = np.stack([-base_half, half[:, 1]], axis=1)
    right = np.stack([base_half, half[:, 1]], axis=1)
    pts = np.stack([apex, right, left], axis=1)  # [n, 3, 2] relative to the box centre
    phi = jitter * (uniforms(seeds, 1)[:, 0] - 0.5) * (math.pi / 6)
    cp, sp = np.cos(phi)[:, None], np.sin(phi)[:, None]
    rot = np.stack(
        [pts[..., 0] * cp - pts[..., 1] * sp, pts[..., 0] * sp + pts[..., 1] * cp], axis=-1
    )
    corners = rot + c[:, None, :]
    if inside is not None and inside.any():
        b, h_in = boxes[inside], hw[inside, None, None]
        unit = np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]])[None]
        moved = unit + jitter[inside, None, None] * (uniforms(seeds[inside], 7)[:, 1:].reshape(-1, 3, 2) - 0.5) * 0.5
        size = (b[:, 2:] - b[:, :2])[:, None, :]
        lo = b[:, None, :2] + np.minimum(h_in, size / 2)
        hi = b[:, None, 2:] - np.minimum(h_in, size / 2)
        corners[inside] = np.clip(b[:, None, :2] + np.clip(moved, 0.0, 1.0) * size, lo, hi)
    return _segments(corners, hw, closed=True)


def scribble(
    boxes: np.ndarray, lw: np.ndarray, seeds: np.ndarray, jitter: np.ndarray, n_seg: int = 24
) -> np.ndarray:
    """A wobbly cubic curve inside the box, seeded. ``[n, n_seg, NPARAM]``."""
    hw = lw / 2
    u = uniforms(seeds, 10)
    base = np.array([[0.2, 0.55], [0.4, 0.2], [0.6, 0.8], [0.8, 0.45]])
    ctrl = base[None] + jitter[:, None, None] * (u[:, :8].reshape(-1, 4, 2) - 0.5) * 0.5
    ctrl = np.clip(ctrl, 0.1, 0.9)
    t = np.linspace(0.0, 1.0, n_seg + 1)[None, :, None]
    bez = (
        (1 - t) ** 3 * ctrl[:, None, 0]
        + 3 * (1 - t) ** 2 * t * ctrl[:, None, 1]
        + 3 * (1 - t) * t**2 * ctrl[:, None, 2]
        + t**3 * ctrl[:, None, 3]
    )  # [n, S+1, 2] in box units
    phase = u[:, 8:9] * 2 * math.pi
    wob = 0.04 * np.sin(2 * math.pi * 3 * t[..., 0] + phase)
    bez = bez + wob[..., None]
    size = boxes[:, None, 2:] - boxes[:, None, :2]
    pts = boxes[:, None, :2] + np.clip(bez, 0.0, 1.0) * size
    return _segments(pts, hw)


# ----------------------------------------------------------------------------- numba kernel
#
# Ellipse outlines are also limited to the band between the ellipses with radii
# (rx +- (hw + 1.5)) (the first-order distance is poor far from the curve); both back
# ends apply the same limit, so they agree. The kernel multiplies by reciprocals where
# the torch formulas divide (faster); tests/overlay/test_raster.py mirrors its arithmetic.


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _coverage(p: tuple[float, ...], px: float, py: float) -> float:  # pragma: no cover - numba
    """Coverage of the pixel centred at ``(px, py)`` by primitive ``p`` (a row as a tuple)."""
    kind, a0, a1, a2, a3, hw, bx0, by0, bx1, by1 = p
    if px < bx0 or px > bx1 or py < by0 or py > by1:
        return 0.0
    if kind == SEGMENT:
        dx, dy = a2 - a0, a3 - a1
        l2 = dx * dx + dy * dy
        t = min(max(((px - a0) * dx + (py - a1) * dy) / l2, 0.0), 1.0) if l2 > 0.0 else 0.0
        ex, ey = px - (a0 + t * dx), py - (a1 + t * dy)
        d = math.sqrt(ex * ex + ey * ey)
    elif kind == BOX or kind == FRAME:
        qx = abs(px - 0.5 * (a0 + a2)) - 0.5 * (a2 - a0)
        qy = abs(py - 0.5 * (a1 + a3)) - 0.5 * (a3 - a1)
        if kind == BOX and qx > 0.0 and qy > 0.0:
            d = math.sqrt(qx * qx + qy * qy)
        else:
            d = abs(max(qx, qy))
    else:
        x, y = px - a0, py - a1
        big = hw + 1.5
        ox, oy = x * (1.0 / (a2 + big)), y * (1.0 / (a3 + big))
        if ox * ox + oy * oy > 1.0:
            return 0.0
        if a2 > big and a3 > big:
            ix, iy = x * (1.0 / (a2 - big)), y * (1.0 / (a3 - big))
            if ix * ix + iy * iy < 1.0:
                return 0.0
        u, v = x * (1.0 / a2), y * (1.0 / a3)
        k0 = math.sqrt(u * u + v * v)
        u, v = u * (1.0 / a2), v * (1.0 / a3)
        k1 = math.sqrt(u * u + v * v)
        d = abs(k0 * (k0 - 1.0) / k1) if k1 > 0.0 else min(a2, a3)
    return min(max(hw - d + 0.5, 0.0), 1.0)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _spans(
    p: tuple[float, ...], py: float
) -> tuple[int, float, float, float, float]:  # pragma: no cover
    """``(count, lo0, hi0, lo1, hi1)``: the x-ranges of row ``py`` that primitive ``p`` may cover.

    Conservative: ``_coverage`` is zero outside them. A rectangle's middle rows and
    an ellipse's rows through its inner ellipse give two ranges, other rows one.
    """
    kind, a0, a1, a2, a3, hw, bx0, _, bx1, _ = p
    m = hw + 0.5
    if kind == BOX or kind == FRAME:
        if a1 + m < py < a3 - m and a0 + m < a2 - m:
            return 2, a0 - m, a0 + m, a2 - m, a2 + m
        return 1, a0 - m, a2 + m, 0.0, 0.0
    if kind == ELLIPSE:
        big = hw + 1.5
        dy = py - a1
        if abs(dy) >= a3 + big:
            return 0, 0.0, 0.0, 0.0, 0.0
        r = dy / (a3 + big)
        xo = (a2 + big) * math.sqrt(1.0 - r * r)
        if a2 > big and abs(dy) < a3 - big:
            r = dy / (a3 - big)
            xi = (a2 - big) * math.sqrt(1.0 - r * r)
            return 2, a0 - xo, a0 - xi, a0 + xi, a0 + xo
        return 1, a0 - xo, a0 + xo, 0.0, 0.0
    lo, hi = bx0, bx1  # a segment: the band around the line through its ends
    dx, dy = a2 - a0, a3 - a1
    length = math.sqrt(dx * dx + dy * dy)
    if abs(dy) > 1e-9 * (length + 1.0):
        xl = a0 + (py - a1) * dx / dy
        half = m * length / abs(dy) + 1.0
        lo, hi = max(lo, xl - half), min(hi, xl + half)
    return (1 if lo <= hi else 0), lo, hi, 0.0, 0.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _draw_numba(
    img: np.ndarray, prims: np.ndarray, colors: np.ndarray, alphas: np.ndarray, is_float: bool
) -> None:  # pragma: no cover - numba
    """Draw ``prims[b]`` on ``img[b]`` (``[B, H, W, 3]``), in place, visiting only stroke pixels.

    A prompt of one primitive is blended pixel by pixel as its coverage is computed;
    a union of several is first accumulated (maximum coverage) in a scratch buffer
    over its region, then blended once. Primitives travel as tuples of scalars:
    arrays passed to helpers or sliced per pixel cost reference counting.
    """
    h, w = img.shape[1], img.shape[2]
    for b in range(img.shape[0]):
        x0, y0, x1, y1, count = w, h, 0, 0, 0
        for k in range(prims.shape[1]):
            if prims[b, k, 0] >= 0:
                count += 1
                x0 = min(x0, max(0, math.floor(prims[b, k, 6])))
                y0 = min(y0, max(0, math.floor(prims[b, k, 7])))
                x1 = max(x1, min(w, math.ceil(prims[b, k, 8]) + 1))
                y1 = max(y1, min(h, math.ceil(prims[b, k, 9]) + 1))
        if count == 0 or x1 <= x0 or y1 <= y0:
            continue
        alpha, rgb = alphas[b], (colors[b, 0], colors[b, 1], colors[b, 2])
        scratch = np.zeros((y1 - y0, x1 - x0) if count > 1 else (0, 0))
        for stage in range(2 if count > 1 else 1):
            for k in range(prims.shape[1]):
                r = prims[b, k]
                p = (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
                if p[0] < 0:
                    continue
                # first spans down the rows, then second spans: one stride per pass,
                # which the hardware prefetcher follows (a quarter faster on the bench)
                for s in range(2):
                    for y in range(max(y0, math.floor(p[7])), min(y1, math.ceil(p[9]) + 1)):
                        ns, lo0, hi0, lo1, hi1 = _spans(p, y + 0.5)
                        if s >= ns:
                            continue
                        row, lo, hi = img[b, y], (lo0 if s == 0 else lo1), (hi0 if s == 0 else hi1)
                        for x in range(
                            max(x0, math.ceil(lo - 0.5)), min(x1, math.floor(hi - 0.5) + 1)
                        ):
                            if stage == 1:  # blend the union once, then clear it
                                c = scratch[y - y0, x - x0]
                                scratch[y - y0, x - x0] = 0.0
                            else:
                                c = _coverage(p, x + 0.5, y + 0.5)
                                if count > 1:
                                    scratch[y - y0, x - x0] = max(scratch[y - y0, x - x0], c)
                                    continue
                            if c > 0.0:
                                a = alpha * c
                                ai = int(a * 255.0 + 0.5)
                                for ch in range(3):
                                    if is_float:
                                        row[x, ch] += (rgb[ch] / 255.0 - row[x, ch]) * a
                                    else:
                                        row[x, ch] = _mix(int(row[x, ch]), ai, int(rgb[ch]))


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mix(v: int, a: int, c: int) -> int:  # pragma: no cover - numba
    """``(v * (255 - a) + c * a + 127) // 255`` for 8-bit ``v``, ``a``, ``c``.

    ``t // 255`` is ``(t + 1 + (t >> 8)) >> 8`` for ``0 <= t < 65535``, and cheaper
    (checked for all bytes in the tests).
    """
    t = v * (255 - a) + c * a + 127
    return (t + 1 + (t >> 8)) >> 8


def draw_numba(
    img_bhwc: np.ndarray, prims: np.ndarray, colors: np.ndarray, alphas: np.ndarray
) -> None:
    """Draw in place on a numpy ``[B, H, W, 3]`` (uint8 or float) view."""
    _draw_numba(
        img_bhwc,
        np.ascontiguousarray(prims, np.float64),
        np.ascontiguousarray(colors, np.float64),
        np.ascontiguousarray(alphas, np.float64),
        img_bhwc.dtype.kind == "f",
    )


# ----------------------------------------------------------------------------- torch path


def _coverage_torch(
    p: torch.Tensor, px: torch.Tensor, py: torch.Tensor, kinds: set[int]
) -> torch.Tensor:
    """Coverage of ``[B, Hr, Wr]`` pixel centres by primitives ``p`` ``[B, NPARAM]``.

    Only the formulas of the ``kinds`` present are evaluated.
    """

    def col(i: int) -> torch.Tensor:
        return p[:, i].view(-1, 1, 1)

    kind, hw = col(0), col(5)
    d = torch.zeros(torch.broadcast_shapes(px.shape, py.shape), dtype=px.dtype, device=px.device)
    outside = (kind < 0) | (px < col(6)) | (px > col(8)) | (py < col(7)) | (py > col(9))
    if SEGMENT in kinds:
        dx, dy = col(3) - col(1), col(4) - col(2)
        l2 = dx * dx + dy * dy
        safe = torch.where(l2 > 0, l2, torch.ones_like(l2))
        t = torch.where(l2 > 0, (((px - col(1)) * dx + (py - col(2)) * dy) / safe).clamp(0, 1), 0.0)
        d_seg = torch.hypot(px - (col(1) + t * dx), py - (col(2) + t * dy))
        d = torch.where(kind == SEGMENT, d_seg, d)
    if BOX in kinds or FRAME in kinds:
        qx = (px - 0.5 * (col(1) + col(3))).abs() - 0.5 * (col(3) - col(1))
        qy = (py - 0.5 * (col(2) + col(4))).abs() - 0.5 * (col(4) - col(2))
        d_box = (
            torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)
        ).abs()
        d = torch.where(kind == BOX, d_box, d)
        d = torch.where(kind == FRAME, torch.maximum(qx, qy).abs(), d)
    if ELLIPSE in kinds:
        is_ell = kind == ELLIPSE
        rx = torch.where(is_ell, col(3), torch.ones_like(col(3)))
        ry = torch.where(is_ell, col(4), torch.ones_like(col(4)))
        x, y = px - col(1), py - col(2)
        k0 = torch.hypot(x / rx, y / ry)
        k1 = torch.hypot(x / (rx * rx), y / (ry * ry))
        safe = torch.where(k1 > 0, k1, torch.ones_like(k1))
        d_ell = torch.where(k1 > 0, (k0 * (k0 - 1) / safe).abs(), torch.minimum(rx, ry))
        d = torch.where(is_ell, d_ell, d)
        big = hw + 1.5
        beyond = (x / (rx + big)) ** 2 + (y / (ry + big)) ** 2 > 1
        has_inner = (rx > big) & (ry > big)
        ix = torch.where(has_inner, rx - big, torch.ones_like(rx))
        iy = torch.where(has_inner, ry - big, torch.ones_like(ry))
        within = has_inner & ((x / ix) ** 2 + (y / iy) ** 2 < 1)
        outside = outside | (is_ell & (beyond | within))
    cov = (hw - d + 0.5).clamp(0, 1)
    return torch.where(outside, torch.zeros_like(cov), cov)


def draw_torch(
    images: torch.Tensor, prims: np.ndarray, colors: np.ndarray, alphas: np.ndarray
) -> None:
    """Draw in place on a torch ``[B, C, H, W]`` batch (uint8 or float), any device.

    Each prompt is drawn over its own bounding region; the regions of a batch are
    padded to a common size so the whole batch is one set of tensor ops.
    """
    b, _, h, w = images.shape
    if b == 0 or prims.shape[1] == 0:
        return
    valid = prims[..., 0] >= 0
    big = np.where(valid[..., None], prims[..., 6:10], np.array([np.inf, np.inf, -np.inf, -np.inf]))
    x0 = np.clip(np.floor(big[..., 0].min(axis=1)), 0, w).astype(np.int64)
    y0 = np.clip(np.floor(big[..., 1].min(axis=1)), 0, h).astype(np.int64)
    x1 = np.clip(np.ceil(big[..., 2].max(axis=1)) + 1, 0, w).astype(np.int64)
    y1 = np.clip(np.ceil(big[..., 3].max(axis=1)) + 1, 0, h).astype(np.int64)
    x1, y1 = np.maximum(x1, x0), np.maximum(y1, y0)
    hr, wr = int((y1 - y0).max()), int((x1 - x0).max())
    if hr == 0 or wr == 0:
        return
    dev = images.device
    fdt = torch.float64 if images.dtype == torch.float64 else torch.float32
    rows = torch.as_tensor(np.minimum(y0[:, None] + np.arange(hr)[None], h - 1), device=dev)
    cols = torch.as_tensor(np.minimum(x0[:, None] + np.arange(wr)[None], w - 1), device=dev)
    py = (rows.to(fdt) + 0.5)[:, :, None]
    px = (cols.to(fdt) + 0.5)[:, None, :]
    # pixels past a region's own end (padding) are clamped duplicates of its last row/col:
    # they compute the same value, so writing them back is harmless.
    pt = torch.as_tensor(prims, dtype=fdt, device=dev)
    cov = torch.zeros((b, hr, wr), dtype=fdt, device=dev)
    for k in range(prims.shape[1]):
        kinds = {int(v) for v in np.unique(prims[:, k, 0])} - {NONE}
        if kinds:
            cov = torch.maximum(cov, _coverage_torch(pt[:, k], px, py, kinds))
    a = cov * torch.as_tensor(alphas, dtype=fdt, device=dev).view(-1, 1, 1)
    bi = torch.arange(b, device=dev)[:, None, None]
    ri, ci = rows[:, :, None], cols[:, None, :]
    col = torch.as_tensor(colors, dtype=fdt, device=dev)[:, None, None, :]  # [B, 1, 1, C]
    patch = images.permute(0, 2, 3, 1)[bi, ri, ci]  # [B, Hr, Wr, C]
    if images.dtype == torch.uint8:
        ai = torch.floor(a * 255 + 0.5).to(torch.int32)[..., None]
        new = (patch.to(torch.int32) * (255 - ai) + col.to(torch.int32) * ai + 127) // 255
        new = new.to(torch.uint8)
    else:
        new = (patch + (col / 255 - patch) * a[..., None]).to(images.dtype)
    images.permute(0, 2, 3, 1)[bi, ri, ci] = new


def blend_coverage(
    images: torch.Tensor, cov: torch.Tensor, colors: np.ndarray, alphas: np.ndarray
) -> None:
    """Blend a full-image coverage ``[B, H, W]`` (e.g. a mask contour) in place."""
    dev = images.device
    fdt = torch.float64 if images.dtype == torch.float64 else torch.float32
    a = cov.to(fdt) * torch.as_tensor(alphas, dtype=fdt, device=dev).view(-1, 1, 1)
    col = torch.as_tensor(colors, dtype=fdt, device=dev)[:, :, None, None]
    if images.dtype == torch.uint8:
        ai = torch.floor(a * 255 + 0.5).to(torch.int32)[:, None]
        new = (images.to(torch.int32) * (255 - ai) + col.to(torch.int32) * ai + 127) // 255
        images.copy_(new.to(torch.uint8))
    else:
        images.copy_(images + (col / 255 - images) * a[:, None])


def contour_coverage(masks: torch.Tensor, lw: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` coverage of a band of width ``lw`` (pixels) along each mask's boundary."""
    m = masks.to(torch.float32)[:, None]
    eroded = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)
    edge = (m - eroded).clamp(0, 1)
    out = torch.zeros_like(m)
    for k in torch.unique(lw).tolist():
        size = max(1, round(k))
        size += 1 - size % 2
        band = torch.nn.functional.max_pool2d(edge, size, stride=1, padding=size // 2)
        sel = (lw == k).view(-1, 1, 1, 1)
        out = torch.where(sel, band, out)
    return out[:, 0]


def to_bhwc_numpy(images: Any) -> np.ndarray | None:
    """A writable numpy ``[B, H, W, C]`` view of a CPU tensor ``[B, C, H, W]`` (or None)."""
    if isinstance(images, torch.Tensor):
        if images.device.type != "cpu" or images.dtype not in (
            torch.uint8,
            torch.float32,
            torch.float64,
        ):
            return None
        return images.detach().permute(0, 2, 3, 1).numpy()
    return None
