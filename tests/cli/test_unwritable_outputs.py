"""Every command refuses an output it cannot write before doing any work, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcurric.cli import main
from medcurric.seeds import write_seeds
from medcurric.testing import phantom_dataset


def _args(command: str, tmp_path: Path, out: Path) -> list[str]:
    if command == "seeds":
        return ["seeds", "--phantom", "--phantom-cases", "1", "--out", str(out / "s.jsonl")]
    if command == "generate":
        seeds = tmp_path / "seeds.jsonl"
        write_seeds(phantom_dataset(1), seeds, progress=False)
        return ["generate", str(seeds), "--no-progress", "--out", str(out / "g.jsonl")]
    if command == "evaluate":
        gt = tmp_path / "test.json"
        item = {"from": "human", "value": "<image>\nIs there a nodule?"}
        gt.write_text(
            json.dumps(
                [
                    {
                        "id": 1,
                        "image": "a.jpg",
                        "answer_type": "CLOSED",
                        "conversations": [item, {"from": "gpt", "value": "yes"}],
                    }
                ]
            )
        )
        ans = tmp_path / "answers.jsonl"
        ans.write_text(json.dumps({"question_id": 1, "text": "yes"}) + "\n")
        return ["evaluate", "--task", "vqa", "--predictions", str(ans), "--references", str(gt),
                "--out", str(out / "scores.json")]  # fmt: skip
    if command == "review":
        samples = tmp_path / "samples.jsonl"
        samples.write_text("")
        return ["review", "--samples", str(samples), "--out", str(out / "review")]
    if command == "audit":
        return ["audit", "--phantom", "--perturbations", "dilate:1", "--out", str(out / "audit")]
    assert command == "demo"
    return ["demo", "--out", str(out / "demo")]


def _file_as_parent(tmp_path: Path) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file, not a folder")
    return blocker / "sub"


def _read_only(tmp_path: Path) -> Path:
    return Path("/proc/medcurric-not-writable")  # writes fail here even for root


@pytest.mark.parametrize("where", [_file_as_parent, _read_only], ids=["file-parent", "read-only"])
@pytest.mark.parametrize("command", ["seeds", "generate", "evaluate", "review", "audit", "demo"])
def test_unwritable_output_is_one_line_and_no_work(tmp_path, capsys, command, where):
    out = where(tmp_path)
    assert main(_args(command, tmp_path, out)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing computed and printed first
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"medcurric {command}: error: Cannot write '{out}")
    if where is _file_as_parent:
        assert "blocker' is a file, not a folder" in lines[0]
