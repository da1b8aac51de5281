"""Tiny processors of the vision-language families the curriculum supports, built offline.

Each one is the family's real ``transformers`` processor class around the real
(PIL-backend) image processor, constructed from keyword arguments at a small
size, and a byte-level BPE tokenizer trained on :data:`~medcurric.testing.tiny.TINY_CORPUS`
that carries the family's special tokens, EOS and a chat template of the
family's turn format. Nothing is downloaded, so the collation of every family
can be tested where the checkpoints are absent.

=====================  ===========================  ==================================================
Family                 Processor                    Image tokens (the tiny sizes)
=====================  ===========================  ==================================================
``"llava"``            ``LlavaProcessor``           ``<image>`` x 36 (48 px, 8 px patches)
``"qwen2_vl"``         ``Qwen2VLProcessor``         ``<|image_pad|>`` x (grid / 2) ** 2, 28 px each
``"qwen2_5_vl"``       ``Qwen2_5_VLProcessor``      as Qwen2-VL
``"qwen3_vl"``         ``Qwen3VLProcessor``         as Qwen2-VL with 16 px patches, 32 px each
``"gemma3"``           ``Gemma3Processor``          ``<start_of_image>`` + 16 soft tokens + ``<end_of_image>``
``"llava_onevision"``  ``LlavaOnevisionProcessor``  ``<image>`` x (4 base + anyres tiles + row newlines)
=====================  ===========================  ==================================================

Examples:
    >>> from medcurric.testing.processors import build_family_processor
    >>> proc = build_family_processor("qwen2_5_vl")
    >>> type(proc).__name__, proc.image_token
    ('Qwen2_5_VLProcessor', '<|image_pad|>')
"""

from __future__ import annotations

from typing import Any

from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option

__all__ = ["PROCESSOR_FAMILIES", "build_family_processor", "build_family_tokenizer"]


class _Family(StrEnum):
    """The families, as an option (misspellings get a "did you mean")."""

    GEMMA3 = "gemma3"
    LLAVA = "llava"
    LLAVA_ONEVISION = "llava_onevision"
    QWEN2_5_VL = "qwen2_5_vl"
    QWEN2_VL = "qwen2_vl"
    QWEN3_VL = "qwen3_vl"


#: The families :func:`build_family_processor` builds.
PROCESSOR_FAMILIES: tuple[str, ...] = tuple(f.value for f in _Family)

# Chat templates written for the tiny tokenizers: each family's turn markers and
# image placeholder, one user turn with one image, then the assistant's turn.
_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_ONEVISION_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_QWEN_SPECIALS = {
    "pad": "<|endoftext|>",
    "eos": "<|im_end|>",
    "extra": {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
    },
    "other": ["<|im_start|>"],
    "template": _QWEN_TEMPLATE,
}

# pad, eos, bos, named extra special tokens, other special tokens, chat template.
_TOKENS: dict[str, dict[str, Any]] = {
    "qwen2_vl": _QWEN_SPECIALS,
    "qwen2_5_vl": _QWEN_SPECIALS,
    "qwen3_vl": _QWEN_SPECIALS,
    "gemma3": {
        "pad": "<pad>",
        "eos": "<eos>",
        "bos": "<bos>",
        "extra": {
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
        "other": ["<start_of_turn>", "<end_of_turn>"],
        "template": _GEMMA_TEMPLATE,
    },
    "llava_onevision": {
        "pad": "<|endoftext|>",
        "eos": "<|im_end|>",
        "extra": {"image_token": "<image>", "video_token": "<video>"},
        "other": ["<|im_start|>"],
        "template": _ONEVISION_TEMPLATE,
    },
}


def _without_video(cls: Any) -> Any:
    """``cls`` accepting ``video_processor=None``: its video processors need torchvision.

    ``ProcessorMixin`` checks every sub-processor's class, ``None`` included, and the
    video base class cannot be looked up without torchvision; everything else
    (text expansion, image processing, chat template) is the real class's.
    """

    def check_argument_for_proper_class(self: Any, argument_name: str, argument: Any) -> Any:
        if argument_name == "video_processor" and argument is None:
            return None
        return cls.check_argument_for_proper_class(self, argument_name, argument)

    return type(cls.__name__, (cls,), {"check_argument_for_proper_class": check_argument_for_proper_class})


def _check_family(family: str) -> str:
    return look_up_option(family, _Family, name="family").value


def build_family_tokenizer(family: str, vocab_size: int = 384) -> Any:
    """A tiny fast tokenizer with the special tokens and chat template of ``family``.

    Args:
        family: One of :data:`PROCESSOR_FAMILIES`; ``"llava"`` gives
            :func:`~medcurric.testing.tiny.build_tiny_tokenizer` with its chat template.
        vocab_size: Target vocabulary size (special tokens included).

    Returns:
        A ``PreTrainedTokenizerFast`` (right padding) whose ``chat_template`` is set.

    Raises:
        InvalidOptionError: An unknown family.
    """
    family = _check_family(family)
    if family == "llava":
        from medcurric.testing.tiny import CHAT_TEMPLATE, build_tiny_tokenizer

        tok = build_tiny_tokenizer(vocab_size)
        tok.chat_template = CHAT_TEMPLATE
        return tok
    transformers = require("transformers", feature="build_family_tokenizer")
    from medcurric.testing.tiny import _train_tiny_bpe

    spec = _TOKENS[family]
    named = [spec["pad"], spec["eos"]] + ([spec["bos"]] if "bos" in spec else [])
    specials = list(dict.fromkeys(named + list(spec["extra"].values()) + spec["other"]))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_train_tiny_bpe(specials, vocab_size),
        pad_token=spec["pad"],
        eos_token=spec["eos"],
        bos_token=spec.get("bos"),
        extra_special_tokens=dict(spec["extra"]),
    )
    fast.padding_side = "right"
    fast.chat_template = spec["template"]
    return fast


