"""Grounding metrics: boxes cited in rationales, attention mass in the box, pointing game.

Boxes here are normalised ``(x1, y1, x2, y2)`` in ``[0, 1]`` of the image the
model saw, as Easy-stage rationales cite them (``[0.1234, 0.2000, 0.3500, 0.4100]``).
Attention maps are ``[P]`` vectors over a row-major ``gh x gw`` patch grid
(VIP-LLaVA: 24 x 24 = 576) covering that same image, so map a box through the
processor's resize/crop (:func:`medcurric.geometry.map_boxes`) before scoring.

* :func:`parse_boxes` reads every ``[x1, y1, x2, y2]`` from untrusted text.
* :func:`rationale_iou` is the IoU of a cited box with the true box.
* :func:`attention_in_box` is the share of attention mass inside the box, each
  patch weighted by how much of it the box covers (``coverage="fraction"``), by
  whether its centre is in the box (``"centre"``), or by any overlap (``"any"``).
* :func:`pointing_game` counts a hit when the most-attended patch overlaps the box,
  optionally grown by ``tolerance`` patches on every side.
* :func:`score_grounding` applies them to a set of samples and breaks the results
  down per stage and organ.

Examples:
    >>> parse_boxes("The lesion [0.10, 0.20, 0.30, 0.40] lies in the liver.")
    [(0.1, 0.2, 0.3, 0.4)]
    >>> rationale_iou("see [0, 0, 0.5, 0.5]", (0, 0, 0.5, 1.0))
    0.5
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, InvalidBoxError, ShapeError, WrongTypeError
from medcurric.eval.tables import breakdown, format_table

__all__ = [
    "BoxPick",
    "Coverage",
    "GroundingScore",
    "GroundingScores",
    "attention_in_box",
    "box_patch_weights",
    "parse_boxes",
    "pointing_game",
    "rationale_iou",
    "score_grounding",
]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX = re.compile(
    r"[\[(]\s*("
    + _NUM
    + r")\s*,\s*("
    + _NUM
    + r")\s*,\s*("
    + _NUM
    + r")\s*,\s*("
    + _NUM
    + r")\s*[\])]"
)
_TOL = 1e-6


class BoxPick(StrEnum):
    """Which cited box :func:`rationale_iou` scores when a rationale cites several."""

    FIRST = "first"
    BEST = "best"
    LAST = "last"


class Coverage(StrEnum):
    """How much of a patch counts as inside a box."""

    FRACTION = "fraction"
    CENTRE = "centre"
    ANY = "any"


def parse_boxes(
    text: str, *, normalized: bool = True, max_boxes: int = 64
) -> list[tuple[float, float, float, float]]:
    """Find the ``[x1, y1, x2, y2]`` boxes cited in a text.

    Brackets or parentheses are accepted. Boxes with inverted corners, non-finite values or
    (when ``normalized``) coordinates outside ``[0, 1]`` are skipped: model output is
    untrusted and a malformed box counts as no box.

    Args:
        text: A generated rationale.
        normalized: Keep only boxes inside ``[0, 1]``.
        max_boxes: Stop after this many boxes.

    Returns:
        The boxes in order of appearance.

    Raises:
        WrongTypeError: When ``text`` is not a string.

    Examples:
        >>> parse_boxes("at (0.5, 0.5, 0.7, 0.9) and [0.9, 0.1, 0.2, 0.3] and [12, 40, 60, 80]")
        [(0.5, 0.5, 0.7, 0.9)]
        >>> parse_boxes("[12, 40, 60, 80]", normalized=False)
        [(12.0, 40.0, 60.0, 80.0)]
    """
    if not isinstance(text, str):
        raise WrongTypeError(f"Expected the rationale as a string, but got {type(text).__name__}.")
    boxes: list[tuple[float, float, float, float]] = []
    for m in _BOX.finditer(text):
        x1, y1, x2, y2 = (float(g) for g in m.groups())
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            continue
        if normalized and not all(-_TOL <= v <= 1 + _TOL for v in (x1, y1, x2, y2)):
            continue
        boxes.append((x1, y1, x2, y2))
        if len(boxes) >= max_boxes:
            break
    return boxes


def _check_box(box: Any, *, name: str = "box") -> np.ndarray:
    arr = np.asarray(box, dtype=np.float64)
    if arr.shape != (4,):
        raise ShapeError(
            f"Expected {name} as 4 numbers (x1, y1, x2, y2), but got shape {arr.shape}."
        )
    if not np.isfinite(arr).all() or arr[2] < arr[0] or arr[3] < arr[1]:
        raise InvalidBoxError(
            f"Expected {name} with finite values and x1 <= x2, y1 <= y2, but got {arr.tolist()}."
        )
    return arr


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def rationale_iou(
    text: str,
    box: Sequence[float] | np.ndarray,
    *,
    pick: str | BoxPick = BoxPick.FIRST,
    normalized: bool = True,
) -> float | None:
    """IoU between a box cited in a rationale and the true box.

    Args:
        text: The generated rationale.
        box: The true box ``(x1, y1, x2, y2)``, in the same units as the cited boxes.
        pick: Score the ``"first"`` or ``"last"`` cited box, or the ``"best"`` one.
        normalized: Whether cited boxes must lie in ``[0, 1]`` (see :func:`parse_boxes`).

    Returns:
        The IoU, or ``None`` when the text cites no valid box.

    Raises:
        InvalidBoxError: When the true box is malformed.

    Examples:
        >>> rationale_iou("[0, 0, 1, 1] then [0, 0, 0.5, 1]", (0, 0, 0.5, 1), pick="best")
        1.0
        >>> rationale_iou("no box here", (0, 0, 1, 1)) is None
        True
    """
    truth = _check_box(box)
    mode = look_up_option(pick, BoxPick, name="pick")
    cited = parse_boxes(text, normalized=normalized)
    if not cited:
        return None
    if mode is BoxPick.FIRST:
        return _iou(np.asarray(cited[0]), truth)
    if mode is BoxPick.LAST:
        return _iou(np.asarray(cited[-1]), truth)
    return max(_iou(np.asarray(c), truth) for c in cited)


def _grid(grid: Sequence[int] | int) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)):
        gh = gw = int(grid)
    else:
        dims = tuple(int(g) for g in grid)
        if len(dims) != 2:
            raise ShapeError(f"Expected grid as (rows, cols), but got {tuple(grid)}.")
        gh, gw = dims
    if gh <= 0 or gw <= 0:
        raise ShapeError(f"Expected a grid of positive size, but got ({gh}, {gw}).")
    return gh, gw


def box_patch_weights(
    box: Sequence[float] | np.ndarray,
    grid: Sequence[int] | int,
    *,
    coverage: str | Coverage = Coverage.FRACTION,
    tolerance: float = 0.0,
) -> np.ndarray:
    """How much each patch of a grid lies inside a normalised box.

    Patch ``(r, c)`` covers ``[c / gw, (c + 1) / gw) x [r / gh, (r + 1) / gh)``.

    Args:
        box: Normalised ``(x1, y1, x2, y2)``.
        grid: ``(rows, cols)`` of the patch grid, or one int for a square grid.
        coverage: ``"fraction"``: the share of the patch's area inside the box;
            ``"centre"``: 1 when the patch centre lies in the half-open box; ``"any"``: 1 when
            the patch overlaps the box with positive area.
        tolerance: Grow the box by this many patches on every side first.

    Returns:
        ``[rows * cols]`` float64 weights in ``[0, 1]``, row-major.

    Raises:
        InvalidBoxError: On a malformed box or a negative tolerance.

    Shape:
        - box: ``[4]``; grid ``(gh, gw)`` -> ``[gh * gw]``.

    Examples:
        >>> box_patch_weights((0.0, 0.0, 0.875, 0.5), 2).reshape(2, 2).tolist()
        [[1.0, 0.75], [0.0, 0.0]]
        >>> box_patch_weights((0.0, 0.0, 0.875, 0.5), 2, coverage="centre").reshape(2, 2).tolist()
        [[1.0, 1.0], [0.0, 0.0]]
    """
    b = _check_box(box)
    gh, gw = _grid(grid)
    mode = look_up_option(coverage, Coverage, name="coverage")
    return _weights(b[None, :], gh, gw, mode, tolerance)[0].reshape(-1)


def _weights(boxes: np.ndarray, gh: int, gw: int, mode: Coverage, tolerance: float) -> np.ndarray:
    """``[N, 4]`` normalised boxes -> ``[N, gh, gw]`` patch weights."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise InvalidBoxError(f"Expected tolerance >= 0 (in patches), but got {tolerance!r}.")
    x1 = boxes[:, 0:1] - tolerance / gw
    y1 = boxes[:, 1:2] - tolerance / gh
    x2 = boxes[:, 2:3] + tolerance / gw
    y2 = boxes[:, 3:4] + tolerance / gh
    cols = np.arange(gw, dtype=np.float64)[None, :]
    rows = np.arange(gh, dtype=np.float64)[None, :]
    if mode is Coverage.CENTRE:
        cx, cy = (cols + 0.5) / gw, (rows + 0.5) / gh
        wx = ((cx >= x1) & (cx < x2)).astype(np.float64)
        wy = ((cy >= y1) & (cy < y2)).astype(np.float64)
    else:
        ox = np.clip(np.minimum((cols + 1) / gw, x2) - np.maximum(cols / gw, x1), 0.0, None) * gw
        oy = np.clip(np.minimum((rows + 1) / gh, y2) - np.maximum(rows / gh, y1), 0.0, None) * gh
        if mode is Coverage.ANY:
            wx, wy = (ox > 0).astype(np.float64), (oy > 0).astype(np.float64)
        else:
            wx, wy = np.minimum(ox, 1.0), np.minimum(oy, 1.0)
    return wy[:, :, None] * wx[:, None, :]


