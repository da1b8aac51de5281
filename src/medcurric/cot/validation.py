"""Check every generated sample against the seed it came from.

Each check returns a :class:`~medcurric.cot.records.Verdict`; a sample is accepted
when all of them pass. The checks, and the rule each one applies:

``names_organ``
    The rationale names the seed's host organ or one of its synonyms (Hard samples
    have no rationale: the answer of an open question must name it; a closed Hard
    question is left to ``closed_answer``). Unmatched seeds (organ ``None``) pass
    with a note: no organ claim is expected of them.
``names_lesion``
    The rationale (Hard: the question or answer) names the lesion: its noun (the seed's
    lesion phrase without the article, ``extra["lesion_phrase"]``, else derived from the
    lesion type: ``liver lesion`` for DeepLesion's ``liver``), or its head noun (the last
    word, e.g. ``nodule`` for ``pulmonary nodule``), singular or plural. A noun whose head
    is ``lesion`` is also named by ``abnormality``, ``finding``, ``mass`` or ``nodule``.

The lesion noun is never an organ mention: "a liver lesion in the spleen" names the spleen
only, so ``names_organ``, ``no_anatomical_confusion`` and ``closed_answer`` read the text
with the noun reduced to its head word ("a lesion in the spleen").
``no_anatomical_confusion``
    No sentence of the rationale that mentions the lesion (Hard: the answer, as a
    whole) names *another* organ of the lexicon,
    unless that mention is preceded (within four words) by a negation or
    relation cue: ``not``, ``no``, ``rather than``, ``instead of``, ``excluding``,
    ``sparing``, ``spares``, ``than``, ``adjacent to``, ``next to``, ``near``,
    ``abutting``, ``separate from``, ``outside``, ``anterior/posterior/medial/
    lateral/superior/inferior to``, ``above``, ``below``. So "the lesion is in the liver,
    not the kidney" passes and "the lesion is in the kidney" fails for a liver
    seed. Organ names are matched longest first ("left kidney" before "kidney"),
    and a phrase that is a synonym of the host organ, a part of it or its group (with a
    class map: "L2 vertebra" for host ``spine``) is never "another" organ.
    For unmatched seeds every organ is another organ, so an organ claim fails.
``cites_box`` (Easy only)
    The rationale cites a normalised ``[x1, y1, x2, y2]`` box, and the cited box
    closest to the seed's normalised box differs from it by at most
    ``box_tolerance`` in every coordinate.
``closed_answer`` (closed questions only)
    The answer starts with yes or no, and agrees with the seed: for a matched seed
    the question must name exactly one organ and the answer is yes exactly when
    that organ is the host organ; for an ``"adjacent"`` seed (``extra["outcome"]``)
    the question must name the host organ and the answer is no (the lesion lies
    next to it, not in it); for an unmatched seed the question must name no organ
    and the answer is yes (the lesion is there).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from medcurric.cot.records import Verdict
from medcurric.errors import MedcurricError, WrongTypeError
from medcurric.seeds.templates import lesion_phrase

__all__ = [
    "OrganLexicon",
    "OrganVocabulary",
    "cited_boxes",
    "validate_sample",
]

_GENERIC_LESION = ("lesion", "abnormality", "finding", "mass", "nodule")
_CUES = (
    "not",
    "no",
    "rather than",
    "instead of",
    "excluding",
    "sparing",
    "spares",
    "than",
    "adjacent to",
    "next to",
    "near",
    "abutting",
    "separate from",
    "outside",
    "outside of",
    "anterior to",
    "posterior to",
    "medial to",
    "lateral to",
    "superior to",
    "inferior to",
    "above",
    "below",
)
_CUE_WINDOW = 4
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX = re.compile(
    rf"[\[(]\s*({_NUM})\s*[,;]\s*({_NUM})\s*[,;]\s*({_NUM})\s*[,;]\s*({_NUM})\s*[\])]"
)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_YES = {"yes", "y", "true", "correct", "present", "positive"}
_NO = {"no", "n", "false", "incorrect", "absent", "negative"}


@runtime_checkable
class OrganVocabulary(Protocol):
    """What validation needs from a class map: organ names and their synonyms.

    :class:`medcurric.anatomy.ClassMap` satisfies it; so does :class:`OrganLexicon`.
    """

    def synonyms(self, name: str) -> Sequence[str]:
        """Return the phrases that name organ ``name`` (its display name included)."""
        ...

    def display_name(self, name: str) -> str:
        """Return the human-readable name of organ ``name``."""
        ...


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _default_display(name: str) -> str:
    words = name.replace("_", " ").replace("-", " ").split()
    sides = [w for w in words if w in ("left", "right")]
    rest = [w for w in words if w not in ("left", "right")]
    return " ".join(sides + rest) if words else name


class OrganLexicon:
    """Organ names with synonyms, compiled for fast longest-first matching in text.

    Args:
        synonyms: Organ name -> phrases naming it. The display name of each organ
            (``kidney_right`` -> ``right kidney``) and the name itself are added.
        display_names: Optional organ name -> display name.
        source: The vocabulary it was built from, asked for organs added later.

    Examples:
        >>> from medcurric.cot import OrganLexicon
        >>> lex = OrganLexicon({"liver": ["hepatic"], "kidney_right": ["right kidney"]})
        >>> [m[0] for m in lex.find("A hepatic lesion, not in the right kidney.")]
        ['liver', 'kidney_right']
        >>> lex.display_name("kidney_right")
        'right kidney'
    """

    def __init__(
        self,
        synonyms: Mapping[str, Iterable[str]],
        display_names: Mapping[str, str] | None = None,
        source: Any = None,
    ) -> None:
        self._source = source
        self._extended: dict[str, OrganLexicon] = {}
        self._display: dict[str, str] = {}
        self._synonyms: dict[str, tuple[str, ...]] = {}
        phrase_to_organs: dict[str, set[str]] = {}
        for name, syns in synonyms.items():
            disp = (display_names or {}).get(name) or _default_display(name)
            self._display[name] = disp
            phrases = {_norm(p) for p in (name, disp, *syns)} - {""}
            self._synonyms[name] = tuple(sorted(phrases))
            for p in phrases:
                phrase_to_organs.setdefault(p, set()).add(name)
        self._phrase_to_organs = phrase_to_organs
        ordered = sorted(phrase_to_organs, key=lambda p: (-len(p), p))
        self._pattern = (
            re.compile(r"\b(" + "|".join(re.escape(p) for p in ordered) + r")s?\b")
            if ordered
            else None
        )

    @classmethod
    def from_vocabulary(cls, vocabulary: Any, names: Iterable[str] | None = None) -> OrganLexicon:
        """Build a lexicon from a class map (or anything with ``synonyms``/``display_name``).

        Args:
            vocabulary: An :class:`OrganVocabulary`, an :class:`OrganLexicon` (returned as is)
                or a mapping of organ name -> synonyms.
            names: The organ names to include; by default the vocabulary's ``names``.

        Returns:
            The lexicon.
        """
        if isinstance(vocabulary, OrganLexicon):
            return vocabulary
        if isinstance(vocabulary, Mapping):
            return cls(vocabulary)
        if not isinstance(vocabulary, OrganVocabulary):
            raise WrongTypeError(
                "Expected an organ vocabulary (a ClassMap, an OrganLexicon or a dict of "
                f"organ -> synonyms), but got {type(vocabulary).__name__}."
            )
        if names is None:
            names = _vocabulary_names(vocabulary)
        syn: dict[str, list[str]] = {}
        disp: dict[str, str] = {}
        for n in names:
            syn[n] = [str(s) for s in vocabulary.synonyms(n)]
            disp[n] = str(vocabulary.display_name(n))
        return cls(syn, disp, source=vocabulary)

    @property
    def names(self) -> tuple[str, ...]:
        """The organ names, in insertion order."""
        return tuple(self._synonyms)

    def synonyms(self, name: str) -> tuple[str, ...]:
        """Return the normalised phrases naming ``name`` (empty when unknown)."""
        return self._synonyms.get(name, ())

    def display_name(self, name: str) -> str:
        """Return the display name of ``name`` (derived from the name when unknown)."""
        return self._display.get(name) or _default_display(name)

    def with_organ(self, name: str) -> OrganLexicon:
        """Return this lexicon, extended with ``name`` when it is missing."""
        if name in self._synonyms:
            return self
        if name in self._extended:
            return self._extended[name]
        syn = {n: list(s) for n, s in self._synonyms.items()}
        display = dict(self._display)
        syn[name] = [name]
        if self._source is not None:
            try:  # e.g. a group name of a class map ("lung_left")
                syn[name] = [str(p) for p in self._source.synonyms(name)]
                display[name] = str(self._source.display_name(name))
            except (MedcurricError, KeyError, ValueError):
                pass
        self._extended[name] = OrganLexicon(syn, display, source=self._source)
        return self._extended[name]

    def same_structure(self, host: str, organs: Iterable[str]) -> bool:
        """Whether any of ``organs`` is ``host``, a part of it or the group it belongs to.

        With a class map as source, a member of the host's group ("L2 vertebra" for host
        ``spine``, a lobe for host ``lung_right``) and the host's own group are the same
        structure, never "another organ".
        """
        group_of = getattr(self._source, "group_of", None)

        def group(name: str) -> str:
            if group_of is None:
                return name
            try:
                return str(group_of(name))
            except (MedcurricError, KeyError, ValueError):
                return name

        host_group = group(host)
        return any(o == host or group(o) == host or o == host_group for o in organs)

    def find(self, text: str) -> list[tuple[str, int, int, frozenset[str]]]:
        """Find organ mentions in ``text``, longest phrase first, without overlaps.

        Returns:
            ``(first organ, start word, end word, all organs the phrase names)`` per
            mention, positions counted in words of the normalised text.
        """
        if self._pattern is None:
            return []
        norm = _norm(text)
        out = []
        for m in self._pattern.finditer(norm):
            organs = self._phrase_to_organs[m.group(1)]
            start = norm.count(" ", 0, m.start()) if m.start() else 0
            end = start + m.group(1).count(" ") + 1
            out.append((sorted(organs)[0], start, end, frozenset(organs)))
        return out


def _vocabulary_names(vocabulary: Any) -> list[str]:
    for attr in ("names", "organ_names"):
        value = getattr(vocabulary, attr, None)
        if callable(value):
            value = value()
        if value is not None and not isinstance(value, str):
            names = list(value.values()) if isinstance(value, Mapping) else list(value)
            return [str(n) for n in names if str(n) and str(n) != "background"]
    raise WrongTypeError(
        f"Cannot list the organ names of {type(vocabulary).__name__}: expected a 'names' "
        "attribute. Pass names=... explicitly."
    )


def cited_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Return every ``[x1, y1, x2, y2]`` (or parenthesised) quadruple of numbers in ``text``.

    Examples:
        >>> from medcurric.cot import cited_boxes
        >>> cited_boxes("the box [0.1250, 0.2500, 0.3750, 0.5000] and (1, 2, 3, 4)")
        [(0.125, 0.25, 0.375, 0.5), (1.0, 2.0, 3.0, 4.0)]
    """
    out = []
    for m in _BOX.finditer(text):
        try:
            out.append(tuple(float(g) for g in m.groups()))
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
    return out  # type: ignore[return-value]


