"""Plot a curriculum run: monitored losses over checks, stage bands and switch points."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medcurric._optional import require
from medcurric.curriculum.scheduler import Decision
from medcurric.errors import DataFormatError, WrongTypeError
from medcurric.stage import Stage

__all__ = ["STAGE_COLOURS", "plot_history"]

#: Band colour of each stage.
STAGE_COLOURS: dict[str, str] = {"easy": "#d8f0d2", "medium": "#fde9c4", "hard": "#f7d0d0"}


def _decisions(history: Any) -> list[Decision]:
    if hasattr(history, "history") and not isinstance(history, Mapping):
        history = history.history
    if not isinstance(history, Iterable) or isinstance(history, (str, bytes)):
        raise WrongTypeError(
            f"Expected a scheduler or a sequence of Decision (or Decision.to_dict() dicts), "
            f"but got {type(history).__name__}."
        )
    out: list[Decision] = []
    for item in history:
        if isinstance(item, Decision):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(Decision.from_dict(item))
        else:
            raise WrongTypeError(f"Expected Decision entries in the history, but got {type(item).__name__}.")
    return out


def plot_history(
    history: Any,
    path: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    r"""Draw the monitored values over checks with stage bands and switch points, to a file.

    Each check is drawn on the band of the stage it was measured in; a star on a
    check's value marks a switch decided there, and the dashed line right after it
    where the new stage starts (both in the legend). The x axis counts the
    scheduler's checks (epochs when every decision carries its epoch); the y axis is
    named after the metric drawn.

    Args:
        history: A :class:`~medcurric.curriculum.CurriculumScheduler` (its
            ``history``), or a sequence of :class:`~medcurric.curriculum.Decision`
            or of their ``to_dict()`` forms (e.g. from a saved state).
        path: Output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
        metrics: Metric names to draw (default: every metric in the history).
        title: Figure title.
        dpi: Resolution for raster formats.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: Without matplotlib (``pip install 'medcurric[viz]'``).
        DataFormatError: When the history is empty.

    Examples:
        >>> import tempfile, pathlib
        >>> from medcurric.curriculum import CurriculumScheduler
        >>> sched = CurriculumScheduler(patience=1, min_delta=0.0)
        >>> for v in (3.0, 2.0, 2.0, 2.0, 1.5, 1.6, 1.7):
        ...     _ = sched.step({"loss": v})
        >>> out = plot_history(sched, pathlib.Path(tempfile.mkdtemp()) / "run.png")
        >>> out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        True
    """
    decisions = _decisions(history)
    if not decisions:
        raise DataFormatError("Expected a non-empty history to plot; call scheduler.step(...) first.")
    require("matplotlib", feature="plot_history")
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    names = list(metrics) if metrics is not None else sorted({k for d in decisions for k in d.metrics})
    steps = [d.step for d in decisions]
    fig = Figure(figsize=(8, 4.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    # Stage bands: the stage each value was measured in (the stage before the decision);
    # a switch decided on check k takes effect after it (dashed line at k + 0.5).
    edges = [*steps, steps[-1] + 1]
    seen: set[str] = set()
    start = 0
    for i in range(1, len(decisions) + 1):
        if i == len(decisions) or decisions[i].previous_stage is not decisions[start].previous_stage:
            stage = decisions[start].previous_stage
            lo = edges[start] - 0.5 if start else edges[0] - 0.5
            hi = edges[i] - 0.5
            label = None if stage.value in seen else f"stage: {stage.value}"
            seen.add(stage.value)
            ax.axvspan(lo, hi, color=STAGE_COLOURS.get(stage.value, "#eeeeee"), alpha=0.8, label=label, lw=0)
            start = i
    for name in names:
        xs = [d.step for d in decisions if name in d.metrics and math.isfinite(d.metrics[name])]
        ys = [d.metrics[name] for d in decisions if name in d.metrics and math.isfinite(d.metrics[name])]
        if xs:
            ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=name)
    line_label: str | None = "next stage starts"
    star_label: str | None = "switch decided (plateau)"
    for d in decisions:
        if d.switched:
            ax.axvline(d.step + 0.5, color="black", ls="--", lw=1.0, label=line_label)
            line_label = None
            if d.value is not None and math.isfinite(d.value):
                ax.plot([d.step], [d.value], marker="*", ms=12, color="black", ls="none", label=star_label)
                star_label = None
    skipped_label: str | None = "check skipped (non-finite)"
    for d in decisions:
        if d.value is None:
            ax.axvline(d.step, color="red", ls=":", lw=0.8, label=skipped_label)
            skipped_label = None
    by_epoch = all(d.epoch is not None for d in decisions)
    ax.set_xlabel("epoch (one scheduler check each)" if by_epoch else "scheduler check (call to step())")
    ax.set_ylabel(names[0] if len(names) == 1 else "monitored value")
    ax.set_xlim(edges[0] - 0.5, edges[-1] - 0.5)
    ax.set_title(title or f"Curriculum: {' -> '.join(_stage_order(decisions))}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def _stage_order(decisions: Sequence[Decision]) -> list[str]:
    order: list[str] = []
    for d in decisions:
        if not order or order[-1] != d.stage.value:
            order.append(d.stage.value)
    return order or [Stage.EASY.value]
