"""``medcurric demo``: run the whole pipeline on the bundled sample and say where the output went.

The demo is a list of steps (:data:`STEPS`), each a function of a shared
:class:`DemoContext`: build the synthetic CT phantom, match its lesions to host
organs, build factual seeds on the key slices, generate QA + CoT samples with the
template backend, render the three curriculum stages, train the tiny random
VIP-LLaVA through Easy -> Medium with :class:`medcurric.training.CurriculumTrainer`
with the lesions of :data:`HELD_OUT` kept out, evaluate (VQA scores of generated
answers; attention KL and grounding of the held-out Medium samples before and after
training, heatmaps on one colour scale), write the review report, and finally a summary page
``index.html`` that links everything (:func:`medcurric.review.write_demo_page`).
Each step only calls the library's public functions. Each run rewrites its outputs;
steps that take seconds show a progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcurric._jsonl import JsonlWriter
from medcurric.cli._output import ensure_writable

__all__ = ["HELD_OUT", "REQUIRED", "STEPS", "DemoContext", "add_arguments", "check_extras", "run"]


#: Lesions whose samples the tiny model never trains on: its attention is measured on their Medium samples.
HELD_OUT: tuple[str, ...] = ("liver-large-key", "lung-lul-key", "kidney-near-key")

#: Optional modules the demo needs (pip extras vlm, viz, io).
REQUIRED: tuple[str, ...] = ("transformers", "peft", "accelerate", "matplotlib", "nibabel")

#: Display size of the stage renderings (nearest-neighbour upscaling keeps the pixels sharp).
DISPLAY_PX = 384


def check_extras(modules: Sequence[str] = REQUIRED) -> None:
    """Raise before any work if an optional module the demo needs is missing, naming the install line.

    Raises:
        MissingDependencyError: With ``pip install 'medcurric[...]'`` for every missing module.
    """
    from medcurric._optional import EXTRAS, is_available
    from medcurric.errors import MissingDependencyError

    missing = [m for m in modules if not is_available(m)]
    if missing:
        extras = ",".join(sorted({EXTRAS.get(m, m) for m in missing}))
        raise MissingDependencyError(
            f"medcurric demo needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: pip install 'medcurric[{extras}]'"
        )


def _progress(items: Sequence[Any], desc: str) -> Any:
    """A tqdm bar on stderr over ``items``."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="item", leave=False, file=sys.stderr)


@dataclass
class DemoContext:
    """What the demo's steps share: options, intermediate results and written files.

    Attributes:
        out: Output directory.
        seed: Seed of the phantom, the generation and the training.
        train_steps: Optimizer steps of the tiny training run.
        held_out: Lesions (seed ids) kept out of training; their Medium samples measure
            whether the attention loss generalises.
        state: Results of earlier steps, by name (``"phantom"``, ``"matches"``, ...).
        outputs: Files written so far, ``description -> path``.
        timings: Seconds each step took, by name.
    """

    out: Path
    seed: int = 0
    train_steps: int = 150
    held_out: tuple[str, ...] = HELD_OUT
    state: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _rewrite(path: Path) -> JsonlWriter:
    if path.exists():
        path.unlink()
    return JsonlWriter(path)


def step_phantom(ctx: DemoContext) -> None:
    """Build the synthetic CT phantom and write its lesion records."""
    from medcurric.testing import make_phantom

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
    from medcurric.cli.match import format_table
    from medcurric.testing import Phantom

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


