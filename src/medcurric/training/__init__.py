"""The reference curriculum trainer: options, data order, checkpoints and the loop.

* :class:`TrainConfig` / :class:`TrainResult` (``config``): options and what a run produced.
* ``order``: the seeded per-stage data order that makes resumes exact.
* ``checkpoints``: checkpoint folder names and :func:`latest_checkpoint`.
* :class:`CurriculumTrainer` (``trainer``): the loop for CPU, one GPU, DDP and FSDP.
"""

from medcurric.training.checkpoints import STATE_FILE, latest_checkpoint
from medcurric.training.config import DEFAULT_LORA_TARGETS, TrainConfig, TrainResult
from medcurric.training.trainer import (
    CurriculumTrainer,
    apply_lora,
    enable_checkpointing,
    sample_domain,
)

__all__ = [
    "CurriculumTrainer",
    "DEFAULT_LORA_TARGETS",
    "STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "apply_lora",
    "enable_checkpointing",
    "latest_checkpoint",
    "sample_domain",
]
