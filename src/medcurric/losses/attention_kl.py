"""KL divergence between a model's attention over image tokens and a box-derived target.

The Medium stage of the curriculum hides the box and pulls the language model's
attention toward it: the attention of the supervised (answer/rationale) tokens
over the image tokens is compared with a target distribution over the patch grid
(:func:`medcurric.box_to_patch_distribution`).

Smoothing (``eps``): before any logarithm of a distribution is taken it is
smoothed additively, ``x~ = (x + eps) / (sum(x) + P * eps)``, which keeps it a
distribution over the ``P`` image tokens and every loss and gradient finite. The
attention is always smoothed this way (so an un-normalised attention row is also
renormalised); the target is normalised to sum 1 and smoothed only when its
logarithm is needed (``direction="attention_to_target"``).

Shape:
    - attention: ``[B, H, Q, P]`` (per head and supervised token), ``[B, Q, P]`` (heads
      already reduced) or ``[B, P]`` (one distribution per sample).
    - target: ``[B, P]``.
    - token_mask: ``[B, Q]`` (bool; which of the ``Q`` rows are real supervised tokens).
    - key_mask: ``[B, P]`` (bool; which of the ``P`` columns are real image tokens, for
      batches whose samples hold different numbers of image tokens).
    - output: a scalar, or ``[B]`` with ``reduction="none"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medcurric._options import StrEnum, look_up_option, warn_ignored
from medcurric.errors import InvalidOptionError, ShapeError, WrongTypeError

__all__ = ["AttentionAggregate", "AttentionKLLoss", "KLDirection", "Reduction", "attention_kl_loss"]


class KLDirection(StrEnum):
    """Which divergence :func:`attention_kl_loss` takes.

    Attributes:
        TARGET_TO_ATTENTION: ``KL(target || attention)`` (the authors' code; mass-covering:
            every patch of the box must receive attention).
        ATTENTION_TO_TARGET: ``KL(attention || target)`` (mode-seeking: attention outside
            the box is penalised, attention may concentrate on part of the box).
        JS: Jensen-Shannon divergence, symmetric and bounded by ``log 2``.
    """

    TARGET_TO_ATTENTION = "target_to_attention"
    ATTENTION_TO_TARGET = "attention_to_target"
    JS = "js"


class AttentionAggregate(StrEnum):
    """How attention rows are combined before or after the divergence.

    Attributes:
        MEAN_THEN_KL: Renormalise each row, average the rows over heads and supervised
            tokens into one distribution per sample, then take one divergence per sample.
        KL_PER_ROW: Take the divergence of every (head, token) row and average the
            divergences over heads and supervised tokens.
    """

    MEAN_THEN_KL = "mean_then_kl"
    KL_PER_ROW = "kl_per_row"


class Reduction(StrEnum):
    """Reduction over samples.

    Attributes:
        MEAN: Mean over the samples that have a target (0 when none has one).
        SUM: Sum over the samples.
        NONE: One value per sample, ``[B]`` (0 for samples without a target).
    """

    MEAN = "mean"
    SUM = "sum"
    NONE = "none"


# Elements of the fp32 work buffer per chunk on CPU: small enough to stay in cache and
# to avoid fresh page faults, large enough that the Python loop costs nothing.
_CPU_CHUNK_ELEMENTS = 1 << 18


def _chunk_rows(a3: torch.Tensor) -> int:
    """Rows per chunk for the fused row kernels (``a3`` is ``[B, R, P]``)."""
    _, rows, p = a3.shape
    if a3.device.type == "cpu":
        budget = _CPU_CHUNK_ELEMENTS
    else:
        # Few large chunks on accelerators (launch overhead), but never a full fp32 copy.
        budget = max(1 << 20, a3.numel() // 4)
    return max(1, min(rows, budget // max(p, 1)))


class _RowStats(torch.autograd.Function):
    """Row sums ``s = sum_p a`` and target-weighted log sums ``c = sum_p t_p log(a_p + eps)``.

    Computed in the dtype of ``t`` (fp32, or fp64) chunk by chunk, so the forward never
    holds more than small work buffers and the backward writes the gradient,
    ``d/da_p = g_s + g_c * t_p / (a_p + eps)``, in one pass per chunk. Only the columns
    from the first to the last non-zero target entry of a sample need the logarithm and
    the division (a blurred box covers a band of grid rows); elsewhere the gradient is
    ``g_s``.
    """

    @staticmethod
    def forward(a3: torch.Tensor, t: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        b, rows, p = a3.shape
        work = t.dtype
        s = torch.empty(b, rows, dtype=work, device=a3.device)
        c = torch.zeros(b, rows, dtype=work, device=a3.device)
        step = _chunk_rows(a3)
        buf = torch.empty(min(step, rows) * p, dtype=work, device=a3.device)
        for i in range(b):
            lo, hi = _support(t[i])
            ti = t[i, lo:hi]
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                if a3.dtype == work:
                    torch.sum(a3[i, r0:r1], dim=-1, out=s[i, r0:r1])
                    if hi <= lo:
                        continue  # no target: c stays 0
                    w = buf[: (r1 - r0) * (hi - lo)].view(r1 - r0, hi - lo)
                    torch.add(a3[i, r0:r1, lo:hi], eps, out=w)
                else:  # upcast the chunk first (bf16/fp16 input), never the whole tensor
                    full = buf[: (r1 - r0) * p].view(r1 - r0, p)
                    full.copy_(a3[i, r0:r1])
                    torch.sum(full, dim=-1, out=s[i, r0:r1])
                    if hi <= lo:
                        continue
                    w = full[:, lo:hi]
                    w.add_(eps)
                w.log_()
                torch.mv(w, ti, out=c[i, r0:r1])
        return s, c

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        a3, t, eps = inputs
        ctx.save_for_backward(a3, t)
        ctx.eps = eps

    @staticmethod
    def backward(ctx: Any, g_s: torch.Tensor | None, g_c: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        a3, t = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        b, rows, p = a3.shape
        grad = torch.empty_like(a3)
        if g_c is None:
            if g_s is None:
                return grad.zero_(), None, None
            return grad.copy_(g_s[..., None].expand_as(grad)), None, None
        work = t.dtype
        step = _chunk_rows(a3)
        n = min(step, rows)
        direct = a3.dtype == work  # write into the gradient itself, no work buffer
        buf = None if direct else torch.empty(n * p, dtype=work, device=a3.device)
        tg = torch.empty(n * p, dtype=work, device=a3.device)
        for i in range(b):
            lo, hi = _support(t[i])
            k = max(hi - lo, 0)
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                m = r1 - r0
                for a, z in ((0, lo), (max(hi, lo), p)) if k else ((0, p),):
                    if z > a:  # columns without target mass: d/da = g_s
                        if g_s is None:
                            grad[i, r0:r1, a:z].zero_()
                        else:
                            grad[i, r0:r1, a:z].copy_(g_s[i, r0:r1, None].expand(m, z - a))
                if not k:
                    continue
                w = grad[i, r0:r1, lo:hi] if buf is None else buf[: m * k].view(m, k)
                tgi = tg[: m * k].view(m, k)
                torch.outer(g_c[i, r0:r1], t[i, lo:hi], out=tgi)  # g_c * t, one row per attention row
                if direct:
                    torch.add(a3[i, r0:r1, lo:hi], ctx.eps, out=w)
                else:
                    w.copy_(a3[i, r0:r1, lo:hi])
                    w.add_(ctx.eps)
                torch.div(tgi, w, out=w)
                if g_s is not None:
                    w.add_(g_s[i, r0:r1, None])
                if buf is not None:
                    grad[i, r0:r1, lo:hi].copy_(w)
        return grad, None, None


class _KLPerRowCPU(torch.autograd.Function):
    """Weighted per-sample ``sum_r w_r (log(s_r + P eps) - c_r)`` and its gradient, in one sweep.

    CPU only (numba kernel in :mod:`medcurric.losses._kl_kernels`). The forward writes the
    gradient for the upstream gradient ``expected`` (what ``loss.backward()`` sends for the
    given reduction) into a fresh tensor while each row is in cache; the backward returns
    it as is when the upstream gradient equals ``expected`` and otherwise rescales it in
    place per sample (a second backward through a retained graph recomputes it).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        a3: torch.Tensor,
        t: torch.Tensor,
        w: torch.Tensor,
        expected: torch.Tensor,
        eps: float,
        need_grad: bool,
    ) -> torch.Tensor:
        out, grad = _kl_per_row_cpu(a3, t, w, expected, eps, need_grad)
        ctx.save_for_backward(a3, t, w, expected)
        ctx.eps = eps
        ctx.grad = grad
        return out

    @staticmethod
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        a3, t, w, expected = ctx.saved_tensors
        grad = ctx.grad
        ctx.grad = None
        if grad is None:  # second backward through a retained graph (or grad was off in forward)
            grad = _kl_per_row_cpu(a3, t, w, expected, ctx.eps, True)[1]
        if not bool(((g_out == expected) | (expected == 0)).all()):
            nonzero = expected != 0
            ratio = torch.where(nonzero, g_out / torch.where(nonzero, expected, 1.0), 0.0)
            grad.view(grad.shape[0], -1).mul_(ratio[:, None].to(grad.dtype))
        return grad, None, None, None, None, None


