"""The reference curriculum trainer: options, data order, checkpoints and the loop.

* :class:`TrainConfig` / :class:`TrainResult` (``config``): options and what a run produced.
* ``order``: the seeded per-stage data order that makes resumes exact.
* ``checkpoints``: checkpoint folder names and :func:`latest_checkpoint`.
* :data:`FAMILY_DEFAULTS` (``families``): per model family, the LoRA targets and FSDP wrap classes.
* :class:`CurriculumTrainer` (``trainer``): the loop for CPU, one GPU, DDP and FSDP.
"""

from medcurric.training.checkpoints import STATE_FILE, latest_checkpoint
from medcurric.training.config import DEFAULT_LORA_TARGETS, TrainConfig, TrainResult
from medcurric.training.families import (
    FAMILY_DEFAULTS,
    FamilyDefaults,
    family_defaults,
    lora_targets_for,
)
from medcurric.training.trainer import (
    CurriculumTrainer,
    apply_lora,
    enable_checkpointing,
    sample_domain,
)

__all__ = [
    "CurriculumTrainer",
    "DEFAULT_LORA_TARGETS",
    "FAMILY_DEFAULTS",
    "FamilyDefaults",
    "STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "apply_lora",
    "enable_checkpointing",
    "family_defaults",
    "latest_checkpoint",
    "lora_targets_for",
    "sample_domain",
]
