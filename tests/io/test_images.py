"""medcurric.io.load_rgb against an independent integer restatement of windowing, per storage format."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.errors import DataFormatError, MissingFileError, ShapeError, WrongTypeError
from medcurric.io import DEFAULT_WINDOW, Window, load_rgb, read_dicom_series, write_nifti


def reference(hu: np.ndarray, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels of integer ``hu`` in the integer window ``[low, high]``, in exact integer arithmetic.

    ``255 * (hu - low) / (high - low)`` is split into quotient and remainder and rounded half
    down; returns the levels and a mask of exact halves (where round-half-even may go up).
    """
    num = (np.clip(hu.astype(np.int64), low, high) - low) * 255
    q, r = np.divmod(num, high - low)
    return q + (2 * r > high - low), 2 * r == high - low


def assert_windowed(rgb: np.ndarray, hu: np.ndarray, low: int, high: int) -> None:
    assert rgb.dtype == np.uint8 and rgb.shape == (*hu.shape, 3) and rgb.flags.c_contiguous
    want, tie = reference(hu, low, high)
    for c in range(3):
        got = rgb[..., c].astype(np.int64)
        assert np.array_equal(got[~tie], want[~tie])
        assert np.all((got[tie] == want[tie]) | (got[tie] == want[tie] + 1))


def hu_ramp(h: int = 40, w: int = 90) -> np.ndarray:  # h * w >= 3600
    """Every integer HU from -1200 to 2399 once, plus random values: every grey level and the ties."""
    rng = np.random.default_rng(0)
    flat = np.concatenate([np.arange(-1200, 2400), rng.integers(-3000, 3000, h * w - 3600)])
    return rng.permutation(flat).reshape(h, w).astype(np.int32)


def save_deeplesion(path: Path, hu: np.ndarray) -> Path:
    Image.fromarray((hu + 32768).astype(np.uint16)).save(path)
    return path


@pytest.mark.parametrize("window", [(-175, 275), (-1350, 150), (-160, 240), None])
def test_deeplesion_png_is_hu_through_the_record_window(tmp_path: Path, window) -> None:
    hu = hu_ramp()
    f = save_deeplesion(tmp_path / "109.png", hu)
    low, high = window if window is not None else (-160, 240)  # default: soft tissue W400 L40
    assert_windowed(load_rgb(f, window=window), hu, low, high)
    assert_windowed(load_rgb(str(f), window=window), hu, low, high)  # str paths too


def test_window_forms_agree() -> None:
    hu = hu_ramp()
    base = load_rgb(hu, window=(-160, 240))
    assert_windowed(base, hu, -160, 240)
    for same in ("soft_tissue", Window(40, 400), Window.from_bounds("-160, 240"), [-160.0, 240.0], None):
        assert np.array_equal(load_rgb(hu, window=same), base)
    assert DEFAULT_WINDOW == Window.preset("soft_tissue")
    assert not np.array_equal(load_rgb(hu, window="lung"), base)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64, np.uint16])
def test_hu_arrays_of_any_numeric_dtype(dtype) -> None:
    hu = hu_ramp()
    if dtype is np.uint16:
        hu = np.abs(hu)  # plain intensities, no DeepLesion offset for arrays
    assert_windowed(load_rgb(hu.astype(dtype), window=(-1350, 150)), hu, -1350, 150)
    assert_windowed(load_rgb(hu.astype(dtype)[..., None], window=(-1350, 150)), hu, -1350, 150)


def test_wide_integer_ranges_and_empty_images() -> None:
    hu = hu_ramp()
    hu[0, 0], hu[0, 1] = -(10**6), 10**6  # too wide for the lookup table: windowed directly
    assert_windowed(load_rgb(hu, window=(-175, 275)), hu, -175, 275)
    assert load_rgb(np.zeros((0, 4), np.int16)).shape == (0, 4, 3)


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_three_windows_stack_as_rgb(dtype) -> None:
    hu = hu_ramp()
    rgb = load_rgb(hu.astype(dtype), window=((-1350, 150), (-160, 240), (-500, 1300)))
    for c, (lo, hi) in enumerate(((-1350, 150), (-160, 240), (-500, 1300))):
        assert_windowed(np.repeat(rgb[..., c : c + 1], 3, axis=2), hu, lo, hi)


