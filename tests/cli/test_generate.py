from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medcurric._jsonl import read_jsonl
from medcurric.cli import main
from medcurric.cli.generate import EXIT_INCOMPLETE


@pytest.fixture
def seeds_file(tmp_path, seeds):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(s.to_json() + "\n" for s in seeds))
    return path


@pytest.fixture
def templates_file(tmp_path, templates):
    path = tmp_path / "templates.json"
    path.write_text(
        json.dumps(
            [
                {
                    "id": t.id,
                    "stage": t.stage.value,
                    "question_type": t.question_type.value,
                    "text": t.text,
                    "system": t.system,
                    "matched": t.matched,
                }
                for t in templates
            ]
        )
    )
    return path


def ids(path):
    return [r["id"] for r in read_jsonl(path)] if path.exists() else []


def test_generate_with_the_template_backend(tmp_path, seeds_file, image_root, capsys):
    out = tmp_path / "out" / "samples.jsonl"
    argv = [
        "generate",
        str(seeds_file),
        "--out",
        str(out),
        "--images",
        str(image_root),
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accepted"] == 72 and summary["failed"] == 0 and summary["accept_rate"] == 1.0
    assert len(ids(out)) == 72 and (tmp_path / "out" / "samples.rejects.jsonl").exists()
    assert main([*argv, "--stages", "easy,hard", "--question-types", "open"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 24
    assert len(ids(out)) == 72


def test_generate_usage_errors(tmp_path, seeds_file, capsys):
    base = ["generate", str(seeds_file), "--out", str(tmp_path / "o.jsonl")]
    assert main([*base, "--backend", "opnai"]) == 1
    assert "Did you mean 'openai'" in capsys.readouterr().err
    assert main([*base, "--backend", "openai"]) == 1
    assert "--model" in capsys.readouterr().err
    assert main([*base, "--stages", "easy,medum"]) == 1
    assert main([*base, "--shard", "2/2"]) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert main(["generate", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "record 1" in capsys.readouterr().err


def test_generate_openai_reports_failures_with_exit_3(
    tmp_path, seeds_file, image_root, templates_file, fake_reply
):
    from medcurric.testing.chat_server import FakeChatServer

    out = tmp_path / "s.jsonl"
    with FakeChatServer(
        reply=fake_reply, fault=lambda k, a: "500" if "part of the liver" in k else "ok"
    ) as srv:
        argv = [
            "generate",
            str(seeds_file),
            "--out",
            str(out),
            "--images",
            str(image_root),
            "--backend",
            "openai",
            "--model",
            "tiny",
            "--base-url",
            srv.url,
            "--templates",
            str(templates_file),
            "--max-retries",
            "1",
            "--backoff",
            "0.001",
            "--no-progress",
            "--shard",
            "0/1",
        ]
        assert main(argv) == EXIT_INCOMPLETE
        n_first = len(ids(out))
    with FakeChatServer(reply=fake_reply) as srv:
        argv[argv.index("--base-url") + 1] = srv.url
        assert main(argv) == 0  # the resume
    assert n_first < 72 and len(ids(out)) == len(set(ids(out))) == 72


@pytest.mark.slow
def test_worker_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path, seeds_file, image_root, templates_file, fake_reply
):
    from medcurric.testing.chat_server import FakeChatServer

    out = tmp_path / "s.jsonl"
    with FakeChatServer(reply=fake_reply, latency=0.1) as srv:
        argv = [
            "generate",
            str(seeds_file),
            "--out",
            str(out),
            "--images",
            str(image_root),
            "--backend",
            "openai",
            "--model",
            "tiny",
            "--base-url",
            srv.url,
            "--templates",
            str(templates_file),
            "--concurrency",
            "2",
            "--no-progress",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "medcurric", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and len(out.read_text().splitlines() if out.exists() else []) < 10
        ):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        before = out.read_text()
        assert 10 <= len(before.splitlines()) < 72
        # Simulate the kill landing mid-line as well: a torn last line is set aside on resume.
        with out.open("a") as fh:
            fh.write('{"id": "torn", "seed_')
        assert main(argv) == 0
    after = ids(out)
    assert len(after) == len(set(after)) == 72
    assert out.read_text().startswith(before)  # append-only: nothing rewritten
    assert (tmp_path / "s.jsonl.partial").read_text().startswith('{"id": "torn"')
    # Only the requests in flight at the kill (concurrency 2) were sent twice.
    assert 72 <= len(srv.hits) <= 72 + 4
