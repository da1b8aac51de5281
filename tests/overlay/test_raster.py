"""The uint8 rectangle/ellipse kernels against a brute-force numpy reference of the same formula.

The reference evaluates the documented coverage of ``medcurric.overlay._raster`` at
every pixel of the image (no spans, no blocks, no shortcuts) with the same operations
in the same order, and blends with integer arithmetic: for rectangles in float64,
``ai = int(255 * alpha * min(c, 1) + 0.5)``; for ellipses in float32 (as the uint8
ellipse kernel evaluates it), ``ai = int(float32(255 * alpha) * min(c, 1) + 0.5)``;
then ``(v * (255 - ai) + colour * ai + 127) // 255``. The kernels must give exactly
the same bytes.
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


def _box_coverage(p: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    a0, a1, a2, a3, hw = p[1:6]
    cx, cy = 0.5 * (a0 + a2), 0.5 * (a1 + a3)
    hx, hy = 0.5 * (a2 - a0), 0.5 * (a3 - a1)
    qx = np.abs(px - cx) - hx
    qy = np.abs(py - cy) - hy
    d = np.where((qx > 0) & (qy > 0), np.sqrt(qx * qx + qy * qy), np.abs(np.maximum(qx, qy)))
    return hw - d + 0.5


def _ellipse_coverage(p: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """float32 coverage: per-row terms in float64 rounded to float32, the rest in float32."""
    f32 = np.float32
    cx, cy, rx, ry, hw = p[1:6]
    big = hw + 1.5
    ro_x, ro_y = rx + big, ry + big
    ri_x, ri_y = rx - big, ry - big
    inner = ri_x > 0 and ri_y > 0
    iox2, ioy2 = 1.0 / (ro_x * ro_x), 1.0 / (ro_y * ro_y)
    iix2 = 1.0 / (ri_x * ri_x) if inner else 0.0
    iiy2 = 1.0 / (ri_y * ri_y) if inner else 0.0
    irx, iry = 1.0 / rx, 1.0 / ry
    irx2, iry2 = irx * irx, iry * iry
    x = (px - 0.5).astype(f32) - f32(cx - 0.5)  # pixel index - (cx - 0.5)
    dy = py - cy
    band = x * x * f32(iox2) + (dy * dy * ioy2).astype(f32) <= f32(1)
    if inner:
        band &= x * x * f32(iix2) + (dy * dy * iiy2).astype(f32) >= f32(1)
    u = x * f32(irx)
    k0 = np.sqrt(u * u + ((dy * iry) * (dy * iry)).astype(f32))
    u2 = x * f32(irx2)
    k1 = np.sqrt(u2 * u2 + ((dy * iry2) * (dy * iry2)).astype(f32))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.abs(k0 * (k0 - f32(1)) / k1)
    d = np.where(k1 > 0, q, f32(min(rx, ry)))
    return np.where(band, f32(hw) - d + f32(0.5), f32(0))


def _reference(
    images: np.ndarray, prims: np.ndarray, colors: np.ndarray, alphas: np.ndarray
) -> np.ndarray:
    """Brute force over every pixel: one rectangle or ellipse primitive per image."""
    out = images.copy()
    _, h, w, _ = images.shape
    py, px = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    for b, p in enumerate(prims[:, 0]):
        inside = (px >= p[6]) & (px <= p[8]) & (py >= p[7]) & (py <= p[9])
        if p[0] == _raster.BOX:
            c = _box_coverage(p, px, py)
            c = np.where(inside & (c > 0), np.minimum(c, 1.0), 0.0)
            ai = (alphas[b] * c * 255.0 + 0.5).astype(np.int64)[..., None]
        else:
            f32 = np.float32
            c = _ellipse_coverage(p, px, py)
            assert c.dtype == f32
            c = np.where(inside & (c > 0), np.minimum(c, f32(1)), f32(0))
            ai = (f32(alphas[b] * 255.0) * c + f32(0.5)).astype(np.int64)[..., None]
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
    kind = rng.integers(0, 3, n)
    out = np.empty((n, 1, _raster.NPARAM))
    for i in range(n):
        b, lw_i = boxes[i : i + 1], lw[i : i + 1]
        if kind[i] == 0:  # clamped into the image, as draw_overlay does
            out[i] = _raster.rectangle(b, lw_i, (h, w))[0]
        elif kind[i] == 1:  # raw outline, anywhere (partly or fully off the image)
            out[i] = _raster._with_bbox(_raster.BOX, b, lw_i / 2)[0]
        else:
            out[i] = _raster.ellipse(b, lw_i, rng.uniform(0.8, 1.5, 1))[0]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_uint8_kernels_match_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    n = 40
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    prims = _random_prims(rng, n, h, w)
    colors = rng.integers(0, 256, (n, 3)).astype(np.float64)
    alphas = np.where(rng.random(n) < 0.2, 1.0, rng.uniform(0.01, 1.0, n))
    expected = _reference(images, prims, colors, alphas)
    assert not np.array_equal(expected, images)  # the prompts draw something

    got = images.copy()  # C-contiguous: the kernels address rows as flat bytes
    _raster.draw_numba(got, prims, colors, alphas)
    np.testing.assert_array_equal(got, expected)

    # a torch batch [B, 3, H, W] through its channels-last view: plane by plane
    t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    view = _raster.to_bhwc_numpy(t)
    assert view is not None and not view.flags.c_contiguous
    assert _raster.flat_bytes(view)[1]  # planar
    _raster.draw_numba(view, prims, colors, alphas)
    np.testing.assert_array_equal(t.permute(0, 2, 3, 1).numpy(), expected)

    # neither layout (RGB of an RGBA batch): pixel-by-pixel addressing with strides
    rgba = np.concatenate([images, images[..., :1]], axis=-1)
    view = rgba[..., :3]
    assert _raster.flat_bytes(view)[0].size == 0
    _raster.draw_numba(view, prims, colors, alphas)
    np.testing.assert_array_equal(view, expected)
    np.testing.assert_array_equal(rgba[..., 3], images[..., 0])  # alpha plane untouched


def test_uint8_kernels_match_on_large_images():
    """Long rows (several blocks and prefetched lines) and strokes at the image borders."""
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


def test_uint8_ellipse_kernel_is_exact_over_many_anti_aliased_pixels():
    """About 185,000 stroke pixels, many partly covered: a formula that differs from the
    float32 reference only by rounding (``k0 * k0 - k0`` for ``k0 * (k0 - 1)``, say) flips
    some 8-bit opacities here, where the small random cases above may not."""
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
    """``_raster._mix`` (every uint8 kernel's blend) equals ``(v * (255 - a) + c * a + 127) // 255``."""
    import numba

    @numba.njit
    def mix_all(out):  # type: ignore[no-untyped-def]
        for v in range(256):
            for a in range(256):
                for c in range(256):
                    out[v, a, c] = _raster._mix(np.uint8(v), np.uint8(a), np.uint8(c))

    got = np.empty((256, 256, 256), np.uint8)
    mix_all(got)
    v, a, c = np.ogrid[:256, :256, :256]
    np.testing.assert_array_equal(got, _quotient(v, a, c))


@pytest.fixture(scope="module")
def mix_span():
    import numba

    @numba.njit
    def run(flat, j0, ab, o0, c3, oc, n):  # type: ignore[no-untyped-def]
        _raster._mix_span(flat, j0, ab, o0, c3, oc, n)

    return run


def test_span_blend_is_the_integer_quotient_for_all_bytes(mix_span):
    """The vector blocks of ``_mix_span`` over all 2**24 (v, a, c) triples, in one span."""
    v, a, c = (t.ravel() for t in np.meshgrid(*[np.arange(256, dtype=np.uint8)] * 3, indexing="ij"))
    got = v.copy()
    mix_span(got, 0, a, 0, c, 0, got.size)
    np.testing.assert_array_equal(got, _quotient(v, a, c))


def test_span_blend_writes_exactly_its_span(mix_span):
    """Every length 0-100 (scalar tail, 8- and 16-byte blocks, overlapping last blocks),
    at the start, inside and at the end of the buffer: the span's bytes are blended, and
    not one byte outside it changes."""
    rng = np.random.default_rng(8)
    size = 300
    buf = rng.integers(0, 256, size, dtype=np.uint8)
    ab = rng.integers(0, 256, size, dtype=np.uint8)
    c3 = rng.integers(0, 256, size, dtype=np.uint8)
    ab[:40] = 0  # a zero opacity leaves a byte unchanged, so some spans start unchanged
    for n in range(101):
        for j0 in {0, 1, 13, 150, size - n}:
            o0, oc = (int(t) for t in rng.integers(0, size - n + 1, 2))
            got = buf.copy()
            mix_span(got, j0, ab, o0, c3, oc, n)
            expected = buf.copy()
            expected[j0 : j0 + n] = _quotient(buf[j0 : j0 + n], ab[o0 : o0 + n], c3[oc : oc + n])
            np.testing.assert_array_equal(got, expected, err_msg=f"n={n} j0={j0} o0={o0} oc={oc}")


def test_ellipse_opacity_lanes_follow_the_float32_formula():
    """``_ellipse_opacity8`` lane by lane against numpy float32, centre pixel included
    (``k1 == 0``: the distance is ``min(rx, ry)``), with and without an inner ellipse."""
    import numba

    @numba.njit
    def run(ab, off, ix0, fx, fy):  # type: ignore[no-untyped-def]
        _raster._ellipse_opacity8(ab, off, ix0, fx, fy)

    f32 = np.float32
    rng = np.random.default_rng(21)
    checked_centre = 0
    for trial in range(400):
        rx, ry = rng.uniform(0.5, 60, 2)
        hw = rng.uniform(0.5, 6)
        ro_x, ro_y, ri_x, ri_y = rx + hw + 1.5, ry + hw + 1.5, rx - hw - 1.5, ry - hw - 1.5
        inner = ri_x > 0 and ri_y > 0
        centre_row = trial % 4 == 0
        cx = float(rng.integers(-5, 40)) + 0.5 if centre_row else rng.uniform(-5, 40)
        dy = 0.0 if centre_row else rng.uniform(-ro_y, ro_y)
        ix0 = np.int32(rng.integers(-10, 40))
        fx = tuple(
            f32(t)
            for t in (
                cx - 0.5,
                1 / ro_x**2,
                1 / ri_x**2 if inner else 0.0,
                1 / rx,
                1 / rx**2,
                min(rx, ry),
                hw,
                255 * rng.uniform(0.05, 1),
            )
        )
        fy = (
            f32(dy * dy / ro_y**2),
            f32(dy * dy / ri_y**2) if inner else f32(1),
            f32((dy / ry) ** 2),
            f32((dy / ry**2) ** 2),
        )
        ab = np.full(40, 7, np.uint8)
        run(ab, 5, ix0, fx, fy)

        x = np.arange(ix0, ix0 + 8).astype(f32) - fx[0]
        band = (x * x * fx[1] + fy[0] <= 1) & (x * x * fx[2] + fy[1] >= 1)
        u, u2 = x * fx[3], x * fx[4]
        k0, k1 = np.sqrt(u * u + fy[2]), np.sqrt(u2 * u2 + fy[3])
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(k1 > 0, np.abs(k0 * (k0 - f32(1)) / k1), fx[5])
        c = fx[6] - d + f32(0.5)
        c = np.where(band & (c > 0), np.minimum(c, f32(1)), f32(0))
        expected = (fx[7] * c + f32(0.5)).astype(np.int32).astype(np.uint8)
        np.testing.assert_array_equal(ab[5:29], expected.repeat(3), err_msg=f"trial {trial}")
        assert (ab[:5] == 7).all() and (ab[29:] == 7).all()
        checked_centre += int((k1 == 0).any() & (fx[6] - fx[5] + 0.5 > 0))
    assert checked_centre > 0  # the k1 == 0 lane was drawn with d = min(rx, ry) somewhere


def test_draw_overlay_fast_path_matches_general_path():
    """numpy batch + numpy boxes (one compiled call) == the general path, for all outlines."""
    from medcurric.overlay import RandomStyle, draw_overlay

    rng = np.random.default_rng(5)
    n, h, w = 24, 57, 83
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    styles = RandomStyle(shapes=("rectangle", "ellipse", "contour")).sample_many(n, rng)
    xy = rng.uniform(-20, 80, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 50, (n, 2))], axis=1)
    fast = draw_overlay(images, boxes, styles)
    general = draw_overlay(images, boxes, styles, masks=[None] * n)  # masks: general path
    np.testing.assert_array_equal(fast, general)
    assert (fast != images).any()
    work = images.copy()
    assert draw_overlay(work, boxes, styles, inplace=True) is work
    np.testing.assert_array_equal(work, fast)
    # a CPU torch uint8 batch [B, 3, H, W] takes the fast path too (strided view)
    t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    drawn = draw_overlay(t, boxes, styles)
    np.testing.assert_array_equal(drawn.permute(0, 2, 3, 1).numpy(), fast)
    np.testing.assert_array_equal(t.permute(0, 2, 3, 1).numpy(), images)  # a copy
    assert draw_overlay(t, boxes, styles, inplace=True) is t
    np.testing.assert_array_equal(t.permute(0, 2, 3, 1).numpy(), fast)


def test_draw_overlay_fast_path_leaves_bad_boxes_to_the_general_path():
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
