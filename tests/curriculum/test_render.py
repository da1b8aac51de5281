from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.cot.records import CoTSample
from medcurric.curriculum import Stage, format_box, render
from medcurric.errors import DataFormatError, MissingFileError, UnsafePathError
from medcurric.geometry import Preprocess, gaussian
from medcurric.overlay import StageOverlay


def sample(**kw) -> CoTSample:
    base = dict(
        id="s1",
        seed_id="k1",
        stage="easy",
        question_type="open",
        question="Where is the lesion?",
        rationale="The box lies over the right lobe of the liver, so the lesion is hepatic.",
        answer="liver",
        image="ct/001.png",
        box=(20.0, 10.0, 36.0, 30.0),
        image_size=(80, 40),
    )
    base.update(kw)
    return CoTSample(**base)


def image(w: int = 80, h: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 120, (h, w, 3), dtype=np.uint8)


def test_easy_draws_the_overlay_and_cites_the_normalised_box() -> None:
    s = sample()
    out = render(s, "easy", image=image(), overlay=StageOverlay(), rng=7)
    expected_img, phrase = StageOverlay()(image(), np.array(s.box), key=7)
    assert np.array_equal(np.asarray(out.image), expected_img)
    assert not np.array_equal(np.asarray(out.image), image())
    assert phrase == out.phrase == "within the red rectangle"
    box = "[0.2500, 0.2500, 0.4500, 0.7500]"  # (20/80, 10/40, 36/80, 30/40)
    assert format_box(out.box_norm) == box
    assert out.question == f"Where is the lesion?\nThe region of interest is within the red rectangle, at box {box}."
    assert out.prompt == f"###Human: <image>\n{out.question}###Assistant:"
    assert out.target == f"Reasoning: {s.rationale}\n\nAnswer: liver"
    r0, r1 = out.rationale_span
    a0, a1 = out.answer_span
    assert out.target[r0:r1] == s.rationale and out.target[a0:a1] == "liver"
    assert out.attention_target is None and out.stage is Stage.EASY


def test_easy_uses_box_norm_when_given_and_is_reproducible_per_sample() -> None:
    s = sample(box_norm=(0.1, 0.2, 0.3, 0.4))
    a = render(s, "easy", image=image(), overlay=StageOverlay("random", seed=1))
    b = render(s, "easy", image=image(), overlay=StageOverlay("random", seed=1))
    assert "[0.1000, 0.2000, 0.3000, 0.4000]" in a.question
    assert a.phrase == b.phrase and np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_hard_has_only_the_answer_and_a_clean_image() -> None:
    out = render(sample(), Stage.HARD, image=image())
    assert out.target == "Answer: liver" and out.rationale is None and out.rationale_span is None
    assert out.target[slice(*out.answer_span)] == "liver"
    assert out.prompt == "###Human: <image>\nWhere is the lesion?###Assistant:"
    assert np.array_equal(np.asarray(out.image), image())


def _patch_fractions(pixels: np.ndarray, grid: int) -> np.ndarray:
    """Mean brightness per patch of a [H, W] map, row-major, normalised to sum 1."""
    h, w = pixels.shape
    ph, pw = h // grid, w // grid
    cells = pixels[: ph * grid, : pw * grid].reshape(grid, ph, grid, pw).mean(axis=(1, 3)).reshape(-1)
    return cells / cells.sum()


def test_medium_target_follows_the_real_image_processor() -> None:
    from medcurric.testing.tiny import build_tiny_processor

    processor = build_tiny_processor()
    pre = Preprocess.from_processor(processor)
    w, h = 96, 48  # wide: the centre crop cuts 24 px off each side after the resize to 48
    box = (30.0, 8.0, 62.0, 40.0)
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[8:40, 30:62] = 255
    s = sample(box=box, image_size=(w, h))
    out = render(s, "medium", image=canvas, preprocess=pre, grid=(6, 6))
    assert np.array_equal(np.asarray(out.image), canvas)  # clean
    target = out.attention_target
    assert target.shape == (36,) and target.dtype == np.float32
    assert target.sum() == pytest.approx(1.0, abs=1e-5)
    # Independent reference: push the painted box through the real processor and measure it per patch.
    pixels = processor.image_processor(images=[Image.fromarray(canvas)], return_tensors="np")["pixel_values"][0]
    bright = pixels.mean(axis=0)
    bright = bright - bright.min()
    ref = _patch_fractions(bright, 6)
    assert np.abs(target - ref).max() < 0.01  # plain resize (no crop) is 0.06 off, pad-to-square 0.19
    assert int(target.argmax()) == int(ref.argmax())
    assert out.target.startswith("Reasoning: ") and out.question == s.question


