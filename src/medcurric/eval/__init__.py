"""Evaluation: medical VQA scores (LLaVA-Med-compatible or corrected), report metrics, grounding.

* VQA (VQA-RAD, SLAKE, PathVQA): :func:`load_vqa`, :func:`load_predictions`,
  :func:`score_vqa` with ``compat="llava-med"`` (reproduces LLaVA-Med's published
  numbers, quirks included) or the corrected ``"default"`` mode; the building blocks
  :func:`normalize_answer`, :func:`exact_match`, :func:`token_f1`, :func:`closed_hit`.
* Report generation (IU-Xray, MIMIC-CXR): :func:`report_metrics` (BLEU-1..4, METEOR,
  ROUGE-L, CIDEr through pycocoevalcap).
* Grounding: :func:`parse_boxes`, :func:`rationale_iou`, :func:`attention_in_box`,
  :func:`pointing_game`, :func:`score_grounding`, :func:`plot_attention`, and
  :func:`breakdown` / :func:`format_table` for per-stage and per-organ tables.

The ``medcurric evaluate`` command drives all three from files.
"""

from medcurric.eval.datasets import (
    AnswerType,
    VQAFormat,
    VQAItem,
    load_predictions,
    load_records,
    load_texts,
    load_vqa,
)
from medcurric.eval.grounding import (
    BoxPick,
    Coverage,
    GroundingScore,
    GroundingScores,
    attention_in_box,
    box_patch_weights,
    parse_boxes,
    pointing_game,
    rationale_iou,
    score_grounding,
)
from medcurric.eval.normalize import Compat, normalize_answer
from medcurric.eval.plots import plot_attention
from medcurric.eval.report import (
    ReportMetric,
    ReportScores,
    ReportTokenizer,
    report_metrics,
    simple_tokenize,
)
from medcurric.eval.tables import TableFormat, breakdown, format_table
from medcurric.eval.vqa import (
    ANSWER_MARKER,
    MissingPolicy,
    QuestionScore,
    VQAScores,
    closed_hit,
    exact_match,
    final_answer,
    score_vqa,
    token_f1,
)

__all__ = [
    "ANSWER_MARKER",
    "AnswerType",
    "BoxPick",
    "Compat",
    "Coverage",
    "GroundingScore",
    "GroundingScores",
    "MissingPolicy",
    "QuestionScore",
    "ReportMetric",
    "ReportScores",
    "ReportTokenizer",
    "TableFormat",
    "VQAFormat",
    "VQAItem",
    "VQAScores",
    "attention_in_box",
    "box_patch_weights",
    "breakdown",
    "closed_hit",
    "exact_match",
    "final_answer",
    "format_table",
    "load_predictions",
    "load_records",
    "load_texts",
    "load_vqa",
    "normalize_answer",
    "parse_boxes",
    "plot_attention",
    "pointing_game",
    "rationale_iou",
    "report_metrics",
    "score_grounding",
    "score_vqa",
    "simple_tokenize",
    "token_f1",
]
