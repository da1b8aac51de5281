from __future__ import annotations

import copy
import re

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medcurric.errors import DataFormatError, MissingFileError
from medcurric.io import read_dicom_seg, read_dicom_series, read_label_map
from medcurric.vocabulary.classmap import ClassMap


def _testfile(name: str) -> str:
    # exact names only: globbing pydicom's test data triggers downloads
    try:
        path = get_testdata_file(name, download=False)
    except TypeError:  # older pydicom without the download flag
        path = get_testdata_file(name)
    except Exception:  # pragma: no cover - depends on the installed data packages
        path = None
    if not path:
        pytest.skip(f"pydicom test file {name} is not installed")
    return str(path)


def test_liver_1frame_seg():
    path = _testfile("liver_1frame.dcm")
    ds = pydicom.dcmread(path)
    seg = read_dicom_seg(path)
    assert seg.array.shape == (1, 512, 512)
    assert seg.class_map.names == ("liver",)
    # the stored orientation is already axial L/P: pixels are untouched
    np.testing.assert_array_equal(seg.array[0], ds.pixel_array.astype(bool) * 1)
    assert seg.spacing == pytest.approx((1.0, 0.810547, 0.810547))
    # voxel (0, 0, 0) lies at Image Position (Patient), converted from LPS to RAS
    ipp = [
        float(v)
        for v in ds.PerFrameFunctionalGroupsSequence[0]
        .PlanePositionSequence[0]
        .ImagePositionPatient
    ]
    np.testing.assert_allclose((seg.affine @ [0, 0, 0, 1])[:3], [-ipp[0], -ipp[1], ipp[2]])
    # the liver lies on the patient's right = small x (image left)
    xs = np.nonzero(seg.array[0])[1]
    assert xs.mean() < 256
    # with TotalSegmentator's class map, the segment takes the liver's id
    ts = read_dicom_seg(path, class_map=ClassMap.totalsegmentator())
    assert set(np.unique(ts.array)) == {0, 5}
    assert read_label_map(path).class_map.names == ("liver",)


def test_liver_3frame_seg_orders_frames_by_position():
    path = _testfile("liver.dcm")
    ds = pydicom.dcmread(path)
    seg = read_dicom_seg(path)
    frames = ds.pixel_array
    z = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    order = np.argsort(z)  # canonical z runs towards superior
    assert seg.array.shape == (3, 512, 512)
    for k, f in enumerate(order):
        np.testing.assert_array_equal(seg.array[k] > 0, frames[f] > 0)


def test_seg_with_shuffled_and_reversed_frames(tmp_path):
    path = _testfile("liver.dcm")
    ds = pydicom.dcmread(path)
    ref = read_dicom_seg(path)
    # reverse the frame order in the file: the result must not change
    frames = ds.pixel_array[::-1].copy()
    pf = ds.PerFrameFunctionalGroupsSequence
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(
        [copy.deepcopy(pf[i]) for i in (2, 1, 0)]
    )
    packed = pydicom.pixels.pack_bits(frames.reshape(-1))
    ds.PixelData = packed
    out = tmp_path / "rev.dcm"
    ds.save_as(out)
    np.testing.assert_array_equal(read_dicom_seg(out).array, ref.array)


def test_ct_series_sorted_by_position_and_rescaled(tmp_path):
    path = _testfile("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    single = read_dicom_series([path])
    assert single.shape == (1, 128, 128) and single.modality == "CT"
    np.testing.assert_array_equal(single.array[0], hu)
    # three slices written in scrambled file order, 2.5 mm apart, each with its own offset
    ipp = [float(v) for v in ds.ImagePositionPatient]
    for name, k in (("b.dcm", 2), ("a.dcm", 0), ("c.dcm", 1)):
        d = copy.deepcopy(ds)
        d.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 2.5 * k]
        d.RescaleIntercept = -1024 + 100 * k
        d.save_as(tmp_path / name)
    vol = read_dicom_series(tmp_path)
    assert vol.shape == (3, 128, 128)
    assert vol.spacing == pytest.approx((2.5, 0.661468, 0.661468))
    for k in range(3):  # z runs superior: slice k is at ipp z + 2.5 k
        np.testing.assert_array_equal(vol.array[k], hu + 100 * k)
        assert (vol.affine @ [0, 0, k, 1])[2] == pytest.approx(ipp[2] + 2.5 * k)


