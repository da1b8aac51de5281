"""VQA scoring: LLaVA-Med quirks against hand-computed values; the default mode against an
independent, straightforward reference implementation written here."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import DataFormatError, InvalidOptionError, MedcurricWarning
from medcurric.eval import (
    VQAItem,
    VQAScores,
    closed_hit,
    exact_match,
    final_answer,
    normalize_answer,
    score_vqa,
    token_f1,
)

# --- LLaVA-Med compat: each quirk, by hand -------------------------------------------


def test_repeated_word_inflates_recall_in_compat() -> None:
    # answer "left lung", prediction "left left": tp adds the prediction's 2 "left"s,
    # fn = 1 ("lung"), fp = 0 -> recall 2/3, precision 2/2, F1 0.8.
    f1, p, r = token_f1("left left", "left lung", compat="llava-med")
    assert (p, r) == (1.0, pytest.approx(2 / 3))
    assert f1 == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    # the clipped overlap counts one "left": 1/2 each
    assert token_f1("left left", "left lung") == (0.5, 0.5, 0.5)
    # three repeats: tp = 3, fn = 1 -> recall 3/4
    assert token_f1("left left left", "left lung", compat="llava-med")[2] == pytest.approx(0.75)


def test_compat_exact_match_is_distinct_answer_words_over_prediction_length() -> None:
    assert exact_match("liver and spleen", "liver", compat="llava-med") == pytest.approx(1 / 3)
    # distinct reference words: "left" once, even though it is in the answer twice
    assert exact_match("left left", "left left", compat="llava-med") == pytest.approx(1 / 2)
    assert exact_match("", "liver", compat="llava-med") == 0.0
    assert exact_match("liver and spleen", "liver") == 0.0
    assert exact_match("The liver.", "liver") == 1.0


def test_compat_f1_zero_cases() -> None:
    assert token_f1("", "liver", compat="llava-med") == (0.0, 0.0, 0.0)
    assert token_f1("liver", "", compat="llava-med") == (0.0, 0.0, 0.0)
    assert token_f1("kidney", "liver", compat="llava-med") == (0.0, 0.0, 0.0)
    assert token_f1("", "") == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("compat", ["llava-med", "llava-med-2023-08"])
def test_nodule_counts_as_no_in_compat(compat: str) -> None:
    # "no" is a substring of "nodule": the prediction is taken as a yes/no reply ...
    assert closed_hit("a nodule is present", "no", compat=compat) == 1.0
    # ... and with answer "yes" it contains "no" but not "yes": a 0 in v1.0.0, dropped
    # (None) in the first release
    dropped = closed_hit("a nodule is present", "yes", compat=compat)
    assert dropped == (None if compat == "llava-med-2023-08" else 0.0)
    assert closed_hit("normal", "no", compat=compat) == 1.0
    # the default mode reads whole words only: no yes/no word -> a miss either way
    assert closed_hit("a nodule is present", "no") == 0.0
    assert closed_hit("a nodule is present", "yes") == 0.0


def test_closed_miss_leaves_the_denominator_in_compat() -> None:
    refs = [
        VQAItem("1", "q", "yes", "closed"),
        VQAItem("2", "q", "yes", "closed"),
        VQAItem("3", "q", "yes", "closed"),
    ]
    # hit / says "no" (contains "no", lacks "yes": dropped) / says neither (a 0)
    preds = {"1": "Yes.", "2": "No, it is not.", "3": "It is unclear."}
    compat = score_vqa(refs, preds, compat="llava-med-2023-08")
    assert [q.closed for q in compat.questions] == [1.0, None, 0.0]
    assert (compat.n_closed, compat.n_closed_scored) == (3, 2)
    assert compat.closed_accuracy == pytest.approx(1 / 2)
    v1 = score_vqa(refs, preds, compat="llava-med")
    assert [q.closed for q in v1.questions] == [1.0, 0.0, 0.0]
    assert (v1.n_closed, v1.n_closed_scored) == (3, 3)
    default = score_vqa(refs, preds)
    assert [q.closed for q in default.questions] == [1.0, 0.0, 0.0]
    assert (default.n_closed, default.n_closed_scored) == (3, 3)
    assert default.closed_accuracy == pytest.approx(1 / 3)


def test_compat_closed_is_substring_based() -> None:
    # answer "no" is found inside "not" once the reply contains "yes": a hit
    assert closed_hit("yes, not sure", "no", compat="llava-med") == 1.0
    assert closed_hit("yes, not sure", "no") == 0.0
    # first whole-word yes/no decides in the default mode
    assert closed_hit("No. Yes?", "no") == 1.0
    assert closed_hit("No. Yes?", "yes") == 0.0
    # non yes/no closed answers: whole-word containment in the default mode
    assert closed_hit("it is a ct scan", "CT") == 1.0
    assert closed_hit("it is an mri", "ct") == 0.0
    assert closed_hit("yes, strictly", "ct", compat="llava-med") == 1.0  # 'ct' inside 'strictly'


def test_compat_aggregates_follow_the_script() -> None:
    # no closed question scored -> 0.0 (the script's fallback); no open question -> None
    only_open = score_vqa([VQAItem("1", "q", "liver", "open")], {"1": "liver"}, compat="llava-med")
    assert only_open.closed_accuracy == 0.0 and only_open.open_recall == 1.0
    only_closed = score_vqa([VQAItem("1", "q", "yes", "closed")], {"1": "yes"}, compat="llava-med")
    assert only_closed.open_recall is None and only_closed.closed_accuracy == 1.0
    assert score_vqa([VQAItem("1", "q", "liver", "open")], {"1": "x"}).closed_accuracy is None


def test_hand_computed_llava_med_table() -> None:
    refs = [
        VQAItem("a", "q", "left lung", "open", organ="CHEST"),
        VQAItem("b", "q", "Two", "open", organ="CHEST"),
        VQAItem("c", "q", "liver", "open", organ="ABD"),
        VQAItem("d", "q", "no", "closed", organ="ABD"),
        VQAItem("e", "q", "yes", "closed", organ="HEAD"),
    ]
    preds = {"a": "left left", "b": "2 lesions", "c": "spleen", "d": "nodule", "e": "no"}
    s = score_vqa(refs, preds, compat="llava-med-2023-08")
    # recall: a 2/3, b 1/2 (tp 1, fn 0? no: ref "2" fully found -> 1/1), c 0
    # b: pred "2 lesions", ref "2": tp 1, fp 1, fn 0 -> p 1/2, r 1, f1 2/3
    assert s.open_recall == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert s.open_precision == pytest.approx((1 + 0.5 + 0) / 3)
    assert s.open_f1 == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert s.open_exact_match == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    # d: "nodule" contains "no" and the answer "no" -> 1; e: contains "no" but not "yes" -> dropped
    assert (s.closed_accuracy, s.n_closed_scored) == (1.0, 1)
    table = {r["organ"]: r for r in s.breakdown("organ")}
    assert table["ABD"]["closed"] == 1.0 and table["HEAD"]["closed"] is None
    assert table["CHEST"]["recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert table["all"]["n"] == 5
    md = s.to_markdown()
    assert "| open recall | 55.56 |" in md
    assert "llava-med-2023-08: LLaVA-Med run_eval.py first release" in md.splitlines()[0]
    # v1.0.0 counts e as a 0: closed 1/2; the open numbers are the same
    v1 = score_vqa(refs, preds, compat="llava-med")
    assert (v1.closed_accuracy, v1.n_closed_scored) == (0.5, 2)
    assert v1.open_recall == s.open_recall
    assert "llava-med: LLaVA-Med run_eval.py v1.0.0" in v1.to_markdown().splitlines()[0]


def _closed_reference(reply: str, answer: str, version: str) -> float | None:
    """LLaVA-Med's closed rule, restated from its description (both versions), on lower-cased text."""
    says = ("yes" in reply) or ("no" in reply)
    if not says:
        return 0.0
    if answer in reply:
        return 1.0
    return None if version == "first-release" else 0.0


