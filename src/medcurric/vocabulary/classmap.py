"""Label ids <-> organ names, with groups, laterality and the words that name them.

A :class:`ClassMap` says what each integer of a label map means. Label ``0`` is
always background and never part of the map. Classes can belong to a *group*
(the five lung lobes form ``lung_left`` and ``lung_right``, the vertebrae form
``spine``), which :class:`~medcurric.anatomy.BoxOrganMatcher` can score as one
structure. Every class and group has a readable display name and a list of
synonyms for checking generated text.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcurric._options import StrEnum
from medcurric.errors import DataFormatError, InvalidOptionError, MissingFileError, WrongTypeError
from medcurric.vocabulary._totalseg import TOTAL_V2, TOTAL_V2_SYNONYMS, group_rule

__all__ = ["ClassMap", "Laterality"]

_BACKGROUND = "background"
_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth",
             7: "seventh", 8: "eighth", 9: "ninth", 10: "tenth", 11: "eleventh", 12: "twelfth"}
#: Word replacements for display names (Latin/abbreviated TotalSegmentator words -> English).
_WORDS = {
    "clavicula": "clavicle",
    "vena": "vein",
    "autochthon": "autochthonous back muscle",
    "hip": "hip bone",
    "cartilages": "cartilages",
}
_LOBE = re.compile(r"^lung_(upper|middle|lower)_lobe_(left|right)$")
_VERTEBRA = re.compile(r"^vertebra(?:e)?_([A-Za-z]\d+)$")
_RIB = re.compile(r"^rib_(left|right)_(\d+)$")


class Laterality(StrEnum):
    """Side of the body a structure lies on (the patient's left or right).

    Examples:
        >>> ClassMap.totalsegmentator().laterality("kidney_left")
        <Laterality.LEFT: 'left'>
    """

    LEFT = "left"
    RIGHT = "right"


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _side_of(name: str) -> Laterality | None:
    tokens = name.lower().split("_")
    if "left" in tokens and "right" not in tokens:
        return Laterality.LEFT
    if "right" in tokens and "left" not in tokens:
        return Laterality.RIGHT
    return None


def _base_of(name: str) -> str:
    """``kidney_left`` -> ``kidney``; ``rib_left_3`` -> ``rib_3``."""
    return "_".join(t for t in name.split("_") if t.lower() not in ("left", "right"))


def _generic_display(name: str) -> str:
    if name in ("lung_left", "lung_right"):
        return f"{name.rsplit('_', 1)[1]} lung"
    m = _LOBE.match(name)
    if m:
        return f"{m.group(2)} {m.group(1)} lobe of the lung"
    m = _VERTEBRA.match(name)
    if m:
        return f"{m.group(1).upper()} vertebra"
    m = _RIB.match(name)
    if m:
        return f"{m.group(1)} {_ordinal(int(m.group(2)))} rib"
    side = _side_of(name)
    words = [_WORDS.get(t, t) for t in _base_of(name).split("_") if t]
    text = " ".join(words) if words else name.replace("_", " ")
    return f"{side.value} {text}" if side is not None else text


def _parse_label(key: Any) -> int:
    if isinstance(key, (bool, np.bool_)):
        raise WrongTypeError(f"Expected an integer label id, but got {key!r}.")
    if isinstance(key, (int, np.integer)):
        return int(key)
    if isinstance(key, str) and re.fullmatch(r"\s*[+-]?\d+\s*", key):
        return int(key)
    raise DataFormatError(
        f"Expected an integer label id (or its decimal string), but got {key!r}. "
        "Class maps map label ids to names, e.g. {1: 'spleen', 5: 'liver'}."
    )


class ClassMap:
    """Names of the labels of a label map, plus groups, sides and synonyms.

    Args:
        classes: ``label id -> class name``; ids are positive integers (``0`` is
            background: an entry ``0: "background"`` is accepted and dropped, any
            other name for ``0`` is an error).
        groups: ``class name -> group name`` (several classes that can be scored as
            one structure, e.g. lobes -> ``lung_left``), or ``"auto"`` to apply the
            TotalSegmentator naming rules (lobes, vertebrae, ribs, gluteal muscles)
            to the names present. ``None`` means no groups.
        synonyms: ``class or group name -> extra phrases`` naming it in text.
        display_names: ``class or group name -> readable name`` overriding the
            built-in rules (``kidney_left`` -> ``"left kidney"``).
        name: A short name for the map (kept in :meth:`to_dict`).

    Raises:
        DataFormatError: On duplicate names, a non-positive id, an empty name, or a
            group that names an unknown class or collides with a class name.

    Examples:
        >>> cm = ClassMap({1: "liver", 2: "kidney_left", 3: "lung_upper_lobe_left"}, groups="auto")
        >>> cm.label_of("liver"), cm.name_of(2), cm.group_of("lung_upper_lobe_left")
        (1, 'kidney_left', 'lung_left')
        >>> cm.display_name("kidney_left"), cm.display_name("lung_upper_lobe_left")
        ('left kidney', 'left upper lobe of the lung')
        >>> cm.label_of("livr")
        Traceback (most recent call last):
        ...
        medcurric.errors.InvalidOptionError: Expected a class name of ClassMap('custom', 3 classes), but got 'livr'. Did you mean 'liver'?
    """

    def __init__(
        self,
        classes: Mapping[Any, str],
        *,
        groups: Mapping[str, str] | str | None = None,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        display_names: Mapping[str, str] | None = None,
        name: str = "custom",
    ) -> None:
        if not isinstance(classes, Mapping):
            raise WrongTypeError(
                f"Expected a mapping of label id -> class name, but got {type(classes).__name__}. "
                "Use ClassMap.from_list for a list of names."
            )
        by_label: dict[int, str] = {}
        for key, value in classes.items():
            label = _parse_label(key)
            if not isinstance(value, str) or not value.strip() or value != value.strip():
                raise DataFormatError(
                    f"Expected a non-empty class name without surrounding spaces for label {label}, "
                    f"but got {value!r}."
                )
            if label == 0:
                if value.lower() != _BACKGROUND:
                    raise DataFormatError(
                        f"Label 0 is reserved for background, but the class map names it {value!r}. "
                        "Shift your labels so that 0 means background."
                    )
                continue
            if label < 0:
                raise DataFormatError(f"Expected label ids >= 1, but got {label} ({value!r}).")
            if label in by_label:
                raise DataFormatError(
                    f"Duplicate label id {label}: {by_label[label]!r} and {value!r}. Each id names one class."
                )
            if value.lower() == _BACKGROUND:
                raise DataFormatError(
                    f"The name 'background' is reserved for label 0, but label {label} uses it."
                )
            by_label[label] = value
        seen: dict[str, int] = {}
        for label, value in sorted(by_label.items()):
            if value in seen:
                raise DataFormatError(
                    f"Duplicate class name {value!r} for labels {seen[value]} and {label}; "
                    "each class needs a unique name."
                )
            seen[value] = label
        self._name = str(name)
        self._by_label: dict[int, str] = dict(sorted(by_label.items()))
        self._by_name: dict[str, int] = {v: k for k, v in self._by_label.items()}

        if isinstance(groups, str):
            if groups != "auto":
                raise InvalidOptionError(
                    f"Expected groups to be a mapping of class name -> group name, 'auto' or None, "
                    f"but got {groups!r}."
                )
            group_map = {n: g for n in self._by_name if (g := group_rule(n)) is not None}
        else:
            group_map = dict(groups or {})
        for member, group in group_map.items():
            self._check_class(member, what="group member")
            if not isinstance(group, str) or not group.strip():
                raise DataFormatError(f"Expected a non-empty group name for {member!r}, but got {group!r}.")
            if group in self._by_name and group != member:
                raise DataFormatError(
                    f"Group name {group!r} (of {member!r}) is also a class name; pick another group name."
                )
        self._group_of: dict[str, str] = {
            n: group_map[n] for n in self._by_name if n in group_map and group_map[n] != n
        }
        self._groups: dict[str, tuple[str, ...]] = {}
        for member in self._by_name:  # label order
            g = self._group_of.get(member)
            if g is not None:
                self._groups[g] = (*self._groups.get(g, ()), member)
        self._user_synonyms: dict[str, tuple[str, ...]] = {}
        for key, phrases in (synonyms or {}).items():
            self.resolve(key)
            if isinstance(phrases, str):
                phrases = [phrases]
            self._user_synonyms[key] = tuple(str(p) for p in phrases)
        self._display: dict[str, str] = {}
        for key, text in (display_names or {}).items():
            self.resolve(key)
            self._display[key] = str(text)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def totalsegmentator(cls) -> ClassMap:
        """The 117 classes of TotalSegmentator v2, task ``total``, with groups.

        Returns:
            A shared (immutable) class map: ``1 spleen, 2 kidney_right, 3 kidney_left,
            4 gallbladder, 5 liver, ..., 10-14 lung lobes, ..., 26-50 vertebrae S1..C1,
            51 heart, 52 aorta, ..., 92-115 ribs left 1-12 then right 1-12, 116 sternum,
            117 costal_cartilages``.

        Examples:
            >>> cm = ClassMap.totalsegmentator()
            >>> len(cm), cm.name_of(5), cm.label_of("costal_cartilages")
            (117, 'liver', 117)
        """
        return _totalsegmentator()

    @classmethod
    def from_list(cls, names: Sequence[str | None], **kwargs: Any) -> ClassMap:
        """Build a map from a list where the index is the label id.

        If the first entry is ``"background"`` (any case), it is label 0 and the
        next entry is label 1; otherwise the first entry is label 1. ``None`` or
        ``""`` entries leave an id unused.

        Args:
            names: Class names in label order.
            **kwargs: Passed to :class:`ClassMap` (``groups``, ``synonyms``, ...).

        Returns:
            The class map.

        Examples:
            >>> ClassMap.from_list(["background", "liver", None, "spleen"]).to_dict()["classes"]
            {'1': 'liver', '3': 'spleen'}
            >>> ClassMap.from_list(["liver", "spleen"]) == ClassMap.from_list(["background", "liver", "spleen"])
            True
        """
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
            raise WrongTypeError(f"Expected a list of class names, but got {type(names).__name__}.")
        items = list(names)
        offset = 1
        if items and isinstance(items[0], str) and items[0].lower() == _BACKGROUND:
            items = items[1:]
        return cls({i + offset: n for i, n in enumerate(items) if n}, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMap:
        """Build a map from :meth:`to_dict` output or a plain mapping.

        Accepted forms: ``{"classes": {...}, "groups": {...}, "synonyms": {...},
        "display_names": {...}, "name": ...}`` (what :meth:`to_dict` writes), a
        plain ``{label id: name}`` mapping (ids may be strings, as in JSON), or a
        plain ``{name: label id}`` mapping.

        Examples:
            >>> ClassMap.from_dict({"1": "liver", "2": "spleen"}).name_of(2)
            'spleen'
            >>> ClassMap.from_dict({"liver": 1, "spleen": 2}).label_of("spleen")
            2
        """
        if not isinstance(data, Mapping):
            raise WrongTypeError(f"Expected a mapping, but got {type(data).__name__}.")
        if "classes" in data and isinstance(data["classes"], (Mapping, list)):
            known = {"classes", "groups", "synonyms", "display_names", "name"}
            unknown = sorted(set(data) - known)
            if unknown:
                raise DataFormatError(
                    f"Unknown class map field(s) {unknown}; expected a subset of {sorted(known)}."
                )
            classes = data["classes"]
            kwargs = {
                "groups": data.get("groups"),
                "synonyms": data.get("synonyms"),
                "display_names": data.get("display_names"),
                "name": data.get("name", "custom"),
            }
            if isinstance(classes, list):
                return cls.from_list(classes, **kwargs)
            return cls(cls._orient(classes), **kwargs)
        return cls(cls._orient(data))

    @staticmethod
    def _orient(data: Mapping[Any, Any]) -> Mapping[Any, str]:
        values = list(data.values())
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            flipped: dict[int, str] = {}
            for k, v in data.items():
                if int(v) in flipped:
                    raise DataFormatError(
                        f"Duplicate label id {int(v)}: {flipped[int(v)]!r} and {k!r}."
                    )
                flipped[int(v)] = str(k)
            return flipped
        return data

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> ClassMap:
        """Read a map from a JSON file in any form :meth:`from_dict` accepts (or a JSON list).

        Raises:
            MissingFileError: When the file does not exist.
            DataFormatError: When it is not valid JSON or not a class map.
        """
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(f"Expected a class map JSON file at '{p}', but it does not exist.")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"'{p}' is not valid JSON: {exc}") from exc
        if isinstance(data, list):
            return cls.from_list(data)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Return the map as plain JSON types (label ids become string keys).

        Examples:
            >>> cm = ClassMap({1: "liver"}, synonyms={"liver": ["hepar"]})
            >>> ClassMap.from_dict(cm.to_dict()) == cm
            True
        """
        return {
            "name": self._name,
            "classes": {str(k): v for k, v in self._by_label.items()},
            "groups": dict(self._group_of),
            "synonyms": {k: list(v) for k, v in self._user_synonyms.items()},
            "display_names": dict(self._display),
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` to ``path`` (parents created); return the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return p

    # ----------------------------------------------------------------- lookups
    @property
    def name(self) -> str:
        """The map's own name."""
        return self._name

    @property
    def labels(self) -> tuple[int, ...]:
        """Label ids in increasing order (background excluded)."""
        return tuple(self._by_label)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in label order."""
        return tuple(self._by_label.values())

    @property
    def max_label(self) -> int:
        """The largest label id (0 for an empty map)."""
        return max(self._by_label, default=0)

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """``group name -> member class names`` (in label order)."""
        return dict(self._groups)

    def items(self) -> Iterator[tuple[int, str]]:
        """Iterate over ``(label id, class name)`` pairs in label order."""
        return iter(self._by_label.items())

    def __len__(self) -> int:
        return len(self._by_label)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._by_name or item in self._groups
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            return int(item) in self._by_label
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassMap):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return (
            tuple(self._by_label.items()),
            tuple(sorted(self._group_of.items())),
            tuple(sorted(self._user_synonyms.items())),
            tuple(sorted(self._display.items())),
        )

    def __repr__(self) -> str:
        return f"ClassMap({self._name!r}, {len(self)} classes)"

    def _unknown(self, value: object, what: str, pool: Iterable[str]) -> InvalidOptionError:
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, list(pool), n=1, cutoff=0.6)
            if not close:
                lowered = {p.lower(): p for p in pool}
                close = [lowered[value.lower()]] if value.lower() in lowered else []
            hint = f" Did you mean {close[0]!r}?" if close else ""
        return InvalidOptionError(f"Expected {what} of {self!r}, but got {value!r}.{hint}")

    def _check_class(self, name: str, *, what: str = "class name") -> str:
        if name not in self._by_name:
            raise self._unknown(name, f"a {what}", self._by_name)
        return name

    def name_of(self, label: int) -> str:
        """Return the class name of a label id.

        Raises:
            InvalidOptionError: When the id is not in the map.
        """
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and int(label) in self._by_label:
            return self._by_label[int(label)]
        raise InvalidOptionError(
            f"Expected a label id of {self!r} (1..{self.max_label}), but got {label!r}."
        )

    def label_of(self, name: str) -> int:
        """Return the label id of a class name.

        Raises:
            InvalidOptionError: When the name is unknown; the message suggests the closest name.
        """
        if name in self._by_name:
            return self._by_name[name]
        raise self._unknown(name, "a class name", self._by_name)

    def resolve(self, name: str) -> str:
        """Check that ``name`` is a class or group name and return it.

        Raises:
            InvalidOptionError: When it is neither, with a "did you mean" hint.
        """
        if isinstance(name, str) and (name in self._by_name or name in self._groups):
            return name
        raise self._unknown(name, "a class or group name", [*self._by_name, *self._groups])

    def group_of(self, name: str) -> str:
        """Return the group of a class (the class's own name when it has no group)."""
        self.resolve(name)
        return self._group_of.get(name, name)

    def members(self, name: str) -> tuple[str, ...]:
        """Return the member classes of a group, or ``(name,)`` for a class."""
        self.resolve(name)
        return self._groups.get(name, (name,))

    def member_labels(self, name: str) -> tuple[int, ...]:
        """Return the label ids of :meth:`members`."""
        return tuple(self._by_name[m] for m in self.members(name))

    def laterality(self, name: str) -> Laterality | None:
        """Return the side a class or group is on, from the ``left``/``right`` word in its name.

        Examples:
            >>> cm = ClassMap.totalsegmentator()
            >>> cm.laterality("rib_right_4"), cm.laterality("liver")
            (<Laterality.RIGHT: 'right'>, None)
        """
        self.resolve(name)
        return _side_of(name)

    def display_name(self, name: str) -> str:
        """Return a readable name for a class or group.

        Examples:
            >>> cm = ClassMap.totalsegmentator()
            >>> [cm.display_name(n) for n in ("adrenal_gland_right", "vertebrae_L1", "rib_left_3", "lung_right")]
            ['right adrenal gland', 'L1 vertebra', 'left 3rd rib', 'right lung']
        """
        self.resolve(name)
        return self._display.get(name) or _generic_display(name)

    def synonyms(self, name: str) -> list[str]:
        """Return phrases that correctly name a class or group in text, most specific first.

        The list holds the display name, the name with spaces, built-in phrases
        (``"renal"`` for a kidney, ``"hepatic"`` for the liver, with the side added
        for lateral structures), the map's own synonyms, then the phrases of the
        class's group (a lobe is also "the left lung").

        Examples:
            >>> ClassMap.totalsegmentator().synonyms("kidney_left")
            ['left kidney', 'kidney left', 'left renal']
            >>> ClassMap.totalsegmentator().synonyms("lung_upper_lobe_left")[:3]
            ['left upper lobe of the lung', 'lung upper lobe left', 'left upper lobe']
        """
        self.resolve(name)
        side = _side_of(name)
        prefix = f"{side.value} " if side is not None else ""
        out = [self.display_name(name), name.replace("_", " ")]
        base = _base_of(name)
        m = _LOBE.match(name)
        if m:
            out.append(f"{m.group(2)} {m.group(1)} lobe")
        m = _VERTEBRA.match(name)
        if m:
            out += [m.group(1).upper(), f"{m.group(1).upper()} vertebral body"]
        m = _RIB.match(name)
        if m and int(m.group(2)) in _ORDINALS:
            out.append(f"{m.group(1)} {_ORDINALS[int(m.group(2))]} rib")
        key = base if base in TOTAL_V2_SYNONYMS else base.rstrip("s") if base.rstrip("s") in TOTAL_V2_SYNONYMS else None
        if key is not None:
            out += [prefix + p for p in TOTAL_V2_SYNONYMS[key]]
        out += list(self._user_synonyms.get(name, ()))
        group = self._group_of.get(name)
        if group is not None and group != name:
            out += self.synonyms(group)
        seen: set[str] = set()
        unique = []
        for phrase in out:
            if phrase and phrase not in seen:
                seen.add(phrase)
                unique.append(phrase)
        return unique


@functools.lru_cache(maxsize=1)
def _totalsegmentator() -> ClassMap:
    return ClassMap(TOTAL_V2, groups="auto", name="totalsegmentator_v2_total")
