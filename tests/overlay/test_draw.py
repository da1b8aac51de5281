"""StageOverlay / draw_overlay: against shapely coverage, PIL's RGBA compositing, and each other."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from shapely.geometry import LinearRing, Polygon
from shapely.geometry import box as shapely_box

from medcurric.errors import InvalidOptionError, ShapeError, WrongTypeError
from medcurric.overlay import (
    COLORS,
    Color,
    Convention,
    OverlayStyle,
    RandomStyle,
    Shape,
    StageOverlay,
    draw_overlay,
)

PHRASES = {
    ("rectangle", "red"): "within the red rectangle",
    ("ellipse", "lime"): "within the lime ellipse",
    ("arrow", "blue"): "pointed to by the blue arrow",
    ("point", "yellow"): "marked by the yellow point",
    ("contour", "aqua"): "within the aqua contour",
    ("triangle", "orange"): "within the orange triangle",
    ("scribble", "purple"): "marked by the purple scribble",
}


def test_phrases_and_css_colours():
    for (shape, color), phrase in PHRASES.items():
        assert OverlayStyle(shape=shape, color=color).phrase == phrase
    from PIL import ImageColor

    assert [c.value for c in Color] == [
        "red",
        "lime",
        "blue",
        "yellow",
        "fuchsia",
        "aqua",
        "orange",
        "purple",
        "gold",
    ]
    for c in Color:
        assert COLORS[c] == ImageColor.getrgb(c.value)


def _coverage(style, box, size=(64, 64), backend="torch"):
    """Per-pixel coverage: draw red at alpha 1 on a black float64 image."""
    img = torch.zeros(1, 3, *size, dtype=torch.float64)
    style = dataclasses.replace(style, alpha=1.0, color="red")
    out = draw_overlay(img, [box], style, backend=backend)
    return out[0, 0].numpy()


def _shapely_pixel_coverage(geom, size):
    h, w = size
    cov = np.zeros(size)
    minx, miny, maxx, maxy = geom.bounds
    for y in range(max(0, int(miny) - 1), min(h, int(maxy) + 2)):
        for x in range(max(0, int(minx) - 1), min(w, int(maxx) + 2)):
            cov[y, x] = geom.intersection(shapely_box(x, y, x + 1, y + 1)).area
    return cov


@pytest.mark.parametrize("box", [[15, 20, 45, 40], [10.5, 12.25, 50.75, 30.5]])
@pytest.mark.parametrize("width", [3.0, 5.5])
def test_rectangle_coverage_matches_shapely(box, width):
    style = OverlayStyle(shape="rectangle", width=width, alpha=1.0)
    got = _coverage(style, box, backend="torch")
    hw = max(width * 64 / 336, 1.0) / 2
    x1, y1, x2, y2 = box
    ring = LinearRing(
        [(x1 - hw, y1 - hw), (x2 + hw, y1 - hw), (x2 + hw, y2 + hw), (x1 - hw, y2 + hw)]
    )
    ref = _shapely_pixel_coverage(ring.buffer(hw), (64, 64))
    assert np.abs(got - ref).max() < 0.35
    assert np.abs(got - ref).mean() < 0.01
    assert got.sum() == pytest.approx(ref.sum(), rel=0.05)
    # the stroke lies outside the box: the lesion stays visible
    assert got[int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1].max() == 0


def test_ellipse_coverage_matches_shapely():
    style = OverlayStyle(shape="ellipse", width=12.0, alpha=1.0, scale=1.0)
    box = [12, 18, 52, 44]
    got = _coverage(style, box)
    lw = 12 * 64 / 336
    cx, cy, rx, ry = 32, 31, 20 + lw / 2, 13 + lw / 2
    t = np.linspace(0, 2 * np.pi, 721)[:-1]
    ring = LinearRing(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1))
    ref = _shapely_pixel_coverage(ring.buffer(lw / 2), (64, 64))
    assert np.abs(got - ref).max() < 0.45
    assert np.abs(got - ref).mean() < 0.02
    assert got.sum() == pytest.approx(ref.sum(), rel=0.06)


def test_point_is_a_disc():
    style = OverlayStyle(shape="point", width=50.0, alpha=1.0)  # radius 50 * 64/336 ~ 9.5
    got = _coverage(style, [20, 20, 44, 44])
    r = 50 * 64 / 336
    ref = _shapely_pixel_coverage(
        Polygon(
            LinearRing(
                [
                    (32 + r * np.cos(a), 32 + r * np.sin(a))
                    for a in np.linspace(0, 2 * np.pi, 361)[:-1]
                ]
            )
        ),
        (64, 64),
    )
    assert np.abs(got - ref).max() < 0.3 and got.sum() == pytest.approx(ref.sum(), rel=0.03)


@pytest.mark.parametrize("alpha", [0.4, 0.75, 1.0])
def test_rectangle_blend_matches_pil_rgba_composite(alpha, rng):
    """Fully covered pixels blend exactly like VIP-LLaVA's RGBA layer + alpha_composite."""
    img = rng.integers(0, 256, size=(80, 96, 3), dtype=np.uint8)
    box = [20, 15, 70, 60]
    style = OverlayStyle(shape="rectangle", color="orange", width=3 * 336 / 96 * 2, alpha=alpha)
    ours = draw_overlay(img, box, style)
    cov = _coverage(style, box, size=(80, 96))
    a8 = round(alpha * 255)
    layer = Image.new("RGBA", (96, 80), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle([0, 0, 95, 79], fill=(*COLORS[Color.ORANGE], a8))
    pil = np.asarray(
        Image.alpha_composite(Image.fromarray(img).convert("RGBA"), layer).convert("RGB")
    )
    full = cov == 1.0
    assert full.sum() > 100
    assert np.abs(ours[full].astype(int) - pil[full].astype(int)).max() <= 1
    untouched = cov == 0.0
    np.testing.assert_array_equal(ours[untouched], img[untouched])


def test_pil_drawn_rectangle_overlaps_ours():
    """Same box, same line width: our stroke (outside the box) vs PIL's (inside) sit side by side."""
    img = np.zeros((336, 336, 3), np.uint8)
    box = [100, 120, 220, 200]
    ours = draw_overlay(img, box, OverlayStyle(width=3, alpha=1.0))[..., 0] > 127
    layer = Image.new("RGB", (336, 336))
    ImageDraw.Draw(layer).rectangle([97, 117, 222, 202], outline=(255, 0, 0), width=3)
    pil = np.asarray(layer)[..., 0] > 127
    inter, union = (ours & pil).sum(), (ours | pil).sum()
    assert inter / union > 0.9


SHAPES = [s.value for s in Shape]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    dtype=st.sampled_from(["uint8", "float32"]),
    size=st.sampled_from([(64, 64), (48, 80), (100, 70)]),
)
def test_numba_and_torch_backends_agree(seed, dtype, size):
    rng = np.random.default_rng(seed)
    b = 6
    h, w = size
    x1 = rng.uniform(-5, w - 5, b)
    y1 = rng.uniform(-5, h - 5, b)
    # boxes meet the image (one that misses it raises InvalidBoxError)
    x2 = np.maximum(x1 + rng.uniform(0, 40, b), 0.5)
    y2 = np.maximum(y1 + rng.uniform(0, 40, b), 0.5)
    boxes = np.stack([x1, y1, x2, y2], axis=1)
    styles = RandomStyle().sample_many(b, rng)
    img = torch.from_numpy(rng.integers(0, 256, size=(b, 3, h, w), dtype=np.uint8))
    if dtype == "float32":
        img = img.float() / 255
    a = draw_overlay(img, boxes, styles, backend="torch")
    n = draw_overlay(img, boxes, styles, backend="numba")
    tol = 1 if dtype == "uint8" else 1.5 / 255
    assert (a.double() - n.double()).abs().max().item() <= tol
    assert not torch.equal(a, img) or all(s.alpha * 255 < 1 for s in styles)


