"""Build factual seeds: a lesion record, its host-organ match and location -> a sentence.

The sentence is picked from user-replaceable templates (see
:mod:`medcurric.seeds.templates`); the choice is a function of the record id and
a seed only (a SHA-256 hash, not Python's salted ``hash``), so reruns and other
machines pick the same template. Every structured field is kept next to the text.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any

from medcurric.anatomy.location import Location
from medcurric.anatomy.matcher import Criterion, MatchOutcome, OrganMatch
from medcurric.errors import WrongTypeError
from medcurric.io.records import LesionRecord
from medcurric.seeds.records import FactualSeed
from medcurric.seeds.templates import (
    SeedTemplates,
    indefinite_article,
    lesion_at,
    lesion_noun,
    lesion_phrase,
    render_template,
)
from medcurric.vocabulary.classmap import ClassMap

__all__ = ["SeedBuilder"]

_SIDE_PHRASE = {
    "right": "on the right side",
    "left": "on the left side",
    "midline": "in the midline",
}


def _normal_type(lesion_type: str | None) -> str:
    text = " ".join(str(lesion_type or "").split())
    return "lesion" if lesion_noun(text) == "lesion" else text


def _stable_index(record_id: str, seed: int, n: int) -> int:
    digest = hashlib.sha256(f"{int(seed)}\x00{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def _size_text(size_mm: tuple[float, float] | None) -> str:
    if size_mm is None or not math.isfinite(size_mm[0]) or size_mm[0] <= 0:
        return ""
    long_axis = float(size_mm[0])
    return (
        f"{round(long_axis):d} mm"
        if long_axis >= 10
        else f"{long_axis:.1f}".rstrip("0").rstrip(".") + " mm"
    )


class SeedBuilder:
    """Turn ``(lesion record, organ match, location)`` into a :class:`~medcurric.seeds.FactualSeed`.

    Args:
        templates: A :class:`~medcurric.seeds.SeedTemplates`, a mapping
            ``outcome -> templates`` (see :meth:`SeedTemplates.from_mapping`), a path to
            a JSON file of them, or ``None`` for the defaults.
        seed: Changes which template each record gets (deterministically).
        class_map: Names organs in words (``kidney_left`` -> ``"left kidney"``);
            default ``ClassMap.totalsegmentator()`` (names it lacks are shown with
            underscores turned to spaces).

    Examples:
        >>> from medcurric.anatomy import OrganMatch
        >>> rec = LesionRecord(id="a1", image="ct1", box=(10, 10, 24, 20), lesion_type="-1", spacing=(1.0, 1.0))
        >>> m = OrganMatch(organ="liver", label=5, score=1.0, criterion="ioa", outcome="inside")
        >>> loc = Location(organ="liver", size_mm=(14.0, 10.0), phrase="right posterior part of the")
        >>> SeedBuilder(templates={"inside": ["There is {a_lesion} in {where}."]}).build(rec, m, loc).text
        'There is a 14 mm lesion in the right posterior part of the liver.'
        >>> un = OrganMatch(organ=None, label=None, score=0.0, criterion="ioa", outcome="unmatched")
        >>> SeedBuilder().build(rec, un, Location(laterality="left", size_mm=(14.0, 10.0))).text
        'A 14 mm lesion is seen on the left side, but its host organ is uncertain.'
    """

    def __init__(
        self,
        templates: SeedTemplates | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        seed: int = 0,
        class_map: ClassMap | None = None,
    ) -> None:
        if isinstance(templates, SeedTemplates):
            self.templates = templates
        elif isinstance(templates, (str, os.PathLike)):
            self.templates = SeedTemplates.from_json(templates)
        else:
            self.templates = SeedTemplates.from_mapping(templates)
        self.seed = int(seed)
        self.class_map = class_map if class_map is not None else ClassMap.totalsegmentator()

    def __repr__(self) -> str:
        return f"SeedBuilder(seed={self.seed}, class_map={self.class_map!r})"

    def organ_words(self, organ: str | None) -> str:
        """The organ in words (``"left kidney"``), ``""`` for ``None``."""
        if not organ:
            return ""
        if organ in self.class_map:
            return self.class_map.display_name(organ)
        return " ".join(organ.replace("_", " ").split())

    def _organ_names(self, organ: str) -> list[str]:
        names = [organ, self.organ_words(organ)]
        if organ in self.class_map:
            names += self.class_map.synonyms(organ)
        return names

    def fields(
        self, record: LesionRecord, match: OrganMatch | None, location: Location | None = None
    ) -> dict[str, str]:
        """The template field values for one lesion (see :data:`~medcurric.seeds.TEMPLATE_FIELDS`)."""
        organ = match.organ if match is not None and str(match.outcome) != "unmatched" else None
        noun = lesion_noun(record.lesion_type)
        if organ and lesion_at(f"a {noun}", self._organ_names(organ)) == "a lesion":
            noun = "lesion"  # "a 14 mm lesion in the liver", not "a 14 mm liver lesion in the liver"
        size_mm = location.size_mm if location is not None else None
        if size_mm is None:
            size_mm = _record_size(record)
        size = _size_text(size_mm)
        sized = f"{size} {noun}" if size else noun
        a_lesion = f"{indefinite_article(sized)} {sized}"
        organ_words = self.organ_words(organ)
        the_organ = f"the {organ_words}" if organ_words else ""
        phrase = location.phrase if location is not None and organ else ""
        where = f"the {phrase} {organ_words}" if phrase and organ_words else the_organ
        side = (location.laterality or "") if location is not None else ""
        return {
            "lesion": noun,
            "sized_lesion": sized,
            "a_lesion": a_lesion,
            "A_lesion": a_lesion[:1].upper() + a_lesion[1:],
            "size": size,
            "organ": organ_words,
            "the_organ": the_organ,
            "location": phrase,
            "where": " ".join(where.split()),
            "side": side,
            "side_phrase": _SIDE_PHRASE.get(side, ""),
            "modality": record.modality,
        }

    def build(
        self, record: LesionRecord, match: OrganMatch | None, location: Location | None = None
    ) -> FactualSeed:
        """Build the seed of one lesion.

        Args:
            record: The lesion.
            match: Its host-organ match (``None`` is treated as unmatched).
            location: Its location within the organ, if described.

        Returns:
            The seed, with every structured field of the inputs kept.

        Raises:
            WrongTypeError: When the inputs are not the library's records.
        """
        if not isinstance(record, LesionRecord):
            raise WrongTypeError(f"Expected a LesionRecord, but got {type(record).__name__}.")
        if match is not None and not isinstance(match, OrganMatch):
            raise WrongTypeError(f"Expected an OrganMatch or None, but got {type(match).__name__}.")
        if location is not None and not isinstance(location, Location):
            raise WrongTypeError(f"Expected a Location or None, but got {type(location).__name__}.")
        outcome = MatchOutcome.UNMATCHED if match is None or match.organ is None else match.outcome
        choices = self.templates.choices(outcome)
        tid, template = choices[_stable_index(record.id, self.seed, len(choices))]
        values = self.fields(record, match, location)
        text = render_template(template, values)
        iou = ioa = None
        if match is not None and match.organ is not None:
            for c in match.candidates:
                if c.organ == match.organ:
                    iou, ioa = float(c.iou), float(c.ioa)
                    break
        extra = dict(record.extra)
        image_size = extra.pop("image_size", None)  # a reader's (width, height), e.g. DeepLesion's Image_size
        if match is not None and match.distance_mm is not None:
            extra["match_distance_mm"] = float(match.distance_mm)
        size_mm = (
            location.size_mm
            if location is not None and location.size_mm is not None
            else _record_size(record)
        )
        return FactualSeed(
            id=record.id,
            text=text,
            lesion_type=_normal_type(record.lesion_type),
            lesion_phrase=lesion_phrase(record.lesion_type),
            organ=None if outcome == "unmatched" or match is None else match.organ,
            organ_label=None if outcome == "unmatched" or match is None else match.label,
            outcome=outcome,
            score=0.0 if match is None or outcome == "unmatched" else float(match.score),
            criterion=match.criterion if match is not None else Criterion.IOA,
            image=record.image,
            box=record.box,
            location=location,
            location_phrase=values["location"],
            size_mm=size_mm,
            modality=record.modality,
            slice_index=record.slice_index,
            spacing=record.spacing,
            template=tid,
            source=record.source,
            iou=iou,
            ioa=ioa,
            extra=extra,
            image_size=image_size,
            window=record.window,
        )


def _record_size(record: LesionRecord) -> tuple[float, float] | None:
    """Long/short in-plane axis of the record's box from its own spacing, if it has one."""
    if record.spacing is None or len(record.spacing) < 2:
        return None
    sy, sx = record.spacing[-2], record.spacing[-1]
    d = len(record.box) // 2
    w = (record.box[d] - record.box[0]) * sx
    h = (record.box[d + 1] - record.box[1]) * sy
    return (round(max(w, h), 2), round(min(w, h), 2))
