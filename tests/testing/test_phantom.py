from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medcurric.anatomy import BoxOrganMatcher, ClassMap, MatchOutcome
from medcurric.errors import DataFormatError, ShapeError
from medcurric.io import LabelMap, LesionRecord
from medcurric.testing import ExpectedHost, Phantom, make_phantom

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def ph() -> Phantom:
    return make_phantom()


def test_deterministic_and_seeded() -> None:
    a, b, c = make_phantom(0), make_phantom(0), make_phantom(1)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels)
    assert a.lesions == b.lesions and a.expected == b.expected
    assert not np.array_equal(a.hu, c.hu) and not np.array_equal(a.labels, c.labels)


def test_arrays_geometry_and_names(ph: Phantom) -> None:
    assert ph.hu.dtype == np.int16 and ph.labels.dtype == np.uint8
    assert ph.hu.shape == ph.labels.shape == ph.shape == (64, 128, 128)
    assert ph.spacing == (5.0, 3.0, 3.0)
    assert ph.class_map == ClassMap.totalsegmentator()
    present = set(np.unique(ph.labels).tolist()) - {0}
    assert present <= set(ph.class_map.labels)
    names = {ph.class_map.name_of(v) for v in present}
    for organ in ("liver", "spleen", "kidney_left", "kidney_right", "aorta", "heart", "vertebrae_L2",
                  "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
                  "lung_middle_lobe_right", "lung_lower_lobe_right"):
        assert organ in names, organ
    # tissue HU: air outside, fat in the body, lung air, dense bone
    assert ph.hu[0, 0, 0] < -900
    lung = np.isin(ph.labels, ph.class_map.member_labels("lung_left"))
    assert np.median(ph.hu[lung]) < -700
    assert np.median(ph.hu[ph.labels == ph.class_map.label_of("vertebrae_L3")]) > 300
    lm = ph.label_map()
    assert isinstance(lm, LabelMap) and lm.spacing == ph.spacing and lm.class_map is ph.class_map
    assert np.array_equal(lm.affine, ph.affine)


def _centroid_ras(ph: Phantom, name: str) -> np.ndarray:
    zz, yy, xx = np.nonzero(ph.labels == ph.class_map.label_of(name))
    vox = np.stack([xx, yy, zz, np.ones_like(xx)]).astype(float)
    return (ph.affine @ vox)[:3].mean(axis=1)


def test_affine_is_ras_with_x_to_patient_left(ph: Phantom) -> None:
    sz, sy, sx = ph.spacing
    assert np.allclose(np.diag(ph.affine)[:3], [-sx, -sy, sz])
    # volume centre at the origin
    d, h, w = ph.shape
    assert np.allclose(ph.affine @ [(w - 1) / 2, (h - 1) / 2, (d - 1) / 2, 1], [0, 0, 0, 1])
    # anatomy in RAS+: the liver is on the patient's right (+x), the spleen on the left (-x),
    # the lungs above the kidneys (+z), the spine behind the aorta (-y), the heart in front of it
    assert _centroid_ras(ph, "liver")[0] > 0 > _centroid_ras(ph, "spleen")[0]
    assert _centroid_ras(ph, "kidney_right")[0] > 0 > _centroid_ras(ph, "kidney_left")[0]
    assert _centroid_ras(ph, "lung_upper_lobe_left")[2] > _centroid_ras(ph, "kidney_left")[2]
    assert _centroid_ras(ph, "vertebrae_L1")[1] < _centroid_ras(ph, "aorta")[1] < _centroid_ras(ph, "heart")[1]
    assert _centroid_ras(ph, "vertebrae_T8")[2] > _centroid_ras(ph, "vertebrae_L5")[2]


