"""Tiny random-initialised models of each supported vision-language family, with inputs.

Each builder makes the real transformers architecture from config objects (hidden
size 64, 3 decoder layers, a one- or two-block vision tower) and a batch of two
right-padded samples built directly as tensors: ``input_ids`` holding the family's
image placeholder tokens and the pixel inputs its vision tower expects. The two
samples hold different numbers of image tokens (two grids for the Qwen families, one
and two images for the others), so code that pads over image tokens is exercised.
Nothing is downloaded and no processor or tokenizer is needed.

Examples:
    >>> from medcurric.testing.families import build_tiny_family
    >>> model, inputs = build_tiny_family("qwen2_5_vl", seed=0)
    >>> type(model).__name__, tuple(inputs["input_ids"].shape)
    ('Qwen2_5_VLForConditionalGeneration', (2, 17))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medcurric._optional import require
from medcurric.errors import InvalidOptionError

__all__ = ["FAMILIES", "VLM_FAMILIES", "build_family_vlm", "build_tiny_family"]

#: Family names accepted by :func:`build_tiny_family`.
FAMILIES: tuple[str, ...] = ("llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3")

VOCAB = 128
IMAGE_TOKEN_ID = 100
VIDEO_TOKEN_ID = 101
VISION_START_ID = 102
VISION_END_ID = 103
PAD_ID = 0
HIDDEN = 64
LAYERS = 3
HEADS = 4
KV_HEADS = 2


def _text(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": 96,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 256,
        "pad_token_id": PAD_ID,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    base.update(extra)
    return base


def _sequences(torch: Any, image_runs: list[list[int]], text_after: int = 6) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask``: per sample, text, image runs, text."""
    gen = torch.Generator().manual_seed(1234)
    rows = []
    for runs in image_runs:
        ids = [1, *torch.randint(3, 90, (2,), generator=gen).tolist()]
        for n in runs:
            ids += [VISION_START_ID, *([IMAGE_TOKEN_ID] * n), VISION_END_ID]
        ids += torch.randint(3, 90, (text_after,), generator=gen).tolist()
        rows.append(ids)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention_mask[i, : len(r)] = 1
    return input_ids, attention_mask


def _qwen_pixels(torch: Any, grids: list[tuple[int, int, int]], patch: int, temporal: int) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(99)
    n = sum(t * h * w for t, h, w in grids)
    pixel_values = torch.randn(n, 3 * temporal * patch * patch, generator=gen)
    return pixel_values, torch.tensor(grids, dtype=torch.long)


#: The Qwen families' placeholder token ids in the tiny inputs.
_QWEN_TOKEN_IDS = {
    "image_token_id": IMAGE_TOKEN_ID,
    "video_token_id": VIDEO_TOKEN_ID,
    "vision_start_token_id": VISION_START_ID,
    "vision_end_token_id": VISION_END_ID,
}


def _qwen_inputs(torch: Any) -> dict[str, Any]:
    """Two samples with 6 and 4 merged image tokens (4 px patches, temporal 2), for the Qwen families."""
    pixel_values, grid_thw = _qwen_pixels(torch, [(1, 4, 6), (1, 4, 4)], 4, 2)
    input_ids, attention_mask = _sequences(torch, [[6], [4]])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "image_grid_thw": grid_thw,
        # text 0, image 1: without it transformers falls back to 1-D positions, and M-RoPE goes untested
        "mm_token_type_ids": (input_ids == IMAGE_TOKEN_ID).int(),
    }