def test_flipped_rows_are_reoriented(tmp_path):
    path = _testfile("CT_small.dcm")
    ds = pydicom.dcmread(path)
    ref = read_dicom_series([path])
    # store the image upside down: rows now run anterior, origin at the last row
    d = copy.deepcopy(ds)
    d.PixelData = ds.pixel_array[::-1].copy().tobytes()
    iop = [float(v) for v in ds.ImageOrientationPatient]
    d.ImageOrientationPatient = iop[:3] + [-v for v in iop[3:]]
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    d.ImagePositionPatient = list(ipp + np.array(iop[3:]) * float(ds.PixelSpacing[0]) * 127)
    d.save_as(tmp_path / "flipped.dcm")
    vol = read_dicom_series([tmp_path / "flipped.dcm"])
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)


def test_dicom_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_dicom_seg(tmp_path / "nope.dcm")
    with pytest.raises(MissingFileError):
        read_dicom_series(tmp_path)
    path = _testfile("CT_small.dcm")
    with pytest.raises(DataFormatError, match="Segmentation"):
        read_dicom_seg(path)
    ds = pydicom.dcmread(path)
    ds.save_as(tmp_path / "a.dcm")
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(DataFormatError, match="distinct"):
        read_dicom_series(tmp_path)


def test_liver_seg_matches_lesions_inside_and_outside():
    from scipy import ndimage

    from medcurric.anatomy import BoxOrganMatcher, describe_location

    seg = read_dicom_seg(_testfile("liver_1frame.dcm"), class_map=ClassMap.totalsegmentator())
    liver = seg.array[0] == 5
    core = ndimage.binary_erosion(liver, iterations=8)
    ys, xs = np.nonzero(core)
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    inside = [x - 5, y - 5, x + 5, y + 5]
    outside = [470, 10, 480, 20]  # top-right corner: air, far from the liver
    edge_y, edge_x = np.nonzero(liver & ~ndimage.binary_erosion(liver))
    ey, ex = int(edge_y[0]), int(edge_x[0])
    matches = BoxOrganMatcher(adjacent_mm=5.0).match([inside, outside], seg, slice_index=0)
    assert (matches[0].outcome.value, matches[0].organ) == ("inside", "liver")
    assert matches[0].score == 1.0
    assert matches[1].outcome.value == "unmatched"
    # a box straddling the edge: part inside
    straddle = BoxOrganMatcher(adjacent_mm=5.0).match(
        [[ex - 6, ey - 6, ex + 6, ey + 6]], seg, slice_index=0
    )[0]
    assert straddle.organ == "liver" and 0 < straddle.candidates[0].ioa < 1
    loc = describe_location(inside, seg, matches[0], slice_index=0)
    assert loc.laterality == "right"  # the liver is on the patient's right
    assert loc.size_mm == pytest.approx((8.11, 8.11), abs=0.01)


def _damaged(tmp_path, name: str, kind: str):
    """Copies of pydicom's own test files, damaged in ways seen in the wild."""
    with open(_testfile(name), "rb") as fh:
        raw = fh.read()
    if kind == "truncated":  # cut inside the pixel data
        data = raw[: len(raw) - 1000]
    elif kind == "bad number":  # a DS value that is not a number (Image Position)
        assert raw.count(b"-158.135803") == 1
        data = raw.replace(b"-158.135803", b"-158.1358x3")
    elif kind == "bad syntax":  # a transfer syntax UID no decoder knows
        assert raw.count(b"1.2.840.10008.1.2.1\x00") == 1
        data = raw.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.9\x00")
    else:
        raise AssertionError(kind)
    out = tmp_path / f"{kind.replace(' ', '_')}.dcm"
    out.write_bytes(data)
    return out


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", ["truncated", "bad number", "bad syntax"])
def test_a_damaged_ct_slice_raises_a_data_format_error_naming_it(tmp_path, kind):
    f = _damaged(tmp_path, "CT_small.dcm", kind)
    with pytest.raises(DataFormatError, match=re.escape(f.name)):
        read_dicom_series([f])


@pytest.mark.filterwarnings("ignore")
def test_a_damaged_seg_raises_a_data_format_error_naming_it(tmp_path):
    with open(_testfile("liver_1frame.dcm"), "rb") as fh:
        raw = fh.read()
    f = tmp_path / "seg_cut.dcm"
    f.write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(DataFormatError, match=re.escape(f.name)):
        read_dicom_seg(f)
