"""``criterion="bbox_iou"``: the authors' released rule, against a restatement written here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcurric.anatomy import BoxOrganMatcher, Candidate, ClassMap, Criterion, MatchOutcome
from medcurric.errors import DataFormatError
from medcurric.testing import make_phantom

CM = ClassMap(
    {1: "lung_upper_lobe_left", 2: "lung_lower_lobe_left", 3: "liver", 4: "kidney_right", 5: "spleen"},
    groups="auto",
)


def restated_bbox_match(boxes, arr, cm, *, level="organ", slice_index=None, min_score=0.0):
    """The authors' rule restated: organ bbox from np.nonzero, box IoU, highest wins, else none.

    Ties (which the released code leaves to directory order) go to the higher voxel IoA,
    then the lower label, as the matcher documents.
    """
    members: dict[str, list[int]] = {}
    for label, name in cm.items():
        members.setdefault(cm.group_of(name) if level == "group" else name, []).append(label)
    out = []
    for i, box in enumerate(np.asarray(boxes, dtype=float)):
        plane = arr if slice_index is None else arr[int(np.broadcast_to(slice_index, len(boxes))[i])]
        nd = plane.ndim
        lo, hi = box[:nd], box[nd:]
        # voxel centres inside the box, for the tie rule
        grids = np.meshgrid(*[np.arange(s) + 0.5 for s in plane.shape], indexing="ij")
        inside = np.ones(plane.shape, dtype=bool)
        for k in range(nd):  # box axis k (x, y, z) is array axis nd - 1 - k
            c = grids[nd - 1 - k]
            inside &= (lo[k] <= c) & (c < hi[k])
        scored = []
        for unit, labels in members.items():
            where = np.nonzero(np.isin(plane, labels))
            if where[0].size == 0:
                continue
            olo = [float(where[nd - 1 - k].min()) for k in range(nd)]
            ohi = [float(where[nd - 1 - k].max()) + 1 for k in range(nd)]
            inter = np.prod([max(0.0, min(hi[k], ohi[k]) - max(lo[k], olo[k])) for k in range(nd)])
            union = np.prod(hi - lo) + np.prod(np.subtract(ohi, olo)) - inter
            iou = inter / union if union > 0 else 0.0
            n_in = int(inside.sum())
            ioa = int((inside & np.isin(plane, labels)).sum()) / n_in if n_in else 0.0
            if iou > 0:
                scored.append((iou, ioa, -min(labels), unit))
        scored.sort(reverse=True)
        best = scored[0] if scored and scored[0][0] >= min_score else None
        out.append(([s[3] for s in scored], {s[3]: s[0] for s in scored},
                    None if best is None else best[3]))
    return out


def assert_same(got, want) -> None:
    assert len(got) == len(want)
    for m, (order, scores, organ) in zip(got, want, strict=True):
        assert [c.organ for c in m.candidates] == order
        for c in m.candidates:
            assert c.bbox_iou == pytest.approx(scores[c.organ], abs=1e-12)
            assert c.score("bbox_iou") == c.bbox_iou
        assert m.organ == organ
        assert m.outcome is (MatchOutcome.UNMATCHED if organ is None else MatchOutcome.INSIDE)
        assert m.criterion is Criterion.BBOX_IOU


@st.composite
def maps_and_boxes(draw, ndim: int):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(int(s) for s in rng.integers(2, 10, size=ndim))
    if draw(st.booleans()):  # uniform noise: every organ spans the image, scores tie
        arr = rng.integers(0, 6, size=shape).astype(np.uint8)
    else:  # a few rectangles and specks
        arr = np.zeros(shape, dtype=np.uint8)
        for _ in range(int(rng.integers(0, 5))):
            sl = []
            for s in shape:
                a = int(rng.integers(0, s))
                sl.append(slice(a, int(rng.integers(a + 1, s + 1))))
            arr[tuple(sl)] = rng.integers(1, 6)
        arr.reshape(-1)[rng.integers(0, arr.size, size=3)] = rng.integers(0, 6, size=3)
    n = int(rng.integers(0, 5))
    ext = np.array(shape[::-1], dtype=float)
    a = rng.integers(0, 2 * ext + 1, size=(n, ndim)) / 2
    b = a + rng.integers(0, 2 * ext + 1, size=(n, ndim)) / 2
    return arr, np.concatenate([a, np.minimum(b, ext)], axis=1).reshape(n, 2 * ndim)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([2, 3]), st.data(), st.sampled_from(["organ", "group"]),
       st.sampled_from([None, 0.0, 0.2]))
def test_bbox_iou_matches_restatement_on_random_maps(ndim, data, level, min_score) -> None:
    arr, boxes = data.draw(maps_and_boxes(ndim))
    m = BoxOrganMatcher(CM, criterion="bbox_iou", adjacent_mm=None, level=level, min_score=min_score)
    got = m.match(boxes, arr)
    assert_same(got, restated_bbox_match(boxes, arr, CM, level=level, min_score=min_score or 0.0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_bbox_iou_slice_mode_matches_restatement(data) -> None:
    arr, boxes3 = data.draw(maps_and_boxes(3))
    boxes = boxes3[:, [0, 1, 3, 4]]
    slices = np.arange(len(boxes)) % arr.shape[0]
    got = BoxOrganMatcher(CM, criterion="bbox_iou", adjacent_mm=None).match(boxes, arr, slice_index=slices)
    assert_same(got, restated_bbox_match(boxes, arr, CM, slice_index=slices))


def test_bbox_iou_on_the_phantom_matches_restatement_3d_and_key_slice() -> None:
    ph = make_phantom()
    m = BoxOrganMatcher(ph.class_map, criterion="bbox_iou", adjacent_mm=None)
    assert_same(m.match(ph.lesion_boxes, ph.labels), restated_bbox_match(ph.lesion_boxes, ph.labels, ph.class_map))
    # 2D boxes on each lesion's key (centre) slice
    b = ph.lesion_boxes
    key = ((b[:, 2] + b[:, 5]) // 2).astype(np.int64)
    boxes2 = b[:, [0, 1, 3, 4]]
    got = m.match(boxes2, ph.labels, slice_index=key)
    assert_same(got, restated_bbox_match(boxes2, ph.labels, ph.class_map, slice_index=key))
    assert [x.organ for x in got] != [None] * len(got)


def gallbladder_case() -> tuple[ClassMap, np.ndarray, list[float]]:
    """A C-shaped gallbladder whose opening holds liver tissue, with a small lesion in that tissue."""
    cm = ClassMap({1: "gallbladder", 2: "liver"})
    arr = np.zeros((80, 80), dtype=np.uint8)
    arr[5:75, 5:75] = 2  # liver
    arr[30:50, 30:50] = 1  # gallbladder outline ...
    arr[34:46, 34:50] = 2  # ... opened into a C by liver tissue
    return cm, arr, [38.0, 38.0, 42.0, 42.0]  # lesion inside the C, all liver voxels


def test_gallbladder_case_bbox_iou_versus_default_ioa() -> None:
    cm, arr, box = gallbladder_case()
    by_code = BoxOrganMatcher(cm, criterion="bbox_iou", adjacent_mm=None).match([box], arr)[0]
    by_default = BoxOrganMatcher(cm).match([box], arr)[0]
    assert (by_code.organ, by_code.outcome) == ("gallbladder", MatchOutcome.INSIDE)
    assert by_code.score == pytest.approx(16 / 400)  # lesion area over the gallbladder's box
    gb = by_code.candidates[0]
    assert gb.intersection == 0 and gb.ioa == 0.0  # not one gallbladder voxel in the box
    assert (by_default.organ, by_default.outcome, by_default.score) == ("liver", MatchOutcome.INSIDE, 1.0)
    # the paper's words (voxel IoU) also give the liver here
    assert BoxOrganMatcher(cm, criterion="iou").match([box], arr)[0].organ == "liver"


def test_bbox_iou_adjacent_fallback_measures_voxels_not_boxes() -> None:
    cm, arr, box = gallbladder_case()
    arr = np.where(arr == 2, 0, arr).astype(np.uint8)  # no liver: the box sits in the empty C
    m = BoxOrganMatcher(cm, criterion="bbox_iou", min_score=0.5, adjacent_mm=10.0).match([box], arr)[0]
    assert m.outcome is MatchOutcome.ADJACENT and m.organ == "gallbladder"
    assert m.distance_mm == pytest.approx(4.5)  # box edge 38 to the centre (33.5) of row 33
    none = BoxOrganMatcher(cm, criterion="bbox_iou", adjacent_mm=None).match([[0, 0, 2, 2]], arr)[0]
    assert none.outcome is MatchOutcome.UNMATCHED and none.candidates == ()


def test_bbox_iou_score_only_when_computed() -> None:
    cm, arr, box = gallbladder_case()
    c = BoxOrganMatcher(cm).match([box], arr)[0].candidates[0]
    assert c.bbox_iou is None
    with pytest.raises(DataFormatError, match="bbox_iou"):
        c.score("bbox_iou")
    round_trip = BoxOrganMatcher(cm, criterion="bbox_iou").match([box], arr)[0]
    assert type(round_trip).from_json(round_trip.to_json()) == round_trip
    assert Candidate.from_json(c.to_json()) == c
