from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.anatomy import BoxOrganMatcher, ClassMap, Location, describe_location
from medcurric.anatomy.location import OrganExtents, organ_extents
from medcurric.errors import InvalidBoxError, ShapeError, WrongTypeError
from medcurric.io import LabelMap
from medcurric.testing import make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _reference_fractions(labels, members, affine, centre_xyz):
    """Brute force: world extent of every organ voxel's corners, then the centre's fraction."""
    zz, yy, xx = np.nonzero(np.isin(labels, members))
    pts = []
    for dx in (-0.5, 0.5):
        for dy in (-0.5, 0.5):
            for dz in (-0.5, 0.5):
                v = np.stack([xx + dx, yy + dy, zz + dz, np.ones_like(xx, dtype=float)])
                pts.append((affine @ v)[:3])
    pts = np.concatenate(pts, axis=1)
    lo, hi = pts.min(axis=1), pts.max(axis=1)
    c = affine @ np.array([*centre_xyz, 1.0])
    return (c[:3] - lo) / (hi - lo)


def test_phantom_locations(phantom):
    lm = phantom.label_map()
    cm = lm.class_map
    matches = BoxOrganMatcher(level="group").match_records(phantom.key_slice_lesions, lm)
    by_id = {}
    for r, m in zip(phantom.key_slice_lesions, matches, strict=True):
        loc = describe_location(r.box, lm, m, slice_index=r.slice_index)
        by_id[r.id.removesuffix("-key")] = (m, loc)
        assert Location.from_json(loc.to_json()) == loc
        if m.organ is not None:
            cx = (r.box[0] + r.box[2]) / 2 - 0.5
            cy = (r.box[1] + r.box[3]) / 2 - 0.5
            ref = _reference_fractions(
                lm.array, cm.member_labels(m.organ), lm.affine, (cx, cy, r.slice_index)
            )
            np.testing.assert_allclose(loc.relative_position, ref, atol=1e-3)
    assert by_id["liver-small"][1].laterality == "right"
    assert by_id["kidney-left"][1].laterality == "left"
    assert by_id["spine-l2"][1].laterality == "midline"
    rll = by_id["lung-rll"][1]
    assert (rll.region, rll.region_phrase, rll.phrase) == (
        "lung_lower_lobe_right",
        "lower lobe",
        "lower lobe of the",
    )
    spine = by_id["spine-l2"][1]
    assert (spine.region, spine.phrase) == ("vertebrae_L2", "L2 vertebra of the")
    fat_m, fat = by_id["fat"]
    assert (
        fat_m.organ is None
        and fat.organ is None
        and fat.phrase == ""
        and fat.laterality in ("left", "right")
    )
    # size from the in-plane spacing (3 mm pixels)
    r = phantom.key_slice_lesions[0]
    w = (r.box[2] - r.box[0]) * 3.0
    assert by_id["liver-small"][1].size_mm == (w, w)


