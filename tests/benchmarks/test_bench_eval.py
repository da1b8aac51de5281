"""Smoke test: the eval benchmark runs with --quick and prints the expected keys."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_eval.py"


def test_bench_eval_quick(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_eval", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick"])
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["benchmark"] == "eval" and data["questions"] == 200
    assert set(data["results"]) == {
        "vqa_default",
        "vqa_llava_med",
        "vqa_normalize_only",
        "grounding",
        "grounding_loop",
    }
    for stats in data["results"].values():
        assert stats["median_us"] > 0 and stats["q1_us"] <= stats["q3_us"]
