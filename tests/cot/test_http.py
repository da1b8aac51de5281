"""The stdlib HTTP/1.1 client of OpenAIBackend, against independent servers.

Two kinds of server: Python's own ``http.server`` (an independent HTTP/1.1
implementation, for round trips, keep-alive and TLS) and a scripted socket server
that sends exact bytes (chunked coding, gzip, informational replies, early closes,
malformed replies), so every framing path is driven by a reply we wrote by hand.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import zlib
from collections.abc import Callable

import pytest

from medcurric.cot._http import Connection, HTTPTimeout, HTTPTransportError, Target

# --------------------------------------------------------------------------- servers


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = json.dumps(
            {
                "path": self.path,
                "host": self.headers["Host"],
                "auth": self.headers.get("Authorization"),
                "type": self.headers["Content-Type"],
                "body": json.loads(body),
                "port": self.client_address[1],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


class _StdlibServer:
    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _StdlibServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


Script = Callable[[socket.socket, bytes], bool]


class _ScriptedServer:
    """Each request is answered by the next script step: ``step(sock, request) -> keep open``."""

    def __init__(self, steps: list[Script]) -> None:
        self.steps = list(steps)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            f = conn.makefile("rb")
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
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
                if not self.steps or not self.steps.pop(0)(conn, request):
                    return


def _send(raw: bytes, keep: bool = True) -> Script:
    def step(conn: socket.socket, _request: bytes) -> bool:
        conn.sendall(raw)
        return keep

    return step


def _ok(body: bytes = b'{"ok": 1}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def _post(conn: Connection, path: str = "/v1/x", body: bytes = b"{}"):  # type: ignore[no-untyped-def]
    return asyncio.run(conn.post_json(path, body))


def _posts(conn: Connection, n: int, body: bytes = b"{}"):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        try:
            return [await conn.post_json("/v1/x", body) for _ in range(n)]
        finally:
            await conn.close()

    return asyncio.run(go())


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "path", "host_header"),
    [
        ("http://127.0.0.1:8000/v1", "127.0.0.1", 8000, False, "/v1/chat", "127.0.0.1:8000"),
        (
            "https://api.example.com/v1/",
            "api.example.com",
            443,
            True,
            "/v1/chat",
            "api.example.com",
        ),
        ("http://example.com", "example.com", 80, False, "/chat", "example.com"),
        ("http://[::1]:9/v1?k=1", "::1", 9, False, "/v1/chat?k=1", "[::1]:9"),
    ],
)
def test_target_from_url(url, host, port, tls, path, host_header):
    t = Target.from_url(url)
    assert (t.host, t.port, t.tls, t.path("/chat"), t.host_header) == (
        host,
        port,
        tls,
        path,
        host_header,
    )


@pytest.mark.parametrize("url", ["ftp://x/v1", "http:///v1", "http://u:p@h/v1", "http://h:99999"])
def test_target_rejects_bad_urls(url):
    with pytest.raises(ValueError, match="Expected"):
        Target.from_url(url)


def test_round_trip_and_keep_alive_against_http_server():
    with _StdlibServer() as server:
        conn = Connection(
            Target.from_url(f"http://127.0.0.1:{server.port}/v1"),
            timeout=5,
            headers={"Authorization": "Bearer k"},
        )
        body = json.dumps({"text": "héllo ✓", "n": list(range(2000))}).encode()
        replies = _posts(conn, 3, body)
    got = [json.loads(r.body) for r in replies]
    assert all(r.status == 200 and r.headers["content-type"] == "application/json" for r in replies)
    assert all(g["body"] == json.loads(body) for g in got)
    assert {g["path"] for g in got} == {"/v1/x"}
    assert {g["auth"] for g in got} == {"Bearer k"}
    assert {g["host"] for g in got} == {f"127.0.0.1:{server.port}"}
    assert len({g["port"] for g in got}) == 1  # all three on one kept-alive connection


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cmd = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]  # fmt: skip
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("openssl could not make a test certificate")
    return d / "cert.pem", d / "key.pem"


def test_tls_round_trip_and_certificate_check(tls_files):
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    with _StdlibServer(server_ctx) as server:
        target = Target.from_url(f"https://localhost:{server.port}/v1")
        (reply,) = _posts(Connection(target, timeout=5, ssl_context=trusting), 1, b'{"a": 1}')
        assert json.loads(reply.body)["body"] == {"a": 1}
        # The default context does not trust a self-signed certificate.
        with pytest.raises(HTTPTransportError, match="cannot connect"):
            _post(Connection(target, timeout=5))


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n", b"abcdefg"),
        (_ok(gzip.compress(b'{"z": 1}'), b"Content-Encoding: gzip\r\n"), b'{"z": 1}'),
        (_ok(zlib.compress(b"deflated"), b"Content-Encoding: deflate\r\n"), b"deflated"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after 100"), b"after 100"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-A:  spaced  \r\n\r\nhi", b"hi"),
    ],
)  # fmt: skip
def test_reply_framings(raw, body):
    with _ScriptedServer([_send(raw), _send(_ok(b"next"))]) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=5)
        first, second = _posts(conn, 2)
    assert (first.status, first.body) == (200, body)
    assert second.body == b"next"
    assert server.connections == 1  # the framing left the connection usable


def test_body_to_end_of_connection_and_connection_close():
    steps = [
        _send(b"HTTP/1.1 200 OK\r\n\r\nuntil EOF", keep=False),
        _send(_ok(b"closing", b"Connection: close\r\n"), keep=False),
        _send(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!", keep=False),
        _send(_ok(b"fresh")),
    ]
    with _ScriptedServer(steps) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=5)
        bodies = [r.body for r in _posts(conn, 4)]
    assert bodies == [b"until EOF", b"closing", b"old!", b"fresh"]
    assert server.connections == 4  # reopened after each close, without an error
    assert conn.requests_sent == 4  # ... and without first trying the closed one


def test_idle_connection_closed_by_server_is_resent_once():
    def close_silently(conn: socket.socket, _request: bytes) -> bool:
        return False  # read the request, close without a reply (an idle-timeout race)

    steps = [_send(_ok(b"one")), close_silently, _send(_ok(b"two"))]
    with _ScriptedServer(steps) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=5)
        bodies = [r.body for r in _posts(conn, 2)]
    assert bodies == [b"one", b"two"]
    assert len(server.requests) == 3 and server.connections == 2


def test_fresh_connection_closed_without_reply_is_an_error():
    def close_silently(conn: socket.socket, _request: bytes) -> bool:
        return False

    with _ScriptedServer([close_silently, close_silently]) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=5)
        with pytest.raises(HTTPTransportError, match="without a reply"):
            _post(conn)
    assert len(server.requests) == 1  # not resent: the connection was new


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "inside the reply body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "inside the reply body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Len", "inside the reply headers"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "out of range"),
        (_ok(b"not gzip", b"Content-Encoding: gzip\r\n"), "cannot decode the gzip"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "longer than"),
    ],
)
def test_broken_replies_raise_transport_errors(raw, match):
    with _ScriptedServer([_send(raw, keep=False), _send(_ok(b"ok"))]) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=5)

        async def go():  # type: ignore[no-untyped-def]
            with pytest.raises(HTTPTransportError, match=match):
                await conn.post_json("/x", b"{}")
            ok = await conn.post_json("/x", b"{}")  # and the connection recovers
            await conn.close()
            return ok

        assert asyncio.run(go()).body == b"ok"


def test_timeout_then_recovery():
    def hang(conn: socket.socket, _request: bytes) -> bool:
        threading.Event().wait(2.0)
        return False

    with _ScriptedServer([hang, _send(_ok(b"late ok"))]) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=0.2)

        async def go():  # type: ignore[no-untyped-def]
            with pytest.raises(HTTPTimeout, match=r"within 0\.2 s"):
                await conn.post_json("/x", b"{}")
            task = asyncio.current_task()
            assert task is not None and getattr(task, "cancelling", lambda: 0)() == 0
            reply = await conn.post_json("/x", b"{}")
            await conn.close()
            return reply

        assert asyncio.run(go()).body == b"late ok"


def test_connect_refused_and_header_injection():
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    with pytest.raises(HTTPTransportError, match="cannot connect"):
        _post(Connection(Target.from_url(f"http://127.0.0.1:{free}"), timeout=2))
    with pytest.raises(ValueError, match="line breaks"):
        Connection(Target.from_url("http://h"), timeout=1, headers={"X": "a\r\nEvil: 1"})


def test_connection_the_server_closed_while_idle_is_not_reused():
    # The server answers and closes (an idle timeout) without saying "Connection: close".
    steps = [_send(_ok(b"one"), keep=False), _send(_ok(b"two"))]
    with _ScriptedServer(steps) as server:
        conn = Connection(Target.from_url(f"http://127.0.0.1:{server.port}"), timeout=5)

        async def go():  # type: ignore[no-untyped-def]
            first = await conn.post_json("/x", b"{}")
            await asyncio.sleep(0.1)  # the close reaches the client while it is idle
            second = await conn.post_json("/x", b"{}")
            await conn.close()
            return [first.body, second.body]

        assert asyncio.run(go()) == [b"one", b"two"]
    assert conn.requests_sent == 2 and len(server.requests) == 2 and server.connections == 2
