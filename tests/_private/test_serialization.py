"""to_jsonable's fast paths give exactly the plain types the generic walk gives."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medcurric._serialization import JsonRecord, to_jsonable


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
    try:
        want = json.dumps(_reference(rec), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # infinities are refused either way
        with pytest.raises(ValueError):
            rec.to_json()
    else:
        assert rec.to_json() == want
