"""Rasterising visual prompts: primitives, anti-aliased coverage, alpha blending.

Every prompt is a union of *primitives*, each with a half width ``hw``; a pixel
whose centre lies at distance ``d`` from the primitive's centre line is covered by
``clamp(hw - d + 0.5, 0, 1)`` (one pixel of anti-aliasing). The union takes the
maximum coverage, so overlapping strokes are blended once. Kinds:

* ``SEGMENT`` ``(x0, y0, x1, y1)``: a thick line (a capsule); a dot when both ends agree;
* ``BOX`` ``(x1, y1, x2, y2)``: the outline of a rectangle (distance to its boundary);
* ``ELLIPSE`` ``(cx, cy, rx, ry)``: the outline of an axis-aligned ellipse (a
  first-order distance estimate, exact on the axes).

Two interchangeable back ends draw them:

* ``torch``: pure tensor ops over each prompt's bounding region, batched (any device);
* ``numba``: a CPU kernel that visits only the pixels near each stroke (row spans),
  in place on a uint8 / float ``[B, H, W, C]`` view. The two agree to one grey level.
  Single rectangles and ellipses on uint8 images go through branch-free,
  vectorised kernels that prefetch the rows ahead (rectangles: the same bytes as
  the generic per-pixel kernel; ellipses: the same formula evaluated in float32,
  within one grey level of it; see "uint8 kernels" below).

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
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.extending import intrinsic

SEGMENT, BOX, ELLIPSE, NONE = 0, 1, 2, -1
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


def rectangle(boxes: np.ndarray, lw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Outline just outside the box, kept inside the image. ``[n, 1, NPARAM]``."""
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
    return _with_bbox(BOX, a, hw)[:, None]


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
) -> np.ndarray:
    """An arrow from outside the box to its edge, inside the image. ``[n, 3, NPARAM]``.

    The direction starts from the upper left (rotated by up to 180 degrees times
    ``jitter``). Of eight directions 45 degrees apart (tried nearest first), the first
    whose tip and tail lie in the image and whose strokes keep clear of the box is
    used; when none does, the one that keeps the most clearance, tail clamped.
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

    def inside(p: np.ndarray) -> np.ndarray:
        return (
            (p[..., 0] >= margin)
            & (p[..., 0] <= w - margin)
            & (p[..., 1] >= margin)
            & (p[..., 1] <= h - margin)
        )

    in_image = inside(tip) & inside(tail)
    ok = in_image & (clearance >= 0.5)
    best = np.argmax(clearance + 1e6 * in_image, axis=1)
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
    boxes: np.ndarray, lw: np.ndarray, seeds: np.ndarray, jitter: np.ndarray
) -> np.ndarray:
    """An equilateral triangle around the box (apex up, rotated by jitter). ``[n, 3, NPARAM]``."""
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
    return _segments(rot + c[:, None, :], hw, closed=True)


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


@numba.njit(cache=True, nogil=True)
def outlines(
    boxes: np.ndarray,
    packed: np.ndarray,
    rect_code: int,
    ellipse_code: int,
    size: tuple[int, int],
) -> np.ndarray:  # pragma: no cover - numba
    """``rectangle`` / ``ellipse`` primitives of a batch in one pass: ``[n, 1, NPARAM]``.

    ``packed`` rows are ``OverlayStyle._packed`` (code, width, jitter, scale, ...);
    code ``rect_code`` draws :func:`rectangle`, any other code :func:`ellipse` with
    the style's scale, or with scale 1 where the code is not ``ellipse_code`` (a
    contour without a mask). The arithmetic is that of those functions, in the same
    order, so the rows are the same numbers.
    """
    h, w = size
    n = boxes.shape[0]
    s = max(h, w) / 336
    out = np.empty((n, 1, NPARAM), np.float64)
    for i in range(n):
        lw = max(packed[i, 1] * s, 1.0)
        hw = lw / 2
        m = hw + 1.0
        p = out[i, 0]
        p[5] = hw
        if packed[i, 0] == rect_code:
            a0 = max(boxes[i, 0] - hw, hw)
            a1 = max(boxes[i, 1] - hw, hw)
            a2 = min(boxes[i, 2] + hw, w - hw)
            a3 = min(boxes[i, 3] + hw, h - hw)
            a2 = max(a2, a0)
            a3 = max(a3, a1)
            p[0] = BOX
            p[1], p[2], p[3], p[4] = a0, a1, a2, a3
            p[6] = min(a0, a2) - m
            p[7] = min(a1, a3) - m
            p[8] = max(a0, a2) + m
            p[9] = max(a1, a3) + m
        else:
            scale = packed[i, 3] if packed[i, 0] == ellipse_code else 1.0
            cx = (boxes[i, 0] + boxes[i, 2]) / 2
            cy = (boxes[i, 1] + boxes[i, 3]) / 2
            rx = max((boxes[i, 2] - boxes[i, 0]) / 2 * scale + hw, hw + 0.5)
            ry = max((boxes[i, 3] - boxes[i, 1]) / 2 * scale + hw, hw + 0.5)
            p[0] = ELLIPSE
            p[1], p[2], p[3], p[4] = cx, cy, rx, ry
            p[6] = cx - rx - m
            p[7] = cy - ry - m
            p[8] = cx + rx + m
            p[9] = cy + ry + m
    return out


# ----------------------------------------------------------------------------- numba kernel
#
# Ellipse outlines are also limited to the band between the ellipses with radii
# (rx +- (hw + 1.5)) (the first-order distance is poor far from the curve); both back
# ends apply the same limit, so they agree.


@numba.njit(cache=True, nogil=True, inline="always")
def _ellipse_band(
    rx: float, ry: float, hw: float
) -> tuple[float, float, float, float, bool, float, float, float, float]:  # pragma: no cover
    """The band an ellipse outline is drawn in: ellipses ``hw + 1.5`` outside and inside.

    Returns ``(ro_x, ro_y, ri_x, ri_y, inner, iox2, ioy2, iix2, iiy2)``: the outer and
    inner radii, whether the inner ellipse exists, and the inverse squared radii.
    """
    big = hw + 1.5
    ro_x, ro_y = rx + big, ry + big
    ri_x, ri_y = rx - big, ry - big
    inner = ri_x > 0.0 and ri_y > 0.0
    iox2, ioy2 = 1.0 / (ro_x * ro_x), 1.0 / (ro_y * ro_y)
    iix2 = 1.0 / (ri_x * ri_x) if inner else 0.0
    iiy2 = 1.0 / (ri_y * ri_y) if inner else 0.0
    return ro_x, ro_y, ri_x, ri_y, inner, iox2, ioy2, iix2, iiy2


@numba.njit(cache=True, nogil=True, inline="always")
def _ellipse_chord(
    dy: float, ro_x: float, ro_y: float, ri_x: float, ri_y: float, inner: bool
) -> tuple[float, float, bool]:  # pragma: no cover - numba
    """Half widths ``(xo, xi, two)`` of the band at ``dy`` (``|dy| < ro_y``) from the centre.

    ``two``: the row crosses the inner ellipse, so the band is two spans
    ``cx - xo .. cx - xi`` and ``cx + xi .. cx + xo``; otherwise one, ``cx - xo .. cx + xo``.
    """
    r = dy / ro_y
    xo = ro_x * math.sqrt(1.0 - r * r)
    two = inner and abs(dy) < ri_y
    xi = 0.0
    if two:
        r = dy / ri_y
        xi = ri_x * math.sqrt(1.0 - r * r)
    return xo, xi, two


@numba.njit(cache=True, nogil=True, inline="always")
def _ellipse_span(
    s: int, two: bool, cx: float, xo: float, xi: float
) -> tuple[float, float]:  # pragma: no cover - numba
    """``(lo, hi)`` of span ``s`` of a band row (see :func:`_ellipse_chord`)."""
    if two:
        return (cx - xo, cx - xi) if s == 0 else (cx + xi, cx + xo)
    return cx - xo, cx + xo


@numba.njit(cache=True, nogil=True, inline="always")
def _coverage(
    kind: float,
    a0: float,
    a1: float,
    a2: float,
    a3: float,
    hw: float,
    bx0: float,
    by0: float,
    bx1: float,
    by1: float,
    px: float,
    py: float,
) -> float:  # pragma: no cover - numba
    if px < bx0 or px > bx1 or py < by0 or py > by1:
        return 0.0
    if kind == 0.0:
        dx = a2 - a0
        dy = a3 - a1
        l2 = dx * dx + dy * dy
        t = 0.0
        if l2 > 0.0:
            t = ((px - a0) * dx + (py - a1) * dy) / l2
            t = min(max(t, 0.0), 1.0)
        ex = px - (a0 + t * dx)
        ey = py - (a1 + t * dy)
        d = math.sqrt(ex * ex + ey * ey)
    elif kind == 1.0:
        qx = abs(px - 0.5 * (a0 + a2)) - 0.5 * (a2 - a0)
        qy = abs(py - 0.5 * (a1 + a3)) - 0.5 * (a3 - a1)
        ox = max(qx, 0.0)
        oy = max(qy, 0.0)
        d = abs(math.sqrt(ox * ox + oy * oy) + min(max(qx, qy), 0.0))
    elif kind == 2.0:
        x = px - a0
        y = py - a1
        big = hw + 1.5
        ox = x / (a2 + big)
        oy = y / (a3 + big)
        if ox * ox + oy * oy > 1.0:
            return 0.0
        if a2 > big and a3 > big:
            ix = x / (a2 - big)
            iy = y / (a3 - big)
            if ix * ix + iy * iy < 1.0:
                return 0.0
        u = x / a2
        v = y / a3
        k0 = math.sqrt(u * u + v * v)
        u = u / a2
        v = v / a3
        k1 = math.sqrt(u * u + v * v)
        d = abs(k0 * (k0 - 1.0) / k1) if k1 > 0.0 else min(a2, a3)
    else:
        return 0.0
    c = hw - d + 0.5
    return min(max(c, 0.0), 1.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _spans(
    kind: float,
    a0: float,
    a1: float,
    a2: float,
    a3: float,
    hw: float,
    bx0: float,
    by0: float,
    bx1: float,
    by1: float,
    py: float,
    out: np.ndarray,
) -> int:  # pragma: no cover - numba
    """Conservative x-ranges (pixel centres) of row ``py`` that a primitive may cover."""
    m = hw + 0.5
    if py < by0 or py > by1:
        return 0
    if kind == 1.0:
        if py > a1 + m and py < a3 - m and a0 + m < a2 - m:  # two disjoint side spans
            out[0, 0], out[0, 1] = a0 - m, a0 + m
            out[1, 0], out[1, 1] = a2 - m, a2 + m
            return 2
        out[0, 0], out[0, 1] = a0 - m, a2 + m
        return 1
    if kind == 2.0:
        ro_x, ro_y, ri_x, ri_y, inner, _, _, _, _ = _ellipse_band(a2, a3, hw)
        dy = py - a1
        if abs(dy) >= ro_y:
            return 0
        xo, xi, two = _ellipse_chord(dy, ro_x, ro_y, ri_x, ri_y, inner)
        for s in range(2 if two else 1):
            out[s, 0], out[s, 1] = _ellipse_span(s, two, a0, xo, xi)
        return 2 if two else 1
    if kind == 0.0:
        lo, hi = bx0, bx1
        dx = a2 - a0
        dy = a3 - a1
        length = math.sqrt(dx * dx + dy * dy)
        if abs(dy) > 1e-9 * (length + 1.0):
            xl = a0 + (py - a1) * dx / dy
            half = m * length / abs(dy) + 1.0
            lo = max(lo, xl - half)
            hi = min(hi, xl + half)
        if hi < lo:
            return 0
        out[0, 0], out[0, 1] = lo, hi
        return 1
    return 0


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mix(v: Any, a: Any, c: Any) -> Any:  # pragma: no cover - numba
    """``(v * (255 - a) + c * a + 127) // 255`` for 8-bit ``v``, ``a``, ``c``, in uint32.

    ``t // 255`` is ``(t + 1 + (t >> 8)) >> 8``, exact for ``0 <= t < 65535`` (here
    ``t <= 255 * 255 + 127``; checked exhaustively in the tests).
    """
    a32 = np.uint32(a)
    t = np.uint32(v) * (np.uint32(255) - a32) + np.uint32(c) * a32 + np.uint32(127)
    return np.uint8((t + np.uint32(1) + (t >> np.uint32(8))) >> np.uint32(8))


@numba.njit(cache=True, nogil=True, inline="always")
def _blend(
    img: np.ndarray,
    b: int,
    y: int,
    x: int,
    c: float,
    colors: np.ndarray,
    alpha: float,
    is_float: bool,
) -> None:  # pragma: no cover - numba
    a = alpha * c
    if is_float:
        for ch in range(img.shape[3]):
            v = img[b, y, x, ch]
            img[b, y, x, ch] = v + (colors[b, ch] / 255.0 - v) * a
    else:
        ai = np.uint32(a * 255.0 + 0.5)
        for ch in range(img.shape[3]):
            img[b, y, x, ch] = _mix(img[b, y, x, ch], ai, colors[b, ch])


@numba.njit(cache=True, nogil=True, inline="always")
def _put(
    row: np.ndarray, x: int, a: float, cr: float, cg: float, cb: float, is_float: bool
) -> None:  # pragma: no cover - numba
    """Blend colour ``(cr, cg, cb)`` (0-255) at opacity ``a`` into ``row[x]`` (a ``[W, C]`` view)."""
    if is_float:
        v = row[x, 0]
        row[x, 0] = v + (cr / 255.0 - v) * a
        v = row[x, 1]
        row[x, 1] = v + (cg / 255.0 - v) * a
        v = row[x, 2]
        row[x, 2] = v + (cb / 255.0 - v) * a
    else:
        ai = np.uint32(a * 255.0 + 0.5)
        row[x, 0] = _mix(row[x, 0], ai, cr)
        row[x, 1] = _mix(row[x, 1], ai, cg)
        row[x, 2] = _mix(row[x, 2], ai, cb)


@numba.njit(cache=True, nogil=True)
def _fast_box(
    img: np.ndarray,
    b: int,
    p: np.ndarray,
    alpha: float,
    cr: float,
    cg: float,
    cb: float,
    is_float: bool,
) -> None:  # pragma: no cover - numba
    """One rectangle outline, row by row over its edges only (same coverage as ``_coverage``)."""
    h, w = img.shape[1], img.shape[2]
    a0, a1, a2, a3, hw = p[1], p[2], p[3], p[4], p[5]
    m = hw + 0.5
    cx, cy = 0.5 * (a0 + a2), 0.5 * (a1 + a3)
    hx, hy = 0.5 * (a2 - a0), 0.5 * (a3 - a1)
    bx0, bx1 = p[6], p[8]  # locals: stores into img could alias p for the compiler
    ya = max(0, math.floor(p[7]))
    yb = min(h, math.ceil(p[9]) + 1)
    xlo = max(0, math.floor(p[6]))
    xhi = min(w, math.ceil(p[8]) + 1)
    for y in range(ya, yb):
        py = y + 0.5
        if py < p[7] or py > p[9]:
            continue
        qy = abs(py - cy) - hy
        row = img[b, y]
        two = py > a1 + m and py < a3 - m and a0 + m < a2 - m
        for s in range(2 if two else 1):
            if two:
                lo, hi = (a0 - m, a0 + m) if s == 0 else (a2 - m, a2 + m)
            else:
                lo, hi = a0 - m, a2 + m
            xa = max(xlo, math.ceil(lo - 0.5))
            xb = min(xhi, math.floor(hi - 0.5) + 1)
            for x in range(xa, xb):
                px = x + 0.5
                if px < bx0 or px > bx1:
                    continue
                qx = abs(px - cx) - hx
                if qx > 0.0 and qy > 0.0:
                    d = math.sqrt(qx * qx + qy * qy)
                else:
                    d = abs(max(qx, qy))
                c = hw - d + 0.5
                if c > 0.0:
                    _put(row, x, alpha * min(c, 1.0), cr, cg, cb, is_float)


@numba.njit(cache=True, nogil=True)
def _fast_ellipse(
    img: np.ndarray,
    b: int,
    p: np.ndarray,
    alpha: float,
    cr: float,
    cg: float,
    cb: float,
    is_float: bool,
) -> None:  # pragma: no cover - numba
    """One ellipse outline over its ring band only (same coverage as ``_coverage``)."""
    h, w = img.shape[1], img.shape[2]
    cx, cy, rx, ry, hw = p[1], p[2], p[3], p[4], p[5]
    ro_x, ro_y, ri_x, ri_y, inner, iox2, ioy2, iix2, iiy2 = _ellipse_band(rx, ry, hw)
    irx, iry = 1.0 / rx, 1.0 / ry
    irx2, iry2 = irx * irx, iry * iry
    bx0, bx1 = p[6], p[8]  # locals: stores into img could alias p for the compiler
    ya = max(0, math.floor(p[7]))
    yb = min(h, math.ceil(p[9]) + 1)
    xlo = max(0, math.floor(p[6]))
    xhi = min(w, math.ceil(p[8]) + 1)
    for yi in range(ya, yb):
        py = yi + 0.5
        if py < p[7] or py > p[9]:
            continue
        dy = py - cy
        if abs(dy) >= ro_y:
            continue
        row = img[b, yi]
        xo, xi, two = _ellipse_chord(dy, ro_x, ro_y, ri_x, ri_y, inner)
        v = dy * iry
        vv = v * v
        v2 = dy * iry2
        v2v2 = v2 * v2
        oy_term = dy * dy * ioy2
        iy_term = dy * dy * iiy2
        for s in range(2 if two else 1):
            lo, hi = _ellipse_span(s, two, cx, xo, xi)
            xa = max(xlo, math.ceil(lo - 0.5))
            xb = min(xhi, math.floor(hi - 0.5) + 1)
            for xi_ in range(xa, xb):
                px = xi_ + 0.5
                if px < bx0 or px > bx1:
                    continue
                x = px - cx
                if x * x * iox2 + oy_term > 1.0:
                    continue
                if inner and x * x * iix2 + iy_term < 1.0:
                    continue
                u = x * irx
                k0 = math.sqrt(u * u + vv)
                u2 = x * irx2
                k1 = math.sqrt(u2 * u2 + v2v2)
                d = abs(k0 * (k0 - 1.0) / k1) if k1 > 0.0 else min(rx, ry)
                c = hw - d + 0.5
                if c > 0.0:
                    _put(row, xi_, alpha * min(c, 1.0), cr, cg, cb, is_float)


# ----------------------------------------------------------------------------- prefetching
#
# A batch is tens of MB and each prompt touches a few cache lines per row, far apart:
# drawn straight after other work, the kernels wait on memory more than they compute.
# They prefetch the lines of the row ``_AHEAD`` rows below the one being drawn (and the
# first ``_AHEAD`` rows when a prompt starts), so that many misses are in flight at
# once. Prefetches are hints: they change no value.

#: Rows of look-ahead of the uint8 kernels' prefetches.
_AHEAD = 8


def _prefetch_intrinsic(typingctx: Any, arr: Any, offset: Any) -> Any:  # pragma: no cover - numba
    """``_prefetch(arr, offset)``: prefetch the line at byte ``offset`` of ``arr``'s data."""
    if not isinstance(arr, types.Array) or not isinstance(offset, types.Integer):
        return None
    sig = types.void(arr, offset)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = llvm_ir.IntType(8).as_pointer()
        ptr = builder.gep(builder.bitcast(ary.data, i8p), [args[1]])
        i32 = llvm_ir.IntType(32)
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(1), i32(3), i32(1)])  # for a write, into L1
        return context.get_dummy_value()

    return sig, codegen