def test_input_types_round_trip(device, rng):
    arr = rng.integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    box = [10, 10, 30, 40]
    style = OverlayStyle(shape="ellipse", color="gold")
    ref = draw_overlay(arr, box, style)
    assert isinstance(ref, np.ndarray) and ref.shape == arr.shape and not np.array_equal(ref, arr)
    pil = draw_overlay(Image.fromarray(arr), box, style)
    assert isinstance(pil, Image.Image)
    np.testing.assert_array_equal(np.asarray(pil), ref)
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(device)
    for x, tol in ((t, 1), (t.float() / 255, 1.01 / 255)):
        out = draw_overlay(x, box, style)
        assert out.device == x.device and out.dtype == x.dtype and out.shape == x.shape
        got = out.permute(1, 2, 0).cpu().double().numpy()
        scale = 1 if x.dtype == torch.uint8 else 1 / 255
        assert np.abs(got - ref * scale).max() <= tol
        batch = draw_overlay(x[None].repeat(2, 1, 1, 1), [box, box], style)
        assert batch.shape == (2, 3, 50, 60) and torch.equal(batch[0], out)
    batch_np = draw_overlay(np.stack([arr, arr]), [box, box], style)
    np.testing.assert_array_equal(batch_np[1], ref)


def test_copy_vs_inplace():
    img = np.zeros((40, 40, 3), np.uint8)
    out = draw_overlay(img, [10, 10, 20, 20])
    assert img.max() == 0 and out.max() > 0
    draw_overlay(img, [10, 10, 20, 20], inplace=True)
    np.testing.assert_array_equal(img, out)
    t = torch.zeros(1, 3, 40, 40, dtype=torch.uint8)
    draw_overlay(t, [[10, 10, 20, 20]], inplace=True, backend="torch")
    assert torch.equal(t[0].permute(1, 2, 0), torch.from_numpy(out))


