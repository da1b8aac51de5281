"""Smoke test: the Ray scaling benchmark runs its --quick configuration (no timed assertion)."""

from __future__ import annotations

import importlib
import json

import pytest

pytest.importorskip("ray", reason="bench_scale needs ray: pip install 'medcurric[ray]'")


def test_bench_scale_quick(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("bench_scale")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--quick"])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads(json.dumps(result))
    assert result["seeds"]["identical_files"] and result["generate"]["identical_lines"]
    assert result["generate_model_bound"]["identical_lines"]
    assert result["seeds"]["items"] == 40 and result["generate"]["items"] == 240
    assert result["generate_model_bound"]["items"] == 12  # 2 seeds, 6 samples each
    assert {r["stage"] for r in result["scaling"]} == {
        "segmentation (assumed)", "seeds", "generate (template)", "generate (model stand-in, 20 ms)"
    }
    assert "| seeds |" in captured.err and "lines/s" in captured.err
