from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from medcurric.testing.tiny import build_tiny_vlm


@pytest.mark.parametrize("arch", ["vip_llava", "llava"])
def test_tiny_vlm_runs_and_expands_image_tokens(arch: str) -> None:
    from PIL import Image

    vlm = build_tiny_vlm(arch, num_kv_heads=2, seed=1)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8))
    batch = vlm.processor(
        images=[img], text=["###Human: <image>\nWhere is the lesion?###Assistant: liver"], return_tensors="pt"
    )
    assert int((batch["input_ids"] == vlm.image_token_id).sum()) == vlm.num_image_tokens == 36
    out = vlm.model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vlm.model.parameters())


def test_tiny_vlm_is_deterministic_per_seed() -> None:
    a = build_tiny_vlm(seed=3).model.state_dict()
    b = build_tiny_vlm(seed=3).model.state_dict()
    c = build_tiny_vlm(seed=4).model.state_dict()
    key = next(k for k in a if k.endswith("q_proj.weight"))
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])
