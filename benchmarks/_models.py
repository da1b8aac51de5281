"""Models shared by the GPU benchmark scripts (not part of the library).

Each 7B-class model is the published checkpoint's architecture, built from config
objects with random weights (nothing is downloaded). The figures typed below are those
of the checkpoint's ``config.json`` on the Hugging Face Hub, named in each builder;
``tests/benchmarks/test_models.py`` checks every build on the meta device against the
parameter total on the model card.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: ``(family, size)`` of every large model :func:`build_large` makes.
LARGE_MODELS: tuple[tuple[str, str], ...] = (
    ("llava", "7b"),
    ("llava_onevision", "7b"),
    ("qwen2_5_vl", "7b"),
    ("qwen3_vl", "7b"),
    ("gemma3", "7b"),
    ("gemma3", "27b"),
)


def _instantiate(cls: Any, config: Any, device: torch.device) -> Any:
    """``cls(config)`` in bf16 directly on ``device`` (``meta`` allocates nothing)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return cls(config)
    finally:
        torch.set_default_dtype(previous)


def vip_llava_7b_config(*, image_token_id: int = 32000, pad_token_id: int = 32001) -> Any:
    """``mucai/vip-llava-7b`` (``llava-hf/vip-llava-7b-hf``): CLIP ViT-L/14-336 + Llama-2-7B."""
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
    return transformers.VipLlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        vision_feature_layers=[-2, -5, -8, -11, 6],
    )  # fmt: skip


def vip_llava_7b(
    device: torch.device, *, image_token_id: int = 32000, pad_token_id: int = 32001
) -> Any:
    """Random-init VIP-LLaVA-7B-shaped model on ``device`` in bf16 (no weights downloaded).

    CLIP ViT-L/14 at 336 px and a Llama-2-7B-shaped language model, as in
    ``mucai/vip-llava-7b``; ``torch.device("meta")`` builds it without memory.
    """
    import transformers

    config = vip_llava_7b_config(image_token_id=image_token_id, pad_token_id=pad_token_id)
    return _instantiate(transformers.VipLlavaForConditionalGeneration, config, device)


def llava_onevision_7b_config() -> Any:
    """``llava-hf/llava-onevision-qwen2-7b-ov-hf``: SigLIP so400m (384 px, 14 px patches,
    26 layers) + Qwen2-7B, anyres_max_9 over 384 px tiles."""
    import transformers

    text = {
        "model_type": "qwen2", "vocab_size": 152128, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    }  # fmt: skip
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
        "num_hidden_layers": 26, "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
        "vision_use_head": False,
    }  # fmt: skip
    return transformers.LlavaOnevisionConfig(
        text_config=text, vision_config=vision, image_token_index=151646, video_token_index=151647,
        vision_feature_layer=-1, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)],
        tie_word_embeddings=False,
    )  # fmt: skip


def qwen2_5_vl_7b_config() -> Any:
    """``Qwen/Qwen2.5-VL-7B-Instruct`` (also the base of Lingshu-7B, MedVLM-R1 and
    HuatuoGPT-Vision-7B-Qwen2.5VL): 32-block windowed ViT, Qwen2.5-7B, M-RoPE [16, 24, 24]."""
    import transformers

    text = {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    }  # fmt: skip
    vision = {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "out_hidden_size": 3584,
        "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "hidden_act": "silu",
    }  # fmt: skip
    return transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
        vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=False,
    )  # fmt: skip


def qwen3_vl_8b_config() -> Any:
    """``Qwen/Qwen3-VL-8B-Instruct``: 27-block ViT (16 px patches, DeepStack from blocks
    8, 16, 24), Qwen3-8B with q/k norms, interleaved M-RoPE [24, 20, 20]."""
    import transformers

    text = {
        "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
        "bos_token_id": 151643, "eos_token_id": 151645,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                            "mrope_interleaved": True},
    }  # fmt: skip
    vision = {
        "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 4096,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24], "hidden_act": "gelu_pytorch_tanh",
    }  # fmt: skip
    return transformers.Qwen3VLConfig(
        text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
        vision_start_token_id=151652, vision_end_token_id=151653, tie_word_embeddings=False,
    )  # fmt: skip


def _gemma3_config(**text: Any) -> Any:
    """Gemma 3 with SigLIP at 896 px (14 px patches, pooled to 256 tokens): what
    ``google/gemma-3-{4b,27b}-it`` and ``google/medgemma-{4b-it,27b-it}`` share."""
    import transformers

    text_config = {
        "model_type": "gemma3_text", "vocab_size": 262208, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6, "sliding_window": 1024, "hidden_activation": "gelu_pytorch_tanh",
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        **text,
    }  # fmt: skip
    n = text_config["num_hidden_layers"]
    text_config["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
        "num_hidden_layers": 27, "num_attention_heads": 16, "image_size": 896, "patch_size": 14,
        "vision_use_head": False,
    }  # fmt: skip
    return transformers.Gemma3Config(
        text_config=text_config, vision_config=vision, mm_tokens_per_image=256, boi_token_index=255999,
        eoi_token_index=256000, image_token_index=262144,
    )  # fmt: skip


def gemma3_4b_config() -> Any:
    """``google/gemma-3-4b-it`` / ``google/medgemma-4b-it``: 34 layers, 8 heads (4 KV) of 256."""
    return _gemma3_config(
        hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
    )  # fmt: skip


