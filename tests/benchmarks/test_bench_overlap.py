"""Smoke test: benchmarks/bench_overlap.py --quick runs and prints the documented JSON keys."""

from __future__ import annotations

import importlib
import json

import pytest


def _load():
    return importlib.import_module("bench_overlap")  # benchmarks/ is on sys.path (conftest)


@pytest.mark.parametrize("part", ["overlap_3d", "histogram", "overlap_2d", "box_iou"])
def test_bench_overlap_quick(part: str, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    assert bench.main(["--quick", "--only", part]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"meta", "compile", part}
    assert result["meta"]["quick"] is True and result["meta"]["cpu"]
    assert all(v >= 0 for k, v in result["compile"].items() if k.endswith("_s"))
    body = result[part]
    timing = {"median_ms", "min_ms", "max_ms", "repeats"}
    if part == "histogram":
        for kind in ("realistic", "iid_noise"):
            assert {"read_once_max", "ours", "np_bincount", "ratio_ours_vs_max"} <= set(body[kind])
            assert timing <= set(body[kind]["ours"])
    else:
        runs = body["runs"]
        assert runs, "no runs"
        for run in runs.values():
            ratios = [k for k in run if k.startswith(("speedup", "ratio"))]
            assert ratios and all(run[k] > 0 for k in ratios)
            timed = [v for v in run.values() if isinstance(v, dict)]
            assert timed and all(timing <= set(v) for v in timed)
