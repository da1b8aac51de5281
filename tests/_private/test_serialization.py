"""to_jsonable's fast paths give exactly the plain types the generic walk gives; one style for every record."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medcurric._serialization import JsonRecord, from_jsonable, to_jsonable
from medcurric.errors import DataFormatError


class _Colour(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class _Inner(JsonRecord):
    a: float
    b: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Outer(JsonRecord):
    name: str
    inner: _Inner
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _reference(value: Any) -> Any:
    """The generic walk, written out independently (no fast paths)."""
    if isinstance(value, JsonRecord):
        return {f.name: _reference(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return str(float(value))  # strict JSON has no NaN/Infinity: "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {str(k): _reference(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reference(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _typed(value: Any) -> Any:
    """The value with every leaf's exact type, to compare types as well as values."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def test_subclasses_and_numpy_scalars_become_plain_types() -> None:
    value = {
        "e": _Colour.RED,
        "f": np.float64(1.5),
        "i": np.int64(3),
        "b": np.bool_(True),
        "t": (np.float32(0.25), (1, 2)),
        1: [None, True, 2, 2.5, "x"],
        "a": np.arange(3),
    }
    out = to_jsonable(value)
    assert _typed(out) == _typed(_reference(value))
    assert type(out["e"]) is str and type(out["f"]) is float and type(out["i"]) is int
    assert type(out["b"]) is bool and out["1"] == [None, True, 2, 2.5, "x"]


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from([_Colour.RED, np.float64(2.0), np.int32(7), np.bool_(False)]),
)
_tree = st.recursive(
    _leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 9)), kids, max_size=3),
    ),
    max_leaves=12,
)


@given(_tree)
def test_matches_the_generic_walk(value: Any) -> None:
    assert _typed(to_jsonable(value)) == _typed(_reference(value))


@given(st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(0, 99), max_size=4), _tree)
def test_records_serialise_like_the_generic_walk(a: float, b: list[int], extra: Any) -> None:
    rec = _Outer(name="n", inner=_Inner(a=a, b=tuple(b)), extra={"k": extra})
    assert _typed(rec.to_dict()) == _typed(_reference(rec))
    want = json.dumps(_reference(rec), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert rec.to_json() == want  # strict JSON even with infinities inside


@dataclasses.dataclass(frozen=True)
class _Floats(JsonRecord):
    a: float
    b: tuple[float, ...] = ()
    c: dict[str, float | None] = dataclasses.field(default_factory=dict)


@given(st.floats(), st.lists(st.floats(), max_size=3), st.dictionaries(st.text(max_size=2), st.none() | st.floats()))
def test_non_finite_floats_come_back_as_floats(a: float, b: list[float], c: dict[str, float | None]) -> None:
    back = _Floats.from_json(_Floats(a=a, b=tuple(b), c=c).to_json())
    assert repr(back.a) == repr(a) and type(back.b) is tuple
    assert [repr(v) for v in back.b] == [repr(v) for v in b]
    assert {k: repr(v) for k, v in back.c.items()} == {k: repr(v) for k, v in c.items()}


@dataclasses.dataclass(frozen=True)
class _Typed(JsonRecord):
    colour: _Colour
    size: tuple[int, int] | None = None
    by_label: dict[int, _Inner] = dataclasses.field(default_factory=dict)
    colours: list[_Colour] = dataclasses.field(default_factory=list)


def test_typed_fields_come_back_typed() -> None:
    rec = _Typed(_Colour.RED, (3, 4), {7: _Inner(0.5, (1,))}, [_Colour.RED])
    data = json.loads(rec.to_json())
    assert data == {"colour": "red", "size": [3, 4], "by_label": {"7": {"a": 0.5, "b": [1]}}, "colours": ["red"]}
    back = _Typed.from_dict(data)
    assert back == rec and back.colour is _Colour.RED and type(back.size) is tuple
    assert type(next(iter(back.by_label))) is int and type(back.by_label[7]) is _Inner
    assert back.colours[0] is _Colour.RED


@pytest.mark.parametrize(
    ("value", "where", "type_name"),
    [
        ({"k": Path("a.png")}, "_Outer.extra['k']", "PosixPath"),
        ({"k": [1, {"deep": {1, 2}}]}, "_Outer.extra['k'][1]['deep']", "set"),
        ({"k": object()}, "_Outer.extra['k']", "object"),
        ({(1, 2): 3}, "_Outer.extra[(1, 2)]", "tuple"),
    ],
)
def test_an_unknown_type_names_the_field_and_the_type(value: dict, where: str, type_name: str) -> None:
    rec = _Outer(name="n", inner=_Inner(a=1.0), extra=value)
    with pytest.raises(DataFormatError) as info:
        rec.to_dict()
    assert f"Cannot serialise {where}: a value of type" in str(info.value) and type_name in str(info.value)
    with pytest.raises(DataFormatError, match=type_name):
        to_jsonable(value)


def test_a_nested_record_names_the_full_path() -> None:
    rec = _Outer(name="n", inner=_Inner(a=1.0, b=(1, Path("x"))))  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=r"_Outer\.inner\.b\[1\]: a value of type pathlib"):
        rec.to_json()


def test_bad_values_on_load_name_the_field() -> None:
    with pytest.raises(DataFormatError, match=r"_Typed\.colour: expected one of \['red'\], but got 'blue'"):
        _Typed.from_dict({"colour": "blue"})
    with pytest.raises(DataFormatError, match=r"_Typed\.size: expected 2 values"):
        _Typed.from_dict({"colour": "red", "size": [1, 2, 3]})
    with pytest.raises(DataFormatError, match=r"_Typed\.by_label\['7'\]\.a: expected a number"):
        _Typed.from_dict({"colour": "red", "by_label": {"7": {"a": "big"}}})
    with pytest.raises(DataFormatError, match=r"unknown field\(s\) \['colr'\]"):
        _Typed.from_dict({"colour": "red", "colr": "red"})
    with pytest.raises(DataFormatError, match="expected integer keys"):
        from_jsonable(dict[int, str], {"x": "y"})
