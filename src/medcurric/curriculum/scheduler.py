"""When to move from one curriculum stage to the next.

:class:`CurriculumScheduler` has two policies.

``policy="global"`` (the paper's rule) watches one monitored loss and advances
to the next stage when it has plateaued, with exactly the semantics of
:class:`torch.optim.lr_scheduler.ReduceLROnPlateau` (``patience``, ``min_delta``
as its ``threshold``, ``threshold_mode``, ``mode``): the stage advances on the
very check where ``ReduceLROnPlateau`` would first reduce the learning rate.
After a switch the plateau tracker starts afresh for the new stage. An optional
:class:`GapRule` additionally requires the rationale-loss gap between Easy and
Medium to allow the switch.

``policy="per_domain"`` is the variant found in the authors' code
(``ksyint/PROGRESSIVE`` at commit a7cca74, ``integrated_cot/``), reproduced with its
defaults epoch by epoch: every domain (for example lesion type x modality) keeps
exponential moving averages of its Easy and Medium losses, the probability of
drawing a Medium sample rises with the gap between them and with the epoch, and an
optional Hard budget grows while the global loss is flat. Feed it one epoch at a
time with :meth:`CurriculumScheduler.step_epoch` (each domain's epoch-mean loss per
stage, as the authors' trainer does); training code asks
:meth:`CurriculumScheduler.stage_probabilities` or
:meth:`CurriculumScheduler.sample_stage` per sample.

Under ``torch.distributed`` the monitored values are averaged across ranks
before every decision, so every rank switches on the same check.

Examples:
    >>> from medcurric.curriculum import CurriculumScheduler
    >>> sched = CurriculumScheduler(patience=1, min_delta=0.0)
    >>> [sched.step({"loss": v}).stage.value for v in (1.0, 0.9, 0.95, 0.97)]
    ['easy', 'easy', 'easy', 'medium']
    >>> sched.history[-1].reason.value
    'plateau'
"""

from __future__ import annotations

import itertools
import math
import operator
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, InvalidOptionError, NonFiniteError, WrongTypeError
from medcurric.stage import Stage

__all__ = [
    "STATE_VERSION",
    "CurriculumScheduler",
    "Decision",
    "GapRule",
    "Mode",
    "NonFinitePolicy",
    "Policy",
    "Reason",
    "ThresholdMode",
]

#: Version of the :meth:`CurriculumScheduler.state_dict` layout.
STATE_VERSION = 1
#: Epsilon of the authors' gap ``(m_easy - m_medium) / (m_easy + eps)``.
_GAP_EPS = 1e-8


class Mode(StrEnum):
    """Whether the monitored value should go down (``"min"``) or up (``"max"``)."""

    MIN = "min"
    MAX = "max"


class ThresholdMode(StrEnum):
    """How ``min_delta`` is applied: an absolute margin or a fraction of the best value."""

    ABS = "abs"
    REL = "rel"


class Policy(StrEnum):
    """``"global"``: one stage for everything; ``"per_domain"``: stage probabilities per domain."""

    GLOBAL = "global"
    PER_DOMAIN = "per_domain"


class NonFinitePolicy(StrEnum):
    """What a NaN/inf monitored value does: raise :class:`~medcurric.errors.NonFiniteError` or skip the check."""

    RAISE = "raise"
    SKIP = "skip"


class Reason(StrEnum):
    """Why a :class:`Decision` came out as it did."""

    #: One of the first ``warmup`` checks: ignored by the plateau tracker.
    WARMUP = "warmup"
    #: The monitored value improved on the best by more than ``min_delta``.
    IMPROVED = "improved"
    #: No improvement, but fewer than ``patience + 1`` checks in a row so far.
    NO_IMPROVEMENT = "no_improvement"
    #: Plateau reached (and the gap rule holds): the stage advanced.
    PLATEAU = "plateau"
    #: Plateau reached but the gap rule does not allow the switch yet.
    GAP_NOT_MET = "gap_not_met"
    #: Already at the last enabled stage.
    FINAL_STAGE = "final_stage"
    #: A monitored value was NaN/inf and ``on_non_finite="skip"``: nothing changed.
    SKIPPED_NON_FINITE = "skipped_non_finite"
    #: Per-domain policy: probabilities updated, Hard budget unchanged.
    MIXING = "mixing"
    #: Per-domain policy: the Hard budget grew.
    HARD_BUDGET_GREW = "hard_budget_grew"
    #: Per-domain policy: the Hard budget shrank.
    HARD_BUDGET_SHRANK = "hard_budget_shrank"


#: The comparison that means "better" for each mode (the plateau rule's mode table).
_MODE_OPS: dict[str, Callable[[float, float], bool]] = {"min": operator.lt, "max": operator.gt}
#: Direction in which ``min_delta`` moves the bar for each mode.
_MODE_SIGN: dict[str, float] = {"min": -1.0, "max": 1.0}
#: The worst possible value for each mode (the tracker's starting "best").
_MODE_WORST: dict[str, float] = {"min": math.inf, "max": -math.inf}