def _image_name(record_id: str) -> str:
    return f"phantom/{record_id}.png"


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def step_seeds(ctx: DemoContext) -> None:
    """Write the key slices as 16-bit DeepLesion-style PNGs (labels beside them) and build the seeds."""
    import dataclasses

    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.io import load_rgb
    from medcurric.seeds.pipeline import build_seeds
    from medcurric.testing import Phantom

    ph = ctx.state["phantom"]
    assert isinstance(ph, Phantom)
    images_dir, labels_dir = ctx.out / "images", ctx.out / "labels"
    for folder in (images_dir, labels_dir):
        shutil.rmtree(folder, ignore_errors=True)
    records = [dataclasses.replace(r, image=_image_name(r.id)) for r in ph.key_slice_lesions]
    rgb: dict[str, np.ndarray] = {}
    for r in records:
        z = int(r.slice_index or 0)
        hu = ph.hu[z].astype(np.int32)
        # DeepLesion convention: uint16 PNG holding HU + 32768.
        _write_png(images_dir / r.image, (hu + 32768).astype(np.uint16))
        _write_png(labels_dir / r.image, ph.labels[z].astype(np.uint8))
        rgb[r.image] = load_rgb(hu, window=r.window)  # the pixels a backend would be sent
    matcher = BoxOrganMatcher(ph.class_map, criterion="ioa", min_score=0.5, adjacent_mm=5.0)
    seeds = build_seeds(records, ph.label_map(), matcher=matcher)
    height, width = ph.shape[1], ph.shape[2]
    seeds = [dataclasses.replace(s, extra={**s.extra, "image_size": [width, height]}) for s in seeds]
    ctx.state.update(records=records, seeds=seeds, rgb=rgb)
    path = ctx.out / "seeds.jsonl"
    with _rewrite(path) as writer:
        writer.write_many(seeds)
    ctx.outputs["factual seeds"] = path
    ctx.outputs["key slices (16-bit PNG, HU + 32768)"] = images_dir
    ctx.outputs["label slices (uint8 PNG)"] = labels_dir
    for s in seeds:
        print(f"[seeds] {s.id}: {s.text}")


def step_generate(ctx: DemoContext) -> None:
    """Generate Easy/Medium/Hard QA + CoT samples with the template backend; write samples and rejects."""
    from medcurric.cot import CoTGenerator, TemplateBackend
    from medcurric.testing import Phantom

    ph = ctx.state["phantom"]
    assert isinstance(ph, Phantom)
    generator = CoTGenerator(TemplateBackend(), vocabulary=ph.class_map)
    generated = list(generator.generate(ctx.state["seeds"]))  # type: ignore[arg-type]
    samples = [s for s in generated if s.accepted]
    rejects = [s for s in generated if not s.accepted]
    ctx.state.update(samples=samples, rejects=rejects)
    for name, items in (("samples", samples), ("rejects", rejects)):
        path = ctx.out / f"{name}.jsonl"
        with _rewrite(path) as writer:
            writer.write_many(items)
        ctx.outputs[f"CoT {name}"] = path
    print(f"[generate] {len(samples)} accepted, {len(rejects)} rejected samples (template backend)")


def step_render(ctx: DemoContext) -> None:
    """Render one lesion's sample for each stage: Easy overlay, Medium image + attention target, Hard."""
    from PIL import Image

    from medcurric.curriculum import render
    from medcurric.eval import plot_attention
    from medcurric.geometry import Preprocess
    from medcurric.testing.tiny import build_tiny_processor

    samples: list[Any] = ctx.state["samples"]  # type: ignore[assignment]
    rgb: dict[str, np.ndarray] = ctx.state["rgb"]  # type: ignore[assignment]
    processor = build_tiny_processor()
    preprocess = Preprocess.from_processor(processor)
    folder = ctx.out / "stages"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # The first lesion with an accepted open sample in every stage.
    by_seed: dict[str, dict[str, Any]] = {}
    for s in samples:
        if s.question_type == "open":
            by_seed.setdefault(s.seed_id, {}).setdefault(s.stage, s)
    seed_id = next((k for k, v in by_seed.items() if len(v) == 3), None)
    rendered: list[dict[str, Any]] = []
    if seed_id is not None:
        # The first call compiles the overlay's numba kernels (tens of seconds, once per machine).
        for stage in _progress(("easy", "medium", "hard"), "render stages (first run compiles kernels)"):
            sample = by_seed[seed_id][stage]
            out = render(sample, stage, image=rgb[sample.image], preprocess=preprocess, grid=(6, 6))
            png = folder / f"{stage}.png"
            scale = max(1, math.ceil(DISPLAY_PX / max(out.image.size)))
            out.image.resize((out.image.width * scale, out.image.height * scale), Image.Resampling.NEAREST).save(png)
            entry = {"stage": stage, "id": sample.id, "image": png.name, "prompt": out.prompt,
                     "target": out.target, "source_px": list(out.image.size)}
            if out.attention_target is not None:
                target_png = folder / "medium-attention-target.png"
                plot_attention(out.image, out.attention_target, (6, 6), out.box_norm, target_png,
                               titles=["Medium attention target (6 x 6 grid)"], dpi=130)
                entry["attention_target"] = target_png.name
            rendered.append(entry)
    (folder / "stages.json").write_text(json.dumps(rendered, indent=2), encoding="utf-8")
    ctx.state["rendered"] = rendered
    ctx.outputs["stage renderings"] = folder
    print(f"[render] Easy / Medium / Hard renderings of {seed_id} in {folder}")


