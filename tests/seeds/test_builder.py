from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.anatomy import (
    BoxOrganMatcher,
    Criterion,
    Location,
    MatchOutcome,
    OrganMatch,
    describe_location,
)
from medcurric.errors import DataFormatError, TemplateError, WrongTypeError
from medcurric.io import LesionRecord
from medcurric.seeds import FactualSeed, SeedBuilder, SeedTemplates, lesion_noun, render_template
from medcurric.testing import make_phantom

INSIDE = OrganMatch(organ="liver", label=5, score=0.9, criterion="ioa", outcome="inside")
ADJ = OrganMatch(
    organ="kidney_left", label=3, score=0.2, criterion="ioa", outcome="adjacent", distance_mm=0.0
)
UNM = OrganMatch(organ=None, label=None, score=0.0, criterion="ioa", outcome="unmatched")


def _rec(rid="r1", lesion_type="-1", **kw):
    return LesionRecord(
        id=rid, image="img", box=(10, 10, 24, 20), lesion_type=lesion_type, spacing=(1.0, 1.0), **kw
    )


def test_outcomes_and_unknown_type():
    b = SeedBuilder(
        templates={
            "inside": ["There is {a_lesion} in {where}."],
            "adjacent": ["{A_lesion} adjacent to {the_organ}."],
            "unmatched": ["{A_lesion} {side_phrase}; organ uncertain."],
        }
    )
    loc = Location(
        organ="liver",
        size_mm=(14.0, 10.0),
        phrase="right posterior part of the",
        laterality="right",
    )
    s = b.build(_rec(), INSIDE, loc)
    assert s.text == "There is a 14 mm lesion in the right posterior part of the liver."
    assert (
        s.lesion_type == "lesion"
        and s.organ == "liver"
        and s.organ_label == 5
        and s.outcome is MatchOutcome.INSIDE
        and s.criterion is Criterion.IOA
    )
    assert s.location is loc and s.location_phrase == "right posterior part of the"
    assert b.build(_rec(), ADJ, None).text == "A 14 mm lesion adjacent to the left kidney."
    u = b.build(_rec(lesion_type="liver"), UNM, Location(laterality="left", size_mm=(8.0, 5.0)))
    assert u.text == "An 8 mm liver lesion on the left side; organ uncertain."
    assert u.organ is None and u.organ_label is None and u.score == 0.0
    assert b.build(_rec(), None).outcome is MatchOutcome.UNMATCHED
    again = FactualSeed.from_json(s.to_json())
    assert again == s and type(again.location) is Location and again.outcome is MatchOutcome.INSIDE


def test_image_size_moves_from_the_record_extra_to_the_seed():
    # DeepLesion's reader keeps the Image_size column as extra["image_size"] (floats)
    s = SeedBuilder().build(_rec(extra={"image_size": [512.0, 384.0], "series": "s1"}), INSIDE)
    assert s.image_size == (512, 384) and s.extra == {"series": "s1"}
    assert SeedBuilder().build(_rec(), INSIDE).image_size is None


@pytest.mark.parametrize(
    "hostile", ["{organ.__class__}", "${x}", "{where}", "{0}", "%(a)s", "{{x}}"]
)
def test_metadata_text_stays_verbatim(hostile):
    b = SeedBuilder(templates={"inside": ["There is {a_lesion} in {where}."]})
    rec = _rec(lesion_type=hostile)
    s = b.build(rec, INSIDE, Location(organ="liver", phrase="upper part of the"))
    assert hostile in s.text
    assert s.text == f"There is a 14 mm {hostile} in the upper part of the liver."
    assert s.lesion_type == hostile