def test_medium_box_cropped_away_has_no_target_and_smoothing_is_applied() -> None:
    pre = Preprocess.shortest_edge_crop(48)
    gone = render(sample(box=(0.0, 0.0, 10.0, 40.0), image_size=(96, 48)), "medium", image=image(96, 48), preprocess=pre, grid=(6, 6))
    assert gone.attention_target is None
    sharp = render(sample(), "medium", image=image(), preprocess=pre, grid=(6, 6)).attention_target
    soft = render(sample(), "medium", image=image(), preprocess=pre, grid=(6, 6), smoothing=gaussian(3, 1.0)).attention_target
    assert (soft > 0).sum() > (sharp > 0).sum()
    assert soft.sum() == pytest.approx(1.0, abs=1e-5)


def test_untrusted_text_is_not_template_syntax() -> None:
    s = sample(question="What is at {box} {phrase} {question}?")
    out = render(s, "easy", image=image())
    assert out.question.startswith("What is at {box} {phrase} {question}?\n")
    hard = render(sample(question="{question}"), "hard", image=image())
    assert hard.prompt == "###Human: <image>\n{question}###Assistant:"


def test_images_load_from_the_root_and_paths_cannot_escape(tmp_path: Path) -> None:
    (tmp_path / "ct").mkdir()
    Image.fromarray(image()).save(tmp_path / "ct" / "001.png")
    out = render(sample(), "hard", image_root=tmp_path)
    assert np.array_equal(np.asarray(out.image), image())
    with pytest.raises(UnsafePathError):
        render(sample(image="../secret.png"), "hard", image_root=tmp_path)
    with pytest.raises(UnsafePathError):
        render(sample(image="/etc/passwd"), "hard", image_root=tmp_path)
    with pytest.raises(MissingFileError, match="image_root"):
        render(sample(), "hard")
    with pytest.raises(MissingFileError, match="not found"):
        render(sample(image="ct/002.png"), "hard", image_root=tmp_path)


def test_easy_and_medium_need_a_box() -> None:
    s = sample(box=None, box_norm=None)
    with pytest.raises(DataFormatError, match="box"):
        render(s, "easy", image=image())
    with pytest.raises(DataFormatError, match="box"):
        render(s, "medium", image=image())
    assert render(s, "hard", image=image()).target == "Answer: liver"


def test_dict_samples_are_accepted() -> None:
    out = render(sample().to_dict(), "hard", image=image())
    assert out.id == "s1"


def test_16_bit_ct_slice_is_windowed_not_saturated(tmp_path: Path) -> None:
    """A DeepLesion-style slice (HU + 32768) renders in a soft-tissue window, not as a white square."""
    (tmp_path / "ct").mkdir()
    hu = np.full((40, 80), -1000, dtype=np.int32)  # air
    hu[:, 40:] = 40  # soft tissue
    Image.fromarray((hu + 32768).astype(np.uint16)).save(tmp_path / "ct" / "001.png")
    out = render(sample(), "hard", image_root=tmp_path)
    arr = np.asarray(out.image)
    assert arr.shape == (40, 80, 3)
    assert arr[:, :40].max() == 0  # air is black
    expected = round((40 + 160) / 400 * 255)
    assert np.all(np.abs(arr[:, 40:].astype(int) - expected) <= 1)


def test_render_returns_a_rendered_sample_with_the_samples_window(tmp_path: Path) -> None:
    from medcurric.curriculum import RenderedSample
    from medcurric.io import load_rgb

    (tmp_path / "ct").mkdir()
    hu = np.random.default_rng(3).integers(-1200, 1500, (40, 80)).astype(np.int32)
    Image.fromarray((hu + 32768).astype(np.uint16)).save(tmp_path / "ct" / "001.png")
    s = sample(window=(-1350.0, 150.0))
    out = render(s, "medium", image_root=tmp_path, grid=(6, 6))
    assert isinstance(out, RenderedSample)
    assert np.array_equal(np.asarray(out.image), load_rgb(hu, window=(-1350.0, 150.0)))
    assert np.array_equal(np.asarray(render(s, "hard", image=hu).image), np.asarray(out.image))  # HU arrays too
    assert not np.array_equal(np.asarray(render(sample(), "hard", image=hu).image), np.asarray(out.image))
    d = out.to_dict()
    assert list(d) == [f for f in RenderedSample.__dataclass_fields__] and len(d) == 13
    again = RenderedSample(**d)
    assert again.to_dict() == {**d, "attention_target": again.attention_target}
    assert again.attention_target is out.attention_target and out.attention_target.shape == (36,)
    with pytest.raises(TypeError, match="PIL image or a numpy array"):
        render(s, "hard", image=[[0]])
