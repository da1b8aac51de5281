"""Class maps for readers: from names found in files, or looked up in a given map."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from medcurric.errors import DataFormatError

if TYPE_CHECKING:
    from medcurric.vocabulary.classmap import ClassMap


def normalise_name(name: str) -> str:
    """``"Lung Upper Lobe-Left"`` -> ``"lung_upper_lobe_left"`` (to match names across tools)."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def class_map_from_names(names: Mapping[int, str]) -> ClassMap:
    """A class map with TotalSegmentator-style automatic groups from ``{label: name}``.

    Maps are cached by their names (every case of a dataset usually shares one).
    """
    return _cached(tuple(sorted((int(k), str(v)) for k, v in names.items())))


@functools.lru_cache(maxsize=64)
def _cached(items: tuple[tuple[int, str], ...]) -> ClassMap:
    from medcurric.vocabulary.classmap import ClassMap

    names = dict(items)
    cleaned: dict[int, str] = {}
    used: set[str] = set()
    for label, name in sorted(names.items()):
        text = str(name).strip() or f"label_{label}"
        if text.lower() == "background":
            if int(label) == 0:
                continue
            text = f"background_{label}"
        if text in used:
            text = f"{text}_{label}"
        used.add(text)
        cleaned[int(label)] = text
    return ClassMap(cleaned, groups="auto")


def lookup_label(class_map: ClassMap, name: str, *, where: str) -> int:
    """Find the label of ``name`` in ``class_map``, comparing normalised names."""
    if name in class_map.names:
        return class_map.label_of(name)
    wanted = normalise_name(name)
    for label, cname in class_map.items():
        if normalise_name(cname) == wanted:
            return label
    raise DataFormatError(
        f"{where}: the class {name!r} is not in {class_map!r}; expected one of its names "
        f"(e.g. {list(class_map.names)[:5]}). Pass class_map=None to name labels after the file."
    )
