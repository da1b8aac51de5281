"""``medcurric match`` through cli.main and as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcurric import cli
from medcurric.anatomy import BoxOrganMatcher, ClassMap, OrganMatch
from medcurric.testing import make_phantom


def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines()[2:]:
        if not line.strip():
            break
        parts = line.split()
        rows[parts[0]] = parts
    return rows


def test_match_phantom_table(capsys) -> None:
    assert cli.main(["match", "--phantom"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["lesion", "box", "outcome", "organ", "score", "runner-up"]
    rows = _rows(out)
    ph = make_phantom()
    assert set(rows) == {r.id for r in ph.lesions}
    for lesion_id, exp in ph.expected.items():
        assert exp.outcome in rows[lesion_id]
        if exp.organ:
            assert exp.organ in rows[lesion_id]
    assert "6 inside, 3 adjacent, 1 unmatched" in out


def test_match_defaults_to_phantom_and_options(capsys) -> None:
    assert cli.main(["match", "--level", "group", "--mode", "2d", "--json"]) == 0
    matches = [OrganMatch.from_json(line) for line in capsys.readouterr().out.splitlines()]
    ph = make_phantom()
    assert [m.id for m in matches] == [r.id for r in ph.key_slice_lesions]
    assert {m.id: m.organ for m in matches}["lung-mass-key"] == "lung_right"
    assert cli.main(["match", "--criterion", "iou", "--adjacent-mm", "-1", "--json"]) == 0
    matches = [OrganMatch.from_json(line) for line in capsys.readouterr().out.splitlines()]
    assert all(m.criterion == "iou" and m.outcome != "adjacent" for m in matches)


def test_match_files(tmp_path: Path, capsys) -> None:
    vol = np.zeros((4, 10, 10), dtype=np.uint8)
    vol[:, :5] = 5  # liver in the top half of every slice
    np.save(tmp_path / "labels.npy", vol)
    (tmp_path / "boxes.csv").write_text("id,x1,y1,z1,x2,y2,z2\nA,0,0,0,4,4,2\nB,0,6,0,4,10,2\n")
    args = ["match", "--labels", str(tmp_path / "labels.npy"), "--boxes", str(tmp_path / "boxes.csv"),
            "--spacing", "3", "1", "1"]
    assert cli.main([*args, "--json"]) == 0
    got = [OrganMatch.from_json(line) for line in capsys.readouterr().out.splitlines()]
    want = BoxOrganMatcher(ClassMap.totalsegmentator()).match(
        [[0, 0, 0, 4, 4, 2], [0, 6, 0, 4, 10, 2]], vol, spacing=(3, 1, 1), ids=["A", "B"])
    assert got == want and got[1].distance_mm == pytest.approx(1.5)
    assert cli.main(args) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["A"][-3:] == ["liver", "1.000", "-"] and "adjacent" in rows["B"]
    # 2D boxes with a per-row slice_index and a custom class map
    (tmp_path / "b2.csv").write_text("x1,y1,x2,y2,slice_index\n0,0,4,4,1\n")
    ClassMap({5: "tumour_bed"}).write_json(tmp_path / "cm.json")
    assert cli.main(["match", "--labels", str(tmp_path / "labels.npy"), "--boxes", str(tmp_path / "b2.csv"),
                     "--class-map", str(tmp_path / "cm.json"), "--json"]) == 0
    (m,) = [OrganMatch.from_json(line) for line in capsys.readouterr().out.splitlines()]
    assert m.organ == "tumour_bed" and m.id == "box-0"


def test_match_errors(tmp_path: Path, capsys) -> None:
    assert cli.main(["match", "--labels", str(tmp_path / "x.npy")]) == 1
    assert "together" in capsys.readouterr().err
    (tmp_path / "b.csv").write_text("a,b\n1,2\n")
    np.save(tmp_path / "l.npy", np.zeros((4, 4), np.uint8))
    assert cli.main(["match", "--labels", str(tmp_path / "l.npy"), "--boxes", str(tmp_path / "b.csv")]) == 1
    assert "expected a header" in capsys.readouterr().err
    (tmp_path / "b.csv").write_text("x1,y1,x2,y2\n1,2,x,4\n")
    assert cli.main(["match", "--labels", str(tmp_path / "l.npy"), "--boxes", str(tmp_path / "b.csv")]) == 1
    assert "b.csv:2" in capsys.readouterr().err
    assert cli.main(["match", "--labels", str(tmp_path / "no.npy"), "--boxes", str(tmp_path / "b.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["match", "--criterion", "ioaa"]) == 1
    assert "Did you mean 'ioa'" in capsys.readouterr().err
    assert cli.main(["match", "--ignore", "livr"]) == 1
    assert "Did you mean 'liver'" in capsys.readouterr().err


def test_match_subprocess() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    proc = subprocess.run([sys.executable, "-m", "medcurric", "match", "--phantom"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "liver-small" in proc.stdout and "unmatched" in proc.stdout


def _boxes_csv(path: Path, records) -> Path:
    cols = "id,x1,y1,z1,x2,y2,z2" if len(records[0].box) == 6 else "id,x1,y1,x2,y2,slice_index"
    rows = [cols]
    for r in records:
        tail = [] if len(r.box) == 6 else [r.slice_index]
        rows.append(",".join(str(v) for v in [r.id, *r.box, *tail]))
    path.write_text("\n".join(rows) + "\n")
    return path


def _json_matches(capsys) -> list[OrganMatch]:
    return [OrganMatch.from_json(line) for line in capsys.readouterr().out.splitlines()]


def test_match_reads_a_nifti_and_its_spacing(tmp_path: Path, capsys) -> None:
    """A NIfTI on disk matches like the phantom in memory, with the file's 5 x 3 x 3 mm spacing."""
    from medcurric.io import write_nifti

    ph = make_phantom()
    write_nifti(ph.labels, tmp_path / "ct.nii.gz", affine=ph.affine, label_names=dict(ph.class_map.items()))
    boxes = _boxes_csv(tmp_path / "boxes.csv", ph.lesions)
    assert cli.main(["match", "--labels", str(tmp_path / "ct.nii.gz"), "--boxes", str(boxes), "--json"]) == 0
    got = _json_matches(capsys)
    assert got == BoxOrganMatcher().match_records(ph.lesions, ph.label_map())
    adjacent = [m for m in got if m.outcome == "adjacent"]
    assert adjacent and all(m.distance_mm is not None for m in adjacent)
    # 1 mm voxels would have given other distances
    one_mm = BoxOrganMatcher(ph.class_map).match(ph.lesion_boxes, ph.labels, spacing=(1, 1, 1))
    assert [m.distance_mm for m in got] != [m.distance_mm for m in one_mm]


