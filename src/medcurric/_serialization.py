"""JSON round-tripping for the library's record dataclasses: the one serialisation style.

Every record (:class:`JsonRecord` subclasses) and every saved state goes through
:func:`to_jsonable` on the way out and through its type hints on the way in:

* ``str``/``int``/``bool``/``None`` pass as they are; ``float`` too, except NaN and
  infinities, which become the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (strict JSON
  has no token for them) and come back as floats wherever the field says ``float``;
* tuples become lists and come back as tuples; ``StrEnum`` members become their value
  and come back as members; nested records and dataclasses become objects;
* numpy scalars and arrays become Python numbers and (nested) lists;
* anything else raises :class:`~medcurric.errors.DataFormatError` naming the field and
  the type, rather than being turned into a string.

Older files stay readable: a record lists renamed or moved keys in :meth:`JsonRecord._upgrade`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import numpy as np

from medcurric.errors import DataFormatError

__all__ = ["JsonRecord", "from_jsonable", "to_jsonable"]

R = TypeVar("R", bound="JsonRecord")

_PLAIN = frozenset({str, int, bool, type(None)})
_KEY_TYPES = (str, int, float, bool, type(None))
#: Strict JSON has no NaN/Infinity tokens: non-finite floats travel as these strings.
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


class _Unserialisable(DataFormatError):
    """A value of a type with no JSON form; ``path`` is filled in while unwinding."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.path: list[str] = []

    def message(self, root: str) -> str:
        tp = type(self.value)
        return (
            f"Cannot serialise {root}{''.join(self.path)}: a value of type "
            f"{tp.__module__}.{tp.__qualname__} has no JSON form. Expected str, int, float, bool, "
            "None, a StrEnum, a list/tuple/dict of those, a numpy scalar or array, or a record; "
            "convert it (e.g. str(path)) before storing it."
        )


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        _FIELD_NAMES[cls] = names
    return names


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # "nan", "inf", "-inf"


def _items(value: Any, keys: Any) -> Any:
    """Convert the items of a list/tuple (``keys`` None) or a dict, naming the failing one."""
    try:
        if keys is None:
            return [_walk(v) for v in value]
        return {_key(k): _walk(v) for k, v in value.items()}
    except _Unserialisable as exc:
        for k, v in enumerate(value) if keys is None else value.items():
            try:
                _key(k)
                _walk(v)
            except _Unserialisable as inner:
                inner.path.insert(0, f"[{k!r}]")
                raise inner from None
        raise exc  # pragma: no cover - the loop finds the failing item


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, _KEY_TYPES):
        return str(key)
    raise _Unserialisable(key)


def _record_dict(value: Any) -> dict[str, Any]:
    out = {}
    for name in _field_names(type(value)):
        try:
            out[name] = _walk(getattr(value, name))
        except _Unserialisable as exc:
            exc.path.insert(0, f".{name}")
            raise
    return out


def _walk(value: Any) -> Any:
    tp = type(value)
    if tp in _PLAIN:  # exact plain types (not StrEnum, not numpy scalars) pass as they are
        return value
    if tp is float:
        return _float(value)
    if tp is tuple or tp is list:
        return _items(value, None)
    if tp is dict:
        return _items(value, True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _record_dict(value)
    if isinstance(value, str):  # includes StrEnum members
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):  # numbers and IntEnum members; other enums have no JSON form
        return int(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, Mapping):
        return _items(value, True)
    if isinstance(value, (list, tuple)):
        return _items(value, None)
    if isinstance(value, np.ndarray):
        return _walk(value.tolist())
    if isinstance(value, np.generic):
        item = value.item()
        if type(item) is not type(value):  # np.datetime64 and friends give back themselves
            return _walk(item)
    raise _Unserialisable(value)


