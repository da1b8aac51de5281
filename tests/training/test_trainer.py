"""medcurric.training: configuration, image reading, data order across ranks, checkpoints on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.cot.records import CoTSample
from medcurric.curriculum import Stage
from medcurric.errors import DataFormatError, InvalidOptionError, MissingFileError, UnsafePathError
from medcurric.overlay import window_to_rgb
from medcurric.training import STATE_FILE, CurriculumTrainer, TrainConfig, latest_checkpoint
from medcurric.training.order import epoch_order, next_batch
from medcurric.training.trainer import _read_image


def _sample(image: str) -> CoTSample:
    return CoTSample(id="s", seed_id="k", stage="easy", question_type="open", question="q?",
                     rationale="r.", answer="a", image=image, box=(1.0, 1.0, 4.0, 4.0), image_size=(8, 8))


def test_config_round_trip_and_validation() -> None:
    cfg = TrainConfig(stages=["easy", "medium", "hard"], attention_layers=[-1, -2])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["attention_layers"] == [-1, -2]
    with pytest.raises(InvalidOptionError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(InvalidOptionError, match="Unknown TrainConfig keys"):
        TrainConfig.from_dict({"max_step": 3})


def test_read_image_16_bit_is_deeplesion_hu(tmp_path) -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, (12, 10)).astype(np.int32)
    (tmp_path / "ct").mkdir()
    Image.fromarray((hu + 32768).astype(np.uint16)).save(tmp_path / "ct" / "a.png")
    got = _read_image(tmp_path, _sample("ct/a.png"), (-160.0, 240.0))
    np.testing.assert_array_equal(got, window_to_rgb(hu.astype(np.float32), (-160.0, 240.0)))
    rgb = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ct" / "b.png")
    np.testing.assert_array_equal(np.asarray(_read_image(tmp_path, _sample("ct/b.png"), (0, 1))), rgb)
    with pytest.raises(MissingFileError, match="not found"):
        _read_image(tmp_path, _sample("ct/c.png"), (0, 1))
    with pytest.raises(UnsafePathError):
        _read_image(tmp_path, _sample("../outside.png"), (0, 1))


@pytest.mark.parametrize("world,bs,n", [(1, 3, 10), (2, 3, 10), (4, 2, 7)])
def test_ranks_split_each_epoch_exactly(world: int, bs: int, n: int) -> None:
    """Every rank's micro-batches together cover each epoch's permutation once, without overlap."""
    pool = list(range(n))
    positions = [[0, 0] for _ in range(world)]
    steps = 7
    picks: list[list[list[tuple[int, int]]]] = [[] for _ in range(world)]
    for _ in range(steps):
        for rank in range(world):
            picked, positions[rank] = next_batch(
                pool, 5, Stage.EASY, positions[rank], batch_size=bs, rank=rank, world=world
            )
            picks[rank].append(picked)
    # Reference: the flat stream of epoch permutations, cut into global batches.
    stream = []
    e = 0
    while len(stream) < steps * bs * world:
        stream += [(int(i), e) for i in epoch_order(pool, 5, Stage.EASY, e)]
        e += 1
    for step in range(steps):
        merged = [p for r in range(world) for p in picks[r][step]]
        assert merged == stream[step * bs * world : (step + 1) * bs * world]
    assert sorted(i for i, _ in stream[:n]) == list(range(n))
    assert all(pos == positions[0] for pos in positions)


def test_latest_checkpoint(tmp_path) -> None:
    assert latest_checkpoint(tmp_path / "none") is None
    for step in (5, 20, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (5, 20):
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text("{}")
    # checkpoint-100 is incomplete (no trainer state): skipped.
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-20"


def test_latest_checkpoint_ignores_folders_that_only_look_numbered(tmp_path: Path) -> None:
    for name in ("checkpoint-²", "checkpoint-٣", "checkpoint-7", "checkpoint-12", "checkpoint-99"):
        (tmp_path / name).mkdir()
        if name != "checkpoint-99":  # an incomplete checkpoint (no state file) is skipped too
            (tmp_path / name / STATE_FILE).write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-12"


def test_target_blur_is_the_authors_gaussian_on_the_box_target() -> None:
    """``target_smoothing="gaussian"``: the Medium target equals box_to_patch_distribution(..., gaussian(9, 3))."""
    pytest.importorskip("peft")
    pytest.importorskip("accelerate")
    from medcurric.curriculum import CurriculumCollator, render
    from medcurric.geometry import box_to_patch_distribution, gaussian, map_boxes
    from medcurric.testing import bundled_sample
    from medcurric.testing.tiny import build_tiny_vlm
    from medcurric.training import CurriculumTrainer

    vlm = build_tiny_vlm(seed=0)
    bundle = bundled_sample(seed=0)
    targets = {}
    for smoothing in (None, "gaussian"):
        cfg = TrainConfig(max_steps=1, batch_size=2, lora_r=0, target_smoothing=smoothing, prefetch=False)
        trainer = CurriculumTrainer(cfg, bundle.samples, model=vlm.model, processor=vlm.processor,
                                    images=bundle.images)
        batch = trainer.render_batch(Stage.MEDIUM, [(0, 0), (5, 0)])
        targets[smoothing] = batch["attention_target"]
    for k, index in enumerate((0, 5)):
        sample = bundle.samples[index]
        h, w = bundle.images[sample.image].shape[:2]
        mapped = map_boxes(np.asarray([sample.box]), trainer.preprocess, (h, w))
        for smoothing, spec in ((None, None), ("gaussian", gaussian(9, 3.0))):
            want = box_to_patch_distribution(mapped.boxes, trainer.grid, input_size=mapped.image_size,
                                             smoothing=spec)
            np.testing.assert_allclose(targets[smoothing][k].numpy(), np.asarray(want, np.float32).reshape(-1),
                                       rtol=1e-6, atol=1e-7)
    assert not np.allclose(targets[None].numpy(), targets["gaussian"].numpy())
    # the collator renders raw samples with the same blur
    collator = CurriculumCollator(vlm.processor, smoothing="gaussian")
    rendered = render(bundle.samples[0], "medium", image=bundle.images[bundle.samples[0].image],
                      grid=collator.grid, preprocess=collator.preprocess, smoothing=collator.smoothing)
    np.testing.assert_allclose(collator([rendered])["attention_target"][0].numpy(), targets["gaussian"][0].numpy())
    with pytest.raises(InvalidOptionError, match="smoothing"):
        CurriculumCollator(vlm.processor, smoothing="gausian")
    with pytest.raises(InvalidOptionError, match="target_smoothing"):
        TrainConfig(target_smoothing="box")


def test_config_policy_and_overlay_options() -> None:
    cfg = TrainConfig(policy="per_domain", overlay_style="VIP_LLAVA", mixing_start_epoch=1)
    assert (cfg.policy, cfg.overlay_style) == ("per_domain", "vip_llava")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig().policy == "global" and TrainConfig().overlay_style == "vip_llava_random"
    with pytest.raises(InvalidOptionError, match="Did you mean"):
        TrainConfig(policy="per-domian")
    with pytest.raises(InvalidOptionError, match="overlay_style"):
        TrainConfig(overlay_style="fancy")


def test_sample_domain_is_lesion_type_by_modality() -> None:
    from medcurric.training import sample_domain

    s = _sample("a.png")
    assert sample_domain(s) == "lesion|CT"
    mr = CoTSample.from_dict({**s.to_dict(), "lesion_type": "liver", "extra": {"modality": "MR"}})
    assert sample_domain(mr) == "liver|MR"


def _tiny_trainer(tmp_path: Path):
    import torch

    from medcurric.testing import build_tiny_vlm, bundled_sample

    torch.manual_seed(0)
    bundle = bundled_sample()
    vlm = build_tiny_vlm(seed=0)
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=2, lora_r=0,
                         attention_layers=(0, 1), check_every=1, overlay_style="medcurric")
    trainer = CurriculumTrainer(config, bundle.samples, model=vlm.model, processor=vlm.processor,
                                images=bundle.images)
    return trainer, bundle


def test_hold_out_attention_maps_and_answers(tmp_path: Path) -> None:
    import torch

    from medcurric.attention import AttentionCapture

    trainer, bundle = _tiny_trainer(tmp_path)
    first = bundle.samples[0].seed_id
    held = trainer.hold_out(lambda s: s.seed_id == first)
    assert held and all(trainer.samples[i].seed_id == first for i in held)
    assert not any(i in pool for pool in trainer.pools.values() for i in held)
    medium = [trainer.samples[i] for i in held if trainer.samples[i].stage == "medium"]
    maps = trainer.attention_maps(medium)
    assert maps.shape == (len(medium), 36) and np.allclose(maps.sum(axis=1), 1.0)
    # the same average taken by hand from one capture
    s = medium[0]
    batch = trainer.render_batch(Stage.MEDIUM, [(trainer.samples.index(s), 0)])
    inner = trainer.accelerator.unwrap_model(trainer.model)
    inner.eval()
    with torch.no_grad(), AttentionCapture(inner, layers=[0, 1], query_mask=batch["supervised_mask"]) as cap:
        inner(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")})
        rows = [cap.attentions[k][0][:, cap.query_mask[0]] for k in (0, 1)]
    inner.train()
    by_hand = torch.stack(rows).mean(dim=(0, 1, 2))
    np.testing.assert_allclose(maps[0], (by_hand / by_hand.sum()).numpy(), rtol=1e-5, atol=1e-7)
    answers = trainer.answer(medium[:2], max_new_tokens=3)
    assert set(answers) == {m.id for m in medium[:2]} and all(isinstance(a, str) for a in answers.values())
    trainer.train()
    with pytest.raises(DataFormatError, match="before training"):
        trainer.hold_out(lambda s: True)


def test_medium_kl_is_the_mean_of_one_call_per_layer(tmp_path: Path) -> None:
    """compute_loss takes the KL of all attention layers in one call: the mean of per-layer calls."""
    import torch

    from medcurric.attention import AttentionCapture
    from medcurric.losses import attention_kl_loss

    trainer, _ = _tiny_trainer(tmp_path)
    picked = [(i, 0) for i in trainer.pools[Stage.MEDIUM][:2]]
    batch = trainer.render_batch(Stage.MEDIUM, picked)
    inner = trainer.accelerator.unwrap_model(trainer.model)
    inner.eval()  # no dropout: both forward passes see the same weights and inputs
    with torch.no_grad():
        _, info = trainer.compute_loss(batch, Stage.MEDIUM)
        with AttentionCapture(inner, layers=[0, 1], query_mask=batch["supervised_mask"]) as cap:
            inner(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")})
            per_layer = [
                attention_kl_loss(cap.attentions[k], batch["attention_target"], token_mask=cap.query_mask,
                                  has_target=batch["has_attention_target"], key_mask=cap.key_mask)
                for k in (0, 1)
            ]  # fmt: skip
    assert abs(float(per_layer[0]) - float(per_layer[1])) > 1e-4  # the layers differ
    torch.testing.assert_close(info["attention_kl"], torch.stack(per_layer).mean(), rtol=1e-6, atol=1e-7)
