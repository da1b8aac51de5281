from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcurric.anatomy import (
    BoxOrganMatcher,
    Candidate,
    ClassMap,
    MatchLevel,
    MatchOutcome,
    OrganMatch,
)
from medcurric.errors import (
    DataFormatError,
    InvalidBoxError,
    InvalidOptionError,
    MedcurricWarning,
    ShapeError,
    WrongTypeError,
)
from medcurric.geometry import box_mask_overlap
from medcurric.io import LabelMap, LesionRecord

CM = ClassMap(
    {1: "lung_upper_lobe_left", 2: "lung_lower_lobe_left", 3: "liver", 4: "kidney_right", 5: "spleen"},
    groups="auto",
)


# --------------------------------------------------------------------------- brute-force reference


def reference_match(boxes, arr, cm, *, criterion="ioa", min_score=None, adjacent_mm=5.0, spacing=None,
                    ignore=(), level="organ", slice_index=None):
    """Loop over every box, voxel and label: the definition, written independently."""
    if min_score is None:
        min_score = 0.5 if criterion == "ioa" else 0.0
    ignored = set()
    for name in ignore:
        ignored.update(cm.members(name))
    unit_of, unit_labels = {}, {}
    for label, name in cm.items():
        if name in ignored:
            continue
        unit = cm.group_of(name) if level == "group" else name
        unit_of[label] = unit
        unit_labels.setdefault(unit, []).append(label)
    out = []
    for i, box in enumerate(np.asarray(boxes, dtype=float)):
        plane = arr if slice_index is None else arr[int(np.broadcast_to(slice_index, len(boxes))[i])]
        nd = plane.ndim
        sp = (1.0,) * nd if spacing is None else tuple(spacing)[-nd:]
        sp_xyz = sp[::-1]
        lo, hi = box[:nd], box[nd:]
        box_count, inter, area, mind = 0, Counter(), Counter(), {}
        for idx in np.ndindex(plane.shape):
            c = [idx[nd - 1 - k] + 0.5 for k in range(nd)]  # x, y(, z)
            inside = all(lo[k] <= c[k] < hi[k] for k in range(nd))
            box_count += inside
            unit = unit_of.get(int(plane[idx]))
            if unit is None:
                continue
            area[unit] += 1
            inter[unit] += inside
            d2 = sum((max(0.0, lo[k] - c[k], c[k] - hi[k]) * sp_xyz[k]) ** 2 for k in range(nd))
            mind[unit] = min(mind.get(unit, math.inf), d2)

        def scores(u, inter=inter, area=area, box_count=box_count):
            ioa = inter[u] / box_count if box_count else 0.0
            union = box_count + area[u] - inter[u]
            iou = inter[u] / union if union else 0.0
            return (ioa, iou) if criterion == "ioa" else (iou, ioa)

        cands = sorted((u for u in area if inter[u] > 0),
                       key=lambda u: (-scores(u)[0], -scores(u)[1], min(unit_labels[u])))
        rec = {"candidates": cands, "scores": {u: scores(u) for u in area}}
        if cands and scores(cands[0])[0] >= min_score:
            rec.update(organ=cands[0], outcome="inside", distance=None)
        elif adjacent_mm is not None:
            near = [u for u in mind if mind[u] <= adjacent_mm**2 * (1 + 1e-12) + 1e-12]
            if near:
                u = min(near, key=lambda u: (mind[u], -scores(u)[0], -scores(u)[1], min(unit_labels[u])))
                rec.update(organ=u, outcome="adjacent", distance=math.sqrt(mind[u]))
            else:
                rec.update(organ=None, outcome="unmatched", distance=None)
        else:
            rec.update(organ=None, outcome="unmatched", distance=None)
        out.append(rec)
    return out


def assert_same(got: list[OrganMatch], want: list[dict], criterion: str) -> None:
    assert len(got) == len(want)
    for m, r in zip(got, want, strict=False):
        assert m.outcome == r["outcome"], (m, r)
        assert m.organ == r["organ"], (m, r)
        assert [c.organ for c in m.candidates] == r["candidates"]
        for c in m.candidates:
            s, o = r["scores"][c.organ]
            assert c.score(criterion) == pytest.approx(s, abs=1e-12)
            assert (c.iou if criterion == "ioa" else c.ioa) == pytest.approx(o, abs=1e-12)
        if r["organ"] is None:
            assert m.score == 0.0 and m.label is None
        else:
            assert m.score == pytest.approx(r["scores"][r["organ"]][0], abs=1e-12)
        if r["distance"] is None:
            assert m.distance_mm is None
        else:
            assert m.distance_mm == pytest.approx(r["distance"], abs=1e-9)


