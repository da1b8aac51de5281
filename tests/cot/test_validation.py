from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.cot import CoTSample, OrganLexicon, cited_boxes, validate_sample


def sample(
    rationale="",
    *,
    stage="medium",
    qt="open",
    organ="liver",
    lesion="cyst",
    question="Where?",
    answer="In the liver.",
    box_norm=(0.1, 0.2, 0.3, 0.4),
):
    return CoTSample(
        id="x",
        seed_id="s",
        stage=stage,
        question_type=qt,
        question=question,
        rationale=rationale,
        answer=answer,
        image="a.png",
        organ=organ,
        lesion_type=lesion,
        box_norm=box_norm,
    )


def verdicts(s, lexicon, **kw):
    return {v.check: v for v in validate_sample(s, lexicon=lexicon, **kw)}


@pytest.mark.parametrize(
    ("rationale", "organ_ok", "lesion_ok", "confusion_ok"),
    [
        ("A cyst lies in the liver.", True, True, True),
        ("A cyst lies in the hepatic parenchyma.", True, True, True),
        ("Cysts are seen in the LIVER.", True, True, True),
        ("A cyst lies in the spleen.", False, True, False),
        ("The liver is normal. A cyst lies in the spleen.", True, True, False),
        ("A cyst lies in the liver, not the spleen.", True, True, True),
        ("A cyst lies in the liver rather than the left kidney.", True, True, True),
        ("A cyst lies in the liver. The spleen is normal.", True, True, True),
        ("A cyst lies in the liver, adjacent to the right kidney.", True, True, True),
        ("The liver shows a mass.", True, False, True),
        ("There is a cyst.", False, True, True),
        ("A cyst lies in the liver and the spleen.", True, True, False),
    ],
)
def test_organ_lesion_and_confusion_rules(lexicon, rationale, organ_ok, lesion_ok, confusion_ok):
    v = verdicts(sample(rationale), lexicon)
    assert (
        v["names_organ"].passed,
        v["names_lesion"].passed,
        v["no_anatomical_confusion"].passed,
    ) == (organ_ok, lesion_ok, confusion_ok)
    assert "cites_box" not in v and "closed_answer" not in v


def test_laterality_is_a_different_organ(lexicon):
    s = sample("A cyst lies in the left kidney.", organ="kidney_right")
    v = verdicts(s, lexicon)
    assert not v["names_organ"].passed and not v["no_anatomical_confusion"].passed
    assert "left kidney" in v["no_anatomical_confusion"].detail
    v = verdicts(sample("A cyst lies in the right kidney.", organ="kidney_right"), lexicon)
    assert v["names_organ"].passed and v["no_anatomical_confusion"].passed


def test_lesion_head_noun_and_generic_lesion(lexicon):
    assert verdicts(sample("Nodules are in the liver.", lesion="pulmonary nodule"), lexicon)[
        "names_lesion"
    ].passed
    for word in ("lesion", "abnormality", "mass", "finding"):
        assert verdicts(sample(f"A {word} is in the liver.", lesion="lesion"), lexicon)[
            "names_lesion"
        ].passed


def test_unmatched_seed_must_not_claim_an_organ(lexicon):
    v = verdicts(sample("A cyst is visible; its site is unknown.", organ=None), lexicon)
    assert v["names_organ"].passed and v["no_anatomical_confusion"].passed
    v = verdicts(sample("A cyst is in the spleen.", organ=None), lexicon)
    assert (
        not v["no_anatomical_confusion"].passed
        and "unmatched" in v["no_anatomical_confusion"].detail
    )


def test_unknown_seed_organ_is_added_to_the_lexicon(lexicon):
    v = verdicts(sample("A cyst is in the gallbladder.", organ="gallbladder"), lexicon)
    assert v["names_organ"].passed and v["no_anatomical_confusion"].passed


