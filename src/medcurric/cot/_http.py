"""A small HTTP/1.1 client on asyncio streams, for :class:`~medcurric.cot.OpenAIBackend`.

It does what a chat-completions client needs and nothing more: ``POST`` a JSON body
over one keep-alive connection (plain TCP or TLS), read a reply framed by
``Content-Length``, chunked transfer coding or the end of the connection, undo
``gzip``/``deflate`` content coding, and time each phase out. There is no pool:
the caller holds one :class:`Connection` per concurrency slot. General-purpose
clients spend a few milliseconds of CPU per request on pool bookkeeping, header
models and event hooks; this one spends well under one, which is what lets one
process keep hundreds of requests per second in flight.

Errors are :class:`HTTPTimeout` (a phase took longer than the timeout) and
:class:`HTTPTransportError` (connect failures, resets, truncated or unparseable
replies). Proxies are not supported; the backend uses ``httpx`` when one is set.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Connection", "HTTPTimeout", "HTTPTransportError", "Response", "Target"]

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 256 * 1024 * 1024


class HTTPTransportError(Exception):
    """The exchange failed below HTTP: connect error, reset, truncated or malformed reply."""


class HTTPTimeout(HTTPTransportError):
    """Connecting, sending or reading took longer than the timeout."""


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme, host, port and the path prefix of a base URL.

    Examples:
        >>> t = Target.from_url("http://127.0.0.1:8000/v1")
        >>> t.host, t.port, t.tls, t.path("/chat/completions")
        ('127.0.0.1', 8000, False, '/v1/chat/completions')
        >>> Target.from_url("https://api.example.com/v1").host_header
        'api.example.com'
    """

    host: str
    port: int
    tls: bool
    prefix: str
    query: str = ""

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Parse an ``http://`` or ``https://`` base URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Expected an http:// or https:// URL with a host, but got {url!r}.")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise ValueError(f"Expected a valid port in {url!r}: {exc}") from None
        if parts.username or parts.password:
            raise ValueError("Expected no credentials in the base URL; use api_key_env instead.")
        return cls(parts.hostname, port, tls, parts.path.rstrip("/"), parts.query)

    @property
    def host_header(self) -> str:
        """The ``Host`` header value (the port only when it is not the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def path(self, suffix: str) -> str:
        """The request target for ``suffix`` under the base URL's path."""
        path = f"{self.prefix}{suffix}" or "/"
        return f"{path}?{self.query}" if self.query else path