_prefetch: Any = intrinsic(_prefetch_intrinsic)


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_px(img: np.ndarray, b: int, y: int, xa: int, xb: int) -> None:  # pragma: no cover
    """Prefetch the lines of pixels ``xa .. xb`` (exclusive) of row ``y`` of image ``b``.

    Channels more than a line apart (a channels-first batch's planes) are prefetched
    one by one.
    """
    if xb <= xa:
        return
    base = b * img.strides[0] + y * img.strides[1]
    step = img.strides[2]
    if img.strides[3] < 64:
        for x in range(xa, xb, 16):
            _prefetch(img, base + x * step)
        _prefetch(img, base + (xb - 1) * step)
    else:
        for c in range(img.shape[3]):
            lo = base + c * img.strides[3] + xa * step
            for x in range(0, (xb - xa) * step, 64):
                _prefetch(img, lo + x)
            _prefetch(img, lo + (xb - 1 - xa) * step)


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_ellipse_row(
    img: np.ndarray,
    b: int,
    y: int,
    cx: float,
    cy: float,
    ro_x: float,
    ro_y: float,
    ri_x: float,
    ri_y: float,
    inner: bool,
    xlo: int,
    xhi: int,
) -> None:  # pragma: no cover - numba
    """Prefetch (about) the pixels an ellipse outline touches in row ``y``."""
    dy = y + 0.5 - cy
    if abs(dy) >= ro_y:
        return
    xo, xi, two = _ellipse_chord(dy, ro_x, ro_y, ri_x, ri_y, inner)
    lo = max(xlo, int(cx - xo) - 1)
    hi = min(xhi, int(cx + xo) + 2)
    if two:
        _prefetch_px(img, b, y, lo, min(hi, int(cx - xi) + 2))
        _prefetch_px(img, b, y, max(lo, int(cx + xi) - 1), hi)
    else:
        _prefetch_px(img, b, y, lo, hi)


