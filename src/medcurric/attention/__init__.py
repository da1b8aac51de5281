"""Attention of supervised tokens over image tokens, captured without eager attention.

:class:`AttentionCapture` hooks a LLaVA / VIP-LLaVA model's decoder layers and
recomputes, after each forward pass, the rows that the Medium-stage loss
(:func:`medcurric.losses.attention_kl_loss`) needs, while the model keeps its
SDPA/flash attention.
"""

from medcurric.attention.capture import SUPPORTED_ATTENTION, SUPPORTED_MODELS, AttentionCapture

__all__ = ["AttentionCapture", "SUPPORTED_ATTENTION", "SUPPORTED_MODELS"]
