"""OpenAIBackend's HTTP path (aiohttp) against loopback servers on 127.0.0.1.

Two kinds of server: the package's chat server (keep-alive, proxy-style absolute
targets) and a scripted socket server that answers each request with exact bytes
we wrote by hand, so hostile replies (broken status lines, non-ASCII digits, a gzip
bomb, garbage or deeply nested JSON) reach the client as they would from the wire.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import socket
import threading
import tracemalloc
from collections.abc import Callable

import pytest

from medcurric.cot import Completion, GenerationRequest, OpenAIBackend
from medcurric.cot.templates import QuestionType
from medcurric.errors import InvalidOptionError
from medcurric.stage import Stage
from medcurric.testing.chat_server import FakeChatServer, user_text

Respond = Callable[[bytes], bytes]
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY", "no_proxy", "NO_PROXY")  # fmt: skip


class _ScriptedServer:
    """Answers each request with ``respond(request bytes)``, then closes the connection."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # wakes the blocked accept() on Linux
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)

    def _serve(self) -> None:
        for _ in range(200):  # bounded: no test sends this many
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            f = conn.makefile("rb")
            head = b""
            while not head.endswith(b"\r\n\r\n") and len(head) < 1 << 16:
                line = f.readline()
                if not line:
                    return
                head += line
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            request = head + f.read(length)
            self.requests.append(request)
            try:
                conn.sendall(self.respond(request))
            except OSError:
                pass


def _prompt(request: bytes) -> str:
    return user_text(json.loads(request.split(b"\r\n\r\n", 1)[1]))


def _chat(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def _reply(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n%s\r\n%s" % (status, len(body), extra, body)
    )


def _req(i: int, prompt: str | None = None) -> GenerationRequest:
    text = prompt if prompt is not None else f"prompt {i}"
    return GenerationRequest(f"r{i}", "", text, Stage.HARD, QuestionType.OPEN, "t", {})


def _run(url: str, reqs: list[GenerationRequest], **kw: object) -> dict[str, Completion]:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("timeout", 5.0)
    b = OpenAIBackend("m", base_url=url, send_images=False, **kw)  # type: ignore[arg-type]
    return {c.request.id: c for c in b.complete(reqs)}


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- body cap


def test_body_cap_is_inclusive_and_fails_only_that_request(no_proxy_env):
    body = _chat("fits")
    with _ScriptedServer(lambda r: _reply(body)) as server:
        ok = _run(server.url, [_req(0)], max_response_bytes=len(body))
        over = _run(server.url, [_req(0)], max_response_bytes=len(body) - 1, max_retries=3)
    assert ok["r0"].text == "fits" and ok["r0"].error is None
    c = over["r0"]
    assert c.text is None and c.attempts == 1  # not retried: the same reply would come again
    assert f"max_response_bytes={len(body) - 1}" in c.error
    assert len(server.requests) == 2


def test_gzip_bomb_is_stopped_at_the_cap_without_holding_it(no_proxy_env):
    inflated = 64 << 20
    bomb = gzip.compress(b"[" + b" " * (inflated - 2) + b"]", compresslevel=9)
    cap = 1 << 20

    def respond(request: bytes) -> bytes:
        if _prompt(request) == "bomb":
            return _reply(bomb, extra=b"Content-Encoding: gzip\r\n")
        return _reply(_chat("fine"))

    with _ScriptedServer(respond) as server:
        tracemalloc.start()
        try:
            done = _run(server.url, [_req(0, "bomb"), _req(1)], max_response_bytes=cap)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(bomb) < cap < inflated
    assert done["r1"].text == "fine"
    assert done["r0"].text is None and "max_response_bytes" in done["r0"].error
    assert peak < 4 * cap, f"peak {peak / 2**20:.1f} MiB while reading a capped reply"


# --------------------------------------------------------------------------- hostile replies

HOSTILE = {
    "garbage status line": b"SPDY/9 what\r\n\r\n",
    "letters in the status code": b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}",
    "non-ASCII digits in the status code": "HTTP/1.1 ２００ OK\r\nContent-Length: 2\r\n\r\n{}".encode(),
    "non-ASCII digits in Content-Length": "HTTP/1.1 200 OK\r\nContent-Length: ٢\r\n\r\n{}".encode(),
    "header line without a colon": b"HTTP/1.1 200 OK\r\nContent-Length 2\r\nbroken\r\n\r\n{}",
    "body shorter than Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{}",
    "closed before replying": b"",
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_reply_fails_that_request_with_a_reason(no_proxy_env, raw):
    def respond(request: bytes) -> bytes:
        return raw if _prompt(request) == "hostile" else _reply(_chat("fine"))

    with _ScriptedServer(respond) as server:
        done = _run(server.url, [_req(0, "hostile"), _req(1), _req(2)], max_retries=1)
    assert done["r1"].text == done["r2"].text == "fine"
    c = done["r0"]
    assert c.text is None and c.attempts == 2
    assert c.error.startswith("gave up after 2 attempts: transport error (")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not json", "malformed response body"),
        (b"[" * 200_000 + b"]" * 200_000, "JSON nested too deeply"),
        (b'{"choices": [{"message": {"content": 7}}]}', "content is int, not text"),
    ],
    ids=["garbage", "deeply nested", "wrong type"],
)
def test_bad_json_fails_that_request_with_a_reason(no_proxy_env, body, reason):
    def respond(request: bytes) -> bytes:
        return _reply(body) if _prompt(request) == "bad" else _reply(_chat("fine"))

    with _ScriptedServer(respond) as server:
        done = _run(server.url, [_req(0, "bad"), _req(1)], max_retries=1)
    assert done["r1"].text == "fine"
    assert done["r0"].text is None and reason in done["r0"].error


