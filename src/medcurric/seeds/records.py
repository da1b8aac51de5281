"""The factual seed record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medcurric._options import look_up_option
from medcurric._serialization import JsonRecord
from medcurric.anatomy.location import Location
from medcurric.anatomy.matcher import Criterion, MatchOutcome
from medcurric.errors import DataFormatError, WrongTypeError
from medcurric.seeds.templates import lesion_phrase

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
        outcome: :class:`~medcurric.anatomy.MatchOutcome` (``"inside"``, ``"adjacent"`` or
            ``"unmatched"``; a string is looked up).
        score: The matcher's score for the host organ (0 when unmatched).
        criterion: :class:`~medcurric.anatomy.Criterion` (``"ioa"`` or ``"iou"``).
        iou: IoU of the lesion box with the host organ (``None`` when unmatched or unknown).
        ioa: Share of the lesion box inside the host organ (``None`` when unmatched or unknown).
        location: The structured :class:`~medcurric.anatomy.Location`, if described (its
            ``to_dict()`` form is accepted and converted).
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
        image_size: ``(width, height)`` of the image in pixels, if known. Older seeds kept it as
            ``extra["image_size"]``; that key is moved here when the seed is built or loaded.
        window: Display window ``(low, high)`` of the lesion record (``LesionRecord.window``), if any.
        lesion_phrase: The lesion as every question and prompt names it, article included
            (``"a liver lesion"``, ``"an abdominal lesion"``, ``"a cyst"``); by default, and for
            seeds written before the field, derived from ``lesion_type`` with
            :func:`~medcurric.seeds.lesion_phrase`.

    Examples:
        >>> seed = FactualSeed(id="a", text="a cyst in the liver", lesion_type="cyst", organ="liver",
        ...     organ_label=5, outcome="inside", score=0.9, criterion="ioa", image="a.png",
        ...     box=(1.0, 2.0, 3.0, 4.0), location={"organ": "liver", "laterality": "right"},
        ...     extra={"image_size": [64, 48]})
        >>> seed.outcome, seed.location.laterality, seed.image_size, seed.extra, seed.lesion_phrase
        (<MatchOutcome.INSIDE: 'inside'>, 'right', (64, 48), {}, 'a cyst')
        >>> FactualSeed.from_json(seed.to_json()) == seed
        True
    """

    id: str
    text: str
    lesion_type: str
    organ: str | None
    organ_label: int | None
    outcome: MatchOutcome
    score: float
    criterion: Criterion
    image: str
    box: tuple[float, ...]
    location: Location | None = None
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
    image_size: tuple[int, int] | None = None
    window: tuple[float, float] | None = None
    lesion_phrase: str = ""

    def __post_init__(self) -> None:
        if not str(self.lesion_phrase or "").strip():
            object.__setattr__(self, "lesion_phrase", lesion_phrase(self.lesion_type))
        if type(self.outcome) is not MatchOutcome:
            object.__setattr__(
                self, "outcome", look_up_option(self.outcome, MatchOutcome, name="outcome")
            )
        if type(self.criterion) is not Criterion:
            object.__setattr__(
                self, "criterion", look_up_option(self.criterion, Criterion, name="criterion")
            )
        if isinstance(self.location, Mapping):
            object.__setattr__(self, "location", Location.from_dict(self.location))
        elif self.location is not None and not isinstance(self.location, Location):
            raise WrongTypeError(
                f"Seed {self.id!r}: expected location to be a Location or None, "
                f"but got {type(self.location).__name__}."
            )
        size = self.image_size
        if isinstance(self.extra, Mapping) and "image_size" in self.extra:
            # seeds written before image_size was a field kept it in extra
            extra = dict(self.extra)
            legacy = _image_size_pair(
                extra.pop("image_size"), where=f"Seed {self.id!r}: extra['image_size']"
            )
            if (
                size is not None
                and _image_size_pair(size, where=f"Seed {self.id!r}: image_size") != legacy
            ):
                raise DataFormatError(
                    f"Seed {self.id!r}: image_size {tuple(size)} disagrees with extra['image_size'] "
                    f"{legacy}; keep only image_size."
                )
            object.__setattr__(self, "extra", extra)
            size = legacy
        if size is not None:
            object.__setattr__(
                self, "image_size", _image_size_pair(size, where=f"Seed {self.id!r}: image_size")
            )


def _image_size_pair(value: Any, *, where: str = "image_size") -> tuple[int, int]:
    """``(width, height)`` as two positive integers, from any pair of integral numbers.

    Raises:
        DataFormatError: When ``value`` is not two positive whole numbers.

    """
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DataFormatError(
            f"{where}: expected [width, height] in pixels, but got {value!r}."
        ) from None
    if not (w.is_integer() and h.is_integer() and w > 0 and h > 0):
        raise DataFormatError(
            f"{where}: expected two positive whole numbers of pixels, but got {value!r}."
        )
    return (int(w), int(h))