def test_match_reads_a_totalsegmentator_folder(tmp_path: Path, capsys) -> None:
    from medcurric.io import write_nifti

    ph = make_phantom()
    folder = tmp_path / "seg"
    folder.mkdir()
    for label in np.unique(ph.labels)[1:]:
        name = ph.class_map.name_of(int(label))
        write_nifti((ph.labels == label).astype(np.uint8), folder / f"{name}.nii.gz", affine=ph.affine)
    boxes = _boxes_csv(tmp_path / "boxes.csv", ph.key_slice_lesions)
    assert cli.main(["match", "--labels", str(folder), "--boxes", str(boxes), "--json"]) == 0
    assert _json_matches(capsys) == BoxOrganMatcher().match_records(ph.key_slice_lesions, ph.label_map())


def test_match_reads_a_png_folder_and_refuses_mm_without_spacing(tmp_path: Path, capsys) -> None:
    from PIL import Image

    ph = make_phantom()
    key = next(r for r in ph.key_slice_lesions if r.id == "liver-small-key")
    plane = ph.labels[key.slice_index]
    folder = tmp_path / "png"
    folder.mkdir()
    for label in np.unique(plane)[1:]:
        mask = np.where(plane == label, 255, 0).astype(np.uint8)
        Image.fromarray(mask).save(folder / f"{ph.class_map.name_of(int(label))}.png")
    (tmp_path / "b.csv").write_text("id,x1,y1,x2,y2\nA,{},{},{},{}\nB,0,0,4,4\n".format(*key.box))
    args = ["match", "--labels", str(folder), "--boxes", str(tmp_path / "b.csv"), "--json"]
    # no spacing in PNG files: an explicit millimetre distance is refused, not taken as pixels
    assert cli.main([*args, "--adjacent-mm", "5"]) == 1
    err = capsys.readouterr().err
    assert "--adjacent-mm 5 needs the label map's spacing" in err and "--spacing" in err
    # by default the 'adjacent' rule is off, with a note
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    got = [OrganMatch.from_json(line) for line in captured.out.splitlines()]
    assert "'adjacent' rule is off" in captured.err
    assert got[0].organ == "liver" and got[0].outcome == "inside" and got[1].outcome != "adjacent"
    want = BoxOrganMatcher(ph.class_map, adjacent_mm=None).match(
        [key.box, [0, 0, 4, 4]], np.where(np.isin(plane, np.unique(plane)[1:]), plane, 0), ids=["A", "B"]
    )
    assert [(m.organ, m.outcome) for m in got] == [(m.organ, m.outcome) for m in want]
    # --spacing gives it
    assert cli.main([*args, "--spacing", "3", "3", "--adjacent-mm", "5"]) == 0
    assert all(m.distance_mm is None or m.distance_mm >= 0 for m in _json_matches(capsys))