def _qwen2_vl(transformers: Any, torch: Any) -> tuple[Any, dict[str, Any]]:
    config = transformers.Qwen2VLConfig(
        text_config=_text(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": HIDDEN,  # the merger's output: the language model's width
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **_QWEN_TOKEN_IDS,
    )
    return transformers.Qwen2VLForConditionalGeneration(config), _qwen_inputs(torch)


def _qwen2_5_vl(transformers: Any, torch: Any) -> tuple[Any, dict[str, Any]]:
    config = transformers.Qwen2_5_VLConfig(
        text_config=_text(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 16,
            "out_hidden_size": HIDDEN,
            "fullatt_block_indexes": [1],
        },
        **_QWEN_TOKEN_IDS,
    )
    return transformers.Qwen2_5_VLForConditionalGeneration(config), _qwen_inputs(torch)


def _qwen3_vl(transformers: Any, torch: Any) -> tuple[Any, dict[str, Any]]:
    config = transformers.Qwen3VLConfig(
        text_config=_text(
            head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        ),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": HIDDEN,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        **_QWEN_TOKEN_IDS,
    )
    return transformers.Qwen3VLForConditionalGeneration(config), _qwen_inputs(torch)


def _siglip(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 16,
        "patch_size": 4,
    }
    base.update(extra)
    return base


def _gemma3(transformers: Any, torch: Any) -> tuple[Any, dict[str, Any]]:
    config = transformers.Gemma3Config(
        text_config=_text(
            model_type="gemma3_text",
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        ),
        vision_config=_siglip(model_type="siglip_vision_model"),
        mm_tokens_per_image=4,
        image_token_id=IMAGE_TOKEN_ID,
        boi_token_id=VISION_START_ID,
        eoi_token_id=VISION_END_ID,
    )
    model = transformers.Gemma3ForConditionalGeneration(config)
    input_ids, attention_mask = _sequences(torch, [[4, 4], [4]])
    pixel_values = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(99))
    token_type_ids = (input_ids == IMAGE_TOKEN_ID).long()
    return model, {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "token_type_ids": token_type_ids,
    }


def _llava(transformers: Any, torch: Any) -> tuple[Any, dict[str, Any]]:
    config = transformers.LlavaConfig(
        text_config=_text(model_type="llama"),
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 4,
            "projection_dim": 32,
        },
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = transformers.LlavaForConditionalGeneration(config)
    input_ids, attention_mask = _sequences(torch, [[16, 16], [16]])
    pixel_values = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(99))
    return model, {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def _llava_onevision(transformers: Any, torch: Any) -> tuple[Any, dict[str, Any]]:
    config = transformers.LlavaOnevisionConfig(
        text_config=_text(model_type="qwen2"),
        vision_config=_siglip(model_type="siglip_vision_model"),
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[16, 16]],
    )
    model = transformers.LlavaOnevisionForConditionalGeneration(config)
    per_image = _onevision_tokens(model, 16, 16)
    input_ids, attention_mask = _sequences(torch, [[per_image, per_image], [per_image]])
    gen = torch.Generator().manual_seed(99)
    # anyres: one base view plus the views of the best-fitting grid (one for a 16x16 pinpoint)
    pixel_values = torch.randn(3, 2, 3, 16, 16, generator=gen)
    image_sizes = torch.tensor([[16, 16]] * 3)
    return model, {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "image_sizes": image_sizes,
    }


