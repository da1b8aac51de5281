"""box_mask_overlap and label_histogram against a brute-force per-pixel loop and pycocotools."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import DataFormatError, InvalidBoxError, ShapeError, WrongTypeError
from medcurric.geometry import Overlap, box_mask_overlap, boxes_to_masks, label_histogram
from medcurric.geometry import overlap as overlap_module

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strategies import boxes_in_image, label_maps

INT_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def _centre_in(box: np.ndarray, idx: tuple[int, ...]) -> bool:
    """Independent centre rule: idx in array order, box xyxy (x first)."""
    k = len(idx)
    coords = list(reversed(idx))
    return all(box[a] <= coords[a] + 0.5 < box[a + k] for a in range(k))


def _brute(boxes: np.ndarray, lab: np.ndarray, num_labels: int, slices=None):
    """Per-pixel loop over every box: intersection [N, L], box_area [N]."""
    inter = np.zeros((len(boxes), num_labels), dtype=np.int64)
    area = np.zeros(len(boxes), dtype=np.int64)
    for n, box in enumerate(boxes):
        plane = lab if slices is None else lab[slices[n]]
        for idx in itertools.product(*[range(s) for s in plane.shape]):
            if _centre_in(box, idx):
                inter[n, int(plane[idx])] += 1
                area[n] += 1
    return inter, area


def _label_area(lab: np.ndarray, num_labels: int) -> np.ndarray:
    return np.array([(lab.astype(np.int64) == k).sum() for k in range(num_labels)], dtype=np.int64)


# ---------------------------------------------------------------------------
# Brute-force references
# ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_2d_matches_brute_force(data: st.DataObject) -> None:
    lab = data.draw(label_maps(ndim=2, max_side=14))
    boxes = data.draw(boxes_in_image(lab.shape))
    nl = data.draw(st.integers(int(lab.max()) + 1, int(lab.max()) + 3))
    ov = box_mask_overlap(boxes, lab, num_labels=nl)
    inter, area = _brute(boxes, lab, nl)
    np.testing.assert_array_equal(ov.intersection, inter)
    np.testing.assert_array_equal(ov.box_area, area)
    np.testing.assert_array_equal(ov.label_area, _label_area(lab, nl))
    assert ov.intersection.dtype == np.int64 and ov.box_area.dtype == np.int64
    np.testing.assert_array_equal(ov.intersection.sum(axis=1), ov.box_area)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_3d_matches_brute_force(data: st.DataObject) -> None:
    lab = data.draw(label_maps(ndim=3, max_side=7))
    boxes = data.draw(boxes_in_image(lab.shape))
    ov = box_mask_overlap(boxes, lab)
    nl = int(lab.max()) + 1
    assert ov.num_labels == nl
    inter, area = _brute(boxes, lab, nl)
    np.testing.assert_array_equal(ov.intersection, inter)
    np.testing.assert_array_equal(ov.box_area, area)
    np.testing.assert_array_equal(ov.label_area, _label_area(lab, nl))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_slice_mode_matches_brute_force(data: st.DataObject) -> None:
    vol = data.draw(label_maps(ndim=3, max_side=8))
    boxes = data.draw(boxes_in_image(vol.shape[1:]))
    per_box = data.draw(st.booleans())
    if per_box:
        slices = data.draw(
            st.lists(st.integers(0, vol.shape[0] - 1), min_size=len(boxes), max_size=len(boxes))
        )
    else:
        slices = data.draw(st.integers(0, vol.shape[0] - 1))
    ov = box_mask_overlap(boxes, vol, slice_index=slices, num_labels=7)
    per = slices if per_box else [slices] * len(boxes)
    inter, area = _brute(boxes, vol, 7, slices=per)
    np.testing.assert_array_equal(ov.intersection, inter)
    np.testing.assert_array_equal(ov.box_area, area)
    if per_box:
        assert ov.label_area.shape == (len(boxes), 7)
        for n, s in enumerate(per):
            np.testing.assert_array_equal(ov.label_area[n], _label_area(vol[s], 7))
    else:
        np.testing.assert_array_equal(ov.label_area, _label_area(vol[slices], 7))


@pytest.mark.parametrize("dtype", [*INT_DTYPES, np.bool_])
@pytest.mark.parametrize("ndim", [2, 3])
def test_all_integer_dtypes(dtype, ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    shape = (5, 9, 16) if ndim == 3 else (9, 16)
    top = 2 if dtype == np.bool_ else 6
    lab = rng.integers(0, top, size=shape).astype(dtype)
    lab[..., 3:11] = 1  # long runs
    boxes = np.array([[0.0] * ndim + list(reversed(shape)), [2.25] * ndim + [3.75] * ndim])
    ov = box_mask_overlap(boxes, lab, num_labels=6)
    inter, area = _brute(boxes, lab, 6)
    np.testing.assert_array_equal(ov.intersection, inter)
    np.testing.assert_array_equal(ov.box_area, area)
    np.testing.assert_array_equal(ov.label_area, _label_area(lab, 6))
    np.testing.assert_array_equal(label_histogram(lab, 6), _label_area(lab, 6))


@pytest.mark.parametrize("width", [8, 16, 24, 40, 64])
@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0])
def test_word_kernel_rows_at_every_alignment(width: int, noise: float) -> None:
    """uint8 volumes with size % 8 == 0 take the word-at-a-time kernel: every x-offset and length."""
    rng = np.random.default_rng(width)
    vol = np.repeat(rng.integers(0, 4, size=(3, 4, width // 4)), 4, axis=2).astype(np.uint8)
    flip = rng.random(vol.shape) < noise
    vol[flip] = rng.integers(0, 9, size=int(flip.sum()))
    boxes = [
        [x0, 0, 0, x1, 4, 3] for x0 in range(width + 1) for x1 in range(x0, min(width, x0 + 19) + 1)
    ]
    b = np.asarray(boxes, dtype=np.float64)
    ov = box_mask_overlap(b, vol, num_labels=9)
    for n, (x0, _, _, x1, _, _) in enumerate(boxes):
        expect = np.bincount(vol[:, :, x0:x1].ravel(), minlength=9)
        np.testing.assert_array_equal(ov.intersection[n], expect)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_sat_and_crop_strategies_agree(data: st.DataObject) -> None:
    lab = data.draw(label_maps(ndim=2, max_side=20, max_label=6))
    boxes = data.draw(boxes_in_image(lab.shape, max_boxes=10))
    from medcurric.geometry.boxes import _axis_sizes, _pixel_ranges

    ranges = overlap_module._kernel_ranges(_pixel_ranges(boxes, _axis_sizes(lab.shape, 2)))
    vol = overlap_module._kernel_labels(lab[None])
    sat = overlap_module._counts_np(vol, ranges, 7, plane=0, strategy="sat")
    crop = overlap_module._counts_np(vol, ranges, 7, plane=0, strategy="crop")
    np.testing.assert_array_equal(sat, crop)
    np.testing.assert_array_equal(crop, _brute(boxes, lab, 7)[0])


def test_many_boxes_pick_summed_area_tables() -> None:
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 5, size=(64, 64)).astype(np.uint8)
    lo = rng.uniform(0, 16, size=(400, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(16, 48, size=(400, 2))], axis=1)
    from medcurric.geometry.boxes import _axis_sizes, _pixel_ranges

    ranges = overlap_module._kernel_ranges(_pixel_ranges(boxes, _axis_sizes(lab.shape, 2)))
    assert overlap_module._use_sat(ranges, lab.shape, 5)
    assert not overlap_module._use_sat(ranges[:1], lab.shape, 5)
    ov = box_mask_overlap(boxes, lab)
    masks = boxes_to_masks(boxes, lab.shape)
    expect = np.stack([np.bincount(lab[m], minlength=5) for m in masks])
    np.testing.assert_array_equal(ov.intersection, expect)


# ---------------------------------------------------------------------------
# Binary mask stacks
# ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_binary_stack_matches_brute_force(data: st.DataObject) -> None:
    ndim = data.draw(st.sampled_from([2, 3]))
    shape = tuple(data.draw(st.integers(1, 7)) for _ in range(ndim))
    channels = data.draw(st.integers(0, 4))
    seed = data.draw(st.integers(0, 2**31))
    stack = np.random.default_rng(seed).random((channels, *shape)) < 0.4  # channels overlap
    boxes = data.draw(boxes_in_image(shape))
    use_uint8 = data.draw(st.booleans())
    given_map = (stack * 255).astype(np.uint8) if use_uint8 else stack
    ov = box_mask_overlap(boxes, given_map, binary=True)
    assert ov.intersection.shape == (len(boxes), channels)
    for n, box in enumerate(boxes):
        inside = np.zeros(shape, dtype=bool)
        for idx in itertools.product(*[range(s) for s in shape]):
            inside[idx] = _centre_in(box, idx)
        for c in range(channels):
            assert ov.intersection[n, c] == (stack[c] & inside).sum()
        assert ov.box_area[n] == inside.sum()
    np.testing.assert_array_equal(
        ov.label_area, stack.reshape(channels, -1).sum(axis=1) if channels else []
    )


def test_binary_slice_mode_and_channel_check() -> None:
    stack = np.zeros((2, 3, 4, 4), dtype=bool)
    stack[0, 1] = True
    stack[1, 1, :2, :2] = True
    stack[1, 2] = True
    ov = box_mask_overlap([[0, 0, 2, 2], [0, 0, 4, 4]], stack, slice_index=[1, 2], binary=True)
    assert ov.intersection.tolist() == [[4, 4], [0, 16]]
    assert ov.label_area.tolist() == [[16, 4], [0, 16]]
    with pytest.raises(ShapeError, match="number of mask channels"):
        box_mask_overlap([[0, 0, 1, 1]], stack[:, 0], binary=True, num_labels=3)


# ---------------------------------------------------------------------------
# Scores and invariants
# ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_scores_invariants(data: st.DataObject) -> None:
    lab = data.draw(label_maps(ndim=2, max_side=12))
    boxes = data.draw(boxes_in_image(lab.shape, min_boxes=1))
    ov = box_mask_overlap(boxes, lab)
    iou, ioa = ov.iou(), ov.ioa()
    for s in (iou, ioa):
        assert s.dtype == np.float64 and s.shape == ov.intersection.shape
        assert not np.isnan(s).any()
        assert np.all((s >= 0) & (s <= 1))
    assert np.all(ioa >= iou - 1e-15)
    has = ov.box_area > 0
    # the label holding most of the box wins under both criteria
    most = ov.intersection.argmax(axis=1)
    np.testing.assert_array_equal(ioa.argmax(axis=1)[has], most[has])
    np.testing.assert_array_equal(ioa[~has], 0.0)
    np.testing.assert_allclose(ioa.sum(axis=1)[has], 1.0)


def test_iou_matches_pycocotools() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(7)
    lab = np.zeros((40, 50), dtype=np.uint8)
    lab[5:30, 10:35] = 1
    lab[20:38, 30:48] = 2
    lab[rng.random(lab.shape) < 0.05] = 3
    boxes = np.array(
        [[12.0, 8.0, 30.0, 25.0], [28.5, 18.2, 47.9, 39.1], [0, 0, 50, 40], [3, 3, 3, 9]]
    )
    ov = box_mask_overlap(boxes, lab)
    box_masks = boxes_to_masks(boxes, lab.shape)
    box_rles = mask_utils.encode(np.asfortranarray(box_masks.transpose(1, 2, 0).astype(np.uint8)))
    for label in range(ov.num_labels):
        organ = mask_utils.encode(np.asfortranarray((lab == label).astype(np.uint8)[:, :, None]))
        ref = mask_utils.iou(box_rles, organ, [0]).reshape(-1)
        np.testing.assert_allclose(ov.iou()[:, label], ref, atol=1e-12)


def test_num_labels_beyond_dtype_range() -> None:
    lab = np.full((2, 8), 3, dtype=np.uint8)
    ov = box_mask_overlap([[0, 0, 8, 2]], lab, num_labels=300)
    assert ov.intersection.shape == (1, 300) and ov.intersection[0, 3] == 16
    assert ov.label_area.shape == (300,) and ov.label_area[3] == 16


def test_zero_area_boxes_and_empty_inputs() -> None:
    lab = np.ones((4, 5), dtype=np.uint8)
    ov = box_mask_overlap([[1, 1, 1, 3], [2.2, 0, 2.4, 4]], lab)  # neither covers a centre
    assert ov.box_area.tolist() == [0, 0]
    assert ov.iou().tolist() == [[0, 0], [0, 0]] and ov.ioa().tolist() == [[0, 0], [0, 0]]
    empty = box_mask_overlap(np.zeros((0, 4)), lab)
    assert empty.intersection.shape == (0, 2) and empty.box_area.shape == (0,)
    assert empty.iou().shape == (0, 2)
    e3 = box_mask_overlap([], np.zeros((2, 3, 4), dtype=np.int16), slice_index=[])
    assert e3.intersection.shape == (0, 1)
    assert label_histogram(np.zeros((0, 3), dtype=np.uint8)).shape == (0,)
    assert label_histogram(np.zeros((0, 3), dtype=np.uint8), num_labels=4).tolist() == [0] * 4
    et = box_mask_overlap(torch.zeros(0, 6), torch.zeros(2, 2, 2, dtype=torch.uint8), num_labels=3)
    assert et.intersection.shape == (0, 3)


def test_precomputed_label_area_is_used() -> None:
    vol = np.zeros((4, 8, 8), dtype=np.uint8)
    vol[1:3, 2:6, 2:6] = 2
    hist = label_histogram(vol)
    ov = box_mask_overlap([[0, 0, 0, 8, 8, 4]], vol, label_area=hist)
    ref = box_mask_overlap([[0, 0, 0, 8, 8, 4]], vol)
    np.testing.assert_array_equal(ov.intersection, ref.intersection)
    np.testing.assert_array_equal(ov.label_area, ref.label_area)
    with pytest.raises(ShapeError, match="label_area"):
        box_mask_overlap([[0, 0, 0, 8, 8, 4]], vol, label_area=np.zeros((2, 3)))
    with pytest.raises(DataFormatError, match="num_labels"):
        box_mask_overlap([[0, 0, 0, 8, 8, 4]], vol, label_area=hist[:2])


# ---------------------------------------------------------------------------
# torch paths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pure_torch", [False, True], ids=["cpu-kernels", "torch-ops"])
@pytest.mark.parametrize("mode", ["2d", "3d", "slice", "slices", "binary"])
def test_torch_paths_match_numpy(mode: str, pure_torch: bool, monkeypatch, device) -> None:
    if pure_torch:
        monkeypatch.setattr(overlap_module, "_use_torch_kernels", lambda t: True)
    rng = np.random.default_rng(11)
    vol = np.repeat(rng.integers(0, 6, size=(4, 10, 6)), 2, axis=2).astype(np.uint8)
    kwargs: dict = {}
    if mode == "2d":
        lab, boxes = vol[0], rng.uniform(0, 5, size=(5, 2))
        boxes = np.concatenate([boxes, boxes + 4.3], axis=1)
    elif mode == "binary":
        lab = np.stack([vol == k for k in range(6)])
        boxes = np.array([[0.0, 0, 0, 12, 10, 4], [1.5, 2.5, 0.5, 8.2, 7.7, 2.5]])
        kwargs["binary"] = True
    elif mode == "3d":
        lab = vol
        boxes = np.array([[0.0, 0, 0, 12, 10, 4], [1.5, 2.5, 0.5, 8.2, 7.7, 2.5]])
    else:
        lab = vol
        boxes = np.array([[0.0, 0, 12, 10], [1.5, 2.5, 8.2, 7.7], [3, 3, 9, 9]])
        kwargs["slice_index"] = 2 if mode == "slice" else [0, 3, 3]
    ref = box_mask_overlap(boxes, lab, **kwargs)
    got = box_mask_overlap(
        torch.from_numpy(boxes).to(device), torch.from_numpy(lab).to(device), **kwargs
    )
    for name in ("intersection", "box_area", "label_area"):
        value = getattr(got, name)
        assert isinstance(value, torch.Tensor) and value.dtype == torch.int64
        assert value.device.type == device.type
        np.testing.assert_array_equal(value.cpu().numpy(), getattr(ref, name))
    np.testing.assert_allclose(got.iou().cpu().numpy(), ref.iou())
    np.testing.assert_allclose(got.ioa().cpu().numpy(), ref.ioa())
    hist = label_histogram(torch.from_numpy(vol).to(device))
    np.testing.assert_array_equal(hist.cpu().numpy(), label_histogram(vol))


@pytest.mark.parametrize("pure_torch", [False, True], ids=["cpu-kernels", "torch-ops"])
def test_torch_error_paths(pure_torch: bool, monkeypatch) -> None:
    if pure_torch:
        monkeypatch.setattr(overlap_module, "_use_torch_kernels", lambda t: True)
    neg = torch.zeros(3, 3, dtype=torch.int16)
    neg[1, 2] = -1
    with pytest.raises(DataFormatError, match=r"-1 at index \(1, 2\)"):
        box_mask_overlap([[0, 0, 1, 1]], neg)
    big = torch.full((3, 3), 5, dtype=torch.int32)
    with pytest.raises(DataFormatError, match="num_labels=3"):
        box_mask_overlap([[0, 0, 1, 1]], big, num_labels=3)
    with pytest.raises(WrongTypeError, match="get_fdata"):
        box_mask_overlap([[0, 0, 1, 1]], torch.zeros(3, 3))


# ---------------------------------------------------------------------------
# label_histogram
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.bool_])
@pytest.mark.parametrize("kind", ["runs", "noise"])
@pytest.mark.parametrize("offset", [0, 1, 3, 7])
def test_label_histogram_matches_bincount(dtype, kind: str, offset: int) -> None:
    rng = np.random.default_rng(offset)
    top = (
        2
        if dtype == np.bool_
        else (1000 if dtype in (np.uint16, np.int16, np.int32, np.int64) else 200)
    )
    if kind == "runs":
        values = np.repeat(rng.integers(0, top, size=300), rng.integers(1, 40, size=300))
    else:
        values = rng.integers(0, top, size=5000)
    arr = values.astype(dtype)[offset:]  # misaligned views hit the head/tail paths
    np.testing.assert_array_equal(label_histogram(arr), np.bincount(arr.astype(np.int64)))


def test_label_histogram_multidimensional_and_num_labels() -> None:
    vol = np.zeros((3, 4, 5), dtype=np.uint8)
    vol[1] = 4
    assert label_histogram(vol).tolist() == [40, 0, 0, 0, 20]
    assert label_histogram(vol, num_labels=6).tolist() == [40, 0, 0, 0, 20, 0]
    assert label_histogram(vol[:, ::2]).tolist() == [20, 0, 0, 0, 10]  # non-contiguous
    with pytest.raises(DataFormatError, match=r"label 4.*num_labels"):
        label_histogram(vol, num_labels=3)
    with pytest.raises(DataFormatError, match="non-negative"):
        label_histogram(np.array([[0, -3]], dtype=np.int8))
    with pytest.raises(WrongTypeError, match="integer label_map"):
        label_histogram(np.zeros(3))
    with pytest.raises(WrongTypeError, match="num_labels"):
        label_histogram(vol, num_labels=2.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_box_errors() -> None:
    lab = np.zeros((4, 6), dtype=np.uint8)
    with pytest.raises(InvalidBoxError, match="clip=True"):
        box_mask_overlap([[0, 0, 7, 2]], lab)
    ov = box_mask_overlap([[-3, -1, 7, 2]], lab, clip=True)
    assert ov.box_area.tolist() == [12]
    with pytest.raises(InvalidBoxError, match="finite"):
        box_mask_overlap([[0, 0, np.nan, 2]], lab)
    with pytest.raises(InvalidBoxError, match="x2 >= x1"):
        box_mask_overlap([[3, 0, 1, 2]], lab, clip=True)
    with pytest.raises(ShapeError, match=r"\[N, 4\]"):
        box_mask_overlap([[0, 0, 1]], lab)


def test_dimension_mismatch_errors() -> None:
    lab2 = np.zeros((4, 6), dtype=np.uint8)
    vol = np.zeros((3, 4, 6), dtype=np.uint8)
    with pytest.raises(ShapeError, match="3D boxes"):
        box_mask_overlap([[0, 0, 0, 1, 1, 1]], lab2)
    with pytest.raises(ShapeError, match="slice_index"):
        box_mask_overlap([[0, 0, 1, 1]], vol)
    with pytest.raises(ShapeError, match="only for volumes"):
        box_mask_overlap([[0, 0, 1, 1]], lab2, slice_index=0)
    with pytest.raises(ShapeError, match="only for 2D boxes"):
        box_mask_overlap([[0, 0, 0, 1, 1, 1]], vol, slice_index=0)
    with pytest.raises(InvalidBoxError, match=r"\[0, 3\)"):
        box_mask_overlap([[0, 0, 1, 1]], vol, slice_index=3)
    with pytest.raises(ShapeError, match="one per box"):
        box_mask_overlap([[0, 0, 1, 1]], vol, slice_index=[0, 1])
    with pytest.raises(WrongTypeError, match="slice_index"):
        box_mask_overlap([[0, 0, 1, 1]], vol, slice_index=1.5)
    with pytest.raises(ShapeError, match=r"\[H, W\] or \[D, H, W\]"):
        box_mask_overlap([[0, 0, 1, 1]], np.zeros(5, dtype=np.uint8))


def test_label_value_errors() -> None:
    lab = np.zeros((4, 6), dtype=np.int32)
    lab[2, 3] = -7
    with pytest.raises(DataFormatError, match=r"-7 at index \(2, 3\)"):
        box_mask_overlap([[0, 0, 1, 1]], lab)
    with pytest.raises(DataFormatError, match=r"-7"):
        box_mask_overlap([[0, 0, 1, 1]], lab, label_area=[5, 5])
    lab[2, 3] = 9
    with pytest.raises(DataFormatError, match="label 9"):
        box_mask_overlap([[0, 0, 6, 4]], lab, num_labels=4)
    with pytest.raises(DataFormatError, match="label 9"):
        box_mask_overlap([[0, 0, 6, 4]], lab.astype(np.uint8), label_area=[1, 2, 3, 4])
    with pytest.raises(WrongTypeError, match="get_fdata"):
        box_mask_overlap([[0, 0, 1, 1]], lab.astype(np.float64))


def test_overlap_is_a_frozen_record() -> None:
    ov = Overlap(
        intersection=np.array([[2, 0]]), box_area=np.array([4]), label_area=np.array([2, 0])
    )
    assert ov.iou().tolist() == [[0.5, 0.0]] and ov.ioa().tolist() == [[0.5, 0.0]]
    assert ov.num_boxes == 1 and ov.num_labels == 2
    with pytest.raises(AttributeError):
        ov.box_area = np.array([1])  # type: ignore[misc]


@pytest.mark.parametrize("pure_torch", [False, True], ids=["cpu-kernels", "torch-ops"])
@pytest.mark.parametrize(
    "dtype",
    [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.int64, torch.bool],
)
def test_torch_integer_dtypes(dtype: torch.dtype, pure_torch: bool, monkeypatch) -> None:
    if pure_torch:
        monkeypatch.setattr(overlap_module, "_use_torch_kernels", lambda t: True)
    rng = np.random.default_rng(5)
    top = 2 if dtype == torch.bool else 7
    lab = rng.integers(0, top, size=(3, 6, 8))
    boxes = np.array([[0.0, 0, 0, 8, 6, 3], [1.2, 2.5, 0.6, 6.6, 5.5, 2.4]])
    got = box_mask_overlap(boxes, torch.from_numpy(lab).to(dtype), num_labels=7)
    inter, area = _brute(boxes, lab, 7)
    np.testing.assert_array_equal(got.intersection.numpy(), inter)
    np.testing.assert_array_equal(got.box_area.numpy(), area)
    np.testing.assert_array_equal(got.label_area.numpy(), _label_area(lab, 7))
    hist = label_histogram(torch.from_numpy(lab).to(dtype), 7)
    np.testing.assert_array_equal(hist.numpy(), _label_area(lab, 7))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),
    st.sampled_from([(4, 8), (3, 5), (8, 16), (2, 12)]),  # planes on and off word boundaries
    st.lists(st.integers(0, 4), min_size=1, max_size=6),
    st.sampled_from([None, 256, 300]),
    st.integers(0, 2**32 - 1),
)
def test_slice_label_areas_of_uint8_volumes_match_bincount(
    depth: int, plane: tuple[int, int], slices: list[int], num_labels: int | None, seed: int
) -> None:
    """Per-slice label areas (one word-histogram per slice) against np.bincount."""
    rng = np.random.default_rng(seed)
    vol = rng.choice(np.array([0, 0, 3, 7, 255], dtype=np.uint8), size=(depth, *plane))
    slices = [s % depth for s in slices]
    h, w = plane
    boxes = [[0, 0, w, h]] * len(slices)
    ov = box_mask_overlap(boxes, vol, slice_index=slices, num_labels=num_labels)
    nl = num_labels if num_labels is not None else int(vol.max()) + 1
    want = np.stack([np.bincount(vol[s].ravel(), minlength=nl) for s in slices])
    np.testing.assert_array_equal(ov.label_area, want)
    np.testing.assert_array_equal(ov.intersection, want)  # whole-slice boxes


def test_slice_label_areas_report_the_first_slice_over_num_labels() -> None:
    for shape in ((3, 4, 8), (3, 3, 5)):  # the word path and the per-slice fallback
        vol = np.zeros(shape, dtype=np.uint8)
        vol[1, 0, 0], vol[2, 0, 0] = 9, 12
        with pytest.raises(DataFormatError, match="holds label 9"):
            box_mask_overlap([[0, 0, 1, 1]] * 2, vol, slice_index=[2, 1], num_labels=5)


# ---------------------------------------------------------------------------
# Hostile label values: memory bounded by the data, not by the largest label
# ---------------------------------------------------------------------------

_MEMORY_BOUND_SCRIPT = """
import resource, numpy as np
from medcurric.errors import DataFormatError
from medcurric.geometry import MAX_LABEL, box_mask_overlap, label_histogram

