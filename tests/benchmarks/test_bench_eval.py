"""Smoke test: the eval benchmark runs with --quick and prints the expected keys."""

from __future__ import annotations

import importlib
import json

import pytest


def test_bench_eval_quick(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("bench_eval")  # benchmarks/ is on sys.path (conftest)
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
