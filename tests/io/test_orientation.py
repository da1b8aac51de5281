from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import ShapeError
from medcurric.io import Reorientation, orientation_codes, reorient_to_canonical


def _axis_affine(perm, signs, zooms=(1.5, 0.7, 2.0), offset=(10.0, -20.0, 5.0)):
    a = np.zeros((4, 4))
    a[3, 3] = 1.0
    for i, (p, s) in enumerate(zip(perm, signs, strict=True)):
        a[p, i] = s * zooms[i]
    a[:3, 3] = offset
    return a


ALL_ORIENTATIONS = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product([1, -1], repeat=3)
]


@pytest.mark.parametrize(("perm", "signs"), ALL_ORIENTATIONS)
def test_matches_nibabel_as_reoriented(perm, signs):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 50, size=(4, 5, 6))
    aff = _axis_affine(perm, signs)
    img = nib.Nifti1Image(data.astype(np.int16), aff)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    ref = img.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(aff), target))
    arr, new_aff = reorient_to_canonical(data, aff)
    np.testing.assert_array_equal(arr, np.asanyarray(ref.dataobj).transpose(2, 1, 0))
    np.testing.assert_allclose(new_aff, ref.affine)
    assert orientation_codes(aff) == nib.aff2axcodes(aff)
    assert orientation_codes(new_aff) == ("L", "P", "S")


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(ALL_ORIENTATIONS),
    st.tuples(*[st.integers(1, 5)] * 3),
    st.floats(-0.3, 0.3),
)
def test_voxels_keep_their_world_position(orientation, shape, tilt):
    perm, signs = orientation
    aff = _axis_affine(perm, signs)
    aff[:3, :3] += tilt * np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]])  # slightly oblique
    data = np.arange(np.prod(shape)).reshape(shape)
    r = Reorientation.from_affine(aff, shape)
    arr = r.apply(data)
    # every canonical voxel holds the stored voxel at the same world position
    for z, y, x in itertools.product(*[range(n) for n in arr.shape]):
        world = r.affine @ [x, y, z, 1]
        ijk = np.linalg.solve(aff, world)[:3]
        assert np.allclose(ijk, np.round(ijk), atol=1e-6)
        assert arr[z, y, x] == data[tuple(int(v) for v in np.round(ijk))]
        assert r.to_canonical_index(tuple(int(v) for v in np.round(ijk))) == (z, y, x)
    np.testing.assert_array_equal(r.invert(arr), data)


def test_canonical_slice_helpers():
    aff = _axis_affine((0, 1, 2), (-1, -1, -1))  # stored k runs inferior
    r = Reorientation.from_affine(aff, (3, 4, 5))
    assert r.stored_slice(0) == (2, 4)
    assert r.canonical_z(4) == 0
    assert r.spacing() == pytest.approx((2.0, 0.7, 1.5))


def test_bad_affines_raise():
    with pytest.raises(ShapeError):
        orientation_codes(np.eye(3))
    with pytest.raises(ShapeError):
        Reorientation.from_affine(np.diag([1.0, 0.0, 1.0, 1.0]), (2, 2, 2))
    with pytest.raises(ShapeError):
        reorient_to_canonical(np.zeros((2, 2)), np.eye(4))


def test_axis_assignment_is_cached_per_affine_without_sharing_lists():
    from medcurric.io.orientation import _axis_assignment

    aff = np.array([[0, 0, 2, 1], [0, -1, 0, 2], [1, 0, 0, 3], [0, 0, 0, 1.0]])
    world, signs = _axis_assignment(aff)
    assert (world, signs) == ([2, 1, 0], [1.0, -1.0, 1.0])
    world.append(7)
    signs[0] = -5.0
    assert _axis_assignment(aff.copy()) == ([2, 1, 0], [1.0, -1.0, 1.0])
    # a strided view of a bigger array reads the same 3 x 3 block
    big = np.zeros((6, 6))
    big[:4, :4] = aff
    assert _axis_assignment(big[:4, :4]) == ([2, 1, 0], [1.0, -1.0, 1.0])
