"""Training losses: attention-to-box divergence for the Medium stage.

:func:`attention_kl_loss` compares the attention of supervised tokens over the image
tokens (for example from :class:`medcurric.attention.AttentionCapture`) with a
box-derived target distribution; :class:`AttentionKLLoss` is its module form.
"""

from medcurric.losses.attention_kl import (
    AttentionAggregate,
    AttentionKLLoss,
    KLDirection,
    Reduction,
    attention_kl_loss,
)

__all__ = [
    "AttentionAggregate",
    "AttentionKLLoss",
    "KLDirection",
    "Reduction",
    "attention_kl_loss",
]
