"""``medcurric seeds``: detections + organ masks -> factual seeds JSONL.

Inputs: a detection file (``--detections`` with ``--format deeplesion|coco|csv``)
and a folder of organ masks (``--masks``), or ``--phantom`` for a self-contained
run on synthetic phantoms. Output: one :class:`~medcurric.seeds.FactualSeed` per
line, appended to ``--out`` (a rerun skips ids already written; a killed run
loses no written line). A record that fails goes to ``<out stem>.rejects.jsonl``
with its reason and the run continues. A summary table (matched / adjacent /
unmatched per organ, over the whole output file) is printed at the end.

Which mask belongs to which record is :func:`medcurric.io.find_cases`'s rule; the
run itself is :func:`medcurric.seeds.write_seeds`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcurric.anatomy import BoxOrganMatcher
from medcurric.cli._output import ensure_writable
from medcurric.errors import DataFormatError, MedcurricWarning
from medcurric.io import Case, RecordError, detect_detection_format, find_cases, read_detections
from medcurric.seeds import SeedBuilder, rejects_path, write_seeds
from medcurric.vocabulary import ClassMap

__all__ = [
    "LEVEL_HELP",
    "add_arguments",
    "add_dataset_arguments",
    "add_engine_arguments",
    "class_map_option",
    "dataset_cases",
    "main",
    "ray_address",
    "run",
]


#: ``--level`` of ``match`` and ``seeds``: one default, the library's (``BoxOrganMatcher``).
LEVEL_HELP = (
    "host organs: organ (the class map's own structures: a lobe, a vertebra; what the "
    "library's BoxOrganMatcher does) or group (lobes -> lung, vertebrae -> spine: coarser "
    "hosts, the part kept in the location words)"
)


def add_dataset_arguments(group: Any) -> None:
    """Declare the dataset inputs, shared by ``medcurric seeds`` and ``medcurric audit``.

    ``--detections``, ``--format``, ``--masks``, ``--class-map`` and ``--slice-order``
    (see :func:`medcurric.io.find_cases` and :func:`medcurric.io.load_case`).
    """
    group.add_argument(
        "--detections",
        type=Path,
        metavar="FILE",
        help="DL_info.csv, COCO JSON or CSV of lesion boxes",
    )
    group.add_argument(
        "--format",
        default="auto",
        choices=("auto", "deeplesion", "coco", "csv"),
        help="detection format; auto tells it from the file (JSON: coco; a CSV with "
        "File_name and Bounding_boxes columns: deeplesion; another CSV: csv)",
    )
    group.add_argument("--masks", type=Path, metavar="DIR", help="folder of per-case organ masks")
    group.add_argument(
        "--class-map",
        default="auto",
        metavar="auto|totalsegmentator|FILE.json",
        help="label names: from the files (auto), TotalSegmentator's total task, or a JSON class map",
    )
    group.add_argument(
        "--slice-order",
        default="canonical",
        choices=("canonical", "stored"),
        help="coco/csv slice_index: canonical z (default) or along the file's stored slice axis",
    )


def add_engine_arguments(group: Any) -> None:
    """Declare ``--engine`` and ``--ray-address``, shared by ``seeds`` and ``generate``."""
    group.add_argument(
        "--engine",
        default="local",
        choices=("local", "ray"),
        help="local: this machine (default); ray: actors on a Ray cluster, this process "
        "writing the files (pip install 'medcurric[ray]')",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="auto|HOST:PORT|ray://HOST:PORT",
        help="with --engine ray: the cluster to join (auto: the one `ray start` made on this "
        "machine); unset starts a local cluster",
    )


def ray_address(args: argparse.Namespace) -> str | None:
    """``--ray-address``, with a warning when ``--engine local`` ignores it."""
    if args.engine != "ray" and args.ray_address is not None:
        warnings.warn(
            f"--ray-address {args.ray_address} is ignored with --engine {args.engine}; "
            "pass --engine ray to run on that cluster.",
            MedcurricWarning,
            stacklevel=2,
        )
    return args.ray_address if args.engine == "ray" else None


def class_map_option(spec: str) -> ClassMap | None:
    """``--class-map``: ``auto`` -> ``None`` (names from the files), ``totalsegmentator``, or a JSON file."""
    if spec == "auto":
        return None
    if spec == "totalsegmentator":
        return ClassMap.totalsegmentator()
    return ClassMap.from_json(spec)


def dataset_cases(
    args: argparse.Namespace, rejects: list[RecordError] | None = None
) -> list[Case]:
    """The cases named by the dataset options, with an error naming a missing one.

    With ``rejects``, detection records that cannot be read go there instead of raising.
    """
    missing = [
        o
        for o, v in (("--detections FILE", args.detections), ("--masks DIR", args.masks))
        if v is None
    ]
    if missing:
        raise DataFormatError(
            f"Expected --detections FILE and --masks DIR, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing; or pass --phantom for the "
            "synthetic phantom."
        )
    fmt = args.format
    if fmt == "auto":
        fmt = detect_detection_format(args.detections).value
        print(f"note: reading '{args.detections}' as --format {fmt} (detected from the file)",
              file=sys.stderr)
    return find_cases(
        read_detections(args.detections, fmt, rejects=rejects),
        args.masks,
        fmt=fmt,
        slice_order=args.slice_order,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``seeds`` options to ``parser``."""
    src = parser.add_argument_group("inputs")
    add_dataset_arguments(src)
    src.add_argument(
        "--phantom", action="store_true", help="self-contained run on synthetic phantoms"
    )
    src.add_argument(
        "--phantom-cases", type=int, default=3, help="number of phantoms (phantom seeds 0..N-1)"
    )
    rule = parser.add_argument_group("matching and text")
    rule.add_argument(
        "--criterion",
        default="ioa",
        help="overlap score: ioa (share of the box inside the organ) or iou",
    )
    rule.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="score needed for 'inside' (default: 0.5 for ioa, 0 for iou)",
    )
    rule.add_argument(
        "--adjacent-mm",
        type=float,
        default=5.0,
        help="largest box-organ distance in mm for 'adjacent'; negative disables it",
    )
    rule.add_argument("--level", default="organ", help=LEVEL_HELP)
    rule.add_argument("--templates", type=Path, metavar="FILE.json", help="seed sentence templates")
    rule.add_argument("--seed", type=int, default=0, help="seed of the template choice")
    rule.add_argument(
        "--slices-only",
        action="store_true",
        help="read only the slab of slices holding the key slices (no upper/lower wording)",
    )
    rule.add_argument("--clip", action="store_true", help="clip boxes that leave the image")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, required=True, metavar="FILE.jsonl", help="seeds JSONL (appended)"
    )
    out.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, or actors with --engine ray (default 1)",
    )
    add_engine_arguments(out)


