"""What every generation backend shares: the request, the completion and the protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from medcurric.cot.templates import QuestionType
from medcurric.stage import Stage

__all__ = ["Backend", "Completion", "GenerationRequest", "chat_messages"]


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
        window: The HU display window of that image (the seed's record window), or ``None``
            for the default; the image is converted by :func:`medcurric.io.load_rgb` with it.
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
    window: tuple[float, float] | None = None


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


def chat_messages(request: GenerationRequest, image: Any) -> list[dict[str, Any]]:
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
