"""box_to_patch_distribution against shapely areas, a supersampled raster and scipy's blur."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box as shapely_box

from medcurric.errors import InvalidBoxError, InvalidOptionError, ShapeError, WrongTypeError
from medcurric.geometry.patches import GaussianSmoothing, box_to_patch_distribution, gaussian
from medcurric.geometry.preprocess import Preprocess, map_boxes


def _shapely_coverage(b, rows, cols, height, width):
    """[rows * cols] area(box ∩ patch) / patch area, one patch at a time."""
    ph, pw = height / rows, width / cols
    g = shapely_box(*b)
    out = np.zeros(rows * cols)
    for r in range(rows):
        for c in range(cols):
            cell = shapely_box(c * pw, r * ph, (c + 1) * pw, (r + 1) * ph)
            out[r * cols + c] = g.intersection(cell).area / (ph * pw)
    return out


def _supersampled(b, rows, cols, height, width, k=8):
    """Brute force: k x k samples per pixel, counted per patch."""
    ys = (np.arange(height * k) + 0.5) / k
    xs = (np.arange(width * k) + 0.5) / k
    inside = ((ys >= b[1]) & (ys < b[3]))[:, None] & ((xs >= b[0]) & (xs < b[2]))[None, :]
    per = inside.reshape(rows, height * k // rows, cols, width * k // cols).mean(axis=(1, 3))
    return per.reshape(-1)


boxes_strategy = st.tuples(
    st.floats(-20, 340), st.floats(-20, 340), st.floats(0, 200), st.floats(0, 200)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=40, deadline=None)
@given(b=boxes_strategy, grid=st.sampled_from([(24, 24), (12, 16), (7, 5)]))
def test_matches_shapely_exact_coverage(b, grid):
    rows, cols = grid
    p = box_to_patch_distribution([b], grid, input_size=(336, 336))
    ref = _shapely_coverage(b, rows, cols, 336, 336)
    if ref.sum() <= 1e-12:
        assert np.all(p == 0)
    else:
        np.testing.assert_allclose(p[0], ref / ref.sum(), atol=1e-9)
        assert p[0].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("b", [[3.25, 10.5, 40.75, 33.0], [0, 0, 48, 48], [17.1, 2.9, 18.4, 47.7]])
def test_matches_supersampled_raster(b):
    p = box_to_patch_distribution([b], (6, 8), input_size=(48, 64))
    ref = _supersampled(b, 6, 8, 48, 64)
    np.testing.assert_allclose(p[0], ref / ref.sum(), atol=2e-3)


def test_row_major_order_like_image_tokens():
    # a box in patch (row 2, col 5) only -> token 2 * 24 + 5
    p = box_to_patch_distribution([[5 * 14 + 1, 2 * 14 + 1, 5 * 14 + 13, 2 * 14 + 13]])
    assert int(np.argmax(p[0])) == 2 * 24 + 5 and p[0, 2 * 24 + 5] == 1.0


@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_smoothing_matches_scipy(padding):
    b = [[30.0, 100.5, 120.0, 200.0], [0.0, 0.0, 20.0, 336.0]]
    raw = box_to_patch_distribution(b, input_size=336)
    sm = box_to_patch_distribution(b, input_size=336, smoothing=gaussian(9, 3, padding=padding))
    x = np.linspace(-4, 4, 9)
    k1 = np.exp(-0.5 * (x / 3) ** 2)
    k1 /= k1.sum()
    mode = {"reflect": "mirror", "zeros": "constant"}[padding]
    for i in range(2):
        ref = ndi.correlate(raw[i].reshape(24, 24), np.outer(k1, k1), mode=mode, cval=0.0)
        np.testing.assert_allclose(sm[i], (ref / ref.sum()).reshape(-1), atol=1e-12)
        assert sm[i].sum() == pytest.approx(1.0)


def test_empty_box_gives_zero_row_not_nan():
    pre = Preprocess.shortest_edge_crop(336)
    mapped = map_boxes([[900, 10, 990, 100], [400, 10, 500, 100]], pre, (120, 999))
    assert mapped.fraction[0] == 0
    for sm in (None, gaussian()):
        p = box_to_patch_distribution(mapped.boxes, input_size=pre, smoothing=sm)
        assert np.all(p[0] == 0) and p[1].sum() == pytest.approx(1.0)
        assert not np.isnan(p).any()
    zero_area = box_to_patch_distribution([[10, 10, 10, 50]])
    assert np.all(zero_area == 0)


def test_torch_and_numpy_agree(device):
    b = np.array([[3.5, 7.0, 200.0, 150.25], [100, 100, 336, 336]])
    ref = box_to_patch_distribution(b, smoothing=gaussian())
    for dt in (torch.float32, torch.float64):
        out = box_to_patch_distribution(
            torch.tensor(b, dtype=dt, device=device), smoothing=gaussian()
        )
        assert out.device.type == device.type and out.dtype == dt and out.shape == (2, 576)
        np.testing.assert_allclose(
            out.cpu().numpy(), ref, atol=1e-6 if dt == torch.float32 else 1e-12
        )
    ints = box_to_patch_distribution(torch.tensor([[0, 0, 14, 14]], device=device))
    assert ints.dtype == torch.float32 and ints[0, 0].item() == 1.0


def test_empty_input_and_errors():
    assert box_to_patch_distribution(np.zeros((0, 4))).shape == (0, 576)
    assert box_to_patch_distribution(torch.zeros(0, 4)).shape == (0, 576)
    with pytest.raises(ShapeError):
        box_to_patch_distribution([[1, 2, 3]])
    with pytest.raises(InvalidBoxError):
        box_to_patch_distribution([[3, 2, 1, 4]])
    with pytest.raises(InvalidOptionError, match="odd"):
        gaussian(8, 3)
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        gaussian(9, 3, padding="reflekt")
    with pytest.raises(InvalidOptionError, match="sigma"):
        GaussianSmoothing(9, 0.0)
    with pytest.raises(InvalidOptionError, match="zeros"):
        box_to_patch_distribution([[0, 0, 5, 5]], grid=4, input_size=16, smoothing=gaussian(9, 3))
    with pytest.raises(InvalidOptionError, match="fixed output"):
        box_to_patch_distribution([[0, 0, 5, 5]], input_size=Preprocess(shortest_edge=336))
    with pytest.raises(WrongTypeError):
        box_to_patch_distribution([[0, 0, 5, 5]], smoothing=(9, 3))
    with pytest.raises(InvalidOptionError):
        box_to_patch_distribution([[0, 0, 5, 5]], grid=(0, 3))


def test_preprocess_input_size_and_rectangular_inputs():
    pre = Preprocess.plain_resize((224, 336))
    p = box_to_patch_distribution([[0, 0, 336, 224]], grid=(16, 24), input_size=pre)
    np.testing.assert_allclose(p[0], np.full(384, 1 / 384))
