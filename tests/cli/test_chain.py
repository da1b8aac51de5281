"""The commands chain: seeds -> generate -> evaluate, and the detection format is told from the file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from medcurric.cli import main
from medcurric.errors import DataFormatError
from medcurric.io import DetectionFormat, detect_detection_format, read_detections


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("chain")
    seeds, samples = d / "seeds.jsonl", d / "s.jsonl"
    assert main(["seeds", "--phantom", "--phantom-cases", "2", "--out", str(seeds)]) == 0
    assert main(["generate", str(seeds), "--backend", "template", "--out", str(samples), "--no-progress"]) == 0
    return seeds, samples


def test_phantom_seeds_then_template_generation_accepts_every_sample(chain):
    seeds, samples = chain
    seed_rows = _rows(seeds)
    assert len(seed_rows) == 20
    assert all(s["image_size"] == [128, 128] for s in seed_rows)  # the Easy prompts' box needs it
    assert {s["lesion_phrase"] for s in seed_rows} >= {"a liver lesion", "a soft-tissue lesion"}
    rows = _rows(samples)
    rejects = samples.with_name("s.rejects.jsonl")
    assert len(rows) == 20 * 6 and _rows(rejects) == []
    easy = [r for r in rows if r["stage"] == "easy"]
    assert easy and all(r["box_norm"] is not None for r in easy)


def test_evaluate_scores_the_library_own_samples(chain, tmp_path, capsys):
    _, samples = chain
    rows = _rows(samples)
    # a model that answers every question right, and one that answers every question "No."
    perfect, wrong = tmp_path / "perfect.jsonl", tmp_path / "wrong.jsonl"
    perfect.write_text("".join(json.dumps({"question_id": r["id"], "text": r["answer"]}) + "\n" for r in rows))
    wrong.write_text("".join(json.dumps({"question_id": r["id"], "text": "No."}) + "\n" for r in rows))
    scores = []
    for preds in (perfect, wrong):
        out = tmp_path / f"{preds.stem}-scores.json"
        cmd = ["evaluate", "--task", "vqa", "--references", str(samples), "--predictions", str(preds),
               "--out", str(out)]
        assert main(cmd) == 0, capsys.readouterr().err
        scores.append(json.loads(out.read_text()))
    best, worst = (s["summary"] for s in scores)
    assert best["n_open"] == 60 and best["n_closed"] == 60 and best["n_missing"] == 0
    assert best["closed_accuracy"] == pytest.approx(1.0) and best["open_exact_match"] == pytest.approx(1.0)
    n_no = sum(r["question_type"] == "closed" and r["answer"].startswith("No") for r in rows)
    assert worst["closed_accuracy"] == pytest.approx(n_no / 60) and worst["open_f1"] == pytest.approx(0.0)


def _write_deeplesion(path: Path) -> None:
    path.write_text(
        "File_name,Key_slice_index,Bounding_boxes,Coarse_lesion_type,Spacing_mm_px_,Image_size\n"
        '000001_01_01_005.png,5,"1, 1, 5, 5",4,"0.8, 0.8, 5",\"512, 512\"\n'
    )


def test_format_is_detected_from_the_file(tmp_path):
    dl, coco, box = tmp_path / "DL_info.csv", tmp_path / "ann.json", tmp_path / "boxes.csv"
    _write_deeplesion(dl)
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    box.write_text("image,x1,y1,x2,y2\nct/a.png,1,1,5,5\n")
    assert [detect_detection_format(p) for p in (dl, coco, box)] == [
        DetectionFormat.DEEPLESION, DetectionFormat.COCO, DetectionFormat.CSV,
    ]
    (record,) = read_detections(dl)  # no format: detected
    assert record.lesion_type == "liver" and record.slice_index is not None


def test_a_nifti_given_as_detections_is_named_not_decoded(tmp_path, capsys):
    nii = tmp_path / "ct.nii.gz"
    header = bytearray(352)
    header[0:4] = (348).to_bytes(4, "little")
    header[344:348] = b"n+1\x00"
    nii.write_bytes(gzip.compress(bytes(header) + bytes(range(256)) * 8))
    raw = tmp_path / "ct.nii"
    raw.write_bytes(bytes(header) + bytes(range(256)) * 8)
    for fmt in (None, "deeplesion", "csv"):
        for path, what in ((nii, "gzip"), (raw, "NIfTI")):
            with pytest.raises(DataFormatError, match=rf"{what}.*not a detection file.*--masks"):
                read_detections(path, fmt)
    masks = tmp_path / "masks"
    masks.mkdir()
    assert main(["seeds", "--detections", str(nii), "--masks", str(masks), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "not a detection file" in err and "UnicodeDecodeError" not in err


def test_a_mismatched_format_suggests_the_likely_one(tmp_path):
    box = tmp_path / "boxes.csv"
    box.write_text("image,x1,y1,x2,y2\nct/a.png,1,1,5,5\n")
    with pytest.raises(DataFormatError, match=r"looks like a csv file, not deeplesion: pass --format csv"):
        read_detections(box, "deeplesion")


def test_the_cli_says_which_format_it_assumed(tmp_path, capsys):
    dl = tmp_path / "DL_info.csv"
    _write_deeplesion(dl)
    masks = tmp_path / "masks"
    masks.mkdir()
    main(["seeds", "--detections", str(dl), "--masks", str(masks), "--out", str(tmp_path / "o.jsonl")])
    assert "as --format deeplesion (detected from the file)" in capsys.readouterr().err
