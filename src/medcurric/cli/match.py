"""``medcurric match``: match lesion boxes to host organs and print a table.

Inputs are either the built-in synthetic phantom (``--phantom``, the default
when nothing else is given) or a label map ``--labels PATH`` with boxes
``--boxes FILE.csv``. The label map is anything :func:`medcurric.io.read_label_map`
reads: a NIfTI file, a TotalSegmentator folder of per-class NIfTI files, a DICOM
SEG, a folder of PNG masks, or a numpy ``.npy`` array (already ``[z, y, x]`` /
``[y, x]``). Spacing comes from the file; ``--spacing`` gives it for a ``.npy``
(or overrides the file's). Without a known spacing, millimetre options are refused
(``--adjacent-mm``) or left off (the default 'adjacent' rule), never assumed to be 1 mm.

The CSV has a header and one box per row, with columns ``x1,y1,x2,y2`` (2D;
optional ``slice_index`` for boxes on a volume) or ``x1,y1,z1,x2,y2,z2`` (3D), and
an optional ``id`` column.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medcurric._options import warn_ignored
from medcurric.anatomy import BoxOrganMatcher, Criterion, MatchLevel, MatchOutcome, OrganMatch
from medcurric.cli.seeds import LEVEL_HELP
from medcurric.errors import DataFormatError, MissingFileError
from medcurric.io import read_label_map
from medcurric.vocabulary import ClassMap

#: The 'adjacent' distance used when spacing is known and --adjacent-mm is not given.
DEFAULT_ADJACENT_MM = 5.0

__all__ = ["add_arguments", "format_table", "run"]

_COLUMNS_2D = ("x1", "y1", "x2", "y2")
_COLUMNS_3D = ("x1", "y1", "z1", "x2", "y2", "z2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``match`` options to ``parser``."""
    src = parser.add_argument_group("inputs")
    src.add_argument("--phantom", action="store_true",
                     help="match the synthetic phantom's lesions (the default without --labels/--boxes)")
    src.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    src.add_argument("--mode", default="3d", choices=("3d", "2d"),
                     help="phantom boxes: 3D boxes or 2D boxes on each lesion's key slice")
    src.add_argument("--labels", type=Path, metavar="PATH",
                     help="organ label map: NIfTI, TotalSegmentator folder, DICOM SEG, PNG mask folder, "
                          "or .npy ([y, x] or [z, y, x])")
    src.add_argument("--boxes", type=Path, metavar="FILE.csv",
                     help="boxes: header with x1,y1,x2,y2[,slice_index] or x1,y1,z1,x2,y2,z2 (+ optional id)")
    src.add_argument("--class-map", type=Path, metavar="FILE.json",
                     help="class map JSON (default: TotalSegmentator v2 'total')")
    src.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                     help="millimetres per array axis, e.g. --spacing 5 0.8 0.8 for [z, y, x] "
                          "(default: from the file; a .npy has none)")
    src.add_argument("--slice-index", type=int, default=None,
                     help="key slice for 2D boxes on a volume when the CSV has no slice_index column")
    rule = parser.add_argument_group("matching")
    rule.add_argument("--criterion", default="ioa",
                      help="overlap score: ioa (share of the box inside the organ) or iou")
    rule.add_argument("--min-score", type=float, default=None,
                      help="score needed for 'inside' (default 0.5 for ioa, 0 for iou)")
    rule.add_argument("--adjacent-mm", type=float, default=None,
                      help=f"largest box-organ distance for 'adjacent' (default {DEFAULT_ADJACENT_MM:g} when "
                           "the spacing is known, else off); negative disables it")
    rule.add_argument("--level", default="organ", help=LEVEL_HELP)
    rule.add_argument("--ignore", nargs="*", default=[], metavar="NAME", help="class or group names to ignore")
    parser.add_argument("--json", action="store_true", help="print one JSON match per line instead of a table")


