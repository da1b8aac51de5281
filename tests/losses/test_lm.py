from __future__ import annotations

import math

import pytest
import torch

from medcurric.errors import InvalidOptionError, ShapeError
from medcurric.losses.lm import span_weighted_lm_loss


def reference(logits, labels, spans, weights, other_weight=0.0, ignore_index=-100) -> float:
    """Per-token loop: position t predicts labels[t + 1]."""
    B, L, _ = logits.shape
    sums = {k: 0.0 for k in spans}
    counts = {k: 0 for k in spans}
    other_sum, other_count = 0.0, 0
    for b in range(B):
        for t in range(L - 1):
            y = int(labels[b, t + 1])
            if y == ignore_index:
                continue
            logp = logits[b, t].double().log_softmax(-1)
            ce = -float(logp[y])
            hit = False
            for k, m in spans.items():
                if bool(m[b, t + 1]):
                    sums[k] += ce
                    counts[k] += 1
                    hit = True
            if not hit:
                other_sum += ce
                other_count += 1
    total = sum(w * (sums[k] / counts[k] if counts[k] else 0.0) for k, w in weights.items())
    if other_weight:
        total += other_weight * (other_sum / other_count if other_count else 0.0)
    return total


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_per_token_reference(seed: int, device: torch.device) -> None:
    g = torch.Generator().manual_seed(seed)
    B, L, V = 3, 11, 7
    logits = torch.randn(B, L, V, generator=g)
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[torch.rand(B, L, generator=g) < 0.3] = -100
    pos = torch.rand(B, L, generator=g)
    spans = {"answer": pos < 0.3, "rationale": (pos >= 0.3) & (pos < 0.7)}
    weights = {"answer": 0.8, "rationale": 0.2}
    got = span_weighted_lm_loss(logits.to(device), labels.to(device), {k: v.to(device) for k, v in spans.items()})
    assert got.item() == pytest.approx(reference(logits, labels, spans, weights), rel=1e-5)
    got_other = span_weighted_lm_loss(logits, labels, spans, {"answer": 0.5, "rationale": 0.1}, other_weight=0.4)
    ref_other = reference(logits, labels, spans, {"answer": 0.5, "rationale": 0.1}, other_weight=0.4)
    assert got_other.item() == pytest.approx(ref_other, rel=1e-5)


def test_all_tokens_one_weight_equals_causal_lm_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 5, generator=g)
    labels = torch.randint(0, 5, (2, 9), generator=g)
    labels[:, :3] = -100
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 5), labels[:, 1:].reshape(-1))
    got = span_weighted_lm_loss(logits, labels, {"all": labels != -100}, {"all": 1.0})
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_empty_span_contributes_zero_and_keeps_gradients() -> None:
    logits = torch.randn(1, 5, 4, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3, 0]])
    spans = {"answer": torch.tensor([[0, 0, 0, 1, 1]]).bool(), "rationale": torch.zeros(1, 5, dtype=torch.bool)}
    loss, parts = span_weighted_lm_loss(logits, labels, spans, return_parts=True)
    assert parts["rationale"].item() == 0.0
    assert loss.item() == pytest.approx(0.8 * parts["answer"].item())
    loss.backward()
    assert logits.grad is not None and logits.grad[0, 2:4].abs().sum() > 0
    nothing = span_weighted_lm_loss(logits, torch.full((1, 5), -100), spans)
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6), generator=g)
    spans = {"answer": torch.rand(2, 6, generator=g) < 0.5, "rationale": torch.rand(2, 6, generator=g) < 0.5}

    def fn(x: torch.Tensor) -> torch.Tensor:
        return span_weighted_lm_loss(x, labels, spans)

    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-6)


def test_half_precision_is_upcast() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 6, 5, generator=g)
    labels = torch.randint(0, 5, (1, 6), generator=g)
    spans = {"answer": labels >= 0, "rationale": labels < 0}
    full = span_weighted_lm_loss(logits, labels, spans)
    half = span_weighted_lm_loss(logits.bfloat16(), labels, spans)
    assert half.dtype == torch.float32 and half.item() == pytest.approx(full.item(), rel=2e-2)


def test_errors_say_what_is_wrong() -> None:
    logits = torch.zeros(1, 4, 3)
    labels = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ShapeError, match=r"\[B, L, V\]"):
        span_weighted_lm_loss(logits[0], labels, {})
    with pytest.raises(ShapeError, match="labels"):
        span_weighted_lm_loss(logits, labels[:, :3], {})
    with pytest.raises(InvalidOptionError, match="rationale"):
        span_weighted_lm_loss(logits, labels, {"answer": labels.bool()})
    with pytest.raises(ShapeError, match="'answer'"):
        span_weighted_lm_loss(logits, labels, {"answer": labels[:, :2].bool(), "rationale": labels.bool()})
    assert math.isclose(
        span_weighted_lm_loss(logits, labels, {"answer": labels == 0, "rationale": labels == 0}).item(),
        math.log(3),
        rel_tol=1e-6,
    )
