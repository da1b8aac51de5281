"""The same phantom stored in several orientations reads back to identical arrays and matches."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medcurric.anatomy import BoxOrganMatcher, describe_location
from medcurric.io import read_label_map, read_nifti
from medcurric.testing import make_phantom

TARGETS = [("L", "P", "S"), ("R", "A", "S"), ("L", "A", "I"), ("S", "R", "P"), ("A", "I", "R")]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=(32, 64, 64))


def _store(phantom, data, target, path):
    img = nib.Nifti1Image(data.transpose(2, 1, 0).copy(), phantom.affine)
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(phantom.affine), nib.orientations.axcodes2ornt(target)
    )
    out = img.as_reoriented(ornt)
    nib.save(out, str(path))
    return out


def test_orientations_give_identical_arrays_and_matches(phantom, tmp_path):
    matcher = BoxOrganMatcher(level="group")
    ref_matches = matcher.match_records(phantom.key_slice_lesions, phantom.label_map())
    ref3d = matcher.match_records(phantom.lesions, phantom.label_map())
    seen = set()
    for target in TARGETS:
        f = tmp_path / f"{''.join(target)}.nii.gz"
        stored = _store(phantom, phantom.labels, target, f)
        seen.add(nib.aff2axcodes(stored.affine))
        _store(phantom, phantom.hu, target, tmp_path / "ct.nii.gz")
        lm = read_label_map(f)  # no names in the header: TotalSegmentator's map
        np.testing.assert_array_equal(lm.array, phantom.labels)
        np.testing.assert_allclose(lm.affine, phantom.affine, atol=1e-5)
        assert lm.spacing == pytest.approx(phantom.spacing)
        np.testing.assert_array_equal(read_nifti(tmp_path / "ct.nii.gz").array, phantom.hu)
        assert matcher.match_records(phantom.key_slice_lesions, lm) == ref_matches
        assert matcher.match_records(phantom.lesions, lm) == ref3d
        for r, m in zip(phantom.key_slice_lesions, ref_matches, strict=True):
            a = describe_location(r.box, lm, m, slice_index=r.slice_index)
            b = describe_location(r.box, phantom.label_map(), m, slice_index=r.slice_index)
            assert a == b
    assert len(seen) == len(TARGETS)