def step_train(ctx: DemoContext) -> None:
    """Train the tiny random VIP-LLaVA through Easy -> Medium, holding out :attr:`DemoContext.held_out`.

    The model is random, so every weight trains (``lora_r=0``: there is nothing
    pretrained to keep), and the attention KL supervises both decoder layers with a
    weight that lets it dominate the language loss of an untrained model. The Medium
    attention KL and the attention maps of the held-out lesions' Medium samples are
    measured before and after.
    """
    import torch

    from medcurric.curriculum import plot_history
    from medcurric.testing.tiny import build_tiny_vlm
    from medcurric.training import CurriculumTrainer, TrainConfig

    torch.manual_seed(ctx.seed)
    samples: list[Any] = ctx.state["samples"]  # type: ignore[assignment]
    folder = ctx.out / "training"
    shutil.rmtree(folder, ignore_errors=True)
    vlm = build_tiny_vlm(seed=ctx.seed)
    config = TrainConfig(
        output_dir=str(folder), max_steps=ctx.train_steps, batch_size=4, lr=1e-3, check_every=2,
        patience=1, min_delta=0.05, attention_weight=30.0, attention_layers=(0, 1), lora_r=0, seed=ctx.seed,
        overlay_style="medcurric",
    )
    bar = _progress(range(ctx.train_steps), "train (tiny VIP-LLaVA)")
    trainer = CurriculumTrainer(config, samples, model=vlm.model, processor=vlm.processor,
                                images=ctx.state["rgb"], on_log=lambda _: bar.update())  # type: ignore[arg-type]
    held = trainer.hold_out(lambda s: s.seed_id in ctx.held_out)
    held_medium = [i for i in held if trainer.samples[i].stage == "medium"]
    medium = [trainer.samples[i] for i in held_medium]
    kl_before = trainer.evaluate("medium", held_medium)["attention_kl"]
    ctx.state["attention_before"] = trainer.attention_maps(medium)
    result = trainer.train()
    bar.close()
    kl_after = trainer.evaluate("medium", held_medium)["attention_kl"]
    ctx.state.update(trainer=trainer, vlm=vlm, train_result=result, attention_samples=medium,
                     held_out_kl={"before": kl_before, "after": kl_after})
    ctx.state["attention_after"] = trainer.attention_maps(medium)
    plot = ctx.out / "curriculum.png"
    plot_history(trainer.scheduler, plot, title="medcurric demo: tiny VIP-LLaVA, Easy -> Medium")
    ctx.outputs["training log and checkpoint"] = folder
    ctx.outputs["curriculum plot"] = plot
    print(f"[train] {result.steps} steps, stage switches after steps {result.switch_steps()}, final stage "
          f"{result.stage}; held-out Medium attention KL {kl_before:.3f} -> {kl_after:.3f} "
          f"({len(medium)} samples of {', '.join(ctx.held_out)})")