def test_template_choice_is_deterministic_and_seeded():
    ids = [f"case{i}" for i in range(60)]
    b0, b0b, b1 = SeedBuilder(seed=0), SeedBuilder(seed=0), SeedBuilder(seed=1)
    t0 = [b0.build(_rec(i), INSIDE).template for i in ids]
    assert t0 == [b0b.build(_rec(i), INSIDE).template for i in ids]
    assert len(set(t0)) == 3  # every default inside template is used
    assert t0 != [b1.build(_rec(i), INSIDE).template for i in ids]
    # the same choice in a fresh interpreter with another hash seed (not Python's salted hash())
    code = (
        "from medcurric.seeds import SeedBuilder;from medcurric.io import LesionRecord;"
        "from medcurric.anatomy import OrganMatch;"
        "m=OrganMatch(organ='liver',label=5,score=1.0,criterion='ioa',outcome='inside');"
        f"print([SeedBuilder().build(LesionRecord(id=i,image='x',box=(0,0,1,1)),m).template for i in {ids!r}])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert out.stdout.strip() == repr(t0)


def test_templates_validation_and_json(tmp_path):
    with pytest.raises(TemplateError, match=r"'inside-0'.*\{lesion.__class__\} is not a plain name"):
        SeedTemplates.from_mapping({"inside": ["{lesion.__class__}"]})
    with pytest.raises(TemplateError, match=r"\{0\} is not a plain name"):
        SeedTemplates.from_mapping({"inside": ["{0}"]})
    with pytest.raises(DataFormatError, match="unknown field"):
        SeedTemplates.from_mapping({"inside": ["{lesions}"]})
    with pytest.raises(DataFormatError, match="Unknown outcome"):
        SeedTemplates.from_mapping({"inisde": ["x"]})
    with pytest.raises(DataFormatError):
        SeedTemplates.from_mapping({"inside": []})
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"inside": {"mine": "Seen: {sized_lesion} in {where}."}}))
    b = SeedBuilder(templates=f)
    s = b.build(_rec(lesion_type="nodule"), INSIDE, Location(organ="liver", size_mm=(11.0, 3.0)))
    assert (s.text, s.template) == ("Seen: 11 mm nodule in the liver.", "mine")
    # other outcomes keep the defaults
    assert b.templates.choices("adjacent") == SeedTemplates.from_mapping().choices("adjacent")
    with pytest.raises(WrongTypeError):
        SeedBuilder().build({"id": "x"}, INSIDE)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.sampled_from(["bone", "Abdomen", "MEDIASTINUM", "liver", "lung", "kidney", "pelvis", "-1"]),
                 st.text(alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc")), max_size=40)))
def test_any_lesion_text_is_inserted_as_is(text):
    b = SeedBuilder(templates={"inside": ["<{lesion}>"]})
    s = b.build(_rec(lesion_type=text), INSIDE)
    expected = (
        "lesion"
        if text.lower() in ("", "-1", "unknown", "none", "nan", "null", "lesion", "n/a")
        else text
    )
    sites = {"bone": "bone", "abdomen": "abdominal", "mediastinum": "mediastinal", "liver": "liver",
             "lung": "lung", "kidney": "kidney", "soft tissue": "soft-tissue", "pelvis": "pelvic"}
    if text.lower() in sites:
        expected = f"{sites[text.lower()]} lesion"
    assert lesion_noun(text) == expected
    if text.lower() == "liver":  # the host is the liver: its name is not said twice
        expected = "lesion"
    assert s.text == f"<{expected}>"


def test_render_template_one_pass():
    assert render_template("{a} {b}", {"a": "{b}", "b": "x"}) == "{b} x"
    with pytest.raises(TemplateError, match=r"\{c\} have no value"):
        render_template("{c}", {"a": "1"})


def test_phantom_seeds_end_to_end():
    ph = make_phantom()
    lm = ph.label_map()
    ms = BoxOrganMatcher(level="group").match_records(ph.key_slice_lesions, lm)
    b = SeedBuilder()
    seeds = {}
    for r, m in zip(ph.key_slice_lesions, ms, strict=True):
        loc = describe_location(r.box, lm, m, slice_index=r.slice_index)
        seeds[r.id] = b.build(r, m, loc)
    assert "lower lobe of the right lung" in seeds["lung-rll-key"].text
    assert "adjacent to the left kidney" in seeds["kidney-near-key"].text
    assert "uncertain" in seeds["fat-key"].text
    assert seeds["liver-small-key"].iou is not None and seeds["liver-small-key"].ioa == 1.0
    assert seeds["liver-small-key"].size_mm == (15.0, 15.0)
    assert "15 mm lesion" in seeds["liver-small-key"].text  # not "liver lesion ... of the liver"
    assert seeds["liver-small-key"].lesion_phrase == "a liver lesion"
