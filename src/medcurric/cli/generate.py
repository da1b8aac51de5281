"""``medcurric generate``: factual seeds JSONL -> QA + chain-of-thought samples JSONL (+ rejects).

Exit status: 0 when every planned sample was written (accepted or rejected), 3 when
some requests failed for good (rerun the same command: it resumes and retries them),
1 on a usage or data error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from medcurric._options import StrEnum, look_up_option
from medcurric.cli._output import ensure_writable
from medcurric.cli.seeds import add_engine_arguments, ray_address
from medcurric.cot import (
    Backend,
    CoTGenerator,
    OpenAIBackend,
    QuestionType,
    RunSummary,
    TemplateBackend,
    TransformersBackend,
    parse_shard,
    read_prompt_templates,
)
from medcurric.errors import InvalidOptionError, MedcurricWarning
from medcurric.seeds import read_seeds
from medcurric.stage import Stage

__all__ = ["EXIT_INCOMPLETE", "BackendName", "add_arguments", "build_backend", "run"]

#: Exit status when some samples could not be generated (a rerun retries them).
EXIT_INCOMPLETE = 3


class BackendName(StrEnum):
    """Backends selectable with ``--backend``."""

    TEMPLATE = "template"
    TRANSFORMERS = "transformers"
    OPENAI = "openai"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate`` options to ``parser``."""
    parser.add_argument("seeds", type=Path, help="factual seeds, one FactualSeed JSON per line")
    parser.add_argument(
        "--out", type=Path, required=True, help="accepted samples (JSONL, appended)"
    )
    parser.add_argument(
        "--rejects",
        type=Path,
        default=None,
        help="rejected samples with verdicts and reason (default: <out>.rejects.jsonl)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="image root the seeds' image paths are relative to",
    )
    parser.add_argument("--backend", default="template", help="template | transformers | openai")
    parser.add_argument(
        "--model", default="", help="model name (openai) or HF id/path (transformers)"
    )
    parser.add_argument(
        "--base-url",
        default="http://127.0.0.1:8000/v1",
        help="OpenAI-compatible server URL, up to /v1 (openai backend); with --engine ray, "
        "a comma-separated list spreads the actors over the servers, round robin",
    )
    parser.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (never logged or written)",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="send the API key over plain http to a host that is not loopback (openai)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (openai)")
    parser.add_argument("--max-retries", type=int, default=5, help="retries per request (openai)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt (openai)")
    parser.add_argument(
        "--backoff", type=float, default=0.5, help="first retry backoff in seconds (openai)"
    )
    parser.add_argument("--max-tokens", type=int, default=512, help="tokens per reply")
    parser.add_argument("--batch-size", type=int, default=4, help="batch size (transformers)")
    parser.add_argument("--device", default=None, help="device, e.g. cuda:0 (transformers)")
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 (transformers)")
    parser.add_argument("--shard", default="0/1", help="i/n: this worker's share of the seeds")
    parser.add_argument(
        "--stages", default="easy,medium,hard", help="comma-separated stages to generate"
    )
    parser.add_argument(
        "--question-types", default="open,closed", help="comma-separated: open, closed"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many seeds")
    parser.add_argument(
        "--max-reasks", type=int, default=1, help="re-asks after an unparseable reply"
    )
    parser.add_argument(
        "--box-tolerance",
        type=float,
        default=0.02,
        help="largest error per normalised coordinate of the cited box (Easy)",
    )
    parser.add_argument(
        "--templates",
        type=Path,
        default=None,
        help="JSON list of templates {id, stage, question_type, text[, system, matched]}",
    )
    parser.add_argument("--fsync", action="store_true", help="fsync after every line")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: on a terminal)"
    )
    scale = parser.add_argument_group("engine")
    add_engine_arguments(scale)
    scale.add_argument(
        "--workers", type=int, default=1, help="generator actors with --engine ray (default 1)"
    )
    scale.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per actor with --engine ray, e.g. 1 for --backend transformers (default 0.0)",
    )
    scale.add_argument(
        "--seeds-per-batch",
        type=int,
        default=16,
        help="seeds handed to an actor at once with --engine ray (default 16)",
    )


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def build_backend(args: argparse.Namespace) -> Backend:
    """Build the backend named by ``--backend``."""
    name = look_up_option(args.backend, BackendName, name="--backend")
    if name is BackendName.TEMPLATE:
        return TemplateBackend()
    if name is BackendName.OPENAI:
        if not args.model:
            raise InvalidOptionError(
                "Expected --model with --backend openai (the served model name), but got none."
            )
        return OpenAIBackend(
            args.model,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
            timeout=args.timeout,
            backoff_base=args.backoff,
            max_tokens=args.max_tokens,
            allow_insecure_http=args.allow_insecure_http,
        )
    if not args.model:
        raise InvalidOptionError(
            "Expected --model with --backend transformers (a HF id or local directory), but got none."
        )
    return TransformersBackend.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_new_tokens=args.max_tokens,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``medcurric generate``; return the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ensure_writable(args.out, args.rejects)
    shard = parse_shard(args.shard)
    stages = [look_up_option(s, Stage, name="--stages") for s in _split(args.stages)]
    qtypes = [
        look_up_option(q, QuestionType, name="--question-types")
        for q in _split(args.question_types)
    ]
    seeds = read_seeds(args.seeds)
    templates = read_prompt_templates(args.templates) if args.templates else None
    kwargs: dict[str, Any] = {}
    if templates is not None:
        kwargs["templates"] = templates
    address = ray_address(args)
    if args.engine == "ray":
        return _run_on_ray(args, seeds, shard, stages, qtypes, address, kwargs)
    ignored = [
        f"{o} {v}"
        for o, v, d in (
            ("--workers", args.workers, 1),
            ("--gpus-per-worker", args.gpus_per_worker, 0.0),
            ("--seeds-per-batch", args.seeds_per_batch, 16),
        )
        if v != d
    ]
    if ignored:
        warnings.warn(
            f"{', '.join(ignored)} only apply with --engine ray; ignored with --engine local.",
            MedcurricWarning,
            stacklevel=2,
        )
    backend = build_backend(args)
    generator = CoTGenerator(
        backend,
        stages=stages,
        question_types=qtypes,
        image_root=args.images,
        max_reasks=args.max_reasks,
        box_tolerance=args.box_tolerance,
        **kwargs,
    )
    summary = generator.run(
        seeds,
        args.out,
        args.rejects,
        shard=shard,
        limit=args.limit,
        progress=False if args.no_progress else None,
        fsync=args.fsync,
    )
    return _report(summary)


