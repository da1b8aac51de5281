from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcurric.curriculum import CurriculumScheduler, Decision, GapRule, Reason, Stage
from medcurric.errors import DataFormatError, InvalidOptionError, NonFiniteError

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def loss_curves(draw: st.DrawFn, min_size: int = 1, max_size: int = 40) -> list[float]:
    """Loss curves with repeated values and small moves, so plateaus and near-ties are common."""
    n = draw(st.integers(min_size, max_size))
    start = draw(st.sampled_from([-2.0, 0.0, 0.5, 1.0, 3.0]))
    deltas = st.one_of(
        st.just(0.0),
        st.sampled_from([-0.1, -0.05, -0.01, 0.01, 0.05, 0.1, -0.001, 0.001]),
        st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False),
    )
    out, value = [], start
    for _ in range(n):
        value += draw(deltas)
        out.append(value)
    return out


plateau_options = st.fixed_dictionaries(
    {
        "patience": st.integers(0, 4),
        "min_delta": st.sampled_from([0.0, 1e-3, 0.01, 0.05, 0.1]),
        "threshold_mode": st.sampled_from(["abs", "rel"]),
        "mode": st.sampled_from(["min", "max"]),
    }
)


def first_reduction(values: list[float], patience: int, min_delta: float, threshold_mode: str, mode: str) -> int | None:
    """Index of the step at which torch's ReduceLROnPlateau first lowers the learning rate."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.5, patience=patience, threshold=min_delta, threshold_mode=threshold_mode, eps=0.0
    )
    for i, v in enumerate(values):
        sched.step(v)
        if opt.param_groups[0]["lr"] < 1.0:
            return i
    return None


def switches(sched: CurriculumScheduler, values: list[float]) -> list[int]:
    return [i for i, v in enumerate(values) if sched.step({"loss": v}).switched]


@SETTINGS
@given(values=loss_curves(), opts=plateau_options)
def test_switch_matches_reduce_lr_on_plateau(values: list[float], opts: dict) -> None:
    sched = CurriculumScheduler(**opts)
    got = switches(sched, values)
    expected = first_reduction(values, **opts)
    assert got == ([] if expected is None else [expected])


@SETTINGS
@given(values=loss_curves(max_size=60), opts=plateau_options)
def test_tracker_restarts_after_a_switch(values: list[float], opts: dict) -> None:
    sched = CurriculumScheduler(stages=("easy", "medium", "hard"), **opts)
    got = switches(sched, values)
    expected: list[int] = []
    offset = 0
    while len(expected) < 2:
        idx = first_reduction(values[offset:], **opts)
        if idx is None:
            break
        expected.append(offset + idx)
        offset += idx + 1
    assert got == expected
    assert sched.stage is [Stage.EASY, Stage.MEDIUM, Stage.HARD][len(expected)]


@SETTINGS
@given(values=loss_curves(), opts=plateau_options, warmup=st.integers(0, 6))
def test_warmup_checks_are_ignored(values: list[float], opts: dict, warmup: int) -> None:
    sched = CurriculumScheduler(warmup=warmup, **opts)
    decisions = [sched.step({"loss": v}) for v in values]
    assert all(d.reason is Reason.WARMUP and not d.switched for d in decisions[:warmup])
    got = [i for i, d in enumerate(decisions) if d.switched]
    expected = first_reduction(values[warmup:], **opts)
    assert got == ([] if expected is None else [warmup + expected])


def test_paper_rule_example_and_reasons() -> None:
    sched = CurriculumScheduler(patience=2, min_delta=0.01)
    reasons = [sched.step({"loss": v}).reason for v in (1.0, 0.9, 0.895, 0.9, 0.899)]
    assert reasons == [Reason.IMPROVED, Reason.IMPROVED, Reason.NO_IMPROVEMENT, Reason.NO_IMPROVEMENT, Reason.PLATEAU]
    last = sched.history[-1]
    assert last.switched and last.previous_stage is Stage.EASY and last.stage is Stage.MEDIUM
    assert sched.stage is Stage.MEDIUM and sched.best is None and sched.num_bad_checks == 0
    # Hard is off by default: Medium is final, nothing more happens.
    for v in (1.0, 1.0, 1.0, 1.0, 1.0):
        d = sched.step({"loss": v})
        assert d.reason is Reason.FINAL_STAGE and not d.switched
    assert sched.stage is Stage.MEDIUM


def test_tensor_and_numpy_metrics_are_accepted() -> None:
    sched = CurriculumScheduler(patience=0, min_delta=0.0)
    sched.step({"loss": torch.tensor(1.0)})
    d = sched.step({"loss": np.float32(1.0)})
    assert d.switched and d.value == 1.0


# ------------------------------------------------------------------ non-finite values


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_raises_a_value_error(bad: float) -> None:
    sched = CurriculumScheduler()
    sched.step({"loss": 1.0})
    with pytest.raises(NonFiniteError, match="on_non_finite='skip'") as info:
        sched.step({"loss": bad})
    assert isinstance(info.value, ValueError)
    assert sched.stage is Stage.EASY and sched.best == 1.0


@SETTINGS
@given(values=loss_curves(), opts=plateau_options, data=st.data())
def test_skipped_non_finite_checks_change_nothing(values: list[float], opts: dict, data: st.DataObject) -> None:
    positions = data.draw(st.sets(st.integers(0, len(values)), max_size=5))
    noisy: list[float] = []
    for i, v in enumerate(values):
        if i in positions:
            noisy.append(data.draw(st.sampled_from([math.nan, math.inf, -math.inf])))
        noisy.append(v)
    clean = CurriculumScheduler(**opts)
    skip = CurriculumScheduler(on_non_finite="skip", **opts)
    clean_d = [clean.step({"loss": v}) for v in values]
    skip_d = [skip.step({"loss": v}) for v in noisy]
    kept = [d for d, v in zip(skip_d, noisy, strict=True) if math.isfinite(v)]
    dropped = [d for d, v in zip(skip_d, noisy, strict=True) if not math.isfinite(v)]
    assert all(d.reason is Reason.SKIPPED_NON_FINITE and not d.switched for d in dropped)
    assert [(d.stage, d.switched, d.reason, d.best) for d in kept] == [
        (d.stage, d.switched, d.reason, d.best) for d in clean_d
    ]


def test_nan_never_switches_even_with_patience_zero() -> None:
    sched = CurriculumScheduler(patience=0, on_non_finite="skip")
    sched.step({"loss": 1.0})
    for _ in range(5):
        assert not sched.step({"loss": math.nan}).switched
    assert sched.stage is Stage.EASY


def test_gap_rule_gates_the_switch_and_names_the_metrics() -> None:
    rule = GapRule(min_gap=-0.1)
    sched = CurriculumScheduler(patience=0, min_delta=0.0, gap_rule=rule)
    with pytest.raises(DataFormatError, match="rationale_loss_easy"):
        sched.step({"loss": 1.0})
    m = {"loss": 1.0, "rationale_loss_easy": 1.0, "rationale_loss_medium": 1.5}
    assert sched.step(m).reason is Reason.IMPROVED
    d = sched.step(m)
    assert d.reason is Reason.GAP_NOT_MET and not d.switched and d.gap == pytest.approx(-0.5)
    d = sched.step({**m, "rationale_loss_medium": 1.05})  # still on the plateau, gap now allows it
    assert d.switched and d.reason is Reason.PLATEAU and d.gap == pytest.approx(-0.05)


def test_gap_rule_only_gates_easy_to_medium_by_default() -> None:
    m = {"loss": 1.0, "rationale_loss_easy": 1.0, "rationale_loss_medium": 9.0}
    sched = CurriculumScheduler(stages=("medium", "hard"), patience=0, min_delta=0.0, gap_rule=GapRule())
    sched.step(m)
    assert sched.step(m).switched
    strict = CurriculumScheduler(
        stages=("medium", "hard"), patience=0, min_delta=0.0, gap_rule=GapRule(all_switches=True)
    )
    strict.step(m)
    assert strict.step(m).reason is Reason.GAP_NOT_MET


# ------------------------------------------------------------------ options and state


def test_options_are_checked_with_suggestions() -> None:
    with pytest.raises(InvalidOptionError, match="Did you mean 'min'"):
        CurriculumScheduler(mode="mni")
    with pytest.raises(InvalidOptionError, match="threshold_mode"):
        CurriculumScheduler(threshold_mode="relative-ish")
    with pytest.raises(InvalidOptionError, match="patience"):
        CurriculumScheduler(patience=-1)
    with pytest.raises(InvalidOptionError, match="curriculum order"):
        CurriculumScheduler(stages=("medium", "easy"))
    with pytest.raises(DataFormatError, match="'val_loss'"):
        CurriculumScheduler(monitor="val_loss").step({"loss": 1.0})


def run_global(sched: CurriculumScheduler, values: list[float]) -> list[dict]:
    out = []
    for v in values:
        metrics = {"loss": v, "rationale_loss_easy": 1.0, "rationale_loss_medium": 1.0 + (v % 0.3)}
        out.append(sched.step(metrics).to_dict())
    return out


@SETTINGS
@given(values=loss_curves(max_size=50), opts=plateau_options, data=st.data())
def test_resumed_run_makes_the_same_decisions(values: list[float], opts: dict, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(values)))
    kwargs = dict(stages=("easy", "medium", "hard"), gap_rule=GapRule(min_gap=-0.2), warmup=2, **opts)
    full = run_global(CurriculumScheduler(**kwargs), values)
    first = CurriculumScheduler(**kwargs)
    head = run_global(first, values[:cut])
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = CurriculumScheduler(**kwargs)
    resumed.load_state_dict(state)
    tail = run_global(resumed, values[cut:])
    assert head + tail == full
    assert [d.to_dict() for d in resumed.history] == full


def test_older_state_loads_with_defaults() -> None:
    sched = CurriculumScheduler(stages=("easy", "medium", "hard"))
    sched.load_state_dict({"stage": "medium", "best": 0.5})  # a version-0 state: most keys missing
    assert sched.stage is Stage.MEDIUM and sched.best == 0.5 and sched.num_bad_checks == 0
    assert sched.history == [] and sched.hard_budget == 0.0
    with pytest.raises(DataFormatError, match="newer"):
        sched.load_state_dict({"version": 99})
    with pytest.raises(DataFormatError, match="same `stages`"):
        CurriculumScheduler().load_state_dict({"stage": "hard"})


def test_decision_round_trips_through_json() -> None:
    sched = CurriculumScheduler(patience=0)
    d = sched.step({"loss": 2.0})
    again = Decision.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again == d


def test_config_rebuilds_the_scheduler() -> None:
    sched = CurriculumScheduler(stages=("easy", "medium", "hard"), patience=7, gap_rule=GapRule(min_gap=0.2))
    cfg = json.loads(json.dumps(sched.config()))
    assert CurriculumScheduler.from_config(cfg).config() == sched.config()


# ------------------------------------------------------------------ per-domain policy


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_per_domain_probabilities_with_emas_from_the_first_observation() -> None:
    # The named option ema_init=None: EMAs start at their first observation.
    sched = CurriculumScheduler(policy="per_domain", ema_init=None, global_ema_init=None)
    losses = {"liver|CT": [(2.0, 1.5), (1.8, 0.7), (1.6, 0.5)], "lung|CT": [(1.0, 1.2)]}
    ema: dict[str, dict[str, float]] = {}
    for domain, pairs in losses.items():
        for easy, medium in pairs:
            sched.observe(domain, "easy", easy)
            sched.observe(domain, Stage.MEDIUM, medium)
            e = ema.setdefault(domain, {})
            e["easy"] = easy if "easy" not in e else 0.9 * easy + 0.1 * e["easy"]
            e["medium"] = medium if "medium" not in e else 0.9 * medium + 0.1 * e["medium"]
    for epoch in range(12):
        sched.step({"loss": 1.0}, epoch=epoch)
        e_now = epoch + 1
        beta = min(1.0, max(0.0, (e_now - 4) / 10))
        for domain, e in ema.items():
            gap = (e["easy"] - e["medium"]) / (e["easy"] + 1e-8)
            p = beta * sigmoid((gap - 0.5) / 0.1)
            probs = sched.stage_probabilities(domain)
            assert probs[Stage.EASY] == pytest.approx(1 - p, abs=1e-12)
            assert probs[Stage.MEDIUM] == pytest.approx(p, abs=1e-12)
            if e_now < 4:
                assert probs[Stage.MEDIUM] == 0.0
        # An unseen domain uses default_gap = 0.
        assert sched.stage_probabilities("bone|CT")[Stage.MEDIUM] == pytest.approx(beta * sigmoid(-5.0))
    assert sched.stage is Stage.MEDIUM


def test_per_domain_sampling_matches_probabilities() -> None:
    sched = CurriculumScheduler(policy="per_domain", mixing_start_epoch=0, mixing_ramp_epochs=1)
    sched.observe("d", "easy", 1.0)
    sched.observe("d", "medium", 0.45)
    sched.step({"loss": 1.0})
    p = sched.stage_probabilities("d")[Stage.MEDIUM]
    rng = np.random.default_rng(0)
    n = 4000
    draws = [sched.sample_stage("d", rng) for _ in range(n)]
    frac = sum(s is Stage.MEDIUM for s in draws) / n
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert sched.sample_stage("d", random.Random(1)) in (Stage.EASY, Stage.MEDIUM)


def test_hard_budget_grows_when_flat_and_shrinks_on_a_rise() -> None:
    kw = dict(policy="per_domain", stages=("easy", "medium", "hard"), hard_start_epoch=3, hard_window=2,
              ema_init=None, global_ema_init=None)
    sched = CurriculumScheduler(**kw)
    sched.observe("d", "easy", 1.0)
    sched.observe("d", "medium", 0.3)  # gap 0.7 >= 0.6
    # epoch 0: one EMA value, no window yet; from epoch 1 the last 2 values are flat -> grows
    # every epoch (updated before hard_start too, as the authors do) ...
    d = sched.step({"loss": 1.0}, epoch=0)
    assert d.reason is Reason.WARMUP and sched.hard_budget == 0.0
    d = sched.step({"loss": 1.0}, epoch=1)
    assert d.reason is Reason.HARD_BUDGET_GREW and sched.hard_budget == pytest.approx(0.05)
    # ... but used only from hard_start_epoch on (the next epoch is 2 here)
    assert sched.stage_probabilities("d")[Stage.HARD] == 0.0 and sched.stage is not Stage.HARD
    sched.step({"loss": 1.0}, epoch=2)
    assert sched.hard_budget == pytest.approx(0.10)
    assert sched.stage_probabilities("d")[Stage.HARD] == pytest.approx(0.10) and sched.stage is Stage.HARD
    reasons = [sched.step({"loss": 1.0}, epoch=e).reason for e in range(3, 6)]
    assert reasons == [Reason.HARD_BUDGET_GREW] * 3 and sched.hard_budget == pytest.approx(0.25)
    for e in range(6, 12):
        sched.step({"loss": 1.0}, epoch=e)
    assert sched.hard_budget == pytest.approx(0.3)  # capped
    d = sched.step({"loss": 2.0}, epoch=12)  # EMA rises by 0.9 >= 0.05
    assert d.reason is Reason.HARD_BUDGET_SHRANK and sched.hard_budget == pytest.approx(0.27)
    probs = sched.stage_probabilities("d")
    assert probs[Stage.HARD] == pytest.approx(0.27) and sum(probs.values()) == pytest.approx(1.0)
    # Without Hard enabled the budget never moves.
    no_hard = CurriculumScheduler(policy="per_domain", hard_start_epoch=0, hard_window=1)
    no_hard.observe("d", "easy", 1.0)
    no_hard.observe("d", "medium", 0.3)
    for e in range(5):
        no_hard.step({"loss": 1.0}, epoch=e)
    assert no_hard.hard_budget == 0.0 and Stage.HARD not in no_hard.stage_probabilities("d")


class _AuthorsScheduler:
    """The per-domain scheduler of ksyint/PROGRESSIVE a7cca74, restated here from its description.

    Constants: EMA rate 0.9 on the new value; domain EMAs start at 1e-3, the global at 1e-4;
    gap (e - m) / (e + 1e-8), 0 when e < 1e-8; ramp min(1, (epoch - 4) / 10) after epoch 4;
    P(medium) = ramp * sigmoid((gap - 0.5) / 0.1); the Hard budget is updated after every epoch:
    +0.05 (cap 0.3) when the last 5 global EMA values move by <= 0.01 per step and the median gap
    is >= 0.6, else x(1 - 0.1) when the last step rose by >= 0.05; Hard drawn from epoch 19.
    """

    def __init__(self, domains: list[str]) -> None:
        self.domains = domains
        self.easy = {d: 1e-3 for d in domains}
        self.medium = {d: 1e-3 for d in domains}
        self.glob = 1e-4
        self.history: list[float] = []
        self.budget = 0.0

    def gap(self, d: str) -> float:
        e, m = self.easy[d], self.medium[d]
        return 0.0 if e < 1e-8 else (e - m) / (e + 1e-8)

    def probabilities(self, d: str, epoch: int) -> dict[str, float]:
        if epoch < 4:
            return {"easy": 1.0, "medium": 0.0, "hard": 0.0}
        ramp = 0.0 if epoch <= 4 else min(1.0, (epoch - 4) / 10)
        p = ramp / (1.0 + math.exp(-(self.gap(d) - 0.5) / 0.1))
        hard = self.budget if epoch >= 19 else 0.0
        return {"easy": (1 - hard) * (1 - p), "medium": (1 - hard) * p, "hard": hard}

    def end_epoch(self, losses: dict[str, dict[str, float]]) -> None:
        values = []
        for d, per_stage in losses.items():
            for stage, v in per_stage.items():
                if stage == "easy":
                    self.easy[d] = 0.1 * self.easy[d] + 0.9 * v
                elif stage == "medium":
                    self.medium[d] = 0.1 * self.medium[d] + 0.9 * v
                values.append(v)
        self.glob = 0.1 * self.glob + 0.9 * (sum(values) / len(values))
        self.history.append(self.glob)
        last = self.history[-5:]
        flat = len(self.history) >= 5 and all(abs(last[i] - last[i - 1]) <= 0.01 for i in range(1, len(last)))
        median = float(np.median([self.gap(d) for d in self.domains]))
        if flat and median >= 0.6:
            self.budget = min(self.budget + 0.05, 0.3)
        elif len(self.history) >= 2 and self.history[-1] - self.history[-2] >= 0.05:
            self.budget = max(0.0, 0.9 * self.budget)


def _authors_loss_sequence(epochs: int, seed: int) -> list[dict[str, dict[str, float]]]:
    """Per-domain epoch means: falling, then flat (so the Hard budget grows), with a rise."""
    rng = np.random.default_rng(seed)
    domains = ["liver lesion|CT", "lung lesion|CT", "bone lesion|CT"]
    out = []
    for e in range(epochs):
        level = 2.0 * math.exp(-e / 6) + 0.3
        if e == 33:
            level += 0.4  # a rise: the budget shrinks
        epoch: dict[str, dict[str, float]] = {}
        for k, d in enumerate(domains):
            per_stage = {"easy": level + 0.01 * k + 0.002 * rng.standard_normal()}
            if e >= 5:
                per_stage["medium"] = 0.2 * level + 0.002 * rng.standard_normal()
            if e >= 19:
                per_stage["hard"] = 0.5 * level
            epoch[d] = per_stage
        out.append(epoch)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_per_domain_defaults_reproduce_the_authors_epoch_by_epoch(seed: int) -> None:
    sequence = _authors_loss_sequence(45, seed)
    domains = sorted(sequence[0])
    ours = CurriculumScheduler(policy="per_domain", stages=("easy", "medium", "hard"))
    theirs = _AuthorsScheduler(domains)
    grew = shrank = 0
    for epoch, losses in enumerate(sequence):
        for d in [*domains, "unseen|MR"]:
            if d == "unseen|MR":
                theirs.easy.setdefault(d, 1e-3)
                theirs.medium.setdefault(d, 1e-3)
            expected = theirs.probabilities(d, epoch)
            got = ours.stage_probabilities(d)
            for stage in ("easy", "medium", "hard"):
                assert got[Stage(stage)] == pytest.approx(expected[stage], abs=1e-6), (epoch, d, stage)
        decision = ours.step_epoch(losses, epoch=epoch)
        theirs.end_epoch(losses)
        assert ours.hard_budget == pytest.approx(theirs.budget, abs=1e-12)
        grew += decision.reason is Reason.HARD_BUDGET_GREW
        shrank += decision.reason is Reason.HARD_BUDGET_SHRANK
    # the sequence exercises every rule: Medium before any Medium loss, growth, the cap, a shrink
    assert grew >= 6 and shrank >= 1 and theirs.budget > 0.0


def test_before_any_medium_loss_the_gap_is_about_one() -> None:
    sched = CurriculumScheduler(policy="per_domain")
    medium = {}
    for epoch in range(13):
        medium[epoch] = sched.stage_probabilities("liver|CT")[Stage.MEDIUM]
        sched.step_epoch({"liver|CT": {"easy": 2.0}}, epoch=epoch)
    # the authors' figures: 0.099 at epoch 5, 0.79 at epoch 12
    assert round(medium[5], 3) == 0.099 and round(medium[12], 2) == 0.79
    assert medium[4] == 0.0


def test_step_epoch_needs_the_per_domain_policy_and_a_loss() -> None:
    with pytest.raises(InvalidOptionError, match="per_domain"):
        CurriculumScheduler().step_epoch({"d": {"easy": 1.0}})
    with pytest.raises(DataFormatError, match="at least one"):
        CurriculumScheduler(policy="per_domain").step_epoch({"d": {}})


def test_hard_budget_needs_the_median_gap() -> None:
    sched = CurriculumScheduler(policy="per_domain", stages=("easy", "medium", "hard"), hard_start_epoch=0, hard_window=1)
    sched.observe("d", "easy", 1.0)
    sched.observe("d", "medium", 0.9)  # gap 0.1 < 0.6
    for e in range(5):
        sched.step({"loss": 1.0}, epoch=e)
    assert sched.hard_budget == 0.0


@SETTINGS
@given(
    values=loss_curves(min_size=2, max_size=30),
    data=st.data(),
)
def test_per_domain_resume_is_identical(values: list[float], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(values)))
    kw = dict(policy="per_domain", stages=("easy", "medium", "hard"), hard_start_epoch=5, mixing_start_epoch=2)

    def run(sched: CurriculumScheduler, vals: list[float], start: int) -> list[tuple]:
        out = []
        for i, v in enumerate(vals, start=start):
            sched.observe(f"d{i % 3}", "easy", abs(v) + 1.0)
            sched.observe(f"d{i % 3}", "medium", abs(v) * 0.3 + 0.1)
            d = sched.step({"loss": v})
            out.append((d.to_dict(), sched.stage_probabilities("d0"), sched.stage_probabilities("d1")))
        return out

    full = run(CurriculumScheduler(**kw), values, 0)
    first = CurriculumScheduler(**kw)
    head = run(first, values[:cut], 0)
    resumed = CurriculumScheduler(**kw)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    assert head + run(resumed, values[cut:], cut) == full


@SETTINGS
@given(values=loss_curves(), opts=plateau_options, data=st.data())
def test_without_the_finite_check_non_finite_values_behave_as_in_torch(
    values: list[float], opts: dict, data: st.DataObject
) -> None:
    positions = data.draw(st.sets(st.integers(0, len(values) - 1), max_size=4))
    noisy = [data.draw(st.sampled_from([math.nan, math.inf, -math.inf])) if i in positions else v for i, v in enumerate(values)]
    sched = CurriculumScheduler(check_finite=False, **opts)
    got = switches(sched, noisy)
    expected = first_reduction(noisy, **opts)
    assert got == ([] if expected is None else [expected])


def test_non_finite_best_survives_a_json_round_trip() -> None:
    sched = CurriculumScheduler(check_finite=False, patience=1)
    sched.step({"loss": -math.inf})
    state = json.loads(json.dumps(sched.state_dict(), allow_nan=False))
    fresh = CurriculumScheduler(check_finite=False, patience=1)
    fresh.load_state_dict(state)
    assert fresh.best == -math.inf
    assert [fresh.step({"loss": v}).switched for v in (0.0, 0.0)] == [sched.step({"loss": v}).switched for v in (0.0, 0.0)]


def _per_domain(**kw) -> CurriculumScheduler:
    return CurriculumScheduler(stages=("easy", "medium", "hard"), policy="per_domain", **kw)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("policy", "global", "policy 'global'"),
        ("stages", ["easy", "medium"], r"stages \['easy', 'medium'\]"),
        ("hard_budget", 5, "`hard_budget`: expected a finite number in \\[0, 1\\], but got 5"),
        ("hard_budget", -0.1, "`hard_budget`"),
        ("num_checks", "x", "`num_checks`: expected an integer >= 0"),
        ("epoch", -1, "`epoch`: expected an integer >= 0"),
        ("num_bad_checks", 1.5, "`num_bad_checks`"),
        ("best", "nan", "`best`: expected a number \\(not NaN\\)"),
        ("global_ema", "inf", "`global_ema`"),
        ("global_history", [0.5, "nan"], "`global_history`"),
        ("domains", {"liver|CT": {"easy": "nan", "medium": None}}, r"`domains\['liver\|CT'\]`"),
        ("domains", {"liver|CT": {"easy": 1.0, "hard": 2.0}}, r"`domains\['liver\|CT'\]`"),
    ],
)
def test_edited_or_foreign_state_is_refused_naming_the_field(field: str, value, match: str) -> None:
    sched = _per_domain()
    sched.observe("liver|CT", "easy", 2.0)
    sched.step({"loss": 1.0}, epoch=0)
    state = json.loads(json.dumps(sched.state_dict()))
    fresh = _per_domain()
    before = fresh.state_dict()
    with pytest.raises(DataFormatError, match=match):
        fresh.load_state_dict({**state, field: value})
    assert fresh.state_dict() == before  # nothing half-loaded
    fresh.load_state_dict(state)  # the unedited state still loads
    assert fresh.state_dict() == sched.state_dict()


def test_hard_budget_out_of_range_never_gives_negative_probabilities() -> None:
    sched = _per_domain(hard_start_epoch=0)
    state = {**sched.state_dict(), "hard_budget": 1.0, "epoch": 1}
    sched.load_state_dict(state)  # the largest valid budget
    probs = sched.stage_probabilities("lung|CT")
    assert all(0.0 <= p <= 1.0 for p in probs.values()) and sum(probs.values()) == pytest.approx(1.0)
    with pytest.raises(DataFormatError, match="hard_budget"):
        sched.load_state_dict({**state, "hard_budget": 5})
