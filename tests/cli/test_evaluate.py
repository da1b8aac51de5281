"""``medcurric evaluate`` end to end on small files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcurric.cli import main
from medcurric.eval import load_predictions, load_vqa, score_vqa

GT = [
    {
        "id": 1,
        "image": "a.jpg",
        "answer_type": "CLOSED",
        "conversations": [
            {"from": "human", "value": "<image>\nIs there a nodule?"},
            {"from": "gpt", "value": "yes"},
        ],
    },
    {
        "id": 2,
        "image": "a.jpg",
        "answer_type": "OPEN",
        "conversations": [
            {"from": "human", "value": "<image>\nWhere?"},
            {"from": "gpt", "value": "left lung"},
        ],
    },
    {
        "id": 3,
        "image": "b.jpg",
        "answer_type": "CLOSED",
        "conversations": [
            {"from": "human", "value": "<image>\nIs it normal?"},
            {"from": "gpt", "value": "yes"},
        ],
    },
]
ANSWERS = [
    {"question_id": 1, "text": "Yes, a nodule"},
    {"question_id": 2, "text": "left left"},
    {"question_id": 3, "text": "No, it is {0.__class__} __import__('os')"},
]


@pytest.fixture
def vqa_files(tmp_path: Path) -> tuple[Path, Path]:
    gt = tmp_path / "test.json"
    gt.write_text(json.dumps(GT))
    ans = tmp_path / "answers.jsonl"
    ans.write_text("".join(json.dumps(a) + "\n" for a in ANSWERS))
    return gt, ans


@pytest.mark.parametrize("compat", ["llava-med", "llava-med-2023-08", "default"])
def test_vqa(
    vqa_files: tuple[Path, Path], tmp_path: Path, compat: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, ans = vqa_files
    out = tmp_path / "res" / "vqa.json"
    rc = main(
        [
            "evaluate",
            "--task",
            "vqa",
            "--predictions",
            str(ans),
            "--references",
            str(gt),
            "--compat",
            compat,
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    direct = score_vqa(load_vqa(gt), load_predictions(ans), compat=compat)
    assert data["summary"] == direct.summary()
    assert len(data["questions"]) == 3 and set(data["breakdown"]) == {"organ", "answer_type"}
    printed = capsys.readouterr().out
    assert f"closed_accuracy   {direct.closed_accuracy:.4f}" in printed
    md = out.with_suffix(".md").read_text()
    assert md.startswith(f"# VQA scores ({compat})") and "## By answer_type" in md
    # the first release drops question 3 (says "no", answer "yes") from the closed denominator
    assert data["n_closed_scored"] == (1 if compat == "llava-med-2023-08" else 2)


def test_vqa_errors(
    vqa_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, ans = vqa_files
    rc = main(
        [
            "evaluate",
            "--task",
            "vqa",
            "--predictions",
            str(ans),
            "--references",
            str(gt),
            "--compat",
            "llava-mde",
        ]
    )
    assert rc == 1
    assert "Did you mean 'llava-med'" in capsys.readouterr().err
    rc = main(["evaluate", "--task", "vq", "--predictions", str(ans), "--references", str(gt)])
    assert rc == 1 and "Did you mean 'vqa'" in capsys.readouterr().err
    rc = main(
        [
            "evaluate",
            "--task",
            "vqa",
            "--predictions",
            str(tmp_path / "missing.jsonl"),
            "--references",
            str(gt),
        ]
    )
    assert rc == 1 and "does not exist" in capsys.readouterr().err


def test_report_simple_tokenizer(tmp_path: Path) -> None:
    preds = tmp_path / "gen.jsonl"
    preds.write_text(
        '{"id": "s1", "text": "The heart is normal."}\n{"id": "s2", "text": "No effusion."}\n'
    )
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"s1": "Heart is normal.", "s2": ["No pleural effusion."]}))
    out = tmp_path / "report.json"
    rc = main(
        [
            "evaluate",
            "--task",
            "report",
            "--predictions",
            str(preds),
            "--references",
            str(refs),
            "--metrics",
            "bleu,rouge-l,cider",
            "--tokenizer",
            "simple",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["scores"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert data["summary"]["n"] == 2 and "| BLEU-1 |" in out.with_suffix(".md").read_text()


def test_grounding(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"id": "a", "box_norm": [0, 0, 0.5, 0.5], "stage": "easy", "organ": "liver"})
        + "\n"
        + json.dumps({"id": "b", "box_norm": [0.5, 0.5, 1, 1], "stage": "medium", "organ": "lung"})
        + "\n"
    )
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        json.dumps({"id": "a", "text": "lesion at [0, 0, 0.5, 0.5]"})
        + "\n"
        + json.dumps({"id": "b", "text": "none", "attention": [0, 0, 0, 1]})
        + "\n"
    )
    out = tmp_path / "g.json"
    rc = main(
        [
            "evaluate",
            "--task",
            "grounding",
            "--predictions",
            str(preds),
            "--references",
            str(samples),
            "--grid",
            "2x2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["summary"]["mean_iou"] == 1.0 and data["summary"]["pointing_accuracy"] == 1.0
    stages = {r["stage"]: r for r in data["breakdown"]["stage"]}
    assert stages["easy"]["iou"] == 1.0 and stages["medium"]["mass_in_box"] == 1.0
    assert "## By organ" in out.with_suffix(".md").read_text()
    rc = main(
        [
            "evaluate",
            "--task",
            "grounding",
            "--predictions",
            str(preds),
            "--references",
            str(samples),
            "--grid",
            "2y2",
        ]
    )
    assert rc == 1
