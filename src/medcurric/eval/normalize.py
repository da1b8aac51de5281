r"""Answer normalisation for medical VQA scoring, LLaVA-Med-compatible or corrected.

LLaVA-Med's published evaluation (``llava/eval/eval_metrics/glossary.py``)
normalises answers in the style of the VQA challenge. Reproducing its numbers
needs its behaviour exactly, including these quirks, which
``compat="llava-med"`` keeps and the default mode corrects:

* Only 21 punctuation marks are handled (``; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !``);
  ``:``, ``*``, ``#``, ``%``, ``&``, ``|`` and ``'`` survive inside tokens.
* Each mark is deleted when it touches a space anywhere in the text (or when the
  text contains a digit-comma-digit group anywhere), and replaced by a space
  otherwise, so ``"left/right"`` splits but ``"left / right"`` becomes ``"left right"``
  and one ``"1,000"`` glues every other marked word together.
* The period pattern's intended "not after a digit" look-behind is written as a
  look-ahead for the text ``<=``, so a period is deleted whenever the next
  character is not a digit (``"t2."`` -> ``"t2"``, ``"end.next"`` -> ``"endnext"``),
  and the ``re.UNICODE`` flag lands in ``re.sub``'s ``count`` argument, so at most
  32 periods are deleted per pass.
* ``"none"`` maps to ``"0"`` along with the number words zero .. ten.
* The contraction table's capitalised keys (``Im``, ``Ive``, ``Id've``) never
  match lower-cased text, ``shes`` and ``lets`` are not restored, and
  ``"somebody'd"`` is turned into ``"somebodyd"``.

The default mode normalises Unicode (NFKC) and case (casefold), turns every
punctuation or symbol character into a space except a period or comma between
digits (``"1.5"`` is kept, ``"1,000"`` -> ``"1000"``) and an apostrophe between
letters, maps zero .. ten (not ``none``) to digits, drops articles and restores
every contraction of the table in lower case.

Examples:
    >>> normalize_answer("The Left-Lung, probably.")
    'left lung probably'
    >>> normalize_answer("none", compat="llava-med"), normalize_answer("none")
    ('0', 'none')
    >>> normalize_answer("end.next", compat="llava-med"), normalize_answer("end.next")
    ('endnext', 'end next')
"""

from __future__ import annotations

import re
import unicodedata

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import WrongTypeError

__all__ = ["Compat", "normalize_answer"]


class Compat(StrEnum):
    """Which scoring behaviour to follow.

    * ``DEFAULT``: corrected normalisation and metrics (see :mod:`medcurric.eval.vqa`),
      scoring the final answer of a chain-of-thought reply.
    * ``LLAVA_MED``: LLaVA-Med's ``run_eval.py`` at tag v1.0.0 (after its PR #35,
      December 2023), quirks included, so that the numbers later papers ran are
      reproduced exactly: a closed reply that says yes/no but not the answer counts 0.
    * ``LLAVA_MED_2023_08``: the same script as first released (commit ad758b6,
      August 2023), where such a closed reply is dropped from the denominator.

    Both LLaVA-Med modes score the raw reply, as the script did.
    """

    DEFAULT = "default"
    LLAVA_MED = "llava-med"
    LLAVA_MED_2023_08 = "llava-med-2023-08"

    @property
    def llava_med(self) -> bool:
        """Whether this mode follows LLaVA-Med's script (either version)."""
        return self is not Compat.DEFAULT

    @property
    def label(self) -> str:
        """What produced the numbers, for table headers.

        Examples:
            >>> Compat("llava-med").label
            'llava-med: LLaVA-Med run_eval.py v1.0.0'
        """
        return _COMPAT_LABELS[self.value]


_COMPAT_LABELS = {
    "default": "default: medcurric corrected, final answer",
    "llava-med": "llava-med: LLaVA-Med run_eval.py v1.0.0",
    "llava-med-2023-08": "llava-med-2023-08: LLaVA-Med run_eval.py first release (ad758b6)",
}


# --- facts about LLaVA-Med's glossary (re-expressed, not copied) -----------------

