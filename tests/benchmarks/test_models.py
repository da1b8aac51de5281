"""The 7B-class models the GPU benchmarks build, checked on the meta device (no memory, no GPU)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")


def _models() -> Any:
    return importlib.import_module("_models")  # benchmarks/ is on sys.path (conftest)


def test_vip_llava_7b_has_the_published_shape() -> None:
    model = _models().vip_llava_7b(torch.device("meta"), image_token_id=32005, pad_token_id=32006)
    params = list(model.parameters())
    assert 7.0e9 < sum(p.numel() for p in params) < 7.2e9  # VIP-LLaVA-7B: 7.06 B
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {
        "meta"
    }
    assert model.config.image_token_index == 32005
    assert model.config.text_config.pad_token_id == 32006
    assert torch.get_default_dtype() == torch.float32  # restored


# Parameter totals on each checkpoint's model card (safetensors), in billions, and the
# decoder attention AttentionCapture must recompute.
PUBLISHED = {
    ("llava", "7b"): (7.06, "LlamaAttention"),  # vision tower + projector + Llama-2-7B
    ("llava_onevision", "7b"): (8.03, "Qwen2Attention"),
    ("qwen2_5_vl", "7b"): (8.29, "Qwen2_5_VLAttention"),
    ("qwen3_vl", "7b"): (8.77, "Qwen3VLTextAttention"),
    ("gemma3", "7b"): (4.30, "Gemma3Attention"),
    ("gemma3", "27b"): (27.4, "Gemma3Attention"),
}


@pytest.mark.parametrize("family_size", list(PUBLISHED), ids="-".join)
def test_large_model_has_the_published_size(family_size: tuple[str, str]) -> None:
    models = _models()
    assert set(models.LARGE_MODELS) == set(PUBLISHED)
    billions, attention = PUBLISHED[family_size]
    model = models.build_large(*family_size, torch.device("meta"))
    params = list(model.parameters())
    assert sum(p.numel() for p in params) / 1e9 == pytest.approx(billions, rel=0.01, abs=0.02)
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {"meta"}
    assert torch.get_default_dtype() == torch.float32  # restored
    layers = model.model.language_model.layers
    assert {type(layer.self_attn).__name__ for layer in layers} == {attention}
    from medcurric.attention import SUPPORTED_ATTENTION, SUPPORTED_MODELS

    assert type(model).__name__ in SUPPORTED_MODELS and attention in SUPPORTED_ATTENTION


def test_large_model_configs_carry_the_published_layouts() -> None:
    models = _models()
    gemma = models.gemma3_4b_config()
    assert gemma.mm_tokens_per_image == 256 and gemma.vision_config.image_size == 896
    types = gemma.text_config.layer_types
    assert types.count("full_attention") == 5 and types[5] == "full_attention"  # 5 sliding : 1 global
    assert gemma.text_config.sliding_window == 1024
    qwen3 = models.qwen3_vl_8b_config()
    assert qwen3.text_config.rope_parameters["mrope_interleaved"] is True
    assert qwen3.vision_config.patch_size == 16 and qwen3.vision_config.deepstack_visual_indexes == [8, 16, 24]
    assert models.qwen2_5_vl_7b_config().text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    with pytest.raises(SystemExit, match="No 27b model for family 'qwen3_vl'; sizes for it: 7b"):
        models.build_large("qwen3_vl", "27b", torch.device("meta"))
