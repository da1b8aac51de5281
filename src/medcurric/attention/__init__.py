"""Attention of supervised tokens over image tokens, captured without eager attention.

:class:`AttentionCapture` hooks a vision-language model's decoder layers (LLaVA,
VIP-LLaVA, LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL, Gemma 3: :data:`SUPPORTED_MODELS`) and
recomputes, after each forward pass, the rows that the Medium-stage loss
(:func:`medcurric.losses.attention_kl_loss`) needs, while the model keeps its
SDPA/flash attention.
"""

from medcurric.attention.capture import SUPPORTED_ATTENTION, SUPPORTED_MODELS, AttentionCapture

__all__ = ["AttentionCapture", "SUPPORTED_ATTENTION", "SUPPORTED_MODELS"]
