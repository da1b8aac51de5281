"""The data stages on Ray (``--engine ray``) against the single-process pipeline, same files.

* ``seeds``: ``write_seeds`` over a folder of ``.nii.gz`` label maps and a CSV of boxes
  (the files ``bench_seeds.py`` writes for 4 phantoms, hard-linked to ``--cases``
  cases), in this process (``local``) and with
  :class:`~medcurric.distributed.RaySeedRunner` on ``--workers`` actors (``ray``); the
  two files are checked byte-identical.
* ``generate``: the template backend over those seeds, ``CoTGenerator.run`` (``local``)
  against :func:`~medcurric.distributed.generate_samples` on ``--workers`` actors; the
  two sets of lines are checked equal.
* ``generate_model_bound``: the same, over ``--model-seeds`` seeds, with a stand-in for
  a model: the template backend's replies after ``--request-ms`` of CPU work per
  request (:class:`CostlyTemplate`), so the per-item cost is that of compute, as with a
  transformers model in each actor, rather than the template's fraction of a
  millisecond. The lines are the template stage's and are checked equal too.

Ray's start-up is reported apart: ``ray.init`` of a local cluster with ``--workers``
CPUs, a first small run (worker processes started, the library imported in them), and
the fixed cost of every later run (Ray Data starts a new pool of actors for each
dataset: a few seconds here). Each stage is timed on the whole input and on a small
one (``--workers`` cases, or ``--workers`` batches of seeds), local and Ray in turn
(round robin, fresh files each time). The speed-up with start-up excluded compares the
marginal throughputs, ``(items - small items) / (median time - median small time)``;
the raw speed-up (``local / ray`` of the whole-input medians) includes Ray's per-run
start-up.

Then a scaling table on paper, from the measured per-item costs: with ``c`` seconds of
one actor per item and ``a`` actors per node, ``N`` nodes give ``N * a / c`` items per
second, until the driver (one process writing every line, its cost per line measured
here) becomes the limit. Segmentation is not measured (TotalSegmentator's weights are not
here); its row uses the figure of about 60 s per CT volume on one GPU (the issue's) and
is marked as assumed.

Prints one JSON object and the table. ``--quick`` runs a small smoke configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from _timing import cpu_model, round_robin
from bench_seeds import _write_cases

from medcurric._jsonl import JsonlWriter
from medcurric.cot import CoTGenerator, TemplateBackend
from medcurric.cot.backends import Completion, GenerationRequest
from medcurric.distributed import RaySeedRunner, connect, generate_samples
from medcurric.io import find_cases, read_detections
from medcurric.seeds import read_seeds, write_seeds

#: Assumed, not measured here: TotalSegmentator on one GPU, seconds per CT volume.
SEGMENT_S_PER_VOLUME = 60.0


def _burn(seconds: float) -> None:
    """Keep one core busy for ``seconds`` (what a model's forward passes would do)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class CostlyTemplate(TemplateBackend):
    """The template backend's replies after a fixed CPU cost per request: a model stand-in.

    Args:
        request_ms: CPU milliseconds spent on each request before its reply.
    """

    def __init__(self, request_ms: float) -> None:
        self.request_ms = float(request_ms)

    def complete(self, requests: Sequence[GenerationRequest]) -> Iterator[Completion]:
        """The template replies, each after ``request_ms`` of work."""
        for completion in super().complete(requests):
            _burn(self.request_ms / 1000.0)
            yield completion


def _write_many_cases(
    root: Path, n_cases: int, n_distinct: int, shape: tuple[int, int, int]
) -> tuple[Path, Path, int]:
    """``bench_seeds``' files for ``n_distinct`` phantoms, hard-linked to ``n_cases`` cases."""
    det, masks, _ = _write_cases(root, n_distinct, n_distinct, shape)
    header, *rows = det.read_text().splitlines(keepends=True)
    out = [header]
    for c in range(n_cases):
        name, src = f"case{c:03d}", f"case{c % n_distinct:03d}"
        if c >= n_distinct:
            os.link(masks / f"{src}.nii.gz", masks / f"{name}.nii.gz")
        out += [r.replace(src, name) for r in rows if r.startswith(f"{src}/")]
    det.write_text("".join(out))
    return det, masks, len(out) - 1


def _driver_s_per_line(lines: list[str], root: Path) -> float:
    """What the driver does per streamed record: parse the row's JSON, append the line."""
    start = time.perf_counter()
    with JsonlWriter(root / "driver.jsonl") as writer:
        writer.write_many(json.loads(x) for x in lines)
    return (time.perf_counter() - start) / max(len(lines), 1)


def scaling_table(
    costs: dict[str, tuple[float, float, str]],
    driver_s_per_line: float,
    nodes: tuple[int, ...] = (1, 2, 4, 8, 16, 64),
) -> list[dict[str, Any]]:
    """Rows of expected items per second on ``N`` nodes.

    Args:
        costs: Stage -> (seconds per item on one actor, actors per node, what an actor holds).
        driver_s_per_line: The driver's cost to write one line (its ceiling is the inverse).
        nodes: The node counts to tabulate.
    """
    ceiling = 1.0 / driver_s_per_line if driver_s_per_line > 0 else float("inf")
    rows = []
    for stage, (cost, per_node, holds) in costs.items():
        row: dict[str, Any] = {
            "stage": stage,
            "s_per_item": cost,
            "actor": holds,
            "actors_per_node": per_node,
        }
        for n in nodes:
            row[f"{n}_nodes_items_per_s"] = min(n * per_node / cost, ceiling)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], driver_s_per_line: float) -> str:
    """The scaling table as Markdown."""
    nodes = [k.split("_")[0] for k in rows[0] if k.endswith("_nodes_items_per_s")]
    head = "| stage | s / item / actor | actor | actors / node | " + " | ".join(
        f"{n} node{'s' if n != '1' else ''}" for n in nodes
    )
    lines = [head + " |", "|" + " --- |" * (4 + len(nodes))]
    for r in rows:
        cells = [f"{r[f'{n}_nodes_items_per_s']:,.1f}" for n in nodes]
        lines.append(
            f"| {r['stage']} | {r['s_per_item']:.4g} | {r['actor']} | {r['actors_per_node']:g} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append(
        f"\nItems per second; the driver writes {1.0 / driver_s_per_line:,.0f} lines/s "
        "(its ceiling, measured)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--cases", type=int, default=1000, help="label maps (10 lesions each)")
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 256, 256), help="z y x")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (and cluster CPUs)")
    parser.add_argument("--seeds-copies", type=int, default=1, help="generation: copies of the seeds")
    parser.add_argument("--model-seeds", type=int, default=100, help="model-bound generation: seeds")
    parser.add_argument("--request-ms", type=float, default=20.0,
                        help="model-bound generation: CPU milliseconds per request")
    parser.add_argument("--cores-per-node", type=int, default=16, help="for the scaling table")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="for the scaling table")
    args = parser.parse_args(argv)
    if args.quick:
        n_cases, shape, repeats, distinct, copies = 4, (32, 64, 64), 1, 1, 1
    else:
        n_cases, shape, repeats, distinct, copies = (
            args.cases, tuple(args.shape), args.repeats, 4, args.seeds_copies,
        )  # fmt: skip
    import ray

    # the actors unpickle CostlyTemplate by value: benchmarks/ is not on their path
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    model_seeds = 2 if args.quick else args.model_seeds
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        det, masks, lesions = _write_many_cases(root, n_cases, distinct, shape)
        cases = find_cases(read_detections(det, "csv"), masks)
        counter = iter(range(10**6))

        start = time.perf_counter()
        connect(None, num_cpus=args.workers)
        ray_init_s = time.perf_counter() - start
        runner = RaySeedRunner(actors=args.workers)
        write_seeds(cases[:1], root / "warm-local.jsonl", progress=False)  # numba, caches
        start = time.perf_counter()
        write_seeds(cases[: args.workers], root / "warm-ray.jsonl", progress=False, runner=runner)
        ray_first_run_s = time.perf_counter() - start

        small_cases = cases[: args.workers]
        small_lesions = sum(len(c.records) for c in small_cases)

        def seeds_local(part: list[Any] = cases, tag: str = "local") -> None:
            write_seeds(part, root / f"{tag}{next(counter)}.jsonl", progress=False)

        def seeds_ray(part: list[Any] = cases, tag: str = "ray") -> None:
            out = root / f"{tag}{next(counter)}.jsonl"
            write_seeds(part, out, progress=False, runner=runner)

        seeds_fns = {"local": seeds_local, "ray": seeds_ray}
        if not args.quick:  # the smoke run skips the small inputs (no start-up split)
            seeds_fns["local_small"] = lambda: seeds_local(small_cases, "small-local")
            seeds_fns["ray_small"] = lambda: seeds_ray(small_cases, "small-ray")
        seeds_times = round_robin(seeds_fns, repeats, warmup=0)
        outs = sorted(root.glob("local*.jsonl")) + sorted(root.glob("ray*.jsonl"))
        outs = [p for p in outs if "rejects" not in p.name]
        same_seeds = len({p.read_bytes() for p in outs}) == 1

        base = read_seeds(outs[0])
        size = [shape[2], shape[1]]  # (width, height) of a slice, for the Easy prompts
        seeds = [s.__class__.from_dict({**s.to_dict(), "id": f"{k}/{s.id}", "image_size": size})
                 for k in range(copies) for s in base]  # fmt: skip

        batch = max(1, len(seeds) // (4 * args.workers))
        small_seeds = seeds[: args.workers * batch]

        def gen_local(part: list[Any] = seeds, tag: str = "glocal") -> None:
            out = root / f"{tag}{next(counter)}.jsonl"
            CoTGenerator(TemplateBackend()).run(part, out, progress=False)

        def gen_ray(part: list[Any] = seeds, tag: str = "gray") -> None:
            out = root / f"{tag}{next(counter)}.jsonl"
            generate_samples(part, out, actors=args.workers, batch_size=batch, progress=False)

        gen_fns = {"local": gen_local, "ray": gen_ray}
        if not args.quick:
            gen_fns["local_small"] = lambda: gen_local(small_seeds, "small-glocal")
            gen_fns["ray_small"] = lambda: gen_ray(small_seeds, "small-gray")
        gen_times = round_robin(gen_fns, repeats, warmup=0)
        gouts = [p for p in root.glob("g*.jsonl") if "rejects" not in p.name]
        same_samples = len({tuple(sorted(p.read_text().splitlines())) for p in gouts}) == 1
        samples = len(gouts[0].read_text().splitlines())
        driver = _driver_s_per_line(gouts[0].read_text().splitlines(), root)

        costly = CostlyTemplate(args.request_ms)
        model_part = seeds[:model_seeds]
        mbatch = max(1, len(model_part) // (4 * args.workers))
        small_model = model_part[: args.workers * mbatch]

        def model_local(part: list[Any] = model_part, tag: str = "mlocal") -> None:
            CoTGenerator(costly).run(part, root / f"{tag}{next(counter)}.jsonl", progress=False)

        def model_ray(part: list[Any] = model_part, tag: str = "mray") -> None:
            out = root / f"{tag}{next(counter)}.jsonl"
            generate_samples(part, out, backend=costly, actors=args.workers, batch_size=mbatch, progress=False)

        model_fns = {"local": model_local, "ray": model_ray}
        if not args.quick:
            model_fns["local_small"] = lambda: model_local(small_model, "small-mlocal")
            model_fns["ray_small"] = lambda: model_ray(small_model, "small-mray")
        model_times = round_robin(model_fns, repeats, warmup=0)
        mouts = [p for p in root.glob("m*.jsonl") if "rejects" not in p.name]
        same_model = len({tuple(sorted(p.read_text().splitlines())) for p in mouts}) == 1
        model_samples = len(mouts[0].read_text().splitlines())
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    def stage(times: dict[str, list[float]], items: int, small: int) -> dict[str, Any]:
        med = {k: statistics.median(v) for k, v in times.items()}
        if "ray_small" not in med:  # --quick: no small runs, nothing subtracted
            med.update(local_small=0.0, ray_small=0.0)
            small = 0
        marginal = {
            k: (items - small) / max(med[k] - med[f"{k}_small"], 1e-9) for k in ("local", "ray")
        }
        return {
            "items": items,
            "small_items": small,
            "times_s": times,
            "local_items_per_s": items / med["local"],
            "ray_items_per_s": items / med["ray"],
            "speedup_raw": med["local"] / med["ray"],
            "local_marginal_items_per_s": marginal["local"],
            "ray_marginal_items_per_s": marginal["ray"],
            "speedup_startup_excluded": marginal["ray"] / max(marginal["local"], 1e-9),
            "ray_per_run_startup_s": med["ray_small"] - small / marginal["ray"],
        }

    per_sample = samples / max(len(seeds), 1)
    seeds_stage = stage(seeds_times, lesions, small_lesions)
    gen_stage = stage(gen_times, samples, round(len(small_seeds) * per_sample))
    model_stage = stage(model_times, model_samples, round(len(small_model) * per_sample))
    costs = {
        "segmentation (assumed)": (SEGMENT_S_PER_VOLUME, float(args.gpus_per_node), "1 GPU"),
        "seeds": (
            1.0 / seeds_stage["local_marginal_items_per_s"], float(args.cores_per_node), "1 CPU"
        ),
        "generate (template)": (
            1.0 / gen_stage["local_marginal_items_per_s"], float(args.cores_per_node), "1 CPU"
        ),
        f"generate (model stand-in, {args.request_ms:g} ms)": (
            1.0 / model_stage["local_marginal_items_per_s"], float(args.cores_per_node), "1 CPU"
        ),
    }
    rows = scaling_table(costs, driver)
    result = {
        "benchmark": "scale",
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "workers": args.workers,
        "cases": n_cases,
        "shape": list(shape),
        "repeats": repeats,
        "load_average": list(os.getloadavg()),
        "startup": {"ray_init_s": ray_init_s, "first_run_s": ray_first_run_s},
        "seeds": {**seeds_stage, "identical_files": same_seeds},
        "generate": {**gen_stage, "identical_lines": same_samples},
        "generate_model_bound": {**model_stage, "request_ms": args.request_ms, "identical_lines": same_model},
        "driver_s_per_line": driver,
        "scaling": rows,
    }
    print(json.dumps(result))
    print(format_table(rows, driver), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
