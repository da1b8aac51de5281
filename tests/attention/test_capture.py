from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import transformers  # noqa: E402

from medcurric.attention import AttentionCapture  # noqa: E402
from medcurric.errors import DataFormatError, MedcurricWarning, ShapeError, UnsupportedModelError  # noqa: E402
from medcurric.losses import attention_kl_loss  # noqa: E402
from medcurric.testing.tiny import build_tiny_vlm  # noqa: E402
from medcurric.training import apply_lora  # noqa: E402

N_IMG = 36


def _batch(vocab: int, image_token_id: int, *, b: int = 3, length: int = 52, seed: int = 0, left_pad: bool = False):
    """Random ids with one image (36 tokens) per sample, ragged padding and ragged supervised spans."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (b, length), generator=g)
    ids[ids == image_token_id] = 11
    attention_mask = torch.ones(b, length, dtype=torch.long)
    query = torch.zeros(b, length, dtype=torch.bool)
    for i in range(b):
        pad = 3 * i  # sample i has 3*i padding tokens
        start = 2 + (pad if left_pad else 0)
        ids[i, start : start + N_IMG] = image_token_id
        if pad:
            if left_pad:
                attention_mask[i, :pad] = 0
            else:
                attention_mask[i, length - pad :] = 0
        end = length if left_pad else length - pad
        first = start + N_IMG + 1
        query[i, first + i : end] = True  # different number of supervised tokens per sample
    query[0, 1] = True  # a query before the image: sees no image token and is dropped
    pixels = torch.randn(b, 3, 48, 48, generator=g)
    return ids, attention_mask, query, pixels


def _eager_rows(model, ids, attention_mask, pixels, capture_query_positions, query_mask, image_positions, layers):
    """Reference: eager output_attentions, rows of the supervised tokens, image columns, renormalised."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation("eager")
    try:
        out = model(input_ids=ids, attention_mask=attention_mask, pixel_values=pixels, output_attentions=True)
    finally:
        base.set_attn_implementation("sdpa")
    n = len(out.attentions)
    refs = {}
    for key in layers:
        full = out.attentions[key % n]  # [B, H, L, L]
        b, h = full.shape[:2]
        q = capture_query_positions.shape[1]
        rows = full.gather(2, capture_query_positions[:, None, :, None].expand(b, h, q, full.shape[-1]))
        rows = rows.gather(3, image_positions[:, None, None, :].expand(b, h, q, image_positions.shape[1]))
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
        refs[key] = rows * query_mask[:, None, :, None]
    return refs


