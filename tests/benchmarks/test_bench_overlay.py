"""Smoke test: benchmarks/bench_overlay.py --quick --cold runs and prints the documented JSON keys."""

from __future__ import annotations

import importlib
import json


def _load():
    return importlib.import_module("bench_overlay")  # benchmarks/ is on sys.path (conftest)


def test_bench_overlay_quick(capsys) -> None:
    bench = _load()
    assert bench.main(["--quick", "--images", "8", "--cold"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {
        "meta",
        "results",
        "speedup_vs_pil_rgba",
        "cpu_speedup_vs_pil_rgba",
        "target_speedup",
        "meets_target_inplace",
        "meets_target_copy",
        "stroke_pixel_iou_vs_pil",
        "cold_first_call",
    }
    assert (
        result["meta"]["quick"] is True and result["meta"]["images"] == 8 and result["meta"]["cpu"]
    )
    timing = {"median_ms", "min_ms", "max_ms", "repeats"}
    for name in (
        "pil_rgba_composite",
        "pil_draw_opaque",
        "copy_numpy",
        "copy_torch",
        "ours_numpy_inplace",
        "ours_numpy_copy",
        "ours_torch_uint8_inplace",
        "ours_torch_uint8_copy",
        "ours_torch_ops_inplace",
    ):
        assert timing <= set(result["results"][name]), name
    assert all(v > 0 for v in result["speedup_vs_pil_rgba"].values())
    assert set(result["cpu_speedup_vs_pil_rgba"]) == set(result["speedup_vs_pil_rgba"]) - {
        "ours_torch_ops_inplace"
    }
    # the same strokes: our pixels and PIL's mostly coincide
    assert result["stroke_pixel_iou_vs_pil"] > 0.5
    # the fresh process imported the overlay module and compiled the kernel in its first call
    cold = result["cold_first_call"]
    assert set(cold) == {"import_s", "first_call_s", "first_call_cpu_s", "target_s", "meets_target"}
    assert cold["import_s"] > 0 and cold["first_call_s"] > 0 and cold["target_s"] == 2.0