def test_llava_med_versions_on_fourteen_closed_questions() -> None:
    # 8 hits, 5 replies that say yes/no but not the answer, 1 that says neither:
    # v1.0.0 scores 8/14 = 57.14, the first release 8/9 = 88.89 (it drops the 5).
    replies = ["yes"] * 4 + ["no"] * 4 + ["no"] * 3 + ["yes"] * 2 + ["unclear"]
    answers = ["yes"] * 4 + ["no"] * 4 + ["yes"] * 3 + ["no"] * 2 + ["yes"]
    refs = [VQAItem(str(i), "q", a, "closed") for i, a in enumerate(answers)]
    preds = {str(i): r for i, r in enumerate(replies)}
    v1 = score_vqa(refs, preds, compat="llava-med")
    first = score_vqa(refs, preds, compat="llava-med-2023-08")
    assert round(100 * v1.closed_accuracy, 2) == 57.14
    assert round(100 * first.closed_accuracy, 2) == 88.89
    for version, scores in (("v1.0.0", v1), ("first-release", first)):
        expected = [_closed_reference(r, a, version) for r, a in zip(replies, answers, strict=True)]
        assert [q.closed for q in scores.questions] == expected


def test_default_mode_scores_the_final_answer_of_a_cot_reply() -> None:
    refs = [
        VQAItem("1", "Is there a mass?", "no", "closed"),
        VQAItem("2", "Is there a mass?", "yes", "closed"),
        VQAItem("3", "Which organ?", "liver", "open"),
        VQAItem("4", "Is there a mass?", "no", "closed"),
    ]
    preds = {
        # rationale says "no", final answer "yes": wrong for gold "no"
        "1": "Reasoning: There is no doubt a mass is present.\n\nAnswer: yes",
        # rationale says "no", final answer "yes": right for gold "yes"
        "2": "Reasoning: No other organ is involved.\n\nAnswer: Yes",
        # rationale names another organ, the answer the right one
        "3": "Question: Which organ? | Reasoning: The spleen is normal. | **Answer:** liver",
        # no marker: the whole reply is scored, and counted
        "4": "no",
    }
    s = score_vqa(refs, preds)
    assert [q.closed for q in s.questions if q.answer_type == "closed"] == [0.0, 1.0, 1.0]
    assert s.open_recall == 1.0 and s.open_exact_match == 1.0
    assert s.n_no_marker == 1 and [q.marker_found for q in s.questions] == [True, True, True, False]
    assert "replies without 'Answer:' (scored whole) | 1" in s.to_markdown()
    # the LLaVA-Med modes keep scoring the raw reply, as the script did: reply 1 contains "no"
    raw = score_vqa(refs, preds, compat="llava-med")
    assert raw.questions[0].closed == 1.0 and raw.n_no_marker == 0
    # a configurable marker; None scores whole replies
    custom = score_vqa(refs[:1], {"1": "Reasoning: no.\nFinal: yes"}, answer_marker="Final:")
    assert custom.questions[0].closed == 0.0 and custom.n_no_marker == 0
    whole = score_vqa(refs[:1], {"1": "Reasoning: no.\nAnswer: yes"}, answer_marker=None)
    assert whole.questions[0].closed == 1.0


