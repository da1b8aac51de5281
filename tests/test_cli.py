"""``medcurric match`` and ``medcurric demo`` through cli.main and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcurric import cli
from medcurric.anatomy import BoxOrganMatcher, ClassMap, OrganMatch
from medcurric.io import LesionRecord
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


def test_demo_match_steps_write_matches(tmp_path: Path, capsys) -> None:
    """The demo's first two steps (the whole demo runs in tests/test_demo.py)."""
    from medcurric.cli.demo import DemoContext, step_match, step_phantom

    out = tmp_path / "demo"
    out.mkdir()

    def run_steps() -> None:
        ctx = DemoContext(out=out)
        step_phantom(ctx)
        step_match(ctx)

    run_steps()
    assert "liver-small" in capsys.readouterr().out
    lines = (out / "matches.jsonl").read_text().splitlines()
    matches = [OrganMatch.from_json(line) for line in lines]
    lesions = [LesionRecord.from_json(line) for line in (out / "lesions.jsonl").read_text().splitlines()]
    ph = make_phantom()
    assert lesions == list(ph.lesions)
    assert matches == BoxOrganMatcher(ph.class_map).match_records(ph.lesions, ph.label_map())
    # a rerun rewrites the same files
    run_steps()
    capsys.readouterr()
    assert (out / "matches.jsonl").read_text().splitlines() == lines
    assert json.loads(lines[0])["id"] == "liver-small"
