from __future__ import annotations

import importlib


def test_bench_seeds_quick(capsys):
    module = importlib.import_module("bench_seeds")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--quick"])
    for key in (
        "lesions",
        "cases",
        "ours",
        "naive",
        "decompress",
        "ours_lesions_per_s",
        "naive_lesions_per_s",
        "decompress_lesions_per_s",
        "ratio_to_decompress",
        "inflate",
        "inflate_stdlib",
        "inflate_speedup_vs_stdlib",
        "inflater",
        "speedup_vs_naive",
        "host_agreement_inside",
        "inside_lesions",
    ):
        assert key in result
    assert result["lesions"] == 20
    assert result["host_agreement_inside"] == result["inside_lesions"] > 0
    assert capsys.readouterr().out.strip().startswith("{")
