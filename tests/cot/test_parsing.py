from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.cot import MAX_REPLY_CHARS, parse_reply
from medcurric.errors import ParseError

Q, R, A = "Where is the lesion?", "The box lies over the liver. A cyst is there.", "In the liver."

GOOD = [
    f"Question: {Q} | Reasoning: {R} | Answer: {A}",
    f"Question: {Q}\nReasoning: {R}\nAnswer: {A}\n",
    f"**Question:** {Q}\n\n**Reasoning:** {R}\n\n**Answer:** {A}",
    f"```\nQuestion: {Q} | Reasoning: {R} | Answer: {A}\n```",
    f"Question:   {Q}    Reasoning:\n\n  {R}   Answer:    {A}  ",
    f"question: {Q} | rationale: {R} | answer: {A}",
    f"## Question: {Q}\n## Reasoning: {R}\n## Answer: {A}",
    f"Sure! Here it is.\nQuestion: {Q} | Reasoning: {R} | Answer: {A}",
    f"Reasoning: {R} | Question: {Q} | Answer: {A}",
    f"Q: {Q}\nReasoning: {R}\nA: {A}",
    f"- Question: {Q}\n- Reasoning: {R}\n- Answer: {A}",
    json.dumps({"question": Q, "reasoning": R, "answer": A}),
    json.dumps({"Question": Q, "Rationale": R, "Answer": A}),
    "```json\n" + json.dumps({"question": Q, "rationale": R, "answer": A}, indent=2) + "\n```",
    "Here is the JSON: "
    + json.dumps({"question": Q, "chain_of_thought": R, "answer": A})
    + " Done.",
]


@pytest.mark.parametrize("reply", GOOD)
def test_tolerated_noise(reply):
    p = parse_reply(reply)
    assert (p.question, p.rationale, p.answer) == (Q, R, A)


def test_json_non_string_answers_and_hard_without_rationale():
    p = parse_reply(
        json.dumps({"question": "Is it there?", "reasoning": "Yes, in the liver.", "answer": True})
    )
    assert p.answer == "yes" and p.format == "json"
    p = parse_reply("Question: Is there a cyst? | Answer: No.", require_rationale=False)
    assert (p.question, p.rationale, p.answer) == ("Is there a cyst?", "", "No.")


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I cannot help with that.", "no labels"),
        (f"Question: {Q} | Reasoning: {R}", r"\['answer'\]"),
        (f"Question: {Q} | Answer: {A}", r"\['rationale'\]"),
        (f"Question: | Reasoning: {R} | Answer: {A}", r"\['question'\]"),
        (json.dumps({"question": Q, "reasoning": {"x": 1}, "answer": A}), "string"),
        (json.dumps({"foo": 1}), "no labels"),
        ("Question: " + "x" * MAX_REPLY_CHARS, "at most"),
    ],
)
def test_rejects_with_a_reason(reply, match):
    with pytest.raises(ParseError, match=match):
        parse_reply(reply)


def test_non_text_is_a_parse_error():
    for bad in (None, 3, b"Question: a", ["Question: a"]):
        with pytest.raises(ParseError, match="as text"):
            parse_reply(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_never_raises_anything_but_parse_error(text):
    try:
        p = parse_reply(text)
    except ParseError:
        return
    assert p.question and p.answer and p.rationale


_LABELISH = st.sampled_from(
    [
        "Question:",
        "Reasoning:",
        "Answer:",
        "Rationale:",
        "Q:",
        "A:",
        "|",
        "**",
        "```",
        "```json",
        "{",
        "}",
        '"question"',
        '"answer":',
        "\n",
        " ",
        "[0.1, 0.2]",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_LABELISH, st.text(max_size=12)), max_size=40), st.booleans())
def test_fuzz_label_soup(parts, need):
    try:
        parse_reply("".join(parts), require_rationale=need)
    except ParseError:
        pass


_PLAIN = st.text(
    alphabet=st.characters(
        whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=" .,?()[]"
    ),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip(" .,"))


@settings(max_examples=200, deadline=None)
@given(_PLAIN, _PLAIN, _PLAIN, st.sampled_from([" | ", "\n", "  ", " "]), st.booleans())
def test_round_trip_of_formatted_replies(q, r, a, sep, bold):
    # The parts never contain ':' so they cannot contain a label.
    def lab(name):
        return f"**{name}:**" if bold else f"{name}:"

    text = f"{lab('Question')} {q}{sep}{lab('Reasoning')} {r}{sep}{lab('Answer')} {a}"
    p = parse_reply(text)

    def norm(s):
        return " ".join(s.split())

    assert (p.question, p.rationale, p.answer) == (norm(q), norm(r), norm(a))


@settings(max_examples=100, deadline=None)
@given(_PLAIN, _PLAIN, _PLAIN)
def test_round_trip_json(q, r, a):
    p = parse_reply(
        "```json\n" + json.dumps({"question": q, "reasoning": r, "answer": a}) + "\n```"
    )
    assert (p.question, p.rationale, p.answer) == tuple(" ".join(s.split()) for s in (q, r, a))
