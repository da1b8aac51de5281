"""Preprocess / map_boxes against real transformers image processors (PIL backend, offline)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import InvalidBoxError, InvalidOptionError, ShapeError, UnsupportedModelError
from medcurric.geometry.preprocess import CropBackend, MappedBoxes, Preprocess, map_boxes

transformers = pytest.importorskip("transformers")


def _clip_pil(**kwargs):
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(do_rescale=False, do_normalize=False, **kwargs)


def _llava_pil(**kwargs):
    cls = getattr(transformers, "LlavaImageProcessorPil", None) or transformers.LlavaImageProcessor
    return cls(do_rescale=False, do_normalize=False, **kwargs)


def _locate(processor, image: np.ndarray) -> tuple[list[float], float]:
    """Run the processor and find the white box: (x1, y1, x2, y2) and its area in pixels."""
    out = processor(image, return_tensors="np")["pixel_values"][0]  # [3, H, W], 0..255 floats
    on = out.mean(axis=0) > 127.5
    if not on.any():
        return [0.0, 0.0, 0.0, 0.0], 0.0
    ys, xs = np.nonzero(on)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float(on.sum())


def _image_with_box(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


CASES = [
    # (height, width, box) -- several aspect ratios; boxes near the ends get cropped.
    (200, 300, (120, 40, 190, 150)),
    (300, 200, (30, 120, 170, 190)),
    (333, 517, (200, 50, 320, 280)),
    (517, 333, (40, 210, 300, 330)),
    (336, 336, (10, 20, 100, 200)),
    (120, 999, (450, 10, 560, 100)),
    (200, 300, (10, 40, 80, 150)),  # partly cut off by the crop (left end)
    (300, 200, (30, 250, 170, 298)),  # partly cut off (bottom end)
    (120, 999, (900, 10, 990, 100)),  # cropped away entirely
]


@pytest.mark.parametrize(("h", "w", "box"), CASES)
def test_clip_shortest_edge_crop_matches_real_processor(h, w, box):
    proc = _clip_pil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    pre = Preprocess.from_processor(proc)
    assert pre == Preprocess.shortest_edge_crop(336)
    found, area = _locate(proc, _image_with_box(h, w, box))
    mapped = map_boxes([box], pre, (h, w))
    assert pre.output_size((h, w)) == (336, 336)
    if area == 0:
        assert mapped.fraction[0] == 0.0
        return
    np.testing.assert_allclose(mapped.boxes[0], found, atol=1.0)
    full = np.prod(np.diff(mapped.unclipped[0].reshape(2, 2), axis=0))
    assert mapped.fraction[0] == pytest.approx(area / full, abs=0.06)


@pytest.mark.parametrize(("h", "w", "box"), CASES[:6])
@pytest.mark.parametrize("size", [224, 301])
def test_other_sizes_and_rectangular_crop(h, w, box, size):
    proc = _clip_pil(size={"shortest_edge": size}, crop_size={"height": size - 20, "width": size})
    pre = Preprocess.from_processor(proc)
    found, area = _locate(proc, _image_with_box(h, w, box))
    mapped = map_boxes(np.array([box]), pre, (h, w))
    out = proc(_image_with_box(h, w, box), return_tensors="np")["pixel_values"][0]
    assert pre.output_size((h, w)) == out.shape[1:]
    if area:
        np.testing.assert_allclose(mapped.boxes[0], found, atol=1.0)


@pytest.mark.parametrize(("h", "w", "box"), CASES[:6])
def test_plain_resize_matches_real_processor(h, w, box):
    proc = _clip_pil(size={"height": 336, "width": 336}, do_center_crop=False)
    pre = Preprocess.from_processor(proc)
    assert pre == Preprocess.plain_resize(336)
    found, _ = _locate(proc, _image_with_box(h, w, box))
    np.testing.assert_allclose(map_boxes([box], pre, (h, w)).boxes[0], found, atol=1.0)


@pytest.mark.parametrize(("h", "w", "box"), CASES[:6])
def test_llava_pad_to_square_matches_real_processor(h, w, box):
    proc = _llava_pil(
        do_pad=True, size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    pre = Preprocess.from_processor(proc)
    assert pre.pad_to_square and pre.background == (122, 116, 104)
    found, _ = _locate(proc, _image_with_box(h, w, box))
    mapped = map_boxes([box], pre, (h, w))
    np.testing.assert_allclose(mapped.boxes[0], found, atol=1.0)
    assert mapped.fraction[0] == 1.0
    # Same geometry as the named constructor for the original LLaVA training.
    ref = map_boxes([box], Preprocess.pad_square_resize(336), (h, w))
    np.testing.assert_allclose(mapped.boxes, ref.boxes, atol=1e-9)


@pytest.mark.parametrize(("h", "w"), [(200, 300), (301, 150), (100, 100)])
def test_crop_larger_than_image_pads_like_processor(h, w):
    box = (w // 4, h // 4, w // 2 + 1, h // 2 + 3)
    proc = _clip_pil(do_resize=False, crop_size={"height": 335, "width": 335})
    pre = Preprocess.from_processor(proc)
    assert pre.shortest_edge is None and pre.crop_size == (335, 335)
    found, _ = _locate(proc, _image_with_box(h, w, box))
    np.testing.assert_allclose(map_boxes([box], pre, (h, w)).boxes[0], found, atol=0.0)


def test_torchvision_crop_padding_rounds_down():
    pil = Preprocess(crop_size=(10, 10))
    tv = Preprocess(crop_size=(10, 10), crop_backend="torchvision")
    assert pil.coordinate_map((5, 10)).offset_y == 3  # ceil(5 / 2)
    assert tv.coordinate_map((5, 10)).offset_y == 2  # 5 // 2
    assert tv.crop_backend is CropBackend.TORCHVISION


def test_from_full_processor_and_resample_and_longest_edge():
    proc = _clip_pil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=2
    )
    pre = Preprocess.from_processor(SimpleNamespace(image_processor=proc))
    assert pre.shortest_edge == 224 and pre.resample == "bilinear"
    capped = Preprocess(shortest_edge=100, longest_edge=150)
    # transformers.image_transforms.get_size_with_aspect_ratio, same rounding
    from transformers.image_transforms import get_size_with_aspect_ratio

    for hw in [(100, 400), (400, 100), (99, 101), (1000, 1313)]:
        assert capped.output_size(hw) == tuple(get_size_with_aspect_ratio(hw, 100, 150))


def test_from_processor_rejects_unknown_sizes():
    with pytest.raises(UnsupportedModelError, match="max_height"):
        Preprocess.from_processor(
            SimpleNamespace(do_resize=True, size={"max_height": 3, "max_width": 4})
        )
    with pytest.raises(UnsupportedModelError):
        Preprocess.from_processor(object())


def test_validation_errors():
    with pytest.raises(InvalidOptionError, match="at most one"):
        Preprocess(shortest_edge=3, resize_to=(3, 3))
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        Preprocess(resample="bicubik")
    with pytest.raises(ShapeError):
        map_boxes([[1, 2, 3]], Preprocess(), (10, 10))
    with pytest.raises(InvalidBoxError, match="x1 <= x2"):
        map_boxes([[5, 0, 1, 1]], Preprocess(), (10, 10))
    with pytest.raises(InvalidBoxError):
        map_boxes([[0, 0, np.nan, 1]], Preprocess(), (10, 10))
    with pytest.raises(ShapeError, match="height, width"):
        map_boxes([[0, 0, 1, 1]], Preprocess(), 10)


def test_json_round_trip():
    pre = Preprocess.pad_square_resize(224)
    assert Preprocess.from_json(pre.to_json()) == pre


def test_torch_in_torch_out_and_empty():
    pre = Preprocess.shortest_edge_crop(336)
    out = map_boxes(torch.tensor([[0, 0, 10, 10]]), pre, (400, 400))
    assert isinstance(out, MappedBoxes) and isinstance(out.boxes, torch.Tensor)
    assert out.boxes.dtype == torch.float32 and out.visible.tolist() == [True]
    empty = map_boxes(np.zeros((0, 4)), pre, (400, 400))
    assert empty.boxes.shape == (0, 4) and empty.fraction.shape == (0,) and len(empty) == 0


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(20, 900),
    w=st.integers(20, 900),
    data=st.data(),
    kind=st.sampled_from(["clip", "pad", "resize"]),
)
def test_fraction_matches_brute_force_pixel_mapping(h, w, data, kind):
    """Fraction and clipped box agree with a reference that maps pixel centres one by one."""
    pre = {
        "clip": Preprocess.shortest_edge_crop(64),
        "pad": Preprocess.pad_square_resize(64),
        "resize": Preprocess.plain_resize((48, 64)),
    }[kind]
    x1 = data.draw(st.integers(0, w - 1))
    x2 = data.draw(st.integers(x1 + 1, w))
    y1 = data.draw(st.integers(0, h - 1))
    y2 = data.draw(st.integers(y1 + 1, h))
    out = map_boxes([[x1, y1, x2, y2]], pre, (h, w))
    m = pre.coordinate_map((h, w))
    # reference: the unclipped box corners, then the visible share by 1-D interval arithmetic
    rx1, rx2 = x1 * m.scale_x + m.offset_x, x2 * m.scale_x + m.offset_x
    ry1, ry2 = y1 * m.scale_y + m.offset_y, y2 * m.scale_y + m.offset_y
    vis_x = max(0.0, min(rx2, m.width) - max(rx1, 0.0)) / (rx2 - rx1)
    vis_y = max(0.0, min(ry2, m.height) - max(ry1, 0.0)) / (ry2 - ry1)
    assert out.fraction[0] == pytest.approx(vis_x * vis_y, abs=1e-9)
    assert 0 <= out.boxes[0, 0] <= out.boxes[0, 2] <= m.width
    assert 0 <= out.boxes[0, 1] <= out.boxes[0, 3] <= m.height
    if kind != "clip":
        assert out.fraction[0] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess.pad_square_resize(336),
        Preprocess.shortest_edge_crop(336),
        Preprocess.plain_resize((224, 336)),
    ],
    ids=["pad_square", "shortest_edge_crop", "plain_resize"],
)
def test_visible_fraction_counts_only_the_image_inside_the_input(pre: Preprocess) -> None:
    """Reference: shapely area of box ∩ original image ∩ (model input mapped back), over the box area."""
    from shapely.geometry import box as shp_box

    rng = np.random.default_rng(7)
    height, width = 480, 640
    m = pre.coordinate_map((height, width))
    seen = shp_box(0, 0, width, height).intersection(
        shp_box(-m.offset_x / m.scale_x, -m.offset_y / m.scale_y,
                (m.width - m.offset_x) / m.scale_x, (m.height - m.offset_y) / m.scale_y)
    )
    boxes = []
    for _ in range(200):
        x1, y1 = rng.uniform(-400, 900), rng.uniform(-400, 700)
        boxes.append([x1, y1, x1 + rng.uniform(1, 300), y1 + rng.uniform(1, 300)])
    boxes += [[100, -200, 200, -100], [100, -50, 200, 50], [-100, 0, 0, 100]]  # above, half above, left
    out = map_boxes(np.asarray(boxes), pre, (height, width))
    expected = [shp_box(*b).intersection(seen).area / shp_box(*b).area for b in boxes]
    np.testing.assert_allclose(out.fraction, expected, atol=1e-5)
    if pre.pad_to_square:
        assert out.fraction[-3] == 0.0 and out.fraction[-2] == pytest.approx(0.5)