def test_line_width_scales_with_image_size():
    def stroke_width(size):
        img = np.zeros((size, size, 3), np.uint8)
        f = size / 336
        out = draw_overlay(
            img, [100 * f, 100 * f, 200 * f, 200 * f], OverlayStyle(width=4, alpha=1)
        )
        row = out[int(150 * f), :, 0]
        return (row > 127).sum() / 2

    assert stroke_width(336) == pytest.approx(4, abs=1)
    assert stroke_width(672) == pytest.approx(8, abs=1)
    assert stroke_width(1344) == pytest.approx(16, abs=1)


@settings(max_examples=40, deadline=None)
@given(
    x=st.floats(0, 300),
    y=st.floats(0, 300),
    bw=st.floats(2, 120),
    bh=st.floats(2, 120),
    seed=st.integers(0, 99),
    jitter=st.floats(0, 1),
)
def test_arrow_points_at_the_box_from_outside_and_stays_in_the_image(x, y, bw, bh, seed, jitter):
    box = [x, y, min(x + bw, 336), min(y + bh, 336)]
    img = np.zeros((336, 336, 3), np.uint8)
    style = OverlayStyle(shape="arrow", alpha=1.0, seed=seed, jitter=jitter)
    out = draw_overlay(img, box, style)[..., 0]
    drawn = out > 0
    assert drawn.sum() > 30  # visible
    x1, y1, x2, y2 = (int(np.ceil(box[0])), int(np.ceil(box[1])), int(box[2]), int(box[3]))
    assert not drawn[y1:y2, x1:x2].any()  # never over the lesion
    # the tip is next to the box: some drawn pixel lies within a few pixels of it
    ys, xs = np.nonzero(drawn)
    dx = np.maximum(np.maximum(box[0] - xs - 0.5, xs + 0.5 - box[2]), 0)
    dy = np.maximum(np.maximum(box[1] - ys - 0.5, ys + 0.5 - box[3]), 0)
    assert np.hypot(dx, dy).min() < 8


def test_scribble_stays_inside_box_and_is_deterministic():
    img = np.zeros((100, 100, 3), np.uint8)
    st1 = OverlayStyle(shape="scribble", seed=4, jitter=1.0, alpha=1.0)
    a = draw_overlay(img, [20, 30, 80, 70], st1)
    b = draw_overlay(img, [20, 30, 80, 70], st1)
    c = draw_overlay(img, [20, 30, 80, 70], OverlayStyle(shape="scribble", seed=5, jitter=1.0))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ys, xs = np.nonzero(a[..., 0])
    assert xs.min() >= 19 and xs.max() <= 80 and ys.min() >= 29 and ys.max() <= 70


def test_triangle_surrounds_the_box():
    img = np.zeros((336, 336, 3), np.uint8)
    out = draw_overlay(img, [140, 150, 200, 190], OverlayStyle(shape="triangle", alpha=1.0))[..., 0]
    assert not out[150:190, 140:200].any()
    # apex above, base below
    ys, _ = np.nonzero(out)
    assert ys.min() < 150 and ys.max() > 190


def test_contour_with_mask_and_fallback():
    mask = np.zeros((80, 80), bool)
    yy, xx = np.mgrid[:80, :80]
    mask[(yy - 40) ** 2 / 15**2 + (xx - 35) ** 2 / 20**2 <= 1] = True
    ys, xs = np.nonzero(mask)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    img = np.zeros((80, 80, 3), np.uint8)
    style = OverlayStyle(shape="contour", color="aqua", alpha=1.0, width=336 / 80)
    out = draw_overlay(img, box, style, masks=mask)
    drawn = out[..., 1] > 0
    from skimage.segmentation import find_boundaries

    ref = find_boundaries(mask, mode="inner", connectivity=2)
    assert (drawn & ref).sum() / ref.sum() > 0.95
    assert (drawn & ~ref).sum() / drawn.sum() < 0.05
    assert np.array_equal(out[drawn][:, 0], np.zeros(drawn.sum(), np.uint8))  # aqua: no red
    # no mask: the box's inscribed ellipse
    fb = draw_overlay(img, box, style)
    assert fb[..., 1].any()
    both = draw_overlay(np.stack([img, img]), [box, box], style, masks=[mask, None])
    np.testing.assert_array_equal(both[0], out)
    np.testing.assert_array_equal(both[1], fb)


