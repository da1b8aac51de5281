"""Generation backends behind one small protocol.

A backend turns :class:`GenerationRequest` objects into :class:`Completion` objects
(reply text or an error), yielding them as they finish, in any order:

* :class:`TemplateBackend`: offline and deterministic; writes the QA pair and the
  rationale from the seed's structured fields (tests, demos, a no-model baseline).
* :class:`TransformersBackend`: a local Hugging Face image-text-to-text model and
  its processor, batched ``generate``.
* :class:`OpenAIBackend`: any OpenAI-compatible chat-completions server (vLLM,
  SGLang, TGI, hosted APIs) over ``httpx``, images as base64 data URLs, bounded
  async concurrency, retries with exponential backoff and jitter.

Write your own by giving a class ``name``, ``model_name``, ``needs_images`` and a
``complete(requests)`` method.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import queue
import random
import re
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option
from medcurric.cot import _http
from medcurric.cot._imaging import data_url, load_rgb
from medcurric.cot.templates import QuestionType
from medcurric.errors import InvalidOptionError, WrongTypeError
from medcurric.stage import Stage

__all__ = [
    "Backend",
    "Completion",
    "GenerationRequest",
    "OpenAIBackend",
    "TemplateBackend",
    "TransformersBackend",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt for one sample.

    Attributes:
        id: The id of the sample it will become.
        system: System prompt.
        prompt: User prompt.
        stage: Curriculum stage.
        question_type: ``open`` or ``closed``.
        template_id: Id of the prompt template.
        fields: The template fields and their values (the seed's structured facts).
        image_path: The image to send, resolved inside the image root, or ``None``.
        history: Earlier ``(assistant reply, user follow-up)`` turns, for re-asks.
    """

    id: str
    system: str
    prompt: str
    stage: Stage
    question_type: QuestionType
    template_id: str
    fields: Mapping[str, str] = field(default_factory=dict)
    image_path: Path | None = None
    history: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Completion:
    """A backend's answer to one request.

    Attributes:
        request: The request.
        text: The reply text, or ``None`` when the request failed.
        error: Why it failed (``None`` on success). Never contains credentials.
        attempts: How many times it was sent (retries included).
    """

    request: GenerationRequest
    text: str | None
    error: str | None = None
    attempts: int = 1


@runtime_checkable
class Backend(Protocol):
    """What :class:`~medcurric.cot.CoTGenerator` needs from a backend.

    ``name`` and ``model_name`` are part of every sample id (``model_name`` is empty
    for :class:`TemplateBackend`); ``needs_images`` says whether requests must carry
    an image path.
    """

    @property
    def name(self) -> str:
        """Backend name, e.g. ``"template"`` or ``"openai"``."""
        ...

    @property
    def model_name(self) -> str:
        """Model name (may be empty)."""
        ...

    @property
    def needs_images(self) -> bool:
        """Whether requests must carry an image path."""
        ...

    def complete(self, requests: Sequence[GenerationRequest]) -> Iterator[Completion]:
        """Yield one :class:`Completion` per request as each finishes, in any order."""
        ...


def _messages(request: GenerationRequest, image: Any) -> list[dict[str, Any]]:
    """Chat messages in the OpenAI / HF chat-template shape; ``image`` is a content part or None."""
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append(image)
    text = f"{request.system}\n\n{request.prompt}" if request.system else request.prompt
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    for reply, follow_up in request.history:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": follow_up}]})
    return messages


# --------------------------------------------------------------------------- template


class TemplateBackend:
    """Offline, deterministic backend that writes replies from the seed's structured fields.

    The reply is a JSON object (so lesion types with any characters survive), and
    goes through the same parsing and validation as a model's reply. Questions,
    rationales and answers follow fixed sentence patterns per stage and question type.

    Examples:
        >>> from medcurric.cot import TemplateBackend
        >>> b = TemplateBackend()
        >>> b.name, b.model_name, b.needs_images
        ('template', '', False)
    """

    name = "template"
    model_name = ""
    needs_images = False

    def __repr__(self) -> str:
        return "TemplateBackend()"

    def complete(self, requests: Sequence[GenerationRequest]) -> Iterator[Completion]:
        """Yield a deterministic reply for each request."""
        for r in requests:
            yield Completion(r, json.dumps(template_reply(r), ensure_ascii=False))


