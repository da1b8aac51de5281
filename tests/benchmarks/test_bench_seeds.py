from __future__ import annotations

import importlib.util
from pathlib import Path


def test_bench_seeds_quick(capsys):
    path = Path(__file__).parents[2] / "benchmarks" / "bench_seeds.py"
    spec = importlib.util.spec_from_file_location("bench_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
        "speedup_vs_naive",
        "host_agreement_inside",
        "inside_lesions",
    ):
        assert key in result
    assert result["lesions"] == 20
    assert result["host_agreement_inside"] == result["inside_lesions"] > 0
    assert capsys.readouterr().out.strip().startswith("{")
