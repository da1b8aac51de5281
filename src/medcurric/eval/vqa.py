r"""Medical VQA scoring (VQA-RAD, SLAKE, PathVQA): LLaVA-Med-compatible or corrected.

Three modes, chosen with ``compat``:

``"llava-med"`` reproduces LLaVA-Med's ``llava/eval/run_eval.py`` at tag v1.0.0 (what
later papers ran) number for number, quirks included; ``"llava-med-2023-08"`` its
first release (commit ad758b6), which differs only in the closed rule below:

* Both answers are lower-cased and normalised once (:func:`normalize_answer`);
  the open-ended metrics normalise them a second time (which matters only for
  text with more than 32 periods).
* Open-ended *recall* (the number papers report for open questions) is
  ``tp / (tp + fn)`` over unigrams where ``tp`` adds the **prediction's** count of
  every word it shares with the answer, so repeating a right word inflates it
  (answer ``"left lung"``, prediction ``"left left"``: 2/3 instead of 1/2).
  Precision and F1 follow the same counts.
* Its "exact match" is the number of *distinct* answer words found in the
  prediction divided by the prediction's length, not a match of whole strings.
* A closed question is a hit when the prediction contains the *substring*
  ``"yes"`` or ``"no"`` and contains the answer as a substring, and a 0 otherwise;
  the first release instead **dropped from the denominator** a prediction that
  contains ``"yes"``/``"no"`` but not the answer. ``"no"`` also matches inside words
  (``"nodule"``, ``"normal"``, ``"abnormal"``, ``"node"``), and an answer ``"no"``
  is found inside ``"nodule"``.
* The whole reply is scored: neither version extracts the final answer of a
  chain-of-thought reply, so a rationale that says "no" counts.

The ``"default"`` mode corrects these: it scores the **final answer** of a reply
(the text after the last ``Answer:`` marker, the one the library's own targets and
parser use; configurable, the whole reply when no marker is present, counted in
``n_no_marker``), with a clipped (multiset) unigram overlap for
precision/recall/F1, exact match of the normalised strings, and closed
questions decided by the first whole-word ``yes``/``no`` (or, for other closed
answers, the answer's words appearing as consecutive whole words), every closed
question counting in the denominator.

Examples:
    >>> token_f1("left left", "left lung", compat="llava-med")
    (0.8, 1.0, 0.6666666666666666)
    >>> token_f1("left left", "left lung")
    (0.5, 0.5, 0.5)
    >>> closed_hit("a nodule is seen", "yes", compat="llava-med-2023-08") is None
    True
    >>> closed_hit("a nodule is seen", "yes", compat="llava-med"), closed_hit("a nodule is seen", "yes")
    (0.0, 0.0)
    >>> final_answer("Reasoning: no mass in the liver.\n\nAnswer: yes")
    ('yes', True)
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, MedcurricWarning
from medcurric.eval.datasets import AnswerType, VQAItem
from medcurric.eval.normalize import Compat, normalize_answer
from medcurric.eval.tables import breakdown, format_table

__all__ = [
    "ANSWER_MARKER",
    "MissingPolicy",
    "QuestionScore",
    "VQAScores",
    "closed_hit",
    "exact_match",
    "final_answer",
    "score_vqa",
    "token_f1",
]

_YES_NO = ("yes", "no")
#: The marker before the final answer in the library's targets (``render``) and replies.
ANSWER_MARKER = "Answer:"


class MissingPolicy(StrEnum):
    """What :func:`score_vqa` does with a question that has no prediction."""

    ERROR = "error"
    EMPTY = "empty"
    SKIP = "skip"


# --- LLaVA-Med metrics on already normalised text --------------------------------


def _llava_counts(prediction: str, reference: str) -> tuple[Counter[str], Counter[str]]:
    # run_eval.py normalises before calling the metrics, which normalise again.
    pred = normalize_answer(prediction, compat=Compat.LLAVA_MED)
    ref = normalize_answer(reference, compat=Compat.LLAVA_MED)
    return Counter(pred.lower().split()), Counter(ref.lower().split())


def _llava_exact(pred_once: str, ref_once: str) -> float:
    cand, ref = _llava_counts(pred_once, ref_once)
    length = sum(cand.values())
    if length == 0:
        return 0.0
    found = sum(1 for word in ref if word in cand)
    return found / length


def _llava_f1(pred_once: str, ref_once: str) -> tuple[float, float, float]:
    cand, ref = _llava_counts(pred_once, ref_once)
    if not cand or not ref:
        return 0.0, 0.0, 0.0
    tp = sum(n for w, n in cand.items() if w in ref)
    fp = sum(n for w, n in cand.items() if w not in ref)
    fn = sum(n for w, n in ref.items() if w not in cand)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return 2 * precision * recall / (precision + recall), precision, recall


def _llava_closed(pred_once: str, ref_once: str, *, first_release: bool) -> float | None:
    if "yes" in pred_once or "no" in pred_once:
        if ref_once in pred_once:
            return 1.0
        return None if first_release else 0.0
    return 0.0


def final_answer(reply: str, marker: str = ANSWER_MARKER) -> tuple[str, bool]:
    """The final answer of a chain-of-thought reply: the text after the last ``marker``.

    The marker matches case-insensitively where it starts a word (``"Answer:"`` matches
    ``"**answer:**"`` and ``"| Answer:"``, not ``"Reanswer:"``); markdown emphasis around
    the answer is dropped. Scanning is linear in the reply's length.

    Args:
        reply: The model's reply.
        marker: The label before the final answer.

    Returns:
        ``(answer, found)``: the answer text and whether the marker was present; without
        a marker, the whole reply stripped, and ``False``.

    Examples:
        >>> final_answer("Reasoning: no lesion is seen. | Answer: **Yes**")
        ('Yes', True)
        >>> final_answer("yes")
        ('yes', False)
    """
    if not marker:
        return reply.strip(), False
    pattern = re.compile(r"(?<![0-9A-Za-z_])" + re.escape(marker.strip()), re.IGNORECASE)
    last = None
    for match in pattern.finditer(reply):
        last = match
    if last is None:
        return reply.strip(), False
    return reply[last.end() :].strip().strip("*_ ").strip(), True


# --- corrected metrics ---------------------------------------------------------------


def _default_f1(pred: str, ref: str) -> tuple[float, float, float]:
    p, r = pred.split(), ref.split()
    if not p and not r:
        return 1.0, 1.0, 1.0
    if not p or not r:
        return 0.0, 0.0, 0.0
    tp = sum((Counter(p) & Counter(r)).values())
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / len(p), tp / len(r)
    return 2 * precision * recall / (precision + recall), precision, recall


def _contains_words(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def _default_closed(pred: str, ref: str) -> float:
    words = pred.split()
    if ref in _YES_NO:
        decision = next((w for w in words if w in _YES_NO), None)
        return 1.0 if decision == ref else 0.0
    return 1.0 if _contains_words(words, ref.split()) else 0.0


def _mode(compat: str | Compat) -> Compat:
    return look_up_option(compat, Compat, name="compat")


def exact_match(prediction: str, reference: str, *, compat: str | Compat = Compat.DEFAULT) -> float:
    """Exact match of a prediction against a reference answer.

    Args:
        prediction: Model answer.
        reference: Ground-truth answer.
        compat: ``"default"``: 1.0 when the normalised strings are equal, else 0.0.
            ``"llava-med"``: LLaVA-Med's ``calculate_exactmatch``, the count of distinct
            reference words found in the prediction over the prediction's word count.

    Returns:
        The score in ``[0, 1]``.

    Examples:
        >>> exact_match("The liver.", "liver")
        1.0
        >>> exact_match("liver and spleen", "liver", compat="llava-med")
        0.3333333333333333
    """
    if _mode(compat).llava_med:
        return _llava_exact(
            normalize_answer(prediction, compat=Compat.LLAVA_MED),
            normalize_answer(reference, compat=Compat.LLAVA_MED),
        )
    return 1.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


def token_f1(
    prediction: str, reference: str, *, compat: str | Compat = Compat.DEFAULT
) -> tuple[float, float, float]:
    """Unigram F1, precision and recall of a prediction against a reference answer.

    Args:
        prediction: Model answer.
        reference: Ground-truth answer.
        compat: ``"default"``: clipped (multiset) overlap of normalised tokens; two empty
            answers score 1. ``"llava-med"``: LLaVA-Med's ``calculate_f1score``, where a shared
            word adds the prediction's count of it to the true positives.

    Returns:
        ``(f1, precision, recall)``.

    Examples:
        >>> token_f1("right lower lobe", "the right lobe")
        (0.8, 0.6666666666666666, 1.0)
    """
    if _mode(compat).llava_med:
        return _llava_f1(
            normalize_answer(prediction, compat=Compat.LLAVA_MED),
            normalize_answer(reference, compat=Compat.LLAVA_MED),
        )
    return _default_f1(normalize_answer(prediction), normalize_answer(reference))


def closed_hit(
    prediction: str, reference: str, *, compat: str | Compat = Compat.DEFAULT
) -> float | None:
    """Score a closed (yes/no or choice) question.

    Args:
        prediction: Model answer.
        reference: Ground-truth answer.
        compat: ``"default"``: for a yes/no answer, the prediction's first whole-word
            ``yes``/``no`` decides; for another closed answer, its words must appear as
            consecutive whole words. ``"llava-med"``: substring rules of ``run_eval.py``
            v1.0.0 (see the module docstring); ``"llava-med-2023-08"``: those of its first
            release, which may return ``None``. The text is scored as given (no final-answer
            extraction; :func:`score_vqa` does that).

    Returns:
        1.0 for a hit, 0.0 for a miss, or ``None`` (``"llava-med-2023-08"`` only) when the
        question is left out of the closed accuracy's denominator.

    Examples:
        >>> closed_hit("No, it is normal.", "no"), closed_hit("Yes.", "no", compat="llava-med")
        (1.0, 0.0)
        >>> closed_hit("Yes.", "no", compat="llava-med-2023-08") is None
        True
    """
    mode = _mode(compat)
    if mode.llava_med:
        return _llava_closed(
            normalize_answer(prediction, compat=mode),
            normalize_answer(reference, compat=mode),
            first_release=mode is Compat.LLAVA_MED_2023_08,
        )
    return _default_closed(normalize_answer(prediction), normalize_answer(reference))


@dataclass(frozen=True)
class QuestionScore(JsonRecord):
    """The scores of one question.

    Attributes:
        id: Question id.
        answer_type: ``"open"`` or ``"closed"``.
        prediction: The prediction as given (empty when missing and ``missing="empty"``).
        reference: The ground-truth answer as given.
        normalized_prediction: The prediction after normalisation.
        normalized_reference: The answer after normalisation.
        exact_match: Exact match (open questions only, else ``None``).
        precision: Token precision (open questions only).
        recall: Token recall (open questions only; the "open" number papers report).
        f1: Token F1 (open questions only).
        closed: Closed hit 1.0/0.0, or ``None`` for open questions and for closed ones
            that ``"llava-med-2023-08"`` leaves out of the denominator.
        organ: Organ / region of the question, when the dataset gives one.
        missing: Whether the prediction was missing.
        marker_found: Default mode: whether the reply had the answer marker (its final
            answer was scored) or not (the whole reply was). ``None`` in the LLaVA-Med modes,
            which always score the whole reply.
    """

    id: str
    answer_type: str
    prediction: str
    reference: str
    normalized_prediction: str
    normalized_reference: str
    exact_match: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    closed: float | None = None
    organ: str | None = None
    missing: bool = False
    marker_found: bool | None = None


_METRICS = ("recall", "precision", "f1", "exact_match", "closed")


@dataclass(frozen=True)
class VQAScores(JsonRecord):
    """Aggregate VQA scores plus the per-question details.

    Attributes:
        compat: The mode that produced them.
        n_open: Open questions scored.
        n_closed: Closed questions.
        n_closed_scored: Closed questions in the accuracy's denominator (``n_closed`` except
            in ``"llava-med-2023-08"``).
        n_missing: Questions without a prediction.
        open_recall: Mean token recall over open questions (``None`` when there are none;
            LLaVA-Med's script would crash there).
        open_precision: Mean token precision over open questions.
        open_f1: Mean token F1 over open questions.
        open_exact_match: Mean exact match over open questions.
        closed_accuracy: Closed hits over ``n_closed_scored`` (LLaVA-Med modes: 0.0 when
            nothing was scored, as its script does; default: ``None`` when there are no closed
            questions).
        questions: One :class:`QuestionScore` per question.
        n_no_marker: Default mode: scored replies without the answer marker, so scored whole
            (0 in the LLaVA-Med modes, which never extract).
        answer_marker: The marker the final answer was extracted by (``None`` when none was).
    """

    compat: str
    n_open: int
    n_closed: int
    n_closed_scored: int
    n_missing: int
    open_recall: float | None
    open_precision: float | None
    open_f1: float | None
    open_exact_match: float | None
    closed_accuracy: float | None
    questions: tuple[QuestionScore, ...] = ()
    n_no_marker: int = 0
    answer_marker: str | None = None

    def summary(self) -> dict[str, Any]:
        """The aggregate numbers without the per-question details."""
        data = self.to_dict()
        data.pop("questions")
        return data

    def breakdown(self, by: str = "organ") -> list[dict[str, Any]]:
        """Mean metrics per group of questions (e.g. ``"organ"`` or ``"answer_type"``).

        A closed question that ``"llava-med-2023-08"`` drops from the denominator is left out
        of its group's ``closed`` mean in the same way.
        """
        return breakdown((q.to_dict() for q in self.questions), by, _METRICS)

    def to_markdown(self) -> str:
        """The headline numbers as a markdown table (percentages, like the papers).

        The value column's header names the scoring mode that produced them.
        """
        column = f"value ({Compat(self.compat).label})"
        rows: list[dict[str, Any]] = [
            {"metric": name, column: None if value is None else 100.0 * value}
            for name, value in (
                ("open recall", self.open_recall),
                ("open precision", self.open_precision),
                ("open F1", self.open_f1),
                ("open exact match", self.open_exact_match),
                ("closed accuracy", self.closed_accuracy),
            )
        ]
        rows.append(
            {
                "metric": "open / closed / closed scored / missing",
                column: f"{self.n_open} / {self.n_closed} / {self.n_closed_scored} / {self.n_missing}",
            }
        )
        if not Compat(self.compat).llava_med:
            rows.append({"metric": f"replies without {self.answer_marker!r} (scored whole)", column: str(self.n_no_marker)})
        return format_table(rows, fmt="markdown", digits=2)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_vqa(
    references: Iterable[VQAItem],
    predictions: Mapping[str, str],
    *,
    compat: str | Compat = Compat.DEFAULT,
    missing: str | MissingPolicy = MissingPolicy.ERROR,
    answer_marker: str | None = ANSWER_MARKER,
) -> VQAScores:
    r"""Score predictions against VQA ground truth, per question and in aggregate.

    Args:
        references: Ground-truth questions (e.g. from :func:`~medcurric.eval.load_vqa`).
        predictions: ``{question id: predicted text}`` (e.g. from
            :func:`~medcurric.eval.load_predictions`); ids are compared as strings.
        compat: ``"default"`` (corrected, final answer), ``"llava-med"`` (reproduces
            ``run_eval.py`` v1.0.0) or ``"llava-med-2023-08"`` (its first release); see the
            module docstring.
        missing: A question without a prediction raises (``"error"``), is scored as an
            empty answer (``"empty"``) or is left out (``"skip"``).
        answer_marker: Default mode: score the text after the last occurrence of this
            marker (:func:`final_answer`), or the whole reply when it has none (counted in
            ``n_no_marker``); ``None`` scores whole replies. Ignored by the LLaVA-Med modes.

    Returns:
        The aggregate scores with per-question details.

    Raises:
        DataFormatError: When predictions are missing and ``missing="error"``, or a
            prediction is not a string.

    Examples:
        >>> refs = [VQAItem("1", "Abnormal?", "yes", "closed"),
        ...         VQAItem("2", "Organ?", "left lung", "open")]
        >>> s = score_vqa(refs, {"1": "Yes, a nodule.", "2": "left left"}, compat="llava-med")
        >>> s.closed_accuracy, round(s.open_recall, 4)
        (1.0, 0.6667)
        >>> s = score_vqa(refs, {"1": "Yes, a nodule.", "2": "left left"})
        >>> s.closed_accuracy, s.open_recall, s.n_no_marker
        (1.0, 0.5, 2)
        >>> s = score_vqa(refs, {"1": "Reasoning: no mass.\nAnswer: yes", "2": "Answer: left lung"})
        >>> s.closed_accuracy, s.open_recall, s.n_no_marker
        (1.0, 1.0, 0)
    """
    mode = _mode(compat)
    policy = look_up_option(missing, MissingPolicy, name="missing")
    refs = list(references)
    pred_map = {str(k): v for k, v in predictions.items()}
    absent = [r.id for r in refs if str(r.id) not in pred_map]
    if absent and policy is MissingPolicy.ERROR:
        raise DataFormatError(
            f"Expected a prediction for every question, but {len(absent)} of {len(refs)} have none "
            f"(first: {absent[:5]}). Pass missing='empty' to score them as empty answers or "
            "missing='skip' to leave them out."
        )
    extra = set(pred_map) - {str(r.id) for r in refs}
    if extra:
        warnings.warn(
            f"{len(extra)} prediction(s) have ids not in the references and are ignored "
            f"(first: {sorted(extra)[:5]}).",
            MedcurricWarning,
            stacklevel=2,
        )
    rows: list[QuestionScore] = []
    for item in refs:
        rid = str(item.id)
        is_missing = rid not in pred_map
        if is_missing and policy is MissingPolicy.SKIP:
            continue
        pred = pred_map.get(rid, "")
        if not isinstance(pred, str):
            raise DataFormatError(
                f"Expected the prediction for question {rid!r} to be a string, "
                f"but got {type(pred).__name__}."
            )
        fields: dict[str, Any] = {}
        scored_text = pred
        if not mode.llava_med and answer_marker is not None:
            scored_text, fields["marker_found"] = final_answer(pred, answer_marker)
        norm_pred = normalize_answer(scored_text, compat=mode)
        norm_ref = normalize_answer(item.answer, compat=mode)
        if item.answer_type == AnswerType.OPEN:
            if mode.llava_med:
                fields["exact_match"] = _llava_exact(norm_pred, norm_ref)
                f1, p, r = _llava_f1(norm_pred, norm_ref)
            else:
                fields["exact_match"] = 1.0 if norm_pred == norm_ref else 0.0
                f1, p, r = _default_f1(norm_pred, norm_ref)
            fields.update(f1=f1, precision=p, recall=r)
        else:
            fields["closed"] = (
                _llava_closed(norm_pred, norm_ref, first_release=mode is Compat.LLAVA_MED_2023_08)
                if mode.llava_med
                else _default_closed(norm_pred, norm_ref)
            )
        rows.append(
            QuestionScore(
                id=rid,
                answer_type=str(item.answer_type),
                prediction=pred,
                reference=item.answer,
                normalized_prediction=norm_pred,
                normalized_reference=norm_ref,
                organ=item.organ,
                missing=is_missing,
                **fields,
            )
        )
    open_rows = [q for q in rows if q.answer_type == AnswerType.OPEN]
    closed_rows = [q for q in rows if q.answer_type == AnswerType.CLOSED]
    scored = [q.closed for q in closed_rows if q.closed is not None]
    if mode.llava_med:
        closed_accuracy: float | None = _mean(scored) if scored else 0.0
    else:
        closed_accuracy = _mean(scored)
    return VQAScores(
        compat=str(mode),
        n_open=len(open_rows),
        n_closed=len(closed_rows),
        n_closed_scored=len(scored),
        n_missing=sum(q.missing for q in rows),
        open_recall=_mean([q.recall for q in open_rows if q.recall is not None]),
        open_precision=_mean([q.precision for q in open_rows if q.precision is not None]),
        open_f1=_mean([q.f1 for q in open_rows if q.f1 is not None]),
        open_exact_match=_mean([q.exact_match for q in open_rows if q.exact_match is not None]),
        closed_accuracy=closed_accuracy,
        questions=tuple(rows),
        n_no_marker=sum(q.marker_found is False and not q.missing for q in rows),
        answer_marker=None if mode.llava_med else answer_marker,
    )
