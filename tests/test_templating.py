"""The one ``{field}`` substitution: rules, hostile values, and ``str.format_map`` as the reference."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.cot import fill_template as cot_fill_template
from medcurric.curriculum.render import substitute
from medcurric.errors import DataFormatError, TemplateError
from medcurric.seeds import render_template
from medcurric.templating import fill_template, template_fields

NAMES = ["lesion", "organ", "box", "x", "_y2"]
HOSTILE = [
    "{x}",
    "{organ}",
    "{{x}}",
    "{organ.__class__.__mro__}",
    "{0}",
    "{x!r}",
    "{x:>10}",
    "}{",
    "${x} %(x)s %s",
    "<script>alert('x')</script>",
]


def test_fields_escapes_and_one_pass() -> None:
    assert fill_template("{{x}} {x} {{{x}}}", {"x": "v"}) == "{x} v {v}"
    assert fill_template("no fields", {}) == "no fields"
    assert fill_template("{a}{b}", {"a": "{b}", "b": "{a}"}) == "{b}{a}"
    assert template_fields("{b} {a} {b} {{c}}") == ("b", "a")
    assert fill_template("{n} mm", {"n": 14}) == "14 mm"  # values go through str


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_literal(value: str) -> None:
    out = fill_template("[{x}] in the {organ}.", {"x": value, "organ": "liver"})
    assert out == f"[{value}] in the liver."


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("{lesion!r}", "{lesion!r}"),
        ("A {a.b} c", "{a.b}"),
        ("{a[0]}", "{a[0]}"),
        ("{x:>3}", "{x:>3}"),
        ("{0}", "{0}"),
        ("{}", "{}"),
        ("{ x }", "{ x }"),
    ],
)
def test_anything_but_a_plain_name_is_refused(template: str, field: str) -> None:
    with pytest.raises(TemplateError, match="not a plain name") as info:
        fill_template(template, {"lesion": "cyst", "a": "b", "x": "y"})
    assert field in str(info.value)
    with pytest.raises(TemplateError):
        template_fields(template)


@pytest.mark.parametrize(("template", "brace"), [("a { b", "'{'"), ("a } b", "'}'"), ("}}}", "'}'"), ("{x", "'{'")])
def test_a_lone_brace_is_refused(template: str, brace: str) -> None:
    with pytest.raises(TemplateError, match=f"single {brace}"):
        fill_template(template, {"x": "1"})


def test_a_missing_field_names_it() -> None:
    with pytest.raises(TemplateError, match=r"\{organ\} have no value.*\['lesion'\]") as info:
        fill_template("{lesion} in {organ}", {"lesion": "cyst"})
    assert isinstance(info.value, DataFormatError) and isinstance(info.value, ValueError)


def test_the_three_call_sites_use_it() -> None:
    assert cot_fill_template is fill_template
    for fn in (substitute, render_template):
        assert fn("{a} {b}", {"a": "{b}", "b": "x"}) == "{b} x"
        with pytest.raises(TemplateError, match="not a plain name"):
            fn("{a.b}", {"a": "x"})
        with pytest.raises(TemplateError, match="no value"):
            fn("{c}", {"a": "x"})
    assert substitute("{{q}} {q}", {"q": "x"}) == "{q} x"


# Literal text made of anything (braces doubled, as a template author must write them) and
# plain fields; values of any text.
_literal = st.text(max_size=8).map(lambda t: t.replace("{", "{{").replace("}", "}}"))
_field = st.sampled_from(NAMES).map(lambda n: "{" + n + "}")
_templates = st.lists(st.one_of(_literal, _field), max_size=8).map("".join)
_values = st.fixed_dictionaries({n: st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE)) for n in NAMES})


@settings(max_examples=300, deadline=None)
@given(_templates, _values)
def test_plain_fields_equal_str_format_map(template: str, values: dict[str, str]) -> None:
    assert fill_template(template, values) == template.format_map(values)
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    assert template_fields(template) == tuple(dict.fromkeys(names))
