"""The generation switches that reproduce the authors' prompts (``medium_cites_box``, ``hard_asks_location``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from medcurric.cot import CoTGenerator, TemplateBackend, default_templates
from medcurric.cot.backends import Completion, GenerationRequest
from medcurric.errors import DataFormatError
from medcurric.seeds.records import FactualSeed
from medcurric.stage import Stage

VOCAB = {"liver": ["hepatic"], "spleen": ["splenic"]}
BOX_TEXT = "[0.1000, 0.2000, 0.3000, 0.4000]"


def seed(**kw) -> FactualSeed:
    base = dict(id="les-1", text="a 14 mm cyst in the right part of the liver", lesion_type="cyst",
                organ="liver", organ_label=5, outcome="inside", score=0.9, criterion="ioa",
                image="ct/001.png", box=(10.0, 20.0, 30.0, 40.0), location_phrase="right part of the",
                image_size=(100, 100))
    base.update(kw)
    return FactualSeed(**base)


class Scripted:
    """A backend that answers every request with a fixed reply per stage."""

    name = "scripted"
    model_name = ""
    needs_images = False

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies

    def complete(self, requests: Iterable[GenerationRequest]) -> Iterator[Completion]:
        for r in requests:
            yield Completion(r, self.replies[r.stage.value])


def test_default_templates_keep_the_library_design() -> None:
    ts = {t.id: t for t in default_templates()}
    assert "do not mention any box" in ts["medium-open-v1"].text
    assert "{box}" not in ts["medium-open-v1"].text
    assert "asking where the lesion is" in ts["hard-open-v1"].text
    assert default_templates() == default_templates(medium_cites_box=False, hard_asks_location=True)


def test_medium_cites_box_gives_the_box_and_asks_for_it() -> None:
    ts = default_templates(medium_cites_box=True)
    medium = [t for t in ts if t.stage is Stage.MEDIUM]
    assert sorted(t.id for t in medium) == [
        "medium-closed-box-v1", "medium-closed-unmatched-box-v1",
        "medium-open-box-v1", "medium-open-unmatched-box-v1",
    ]
    assert all("mentioning the box {box}" in t.text or "mentions the box {box}" in t.text for t in medium)
    assert len(ts) == 12 and len({t.id for t in ts}) == 12

    reqs = {r.template_id: r for r in CoTGenerator(TemplateBackend(), vocabulary=VOCAB,
                                                   medium_cites_box=True).requests(seed())}
    assert BOX_TEXT in reqs["medium-open-box-v1"].prompt
    assert reqs["medium-open-box-v1"].fields["box"] == BOX_TEXT
    plain = {r.template_id: r for r in CoTGenerator(TemplateBackend(), vocabulary=VOCAB).requests(seed())}
    assert plain["medium-open-v1"].fields["box"] == "" and BOX_TEXT not in plain["medium-open-v1"].prompt


def test_medium_cites_box_needs_the_image_size() -> None:
    gen = CoTGenerator(TemplateBackend(), vocabulary=VOCAB, stages=["medium"], medium_cites_box=True)
    with pytest.raises(DataFormatError, match="the Medium prompt cites the normalised box"):
        gen.requests(seed(image_size=None))
    CoTGenerator(TemplateBackend(), vocabulary=VOCAB, stages=["medium"]).requests(seed(image_size=None))


def test_hard_without_location_uses_location_free_templates_for_every_seed() -> None:
    gen = CoTGenerator(TemplateBackend(), vocabulary=VOCAB, hard_asks_location=False)
    for s in (seed(), seed(id="les-2", organ=None, organ_label=None, outcome="unmatched", score=0.0)):
        hard = [r for r in gen.requests(s) if r.stage is Stage.HARD]
        assert sorted(r.template_id for r in hard) == ["hard-closed-nolocation-v1", "hard-open-nolocation-v1"]
        for r in hard:
            assert "liver" not in r.prompt and r.fields["organ"] == ""
    samples = [x for x in gen.generate([seed()]) if x.stage == "hard"]
    assert samples and all(x.accepted and x.organ is None for x in samples)
    assert all(x.extra["host_organ"] == "liver" for x in samples)
    # Easy and Medium are untouched
    others = [x for x in gen.generate([seed()]) if x.stage != "hard"]
    assert all(x.organ == "liver" and "host_organ" not in x.extra for x in others)


def test_hard_without_location_rejects_an_organ_claim() -> None:
    replies = {"hard": "Question: What abnormality is seen? | Answer: A cyst in the liver."}
    gen = CoTGenerator(Scripted(replies), vocabulary=VOCAB, stages=["hard"], question_types=["open"],
                       hard_asks_location=False)
    (s,) = gen.generate([seed()])
    assert not s.accepted and s.organ is None
    ok = CoTGenerator(Scripted({"hard": "Question: What abnormality is seen? | Answer: A cyst."}),
                      vocabulary=VOCAB, stages=["hard"], question_types=["open"], hard_asks_location=False)
    (s,) = ok.generate([seed()])
    assert s.accepted
    # with the default, the location-free answer misses the host organ and is rejected
    (s,) = CoTGenerator(Scripted({"hard": "Question: Where is it? | Answer: A cyst."}), vocabulary=VOCAB,
                        stages=["hard"], question_types=["open"]).generate([seed()])
    assert not s.accepted and "names_organ" in s.reason
