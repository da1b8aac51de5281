"""Report metrics: BLEU and ROUGE-L against brute-force computations; PTB/METEOR with Java."""

from __future__ import annotations

import math
import shutil
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import DataFormatError, InvalidOptionError, MissingDependencyError
from medcurric.eval import ReportScores, report_metrics, simple_tokenize

pytest.importorskip("pycocoevalcap", reason="report metrics need the 'eval' extra (pycocoevalcap)")

HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(
    not HAS_JAVA, reason="the PTB tokenizer and METEOR need a Java runtime (java not on PATH)"
)


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _brute_corpus_bleu(
    preds: dict[str, str], refs: dict[str, list[str]], n_max: int = 4
) -> list[float]:
    """Papineni et al. corpus BLEU, clipped n-gram counts, closest reference length."""
    correct = [0] * n_max
    guess = [0] * n_max
    hyp_len = ref_len = 0
    for k, pred in preds.items():
        h = pred.split()
        rs = [r.split() for r in refs[k]]
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda L: (abs(L - len(h)), L))
        for n in range(1, n_max + 1):
            hc = _ngrams(h, n)
            best: Counter[tuple[str, ...]] = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            correct[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            guess[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    out = []
    for n in range(1, n_max + 1):
        logs = [math.log(correct[k] / guess[k]) for k in range(n)]
        out.append(bp * math.exp(sum(logs) / n))
    return out


_VOCAB = ["the", "heart", "is", "normal", "no", "effusion", "lungs", "are", "clear", "size"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(_VOCAB), min_size=4, max_size=12),
            st.lists(
                st.lists(st.sampled_from(_VOCAB), min_size=4, max_size=12), min_size=1, max_size=3
            ),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_bleu_matches_brute_force(corpus: list[tuple[list[str], list[list[str]]]]) -> None:
    # Guarantee every n-gram order has a match so the log is defined, by appending a shared
    # 4-gram to each hypothesis and its first reference.
    preds = {
        f"r{i}": " ".join([*h, "lungs", "are", "clear", "now"]) for i, (h, _) in enumerate(corpus)
    }
    refs = {
        f"r{i}": [" ".join(rs[0] + ["lungs", "are", "clear", "now"])]
        + [" ".join(r) for r in rs[1:]]
        for i, (_, rs) in enumerate(corpus)
    }
    got = report_metrics(preds, refs, metrics=["bleu"], tokenizer="none")
    expected = _brute_corpus_bleu(preds, refs)
    for n in range(4):
        assert got.scores[f"BLEU-{n + 1}"] == pytest.approx(expected[n], rel=1e-6)


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=10),
    st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=10),
)
def test_rouge_l_matches_lcs(h: list[str], r: list[str]) -> None:
    got = report_metrics(
        {"a": " ".join(h)}, {"a": " ".join(r)}, metrics=["rouge-l"], tokenizer="none"
    )
    lcs = _lcs(h, r)
    beta = 1.2
    if lcs == 0:
        expected = 0.0
    else:
        p, rec = lcs / len(h), lcs / len(r)
        expected = (1 + beta**2) * p * rec / (rec + beta**2 * p)
    assert got.scores["ROUGE-L"] == pytest.approx(expected)
    assert got.per_report["a"]["ROUGE-L"] == pytest.approx(expected)


def test_cider_prefers_the_better_report() -> None:
    refs = {
        "a": ["the heart size is normal", "normal heart size"],
        "b": ["no pleural effusion", "there is no effusion"],
        "c": ["the lungs are clear", "clear lungs"],
    }
    good = {"a": "heart size is normal", "b": "no pleural effusion", "c": "lungs are clear"}
    bad = {"a": "lungs are clear", "b": "heart size is normal", "c": "no pleural effusion"}
    s_good = report_metrics(good, refs, metrics=["cider"], tokenizer="simple")
    s_bad = report_metrics(bad, refs, metrics=["cider"], tokenizer="simple")
    assert s_good.scores["CIDEr"] > 1.0 > s_bad.scores["CIDEr"] >= 0.0


def test_simple_tokenizer() -> None:
    assert (
        simple_tokenize("No acute disease. It's 1.5 cm; stable!")
        == "no acute disease it's 1.5 cm stable"
    )
    assert simple_tokenize("T2-weighted, 3/4") == "t2 weighted 3 / 4"


def test_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataFormatError, match="lack references"):
        report_metrics({"a": "x", "b": "y"}, {"a": "x"}, tokenizer="simple")
    with pytest.raises(DataFormatError, match="empty list"):
        report_metrics({"a": "x"}, {"a": []}, tokenizer="simple")
    with pytest.raises(DataFormatError, match="at least one report"):
        report_metrics({}, {}, tokenizer="simple")
    with pytest.raises(InvalidOptionError, match="rouge-l"):
        report_metrics({"a": "x"}, {"a": "x"}, metrics=["rouge"], tokenizer="simple")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError, match="Java"):
        report_metrics({"a": "x"}, {"a": "x"}, metrics=["bleu"], tokenizer="ptb")
    with pytest.raises(MissingDependencyError, match="METEOR"):
        report_metrics({"a": "x"}, {"a": "x"}, metrics=["meteor"], tokenizer="simple")


def test_missing_pycocoevalcap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)
    with pytest.raises(MissingDependencyError, match=r"medcurric\[eval\]"):
        report_metrics({"a": "x"}, {"a": "x"}, tokenizer="simple")


PREDS = {
    "s1": "The heart is normal in size. No pleural effusion.",
    "s2": "Lungs are clear ||| no pneumothorax.",
    "s3": "",
    "same": "the heart size is normal and there is no pleural effusion",
    "other": "the heart size is normal and there is no pleural effusion",
}
REFS = {
    "s1": ["Heart size is normal. There is no pleural effusion."],
    "s2": ["The lungs are clear.\nNo pneumothorax.", "Clear lungs, no pneumothorax."],
    "s3": ["No acute cardiopulmonary process."],
    "same": ["The heart size is normal and there is no pleural effusion."],
    "other": ["completely unrelated words here"],
}


@pytest.fixture(scope="module")
def full_scores() -> ReportScores:
    # PTB tokenizer + METEOR with every metric: one JVM start each for the whole module
    return report_metrics(PREDS, REFS)


@needs_java
@pytest.mark.slow
def test_full_metrics_with_java(full_scores: ReportScores) -> None:
    s = full_scores
    assert list(s.scores) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert s.n == 5 and s.tokenizer == "ptb"
    for name, value in s.scores.items():
        assert 0.0 <= value <= (10.0 if name == "CIDEr" else 1.0)
        assert all(name in per for per in s.per_report.values())
    assert s.per_report["s3"]["METEOR"] == 0.0 and s.per_report["s3"]["ROUGE-L"] == 0.0
    assert s.per_report["same"]["METEOR"] > 0.95
    assert s.per_report["other"]["METEOR"] < 0.2
    assert 0.3 < s.per_report["s1"]["METEOR"] < s.per_report["same"]["METEOR"]
    # PTB lower-cases and drops punctuation as simple_tokenize does on these texts
    simple = report_metrics(PREDS, REFS, metrics=["bleu", "rouge-l", "cider"], tokenizer="simple")
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert s.scores[name] == pytest.approx(simple.scores[name], rel=1e-9)
    md = s.to_markdown()
    assert "| METEOR |" in md and ReportScores.from_dict(s.to_dict()) == s
