from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import InvalidOptionError, MedcurricWarning, ShapeError, WrongTypeError
from medcurric.losses import AttentionKLLoss, attention_kl_loss
from medcurric.losses import attention_kl as akl

DIRECTIONS = ["target_to_attention", "attention_to_target", "js"]
AGGREGATES = ["mean_then_kl", "kl_per_row"]


def _reference(att, target, *, direction, aggregate, token_mask=None, has_target=None, eps=1e-8):
    """Per-sample loop built on F.kl_div, in float64; returns per-sample losses and validity."""
    a = att.double()
    if a.ndim == 2:
        a = a[:, None, None, :]
    elif a.ndim == 3:
        a = a[:, None]
    b, _, q, p = a.shape
    out, valid = [], []
    for i in range(b):
        t = target[i].double()
        rows = torch.arange(q) if token_mask is None else token_mask[i].nonzero()[:, 0]
        ok = bool(t.sum() > 0) and len(rows) > 0 and (has_target is None or bool(has_target[i]))
        valid.append(ok)
        if not ok:
            out.append(a[i].sum() * 0.0)
            continue
        th = t / t.sum()
        rows_a = a[i][:, rows, :].reshape(-1, p)
        rows_a = (rows_a + eps) / (rows_a.sum(-1, keepdim=True) + p * eps)
        if aggregate == "mean_then_kl":
            rows_a = rows_a.mean(0, keepdim=True)
        tt = th.expand_as(rows_a)
        if direction == "target_to_attention":
            d = F.kl_div(rows_a.log(), tt, reduction="none").sum(-1)
        elif direction == "attention_to_target":
            ts = (tt + eps) / (1 + p * eps)
            d = F.kl_div(ts.log(), rows_a, reduction="none").sum(-1)
        else:
            m = 0.5 * (tt + rows_a)
            d = 0.5 * F.kl_div(m.log(), tt, reduction="none").sum(-1) + 0.5 * F.kl_div(
                m.log(), rows_a, reduction="none"
            ).sum(-1)
        out.append(d.mean())
    return torch.stack(out) if out else a.sum() * 0.0, torch.tensor(valid, dtype=torch.bool)


def _reduce(per, valid, reduction):
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / max(int(valid.sum()), 1)