@dataclass(frozen=True)
class Response:
    """A reply: status code, headers (names lower-cased, last value wins) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection, opened on first use and reopened when needed.

    Not safe for concurrent use: one request at a time (hold one per slot).

    Args:
        target: Where to connect.
        timeout: Seconds for connecting, then again for sending the request and
            reading the whole reply.
        ssl_context: TLS settings for ``https`` targets (default: system trust store).
        headers: Extra request headers sent with every request (e.g. ``Authorization``).
    """

    def __init__(
        self,
        target: Target,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.timeout = float(timeout)
        self._ssl = ssl_context if target.tls else None
        if target.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        lines = [f"Host: {target.host_header}", "Accept: application/json"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("Expected header values without line breaks.")
        self._fixed_head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.requests_sent = 0

    async def close(self) -> None:
        """Close the connection (it reopens on the next request)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError, asyncio.CancelledError):
                pass

    def abort(self) -> None:
        """Drop the connection without waiting (after an error or a cancellation)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            transport = writer.transport
            transport.abort()

    async def post_json(self, path: str, body: bytes) -> Response:
        """``POST`` a JSON body to ``path`` and return the whole reply.

        A request on a reused connection that the server had already closed (no byte
        of a reply came back) is sent once more on a fresh connection, as browsers and
        HTTP libraries do; every other failure is raised.

        Raises:
            HTTPTimeout: A phase took longer than the timeout.
            HTTPTransportError: The exchange failed or the reply is not valid HTTP/1.x.
        """
        head = (
            f"POST {path} HTTP/1.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode("latin-1")
        message = b"".join((head, self._fixed_head, b"\r\n", body))
        if self._writer is not None and (self._writer.is_closing() or self._reader_at_eof()):
            self.abort()  # the server has already closed this idle connection
        if self._writer is not None:
            try:
                return await self._exchange(message)
            except _StaleConnection:
                pass  # the server closed the idle connection; one more try on a new one
        try:
            return await self._exchange(message)
        except _StaleConnection:
            raise HTTPTransportError("the server closed the connection without a reply") from None

    def _reader_at_eof(self) -> bool:
        return self._reader is not None and self._reader.at_eof()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.target
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    t.host,
                    t.port,
                    ssl=self._ssl,
                    server_hostname=t.host if self._ssl is not None else None,
                    limit=_MAX_HEADER_BYTES,
                ),
                self.timeout,
            )
        except asyncio.TimeoutError:
            raise HTTPTimeout(f"connecting to {t.host}:{t.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise HTTPTransportError(f"cannot connect to {t.host}:{t.port}: {exc}") from None
        self._reader, self._writer = reader, writer
        return reader, writer

    async def _exchange(self, message: bytes) -> Response:
        if self._writer is None or self._reader is None:
            reader, writer = await self._open()
        else:
            reader, writer = self._reader, self._writer
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            if task is not None:
                task.cancel()

        timer = loop.call_later(self.timeout, expire)
        started = [False]
        try:
            writer.write(message)
            self.requests_sent += 1
            response, keep = await self._read_response(reader, writer, started)
        except asyncio.CancelledError:
            self.abort()
            if timed_out and task is not None:
                if hasattr(task, "uncancel"):  # Python >= 3.11: undo our own cancel request
                    task.uncancel()
                raise HTTPTimeout(f"no complete reply within {self.timeout:g} s") from None
            raise
        except (ConnectionError, ssl.SSLError) as exc:
            self.abort()
            if not started[0]:
                raise _StaleConnection() from None
            raise HTTPTransportError(f"connection failed: {exc}") from None
        except BaseException:
            self.abort()
            raise
        finally:
            timer.cancel()
        if not keep:
            self.abort()
        return response

    async def _read_response(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: list[bool]
    ) -> tuple[Response, bool]:
        await writer.drain()
        while True:
            try:
                block = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and not started[0]:
                    raise _StaleConnection() from None
                raise HTTPTransportError("the connection closed inside the reply headers") from None
            except asyncio.LimitOverrunError:
                raise HTTPTransportError(
                    f"the reply headers are longer than {_MAX_HEADER_BYTES} bytes"
                ) from None
            started[0] = True
            status, version, headers = _parse_head(block)
            if status >= 200 or status == 101:
                break
            # 1xx informational replies (100 Continue, 103 Early Hints) precede the real one.
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        body = await _read_body(reader, status, chunked, length)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                body = _inflate(body, encoding)
            except zlib.error as exc:
                raise HTTPTransportError(
                    f"cannot decode the {encoding} reply body: {exc}"
                ) from None
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        if not chunked and length is None:
            keep = False  # the body ran to the end of the connection
        return Response(status, headers, body), keep


class _StaleConnection(Exception):
    pass


def _parse_head(block: bytes) -> tuple[int, str, dict[str, str]]:
    text = block.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPTransportError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HTTPTransportError(f"malformed header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return int(parts[1]), parts[0], headers


async def _read_body(
    reader: asyncio.StreamReader, status: int, chunked: bool, length: str | None
) -> bytes:
    """The reply body, framed by chunked coding, ``Content-Length`` or the connection's end."""
    if status in (101, 204, 304):  # no body (1xx other than 101 were skipped before)
        return b""
    try:
        if chunked:
            return await _read_chunked(reader)
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise HTTPTransportError(f"bad Content-Length {length[:40]!r}") from None
            if n < 0 or n > _MAX_BODY_BYTES:
                raise HTTPTransportError(f"Content-Length {n} out of range")
            return await reader.readexactly(n)
        chunks: list[bytes] = []
        total = 0
        while chunk := await reader.read(_MAX_BODY_BYTES + 1 - total):
            chunks.append(chunk)
            total += len(chunk)
            if total > _MAX_BODY_BYTES:
                raise HTTPTransportError(f"reply body longer than {_MAX_BODY_BYTES} bytes")
        return b"".join(chunks)
    except asyncio.IncompleteReadError as exc:
        raise HTTPTransportError(
            f"the connection closed inside the reply body ({len(exc.partial)} bytes read)"
        ) from None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HTTPTransportError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if size < 0 or total > _MAX_BODY_BYTES:
                raise HTTPTransportError(f"reply body longer than {_MAX_BODY_BYTES} bytes")
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise HTTPTransportError("chunk not followed by CRLF")
    except asyncio.LimitOverrunError:
        raise HTTPTransportError("chunk header line too long") from None


def _inflate(body: bytes, encoding: str) -> bytes:
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    return zlib.decompress(body, 16 + zlib.MAX_WBITS)
