"""Smoke test: the curriculum training benchmark runs its CPU --tiny path with --quick."""

from __future__ import annotations

import importlib
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")


def test_bench_train_curriculum_tiny_quick(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(
        "bench_train_curriculum"
    )  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--tiny", "--quick"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "train_curriculum" and printed["device"] == "cpu (tiny model)"
    assert printed["steps"] == 8
    # The scheduler moved Easy -> Medium on its second check (steps // 4 = 2 steps apart).
    assert printed["switch_step"] == 4
    for stage in ("easy", "medium"):
        entry = printed["stages"][stage]
        for loop in ("curriculum", "plain"):
            assert entry[loop]["steps"] == 4 and entry[loop]["median_s"] > 0
            assert entry[loop]["tokens_per_s"] > 0 and entry[loop]["peak_memory_gib"] is None
        assert entry["overhead"] > -1.0 and entry["render_collate_median_s"] > 0
    assert printed["max_overhead"] == max(
        printed["stages"][s]["overhead"] for s in ("easy", "medium")
    )
    assert printed["within_target"] == (printed["max_overhead"] <= 0.02)
