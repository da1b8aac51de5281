from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plain_loop.py"


def load_example():
    spec = importlib.util.spec_from_file_location("plain_loop_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_plain_loop_example_runs_through_easy_and_medium(tmp_path: Path) -> None:
    example = load_example()
    plot = tmp_path / "history.png"
    # A coarse plateau rule (0.5 nats) so that the short run reaches Medium and trains with the
    # attention loss there.
    summary = example.main(
        ["--steps", "15", "--check-every", "3", "--patience", "0", "--min-delta", "0.5", "--quiet", "--plot", str(plot)]
    )
    assert summary["checks"] == 5
    assert summary["final_stage"] == "medium" and len(summary["switch_checks"]) == 1
    switch_step = (summary["switch_checks"][0] + 1) * 3
    stages = summary["stages_per_step"]
    assert stages == ["easy"] * switch_step + ["medium"] * (15 - switch_step)
    assert summary["last_loss"] < summary["first_loss"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
