"""Stage-specific prompt templates and their restricted ``{field}`` substitution.

A template's text names seed fields in braces, e.g. ``"There is {lesion} in the {organ}."``
(``{lesion}`` holds the lesion phrase with its article: ``"a liver lesion"``).
Only the names in :data:`TEMPLATE_FIELDS` may appear. They are filled by
:func:`medcurric.templating.fill_template` (re-exported here): one pass, values (seed
text, lesion types, organ names: data from datasets) inserted verbatim and never
scanned again, so a value such as ``"{__class__}"`` stays literally ``"{__class__}"``.
``{{`` and ``}}`` write literal braces.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import DataFormatError, MedcurricWarning, TemplateError
from medcurric.stage import Stage
from medcurric.templating import fill_template, template_fields

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "TEMPLATE_FIELDS",
    "PromptTemplate",
    "QuestionType",
    "default_templates",
    "fill_template",
    "read_prompt_templates",
]


class QuestionType(StrEnum):
    """Kind of question: free-text (``open``) or yes/no (``closed``)."""

    OPEN = "open"
    CLOSED = "closed"


#: Field names a template may use, with what each holds.
TEMPLATE_FIELDS: dict[str, str] = {
    "seed_text": "the factual seed sentence",
    "lesion": "the seed's lesion phrase with its article, e.g. 'a liver lesion', 'an adrenal "
    "lesion', 'a cyst' ('a lesion' where its site words only repeat the organ)",
    "lesion_noun": "the same without the article, for 'the {lesion_noun}': 'liver lesion', 'cyst'",
    "organ": "display name of the host organ (empty for unmatched seeds)",
    "location": "where the lesion is, e.g. 'the right posterior part of the liver'",
    "relation": "'in', or 'adjacent to' for seeds whose lesion lies next to the organ",
    "size": "size in millimetres, e.g. '14 x 9 mm' (empty when unknown)",
    "box": "normalised box [x1, y1, x2, y2] with 4 decimals (Easy; empty otherwise)",
    "image_width": "width in pixels of the image the model sees",
    "image_height": "height in pixels of the image the model sees",
    "modality": "imaging modality, e.g. 'CT'",
    "queried_organ": "organ a closed question asks about (the host organ or a distractor)",
    "expected_answer": "'yes' or 'no': the answer a closed question must get",
    "stage": "'easy', 'medium' or 'hard'",
    "question_type": "'open' or 'closed'",
    "reply_format": "the reply format the parser expects for this stage",
}

DEFAULT_SYSTEM_PROMPT = (
    "You are a radiologist writing training data for a medical vision-language model. "
    "Write one question about the image, a short step-by-step rationale that first "
    "localises the finding (which organ, where in it) and then reasons about it, and the answer. "
    "Use only the facts given; do not invent findings."
)

# "a {lesion}" in a template written when {lesion} held the bare type
_ARTICLE_BEFORE_LESION = re.compile(r"\b(?:a|an|the)\s+\{lesion\}", re.IGNORECASE)

_FORMAT_COT = "Question: <question> | Reasoning: <rationale> | Answer: <answer>"
_FORMAT_HARD = "Question: <question> | Answer: <answer>"


def reply_format(stage: Stage) -> str:
    """Return the reply format the parser expects for ``stage``.

    Examples:
        >>> from medcurric.cot import reply_format
        >>> from medcurric.stage import Stage
        >>> reply_format(Stage.HARD)
        'Question: <question> | Answer: <answer>'
    """
    return _FORMAT_HARD if stage is Stage.HARD else _FORMAT_COT


@dataclass(frozen=True)
class PromptTemplate:
    """One user-replaceable prompt for a (stage, question type, matched/unmatched seed).

    Attributes:
        id: Stable template id; part of every sample id, so change it when the text changes.
        stage: Curriculum stage the template writes samples for.
        question_type: ``open`` or ``closed``.
        text: The user prompt, with ``{field}`` names from :data:`TEMPLATE_FIELDS`.
        system: The system prompt (fields allowed too).
        matched: ``True`` for seeds with a host organ, ``False`` for unmatched seeds
            (organ ``None``), whose prompts must not make organ claims.

    Examples:
        >>> from medcurric.cot import PromptTemplate
        >>> t = PromptTemplate("my-easy", "easy", "open", "Ask about the {lesion_noun} at {box}.")
        >>> t.stage, t.question_type
        (<Stage.EASY: 'easy'>, <QuestionType.OPEN: 'open'>)
        >>> PromptTemplate("bad", "easy", "open", "Ask about {organs}.")
        Traceback (most recent call last):
        ...
        medcurric.errors.DataFormatError: Template 'bad' uses unknown field(s) ['organs']; ...
    """

    id: str
    stage: Stage
    question_type: QuestionType
    text: str
    system: str = DEFAULT_SYSTEM_PROMPT
    matched: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", look_up_option(self.stage, Stage, name="stage"))
        object.__setattr__(
            self,
            "question_type",
            look_up_option(self.question_type, QuestionType, name="question_type"),
        )
        if not isinstance(self.id, str) or not self.id.strip():
            raise DataFormatError(f"Expected a non-empty template id, but got {self.id!r}.")
        for part in (self.text, self.system):
            try:
                unknown = sorted(set(template_fields(part)) - set(TEMPLATE_FIELDS))
            except TemplateError as exc:
                raise TemplateError(f"Template {self.id!r}: {exc}") from None
            if unknown:
                raise DataFormatError(
                    f"Template {self.id!r} uses unknown field(s) {unknown}; expected names from "
                    f"{sorted(TEMPLATE_FIELDS)}. Write '{{{{' and '}}}}' for literal braces."
                )
            article = _ARTICLE_BEFORE_LESION.search(part)
            if article:
                warnings.warn(
                    f"Template {self.id!r} writes {article.group(0)!r}, but {{lesion}} holds the "
                    "lesion phrase with its article ('a liver lesion'); write '{lesion}' or "
                    "'the {lesion_noun}'.",
                    MedcurricWarning,
                    stacklevel=3,
                )

    def render(self, fields: Mapping[str, object]) -> tuple[str, str]:
        """Return ``(system prompt, user prompt)`` filled with ``fields``."""
        return fill_template(self.system, fields), fill_template(self.text, fields)


_EASY = (
    "In this image ({modality}, {image_width} x {image_height} pixels) the finding lies in the "
    "box at the normalised coordinates {box} ([x1, y1, x2, y2], fractions of width and "
    "height); training images will show this box highlighted. Fact: {seed_text}. "
)
_PLAIN = "The image is a {modality} scan. Fact: {seed_text}. "
_FMT = "Reply in exactly this format, on one line: {reply_format}"


def default_templates(
    *, medium_cites_box: bool = False, hard_asks_location: bool = True
) -> tuple[PromptTemplate, ...]:
    """Return the built-in templates: every stage, open and closed, matched and unmatched seeds.

    Easy prompts cite the box as normalised ``[x1, y1, x2, y2]`` with 4 decimals and
    require the rationale to cite it; Medium prompts ask about the whole image; Hard
    prompts ask for a question and answer only.

    Args:
        medium_cites_box: Deviation switch. ``False`` (default): Medium prompts do not
            give the box and forbid mentioning one, so the rationale localises by
            anatomy alone. ``True``: the authors' Medium prompt, which gives the box
            and asks the rationale to mention it (templates ``medium-*-box-v1``;
            :class:`~medcurric.cot.CoTGenerator` fills ``{box}`` for Medium then).
        hard_asks_location: Deviation switch. ``True`` (default): Hard asks where the
            lesion is, on the sample's own image. ``False``: the authors' Hard stage,
            whose question and answer carry no location, so that training can show
            them with another image of the same domain
            (:func:`medcurric.curriculum.pair_hard_images`): templates
            ``hard-*-nolocation-v1``, for every seed (``matched=False``).

    Examples:
        >>> from medcurric.cot import default_templates
        >>> ts = default_templates()
        >>> len(ts), sorted({t.stage.value for t in ts})
        (12, ['easy', 'hard', 'medium'])
        >>> sorted(t.id for t in default_templates(hard_asks_location=False) if t.stage == "hard")
        ['hard-closed-nolocation-v1', 'hard-open-nolocation-v1']
    """
    out = _library_templates()
    if medium_cites_box:
        out = tuple(t for t in out if t.stage is not Stage.MEDIUM) + _medium_box_templates()
    if not hard_asks_location:
        out = tuple(t for t in out if t.stage is not Stage.HARD) + _hard_nolocation_templates()
    return out


_MEDIUM_BOX = (
    "In this image ({modality}, {image_width} x {image_height} pixels) the finding lies around "
    "the box at the normalised coordinates {box} ([x1, y1, x2, y2], fractions of width and "
    "height); training images will not show the box. Fact: {seed_text}. "
)
_NOLOCATION = (
    "The image is a {modality} scan showing a {lesion}. The question and answer will also be "
    "shown with other {modality} images of a {lesion}, so they must not name any organ, side "
    "or position. "
)


def _medium_box_templates() -> tuple[PromptTemplate, ...]:
    """The authors' Medium prompt: the box is given and the rationale mentions it."""
    m, o, c = Stage.MEDIUM, QuestionType.OPEN, QuestionType.CLOSED
    return (
        PromptTemplate(
            "medium-open-box-v1", m, o,
            _MEDIUM_BOX + "Write an open question about abnormalities in the whole image. The "
            "rationale must describe where the {lesion} is ({relation} {location}), mentioning "
            "the box {box}, before concluding; the answer gives the location. " + _FMT,
        ),
        PromptTemplate(
            "medium-closed-box-v1", m, c,
            _MEDIUM_BOX + "Write a yes/no question about the whole image asking whether there is "
            "a {lesion} in the {queried_organ}. The correct answer is '{expected_answer}'. The "
            "rationale must say that the {lesion} lies {relation} the {organ}, mentioning the box "
            "{box}. Answer with 'yes' or 'no' first. " + _FMT,
        ),
        PromptTemplate(
            "medium-open-unmatched-box-v1", m, o,
            _MEDIUM_BOX + "The host organ is unknown. Write an open question about the whole "
            "image asking what abnormality is visible; the rationale describes the {lesion}, "
            "mentioning the box {box}, without naming any organ as its site. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "medium-closed-unmatched-box-v1", m, c,
            _MEDIUM_BOX + "The host organ is unknown. Write a yes/no question asking whether the "
            "image shows a {lesion}; the correct answer is 'yes'. The rationale mentions the box "
            "{box} and must not name any organ. " + _FMT,
            matched=False,
        ),
    )


