"""Fixtures for the cot tests: seeds with images on disk, a small organ lexicon, a fake model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medcurric.cot import OrganLexicon, PromptTemplate, template_reply
from medcurric.cot.backends import GenerationRequest
from medcurric.cot.templates import TEMPLATE_FIELDS, QuestionType
from medcurric.seeds.records import FactualSeed
from medcurric.stage import Stage
from medcurric.testing.chat_server import user_text

SEP = "\u241f"
MARK = "<<FIELDS>>"
FIELD_NAMES = sorted(TEMPLATE_FIELDS)

ORGANS = {
    "liver": ["hepatic"],
    "spleen": ["splenic"],
    "kidney_left": ["left kidney", "left renal"],
    "kidney_right": ["right kidney", "right renal"],
    "pancreas": ["pancreatic"],
    "lung_upper_lobe_left": ["left upper lobe", "left lung"],
}


@pytest.fixture
def lexicon() -> OrganLexicon:
    return OrganLexicon(ORGANS)


def make_seed(
    i: int,
    *,
    organ: str | None = "liver",
    lesion: str = "hypodense lesion",
    image: str | None = None,
    size: tuple[int, int] | None = None,
) -> FactualSeed:
    box = (10.0 + i, 12.0, 30.0 + i, 40.0)
    where = f"in the right part of the {organ.replace('_', ' ')}" if organ else "of unknown site"
    return FactualSeed(
        id=f"les-{i:03d}",
        text=f"a {lesion} {where}",
        lesion_type=lesion,
        organ=organ,
        organ_label=5 if organ else None,
        outcome="inside" if organ else "unmatched",
        score=0.8 if organ else 0.0,
        criterion="ioa",
        image=image or f"img/{i % 3}.png",
        box=box,
        location_phrase="right part of the" if organ else "",
        size_mm=(14.0, 9.0),
        image_size=size,
    )


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 80), dtype=np.uint8), mode="L").save(
        root / "img/0.png"
    )
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), mode="RGB").save(
        root / "img/1.png"
    )
    # 16-bit, DeepLesion style (HU + 32768)
    arr16 = (rng.integers(-1000, 1000, (64, 80)) + 32768).astype(np.uint16)
    Image.fromarray(arr16).save(root / "img/2.png")
    return root


@pytest.fixture
def seeds() -> list[FactualSeed]:
    organs = ["liver", "spleen", "kidney_left", "liver", None, "pancreas"]
    return [make_seed(i, organ=organs[i % len(organs)]) for i in range(12)]


def field_templates() -> list[PromptTemplate]:
    """Templates whose prompt carries every field, so a fake server can answer like TemplateBackend."""
    text = MARK + SEP.join("{" + n + "}" for n in FIELD_NAMES)
    out = []
    for stage in Stage:
        for qt in QuestionType:
            for matched in (True, False):
                out.append(
                    PromptTemplate(
                        f"f-{stage.value}-{qt.value}-{matched}",
                        stage,
                        qt,
                        text,
                        system="",
                        matched=matched,
                    )
                )
    return out


def fields_of(payload: dict) -> dict[str, str]:
    text = user_text(payload)
    values = text.split(MARK, 1)[1].split(SEP)
    return dict(zip(FIELD_NAMES, values, strict=True))


def reply_like_template_backend(payload: dict) -> str:
    f = fields_of(payload)
    req = GenerationRequest(
        "x", "", "", Stage(f["stage"]), QuestionType(f["question_type"]), "t", f
    )
    return json.dumps(template_reply(req))


@pytest.fixture
def templates() -> list[PromptTemplate]:
    return field_templates()


@pytest.fixture
def fake_reply():
    return reply_like_template_backend


@pytest.fixture
def seed_factory():
    return make_seed
