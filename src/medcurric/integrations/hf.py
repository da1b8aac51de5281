"""Hugging Face ``Trainer`` adapter for :class:`~medcurric.curriculum.CurriculumScheduler`.

:class:`CurriculumCallback` feeds the scheduler a metric when the ``Trainer``
evaluates (``event="evaluate"``, default metric ``"eval_loss"``) or logs
(``event="log"``, default metric ``"loss"``), exposes the current stage as
``callback.stage`` for a collator or dataset, and stores the scheduler's state in
each checkpoint's ``trainer_state.json`` (``ExportableState``), from where
``trainer.train(resume_from_checkpoint=...)`` restores it.

Examples:
    >>> from medcurric.curriculum import CurriculumScheduler
    >>> from medcurric.integrations.hf import CurriculumCallback
    >>> cb = CurriculumCallback(CurriculumScheduler(patience=3), event="evaluate")
    >>> cb.stage.value, cb.metric
    ('easy', 'eval_loss')
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option, warn_ignored
from medcurric.curriculum.scheduler import CurriculumScheduler, Decision
from medcurric.errors import MedcurricWarning, WrongTypeError
from medcurric.stage import Stage

transformers = require("transformers", feature="medcurric.integrations.hf.CurriculumCallback")
from transformers.trainer_callback import ExportableState, TrainerCallback  # noqa: E402

__all__ = ["CurriculumCallback", "Event"]

logger = logging.getLogger(__name__)

#: Schedulers of live callbacks by name, so that the callback the ``Trainer`` re-creates
#: from a checkpoint restores the state into the user's scheduler (which a collator may hold).
_LIVE: dict[str, weakref.ref[CurriculumScheduler]] = {}


class Event(StrEnum):
    """Which ``Trainer`` event feeds the scheduler."""

    EVALUATE = "evaluate"
    LOG = "log"


class CurriculumCallback(TrainerCallback, ExportableState):  # type: ignore[misc]
    """Step a :class:`~medcurric.curriculum.CurriculumScheduler` from ``Trainer`` metrics.

    On every ``on_evaluate`` (or ``on_log``) whose metrics hold ``metric``, the
    callback calls ``scheduler.step`` with ``{scheduler.monitor: metrics[metric]}``
    (plus the gap rule's two metrics, looked up as ``"eval_" + name`` for
    ``event="evaluate"`` or ``name`` for ``"log"``, unless ``metric_map`` says
    otherwise) and ``epoch=int(state.epoch)``. Events without the metric are
    skipped (the ``Trainer`` also logs learning rates and run summaries).

    Checkpoints: the scheduler's configuration and state go into
    ``trainer_state.json``. On resume the ``Trainer`` re-creates this callback from
    them; the new instance loads the state into the live scheduler registered under
    the same ``name`` (the one your collator holds), or into a new scheduler built
    from the saved configuration when there is none.

    The ``Trainer`` restores callback states only with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)``; the callback
    warns when a run resumes without it.

    The ``Trainer``'s data loader may fetch one batch ahead, so a collator that reads
    :attr:`stage` sees a switch from the batch after next.

    Args:
        scheduler: The scheduler to drive; a default one (or the live one named
            ``name``) when ``None``.
        metric: Name of the metric in the ``Trainer``'s metrics/logs; ``"eval_loss"``
            for ``event="evaluate"``, ``"loss"`` for ``event="log"`` when ``None``.
        event: ``"evaluate"`` or ``"log"``.
        metric_map: Scheduler metric name -> ``Trainer`` metric name, for the extra
            metrics a gap rule needs.
        name: Registry name linking a restored callback to the live scheduler.
        scheduler_config: Scheduler configuration used when ``scheduler`` is ``None``
            and no live one is registered (the ``Trainer`` passes it on restore).
        scheduler_state: A scheduler state to load immediately.

    Examples:
        >>> from medcurric.curriculum import CurriculumScheduler
        >>> cb = CurriculumCallback(CurriculumScheduler(patience=0, min_delta=0.0), event="log")
        >>> cb.state()["args"]["metric"], sorted(cb.state()["attributes"])
        ('loss', ['scheduler_state'])
    """

    def __init__(
        self,
        scheduler: CurriculumScheduler | None = None,
        *,
        metric: str | None = None,
        event: Event | str = "evaluate",
        metric_map: Mapping[str, str] | None = None,
        name: str = "curriculum",
        scheduler_config: Mapping[str, Any] | None = None,
        scheduler_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.event = look_up_option(event, Event, name="event")
        self.metric = metric or ("eval_loss" if self.event is Event.EVALUATE else "loss")
        self.name = str(name)
        if scheduler is None:
            ref = _LIVE.get(self.name)
            live = ref() if ref is not None else None
            if live is not None:
                scheduler = live
            elif scheduler_config is not None:
                scheduler = CurriculumScheduler.from_config(scheduler_config)
            else:
                scheduler = CurriculumScheduler()
        elif scheduler_config is not None:
            warn_ignored("scheduler_config", "a scheduler was passed")
        if not isinstance(scheduler, CurriculumScheduler):
            raise WrongTypeError(
                f"Expected a CurriculumScheduler, but got {type(scheduler).__name__}."
            )
        self.scheduler = scheduler
        _LIVE[self.name] = weakref.ref(scheduler)
        prefix = "eval_" if self.event is Event.EVALUATE else ""
        mapping = {scheduler.monitor: self.metric}
        if scheduler.gap_rule is not None:
            for key in (scheduler.gap_rule.easy_key, scheduler.gap_rule.medium_key):
                mapping[key] = prefix + key
        mapping.update(dict(metric_map or {}))
        self.metric_map = mapping
        self.last_decision: Decision | None = None
        if scheduler_state is not None:
            self.scheduler_state = scheduler_state

    # ------------------------------------------------------------------ state

    @property
    def stage(self) -> Stage:
        """The scheduler's current stage."""
        return self.scheduler.stage

    @property
    def scheduler_state(self) -> dict[str, Any]:
        """The scheduler's state (setting it loads a state into the scheduler)."""
        return self.scheduler.state_dict()

    @scheduler_state.setter
    def scheduler_state(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(state)

    def state(self) -> dict[str, Any]:
        """``ExportableState``: constructor arguments and attributes, in plain JSON types."""
        return {
            "args": {
                "metric": self.metric,
                "event": self.event.value,
                "metric_map": dict(self.metric_map),
                "name": self.name,
                "scheduler_config": self.scheduler.config(),
            },
            "attributes": {"scheduler_state": self.scheduler.state_dict()},
        }

    # ------------------------------------------------------------------ events

    def _feed(self, metrics: Mapping[str, Any] | None, state: Any) -> None:
        if not metrics or self.metric not in metrics:
            return
        missing = [v for v in self.metric_map.values() if v not in metrics]
        if missing:
            logger.warning(
                "CurriculumCallback: metrics %s missing from this %s event (have %s); not stepping.",
                missing,
                self.event.value,
                sorted(metrics),
            )
            return
        values = {k: metrics[v] for k, v in self.metric_map.items()}
        epoch = getattr(state, "epoch", None)
        decision = self.scheduler.step(values, epoch=None if epoch is None else int(epoch))
        self.last_decision = decision
        if decision.switched:
            logger.info(
                "Curriculum: %s -> %s at global step %s (%s)",
                decision.previous_stage.value,
                decision.stage.value,
                getattr(state, "global_step", "?"),
                decision.reason.value,
            )

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Warn when a run resumes from a checkpoint without restoring the scheduler state."""
        resumed = int(getattr(state, "global_step", 0) or 0) > 0
        if resumed and not getattr(args, "restore_callback_states_from_checkpoint", False):
            warnings.warn(
                "Training resumed at global step "
                f"{state.global_step}, but the curriculum scheduler state was not restored "
                "(it is still at stage "
                f"{self.stage.value!r}). Pass TrainingArguments(restore_callback_states_from_checkpoint=True).",
                MedcurricWarning,
                stacklevel=2,
            )

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        """Step the scheduler on evaluation metrics (``event="evaluate"``)."""
        if self.event is Event.EVALUATE:
            self._feed(metrics, state)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        """Step the scheduler on logged values (``event="log"``)."""
        if self.event is Event.LOG:
            self._feed(logs, state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event={self.event.value!r}, metric={self.metric!r}, {self.scheduler!r})"