def test_left_right_follow_the_affine(phantom):
    lm = phantom.label_map()
    r = next(x for x in phantom.key_slice_lesions if x.id == "liver-small-key")
    base = describe_location(r.box, lm, "liver", slice_index=r.slice_index)
    # same array, affine saying x runs towards the patient's right: the liver is now on the left
    flipped_aff = lm.affine.copy()
    flipped_aff[0, 0] *= -1
    other = describe_location(
        r.box, lm.replace(affine=flipped_aff), "liver", slice_index=r.slice_index
    )
    assert (base.laterality, other.laterality) == ("right", "left")
    assert base.transverse != other.transverse or base.transverse == "middle"
    # flipping the array in x AND the affine describes the same patient: same location
    w = lm.array.shape[2]
    arr = lm.array[:, :, ::-1]
    aff = lm.affine @ np.array([[-1, 0, 0, w - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    box = (w - r.box[2], r.box[1], w - r.box[0], r.box[3])
    same = describe_location(
        box, LabelMap(arr, lm.class_map, lm.spacing, aff), "liver", slice_index=r.slice_index
    )
    assert same.laterality == base.laterality and same.phrase == base.phrase
    np.testing.assert_allclose(same.relative_position, base.relative_position, atol=1e-6)
    np.testing.assert_allclose(same.centre_mm, base.centre_mm, atol=1e-6)


def _block():
    a = np.zeros((30, 30, 30), np.uint8)
    a[0:30, 0:30, 0:15] = 1  # "liver" on array x < 15 (the patient's right)
    a[0:30, 0:30, 15:30] = 2  # "spleen" (keeps the body symmetric)
    return LabelMap(
        a, ClassMap({1: "liver", 2: "spleen", 3: "kidney_left"}), spacing=(1.0, 1.0, 1.0)
    )


@pytest.mark.parametrize(
    ("xyz", "words"),
    [
        ((2, 2, 28), ("right", "upper", "anterior")),
        ((12, 27, 2), ("left", "lower", "posterior")),
        ((7, 15, 15), ("middle", "middle", "middle")),
    ],
)
def test_thirds(xyz, words):
    lm = _block()
    x, y, z = xyz
    loc = describe_location((x, y, z, x + 1, y + 1, z + 1), lm, "liver")
    assert (loc.transverse, loc.vertical, loc.anterior_posterior) == words
    expected_phrase = " ".join(w for w in words if w != "middle")
    assert loc.phrase == (
        f"{expected_phrase} part of the" if expected_phrase else "central part of the"
    )


def test_medial_lateral_for_sided_organs():
    a = np.zeros((10, 10, 30), np.uint8)
    a[:, :, 20:29] = 3  # left kidney at large x = patient's left
    a[:, :, 1:10] = 1
    lm = LabelMap(a, ClassMap({1: "liver", 3: "kidney_left"}), spacing=(1.0, 1.0, 1.0))
    lateral = describe_location((27, 4, 4, 28, 5, 5), lm, "kidney_left")
    medial = describe_location((20, 4, 4, 21, 5, 5), lm, 3)
    assert (lateral.transverse, medial.transverse) == ("lateral", "medial")
    assert lateral.laterality == "left"


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 25),
    st.integers(0, 25),
    st.integers(0, 25),
    st.integers(1, 5),
    st.integers(1, 5),
    st.floats(0.3, 3.0),
    st.floats(0.3, 3.0),
    st.floats(0.3, 3.0),
)
def test_fractions_and_size_match_brute_force(x, y, z, w, h, sz, sy, sx):
    lm = _block().replace(spacing=(sz, sy, sx), affine=None)
    loc = describe_location((x, y, x + w, y + h), lm, "liver", slice_index=z)
    aff = np.diag([-sx, -sy, sz, 1.0])
    ref = _reference_fractions(lm.array, [1], aff, (x + w / 2 - 0.5, y + h / 2 - 0.5, z))
    np.testing.assert_allclose(loc.relative_position, ref, atol=1e-3)
    assert loc.size_mm == (round(max(w * sx, h * sy), 2), round(min(w * sx, h * sy), 2))


def test_boolean_mask_and_2d_views():
    m = np.zeros((40, 40), bool)
    m[0:40, 0:20] = True
    loc = describe_location((2, 2, 6, 6), m, "right lung", spacing=(0.5, 0.5), view="coronal")
    # coronal radiograph: rows run inferior, so the top rows are the organ's upper part
    assert (loc.vertical, loc.anterior_posterior, loc.transverse) == ("upper", None, "lateral")
    assert loc.laterality == "right" and loc.size_mm == (2.0, 2.0)
    ax = describe_location((2, 36, 6, 39), m, "liver")
    assert (ax.vertical, ax.anterior_posterior) == (None, "posterior") and ax.size_mm is None
    ext = organ_extents(m, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert describe_location((2, 36, 6, 39), m, "liver", extents=ext) == ax


def test_errors(phantom):
    lm = phantom.label_map()
    with pytest.raises(ShapeError, match="slice_index"):
        describe_location((1, 1, 2, 2), lm, "liver")
    with pytest.raises(InvalidBoxError):
        describe_location((5, 1, 2, 2), lm, "liver", slice_index=3)
    with pytest.raises(ShapeError):
        describe_location((1, 1, 2), lm, "liver")
    with pytest.raises(Exception, match="Did you mean"):
        describe_location((1, 1, 2, 2), lm, "livr", slice_index=3)


def test_cached_extents_give_the_same_locations(phantom):
    """OrganExtents' cached unions and body change no value against a fresh pass or a dict."""
    lm = phantom.label_map()
    matches = BoxOrganMatcher(level="group").match_records(phantom.key_slice_lesions, lm)
    ext = organ_extents(lm.array, lm.affine)
    assert isinstance(ext, OrganExtents)
    for _ in range(2):  # second round: every union and the body come from the cache
        for r, m in zip(phantom.key_slice_lesions, matches, strict=True):
            for organ in (m, None, "liver", "lung_left"):
                kw = {"slice_index": r.slice_index, "vertical": True}
                fresh = describe_location(r.box, lm, organ, **kw)
                assert describe_location(r.box, lm, organ, extents=ext, **kw) == fresh
                assert describe_location(r.box, lm, organ, extents=dict(ext), **kw) == fresh
    assert ext._unions and ext.body() is not None


def test_organ_extents_union_against_the_voxels(phantom):
    """Unions and the body from the cache equal the corners of the members' voxels."""
    lm = phantom.label_map()
    ext = organ_extents(lm.array, lm.affine)
    cm = lm.class_map

    def voxel_extent(labels):
        z, y, x = np.nonzero(np.isin(lm.array, labels))
        if z.size == 0:
            return None
        lo = np.array([x.min(), y.min(), z.min()]) - 0.5
        hi = np.array([x.max(), y.max(), z.max()]) + 0.5
        corners = np.array(
            [[c[0], c[1], c[2], 1.0] for c in itertools.product(*zip(lo, hi, strict=True))]
        )
        world = (lm.affine @ corners.T).T[:, :3]
        return world.min(axis=0), world.max(axis=0)

    for name in ("liver", "lung_left", "lung", "kidney_right"):
        try:
            members = cm.member_labels(cm.resolve(name))
        except Exception:
            continue
        want = voxel_extent(list(members))
        for _ in range(2):
            got = ext.union(members)
            assert (got is None) == (want is None)
            if got is not None:
                np.testing.assert_allclose(got[0], want[0])
                np.testing.assert_allclose(got[1], want[1])
    body = ext.body()
    want = voxel_extent([lab for lab in np.unique(lm.array) if lab != 0])
    np.testing.assert_allclose(body[0], want[0])
    np.testing.assert_allclose(body[1], want[1])
    assert ext.union((255,)) is None and OrganExtents({}).body() is None


def test_organ_extents_are_read_only(phantom):
    lm = phantom.label_map()
    ext = organ_extents(lm.array, lm.affine)
    label = next(iter(ext))
    with pytest.raises(TypeError):
        ext[label] = ext[label]  # type: ignore[index]
    with pytest.raises(ValueError):
        ext[label][0][0] = 1e9
    union = ext.union((label,))
    with pytest.raises(ValueError):
        union[1][0] = 1e9
    mine = {label: (np.zeros(3), np.ones(3))}
    copy = OrganExtents(mine)
    mine[label][1][:] = 5.0  # the caller's arrays are copied, not shared
    assert copy[label][1].tolist() == [1.0, 1.0, 1.0] and label in copy and len(copy) == 1
    lo, hi = np.zeros((2, 3)), np.ones((2, 3))
    arrays = OrganExtents.from_arrays([4, 9], lo, hi)
    assert arrays[9][1].tolist() == [1.0, 1.0, 1.0] and not hi.flags.writeable
    with pytest.raises(ShapeError, match=r"Expected lo and hi of shape \(3, 3\)"):
        OrganExtents.from_arrays([1, 2, 3], np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"Expected an \(x, y, z\) corner of 3 numbers"):
        OrganExtents({1: ([0, 0], [1, 1])})
    with pytest.raises(WrongTypeError, match="Expected extents"):
        describe_location((1, 1, 2, 2), lm, "liver", slice_index=3, extents=[1, 2])


_MEMORY_BOUND_SCRIPT = """
import resource, numpy as np
from medcurric.anatomy import ClassMap, describe_location
from medcurric.anatomy.location import organ_extents

cm = ClassMap({1: "lung_upper_lobe_left", 2: "lung_lower_lobe_left"}, groups="auto")
base = np.zeros((4, 8, 8), dtype=np.int32)
base[:, 2:6, 2:4] = 1
base[:, 2:6, 4:6] = 2
describe_location([2, 2, 0, 6, 6, 4], base, "lung_left", class_map=cm)  # compile first
vm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (384 << 20), vm + (384 << 20)))
for value in (20_000_000, 500_000_000):
    for dtype in (np.int32, np.int64):
        a = base.astype(dtype)
        a[3, 7, 7] = value
        ext = organ_extents(a, np.eye(4))
        assert sorted(ext) == [1, 2, value], sorted(ext)
        assert ext[value][0].tolist() == [6.5, 6.5, 2.5], ext[value]
        assert ext[1][0].tolist() == [1.5, 1.5, -0.5], ext[1]
        loc = describe_location([2, 2, 0, 4, 6, 4], a, "lung_left", class_map=cm)
        assert loc.region == "lung_upper_lobe_left", loc
        print("described", value)
try:
    np.ones(int(500_000_000), dtype=np.int64)
except MemoryError:
    print("the limit bites")
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="RLIMIT_AS is Linux")
def test_a_stray_huge_label_is_described_in_bounded_memory(run_python) -> None:
    """One voxel labelled 2e7 or 5e8 in an int32/int64 map: extents and location come out
    right under an address-space limit far below per-label tables."""

    run = run_python(_MEMORY_BOUND_SCRIPT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("described") == 4, run.stdout
    assert "the limit bites" in run.stdout


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32])
def test_sparse_labels_give_the_same_extents_as_brute_force(dtype: type) -> None:
    rng = np.random.default_rng(3)
    values = np.array([0, 7, 70_000, 3_000_000_000 if dtype != np.int32 else 2_000_000_000])
    a = rng.choice(values, size=(3, 5, 6)).astype(dtype)
    ext = organ_extents(a, np.eye(4))
    for v in values[1:]:
        zz, yy, xx = np.nonzero(a == v)
        assert ext[int(v)][0].tolist() == [xx.min() - 0.5, yy.min() - 0.5, zz.min() - 0.5]
        assert ext[int(v)][1].tolist() == [xx.max() + 0.5, yy.max() + 0.5, zz.max() + 0.5]
    assert sorted(ext) == sorted(int(v) for v in values[1:] if (a == v).any())
