from __future__ import annotations

import importlib


def test_bench_audit_quick(capsys) -> None:
    module = importlib.import_module("bench_audit")  # benchmarks/ is on sys.path (conftest)
    result = module.main(["--quick"])
    assert result["lesions"] > 0 and result["lesions_per_s"] > 0
    assert {"speedup_vs_naive", "deeplesion_minutes_estimate", "audit_s", "naive_s"} <= set(result)
    assert '"benchmark": "audit"' in capsys.readouterr().out
