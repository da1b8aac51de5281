"""Recompute the supervised tokens' attention over image tokens while the model keeps SDPA.

``output_attentions=True`` forces eager attention and stores every layer's full
``[B, H, L, L]`` matrix. For the Medium-stage loss only a few rows are needed: the
attention of the supervised (answer/rationale) tokens over the image tokens,
renormalised over the image tokens. A softmax restricted to a subset of keys and
renormalised equals the softmax over that subset alone, so these rows are
``softmax_p(q_t . k_p * scaling)`` over the image keys ``p`` visible to ``t``,
recomputed here from what the layer computed anyway: the outputs of its own (possibly
LoRA-wrapped) ``q_proj`` and ``k_proj``, of which only the rows of the supervised
tokens (queries) and of the image tokens (keys) are kept, with the rotary embedding
the layer received applied and grouped-query heads shared. No projection is run
twice, and the model's own attention implementation (SDPA, flash, ...) is untouched.

Row ``t`` is the attention *of the token at sequence position t* (its query) over the
image tokens, exactly as row ``t`` of ``output_attentions``. In a causal LM that token
predicts token ``t + 1``: to supervise the attention used while predicting the
answer tokens, mark the positions just before them (the labels mask shifted left by
one); to supervise the attention of the answer tokens themselves, mark the tokens.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from medcurric.errors import (
    DataFormatError,
    MedcurricWarning,
    ShapeError,
    UnsupportedModelError,
    WrongTypeError,
)

__all__ = ["AttentionCapture", "SUPPORTED_ATTENTION", "SUPPORTED_MODELS"]

#: Top-level model classes whose forward receives ``input_ids`` with image placeholder tokens.
SUPPORTED_MODELS: tuple[str, ...] = (
    "LlavaForConditionalGeneration",
    "VipLlavaForConditionalGeneration",
    "LlavaOnevisionForConditionalGeneration",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
    "Gemma3ForConditionalGeneration",
    "LlavaModel",
    "VipLlavaModel",
    "LlavaOnevisionModel",
    "Qwen2VLModel",
    "Qwen2_5_VLModel",
    "Qwen3VLModel",
    "Gemma3Model",
)

#: Decoder attention classes (separate q/k projections, rotate-half rotary whose cos/sin
#: the layer receives, M-RoPE included, optional per-head q/k norms, optional sliding
#: window) whose rows can be recomputed.
SUPPORTED_ATTENTION: tuple[str, ...] = (
    "LlamaAttention",
    "MistralAttention",
    "Qwen2Attention",
    "Qwen3Attention",
    "Qwen2VLAttention",
    "Qwen2_5_VLAttention",
    "Qwen3VLTextAttention",
    "Gemma3Attention",
)


def _unwrap(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    seen = 0
    while type(model).__name__ not in SUPPORTED_MODELS and seen < 4:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif type(model).__name__ in ("LoraModel",) and hasattr(model, "model"):
            model = model.model
        else:
            break
        seen += 1
    return model


def _decoder_layers(model: nn.Module) -> Any:
    """The language model's decoder layers (transformers 5.x and 4.x layouts)."""
    candidates = []
    inner = getattr(model, "model", None)
    if inner is not None:
        candidates.append(getattr(inner, "language_model", None))
    candidates.append(getattr(model, "language_model", None))
    for lm in candidates:
        if lm is None:
            continue
        if isinstance(getattr(lm, "layers", None), nn.ModuleList):
            return lm.layers
        sub = getattr(lm, "model", None)
        if sub is not None and isinstance(getattr(sub, "layers", None), nn.ModuleList):
            return sub.layers
    return None


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, i]]`` for ``x`` ``[B, L, D]`` and ``index`` ``[B, N]`` -> ``[B, N, D]``."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class _Positions:
    """Sequence positions of one forward pass (computed from ``input_ids`` and the masks)."""

    def __init__(
        self,
        query: torch.Tensor,
        query_mask: torch.Tensor,
        image: torch.Tensor,
        image_valid: torch.Tensor,
        seq_len: int,
    ) -> None:
        self.query = query  # [B, Q] long (0 where padded)
        self.query_mask = query_mask  # [B, Q] bool
        self.image = image  # [B, P] long (0 where padded)
        self.image_valid = image_valid  # [B, P] bool (real image tokens not masked out by attention_mask)
        self.seq_len = seq_len


