"""``medcurric demo``: run the pipeline on the bundled sample and say where the output went.

The demo is a list of steps (:data:`STEPS`), each a function of a shared
:class:`DemoContext`; later stages of the pipeline add their step to the list.
Today it builds the synthetic CT phantom, matches its lesions to host organs,
prints the table and writes ``lesions.jsonl`` and ``matches.jsonl`` to ``--out``.
Each run rewrites its outputs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medcurric._jsonl import JsonlWriter

__all__ = ["STEPS", "DemoContext", "add_arguments", "run"]


@dataclass
class DemoContext:
    """What the demo's steps share: options, intermediate results and written files.

    Attributes:
        out: Output directory.
        seed: Seed of the phantom.
        state: Results of earlier steps, by name (``"phantom"``, ``"matches"``, ...).
        outputs: Files written so far, ``description -> path``.
    """

    out: Path
    seed: int = 0
    state: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)


def _rewrite(path: Path) -> JsonlWriter:
    if path.exists():
        path.unlink()
    return JsonlWriter(path)


def step_phantom(ctx: DemoContext) -> None:
    """Build the synthetic CT phantom and write its lesion records."""
    from medcurric.data import make_phantom

    ph = make_phantom(seed=ctx.seed)
    ctx.state["phantom"] = ph
    path = ctx.out / "lesions.jsonl"
    with _rewrite(path) as writer:
        writer.write_many(ph.lesions)
    ctx.outputs["lesion records"] = path
    print(f"[phantom] {ph.shape[0]}x{ph.shape[1]}x{ph.shape[2]} CT, spacing {ph.spacing} mm, "
          f"{len(ph.lesions)} lesions")


def step_match(ctx: DemoContext) -> None:
    """Match every phantom lesion to its host organ, print the table and write the matches."""
    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.anatomy._cli import format_table
    from medcurric.data import Phantom

    ph = ctx.state["phantom"]
    assert isinstance(ph, Phantom)
    matcher = BoxOrganMatcher(ph.class_map, criterion="ioa", min_score=0.5, adjacent_mm=5.0)
    matches = matcher.match_records(ph.lesions, ph.label_map())
    ctx.state["matches"] = matches
    print("[match] " + repr(matcher))
    print(format_table([r.id for r in ph.lesions], ph.lesion_boxes, matches))
    path = ctx.out / "matches.jsonl"
    with _rewrite(path) as writer:
        writer.write_many(matches)
    ctx.outputs["organ matches"] = path


#: The demo's steps, run in order.
STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("phantom", step_phantom),
    ("match", step_match),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR",
                        help="output directory (default ./demo-output)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run every step of :data:`STEPS`; print where the output went."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, seed=int(args.seed))
    for _name, step in STEPS:
        step(ctx)
    print("\nmedcurric demo: output written to " + str(out.resolve()))
    for what, path in ctx.outputs.items():
        print(f"  {what}: {path.resolve()}")
    return 0
