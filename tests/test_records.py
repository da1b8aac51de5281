"""Every record and saved state goes through one serialisation style, losslessly and typed.

Round trips are checked with hypothesis over every field; lines written by the previous
release (pasted below as they were written) must still load; values with no JSON form
must fail with the field and the type named.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medcurric.anatomy import Criterion, Location, MatchOutcome, OrganMatch
from medcurric.cot import CoTSample
from medcurric.curriculum import CurriculumScheduler, Decision, GapRule, Reason
from medcurric.errors import DataFormatError, InvalidOptionError, WrongTypeError
from medcurric.eval.datasets import VQAItem
from medcurric.eval.grounding import GroundingScore, GroundingScores
from medcurric.eval.report import ReportScores
from medcurric.eval.vqa import QuestionScore, VQAScores
from medcurric.io import LesionRecord
from medcurric.seeds import FactualSeed
from medcurric.stage import Stage
from medcurric.training import TrainConfig, TrainResult

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/
from strategies import (
    cot_samples,
    decisions,
    factual_seeds,
    json_values,
    lesion_records,
    locations,
    organ_matches,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_num = st.floats(allow_nan=False, allow_infinity=False)
_opt = st.none().__or__
_text = st.text(max_size=6)


def _shape(value: Any) -> Any:
    """The value with the exact type of every leaf and container, to compare types as well as values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, {f.name: _shape(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return ("dict", {k: _shape(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_shape(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def _round_trip(record: Any) -> Any:
    line = record.to_json()
    back = type(record).from_json(line)
    assert _shape(back) == _shape(record)  # same values, same types (tuple, enum, nested record)
    assert back.to_json() == line
    return back


# ------------------------------------------------------------------ eval strategies

_question_scores = st.builds(
    QuestionScore,
    id=_text,
    answer_type=st.sampled_from(["open", "closed"]),
    prediction=_text,
    reference=_text,
    normalized_prediction=_text,
    normalized_reference=_text,
    exact_match=_opt(_num),
    precision=_opt(_num),
    recall=_opt(_num),
    f1=_opt(_num),
    closed=_opt(_num),
    organ=_opt(_text),
    missing=st.booleans(),
)
_grounding_scores = st.builds(
    GroundingScore,
    id=_text,
    stage=_opt(st.sampled_from(["easy", "medium", "hard"])),
    organ=_opt(_text),
    cited=_opt(_num),
    iou=_opt(_num),
    iou_hit=_opt(_num),
    mass_in_box=_opt(_num),
    pointing_hit=_opt(_num),
)

RECORDS = {
    "Location": locations(),
    "LesionRecord": lesion_records(),
    "OrganMatch": organ_matches(),
    "FactualSeed": factual_seeds(),
    "CoTSample": cot_samples(),
    "Decision": decisions(),
    "GapRule": st.builds(GapRule, easy_key=_text, medium_key=_text, min_gap=_num, all_switches=st.booleans()),
    "TrainConfig": st.builds(
        TrainConfig,
        output_dir=_text,
        max_steps=st.integers(1, 10**6),
        lr=_num,
        stages=st.lists(st.sampled_from(["easy", "medium", "hard"]), min_size=1, max_size=3).map(tuple),
        attention_layers=st.lists(st.integers(-40, 40), min_size=1, max_size=4).map(tuple),
        supervise=st.sampled_from(["answer", "rationale", "both"]),
        bf16=st.booleans(),
        seed=st.integers(0, 2**31),
    ),
    "TrainResult": st.builds(
        TrainResult,
        steps=st.integers(0, 10**6),
        stage=st.sampled_from(["easy", "medium", "hard"]),
        log=st.lists(st.dictionaries(_text, json_values(4), max_size=4), max_size=3),
        decisions=st.lists(decisions().map(Decision.to_dict), max_size=2),
        checkpoints=st.lists(_text, max_size=2),
        tokens_per_second=_num,
        seconds=_num,
    ),
    "VQAItem": st.builds(
        VQAItem,
        id=_text,
        question=_text,
        answer=_text,
        answer_type=st.sampled_from(["open", "closed"]),
        image=_text,
        organ=_opt(_text),
        dataset=_text,
        extra=st.dictionaries(_text, json_values(4), max_size=2),
    ),
    "QuestionScore": _question_scores,
    "VQAScores": st.builds(
        VQAScores,
        compat=_text,
        n_open=st.integers(0, 99),
        n_closed=st.integers(0, 99),
        n_closed_scored=st.integers(0, 99),
        n_missing=st.integers(0, 99),
        open_recall=_opt(_num),
        open_precision=_opt(_num),
        open_f1=_opt(_num),
        open_exact_match=_opt(_num),
        closed_accuracy=_opt(_num),
        questions=st.lists(_question_scores, max_size=2).map(tuple),
    ),
    "GroundingScore": _grounding_scores,
    "GroundingScores": st.builds(
        GroundingScores,
        n=st.integers(0, 99),
        citation_rate=_opt(_num),
        mean_iou=_opt(_num),
        iou_hit_rate=_opt(_num),
        mean_mass_in_box=_opt(_num),
        pointing_accuracy=_opt(_num),
        iou_threshold=_num,
        samples=st.lists(_grounding_scores, max_size=2).map(tuple),
    ),
    "ReportScores": st.builds(
        ReportScores,
        scores=st.dictionaries(_text, _num, max_size=3),
        per_report=st.dictionaries(_text, st.dictionaries(_text, _num, max_size=2), max_size=2),
        n=st.integers(0, 99),
        tokenizer=st.sampled_from(["ptb", "simple"]),
    ),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_record_round_trips_losslessly(name: str) -> None:
    @SETTINGS
    @given(RECORDS[name])
    def check(record: Any) -> None:
        assert type(record).__name__ == name
        assert _round_trip(record) == record

    check()


@SETTINGS
@given(decisions(allow_nan=True))
def test_nan_in_a_decision_survives_strict_json(decision: Decision) -> None:
    line = decision.to_json()  # allow_nan=False inside: NaN and infinities travel as strings
    back = Decision.from_json(line)
    assert _shape(back) == _shape(decision) and back.to_json() == line


@SETTINGS
@given(
    st.lists(st.floats(-5, 5) | st.sampled_from([math.inf, -math.inf, math.nan]), max_size=20),
    st.integers(0, 20),
)
def test_scheduler_state_round_trips_through_strict_json(values: list[float], cut: int) -> None:
    opts = dict(stages=("easy", "medium", "hard"), patience=1, check_finite=False, gap_rule=GapRule())
    sched = CurriculumScheduler(**opts)
    for v in values[:cut]:
        sched.step({"loss": v, "rationale_loss_easy": 1.0, "rationale_loss_medium": abs(v)})
    state = json.loads(json.dumps(sched.state_dict(), allow_nan=False))
    fresh = CurriculumScheduler(**opts)
    fresh.load_state_dict(state)
    assert json.dumps(fresh.state_dict()) == json.dumps(sched.state_dict())
    assert all(type(d) is Decision and type(d.reason) is Reason for d in fresh.history)
    rest = [{"loss": v, "rationale_loss_easy": 1.0, "rationale_loss_medium": 0.5} for v in values[cut:]]
    assert [fresh.step(m).to_json() for m in rest] == [sched.step(m).to_json() for m in rest]


# --------------------------------------------------- lines written by the previous release

SEED_LINE = (
    '{"id":"liver-small-key","text":"An 18 mm liver lesion is seen in the central part of the liver.",'
    '"lesion_type":"liver","organ":"liver","organ_label":5,"outcome":"inside","score":1.0,"criterion":"ioa",'
    '"image":"phantom/liver-small-key.png","box":[17.0,31.0,20.0,34.0],"location":{"organ":"liver",'
    '"laterality":"right","region":null,"region_phrase":null,"vertical":"middle","anterior_posterior":"middle",'
    '"transverse":"middle","relative_position":[0.5893,0.4423,0.4583],"size_mm":[18.0,18.0],'
    '"centre_mm":[81.0,-3.0,-25.0],"phrase":"central part of the"},"location_phrase":"central part of the",'
    '"size_mm":[18.0,18.0],"modality":"CT","slice_index":13,"spacing":[6.0,6.0],"template":"inside-1",'
    '"source":"medcurric-phantom","iou":0.017892644135188866,"ioa":1.0,"extra":{"hu":30.0,"diameter_mm":12.0,'
    '"centre_mm":[-81.0,3.0,-25.0],"image_size":[64,64]}}'
)
SAMPLE_LINE = (
    '{"id":"519161ee557889f4cc72dd03","seed_id":"liver-small-key","stage":"easy","question_type":"open",'
    '"question":"What abnormality is seen inside the highlighted box, and where is it?","rationale":"The box.",'
    '"answer":"A liver lesion.","image":"phantom/liver-small-key.png","box":[17.0,31.0,20.0,34.0],'
    '"box_norm":[0.2656,0.4844,0.3125,0.5312],"image_size":[64,64],"organ":"liver","lesion_type":"liver",'
    '"template":"easy-open-v1","backend":"template","model":"","verdicts":[{"check":"parse","passed":true,'
    '"detail":"json"},{"check":"names_organ","passed":true,"detail":"names \'liver\'"}],"accepted":true,'
    '"raw":"{}","attempts":1,"extra":{"seed_text":"An 18 mm liver lesion.","outcome":"inside",'
    '"reply_format":"json"},"reason":""}'
)
RECORD_LINE = (
    '{"id":"liver-small-key","image":"phantom/liver-small-key.png","box":[17.0,31.0,20.0,34.0],'
    '"lesion_type":"liver","slice_index":13,"spacing":[6.0,6.0],"modality":"CT","window":[-160.0,240.0],'
    '"split":null,"source":"medcurric-phantom","extra":{"hu":30.0,"diameter_mm":12.0,"centre_mm":[-81.0,3.0,-25.0]}}'
)
MATCH_LINE = (
    '{"organ":"liver","label":5,"score":1.0,"criterion":"ioa","outcome":"inside","distance_mm":null,'
    '"candidates":[{"organ":"liver","label":5,"iou":0.017892644135188866,"ioa":1.0,"intersection":9}],'
    '"min_score":0.5,"level":"organ","id":"liver-small-key"}'
)
DECISION_LINE = (
    '{"step": 3, "epoch": null, "stage": "easy", "previous_stage": "easy", "switched": false, '
    '"reason": "gap_not_met", "value": 0.5, "best": null, "num_bad_checks": 2, "patience": 1, "gap": null, '
    '"hard_budget": null, "metrics": {"loss": 0.5, "rationale_loss_easy": 1.0, "rationale_loss_medium": null}}'
)
STATE_LINE = (
    '{"version": 1, "policy": "per_domain", "stages": ["easy", "medium", "hard"], "stage": "easy", '
    '"num_checks": 1, "best": "-inf", "num_bad_checks": 0, "epoch": 1, "domains": {"liver": {"easy": 1.0, '
    '"medium": null}}, "global_ema": 1.0, "global_history": [1.0], "hard_budget": 0.0, "history": [{"step": 0, '
    '"epoch": 0, "stage": "easy", "previous_stage": "easy", "switched": false, "reason": "warmup", "value": 1.0, '
    '"best": 1.0, "num_bad_checks": 0, "patience": 5, "gap": 0.0, "hard_budget": 0.0, "metrics": {"loss": null}}]}'
)
CONFIG_LINE = (
    '{"output_dir": "runs/medcurric", "max_steps": 1000, "batch_size": 4, "grad_accum": 1, "lr": 0.0002, '
    '"weight_decay": 0.0, "warmup_steps": 0, "max_grad_norm": 1.0, "stages": ["easy", "medium", "hard"], '
    '"check_every": 50, "patience": 3, "min_delta": 0.01, "threshold_mode": "rel", "warmup_checks": 0, '
    '"answer_weight": 0.8, "rationale_weight": 0.2, "attention_weight": 0.5, "attention_layers": [-1, -2], '
    '"supervise": "both", "stage_pools": true, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, '
    '"lora_targets": ".*language_model.*\\\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$", '
    '"bf16": false, "gradient_checkpointing": false, "save_every": 0, "keep_checkpoints": 0, "seed": 0, '
    '"log_every": 0, "prefetch": true}'
)
UNCHANGED = {
    # the previous release's lines of records whose form did not change: read and written back as they were
    "LesionRecord": (LesionRecord, RECORD_LINE),
    "CoTSample": (CoTSample, SAMPLE_LINE),
    "OrganMatch": (OrganMatch, MATCH_LINE),
    "TrainConfig": (TrainConfig, CONFIG_LINE),
    "VQAScores": (
        VQAScores,
        '{"compat":"default","n_open":1,"n_closed":0,"n_closed_scored":0,"n_missing":0,"open_recall":1.0,'
        '"open_precision":1.0,"open_f1":1.0,"open_exact_match":1.0,"closed_accuracy":null,"questions":[{"id":"7",'
        '"answer_type":"open","prediction":"Liver","reference":"liver","normalized_prediction":"liver",'
        '"normalized_reference":"liver","exact_match":1.0,"precision":1.0,"recall":1.0,"f1":1.0,"closed":null,'
        '"organ":"ABD","missing":false}]}',
    ),
    "GroundingScores": (
        GroundingScores,
        '{"n":1,"citation_rate":1.0,"mean_iou":0.75,"iou_hit_rate":1.0,"mean_mass_in_box":null,'
        '"pointing_accuracy":null,"iou_threshold":0.5,"samples":[{"id":"s1","stage":"easy","organ":"liver",'
        '"cited":1.0,"iou":0.75,"iou_hit":1.0,"mass_in_box":null,"pointing_hit":null}]}',
    ),
    "ReportScores": (
        ReportScores,
        '{"scores":{"BLEU-1":0.5,"ROUGE-L":0.25},"per_report":{"r1":{"BLEU-1":0.5}},"n":1,"tokenizer":"simple"}',
    ),
    "VQAItem": (
        VQAItem,
        '{"id":"1","question":"Is there a nodule?","answer":"yes","answer_type":"closed","image":"a.jpg",'
        '"organ":"Lung","dataset":"slake","extra":{"q_lang":"en"}}',
    ),
}


#: Fields added since the previous release whose default is not empty, with that exact default.
ADDED_DEFAULTS: dict[str, dict[str, Any]] = {
    "TrainConfig": {
        "policy": "global",  # the previous trainer's only policy
        "mixing_start_epoch": 4,  # the per-domain options: unused by "global"
        "mixing_ramp_epochs": 10,
        "hard_start_epoch": 19,
        "ema_weight": 0.9,
        "gap_center": 0.5,
        "gap_temperature": 0.1,
        "overlay_style": "vip_llava_random",  # a changed default (CHANGELOG: "medcurric" before)
    },
}


@pytest.mark.parametrize("name", sorted(UNCHANGED))
def test_lines_of_the_previous_release_load_and_write_back_unchanged(name: str) -> None:
    cls, line = UNCHANGED[name]
    record = cls.from_dict(json.loads(line))
    # Fields added since (e.g. VQAScores.n_no_marker) are written with their defaults; the rest
    # comes back exactly.
    written = record.to_dict()
    for key, value in ADDED_DEFAULTS.get(name, {}).items():
        assert key not in json.loads(line) and written.pop(key) == value, key
    assert _without_added_defaults(written, json.loads(line)) == json.loads(line)


def _without_added_defaults(new: Any, old: Any) -> Any:
    if isinstance(new, dict) and isinstance(old, dict):
        added = {k: v for k, v in new.items() if k not in old}
        assert all(v in (None, 0, False) for v in added.values()), added
        return {k: _without_added_defaults(v, old[k]) for k, v in new.items() if k in old}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [_without_added_defaults(a, b) for a, b in zip(new, old, strict=True)]
    return new


def test_an_older_seed_line_loads_typed() -> None:
    seed = FactualSeed.from_json(SEED_LINE)
    assert type(seed.location) is Location and seed.location.vertical == "middle"
    assert type(seed.location.relative_position) is tuple and seed.location.size_mm == (18.0, 18.0)
    assert seed.outcome is MatchOutcome.INSIDE and seed.criterion is Criterion.IOA
    assert seed.image_size == (64, 64) and type(seed.image_size) is tuple and type(seed.image_size[0]) is int
    assert "image_size" not in seed.extra and seed.extra["centre_mm"] == [-81.0, 3.0, -25.0]
    old = json.loads(SEED_LINE)
    new = seed.to_dict()
    assert new.pop("image_size") == old["extra"].pop("image_size")  # the key moved
    assert new.pop("lesion_phrase") == "a liver lesion"  # derived for seeds written before it
    assert new.pop("window") is None  # a field added after this line was written
    assert new == old
    assert _round_trip(seed) == seed


def test_an_older_decision_and_state_load_typed() -> None:
    d = Decision.from_json(DECISION_LINE)
    assert d.stage is Stage.EASY and d.reason is Reason.GAP_NOT_MET and d.gap is None
    assert math.isnan(d.metrics["rationale_loss_medium"])  # written as null: it was NaN
    assert Decision.from_dict({"stage": "medium"}) == Decision(
        step=0, epoch=None, stage=Stage.MEDIUM, previous_stage=Stage.MEDIUM, switched=False,
        reason=Reason.NO_IMPROVEMENT,
    )
    sched = CurriculumScheduler(policy="per_domain", stages=("easy", "medium", "hard"))
    sched.load_state_dict(json.loads(STATE_LINE))
    assert sched.best == -math.inf and sched.epoch == 1 and sched.stage_probabilities("liver")
    (h,) = sched.history
    assert h.reason is Reason.WARMUP and math.isnan(h.metrics["loss"])
    state = sched.state_dict()
    assert state["domains"] == {"liver": {"easy": 1.0, "medium": None}} and state["best"] == "-inf"


def test_the_bundled_sample_carries_typed_seeds() -> None:
    from medcurric.testing import bundled_sample

    sample = bundled_sample()
    for seed in sample.seeds:
        assert type(seed.outcome) is MatchOutcome and type(seed.image_size) is tuple
        assert seed.location is None or type(seed.location) is Location
        assert "image_size" not in seed.extra
    assert {s.image_size for s in sample.samples if s.stage == "easy"} <= {s.image_size for s in sample.seeds}


# ---------------------------------------------------------------- seed fields

def _seed(**kw: Any) -> FactualSeed:
    base = dict(id="s", text="t", lesion_type="cyst", organ="liver", organ_label=5, outcome="inside",
                score=0.9, criterion="ioa", image="a.png", box=(1.0, 2.0, 3.0, 4.0))
    return FactualSeed(**{**base, **kw})  # type: ignore[arg-type]


def test_seed_fields_are_converted_and_checked() -> None:
    s = _seed(location={"organ": "liver", "size_mm": [3, 4]}, image_size=[64.0, 48])
    assert type(s.location) is Location and s.location.size_mm == (3.0, 4.0) and s.image_size == (64, 48)
    assert s.outcome is MatchOutcome.INSIDE and s.criterion is Criterion.IOA
    assert _seed(extra={"image_size": (8, 6), "k": 1}).image_size == (8, 6)
    assert _seed(image_size=(8, 6), extra={"image_size": [8, 6]}).extra == {}
    with pytest.raises(InvalidOptionError, match="Did you mean 'inside'"):
        _seed(outcome="insdie")
    with pytest.raises(WrongTypeError, match="Location or None, but got str"):
        _seed(location="liver")
    with pytest.raises(DataFormatError, match="disagrees"):
        _seed(image_size=(8, 6), extra={"image_size": [6, 8]})
    for bad in ([64], [64, 0], [64.5, 48], "64x48", [64, 48, 3]):
        with pytest.raises(DataFormatError, match=r"image_size"):
            _seed(image_size=bad)
    with pytest.raises(DataFormatError, match=r"FactualSeed\.location\.size_mm: expected 2 values"):
        FactualSeed.from_dict({**_seed().to_dict(), "location": {"size_mm": [1, 2, 3]}})
    with pytest.raises(DataFormatError, match=r"FactualSeed\.outcome: expected one of"):
        FactualSeed.from_dict({**_seed().to_dict(), "outcome": "inner"})


# ------------------------------------------------------- values with no JSON form

class _Colour(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    ("record", "where", "type_name"),
    [
        (_seed(extra={"path": Path("a.png")}), "FactualSeed.extra['path']", "PosixPath"),
        (_seed(location=Location(centre_mm=(1.0, {2.0}))), "FactualSeed.location.centre_mm[1]", "set"),  # type: ignore[arg-type]
        (
            Decision(step=0, epoch=None, stage=Stage.EASY, previous_stage=Stage.EASY, switched=False,
                     reason=Reason.IMPROVED, metrics={"loss": torch.tensor(1.0)}),  # type: ignore[dict-item]
            "Decision.metrics['loss']",
            "torch.Tensor",
        ),
        (TrainResult(steps=1, stage="easy", log=[{"colour": _Colour.RED}]), "TrainResult.log[0]['colour']", "_Colour"),
        (LesionRecord(id="a", image="b", box=(1, 2, 3, 4), extra={"when": object()}), "LesionRecord.extra['when']", "object"),
    ],
)
def test_a_value_with_no_json_form_is_named_never_stringified(record: Any, where: str, type_name: str) -> None:
    with pytest.raises(DataFormatError) as info:
        record.to_json()
    message = str(info.value)
    assert f"Cannot serialise {where}: a value of type" in message and type_name in message
