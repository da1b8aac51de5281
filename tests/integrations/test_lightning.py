from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset

from medcurric.curriculum import CurriculumScheduler, Stage
from medcurric.errors import DataFormatError
from medcurric.integrations.lightning import CurriculumCallback


class TinyRegressor(pl.LightningModule):
    def __init__(self, callback: CurriculumCallback | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)
        self.callback = callback
        self.stages_seen: list[Stage] = []

    def training_step(self, batch, batch_idx):
        if self.callback is not None:
            self.stages_seen.append(self.callback.stage)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5, 0.0])), batch_size=8)


def trainer(root: Path, callback: CurriculumCallback, epochs: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=[callback],
        num_sanity_val_steps=1,
    )


def test_callback_switches_after_validation_and_restores_from_a_checkpoint(tmp_path: Path) -> None:
    sched = CurriculumScheduler(patience=1, min_delta=1e9)  # nothing improves after the first check
    cb = CurriculumCallback(sched, monitor="val_loss")
    model = TinyRegressor(cb)
    t = trainer(tmp_path, cb, epochs=4)
    t.fit(model, loader(), loader(8))
    assert len(sched.history) == 4  # one check per epoch; the sanity check is ignored
    assert [d.switched for d in sched.history] == [False, False, True, False]
    assert [d.epoch for d in sched.history] == [0, 1, 2, 3]
    assert sched.history[-1].metrics["loss"] == pytest.approx(float(t.callback_metrics["val_loss"]))
    assert model.stages_seen[0] is Stage.EASY and model.stages_seen[-1] is Stage.MEDIUM
    ckpt_path = t.checkpoint_callback.best_model_path
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["callbacks"][cb.state_key]["scheduler"] == sched.state_dict()
    fresh = CurriculumScheduler(patience=1, min_delta=1e9)
    cb2 = CurriculumCallback(fresh, monitor="val_loss")
    trainer(tmp_path / "resumed", cb2, epochs=4).fit(TinyRegressor(cb2), loader(), loader(8), ckpt_path=ckpt_path)
    assert fresh.state_dict() == sched.state_dict()


def test_train_epoch_end_and_missing_metric(tmp_path: Path) -> None:
    sched = CurriculumScheduler(patience=0, min_delta=1e9)
    cb = CurriculumCallback(sched, monitor="train_loss", on="train_epoch_end")
    trainer(tmp_path, cb, epochs=2).fit(TinyRegressor(), loader(), loader(8))
    assert [d.switched for d in sched.history] == [False, True]
    bad = CurriculumCallback(CurriculumScheduler(), monitor="nope", on="train_epoch_end")
    with pytest.raises(DataFormatError, match="nope"):
        trainer(tmp_path / "bad", bad, epochs=1).fit(TinyRegressor(), loader(), loader(8))
