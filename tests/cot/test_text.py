"""The text the pipeline writes reads right: every lesion type x organ x stage x question type.

Seeds of every DeepLesion coarse type (plus an unknown type and user types) on a
spread of host organs, inside and adjacent, and unmatched, go through the template
backend; every question, rationale and answer is then read with plain regular
expressions written here, independent of the phrase builder.
"""

from __future__ import annotations

import re

import pytest

from medcurric.cot import CoTGenerator, CoTSample, OrganLexicon, TemplateBackend, validate_sample
from medcurric.seeds import FactualSeed, SeedBuilder
from medcurric.vocabulary import ClassMap

DEEPLESION_TYPES = ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "pelvis")
OTHER_TYPES = ("-1", "cyst", "adrenal", "Soft Tissue", "ulcer", "hypodense lesion")
ORGANS = (
    "lung_upper_lobe_left", "lung_lower_lobe_right", "lung_right", "liver", "kidney_left",
    "kidney_right", "vertebrae_L2", "spine", "rib_left_3", "clavicula_left", "hip_left",
    "femur_left", "aorta", "inferior_vena_cava", "adrenal_gland_right", "gallbladder",
)
#: Words that name a body region or organ: never the noun of a lesion phrase.
SITE_WORDS = (
    "bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft tissue", "soft-tissue",
    "pelvis", "adrenal", "gallbladder", "aorta", "spine", "clavicle", "rib", "femur",
)


@pytest.fixture(scope="module")
def class_map() -> ClassMap:
    return ClassMap.totalsegmentator()


def _seed(i: int, lesion_type: str, organ: str | None, outcome: str, phrase: str) -> FactualSeed:
    return FactualSeed(
        id=f"s{i}", text=f"Seed {i}.", lesion_type=lesion_type, organ=organ,
        organ_label=None if organ is None else 1, outcome=outcome, score=0.9 if organ else 0.0,
        criterion="ioa", image="a.png", box=(10.0, 20.0, 30.0, 40.0), location_phrase=phrase,
        size_mm=(15.0, 12.0), image_size=(100, 100),
    )


@pytest.fixture(scope="module")
def samples(class_map: ClassMap) -> list[CoTSample]:
    seeds = []
    for lesion_type in DEEPLESION_TYPES + OTHER_TYPES:
        for organ in ORGANS:
            seeds.append(_seed(len(seeds), lesion_type, organ, "inside", "central part of the"))
            seeds.append(_seed(len(seeds), lesion_type, organ, "inside", ""))
            seeds.append(_seed(len(seeds), lesion_type, organ, "adjacent", ""))
        seeds.append(_seed(len(seeds), lesion_type, None, "unmatched", ""))
    out = list(CoTGenerator(TemplateBackend(), vocabulary=class_map).generate(seeds))
    assert len(out) == len(seeds) * 6  # every stage x question type
    return out


def _texts(s: CoTSample) -> list[str]:
    return [t for t in (s.question, s.rationale, s.answer) if t]


def test_the_library_rejects_none_of_its_own_template_output(samples):
    rejected = [(s.seed_id, s.stage, s.question_type, s.question, s.reason) for s in samples if not s.accepted]
    assert rejected == []


def test_no_site_word_is_used_as_the_lesion_noun(samples):
    sites = "|".join(re.escape(w) for w in sorted(SITE_WORDS, key=len, reverse=True))
    # "a liver" / "an abdomen" not followed by "lesion": a region used as if it were the finding
    as_noun = re.compile(rf"\b(?:a|an)\s+(?:{sites})\b(?!\s+lesion)(?!-)", re.IGNORECASE)
    where_is_site = re.compile(rf"\bwhere is the (?:{sites})\?", re.IGNORECASE)
    for s in samples:
        for text in _texts(s):
            assert not as_noun.search(text), (s.lesion_type, s.organ, text)
            assert not where_is_site.search(text), (s.lesion_type, s.organ, text)


def test_no_x_in_the_x(samples):
    same = re.compile(r"\b(\w+) (?:in|adjacent to|of) the \1\b", re.IGNORECASE)
    # "a liver lesion in the liver", "a lung lesion in the right lung": the site said twice
    site_twice = re.compile(r"\b(\w+) lesion (?:in|adjacent to) the (?:\w+ )*?\1\b", re.IGNORECASE)
    for s in samples:
        for text in _texts(s):
            assert not same.search(text), text
            assert not site_twice.search(text), text


def test_articles_agree(samples):
    double = re.compile(r"\b(?:a|an|the)\s+(?:a|an|the)\b", re.IGNORECASE)
    article = re.compile(r"\b(a|an)\s+([\w-]+)", re.IGNORECASE)
    # the words the template backend puts after an article, read aloud
    takes_an = {"abdominal", "adrenal", "ulcer"}
    takes_a = {"lesion", "liver", "lung", "kidney", "bone", "mediastinal", "soft-tissue", "pelvic",
               "cyst", "hypodense"}
    for s in samples:
        for text in _texts(s):
            assert not double.search(text), text
            assert "  " not in text and " ." not in text and " ," not in text, text
            for art, word in article.findall(text):
                low = word.lower()
                assert low in takes_an | takes_a, (word, text)  # a word this test has not read aloud
                assert art.lower() == ("an" if low in takes_an else "a"), text


