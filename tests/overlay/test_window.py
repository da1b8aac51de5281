"""CT/MR windowing: presets, DICOM and DeepLesion windows, RGB stacking, numpy/torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcurric.errors import DataFormatError, InvalidOptionError, ShapeError, WrongTypeError
from medcurric.overlay import Window, WindowPreset, apply_window, window_to_rgb

EXPECTED = {  # (width, level), common radiology values
    "abdomen": (400, 50),
    "soft_tissue": (400, 40),
    "mediastinum": (350, 50),
    "liver": (150, 30),
    "lung": (1500, -600),
    "bone": (1800, 400),
    "brain": (80, 40),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_presets(name):
    w = Window.preset(name)
    assert (w.width, w.level) == EXPECTED[name]
    assert Window.preset(WindowPreset(name)) == w


def test_preset_typo_suggests():
    with pytest.raises(InvalidOptionError, match="Did you mean 'lung'"):
        Window.preset("lungs")


def test_apply_window_matches_manual_formula(rng):
    hu = rng.uniform(-1200, 2000, size=(40, 50))
    for name, (width, level) in EXPECTED.items():
        lo = level - width / 2
        ref = np.clip((hu - lo) / width, 0, 1)
        np.testing.assert_allclose(apply_window(hu, name, out="float"), ref, atol=1e-12)
        np.testing.assert_array_equal(apply_window(hu, name), np.rint(ref * 255).astype(np.uint8))


def test_dicom_formula_matches_pydicom(rng):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_windowing

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter = [40.0, -600.0]
    ds.WindowWidth = [400.0, 1500.0]
    ds.VOILUTFunction = "LINEAR"
    hu = rng.uniform(-1200, 1200, size=(64,)).round()
    # pydicom outputs the signed 16-bit range shifted by the rescale intercept (-1024)
    ymin, ymax = -(2**15) - 1024, 2**15 - 1 - 1024
    for index in (0, 1):
        win = Window.from_dicom(ds, index=index)
        ref = (apply_windowing(hu.copy(), ds, index=index) - ymin) / (ymax - ymin)
        np.testing.assert_allclose(
            apply_window(hu, win, out="float", formula="dicom"), ref, atol=1e-6
        )
    assert Window.from_dicom(ds) == Window(40, 400)
    del ds.WindowCenter
    with pytest.raises(DataFormatError, match="WindowCenter"):
        Window.from_dicom(ds)


def test_deeplesion_windows():
    assert Window.from_bounds("-175, 275") == Window(50, 450)
    assert Window.from_bounds("-1350,150") == Window.preset("lung")
    assert Window.from_bounds((-160, 240)) == Window.preset("soft_tissue")
    assert Window.from_bounds(-160, 240).bounds == (-160.0, 240.0)
    with pytest.raises(DataFormatError):
        Window.from_bounds("-175")
    with pytest.raises(InvalidOptionError):
        Window.from_bounds(10, 5)
    with pytest.raises(InvalidOptionError):
        Window(0, 0)
    # DeepLesion stores HU + 32768 in uint16 PNGs
    png = np.array([[32768 - 175, 32768 + 275]], np.uint16)
    hu = png.astype(np.int32) - 32768
    assert apply_window(hu, Window.from_bounds("-175, 275")).tolist() == [[0, 255]]


def test_three_window_rgb_numpy_and_torch(device, rng):
    hu = rng.uniform(-1200, 1500, size=(2, 16, 20))
    wins = ("lung", "soft_tissue", "bone")
    ref = np.stack([window_to_rgb(h, wins) for h in hu])  # [B, H, W, 3]
    for i, name in enumerate(wins):
        np.testing.assert_array_equal(ref[..., i], apply_window(hu, name))
    t = torch.tensor(hu, device=device)
    out = window_to_rgb(t, wins)
    assert (
        out.shape == (2, 3, 16, 20) and out.dtype == torch.uint8 and out.device.type == device.type
    )
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).cpu().numpy(), ref)
    assert window_to_rgb(t[:, None], wins).shape == (2, 3, 16, 20)
    grey = window_to_rgb(t[0], "liver", out="float")
    assert grey.shape == (3, 16, 20) and torch.equal(grey[0], grey[2])


def test_window_errors():
    with pytest.raises(ShapeError):
        window_to_rgb(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError):
        window_to_rgb(torch.zeros(2, 3, 4, 5))
    with pytest.raises(InvalidOptionError):
        window_to_rgb(np.zeros((3, 4)), ("lung", "bone"))
    with pytest.raises(WrongTypeError):
        apply_window([1, 2], "lung")
    with pytest.raises(InvalidOptionError):
        apply_window(np.zeros(3), "lung", out="int")
