"""The seeds job: ``write_seeds`` against ``build_seeds`` case by case; rejects, resume, workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcurric.anatomy import BoxOrganMatcher
from medcurric.errors import DataFormatError, InvalidOptionError
from medcurric.io import Case, LesionRecord
from medcurric.seeds import (
    SeedReject,
    SeedsRun,
    build_seeds,
    outcome_table,
    read_seeds,
    rejects_path,
    seed_case,
    summarise,
    write_seeds,
)
from medcurric.testing import phantom_dataset


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


def test_write_seeds_equals_build_seeds_per_case(tmp_path: Path) -> None:
    cases = phantom_dataset(2)
    matcher = BoxOrganMatcher(level="group")
    run = write_seeds(cases, tmp_path / "s.jsonl", matcher=matcher, progress=False)
    assert isinstance(run, SeedsRun) and (run.written, run.skipped, run.rejected) == (20, 0, 0)
    want = [s for c in cases for s in build_seeds(c.records, c.label_map, matcher=matcher)]
    assert read_seeds(tmp_path / "s.jsonl") == want
    assert run.table() == summarise(tmp_path / "s.jsonl") == outcome_table(run.counts)
    # a rerun skips every id; two workers write the same file
    again = write_seeds(cases, tmp_path / "s.jsonl", matcher=matcher, progress=False)
    assert (again.written, again.skipped) == (0, 20) and len(_lines(tmp_path / "s.jsonl")) == 20
    write_seeds(cases, tmp_path / "w2.jsonl", matcher=matcher, workers=2, progress=False)
    assert (tmp_path / "w2.jsonl").read_text() == (tmp_path / "s.jsonl").read_text()
    with pytest.raises(InvalidOptionError, match="workers >= 1"):
        write_seeds(cases, tmp_path / "x.jsonl", workers=0)


def test_rejects_missing_masks_and_bad_records(tmp_path: Path) -> None:
    (case,) = phantom_dataset(1)
    bad = LesionRecord(id="bad", image="phantom0", box=(500.0, 500.0, 600.0, 600.0), slice_index=3)
    case.records.append(bad)
    lost = Case(key="missing:x", records=[LesionRecord(id="lost", image="x", box=(1, 1, 2, 2))],
                error="no mask for image 'x'")
    results = seed_case(case)
    assert [type(r).__name__ for r in results] == ["FactualSeed"] * 10 + ["SeedReject"]
    assert results[-1] == SeedReject(bad, "InvalidBoxError", results[-1].reason)
    assert SeedReject.from_dict(json.loads(json.dumps(results[-1].to_dict()))) == results[-1]
    out = tmp_path / "s.jsonl"
    run = write_seeds([case, lost], out, progress=False)
    assert (run.written, run.rejected) == (10, 2) and run.rejects == rejects_path(out)
    rejects = [json.loads(x) for x in _lines(run.rejects)]
    assert [(r["id"], r["error"]) for r in rejects] == [("bad", "InvalidBoxError"), ("lost", "MissingFileError")]
    assert rejects[1]["reason"] == "no mask for image 'x'" and rejects[1]["record"]["id"] == "lost"


def test_read_seeds_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_seeds(phantom_dataset(1), path, progress=False)
    lines = _lines(path)
    path.write_text("\n".join([*lines[:2], json.dumps({"id": "x"}), *lines[2:]]) + "\n")
    with pytest.raises(DataFormatError, match="record 3"):
        read_seeds(path)
