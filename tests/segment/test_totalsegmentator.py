from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from medcurric.errors import MissingDependencyError, MissingFileError
from medcurric.io import Volume, write_nifti
from medcurric.segment import TotalSegmentatorSegmenter, totalsegmentator_weights_dir


@pytest.fixture
def no_weights_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "tshome"))
    return tmp_path / "tshome"


def test_missing_package_names_the_extra(monkeypatch):
    # make sure it cannot be imported even if someone installed it
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", None)
    with pytest.raises(MissingDependencyError, match=r"medcurric\[seg\]"):
        TotalSegmentatorSegmenter()


def _fake_package(monkeypatch, calls):
    pkg = types.ModuleType("totalsegmentator")
    api = types.ModuleType("totalsegmentator.python_api")

    def totalsegmentator(input, output, **kwargs):
        import os

        import nibabel as nib

        calls.append((input, output, kwargs, os.environ.get("TOTALSEG_WEIGHTS_PATH")))
        img = nib.load(input)
        seg = (np.asarray(img.dataobj) > 0).astype(np.uint8) * 5  # "liver" where HU > 0
        out = nib.Nifti1Image(seg, img.affine)
        xml = b'<CaretExtension><LabelTable><Label Key="5"><![CDATA[liver]]></Label></LabelTable></CaretExtension>'
        out.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml))
        nib.save(out, output)

    api.totalsegmentator = totalsegmentator
    pkg.python_api = api
    monkeypatch.setitem(sys.modules, "totalsegmentator", pkg)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)


def test_missing_weights_names_the_variable(monkeypatch, no_weights_env):
    _fake_package(monkeypatch, [])
    with pytest.raises(MissingFileError, match="TOTALSEG_HOME_DIR") as info:
        TotalSegmentatorSegmenter()
    assert "TOTALSEG_WEIGHTS_PATH" in str(info.value)
    assert str(no_weights_env / "nnunet" / "results") in str(info.value)


def test_weights_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    assert totalsegmentator_weights_dir() == tmp_path / "nnunet" / "results"
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "w"))
    assert totalsegmentator_weights_dir() == tmp_path / "w"
    assert totalsegmentator_weights_dir(tmp_path / "x") == tmp_path / "x"


def test_runs_when_installed_with_weights(monkeypatch, no_weights_env, tmp_path):
    calls: list = []
    _fake_package(monkeypatch, calls)
    (no_weights_env / "nnunet" / "results" / "Dataset291_TotalSegmentator_part1_organs").mkdir(
        parents=True
    )
    seg = TotalSegmentatorSegmenter(device="cpu", fast=True)
    hu = np.full((4, 6, 8), -100.0, np.float32)
    hu[1:3, 2:4, 0:3] = 60.0  # the patient's right (small x)
    aff = np.diag([-0.8, -0.8, 2.0, 1.0])
    lm = seg.segment(Volume(hu, spacing=(2.0, 0.8, 0.8), affine=aff))
    np.testing.assert_array_equal(lm.array == 5, hu > 0)
    assert lm.class_map.names == ("liver",)
    (_inp, _out, kwargs, weights) = calls[0]
    assert kwargs == {"ml": True, "task": "total", "fast": True, "device": "cpu", "quiet": True}
    assert weights == str(no_weights_env / "nnunet" / "results")
    import os

    assert "TOTALSEG_WEIGHTS_PATH" not in os.environ
    # a NIfTI path works too, and the output can be kept
    f = tmp_path / "ct.nii.gz"
    write_nifti(hu, f, affine=aff)
    kept = tmp_path / "seg.nii.gz"
    lm2 = seg.segment(f, output=kept)
    assert kept.is_file()
    np.testing.assert_array_equal(lm2.array, lm.array)
    with pytest.raises(MissingFileError):
        seg.segment(tmp_path / "absent.nii.gz")
