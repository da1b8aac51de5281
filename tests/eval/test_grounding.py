"""Grounding metrics against shapely geometry and brute-force loops."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box as sbox

from medcurric.cot import CoTSample
from medcurric.errors import (
    DataFormatError,
    InvalidBoxError,
    MissingDependencyError,
    ShapeError,
    WrongTypeError,
)
from medcurric.eval import (
    GroundingScores,
    attention_in_box,
    box_patch_weights,
    parse_boxes,
    plot_attention,
    pointing_game,
    rationale_iou,
    score_grounding,
)


@st.composite
def norm_boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    # coordinates on a 1e-9 grid: a box 1e-273 wide is no box, and its area underflows in the
    # shapely reference while the per-axis overlaps do not
    coord = st.floats(0, 1, allow_subnormal=False).map(lambda v: round(v, 9))
    xs = sorted(draw(st.lists(coord, min_size=2, max_size=2)))
    ys = sorted(draw(st.lists(coord, min_size=2, max_size=2)))
    return (xs[0], ys[0], xs[1], ys[1])


def test_parse_boxes() -> None:
    text = (
        "Reasoning: the lesion at [0.1234, 0.2000, 0.3500, 0.4100] is hepatic; compare "
        "(0.5,0.5,0.6,0.7), [1e-1, 2E-1, .3, 0.4], an inverted [0.5, 0.5, 0.1, 0.9], "
        "out of range [0.1, 0.1, 1.5, 0.2], three numbers [0.1, 0.2, 0.3] and text [a, b, c, d]."
    )
    assert parse_boxes(text) == [
        (0.1234, 0.2, 0.35, 0.41),
        (0.5, 0.5, 0.6, 0.7),
        (0.1, 0.2, 0.3, 0.4),
    ]
    assert parse_boxes(text, normalized=False)[-1] == (0.1, 0.1, 1.5, 0.2)
    assert parse_boxes(text, max_boxes=1) == [(0.1234, 0.2, 0.35, 0.41)]
    assert parse_boxes("") == []
    assert len(parse_boxes("[0, 0, 1, 1]" * 1000)) == 64
    with pytest.raises(WrongTypeError):
        parse_boxes(None)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(norm_boxes(), norm_boxes())
def test_rationale_iou_matches_shapely(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    text = "box [{:.6f}, {:.6f}, {:.6f}, {:.6f}] here".format(*a)
    cited = parse_boxes(text)[0]
    sa, sb = sbox(*cited), sbox(*b)
    expected = sa.intersection(sb).area / sa.union(sb).area if sa.union(sb).area > 0 else 0.0
    assert rationale_iou(text, b) == pytest.approx(expected, abs=1e-9)


def test_rationale_iou_pick() -> None:
    text = "[0, 0, 1, 1] then [0, 0, 0.5, 1] then [0.5, 0, 1, 1]"
    truth = (0, 0, 0.5, 1)
    assert rationale_iou(text, truth) == 0.5
    assert rationale_iou(text, truth, pick="best") == 1.0
    assert rationale_iou(text, truth, pick="last") == 0.0
    assert rationale_iou("nothing", truth) is None
    with pytest.raises(InvalidBoxError):
        rationale_iou(text, (0.5, 0, 0.1, 1))
    with pytest.raises(ShapeError):
        rationale_iou(text, (0, 0, 1))


@settings(max_examples=100, deadline=None)
@given(norm_boxes(), st.integers(1, 7), st.integers(1, 7), st.sampled_from([0.0, 0.5, 1.0]))
def test_patch_weights_match_shapely_and_loops(
    b: tuple[float, ...], gh: int, gw: int, tol: float
) -> None:
    frac = box_patch_weights(b, (gh, gw), tolerance=tol).reshape(gh, gw)
    centre = box_patch_weights(b, (gh, gw), coverage="centre", tolerance=tol).reshape(gh, gw)
    anyw = box_patch_weights(b, (gh, gw), coverage="any", tolerance=tol).reshape(gh, gw)
    grown = sbox(b[0] - tol / gw, b[1] - tol / gh, b[2] + tol / gw, b[3] + tol / gh)
    gx1, gy1, gx2, gy2 = grown.bounds
    for r in range(gh):
        for c in range(gw):
            cell = sbox(c / gw, r / gh, (c + 1) / gw, (r + 1) / gh)
            inter = cell.intersection(grown).area
            assert frac[r, c] == pytest.approx(inter / cell.area, abs=1e-9)
            cx, cy = (c + 0.5) / gw, (r + 0.5) / gh
            assert centre[r, c] == float(gx1 <= cx < gx2 and gy1 <= cy < gy2)
            assert anyw[r, c] == float(inter > 0)


def _loop_mass(att: np.ndarray, b: tuple[float, ...], gh: int, gw: int) -> float:
    total = 0.0
    for k, a in enumerate(att):
        r, c = divmod(k, gw)
        cell = sbox(c / gw, r / gh, (c + 1) / gw, (r + 1) / gh)
        total += a * cell.intersection(sbox(*b)).area / cell.area
    return total / att.sum()


@settings(max_examples=100, deadline=None)
@given(norm_boxes(), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_attention_mass_and_pointing_vs_loop(
    b: tuple[float, ...], gh: int, gw: int, seed: int
) -> None:
    att = np.random.default_rng(seed).random(gh * gw)
    assert attention_in_box(att, b, (gh, gw)) == pytest.approx(_loop_mass(att, b, gh, gw))
    k = int(np.argmax(att))
    r, c = divmod(k, gw)
    for tol in (0.0, 1.0):
        grown = sbox(b[0] - tol / gw, b[1] - tol / gh, b[2] + tol / gw, b[3] + tol / gh)
        cell = sbox(c / gw, r / gh, (c + 1) / gw, (r + 1) / gh)
        expected = float(cell.intersection(grown).area > 0)
        assert pointing_game(att, b, (gh, gw), tolerance=tol) == expected
    assert attention_in_box(att, (0, 0, 1, 1), (gh, gw)) == pytest.approx(1.0)
    assert pointing_game(att, (0, 0, 1, 1), (gh, gw)) == 1.0


def test_batched_torch_and_grid_inputs() -> None:
    att = torch.zeros(3, 16)
    att[0, 0] = 1.0  # top-left patch
    att[1, 15] = 1.0  # bottom-right patch
    att[2] = 1.0  # uniform
    box = [0.0, 0.0, 0.5, 0.5]
    mass = attention_in_box(att, box, 4)
    assert isinstance(mass, np.ndarray)
    assert mass.tolist() == [1.0, 0.0, 0.25]
    hits = pointing_game(att, [box, box, [0.5, 0.5, 1, 1]], (4, 4))
    assert hits.tolist() == [1.0, 0.0, 0.0]  # uniform: ties go to the first patch
    assert attention_in_box(att[0].reshape(4, 4).numpy(), box, (4, 4)) == 1.0
    assert math.isnan(attention_in_box(np.zeros(16), box, 4))
    assert math.isnan(pointing_game(np.zeros(16), box, 4))


def test_shape_and_value_errors() -> None:
    with pytest.raises(ShapeError, match="576"):
        attention_in_box(np.ones(577), (0, 0, 1, 1), 24)
    with pytest.raises(ShapeError, match=r"\[2, 4\]"):
        attention_in_box(np.ones((2, 4)), np.zeros((3, 4)), 2)
    with pytest.raises(DataFormatError, match=">= 0"):
        attention_in_box(-np.ones(4), (0, 0, 1, 1), 2)
    with pytest.raises(InvalidBoxError, match="box 1"):
        pointing_game(np.ones((2, 4)), [[0, 0, 1, 1], [0.6, 0, 0.2, 1]], 2)
    with pytest.raises(InvalidBoxError, match="tolerance"):
        box_patch_weights((0, 0, 1, 1), 2, tolerance=-1)
    with pytest.raises(ShapeError, match="grid"):
        box_patch_weights((0, 0, 1, 1), (2, 2, 2))


def _sample(sid: str, stage: str, organ: str, box_norm: tuple[float, ...]) -> CoTSample:
    return CoTSample(
        id=sid,
        seed_id="s",
        stage=stage,
        question_type="open",
        question="q",
        rationale="r",
        answer="a",
        image="img.png",
        box_norm=box_norm,
        organ=organ,
    )


def test_score_grounding_breakdown() -> None:
    targets = [
        _sample("e1", "easy", "liver", (0.0, 0.0, 0.5, 0.5)),
        _sample("e2", "easy", "lung", (0.5, 0.5, 1.0, 1.0)),
        _sample("m1", "medium", "liver", (0.0, 0.0, 0.5, 0.5)),
        {
            "id": "px",
            "box": [0, 0, 50, 100],
            "image_size": [100, 100],
            "stage": "medium",
            "organ": "liver | left",
        },
        _sample("unscored", "hard", "liver", (0.0, 0.0, 0.5, 0.5)),
    ]
    att = np.zeros(4)
    att[0] = 1.0
    preds = {
        "e1": "The lesion [0.0, 0.0, 0.5, 0.5] sits in the liver.",
        "e2": "Lung lesion [0.5, 0.5, 1.0, 0.75].",
        "m1": {"text": "no box cited", "attention": att.tolist(), "grid": [2, 2]},
        "px": {"attention": [[0.25, 0.25], [0.25, 0.25]]},
    }
    s = score_grounding(targets, preds, grid=(2, 2))
    assert s.n == 4
    by_id = {x.id: x for x in s.samples}
    assert (by_id["e1"].iou, by_id["e1"].iou_hit, by_id["e1"].cited) == (1.0, 1.0, 1.0)
    assert (by_id["e2"].iou, by_id["e2"].iou_hit) == (0.5, 1.0)
    assert (by_id["m1"].cited, by_id["m1"].iou, by_id["m1"].iou_hit) == (0.0, None, 0.0)
    assert (by_id["m1"].mass_in_box, by_id["m1"].pointing_hit) == (1.0, 1.0)
    assert (by_id["px"].mass_in_box, by_id["px"].pointing_hit, by_id["px"].cited) == (
        0.5,
        1.0,
        None,
    )
    assert s.citation_rate == pytest.approx(2 / 3)
    assert s.mean_iou == pytest.approx(0.75)
    assert s.mean_mass_in_box == pytest.approx(0.75)
    stages = {r["stage"]: r for r in s.breakdown("stage")}
    assert stages["easy"]["iou"] == pytest.approx(0.75) and stages["easy"]["mass_in_box"] is None
    assert stages["medium"]["pointing_hit"] == 1.0 and stages["all"]["n"] == 4
    pairs = {(r["stage"], r["organ"]) for r in s.breakdown(("stage", "organ"))}
    assert ("medium", "liver | left") in pairs
    md = s.to_markdown("organ")
    assert "liver \\| left" in md and md.count("\n") == 5
    assert GroundingScores.from_dict(s.to_dict()) == s


def test_score_grounding_errors() -> None:
    with pytest.raises(DataFormatError, match="box_norm"):
        score_grounding([{"id": "a"}], {"a": "x"})
    with pytest.raises(DataFormatError, match="grid"):
        score_grounding([{"id": "a", "box_norm": [0, 0, 1, 1]}], {"a": {"attention": [1, 0]}})


def test_plot_attention_writes_a_real_png(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, size=(64, 80)).astype(np.uint16)  # 16-bit CT-like slice
    maps = np.stack([box_patch_weights((0.1, 0.2, 0.5, 0.6), (6, 6)), rng.random(36)])
    out = plot_attention(
        image,
        maps,
        (6, 6),
        (0.1, 0.2, 0.5, 0.6),
        tmp_path / "fig" / "att.png",
        titles=["medium", "hard"],
    )
    assert out == tmp_path / "fig" / "att.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[1] > 2 * arr.shape[0]  # three panels side by side
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 100  # heatmaps, not a blank canvas
    # the box is drawn in lime somewhere
    assert ((arr[..., 1] > 200) & (arr[..., 0] < 60) & (arr[..., 2] < 60)).sum() > 20
    rgb = plot_attention(torch.rand(3, 32, 32), np.ones(16), 4, None, tmp_path / "rgb.png")
    assert rgb.stat().st_size > 1000
    with pytest.raises(ShapeError, match="titles"):
        plot_attention(image, maps, 6, None, tmp_path / "x.png", titles=["one"])
    with pytest.raises(ShapeError, match="image"):
        plot_attention(np.zeros((2, 3, 4, 5)), np.ones(4), 2, None, tmp_path / "x.png")


def test_plot_attention_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"medcurric\[viz\]"):
        plot_attention(np.zeros((8, 8)), np.ones(4), 2, None, tmp_path / "x.png")


def test_plot_attention_draws_tex_like_titles_literally(tmp_path: Path) -> None:
    """Titles may be model text: ``$...$`` must not reach mathtext (which raises on it)."""
    maps = np.stack([np.ones(16), np.arange(16.0)])
    out = plot_attention(
        np.zeros((16, 16)), maps, 4, None, tmp_path / "t.png", titles=[r"$\undefinedmacro{x}^$", "$a$"]
    )
    assert out.stat().st_size > 1000
