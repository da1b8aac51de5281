from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from medcurric.errors import InvalidOptionError
from medcurric.testing.families import FAMILIES, build_tiny_family

EXPECTED = {
    "llava": "LlavaForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_runs_with_ragged_image_tokens(name: str) -> None:
    model, inputs = build_tiny_family(name, seed=0)
    assert type(model).__name__ == EXPECTED[name]
    counts = (inputs["input_ids"] == model.config.image_token_id).sum(-1)
    assert counts.min() > 0 and counts[0] != counts[1]  # two samples, different numbers of image tokens
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(out.logits).all()


def test_family_is_deterministic_per_seed() -> None:
    a, _ = build_tiny_family("qwen2_5_vl", seed=3)
    b, _ = build_tiny_family("qwen2_5_vl", seed=3)
    c, _ = build_tiny_family("qwen2_5_vl", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unknown_family_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="qwen2_5_vl"):
        build_tiny_family("blip")


@pytest.mark.parametrize("name", ["llava_onevision", "qwen2_5_vl", "qwen3_vl", "gemma3"])
def test_family_vlm_fits_its_processor(name: str) -> None:
    """The processor's output (placeholders expanded, pixels cut) runs through the model as is."""
    import numpy as np

    from medcurric.testing import build_family_vlm

    model, processor = build_family_vlm(name, seed=0)
    assert model.config.image_token_id == processor.tokenizer.image_token_id
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is the liver normal?"}]}],
        add_generation_prompt=True,
    )
    enc = processor(images=[[image]], text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(out.logits).all()
    with pytest.raises(InvalidOptionError, match="vip_llava"):
        build_family_vlm("paligemma")
