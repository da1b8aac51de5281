from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medcurric.curriculum import CurriculumScheduler, GapRule

WORKER = Path(__file__).with_name("dist_worker.py")
sys.path.insert(0, str(WORKER.parent))
import dist_worker  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_decide_identically_on_averaged_losses(world: int, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(world), str(free_port()), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    # Every rank made the same decisions.
    for other in results[1:]:
        assert other["decisions"] == results[0]["decisions"]
        assert other["per_domain"] == results[0]["per_domain"]
        assert other["domains"] == results[0]["domains"]
    # ... equal to one process fed the rank-averaged values.
    local = [dist_worker.local_losses(r) for r in range(world)]
    single = CurriculumScheduler(
        stages=("easy", "medium", "hard"), patience=2, min_delta=0.01, gap_rule=GapRule(min_gap=-0.5)
    )
    expected = []
    for i in range(len(local[0])):
        metrics = {
            "loss": sum(curve[i] for curve in local) / world,
            "rationale_loss_easy": sum(1.0 + 0.1 * r for r in range(world)) / world,
            "rationale_loss_medium": sum(1.2 + 0.01 * i * r for r in range(world)) / world,
        }
        expected.append(single.step(metrics).to_dict())
    got = results[0]["decisions"]
    assert [d["stage"] for d in got] == [d["stage"] for d in expected]
    assert [d["reason"] for d in got] == [d["reason"] for d in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["value"] == pytest.approx(e["value"], rel=1e-12, abs=1e-12)
    assert any(d["switched"] for d in got)
    # The ranks disagree locally: at least one rank alone would have switched at another check.
    alone = []
    for r in range(world):
        s = CurriculumScheduler(stages=("easy", "medium", "hard"), patience=2, min_delta=0.01)
        alone.append([i for i, v in enumerate(local[r]) if s.step({"loss": v}).switched])
    assert any(a != [i for i, d in enumerate(expected) if d["switched"]] for a in alone)
