from __future__ import annotations

import importlib


def test_bench_images_quick(capsys):
    module = importlib.import_module("bench_images")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--quick"])
    for key in ("ct_pil_decode", "ct_load_rgb", "ct_data_url", "rgb_data_url", "rgb_pass_through_baseline"):
        assert result[key]["repeats"] == 2
    assert result["size"] == 64 and result["ct_window_overhead"] > 0
    assert capsys.readouterr().out.strip().startswith("{")
