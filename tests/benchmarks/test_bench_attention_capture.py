"""Smoke tests: the attention capture benchmark runs its CPU --tiny path with --quick, per family."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

RATIOS = {
    f"{mode}_over_sdpa_{what}"
    for mode in ("capture", "eager")
    for what in ("time", "memory", "saved_activations")
}


def _bench() -> Any:
    return importlib.import_module("bench_attention_capture")  # benchmarks/ is on sys.path (conftest)


def _check_family_report(report: dict[str, Any], family: str) -> None:
    assert report["family"] == family and report["device"] == "cpu (tiny model)"
    assert set(report["modes"]) == {"sdpa", "capture", "eager"}
    for mode in report["modes"].values():
        assert mode["oom"] is False and mode["median_s"] > 0 and mode["peak_memory_gib"] is None
        assert mode["saved_activations_mib"] > 0
    assert set(report["ratios"]) == RATIOS
    assert report["ratios"]["capture_over_sdpa_time"] > 0
    assert report["ratios"]["capture_over_sdpa_memory"] is None  # no allocator statistics on CPU
    # The capture keeps the image keys and its rows for backward: a little more than SDPA saves.
    assert report["ratios"]["capture_over_sdpa_saved_activations"] > 1.0
    assert set(report["targets_met"]) == {"capture_within_1.10x_sdpa_time"}
    assert report["image_tokens"] > 0 and report["seq"] > report["image_tokens"] + report["queries"]


def test_bench_attention_capture_tiny_quick(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench().main(["--tiny", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "attention_capture"
    _check_family_report(printed, "llava")
    assert printed["supervised_layers"] == [1, 3]
    assert (printed["batch"], printed["seq"], printed["image_tokens"], printed["queries"]) == (2, 64, 36, 8)


def test_bench_attention_capture_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    result = bench.main(["--device", "cpu", "--size", "tiny", "--family", "all", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["benchmark"] == "attention_capture"
    assert tuple(printed["families"]) == bench.FAMILIES
    for family, report in printed["families"].items():
        _check_family_report(report, family)
        assert printed["targets_met"][family] == report["targets_met"]
    layers = {family: report["supervised_layers"] for family, report in printed["families"].items()}
    assert layers["gemma3"] == [1, 2]  # a global and a sliding-window layer of the tiny Gemma 3


def test_bench_attention_capture_refuses_a_large_model_on_cpu() -> None:
    with pytest.raises(SystemExit, match="--size 7b is for a GPU"):
        _bench().main(["--device", "cpu", "--size", "7b", "--family", "qwen3_vl"])


def test_bench_attention_capture_without_the_kl(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench().main(["--tiny", "--quick", "--family", "gemma3", "--modes", "sdpa", "capture_no_kl"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert set(result["modes"]) == {"sdpa", "capture_no_kl"}
    assert set(result["ratios"]) == {
        f"capture_no_kl_over_sdpa_{what}" for what in ("time", "memory", "saved_activations")
    }
    assert result["ratios"]["capture_no_kl_over_sdpa_saved_activations"] > 1.0
    assert result["targets_met"] == {"capture_within_1.10x_sdpa_time": None}  # no capture mode run


def _narrow(config: Any) -> Any:
    """A large-model config with one narrow decoder layer and a narrow vision tower, keeping
    everything that sets the number of image tokens (image size, patch size, merging, pooling)."""
    text, vision = config.text_config, config.vision_config
    for name, value in {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
                        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}.items():  # fmt: skip
        setattr(text, name, value)
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = text.layer_types[-1:]
    if "mrope_section" in (getattr(text, "rope_parameters", None) or {}):
        text.rope_parameters["mrope_section"] = [2, 3, 3]  # sums to head_dim / 2
    narrow = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "num_attention_heads": 2,
              "depth": 1, "num_hidden_layers": 1, "out_hidden_size": 32,
              "fullatt_block_indexes": [0], "deepstack_visual_indexes": [0]}  # fmt: skip
    for name, value in narrow.items():
        if hasattr(vision, name):
            setattr(vision, name, value)
    if type(config).__name__ == "VipLlavaConfig":
        vision.num_hidden_layers = 12  # VIP-LLaVA concatenates layers -2, -5, -8, -11 and 6
    return config


# Image tokens per image at the resolution the 7B run uses.
LARGE_IMAGE_TOKENS = {
    "llava": 576,  # 336 px, 14 px patches
    "llava_onevision": 729 + 27 * 28,  # base view + one 384 px tile with a newline per row
    "qwen2_5_vl": 576,  # 672 px, 28 px per merged token
    "qwen3_vl": 576,  # 768 px, 32 px per merged token
    "gemma3": 256,  # 896 px pooled to 16 x 16
}


@pytest.mark.parametrize("family", list(LARGE_IMAGE_TOKENS))
def test_large_batch_is_what_the_model_expects(family: str) -> None:
    """The 7B run's inputs (real image resolutions) go through each family's model and every
    mode's step, on a narrowed copy of the 7B config on CPU: the GPU path without the GPU."""
    import torch
    import transformers

    bench = _bench()
    models = importlib.import_module("_models")
    cls_name, config = models.large_config(family, "7b")
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(_narrow(config))
    model.set_attn_implementation("sdpa")
    cpu = torch.device("cpu")
    inputs, query_mask, target, image_id = bench.make_batch(family, model, 1, None, 8, "large", cpu, torch.float32)
    assert int((inputs["input_ids"] == image_id).sum()) == LARGE_IMAGE_TOKENS[family]
    assert inputs["input_ids"].shape[1] == LARGE_IMAGE_TOKENS[family] + 168
    peft = pytest.importorskip("peft")
    model = bench.apply_lora(model, peft.LoraConfig(r=2, target_modules=bench._LORA_TARGETS))
    model.train()
    steps = bench.Steps(model, inputs, query_mask, target, image_id, [0], 8, 0.1, cpu)
    assert steps.timed("capture") > 0 and not steps.oom and steps.peak == {}


