"""Seed sentence templates and their safe substitution.

A template is plain text with ``{field}`` placeholders drawn from a fixed list
(:data:`TEMPLATE_FIELDS`), filled by :func:`medcurric.templating.fill_template`: one
pass over the *template*, values inserted verbatim and never scanned again, so text
coming from dataset metadata (a lesion type such as ``"{organ.__class__}"`` or
``"${x}"``) stays as it is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcurric.errors import DataFormatError, MissingFileError, TemplateError, WrongTypeError
from medcurric.templating import fill_template, template_fields

__all__ = [
    "DEFAULT_TEMPLATES",
    "TEMPLATE_FIELDS",
    "SeedTemplates",
    "indefinite_article",
    "lesion_at",
    "lesion_noun",
    "lesion_phrase",
    "render_template",
]

_UNKNOWN_TYPES = {"", "-1", "unknown", "none", "nan", "null", "lesion", "n/a"}
#: Lesion types that name a site, not a lesion, as the adjective the lesion noun takes:
#: DeepLesion's eight coarse types, then organ words a user's type may hold.
_SITE_ADJECTIVES = {
    "bone": "bone",
    "abdomen": "abdominal",
    "mediastinum": "mediastinal",
    "liver": "liver",
    "lung": "lung",
    "kidney": "kidney",
    "soft tissue": "soft-tissue",
    "pelvis": "pelvic",
    "adrenal": "adrenal",
    "adrenal gland": "adrenal",
    "spleen": "splenic",
    "pancreas": "pancreatic",
    "gallbladder": "gallbladder",
    "stomach": "gastric",
    "bladder": "bladder",
    "thyroid": "thyroid",
    "breast": "breast",
    "prostate": "prostatic",
    "uterus": "uterine",
    "brain": "brain",
    "heart": "cardiac",
    "chest": "chest",
    "neck": "neck",
}
# Letters whose spoken name starts with a vowel sound (an MRI, an FDG-avid, an L2)
_VOWEL_LETTERS = set("aefhilmnorsx")
# 'u' words read with a 'you' sound take 'a' (a uterine, a unilocular, a ureteral)
_YOU_SOUND = ("uni", "ure", "uri", "ute", "usu", "uro", "uv", "eu")


def indefinite_article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for a phrase, by how its first word sounds.

    Examples:
        >>> [indefinite_article(p) for p in ("adrenal lesion", "8 mm cyst", "14 mm cyst", "uterine mass",
        ...     "ulcer", "FDG-avid node", "hour", "liver lesion")]
        ['an', 'an', 'a', 'a', 'an', 'an', 'an', 'a']
    """
    head = phrase.strip().split(" ", 1)[0]
    low = head.lower()
    if not low:
        return "a"
    if low[0].isdigit():  # numbers by sound: an 8, an 11, an 18, an 80; a 14
        digits = low.split(".")[0].split("-")[0]
        return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    letters = head.split("-")[0]
    if len(letters) > 1 and letters.isupper():  # an acronym is read letter by letter
        return "an" if letters[0].lower() in _VOWEL_LETTERS else "a"
    if low.startswith(_YOU_SOUND) or low.startswith(("one", "once")):
        return "a"
    return "an" if low[0] in "aeiou" or low.startswith(("hour", "honest", "honor")) else "a"


def lesion_noun(lesion_type: str | None) -> str:
    """The lesion type as a noun phrase; unknown types read ``"lesion"``.

    Args:
        lesion_type: The record's type (free text from the dataset, kept as data).

    Returns:
        ``"lesion"`` for unknown types (``-1``, ``""``, ``"unknown"``); ``"<site> lesion"``
        for a type that names a body region or organ (DeepLesion's coarse types:
        ``"liver"`` -> ``"liver lesion"``, ``"abdomen"`` -> ``"abdominal lesion"``,
        ``"soft tissue"`` -> ``"soft-tissue lesion"``); else the text itself (whitespace
        normalised).

    Examples:
        >>> lesion_noun("-1"), lesion_noun("liver"), lesion_noun("Abdomen"), lesion_noun("nodule")
        ('lesion', 'liver lesion', 'abdominal lesion', 'nodule')
        >>> lesion_noun("{x}")
        '{x}'
    """
    text = " ".join(str(lesion_type or "").split())
    low = text.lower()
    if low in _UNKNOWN_TYPES:
        return "lesion"
    if low in _SITE_ADJECTIVES:
        return f"{_SITE_ADJECTIVES[low]} lesion"
    return text


