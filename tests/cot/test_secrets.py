"""The API key never leaves OpenAIBackend: not in completions, errors, logs or outputs.

A loopback server (127.0.0.1) echoes the ``Authorization`` header back in every
spelling a careless server might use (raw, JSON-escaped, percent- and HTML-encoded),
in 4xx bodies, in replies and in garbage; nothing the backend hands on may hold any
8-character piece of the key in any of those spellings.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from medcurric.cot import CoTGenerator, GenerationRequest, OpenAIBackend
from medcurric.cot.templates import QuestionType
from medcurric.errors import InvalidOptionError
from medcurric.review import write_review
from medcurric.stage import Stage
from medcurric.testing.chat_server import FakeChatServer

# Visible ASCII with every character that the encodings below spell differently.
KEY = 'sk-Zq8Vw3/Key+x"y\\z&<Pk7Rt>%41'
ENV = "MEDCURRIC_TEST_KEY"
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY", "no_proxy", "NO_PROXY")  # fmt: skip
Respond = Callable[[dict[str, Any], str], tuple[int, bytes]]


def spellings(secret: str) -> list[str]:
    """The forms a server may echo, written out independently of the backend's list."""
    escaped = json.dumps(secret)[1:-1]
    return [
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        quote(secret, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
        quote_plus(secret),
        html.escape(secret),
    ]


def leaks(text: str) -> list[str]:
    """8-character pieces of any spelling of KEY found in ``text``."""
    found = []
    for form in spellings(KEY):
        found += [form[i : i + 8] for i in range(len(form) - 7) if form[i : i + 8] in text]
    return found


def echoes(auth: str) -> str:
    """The header value in every spelling, as one text."""
    return " | ".join(spellings(auth))


class EchoServer:
    """Chat server on 127.0.0.1 answering ``respond(payload, authorization) -> (status, body)``."""

    def __init__(self, respond: Respond) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "")
                outer.authorizations.append(auth)
                status, out = outer.respond(json.loads(body), auth)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.respond = respond
        self.authorizations: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def chat(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def req(i: int) -> GenerationRequest:
    return GenerationRequest(f"r{i}", "", f"prompt {i}", Stage.HARD, QuestionType.OPEN, "t", {})


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV, KEY)
    yield monkeypatch


def backend(url: str, **kw: Any) -> OpenAIBackend:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("timeout", 5.0)
    return OpenAIBackend("m", base_url=url, api_key_env=ENV, send_images=False, **kw)


def test_error_body_is_scrubbed_before_it_is_cut(env, caplog):
    caplog.set_level(logging.DEBUG)

    def respond(payload: dict[str, Any], auth: str) -> tuple[int, bytes]:
        # The first echo straddles the 300-character cut of the error text.
        body = '{"error": "' + "x" * 265 + '", "auth": ' + json.dumps(auth)
        return 403, (body + ', "more": "' + echoes(auth).replace('"', "'") + '"}').encode()

    with EchoServer(respond) as server:
        (done,) = backend(server.url).complete([req(0)])
    assert server.authorizations == [f"Bearer {KEY}"]  # the key was sent
    assert done.text is None and done.error.startswith("HTTP 403 (not retried)")
    assert "***" in done.error
    for text in [done.error, *(r.getMessage() for r in caplog.records)]:
        assert not leaks(text), leaks(text)


def test_completion_text_is_scrubbed_in_the_backend(env, caplog):
    caplog.set_level(logging.DEBUG)

    def respond(payload: dict[str, Any], auth: str) -> tuple[int, bytes]:
        return 200, chat(f"I saw {echoes(auth)}.")

    with EchoServer(respond) as server:
        done = list(backend(server.url).complete([req(0), req(1)]))
    assert [c.error for c in done] == [None, None]
    for c in done:
        assert c.text.startswith("I saw Bearer ***") and not leaks(c.text), leaks(c.text)