def template_reply(request: GenerationRequest) -> dict[str, str]:
    """Write ``{"question", "rationale", "answer"}`` for a request from its fields.

    Examples:
        >>> from medcurric.cot import GenerationRequest, QuestionType, template_reply
        >>> from medcurric.stage import Stage
        >>> r = GenerationRequest("x", "", "", Stage.MEDIUM, QuestionType.OPEN, "t",
        ...     {"lesion": "cyst", "organ": "liver", "location": "the right part of the liver",
        ...      "size": "", "box": ""})
        >>> template_reply(r)["answer"]
        'A cyst in the right part of the liver.'
    """
    f = dict(request.fields)
    lesion = f.get("lesion") or "lesion"
    organ = f.get("organ", "")
    location = f.get("location") or (f"the {organ}" if organ else "")
    size = f" measuring {f['size']}" if f.get("size") else ""
    box = f.get("box", "")
    queried = f.get("queried_organ", "")
    expected = f.get("expected_answer", "yes")
    easy = request.stage is Stage.EASY
    closed = request.question_type is QuestionType.CLOSED
    look = f"The highlighted box at {box} " if easy else ""
    where_q = "inside the highlighted box" if easy else "in this image"
    if organ:
        rel = f.get("relation") or "in"
        where = f"{rel} {location}"
        over = "lies over" if rel == "in" else "lies next to"
        if closed:
            question = (
                f"Is the {lesion} inside the highlighted box located in the {queried}?"
                if easy
                else f"Is there a {lesion} in the {queried}?"
            )
            lead = f"{look}{over} the {organ}. " if easy else f"Looking at the {organ}, "
            body = (
                f"The {lesion}{size} is {where}" if easy else f"there is a {lesion}{size} {where}"
            )
            tail = ""
            if expected != "yes":
                tail = f", not in the {queried}" if queried != organ else ", not inside it"
            rationale = f"{lead}{body}{tail}."
            answer = "Yes." if expected == "yes" else f"No, it is {where}."
        else:
            question = f"What abnormality is seen {where_q}, and where is it?"
            if easy:
                rationale = (
                    f"{look}{over} the {organ}. There is a {lesion}{size} {where}. "
                    f"So the finding is a {lesion} {rel} the {organ}."
                )
            else:
                rationale = (
                    f"Looking at the {organ}, there is a {lesion}{size} {where}. "
                    f"So the abnormality is a {lesion} {rel} the {organ}."
                )
            answer = f"A {lesion} {where}."
        if request.stage is Stage.HARD:
            question = (
                f"Is there a {lesion} in the {queried}?" if closed else f"Where is the {lesion}?"
            )
            answer = ("Yes." if expected == "yes" else "No.") if closed else f"A {lesion} {where}."
    else:
        if closed:
            question = (
                f"Is there a {lesion} inside the highlighted box?"
                if easy
                else f"Does this image show a {lesion}?"
            )
            answer = "Yes."
        else:
            question = f"What abnormality is seen {where_q}?"
            answer = f"A {lesion}."
        rationale = (
            f"{look}contains a {lesion}{size}; its host organ could not be determined."
            if easy
            else f"The image shows a {lesion}{size}; its host organ could not be determined."
        )
    if request.stage is Stage.HARD:
        rationale = ""
    return {"question": question, "rationale": rationale, "answer": answer}


