"""Box conversion, validation, IoU and mask round trips against independent references."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import InvalidBoxError, InvalidOptionError, ShapeError, WrongTypeError
from medcurric.geometry import (
    BoxFormat,
    box_area,
    box_convert,
    box_iou,
    boxes_to_masks,
    clip_boxes,
    masks_to_boxes,
    validate_boxes,
)
from medcurric.geometry.boxes import _box_iou_torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strategies import boxes_in_image, float_boxes

shapely_geometry = pytest.importorskip("shapely.geometry")


def _shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa = shapely_geometry.box(*a)
    pb = shapely_geometry.box(*b)
    union = pa.union(pb).area
    return 0.0 if union == 0 else pa.intersection(pb).area / union


def _brute_iou_3d(a: np.ndarray, b: np.ndarray) -> float:
    inter = 1.0
    for k in range(3):
        inter *= max(0.0, min(a[k + 3], b[k + 3]) - max(a[k], b[k]))
    va = np.prod(a[3:] - a[:3])
    vb = np.prod(b[3:] - b[:3])
    union = va + vb - inter
    return 0.0 if union <= 0 else inter / union


def _brute_mask(box: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-pixel centre rule, written independently of the library."""
    mask = np.zeros(shape, dtype=bool)
    k = len(shape)
    for idx in itertools.product(*[range(s) for s in shape]):
        coords = list(reversed(idx))  # x, y(, z)
        mask[idx] = all(box[a] <= coords[a] + 0.5 < box[a + k] for a in range(k))
    return mask


