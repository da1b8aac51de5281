"""Batch rendered samples through a Hugging Face processor, with span masks and attention targets."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medcurric._options import StrEnum, look_up_option
from medcurric.cot.records import CoTSample
from medcurric.curriculum.render import RenderedSample, chat_prompt_template, render
from medcurric.errors import DataFormatError, ShapeError, UnsupportedModelError, WrongTypeError
from medcurric.geometry import GaussianSmoothing, gaussian
from medcurric.stage import Stage

__all__ = ["MODEL_KEYS", "CurriculumCollator", "Supervise", "TargetSmoothing"]

#: The batch keys the supported models' ``forward`` accepts (those a family's processor makes).
MODEL_KEYS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "labels",
    "image_grid_thw",  # Qwen2-VL, Qwen2.5-VL, Qwen3-VL
    "mm_token_type_ids",  # Qwen2-VL, Qwen2.5-VL, Qwen3-VL
    "token_type_ids",  # Gemma 3
    "image_sizes",  # LLaVA-OneVision
    "batch_num_images",  # LLaVA-OneVision
)

# Image processor class prefixes whose token layout ImageTokenLayout models per image.
_LAYOUT_FAMILIES: tuple[tuple[str, str], ...] = (
    ("Qwen2VLImageProcessor", "qwen2_vl"),
    ("Gemma3ImageProcessor", "gemma3"),
    ("LlavaOnevisionImageProcessor", "llava_onevision"),
)


class TargetSmoothing(StrEnum):
    """Named blurs of the attention target: ``"gaussian"`` is the authors' (kernel 9, sigma 3 patches)."""

    GAUSSIAN = "gaussian"


class Supervise(StrEnum):
    """Which tokens' attention is supervised in Medium (the ``supervised_mask``)."""

    ANSWER = "answer"
    RATIONALE = "rationale"
    BOTH = "both"


