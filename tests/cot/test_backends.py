from __future__ import annotations

import base64
import json
import logging
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from medcurric.cot import (
    CoTGenerator,
    GenerationRequest,
    OpenAIBackend,
    TemplateBackend,
    TransformersBackend,
    parse_reply,
)
from medcurric.cot.templates import QuestionType
from medcurric.errors import InvalidOptionError
from medcurric.io import load_rgb as io_load_rgb
from medcurric.stage import Stage
from medcurric.testing.chat_server import DEFAULT_REPLY, FakeChatServer


def req(i, image=None):
    return GenerationRequest(
        f"r{i}",
        "sys",
        f"prompt {i}",
        Stage.MEDIUM,
        QuestionType.OPEN,
        "t",
        {"lesion": "cyst", "organ": "liver"},
        image_path=image,
    )


def backend(server, **kw):
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("timeout", 5.0)
    return OpenAIBackend("tiny", base_url=server.url, **kw)


def test_template_backend_is_deterministic():
    reqs = [req(i) for i in range(3)]
    a = [c.text for c in TemplateBackend().complete(reqs)]
    b = [c.text for c in TemplateBackend().complete(reqs)]
    assert a == b and all(parse_reply(t).answer for t in a)


def test_openai_round_trip_payload_and_bounded_concurrency(image_root):
    img = image_root / "img/1.png"
    with FakeChatServer(latency=0.05) as server:
        done = list(backend(server, concurrency=3).complete([req(i, img) for i in range(12)]))
    assert sorted(c.request.id for c in done) == sorted(f"r{i}" for i in range(12))
    assert all(c.text == DEFAULT_REPLY and c.error is None and c.attempts == 1 for c in done)
    assert 1 < server.max_in_flight <= 3
    payload = server.hits[0].payload
    assert payload["model"] == "tiny" and payload["max_tokens"] == 512
    (content,) = [m["content"] for m in payload["messages"] if m["role"] == "user"]
    image = next(p for p in content if p["type"] == "image_url")["image_url"]["url"]
    assert image.startswith("data:image/png;base64,")
    # the pixels of load_rgb re-encoded, not the file's bytes (no metadata leaves the machine)
    sent = Image.open(BytesIO(base64.b64decode(image.split(",", 1)[1])))
    assert np.array_equal(np.asarray(sent.convert("RGB")), io_load_rgb(img))
    assert any(p["type"] == "text" and "prompt" in p["text"] for p in content)


def test_16bit_images_are_sent_as_8bit_png(image_root):
    with FakeChatServer() as server:
        list(backend(server).complete([req(0, image_root / "img/2.png")]))
    url = server.hits[0].payload["messages"][0]["content"][0]["image_url"]["url"]
    im = Image.open(BytesIO(base64.b64decode(url.split(",", 1)[1])))
    # a windowed grey slice goes as an 8-bit one-channel PNG; decoded to RGB it is what models see
    assert im.mode == "L" and im.size == (80, 64)
    assert np.array_equal(np.asarray(im.convert("RGB")), io_load_rgb(image_root / "img/2.png"))


@pytest.mark.parametrize(
    "fault", ["500", "429", "timeout", "drop", "truncate", "malformed", "nochoices"]
)
def test_each_fault_is_retried(fault):
    def plan(key, attempt):
        return fault if attempt <= 2 else "ok"

    with FakeChatServer(fault=plan) as server:
        b = backend(server, timeout=0.3, max_retries=3)
        done = list(b.complete([req(0), req(1)]))
    assert [c.error for c in done] == [None, None]
    assert all(c.attempts == 3 and c.text == DEFAULT_REPLY for c in done)
    assert len(server.hits) == 6


def test_retry_after_is_honoured():
    with FakeChatServer(fault=lambda k, a: "429" if a == 1 else "ok", retry_after="0.3") as server:
        (c,) = list(backend(server, backoff_base=0.0).complete([req(0)]))
    assert c.error is None and c.attempts == 2
    first, second = server.hits
    assert second.time - first.time >= 0.29


def test_attempt_cap_and_non_retryable_status():
    with FakeChatServer(fault=lambda k, a: "500") as server:
        (c,) = list(backend(server, max_retries=2).complete([req(0)]))
    assert c.text is None and c.attempts == 3 and "HTTP 500" in c.error and len(server.hits) == 3
    with FakeChatServer(fault=lambda k, a: "401echo") as server:
        (c,) = list(backend(server, max_retries=5).complete([req(0)]))
    assert c.text is None and c.attempts == 1 and "401" in c.error and len(server.hits) == 1


def test_connection_refused_gives_up_with_a_reason():
    with FakeChatServer() as server:
        url = server.url
    b = OpenAIBackend("m", base_url=url, max_retries=1, backoff_base=0.001, timeout=1.0)
    (c,) = list(b.complete([req(0)]))
    assert c.text is None and c.attempts == 2 and "transport error" in c.error


