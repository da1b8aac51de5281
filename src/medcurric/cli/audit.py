"""``medcurric audit``: segmentation-error sensitivity of the organ matching.

Audits the dataset given by ``--detections`` and ``--masks`` (found and read as
``medcurric seeds`` does, one mask at a time), or the bundled synthetic phantom
with ``--phantom`` or when no dataset is given. Writes ``audit.json``,
``audit.csv``, ``audit.md`` and ``audit.png`` (:meth:`medcurric.review.AuditResult.write`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from medcurric._options import warn_ignored
from medcurric.anatomy import BoxOrganMatcher
from medcurric.cli._output import ensure_writable
from medcurric.cli.seeds import add_dataset_arguments, class_map_option, dataset_cases
from medcurric.errors import DataFormatError
from medcurric.io import Case, LabelMap, LesionRecord, load_case
from medcurric.review import DEFAULT_PERTURBATIONS, Perturbation, audit_matching, format_audit
from medcurric.vocabulary import ClassMap

__all__ = ["add_arguments", "parse_perturbations", "run"]


def parse_perturbations(text: str | None) -> tuple[Perturbation, ...]:
    """``--perturbations``: ``'erode:2,dilate:2,swap_lr'`` -> perturbations (default if empty)."""
    if not text:
        return DEFAULT_PERTURBATIONS
    out = []
    for item in text.split(","):
        kind, _, size = item.strip().partition(":")
        out.append(Perturbation(kind, float(size) if size else 0.0))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument(
        "--phantom",
        action="store_true",
        help="audit the bundled synthetic CT phantom (the default without --detections/--masks)",
    )
    add_dataset_arguments(parser)  # the same dataset inputs as `medcurric seeds`
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--perturbations",
        default=None,
        help="comma-separated kind:size list, e.g. 'erode:2,dilate:2,shift:4,swap_lr' "
        "(default: erode/dilate/shift 1,2,4,8 mm; drop_small 10,50; swap_lr)",
    )
    parser.add_argument(
        "--criterion",
        default="ioa",
        choices=["ioa", "iou"],
        help="overlap score: ioa (share of the box inside the organ) or iou",
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="score needed for 'inside' (default: 0.5 for ioa, 0 for iou)",
    )
    parser.add_argument(
        "--adjacent-mm",
        type=float,
        default=5.0,
        help="largest box-organ distance in mm for 'adjacent'; negative disables it",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="share of lesions whose host may change before an organ is untrusted",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the shift directions (the audit is deterministic)"
    )
    parser.add_argument(
        "--mode",
        choices=["3d", "2d"],
        default="3d",
        help="phantom: 3D boxes, or 2D boxes on the key slices",
    )


def _read(
    cases: list[Case], class_map: ClassMap | None
) -> Iterator[tuple[LabelMap, list[LesionRecord]]]:
    """``(label map, lesions)`` per case, one mask read at a time; cases without a mask are skipped."""
    skipped = 0
    for case in cases:
        if case.error is not None:
            skipped += len(case.records)
            print(f"skipping {len(case.records)} lesion(s): {case.error}", file=sys.stderr)
            continue
        loaded = load_case(case, class_map=class_map)
        yield loaded.label_map, loaded.records
    if skipped:
        print(f"{skipped} lesion(s) skipped for missing or unreadable masks", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the audit and write audit.json, audit.csv, audit.md and audit.png."""
    dataset_given = args.detections is not None or args.masks is not None
    if args.phantom and dataset_given:
        raise DataFormatError(
            "Expected either --phantom or a dataset (--detections FILE --masks DIR), but got both."
        )
    matcher = BoxOrganMatcher(
        criterion=args.criterion,
        min_score=args.min_score,
        adjacent_mm=None
        if args.adjacent_mm is not None and args.adjacent_mm < 0
        else args.adjacent_mm,
    )
    perturbations = parse_perturbations(args.perturbations)
    ensure_writable(args.out, folder=True)
    cases: Iterable[tuple[LabelMap, list[LesionRecord]]]
    if dataset_given:
        cases = _read(dataset_cases(args), class_map_option(str(args.class_map)))
    else:
        from medcurric.testing import make_phantom

        if str(args.class_map) != "auto":
            warn_ignored(
                "--class-map", "the phantom carries its own class map; it names --masks files."
            )
        phantom = make_phantom()
        lesions = phantom.lesions if args.mode == "3d" else phantom.key_slice_lesions
        cases = [(phantom.label_map(), list(lesions))]
    result = audit_matching(cases, matcher, perturbations, seed=args.seed)
    result.write(args.out, args.tolerance)
    print(format_audit(result, args.tolerance))
    print(f"audit written to {Path(args.out).resolve()}")
    return 0
