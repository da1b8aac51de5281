"""An offline, deterministic backend that writes replies from the seed's structured fields."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from medcurric.cot.backends.base import Completion, GenerationRequest
from medcurric.cot.templates import QuestionType
from medcurric.seeds.templates import lesion_phrase
from medcurric.stage import Stage

__all__ = ["TemplateBackend", "template_reply"]


class TemplateBackend:
    """Offline, deterministic backend that writes replies from the seed's structured fields.

    The reply is a JSON object (so lesion types with any characters survive), and
    goes through the same parsing and validation as a model's reply. Questions,
    rationales and answers follow fixed sentence patterns per stage and question type.

    Examples:
        >>> from medcurric.cot import TemplateBackend
        >>> b = TemplateBackend()
        >>> b.name, b.model_name, b.needs_images
        ('template', '', False)
    """

    name = "template"
    model_name = ""
    needs_images = False

    def __repr__(self) -> str:
        return "TemplateBackend()"

    def complete(self, requests: Sequence[GenerationRequest]) -> Iterator[Completion]:
        """Yield a deterministic reply for each request."""
        for r in requests:
            yield Completion(r, json.dumps(template_reply(r), ensure_ascii=False))


def template_reply(request: GenerationRequest) -> dict[str, str]:
    """Write ``{"question", "rationale", "answer"}`` for a request from its fields.

    The lesion is named by the request's ``lesion`` field, the seed's lesion phrase with
    its article (``"a liver lesion"``; a bare type such as ``"cyst"`` gets one).

    Examples:
        >>> from medcurric.cot import GenerationRequest, QuestionType, template_reply
        >>> from medcurric.stage import Stage
        >>> r = GenerationRequest("x", "", "", Stage.MEDIUM, QuestionType.OPEN, "t",
        ...     {"lesion": "a cyst", "organ": "liver", "location": "the right part of the liver",
        ...      "size": "", "box": ""})
        >>> template_reply(r)["answer"]
        'A cyst in the right part of the liver.'
        >>> hard = GenerationRequest("y", "", "", Stage.HARD, QuestionType.OPEN, "t", r.fields)
        >>> template_reply(hard)["question"], template_reply(hard)["answer"]
        ('Where is the cyst?', 'In the right part of the liver.')
    """
    f = dict(request.fields)
    phrase = lesion_phrase(f.get("lesion"))
    noun = f.get("lesion_noun") or phrase.partition(" ")[2]
    phrase_cap = phrase[:1].upper() + phrase[1:]
    organ = f.get("organ", "")
    location = f.get("location") or (f"the {organ}" if organ else "")
    size = f" measuring {f['size']}" if f.get("size") else ""
    box = f.get("box", "")
    queried = f.get("queried_organ", "")
    expected = f.get("expected_answer", "yes")
    easy = request.stage is Stage.EASY
    closed = request.question_type is QuestionType.CLOSED
    look = f"The highlighted box at {box}" if easy else ""
    where_q = "inside the highlighted box" if easy else "in this image"
    if organ:
        rel = f.get("relation") or "in"
        where = f"{rel} {location}"
        over = "lies over" if rel == "in" else "lies next to"
        # Medium opens at the organ; an adjacent lesion is found beside it, not "looking at" it
        lead = f"Looking at the {organ}, there is" if rel == "in" else "There is"
        if closed:
            question = (
                f"Is the {noun} inside the highlighted box located in the {queried}?"
                if easy
                else f"Is there {phrase} in the {queried}?"
            )
            tail = ""
            if expected != "yes":
                tail = f", not in the {queried}" if queried != organ else ", not inside it"
            rationale = (
                f"{look} {over} the {organ}. The {noun}{size} lies {where}{tail}."
                if easy
                else f"{lead} {phrase}{size} {where}{tail}."
            )
            answer = "Yes." if expected == "yes" else "No."  # closed: yes/no, the where is reasoned
        else:
            question = f"What abnormality is seen {where_q}, and where is it?"
            rationale = (
                f"{look} {over} the {organ}. It contains {phrase}{size}. "
                f"So the finding is {phrase} {where}."
                if easy
                else f"{lead} {phrase}{size} {where}. "
                f"So the abnormality is {phrase} {rel} the {organ}."
            )
            answer = f"{phrase_cap} {where}."
        if request.stage is Stage.HARD:
            question = f"Is there {phrase} in the {queried}?" if closed else f"Where is the {noun}?"
            answer = ("Yes." if expected == "yes" else "No.") if closed else f"{where[:1].upper()}{where[1:]}."
    else:
        if closed:
            question = (
                f"Is there {phrase} inside the highlighted box?"
                if easy
                else f"Does this image show {phrase}?"
            )
            answer = "Yes."
        else:
            question = f"What abnormality is seen {where_q}?"
            answer = f"{phrase_cap}."
        rationale = (
            f"{look} contains {phrase}{size}; its host organ could not be determined."
            if easy
            else f"The image shows {phrase}{size}; its host organ could not be determined."
        )
    if request.stage is Stage.HARD:
        rationale = ""
    return {"question": question, "rationale": rationale, "answer": answer}
