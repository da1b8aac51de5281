"""The demo's summary page: what each step of ``medcurric demo`` wrote, with links."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medcurric.errors import UnsafePathError
from medcurric.review._html import render_page
from medcurric.seeds.records import FactualSeed

__all__ = ["write_demo_page"]


def _href(root: Path, path: str | os.PathLike[str]) -> str:
    """``path`` (absolute, or relative to ``root``) as a link relative to ``root``; folders end in ``/``."""
    full = root / path
    try:
        rel = full.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UnsafePathError(f"Expected a path inside '{root}' to link to, but got '{path}'.") from None
    return rel + ("/" if full.is_dir() else "")


def _num(value: Any, digits: int = 3) -> str:
    """A score for a table: ``digits`` significant digits, "—" when missing or not a number."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "\u2014"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


#: VQA columns of the evaluation table: summary key -> heading.
_VQA_COLUMNS = {
    "n_open": "open questions", "open_recall": "open recall", "open_f1": "open F1",
    "open_exact_match": "open exact match", "n_closed": "closed questions", "closed_accuracy": "closed accuracy",
}

#: Grounding rows of the held-out table: summary key -> (label, which way is better).
_GROUNDING_ROWS = {
    "mean_mass_in_box": ("attention mass in the lesion box (patches weighted by their share inside it)", "higher"),
    "pointing_accuracy": ("pointing accuracy (attention peak inside the box)", "higher"),
}


def _evaluation_tables(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation mapping as rows of formatted cells (see :func:`write_demo_page`)."""
    vqa = [
        {"mode": str(mode), "cells": [_num(summary.get(k)) for k in _VQA_COLUMNS]}
        for mode, summary in (evaluation.get("vqa") or {}).items()
    ]
    grounding = evaluation.get("grounding") or {}
    before, after = grounding.get("before") or {}, grounding.get("after") or {}
    rows = []
    kl = (evaluation.get("held_out") or {}).get("attention_kl")
    if kl:
        rows.append({"label": "attention KL to the box target", "better": "lower",
                     "before": _num(kl.get("before")), "after": _num(kl.get("after"))})
    for key, (label, better) in _GROUNDING_ROWS.items():
        if key in before or key in after:
            rows.append({"label": label, "better": better, "before": _num(before.get(key)),
                         "after": _num(after.get(key))})
    held = evaluation.get("held_out") or {}
    return {
        "vqa_columns": list(_VQA_COLUMNS.values()), "vqa": vqa, "grounding": rows,
        "held_out": [str(x) for x in held.get("lesions", [])],
        "n_grounding": held.get("n", before.get("n")), "n_vqa": evaluation.get("n_vqa"),
    }


def write_demo_page(
    out_dir: str | os.PathLike[str],
    *,
    outputs: Mapping[str, str | os.PathLike[str]],
    seeds: Iterable[FactualSeed] = (),
    stages: Sequence[Mapping[str, Any]] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    heatmaps: Sequence[Mapping[str, Any]] = (),
    colorbar: str | os.PathLike[str] | None = None,
    timings: Mapping[str, float] | None = None,
    name: str = "index.html",
) -> Path:
    """Write the demo's summary page into ``out_dir``; every text on it is escaped.

    The page says what the demo is (a tiny random model on a synthetic phantom, so the
    scores show the mechanics, not results), shows the scores as tables rounded to three
    significant digits and captions every figure. Paths are absolute or relative to
    ``out_dir`` and must lie inside it; they become relative links.

    Args:
        out_dir: The demo's output directory (the page is written there).
        outputs: ``description -> file or folder`` of everything the steps wrote.
        seeds: Factual seeds, listed with their outcome and organ ("—" when unmatched).
        stages: One mapping per rendered stage: ``stage``, ``image`` (a path), ``prompt``,
            ``target`` and optionally ``attention_target`` (a path) and ``source_px``
            (``[width, height]`` before upscaling for display).
        training: ``steps``, ``switch_steps``, ``stage`` and optionally ``plot`` (a path).
        evaluation: ``vqa`` (mode -> :meth:`VQAScores.summary`-style dict), ``grounding``
            (``before``/``after`` -> grounding summary dict), ``held_out`` (``lesions``,
            ``n``, ``attention_kl`` with ``before``/``after``), ``n_vqa``.
        heatmaps: One mapping per before/after attention figure: ``image`` (a path), and
            optionally ``id``, ``question``, ``organ`` and ``mass`` (``[before, after]``).
        colorbar: The heatmaps' shared colour bar image.
        timings: Seconds per step.
        name: File name of the page.

    Returns:
        The page's path.

    Raises:
        UnsafePathError: When a path lies outside ``out_dir``.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage_rows = [
        {
            "stage": str(e["stage"]), "image": _href(root, e["image"]), "prompt": str(e["prompt"]),
            "target": str(e["target"]),
            "attention_target": _href(root, e["attention_target"]) if e.get("attention_target") else None,
            "source_px": "\u00d7".join(str(int(v)) for v in e["source_px"]) if e.get("source_px") else None,
        }
        for e in stages
    ]
    train = None
    if training is not None:
        switches = list(training["switch_steps"])
        train = {
            "steps": training["steps"], "stage": training["stage"],
            "switch_steps": ", ".join(str(x) for x in switches) if switches else "never",
            "plot": _href(root, training["plot"]) if training.get("plot") else None,
        }
    figures = [
        {
            "image": _href(root, h["image"]), "id": str(h.get("id", "")), "question": str(h.get("question", "")),
            "organ": "unmatched" if h.get("organ") is None else str(h["organ"]),
            "mass": [_num(m) for m in h["mass"]] if h.get("mass") else None,
        }
        for h in heatmaps
    ]
    page = render_page(
        "demo.html.j2",
        outputs=[(what, _href(root, path)) for what, path in outputs.items()],
        seeds=list(seeds),
        stages=stage_rows,
        training=train,
        evaluation=None if evaluation is None else _evaluation_tables(evaluation),
        heatmaps=figures,
        colorbar=_href(root, colorbar) if colorbar else None,
        timings=list((timings or {}).items()),
    )
    path = root / name
    path.write_text(page, encoding="utf-8")
    return path
