"""A local Hugging Face image-text-to-text model with its processor, batched ``generate``."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from medcurric._optional import require
from medcurric.cot._imaging import load_rgb
from medcurric.cot.backends.base import Completion, GenerationRequest, chat_messages
from medcurric.errors import InvalidOptionError, WrongTypeError

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)


class TransformersBackend:
    """A local Hugging Face image-text-to-text model with its processor, batched generation.

    Prompts go through the processor's chat template (image first, then the text;
    the system prompt is prepended to the user text because many VLM templates have
    no system role). Generation is greedy by default.

    Args:
        model: A model with ``generate`` (e.g. ``LlavaForConditionalGeneration``).
        processor: Its processor (tokenizer + image processor, with a chat template).
        model_name: Name recorded in samples and ids; defaults to the config's ``_name_or_path``.
        batch_size: Requests per ``generate`` call.
        max_new_tokens: Tokens to generate per reply.
        device: Device to run on (default: the model's).
        dtype: Floating dtype of the model and pixel values (``"bfloat16"``); ``None`` keeps it.
        do_sample: Sample instead of greedy decoding.
        generate_kwargs: Further keyword arguments for ``generate``.
    """

    name = "transformers"
    needs_images = True

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_name: str | None = None,
        batch_size: int = 4,
        max_new_tokens: int = 256,
        device: Any = None,
        dtype: Any = None,
        do_sample: bool = False,
        generate_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        torch = require("torch", feature="TransformersBackend")
        if not hasattr(model, "generate"):
            raise WrongTypeError(
                f"Expected a model with a generate() method, but got {type(model).__name__}."
            )
        if batch_size < 1 or max_new_tokens < 1:
            raise InvalidOptionError(
                "Expected batch_size >= 1 and max_new_tokens >= 1, but got "
                f"{batch_size}, {max_new_tokens}."
            )
        if isinstance(dtype, str):
            resolved = getattr(torch, dtype, None)
            if not isinstance(resolved, torch.dtype):
                raise InvalidOptionError(
                    f"Expected a torch dtype name such as 'bfloat16', but got {dtype!r}."
                )
            dtype = resolved
        self.model = model
        self.processor = processor
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.do_sample = bool(do_sample)
        self.generate_kwargs = dict(generate_kwargs or {})
        if device is not None or dtype is not None:
            self.model = self.model.to(device=device, dtype=dtype)
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        config = getattr(model, "config", None)
        self.model = self.model.eval()
        self.model_name: str = model_name or str(
            getattr(config, "_name_or_path", "") or type(model).__name__
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: Any = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> TransformersBackend:
        """Load a model and processor with ``AutoModelForImageTextToText`` / ``AutoProcessor``.

        Args:
            name_or_path: Hub id or local directory.
            device: Device to run on.
            dtype: Floating dtype (e.g. ``"bfloat16"``).
            **kwargs: Passed to the constructor (``batch_size``, ``max_new_tokens``, ...).

        Returns:
            The backend.
        """
        transformers = require("transformers", feature="TransformersBackend.from_pretrained")
        processor = transformers.AutoProcessor.from_pretrained(name_or_path)
        model = transformers.AutoModelForImageTextToText.from_pretrained(name_or_path)
        return cls(model, processor, model_name=name_or_path, device=device, dtype=dtype, **kwargs)

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(model={self.model_name!r}, batch_size={self.batch_size}, "
            f"device={str(self.device)!r}, dtype={str(self.dtype)!r})"
        )

    def complete(self, requests: Sequence[GenerationRequest]) -> Iterator[Completion]:
        """Generate replies batch by batch; a failing batch yields errors, not an exception."""
        reqs = list(requests)
        for i in range(0, len(reqs), self.batch_size):
            batch = reqs[i : i + self.batch_size]
            try:
                texts = self._generate(batch)
            except Exception as exc:  # a failed batch must not lose the other batches
                logger.warning("TransformersBackend: batch failed: %s", exc)
                for r in batch:
                    yield Completion(r, None, f"{type(exc).__name__}: {exc}")
                continue
            for r, t in zip(batch, texts, strict=True):
                yield Completion(r, t)

    def _generate(self, batch: Sequence[GenerationRequest]) -> list[str]:
        torch = require("torch", feature="TransformersBackend")
        proc = self.processor
        tok = getattr(proc, "tokenizer", proc)
        prompts, images = [], []
        for r in batch:
            image = load_rgb(r.image_path, r.window) if r.image_path is not None else None
            part = {"type": "image"} if image is not None else None
            prompts.append(
                proc.apply_chat_template(
                    chat_messages(r, part), add_generation_prompt=True, tokenize=False
                )
            )
            if image is not None:
                images.append(image)
        if images and len(images) != len(batch):
            raise InvalidOptionError(
                "Expected every request of a batch to have an image or none to have one; "
                "mixing them is not supported by batched processors."
            )
        old_side = getattr(tok, "padding_side", None)
        if old_side is not None:
            tok.padding_side = "left"
        try:
            kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
            if images:
                kwargs["images"] = images
            inputs = proc(**kwargs)
        finally:
            if old_side is not None:
                tok.padding_side = old_side
        moved = {}
        for k, v in inputs.items():
            if hasattr(v, "to"):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(self.dtype)
            moved[k] = v
        gen = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "pad_token_id": getattr(tok, "pad_token_id", None),
            **self.generate_kwargs,
        }
        with torch.inference_mode():
            out = self.model.generate(**moved, **gen)
        new = out[:, moved["input_ids"].shape[1] :]
        return [str(t) for t in tok.batch_decode(new, skip_special_tokens=True)]