def lesion_at(phrase: str, organ_names: Iterable[str]) -> str:
    """The lesion phrase to write next to an organ: ``"a lesion"`` where its site only repeats it.

    "A liver lesion in the liver" says the site twice, and a closed question "Is there a liver
    lesion in the liver?" gives its answer away; "a lung lesion in the left clavicle" keeps
    its words, which say something the organ does not.

    Args:
        phrase: The lesion phrase (:func:`lesion_phrase`), or a bare noun.
        organ_names: The phrases naming the organ (its name, display name, synonyms).

    Examples:
        >>> lesion_at("a liver lesion", ["liver", "hepatic"]), lesion_at("an 8 mm kidney lesion", ["left kidney"])
        ('a lesion', 'an 8 mm lesion')
        >>> lesion_at("a lung lesion", ["left clavicle"]), lesion_at("a liver cyst", ["liver"])
        ('a lung lesion', 'a liver cyst')
    """
    words = phrase.split()
    if len(words) < 2 or words[-1].lower() != "lesion":
        return phrase
    organ_words = {w for name in organ_names for w in name.lower().replace("_", " ").split()}
    start = 1 if words[0].lower() in ("a", "an") else 0
    while start < len(words) - 1 and (words[start][:1].isdigit() or words[start] == "mm"):
        start += 1  # keep a size ("14 mm")
    site = [w.lower() for w in words[start:-1]]
    if not site or not {w for s in site for w in s.split("-")} <= organ_words:
        return phrase
    kept = [*words[:start], "lesion"]
    if words[0].lower() in ("a", "an"):
        kept[0] = indefinite_article(" ".join(kept[1:]))
        kept[0] = kept[0].capitalize() if words[0][0].isupper() else kept[0]
    return " ".join(kept)


def lesion_phrase(lesion_type: str | None) -> str:
    """The lesion as a noun phrase with its article: what every question and prompt says.

    A type that already starts with an article (a phrase built before) is kept.

    Examples:
        >>> [lesion_phrase(t) for t in ("liver", "soft tissue", "abdomen", "adrenal", "cyst", "-1")]
        ['a liver lesion', 'a soft-tissue lesion', 'an abdominal lesion', 'an adrenal lesion', 'a cyst', 'a lesion']
        >>> lesion_phrase("an ulcer")
        'an ulcer'
    """
    text = " ".join(str(lesion_type or "").split())
    first = text.split(" ", 1)[0].lower()
    if first in ("a", "an") and " " in text:
        return text
    noun = lesion_noun(text)
    return f"{indefinite_article(noun)} {noun}"

#: Placeholders a template may use, with what they hold.
TEMPLATE_FIELDS: dict[str, str] = {
    "lesion": "lesion noun, e.g. 'liver lesion', 'nodule', 'lesion' (unknown type, or a site "
    "that only repeats the host organ: a liver lesion in the liver)",
    "sized_lesion": "size and noun, e.g. '14 mm liver lesion' ('liver lesion' without a size)",
    "a_lesion": "with its article, e.g. 'a 14 mm liver lesion', 'an 8 mm nodule'",
    "A_lesion": "the same, capitalised for the start of a sentence",
    "size": "long axis, e.g. '14 mm' ('' when unknown)",
    "organ": "host organ in words, e.g. 'liver', 'left kidney' ('' when unmatched)",
    "the_organ": "'the liver' ('' when unmatched)",
    "location": "position words before the organ, e.g. 'right posterior part of the' (may be '')",
    "where": "'the right posterior part of the liver', or 'the liver' without a location",
    "side": "side of the body: 'right', 'left', 'midline' or ''",
    "side_phrase": "'on the right side', 'on the left side', 'in the midline' or ''",
    "modality": "imaging modality, e.g. 'CT'",
}

#: Default templates per match outcome.
DEFAULT_TEMPLATES: dict[str, dict[str, str]] = {
    "inside": {
        "inside-0": "There is {a_lesion} in {where}.",
        "inside-1": "{A_lesion} is seen in {where}.",
        "inside-2": "{A_lesion} is located in {where}.",
    },
    "adjacent": {
        "adjacent-0": "There is {a_lesion} adjacent to {the_organ}.",
        "adjacent-1": "{A_lesion} lies adjacent to {the_organ}.",
    },
    "unmatched": {
        "unmatched-0": "There is {a_lesion} {side_phrase}; the organ it lies in is uncertain.",
        "unmatched-1": "{A_lesion} is seen {side_phrase}, but its host organ is uncertain.",
    },
}

