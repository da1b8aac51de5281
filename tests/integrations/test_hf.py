from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainingArguments

from medcurric.curriculum import CurriculumScheduler, Stage
from medcurric.errors import MedcurricWarning
from medcurric.integrations.hf import CurriculumCallback


class TinyRegressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        pred = self.linear(x).squeeze(-1)
        out = {"logits": pred}
        if labels is not None:
            out["loss"] = torch.nn.functional.mse_loss(pred, labels)
        return out


def dataset(n: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


class StageRecordingCollator:
    def __init__(self, source: CurriculumCallback) -> None:
        self.source = source
        self.stages: list[Stage] = []

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        self.stages.append(self.source.stage)
        return {"x": torch.stack([f["x"] for f in features]), "labels": torch.stack([f["labels"] for f in features])}


def make_trainer(out: Path, callback: CurriculumCallback, collator, **kw) -> Trainer:
    args = TrainingArguments(
        output_dir=str(out),
        use_cpu=True,
        report_to=[],
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=0.05,
        logging_steps=1,
        save_steps=3,
        save_strategy="steps",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        **kw,
    )
    return Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=dataset(),
        eval_dataset=dataset(8),
        data_collator=collator,
        callbacks=[callback],
    )


def test_callback_switches_on_log_and_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    # min_delta so large that nothing after the first check improves: switch on check patience + 1.
    sched = CurriculumScheduler(patience=1, min_delta=1e9)
    cb = CurriculumCallback(sched, event="log")
    collator = StageRecordingCollator(cb)
    trainer = make_trainer(tmp_path, cb, collator, max_steps=6)
    trainer.train()
    steps = [d.step for d in sched.history]
    assert steps == list(range(len(steps))) and len(steps) >= 3  # one check per logged loss
    assert [d.switched for d in sched.history][:3] == [False, False, True]
    assert sched.stage is Stage.MEDIUM
    assert collator.stages[0] is Stage.EASY and collator.stages[-1] is Stage.MEDIUM
    # The state is in the checkpoint ...
    ckpt = tmp_path / "checkpoint-6"
    saved = json.loads((ckpt / "trainer_state.json").read_text())["stateful_callbacks"]["CurriculumCallback"]
    assert saved["attributes"]["scheduler_state"] == sched.state_dict()
    # ... and a fresh scheduler resumed from the checkpoint gets it back (the user's object, which
    # the collator holds, not a copy).
    fresh = CurriculumScheduler(patience=1, min_delta=1e9)
    cb2 = CurriculumCallback(fresh, event="log")
    collator2 = StageRecordingCollator(cb2)
    resumed = make_trainer(tmp_path, cb2, collator2, max_steps=6, restore_callback_states_from_checkpoint=True)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert fresh.stage is Stage.MEDIUM
    n = len(sched.history)
    assert [d.to_dict() for d in fresh.history[:n]] == [d.to_dict() for d in sched.history]
    assert collator2.stages and set(collator2.stages) == {Stage.MEDIUM}
    # Without the restore flag the run warns instead of silently starting over at Easy.
    cb3 = CurriculumCallback(CurriculumScheduler(patience=1, min_delta=1e9), event="log")
    again = make_trainer(tmp_path, cb3, StageRecordingCollator(cb3), max_steps=6)
    with pytest.warns(MedcurricWarning, match="restore_callback_states_from_checkpoint"):
        again.train(resume_from_checkpoint=str(ckpt))


def test_callback_steps_on_evaluate_with_eval_loss(tmp_path: Path) -> None:
    sched = CurriculumScheduler(patience=0, min_delta=1e9)
    cb = CurriculumCallback(sched, event="evaluate")
    trainer = make_trainer(tmp_path, cb, StageRecordingCollator(cb), max_steps=4, eval_strategy="steps", eval_steps=2)
    trainer.train()
    assert len(sched.history) == 2  # evaluations at steps 2 and 4; logs do not step it
    assert [d.switched for d in sched.history] == [False, True]
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert [d.metrics["loss"] for d in sched.history] == pytest.approx(evals)


def test_restored_callback_without_a_live_scheduler_uses_the_saved_config() -> None:
    sched = CurriculumScheduler(stages=("easy", "medium", "hard"), patience=4)
    state = CurriculumCallback(sched, name="other").state()
    sched.step({"loss": 1.0})
    rebuilt = CurriculumCallback(**{**state["args"], "name": "unused-name"})
    rebuilt.scheduler_state = state["attributes"]["scheduler_state"]
    assert rebuilt.scheduler is not sched
    assert rebuilt.scheduler.config() == sched.config()
    assert CurriculumCallback(**state["args"]).scheduler is sched  # the live one, by name
