"""Smoke test: the attention KL benchmark runs with --quick and reports every mode."""

from __future__ import annotations

import importlib
import json
import math

import pytest


def _load():
    return importlib.import_module("bench_attention_kl")  # benchmarks/ is on sys.path (conftest)


def test_bench_attention_kl_quick(capsys: pytest.CaptureFixture[str]) -> None:
    module = _load()
    result = module.main(["--quick", "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "attention_kl" and printed["shape"] == [2, 4, 8, 64]
    assert set(printed["results"]) == {"fp32", "bf16"}
    for res in printed["results"].values():
        assert set(res["time_ms"]) == {
            "read",
            "log",
            "naive",
            "fused",
            "fused_dense_target",
            "mean_then_kl",
        }
        assert all(
            v["median"] > 0 and v["q1"] <= v["median"] <= v["q3"] for v in res["time_ms"].values()
        )
        assert {"fused_over_log", "naive_over_fused", "fused_over_read"} <= set(res["ratio"])
        assert set(res["targets_met"]) == {
            "fused_within_1.5x_log",
            "fused_at_least_5x_faster_than_naive",
            "fused_extra_memory_at_most_1.5x",
        }
        assert res["extra_peak_memory_x_attention"] is None  # skipped by --quick
        assert (
            math.isfinite(res["max_abs_diff_fused_vs_naive"])
            and res["max_abs_diff_fused_vs_naive"] < 1e-2
        )


def test_memory_probe_reports_the_gradient() -> None:
    # In-process probe on a small tensor: the fused step allocates at least the gradient.
    module = _load()
    import torch

    res = module.probe_memory("fused", [2, 2, 8, 64], torch.float32, torch.device("cpu"))
    assert res["attention_bytes"] == 2 * 2 * 8 * 64 * 4
    assert res["extra_bytes"] >= 0
