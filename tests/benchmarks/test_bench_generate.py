from __future__ import annotations

import importlib
import json


def test_bench_generate_quick(capsys) -> None:
    module = importlib.import_module("bench_generate")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--quick"])
    for key in (
        "sequential",
        "concurrency_1",
        "concurrency_8",
        "concurrency_64",
        "raw_asyncio_concurrency_64",
    ):
        assert result[key]["req_per_s"] > 0 and result[key]["client_cpu_ms_per_req"] > 0
    assert result["concurrency_64"]["ideal_req_per_s"] == 320.0
    assert 0 < result["concurrency_64"]["efficiency"]
    assert (
        result["generator_concurrency_64"]["rerun_skipped"]
        == result["generator_concurrency_64"]["samples"]
    )
    assert {"target_met", "speedup_64_vs_sequential", "latency_s"} <= set(result)
    assert result["ratio_64_vs_raw_asyncio"] == round(
        result["concurrency_64"]["req_per_s"] / result["raw_asyncio_concurrency_64"]["req_per_s"], 4
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["benchmark"] == "generate"