# Image tokens per image of the --size small run (the family's own image processing).
SMALL_IMAGE_TOKENS = {
    "llava": 576,  # 336 px, 14 px patches
    "llava_onevision": 729 + 27 * 28,  # base view + one 384 px tile with a newline per row
    "qwen2_5_vl": 256,  # 448 px, 28 px per merged token
    "qwen3_vl": 256,  # 512 px, 32 px per merged token
    "gemma3": 256,  # 896 px pooled to 16 x 16
}


def test_bench_attention_capture_small_quick(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench().main(["--device", "cpu", "--size", "small", "--family", "qwen2_5_vl", "--quick"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert printed["family"] == "qwen2_5_vl" and printed["device"] == "cpu (small model)"
    assert "narrowed to 4 layers of 256" in printed["model"]
    assert (printed["batch"], printed["image_tokens"], printed["queries"], printed["lora_r"]) == (2, 256, 32, 8)
    assert printed["seq"] == 256 + 168 and printed["supervised_layers"] == [1, 3]
    assert set(printed["modes"]) == {"sdpa", "capture", "eager"}
    for mode in printed["modes"].values():
        assert mode["oom"] is False and mode["median_s"] > 0 and mode["saved_activations_mib"] > 0
    assert set(printed["ratios"]) == RATIOS and printed["ratios"]["capture_over_sdpa_time"] > 0
    assert printed["ratios"]["capture_over_sdpa_saved_activations"] > 1.0
    assert set(printed["targets_met"]) == {"capture_within_1.10x_sdpa_time"}


@pytest.mark.parametrize("family", list(SMALL_IMAGE_TOKENS))
def test_small_models_keep_the_real_image_tokens(family: str) -> None:
    """--size small: the narrowed text model, the vocabulary with every special id inside it,
    and the family's real image-token count, captured exactly where the image tokens are."""
    import torch

    from medcurric.attention import AttentionCapture

    bench, models = _bench(), importlib.import_module("_models")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model, _ = bench.build_model(family, "small", cpu)
    text = model.config.text_config
    assert {name: getattr(text, name) for name in models.SMALL_TEXT} == models.SMALL_TEXT
    assert text.vocab_size == models.SMALL_VOCAB == model.get_input_embeddings().num_embeddings
    inputs, query_mask, target, image_id = bench.make_batch(family, model, 1, None, 32, "small", cpu, torch.float32)
    assert image_id < models.SMALL_VOCAB and int(inputs["input_ids"].max()) < models.SMALL_VOCAB
    assert int((inputs["input_ids"] == image_id).sum()) == SMALL_IMAGE_TOKENS[family] == target.shape[1]
    inputs.pop("labels")
    with torch.no_grad(), AttentionCapture(model, layers=[1, 3], query_mask=query_mask) as capture:
        model(**inputs)
        rows = capture.attentions[3]
        image_positions = capture.image_positions
    assert rows.shape == (1, 4, 32, SMALL_IMAGE_TOKENS[family])
    torch.testing.assert_close(rows.sum(-1), torch.ones(1, 4, 32))
    assert torch.equal(inputs["input_ids"].gather(1, image_positions), torch.full_like(image_positions, image_id))
