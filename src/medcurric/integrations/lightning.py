"""Lightning adapter for :class:`~medcurric.curriculum.CurriculumScheduler`.

:class:`CurriculumCallback` reads ``trainer.callback_metrics`` after validation
(``on="validation_end"``, default monitor ``"val_loss"``) or at the end of each
training epoch (``on="train_epoch_end"``), steps the scheduler, exposes the
current stage as ``callback.stage`` and saves the scheduler state in Lightning
checkpoints under its :attr:`~CurriculumCallback.state_key`.

Examples:
    >>> from medcurric.curriculum import CurriculumScheduler
    >>> from medcurric.integrations.lightning import CurriculumCallback
    >>> cb = CurriculumCallback(CurriculumScheduler(patience=3))
    >>> cb.state_key
    "CurriculumCallback{'monitor': 'val_loss', 'on': 'validation_end'}"
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option
from medcurric.curriculum.scheduler import CurriculumScheduler, Decision
from medcurric.errors import DataFormatError, WrongTypeError
from medcurric.stage import Stage

require("lightning", feature="medcurric.integrations.lightning.CurriculumCallback")
from lightning.pytorch import Callback  # noqa: E402

__all__ = ["CurriculumCallback", "When"]

logger = logging.getLogger(__name__)


class When(StrEnum):
    """When the callback reads the metrics."""

    VALIDATION_END = "validation_end"
    TRAIN_EPOCH_END = "train_epoch_end"


class CurriculumCallback(Callback):  # type: ignore[misc]
    """Step a :class:`~medcurric.curriculum.CurriculumScheduler` from Lightning's logged metrics.

    The monitored metric is whatever your ``LightningModule`` logs with
    ``self.log(monitor, ...)``; Lightning reduces it across ranks when logged
    with ``sync_dist=True`` (the scheduler also averages across ranks when
    ``torch.distributed`` is initialised). The validation sanity check is ignored.
    A missing metric raises (``strict=True``) or skips the check.

    Args:
        scheduler: The scheduler to drive.
        monitor: Name of the logged metric.
        on: ``"validation_end"`` or ``"train_epoch_end"``.
        metric_map: Scheduler metric name -> logged name, for a gap rule's metrics
            (default: the gap rule's names as they are).
        strict: Raise when the monitored metric is missing.

    Examples:
        >>> cb = CurriculumCallback(CurriculumScheduler(), monitor="train_loss", on="train_epoch_end")
        >>> cb.stage.value, sorted(cb.state_dict())
        ('easy', ['scheduler', 'version'])
    """

    def __init__(
        self,
        scheduler: CurriculumScheduler,
        *,
        monitor: str = "val_loss",
        on: When | str = "validation_end",
        metric_map: Mapping[str, str] | None = None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(scheduler, CurriculumScheduler):
            raise WrongTypeError(f"Expected a CurriculumScheduler, but got {type(scheduler).__name__}.")
        self.scheduler = scheduler
        self.monitor = monitor
        self.on = look_up_option(on, When, name="on")
        self.strict = bool(strict)
        mapping = {scheduler.monitor: monitor}
        if scheduler.gap_rule is not None:
            for key in (scheduler.gap_rule.easy_key, scheduler.gap_rule.medium_key):
                mapping[key] = key
        mapping.update(dict(metric_map or {}))
        self.metric_map = mapping
        self.last_decision: Decision | None = None

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint's ``"callbacks"`` dict."""
        return str(self._generate_state_key(monitor=self.monitor, on=self.on.value))

    @property
    def stage(self) -> Stage:
        """The scheduler's current stage."""
        return self.scheduler.stage

    def state_dict(self) -> dict[str, Any]:
        """The scheduler state, in plain JSON types."""
        return {"version": 1, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into the scheduler."""
        self.scheduler.load_state_dict(state_dict.get("scheduler", {}))

    def _check(self, trainer: Any) -> None:
        metrics = trainer.callback_metrics
        missing = [v for v in self.metric_map.values() if v not in metrics]
        if missing:
            if self.strict:
                raise DataFormatError(
                    f"CurriculumCallback monitors {missing}, which are not among the logged metrics "
                    f"{sorted(metrics)}. Log them with self.log(...) or pass strict=False."
                )
            return
        values = {k: metrics[v] for k, v in self.metric_map.items()}
        decision = self.scheduler.step(values, epoch=int(trainer.current_epoch))
        self.last_decision = decision
        if decision.switched:
            logger.info(
                "Curriculum: %s -> %s at epoch %d, global step %d (%s)",
                decision.previous_stage.value,
                decision.stage.value,
                trainer.current_epoch,
                trainer.global_step,
                decision.reason.value,
            )

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Step after validation (``on="validation_end"``; not during the sanity check)."""
        if self.on is When.VALIDATION_END and not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Step at the end of a training epoch (``on="train_epoch_end"``)."""
        if self.on is When.TRAIN_EPOCH_END:
            self._check(trainer)