def step_evaluate(ctx: DemoContext) -> None:
    """Score the trained model: VQA on the Hard questions, attention grounding before/after, heatmaps."""
    from medcurric.eval import VQAItem, attention_in_box, score_grounding, score_vqa

    samples: list[Any] = ctx.state["samples"]  # type: ignore[assignment]
    hard = [s for s in samples if s.stage == "hard"]
    predictions = ctx.state["trainer"].answer(_progress(hard, "evaluate: answer the Hard questions"))  # type: ignore[attr-defined]
    refs = [VQAItem(id=s.id, question=s.question, answer=s.answer, answer_type=s.question_type,
                    image=s.image, organ=s.organ) for s in hard]
    vqa = {mode: score_vqa(refs, predictions, compat=mode).summary() for mode in ("default", "llava-med")}
    with _rewrite(ctx.out / "predictions.jsonl") as writer:
        writer.write_many([{"id": k, "prediction": v} for k, v in predictions.items()])
    medium: list[Any] = ctx.state["attention_samples"]  # type: ignore[assignment]
    grid = (6, 6)
    grounding = {}
    for when in ("before", "after"):
        maps: np.ndarray = ctx.state[f"attention_{when}"]  # type: ignore[assignment]
        preds = {s.id: {"attention": maps[i].tolist(), "grid": list(grid)} for i, s in enumerate(medium)}
        grounding[when] = score_grounding(medium, preds).summary()
    folder = ctx.out / "attention"
    shutil.rmtree(folder, ignore_errors=True)
    before: np.ndarray = ctx.state["attention_before"]  # type: ignore[assignment]
    after: np.ndarray = ctx.state["attention_after"]  # type: ignore[assignment]
    # One colour scale for every map, before and after, so their colours compare.
    vmax = float(max(before.max(), after.max())) if before.size else 1.0
    heatmaps = []
    for i, s in enumerate(_progress(medium, "evaluate: attention heatmaps")):
        png = folder / f"{s.id}.png"
        _plot_before_after(ctx.state["rgb"][s.image], before[i], after[i], grid, s.box_norm, png, vmax)  # type: ignore[index]
        heatmaps.append({"image": png, "id": f"{s.seed_id} ({s.question_type} question)", "question": s.question, "organ": s.organ,
                         "mass": [float(attention_in_box(m, s.box_norm, grid)) for m in (before[i], after[i])]})
    colorbar = _plot_colorbar(folder / "colorbar.png", vmax)
    kl: dict[str, float] = ctx.state["held_out_kl"]  # type: ignore[assignment]
    held_out = {"lesions": list(ctx.held_out), "n": len(medium), "attention_kl": kl}
    result = {"vqa": vqa, "grounding": grounding, "held_out": held_out, "n_vqa": len(refs),
              "n_grounding": len(medium)}
    path = ctx.out / "evaluation.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    ctx.state.update(evaluation=result, heatmaps=heatmaps, colorbar=colorbar)
    ctx.outputs["evaluation scores"] = path
    ctx.outputs["generated answers"] = ctx.out / "predictions.jsonl"
    ctx.outputs["attention heatmaps"] = folder
    print(f"[evaluate] VQA (default) open recall {vqa['default'].get('open_recall')}, closed accuracy "
          f"{vqa['default'].get('closed_accuracy')}; held-out Medium samples: attention KL "
          f"{kl['before']:.3f} -> {kl['after']:.3f}, attention mass in box "
          f"{grounding['before']['mean_mass_in_box']:.4f} -> {grounding['after']['mean_mass_in_box']:.4f}")


