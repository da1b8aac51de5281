"""Reference trainer: a vision-language model + LoRA through the Easy -> Medium (-> Hard) curriculum.

``--model`` takes a checkpoint of any supported family (:data:`medcurric.training.FAMILY_DEFAULTS`):
LLaVA, VIP-LLaVA (the default, ``llava-hf/vip-llava-7b-hf``), LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL,
Qwen3-VL and Gemma 3 (MedGemma); the model and processor classes come from the
checkpoint's ``config.model_type`` through transformers' Auto classes, and LoRA goes
on the family's language-model projections unless ``--lora-targets`` says otherwise.

The loop is :class:`medcurric.training.CurriculumTrainer`: the scheduler switches
stages on a loss plateau (``--policy global``, the paper's rule) or draws a stage per
sample from per-domain probabilities updated each epoch (``--policy per_domain``, the
authors' code; an epoch is one pass over the samples). Medium adds the attention-KL
loss on the supervised tokens' attention over the image tokens (SDPA kept; the target
blurred with ``--target-blur``), the LM loss weights the answer and rationale spans,
Easy images carry ViP-LLaVA's own visual prompts (``--overlay-style``); bf16, gradient
checkpointing and accumulation; checkpoints resume exactly. It runs through ``accelerate``, so the same file runs on CPU, one GPU, DDP
and FSDP::

    # the bundled sample with a tiny random model, on CPU, in seconds
    python examples/train_vip_llava.py --tiny --out runs/tiny

    # the same with a tiny model of another family (its real processor class, offline)
    python examples/train_vip_llava.py --tiny --family qwen2_5_vl --out runs/tiny-qwen

    # a real checkpoint on one GPU
    python examples/train_vip_llava.py --model llava-hf/vip-llava-7b-hf \\
        --samples samples.jsonl --images /data/deeplesion/Images_png --bf16 \\
        --gradient-checkpointing --batch-size 4 --grad-accum 4 --out runs/vip7b

    # Qwen2.5-VL
    python examples/train_vip_llava.py --model Qwen/Qwen2.5-VL-7B-Instruct \\
        --samples samples.jsonl --images /data/deeplesion/Images_png --bf16 \\
        --gradient-checkpointing --batch-size 4 --grad-accum 4 --out runs/qwen25vl-7b

    # MedGemma (Gemma 3)
    python examples/train_vip_llava.py --model google/medgemma-4b-it \\
        --samples samples.jsonl --images /data/deeplesion/Images_png --bf16 \\
        --gradient-checkpointing --batch-size 4 --grad-accum 4 --out runs/medgemma-4b

    # 8 GPUs, DDP or FSDP (an accelerate config file; wrap classes per family in FAMILY_DEFAULTS)
    accelerate launch --num_processes 8 examples/train_vip_llava.py ...
    accelerate launch --config_file fsdp.yaml examples/train_vip_llava.py ...

    # the authors' per-domain mixing and blurred attention target
    python examples/train_vip_llava.py --tiny --policy per_domain --mixing-start-epoch 0 \
        --target-blur --out runs/tiny-mixed

    # resume the newest checkpoint of --out (same options; --max-steps may grow)
    python examples/train_vip_llava.py ... --resume latest

    # start again in an --out that holds an earlier run (its files are deleted first)
    python examples/train_vip_llava.py ... --overwrite-output-dir

It prints one JSON line per ``--log-every`` steps and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from medcurric.testing import VLM_FAMILIES, bundled_sample
from medcurric.training import DEFAULT_LORA_TARGETS, CurriculumTrainer, TrainConfig, family_defaults


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (each maps onto a :class:`TrainConfig` field)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    src = p.add_argument_group("model and data")
    src.add_argument("--model", default="llava-hf/vip-llava-7b-hf",
                     help="checkpoint (name or path) of a supported family: LLaVA, VIP-LLaVA, LLaVA-OneVision, "
                          "Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3 / MedGemma")
    src.add_argument("--tiny", action="store_true", help="tiny random model + the bundled sample, offline, CPU")
    src.add_argument("--family", default="vip_llava", choices=VLM_FAMILIES,
                     help="--tiny: the family of the tiny model and its processor (default vip_llava)")
    src.add_argument("--samples", type=Path, default=None, help="CoT samples JSONL (medcurric generate)")
    src.add_argument("--images", type=Path, default=None, help="folder the samples' image paths are relative to")
    src.add_argument("--window", type=float, nargs=2, default=(-160.0, 240.0), metavar=("LOW", "HIGH"),
                     help="HU window for 16-bit (DeepLesion) images (default soft tissue -160 240)")
    src.add_argument("--out", type=Path, default=Path("runs/medcurric"), help="output folder")
    src.add_argument("--resume", default=None, metavar="CKPT", help="checkpoint folder, or 'latest'")
    src.add_argument("--overwrite-output-dir", action="store_true",
                     help="delete another run's checkpoints, log and adapter in --out and start clean")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--max-steps", type=int, default=None)
    opt.add_argument("--batch-size", type=int, default=None, help="per device")
    opt.add_argument("--grad-accum", type=int, default=1)
    opt.add_argument("--lr", type=float, default=None)
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--warmup-steps", type=int, default=0)
    opt.add_argument("--max-grad-norm", type=float, default=1.0)
    opt.add_argument("--bf16", action="store_true", help="bf16 weights and autocast")
    opt.add_argument("--gradient-checkpointing", action="store_true")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--no-prefetch", action="store_true", help="render batches in the main thread only")
    cur = p.add_argument_group("curriculum")
    cur.add_argument("--stages", default="easy,medium", help="comma-separated, e.g. easy,medium,hard or easy")
    cur.add_argument("--check-every", type=int, default=None, help="optimizer steps between scheduler checks")
    cur.add_argument("--patience", type=int, default=None)
    cur.add_argument("--min-delta", type=float, default=None)
    cur.add_argument("--threshold-mode", default="rel", choices=("rel", "abs"))
    cur.add_argument("--attention-weight", type=float, default=None)
    cur.add_argument("--attention-layers", default="-1", help="comma-separated decoder layers, e.g. -1,-2,-3")
    cur.add_argument("--supervise", default="both", choices=("answer", "rationale", "both"))
    cur.add_argument("--answer-weight", type=float, default=0.8)
    cur.add_argument("--rationale-weight", type=float, default=0.2)
    cur.add_argument("--no-stage-pools", action="store_true", help="draw every sample in every stage")
    cur.add_argument("--policy", default="global", choices=("global", "per_domain"),
                     help="global: one stage, switched on a loss plateau (the paper); per_domain: a stage "
                          "drawn per sample, probabilities updated each epoch (the authors' code)")
    cur.add_argument("--mixing-start-epoch", type=int, default=4, help="per_domain: Easy only before this epoch")
    cur.add_argument("--mixing-ramp-epochs", type=int, default=10, help="per_domain: epochs for Medium to ramp in")
    cur.add_argument("--hard-start-epoch", type=int, default=19, help="per_domain: first epoch that may draw Hard")
    cur.add_argument("--ema-weight", type=float, default=0.9, help="per_domain: weight of a new epoch mean")
    cur.add_argument("--gap-center", type=float, default=0.5, help="per_domain: centre of the gap sigmoid")
    cur.add_argument("--gap-temperature", type=float, default=0.1, help="per_domain: temperature of the gap sigmoid")
    cur.add_argument("--target-blur", action="store_true",
                     help="blur the Medium attention target (Gaussian, kernel 9, sigma 3 patches, as the authors)")
    cur.add_argument("--overlay-style", default="vip_llava_random",
                     choices=("vip_llava_random", "vip_llava", "medcurric", "medcurric_random"),
                     help="Easy visual prompts (default: ViP-LLaVA's training distribution)")
    lora = p.add_argument_group("LoRA")
    lora.add_argument("--lora-r", type=int, default=None, help="0 trains every parameter")
    lora.add_argument("--lora-alpha", type=int, default=32)
    lora.add_argument("--lora-dropout", type=float, default=0.05)
    lora.add_argument("--lora-targets", default=DEFAULT_LORA_TARGETS,
                      help="regex of the modules that get adapters (default: the family's language-model "
                           "attention and MLP projections, FAMILY_DEFAULTS)")
    ck = p.add_argument_group("checkpoints and logs")
    ck.add_argument("--save-every", type=int, default=0, help="optimizer steps between checkpoints (0: at the end)")
    ck.add_argument("--keep-checkpoints", type=int, default=0)
    ck.add_argument("--log-every", type=int, default=None)
    ck.add_argument("--plot", type=Path, default=None, help="write the curriculum plot (loss, stages) here")
    return p


#: Defaults that differ between a real run and ``--tiny`` (a few seconds on one CPU thread).
_DEFAULTS = {
    "max_steps": (2000, 40),
    "batch_size": (4, 4),
    "lr": (2e-4, 1e-2),
    "check_every": (50, 2),
    "patience": (3, 1),
    "min_delta": (0.01, 0.05),
    "attention_weight": (0.5, 1.0),
    "lora_r": (16, 8),
    "log_every": (10, 0),
}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Turn parsed options into a :class:`TrainConfig` (``--tiny`` picks small defaults)."""
    pick = 1 if args.tiny else 0
    chosen = {k: (getattr(args, k) if getattr(args, k) is not None else v[pick]) for k, v in _DEFAULTS.items()}
    return TrainConfig(
        output_dir=str(args.out),
        grad_accum=args.grad_accum,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_grad_norm=args.max_grad_norm,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        threshold_mode=args.threshold_mode,
        attention_layers=tuple(int(v) for v in args.attention_layers.split(",")),
        supervise=args.supervise,
        answer_weight=args.answer_weight,
        rationale_weight=args.rationale_weight,
        stage_pools=not args.no_stage_pools,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_targets=args.lora_targets,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        prefetch=not args.no_prefetch,
        overwrite_output_dir=args.overwrite_output_dir,
        policy=args.policy,
        mixing_start_epoch=args.mixing_start_epoch,
        mixing_ramp_epochs=args.mixing_ramp_epochs,
        hard_start_epoch=args.hard_start_epoch,
        ema_weight=args.ema_weight,
        gap_center=args.gap_center,
        gap_temperature=args.gap_temperature,
        target_smoothing="gaussian" if args.target_blur else None,
        overlay_style=args.overlay_style,
        **chosen,
    )


