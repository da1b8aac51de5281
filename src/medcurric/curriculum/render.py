r"""Turn one :class:`~medcurric.cot.records.CoTSample` into the model input of a stage.

=========  ===============================  ==========================================  ================================
Stage      Image                            Prompt                                      Target
=========  ===============================  ==========================================  ================================
EASY       box drawn (``StageOverlay``)     question + overlay phrase + box ``[x1, y1,  ``Reasoning: {cot}\n\nAnswer: {answer}``
                                            x2, y2]`` normalised, 4 decimals
MEDIUM     clean                            question (about the whole image)            ``Reasoning: {cot}\n\nAnswer: {answer}``
                                                                                        + patch-grid attention target ``[P]``
HARD       clean                            question                                    ``Answer: {answer}``
=========  ===============================  ==========================================  ================================

The prompt is wrapped in VIP-LLaVA's template ``"###Human: <image>\n{question}###Assistant:"``;
for other model families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, LLaVA-OneVision)
:func:`chat_prompt_template` turns the processor's own chat template into the
``prompt_template`` to pass (the :class:`~medcurric.curriculum.CurriculumCollator`
does so itself for raw samples).
Text from the sample is data: it is inserted by plain substitution of the known
``{question}`` / ``{phrase}`` / ``{box}`` fields, never used as a format string,
and image paths are resolved inside ``image_root`` only. Images go through
:func:`medcurric.io.load_rgb` with the sample's window, the pixels the generation
backends send. :func:`render` returns a :class:`RenderedSample`.

Two switches reproduce the authors' stages where this library deviates (see
:doc:`/faithfulness`): ``easy_prompt_box="none"`` leaves the Easy question as it
is (the authors' collator adds nothing; the model must read the box from the
drawing), and ``hard_image=`` shows a Hard sample with another image of the same
domain (the authors' ``image_path3``), chosen by :func:`pair_hard_images`; that
needs Hard pairs without location (``CoTGenerator(hard_asks_location=False)``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from medcurric._options import StrEnum, look_up_option, warn_ignored
from medcurric._paths import safe_join
from medcurric.cot.records import CoTSample
from medcurric.errors import (
    DataFormatError,
    InvalidBoxError,
    MissingFileError,
    UnsupportedModelError,
    WrongTypeError,
)
from medcurric.io import load_rgb
from medcurric.stage import Stage
from medcurric.templating import fill_template

__all__ = [
    "EASY_PROMPT",
    "EASY_PROMPT_PHRASE",
    "PROMPT_TEMPLATE",
    "EasyPromptBox",
    "RenderedSample",
    "chat_prompt_template",
    "format_box",
    "pair_hard_images",
    "render",
    "substitute",
]

#: VIP-LLaVA's conversation template; ``{question}`` is replaced by the stage's question.
PROMPT_TEMPLATE = "###Human: <image>\n{question}###Assistant:"

#: How an Easy question cites the drawn box: ``{question}``, ``{phrase}`` (from the
#: overlay, e.g. "within the red rectangle") and ``{box}`` (normalised, 4 decimals).
EASY_PROMPT = "{question}\nThe region of interest is {phrase}, at box {box}."

#: The Easy question naming the drawn shape without its coordinates (``easy_prompt_box="phrase"``).
EASY_PROMPT_PHRASE = "{question}\nThe region of interest is {phrase}."


class EasyPromptBox(StrEnum):
    """What the Easy prompt adds to the question.

    * ``APPEND`` (default): the overlay phrase and the box coordinates (:data:`EASY_PROMPT`),
      so the rationale's citation of the box can be read off the prompt.
    * ``PHRASE``: the overlay phrase only (:data:`EASY_PROMPT_PHRASE`).
    * ``NONE``: nothing, as in the authors' collator: the question alone, the box only drawn.
    """

    APPEND = "append"
    PHRASE = "phrase"
    NONE = "none"


@dataclass(frozen=True, eq=False)
class RenderedSample:
    r"""One sample as the model sees it at one stage: what :func:`render` returns.

    Attributes:
        id: The sample's id.
        stage: The stage it was rendered for.
        image: The RGB image (PIL), with the box drawn for Easy.
        prompt: The templated prompt (``"###Human: <image>\n...###Assistant:"``).
        target: The text to learn: ``"Reasoning: ...\n\nAnswer: ..."`` or ``"Answer: ..."`` (Hard).
        answer: The answer text.
        question: The question after the Easy citation of the box.
        rationale: The rationale, ``None`` for Hard.
        rationale_span: ``(start, end)`` characters of the rationale in ``target``; ``None`` for Hard.
        answer_span: ``(start, end)`` characters of the answer in ``target``.
        box_norm: The box normalised to ``[0, 1]`` (Easy, Medium), else ``None``.
        phrase: How the Easy prompt names the drawn shape ("within the red rectangle"), else ``None``.
        attention_target: Medium: float32 ``[P]`` summing to 1 (``P = rows * cols``,
            row-major); ``None`` otherwise or when the box was cropped away.
    """

    id: str
    stage: Stage
    image: Any
    prompt: str
    target: str
    answer: str = ""
    question: str = ""
    rationale: str | None = None
    rationale_span: tuple[int, int] | None = None
    answer_span: tuple[int, int] | None = None
    box_norm: tuple[float, ...] | None = None
    phrase: str | None = None
    attention_target: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (shallow: the image and target array are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def format_box(box: Any) -> str:
    """Format a normalised box as ``[x1, y1, x2, y2]`` with 4 decimals.

    Args:
        box: Four numbers in ``[0, 1]``.

    Returns:
        The text cited in Easy prompts.

    Raises:
        InvalidBoxError: When the box does not have four finite numbers.

    Examples:
        >>> format_box((0.125, 0.25, 0.375, 0.5))
        '[0.1250, 0.2500, 0.3750, 0.5000]'
    """
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if arr.shape != (4,) or not np.isfinite(arr).all():
        raise InvalidBoxError(f"Expected a normalised box of four finite numbers, but got {box!r}.")
    return "[" + ", ".join(f"{v:.4f}" for v in arr) + "]"


# Stands for the question while the chat template is rendered; never in real text.
_QUESTION_SLOT = "\x00medcurric-question\x00"


def chat_prompt_template(processor: Any) -> str:
    r"""The ``prompt_template`` of :func:`render` for a processor, from its chat template.

    The processor's chat template is rendered for one user turn holding one image
    and the question, with the generation prompt (the start of the assistant's
    turn); the question becomes the ``{question}`` field and braces of the template
    are escaped. A leading BOS written by the template is dropped when the
    tokenizer adds one itself, so the sequence holds one BOS.

    Args:
        processor: A ``transformers`` processor with a chat template (``Qwen2_5_VLProcessor``,
            ``Gemma3Processor``, ``LlavaOnevisionProcessor``, ...).

    Returns:
        The template, e.g. ``"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "{question}<|im_end|>\n<|im_start|>assistant\n"`` for Qwen2.5-VL.

    Raises:
        UnsupportedModelError: The processor has no chat template, or its template does
            not render the question exactly once.

    Examples:
        >>> from medcurric.testing import build_family_processor
        >>> chat_prompt_template(build_family_processor("gemma3"))
        '<bos><start_of_turn>user\n<start_of_image>{question}<end_of_turn>\n<start_of_turn>model\n'
    """
    apply = getattr(processor, "apply_chat_template", None)
    tokenizer = getattr(processor, "tokenizer", None)
    template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    if apply is None or not template:
        raise UnsupportedModelError(
            f"Expected a processor with a chat template, but {type(processor).__name__} has none; "
            "pass prompt_template= with the model's prompt and its image placeholder instead."
        )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": _QUESTION_SLOT}]}]
    text = apply(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str) or text.count(_QUESTION_SLOT) != 1:
        raise UnsupportedModelError(
            f"Expected {type(processor).__name__}'s chat template to write the question once, but it "
            "did not; pass prompt_template= instead."
        )
    bos = getattr(tokenizer, "bos_token", None)
    if tokenizer is not None and bos and text.startswith(bos):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            text = text[len(bos) :]
    head, tail = (part.replace("{", "{{").replace("}", "}}") for part in text.split(_QUESTION_SLOT))
    return head + "{question}" + tail


def substitute(template: str, fields: Mapping[str, str]) -> str:
    """Fill a trusted prompt template with untrusted text: :func:`medcurric.templating.fill_template`.

    Braces inside the values are never interpreted, so a value that contains ``{box}``
    stays as it is; ``{{`` / ``}}`` in the template write literal braces.

    Raises:
        TemplateError: When the template is malformed or names a field that ``fields`` lacks.

    Examples:
        >>> substitute("Q: {question} {box}", {"question": "is {box} here?", "box": "[0]"})
        'Q: is {box} here? [0]'
    """
    return fill_template(template, fields)


def _as_sample(sample: Any) -> CoTSample:
    if isinstance(sample, CoTSample):
        return sample
    if isinstance(sample, Mapping):
        return CoTSample.from_dict(dict(sample))
    raise WrongTypeError(
        f"Expected a CoTSample (or its dict form), but got {type(sample).__name__}."
    )


def _load_image(sample: CoTSample, image: Any, image_root: str | os.PathLike[str] | None) -> Any:
    """The sample's image as PIL RGB, through :func:`medcurric.io.load_rgb` and the sample's window."""
    from PIL import Image

    if image is None:
        if image_root is None:
            raise MissingFileError(
                f"Sample {sample.id!r} refers to image {sample.image!r}, but no image_root was given; "
                "pass image_root= (the folder the sample's image paths are relative to) or image=."
            )
        path = safe_join(image_root, sample.image)
        if not path.is_file():
            raise MissingFileError(
                f"Image {sample.image!r} of sample {sample.id!r} not found under {os.fspath(image_root)!r}."
            )
        image = path
    elif not isinstance(image, (np.ndarray, Image.Image)):
        raise WrongTypeError(f"Expected a PIL image or a numpy array, but got {type(image).__name__}.")
    return Image.fromarray(load_rgb(image, window=sample.window))


def _pixel_box(sample: CoTSample, width: int, height: int) -> np.ndarray | None:
    if sample.box is not None:
        box = np.asarray(sample.box, dtype=np.float64).reshape(-1)
        if box.shape != (4,):
            raise InvalidBoxError(
                f"Expected sample.box as (x1, y1, x2, y2) pixels, but sample {sample.id!r} has {sample.box!r}."
            )
        return box
    if sample.box_norm is not None:
        box = np.asarray(sample.box_norm, dtype=np.float64).reshape(-1)
        return box * np.array([width, height, width, height], dtype=np.float64)
    return None


def _norm_box(sample: CoTSample, pixel_box: np.ndarray | None, width: int, height: int) -> np.ndarray:
    if sample.box_norm is not None:
        return np.asarray(sample.box_norm, dtype=np.float64).reshape(-1)
    if pixel_box is None:
        raise DataFormatError(
            f"Sample {sample.id!r} has neither box nor box_norm; an Easy or Medium rendering needs the box."
        )
    w, h = sample.image_size if sample.image_size is not None else (width, height)
    return np.clip(pixel_box / np.array([w, h, w, h], dtype=np.float64), 0.0, 1.0)


def _reasoning_target(rationale: str, answer: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
    head = "Reasoning: "
    mid = "\n\nAnswer: "
    target = head + rationale + mid + answer
    r0 = len(head)
    a0 = r0 + len(rationale) + len(mid)
    return target, (r0, r0 + len(rationale)), (a0, a0 + len(answer))


def _attention_target(
    pixel_box: np.ndarray, preprocess: Any, image_hw: tuple[int, int], grid: tuple[int, int], smoothing: Any
) -> np.ndarray:
    from medcurric.geometry import box_to_patch_distribution, map_boxes

    mapped = map_boxes(pixel_box[None], preprocess, image_hw)
    dist = box_to_patch_distribution(mapped.boxes, grid, input_size=mapped.image_size, smoothing=smoothing)
    return np.asarray(dist, dtype=np.float32).reshape(-1)


def _overlay_key(sample: CoTSample, rng: Any) -> int:
    """Per-sample key for reproducible random overlay styles."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return int(rng)
    if rng is not None and hasattr(rng, "integers"):
        return int(rng.integers(0, 2**31 - 1))
    if rng is not None and hasattr(rng, "randrange"):
        return int(rng.randrange(0, 2**31 - 1))
    digest = hashlib.sha256(sample.id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def render(
    sample: CoTSample | Mapping[str, Any],
    stage: Stage | str,
    *,
    overlay: Any = None,
    preprocess: Any = None,
    rng: Any = None,
    image_root: str | os.PathLike[str] | None = None,
    image: Any = None,
    grid: tuple[int, int] = (24, 24),
    prompt_template: str = PROMPT_TEMPLATE,
    easy_prompt: str = EASY_PROMPT,
    smoothing: Any = None,
    easy_prompt_box: EasyPromptBox | str = EasyPromptBox.APPEND,
    hard_image: Any = None,
) -> RenderedSample:
    r"""Render a sample for a stage.

    Args:
        sample: The sample (or its dict form). Its ``stage`` field is not consulted:
            one sample can be rendered for any stage (a Hard rendering drops the rationale).
        stage: ``"easy"``, ``"medium"`` or ``"hard"``.
        overlay: A :class:`medcurric.overlay.StageOverlay` for Easy; a default one when ``None``.
        preprocess: A :class:`medcurric.geometry.Preprocess` describing the model's image
            processor, needed for the Medium attention target (e.g.
            ``Preprocess.from_processor(processor)``); VIP-LLaVA's CLIP default
            (shortest edge 336, crop 336) when ``None``.
        rng: Chooses the overlay's style key (random colours/shapes with
            ``StageOverlay("random")``): an int key, or a ``numpy.random.Generator`` /
            ``random.Random`` to draw one; ``None`` derives the key from ``sample.id``,
            so a sample always gets the same style.
        image_root: Folder that ``sample.image`` is relative to (untrusted paths stay inside).
        image: The image itself (PIL or numpy ``[H, W(, 3)]``) instead of loading ``sample.image``.
            Either way it goes through :func:`medcurric.io.load_rgb` with ``sample.window``
            (intensities are windowed, 8-bit pixels kept), as the generation backends send it.
        grid: ``(rows, cols)`` of the model's patch grid (VIP-LLaVA: 24 x 24).
        prompt_template: Conversation template with a ``{question}`` field and the model's
            image placeholder (:func:`chat_prompt_template` for other model families).
        easy_prompt: Easy question template with ``{question}``, ``{phrase}``, ``{box}``
            (used with ``easy_prompt_box="append"``).
        smoothing: Blur of the attention target, e.g.
            ``medcurric.geometry.gaussian(9, 3)`` (the authors' choice on 24 x 24); none by default.
        easy_prompt_box: Deviation switch: ``"append"`` (default) adds the overlay phrase and
            the normalised box to the Easy question; ``"phrase"`` the phrase only; ``"none"``
            nothing, as in the authors' code (see :class:`EasyPromptBox`).
        hard_image: Deviation switch for Hard: show the question and answer with this image
            instead of the sample's, as the authors' Hard stage does with another image of the
            same domain. Another :class:`~medcurric.cot.records.CoTSample` (its image is read
            under ``image_root`` through its own window; see :func:`pair_hard_images`), or a
            PIL/numpy image (through ``sample.window``). Only sound for Hard pairs that carry
            no location (``CoTGenerator(hard_asks_location=False)``). Ignored, with a
            warning, for Easy and Medium.

    Returns:
        The :class:`RenderedSample` (image, prompt, target, spans, attention target).

    Raises:
        MissingFileError: The image cannot be found.
        UnsafePathError: ``sample.image`` leaves ``image_root``.
        DataFormatError: Easy/Medium without a box.

    Examples:
        >>> import numpy as np
        >>> from medcurric.cot.records import CoTSample
        >>> s = CoTSample(id="s1", seed_id="k1", stage="hard", question_type="closed",
        ...     question="Is there a lesion in the liver?", rationale="The liver shows a mass.",
        ...     answer="yes", image="ct.png", box=(4.0, 8.0, 12.0, 16.0), image_size=(32, 32))
        >>> out = render(s, "hard", image=np.zeros((32, 32), np.uint8))
        >>> out.prompt, out.target
        ('###Human: <image>\nIs there a lesion in the liver?###Assistant:', 'Answer: yes')
    """
    sample = _as_sample(sample)
    st = look_up_option(stage, Stage, name="stage")
    box_mode = look_up_option(easy_prompt_box, EasyPromptBox, name="easy_prompt_box")
    if box_mode is not EasyPromptBox.APPEND and easy_prompt != EASY_PROMPT:
        warn_ignored("easy_prompt", f"easy_prompt_box={box_mode.value!r} sets the Easy prompt.")
    if hard_image is not None and st is not Stage.HARD:
        warn_ignored("hard_image", f"it only replaces the image of Hard renderings, not {st.value}.")
        hard_image = None
    if hard_image is not None:
        img = (
            _load_image(_as_sample(hard_image), None, image_root)
            if isinstance(hard_image, (CoTSample, Mapping))
            else _load_image(sample, hard_image, image_root)
        )
    else:
        img = _load_image(sample, image, image_root)
    width, height = img.size
    pixel_box = _pixel_box(sample, width, height)
    phrase: str | None = None
    question = sample.question
    box_norm: np.ndarray | None = None
    if st is not Stage.HARD:
        box_norm = _norm_box(sample, pixel_box, width, height)
    if st is Stage.EASY:
        if overlay is None:
            from medcurric.overlay import StageOverlay

            overlay = StageOverlay()
        draw_box = pixel_box if pixel_box is not None else box_norm * np.array([width, height] * 2)
        img, phrase = _draw(overlay, img, draw_box, _overlay_key(sample, rng))
        template = {
            EasyPromptBox.APPEND: easy_prompt, EasyPromptBox.PHRASE: EASY_PROMPT_PHRASE,
            EasyPromptBox.NONE: "{question}",
        }[box_mode]
        question = substitute(
            template, {"question": question, "phrase": phrase, "box": format_box(box_norm)}
        )
    attention_target = None
    if st is Stage.MEDIUM:
        if pixel_box is None:
            raise DataFormatError(f"Sample {sample.id!r} has no box; Medium needs it for the attention target.")
        if preprocess is None:
            from medcurric.geometry import Preprocess

            preprocess = Preprocess.shortest_edge_crop(336)
        attention_target = _attention_target(
            pixel_box, preprocess, (height, width), (int(grid[0]), int(grid[1])), smoothing
        )
        if not np.isfinite(attention_target).all() or attention_target.sum() <= 0:
            attention_target = None
    rationale: str | None = None
    r_span: tuple[int, int] | None = None
    if st is Stage.HARD:
        target = "Answer: " + sample.answer
        a_span = (len("Answer: "), len(target))
    else:
        target, r_span, a_span = _reasoning_target(sample.rationale, sample.answer)
        rationale = sample.rationale
    return RenderedSample(
        id=sample.id,
        stage=st,
        image=img,
        prompt=substitute(prompt_template, {"question": question}),
        target=target,
        answer=sample.answer,
        question=question,
        rationale=rationale,
        rationale_span=r_span,
        answer_span=a_span,
        box_norm=None if box_norm is None else tuple(float(v) for v in box_norm),
        phrase=phrase,
        attention_target=attention_target,
    )


def pair_hard_images(
    samples: Iterable[CoTSample],
    *,
    domain: Callable[[CoTSample], Hashable] | None = None,
    seed: int = 0,
) -> dict[str, CoTSample]:
    """Pair each sample with a sample of the same domain whose image differs, for Hard renderings.

    The authors' Hard stage shows a sample's (location-free) question and answer with a
    different image of the same domain (lesion type x modality). Within each domain the
    distinct images are shuffled by ``seed`` and every image's samples are paired with the
    next image's first sample, so each partner's image differs from the sample's.
    Samples of a domain with a single image get no partner (they are absent from the
    result): render them with their own image, or leave them out of Hard.

    Args:
        samples: The samples (their ``image`` names the image).
        domain: Sample -> domain key; by default the lesion type (add the modality with
            e.g. ``lambda s: (s.lesion_type, s.extra.get("modality"))``).
        seed: Seed of the shuffle.

    Returns:
        ``{sample id: partner sample}``; pass the partner as ``render(..., hard_image=partner)``.

    Examples:
        >>> from medcurric.cot.records import CoTSample
        >>> mk = lambda i, img, t: CoTSample(id=i, seed_id=i, stage="hard", question_type="open",
        ...     question="What abnormality is seen?", rationale="", answer=t, image=img, lesion_type=t)
        >>> pairs = pair_hard_images([mk("a", "1.png", "cyst"), mk("b", "2.png", "cyst"),
        ...                           mk("c", "3.png", "nodule")])
        >>> sorted((k, v.image) for k, v in pairs.items())
        [('a', '2.png'), ('b', '1.png')]
    """
    key = domain if domain is not None else (lambda s: s.lesion_type)
    by_domain: dict[Hashable, dict[str, list[CoTSample]]] = {}
    for s in samples:
        s = _as_sample(s)
        by_domain.setdefault(key(s), {}).setdefault(s.image, []).append(s)
    out: dict[str, CoTSample] = {}
    for name, images in by_domain.items():
        if len(images) < 2:
            continue
        order = sorted(images)
        digest = hashlib.sha256(repr((seed, name)).encode("utf-8")).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        order = [order[i] for i in rng.permutation(len(order))]
        for j, img in enumerate(order):
            partner = images[order[(j + 1) % len(order)]][0]
            for s in images[img]:
                out[s.id] = partner
    return out


def _draw(overlay: Any, image: Any, box: np.ndarray, key: int) -> tuple[Any, str]:
    """Call the overlay and normalise what it returns to ``(PIL image, phrase)``."""
    if not callable(overlay):
        raise WrongTypeError(
            f"Expected a StageOverlay (or a callable (image, box, key=...) -> (image, phrase)), "
            f"but got {type(overlay).__name__}."
        )
    drawn, phrase = overlay(np.asarray(image), box, key=key)
    if isinstance(drawn, np.ndarray):
        from PIL import Image

        drawn = Image.fromarray(drawn)
    return drawn.convert("RGB"), str(phrase)