#: The only punctuation marks LLaVA-Med's normaliser handles, in its order.
_LLAVA_PUNCT: tuple[str, ...] = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
#: What the published period pattern does in effect: a period not followed by a digit.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
#: ``re.UNICODE`` (32) passed positionally as ``count``.
_LLAVA_PERIOD_COUNT = int(re.UNICODE)

_NUMBER_WORDS: dict[str, str] = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}
_LLAVA_NUMBER_WORDS: dict[str, str] = {"none": "0", **_NUMBER_WORDS}
_ARTICLES = frozenset({"a", "an", "the"})

#: Canonical contractions whose apostrophe-less spellings the VQA table restores.
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've "
    "it'll ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't "
    "'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll "
    "somebody's someone'd someone'd've someone'll someone's something'd something'd've "
    "something'll that's there'd there'd've there're there's they'd they'd've they'll they're "
    "they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd "
    "where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _misspellings(canonical: str) -> list[str]:
    """Spellings the VQA table maps to ``canonical``: one apostrophe dropped (or the only one)."""
    spots = [i for i, ch in enumerate(canonical) if ch == "'"]
    if len(spots) == 1:
        return [canonical.replace("'", "")]
    return [canonical[:i] + canonical[i + 1 :] for i in spots]


def _llava_contractions() -> dict[str, str]:
    table = {key: c for c in _CONTRACTIONS for key in _misspellings(c)}
    # The published table also holds one entry written backwards.
    table["somebody'd"] = "somebodyd"
    return table


def _default_contractions() -> dict[str, str]:
    table: dict[str, str] = {}
    for c in _CONTRACTIONS:
        low = c.lower()
        for key in {*_misspellings(low), low.replace("'", "")}:
            if key != low:
                table[key] = low
    table["shes"] = "she's"
    table["somebodyd"] = "somebody'd"
    return table


_LLAVA_CONTRACTIONS = _llava_contractions()
_DEFAULT_CONTRACTIONS = _default_contractions()


def _normalize_llava_med(text: str) -> str:
    """One pass of LLaVA-Med's ``normalize_word``, behaviour for behaviour."""
    glue_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _LLAVA_PUNCT:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if (touches_space or glue_all) else " ")
    out = _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_LLAVA_PERIOD_COUNT)
    words = []
    for word in out.lower().split():
        word = _LLAVA_NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_LLAVA_CONTRACTIONS.get(word, word))
    return " ".join(words).replace(",", "")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _normalize_default(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    chars = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        if not _is_punct(ch):
            chars.append(ch)
            continue
        prev_ch = text[i - 1] if i > 0 else ""
        next_ch = text[i + 1] if i < last else ""
        if ch in ".," and prev_ch.isdigit() and next_ch.isdigit():
            chars.append("." if ch == "." else "")
        elif ch in "'’" and prev_ch.isalpha() and next_ch.isalpha():
            chars.append("'")
        else:
            chars.append(" ")
    words = []
    for word in "".join(chars).split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_DEFAULT_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(text: str, *, compat: str | Compat = Compat.DEFAULT) -> str:
    """Normalise an answer for token-level comparison.

    Args:
        text: A ground-truth or predicted answer (untrusted text; only read).
        compat: ``"default"`` for the corrected normalisation or ``"llava-med"``
            for one pass of LLaVA-Med's ``normalize_word`` after lower-casing
            (see the module docstring for the differences).

    Returns:
        Space-separated normalised tokens.

    Raises:
        WrongTypeError: When ``text`` is not a string.
        InvalidOptionError: When ``compat`` is unknown.

    Examples:
        >>> normalize_answer("Two nodules, 1,000 cells; it's 1.5 cm.")
        "2 nodules 1000 cells it's 1.5 cm"
        >>> normalize_answer("left/right", compat="llava-med")
        'left right'
        >>> normalize_answer("left / right", compat="llava-med")
        'left right'
    """
    if not isinstance(text, str):
        raise WrongTypeError(
            f"Expected an answer string, but got {type(text).__name__}. "
            "Convert numbers with str() first."
        )
    mode = look_up_option(compat, Compat, name="compat")
    if mode.llava_med:
        return _normalize_llava_med(text.lower())
    return _normalize_default(text)
