"""JSON round-tripping for the library's record dataclasses."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import numpy as np

from medcurric.errors import DataFormatError

__all__ = ["JsonRecord", "to_jsonable"]

R = TypeVar("R", bound="JsonRecord")

_PLAIN = frozenset({str, int, float, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        _FIELD_NAMES[cls] = names
    return names


def to_jsonable(value: Any) -> Any:
    """Convert numpy/tuple/dataclass/enum values into plain JSON types.

    Examples:
        >>> to_jsonable({"a": np.float32(1.5), "b": (1, 2), "c": np.arange(2)})
        {'a': 1.5, 'b': [1, 2], 'c': [0, 1]}
    """
    tp = type(value)
    if tp in _PLAIN:  # exact plain types (not StrEnum, not numpy scalars) pass as they are
        return value
    if tp is tuple or tp is list:
        return [to_jsonable(v) for v in value]
    if tp is dict:
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, str):  # includes StrEnum members
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_jsonable(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        return _from_jsonable(members[0], value) if len(members) == 1 else value
    if isinstance(tp, type) and issubclass(tp, JsonRecord):
        return tp.from_dict(value)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v) for v in value)
        if args:
            return tuple(_from_jsonable(a, v) for a, v in zip(args, value, strict=False))
        return tuple(value)
    if origin is list:
        (arg,) = get_args(tp) or (Any,)
        return [_from_jsonable(arg, v) for v in value]
    if origin is dict:
        args = get_args(tp)
        return {k: _from_jsonable(args[1], v) for k, v in value.items()} if args else dict(value)
    if isinstance(tp, type) and issubclass(tp, str) and not isinstance(value, tp):
        return tp(value)
    return value


class JsonRecord:
    """Mixin for dataclass records that serialise to JSON lines and back losslessly.

    Subclasses are dataclasses. Nested records, tuples and optional fields are
    restored from their type hints; unknown keys are rejected so that typos in
    hand-written files do not pass silently.
    """

    _json_extra_ok: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a dict of plain JSON types."""
        return {name: to_jsonable(getattr(self, name)) for name in _field_names(type(self))}

    def to_json(self) -> str:
        """Return the record as one line of JSON (no trailing newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Build the record from :meth:`to_dict` output."""
        if not isinstance(data, dict):
            raise DataFormatError(
                f"Expected a JSON object for {cls.__name__}, but got {type(data).__name__}."
            )
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown and not cls._json_extra_ok:
            raise DataFormatError(
                f"Unknown field(s) {unknown} for {cls.__name__}; expected a subset of {sorted(names)}."
            )
        kwargs = {k: _from_jsonable(hints[k], v) for k, v in data.items() if k in names}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise DataFormatError(f"Cannot build {cls.__name__} from {sorted(data)}: {exc}") from exc

    @classmethod
    def from_json(cls: type[R], line: str) -> R:
        """Build the record from one line of JSON."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"Invalid JSON for {cls.__name__}: {exc}") from exc
        return cls.from_dict(data)