def build_family_processor(family: str, tokenizer: Any = None) -> Any:
    """The tiny processor of a model family: its real processor class, offline.

    Image processors are the PIL-backend classes at small sizes, normalisation on
    (as the checkpoints ship them):

    * Qwen2-VL / Qwen2.5-VL: 14 px patches merged 2 x 2 (28 px tokens), between 4
      and 64 tokens per image (``size={"shortest_edge": 28 * 28 * 4, "longest_edge":
      28 * 28 * 64}``); Qwen3-VL the same with 16 px patches (32 px tokens);
    * Gemma 3: resize to 64 x 64, 16 image tokens (``image_seq_length=16``, 4 x 4 of
      16 px), no pan-and-scan;
    * LLaVA-OneVision: 28 px base view and tiles (2 x 2 tokens of 14 px each,
      ``num_image_tokens=4``), pinpoints up to 56 x 56;
    * LLaVA: :func:`~medcurric.testing.tiny.build_tiny_processor` (48 px, 36 tokens).

    The Qwen and LLaVA-OneVision processors are made by a subclass of the real class
    (same name) that accepts ``video_processor=None``, as their video processors need
    torchvision; being defined at call time, that subclass does not pickle.

    Args:
        family: One of :data:`PROCESSOR_FAMILIES`.
        tokenizer: A tokenizer to reuse; :func:`build_family_tokenizer` when ``None``.

    Returns:
        The processor, with the family's chat template.

    Raises:
        InvalidOptionError: An unknown family.
    """
    family = _check_family(family)
    transformers = require("transformers", feature="build_family_processor")
    tok = tokenizer if tokenizer is not None else build_family_tokenizer(family)
    template = tok.chat_template
    if family == "llava":
        from medcurric.testing.tiny import build_tiny_processor

        return build_tiny_processor(tokenizer=tok)
    if family.startswith("qwen"):
        patch = 16 if family == "qwen3_vl" else 14
        token = patch * 2
        image_processor = transformers.Qwen2VLImageProcessorPil(
            patch_size=patch,
            merge_size=2,
            temporal_patch_size=2,
            size={"shortest_edge": token * token * 4, "longest_edge": token * token * 64},
        )
        cls = {
            "qwen2_vl": transformers.Qwen2VLProcessor,
            "qwen2_5_vl": transformers.Qwen2_5_VLProcessor,
            "qwen3_vl": transformers.Qwen3VLProcessor,
        }[family]
        return _without_video(cls)(image_processor=image_processor, tokenizer=tok, chat_template=template)
    if family == "gemma3":
        image_processor = transformers.Gemma3ImageProcessorPil(
            size={"height": 64, "width": 64}, do_pan_and_scan=False
        )
        return transformers.Gemma3Processor(
            image_processor=image_processor, tokenizer=tok, chat_template=template, image_seq_length=16
        )
    image_processor = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": 28, "width": 28},
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]],
    )
    return _without_video(transformers.LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=template,
        num_image_tokens=4,
        # As the checkpoints: every patch is a token ("default" would drop one).
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
