"""The reference curriculum training loop: one loop for CPU, one GPU, DDP and FSDP.

:class:`CurriculumTrainer` is the loop behind ``examples/train_vip_llava.py`` and the
demo's training step. Per optimizer step it draws the current stage's samples,
renders them for the stage the :class:`~medcurric.curriculum.CurriculumScheduler`
chose (:func:`~medcurric.curriculum.render`), batches them with the
:class:`~medcurric.curriculum.CurriculumCollator` and trains on

* :func:`~medcurric.losses.span_weighted_lm_loss` (answer 0.8, rationale 0.2), and
* in Medium, ``attention_weight`` times :func:`~medcurric.losses.attention_kl_loss`
  between the supervised tokens' attention over the image tokens
  (:class:`~medcurric.attention.AttentionCapture`, SDPA kept) and the box target,

with gradient accumulation, clipping and a linear learning-rate warm-up. Every
``check_every`` optimizer steps the mean LM loss since the last check goes to the
scheduler (which averages it across ranks under ``torch.distributed``, so every rank
switches on the same check).

Everything runs through :class:`accelerate.Accelerator`, so ``python train.py`` and
``accelerate launch train.py`` (DDP or FSDP configurations) run the same code.

Checkpoints (``checkpoint-<step>/``) hold the trainable parameters, the optimizer and
the random-number states (``Accelerator.save_state``; with FSDP, accelerate's sharded
model files), and ``trainer_state.json``: the optimizer step, the data position of
every stage, the scheduler's ``state_dict()``, the losses accumulated since the last
check and the log. Resuming from one continues exactly as the uninterrupted run.

Data order: each stage has its own pool (the accepted samples generated for that
stage, or all samples when ``stage_pools`` is false or the stage has none). Epoch
``e`` of a pool is a permutation drawn from ``(seed, stage, e)``; each global batch
takes the next ``batch_size * world_size`` items and rank ``r`` the ``r``-th slice, so
the position is two integers per stage (``medcurric.training.order``). An *epoch* is
one pass over a pool.

Policies (``config.policy``):

* ``"global"`` (the paper's rule): every sample of a step is rendered for the
  scheduler's one stage, and the plateau check above switches it.
* ``"per_domain"`` (the authors' code): one pool of every accepted sample; each
  sample's stage is drawn with :meth:`CurriculumScheduler.sample_stage` for its
  domain (:func:`sample_domain`: lesion type x modality) from a generator seeded by
  ``(seed, sample id, epoch)``; when an epoch of the pool has been trained, each
  domain's mean LM loss (``answer_weight * answer + rationale_weight * rationale``)
  per stage over that epoch (over all ranks) goes to
  :meth:`CurriculumScheduler.step_epoch`, which updates the probabilities of the next
  draws. The last batch of an epoch may take
  the first samples of the next one (batches are never short); those are drawn before
  the epoch's losses are fed, where the authors' loader ends the epoch with a short
  batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcurric._optional import require
from medcurric.cot.records import CoTSample
from medcurric.curriculum import CurriculumCollator, CurriculumScheduler, Policy, Stage, render
from medcurric.errors import (
    DataFormatError,
    InvalidOptionError,
    MissingFileError,
    UnsupportedModelError,
)
from medcurric.training.checkpoints import (
    STATE_FILE,
    STATE_VERSION,
    checkpoint_step,
    latest_checkpoint,
)
from medcurric.training.config import DEFAULT_LORA_TARGETS, TrainConfig, TrainResult
from medcurric.training.families import family_defaults
from medcurric.training.order import next_batch, stage_pools

__all__ = ["CurriculumTrainer", "apply_lora", "enable_checkpointing", "sample_domain"]

#: Data position key of the per-domain policy's single pool.
_MIXED = "per_domain"


def sample_domain(sample: CoTSample) -> str:
    """The per-domain policy's domain of a sample: ``"<lesion type>|<modality>"``.

    The modality is ``sample.extra["modality"]`` when the seed carried it, else ``"CT"``
    (the seeds' default).

    Examples:
        >>> from medcurric.cot.records import CoTSample
        >>> s = CoTSample(id="a", seed_id="k", stage="easy", question_type="open", question="q",
        ...     rationale="r", answer="a", image="x.png", lesion_type="liver lesion")
        >>> sample_domain(s)
        'liver lesion|CT'
    """
    modality = sample.extra.get("modality") if isinstance(sample.extra, Mapping) else None
    return f"{sample.lesion_type}|{modality or 'CT'}"



def _read_image(root: str | os.PathLike[str], sample: CoTSample, window: Any) -> np.ndarray:
    """Read ``sample.image`` under ``root`` as RGB through its window (else ``window``).

    :func:`medcurric.io.load_rgb` gives the pixels the generation backends sent for the sample.
    """
    from medcurric._paths import safe_join
    from medcurric.io import load_rgb

    path = safe_join(root, sample.image)
    if not path.is_file():
        raise MissingFileError(
            f"Image {sample.image!r} of sample {sample.id!r} not found under {os.fspath(root)!r}."
        )
    return load_rgb(path, window=sample.window if sample.window is not None else window)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _write_log(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``path`` with one JSON line per record, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


_PARTS = ("loss", "lm_loss", "attention_kl", "answer_loss", "rationale_loss")


def _floats(infos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average the loss parts of micro-batches into floats (``None`` where absent); sum tokens."""
    out: dict[str, Any] = {}
    for key in _PARTS:
        vals = [float(i[key]) for i in infos if i.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    out["tokens"] = int(sum(int(i.get("tokens", 0)) for i in infos))
    return out


def enable_checkpointing(model: Any) -> bool:
    """Turn on non-reentrant activation (gradient) checkpointing; ``False`` when the model has none.

    Uses transformers' current ``activation_checkpointing_enable`` and falls back to
    ``gradient_checkpointing_enable`` on releases before it.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        return True
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        return True
    return False


def apply_lora(model: Any, lora_config: Any) -> Any:
    """``peft.get_peft_model(model, lora_config)`` without peft's deprecation noise.

    peft (0.21) reads transformers' deprecated ``is_gradient_checkpointing`` while it
    wraps a model; that FutureWarning is about peft's code, not the caller's, so it is
    silenced here and only here.
    """
    peft = require("peft", feature="LoRA adapters")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, lora_config)


#: A planned micro-batch: ``(sample index, epoch)`` pairs and, per-domain, each one's stage.
_Planned = tuple[list[tuple[int, int]], list[Stage] | None]
#: A rendered micro-batch with its plan.
_Rendered = tuple[dict[str, torch.Tensor], list[tuple[int, int]], list[Stage] | None]


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class CurriculumTrainer:
    """Train a vision-language model through the curriculum (see the module docstring).

    Supported families (:data:`~medcurric.training.FAMILY_DEFAULTS`): LLaVA, VIP-LLaVA,
    LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Gemma 3 (MedGemma). Each batch carries the
    family's own model inputs (Qwen's ``image_grid_thw`` and ``mm_token_type_ids``, Gemma 3's
    ``token_type_ids``, LLaVA-OneVision's ``image_sizes``); Medium targets follow the
    family's image-token layout (a fixed patch grid for LLaVA / VIP-LLaVA, an
    :class:`~medcurric.geometry.ImageTokenLayout` per image for the others). With the
    default ``config.lora_targets`` the adapters go on the family's language-model
    projections (:attr:`~medcurric.training.FamilyDefaults.lora_targets`).

    Args:
        config: The :class:`TrainConfig`.
        samples: Training samples (accepted :class:`~medcurric.cot.records.CoTSample`).
        model: The model (a peft model, or a bare model that gets LoRA adapters when
            ``config.lora_r > 0``).
        processor: Its processor (fast tokenizer): ``LlavaProcessor``, ``Qwen2_5_VLProcessor``,
            ``Qwen3VLProcessor``, ``Gemma3Processor`` or ``LlavaOnevisionProcessor``.
        images: Optional ``sample.image -> image`` (PIL or numpy) used instead of files.
        image_root: Folder the samples' image paths are relative to, read with
            :func:`medcurric.io.load_rgb` (16-bit PNGs are DeepLesion slices, HU = value - 32768).
        window: Window for samples whose ``window`` is ``None`` (a :class:`~medcurric.io.Window`,
            preset name or ``(low, high)`` HU); ``None``: soft tissue, as the generation backends use.
        accelerator: An ``accelerate.Accelerator``; one is made from ``config`` when ``None``.
        overlay: ``StageOverlay`` for Easy renderings; ``None``: one of ``config.overlay_style``
            (default ViP-LLaVA's training distribution) seeded with ``config.seed``.
        on_log: Called with each step's log dict (on every rank).

    Raises:
        DataFormatError: When there are no samples.
        UnsupportedModelError: When the model is not of a supported family, or the
            processor is not the model's (another image-token layout).
    """

    def __init__(
        self,
        config: TrainConfig,
        samples: Iterable[CoTSample],
        *,
        model: Any,
        processor: Any,
        images: Mapping[str, Any] | None = None,
        image_root: str | os.PathLike[str] | None = None,
        window: Any = None,
        accelerator: Any = None,
        overlay: Any = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.samples = [s for s in samples if s.accepted]
        if not self.samples:
            raise DataFormatError("Expected at least one accepted training sample, but got none.")
        if accelerator is None:
            accelerate = require("accelerate", feature="CurriculumTrainer")
            # None leaves the choice to `accelerate launch` (its config file or --mixed_precision).
            accelerator = accelerate.Accelerator(mixed_precision="bf16" if config.bf16 else None)
        self.accelerator = accelerator
        self.images = dict(images or {})
        self.image_root = image_root
        self.window = window
        if overlay is None:
            from medcurric.overlay import StageOverlay

            overlay = StageOverlay(config.overlay_style, seed=config.seed)
        self.overlay = overlay
        self.on_log = on_log
        self.processor = processor
        #: The model's :class:`~medcurric.training.FamilyDefaults` (LoRA targets, FSDP classes, layout).
        self.family = family_defaults(model)
        self.collator = CurriculumCollator(
            processor,
            supervise=config.supervise,
            smoothing=config.target_smoothing,
        )
        if self.collator.family != self.family.layout:
            raise UnsupportedModelError(
                f"The model is {self.family.model_class} ({self.family.family}: "
                f"{self.family.layout or 'fixed patch grid'} image tokens), but the processor "
                f"{type(processor).__name__} lays images out as "
                f"{self.collator.family or 'a fixed patch grid'}; pass the model's own processor "
                "(AutoProcessor.from_pretrained of the same checkpoint)."
            )
        #: The image preprocessing of a fixed-grid family (LLaVA, VIP-LLaVA); ``None`` for the others.
        self.preprocess: Any = None
        #: ``(rows, cols)`` of a fixed-grid family's patch grid; ``None`` where the layout varies per image.
        self.grid: tuple[int, int] | None = None
        if self.family.layout is None:
            from medcurric.geometry import Preprocess

            self.preprocess = Preprocess.from_processor(processor)
            self.collator.preprocess = self.preprocess
            if self.collator.grid is None:
                raise DataFormatError("Could not read the patch grid from the processor (patch_size, crop_size).")
            self.grid = (int(self.collator.grid[0]), int(self.collator.grid[1]))
        self.scheduler = CurriculumScheduler(
            stages=config.stages,
            patience=config.patience,
            min_delta=config.min_delta,
            threshold_mode=config.threshold_mode,
            warmup=config.warmup_checks,
            policy=config.policy,
            mixing_start_epoch=config.mixing_start_epoch,
            mixing_ramp_epochs=config.mixing_ramp_epochs,
            hard_start_epoch=config.hard_start_epoch,
            ema_weight=config.ema_weight,
            gap_center=config.gap_center,
            gap_temperature=config.gap_temperature,
        )
        self.per_domain = self.scheduler.policy is Policy.PER_DOMAIN
        self.pools = self._make_pools()
        self.position: dict[str, list[int]] = (
            {_MIXED: [0, 0]} if self.per_domain else {s.value: [0, 0] for s in self.scheduler.stages}
        )
        self.domains = [sample_domain(s) for s in self.samples]
        # per-domain: {epoch: {domain: {stage: [loss sum, count]}}} and the next epoch to feed
        self.epoch_losses: dict[int, dict[str, dict[str, list[float]]]] = {}
        self.epochs_fed = 0
        self.step = 0
        self.running: list[float] = []
        self.log: list[dict[str, Any]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._prefetch: tuple[str, dict[str, list[int]], Future[list[_Rendered]]] | None = None
        model = self._prepare_model(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self._trainable_names = {
            n for n, p in accelerator.unwrap_model(self.model).named_parameters() if p.requires_grad
        }
        accelerator.register_save_state_pre_hook(self._keep_trainable)

    # ------------------------------------------------------------------ setup
    def _prepare_model(self, model: Any) -> Any:
        cfg = self.config
        if cfg.gradient_checkpointing and enable_checkpointing(model):
            if hasattr(model, "config"):
                model.config.use_cache = False
        is_peft = hasattr(model, "peft_config")
        if cfg.lora_r > 0 and not is_peft:
            peft = require("peft", feature="CurriculumTrainer (LoRA)")
            # The default targets mean the family's own (language-model projections only).
            targets = self.family.lora_targets if cfg.lora_targets == DEFAULT_LORA_TARGETS else cfg.lora_targets
            lora = peft.LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=targets,
            )
            torch.manual_seed(cfg.seed)
            model = apply_lora(model, lora)
        model.train()
        return model

    def _make_pools(self) -> dict[Stage, list[int]]:
        return stage_pools([s.stage for s in self.samples], self.scheduler.stages, own=self.config.stage_pools)

    def _keep_trainable(self, models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        """``Accelerator.save_state`` hook: keep only trainable parameters (the adapters)."""
        for state in weights:
            for key in [k for k in state if not self._is_trainable_key(k)]:
                del state[key]

    def _is_trainable_key(self, key: str) -> bool:
        return key in self._trainable_names or key.removeprefix("module.") in self._trainable_names

    # ------------------------------------------------------------------ data
    def _next_batch(self, stage: Stage) -> list[tuple[int, int]]:
        """This rank's ``(sample index, epoch)`` pairs for the next micro-batch; advances the position.

        Per-domain policy: from the single pool of every sample (ordered as ``stage``'s first stage).
        """
        key, pool, order_stage = (
            (_MIXED, list(range(len(self.samples))), self.scheduler.stages[0])
            if self.per_domain
            else (stage.value, self.pools[stage], stage)
        )
        picked, self.position[key] = next_batch(
            pool,
            self.config.seed,
            order_stage,
            self.position[key],
            batch_size=self.config.batch_size,
            rank=self.accelerator.process_index,
            world=self.accelerator.num_processes,
        )
        return picked

    def draw_stage(self, index: int, epoch: int) -> Stage:
        """Per-domain policy: the stage of sample ``index`` in ``epoch``.

        :meth:`CurriculumScheduler.sample_stage` for the sample's domain, with a generator
        seeded by ``(seed, sample id, epoch)``, so a resumed run draws the same stages.
        """
        rng = np.random.default_rng([self.config.seed, _stable_int(self.samples[index].id), epoch, 1])
        return self.scheduler.sample_stage(self.domains[index], rng)

    def render_batch(
        self,
        stage: Stage,
        picked: Sequence[tuple[int, int]],
        stages: Sequence[Stage] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Render and collate samples (by index) for ``stage``; overlay styles depend on (seed, id, epoch).

        ``stages`` gives each sample its own stage instead (per-domain policy).
        """
        features = []
        for k, (index, epoch) in enumerate(picked):
            sample = self.samples[index]
            features.append(
                render(
                    sample,
                    stage if stages is None else stages[k],
                    overlay=self.overlay,
                    preprocess=self.preprocess,
                    rng=_stable_int(self.config.seed, sample.id, epoch),
                    image_root=self.image_root,
                    image=self._image(sample),
                    smoothing=self.collator.smoothing,
                    **self._render_options(),
                )
            )
        return self.collator(features)

    def _render_options(self) -> dict[str, Any]:
        """:func:`render` options of the family: the patch grid, or the processor's chat prompt."""
        if self.grid is not None:
            return {"grid": self.grid}
        return dict(self.collator.render_options)

    def _model_inputs(self, batch: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The batch's model inputs (the family's extras included), pixels in the model's dtype."""
        inputs = {k: v for k, v in CurriculumCollator.model_inputs(batch).items() if k != "labels"}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        return inputs

    def _image(self, sample: CoTSample) -> Any:
        """The sample's image: from ``images``, or read under ``image_root`` (through its window)."""
        if sample.image in self.images:
            return self.images[sample.image]
        if self.image_root is None:
            return None  # render() raises a clear MissingFileError
        return _read_image(self.image_root, sample, self.window)

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self, batch: Mapping[str, torch.Tensor], stage: Stage | None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward one batch; return the loss to back-propagate and its parts.

        The parts are detached tensors (``None`` when absent) and ``tokens`` an int, so
        nothing here waits for the device; :func:`_floats` turns them into numbers.
        ``stage=None``: a batch of samples rendered for their own stages (per-domain
        policy); ``sample_losses`` then holds each sample's LM loss (detached ``[B]``).
        """
        from medcurric.attention import AttentionCapture
        from medcurric.losses import attention_kl_loss, span_weighted_lm_loss

        cfg = self.config
        device = self.accelerator.device
        batch = {k: v.to(device) for k, v in batch.items()}
        inner = self.accelerator.unwrap_model(self.model)
        dtype = next(p.dtype for p in inner.parameters() if p.is_floating_point())
        inputs = self._model_inputs(batch, dtype)
        supervised = batch["supervised_mask"]
        # stage None: each sample has its own stage (per-domain); Medium ones carry targets
        want_kl = stage in (Stage.MEDIUM, None) and cfg.attention_weight > 0 and bool(supervised.any())
        capture: Any = (
            AttentionCapture(inner, layers=list(cfg.attention_layers), query_mask=supervised)
            if want_kl
            else nullcontext()
        )
        with capture as cap, self.accelerator.autocast():
            out = self.model(**inputs, use_cache=False)
            weights = {"answer": cfg.answer_weight, "rationale": cfg.rationale_weight}
            lm, parts = span_weighted_lm_loss(
                out.logits.float(),
                batch["labels"],
                {"answer": batch["answer_mask"], "rationale": batch["rationale_mask"]},
                weights,
                return_parts=True,
            )
            kl = torch.zeros((), device=lm.device)
            if want_kl:
                # the mean over the layers of their KLs, in one call (target and masks built once)
                kl = attention_kl_loss(
                    [cap.attentions[layer] for layer in cfg.attention_layers],
                    batch["attention_target"],
                    token_mask=cap.query_mask,
                    has_target=batch["has_attention_target"],
                    key_mask=cap.key_mask,  # samples with different numbers of image tokens
                )
            loss = lm + cfg.attention_weight * kl if want_kl else lm
        sample_losses = None
        if stage is None:
            with torch.no_grad():
                logits = out.logits.detach().float()
                sample_losses = torch.stack(
                    [
                        span_weighted_lm_loss(  # type: ignore[misc]
                            logits[i : i + 1],
                            batch["labels"][i : i + 1],
                            {
                                "answer": batch["answer_mask"][i : i + 1],
                                "rationale": batch["rationale_mask"][i : i + 1],
                            },
                            weights,
                        )
                        for i in range(logits.shape[0])
                    ]
                )
        info = {
            "loss": loss.detach(),
            "lm_loss": lm.detach(),
            "attention_kl": kl.detach() if want_kl else None,
            "answer_loss": parts.get("answer"),
            "rationale_loss": parts.get("rationale"),
            "tokens": int(batch["attention_mask"].sum()),
            "sample_losses": sample_losses,
        }
        return loss, info

    # ------------------------------------------------------------------ loop
    def _lr(self) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * (min(1.0, (self.step + 1) / warm) if warm > 0 else 1.0)

    def _plan(self, stage: Stage) -> list[_Planned]:
        plans = []
        for _ in range(self.config.grad_accum):
            picked = self._next_batch(stage)
            stages = [self.draw_stage(i, e) for i, e in picked] if self.per_domain else None
            plans.append((picked, stages))
        return plans

    def _render_all(self, stage: Stage, plans: Sequence[_Planned]) -> list[_Rendered]:
        return [(self.render_batch(stage, picked, stages), picked, stages) for picked, stages in plans]

    def _wait_prefetch(self) -> None:
        """Let a pending prefetch finish (the collator is not shared between threads)."""
        if self._prefetch is not None:
            self._prefetch[2].result()

    def _drop_prefetch(self) -> None:
        """Discard a pending prefetch and give its samples back to the data position."""
        if self._prefetch is not None:
            _, before, future = self._prefetch
            self._prefetch = None
            future.result()
            self.position = before

    def _committed_position(self) -> dict[str, list[int]]:
        """The data position of the steps done (not counting a prefetched step)."""
        source = self._prefetch[1] if self._prefetch is not None else self.position
        return {k: list(v) for k, v in source.items()}

    def _submit_prefetch(self) -> None:
        """Render the next step's batches in a background thread while the device works."""
        if not self.config.prefetch or self._prefetch is not None:
            return
        stage = self.scheduler.stage
        before = {k: list(v) for k, v in self.position.items()}
        plans = self._plan(stage)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medcurric-render")
        self._prefetch = (stage.value, before, self._executor.submit(self._render_all, stage, plans))

    def _batches(self, stage: Stage) -> list[_Rendered]:
        if self._prefetch is not None and self._prefetch[0] == stage.value:
            future = self._prefetch[2]
            self._prefetch = None
            return future.result()
        self._drop_prefetch()
        return self._render_all(stage, self._plan(stage))

    def _add_epoch_loss(self, index: int, epoch: int, stage: Stage, loss: float) -> None:
        per_stage = self.epoch_losses.setdefault(epoch, {}).setdefault(self.domains[index], {})
        acc = per_stage.setdefault(stage.value, [0.0, 0])
        acc[0] += loss
        acc[1] += 1

    def _feed_finished_epochs(self) -> list[dict[str, Any]]:
        """Per-domain: give every fully trained epoch's mean losses to ``step_epoch``.

        Epoch ``e`` is trained once the data position has passed its last sample (the
        same step on every rank). Returns one ``{"epoch", "losses", "decision"}`` per epoch fed.
        """
        epoch, cursor = self.position[_MIXED]
        done = epoch + 1 if cursor >= len(self.samples) else epoch
        out = []
        while self.epochs_fed < done:
            e = self.epochs_fed
            sums = self._gather_sums(self.epoch_losses.pop(e, {}))
            means = {d: {st: acc[0] / acc[1] for st, acc in per.items()} for d, per in sorted(sums.items())}
            decision = self.scheduler.step_epoch(means, epoch=e)
            out.append({"epoch": e, "losses": means, "decision": decision.to_dict()})
            self.epochs_fed = e + 1
        return out

    def _gather_sums(self, sums: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
        """Every rank's epoch sums merged, so all ranks feed the same means (a rank may hold none)."""
        import torch.distributed as dist

        if not (self.accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized()):
            return sums
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, sums)
        merged: dict[str, dict[str, list[float]]] = {}
        for part in gathered:
            for domain, per in part.items():
                for stage, (total, count) in per.items():
                    acc = merged.setdefault(domain, {}).setdefault(stage, [0.0, 0])
                    acc[0] += total
                    acc[1] += count
        return merged

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (``grad_accum`` micro-batches); returns its log dict.

        With ``config.prefetch`` the next step's batches are rendered in a background
        thread while the device computes this one (rendering uses no global random
        state, so the run is the same with or without it).
        """
        cfg = self.config
        stage = self.scheduler.stage
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        lr = self._lr()
        infos = []
        drawn: list[list[Any]] = []
        for micro, (batch, picked, stages) in enumerate(self._batches(stage)):
            sync = micro == cfg.grad_accum - 1
            ctx = nullcontext() if sync else self.accelerator.no_sync(self.model)
            with ctx:
                loss, info = self.compute_loss(batch, None if self.per_domain else stage)
                self.accelerator.backward(loss / cfg.grad_accum)
            infos.append(info)
            if stages is not None:
                losses = info["sample_losses"].cpu().tolist()
                for (index, epoch), st, value in zip(picked, stages, losses, strict=True):
                    self._add_epoch_loss(index, epoch, st, float(value))
                    drawn.append([index, epoch, st.value])
        if cfg.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        record: dict[str, Any] = {"step": self.step, "stage": stage.value, "lr": lr}
        record.update(_floats(infos))
        if self.per_domain:
            record["drawn"] = drawn
            ended = self._feed_finished_epochs()
            if ended:
                record["epochs"] = ended
            self._submit_prefetch()  # after the feed, so the next draws use its probabilities
            self.log.append(record)
            return record
        check = self.step % cfg.check_every == 0
        if not check:
            self._submit_prefetch()  # the stage cannot change before the next check
        self.running.append(float(record["lm_loss"]))
        if check:
            decision = self.scheduler.step({"loss": float(np.mean(self.running))})
            self.running = []
            record["decision"] = decision.to_dict()
            self._submit_prefetch()
        self.log.append(record)
        return record

    @torch.no_grad()
    def hold_out(self, keep_out: Callable[[CoTSample], bool]) -> list[int]:
        """Take the samples ``keep_out`` selects out of every stage's pool (before training).

        They stay in :attr:`samples`, so :meth:`evaluate`, :meth:`attention_maps` and
        :meth:`answer` can measure them as held-out data.

        Returns:
            The indices of the held-out samples in :attr:`samples`.

        Raises:
            DataFormatError: When training has started, or nothing would be left to train on.
        """
        if self.step:
            raise DataFormatError("hold_out() changes the data order: call it before training starts.")
        held = {i for i, s in enumerate(self.samples) if keep_out(s)}
        pools = {stage: [i for i in pool if i not in held] for stage, pool in self.pools.items()}
        if not all(pools.values()):
            raise DataFormatError(
                f"Holding out {len(held)} samples would leave a stage without samples to train on."
            )
        self.pools = pools
        return sorted(held)

    def attention_maps(self, samples: Sequence[CoTSample]) -> np.ndarray:
        """Each sample's Medium attention over the image tokens, as the KL sees it.

        The supervised tokens' attention of :attr:`TrainConfig.attention_layers`, captured
        with :class:`~medcurric.attention.AttentionCapture` in eval mode without gradients,
        averaged over layers, heads and supervised tokens, normalised to sum 1.

        Returns:
            ``[N, P]`` float array (``P`` image tokens, in sequence order). Where the number
            of image tokens depends on the image (Qwen, LLaVA-OneVision), rows of images
            with fewer tokens end in zeros.
        """
        from medcurric.attention import AttentionCapture

        index = {s.id: i for i, s in enumerate(self.samples)}
        inner = self.accelerator.unwrap_model(self.model)
        dtype = next(p.dtype for p in inner.parameters() if p.is_floating_point())
        device = next(inner.parameters()).device
        layers = list(self.config.attention_layers)
        maps = []
        was_training = inner.training
        inner.eval()
        try:
            for s in samples:
                batch = {k: v.to(device) for k, v in self.render_batch(Stage.MEDIUM, [(index[s.id], 0)]).items()}
                with torch.no_grad(), AttentionCapture(inner, layers=layers, query_mask=batch["supervised_mask"]) as cap:
                    inner(**self._model_inputs(batch, dtype))
                    rows = torch.stack([cap.attentions[layer] for layer in layers])  # [K, B, H, Q, P]
                    if cap.query_mask is None:
                        raise DataFormatError(f"Sample {s.id!r} has no supervised tokens in its Medium rendering.")
                    att = rows[:, 0][:, :, cap.query_mask[0]].mean(dim=(0, 1, 2))
                maps.append((att / att.sum()).float().cpu().numpy())
        finally:
            inner.train(was_training)
        if not maps:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.zeros((len(maps), max(m.size for m in maps)), dtype=maps[0].dtype)
        for row, m in zip(out, maps, strict=True):
            row[: m.size] = m
        return out

    def answer(self, samples: Sequence[CoTSample], *, max_new_tokens: int = 12) -> dict[str, str]:
        """Greedy answers of the model to the samples' Hard prompts (image and question only).

        Returns:
            ``{sample id: reply}`` with the ``Answer:`` label removed.
        """
        inner = self.accelerator.unwrap_model(self.model)
        dtype = next(p.dtype for p in inner.parameters() if p.is_floating_point())
        device = next(inner.parameters()).device
        tokenizer = self.processor.tokenizer
        out: dict[str, str] = {}
        was_training = inner.training
        inner.eval()
        try:
            for s in samples:
                r = render(s, Stage.HARD, image=self._image(s), **self._render_options())
                # one image per sample: nested for the families that take several (Gemma 3)
                images = [r.image] if self.collator.family is None else [[r.image]]
                enc = self.processor(images=images, text=[r.prompt], return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                enc["pixel_values"] = enc["pixel_values"].to(dtype)
                with torch.no_grad():
                    ids = inner.generate(
                        **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                    )
                text = tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                out[s.id] = text.replace("Answer:", "").strip()
        finally:
            inner.train(was_training)
        return out

    def evaluate(self, stage: Stage | str, indices: Sequence[int] | None = None) -> dict[str, float]:
        """Mean loss parts of samples rendered for ``stage``, in eval mode, without gradients.

        Nothing random is consumed (no dropout, fixed overlay styles), so calling it
        between steps does not change the training run. Use it for held-out losses,
        e.g. the Easy and Medium rationale losses of a :class:`~medcurric.curriculum.GapRule`.

        Args:
            stage: The stage to render for.
            indices: Sample indices (default: that stage's pool).

        Returns:
            ``loss``, ``lm_loss``, ``attention_kl`` (Medium), ``answer_loss``, ``rationale_loss``,
            averaged over batches of ``batch_size``.
        """
        from medcurric._options import look_up_option

        st = look_up_option(stage, Stage, name="stage")
        self._wait_prefetch()
        idx = list(self.pools.get(st, range(len(self.samples))) if indices is None else indices)
        was_training = self.model.training
        self.model.eval()
        rows = []
        try:
            for k in range(0, len(idx), self.config.batch_size):
                picked = [(i, 0) for i in idx[k : k + self.config.batch_size]]
                _, info = self.compute_loss(self.render_batch(st, picked), st)
                rows.append(info)
        finally:
            self.model.train(was_training)
        return {k: (math.nan if v is None else v) for k, v in _floats(rows).items() if k != "tokens"}

    def train(self, *, resume_from: str | os.PathLike[str] | None = None) -> TrainResult:
        """Train until ``config.max_steps`` optimizer steps (resuming first, if asked).

        Args:
            resume_from: A checkpoint folder, or ``"latest"`` for the newest one in
                ``config.output_dir`` (nothing to resume is fine then).

        Returns:
            The :class:`TrainResult`.

        Raises:
            InvalidOptionError: When ``config.output_dir`` holds another run's files
                (``checkpoint-*``, ``log.jsonl``, ``final``; when resuming in it, checkpoints
                newer than the one resumed) and ``config.overwrite_output_dir`` is false.
            DataFormatError: When the checkpoint was saved with another configuration
                (fields outside :attr:`TrainConfig.RESUME_MAY_CHANGE`), other data, another
                world size, or holds edited values.
        """
        cfg = self.config
        path = None
        if resume_from is not None:
            path = latest_checkpoint(cfg.output_dir) if str(resume_from) == "latest" else Path(resume_from)
        out = Path(cfg.output_dir)
        self._claim_output_dir(out, path)
        if path is not None:
            self.load_checkpoint(path)
        if self.accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            if path is not None:  # the log of the steps resumed, without those done after the checkpoint
                _write_log(out / "log.jsonl", self.log)
        written: list[str] = []
        tokens = 0
        start = time.perf_counter()
        first = self.step
        while self.step < cfg.max_steps:
            record = self.train_step()
            tokens += record["tokens"]
            if self.accelerator.is_main_process:
                with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            if self.on_log is not None:
                self.on_log(record)
            if cfg.log_every and self.step % cfg.log_every == 0 and self.accelerator.is_main_process:
                print(json.dumps({k: v for k, v in record.items() if k != "decision"}), flush=True)
            if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.max_steps:
                written.append(str(self.save_checkpoint(out / f"checkpoint-{self.step}")))
        self._drop_prefetch()
        if self._executor is not None:  # no render thread outlives the run (or the process group)
            self._executor.shutdown(wait=True)
            self._executor = None
        seconds = time.perf_counter() - start
        return TrainResult(
            steps=self.step,
            stage=self.scheduler.stage.value,
            log=list(self.log),
            decisions=[d.to_dict() for d in self.scheduler.history],
            checkpoints=written,
            tokens_per_second=tokens / seconds if seconds > 0 and self.step > first else 0.0,
            seconds=seconds,
        )

    # ------------------------------------------------------------------ checkpoints
    def _claim_output_dir(self, out: Path, resume: Path | None) -> None:
        """Refuse to mix two runs in ``out``; with ``overwrite_output_dir``, delete the other's files.

        A run resumed from ``out/checkpoint-<s>`` owns the checkpoints up to ``s``, the log
        and ``final``; everything a trainer writes there besides is another run's.
        """
        if not out.is_dir():
            return
        resumed_here = resume is not None and resume.resolve().parent == out.resolve()
        step = checkpoint_step(resume.name) if resume is not None and resumed_here else None
        foreign = []
        for p in sorted(out.iterdir()):
            n = checkpoint_step(p.name)
            if n is not None:
                if not resumed_here or step is None or n > step:
                    foreign.append(p)
            elif p.name in ("log.jsonl", "final") and not resumed_here:
                foreign.append(p)
        if not foreign:
            return
        names = ", ".join(p.name for p in foreign[:6]) + (" ..." if len(foreign) > 6 else "")
        if not self.config.overwrite_output_dir:
            what = "a later part of another run" if resumed_here else "another run"
            raise InvalidOptionError(
                f"Expected output_dir '{out}' to hold no other run's files, but it has {what}'s "
                f"({names}); two runs in one folder mix their logs and checkpoints. Resume it with "
                "resume_from='latest' (--resume latest), pass overwrite_output_dir=True "
                "(--overwrite-output-dir) to delete them and start clean, or choose another output_dir."
            )
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            import shutil

            for p in foreign:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        self.accelerator.wait_for_everyone()

    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state (plain JSON): step, data position, scheduler, pending losses, log.

        Under ``torch.distributed`` every rank must call it (it gathers each rank's
        pending losses); :meth:`save_checkpoint` does.
        """
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "position": self._committed_position(),
            "scheduler": self.scheduler.state_dict(),
            "running": list(self.running),
            "running_per_rank": self._gather_running(),
            "log": list(self.log),
            "config": self.config.to_dict(),
            "num_samples": len(self.samples),
            "world_size": self.accelerator.num_processes,
            "epoch_losses_per_rank": self._gather_epoch_losses(),
            "epochs_fed": self.epochs_fed,
        }

    def _gather_running(self) -> list[list[float]]:
        """Every rank's losses since the last check (each rank monitors its own before averaging)."""
        import torch.distributed as dist

        if self.accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized():
            out: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(out, list(self.running))
            return [list(v) for v in out]
        return [list(self.running)]

    def _gather_epoch_losses(self) -> list[dict[str, Any]]:
        """Every rank's per-domain loss sums of epochs not yet fed (each rank keeps its own)."""
        import torch.distributed as dist

        mine = {str(e): v for e, v in self.epoch_losses.items()}
        if self.accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized():
            out: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(out, mine)
            return list(out)
        return [mine]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the model/optimizer/RNG come from :meth:`load_checkpoint`).

        Raises:
            DataFormatError: When the checkpoint was written for other data, another world size
                or another configuration (see :attr:`TrainConfig.RESUME_MAY_CHANGE`), or holds
                values out of range; nothing is loaded then.
        """
        self._check_state(state)
        if int(state.get("num_samples", len(self.samples))) != len(self.samples):
            raise DataFormatError(
                f"The checkpoint was trained on {state.get('num_samples')} samples, but this run has "
                f"{len(self.samples)}; resume with the same data."
            )
        if int(state.get("world_size", self.accelerator.num_processes)) != self.accelerator.num_processes:
            raise DataFormatError(
                f"The checkpoint was written by {state.get('world_size')} processes, but this run has "
                f"{self.accelerator.num_processes}; the data position would not continue exactly. "
                "Resume with the same number of processes."
            )
        self._drop_prefetch()
        self.step = int(state["step"])
        self.position = {k: [int(v[0]), int(v[1])] for k, v in state["position"].items()}
        self.scheduler.load_state_dict(state["scheduler"])
        per_rank = state.get("running_per_rank")
        mine = per_rank[self.accelerator.process_index] if per_rank else state.get("running", [])
        self.running = [float(v) for v in mine]
        self.log = list(state.get("log", []))
        pending = state.get("epoch_losses_per_rank") or [{}]
        self.epoch_losses = {
            int(e): {d: {st: [float(a[0]), int(a[1])] for st, a in per.items()} for d, per in v.items()}
            for e, v in pending[min(self.accelerator.process_index, len(pending) - 1)].items()
        }
        self.epochs_fed = int(state.get("epochs_fed", 0))

    def _check_state(self, state: Any) -> None:
        """Refuse a trainer state that another configuration wrote, or that was edited."""
        if not isinstance(state, Mapping):
            raise DataFormatError(f"Expected the trainer state to be a JSON object, but got {type(state).__name__}.")
        version = state.get("version", 0)
        if not _is_count(version) or version > STATE_VERSION:
            raise DataFormatError(
                f"Trainer state has version {version!r}; this medcurric reads versions 0 to {STATE_VERSION}."
            )
        saved = state.get("config")
        if saved is not None:
            if not isinstance(saved, Mapping):
                raise DataFormatError(f"Trainer state field `config`: expected an object, but got {saved!r}.")
            now = json.loads(json.dumps(self.config.to_dict()))
            defaults = json.loads(json.dumps(TrainConfig().to_dict()))
            changed = [
                f"{name} {saved.get(name, defaults[name])!r} -> {now[name]!r}"
                for name in now
                if name not in TrainConfig.RESUME_MAY_CHANGE and saved.get(name, defaults[name]) != now[name]
            ]
            if changed:
                raise DataFormatError(
                    "The checkpoint was saved with another configuration ("
                    + "; ".join(changed)
                    + "): resuming would change the data order or the optimisation mid-run. Resume "
                    "with the saved values (only "
                    + ", ".join(sorted(TrainConfig.RESUME_MAY_CHANGE))
                    + " may change), or train into a new output_dir."
                )
        step = state.get("step")
        if not _is_count(step):
            raise DataFormatError(f"Trainer state field `step`: expected an integer >= 0, but got {step!r}.")
        position = state.get("position")
        keys = sorted(self.position)  # one per stage, or the one mixed pool of the per-domain policy
        if not isinstance(position, Mapping) or sorted(position) != keys:
            raise DataFormatError(
                f"Trainer state field `position`: expected an object with keys {keys}, but got {position!r}."
            )
        for key, value in position.items():
            if not (isinstance(value, list) and len(value) == 2 and all(_is_count(v) for v in value)):
                raise DataFormatError(
                    f"Trainer state field `position[{key!r}]`: expected [epoch, offset] integers >= 0, "
                    f"but got {value!r}."
                )
        running = [state.get("running", []), *(state.get("running_per_rank") or [])]
        for values in running:
            if not (isinstance(values, list) and all(_is_number(v) for v in values)):
                raise DataFormatError(
                    f"Trainer state field `running`: expected lists of finite numbers, but got {values!r}."
                )
        if not isinstance(state.get("log", []), list):
            raise DataFormatError("Trainer state field `log`: expected a list of step records.")

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint folder (model adapters, optimizer, RNG states, ``trainer_state.json``)."""
        path = Path(path)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(path), safe_serialization=True)
        state = self.state_dict()  # on every rank: it gathers their pending losses
        if self.accelerator.is_main_process:
            tmp = path / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, path / STATE_FILE)
            self._prune(path.parent)
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`.

        Raises:
            MissingFileError: When ``path`` is not a checkpoint folder.
            DataFormatError: When its ``trainer_state.json`` does not fit this trainer
                (see :meth:`load_state_dict`).
        """
        path = Path(path)
        state_file = path / STATE_FILE
        if not state_file.is_file():
            raise MissingFileError(
                f"Expected a checkpoint folder with {STATE_FILE} at '{path}', but there is none; "
                "pass a checkpoint-<step> folder or 'latest'."
            )
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataFormatError(f"Expected JSON in '{state_file}', but it does not parse ({exc}).") from None
        self._check_state(state)  # before any weights are loaded
        self.accelerator.load_state(str(path), strict=False)
        self.load_state_dict(state)

    def _prune(self, root: Path) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        steps = ((checkpoint_step(p.name), p) for p in root.glob("checkpoint-*"))
        found = sorted((n, p) for n, p in steps if n is not None)
        import shutil

        for _, p in found[:-keep]:
            shutil.rmtree(p, ignore_errors=True)

    def save_adapter(self, path: str | os.PathLike[str]) -> Path:
        """Save the final model (peft: the adapter only) with ``save_pretrained``."""
        path = Path(path)
        self.accelerator.wait_for_everyone()
        inner = self.accelerator.unwrap_model(self.model)
        if self.accelerator.is_main_process:
            inner.save_pretrained(str(path), safe_serialization=True)
        self.accelerator.wait_for_everyone()  # no rank tears the process group down while another saves
        return path
