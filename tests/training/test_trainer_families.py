"""CurriculumTrainer on a tiny model of every supported family: the curriculum, the Medium KL, exact resume.

Each family's run (the bundled sample, a tiny random model whose processor is the
family's real processor class, LoRA r8) goes Easy -> Medium -> Hard on a plateau rule
that always fires (``min_delta=1``: no check counts as an improvement), so every stage
lasts ``(patience + 1) * check_every`` steps. The Medium pool is two samples, so the
attention KL on them is measured before and after Medium trains on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("accelerate")

from medcurric.curriculum import Stage
from medcurric.errors import UnsupportedModelError
from medcurric.testing import bundled_sample
from medcurric.testing.families import FAMILIES, build_family_vlm
from medcurric.training import CurriculumTrainer, TrainConfig

CHECK_EVERY = 5
STEPS = 30  # Easy 1-10, Medium 11-20, Hard 21-30
SAVE_AT = 15  # mid-Medium


def _samples():
    """The bundled sample with a Medium pool of two samples (the other stages keep theirs)."""
    bundle = bundled_sample(seed=0)
    medium = [s for s in bundle.samples if s.stage == "medium"][:2]
    return [s for s in bundle.samples if s.stage != "medium"] + medium, bundle.images


def _config(out: Path, **extra) -> TrainConfig:
    options = dict(
        output_dir=str(out), max_steps=STEPS, batch_size=2, stages=("easy", "medium", "hard"),
        check_every=CHECK_EVERY, patience=1, min_delta=1.0, lr=1e-2, attention_weight=10.0, lora_r=8,
        seed=0, overlay_style="medcurric",
    )
    options.update(extra)
    return TrainConfig(**options)


def _trainer(family: str, config: TrainConfig, **kwargs) -> CurriculumTrainer:
    torch.manual_seed(0)
    model, processor = build_family_vlm(family, seed=0)
    samples, images = _samples()
    return CurriculumTrainer(config, samples, model=model, processor=processor, images=images, **kwargs)


def _adapters(trainer: CurriculumTrainer) -> dict[str, torch.Tensor]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module", params=FAMILIES)
def straight(request, tmp_path_factory):
    """One uninterrupted run per family, with the Medium pool's KL at the start and end of Medium."""
    torch.set_num_threads(1)
    family = request.param
    out = tmp_path_factory.mktemp(family) / "run"
    kl: dict[str, float] = {}
    holder: dict[str, CurriculumTrainer] = {}

    def watch(record: dict) -> None:
        decision = record.get("decision") or {}
        if decision.get("switched"):  # the last step of a stage: measure the state Medium starts / ends with
            kl["before" if record["stage"] == "easy" else "after"] = holder["t"].evaluate(Stage.MEDIUM)["attention_kl"]

    trainer = _trainer(family, _config(out, save_every=SAVE_AT), on_log=watch)
    holder["t"] = trainer
    result = trainer.train()
    return family, out, trainer, result, kl


def test_each_family_goes_easy_medium_hard_and_the_medium_kl_falls(straight) -> None:
    family, _, _, result, kl = straight
    stages = [r["stage"] for r in result.log]
    assert stages == ["easy"] * 10 + ["medium"] * 10 + ["hard"] * 10, family
    assert result.switch_steps() == [10, 20]
    assert [d["reason"] for d in result.decisions if d["switched"]] == ["plateau", "plateau"]
    # Only Medium carries the attention KL, finite at every step.
    assert all((r["attention_kl"] is not None) == (r["stage"] == "medium") for r in result.log)
    assert all(np.isfinite(r["attention_kl"]) for r in result.log if r["stage"] == "medium")
    # Training Medium lowered the KL of the Medium samples' attention to their boxes.
    assert set(kl) == {"before", "after"}
    assert kl["after"] < 0.9 * kl["before"], (family, kl)
    # The family's own model inputs reached the model (a Hard step ran after Medium).
    assert np.isfinite(result.log[-1]["lm_loss"])


def test_each_family_resumes_exactly(straight, tmp_path) -> None:
    family, out, trainer, result, _ = straight
    resumed = _trainer(family, _config(tmp_path / "resumed"))
    again = resumed.train(resume_from=out / f"checkpoint-{SAVE_AT}")
    assert again.steps == STEPS and again.stage == "hard"
    keys = ("stage", "loss", "lm_loss", "attention_kl", "answer_loss", "rationale_loss", "tokens")
    assert [[r[k] for k in keys] for r in again.log] == [[r[k] for k in keys] for r in result.log]
    want, got = _adapters(trainer), _adapters(resumed)
    assert want and set(got) == set(want)
    assert all("lora_" in n for n in want)
    assert all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_maps_attention_and_answers(family: str, tmp_path: Path) -> None:
    """attention_maps equals one capture averaged by hand; answer() generates through the family's prompt."""
    from medcurric.attention import AttentionCapture

    torch.set_num_threads(1)
    trainer = _trainer(family, _config(tmp_path / "run", max_steps=1, prefetch=False))
    medium = [s for s in trainer.samples if s.stage == "medium"]
    held = trainer.hold_out(lambda s: s.id == medium[0].id)
    assert held == [trainer.samples.index(medium[0])]
    maps = trainer.attention_maps(medium)
    assert maps.shape[0] == 2 and np.allclose(maps.sum(axis=1), 1.0)
    batch = trainer.render_batch(Stage.MEDIUM, [(held[0], 0)])
    inner = trainer.accelerator.unwrap_model(trainer.model)
    inputs = {k: v for k, v in trainer.collator.model_inputs(batch).items() if k != "labels"}
    inner.eval()
    with torch.no_grad(), AttentionCapture(inner, layers=[-1], query_mask=batch["supervised_mask"]) as cap:
        inner(**inputs)
        row = cap.attentions[-1][0][:, cap.query_mask[0]].mean(dim=(0, 1))
    inner.train()
    n = int(batch["image_key_mask"][0].sum()) if "image_key_mask" in batch else row.numel()
    np.testing.assert_allclose(maps[0][:n], (row / row.sum()).numpy(), rtol=1e-5, atol=1e-7)
    assert not maps[0][n:].any()
    answers = trainer.answer(medium[:1], max_new_tokens=3)
    assert set(answers) == {medium[0].id} and isinstance(answers[medium[0].id], str)


