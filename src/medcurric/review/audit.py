"""How much do the factual seeds depend on segmentation quality?

:func:`audit_matching` perturbs the organ masks the way segmenters err (erode or
dilate by ``k`` mm, shift by ``k`` mm, drop small organs, swap left/right
labels), re-matches every lesion and records whether its host organ, its outcome
(inside / adjacent / unmatched) and its seed sentence change. The result answers,
per organ: can these seeds be trusted, and at what segmentation error does the
pipeline start to mislabel?

Each lesion is audited on a crop of its label map around the box, wide enough
for the largest perturbation plus the matcher's adjacency distance, so a full
DeepLesion-sized audit runs in minutes: erosion and dilation need one Euclidean
distance transform per crop whatever the number of sizes, and each size is then a
threshold.

Perturbation sizes: millimetres for ``erode``, ``dilate`` and ``shift``; for
``drop_small`` the organ size below which organs are dropped, in millilitres for
volumes and square centimetres for single slices; ``swap_lr`` has no size.
Erosion and dilation are exact to within half a voxel (distances run between
voxel centres). Shifts move the whole map by ``k`` mm in a direction drawn per
lesion from the audit's seed (in-plane for 2D maps and for boxes on one slice).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medcurric._options import StrEnum, look_up_option, warn_ignored
from medcurric._serialization import JsonRecord
from medcurric.anatomy.location import (
    Extents,
    OrganExtents,
    describe_location,
    organ_extents,
)
from medcurric.anatomy.matcher import BoxOrganMatcher, OrganMatch
from medcurric.errors import DataFormatError, InvalidOptionError, ShapeError
from medcurric.geometry import label_histogram
from medcurric.io.records import LabelMap, LesionRecord
from medcurric.seeds.builder import SeedBuilder
from medcurric.vocabulary.classmap import ClassMap

__all__ = [
    "DEFAULT_PERTURBATIONS",
    "AuditResult",
    "AuditRow",
    "Perturbation",
    "PerturbationKind",
    "audit_matching",
    "format_audit",
    "perturb_labels",
]


class PerturbationKind(StrEnum):
    """How a segmentation can be wrong."""

    ERODE = "erode"
    DILATE = "dilate"
    SHIFT = "shift"
    DROP_SMALL = "drop_small"
    SWAP_LR = "swap_lr"


@dataclass(frozen=True)
class Perturbation(JsonRecord):
    """One perturbation of the organ masks.

    Attributes:
        kind: One of :class:`PerturbationKind`.
        size: Millimetres (erode/dilate/shift), mL or cm² (drop_small), ignored for swap_lr.

    Examples:
        >>> Perturbation("erode", 2.0).name
        'erode 2 mm'
    """

    kind: str
    size: float = 0.0

    def __post_init__(self) -> None:
        kind = look_up_option(self.kind, PerturbationKind, name="perturbation kind")
        object.__setattr__(self, "kind", kind.value)
        size = float(self.size)
        if not math.isfinite(size) or size < 0:
            raise DataFormatError(f"Expected a perturbation size >= 0, but got {self.size!r}.")
        object.__setattr__(self, "size", size)

    @property
    def name(self) -> str:
        """A short label such as ``"shift 4 mm"``."""
        unit = {"erode": " mm", "dilate": " mm", "shift": " mm", "drop_small": " mL"}.get(self.kind)
        return self.kind if unit is None else f"{self.kind} {self.size:g}{unit}"


#: A grid of typical segmentation errors.
DEFAULT_PERTURBATIONS: tuple[Perturbation, ...] = (
    *(Perturbation("erode", k) for k in (1.0, 2.0, 4.0, 8.0)),
    *(Perturbation("dilate", k) for k in (1.0, 2.0, 4.0, 8.0)),
    *(Perturbation("shift", k) for k in (1.0, 2.0, 4.0, 8.0)),
    *(Perturbation("drop_small", s) for s in (10.0, 50.0)),
    Perturbation("swap_lr"),
)


# --------------------------------------------------------------------------- array core


def _lr_lut(class_map: ClassMap, max_label: int) -> np.ndarray:
    lut = np.arange(max_label + 1, dtype=np.int64)
    for label, name in class_map.items():
        tokens = name.split("_")
        if "left" not in tokens and "right" not in tokens:
            continue
        partner = "_".join({"left": "right", "right": "left"}.get(t, t) for t in tokens)
        if partner in class_map and label <= max_label:
            other = class_map.label_of(partner)
            if other <= max_label:
                lut[label] = other
    return lut


def _boundary_distance(labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Millimetres from each voxel centre to the nearest voxel on a label boundary."""
    padded = np.pad(labels, 1, mode="edge")
    core = tuple(slice(1, -1) for _ in range(labels.ndim))
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        for step in (-1, 1):
            idx = list(core)
            idx[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            edge |= padded[tuple(idx)] != labels
    if not edge.any():
        return np.full(labels.shape, np.inf)
    return np.asarray(ndimage.distance_transform_edt(~edge, sampling=spacing))


def _shift(labels: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    out = np.zeros_like(labels)
    src, dst = [], []
    for n, d in zip(labels.shape, offset, strict=True):
        d = int(d)
        if abs(d) >= n:
            return out
        src.append(slice(max(0, -d), n - max(0, d)))
        dst.append(slice(max(0, d), n - max(0, -d)))
    out[tuple(dst)] = labels[tuple(src)]
    return out


def _direction(key: str, seed: int, ndim: int, in_plane: bool) -> np.ndarray:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    v = rng.normal(size=ndim)
    if in_plane and ndim == 3:
        v[0] = 0.0
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else np.eye(ndim)[-1]


def _shift_offset(direction: np.ndarray, size_mm: float, spacing: Sequence[float]) -> list[int]:
    return [round(size_mm * float(d) / float(s)) for d, s in zip(direction, spacing, strict=True)]


def perturb_labels(
    labels: np.ndarray,
    perturbation: Perturbation,
    *,
    spacing: Sequence[float],
    class_map: ClassMap | None = None,
    direction: Sequence[float] | None = None,
    organ_sizes: Mapping[int, float] | None = None,
) -> np.ndarray:
    """Apply one segmentation error to a whole label map.

    Args:
        labels: Integer labels ``[y, x]`` or ``[z, y, x]`` (0 = background).
        perturbation: What to do.
        spacing: Millimetres per array axis.
        class_map: Needed for ``swap_lr`` (which classes pair up left/right).
        direction: Unit vector per array axis for ``shift`` (default: along the last axis).
        organ_sizes: label -> size in mL (3D) or cm² (2D) for ``drop_small``;
            measured on ``labels`` when not given.

    Returns:
        The perturbed labels, same shape and dtype.

    Examples:
        >>> lab = np.zeros((1, 9), dtype=np.uint8); lab[0, 3:6] = 1
        >>> perturb_labels(lab, Perturbation("dilate", 1.0), spacing=(1.0, 1.0))[0].tolist()
        [0, 0, 1, 1, 1, 1, 1, 0, 0]
        >>> perturb_labels(lab, Perturbation("erode", 1.0), spacing=(1.0, 1.0))[0].tolist()
        [0, 0, 0, 0, 1, 0, 0, 0, 0]
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ShapeError(f"Expected labels [y, x] or [z, y, x], but got shape {arr.shape}.")
    if len(spacing) != arr.ndim:
        raise ShapeError(f"Expected {arr.ndim} spacing values, but got {tuple(spacing)}.")
    kind = PerturbationKind(perturbation.kind)
    k = perturbation.size
    if kind is PerturbationKind.ERODE:
        out = arr.copy()
        if k > 0:
            out[(arr != 0) & (_boundary_distance(arr, spacing) < k)] = 0
        return out
    if kind is PerturbationKind.DILATE:
        return _dilate(arr, spacing, k)
    if kind is PerturbationKind.SHIFT:
        d = np.asarray(direction if direction is not None else np.eye(arr.ndim)[-1], dtype=float)
        return _shift(arr, _shift_offset(d, k, spacing))
    if kind is PerturbationKind.DROP_SMALL:
        sizes = organ_sizes if organ_sizes is not None else _organ_sizes(arr, spacing)
        drop = [lab for lab, s in sizes.items() if lab != 0 and s < k]
        out = arr.copy()
        if drop:
            out[np.isin(arr, drop)] = 0
        return out
    if class_map is None:
        raise DataFormatError(
            "Perturbation 'swap_lr' needs class_map to know which labels pair up."
        )
    lut = _lr_lut(class_map, int(arr.max(initial=0)))
    return lut[arr].astype(arr.dtype, copy=False)


def _dilate(arr: np.ndarray, spacing: Sequence[float], k: float) -> np.ndarray:
    out = arr.copy()
    background = arr == 0
    if k <= 0 or background.all() or not background.any():
        return out
    dist, idx = ndimage.distance_transform_edt(background, sampling=spacing, return_indices=True)
    grow = background & (dist <= k)
    out[grow] = arr[tuple(i[grow] for i in idx)]
    return out


def _organ_sizes(arr: np.ndarray, spacing: Sequence[float]) -> dict[int, float]:
    counts = np.asarray(label_histogram(arr))
    unit = float(np.prod(spacing)) / (1000.0 if arr.ndim == 3 else 100.0)  # mL or cm²
    return {int(lab): float(c) * unit for lab, c in enumerate(counts) if c}


# --------------------------------------------------------------------------- the audit


@dataclass(frozen=True)
class AuditRow(JsonRecord):
    """The effect of one perturbation on one lesion.

    Attributes:
        lesion_id: The lesion.
        perturbation: Its name, e.g. ``"erode 2 mm"``.
        kind: The perturbation kind.
        size: The perturbation size.
        organ: Host organ before the perturbation (``None`` when unmatched).
        outcome: Outcome before.
        new_organ: Host organ after.
        new_outcome: Outcome after.
        host_changed: Whether the host organ changed.
        outcome_changed: Whether the outcome changed.
        seed_changed: Whether the seed sentence changed.
    """

    lesion_id: str
    perturbation: str
    kind: str
    size: float
    organ: str | None
    outcome: str
    new_organ: str | None
    new_outcome: str
    host_changed: bool
    outcome_changed: bool
    seed_changed: bool


#: First characters that make a spreadsheet read a cell as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that could start a formula gets a ``'``.

    Numbers stay numbers (``-3.5`` is a value, not a formula); only text is guarded.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@dataclass
class AuditResult:
    """All rows of an audit, with aggregation, tables and a plot.

    Attributes:
        rows: One row per (lesion, perturbation).
        perturbations: The perturbations applied, in order.
        seconds: Wall time of the audit.
        num_lesions: Lesions audited.
    """

    rows: list[AuditRow]
    perturbations: tuple[Perturbation, ...]
    seconds: float = 0.0
    num_lesions: int = 0

    @property
    def lesions_per_second(self) -> float:
        """Audit throughput."""
        return self.num_lesions / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> list[dict[str, Any]]:
        """Change rates per (original organ, perturbation), plus an ``"all"`` organ row.

        Returns:
            Dicts with ``organ``, ``perturbation``, ``kind``, ``size``, ``n`` and the
            rates ``host_changed``, ``outcome_changed``, ``seed_changed``.
        """
        groups: dict[tuple[str, str], list[AuditRow]] = defaultdict(list)
        for r in self.rows:
            groups[(r.organ or "(unmatched)", r.perturbation)].append(r)
            groups[("all", r.perturbation)].append(r)
        order = {p.name: i for i, p in enumerate(self.perturbations)}
        out = []
        for (organ, pname), rows in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "all", kv[0][0], order.get(kv[0][1], 0))
        ):
            n = len(rows)
            out.append(
                {
                    "organ": organ,
                    "perturbation": pname,
                    "kind": rows[0].kind,
                    "size": rows[0].size,
                    "n": n,
                    "host_changed": sum(r.host_changed for r in rows) / n,
                    "outcome_changed": sum(r.outcome_changed for r in rows) / n,
                    "seed_changed": sum(r.seed_changed for r in rows) / n,
                }
            )
        return out

    def trust(self, tolerance: float = 0.05) -> list[dict[str, Any]]:
        """For each organ and size-graded kind, the smallest size whose host-change rate exceeds ``tolerance``.

        Args:
            tolerance: The acceptable share of lesions whose host organ changes.

        Returns:
            Dicts with ``organ``, ``kind``, ``breaks_at`` (size, or ``None`` if it never
            exceeds the tolerance in the audited range) and ``trusted`` (the host is
            stable at the smallest audited size of every kind).
        """
        summary = [s for s in self.summary() if s["organ"] != "all"]
        by: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        for s in summary:
            by[s["organ"]][s["kind"]].append((s["size"], s["host_changed"]))
        out = []
        for organ in sorted(by):
            stable_everywhere = True
            for kind, points in sorted(by[organ].items()):
                points.sort()
                breaks = next((size for size, rate in points if rate > tolerance), None)
                if points and points[0][1] > tolerance:
                    stable_everywhere = False
                out.append({"organ": organ, "kind": kind, "breaks_at": breaks})
            for row in out:
                if row["organ"] == organ:
                    row["trusted"] = stable_everywhere
        return out

    def to_markdown(self, tolerance: float = 0.05) -> str:
        """The summary and the trust table as Markdown."""
        lines = [
            f"Audited {self.num_lesions} lesions under {len(self.perturbations)} perturbations "
            f"({self.lesions_per_second:.1f} lesions/s).",
            "",
            "| organ | perturbation | n | host changed | outcome changed | seed changed |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for s in self.summary():
            lines.append(
                f"| {s['organ']} | {s['perturbation']} | {s['n']} | {s['host_changed']:.1%} | "
                f"{s['outcome_changed']:.1%} | {s['seed_changed']:.1%} |"
            )
        lines += [
            "",
            f"Host organ stability (tolerance {tolerance:.0%} of lesions):",
            "",
            "| organ | kind | host changes from size | trusted |",
            "|---|---|---|---|",
        ]
        for t in self.trust(tolerance):
            breaks = "never (in audited range)" if t["breaks_at"] is None else f"{t['breaks_at']:g}"
            lines.append(
                f"| {t['organ']} | {t['kind']} | {breaks} | {'yes' if t['trusted'] else 'no'} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self, tolerance: float = 0.05) -> dict[str, Any]:
        """Counts, timing, perturbations, summary, trust table and every row, as JSON types."""
        return {
            "num_lesions": self.num_lesions,
            "seconds": self.seconds,
            "lesions_per_second": self.lesions_per_second,
            "perturbations": [p.to_dict() for p in self.perturbations],
            "summary": self.summary(),
            "trust": self.trust(tolerance),
            "rows": [r.to_dict() for r in self.rows],
        }

    def write(self, out: str | os.PathLike[str], tolerance: float = 0.05) -> dict[str, Path]:
        """Write ``audit.json``, ``audit.csv`` (the rows), ``audit.md`` and ``audit.png`` to ``out``.

        Args:
            out: Output folder (created if needed).
            tolerance: Share of lesions whose host may change before an organ is untrusted.

        Returns:
            Kind (``json``, ``csv``, ``md``, ``png``) -> the file written.
        """
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {kind: folder / f"audit.{kind}" for kind in ("json", "csv", "md", "png")}
        paths["json"].write_text(json.dumps(self.to_dict(tolerance), indent=1))
        rows = [r.to_dict() for r in self.rows]
        with paths["csv"].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["lesion_id"])
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        paths["md"].write_text(self.to_markdown(tolerance))
        self.plot(str(paths["png"]))
        return paths

    def plot(self, path: str) -> str:
        """Plot change rates against perturbation size, one panel per kind; returns ``path``."""
        from medcurric._optional import require

        require("matplotlib", feature="AuditResult.plot")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        summary = self.summary()
        kinds = [
            k
            for k in ("erode", "dilate", "shift", "drop_small")
            if any(s["kind"] == k for s in summary)
        ]
        organs = sorted({s["organ"] for s in summary})
        fig, axes = plt.subplots(
            1,
            max(1, len(kinds)),
            figsize=(4.2 * max(1, len(kinds)), 3.8),
            squeeze=False,
            sharey=True,
        )
        for ax, kind in zip(axes[0], kinds, strict=False):
            for organ in organs:
                pts = sorted(
                    (s["size"], s["host_changed"])
                    for s in summary
                    if s["kind"] == kind and s["organ"] == organ
                )
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                style = {"color": "black", "linewidth": 2.5} if organ == "all" else {"alpha": 0.75}
                ax.plot(xs, ys, marker="o", label=organ, **style)
            ax.set_title(f"{kind}")
            ax.set_xlabel(
                "size (mm)" if kind != "drop_small" else "organ size threshold (mL / cm²)"
            )
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("share of lesions whose host changes")
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            legend = fig.legend(handles, labels, loc="center right", fontsize=8)
            for text in legend.get_texts():  # organ names: drawn literally, never as mathtext
                text.set_parse_math(False)
                text.set_usetex(False)
            fig.subplots_adjust(right=0.82)
        fig.suptitle("Sensitivity of the host organ to segmentation errors")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> list[str]:
    """Plain-text table lines; the ``numeric`` columns are right-aligned, the others left-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _breaks_text(kind: str, breaks: float | None) -> str:
    if breaks is None:
        return "never"
    if kind == PerturbationKind.SWAP_LR:
        return "breaks"
    return Perturbation(kind, breaks).name.removeprefix(f"{kind} ")


def format_audit(result: AuditResult, tolerance: float = 0.05) -> str:
    """The audit as two plain-text tables for a terminal: trust per organ, change rates per perturbation.

    The first table has one row per host organ: its lesion count, whether it is
    trusted (at most ``tolerance`` of its lesions change host at the smallest audited
    size of every kind) and, per kind, the smallest size at which more than
    ``tolerance`` change host ("never" within the audited range). The second has one
    row per perturbation over all lesions.

    Args:
        result: The audit.
        tolerance: Share of lesions whose host may change before an organ is untrusted.

    Returns:
        The text, ending in a newline.

    Examples:
        >>> print(format_audit(AuditResult(rows=[], perturbations=())), end="")
        Audited 0 lesions under 0 perturbations.
        No lesions to report.
    """
    head = f"Audited {result.num_lesions} lesions under {len(result.perturbations)} perturbations."
    summary = result.summary()
    if not summary:
        return head + "\nNo lesions to report.\n"
    trust = result.trust(tolerance)
    kinds = [k.value for k in PerturbationKind if any(t["kind"] == k for t in trust)]
    lesions: dict[str, int] = {}
    for s in summary:
        lesions[s["organ"]] = max(lesions.get(s["organ"], 0), int(s["n"]))
    organs: dict[str, dict[str, Any]] = defaultdict(dict)
    for t in trust:
        organs[t["organ"]][t["kind"]] = t["breaks_at"]
        organs[t["organ"]]["trusted"] = t["trusted"]
    organ_rows = [
        [organ, str(lesions.get(organ, 0)), "yes" if cells["trusted"] else "no",
         *(_breaks_text(k, cells[k]) if k in cells else "\u2014" for k in kinds)]
        for organ, cells in organs.items()
    ]
    perturbation_rows = [
        [s["perturbation"], str(s["n"]), f"{s['host_changed']:.0%}", f"{s['outcome_changed']:.0%}",
         f"{s['seed_changed']:.0%}"]
        for s in summary
        if s["organ"] == "all"
    ]
    lines = [
        head,
        "",
        f"Trust per host organ: trusted when at most {tolerance:.0%} of its lesions change host at the",
        "smallest audited size of every kind. Each kind's column: the smallest size at which more",
        "lesions change host ('never' within the audited range; swap_lr 'breaks' or 'never').",
        "",
        *_text_table(["organ", "lesions", "trusted", *kinds], organ_rows, numeric=[1]),
        "",
        "Change per perturbation (all lesions): share whose host organ, outcome or seed sentence changes.",
        "",
        *_text_table(["perturbation", "lesions", "host", "outcome", "seed"], perturbation_rows, numeric=[1, 2, 3, 4]),
    ]
    return "\n".join(lines) + "\n"


class _ExtentTable:
    """Organ extents as arrays, so each perturbation derives all of them in a few array ops."""

    def __init__(self, extents: Extents) -> None:
        self.labels = np.array(sorted(extents), dtype=np.int64)
        self.lo = np.array([extents[int(lab)][0] for lab in self.labels], dtype=np.float64).reshape(
            -1, 3
        )
        self.hi = np.array([extents[int(lab)][1] for lab in self.labels], dtype=np.float64).reshape(
            -1, 3
        )

    def perturbed(
        self,
        p: Perturbation,
        *,
        shift_world: np.ndarray | None,
        dropped: set[int],
        lut: np.ndarray | None,
    ) -> OrganExtents:
        """Organ extents (RAS+ mm) after ``p``, derived without rescanning the map."""
        labels, lo, hi = self.labels, self.lo, self.hi
        keep = np.ones(len(labels), dtype=bool)
        if p.kind == "erode":
            lo, hi = lo + p.size, hi - p.size
            keep = np.all(lo <= hi, axis=1)
        elif p.kind == "dilate":
            lo, hi = lo - p.size, hi + p.size
        elif p.kind == "shift" and shift_world is not None:
            lo, hi = lo + shift_world, hi + shift_world
        elif p.kind == "drop_small" and dropped:
            keep = ~np.isin(labels, list(dropped))
        elif p.kind == "swap_lr" and lut is not None:
            labels = np.where(labels < len(lut), lut[np.minimum(labels, len(lut) - 1)], labels)
        return OrganExtents.from_arrays(labels[keep].tolist(), lo[keep], hi[keep])


@dataclass(frozen=True)
class _SentenceContext:
    """What the seed sentence of one lesion depends on besides its match and map."""

    builder: SeedBuilder
    record: LesionRecord
    box: np.ndarray
    spacing: Sequence[float]
    affine: np.ndarray
    class_map: ClassMap
    slice_index: int | None

    def sentence(self, match: OrganMatch, labels: np.ndarray, extents: Extents) -> str:
        loc = describe_location(
            self.box,
            labels,
            match,
            spacing=self.spacing,
            affine=self.affine,
            class_map=self.class_map,
            slice_index=self.slice_index,
            extents=extents,
        )
        return self.builder.build(self.record, match, loc).text


def _canonical_affine(spacing: Sequence[float]) -> np.ndarray:
    sp = list(spacing)[::-1] + [1.0] * (3 - len(spacing))  # (sx, sy, sz)
    return np.diag([-sp[0], -sp[1], sp[2], 1.0])


def _crop_affine(affine: np.ndarray, crop: tuple[slice, ...]) -> np.ndarray:
    starts = [s.start for s in crop][::-1]  # (x, y[, z])
    offset = np.eye(4)
    offset[: len(starts), 3] = starts
    return affine @ offset


def _world_shift(affine: np.ndarray, offset_axes: Sequence[int]) -> np.ndarray:
    xyz = np.zeros(3)
    xyz[: len(offset_axes)] = list(offset_axes)[::-1]  # array axes (z, y, x) -> (x, y, z)
    return np.asarray(affine[:3, :3] @ xyz, dtype=np.float64)


def _crop_bounds(
    box: np.ndarray, shape: Sequence[int], margin: Sequence[int], slice_index: int | None
) -> tuple[slice, ...]:
    ndim = len(shape)
    if len(box) == 6:  # (x1, y1, z1, x2, y2, z2) -> per array axis (z, y, x)
        lo = [box[2], box[1], box[0]]
        hi = [box[5], box[4], box[3]]
    elif ndim == 3:
        z = int(slice_index if slice_index is not None else 0)
        lo = [z, box[1], box[0]]
        hi = [z + 1, box[3], box[2]]
    else:
        lo = [box[1], box[0]]
        hi = [box[3], box[2]]
    return tuple(
        slice(max(0, math.floor(a) - m), min(n, math.ceil(b) + m))
        for a, b, m, n in zip(lo, hi, margin, shape, strict=True)
    )


def _box_in_crop(box: np.ndarray, crop: tuple[slice, ...]) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).copy()
    starts = [s.start for s in crop]
    if len(b) == 6:
        z0, y0, x0 = starts
        b -= np.array([x0, y0, z0, x0, y0, z0], dtype=np.float64)
    else:
        y0, x0 = starts[-2:]
        b -= np.array([x0, y0, x0, y0], dtype=np.float64)
    return b


def audit_matching(
    cases: Iterable[tuple[LabelMap, Sequence[LesionRecord]]],
    matcher: BoxOrganMatcher,
    perturbations: Sequence[Perturbation] = DEFAULT_PERTURBATIONS,
    *,
    seed: int = 0,
    builder: SeedBuilder | None = None,
    progress: bool | None = None,
) -> AuditResult:
    """Perturb organ masks and measure how often matches and seeds change.

    Args:
        cases: ``(label_map, lesions)`` pairs (a generator is fine: one map is held at a
            time); each lesion's box is matched on its
            case's map (3D boxes, or 2D boxes on ``slice_index`` of a volume, or 2D
            boxes on a 2D map).
        matcher: The matcher whose decisions are audited.
        perturbations: What to apply (see :data:`DEFAULT_PERTURBATIONS`).
        seed: Seed for the shift directions; the audit is deterministic given it.
        builder: The :class:`~medcurric.seeds.SeedBuilder` whose sentences are compared
            (default ``SeedBuilder()``). Each sentence is built from the perturbed match
            and :func:`~medcurric.anatomy.describe_location` on the perturbed crop, with
            organ extents derived from the whole map's extents (shrunk, grown, shifted,
            dropped or swapped like the masks), so "upper/lower, anterior/posterior"
            phrases react to the perturbation as they would on a rescanned map.
        progress: Show a progress bar (``None``: only on a terminal).

    Returns:
        An :class:`AuditResult`.
    """
    import time

    from tqdm.auto import tqdm

    perts = tuple(perturbations)
    if matcher.criterion.value == "bbox_iou":
        raise InvalidOptionError(
            "The audit matches on crops around each lesion, which would clip the organs' bounding "
            "boxes that criterion='bbox_iou' scores against; audit with criterion='ioa' or 'iou'."
        )
    if matcher.criterion.value == "iou":
        warn_ignored(
            "criterion='iou'",
            "the audit matches on crops around each lesion, so an organ's IoU uses its area inside "
            "the crop (an upper bound); audit with criterion='ioa' for exact scores.",
        )
    if not perts:
        raise DataFormatError("Expected at least one perturbation, but got none.")
    builder = builder if builder is not None else SeedBuilder()
    sized = [p.size for p in perts if p.kind in ("erode", "dilate", "shift")]
    k_max = max(sized, default=0.0)
    reach = k_max + (matcher.adjacent_mm or 0.0) + 1.0
    rows: list[AuditRow] = []
    n_lesions = 0
    start = time.perf_counter()
    # cases may be a generator that reads one label map at a time: never hold them all
    total = sum(len(lesions) for _, lesions in cases) if isinstance(cases, Sequence) else None
    bar = tqdm(
        total=total, desc="audit", unit="lesion", disable=None if progress is None else not progress
    )
    for label_map, lesions in cases:
        if not isinstance(label_map, LabelMap):
            raise DataFormatError(
                f"Expected (LabelMap, lesions) pairs, but got {type(label_map).__name__}."
            )
        arr = label_map.array
        spacing = label_map.spacing or (1.0,) * arr.ndim
        cm = label_map.class_map
        sizes = _organ_sizes(arr, spacing)
        lr_lut = (
            _lr_lut(cm, int(arr.max(initial=0)))
            if any(p.kind == "swap_lr" for p in perts)
            else None
        )
        margin = [math.ceil(reach / s) for s in spacing]
        affine = label_map.affine if label_map.affine is not None else _canonical_affine(spacing)
        extents = organ_extents(arr, affine)
        table = _ExtentTable(extents)
        for rec in lesions:
            box = np.asarray(rec.box, dtype=np.float64)
            slice_index = rec.slice_index if (len(box) == 4 and arr.ndim == 3) else None
            crop = _crop_bounds(box, arr.shape, margin, slice_index)
            sub = arr[crop]
            local_box = _box_in_crop(box, crop)
            local_slice = (slice_index - crop[0].start) if slice_index is not None else None
            in_plane = slice_index is not None or arr.ndim == 2
            direction = _direction(rec.id, seed, arr.ndim, in_plane)
            bdist = None
            dil: dict[float, np.ndarray] = {}
            maps = [sub]
            for p in perts:
                if p.kind == "erode":
                    if bdist is None:
                        bdist = _boundary_distance(sub, spacing)
                    new = sub.copy()
                    if p.size > 0:
                        new[(sub != 0) & (bdist < p.size)] = 0
                elif p.kind == "dilate":
                    if p.size not in dil:
                        dil[p.size] = _dilate(sub, spacing, p.size)
                    new = dil[p.size]
                elif p.kind == "shift":
                    new = _shift(sub, _shift_offset(direction, p.size, spacing))
                elif p.kind == "drop_small":
                    new = perturb_labels(sub, p, spacing=spacing, organ_sizes=sizes)
                else:
                    assert lr_lut is not None
                    new = lr_lut[np.minimum(sub, len(lr_lut) - 1)].astype(sub.dtype, copy=False)
                maps.append(new)
            base, *matches = _match_tiled(
                matcher, local_box, maps, cm, spacing, local_slice, rec.id, margin[-1]
            )
            crop_affine = _crop_affine(affine, crop)

            ctx = _SentenceContext(builder, rec, local_box, spacing, crop_affine, cm, local_slice)

            base_text = ctx.sentence(base, sub, extents)
            for p, m, new in zip(perts, matches, maps[1:], strict=True):
                dropped = (
                    {lab for lab, v in sizes.items() if v < p.size}
                    if p.kind == "drop_small"
                    else set()
                )
                shift_world = (
                    _world_shift(affine, _shift_offset(direction, p.size, spacing))
                    if p.kind == "shift"
                    else None
                )
                ext_p = table.perturbed(p, shift_world=shift_world, dropped=dropped, lut=lr_lut)
                rows.append(
                    AuditRow(
                        lesion_id=rec.id,
                        perturbation=p.name,
                        kind=p.kind,
                        size=p.size,
                        organ=base.organ,
                        outcome=base.outcome.value,
                        new_organ=m.organ,
                        new_outcome=m.outcome.value,
                        host_changed=m.organ != base.organ,
                        outcome_changed=m.outcome != base.outcome,
                        seed_changed=ctx.sentence(m, new, ext_p) != base_text,
                    )
                )
            n_lesions += 1
            bar.update(1)
    bar.close()
    return AuditResult(rows, perts, seconds=time.perf_counter() - start, num_lesions=n_lesions)


def _match_tiled(
    matcher: BoxOrganMatcher,
    box: np.ndarray,
    maps: Sequence[np.ndarray],
    class_map: ClassMap,
    spacing: Sequence[float],
    slice_index: int | None,
    lesion_id: str,
    gap: int,
) -> list[OrganMatch]:
    """Match one box on several versions of a crop with a single matcher call.

    The crops are laid side by side along x, separated by ``gap`` background
    columns (at least the matcher's adjacency reach), and the box is repeated
    once per crop, so each copy sees only its own crop.
    """
    width = maps[0].shape[-1]
    spacer = np.zeros((*maps[0].shape[:-1], gap), dtype=maps[0].dtype)
    tiles: list[np.ndarray] = []
    for i, m in enumerate(maps):
        if i:
            tiles.append(spacer)
        tiles.append(m)
    tiled = np.concatenate(tiles, axis=-1)
    step = width + gap
    boxes = np.repeat(box[None, :], len(maps), axis=0)
    shift = np.arange(len(maps), dtype=np.float64) * step
    x_cols = [0, 3] if box.shape[0] == 6 else [0, 2]
    boxes[:, x_cols] += shift[:, None]
    lm = LabelMap(array=tiled, class_map=class_map, spacing=tuple(spacing))
    return matcher.match(boxes, lm, slice_index=slice_index, ids=[lesion_id] * len(maps), clip=True)
