"""The numba kernel against a brute-force numpy reference of the documented formulas.

The reference evaluates the coverage of ``medcurric.overlay._raster`` at every pixel
of the image (no spans, no shortcuts), in float64 with the same operations in the
same order, takes the maximum over a prompt's primitives, and blends with integer
arithmetic: ``ai = int(255 * alpha * min(c, 1) + 0.5)``, then
``(v * (255 - ai) + colour * ai + 127) // 255``. The kernel must give exactly the
same bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcurric.overlay import _raster


def _quotient(v: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The integer blend ``(v * (255 - a) + c * a + 127) // 255``, as uint8."""
    v, a, c = (np.asarray(t, np.int64) for t in (v, a, c))
    return ((v * (255 - a) + c * a + 127) // 255).astype(np.uint8)


def _distance(p: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Distance of the pixel centres to primitive ``p``'s centre line (inf: not drawn)."""
    a0, a1, a2, a3, hw = p[1:6]
    if p[0] == _raster.SEGMENT:
        dx, dy = a2 - a0, a3 - a1
        l2 = dx * dx + dy * dy
        t = np.clip(((px - a0) * dx + (py - a1) * dy) / l2, 0.0, 1.0) if l2 > 0 else 0.0
        ex, ey = px - (a0 + t * dx), py - (a1 + t * dy)
        return np.sqrt(ex * ex + ey * ey)
    if p[0] == _raster.BOX:
        qx = np.abs(px - 0.5 * (a0 + a2)) - 0.5 * (a2 - a0)
        qy = np.abs(py - 0.5 * (a1 + a3)) - 0.5 * (a3 - a1)
        return np.where((qx > 0) & (qy > 0), np.sqrt(qx * qx + qy * qy), np.abs(np.maximum(qx, qy)))
    if p[0] == _raster.FRAME:  # square corners: the Chebyshev distance to the outline
        qx = np.abs(px - 0.5 * (a0 + a2)) - 0.5 * (a2 - a0)
        qy = np.abs(py - 0.5 * (a1 + a3)) - 0.5 * (a3 - a1)
        return np.abs(np.maximum(qx, qy))
    # ellipse: first-order distance k0 (k0 - 1) / k1 within the band rx +- (hw + 1.5)
    x, y = px - a0, py - a1
    big = hw + 1.5
    ox, oy = x * (1.0 / (a2 + big)), y * (1.0 / (a3 + big))
    band = ox * ox + oy * oy <= 1.0
    if a2 > big and a3 > big:
        ix, iy = x * (1.0 / (a2 - big)), y * (1.0 / (a3 - big))
        band &= ix * ix + iy * iy >= 1.0
    u, v = x * (1.0 / a2), y * (1.0 / a3)
    k0 = np.sqrt(u * u + v * v)
    u, v = u * (1.0 / a2), v * (1.0 / a3)
    k1 = np.sqrt(u * u + v * v)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(k1 > 0, np.abs(k0 * (k0 - 1.0) / k1), min(a2, a3))
    return np.where(band, d, np.inf)


def _reference(
    images: np.ndarray, prims: np.ndarray, colors: np.ndarray, alphas: np.ndarray
) -> np.ndarray:
    """Brute force over every pixel: the union (maximum coverage) of each image's primitives."""
    out = images.copy()
    _, h, w, _ = images.shape
    py, px = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    for b in range(images.shape[0]):
        cov = np.zeros((h, w))
        for p in prims[b]:
            if p[0] == _raster.NONE:
                continue
            inside = (px >= p[6]) & (px <= p[8]) & (py >= p[7]) & (py <= p[9])
            c = np.clip(p[5] - _distance(p, px, py) + 0.5, 0.0, 1.0)
            cov = np.maximum(cov, np.where(inside, c, 0.0))
        ai = (alphas[b] * cov * 255.0 + 0.5).astype(np.int64)[..., None]
        out[b] = _quotient(out[b], ai, colors[b])
    return out


def _random_prims(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Rectangles and ellipses: off-image, tiny, thick (width above the box size), thin."""
    x1 = rng.uniform(-0.4 * w, 1.1 * w, n)
    y1 = rng.uniform(-0.4 * h, 1.1 * h, n)
    size = np.where(
        rng.random(n) < 0.3, rng.uniform(0, 3, (2, n)), rng.uniform(0, 0.8, (2, n)) * [[w], [h]]
    )
    boxes = np.stack([x1, y1, x1 + size[0], y1 + size[1]], axis=1)
    lw = np.where(rng.random(n) < 0.25, rng.uniform(6, 20, n), rng.uniform(1, 6, n))
    kind = rng.integers(0, 5, n)
    out = np.empty((n, 1, _raster.NPARAM))
    for i in range(n):
        b, lw_i = boxes[i : i + 1], lw[i : i + 1]
        if kind[i] == 0:  # clamped into the image, as draw_overlay does
            out[i] = _raster.rectangle(b, lw_i, (h, w))[0]
        elif kind[i] == 1:  # raw outline, anywhere (partly or fully off the image)
            out[i] = _raster._with_bbox(_raster.BOX, b, lw_i / 2)[0]
        elif kind[i] == 3:  # ViP-LLaVA's ring inside the box
            out[i] = _raster.rectangle(b, lw_i, (h, w), np.array([True]))[0]
        else:
            out[i] = _raster.ellipse(b, lw_i, rng.uniform(0.8, 1.5, 1))[0]
    return out


def _random_unions(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Arrows, triangles, scribbles and points (unions of segments), padded with NONE rows."""
    xy = rng.uniform(-0.2, 0.9, (n, 2)) * [w, h]
    boxes = np.concatenate([xy, xy + rng.uniform(0, 0.6, (n, 2)) * [w, h]], axis=1)
    lw = rng.uniform(1, 10, n)
    seeds, jitter = rng.integers(0, 2**31, n), rng.uniform(0, 1, n)
    inside = rng.random(n) < 0.5  # ViP-LLaVA's arrow head and triangle in the box
    parts = [
        _raster.arrow(boxes, lw, seeds, jitter, (h, w), max(h, w) / 336, inside),
        _raster.triangle(boxes, lw, seeds, jitter, inside),
        _raster.scribble(boxes, lw, seeds, jitter, n_seg=6),
        _raster.point(boxes, lw, seeds, jitter),
    ]
    out = np.full((n, 6, _raster.NPARAM), float(_raster.NONE))
    for i in range(n):
        p = parts[i % 4][i]
        out[i, : p.shape[0]] = p
    return out


@pytest.mark.parametrize("seed", range(6))
def test_kernel_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    n = 40
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    prims = _random_prims(rng, n, h, w) if seed % 2 else _random_unions(rng, n, h, w)
    colors = rng.integers(0, 256, (n, 3)).astype(np.float64)
    alphas = np.where(rng.random(n) < 0.2, 1.0, rng.uniform(0.01, 1.0, n))
    expected = _reference(images, prims, colors, alphas)
    assert not np.array_equal(expected, images)  # the prompts draw something

    got = images.copy()
    _raster.draw_numba(got, prims, colors, alphas)
    np.testing.assert_array_equal(got, expected)

    # a torch batch [B, 3, H, W] through its channels-last (strided) view
    t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    view = _raster.to_bhwc_numpy(t)
    assert view is not None and not view.flags.c_contiguous
    _raster.draw_numba(view, prims, colors, alphas)
    np.testing.assert_array_equal(t.permute(0, 2, 3, 1).numpy(), expected)

    # the RGB of an RGBA batch: the alpha plane stays untouched
    rgba = np.concatenate([images, images[..., :1]], axis=-1)
    _raster.draw_numba(rgba[..., :3], prims, colors, alphas)
    np.testing.assert_array_equal(rgba[..., :3], expected)
    np.testing.assert_array_equal(rgba[..., 3], images[..., 0])


def test_kernel_matches_on_large_images():
    """Long rows and strokes at the image borders."""
    rng = np.random.default_rng(11)
    h, w = 200, 337
    boxes = np.array([[-20, 5, 330, 150], [0, 0, 337, 200], [100, 150, 400, 260], [5, 5, 9, 9]])
    lw = np.array([3.0, 9.0, 2.0, 12.0])
    prims = np.concatenate(
        [
            _raster.rectangle(boxes[:2], lw[:2], (h, w)),
            _raster.ellipse(boxes[2:], lw[2:], np.ones(2)),
        ]
    )
    images = rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    colors = rng.integers(0, 256, (4, 3)).astype(np.float64)
    alphas = np.array([0.8, 1.0, 0.37, 0.5])
    got = images.copy()
    _raster.draw_numba(got, prims, colors, alphas)
    np.testing.assert_array_equal(got, _reference(images, prims, colors, alphas))


def test_ellipse_kernel_is_exact_over_many_anti_aliased_pixels():
    """About 185,000 stroke pixels, many partly covered: a change of the formula (the
    band's limits, say) flips some 8-bit opacities here, where the small random cases
    above may not. (Float64 rounding differences alone rarely change a byte.)"""
    rng = np.random.default_rng(3)
    n, h, w = 48, 300, 300
    c = rng.uniform(60, 240, (n, 2))
    half = rng.uniform(8, 110, (n, 2))
    boxes = np.concatenate([c - half, c + half], axis=1)
    prims = _raster.ellipse(boxes, rng.uniform(2, 14, n), rng.uniform(0.9, 1.3, n))
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    colors = rng.integers(0, 256, (n, 3)).astype(np.float64)
    alphas = rng.uniform(0.3, 1.0, n)
    got = images.copy()
    _raster.draw_numba(got, prims, colors, alphas)
    expected = _reference(images, prims, colors, alphas)
    assert (expected != images).any(-1).sum() > 150_000
    np.testing.assert_array_equal(got, expected)


def test_blend_is_the_integer_quotient_for_all_bytes():
    """``_raster._mix`` (the kernel's uint8 blend) equals ``(v * (255 - a) + c * a + 127) // 255``."""
    import numba

    @numba.njit
    def mix_all(out):  # type: ignore[no-untyped-def]
        for v in range(256):
            for a in range(256):
                for c in range(256):
                    out[v, a, c] = _raster._mix(v, a, c)

    got = np.empty((256, 256, 256), np.uint8)
    mix_all(got)
    v, a, c = np.ogrid[:256, :256, :256]
    np.testing.assert_array_equal(got, _quotient(v, a, c))


def test_draw_overlay_numpy_and_torch_batches_match_the_mask_path():
    """numpy and CPU torch uint8 batches, copies and in place, give the same bytes as the
    path taken with (empty) masks, for all outlines."""
    from medcurric.overlay import RandomStyle, draw_overlay

    rng = np.random.default_rng(5)
    n, h, w = 24, 57, 83
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    styles = RandomStyle(shapes=("rectangle", "ellipse", "contour")).sample_many(n, rng)
    xy = rng.uniform(-20, 80, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 50, (n, 2))], axis=1)
    boxes = boxes[(boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)]
    n, images, styles = len(boxes), images[: len(boxes)], styles[: len(boxes)]  # boxes that meet the image
    assert n >= 12
    fast = draw_overlay(images, boxes, styles)
    general = draw_overlay(images, boxes, styles, masks=[None] * n)
    np.testing.assert_array_equal(fast, general)
    assert (fast != images).any()
    work = images.copy()
    assert draw_overlay(work, boxes, styles, inplace=True) is work
    np.testing.assert_array_equal(work, fast)
    t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    drawn = draw_overlay(t, boxes, styles)
    np.testing.assert_array_equal(drawn.permute(0, 2, 3, 1).numpy(), fast)
    np.testing.assert_array_equal(t.permute(0, 2, 3, 1).numpy(), images)  # a copy
    assert draw_overlay(t, boxes, styles, inplace=True) is t
    np.testing.assert_array_equal(t.permute(0, 2, 3, 1).numpy(), fast)


def test_draw_overlay_bad_boxes_raise_before_drawing():
    from medcurric.errors import MedcurricError
    from medcurric.overlay import OverlayStyle, draw_overlay

    images = np.zeros((2, 20, 20, 3), np.uint8)
    for bad in ([[2, 2, 8, 8], [9, 9, 3, 3]], [[2, 2, 8, 8], [1, np.nan, 5, 5]]):
        with pytest.raises(MedcurricError):
            draw_overlay(images, np.array(bad, float), OverlayStyle(), inplace=True)
        assert not images.any()  # nothing drawn before the error
    with pytest.raises(MedcurricError):  # [B, 5] boxes are not [B, 4] boxes
        draw_overlay(images, np.array([[2, 2, 8, 8, 1], [1, 1, 5, 5, 1]], float), inplace=True)
    assert not images.any()
