"""Causal language-model loss weighted by span (answer vs rationale tokens).

The authors' code trains with ``0.8 * CE(answer span) + 0.2 * CE(rationale span)``:
each span's cross-entropy is averaged over that span's tokens in the batch, then
the spans are mixed with fixed weights, so a long rationale cannot drown out a
short answer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from medcurric.errors import InvalidOptionError, ShapeError

__all__ = ["DEFAULT_SPAN_WEIGHTS", "span_weighted_lm_loss"]

#: The authors' weights: 0.8 on answer tokens, 0.2 on rationale tokens.
DEFAULT_SPAN_WEIGHTS: dict[str, float] = {"answer": 0.8, "rationale": 0.2}


def span_weighted_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    spans: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
    *,
    other_weight: float = 0.0,
    ignore_index: int = -100,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Span-weighted next-token cross-entropy.

    Shifted like a causal LM loss: ``logits[:, t]`` predicts ``labels[:, t + 1]``,
    and a span mask marks label positions (it is shifted with the labels). For each
    span ``k`` the loss is the mean cross-entropy over positions where
    ``spans[k]`` is true and the label is not ``ignore_index``; the result is
    ``sum_k weights[k] * mean_k`` (plus ``other_weight`` times the mean over
    labelled positions outside every span). A span with no token in the batch
    contributes 0 (and keeps the graph, so ``backward`` works).

    Args:
        logits: ``[B, L, V]`` next-token logits.
        labels: ``[B, L]`` token ids, ``ignore_index`` where not supervised.
        spans: Span name -> ``[B, L]`` bool mask aligned with ``labels``
            (``CurriculumCollator`` returns ``answer_mask`` and ``rationale_mask``).
        weights: Span name -> weight; default ``{"answer": 0.8, "rationale": 0.2}``.
            Every weighted span must be in ``spans``.
        other_weight: Weight of labelled tokens in no span (format words, EOS).
        ignore_index: Label value that is never supervised.
        return_parts: Also return each span's mean cross-entropy (detached).

    Returns:
        The scalar loss, or ``(loss, parts)`` with ``return_parts``.

    Raises:
        ShapeError: When shapes disagree.
        InvalidOptionError: When a weight names a span not given.

    Shape:
        - logits: ``[B, L, V]``
        - labels, spans: ``[B, L]``
        - output: ``[]``

    Examples:
        >>> logits = torch.zeros(1, 4, 5)
        >>> labels = torch.tensor([[-100, 1, 2, 3]])
        >>> spans = {"rationale": torch.tensor([[0, 1, 0, 0]]).bool(),
        ...          "answer": torch.tensor([[0, 0, 1, 1]]).bool()}
        >>> round(span_weighted_lm_loss(logits, labels, spans).item(), 4)  # uniform: log(5)
        1.6094
    """
    if logits.ndim != 3:
        raise ShapeError(f"Expected logits of shape [B, L, V], but got shape {tuple(logits.shape)}.")
    if labels.shape != logits.shape[:2]:
        raise ShapeError(
            f"Expected labels of shape {tuple(logits.shape[:2])} (logits' [B, L]), "
            f"but got {tuple(labels.shape)}."
        )
    weights = dict(DEFAULT_SPAN_WEIGHTS if weights is None else weights)
    unknown = sorted(set(weights) - set(spans))
    if unknown:
        raise InvalidOptionError(
            f"Expected a mask in `spans` for every weighted span, but {unknown} missing "
            f"(spans given: {sorted(spans)}). Pass spans={{'answer': ..., 'rationale': ...}}."
        )
    for name, mask in spans.items():
        if mask.shape != labels.shape:
            raise ShapeError(
                f"Expected span mask {name!r} of shape {tuple(labels.shape)} (as labels), "
                f"but got {tuple(mask.shape)}."
            )
    shift_logits = logits[:, :-1, :]
    if shift_logits.dtype in (torch.float16, torch.bfloat16):  # upcast small dtypes before the softmax
        shift_logits = shift_logits.float()
    shift_labels = labels[:, 1:]
    valid = shift_labels != ignore_index
    safe_labels = torch.where(valid, shift_labels, torch.zeros_like(shift_labels))
    token_ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), safe_labels.reshape(-1), reduction="none"
    ).view_as(shift_labels)
    zero = shift_logits.sum() * 0.0
    total = zero
    parts: dict[str, torch.Tensor] = {}
    covered = torch.zeros_like(valid)
    for name, mask in spans.items():
        m = mask[:, 1:].bool() & valid
        covered |= m
        count = m.sum()
        mean = (token_ce * m).sum() / count if bool(count > 0) else zero
        parts[name] = mean.detach()
        if name in weights:
            total = total + float(weights[name]) * mean
    if other_weight:
        m = valid & ~covered
        count = m.sum()
        mean = (token_ce * m).sum() / count if bool(count > 0) else zero
        parts["other"] = mean.detach()
        total = total + float(other_weight) * mean
    return (total, parts) if return_parts else total
