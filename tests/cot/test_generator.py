from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter

import pytest

from medcurric._jsonl import read_jsonl
from medcurric.cot import (
    Completion,
    CoTGenerator,
    CoTSample,
    OpenAIBackend,
    PromptTemplate,
    TemplateBackend,
    parse_shard,
    sample_id,
    shard_of,
)
from medcurric.errors import InvalidOptionError, WrongTypeError
from medcurric.testing.chat_server import FakeChatServer

VOCAB = {"liver": ["hepatic"], "spleen": [], "kidney_left": ["left kidney"], "pancreas": []}


def ids(path):
    return [r["id"] for r in read_jsonl(path)] if path.exists() else []


def test_sample_id_is_a_sha256_of_its_identity():
    blob = json.dumps(["sample", "les-1", "easy", "t1", "openai", "m"], separators=(",", ":"))
    assert (
        sample_id("les-1", "easy", "t1", "openai", "m")
        == hashlib.sha256(blob.encode()).hexdigest()[:24]
    )
    variants = {
        sample_id(*p)
        for p in [
            ("a", "easy", "t", "b", "m"),
            ("a", "medium", "t", "b", "m"),
            ("a", "easy", "u", "b", "m"),
            ("a", "easy", "t", "c", "m"),
            ("a", "easy", "t", "b", "n"),
            ("b", "easy", "t", "b", "m"),
        ]
    }
    assert len(variants) == 6


def test_shards_partition_the_seeds():
    seed_ids = [f"s{i}" for i in range(300)]
    parts = [[s for s in seed_ids if shard_of(s, 4) == i] for i in range(4)]
    assert sorted(s for p in parts for s in p) == sorted(seed_ids)
    assert all(40 < len(p) < 110 for p in parts)
    ref = [
        int(
            hashlib.sha256(json.dumps(["shard", s], separators=(",", ":")).encode()).hexdigest()[
                :16
            ],
            16,
        )
        % 4
        for s in seed_ids
    ]
    assert [shard_of(s, 4) for s in seed_ids] == ref
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "x", "1/0", "1"):
        with pytest.raises(InvalidOptionError):
            parse_shard(bad)


def test_template_backend_run_accepts_everything_and_resumes(tmp_path, seeds):
    gen = CoTGenerator(TemplateBackend(), vocabulary=VOCAB)
    seeds = [dataclasses.replace(s, image_size=(80, 64)) for s in seeds]
    out = tmp_path / "s.jsonl"
    first = gen.run(seeds, out, progress=False)
    assert (
        first.planned == 12 * 6
        and first.accepted == 72
        and first.rejected == 0
        and first.failed == 0
    )
    rows = list(read_jsonl(out))
    assert len({r["id"] for r in rows}) == 72
    assert Counter(r["stage"] for r in rows) == {"easy": 24, "medium": 24, "hard": 24}
    samples = [CoTSample.from_dict(r) for r in rows]
    assert all(CoTSample.from_json(s.to_json()) == s for s in samples)
    closed = [s for s in samples if s.question_type == "closed" and s.organ]
    assert {s.extra["expected_answer"] for s in closed} == {"yes", "no"}  # both answers occur
    assert all(s.answer.lower().startswith(s.extra["expected_answer"]) for s in closed)
    unmatched = [s for s in samples if s.organ is None]
    assert unmatched and all(s.template.endswith("unmatched-v1") for s in unmatched)
    again = gen.run(seeds, out, progress=False)
    assert (again.skipped, again.accepted, again.rejected) == (72, 0, 0)
    assert ids(out) == [r["id"] for r in rows]


def test_shards_together_produce_exactly_the_unsharded_output(tmp_path, seeds):
    seeds = [dataclasses.replace(s, image_size=(80, 64)) for s in seeds]
    gen = CoTGenerator(TemplateBackend(), vocabulary=VOCAB)
    gen.run(seeds, tmp_path / "all.jsonl", progress=False)
    for i in range(3):
        gen.run(seeds, tmp_path / f"part{i}.jsonl", shard=f"{i}/3", progress=False)
    parts = [x for i in range(3) for x in ids(tmp_path / f"part{i}.jsonl")]
    assert sorted(parts) == sorted(ids(tmp_path / "all.jsonl"))
    assert len(parts) == len(set(parts))