def test_final_answer_takes_the_last_marker_and_is_linear() -> None:
    assert final_answer("Answer: no. Answer: yes") == ("yes", True)
    assert final_answer("Reanswer: yes") == ("Reanswer: yes", False)
    assert final_answer("ANSWER:   __left lung__  ") == ("left lung", True)
    long = "Answer:" * 20000 + " yes"
    assert final_answer(long) == ("yes", True)


# --- the default mode against an independent reference ----------------------------------

_REF_NUMBERS = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
}
_REF_CONTRACTIONS = {"dont": "don't", "isnt": "isn't", "whats": "what's"}


def _ref_normalize(text: str) -> str:
    s = unicodedata.normalize("NFKC", text).casefold()
    s = re.sub(r"(?<=\d),(?=\d)", "", s)
    s = re.sub(r"(?<=\d)\.(?=\d)", "\x00", s)
    s = re.sub(r"(?<=[a-z])'(?=[a-z])", "\x01", s)
    s = re.sub(r"[^\w\s\x00\x01]|_", " ", s)
    s = s.replace("\x00", ".").replace("\x01", "'")
    words = [_REF_NUMBERS.get(w, w) for w in s.split()]
    words = [_REF_CONTRACTIONS.get(w, w) for w in words if w not in ("a", "an", "the")]
    return " ".join(words)


def _ref_prf(pred: str, ref: str) -> tuple[float, float, float]:
    p, r = pred.split(), ref.split()
    if not p and not r:
        return 1.0, 1.0, 1.0
    pool = list(r)
    matched = 0
    for w in p:
        if w in pool:
            pool.remove(w)
            matched += 1
    if matched == 0:
        return 0.0, 0.0, 0.0
    prec, rec = matched / len(p), matched / len(r)
    return 2 * prec * rec / (prec + rec), prec, rec


def _ref_closed(pred: str, ref: str) -> float:
    if ref in ("yes", "no"):
        m = re.search(r"\b(yes|no)\b", pred)
        return float(m is not None and m.group(1) == ref)
    return float(f" {ref} " in f" {pred} ")


_WORDS = st.sampled_from(
    [
        "the",
        "a",
        "An",
        "liver",
        "Left",
        "lung",
        "lobe",
        "one",
        "Two",
        "2",
        "10",
        "ten",
        "none",
        "dont",
        "don't",
        "isnt",
        "whats",
        "yes",
        "No",
        "nodule",
        "not",
        "1.5",
        "3,000",
        "cm",
        "ct",
        "mri",
    ]
)
_SEPS = st.sampled_from([" ", " ", ", ", ". ", "/", " - ", "; ", "? ", "!", " (", ") ", ":"])