# --------------------------------------------------------------------------- strategies


@st.composite
def label_maps(draw, ndim: int):
    shape = (*tuple(draw(st.integers(1, 4 if ndim == 3 else 9)) for _ in range(ndim - 2)), draw(st.integers(2, 9)), draw(st.integers(2, 9)))
    n = int(np.prod(shape))
    # blocky maps: a few rectangles painted over background, plus random speckle
    arr = np.zeros(shape, dtype=np.uint8)
    for _ in range(draw(st.integers(0, 4))):
        lab = draw(st.integers(1, 5))
        sl = []
        for s in shape:
            a = draw(st.integers(0, s - 1))
            b = draw(st.integers(a + 1, s))
            sl.append(slice(a, b))
        arr[tuple(sl)] = lab
    speckle = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 5)), max_size=4))
    flat = arr.reshape(-1)
    for pos, lab in speckle:
        flat[pos] = lab
    return arr


@st.composite
def boxes_for(draw, plane_shape, n_max=4):
    n = draw(st.integers(0, n_max))
    out = []
    for _ in range(n):
        lo, hi = [], []
        for s in plane_shape[::-1]:  # x, y(, z)
            a = draw(st.integers(0, 2 * s)) / 2
            b = draw(st.integers(int(2 * a), 2 * s)) / 2
            lo.append(a)
            hi.append(b)
        out.append(lo + hi)
    return np.array(out, dtype=float).reshape(n, 2 * len(plane_shape))


options = st.fixed_dictionaries({
    "criterion": st.sampled_from(["ioa", "iou"]),
    "min_score": st.sampled_from([None, 0.0, 0.25, 0.5, 1.0]),
    "adjacent_mm": st.sampled_from([None, 0.0, 1.5, 2.5, 6.0]),
    "level": st.sampled_from(["organ", "group"]),
    "ignore": st.sampled_from([(), ("liver",), ("lung_left",), ("spleen", "kidney_right")]),
})
spacings = st.sampled_from([None, (1.0, 1.0, 1.0), (2.5, 0.7, 1.3), (5.0, 1.0, 0.5)])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([2, 3]), options, spacings)
def test_matches_brute_force_reference(data, ndim, opts, spacing) -> None:
    arr = data.draw(label_maps(ndim))
    boxes = data.draw(boxes_for(arr.shape))
    sp = None if spacing is None else spacing[-ndim:]
    got = BoxOrganMatcher(CM, **opts).match(boxes, arr, spacing=sp)
    want = reference_match(boxes, arr, CM, spacing=sp, **opts)
    assert_same(got, want, opts["criterion"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), options, spacings)
def test_slice_mode_matches_brute_force_reference(data, opts, spacing) -> None:
    arr = data.draw(label_maps(3))
    boxes = data.draw(boxes_for(arr.shape[1:]))
    slices = np.array(data.draw(st.lists(st.integers(0, arr.shape[0] - 1), min_size=len(boxes),
                                         max_size=len(boxes))), dtype=np.int64)
    got = BoxOrganMatcher(CM, **opts).match(boxes, arr, slice_index=slices, spacing=spacing)
    want = reference_match(boxes, arr, CM, spacing=spacing, slice_index=slices, **opts)
    assert_same(got, want, opts["criterion"])


# --------------------------------------------------------------------------- unit cases


def test_scores_agree_with_geometry_overlap() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 6, size=(6, 12, 12)).astype(np.uint8)
    boxes = np.array([[0, 0, 0, 12, 12, 6], [2, 3, 1, 7, 9, 4], [5, 5, 5, 6, 6, 6]], dtype=float)
    ov = box_mask_overlap(boxes, arr)
    for i, m in enumerate(BoxOrganMatcher(CM, criterion="iou").match(boxes, arr)):
        for c in m.candidates:
            assert c.iou == pytest.approx(float(ov.iou()[i, c.label]))
            assert c.ioa == pytest.approx(float(ov.ioa()[i, c.label]))
            assert c.intersection == int(ov.intersection[i, c.label])