# ----------------------------------------------------------------------------- explicit vectors
#
# LLVM vectorises a loop 32 elements at a time (8 lanes, 4 interleaved) and runs
# shorter trip counts, and every loop's remainder, one element at a time. A span is
# mostly 5-40 bytes (2-13 pixels), so most of the kernels' work ran scalar. The two
# intrinsics below write the vector code out instead, as LLVM IR on fixed-width
# vectors (which LLVM lowers to whatever the CPU has: AVX2, SSE, NEON):
#
# * ``_mix_block8`` / ``_mix_block16`` blend 8 / 16 bytes with ``_mix``'s integer
#   formula in 16-bit lanes (``t <= 255 * 255 + 127`` and ``t + 1 + (t >> 8)`` fit);
#   ``_mix_span`` covers a span of ``n`` bytes with them: whole blocks, then a last
#   block that ends at the span's end and may overlap the one before. Both blocks
#   of that pair are loaded before either is stored, so the overlapping bytes get
#   the same value twice; no byte outside the span is read or written.
# * ``_ellipse_opacity8`` evaluates the uint8 ellipse kernel's float32 coverage for
#   8 pixels at once: the same IEEE operations in the same order as the scalar
#   formula (no fused or approximate ones), lane by lane.


def _items(ty: Any) -> list[Any]:
    """The numba types of an integer argument, or of each item of a tuple argument."""
    if isinstance(ty, types.BaseTuple):
        items: Any = ty  # numba's tuple types index like tuples
        return [items[i] for i in range(len(items))]
    return [ty]


