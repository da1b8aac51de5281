"""AttentionCapture on every supported family, checked against eager ``output_attentions``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from medcurric.attention import SUPPORTED_MODELS, AttentionCapture  # noqa: E402
from medcurric.errors import UnsupportedModelError  # noqa: E402
from medcurric.losses import attention_kl_loss  # noqa: E402
from medcurric.testing.families import FAMILIES, build_tiny_family  # noqa: E402
from medcurric.training import apply_lora, enable_checkpointing  # noqa: E402

LAYERS = [0, 1, -1]


def _query_mask(model, inputs):
    """The tokens after each sample's last image token, plus one token before the image (dropped)."""
    ids, am = inputs["input_ids"], inputs["attention_mask"].bool()
    pos = torch.arange(ids.shape[1])
    last_image = torch.where(ids == model.config.image_token_id, pos, -1).amax(-1)
    query = am & (pos[None] > last_image[:, None])
    query[0, 1] = True
    return query


def _eager_rows(model, inputs, capture_state, layers):
    """Reference: eager output_attentions gathered at the captured rows and image columns, renormalised."""
    qpos, qmask, ipos, kmask = capture_state
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation("eager")
    try:
        out = model(**inputs, output_attentions=True)
    finally:
        base.set_attn_implementation("sdpa")
    n = len(out.attentions)
    refs = {}
    for key in layers:
        full = out.attentions[key % n]  # [B, H, L, L]
        b, h = full.shape[:2]
        q, p = qpos.shape[1], ipos.shape[1]
        rows = full.gather(2, qpos[:, None, :, None].expand(b, h, q, full.shape[-1]))
        rows = rows.gather(3, ipos[:, None, None, :].expand(b, h, q, p)) * kmask[:, None, None, :]
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
        refs[key] = rows * qmask[:, None, :, None]
    return refs


def _capture(model, inputs, layers, query):
    with AttentionCapture(model, layers=layers, query_mask=query) as capture:
        out = model(**inputs)
        state = (capture.query_positions, capture.query_mask, capture.image_positions, capture.key_mask)
        return out, dict(capture.attentions), state


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_eager_output_attentions(family):
    model, inputs = build_tiny_family(family, seed=1)
    query = _query_mask(model, inputs)
    out, got, state = _capture(model, inputs, LAYERS, query)
    qpos, qmask, ipos, kmask = state
    ids = inputs["input_ids"]
    counts = (ids == model.config.image_token_id).sum(-1)
    assert out.attentions is None  # SDPA kept
    assert kmask.sum(-1).tolist() == counts.tolist() and counts[0] != counts[1]
    assert ipos.shape[1] == int(counts.max())
    assert bool((ids.gather(1, ipos)[kmask] == model.config.image_token_id).all())
    assert qmask.sum(-1).tolist() == (query.sum(-1) - torch.tensor([1, 0])).tolist()  # query[0, 1] dropped
    refs = _eager_rows(model, inputs, state, LAYERS)
    for key in LAYERS:
        assert got[key].shape == (2, 4, qpos.shape[1], ipos.shape[1])
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)
        assert bool((got[key].masked_select(~kmask[:, None, None, :]) == 0).all())
    if family == "gemma3":  # sliding layer 0 (window 8) cuts image keys the global layer 1 still sees
        real = qmask[:, None, :, None] & kmask[:, None, None, :]
        assert bool(((got[0] == 0) & real).any()) and not bool(((got[1] == 0) & real).any())


def _left_padded(inputs):
    """The same batch padded on the left (token-aligned tensors shifted right)."""
    am = inputs["attention_mask"]
    out = dict(inputs)
    for name in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"):
        if name in inputs:
            moved = torch.zeros_like(inputs[name])
            for i, n in enumerate(am.sum(-1).tolist()):
                moved[i, moved.shape[1] - n :] = inputs[name][i, :n]
            out[name] = moved
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_keeps_rows_exact(family):
    # Qwen's M-RoPE position ids and the masks all shift with left padding.
    model, inputs = build_tiny_family(family, seed=3)
    inputs = _left_padded(inputs)
    assert int(inputs["attention_mask"][:, 0].sum()) == 1
    query = _query_mask(model, inputs)
    query[0, 1] = False
    _, got, state = _capture(model, inputs, [0, 2], query)
    refs = _eager_rows(model, inputs, state, [0, 2])
    for key in (0, 2):
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_checkpointing_and_gradients_match_eager(family):
    model, inputs = build_tiny_family(family, seed=2)
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"], init_lora_weights=False)
    model = apply_lora(model, cfg)
    model.train()
    query = _query_mask(model, inputs)
    p = int((inputs["input_ids"] == model.config.image_token_id).sum(-1).max())
    target = torch.rand(2, p, generator=torch.Generator().manual_seed(0))
    layers = [0, -1]

    def grads():
        out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    def loss_of(rows, state):
        return sum(
            attention_kl_loss(rows[k], target, token_mask=state[1], key_mask=state[3], aggregate="kl_per_row")
            for k in layers
        )

    _, got, state = _capture(model, inputs, layers, query)
    loss = loss_of(got, state)
    loss.backward()
    plain = grads()
    refs = _eager_rows(model, inputs, state, layers)
    for key in layers:
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)
    loss_of(refs, state).backward()
    eager = grads()
    assert enable_checkpointing(model)
    _, ckpt_rows, ckpt_state = _capture(model, inputs, layers, query)
    loss_ckpt = loss_of(ckpt_rows, ckpt_state)
    loss_ckpt.backward()
    ckpt = grads()
    torch.testing.assert_close(loss_ckpt, loss)
    qk = [n for n in plain if "lora_" in n and ("q_proj" in n or "k_proj" in n) and "language_model" in n]
    assert any("q_proj" in n for n in qk) and any("k_proj" in n for n in qk)
    for name in qk:
        assert plain[name].abs().max() > 0, name
        torch.testing.assert_close(plain[name], eager[name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-7)


def test_families_are_listed_and_bidirectional_gemma_is_refused():
    for family in FAMILIES:
        model, _ = build_tiny_family(family)
        assert type(model).__name__ in SUPPORTED_MODELS
        assert type(model.model).__name__ in SUPPORTED_MODELS
    model.config.text_config.use_bidirectional_attention = True  # the last family is gemma3
    with pytest.raises(UnsupportedModelError, match="use_bidirectional_attention"):
        AttentionCapture(model, layers=[0])


@pytest.mark.parametrize("left_pad", [False, True], ids=["right-padded", "left-padded"])
def test_qwen2_5_vl_rows_are_exact_with_mrope_positions(left_pad):
    """With ``mm_token_type_ids`` (what the processor returns), transformers computes the 3-D
    M-RoPE positions of ``get_rope_index``; without it Qwen2.5-VL falls back to 1-D positions."""
    model, inputs = build_tiny_family("qwen2_5_vl", seed=1)
    inputs = dict(inputs, mm_token_type_ids=(inputs["input_ids"] == model.config.image_token_id).int())
    if left_pad:
        inputs = _left_padded(inputs)
    plain = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits, model(**plain).logits)  # M-RoPE engaged
    _, got, state = _capture(model, inputs, LAYERS, _query_mask(model, inputs))
    refs = _eager_rows(model, inputs, state, LAYERS)
    for key in LAYERS:
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)