def test_ties_break_by_other_criterion_then_label() -> None:
    arr = np.zeros((10, 10), dtype=np.uint8)
    arr[0:5, 0:5] = 3  # liver: 25 px
    arr[5:10, 0:10] = 4  # kidney_right: 50 px
    arr[0:5, 5:10] = 5  # spleen: 25 px
    # the box covers 10 px of each of liver and kidney: equal ioa, liver (smaller) has higher iou
    m = BoxOrganMatcher(CM, min_score=0.0).match([[0, 3, 5, 7]], arr)[0]
    assert [c.organ for c in m.candidates] == ["liver", "kidney_right"]
    assert m.candidates[0].ioa == m.candidates[1].ioa and m.organ == "liver"
    # exact tie on both criteria between liver (3) and spleen (5): lower label id wins
    m = BoxOrganMatcher(CM, min_score=0.0).match([[3, 0, 7, 5]], arr)[0]
    assert [c.organ for c in m.candidates] == ["liver", "spleen"]
    arr2 = np.where(arr == 3, 5, np.where(arr == 5, 3, arr)).astype(np.uint8)  # swap the two
    m = BoxOrganMatcher(CM, min_score=0.0).match([[3, 0, 7, 5]], arr2)[0]
    assert m.organ == "liver"  # still the lower id, now on the other side


def test_min_score_boundary_is_inclusive() -> None:
    arr = np.zeros((4, 8), dtype=np.uint8)
    arr[:, :4] = 3
    box = [[2, 0, 6, 4]]  # exactly half in the liver
    assert BoxOrganMatcher(CM, min_score=0.5).match(box, arr)[0].outcome is MatchOutcome.INSIDE
    m = BoxOrganMatcher(CM, min_score=0.51).match(box, arr)[0]
    assert m.outcome is MatchOutcome.ADJACENT and m.distance_mm == 0.0 and m.score == 0.5
    m = BoxOrganMatcher(CM, min_score=0.51, adjacent_mm=None).match(box, arr)[0]
    assert m.outcome is MatchOutcome.UNMATCHED and m.organ is None and len(m.candidates) == 1


def test_adjacent_distances_use_anisotropic_spacing() -> None:
    arr = np.zeros((8, 10, 20), dtype=np.uint8)
    arr[6, 4, 4] = 3  # one liver voxel two slices above the box (z centre 6.5)
    box = [[2, 2, 1, 6, 6, 5]]  # x 2..6, y 2..6, z 1..5: z gap = 6.5 - 5 = 1.5 voxels
    for sz, expect in ((1.0, 1.5), (5.0, 7.5), (0.2, 0.3)):
        m = BoxOrganMatcher(CM, adjacent_mm=7.5).match(box, arr, spacing=(sz, 1.0, 1.0))[0]
        assert m.outcome is MatchOutcome.ADJACENT and m.distance_mm == pytest.approx(expect)
    m = BoxOrganMatcher(CM, adjacent_mm=7.49).match(box, arr, spacing=(5.0, 1.0, 1.0))[0]
    assert m.outcome is MatchOutcome.UNMATCHED
    # a diagonal neighbour: gaps in x and z combine
    arr2 = np.zeros((8, 10, 20), dtype=np.uint8)
    arr2[6, 4, 8] = 4  # x centre 8.5: x gap 2.5 voxels
    m = BoxOrganMatcher(CM, adjacent_mm=100).match(box, arr2, spacing=(2.0, 1.0, 0.5))[0]
    assert m.organ == "kidney_right" and m.distance_mm == pytest.approx(math.hypot(1.5 * 2.0, 2.5 * 0.5))
    # the nearer of two organs wins
    arr2[4, 4, 7] = 5  # spleen: x gap 1.5 * 0.5 = 0.75 mm, same slice range
    m = BoxOrganMatcher(CM, adjacent_mm=100).match(box, arr2, spacing=(2.0, 1.0, 0.5))[0]
    assert m.organ == "spleen" and m.distance_mm == pytest.approx(0.75)


