"""Options and results of the reference trainer (plain JSON values).

Examples:
    >>> from medcurric.training import TrainConfig
    >>> cfg = TrainConfig(max_steps=10, patience=1)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from medcurric._options import look_up_option
from medcurric._serialization import JsonRecord
from medcurric.curriculum import Policy, TargetSmoothing
from medcurric.errors import InvalidOptionError
from medcurric.overlay import StylePreset

__all__ = ["DEFAULT_LORA_TARGETS", "TrainConfig", "TrainResult"]

#: LoRA targets: the language model's attention and MLP projections (not the vision tower).
#: Left at this default, :class:`CurriculumTrainer` uses the model family's own targets
#: (:attr:`medcurric.training.FamilyDefaults.lora_targets`, the same modules, matched strictly).
DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class TrainConfig(JsonRecord):
    """Options of :class:`CurriculumTrainer` (all plain JSON values).

    Attributes:
        output_dir: Where checkpoints, ``log.jsonl`` and the final adapter go.
        max_steps: Optimizer steps to train.
        batch_size: Samples per device per micro-batch.
        grad_accum: Micro-batches per optimizer step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up of the learning rate, in optimizer steps.
        max_grad_norm: Gradient clipping (``0`` disables).
        stages: Curriculum stages in order.
        check_every: Optimizer steps between scheduler checks.
        patience: Scheduler patience (non-improving checks tolerated).
        min_delta: Scheduler improvement margin.
        threshold_mode: ``"rel"`` or ``"abs"``.
        warmup_checks: First checks the scheduler ignores.
        answer_weight: Weight of the answer span's cross-entropy.
        rationale_weight: Weight of the rationale span's cross-entropy.
        attention_weight: Weight of the attention KL loss in Medium.
        attention_layers: Decoder layers whose attention is supervised (negative from the end).
        supervise: Which tokens' attention is supervised: ``"answer"``, ``"rationale"``, ``"both"``.
        stage_pools: Draw each stage's own samples (``sample.stage``) when it has any.
        lora_r: LoRA rank (``0``: train every parameter, no peft).
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_targets: Regular expression of the module names that get adapters; the default
            (:data:`DEFAULT_LORA_TARGETS`) means the model family's language-model attention and
            MLP projections (:data:`~medcurric.training.FAMILY_DEFAULTS`).
        bf16: bf16 mixed precision (and bf16 weights for checkpoints loaded by name).
        gradient_checkpointing: Non-reentrant gradient checkpointing of the model.
        save_every: Optimizer steps between checkpoints (``0``: only at the end).
        keep_checkpoints: How many of the newest checkpoints to keep (``0``: all).
        seed: Seed of the data order, the overlay styles and torch.
        log_every: Print one JSON log line every this many optimizer steps (``0``: never).
        prefetch: Render the next step's batches in a background thread during this step.
        policy: ``"global"``: one stage at a time, switched on a plateau of the loss
            checked every ``check_every`` steps (the paper's rule); ``"per_domain"``: a
            stage drawn per sample from its domain's probabilities, updated once per
            epoch from each domain's mean loss per stage (the authors' code; see
            :class:`~medcurric.curriculum.CurriculumScheduler`). An *epoch* is one pass
            over the pool of samples (the stage's own pool for ``"global"``, every
            accepted sample for ``"per_domain"``).
        mixing_start_epoch: Per-domain: Easy only before this epoch.
        mixing_ramp_epochs: Per-domain: epochs over which the Medium share ramps in.
        hard_start_epoch: Per-domain: first epoch that may draw Hard samples.
        ema_weight: Per-domain: weight of a new epoch mean in the domain's loss EMAs.
        gap_center: Per-domain: centre of the gap sigmoid.
        gap_temperature: Per-domain: temperature of the gap sigmoid.
        target_smoothing: Blur of Medium's attention target: ``None`` or ``"gaussian"``
            (kernel 9, sigma 3 patches, as the authors).
        overlay_style: Easy visual prompts, a :class:`~medcurric.overlay.StylePreset`:
            ``"vip_llava_random"`` (ViP-LLaVA's training distribution, seeded),
            ``"vip_llava"`` (its evaluation style), ``"medcurric"`` or ``"medcurric_random"``.
        overwrite_output_dir: Start a fresh run in an ``output_dir`` that holds another run's
            files (its ``checkpoint-*`` folders, ``log.jsonl`` and ``final``), deleting those
            files first; without it such a run is refused.

    Resuming a checkpoint needs the configuration it was saved with: only the fields in
    :attr:`RESUME_MAY_CHANGE` may differ (where files go, how long to train, how often to
    log and save, and switches that leave the numbers unchanged); any other difference
    is refused, since it would change the data order or the optimisation mid-run.
    """

    #: Fields that may differ between a checkpoint's configuration and the run resuming it.
    RESUME_MAY_CHANGE: ClassVar[frozenset[str]] = frozenset(
        {
            "output_dir",
            "max_steps",
            "log_every",
            "save_every",
            "keep_checkpoints",
            "prefetch",
            "gradient_checkpointing",
            "overwrite_output_dir",
        }
    )

    output_dir: str = "runs/medcurric"
    max_steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    stages: tuple[str, ...] = ("easy", "medium")
    check_every: int = 50
    patience: int = 3
    min_delta: float = 0.01
    threshold_mode: str = "rel"
    warmup_checks: int = 0
    answer_weight: float = 0.8
    rationale_weight: float = 0.2
    attention_weight: float = 0.5
    attention_layers: tuple[int, ...] = (-1,)
    supervise: str = "both"
    stage_pools: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = DEFAULT_LORA_TARGETS
    bf16: bool = False
    gradient_checkpointing: bool = False
    save_every: int = 0
    keep_checkpoints: int = 0
    seed: int = 0
    log_every: int = 0
    prefetch: bool = True
    overwrite_output_dir: bool = False
    policy: str = "global"
    mixing_start_epoch: int = 4
    mixing_ramp_epochs: int = 10
    hard_start_epoch: int = 19
    ema_weight: float = 0.9
    gap_center: float = 0.5
    gap_temperature: float = 0.1
    target_smoothing: str | None = None
    overlay_style: str = "vip_llava_random"

    def __post_init__(self) -> None:
        self.stages = tuple(str(s) for s in self.stages)
        self.attention_layers = tuple(int(i) for i in self.attention_layers)
        for name in ("max_steps", "batch_size", "grad_accum", "check_every"):
            if int(getattr(self, name)) < 1:
                raise InvalidOptionError(f"Expected {name} >= 1, but got {getattr(self, name)}.")
        for name in ("warmup_steps", "save_every", "keep_checkpoints", "lora_r", "patience", "log_every"):
            if int(getattr(self, name)) < 0:
                raise InvalidOptionError(f"Expected {name} >= 0, but got {getattr(self, name)}.")
        if not self.attention_layers:
            raise InvalidOptionError("Expected at least one attention layer, but got none.")
        self.policy = look_up_option(self.policy, Policy, name="policy").value
        self.overlay_style = look_up_option(self.overlay_style, StylePreset, name="overlay_style").value
        if self.target_smoothing is not None:
            self.target_smoothing = look_up_option(
                self.target_smoothing, TargetSmoothing, name="target_smoothing"
            ).value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise, missing keys take defaults.

        Raises:
            InvalidOptionError: On an unknown key or an invalid value.
            DataFormatError: On a value of the wrong type.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names) if isinstance(data, Mapping) else []
        if unknown:
            raise InvalidOptionError(f"Unknown TrainConfig keys {unknown}; expected some of {sorted(names)}.")
        return super().from_dict(data)


@dataclass
class TrainResult(JsonRecord):
    """What a training run produced.

    Attributes:
        steps: Optimizer steps done (counting those before a resume).
        stage: The stage at the end.
        log: One dict per optimizer step (``step``, ``stage``, ``loss``, ``lm_loss``,
            ``attention_kl``, ``answer_loss``, ``rationale_loss``, ``lr``, ``tokens``).
        decisions: The scheduler's decisions as dicts.
        checkpoints: Checkpoint folders written by this run.
        tokens_per_second: Non-padding tokens per second of this run's steps (this rank).
        seconds: Wall time of this run's steps.

    Examples:
        >>> r = TrainResult(steps=2, stage="medium", log=[{"step": 1, "loss": float("nan")}])
        >>> TrainResult.from_json(r.to_json()).log
        [{'step': 1, 'loss': 'nan'}]
    """

    steps: int
    stage: str
    log: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    tokens_per_second: float = 0.0
    seconds: float = 0.0

    def switch_steps(self) -> list[int]:
        """Optimizer steps after which the stage advanced."""
        out = []
        for prev, cur in zip(self.log, self.log[1:], strict=False):
            if prev["stage"] != cur["stage"]:
                out.append(int(prev["step"]))
        return out
