"""Generation backends behind one small protocol, one module each.

A backend turns :class:`GenerationRequest` objects into :class:`Completion` objects
(reply text or an error), yielding them as they finish, in any order:

* :class:`TemplateBackend` (``template``): offline and deterministic; writes the QA
  pair and the rationale from the seed's structured fields (tests, demos, a
  no-model baseline).
* :class:`TransformersBackend` (``hf``): a local Hugging Face image-text-to-text
  model and its processor, batched ``generate``.
* :class:`OpenAIBackend` (``openai``): any OpenAI-compatible chat-completions
  server (vLLM, SGLang, TGI, hosted APIs) over aiohttp, images as base64 data
  URLs, bounded async concurrency, retries with exponential backoff and jitter.

Write your own by giving a class ``name``, ``model_name``, ``needs_images`` and a
``complete(requests)`` method (:class:`Backend`).
"""

from medcurric.cot.backends.base import Backend, Completion, GenerationRequest
from medcurric.cot.backends.hf import TransformersBackend
from medcurric.cot.backends.openai import OpenAIBackend
from medcurric.cot.backends.template import TemplateBackend, template_reply

__all__ = [
    "Backend",
    "Completion",
    "GenerationRequest",
    "OpenAIBackend",
    "TemplateBackend",
    "TransformersBackend",
    "template_reply",
]
