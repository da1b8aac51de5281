from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.anatomy import BoxOrganMatcher, ClassMap
from medcurric.errors import DataFormatError, InvalidOptionError
from medcurric.io import LabelMap
from medcurric.review.audit import (
    DEFAULT_PERTURBATIONS,
    AuditResult,
    AuditRow,
    Perturbation,
    audit_matching,
    format_audit,
    perturb_labels,
)
from medcurric.testing import make_phantom


def _edge_voxels(lab: np.ndarray) -> list[tuple[int, ...]]:
    out = []
    for idx in itertools.product(*(range(n) for n in lab.shape)):
        for axis in range(lab.ndim):
            for step in (-1, 1):
                j = list(idx)
                j[axis] += step
                if 0 <= j[axis] < lab.shape[axis] and lab[tuple(j)] != lab[idx]:
                    out.append(idx)
                    break
            else:
                continue
            break
    return out


label_maps = st.integers(0, 2**32 - 1).map(
    lambda s: np.random.default_rng(s).choice([0, 0, 1, 2], size=(7, 8)).astype(np.uint8)
)


@settings(max_examples=25, deadline=None)
@given(label_maps, st.sampled_from([0.5, 1.0, 1.5, 2.5]), st.sampled_from([(1.0, 1.0), (2.0, 0.7)]))
def test_erosion_matches_brute_force(lab, k, spacing) -> None:
    out = perturb_labels(lab, Perturbation("erode", k), spacing=spacing)
    edges = np.array(_edge_voxels(lab), dtype=float).reshape(-1, 2)
    expected = lab.copy()
    for idx in itertools.product(range(lab.shape[0]), range(lab.shape[1])):
        if lab[idx] == 0 or not len(edges):
            continue
        d = np.sqrt((((edges - np.array(idx)) * np.array(spacing)) ** 2).sum(axis=1)).min()
        if d < k:
            expected[idx] = 0
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=25, deadline=None)
@given(label_maps, st.sampled_from([1.0, 2.0, 3.5]))
def test_dilation_assigns_a_nearest_organ_within_reach(lab, k) -> None:
    spacing = (1.0, 1.5)
    out = perturb_labels(lab, Perturbation("dilate", k), spacing=spacing)
    organ = np.argwhere(lab != 0).astype(float)
    assert np.all(out[lab != 0] == lab[lab != 0])  # organs never shrink or change
    for idx in map(tuple, np.argwhere(lab == 0)):
        if not len(organ):
            assert out[idx] == 0
            continue
        d = np.sqrt((((organ - np.array(idx)) * np.array(spacing)) ** 2).sum(axis=1))
        if d.min() > k + 1e-9:
            assert out[idx] == 0
        else:
            nearest = {
                int(lab[tuple(organ[i].astype(int))])
                for i in np.flatnonzero(np.isclose(d, d.min()))
            }
            assert int(out[idx]) in nearest


def test_shift_moves_by_whole_voxels_and_fills_background() -> None:
    lab = np.arange(1, 13, dtype=np.uint8).reshape(3, 4)
    out = perturb_labels(lab, Perturbation("shift", 2.0), spacing=(1.0, 1.0), direction=(0.0, 1.0))
    np.testing.assert_array_equal(
        out, np.concatenate([np.zeros((3, 2), np.uint8), lab[:, :2]], axis=1)
    )
    up = perturb_labels(lab, Perturbation("shift", 2.0), spacing=(2.0, 1.0), direction=(-1.0, 0.0))
    np.testing.assert_array_equal(up, np.concatenate([lab[1:], np.zeros((1, 4), np.uint8)]))


def test_swap_and_drop() -> None:
    cm = ClassMap.totalsegmentator()
    left, right, liver = (
        cm.label_of("kidney_left"),
        cm.label_of("kidney_right"),
        cm.label_of("liver"),
    )
    lab = np.array([[left, right, liver, 0]], dtype=np.uint8)
    swapped = perturb_labels(lab, Perturbation("swap_lr"), spacing=(1.0, 1.0), class_map=cm)
    assert swapped.tolist() == [[right, left, liver, 0]]
    with pytest.raises(DataFormatError, match="class_map"):
        perturb_labels(lab, Perturbation("swap_lr"), spacing=(1.0, 1.0))
    big = np.zeros((20, 20), dtype=np.uint8)
    big[:10] = liver  # 200 px of 1 mm² = 2 cm²
    big[15, 15] = left  # 0.01 cm²
    dropped = perturb_labels(big, Perturbation("drop_small", 1.0), spacing=(1.0, 1.0))
    assert (dropped == left).sum() == 0 and (dropped == liver).sum() == 200