# --------------------------------------------------------------------------- proxies


def test_proxy_from_the_environment_is_used(no_proxy_env):
    with FakeChatServer(reply=lambda p: f"via proxy: {user_text(p)}") as proxy:
        no_proxy_env.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        # .invalid never resolves: only the proxy can have answered.
        done = _run("http://medcurric-test.invalid/v1", [_req(0)], max_retries=0)
    assert done["r0"].error is None and done["r0"].text == "via proxy: prompt 0"
    (hit,) = proxy.hits
    assert hit.target == "http://medcurric-test.invalid/v1/chat/completions"  # absolute form


def test_no_proxy_bypasses_the_proxy(no_proxy_env):
    with socket.create_server(("127.0.0.1", 0)) as dead:
        no_proxy_env.setenv("http_proxy", f"http://127.0.0.1:{dead.getsockname()[1]}")
    no_proxy_env.setenv("no_proxy", "127.0.0.1")
    with FakeChatServer() as server:
        done = _run(server.url, [_req(0)], max_retries=0)
    assert done["r0"].error is None and server.hits[0].target == "/v1/chat/completions"


def test_proxy_credentials_from_the_url_go_in_proxy_authorization(no_proxy_env):
    with _ScriptedServer(lambda r: _reply(_chat("fine"))) as proxy:
        port = proxy.url.split(":")[2].split("/")[0]
        no_proxy_env.setenv("http_proxy", f"http://us%40er:p%3Ass@127.0.0.1:{port}")
        done = _run("http://medcurric-test.invalid/v1", [_req(0)], max_retries=0)
    assert done["r0"].text == "fine"
    (request,) = proxy.requests
    assert request.startswith(b"POST http://medcurric-test.invalid/v1/chat/completions ")
    expected = base64.b64encode(b"us@er:p:ss")
    assert b"\r\nProxy-Authorization: Basic " + expected + b"\r\n" in request