def run(args: argparse.Namespace) -> int:
    """Run ``medcurric seeds``; return the exit status."""
    # options first, so a typo fails before any work
    matcher = BoxOrganMatcher(
        criterion=args.criterion,
        min_score=args.min_score,
        adjacent_mm=None
        if args.adjacent_mm is not None and args.adjacent_mm < 0
        else args.adjacent_mm,
        level=args.level,
    )
    builder = SeedBuilder(
        templates=None if args.templates is None else str(args.templates), seed=args.seed
    )
    class_map = class_map_option(str(args.class_map))
    if args.workers < 1:
        raise DataFormatError(f"Expected --workers >= 1, but got {args.workers}.")
    address = ray_address(args)
    runner = None
    if args.engine == "ray":
        from medcurric.distributed import RaySeedRunner, connect

        connect(address)  # an unreachable cluster fails before any work
        runner = RaySeedRunner(actors=args.workers, address=address)
    ensure_writable(args.out, rejects_path(args.out))
    unreadable: list[RecordError] = []
    if args.phantom:
        from medcurric.testing import phantom_dataset

        cases = phantom_dataset(args.phantom_cases)
    else:
        cases = dataset_cases(args, unreadable)
    result = write_seeds(
        cases,
        args.out,
        matcher=matcher,
        builder=builder,
        class_map=class_map,
        slices_only=args.slices_only,
        clip=args.clip,
        workers=args.workers if runner is None else 1,
        unreadable=unreadable,
        runner=runner,
    )
    print(result.table())
    print(result.line(), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run as ``python -m medcurric.cli.seeds`` (same as ``medcurric seeds``)."""
    parser = argparse.ArgumentParser(prog="medcurric seeds", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
