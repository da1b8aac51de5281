from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcurric.anatomy import BoxOrganMatcher
from medcurric.cli import main
from medcurric.io import write_nifti
from medcurric.seeds import rejects_path
from medcurric.testing import make_phantom


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


def test_phantom_workers_give_identical_output(tmp_path, capsys):
    a, b = tmp_path / "w1.jsonl", tmp_path / "w2.jsonl"
    assert main(["seeds", "--phantom", "--phantom-cases", "3", "--out", str(a)]) == 0
    table = capsys.readouterr().out
    assert (
        main(["seeds", "--phantom", "--phantom-cases", "3", "--out", str(b), "--workers", "2"]) == 0
    )
    assert a.read_text() == b.read_text()
    rows = [json.loads(x) for x in _lines(a)]
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert "liver" in table and "(uncertain)" in table and "all" in table
    # --level organ (the library's default): the lung mass on the fissure lies next to a lobe
    assert table.splitlines()[-1].split()[1:] == ["18", "9", "3", "30"]


def test_rerun_skips_written_ids(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    main(["seeds", "--phantom", "--phantom-cases", "1", "--out", str(out)])
    first = _lines(out)
    main(["seeds", "--phantom", "--phantom-cases", "2", "--out", str(out)])
    second = _lines(out)
    assert second[: len(first)] == first and len(second) == 2 * len(first)
    main(["seeds", "--phantom", "--phantom-cases", "2", "--out", str(out)])
    assert _lines(out) == second
    assert "0 new seed(s)" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_file(tmp_path):
    clean, killed = tmp_path / "clean.jsonl", tmp_path / "killed.jsonl"
    # 24 cases (240 seeds, a few seconds) so the kill lands mid-run even on a fast machine
    args = [sys.executable, "-m", "medcurric.cli.seeds", "--phantom", "--phantom-cases", "24"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*args, "--out", str(clean)], check=True, capture_output=True, env=env)
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(_lines(killed)) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)  # freeze it where it is, then kill it there
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _lines(killed)
    assert 0 < len(partial) < len(_lines(clean)), "the run finished before it could be killed"
    # every line written before the kill is complete JSON, a prefix of the clean run
    complete = [x for x in partial if x.endswith("}")]
    assert complete == _lines(clean)[: len(complete)]
    subprocess.run([*args, "--out", str(killed)], check=True, capture_output=True, env=env)
    assert killed.read_text() == clean.read_text()