def _hard_nolocation_templates() -> tuple[PromptTemplate, ...]:
    """The authors' Hard stage: no location, so the pair holds for any image of the domain."""
    h, o, c = Stage.HARD, QuestionType.OPEN, QuestionType.CLOSED
    return (
        PromptTemplate(
            "hard-open-nolocation-v1", h, o,
            _NOLOCATION + "Write an open question asking what abnormality the image shows, and "
            "its short answer: the lesion type ({lesion}). No rationale. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "hard-closed-nolocation-v1", h, c,
            _NOLOCATION + "Write a yes/no question asking whether the image shows a {lesion}; "
            "the correct answer is 'yes'. No rationale. " + _FMT,
            matched=False,
        ),
    )


def _library_templates() -> tuple[PromptTemplate, ...]:
    e, m, h = Stage.EASY, Stage.MEDIUM, Stage.HARD
    o, c = QuestionType.OPEN, QuestionType.CLOSED
    return (
        PromptTemplate(
            "easy-open-v1",
            e,
            o,
            _EASY + "Write an open question about the finding inside the box. The rationale must "
            "cite the box exactly as {box}, name the organ ({organ}) and say that the {lesion_noun} "
            "lies {relation} {location}, then conclude. " + _FMT,
        ),
        PromptTemplate(
            "easy-closed-v1",
            e,
            c,
            _EASY + "Write a yes/no question asking whether the {lesion_noun} inside the box lies in "
            "the {queried_organ}. The correct answer is '{expected_answer}'. The rationale must "
            "cite the box exactly as {box} and say that the {lesion_noun} lies {relation} the {organ}. "
            "Answer with 'yes' or 'no' first. " + _FMT,
        ),
        PromptTemplate(
            "medium-open-v1",
            m,
            o,
            _PLAIN + "Write an open question about the whole image (do not mention any box or "
            "marking). The rationale must localise the {lesion_noun} ({relation} {location}) "
            "before concluding. " + _FMT,
        ),
        PromptTemplate(
            "medium-closed-v1",
            m,
            c,
            _PLAIN + "Write a yes/no question about the whole image asking whether there is "
            "{lesion} in the {queried_organ}. The correct answer is '{expected_answer}'. The "
            "rationale must say that the {lesion_noun} lies {relation} the {organ}. Answer with 'yes' "
            "or 'no' first. " + _FMT,
        ),
        PromptTemplate(
            "hard-open-v1",
            h,
            o,
            _PLAIN + "Write an open question about the whole image asking where the lesion is, "
            "and its short answer ({relation} {location}). No rationale. " + _FMT,
        ),
        PromptTemplate(
            "hard-closed-v1",
            h,
            c,
            _PLAIN + "Write a yes/no question asking whether there is {lesion} in the "
            "{queried_organ}; the correct answer is '{expected_answer}'. No rationale. " + _FMT,
        ),
        # Unmatched seeds: no host organ is known, so nothing may claim one.
        PromptTemplate(
            "easy-open-unmatched-v1",
            e,
            o,
            _EASY + "The host organ is unknown. Write an open question about the finding inside "
            "the box. The rationale must cite the box exactly as {box} and describe the {lesion_noun} "
            "without naming any organ as its site. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "easy-closed-unmatched-v1",
            e,
            c,
            _EASY + "The host organ is unknown. Write a yes/no question asking whether the box "
            "contains {lesion}; the correct answer is 'yes'. The rationale must cite the box "
            "exactly as {box} and must not name any organ. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "medium-open-unmatched-v1",
            m,
            o,
            _PLAIN + "The host organ is unknown. Write an open question about the whole image "
            "asking what abnormality is visible; the rationale describes the {lesion_noun} without "
            "naming any organ as its site. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "medium-closed-unmatched-v1",
            m,
            c,
            _PLAIN + "The host organ is unknown. Write a yes/no question asking whether the image "
            "shows {lesion}; the correct answer is 'yes'. The rationale must not name any "
            "organ. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "hard-open-unmatched-v1",
            h,
            o,
            _PLAIN + "The host organ is unknown. Write an open question asking what abnormality "
            "the image shows, answered with the lesion ({lesion}), naming no organ. " + _FMT,
            matched=False,
        ),
        PromptTemplate(
            "hard-closed-unmatched-v1",
            h,
            c,
            _PLAIN + "The host organ is unknown. Write a yes/no question asking whether the image "
            "shows {lesion}; the correct answer is 'yes'. Name no organ. " + _FMT,
            matched=False,
        ),
    )