def test_backoff_is_capped_exponential_with_jitter():
    b = OpenAIBackend("m", backoff_base=0.5, backoff_max=4.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        draws = [b.backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.5 * ceiling and len(set(draws)) > 100


def test_closing_early_cancels_in_flight_requests():
    with FakeChatServer(
        latency=0.05, fault=lambda k, a: "timeout" if "prompt 5" in k else "ok"
    ) as server:
        it = backend(server, concurrency=8, timeout=30).complete([req(i) for i in range(8)])
        first = next(it)
        it.close()  # must not wait 30 s for the hanging request
    assert first.error is None


def test_bad_options():
    with pytest.raises(InvalidOptionError):
        OpenAIBackend("m", concurrency=0)
    with pytest.raises(InvalidOptionError):
        OpenAIBackend("m", base_url="ftp://x")
    with pytest.raises(InvalidOptionError):
        OpenAIBackend("")
    with pytest.raises(InvalidOptionError, match="credentials"):
        OpenAIBackend("m", base_url="http://user:pw@127.0.0.1/v1")
    with pytest.raises(InvalidOptionError, match="max_response_bytes"):
        OpenAIBackend("m", max_response_bytes=0)


def test_api_key_never_leaks(
    tmp_path, monkeypatch, caplog, seeds, image_root, templates, fake_reply
):
    sentinel = "sk-SENTINEL-7f3a9c-do-not-leak"
    monkeypatch.setenv("MEDCURRIC_TEST_KEY", sentinel)
    caplog.set_level(logging.DEBUG)

    def plan(key, attempt):
        if "part of the liver" in key and attempt == 1:
            return "500"
        if "part of the spleen" in key:
            return "401echo"  # the server echoes the Authorization header in its error body
        return "ok"

    with FakeChatServer(reply=fake_reply, fault=plan) as server:
        b = OpenAIBackend(
            "tiny",
            base_url=server.url,
            api_key_env="MEDCURRIC_TEST_KEY",
            backoff_base=0.001,
        )
        gen = CoTGenerator(b, templates=templates, image_root=image_root, vocabulary={"liver": []})
        summary = gen.run(seeds[:3], tmp_path / "out.jsonl", progress=False)
    assert all(h.authorization == f"Bearer {sentinel}" for h in server.hits)  # the key was used
    assert summary.failed > 0 and summary.accepted > 0
    texts = [p.read_text() for p in tmp_path.iterdir() if p.is_file()]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(b), repr(gen), json.dumps(summary.to_dict()), str(vars(b))]
    assert any("401" in t for t in texts)  # the echoing error was reported ...
    for t in texts:
        assert sentinel not in t  # ... but scrubbed


@pytest.mark.slow
def test_transformers_backend_with_tiny_vlm(tmp_path, seeds, image_root):
    tiny = pytest.importorskip("medcurric.testing.tiny")
    vlm = tiny.build_tiny_vlm(seed=0)
    b = TransformersBackend(
        vlm.model,
        vlm.processor,
        batch_size=2,
        max_new_tokens=8,
        dtype="float32",
        device="cpu",
        model_name="tiny-vip-llava",
    )
    assert "tiny-vip-llava" in repr(b)
    reqs = [req(i, image_root / f"img/{i % 3}.png") for i in range(3)]
    done = list(b.complete(reqs))
    assert [c.request.id for c in done] == ["r0", "r1", "r2"]
    assert all(isinstance(c.text, str) and c.error is None for c in done)
    # Gibberish replies end up in the rejects file, each with a reason; nothing is lost.
    gen = CoTGenerator(
        b,
        image_root=image_root,
        stages=["easy", "hard"],
        question_types=["open"],
        vocabulary={"liver": [], "spleen": []},
        max_reasks=1,
    )
    summary = gen.run(seeds[:3], tmp_path / "s.jsonl", progress=False)
    rejects = [json.loads(line) for line in (tmp_path / "s.rejects.jsonl").read_text().splitlines()]
    accepted = (tmp_path / "s.jsonl").read_text().splitlines()
    assert summary.failed == 0 and summary.planned == 6
    assert len(rejects) + len(accepted) == 6 and summary.rejected == len(rejects)
    assert rejects and all(r["reason"] and r["verdicts"] and not r["accepted"] for r in rejects)
    assert all(r["model"] == "tiny-vip-llava" and r["backend"] == "transformers" for r in rejects)
    assert summary.reasked >= 1  # unparseable replies were re-asked
    with pytest.raises(InvalidOptionError):
        TransformersBackend(vlm.model, vlm.processor, dtype="float77")


@pytest.mark.parametrize(
    "prompt",
    ["plain", 'quotes " and \\ and é ✓ \n', "medcurric-image-url-", "{0} {image}"],
)
def test_request_body_equals_plain_json_encoding(image_root, prompt):
    from medcurric.cot.backends import openai

    b = OpenAIBackend("m", extra_body={"top_p": 0.9, "stop": ["\n"]})
    text_only = OpenAIBackend("m", send_images=False)
    for image in [image_root / "img/1.png", image_root / "img/2.png", None]:
        r = GenerationRequest("x", "sys", prompt, Stage.EASY, QuestionType.OPEN, "t", {}, image)
        for backend_ in (b, text_only):
            assert backend_._body(r) == json.dumps(backend_._payload(r)).encode("utf-8")
    # A prompt that contains the placeholder itself falls back to plain encoding.
    r = GenerationRequest(
        "x", "", f'"{openai._URL_SLOT}"', Stage.EASY, QuestionType.OPEN, "t", {},
        image_root / "img/1.png",
    )  # fmt: skip
    assert b._body(r) == json.dumps(b._payload(r)).encode("utf-8")
