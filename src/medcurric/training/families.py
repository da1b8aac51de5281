"""What the trainer needs to know per model family: LoRA targets and FSDP wrap classes.

Every supported family keeps its language model under ``model.language_model``
(transformers 5.x; ``language_model.model`` in 4.x) with decoder layers whose
attention and MLP projections are ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and
``gate_proj``, ``up_proj``, ``down_proj``. The vision towers reuse some of those leaf
names (SigLIP and CLIP: ``q_proj``/``k_proj``/``v_proj``; Qwen2.5-VL's vision MLP:
``gate_proj``/``up_proj``/``down_proj``), so the LoRA targets are a regular
expression over the full module path, anchored at the language model's decoder
layers, and never a list of leaf names.

The FSDP wrap classes are the language model's decoder layer and the vision tower's
encoder layer of the family's reference checkpoints (transformers 5.x class names),
for ``fsdp_transformer_layer_cls_to_wrap`` in an ``accelerate`` FSDP configuration.

Examples:
    >>> from medcurric.training import FAMILY_DEFAULTS
    >>> FAMILY_DEFAULTS["gemma3"].fsdp_wrap_classes
    ('Gemma3DecoderLayer', 'SiglipEncoderLayer')
    >>> import re
    >>> targets = FAMILY_DEFAULTS["gemma3"].lora_targets
    >>> bool(re.fullmatch(targets, "model.language_model.layers.3.self_attn.q_proj"))
    True
    >>> bool(re.fullmatch(targets, "model.vision_tower.encoder.layers.3.self_attn.q_proj"))
    False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from medcurric.errors import UnsupportedModelError

__all__ = ["FAMILY_DEFAULTS", "FamilyDefaults", "family_defaults", "lora_targets_for"]

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FamilyDefaults:
    """The trainer's defaults for one model family.

    Attributes:
        family: The family's name (``"qwen2_5_vl"``, ...).
        model_type: ``config.model_type`` of its checkpoints.
        model_class: The ``*ForConditionalGeneration`` class.
        checkpoint: A reference checkpoint on the Hugging Face Hub.
        layout: The collator's image-token layout (``CurriculumCollator.family``):
            ``None`` for a fixed patch grid, else ``"qwen2_vl"``, ``"gemma3"`` or
            ``"llava_onevision"``.
        attention_modules: LoRA targets in each decoder layer's ``self_attn``.
        mlp_modules: LoRA targets in each decoder layer's ``mlp``.
        decoder_layer: The language model's decoder layer class (FSDP wrap class).
        vision_layer: The vision tower's encoder layer class (FSDP wrap class).
    """

    family: str
    model_type: str
    model_class: str
    checkpoint: str
    layout: str | None
    decoder_layer: str
    vision_layer: str
    attention_modules: tuple[str, ...] = _ATTENTION
    mlp_modules: tuple[str, ...] = _MLP

    @property
    def lora_targets(self) -> str:
        """Regular expression (peft ``target_modules``) of the decoder layers' projections only."""
        attn = "|".join(self.attention_modules)
        mlp = "|".join(self.mlp_modules)
        return rf"(?:.*\.)?language_model\.(?:model\.)?layers\.\d+\.(?:self_attn\.(?:{attn})|mlp\.(?:{mlp}))"

    @property
    def fsdp_wrap_classes(self) -> tuple[str, str]:
        """``(decoder layer, vision layer)`` class names for ``fsdp_transformer_layer_cls_to_wrap``."""
        return (self.decoder_layer, self.vision_layer)


