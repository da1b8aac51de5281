"""A stdlib-only OpenAI-compatible chat-completions server on loopback, with injected faults.

Used by the test suite and ``benchmarks/bench_generate.py``. It speaks enough
HTTP/1.1 (keep-alive, ``Content-Length`` bodies) for an HTTP client library,
answers ``POST .../chat/completions`` after a fixed latency, and can inject faults
per request: ``"500"``, ``"429"`` (with ``Retry-After``), ``"timeout"`` (never answers),
``"drop"`` (closes the connection), ``"truncate"`` (half a body, then closes),
``"malformed"`` (200 with a body that is not JSON), ``"nochoices"`` (JSON without choices),
``"401echo"`` (401 whose body echoes the ``Authorization`` header).

Run it on its own (prints the port on the first line of stdout)::

    python -m medcurric.testing.chat_server --latency 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ReplyFn = Callable[[dict[str, Any]], str]
FaultFn = Callable[[str, int], str]

DEFAULT_REPLY = (
    "Question: What is seen? | Reasoning: The box at [0.1000, 0.2000, 0.3000, 0.4000] lies in "
    "the liver, which shows a lesion. | Answer: A lesion in the liver."
)


def user_text(payload: dict[str, Any]) -> str:
    """Return the text of the first user message of a chat-completions payload."""
    for message in payload.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


@dataclass
class Hit:
    """One request the server saw (``target`` is the request line's target, absolute via a proxy)."""

    key: str
    attempt: int
    action: str
    time: float
    authorization: str
    payload: dict[str, Any]
    target: str = ""


class FakeChatServer:
    """The server, run on an event loop in a background thread.

    Args:
        reply: Payload -> reply text (default: a fixed labelled reply).
        fault: ``(request key, attempt number from 1) -> action``; the key is the first user
            message's text plus the number of messages, so a re-ask is a new key.
        latency: Seconds before each answer.
        jitter: Up to this many further seconds before each answer, drawn at random
            (seeded), so that replies finish out of order.
        retry_after: Value of the ``Retry-After`` header on 429s.
        keep_payloads: Keep every request payload in :attr:`hits`.
    """

    def __init__(
        self,
        reply: ReplyFn | None = None,
        fault: FaultFn | None = None,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        retry_after: str = "0",
        keep_payloads: bool = True,
    ) -> None:
        self.reply = reply or (lambda _p: DEFAULT_REPLY)
        self.fault = fault or (lambda _k, _a: "ok")
        self.latency = float(latency)
        self.jitter = float(jitter)
        self._rng = random.Random(0)
        self.retry_after = retry_after
        self.keep_payloads = keep_payloads
        self.hits: list[Hit] = []
        self.attempts: dict[str, int] = {}
        self.port = 0
        self.in_flight = 0
        self.connections = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        """Base URL including ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FakeChatServer:
        """Start serving on an ephemeral loopback port; return self."""
        self._thread = threading.Thread(target=self._serve, name="fake-chat-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake chat server did not start")
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        loop = self._loop
        if loop is not None and self._server is not None:
            loop.call_soon_threadsafe(self._server.close)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def _next_attempt(self, key: str) -> int:
        with self._lock:
            n = self.attempts.get(key, 0) + 1
            self.attempts[key] = n
            return n

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                parts = line.decode("latin-1").split()
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if (
                    len(parts) < 2
                    or parts[0] != "POST"
                    or not parts[1].endswith("/chat/completions")
                ):
                    await self._send(writer, 404, b'{"error": "not found"}')
                    continue
                try:
                    payload = json.loads(body)
                except ValueError:
                    await self._send(writer, 400, b'{"error": "bad json"}')
                    continue
                key = f"{user_text(payload)}#{len(payload.get('messages', []))}"
                attempt = self._next_attempt(key)
                action = self.fault(key, attempt)
                hit = Hit(
                    key,
                    attempt,
                    action,
                    time.monotonic(),
                    headers.get("authorization", ""),
                    payload if self.keep_payloads else {},
                    parts[1],
                )
                with self._lock:
                    self.hits.append(hit)
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if action == "timeout":
                        await asyncio.sleep(3600)
                    delay = self.latency + (self._rng.uniform(0, self.jitter) if self.jitter else 0)
                    if delay:
                        await asyncio.sleep(delay)
                finally:
                    with self._lock:
                        self.in_flight -= 1
                if action == "timeout":
                    break
                if action == "drop":
                    break
                if action == "500":
                    await self._send(writer, 500, b'{"error": "internal"}')
                    continue
                if action == "429":
                    await self._send(
                        writer, 429, b'{"error": "slow down"}', {"Retry-After": self.retry_after}
                    )
                    continue
                if action == "malformed":
                    await self._send(writer, 200, b'{"choices": [{"message": {"content": "abc')
                    continue
                if action == "nochoices":
                    await self._send(writer, 200, b'{"object": "chat.completion"}')
                    continue
                if action == "401echo":  # a careless server that echoes the credentials
                    echo = json.dumps({"error": f"bad key {hit.authorization}"}).encode()
                    await self._send(writer, 401, echo)
                    continue
                text = self.reply(payload)
                data = json.dumps(
                    {
                        "id": f"cmpl-{attempt}",
                        "object": "chat.completion",
                        "model": payload.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                ).encode()
                if action == "truncate":
                    head = (
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n"
                    )
                    writer.write(head.encode() + data[: len(data) // 2])
                    await writer.drain()
                    break
                await self._send(writer, 200, data)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:
                pass

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            404: "Not Found",
            429: "Too Many Requests",
        }.get(status, "Internal Server Error")
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()


def main(argv: list[str] | None = None) -> int:
    """Serve until killed; print the port on the first line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args(argv)
    server = FakeChatServer(latency=args.latency, keep_payloads=False).start()
    print(server.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