def test_lesion_records_and_boxes(ph: Phantom) -> None:
    assert len(ph.lesions) == len(ph.key_slice_lesions) == len(ph.expected) == 10
    assert ph.lesion_boxes.shape == (10, 6) and ph.key_slice_boxes.shape == (10, 4)
    assert ph.boxes("2d").shape == (10, 4)
    with pytest.raises(DataFormatError):
        ph.boxes("4d")
    for r3, r2, b3, b2, z in zip(ph.lesions, ph.key_slice_lesions, ph.lesion_boxes, ph.key_slice_boxes,
                                 ph.key_slices, strict=True):
        assert isinstance(r3, LesionRecord) and r3.ndim == 3 and r2.ndim == 2
        assert r2.id == r3.id + "-key" and r3.id in ph.expected
        assert r3.spacing == ph.spacing and r2.spacing == ph.spacing[1:]
        assert LesionRecord.from_json(r3.to_json()) == r3 and LesionRecord.from_json(r2.to_json()) == r2
        x1, y1, z1, x2, y2, z2 = b3
        assert z1 <= z < z2 and r2.slice_index == z
        assert x1 <= b2[0] < b2[2] <= x2 and y1 <= b2[1] < b2[3] <= y2
        # the lesion's HU fills the voxels around its centre, and its box is tight
        cz, cy, cx = int((z1 + z2) // 2), int((y1 + y2) // 2), int((x1 + x2) // 2)
        assert abs(int(ph.hu[cz, cy, cx]) - r3.extra["hu"]) < 50
        crop = ph.hu[int(z1):int(z2), int(y1):int(y2), int(x1):int(x2)]
        assert crop.size > 0
        assert r3.extra["diameter_mm"] >= 10


def _check(ph: Phantom, level: str, mode: str) -> None:
    matcher = BoxOrganMatcher(ph.class_map, level=level)
    slices = None if mode == "3d" else ph.key_slices
    matches = matcher.match(ph.boxes(mode), ph.labels, slice_index=slices, spacing=ph.spacing)
    for rec, m in zip(ph.lesions, matches, strict=True):
        exp = ph.expected[rec.id]
        if level == "organ":
            assert m.outcome == exp.outcome, (rec.id, m)
            if exp.organs:
                assert m.organ in exp.organs, (rec.id, m)
            else:
                assert m.organ is None
        else:
            assert (m.outcome, m.organ) == (exp.group_outcome, exp.group), (rec.id, m)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("mode", ["3d", "2d"])
@pytest.mark.parametrize("level", ["organ", "group"])
def test_matcher_finds_designed_hosts(seed: int, mode: str, level: str) -> None:
    _check(make_phantom(seed), level, mode)


@pytest.mark.parametrize("shape", [(32, 64, 64), (48, 96, 128)])
def test_designed_hosts_hold_at_other_resolutions(shape) -> None:
    ph = make_phantom(shape=shape)
    assert ph.spacing == pytest.approx((320 / shape[0], 384 / shape[1], 384 / shape[2]))
    _check(ph, "organ", "3d")
    _check(ph, "group", "2d")


def test_designed_outcomes_cover_every_case(ph: Phantom) -> None:
    outcomes = {e.outcome for e in ph.expected.values()}
    assert outcomes == {"inside", "adjacent", "unmatched"}
    assert ph.expected["lung-mass"] == ExpectedHost(
        "adjacent", ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
        "lung_right", "inside")
    assert ph.expected["lung-mass"].organ is None and ph.expected["liver-small"].organ == "liver"
    m = {x.id: x for x in BoxOrganMatcher().match_records(ph.lesions, ph.label_map())}
    assert m["kidney-near"].candidates == () and 0 < m["kidney-near"].distance_mm <= 5.0
    assert 0 < m["liver-edge"].score < 0.5 and m["liver-edge"].distance_mm == 0.0
    assert m["fat"].outcome is MatchOutcome.UNMATCHED
    small, large = (ph.lesions[i] for i in (0, 1))
    assert small.extra["diameter_mm"] < 15 < large.extra["diameter_mm"]


def test_shape_and_spacing_errors() -> None:
    with pytest.raises(ShapeError, match="at least"):
        make_phantom(shape=(16, 32, 32))
    with pytest.raises(ShapeError):
        make_phantom(shape=(64, 128))
    with pytest.raises(ShapeError):
        make_phantom(spacing=(1.0, -1.0, 1.0))
    ph = make_phantom(spacing=(4.0, 3.0, 3.0))
    assert ph.spacing == (4.0, 3.0, 3.0)


def test_readme_example_runs_verbatim(capsys) -> None:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "make_phantom" in b)
    exec(compile(example, str(README), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10
    assert out[0].split()[:3] == ["liver-small", "inside", "liver"]
    assert any(line.startswith("fat unmatched None") for line in out)