def _inputs(b=3, h=2, q=5, p=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    att = torch.randn(b, h, q, p, generator=g, dtype=torch.float64).softmax(-1).to(dtype)
    target = torch.rand(b, p, generator=g, dtype=torch.float64)
    target[:, : p // 3] = 0.0  # zero entries, like a blurred box
    target[-1] = 0.0  # last sample has no box
    mask = torch.rand(b, q, generator=g) > 0.4
    mask[0, 0] = True
    return att, target.to(dtype), mask


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_kl_div_reference(direction, aggregate, reduction):
    att, target, mask = _inputs()
    got = attention_kl_loss(
        att, target, direction=direction, aggregate=aggregate, token_mask=mask, reduction=reduction
    )
    per, valid = _reference(att, target, direction=direction, aggregate=aggregate, token_mask=mask)
    want = _reduce(per, valid, reduction)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert bool((per[~valid] == 0).all())


@pytest.mark.parametrize("shape", [(4, 9), (4, 3, 9), (4, 2, 3, 9)])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_reduced_attention_shapes(shape, direction):
    g = torch.Generator().manual_seed(1)
    att = torch.rand(*shape, generator=g, dtype=torch.float64)  # un-normalised rows on purpose
    target = torch.rand(shape[0], shape[-1], generator=g, dtype=torch.float64)
    for aggregate in AGGREGATES:
        got = attention_kl_loss(att, target, direction=direction, aggregate=aggregate, reduction="none")
        per, _ = _reference(att, target, direction=direction, aggregate=aggregate)
        torch.testing.assert_close(got, per, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gradcheck_float64(direction, aggregate):
    att, target, mask = _inputs(b=3, h=2, q=3, p=5, seed=2)
    att = att.clone().requires_grad_(True)

    def fn(a):
        return attention_kl_loss(a, target, direction=direction, aggregate=aggregate, token_mask=mask)

    assert torch.autograd.gradcheck(fn, (att,), eps=1e-6, atol=1e-6)


def test_gradcheck_fast_path_reduction_none_and_weights(kernel):
    # The custom autograd function receives arbitrary upstream gradients per row.
    att, target, mask = _inputs(b=3, h=2, q=4, p=6, seed=3)
    target = _shape_target(target, kernel)
    att = att.clone().requires_grad_(True)
    weights = torch.tensor([0.3, -1.7, 2.0], dtype=torch.float64)

    def fn(a):
        per = attention_kl_loss(a, target, aggregate="kl_per_row", token_mask=mask, reduction="none")
        return (per * weights).sum()

    assert torch.autograd.gradcheck(fn, (att,), eps=1e-6, atol=1e-6)


@pytest.fixture(params=["full", "band", "middle", "single"])
def kernel(request):
    """Targets whose non-zero entries span all columns, a band, a middle run, or one column."""
    return request.param


def _shape_target(target, kind):
    t = target.clone()
    p = t.shape[-1]
    if kind == "full":
        t[:-1] = t[:-1] + 0.05  # no zero entry (the last sample keeps its all-zero target)
    elif kind == "middle":
        t[:, : p // 4] = 0.0
        t[:, -(p // 4) :] = 0.0
        t[:, p // 2] += 0.1
    elif kind == "single":
        t[:-1] = 0.0
        t[:-1, p // 2] = 1.0
    return t


@pytest.mark.parametrize("chunk", [7, 64, 1 << 18])
def test_fast_path_gradient_matches_autograd_reference_fp32(monkeypatch, chunk, kernel, device):
    # Small chunks exercise the chunk loop with remainders.
    monkeypatch.setattr(akl, "_CPU_CHUNK_ELEMENTS", chunk)
    att, target, mask = _inputs(b=4, h=3, q=6, p=11, seed=4, dtype=torch.float32)
    target = _shape_target(target, kernel)
    a1 = att.clone().to(device).requires_grad_(True)
    a2 = att.double().clone().requires_grad_(True)
    got = attention_kl_loss(a1, target.to(device), aggregate="kl_per_row", token_mask=mask.to(device)).cpu()
    per, valid = _reference(a2, target, direction="target_to_attention", aggregate="kl_per_row", token_mask=mask)
    want = _reduce(per, valid, "mean")
    got.backward()
    want.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a1.grad.cpu().double(), a2.grad, rtol=1e-4, atol=1e-6)
    assert a1.grad.cpu()[~mask[:, None, :].expand(-1, 3, -1)].abs().max() == 0  # unsupervised rows: no gradient


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_equal_distributions_give_zero(direction, aggregate):
    g = torch.Generator().manual_seed(5)
    target = torch.rand(3, 10, generator=g, dtype=torch.float64) + 0.01
    target = target / target.sum(-1, keepdim=True)
    att = target[:, None, None, :].expand(3, 4, 2, 10).contiguous()
    loss = attention_kl_loss(att, target, direction=direction, aggregate=aggregate, eps=1e-12, reduction="none")
    torch.testing.assert_close(loss, torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    q=st.integers(1, 4),
    p=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    direction=st.sampled_from(DIRECTIONS),
    aggregate=st.sampled_from(AGGREGATES),
    peaked=st.booleans(),
)
def test_nonnegative_and_finite(b, h, q, p, seed, direction, aggregate, peaked):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, h, q, p, generator=g) * (30.0 if peaked else 1.0)
    att = logits.softmax(-1).requires_grad_(True)  # peaked rows underflow to exact zeros
    target = (torch.rand(b, p, generator=g) > 0.5).float()
    mask = torch.rand(b, q, generator=g) > 0.3
    loss = attention_kl_loss(att, target, direction=direction, aggregate=aggregate, token_mask=mask, reduction="none")
    assert torch.isfinite(loss).all()
    assert (loss >= -1e-6).all()
    if direction == "js":
        assert (loss <= math.log(2) + 1e-5).all()
    loss.sum().backward()
    assert torch.isfinite(att.grad).all()


def test_per_row_upper_bounds_mean_then_kl():
    att, target, mask = _inputs(b=4, h=3, q=5, p=9, seed=6)
    per_row = attention_kl_loss(att, target, aggregate="kl_per_row", token_mask=mask, reduction="none")
    mean_first = attention_kl_loss(att, target, aggregate="mean_then_kl", token_mask=mask, reduction="none")
    assert (per_row >= mean_first - 1e-12).all()
    assert (per_row[:-1] > mean_first[:-1]).all()


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_samples_without_target_contribute_nothing(aggregate):
    att, target, mask = _inputs(b=4, h=2, q=3, p=6, seed=7)
    att = att.clone().requires_grad_(True)
    has_target = torch.tensor([True, False, True, True])
    loss = attention_kl_loss(att, target, token_mask=mask, aggregate=aggregate, has_target=has_target)
    keep = torch.tensor([0, 2])  # sample 1 flagged, sample 3 all-zero target
    sub = attention_kl_loss(att[keep], target[keep], token_mask=mask[keep], aggregate=aggregate)
    torch.testing.assert_close(loss, sub)
    loss.backward()
    assert att.grad[1].abs().max() == 0 and att.grad[3].abs().max() == 0
    assert att.grad[0].abs().max() > 0


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_and_no_targets_give_zero_with_gradient(aggregate, reduction):
    att = torch.rand(0, 2, 3, 5, requires_grad=True)
    loss = attention_kl_loss(att, torch.rand(0, 5), aggregate=aggregate, reduction=reduction)
    assert loss.numel() == 0 if reduction == "none" else float(loss.detach()) == 0.0
    if reduction != "none":
        loss.backward()
        assert att.grad is not None and att.grad.shape == att.shape
    att2 = torch.rand(2, 2, 3, 5, requires_grad=True)
    loss2 = attention_kl_loss(att2, torch.zeros(2, 5), aggregate=aggregate, reduction=reduction)
    assert torch.equal(loss2, torch.zeros_like(loss2))
    loss2.sum().backward()
    assert torch.equal(att2.grad, torch.zeros_like(att2))
    att3 = torch.rand(2, 2, 3, 5, requires_grad=True)  # targets, but no supervised token
    loss3 = attention_kl_loss(att3, torch.rand(2, 5), token_mask=torch.zeros(2, 3, dtype=torch.bool), aggregate=aggregate)
    assert float(loss3.detach()) == 0.0
    loss3.backward()
    assert torch.isfinite(att3.grad).all()


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_bf16_input_computed_in_fp32(direction, aggregate, kernel, device):
    att, target, mask = _inputs(b=2, h=4, q=3, p=50, seed=8, dtype=torch.float32)
    target = _shape_target(target, kernel).to(device)
    mask = mask.to(device)
    att = att.bfloat16().to(device)
    a1 = att.clone().requires_grad_(True)
    a2 = att.float().clone().requires_grad_(True)
    l1 = attention_kl_loss(a1, target, direction=direction, aggregate=aggregate, token_mask=mask)
    l2 = attention_kl_loss(a2, target, direction=direction, aggregate=aggregate, token_mask=mask)
    assert l1.dtype == torch.float32
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=1e-7)
    l1.backward()
    l2.backward()
    assert a1.grad.dtype == torch.bfloat16
    torch.testing.assert_close(a1.grad.float(), a2.grad.bfloat16().float())


def test_zero_attention_rows_stay_finite():
    att = torch.zeros(2, 2, 3, 4, requires_grad=True)
    target = torch.tensor([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    for aggregate in AGGREGATES:
        for direction in DIRECTIONS:
            loss = attention_kl_loss(att, target, aggregate=aggregate, direction=direction)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(att.grad).all()
            # a zero row is smoothed to the uniform distribution
            if direction == "target_to_attention":
                want = (math.log(4) + 0.0) / 2  # KL(delta || U) = log 4 ; KL(U || U) = 0
                assert float(loss) == pytest.approx(want, rel=1e-5)
            att.grad = None


def test_module_matches_function_and_repr():
    att, target, mask = _inputs(seed=9)
    for direction in DIRECTIONS:
        for aggregate in AGGREGATES:
            mod = AttentionKLLoss(direction=direction, aggregate=aggregate, reduction="sum", eps=1e-6)
            want = attention_kl_loss(
                att, target, direction=direction, aggregate=aggregate, token_mask=mask, reduction="sum", eps=1e-6
            )
            assert torch.equal(mod(att, target, mask), want)
    assert "kl_per_row" in repr(AttentionKLLoss(aggregate="kl_per_row"))


def test_defaults_follow_the_paper():
    att, target, mask = _inputs(seed=10)
    default = attention_kl_loss(att, target, token_mask=mask)
    explicit = attention_kl_loss(
        att, target, token_mask=mask, direction="target_to_attention", aggregate="mean_then_kl", reduction="mean"
    )
    assert torch.equal(default, explicit)


def test_errors_are_helpful():
    att = torch.rand(2, 3, 4, 5)
    with pytest.raises(ShapeError, match=r"target of shape \[B, P\]"):
        attention_kl_loss(att, torch.rand(2, 6))
    with pytest.raises(ShapeError, match="attention of shape"):
        attention_kl_loss(torch.rand(5), torch.rand(1, 5))
    with pytest.raises(ShapeError, match="token_mask"):
        attention_kl_loss(att, torch.rand(2, 5), token_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ShapeError, match="has_target"):
        attention_kl_loss(att, torch.rand(2, 5), has_target=torch.ones(3, dtype=torch.bool))
    with pytest.raises(InvalidOptionError, match="Did you mean 'kl_per_row'"):
        attention_kl_loss(att, torch.rand(2, 5), aggregate="kl_per_rows")
    with pytest.raises(InvalidOptionError, match="direction"):
        attention_kl_loss(att, torch.rand(2, 5), direction="forward")
    with pytest.raises(InvalidOptionError, match="eps"):
        attention_kl_loss(att, torch.rand(2, 5), eps=0.0)
    with pytest.raises(WrongTypeError):
        attention_kl_loss(att.numpy(), torch.rand(2, 5))
    with pytest.raises(WrongTypeError, match="floating-point"):
        attention_kl_loss(torch.ones(2, 5, dtype=torch.long), torch.rand(2, 5))
    with pytest.raises(InvalidOptionError):
        AttentionKLLoss(reduction="avg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attention_kl_loss(torch.rand(2, 5), torch.rand(2, 5), token_mask=torch.ones(2, 1, dtype=torch.bool))
    assert any(issubclass(w.category, MedcurricWarning) for w in caught)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_cpu_gradient_scaled_and_retained_graph(dtype):
    # The CPU kernel writes the gradient in the forward for the plain ``loss.backward()``;
    # a scaled upstream gradient and a second backward through a retained graph must
    # still give the reference gradient.
    att, target, mask = _inputs(b=3, h=2, q=4, p=9, seed=11, dtype=torch.float32)
    att = att.to(dtype)
    a1 = att.clone().requires_grad_(True)
    a2 = att.double().clone().requires_grad_(True)
    loss = attention_kl_loss(a1, target, aggregate="kl_per_row", token_mask=mask)
    per, valid = _reference(a2, target.double(), direction="target_to_attention", aggregate="kl_per_row", token_mask=mask)
    want = _reduce(per, valid, "mean")
    (2.5 * loss).backward(retain_graph=True)
    (2.5 * want).backward(retain_graph=True)
    tol = {"rtol": 2e-2, "atol": 1e-3} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-6}
    torch.testing.assert_close(a1.grad.double(), a2.grad, **tol)
    loss.backward()  # second backward: unscaled, accumulates
    want.backward()
    torch.testing.assert_close(a1.grad.double(), a2.grad, **tol)
    assert a1.grad.dtype == dtype


def _key_masked_inputs(seed=0, dtype=torch.float64):
    """Ragged image columns: sample 0 keeps all 7, 1 keeps 4 (non-contiguous), 2 keeps 4, 3 keeps none."""
    att, target, mask = _inputs(b=4, h=2, q=5, p=7, seed=seed, dtype=dtype)
    target[-1] = torch.rand(7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    key_mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1, 0], [1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool
    )
    att = att.clone()
    att[~key_mask[:, None, None, :].expand_as(att)] = 5.0  # padded columns hold garbage: must not matter
    target = torch.where(key_mask, target, torch.full_like(target, 3.0))  # so does target mass there
    target[1, 5] = 0.0
    return att, target, mask, key_mask


def _reference_key_mask(att, target, key_mask, **kwargs):
    """Brute force: each sample restricted to its real columns, then the unpadded reference."""
    per, valid = [], []
    for i in range(att.shape[0]):
        cols = key_mask[i].nonzero()[:, 0]
        if len(cols) == 0:
            per.append(att[i].double().sum() * 0.0)
            valid.append(False)
            continue
        tm = kwargs.get("token_mask")
        kw = dict(kwargs, token_mask=None if tm is None else tm[i : i + 1])
        p_i, v_i = _reference(att[i : i + 1][..., cols], target[i : i + 1][:, cols], **kw)
        per.append(p_i[0])
        valid.append(bool(v_i[0]))
    return torch.stack(per), torch.tensor(valid)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_key_mask_matches_per_sample_loop(direction, aggregate, reduction):
    att, target, mask, key_mask = _key_masked_inputs()
    att = att.requires_grad_(True)
    got = attention_kl_loss(
        att, target, direction=direction, aggregate=aggregate, token_mask=mask, reduction=reduction, key_mask=key_mask
    )
    ref_att = att.detach().clone().requires_grad_(True)
    per, valid = _reference_key_mask(ref_att, target, key_mask, direction=direction, aggregate=aggregate,
                                     token_mask=mask)
    want = _reduce(per, valid, reduction)
    assert valid.tolist() == [True, True, True, False]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64)
    ((got * weights).sum() if reduction == "none" else got).backward()
    ((want * weights).sum() if reduction == "none" else want).backward()
    torch.testing.assert_close(att.grad, ref_att.grad, rtol=1e-9, atol=1e-12)
    assert bool((att.grad[~key_mask[:, None, None, :].expand_as(att)] == 0).all())  # padded columns get none


@pytest.mark.parametrize("shape", [(4, 7), (4, 3, 7)])
def test_key_mask_on_reduced_shapes_and_module(shape):
    att4, target, _, key_mask = _key_masked_inputs(seed=4)
    att = att4[:, 0] if len(shape) == 3 else att4[:, 0, 0]
    att = att[:, :3] if len(shape) == 3 else att
    got = AttentionKLLoss(reduction="none")(att, target, key_mask=key_mask)
    per, _ = _reference_key_mask(att, target, key_mask, direction="target_to_attention", aggregate="mean_then_kl")
    torch.testing.assert_close(got, per, rtol=1e-10, atol=1e-12)


def test_key_mask_all_true_is_no_mask_and_fp32_fast_path():
    att, target, mask = _inputs(dtype=torch.float32)
    full = torch.ones(target.shape, dtype=torch.bool)
    for aggregate in AGGREGATES:
        a = attention_kl_loss(att, target, token_mask=mask, aggregate=aggregate, key_mask=full)
        b = attention_kl_loss(att, target, token_mask=mask, aggregate=aggregate)
        assert torch.equal(a, b)
    att, target, mask, key_mask = _key_masked_inputs(dtype=torch.float32)
    got = attention_kl_loss(att, target, token_mask=mask, aggregate="kl_per_row", key_mask=key_mask)
    per, valid = _reference_key_mask(att, target, key_mask, direction="target_to_attention",
                                     aggregate="kl_per_row", token_mask=mask)
    torch.testing.assert_close(got.double(), _reduce(per, valid, "mean"), rtol=1e-5, atol=1e-6)


def test_key_mask_errors():
    att, target, _ = _inputs()
    with pytest.raises(ShapeError, match=r"key_mask of shape \[B, P\] = \[3, 7\]"):
        attention_kl_loss(att, target, key_mask=torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(WrongTypeError, match="key_mask"):
        attention_kl_loss(att, target, key_mask=[[True] * 7] * 3)
    none = attention_kl_loss(att.requires_grad_(True), target, key_mask=torch.zeros(3, 7, dtype=torch.bool))
    assert float(none.detach()) == 0.0
    none.backward()  # no image token anywhere: a zero loss that still backpropagates


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("masked", ["none", "all_true", "padded"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sequence_of_layers_is_the_mean_of_per_layer_calls(direction, aggregate, reduction, masked, dtype):
    """One call over three layers equals the mean of three calls (the trainer's old loop),
    values and gradients, on every path: plain, all-true key mask, padded keys, fp32 kernel."""
    layers, target, mask, key_mask = [], None, None, None
    for seed in range(3):
        if masked == "padded":
            att, target, mask, key_mask = _key_masked_inputs(seed=seed, dtype=dtype)
        else:
            att, target, mask = _inputs(seed=seed, dtype=dtype)
            key_mask = torch.ones(target.shape, dtype=torch.bool) if masked == "all_true" else None
        layers.append(att.requires_grad_(True))
    options = {"direction": direction, "aggregate": aggregate, "reduction": reduction, "token_mask": mask,
               "key_mask": key_mask, "has_target": torch.ones(target.shape[0], dtype=torch.bool)}  # fmt: skip
    got = attention_kl_loss(layers, target, **options)
    refs = [a.detach().clone().requires_grad_(True) for a in layers]
    want = torch.stack([attention_kl_loss(a, target, **options) for a in refs]).mean(0)
    tol = {"rtol": 0.0, "atol": 0.0}  # the same arithmetic as the loop: equal bit for bit
    torch.testing.assert_close(got, want, **tol)
    weights = torch.linspace(-1.0, 2.0, target.shape[0], dtype=got.dtype)
    ((got * weights).sum() if reduction == "none" else got).backward()
    ((want * weights).sum() if reduction == "none" else want).backward()
    for a, ref in zip(layers, refs, strict=True):
        torch.testing.assert_close(a.grad, ref.grad, **tol)
    # a tuple is a sequence too, and one layer in a list is the tensor itself
    assert torch.equal(attention_kl_loss(tuple(refs), target, **options), got.detach())
    assert torch.equal(attention_kl_loss(refs[:1], target, **options), attention_kl_loss(refs[0], target, **options))


def test_sequence_of_layers_errors():
    att, target, _ = _inputs()
    with pytest.raises(ShapeError, match="at least one attention tensor"):
        attention_kl_loss([], target)
    with pytest.raises(WrongTypeError, match="item 1 is list"):
        attention_kl_loss([att, [0.5]], target)
    with pytest.raises(ShapeError, match=r"item 1 is \(3, 2, 4, 7\)"):
        attention_kl_loss([att, att[:, :, :4]], target)
    with pytest.raises(ShapeError, match=r"item 1 is .* torch.float32"):
        attention_kl_loss([att, att.float()], target)