def _hooks(model) -> int:
    """Hook count (transformers registers its own output-recording hooks at the first forward)."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _lora(model, seed: int = 0):
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    return apply_lora(model, cfg)


def _tiny(arch, kv_heads, *, layers=3, seed=0):
    return build_tiny_vlm(arch, num_layers=layers, num_kv_heads=kv_heads, seed=seed)


@pytest.mark.parametrize("arch", ["vip_llava", "llava"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("lora", [False, True], ids=["bare", "lora"])
@pytest.mark.parametrize("left_pad", [False, True], ids=["right_pad", "left_pad"])
def test_captured_rows_equal_eager_output_attentions(arch, kv_heads, lora, left_pad):
    vlm = _tiny(arch, kv_heads, seed=kv_heads)
    model = _lora(vlm.model) if lora else vlm.model
    ids, am, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id, left_pad=left_pad)
    layers = [0, 2, -2]
    with AttentionCapture(model, layers=layers, query_mask=query) as capture:
        out = model(input_ids=ids, attention_mask=am, pixel_values=pixels)
        got = dict(capture.attentions)
        qpos, qmask, ipos = capture.query_positions, capture.query_mask, capture.image_positions
    assert out.attentions is None  # SDPA kept, nothing extra materialised
    assert sorted(got) == sorted(layers)
    n_q = (query & (torch.arange(ids.shape[1]) > 2 + N_IMG)[None]).sum(-1)  # query[0, 1] dropped
    assert qmask.sum(-1).tolist() == n_q.tolist()
    assert torch.equal(ids.gather(1, ipos), torch.full_like(ipos, vlm.image_token_id))
    refs = _eager_rows(model, ids, am, pixels, qpos, qmask, ipos, layers)
    for key in layers:
        assert got[key].shape == (3, 4, int(n_q.max()), N_IMG)
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)
        rowsum = got[key].sum(-1)
        torch.testing.assert_close(rowsum, qmask[:, None, :].expand_as(rowsum).float())


def _custom_llava(text_config_cls, **text_kwargs):
    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=48, patch_size=8, projection_dim=32,
    )
    text = text_config_cls(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, **text_kwargs,
    )
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=4, vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = transformers.LlavaForConditionalGeneration(config)
    model.set_attn_implementation("sdpa")
    return model.eval()


@pytest.mark.parametrize(
    ("cls_name", "kwargs"),
    [
        ("MistralConfig", {"sliding_window": 20, "head_dim": 8}),
        ("Qwen2Config", {}),
        ("Qwen3Config", {"head_dim": 8}),
    ],
    ids=["mistral_sliding_window", "qwen2_qk_bias", "qwen3_qk_norm"],
)
def test_other_llama_family_language_models(cls_name, kwargs):
    cls = getattr(transformers, cls_name, None)
    if cls is None:
        pytest.skip(f"transformers has no {cls_name}")
    model = _custom_llava(cls, **kwargs)
    if cls_name == "Qwen3Config":  # make the q/k norms non-trivial
        with torch.no_grad():
            for layer in model.model.language_model.layers:
                layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
                layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    ids, am, query, pixels = _batch(300, 4, length=70)
    with AttentionCapture(model, layers=[0, 1], query_mask=query) as capture:
        model(input_ids=ids, attention_mask=am, pixel_values=pixels)
        got = dict(capture.attentions)
        qpos, qmask, ipos = capture.query_positions, capture.query_mask, capture.image_positions
    refs = _eager_rows(model, ids, am, pixels, qpos, qmask, ipos, [0, 1])
    for key in (0, 1):
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)
    if cls_name == "MistralConfig":  # the window hides part of the image from late queries
        assert bool((got[0] == 0).any(-1)[qmask[:, None, :].expand(-1, 4, -1)].any())


@pytest.mark.parametrize("arch", ["vip_llava", "llava"])
def test_gradients_reach_lora_and_match_eager_path(arch):
    vlm = _tiny(arch, 2, seed=7)
    model = _lora(vlm.model, seed=1)
    model.train()
    for module in model.modules():  # dropout off, so both paths see the same function
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, am, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id, seed=3)
    target = torch.rand(3, N_IMG, generator=torch.Generator().manual_seed(0))
    layers = [0, 1, 2]

    def lora_grads():
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
        model.zero_grad(set_to_none=True)
        return grads

    with AttentionCapture(model, layers=layers, query_mask=query) as capture:
        model(input_ids=ids, attention_mask=am, pixel_values=pixels)
        loss = sum(
            attention_kl_loss(capture.attentions[k], target, token_mask=capture.query_mask, aggregate=agg)
            for k in layers
            for agg in ("mean_then_kl", "kl_per_row")
        )
        qpos, qmask, ipos = capture.query_positions, capture.query_mask, capture.image_positions
    loss.backward()
    got = lora_grads()
    refs = _eager_rows(model, ids, am, pixels, qpos, qmask, ipos, layers)
    ref_loss = sum(
        attention_kl_loss(refs[k], target, token_mask=qmask, aggregate=agg)
        for k in layers
        for agg in ("mean_then_kl", "kl_per_row")
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    ref_loss.backward()
    want = lora_grads()
    lora_names = [n for n in got if "lora_" in n]
    assert any("q_proj.lora_A" in n for n in lora_names) and any("k_proj.lora_B" in n for n in lora_names)
    assert set(got) == set(want)
    for name in lora_names:
        if "v_proj" in name:  # the attention pattern does not depend on values
            continue
        assert got[name].abs().max() > 0, name
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-7)


def test_keeps_sdpa_and_does_not_change_outputs():
    vlm = _tiny("vip_llava", 2)
    model = vlm.model
    ids, am, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id)
    before = model(input_ids=ids, attention_mask=am, pixel_values=pixels).logits
    impl = (model.config._attn_implementation, model.config.text_config._attn_implementation)
    with AttentionCapture(model, layers=[1], query_mask=query) as capture:
        during = model(input_ids=ids, attention_mask=am, pixel_values=pixels).logits
        assert (model.config._attn_implementation, model.config.text_config._attn_implementation) == impl
        assert capture.attentions[1].shape[0] == 3
    assert impl == ("sdpa", "sdpa")
    assert torch.equal(before, during)


def test_each_forward_replaces_and_exit_releases():
    vlm = _tiny("llava", 4)
    model = vlm.model
    ids, am, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id)
    model(input_ids=ids, pixel_values=pixels)
    n_hooks = _hooks(model)
    capture = AttentionCapture(model, layers=0)
    with capture:
        assert _hooks(model) == n_hooks + 5
        capture.set_query_mask(query)
        model(input_ids=ids, attention_mask=am, pixel_values=pixels)
        first = capture.attentions[0]
        q2 = torch.zeros_like(query)
        q2[:, -2:] = True
        q2[2, -9:] = True
        capture.set_query_mask(q2)
        with torch.no_grad():
            model(input_ids=ids, pixel_values=pixels)
        second = capture.attentions[0]
        assert first.shape[2] != second.shape[2] and second.shape[2] == 9
        assert not second.requires_grad and first.requires_grad is torch.is_grad_enabled()
    assert capture.attentions == {} and capture.query_mask is None
    assert _hooks(model) == n_hooks
    model(input_ids=ids, pixel_values=pixels)  # runs without the capture
    assert capture.attentions == {}


def test_hooks_removed_on_error():
    vlm = _tiny("vip_llava", 2)
    model = _lora(vlm.model)
    ids, _, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id)
    model(input_ids=ids, pixel_values=pixels)
    n_hooks = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"), AttentionCapture(model, layers=[0, 1], query_mask=query):
        model(input_ids=ids, pixel_values=pixels)
        raise RuntimeError("boom")
    assert _hooks(model) == n_hooks
    with pytest.raises(ShapeError, match="query_mask"), AttentionCapture(model, layers=[0], query_mask=query[:, :5]):
        model(input_ids=ids, pixel_values=pixels)
    assert _hooks(model) == n_hooks


def test_clear_errors():
    vlm = _tiny("vip_llava", 2, layers=2)
    model = vlm.model
    ids, _, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id)
    with pytest.raises(ShapeError, match=r"\[-2, 1\]"):
        AttentionCapture(model, layers=[2])
    with pytest.raises(ShapeError, match="same decoder layer"):
        AttentionCapture(model, layers=[1, -1])
    with pytest.raises(DataFormatError, match="no query mask"), AttentionCapture(model, layers=[0]):
        model(input_ids=ids, pixel_values=pixels)
    with pytest.raises(DataFormatError, match="input_ids"), AttentionCapture(model, layers=[0], query_mask=query):
        embeds = model.get_input_embeddings()(ids.clamp_max(5))
        model(inputs_embeds=embeds)
    with AttentionCapture(model, layers=[0], query_mask=query) as capture:
        model.model.language_model(input_ids=ids)  # not the hooked top-level model: nothing happens
        assert capture.attentions == {}


def test_unsupported_models_are_named():
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)
    )
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        AttentionCapture(llama, layers=[0])
    with pytest.raises(UnsupportedModelError, match=r"LlamaForCausalLM.*PeftModel"):
        AttentionCapture(apply_lora(llama, peft.LoraConfig(target_modules=["q_proj"])), layers=[0])
    if hasattr(transformers, "GemmaConfig"):
        gemma = _custom_llava(transformers.GemmaConfig, head_dim=8)
        with pytest.raises(UnsupportedModelError, match="GemmaAttention"):
            AttentionCapture(gemma, layers=[0])


def test_non_reentrant_checkpointing_matches_and_reentrant_warns():
    vlm = _tiny("vip_llava", 2, seed=5)
    model = _lora(vlm.model, seed=2)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, am, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id, seed=4)
    target = torch.rand(3, N_IMG, generator=torch.Generator().manual_seed(1))

    def step():
        with AttentionCapture(model, layers=[0, 2], query_mask=query) as capture:
            out = model(input_ids=ids, attention_mask=am, pixel_values=pixels, labels=ids)
            loss = out.loss + sum(
                attention_kl_loss(a, target, token_mask=capture.query_mask) for a in capture.attentions.values()
            )
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return loss.detach(), grads

    loss_plain, grads_plain = step()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    loss_ckpt, grads_ckpt = step()
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert set(grads_ckpt) == set(grads_plain)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-7)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with AttentionCapture(model, layers=[2], query_mask=query) as capture:
            model(input_ids=ids, attention_mask=am, pixel_values=pixels)
            assert not capture.attentions[2].requires_grad
    assert any(issubclass(w.category, MedcurricWarning) and "use_reentrant" in str(w.message) for w in caught)


def test_exact_in_training_mode_with_lora_dropout():
    # The model's own q/k are reused, so the rows see the same dropout sample as the forward pass.
    vlm = _tiny("vip_llava", 2, seed=11)
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=4, target_modules=["q_proj", "k_proj"], lora_dropout=0.5, init_lora_weights=False)
    model = apply_lora(vlm.model, cfg)
    model.train()
    ids, am, query, pixels = _batch(len(vlm.tokenizer), vlm.image_token_id, seed=6)
    with AttentionCapture(model, layers=[0, 2], query_mask=query) as capture:
        torch.manual_seed(123)
        model(input_ids=ids, attention_mask=am, pixel_values=pixels)
        got = dict(capture.attentions)
        qpos, qmask, ipos = capture.query_positions, capture.query_mask, capture.image_positions
    torch.manual_seed(123)
    refs = _eager_rows(model, ids, am, pixels, qpos, qmask, ipos, [0, 2])
    torch.manual_seed(124)
    other = _eager_rows(model, ids, am, pixels, qpos, qmask, ipos, [0, 2])
    for key in (0, 2):
        torch.testing.assert_close(got[key], refs[key], rtol=1e-5, atol=2e-6)
        assert (got[key] - other[key]).abs().max() > 1e-4  # dropout really changes the rows


def test_batch_without_supervised_tokens_gives_empty_rows() -> None:
    """An Easy batch has no supervised query: the capture returns [B, H, 0, P], not an error."""
    import numpy as np
    from PIL import Image

    from medcurric.attention import AttentionCapture
    from medcurric.losses import attention_kl_loss
    from medcurric.testing.tiny import build_tiny_vlm

    vlm = build_tiny_vlm()
    img = Image.fromarray(np.zeros((48, 48, 3), np.uint8))
    batch = vlm.processor(images=[img, img], text=["###Human: <image>\nhi###Assistant: liver"] * 2,
                          return_tensors="pt")
    mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    with AttentionCapture(vlm.model, layers=[0, 1], query_mask=mask) as capture:
        vlm.model(**batch)
        rows = capture.attentions[1]
        assert rows.shape == (2, 4, 0, vlm.num_image_tokens)
        target = torch.full((2, vlm.num_image_tokens), 1.0 / vlm.num_image_tokens)
        loss = attention_kl_loss(rows, target, token_mask=capture.query_mask)
        assert float(loss) == 0.0


def test_masked_softmax_backward_matches_autograd_and_leaves_its_gradient_alone() -> None:
    """The hand-written softmax backward against torch.softmax's, with an expanded incoming
    gradient (``out.sum().backward()``), which it must not write into."""
    from medcurric.attention.capture import _MaskedSoftmax

    torch.manual_seed(0)
    scores = torch.randn(2, 3, 4, 5, requires_grad=True)
    blocked = torch.zeros(2, 1, 4, 5, dtype=torch.bool)
    blocked[0, :, :, 3:] = True
    blocked[1, :, 2] = True  # a row with no visible key: zeros, no gradient
    allowed, row_ok = ~blocked, ~blocked.all(-1, keepdim=True)
    _MaskedSoftmax.apply(scores, 0.5, allowed, row_ok, torch.float32).pow(2).sum().backward()
    ref_scores = scores.detach().clone().requires_grad_(True)
    ref = torch.softmax((ref_scores * 0.5).masked_fill(blocked, float("-inf")), -1).nan_to_num(0.0)
    ref.pow(2).sum().backward()
    torch.testing.assert_close(scores.grad, ref_scores.grad)
    scores.grad = None
    _MaskedSoftmax.apply(scores, 0.5, allowed, row_ok, torch.float32).sum().backward()
    torch.testing.assert_close(scores.grad, torch.zeros_like(scores), atol=1e-6, rtol=0)  # rows sum to 1 or 0