class AttentionCapture:
    """Capture the supervised tokens' attention over image tokens, keeping SDPA/flash attention.

    A context manager: on entry it hooks the chosen decoder layers' attention modules
    and the top-level model; after each forward pass, :attr:`attentions` maps each
    chosen layer to the attention of the supervised tokens over the image tokens,
    ``[B, H, Q, P]``, renormalised over the image tokens (what
    ``output_attentions=True`` with eager attention would give, restricted to those
    rows and columns and renormalised), with gradients flowing into the projections,
    LoRA adapters included. ``Q`` is the largest number of supervised tokens of any
    sample and ``P`` the largest number of image tokens of any sample;
    :attr:`query_mask` ``[B, Q]`` marks the real rows and :attr:`key_mask` ``[B, P]`` the
    real columns (a padded column has probability 0), so
    ``attention_kl_loss(capture.attentions[layer], target, token_mask=capture.query_mask,
    key_mask=capture.key_mask)`` just works. Each forward pass replaces the captured
    tensors; they are released and every hook is removed when the context exits, also
    on error.

    The hooks only keep references to the projections' outputs; the rows are computed
    after the forward pass, outside any gradient-checkpointed region, so non-reentrant
    gradient checkpointing works. Because the model's own ``q``/``k`` are reused, the
    rows are exact in training mode too (LoRA dropout included). What stays alive for
    the backward pass is, per layer, the image tokens' keys and the captured rows.
    Reentrant checkpointing (``use_reentrant=True``) runs the layers without autograd,
    so the rows carry no gradient; a :class:`MedcurricWarning` says so.

    Supported: the classes in :data:`SUPPORTED_MODELS` (LLaVA, VIP-LLaVA,
    LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, or their ``*Model`` bases), bare or
    wrapped by peft, whose language model uses one of :data:`SUPPORTED_ATTENTION`,
    called with ``input_ids`` and without a KV cache: training and scoring passes, not
    ``generate``. The rotary cos/sin are the ones the layer receives, so Qwen's M-RoPE
    (position ids from ``get_rope_index``) and Gemma 3's per-layer-type rotary need
    nothing special; Gemma 3's image tokens attend bidirectionally among themselves, but
    the supervised text queries are causal, which is what is computed here. Row ``t``
    is the attention of the token at position ``t`` (see the module docstring for how
    that relates to the LM labels).

    Args:
        model: The model (or a peft model wrapping it).
        layers: Decoder layer index or indices to capture (negative counts from the
            end); the keys of :attr:`attentions` are these values as given.
        query_mask: ``[B, L]`` bool over the input sequence: which positions are the
            supervised queries (for example the answer and rationale tokens). Can be
            changed per batch with :meth:`set_query_mask`.
        image_token_id: Id of the image placeholder token; read from the model config
            (``image_token_id`` / ``image_token_index``) when ``None``.
        dtype: dtype of the captured attention (the softmax is always taken in fp32).

    Attributes:
        attentions: ``{layer: Tensor[B, H, Q, P]}`` of the last forward pass.
        query_mask: ``[B, Q]`` bool, real rows of :attr:`attentions` (a query that
            sees no image token, because it precedes the image, is dropped).
        query_positions: ``[B, Q]`` sequence positions of the rows (0 where padded).
        key_mask: ``[B, P]`` bool, real columns of :attr:`attentions`: image tokens of
            the sample that its ``attention_mask`` keeps.
        image_positions: ``[B, P]`` sequence positions of the image tokens (0 where padded).

    Raises:
        UnsupportedModelError: When the model or its attention modules are not supported.
        ShapeError: When a layer index is out of range.

    Shape:
        - query_mask (input): ``[B, L]``, the shape of ``input_ids``
        - attentions[layer]: ``[B, H, Q, P]``; query_mask (attribute): ``[B, Q]``;
          key_mask (attribute): ``[B, P]``

    Examples:
        >>> import torch
        >>> from medcurric.attention import AttentionCapture
        >>> from medcurric.testing.tiny import build_tiny_vlm
        >>> vlm = build_tiny_vlm(num_layers=2, seed=0)
        >>> ids = torch.tensor([[1] + [vlm.image_token_id] * 36 + [7, 8, 9]])
        >>> pixels = torch.zeros(1, 3, 48, 48)
        >>> mask = torch.zeros_like(ids, dtype=torch.bool)
        >>> mask[0, -3:] = True  # supervise the last three tokens
        >>> with AttentionCapture(vlm.model, layers=[0, -1], query_mask=mask) as capture:
        ...     out = vlm.model(input_ids=ids, pixel_values=pixels)
        ...     att, rows = capture.attentions[-1], capture.query_mask
        >>> tuple(att.shape), tuple(rows.shape)
        ((1, 4, 3, 36), (1, 3))
        >>> capture.attentions  # released on exit
        {}
        >>> torch.allclose(att.sum(-1), torch.ones(1, 4, 3))
        True
    """

    def __init__(
        self,
        model: nn.Module,
        layers: int | Iterable[int],
        *,
        query_mask: torch.Tensor | None = None,
        image_token_id: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        top = _unwrap(model)
        found = type(top).__name__
        if found not in SUPPORTED_MODELS:
            raise UnsupportedModelError(
                f"AttentionCapture supports {', '.join(SUPPORTED_MODELS)} (bare or wrapped by peft), "
                f"but got {found}"
                + (f" (wrapped in {type(model).__name__})" if top is not model else "")
                + ". Pass a model of one of these families."
            )
        text_config = getattr(getattr(top, "config", None), "text_config", None)
        if getattr(text_config, "use_bidirectional_attention", False):
            raise UnsupportedModelError(
                f"{found} has text_config.use_bidirectional_attention=True (text tokens attend to later "
                "tokens); AttentionCapture supports causal language models only."
            )
        decoder = _decoder_layers(top)
        if decoder is None:
            raise UnsupportedModelError(
                f"AttentionCapture could not find the language model's decoder layers in {found} "
                "(looked for model.language_model.layers and language_model.model.layers)."
            )
        n = len(decoder)
        given = [layers] if isinstance(layers, int) else list(layers)
        if not given:
            raise ShapeError("Expected at least one layer index in layers, but got none.")
        self._modules: dict[int, nn.Module] = {}
        self._parameter_names: dict[int, tuple[str, ...]] = {}
        seen: dict[int, int] = {}
        for key in given:
            if isinstance(key, bool) or not isinstance(key, int):
                raise WrongTypeError(f"Expected integer layer indices, but got {key!r}.")
            if not -n <= key < n:
                raise ShapeError(
                    f"Expected layer indices in [-{n}, {n - 1}] (the language model has {n} decoder layers), "
                    f"but got {key}."
                )
            idx = key % n
            if idx in seen:
                raise ShapeError(f"Layers {seen[idx]} and {key} name the same decoder layer {idx}; pass it once.")
            seen[idx] = key
            attn = getattr(decoder[idx], "self_attn", None)
            kind = type(attn).__name__
            if attn is None or kind not in SUPPORTED_ATTENTION:
                raise UnsupportedModelError(
                    f"AttentionCapture supports language models with {', '.join(SUPPORTED_ATTENTION)}, but "
                    f"decoder layer {idx} of {found} has {kind if attn is not None else 'no self_attn module'}."
                )
            for attr in ("q_proj", "k_proj", "head_dim", "scaling"):
                if not hasattr(attn, attr):
                    raise UnsupportedModelError(f"{kind} in decoder layer {idx} has no {attr!r}; cannot recompute rows.")
            self._modules[key] = attn
            self._parameter_names[key] = tuple(inspect.signature(attn.forward).parameters)
        if image_token_id is None:
            config = getattr(top, "config", None)
            image_token_id = getattr(config, "image_token_id", None)
            if image_token_id is None:
                image_token_id = getattr(config, "image_token_index", None)
            if image_token_id is None:
                raise UnsupportedModelError(
                    f"{found}.config has no image_token_id / image_token_index; pass image_token_id=..."
                )
        self.image_token_id = int(image_token_id)
        self.layers: tuple[int, ...] = tuple(given)
        self.dtype = dtype
        self._top = top
        self._sequence_mask: torch.Tensor | None = None
        if query_mask is not None:
            self.set_query_mask(query_mask)
        self._handles: list[Any] = []
        self._collecting = False
        self._grad_enabled = False
        self._positions: _Positions | None = None
        self._stash: dict[int, dict[str, torch.Tensor]] = {}
        self._warned = False
        self.attentions: dict[int, torch.Tensor] = {}
        self.query_mask: torch.Tensor | None = None
        self.query_positions: torch.Tensor | None = None
        self.key_mask: torch.Tensor | None = None
        self.image_positions: torch.Tensor | None = None

    # -- public API ---------------------------------------------------------------------------
    def set_query_mask(self, query_mask: torch.Tensor) -> None:
        """Set which sequence positions are supervised queries for the next forward passes.

        Args:
            query_mask: ``[B, L]`` bool (or 0/1) tensor over ``input_ids``.

        Raises:
            WrongTypeError: When it is not a tensor.
            ShapeError: When it is not two-dimensional.
        """
        if not isinstance(query_mask, torch.Tensor):
            raise WrongTypeError(f"Expected query_mask to be a torch.Tensor, but got {type(query_mask).__name__}.")
        if query_mask.ndim != 2:
            raise ShapeError(f"Expected query_mask of shape [B, L] like input_ids, but got {tuple(query_mask.shape)}.")
        self._sequence_mask = query_mask.bool()

    def __enter__(self) -> AttentionCapture:
        if self._handles:
            raise RuntimeError("This AttentionCapture is already active; do not nest it in itself.")
        try:
            self._handles.append(self._top.register_forward_pre_hook(self._top_pre_hook, with_kwargs=True))
            self._handles.append(self._top.register_forward_hook(self._top_post_hook))
            for key, module in self._modules.items():
                self._handles.append(module.register_forward_pre_hook(self._layer_hook(key), with_kwargs=True))
                self._handles.append(module.q_proj.register_forward_hook(self._projection_hook(key, "q")))  # type: ignore[union-attr,operator]
                self._handles.append(module.k_proj.register_forward_hook(self._projection_hook(key, "k")))  # type: ignore[union-attr,operator]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook and release the captured tensors (called on context exit)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._collecting = False
        self._stash.clear()
        self._positions = None
        self.attentions = {}
        self.query_mask = None
        self.query_positions = None
        self.key_mask = None
        self.image_positions = None

    # -- hooks ----------------------------------------------------------------------------------
    def _top_pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Release the previous pass's tensors before this pass allocates new ones.
        self.attentions = {}
        self._stash.clear()
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(input_ids, torch.Tensor):
            raise DataFormatError(
                "AttentionCapture needs the model to be called with input_ids (it finds the image tokens "
                "and the supervised positions there), but got none (inputs_embeds only?)."
            )
        mask = self._sequence_mask
        if mask is None:
            raise DataFormatError(
                "AttentionCapture has no query mask: pass query_mask=[B, L] to the constructor or call "
                "capture.set_query_mask(mask) before the forward pass."
            )
        if tuple(mask.shape) != tuple(input_ids.shape):
            raise ShapeError(
                f"Expected query_mask of shape {tuple(input_ids.shape)} like input_ids, but got "
                f"{tuple(mask.shape)}. Call capture.set_query_mask(mask) for each batch."
            )
        device = input_ids.device
        mask = mask.to(device)
        is_image = input_ids == self.image_token_id
        counts = is_image.sum(-1)
        b, length = input_ids.shape
        # Image tokens left-aligned and padded to the most of any sample (padding: position 0, masked).
        p = int(counts.max()) if b else 0
        arange = torch.arange(length, device=device)
        order = torch.sort(is_image.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :p]
        key_valid = arange[:p][None, :] < counts[:, None]
        image = torch.where(key_valid, order, 0)
        attention_mask = kwargs.get("attention_mask")
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            key_valid = key_valid & attention_mask.to(device).bool().gather(1, image)
        # Supervised queries, left-aligned and padded to the longest; a query that sees no
        # (unpadded) image token, because every image token comes after it, is dropped.
        first_visible = torch.where(key_valid, image, length).amin(-1) if p else torch.full((b,), length, device=device)
        sel = mask & ~is_image & (arange[None, :] >= first_visible[:, None])
        n_q = sel.sum(-1)
        q = int(n_q.max()) if b else 0
        order = torch.sort(sel.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :q]
        query_mask = arange[:q][None, :] < n_q[:, None]
        query = torch.where(query_mask, order, 0)
        self._positions = _Positions(query, query_mask, image, key_valid, length)
        self.query_mask = query_mask
        self.query_positions = query
        self.key_mask = key_valid
        self.image_positions = image
        self._grad_enabled = torch.is_grad_enabled()
        self._collecting = True

    def _layer_hook(self, key: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not self._collecting:  # e.g. a checkpointed layer re-run during backward
                return
            named = dict(zip(self._parameter_names[key], args, strict=False))
            named.update(kwargs)
            hidden, rotary = named.get("hidden_states"), named.get("position_embeddings")
            if not isinstance(hidden, torch.Tensor) or rotary is None:
                raise UnsupportedModelError(
                    f"{type(module).__name__} was called without hidden_states/position_embeddings; "
                    "AttentionCapture needs transformers >= 5 (rotary embeddings passed to attention)."
                )
            cos, sin = rotary
            self._stash[key] = {"cos": cos, "sin": sin}

        return hook

    def _projection_hook(self, key: int, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._collecting and key in self._stash and isinstance(output, torch.Tensor):
                self._stash[key][name] = output  # a reference only: no op inside the layer

        return hook

    def _top_post_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self._collecting:
            return
        self._collecting = False
        positions = self._positions
        stash, self._stash = self._stash, {}
        if positions is None:
            return
        missing = [key for key in self.layers if not {"q", "k", "cos"} <= set(stash.get(key, {}))]
        if missing:
            raise UnsupportedModelError(
                f"Decoder layers {missing} did not run their attention during the forward pass; "
                "AttentionCapture cannot capture them."
            )
        with torch.set_grad_enabled(self._grad_enabled):
            for key in self.layers:
                self._check_gradient(key, stash[key]["k"])
            parts = [(self._modules[key], stash.pop(key)) for key in self.layers]
            rows = _attention_rows(parts, positions, self.dtype)
        self.attentions = dict(zip(self.layers, rows, strict=True))

    def _check_gradient(self, key: int, keys: torch.Tensor) -> None:
        if self._warned or not self._grad_enabled or keys.requires_grad:
            return
        if any(p.requires_grad for p in self._top.parameters()):
            self._warned = True
            warnings.warn(
                f"Decoder layer {key}'s keys carry no gradient although the model is trainable, so the "
                "captured attention has no gradient. Reentrant gradient checkpointing does this: use "
                "model.activation_checkpointing_enable(activation_checkpointing_kwargs={'use_reentrant': False}) "
                "(gradient_checkpointing_enable on transformers before 5.2x).",
                MedcurricWarning,
                stacklevel=2,
            )


class _MaskedSoftmax(torch.autograd.Function):
    """Softmax of ``scores * scale`` over the allowed keys, rows without an allowed key set to 0.

    The scaling is done in the scores' dtype and the softmax in fp32, as eager attention
    does; only the output is saved for backward.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        scores: torch.Tensor, scale: float, allowed: torch.Tensor, row_ok: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        x = (scores * scale).float().masked_fill_(~allowed, torch.finfo(torch.float32).min)
        probs = torch.softmax(x, dim=-1)
        del x
        probs.mul_(row_ok)
        return probs.to(dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)
        ctx.scores_dtype = inputs[0].dtype
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (probs,) = ctx.saved_tensors
        p = probs.float()
        # p * (g - sum(g * p)), into a new tensor: autograd's grad may be shared or expanded
        g = grad.float() * p
        g.addcmul_(p, g.sum(-1, keepdim=True), value=-1.0)
        return g.to(ctx.scores_dtype).mul_(ctx.scale), None, None, None, None


def _rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` with ``signed_sin = cat(-sin[:half], sin[half:])``."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def _attention_rows(
    layers: list[tuple[nn.Module, dict[str, torch.Tensor]]],
    positions: _Positions,
    dtype: torch.dtype,
) -> list[torch.Tensor]:
    """Softmax over the image keys of ``q_t . k_p * scaling`` for the supervised queries ``t``.

    One ``[B, H, Q, P]`` tensor per ``(attention module, {q, k, cos, sin})`` of ``layers``,
    computed layer by layer (so that only one layer's temporaries exist at a time). The
    rotary rows are gathered once per rotary tensor the layers received, and the masks
    built once per sliding window, so the fixed cost per layer is small.
    """
    qpos, ipos = positions.query, positions.image
    b, n_q, n_p = qpos.shape[0], qpos.shape[1], ipos.shape[1]
    allowed_base = (ipos[:, None, :] <= qpos[:, :, None]) & positions.image_valid[:, None, :]
    allowed_base = allowed_base & positions.query_mask[:, :, None]
    both = torch.cat((qpos, ipos), dim=1)
    rotaries: dict[tuple[int, int, torch.dtype], tuple[torch.Tensor, ...]] = {}
    masks: dict[int | None, tuple[torch.Tensor, torch.Tensor]] = {}
    out = []
    for module, parts in layers:
        q_out, k_out = parts["q"], parts["k"]
        length = q_out.shape[1]
        if length != positions.seq_len or k_out.shape[1] != length:
            raise ShapeError(
                f"The attention input has {length} positions but input_ids had {positions.seq_len}; "
                "AttentionCapture does not support a KV cache or sequence packing."
            )
        head_dim = int(module.head_dim)  # type: ignore[arg-type]
        if n_q == 0 or n_p == 0:  # no supervised token (an Easy batch) or no image: nothing to attend
            out.append(q_out.new_zeros((b, q_out.shape[-1] // head_dim, n_q, n_p), dtype=dtype))
            continue
        q = _gather_rows(q_out, qpos).view(b, n_q, -1, head_dim)
        k = _gather_rows(k_out, ipos).view(b, n_p, -1, head_dim)
        q_norm, k_norm = getattr(module, "q_norm", None), getattr(module, "k_norm", None)
        if q_norm is not None and k_norm is not None:
            q, k = q_norm(q), k_norm(k)
        cos, sin = parts["cos"], parts["sin"]
        key = (id(cos), id(sin), q.dtype)
        if key not in rotaries:  # the rows of the queries and the image keys, [B, Q or P, 1, hd]
            cos = _gather_rows(cos.expand(b, -1, -1), both)[:, :, None].to(q.dtype)
            sin = _gather_rows(sin.expand(b, -1, -1), both)[:, :, None].to(q.dtype)
            half = head_dim // 2
            sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
            rotaries[key] = (cos[:, :n_q], sin[:, :n_q], cos[:, n_q:], sin[:, n_q:])
        cos_q, sin_q, cos_k, sin_k = rotaries[key]
        q = _rotary(q, cos_q, sin_q)
        k = _rotary(k, cos_k.to(k.dtype), sin_k.to(k.dtype))
        heads, kv_heads = q.shape[2], k.shape[2]
        # Query head h uses key head h // rep (transformers' repeat_kv), without expanding k.
        q = q.transpose(1, 2).reshape(b, kv_heads, heads // kv_heads * n_q, head_dim)
        scores = torch.matmul(q, k.permute(0, 2, 3, 1)).view(b, heads, n_q, n_p)
        window = getattr(module, "sliding_window", None)
        if window is None and type(module).__name__ == "MistralAttention":
            window = getattr(getattr(module, "config", None), "sliding_window", None)
        window = None if window is None else int(window)
        if window not in masks:
            allowed = allowed_base
            if window is not None:
                allowed = allowed & (qpos[:, :, None] - ipos[:, None, :] < window)
            masks[window] = (allowed[:, None], allowed.any(-1)[:, None, :, None])
        allowed, row_ok = masks[window]
        out.append(_MaskedSoftmax.apply(scores, float(module.scaling), allowed, row_ok, dtype))  # type: ignore[arg-type]
    return out