def _read_boxes(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise MissingFileError(f"Expected a boxes CSV at '{path}', but it does not exist.")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if all(c in header for c in _COLUMNS_3D):
            cols: tuple[str, ...] = _COLUMNS_3D
        elif all(c in header for c in _COLUMNS_2D):
            cols = _COLUMNS_2D
        else:
            raise DataFormatError(
                f"{path}: expected a header with columns {','.join(_COLUMNS_2D)} (2D) or "
                f"{','.join(_COLUMNS_3D)} (3D), but got {header}."
            )
        ids: list[str] = []
        rows: list[list[float]] = []
        slices: list[int] = []
        for number, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            try:
                values = [float(row[c]) for c in cols]
                if "slice_index" in row and row["slice_index"] != "":
                    slices.append(int(row["slice_index"]))
            except ValueError as exc:
                raise DataFormatError(f"{path}:{number}: expected numbers in {list(cols)} ({exc}).") from exc
            if not all(math.isfinite(v) for v in values):
                raise DataFormatError(f"{path}:{number}: box values must be finite, got {values}.")
            ids.append(row.get("id") or f"box-{len(ids)}")
            rows.append(values)
    if slices and len(slices) != len(rows):
        raise DataFormatError(f"{path}: slice_index must be given on every row or on none.")
    boxes = np.array(rows, dtype=np.float64).reshape(-1, len(cols))
    return ids, boxes, (np.array(slices, dtype=np.int64) if slices else None)


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def format_table(ids: Sequence[str], boxes: np.ndarray, matches: Sequence[OrganMatch]) -> str:
    """Render matches as a fixed-width text table (lesion, box, outcome, organ, score, runner-up)."""
    header = ("lesion", "box", "outcome", "organ", "score", "runner-up")
    lines: list[tuple[str, ...]] = [header]
    for lesion_id, box, m in zip(ids, boxes, matches, strict=True):
        organ = m.organ or "-"
        if m.outcome is MatchOutcome.ADJACENT and m.distance_mm:
            organ += f" ({m.distance_mm:.1f} mm)"
        ru = m.runner_up
        runner = f"{ru.organ} {ru.score(m.criterion):.3f}" if ru is not None else "-"
        lines.append((
            str(lesion_id),
            "(" + ", ".join(_fmt_num(v) for v in box) + ")",
            str(m.outcome),
            organ,
            f"{m.score:.3f}",
            runner,
        ))
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _adjacent_mm(option: float | None, spacing_known: bool) -> float | None:
    """The 'adjacent' distance: refused without spacing when asked for, off by default then."""
    if option is not None and option < 0:
        return None
    if spacing_known:
        return DEFAULT_ADJACENT_MM if option is None else option
    if option is not None:
        raise DataFormatError(
            f"--adjacent-mm {option:g} needs the label map's spacing in millimetres, but it is "
            "unknown (a .npy file has none). Pass --spacing MM [MM ...] per array axis, or a "
            "negative --adjacent-mm to match without the 'adjacent' rule."
        )
    print("note: the label map has no spacing, so the 'adjacent' rule is off "
          "(pass --spacing to use it)", file=sys.stderr)
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``medcurric match``; return the exit status."""
    if (args.labels is None) != (args.boxes is None):
        raise DataFormatError("Pass --labels and --boxes together, or neither (the phantom is used).")
    class_map = ClassMap.from_json(args.class_map) if args.class_map else None
    if args.labels is None:
        from medcurric.testing import make_phantom

        if class_map is not None:
            warn_ignored("--class-map", "the phantom carries its own class map; it names a --labels file's classes.")
        ph = make_phantom(seed=args.seed)
        label_map = ph.label_map()
        records = ph.lesions if args.mode == "3d" else ph.key_slice_lesions
        ids = [r.id for r in records]
        boxes = ph.boxes(args.mode)
        slice_index = None
    else:
        if not args.labels.exists():
            raise MissingFileError(f"Expected a label map at '{args.labels}', but it does not exist.")
        label_map = read_label_map(args.labels, class_map=class_map)
        if args.spacing is not None:
            label_map = label_map.replace(spacing=tuple(args.spacing))
        ids, boxes, slices = _read_boxes(args.boxes)
        slice_index = slices if slices is not None else args.slice_index
    matcher = BoxOrganMatcher(
        criterion=args.criterion,
        min_score=args.min_score,
        adjacent_mm=_adjacent_mm(args.adjacent_mm, label_map.spacing is not None),
        ignore=args.ignore,
        level=args.level,
    )
    if args.labels is None:
        matches = matcher.match_records(records, label_map)
    else:
        matches = matcher.match(boxes, label_map, slice_index=slice_index, ids=ids)
    if args.json:
        for m in matches:
            print(m.to_json())
    else:
        print(format_table(ids, boxes, matches))
        counts = {o.value: sum(m.outcome is o for m in matches) for o in MatchOutcome}
        print(f"\n{len(matches)} boxes: " + ", ".join(f"{n} {k}" for k, n in counts.items())
              + f"  [criterion={Criterion(matcher.criterion).value}, min_score={matcher.min_score}, "
              f"adjacent_mm={matcher.adjacent_mm}, level={MatchLevel(matcher.level).value}]")
    return 0
