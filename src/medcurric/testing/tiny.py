"""Tiny random-initialised vision-language models, built offline for tests, demos and smoke runs.

Nothing is downloaded: the vision tower, the language model and the tokenizer
are built from config objects and a small in-memory corpus. The models have the
real transformers architectures (``VipLlavaForConditionalGeneration`` or
``LlavaForConditionalGeneration`` with a Llama language model), so every
component that works on them works on the real checkpoints.

Examples:
    >>> from medcurric.testing.tiny import build_tiny_vlm
    >>> vlm = build_tiny_vlm(seed=0)
    >>> vlm.grid, vlm.num_image_tokens
    ((6, 6), 36)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medcurric._optional import require

__all__ = ["TINY_CORPUS", "TinyVLM", "build_tiny_processor", "build_tiny_tokenizer", "build_tiny_vlm"]

#: Text the tiny tokenizer is trained on (medical words, so merges are meaningful).
TINY_CORPUS: tuple[str, ...] = (
    "###Human: <image>\nWhat is the abnormality within the red rectangle?###Assistant:",
    "Reasoning: The box at [0.1250, 0.2500, 0.3750, 0.5000] lies in the liver. "
    "A hypodense lesion is seen in the right posterior part of the liver.\n\nAnswer: liver lesion",
    "Answer: yes",
    "Answer: no",
    "Is there a nodule in the left upper lobe of the lung? The lung shows a nodule.",
    "Which organ contains the lesion? The kidney, spleen, pancreas, aorta and vertebra are normal.",
    "bone abdomen mediastinum liver lung kidney soft tissue pelvis lesion mass cyst nodule",
    "right left upper lower anterior posterior medial lateral part of the adjacent to uncertain",
    "0 1 2 3 4 5 6 7 8 9 . , [ ] ( ) : ? mm cm",
)

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}###Human: "
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}"
    "{% elif message['role'] == 'assistant' %}###Assistant: "
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}###Assistant:{% endif %}"
)


@dataclass
class TinyVLM:
    """A tiny model with its processor and tokenizer.

    Attributes:
        model: ``VipLlavaForConditionalGeneration`` or ``LlavaForConditionalGeneration``.
        processor: A ``LlavaProcessor`` that expands ``<image>`` into ``num_image_tokens`` tokens.
        tokenizer: The fast tokenizer (also ``processor.tokenizer``).
        image_size: Side of the square model input in pixels.
        patch_size: Side of a vision patch in pixels.
    """

    model: Any
    processor: Any
    tokenizer: Any
    image_size: int
    patch_size: int

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the patch grid: the image tokens in row-major order."""
        n = self.image_size // self.patch_size
        return (n, n)

    @property
    def num_image_tokens(self) -> int:
        """How many ``<image>`` tokens one image expands to."""
        rows, cols = self.grid
        return rows * cols

    @property
    def image_token_id(self) -> int:
        """Id of the ``<image>`` token."""
        return int(self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def _train_tiny_bpe(specials: list[str], vocab_size: int, *, unk_token: str | None = None) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on :data:`TINY_CORPUS`.

    Args:
        specials: Special tokens, given the first ids in this order.
        vocab_size: Target vocabulary size (special tokens included).
        unk_token: The BPE model's unknown token, if any.

    Returns:
        The trained tokenizer (wrap it in ``PreTrainedTokenizerFast``).
    """
    tokenizers = require("tokenizers", feature="build_tiny_tokenizer")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(TINY_CORPUS), trainer=trainer)
    return tok


def build_tiny_tokenizer(vocab_size: int = 384) -> Any:
    """Train a byte-level BPE tokenizer on :data:`TINY_CORPUS` and wrap it for transformers.

    Args:
        vocab_size: Target vocabulary size (special tokens included).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<image>``, ``<pad>``, ``<s>``, ``</s>``, ``<unk>``.
    """
    transformers = require("transformers", feature="build_tiny_tokenizer")
    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN]
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_train_tiny_bpe(specials, vocab_size, unk_token=UNK_TOKEN),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    fast.padding_side = "right"
    return fast


def _image_processor(image_size: int) -> Any:
    transformers = require("transformers", feature="build_tiny_processor")
    kwargs: dict[str, Any] = {
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_resize": True,
        "do_convert_rgb": True,
    }
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(**kwargs)


def build_tiny_processor(image_size: int = 48, patch_size: int = 8, tokenizer: Any = None) -> Any:
    """Build a ``LlavaProcessor`` (PIL CLIP image processor + tiny tokenizer), offline.

    Args:
        image_size: Shortest-edge resize and centre-crop size in pixels.
        patch_size: Vision patch size; ``<image>`` expands to ``(image_size // patch_size) ** 2`` tokens.
        tokenizer: A tokenizer to reuse; built with :func:`build_tiny_tokenizer` when ``None``.

    Returns:
        The processor.
    """
    transformers = require("transformers", feature="build_tiny_processor")
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    return transformers.LlavaProcessor(
        image_processor=_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_vlm(
    arch: str = "vip_llava",
    *,
    image_size: int = 48,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    vision_layers: int = 2,
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> TinyVLM:
    """Build a tiny random-initialised VIP-LLaVA or LLaVA with a Llama language model.

    Args:
        arch: ``"vip_llava"`` or ``"llava"``.
        image_size: Model input size in pixels (square).
        patch_size: Vision patch size in pixels.
        hidden_size: Width of the language model (the vision tower uses the same).
        num_layers: Decoder layers of the language model.
        num_heads: Attention heads of the language model.
        num_kv_heads: Key/value heads (grouped-query attention when fewer than ``num_heads``).
        vision_layers: Transformer layers of the vision tower.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        seed: Seed of the random initialisation.

    Returns:
        A :class:`TinyVLM`.
    """
    torch = require("torch", feature="build_tiny_vlm")
    transformers = require("transformers", feature="build_tiny_vlm")
    tokenizer = build_tiny_tokenizer()
    processor = build_tiny_processor(image_size, patch_size, tokenizer)
    vision = transformers.CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden_size,
    )
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(seed)
    if arch == "vip_llava":
        layers = [-2, -1] if vision_layers >= 2 else [-1]
        config = transformers.VipLlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=image_token_id,
            vision_feature_layers=layers,
        )
        model = transformers.VipLlavaForConditionalGeneration(config)
    elif arch == "llava":
        config = transformers.LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=image_token_id,
            vision_feature_layer=-2 if vision_layers >= 2 else -1,
            vision_feature_select_strategy="default",
        )
        model = transformers.LlavaForConditionalGeneration(config)
    else:
        from medcurric.errors import InvalidOptionError

        raise InvalidOptionError(f"Expected arch 'vip_llava' or 'llava', but got {arch!r}.")
    model.config.pad_token_id = tokenizer.pad_token_id
    if hasattr(model, "generation_config") and model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.set_attn_implementation(attn_implementation) if hasattr(model, "set_attn_implementation") else None
    model.eval()
    return TinyVLM(model=model, processor=processor, tokenizer=tokenizer, image_size=image_size, patch_size=patch_size)