def test_echoed_key_reaches_no_sample_reject_summary_or_log(
    tmp_path, env, caplog, seeds, image_root, templates, fake_reply
):
    caplog.set_level(logging.DEBUG)
    calls = []

    def respond(payload: dict[str, Any], auth: str) -> tuple[int, bytes]:
        calls.append(auth)
        kind = len(calls) % 4
        if kind == 0:  # garbage quoting the header: a reject
            return 200, chat(f"no idea; your header was {echoes(auth)}")
        if kind == 1:  # an error body that echoes it
            return 401, json.dumps({"error": f"bad key {auth}", "seen": echoes(auth)}).encode()
        reply = json.loads(fake_reply(payload))  # a good reply, with the header in its rationale
        reply["rationale"] += f" (authorised by {echoes(auth)})"
        return 200, chat(json.dumps(reply))

    with EchoServer(respond) as server:
        b = OpenAIBackend(
            "tiny", base_url=server.url, api_key_env=ENV, backoff_base=0.001, concurrency=2
        )
        gen = CoTGenerator(b, templates=templates, image_root=image_root, vocabulary={"liver": []})
        summary = gen.run(seeds[:4], tmp_path / "out.jsonl", progress=False)
    assert all(a == f"Bearer {KEY}" for a in server.authorizations)
    assert summary.accepted > 0 and summary.rejected + summary.failed > 0
    files = sorted(p for p in tmp_path.iterdir() if p.is_file() and p.suffix == ".jsonl")
    texts = [p.read_text() for p in files]
    assert any("***" in t for t in texts)  # the echoes were there, scrubbed
    report = write_review(
        tmp_path / "out.jsonl",
        tmp_path / "review",
        rejects=tmp_path / "out.rejects.jsonl",
        image_root=image_root,
        overlay=False,
    )
    pages = sorted((tmp_path / "review").glob("*.html"))
    assert len(pages) == 2 and report is not None
    texts += [p.read_text() for p in pages]
    assert "***" in texts[-2] + texts[-1]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(b), repr(gen), json.dumps(summary.to_dict()), str(vars(b))]
    for t in texts:
        assert not leaks(t), leaks(t)


def test_key_is_refused_over_plain_http_to_another_host(env, caplog):
    caplog.set_level(logging.DEBUG)
    url = "http://medcurric-test.invalid/v1"
    with pytest.raises(
        InvalidOptionError, match=r"plain http to 'http://medcurric-test\.invalid/v1'"
    ) as info:
        list(backend(url).complete([req(0)]))
    assert f"${ENV}" in str(info.value) and "allow_insecure_http" in str(info.value)
    for text in [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]:
        assert not leaks(text)
    # Without a key there is nothing to protect: the request is attempted.
    env.delenv(ENV)
    (done,) = backend(url, max_retries=0).complete([req(0)])
    assert done.text is None and "transport error" in done.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_http_gets_the_key(env, host):
    with EchoServer(lambda p, a: (200, chat("ok"))) as server:
        (done,) = backend(server.url.replace("127.0.0.1", host)).complete([req(0)])
    assert done.text == "ok" and server.authorizations == [f"Bearer {KEY}"]


def test_key_is_refused_through_a_plain_http_proxy_on_another_host(env):
    env.setenv("http_proxy", "http://user:pw@medcurric-proxy.invalid:3128")
    b = backend("http://127.0.0.1:9/v1")
    with pytest.raises(
        InvalidOptionError, match=r"'http://medcurric-proxy\.invalid:3128' \(the http proxy"
    ) as info:
        list(b.complete([req(0)]))
    assert "pw" not in str(info.value) and not leaks(str(info.value))
    env.setenv("no_proxy", "127.0.0.1")  # the proxy is bypassed: loopback only
    (done,) = backend("http://127.0.0.1:9/v1", max_retries=0).complete([req(0)])
    assert "transport error" in done.error  # tried (nothing listens on port 9)


def test_insecure_http_is_an_explicit_opt_in(env):
    # Through an http proxy on loopback: the request for the remote host carries the key.
    with FakeChatServer(reply=lambda p: "ok") as proxy:
        env.setenv("http_proxy", proxy.url.removesuffix("/v1"))
        (done,) = backend("http://medcurric-test.invalid/v1", allow_insecure_http=True).complete(
            [req(0)]
        )
    assert done.text == "ok"
    (hit,) = proxy.hits
    assert hit.target == "http://medcurric-test.invalid/v1/chat/completions"
    assert hit.authorization == f"Bearer {KEY}"
