"""The factual seed record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medcurric._serialization import JsonRecord

__all__ = ["FactualSeed"]


@dataclass(frozen=True)
class FactualSeed(JsonRecord):
    """A (lesion, location, organ) triplet and the sentence stating it.

    Every structured field is kept next to the sentence, so downstream steps
    (prompting, validation, review) never have to parse the text back.

    Attributes:
        id: Stable id, the id of the lesion record it was built from.
        text: The seed sentence, e.g. ``"a 14 mm hypodense lesion in the right posterior part of the liver"``.
        lesion_type: Lesion type as text (``"lesion"`` when unknown).
        organ: Host organ name, or ``None`` when unmatched.
        organ_label: Host organ label id in the class map, or ``None``.
        outcome: ``"inside"``, ``"adjacent"`` or ``"unmatched"``.
        score: The matcher's score for the host organ (0 when unmatched).
        criterion: ``"ioa"`` or ``"iou"``.
        iou: IoU of the lesion box with the host organ (``None`` when unmatched or unknown).
        ioa: Share of the lesion box inside the host organ (``None`` when unmatched or unknown).
        location: The structured location (``Location.to_dict()``), if described.
        location_phrase: The location as words, e.g. ``"right posterior part of the"``.
        size_mm: ``(long axis, short axis)`` in millimetres, if spacing was known.
        modality: Imaging modality.
        image: Image reference of the lesion record.
        box: The lesion box as in the lesion record.
        slice_index: Key slice, for 2D boxes on a volume.
        spacing: Millimetres per pixel along each array axis.
        template: Id of the sentence template used.
        source: Dataset / reader name.
        extra: Further fields kept as data.
        window: Display window ``(low, high)`` of the lesion record (``LesionRecord.window``), if any.
    """

    id: str
    text: str
    lesion_type: str
    organ: str | None
    organ_label: int | None
    outcome: str
    score: float
    criterion: str
    image: str
    box: tuple[float, ...]
    location: dict[str, Any] | None = None
    location_phrase: str = ""
    size_mm: tuple[float, float] | None = None
    modality: str = "CT"
    slice_index: int | None = None
    spacing: tuple[float, ...] | None = None
    template: str = ""
    source: str = ""
    iou: float | None = None
    ioa: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    window: tuple[float, float] | None = None
