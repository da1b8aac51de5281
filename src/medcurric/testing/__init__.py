"""Test and benchmark helpers: a loopback OpenAI-compatible chat server."""

__all__: list[str] = []