def _report(summary: RunSummary) -> int:
    print(json.dumps(summary.to_dict()))
    print(
        f"medcurric generate: {summary.accepted} accepted, {summary.rejected} rejected, "
        f"{summary.skipped} already done ({summary.accepted_before} accepted, "
        f"{summary.rejected_before} rejected), {summary.failed} failed"
        + (" (rerun the same command to retry them)" if summary.failed else ""),
        file=sys.stderr,
    )
    return EXIT_INCOMPLETE if summary.failed else 0


def _ray_backend(args: argparse.Namespace) -> Any:
    """The backend for ``--engine ray``: built in each actor (one endpoint each, round robin)."""
    from medcurric.distributed import openai_endpoints, transformers_backend

    name = look_up_option(args.backend, BackendName, name="--backend")
    if name is BackendName.TEMPLATE:
        return TemplateBackend()
    if not args.model:
        raise InvalidOptionError(f"Expected --model with --backend {name.value}, but got none.")
    if name is BackendName.OPENAI:
        return openai_endpoints(
            args.model,
            _split(args.base_url),
            api_key_env=args.api_key_env,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
            timeout=args.timeout,
            backoff_base=args.backoff,
            max_tokens=args.max_tokens,
            allow_insecure_http=args.allow_insecure_http,
        )
    return transformers_backend(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_new_tokens=args.max_tokens,
    )


def _run_on_ray(
    args: argparse.Namespace,
    seeds: list[Any],
    shard: tuple[int, int],
    stages: list[Stage],
    qtypes: list[QuestionType],
    address: str | None,
    kwargs: dict[str, Any],
) -> int:
    from medcurric.distributed import connect, generate_samples

    backend = _ray_backend(args)
    connect(address)
    summary = generate_samples(
        seeds,
        args.out,
        args.rejects,
        backend=backend,
        shard=shard,
        limit=args.limit,
        actors=args.workers,
        batch_size=args.seeds_per_batch,
        num_gpus=args.gpus_per_worker,
        address=address,
        progress=False if args.no_progress else None,
        fsync=args.fsync,
        stages=stages,
        question_types=qtypes,
        image_root=args.images,
        max_reasks=args.max_reasks,
        box_tolerance=args.box_tolerance,
        **kwargs,
    )
    return _report(summary)
