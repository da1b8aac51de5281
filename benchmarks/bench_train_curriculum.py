"""Benchmark: the reference curriculum trainer against the same loop without the curriculum machinery.

Model: a random-initialised VIP-LLaVA-7B-shaped model (CLIP ViT-L/14 at 336 px, 576
image tokens, features of layers -2, -5, -8, -11, 6; Llama-7B language model: hidden
4096, 32 layers, 32 heads), built directly on the GPU in bf16, with peft LoRA
(:data:`medcurric.training.DEFAULT_LORA_TARGETS`, rank ``--lora-r``). No weights are
downloaded: the tokenizer is the tiny offline one of :mod:`medcurric.testing.tiny` (its ids are
valid in the 32064-token vocabulary) inside a ``LlavaProcessor`` at 336 px / patch 14.
Data: the bundled sample (phantom -> seeds -> template CoT samples).

Two loops over the same model, in the same process:

- ``curriculum``: :meth:`medcurric.training.CurriculumTrainer.train_step` - per step the
  samples are rendered for the scheduler's stage (Easy overlay drawn), collated with
  span masks and attention targets, the span-weighted LM loss is taken, in Medium
  :class:`~medcurric.attention.AttentionCapture` + the attention KL on
  ``--attention-layers`` layers are added, and the scheduler is checked. The next step's
  batches are rendered in a background thread while the device computes (``prefetch``). The scheduler
  switches Easy -> Medium on its own (``patience=0`` and a 50 % relative ``min_delta``,
  checked every ``steps / 4`` steps, so the second check is a plateau).
- ``plain``: the same optimizer step (autocast, backward, clipping, AdamW) on batches of
  the same stage rendered and collated *before* timing, with the model's own
  cross-entropy (``labels=``), no capture, no KL, no scheduler.

Per stage and loop: median step time with quartiles after ``--warmup`` steps,
tokens/s (non-padding tokens), peak memory (``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``; ``None`` on CPU) and the overhead
``curriculum / plain - 1`` of the medians (target: within 2 %). Also the median time of
rendering + collating a batch inside the curriculum step (CPU work). ``--tiny`` runs
the same on CPU with the tiny model (for the smoke test); ``--quick`` shortens it.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from _models import vip_llava_7b

from medcurric.curriculum import Stage
from medcurric.testing import bundled_sample
from medcurric.training import CurriculumTrainer, TrainConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def _summary(times: list[float], tokens: list[int], warmup: int, device: torch.device) -> dict[str, Any]:
    t, n = times[warmup:], tokens[warmup:]
    if not t:
        t, n = times, tokens
    q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
    return {
        "steps": len(times),
        "timed_steps": len(t),
        "median_s": statistics.median(t),
        "q1_s": q[0],
        "q3_s": q[2],
        "tokens_per_s": sum(n) / sum(t),
        "peak_memory_gib": _peak_gib(device),
    }


def _plain_step(trainer: CurriculumTrainer, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> int:
    """One optimizer step of the loop without curriculum machinery; returns its token count."""
    acc = trainer.accelerator
    device = acc.device
    inner = acc.unwrap_model(trainer.model)
    dtype = next(p.dtype for p in inner.parameters() if p.is_floating_point())
    with acc.autocast():
        out = trainer.model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            pixel_values=batch["pixel_values"].to(device, dtype),
            labels=batch["labels"].to(device),
            use_cache=False,
        )
    acc.backward(out.loss)
    if trainer.config.max_grad_norm > 0:
        acc.clip_grad_norm_(trainer.model.parameters(), trainer.config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return int(batch["attention_mask"].sum())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print (and return) the JSON result."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke test)")
    p.add_argument("--quick", action="store_true", help="few steps")
    p.add_argument("--steps", type=int, default=None, help="curriculum steps in all (default 300; tiny 16)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps of each stage segment")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--attention-layers", default="-1,-2,-3,-4,-5,-6,-7,-8")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    steps = args.steps or ((8 if args.quick else 16) if args.tiny else (40 if args.quick else 300))
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else (3 if args.quick else 10))
    torch.manual_seed(args.seed)
    from medcurric.testing.tiny import build_tiny_processor, build_tiny_vlm

    if args.tiny:
        torch.set_num_threads(1)
        vlm = build_tiny_vlm(num_layers=4, num_kv_heads=2, seed=args.seed)
        model, processor = vlm.model, vlm.processor
        layers = (-1, -2)
        device_name = "cpu (tiny model)"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_train_curriculum.py needs a CUDA GPU (or --tiny for the CPU smoke run)")
        processor = build_tiny_processor(image_size=336, patch_size=14)
        tok = processor.tokenizer
        model = vip_llava_7b(
            torch.device("cuda"),
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            pad_token_id=tok.pad_token_id,
        )
        model.set_attn_implementation("sdpa")
        layers = tuple(int(v) for v in args.attention_layers.split(","))
        device_name = torch.cuda.get_device_name()
    bundle = bundled_sample(seed=args.seed)
    out_dir = tempfile.mkdtemp(prefix="bench_train_curriculum-")
    config = TrainConfig(
        output_dir=out_dir, max_steps=steps, batch_size=args.batch_size, lr=2e-4, stages=("easy", "medium"),
        check_every=max(1, steps // 4), patience=0, min_delta=0.5, threshold_mode="rel", attention_weight=0.5,
        attention_layers=layers, lora_r=args.lora_r, bf16=not args.tiny,
        gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
    )
    trainer = CurriculumTrainer(config, bundle.samples, model=model, processor=processor, images=bundle.images)
    device = trainer.accelerator.device

    # Time rendering + collating inside the curriculum step.
    render_times: dict[str, list[float]] = {"easy": [], "medium": []}
    original: Callable[..., dict[str, torch.Tensor]] = trainer.render_batch

    def timed_render(stage: Stage, picked: Any, stages: Any = None) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        out = original(stage, picked, stages)
        render_times[Stage(stage).value].append(time.perf_counter() - t0)
        return out

    trainer.render_batch = timed_render  # type: ignore[method-assign]

    # Batches for the plain loop: rendered and collated before timing (same stages, same sizes).
    plain_batches: dict[str, list[dict[str, torch.Tensor]]] = {}
    for stage in (Stage.EASY, Stage.MEDIUM):
        pool = trainer.pools[stage]
        plain_batches[stage.value] = [
            original(stage, [(pool[(k * args.batch_size + j) % len(pool)], 0) for j in range(args.batch_size)])
            for k in range(8)
        ]
    plain_opt = torch.optim.AdamW([p for p in trainer.model.parameters() if p.requires_grad], lr=2e-4)

    results: dict[str, dict[str, Any]] = {"easy": {}, "medium": {}}
    segment: dict[str, list[Any]] = {"easy": [[], []], "medium": [[], []]}
    _reset_peak(device)
    current = trainer.scheduler.stage.value
    switch_step = None
    while trainer.step < steps:
        stage = trainer.scheduler.stage.value
        if stage != current:
            results[current]["curriculum"] = _summary(*segment[current], warmup, device)
            _reset_peak(device)
            current, switch_step = stage, trainer.step
        _sync(device)
        t0 = time.perf_counter()
        record = trainer.train_step()
        _sync(device)
        segment[stage][0].append(time.perf_counter() - t0)
        segment[stage][1].append(record["tokens"])
    results[current]["curriculum"] = _summary(*segment[current], warmup, device)
    trainer._drop_prefetch()  # nothing renders in the background during the plain loop
    for stage in ("easy", "medium"):
        n = len(segment[stage][0])
        if n == 0:
            continue
        times, tokens = [], []
        _reset_peak(device)
        batches = plain_batches[stage]
        for k in range(n):
            _sync(device)
            t0 = time.perf_counter()
            tokens.append(_plain_step(trainer, plain_opt, batches[k % len(batches)]))
            _sync(device)
            times.append(time.perf_counter() - t0)
        results[stage]["plain"] = _summary(times, tokens, warmup, device)
        cur, base = results[stage]["curriculum"], results[stage]["plain"]
        results[stage]["overhead"] = cur["median_s"] / base["median_s"] - 1.0
        # Per-token overhead (batches of the two loops may differ slightly in length).
        results[stage]["overhead_per_token"] = base["tokens_per_s"] / cur["tokens_per_s"] - 1.0
        rt = render_times[stage][warmup:] or render_times[stage]
        results[stage]["render_collate_median_s"] = statistics.median(rt) if rt else None
    overheads = [results[s]["overhead"] for s in ("easy", "medium") if "overhead" in results[s]]
    result = {
        "benchmark": "train_curriculum",
        "device": device_name,
        "model": "tiny VIP-LLaVA" if args.tiny else "VIP-LLaVA-7B-shaped, random init, bf16",
        "torch": torch.__version__,
        "steps": steps,
        "warmup": warmup,
        "batch_size": args.batch_size,
        "lora_r": args.lora_r,
        "attention_layers": list(layers),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "switch_step": switch_step,
        "stages": results,
        "max_overhead": max(overheads) if overheads else None,
        "target_overhead": 0.02,
        "within_target": bool(overheads) and max(overheads) <= 0.02,
    }
    print(json.dumps(result))
    trainer.render_batch = original  # type: ignore[method-assign]
    return result


if __name__ == "__main__":
    main()