def test_a_processor_of_another_family_is_refused(tmp_path: Path) -> None:
    from medcurric.testing import build_family_processor

    model, _ = build_family_vlm("qwen2_5_vl", seed=0)
    samples, images = _samples()
    with pytest.raises(UnsupportedModelError, match=r"Qwen2_5_VLForConditionalGeneration.*LlavaProcessor"):
        CurriculumTrainer(_config(tmp_path), samples, model=model, processor=build_family_processor("llava"),
                          images=images)


def test_an_unsupported_model_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    import transformers

    from medcurric.testing import build_family_processor

    config = transformers.PaliGemmaConfig(
        text_config={"model_type": "gemma", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16},
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 16,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        image_token_id=299,
    )
    model = transformers.PaliGemmaForConditionalGeneration(config)
    samples, images = _samples()
    with pytest.raises(UnsupportedModelError, match=r"supported family \(.*Gemma3ForConditionalGeneration.*"
                                                   r"but got PaliGemmaForConditionalGeneration"):
        CurriculumTrainer(_config(tmp_path), samples, model=model, processor=build_family_processor("gemma3"),
                          images=images)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_leaves_the_medium_steps_unchanged(family: str, tmp_path: Path) -> None:
    """Non-reentrant checkpointing recomputes the layers the capture hooks: same losses and KL per step."""
    torch.set_num_threads(1)
    logs = []
    for checkpointing in (False, True):
        config = _config(tmp_path / str(checkpointing), max_steps=3, stages=("medium",),
                         gradient_checkpointing=checkpointing, prefetch=False)
        logs.append(_trainer(family, config).train().log)
    plain, checkpointed = logs
    assert all(r["attention_kl"] is not None for r in plain)
    for key in ("loss", "lm_loss", "attention_kl"):
        np.testing.assert_allclose([r[key] for r in checkpointed], [r[key] for r in plain], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "gemma3"])
def test_per_domain_batches_mix_stages_of_a_layout_family(family: str, tmp_path: Path) -> None:
    """Per-domain: Easy, Medium and Hard samples share a batch; only Medium rows carry an attention target."""
    torch.set_num_threads(1)
    config = _config(tmp_path / "run", max_steps=4, batch_size=4, policy="per_domain", mixing_start_epoch=0,
                     mixing_ramp_epochs=1, hard_start_epoch=0, prefetch=False)
    trainer = _trainer(family, config)
    picked = [(i, 0) for i in range(4)]
    stages = [Stage.EASY, Stage.MEDIUM, Stage.HARD, Stage.MEDIUM]
    batch = trainer.render_batch(Stage.EASY, picked, stages)
    assert batch["has_attention_target"].tolist() == [False, True, False, True]
    assert batch["supervised_mask"].any(dim=1).tolist() == [False, True, False, True]
    loss, info = trainer.compute_loss(batch, None)
    assert torch.isfinite(loss) and info["attention_kl"] is not None and info["sample_losses"].shape == (4,)
    result = trainer.train()
    assert result.steps == 4 and all(np.isfinite(r["lm_loss"]) for r in result.log)


def test_default_lora_targets_mean_the_family_targets(tmp_path: Path) -> None:
    from medcurric.training import DEFAULT_LORA_TARGETS, FAMILY_DEFAULTS

    trainer = _trainer("gemma3", _config(tmp_path / "a", max_steps=1, prefetch=False))
    assert trainer.config.lora_targets == DEFAULT_LORA_TARGETS
    peft_config = trainer.accelerator.unwrap_model(trainer.model).peft_config["default"]
    assert peft_config.target_modules == FAMILY_DEFAULTS["gemma3"].lora_targets
    own = r".*language_model\.layers\.0\.self_attn\.q_proj"
    trainer = _trainer("gemma3", _config(tmp_path / "b", max_steps=1, prefetch=False, lora_targets=own))
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.peft_config["default"].target_modules == own
    assert {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n} == {
        "base_model.model.model.language_model.layers.0.self_attn.q_proj"}