_TABLE = (
    FamilyDefaults(
        family="llava",
        model_type="llava",
        model_class="LlavaForConditionalGeneration",
        checkpoint="llava-hf/llava-1.5-7b-hf",
        layout=None,
        decoder_layer="LlamaDecoderLayer",
        vision_layer="CLIPEncoderLayer",
    ),
    FamilyDefaults(
        family="vip_llava",
        model_type="vipllava",
        model_class="VipLlavaForConditionalGeneration",
        checkpoint="llava-hf/vip-llava-7b-hf",
        layout=None,
        decoder_layer="LlamaDecoderLayer",
        vision_layer="CLIPEncoderLayer",
    ),
    FamilyDefaults(
        family="llava_onevision",
        model_type="llava_onevision",
        model_class="LlavaOnevisionForConditionalGeneration",
        checkpoint="llava-hf/llava-onevision-qwen2-7b-ov-hf",
        layout="llava_onevision",
        decoder_layer="Qwen2DecoderLayer",
        vision_layer="SiglipEncoderLayer",
    ),
    FamilyDefaults(
        family="qwen2_vl",
        model_type="qwen2_vl",
        model_class="Qwen2VLForConditionalGeneration",
        checkpoint="Qwen/Qwen2-VL-7B-Instruct",
        layout="qwen2_vl",
        decoder_layer="Qwen2VLDecoderLayer",
        vision_layer="Qwen2VLVisionBlock",
    ),
    FamilyDefaults(
        family="qwen2_5_vl",
        model_type="qwen2_5_vl",
        model_class="Qwen2_5_VLForConditionalGeneration",
        checkpoint="Qwen/Qwen2.5-VL-7B-Instruct",
        layout="qwen2_vl",
        decoder_layer="Qwen2_5_VLDecoderLayer",
        vision_layer="Qwen2_5_VLVisionBlock",
    ),
    FamilyDefaults(
        family="qwen3_vl",
        model_type="qwen3_vl",
        model_class="Qwen3VLForConditionalGeneration",
        checkpoint="Qwen/Qwen3-VL-8B-Instruct",
        layout="qwen2_vl",
        decoder_layer="Qwen3VLTextDecoderLayer",
        vision_layer="Qwen3VLVisionBlock",
    ),
    FamilyDefaults(
        family="gemma3",
        model_type="gemma3",
        model_class="Gemma3ForConditionalGeneration",
        checkpoint="google/medgemma-4b-it",
        layout="gemma3",
        decoder_layer="Gemma3DecoderLayer",
        vision_layer="SiglipEncoderLayer",
    ),
)

#: The supported families by name (read-only).
FAMILY_DEFAULTS: Mapping[str, FamilyDefaults] = MappingProxyType({d.family: d for d in _TABLE})


def _base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    for _ in range(4):
        if not hasattr(model, "get_base_model"):
            break
        model = model.get_base_model()
    return model


def family_defaults(model: Any) -> FamilyDefaults:
    """The :class:`FamilyDefaults` of a model (bare or wrapped by peft), a config or a ``model_type``.

    Args:
        model: A model instance, its ``config``, or a ``config.model_type`` string.

    Returns:
        The family's entry of :data:`FAMILY_DEFAULTS`.

    Raises:
        UnsupportedModelError: When the model is not of a supported family (the message
            names what was found and what is supported).

    Examples:
        >>> family_defaults("qwen2_5_vl").decoder_layer
        'Qwen2_5_VLDecoderLayer'
    """
    model_type: Any
    if isinstance(model, str):
        model_type, found = model, repr(model)
    else:
        base = _base_model(model)
        by_class = next((d for d in _TABLE if d.model_class == type(base).__name__), None)
        if by_class is not None:
            return by_class
        config = getattr(base, "config", base)
        model_type = getattr(config, "model_type", None)
        found = f"{type(base).__name__} (model_type {model_type!r})"
    match = next((d for d in _TABLE if d.model_type == model_type), None)
    if match is None:
        supported = ", ".join(f"{d.model_class} ({d.model_type})" for d in _TABLE)
        raise UnsupportedModelError(
            f"Expected a model of a supported family ({supported}), but got {found}. "
            "Load one of these (e.g. with transformers.AutoModelForImageTextToText)."
        )
    return match


def lora_targets_for(model: Any) -> str:
    """The default LoRA ``target_modules`` regular expression for a model (see :func:`family_defaults`).

    Raises:
        UnsupportedModelError: When the model is not of a supported family.
    """
    return family_defaults(model).lora_targets
