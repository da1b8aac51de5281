"""The generated QA + chain-of-thought sample record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medcurric._serialization import JsonRecord

__all__ = ["CoTSample", "Verdict"]


@dataclass(frozen=True)
class Verdict(JsonRecord):
    """The outcome of one validation check on a sample.

    Attributes:
        check: Name of the check, e.g. ``"names_organ"``.
        passed: Whether the sample passed it.
        detail: Human-readable reason, evidence or the failing span.
    """

    check: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class CoTSample(JsonRecord):
    """One question with an anatomically grounded rationale and an answer, for one stage.

    Attributes:
        id: Stable id derived from (seed id, stage, template, backend/model).
        seed_id: Id of the factual seed it was generated from.
        stage: ``"easy"``, ``"medium"`` or ``"hard"``.
        question_type: ``"open"`` or ``"closed"``.
        question: The question text.
        rationale: The chain-of-thought (empty for Hard samples).
        answer: The answer text.
        image: Image reference (relative to the image root).
        box: The lesion box in image pixels (``(x1, y1, x2, y2)``), if any.
        box_norm: The box normalised to ``[0, 1]`` by image width/height, as cited in Easy prompts.
        image_size: ``(width, height)`` of the image in pixels, if known.
        organ: Host organ of the seed.
        lesion_type: Lesion type of the seed.
        template: Id of the prompt template used.
        backend: Name of the generation backend.
        model: Model name of the backend (empty for the template backend).
        verdicts: The validation verdicts, one per check.
        accepted: Whether every required check passed.
        raw: The raw reply the sample was parsed from.
        attempts: How many requests it took.
        extra: Further fields kept as data (e.g. the seed text).
        reason: Why the sample was rejected (the failed checks); empty when accepted.
        window: Display window ``(low, high)`` of the image (from the seed), or ``None`` for
            the default (see :func:`medcurric.io.load_rgb`).
    """

    id: str
    seed_id: str
    stage: str
    question_type: str
    question: str
    rationale: str
    answer: str
    image: str
    box: tuple[float, ...] | None = None
    box_norm: tuple[float, ...] | None = None
    image_size: tuple[int, int] | None = None
    organ: str | None = None
    lesion_type: str = "lesion"
    template: str = ""
    backend: str = ""
    model: str = ""
    verdicts: tuple[Verdict, ...] = ()
    accepted: bool = True
    raw: str = ""
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    window: tuple[float, float] | None = None