def test_key_is_not_sent_to_a_proxy_tunnelling_https(no_proxy_env):
    sentinel = "sk-SENTINEL-for-the-server-only"
    no_proxy_env.setenv("MEDCURRIC_TEST_KEY", sentinel)
    with _ScriptedServer(lambda r: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n") as proxy:
        no_proxy_env.setenv("https_proxy", proxy.url.removesuffix("/v1"))
        done = _run(
            "https://medcurric-test.invalid/v1",
            [_req(0)],
            api_key_env="MEDCURRIC_TEST_KEY",
            max_retries=0,
        )
    (connect,) = proxy.requests
    assert connect.startswith(b"CONNECT medcurric-test.invalid:443 ")
    assert sentinel.encode() not in connect and b"authorization" not in connect.lower()
    assert done["r0"].text is None and "transport error" in done["r0"].error


# --------------------------------------------------------------------------- keep-alive


def test_each_reply_goes_to_its_own_request_over_kept_alive_connections(no_proxy_env):
    with FakeChatServer(reply=lambda p: f"echo {user_text(p)}", jitter=0.03) as server:
        done = _run(server.url, [_req(i) for i in range(60)], concurrency=6)
    assert len(done) == 60 and len(server.hits) == 60
    assert all(c.text == f"echo {c.request.prompt}" for c in done.values())
    assert server.connections <= 6 < len(server.hits)  # connections were reused
    assert server.max_in_flight == 6


# --------------------------------------------------------------------------- secrets


def test_key_with_trailing_newline_is_sent_without_it(no_proxy_env):
    no_proxy_env.setenv("MEDCURRIC_TEST_KEY", "sk-abc123\n")
    with FakeChatServer() as server:
        done = _run(server.url, [_req(0)], api_key_env="MEDCURRIC_TEST_KEY")
    assert done["r0"].error is None
    assert server.hits[0].authorization == "Bearer sk-abc123"


def test_netrc_credentials_are_not_sent_in_place_of_the_key(no_proxy_env, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password elsewhere\n")
    netrc.chmod(0o600)
    no_proxy_env.setenv("NETRC", str(netrc))
    no_proxy_env.setenv("MEDCURRIC_TEST_KEY", "sk-abc123")
    with FakeChatServer() as server:
        done = _run(server.url, [_req(0)], api_key_env="MEDCURRIC_TEST_KEY")
    assert done["r0"].error is None
    assert server.hits[0].authorization == "Bearer sk-abc123"


@pytest.mark.parametrize("key", ["sk-SECRET\nX-Injected: 1", "sk-SECRET with space", "sk-SECRÉT"])
def test_unsendable_key_is_refused_without_showing_it(no_proxy_env, key, caplog):
    caplog.set_level(logging.DEBUG)
    no_proxy_env.setenv("MEDCURRIC_TEST_KEY", key)
    b = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env="MEDCURRIC_TEST_KEY")
    with pytest.raises(InvalidOptionError, match=r"\$MEDCURRIC_TEST_KEY") as info:
        list(b.complete([_req(0)]))
    shown = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]
    assert not any("SECRET" in s or "SECRÉT" in s for s in shown)


def test_key_never_in_transport_errors_or_logs(no_proxy_env, caplog):
    caplog.set_level(logging.DEBUG)
    sentinel = "sk-SENTINEL-never-shown"
    no_proxy_env.setenv("MEDCURRIC_TEST_KEY", sentinel)

    def respond(request: bytes) -> bytes:  # a broken status line that echoes the header
        (auth,) = [h for h in request.split(b"\r\n") if h.lower().startswith(b"authorization")]
        return b"HTTP/1.1 4x1 " + auth + b"\r\n\r\n"

    with _ScriptedServer(respond) as server:
        done = _run(server.url, [_req(0)], api_key_env="MEDCURRIC_TEST_KEY", max_retries=2)
    assert all(f"Bearer {sentinel}".encode() in r for r in server.requests)  # the key was sent
    c = done["r0"]
    assert c.text is None and "transport error" in c.error and "Bearer ***" in c.error
    for text in [c.error, *(r.getMessage() for r in caplog.records)]:
        assert sentinel not in text