def test_perturbation_validation() -> None:
    with pytest.raises(InvalidOptionError, match="Did you mean 'erode'"):
        Perturbation("erdoe", 1.0)
    with pytest.raises(DataFormatError):
        Perturbation("shift", -1.0)
    assert Perturbation.from_json(Perturbation("dilate", 2).to_json()) == Perturbation(
        "dilate", 2.0
    )


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_audit_baseline_equals_full_map_match(phantom, mode) -> None:
    matcher = BoxOrganMatcher(phantom.class_map)
    lesions = phantom.lesions if mode == "3d" else phantom.key_slice_lesions
    result = audit_matching(
        [(phantom.label_map(), lesions)], matcher, [Perturbation("erode", 0.0)], progress=False
    )
    slices = None if mode == "3d" else phantom.key_slices
    full = matcher.match(phantom.boxes(mode), phantom.label_map(), slice_index=slices)
    assert [(r.organ, r.outcome) for r in result.rows] == [(m.organ, m.outcome.value) for m in full]
    # a zero-size perturbation changes nothing
    assert not any(r.host_changed or r.outcome_changed or r.seed_changed for r in result.rows)


def test_audit_is_deterministic_and_aggregates_correctly(phantom) -> None:
    matcher = BoxOrganMatcher(phantom.class_map)
    case = [(phantom.label_map(), phantom.lesions)]
    a = audit_matching(case, matcher, seed=1, progress=False)
    b = audit_matching(case, matcher, seed=1, progress=False)
    assert [r.to_dict() for r in a.rows] == [r.to_dict() for r in b.rows]
    assert len(a.rows) == len(phantom.lesions) * len(DEFAULT_PERTURBATIONS)
    # swapping left and right must move every lateral host to its partner
    lateral = [
        r
        for r in a.rows
        if r.kind == "swap_lr" and r.organ and ("left" in r.organ or "right" in r.organ)
    ]
    assert lateral and all(r.host_changed for r in lateral)
    for s in a.summary():
        rows = [
            r
            for r in a.rows
            if r.perturbation == s["perturbation"]
            and (s["organ"] == "all" or (r.organ or "(unmatched)") == s["organ"])
        ]
        assert s["n"] == len(rows)
        assert s["host_changed"] == pytest.approx(sum(r.host_changed for r in rows) / len(rows))
    assert "host changes from size" in a.to_markdown()
    assert a.lesions_per_second > 0


def test_adjacent_lesion_flips_under_dilation() -> None:
    cm = ClassMap.from_list(["background", "liver"])
    lab = np.zeros((40, 40), dtype=np.uint8)
    lab[:, :20] = 1  # liver: x < 20
    lm = LabelMap(lab, cm, spacing=(1.0, 1.0))
    from medcurric.io import LesionRecord

    lesion = LesionRecord(
        id="edge", image="x", box=(23.0, 10.0, 27.0, 14.0)
    )  # 3 mm right of the liver
    matcher = BoxOrganMatcher(cm, adjacent_mm=5.0)
    res = audit_matching(
        [(lm, [lesion])],
        matcher,
        [Perturbation("dilate", 2.0), Perturbation("dilate", 8.0), Perturbation("erode", 4.0)],
        progress=False,
    )
    by = {r.perturbation: r for r in res.rows}
    assert by["dilate 2 mm"].outcome == "adjacent" and by["dilate 2 mm"].new_outcome == "adjacent"
    assert by["dilate 8 mm"].new_outcome == "inside" and by["dilate 8 mm"].outcome_changed
    assert by["erode 4 mm"].new_outcome == "unmatched"


@pytest.mark.parametrize(
    "pert", [Perturbation("shift", 8.0), Perturbation("swap_lr"), Perturbation("drop_small", 50.0)]
)
def test_seed_changes_agree_with_rebuilding_seeds_on_the_perturbed_volume(phantom, pert) -> None:
    """The audit's crop + derived-extents shortcut against the pipeline run on a perturbed whole map."""
    from medcurric.review.audit import _direction, _organ_sizes
    from medcurric.seeds.pipeline import build_seeds

    lm = phantom.label_map()
    matcher = BoxOrganMatcher(phantom.class_map)
    res = audit_matching([(lm, phantom.lesions)], matcher, [pert], seed=5, progress=False)
    before = build_seeds(phantom.lesions, lm, matcher=matcher)
    sizes = _organ_sizes(lm.array, lm.spacing)
    for rec, row, old in zip(phantom.lesions, res.rows, before, strict=True):
        arr = perturb_labels(
            lm.array,
            pert,
            spacing=lm.spacing,
            class_map=lm.class_map,
            direction=_direction(rec.id, 5, 3, False),
            organ_sizes=sizes,
        )
        (new,) = build_seeds([rec], lm.replace(array=arr), matcher=matcher)
        assert row.new_organ == new.organ, rec.id
        assert row.seed_changed == (new.text != old.text), (rec.id, old.text, new.text)


