from __future__ import annotations

import importlib


def test_bench_match_quick(capsys) -> None:
    module = importlib.import_module("bench_match")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--quick", "--repeats", "1"])
    assert set(result["cases"]) == {"lesions_3d", "lesions_2d", "random_3d_n100"}
    for case in result["cases"].values():
        assert {"overlap", "match", "naive", "match_over_overlap", "naive_over_match"} <= set(case)
        assert case["match"]["median_ms"] > 0 and sum(case["outcomes"].values()) == case["n_boxes"]
    assert result["cases"]["lesions_3d"]["outcomes"] == {"inside": 6, "adjacent": 3, "unmatched": 1}
    assert '"benchmark": "match"' in capsys.readouterr().out