def test_easy_box_citation(lexicon):
    ok = "The box [0.1000, 0.2000, 0.3000, 0.4000] lies over the liver; a cyst is there."
    v = verdicts(sample(ok, stage="easy"), lexicon)
    assert v["cites_box"].passed
    v = verdicts(sample(ok.replace("0.4000", "0.4300"), stage="easy"), lexicon)
    assert not v["cites_box"].passed and "0.0300" in v["cites_box"].detail
    v = verdicts(sample(ok.replace("0.4000", "0.4300"), stage="easy"), lexicon, box_tolerance=0.05)
    assert v["cites_box"].passed
    v = verdicts(sample("A cyst lies in the liver.", stage="easy"), lexicon)
    assert not v["cites_box"].passed and "cites no" in v["cites_box"].detail
    # the best of several cited boxes counts
    two = "Not [0.9, 0.9, 1.0, 1.0] but [0.1, 0.2, 0.3, 0.4]: a cyst in the liver."
    assert verdicts(sample(two, stage="easy"), lexicon)["cites_box"].passed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=4, max_size=4),
    st.lists(st.floats(-0.1, 0.1), min_size=4, max_size=4),
    st.floats(0, 0.1),
)
def test_box_check_matches_a_brute_force_max_error(ref, delta, tol):
    lexicon = OrganLexicon({"liver": []})
    ref = [round(v, 4) for v in ref]
    cited = [round(r + d, 4) for r, d in zip(ref, delta, strict=True)]
    text = "A cyst in the liver at [" + ", ".join(f"{c:.4f}" for c in cited) + "]."
    v = verdicts(sample(text, stage="easy", box_norm=tuple(ref)), lexicon, box_tolerance=tol)[
        "cites_box"
    ]
    err = max(abs(c - r) for c, r in zip(cited, ref, strict=True))
    assert v.passed == (err <= tol)


def test_cited_boxes_forms():
    assert cited_boxes("[1, 2, 3, 4] (0.5,0.5,0.6,0.6) [1,2,3]") == [
        (1, 2, 3, 4),
        (0.5, 0.5, 0.6, 0.6),
    ]


@pytest.mark.parametrize(
    ("question", "answer", "organ", "ok"),
    [
        ("Is the cyst in the liver?", "Yes.", "liver", True),
        ("Is the cyst in the liver?", "No, it is not.", "liver", False),
        ("Is the cyst in the spleen?", "No.", "liver", True),
        ("Is the cyst in the splenic tissue?", "yes", "liver", False),
        ("Is the cyst in the liver or the spleen?", "Yes.", "liver", False),
        ("Is the cyst in the liver?", "Maybe.", "liver", False),
        ("Is there a cyst in the image?", "Yes.", None, True),
        ("Is there a cyst in the image?", "No.", None, False),
        ("Is there a cyst in the liver?", "Yes.", None, False),
    ],
)
def test_closed_answers_agree_with_the_seed(lexicon, question, answer, organ, ok):
    rationale = "A cyst lies in the liver." if organ else "A cyst is visible."
    v = verdicts(
        sample(rationale, qt="closed", question=question, answer=answer, organ=organ), lexicon
    )
    assert v["closed_answer"].passed is ok


def test_hard_samples_check_the_answer(lexicon):
    v = verdicts(
        sample("", stage="hard", question="Where is the cyst?", answer="In the liver."), lexicon
    )
    assert all(x.passed for x in v.values())
    v = verdicts(
        sample("", stage="hard", question="Where is the cyst?", answer="In the spleen."), lexicon
    )
    assert not v["names_organ"].passed and not v["no_anatomical_confusion"].passed
    v = verdicts(
        sample(
            "", stage="hard", qt="closed", question="Is there a cyst in the spleen?", answer="No."
        ),
        lexicon,
    )
    assert all(x.passed for x in v.values()), v


def test_class_map_as_vocabulary():
    anatomy = pytest.importorskip("medcurric.anatomy")
    lex = OrganLexicon.from_vocabulary(anatomy.ClassMap.totalsegmentator())
    assert "liver" in lex.names and len(lex.names) > 100
    v = verdicts(sample("A cyst is in the left upper lobe.", organ="lung_upper_lobe_left"), lex)
    assert v["names_organ"].passed and v["no_anatomical_confusion"].passed
    v = verdicts(sample("A cyst is in the right lower lobe.", organ="lung_upper_lobe_left"), lex)
    assert not v["no_anatomical_confusion"].passed
    v = verdicts(sample("A cyst lies anterior to the L3 vertebra, in the liver."), lex)
    assert v["no_anatomical_confusion"].passed
