from __future__ import annotations

import importlib.util
from pathlib import Path


def test_bench_audit_quick(capsys) -> None:
    path = Path(__file__).parents[2] / "benchmarks" / "bench_audit.py"
    spec = importlib.util.spec_from_file_location("bench_audit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick"])
    assert result["lesions"] > 0 and result["lesions_per_s"] > 0
    assert {"speedup_vs_naive", "deeplesion_minutes_estimate", "audit_s", "naive_s"} <= set(result)
    assert '"benchmark": "audit"' in capsys.readouterr().out
