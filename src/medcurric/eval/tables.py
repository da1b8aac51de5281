"""Group-wise breakdown tables (per stage, per organ, per answer type) as rows, markdown or text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import DataFormatError

__all__ = ["TableFormat", "breakdown", "format_table"]


class TableFormat(StrEnum):
    """How :func:`format_table` lays a table out."""

    MARKDOWN = "markdown"
    TEXT = "text"


def _group_key(row: Mapping[str, Any], by: Sequence[str]) -> tuple[str, ...]:
    out = []
    for name in by:
        value = row.get(name)
        out.append("(none)" if value is None or value == "" else str(value))
    return tuple(out)


def breakdown(
    rows: Iterable[Mapping[str, Any]],
    by: str | Sequence[str],
    metrics: Sequence[str],
    *,
    total: bool = True,
) -> list[dict[str, Any]]:
    """Average metrics per group of rows.

    Each metric is averaged over the rows of a group where it is a number
    (``None`` means "not applicable" and is left out of that metric's mean, and
    booleans count as 0/1). Groups are sorted by their key; a missing or empty
    key is reported as ``"(none)"``.

    Args:
        rows: Per-item results, e.g. ``QuestionScore.to_dict()`` or ``GroundingScore.to_dict()``.
        by: One field name or several, e.g. ``"organ"`` or ``("stage", "organ")``.
        metrics: The numeric fields to average.
        total: Append an ``"all"`` row over every item.

    Returns:
        One dict per group: the grouping fields, ``n`` (items in the group), and for each
        metric its mean (``None`` when no item had it) and ``n_<metric>`` (how many had it).

    Raises:
        DataFormatError: When a metric value is neither a number, a bool nor ``None``.

    Examples:
        >>> rows = [{"organ": "liver", "iou": 0.5}, {"organ": "liver", "iou": None},
        ...         {"organ": "lung", "iou": 1.0}]
        >>> [(r["organ"], r["n"], r["iou"]) for r in breakdown(rows, "organ", ["iou"])]
        [('liver', 2, 0.5), ('lung', 1, 1.0), ('all', 3, 0.75)]
    """
    keys = (by,) if isinstance(by, str) else tuple(by)
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    everything: list[Mapping[str, Any]] = []
    for row in rows:
        groups.setdefault(_group_key(row, keys), []).append(row)
        everything.append(row)
    ordered = [(k, groups[k]) for k in sorted(groups)]
    if total and everything:
        ordered.append((("all",) * len(keys), everything))
    table = []
    for key, members in ordered:
        out: dict[str, Any] = dict(zip(keys, key, strict=True))
        out["n"] = len(members)
        for metric in metrics:
            values = []
            for row in members:
                v = row.get(metric)
                if v is None:
                    continue
                if not isinstance(v, (int, float)):
                    raise DataFormatError(
                        f"Expected a number or None for metric {metric!r}, but got {v!r:.80} "
                        f"({type(v).__name__}); pass only numeric fields as metrics."
                    )
                if isinstance(v, float) and math.isnan(v):
                    continue
                values.append(float(v))
            out[metric] = sum(values) / len(values) if values else None
            out[f"n_{metric}"] = len(values)
        table.append(out)
    return table


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    text = str(value)
    # Cells come from data (organ names, stages): keep one line, no table syntax.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def format_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    fmt: str | TableFormat = TableFormat.MARKDOWN,
    digits: int = 4,
) -> str:
    r"""Lay rows out as a markdown (GitHub pipe) table or an aligned plain-text table.

    Args:
        rows: Dicts sharing their keys, e.g. the output of :func:`breakdown`.
        columns: Which keys to show, in order (default: the keys of the first row).
        fmt: ``"markdown"`` or ``"text"``.
        digits: Decimals shown for floats.

    Returns:
        The table, lines joined by ``"\n"`` (empty string for no rows).

    Examples:
        >>> print(format_table([{"organ": "liver", "iou": 0.5}], fmt="markdown"))
        | organ | iou |
        | --- | --- |
        | liver | 0.5000 |
        >>> print(format_table([{"organ": "liver", "iou": 0.5}], fmt="text", digits=2))
        organ  iou
        -----  ----
        liver  0.50
    """
    layout = look_up_option(fmt, TableFormat, name="fmt")
    if not rows:
        return ""
    cols = list(columns) if columns is not None else list(rows[0].keys())
    body = [[_cell(r.get(c), digits) for c in cols] for r in rows]
    header = [_cell(c, digits) for c in cols]
    if layout is TableFormat.MARKDOWN:
        lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(header[i]), *(len(r[i]) for r in body)) for i in range(len(cols))]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)
