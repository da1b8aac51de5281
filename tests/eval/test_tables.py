"""Breakdown tables against a hand loop; markdown/text layout; untrusted cells."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import DataFormatError, InvalidOptionError
from medcurric.eval import breakdown, format_table


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["easy", "medium", "hard"]),
            st.sampled_from(["liver", "lung", None]),
            st.one_of(st.none(), st.floats(0, 1)),
        ),
        max_size=20,
    )
)
def test_breakdown_matches_loop(rows: list[tuple[str, str | None, float | None]]) -> None:
    dicts = [{"stage": s, "organ": o, "iou": v} for s, o, v in rows]
    table = breakdown(dicts, ("stage", "organ"), ["iou"])
    groups: dict[tuple[str, str], list[float | None]] = {}
    for s, o, v in rows:
        groups.setdefault((s, o or "(none)"), []).append(v)
    got = {(r["stage"], r["organ"]): r for r in table}
    for key, values in groups.items():
        present = [v for v in values if v is not None]
        assert got[key]["n"] == len(values)
        assert got[key]["n_iou"] == len(present)
        if present:
            assert got[key]["iou"] == pytest.approx(sum(present) / len(present))
        else:
            assert got[key]["iou"] is None
    if rows:
        assert got[("all", "all")]["n"] == len(rows)
        assert list(got)[:-1] == sorted(groups)
    else:
        assert table == []


def test_breakdown_rejects_text_metrics() -> None:
    with pytest.raises(DataFormatError, match="number"):
        breakdown([{"organ": "liver", "iou": "0.5"}], "organ", ["iou"])


def test_format_table() -> None:
    rows = [{"organ": "left | right\nlung", "iou": 0.5, "ok": True, "n": 3, "x": None}]
    md = format_table(rows)
    assert md.splitlines()[2] == "| left \\| right lung | 0.5000 | true | 3 | - |"
    text = format_table(rows, fmt="text", digits=1, columns=["n", "iou"])
    assert text.splitlines() == ["n  iou", "-  ---", "3  0.5"]
    assert format_table([]) == ""
    with pytest.raises(InvalidOptionError, match="markdown"):
        format_table(rows, fmt="md")
