"""Report-generation metrics (IU-Xray, MIMIC-CXR): BLEU-1..4, METEOR, ROUGE-L and CIDEr.

The numbers are computed by the COCO caption evaluation package
(``pycocoevalcap``, the ``eval`` extra), as the report-generation literature
does: texts are lower-cased and tokenised by the Stanford PTB tokenizer with
punctuation removed, BLEU is the corpus-level score with the "closest"
reference length, METEOR is METEOR 1.5 (``-l en -norm``), ROUGE-L uses
beta = 1.2, CIDEr is CIDEr-D with document frequencies from the references
being scored. The PTB tokenizer and METEOR run Java; ``tokenizer="simple"``
replaces the PTB tokenizer with a pure-Python approximation so that BLEU,
ROUGE-L and CIDEr work without Java (METEOR always needs it).

Texts are data: they are passed to the tools through files and pipes, never
through a shell, and the ``|||`` field separator of METEOR's protocol and line
breaks are removed from them first.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, MissingDependencyError, WrongTypeError
from medcurric.eval.tables import format_table

__all__ = ["ReportMetric", "ReportScores", "ReportTokenizer", "report_metrics", "simple_tokenize"]


class ReportMetric(StrEnum):
    """Report-generation metric families."""

    BLEU = "bleu"
    METEOR = "meteor"
    ROUGE_L = "rouge-l"
    CIDER = "cider"


class ReportTokenizer(StrEnum):
    """How texts are tokenised before scoring."""

    PTB = "ptb"
    SIMPLE = "simple"
    NONE = "none"


#: Tokens the COCO caption evaluation drops after PTB tokenisation.
_PTB_PUNCT = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)
_SIMPLE_TOKEN = re.compile(r"[^\W_]+(?:['.][^\W_]+)*|\S")


def simple_tokenize(text: str) -> str:
    """Lower-case and tokenise a text without Java, dropping the PTB punctuation tokens.

    An approximation of the Stanford PTB tokenizer as the COCO evaluation uses it:
    words (with inner periods and apostrophes, such as ``1.5`` or ``it's``) and single
    symbols become tokens; ``. , ; : ? ! ' ` -`` are dropped.

    Args:
        text: The text.

    Returns:
        Space-separated tokens.

    Examples:
        >>> simple_tokenize("No acute cardiopulmonary process. Heart size is 1.5 cm (normal)!")
        'no acute cardiopulmonary process heart size is 1.5 cm ( normal )'
    """
    tokens = _SIMPLE_TOKEN.findall(text.lower())
    return " ".join(t for t in tokens if t not in _PTB_PUNCT)


def _clean(text: str) -> str:
    return " ".join(text.replace("|||", " ").split())


@dataclass(frozen=True)
class ReportScores(JsonRecord):
    """Corpus-level report-generation scores and per-report details.

    Attributes:
        scores: ``{"BLEU-1": ..., "BLEU-2": ..., "BLEU-3": ..., "BLEU-4": ..., "METEOR": ...,
            "ROUGE-L": ..., "CIDEr": ...}`` (only the metrics asked for), in ``[0, 1]``
            except CIDEr (``[0, 10]``).
        per_report: ``{id: {metric: score}}``; BLEU per report is the sentence-level score.
        n: Number of reports scored.
        tokenizer: The tokenizer used.
    """

    scores: dict[str, float]
    per_report: dict[str, dict[str, float]] = field(default_factory=dict)
    n: int = 0
    tokenizer: str = "ptb"

    def summary(self) -> dict[str, Any]:
        """The corpus-level numbers with ``n`` and the tokenizer."""
        return {**self.scores, "n": self.n, "tokenizer": self.tokenizer}

    def to_markdown(self) -> str:
        """The corpus-level scores as a markdown table (x 100, as papers print them)."""
        rows = [{"metric": k, "value": 100.0 * v} for k, v in self.scores.items()]
        return format_table(rows, fmt="markdown", digits=2)


def _needs_java(what: str) -> None:
    if shutil.which("java") is None:
        raise MissingDependencyError(
            f"{what} runs Java, which was not found on PATH. Install a Java runtime "
            "(e.g. `apt-get install default-jre-headless`) or, without METEOR, "
            "pass tokenizer='simple'."
        )


def report_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, str | Sequence[str]],
    *,
    metrics: Sequence[str | ReportMetric] = tuple(ReportMetric),
    tokenizer: str | ReportTokenizer = ReportTokenizer.PTB,
) -> ReportScores:
    """Score generated reports against reference reports.

    Args:
        predictions: ``{id: generated report}``.
        references: ``{id: reference report or list of references}``; every prediction id
            must have references, and references without a prediction are an error too.
        metrics: Which of ``"bleu"`` (BLEU-1..4), ``"meteor"``, ``"rouge-l"``, ``"cider"``.
        tokenizer: ``"ptb"`` (Stanford PTB tokenizer via Java, as the literature does),
            ``"simple"`` (:func:`simple_tokenize`, no Java) or ``"none"`` (texts are used as
            given, split on whitespace).

    Returns:
        The scores.

    Raises:
        DataFormatError: When ids differ between predictions and references, or a reference
            list is empty.
        MissingDependencyError: When pycocoevalcap is not installed, or Java is needed and absent.

    Examples:
        >>> s = report_metrics({"a": "the heart is normal"}, {"a": ["the heart is normal"]},
        ...                    metrics=["bleu", "rouge-l"], tokenizer="simple")
        >>> round(s.scores["BLEU-4"], 6), s.scores["ROUGE-L"]
        (1.0, 1.0)
    """
    tok = look_up_option(tokenizer, ReportTokenizer, name="tokenizer")
    wanted = [look_up_option(m, ReportMetric, name="metric") for m in metrics]
    if not wanted:
        raise DataFormatError("Expected at least one metric, but got none.")
    pred_ids = {str(k) for k in predictions}
    ref_ids = {str(k) for k in references}
    if pred_ids != ref_ids:
        only_pred = sorted(pred_ids - ref_ids)[:5]
        only_ref = sorted(ref_ids - pred_ids)[:5]
        raise DataFormatError(
            f"Expected the same ids in predictions and references, but {len(pred_ids - ref_ids)} "
            f"prediction id(s) lack references (first: {only_pred}) and {len(ref_ids - pred_ids)} "
            f"reference id(s) lack predictions (first: {only_ref}). Score the common ids only."
        )
    if not pred_ids:
        raise DataFormatError("Expected at least one report to score, but got none.")
    ids = sorted(pred_ids)
    preds = {str(k): v for k, v in predictions.items()}
    refs: dict[str, list[str]] = {}
    for k, v in references.items():
        texts = [v] if isinstance(v, str) else list(v)
        if not texts:
            raise DataFormatError(
                f"Expected at least one reference for id {k!r}, but got an empty list."
            )
        for t in [preds[str(k)], *texts]:
            if not isinstance(t, str):
                raise WrongTypeError(
                    f"Expected report texts to be strings, but got {type(t).__name__} for id {k!r}."
                )
        refs[str(k)] = texts

    require("pycocoevalcap", feature="report_metrics")
    if tok is ReportTokenizer.PTB:
        _needs_java("The PTB tokenizer")
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        ptb = PTBTokenizer()
        gts = ptb.tokenize({i: [{"caption": _clean(t)} for t in refs[i]] for i in ids})
        res = ptb.tokenize({i: [{"caption": _clean(preds[i])}] for i in ids})
    else:
        split = simple_tokenize if tok is ReportTokenizer.SIMPLE else (lambda s: s)
        gts = {i: [_clean(split(_clean(t))) for t in refs[i]] for i in ids}
        res = {i: [_clean(split(_clean(preds[i])))] for i in ids}

    scores: dict[str, float] = {}
    per_report: dict[str, dict[str, float]] = {i: {} for i in ids}
    for metric in wanted:
        if metric is ReportMetric.BLEU:
            from pycocoevalcap.bleu.bleu import Bleu

            corpus, each = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                scores[f"BLEU-{n + 1}"] = float(corpus[n])
                for i, s in zip(ids, each[n], strict=True):
                    per_report[i][f"BLEU-{n + 1}"] = float(s)
        elif metric is ReportMetric.METEOR:
            _needs_java("METEOR")
            from pycocoevalcap.meteor.meteor import Meteor

            scorer = Meteor()
            try:
                corpus_m, each_m = scorer.compute_score(gts, res)
            finally:
                del scorer
            scores["METEOR"] = float(corpus_m)
            for i, s in zip(ids, each_m, strict=True):
                per_report[i]["METEOR"] = float(s)
        elif metric is ReportMetric.ROUGE_L:
            from pycocoevalcap.rouge.rouge import Rouge

            corpus_r, each_r = Rouge().compute_score(gts, res)
            scores["ROUGE-L"] = float(corpus_r)
            for i, s in zip(ids, each_r, strict=True):
                per_report[i]["ROUGE-L"] = float(s)
        else:
            from pycocoevalcap.cider.cider import Cider

            corpus_c, each_c = Cider().compute_score(gts, res)
            scores["CIDEr"] = float(corpus_c)
            for i, s in zip(ids, each_c, strict=True):
                per_report[i]["CIDEr"] = float(s)
    return ReportScores(scores=scores, per_report=per_report, n=len(ids), tokenizer=str(tok))