def _onevision_tokens(model: Any, height: int, width: int) -> int:
    """Image tokens one ``height x width`` image expands to in the tiny LLaVA-OneVision."""
    torch = require("torch", feature="build_tiny_family")
    with torch.no_grad():
        _, lens = model.model.pack_image_features(
            [torch.zeros(2, (16 // 4) ** 2, HIDDEN)],
            torch.tensor([[height, width]]),
            model.model.image_newline,
            vision_aspect_ratio=model.config.vision_aspect_ratio,
        )
    return int(lens[0])


_BUILDERS: dict[str, Callable[[Any, Any], tuple[Any, dict[str, Any]]]] = {
    "llava": _llava,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
    "gemma3": _gemma3,
}


def build_tiny_family(name: str, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Build a tiny random-initialised model of one family and a batch of inputs for it.

    Args:
        name: One of :data:`FAMILIES`.
        seed: Seed of the weight initialisation (the inputs are fixed).

    Returns:
        ``(model, inputs)``: the model in eval mode with SDPA attention, and the keyword
        arguments of its forward pass (``input_ids``, ``attention_mask``, the pixel
        inputs and any family-specific extra such as ``image_grid_thw``,
        ``token_type_ids`` or ``image_sizes``) for two right-padded samples with
        different numbers of image tokens. The image token id is
        ``model.config.image_token_id``.

    Raises:
        InvalidOptionError: When ``name`` is not a known family.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise InvalidOptionError(f"Expected a family name in {', '.join(FAMILIES)}, but got {name!r}.")
    torch = require("torch", feature="build_tiny_family")
    transformers = require("transformers", feature="build_tiny_family")
    torch.manual_seed(seed)
    model, inputs = builder(transformers, torch)
    model.set_attn_implementation("sdpa")
    return model.eval(), inputs


#: Family names accepted by :func:`build_family_vlm`: VIP-LLaVA and :data:`FAMILIES`.
VLM_FAMILIES: tuple[str, ...] = ("vip_llava", *FAMILIES)


def _vlm_config(transformers: Any, family: str, tokenizer: Any) -> Any:
    """The config of a tiny ``family`` model that fits ``build_family_processor(family)``.

    Vocabulary, special token ids and vision tower (patch size, merge, pooling) match the processor.
    """
    ids = tokenizer.convert_tokens_to_ids
    text = _text(
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if family == "qwen2_vl":
        return transformers.Qwen2VLConfig(
            text_config={
                **text,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            },
            vision_config={
                "depth": 2,
                "embed_dim": 32,
                "hidden_size": HIDDEN,
                "mlp_ratio": 2,
                "num_heads": 2,
                "patch_size": 14,  # the processor's patches, merged 2 x 2 into one token
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        )
    if family in ("qwen2_5_vl", "qwen3_vl"):
        qwen3 = family == "qwen3_vl"
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        vision: dict[str, Any] = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 2,
            "patch_size": 16 if qwen3 else 14,  # the processor's patches, merged 2 x 2 into one token
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": HIDDEN,
        }
        if qwen3:
            rope["mrope_interleaved"] = True
            text["head_dim"] = 16
            vision.update(num_position_embeddings=64, deepstack_visual_indexes=[1])
        else:
            vision.update(window_size=56, fullatt_block_indexes=[1])
        cls = transformers.Qwen3VLConfig if qwen3 else transformers.Qwen2_5_VLConfig
        return cls(
            text_config={**text, "rope_parameters": rope},
            vision_config=vision,
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        )
    if family == "gemma3":
        # 64 px input, 8 px patches (8 x 8) average-pooled 2 x 2 into the processor's 16 tokens.
        return transformers.Gemma3Config(
            text_config={
                **text,
                "model_type": "gemma3_text",
                "head_dim": 16,
                "query_pre_attn_scalar": 16,
                "sliding_window": 64,
                "layer_types": ["sliding_attention", "full_attention"],
            },
            vision_config=_siglip(model_type="siglip_vision_model", image_size=64, patch_size=8),
            mm_tokens_per_image=16,
            image_token_id=ids("<image_soft_token>"),
            boi_token_id=ids("<start_of_image>"),
            eoi_token_id=ids("<end_of_image>"),
        )
    # LLaVA-OneVision: 28 px views of 14 px patches (2 x 2 tokens each), the processor's pinpoints.
    return transformers.LlavaOnevisionConfig(
        text_config={**text, "model_type": "qwen2"},
        vision_config=_siglip(model_type="siglip_vision_model", image_size=28, patch_size=14),
        image_token_id=ids("<image>"),
        video_token_id=ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]],
    )


def build_family_vlm(family: str, seed: int = 0) -> tuple[Any, Any]:
    """A tiny random-initialised model of ``family`` with its offline processor, made for each other.

    Unlike :func:`build_tiny_family` (a model with ready-made tensors), the model's
    vocabulary, special token ids and vision tower fit the processor of
    :func:`~medcurric.testing.processors.build_family_processor`, so rendered samples
    go through the processor and the collator into the model: what the trainer and
    the examples run on where no checkpoint can be downloaded. ``"vip_llava"`` and
    ``"llava"`` are :func:`~medcurric.testing.tiny.build_tiny_vlm` (48 px, 6 x 6 tokens).

    Args:
        family: One of :data:`VLM_FAMILIES`.
        seed: Seed of the weight initialisation.

    Returns:
        ``(model, processor)``: the model in eval mode with SDPA attention.

    Raises:
        InvalidOptionError: When ``family`` is not one of :data:`VLM_FAMILIES`.

    Examples:
        >>> model, processor = build_family_vlm("gemma3", seed=0)
        >>> type(model).__name__, type(processor).__name__
        ('Gemma3ForConditionalGeneration', 'Gemma3Processor')
    """
    if family not in VLM_FAMILIES:
        raise InvalidOptionError(f"Expected a family name in {', '.join(VLM_FAMILIES)}, but got {family!r}.")
    if family in ("vip_llava", "llava"):
        from medcurric.testing.tiny import build_tiny_vlm

        vlm = build_tiny_vlm(family, seed=seed)
        return vlm.model, vlm.processor
    torch = require("torch", feature="build_family_vlm")
    transformers = require("transformers", feature="build_family_vlm")
    from medcurric.testing.processors import build_family_processor

    processor = build_family_processor(family)
    tokenizer = processor.tokenizer
    config = _vlm_config(transformers, family, tokenizer)
    cls = {
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
        "gemma3": transformers.Gemma3ForConditionalGeneration,
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
    }[family]
    torch.manual_seed(seed)
    model = cls(config)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.set_attn_implementation("sdpa")
    return model.eval(), processor