def test_limit_and_stage_selection(tmp_path, seeds, image_root):
    gen = CoTGenerator(
        TemplateBackend(),
        vocabulary=VOCAB,
        image_root=image_root,
        stages=["medium"],
        question_types=["closed"],
    )
    summary = gen.run(seeds, tmp_path / "s.jsonl", limit=5, progress=False)
    rows = list(read_jsonl(tmp_path / "s.jsonl"))
    assert summary.planned == 5 and len(rows) == 5
    assert {(r["stage"], r["question_type"]) for r in rows} == {("medium", "closed")}
    assert all(r["image_size"] == [80, 64] for r in rows)  # read from the image header


def test_bad_seeds_are_counted_not_written_and_retried(tmp_path, seed_factory, image_root, caplog):
    good = seed_factory(0)
    escaping = seed_factory(1, image="../../etc/passwd")
    missing = seed_factory(2, image="img/nope.png")
    gen = CoTGenerator(TemplateBackend(), vocabulary=VOCAB, image_root=image_root)
    with caplog.at_level(logging.WARNING):
        summary = gen.run([good, escaping, missing], tmp_path / "s.jsonl", progress=False)
    assert summary.accepted == 6 and summary.failed == 12 and summary.rejected == 0
    assert any("leaves the dataset root" in e for e in summary.errors)
    assert any("does not exist" in e for e in summary.errors)
    no_root = CoTGenerator(TemplateBackend(), vocabulary=VOCAB)
    s2 = no_root.run([seed_factory(3)], tmp_path / "t.jsonl", progress=False)  # Easy needs the size
    assert s2.failed == 6 and "image size" in s2.errors[0]


class FlakyModel:
    """Replies garbage to the first request of every sample, then defers to the template backend."""

    name, model_name, needs_images = "flaky", "v0", False

    def __init__(self, garbage_times=1):
        self.garbage_times = garbage_times
        self.seen = Counter()
        self.calls = []

    def complete(self, requests):
        self.calls.append(len(requests))
        for r, good in zip(requests, TemplateBackend().complete(requests), strict=True):
            self.seen[r.id] += 1
            if self.seen[r.id] <= self.garbage_times:
                yield Completion(r, "I'd rather not say.", attempts=1)
            else:
                assert r.history and "could not be parsed" in r.history[-1][1]
                yield Completion(r, good.text, attempts=2)


def test_unparseable_replies_are_reasked_a_bounded_number_of_times(tmp_path, seed_factory):
    seeds = [seed_factory(i, size=(80, 64)) for i in range(3)]
    model = FlakyModel(garbage_times=1)
    gen = CoTGenerator(model, vocabulary=VOCAB, max_reasks=1, chunk_size=4)
    summary = gen.run(seeds, tmp_path / "s.jsonl", progress=False)
    assert summary.accepted == 18 and summary.reasked == 18
    assert all(r["attempts"] == 3 for r in read_jsonl(tmp_path / "s.jsonl"))
    assert max(model.calls) <= 4
    model = FlakyModel(garbage_times=5)
    summary = CoTGenerator(model, vocabulary=VOCAB, max_reasks=2).run(
        seeds, tmp_path / "t.jsonl", progress=False
    )
    assert summary.rejected == 18 and summary.reasked == 36
    rejects = list(read_jsonl(tmp_path / "t.rejects.jsonl"))
    assert all(
        r["reason"].startswith("parse:") and r["verdicts"][0]["check"] == "parse" for r in rejects
    )
    assert all(model.seen[r["id"]] == 3 for r in rejects)


def test_missing_templates_are_skipped_with_a_warning(seed_factory, caplog):
    only = [
        PromptTemplate("m", "medium", "open", "About the {lesion_noun} in the {organ}. {reply_format}")
    ]
    gen = CoTGenerator(TemplateBackend(), templates=only, vocabulary=VOCAB)
    with caplog.at_level(logging.WARNING):
        samples = list(gen.generate([seed_factory(0, size=(80, 64)), seed_factory(1, organ=None)]))
    assert [(s.stage, s.question_type, s.seed_id) for s in samples] == [
        ("medium", "open", "les-000")
    ]
    assert "No template" in caplog.text


def test_not_a_backend():
    with pytest.raises(WrongTypeError, match="complete"):
        CoTGenerator(object())


