"""``medcurric export``: accepted samples JSONL -> LLaVA / ShareGPT JSON, Parquet, ``datasets`` per stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from medcurric.cli._output import ensure_writable
from medcurric.errors import MissingFileError
from medcurric.export import ExportFormat, ImageMode, export_samples
from medcurric.stage import Stage

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("samples", type=Path, help="samples JSONL as `medcurric generate` writes it")
    parser.add_argument("--out", required=True, type=Path, help="export folder (created)")
    parser.add_argument(
        "--images", type=Path, default=None, help="root the samples' image paths are relative to"
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        default=[f.value for f in ExportFormat],
        choices=[f.value for f in ExportFormat],
        help="formats to write: LLaVA JSON, ShareGPT JSON (LLaMA-Factory, ms-swift), Parquet, "
        "a datasets DatasetDict",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        default=[s.value for s in Stage],
        choices=[s.value for s in Stage],
        help="stages to export, one file (or split) each",
    )
    parser.add_argument(
        "--image-mode",
        default=ImageMode.REFERENCE.value,
        choices=[m.value for m in ImageMode],
        help="Parquet/datasets images: paths of PNG files written next to the export, or "
        "embedded PNG bytes (the JSON formats always reference files)",
    )
    parser.add_argument(
        "--all-samples-every-stage",
        action="store_true",
        help="render every sample for every stage instead of each stage's own samples",
    )


def run(args: argparse.Namespace) -> int:
    """Write the export and print what went where."""
    if not args.samples.is_file():
        raise MissingFileError(f"Expected a samples JSONL file at '{args.samples}', but it does not exist.")
    ensure_writable(args.out, folder=True)
    summary = export_samples(
        args.samples,
        args.out,
        formats=args.formats,
        stages=args.stages,
        images=args.image_mode,
        image_root=args.images,
        stage_pools=not args.all_samples_every_stage,
    )
    counts = ", ".join(f"{stage} {n}" for stage, n in summary.counts.items())
    print(f"exported {counts} samples ({summary.rejected} rejected left out)")
    print(f"written to {summary.out_dir.resolve()}: {', '.join(summary.files)}")
    return 0
