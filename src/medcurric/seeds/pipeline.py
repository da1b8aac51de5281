"""Seeds for all lesions of one image: one overlap call, one pass for organ extents."""

from __future__ import annotations

from collections.abc import Sequence

from medcurric.anatomy.location import ViewPlane, describe_location, organ_extents
from medcurric.anatomy.matcher import BoxOrganMatcher
from medcurric.io.records import LabelMap, LesionRecord
from medcurric.seeds.builder import SeedBuilder
from medcurric.seeds.records import FactualSeed

__all__ = ["build_seeds"]


def build_seeds(
    records: Sequence[LesionRecord],
    label_map: LabelMap,
    *,
    matcher: BoxOrganMatcher | None = None,
    builder: SeedBuilder | None = None,
    vertical: bool = True,
    clip: bool = False,
) -> list[FactualSeed]:
    """Match, locate and phrase every lesion of one label map.

    All boxes are matched with one :meth:`~medcurric.anatomy.BoxOrganMatcher.match_records`
    call (one overlap pass over the map) and the organs' extents are computed once
    (:func:`~medcurric.anatomy.location.organ_extents`), so the cost is about one read of
    the label map however many lesions it holds.

    Args:
        records: Lesions on this label map (2D boxes need ``slice_index`` on a volume).
        label_map: The organ label map, in the records' coordinates.
        matcher: The matcher (default ``BoxOrganMatcher()``: ``ioa``, 0.5, 5 mm).
        builder: The seed builder (default ``SeedBuilder()``).
        vertical: Passed to :func:`~medcurric.anatomy.describe_location` (``False`` for slabs).
        clip: Clip boxes that leave the image instead of raising.

    Returns:
        One seed per record, in order.

    Examples:
        >>> from medcurric.testing import make_phantom
        >>> ph = make_phantom()
        >>> seeds = build_seeds(ph.key_slice_lesions, ph.label_map())
        >>> seeds[0].organ, seeds[0].outcome.value
        ('liver', 'inside')
    """
    recs = list(records)
    if not recs:
        return []
    matcher = matcher if matcher is not None else BoxOrganMatcher()
    builder = builder if builder is not None else SeedBuilder()
    matches = matcher.match_records(recs, label_map, clip=clip)
    affine = label_map.affine
    # one pass for every organ's extent; the result keeps each organ's union for the next lesion
    extents = organ_extents(label_map.array, affine) if affine is not None else None
    out = []
    for record, match in zip(recs, matches, strict=True):
        slice_index = record.slice_index if len(record.box) == 4 and label_map.ndim == 3 else None
        location = describe_location(
            record.box,
            label_map,
            match,
            spacing=_spacing(label_map, record),
            slice_index=slice_index,
            extents=extents,
            view=ViewPlane.AXIAL,
            vertical=vertical,
        )
        out.append(builder.build(record, match, location))
    return out


def _spacing(label_map: LabelMap, record: LesionRecord) -> tuple[float, ...] | None:
    if label_map.spacing is not None:
        return label_map.spacing
    if record.spacing is None or len(record.spacing) < label_map.ndim:
        return None
    return tuple(record.spacing[-label_map.ndim :])
