from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image

from medcurric.curriculum import CurriculumScheduler, GapRule, plot_history
from medcurric.curriculum.plot import STAGE_COLOURS
from medcurric.errors import DataFormatError, WrongTypeError


def run() -> CurriculumScheduler:
    sched = CurriculumScheduler(stages=("easy", "medium", "hard"), patience=1, min_delta=0.0, gap_rule=GapRule(min_gap=-1))
    curve = [3.0, 2.5, 2.4, 2.4, 2.4, 2.0, 1.9, 1.9, 1.95, 1.7, 1.6]
    for i, v in enumerate(curve):
        sched.step({"loss": v, "rationale_loss_easy": 1.0 + 0.01 * i, "rationale_loss_medium": 1.2})
    return sched


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def test_png_has_stage_bands_and_curves(tmp_path: Path) -> None:
    sched = run()
    assert [d.stage.value for d in sched.history if d.switched] == ["medium", "hard"]
    out = plot_history(sched, tmp_path / "history.png", title="run")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[0] > 200 and rgb.shape[1] > 300
    colours = {tuple(c) for c in rgb.reshape(-1, 3)[:: 7].tolist()}
    assert len(colours) > 50  # not blank
    # Every stage band is painted (alpha 0.8 over white).
    for stage in ("easy", "medium", "hard"):
        band = np.array(hex_rgb(STAGE_COLOURS[stage])) * 0.8 + 255 * 0.2
        dist = np.abs(rgb.astype(float) - band).sum(axis=-1)
        assert (dist < 6).sum() > 500, stage


def test_axes_and_legend_say_what_is_drawn(tmp_path: Path) -> None:
    svg = plot_history(run(), tmp_path / "run.svg", metrics=["loss"]).read_text()
    # matplotlib writes each text element's string as an SVG comment
    for text in ("scheduler check (call to step())", "<!-- loss -->", "switch decided (plateau)",
                 "next stage starts", "stage: easy", "stage: medium", "stage: hard"):
        assert text in svg, text
    assert "<!-- check -->" not in svg and "<!-- value -->" not in svg
    sched = CurriculumScheduler(patience=0, min_delta=0.0)
    for epoch, v in enumerate((2.0, 2.0, 1.0)):
        sched.step({"loss": v}, epoch=epoch)
    svg = plot_history(sched, tmp_path / "epochs.svg").read_text()
    assert "epoch (one scheduler check each)" in svg and "<!-- loss -->" in svg


def test_history_from_a_saved_state_and_errors(tmp_path: Path) -> None:
    state = json.loads(json.dumps(run().state_dict()))
    out = plot_history(state["history"], tmp_path / "from_state.svg", metrics=["loss"])
    assert out.read_text().lstrip().startswith("<?xml")
    with pytest.raises(DataFormatError):
        plot_history([], tmp_path / "empty.png")
    with pytest.raises(WrongTypeError):
        plot_history(42, tmp_path / "bad.png")