_OUTCOMES = ("inside", "adjacent", "unmatched")
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_PUNCT = re.compile(r" ([,.;:!?])")


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill a seed template with :func:`medcurric.templating.fill_template` and tidy the spaces.

    Inserted values are data: braces, dollars or format specs inside them are
    kept verbatim. Runs of spaces are collapsed and spaces before punctuation
    removed (so an empty field leaves no gap).

    Args:
        template: Text with ``{field}`` placeholders; ``{{`` / ``}}`` write literal braces.
        values: Field values; every placeholder of the template must have one.

    Returns:
        The sentence.

    Raises:
        TemplateError: When the template is malformed or uses a field that ``values`` lacks.

    Examples:
        >>> render_template("There is {a_lesion} in {where}.", {"a_lesion": "a {x} ${y}", "where": "the liver"})
        'There is a {x} ${y} in the liver.'
    """
    text = fill_template(template, values)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text.strip()


@dataclass(frozen=True)
class SeedTemplates:
    """Sentence templates per match outcome (``inside``, ``adjacent``, ``unmatched``).

    Args:
        templates: ``outcome -> {template id: text}`` (or a list of texts, given ids
            ``"<outcome>-<n>"``). Outcomes left out keep the defaults.

    Raises:
        DataFormatError: For an unknown outcome, an empty list, or a template using
            a field outside :data:`TEMPLATE_FIELDS`.
        TemplateError: For a malformed template (``{a.b}``, ``{0}``, a lone brace).

    Examples:
        >>> t = SeedTemplates.from_mapping({"inside": ["{A_lesion} sits in {where}."]})
        >>> t.choices("inside")
        (('inside-0', '{A_lesion} sits in {where}.'),)
        >>> SeedTemplates.from_mapping({"inside": ["{lesion.__class__}"]})
        Traceback (most recent call last):
        ...
        medcurric.errors.TemplateError: Template 'inside-0': Template field {lesion.__class__} is not a plain name...
    """

    templates: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None = None) -> SeedTemplates:
        """Build from ``outcome -> {id: text}`` or ``outcome -> [text, ...]``, defaults filling gaps."""
        merged: dict[str, dict[str, str]] = {k: dict(v) for k, v in DEFAULT_TEMPLATES.items()}
        if mapping is not None:
            if not isinstance(mapping, Mapping):
                raise WrongTypeError(
                    f"Expected templates as a mapping outcome -> templates, but got {type(mapping).__name__}."
                )
            for outcome, entries in mapping.items():
                if outcome not in _OUTCOMES:
                    raise DataFormatError(
                        f"Unknown outcome {outcome!r} in templates; expected some of {list(_OUTCOMES)}."
                    )
                if isinstance(entries, str):
                    entries = [entries]
                if isinstance(entries, Mapping):
                    items = {str(k): v for k, v in entries.items()}
                elif isinstance(entries, Sequence):
                    items = {f"{outcome}-{i}": v for i, v in enumerate(entries)}
                else:
                    raise WrongTypeError(
                        f"Expected a list or mapping of templates for {outcome!r}, but got "
                        f"{type(entries).__name__}."
                    )
                if not items:
                    raise DataFormatError(
                        f"Expected at least one template for {outcome!r}, but got none."
                    )
                merged[outcome] = {}
                for tid, text in items.items():
                    if not isinstance(text, str) or not text.strip():
                        raise DataFormatError(
                            f"Template {tid!r} must be non-empty text, but got {text!r}."
                        )
                    merged[outcome][tid] = text
        for items in merged.values():
            for tid, text in items.items():
                try:
                    unknown = sorted(set(template_fields(text)) - set(TEMPLATE_FIELDS))
                except TemplateError as exc:
                    raise TemplateError(f"Template {tid!r}: {exc}") from None
                if unknown:
                    raise DataFormatError(
                        f"Template {tid!r} uses unknown field(s) {unknown}; expected fields from "
                        f"{sorted(TEMPLATE_FIELDS)} written as {{field}}."
                    )
        return cls(tuple((o, tuple(merged[o].items())) for o in _OUTCOMES))

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SeedTemplates:
        """Read templates from a JSON file holding ``outcome -> {id: text}`` or lists.

        Raises:
            MissingFileError: When the file does not exist.
            DataFormatError: When it is not valid JSON or not templates.
        """
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(
                f"Expected a templates JSON file at '{p}', but it does not exist."
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"'{p}' is not valid JSON: {exc}") from exc
        return cls.from_mapping(data)

    def choices(self, outcome: str) -> tuple[tuple[str, str], ...]:
        """The ``(id, text)`` templates for an outcome."""
        for o, items in self.templates:
            if o == str(outcome):
                return items
        raise DataFormatError(f"Unknown outcome {outcome!r}; expected one of {list(_OUTCOMES)}.")

    def to_dict(self) -> dict[str, dict[str, str]]:
        """Return ``outcome -> {id: text}``."""
        return {o: dict(items) for o, items in self.templates}
