"""``medcurric demo``: the whole pipeline on the bundled sample, end to end."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("matplotlib")

from medcurric import cli
from medcurric.anatomy import BoxOrganMatcher
from medcurric.cli.demo import HELD_OUT, STEPS, DemoContext
from medcurric.cot.records import CoTSample
from medcurric.io.png import read_deeplesion_slice
from medcurric.seeds.records import FactualSeed
from medcurric.testing import make_phantom


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["demo", "--out", str(out)]) == 0  # the default run, as a user sees it
    return out, buf.getvalue()


def test_steps_are_the_pipeline() -> None:
    names = [name for name, _ in STEPS]
    assert names == ["phantom", "match", "seeds", "generate", "render", "train", "evaluate", "review", "index"]


def test_demo_prints_where_output_went(demo) -> None:
    out, text = demo
    assert f"output written to {out.resolve()}" in text
    for name in ("index.html", "samples.jsonl", "curriculum.png", "review"):
        assert name in text


def test_demo_records_follow_the_phantom(demo) -> None:
    out, _ = demo
    ph = make_phantom()
    seeds = [FactualSeed.from_json(line) for line in (out / "seeds.jsonl").read_text().splitlines()]
    assert [s.id for s in seeds] == [r.id for r in ph.key_slice_lesions]
    # The seeds' organs are those of an independent match of the key-slice boxes.
    matches = BoxOrganMatcher(ph.class_map, criterion="ioa", min_score=0.5, adjacent_mm=5.0).match_records(
        ph.key_slice_lesions, ph.label_map())
    assert [s.organ for s in seeds] == [m.organ for m in matches]
    samples = [CoTSample.from_json(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    rejects = [CoTSample.from_json(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert samples and all(s.accepted for s in samples) and not any(r.accepted for r in rejects)
    assert {s.stage for s in samples} == {"easy", "medium", "hard"}
    assert {s.seed_id for s in samples} <= {s.id for s in seeds}
    # 16-bit DeepLesion-style key slices (HU + 32768) and label slices beside them.
    for r in ph.key_slice_lesions:
        hu = read_deeplesion_slice(out / "images" / "phantom" / f"{r.id}.png")
        np.testing.assert_array_equal(hu, ph.hu[r.slice_index].astype(hu.dtype))
        from PIL import Image

        with Image.open(out / "labels" / "phantom" / f"{r.id}.png") as im:
            np.testing.assert_array_equal(np.asarray(im), ph.labels[r.slice_index])


def test_demo_stages_training_and_evaluation(demo) -> None:
    out, _ = demo
    stages = json.loads((out / "stages" / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["easy", "medium", "hard"]
    assert "[0." in stages[0]["prompt"]  # Easy cites the box
    assert stages[2]["target"].startswith("Answer: ") and "Reasoning" not in stages[2]["target"]
    from PIL import Image

    easy = np.asarray(Image.open(out / "stages" / "easy.png").convert("RGB"))
    hard = np.asarray(Image.open(out / "stages" / "hard.png").convert("RGB"))
    assert easy.shape == hard.shape and (easy != hard).any()  # the overlay is drawn on Easy only
    log = [json.loads(line) for line in (out / "training" / "log.jsonl").read_text().splitlines()]
    assert len(log) == DemoContext.train_steps and log[0]["stage"] == "easy" and log[-1]["stage"] == "medium"
    assert (out / "training" / f"checkpoint-{DemoContext.train_steps}" / "trainer_state.json").is_file()
    assert (out / "curriculum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert set(evaluation["vqa"]) == {"default", "llava-med"}
    assert evaluation["vqa"]["default"]["n_open"] + evaluation["vqa"]["default"]["n_closed"] == evaluation["n_vqa"]
    for when in ("before", "after"):
        mass = evaluation["grounding"][when]["mean_mass_in_box"]
        assert 0.0 <= mass <= 1.0
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == evaluation["n_vqa"]
    assert list((out / "attention").glob("*.png"))
    assert (out / "review" / "index.html").is_file()


def test_index_links_resolve(demo) -> None:
    out, _ = demo
    page = (out / "index.html").read_text()
    targets = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert len(targets) >= 10
    for t in targets:
        assert (out / t).exists(), t


def test_demo_training_grounds_attention_on_held_out_lesions(demo) -> None:
    """The Medium attention loss works on lesions the model never trained on: KL falls, mass in the box rises."""
    out, _ = demo
    evaluation = json.loads((out / "evaluation.json").read_text())
    held = evaluation["held_out"]
    assert held["lesions"] == list(HELD_OUT) and held["n"] == evaluation["n_grounding"] > 0
    kl = held["attention_kl"]
    assert kl["after"] < 0.5 * kl["before"]
    before, after = evaluation["grounding"]["before"], evaluation["grounding"]["after"]
    assert after["mean_mass_in_box"] > 3 * before["mean_mass_in_box"]
    assert after["pointing_accuracy"] > before["pointing_accuracy"]
    # The page shows the numbers, before -> after.
    page = (out / "index.html").read_text()
    assert f"{kl['before']:.3g}" in page and f"{kl['after']:.3g}" in page


def test_missing_extras_are_named_with_the_install_line(monkeypatch, capsys, tmp_path) -> None:
    import medcurric._optional as optional
    from medcurric.cli import demo as demo_cli
    from medcurric.errors import MissingDependencyError

    real = optional.is_available
    monkeypatch.setattr(optional, "is_available", lambda m: m not in {"peft", "matplotlib"} and real(m))
    with pytest.raises(MissingDependencyError, match=r"needs peft, matplotlib.*pip install 'medcurric\[viz,vlm\]'"):
        demo_cli.check_extras()
    assert cli.main(["demo", "--out", str(tmp_path / "out")]) != 0
    assert "pip install 'medcurric[viz,vlm]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # checked before any step ran


def test_held_out_lesions_are_never_trained_on(tmp_path) -> None:
    """The training pools leave out every sample of the held-out lesions; their Medium samples are measured."""
    import contextlib
    import io

    from medcurric.cli.demo import DemoContext

    ctx = DemoContext(out=tmp_path, train_steps=2)
    with contextlib.redirect_stdout(io.StringIO()):
        for name, step in STEPS[: [n for n, _ in STEPS].index("train") + 1]:
            if name != "render":
                step(ctx)
    trainer = ctx.state["trainer"]
    pooled = {i for pool in trainer.pools.values() for i in pool}
    held = {i for i, s in enumerate(trainer.samples) if s.seed_id in HELD_OUT}
    assert held and pooled and not pooled & held
    trained_stages = {i for i, s in enumerate(trainer.samples) if s.stage in ("easy", "medium")}
    assert pooled | (held & trained_stages) == trained_stages
    measured = ctx.state["attention_samples"]
    assert sorted(s.id for s in measured) == sorted(
        trainer.samples[i].id for i in held if trainer.samples[i].stage == "medium")
