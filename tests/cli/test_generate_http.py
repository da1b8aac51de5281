"""``medcurric generate --backend openai`` and the API key over plain http."""

from __future__ import annotations

import json

from medcurric.cli import main
from medcurric.testing.chat_server import FakeChatServer

KEY = "sk-cli-SENTINEL-never-shown"
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY", "no_proxy", "NO_PROXY")  # fmt: skip


def test_key_over_plain_http_needs_allow_insecure_http(
    tmp_path, monkeypatch, seeds, templates, image_root, fake_reply, capsys
):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDCURRIC_TEST_KEY", KEY)
    seeds_file = tmp_path / "seeds.jsonl"
    seeds_file.write_text(seeds[0].to_json() + "\n")
    templates_file = tmp_path / "templates.json"
    rows = [
        {"id": t.id, "stage": t.stage.value, "question_type": t.question_type.value,
         "text": t.text, "system": t.system, "matched": t.matched}
        for t in templates
    ]  # fmt: skip
    templates_file.write_text(json.dumps(rows))
    with FakeChatServer(reply=fake_reply) as proxy:
        # The remote host is reached through an http proxy on loopback, which sees what it would.
        monkeypatch.setenv("http_proxy", proxy.url.removesuffix("/v1"))
        argv = [
            "generate", str(seeds_file), "--out", str(tmp_path / "s.jsonl"),
            "--images", str(image_root), "--backend", "openai", "--model", "tiny",
            "--base-url", "http://medcurric-test.invalid/v1", "--api-key-env", "MEDCURRIC_TEST_KEY",
            "--templates", str(templates_file), "--stages", "hard", "--no-progress",
        ]  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "http://medcurric-test.invalid/v1" in err and "--allow-insecure-http" in err
        assert KEY not in err and not proxy.hits
        assert main([*argv, "--allow-insecure-http"]) == 0
    assert proxy.hits and all(h.authorization == f"Bearer {KEY}" for h in proxy.hits)
    assert all(h.target.startswith("http://medcurric-test.invalid/v1/") for h in proxy.hits)
