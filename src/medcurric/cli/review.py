"""``medcurric review``: write the static HTML review report."""

from __future__ import annotations

import argparse
from pathlib import Path

from medcurric.cli._output import ensure_writable
from medcurric.errors import MissingFileError
from medcurric.review import label_slice_masks, write_review
from medcurric.vocabulary import ClassMap

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("--samples", required=True, type=Path, help="accepted samples JSONL")
    parser.add_argument("--rejects", type=Path, default=None, help="rejected samples JSONL")
    parser.add_argument("--seeds", type=Path, default=None, help="factual seeds JSONL")
    parser.add_argument(
        "--images", type=Path, default=None, help="root the samples' image paths are relative to"
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="root of 2D label slices aligned with the images: for image 'ct/a.png' the file "
        "'ct/a.npy' or 'ct/a.png' holding organ label ids (for the host-organ contour)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--sample-n", type=int, default=50, help="samples drawn for manual marks")
    parser.add_argument("--seed", type=int, default=0, help="seed of that draw")
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=(-160.0, 240.0),
        metavar=("LOW", "HIGH"),
        help="display window (HU) for 16-bit CT images",
    )
    parser.add_argument(
        "--no-overlay", action="store_true", help="leave out the Easy overlay panel"
    )
    parser.add_argument("--title", default="medcurric review", help="title of the report page")


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it went."""
    if not args.samples.is_file():
        raise MissingFileError(
            f"Expected a samples JSONL file at '{args.samples}', but it does not exist."
        )
    ensure_writable(args.out, folder=True)
    masks = label_slice_masks(args.labels) if args.labels is not None else None
    class_map = ClassMap.totalsegmentator()
    report = write_review(
        args.samples,
        args.out,
        rejects=args.rejects,
        seeds=args.seeds,
        image_root=args.images,
        masks=masks,
        overlay=not args.no_overlay,
        class_map=class_map,
        sample_n=args.sample_n,
        seed=args.seed,
        window=tuple(args.window),
        title=args.title,
    )
    print(
        f"{report.num_samples} accepted and {report.num_rejects} rejected samples; "
        f"{len(report.review_ids)} drawn for review"
    )
    print(f"review report written to {report.index.resolve()} (summary: {report.summary.name})")
    return 0