def test_stage_overlay_fixed_and_random_styles():
    imgs = np.zeros((4, 64, 64, 3), np.uint8)
    boxes = [[10, 10, 40, 40]] * 4
    fixed = StageOverlay()
    res = fixed(imgs, boxes)
    assert res.phrases == ["within the red rectangle"] * 4 and res.batched
    images, phrases = res
    assert images.shape == imgs.shape and len(phrases) == 4
    one_img, one_phrase = StageOverlay("arrow")(imgs[0], boxes[0])
    assert one_phrase == "pointed to by the red arrow" and one_img.shape == (64, 64, 3)

    r1 = StageOverlay("random", seed=1)
    r2 = StageOverlay("random", seed=1)
    r3 = StageOverlay("random", seed=2)
    a, b, c = r1(imgs, boxes), r2(imgs, boxes), r3(imgs, boxes)
    assert a.styles == b.styles and np.array_equal(a.image, b.image)
    assert a.styles != c.styles
    assert r1(imgs, boxes).styles != a.styles  # the generator advances
    # keys make styles independent of call order
    k1 = r1.styles_for(3, key=[7, 8, 9])
    k2 = StageOverlay("random", seed=1).styles_for(3, key=[9, 8, 7])
    assert k1 == k2[::-1]
    policy = RandomStyle(shapes=("rectangle", "ellipse"), colors=("blue",), alpha=(0.5, 0.6))
    styles = StageOverlay(policy, seed=0).styles_for(50)
    assert {s.shape.value for s in styles} == {"rectangle", "ellipse"}
    assert all(s.color == "blue" and 0.5 <= s.alpha <= 0.6 and 2 <= s.width <= 8 for s in styles)


def test_random_style_covers_all_shapes_and_colours():
    styles = RandomStyle().sample_many(400, rng=0)
    assert {s.shape for s in styles} == set(Shape)
    assert {s.color for s in styles} == set(Color)
    assert all(96 / 255 <= s.alpha <= 1 for s in styles)
    assert OverlayStyle.random(3) == OverlayStyle.random(np.random.default_rng(3))
    assert OverlayStyle.from_json(styles[0].to_json()) == styles[0]


def test_empty_batch_and_degenerate_boxes():
    out = draw_overlay(np.zeros((0, 10, 10, 3), np.uint8), np.zeros((0, 4)), [])
    assert out.shape == (0, 10, 10, 3)
    for shape in SHAPES:
        img = draw_overlay(
            np.zeros((40, 40, 3), np.uint8), [20, 20, 20, 20], OverlayStyle(shape=shape)
        )
        assert img.shape == (40, 40, 3)


def test_errors():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(WrongTypeError, match="uint8"):
        draw_overlay(img.astype(np.float32), [1, 1, 5, 5])
    with pytest.raises(ShapeError):
        draw_overlay(np.zeros((10, 10), np.uint8), [1, 1, 5, 5])
    with pytest.raises(ShapeError, match="one box per image"):
        draw_overlay(np.zeros((2, 10, 10, 3), np.uint8), [1, 1, 5, 5])
    with pytest.raises(ShapeError):
        draw_overlay(torch.zeros(1, 4, 10, 10), [[1, 1, 5, 5]])
    with pytest.raises(WrongTypeError):
        draw_overlay([[0]], [1, 1, 5, 5])
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        OverlayStyle(shape="elipse")
    with pytest.raises(InvalidOptionError, match="alpha"):
        OverlayStyle(alpha=128)
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        StageOverlay("rectangel")
    with pytest.raises(ShapeError, match="masks"):
        draw_overlay(img, [1, 1, 5, 5], OverlayStyle(shape="contour"), masks=np.zeros((5, 5), bool))
    with pytest.raises(InvalidOptionError):
        RandomStyle(alpha=(0.5, 2.0))


def test_packed_style_rows_hold_the_style_fields():
    """The kernels read each style as 9 float64 (shape code, width, jitter, scale, RGB, alpha, convention)."""
    from medcurric.overlay.draw import _SHAPES, _pack

    styles = [
        OverlayStyle(),
        OverlayStyle(shape="ellipse", color="gold", width=5.5, alpha=0.25, scale=1.1, jitter=0.3),
        OverlayStyle(shape="scribble", color="aqua", seed=9),
    ]
    styles.append(OverlayStyle.vip_llava("arrow", custom_rgb=(1, 2, 3)))
    rows = _pack(styles)
    assert rows.shape == (4, 9) and rows.dtype == np.float64 and rows.flags.writeable
    for row, s in zip(rows, styles, strict=True):
        code = list(Convention).index(s.convention)
        assert row.tolist() == [
            _SHAPES.index(s.shape), s.width, s.jitter, s.scale, *s.rgb, s.alpha, code
        ]
    assert rows[3, 4:7].tolist() == [1, 2, 3]
    assert _pack([]).shape == (0, 9)