def test_http_faults_at_scale_lose_and_duplicate_nothing(
    tmp_path, seeds, image_root, templates, fake_reply
):
    def plan(key, attempt):
        h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        kinds = ["500", "429", "truncate", "malformed", "drop", "nochoices"]
        if attempt == 1 and h % 3 == 0:
            return kinds[h % len(kinds)]
        if attempt == 2 and h % 7 == 0:
            return "timeout"
        return "ok"

    with FakeChatServer(reply=fake_reply, fault=plan) as server:
        b = OpenAIBackend(
            "tiny",
            base_url=server.url,
            concurrency=6,
            backoff_base=0.001,
            timeout=0.5,
            max_retries=4,
        )
        gen = CoTGenerator(
            b, templates=templates, image_root=image_root, vocabulary=VOCAB, chunk_size=16
        )
        summary = gen.run(seeds, tmp_path / "s.jsonl", progress=False)
        again = gen.run(seeds, tmp_path / "s.jsonl", progress=False)
    faults = Counter(h.action for h in server.hits)
    assert faults["ok"] == 72 and sum(faults.values()) > 72 + 15
    assert summary.failed == 0 and summary.accepted + summary.rejected == 72
    assert summary.accepted == 72, summary.errors
    written = ids(tmp_path / "s.jsonl") + ids(tmp_path / "s.rejects.jsonl")
    assert len(written) == len(set(written)) == 72
    assert again.skipped == 72 and again.accepted == again.rejected == 0
    assert faults == Counter(h.action for h in server.hits)  # the rerun sent nothing


def test_permanent_failures_are_retried_by_the_next_run(
    tmp_path, seeds, image_root, templates, fake_reply
):
    broken = {"on": True}

    def plan(key, attempt):
        return "500" if broken["on"] and "part of the spleen" in key else "ok"

    with FakeChatServer(reply=fake_reply, fault=plan) as server:
        b = OpenAIBackend("tiny", base_url=server.url, backoff_base=0.001, max_retries=1)
        gen = CoTGenerator(b, templates=templates, image_root=image_root, vocabulary=VOCAB)
        first = gen.run(seeds, tmp_path / "s.jsonl", progress=False)
        broken["on"] = False
        second = gen.run(seeds, tmp_path / "s.jsonl", progress=False)
    assert first.failed > 0 and first.accepted + first.failed == 72
    assert (
        second.accepted == first.failed and second.skipped == first.accepted and second.failed == 0
    )
    written = ids(tmp_path / "s.jsonl")
    assert len(written) == len(set(written)) == 72


def test_adjacent_seeds_say_next_to_and_closed_answers_are_no(seed_factory):
    seed = seed_factory(0, size=(80, 64))
    seed = seed.__class__(**{**seed.__dict__, "outcome": "adjacent"})
    samples = list(CoTGenerator(TemplateBackend(), vocabulary=VOCAB).generate([seed]))
    assert len(samples) == 6 and all(s.accepted for s in samples), [s.reason for s in samples]
    closed = [s for s in samples if s.question_type == "closed"]
    assert all(s.extra["expected_answer"] == "no" and s.answer.startswith("No") for s in closed)
    assert all("liver" in s.question for s in closed)
    assert all(
        "adjacent to the liver" in (s.rationale or s.answer).lower()
        for s in samples
        if s.question_type == "open"
    )
    # the same sample claiming "yes" is rejected
    from dataclasses import replace

    from medcurric.cot import OrganLexicon, validate_sample

    wrong = replace(closed[0], answer="Yes.")
    verdict = {v.check: v for v in validate_sample(wrong, lexicon=OrganLexicon(VOCAB))}[
        "closed_answer"
    ]
    assert not verdict.passed


def test_default_vocabulary_is_the_totalsegmentator_class_map(seed_factory):
    pytest.importorskip("medcurric.anatomy")
    gen = CoTGenerator(TemplateBackend())
    seeds = [
        seed_factory(i, organ=o, size=(80, 64))
        for i, o in enumerate(["liver", "kidney_left", None])
    ]
    assert len(gen.lexicon(seeds).names) == 117
    samples = list(gen.generate(seeds))
    assert len(samples) == 18 and all(s.accepted for s in samples), [
        s.reason for s in samples if not s.accepted
    ]
    closed_no = [
        s for s in samples if s.question_type == "closed" and s.extra.get("expected_answer") == "no"
    ]
    assert closed_no  # distractors come from the class map


def test_repeated_seed_ids_are_generated_once(tmp_path, seed_factory):
    seed = seed_factory(0, size=(80, 64))
    summary = CoTGenerator(TemplateBackend(), vocabulary=VOCAB).run(
        [seed, seed], tmp_path / "s.jsonl", progress=False
    )
    assert (summary.planned, summary.skipped, summary.accepted) == (12, 6, 6)
    assert len(ids(tmp_path / "s.jsonl")) == 6
