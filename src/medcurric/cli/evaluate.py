"""``medcurric evaluate``: score VQA answers, generated reports or grounding from files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medcurric._options import StrEnum, look_up_option
from medcurric.cli._output import ensure_writable
from medcurric.errors import DataFormatError
from medcurric.eval import (
    Compat,
    format_table,
    load_predictions,
    load_records,
    load_texts,
    load_vqa,
    report_metrics,
    score_grounding,
    score_vqa,
)

__all__ = ["Task", "add_arguments", "run"]


class Task(StrEnum):
    """What ``medcurric evaluate`` scores."""

    VQA = "vqa"
    REPORT = "report"
    GROUNDING = "grounding"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``parser``."""
    parser.add_argument("--task", required=True, help="vqa | report | grounding")
    parser.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="model outputs: JSONL/JSON keyed by question or sample id",
    )
    parser.add_argument(
        "--references",
        required=True,
        type=Path,
        help="ground truth: a VQA test file (VQA-RAD, SLAKE, LLaVA-Med test.json), "
        "reference reports, or samples with boxes (CoTSample JSONL)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write JSON here (+ a .md table)")
    vqa = parser.add_argument_group("vqa")
    vqa.add_argument(
        "--dataset",
        default="auto",
        help="reference layout: auto | llava-med | vqa-rad | slake | pathvqa | flat",
    )
    vqa.add_argument("--compat", default="default", help="default | llava-med")
    vqa.add_argument("--split", default=None, help="test | train (VQA-RAD's public file)")
    vqa.add_argument("--language", default="en", help="SLAKE q_lang to keep ('all' for every)")
    vqa.add_argument("--missing", default="error", help="error | empty | skip")
    vqa.add_argument("--by", default=None, help="breakdown field(s), comma-separated")
    rep = parser.add_argument_group("report")
    rep.add_argument(
        "--metrics",
        default="bleu,meteor,rouge-l,cider",
        help="comma-separated report metrics: bleu, meteor, rouge-l, cider",
    )
    rep.add_argument("--tokenizer", default="ptb", help="ptb (Java) | simple | none")
    grd = parser.add_argument_group("grounding")
    grd.add_argument("--grid", default=None, help="patch grid of attention maps, e.g. 24 or 24x24")
    grd.add_argument("--tolerance", type=float, default=0.0, help="pointing tolerance (patches)")
    grd.add_argument("--coverage", default="fraction", help="fraction | centre | any")
    grd.add_argument(
        "--iou-threshold",
        type=float,
        default=0.5,
        help="IoU with the target box that counts an attention box as a hit",
    )
    parser.add_argument("--id-key", default=None, help="id field of the predictions")
    parser.add_argument("--text-key", default=None, help="text field of the predictions")


def _grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise DataFormatError(f"Expected --grid as N or HxW (e.g. 24x24), but got {text!r}.")
    return dims[0], dims[1]


def _write(out: Path | None, payload: dict[str, Any], markdown: str) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    out.with_suffix(".md").write_text(markdown + "\n", encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


def _run_vqa(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    language = None if str(args.language).lower() == "all" else args.language
    refs = load_vqa(args.references, format=args.dataset, split=args.split, language=language)
    preds = load_predictions(args.predictions, id_key=args.id_key, text_key=args.text_key)
    compat = look_up_option(args.compat, Compat, name="--compat")
    scores = score_vqa(refs, preds, compat=compat, missing=args.missing)
    by = [b.strip() for b in (args.by or "organ,answer_type").split(",") if b.strip()]
    tables = {b: scores.breakdown(b) for b in by}
    md = [f"# VQA scores ({compat})", "", scores.to_markdown()]
    for b, rows in tables.items():
        md += ["", f"## By {b}", "", format_table(rows, fmt="markdown")]
    payload = {"task": "vqa", "summary": scores.summary(), "breakdown": tables, **scores.to_dict()}
    return payload, "\n".join(md)


def _run_report(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    preds = load_predictions(args.predictions, id_key=args.id_key, text_key=args.text_key)
    refs = load_texts(args.references)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    scores = report_metrics(preds, refs, metrics=metrics, tokenizer=args.tokenizer)
    md = f"# Report generation scores ({scores.n} reports, {scores.tokenizer} tokenizer)\n\n"
    payload = {"task": "report", "summary": scores.summary(), **scores.to_dict()}
    return payload, md + scores.to_markdown()


def _run_grounding(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    targets = load_records(args.references)
    preds = {r["id"]: r for r in load_records(args.predictions, id_key=args.id_key)}
    if args.text_key:
        for r in preds.values():
            r["text"] = r.get(args.text_key)
    scores = score_grounding(
        targets,
        preds,
        grid=_grid(args.grid),
        coverage=args.coverage,
        tolerance=args.tolerance,
        iou_threshold=args.iou_threshold,
    )
    by = [b.strip() for b in (args.by or "stage,organ").split(",") if b.strip()]
    tables = {b: scores.breakdown(b) for b in by}
    md = ["# Grounding scores", "", format_table([scores.summary()], fmt="markdown")]
    for b in by:
        md += ["", f"## By {b}", "", scores.to_markdown(b)]
    payload = {"task": "grounding", "summary": scores.summary(), "breakdown": tables}
    payload.update(scores.to_dict())
    return payload, "\n".join(md)


def run(args: argparse.Namespace) -> int:
    """Score the files and print a summary; return the exit status."""
    task = look_up_option(args.task, Task, name="--task")
    if args.out is not None:  # before scoring: a result computed and then lost helps nobody
        ensure_writable(args.out, args.out.with_suffix(".md"))
    runner = {Task.VQA: _run_vqa, Task.REPORT: _run_report, Task.GROUNDING: _run_grounding}[task]
    payload, markdown = runner(args)
    summary = payload["summary"]
    width = max(len(str(k)) for k in summary)
    for key, value in summary.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{str(key).ljust(width)}  {shown}")
    _write(args.out, payload, markdown)
    return 0
