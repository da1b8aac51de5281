"""The image a generation backend sends is the image the trainer feeds the model, and carries no metadata."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from medcurric.cot._imaging import data_url, load_rgb
from medcurric.cot.backends import GenerationRequest, OpenAIBackend
from medcurric.cot.records import CoTSample
from medcurric.cot.templates import QuestionType
from medcurric.curriculum import Stage, render
from medcurric.io import load_rgb as io_load_rgb
from medcurric.training.trainer import _read_image


def _decode(url: str) -> tuple[str, bytes]:
    head, _, payload = url.partition(",")
    return head, base64.b64decode(payload)


def _pixels(url: str) -> np.ndarray:
    head, raw = _decode(url)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(raw)) as im:
        assert im.mode in ("L", "RGB")  # grey images travel as one channel
        return np.asarray(im.convert("RGB"))


def _sample(image: str, window: tuple[float, float] | None) -> CoTSample:
    return CoTSample(id="s1", seed_id="k1", stage="hard", question_type="closed", question="Is it in the liver?",
                     rationale="", answer="yes", image=image, box=(4.0, 4.0, 20.0, 12.0), window=window)


def _sent_by_openai_backend(path: Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """Decode the image of the chat-completions payload the OpenAI-compatible backend builds."""
    request = GenerationRequest(id="s1", system="", prompt="Describe.", stage=Stage.HARD,
                                question_type=QuestionType.CLOSED, template_id="t", fields={}, image_path=path,
                                window=window)
    payload = OpenAIBackend(model="m", base_url="http://127.0.0.1:9")._payload(request)
    (part,) = [p for p in payload["messages"][0]["content"] if p.get("type") == "image_url"]
    return _pixels(part["image_url"]["url"])


def _deeplesion(path: Path) -> Path:
    hu = np.random.default_rng(0).integers(-1100, 1600, (24, 32)).astype(np.int32)
    Image.fromarray((hu + 32768).astype(np.uint16)).save(path)
    return path


def _eight_bit(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "make,window",
    [(_deeplesion, (-1350.0, 150.0)), (_deeplesion, None), (_eight_bit, (-1350.0, 150.0)), (_eight_bit, None)],
    ids=["16bit-record-window", "16bit-default", "8bit", "8bit-no-window"],
)
def test_generation_and_training_see_the_same_pixels(tmp_path: Path, make, window) -> None:
    path = make(tmp_path / "ct.png")
    s = _sample("ct.png", window)
    sent = _pixels(data_url(path, window=s.window))
    # the trainer: render(sample, HARD, image=<its read of sample.image>), as CurriculumTrainer.render_batch
    trained = np.asarray(render(s, Stage.HARD, image=_read_image(tmp_path, s, None)).image)
    # render() reading the file itself, and the TransformersBackend's PIL image
    rendered = np.asarray(render(s, Stage.HARD, image_root=tmp_path).image)
    local = np.asarray(load_rgb(path, window=s.window))
    assert sent.shape == (24, 32, 3)
    for other in (trained, rendered, local):
        assert np.array_equal(sent, other)
    assert np.array_equal(sent, io_load_rgb(path, window=window))
    # what the OpenAI-compatible backend puts in its request, with the record's window
    assert np.array_equal(_sent_by_openai_backend(path, window), trained)
    if make is _deeplesion and window is not None:  # the record window matters
        assert not np.array_equal(sent, io_load_rgb(path))


def test_trainer_window_is_only_a_fallback(tmp_path: Path) -> None:
    path = _deeplesion(tmp_path / "ct.png")
    with_window = _read_image(tmp_path, _sample("ct.png", (-1350.0, 150.0)), "bone")
    assert np.array_equal(with_window, io_load_rgb(path, window=(-1350.0, 150.0)))
    without = _read_image(tmp_path, _sample("ct.png", None), "bone")
    assert np.array_equal(without, io_load_rgb(path, window="bone"))


def test_data_url_sends_pixels_not_the_file(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "DOE^JANE")
    png = tmp_path / "tagged.png"
    Image.fromarray(rgb).save(png, pnginfo=info)
    jpg = tmp_path / "tagged.jpg"
    exif = Image.Exif()
    exif[0x010E] = "DOE^JANE"  # ImageDescription
    Image.fromarray(rgb).save(jpg, exif=exif.tobytes())
    for f in (png, jpg):
        assert b"DOE^JANE" in f.read_bytes()
        url = data_url(f)
        _, raw = _decode(url)
        assert b"DOE^JANE" not in raw and raw != f.read_bytes()
        assert np.array_equal(_pixels(url), io_load_rgb(f))
    # a changed window is a different image, not a stale cache entry
    ct = _deeplesion(tmp_path / "ct.png")
    assert data_url(ct, window=[-1350, 150]) == data_url(ct, window=(-1350.0, 150.0))
    assert data_url(ct, window=(-1350, 150)) != data_url(ct)


def test_the_generator_passes_the_seed_window_to_the_backend(tmp_path: Path) -> None:
    from medcurric.cot import CoTGenerator, TemplateBackend
    from medcurric.testing import bundled_sample

    seed = bundled_sample().seeds[0]
    seed = dataclasses.replace(seed, window=(-1350.0, 150.0))
    seen: list[GenerationRequest] = []

    class Spy(TemplateBackend):
        needs_images = True

        def complete(self, requests):  # type: ignore[override]
            seen.extend(requests)
            return super().complete(requests)

    (tmp_path / "phantom").mkdir()
    _deeplesion(tmp_path / seed.image)
    list(CoTGenerator(Spy(), image_root=tmp_path).generate([seed]))
    assert seen and {r.window for r in seen} == {(-1350.0, 150.0)}


def test_the_record_window_reaches_the_samples() -> None:
    """LesionRecord.window -> FactualSeed.window -> CoTSample.window (then load_rgb, as above)."""
    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.cot import CoTGenerator, TemplateBackend
    from medcurric.seeds.pipeline import build_seeds
    from medcurric.testing import make_phantom

    ph = make_phantom()
    records = {r.id: r for r in ph.key_slice_lesions}
    assert any(r.window is not None for r in records.values())
    matcher = BoxOrganMatcher(ph.class_map, criterion="ioa", min_score=0.5, adjacent_mm=5.0)
    seeds = build_seeds(list(records.values()), ph.label_map(), matcher=matcher)
    assert seeds and all(s.window == records[s.id].window for s in seeds)
    seeds = [s.__class__.from_dict({**s.to_dict(), "extra": {"image_size": [128, 128]}}) for s in seeds]
    samples = list(CoTGenerator(TemplateBackend(), vocabulary=ph.class_map).generate(seeds))
    assert samples and all(s.window == records[s.seed_id].window for s in samples)
    assert all(CoTSample.from_dict(s.to_dict()).window == s.window for s in samples)