def test_audit_refuses_bbox_iou_whose_organ_boxes_a_crop_would_clip() -> None:
    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.errors import InvalidOptionError
    from medcurric.review import audit_matching

    ph = make_phantom()
    matcher = BoxOrganMatcher(ph.class_map, criterion="bbox_iou")
    with pytest.raises(InvalidOptionError, match="bbox_iou"):
        audit_matching([(ph.label_map(), ph.key_slice_lesions)], matcher)


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_audit_csv_cells_never_start_a_formula(phantom, tmp_path, start) -> None:
    import csv
    import dataclasses

    evil = start + 'HYPERLINK("http://x","click")'
    lesions = [dataclasses.replace(r, id=evil + r.id) for r in phantom.key_slice_lesions[:2]]
    result = audit_matching(
        [(phantom.label_map(), lesions)],
        BoxOrganMatcher(phantom.class_map),
        [Perturbation("erode", 0.0)],
        progress=False,
    )
    paths = result.write(tmp_path / "audit")
    with paths["csv"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["lesion_id"] for r in rows] == ["'" + lesion.id for lesion in lesions]
    for row in rows:  # numbers stay numbers, every text cell is safe
        assert not any(v.startswith(("=", "+", "@", "\t", "\r")) for v in row.values())


def _row(lesion: str, perturbation: Perturbation, organ: str | None, changed: bool) -> AuditRow:
    new = "spleen" if changed else organ
    return AuditRow(
        lesion_id=lesion, perturbation=perturbation.name, kind=perturbation.kind, size=perturbation.size,
        organ=organ, outcome="inside" if organ else "unmatched", new_organ=new,
        new_outcome="inside" if new else "unmatched", host_changed=changed, outcome_changed=False,
        seed_changed=changed,
    )


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_format_audit_prints_one_trust_row_per_organ_and_one_row_per_perturbation() -> None:
    perturbations = (Perturbation("erode", 1.0), Perturbation("erode", 2.0), Perturbation("swap_lr"))
    # Which (lesion, perturbation) pairs change host, written out by hand.
    organs = {"liver-a": "liver", "liver-b": "liver", "kidney": "kidney_left", "fat": None}
    changed = {("liver-b", "erode 2 mm"), ("kidney", "erode 1 mm"), ("kidney", "erode 2 mm"), ("kidney", "swap_lr")}
    rows = [_row(lesion, p, organ, (lesion, p.name) in changed) for lesion, organ in organs.items() for p in perturbations]
    result = AuditResult(rows=rows, perturbations=perturbations, seconds=1.0, num_lesions=4)
    text = format_audit(result, tolerance=0.05)
    lines = text.splitlines()
    assert lines[0] == "Audited 4 lesions under 3 perturbations."
    header = lines.index("organ        lesions  trusted  erode  swap_lr")
    assert set(lines[header + 1]) == {"-", " "}
    trust = [_cells(line) for line in lines[header + 2 : header + 5]]
    assert trust == [
        ["(unmatched)", "1", "yes", "never", "never"],
        ["kidney_left", "1", "no", "1 mm", "breaks"],
        ["liver", "2", "yes", "2 mm", "never"],
    ]
    start = next(i for i, line in enumerate(lines) if line.startswith("perturbation"))
    assert _cells(lines[start]) == ["perturbation", "lesions", "host", "outcome", "seed"]
    table = {cells[0]: cells[1:] for cells in map(_cells, lines[start + 2 :])}
    # Each rate counted again from the hand-written set.
    for p in perturbations:
        share = sum((lesion, p.name) in changed for lesion in organs) / len(organs)
        assert table[p.name] == ["4", f"{share:.0%}", "0%", f"{share:.0%}"]
    # The trust rows agree with AuditResult.trust().
    for t in result.trust(0.05):
        row = next(r for r in trust if r[0] == t["organ"])
        assert row[2] == ("yes" if t["trusted"] else "no")


def test_audit_cli_prints_the_tables(tmp_path, capsys) -> None:
    from medcurric.cli import main

    assert main(["audit", "--phantom", "--out", str(tmp_path), "--perturbations", "erode:2,swap_lr"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Audited 10 lesions under 2 perturbations.")
    assert re.search(r"^organ\s+lesions\s+trusted\s+erode\s+swap_lr$", out, re.M)
    assert re.search(r"^swap_lr\s+10\s+\d+%", out, re.M)


def test_the_plot_draws_tex_like_organ_names_literally(phantom, tmp_path) -> None:
    """Organ names come from label files: ``$...$`` in a legend must not reach mathtext."""
    import dataclasses

    a = audit_matching(
        [(phantom.label_map(), phantom.lesions[:2])], BoxOrganMatcher(phantom.class_map),
        seed=1, progress=False,
    )
    hostile = [
        dataclasses.replace(r, organ=r"$\undefinedmacro{x}^$ " + r.organ) if r.organ else r
        for r in a.rows
    ]
    out = dataclasses.replace(a, rows=hostile).plot(str(tmp_path / "audit.png"))
    assert (tmp_path / "audit.png").stat().st_size > 1000 and out.endswith("audit.png")