def _check_templates(templates: Iterable[PromptTemplate]) -> tuple[PromptTemplate, ...]:
    out = tuple(templates)
    ids = [t.id for t in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataFormatError(f"Template ids must be unique, but {dupes} repeat.")
    for t in out:
        if not isinstance(t, PromptTemplate):
            raise DataFormatError(f"Expected PromptTemplate objects, but got {type(t).__name__}.")
    return out


def read_prompt_templates(path: str | os.PathLike[str]) -> list[PromptTemplate]:
    """Read prompt templates from a JSON list of objects.

    Each object has ``id``, ``stage``, ``question_type`` and ``text``, and may have
    ``system`` and ``matched`` (the :class:`PromptTemplate` fields).

    Raises:
        DataFormatError: When the file is not a JSON list of such objects.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"Cannot read templates from '{path}': {exc}") from exc
    if not isinstance(data, list):
        raise DataFormatError(
            f"Expected a JSON list of templates in '{path}', but got {type(data).__name__}."
        )
    out = []
    allowed = {"id", "stage", "question_type", "text", "system", "matched"}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not {"id", "stage", "question_type", "text"} <= set(item):
            raise DataFormatError(
                f"{path}: template {i}: expected an object with id, stage, question_type and text."
            )
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise DataFormatError(
                f"{path}: template {i}: unknown key(s) {unknown}; expected {sorted(allowed)}."
            )
        out.append(PromptTemplate(**item))
    return out
