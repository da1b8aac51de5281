"""Answer normalisation: LLaVA-Med quirks by hand-computed values, the default mode by invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import InvalidOptionError, WrongTypeError
from medcurric.eval import Compat, normalize_answer


def llava(text: str) -> str:
    return normalize_answer(text, compat="llava-med")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # lower-cased, articles dropped, number words -> digits, and "none" -> "0" too
        ("The Liver", "liver"),
        ("an apple a day", "apple day"),
        ("Two lesions", "2 lesions"),
        ("none", "0"),
        ("zero ten eleven", "0 10 eleven"),
        # a mark touching a space is deleted, otherwise replaced by a space ...
        ("left/right", "left right"),
        ("left / right", "left right"),
        ("yes, there is", "yes there is"),
        ("(ct)", "ct"),
        # ... decided on the whole text: one spaced '/' deletes every '/', gluing words
        ("a/b and c /d", "ab and c d"),
        # a digit-comma-digit group anywhere deletes every handled mark instead of spacing it
        ("1,000 cells/ml", "1000 cellsml"),
        # periods are deleted unless a digit follows (the look-behind typo)
        ("t2.", "t2"),
        ("end.next", "endnext"),
        ("1.5 cm", "1.5 cm"),
        ("3.x", "3x"),
        # marks outside the 21 handled ones survive inside tokens
        ("answer: yes", "answer: yes"),
        ("50%", "50%"),
        ("a*b", "a*b"),
        # contractions: restored, except capitalised keys and the reversed entry
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("im", "im"),
        ("shes", "shes"),
        ("somebody'd", "somebodyd"),
        ("couldnt've", "couldn't've"),
        ("couldntve", "couldntve"),
    ],
)
def test_llava_med_quirks(text: str, expected: str) -> None:
    assert llava(text) == expected


def test_llava_med_deletes_at_most_32_periods_per_pass() -> None:
    text = " ".join(["x."] * 40)
    once = llava(text)
    assert once.count(".") == 8
    assert llava(once).count(".") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Left-Lung, probably.", "left lung probably"),
        ("none", "none"),
        ("end.next", "end next"),
        ("1,000 cells/ml", "1000 cells ml"),
        ("1.5 cm.", "1.5 cm"),
        ("answer: yes", "answer yes"),
        ("50%", "50"),
        ("dont", "don't"),
        ("don't", "don't"),
        ("Im here", "i'm here"),
        ("shes", "she's"),
        ("somebody'd", "somebody'd"),
        ("'quoted'", "quoted"),
        ("ＬＩＶＥＲ", "liver"),
        ("STRASSE straße", "strasse strasse"),
        ("left / right", "left right"),
        ("left/right", "left right"),
        ("a/b and c /d", "b and c d"),
    ],
)
def test_default_normalisation(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


_piece = st.sampled_from(
    [
        "the",
        "A",
        "liver",
        "Left",
        "lung",
        "one",
        "Ten",
        "none",
        "dont",
        "it's",
        "1",
        "2",
        "3",
        ",",
        ".",
        "/",
        "-",
        "(",
        ")",
        ":",
        "?",
        "!",
        "'",
        " ",
        "  ",
        "yes",
        "No",
        "nodule",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_piece, max_size=12).map("".join))
def test_default_is_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(once) == once


@settings(max_examples=200, deadline=None)
@given(st.lists(_piece, max_size=12).map("".join))
def test_llava_med_second_pass_changes_nothing_below_32_periods(text: str) -> None:
    # The published script normalises twice; that matters only past 32 periods.
    once = llava(text)
    assert llava(once) == once


def test_errors() -> None:
    with pytest.raises(WrongTypeError, match="str"):
        normalize_answer(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="llava-med"):
        normalize_answer("x", compat="llava_med2")
    assert normalize_answer("x", compat=Compat.LLAVA_MED) == "x"