def _index(context: Any, builder: Any, value: Any, ty: Any) -> list[Any]:  # pragma: no cover
    """The intp values of an integer or a tuple of integers (a numba intrinsic argument)."""
    if isinstance(ty, types.BaseTuple):
        return [
            context.cast(builder, builder.extract_value(value, i), t, types.intp)
            for i, t in enumerate(_items(ty))
        ]
    return [context.cast(builder, value, ty, types.intp)]


def _is_index(ty: Any) -> bool:
    """An integer, or a tuple of integers."""
    return all(isinstance(t, types.Integer) for t in _items(ty))


def _mix_block_intrinsic(width: int) -> Any:
    """An intrinsic ``(flat, j, ab, o, c3, jc)``: ``_mix`` over ``width`` bytes at a time.

    Blends ``flat[j : j + width]`` with opacities ``ab[o : o + width]`` and colours
    ``c3[jc : jc + width]`` (uint8 arrays, no bounds checks). ``j``, ``o``, ``jc`` are
    integers, or equally long tuples of integers for several blocks: all are loaded
    before any is stored.
    """

    def typer(typingctx: Any, flat: Any, j: Any, ab: Any, o: Any, c3: Any, jc: Any) -> Any:
        if not all(
            isinstance(t, types.Array) and t.dtype == types.uint8 for t in (flat, ab, c3)
        ) or not all(_is_index(t) for t in (j, o, jc)):
            return None

        def codegen(
            context: Any, builder: Any, signature: Any, args: Any
        ) -> Any:  # pragma: no cover
            i8, i16 = llvm_ir.IntType(8), llvm_ir.IntType(16)
            vb, vw = llvm_ir.VectorType(i8, width), llvm_ir.VectorType(i16, width)

            def pointers(k: int) -> list[Any]:  # the blocks of array argument k
                ary = context.make_array(signature.args[k])(context, builder, args[k])
                data = builder.bitcast(ary.data, i8.as_pointer())
                offsets = _index(context, builder, args[k + 1], signature.args[k + 1])
                return [builder.bitcast(builder.gep(data, [i]), vb.as_pointer()) for i in offsets]

            def splat(value: int) -> Any:
                return llvm_ir.Constant(vw, [value] * width)

            dst, ops, cols = pointers(0), pointers(2), pointers(4)
            out = []
            for p, q, r in zip(dst, ops, cols, strict=True):
                v = builder.zext(builder.load(p, align=1), vw)
                a = builder.zext(builder.load(q, align=1), vw)
                c = builder.zext(builder.load(r, align=1), vw)
                t = builder.mul(v, builder.sub(splat(255), a))
                t = builder.add(builder.add(t, builder.mul(c, a)), splat(127))
                t = builder.add(builder.add(t, splat(1)), builder.lshr(t, splat(8)))
                out.append(builder.trunc(builder.lshr(t, splat(8)), vb))
            for p, value in zip(dst, out, strict=True):
                builder.store(value, p, align=1)
            return context.get_dummy_value()

        return types.void(flat, j, ab, o, c3, jc), codegen

    return intrinsic(typer)


_mix_block8: Any = _mix_block_intrinsic(8)
_mix_block16: Any = _mix_block_intrinsic(16)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mix_span(
    flat: np.ndarray, j0: Any, ab: np.ndarray, o0: Any, c3: np.ndarray, oc: Any, n: int
) -> None:  # pragma: no cover - numba
    """``flat[j0 + k] = _mix(flat[j0 + k], ab[o0 + k], c3[oc + k])`` for ``k < n``, in blocks.

    ``j0``, ``o0``, ``oc``: signed integers. Reads and writes no byte of ``flat``
    outside ``j0 .. j0 + n``; the caller keeps all three ranges inside their arrays.
    """
    if n >= 16:
        k = 0
        while n - k > 32:
            _mix_block16(flat, j0 + k, ab, o0 + k, c3, oc + k)
            k += 16
        e = n - 16  # the last block ends at n: it may overlap block k
        _mix_block16(flat, (j0 + k, j0 + e), ab, (o0 + k, o0 + e), c3, (oc + k, oc + e))
    elif n >= 8:
        e = n - 8
        _mix_block8(flat, (j0, j0 + e), ab, (o0, o0 + e), c3, (oc, oc + e))
    else:
        for k in range(n):
            j = np.uint64(j0 + k)
            flat[j] = _mix(flat[j], ab[np.uint64(o0 + k)], c3[np.uint64(oc + k)])


