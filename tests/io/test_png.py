from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medcurric.errors import DataFormatError, MissingFileError, ShapeError
from medcurric.io import read_deeplesion_slice, read_label_map, read_png_masks
from medcurric.vocabulary.classmap import ClassMap


def test_deeplesion_slice_hu(tmp_path, rng):
    hu = rng.integers(-1024, 3000, size=(8, 9)).astype(np.int16)
    f = tmp_path / "109.png"
    Image.fromarray((hu.astype(np.int32) + 32768).astype(np.uint16)).save(f)
    np.testing.assert_array_equal(read_deeplesion_slice(f), hu)
    g = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(g)
    with pytest.raises(DataFormatError, match="16-bit"):
        read_deeplesion_slice(g)


def _write_masks(d, rng):
    masks = {}
    for name in ("left lung", "right lung", "heart"):
        m = (rng.random((10, 12)) < 0.3).astype(np.uint8) * rng.integers(100, 256)
        Image.fromarray(m.astype(np.uint8)).save(d / f"{name}.png")
        masks[name] = m
    return masks


def test_png_masks_against_loop(tmp_path, rng):
    masks = _write_masks(tmp_path, rng)
    lm = read_png_masks(tmp_path, threshold=127)
    assert lm.class_map.names == ("heart", "left_lung", "right_lung")
    ref = np.zeros((10, 12), np.uint8)
    for label, name in enumerate(sorted(masks), start=1):  # later labels win
        for y in range(10):
            for x in range(12):
                if masks[name][y, x] > 127:
                    ref[y, x] = label
    np.testing.assert_array_equal(lm.array, ref)
    assert read_label_map(tmp_path).class_map == lm.class_map


def test_png_masks_with_class_map(tmp_path, rng):
    masks = _write_masks(tmp_path, rng)
    cm = ClassMap({1: "heart", 4: "left_lung", 9: "right_lung"})
    lm = read_png_masks(tmp_path, class_map=cm, spacing=(0.5, 0.5))
    assert lm.class_map is cm and lm.spacing == (0.5, 0.5)
    assert set(np.unique(lm.array)) <= {0, 1, 4, 9}
    np.testing.assert_array_equal(lm.array == 9, masks["right lung"] > 127)
    with pytest.raises(DataFormatError, match="not in"):
        read_png_masks(tmp_path, class_map=ClassMap({1: "heart"}))


def test_png_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_png_masks(tmp_path / "absent")
    with pytest.raises(MissingFileError):
        read_png_masks(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(ShapeError):
        read_png_masks(tmp_path)


def test_damaged_or_oversized_pngs_raise_a_data_format_error_naming_them(tmp_path, monkeypatch):
    f = tmp_path / "109.png"
    Image.fromarray(np.full((64, 64), 32768, np.uint16)).save(f)
    cut = tmp_path / "cut.png"
    cut.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(DataFormatError, match=r"cut\.png"):
        read_deeplesion_slice(cut)
    # Pillow refuses images far above MAX_IMAGE_PIXELS with DecompressionBombError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)
    with pytest.raises(DataFormatError, match=r"109\.png"):
        read_deeplesion_slice(f)
