from __future__ import annotations

import warnings

import pytest

from medcurric.cot import (
    TEMPLATE_FIELDS,
    CoTGenerator,
    PromptTemplate,
    TemplateBackend,
    default_templates,
    fill_template,
)
from medcurric.cot.templates import QuestionType, reply_format
from medcurric.errors import DataFormatError, InvalidOptionError, MedcurricWarning, TemplateError
from medcurric.stage import Stage


@pytest.mark.parametrize(
    "value",
    [
        "{__class__}",
        "{0}",
        "{lesion}",
        "{organ.__class__.__mro__}",
        "{{x}}",
        "%s %(organ)s",
        "${organ}",
    ],
)
def test_values_are_data_never_template_syntax(value):
    out = fill_template("A {lesion} in the {organ}.", {"lesion": value, "organ": "liver"})
    assert out == f"A {value} in the liver."


def test_literal_braces_and_malformed_fields():
    assert fill_template("{{lesion}} {lesion}", {"lesion": "cyst"}) == "{lesion} cyst"
    # Not a plain field name: refused, never evaluated.
    for bad in ("{lesion.__class__}", "{0}"):
        with pytest.raises(TemplateError, match="not a plain name"):
            fill_template(bad, {"lesion": "cyst"})
        with pytest.raises(TemplateError, match=r"'t'.*not a plain name"):
            PromptTemplate("t", "easy", "open", bad)


def test_missing_value_and_unknown_field_raise():
    with pytest.raises(DataFormatError, match="no value"):
        fill_template("{lesion}", {})
    with pytest.raises(DataFormatError, match="unknown field"):
        PromptTemplate("t", "easy", "open", "{lesions}")
    with pytest.raises(DataFormatError, match="unknown field"):
        PromptTemplate("t", "easy", "open", "ok", system="{sytem}")
    with pytest.raises(InvalidOptionError, match="Did you mean 'medium'"):
        PromptTemplate("t", "medum", "open", "x")
    with pytest.raises(InvalidOptionError):
        PromptTemplate("t", "easy", "yesno", "x")


def test_default_templates_cover_every_combination_and_use_known_fields():
    ts = default_templates()
    combos = {(t.stage, t.question_type, t.matched) for t in ts}
    assert combos == {(s, q, m) for s in Stage for q in QuestionType for m in (True, False)}
    for t in ts:
        assert "{reply_format}" in t.text
        if t.stage is Stage.EASY:
            assert "{box}" in t.text
        else:
            assert "{box}" not in t.text
        if not t.matched:
            assert "{organ}" not in t.text and "{queried_organ}" not in t.text
        t.render({k: "v" for k in TEMPLATE_FIELDS})  # every field resolvable
    assert "Reasoning" not in reply_format(Stage.HARD)
    assert "Reasoning" in reply_format(Stage.EASY)


def test_seed_text_with_template_syntax_reaches_the_prompt_verbatim(seed_factory):
    evil = "{__class__}"
    seed = seed_factory(0, lesion=evil, size=(80, 64))
    gen = CoTGenerator(TemplateBackend(), vocabulary={"liver": [], "spleen": []})
    requests = gen.requests(seed)
    assert requests
    for r in requests:
        assert evil in r.prompt
        assert "<class" not in r.prompt
        assert r.fields["lesion_noun"] == evil and r.fields["lesion"] == f"a {evil}"
    samples = list(gen.generate([seed]))
    assert all(s.lesion_type == evil for s in samples)
    assert any(evil in s.rationale for s in samples)


def test_easy_prompt_cites_normalised_box_with_four_decimals(seed_factory):
    seed = seed_factory(0, size=(80, 64))  # box (10, 12, 30, 40)
    gen = CoTGenerator(TemplateBackend(), vocabulary={"liver": []}, stages=["easy"])
    (r_open, r_closed) = gen.requests(seed)
    expected = f"[{10 / 80:.4f}, {12 / 64:.4f}, {30 / 80:.4f}, {40 / 64:.4f}]"
    assert expected == "[0.1250, 0.1875, 0.3750, 0.6250]"
    assert expected in r_open.prompt and expected in r_closed.prompt


def test_user_templates_replace_defaults(seed_factory):
    mine = [
        PromptTemplate(
            "mine-medium", "medium", "open", "Tell me about the {lesion_noun}. {reply_format}"
        )
    ]
    gen = CoTGenerator(
        TemplateBackend(),
        templates=mine,
        stages=["medium"],
        question_types=["open"],
        vocabulary={"liver": []},
    )
    (r,) = gen.requests(seed_factory(0))
    assert r.template_id == "mine-medium"
    assert r.prompt.startswith("Tell me about the hypodense lesion.")
    with pytest.raises(DataFormatError, match="unique"):
        CoTGenerator(TemplateBackend(), templates=mine * 2)


def test_a_template_writing_an_article_before_lesion_warns():
    # {lesion} holds "a liver lesion": "a {lesion}" would read "a a liver lesion"
    with pytest.warns(MedcurricWarning, match=r"'a \{lesion\}'.*'the \{lesion_noun\}'"):
        PromptTemplate("old", "medium", "closed", "Is there a {lesion} in the {organ}?")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PromptTemplate("new", "medium", "closed", "Is there {lesion} in the {organ}? The {lesion_noun}.")
