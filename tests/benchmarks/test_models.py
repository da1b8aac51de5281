"""The 7B model the GPU benchmarks build, checked on the meta device (no memory, no GPU)."""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("transformers")


def test_vip_llava_7b_has_the_published_shape() -> None:
    models = importlib.import_module("_models")  # benchmarks/ is on sys.path (conftest)
    model = models.vip_llava_7b(torch.device("meta"), image_token_id=32005, pad_token_id=32006)
    params = list(model.parameters())
    assert 7.0e9 < sum(p.numel() for p in params) < 7.2e9  # VIP-LLaVA-7B: 7.06 B
    assert {p.dtype for p in params} == {torch.bfloat16} and {p.device.type for p in params} == {
        "meta"
    }
    assert model.config.image_token_index == 32005
    assert model.config.text_config.pad_token_id == 32006
    assert torch.get_default_dtype() == torch.float32  # restored