def gemma3_27b_config() -> Any:
    """``google/gemma-3-27b-it`` / ``google/medgemma-27b-it``: 62 layers, 32 heads (16 KV) of 128."""
    return _gemma3_config(
        hidden_size=5376, intermediate_size=21504, num_hidden_layers=62, num_attention_heads=32,
        num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=168,
    )  # fmt: skip


_LARGE: dict[tuple[str, str], tuple[str, Callable[[], Any], str]] = {
    ("llava", "7b"): ("VipLlavaForConditionalGeneration", vip_llava_7b_config, "VIP-LLaVA-7B"),
    ("llava_onevision", "7b"): (
        "LlavaOnevisionForConditionalGeneration", llava_onevision_7b_config, "LLaVA-OneVision-Qwen2-7B",
    ),
    ("qwen2_5_vl", "7b"): ("Qwen2_5_VLForConditionalGeneration", qwen2_5_vl_7b_config, "Qwen2.5-VL-7B"),
    ("qwen3_vl", "7b"): ("Qwen3VLForConditionalGeneration", qwen3_vl_8b_config, "Qwen3-VL-8B"),
    ("gemma3", "7b"): ("Gemma3ForConditionalGeneration", gemma3_4b_config, "Gemma 3 4B / MedGemma-4B"),
    ("gemma3", "27b"): ("Gemma3ForConditionalGeneration", gemma3_27b_config, "Gemma 3 27B / MedGemma-27B"),
}  # fmt: skip


def large_model_name(family: str, size: str) -> str:
    """The checkpoint a ``(family, size)`` model has the shape of, for reports."""
    return _LARGE[(family, size)][2]


def large_config(family: str, size: str) -> tuple[str, Any]:
    """The transformers class name and the config of the ``(family, size)`` model."""
    if (family, size) not in _LARGE:
        sizes = sorted(s for f, s in _LARGE if f == family)
        raise SystemExit(f"No {size} model for family {family!r}; sizes for it: {', '.join(sizes) or 'none'}.")
    cls_name, make_config, _ = _LARGE[(family, size)]
    return cls_name, make_config()


def build_large(family: str, size: str, device: torch.device) -> Any:
    """Random-init ``(family, size)`` model of :data:`LARGE_MODELS` on ``device`` in bf16.

    ``size`` ``"7b"`` is each family's 7B-class checkpoint (Gemma 3: the 4B one, which
    MedGemma-4B shares); ``"27b"`` exists for Gemma 3 only.
    """
    import transformers

    cls_name, config = large_config(family, size)
    return _instantiate(getattr(transformers, cls_name), config, device)


# ``--size small`` (CPU): each family's 7B config with its image processing kept (image
# size, patch size, merging, pooling: the real image-token counts) and the rest narrowed.
SMALL_TEXT = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 1024,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64}  # fmt: skip
SMALL_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "num_attention_heads": 2,
                "depth": 2, "num_hidden_layers": 2, "fullatt_block_indexes": [1],
                "deepstack_visual_indexes": [1]}  # fmt: skip
SMALL_VOCAB = 8192
# M-RoPE sections for head_dim 64: the 7B's proportions halved (they sum to head_dim / 2).
_SMALL_MROPE = {"qwen2_5_vl": [8, 12, 12], "qwen3_vl": [12, 10, 10]}


def small_config(family: str) -> tuple[str, Any]:
    """The transformers class name and the ``--size small`` config of ``family``.

    Text: 4 layers, hidden 256, 4 query and 2 key/value heads of 64, vocabulary 8192 (the
    special token ids moved to its end); Gemma 3 alternates sliding-window and global
    layers. Vision: the 7B tower's image and patch sizes at width 64 and 2 layers
    (VIP-LLaVA: 12, it reads layer 6 and the 11th from the end), so each image gives the
    7B model's number of image tokens.
    """
    cls_name, config = large_config(family, "7b")
    text, vision = config.text_config, config.vision_config
    for name, value in SMALL_TEXT.items():
        setattr(text, name, value)
    kinds = sorted(set(getattr(text, "layer_types", None) or []), reverse=True)  # sliding first
    if kinds:
        text.layer_types = [kinds[i % len(kinds)] for i in range(SMALL_TEXT["num_hidden_layers"])]
    if family in _SMALL_MROPE:
        text.rope_parameters["mrope_section"] = list(_SMALL_MROPE[family])
    for name, value in SMALL_VISION.items():
        if hasattr(vision, name):
            setattr(vision, name, value)
    if hasattr(vision, "out_hidden_size"):  # Qwen's merger projects straight to the text width
        vision.out_hidden_size = SMALL_TEXT["hidden_size"]
    if cls_name == "VipLlavaForConditionalGeneration":
        vision.num_hidden_layers = 12
    # special token ids past the new vocabulary move to its end, in order of their old ids
    holders = [(obj, name) for obj in (config, text) for name in list(vars(obj))
               if name.endswith(("token_id", "token_index")) and isinstance(getattr(obj, name), int)]  # fmt: skip
    old_ids = sorted({getattr(obj, name) for obj, name in holders if getattr(obj, name) >= SMALL_VOCAB})
    new_id = {old: SMALL_VOCAB - len(old_ids) + i for i, old in enumerate(old_ids)}
    for obj, name in holders:
        setattr(obj, name, new_id.get(getattr(obj, name), getattr(obj, name)))
    text.vocab_size = SMALL_VOCAB
    return cls_name, config


def build_small(family: str, device: torch.device) -> Any:
    """Random-init ``--size small`` model of ``family`` (see :func:`small_config`) in fp32."""
    import transformers

    cls_name, config = small_config(family)
    with torch.device(device):
        return getattr(transformers, cls_name)(config)
