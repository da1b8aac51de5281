"""Training losses: attention-to-box divergence for the Medium stage.

:func:`attention_kl_loss` compares the attention of supervised tokens over the image
tokens (for example from :class:`medcurric.attention.AttentionCapture`) with a
box-derived target distribution; :class:`AttentionKLLoss` is its module form.
:func:`span_weighted_lm_loss` is the language-model loss weighted by answer and
rationale spans (0.8 / 0.2 by default, as in the authors' code).
"""

from medcurric.losses.attention_kl import (
    AttentionAggregate,
    AttentionKLLoss,
    KLDirection,
    Reduction,
    attention_kl_loss,
)
from medcurric.losses.lm import span_weighted_lm_loss

__all__ = [
    "AttentionAggregate",
    "AttentionKLLoss",
    "KLDirection",
    "Reduction",
    "attention_kl_loss",
    "span_weighted_lm_loss",
]