def test_match_reads_a_dicom_seg_with_its_spacing(tmp_path: Path, capsys) -> None:
    from pydicom.data import get_testdata_file

    from medcurric.io import read_dicom_seg

    path = get_testdata_file("liver_1frame.dcm", download=False)
    if not path:
        pytest.skip("pydicom test file liver_1frame.dcm is not installed")
    seg = read_dicom_seg(path)  # the file's own segment numbers, as the command reads it
    liver = seg.array[0] == seg.class_map.label_of("liver")
    ys, xs = np.nonzero(liver)
    row = int(np.median(ys))
    right = int(xs[ys == row].max())
    boxes = [[right + 4, row - 2, right + 8, row + 2], [470, 10, 480, 20]]  # 3 px beside the liver; far off
    (tmp_path / "b.csv").write_text("x1,y1,x2,y2,slice_index\n" + "".join(f"{a},{b},{c},{d},0\n" for a, b, c, d in boxes))
    assert cli.main(["match", "--labels", str(path), "--boxes", str(tmp_path / "b.csv"), "--json"]) == 0
    got = _json_matches(capsys)
    want = BoxOrganMatcher().match(boxes, seg, slice_index=0, ids=["box-0", "box-1"])
    assert got == want and seg.spacing is not None and seg.spacing[-1] < 0.9
    assert got[0].outcome == "adjacent" and got[1].outcome == "unmatched"
    # millimetres from the file's 0.81 mm pixels, not pixels taken as millimetres
    pixels = BoxOrganMatcher().match(boxes, seg.replace(spacing=(1.0, 1.0, 1.0)), slice_index=0)
    assert got[0].distance_mm == pytest.approx(pixels[0].distance_mm * seg.spacing[-1], rel=0.05)


def test_match_npy_refuses_adjacent_mm_without_spacing(tmp_path: Path, capsys) -> None:
    vol = np.zeros((4, 10, 10), dtype=np.uint8)
    vol[:, :5] = 5
    np.save(tmp_path / "labels.npy", vol)
    (tmp_path / "boxes.csv").write_text("id,x1,y1,z1,x2,y2,z2\nB,0,6,0,4,10,2\n")
    args = ["match", "--labels", str(tmp_path / "labels.npy"), "--boxes", str(tmp_path / "boxes.csv"), "--json"]
    assert cli.main([*args, "--adjacent-mm", "3"]) == 1
    assert "spacing" in capsys.readouterr().err
    assert cli.main([*args, "--adjacent-mm", "-1"]) == 0
    (m,) = _json_matches(capsys)
    assert m.outcome == "unmatched"
