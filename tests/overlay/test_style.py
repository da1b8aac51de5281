"""Style presets: ViP-LLaVA's prompt rules, each checked against a restatement of the rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medcurric.errors import InvalidBoxError, InvalidOptionError
from medcurric.overlay import (
    Color,
    Convention,
    OverlayStyle,
    RandomStyle,
    Shape,
    StageOverlay,
    StylePreset,
    draw_overlay,
    style_preset,
)

BACKENDS = ("numba", "torch")


def _changed(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    return (np.asarray(out) != image).any(axis=-1)


def _in_box(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("size", "width", "box"),
    [
        ((336, 336), 3.0, (40, 50, 200, 300)),
        ((512, 400), 3.0, (10, 20, 110, 90)),  # 3 * 512 / 336 = 4.57 -> 4
        ((700, 900), 2.0, (300, 100, 420, 260)),  # 2 * 900 / 336 = 5.36 -> 5
        ((224, 224), 8.0, (0, 0, 60, 40)),  # at the image corner: 8 * 224 / 336 = 5.33 -> 5
    ],
)
def test_vip_llava_rectangle_covers_the_box_outer_ring(backend, size, width, box):
    h, w = size
    ring = int(width * max(h, w) / 336)  # ViP-LLaVA's own width rule
    x1, y1, x2, y2 = box
    expected = _in_box(h, w, box) & ~_in_box(h, w, (x1 + ring, y1 + ring, x2 - ring, y2 - ring))
    image = np.full((h, w, 3), 7, np.uint8)
    out = draw_overlay(image, box, OverlayStyle.vip_llava(width=width), backend=backend)
    np.testing.assert_array_equal(_changed(image, out), expected)
    # opacity 128/255 over the grey: (7 * 127 + 255 * 128 + 127) // 255 in the red channel
    grey = (7 * 127 + 127) // 255
    assert out[y1, x1].tolist() == [(7 * 127 + 255 * 128 + 127) // 255, grey, grey]


def test_medcurric_rectangle_stays_outside_the_box_and_is_not_truncated():
    h = w = 500
    box = (100, 100, 200, 200)
    image = np.zeros((h, w, 3), np.uint8)
    style = OverlayStyle.medcurric(width=3.0, alpha=1.0)
    out = draw_overlay(image, box, style)
    changed = _changed(image, out)
    assert not (changed & _in_box(h, w, box)).any()
    # 3 * 500 / 336 = 4.46 px: the outermost column is partly covered (anti-aliased), not cut
    row = out[150, 90:100, 0]
    assert 0 < row.min() < 255 or 0 < row[row > 0].min() < 255


def test_vip_llava_phrases():
    expected = {
        Shape.RECTANGLE: "within the red rectangle",
        Shape.TRIANGLE: "with the red triangle",
        Shape.POINT: "at the red point",
        Shape.SCRIBBLE: "with the red scribble",
        Shape.CONTOUR: "with the red mask contour",
        Shape.ELLIPSE: "within the red ellipse",  # not in ViP-LLaVA's list: medcurric's
        Shape.ARROW: "pointed to by the red arrow",
    }
    for shape, phrase in expected.items():
        assert OverlayStyle.vip_llava(shape).phrase == phrase
    assert OverlayStyle.vip_llava("point", color="gold").phrase == "at the gold point"
    assert OverlayStyle.vip_llava("point", custom_rgb=(1, 2, 3)).phrase == "at the point"
    assert OverlayStyle.vip_llava("triangle", article=False).phrase == "with red triangle"
    assert OverlayStyle.vip_llava("contour", custom_rgb=(9, 9, 9), article=False).phrase == (
        "with mask contour"
    )
    assert OverlayStyle.medcurric("point").phrase == "marked by the red point"
    assert OverlayStyle.medcurric() == OverlayStyle()
    assert OverlayStyle.vip_llava().alpha == 128 / 255


def test_vip_llava_random_policy_over_many_seeded_draws():
    policy = RandomStyle.vip_llava()
    styles = policy.sample_many(4000, rng=11)
    assert styles == RandomStyle.vip_llava().sample_many(4000, rng=11)
    ranges = {Shape.ARROW: (1, 6), Shape.SCRIBBLE: (2, 12), Shape.CONTOUR: (1, 2), Shape.POINT: (5, 20)}
    by_shape: dict[Shape, set[float]] = {}
    for s in styles:
        by_shape.setdefault(s.shape, set()).add(s.width)
        assert s.convention is Convention.VIP_LLAVA
        assert 96 / 255 <= s.alpha <= 1 and 1.0 <= s.scale <= 1.5
    for shape, widths in by_shape.items():
        lo, hi = ranges.get(shape, (2, 8))
        assert widths == {float(v) for v in range(lo, hi + 1)}, shape  # every whole width, no other
    unnamed = sum(s.custom_rgb is not None for s in styles)
    dropped = sum(not s.article for s in styles)
    # binomial(4000, 0.5): mean 2000, sd 31.6; 6 sd either side
    assert abs(unnamed - 2000) < 190 and abs(dropped - 2000) < 190
    for s in styles:
        words = s.phrase.split()
        assert (s.color.value in words) == (s.custom_rgb is None)
        assert ("the" in words) == s.article
    assert len({s.custom_rgb for s in styles if s.custom_rgb is not None}) > 1000
    assert {s.color for s in styles} == set(Color)


def test_medcurric_random_policy_is_unchanged():
    """The medcurric policy draws the same styles as before the presets existed."""
    a = RandomStyle.medcurric().sample_many(50, rng=3)
    b = RandomStyle().sample_many(50, rng=3)
    assert a == b
    assert all(s.custom_rgb is None and s.article and s.convention is Convention.MEDCURRIC for s in a)
    assert [s.shape.value for s in RandomStyle(shapes=("rectangle", "ellipse")).sample_many(4, rng=0)] == [
        "ellipse",
        "ellipse",
        "ellipse",
        "rectangle",
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_vip_llava_arrow_head_and_triangle_lie_in_the_box(backend):
    h, w = 400, 400
    box = (150, 160, 260, 250)
    inside = _in_box(h, w, box)
    image = np.zeros((h, w, 3), np.uint8)
    for seed in range(12):
        tri = draw_overlay(
            image, box, OverlayStyle.vip_llava("triangle", seed=seed, jitter=1.0), backend=backend
        )
        changed = _changed(image, tri)
        assert changed.any() and not (changed & ~inside).any()
        arrow = OverlayStyle.vip_llava("arrow", seed=seed, jitter=1.0)
        drawn = _changed(image, draw_overlay(image, box, arrow, backend=backend))
        assert (drawn & inside).any() and (drawn & ~inside).any()
        ours = _changed(image, draw_overlay(image, box, OverlayStyle.medcurric("arrow", seed=seed), backend=backend))
        assert not (ours & inside).any()
    ours = _changed(image, draw_overlay(image, box, OverlayStyle.medcurric("triangle")))
    assert not (ours & inside).any()


def test_vip_llava_widths_scale_with_truncation():
    """Point radius 8 at 500 px: int(8 * 500 / 336) = 11 (not 11.9) pixels."""
    image = np.zeros((500, 500, 3), np.uint8)
    out = draw_overlay(image, (200, 200, 300, 300), OverlayStyle.vip_llava("point", alpha=1.0))
    yy, xx = np.mgrid[:500, :500] + 0.5
    dist = np.hypot(xx - 250, yy - 250)
    radius = math.floor(8 * 500 / 336)
    # fully covered pixels: centre within radius - 1/2 (one pixel of anti-aliasing)
    np.testing.assert_array_equal(out[..., 0] == 255, dist <= radius - 0.5)
    assert not (out[..., 0] > 0)[dist > radius + 0.5].any()


def test_presets_by_name_and_serialisation():
    assert style_preset("vip_llava") == OverlayStyle.vip_llava()
    assert style_preset("medcurric") == OverlayStyle.medcurric()
    assert style_preset("vip_llava_random") == RandomStyle.vip_llava()
    assert len({RandomStyle.vip_llava(), RandomStyle.vip_llava(), RandomStyle()}) == 2  # hashable policies
    assert style_preset(StylePreset.MEDCURRIC_RANDOM) == RandomStyle()
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        style_preset("vip_lava")
    for s in RandomStyle.vip_llava().sample_many(20, rng=2):
        assert OverlayStyle.from_json(s.to_json()) == s
    a = StageOverlay("vip_llava_random", seed=4)
    b = StageOverlay("vip_llava_random", seed=4)
    img = np.zeros((3, 64, 64, 3), np.uint8)
    ra, rb = a(img, [[5, 5, 40, 40]] * 3), b(img, [[5, 5, 40, 40]] * 3)
    assert ra.phrases == rb.phrases and np.array_equal(ra.image, rb.image)
    assert StageOverlay("vip_llava")(img[0], [5, 5, 40, 40]).phrase == "within the red rectangle"
    with pytest.raises(InvalidOptionError):
        OverlayStyle(custom_rgb=(1, 2, 300))
    with pytest.raises(InvalidOptionError):
        RandomStyle(unnamed_color=1.5)
    with pytest.raises(InvalidOptionError):
        RandomStyle(shape_widths={"arrow": (3, 1)})


# ----------------------------------------------------------------------------- boxes off the image


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_box_that_misses_the_image_raises(backend):
    image = np.zeros((40, 60, 3), np.uint8)
    for box in ([70, 5, 90, 20], [-30, -30, -1, -1], [10, 40, 20, 50], [0, 0, 0, 0]):
        with pytest.raises(InvalidBoxError, match=r"60x40") as info:
            draw_overlay(image, box, backend=backend)
        assert str(tuple(float(v) for v in box)) in str(info.value)
    with pytest.raises(InvalidBoxError):
        StageOverlay()(image, [70, 5, 90, 20])
    with pytest.raises(InvalidBoxError, match="box 1"):
        draw_overlay(np.zeros((2, 40, 60, 3), np.uint8), [[1, 1, 5, 5], [61, 1, 70, 5]], backend=backend)
    with pytest.raises(InvalidBoxError):
        draw_overlay(torch.zeros(3, 40, 60), [70, 5, 90, 20], backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_draws_the_part_inside_and_refuses_an_empty_one(backend):
    image = np.zeros((40, 60, 3), np.uint8)
    style = OverlayStyle.vip_llava(width=6.0)
    clipped = draw_overlay(image, [50, -10, 90, 20], style, clip=True, backend=backend)
    np.testing.assert_array_equal(clipped, draw_overlay(image, [50, 0, 60, 20], style, backend=backend))
    assert StageOverlay(style, clip=True)(image, [50, -10, 90, 20]).phrase == "within the red rectangle"
    for box in ([70, 5, 90, 20], [60, 5, 90, 20]):  # outside, and touching the border only
        with pytest.raises(InvalidBoxError, match="no area inside"):
            draw_overlay(image, box, style, clip=True, backend=backend)
