"""Parse model replies into (question, rationale, answer), tolerating the usual noise.

Two reply shapes are accepted:

* labelled text, ``Question: ... | Reasoning: ... | Answer: ...``, on one line or on
  separate lines, with or without the ``|`` separators, in any order; ``Rationale:``
  is accepted for ``Reasoning:`` and ``Q:``/``A:`` for question/answer;
* a JSON object ``{"question": ..., "reasoning" or "rationale": ..., "answer": ...}``.

Markdown code fences, bold/italic markers, headings and extra whitespace are
removed first. Anything else raises :class:`~medcurric.errors.ParseError` with the
reason, and nothing else: the parser is fuzzed to never raise another exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from medcurric.errors import ParseError

__all__ = ["MAX_REPLY_CHARS", "ParsedReply", "parse_reply"]

#: Replies longer than this are rejected without parsing.
MAX_REPLY_CHARS = 20_000

_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n?|```|~~~")
_EMPHASIS = re.compile(
    r"\*\*|(?<![A-Za-z0-9])\*(?=\S)|(?<=\S)\*(?![A-Za-z0-9])"
    r"|__(?=(?i:question|q|reasoning|rationale|answer|a)[ \t]*:)|(?<=:)__"
)
_HEADING = re.compile(r"(?m)^[ \t]*#{1,6}[ \t]*")
_LABEL = re.compile(
    r"(?i)(?:^|(?<=[\s|>\-*•.:;,)]))"
    r"(question|q|reasoning|rationale|chain[ _-]of[ _-]thought|answer|a)"
    r"[ \t]*:",
)
_KEYS = {
    "question": "question",
    "q": "question",
    "reasoning": "rationale",
    "rationale": "rationale",
    "chain of thought": "rationale",
    "cot": "rationale",
    "answer": "answer",
    "a": "answer",
}
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class ParsedReply:
    """The three parts of a parsed reply.

    Attributes:
        question: The question.
        rationale: The chain-of-thought (may be empty when not required).
        answer: The answer.
        format: ``"labelled"`` or ``"json"``: which shape the reply had.
    """

    question: str
    rationale: str
    answer: str
    format: str = "labelled"


def _clean(value: str) -> str:
    value = _WS.sub(" ", value).strip()
    return value.strip(" |\t-").strip()


def _strip_noise(text: str) -> str:
    text = _FENCE.sub("\n", text)
    text = _HEADING.sub("", text)
    return _EMPHASIS.sub("", text)


def _json_candidate(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _from_json(obj: dict[str, Any]) -> dict[str, str]:
    parts: dict[str, str] = {}
    for key, value in obj.items():
        norm = _WS.sub(" ", str(key).replace("_", " ").replace("-", " ")).strip().lower()
        field = _KEYS.get(norm)
        if field is None or field in parts:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if not isinstance(value, str):
            raise ParseError(
                f"Expected a string for JSON key {key!r}, but got {type(value).__name__}."
            )
        parts[field] = _clean(value)
    return parts


def _from_labels(text: str) -> dict[str, str]:
    marks: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for m in _LABEL.finditer(text):
        label = m.group(1).lower().replace("_", " ").replace("-", " ")
        field = _KEYS.get(label)
        if field is None or field in seen:
            continue
        # Single-letter labels only count at the start of a line or after a separator.
        if len(label) == 1:
            before = text[: m.start(1)].rstrip(" \t")
            if before and before[-1] not in "\n|":
                continue
        seen.add(field)
        marks.append((m.start(1), m.end(), field))
    parts: dict[str, str] = {}
    for i, (_, end, field) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        parts[field] = _clean(text[end:stop])
    return parts


def parse_reply(text: object, *, require_rationale: bool = True) -> ParsedReply:
    r"""Parse a model reply into question, rationale and answer.

    Args:
        text: The reply text.
        require_rationale: Whether a non-empty rationale is required (``False`` for Hard samples).

    Returns:
        The parsed reply.

    Raises:
        ParseError: When the reply has no question/answer (or rationale when required), is
            not text, or is longer than :data:`MAX_REPLY_CHARS`. Never any other exception.

    Examples:
        >>> from medcurric.cot import parse_reply
        >>> r = parse_reply("**Question:** Where is it? | Reasoning: In the liver. | Answer: liver")
        >>> r.question, r.rationale, r.answer
        ('Where is it?', 'In the liver.', 'liver')
        >>> parse_reply('```json\n{"question": "Q?", "rationale": "R.", "answer": "no"}```').format
        'json'
        >>> parse_reply("I cannot help with that.")
        Traceback (most recent call last):
        ...
        medcurric.errors.ParseError: Expected 'Question: ... | Reasoning: ... | Answer: ...' or ...
    """
    try:
        return _parse(text, require_rationale)
    except ParseError:
        raise
    except Exception as exc:  # defensive: the contract is "only ParseError"
        raise ParseError(f"Could not parse the reply ({type(exc).__name__}: {exc}).") from exc


def _parse(text: object, require_rationale: bool) -> ParsedReply:
    if not isinstance(text, str):
        raise ParseError(f"Expected the reply as text, but got {type(text).__name__}.")
    if len(text) > MAX_REPLY_CHARS:
        raise ParseError(
            f"Expected a reply of at most {MAX_REPLY_CHARS} characters, but got {len(text)}."
        )
    if not text.strip():
        raise ParseError("Expected a reply, but it is empty.")
    obj = _json_candidate(_FENCE.sub("\n", text))  # JSON values are data: no other cleaning
    fmt = "json"
    parts = _from_json(obj) if obj is not None else {}
    if not parts:
        fmt = "labelled"
        parts = _from_labels(_strip_noise(text))
    if not parts:
        raise ParseError(
            "Expected 'Question: ... | Reasoning: ... | Answer: ...' or a JSON object with "
            "question/reasoning/answer, but found no labels or JSON in the reply."
        )
    needed = ["question", "rationale", "answer"] if require_rationale else ["question", "answer"]
    missing = [k for k in needed if not parts.get(k)]
    if missing:
        found = sorted(k for k, v in parts.items() if v)
        raise ParseError(
            f"Expected non-empty {needed} in the reply ({fmt}), but {missing} is missing or "
            f"empty (found {found})."
        )
    return ParsedReply(
        question=parts["question"],
        rationale=parts.get("rationale", ""),
        answer=parts["answer"],
        format=fmt,
    )