@st.composite
def _answers(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORDS, max_size=6))
    seps = draw(st.lists(_SEPS, min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, seps, strict=True))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_answers(), _answers(), st.booleans()), min_size=1, max_size=8))
def test_default_mode_matches_reference(rows: list[tuple[str, str, bool]]) -> None:
    refs, preds = [], {}
    for i, (answer, pred, is_open) in enumerate(rows):
        if not is_open and not _ref_normalize(answer):
            answer = "yes"
        refs.append(VQAItem(str(i), "q", answer, "open" if is_open else "closed"))
        preds[str(i)] = pred
    s = score_vqa(refs, preds)
    opens, closeds = [], []
    for (_, pred, is_open), item, q in zip(rows, refs, s.questions, strict=True):
        p, r = _ref_normalize(pred), _ref_normalize(item.answer)
        assert (q.normalized_prediction, q.normalized_reference) == (p, r)
        if is_open:
            f1, prec, rec = _ref_prf(p, r)
            assert (q.f1, q.precision, q.recall) == pytest.approx((f1, prec, rec))
            assert q.exact_match == float(p == r)
            opens.append((f1, prec, rec, float(p == r)))
        else:
            assert q.closed == _ref_closed(p, r)
            closeds.append(_ref_closed(p, r))
    if opens:
        assert s.open_f1 == pytest.approx(sum(o[0] for o in opens) / len(opens))
        assert s.open_recall == pytest.approx(sum(o[2] for o in opens) / len(opens))
        assert s.open_exact_match == pytest.approx(sum(o[3] for o in opens) / len(opens))
    else:
        assert s.open_recall is None
    if closeds:
        assert s.closed_accuracy == pytest.approx(sum(closeds) / len(closeds))
        assert s.n_closed_scored == len(closeds)


@settings(max_examples=100, deadline=None)
@given(_answers(), _answers())
def test_metric_invariants(pred: str, ref: str) -> None:
    for compat in ("default", "llava-med"):
        f1, p, r = token_f1(pred, ref, compat=compat)
        assert 0.0 <= f1 <= 1.0 and 0.0 <= p <= 1.0 and 0.0 <= r <= 1.0
        assert min(p, r) - 1e-12 <= f1 <= max(p, r) + 1e-12
        assert 0.0 <= exact_match(pred, ref, compat=compat) <= 1.0
    # on the same (compat) tokens, clipped recall never exceeds the compat one: repeats only add
    p_tok = normalize_answer(normalize_answer(pred, compat="llava-med"), compat="llava-med").split()
    r_tok = normalize_answer(normalize_answer(ref, compat="llava-med"), compat="llava-med").split()
    if p_tok and r_tok:
        clipped = sum((Counter(p_tok) & Counter(r_tok)).values()) / len(r_tok)
        assert clipped <= token_f1(pred, ref, compat="llava-med")[2] + 1e-12


# --- bookkeeping ---------------------------------------------------------------------


def test_missing_and_extra_predictions() -> None:
    refs = [VQAItem("1", "q", "yes", "closed"), VQAItem("2", "q", "liver", "open")]
    with pytest.raises(DataFormatError, match="1 of 2 have none"):
        score_vqa(refs, {"1": "yes"})
    empty = score_vqa(refs, {"1": "yes"}, missing="empty")
    assert empty.n_missing == 1 and empty.open_recall == 0.0
    skipped = score_vqa(refs, {"1": "yes"}, missing="skip")
    assert skipped.n_open == 0 and len(skipped.questions) == 1
    with pytest.warns(MedcurricWarning, match="not in the references"):
        score_vqa(refs, {"1": "yes", "2": "liver", "3": "x"})
    with pytest.raises(InvalidOptionError, match="Did you mean 'skip'"):
        score_vqa(refs, {"1": "yes", "2": "x"}, missing="skp")
    with pytest.raises(DataFormatError, match="string"):
        score_vqa(refs, {"1": "yes", "2": 3})  # type: ignore[dict-item]


def test_integer_ids_match_string_ids_and_round_trip() -> None:
    refs = [VQAItem("7", "q", "yes", "closed")]
    s = score_vqa(refs, {7: "yes"})  # type: ignore[dict-item]
    assert s.closed_accuracy == 1.0
    assert VQAScores.from_dict(s.to_dict()) == s


def test_untrusted_text_is_only_data() -> None:
    refs = [VQAItem("1", "q", "{0.__class__}", "open")]
    s = score_vqa(refs, {"1": "__import__('os').system('false') {0.__class__}"})
    assert 0.0 < s.open_recall <= 1.0