@dataclass(frozen=True)
class GapRule(JsonRecord):
    """The rationale-loss gap between Easy and Medium must allow a switch.

    The gap is ``g = (metrics[easy_key] - metrics[medium_key]) / metrics[easy_key]``,
    the same relative gap as the authors' per-domain code, and the rule holds when
    ``g >= min_gap``. So with ``min_gap = -0.1`` the Medium rationale loss (clean
    image, box hidden) may be at most 10% above the Easy one (box drawn) before the
    model moves on; ``min_gap = 0.5`` reproduces the centre of the authors' sigmoid.

    Every :meth:`CurriculumScheduler.step` call of a scheduler with a gap rule must
    pass both keys in ``metrics`` (evaluate the rationale loss of the same held-out
    samples rendered as Easy and as Medium). The rule only gates the Easy -> Medium
    switch unless ``all_switches`` is true.

    Args:
        easy_key: Metric name of the rationale loss on Easy renderings.
        medium_key: Metric name of the rationale loss on Medium renderings.
        min_gap: Smallest gap that allows the switch.
        all_switches: Also gate Medium -> Hard.

    Examples:
        >>> rule = GapRule(min_gap=-0.1)
        >>> rule.gap({"rationale_loss_easy": 2.0, "rationale_loss_medium": 2.1})
        -0.05
        >>> rule.allows(-0.05)
        True
    """

    easy_key: str = "rationale_loss_easy"
    medium_key: str = "rationale_loss_medium"
    min_gap: float = -0.1
    all_switches: bool = False

    def gap(self, metrics: Mapping[str, float]) -> float:
        """Return the relative gap ``(easy - medium) / easy`` (``-inf`` when Easy's loss is 0)."""
        easy = float(metrics[self.easy_key])
        medium = float(metrics[self.medium_key])
        if easy == 0.0:
            return 0.0 if medium == 0.0 else -math.inf
        return (easy - medium) / easy

    def allows(self, gap: float) -> bool:
        """Whether a gap lets the stage advance."""
        return gap >= self.min_gap