_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _kl_per_row_cpu(
    a3: torch.Tensor, t: torch.Tensor, w: torch.Tensor, expected: torch.Tensor, eps: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the numba kernel: per-sample weighted terms ``[B]`` and (optionally) the gradient."""
    import numpy as np

    from medcurric.losses import _kl_kernels

    b, _, p = a3.shape
    work = t.dtype
    nz = t.nonzero()
    ptr = torch.zeros(b + 1, dtype=torch.int64)
    ptr[1:] = torch.bincount(nz[:, 0], minlength=b).cumsum(0)
    idx = nz[:, 1].contiguous().numpy()
    tv = t[nz[:, 0], nz[:, 1]].contiguous().numpy()
    out = torch.empty(b, dtype=work)
    grad = torch.empty(a3.shape, dtype=a3.dtype) if need_grad else None
    g_np = (grad if grad is not None else torch.empty(1, 1, 1, dtype=a3.dtype)).detach()
    w_np, s_np = w.contiguous().numpy(), expected.contiguous().numpy()
    if a3.dtype == torch.bfloat16:
        _kl_kernels._kl_rows_bf16(
            a3.detach().view(torch.int16).numpy(), ptr.numpy(), idx, tv, w_np, s_np, float(eps),
            out.numpy(), g_np.view(torch.int16).numpy(), need_grad,
        )
    else:
        npt = np.float32 if work == torch.float32 else np.float64
        _kl_kernels._kl_rows(
            a3.detach().numpy(), ptr.numpy(), idx, tv, w_np, s_np, npt(eps), npt(p * eps),
            out.numpy(), g_np.numpy(), need_grad,
        )
    return out, grad


def _support(ti: torch.Tensor) -> tuple[int, int]:
    """``[lo, hi)``: from the first to one past the last non-zero entry (``(0, 0)`` if none)."""
    nz = ti.nonzero()
    if nz.numel() == 0:
        return 0, 0
    return int(nz[0, 0]), int(nz[-1, 0]) + 1


def _check_key_mask(key_mask: Any, b: int, p: int, device: torch.device) -> torch.Tensor:
    if not isinstance(key_mask, torch.Tensor):
        raise WrongTypeError(f"Expected key_mask to be a torch.Tensor, but got {type(key_mask).__name__}.")
    if tuple(key_mask.shape) != (b, p):
        raise ShapeError(
            f"Expected key_mask of shape [B, P] = {[b, p]} like the attention's image axis, "
            f"but got {tuple(key_mask.shape)}."
        )
    return key_mask.to(device=device, dtype=torch.bool)


def _check_inputs(
    attention: Any, target: Any, token_mask: Any, has_target: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if not isinstance(attention, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise WrongTypeError(
            "Expected attention and target to be torch.Tensor, but got "
            f"{type(attention).__name__} and {type(target).__name__}. Convert them with torch.as_tensor."
        )
    if not attention.is_floating_point():
        raise WrongTypeError(
            f"Expected a floating-point attention tensor, but got dtype {attention.dtype}. "
            "Pass attention probabilities (for example the output of AttentionCapture)."
        )
    if attention.ndim not in (2, 3, 4):
        raise ShapeError(
            "Expected attention of shape [B, H, Q, P], [B, Q, P] or [B, P], but got shape "
            f"{tuple(attention.shape)}."
        )
    b, p = attention.shape[0], attention.shape[-1]
    if target.ndim != 2 or tuple(target.shape) != (b, p):
        raise ShapeError(
            f"Expected target of shape [B, P] = {[b, p]} to match attention {tuple(attention.shape)}, "
            f"but got shape {tuple(target.shape)}. Build it with box_to_patch_distribution on the "
            "same patch grid as the image tokens."
        )
    if token_mask is not None:
        if attention.ndim == 2:
            warn_ignored("token_mask", "attention of shape [B, P] has no token axis")
            token_mask = None
        else:
            if not isinstance(token_mask, torch.Tensor):
                raise WrongTypeError(
                    f"Expected token_mask to be a torch.Tensor, but got {type(token_mask).__name__}."
                )
            q = attention.shape[-2]
            if tuple(token_mask.shape) != (b, q):
                raise ShapeError(
                    f"Expected token_mask of shape [B, Q] = {[b, q]}, but got {tuple(token_mask.shape)}."
                )
            token_mask = token_mask.to(device=attention.device, dtype=torch.bool)
    if has_target is not None:
        if not isinstance(has_target, torch.Tensor):
            has_target = torch.as_tensor(has_target)
        if tuple(has_target.shape) != (b,):
            raise ShapeError(f"Expected has_target of shape [B] = [{b}], but got {tuple(has_target.shape)}.")
        has_target = has_target.to(device=attention.device, dtype=torch.bool)
    return attention, target, token_mask, has_target


def _smoothed_log(x: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """``log((x + eps) / (sum(x) + P * eps))`` over the last axis, in ``dtype``."""
    x = x.to(dtype)
    s = x.sum(-1, keepdim=True)
    return torch.log(x + eps) - torch.log(s + x.shape[-1] * eps)


def _divergence(log_a: torch.Tensor, target: torch.Tensor, direction: KLDirection, eps: float) -> torch.Tensor:
    """Divergence per row between the attention ``exp(log_a)`` ``[B, R, P]`` and ``target`` ``[B, P]``.

    ``log_a`` is the logarithm of the (already smoothed) attention distribution.
    """
    p = log_a.shape[-1]
    t = target[:, None, :]
    if direction is KLDirection.TARGET_TO_ATTENTION:
        return (torch.xlogy(t, t) - t * log_a).sum(-1)
    a = log_a.exp()
    if direction is KLDirection.ATTENTION_TO_TARGET:
        log_t = torch.log((t + eps) / (1.0 + p * eps))
        return (a * (log_a - log_t)).sum(-1)
    m = 0.5 * (t + a)
    log_m = torch.log(m)
    kl_tm = (torch.xlogy(t, t) - t * log_m).sum(-1)
    kl_am = (a * (log_a - log_m)).sum(-1)
    return 0.5 * (kl_tm + kl_am)


def attention_kl_loss(
    attention: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    *,
    direction: str | KLDirection = KLDirection.TARGET_TO_ATTENTION,
    token_mask: torch.Tensor | None = None,
    aggregate: str | AttentionAggregate = AttentionAggregate.MEAN_THEN_KL,
    reduction: str | Reduction = Reduction.MEAN,
    has_target: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Divergence between attention over image tokens and a box-derived target distribution.

    Which ``aggregate`` the paper supports: MedCLM's Medium stage "regularises attention
    maps to match box regions". The box is one region per sample, and the map that is
    compared with it is the model's attention map *of that sample*: the authors' code
    compares one attention distribution per sample with the blurred box (a single row,
    batch mean of ``KL(target || attention)``). Nothing in the wording asks every head and
    every token to look only at the box, which would forbid heads that attend to text,
    to position or to context around the lesion. So the default is
    ``aggregate="mean_then_kl"``: each supervised row is renormalised over the image
    tokens, the rows are averaged over heads and supervised tokens into the sample's
    attention map, and one divergence is taken per sample. ``"kl_per_row"`` is the
    stricter alternative (a divergence per head and token, then averaged); it upper-bounds
    ``"mean_then_kl"`` for ``direction="target_to_attention"`` (convexity of KL).

    Samples without a box (``target`` all zero, or ``has_target`` false) and samples with
    no supervised token contribute exactly 0 and never produce NaN. With ``key_mask``
    (samples holding different numbers of image tokens, padded over ``P``), each sample's
    distributions live on its own real image tokens only: masked columns get zero
    attention and zero target, rows and target are renormalised over the real columns,
    and the smoothing counts only them, so a sample's loss is the one of the unpadded
    sample. Everything is computed
    in fp32 whatever the input dtype; the gradient has the attention's dtype.

    Several layers at once: pass a list (or tuple) of attention tensors of one shape,
    dtype and device, for example ``[capture.attentions[k] for k in layers]``; the
    result is the mean over them of their losses (per sample with ``reduction="none"``),
    ``torch.stack([one call per layer]).mean(0)`` computed the same way, with the target,
    masks and options prepared once instead of once per layer.

    Args:
        attention: Probabilities over the ``P`` image tokens, ``[B, H, Q, P]``, ``[B, Q, P]``
            or ``[B, P]``, or a sequence of such tensors (one per layer, see above). Rows
            need not sum to 1 (they are renormalised).
        target: Target distribution over the image tokens, ``[B, P]`` (normalised here;
            an all-zero row means "no box").
        direction: ``"target_to_attention"`` (``KL(target || attention)``, default, as the
            authors' code), ``"attention_to_target"`` or ``"js"``.
        token_mask: ``[B, Q]`` bool, which rows are supervised tokens (for example
            ``AttentionCapture.query_mask``). ``None`` means every row.
        aggregate: ``"mean_then_kl"`` (default) or ``"kl_per_row"``, see above. Ignored
            (no warning) for ``[B, P]`` attention.
        reduction: ``"mean"`` over samples with a target, ``"sum"`` or ``"none"`` (``[B]``).
        has_target: Optional ``[B]`` bool flag; false marks samples without a box.
        key_mask: Optional ``[B, P]`` bool, which columns are real image tokens (for
            example ``AttentionCapture.key_mask``). ``None`` means every column.
        eps: Additive smoothing of distributions before a logarithm (see the module
            docstring); must be positive.

    Returns:
        A scalar tensor, or ``[B]`` with ``reduction="none"``, in fp32.

    Raises:
        ShapeError: When shapes do not match.
        WrongTypeError: When inputs are not floating-point tensors.
        InvalidOptionError: For an unknown option or a non-positive ``eps``.

    Shape:
        - attention: ``[B, H, Q, P]``, ``[B, Q, P]`` or ``[B, P]`` (or a sequence of them)
        - target: ``[B, P]``; token_mask: ``[B, Q]``; has_target: ``[B]``; key_mask: ``[B, P]``
        - output: ``[]`` or ``[B]``

    Examples:
        >>> import torch
        >>> from medcurric.losses import attention_kl_loss
        >>> target = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
        >>> att = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
        >>> round(attention_kl_loss(att, target).item(), 6)  # sample 1 has no box
        0.0
        >>> att = torch.full((2, 4, 3, 4), 0.25, requires_grad=True)  # [B, H, Q, P]
        >>> loss = attention_kl_loss(att, target, aggregate="kl_per_row")
        >>> round(loss.item(), 4)  # KL(target || uniform) = log 4 - log 2
        0.6931
        >>> loss.backward(); att.grad.shape
        torch.Size([2, 4, 3, 4])
        >>> layers = [torch.rand(2, 4, 3, 4), torch.rand(2, 4, 3, 4)]  # two layers in one call
        >>> both = attention_kl_loss(layers, target)
        >>> torch.allclose(both, (attention_kl_loss(layers[0], target) + attention_kl_loss(layers[1], target)) / 2)
        True
    """
    layers = _check_layers(attention)
    attention = layers[0]
    attention, target, token_mask, has_target = _check_inputs(attention, target, token_mask, has_target)
    direction = look_up_option(direction, KLDirection, name="direction")
    aggregate = look_up_option(aggregate, AttentionAggregate, name="aggregate")
    reduction = look_up_option(reduction, Reduction, name="reduction")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise InvalidOptionError(f"Expected eps to be a positive finite float, but got {eps!r}. Use e.g. 1e-8.")
    eps = float(eps)
    if key_mask is not None:
        key_mask = _check_key_mask(key_mask, attention.shape[0], attention.shape[-1], attention.device)
        if not bool(key_mask.all()):
            losses = [
                _reduce(*_per_sample_masked_keys(a, target, token_mask, has_target, key_mask, direction, aggregate, eps),
                        reduction)
                for a in layers
            ]  # fmt: skip
            return losses[0] if len(losses) == 1 else torch.stack(losses).mean(0)
    per_layer, valid = _per_sample(layers, target, token_mask, has_target, direction, aggregate, reduction, eps)
    # each layer reduced, then the mean over layers: the arithmetic of one call per layer
    losses = [_reduce(per_sample, valid, reduction) for per_sample in per_layer]
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean(0)


def _check_layers(attention: Any) -> list[torch.Tensor]:
    """The attention tensor as a one-element list, or the layers of a sequence, checked alike."""
    if not isinstance(attention, (list, tuple)):
        return [attention]
    if not attention:
        raise ShapeError("Expected at least one attention tensor in the sequence of layers, but got none.")
    first = attention[0]
    for i, a in enumerate(attention):
        if not isinstance(a, torch.Tensor):
            raise WrongTypeError(
                f"Expected a sequence of torch.Tensor (one per layer), but item {i} is {type(a).__name__}."
            )
        if (a.shape, a.dtype, a.device) != (first.shape, first.dtype, first.device):
            raise ShapeError(
                f"Expected every layer's attention like the first, {tuple(first.shape)} {first.dtype} on "
                f"{first.device}, but item {i} is {tuple(a.shape)} {a.dtype} on {a.device}. "
                "Call attention_kl_loss once per layer for different shapes."
            )
    return list(attention)


def _reduce(per_sample: torch.Tensor, valid: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction is Reduction.NONE:
        return per_sample
    total = per_sample.sum()
    if reduction is Reduction.SUM:
        return total
    return total / valid.sum().clamp_min(1).to(per_sample.dtype)


def _per_sample_masked_keys(
    attention: torch.Tensor,
    target: torch.Tensor,
    token_mask: torch.Tensor | None,
    has_target: torch.Tensor | None,
    key_mask: torch.Tensor,
    direction: KLDirection,
    aggregate: AttentionAggregate,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss on each sample's real columns: samples grouped by their count of them.

    Each group's real columns are gathered (in order) into a dense ``[b, ..., n]`` tensor
    and run through the unmasked path, so every sample sees exactly its own columns.
    """
    b = attention.shape[0]
    work = torch.promote_types(attention.dtype, torch.float32)
    per_sample = attention.new_zeros(b, dtype=work) + attention.sum() * 0.0  # keeps the graph for empty batches
    valid = torch.zeros(b, dtype=torch.bool, device=attention.device)
    counts = key_mask.sum(-1)
    for n in counts.unique().tolist():
        rows = (counts == n).nonzero()[:, 0]
        if n == 0:  # no image token: nothing to attend to, contributes 0
            continue
        cols = torch.sort(key_mask[rows].to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :n]
        a = attention[rows]
        a = a.gather(-1, cols.view(len(rows), *([1] * (a.ndim - 2)), n).expand(*a.shape[:-1], n))
        t = target[rows].gather(-1, cols.to(target.device))
        (group,), group_valid = _per_sample(
            [a],
            t,
            None if token_mask is None else token_mask[rows],
            None if has_target is None else has_target[rows],
            direction,
            aggregate,
            Reduction.NONE,
            eps,
        )
        per_sample = per_sample.index_put((rows,), group.to(work))
        valid[rows] = group_valid
    return per_sample, valid


def _per_sample(
    attentions: list[torch.Tensor],
    target: torch.Tensor,
    token_mask: torch.Tensor | None,
    has_target: torch.Tensor | None,
    direction: KLDirection,
    aggregate: AttentionAggregate,
    reduction: Reduction,
    eps: float,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``[B]`` loss per sample for each of the layers ``attentions``, and which samples count.

    Samples that do not count get 0. The target and row weights are built once for all layers.
    """
    attention = attentions[0]
    shape = tuple(attention.shape)
    if attention.ndim == 2:
        shape = (shape[0], 1, 1, shape[1])
    elif attention.ndim == 3:
        shape = (shape[0], 1, *shape[1:])
    b, h, q, p = shape
    device = attention.device
    work = torch.promote_types(attention.dtype, torch.float32)  # fp32, or fp64 for fp64 input

    # Target: normalised to sum 1; "no box" samples become all zero and contribute nothing.
    t = target.detach().to(device=device, dtype=work)
    t_sum = t.sum(-1)
    valid = t_sum > 0
    if has_target is not None:
        valid = valid & has_target
    t = torch.where(valid[:, None], t / torch.where(valid, t_sum, 1.0)[:, None], 0.0)

    # Row weights: mean over supervised tokens (and heads); zero-token samples drop out.
    if token_mask is None:
        m = torch.ones(b, q, dtype=work, device=device)
    else:
        m = token_mask.to(work)
    n_tok = m.sum(-1)
    valid = valid & (n_tok > 0)
    m = m * (valid.to(work) / (n_tok.clamp_min(1.0) * h))[:, None]  # [B, Q], sums to 1/h per valid sample

    out = []
    for a in attentions:
        a3 = a.reshape(b, h * q, p)
        if b == 0 or p == 0:
            per_sample = a.to(work).sum(tuple(range(1, a.ndim))) * 0.0
        elif aggregate is AttentionAggregate.KL_PER_ROW or (h == 1 and q == 1):
            per_sample = _per_row(a3, t, m, valid, direction, reduction, eps, h, q)
        else:
            a3w = a3.to(work)  # no copy for fp32 input
            s = a3w.sum(-1)
            # Each row smoothed and renormalised, (a + eps) / (s + P eps), then averaged with weights m.
            w = (m[:, None, :] / (s.view(b, h, q) + p * eps)).reshape(b, h * q)
            mean_map = torch.bmm(w[:, None, :], a3w)[:, 0, :] + eps * w.sum(-1, keepdim=True)  # [B, P]
            log_map = torch.log(torch.where(valid[:, None], mean_map, 1.0))
            per_sample = _divergence(log_map[:, None, :], t, direction, eps)[:, 0]
        out.append(torch.where(valid, per_sample, per_sample * 0.0))
    return out, valid


def _per_row(
    a3: torch.Tensor,
    t: torch.Tensor,
    m: torch.Tensor,
    valid: torch.Tensor,
    direction: KLDirection,
    reduction: Reduction,
    eps: float,
    h: int,
    q: int,
) -> torch.Tensor:
    """``[B]`` weighted mean over the rows of ``a3`` ``[B, H * Q, P]`` of their divergences."""
    b, _, p = a3.shape
    work = t.dtype
    if (
        direction is KLDirection.TARGET_TO_ATTENTION
        and a3.device.type == "cpu"
        and a3.dtype in _KERNEL_DTYPES
        and a3.dtype in (work, torch.bfloat16)
    ):
        # One compiled sweep: loss terms and the gradient for the usual upstream gradient.
        w = m[:, None, :].expand(b, h, q).reshape(b, h * q)
        n_valid = valid.sum().clamp_min(1).to(work)
        unit = torch.ones((), dtype=work) if reduction is not Reduction.MEAN else 1.0 / n_valid
        expected = torch.where(valid, unit, 0.0).to(work)
        need_grad = bool(a3.requires_grad and torch.is_grad_enabled())
        neg_entropy = torch.xlogy(t, t).sum(-1)  # [B]
        return neg_entropy * w.sum(-1) + _KLPerRowCPU.apply(a3, t, w, expected, eps, need_grad)
    if direction is KLDirection.TARGET_TO_ATTENTION:
        s, c = _RowStats.apply(a3, t, eps)
        neg_entropy = torch.xlogy(t, t).sum(-1)  # [B]
        t_mass = valid.to(work)  # sum of the normalised target: 1 or 0
        row = neg_entropy[:, None] - c + t_mass[:, None] * torch.log(s + p * eps)
    else:
        row = _divergence(_smoothed_log(a3, eps, work), t, direction, eps)
    return (row.view(b, h, q) * m[:, None, :]).sum((1, 2))


class AttentionKLLoss(nn.Module):
    """Module form of :func:`attention_kl_loss`: stores the options and calls it.

    Args:
        direction: See :func:`attention_kl_loss`.
        aggregate: See :func:`attention_kl_loss`.
        reduction: See :func:`attention_kl_loss`.
        eps: See :func:`attention_kl_loss`.

    Shape:
        - attention: ``[B, H, Q, P]``, ``[B, Q, P]`` or ``[B, P]``
        - target: ``[B, P]``; token_mask: ``[B, Q]``; has_target: ``[B]``; key_mask: ``[B, P]``
        - output: ``[]`` or ``[B]``

    Examples:
        >>> import torch
        >>> from medcurric.losses import AttentionKLLoss
        >>> loss_fn = AttentionKLLoss(direction="js")
        >>> att = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
        >>> round(loss_fn(att, torch.tensor([[1.0, 0.0, 0.0, 0.0]])).item(), 4)  # JS, at most log 2
        0.3804
    """

    def __init__(
        self,
        *,
        direction: str | KLDirection = KLDirection.TARGET_TO_ATTENTION,
        aggregate: str | AttentionAggregate = AttentionAggregate.MEAN_THEN_KL,
        reduction: str | Reduction = Reduction.MEAN,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.direction = look_up_option(direction, KLDirection, name="direction")
        self.aggregate = look_up_option(aggregate, AttentionAggregate, name="aggregate")
        self.reduction = look_up_option(reduction, Reduction, name="reduction")
        self.eps = eps

    def forward(
        self,
        attention: torch.Tensor,
        target: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        has_target: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss; see :func:`attention_kl_loss` for the arguments."""
        return attention_kl_loss(
            attention,
            target,
            direction=self.direction,
            token_mask=token_mask,
            aggregate=self.aggregate,
            reduction=self.reduction,
            has_target=has_target,
            key_mask=key_mask,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        """Options, shown by ``print(module)``."""
        return f"direction={self.direction!s}, aggregate={self.aggregate!s}, reduction={self.reduction!s}, eps={self.eps}"
