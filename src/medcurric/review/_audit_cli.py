"""``medcurric audit``: segmentation-error sensitivity of the organ matching."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medcurric.review.audit import DEFAULT_PERTURBATIONS, Perturbation, audit_matching


def _perturbations(text: str | None) -> tuple[Perturbation, ...]:
    if not text:
        return DEFAULT_PERTURBATIONS
    out = []
    for item in text.split(","):
        kind, _, size = item.strip().partition(":")
        out.append(Perturbation(kind, float(size) if size else 0.0))
    return tuple(out)


def _dataset_cases(args: argparse.Namespace) -> Iterator[tuple[Any, list[Any]]]:
    """Yield ``(label map, lesions)`` per case, reading one mask at a time (the seeds rules)."""
    from medcurric.seeds import _cli as seeds_cli

    records = seeds_cli._read_records(args)
    opts = seeds_cli._Options(
        class_map=args.class_map,
        fmt=args.format,
        slice_order=args.slice_order,
        criterion=args.criterion,
        min_score=args.min_score,
        adjacent_mm=args.adjacent_mm,
    )
    skipped = 0
    for case in seeds_cli._cases(records, args.masks, opts):
        if case.error is not None:
            skipped += len(case.records)
            print(f"skipping {len(case.records)} lesion(s): {case.error}", file=sys.stderr)
            continue
        label_map, recs, _, _ = seeds_cli._load_case(case, opts)
        yield label_map, recs
    if skipped:
        print(f"{skipped} lesion(s) skipped for missing or unreadable masks", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    from medcurric.seeds._cli import add_dataset_arguments

    parser.add_argument(
        "--phantom", action="store_true", help="audit the bundled synthetic CT phantom (default)"
    )
    add_dataset_arguments(parser)  # the same dataset inputs as `medcurric seeds`
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--perturbations",
        default=None,
        help="comma-separated kind:size list, e.g. 'erode:2,dilate:2,shift:4,swap_lr' "
        "(default: erode/dilate/shift 1,2,4,8 mm; drop_small 10,50; swap_lr)",
    )
    parser.add_argument("--criterion", default="ioa", choices=["ioa", "iou"])
    parser.add_argument("--min-score", type=float, default=None)
    parser.add_argument("--adjacent-mm", type=float, default=5.0)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="share of lesions whose host may change before an organ is untrusted",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mode",
        choices=["3d", "2d"],
        default="3d",
        help="phantom: 3D boxes, or 2D boxes on the key slices",
    )


def run(args: argparse.Namespace) -> int:
    """Run the audit and write audit.json, audit.csv, audit.md and audit.png."""
    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.testing import make_phantom

    phantom = make_phantom()
    lesions = phantom.lesions if args.mode == "3d" else phantom.key_slice_lesions
    cases = [(phantom.label_map(), lesions)]
    matcher = BoxOrganMatcher(
        phantom.class_map,
        criterion=args.criterion,
        min_score=args.min_score,
        adjacent_mm=args.adjacent_mm,
    )
    result = audit_matching(cases, matcher, _perturbations(args.perturbations), seed=args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(
        json.dumps(
            {
                "num_lesions": result.num_lesions,
                "seconds": result.seconds,
                "lesions_per_second": result.lesions_per_second,
                "perturbations": [p.to_dict() for p in result.perturbations],
                "summary": result.summary(),
                "trust": result.trust(args.tolerance),
                "rows": [r.to_dict() for r in result.rows],
            },
            indent=1,
        )
    )
    with (out / "audit.csv").open("w", newline="") as fh:
        rows = [r.to_dict() for r in result.rows]
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["lesion_id"])
        writer.writeheader()
        writer.writerows(rows)
    markdown = result.to_markdown(args.tolerance)
    (out / "audit.md").write_text(markdown)
    result.plot(str(out / "audit.png"))
    print(
        markdown.split("Host organ stability")[1]
        if "Host organ stability" in markdown
        else markdown
    )
    print(f"audit written to {out.resolve()}")
    return 0