def load_model(name: str, *, bf16: bool) -> tuple[Any, Any]:
    """Load a checkpoint of a supported family and its processor (fast tokenizer).

    The family is read from the checkpoint's ``config.model_type`` before any weights
    are loaded (an unsupported one raises ``UnsupportedModelError`` naming the supported
    families); ``AutoModelForImageTextToText`` and ``AutoProcessor`` pick the classes.
    """
    import transformers

    family_defaults(transformers.AutoConfig.from_pretrained(name))
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = transformers.AutoModelForImageTextToText.from_pretrained(name, dtype=dtype, attn_implementation="sdpa")
    processor = transformers.AutoProcessor.from_pretrained(name, use_fast=True)
    return model, processor


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the trainer; return the summary that is printed as JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.family != "vip_llava" and not args.tiny:
        parser.error("--family picks the --tiny model; a --model checkpoint's family comes from its config")
    config = config_from_args(args)
    torch.manual_seed(config.seed)
    images = None
    if args.tiny:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from medcurric.testing import build_family_vlm

        model, processor = build_family_vlm(args.family, seed=config.seed)
    else:
        model, processor = load_model(args.model, bf16=config.bf16)
    if args.samples is not None:
        from medcurric._jsonl import read_jsonl
        from medcurric.cot.records import CoTSample

        samples = [CoTSample.from_dict(d) for d in read_jsonl(args.samples)]
    elif args.tiny:
        bundle = bundled_sample(seed=config.seed)
        samples, images = bundle.samples, bundle.images
    else:
        raise SystemExit("train_vip_llava.py: pass --samples (or --tiny for the bundled sample)")
    trainer = CurriculumTrainer(config, samples, model=model, processor=processor, images=images,
                                image_root=args.images, window=tuple(args.window))
    result = trainer.train(resume_from=args.resume)
    if args.plot is not None and trainer.accelerator.is_main_process:
        from medcurric.curriculum import plot_history

        plot_history(trainer.scheduler, args.plot, title="train_vip_llava")
    trainer.save_adapter(Path(config.output_dir) / "final")
    summary = {
        "steps": result.steps,
        "final_stage": result.stage,
        "switch_steps": result.switch_steps(),
        "first_loss": result.log[0]["lm_loss"] if result.log else None,
        "last_loss": result.log[-1]["lm_loss"] if result.log else None,
        "tokens_per_second": result.tokens_per_second,
        "checkpoints": result.checkpoints,
    }
    if trainer.accelerator.is_main_process:
        print(json.dumps(summary))
    trainer.accelerator.end_training()
    return {"summary": summary, "result": result, "trainer": trainer}


if __name__ == "__main__":
    main(sys.argv[1:])