def test_eight_bit_pictures_keep_their_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (17, 23), dtype=np.uint8)])
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=90)
    assert np.array_equal(load_rgb(tmp_path / "rgb.png", window="lung"), rgb)  # window ignored
    assert np.array_equal(load_rgb(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(load_rgb(tmp_path / "rgba.png"), rgb)
    with Image.open(tmp_path / "rgb.jpg") as im:
        decoded = np.asarray(im.convert("RGB"))
    assert np.array_equal(load_rgb(tmp_path / "rgb.jpg"), decoded)
    for arr in (rgb, rgba, grey):
        out = load_rgb(arr)
        assert np.array_equal(out, rgb if arr.ndim == 3 else np.repeat(grey[..., None], 3, axis=2))
        assert out is not arr
    with Image.open(tmp_path / "rgb.png") as im:
        assert np.array_equal(load_rgb(im), rgb)


def test_float_rgb_is_zero_to_one() -> None:
    x = np.array([[[0.0, 0.5, 1.0], [-0.2, 0.2, 7.0]]])
    assert load_rgb(x).tolist() == [[[0, 128, 255], [0, 51, 255]]]


def test_nifti_slice_is_hu_through_the_window(tmp_path: Path) -> None:
    hu = hu_ramp()[None].astype(np.int16)  # [z, y, x] with one slice
    f = tmp_path / "ct.nii.gz"
    write_nifti(hu, f, spacing=(5.0, 0.8, 0.8))
    assert_windowed(load_rgb(f, window=(-175, 275)), hu[0], -175, 275)
    vol = np.concatenate([hu, hu[:, ::-1]])
    write_nifti(vol, tmp_path / "two.nii", spacing=(5.0, 0.8, 0.8))
    assert_windowed(load_rgb(tmp_path / "two.nii", slice_index=1), hu[0, ::-1], -160, 240)
    with pytest.raises(ShapeError, match="slice_index"):
        load_rgb(tmp_path / "two.nii")
    with pytest.raises(ShapeError, match="slice_index"):
        load_rgb(tmp_path / "two.nii", slice_index=2)


def test_dicom_slice_uses_the_header_window_unless_given(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    src = get_testdata_file("CT_small.dcm", download=False)
    if src is None:
        pytest.skip("pydicom test file CT_small.dcm not installed")
    ds = pydicom.dcmread(src)
    hu = ds.pixel_array.astype(np.int64) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    # the reader's canonical orientation of this axial slice is the stored one
    assert np.array_equal(read_dicom_series([src]).array[0], hu)
    assert_windowed(load_rgb(src), hu, -160, 240)  # no header window: soft tissue
    ds.WindowCenter, ds.WindowWidth = 300, 1000
    f = tmp_path / "no_suffix"  # recognised by its DICM preamble
    ds.save_as(f)
    assert_windowed(load_rgb(f), hu, -200, 800)
    assert_windowed(load_rgb(f, window=(-1350, 150)), hu, -1350, 150)


def test_npy_files(tmp_path: Path) -> None:
    hu = hu_ramp()
    np.save(tmp_path / "hu.npy", hu)
    assert_windowed(load_rgb(tmp_path / "hu.npy", window=(-175, 275)), hu, -175, 275)
    with pytest.raises(DataFormatError, match=r"hu\.npy"):
        load_rgb(tmp_path / "hu.npy", max_pixels=100)


def test_bombs_and_broken_files_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.png"
    Image.new("1", (6000, 6000)).save(big)  # a few kB on disk, 36 M pixels decoded
    with pytest.raises(DataFormatError, match=r"big\.png.*6000 x 6000"):
        load_rgb(big, max_pixels=10_000_000)
    # Pillow's own limit: it only warns between its limit and twice it; load_rgb refuses
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataFormatError, match=r"big\.png"):
            load_rgb(big)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataFormatError, match=r"junk\.png"):
        load_rgb(junk)
    good = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataFormatError, match=r"cut\.png"):
        load_rgb(good)
    with pytest.raises(MissingFileError, match=r"none\.png"):
        load_rgb(tmp_path / "none.png")


def test_bad_arrays_and_sources() -> None:
    with pytest.raises(DataFormatError, match="NaN"):
        load_rgb(np.array([[0.0, np.nan]]))
    with pytest.raises(WrongTypeError, match="bool"):
        load_rgb(np.zeros((2, 2), bool))
    with pytest.raises(ShapeError, match=r"\(2, 2, 2\)"):
        load_rgb(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ShapeError, match="intensities"):
        load_rgb(np.zeros((2, 2, 2), np.int16))
    with pytest.raises(WrongTypeError, match="list"):
        load_rgb([[0, 1]])
