"""Smoke test: the device-kernel benchmark runs on the CPU and reports every kernel and target."""

from __future__ import annotations

import importlib
import json

import pytest


def test_bench_device_kernels_quick_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module("bench_device_kernels")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--device", "cpu", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert set(printed["label_histogram"]["ms"]) == {"read_max", "ours", "bincount"}
    assert "target_within_4x_read" in printed["label_histogram"]
    assert set(printed["box_iou"]) == {"50"}
    assert set(printed["box_iou"]["50"]["ms"]) == {"fill", "ours", "torchvision_formulation"}
    assert printed["overlay"]["ms"]["ours_inplace"]["median"] > 0
    assert printed["overlay"]["ours_over_full_blend"] > 0