def vol(value, dtype, ndim):
    a = np.zeros((4, 8, 8) if ndim == 3 else (16, 16), dtype=dtype)
    a[(1,) * ndim] = 3
    a[(2,) * ndim] = value
    return a

box_mask_overlap([[0, 0, 0, 4, 4, 4]], vol(5, np.int32, 3))  # compile the kernels first
vm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (384 << 20), vm + (384 << 20)))
calls = {
    "3d": lambda a: box_mask_overlap([[0, 0, 0, 8, 8, 4]], a),
    "slice": lambda a: box_mask_overlap([[0, 0, 8, 8]], a, slice_index=2),
    "2d": lambda a: box_mask_overlap([[0, 0, 16, 16]], a),
    "hist": lambda a: label_histogram(a),
}
for value in (20_000_000, 500_000_000):
    for dtype in (np.int32, np.int64):
        for name, call in calls.items():
            a = vol(value, dtype, 2 if name == "2d" else 3)
            try:
                call(a)
                print("accepted", name, value)
            except DataFormatError as exc:
                assert str(value) in str(exc) and str(MAX_LABEL) in str(exc), exc
                print("refused", name, value)
ok = label_histogram(vol(MAX_LABEL, np.int64, 3))
assert ok.shape == (MAX_LABEL + 1,) and ok[MAX_LABEL] == 1
try:
    np.ones(int(500_000_000), dtype=np.int64)