def _as_maps(attention: Any, grid: Sequence[int] | int) -> tuple[np.ndarray, bool, tuple[int, int]]:
    if hasattr(attention, "detach"):
        attention = attention.detach().to("cpu").double().numpy()
    arr = np.asarray(attention, dtype=np.float64)
    gh, gw = _grid(grid)
    single = arr.ndim == 1 or (arr.ndim == 2 and arr.shape == (gh, gw) and gh != 1)
    if single:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != gh * gw:
        raise ShapeError(
            f"Expected attention of shape [P] or [N, P] with P = {gh} x {gw} = {gh * gw} "
            f"patches, but got shape {np.asarray(attention).shape}. Drop non-image tokens "
            "(e.g. CLS) and pass the grid of the vision encoder."
        )
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise DataFormatError(
            "Expected attention weights that are finite and >= 0, but got negative or NaN values."
        )
    return arr, single, (gh, gw)


def _boxes_for(boxes: Any, n: int) -> np.ndarray:
    if hasattr(boxes, "detach"):
        boxes = boxes.detach().to("cpu").double().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.shape == (4,):
        arr = np.broadcast_to(arr, (n, 4))
    if arr.shape != (n, 4):
        raise ShapeError(f"Expected one box [4] or {n} boxes [{n}, 4], but got shape {arr.shape}.")
    bad = ~np.isfinite(arr).all(axis=1) | (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidBoxError(
            f"Expected boxes with finite values and x1 <= x2, y1 <= y2, but box {i} is "
            f"{arr[i].tolist()}."
        )
    return arr


def attention_in_box(
    attention: Any,
    box: Any,
    grid: Sequence[int] | int,
    *,
    coverage: str | Coverage = Coverage.FRACTION,
) -> float | np.ndarray:
    """Share of attention mass that falls inside the box.

    Each patch contributes its attention times its weight from :func:`box_patch_weights`;
    the result is divided by the map's total mass (maps need not be normalised).

    Args:
        attention: ``[P]``, ``[gh, gw]`` or ``[N, P]`` non-negative weights (numpy, list or torch).
        box: One normalised box ``[4]`` or one per map ``[N, 4]``.
        grid: ``(gh, gw)`` with ``gh * gw == P``.
        coverage: See :func:`box_patch_weights`.

    Returns:
        A float for one map, else an ``[N]`` array; NaN for an all-zero map.

    Raises:
        ShapeError: When shapes disagree with the grid.
        DataFormatError: On negative or non-finite attention.

    Shape:
        - attention: ``[P]`` or ``[N, P]``; box ``[4]`` or ``[N, 4]`` -> scalar or ``[N]``.

    Examples:
        >>> attention_in_box([0.5, 0.25, 0.125, 0.125], (0.0, 0.0, 0.5, 0.5), (2, 2))
        0.5
    """
    maps, single, (gh, gw) = _as_maps(attention, grid)
    boxes = _boxes_for(box, maps.shape[0])
    mode = look_up_option(coverage, Coverage, name="coverage")
    w = _weights(boxes, gh, gw, mode, 0.0).reshape(maps.shape[0], -1)
    total = maps.sum(axis=1)
    inside = np.einsum("np,np->n", maps, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, inside / np.where(total > 0, total, 1.0), math.nan)
    return float(out[0]) if single else out


def pointing_game(
    attention: Any, box: Any, grid: Sequence[int] | int, *, tolerance: float = 0.0
) -> float | np.ndarray:
    """Pointing-game hit: does the most-attended patch overlap the box?

    Args:
        attention: ``[P]``, ``[gh, gw]`` or ``[N, P]`` non-negative weights.
        box: One normalised box ``[4]`` or one per map ``[N, 4]``.
        grid: ``(gh, gw)`` with ``gh * gw == P``.
        tolerance: Grow the box by this many patches on every side. The pointing game's
            customary 15-pixel tolerance is ``15 / 14 ≈ 1.07`` patches on a 24 x 24 grid
            over a 336-pixel image.

    Returns:
        1.0 for a hit, 0.0 for a miss (ties: the first maximal patch in row-major order);
        NaN for an all-zero map. A float for one map, else an ``[N]`` array.

    Shape:
        - attention: ``[P]`` or ``[N, P]``; box ``[4]`` or ``[N, 4]`` -> scalar or ``[N]``.

    Examples:
        >>> pointing_game([0.1, 0.6, 0.2, 0.1], (0.0, 0.0, 0.5, 0.5), (2, 2))
        0.0
        >>> pointing_game([0.1, 0.6, 0.2, 0.1], (0.0, 0.0, 0.5, 0.5), (2, 2), tolerance=0.5)
        1.0
    """
    maps, single, (gh, gw) = _as_maps(attention, grid)
    boxes = _boxes_for(box, maps.shape[0])
    w = _weights(boxes, gh, gw, Coverage.ANY, tolerance).reshape(maps.shape[0], -1)
    peak = np.argmax(maps, axis=1)
    hit = (w[np.arange(maps.shape[0]), peak] > 0).astype(np.float64)
    out = np.where(maps.sum(axis=1) > 0, hit, math.nan)
    return float(out[0]) if single else out


@dataclass(frozen=True)
class GroundingScore(JsonRecord):
    """Grounding results for one sample.

    Attributes:
        id: Sample id.
        stage: Curriculum stage of the sample (``"easy"``, ``"medium"``, ``"hard"``), if known.
        organ: Host organ, if known.
        cited: 1.0 when the rationale cites a valid box, 0.0 when not, ``None`` without a rationale.
        iou: IoU of the cited box with the true box (``None`` when none is cited).
        iou_hit: 1.0 when ``iou >= iou_threshold``, 0.0 otherwise (a rationale without a box
            is a miss; ``None`` without a rationale).
        mass_in_box: Share of attention inside the box (``None`` without an attention map).
        pointing_hit: Pointing-game hit (``None`` without an attention map).
    """

    id: str
    stage: str | None = None
    organ: str | None = None
    cited: float | None = None
    iou: float | None = None
    iou_hit: float | None = None
    mass_in_box: float | None = None
    pointing_hit: float | None = None


_GROUNDING_METRICS = ("cited", "iou", "iou_hit", "mass_in_box", "pointing_hit")


@dataclass(frozen=True)
class GroundingScores(JsonRecord):
    """Grounding results over a set of samples.

    Attributes:
        n: Samples scored.
        citation_rate: Share of rationales citing a valid box.
        mean_iou: Mean IoU over rationales that cite a box.
        iou_hit_rate: Share of rationales whose cited box reaches the IoU threshold.
        mean_mass_in_box: Mean share of attention inside the box.
        pointing_accuracy: Pointing-game hit rate.
        iou_threshold: The threshold of ``iou_hit``.
        samples: One :class:`GroundingScore` per sample.
    """

    n: int
    citation_rate: float | None
    mean_iou: float | None
    iou_hit_rate: float | None
    mean_mass_in_box: float | None
    pointing_accuracy: float | None
    iou_threshold: float = 0.5
    samples: tuple[GroundingScore, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The aggregate numbers without the per-sample details."""
        data = self.to_dict()
        data.pop("samples")
        return data

    def breakdown(self, by: str | Sequence[str] = ("stage", "organ")) -> list[dict[str, Any]]:
        """Mean metrics per stage, per organ or per (stage, organ) pair."""
        return breakdown((s.to_dict() for s in self.samples), by, _GROUNDING_METRICS)

    def to_markdown(self, by: str | Sequence[str] = "stage") -> str:
        """Breakdown table in markdown."""
        keys = [by] if isinstance(by, str) else list(by)
        return format_table(
            self.breakdown(by), columns=[*keys, "n", *_GROUNDING_METRICS], fmt="markdown"
        )


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _target_box(target: Any, where: str) -> np.ndarray:
    box = _get(target, "box_norm")
    if box is None:
        pixel, size = _get(target, "box"), _get(target, "image_size")
        if pixel is not None and size is not None:
            w, h = (float(v) for v in size)
            px = _check_box(pixel, name=f"{where} box")
            box = (px[0] / w, px[1] / h, px[2] / w, px[3] / h)
    if box is None:
        raise DataFormatError(
            f"{where}: expected a normalised 'box_norm' "
            "(or 'box' in pixels with 'image_size' (w, h))."
        )
    return _check_box(box, name=f"{where} box")


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def score_grounding(
    targets: Iterable[Any],
    predictions: Mapping[str, Any],
    *,
    grid: Sequence[int] | int | None = None,
    coverage: str | Coverage = Coverage.FRACTION,
    tolerance: float = 0.0,
    pick: str | BoxPick = BoxPick.FIRST,
    iou_threshold: float = 0.5,
) -> GroundingScores:
    """Score rationales and attention maps against the true boxes, per sample and overall.

    Args:
        targets: Samples with ``id``, ``box_norm`` (or ``box`` + ``image_size``), and optionally
            ``stage`` and ``organ``: :class:`~medcurric.cot.CoTSample` records or dicts.
        predictions: ``{id: rationale text}`` or ``{id: {"text": ..., "attention": [P],
            "grid": [gh, gw]}}``; ``text`` and ``attention`` are each optional. Targets without a
            prediction are skipped.
        grid: Default patch grid for attention maps that do not carry their own.
        coverage: Patch weighting for the attention mass (see :func:`box_patch_weights`).
        tolerance: Pointing-game tolerance in patches.
        pick: Which cited box to score (see :func:`rationale_iou`).
        iou_threshold: IoU counted as a hit in ``iou_hit``.

    Returns:
        The per-sample scores and their means.

    Raises:
        DataFormatError: When a target has no box, or an attention map has no grid.

    Examples:
        >>> t = [{"id": "a", "box_norm": [0, 0, 0.5, 0.5], "stage": "easy", "organ": "liver"}]
        >>> p = {"a": {"text": "lesion at [0, 0, 0.5, 0.5]",
        ...            "attention": [1, 0, 0, 0], "grid": [2, 2]}}
        >>> s = score_grounding(t, p)
        >>> s.mean_iou, s.mean_mass_in_box, s.pointing_accuracy
        (1.0, 1.0, 1.0)
    """
    samples: list[GroundingScore] = []
    for index, target in enumerate(targets):
        tid = _get(target, "id")
        if tid is None:
            raise DataFormatError(f"target {index}: expected an 'id'.")
        tid = str(tid)
        if tid not in predictions:
            continue
        where = f"target {tid!r}"
        box = _target_box(target, where)
        pred = predictions[tid]
        text = pred if isinstance(pred, str) else _get(pred, "text")
        attention = None if isinstance(pred, str) else _get(pred, "attention")
        cited = iou = iou_hit = mass = hit = None
        if text is not None:
            if not isinstance(text, str):
                raise DataFormatError(
                    f"{where}: expected the rationale 'text' as a string, "
                    f"got {type(text).__name__}."
                )
            iou = rationale_iou(text, box, pick=pick)
            cited = 0.0 if iou is None else 1.0
            iou_hit = 1.0 if iou is not None and iou >= iou_threshold else 0.0
        if attention is not None:
            g = _get(pred, "grid") or grid
            if g is None:
                raise DataFormatError(
                    f"{where}: expected a 'grid' with the attention map, or pass grid=."
                )
            mass = _nan_to_none(float(attention_in_box(attention, box, g, coverage=coverage)))
            hit = _nan_to_none(float(pointing_game(attention, box, g, tolerance=tolerance)))
        stage, organ = _get(target, "stage"), _get(target, "organ")
        samples.append(
            GroundingScore(
                id=tid,
                stage=None if stage is None else str(stage),
                organ=None if organ is None else str(organ),
                cited=cited,
                iou=iou,
                iou_hit=iou_hit,
                mass_in_box=mass,
                pointing_hit=hit,
            )
        )

    def mean(name: str) -> float | None:
        vals = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        return sum(vals) / len(vals) if vals else None

    return GroundingScores(
        n=len(samples),
        citation_rate=mean("cited"),
        mean_iou=mean("iou"),
        iou_hit_rate=mean("iou_hit"),
        mean_mass_in_box=mean("mass_in_box"),
        pointing_accuracy=mean("pointing_hit"),
        iou_threshold=iou_threshold,
        samples=tuple(samples),
    )