def test_spacing_from_label_map_and_slice_mode_is_in_plane() -> None:
    vol = np.zeros((5, 10, 10), dtype=np.uint8)
    vol[3, 2, 2] = 3  # liver on slice 3 only
    lm = LabelMap(vol, CM, spacing=(10.0, 2.0, 2.0))
    m3 = BoxOrganMatcher(adjacent_mm=10).match([[2, 2, 1, 3, 3, 2]], lm)[0]  # z gap 1.5 slices -> 15 mm
    assert m3.outcome is MatchOutcome.UNMATCHED
    m3 = BoxOrganMatcher(adjacent_mm=15).match([[2, 2, 1, 3, 3, 2]], lm)[0]
    assert m3.outcome is MatchOutcome.ADJACENT and m3.distance_mm == pytest.approx(15.0)
    # on slice 1 there is no liver at all: slice mode measures in-plane only
    m2 = BoxOrganMatcher(adjacent_mm=100).match([[2, 2, 3, 3]], lm, slice_index=1)[0]
    assert m2.outcome is MatchOutcome.UNMATCHED
    m2 = BoxOrganMatcher(adjacent_mm=100).match([[4, 2, 5, 3]], lm, slice_index=3)[0]
    assert m2.distance_mm == pytest.approx(1.5 * 2.0)
    # explicit spacing wins over the map's
    m2 = BoxOrganMatcher(adjacent_mm=100).match([[4, 2, 5, 3]], lm, slice_index=3, spacing=(1.0, 1.0))[0]
    assert m2.distance_mm == pytest.approx(1.5)


def test_slice_mode_equals_2d_on_the_slice() -> None:
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 6, size=(4, 9, 9)).astype(np.uint8)
    boxes = np.array([[0, 0, 4, 4], [2, 3, 9, 9], [5, 5, 6, 6]], dtype=float)
    slices = np.array([0, 3, 2])
    got = BoxOrganMatcher(CM).match(boxes, vol, slice_index=slices)
    for b, z, m in zip(boxes, slices, got, strict=False):
        assert m == BoxOrganMatcher(CM).match(b, vol[z])[0]


def test_group_level_merges_lobes() -> None:
    arr = np.zeros((10, 10), dtype=np.uint8)
    arr[:, :5] = 1
    arr[:, 5:] = 2
    box = [[3, 0, 7, 10]]  # half upper lobe, half lower lobe
    organ = BoxOrganMatcher(CM, min_score=0.6).match(box, arr)[0]
    assert organ.outcome is MatchOutcome.ADJACENT and organ.organ == "lung_upper_lobe_left"
    group = BoxOrganMatcher(CM, min_score=0.6, level="group").match(box, arr)[0]
    assert group.outcome is MatchOutcome.INSIDE and group.organ == "lung_left"
    assert group.label is None and group.score == 1.0 and group.level is MatchLevel.GROUP
    assert group.candidates[0].intersection == 40
    assert group.candidates[0].iou == pytest.approx(40 / 100)


def test_ignore_drops_classes_and_groups() -> None:
    arr = np.zeros((10, 10), dtype=np.uint8)
    arr[:, :6] = 3
    arr[:, 6:] = 5
    box = [[0, 0, 10, 10]]
    assert BoxOrganMatcher(CM, min_score=0).match(box, arr)[0].organ == "liver"
    m = BoxOrganMatcher(CM, min_score=0, ignore=["liver"]).match(box, arr)[0]
    assert m.organ == "spleen" and [c.organ for c in m.candidates] == ["spleen"]
    arr[:, :6] = 1
    m = BoxOrganMatcher(CM, min_score=0, ignore="lung_left").match(box, arr)[0]
    assert m.organ == "spleen"
    with pytest.raises(InvalidOptionError, match="Did you mean 'spleen'"):
        BoxOrganMatcher(CM, ignore=["spleeen"])


def test_plain_3d_and_2d_against_hand_counts() -> None:
    vol = np.zeros((4, 6, 6), dtype=np.uint8)
    vol[1:3, 1:4, 1:4] = 3  # 18 voxels of liver
    m = BoxOrganMatcher(CM, criterion="iou", min_score=0.1).match([[1, 1, 1, 4, 4, 3]], vol)[0]
    assert m.organ == "liver" and m.score == 1.0 and m.label == 3 and m.is_inside
    m = BoxOrganMatcher(CM).match([[0, 0, 0, 6, 6, 4]], vol)[0]  # box 144 voxels
    assert m.candidates[0].ioa == pytest.approx(18 / 144) and m.candidates[0].iou == pytest.approx(18 / 144)
    assert m.outcome is MatchOutcome.ADJACENT


def test_empty_and_degenerate_boxes() -> None:
    arr = np.zeros((5, 5), dtype=np.uint8)
    arr[2, 2] = 3
    assert BoxOrganMatcher(CM).match(np.zeros((0, 4)), arr) == []
    assert BoxOrganMatcher(CM).match([], arr) == []
    m = BoxOrganMatcher(CM, adjacent_mm=1.0).match([[2.5, 2.5, 2.5, 2.5]], arr)[0]  # covers no pixel
    assert m.candidates == () and m.outcome is MatchOutcome.ADJACENT and m.distance_mm == 0.0