def _lesion_terms(noun: str) -> list[str]:
    norm = _norm(noun)
    if not norm or norm in _GENERIC_LESION:
        return list(_GENERIC_LESION)
    terms = [norm]
    head = norm.split()[-1]
    if head not in terms:
        terms.append(head)
    if head == "lesion":
        terms += [t for t in _GENERIC_LESION if t not in terms]
    return terms


def _lesion_noun(sample: Any) -> str:
    """The sample's lesion noun, normalised: its seed's phrase without the article."""
    extra = sample.extra if isinstance(sample.extra, dict) else {}
    phrase = str(extra.get("lesion_phrase") or lesion_phrase(sample.lesion_type or "lesion"))
    words = _norm(phrase).split()
    return " ".join(words[1:] if len(words) > 1 and words[0] in ("a", "an") else words)


def _unmask(text: str, ctx: _Context) -> str:
    """``text`` normalised, the lesion noun reduced to its head ("liver lesion" -> "lesion")."""
    norm = _norm(text)
    words = ctx.lesion_noun.split()
    if len(words) < 2:
        return norm
    return re.sub(rf"\b{re.escape(ctx.lesion_noun)}(?=(?:s|es)?\b)", words[-1], norm)


def _names_terms(text: str, terms: Sequence[str]) -> str | None:
    norm = f" {_norm(text)} "
    for t in terms:
        if f" {t} " in norm or f" {t}s " in norm or f" {t}es " in norm:
            return t
    return None