def _ellipse_opacity8_intrinsic(
    typingctx: Any, ab: Any, off: Any, ix0: Any, fx: Any, fy: Any
) -> Any:
    """``_ellipse_opacity8(ab, off, ix0, fx, fy)``: the opacities of 8 pixels of a band row.

    Pixels ``ix0 .. ix0 + 7`` (``ix0`` an int32); each one's 0-255 opacity is written
    three times (once per channel) to ``ab[off : off + 24]`` (uint8, no bounds check).
    ``fx``: the prompt's float32 constants ``(cx - 0.5, 1 / ro_x**2, 1 / ri_x**2,
    1 / rx, 1 / rx**2, min(rx, ry), hw, 255 * alpha)``; ``fy``: the row's float32 terms
    ``(dy**2 / ro_y**2, dy**2 / ri_y**2, (dy / ry)**2, (dy / ry**2)**2)``, where a
    prompt without an inner ellipse passes ``1 / ri_x**2 = 0`` and ``dy**2 / ri_y**2 =
    1`` (every pixel passes the inner test). See "float32 ellipse coverage" below.
    """
    f32 = types.float32
    if not (
        isinstance(ab, types.Array)
        and ab.dtype == types.uint8
        and isinstance(off, types.Integer)
        and ix0 == types.int32
        and isinstance(fx, types.UniTuple)
        and fx.count == 8
        and fx.dtype == f32
        and isinstance(fy, types.UniTuple)
        and fy.count == 4
        and fy.dtype == f32
    ):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:  # pragma: no cover
        lanes = 8
        f32t, i32, i8 = llvm_ir.FloatType(), llvm_ir.IntType(32), llvm_ir.IntType(8)
        vf, vi = llvm_ir.VectorType(f32t, lanes), llvm_ir.VectorType(i32, lanes)
        vb = llvm_ir.VectorType(i8, lanes)

        def splat(value: Any, vty: Any) -> Any:
            undef = llvm_ir.Constant(vty, llvm_ir.Undefined)
            first = builder.insert_element(undef, value, i32(0))
            return builder.shuffle_vector(first, undef, llvm_ir.Constant(vi, [0] * lanes))

        def const(value: float) -> Any:
            return llvm_ir.Constant(vf, [value] * lanes)

        def unary(name: str, value: Any) -> Any:
            fnty = llvm_ir.FunctionType(vf, [vf])
            fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.{name}.v8f32")
            return builder.call(fn, [value])

        def lt(a: Any, b: Any) -> Any:
            return builder.fcmp_ordered("<", a, b)

        fcx, fiox2, fiix2, firx, firx2, fd0, fhw, fal = (
            splat(builder.extract_value(args[3], i), vf) for i in range(8)
        )
        foy, fiy, fvv, fv2 = (splat(builder.extract_value(args[4], i), vf) for i in range(4))
        zero, one, half = const(0.0), const(1.0), const(0.5)
        ix = builder.add(splat(args[2], vi), llvm_ir.Constant(vi, list(range(lanes))))
        x = builder.fsub(builder.sitofp(ix, vf), fcx)
        xx = builder.fmul(x, x)
        band = builder.fcmp_ordered("<=", builder.fadd(builder.fmul(xx, fiox2), foy), one)
        inside = builder.fcmp_ordered(">=", builder.fadd(builder.fmul(xx, fiix2), fiy), one)
        band = builder.and_(band, inside)
        u = builder.fmul(x, firx)
        k0 = unary("sqrt", builder.fadd(builder.fmul(u, u), fvv))
        u2 = builder.fmul(x, firx2)
        k1 = unary("sqrt", builder.fadd(builder.fmul(u2, u2), fv2))
        q = unary("fabs", builder.fdiv(builder.fmul(k0, builder.fsub(k0, one)), k1))
        d = builder.select(lt(zero, k1), q, fd0)
        c = builder.fadd(builder.fsub(fhw, d), half)
        capped = builder.select(lt(one, c), one, c)  # min(c, 1)
        c = builder.select(builder.and_(band, lt(zero, c)), capped, zero)
        a = builder.trunc(builder.fptosi(builder.fadd(builder.fmul(fal, c), half), vi), vb)
        triple = llvm_ir.Constant(llvm_ir.VectorType(i32, 3 * lanes), [k // 3 for k in range(24)])
        a3 = builder.shuffle_vector(a, llvm_ir.Constant(vb, llvm_ir.Undefined), triple)
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        (offset,) = _index(context, builder, args[1], signature.args[1])
        ptr = builder.gep(builder.bitcast(ary.data, i8.as_pointer()), [offset])
        builder.store(a3, builder.bitcast(ptr, a3.type.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(ab, off, ix0, fx, fy), codegen


_ellipse_opacity8: Any = intrinsic(_ellipse_opacity8_intrinsic)


@numba.njit(cache=True, nogil=True, inline="always")
def _centre_range(x0: float, x1: float) -> tuple[int, int]:  # pragma: no cover - numba
    """The first and last pixel ``i`` whose centre ``i + 0.5`` lies in ``[x0, x1]``."""
    lo = math.ceil(x0 - 0.5)
    while lo + 0.5 < x0:
        lo += 1
    while (lo - 1) + 0.5 >= x0:
        lo -= 1
    hi = math.floor(x1 - 0.5)
    while hi + 0.5 > x1:
        hi -= 1
    while (hi + 1) + 0.5 <= x1:
        hi += 1
    return lo, hi


# ----------------------------------------------------------------------------- uint8 kernels
#
# The uint8 kernels below draw what ``_fast_box`` / ``_fast_ellipse`` with ``_put``
# draw, in vector form (the rectangle kernel the same bytes, the ellipse kernel with
# float32 coverage, below):
#
# * every pixel of a row span is blended; a pixel that the coverage formula leaves
#   out (outside the band or the box, or coverage <= 0) gets ``ai = 0``, and
#   ``(v * 255 + 127) // 255 == v`` leaves it unchanged, so the loops have no
#   data-dependent branches;
# * per span, each byte's 0-255 opacity ``ai`` goes into a uint8 scratch row first
#   (the rectangle's coverage expressions are those of ``_fast_box`` verbatim, so
#   the float64 values are the same; the ellipse's are ``_ellipse_opacity8``'s, 8
#   pixels at a time), then the span's bytes are blended with ``_mix``'s formula, as
#   ``_put`` does;
# * on a C-contiguous ``[B, H, W, 3]`` batch the blend runs over the row's bytes
#   (``flat``) in vector blocks (``_mix_span``); on a channels-first batch (the
#   ``[B, H, W, 3]`` view of a torch ``[B, 3, H, W]`` one) over each plane's bytes,
#   with the pixels' opacities gathered into ``ap``; on any other view pixel by
#   pixel, with 3 channels (see ``flat_bytes``);
# * the loops index with unsigned integers (no negative-index wraparound) and make
#   no array views;
# * numba counts the references of an inlined helper's array arguments and, for
#   some helpers, cannot drop that counting (calls into the runtime) around their
#   loops. Span helpers taking arrays cost a fifth of the time of a rectangle's
#   short spans that way; a helper holding the three-way blend dispatch above added
#   seven runtime calls to the rectangle kernel and a third to the batch's time. So
#   the kernels inline scalar helpers (``_mix``, ``_mix_px``, ``_box_opacity``) and
#   ``_mix_span`` (which added none), and write the dispatch out in each kernel;
# * ``error_model="numpy"``: no zero-division checks in the loops (the coverage
#   selects ``d0`` where ``k1 == 0``, as ``_fast_ellipse`` does).
#
# A rectangle's rows between its top and bottom edges all have the same two side
# spans; their opacities are computed once per prompt and reused wherever that is
# exact (the row's ``qy`` is at most every ``qx`` of the spans and not positive,
# so the distance is ``|qx|`` whatever the row). In a row along the top or bottom
# edge, the pixels between the corners all have the distance ``|qy|``
# (``_box_middle``): the ends of the span are computed pixel by pixel, the middle
# gets one value.
#
# float32 ellipse coverage: the ellipse kernel evaluates ``_fast_ellipse``'s formula
# with 8 float32 lanes where float64 has 4 (its two square roots and division per
# pixel were most of its time). The terms of a row (``dy`` and its squares scaled)
# are computed in float64 and rounded to float32; per pixel, ``x = float32(ix) -
# float32(cx - 0.5)`` for pixel index ``ix``, the band test, ``k0``, ``k1``, ``d``
# and ``c = min(hw - d + 0.5, 1)`` are float32 operations (IEEE, no fused or
# approximate ones), and ``ai = int(float32(255 * alpha) * c + 0.5)``. The test
# ``x + 0.5`` inside the bounding box is exact integer clipping of the span
# (``_centre_range``). A brute-force numpy float32 reference gives the same bytes
# (tests/overlay/test_raster.py); the float64 kernels differ by one grey level at a
# few pixels in a hundred thousand.


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mix_px(
    img: np.ndarray, b: int, y: int, x: int, a: Any, c3: np.ndarray
) -> None:  # pragma: no cover - numba
    """Blend colour ``c3[:3]`` into pixel ``(y, x)`` of image ``b`` at opacity ``a``."""
    ub, uy, ux = np.uint64(b), np.uint64(y), np.uint64(x)
    for ch in range(3):
        uc = np.uint64(ch)
        img[ub, uy, ux, uc] = _mix(img[ub, uy, ux, uc], a, c3[ch])


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _box_opacity(
    px: float, qy: float, cx: float, hx: float, hw: float, bx0: float, bx1: float, alpha: float
) -> Any:  # pragma: no cover - numba
    """The 0-255 opacity of a rectangle outline at pixel centre ``px`` of a row with ``qy``."""
    qx = abs(px - cx) - hx
    dc = math.sqrt(qx * qx + qy * qy)
    dm = abs(max(qx, qy))
    d = dc if (qx > 0.0) & (qy > 0.0) else dm
    c = hw - d + 0.5
    c = min(c, 1.0) if (px >= bx0) & (px <= bx1) & (c > 0.0) else 0.0
    return np.uint8(np.int32(alpha * c * 255.0 + 0.5))


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _box_middle(
    px: float, qy: float, cx: float, hx: float, bx0: float, bx1: float
) -> bool:  # pragma: no cover - numba
    """Whether pixel centre ``px`` of a row with ``qy`` lies between a rectangle's corners.

    There (``qx <= min(qy, 0)``, inside the bounding box) ``_box_opacity``'s distance
    is ``|qy|`` whatever ``px``. ``qx`` is monotone on each side of ``cx``, so along a
    row these pixels form one run.
    """
    qx = abs(px - cx) - hx
    return (qx <= qy) & (qx <= 0.0) & (px >= bx0) & (px <= bx1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _u8_box(
    img: np.ndarray,
    flat: np.ndarray,
    b: int,
    p: np.ndarray,
    alpha: float,
    c3: np.ndarray,
    ab: np.ndarray,
    ap: np.ndarray,
    planar: bool,
) -> None:  # pragma: no cover - numba
    """``_fast_box`` on uint8 ``[B, H, W, 3]`` images, vectorised (same bytes).

    ``ab``: uint8 scratch of ``9 * W``: a row span's per-byte opacities, then the
    two cached side spans' (``3 * W`` each); ``c3``: the colour as ``r g b r g b ...``
    (``3 * W`` bytes), or where ``planar`` as three runs ``r r ... g g ... b b ...``
    of ``W`` bytes each after those; ``ap``: scratch of ``W``; ``flat``, ``planar``:
    :func:`flat_bytes` of ``img``.
    """
    h, w = img.shape[1], img.shape[2]
    a0, a1, a2, a3, hw = p[1], p[2], p[3], p[4], p[5]
    m = hw + 0.5
    cx, cy = 0.5 * (a0 + a2), 0.5 * (a1 + a3)
    hx, hy = 0.5 * (a2 - a0), 0.5 * (a3 - a1)
    bx0, by0, bx1, by1 = p[6], p[7], p[8], p[9]
    ya = max(0, math.floor(by0))
    yb = min(h, math.ceil(by1) + 1)
    xlo = max(0, math.floor(bx0))
    xhi = min(w, math.ceil(bx1) + 1)
    # the two side spans of the rows between the top and bottom edges
    sxa = np.empty(2, np.int64)
    sn = np.empty(2, np.int64)
    qx_min = math.inf
    for s in range(2):
        lo, hi = (a0 - m, a0 + m) if s == 0 else (a2 - m, a2 + m)
        sxa[s] = max(xlo, math.ceil(lo - 0.5))
        sn[s] = max(0, min(xhi, math.floor(hi - 0.5) + 1) - sxa[s])
        for k in range(sn[s]):
            qx_min = min(qx_min, abs((sxa[s] + k) + 0.5 - cx) - hx)
    cached = 0  # bit s: side span s's opacities are in ab
    for yp in range(ya, yb + _AHEAD):
        if yp < yb:  # prefetch _AHEAD rows below the one drawn
            pyp = yp + 0.5
            if pyp > a1 + m and pyp < a3 - m and a0 + m < a2 - m:
                _prefetch_px(img, b, yp, sxa[0], sxa[0] + sn[0])
                _prefetch_px(img, b, yp, sxa[1], sxa[1] + sn[1])
            else:
                _prefetch_px(img, b, yp, xlo, xhi)
        y = yp - _AHEAD
        if y < ya:
            continue
        py = y + 0.5
        if py < by0 or py > by1:
            continue
        qy = abs(py - cy) - hy
        two = py > a1 + m and py < a3 - m and a0 + m < a2 - m
        for s in range(2 if two else 1):
            if two:
                xa, n = sxa[s], sn[s]
            else:
                xa = max(xlo, math.ceil(a0 - m - 0.5))
                n = min(xhi, math.floor(a2 + m - 0.5) + 1) - xa
            if n <= 0:
                continue
            # opacities: the side span's cached ones where exact, else this row's
            fill, off, q = True, 0, qy
            if two and qy <= 0.0 and qy <= qx_min:
                fill, off, q = (cached >> s) & 1 == 0, 3 * w * (s + 1), -math.inf
                cached |= 1 << s
            if fill:
                # pixels between the corners (qx <= min(q, 0), in the box) all have
                # d = |q|: the ends one by one, the middle with one value
                k0, k1 = 0, n
                while k0 < k1 and not _box_middle((xa + k0) + 0.5, q, cx, hx, bx0, bx1):
                    a = _box_opacity((xa + k0) + 0.5, q, cx, hx, hw, bx0, bx1, alpha)
                    i = np.uint64(off + 3 * k0)
                    ab[i] = a
                    ab[i + np.uint64(1)] = a
                    ab[i + np.uint64(2)] = a
                    k0 += 1
                while k1 > k0 and not _box_middle((xa + k1 - 1) + 0.5, q, cx, hx, bx0, bx1):
                    k1 -= 1
                    a = _box_opacity((xa + k1) + 0.5, q, cx, hx, hw, bx0, bx1, alpha)
                    i = np.uint64(off + 3 * k1)
                    ab[i] = a
                    ab[i + np.uint64(1)] = a
                    ab[i + np.uint64(2)] = a
                if k1 > k0:
                    a = _box_opacity((xa + k0) + 0.5, q, cx, hx, hw, bx0, bx1, alpha)
                    for k in range(off + 3 * k0, off + 3 * k1):
                        ab[np.uint64(k)] = a
            if flat.shape[0] == 0:  # see "uint8 kernels" above on this block
                for k in range(n):
                    _mix_px(img, b, y, xa + k, ab[np.uint64(off + 3 * k)], c3)
            elif not planar:
                _mix_span(flat, ((b * h + y) * w + xa) * 3, ab, off, c3, 0, 3 * n)
            else:
                for k in range(n):
                    ap[np.uint64(k)] = ab[np.uint64(off + 3 * k)]
                for ch in range(3):
                    _mix_span(flat, ((b * 3 + ch) * h + y) * w + xa, ap, 0, c3, (3 + ch) * w, n)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _u8_ellipse(
    img: np.ndarray,
    flat: np.ndarray,
    b: int,
    p: np.ndarray,
    alpha: float,
    c3: np.ndarray,
    ab: np.ndarray,
    ap: np.ndarray,
    planar: bool,
) -> None:  # pragma: no cover - numba
    """``_fast_ellipse`` on uint8 ``[B, H, W, 3]`` images, vectorised, float32 coverage."""
    h, w = img.shape[1], img.shape[2]
    cx, cy, rx, ry, hw = p[1], p[2], p[3], p[4], p[5]
    ro_x, ro_y, ri_x, ri_y, inner, iox2, ioy2, iix2, iiy2 = _ellipse_band(rx, ry, hw)
    no_inner = not inner
    irx, iry = 1.0 / rx, 1.0 / ry
    irx2, iry2 = irx * irx, iry * iry
    bx0, by0, bx1, by1 = p[6], p[7], p[8], p[9]
    ya = max(0, math.floor(by0))
    yb = min(h, math.ceil(by1) + 1)
    xlo = max(0, math.floor(bx0))
    xhi = min(w, math.ceil(bx1) + 1)
    # the coverage's float32 constants (see "float32 ellipse coverage" above)
    f1 = np.float32(1.0)
    fcx = np.float32(cx - 0.5)
    fiox2, fiix2 = np.float32(iox2), np.float32(iix2)
    firx, firx2 = np.float32(irx), np.float32(irx2)
    fd0, fhw, fal = np.float32(min(rx, ry)), np.float32(hw), np.float32(alpha * 255.0)
    fx = (fcx, fiox2, fiix2, firx, firx2, fd0, fhw, fal)
    ixlo, ixhi = _centre_range(bx0, bx1)  # the pixels inside the bounding box
    for yp in range(ya, min(yb, ya + _AHEAD)):
        _prefetch_ellipse_row(img, b, yp, cx, cy, ro_x, ro_y, ri_x, ri_y, inner, xlo, xhi)
    for yi in range(ya, yb):
        if yi + _AHEAD < yb:
            _prefetch_ellipse_row(
                img, b, yi + _AHEAD, cx, cy, ro_x, ro_y, ri_x, ri_y, inner, xlo, xhi
            )
        py = yi + 0.5
        if py < by0 or py > by1:
            continue
        dy = py - cy
        if abs(dy) >= ro_y:
            continue
        xo, xi, two = _ellipse_chord(dy, ro_x, ro_y, ri_x, ri_y, inner)
        v = dy * iry
        v2 = dy * iry2
        fvv = np.float32(v * v)
        fv2 = np.float32(v2 * v2)
        foy = np.float32(dy * dy * ioy2)
        fy = (foy, f1 if no_inner else np.float32(dy * dy * iiy2), fvv, fv2)
        for s in range(2 if two else 1):
            lo, hi = _ellipse_span(s, two, cx, xo, xi)
            xa = max(xlo, ixlo, math.ceil(lo - 0.5))
            n = min(xhi, ixhi + 1, math.floor(hi - 0.5) + 1) - xa
            if n <= 0:
                continue
            for k in range(0, n, 8):  # ab has room for n rounded up to 8 pixels
                _ellipse_opacity8(ab, 3 * k, np.int32(xa + k), fx, fy)
            if flat.shape[0] == 0:
                for k in range(n):
                    _mix_px(img, b, yi, xa + k, ab[3 * k], c3)
            elif not planar:
                _mix_span(flat, ((b * h + yi) * w + xa) * 3, ab, 0, c3, 0, 3 * n)
            else:
                for k in range(n):
                    ap[k] = ab[3 * k]
                for ch in range(3):
                    _mix_span(flat, ((b * 3 + ch) * h + yi) * w + xa, ap, 0, c3, (3 + ch) * w, n)


@numba.njit(cache=True, nogil=True)
def _draw_numba(
    img: np.ndarray,
    prims: np.ndarray,
    colors: np.ndarray,
    alphas: np.ndarray,
    is_float: bool,
    flat: np.ndarray,
    planar: bool,
) -> None:  # pragma: no cover - numba
    """Draw ``prims[b]`` on ``img[b]`` (``[B, H, W, C]``), in place, visiting only stroke pixels.

    A prompt made of one primitive is blended in one pass; a union of several is
    first accumulated (maximum coverage) in a scratch buffer over its region.
    ``flat``, ``planar``: :func:`flat_bytes` of ``img``.
    """
    nb, h, w = img.shape[0], img.shape[1], img.shape[2]
    nk = prims.shape[1]
    spans = np.empty((2, 2), np.float64)
    fast_u8 = not is_float and img.shape[3] == 3
    ab = np.empty(9 * w + 24 if fast_u8 else 0, np.uint8)
    c3 = np.empty(6 * w if fast_u8 else 0, np.uint8)  # see _u8_box
    ap = np.empty(w if fast_u8 else 0, np.uint8)
    for b in range(nb):
        x0, y0, x1, y1 = w, h, 0, 0
        count = 0
        for k in range(nk):
            if prims[b, k, 0] < 0:
                continue
            count += 1
            x0 = min(x0, max(0, math.floor(prims[b, k, 6])))
            y0 = min(y0, max(0, math.floor(prims[b, k, 7])))
            x1 = max(x1, min(w, math.ceil(prims[b, k, 8]) + 1))
            y1 = max(y1, min(h, math.ceil(prims[b, k, 9]) + 1))
        if count == 0 or x1 <= x0 or y1 <= y0:
            continue
        alpha = alphas[b]
        if count == 1 and (prims[b, 0, 0] == 1.0 or prims[b, 0, 0] == 2.0) and img.shape[3] == 3:
            cr, cg, cb = colors[b, 0], colors[b, 1], colors[b, 2]
            if fast_u8:  # a span is at most the prompt's region wide
                if planar:  # the planes read only the three runs
                    for k in range(x1 - x0):
                        c3[3 * w + k] = np.uint8(cr)
                        c3[4 * w + k] = np.uint8(cg)
                        c3[5 * w + k] = np.uint8(cb)
                else:
                    for k in range(x1 - x0):
                        c3[3 * k] = np.uint8(cr)
                        c3[3 * k + 1] = np.uint8(cg)
                        c3[3 * k + 2] = np.uint8(cb)
                if prims[b, 0, 0] == 1.0:
                    _u8_box(img, flat, b, prims[b, 0], alpha, c3, ab, ap, planar)
                else:
                    _u8_ellipse(img, flat, b, prims[b, 0], alpha, c3, ab, ap, planar)
            elif prims[b, 0, 0] == 1.0:
                _fast_box(img, b, prims[b, 0], alpha, cr, cg, cb, is_float)
            else:
                _fast_ellipse(img, b, prims[b, 0], alpha, cr, cg, cb, is_float)
            continue
        scratch = np.zeros((y1 - y0 if count > 1 else 0, x1 - x0 if count > 1 else 0), np.float32)
        for stage in range(2 if count > 1 else 1):
            for k in range(nk):
                kind = prims[b, k, 0]
                if kind < 0:
                    continue
                a0, a1, a2, a3 = prims[b, k, 1], prims[b, k, 2], prims[b, k, 3], prims[b, k, 4]
                hw = prims[b, k, 5]
                bx0, by0, bx1, by1 = prims[b, k, 6], prims[b, k, 7], prims[b, k, 8], prims[b, k, 9]
                ya = max(y0, math.floor(by0))
                yb = min(y1, math.ceil(by1) + 1)
                for y in range(ya, yb):
                    py = y + 0.5
                    ns = _spans(kind, a0, a1, a2, a3, hw, bx0, by0, bx1, by1, py, spans)
                    for s in range(ns):
                        xa = max(x0, math.ceil(spans[s, 0] - 0.5))
                        xb = min(x1, math.floor(spans[s, 1] - 0.5) + 1)
                        for x in range(xa, xb):
                            if count == 1:
                                c = _coverage(
                                    kind, a0, a1, a2, a3, hw, bx0, by0, bx1, by1, x + 0.5, py
                                )
                                if c > 0.0:
                                    _blend(img, b, y, x, c, colors, alpha, is_float)
                            elif stage == 0:
                                c = _coverage(
                                    kind, a0, a1, a2, a3, hw, bx0, by0, bx1, by1, x + 0.5, py
                                )
                                if c > scratch[y - y0, x - x0]:
                                    scratch[y - y0, x - x0] = c
                            else:
                                c = scratch[y - y0, x - x0]
                                if c > 0.0:
                                    scratch[y - y0, x - x0] = 0.0
                                    _blend(img, b, y, x, c, colors, alpha, is_float)


@numba.njit(cache=True, nogil=True)
def draw_outlines(
    img: np.ndarray,
    flat: np.ndarray,
    planar: bool,
    boxes: np.ndarray,
    packed: np.ndarray,
    rect_code: int,
    ellipse_code: int,
    contour_code: int,
) -> bool:  # pragma: no cover - numba
    """Rectangle/ellipse prompts on a uint8 ``[B, H, W, 3]`` batch, in one call.

    ``flat``, ``planar``: :func:`flat_bytes` of ``img``.

    Checks first that every box is finite with ``x2 >= x1`` and ``y2 >= y1`` and that
    every style (``packed`` rows, see ``OverlayStyle._packed``) is a rectangle, an
    ellipse or a contour (drawn as the box's ellipse: no masks here); returns False
    without drawing anything otherwise. Then builds the primitives as
    :func:`outlines` and draws them as :func:`draw_numba` does.
    """
    n = boxes.shape[0]
    for i in range(n):
        code = packed[i, 0]
        if not (code == rect_code or code == ellipse_code or code == contour_code):
            return False
        for j in range(4):
            if not math.isfinite(boxes[i, j]):
                return False
        if boxes[i, 2] < boxes[i, 0] or boxes[i, 3] < boxes[i, 1]:
            return False
    prims = outlines(boxes, packed, rect_code, ellipse_code, (img.shape[1], img.shape[2]))
    colors = np.empty((n, 3), np.float64)
    alphas = np.empty(n, np.float64)
    for i in range(n):
        colors[i, 0], colors[i, 1], colors[i, 2] = packed[i, 4], packed[i, 5], packed[i, 6]
        alphas[i] = packed[i, 7]
    _draw_numba(img, prims, colors, alphas, False, flat, planar)
    return True


def draw_numba(
    img_bhwc: np.ndarray, prims: np.ndarray, colors: np.ndarray, alphas: np.ndarray
) -> None:
    """Draw in place on a numpy ``[B, H, W, C]`` (uint8 or float) view."""
    _draw_numba(
        img_bhwc,
        np.ascontiguousarray(prims, np.float64),
        np.ascontiguousarray(colors, np.float64),
        np.ascontiguousarray(alphas, np.float64),
        img_bhwc.dtype.kind == "f",
        *flat_bytes(img_bhwc),
    )


def flat_bytes(img_bhwc: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(flat, planar)`` for the uint8 kernels: a uint8 batch's bytes as 1-D, and their order.

    A C-contiguous ``[B, H, W, 3]`` batch gives its bytes with ``planar`` False (rows
    of interleaved pixels); the ``[B, H, W, 3]`` view of a C-contiguous ``[B, 3, H,
    W]`` batch (a torch batch) gives the latter's bytes with ``planar`` True (one
    plane per channel). Anything else (other layouts, dtypes or channel counts)
    gives an empty ``flat``: the kernels then address pixels through the view.
    """
    if img_bhwc.dtype == np.uint8 and img_bhwc.ndim == 4 and img_bhwc.shape[3] == 3:
        if img_bhwc.flags.c_contiguous:
            return img_bhwc.reshape(-1), False
        planes = img_bhwc.transpose(0, 3, 1, 2)
        if planes.flags.c_contiguous:
            return planes.reshape(-1), True
    return np.empty(0, np.uint8), False


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
    if BOX in kinds:
        qx = (px - 0.5 * (col(1) + col(3))).abs() - 0.5 * (col(3) - col(1))
        qy = (py - 0.5 * (col(2) + col(4))).abs() - 0.5 * (col(4) - col(2))
        d_box = (
            torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)
        ).abs()
        d = torch.where(kind == BOX, d_box, d)
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
