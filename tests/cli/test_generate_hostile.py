"""``medcurric generate`` on hostile inputs: bad images, torn seeds files, resumed runs."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.cli import main
from medcurric.errors import MedcurricWarning
from medcurric.seeds import read_seeds


def _png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims ``width x height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


def _seed_lines(seeds, images: dict[int, str]) -> str:
    return "".join(
        json.dumps(seeds(i, image=images.get(i, "img/0.png")).to_dict()) + "\n" for i in range(4)
    )


@pytest.fixture
def seed_factory():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_cot_conftest", Path(__file__).parents[1] / "cot" / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_seed


def test_bad_images_reject_their_samples_and_the_rest_are_generated(tmp_path, seed_factory, capsys):
    img = tmp_path / "images" / "img"
    img.mkdir(parents=True)
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(img / "0.png")
    (img / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    assert (img / "bomb.png").stat().st_size < 120
    (img / "cut.png").write_bytes((img / "0.png").read_bytes()[:60])  # header, no pixels
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(_seed_lines(seed_factory, {1: "img/bomb.png", 2: "img/cut.png"}))
    out = tmp_path / "o" / "g.jsonl"
    cmd = ["generate", str(seeds), "--images", str(tmp_path / "images"), "--no-progress"]
    assert main([*cmd, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["accepted"], summary["rejected"], summary["failed"]) == (12, 12, 0)
    rejects = [json.loads(x) for x in (tmp_path / "o" / "g.rejects.jsonl").read_text().splitlines()]
    reasons = {r["seed_id"]: r["reason"] for r in rejects}
    assert set(reasons) == {"les-001", "les-002"}
    assert "bomb.png" in reasons["les-001"] and "cut.png" in reasons["les-002"]
    # a resumed run counts what the files hold: nothing judged anew, the rate unchanged
    assert main([*cmd, "--out", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["accepted"], again["rejected"], again["skipped"]) == (0, 0, 24)
    assert (again["accepted_before"], again["rejected_before"]) == (12, 12)
    assert again["accept_rate"] == summary["accept_rate"] == 0.5


def test_a_torn_last_seed_line_is_reported(tmp_path, seed_factory):
    seeds = tmp_path / "seeds.jsonl"
    text = _seed_lines(seed_factory, {})
    seeds.write_text(text[: len(text) - 30])  # the fourth line cut short
    with pytest.warns(MedcurricWarning, match=r"seeds\.jsonl:4: the last line has no newline"):
        got = read_seeds(seeds)
    assert len(got) == 3
