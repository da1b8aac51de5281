"""``medcurric export``: writes every format; refuses an unwritable output before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcurric.cli import build_parser, main

pytest.importorskip("pyarrow")
pytest.importorskip("datasets")


def test_the_command_writes_the_export(on_disk, tmp_path: Path, capsys) -> None:
    out = tmp_path / "export"
    code = main(["export", str(on_disk.jsonl), "--out", str(out), "--images", str(on_disk.image_root),
                 "--formats", "llava", "sharegpt", "--stages", "easy"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{len(on_disk.rejects)} rejected left out" in printed
    records = json.loads((out / "llava_easy.json").read_text())
    assert len(records) == sum(s.stage == "easy" for s in on_disk.samples)
    assert all((out / r["image"]).is_file() for r in records)
    assert not (out / "llava_hard.json").exists() and not (out / "parquet").exists()


def test_help_shows_the_defaults() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["export"]  # type: ignore[union-attr]
    text = sub.format_help()
    assert "(default: reference)" in text and "--image-mode" in text


def test_an_unwritable_output_stops_before_any_work(on_disk, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    code = main(["export", str(on_disk.jsonl), "--out", str(blocker / "sub"), "--images", str(on_disk.image_root)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot write" in err


def test_a_missing_samples_file_is_one_clear_line(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 1
    assert "Expected a samples JSONL file" in capsys.readouterr().err