def _dl_store(path: Path, canonical: np.ndarray, spacing):
    """Store a canonical [z, y, x] array the way DeepLesion's DL_save_nifti.py does."""
    sz, sy, sx = spacing
    v = canonical[::-1].transpose(1, 2, 0).copy()  # V[row, col, k], k runs inferior
    t = np.array([[0, -sy, 0, 0], [-sx, 0, 0, 0], [0, 0, -sz, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(v, t), str(path))


def _dl_csv(path: Path, ph, start: int):
    nz = ph.labels.shape[0]
    rows = [
        "File_name,Key_slice_index,Bounding_boxes,Coarse_lesion_type,Spacing_mm_px_,Slice_range,Train_Val_Test\n"
    ]
    for r in ph.key_slice_lesions:
        key = start + (nz - 1 - r.slice_index)  # slice numbers run inferior in DeepLesion files
        box = ", ".join(str(v) for v in r.box)
        rows.append(
            f'000001_01_01_{key:03d}.png,{key},"{box}",-1,"3, 3, 5","{start}, {start + nz - 1}",1\n'
        )
    rows.append('000009_01_01_005.png,5,"1, 1, 5, 5",-1,"3, 3, 5","1, 9",1\n')  # no mask for it
    path.write_text("".join(rows))


@pytest.mark.parametrize("slices_only", [False, True])
def test_deeplesion_masks_and_rejects(tmp_path, capsys, slices_only):
    ph = make_phantom()
    masks = tmp_path / "masks"
    masks.mkdir()
    start = 11
    _dl_store(
        masks / f"000001_01_01_{start:03d}-{start + ph.labels.shape[0] - 1:03d}.nii",
        ph.labels,
        ph.spacing,
    )
    csv = tmp_path / "DL_info.csv"
    _dl_csv(csv, ph, start)
    out = tmp_path / "seeds.jsonl"
    cmd = [
        "seeds",
        "--detections",
        str(csv),
        "--format",
        "deeplesion",
        "--masks",
        str(masks),
        "--out",
        str(out),
    ]
    assert main(cmd + (["--slices-only"] if slices_only else [])) == 0
    seeds = [json.loads(x) for x in _lines(out)]
    expected = BoxOrganMatcher().match_records(ph.key_slice_lesions, ph.label_map())  # same defaults
    assert [(s["organ"], s["outcome"]) for s in seeds] == [
        (m.organ, m.outcome.value) for m in expected
    ]
    assert [s["slice_index"] for s in seeds] == [r.slice_index for r in ph.key_slice_lesions]
    rejects = [json.loads(x) for x in _lines(rejects_path(out))]
    assert [r["id"] for r in rejects] == ["000009_01_01_005#0"] and "no mask" in rejects[0][
        "reason"
    ]
    if slices_only:
        assert all(s["location"]["vertical"] is None for s in seeds)
    else:
        assert any(s["location"]["vertical"] in ("upper", "lower") for s in seeds)


def test_csv_bad_record_is_rejected_and_the_run_continues(tmp_path, capsys):
    ph = make_phantom()
    masks = tmp_path / "masks" / "ct"
    masks.mkdir(parents=True)
    write_nifti(
        ph.labels, masks / "case1.nii.gz", affine=ph.affine, label_names=dict(ph.class_map.items())
    )
    rows = ["id,image,x1,y1,x2,y2,slice_index,label\n"]
    for r in ph.key_slice_lesions[:3]:
        rows.append(
            f"{r.id},ct/case1.nii.gz,{r.box[0]},{r.box[1]},{r.box[2]},{r.box[3]},{r.slice_index},cyst\n"
        )
    rows.append("bad,ct/case1.nii.gz,500,500,600,600,3,cyst\n")  # outside the image
    rows.append("evil,../../etc/passwd,1,1,2,2,3,cyst\n")  # leaves the mask root
    csv = tmp_path / "boxes.csv"
    csv.write_text("".join(rows))
    out = tmp_path / "s.jsonl"
    assert (
        main(
            [
                "seeds",
                "--detections",
                str(csv),
                "--format",
                "csv",
                "--masks",
                str(tmp_path / "masks"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    seeds = [json.loads(x) for x in _lines(out)]
    assert [s["id"] for s in seeds] == [r.id for r in ph.key_slice_lesions[:3]]
    assert all("cyst" in s["text"] for s in seeds)
    rej = {r["id"]: r for r in map(json.loads, _lines(rejects_path(out)))}
    assert set(rej) == {"bad", "evil"}
    assert rej["bad"]["error"] == "InvalidBoxError"
    assert "leaves" in rej["evil"]["reason"] or "absolute" in rej["evil"]["reason"]
    # a rerun retries the rejects but does not duplicate them
    main(
        [
            "seeds",
            "--detections",
            str(csv),
            "--format",
            "csv",
            "--masks",
            str(tmp_path / "masks"),
            "--out",
            str(out),
        ]
    )
    assert len(_lines(rejects_path(out))) == 2 and len(_lines(out)) == 3


def test_bad_options_fail_early(tmp_path, capsys):
    assert (
        main(["seeds", "--phantom", "--out", str(tmp_path / "x.jsonl"), "--criterion", "iuo"]) == 1
    )
    assert "did you mean" in capsys.readouterr().err.lower()
    assert main(["seeds", "--out", str(tmp_path / "x.jsonl")]) == 1
    assert not (tmp_path / "x.jsonl").exists() or not _lines(tmp_path / "x.jsonl")


def test_coco_with_per_class_folders_and_png_masks(tmp_path):
    from PIL import Image

    ph = make_phantom()
    ct = tmp_path / "masks" / "ct" / "a"
    ct.mkdir(parents=True)
    for name in ("liver", "spleen", "kidney_left"):
        write_nifti(
            (ph.labels == ph.class_map.label_of(name)).astype(np.uint8),
            ct / f"{name}.nii.gz",
            affine=ph.affine,
        )
    cxr = tmp_path / "masks" / "cxr" / "b"
    cxr.mkdir(parents=True)
    heart = np.zeros((100, 100), np.uint8)
    heart[40:80, 30:70] = 255
    Image.fromarray(heart).save(cxr / "heart.png")
    liver_key = next(r for r in ph.key_slice_lesions if r.id == "liver-small-key")
    x1, y1, x2, y2 = liver_key.box
    coco = {
        "images": [
            {"id": 1, "file_name": "ct/a.nii.gz", "slice_index": liver_key.slice_index},
            {"id": 2, "file_name": "cxr/b.png", "modality": "CXR", "spacing": [0.5, 0.5]},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1},
            {"id": 2, "image_id": 2, "bbox": [45, 50, 10, 10], "category_id": 2},
            {"id": 3, "image_id": 2, "bbox": [0, 0, 6, 6], "category_id": 2},
        ],
        "categories": [{"id": 1, "name": "hypodense lesion"}, {"id": 2, "name": "nodule"}],
    }
    det = tmp_path / "det.json"
    det.write_text(json.dumps(coco))
    out = tmp_path / "s.jsonl"
    assert (
        main(
            [
                "seeds",
                "--detections",
                str(det),
                "--format",
                "coco",
                "--masks",
                str(tmp_path / "masks"),
                "--out",
                str(out),
                "--adjacent-mm",
                "1",
            ]
        )
        == 0
    )
    a, b, c = (json.loads(x) for x in _lines(out))
    assert (a["organ"], a["outcome"]) == ("liver", "inside") and "hypodense lesion" in a["text"]
    assert (b["organ"], b["outcome"]) == ("heart", "inside") and b["size_mm"] == [5.0, 5.0]
    assert c["outcome"] == "unmatched" and "uncertain" in c["text"]
    assert not _lines(rejects_path(out))


def test_summary_counts_the_whole_file_on_reruns(tmp_path, capsys):
    """The table is kept up while writing; it must equal a re-read of the output file."""
    from medcurric.seeds import summarise

    out = tmp_path / "s.jsonl"
    main(["seeds", "--phantom", "--phantom-cases", "1", "--out", str(out)])
    assert capsys.readouterr().out.strip() == summarise(out).strip()
    lines = _lines(out)
    # an older file: a few lines of another run, one line without an organ, a torn tail
    other = json.loads(lines[0]) | {"id": "other/1", "organ": None, "outcome": "unmatched"}
    out.write_text("\n".join([*lines[:3], json.dumps(other)]) + "\n" + lines[3][:40])
    main(["seeds", "--phantom", "--phantom-cases", "2", "--out", str(out)])
    table = capsys.readouterr().out.strip()
    assert table == summarise(out).strip()
    assert table.splitlines()[-1].split()[-1] == str(len(_lines(out))) == "21"
