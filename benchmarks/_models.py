"""Models shared by the GPU benchmark scripts (not part of the library)."""

from __future__ import annotations

from typing import Any

import torch


def vip_llava_7b(
    device: torch.device, *, image_token_id: int = 32000, pad_token_id: int = 32001
) -> Any:
    """Random-init VIP-LLaVA-7B-shaped model on ``device`` in bf16 (no weights downloaded).

    CLIP ViT-L/14 at 336 px and a Llama-2-7B-shaped language model, as in
    ``mucai/vip-llava-7b``; ``torch.device("meta")`` builds it without memory.
    """
    import transformers

    vision = transformers.CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    )  # fmt: skip
    text = transformers.LlamaConfig(
        vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        rms_norm_eps=1e-5, pad_token_id=pad_token_id, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    config = transformers.VipLlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        vision_feature_layers=[-2, -5, -8, -11, 6],
    )  # fmt: skip
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return transformers.VipLlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
