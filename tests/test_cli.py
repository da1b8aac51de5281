"""The demo's matching steps (``medcurric match`` is tested in tests/cli/test_match.py)."""

from __future__ import annotations

import json
from pathlib import Path

from medcurric.anatomy import BoxOrganMatcher, OrganMatch
from medcurric.io import LesionRecord
from medcurric.testing import make_phantom


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
