"""``medcurric seeds`` on hostile detection files: one bad record never stops the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medcurric.cli import main
from medcurric.io import RecordError, read_deeplesion, read_detection_csv, write_nifti
from medcurric.seeds import rejects_path, write_seeds
from medcurric.testing import make_phantom, phantom_dataset


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@pytest.fixture
def dataset(tmp_path):
    ph = make_phantom()
    (tmp_path / "masks" / "ct").mkdir(parents=True)
    write_nifti(
        ph.labels,
        tmp_path / "masks" / "ct" / "a.nii.gz",
        affine=ph.affine,
        label_names=dict(ph.class_map.items()),
    )
    return ph


def _coco(tmp_path, ph, bad_image=None, bad_ann=None, bad_cat=None):
    r = ph.key_slice_lesions[0]
    x1, y1, x2, y2 = r.box
    images = [{"id": 1, "file_name": "ct/a.nii.gz", "slice_index": r.slice_index}]
    annotations = [{"id": 1, "image_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1}]
    categories = [{"id": 1, "name": "cyst"}]
    if bad_image:
        images.append(bad_image)
    if bad_cat:
        categories.append(bad_cat)
    annotations.append(bad_ann)
    annotations.append({"id": 9, "image_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]})
    det = tmp_path / "det.json"
    det.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return det


HOSTILE = {
    "nan bbox": {"bad_ann": {"id": 2, "image_id": 1, "bbox": [float("nan"), 1, 2, 2]}},
    "lone surrogate": {
        "bad_cat": {"id": 2, "name": "cyst\ud800"},
        "bad_ann": {"id": 2, "image_id": 1, "bbox": [30, 60, 5, 5], "category_id": 2},
    },
    "5000-character image": {
        "bad_image": {"id": 2, "file_name": "a" * 5000 + ".png"},
        "bad_ann": {"id": 2, "image_id": 2, "bbox": [1, 1, 2, 2]},
    },
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_one_bad_record_is_rejected_and_a_rerun_goes_past_it(tmp_path, dataset, capsys, case):
    det = _coco(tmp_path, dataset, **HOSTILE[case])
    out = tmp_path / "s.jsonl"
    cmd = [
        "seeds",
        "--detections",
        str(det),
        "--format",
        "coco",
        "--masks",
        str(tmp_path / "masks"),
    ]
    assert main([*cmd, "--out", str(out)]) == 0
    assert [s["id"] for s in _lines(out)] == ["ct/a.nii.gz#1", "ct/a.nii.gz#9"]
    (reject,) = _lines(rejects_path(out))
    # the reason names the file and the record
    assert ("det.json" in reject["reason"] and "annotations[1]" in reject["reason"]) or (
        "a" * 100 in reject["reason"] and "masks" in reject["reason"]
    ), reject
    assert len(reject["reason"]) < 1000
    assert "1 reject(s) (1 new" in capsys.readouterr().err
    # a rerun finishes too, and still reports the record that fails
    assert main([*cmd, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "0 new seed(s)" in err and "(2 already there)" in err and "1 reject(s) (0 new" in err
    assert len(_lines(rejects_path(out))) == 1


def test_readers_collect_bad_rows_when_asked(tmp_path):
    dl = tmp_path / "DL_info.csv"
    dl.write_text(
        "File_name,Key_slice_index,Bounding_boxes\n"
        '000001_01_01_109.png,109,"1, 2, 11, 12"\n'
        '000001_01_01_110.png,110,"nan, 2, 11, 12"\n'
        '000001_01_01_111.png,nan,"1, 2, 11, 12"\n'
        '000001_01_01_112.png,112,"1, 2, 11, 12"\n'
    )
    with pytest.raises(ValueError, match=r"line 3|:3"):
        read_deeplesion(dl)
    rejects: list[RecordError] = []
    records = read_deeplesion(dl, rejects=rejects)
    assert [r.id for r in records] == ["000001_01_01_109#0", "000001_01_01_112#0"]
    assert [e.where for e in rejects] == ["line 3", "line 4"]
    assert all(str(dl) in e.reason for e in rejects)


def test_repeated_and_colliding_ids_are_rejected_not_dropped(tmp_path, dataset, capsys):
    """4 lesions in: an explicit id given twice, an automatic id equal to an explicit one."""
    ph = dataset
    rows = ["id,image,x1,y1,x2,y2,slice_index,label\n"]
    box = ",".join(str(v) for v in ph.key_slice_lesions[0].box)
    z = ph.key_slice_lesions[0].slice_index
    rows += [
        f"ct/a.nii.gz#0,ct/a.nii.gz,{box},{z},cyst\n",  # explicit, looks automatic
        f",ct/a.nii.gz,{box},{z},cyst\n",  # automatic ct/a.nii.gz#0: collides
        f"x,ct/a.nii.gz,{box},{z},cyst\n",
        f"x,ct/a.nii.gz,{box},{z},cyst\n",  # explicit id repeated
    ]
    csv = tmp_path / "boxes.csv"
    csv.write_text("".join(rows))
    with pytest.raises(ValueError, match="unique record id"):
        read_detection_csv(csv)
    out = tmp_path / "s.jsonl"
    cmd = ["seeds", "--detections", str(csv), "--format", "csv", "--masks", str(tmp_path / "masks")]
    assert main([*cmd, "--out", str(out)]) == 0
    seeds, rejects = _lines(out), _lines(rejects_path(out))
    assert len(seeds) + len(rejects) == 4 and len(seeds) == 2
    assert all("unique record id" in r["reason"] for r in rejects)
    assert "2 reject(s)" in capsys.readouterr().err


def test_write_seeds_rejects_repeated_ids_of_custom_cases(tmp_path):
    cases = phantom_dataset(1)
    case = cases[0]
    case.records = [*case.records, case.records[0]]  # the same record twice
    run = write_seeds(cases, tmp_path / "s.jsonl", progress=False)
    assert (run.written, run.rejected) == (len(case.records) - 1, 1)
    (reject,) = _lines(run.rejects)
    assert "repeats" in reject["reason"]


def test_a_missing_extra_stops_seeds_with_the_install_line(tmp_path, dataset):
    det = _coco(tmp_path, dataset, bad_ann={"id": 2, "image_id": 1, "bbox": [1, 1, 2, 2]})
    out = tmp_path / "s.jsonl"
    code = (
        "import sys; sys.modules['nibabel'] = None\n"
        "from medcurric.cli import main\n"
        f"sys.exit(main(['seeds', '--detections', {str(det)!r}, '--format', 'coco', "
        f"'--masks', {str(tmp_path / 'masks')!r}, '--out', {str(out)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0, proc.stderr
    assert "pip install 'medcurric[io]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not _lines(rejects_path(out))


def test_a_mask_link_leaving_the_root_is_refused(tmp_path, dataset):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "masks" / "ct" / "a.nii.gz").rename(outside / "secret.nii.gz")
    (tmp_path / "masks" / "ct" / "a.nii.gz").symlink_to(outside / "secret.nii.gz")
    det = _coco(tmp_path, dataset, bad_ann={"id": 2, "image_id": 1, "bbox": [1, 1, 2, 2]})
    out = tmp_path / "s.jsonl"
    cmd = [
        "seeds",
        "--detections",
        str(det),
        "--format",
        "coco",
        "--masks",
        str(tmp_path / "masks"),
    ]
    assert main([*cmd, "--out", str(out)]) == 0
    assert not _lines(out)
    rejects = _lines(rejects_path(out))
    assert len(rejects) == 3 and all("leaves the dataset root" in r["reason"] for r in rejects)


def test_load_dataset_collects_bad_records(tmp_path, dataset):
    from medcurric.io import load_dataset

    det = _coco(tmp_path, dataset, bad_ann={"id": 2, "image_id": 1, "bbox": [1, "x", 2, 2]})
    with pytest.raises(ValueError, match=r"annotations\[1\]"):
        load_dataset(det, tmp_path / "masks", fmt="coco")
    rejects: list[RecordError] = []
    (case,) = load_dataset(det, tmp_path / "masks", fmt="coco", rejects=rejects)
    assert [r.id for r in case.records] == ["ct/a.nii.gz#1", "ct/a.nii.gz#9"]
    assert [e.where for e in rejects] == ["annotations[1]"]


def test_record_rejects_name_the_mask_file(tmp_path, dataset):
    # a box outside the image: the record fails on its own, the reason names the mask
    det = _coco(tmp_path, dataset, bad_ann={"id": 2, "image_id": 1, "bbox": [500, 500, 9, 9]})
    out = tmp_path / "s.jsonl"
    cmd = [
        "seeds",
        "--detections",
        str(det),
        "--format",
        "coco",
        "--masks",
        str(tmp_path / "masks"),
    ]
    assert main([*cmd, "--out", str(out)]) == 0
    (reject,) = _lines(rejects_path(out))
    assert reject["id"] == "ct/a.nii.gz#2" and reject["error"] == "InvalidBoxError"
    assert str(tmp_path / "masks" / "ct" / "a.nii.gz") in reject["reason"]