def test_questions_and_answers_read_as_sentences(samples):
    for s in samples:
        assert s.question[:1].isupper() and s.question.endswith("?"), s.question
        assert s.answer[:1].isupper() and s.answer.endswith("."), s.answer
        if s.rationale:
            assert s.rationale[:1].isupper() and s.rationale.endswith("."), s.rationale


def test_hard_open_asks_where_the_lesion_is(samples):
    hard = [s for s in samples if s.stage == "hard" and s.question_type == "open" and s.organ]
    assert hard
    for s in hard:
        assert re.fullmatch(r"Where is the [\w -]*(?:lesion|cyst|ulcer)\?", s.question), s.question
        assert s.answer.startswith(("In the ", "Adjacent to the ")), s.answer


def test_closed_questions_do_not_count_the_lesion_phrase_as_an_organ(class_map):
    lex = OrganLexicon.from_vocabulary(class_map)
    base = dict(id="x", seed_id="s", stage="medium", question_type="closed", image="a.png",
                organ="liver", lesion_type="liver", extra={"lesion_phrase": "a liver lesion"})
    no = CoTSample(question="Is there a liver lesion in the spleen?",
                   rationale="There is a liver lesion in the liver, not in the spleen.", answer="No.", **base)
    closed = {v.check: v for v in validate_sample(no, lexicon=lex)}["closed_answer"]
    assert closed.passed, closed.detail
    # the lesion noun alone is no organ claim: naming "liver lesion" does not name the host
    bare = CoTSample(question="Is there a liver lesion in the liver?", rationale="A liver lesion is seen.",
                     answer="Yes.", **base)
    verdicts = {v.check: v for v in validate_sample(bare, lexicon=lex)}
    assert not verdicts["names_organ"].passed
    # a seed written before lesion_phrase: the phrase is derived from the type
    old = CoTSample(**{**base, "extra": {}, "question": "Is there a liver lesion in the spleen?",
                       "rationale": "There is a liver lesion in the liver.", "answer": "No."})
    assert {v.check: v for v in validate_sample(old, lexicon=lex)}["closed_answer"].passed


def test_seed_builder_and_generator_share_one_phrase():
    from medcurric.anatomy import OrganMatch
    from medcurric.io import LesionRecord

    rec = LesionRecord(id="a", image="ct", box=(10, 10, 24, 20), lesion_type="abdomen", spacing=(1.0, 1.0))
    m = OrganMatch(organ="adrenal_gland_right", label=1, score=1.0, criterion="ioa", outcome="inside")
    seed = SeedBuilder().build(rec, m)
    assert seed.lesion_phrase == "an abdominal lesion"
    assert seed.text.startswith(("There is a 14 mm abdominal lesion", "A 14 mm abdominal lesion"))
    restored = FactualSeed.from_dict({k: v for k, v in seed.to_dict().items() if k != "lesion_phrase"})
    assert restored.lesion_phrase == "an abdominal lesion"  # older seeds derive it


def test_seed_sentences_read_right_for_every_type_and_organ(class_map):
    from medcurric.anatomy import Location, OrganMatch
    from medcurric.io import LesionRecord

    builder = SeedBuilder(class_map=class_map)
    site_twice = re.compile(r"\b(\w+) lesion (?:is seen |is located |lies |)(?:in|adjacent to) the (?:\w+ )*?\1\b",
                            re.IGNORECASE)
    double = re.compile(r"\b(?:a|an|the)\s+(?:a|an|the)\b", re.IGNORECASE)
    article = re.compile(r"\b(a|an)\s+([\w-]+)", re.IGNORECASE)
    takes_an = {"abdominal", "adrenal", "ulcer", "8", "11", "18"}
    for lesion_type in DEEPLESION_TYPES + OTHER_TYPES:
        for size in (8.0, 11.0, 14.0, 18.0):
            rec = LesionRecord(id=f"{lesion_type}{size}", image="ct", box=(0, 0, size, 4), lesion_type=lesion_type,
                               spacing=(1.0, 1.0))
            for organ in ORGANS:
                for outcome in ("inside", "adjacent"):
                    m = OrganMatch(organ=organ, label=1, score=0.9, criterion="ioa", outcome=outcome)
                    loc = Location(organ=organ, size_mm=(size, 4.0), phrase="central part of the")
                    text = builder.build(rec, m, loc).text
                    assert not site_twice.search(text) and not double.search(text), text
                    for art, word in article.findall(text):
                        assert art.lower() == ("an" if word.lower() in takes_an else "a"), text
