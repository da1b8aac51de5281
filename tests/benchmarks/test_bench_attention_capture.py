"""Smoke test: the attention capture benchmark runs its CPU --tiny path with --quick."""

from __future__ import annotations

import importlib
import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")


def test_bench_attention_capture_tiny_quick(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(
        "bench_attention_capture"
    )  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--tiny", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "attention_capture" and printed["device"] == "cpu (tiny model)"
    assert set(printed["modes"]) == {"sdpa", "capture", "eager"}
    for mode in printed["modes"].values():
        assert mode["oom"] is False and mode["median_s"] > 0 and mode["peak_memory_gib"] is None
    assert set(printed["ratios"]) == {
        "capture_over_sdpa_time",
        "capture_over_sdpa_memory",
        "eager_over_sdpa_time",
        "eager_over_sdpa_memory",
    }
    assert printed["ratios"]["capture_over_sdpa_time"] > 0
    assert printed["supervised_layers"] == [1, 3]