def test_unknown_labels_warn_and_count_as_background() -> None:
    arr = np.zeros((4, 4), dtype=np.uint8)
    arr[:2] = 9  # not in CM
    arr[2:] = 3
    with pytest.warns(MedcurricWarning, match="labels 9"):
        m = BoxOrganMatcher(CM).match([[0, 0, 4, 4]], arr)[0]
    assert m.organ == "liver" and m.score == 0.5 and len(m.candidates) == 1


def test_label_map_class_map_wins_with_warning() -> None:
    arr = np.zeros((4, 4), dtype=np.uint8)
    arr[:] = 1
    other = ClassMap({1: "stomach"})
    with pytest.warns(MedcurricWarning, match="class_map"):
        m = BoxOrganMatcher(CM).match([[0, 0, 2, 2]], LabelMap(arr, other))[0]
    assert m.organ == "stomach"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BoxOrganMatcher().match([[0, 0, 2, 2]], LabelMap(arr, other))[0].organ == "stomach"


def test_input_errors() -> None:
    vol = np.zeros((3, 5, 5), dtype=np.uint8)
    m = BoxOrganMatcher(CM)
    with pytest.raises(ShapeError, match="slice_index"):
        m.match([[0, 0, 1, 1]], vol)
    with pytest.raises(ShapeError, match="2D label map"):
        m.match([[0, 0, 0, 1, 1, 1]], vol[0])
    with pytest.raises(ShapeError, match=r"\[N, 4\]"):
        m.match([[0, 0, 1]], vol[0])
    with pytest.raises(InvalidBoxError, match="outside the volume"):
        m.match([[0, 0, 1, 1]], vol, slice_index=3)
    with pytest.raises(InvalidBoxError):
        m.match([[0, 0, 9, 9]], vol[0])
    with pytest.raises(InvalidBoxError):
        m.match([[np.nan, 0, 1, 1]], vol[0])
    with pytest.raises(ShapeError, match="spacing"):
        m.match([[0, 0, 1, 1]], vol[0], spacing=(1.0, 1.0, 1.0, 1.0))
    with pytest.raises(DataFormatError, match="positive"):
        m.match([[0, 0, 1, 1]], vol[0], spacing=(0.0, 1.0))
    with pytest.raises(DataFormatError, match="integer label map"):
        m.match([[0, 0, 1, 1]], vol[0].astype(float))
    with pytest.raises(WrongTypeError, match="class map"):
        BoxOrganMatcher().match([[0, 0, 1, 1]], vol[0])
    with pytest.raises(InvalidOptionError, match="Did you mean 'iou'"):
        BoxOrganMatcher(CM, criterion="iuo")
    with pytest.raises(InvalidOptionError):
        BoxOrganMatcher(CM, level="organs!")
    with pytest.raises(DataFormatError):
        BoxOrganMatcher(CM, min_score=1.5)
    with pytest.raises(DataFormatError):
        BoxOrganMatcher(CM, adjacent_mm=-1)
    with pytest.raises(ShapeError, match="ids"):
        m.match([[0, 0, 1, 1]], vol[0], ids=["a", "b"])


def test_clip() -> None:
    arr = np.full((4, 4), 3, dtype=np.uint8)
    m = BoxOrganMatcher(CM).match([[-2, -2, 2, 2]], arr, clip=True)[0]
    assert m.organ == "liver" and m.candidates[0].intersection == 4


def test_organ_match_json_round_trip() -> None:
    arr = np.zeros((6, 6), dtype=np.uint8)
    arr[:3] = 3
    arr[3:] = 4
    for m in BoxOrganMatcher(CM).match([[0, 0, 6, 6], [0, 0, 2, 2]], arr, ids=["a", "b"]):
        again = OrganMatch.from_json(m.to_json())
        assert again == m and isinstance(again.candidates[0], Candidate)
        assert again.outcome is m.outcome and again.id == m.id
    with pytest.raises(InvalidOptionError):
        OrganMatch(organ=None, label=None, score=0.0, criterion="ioa", outcome="outside")