def _cue_before(words: list[str], start: int) -> str | None:
    window = words[max(0, start - _CUE_WINDOW) : start]
    joined = " " + " ".join(window) + " "
    for cue in _CUES:
        if f" {cue} " in joined:
            return cue
    return None


def _yes_no(answer: str) -> str | None:
    words = _norm(answer).split()
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    return None


@dataclass(frozen=True)
class _Context:
    organ: str | None
    lesion_type: str
    stage: str
    question_type: str
    box_norm: tuple[float, ...] | None
    adjacent: bool = False
    lesion_noun: str = "lesion"


def validate_sample(
    sample: Any,
    *,
    lexicon: OrganLexicon,
    box_tolerance: float = 0.02,
) -> tuple[Verdict, ...]:
    """Run every check that applies to ``sample`` (a :class:`~medcurric.cot.CoTSample`).

    The seed's facts are read from the sample itself (``organ``, ``lesion_type``,
    ``stage``, ``question_type``, ``box_norm``), which the generator copies from the seed.

    Args:
        sample: The sample to check.
        lexicon: Organ names and synonyms (:meth:`OrganLexicon.from_vocabulary` for a class map).
        box_tolerance: Largest allowed difference per normalised coordinate between the
            cited box and the seed's box (Easy).

    Returns:
        One verdict per check; see the module documentation for the rules.

    Examples:
        >>> from medcurric.cot import CoTSample, OrganLexicon, validate_sample
        >>> lex = OrganLexicon({"liver": ["hepatic"], "kidney_left": []})
        >>> s = CoTSample(id="x", seed_id="s", stage="medium", question_type="open",
        ...     question="Where is the cyst?",
        ...     rationale="A cyst lies in the liver, not the left kidney.",
        ...     answer="liver", image="a.png", organ="liver", lesion_type="cyst")
        >>> [(v.check, v.passed) for v in validate_sample(s, lexicon=lex)]
        [('names_organ', True), ('names_lesion', True), ('no_anatomical_confusion', True)]
    """
    ctx = _Context(
        organ=sample.organ,
        lesion_type=sample.lesion_type or "lesion",
        stage=str(sample.stage),
        question_type=str(sample.question_type),
        box_norm=tuple(sample.box_norm) if sample.box_norm is not None else None,
        adjacent=isinstance(sample.extra, dict) and sample.extra.get("outcome") == "adjacent",
        lesion_noun=_lesion_noun(sample),
    )
    if ctx.organ is not None:
        lexicon = lexicon.with_organ(ctx.organ)
    if ctx.stage == "hard":
        text = f"{sample.question} {sample.answer}"
        organ = (
            Verdict(
                "names_organ", True, "closed Hard question: the organ is checked by closed_answer"
            )
            if ctx.question_type == "closed"
            else _check_organ(sample.answer, ctx, lexicon)
        )
        confusion = _check_confusion(sample.answer, ctx, lexicon)
    else:
        text = sample.rationale
        organ = _check_organ(text, ctx, lexicon)
        confusion = _check_confusion(text, ctx, lexicon)
    verdicts = [organ, _check_lesion(text, ctx), confusion]
    if ctx.stage == "easy":
        verdicts.append(_check_box(sample.rationale, ctx, box_tolerance))
    if ctx.question_type == "closed":
        verdicts.append(_check_closed(sample.question, sample.answer, ctx, lexicon))
    return tuple(verdicts)


