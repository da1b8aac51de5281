"""A plain PyTorch training loop through the Easy -> Medium curriculum, on CPU in seconds.

It builds the tiny random VIP-LLaVA of :mod:`medcurric.testing.tiny`, a handful of synthetic
"CT slices" with one bright lesion each, and trains with:

* :func:`medcurric.curriculum.render` + :class:`medcurric.curriculum.CurriculumCollator`
  to turn samples into batches for the current stage;
* :func:`medcurric.losses.span_weighted_lm_loss` (0.8 answer / 0.2 rationale);
* in Medium, :class:`medcurric.attention.AttentionCapture` +
  :func:`medcurric.losses.attention_kl_loss` toward the hidden box;
* :class:`medcurric.curriculum.CurriculumScheduler` stepped every ``--check-every``
  steps with the mean training loss since the last check.

Run ``python examples/plain_loop.py --plot history.png``; it prints one JSON line per
check and a JSON summary at the end (with the defaults the loss plateaus and the
curriculum moves to Medium after about 65 steps; the loop itself takes a few
seconds on one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from medcurric.attention import AttentionCapture
from medcurric.cot.records import CoTSample
from medcurric.curriculum import (
    CurriculumCollator,
    CurriculumScheduler,
    Stage,
    plot_history,
    render,
)
from medcurric.geometry import Preprocess
from medcurric.losses import attention_kl_loss, span_weighted_lm_loss
from medcurric.testing.tiny import build_tiny_vlm

ORGANS = ("liver", "kidney", "spleen", "lung")


def make_samples(n: int, seed: int) -> list[tuple[CoTSample, np.ndarray]]:
    """Synthetic 64 x 80 grey images with one bright box, and a grounded CoT sample each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 64, 80
        img = rng.integers(20, 60, (h, w), dtype=np.uint8)
        x1, y1 = int(rng.integers(4, w - 28)), int(rng.integers(4, h - 28))
        x2, y2 = x1 + int(rng.integers(10, 24)), y1 + int(rng.integers(10, 24))
        img[y1:y2, x1:x2] = 200
        organ = ORGANS[i % len(ORGANS)]
        sample = CoTSample(
            id=f"synthetic-{i}",
            seed_id=f"seed-{i}",
            stage="easy",
            question_type="open",
            question="Which organ contains the lesion?",
            rationale=f"A bright lesion is seen in the {organ}. The {organ} contains the lesion.",
            answer=organ,
            image=f"synthetic/{i}.png",
            box=(float(x1), float(y1), float(x2), float(y2)),
            image_size=(w, h),
            organ=organ,
        )
        out.append((sample, np.repeat(img[..., None], 3, axis=-1)))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--check-every", type=int, default=3, help="steps between scheduler checks")
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--min-delta", type=float, default=0.05, help="improvement of the loss that counts")
    parser.add_argument("--attention-weight", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="write the loss/stage history to this image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)  # tiny models on small CPUs: more threads are slower
    torch.manual_seed(args.seed)
    vlm = build_tiny_vlm(seed=args.seed)
    model = vlm.model.train()
    preprocess = Preprocess.from_processor(vlm.processor)  # what the image processor does to boxes
    collate = CurriculumCollator(vlm.processor)
    scheduler = CurriculumScheduler(
        stages=(Stage.EASY, Stage.MEDIUM), patience=args.patience, min_delta=args.min_delta, threshold_mode="abs"
    )
    data = make_samples(8, args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    running: list[float] = []
    stages_per_step: list[str] = []
    for step in range(args.steps):
        picks = rng.choice(len(data), size=args.batch_size, replace=False)
        features = [
            render(data[i][0], scheduler.stage, image=data[i][1], preprocess=preprocess, grid=vlm.grid, rng=int(i))
            for i in picks
        ]
        batch = collate(features)
        supervised = batch["supervised_mask"]
        medium = bool(supervised.any())  # Medium samples whose box survived the preprocessing
        capturing = AttentionCapture(model, layers=[-1], query_mask=supervised) if medium else nullcontext()
        with capturing as capture:
            out = model(**CurriculumCollator.model_inputs(batch))
            lm = span_weighted_lm_loss(
                out.logits, batch["labels"], {"answer": batch["answer_mask"], "rationale": batch["rationale_mask"]}
            )
            loss = lm
            if medium:
                kl = attention_kl_loss(
                    capture.attentions[-1],
                    batch["attention_target"],
                    token_mask=capture.query_mask,
                    has_target=batch["has_attention_target"],
                )
                loss = lm + args.attention_weight * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running.append(float(lm.detach()))
        stages_per_step.append(scheduler.stage.value)
        if (step + 1) % args.check_every == 0:
            decision = scheduler.step({"loss": sum(running) / len(running)})
            running.clear()
            if not args.quiet:
                print(json.dumps({"train_step": step + 1, **decision.to_dict()}))
    if args.plot:
        plot_history(scheduler, args.plot, title="plain loop: tiny VIP-LLaVA")
    switches = [d.step for d in scheduler.history if d.switched]
    summary = {
        "steps": args.steps,
        "checks": len(scheduler.history),
        "switch_checks": switches,
        "final_stage": scheduler.stage.value,
        "stages_per_step": stages_per_step,
        "first_loss": scheduler.history[0].value if scheduler.history else math.nan,
        "last_loss": scheduler.history[-1].value if scheduler.history else math.nan,
    }
    if not args.quiet:
        print(json.dumps({k: v for k, v in summary.items() if k != "stages_per_step"}))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