def _plot_before_after(
    image: np.ndarray, before: np.ndarray, after: np.ndarray, grid: tuple[int, int],
    box: Sequence[float], path: Path, vmax: float,
) -> Path:
    """The image with the lesion box, then the attention before and after training on one colour scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    height, width = image.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.2))
    for ax, title, att in zip(axes, ("CT slice, lesion box", "before training", "after Easy -> Medium"),
                              (None, before, after), strict=True):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        if att is not None:
            ax.imshow(np.asarray(att).reshape(grid), cmap="magma", vmin=0.0, vmax=vmax, alpha=0.65,
                      interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        x1, y1, x2, y2 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#00e5ff", linewidth=1.5))
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_colorbar(path: Path, vmax: float) -> Path:
    """The heatmaps' shared colour scale as a horizontal colour bar."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(6.0, 0.9))
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, vmax), "magma"), cax=ax, orientation="horizontal")
    bar.set_label("share of the answer's attention on each image patch (uniform = 1/36 = 0.028)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def step_review(ctx: DemoContext) -> None:
    """Write the HTML review report of the samples, with host-organ contours from the label slices."""
    from medcurric.review import label_slice_masks, write_review
    from medcurric.testing import Phantom

    ph = ctx.state["phantom"]
    assert isinstance(ph, Phantom)
    folder = ctx.out / "review"
    shutil.rmtree(folder, ignore_errors=True)
    report = write_review(
        ctx.out / "samples.jsonl", folder, rejects=ctx.out / "rejects.jsonl", seeds=ctx.out / "seeds.jsonl",
        image_root=ctx.out / "images", masks=label_slice_masks(ctx.out / "labels"), class_map=ph.class_map,
        sample_n=10, seed=ctx.seed, title="medcurric demo review",
    )
    ctx.outputs["review report"] = report.index
    print(f"[review] {report.num_samples} samples, {report.num_rejects} rejects -> {report.index}")


def step_index(ctx: DemoContext) -> None:
    """Write ``index.html``: what each step produced, with links."""
    from medcurric.review import write_demo_page

    stages = [
        {**entry, **{k: ctx.out / "stages" / entry[k] for k in ("image", "attention_target") if k in entry}}
        for entry in ctx.state.get("rendered") or []  # type: ignore[attr-defined]
    ]
    result: Any = ctx.state.get("train_result")
    training = None
    if result is not None:
        training = {"steps": result.steps, "switch_steps": result.switch_steps(), "stage": result.stage,
                    "plot": ctx.out / "curriculum.png"}
    path = write_demo_page(
        ctx.out, outputs=ctx.outputs, seeds=ctx.state.get("seeds") or [],  # type: ignore[arg-type]
        stages=stages, training=training, evaluation=ctx.state.get("evaluation"),  # type: ignore[arg-type]
        heatmaps=ctx.state.get("heatmaps") or [], colorbar=ctx.state.get("colorbar"),  # type: ignore[arg-type]
        timings=ctx.timings,
    )
    ctx.outputs["summary page"] = path


#: The demo's steps, run in order.
STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("phantom", step_phantom),
    ("match", step_match),
    ("seeds", step_seeds),
    ("generate", step_generate),
    ("render", step_render),
    ("train", step_train),
    ("evaluate", step_evaluate),
    ("review", step_review),
    ("index", step_index),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR",
                        help="output directory (default ./demo-output)")
    parser.add_argument("--seed", type=int, default=0, help="phantom, generation and training seed (default 0)")
    parser.add_argument("--train-steps", type=int, default=150, metavar="N",
                        help="optimizer steps of the tiny training run (default 100)")


def run(args: argparse.Namespace) -> int:
    """Run every step of :data:`STEPS`; print where the output went."""
    check_extras()
    out = Path(args.out)
    ensure_writable(out, folder=True)
    ctx = DemoContext(out=out, seed=int(args.seed), train_steps=int(args.train_steps))
    start = time.perf_counter()
    for name, step in STEPS:
        t0 = time.perf_counter()
        step(ctx)
        ctx.timings[name] = time.perf_counter() - t0
    print(f"\n[demo] {len(STEPS)} steps in {time.perf_counter() - start:.1f} s")
    print("medcurric demo: output written to " + str(out.resolve()))
    for what, path in ctx.outputs.items():
        print(f"  {what}: {path.resolve()}")
    return 0
