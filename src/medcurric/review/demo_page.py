"""The demo's summary page: what each step of ``medcurric demo`` wrote, with links."""

from __future__ import annotations

import json
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


def write_demo_page(
    out_dir: str | os.PathLike[str],
    *,
    outputs: Mapping[str, str | os.PathLike[str]],
    seeds: Iterable[FactualSeed] = (),
    stages: Sequence[Mapping[str, Any]] = (),
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    heatmaps: Sequence[str | os.PathLike[str]] = (),
    timings: Mapping[str, float] | None = None,
    name: str = "index.html",
) -> Path:
    """Write the demo's summary page into ``out_dir``; every text on it is escaped.

    Paths are absolute or relative to ``out_dir`` and must lie inside it; they become
    relative links.

    Args:
        out_dir: The demo's output directory (the page is written there).
        outputs: ``description -> file or folder`` of everything the steps wrote.
        seeds: Factual seeds, listed with their outcome and organ.
        stages: One mapping per rendered stage: ``stage``, ``image`` (a path), ``prompt``,
            ``target`` and optionally ``attention_target`` (a path).
        training: ``steps``, ``switch_steps``, ``stage`` and optionally ``plot`` (a path).
        evaluation: Scores, shown as JSON.
        heatmaps: Attention heatmap images.
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
        }
        for e in stages
    ]
    train = None
    if training is not None:
        train = {
            "steps": training["steps"], "switch_steps": training["switch_steps"], "stage": training["stage"],
            "plot": _href(root, training["plot"]) if training.get("plot") else None,
        }
    page = render_page(
        "demo.html.j2",
        outputs=[(what, _href(root, path)) for what, path in outputs.items()],
        seeds=list(seeds),
        stages=stage_rows,
        training=train,
        evaluation=None if evaluation is None else json.dumps(evaluation, indent=2),
        heatmaps=[_href(root, p) for p in heatmaps],
        timings=list((timings or {}).items()),
    )
    path = root / name
    path.write_text(page, encoding="utf-8")
    return path