# ---------------------------------------------------------------------------
# box_iou
# ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(float_boxes(dims=2), float_boxes(dims=2))
def test_box_iou_matches_shapely(b1: np.ndarray, b2: np.ndarray) -> None:
    got = box_iou(b1, b2)
    assert got.shape == (len(b1), len(b2))
    assert got.dtype == np.float64
    for i, j in itertools.product(range(len(b1)), range(len(b2))):
        assert got[i, j] == pytest.approx(_shapely_iou(b1[i], b2[j]), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(float_boxes(dims=3), float_boxes(dims=3))
def test_box_iou_3d_matches_per_pair_loop(b1: np.ndarray, b2: np.ndarray) -> None:
    got = box_iou(b1, b2)
    for i, j in itertools.product(range(len(b1)), range(len(b2))):
        assert got[i, j] == pytest.approx(_brute_iou_3d(b1[i], b2[j]), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(float_boxes(dims=2, min_boxes=1), float_boxes(dims=2, min_boxes=1))
def test_box_iou_invariants(b1: np.ndarray, b2: np.ndarray) -> None:
    ab = box_iou(b1, b2)
    np.testing.assert_allclose(ab, box_iou(b2, b1).T, atol=1e-12)
    assert np.all((ab >= 0) & (ab <= 1 + 1e-12))
    assert not np.isnan(ab).any()
    self_iou = np.diag(box_iou(b1, b1))
    positive = box_area(b1) > 0
    np.testing.assert_allclose(self_iou[positive], 1.0, atol=1e-9)
    np.testing.assert_array_equal(self_iou[~positive], 0.0)


@settings(max_examples=30, deadline=None)
@given(float_boxes(dims=2), float_boxes(dims=2, min_boxes=1))
def test_box_iou_torch_paths_match_numpy(b1: np.ndarray, b2: np.ndarray) -> None:
    ref = box_iou(b1, b2)
    t1, t2 = torch.from_numpy(b1), torch.from_numpy(b2)
    fast = box_iou(t1, t2)  # CPU tensors without grad use the compiled kernel
    pure = _box_iou_torch(t1, t2, 2)  # the device-agnostic torch path (used on CUDA)
    assert isinstance(fast, torch.Tensor) and fast.dtype == torch.float64
    np.testing.assert_allclose(fast.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(pure.numpy(), ref, atol=1e-12)


def test_box_iou_torch_device_and_grad(device: torch.device) -> None:
    a = torch.tensor([[0.0, 0.0, 4.0, 2.0]], device=device, requires_grad=True)
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]], device=device)
    iou = box_iou(a, b)
    assert iou.device == a.device and iou.dtype == torch.float32
    assert iou.detach().cpu().tolist() == [[0.5, 0.0]]
    iou.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_box_iou_dtypes() -> None:
    b = np.array([[0, 0, 4, 2], [1, 1, 3, 3]])
    assert box_iou(b, b).dtype == np.float64
    assert box_iou(b.astype(np.float32), b.astype(np.float32)).dtype == np.float32
    assert box_iou(b.astype(np.float16), b.astype(np.float16)).dtype == np.float32
    assert box_iou(b.astype(np.int16), b.astype(np.uint8)).dtype == np.float64
    t = torch.tensor(b, dtype=torch.bfloat16)
    assert box_iou(t, t).dtype == torch.float32
    f32 = box_iou(b.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(f32, box_iou(b, b), rtol=1e-6)


def test_box_iou_empty_inputs() -> None:
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou([], []).shape == (0, 0)
    assert box_iou(torch.zeros(3, 6), torch.zeros(0, 6)).shape == (3, 0)


@pytest.mark.parametrize(
    ("b1", "b2", "error", "words"),
    [
        ([[0, 0, 1]], [[0, 0, 1, 1]], ShapeError, "[N, 4]"),
        ([0, 0, 1, 1], [[0, 0, 1, 1]], ShapeError, "boxes[None]"),
        ([[0, 0, 1, 1]], [[0, 0, 0, 1, 1, 1]], ShapeError, "same number of columns"),
        ([[0, 0, np.nan, 1]], [[0, 0, 1, 1]], InvalidBoxError, "finite"),
        ([[0, 0, 1, 1]], [[0, 0, np.inf, 1]], InvalidBoxError, "boxes2"),
        ([[2, 0, 1, 1]], [[0, 0, 1, 1]], InvalidBoxError, "box_convert"),
        ([["a", "b", "c", "d"]], [[0, 0, 1, 1]], WrongTypeError, "real numbers"),
    ],
)
def test_box_iou_errors(b1, b2, error, words) -> None:
    with pytest.raises(error) as info:
        box_iou(b1, b2)
    assert words in str(info.value)


def test_box_iou_mixed_types_and_devices() -> None:
    with pytest.raises(WrongTypeError, match="both as torch tensors"):
        box_iou(torch.zeros(1, 4), np.zeros((1, 4)))


# ---------------------------------------------------------------------------
# box_convert, box_area, clip, validate
# ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(float_boxes(dims=2) | float_boxes(dims=3), st.sampled_from(list(BoxFormat)))
def test_box_convert_round_trip(boxes: np.ndarray, fmt: BoxFormat) -> None:
    there = box_convert(boxes, "xyxy", fmt)
    back = box_convert(there, fmt, BoxFormat.XYXY)
    np.testing.assert_allclose(back, boxes, atol=1e-9)
    tb = box_convert(torch.from_numpy(boxes), "xyxy", fmt)
    np.testing.assert_allclose(tb.numpy(), there, atol=1e-12)


def test_box_convert_known_values() -> None:
    b = np.array([[1.0, 2.0, 5.0, 8.0]])
    assert box_convert(b, "xyxy", "xywh").tolist() == [[1, 2, 4, 6]]
    assert box_convert(b, "xyxy", "cxcywh").tolist() == [[3, 5, 4, 6]]
    assert box_convert([[3, 5, 4, 6]], "cxcywh", "xywh").tolist() == [[1, 2, 4, 6]]
    b3 = [[1, 2, 3, 5, 8, 13]]
    assert box_convert(b3, "xyxy", "xywh").tolist() == [[1, 2, 3, 4, 6, 10]]
    assert box_convert(b3, "xyxy", "cxcywh").tolist() == [[3, 5, 8, 4, 6, 10]]
    assert box_convert([[0, 0, 1, 1]], "cxcywh", "xyxy").tolist() == [[-0.5, -0.5, 0.5, 0.5]]


def test_box_convert_bad_format_suggests() -> None:
    with pytest.raises(InvalidOptionError, match="Did you mean 'xywh'"):
        box_convert([[0, 0, 1, 1]], "xyhw", "xyxy")


def test_box_area_values_and_types() -> None:
    assert box_area([[0, 0, 4, 2], [1, 1, 1, 5]]).tolist() == [8, 0]
    assert box_area([[0, 0, 0, 2, 3, 4]]).tolist() == [24]
    assert box_area(np.array([[0, 0, 0.5, 2]], dtype=np.float16)).dtype == np.float32
    t = box_area(torch.tensor([[0.0, 0.0, 4.0, 2.0]]))
    assert isinstance(t, torch.Tensor) and t.tolist() == [8.0]
    assert box_area(np.zeros((0, 4))).shape == (0,)
    with pytest.raises(InvalidBoxError):
        box_area([[0, 0, -1, 2]])


def test_validate_boxes() -> None:
    ok = validate_boxes([[0, 0, 4, 2]], (2, 4))
    assert isinstance(ok, np.ndarray)
    t = torch.tensor([[0.0, 0.0, 4.0, 2.0]])
    assert validate_boxes(t, (2, 4)) is t
    with pytest.raises(InvalidBoxError, match="clip=True"):
        validate_boxes([[0, 0, 4, 2.5]], (2, 4))
    with pytest.raises(InvalidBoxError, match="inside the image"):
        validate_boxes([[-0.1, 0, 4, 2]], (2, 4))
    with pytest.raises(ShapeError, match=r"\(D, H, W\)"):
        validate_boxes([[0, 0, 0, 1, 1, 1]], (2, 4))
    with pytest.raises(InvalidBoxError, match="box 1"):
        validate_boxes(torch.tensor([[0.0, 0, 1, 1], [0, float("nan"), 1, 1]]))
    assert validate_boxes(np.zeros((0, 6)), (1, 2, 3)).shape == (0, 6)


def test_clip_boxes() -> None:
    got = clip_boxes([[-2.0, 1.0, 9.0, 3.0], [7.0, 7.0, 9.0, 9.0]], (2, 4))
    assert got.tolist() == [[0, 1, 4, 2], [4, 2, 4, 2]]
    t = clip_boxes(torch.tensor([[-1.0, -1.0, -1.0, 5.0, 5.0, 5.0]]), (2, 3, 4))
    assert t.tolist() == [[0, 0, 0, 4, 3, 2]]


# ---------------------------------------------------------------------------
# boxes_to_masks / masks_to_boxes
# ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_boxes_to_masks_matches_centre_rule(data: st.DataObject) -> None:
    ndim = data.draw(st.sampled_from([2, 3]))
    shape = tuple(data.draw(st.integers(1, 6)) for _ in range(ndim))
    boxes = data.draw(boxes_in_image(shape, max_boxes=4))
    masks = boxes_to_masks(boxes, shape)
    assert masks.shape == (len(boxes), *shape) and masks.dtype == bool
    for n, box in enumerate(boxes):
        np.testing.assert_array_equal(masks[n], _brute_mask(box, shape))
    tm = boxes_to_masks(torch.from_numpy(boxes), shape)
    np.testing.assert_array_equal(tm.numpy(), masks)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_masks_boxes_round_trip(data: st.DataObject) -> None:
    ndim = data.draw(st.sampled_from([2, 3]))
    shape = tuple(data.draw(st.integers(1, 7)) for _ in range(ndim))
    boxes = data.draw(boxes_in_image(shape, max_boxes=4, integer=True))
    masks = boxes_to_masks(boxes, shape)
    back = masks_to_boxes(masks)
    empty = ~masks.reshape(len(boxes), int(np.prod(shape))).any(axis=1)
    np.testing.assert_array_equal(back[~empty], boxes[~empty])
    np.testing.assert_array_equal(back[empty], 0.0)
    np.testing.assert_array_equal(boxes_to_masks(back, shape), masks)
    tb = masks_to_boxes(torch.from_numpy(masks))
    np.testing.assert_array_equal(tb.numpy(), back)


def test_masks_to_boxes_tight_box_of_scattered_pixels() -> None:
    m = np.zeros((1, 5, 6), dtype=np.uint8)
    m[0, 1, 4] = 255
    m[0, 3, 2] = 1
    assert masks_to_boxes(m).tolist() == [[2, 1, 5, 4]]
    assert masks_to_boxes(np.zeros((2, 3, 3))).tolist() == [[0, 0, 0, 0]] * 2
    with pytest.raises(ShapeError, match=r"mask\[None\]"):
        masks_to_boxes(np.zeros((3, 3)))


def test_boxes_to_masks_clip_and_errors() -> None:
    with pytest.raises(InvalidBoxError, match="clip=True"):
        boxes_to_masks([[0, 0, 5, 1]], (2, 4))
    m = boxes_to_masks([[-1, 0, 5, 1]], (2, 4), clip=True)
    assert m.sum() == 4
    assert boxes_to_masks(np.zeros((0, 4)), (2, 3)).shape == (0, 2, 3)