except MemoryError:
    print("the limit bites")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
def test_a_huge_label_value_is_refused_in_bounded_memory(run_python) -> None:
    """One voxel labelled 2e7 or 5e8 in a tiny int32/int64 map: refused with an error naming
    the value and MAX_LABEL, under an address-space limit far below the dense tables."""

    run = run_python(_MEMORY_BOUND_SCRIPT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("refused") == 16, run.stdout
    assert "the limit bites" in run.stdout


@pytest.mark.parametrize("value", [overlap_module.MAX_LABEL, overlap_module.MAX_LABEL + 1])
def test_labels_up_to_max_label_are_counted(value: int) -> None:
    a = np.zeros((2, 4, 4), dtype=np.int32)
    a[1, 1, 1] = value
    if value > overlap_module.MAX_LABEL:
        with pytest.raises(DataFormatError, match=f"MAX_LABEL = {overlap_module.MAX_LABEL}.*label {value}"):
            box_mask_overlap([[0, 0, 0, 4, 4, 2]], a)
        with pytest.raises(DataFormatError, match="MAX_LABEL"):
            label_histogram(a[0], num_labels=value + 1)
        return
    ov = box_mask_overlap([[0, 0, 0, 4, 4, 2]], a)
    assert ov.intersection.shape == (1, value + 1) and ov.intersection[0, value] == 1
    assert int(ov.label_area[value]) == 1