def to_jsonable(value: Any) -> Any:
    """Convert numpy/tuple/dataclass/enum values into plain JSON types.

    Raises:
        DataFormatError: For a value with no JSON form (a path, a set, an object), naming
            where it sits and its type.

    Examples:
        >>> to_jsonable({"a": np.float32(1.5), "b": (1, 2), "c": np.arange(2), "d": float("inf")})
        {'a': 1.5, 'b': [1, 2], 'c': [0, 1], 'd': 'inf'}
    """
    try:
        return _walk(value)
    except _Unserialisable as exc:
        raise DataFormatError(exc.message("value")) from None


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_jsonable(tp: Any, value: Any, where: str = "value") -> Any:
    """Rebuild a value of type ``tp`` from :func:`to_jsonable` output.

    Args:
        tp: The type hint (``tuple[int, int] | None``, a record class, a ``StrEnum``...).
        value: Plain JSON data.
        where: What the value is, for error messages (e.g. ``"FactualSeed.location"``).

    Raises:
        DataFormatError: When ``value`` cannot be a ``tp``.

    Examples:
        >>> from medcurric.stage import Stage
        >>> from_jsonable(dict[str, tuple[float, Stage]], {"a": ["inf", "easy"]})
        {'a': (inf, <Stage.EASY: 'easy'>)}
    """
    if value is None or tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        return from_jsonable(members[0], value, where) if len(members) == 1 else value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.lower() in _NON_FINITE:
            return _NON_FINITE[value.lower()]
        raise DataFormatError(f"{where}: expected a number, but got {value!r}.")
    if tp in (str, int, bool):
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise DataFormatError(
                f"{where}: expected a list for {_describe(tp)}, but got {value!r}."
            )
        args = get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            (arg, *_) = args or (Any,)
            items = [from_jsonable(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
        elif args:
            if len(args) != len(value):
                raise DataFormatError(
                    f"{where}: expected {len(args)} values, but got {len(value)}: {value!r}."
                )
            items = [
                from_jsonable(a, v, f"{where}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            ]
        else:
            items = list(value)
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise DataFormatError(
                f"{where}: expected an object for {_describe(tp)}, but got {value!r}."
            )
        key_tp, value_tp = get_args(tp) or (Any, Any)
        return {
            _dict_key(key_tp, k, where): from_jsonable(value_tp, v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if isinstance(tp, type):
        if issubclass(tp, JsonRecord):
            return tp._build(value, where)
        if dataclasses.is_dataclass(tp):
            return _build_dataclass(tp, value, where, extra_ok=False)
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                allowed = [m.value for m in tp]
                raise DataFormatError(
                    f"{where}: expected one of {allowed}, but got {value!r}."
                ) from None
    return value


def _dict_key(tp: Any, key: Any, where: str) -> Any:
    """JSON keys are strings: give back the int or enum member the hint asks for."""
    if tp is int:
        try:
            return int(key)
        except ValueError:
            raise DataFormatError(f"{where}: expected integer keys, but got {key!r}.") from None
    return key if tp in (Any, str) else from_jsonable(tp, key, f"{where} key")


def _build_dataclass(cls: type, data: Any, where: str, *, extra_ok: bool) -> Any:
    if not isinstance(data, Mapping):
        raise DataFormatError(
            f"{where}: expected a JSON object for {cls.__name__}, but got {type(data).__name__}."
        )
    names = _field_names(cls)
    unknown = sorted(set(data) - set(names))
    if unknown and not extra_ok:
        raise DataFormatError(
            f"{where}: unknown field(s) {unknown} for {cls.__name__}; expected a subset of {sorted(names)}."
        )
    hints = _hints(cls)
    kwargs = {k: from_jsonable(hints[k], v, f"{where}.{k}") for k, v in data.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise DataFormatError(
            f"{where}: cannot build {cls.__name__} from {sorted(data)}: {exc}"
        ) from exc


class JsonRecord:
    """Mixin for dataclass records that serialise to JSON lines and back losslessly.

    Subclasses are dataclasses. Nested records, tuples, enums and optional fields are
    restored from their type hints; unknown keys are rejected so that typos in
    hand-written files do not pass silently. A subclass that renamed or moved a key
    overrides :meth:`_upgrade` so that files written before still load.
    """

    _json_extra_ok: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a dict of plain JSON types.

        Raises:
            DataFormatError: When a field holds a value with no JSON form (naming the field and type).
        """
        try:
            return _record_dict(self)
        except _Unserialisable as exc:
            raise DataFormatError(exc.message(type(self).__name__)) from None

    def to_json(self) -> str:
        """Return the record as one line of JSON (no trailing newline)."""
        return json.dumps(
            self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )

    @classmethod
    def _upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Map the keys of older files onto the current fields (a copy; the default changes nothing)."""
        return data

    @classmethod
    def _build(cls: type[R], data: Any, where: str) -> R:
        if not isinstance(data, Mapping):
            raise DataFormatError(
                f"{where}: expected a JSON object for {cls.__name__}, but got {type(data).__name__}."
            )
        return typing.cast(
            R, _build_dataclass(cls, cls._upgrade(dict(data)), where, extra_ok=cls._json_extra_ok)
        )

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Build the record from :meth:`to_dict` output (or an older file's form of it).

        Raises:
            DataFormatError: On unknown keys, missing required keys or values of the wrong type.
        """
        return cls._build(data, cls.__name__)

    @classmethod
    def from_json(cls: type[R], line: str) -> R:
        """Build the record from one line of JSON."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"Invalid JSON for {cls.__name__}: {exc}") from exc
        return cls.from_dict(data)
