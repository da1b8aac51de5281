"""Smoke tests: the attention capture benchmark runs its CPU --tiny path with --quick, per family."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

RATIOS = {
    f"{mode}_over_sdpa_{what}"
    for mode in ("capture", "eager")
    for what in ("time", "memory", "saved_activations")
}


def _bench() -> Any:
    return importlib.import_module("bench_attention_capture")  # benchmarks/ is on sys.path (conftest)


def _check_family_report(report: dict[str, Any], family: str) -> None:
    assert report["family"] == family and report["device"] == "cpu (tiny model)"
    assert set(report["modes"]) == {"sdpa", "capture", "eager"}
    for mode in report["modes"].values():
        assert mode["oom"] is False and mode["median_s"] > 0 and mode["peak_memory_gib"] is None
        assert mode["saved_activations_mib"] > 0
    assert set(report["ratios"]) == RATIOS
    assert report["ratios"]["capture_over_sdpa_time"] > 0
    assert report["ratios"]["capture_over_sdpa_memory"] is None  # no allocator statistics on CPU
    # The capture keeps the image keys and its rows for backward: a little more than SDPA saves.
    assert report["ratios"]["capture_over_sdpa_saved_activations"] > 1.0
    assert set(report["targets_met"]) == {"capture_within_1.10x_sdpa_time"}
    assert report["image_tokens"] > 0 and report["seq"] > report["image_tokens"] + report["queries"]


def test_bench_attention_capture_tiny_quick(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench().main(["--tiny", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "attention_capture"
    _check_family_report(printed, "llava")
    assert printed["supervised_layers"] == [1, 3]
    assert (printed["batch"], printed["seq"], printed["image_tokens"], printed["queries"]) == (2, 64, 36, 8)


def test_bench_attention_capture_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    result = bench.main(["--device", "cpu", "--size", "tiny", "--family", "all", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "attention_capture"
    assert tuple(printed["families"]) == bench.FAMILIES
    for family, report in printed["families"].items():
        _check_family_report(report, family)
        assert printed["targets_met"][family] == report["targets_met"]
    layers = {family: report["supervised_layers"] for family, report in printed["families"].items()}
    assert layers["gemma3"] == [1, 2]  # a global and a sliding-window layer of the tiny Gemma 3


def test_bench_attention_capture_refuses_a_large_model_on_cpu() -> None:
    with pytest.raises(SystemExit, match="--size 7b is for a GPU"):
        _bench().main(["--device", "cpu", "--size", "7b", "--family", "qwen3_vl"])


def test_bench_attention_capture_without_the_kl(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench().main(["--tiny", "--quick", "--family", "gemma3", "--modes", "sdpa", "capture_no_kl"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert set(result["modes"]) == {"sdpa", "capture_no_kl"}
    assert set(result["ratios"]) == {
        f"capture_no_kl_over_sdpa_{what}" for what in ("time", "memory", "saved_activations")
    }
    assert result["ratios"]["capture_no_kl_over_sdpa_saved_activations"] > 1.0
    assert result["targets_met"] == {"capture_within_1.10x_sdpa_time": None}  # no capture mode run