@dataclass(frozen=True)
class Decision(JsonRecord):
    """The outcome of one :meth:`CurriculumScheduler.step` and the numbers behind it.

    Attributes:
        step: 0-based index of the check.
        epoch: The epoch passed to ``step`` (or counted), if any.
        stage: The stage to train on from now on.
        previous_stage: The stage before this check.
        switched: Whether the stage advanced on this check.
        reason: Why.
        value: The monitored value (averaged across ranks), ``None`` when skipped.
        best: The best value of the plateau tracker after this check (``None`` before any).
        num_bad_checks: Checks in a row without improvement, after this check.
        patience: The patience in force.
        gap: The rationale-loss gap, when a gap rule or the per-domain policy computed one.
        hard_budget: The per-domain Hard budget (``None`` for the global policy).
        metrics: The monitored metrics as used (averaged across ranks).

    Examples:
        >>> d = Decision(step=0, epoch=None, stage=Stage.EASY, previous_stage=Stage.EASY,
        ...              switched=False, reason=Reason.IMPROVED, value=1.5, metrics={"loss": float("nan")})
        >>> d.to_dict()["metrics"], Decision.from_json(d.to_json()).reason
        ({'loss': 'nan'}, <Reason.IMPROVED: 'improved'>)
    """

    step: int
    epoch: int | None
    stage: Stage
    previous_stage: Stage
    switched: bool
    reason: Reason
    value: float | None = None
    best: float | None = None
    num_bad_checks: int = 0
    patience: int = 0
    gap: float | None = None
    hard_budget: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def _upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Older decisions: any key may be missing, and non-finite metrics were written as ``None``."""
        out = {
            "step": 0,
            "epoch": None,
            "stage": Stage.EASY.value,
            "previous_stage": data.get("stage", Stage.EASY.value),
            "switched": False,
            "reason": Reason.NO_IMPROVEMENT.value,
            **data,
        }
        if isinstance(out.get("metrics"), Mapping):
            out["metrics"] = {k: "nan" if v is None else v for k, v in out["metrics"].items()}
        return out


@dataclass(frozen=True)
class _State(JsonRecord):
    """The layout of :meth:`CurriculumScheduler.state_dict` (every key optional, for older states)."""

    version: int = 0
    policy: Policy = Policy.GLOBAL
    stages: tuple[Stage, ...] = ()
    stage: str | None = None
    num_checks: int = 0
    best: float | None = None
    num_bad_checks: int = 0
    epoch: int = 0
    domains: dict[str, dict[str, float | None]] = field(default_factory=dict)
    global_ema: float | None = None
    global_history: list[float] = field(default_factory=list)
    hard_budget: float = 0.0
    history: list[Decision] = field(default_factory=list)


class _Random(Protocol):
    def random(self) -> float: ...


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _dist_initialized() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return bool(dist.is_available() and dist.is_initialized())


def _all_reduce_mean(values: Sequence[float]) -> list[float]:
    """Average ``values`` element-wise across all ranks of the default process group."""
    import torch
    import torch.distributed as dist

    device = torch.device("cpu")
    if dist.get_backend() == "nccl":  # pragma: no cover - needs GPUs
        device = torch.device("cuda", torch.cuda.current_device())
    buf = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    buf /= dist.get_world_size()
    return [float(v) for v in buf.cpu().tolist()]


def _all_gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class CurriculumScheduler:
    """Decide the curriculum stage from monitored losses.

    Call :meth:`step` once per check (after an evaluation, or every ``k`` logged
    steps) with the current metrics; read :attr:`stage` (global policy) or call
    :meth:`sample_stage` per sample (per-domain policy) when rendering data.

    Global policy: the plateau rule of :class:`torch.optim.lr_scheduler.ReduceLROnPlateau`.
    A check *improves* when ``value < best - min_delta`` (``mode="min"``,
    ``threshold_mode="abs"``), ``value < best * (1 - min_delta)`` (``"rel"``), and
    symmetrically for ``mode="max"``; the stage advances on the check where the
    number of non-improving checks in a row exceeds ``patience``, provided the
    ``gap_rule`` (if any) holds; otherwise the decision says
    :attr:`Reason.GAP_NOT_MET` and the switch happens on the first later check
    where the plateau still holds and the gap allows it. The first ``warmup``
    checks are ignored entirely (reason :attr:`Reason.WARMUP`). After a switch the
    tracker starts afresh (no best, no bad checks).

    Non-finite values: with ``check_finite=True`` a NaN/inf monitored value (after
    averaging across ranks, so all ranks agree) raises
    :class:`~medcurric.errors.NonFiniteError` (``on_non_finite="raise"``) or
    leaves everything unchanged and returns a decision with reason
    :attr:`Reason.SKIPPED_NON_FINITE` (``on_non_finite="skip"``). It never counts as
    a non-improving check, so it can never cause a switch. With
    ``check_finite=False`` values go to the tracker as they are, as in
    ``ReduceLROnPlateau`` (where NaN never improves).

    Distributed: when ``torch.distributed`` is initialised (and ``sync_dist``),
    :meth:`step` averages the monitored values (and, per domain, the EMAs) across
    ranks before deciding, so all ranks must call :meth:`step` together.

    Per-domain policy (authors' code, every constant an argument, defaults theirs):
    per domain ``d``, ``m_easy``/``m_medium`` are EMAs (``m <- ema_weight * loss + (1 -
    ema_weight) * m``) of the losses given to :meth:`observe`, starting at ``ema_init``
    (1e-3, so before any Medium loss exists the gap is about 1); the gap is
    ``g = (m_easy - m_medium) / (m_easy + 1e-8)`` (0 when ``m_easy < 1e-8``); Medium is
    drawn with probability ``beta_e * sigmoid((g - gap_center) / gap_temperature)``
    where ``beta_e = clip((e - mixing_start_epoch) / mixing_ramp_epochs, 0, 1)``
    (Easy only before ``mixing_start_epoch``). When ``Stage.HARD`` is enabled, a
    Hard budget ``h`` (share of Hard samples) is updated at the end of every epoch:
    it grows by ``hard_step`` (up to ``hard_cap``) when each of the last
    ``hard_window - 1`` steps of the global loss EMA (the last ``hard_window`` values,
    the EMA starting at ``global_ema_init``) moved by at most ``hard_flat_tol`` and
    the median gap over domains is at least ``hard_min_gap``; otherwise it is
    multiplied by ``hard_shrink`` (0.9: the authors' ``hard_step_down=0.1`` is the
    fraction taken off, this is the factor kept) when the global EMA rose by at least
    ``hard_rise`` in the last epoch. The budget is used from epoch
    ``hard_start_epoch`` on. Probabilities: Hard ``h``, Medium ``(1 - h) p``, Easy
    ``(1 - h)(1 - p)``. :meth:`step` (or :meth:`step_epoch`) marks the end of an epoch
    there; epochs count from 0.

    One named option departs from the authors: ``ema_init=None`` (and
    ``global_ema_init=None``) starts each EMA at its first observation instead, with
    ``default_gap`` for a domain whose Easy or Medium EMA is still unknown.

    Args:
        stages: The stages in order; Hard is optional (the paper found it helped
            one dataset and hurt two).
        monitor: Name of the monitored loss in ``metrics``.
        patience: Non-improving checks tolerated; the switch happens on the
            ``patience + 1``-th in a row (as ``ReduceLROnPlateau``).
        min_delta: Improvement margin (``ReduceLROnPlateau``'s ``threshold``).
        threshold_mode: ``"abs"`` or ``"rel"``.
        mode: ``"min"`` (losses) or ``"max"``.
        warmup: Number of first checks ignored before any switch is considered.
        gap_rule: Optional :class:`GapRule` (or its ``to_dict()`` form).
        check_finite: Whether to guard against NaN/inf monitored values.
        on_non_finite: ``"raise"`` or ``"skip"`` when ``check_finite``.
        policy: ``"global"`` or ``"per_domain"``.
        sync_dist: Average across ranks when ``torch.distributed`` is initialised.
        keep_history: Keep every :class:`Decision` in :attr:`history` (and in the state).
        ema_weight: Per-domain: weight of the new value in the EMAs.
        gap_center: Per-domain: centre of the sigmoid.
        gap_temperature: Per-domain: temperature of the sigmoid.
        default_gap: Per-domain, with ``ema_init=None`` only: gap used while a domain
            lacks an Easy or Medium EMA.
        ema_init: Per-domain: starting value of every domain's Easy and Medium EMA
            (authors: 1e-3); ``None`` starts them at their first observation.
        global_ema_init: Per-domain: starting value of the global loss EMA (authors:
            1e-4); ``None`` starts it at the first value.
        mixing_start_epoch: Per-domain: Easy only before this epoch.
        mixing_ramp_epochs: Per-domain: epochs over which ``beta_e`` ramps to 1.
        hard_start_epoch: Per-domain: first epoch whose samples may be Hard (the budget
            is updated every epoch before that too, as in the authors' code).
        hard_step: Per-domain: growth of the Hard budget.
        hard_cap: Per-domain: largest Hard budget.
        hard_window: Per-domain: the last ``q`` global EMA values that must be flat.
        hard_flat_tol: Per-domain: largest move per epoch that still counts as flat.
        hard_min_gap: Per-domain: smallest median gap for growth.
        hard_shrink: Per-domain: factor kept when the loss rises (authors:
            ``hard_step_down=0.1``, the fraction removed; ``hard_shrink = 1 - 0.1``).
        hard_rise: Per-domain: rise of the global EMA that shrinks the budget.

    Raises:
        InvalidOptionError: On an unknown option or an invalid number.

    Examples:
        >>> sched = CurriculumScheduler(patience=0, min_delta=0.0, warmup=1)
        >>> d = sched.step({"loss": 5.0})
        >>> d.reason.value, d.stage.value
        ('warmup', 'easy')
        >>> sched.step({"loss": 1.0}).reason.value
        'improved'
        >>> d = sched.step({"loss": 1.0})
        >>> d.switched, d.stage.value, d.reason.value
        (True, 'medium', 'plateau')
    """

    def __init__(
        self,
        stages: Sequence[Stage | str] = (Stage.EASY, Stage.MEDIUM),
        *,
        monitor: str = "loss",
        patience: int = 5,
        min_delta: float = 1e-3,
        threshold_mode: ThresholdMode | str = "abs",
        mode: Mode | str = "min",
        warmup: int = 0,
        gap_rule: GapRule | Mapping[str, Any] | None = None,
        check_finite: bool = True,
        on_non_finite: NonFinitePolicy | str = "raise",
        policy: Policy | str = "global",
        sync_dist: bool = True,
        keep_history: bool = True,
        ema_weight: float = 0.9,
        gap_center: float = 0.5,
        gap_temperature: float = 0.1,
        default_gap: float = 0.0,
        ema_init: float | None = 1e-3,
        global_ema_init: float | None = 1e-4,
        mixing_start_epoch: int = 4,
        mixing_ramp_epochs: int = 10,
        hard_start_epoch: int = 19,
        hard_step: float = 0.05,
        hard_cap: float = 0.3,
        hard_window: int = 5,
        hard_flat_tol: float = 0.01,
        hard_min_gap: float = 0.6,
        hard_shrink: float = 0.9,
        hard_rise: float = 0.05,
    ) -> None:
        self.stages: tuple[Stage, ...] = tuple(look_up_option(s, Stage, name="stage") for s in stages)
        if not self.stages:
            raise InvalidOptionError("Expected at least one stage, but got an empty `stages`.")
        if list(self.stages) != sorted(set(self.stages)):
            raise InvalidOptionError(
                f"Expected distinct stages in curriculum order (easy < medium < hard), "
                f"but got {[s.value for s in self.stages]}."
            )
        if not isinstance(monitor, str) or not monitor:
            raise InvalidOptionError(f"Expected `monitor` to be a metric name, but got {monitor!r}.")
        _check_int("patience", patience, minimum=0)
        _check_int("warmup", warmup, minimum=0)
        _check_float("min_delta", min_delta, minimum=0.0)
        if isinstance(gap_rule, Mapping):
            gap_rule = GapRule.from_dict(gap_rule)
        if gap_rule is not None and not isinstance(gap_rule, GapRule):
            raise WrongTypeError(
                f"Expected `gap_rule` to be a GapRule or None, but got {type(gap_rule).__name__}. "
                "Build one with GapRule(easy_key=..., medium_key=..., min_gap=...)."
            )
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.threshold_mode = look_up_option(threshold_mode, ThresholdMode, name="threshold_mode")
        self.mode = look_up_option(mode, Mode, name="mode")
        self.warmup = int(warmup)
        self.gap_rule = gap_rule
        self.check_finite = bool(check_finite)
        self.on_non_finite = look_up_option(on_non_finite, NonFinitePolicy, name="on_non_finite")
        self.policy = look_up_option(policy, Policy, name="policy")
        self.sync_dist = bool(sync_dist)
        self.keep_history = bool(keep_history)
        _check_float("ema_weight", ema_weight, minimum=0.0, maximum=1.0)
        _check_float("gap_temperature", gap_temperature, minimum=0.0, strict=True)
        _check_int("mixing_ramp_epochs", mixing_ramp_epochs, minimum=1)
        _check_int("hard_window", hard_window, minimum=1)
        _check_float("hard_cap", hard_cap, minimum=0.0, maximum=1.0)
        _check_float("hard_shrink", hard_shrink, minimum=0.0, maximum=1.0)
        self.ema_weight = float(ema_weight)
        self.gap_center = float(gap_center)
        self.gap_temperature = float(gap_temperature)
        self.default_gap = float(default_gap)
        for name, value in (("ema_init", ema_init), ("global_ema_init", global_ema_init)):
            if value is not None:
                _check_float(name, value, minimum=0.0)
        self.ema_init = None if ema_init is None else float(ema_init)
        self.global_ema_init = None if global_ema_init is None else float(global_ema_init)
        self.mixing_start_epoch = int(mixing_start_epoch)
        self.mixing_ramp_epochs = int(mixing_ramp_epochs)
        self.hard_start_epoch = int(hard_start_epoch)
        self.hard_step = float(hard_step)
        self.hard_cap = float(hard_cap)
        self.hard_window = int(hard_window)
        self.hard_flat_tol = float(hard_flat_tol)
        self.hard_min_gap = float(hard_min_gap)
        self.hard_shrink = float(hard_shrink)
        self.hard_rise = float(hard_rise)
        self._reset_state()

    # ------------------------------------------------------------------ state

    def _reset_state(self) -> None:
        self._stage_index = 0
        self._num_checks = 0
        self._best: float | None = None
        self._num_bad = 0
        self._epoch = 0
        self._domains: dict[str, dict[str, float | None]] = {}
        self._global_ema: float | None = self.global_ema_init
        self._global_history: list[float] = []
        self._hard_budget = 0.0
        self.history: list[Decision] = []

    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain JSON types (``CurriculumScheduler(**config())`` rebuilds it).

        Examples:
            >>> cfg = CurriculumScheduler(patience=3, gap_rule=GapRule()).config()
            >>> CurriculumScheduler.from_config(cfg).config() == cfg
            True
        """
        return {
            "stages": [s.value for s in self.stages],
            "monitor": self.monitor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "threshold_mode": self.threshold_mode.value,
            "mode": self.mode.value,
            "warmup": self.warmup,
            "gap_rule": None if self.gap_rule is None else self.gap_rule.to_dict(),
            "check_finite": self.check_finite,
            "on_non_finite": self.on_non_finite.value,
            "policy": self.policy.value,
            "sync_dist": self.sync_dist,
            "keep_history": self.keep_history,
            "ema_weight": self.ema_weight,
            "gap_center": self.gap_center,
            "gap_temperature": self.gap_temperature,
            "default_gap": self.default_gap,
            "ema_init": self.ema_init,
            "global_ema_init": self.global_ema_init,
            "mixing_start_epoch": self.mixing_start_epoch,
            "mixing_ramp_epochs": self.mixing_ramp_epochs,
            "hard_start_epoch": self.hard_start_epoch,
            "hard_step": self.hard_step,
            "hard_cap": self.hard_cap,
            "hard_window": self.hard_window,
            "hard_flat_tol": self.hard_flat_tol,
            "hard_min_gap": self.hard_min_gap,
            "hard_shrink": self.hard_shrink,
            "hard_rise": self.hard_rise,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CurriculumScheduler:
        """Build a scheduler from :meth:`config` output."""
        return cls(**dict(config))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, in plain JSON types (``json.dumps`` works on it).

        Examples:
            >>> import json
            >>> sched = CurriculumScheduler(patience=2)
            >>> _ = sched.step({"loss": 1.0})
            >>> state = json.loads(json.dumps(sched.state_dict()))
            >>> fresh = CurriculumScheduler(patience=2)
            >>> fresh.load_state_dict(state)
            >>> fresh.state_dict() == sched.state_dict()
            True
        """
        return _State(
            version=STATE_VERSION,
            policy=self.policy,
            stages=self.stages,
            stage=self.stage.value,
            num_checks=self._num_checks,
            best=self._best,
            num_bad_checks=self._num_bad,
            epoch=self._epoch,
            domains=dict(sorted(self._domains.items())),
            global_ema=self._global_ema,
            global_history=self._global_history,
            hard_budget=self._hard_budget,
            history=self.history if self.keep_history else [],
        ).to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; keys missing from older versions take defaults.

        Args:
            state: A state from :meth:`state_dict` (possibly through JSON).

        Raises:
            DataFormatError: When the state is not a mapping, is from a newer version, was
                saved by a scheduler with another ``policy`` or other ``stages``, names a
                stage this scheduler does not have, or holds a value out of its range
                (counts are integers >= 0, losses finite, ``hard_budget`` in [0, 1]).
        """
        if not isinstance(state, Mapping):
            raise DataFormatError(
                f"Expected a scheduler state dict (a mapping), but got {type(state).__name__}."
            )
        version = int(state.get("version", 0))
        if version > STATE_VERSION:
            raise DataFormatError(
                f"Scheduler state has version {version}, newer than this medcurric understands "
                f"({STATE_VERSION}); upgrade medcurric to load it."
            )
        saved = _State.from_dict(state)
        self._check_saved(saved, state)
        stage_value = saved.stage if saved.stage is not None else self.stages[0].value
        try:
            stage = Stage(stage_value)
            index = self.stages.index(stage)
        except ValueError as exc:
            raise DataFormatError(
                f"Scheduler state is at stage {stage_value!r}, which is not one of this scheduler's "
                f"stages {[s.value for s in self.stages]}; build the scheduler with the same `stages`."
            ) from exc
        self._reset_state()
        self._stage_index = index
        self._num_checks = saved.num_checks
        self._best = saved.best
        self._num_bad = saved.num_bad_checks
        self._epoch = saved.epoch
        self._domains = {
            d: {"easy": emas.get("easy"), "medium": emas.get("medium")} for d, emas in saved.domains.items()
        }
        self._global_ema = saved.global_ema
        self._global_history = list(saved.global_history)
        self._hard_budget = saved.hard_budget
        if self.keep_history:
            self.history = list(saved.history)

    def _check_saved(self, saved: _State, raw: Mapping[str, Any]) -> None:
        """Refuse a state that another configuration wrote, or that was edited out of range."""

        def bad(name: str, expected: str, got: Any) -> DataFormatError:
            return DataFormatError(f"Scheduler state field `{name}`: expected {expected}, but got {got!r}.")

        if "policy" in raw and saved.policy is not self.policy:
            raise DataFormatError(
                f"Scheduler state was saved with policy {saved.policy.value!r}, but this scheduler "
                f"has policy {self.policy.value!r}; build it with the same `policy` to resume."
            )
        if "stages" in raw and tuple(saved.stages) != self.stages:
            raise DataFormatError(
                f"Scheduler state was saved with stages {[s.value for s in saved.stages]}, but this "
                f"scheduler has {[s.value for s in self.stages]}; build it with the same `stages`."
            )
        for name in ("version", "num_checks", "num_bad_checks", "epoch"):
            value = raw.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "an integer >= 0", value)
        budget = saved.hard_budget
        if not (math.isfinite(budget) and 0.0 <= budget <= 1.0):
            raise bad("hard_budget", "a finite number in [0, 1]", raw.get("hard_budget"))
        # Without check_finite, non-finite losses are kept as torch keeps them (best = -inf).
        finite = math.isfinite if self.check_finite else (lambda _v: True)
        if saved.best is not None and math.isnan(saved.best):  # +-inf is a tracker's start value
            raise bad("best", "a number (not NaN) or null", raw.get("best"))
        if saved.global_ema is not None and not finite(saved.global_ema):
            raise bad("global_ema", "a finite number or null", raw.get("global_ema"))
        if not all(finite(v) for v in saved.global_history):
            raise bad("global_history", "a list of finite numbers", raw.get("global_history"))
        for domain, emas in saved.domains.items():
            values = [emas.get("easy"), emas.get("medium")]
            if set(emas) - {"easy", "medium"} or not all(v is None or finite(v) for v in values):
                raise bad(f"domains[{domain!r}]", '{"easy": finite or null, "medium": finite or null}', emas)

    # ------------------------------------------------------------- properties

    @property
    def stage(self) -> Stage:
        """The current stage (per-domain policy: the phase, see :meth:`step`)."""
        return self.stages[self._stage_index]

    @property
    def is_final(self) -> bool:
        """Whether the current stage is the last enabled one."""
        return self._stage_index == len(self.stages) - 1

    @property
    def epoch(self) -> int:
        """The epoch now being trained (per-domain policy)."""
        return self._epoch

    @property
    def hard_budget(self) -> float:
        """The per-domain Hard budget (0 unless ``Stage.HARD`` is enabled)."""
        return self._hard_budget

    @property
    def best(self) -> float | None:
        """Best monitored value of the current stage (``None`` before any)."""
        return self._best

    @property
    def num_bad_checks(self) -> int:
        """Non-improving checks in a row in the current stage."""
        return self._num_bad

    # ------------------------------------------------------------------- step

    def _is_better(self, value: float, best: float | None) -> bool:
        reference = _MODE_WORST[self.mode.value] if best is None else best
        sign = _MODE_SIGN[self.mode.value]
        if self.threshold_mode is ThresholdMode.REL:
            bar = reference * (1.0 + sign * self.min_delta)
        else:
            bar = reference + sign * self.min_delta
        return _MODE_OPS[self.mode.value](value, bar)

    def _monitored_keys(self) -> list[str]:
        keys = [self.monitor]
        if self.gap_rule is not None and self.policy is Policy.GLOBAL:
            keys += [k for k in (self.gap_rule.easy_key, self.gap_rule.medium_key) if k not in keys]
        return keys

    def _gather_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        if not isinstance(metrics, Mapping):
            raise WrongTypeError(
                f"Expected `metrics` to be a mapping of metric name to value, but got "
                f"{type(metrics).__name__}. Call step({{{self.monitor!r}: loss}})."
            )
        keys = self._monitored_keys()
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise DataFormatError(
                f"Expected metrics {keys} in `metrics`, but {missing} missing (got {sorted(metrics)}). "
                + (
                    f"The gap rule needs the rationale loss of Easy and Medium renderings as "
                    f"{self.gap_rule.easy_key!r} and {self.gap_rule.medium_key!r}."
                    if self.gap_rule is not None and any(k != self.monitor for k in missing)
                    else f"Set `monitor` to the name your loop logs, or log {self.monitor!r}."
                )
            )
        try:
            values = [float(metrics[k]) for k in keys]
        except (TypeError, ValueError) as exc:
            raise WrongTypeError(
                f"Expected numeric values for {keys}, but got {[type(metrics[k]).__name__ for k in keys]}."
            ) from exc
        if self.sync_dist and _dist_initialized():
            values = _all_reduce_mean(values)
        return dict(zip(keys, values, strict=True))

    def step(self, metrics: Mapping[str, Any], *, epoch: int | None = None) -> Decision:
        """Take one check and decide the stage.

        Args:
            metrics: Metric name -> value (floats or 0-d tensors); must hold ``monitor``
                (and the gap rule's two keys when a gap rule is set).
            epoch: The epoch that just ended (per-domain policy: epoch counting; otherwise
                only recorded). Counted from the calls when ``None``.

        Returns:
            The :class:`Decision`.

        Raises:
            DataFormatError: When a needed metric is missing.
            NonFiniteError: When a monitored value is NaN/inf, ``check_finite`` and
                ``on_non_finite="raise"``.
        """
        values = self._gather_metrics(metrics)
        if self.check_finite:
            bad = {k: v for k, v in values.items() if not math.isfinite(v)}
            if bad:
                if self.on_non_finite is NonFinitePolicy.RAISE:
                    raise NonFiniteError(
                        f"Expected finite monitored values, but got {bad} at check {self._num_checks}"
                        f"{' (averaged across ranks)' if _dist_initialized() and self.sync_dist else ''}. "
                        "Fix the divergence, or pass on_non_finite='skip' to ignore such checks."
                    )
                decision = Decision(
                    step=self._num_checks,
                    epoch=epoch,
                    stage=self.stage,
                    previous_stage=self.stage,
                    switched=False,
                    reason=Reason.SKIPPED_NON_FINITE,
                    value=None,
                    best=self._best,
                    num_bad_checks=self._num_bad,
                    patience=self.patience,
                    hard_budget=self._hard_budget if self.policy is Policy.PER_DOMAIN else None,
                    metrics=values,
                )
                return self._record(decision)
        if self.policy is Policy.PER_DOMAIN:
            return self._record(self._step_per_domain(values, epoch))
        return self._record(self._step_global(values, epoch))

    def _record(self, decision: Decision) -> Decision:
        self._num_checks += 1
        if self.keep_history:
            self.history.append(decision)
        return decision

    def _step_global(self, values: dict[str, float], epoch: int | None) -> Decision:
        value = values[self.monitor]
        previous = self.stage
        step = self._num_checks
        gap = self.gap_rule.gap(values) if self.gap_rule is not None else None

        def decide(reason: Reason, switched: bool = False) -> Decision:
            return Decision(
                step=step,
                epoch=epoch,
                stage=self.stage,
                previous_stage=previous,
                switched=switched,
                reason=reason,
                value=value,
                best=self._best,
                num_bad_checks=self._num_bad,
                patience=self.patience,
                gap=gap,
                metrics=values,
            )

        if step < self.warmup:
            return decide(Reason.WARMUP)
        if self._is_better(value, self._best):
            self._best = value
            self._num_bad = 0
            return decide(Reason.FINAL_STAGE if self.is_final else Reason.IMPROVED)
        self._num_bad += 1
        if self.is_final:
            return decide(Reason.FINAL_STAGE)
        if self._num_bad <= self.patience:
            return decide(Reason.NO_IMPROVEMENT)
        if self.gap_rule is not None and gap is not None:
            gated = self.gap_rule.all_switches or previous is Stage.EASY
            if gated and not self.gap_rule.allows(gap):
                return decide(Reason.GAP_NOT_MET)
        self._stage_index += 1
        self._best = None
        self._num_bad = 0
        return decide(Reason.PLATEAU, switched=True)

    # ------------------------------------------------------------- per domain

    def observe(self, domain: str, stage: Stage | str, loss: float) -> None:
        """Feed one loss of one domain and stage into the per-domain EMAs.

        Call it per sample or per batch (with the mean loss of that domain's samples).
        Hard losses are accepted and ignored (they do not enter the gap).

        Args:
            domain: Domain name, e.g. ``"liver lesion|CT"``.
            stage: The stage the sample was rendered in.
            loss: Its loss. The authors feed each domain's epoch mean of the training loss
                ``0.8 * answer + 0.2 * rationale`` per stage (see :meth:`step_epoch`).

        Raises:
            NonFiniteError: On a NaN/inf loss when ``check_finite`` (whatever
                ``on_non_finite`` says, a skipped observation is silent data loss).
        """
        st = look_up_option(stage, Stage, name="stage")
        value = float(loss)
        if not math.isfinite(value):
            if self.check_finite and self.on_non_finite is NonFinitePolicy.RAISE:
                raise NonFiniteError(
                    f"Expected a finite loss for domain {domain!r} ({st.value}), but got {value}. "
                    "Pass on_non_finite='skip' to ignore non-finite observations."
                )
            return
        if st is Stage.HARD:
            return
        emas = self._domains.setdefault(str(domain), {"easy": self.ema_init, "medium": self.ema_init})
        old = emas[st.value]
        emas[st.value] = value if old is None else self.ema_weight * value + (1.0 - self.ema_weight) * old

    def step_epoch(self, losses: Mapping[str, Mapping[Stage | str, float]], *, epoch: int | None = None) -> Decision:
        """End an epoch with each domain's mean loss per stage, fed as the authors' trainer does.

        Every ``(domain, stage)`` mean goes to :meth:`observe` (Hard ones are ignored
        there), and the mean of all of them (Hard included) is the global loss given to
        :meth:`step` as ``monitor``.

        Args:
            losses: ``{domain: {stage: epoch-mean loss}}``, e.g. ``{"liver|CT": {"easy": 1.2,
                "medium": 1.5}}``; the authors' loss is ``0.8 * answer + 0.2 * rationale``.
            epoch: The epoch that just ended (counted from the calls when ``None``).

        Returns:
            The :class:`Decision`.

        Raises:
            DataFormatError: When ``losses`` holds no value.

        Examples:
            >>> sched = CurriculumScheduler(policy="per_domain")
            >>> for e in range(6):
            ...     _ = sched.step_epoch({"liver|CT": {"easy": 2.0}}, epoch=e)
            >>> round(sched.stage_probabilities("liver|CT")[Stage.MEDIUM], 4)  # epoch 6
            0.1987
        """
        if self.policy is not Policy.PER_DOMAIN:
            raise InvalidOptionError("step_epoch() feeds the per-domain policy; build the scheduler with policy='per_domain'.")
        values: list[float] = []
        for domain, per_stage in losses.items():
            for stage, loss in per_stage.items():
                self.observe(domain, stage, loss)
                values.append(float(loss))
        if not values:
            raise DataFormatError("Expected at least one (domain, stage) loss for the epoch, but got none.")
        return self.step({self.monitor: math.fsum(values) / len(values)}, epoch=epoch)

    @property
    def domains(self) -> dict[str, dict[str, float | None]]:
        """Per-domain EMAs: ``{domain: {"easy": m_easy, "medium": m_medium}}`` (a copy)."""
        return {d: dict(v) for d, v in self._domains.items()}

    def domain_gap(self, domain: str) -> float:
        """The gap ``(m_easy - m_medium) / (m_easy + 1e-8)`` of a domain.

        0 when ``m_easy < 1e-8``; ``default_gap`` while an EMA is unknown (only with
        ``ema_init=None``: otherwise an unseen domain has both EMAs at ``ema_init``).
        """
        emas = self._domains.get(str(domain), {"easy": self.ema_init, "medium": self.ema_init})
        easy, medium = emas["easy"], emas["medium"]
        if easy is None or medium is None:
            return self.default_gap
        if easy < _GAP_EPS:
            return 0.0
        return (easy - medium) / (easy + _GAP_EPS)

    def mixing_weight(self, epoch: int | None = None) -> float:
        """``beta_e = clip((e - mixing_start_epoch) / mixing_ramp_epochs, 0, 1)`` for the current epoch."""
        e = self._epoch if epoch is None else int(epoch)
        return min(1.0, max(0.0, (e - self.mixing_start_epoch) / self.mixing_ramp_epochs))

    def stage_probabilities(self, domain: str) -> dict[Stage, float]:
        """Probability of each enabled stage for a sample of ``domain`` (per-domain policy).

        With the global policy, the current stage has probability 1.

        Examples:
            >>> sched = CurriculumScheduler(policy="per_domain", mixing_start_epoch=0, mixing_ramp_epochs=1)
            >>> sched.observe("liver|CT", "easy", 2.0); sched.observe("liver|CT", "medium", 0.8)
            >>> _ = sched.step({"loss": 1.0}, epoch=0)
            >>> {s.value: round(p, 3) for s, p in sched.stage_probabilities("liver|CT").items()}
            {'easy': 0.269, 'medium': 0.731}
        """
        if self.policy is Policy.GLOBAL:
            return {s: float(s is self.stage) for s in self.stages}
        p_medium = 0.0
        if Stage.MEDIUM in self.stages:
            g = self.domain_gap(domain)
            p_medium = self.mixing_weight() * _sigmoid((g - self.gap_center) / self.gap_temperature)
        hard = self._hard_budget if self._hard_in_use() else 0.0
        probs = {
            Stage.EASY: (1.0 - hard) * (1.0 - p_medium),
            Stage.MEDIUM: (1.0 - hard) * p_medium,
            Stage.HARD: hard,
        }
        out = {s: probs[s] for s in self.stages}
        if Stage.EASY not in self.stages:  # renormalise when a curriculum skips Easy
            total = sum(out.values())
            out = {s: (p / total if total > 0 else 1.0 / len(out)) for s, p in out.items()}
        return out

    def sample_stage(self, domain: str, rng: _Random | None = None) -> Stage:
        """Draw the stage of one sample of ``domain`` from :meth:`stage_probabilities`.

        Args:
            domain: Domain name.
            rng: Anything with ``random() -> float in [0, 1)`` (``numpy.random.Generator``,
                ``random.Random``); a fresh unseeded generator when ``None``.

        Returns:
            The stage.

        Examples:
            >>> import numpy as np
            >>> CurriculumScheduler(policy="per_domain").sample_stage("lung|CT", np.random.default_rng(0))
            <Stage.EASY: 'easy'>
        """
        if rng is None:
            import random

            rng = random.Random()
        u = float(rng.random())
        cumulative = 0.0
        probs = self.stage_probabilities(domain)
        for stage, p in probs.items():
            cumulative += p
            if u < cumulative:
                return stage
        return next(s for s, p in reversed(probs.items()) if p > 0) if any(probs.values()) else self.stage

    def _sync_domains(self) -> None:
        gathered: list[dict[str, dict[str, float | None]]] = _all_gather_objects(self._domains)
        merged: dict[str, dict[str, float | None]] = {}
        for name in sorted({d for g in gathered for d in g}):
            merged[name] = {}
            for key in ("easy", "medium"):
                vals = [v for g in gathered if name in g for v in [g[name][key]] if v is not None]
                merged[name][key] = (math.fsum(vals) / len(vals)) if vals else None
        self._domains = merged

    def _hard_in_use(self) -> bool:
        return Stage.HARD in self.stages and self._epoch >= self.hard_start_epoch

    def _phase(self) -> Stage:
        if self._hard_in_use() and self._hard_budget > 0.0:
            return Stage.HARD
        if Stage.MEDIUM in self.stages and self.mixing_weight() > 0.0:
            return Stage.MEDIUM
        return self.stages[0]

    def _step_per_domain(self, values: dict[str, float], epoch: int | None) -> Decision:
        previous = self.stage
        step = self._num_checks
        if self.sync_dist and _dist_initialized():
            self._sync_domains()
        value = values[self.monitor]
        old_ema = self._global_ema
        self._global_ema = value if old_ema is None else self.ema_weight * value + (1 - self.ema_weight) * old_ema
        self._global_history.append(self._global_ema)
        self._global_history = self._global_history[-max(self.hard_window, 2) :]
        ended = self._epoch if epoch is None else int(epoch)
        self._epoch = ended + 1
        gaps = [self.domain_gap(d) for d in sorted(self._domains)]
        median_gap = statistics.median(gaps) if gaps else self.default_gap
        reason = Reason.MIXING
        if Stage.HARD in self.stages:
            history = self._global_history
            window = history[-self.hard_window :]
            flat = len(history) >= self.hard_window and all(
                abs(b - a) <= self.hard_flat_tol for a, b in itertools.pairwise(window)
            )
            rise = len(history) >= 2 and history[-1] - history[-2] >= self.hard_rise
            before = self._hard_budget
            if flat and median_gap >= self.hard_min_gap:
                self._hard_budget = min(self.hard_cap, self._hard_budget + self.hard_step)
                if self._hard_budget > before:
                    reason = Reason.HARD_BUDGET_GREW
            elif rise:
                self._hard_budget = max(0.0, self.hard_shrink * self._hard_budget)
                if self._hard_budget < before:
                    reason = Reason.HARD_BUDGET_SHRANK
        if self.mixing_weight() == 0.0 and reason is Reason.MIXING:
            reason = Reason.WARMUP
        self._stage_index = self.stages.index(self._phase())
        return Decision(
            step=step,
            epoch=ended,
            stage=self.stage,
            previous_stage=previous,
            switched=self.stage is not previous,
            reason=reason,
            value=value,
            best=self._global_ema,
            num_bad_checks=0,
            patience=self.patience,
            gap=median_gap,
            hard_budget=self._hard_budget,
            metrics=values,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(stage={self.stage.value!r}, policy={self.policy.value!r}, "
            f"monitor={self.monitor!r}, patience={self.patience}, checks={self._num_checks})"
        )


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(f"Expected `{name}` to be an integer >= {minimum}, but got {value!r}.")


def _check_float(
    name: str, value: Any, *, minimum: float, maximum: float | None = None, strict: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
        ok = ok and (maximum is None or value <= maximum)
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise InvalidOptionError(f"Expected `{name}` to be a finite number {bound}, but got {value!r}.")