def test_match_records_groups_by_image_with_one_overlap_call(monkeypatch) -> None:
    import medcurric.anatomy.matcher as matcher_mod

    calls = []
    real = matcher_mod.box_mask_overlap

    def counting(*args, **kwargs):
        calls.append(kwargs.get("slice_index"))
        return real(*args, **kwargs)

    monkeypatch.setattr(matcher_mod, "box_mask_overlap", counting)
    vol = np.zeros((4, 6, 6), dtype=np.uint8)
    vol[1] = 3
    vol[2] = 4
    recs = [
        LesionRecord(id="a", image="one", box=(0, 0, 2, 2), slice_index=1),
        LesionRecord(id="b", image="two", box=(0, 0, 2, 2), slice_index=1),
        LesionRecord(id="c", image="one", box=(0, 0, 2, 2), slice_index=2),
    ]
    maps = {"one": LabelMap(vol, CM), "two": LabelMap(np.zeros_like(vol), CM)}
    got = BoxOrganMatcher().match_records(recs, maps)
    assert [m.id for m in got] == ["a", "b", "c"]
    assert [m.organ for m in got] == ["liver", None, "kidney_right"]
    assert len(calls) == 2  # one call per image, slices passed per box
    assert BoxOrganMatcher().match_records(recs, lambda image: maps[image]) == got
    with pytest.raises(DataFormatError, match="No label map"):
        BoxOrganMatcher().match_records(recs, {"one": maps["one"]})
    with pytest.raises(DataFormatError, match="slice_index"):
        BoxOrganMatcher().match_records([LesionRecord(id="x", image="one", box=(0, 0, 1, 1))], maps)
    # a record's spacing is used when the map has none
    vol2 = np.zeros((6, 6), dtype=np.uint8)
    vol2[0, 5] = 3
    rec = LesionRecord(id="s", image="i", box=(0, 0, 2, 2), spacing=(1.0, 2.0))
    m = BoxOrganMatcher(CM, adjacent_mm=100).match_records([rec], vol2)[0]
    assert m.distance_mm == pytest.approx(3.5 * 2.0)


def test_boolean_mask_is_label_one() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 5] = True
    cm = ClassMap({1: "liver"})
    m = BoxOrganMatcher(cm, adjacent_mm=10).match([[0, 0, 2, 2]], mask)[0]
    assert m.organ == "liver" and m.distance_mm == pytest.approx(3.5)
    assert m == BoxOrganMatcher(cm, adjacent_mm=10).match([[0, 0, 2, 2]], mask.astype(np.uint8))[0]


_MEMORY_BOUND_SCRIPT = """
import resource, warnings, numpy as np
from medcurric.anatomy import BoxOrganMatcher, ClassMap

cm = ClassMap({1: "liver", 2: "spleen"})
matcher = BoxOrganMatcher(cm)
base = np.zeros((4, 8, 8), dtype=np.int32)
base[1:3, 2:6, 2:6] = 1
matcher.match([[0, 0, 0, 8, 8, 4]], base)  # compile the kernels first
vm = next(int(x.split()[1]) * 1024 for x in open("/proc/self/status") if x.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (384 << 20), vm + (384 << 20)))
for value in (20_000_000, 500_000_000):
    for dtype in (np.int32, np.int64):
        a = base.astype(dtype)
        a[3, 7, 7] = value
        for boxes, kw in (([[2, 2, 1, 6, 6, 3]], {}), ([[2, 2, 6, 6]], {"slice_index": 3})):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                m = matcher.match(boxes, a, **kw)[0]
            assert m.organ == ("liver" if not kw else None), m
            assert any(str(value) in str(w.message) for w in caught), [str(w.message) for w in caught]
            print("matched", value)
try:
    np.ones(int(500_000_000), dtype=np.int64)
except MemoryError:
    print("the limit bites")
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="RLIMIT_AS is Linux")
def test_a_stray_huge_label_matches_in_bounded_memory(run_python) -> None:
    """One voxel labelled 2e7 or 5e8 in an int32/int64 map: matched as background (with the
    warning naming the label) under an address-space limit far below per-label tables."""

    run = run_python(_MEMORY_BOUND_SCRIPT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("matched") == 8, run.stdout
    assert "the limit bites" in run.stdout


def test_a_class_map_with_a_huge_label_is_refused() -> None:
    cm = ClassMap({1: "liver", 500_000_000: "spleen"})
    with pytest.raises(DataFormatError, match=r"MAX_LABEL = 65535.*500000000"):
        BoxOrganMatcher(cm).match([[0, 0, 2, 2]], np.zeros((4, 4), dtype=np.int32))