# --------------------------------------------------------------------------- transformers


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
            image = load_rgb(r.image_path) if r.image_path is not None else None
            part = {"type": "image"} if image is not None else None
            prompts.append(
                proc.apply_chat_template(
                    _messages(r, part), add_generation_prompt=True, tokenize=False
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


# --------------------------------------------------------------------------- OpenAI-compatible

_RETRY_STATUS = {408, 409, 425, 429}
_DONE = object()
# Stands in for the image URL while the body is JSON-encoded; random per process, so no
# text from a dataset or a model can contain it by chance or on purpose.
_URL_SLOT = f"medcurric-image-url-{uuid.uuid4().hex}"
_JSON_SAFE_PREFIX = re.compile(r"data:[a-z]+/[a-z0-9.+-]+;base64,")


class _HTTPClient(StrEnum):
    AUTO = "auto"
    STDLIB = "stdlib"
    HTTPX = "httpx"


def _proxy_applies(target: _http.Target) -> bool:
    """Whether an ``http(s)_proxy``/``all_proxy`` environment variable covers ``target``."""
    proxies = urllib.request.getproxies_environment()
    scheme = "https" if target.tls else "http"
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    host = target.host.lower()
    for entry in proxies.get("no", "").split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return False
        name, _, port = entry.partition(":")
        name = name.lstrip(".")
        if not name or (port and port != str(target.port)):
            continue
        if host == name or host.endswith("." + name):
            return False
    return True


class _Malformed(Exception):
    pass


def _reply_text(data: Any) -> str:
    try:
        message = data["choices"][0]["message"]
        content = message["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise _Malformed(f"no choices[0].message.content ({type(exc).__name__})") from None
    if isinstance(content, list):
        content = "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    if not isinstance(content, str):
        raise _Malformed(f"content is {type(content).__name__}, not text")
    return content


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions server, with bounded async concurrency and retries.

    Requests are sent from an event loop in a worker thread, at most
    ``concurrency`` at a time, each slot over its own keep-alive connection;
    completions stream back as they finish. The HTTP client is chosen by
    ``http_client``: ``"stdlib"`` is a small HTTP/1.1 client on asyncio streams
    (no dependency; about 0.4 ms of CPU per request where ``httpx`` spends 2-3 ms,
    on this project's benchmark machine, which is what decides throughput at high
    concurrency), ``"httpx"`` uses ``httpx.AsyncClient`` (needs the ``gen`` extra;
    honours ``HTTP(S)_PROXY``), and ``"auto"`` (default) takes ``httpx`` when a proxy
    environment variable applies to ``base_url`` and the stdlib client otherwise.
    Images travel as base64 ``data:`` URLs. A request is retried on HTTP
    408/409/425/429 and 5xx, timeouts, connection errors, truncated bodies and
    malformed JSON, with exponential backoff and full jitter, or after the
    server's ``Retry-After``; it is sent at most ``1 + max_retries`` times.

    The API key is read from the environment variable ``api_key_env`` when a batch
    starts and is only ever put in the ``Authorization`` header: it is not stored
    on the object, shown in its repr, logged, or written to any output (error
    texts are scrubbed of it). Servers that need no key (a local vLLM) work without
    the variable.

    Args:
        model: Model name sent in each request (``--served-model-name`` of vLLM).
        base_url: Server URL up to and including ``/v1``.
        api_key_env: Name of the environment variable holding the key.
        concurrency: Most requests in flight at once.
        max_retries: Retries after the first attempt.
        timeout: Seconds per attempt (connect, read, write, pool).
        backoff_base: First backoff in seconds; doubles each retry.
        backoff_max: Largest backoff in seconds.
        retry_after_max: Largest ``Retry-After`` honoured, in seconds.
        max_tokens: ``max_tokens`` of each request.
        temperature: ``temperature`` of each request.
        extra_body: Further JSON fields for each request (e.g. ``{"top_p": 0.9}``).
        send_images: Send the image (``False`` for text-only models).
        http_client: ``"auto"``, ``"stdlib"`` or ``"httpx"`` (see above).

    Examples:
        >>> from medcurric.cot import OpenAIBackend
        >>> b = OpenAIBackend("my-model", base_url="http://127.0.0.1:8000/v1", concurrency=32)
        >>> b  # doctest: +NORMALIZE_WHITESPACE
        OpenAIBackend(model='my-model', base_url='http://127.0.0.1:8000/v1',
            api_key_env='OPENAI_API_KEY', concurrency=32, max_retries=5, timeout=60.0)
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        extra_body: Mapping[str, Any] | None = None,
        send_images: bool = True,
        http_client: str = "auto",
    ) -> None:
        if not model:
            raise InvalidOptionError("Expected a model name for OpenAIBackend, but got ''.")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise InvalidOptionError(
                "Expected concurrency >= 1, max_retries >= 0 and timeout > 0, but got "
                f"{concurrency}, {max_retries}, {timeout}."
            )
        if not base_url.startswith(("http://", "https://")):
            raise InvalidOptionError(
                f"Expected base_url to start with http:// or https://, but got {base_url!r}."
            )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.retry_after_max = float(retry_after_max)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.extra_body = dict(extra_body or {})
        self.send_images = bool(send_images)
        self.http_client = look_up_option(http_client, _HTTPClient, name="http_client")
        try:
            self._target = _http.Target.from_url(self.base_url)
        except ValueError as exc:
            raise InvalidOptionError(str(exc)) from None
        self._rng = random.Random()
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def needs_images(self) -> bool:
        """Whether requests must carry an image (``send_images``)."""
        return self.send_images

    @property
    def model_name(self) -> str:
        """The model name recorded in samples and ids."""
        return self.model

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency}, "
            f"max_retries={self.max_retries}, timeout={self.timeout})"
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): capped exponential, full jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return self._rng.uniform(0.0, ceiling)

    def _payload(self, request: GenerationRequest, image_url: str | None = None) -> dict[str, Any]:
        """The chat-completions JSON payload; ``image_url`` stands in for the image's data URL."""
        image = None
        if self.send_images and request.image_path is not None:
            url = image_url if image_url is not None else data_url(request.image_path)
            image = {"type": "image_url", "image_url": {"url": url}}
        return {
            **self.extra_body,
            "model": self.model,
            "messages": _messages(request, image),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _body(self, request: GenerationRequest) -> bytes:
        """The JSON request body, equal to ``json.dumps(self._payload(request))``.

        The image's data URL (tens of kilobytes of base64, which needs no JSON escaping)
        is spliced into the encoded text instead of being scanned by the JSON encoder.
        """
        if not (self.send_images and request.image_path is not None):
            return json.dumps(self._payload(request)).encode("utf-8")
        url = data_url(request.image_path)
        text = json.dumps(self._payload(request, image_url=_URL_SLOT))
        quoted = f'"{_URL_SLOT}"'
        # data_url() builds "data:<mime>;base64,<base64>": only the prefix needs checking.
        prefix = url[: url.find(",") + 1]
        if text.count(quoted) != 1 or not _JSON_SAFE_PREFIX.fullmatch(prefix):
            return json.dumps(self._payload(request)).encode("utf-8")
        head, _, tail = text.partition(quoted)
        return b"".join(
            (head.encode("utf-8"), b'"', url.encode("ascii"), b'"', tail.encode("utf-8"))
        )

    def complete(self, requests: Sequence[GenerationRequest]) -> Iterator[Completion]:
        """Send the requests concurrently; yield completions as they finish.

        Runs its own event loop in a worker thread, so it works from synchronous
        code and inside notebooks that already run a loop. Closing the iterator
        early cancels what is still in flight.
        """
        reqs = list(requests)
        if not reqs:
            return
        use_httpx = self.http_client == _HTTPClient.HTTPX or (
            self.http_client == _HTTPClient.AUTO and _proxy_applies(self._target)
        )
        httpx = (
            require("httpx", feature="OpenAIBackend(http_client='httpx')") if use_httpx else None
        )
        out: queue.Queue[Any] = queue.Queue()
        holder: dict[str, Any] = {}

        def runner() -> None:
            try:
                asyncio.run(self._run_all(httpx, reqs, out.put, holder))
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # surfaced in the consuming thread
                out.put(("fatal", exc))
            finally:
                out.put(_DONE)

        thread = threading.Thread(target=runner, name="medcurric-openai", daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    break
                if isinstance(item, tuple) and item and item[0] == "fatal":
                    raise item[1]
                yield item
        finally:
            loop, task = holder.get("loop"), holder.get("task")
            if thread.is_alive() and loop is not None and task is not None:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:  # loop already closed
                    pass
            thread.join()

    async def _run_all(
        self, httpx: Any, reqs: list[GenerationRequest], put: Any, holder: dict[str, Any]
    ) -> None:
        holder["loop"] = asyncio.get_running_loop()
        holder["task"] = asyncio.current_task()
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if self._ssl_context is None and self._target.tls:
            # Loading the trust store takes ~0.1 s; plain-http servers (a local vLLM) skip it.
            self._ssl_context = ssl.create_default_context()
        # The bound on requests in flight: one token per slot, each slot one connection.
        slots: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.concurrency):
            slots.put_nowait(i)
        async with contextlib.AsyncExitStack() as stack:
            if httpx is not None:
                # One single-connection client per slot: httpcore's pool does work per event
                # that grows with its size (about 3.7 ms of CPU per request at 64 connections
                # in one pool against 2.3 ms this way, on the benchmark machine).
                limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
                if self._ssl_context is None:  # one shared context, not one per client
                    self._ssl_context = ssl.create_default_context()
                clients = [
                    await stack.enter_async_context(
                        httpx.AsyncClient(
                            headers={**headers, "Content-Type": "application/json"},
                            timeout=httpx.Timeout(self.timeout),
                            limits=limits,
                            verify=self._ssl_context,
                        )
                    )
                    for _ in range(self.concurrency)
                ]
                url = f"{self.base_url}/chat/completions"

                async def send(slot: int, body: bytes) -> tuple[int, Any, bytes]:
                    resp = await clients[slot].post(url, content=body)
                    return resp.status_code, resp.headers, resp.content

                errors: tuple[tuple[type[BaseException], str], ...] = (
                    (httpx.TimeoutException, "timeout"),
                    (httpx.TransportError, "transport error"),
                    (httpx.HTTPError, "HTTP error"),
                )
            else:
                connections = [
                    _http.Connection(
                        self._target,
                        timeout=self.timeout,
                        ssl_context=self._ssl_context,
                        headers=headers,
                    )
                    for _ in range(self.concurrency)
                ]

                async def close_all() -> None:
                    await asyncio.gather(*(c.close() for c in connections))

                stack.push_async_callback(close_all)
                path = self._target.path("/chat/completions")

                async def send(slot: int, body: bytes) -> tuple[int, Any, bytes]:
                    resp = await connections[slot].post_json(path, body)
                    return resp.status, resp.headers, resp.body

                errors = (
                    (_http.HTTPTimeout, "timeout"),
                    (_http.HTTPTransportError, "transport error"),
                )

            async def one(r: GenerationRequest) -> None:
                put(await self._one(send, errors, slots, r, key))

            await asyncio.gather(*(one(r) for r in reqs))

    async def _one(
        self,
        send: Any,
        errors: tuple[tuple[type[BaseException], str], ...],
        slots: asyncio.Queue[int],
        request: GenerationRequest,
        key: str,
    ) -> Completion:
        def scrub(text: str) -> str:
            return text.replace(key, "***") if key else text

        caught = tuple(kind for kind, _ in errors)
        body: bytes | None = None
        last = ""
        attempts = 0
        cap = 1 + self.max_retries
        while attempts < cap:
            attempts += 1
            wait: float | None = None
            try:
                slot = await slots.get()
                try:
                    if body is None:
                        # Built once a slot is free, so thousands of queued requests do not
                        # all read and encode their images before the first one is sent.
                        try:
                            body = self._body(request)
                        except Exception as exc:  # unreadable image: not worth retrying
                            error = scrub(f"cannot build the request: {exc}")
                            return Completion(request, None, error, 0)
                    status, headers, content = await send(slot, body)
                finally:
                    slots.put_nowait(slot)
                if status == 200:
                    try:
                        return Completion(request, _reply_text(json.loads(content)), None, attempts)
                    except (ValueError, _Malformed) as exc:
                        last = f"malformed response body ({exc})"
                elif status in _RETRY_STATUS or status >= 500:
                    last = f"HTTP {status}"
                    wait = _retry_after(headers.get("retry-after"), self.retry_after_max)
                else:
                    snippet = content[:300].decode("utf-8", "replace")
                    return Completion(
                        request, None, scrub(f"HTTP {status} (not retried): {snippet}"), attempts
                    )
            except caught as exc:
                label = next(text for kind, text in errors if isinstance(exc, kind))
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                last = f"{label} ({detail})"
            if attempts >= cap:
                break
            delay = wait if wait is not None else self.backoff(attempts)
            logger.debug("retrying %s in %.3f s after %s", request.id, delay, scrub(last))
            await asyncio.sleep(delay)
        return Completion(
            request, None, scrub(f"gave up after {attempts} attempts: {last}"), attempts
        )