def _grid_from_processor(processor: Any) -> tuple[int, int] | None:
    patch = getattr(processor, "patch_size", None)
    image_processor = getattr(processor, "image_processor", None)
    crop = getattr(image_processor, "crop_size", None)
    if not patch or crop is None:
        return None
    h = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    w = crop.get("width") if isinstance(crop, dict) else getattr(crop, "width", None)
    if not h or not w:
        return None
    return (int(h) // int(patch), int(w) // int(patch))


def _image_hw(image: Any) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or an ``[H, W(, C)]`` array."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray):
        width, height = image.size
        return int(height), int(width)
    arr = np.asarray(image)
    return int(arr.shape[0]), int(arr.shape[1])


def _layout_family(processor: Any) -> str | None:
    """``"qwen2_vl"``, ``"gemma3"``, ``"llava_onevision"`` or ``None`` (a fixed patch grid)."""
    name = type(getattr(processor, "image_processor", None)).__name__
    return next((family for prefix, family in _LAYOUT_FAMILIES if name.startswith(prefix)), None)


def _token_span_mask(
    offsets: torch.Tensor, valid: torch.Tensor, start: int, end: int
) -> torch.Tensor:
    """Tokens whose character range overlaps ``[start, end)``."""
    if end <= start:
        return torch.zeros_like(valid)
    return valid & (offsets[:, 0] < end) & (offsets[:, 1] > start)


def _rendered_from_dict(feature: Mapping[str, Any]) -> RenderedSample:
    """A :class:`RenderedSample` from a dict of its fields (e.g. ``RenderedSample.to_dict()``)."""
    try:
        return RenderedSample(**feature)
    except TypeError as exc:
        raise DataFormatError(
            "Expected a rendered feature with the fields of RenderedSample (id, stage, image, prompt, "
            f"target, ...), but got keys {sorted(feature)}: {exc}"
        ) from exc


def _smoothing(value: GaussianSmoothing | str | None) -> GaussianSmoothing | None:
    """``None``, a :class:`GaussianSmoothing`, or ``"gaussian"``: the authors' ``gaussian(9, 3)``."""
    if value is None or isinstance(value, GaussianSmoothing):
        return value
    if isinstance(value, str) and value.strip().lower() in {"none", ""}:
        return None
    if isinstance(value, str):
        look_up_option(value, TargetSmoothing, name="smoothing")  # the one name: "gaussian"
        return gaussian(9, 3.0)
    raise WrongTypeError(
        f"Expected smoothing=None, 'gaussian' or medcurric.geometry.gaussian(kernel, sigma), "
        f"but got {type(value).__name__}."
    )


class CurriculumCollator:
    """Collate rendered samples (or raw samples, rendered on the fly) into a model batch.

    Each feature is either a :class:`~medcurric.curriculum.RenderedSample` from
    :func:`~medcurric.curriculum.render` (or a dict of its fields) or a
    :class:`~medcurric.cot.records.CoTSample` (or its dict form), which is rendered
    for the stage given by ``scheduler``: its ``.stage`` (a
    :class:`~medcurric.curriculum.CurriculumScheduler` with the global policy, or
    either integration's ``CurriculumCallback``), or, for a per-domain scheduler,
    ``scheduler.sample_stage(domain_fn(sample), rng)`` per sample.

    The text of each sample is ``prompt + " " + target (+ EOS)`` (no space when the
    prompt ends with whitespace, as chat prompts end with a newline); it goes through
    the processor together with the image, so the image placeholder is expanded
    exactly as the model expects. Token spans are found from the tokenizer's offsets
    mapping, counted from the end of the text (the placeholder expansion only touches
    the prompt), so they hold for any processor that expands image tokens in the prompt.

    Model families (recognised by the image processor's class):

    * LLaVA / VIP-LLaVA (any fixed patch grid): the Medium target is the one
      :func:`~medcurric.curriculum.render` made on the ``grid``, ``[B, rows * cols]``;
    * Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, LLaVA-OneVision: raw samples are
      rendered with the processor's chat template (:func:`~medcurric.curriculum.chat_prompt_template`,
      unless ``render_options`` sets ``prompt_template``); the Medium target is computed
      here per image from ``box_norm`` scaled to the rendered image, over that image's
      tokens (:class:`~medcurric.geometry.ImageTokenLayout`, from the processor's output,
      e.g. ``image_grid_thw``, blurred by ``smoothing``); the ``attention_target``
      a :class:`RenderedSample` carries is not used. Each prompt must hold the processor's
      image placeholder once.

    Returns a dict of tensors:

    * ``input_ids``, ``attention_mask`` ``[B, L]`` and the processor's pixel inputs:
      ``pixel_values`` ``[B, 3, H, W]`` (LLaVA, Gemma 3), ``[N_patches, D]`` with
      ``image_grid_thw`` ``[B, 3]`` and ``mm_token_type_ids`` (Qwen), ``[B, views, 3, H, W]``
      with ``image_sizes`` and ``batch_num_images`` (LLaVA-OneVision), ``token_type_ids`` (Gemma 3);
    * ``labels`` ``[B, L]``: token ids on the target, ``-100`` on prompt and padding;
    * ``answer_mask``, ``rationale_mask`` ``[B, L]`` bool: tokens overlapping the answer
      / rationale text (aligned with ``labels``, for
      :func:`medcurric.losses.span_weighted_lm_loss`);
    * ``attention_target`` ``[B, P]`` float (rows of zeros where absent) and
      ``has_attention_target`` ``[B]`` bool (Medium samples whose box survived the
      preprocessing); entry ``[b, p]`` belongs to the ``p``-th image token of sample
      ``b`` in sequence order;
    * ``image_key_mask`` ``[B, P]`` bool (families other than LLaVA only): ``True`` for the
      ``P_b`` image tokens sample ``b`` has (``P`` is the largest ``P_b``; LLaVA-OneVision's
      newline tokens count, with target 0);
    * ``supervised_mask`` ``[B, L]`` bool: the query positions whose attention over
      the image tokens is supervised (answer and/or rationale tokens of samples with
      an attention target, per ``supervise``);
    * ``stage_index`` ``[B]`` long (0 Easy, 1 Medium, 2 Hard).

    Pass only :data:`MODEL_KEYS` to the model (:meth:`model_inputs`).

    Note:
        Texts are not truncated (cutting the expanded image tokens would break the
        model); drop over-long samples before collating.

        With ``DataLoader(num_workers > 0)`` the collator runs in worker processes with
        a copy of the scheduler, so a stage switch only reaches them when workers are
        re-created; keep ``num_workers=0`` or render in the main process.

    Args:
        processor: A multimodal processor with a fast tokenizer: ``LlavaProcessor`` (VIP-LLaVA),
            ``Qwen2VLProcessor``, ``Qwen2_5_VLProcessor``, ``Qwen3VLProcessor``, ``Gemma3Processor``,
            ``LlavaOnevisionProcessor``.
        scheduler: Where the stage of raw samples comes from (see above).
        overlay: ``StageOverlay`` for Easy renderings.
        preprocess: ``Preprocess`` of the image processor; read from ``processor`` when ``None``
            (LLaVA only: the other families' targets come from their token layouts).
        image_root: Folder that samples' image paths are relative to.
        grid: ``(rows, cols)`` of the patch grid; read from the processor's ``patch_size`` and
            crop size when ``None``.
        supervise: ``"answer"``, ``"rationale"`` or ``"both"``.
        add_eos: Append the tokenizer's EOS token to the target (so the model learns to stop).
        domain_fn: Sample -> domain name for a per-domain scheduler (default: ``lesion_type``).
        rng: Random generator for per-domain stage draws and the overlay.
        render_options: Further keyword arguments for :func:`~medcurric.curriculum.render`.
        smoothing: Blur of the Medium attention target of samples rendered here:
            ``None``, ``"gaussian"`` (the authors' kernel 9, sigma 3) or a
            :func:`~medcurric.geometry.gaussian` spec; passed to
            :func:`~medcurric.geometry.box_to_patch_distribution` through ``render``.

    Examples:
        >>> from medcurric.testing.tiny import build_tiny_vlm
        >>> from medcurric.cot.records import CoTSample
        >>> vlm = build_tiny_vlm()
        >>> s = CoTSample(id="a", seed_id="k", stage="hard", question_type="closed",
        ...     question="Is the liver normal?", rationale="A mass is in the liver.", answer="no",
        ...     image="x.png", box=(8.0, 8.0, 24.0, 24.0), image_size=(48, 48))
        >>> img = np.zeros((48, 48, 3), np.uint8)
        >>> batch = CurriculumCollator(vlm.processor)([render(s, "medium", image=img, grid=(6, 6))])
        >>> vlm.tokenizer.decode(batch["input_ids"][0][batch["answer_mask"][0]]).strip()
        'no'
        >>> batch["attention_target"].shape, bool(batch["has_attention_target"][0])
        (torch.Size([1, 36]), True)

        Qwen2.5-VL: the token count follows the image size (a 56 x 84 image gives 2 x 3 tokens).

        >>> from medcurric.curriculum import chat_prompt_template
        >>> from medcurric.testing import build_family_processor
        >>> qwen = build_family_processor("qwen2_5_vl")
        >>> r = render(s, "medium", image=np.zeros((56, 84, 3), np.uint8),
        ...     prompt_template=chat_prompt_template(qwen))
        >>> batch = CurriculumCollator(qwen)([r])
        >>> batch["image_grid_thw"].tolist(), batch["attention_target"].shape
        ([[1, 4, 6]], torch.Size([1, 6]))
    """

    def __init__(
        self,
        processor: Any,
        *,
        scheduler: Any = None,
        overlay: Any = None,
        preprocess: Any = None,
        image_root: str | os.PathLike[str] | None = None,
        grid: tuple[int, int] | None = None,
        supervise: Supervise | str = "both",
        add_eos: bool = True,
        domain_fn: Callable[[CoTSample], str] | None = None,
        rng: Any = None,
        render_options: Mapping[str, Any] | None = None,
        smoothing: GaussianSmoothing | str | None = None,
    ) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or not callable(processor):
            raise UnsupportedModelError(
                f"Expected a multimodal processor with a .tokenizer (e.g. LlavaProcessor), "
                f"but got {type(processor).__name__}."
            )
        if not getattr(tokenizer, "is_fast", False):
            raise UnsupportedModelError(
                f"CurriculumCollator needs a fast tokenizer (offsets mapping), but "
                f"{type(tokenizer).__name__} is not; load the processor with use_fast=True."
            )
        self.processor = processor
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.overlay = overlay
        #: ``"qwen2_vl"`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), ``"gemma3"``, ``"llava_onevision"``,
        #: or ``None`` for a fixed patch grid (LLaVA, VIP-LLaVA).
        self.family = _layout_family(processor)
        if preprocess is None and self.family is None:
            from medcurric.geometry import Preprocess

            try:
                preprocess = Preprocess.from_processor(processor)
            except (UnsupportedModelError, AttributeError):
                preprocess = None
        self.preprocess = preprocess
        self.image_root = image_root
        self.grid = tuple(grid) if grid is not None else _grid_from_processor(processor)
        self.supervise = look_up_option(supervise, Supervise, name="supervise")
        self.add_eos = bool(add_eos)
        self.domain_fn = domain_fn or (lambda s: s.lesion_type)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.render_options = dict(render_options or {})
        self.smoothing = _smoothing(smoothing)
        if self.family is not None and "prompt_template" not in self.render_options:
            # Raw samples get the processor's own turn format and image placeholder.
            try:
                self.render_options["prompt_template"] = chat_prompt_template(processor)
            except UnsupportedModelError:
                pass

    @staticmethod
    def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of a batch the model's ``forward`` accepts (:data:`MODEL_KEYS`)."""
        return {k: batch[k] for k in MODEL_KEYS if k in batch}

    def _stage_for(self, sample: CoTSample) -> Stage:
        sched = self.scheduler
        if sched is None:
            return look_up_option(sample.stage, Stage, name="sample.stage")
        policy = getattr(sched, "policy", None)
        if policy is not None and str(policy) == "per_domain":
            return Stage(sched.sample_stage(self.domain_fn(sample), self.rng))
        stage = getattr(sched, "stage", None)
        if stage is None:
            raise WrongTypeError(
                f"Expected `scheduler` to have a .stage (a CurriculumScheduler or CurriculumCallback), "
                f"but {type(sched).__name__} has none."
            )
        return look_up_option(stage, Stage, name="stage")

    def _render(self, feature: Any) -> RenderedSample:
        if isinstance(feature, RenderedSample):
            return feature
        if isinstance(feature, Mapping) and "prompt" in feature and "target" in feature:
            return _rendered_from_dict(feature)
        sample = feature if isinstance(feature, CoTSample) else None
        if sample is None:
            if not isinstance(feature, Mapping):
                raise WrongTypeError(
                    f"Expected RenderedSamples or CoTSamples, but got {type(feature).__name__}."
                )
            sample = CoTSample.from_dict(dict(feature))
        options = dict(self.render_options)
        if self.grid is not None:
            options.setdefault("grid", self.grid)
        options.setdefault("smoothing", self.smoothing)
        return render(
            sample,
            self._stage_for(sample),
            overlay=self.overlay,
            preprocess=self.preprocess,
            rng=self.rng,
            image_root=self.image_root,
            **options,
        )

    def _check_prompts(self, rendered: Sequence[RenderedSample]) -> None:
        token = getattr(self.processor, "image_token", None)
        if not token:
            return
        for r in rendered:
            if r.prompt.count(token) != 1:
                raise DataFormatError(
                    f"Expected the prompt of sample {r.id!r} to hold {token!r} once (the image "
                    f"placeholder of {type(self.processor).__name__}), but it holds it "
                    f"{r.prompt.count(token)} times; render with "
                    "prompt_template=chat_prompt_template(processor)."
                )

    def _grid_targets(
        self, rendered: Sequence[RenderedSample], bsz: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed patch grid: the targets :func:`render` made, ``[B, rows * cols]``."""
        P = self.grid[0] * self.grid[1] if self.grid is not None else None
        targets = [r.attention_target for r in rendered]
        has_target = torch.tensor([t is not None for t in targets], dtype=torch.bool)
        if P is None:
            sizes = {int(np.asarray(t).size) for t in targets if t is not None}
            P = sizes.pop() if len(sizes) == 1 else 0
        attention_target = torch.zeros(bsz, P, dtype=torch.float32)
        for i, t in enumerate(targets):
            if t is None:
                continue
            arr = torch.as_tensor(np.asarray(t, dtype=np.float32)).reshape(-1)
            if arr.numel() != P:
                raise ShapeError(
                    f"Expected attention targets of {P} patches (grid {self.grid}), but sample "
                    f"{rendered[i].id!r} has {arr.numel()}; render with the model's grid."
                )
            attention_target[i] = arr
        return attention_target, has_target

    def _layout_targets(
        self, rendered: Sequence[RenderedSample], enc: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image token layouts: Medium boxes over each sample's own image tokens, padded over P."""
        from medcurric.geometry import ImageTokenLayout, box_to_token_distribution

        sizes = [_image_hw(r.image) for r in rendered]
        layouts = ImageTokenLayout.from_processor_output(self.processor, enc, sizes)
        ids = getattr(self.processor, "image_token_ids", None) or [self.processor.image_token_id]
        ids_t = torch.tensor([int(i) for i in ids if i is not None], dtype=enc["input_ids"].dtype)
        counts = torch.isin(enc["input_ids"], ids_t).sum(dim=1).tolist()
        for r, layout, n in zip(rendered, layouts, counts, strict=True):
            if n != layout.num_tokens:
                raise ShapeError(
                    f"Expected {layout.num_tokens} image tokens for sample {r.id!r} "
                    f"({layout.family} layout of a {layout.image_size} image), but the processor wrote {n}; "
                    "process one image per sample without truncation."
                )
        bsz, P = len(rendered), max(layout.num_tokens for layout in layouts)
        target = torch.zeros(bsz, P, dtype=torch.float32)
        key_mask = torch.zeros(bsz, P, dtype=torch.bool)
        has_target = torch.zeros(bsz, dtype=torch.bool)
        smoothing = self.render_options.get("smoothing", self.smoothing)
        for i, (r, layout) in enumerate(zip(rendered, layouts, strict=True)):
            n = layout.num_tokens
            key_mask[i, :n] = True
            if Stage(r.stage) is not Stage.MEDIUM or r.box_norm is None:
                continue
            h, w = sizes[i]
            box = torch.tensor([r.box_norm], dtype=torch.float64)
            box = box * torch.tensor([w, h, w, h], dtype=torch.float64)
            dist = box_to_token_distribution(box, layout, smoothing=smoothing)[0]
            if float(dist.sum()) > 0:
                target[i, :n] = dist.to(torch.float32)
                has_target[i] = True
        return target, has_target, key_mask

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Collate a list of features into a batch (see the class docstring)."""
        if len(features) == 0:
            raise DataFormatError("Expected at least one feature to collate, but got an empty list.")
        rendered = [self._render(f) for f in features]
        if self.family is not None:
            self._check_prompts(rendered)
        eos = self.tokenizer.eos_token if self.add_eos and self.tokenizer.eos_token else ""
        texts, target_starts, spans = [], [], []
        for r in rendered:
            # Chat templates end the prompt with a newline; the target follows it directly.
            sep = "" if r.prompt[-1:].isspace() else " "
            text = r.prompt + sep + r.target + eos
            t0 = len(r.prompt) + len(sep)
            texts.append(text)
            # Character positions counted from the end of the text.
            target_starts.append(len(text) - t0)
            spans.append(
                {
                    name: None if span is None else (len(text) - (t0 + span[0]), len(text) - (t0 + span[1]))
                    for name, span in (("answer", r.answer_span), ("rationale", r.rationale_span))
                }
            )
        images = [r.image for r in rendered]
        enc = self.processor(
            # One image per sample: nested for the families that take several (Gemma 3).
            images=images if self.family is None else [[im] for im in images],
            text=texts,
            padding=True,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        input_ids = enc["input_ids"]
        attention = enc["attention_mask"].bool()
        offsets = enc.pop("offset_mapping")
        bsz, length = input_ids.shape
        labels = torch.full_like(input_ids, -100)
        masks = {name: torch.zeros(bsz, length, dtype=torch.bool) for name in ("answer", "rationale")}
        for i in range(bsz):
            off = offsets[i]
            valid = attention[i] & (off[:, 1] > off[:, 0])
            total = int(off[valid, 1].max()) if bool(valid.any()) else 0
            start = total - target_starts[i]
            in_target = attention[i] & (off[:, 1] > start)
            labels[i] = torch.where(in_target, input_ids[i], labels[i])
            for name, span in spans[i].items():
                if span is None:
                    continue
                masks[name][i] = _token_span_mask(off, valid, total - span[0], total - span[1])
            masks["rationale"][i] &= ~masks["answer"][i]
        key_mask: torch.Tensor | None = None
        if self.family is not None:
            attention_target, has_target, key_mask = self._layout_targets(rendered, enc)
        else:
            attention_target, has_target = self._grid_targets(rendered, bsz)
        if self.supervise is Supervise.ANSWER:
            supervised = masks["answer"].clone()
        elif self.supervise is Supervise.RATIONALE:
            supervised = masks["rationale"].clone()
        else:
            supervised = masks["answer"] | masks["rationale"]
        supervised &= has_target[:, None]
        stage_index = torch.tensor([Stage(r.stage).order for r in rendered], dtype=torch.long)
        batch = dict(enc)
        if key_mask is not None:
            batch["image_key_mask"] = key_mask
        batch.update(
            labels=labels,
            answer_mask=masks["answer"],
            rationale_mask=masks["rationale"],
            attention_target=attention_target,
            has_attention_target=has_target,
            supervised_mask=supervised,
            stage_index=stage_index,
        )
        return batch