def _check_organ(text: str, ctx: _Context, lexicon: OrganLexicon) -> Verdict:
    if ctx.organ is None:
        return Verdict("names_organ", True, "unmatched seed: no host organ to name")
    for *_rest, organs in lexicon.find(_unmask(text, ctx)):
        if ctx.organ in organs:
            return Verdict("names_organ", True, f"names {lexicon.display_name(ctx.organ)!r}")
    syns = ", ".join(repr(s) for s in lexicon.synonyms(ctx.organ)[:6])
    return Verdict("names_organ", False, f"does not name the host organ (any of {syns})")


def _check_lesion(text: str, ctx: _Context) -> Verdict:
    terms = _lesion_terms(ctx.lesion_noun)
    hit = _names_terms(text, terms)
    if hit:
        return Verdict("names_lesion", True, f"names {hit!r}")
    return Verdict("names_lesion", False, f"does not name the lesion (any of {terms})")


def _check_confusion(text: str, ctx: _Context, lexicon: OrganLexicon) -> Verdict:
    terms = _lesion_terms(ctx.lesion_noun)
    # Hard samples are short: the question + answer count as one sentence.
    sentences = [text] if ctx.stage == "hard" else [s for s in _SENTENCE.split(text) if s.strip()]
    for sentence in sentences:
        if _names_terms(sentence, terms) is None and ctx.stage != "hard":
            continue
        masked = _unmask(sentence, ctx)
        words = masked.split()
        for organ, start, _end, organs in lexicon.find(masked):
            if ctx.organ is not None and lexicon.same_structure(ctx.organ, organs):
                continue
            cue = _cue_before(words, start)
            if cue is None:
                what = (
                    "an organ claim for an unmatched seed"
                    if ctx.organ is None
                    else f"another organ ({lexicon.display_name(organ)!r}) as the lesion's site"
                )
                return Verdict(
                    "no_anatomical_confusion",
                    False,
                    f"names {what} in: {sentence.strip()[:200]!r}",
                )
    return Verdict("no_anatomical_confusion", True, "")


def _check_box(text: str, ctx: _Context, tolerance: float) -> Verdict:
    if ctx.box_norm is None or len(ctx.box_norm) != 4:
        return Verdict("cites_box", False, "the seed has no normalised 2D box to compare with")
    boxes = cited_boxes(text)
    if not boxes:
        return Verdict("cites_box", False, "the rationale cites no [x1, y1, x2, y2] box")
    ref = ctx.box_norm
    best = min(boxes, key=lambda b: max(abs(a - r) for a, r in zip(b, ref, strict=True)))
    err = max(abs(a - r) for a, r in zip(best, ref, strict=True))
    detail = (
        f"cited [{', '.join(f'{v:.4f}' for v in best)}] vs seed "
        f"[{', '.join(f'{v:.4f}' for v in ref)}]: max error {err:.4f} (tolerance {tolerance})"
    )
    return Verdict("cites_box", err <= tolerance, detail)


def _check_closed(question: str, answer: str, ctx: _Context, lexicon: OrganLexicon) -> Verdict:
    said = _yes_no(answer)
    if said is None:
        return Verdict("closed_answer", False, f"answer {answer[:80]!r} does not start with yes/no")
    mentions = lexicon.find(_unmask(question, ctx))
    asked = {frozenset(m[3]) for m in mentions}
    if ctx.organ is None:
        if asked:
            return Verdict(
                "closed_answer", False, "question names an organ, but the seed has no host organ"
            )
        expected = "yes"
    else:
        if len(asked) != 1:
            return Verdict(
                "closed_answer",
                False,
                f"question must name exactly one organ to be checkable, but names {len(asked)}",
            )
        names_host = ctx.organ in next(iter(asked))
        if ctx.adjacent and not names_host:
            return Verdict(
                "closed_answer",
                False,
                "the seed's lesion lies next to its organ: only a question about that organ "
                "can be checked",
            )
        expected = "no" if ctx.adjacent else ("yes" if names_host else "no")
    ok = said == expected
    return Verdict("closed_answer", ok, f"answer {said!r}, expected {expected!r} from the seed")
